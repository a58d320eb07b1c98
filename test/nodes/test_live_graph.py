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
"""The live view for real: ``mbrl_run --live --record`` on the CI smoke recipe, watched by an
independent Foxglove WebSocket client (``mbrl_robot/live_client.py``: websockets + protobuf).

Checks the advertised channels and schemas, decodes real messages (the arm's transforms move, a
plan's predicted paths arrive while a planner episode runs, plots and progress have values) and
reads the MCAP recording back with the ``mcap`` reader.
"""

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip('foxglove')
pytest.importorskip('mcap')

from mbrl_robot import live_client  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = {
    '/tf': 'foxglove.FrameTransforms', '/joint_states': 'foxglove.JointStates',
    '/scene/arm': 'foxglove.SceneUpdate', '/scene/objects': 'foxglove.SceneUpdate',
    '/scene/predicted_paths': 'foxglove.SceneUpdate',
    '/controller/plan_time_ms': 'mbrl_robot.Value',
    '/controller/distance_to_target': 'mbrl_robot.Value',
    '/controller/disagreement': 'mbrl_robot.Value', '/trainer/loss': 'mbrl_robot.Loss',
    '/recipe/progress': 'mbrl_robot.Progress', '/diagnostics': 'mbrl_robot.Diagnostics'}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tip(msg):
    return [t for t in msg['transforms'] if t['child_frame_id'] == 'tool_tip'][0]['translation']


def seen_enough(session) -> bool:
    tfs = session.messages.get('/tf', [])
    # Well into a planner episode: a few plans shown and timed.
    return (len(tfs) >= 5 and tip(tfs[0][1]) != tip(tfs[-1][1])
            and len(session.messages.get('/scene/predicted_paths', [])) >= 10
            and len(session.messages.get('/controller/plan_time_ms', [])) >= 10)


async def watch(url):
    """Collect the stream and, meanwhile, fetch the URDF as Foxglove's URDF layer does."""
    import websockets
    session = asyncio.create_task(live_client.collect(url, seconds=240.0, until=seen_enough,
                                                      connect_timeout_s=60.0))
    urdf = None
    for _ in range(120):
        try:
            urdf = await live_client.fetch_asset(url, 'package://mbrl_robot/urdf/'
                                                 'iiwa7_pusher.urdf')
            break
        except (OSError, websockets.exceptions.InvalidHandshake):
            await asyncio.sleep(0.5)
    return await session, urdf


