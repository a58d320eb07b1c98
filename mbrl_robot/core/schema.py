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
"""The parameter schema: every parameter of the stack declared once, read without ROS.

The schema (``mbrl_robot/params/<node>.yaml`` plus ``shared.yaml``, in the format of
ros2_controllers' generate_parameter_library) declares every parameter once: ``type``,
``default_value``, ``description``, optional ``validation`` and ``read_only``. A node file lists
under ``uses_shared`` the shared parameters (or blocks of them) that node declares too.

The core's factories take their defaults from here (:func:`schema_defaults`), the nodes declare
it with descriptors (``mbrl_robot/nodes/params.py``), and ``mbrl_robot/config.py`` merges ROS 2
parameter files (profiles) over it.
"""

import copy
import difflib
import math
import os
from typing import Any, Dict, Iterable, Optional

import yaml

WILDCARD = '/**'
NODES = ('twin', 'buffer', 'trainer', 'controller', 'recipe', 'monitor')
# The schema files are package data beside the core: mbrl_robot/params/<node>.yaml.
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'params')
SHARED = 'shared'
# Parameters every ROS 2 node has: allowed in any block, never in the schema.
BUILTIN = {'use_sim_time': 'bool'}
TYPES = ('bool', 'int', 'double', 'string', 'bool_array', 'int_array', 'double_array',
         'string_array')
SPEC_KEYS = ('type', 'default_value', 'description', 'read_only', 'validation')

_schemas: Dict[str, Dict[str, Dict[str, Any]]] = {}


class ParamDict(dict):
    """A node's nested parameters; reading a name the schema does not declare raises KeyError.

    ``p['planner']['horizon']`` works as with a dict; ``p['planner']['horizn']`` raises a
    ``KeyError`` naming the node and the full parameter name, so a node cannot read (and
    silently default) a parameter that no profile can set.
    """

    def __init__(self, *args, node: str = '', prefix: str = '', **kwargs):
        super().__init__(*args, **kwargs)
        self.node = node
        self.prefix = prefix

    def __missing__(self, key):
        raise KeyError(f'{self.node}: parameter {self.prefix}{key!r} is not declared in its '
                       f'schema (mbrl_robot/params/{self.node}.yaml)')

    def get(self, key, default=None):
        """Like ``self[key]``: an undeclared name raises instead of returning ``default``."""
        return self[key]

    def __reduce__(self):
        return (_param_dict, (self.node, self.prefix, dict(self)))


def _param_dict(node: str, prefix: str, items: Dict[str, Any]) -> 'ParamDict':
    return ParamDict(items, node=node, prefix=prefix)


def to_param_dict(nested: Dict[str, Any], node: str, prefix: str = '') -> ParamDict:
    """Wrap a nested dict (and every nested block) in :class:`ParamDict`."""
    return ParamDict({k: to_param_dict(v, node, f'{prefix}{k}.') if isinstance(v, dict) else v
                      for k, v in nested.items()}, node=node, prefix=prefix)


# --- the schema ------------------------------------------------------------------------------
def _schema_file(name: str) -> Dict[str, Any]:
    path = os.path.join(SCHEMA_DIR, f'{name}.yaml')
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict) or name not in raw:
        raise ValueError(f'{path}: expected a top-level key {name!r}')
    return raw


def _flatten_specs(tree: Dict[str, Any], where: str, prefix: str = '') -> Dict[str, Dict]:
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if not isinstance(value, dict):
            raise ValueError(f'{where}: {name} is neither a parameter nor a block')
        if 'type' in value:
            unknown = set(value) - set(SPEC_KEYS)
            if unknown:
                raise ValueError(f'{where}: {name} has unknown keys {sorted(unknown)}')
            flat[name] = value
        else:
            flat.update(_flatten_specs(value, where, name + '.'))
    return flat


