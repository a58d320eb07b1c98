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
"""The twin on a running clock, sensed like the physical cell (ROS-free).

:class:`RealtimeLoop` advances a :class:`~mbrl_robot.sim.push_env.PushEnv` to any time on its
own timeline (seconds since the loop started; the twin node maps it to stamps) and returns what
the sensors produced on the way:

- joint states every ``1 / realism.joint_state_rate_hz`` (0: once per control period) with
  Gaussian position and velocity noise, stamped with their sample time;
- tracker frames every ``1 / realism.tracker_rate_hz`` (0: with every joint state): the puck's
  x, y with Gaussian noise (z, the table height, unchanged), a frame lost with probability
  ``tracker_drop_rate``, delivered ``tracker_latency_s`` after its capture and stamped with the
  capture time.

Commands go to the env's actuator (:meth:`PushEnv.command`): each applies when it arrives, after
the actuation delay, and the joints track it to first order. The sensor noise is drawn from an RNG
seeded by the episode seed, so a realtime episode is reproducible up to the arrival times of the
commands.
"""

import collections
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

SENSOR_KEYS = ('joint_state_rate_hz', 'joint_position_noise_rad', 'joint_velocity_noise_rad_s',
               'tracker_rate_hz', 'tracker_latency_s', 'tracker_noise_m', 'tracker_drop_rate')


@dataclass
class JointSample:
    """Joint positions and velocities (7,), (7,) sampled at loop time ``t`` (s)."""

    t: float
    q: np.ndarray
    qd: np.ndarray


@dataclass
class TrackerFrame:
    """The tracked puck xyz (3,) captured at loop time ``t`` (s)."""

    t: float
    xyz: np.ndarray


def _divisor(physics_hz: float, rate_hz: float, name: str) -> int:
    every = physics_hz / rate_hz
    if every < 1 or abs(every - round(every)) > 1e-9:
        raise ValueError(f'realism.{name} = {rate_hz:g} Hz must divide physics_hz '
                         f'{physics_hz:g}')
    return int(round(every))


class RealtimeLoop:
    """A PushEnv on a timeline with the cell's sensors (see the module docstring).

    Args:
        env: the twin env (its actuator holds the delay and the velocity tracking).
        realism: the twin's ``realism`` block (``SENSOR_KEYS``).

    Raises:
        ValueError: a sensor rate that does not divide the physics rate, a missing key.
    """

    def __init__(self, env: Any, realism: Mapping[str, Any]):
        missing = [k for k in SENSOR_KEYS if k not in realism]
        if missing:
            raise ValueError(f'realism config lacks {missing}')
        self.env = env
        physics_hz = 1.0 / env.physics_dt
        rate = float(realism['joint_state_rate_hz']) or 1.0 / env.control_dt
        self.joint_every = _divisor(physics_hz, rate, 'joint_state_rate_hz')
        rate = float(realism['tracker_rate_hz'])
        # Physics steps per tracker frame (not necessarily whole: a frame is captured on the
        # first physics step at or after its time, so a 30 Hz camera works with 200 Hz physics).
        self.tracker_every = (self.joint_every if rate <= 0 else physics_hz / rate)
        self._next_capture = 0  # index of the next tracker frame in this episode
        self.q_noise = float(realism['joint_position_noise_rad'])
        self.qd_noise = float(realism['joint_velocity_noise_rad_s'])
        self.latency = float(realism['tracker_latency_s'])
        self.xy_noise = float(realism['tracker_noise_m'])
        self.drop_rate = float(realism['tracker_drop_rate'])
        self.episode_start = 0.0  # loop time of the current episode's env time 0
        self.frames_dropped = 0
        self._in_flight: collections.deque = collections.deque()  # (due, TrackerFrame)
        self._rng = np.random.default_rng(0)

    @property
    def time(self) -> float:
        """Loop time (s) the physics has reached."""
        return self.episode_start + self.env.sim_time

    def reset(self, seed: Optional[int] = None, options=None) -> Tuple[np.ndarray, dict]:
        """Start an episode now: the env's reset, new sensor noise, frames in flight dropped.

        Returns:
            The env's reset observation and info.
        """
        self.episode_start = self.time
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = np.random.default_rng([0 if seed is None else int(seed), 11])
        self._in_flight.clear()
        self._next_capture = 1
        return obs, info

    def _capture_step(self) -> int:
        return int(np.ceil(self._next_capture * self.tracker_every - 1e-6))

    def command(self, qd_cmd, t: float) -> None:
        """A joint-velocity command (7,) rad/s that arrived at loop time ``t``."""
        self.env.command(qd_cmd, at=max(t - self.episode_start, self.env.sim_time))

    def joint_sample(self) -> JointSample:
        """The joint state now, with the encoder noise."""
        q, qd = self.env.joint_state()
        if self.q_noise > 0:
            q = q + self._rng.normal(0.0, self.q_noise, q.shape)
        if self.qd_noise > 0:
            qd = qd + self._rng.normal(0.0, self.qd_noise, qd.shape)
        return JointSample(self.time, q, qd)

    def _capture(self) -> None:
        if self.drop_rate > 0 and self._rng.random() < self.drop_rate:
            self.frames_dropped += 1
            return
        xyz = self.env.puck_position()
        if self.xy_noise > 0:
            xyz[:2] += self._rng.normal(0.0, self.xy_noise, 2)
        self._in_flight.append((self.time + self.latency, TrackerFrame(self.time, xyz)))

    def advance_to(self, t: float) -> Tuple[List[JointSample], List[TrackerFrame]]:
        """Run the physics up to loop time ``t``; return the joint samples taken on the way and
        the tracker frames delivered by ``t`` (oldest first)."""
        joints: List[JointSample] = []
        env = self.env
        target = int(np.floor((t - self.episode_start) / env.physics_dt + 1e-9))
        while env.physics_steps < target:
            k = env.physics_steps
            # Up to the next sensor event (or the target), in one call.
            capture = self._capture_step()
            nxt = min((k // self.joint_every + 1) * self.joint_every, capture, target)
            env.advance_physics(nxt - k)
            if nxt % self.joint_every == 0:
                joints.append(self.joint_sample())
            if nxt == capture:
                self._capture()
                self._next_capture += 1
        frames = []
        while self._in_flight and self._in_flight[0][0] <= t + 1e-9:
            frames.append(self._in_flight.popleft()[1])
        return joints, frames
