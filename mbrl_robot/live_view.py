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
"""The live view's Foxglove channels and message builders, without ROS (the monitor node's).

Channels (topic, schema):

- ``/tf`` foxglove.FrameTransforms: ``world`` -> ``iiwa_base`` (the configured base frame) and
  ``iiwa_base`` -> every link of the chain up to ``tool_tip``, from the joint states through the
  project's forward kinematics (:class:`~mbrl_robot.core.kinematics.SerialChainFK`).
- ``/joint_states`` foxglove.JointStates.
- ``/scene/arm`` foxglove.SceneUpdate: the arm as a polyline through its link frames.
- ``/scene/objects`` foxglove.SceneUpdate: puck and target (``world``).
- ``/scene/predicted_paths`` foxglove.SceneUpdate: the chosen plan's predicted puck and tool
  paths, spheres sized by the ensemble's spread (the controller's MarkerArray).
- JSON: ``/controller/plan_time_ms``, ``/controller/distance_to_target``,
  ``/controller/disagreement`` (``{"value"}``), ``/trainer/loss`` (``{"epoch", "train_loss",
  "val_loss"}``), ``/recipe/progress`` (the recipe's JSON), ``/diagnostics``.

``config/foxglove_layout.json`` arranges them (3D, plots, progress, diagnostics).
"""

import errno
import json
import math
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import foxglove
from foxglove.channels import FrameTransformsChannel, JointStatesChannel, SceneUpdateChannel
from foxglove.messages import (Color, CylinderPrimitive, FrameTransform, FrameTransforms,
                               JointState, JointStates, LinePrimitive, LinePrimitiveLineType,
                               Point3, Pose, Quaternion, SceneEntity, SceneUpdate, SpherePrimitive,
                               Timestamp, Vector3)
import numpy as np
import torch

from mbrl_robot.core.kinematics import _rpy_matrix, SerialChainFK
from mbrl_robot.paths import record_paths

PUCK_RADIUS_M = 0.035
PUCK_HEIGHT_M = 0.03
ARM_COLOR = (1.0, 0.42, 0.04, 1.0)
VALUE_SCHEMA = {'type': 'object', 'properties': {'value': {'type': 'number'}}}
LOSS_SCHEMA = {'type': 'object', 'properties': {
    'epoch': {'type': 'number'}, 'train_loss': {'type': 'number'}, 'val_loss': {'type': 'number'}}}
PROGRESS_SCHEMA = {'type': 'object', 'properties': {
    'position': {'type': 'integer'}, 'phases': {'type': 'integer'}, 'phase': {'type': 'string'},
    'last': {'type': 'string'}, 'episode': {'type': 'integer'}, 'episodes': {'type': 'integer'},
    'successes': {'type': 'integer'}, 'evaluated': {'type': 'integer'},
    'elapsed_s': {'type': 'number'}, 'eta_s': {'type': ['number', 'null']}}}
DIAGNOSTICS_SCHEMA = {'type': 'object', 'properties': {'status': {'type': 'array', 'items': {
    'type': 'object', 'properties': {
        'name': {'type': 'string'}, 'level': {'type': 'integer'}, 'message': {'type': 'string'},
        'values': {'type': 'object', 'additionalProperties': {'type': 'string'}}}}}}}
# Topic of each JSON channel -> (schema name, JSON schema).
JSON_CHANNELS = {
    '/controller/plan_time_ms': ('mbrl_robot.Value', VALUE_SCHEMA),
    '/controller/distance_to_target': ('mbrl_robot.Value', VALUE_SCHEMA),
    '/controller/disagreement': ('mbrl_robot.Value', VALUE_SCHEMA),
    '/trainer/loss': ('mbrl_robot.Loss', LOSS_SCHEMA),
    '/recipe/progress': ('mbrl_robot.Progress', PROGRESS_SCHEMA),
    '/diagnostics': ('mbrl_robot.Diagnostics', DIAGNOSTICS_SCHEMA)}
SCENE_CHANNELS = ('/scene/arm', '/scene/objects', '/scene/predicted_paths')
# The arm's URDF as the server serves it (fetchAsset) to Foxglove's URDF layer, which draws it
# on the /tf frames (the file uses primitive shapes only: nothing else to fetch).
URDF_URI = 'package://mbrl_robot/urdf/iiwa7_pusher.urdf'


