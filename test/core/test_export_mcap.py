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
"""The buffer's rosbag2 export (written with ``rosbags``) opens with the independent ``mcap``
reader, and ``mcap-ros2-support`` decodes every message to the stored values."""

import glob
import os

import numpy as np
import pytest

from mbrl_robot.core.buffer import TransitionStore
from mbrl_robot.core.buffer.export import export_mcap

from test_buffer import make_transitions  # noqa: I100

pytest.importorskip('mcap_ros2')

JOINTS = [f'iiwa_joint_{i}' for i in range(1, 8)]


def test_export_decodes_with_mcap_ros2(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    rng = np.random.default_rng(3)
    trs = make_transitions(rng, 5, episode=0) + make_transitions(rng, 4, episode=1)
    with TransitionStore(str(tmp_path / 'store')) as store:
        store.append(trs)
        rec = store.records(dtype=np.float64)
    bag = str(tmp_path / 'bag')
    n = export_mcap(rec, bag, JOINTS, 'velocity_controller', 0.25)
    files = glob.glob(os.path.join(bag, '*.mcap'))
    assert len(files) == 1
    by_topic = {}
    with open(files[0], 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(
                log_time_order=False):
            assert channel.message_encoding == 'cdr' and schema.encoding == 'ros2msg'
            by_topic.setdefault(channel.topic, []).append((schema.name, message, decoded))
    assert sum(len(v) for v in by_topic.values()) == n
    assert {t: v[0][0] for t, v in by_topic.items()} == {
        '/joint_states': 'sensor_msgs/msg/JointState',
        '/puck/pose': 'geometry_msgs/msg/PointStamped',
        '/target/pose': 'geometry_msgs/msg/PointStamped',
        '/velocity_controller/commands': 'std_msgs/msg/Float64MultiArray',
        '/reward': 'std_msgs/msg/Float64'}
    # One state per transition plus the last state of each of the 2 episodes.
    states = by_topic['/joint_states']
    assert len(states) == len(rec) + 2
    first = states[0][2]
    assert list(first.name) == JOINTS
    np.testing.assert_allclose(first.position, rec.batch.obs[0, :7])
    np.testing.assert_allclose(first.velocity, rec.batch.obs[0, 7:14])
    assert states[0][1].log_time == int(round(rec.stamp[0] * 1e9))
    puck = by_topic['/puck/pose'][0][2]
    assert puck.header.frame_id == 'world'
    np.testing.assert_allclose([puck.point.x, puck.point.y, puck.point.z], rec.batch.obs[0, 14:17])
    commands = np.array([d.data for _, _, d in by_topic['/velocity_controller/commands']])
    np.testing.assert_allclose(commands, rec.batch.act * 0.25)
    rewards = [d.data for _, _, d in by_topic['/reward']]
    np.testing.assert_allclose(rewards, rec.batch.reward)


def test_two_arms_export_to_their_own_topics_and_trajectories(tmp_path):
    """Interleaved transitions of two arms with the same episode number: each arm's messages on
    its namespace's topics, each arm's trajectory whole (its last state once, at its end)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    rng = np.random.default_rng(4)
    a0, a1 = make_transitions(rng, 4, episode=0), make_transitions(rng, 4, episode=0)
    with TransitionStore(str(tmp_path / 'store')) as store:
        for t0, t1 in zip(a0, a1):  # one commit per arm per tick, as the buffer does
            store.append([t0], arm=0)
            store.append([t1], arm=1)
        rec = store.records(dtype=np.float64)
    bag = str(tmp_path / 'bag')
    with pytest.raises(ValueError, match='only 1 arm namespaces'):
        export_mcap(rec, bag, JOINTS, 'velocity_controller', 0.25)
    export_mcap(rec, bag, JOINTS, 'velocity_controller', 0.25, arms=['arm0', 'arm1'])
    states = {}
    with open(glob.glob(os.path.join(bag, '*.mcap'))[0], 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages(log_time_order=False):
            if channel.topic.endswith('/joint_states'):
                states.setdefault(channel.topic, []).append(decoded.position)
    assert sorted(states) == ['/arm0/joint_states', '/arm1/joint_states']
    for topic, trs in (('/arm0/joint_states', a0), ('/arm1/joint_states', a1)):
        want = [t.obs[:7] for t in trs] + [trs[-1].next_obs[:7]]  # 4 transitions, 5 states
        np.testing.assert_allclose(np.array(states[topic]), np.array(want))
