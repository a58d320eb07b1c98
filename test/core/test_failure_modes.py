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
"""``benchmarks/failure_modes.py`` on a hand-made run: it finds the pressed puck and the tool on
the puck where they are, and nowhere else."""

import json
import os
import sys

import numpy as np
import torch

from mbrl_robot.core.buffer.assembler import Transition
from mbrl_robot.core.buffer.storage import TransitionStore
from mbrl_robot.core.tasks.push import PUCK, PushTask

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import failure_modes  # noqa: E402

# The twin's ready pose (mbrl_robot/sim/push_env.py): the tool vertical, its tip 1 cm high.
Q = np.array([0.0, 0.8282, 0.0, -1.8317, 0.0, 0.4817, 0.0])


def _episode(store, episode, puck_of_step):
    rows = []
    for k in range(10):
        obs = np.zeros(17)
        obs[:7] = Q
        obs[PUCK] = puck_of_step(k)
        rows.append(obs)
    store.append([Transition(episode=episode, step=k, stamp=0.05 * k, next_stamp=0.05 * k + 0.05,
                             obs=rows[k], act=np.zeros(7), reward=0.0, next_obs=rows[k],
                             done=k == 9, target=np.array([0.7, 0.0, 0.016]))
                  for k in range(10)])


def test_pressed_and_on_puck_episodes_are_found(tmp_path, capsys):
    tip = PushTask(dtype=torch.float64).tool_tip(torch.as_tensor(Q)).numpy()
    away = np.array([tip[0] + 0.2, tip[1], 0.016])  # the puck far from the tool, at rest
    under = np.array([tip[0], tip[1], tip[2] - 0.005])  # the tool end 2 cm into the puck

    store = TransitionStore(str(tmp_path / 'buffer'))
    _episode(store, 0, lambda k: away)  # a failure, nothing wrong with the puck
    _episode(store, 1, lambda k: under if k >= 3 else away)  # 7 steps pressed, tool on it
    _episode(store, 2, lambda k: under if k >= 6 else away)  # 4 steps: below --steps 5
    store.close()
    episodes = [{'kind': 'episode', 'stage': stage, 'policy': 'planner', 'seed': i, 'index': i,
                 'episode': i, 'success': ok, 'final_distance': 0.1, 'min_distance': 0.1}
                for i, (stage, ok) in enumerate([('eval_planner', False), ('mpc', False),
                                                 ('eval_planner', True)])]
    # A random episode is not the planner's: not counted, though its rows are the pressed ones.
    episodes.append({**episodes[1], 'policy': 'random', 'stage': 'random', 'seed': 3})
    (tmp_path / 'summary.json').write_text(json.dumps({'episodes': episodes}))
    (tmp_path / 'params.yaml').write_text('controller:\n  ros__parameters: {}\n')
    assert under[2] < 0.016 - 0.006, f'the tool is too high to press the puck: {tip}'

    assert failure_modes.main([str(tmp_path), '--episodes']) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    per_episode = {x['seed']: x for x in lines if 'seed' in x}
    assert [per_episode[i]['steps_pressed'] for i in range(3)] == [0, 7, 4]
    assert [per_episode[i]['steps_on_puck'] for i in range(3)] == [0, 7, 4]
    run = lines[-1]
    assert (run['failures'], run['failures_puck_pressed'],
            run['failures_tool_on_puck']) == (2, 1, 1)
    assert (run['successes'], run['successes_puck_pressed']) == (1, 0)
    # A run that cannot be read: one line on stderr, exit 1, the other runs still reported.
    assert failure_modes.main([str(tmp_path / 'missing'), str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert 'cannot read the run' in out.err and len(out.out.splitlines()) == 1
