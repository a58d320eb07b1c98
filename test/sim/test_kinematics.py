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
"""Forward kinematics of the URDF chain against PyBullet, and the task's reward on states."""

import numpy as np
import pybullet as pb
import pytest
import torch

from mbrl_robot.core.kinematics import SerialChainFK
from mbrl_robot.core.tasks import distance, push_point, PushTask
from mbrl_robot.paths import urdf_path

JOINTS = [f'iiwa_joint_{i}' for i in range(1, 8)]


@pytest.fixture(scope='module')
def bullet_arm():
    client = pb.connect(pb.DIRECT)
    robot = pb.loadURDF(urdf_path('iiwa7_pusher.urdf'), useFixedBase=True, physicsClientId=client)
    info = [pb.getJointInfo(robot, j, physicsClientId=client)
            for j in range(pb.getNumJoints(robot, physicsClientId=client))]
    joints = {i[1].decode(): i[0] for i in info}
    links = {i[12].decode(): i[0] for i in info}
    yield client, robot, joints, links
    pb.disconnect(client)


def _bullet_tip(bullet_arm, q, names=JOINTS):
    client, robot, joints, links = bullet_arm
    for name, value in zip(names, q):
        pb.resetJointState(robot, joints[name], float(value), physicsClientId=client)
    return np.array(pb.getLinkState(robot, links['tool_tip'], computeForwardKinematics=True,
                                    physicsClientId=client)[4])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_fk_matches_pybullet_below_1mm(bullet_arm, dtype):
    rng = np.random.default_rng(0)
    fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'), 'tool_tip', dtype=dtype)
    assert fk.chain_joint_names == tuple(JOINTS)
    q = rng.uniform(-2.0, 2.0, size=(64, 7))
    ours = fk.tip_position(torch.as_tensor(q)).double().numpy()
    ref = np.stack([_bullet_tip(bullet_arm, row) for row in q])
    assert ours.shape == (64, 3)
    assert np.abs(ours - ref).max() < 1e-3
    # Zero pose: the arm stands upright, tip at 0.34 + 0.40 + 0.40 + 0.126 + 0.12 m.
    np.testing.assert_allclose(fk(torch.zeros(7, dtype=dtype)).numpy(), [0, 0, 1.386], atol=1e-6)


def test_fk_joint_order_and_batch_dims(bullet_arm):
    rng = np.random.default_rng(1)
    names = list(reversed(JOINTS))
    fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'), joint_names=names, dtype=torch.float64)
    q = rng.uniform(-1.5, 1.5, size=(3, 5, 7))
    out = fk(torch.as_tensor(q))
    assert out.shape == (3, 5, 3)
    np.testing.assert_allclose(out[2, 4].numpy(), _bullet_tip(bullet_arm, q[2, 4], names),
                               atol=1e-6)


