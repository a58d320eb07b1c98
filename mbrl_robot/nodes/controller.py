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
"""The 20 Hz MPC controller: state in, joint-velocity commands out, in the ros2_control convention.

Every cycle of a timer on the node clock (sim time aware) it builds the 17-D state from the latest
``/joint_states`` and puck messages, plans with the configured planner (random shooting, CEM, PETS)
on a worker thread, and publishes the first action on ``/<controller_name>/commands`` through
:class:`~mbrl_robot.core.safety.CommandFilter`. A plan that misses its deadline never leaves the
arm without a command: the next action of the previous plan goes out (or a smooth stop), and the
miss is counted on ``/diagnostics``. Zero velocity on any fault, on e-stop and at shutdown.
"""

import concurrent.futures
import json
import sys
import threading
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, Int32, String
from std_srvs.srv import SetBool, Trigger
import torch
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_robot.core.safety import CommandFilter, disagreement_scale
from mbrl_robot.nodes.lifecycle import run_node
from mbrl_robot.nodes.params import (add_live_parameters, declare_node_parameters,
                                     schema_descriptions)
from mbrl_robot.nodes.transport import (EXECUTED_LABELS, EXECUTED_QOS, executed_row,
                                        LATCHED_QOS, rows_to_multiarray)
from mbrl_robot.core.control import GoalHold, PlannerPolicy, PolicyFactory

NUM_JOINTS = 7
STATE_DIM = 17

# Read from the schema (mbrl_robot/params/controller.yaml, shared.yaml): every parameter once.
DESCRIPTIONS = schema_descriptions('controller')


