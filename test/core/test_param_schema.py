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
"""The parameter schema (mbrl_robot/params): complete, the only source of defaults, and strict.

Every parameter has a type, a description and a default that passes its own validation; every
shipped profile validates; wrong types, values outside the validation and misspelt names fail
with a message naming the parameter, the value and what is allowed (or the nearest name).
"""

import glob
import os

import pytest

from mbrl_robot.config import load_param_file, node_params, validate_profile, write_param_file
from mbrl_robot.core.schema import (flatten, load_schema, NODES, ParamDict, schema_defaults,
                                    to_param_dict, TYPES, validate_params)
from mbrl_robot.paths import config_path

PROFILES = sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(os.path.dirname(config_path('lecture')),
                                                  '*.yaml')))


@pytest.mark.parametrize('node', NODES + ('shared',))
def test_every_parameter_has_type_description_and_default(node):
    schema = load_schema(node)
    assert schema
    for name, spec in schema.items():
        assert spec['type'] in TYPES, name
        assert isinstance(spec['description'], str) and len(spec['description']) > 5, name
        assert spec['default_value'] is not None, name
        assert isinstance(spec['read_only'], bool), name


@pytest.mark.parametrize('profile', PROFILES)
def test_every_profile_validates(profile):
    validate_profile(profile)
    for node in NODES:
        node_params(profile, node)


def test_lecture_profile_states_the_schema_defaults():
    for node in NODES:
        lecture = flatten(node_params('lecture', node))
        lecture.pop('use_sim_time', None)
        defaults = flatten(schema_defaults(node))
        differ = {k for k in defaults if lecture[k] != defaults[k]}
        # The lecture states propagation: mean, the schema's default. Its lockstep twin waits
        # 60 s for a command, not 2: a lecture-size plan takes seconds on a CPU.
        assert differ <= {'planner.propagation', 'lockstep_stop_after_s'}, (node, differ)


@pytest.mark.parametrize('value,needle', [
    ('abc', "planner.population_size = 'abc' is a string, expected int"),
    ('1e3', 'expected int (an integer written without a decimal point'),
    (1000.0, 'expected int'),
    (True, 'expected int'),
    (0, 'planner.population_size = 0 is not allowed: must be within [1, 100000]'),
])
def test_wrong_types_and_values_are_rejected_with_the_name(value, needle):
    with pytest.raises(ValueError) as e:
        validate_params('controller', {'planner': {'population_size': value}})
    assert needle in str(e.value)
    assert str(e.value).startswith('controller: ')


@pytest.mark.parametrize('node,params,needle', [
    # Each passed mbrl_run's checks before session 44.
    ('twin', {'task': {'success_radius_m': float('inf')}},
     'task.success_radius_m = inf is not allowed: must be a finite number'),
    ('controller', {'planner': {'terminal_weight': -float('inf')}},
     'planner.terminal_weight = -inf is not allowed: must be a finite number'),
    ('controller', {'home_joint_positions': [50.0] + [0.0] * 6},
     'must be within [-3.054, 3.054]'),
    ('twin', {'physics': {'puck_gap_range_m': [0.5, -0.1]}},
     'physics.puck_gap_range_m = [0.5, -0.1] is not allowed: must be [low, high] with low <= '
     'high'),
    ('trainer', {'distill': {'hidden_sizes': [-5, 0]}}, 'must be within [1, 65536]'),
    # rcl would read it as a double, and the node then say "is a double, expected int".
    ('trainer', {'training': {'seed': 10 ** 23}},
     'training.seed = 100000000000000000000000 is outside the 64-bit integers'),
    # rcl cannot type an empty list: the node would read None.
    ('recipe', {'baselines': []},
     "baselines = [] is not allowed: a ROS 2 parameter cannot be an empty list (give [''] for "
     'none)'),
])
def test_values_no_node_can_use_are_rejected_with_the_name(node, params, needle):
    with pytest.raises(ValueError) as e:
        validate_params(node, params)
    assert str(e.value).startswith(f'{node}: ') and needle in str(e.value), str(e.value)


def test_one_of_and_fixed_size():
    with pytest.raises(ValueError, match=r"planner.name = 'cme' is not allowed: must be one of"):
        validate_params('controller', {'planner': {'name': 'cme'}})
    with pytest.raises(ValueError, match='task.joints .* must have exactly 7 elements'):
        validate_params('controller', {'task': {'joints': ['a', 'b']}})
    assert validate_params('controller', {'disagreement_stop': 1}) == {'disagreement_stop': 1.0}


def test_unknown_names_suggest_the_nearest(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter 'planner.populaton_size'; did you "
                                         "mean 'planner.population_size'"):
        validate_params('controller', {'planner': {'populaton_size': 5}})
    path = str(tmp_path / 'bad.yaml')
    write_param_file({'/**': {'task': {'episode_step': 5}}}, path)
    with pytest.raises(ValueError, match="did you mean 'task.episode_steps'"):
        validate_profile(path)
    with pytest.raises(ValueError, match="did you mean 'task.episode_steps'"):
        node_params(path, 'recipe')
    write_param_file({'controler': {'mode': 'planner'}}, path)
    with pytest.raises(ValueError, match="unknown node 'controler'; did you mean 'controller'"):
        validate_profile(path)


