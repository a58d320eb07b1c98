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
"""Import boundaries of the core, each checked in a fresh interpreter.

The controller's step must not drag in the training stack (gymnasium, SB3, MBPO), and every core
module must import without ROS, the simulator, the nodes or the profile files.
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest

import mbrl_robot.core

REPO = Path(__file__).resolve().parents[2]
CORE = Path(mbrl_robot.core.__file__).resolve().parent
TRAINING_STACK = ('gymnasium', 'stable_baselines3', 'mbrl_robot.core.algorithms.mbpo')
BLOCKED = ('rclpy', 'mbrl_robot.sim', 'mbrl_robot.nodes', 'mbrl_robot.config',
           'mbrl_robot.runner')
KNOWN_EXCEPTIONS = set()


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; its stdout."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    out = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=str(REPO), env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _core_modules():
    """Every module under ``mbrl_robot/core``, by walking the files (nothing imported)."""
    names = []
    for path in sorted(CORE.rglob('*.py')):
        parts = ('mbrl_robot', 'core') + path.relative_to(CORE).with_suffix('').parts
        names.append('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))
    return names


@pytest.mark.parametrize('module', ['mbrl_robot.core.control', 'mbrl_robot.core.policy',
                                    'mbrl_robot.core.tasks.push'])
def test_control_step_does_not_import_the_training_stack(module):
    loaded = json.loads(_run(f'''
        import json, sys
        import {module}
        print(json.dumps([m for m in {TRAINING_STACK!r} if m in sys.modules]))
        '''))
    assert loaded == [], f'importing {module} loads {loaded}'


def test_every_core_module_imports_without_ros_sim_nodes_or_config():
    """Every core module imports with ROS absent (``sys.modules['rclpy'] = None``) and the
    simulator, nodes, profile files and runner blocked, and none of them is even tried: a module
    that caught the ImportError and went on would still be reported, by the attempts."""
    modules = _core_modules()
    assert 'mbrl_robot.core.algorithms.mbpo' in modules and 'mbrl_robot.core' in modules
    assert 'mbrl_robot.core.algorithms.recipe' in modules
    out = json.loads(_run(f'''
        import importlib, json, sys
        BLOCKED = {BLOCKED!r}
        sys.modules['rclpy'] = None  # ROS absent: ``import rclpy`` raises ImportError
        attempts = []

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + '.') for b in BLOCKED):
                    attempts.append(name)
                    raise ImportError('blocked by test_imports: ' + name)
                return None

        sys.meta_path.insert(0, Blocker())
        failed, tried = {{}}, {{}}
        for name in {modules!r}:
            before = len(attempts)
            try:
                importlib.import_module(name)
            except ImportError as e:
                failed[name] = repr(e)
            if len(attempts) > before:
                tried[name] = attempts[before:]
        loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and any(
            m == b or m.startswith(b + '.') for b in BLOCKED))
        print(json.dumps({{'failed': failed, 'tried': tried, 'loaded': loaded,
                          'imported': [m for m in {modules!r} if m in sys.modules]}}))
        '''))
    unexpected = {k: v for k, v in out['failed'].items() if k not in KNOWN_EXCEPTIONS}
    assert unexpected == {}, unexpected
    tried = {k: v for k, v in out['tried'].items() if k not in KNOWN_EXCEPTIONS}
    assert tried == {}, f'core modules that try to import ROS, the sim, nodes or runner: {tried}'
    assert out['loaded'] == [], out['loaded']
    assert sorted(out['imported']) == sorted(set(modules) - set(out['failed']))
