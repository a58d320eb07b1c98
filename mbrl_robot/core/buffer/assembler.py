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
"""Exact transitions (s, a, r, s') from the controller's executed rows (pure logic, no ROS).

The controller publishes one row per control tick on ``/controller/executed``
(``docs/interfaces.md``)::

    [episode, step, stamp_s, s (S), a (A), target (T)]      # F = 3 + S + A + T = 30

with ``a`` all-NaN on the terminal row (the state after the episode's last action). Row ``t``
gives s, a and the target; row ``t + 1`` of the same episode gives s'. Pairing rules:

- a pair is made only from two consecutive steps (``step + 1``) of the same episode whose stamps
  are one control period apart (``period_s``, within ``period_tolerance`` of it; any
  non-decreasing stamp when no period is given); the pair closed by a terminal row has
  ``done=True``;
- two consecutive steps whose stamps are not one period apart drop the pending row
  (``dropped_timing``): a tick that reused the state of the tick before (a zero-length step,
  ``s' = s`` after an action) or came late (two periods of motion for one action) would teach
  the model wrong dynamics. Measured on the old realtime twin, whose ``/clock`` could run ahead
  of its state: 19% of the pairs had zero length, 18% two periods;
- a step gap (a missing row) drops the pending row (``dropped_gaps``);
- an episode change before the terminal row, a step that does not advance (duplicate or
  restarted controller) or a stamp that goes back in time (a reset of the twin) drops the pending
  row (``dropped_breaks``);
- a malformed row (wrong length, non-integer episode/step, non-finite stamp/s/target, a partly
  NaN action) raises :class:`RowRejected` and is counted (``rejected``); it leaves the pending row
  untouched, so a junk message between two good rows loses nothing.

The pending row can be read (:attr:`TransitionAssembler.pending`) and given back to a new
assembler, so the buffer persists it with the transitions and a restart in the middle of an
episode still pairs exactly when the next row is the next step (and drops it as a gap otherwise).
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from mbrl_robot.core.tasks.push import ACTION_DIM, PUCK, STATE_DIM, TARGET_DIM

HEADER = 3  # episode, step, stamp_s
# Bounds a row must keep to be stored and exported: episode and step fit a ROS int32 (and an
# SQLite INTEGER), a stamp a ROS Time (int32 seconds), every value a size whose reward (squares,
# forward kinematics) stays finite. Beyond them a row is garbage, not data.
MAX_INDEX = 2 ** 31 - 1
MAX_STAMP_S = 2.0 ** 31 - 1.0
MAX_ABS_VALUE = 1.0e9


def header_problem(episode: float, step: float, stamp: float) -> str:
    """'' when an executed row's (or an acknowledgement's) header is within the bounds above:
    episode and step integers in [0, MAX_INDEX], stamp in [0, MAX_STAMP_S]; else what is wrong."""
    for name, v in (('episode', episode), ('step', step)):
        if not (np.isfinite(v) and 0 <= v <= MAX_INDEX and v == np.floor(v)):
            return f'{name} must be an integer within [0, {MAX_INDEX}], got {v}'
    if not (np.isfinite(stamp) and 0 <= stamp <= MAX_STAMP_S):
        return f'stamp must be within [0, {MAX_STAMP_S:.0f}] s, got {stamp}'
    return ''


# reward_fn(next_obs (N, S), act (N, A), target (N, T)) -> reward (N,). Plain numpy.
NumpyRewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def puck_distance_reward(next_obs: np.ndarray, act: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The lecture's reward, ``-||puck' - target||``, used when no task reward is given.

    Args:
        next_obs: (N, S) next states; the puck position is ``next_obs[:, PUCK]``.
        act: (N, A) actions (unused: the reward depends on the outcome only).
        target: (N, 3) targets.

    Returns:
        (N,) rewards.
    """
    del act
    return -np.linalg.norm(next_obs[:, PUCK] - target, axis=-1)


