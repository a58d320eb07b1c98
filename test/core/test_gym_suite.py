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
"""``benchmarks/gym_suite.py``'s options: overrides of the MBPO and ensemble blocks are checked
against the schema, and runs with changed settings get table rows of their own."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import gym_suite  # noqa: E402


def test_overrides_parse_json_values_and_refuse_unknown_keys():
    keys = gym_suite.schema_keys('mbpo')
    assert gym_suite.parse_overrides(['rollouts_per_step=400', 'real_ratio=0.05',
                                      'member=ts'], keys) == {
        'rollouts_per_step': 400, 'real_ratio': 0.05, 'member': 'ts'}
    with pytest.raises(ValueError, match='rollouts_per_stp'):
        gym_suite.parse_overrides(['rollouts_per_stp=400'], keys)
    with pytest.raises(ValueError, match='KEY=VALUE'):
        gym_suite.parse_overrides(['ensemble_size'], gym_suite.schema_keys('model'))


def test_unknown_override_key_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        gym_suite.main(['--methods', 'mbpo', '--mbpo-set', 'nope=1'])
    assert e.value.code == 2
    assert "'nope=1': expected KEY=VALUE" in capsys.readouterr().err


def test_changed_settings_get_their_own_table_row(tmp_path):
    base = {'env': 'InvertedPendulum-v5', 'seed': 0, 'budget': 3000, 'final_return': 300.0,
            'curve': [[1000, 10.0], [3000, 300.0]], 'random_return': 3.5,
            'total_wall_s': 10.0}
    size = {'population_size': 100, 'iterations': 3, 'particles': 5}
    pets = {**base, 'method': 'pets', 'planner': {**size, 'return_mean': True}}
    lines = [pets, {**pets, 'variant': gym_suite.variant('pets', 45, {}, {}),
                    'final_return': 1000.0},
             {**base, 'method': 'mbpo', 'variant': gym_suite.variant(
                 'mbpo', 0, {'rollouts_per_step': 400}, {'ensemble_size': 7})},
             # before the mean became the default a line had no return_mean: the best sample
             {**pets, 'planner': size, 'final_return': 20.0}]
    path = tmp_path / 'runs.jsonl'
    path.write_text(''.join(json.dumps(ln) + '\n' for ln in lines))
    rows = gym_suite.table([str(path)]).splitlines()[2:]
    assert len(rows) == 4
    assert '| mbrl_robot PETS |' in rows[0] and '300.0 (300.0)' in rows[0]
    assert '| mbrl_robot PETS (horizon 45) |' in rows[1] and '1000.0 (1000.0)' in rows[1]
    assert 'MBPO (rollouts_per_step=400, ensemble_size=7)' in rows[2]
    assert '| mbrl_robot PETS (executes the best sample) |' in rows[3] and '20.0' in rows[3]


def test_runs_stopped_unimproved_under_the_old_patience_rule_get_their_own_row(tmp_path):
    base = {'env': 'InvertedPendulum-v5', 'seed': 0, 'budget': 5000, 'method': 'pets',
            'curve': [[1000, 10.0], [3000, 300.0]], 'random_return': 3.5,
            'total_wall_s': 10.0,
            'planner': {'population_size': 100, 'iterations': 3, 'particles': 5,
                        'return_mean': True}}
    patience = gym_suite.TRAINING['patience']
    # Some early lines stored the fits as the list's repr.
    stalled_fits = [{'n_transitions': 5, 'epochs': 50}, {'n_transitions': 40, 'epochs': patience}]
    old_stalled = {**base, 'final_return': 100.0, 'fits': str(stalled_fits)}
    old_fine = {**base, 'seed': 1, 'final_return': 200.0,
                'fits': [{'n_transitions': 5, 'epochs': patience + 1}]}
    new = {**base, 'seed': 2, 'final_return': 900.0,
           'fits': [{'n_transitions': 5, 'epochs': patience, 'members_improved': 2}]}
    assert gym_suite.stopped_unimproved(old_stalled)
    assert not gym_suite.stopped_unimproved(old_fine) and not gym_suite.stopped_unimproved(new)
    path = tmp_path / 'runs.jsonl'
    path.write_text(''.join(json.dumps(ln) + '\n' for ln in (old_stalled, old_fine, new)))
    rows = gym_suite.table([str(path)]).splitlines()[2:]
    assert len(rows) == 2
    assert '| mbrl_robot PETS (patience from the first epoch) |' in rows[0] and '100.0' in rows[0]
    assert '| mbrl_robot PETS |' in rows[1] and '200.0, 900.0' in rows[1]
