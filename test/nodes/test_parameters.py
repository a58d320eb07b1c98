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
"""Every node declares every parameter of the blocks it uses, so no profile value is silently
ignored (a reward term the planner never sees would make the graph differ from the profile)."""

import importlib

import pytest

from mbrl_robot.config import load_param_file, node_params
from mbrl_robot.core.schema import flatten

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('node,blocks', [
    ('controller', ('task', 'planner')),
    ('buffer', ('task',)),
    ('twin', ('task',)),
    ('trainer', ('model', 'training', 'mbpo', 'distill', 'planner')),
    ('recipe', ()),
])
def test_node_declares_every_parameter_of_its_blocks(node, blocks):
    module = importlib.import_module(f'mbrl_robot.nodes.{node}')
    params = node_params('lecture', node, base='')
    wanted = set(flatten({b: params[b] for b in blocks}))
    wanted |= set(flatten(load_param_file('lecture')[node])) - {'use_sim_time'}
    missing = wanted - set(module.DESCRIPTIONS)
    assert not missing, f'{node} does not declare {sorted(missing)}'
