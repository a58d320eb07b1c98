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
"""A minimal Foxglove WebSocket client: what the Foxglove app does, for tests and scripts.

Independent of foxglove-sdk: ``websockets`` for the connection, the protocol's JSON control
messages (serverInfo, advertise, subscribe) and binary message frames, and ``protobuf`` to decode
each protobuf channel with the FileDescriptorSet the server advertised.

    messages = asyncio.run(collect('ws://127.0.0.1:8765', seconds=5.0))
"""

import asyncio
import base64
import json
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict
import websockets

# The SDK's protocol name; the first one is the older name of the same protocol.
SUBPROTOCOLS = ['foxglove.websocket.v1', 'foxglove.sdk.v1']
OP_MESSAGE_DATA = 1
OP_FETCH_ASSET_RESPONSE = 4


def protobuf_decoder(schema_name: str, schema_b64: str) -> Callable[[bytes], Dict[str, Any]]:
    """bytes -> dict for one protobuf channel, from its advertised FileDescriptorSet."""
    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema_b64))
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))
    return lambda data: MessageToDict(cls.FromString(data), preserving_proto_field_name=True)


def decoder(channel: Dict[str, Any]) -> Callable[[bytes], Any]:
    """The decoder of an advertised channel (protobuf or json)."""
    if channel['encoding'] == 'protobuf':
        return protobuf_decoder(channel['schemaName'], channel['schema'])
    if channel['encoding'] == 'json':
        return lambda data: json.loads(data)
    raise ValueError(f'channel {channel["topic"]}: unsupported encoding {channel["encoding"]}')


class Session:
    """What one connection saw: the negotiated subprotocol, server info, the advertised
    channels by topic and every decoded message ``(log_time_ns, message)`` by topic."""

    def __init__(self):
        self.subprotocol: Optional[str] = None
        self.server_info: Dict[str, Any] = {}
        self.channels: Dict[str, Dict[str, Any]] = {}
        self.messages: Dict[str, List[Tuple[int, Any]]] = {}


async def collect(url: str, seconds: float = 5.0, topics: Optional[List[str]] = None,
                  until: Optional[Callable[[Session], bool]] = None,
                  connect_timeout_s: float = 30.0) -> Session:
    """Connect, subscribe to ``topics`` (default every channel) and decode messages.

    Stops after ``seconds`` or once ``until(session)`` holds. Retries the connection until
    ``connect_timeout_s`` (the server may still be starting).
    """
    session = Session()
    t_end = time.monotonic() + connect_timeout_s
    while True:
        try:
            ws = await websockets.connect(url, subprotocols=SUBPROTOCOLS, max_size=None)
            break
        except (OSError, websockets.exceptions.InvalidHandshake):
            if time.monotonic() > t_end:
                raise
            await asyncio.sleep(0.5)
    async with ws:
        session.subprotocol = ws.subprotocol
        decoders: Dict[int, Callable[[bytes], Any]] = {}
        by_sub: Dict[int, str] = {}
        t_stop = time.monotonic() + seconds
        while time.monotonic() < t_stop and not (until and until(session)):
            try:
                frame = await asyncio.wait_for(ws.recv(), max(0.01, t_stop - time.monotonic()))
            except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed):
                break
            if isinstance(frame, str):
                await _control(ws, json.loads(frame), session, topics, decoders, by_sub)
            elif frame[0] == OP_MESSAGE_DATA:
                sub, log_time = struct.unpack_from('<IQ', frame, 1)
                topic = by_sub[sub]
                session.messages.setdefault(topic, []).append(
                    (log_time, decoders[sub](bytes(frame[13:]))))
    return session


