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
"""Export stored transitions as a rosbag2 (MCAP storage) bag of standard ROS 2 messages.

Pure Python through ``rosbags`` (no ROS install): the buffer node's ``~/export`` service writes
its store with it, and any MCAP reader (Foxglove, ``ros2 bag``, ``mcap``) opens the result.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mbrl_robot.core.buffer.storage import TransitionRecords


def export_mcap(rec: TransitionRecords, path: str, joints: List[str], controller_name: str,
                max_joint_speed: float, topics: Optional[Dict[str, str]] = None,
                arms: Sequence[str] = ('',)) -> int:
    """Write transitions as a rosbag2 (MCAP storage) bag of standard messages.

    Per transition, at the stamp of s: ``/joint_states`` (sensor_msgs/JointState: q, qd of s),
    ``/puck/pose`` and ``/target/pose`` (geometry_msgs/PointStamped, frame ``world``),
    ``/<controller_name>/commands`` (std_msgs/Float64MultiArray, ``a * max_joint_speed`` rad/s);
    at the stamp of s': ``/reward`` (``export_reward_topic``, std_msgs/Float64). Where the next
    transition does not continue from s' (episode end, gap), s' itself is written too, so every
    trajectory is whole.
    Log and header times are the rows' stamps. With several arms (``arms``, the buffer's
    ``arm_namespaces``), each arm's transitions go to its own topics (``/arm0/joint_states``, ...)
    and its trajectories are followed on their own.

    Args:
        rec: float64 records, ``TransitionStore.records(dtype=np.float64)``.
        path: bag directory to create (must not exist).
        joints: the 7 joint names, in state order.
        controller_name: prefix of the commands topic.
        max_joint_speed: rad/s of action 1.
        topics: names for joint_states, puck_pose, target_pose, reward (default: the schema's;
            written under /).
        arms: namespace of each arm index in ``rec.arm`` ('' = under /).

    Returns:
        Number of messages written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores

    topics = topics or {}
    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    JointState = t['sensor_msgs/msg/JointState']
    PointStamped = t['geometry_msgs/msg/PointStamped']
    Header = t['std_msgs/msg/Header']
    Time = t['builtin_interfaces/msg/Time']
    Point = t['geometry_msgs/msg/Point']
    Float64 = t['std_msgs/msg/Float64']
    F64Array = t['std_msgs/msg/Float64MultiArray']
    Layout = t['std_msgs/msg/MultiArrayLayout']
    n_joints = len(joints)
    s_dim = rec.batch.obs.shape[1]
    if s_dim < 2 * n_joints + 3:
        raise ValueError(f'state of {s_dim} values cannot hold {n_joints} q, qd and a puck')
    if len(rec) and int(rec.arm.max()) >= len(arms):
        raise ValueError(f'transitions of arm {int(rec.arm.max())}, but only {len(arms)} arm '
                         f'namespaces {list(arms)}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0

    def header(ns: int, frame: str = '') -> Any:
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000),
                      frame_id=frame)

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for arm in sorted(set(rec.arm.tolist())):
            prefix = '/' + arms[arm].strip('/') if arms[arm] else ''
            for key, topic, msgtype in (
                    ('joints', topics.get('joint_states', 'joint_states'), JointState),
                    ('puck', topics.get('puck_pose', 'puck/pose'), PointStamped),
                    ('target', topics.get('target_pose', 'target/pose'), PointStamped),
                    ('cmd', f'{controller_name.strip("/")}/commands', F64Array),
                    ('reward', topics.get('reward', 'reward'), Float64)):
                # A bag holds absolute names: the configured relative names under the root
                # (or under the arm's namespace).
                topic = topic if topic.startswith('/') else f'{prefix}/{topic}'
                conns[arm, key] = (writer.add_connection(topic, msgtype.__msgtype__,
                                                         typestore=store), msgtype.__msgtype__)
        arm = 0

        def write(key: str, ns: int, msg: Any) -> None:
            nonlocal count
            conn, msgtype = conns[arm, key]
            writer.write(conn, ns, store.serialize_cdr(msg, msgtype))
            count += 1

        def write_state(s: np.ndarray, ns: int) -> None:
            write('joints', ns, JointState(
                header=header(ns), name=list(joints), position=s[:n_joints].copy(),
                velocity=s[n_joints:2 * n_joints].copy(), effort=np.zeros(0)))
            puck = s[2 * n_joints:2 * n_joints + 3]
            write('puck', ns, PointStamped(header=header(ns, 'world'),
                                           point=Point(x=puck[0], y=puck[1], z=puck[2])))

        b = rec.batch
        ns_s = np.round(rec.stamp * 1e9).astype(np.int64)
        ns_next = np.round(rec.next_stamp * 1e9).astype(np.int64)
        # Each arm's transitions in seq order, one arm after the other.
        order = np.lexsort((rec.seq, rec.arm))
        for j, i in enumerate(order):
            arm = int(rec.arm[i])
            write_state(b.obs[i], int(ns_s[i]))
            tgt = rec.target[i]
            write('target', int(ns_s[i]), PointStamped(
                header=header(int(ns_s[i]), 'world'), point=Point(x=tgt[0], y=tgt[1], z=tgt[2])))
            write('cmd', int(ns_s[i]), F64Array(layout=Layout(dim=[], data_offset=0),
                                                data=b.act[i] * max_joint_speed))
            write('reward', int(ns_next[i]), Float64(data=float(b.reward[i])))
            k = order[j + 1] if j + 1 < len(order) else None
            continues = (k is not None and rec.arm[k] == arm and rec.episode[k] == rec.episode[i]
                         and rec.step[k] == rec.step[i] + 1)
            if not continues:
                write_state(b.next_obs[i], int(ns_next[i]))
    return count
