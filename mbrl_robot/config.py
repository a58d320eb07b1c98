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
"""Profiles: ROS 2 parameter files that override the parameter schema (``core/schema.py``).

A parameter file (``config/<profile>.yaml``) is keyed by node name, then ``ros__parameters``;
nested mappings are ROS 2's dotted parameter names (``planner: {horizon: 25}`` is the parameter
``planner.horizon``). The wildcard key ``/**`` holds what every node shares, exactly as
``ros2 run ... --ros-args --params-file`` applies it. A profile only overrides schema defaults;
:func:`node_params` returns the merge, validated (unknown names, wrong types and values outside
the validation raise ``ValueError`` naming the parameter).
"""

import argparse
import copy
from typing import Any, Dict, List, Optional

import yaml

from mbrl_robot.core.schema import (BUILTIN, load_schema, NODES, suggest, unflatten,
                                    validate_params, WILDCARD)
from mbrl_robot.paths import config_path

DEFAULT_PROFILE = 'lecture'


def number_argument(kind, low, inclusive: bool):
    """An argparse type: a ``kind`` number above ``low`` (or equal, when ``inclusive``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'{text!r} is not {"an integer" if kind is int else "a number"}') from None
        if not (value >= low if inclusive else value > low) or value != value:
            raise argparse.ArgumentTypeError(
                f'{text} must be {">=" if inclusive else ">"} {low}')
        return value
    return parse


def profile_argument(name_or_path: str) -> str:
    """An argparse ``type`` for a ``--profile``: the name, once the file is found and valid;
    else one line (``argparse.ArgumentTypeError``) before any work starts."""
    try:
        validate_profile(name_or_path)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name_or_path


def check_node_names(params: Dict[str, Dict[str, Any]], source: str) -> None:
    """Raise ``ValueError`` for a block whose node no schema declares (a misspelt name would
    otherwise be ignored, its whole block with it), with the nearest name."""
    for node in params:
        if node != WILDCARD and node not in NODES:
            raise ValueError(f'{source}: unknown node {node!r}' + suggest(node, NODES)
                             + f' (nodes: {list(NODES)}; a block applies to its node in any '
                             'namespace)')


def validate_profile(name_or_path: str) -> None:
    """Check every block of a parameter file (node names, parameter names, types, values)."""
    params = load_param_file(name_or_path)
    check_node_names(params, name_or_path)
    for node, block in params.items():
        validate_params(node, block, source=name_or_path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys in a mapping without a word: here it is an
    error (a profile's second ``controller:`` block would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':  # '<<: *anchor': PyYAML merges it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: construct_mapping says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f'{key!r} given twice in one mapping', key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --- files -------------------------------------------------------------------------------------
def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(dict(base))
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
    try:
        with open(path, encoding='utf-8') as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not a UTF-8 text file ({e.reason} at byte {e.start})') from e
    except yaml.YAMLError as e:
        # One line: PyYAML's message spans several ("while parsing ...", "in <file>, line ...").
        where = getattr(e, 'problem_mark', None)
        at = f' at line {where.line + 1}, column {where.column + 1}' if where else ''
        what = getattr(e, 'problem', None) or str(e).splitlines()[0]
        raise ValueError(f'{path}: not valid YAML{at}: {what}') from e
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a mapping of node names')
    out, keys = {}, {}
    for node, body in raw.items():
        if not isinstance(node, str):
            raise ValueError(f'{path}: {node!r} is not a node name')
        if not isinstance(body, dict) or 'ros__parameters' not in body:
            raise ValueError(f'{path}: node {node!r} has no ros__parameters block')
        block = body['ros__parameters'] or {}
        if not isinstance(block, dict):
            raise ValueError(f'{path}: node {node!r}: ros__parameters is a '
                             f'{type(block).__name__}, not a mapping of parameters')
        # '/**/twin' (the node in any namespace, as mbrl_run writes it) is the twin's block.
        name = node[len('/**/'):] if node.startswith('/**/') else node.lstrip('/')
        name = WILDCARD if name == '**' else name
        if name in keys:
            raise ValueError(f'{path}: two blocks for node {name!r}: {keys[name]!r} and '
                             f'{node!r} (give it one)')
        keys[name], out[name] = node, block
    return out


def write_param_file(params: Dict[str, Dict[str, Any]], path: str,
                     keys: Optional[Dict[str, str]] = None) -> None:
    """Write ``{node_name: nested parameter dict}`` as a ROS 2 parameter file (the inverse of
    :func:`load_param_file`).

    Args:
        params: the blocks.
        path: the file to write.
        keys: node name -> key in the file (e.g. ``'/**/twin'``: the twin in any namespace).
    """
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    keys = keys or {}
    with open(path, 'w') as f:
        yaml.safe_dump({keys.get(node, node): {'ros__parameters': plain(p)}
                        for node, p in params.items()}, f, sort_keys=False)


def node_params(name_or_path: str, node: str, base: str = '',
                overrides: Optional[Dict[str, Any]] = None,
                overrides_source: str = 'overrides') -> Dict[str, Any]:
    """Parameters of one node exactly as the node sees them under ``--params-file``.

    The schema's defaults, then (if given) the ``base`` profile, then the file's ``/**`` block
    and its ``node`` block, then ``overrides`` (nested); every layer is validated. Wildcard
    parameters the node does not declare are left out (the node ignores them), except
    ``use_sim_time``.

    Raises:
        ValueError: an unknown node or parameter, a wrong type, a value outside the validation.
    """
    schema = load_schema(node)
    flat = {n: copy.deepcopy(s['default_value']) for n, s in schema.items()}
    layers: List[tuple] = []
    for profile in ([base] if base else []) + [name_or_path]:
        params = load_param_file(profile)
        layers.append((profile, WILDCARD, params.get(WILDCARD, {})))
        layers.append((profile, node, params.get(node, {})))
    if overrides:
        layers.append((overrides_source, node, overrides))
    for source, block, values in layers:
        checked = validate_params(block, values, source=source)
        if block == WILDCARD:
            checked = {n: v for n, v in checked.items() if n in schema or n in BUILTIN}
        flat.update(checked)
    return unflatten(flat)
