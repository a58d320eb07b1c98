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
"""The twin node: the PyBullet pushing cell behind the same topics as the real arm.

Graph (``docs/interfaces.md``):

- subscribes ``<controller_name>/commands`` (std_msgs/Float64MultiArray, 7 joint velocities in
  rad/s ordered like ``task.joints``) with ros2_control's forward command controller guards: a
  message of the wrong length or with a NaN/inf is rejected (throttled error log) and the arm
  holds zero velocity; commands beyond the URDF velocity limits are clamped to them, counted
  (``clamped_commands``) and logged (throttled), and each joint stops short of its position
  limits;
- publishes ``/clock`` (it owns sim time: the twin itself never uses sim time),
  ``topics.joint_states`` (sensor_msgs/JointState: names, position, velocity), the puck on
  ``topics.puck_pose`` and the target on ``topics.target_pose`` (geometry_msgs/PointStamped,
  frame ``world``; the target transient local), all stamped with sim time;
- services ``~/reset`` (std_srvs/Trigger: a new episode seeded with ``seed`` + episode
  index; the message is JSON ``{"episode", "seed", "puck", "target"}``) and ``~/new_target``
  (a new target for the current puck, same JSON).

Modes: ``realtime`` runs the physics on the wall clock whatever the controller does
(:class:`~mbrl_robot.sim.realtime.RealtimeLoop`): a steady timer at
``realism.joint_state_rate_hz`` advances the physics to the current wall time and publishes the
joint states sampled on the way and the tracker frames due (stamped with their capture time); a
command applies when it arrives (after ``realism.actuation_delay_s``, tracked to first order) and
the arm is stopped when no command arrived for ``command_timeout_s`` of wall time. With
``clock: wall`` stamps are on the system clock and no ``/clock`` goes out, as from a real arm's
driver; with ``clock: sim`` a ``/clock`` message goes out with each joint sample, stamped with
its time. ``lockstep`` advances one control step per command message received, so a slow
planner does not change the dynamics; a command labelled with the stamp of the state it answers
(the controller's: ``transport.command_message``) steps only while that state is the current
one, so a resent or late command never steps twice (state and clock go out after each step, at
start and after a reset; while no command comes, the same state and clock, with the same stamp,
are repeated every ``idle_republish_s`` of wall time so that a node started later can begin; after
``lockstep_stop_after_s`` without a command, a dead controller, the arm is stepped with zero
velocity until it is still, so the published state never shows a moving arm that nothing
commands). Episodes never end on their own: the caller resets.
"""

import json
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.parameter import Parameter
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_robot.core.tasks.push import JOINT_POS, JOINT_VEL, PUCK, STATE_DIM
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.params import (add_live_parameters, declare_node_parameters,
                                     schema_descriptions)
from mbrl_robot.nodes.transport import answered_state_ns, LATCHED_QOS
from mbrl_robot.sim.push_env import PushEnv
from mbrl_robot.sim.realtime import RealtimeLoop, TrackerFrame

MODES = ('realtime', 'lockstep')
# Realtime skips remembered for the stamps of samples taken before them (a tracker frame is
# published up to its latency after its capture).
MAX_SKIPS_KEPT = 16
# Realtime mode: a timer callback this late (wall time, s) skips the lost time instead of
# running the physics faster than real time to catch up (logged, counted as overruns).
MAX_CATCH_UP_S = 0.1
# A lockstep command answers the current state when its label's stamp is within this (ns).
STAMP_TOLERANCE_NS = 1000
# Node-private: /<namespace>/twin/reset (the recipe's reset_service names it).
RESET_SERVICE = '~/reset'
NEW_TARGET_SERVICE = '~/new_target'
WORLD_FRAME = 'world'
# Sim time of the first state: ROS clocks read time zero as "no time received yet".
SIM_TIME_START_S = 1.0
LOG_THROTTLE_S = 2.0
# Lockstep stop of an arm nothing commands: still below this speed (rad/s), at most this many
# zero-velocity steps.
STILL_RAD_S = 1e-3
MAX_STOP_STEPS = 10

