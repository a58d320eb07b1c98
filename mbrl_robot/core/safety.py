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
"""The last line of defence between a planner and the arm: a command filter with hard guarantees.

Every velocity command the controller emits passes :class:`CommandFilter`, which guarantees, for
each joint and each control step of length ``dt``:

* ``|v| <= min(max_speed, velocity_limit)`` (the configured action scale never exceeds the arm);
* ``|v - v_prev| <= max_accel * dt`` unless a position limit forces a harder stop;
* ``q`` stays inside ``[lower + margin, upper - margin]``: the speed toward a limit never exceeds
  the speed from which the arm can still brake at ``max_accel`` before it, so smooth commands never
  end in a position clamp.

It is pure numpy (no ROS) so it is tested exhaustively in ``test/core/test_safety.py``.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence
import xml.etree.ElementTree as ET

import numpy as np


@dataclass(frozen=True)
class JointLimits:
    """Position (rad) and velocity (rad/s) limits of the controlled joints, in command order.

    The one description of the arm's limits: the command filter enforces them, the planner
    penalises predicted trajectories that leave them
    (:class:`~mbrl_robot.core.planning.trajectory.TrajectoryEvaluator`, told where the joint
    positions sit in the state).

    Attributes:
        lower: (J,) lower position limits (rad).
        upper: (J,) upper position limits (rad), each above its lower limit.
        velocity: (J,) velocity limits (rad/s); None: unlimited (``inf``).

    Raises:
        ValueError: empty or mismatched shapes, or a lower limit not below its upper limit.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: Optional[np.ndarray] = None

    def __post_init__(self):
        lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        velocity = np.full(lower.shape, np.inf) if self.velocity is None else np.asarray(
            self.velocity, dtype=np.float64).reshape(-1)
        if lower.size == 0 or lower.shape != upper.shape or velocity.shape != lower.shape:
            raise ValueError('joint limits: lower, upper and velocity must be non-empty and of '
                             f'equal shape, got {lower.shape}, {upper.shape}, {velocity.shape}')
        if not (lower < upper).all():
            raise ValueError('joint limits: every lower limit must be below its upper limit')
        object.__setattr__(self, 'lower', lower)
        object.__setattr__(self, 'upper', upper)
        object.__setattr__(self, 'velocity', velocity)

    @staticmethod
    def from_urdf(path: str, joints: Sequence[str]) -> 'JointLimits':
        """Read the ``<limit>`` of each named joint from a URDF.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a joint is missing or has no position/velocity limit.
        """
        root = ET.parse(path).getroot()
        by_name = {j.get('name'): j for j in root.iter('joint')}
        lower, upper, velocity = [], [], []
        for name in joints:
            joint = by_name.get(name)
            if joint is None:
                raise ValueError(f'{path}: no joint named {name!r} (have {sorted(by_name)})')
            limit = joint.find('limit')
            if limit is None or limit.get('velocity') is None or limit.get('lower') is None:
                raise ValueError(f'{path}: joint {name!r} has no position/velocity <limit>')
            lower.append(float(limit.get('lower')))
            upper.append(float(limit.get('upper')))
            velocity.append(float(limit.get('velocity')))
        return JointLimits(np.array(lower), np.array(upper), np.array(velocity))


