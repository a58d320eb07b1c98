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
"""The live view: the running graph over the Foxglove WebSocket protocol, no ROS install needed.

Subscribes to the arm's joint states, the puck and the target, the controller's predicted paths,
distance, disagreement and plan latency, the trainer's loss, the recipe's progress and
``/diagnostics``, and serves them as Foxglove channels (``mbrl_robot/live_view.py``) on
``ws://host:port`` (open it in the Foxglove app with ``config/foxglove_layout.json``). The arm's
frames come from the joint states through the project's forward kinematics; with
``record_path`` every channel also goes to an MCAP file. Nothing is converted for a channel no
client subscribed to (unless recording), so an unwatched monitor costs the graph one more DDS
reader per topic.

    mbrl_run --live                      # the recipe with the live view on ws://127.0.0.1:8765
    mbrl_run --live --record live.mcap   # and a recording of it
"""

from functools import partial
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_robot import live_view
from mbrl_robot.nodes.params import declare_node_parameters
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.transport import LATCHED_QOS, LOSS_QOS
from mbrl_robot.paths import recording_note, urdf_path


class MonitorNode(GuardedNode):
    """Serves the running graph to Foxglove (see the module docstring)."""

    def __init__(self):
        super().__init__('monitor')
        p = self.params = declare_node_parameters(self, 'monitor')
        base = p['base_frame']
        self.arm = live_view.ArmFrames(p['urdf_file'] or urdf_path(), p['task']['joints'],
                                       base['parent'], base['xyz'], base['rpy'])
        # Foxglove's URDF layer fetches the arm's URDF from this server (live_view.URDF_URI).
        urdf_file = p['urdf_file'] or urdf_path()
        with open(urdf_file, 'rb') as f:
            assets = {live_view.URDF_URI: f.read()}
        try:
            self.live = live_view.LiveChannels(p['host'], p['port'], p['record_path'],
                                               assets=assets)
        except RuntimeError as e:  # the SDK's FoxgloveError, e.g. the port is taken
            # spin.run_node says it in one line and ends the process.
            raise OSError(f'live view on {p["host"]}:{p["port"]} failed ({e}): set '
                          'monitor.port (0 = any free port) or monitor.host') from None
        except OSError as e:  # the recording's file
            raise OSError(f'record_path {p["record_path"]!r}: {e.strerror or e}') from None
        self.q: Optional[np.ndarray] = None
        self.velocity = np.zeros(len(self.arm.joints))
        self.puck = self.target = None
        self.objects_frame = base['parent']
        self._arm_dirty = self._objects_dirty = False
        topics, ctl, trainer = p['topics'], p['controller'], p['trainer']
        self.create_subscription(JointState, topics['joint_states'], self.joint_state_callback,
                                 10)
        self.create_subscription(PointStamped, topics['puck_pose'],
                                 partial(self.point_callback, 'puck'), 10)
        self.create_subscription(PointStamped, topics['target_pose'],
                                 partial(self.point_callback, 'target'), LATCHED_QOS)
        self.create_subscription(MarkerArray, f'{ctl}/predicted_paths', self.markers_callback, 1)
        for topic, name in ((topics['plan_time_ms'], '/controller/plan_time_ms'),
                            (f'{ctl}/distance_to_target', '/controller/distance_to_target'),
                            (f'{ctl}/disagreement', '/controller/disagreement')):
            self.create_subscription(Float64, topic, partial(self.value_callback, name), 100)
        # Transient local: a monitor started after a fit (it is not waited for) still gets it.
        self.create_subscription(Float64MultiArray, f'{trainer}/loss', self.loss_callback,
                                 LOSS_QOS)
        self.create_subscription(String, topics['progress'], self.progress_callback,
                                 LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics_callback, 10)
        # Wall time: the view is live even while a lockstep twin's clock stands still.
        self.timer = self.create_timer(1.0 / p['scene_rate_hz'], self.scene_callback,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'live view on ws://{p["host"]}:{self.live.port} (Foxglove: open connection, '
            'layout config/foxglove_layout.json)'
            + recording_note(p['record_path'], self.live.record_path))

    # --- inputs --------------------------------------------------------------------------
    def joint_state_callback(self, msg: JointState):
        index = {n: i for i, n in enumerate(msg.name)}
        if not all(j in index for j in self.arm.joints):
            self.get_logger().warning('joint state without every task joint: ignored',
                                      throttle_duration_sec=5.0)
            return
        self.q = np.array([msg.position[index[j]] for j in self.arm.joints])
        if len(msg.velocity) == len(msg.name):
            self.velocity = np.array([msg.velocity[index[j]] for j in self.arm.joints])
        self._arm_dirty = True

    def point_callback(self, which: str, msg: PointStamped):
        setattr(self, which, (msg.point.x, msg.point.y, msg.point.z))
        self.objects_frame = msg.header.frame_id or self.objects_frame
        self._objects_dirty = True

    def markers_callback(self, msg: MarkerArray):
        channel = self.live.scene['/scene/predicted_paths']
        if not self.live.wanted(channel):
            return
        markers = []
        for m in msg.markers:
            if m.type not in (Marker.LINE_STRIP, Marker.SPHERE_LIST):
                continue
            markers.append({'ns': m.ns, 'frame_id': m.header.frame_id,
                            'kind': 'line' if m.type == Marker.LINE_STRIP else 'spheres',
                            'points': [(pt.x, pt.y, pt.z) for pt in m.points],
                            'scale': m.scale.x,
                            'rgba': (m.color.r, m.color.g, m.color.b, m.color.a)})
        channel.log(live_view.paths_update(markers, live_view.stamp()))

    def value_callback(self, name: str, msg: Float64):
        self.live.json[name].log({'value': float(msg.data)})

    def loss_callback(self, msg: Float64MultiArray, info: MessageInfo):
        if len(msg.data) >= 3:
            epoch, train, val = (float(v) for v in msg.data[:3])
            # At the time the trainer published it: a monitor that starts after a fit gets the
            # trainer's history at once (transient local) and shows it where it happened.
            self.live.json['/trainer/loss'].log(
                {'epoch': epoch, 'train_loss': train, 'val_loss': val},
                log_time=int(info['source_timestamp']) or None)

    def progress_callback(self, msg: String):
        self.live.json['/recipe/progress'].log(msg.data)

    def diagnostics_callback(self, msg: DiagnosticArray):
        self.live.json['/diagnostics'].log({'status': [
            {'name': s.name, 'level': int.from_bytes(s.level, 'little')
             if isinstance(s.level, bytes) else int(s.level), 'message': s.message,
             'values': {kv.key: kv.value for kv in s.values}} for s in msg.status]})

    # --- output ----------------------------------------------------------------------------
    def scene_callback(self):
        """Frames, arm and objects at most at scene_rate_hz, and only what changed."""
        ts = live_view.stamp()
        if self._arm_dirty and self.q is not None:
            self._arm_dirty = False
            if self.live.wanted(self.live.tf):
                self.live.tf.log(self.arm.transforms(self.q, ts))
            if self.live.wanted(self.live.scene['/scene/arm']):
                self.live.scene['/scene/arm'].log(live_view.SceneUpdate(
                    entities=[self.arm.arm_entity(self.q, ts)]))
            if self.live.wanted(self.live.joint_states):
                self.live.joint_states.log(live_view.joint_states(self.arm.joints, self.q,
                                                                  self.velocity, ts))
        if self._objects_dirty:
            self._objects_dirty = False
            channel = self.live.scene['/scene/objects']
            if self.live.wanted(channel):
                channel.log(live_view.objects_update(
                    self.puck, self.target, self.objects_frame,
                    self.params['task']['success_radius_m'], ts))

    def destroy_node(self):
        live = getattr(self, 'live', None)  # None when __init__ failed before it
        if live is not None:
            live.close()
        super().destroy_node()


def main(args=None):
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    run_node(MonitorNode, args)


if __name__ == '__main__':
    main()
