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

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.linter
@pytest.mark.flake8
def test_flake8():
    # ament_flake8 where ROS 2 is installed; the same rules through plain flake8 elsewhere.
    try:
        from ament_flake8.main import main_with_errors
    except ImportError:
        result = subprocess.run([sys.executable, '-m', 'flake8', '--config',
                                 os.path.join(ROOT, 'setup.cfg'), 'mbrl_robot', 'test',
                                 'benchmarks', 'launch', 'setup.py'],
                                cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, 'flake8 errors:\n' + result.stdout + result.stderr
        return
    rc, errors = main_with_errors(argv=[])
    assert rc == 0, 'Found %d code style errors / warnings:\n' % len(errors) + '\n'.join(errors)
