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
"""Latency compensation and timing figures of a realtime control loop (ROS-free).

On a physical arm the state a tick reads is old (joint states a few ms, a camera tracker's puck
60-100 ms) and the command it sends takes effect later still (the plan's compute, transport, the
drive's actuation delay). :class:`StatePredictor` keeps the latest measurements with their stamps
and the commands sent, and predicts the state **at the moment the command takes effect**:

- joints: from the last joint state, integrated forward under the commands already sent, each
  applied ``actuation_delay_s`` after it was sent and tracked to first order with
  ``velocity_time_constant_s`` (the arm's identified actuator model);
- puck: a least-squares line through the tracker frames of the last ``puck_window_s`` (capture
  stamps), evaluated at that moment; when the fitted speed is within the fit's noise
  (``puck_speed_deadband_m_s``) the puck is still and its position is the frames' mean. Without
  it the tracker's noise alone moved a resting puck by ~5 mm a step in the recorded data (its
  pushes move it by ~2.5 mm a step).

The controller plans from that state and records it, stamped with the time it refers to, as the
transition's state: the model learns the map between the states at consecutive command times,
which is exactly what the planner asks of it.

:class:`RollingStats` keeps the last values of a timing figure for its percentiles.
"""

import collections
from typing import Deque, Dict, Optional, Tuple

import numpy as np

from mbrl_robot.core.tasks.push import ACTION_DIM

# Between two tracker frames (33 ms at 30 Hz) a pushed puck moves a few mm; a jump beyond this is
# a puck put elsewhere (a reset), not motion: the fit starts again.
MAX_PUCK_JUMP_M = 0.05


class RollingStats:
    """The last ``size`` values of a figure; percentiles of them."""

    def __init__(self, size: int = 2000):
        self.values: Deque[float] = collections.deque(maxlen=size)

    def add(self, value: float) -> None:
        """Record a finite value (others are ignored)."""
        if np.isfinite(value):
            self.values.append(float(value))

    def percentiles(self, name: str) -> Dict[str, float]:
        """``{name_p50, name_p99}`` (NaN when empty)."""
        if not self.values:
            return {f'{name}_p50': float('nan'), f'{name}_p99': float('nan')}
        p50, p99 = np.percentile(np.fromiter(self.values, float), [50, 99])
        return {f'{name}_p50': float(p50), f'{name}_p99': float(p99)}


