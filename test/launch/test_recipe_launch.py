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
"""launch_testing test of recipe_twin.launch.py with the CI smoke profile.

Collected on machines with a ROS 2 install (``colcon test``); skipped where ``launch_testing``
is not installed (the pip-only set-up, whose runner test/nodes/test_graph.py covers the graph).
"""

import os
import tempfile
import unittest

import pytest

launch_testing = pytest.importorskip('launch_testing')

import launch  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

from mbrl_robot.paths import share_dir  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    run_dir = tempfile.mkdtemp(prefix='mbrl_launch_test_')
    recipe = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share_dir(), 'launch',
                                                   'recipe_twin.launch.py')),
        launch_arguments={'profile': 'ci_smoke', 'run_dir': run_dir, 'device': 'cpu'}.items())
    return launch.LaunchDescription([recipe, launch_testing.actions.ReadyToTest()]), {
        'run_dir': run_dir}


class TestRecipeRuns(unittest.TestCase):

    def test_summary_is_written(self, proc_output, run_dir):
        proc_output.assertWaitFor('summary:', timeout=900, stream='stderr')
        self.assertTrue(os.path.isfile(os.path.join(run_dir, 'summary.json')))


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_every_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