class CommandFilter:
    """Clamp joint-velocity commands to speed, acceleration and position limits.

    Args:
        limits: the arm's joint limits.
        max_speed: rad/s that a normalised action of 1 maps to (the action scale).
        max_accel: rad/s^2 bound between consecutive commands.
        dt: control period in seconds.
        position_margin: rad kept free before each position limit.
    """

    def __init__(self, limits: JointLimits, max_speed: float, max_accel: float, dt: float,
                 position_margin: float = 0.02):
        if not (max_speed > 0 and max_accel > 0 and dt > 0 and position_margin >= 0):
            raise ValueError('CommandFilter: max_speed, max_accel and dt must be > 0, '
                             'position_margin >= 0')
        self.limits = limits
        self.speed_cap = np.minimum(float(max_speed), limits.velocity)
        self.max_speed = float(max_speed)
        self.max_accel = float(max_accel)
        self.dt = float(dt)
        self.lower = limits.lower + position_margin
        self.upper = limits.upper - position_margin

    @classmethod
    def from_params(cls, params: Dict[str, Any], urdf: Optional[str] = None) -> 'CommandFilter':
        """The filter a node's parameters define: ``task`` (joints, control rate, action scale),
        ``max_joint_accel_rad_s2`` and ``position_margin_rad``; limits from ``urdf`` (default:
        the package's pusher URDF)."""
        from mbrl_robot.paths import urdf_path
        task = params['task']
        return cls(JointLimits.from_urdf(urdf or urdf_path(), task['joints']),
                   task['max_joint_speed_rad_s'], params['max_joint_accel_rad_s2'],
                   1.0 / task['control_rate_hz'], params['position_margin_rad'])

    @property
    def max_action_step(self) -> float:
        """The acceleration bound as a step of the normalised action per control period (the
        planners' ``max_delta``)."""
        return self.max_accel * self.dt / self.max_speed

    def to_velocity(self, action: np.ndarray) -> np.ndarray:
        """Normalised action in [-1, 1] -> joint velocity (rad/s), before the filter."""
        return np.clip(action, -1.0, 1.0) * self.max_speed

    def to_action(self, velocity: np.ndarray) -> np.ndarray:
        """Joint velocity (rad/s) -> the normalised action that produces it."""
        return velocity / self.max_speed

    def __call__(self, q: np.ndarray, velocity: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Return the safe command closest to ``velocity``.

        Args:
            q: (7,) current joint positions.
            velocity: (7,) requested joint velocities (rad/s); non-finite entries become 0.
            previous: (7,) the command sent last cycle (rad/s).
        """
        v = np.where(np.isfinite(velocity), velocity, 0.0)
        v = np.clip(v, -self.speed_cap, self.speed_cap)
        step = self.max_accel * self.dt
        v = np.clip(v, previous - step, previous + step)
        v_up = self._braking_speed(np.maximum(self.upper - q, 0.0))
        v_down = self._braking_speed(np.maximum(q - self.lower, 0.0))
        return np.clip(v, -v_down, v_up)

    def _braking_speed(self, room: np.ndarray) -> np.ndarray:
        """Largest speed from which held commands v, v - a*dt, ... stop within ``room``.

        Those speeds cover S(v) = dt * (m*v - a*dt*m*(m-1)/2) with m = ceil(v / (a*dt)) steps.
        S(v) = v*dt + S(v - a*dt), so a command inside the envelope is still inside it after one
        period with a*dt of braking: the acceleration bound and the position limit never conflict.
        """
        u = self.max_accel * self.dt
        m = np.maximum(np.ceil((np.sqrt(1.0 + 8.0 * room / (self.dt * u)) - 1.0) / 2.0), 1.0)
        return (room / self.dt + u * m * (m - 1.0) / 2.0) / m

    def decelerate(self, q: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """One step of a smooth stop: toward zero at most ``max_accel * dt``."""
        return self(q, np.zeros_like(previous), previous)


def disagreement_scale(disagreement: float, slowdown: float, stop: float) -> float:
    """Command scale for an ensemble disagreement along the chosen plan.

    1 up to ``slowdown``, falling linearly to 0 at ``stop``: where the members disagree the model
    is outside its data, so the arm slows down and finally stops rather than trust it.
    """
    if disagreement >= stop:
        return 0.0
    if disagreement <= slowdown:
        return 1.0
    return (stop - disagreement) / (stop - slowdown)


class StampOrder:
    """Keeps each input stream's stamps in order: a state older than the last one accepted from
    its stream (a late or replayed message) or further in the future than ``future_tolerance_s``
    (a clock that is not ours) is refused.

    A stream whose stamps stay behind for ``restart_after`` messages in a row has restarted its
    clock (a restarted twin starts its sim time again): the new timeline is then accepted and
    counted in ``restarts``.

    Args:
        future_tolerance_s: how far (s) a stamp may lead the receiver's clock.
        restart_after: consecutive older stamps that mean a restarted clock (>= 1).

    Raises:
        ValueError: a negative tolerance or restart_after < 1.
    """

    def __init__(self, future_tolerance_s: float, restart_after: int = 5):
        if future_tolerance_s < 0 or restart_after < 1:
            raise ValueError(f'need future_tolerance_s >= 0 and restart_after >= 1, got '
                             f'{future_tolerance_s}, {restart_after}')
        self.future_tolerance_s = float(future_tolerance_s)
        self.restart_after = int(restart_after)
        self._last: Dict[str, float] = {}
        self._behind: Dict[str, int] = {}
        self.stale = 0
        self.future = 0
        self.restarts = 0

    def check(self, stream: str, stamp: float, now: Optional[float]) -> Optional[str]:
        """None when ``stamp`` (s) of ``stream`` is accepted (and recorded), else why not.

        ``now`` is the receiver's clock (s); None or <= 0 (no clock yet) skips the future check.
        """
        if now is not None and now > 0 and stamp > now + self.future_tolerance_s:
            self.future += 1
            return (f'{stream} stamp {stamp:.3f} s is {stamp - now:.3f} s ahead of the clock '
                    f'(tolerance {self.future_tolerance_s:g} s)')
        last = self._last.get(stream)
        if last is not None and stamp < last:
            behind = self._behind.get(stream, 0) + 1
            self._behind[stream] = behind
            if behind < self.restart_after:
                self.stale += 1
                return f'{stream} stamp {stamp:.3f} s is older than the last one, {last:.3f} s'
            self.restarts += 1
        self._behind[stream] = 0
        self._last[stream] = float(stamp)
        return None
