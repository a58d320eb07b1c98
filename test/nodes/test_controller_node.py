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
"""The controller node over real DDS: 20 Hz commands within limits, and a safe stop on bad input.

The controller runs in its own process on wall-clock time (as on a real arm); this test is the
arm: it publishes joint states, the puck and the target, starts an exploration episode, and
records every command. Malformed or stale state, unknown joint names, e-stop and shutdown must
all end in zero velocity, and a bad parameter must stop the node at start with a clear error.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.time import Time  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, Int32, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mbrl_robot.config import node_params  # noqa: E402
from mbrl_robot.core.buffer import RowSpool  # noqa: E402
from mbrl_robot.core.models import create_model  # noqa: E402
from mbrl_robot.core.policy import DeterministicPolicy, save_policy  # noqa: E402
from mbrl_robot.core.tasks.push import PUSH_OBS_LAYOUT  # noqa: E402
from mbrl_robot.nodes.transport import (answered_state_ns, EXECUTED_FIELDS,  # noqa: E402
                                        EXECUTED_QOS, is_resend, LATCHED_QOS,
                                        multiarray_to_rows)

pytestmark = pytest.mark.ros
PARAMS = node_params('ci_smoke', 'controller')
JOINTS = list(PARAMS['task']['joints'])
SPEED = PARAMS['task']['max_joint_speed_rad_s']
ACCEL_STEP = PARAMS['max_joint_accel_rad_s2'] / PARAMS['task']['control_rate_hz']


def controller_process(env, *extra, realtime=True):
    """The controller on the ci_smoke profile, on wall time; ``realtime=False`` keeps the
    profile's lockstep ``wait_for_fresh_state: true``."""
    mode = ['-p', 'controller:wait_for_fresh_state:=false'] if realtime else []
    return subprocess.Popen(
        [sys.executable, '-m', 'mbrl_robot.nodes.controller', '--ros-args', '--params-file',
         'config/ci_smoke.yaml', '-p', 'controller:use_sim_time:=false', *mode,
         '-p', 'controller:task.episode_steps:=100000', *extra],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class FakeArm:
    """Publishes the arm's state like a ros2_control driver and records the commands."""

    def __init__(self, states: bool = True):
        """``states=False``: no joint states, puck or target of its own (a twin publishes them)."""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('fake_arm', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.commands = []  # (wall time, np.ndarray)
        topics = PARAMS['topics']
        self.node.create_subscription(
            Float64MultiArray, f'/{PARAMS["controller_name"]}/commands',
            lambda m: self.commands.append((time.monotonic(), np.array(m.data))), 100)
        # The controller waits for two subscribers to its executed rows (buffer and recipe).
        self.node.create_subscription(Float64MultiArray, '/controller/executed',
                                      lambda m: None, EXECUTED_QOS)
        self.node.create_subscription(Float64MultiArray, '/controller/executed',
                                      lambda m: None, EXECUTED_QOS)
        self.joint_pub = self.node.create_publisher(JointState, topics['joint_states'], 10)
        self.puck_pub = self.node.create_publisher(PointStamped, topics['puck_pose'], 10)
        self.target_pub = self.node.create_publisher(PointStamped, topics['target_pose'],
                                                     LATCHED_QOS)
        self.episode_pub = self.node.create_publisher(String, '/recipe/episode', LATCHED_QOS)
        self.estop = self.node.create_client(SetBool, '/controller/estop')
        self.q = np.array([0.0, 0.6, 0.0, -1.2, 0.0, 1.0, 0.0])
        self.names = list(JOINTS)
        self.corrupt = False
        self.negative_stamp = False
        self.silent = False
        self.model_pub = self.node.create_publisher(String, '/' + topics['model_version'],
                                                    LATCHED_QOS)
        if states:
            self.node.create_timer(0.02, self.publish_state)

    def publish_state(self):
        if self.commands:  # a velocity-controlled arm integrates the last command
            self.q = self.q + self.commands[-1][1] * 0.02
        if self.silent:
            return
        stamp = self.node.get_clock().now().to_msg()
        msg = JointState(name=self.names, position=self.q.tolist(), velocity=[0.0] * 7)
        if self.corrupt:
            msg.position[3] = float('nan')
        msg.header.stamp = stamp
        if self.negative_stamp:  # rclpy's Time.from_msg raises on it
            msg.header.stamp.sec = -5
        self.joint_pub.publish(msg)
        puck = PointStamped()
        puck.header.stamp = stamp
        puck.header.frame_id = 'world'
        puck.point.x, puck.point.y, puck.point.z = 0.55, 0.0, 0.015
        self.puck_pub.publish(puck)

    def start_target(self, xyz=(0.7, 0.0, 0.015)):
        target = PointStamped()
        target.header.frame_id = 'world'
        target.point.x, target.point.y, target.point.z = xyz
        self.target_pub.publish(target)

    def start(self):
        self.start_target()
        self.episode_pub.publish(String(data=json.dumps({'episode': 0, 'policy': 'random'})))

    def start_learned_episode(self, announce, announcement):
        """Announce a checkpoint, start a planner episode on it, wait for the first commands."""
        announce.publish(String(data=json.dumps(announcement)))
        self.spin_for(1.0)
        t0 = time.monotonic()
        self.episode_pub.publish(String(data=json.dumps(
            {'episode': 0, 'policy': 'planner', 'min_model_version': 1})))
        self.start_target()
        while len(self.since(t0)) < 5 and time.monotonic() < t0 + 60:
            self.spin_for(0.2)

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def since(self, t0):
        return np.array([c for t, c in self.commands if t >= t0])

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def stop(arm, proc):
    """Close the fake arm and make sure the controller process is gone (whatever closing the
    arm raises: a test that failed must not leave a controller running)."""
    try:
        arm.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_commands_are_bounded_and_bad_input_stops_the_arm(ros_env):
    proc = controller_process(ros_env)
    arm = FakeArm()
    try:
        arm.spin_for(1.0)
        t0 = time.monotonic()
        arm.start()
        deadline = t0 + 60
        while len(arm.since(t0)) < 5 and time.monotonic() < deadline:
            arm.spin_for(0.2)
        arm.spin_for(1.0)
        t1 = time.monotonic()
        arm.spin_for(3.0)
        moving = arm.since(t1)
        periods = np.diff([t for t, _ in arm.commands if t >= t1])
        # 20 Hz of wall time, random exploration, inside the speed and acceleration bounds.
        assert 40 <= len(moving) <= 65, len(moving)
        assert np.median(periods) == pytest.approx(0.05, abs=0.01)
        assert np.abs(moving).max() > 0.05
        assert np.abs(moving).max() <= SPEED + 1e-9
        assert np.abs(np.diff(moving, axis=0)).max() <= ACCEL_STEP + 1e-9

        for fault in ('corrupt', 'names', 'silent', 'negative_stamp'):
            if fault == 'corrupt':
                arm.corrupt = True
            elif fault == 'negative_stamp':
                arm.negative_stamp = True
            elif fault == 'names':
                arm.names = [f'unknown_joint_{i}' for i in range(7)]
            else:
                arm.silent = True
            arm.spin_for(1.0)  # state_timeout_s is 0.5 s
            t2 = time.monotonic()
            arm.spin_for(0.5)
            stopped = arm.since(t2)
            assert len(stopped) >= 5, fault
            assert np.all(stopped == 0.0), f'{fault}: arm not stopped'
            arm.corrupt, arm.names, arm.silent = False, list(JOINTS), False
            arm.negative_stamp = False
            arm.spin_for(1.0)
            assert np.abs(arm.since(time.monotonic() - 0.5)).max() > 0.0, f'{fault}: no resume'

        # Announcements no check foresaw (JSON's Infinity as a version): dropped in one line
        # each, and the controller goes on commanding.
        arm.model_pub.publish(String(data='{"path": "/nowhere", "version": Infinity}'))
        arm.episode_pub.publish(String(data='{"episode": Infinity}'))
        arm.spin_for(1.0)
        assert proc.poll() is None, 'the controller died of an announcement'
        assert np.abs(arm.since(time.monotonic() - 0.5)).max() > 0.0, 'stopped commanding'

        assert arm.estop.wait_for_service(timeout_sec=5.0)
        future = arm.estop.call_async(SetBool.Request(data=True))
        arm.executor.spin_until_future_complete(future, timeout_sec=5.0)
        assert future.result().success
        arm.spin_for(0.3)
        t3 = time.monotonic()
        arm.spin_for(0.5)
        assert len(arm.since(t3)) >= 5 and np.all(arm.since(t3) == 0.0)

        future = arm.estop.call_async(SetBool.Request(data=False))
        arm.executor.spin_until_future_complete(future, timeout_sec=5.0)
        arm.spin_for(1.0)
        assert np.abs(arm.since(time.monotonic() - 0.5)).max() > 0.0
        # Shutdown: the last word to the arm is zero velocity.
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        arm.spin_for(0.5)
        assert np.all(arm.commands[-1][1] == 0.0)
        log = proc.stdout.read()
        assert 'rejected state' in log and 'lacks configured joints' in log
        assert 'no fresh state' in log
    finally:
        stop(arm, proc)


def test_a_stalled_lockstep_episode_says_what_it_waits_for(ros_env):
    """A lockstep episode whose states stop coming publishes WARN diagnostics naming the wait
    (on wall time: a stalled twin's clock stands still) and logs it."""
    proc = controller_process(ros_env, realtime=False)
    arm = FakeArm()
    diags = []
    arm.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    try:
        arm.silent = True
        arm.spin_for(1.0)
        arm.start()
        deadline = time.monotonic() + 30
        stalled = []
        while not stalled and time.monotonic() < deadline:
            arm.spin_for(0.5)
            stalled = [s for d in diags for s in d.status
                       if s.name.endswith('controller') and s.message.startswith('stalled')]
        assert stalled, [s.message for d in diags for s in d.status]
        values = {kv.key: kv.value for kv in stalled[-1].values}
        assert stalled[-1].message == 'stalled: waiting for a fresh state'
        assert values['episode'] == '0' and float(values['since_tick_s']) > 5.0
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        assert 'no tick for' in proc.stdout.read()
    finally:
        stop(arm, proc)


def test_an_episode_end_and_an_estop_are_on_the_diagnostics_at_once(ros_env):
    """Besides its period, the controller publishes its diagnostics when an episode ends and
    when its e-stop changes: a run (or its recording) shorter than a period still has them."""
    proc = controller_process(ros_env, '-p', 'controller:task.episode_steps:=10',
                              '-p', 'controller:diagnostics_period_s:=60.0')
    arm = FakeArm()
    diags, done = [], []
    heard_diags = arm.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    heard_done = arm.node.create_subscription(Int32, '/' + PARAMS['topics']['episode_done'],
                                              lambda m: done.append(time.monotonic()), 10)

    def heard():
        return [({kv.key: kv.value for kv in s.values}, s.message) for d in diags
                for s in d.status if s.name.endswith('controller')]
    try:
        # Neither topic is latched: the episode starts once both are matched to the controller.
        deadline = time.monotonic() + 30
        while (min(heard_diags.get_publisher_count(), heard_done.get_publisher_count()) < 1
               and time.monotonic() < deadline):
            arm.spin_for(0.1)
        arm.start()
        while not (done and heard()) and time.monotonic() < deadline:
            arm.spin_for(0.2)
        assert done, 'the episode never ended'
        assert heard(), 'nothing on /diagnostics at the end of the episode (period: 60 s)'
        values, message = heard()[-1]
        # The episode is over (-1), at its last step.
        assert (values['episode'], values['step'], message) == ('-1', '10', 'ok'), heard()
        assert arm.estop.wait_for_service(timeout_sec=5.0)
        future = arm.estop.call_async(SetBool.Request(data=True))
        arm.executor.spin_until_future_complete(future, timeout_sec=5.0)
        end = time.monotonic() + 5
        while heard()[-1][1] != 'e-stop engaged' and time.monotonic() < end:
            arm.spin_for(0.2)
        assert [m for _, m in heard()] == ['ok', 'e-stop engaged'], heard()
    finally:
        stop(arm, proc)


def test_a_lost_lockstep_command_is_resent_and_never_steps_the_twin_twice(ros_env):
    """The real lockstep twin behind a relay that loses the episode's first command (as DDS does
    when it is published before the twin's subscription has matched: the fleet test once stalled
    for good on it) and delivers every later one twice. The controller sends the lost command
    again; the twin steps once per state, so the rows stay one control period apart."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    twin = subprocess.Popen(
        [sys.executable, '-m', 'mbrl_robot.nodes.twin', '--ros-args', '--params-file',
         'config/ci_smoke.yaml', '-p', 'twin:mode:=lockstep', '-p', 'twin:controller_name:=relay',
         '-p', 'twin:lockstep_stop_after_s:=0.0'],
        cwd=root, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = controller_process(ros_env, '-p', 'controller:use_sim_time:=true', realtime=False)
    arm = FakeArm(states=False)
    relay = arm.node.create_publisher(Float64MultiArray, '/relay/commands', 10)
    seen = []

    def forward(msg):
        seen.append(answered_state_ns(msg))
        if len(seen) > 1:  # the first is lost; the others arrive twice
            relay.publish(msg)
            relay.publish(msg)
    arm.node.create_subscription(Float64MultiArray, f'/{PARAMS["controller_name"]}/commands',
                                 forward, 10)
    states = set()  # the twin's distinct state stamps: one per step
    arm.node.create_subscription(
        JointState, PARAMS['topics']['joint_states'],
        lambda m: states.add((m.header.stamp.sec, m.header.stamp.nanosec)), 100)
    rows = []
    arm.node.create_subscription(
        Float64MultiArray, '/controller/executed',
        lambda m: rows.extend(multiarray_to_rows(m, EXECUTED_FIELDS)), EXECUTED_QOS)
    try:
        arm.spin_for(1.0)
        arm.episode_pub.publish(String(data=json.dumps({'episode': 0, 'policy': 'random'})))
        deadline = time.monotonic() + 40
        while len({row[1] for row in rows}) < 30 and time.monotonic() < deadline:
            arm.spin_for(0.2)
        steps = sorted({int(row[1]) for row in rows})
        assert steps[:30] == list(range(30)), (steps, seen[:5])
        assert seen[0] is not None and seen.count(seen[0]) >= 2  # the lost one, resent
        stamps = np.array(sorted({float(row[2]) for row in rows}))
        np.testing.assert_allclose(np.diff(stamps), 1.0 / PARAMS['task']['control_rate_hz'],
                                   atol=1e-6)
        # One step per distinct command (the start's state and one in flight aside): a twin
        # stepping on each copy made twice as many states as commands.
        assert len(states) <= len(set(seen)) + 2, (len(states), len(set(seen)))
    finally:
        stop(arm, proc)  # the controller is killed there; the twin stops on SIGINT
        twin.send_signal(signal.SIGINT)
        try:
            twin.wait(timeout=15)
        except subprocess.TimeoutExpired:
            twin.kill()
    log, twin_log = proc.stdout.read(), twin.stdout.read()
    assert 'sending it again' in log, log[-3000:]
    assert 'not stepped' in twin_log, twin_log[-3000:]


def test_overrunning_plans_never_leave_the_arm_without_a_command(ros_env, tmp_path):
    # A planner far too big for 20 Hz on this CPU: every plan overruns its deadline. The
    # profile's own mode (lockstep, wait_for_fresh_state) must still send a command on time.
    model = create_model(node_params('ci_smoke', 'trainer')['model'], 17, 7, 'cpu', seed=0)
    model.save(str(tmp_path / 'v0001'))
    assert PARAMS['wait_for_fresh_state']
    proc = controller_process(ros_env, '-p', 'controller:planner.population_size:=20000',
                              '-p', 'controller:planner.horizon:=25', realtime=False)
    arm = FakeArm()
    diagnostics = []
    arm.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    markers = []
    arm.node.create_subscription(MarkerArray, '/controller/predicted_paths', markers.append, 10)
    announce = arm.node.create_publisher(String, '/trainer/model', LATCHED_QOS)
    try:
        arm.start_learned_episode(announce, {'version': 1, 'path': str(tmp_path / 'v0001')})
        t1 = time.monotonic()
        arm.spin_for(3.0)
        times = [t for t, _ in arm.commands if t >= t1]
        end = time.monotonic() + 20.0
        while not markers and time.monotonic() < end:  # the first plan that finished
            arm.spin_for(0.2)
        # The twin (like MoveIt Servo) stops the arm after 0.25 s without a command.
        assert len(times) >= 36, len(times)
        assert np.max(np.diff(times)) < 0.25, np.max(np.diff(times))

        def misses():
            return [int(v.value) for d in diagnostics for s in d.status for v in s.values
                    if v.key == 'deadline_misses']
        # Diagnostics go out once a second: wait for the report that counts the late plans.
        end = time.monotonic() + 20.0
        while not any(misses()) and time.monotonic() < end:
            arm.spin_for(0.2)
        assert misses() and max(misses()) > 0
        # The chosen plan's predicted puck and tool paths, with the ensemble spread around them.
        assert markers
        namespaces = {m.ns for m in markers[-1].markers}
        assert namespaces == {'puck', 'puck_spread', 'tool', 'tool_spread'}
        assert all(len(m.points) == 26 for m in markers[-1].markers)
        moving = arm.since(t1)
        assert np.abs(moving).max() <= SPEED + 1e-9
        assert np.abs(np.diff(moving, axis=0)).max() <= ACCEL_STEP + 1e-9
    finally:
        stop(arm, proc)


class HostileFactory:
    """Stands in for the controller's PolicyFactory: a planner whose plans are NaN, huge, the
    wrong shape, late, raise, or push every joint into its upper limit with a disagreement that
    jumps past disagreement_stop and back."""

    device, mode, model_version = 'cpu', 'planner', 1

    def __init__(self):
        self.plans = 0

    def has_model(self, kind='planner'):
        return True

    def set_target(self, xyz):
        pass

    def create(self, explore=False, kind='planner'):
        return self

    def refresh(self, policy):
        pass

    def set_last_action(self, action):
        pass

    def plan(self, state, step):
        self.plans += 1
        kind = self.plans % 10
        if kind == 1:
            raise RuntimeError('planner crashed')
        if kind == 2:
            time.sleep(0.2)  # overruns four deadlines
        plan = {0: np.full((5, 7), np.nan), 3: np.ones((5, 3)),
                4: np.full((5, 7), -1e9)}.get(kind, np.full((5, 7), 1e3))
        return plan, step

    def last_info(self):
        # Full speed up for four plans, then a disagreement far past disagreement_stop.
        return {'plan_time_ms': 1.0, 'disagreement': 10.0 if self.plans % 10 == 9 else 0.0}


def test_hostile_plans_never_break_the_bounds_of_a_published_command(ros_env):
    from rclpy.executors import MultiThreadedExecutor
    from mbrl_robot.nodes.controller import ControllerNode
    from mbrl_robot.paths import config_path
    context = rclpy.Context()
    rclpy.init(context=context, args=[
        '--ros-args', '--params-file', config_path('ci_smoke'),
        '-p', 'controller:use_sim_time:=false', '-p', 'controller:wait_for_fresh_state:=false',
        '-p', 'controller:task.episode_steps:=100000',
        # The plans are under test, not a stale state (a hard stop): a loaded machine may starve
        # this process's fake arm for longer than the profile's 0.5 s.
        '-p', 'controller:state_timeout_s:=5.0'])
    node = ControllerNode(context=context)
    cache = node.files.cache_dir  # model_source auto: a temporary folder for DDS checkpoints
    assert os.path.isdir(cache)
    node.control.policies = node.policies = HostileFactory()
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    arm = FakeArm()
    limits = node.control.filter.limits
    arm.q = limits.upper - 0.5  # hostile plans drive every joint into its upper limit
    try:
        arm.spin_for(1.0)
        t0 = time.monotonic()
        arm.start_target()
        arm.episode_pub.publish(String(data=json.dumps({'episode': 0, 'policy': 'planner'})))
        positions = []
        while time.monotonic() < t0 + 4.0:
            arm.spin_for(0.02)
            positions.append(arm.q.copy())
        sent = arm.since(t0)
        # Enough commands to judge the bounds. The 20 Hz rate is test_commands_are_bounded_...'s:
        # in this one process (node, planner thread, fake arm) 16-80 commands arrive in 4 s.
        assert len(sent) >= 10, len(sent)
        assert np.all(np.isfinite(sent))
        assert np.abs(sent).max() <= SPEED + 1e-9
        assert np.abs(sent).max() > 0.5 * SPEED  # it did move towards the limits
        assert np.abs(np.diff(sent, axis=0)).max() <= ACCEL_STEP + 1e-9
        positions = np.array(positions)
        assert np.all(positions <= limits.upper) and np.all(positions >= limits.lower)
        stats = node.control.stats
        assert stats['plan_errors'] > 0 and stats['deadline_misses'] > 0
    finally:
        arm.close()
        executor.shutdown()
        spinner.join(timeout=10)  # no callback may run on the node being destroyed
        assert not spinner.is_alive(), 'the executor still spins after its shutdown'
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert not os.path.exists(cache)  # the node's temporary checkpoint folder went with it


def test_go_home_drives_to_the_ready_pose_at_limited_speed(ros_env):
    proc = controller_process(ros_env)
    arm = FakeArm()
    home = np.array(PARAMS['home_joint_positions'])
    go_home = arm.node.create_client(Trigger, '/controller/go_home')
    try:
        assert go_home.wait_for_service(timeout_sec=30.0)
        t0 = time.monotonic()
        future = go_home.call_async(Trigger.Request())
        arm.executor.spin_until_future_complete(future, timeout_sec=60.0)
        assert future.result() is not None and future.result().success
        assert np.max(np.abs(arm.q - home)) < 0.02
        moving = arm.since(t0)
        assert np.abs(moving).max() <= PARAMS['home_speed_rad_s'] + 1e-9
        assert np.abs(np.diff(moving, axis=0)).max() <= ACCEL_STEP + 1e-9
    finally:
        stop(arm, proc)


def test_policy_mode_commands_from_a_trained_policy_and_stops_on_bad_state(ros_env, tmp_path):
    torch.manual_seed(0)
    policy = DeterministicPolicy(17 + 3, 7, [32, 32])
    sha256 = save_policy(policy, tmp_path / 'v0001', 1, PUSH_OBS_LAYOUT)
    proc = controller_process(ros_env, '-p', 'controller:mode:=policy')
    arm = FakeArm()
    announce = arm.node.create_publisher(String, '/trainer/policy', LATCHED_QOS)
    try:
        arm.start_learned_episode(announce, {'version': 1, 'sha256': sha256,
                                             'path': str(tmp_path / 'v0001')})
        t1 = time.monotonic()
        arm.spin_for(2.0)
        moving = arm.since(t1)
        assert len(moving) >= 30 and np.abs(moving).max() > 0.0
        assert np.abs(moving).max() <= SPEED + 1e-9
        assert np.abs(np.diff(moving, axis=0)).max() <= ACCEL_STEP + 1e-9
        # The target moved onto the puck: the goal hold brings the arm to rest (within the
        # acceleration bound) and keeps it there; a target past exit_radius_m moves it again.
        arm.start_target((0.55, 0.01, 0.015))
        arm.spin_for(1.0)
        t_hold = time.monotonic()
        arm.spin_for(0.5)
        assert len(arm.since(t_hold)) >= 5 and np.all(arm.since(t_hold) == 0.0)
        arm.start_target()
        arm.spin_for(0.5)
        t_go = time.monotonic()
        arm.spin_for(0.5)
        assert np.abs(arm.since(t_go)).max() > 0.0
        arm.corrupt = True
        arm.spin_for(1.0)
        t2 = time.monotonic()
        arm.spin_for(0.5)
        assert len(arm.since(t2)) >= 5 and np.all(arm.since(t2) == 0.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        log = proc.stdout.read()
        assert 'policy v1 loaded' in log
    finally:
        stop(arm, proc)


def test_bad_parameter_stops_the_node_with_a_clear_error(ros_env):
    proc = controller_process(ros_env, '-p', 'controller:planner.horizon:=0')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert 'planner.horizon' in out


def test_a_killed_controller_resends_the_rows_it_never_had_acknowledged(ros_env, tmp_path):
    """Rows published but not acknowledged (no buffer here) survive a kill -9 in outbox_dir: the
    restarted controller resends them, and the buffer's acknowledgement empties the outbox."""
    outbox = str(tmp_path / 'outbox')
    arm = FakeArm()
    resent = []
    arm.node.create_subscription(
        Float64MultiArray, '/controller/executed',
        lambda m: resent.append(multiarray_to_rows(m)) if is_resend(m) else None, EXECUTED_QOS)
    ack_pub = arm.node.create_publisher(Float64MultiArray, '/buffer/executed_ack', LATCHED_QOS)
    proc = controller_process(ros_env, '-p', f'controller:outbox_dir:={outbox}',
                              '-p', 'controller:executed_resend_period_s:=60.0')
    try:
        arm.spin_for(1.0)
        t0 = time.monotonic()
        arm.start()
        while len(arm.since(t0)) < 30 and time.monotonic() < t0 + 60:
            arm.spin_for(0.2)
        proc.kill()
        proc.wait()
        spool = RowSpool(os.path.join(outbox, 'executed_rows.bin'), EXECUTED_FIELDS)
        before = spool.loaded
        spool.release()
        assert len(before) >= 20 and spool.problem is None
        assert before[:, 1].tolist() == list(range(len(before)))  # episode 0 from step 0
        assert not resent  # nothing was due within executed_resend_period_s

        proc = controller_process(ros_env, '-p', f'controller:outbox_dir:={outbox}',
                                  '-p', 'controller:executed_resend_period_s:=0.5')
        deadline = time.monotonic() + 60
        while not resent and time.monotonic() < deadline:
            arm.spin_for(0.2)
        assert resent, 'the restarted controller resent nothing'
        np.testing.assert_array_equal(resent[0][:len(before)], before)
        # The buffer stored them all (and the new run's rows so far): the outbox empties. The
        # spool's file is truncated when the queue empties, and a row's stamp is the moment its
        # command takes effect, a little after the wall clock: an ack stamped now leaves the rows
        # made while it travels queued, and the file as it was (with every acknowledged row,
        # which a restarted controller prunes by the latched ack). So the ack covers episode 0
        # up to a minute from now, as the buffer's would once it had stored those rows.
        t_ack = time.time()
        ack_pub.publish(Float64MultiArray(data=[0.0, 1e9, t_ack + 60.0]))

        def outbox_rows():
            with open(os.path.join(outbox, 'executed_rows.bin'), 'rb') as f:
                data = f.read()[16:]
            return np.frombuffer(data, dtype=np.float64).reshape(-1, EXECUTED_FIELDS)
        # The controller trims its outbox when it handles the ack (on 2 loaded cores it can
        # take over a second): wait for it, up to 15 s.
        deadline = time.monotonic() + 15
        left = outbox_rows()
        while (left[:, 2] <= t_ack - 0.5).any() and time.monotonic() < deadline:
            arm.spin_for(0.2)
            left = outbox_rows()
        assert (left[:, 2] > t_ack - 0.5).all()  # only rows since the ack
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        assert f'{len(before)} executed rows an earlier run' in proc.stdout.read()
    finally:
        stop(arm, proc)


def test_a_lockstep_episode_runs_on_however_the_clock_messages_come(ros_env):
    """A lockstep twin (this test) steps once per command and publishes /clock twice back to
    back: the controller on sim time must tick once on every fresh state, e-stopped too. On its
    control timer it stood still within seconds (rclpy's EventsExecutor calls a sim-time timer
    twice after such a burst and then skips a period; benchmarks/sim_time_timer.py)."""
    proc = controller_process(ros_env, '-p', 'controller:use_sim_time:=true', realtime=False)
    arm = FakeArm()
    clock_pub = arm.node.create_publisher(Clock, '/clock', 10)
    arm.node.destroy_timer(next(iter(arm.node.timers)))  # no wall-clock states: one a step
    t = [1_000_000_000]
    rows = []
    arm.node.create_subscription(Float64MultiArray, '/controller/executed',
                                 lambda m: is_resend(m) or rows.append(multiarray_to_rows(m)),
                                 EXECUTED_QOS)  # live rows: no buffer here, resends galore

    def step():
        stamp = Time(nanoseconds=t[0]).to_msg()
        clock_pub.publish(Clock(clock=stamp))
        clock_pub.publish(Clock(clock=Time(nanoseconds=t[0] + 1000).to_msg()))
        msg = JointState(name=list(JOINTS), position=arm.q.tolist(), velocity=[0.0] * 7)
        msg.header.stamp = stamp
        arm.joint_pub.publish(msg)
        puck = PointStamped()
        puck.header.stamp = stamp
        puck.point.x, puck.point.y, puck.point.z = 0.55, 0.0, 0.015
        arm.puck_pub.publish(puck)

    pending, per_step = [0], []  # commands since the last step, and at each step

    def command(m):
        arm.q = arm.q + np.array(m.data) * 0.05
        pending[0] += 1

    def step_on_command():  # a step per command would hide two commands for one state
        if pending[0]:
            per_step.append(pending[0])
            pending[0] = 0
            t[0] += 50_000_000
            step()

    arm.node.create_subscription(Float64MultiArray, f'/{PARAMS["controller_name"]}/commands',
                                 command, 100)
    arm.node.create_timer(0.005, step_on_command)
    try:
        for _ in range(10):  # the controller's /clock subscription discovers us
            step()
            arm.spin_for(0.3)
        arm.start()
        deadline = time.monotonic() + 60
        while not arm.commands and time.monotonic() < deadline:
            arm.spin_for(0.2)
            step()  # the first state after the episode message
        assert arm.commands, 'no command: the lockstep episode never started'
        arm.spin_for(1.0)  # past the states this test sent by hand to start
        k = len(per_step)
        counts = []
        for _ in range(4):
            n = len(arm.commands)
            arm.spin_for(2.0)
            counts.append(len(arm.commands) - n)
        assert min(counts) >= 10, f'commands per 2 s: {counts} (the lockstep loop stalled)'
        assert max(per_step[k:]) == 1, 'two commands for one state'
        stamps = np.concatenate(rows)[:, 2]
        assert len(np.unique(stamps)) == len(stamps), 'two ticks on one state'
        # E-stopped: one zero per state (each steps the twin), never two.
        assert arm.estop.wait_for_service(timeout_sec=5.0)
        future = arm.estop.call_async(SetBool.Request(data=True))
        arm.executor.spin_until_future_complete(future, timeout_sec=5.0)
        arm.spin_for(1.0)
        n, k = len(arm.commands), len(per_step)
        arm.spin_for(2.0)
        zeros = np.array([c for _, c in arm.commands[n:]])
        assert len(zeros) >= 10 and not zeros.any()
        assert max(per_step[k:]) == 1, f'e-stopped: {max(per_step[k:])} commands for one state'
    finally:
        stop(arm, proc)


def test_an_announcement_whose_files_never_come_stops_counting_as_loading(ros_env):
    """A model announced over DDS whose files never arrive (a liar's version 10^15, a trainer
    gone) counts as loading, which the recipe's stall watchdog takes as progress, only for
    model_files_wait_s from its first announcement (announcing it again does not restart the
    wait); then one warning, and it is still waited for, so its files load if they come."""
    from mbrl_robot.nodes.controller import ControllerNode
    from mbrl_robot.paths import config_path
    context = rclpy.Context()
    rclpy.init(context=context, args=[
        '--ros-args', '--params-file', config_path('ci_smoke'),
        '-p', 'controller:use_sim_time:=false', '-p', 'controller:model_files_wait_s:=2.0'])
    node = ControllerNode(context=context)
    said = []

    class Logger:
        def __getattr__(self, level):
            return lambda message, **_: said.append((level, message))

    node.get_logger = Logger  # the node's own lines, as written
    try:
        assert node.loading() == 0
        lie = {'path': '/nowhere/models/v1000000000000000', 'version': 10 ** 15}
        node.model_callback(String(data=json.dumps(lie)))
        assert node.loading() == 1
        time.sleep(2.2)
        assert node.loading() == 0
        node.model_callback(String(data=json.dumps(lie)))  # again: the wait does not restart
        assert node.loading() == 0
        warnings = [m for level, m in said if level == 'warning']
        assert len(warnings) == 1 and f'v{10 ** 15}' in warnings[0], said
        assert ('model', 10 ** 15) in node._waiting  # what files_callback loads from
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
