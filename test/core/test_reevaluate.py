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
"""``benchmarks/reevaluate.py``: the copy keeps the training and drops the evaluation, so a
resumed run evaluates the same final model again; unfinished runs and existing outputs are
refused with one line."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import reevaluate  # noqa: E402


def _episode(index, stage, seed, success=False, final=0.1):
    return {'index': index, 'stage': stage, 'seed': seed, 'success': success,
            'final_distance': final, 'min_distance': final / 2, 'steps': 3}


def _run(tmp_path, complete=True):
    run = tmp_path / 'run'
    (run / 'models').mkdir(parents=True)
    (run / 'logs').mkdir()
    (run / 'models' / 'v2.pt').write_text('weights')
    (run / 'logs' / 'twin.log').write_text('old log')
    (run / 'params.yaml').write_text('recipe:\n  ros__parameters: {}\n')
    episodes = [_episode(0, 'random', 0), _episode(2, 'mpc', 1, True, 0.03),
                _episode(4, 'eval_planner', 2001, True, 0.02),
                _episode(3, 'eval_planner', 2000)]
    (run / 'summary.json').write_text(json.dumps({
        'episodes': episodes, 'trainings': [{'index': 1}, {'index': 5}],
        'complete': complete}))
    return run, episodes


def test_the_copy_keeps_training_and_drops_the_evaluation(tmp_path):
    run, episodes = _run(tmp_path)
    out = tmp_path / 'again'
    source = reevaluate.prepare(str(run), str(out))
    summary = json.loads((out / 'summary.json').read_text())
    assert [e['stage'] for e in summary['episodes']] == ['random', 'mpc']
    assert summary['trainings'] == [{'index': 1}, {'index': 5}]
    assert summary['complete'] is False
    assert (out / 'models' / 'v2.pt').read_text() == 'weights'
    assert not (out / 'logs').exists() and not (out / 'params.yaml').exists()
    assert open(source).read() == (run / 'params.yaml').read_text()
    # The old run is untouched.
    assert json.loads((run / 'summary.json').read_text())['episodes'] == episodes


def test_the_line_lists_the_planner_evaluation_in_seed_order(tmp_path):
    _, episodes = _run(tmp_path)
    out = reevaluate.line({'episodes': episodes}, 'hold', ['a=b'], 'dir')
    assert [e['seed'] for e in out['per_episode']] == [2000, 2001]
    assert (out['episodes'], out['successes'], out['success_rate']) == (2, 1, 0.5)
    assert out['mean_final_distance'] == pytest.approx(0.06)
    assert out['method'] == 'planner'
    assert reevaluate.line({'episodes': episodes}, '', [], 'dir', 'eval_zero')['episodes'] == 0


def test_unfinished_runs_and_existing_outputs_are_refused(tmp_path):
    run, _ = _run(tmp_path, complete=False)
    with pytest.raises(ValueError, match='did not finish'):
        reevaluate.prepare(str(run), str(tmp_path / 'again'))
    run2, _ = _run(tmp_path / 'b')
    (tmp_path / 'taken').mkdir()
    with pytest.raises(ValueError, match='exists'):
        reevaluate.prepare(str(run2), str(tmp_path / 'taken'))
    assert reevaluate.main([str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x')]) == 2


def test_a_bad_set_is_refused_before_anything_is_copied(tmp_path):
    """mbrl_run refused it only after the copy was made, which then blocked the next try
    ("exists")."""
    run, _ = _run(tmp_path)
    with pytest.raises(ValueError, match="controller: unknown parameter 'nosuch'"):
        reevaluate.prepare(str(run), str(tmp_path / 'again'), ['controller.nosuch=1'])
    assert not (tmp_path / 'again').exists()