def load_schema(node: str) -> Dict[str, Dict[str, Any]]:
    """The flat schema of one node: ``{dotted name: spec}`` with its shared parameters.

    Each spec is ``{type, default_value, description, read_only, validation}`` (``read_only``
    and ``validation`` filled in). ``node`` may also be ``'shared'``.

    Raises:
        ValueError: unknown node, or a malformed schema file.
    """
    if node in _schemas:
        return _schemas[node]
    if node != SHARED and node not in NODES:
        raise ValueError(f'unknown node {node!r}; nodes: {list(NODES)}')
    raw = _schema_file(node)
    where = f'mbrl_robot/params/{node}.yaml'
    own = _flatten_specs(raw[node] or {}, where)
    specs: Dict[str, Dict[str, Any]] = {}
    if node != SHARED:
        shared = load_schema(SHARED)
        for entry in raw.get('uses_shared', []):
            picked = {n: s for n, s in shared.items() if n == entry or n.startswith(entry + '.')}
            if not picked:
                raise ValueError(f'{where}: uses_shared names {entry!r}, not in shared.yaml')
            specs.update(picked)
    for name, spec in own.items():
        if name in specs:
            raise ValueError(f'{where}: {name} is declared in shared.yaml already')
        specs[name] = spec
    for name, spec in specs.items():
        spec.setdefault('read_only', False)
        spec.setdefault('validation', {})
        for key in ('type', 'default_value', 'description'):
            if key not in spec or spec[key] is None:
                raise ValueError(f'{where}: {name} has no {key}')
        if spec['type'] not in TYPES:
            raise ValueError(f'{where}: {name} has type {spec["type"]!r}; types: {TYPES}')
        spec['default_value'] = check_value(node, name, spec, spec['default_value'])
    _schemas[node] = specs
    return specs


def schema_defaults(node: str, block: Optional[str] = None) -> Dict[str, Any]:
    """The schema defaults of ``node`` as a nested dict (of one ``block`` if given)."""
    nested = unflatten({n: copy.deepcopy(s['default_value'])
                        for n, s in load_schema(node).items()})
    return nested[block] if block else nested


def all_parameter_names() -> Dict[str, str]:
    """``{dotted name: first node declaring it}`` over every node."""
    names: Dict[str, str] = {}
    for node in NODES:
        for name in load_schema(node):
            names.setdefault(name, node)
    return names


# --- values ------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return {bool: 'bool', int: 'int', float: 'double', str: 'string', list: 'list',
            dict: 'mapping', type(None): 'null'}.get(type(value), type(value).__name__)


def _scalar(node: str, name: str, kind: str, value: Any) -> Any:
    def fail(hint: str = ''):
        raise ValueError(f'{node}: parameter {name} = {value!r} is a {_type_name(value)}, '
                         f'expected {kind}{hint}')
    if kind == 'bool':
        if not isinstance(value, bool):
            fail(' (true or false)')
        return value
    if kind == 'int':
        if isinstance(value, bool) or not isinstance(value, int):
            fail(' (an integer written without a decimal point or exponent, e.g. 1000)'
                 if isinstance(value, (float, str)) else '')
        if not -2 ** 63 <= value < 2 ** 63:  # rcl would take it for a double
            raise ValueError(f'{node}: parameter {name} = {value} is outside the 64-bit '
                             'integers a ROS 2 parameter holds')
        return value
    if kind == 'double':
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(' (a number, e.g. 0.5 or 1.0e-3)')
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any double
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f'{node}: parameter {name} = {value} is not allowed: must be a '
                             'finite number')
        return value
    if not isinstance(value, str):
        fail()
    return value


