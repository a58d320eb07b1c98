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
"""A finished graph run's final model evaluated again, with other controller settings.

A paired screen for settings that act at deploy time only (the goal hold, the planner's size,
latency compensation): the run directory is copied, its evaluation episodes are taken out of
the copy's summary, and ``mbrl_run --resume`` runs only the evaluation again, through the same
node graph, from the copy's own parameter file plus ``--set`` (the trainer re-announces the
final checkpoint; nothing is trained). The same model and the same episode seeds for every
setting, so the difference is the setting's (and real time's: which plans are late is not
repeatable). The baselines too, on the same episodes, with ``--set recipe.baselines=[...]`` (the
default is none). One JSON line per evaluated method, with every episode's final and closest
distance::

    .venv/bin/python benchmarks/reevaluate.py runs/val/anywhere/seed0 --out runs/reeval/hold35 \\
        --episodes 40 --seed 2000 --set controller.goal_hold.enter_radius_m=0.035
"""

import argparse
import json
import os
import shutil
import sys
from typing import List, Optional, Sequence

from graph_recipe import run_graph

from mbrl_robot.runner import effective_params, parse_sets

# What the copy leaves behind: the old run's logs and progress are not the new run's.
SKIPPED = ('logs', 'summary.json', 'params.yaml')


def prepare(run_dir: str, out: str, sets: Sequence[str] = ()) -> str:
    """Copy ``run_dir`` to ``out`` without its evaluation episodes; return the parameter file
    the evaluation runs from (the old run's, kept beside the copy).

    Raises:
        ValueError: ``run_dir`` holds no finished run, ``out`` exists, or ``sets`` (``mbrl_run
            --set`` values) do not validate: all checked before anything is copied.
    """
    summary_path = os.path.join(run_dir, 'summary.json')
    if not os.path.isfile(summary_path) or not os.path.isfile(
            os.path.join(run_dir, 'params.yaml')):
        raise ValueError(f'{run_dir}: no summary.json and params.yaml (not a graph run)')
    if os.path.exists(out):
        raise ValueError(f'{out} exists: choose another --out')
    with open(summary_path) as f:
        summary = json.load(f)
    if not isinstance(summary, dict) or not summary.get('complete'):
        raise ValueError(f'{run_dir}: the run did not finish (summary not complete)')
    for e in summary.get('episodes', []):
        if not isinstance(e, dict) or not isinstance(e.get('stage'), str):
            raise ValueError(f'{summary_path}: an episode without its stage: {e!r:.80}')
    # mbrl_run would refuse them only once the copy is made.
    effective_params(os.path.join(run_dir, 'params.yaml'), parse_sets(list(sets)), out)
    shutil.copytree(run_dir, out, ignore=lambda d, names: SKIPPED if d == run_dir else ())
    kept = [e for e in summary['episodes'] if not e['stage'].startswith('eval')]
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump({**summary, 'episodes': kept, 'complete': False}, f)
    source = os.path.join(out, 'source_params.yaml')
    shutil.copy(os.path.join(run_dir, 'params.yaml'), source)
    return source


def evaluated(summary: dict, stage: str = 'eval_planner') -> List[dict]:
    """The evaluation episodes of one stage of a summary, in seed order."""
    return sorted((e for e in summary['episodes'] if e['stage'] == stage),
                  key=lambda e: e['seed'])


def line(summary: dict, label: str, sets: Sequence[str], run_dir: str,
         stage: str = 'eval_planner') -> dict:
    """The JSON line of one evaluation stage (``eval_planner``, ``eval_random``, ...)."""
    eps = evaluated(summary, stage)
    n = max(len(eps), 1)
    return {'kind': 'reevaluation', 'label': label, 'run_dir': run_dir, 'sets': list(sets),
            'method': stage[len('eval_'):],
            'episodes': len(eps), 'successes': sum(e['success'] for e in eps),
            'success_rate': sum(e['success'] for e in eps) / n,
            'mean_final_distance': sum(e['final_distance'] for e in eps) / n,
            'per_episode': [{'seed': e['seed'], 'success': e['success'],
                             'final_distance': round(e['final_distance'], 4),
                             'min_distance': round(e['min_distance'], 4)} for e in eps]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('run_dir', help='a finished mbrl_run run directory')
    ap.add_argument('--out', required=True, help='where the copy runs (must not exist)')
    ap.add_argument('--episodes', type=int, default=20, help='evaluation episodes')
    ap.add_argument('--seed', type=int, default=2000, help='the first evaluation seed')
    ap.add_argument('--set', dest='sets', action='append', default=[],
                    metavar='NODE.PARAM=VALUE', help='passed to mbrl_run --set')
    ap.add_argument('--domain-id', type=int, default=90)
    ap.add_argument('--timeout', type=float, default=1800.0)
    ap.add_argument('--label', default='')
    args = ap.parse_args(argv)
    try:
        source = prepare(args.run_dir, args.out, args.sets)
    except (ValueError, OSError) as e:
        print(f'reevaluate: {e}', file=sys.stderr)
        return 2
    sets = [f'recipe.evaluation_episodes={args.episodes}',
            f'recipe.evaluation_seed={args.seed}', 'recipe.baselines=[""]'] + args.sets
    summary = run_graph(source, os.path.abspath(args.out), sets, args.domain_id, args.timeout,
                        resume=True)
    if summary is None:
        return 1
    stages = sorted({e['stage'] for e in summary['episodes'] if e['stage'].startswith('eval')})
    for stage in stages:
        print(json.dumps(line(summary, args.label, args.sets, args.out, stage)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
