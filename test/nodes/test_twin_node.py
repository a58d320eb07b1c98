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
"""The twin node over real DDS: the node runs in its own process, the test is another participant.

Note: a node's own block in a params file beats a plain ``-p name:=value``; overrides on the
command line name the node (``-p twin:mode:=realtime``).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mbrl_robot.config import node_params  # noqa: E402
from mbrl_robot.nodes.transport import LATCHED_QOS  # noqa: E402
from ros_calls import call_trigger  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = node_params('lecture', 'twin')
JOINTS = list(PARAMS['task']['joints'])
DT = 1.0 / PARAMS['task']['control_rate_hz']
COMMAND = np.array([0.2, 0.0, 0.1, 0.0, -0.1, 0.0, 0.3])  # base/wrist joints: no contact


class Graph:
    """Test-side participant: listens to the twin, sends commands, calls its services."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('twin_test', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.states, self.clocks, self.pucks, self.targets = [], [], [], []
        topics = PARAMS['topics']
        self.node.create_subscription(JointState, topics['joint_states'],
                                      self.states.append, 100)
        self.node.create_subscription(Clock, '/clock', self.clocks.append, 100)
        self.node.create_subscription(PointStamped, topics['puck_pose'], self.pucks.append, 100)
        self.node.create_subscription(PointStamped, topics['target_pose'], self.targets.append,
                                      LATCHED_QOS)
        self.commands = self.node.create_publisher(
            Float64MultiArray, f'/{PARAMS["controller_name"]}/commands', 10)
        self.reset = self.node.create_client(Trigger, '/twin/reset')
        self.new_target = self.node.create_client(Trigger, '/twin/new_target')

    def spin_until(self, predicate, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            self.executor.spin_once(timeout_sec=0.02)
        raise AssertionError(f'timed out after {timeout} s waiting for {what}')

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def send(self, values):
        self.commands.publish(Float64MultiArray(data=[float(v) for v in values]))

    def step(self, values):
        """Lockstep: send one command and wait for the (newer) state it produces."""
        last = _stamp(self.states[-1])
        self.send(values)
        self.spin_until(lambda: _stamp(self.states[-1]) > last, 5.0, 'the next joint state')
        assert _stamp(self.states[-1]) == pytest.approx(last + DT, abs=1e-6)
        return self.states[-1]

    def call(self, client):
        return call_trigger(self.executor, client)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def twin(tmp_path, monkeypatch):
    """Start ``python -m mbrl_robot.nodes.twin`` in a fresh DDS domain; yields a starter."""
    monkeypatch.setenv('ROS_DOMAIN_ID', str(random.SystemRandom().randint(100, 200)))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    procs, graphs = [], []
    log_path = tmp_path / 'twin.log'
    log = open(log_path, 'w')

    def start(*overrides):
        cmd = [sys.executable, '-m', 'mbrl_robot.nodes.twin', '--ros-args', '--params-file',
               os.path.join(ROOT, 'config', 'lecture.yaml')]
        for o in overrides:
            cmd += ['-p', f'twin:{o}']
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        graph = Graph()
        graphs.append(graph)
        graph.spin_until(lambda: graph.states and graph.targets, 20.0, 'the twin to come up')
        return graph

    start.log_path = log_path
    start.procs = procs
    yield start
    for graph in graphs:
        graph.close()
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    assert all(p.returncode == 0 for p in procs), log_path.read_text()[-3000:]


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_lockstep_guards_limits_and_services(twin):
    g = twin('mode:=lockstep')
    first = g.states[-1]
    assert list(first.name) == JOINTS and len(first.position) == 7
    assert np.allclose(first.velocity, 0.0, atol=1e-3)
    target0 = g.targets[-1]
    assert target0.header.frame_id == 'world'
    g.spin_until(lambda: len(g.states) >= 2, 3.0, 'the idle repeat of the state')
    # Lockstep: nothing moves without a command; the repeat (for late joiners) is the same state.
    assert _stamp(g.states[-1]) == _stamp(first)
    assert list(g.states[-1].position) == list(first.position)

    t0 = _stamp(first)
    state = g.step(COMMAND)
    np.testing.assert_allclose(state.velocity, COMMAND, atol=0.02)
    assert _stamp(state) == pytest.approx(t0 + DT, abs=1e-6)
    g.spin_until(lambda: g.clocks and abs(
        g.clocks[-1].clock.sec + g.clocks[-1].clock.nanosec * 1e-9 - _stamp(state)) < 1e-9,
        2.0, 'the clock of the step')
    for _ in range(3):
        state = g.step(COMMAND)
    np.testing.assert_allclose(np.subtract(state.position, first.position), COMMAND * 4 * DT,
                               atol=0.01)

    for bad in ([0.1] * 6, [0.1, float('nan'), 0, 0, 0, 0, 0], [float('inf')] + [0.0] * 6):
        g.step(COMMAND)
        state = g.step(bad)
        assert np.abs(state.velocity).max() < 0.02, (bad, state.velocity)

    state = g.step([-10.0, 0, 0, 0, 0, 0, 10.0])  # clamped to 98 and 180 deg/s
    np.testing.assert_allclose([state.velocity[0], state.velocity[6]],
                               np.radians([-98.0, 180.0]), rtol=0.02)

    reply = g.call(g.reset)
    assert reply.success
    info = json.loads(reply.message)
    assert info['episode'] == 1 and info['seed'] == 1
    g.spin_until(lambda: np.allclose([g.targets[-1].point.x, g.targets[-1].point.y,
                                      g.targets[-1].point.z], info['target']),
                 5.0, 'the new target')
    g.spin_until(lambda: np.allclose(g.states[-1].position, first.position, atol=1e-6),
                 5.0, 'the ready pose after the reset')
    assert np.allclose([g.pucks[-1].point.x, g.pucks[-1].point.y], info['puck'][:2], atol=1e-5)
    assert _stamp(g.states[-1]) == pytest.approx(_stamp(state) + DT)  # a reset takes a tick

    reply = g.call(g.new_target)
    assert reply.success
    moved = json.loads(reply.message)
    assert moved['puck'] == info['puck'] and moved['target'] != info['target']
    log = twin.log_path.read_text()
    assert 'rejected command' in log and 'reset: episode 0 ended' in log


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_realtime_clock_rate_command_and_timeout(twin):
    g = twin('mode:=realtime', 'command_timeout_s:=0.25')
    g.clocks.clear()
    wall0 = time.monotonic()
    proc = twin.procs[-1]
    for _ in range(5):  # short stalls, as on a loaded machine: its timer fires late
        g.spin_for(0.25)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.03)
        proc.send_signal(signal.SIGCONT)
    g.spin_for(0.25)
    wall = time.monotonic() - wall0
    sim = [c.clock.sec + c.clock.nanosec * 1e-9 for c in g.clocks]
    assert len(sim) >= 10
    span = sim[-1] - sim[0]
    # 20 clock messages per second of sim time, each exactly one control period apart, however
    # late the twin's timer fires.
    assert (len(sim) - 1) / span == pytest.approx(20.0, rel=1e-6)
    np.testing.assert_allclose(np.diff(sim), DT, atol=1e-6)
    assert 0.5 * wall < span <= 1.1 * wall  # sim time follows the wall clock
    assert np.allclose(g.states[-1].velocity, 0.0, atol=1e-3)  # no command yet: still

    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # a 20 Hz command stream
        g.send(COMMAND)
        g.spin_for(0.05)
    np.testing.assert_allclose(g.states[-1].velocity, COMMAND, atol=0.02)

    g.send([0.1] * 5)  # wrong length: rejected, zero velocity held
    g.spin_for(0.15)
    assert np.abs(g.states[-1].velocity).max() < 0.02

    g.send(COMMAND)  # one more command, then silence: stops within the timeout
    g.spin_for(0.12)
    assert np.abs(g.states[-1].velocity).max() > 0.05
    g.spin_for(0.6)
    assert np.abs(g.states[-1].velocity).max() < 0.02
    assert 'no command for 0.25 s' in twin.log_path.read_text()


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_realtime_wall_stamps_stay_on_the_wall_clock_after_a_starved_loop(twin):
    """A starved twin skips the lost time; its wall-clock stamps must not fall behind the wall
    clock by it (they did: a run's states aged by every skip until all were stale)."""
    g = twin('mode:=realtime', 'clock:=wall')

    def age():  # of the newest joint state, against the system clock
        g.states.clear()
        g.spin_until(lambda: len(g.states) >= 5, 5.0, 'joint states')
        return time.time() - _stamp(g.states[-1])

    assert abs(age()) < 0.1
    proc = twin.procs[-1]
    for _ in range(3):  # three starved stretches: 1.2 s skipped in all
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.4)
        proc.send_signal(signal.SIGCONT)
        g.spin_for(0.3)
    assert abs(age()) < 0.1
    assert 'late: skipped' in twin.log_path.read_text()  # the loop was starved


