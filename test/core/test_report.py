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

import hashlib
import json
import os

import numpy as np
import pytest

from mbrl_robot.core.algorithms.mpc_recipe import summarize
from mbrl_robot.core.buffer.assembler import Transition
from mbrl_robot.core.buffer.storage import ACTION_DIM, STATE_DIM, TARGET_DIM, TransitionStore
from mbrl_robot.core.models import GaussianEnsemble
from mbrl_robot.inprocess import run_profile
from mbrl_robot.report import latest_model_dir, main, write_report


def test_report_from_a_smoke_recipe(tmp_path):
    # Goal hold off: every step of the MPC and evaluation episodes is a plan (the whole period
    # for each, so that a loaded machine misses no deadline: the plans take ~10 ms).
    overrides = {'recipe': {'baselines': ['random']},
                 'controller': {'goal_hold': {'enter_radius_m': 0.0},
                                'plan_deadline_fraction': 1.0}}
    summary = run_profile('ci_smoke', overrides=overrides, run_dir=str(tmp_path),
                          log=lambda _: None)
    assert summary['complete']
    assert set(summary['stages']) == {'random', 'mpc', 'eval_planner', 'eval_random'}
    assert summary['plan_latency_ms']['count'] == 2 * 20  # the MPC and the evaluation episode
    path = write_report(str(tmp_path))
    text = open(path).read()
    for stage in summary['stages']:
        assert f'| {stage} |' in text
    # The setup the run used, from its params.yaml: the reward and the planner are stated.
    assert '- Reward: -||puck - target|| - 0.5 ||tool tip - push point||' in text
    assert 'planner cem: H=5, N=50, M=5, I=2' in text and 'goal hold off' in text
    for name in ('learning.png', 'plan_latency.png', 'ensemble_loss.png'):
        assert os.path.getsize(tmp_path / name) > 1000
        assert f'![{name}]({name})' in text


@pytest.mark.parametrize('summary,needle', [
    (None, 'No such file or directory: {run}/summary.json'),
    ('{"stages": ', 'Expecting value'),
    ('{"complete": true}', "ValueError: summary.json has no 'wall_s'"),
    ('[]', 'ValueError: summary.json holds a list, not a run summary'),
    # Damaged fields of a real summary: each named (before, an AttributeError's traceback,
    # "string indices must be integers" or an inf that only the histogram refused).
    ({'stages': []}, 'ValueError: summary.json: stages is not a mapping'),
    ({'plan_ms': ['a', 'b']}, "ValueError: summary.json: plan_ms[0] = 'a' is not a finite"),
    ({'plan_ms': [float('inf')]}, 'ValueError: summary.json: plan_ms[0] = inf is not a finite'),
    ({'trainings': [{'version': 'x', 'index': 2, 'iteration': 0}]},
     "ValueError: summary.json: trainings[0].version = 'x' is not an integer"),
    ({'model_error': 'none'}, 'ValueError: summary.json: model_error is not a list'),
])
def test_the_report_command_says_in_one_line_why_there_is_no_report(tmp_path, capsys,
                                                                    summary, needle):
    run = tmp_path / 'run'
    run.mkdir()
    if isinstance(summary, dict):
        summary = json.dumps({**a_summary(), **summary})
    if summary is not None:
        (run / 'summary.json').write_text(summary)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'mbrl_robot.report: {run}: no report ('), err
    assert needle.format(run=run) in err[0]
    assert not (run / 'report.md').exists()


def a_summary():
    """A run's summary: one model trained after phase 2, a planner episode (4) after it."""
    results = [{'kind': 'episode', 'stage': stage, 'policy': policy, 'iteration': it,
                'index': index, 'seed': index, 'steps': 30, 'final_distance': 0.1,
                'success': False}
               for stage, policy, it, index in [('random', 'random', 0, 0),
                                                ('random', 'random', 0, 1),
                                                ('eval_planner', 'planner', 1, 4)]]
    return summarize(results, [{'kind': 'train', 'iteration': 0, 'index': 2, 'version': 1,
                                'n_transitions': 60}], [5.0, 6.0], 60.0, 0.05)


def files(path):
    """Every file under ``path`` with its content's hash."""
    return {os.path.relpath(os.path.join(d, n), path):
            hashlib.sha256(open(os.path.join(d, n), 'rb').read()).hexdigest()
            for d, _, names in os.walk(path) for n in names}


@pytest.mark.parametrize('store', ['held_out', 'empty_file'])
def test_a_report_changes_nothing_of_its_run_and_skips_a_half_written_checkpoint(tmp_path,
                                                                                 store):
    """The report reads the buffer's store read-only (it once turned a 0-byte store into an
    empty database) and the newest whole checkpoint, not the ``v<N>.tmp`` a trainer stopped
    while saving leaves (it once failed the whole report on it). A store it cannot read costs
    the model-error section only, with one line saying why."""
    run = tmp_path / 'run'
    (run / 'buffer').mkdir(parents=True)
    (run / 'summary.json').write_text(json.dumps(a_summary()))
    GaussianEnsemble(STATE_DIM, ACTION_DIM, ensemble_size=2, num_layers=2,
                     hidden_size=16).save(run / 'models' / 'v0001')
    (run / 'models' / 'v0002.tmp').mkdir()
    (run / 'models' / 'v0002.tmp' / 'model.pt.tmp').write_bytes(bytes(10))
    if store == 'empty_file':
        (run / 'buffer' / 'transitions.sqlite3').write_bytes(b'')
    else:
        zeros = np.zeros
        with TransitionStore(str(run / 'buffer')) as db:
            db.append([Transition(episode=4, step=i, stamp=0.05 * i, next_stamp=0.05 * (i + 1),
                                  obs=zeros(STATE_DIM) + i, act=zeros(ACTION_DIM), reward=0.0,
                                  next_obs=zeros(STATE_DIM) + i + 1, done=i == 29,
                                  target=zeros(TARGET_DIM)) for i in range(30)])
    assert latest_model_dir(str(run)) == str(run / 'models' / 'v0001')
    before = files(run)
    text = open(write_report(str(run))).read()
    after = files(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    # The report and its plots; SQLite's reader files of a WAL store, as any reader's.
    assert set(after) - set(before) <= {
        'report.md', 'learning.png', 'plan_latency.png', 'model_error.png',
        'buffer/transitions.sqlite3-wal', 'buffer/transitions.sqlite3-shm'}, after
    wal = run / 'buffer' / 'transitions.sqlite3-wal'
    assert not wal.exists() or wal.stat().st_size == 0  # nothing written through it
    if store == 'empty_file':
        assert ('H-step model error not measured (ValueError: '
                f'{run}/buffer/transitions.sqlite3: not a readable transition store' in text)
    else:
        assert '| H | measured H-step error | bound |' in text and '| 25 |' in text


def test_a_controller_timing_figure_of_nothing_still_gives_a_report(tmp_path):
    """A controller that has not planned since it started (restarted during the baselines)
    reports its plan-time percentiles as NaN: that row reads nan, the report is written."""
    (tmp_path / 'summary.json').write_text(json.dumps({
        **a_summary(), 'controller_timing_ms': {'plan_ms_p50': float('nan'),
                                                'plan_ms_p99': float('nan')}}))
    assert '| plan | nan | nan |' in open(write_report(str(tmp_path))).read()
