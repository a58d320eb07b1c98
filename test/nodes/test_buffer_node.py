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
"""Buffer node over real DDS (the node in its own process) and the shared message conversions."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mbrl_robot.config import node_params  # noqa: E402
from mbrl_robot.core.buffer import task_reward  # noqa: E402
from mbrl_robot.core.tasks.push import PushTask  # noqa: E402
from mbrl_robot.core.types import TransitionBatch  # noqa: E402
from mbrl_robot.nodes.transport import (EXECUTED_FIELDS, EXECUTED_LABELS, EXECUTED_QOS,  # noqa
                                        executed_row, LATCHED_QOS, multiarray_to_rows,
                                        parse_executed_row, parse_transition_rows,
                                        RELIABLE_QOS, RESENT_LABELS, rows_to_multiarray,
                                        TRANSITION_FIELDS, transition_rows, TRANSITIONS_QOS)
from ros_calls import call_trigger  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SPEED = node_params('lecture', 'buffer')['task']['max_joint_speed_rad_s']


# -- transport (no DDS) ---------------------------------------------------------------------


def shut_down(procs, graph, log):
    """SIGINT every buffer process still running, wait for them, close the test graph and log."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        proc.wait(timeout=10)
    graph.close()
    log.close()


def test_multiarray_round_trip_and_layout_checks():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 49))
    msg = rows_to_multiarray(rows)
    assert [(d.label, d.size, d.stride) for d in msg.layout.dim] == \
        [('transitions', 5, 245), ('fields', 49, 49)]
    np.testing.assert_array_equal(multiarray_to_rows(msg, fields=49,
                                                     labels=('transitions', 'fields')), rows)
    assert multiarray_to_rows(rows_to_multiarray(np.zeros((0, 49)))).shape == (0, 49)
    flat = Float64MultiArray(data=[1.0, 2.0, 3.0])  # a plain message is one row
    np.testing.assert_array_equal(multiarray_to_rows(flat), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match='fields'):
        multiarray_to_rows(msg, fields=30)
    with pytest.raises(ValueError, match='labels'):
        multiarray_to_rows(msg, labels=('rows', 'fields'))
    bad = rows_to_multiarray(rows)
    bad.layout.dim[0].size = 4
    with pytest.raises(ValueError, match='does not match'):
        multiarray_to_rows(bad)
    bad = rows_to_multiarray(rows)
    bad.layout.dim[1].stride = 1
    with pytest.raises(ValueError, match='strides'):
        multiarray_to_rows(bad)
    # No data, 2^32 - 1 rows of no field: the sizes multiply to 0, and each "row" would be
    # checked one by one (hours).
    empty = Float64MultiArray()
    empty.layout.dim = [MultiArrayDimension(label='rows', size=2 ** 32 - 1, stride=0),
                        MultiArrayDimension(label='fields', size=0, stride=0)]
    with pytest.raises(ValueError, match='does not match'):
        multiarray_to_rows(empty)
    bad = rows_to_multiarray(rows)
    bad.layout.data_offset = 2
    with pytest.raises(ValueError, match='offset'):
        multiarray_to_rows(bad)
    bad = rows_to_multiarray(rows)
    bad.layout.dim.append(MultiArrayDimension(label='x', size=1, stride=1))
    with pytest.raises(ValueError, match='2-D'):
        multiarray_to_rows(bad)
    with pytest.raises(ValueError):
        rows_to_multiarray(np.zeros(3))


