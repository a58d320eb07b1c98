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
"""Static checks of the launch files, for machines without ``ros2 launch``.

Each launch file is parsed (not run): it defines ``generate_launch_description``, declares a
description for every argument, starts only executables that setup.py installs, under node
names that the default profile configures, and that profile file exists.
"""

import ast
import glob
import os
import re

import pytest
import yaml

from mbrl_robot.config import load_param_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILES = sorted(glob.glob(os.path.join(ROOT, 'launch', '*.launch.py')))


def console_scripts():
    with open(os.path.join(ROOT, 'setup.py')) as f:
        return dict(re.findall(r"'(\w+) = (mbrl_robot[\w.]+:main)'", f.read()))


def launch_tree(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def literal_kwargs(call):
    return {kw.arg: kw.value.value for kw in call.keywords
            if isinstance(kw.value, ast.Constant)}


def started_nodes(tree):
    """(executable, name) of every mbrl_robot node the file starts."""
    out = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        if call.func.id == 'node' and len(call.args) >= 2:
            out.append((call.args[0].value, call.args[1].value))
        elif call.func.id == 'Node':
            kw = literal_kwargs(call)
            # The files' own node() helper passes the names through; its calls are found above.
            if kw.get('package') == 'mbrl_robot' and 'executable' in kw:
                out.append((kw['executable'], kw['name']))
    return out


def declared_arguments(tree):
    args = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'DeclareLaunchArgument':
            args[call.args[0].value] = literal_kwargs(call)
    return args


def test_there_are_launch_files_for_twin_real_arm_and_monitoring():
    names = {os.path.basename(p) for p in LAUNCH_FILES}
    assert {'recipe_twin.launch.py', 'real_arm.launch.py', 'monitor.launch.py'} <= names


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=os.path.basename)
def test_launch_file_is_consistent_with_setup_and_config(path):
    tree = launch_tree(path)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == ['generate_launch_description']
    args = declared_arguments(tree)
    assert args, 'no DeclareLaunchArgument'
    for name, kw in args.items():
        assert kw.get('description'), f'launch argument {name!r} has no description'
    scripts = console_scripts()
    nodes = started_nodes(tree)
    if 'profile' in args:
        profile = args['profile']['default_value']
        params = load_param_file(os.path.join(ROOT, 'config', profile + '.yaml'))
        lecture = load_param_file(os.path.join(ROOT, 'config', 'lecture.yaml'))
        for executable, name in nodes:
            assert executable in scripts, f'{executable} is not a console script'
            module = scripts[executable].split(':')[0]
            assert os.path.isfile(os.path.join(ROOT, *module.split('.')) + '.py')
            assert name in lecture, f'node {name!r} has no block in config/lecture.yaml'
        for block in params:
            assert block == '/**' or block in lecture, f'{profile}.yaml configures {block!r}'
    else:
        assert not nodes


def test_monitor_uses_the_shipped_urdf_and_rviz_config():
    with open(os.path.join(ROOT, 'launch', 'monitor.launch.py')) as f:
        text = f.read()
    for name in re.findall(r"'(\w+\.(?:urdf|rviz))'", text):
        assert glob.glob(os.path.join(ROOT, '*', name)), f'{name} is not shipped'
    with open(os.path.join(ROOT, 'config', 'mbrl.rviz')) as f:
        rviz = yaml.safe_load(f)
    topics = [d.get('Topic', {}).get('Value') for d in rviz['Visualization Manager']['Displays']]
    assert '/controller/predicted_paths' in topics


@pytest.mark.parametrize('profile', sorted(glob.glob(os.path.join(ROOT, 'config', '*.yaml'))),
                         ids=os.path.basename)
def test_every_profile_only_names_parameters_the_lecture_profile_declares(profile):
    from mbrl_robot.core.schema import flatten
    lecture = load_param_file(os.path.join(ROOT, 'config', 'lecture.yaml'))
    for block, params in load_param_file(profile).items():
        known = set(flatten(lecture.get(block, {}))) | set(flatten(lecture['/**']))
        if block == '/**':
            known = set().union(*(flatten(v) for v in lecture.values()))
        unknown = set(flatten(params)) - known - {'use_sim_time'}
        assert not unknown, f'{os.path.basename(profile)}: {block} names unknown {unknown}'
