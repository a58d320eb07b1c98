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
"""GuardedNode: a message or a request whose callback raises is dropped in one line and counted;
the node goes on (every node of the graph is one)."""

import errno
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mbrl_robot.nodes.spin import CANNOT_START_STATUS, GuardedNode, run_node  # noqa: E402

pytestmark = pytest.mark.ros


class Fragile(GuardedNode):
    def __init__(self, context):
        super().__init__('fragile', context=context)
        self.taken, self.faults_seen, self.lines = [], [], []
        self.create_subscription(Float64, 'value', self.value_callback, 10)
        self.create_subscription(Float64, 'value_info', self.value_with_info, 10)
        self.create_service(Trigger, 'poke', self.poke_callback)
        self.get_logger().error = self.lines.append  # what it says, for the test

    def value_callback(self, msg):
        self.taken.append(int(msg.data))  # int(inf): OverflowError, int(nan): ValueError

    def value_with_info(self, msg, info):  # rclpy passes MessageInfo to a two-argument one
        self.taken.append(('info', int(msg.data), 'source_timestamp' in info))

    def poke_callback(self, request, response):
        raise RuntimeError('poked')

    def on_callback_fault(self, where, error):
        self.faults_seen.append((where, type(error).__name__))


@pytest.fixture
def on_a_graph(ros_env):
    """``make(cls) -> (node, peer, executor)``: the node and a peer node on one executor."""
    context = rclpy.Context()
    rclpy.init(context=context)

    def make(cls):
        node, peer = cls(context), rclpy.create_node('peer', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(peer)
        return node, peer, executor
    yield make
    rclpy.try_shutdown(context=context)


def test_a_raising_callback_drops_the_message_and_the_node_goes_on(on_a_graph):
    node, peer, executor = on_a_graph(Fragile)
    pub = peer.create_publisher(Float64, 'value', 10)
    pub_info = peer.create_publisher(Float64, 'value_info', 10)
    client = peer.create_client(Trigger, 'poke')

    def spin_until(done, seconds=10.0):
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        return done()

    assert spin_until(lambda: pub.get_subscription_count() and client.service_is_ready())
    for value in (1.0, float('inf'), float('nan'), float('inf'), 2.0):
        pub.publish(Float64(data=value))
    pub_info.publish(Float64(data=3.0))
    assert spin_until(lambda: len(node.taken) == 3), node.taken
    # The good ones, in order (the two topics interleave as they come).
    assert [t for t in node.taken if not isinstance(t, tuple)] == [1, 2]
    assert ('info', 3, True) in node.taken
    where = 'a message on /value'
    assert node.callback_faults == {where: 3}
    assert node.faults_seen == [(where, 'OverflowError'), (where, 'ValueError'),
                                (where, 'OverflowError')]
    # One line for the first fault, with where it was raised; the next two fall within
    # FAULT_LOG_PERIOD_S.
    assert len(node.lines) == 1, node.lines
    assert node.lines[0].startswith(f'dropped {where}: OverflowError: cannot convert float '
                                    'infinity to integer at test_guard.py:')
    assert node.lines[0].endswith(' (1 so far)')
    future = client.call_async(Trigger.Request())
    assert spin_until(future.done)
    assert not future.result().success and future.result().message == 'RuntimeError: poked'
    assert node.callback_faults['a /poke request'] == 1


class Broken(Fragile):
    FAULT_LIMIT = 3


def test_a_fault_on_every_message_ends_the_node(on_a_graph):
    """A fault the node's own (it repeats on every message) must not leave it running broken:
    the FAULT_LIMIT-th in a row on one topic is raised, as without the guard; a message taken
    in between starts the count again."""
    node, peer, executor = on_a_graph(Broken)
    pub = peer.create_publisher(Float64, 'value', 10)
    end = time.monotonic() + 10
    while not pub.get_subscription_count() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)

    def feed(value, seconds=2.0):
        pub.publish(Float64(data=value))
        end, before = time.monotonic() + seconds, sum(node.callback_faults.values())
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            if sum(node.callback_faults.values()) > before or value in node.taken:
                return

    for value in (float('inf'), float('inf'), 5.0, float('inf'), float('inf')):
        feed(value)
    assert node.taken == [5] and node.callback_faults == {'a message on /value': 4}
    pub.publish(Float64(data=float('inf')))
    with pytest.raises(OverflowError):
        end = time.monotonic() + 5
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    assert node.lines[-1].endswith('(5 so far, 3 in a row: ending the node)'), node.lines


def test_only_input_it_cannot_start_with_is_a_cannot_start(ros_env, capfd):
    """run_node: a missing file is the input's (exit 2, one line, no restart by mbrl_run); too
    many open files is the moment's (raised as any error, so the node is restarted)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def fails_with(error):
        def make():
            raise error
        return make
    try:
        with pytest.raises(SystemExit) as stop:
            run_node(fails_with(OSError(errno.ENOENT, 'No such file or directory', 'x.urdf')))
        assert stop.value.code == CANNOT_START_STATUS
        assert capfd.readouterr().err.strip().endswith(
            "cannot start: [Errno 2] No such file or directory: 'x.urdf'")
        with pytest.raises(OSError, match='Too many open files'):
            run_node(fails_with(OSError(errno.EMFILE, 'Too many open files')))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


# A node whose callback (a message's, or a timer's) takes a long time, as a lockstep controller's
# does while it waits for a lecture-size plan; it says when the callback began and when the node
# was destroyed.
SLOW_NODE = '''
import sys, time
from std_msgs.msg import Empty
from mbrl_robot.nodes.spin import GuardedNode, run_node
where, events = sys.argv[1], sys.argv[2] == 'events'

class Slow(GuardedNode):
    def __init__(self):
        super().__init__('slow')
        self.pub = self.create_publisher(Empty, 'poke', 10)
        self.create_subscription(Empty, 'poke', lambda msg: self.slow(), 10)
        self.timer = self.create_timer(0.2, self.on_timer)

    def on_timer(self):
        if where == 'timer':
            self.slow()
        elif self.pub.get_subscription_count():
            self.pub.publish(Empty())

    def slow(self):
        print('in the callback', flush=True)
        time.sleep(60)

    def destroy_node(self):
        print('destroyed', flush=True)
        return super().destroy_node()

run_node(Slow, events=events)
'''


@pytest.mark.parametrize('where', ['subscription', 'timer'])
@pytest.mark.parametrize('executor', ['events', 'python'])
def test_a_ctrl_c_inside_a_long_callback_stops_the_node_without_a_traceback(
        ros_env, where, executor):
    """SIGTERM (mbrl_run's stop, taken as Ctrl-C) while a callback runs for seconds ends the
    callback and the node at once, through destroy_node (where the controller sends its zero
    velocity), exit status 0; not logged by rclpy's executor as a fatal callback error with a
    traceback."""
    proc = subprocess.Popen([sys.executable, '-c', SLOW_NODE, where, executor], env=ros_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == 'in the callback'
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert out.strip() == 'destroyed', out
