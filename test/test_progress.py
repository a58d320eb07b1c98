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
"""The runner's progress display: a status line on a terminal, plain lines otherwise."""

import io
import json

from mbrl_robot.config import node_params
from mbrl_robot.core.algorithms.mpc_recipe import build_phases
from mbrl_robot.progress import CLEAR_LINE, progress_line, ProgressDisplay

PHASES = build_phases(node_params('ci_smoke', 'recipe'))  # 2 random, train, mpc, train, eval


def summary(n_episodes, n_trainings, successes=()):
    stages = ['random', 'random', 'mpc', 'eval_planner']
    return {'episodes': [{'stage': stages[i], 'success': i in successes}
                         for i in range(n_episodes)],
            'trainings': [{'version': v + 1} for v in range(n_trainings)]}


def test_progress_line_counts_phases_episodes_success_and_eta():
    line = progress_line(summary(2, 1, successes=(1,)), PHASES, elapsed_s=60.0)
    assert line.startswith('phase 4/6 mpc | episode 2/4 | success 1/2 so far (50%)')
    assert 'elapsed 1.0 min, ETA 1.0 min' in line  # 3 phases left at 20 s each
    line = progress_line(summary(4, 2, successes=(3,)), PHASES, elapsed_s=90.0,
                         start_position=3)
    assert 'phase 6/6 done' in line and 'success 1/1 held-out (100%)' in line
    assert line.endswith('ETA -')
    assert 'ETA -' in progress_line({}, PHASES, elapsed_s=1.0)


def test_terminal_status_line_stays_below_other_output(tmp_path):
    path = tmp_path / 'summary.json'
    out = io.StringIO()
    display = ProgressDisplay(str(path), PHASES, stream=out, tty=True)
    display.refresh()  # no summary yet
    assert out.getvalue().startswith(CLEAR_LINE + 'phase 1/6 random')
    path.write_text(json.dumps(summary(1, 0)))
    display.refresh()
    display.write('[recipe] a log line\n')
    text = out.getvalue()
    # The status is cleared before the line and redrawn after it.
    assert text.endswith(CLEAR_LINE + '[recipe] a log line\n' + display._status)
    assert 'episode 1/4' in display._status
    display.close()
    assert out.getvalue().endswith('\n')


def test_plain_lines_when_not_a_terminal(tmp_path):
    path = tmp_path / 'summary.json'
    out = io.StringIO()
    display = ProgressDisplay(str(path), PHASES, stream=out, tty=False)
    for n in (0, 1, 1, 2):
        path.write_text(json.dumps(summary(n, 0)))
        display.refresh()
    display.write('other\n')
    lines = out.getvalue().splitlines()
    assert CLEAR_LINE not in out.getvalue()
    # One line per new phase, not per refresh.
    assert [ln.split(' | ')[0] for ln in lines] == [
        'progress: phase 1/6 random', 'progress: phase 2/6 random', 'progress: phase 3/6 train '
        '(iteration 0)', 'other']