class ControllerNode(Node):
    """MPC controller: plans on a learned ensemble and commands joint velocities at 20 Hz."""

    def __init__(self):
        super().__init__('controller')
        p = declare_node_parameters(self, 'controller')
        self.params = p
        problem = self.check_live_params(p)
        if problem:
            raise ValueError(problem)
        if p['torch_threads'] > 0:
            torch.set_num_threads(p['torch_threads'])
        self.joints = list(p['task']['joints'])
        if len(self.joints) != NUM_JOINTS or len(set(self.joints)) != NUM_JOINTS:
            raise ValueError(f'task.joints must name {NUM_JOINTS} distinct joints, '
                             f'got {self.joints}')
        self.period = 1.0 / p['task']['control_rate_hz']
        self.episode_steps = int(p['task']['episode_steps'])
        self.state_timeout = p['state_timeout_s']
        self.wait_for_fresh_state = bool(p['wait_for_fresh_state'])
        self.deadline = p['plan_deadline_fraction'] * self.period
        self.disagreement_slowdown = p['disagreement_slowdown']
        self.disagreement_stop = p['disagreement_stop']
        self.exploration = p['exploration']
        self.min_executed_subscribers = p['min_executed_subscribers']
        self.home = np.asarray(p['home_joint_positions'], dtype=np.float64)
        if self.home.shape != (NUM_JOINTS,):
            raise ValueError(f'home_joint_positions must have {NUM_JOINTS} values')
        self.home_speed = p['home_speed_rad_s']
        self._homing = threading.Event()
        self._homed = threading.Event()
        if self.exploration not in ('random', 'zero'):
            raise ValueError(f"exploration must be 'random' or 'zero', got {self.exploration!r}")
        self.filter = CommandFilter.from_params(p)
        self.policies = PolicyFactory(p, self.filter, self.period, self.get_logger())

        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._q = self._qd = self._puck = self._target = None
        self._joint_stamp = self._puck_stamp = None
        self._last_tick_stamp = None
        self._tick_due = None
        self._prev_cmd = np.zeros(NUM_JOINTS)
        self._estop = False
        self._episode = -1
        self._policy_kind = 'zero'
        self._explore = False
        self._min_model_version = 0
        self._step = 0
        self._policy: Optional[PlannerPolicy] = None
        self._plan_future: Optional[concurrent.futures.Future] = None
        self._fallback_plan = None  # (plan (H, A), step it starts at)
        self._workers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='planner')
        self._stats = {'ticks': 0, 'deadline_misses': 0, 'faults': 0, 'rejected_states': 0,
                       'plan_ms': 0.0, 'plan_ms_max': 0.0, 'disagreement': 0.0,
                       'state_age_ms': float('nan'), 'scale': 1.0}
        self._rng = np.random.default_rng(int(p['planner']['seed']))
        # goal_hold.* and disagreement_* take effect at once (the others are read_only).
        add_live_parameters(self, 'controller', p, self.apply_params, self.check_live_params)

        io = ReentrantCallbackGroup()
        self._tick_group = MutuallyExclusiveCallbackGroup()
        topics = p['topics']
        # Relative names from the profile: a namespace moves them, a renamed node does not.
        prefix = p['controller_name'].strip('/')
        self.command_pub = self.create_publisher(Float64MultiArray, prefix + '/commands', 10)
        self.executed_pub = self.create_publisher(Float64MultiArray, topics['executed'],
                                                  EXECUTED_QOS)
        self.done_pub = self.create_publisher(Int32, topics['episode_done'], EXECUTED_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, '~/predicted_paths', 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.distance_pub = self.create_publisher(Float64, '~/distance_to_target', 10)
        self.disagreement_pub = self.create_publisher(Float64, '~/disagreement', 10)
        self.plan_ms_pub = self.create_publisher(Float64, topics['plan_time_ms'], 100)
        self.create_subscription(JointState, topics['joint_states'], self.joint_state_callback,
                                 10, callback_group=io)
        self.create_subscription(PointStamped, topics['puck_pose'], self.puck_callback, 10,
                                 callback_group=io)
        self.create_subscription(PointStamped, topics['target_pose'], self.target_callback,
                                 LATCHED_QOS, callback_group=io)
        # Policy mode deploys a trained policy; its checkpoints are announced like models.
        announcements = topics['policy_version' if p['mode'] == 'policy' else 'model_version']
        self.create_subscription(String, announcements, self.model_callback, LATCHED_QOS,
                                 callback_group=io)
        self.create_subscription(String, topics['episode'], self.episode_callback, LATCHED_QOS,
                                 callback_group=io)
        self.create_service(SetBool, '~/estop', self.estop_callback, callback_group=io)
        self.create_service(Trigger, '~/go_home', self.go_home_callback, callback_group=io)
        self.timer = self.create_timer(self.period, self.timer_callback,
                                       callback_group=self._tick_group)
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics, callback_group=io)
        self.get_logger().info(
            'controller ready: '
            + (f'{p["planner"]["name"]} planner' if p['mode'] == 'planner'
               else f'policy mode ({announcements})')
            + f' on {self.policies.device}, '
            f'{1.0 / self.period:.0f} Hz, commands on {self.command_pub.topic_name}')

    # --- parameters -----------------------------------------------------------------------
    @staticmethod
    def check_live_params(p: dict) -> str:
        """'' when the writable parameters agree with each other, else why not."""
        hold = p['goal_hold']
        if hold['exit_radius_m'] < hold['enter_radius_m']:
            return (f'goal_hold.exit_radius_m = {hold["exit_radius_m"]} must be >= '
                    f'goal_hold.enter_radius_m = {hold["enter_radius_m"]}')
        if p['disagreement_stop'] <= p['disagreement_slowdown']:
            return (f'disagreement_stop = {p["disagreement_stop"]} must be > '
                    f'disagreement_slowdown = {p["disagreement_slowdown"]}')
        return ''

    def apply_params(self, changed: dict):
        """Apply writable parameters set at run time; ``changed`` is nested, already valid."""
        if 'disagreement_slowdown' in changed:
            self.disagreement_slowdown = changed['disagreement_slowdown']
        if 'disagreement_stop' in changed:
            self.disagreement_stop = changed['disagreement_stop']
        if 'goal_hold' in changed:
            cfg = dict(self.params['goal_hold'])
            self.policies.goal_hold_cfg = cfg
            hold = GoalHold.from_config(cfg)
            policy = self._policy
            if policy is not None:
                # The running episode's policy keeps its hold state, with the new radii.
                policy.hold.enter_radius, policy.hold.exit_radius = (hold.enter_radius,
                                                                     hold.exit_radius)
        self.get_logger().info(f'parameters set: {changed}')

    # --- inputs ---------------------------------------------------------------------------
    def joint_state_callback(self, msg: JointState):
        try:
            q, qd = self._parse_joint_state(msg)
        except ValueError as e:
            self._reject_state(str(e))
            return
        with self._lock:
            self._q, self._qd = q, qd
            self._joint_stamp = Time.from_msg(msg.header.stamp)
        self._try_tick()

    def _parse_joint_state(self, msg: JointState):
        if len(msg.position) != len(msg.name) or len(msg.velocity) != len(msg.name):
            raise ValueError(f'JointState with {len(msg.name)} names, {len(msg.position)} '
                             f'positions and {len(msg.velocity)} velocities')
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.joints if j not in index]
        if missing:
            raise ValueError(f'JointState lacks configured joints {missing} '
                             f'(got {list(msg.name)})')
        order = [index[j] for j in self.joints]
        q = np.asarray(msg.position, dtype=np.float64)[order]
        qd = np.asarray(msg.velocity, dtype=np.float64)[order]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            raise ValueError('JointState holds NaN or inf')
        return q, qd

    def puck_callback(self, msg: PointStamped):
        puck = np.array([msg.point.x, msg.point.y, msg.point.z])
        if not np.all(np.isfinite(puck)):
            self._reject_state('puck position holds NaN or inf')
            return
        with self._lock:
            self._puck = puck
            self._puck_stamp = Time.from_msg(msg.header.stamp)
        self._try_tick()

    def target_callback(self, msg: PointStamped):
        target = np.array([msg.point.x, msg.point.y, msg.point.z])
        if not np.all(np.isfinite(target)):
            self.get_logger().error('target holds NaN or inf: ignored, keeping the last target')
            return
        with self._lock:
            self._target = target
        self.policies.set_target(target)

    def _reject_state(self, why: str):
        with self._lock:
            self._stats['rejected_states'] += 1
            # A malformed message invalidates the state until a good one arrives.
            self._joint_stamp = None
        self.get_logger().error(f'rejected state: {why}; holding zero velocity',
                                throttle_duration_sec=1.0)

    def model_callback(self, msg: String):
        try:
            info = json.loads(msg.data)
            path, version = info['path'], int(info['version'])
        except (ValueError, KeyError, TypeError) as e:
            self.get_logger().error(f'bad model announcement {msg.data!r}: {e}')
            return
        # Loading takes longer than a cycle: do it aside and swap between two ticks.
        threading.Thread(target=self._load_model, args=(path, version, info.get('sha256')),
                         daemon=True).start()

    def _load_model(self, path: str, version: int, sha256: Optional[str]):
        load = (self.policies.load_policy if self.policies.mode == 'policy'
                else self.policies.load_model)
        if load(path, version, sha256):
            # An episode may be waiting for exactly this model (lockstep: nothing else ticks).
            self._try_tick()

    def episode_callback(self, msg: String):
        try:
            info = json.loads(msg.data)
            episode = int(info['episode'])
            kind = info.get('policy', 'planner')
            min_version = int(info.get('min_model_version', 0))
            explore = bool(info.get('explore', False))
        except (ValueError, KeyError, TypeError) as e:
            self.get_logger().error(f'bad episode message {msg.data!r}: {e}')
            return
        if kind not in ('planner', 'random', 'zero'):
            self.get_logger().error(f'unknown episode policy {kind!r}: holding still')
            episode = -1
        with self._lock:
            if episode == self._episode:
                return
            self._episode, self._policy_kind, self._step = episode, kind, 0
            self._explore = explore
            self._min_model_version = min_version
            self._fallback_plan = None
            self._last_tick_stamp = None
            self._tick_due = self.get_clock().now() if episode >= 0 else None
            self._policy = None
        if episode >= 0:
            self.get_logger().info(f'episode {episode}: {kind} policy')
            self._try_tick()

    def estop_callback(self, request, response):
        self._estop = bool(request.data)
        if self._estop:
            self._send(np.zeros(NUM_JOINTS))
            self.get_logger().warning('E-STOP engaged: zero velocity until released')
        else:
            self.get_logger().info('e-stop released')
        response.success = True
        response.message = 'engaged' if self._estop else 'released'
        return response

    def go_home_callback(self, request, response):
        """Drive to the ready pose at ``home_speed_rad_s``; answers once there (real-arm reset)."""
        if self._episode >= 0:
            response.success, response.message = False, 'an episode is running'
            return response
        self._homed.clear()
        self._homing.set()
        with self._lock:
            self._tick_due = self.get_clock().now()
        self._try_tick()
        response.success = self._homed.wait(timeout=120.0)
        self._homing.clear()
        response.message = 'home' if response.success else 'did not reach home in 120 s'
        self.get_logger().info(f'go_home: {response.message}')
        return response

    # --- the control cycle ----------------------------------------------------------------
    def timer_callback(self):
        with self._lock:
            self._tick_due = self.get_clock().now()
        self._try_tick()

    def _try_tick(self):
        if not self._tick_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                due = self._tick_due
                if due is None:
                    return
                if (self._episode >= 0 and self._policy_kind == 'planner'
                        and self.policies.model_version < self._min_model_version):
                    # The recipe asked for a model still loading: start once it is in.
                    self.get_logger().info(
                        f'waiting for model v{self._min_model_version}',
                        throttle_duration_sec=2.0)
                    return
                if (self._episode >= 0 and self.executed_pub.get_subscription_count()
                        < self.min_executed_subscribers):
                    # Every executed row must reach the buffer: start once it has discovered us.
                    self.get_logger().info('waiting for the buffer to subscribe to executed rows',
                                           throttle_duration_sec=2.0)
                    return
                if self.wait_for_fresh_state and (self._episode >= 0 or self._homing.is_set()):
                    # Lockstep: the state of this tick is newer than the last one used.
                    stamp = self._state_stamp()
                    if stamp is None or (self._last_tick_stamp is not None
                                         and stamp <= self._last_tick_stamp):
                        return
                self._tick_due = None
            self._tick()
        finally:
            self._tick_lock.release()

    def _state_stamp(self):
        if self._joint_stamp is None or self._puck_stamp is None:
            return None
        return min(self._joint_stamp, self._puck_stamp)

    def _tick(self):
        try:
            self._control_step()
        except Exception as e:  # noqa: B902 - any fault must end in zero velocity, then report
            self._stats['faults'] += 1
            self._send(np.zeros(NUM_JOINTS))
            self.get_logger().error(f'control fault, zero velocity sent: {e!r}',
                                    throttle_duration_sec=1.0)

    def _control_step(self):
        now = self.get_clock().now()
        with self._lock:
            stamp = self._state_stamp()
            state = None
            if stamp is not None and self._q is not None and self._puck is not None:
                state = np.concatenate([self._q, self._qd, self._puck])
                self._stats['state_age_ms'] = (now - stamp).nanoseconds * 1e-6
            episode, kind, step, target, explore = (self._episode, self._policy_kind,
                                                    self._step, self._target, self._explore)
        self._stats['ticks'] += 1
        if self._estop:
            self._send(np.zeros(NUM_JOINTS))
            return
        if episode < 0 and self._homing.is_set() and state is not None:
            self._last_tick_stamp = stamp
            self._home_step(state[:7])
            return
        if episode < 0:
            if not self.wait_for_fresh_state:
                self._send(self.filter.decelerate(self._q if state is not None
                                                  else np.zeros(NUM_JOINTS), self._prev_cmd))
            return
        if state is None or (now - stamp).nanoseconds * 1e-9 > self.state_timeout:
            self._send(np.zeros(NUM_JOINTS))
            self.get_logger().warning('no fresh state: zero velocity', throttle_duration_sec=1.0)
            return
        if target is None:
            self._send(np.zeros(NUM_JOINTS))
            self.get_logger().warning('no target yet: zero velocity', throttle_duration_sec=1.0)
            return
        self._last_tick_stamp = stamp
        distance = float(np.linalg.norm(state[14:17] - target))
        self.distance_pub.publish(Float64(data=distance))
        if step >= self.episode_steps:
            self._publish_executed(episode, step, stamp, state, np.full(NUM_JOINTS, np.nan),
                                   target)
            with self._lock:
                self._episode = -1
            if not self.wait_for_fresh_state:
                self._send(self.filter.decelerate(state[:7], self._prev_cmd))
            self.done_pub.publish(Int32(data=episode))
            self.get_logger().info(f'episode {episode} done: final distance {distance:.3f} m')
            return
        action = self._choose_action(kind, state, step, explore)
        command = self.filter(state[:7], self.filter.to_velocity(action), self._prev_cmd)
        command *= self._disagreement_scale()
        self._send(command)
        self._publish_executed(episode, step, stamp, state, self.filter.to_action(command),
                               target)
        with self._lock:
            self._step = step + 1

    def _home_step(self, q: np.ndarray):
        error = self.home - q
        if np.max(np.abs(error)) < 0.01 and np.max(np.abs(self._prev_cmd)) < 1e-3:
            self._send(np.zeros(NUM_JOINTS))
            self._homed.set()
            return
        # Proportional approach at capped speed; the filter adds the acceleration bound.
        request = np.clip(2.0 * error, -self.home_speed, self.home_speed)
        self._send(self.filter(q, request, self._prev_cmd))

    def _choose_action(self, kind: str, state: np.ndarray, step: int,
                       explore: bool) -> np.ndarray:
        if kind == 'zero' or (kind == 'planner' and not self.policies.has_model()
                              and self.exploration == 'zero'):
            return np.zeros(NUM_JOINTS)
        if kind == 'random' or not self.policies.has_model():
            return self._rng.uniform(-1.0, 1.0, NUM_JOINTS)
        if self._policy is None:
            self._policy = self.policies.create(explore=explore)
        policy = self._policy
        if self._plan_future is None:
            # Between two plans: the only safe moment to swap in a newer model.
            self.policies.refresh(policy)
            policy.set_last_action(self.filter.to_action(self._prev_cmd))
            self._plan_future = self._workers.submit(policy.plan, state.copy(), step)
        timeout = None if self.wait_for_fresh_state else self.deadline
        try:
            plan, plan_step = self._plan_future.result(timeout=timeout)
            self._plan_future = None
            self._fallback_plan = (plan, plan_step)
            info = policy.last_info()
            if 'plan_time_ms' in info:  # absent while holding at the goal: nothing was planned
                self._stats['plan_ms'] = info['plan_time_ms']
                self._stats['plan_ms_max'] = max(self._stats['plan_ms_max'],
                                                 self._stats['plan_ms'])
                self.plan_ms_pub.publish(Float64(data=float(self._stats['plan_ms'])))
            self._stats['disagreement'] = info.get('disagreement', 0.0)
            self.disagreement_pub.publish(Float64(data=float(self._stats['disagreement'])))
            self._publish_markers(info)
            if 0 <= step - plan_step < len(plan):
                return plan[step - plan_step]
            # A plan that arrived after its step (realtime twin) and holds no row for now.
            return self.filter.to_action(self.filter.decelerate(state[:7], self._prev_cmd))
        except concurrent.futures.TimeoutError:
            self._stats['deadline_misses'] += 1
            self.get_logger().warning('plan missed its deadline: sending the previous plan',
                                      throttle_duration_sec=1.0)
            if self._fallback_plan is not None:
                plan, plan_step = self._fallback_plan
                if 0 <= step - plan_step < len(plan):
                    return plan[step - plan_step]
            return self.filter.to_action(self.filter.decelerate(state[:7], self._prev_cmd))

    def _disagreement_scale(self) -> float:
        d = self._stats['disagreement']
        scale = disagreement_scale(d, self.disagreement_slowdown, self.disagreement_stop)
        if scale < 1.0:
            self.get_logger().warning(
                f'ensemble disagreement {d:.3f}: command scaled by {scale:.2f}',
                throttle_duration_sec=1.0)
        self._stats['scale'] = scale
        return scale

    def _send(self, command: np.ndarray):
        self._prev_cmd = np.asarray(command, dtype=np.float64)
        self.command_pub.publish(Float64MultiArray(data=self._prev_cmd.tolist()))

    def _publish_executed(self, episode, step, stamp, state, action, target):
        row = executed_row(episode, step, stamp.nanoseconds * 1e-9, state, action, target)
        self.executed_pub.publish(rows_to_multiarray(row[None], EXECUTED_LABELS))

    def _publish_markers(self, info: dict):
        paths = info.get('paths')
        if not paths:
            return
        markers = MarkerArray()
        stamp = self.get_clock().now().to_msg()
        for i, (name, mean, spread, rgb) in enumerate(paths):
            line = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, ns=name, id=i)
            line.header.frame_id = 'world'
            line.header.stamp = stamp
            line.scale.x = 0.005
            line.color.r, line.color.g, line.color.b, line.color.a = (*rgb, 1.0)
            line.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in mean]
            spheres = Marker(type=Marker.SPHERE_LIST, action=Marker.ADD, ns=name + '_spread',
                             id=100 + i)
            spheres.header = line.header
            # One sphere size per marker: the largest spread along the path, so the worst
            # disagreement is what the operator sees.
            size = float(max(2.0 * np.max(spread), 0.005))
            spheres.scale.x = spheres.scale.y = spheres.scale.z = size
            spheres.color.r, spheres.color.g, spheres.color.b, spheres.color.a = (*rgb, 0.25)
            spheres.points = line.points
            markers.markers += [line, spheres]
        self.marker_pub.publish(markers)

    def publish_diagnostics(self):
        s = dict(self._stats)
        status = DiagnosticStatus(name='mbrl_robot: controller', hardware_id='mbrl_robot')
        level = DiagnosticStatus.OK
        message = 'ok'
        if self._estop:
            level, message = DiagnosticStatus.ERROR, 'e-stop engaged'
        elif s['faults'] or s['rejected_states']:
            level, message = DiagnosticStatus.WARN, 'faults or rejected states'
        elif s['deadline_misses']:
            level, message = DiagnosticStatus.WARN, 'plan deadline misses'
        status.level, status.message = level, message
        s['model_version'] = self.policies.model_version
        s['episode'] = self._episode
        s['step'] = self._step
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in s.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self):
        # Last word to the arm is zero velocity, whatever happened before.
        self._estop = True
        try:
            self._send(np.zeros(NUM_JOINTS))
        finally:
            self._workers.shutdown(wait=False, cancel_futures=True)
            super().destroy_node()


def main(args=None):
    """Run the node until Ctrl-C or SIGTERM (see ``lifecycle.run_node``)."""
    # The planner thread must not hold the GIL for long stretches: the 20 Hz tick needs it.
    sys.setswitchinterval(0.0005)
    run_node(ControllerNode, args, threads=4)


if __name__ == '__main__':
    main()
