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
