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
"""A fleet of N twin arms into one buffer and one trainer: wall time to 5,000 transitions and
the success rate, for N = 1, 2, 4 (``mbrl_run --arms N``), JSON lines out.

Each run is the recipe with 30 random episodes and 4 x 5 MPC episodes (50 training episodes of
100 steps: 5,000 transitions), then 20 held-out evaluation episodes of the planner on the test
seeds 5000-5019 (no baselines). The profile's twin, planner and model are unchanged
(``--profile cpu``: lockstep twins). Per run one line::

    {"benchmark": "fleet", "arms": N, "seed": s, "to_5000_s": ..., "wall_s": ...,
     "success_rate": ..., "episodes_per_arm": {...}, ...}

``to_5000_s`` is the wall time from starting ``mbrl_run`` until the buffer committed its
5,000th transition (the store's ``created`` column); ``collect_s`` the same without the
trainings, summed from the recipe's training phases.

Usage::

    python benchmarks/fleet.py --arms 1 2 4 --seeds 0 [--profile cpu] [--run-dir runs/fleet]
    python benchmarks/fleet.py --table runs/fleet/*.jsonl    # docs/fleet.md's table
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
from results_io import json_lines, print_table

from mbrl_robot.config import profile_argument

TRANSITIONS = 5000


def run(arms: int, seed: int, profile: str, run_dir: str, extra) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 199)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', profile, '--arms', str(arms),
           '--run-dir', run_dir, '--no-progress', '--restarts', '0',
           '--set', 'recipe.random_episodes=30', '--set', 'recipe.evaluation_seed=5000',
           '--set', "recipe.baselines=['']", '--set', f'recipe.seed={100 * seed}',
           '--set', f'controller.planner.seed={seed}', '--set', f'trainer.training.seed={seed}']
    for item in extra:
        cmd += ['--set', item]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'mbrl_run --arms {arms} failed (rc {proc.returncode}):\n'
                           f'{proc.stdout[-3000:]}')
    with open(os.path.join(run_dir, 'summary.json')) as f:
        summary = json.load(f)
    from mbrl_robot.core.buffer.storage import TransitionStore
    store = TransitionStore.open_read_only(os.path.join(run_dir, 'buffer'))
    try:
        rec = store.records(dtype=np.float64)
    finally:
        store.close()
    created = np.sort(rec.created)
    train_s = sum(t['wall_s'] for t in summary['trainings'])
    per_arm = {}
    for e in summary['episodes']:
        per_arm[e.get('arm', '')] = per_arm.get(e.get('arm', ''), 0) + 1
    ev = summary['stages'].get('eval_planner', {})
    return {'benchmark': 'fleet', 'arms': arms, 'seed': seed, 'profile': profile,
            'to_5000_s': (float(created[TRANSITIONS - 1] - t0) if len(created) >= TRANSITIONS
                          else None),
            'collect_s': (float(created[TRANSITIONS - 1] - t0) - train_s
                          if len(created) >= TRANSITIONS else None),
            'train_s': train_s, 'wall_s': float(time.time() - t0),
            'transitions': int(len(rec)), 'training_transitions': summary['transitions_used'],
            'success_rate': ev.get('success_rate'),
            'mean_final_distance_m': ev.get('mean_final_distance'),
            'eval_seeds': [5000, 5019], 'episodes_per_arm': per_arm,
            'plan_ms_p50': summary['plan_latency_ms']['median'],
            'plan_ms_p99': summary['plan_latency_ms']['p99'],
            'deadline_misses': summary.get('deadline_misses'),
            'controller_ticks': summary.get('controller_ticks'),
            'cpus': os.cpu_count(), 'run_dir': run_dir}


def table(paths) -> str:
    """A markdown table of fleet lines: per arm count, each seed's figures and their mean."""
    rows = {}
    for d in json_lines(paths):
        if d.get('benchmark') == 'fleet':
            rows.setdefault(d['arms'], []).append(d)
    out = ['| arms | seeds | wall time to 5,000 transitions (per seed) | of it collecting | '
           'held-out success (per seed) | plan ms p50 / p99 |', '|---|---|---|---|---|---|']
    base = None
    for arms in sorted(rows):
        runs = sorted(rows[arms], key=lambda d: d['seed'])
        to = np.mean([d['to_5000_s'] for d in runs])
        collect = np.mean([d['collect_s'] for d in runs])
        base = base or (to, collect)
        speed = '' if arms == min(rows) else f' ({base[0] / to:.2f}x)'
        cspeed = '' if arms == min(rows) else f' ({base[1] / collect:.2f}x)'
        out.append(
            f'| {arms} | {"/".join(str(d["seed"]) for d in runs)} | {to:.0f} s{speed} ('
            + '/'.join(f'{d["to_5000_s"]:.0f}' for d in runs) + f') | {collect:.0f} s{cspeed} | '
            f'{np.mean([d["success_rate"] for d in runs]) * 100:.0f}% ('
            + '/'.join(f'{d["success_rate"] * 100:.0f}' for d in runs) + ') | '
            f'{np.mean([d["plan_ms_p50"] for d in runs]):.0f} / '
            f'{np.mean([d["plan_ms_p99"] for d in runs]):.0f} |')
    return '\n'.join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arms', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--profile', type=profile_argument, default='cpu')
    parser.add_argument('--run-dir', default='runs/fleet')
    parser.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE')
    parser.add_argument('--table', nargs='+', metavar='FILE.jsonl',
                        help='print the markdown table of earlier runs instead of running')
    args = parser.parse_args(argv)
    if args.table:
        raise SystemExit(print_table(table, args.table, 'fleet.py'))
    for seed in args.seeds:
        for arms in args.arms:  # one at a time: the runs share the CPU cores
            line = run(arms, seed, args.profile,
                       os.path.abspath(os.path.join(args.run_dir, f'arms{arms}-seed{seed}')),
                       args.set)
            print(json.dumps(line), flush=True)


if __name__ == '__main__':
    main()