DRIVER = '''
import sys
import rclpy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
rclpy.init()
node = rclpy.create_node('stand_in_controller')
pub = node.create_publisher(Float64MultiArray, sys.argv[1], 10)
cmd = [float(v) for v in sys.argv[2:]]
node.create_subscription(JointState, 'joint_states',
                         lambda m: pub.publish(Float64MultiArray(data=cmd)), 10)
rclpy.spin(node)
'''


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_lockstep_stops_the_arm_of_a_killed_controller_and_counts_huge_commands(twin):
    """A controller process driving the lockstep twin is killed -9 mid-motion: the twin stops the
    arm (zero velocity in the published state, new stamps) after lockstep_stop_after_s."""
    g = twin('mode:=lockstep', 'lockstep_stop_after_s:=0.5')
    state = g.step([1e9, 0, 0, 0, 0, 0, 0])  # clamped to the URDF limit, counted and logged
    assert state.velocity[0] == pytest.approx(np.radians(98.0), rel=0.02)
    g.step([0.0] * 7)
    driver = subprocess.Popen([sys.executable, '-c', DRIVER,
                               f'/{PARAMS["controller_name"]}/commands']
                              + [str(v) for v in COMMAND])
    try:
        g.spin_until(lambda: _stamp(g.states[-1]) > _stamp(state) + 10 * DT, 20.0,
                     'the stand-in controller to drive the arm')
        assert np.abs(g.states[-1].velocity).max() > 0.05
        driver.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        driver.wait(timeout=10)
        g.spin_until(lambda: np.abs(g.states[-1].velocity).max() < 1e-3, 10.0, 'a still arm')
        time_to_zero = time.monotonic() - t_kill
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    print(f'time to zero velocity after kill -9 of the controller (lockstep, stop after 0.5 s): '
          f'{time_to_zero:.2f} s')
    assert 0.4 < time_to_zero < 5.0  # stop after 0.5 s, a few more on a loaded machine
    stopped = g.states[-1]
    g.spin_for(1.2)  # stays still; the idle repeats carry the stopped state
    assert _stamp(g.states[-1]) == _stamp(stopped)
    assert np.abs(g.states[-1].velocity).max() < 1e-3
    log = twin.log_path.read_text()
    assert 'beyond its limit' in log and '1 commands clamped' in log
    assert 'stepping it with zero velocity until still' in log
