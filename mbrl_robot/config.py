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
"""One source of configuration: ROS 2 parameter files read by nodes, the runner and the library.

A parameter file is keyed by node name, then ``ros__parameters``; nested mappings are ROS 2's
dotted parameter names (``planner: {horizon: 25}`` is the parameter ``planner.horizon``). The
wildcard key ``/**`` holds what every node shares (the task definition, the joint names), exactly
as ``ros2 run ... --ros-args --params-file`` applies it.
"""

import copy
from typing import Any, Dict

import yaml

from mbrl_robot.paths import config_path

WILDCARD = '/**'
DEFAULT_PROFILE = 'lecture'


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_param_file(name_or_path: str) -> Dict[str, Dict[str, Any]]:
    """Load a ROS 2 parameter file into ``{node_name: nested parameter dict}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a ROS 2 parameter file.
    """
    path = config_path(name_or_path)
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f'{path}: not valid YAML: {e}') from e
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a mapping of node names')
    out = {}
    for node, body in raw.items():
        if not isinstance(body, dict) or 'ros__parameters' not in body:
            raise ValueError(f'{path}: node {node!r} has no ros__parameters block')
        out[node.lstrip('/')] = body['ros__parameters'] or {}
    if '**' in out:
        out[WILDCARD] = out.pop('**')
    return out


def write_param_file(params: Dict[str, Dict[str, Any]], path: str) -> None:
    """Write ``{node_name: nested parameter dict}`` as a ROS 2 parameter file (the inverse of
    :func:`load_param_file`)."""
    with open(path, 'w') as f:
        yaml.safe_dump({node: {'ros__parameters': p} for node, p in params.items()}, f,
                       sort_keys=False)


def node_params(name_or_path: str, node: str, base: str = DEFAULT_PROFILE) -> Dict[str, Any]:
    """Parameters of one node exactly as the node sees them under ``--params-file``.

    A node declares the ``base`` (lecture) profile's values as defaults, then the file's ``/**``
    block and its own block override them; this returns that same merge as a nested dict.
    """
    def block(params):
        return _merge(params.get(WILDCARD, {}), params.get(node, {}))

    merged = block(load_param_file(base)) if base else {}
    return _merge(merged, block(load_param_file(name_or_path)))


def flatten(params: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    """``{'planner': {'horizon': 25}}`` -> ``{'planner.horizon': 25}`` (ROS 2 parameter names)."""
    flat = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`flatten`."""
    out: Dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        parts = name.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