def task_reward(task: Any) -> NumpyRewardFn:
    """Numpy reward with a per-row target from a task object (``core.tasks.push.PushTask``).

    Args:
        task: has ``set_target(xyz)`` and a torch ``reward_fn(next_obs, act)``; its target is
            overwritten on every call.

    Returns:
        ``fn(next_obs (N, S), act (N, A), target (N, T)) -> (N,)`` float64.
    """
    import torch

    def fn(next_obs: np.ndarray, act: np.ndarray, target: np.ndarray) -> np.ndarray:
        out = np.empty(len(next_obs), dtype=np.float64)
        for i in range(len(next_obs)):
            task.set_target(target[i])
            r = task.reward_fn(torch.as_tensor(next_obs[i:i + 1], dtype=torch.float64),
                               torch.as_tensor(act[i:i + 1], dtype=torch.float64))
            out[i] = float(r.reshape(-1)[0])
        return out

    return fn


class RowRejected(ValueError):
    """An executed row the assembler cannot use (it has been counted as rejected)."""


@dataclass
class Transition:
    """One exact transition built from two consecutive executed rows.

    Attributes:
        episode: episode index.
        step: step of s (s' is step + 1).
        stamp: stamp (s) of the row of s.
        next_stamp: stamp (s) of the row of s'.
        obs: (S,) float64 state.
        act: (A,) float64 action, normalised to [-1, 1].
        reward: reward of s' (with the target of the row of s).
        next_obs: (S,) float64 next state, exactly the next row's s.
        done: True when the row of s' is the episode's terminal row.
        target: (T,) float64 target in force when the action was taken.
    """

    episode: int
    step: int
    stamp: float
    next_stamp: float
    obs: np.ndarray
    act: np.ndarray
    reward: float
    next_obs: np.ndarray
    done: bool
    target: np.ndarray