def stamp(t_ns: Optional[int] = None) -> Timestamp:
    """A foxglove Timestamp of ``t_ns`` (default: now, wall time: the view is live)."""
    t_ns = time.time_ns() if t_ns is None else t_ns
    return Timestamp(sec=t_ns // 1_000_000_000, nsec=t_ns % 1_000_000_000)


def quaternion(rot: np.ndarray) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix (Shepperd's method, w >= 0)."""
    m = np.asarray(rot, dtype=float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0.0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        v = [0.0, 0.0, 0.0]
        v[i] = s / 4
        v[j] = (m[j, i] + m[i, j]) / s
        v[k] = (m[k, i] + m[i, k]) / s
        q = (*v, (m[k, j] - m[j, k]) / s)
    q = np.asarray(q) / np.linalg.norm(q)
    return tuple(float(x) for x in (q if q[3] >= 0 else -q))


def _color(rgba: Sequence[float]) -> Color:
    return Color(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def _pose(xyz: Sequence[float] = (0.0, 0.0, 0.0),
          xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> Pose:
    return Pose(position=Vector3(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
                orientation=Quaternion(x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3]))


def _transform(parent: str, child: str, xyz, xyzw, ts: Timestamp) -> FrameTransform:
    return FrameTransform(timestamp=ts, parent_frame_id=parent, child_frame_id=child,
                          translation=Vector3(x=float(xyz[0]), y=float(xyz[1]),
                                              z=float(xyz[2])),
                          rotation=Quaternion(x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3]))


class ArmFrames:
    """Link frames of the arm from joint states, with the project's forward kinematics.

    Args:
        urdf_file: the arm's URDF (root link = the child of the base frame).
        joints: the controlled joints, the order of ``q``.
        base_parent: the fixed frame above the root link (``world``).
        base_xyz, base_rpy: the root link's pose in ``base_parent`` (m, rad).
    """

    def __init__(self, urdf_file: str, joints: Sequence[str], base_parent: str = 'world',
                 base_xyz: Sequence[float] = (0.0, 0.0, 0.0),
                 base_rpy: Sequence[float] = (0.0, 0.0, 0.0)):
        self.fk = SerialChainFK(urdf_file, joint_names=list(joints), dtype=torch.float64)
        self.joints = list(joints)
        self.root = self.fk.root_link
        self.links = list(self.fk.chain_links)
        self.base_parent = base_parent
        self.base_xyz = [float(v) for v in base_xyz]
        self.base_rot = np.array(_rpy_matrix(*[float(v) for v in base_rpy]))

    def frames(self) -> List[str]:
        """Every frame of the tree, root first."""
        return [self.base_parent, self.root] + self.links

    def poses(self, q: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
        """(N, 3, 3) rotations and (N, 3) positions of ``links`` in the root frame."""
        with torch.no_grad():
            rot, pos = self.fk.link_poses(torch.as_tensor(np.asarray(q, dtype=float)))
        return rot.numpy(), pos.numpy()

    def transform_list(self, q: Sequence[float]) -> List[Tuple[str, str, Tuple, Tuple]]:
        """``(parent, child, xyz, xyzw)``: ``base_parent`` -> root, root -> each link."""
        rot, pos = self.poses(q)
        out = [(self.base_parent, self.root, tuple(self.base_xyz), quaternion(self.base_rot))]
        out += [(self.root, name, tuple(float(v) for v in p), quaternion(r))
                for name, r, p in zip(self.links, rot, pos)]
        return out

    def transforms(self, q: Sequence[float], ts: Timestamp) -> FrameTransforms:
        """The frame tree as foxglove.FrameTransforms (see :meth:`transform_list`)."""
        return FrameTransforms(transforms=[_transform(parent, child, xyz, xyzw, ts)
                                           for parent, child, xyz, xyzw
                                           in self.transform_list(q)])

    def arm_entity(self, q: Sequence[float], ts: Timestamp) -> SceneEntity:
        """The arm drawn as a thick polyline through its link origins, in the root frame."""
        _, pos = self.poses(q)
        xyz = [(0.0, 0.0, 0.0)] + [tuple(float(v) for v in p) for p in pos]
        points = [Point3(x=x, y=y, z=z) for x, y, z in xyz]
        line = LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=_pose(), thickness=0.06,
                             scale_invariant=False, points=points, color=_color(ARM_COLOR))
        ball = Vector3(x=0.08, y=0.08, z=0.08)
        # Spheres at the joints (the last three frames are the flange, pusher and tip).
        joints = [SpherePrimitive(pose=_pose(p), size=ball,
                                  color=_color((0.45, 0.45, 0.45, 1.0))) for p in xyz[:-3]]
        return SceneEntity(timestamp=ts, frame_id=self.root, id='arm', lines=[line],
                           spheres=joints)


def joint_states(names: Iterable[str], position: Sequence[float],
                 velocity: Sequence[float], ts: Timestamp) -> JointStates:
    """foxglove.JointStates of a sensor_msgs/JointState's fields."""
    velocity = list(velocity) or [0.0] * len(list(position))
    return JointStates(timestamp=ts, joints=[
        JointState(name=n, position=float(p), velocity=float(v))
        for n, p, v in zip(names, position, velocity)])


def objects_update(puck: Optional[Sequence[float]], target: Optional[Sequence[float]],
                   frame: str, success_radius: float, ts: Timestamp) -> SceneUpdate:
    """Puck (orange cylinder) and target (green disc of the success radius) in ``frame``."""
    entities = []
    if puck is not None:
        entities.append(SceneEntity(timestamp=ts, frame_id=frame, id='puck', cylinders=[
            CylinderPrimitive(pose=_pose(puck), size=Vector3(
                x=2 * PUCK_RADIUS_M, y=2 * PUCK_RADIUS_M, z=PUCK_HEIGHT_M), bottom_scale=1.0,
                top_scale=1.0, color=_color((0.9, 0.2, 0.1, 1.0)))]))
    if target is not None:
        entities.append(SceneEntity(timestamp=ts, frame_id=frame, id='target', cylinders=[
            CylinderPrimitive(pose=_pose(target), size=Vector3(
                x=2 * success_radius, y=2 * success_radius, z=0.002), bottom_scale=1.0,
                top_scale=1.0, color=_color((0.1, 0.8, 0.2, 0.5)))]))
    return SceneUpdate(entities=entities)


def paths_update(markers: Iterable[Dict[str, Any]], ts: Timestamp) -> SceneUpdate:
    """The controller's predicted paths (visualization_msgs/Marker fields as dicts) as entities.

    Each marker is ``{ns, frame_id, kind: 'line'|'spheres', points: [(x, y, z)], scale,
    rgba}``; lines become line strips, sphere lists become spheres of the marker's size (the
    ensemble's spread along the path).
    """
    entities = []
    for mk in markers:
        xyz = [(float(x), float(y), float(z)) for x, y, z in mk['points']]
        if mk['kind'] == 'line':
            entity = SceneEntity(timestamp=ts, frame_id=mk['frame_id'], id=mk['ns'], lines=[
                LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=_pose(),
                              thickness=float(mk['scale']), scale_invariant=False,
                              points=[Point3(x=x, y=y, z=z) for x, y, z in xyz],
                              color=_color(mk['rgba']))])
        else:
            size = Vector3(x=float(mk['scale']), y=float(mk['scale']), z=float(mk['scale']))
            entity = SceneEntity(timestamp=ts, frame_id=mk['frame_id'], id=mk['ns'], spheres=[
                SpherePrimitive(pose=_pose(p), size=size, color=_color(mk['rgba']))
                for p in xyz])
        entities.append(entity)
    return SceneUpdate(entities=entities)


def open_recording(path: str, context) -> Tuple[str, Any]:
    """An MCAP writer of ``context``'s channels at ``path``, or beside it where a file is there
    already (``paths.record_paths``: never over an earlier recording). Returns the path
    written and the writer; raises ``OSError`` (a folder given, a missing folder, ...)."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, 'is a folder: name a file in it')
    for where in record_paths(path):
        try:
            return where, foxglove.open_mcap(where, allow_overwrite=False, context=context)
        except FileExistsError:  # a file or a link there: the next name
            continue
    raise AssertionError('unreachable: record_paths never ends')


class LiveChannels:
    """Every channel of the live view, and the server and recorder they go to.

    Args:
        host, port: the WebSocket server's address (port 0: any free port).
        record_path: also write every channel to this MCAP file ('' = no); where a file is
            there already, beside it (``record_path`` says where: ``live.1.mcap``, ...).
        name: the server's name (shown by the Foxglove app).
        assets: ``{uri: bytes}`` the server hands out on request (the URDF, ``URDF_URI``).
    """

    def __init__(self, host: str = '127.0.0.1', port: int = 8765, record_path: str = '',
                 name: str = 'mbrl_robot', assets: Optional[Dict[str, bytes]] = None):
        self.context = foxglove.Context()
        self.tf = FrameTransformsChannel('/tf', context=self.context)
        self.joint_states = JointStatesChannel('/joint_states', context=self.context)
        self.scene = {t: SceneUpdateChannel(t, context=self.context) for t in SCENE_CHANNELS}
        self.json = {t: foxglove.Channel(t, schema=foxglove.Schema(
            name=name, encoding='jsonschema', data=json.dumps(schema).encode()),
            message_encoding='json', context=self.context)
            for t, (name, schema) in JSON_CHANNELS.items()}
        assets = dict(assets or {})
        # The server first: a taken port (RuntimeError) then leaves every file as it was.
        self.server = foxglove.start_server(name=name, host=host, port=port,
                                            context=self.context,
                                            asset_handler=assets.get if assets else None)
        self.recorder, self.record_path = None, ''
        try:
            if record_path:
                self.record_path, self.recorder = open_recording(record_path, self.context)
        except BaseException:
            self.server.stop()
            raise

    @property
    def port(self) -> int:
        """The server's port (the one picked when started with 0)."""
        return self.server.port

    def wanted(self, channel) -> bool:
        """Whether anything takes ``channel`` (a subscribed client or the recorder): else the
        monitor skips building its messages."""
        return self.recorder is not None or channel.has_sinks()

    def close(self) -> None:
        """Stop the server and finish the recording (its summary and index)."""
        self.server.stop()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None


def layout_json() -> str:
    """The Foxglove layout of ``config/foxglove_layout.json`` (``python -m
    mbrl_robot.live_view > config/foxglove_layout.json``): the 3D scene beside plots of plan
    latency, distance, disagreement and loss, the recipe's progress and the diagnostics."""
    import foxglove.layouts as fl

    def item(content, proportion=1.0):
        return fl.SplitItem(proportion=proportion, content=content)

    def plot(title, *series):
        return fl.PlotPanel(title=title, config=fl.PlotConfig(
            paths=[fl.PlotSeries(value=path, label=label) for path, label in series],
            show_legend=True, time_window_mode='sliding', following_view_width=120.0))

    scene = {t: fl.BaseRendererSceneUpdateTopicSettings(visible=True) for t in SCENE_CHANNELS}
    urdf = fl.BaseRendererUrdfLayerSettings(
        visible=True, layer_id='foxglove.Urdf', instance_id='iiwa7-urdf', label='iiwa7 (URDF)',
        source_type='url', url=URDF_URI, control_mode='transforms', display_mode='visual')
    three_d = fl.ThreeDeePanel(title='arm, puck, target and the plan', config=fl.ThreeDeeConfig(
        topics=scene, layers={'iiwa7-urdf': urdf}, fixed_frame='world', follow_tf='world'))
    plots = fl.SplitContainer(direction='column', items=[
        item(plot('plan latency (ms)', ('/controller/plan_time_ms.value', 'plan ms'))),
        item(plot('distance to target (m)',
                  ('/controller/distance_to_target.value', 'puck - target'))),
        item(plot('ensemble disagreement', ('/controller/disagreement.value', 'disagreement'))),
        item(plot('model loss', ('/trainer/loss.train_loss', 'train'),
                  ('/trainer/loss.val_loss', 'validation')))])
    status = fl.SplitContainer(direction='column', items=[
        item(plot('recipe progress', ('/recipe/progress.position', 'phases done'),
                  ('/recipe/progress.episode', 'episodes done'),
                  ('/recipe/progress.successes', 'successes'))),
        item(fl.RawMessagesPanel(title='recipe progress', config=fl.RawMessagesConfig(
            topic_path='/recipe/progress', default_expanded=True))),
        item(fl.RawMessagesPanel(title='diagnostics', config=fl.RawMessagesConfig(
            topic_path='/diagnostics.status', default_expanded=True)))])
    layout = fl.Layout(content=fl.SplitContainer(direction='row', items=[
        item(three_d, 2.0), item(plots, 1.2), item(status, 0.8)]))
    config_by_id: Dict[str, Any] = {}
    tree = _app_layout(json.loads(layout.to_json())['content'], config_by_id)
    return json.dumps({'configById': config_by_id, 'globalVariables': {}, 'userNodes': {},
                       'playbackConfig': {'speed': 1.0}, 'layout': tree}, indent=1) + '\n'


# Panel types whose id prefix in the app's layout files differs from the SDK's name.
APP_PANEL_IDS = {'ThreeDee': '3D'}


def _app_layout(node: Dict[str, Any], config_by_id: Dict[str, Any]) -> Any:
    """The SDK's layout tree as the Foxglove app's layout file (the format "Import from file"
    reads): panels by id in ``configById``, splits as nested binary ``first``/``second``."""
    if node['type'] == 'panel':
        kind = APP_PANEL_IDS.get(node['panelType'], node['panelType'])
        panel_id = f'{kind}!live{len(config_by_id)}'
        config_by_id[panel_id] = dict(node['config'], foxglovePanelTitle=node.get('title', ''))
        return panel_id
    items = node['items']
    first = _app_layout(items[0]['content'], config_by_id)
    if len(items) == 1:
        return first
    rest = {'type': 'split', 'direction': node['direction'], 'items': items[1:]}
    total = sum(i['proportion'] for i in items)
    return {'first': first, 'second': _app_layout(rest, config_by_id),
            'direction': node['direction'],
            'splitPercentage': round(100.0 * items[0]['proportion'] / total, 1)}


if __name__ == '__main__':
    import sys
    sys.stdout.write(layout_json())
