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
"""Dyna-Q on the lecture's 5x5 grid: planning with a learned model saves real steps."""

import numpy as np
import pytest

from mbrl_robot.core.algorithms.dyna_q import DynaQ, GridWorld, run_dyna_q

SEEDS = range(10)


def real_steps_until_optimal(planning_steps: int, seed: int, max_episodes: int = 300) -> int:
    """Real steps taken until the greedy policy follows a shortest path (8 steps)."""
    env = GridWorld(5)
    agent = DynaQ(env, planning_steps, seed=seed)
    steps = 0
    for _ in range(max_episodes):
        steps += agent.run_episode()
        if agent.greedy_path_length() == env.optimal_steps:
            return steps
    raise AssertionError(f'K={planning_steps}, seed {seed}: no optimal policy after '
                         f'{max_episodes} episodes')


def test_grid_world_dynamics():
    env = GridWorld(5)
    assert env.step(0, 0) == (0.0, 0, False)  # up from (0, 0): wall
    assert env.step(0, 3) == (0.0, 1, False)  # right
    assert env.step(0, 1) == (0.0, 5, False)  # down
    assert env.step(23, 3) == (1.0, 24, True)  # into the goal
    assert env.optimal_steps == 8


def test_planning_needs_fewer_real_steps_than_q_learning():
    k0 = np.mean([real_steps_until_optimal(0, s) for s in SEEDS])
    k5 = np.mean([real_steps_until_optimal(5, s) for s in SEEDS])
    assert k5 < 0.5 * k0, (k5, k0)


def test_run_dyna_q_steps_per_episode():
    k0 = np.stack([run_dyna_q(0, 15, s) for s in SEEDS])
    k5 = np.stack([run_dyna_q(5, 15, s) for s in SEEDS])
    assert k0.shape == (10, 15) and k0.dtype == np.int64
    assert (k0 >= 8).all() and (k5 >= 8).all()  # never shorter than the shortest path
    # Episodes 2-15: Dyna-Q has propagated the goal value; Q-learning is still searching.
    assert k5[:, 1:].sum() < 0.6 * k0[:, 1:].sum()
    # Late episodes of Dyna-Q are near-optimal (epsilon-greedy adds a few detours).
    assert k5[:, -5:].mean() < 12.0
    np.testing.assert_array_equal(run_dyna_q(5, 5, 3), run_dyna_q(5, 5, 3))


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_dyna_q(-1, 5, 0)
    with pytest.raises(ValueError):
        run_dyna_q(5, 0, 0)
    with pytest.raises(ValueError):
        GridWorld(1)
    with pytest.raises(ValueError):
        DynaQ(GridWorld(5), 5, alpha=0.0)
