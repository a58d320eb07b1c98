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
"""The live view's channels without ROS: messages built from joint states and markers, served
over the Foxglove WebSocket protocol to an independent client, and recorded to MCAP."""

import asyncio
import json
import os
import threading

import numpy as np
import pytest
import torch

pytest.importorskip('foxglove')

from mbrl_robot import live_client, live_view  # noqa: E402
from mbrl_robot.core.kinematics import SerialChainFK  # noqa: E402
from mbrl_robot.paths import share_dir, urdf_path  # noqa: E402

LAYOUT = os.path.join(share_dir(), 'config', 'foxglove_layout.json')
JOINTS = [f'iiwa_joint_{i}' for i in range(1, 8)]
Q = [0.3, 0.5, -0.2, -1.2, 0.1, 0.8, 0.0]


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b, c = rng.uniform(-np.pi, np.pi, 3)
        rot = np.array(live_view._rpy_matrix(a, b, c))
        x, y, z, w = live_view.quaternion(rot)
        back = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(back, rot, atol=1e-9)


def test_arm_frames_form_one_tree_and_end_at_the_fk_tip():
    arm = live_view.ArmFrames(urdf_path(), JOINTS, 'world', [0.1, 0.0, 0.0], [0.0, 0.0, 0.0])
    transforms = arm.transform_list(Q)
    parents = {child: parent for parent, child, _, _ in transforms}
    assert parents['iiwa_base'] == 'world' and parents['tool_tip'] == 'iiwa_base'
    assert set(parents) | {'world'} == set(arm.frames())
    tip = [xyz for _, child, xyz, _ in transforms if child == 'tool_tip'][0]
    fk = SerialChainFK(urdf_path(), joint_names=JOINTS, dtype=torch.float64)
    np.testing.assert_allclose(tip, fk(torch.tensor(Q, dtype=torch.float64)).numpy(), atol=1e-9)
    assert len(arm.transforms(Q, live_view.stamp()).encode()) > 0


def serve_and_collect(tmp_path):
    record = str(tmp_path / 'live.mcap')
    with open(urdf_path(), 'rb') as f:
        urdf = f.read()
    live = live_view.LiveChannels(port=0, record_path=record, assets={live_view.URDF_URI: urdf})
    arm = live_view.ArmFrames(urdf_path(), JOINTS)
    stop = threading.Event()

    def publish():
        k = 0
        while not stop.wait(0.02):
            q = np.array(Q) + 0.01 * k
            k += 1
            ts = live_view.stamp()
            live.tf.log(arm.transforms(q, ts))
            live.scene['/scene/arm'].log(live_view.SceneUpdate(entities=[arm.arm_entity(q, ts)]))
            live.scene['/scene/objects'].log(live_view.objects_update(
                (0.5, 0.0, 0.02), (0.7, 0.1, 0.0), 'world', 0.05, ts))
            live.scene['/scene/predicted_paths'].log(live_view.paths_update([
                {'ns': 'puck', 'frame_id': 'world', 'kind': 'line', 'scale': 0.005,
                 'points': [(0.5, 0, 0.02), (0.6, 0.05, 0.02)], 'rgba': (1, 0, 0, 1)},
                {'ns': 'puck_spread', 'frame_id': 'world', 'kind': 'spheres', 'scale': 0.02,
                 'points': [(0.5, 0, 0.02), (0.6, 0.05, 0.02)], 'rgba': (1, 0, 0, 0.25)}], ts))
            live.json['/controller/plan_time_ms'].log({'value': 12.5})
            live.json['/recipe/progress'].log(json.dumps({'position': 1, 'phases': 6}))

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        url = f'ws://127.0.0.1:{live.port}'
        # Foxglove's URDF layer fetches the arm with fetchAsset.
        assert asyncio.run(live_client.fetch_asset(url, live_view.URDF_URI)) == urdf
        with pytest.raises(RuntimeError):
            asyncio.run(live_client.fetch_asset(url, 'package://mbrl_robot/urdf/none.urdf'))
        session = asyncio.run(live_client.collect(
            f'ws://127.0.0.1:{live.port}', seconds=20.0,
            until=lambda s: all(len(s.messages.get(t, [])) >= 3 for t in (
                '/tf', '/scene/arm', '/scene/predicted_paths', '/recipe/progress'))))
    finally:
        stop.set()
        thread.join()
        live.close()
    return session, record


