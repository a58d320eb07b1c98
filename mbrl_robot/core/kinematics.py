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
"""Batched forward kinematics of a URDF serial chain in torch (any device, differentiable).

Only what a planner needs: the position of one link frame (the pusher's ``tool_tip``) for a batch
of joint vectors. The URDF is parsed with ``xml.etree``: each joint on the path from the root link
to the tip contributes ``T_origin(xyz, rpy) @ R(axis, q)``; fixed joints contribute their origin.

Shapes: ``B`` any leading batch dims, ``J`` actuated joints on the chain (7 for the iiwa).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple
import xml.etree.ElementTree as ET

import torch

_SUPPORTED = ('revolute', 'continuous', 'prismatic', 'fixed')


def _floats(text: Optional[str], n: int, what: str) -> List[float]:
    if text is None:
        return [0.0] * n
    values = [float(v) for v in text.split()]
    if len(values) != n:
        raise ValueError(f'URDF: {what} needs {n} numbers, got {text!r}')
    return values


def _rpy_matrix(r: float, p: float, y: float) -> List[List[float]]:
    """URDF fixed-axis roll-pitch-yaw: R = Rz(y) @ Ry(p) @ Rx(r)."""
    cr, sr, cp, sp, cy, sy = (math.cos(r), math.sin(r), math.cos(p), math.sin(p),
                              math.cos(y), math.sin(y))
    return [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr]]


class SerialChainFK:
    """Forward kinematics from the root link of a URDF to one tip link.

    Args:
        urdf_file: path of the URDF.
        tip_link: name of the link whose frame origin is returned.
        joint_names: the order of ``q``'s columns; default: the movable joints root -> tip.
            Must name exactly the movable joints on the chain.
        device: torch device of the constants.
        dtype: torch dtype of the constants (float32 or float64).

    Raises:
        ValueError: the tip link is missing, the chain has a joint type other than revolute,
            continuous, prismatic or fixed, or ``joint_names`` differ from the chain's joints.
    """

    def __init__(self, urdf_file: str, tip_link: str = 'tool_tip',
                 joint_names: Optional[Sequence[str]] = None,
                 device: torch.device = torch.device('cpu'), dtype: torch.dtype = torch.float32):
        root = ET.parse(urdf_file).getroot()
        by_child: Dict[str, ET.Element] = {}
        for joint in root.findall('joint'):
            by_child[joint.find('child').attrib['link']] = joint
        links = {link.attrib['name'] for link in root.findall('link')}
        if tip_link not in links:
            raise ValueError(f'URDF {urdf_file}: no link named {tip_link!r}')
        chain = []
        link = tip_link
        while link in by_child:
            joint = by_child[link]
            chain.append(joint)
            link = joint.find('parent').attrib['link']
        chain.reverse()
        self.root_link = link
        # The link after each joint of the chain, root -> tip (the frames of link_poses).
        self.chain_links: Tuple[str, ...] = tuple(j.find('child').attrib['link'] for j in chain)
        self.tip_link = tip_link
        rots, trans, axes, kinds, names = [], [], [], [], []
        for joint in chain:
            kind = joint.attrib['type']
            if kind not in _SUPPORTED:
                raise ValueError(f'URDF: joint {joint.attrib["name"]!r} has unsupported type '
                                 f'{kind!r} (supported: {", ".join(_SUPPORTED)})')
            origin = joint.find('origin')
            xyz = _floats(None if origin is None else origin.attrib.get('xyz'), 3, 'origin xyz')
            rpy = _floats(None if origin is None else origin.attrib.get('rpy'), 3, 'origin rpy')
            rots.append(_rpy_matrix(*rpy))
            trans.append(xyz)
            if kind == 'fixed':
                axes.append([0.0, 0.0, 0.0])
                kinds.append(0)
            else:
                axis_el = joint.find('axis')
                # URDF default axis is x.
                axis = [1.0, 0.0, 0.0] if axis_el is None else _floats(
                    axis_el.attrib.get('xyz', '1 0 0'), 3, 'axis xyz')
                norm = math.sqrt(sum(a * a for a in axis))
                if norm == 0.0:
                    raise ValueError(f'URDF: joint {joint.attrib["name"]!r} has a zero axis')
                axes.append([a / norm for a in axis])
                kinds.append(2 if kind == 'prismatic' else 1)
                names.append(joint.attrib['name'])
        self.chain_joint_names: Tuple[str, ...] = tuple(names)
        if joint_names is None:
            order = list(range(len(names)))
        else:
            joint_names = list(joint_names)
            if sorted(joint_names) != sorted(names):
                raise ValueError(f'joint_names {joint_names} differ from the movable joints '
                                 f'{list(names)} on the chain {self.root_link} -> {tip_link}')
            order = [joint_names.index(n) for n in names]
        self.joint_names: Tuple[str, ...] = tuple(joint_names or names)
        self._order = order
        self._kinds = kinds
        self._rot = torch.tensor(rots, dtype=dtype, device=device)      # (N, 3, 3)
        self._trans = torch.tensor(trans, dtype=dtype, device=device)   # (N, 3)
        self._axis = torch.tensor(axes, dtype=dtype, device=device)     # (N, 3)

    @property
    def num_joints(self) -> int:
        """Number of movable joints (columns of ``q``)."""
        return len(self.chain_joint_names)

    def to(self, device: torch.device = None, dtype: torch.dtype = None) -> 'SerialChainFK':
        """Move the constants to ``device``/``dtype`` in place; returns self."""
        for name in ('_rot', '_trans', '_axis'):
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        return self

    def tip_pose(self, q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rotation and position of the tip link in the root frame.

        Args:
            q: (B..., J) joint positions (rad, or m for prismatic joints), ordered like
                ``joint_names``.

        Returns:
            (B..., 3, 3) rotation and (B..., 3) position.

        Raises:
            ValueError: the last dim of ``q`` is not ``J``.
        """
        rot = pos = None
        for rot, pos in self._walk(q):
            pass
        return rot, pos

    def link_poses(self, q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rotation and position of every link of the chain in the root frame, in one pass.

        Args:
            q: (B..., J) joint positions, ordered like ``joint_names``.

        Returns:
            (B..., N, 3, 3) rotations and (B..., N, 3) positions of ``chain_links`` (N links,
            the last one the tip).

        Raises:
            ValueError: the last dim of ``q`` is not ``J``.
        """
        rots, poss = zip(*self._walk(q))
        return torch.stack(rots, dim=-3), torch.stack(poss, dim=-2)

    def _walk(self, q: torch.Tensor):
        """Yield the rotation (B..., 3, 3) and position (B..., 3) of each chain link in turn."""
        if q.shape[-1] != self.num_joints:
            raise ValueError(f'q must have {self.num_joints} joints in its last dim, '
                             f'got shape {tuple(q.shape)}')
        q = q.to(dtype=self._rot.dtype, device=self._rot.device)
        batch = q.shape[:-1]
        rot = torch.eye(3, dtype=q.dtype, device=q.device).expand(*batch, 3, 3)
        pos = torch.zeros(*batch, 3, dtype=q.dtype, device=q.device)
        k = 0
        for i, kind in enumerate(self._kinds):
            # Joint origin: p += R t, R = R R_origin; then the joint's own motion.
            pos = pos + rot @ self._trans[i]
            rot = rot @ self._rot[i]
            if kind == 1:
                rot = rot @ _axis_angle(self._axis[i], q[..., self._order[k]])
            elif kind == 2:
                pos = pos + (rot @ self._axis[i]) * q[..., self._order[k]].unsqueeze(-1)
            k += kind != 0
            yield rot, pos

    def tip_position(self, q: torch.Tensor) -> torch.Tensor:
        """Tip position (B..., 3) in the root frame for q (B..., J)."""
        return self.tip_pose(q)[1]

    __call__ = tip_position


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation matrices (B..., 3, 3) about a unit ``axis`` (3,) by ``angle`` (B...)."""
    x, y, z = axis[0], axis[1], axis[2]
    c = torch.cos(angle)
    s = torch.sin(angle)
    t = 1.0 - c
    rows = [
        torch.stack([t * x * x + c, t * x * y - s * z, t * x * z + s * y], dim=-1),
        torch.stack([t * x * y + s * z, t * y * y + c, t * y * z - s * x], dim=-1),
        torch.stack([t * x * z - s * y, t * y * z + s * x, t * z * z + c], dim=-1),
    ]
    return torch.stack(rows, dim=-2)
