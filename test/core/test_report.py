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

import os

import pytest

from mbrl_robot.inprocess import run_profile
from mbrl_robot.report import main, write_report


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
    ('{"complete": true}', "KeyError: 'stages'"),
])
def test_the_report_command_says_in_one_line_why_there_is_no_report(tmp_path, capsys,
                                                                    summary, needle):
    run = tmp_path / 'run'
    run.mkdir()
    if summary is not None:
        (run / 'summary.json').write_text(summary)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'mbrl_robot.report: {run}: no report ('), err
    assert needle.format(run=run) in err[0]
    assert not (run / 'report.md').exists()
