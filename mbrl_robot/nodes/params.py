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
"""Declare a node's parameters from the shipped profile, with descriptors.

The lecture profile (``config/lecture.yaml``) is the single source of defaults: a node declares
every parameter it reads with the profile's value as the typed default, so a ``--params-file``
of another profile overrides only what it names and nothing is repeated in code.
"""

from typing import Any, Dict, Iterable, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from mbrl_robot.config import flatten, node_params, unflatten

DEFAULT_PROFILE = 'lecture'

# Every node that computes the task's reward (controller, buffer) declares all of its terms, so
# the planner optimises and the buffer stores exactly the reward the profile defines.
REWARD_DESCRIPTIONS = {
    'task.reward.tool_shaping_weight': 'Weight of the tool-to-push-point shaping term (0: off).',
    'task.reward.tool_shaping_fade_m': 'The shaping term fades out over this last distance to '
                                       'the target (0: never).',
    'task.reward.action_cost': 'Weight of the -||a||^2 control cost on the normalised action.',
}


def declare_profile_parameters(
        node: Node, node_name: str, descriptions: Dict[str, str],
        read_only: Iterable[str] = (),
        ranges: Optional[Dict[str, Tuple[float, float]]] = None) -> Dict[str, Any]:
    """Declare ``node_name``'s parameters (its block merged over ``/**``) and return their values.

    Args:
        node: the node to declare on.
        node_name: the block of the profile that holds the defaults.
        descriptions: ROS parameter name -> description; every declared name must have one, and
            only described names are declared, so a node states exactly what it reads.
        read_only: structural parameters that cannot change at run time.
        ranges: parameter name -> (low, high) for numeric parameters.

    Returns:
        The nested dict of the values in force after overrides (``{'task': {'joints': ...}}``).
    """
    defaults = flatten(node_params(DEFAULT_PROFILE, node_name, base=''))
    ranges = ranges or {}
    read_only = set(read_only)
    values = {}
    for name, description in descriptions.items():
        if name not in defaults:
            raise KeyError(f'{name!r} is not in config/{DEFAULT_PROFILE}.yaml for {node_name!r}')
        default = defaults[name]
        descriptor = ParameterDescriptor(description=description, read_only=name in read_only)
        if name in ranges:
            low, high = ranges[name]
            if isinstance(default, int) and not isinstance(default, bool):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                         step=1)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(low), to_value=float(high), step=0.0)]
        value = node.declare_parameter(name, default, descriptor).value
        if name in ranges and not ranges[name][0] <= value <= ranges[name][1]:
            raise ValueError(f'parameter {name}={value} outside [{ranges[name][0]}, '
                             f'{ranges[name][1]}]')
        values[name] = value
    return unflatten(values)