class StatePredictor:
    """The latest measurements, and the 17-D state predicted for a later time.

    Args:
        actuation_delay_s: a command takes effect this long after it is sent (s).
        velocity_time_constant_s: first-order tracking of the commanded joint velocity (s).
        puck_window_s: tracker frames this recent (s, by capture stamp) fit the puck velocity.
        puck_speed_deadband_m_s: fitted puck speeds below this count as still.
        max_horizon_s: never predict further ahead than this from a measurement (s).
        puck_noise_m: the tracker's noise (std per coordinate, m) for the significance of the
            fitted speed.
    """

    def __init__(self, actuation_delay_s: float = 0.0, velocity_time_constant_s: float = 0.0,
                 puck_window_s: float = 0.3, puck_speed_deadband_m_s: float = 0.02,
                 max_horizon_s: float = 0.3, puck_noise_m: float = 0.002):
        if min(actuation_delay_s, velocity_time_constant_s, puck_window_s,
               puck_speed_deadband_m_s) < 0 or max_horizon_s <= 0:
            raise ValueError('delays, time constant, window and deadband must be >= 0, the '
                             'horizon > 0')
        self.delay = float(actuation_delay_s)
        self.tau = float(velocity_time_constant_s)
        self.window = float(puck_window_s)
        self.deadband = float(puck_speed_deadband_m_s)
        self.max_horizon = float(max_horizon_s)
        self.noise = float(puck_noise_m)
        self.joints: Optional[Tuple[float, np.ndarray, np.ndarray]] = None  # t, q, qd
        self.frames: Deque[Tuple[float, np.ndarray]] = collections.deque(maxlen=64)
        self.commands: Deque[Tuple[float, np.ndarray]] = collections.deque(maxlen=64)

    def observe_joints(self, t: float, q: np.ndarray, qd: np.ndarray) -> None:
        """A joint state (7,), (7,) stamped ``t`` (s)."""
        self.joints = (float(t), np.asarray(q, float), np.asarray(qd, float))

    def observe_puck(self, t: float, xyz: np.ndarray) -> None:
        """A tracker frame (3,) captured at ``t`` (s). A frame further than ``MAX_PUCK_JUMP_M``
        from the last one (a puck put elsewhere, a reset twin) starts a new track."""
        xyz = np.asarray(xyz, float)
        if self.frames and np.linalg.norm(xyz[:2] - self.frames[-1][1][:2]) > MAX_PUCK_JUMP_M:
            self.frames.clear()
        self.frames.append((float(t), xyz))

    def restart_track(self) -> None:
        """A new episode: fit the puck only on frames from now on (the newest kept)."""
        while len(self.frames) > 1:
            self.frames.popleft()

    def commanded(self, t: float, command: np.ndarray) -> None:
        """A joint-velocity command (7,) rad/s sent at ``t`` (s)."""
        self.commands.append((float(t), np.asarray(command, float)))

    def stamps(self) -> Optional[Tuple[float, float]]:
        """The stamps (s) of the latest joint state and tracker frame, or None."""
        if self.joints is None or not self.frames:
            return None
        return self.joints[0], self.frames[-1][0]

    def measured(self) -> Optional[np.ndarray]:
        """The latest measurements as a 17-D state (no prediction), or None."""
        if self.joints is None or not self.frames:
            return None
        _, q, qd = self.joints
        return np.concatenate([q, qd, self.frames[-1][1]])

    def predict(self, t: float, pending: Optional[Tuple[float, np.ndarray]] = None
                ) -> Optional[np.ndarray]:
        """The 17-D state predicted for time ``t`` (s), or None without measurements.

        ``pending``: a command (sent time, (7,)) about to be sent, counted as if it had been."""
        if self.joints is None or not self.frames:
            return None
        q, qd = self._joints_at(t, pending)
        return np.concatenate([q, qd, self._puck_at(t)])

    def _joints_at(self, t: float, pending: Optional[Tuple[float, np.ndarray]] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
        t0, q, qd = self.joints
        end = t0 + min(t - t0, self.max_horizon)
        if end <= t0:
            return q.copy(), qd.copy()
        # The command in effect at t0, then each that takes effect before ``end``.
        active, changes = np.zeros(ACTION_DIM), []
        for sent, command in list(self.commands) + ([pending] if pending is not None else []):
            effect = sent + self.delay
            if effect <= t0:
                active = command
            elif effect < end:
                changes.append((effect, command))
        now = t0
        for until, command in changes + [(end, None)]:
            q, qd = self._track(q, qd, active, until - now)
            now = until
            if command is not None:
                active = command
        return q, qd

    def _track(self, q: np.ndarray, qd: np.ndarray, command: np.ndarray,
               dt: float) -> Tuple[np.ndarray, np.ndarray]:
        """Exact first-order tracking of ``command`` for ``dt`` (s) from ``q``, ``qd``."""
        if dt <= 0:
            return q, qd
        if self.tau <= 0:
            return q + command * dt, command.copy()
        decay = np.exp(-dt / self.tau)
        return (q + command * dt + (qd - command) * self.tau * (1.0 - decay),
                command + (qd - command) * decay)

    def _puck_at(self, t: float) -> np.ndarray:
        t_last, last = self.frames[-1]
        recent = [(s, xyz) for s, xyz in self.frames if s >= t_last - self.window]
        if len(recent) < 3:
            return last.copy()
        ts = np.array([s for s, _ in recent])
        xy = np.array([xyz[:2] for _, xyz in recent])
        ts = ts - ts.mean()
        spread = max(float(ts @ ts), 1e-12)
        velocity = (ts @ (xy - xy.mean(axis=0))) / spread
        # Still unless the fitted speed is beyond the deadband and 3 std of the fit's noise
        # (with few frames after a reset the fit alone would extrapolate the tracker's noise).
        if np.linalg.norm(velocity) < max(self.deadband, 3.0 * self.noise / np.sqrt(spread)):
            # Still: the mean of the window's frames (2 mm tracker noise / sqrt(10)).
            out = last.copy()
            out[:2] = xy.mean(axis=0)
            return out
        # Extrapolate from the fitted line's value at the last frame (less noisy than the frame).
        fitted = xy.mean(axis=0) + velocity * ts[-1]
        out = last.copy()
        out[:2] = fitted + velocity * min(t - t_last, self.max_horizon)
        return out