@pytest.fixture(scope='module')
def live_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('live')
    asked = run_dir / 'live.mcap'
    asked.write_bytes(b'an earlier recording')  # kept: the run records beside it
    record = run_dir / 'live.1.mcap'
    port = free_port()
    env = dict(os.environ, ROS_DOMAIN_ID=str(100 + port % 100),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    runner = subprocess.Popen(
        [sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke', '--run-dir',
         str(run_dir), '--timeout', '300', '--live', '--record', str(asked),
         '--set', f'monitor.port={port}'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        session, urdf = asyncio.run(watch(f'ws://127.0.0.1:{port}'))
        session.urdf = urdf
        out, _ = runner.communicate(timeout=360)
    finally:
        if runner.poll() is None:
            runner.kill()
    return session, runner.returncode, out, record, run_dir


def test_channels_and_schemas_are_advertised(live_run):
    session, rc, out, record, run_dir = live_run
    assert rc == 0, out[-3000:]
    assert f'recording to {record} ({run_dir / "live.mcap"} is there already: kept)' in out
    assert (run_dir / 'live.mcap').read_bytes() == b'an earlier recording'
    # The monitor wrote where the runner said, and its log says so too.
    assert sorted(p.name for p in run_dir.glob('live*.mcap')) == ['live.1.mcap', 'live.mcap']
    with open(run_dir / 'logs' / 'monitor.log') as f:
        assert f'recording to {record}' in f.read()
    assert session.subprotocol in live_client.SUBPROTOCOLS
    with open(os.path.join(ROOT, 'urdf', 'iiwa7_pusher.urdf'), 'rb') as f:
        assert session.urdf == f.read()  # served to Foxglove's URDF layer
    assert {t: c['schemaName'] for t, c in session.channels.items()} == EXPECTED
    for topic, channel in session.channels.items():
        if channel['encoding'] == 'protobuf':
            assert channel['schemaEncoding'] == 'protobuf'
            assert base64.b64decode(channel['schema'])  # a FileDescriptorSet
        else:
            assert channel['schemaEncoding'] == 'jsonschema'
            assert json.loads(channel['schema'])['type'] == 'object'


def test_the_arm_moves_and_the_plan_is_shown(live_run):
    session, _, _, _, _ = live_run
    tfs = [m for _, m in session.messages['/tf']]
    frames = {(t['parent_frame_id'], t['child_frame_id']) for t in tfs[-1]['transforms']}
    assert ('world', 'iiwa_base') in frames and ('iiwa_base', 'tool_tip') in frames
    assert tip(tfs[0]) != tip(tfs[-1])
    update = session.messages['/scene/predicted_paths'][-1][1]
    entities = {e['id']: e for e in update['entities']}
    assert {'puck', 'tool', 'puck_spread', 'tool_spread'} <= set(entities)
    assert all(e['frame_id'] == 'world' for e in entities.values())
    assert len(entities['puck']['lines'][0]['points']) >= 2
    assert entities['puck_spread']['spheres'][0]['size']['x'] > 0.0
    arm = session.messages['/scene/arm'][-1][1]['entities'][0]
    assert arm['frame_id'] == 'iiwa_base' and len(arm['lines'][0]['points']) == 12
    assert session.messages['/controller/plan_time_ms'][-1][1]['value'] > 0.0


def test_a_picture_of_the_decoded_scene(live_run, tmp_path):
    session = live_run[0]
    path = live_client.render(session, str(tmp_path / 'live_view.png'))
    assert os.path.getsize(path) > 10_000
    if os.environ.get('MBRL_LIVE_VIEW_PNG'):  # keep it (docs/: scripts/render_live_view.py)
        live_client.render(session, os.environ['MBRL_LIVE_VIEW_PNG'])


def test_the_recording_reads_back_with_mcap(live_run):
    _, _, _, record, run_dir = live_run
    from mcap.reader import make_reader
    counts = {}
    with open(record, 'rb') as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == '/tf':
                decode = live_client.protobuf_decoder(schema.name,
                                                      base64.b64encode(schema.data).decode())
                assert tip(decode(message.data))
            if channel.topic == '/recipe/progress':
                last_progress = json.loads(message.data)
    assert set(counts) == set(EXPECTED)
    assert counts['/trainer/loss'] > 0 and counts['/scene/predicted_paths'] > 0
    with open(run_dir / 'summary.json') as f:
        phases = len(json.load(f)['episodes']) + 2
    assert last_progress['position'] == last_progress['phases'] == phases


def test_a_monitor_started_after_a_fit_records_its_loss_where_it_happened(tmp_path, ros_env):
    """Nothing waits for the monitor, so it may start after a fit: the trainer's ~/loss is
    transient local, and the monitor records the history it gets at its start at the times the
    trainer published it (before the monitor started), each epoch once, in order."""
    import time
    import rclpy
    from mcap.reader import make_reader
    from std_msgs.msg import Float64MultiArray
    from mbrl_robot.nodes.transport import LOSS_QOS
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('trainer', context=context)
    proc = None
    try:
        pub = node.create_publisher(Float64MultiArray, '/trainer/loss', LOSS_QOS)
        for epoch in range(1, 6):
            pub.publish(Float64MultiArray(data=[float(epoch), 1.0 / epoch, 2.0 / epoch]))
        time.sleep(0.5)
        started = time.time_ns()
        record = tmp_path / 'late.mcap'
        proc = subprocess.Popen(
            [sys.executable, '-m', 'mbrl_robot.nodes.monitor', '--ros-args', '-p', 'port:=0',
             '-p', f'record_path:={record}'],
            cwd=ROOT, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 60.0
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.1)
        assert pub.get_subscription_count() == 1, 'the monitor never subscribed'
        time.sleep(2.0)  # matched: the history is on its way (reliable)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.shutdown(context=context)
    with open(record, 'rb') as f:
        losses = [(message.log_time, json.loads(message.data)) for _, channel, message
                  in make_reader(f).iter_messages(log_time_order=False)
                  if channel.topic == '/trainer/loss']
    assert [m['epoch'] for _, m in losses] == [1.0, 2.0, 3.0, 4.0, 5.0], out
    assert [m['val_loss'] for _, m in losses] == [2.0, 1.0, 2.0 / 3.0, 0.5, 0.4]
    assert all(t < started for t, _ in losses), (started, [t for t, _ in losses])