async def fetch_asset(url: str, uri: str, timeout_s: float = 10.0) -> bytes:
    """What the Foxglove app does for a ``package://`` URI: fetchAsset, then the response.

    Raises:
        RuntimeError: the server has no assets capability or answered with an error.
    """
    async with websockets.connect(url, subprotocols=SUBPROTOCOLS, max_size=None) as ws:
        info = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if 'assets' not in info.get('capabilities', []):
            raise RuntimeError(f'server capabilities {info.get("capabilities")}: no assets')
        await ws.send(json.dumps({'op': 'fetchAsset', 'uri': uri, 'requestId': 7}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout_s)
            if isinstance(frame, bytes) and frame[0] == OP_FETCH_ASSET_RESPONSE:
                request, status, n = struct.unpack_from('<IBI', frame, 1)
                if request != 7:
                    continue
                if status != 0:
                    raise RuntimeError(frame[10:10 + n].decode())
                return bytes(frame[10 + n:])


async def _control(ws, msg: Dict[str, Any], session: Session, topics, decoders, by_sub):
    if msg.get('op') == 'serverInfo':
        session.server_info = msg
    elif msg.get('op') == 'advertise':
        subscriptions = []
        for channel in msg['channels']:
            session.channels[channel['topic']] = channel
            if topics is None or channel['topic'] in topics:
                sub = len(by_sub) + 1
                decoders[sub] = decoder(channel)
                by_sub[sub] = channel['topic']
                subscriptions.append({'id': sub, 'channelId': channel['id']})
        if subscriptions:
            await ws.send(json.dumps({'op': 'subscribe', 'subscriptions': subscriptions}))


def _xyz(point: Dict[str, Any]) -> Tuple[float, float, float]:
    return tuple(float(point.get(k, 0.0)) for k in ('x', 'y', 'z'))


def _last(session: Session, topic: str) -> Any:
    return session.messages[topic][-1][1] if session.messages.get(topic) else {}


def render(session: Session, path: str) -> str:
    """A picture of what a client decoded (matplotlib, no Foxglove app): the 3D scene (arm,
    puck, target, the plan's predicted paths), a top view of the plan with its spread, and
    the plots of distance, plan latency and loss. Returns ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(12, 8))
    _draw_scene(session, fig.add_subplot(2, 2, 1, projection='3d'), fig.add_subplot(2, 2, 2))
    _draw_plots(session, fig.add_subplot(2, 2, 3), fig.add_subplot(2, 2, 4))
    progress = _last(session, '/recipe/progress')
    fig.suptitle('mbrl_run --live: decoded from the Foxglove WebSocket stream'
                 + (f' | phase {progress.get("position")}/{progress.get("phases")}'
                    if progress else ''))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _line_length(update: Dict[str, Any], entity: str = 'puck') -> float:
    """Length of the predicted path of ``entity`` (the puck: the plan that pushes most)."""
    pts = [_xyz(p) for e in update.get('entities', []) if e['id'] == entity
           for line in e.get('lines', []) for p in line['points']]
    return sum(sum((a - b) ** 2 for a, b in zip(p, q)) ** 0.5 for p, q in zip(pts, pts[1:]))


def _at(session: Session, topic: str, t: int) -> Any:
    """The message of ``topic`` logged closest to ``t`` ({} if none)."""
    msgs = session.messages.get(topic, [])
    return min(msgs, key=lambda m: abs(m[0] - t))[1] if msgs else {}


def _draw_scene(session: Session, ax3, top) -> None:
    """The plan with the longest predicted puck path, and the arm and objects at that moment."""
    from matplotlib.patches import Circle
    plans = session.messages.get('/scene/predicted_paths', [])
    t, plan = max(plans, key=lambda m: _line_length(m[1])) if plans else (0, {})
    base = [tf for tf in _at(session, '/tf', t).get('transforms', [])
            if tf['parent_frame_id'] == 'world']
    offset = _xyz(base[0].get('translation', {})) if base else (0.0, 0.0, 0.0)
    arm = [e for e in _at(session, '/scene/arm', t).get('entities', []) if e['id'] == 'arm']
    arm_xyz = [tuple(a + b for a, b in zip(_xyz(p), offset))
               for p in (arm[0]['lines'][0]['points'] if arm else [])]
    objects = {e['id']: e for e in _at(session, '/scene/objects', t).get('entities', [])}
    for name, e in sorted({e['id']: e for e in plan.get('entities', [])}.items()):
        color = tuple(e.get('lines', e.get('spheres', [{}]))[0].get('color', {}).get(k, 0.0)
                      for k in ('r', 'g', 'b'))
        if e.get('lines'):
            pts = [_xyz(p) for p in e['lines'][0]['points']]
            ax3.plot(*zip(*pts), color=color, lw=2, label=f'predicted {name}')
            top.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=2,
                     label=f'predicted {name} path')
        for s in e.get('spheres', []):
            c = _xyz(s['pose']['position'])
            top.add_patch(Circle(c[:2], s['size']['x'] / 2, color=color, alpha=0.15))
    if arm_xyz:
        ax3.plot(*zip(*arm_xyz), color=(1.0, 0.42, 0.04), lw=6, label='arm (FK of /tf)')
        ax3.scatter(*zip(*arm_xyz[:-3]), color='0.4', s=30)
        top.plot(arm_xyz[-1][0], arm_xyz[-1][1], 'k+', ms=12, label='tool tip')
    for name, style in (('puck', dict(color='tab:red', s=120)),
                        ('target', dict(color='tab:green', s=120, marker='x'))):
        if name in objects:
            cyl = objects[name]['cylinders'][0]
            c = _xyz(cyl['pose']['position'])
            ax3.scatter(*c, label=name, **style)
            top.scatter(c[0], c[1], label=name, **style)
            if name == 'target':
                top.add_patch(Circle(c[:2], cyl['size']['x'] / 2, fill=False, ls='--',
                                     color='tab:green'))
    ax3.set(xlabel='x (m)', ylabel='y (m)', zlabel='z (m)', title='/scene (frame world)')
    ax3.set(xlim=(-0.1, 0.8), ylim=(-0.45, 0.45), zlim=(0.0, 0.9))
    ax3.set_box_aspect((1, 1, 1))
    ax3.legend(fontsize=7, loc='upper left')
    top.set(xlabel='x (m)', ylabel='y (m)', aspect='equal',
            title='top view: plan, spread (shaded), success radius (dashed)')
    top.legend(fontsize=7)


def _draw_plots(session: Session, plots, lat) -> None:
    for topic, label in (('/controller/distance_to_target', 'distance to target (m)'),
                         ('/controller/disagreement', 'disagreement')):
        msgs = session.messages.get(topic, [])
        if msgs:
            t0 = msgs[0][0]
            plots.plot([(t - t0) / 1e9 for t, _ in msgs], [m['value'] for _, m in msgs],
                       label=label)
    plots.set(xlabel='wall time (s)', title='/controller plots')
    if plots.get_legend_handles_labels()[0]:  # nothing plotted: no empty legend, no warning
        plots.legend(fontsize=7)
    ms = [m['value'] for _, m in session.messages.get('/controller/plan_time_ms', [])]
    loss = session.messages.get('/trainer/loss', [])
    lat.plot(ms, '.', label='plan latency (ms)')
    if loss:
        twin = lat.twinx()
        twin.plot([m['val_loss'] for _, m in loss], 'g-', label='val loss (right)')
        twin.legend(fontsize=7, loc='upper right')
    lat.set(xlabel='plan / epoch index', title='plan latency and model loss')
    lat.legend(fontsize=7, loc='upper left')