DESCRIPTIONS = schema_descriptions('twin')


class TwinNode(GuardedNode):
    """PyBullet twin of the arm, the puck and the target (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__('twin', **kwargs)
        params = declare_node_parameters(self, 'twin')
        self.params = params
        self.mode = str(params['mode'])
        if self.mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {self.mode!r}')
        if self.get_parameter('use_sim_time').value:
            self.get_logger().warning('the twin owns /clock: ignoring use_sim_time:=true')
            self.set_parameters([Parameter('use_sim_time', Parameter.Type.BOOL, False)])
        self.task: Dict[str, Any] = params['task']
        self.joints: List[str] = list(self.task['joints'])
        self.topics = params['topics']
        self.controller_name = str(params['controller_name'])
        self.command_timeout_s = float(params['command_timeout_s'])
        self.seed = int(params['seed'])
        self.episode_seed = int(params['episode_seed'])
        self.idle_republish_s = float(params['idle_republish_s'])
        self.lockstep_stop_after_s = float(params['lockstep_stop_after_s'])
        self.clock_mode = str(params['clock'])
        if self.clock_mode == 'wall' and self.mode != 'realtime':
            raise ValueError("clock: wall needs mode: realtime (lockstep time is the twin's)")
        self.env = PushEnv(self.task, gui=bool(params['gui']), physics=params['physics'],
                           realism=params['realism'], variant=params['variant'])
        self.loop = RealtimeLoop(self.env, params['realism'])
        self.overruns = 0
        self.velocity_limits = self.env.velocity_limits

        self.episode = 0
        self.total_steps = 0
        self.rejected_commands = 0
        self.clamped_commands = 0
        self.safety_stops = 0
        self.stale_commands = 0  # lockstep commands answering a state already stepped past
        self._command = np.zeros(len(self.joints))
        self._last_command_wall: Optional[float] = None
        self._timed_out = True

        # command_timeout_s and episode_seed take effect at once; the others are read_only.
        add_live_parameters(self, 'twin', params, self._apply_parameters)
        self.clock_pub = self.create_publisher(ClockMsg, '/clock', 10)
        self.joint_state_pub = self.create_publisher(JointState, self.topics['joint_states'], 10)
        self.puck_pub = self.create_publisher(PointStamped, self.topics['puck_pose'], 10)
        self.target_pub = self.create_publisher(PointStamped, self.topics['target_pose'],
                                                LATCHED_QOS)
        self.command_sub = self.create_subscription(
            Float64MultiArray, f'{self.controller_name}/commands', self.command_callback, 10)
        self.reset_srv = self.create_service(Trigger, RESET_SERVICE, self.reset_callback)
        self.new_target_srv = self.create_service(Trigger, NEW_TARGET_SERVICE,
                                                  self.new_target_callback)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._last_obs = np.zeros(STATE_DIM)
        self._last_publish_wall = time.monotonic()
        # Realtime: loop time t (s) is wall time since _wall0; its stamp is _stamp0 + t, plus,
        # on the wall clock, the time skipped before t (see timer_callback).
        self._wall0 = time.monotonic()
        self._stamp0_ns = (self.get_clock().now().nanoseconds if self.clock_mode == 'wall'
                           else int(round(SIM_TIME_START_S * 1e9)))
        self._skips: List[Tuple[float, int]] = []  # (loop time, total skipped ns from then on)
        if self.mode == 'realtime':
            self.timer = self.create_timer(self.loop.joint_every * self.env.physics_dt,
                                           self.timer_callback, clock=steady)
        else:
            self.timer = self.create_timer(min(self.idle_republish_s / 2, 0.1),
                                           self.idle_callback, clock=steady)
        self._start_episode()
        self.get_logger().info(
            f'twin up: mode {self.mode}, {self.env.control_rate_hz:g} Hz, physics '
            f'{self.env.substeps} substeps, commands on {self.command_sub.topic_name}, '
            f'seed {self.seed}')

    # -- parameters -------------------------------------------------------------------------

    def _apply_parameters(self, changed: Dict[str, Any]) -> None:
        if 'command_timeout_s' in changed:
            self.command_timeout_s = float(changed['command_timeout_s'])
        if 'episode_seed' in changed:
            self.episode_seed = int(changed['episode_seed'])
        if 'lockstep_stop_after_s' in changed:
            self.lockstep_stop_after_s = float(changed['lockstep_stop_after_s'])

    # -- time and publishing ----------------------------------------------------------------

    def sim_time(self) -> Time:
        """Stamp of the current state: lockstep ``SIM_TIME_START_S`` + steps / control rate,
        realtime the stamp of the loop's time."""
        if self.mode == 'realtime':
            return self._stamp(self.loop.time)
        ns = int(round(SIM_TIME_START_S * 1e9)) + self.total_steps * int(
            round(1e9 / self.env.control_rate_hz))
        return Time(nanoseconds=ns, clock_type=ClockType.ROS_TIME)

    def _stamp(self, t: float) -> Time:
        """The stamp of realtime loop time ``t`` (s): on the wall clock the time the sample
        stands for, skipped time included (a sample taken before a skip keeps its time)."""
        skipped = 0
        for since, total in reversed(self._skips):
            if t > since:
                skipped = total
                break
        return Time(nanoseconds=self._stamp0_ns + int(round(t * 1e9)) + skipped,
                    clock_type=ClockType.ROS_TIME)

    def publish_state(self, obs: np.ndarray) -> None:
        """Publish /clock, then the joint states and the puck stamped with the same sim time."""
        self._last_obs = obs
        self._last_publish_wall = time.monotonic()
        stamp = self.sim_time().to_msg()
        self.clock_pub.publish(ClockMsg(clock=stamp))
        js = JointState()
        js.header.stamp = stamp
        js.name = list(self.joints)
        js.position = [float(v) for v in obs[JOINT_POS]]
        js.velocity = [float(v) for v in obs[JOINT_VEL]]
        self.joint_state_pub.publish(js)
        self.puck_pub.publish(self._point(obs[PUCK], stamp))

    def publish_target(self) -> None:
        """Publish the current target (transient local)."""
        self.target_pub.publish(self._point(self.env.target, self.sim_time().to_msg()))

    @staticmethod
    def _point(xyz, stamp) -> PointStamped:
        msg = PointStamped()
        msg.header.stamp = stamp
        msg.header.frame_id = WORLD_FRAME
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in xyz)
        return msg

    # -- commands and stepping --------------------------------------------------------------

    def command_callback(self, msg: Float64MultiArray) -> None:
        """Store a command (rad/s); lockstep: advance one control step with it."""
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(self.joints),) or not np.all(np.isfinite(data)):
            self.rejected_commands += 1
            why = (f'{data.size} values, expected {len(self.joints)}'
                   if data.shape != (len(self.joints),) else 'a NaN or inf value')
            self.get_logger().error(
                f'rejected command on {self.command_sub.topic_name} ({why}); holding zero '
                f'velocity ({self.rejected_commands} rejected so far)',
                throttle_duration_sec=LOG_THROTTLE_S)
            data = np.zeros(len(self.joints))
        self._command = self._clamp(data)
        self._last_command_wall = time.monotonic()
        if self._timed_out and self.mode == 'realtime':
            self.get_logger().info('commands arriving: arm moving')
        self._timed_out = False
        if self.mode == 'lockstep':
            answers = answered_state_ns(msg)
            current = self.sim_time().nanoseconds
            if answers is not None and abs(answers - current) > STAMP_TOLERANCE_NS:
                # A command for a state already stepped past: a controller's resend after our
                # state went missing, or one sent before a reset. Stepping on it would advance
                # a step nobody planned; the current state goes out again instead.
                self.stale_commands += 1
                self.get_logger().info(
                    f'command answering the state of {answers * 1e-9:.3f} s, not the current '
                    f'{current * 1e-9:.3f} s: not stepped, the current state repeated '
                    f'({self.stale_commands} so far)', throttle_duration_sec=LOG_THROTTLE_S)
                self.publish_state(self._last_obs)
                return
            self.advance(self._command)
        else:
            self.loop.command(self._command, self._last_command_wall - self._wall0)

    def _clamp(self, data: np.ndarray) -> np.ndarray:
        """The command within the URDF velocity limits; an excess is counted and logged."""
        clamped = np.clip(data, -self.velocity_limits, self.velocity_limits)
        if np.any(clamped != data):
            self.clamped_commands += 1
            worst = int(np.argmax(np.abs(data) - self.velocity_limits))
            self.get_logger().warning(
                f'command {data[worst]:.6g} rad/s for {self.joints[worst]} beyond its limit '
                f'{self.velocity_limits[worst]:.3g} rad/s: clamped ({self.clamped_commands} '
                'commands clamped so far)', throttle_duration_sec=LOG_THROTTLE_S)
        return clamped

    def timer_callback(self) -> None:
        """Realtime mode: the physics up to now, then the sensors' messages (zero velocity after
        a command timeout)."""
        now = time.monotonic()
        if not self._timed_out and (
                self._last_command_wall is None
                or now - self._last_command_wall > self.command_timeout_s):
            self._timed_out = True
            self._command = np.zeros(len(self.joints))
            self.loop.command(self._command, now - self._wall0)
            self.get_logger().warning(
                f'no command for {self.command_timeout_s:g} s: stopping the arm')
        late = now - self._wall0 - self.loop.time
        if late > MAX_CATCH_UP_S:
            # The process was starved (a loaded machine): lose the time, never run the physics
            # faster than the arm would move.
            self.overruns += 1
            skip = late - self.loop.joint_every * self.env.physics_dt
            self._wall0 += skip
            if self.clock_mode == 'wall':
                # Stamps stay on the wall clock, as a real driver's: without this every stamp
                # after a skip lagged the wall clock by all the time skipped so far, so a
                # controller saw ever older states and, past its state_timeout_s, only stale
                # ones (a realtime run stalled at zero velocity after five 100-150 ms skips).
                total = (self._skips[-1][1] if self._skips else 0) + int(round(skip * 1e9))
                self._skips = self._skips[-(MAX_SKIPS_KEPT - 1):] + [(self.loop.time, total)]
            self.get_logger().warning(
                f'twin loop {late * 1e3:.0f} ms late: skipped ({self.overruns} overruns so far)',
                throttle_duration_sec=LOG_THROTTLE_S)
        joints, frames = self.loop.advance_to(now - self._wall0)
        self.publish_samples(joints, frames)

    def publish_samples(self, joints, frames) -> None:
        """Realtime: the joint samples, each after a /clock message with its stamp (sim clock),
        and the tracker frames, each stamped with its own time.

        /clock ticks with the joint samples, so it stays on their grid and never repeats a
        time: it once carried the physics' own time, which a timer firing a physics step late
        (a loaded machine) put off the grid, and a timer firing early repeated."""
        for sample in joints:
            stamp = self._stamp(sample.t).to_msg()
            if self.clock_mode == 'sim':
                self.clock_pub.publish(ClockMsg(clock=stamp))
            js = JointState()
            js.header.stamp = stamp
            js.name = list(self.joints)
            js.position = [float(v) for v in sample.q]
            js.velocity = [float(v) for v in sample.qd]
            self.joint_state_pub.publish(js)
            self._last_obs = np.concatenate([sample.q, sample.qd, self._last_obs[PUCK]])
        for frame in frames:
            self.puck_pub.publish(self._point(frame.xyz, self._stamp(frame.t).to_msg()))
            self._last_obs = np.concatenate([self._last_obs[:PUCK.start], frame.xyz])
        self._last_publish_wall = time.monotonic()

    def idle_callback(self) -> None:
        """Lockstep mode: stop an arm nothing commands, repeat the state for late joiners."""
        now = time.monotonic()
        since = now - (self._last_command_wall or self._last_publish_wall)
        moving = np.max(np.abs(self._last_obs[JOINT_VEL])) > STILL_RAD_S
        if moving and self.lockstep_stop_after_s > 0 and since >= self.lockstep_stop_after_s:
            self.safety_stops += 1
            self.get_logger().warning(
                f'no command for {since:.2f} s with the arm moving: stepping it with zero '
                f'velocity until still ({self.safety_stops} stops so far)')
            for _ in range(MAX_STOP_STEPS):
                obs = self.advance(np.zeros(len(self.joints)))
                if np.max(np.abs(obs[JOINT_VEL])) <= STILL_RAD_S:
                    break
            self._command = np.zeros(len(self.joints))
            return
        if now - self._last_publish_wall >= self.idle_republish_s:
            self.publish_state(self._last_obs)

    def advance(self, command: np.ndarray) -> np.ndarray:
        """Step the sim one control period with ``command`` (rad/s) and publish the state."""
        obs = self.env.step_velocity(command)
        self.total_steps += 1
        self.publish_state(obs)
        if self.env.step_count == self.env.episode_steps:
            info = self._episode_summary()
            self.get_logger().info(
                f'episode {self.episode}: {self.env.episode_steps} steps done, distance '
                f'{info["distance"]:.3f} m ({"success" if info["success"] else "no success"})')
        return obs

    # -- episodes ---------------------------------------------------------------------------

    def _episode_summary(self) -> Dict[str, Any]:
        dist = float(np.linalg.norm(self.env.puck_position() - self.env.target))
        return {'distance': dist, 'success': dist < self.env.success_radius}

    def _episode_json(self) -> str:
        return json.dumps({'episode': self.episode, 'seed': self._current_seed,
                           'dynamics': {k: round(float(v), 6) for k, v in self._dynamics.items()},
                           'puck': [round(float(v), 6) for v in self.env.puck_position()],
                           'target': [round(float(v), 6) for v in self.env.target]})

    def _start_episode(self) -> None:
        self._current_seed = (self.episode_seed if self.episode_seed >= 0
                              else self.seed + self.episode)
        obs, info = self.loop.reset(seed=self._current_seed)
        self._command = np.zeros(len(self.joints))
        self._last_command_wall = None
        self._timed_out = True
        self.get_logger().info(
            f'episode {self.episode} (seed {self._current_seed}): puck '
            f'{np.round(info["puck"], 3).tolist()}, target {np.round(info["target"], 3).tolist()}'
            f', distance {info["distance"]:.3f} m, puck mass '
            f'{info["dynamics"]["puck_mass_kg"]:.3f} kg, friction '
            f'{info["dynamics"]["puck_lateral_friction"]:.2f}')
        self._dynamics = info['dynamics']
        self.publish_target()
        if self.mode == 'realtime':
            # The start as the sensors see it: a joint sample now, the puck without latency
            # (the tracker saw it resting there).
            self.publish_samples([self.loop.joint_sample()],
                                 [TrackerFrame(self.loop.time, info['puck'])])
        else:
            self.publish_state(obs)

    def reset_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Start the next seeded episode."""
        done = self._episode_summary()
        self.get_logger().info(
            f'reset: episode {self.episode} ended after {self.env.step_count} steps at distance '
            f'{done["distance"]:.3f} m ({"success" if done["success"] else "no success"})')
        self.episode += 1
        # A reset takes one control period of sim time: every distinct state gets a new stamp.
        self.total_steps += 1
        if self.mode == 'realtime':
            self.loop.advance_to(time.monotonic() - self._wall0)  # the old episode up to now
        self._start_episode()
        response.success = True
        response.message = self._episode_json()
        return response

    def new_target_callback(self, request: Trigger.Request,
                            response: Trigger.Response) -> Trigger.Response:
        """Draw a new target for the current puck."""
        target = self.env.new_target()
        self.get_logger().info(f'episode {self.episode}: new target '
                               f'{np.round(target, 3).tolist()}')
        self.publish_target()
        response.success = True
        response.message = self._episode_json()
        return response

    def destroy_node(self) -> None:
        """Release the PyBullet client, then the node."""
        # Either may be missing when __init__ failed.
        if getattr(self, 'timer', None) is not None:
            self.timer.cancel()
        if getattr(self, 'env', None) is not None:
            self.env.close()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> None:
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    run_node(TwinNode, args)


if __name__ == '__main__':
    main()
