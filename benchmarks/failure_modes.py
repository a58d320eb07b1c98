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
"""How the episodes of recorded runs ended, from their stored trajectories: JSON lines.

For every planner episode (MPC training and held-out evaluation) of each run directory
(``mbrl_run``'s: ``summary.json`` and ``buffer/transitions.sqlite3``), whether the tool's end was
on the puck (its end within the puck's radius and below its top plus ``--clearance``:
:func:`~mbrl_robot.core.tasks.push.tool_intrusion` > 0; with the default 0 the rod can only be
there pressing down into the puck, as far as the recorded, 60-ms-old puck shows) for at least
``--steps`` steps, and whether the puck was pressed into the table (its recorded centre
``--pressed`` or more below its resting height, beyond the tracker's 2 mm noise: in the twin a
tool on the puck pushes it into the table under the arm's full joint torques, and the puck
stays there while the arm pushes on) for as many steps, per run and per outcome. One line per
run::

    python benchmarks/failure_modes.py runs/realworld/forward_realtime_compiled/seed*

Add ``--episodes`` for one line per episode (its seed, outcome, distances and steps on the puck).
"""

import argparse
import json
import sqlite3
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.tasks.push import (PUCK, PUCK_HEIGHT_M, PUCK_RADIUS_M, STATE_DIM, PushTask,
                                        tool_intrusion)

# The puck's resting centre height in the twin (mbrl_robot/sim/push_env.py PUCK_Z).
REST_Z_M = PUCK_HEIGHT_M / 2.0 + 0.001


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('runs', nargs='+', help='mbrl_run run directories')
    ap.add_argument('--steps', type=int, default=5, help='steps on the puck that count')
    ap.add_argument('--clearance', type=float, default=0.0,
                    help='metres above the puck top that still count as on the puck')
    ap.add_argument('--pressed', type=float, default=0.006,
                    help='metres below its resting height that count as pressed into the table')
    ap.add_argument('--episodes', action='store_true', help='one line per episode too')
    args = ap.parse_args(argv)
    rc = 0
    for run in args.runs:
        try:
            with open(f'{run}/summary.json') as f:
                episodes = json.load(f)['episodes']
            joints = node_params(f'{run}/params.yaml', 'controller')['task']['joints']
            db = sqlite3.connect(f'file:{run}/buffer/transitions.sqlite3?mode=ro', uri=True)
        except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as e:
            print(f'failure_modes: {run}: cannot read the run ({e})', file=sys.stderr)
            rc = 1
            continue
        task = PushTask(joint_names=joints, dtype=torch.float64)
        counts = {'success': [0, 0, 0], 'failure': [0, 0, 0]}
        for e in episodes:
            if e.get('policy') != 'planner' or e.get('stage') not in ('mpc', 'eval_planner'):
                continue
            # The store's rows are little-endian float64 (core/buffer/storage.py); the episode
            # id is the recipe's, which differs from the index when an arm gave one up.
            states = [np.frombuffer(r[0], '<f8')[:STATE_DIM] for r in db.execute(
                'SELECT next_obs FROM transitions WHERE episode = ? ORDER BY step',
                (e.get('episode', e['index']),))]
            if not states:
                continue
            s = torch.as_tensor(np.array(states))
            depth = tool_intrusion(task.tool_tip(s), s[:, PUCK], radius=PUCK_RADIUS_M,
                                   top=PUCK_HEIGHT_M / 2 + args.clearance)
            on_puck = int((depth > 0).sum())
            pressed = int((s[:, PUCK.stop - 1] < REST_Z_M - args.pressed).sum())
            key = 'success' if e['success'] else 'failure'
            counts[key][0] += 1
            counts[key][1] += on_puck >= args.steps
            counts[key][2] += pressed >= args.steps
            if args.episodes:
                print(json.dumps({'run': run, 'stage': e['stage'], 'seed': e['seed'],
                                  'success': e['success'], 'steps_on_puck': on_puck,
                                  'steps_pressed': pressed,
                                  'final_distance': e['final_distance'],
                                  'min_distance': e['min_distance']}))
        print(json.dumps({'run': run, 'min_steps': args.steps, 'clearance_m': args.clearance,
                          'failures': counts['failure'][0],
                          'failures_tool_on_puck': counts['failure'][1],
                          'failures_puck_pressed': counts['failure'][2],
                          'successes': counts['success'][0],
                          'successes_tool_on_puck': counts['success'][1],
                          'successes_puck_pressed': counts['success'][2]}))
        db.close()
    return rc


if __name__ == '__main__':
    sys.exit(main())
