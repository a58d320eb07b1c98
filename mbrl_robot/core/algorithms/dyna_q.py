# Copyright 2026 The mbrl_robot Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tabular Dyna-Q (Sutton 1990; Sutton and Barto, 2nd ed., section 8.2) on the lecture's grid.

The grid world: ``size x size`` cells, start (0, 0), goal (size-1, size-1); actions up, down,
left, right (moves off the grid leave the agent in place); reward +1 on entering the goal, which
ends the episode, 0 otherwise. After every real step the agent does one Q-learning update from the
real transition, stores it in a deterministic tabular model ``(s, a) -> (r, s', done)`` and makes
``planning_steps`` more Q-learning updates from transitions replayed out of that model at
previously seen (s, a) pairs drawn uniformly. ``planning_steps = 0`` is plain Q-learning.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np

ACTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right as (d_row, d_col)


class GridWorld:
    """The deterministic grid of the lecture.

    Args:
        size: side length (>= 2).
    """

    def __init__(self, size: int = 5):
        if int(size) < 2:
            raise ValueError(f'grid size must be >= 2, got {size}')
        self.size = int(size)
        self.start = 0
        self.goal = self.size * self.size - 1

    @property
    def n_states(self) -> int:
        """Number of cells; state = row * size + col."""
        return self.size * self.size

    def step(self, state: int, action: int) -> Tuple[float, int, bool]:
        """(reward, next state, done) of ``action`` in ``state``."""
        if not 0 <= action < len(ACTIONS):
            raise ValueError(f'action must be in [0, {len(ACTIONS)}), got {action}')
        row, col = divmod(state, self.size)
        d_row, d_col = ACTIONS[action]
        row = min(max(row + d_row, 0), self.size - 1)
        col = min(max(col + d_col, 0), self.size - 1)
        nxt = row * self.size + col
        done = nxt == self.goal
        return (1.0 if done else 0.0), nxt, done

    @property
    def optimal_steps(self) -> int:
        """Length of a shortest path from start to goal."""
        return 2 * (self.size - 1)


class DynaQ:
    """Tabular Dyna-Q agent.

    Args:
        env: the grid world.
        planning_steps: K imagined updates per real step (>= 0).
        alpha: step size in (0, 1].
        gamma: discount in (0, 1].
        epsilon: exploration probability in [0, 1].
        seed: seed of the agent's random generator (ties, exploration, replay).
    """

    def __init__(self, env: GridWorld, planning_steps: int, alpha: float = 0.1,
                 gamma: float = 0.95, epsilon: float = 0.1, seed: int = 0):
        if int(planning_steps) < 0:
            raise ValueError(f'planning_steps must be >= 0, got {planning_steps}')
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f'alpha must be in (0, 1], got {alpha}')
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f'gamma must be in (0, 1], got {gamma}')
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f'epsilon must be in [0, 1], got {epsilon}')
        self.env = env
        self.planning_steps = int(planning_steps)
        self.alpha, self.gamma, self.epsilon = float(alpha), float(gamma), float(epsilon)
        self.rng = np.random.default_rng(seed)
        self.q = np.zeros((env.n_states, len(ACTIONS)))
        self.model: Dict[Tuple[int, int], Tuple[float, int, bool]] = {}
        self._seen: List[Tuple[int, int]] = []

    def greedy(self, state: int) -> int:
        """argmax_a Q(state, a), ties broken at random."""
        row = self.q[state]
        return int(self.rng.choice(np.flatnonzero(row == row.max())))

    def select(self, state: int) -> int:
        """Epsilon-greedy action."""
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(len(ACTIONS)))
        return self.greedy(state)

    def update(self, s: int, a: int, r: float, s2: int, done: bool) -> None:
        """One Q-learning update."""
        target = r if done else r + self.gamma * self.q[s2].max()
        self.q[s, a] += self.alpha * (target - self.q[s, a])

    def learn(self, s: int, a: int, r: float, s2: int, done: bool) -> None:
        """Direct RL update, model learning, then ``planning_steps`` imagined updates."""
        self.update(s, a, r, s2, done)
        if (s, a) not in self.model:
            self._seen.append((s, a))
        self.model[(s, a)] = (r, s2, done)
        for _ in range(self.planning_steps):
            ps, pa = self._seen[int(self.rng.integers(len(self._seen)))]
            self.update(ps, pa, *self.model[(ps, pa)])

    def run_episode(self, max_steps: int = 10_000) -> int:
        """One real episode from the start; returns its number of real steps."""
        s = self.env.start
        for t in range(1, max_steps + 1):
            a = self.select(s)
            r, s2, done = self.env.step(s, a)
            self.learn(s, a, r, s2, done)
            s = s2
            if done:
                return t
        return max_steps

    def greedy_path_length(self) -> Optional[int]:
        """Steps the greedy policy (deterministic ties: lowest index) needs to reach the goal.

        Returns:
            The number of steps, or None if it does not reach the goal within n_states steps.
        """
        s = self.env.start
        for t in range(1, self.env.n_states + 1):
            _, s, done = self.env.step(s, int(np.argmax(self.q[s])))
            if done:
                return t
        return None


def run_dyna_q(planning_steps: int, episodes: int, seed: int, size: int = 5, alpha: float = 0.1,
               gamma: float = 0.95, epsilon: float = 0.1,
               max_steps_per_episode: int = 10_000) -> np.ndarray:
    """Run Dyna-Q on the grid world.

    Args:
        planning_steps: K imagined updates per real step (0 = Q-learning).
        episodes: number of real episodes (>= 1).
        seed: random seed.
        size: grid side length.
        alpha: step size.
        gamma: discount.
        epsilon: exploration probability.
        max_steps_per_episode: cut an episode after this many steps.

    Returns:
        (episodes,) int array of real steps per episode.
    """
    if int(episodes) < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    agent = DynaQ(GridWorld(size), planning_steps, alpha, gamma, epsilon, seed)
    return np.array([agent.run_episode(max_steps_per_episode) for _ in range(int(episodes))],
                    dtype=np.int64)