def test_executed_and_transition_rows_round_trip():
    rng = np.random.default_rng(1)
    s, a, target = rng.normal(size=17), rng.uniform(-1, 1, 7), rng.normal(size=3)
    row = executed_row(4, 12, 0.6, s, a, target)
    assert row.shape == (EXECUTED_FIELDS,) == (30,)
    parsed = parse_executed_row(row)
    assert (parsed.episode, parsed.step, parsed.stamp, parsed.terminal) == (4, 12, 0.6, False)
    np.testing.assert_array_equal(parsed.s, s)
    np.testing.assert_array_equal(parsed.a, a)
    np.testing.assert_array_equal(parsed.target, target)
    assert parse_executed_row(executed_row(4, 13, 0.65, s, None, target)).terminal
    with pytest.raises(ValueError, match='s must have shape'):
        executed_row(0, 0, 0.0, s[:16], a, target)
    with pytest.raises(ValueError):
        executed_row(-1, 0, 0.0, s, a, target)
    with pytest.raises(ValueError):
        parse_executed_row(row[:29])

    n = 6
    batch = TransitionBatch(obs=rng.normal(size=(n, 17)), act=rng.uniform(-1, 1, (n, 7)),
                            next_obs=rng.normal(size=(n, 17)), reward=rng.normal(size=n),
                            done=np.arange(n) == n - 1)
    targets = rng.normal(size=(n, 3))
    rows = transition_rows(np.arange(10, 16), np.full(n, 2), np.arange(n), batch, targets,
                           np.arange(n) % 2)
    assert rows.shape == (n, TRANSITION_FIELDS) == (n, 50)
    parsed = parse_transition_rows(rows, dtype=np.float64)
    seqs, episodes, steps, back, back_targets, arms = parsed
    np.testing.assert_array_equal(back_targets, targets)
    np.testing.assert_array_equal(arms, np.arange(n) % 2)
    np.testing.assert_array_equal(seqs, np.arange(10, 16))
    np.testing.assert_array_equal(episodes, np.full(n, 2))
    np.testing.assert_array_equal(steps, np.arange(n))
    for name in ('obs', 'act', 'next_obs', 'reward', 'done'):
        np.testing.assert_array_equal(getattr(back, name), getattr(batch, name))
    assert parse_transition_rows(rows)[3].obs.dtype == np.float32
    with pytest.raises(ValueError):
        parse_transition_rows(rows[:, :49])
    one_arm = transition_rows(np.arange(n), np.zeros(n), np.zeros(n), batch, targets)
    assert (one_arm[:, -1] == 0).all()
    rows[1, 49] = 0.5
    with pytest.raises(ValueError, match='arm must be integers'):
        parse_transition_rows(rows)
    rows[1, 49] = 1.0
    rows[0, 45] = 0.5
    with pytest.raises(ValueError, match='done'):
        parse_transition_rows(rows)
    rows[0, 45] = 0.0
    for column, value, says in ((0, 1e300, 'seq must be within'), (1, 2.0 ** 40, 'within'),
                                (4, np.nan, 'NaN or inf'), (20, np.inf, 'NaN or inf')):
        bad = rows.copy()
        bad[2, column] = value  # one bad row fails the batch: the trainer holds none of it
        with pytest.raises(ValueError, match=says):
            parse_transition_rows(bad)
    for column, value in ((0, np.inf), (0, 1e19), (1, -1.0), (1, 2.5)):
        bad = executed_row(4, 12, 0.6, s, a, target)
        bad[column] = value
        with pytest.raises(ValueError, match='must be an integer within'):
            parse_executed_row(bad)
    with pytest.raises(ValueError, match='seqs'):
        transition_rows(np.arange(3), np.zeros(n), np.zeros(n), batch, targets)
    with pytest.raises(ValueError, match='targets'):
        transition_rows(np.arange(n), np.zeros(n), np.zeros(n), batch, targets[:2])


def test_qos_profiles():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    assert EXECUTED_QOS.depth == 1000 and TRANSITIONS_QOS.depth == 100 and LATCHED_QOS.depth == 1
    for qos in (EXECUTED_QOS, TRANSITIONS_QOS, LATCHED_QOS, RELIABLE_QOS):
        assert qos.reliability == ReliabilityPolicy.RELIABLE
    assert LATCHED_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert TRANSITIONS_QOS.durability == DurabilityPolicy.VOLATILE


# -- the node over DDS ----------------------------------------------------------------------