class TransitionAssembler:
    """Turns the stream of executed rows into exact transitions.

    Args:
        state_dim: S.
        action_dim: A.
        target_dim: T.
        reward_fn: numpy reward ``(next_obs (N, S), act (N, A), target (N, T)) -> (N,)``;
            :func:`puck_distance_reward` when None.
        pending: a pending row saved by an earlier assembler (:attr:`pending`), or None.
        period_s: the control period (s) consecutive rows' stamps must be apart; None: any
            non-decreasing stamps pair.
        period_tolerance: the allowed deviation from ``period_s``, as a fraction of it.

    Raises:
        ValueError: non-positive dims or period, a malformed ``pending`` row.
    """

    def __init__(self, state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM,
                 target_dim: int = TARGET_DIM, reward_fn: Optional[NumpyRewardFn] = None,
                 pending: Optional[np.ndarray] = None, period_s: Optional[float] = None,
                 period_tolerance: float = 0.3):
        if min(state_dim, action_dim, target_dim) <= 0:
            raise ValueError(f'dims must be positive, got S={state_dim} A={action_dim} '
                             f'T={target_dim}')
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.target_dim = int(target_dim)
        self.row_size = HEADER + self.state_dim + self.action_dim + self.target_dim
        self.reward_fn = reward_fn or puck_distance_reward
        if period_s is not None and not (period_s > 0 and 0 <= period_tolerance < 1):
            raise ValueError(f'period_s must be > 0 and period_tolerance in [0, 1), got '
                             f'{period_s}, {period_tolerance}')
        self.period = period_s
        self.period_tolerance = float(period_tolerance)
        self.dropped_timing = 0
        self._s = slice(HEADER, HEADER + self.state_dim)
        self._a = slice(self._s.stop, self._s.stop + self.action_dim)
        self._t = slice(self._a.stop, self._a.stop + self.target_dim)
        self.rows_seen = 0
        self.rejected = 0
        self.dropped_gaps = 0
        self.dropped_breaks = 0
        self.episodes_closed = 0
        self.transitions = 0
        self._pending: Optional[np.ndarray] = None
        if pending is not None:
            try:
                row = self._validate(pending)
            except RowRejected as e:
                raise ValueError(f'pending row: {e}') from e
            if self._is_terminal(row):
                raise ValueError('pending row: a terminal row cannot be pending')
            self._pending = row

    @property
    def pending(self) -> Optional[np.ndarray]:
        """(F,) copy of the row waiting for its successor, or None."""
        return None if self._pending is None else self._pending.copy()

    def counters(self) -> Dict[str, int]:
        """Counters since construction: rows_seen, rejected, dropped_gaps, dropped_breaks, ..."""
        return {'rows_seen': self.rows_seen, 'rejected': self.rejected,
                'dropped_gaps': self.dropped_gaps, 'dropped_breaks': self.dropped_breaks,
                'dropped_timing': self.dropped_timing,
                'episodes_closed': self.episodes_closed, 'transitions': self.transitions,
                'pending': self._pending is not None}

    def reset(self) -> None:
        """Forget the pending row (counted as a break), e.g. on an external reset."""
        if self._pending is not None:
            self.dropped_breaks += 1
        self._pending = None

    def add_row(self, row: np.ndarray) -> List[Transition]:
        """Feed one executed row.

        Args:
            row: (F,) ``[episode, step, stamp_s, s (S), a (A), target (T)]``; ``a`` all-NaN on
                the terminal row.

        Returns:
            The transitions this row completes (zero or one).

        Raises:
            RowRejected: the row is malformed; it was counted and the pending row is kept.
        """
        self.rows_seen += 1
        try:
            row = self._validate(row)
        except RowRejected:
            self.rejected += 1
            raise
        terminal = self._is_terminal(row)
        out: List[Transition] = []
        prev = self._pending
        if prev is not None:
            same_episode = row[0] == prev[0]
            d_step = row[1] - prev[1]
            if same_episode and d_step == 1 and row[2] >= prev[2]:
                if self._one_period(row[2] - prev[2]):
                    out.append(self._pair(prev, row, terminal))
                else:
                    self.dropped_timing += 1
            elif same_episode and d_step > 1:
                self.dropped_gaps += 1
            else:
                self.dropped_breaks += 1
        self._pending = None if terminal else row
        return out

    def _one_period(self, dt: float) -> bool:
        return self.period is None or abs(dt - self.period) <= self.period_tolerance * self.period

    def validate(self, row: np.ndarray) -> np.ndarray:
        """The row as float64 if :meth:`add_row` would take it.

        Raises:
            RowRejected: the row is malformed; it was counted (seen and rejected).
        """
        try:
            return self._validate(row)
        except RowRejected:
            self.rows_seen += 1
            self.rejected += 1
            raise

    def _pair(self, prev: np.ndarray, row: np.ndarray, terminal: bool) -> Transition:
        obs = prev[self._s].copy()
        act = prev[self._a].copy()
        target = prev[self._t].copy()
        next_obs = row[self._s].copy()
        reward = np.asarray(self.reward_fn(next_obs[None], act[None], target[None]),
                            dtype=np.float64).reshape(-1)
        if reward.shape != (1,) or not np.isfinite(reward[0]):
            raise ValueError(f'reward_fn returned {reward!r} for one transition')
        self.transitions += 1
        if terminal:
            self.episodes_closed += 1
        return Transition(episode=int(prev[0]), step=int(prev[1]), stamp=float(prev[2]),
                          next_stamp=float(row[2]), obs=obs, act=act, reward=float(reward[0]),
                          next_obs=next_obs, done=terminal, target=target)

    def _is_terminal(self, row: np.ndarray) -> bool:
        return bool(np.isnan(row[self._a]).all())

    def _validate(self, row: np.ndarray) -> np.ndarray:
        try:
            row = np.array(row, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise RowRejected(f'not a numeric row: {e}') from e
        if row.ndim != 1 or row.shape[0] != self.row_size:
            raise RowRejected(f'expected a row of {self.row_size} values '
                              f'[episode, step, stamp, s({self.state_dim}), '
                              f'a({self.action_dim}), target({self.target_dim})], '
                              f'got shape {row.shape}')
        episode, step, stamp = row[:HEADER]
        problem = header_problem(episode, step, stamp)
        if problem:
            raise RowRejected(problem)
        for name, part in (('state', row[self._s]), ('target', row[self._t])):
            if not np.isfinite(part).all():
                raise RowRejected(f'non-finite {name} at episode {int(episode)} step {int(step)}')
            if np.abs(part).max() > MAX_ABS_VALUE:
                raise RowRejected(f'{name} value beyond {MAX_ABS_VALUE:g} at episode '
                                  f'{int(episode)} step {int(step)}')
        act = row[self._a]
        finite = np.isfinite(act)
        if not finite.all() and not np.isnan(act).all():
            raise RowRejected(f'action must be all finite or all NaN (terminal row), got {act}')
        if finite.all() and np.abs(act).max() > MAX_ABS_VALUE:
            raise RowRejected(f'action value beyond {MAX_ABS_VALUE:g} at episode {int(episode)} '
                              f'step {int(step)}')
        return row
