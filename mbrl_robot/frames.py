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
"""The published frame tree, without ROS: ``world`` -> the URDF's root link -> its links.

The arm's URDF is rooted at ``iiwa_base``; the fixed frame of the scene (``world``: puck,
target and the controller's markers) sits above it through a static transform whose values come
from the profile (``monitor.base_frame``: the twin's base is at the world origin, a real arm's is
where it stands). ``launch/monitor.launch.py`` starts a ``static_transform_publisher`` with
:func:`static_transform_args`; the Foxglove live view publishes the same transform.
"""

import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from mbrl_robot.config import node_params
from mbrl_robot.paths import urdf_path


def urdf_tree(urdf_file: Optional[str] = None) -> Tuple[str, Dict[str, str]]:
    """The URDF's root link and ``{child link: parent link}`` of every joint.

    Raises:
        ValueError: the links do not form one tree (no single root, or a link with two parents).
    """
    root = ET.parse(urdf_file or urdf_path()).getroot()
    links = {link.attrib['name'] for link in root.findall('link')}
    parents: Dict[str, str] = {}
    for joint in root.findall('joint'):
        child = joint.find('child').attrib['link']
        if child in parents:
            raise ValueError(f'URDF: link {child!r} has two parent joints')
        parents[child] = joint.find('parent').attrib['link']
    roots = sorted(links - set(parents))
    if len(roots) != 1:
        raise ValueError(f'URDF: expected one root link, found {roots}')
    return roots[0], parents


def base_frame(profile: str = 'cpu', urdf_file: Optional[str] = None) -> Dict[str, Any]:
    """``{parent, child, xyz, rpy}`` of the static base transform of a profile."""
    base = node_params(profile, 'monitor')['base_frame']
    root, _ = urdf_tree(urdf_file)
    return {'parent': base['parent'], 'child': root, 'xyz': list(base['xyz']),
            'rpy': list(base['rpy'])}


def static_transform_args(profile: str = 'cpu', urdf_file: Optional[str] = None) -> List[str]:
    """tf2_ros ``static_transform_publisher`` arguments of the base transform."""
    b = base_frame(profile, urdf_file)
    (x, y, z), (roll, pitch, yaw) = b['xyz'], b['rpy']
    return ['--x', str(x), '--y', str(y), '--z', str(z), '--roll', str(roll), '--pitch',
            str(pitch), '--yaw', str(yaw), '--frame-id', b['parent'],
            '--child-frame-id', b['child']]


def frame_tree(profile: str = 'cpu', urdf_file: Optional[str] = None) -> Dict[str, str]:
    """``{frame: parent}`` of everything published: the base transform and the URDF's joints."""
    b = base_frame(profile, urdf_file)
    _, parents = urdf_tree(urdf_file)
    return {**parents, b['child']: b['parent']}


def root_of(tree: Dict[str, str], frame: str) -> str:
    """The root reached from ``frame`` going up ``tree`` (``frame`` itself if it has no parent).

    Raises:
        ValueError: the tree has a cycle.
    """
    seen = set()
    while frame in tree:
        if frame in seen:
            raise ValueError(f'frame tree has a cycle through {frame!r}')
        seen.add(frame)
        frame = tree[frame]
    return frame
