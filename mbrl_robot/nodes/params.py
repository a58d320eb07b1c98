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
"""Declare a node's parameters from the schema (``mbrl_robot/params``), with descriptors.

Every parameter a node reads is declared once in the schema, with its type, default,
description, validation and ``read_only``; :func:`declare_node_parameters` declares all of them on
the node (``ros2 param describe`` shows the description, the range and read-only), so a
``--params-file`` of a profile overrides only what it names and nothing is repeated in code.
Writable parameters are applied through :func:`add_live_parameters`: the schema's validation runs
in the on-set callback (a rejected value leaves the node unchanged), the node's ``apply`` in the
post-set callback.
"""

import math
from typing import Any, Callable, Dict, List, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_robot.core.schema import (all_parameter_names, BUILTIN, check_value, flatten,
                                    load_schema, ParamDict, suggest, to_param_dict, unflatten)

ROS_TYPES = {
    'bool': Parameter.Type.BOOL, 'int': Parameter.Type.INTEGER, 'double': Parameter.Type.DOUBLE,
    'string': Parameter.Type.STRING, 'bool_array': Parameter.Type.BOOL_ARRAY,
    'int_array': Parameter.Type.INTEGER_ARRAY, 'double_array': Parameter.Type.DOUBLE_ARRAY,
    'string_array': Parameter.Type.STRING_ARRAY,
}


def descriptor(name: str, spec: Dict[str, Any]) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of one schema entry (description, read_only, type, range)."""
    d = ParameterDescriptor(name=name, description=str(spec['description']),
                            read_only=bool(spec['read_only']),
                            type=ROS_TYPES[spec['type']].value)
    rules = spec.get('validation') or {}
    constraints = [f'{rule} {arg}' for rule, arg in rules.items()]
    if constraints:
        d.additional_constraints = '; '.join(constraints)
    if 'bounds<>' in rules and spec['type'] in ('int', 'double'):
        lo, hi = rules['bounds<>']
        if spec['type'] == 'int':
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif math.isfinite(lo) and math.isfinite(hi):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                         to_value=float(hi), step=0.0)]
    return d


def declare_node_parameters(node: Node, node_name: Optional[str] = None) -> ParamDict:
    """Declare every schema parameter of ``node_name`` on ``node`` and return the values in force.

    Args:
        node: the node to declare on.
        node_name: the schema to use (default: ``node.get_name()``, which a ``__node``
            remapping changes, so the schema is normally named explicitly).

    Returns:
        The nested values after overrides, as a :class:`~mbrl_robot.config.ParamDict`: reading
        a name the schema does not declare raises ``KeyError`` naming the node and the name.

    Raises:
        ValueError: an override (``--params-file``, ``-p``) of the wrong type or outside the
            schema's validation, or one that no node's schema declares (a misspelt name, which
            rclpy would ignore); the message names the node, the parameter and what is allowed,
            as ``mbrl_run``'s check does before it starts a node.
    """
    node_name = node_name or node.get_name()
    # What a launch file or ``ros2 run`` passed (rclpy keeps it until a parameter is declared).
    overrides = {n: _plain(p.value)
                 for n, p in getattr(node, '_parameter_overrides', {}).items()}
    known = all_parameter_names()
    for name, value in overrides.items():
        # A profile's /** block reaches every node, so a name another node declares is fine.
        # rclpy reads an empty block ('topics: {}') as a parameter without a value: no name.
        if (value is not None and name not in known and name not in BUILTIN
                and not name.startswith(RCLPY_PREFIXES)):
            raise ValueError(f'{node_name}: unknown parameter {name!r}' + suggest(
                name, list(load_schema(node_name)) + list(BUILTIN)))
    values = {}
    for name, spec in load_schema(node_name).items():
        default = spec['default_value']
        kind = ROS_TYPES[spec['type']]
        try:
            if name in overrides and overrides[name] != []:
                # The schema's check first (its message, and ints of doubles accepted, as in
                # mbrl_run); the checked value is declared in place of the raw override.
                value = node.declare_parameter(
                    name, check_value(node_name, name, spec, overrides[name]),
                    descriptor(name, spec), ignore_override=True).value
            else:
                value = node.declare_parameter(name, kind if default == [] else default,
                                               descriptor(name, spec)).value
        except ParameterException as e:
            raise ValueError(f'{node_name}: parameter {name}: {e}') from None
        values[name] = check_value(node_name, name, spec, _plain(value))
    return to_param_dict(unflatten(values), node_name)


# Parameters rclpy declares or reads itself, besides BUILTIN (use_sim_time).
RCLPY_PREFIXES = ('qos_overrides.', 'start_type_description_service')


def _plain(value: Any) -> Any:
    """A parameter value with arrays as lists (rclpy gives tuples or ``array.array``)."""
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value


def add_live_parameters(node: Node, node_name: str, params: ParamDict,
                        apply: Callable[[Dict[str, Any]], None],
                        validate: Optional[Callable[[Dict[str, Any]], str]] = None) -> None:
    """Validate and apply ``ros2 param set`` of the node's writable parameters.

    The on-set callback checks every new value against the schema and, with the other values in
    force, with ``validate(new_nested_params) -> '' or reason`` (cross-parameter rules); it never
    changes state. The post-set callback updates ``params`` in place and calls
    ``apply(changed)`` with the changed values as a nested dict.

    Args:
        node: the node.
        node_name: its schema.
        params: the dict :func:`declare_node_parameters` returned (kept current).
        apply: called with the nested dict of the changed schema parameters.
        validate: optional cross-parameter check.
    """
    schema = load_schema(node_name)

    def on_set(changes: List[Parameter]) -> SetParametersResult:
        new = flatten(params)
        for p in changes:
            if p.name not in schema:
                continue
            try:
                new[p.name] = check_value(node_name, p.name, schema[p.name], _plain(p.value))
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
        reason = validate(unflatten(new)) if validate else ''
        return SetParametersResult(successful=not reason, reason=reason or '')

    def post_set(changes: List[Parameter]) -> None:
        changed = {}
        for p in changes:
            if p.name in schema:
                changed[p.name] = check_value(node_name, p.name, schema[p.name], _plain(p.value))
        if not changed:
            return
        for name, value in changed.items():
            block = params
            *parents, leaf = name.split('.')
            for part in parents:
                block = block[part]
            block[leaf] = value
        apply(unflatten(changed))

    node.add_on_set_parameters_callback(on_set)
    node.add_post_set_parameters_callback(post_set)


def schema_descriptions(node_name: str) -> Dict[str, str]:
    """``{parameter name: description}`` of a node's schema."""
    return {name: spec['description'] for name, spec in load_schema(node_name).items()}