def test_served_to_a_foxglove_client_and_recorded(tmp_path):
    session, record = serve_and_collect(tmp_path)
    assert session.subprotocol == 'foxglove.sdk.v1'
    assert session.channels['/tf']['schemaName'] == 'foxglove.FrameTransforms'
    assert session.channels['/scene/arm']['encoding'] == 'protobuf'
    assert session.channels['/controller/plan_time_ms']['schemaName'] == 'mbrl_robot.Value'
    tfs = [m for _, m in session.messages['/tf']]
    tips = [[t for t in m['transforms'] if t['child_frame_id'] == 'tool_tip'][0]['translation']
            for m in tfs]
    assert tips[0] != tips[-1]  # the arm moves
    paths = session.messages['/scene/predicted_paths'][-1][1]['entities']
    assert {e['id'] for e in paths} == {'puck', 'puck_spread'}
    assert len(paths[0].get('lines', paths[-1].get('lines', []))[0]['points']) == 2
    assert session.messages['/recipe/progress'][-1][1]['phases'] == 6
    assert os.path.getsize(live_client.render(session, str(tmp_path / 'view.png'))) > 10_000
    # The recording opens with the independent mcap reader.
    from mcap.reader import make_reader
    with open(record, 'rb') as f:
        reader = make_reader(f)
        topics = {channel.topic for _, channel, _ in reader.iter_messages()}
    assert {'/tf', '/scene/arm', '/scene/objects', '/controller/plan_time_ms'} <= topics


def test_a_recording_never_overwrites_a_file_and_a_taken_port_touches_none(tmp_path):
    """An earlier recording at the path is kept and the new one goes beside it (``live.1.mcap``,
    then ``live.2.mcap``); a live view that cannot listen leaves every file as it was."""
    record = tmp_path / 'live.mcap'
    record.write_bytes(b'an earlier recording')
    first = live_view.LiveChannels(port=0, record_path=str(record))
    try:
        assert first.record_path == str(tmp_path / 'live.1.mcap')
        second = live_view.LiveChannels(port=0, record_path=str(record))
        assert second.record_path == str(tmp_path / 'live.2.mcap')
        second.close()
        with pytest.raises(RuntimeError, match='(?i)address already in use'):
            live_view.LiveChannels(port=first.port, record_path=str(record))
    finally:
        first.close()
    assert record.read_bytes() == b'an earlier recording'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['live.1.mcap', 'live.2.mcap',
                                                          'live.mcap']
    with pytest.raises(IsADirectoryError):
        live_view.LiveChannels(port=0, record_path=str(tmp_path))


def test_the_layout_shows_only_advertised_channels():
    with open(LAYOUT) as f:
        layout = json.load(f)
    text = json.dumps(layout)
    topics = set(live_view.JSON_CHANNELS) | set(live_view.SCENE_CHANNELS)
    topics |= {'/tf', '/joint_states'}
    used = {t for t in topics if f'"{t}' in text}
    assert {'/scene/arm', '/scene/predicted_paths', '/controller/plan_time_ms',
            '/trainer/loss', '/recipe/progress', '/diagnostics'} <= used
    for path in [v for v in _strings(layout) if v.startswith('/') and '.' in v]:
        assert path.split('.')[0] in topics, path
    # Generated: python -m mbrl_robot.live_view > config/foxglove_layout.json
    with open(LAYOUT) as f:
        assert f.read() == live_view.layout_json()
    assert layout['configById'] and isinstance(layout['layout'], dict)


def _strings(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _strings(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _strings(v)
    elif isinstance(tree, str):
        yield tree