class Graph:
    """Test-side rclpy node in its own context and DDS domain."""

    def __init__(self, domain_id):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('buffer_test', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received = []
        self.executed = self.node.create_publisher(Float64MultiArray, '/controller/executed',
                                                   EXECUTED_QOS)
        self.resend = self.node.create_publisher(UInt64, '/buffer/resend_from', RELIABLE_QOS)
        self.sub = self.node.create_subscription(
            Float64MultiArray, '/buffer/transitions',
            lambda m: self.received.append(multiarray_to_rows(m, fields=50)), TRANSITIONS_QOS)
        self.acks = []
        self.ack_sub = self.node.create_subscription(
            Float64MultiArray, '/buffer/executed_ack',
            lambda m: self.acks.append(tuple(m.data)), LATCHED_QOS)
        self.stats_client = self.node.create_client(Trigger, '/buffer/stats')
        self.export_client = self.node.create_client(Trigger, '/buffer/export')

    def spin_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.05)

    def endpoints(self):
        """GIDs of the buffer's endpoints we talk to."""
        subs = self.node.get_subscriptions_info_by_topic('/controller/executed')
        pubs = self.node.get_publishers_info_by_topic('/buffer/transitions')
        return ({bytes(e.endpoint_gid) for e in subs if e.node_name == 'buffer'},
                {bytes(e.endpoint_gid) for e in pubs if e.node_name == 'buffer'})

    def wait_for_new_buffer(self, old=(set(), set()), timeout=20.0):
        def ready():
            subs, pubs = self.endpoints()
            return bool(subs - old[0]) and bool(pubs - old[1])
        self.spin_until(ready, timeout, 'the buffer node to join the graph')
        assert self.stats_client.wait_for_service(timeout_sec=10.0)
        t_end = time.monotonic() + 0.3  # let the buffer side finish matching us too
        while time.monotonic() < t_end:
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, client, timeout=30.0, attempts=1):
        return call_trigger(self.executor, client, timeout, attempts)

    def stats(self):
        response = self.call(self.stats_client, attempts=3)
        assert response.success
        return json.loads(response.message)

    def publish_rows(self, rows):
        for row in rows:
            self.executed.publish(rows_to_multiarray(np.asarray(row)[None], EXECUTED_LABELS))

    def rows(self):
        return np.concatenate(self.received) if self.received else np.zeros((0, 50))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def episode(rng, ep, steps, t0):
    target = rng.uniform(-0.5, 0.5, 3)
    return [executed_row(ep, k, t0 + 0.05 * k, rng.normal(size=17),
                         None if k == steps else rng.uniform(-1, 1, 7), target)
            for k in range(steps + 1)]