def test_link_poses_match_pybullet_and_end_at_the_tip(bullet_arm):
    client, robot, joints, links = bullet_arm
    fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'), dtype=torch.float64)
    assert fk.chain_links[0] == 'iiwa_link_0' and fk.chain_links[-1] == 'tool_tip'
    q = np.random.default_rng(2).uniform(-1.5, 1.5, size=7)
    _bullet_tip(bullet_arm, q)
    rot, pos = fk.link_poses(torch.as_tensor(q))
    assert rot.shape == (len(fk.chain_links), 3, 3) and pos.shape == (len(fk.chain_links), 3)
    for i, name in enumerate(fk.chain_links[1:], start=1):
        state = pb.getLinkState(robot, links[name], computeForwardKinematics=True,
                                physicsClientId=client)
        np.testing.assert_allclose(pos[i].numpy(), state[4], atol=1e-6)
        ref = np.array(pb.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        np.testing.assert_allclose(rot[i].numpy(), ref, atol=1e-6)
    tip_rot, tip_pos = fk.tip_pose(torch.as_tensor(q))
    np.testing.assert_allclose(pos[-1].numpy(), tip_pos.numpy(), atol=1e-12)


def test_fk_rejects_bad_input():
    with pytest.raises(ValueError, match='no link'):
        SerialChainFK(urdf_path('iiwa7_pusher.urdf'), 'gripper')
    with pytest.raises(ValueError, match='differ'):
        SerialChainFK(urdf_path('iiwa7_pusher.urdf'), joint_names=JOINTS[:6] + ['elbow'])
    fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'))
    with pytest.raises(ValueError, match='7 joints'):
        fk(torch.zeros(4, 6))


def test_reward_fn_batched_and_shaped():
    task = PushTask(joint_names=JOINTS, tool_shaping_weight=0.0)
    with pytest.raises(RuntimeError, match='set_target'):
        task.reward_fn(torch.zeros(17), torch.zeros(7))
    task.set_target([0.7, 0.1, 0.016])
    obs = torch.zeros(4, 9, 17)
    obs[..., 14:17] = torch.tensor([0.6, 0.1, 0.016])
    r = task.reward_fn(obs, torch.zeros(4, 9, 7))
    assert r.shape == (4, 9)
    torch.testing.assert_close(r, torch.full((4, 9), -0.1))
    # Shaping: the tool tip at the push point costs nothing extra, elsewhere it does.
    shaped = PushTask(joint_names=JOINTS, tool_shaping_weight=2.0, target=[0.7, 0.1, 0.016])
    q = torch.tensor([0.1, 0.8, 0.0, -1.8, 0.0, 0.5, 0.0])
    tip = shaped.tool_tip(torch.cat([q, torch.zeros(10)]))
    puck = tip + torch.tensor([0.045, 0.0, 0.0])
    target = puck + torch.tensor([0.2, 0.0, 0.0])
    shaped.set_target(target.tolist())
    state = torch.cat([q, torch.zeros(7), puck])
    np.testing.assert_allclose(shaped.reward_fn(state, torch.zeros(7)).item(), -0.2, atol=1e-5)
    state_far = state.clone()
    state_far[14] += 0.05  # puck 5 cm further: tool now 5 cm behind the push point
    np.testing.assert_allclose(shaped.reward_fn(state_far, torch.zeros(7)).item(),
                               -0.15 - 2.0 * 0.05, atol=1e-5)


def test_task_validation_and_numpy_helpers():
    with pytest.raises(ValueError):
        PushTask(tool_shaping_weight=-1.0)
    task = PushTask()
    with pytest.raises(ValueError, match='3 finite'):
        task.set_target([0.1, 0.2])
    with pytest.raises(ValueError, match='3 finite'):
        task.set_target([0.1, float('nan'), 0.0])
    obs = np.zeros((2, 17))
    obs[:, 14:17] = [[0.3, 0.4, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(distance(obs, [0.0, 0.0, 0.0]), [0.5, 0.0])
    with pytest.raises(ValueError, match='columns'):
        distance(np.zeros(5), [0, 0, 0])
    task.set_target([0.0, 0.0, 0.0])
    np.testing.assert_array_equal(task.is_success(obs), [False, True])
    np.testing.assert_allclose(push_point([1.0, 0.0, 0.0], [2.0, 0.0, 0.0], 0.1), [0.9, 0, 0])


URDF_TAGS = {'robot', 'link', 'joint', 'material', 'color', 'inertial', 'origin', 'mass',
             'inertia', 'visual', 'collision', 'geometry', 'cylinder', 'sphere', 'box', 'parent',
             'child', 'axis', 'limit', 'dynamics'}


@pytest.mark.parametrize('name', ['iiwa7_pusher.urdf', 'table.urdf', 'puck.urdf'])
def test_urdf_is_plain_tree_with_valid_inertia(name):
    """Only standard URDF tags (robot_state_publisher/rviz read the same file), one tree."""
    import xml.etree.ElementTree as ET
    root = ET.parse(urdf_path(name)).getroot()
    assert {el.tag for el in root.iter()} <= URDF_TAGS
    links = [link.attrib['name'] for link in root.findall('link')]
    assert len(set(links)) == len(links)
    children = [j.find('child').attrib['link'] for j in root.findall('joint')]
    assert len(set(children)) == len(children) and set(children) < set(links)
    assert len(set(links) - set(children)) == 1  # exactly one root
    for inertia in root.iter('inertia'):
        ixx, iyy, izz = (float(inertia.attrib[k]) for k in ('ixx', 'iyy', 'izz'))
        assert ixx + iyy >= izz and iyy + izz >= ixx and ixx + izz >= iyy


def test_urdf_limits_are_the_datasheet_figures():
    import xml.etree.ElementTree as ET
    root = ET.parse(urdf_path('iiwa7_pusher.urdf')).getroot()
    joints = {j.attrib['name']: j for j in root.findall('joint')}
    pos_deg = [170, 120, 170, 120, 170, 120, 175]
    vel_deg = [98, 98, 100, 130, 140, 180, 180]
    offsets = [0.15, 0.19, 0.21, 0.19, 0.21, 0.19, 0.081]
    for i, name in enumerate(JOINTS):
        limit = joints[name].find('limit').attrib
        assert float(limit['upper']) == pytest.approx(np.radians(pos_deg[i]), abs=1e-5)
        assert float(limit['lower']) == pytest.approx(-np.radians(pos_deg[i]), abs=1e-5)
        assert float(limit['velocity']) == pytest.approx(np.radians(vel_deg[i]), abs=1e-5)
        xyz = [float(v) for v in joints[name].find('origin').attrib['xyz'].split()]
        assert np.linalg.norm(xyz) == pytest.approx(offsets[i])
