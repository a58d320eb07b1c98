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
"""The headline through the ROS 2 node graph: ``mbrl_run`` once per seed, JSON lines out.

Each seed runs the whole graph (twin, buffer, trainer, controller, recipe: separate processes
over DDS on their own ``ROS_DOMAIN_ID``, localhost discovery) with
``controller.planner.seed = s``, ``trainer.training.seed = s`` (and the trainer's ``planner.seed``
and ``distill.seed``), ``recipe.seed = 100 s`` (the same
seeds as ``push_learning.py``), then reads the run's ``summary.json`` and prints the same lines
as ``push_learning.py``: one per seed and method (the learned controller, ``random``, ``zero``)
and one ``aggregate`` per method. Each run directory also holds the recipe's report.md and plots.

Usage::

    python benchmarks/graph_recipe.py --profile cpu --seeds 0 1 2 [--run-dir runs/graph]
        [--set controller.goal_hold.enter_radius_m=0.0]
"""

import argparse
import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence

from mbrl_robot.config import node_params, profile_argument
from push_learning import aggregate, seed_lines


def _recipe_sets(sets: List[str]) -> dict:
    """The ``recipe.*`` values of ``--set`` arguments (YAML values), nested."""
    import yaml
    from mbrl_robot.core.schema import unflatten
    return unflatten({k[len('recipe.'):]: yaml.safe_load(v) for k, v in
                      (s.split('=', 1) for s in sets) if k.startswith('recipe.')})


def policy_training(run_dir: str) -> dict:
    """What the trainer spent on the policies (mbpo, distill): the sum over versions of each
    policy update's wall time and, for distill, its expert labels."""
    models = os.path.join(run_dir, 'models')
    announcements = []
    for name in sorted(os.listdir(models)) if os.path.isdir(models) else []:
        path = os.path.join(models, name, 'policy', 'announcement.json')
        if os.path.isfile(path):
            with open(path) as f:
                announcements.append(json.load(f))
    return {'policy_versions': len(announcements),
            'policy_train_s': sum(a.get('train_seconds', 0.0) for a in announcements),
            'policy_labels': sum(a.get('labels', 0) for a in announcements)}


def run_graph(profile: str, run_dir: str, sets: Sequence[str], domain_id: int, timeout: float,
              resume: bool = False) -> Optional[dict]:
    """``mbrl_run`` once (its output to stderr) on its own ``ROS_DOMAIN_ID``, localhost
    discovery; the run's summary, or None (with a ``failed`` JSON line) when it did not finish."""
    cmd = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', profile,
           '--run-dir', run_dir, '--timeout', str(timeout)] + (['--resume'] if resume else [])
    cmd += [a for s in sets for a in ('--set', s)]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    print(' '.join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr)
    try:
        with open(os.path.join(run_dir, 'summary.json')) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        summary = {'failed': f'no readable summary.json ({e})'}
    if proc.returncode != 0 or not summary.get('complete'):
        print(json.dumps({'kind': 'failed', 'run_dir': run_dir,
                          'failed': summary.get('failed')}), flush=True)
        return None
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--profile', type=profile_argument, default='cpu')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--set', dest='sets', action='append', default=[],
                    metavar='NODE.PARAM=VALUE', help='passed to mbrl_run --set')
    ap.add_argument('--run-dir', default='runs/graph', help='seed s runs in <run-dir>/seed<s>')
    ap.add_argument('--domain-id', type=int, default=60, help='seed s uses this + s')
    ap.add_argument('--timeout', type=float, default=3600.0, help='per run, seconds')
    ap.add_argument('--baselines-once', action='store_true',
                    help='the random and zero baselines in the run of the first seed only '
                    '(they do not depend on the training seed)')
    ap.add_argument('--label', default='', help='recorded in every line')
    args = ap.parse_args(argv)
    lines: List[dict] = []
    for seed in args.seeds:
        run_dir = os.path.abspath(os.path.join(args.run_dir, f'seed{seed}'))
        # The trainer's planner and distill seeds matter to trainer.algorithm distill only.
        sets = [f'controller.planner.seed={seed}', f'trainer.training.seed={seed}',
                f'trainer.planner.seed={seed}', f'trainer.distill.seed={seed}',
                f'recipe.seed={100 * seed}'] + args.sets
        if args.baselines_once and seed != args.seeds[0]:
            # The trained policy (baseline "policy") depends on the seed: it stays.
            kept = [b for b in node_params(args.profile, 'recipe', overrides=_recipe_sets(sets))
                    ['baselines'] if b == 'policy'] or ['']
            sets.append(f'recipe.baselines={json.dumps(kept)}')
        print(f'seed {seed}:', file=sys.stderr, flush=True)
        summary = run_graph(args.profile, run_dir, sets, args.domain_id + seed, args.timeout)
        if summary is None:
            return 1
        ctl = node_params(os.path.join(run_dir, 'params.yaml'), 'controller')
        method = 'policy' if ctl['mode'] == 'policy' else ctl['planner']['name']
        extra = policy_training(run_dir)
        for line in seed_lines(summary, seed, method, args.profile):
            line = {**line, 'via': 'ros2_graph', 'run_dir': run_dir, 'sets': args.sets,
                    'label': args.label, **(extra if line['method'] == 'policy' else {})}
            lines.append(line)
            print(json.dumps(line), flush=True)
    for line in aggregate(lines):
        print(json.dumps({**line, 'via': 'ros2_graph', 'sets': args.sets, 'label': args.label}),
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