def start_buffer(data_dir, env, log):
    return subprocess.Popen(
        [sys.executable, '-m', 'mbrl_robot.nodes.buffer', '--ros-args', '-p',
         f'data_dir:={data_dir}', '-p', 'publish_batch_size:=3'],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def expected_transitions(rows):
    """(episode, step, s, a, r, s', done) for consecutive row pairs of one episode."""
    # The reward of the configured task (the node runs with the lecture profile's defaults).
    reward = task_reward(PushTask.from_config(node_params('lecture', 'buffer')['task'],
                                              dtype=torch.float64))
    out = []
    for r0, r1 in zip(rows[:-1], rows[1:]):
        r = float(reward(r1[None, 3:20], r0[None, 20:27], r0[None, 27:30])[0])
        out.append((r0[0], r0[1], r0[3:20], r0[20:27], r, r1[3:20], np.isnan(r1[20]),
                    r0[27:30]))
    return out


def check_rows(rows, expected, first_seq):
    np.testing.assert_array_equal(rows[:, 0], np.arange(first_seq, first_seq + len(expected)))
    for row, (ep, step, s, a, r, s_next, done, target) in zip(rows, expected):
        assert (row[1], row[2]) == (ep, step)
        np.testing.assert_array_equal(row[3:20], s)
        np.testing.assert_array_equal(row[20:27], a)
        assert row[27] == pytest.approx(r, abs=1e-12)
        np.testing.assert_array_equal(row[28:45], s_next)  # exact: float64 end to end
        assert row[45] == float(done)
        np.testing.assert_array_equal(row[46:49], target)
        assert row[49] == 0.0  # the one arm


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_buffer_node_stores_publishes_survives_restart_and_exports(tmp_path, monkeypatch):
    domain_id = 100 + os.getpid() % 100
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    data_dir = str(tmp_path / 'buffer')
    rng = np.random.default_rng(0)
    ep0, ep1, ep2 = episode(rng, 0, 4, 0.0), episode(rng, 1, 3, 1.0), episode(rng, 2, 4, 2.0)
    nan_row = ep1[1].copy()
    nan_row[5] = np.nan
    log = open(tmp_path / 'buffer.log', 'w')
    graph = Graph(domain_id)
    procs = []
    try:
        procs.append(start_buffer(data_dir, env, log))
        graph.wait_for_new_buffer()
        # Two episodes with a NaN-state row, a short row and a broken layout in the middle.
        graph.publish_rows(ep0 + [nan_row, ep1[0][:29]] + ep1[:2])
        broken = rows_to_multiarray(ep1[2][None], EXECUTED_LABELS)
        broken.layout.dim[0].size = 2
        graph.executed.publish(broken)
        graph.publish_rows(ep1[2:])
        expected = expected_transitions(ep0) + expected_transitions(ep1)
        graph.spin_until(lambda: len(graph.rows()) >= 7, 10.0, '7 transitions')
        # ep1's rows 1 -> 2: the broken message was ep1[2] in a bad layout, then ep1[2] itself.
        check_rows(graph.rows(), expected, 1)
        stats = graph.stats()
        assert stats['transitions'] == 7 and stats['episodes'] == 2
        assert stats['episodes_done'] == 2 and stats['last_seq'] == 7
        assert stats['assembler']['rejected'] == 2 and stats['rejected_messages'] == 1
        assert stats['assembler']['dropped_gaps'] == stats['assembler']['dropped_breaks'] == 0
        assert stats['mean_reward'] == pytest.approx(np.mean([e[4] for e in expected]))

        # Half of episode 2, then the buffer is killed and restarted on the same data_dir.
        graph.publish_rows(ep2[:3])
        graph.spin_until(lambda: len(graph.rows()) >= 9, 10.0, '9 transitions')
        old = graph.endpoints()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        procs.append(start_buffer(data_dir, env, log))
        graph.wait_for_new_buffer(old)
        stats = graph.stats()
        assert stats['pid'] == procs[1].pid and stats['transitions'] == 9
        assert stats['pending_row'] is True
        # The pending row (ep2 step 2) was persisted: the restart loses no pair.
        graph.publish_rows(ep2[3:])
        graph.spin_until(lambda: len(graph.rows()) >= 11, 10.0, '11 transitions')
        expected += expected_transitions(ep2)
        live = graph.rows()
        assert len(live) == 11
        check_rows(live, expected, 1)

        # A trainer that lost everything asks for seq >= 1 and gets it all back, in order.
        graph.received.clear()
        graph.resend.publish(UInt64(data=1))
        graph.spin_until(lambda: len(graph.rows()) >= 11, 10.0, 'the replay')
        assert max(len(r) for r in graph.received) == 3  # publish_batch_size
        np.testing.assert_array_equal(graph.rows(), live)
        graph.received.clear()
        graph.resend.publish(UInt64(data=10))
        graph.spin_until(lambda: len(graph.rows()) >= 2, 10.0, 'the partial replay')
        np.testing.assert_array_equal(graph.rows(), live[9:])

        response = graph.call(graph.export_client, timeout=20.0)
        assert response.success, response.message
        check_bag(response.message, live)
    finally:
        shut_down(procs, graph, log)
    assert procs[-1].returncode == 0, (tmp_path / 'buffer.log').read_text()
    # A clean shutdown checkpoints the WAL into the database.
    wal = os.path.join(data_dir, 'transitions.sqlite3-wal')
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0


def check_bag(path, live):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_KILTED)
    n = len(live)
    assert os.path.isabs(path) and os.path.isdir(path)
    assert any(name.endswith('.mcap') for name in os.listdir(path))
    with open(os.path.join(path, 'metadata.yaml')) as f:
        assert 'storage_identifier: mcap' in f.read()
    msgs = {}
    with Reader(path) as reader:
        assert reader.message_count == 3 * n + 2 * (n + 3)
        for conn, stamp, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append(
                (stamp, conn.msgtype, store.deserialize_cdr(raw, conn.msgtype)))
    # s of every transition, plus the final s' of each of the 3 episodes.
    assert len(msgs['/joint_states']) == n + 3 and len(msgs['/puck/pose']) == n + 3
    assert len(msgs['/velocity_controller/commands']) == n == len(msgs['/reward'])
    assert msgs['/target/pose'][0][1] == 'geometry_msgs/msg/PointStamped'
    by_time = sorted(msgs['/joint_states'], key=lambda m: m[0])
    first = by_time[0][2]
    assert first.name[0] == 'iiwa_joint_1' and len(first.name) == 7
    np.testing.assert_array_equal(first.position, live[0, 3:10])
    np.testing.assert_array_equal(first.velocity, live[0, 10:17])
    assert by_time[0][0] == 0 and first.header.stamp.sec == 0
    cmds = [m[2].data for m in sorted(msgs['/velocity_controller/commands'], key=lambda m: m[0])]
    np.testing.assert_allclose(np.stack(cmds), live[:, 20:27] * MAX_SPEED, rtol=0, atol=1e-15)
    rewards = [m[2].data for m in sorted(msgs['/reward'], key=lambda m: m[0])]
    np.testing.assert_array_equal(rewards, live[:, 27])
    puck = sorted(msgs['/puck/pose'], key=lambda m: m[0])[-1][2]
    assert puck.header.frame_id == 'world'
    np.testing.assert_array_equal([puck.point.x, puck.point.y, puck.point.z], live[-1, 42:45])


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_buffer_acknowledges_and_stores_resent_rows_once_across_a_kill(tmp_path, monkeypatch):
    """Rows published while the buffer is dead are lost in transit; the restarted buffer
    acknowledges its last row (transient local), holds back the live row after the hole and
    stores the producer's resend once, dropping what it already has."""
    domain_id = 100 + (os.getpid() + 37) % 100
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    data_dir = str(tmp_path / 'buffer')
    rows = episode(np.random.default_rng(3), 0, 6, 1.0)
    log = open(tmp_path / 'buffer.log', 'w')
    graph = Graph(domain_id)
    procs = [start_buffer(data_dir, env, log)]
    try:
        graph.wait_for_new_buffer()
        graph.publish_rows(rows[:4])
        graph.spin_until(lambda: graph.acks and graph.acks[-1][:2] == (0, 3), 10.0, 'ack (0, 3)')
        assert graph.acks[-1][2] == rows[3][2]
        old = graph.endpoints()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        graph.publish_rows(rows[4:6])  # nobody stores these
        graph.acks.clear()
        procs.append(start_buffer(data_dir, env, log))
        graph.wait_for_new_buffer(old)
        graph.spin_until(lambda: graph.acks, 10.0, "the restarted buffer's ack")
        assert graph.acks[-1][:2] == (0, 3)
        graph.publish_rows(rows[6:])  # live, after the hole: held back, not acknowledged
        graph.executed.publish(rows_to_multiarray(np.stack(rows[2:]), RESENT_LABELS))
        graph.spin_until(lambda: graph.acks[-1][:2] == (0, 6), 30.0, 'ack (0, 6)')
        stats = graph.stats()
        assert stats['transitions'] == 6 and stats['episodes_done'] == 1
        assert stats['gate'] == {'duplicates': 2, 'held_back': 1}
        assert stats['assembler']['dropped_gaps'] == stats['assembler']['dropped_breaks'] == 0
        # What the store holds, replayed as the trainer would ask for it (the live batches of the
        # restarted buffer may go out before this test has discovered its new publisher).
        graph.received.clear()
        graph.resend.publish(UInt64(data=1))
        graph.spin_until(lambda: len(graph.rows()) >= 6, 30.0, '6 transitions')
        check_rows(graph.rows(), expected_transitions(rows), 1)
    finally:
        shut_down(procs, graph, log)