def check_value(node: str, name: str, spec: Dict[str, Any], value: Any) -> Any:
    """Type-check, coerce (int -> double) and validate one value against its spec.

    Returns:
        The value as the node declares it (ints of double parameters become floats).

    Raises:
        ValueError: naming the node, the parameter, the bad value and what is allowed.
    """
    kind = spec['type']
    if kind.endswith('_array'):
        if not isinstance(value, list):
            raise ValueError(f'{node}: parameter {name} = {value!r} is a {_type_name(value)}, '
                             f'expected a list ({kind})')
        if not value:  # rcl cannot tell an empty list's type: the node would read None
            raise ValueError(f'{node}: parameter {name} = [] is not allowed: a ROS 2 parameter '
                             'cannot be an empty list' + (" (give [''] for none)"
                                                          if kind == 'string_array' else ''))
        value = [_scalar(node, f'{name}[{i}]', kind[:-6], v) for i, v in enumerate(value)]
    else:
        value = _scalar(node, name, kind, value)
    for rule, arg in (spec.get('validation') or {}).items():
        problem = _violation(rule, arg, value)
        if problem:
            raise ValueError(f'{node}: parameter {name} = {value!r} is not allowed: {problem}')
    return value


def _violation(rule: str, arg: Any, value: Any) -> str:
    """'' when ``value`` passes one generate_parameter_library validator, else what it needs."""
    items = value if isinstance(value, list) else [value]
    if rule == 'bounds<>':
        lo, hi = arg
        return '' if all(lo <= v <= hi for v in items) else f'must be within [{lo}, {hi}]'
    if rule in ('gt<>', 'gt_eq<>', 'lt<>', 'lt_eq<>'):
        limit = arg[0]
        op = {'gt<>': (lambda v: v > limit, '>'), 'gt_eq<>': (lambda v: v >= limit, '>='),
              'lt<>': (lambda v: v < limit, '<'), 'lt_eq<>': (lambda v: v <= limit, '<=')}[rule]
        return '' if all(op[0](v) for v in items) else f'must be {op[1]} {limit}'
    if rule == 'one_of<>':
        return '' if value in arg[0] else f'must be one of {arg[0]}'
    if rule == 'subset_of<>':
        return '' if all(v in arg[0] for v in items) else f'every element must be in {arg[0]}'
    if rule == 'fixed_size<>':
        return '' if len(value) == arg else f'must have exactly {arg} elements'
    if rule == 'not_empty<>':
        return '' if len(value) else 'must not be empty'
    if rule == 'unique<>':
        return '' if len(set(value)) == len(value) else 'must not repeat an element'
    if rule == 'sorted<>':  # [low, high] (this project's; not generate_parameter_library's)
        return '' if value == sorted(value) else 'must be [low, high] with low <= high'
    raise ValueError(f'unknown validation {rule!r}')


def suggest(name: str, candidates: Iterable[str]) -> str:
    """'; did you mean X?' for the nearest candidate (difflib), or ''."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:
        # A misspelt last part of a long name: compare the parts after the block.
        tail = name.rsplit('.', 1)[-1]
        by_tail = {c.rsplit('.', 1)[-1]: c for c in candidates}
        close = [by_tail[t] for t in difflib.get_close_matches(tail, list(by_tail), n=1,
                                                               cutoff=0.75)]
    return f'; did you mean {close[0]!r}?' if close else ''


def validate_params(node: str, params: Dict[str, Any], source: str = '',
                    allowed: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Check a nested parameter block of ``node`` against its schema.

    Args:
        node: node name (``'/**'`` checks against every node's parameters).
        params: nested values.
        source: where they come from, for the error message (a file name).
        allowed: the flat schema to check against (default: ``node``'s).

    Returns:
        The flat, coerced values.

    Raises:
        ValueError: an unknown name (with the nearest valid one), a wrong type or a value outside
            the validation.
    """
    if allowed is None:
        if node == WILDCARD:
            allowed = {n: load_schema(owner)[n] for n, owner in all_parameter_names().items()}
        else:
            allowed = load_schema(node)
    where = f'{source}: ' if source else ''
    out = {}
    for name, value in flatten(params).items():
        if name in BUILTIN:
            out[name] = _scalar(node, name, BUILTIN[name], value)
            continue
        if name not in allowed:
            raise ValueError(f'{where}{node}: unknown parameter {name!r}'
                             + suggest(name, list(allowed) + list(BUILTIN)))
        try:
            out[name] = check_value(node, name, allowed[name], value)
        except ValueError as e:
            raise ValueError(f'{where}{e}') from None
    return out


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
