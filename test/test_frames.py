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
"""Static checks that rviz and rqt see one frame tree, for machines without ROS tools.

``world`` -> ``iiwa_base`` (static transform from the profile) -> the URDF's links -> ``tool_tip``
in the twin and the real-arm launches; every frame a node stamps its messages with, and every
frame ``config/mbrl.rviz`` uses, is in that tree; the launch files start what ``package.xml``
declares.
"""

import ast
import glob
import os
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from mbrl_robot.frames import frame_tree, root_of, static_transform_args, urdf_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = [os.path.splitext(os.path.basename(p))[0]
            for p in sorted(glob.glob(os.path.join(ROOT, 'config', '*.yaml')))]


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def stamped_frames():
    """Frame ids the nodes write into message headers (literals and *_FRAME constants)."""
    frames = set()
    for path in glob.glob(os.path.join(ROOT, 'mbrl_robot', 'nodes', '*.py')):
        text = read(path)
        constants = dict(re.findall(r"^(\w+_FRAME) = '([\w/]+)'", text, re.M))
        frames |= set(re.findall(r"frame_id = '([\w/]+)'", text))
        frames |= {constants[c] for c in re.findall(r'frame_id = (\w+_FRAME)', text)}
    return frames


def rviz_frames():
    """Every frame named in the rviz config (Fixed Frame, Reference Frame, ...)."""
    out = set()

    def walk(tree):
        if isinstance(tree, dict):
            for key, value in tree.items():
                if 'Frame' in key and isinstance(value, str) and not value.startswith('<'):
                    out.add(value)
                walk(value)
        elif isinstance(tree, list):
            for value in tree:
                walk(value)
    walk(yaml.safe_load(read('config', 'mbrl.rviz')))
    return out


@pytest.mark.parametrize('profile', PROFILES)
def test_one_tree_from_world_to_the_tool_tip(profile):
    root, parents = urdf_tree()
    assert root == 'iiwa_base'
    tree = frame_tree(profile)
    assert tree['iiwa_base'] == 'world'
    for link in set(parents) | {root}:
        assert root_of(tree, link) == 'world', link
    chain, frame = [], 'tool_tip'
    while frame in tree:
        chain.append(frame)
        frame = tree[frame]
    assert chain[-1] == 'iiwa_base' and frame == 'world'
    args = static_transform_args(profile)
    assert args[args.index('--frame-id') + 1] == 'world'
    assert args[args.index('--child-frame-id') + 1] == 'iiwa_base'


def test_every_stamped_and_rviz_frame_is_in_the_tree():
    tree = frame_tree('cpu')
    used = stamped_frames() | rviz_frames()
    assert 'world' in used  # markers, puck, target, the fixed frame
    for frame in used:
        assert frame == 'world' or root_of(tree, frame) == 'world', frame
    assert yaml.safe_load(read('config', 'mbrl.rviz'))['Visualization Manager'][
        'Global Options']['Fixed Frame'] == 'world'


def test_the_live_view_publishes_the_same_tree():
    pytest.importorskip('foxglove')
    from mbrl_robot import live_view
    from mbrl_robot.paths import urdf_path
    arm = live_view.ArmFrames(urdf_path(), [f'iiwa_joint_{i}' for i in range(1, 8)])
    published = {child: parent for parent, child, _, _ in arm.transform_list([0.0] * 7)}
    tree = frame_tree('cpu')
    for child in published:
        assert root_of(published, child) == 'world'
        assert root_of(tree, child) == 'world'


def launched_packages(path):
    tree = ast.parse(read(path))
    packages = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'Node':
            for kw in call.keywords:
                if kw.arg == 'package' and isinstance(kw.value, ast.Constant):
                    packages.add(kw.value.value)
    return packages


def test_the_launches_publish_the_base_transform_and_declare_what_they_start():
    monitor = read('launch', 'monitor.launch.py')
    assert 'static_transform_args(profile)' in monitor
    assert "executable='static_transform_publisher'" in monitor
    assert "'robot_state_publisher'" in monitor and 'mbrl.rviz' in monitor
    for name in ('recipe_twin.launch.py', 'real_arm.launch.py'):
        text = read('launch', name)
        assert "'monitor.launch.py'" in text and "'profile': profile" in text, name
        assert "node('monitor_node', 'monitor'" in text, name
    declared = {e.text for e in ET.fromstring(read('package.xml')).findall('exec_depend')}
    for path in glob.glob(os.path.join(ROOT, 'launch', '*.launch.py')):
        missing = launched_packages(path) - declared - {'mbrl_robot'}
        assert not missing, f'{os.path.basename(path)} starts {missing}, not in package.xml'