def test_profiles_override_schema_defaults_only(tmp_path):
    path = str(tmp_path / 'p.yaml')
    write_param_file({'controller': {'planner': {'horizon': 7}}}, path)
    p = node_params(path, 'controller')
    assert p['planner']['horizon'] == 7
    assert p['planner']['population_size'] == schema_defaults('controller')['planner'][
        'population_size']
    # A wildcard parameter the node does not declare is not the node's.
    write_param_file({'/**': {'run_dir': 'x', 'task': {'episode_steps': 3}}}, path)
    assert 'run_dir' not in node_params(path, 'controller')
    assert node_params(path, 'recipe')['run_dir'] == 'x'
    assert node_params(path, 'controller')['task']['episode_steps'] == 3


def test_param_dict_names_the_node_and_the_parameter():
    p = to_param_dict(schema_defaults('controller'), 'controller')
    assert isinstance(p['planner'], ParamDict)
    assert p['planner']['horizon'] == p['planner'].get('horizon')
    with pytest.raises(KeyError, match="controller: parameter planner.'horizn' is not declared"):
        p['planner']['horizn']
    with pytest.raises(KeyError, match='not declared'):
        p.get('planner_name', 'cem')


def test_factories_take_their_defaults_from_the_schema():
    from mbrl_robot.core.models.factory import MODEL_DEFAULTS, TRAINING_DEFAULTS
    from mbrl_robot.core.planning.factory import DEFAULTS
    assert DEFAULTS == {k: v for k, v in schema_defaults('controller', 'planner').items()
                        if k != 'name'}
    assert MODEL_DEFAULTS == schema_defaults('trainer', 'model')
    assert TRAINING_DEFAULTS == schema_defaults('trainer', 'training')
    assert MODEL_DEFAULTS['hidden_size'] == node_params('lecture', 'trainer')['model'][
        'hidden_size']


def differences(a: str, b: str) -> set:
    """(node, parameter) pairs whose values differ between profiles ``a`` and ``b``."""
    out = set()
    for node in NODES:
        pa, pb = flatten(node_params(a, node)), flatten(node_params(b, node))
        out |= {(node, k) for k in set(pa) | set(pb) if pa.get(k) != pb.get(k)}
    return out


def test_push_anywhere_is_twin_realistic_but_where_it_says():
    """config/push_anywhere.yaml says "everything else is twin_realistic.yaml's": the variant,
    the 200-step episodes and four CEM iterations, nothing more (until session 35 it also
    planned with the schema's ``fused`` backend, not the ``compiled`` one its results had)."""
    steps = {(node, 'task.episode_steps') for node in NODES if node != 'monitor'}
    assert differences('twin_realistic', 'push_anywhere') == steps | {
        ('twin', 'variant'), ('controller', 'planner.iterations')}


def test_real_arm_runs_the_realistic_twins_realtime_controller():
    """A physical arm gets the controller and model the realistic twin was measured with (plan
    ahead, latency compensation, the compiled 60-candidate planner, its final mean), not the
    schema's lecture-size planner without either."""
    arm = flatten(node_params('real_arm', 'controller'))
    twin = flatten(node_params('twin_realistic', 'controller'))
    for key in twin:
        if key.startswith(('planner.', 'latency.')) or key == 'plan_ahead':
            assert arm[key] == twin[key], key
    assert arm['plan_ahead'] and arm['latency.compensation']
    assert arm['torch_threads'] == twin['torch_threads'] == 1
    assert node_params('real_arm', 'trainer')['model'] == node_params('twin_realistic',
                                                                      'trainer')['model']


def test_lecture_realtime_is_the_lecture_in_real_time():
    """config/lecture_realtime.yaml (what ``run_recipe.sh lecture`` runs where CUDA is) is the
    lecture's recipe with a realtime twin, the realtime controller and the captured planner:
    nothing else differs from lecture.yaml."""
    assert differences('lecture', 'lecture_realtime') == {
        ('twin', 'mode'), ('controller', 'wait_for_fresh_state'), ('controller', 'plan_ahead'),
        ('controller', 'latency.compensation'), ('controller', 'planner.backend')}
    assert node_params('lecture_realtime', 'controller')['planner']['backend'] == 'cuda_graph'


def test_a_profile_may_use_yaml_anchors_and_merge_keys(tmp_path):
    """The loader that refuses a key given twice still takes '<<: *anchor' (PyYAML merges it)."""
    path = tmp_path / 'anchors.yaml'
    path.write_text('controller:\n  ros__parameters:\n    planner: &plan {horizon: 5, '
                    'iterations: 2}\ntrainer:\n  ros__parameters:\n    planner: {<<: *plan, '
                    'horizon: 7}\n')
    params = load_param_file(str(path))
    assert params['trainer']['planner'] == {'horizon': 7, 'iterations': 2}
    assert params['controller']['planner'] == {'horizon': 5, 'iterations': 2}
