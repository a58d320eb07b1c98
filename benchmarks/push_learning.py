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
"""Headline learning result: the whole recipe in-process, per seed, with baselines.

Runs :func:`mbrl_robot.inprocess.run_profile` (the core's ``run_recipe`` on a profile: random
episodes, train, (MPC episodes, retrain) x iterations, held-out evaluation, random and zero
baselines on the same held-out seeds) once per ``--seeds`` entry and prints JSON lines:

* one per seed and method (``cem`` / ``random_shooting``, and the ``random`` and ``zero``
  baselines): ``transitions``, ``success_rate``, ``mean_final_distance``, ``wall_s``,
  ``ms_per_plan`` (median);
* one ``aggregate`` line per method: mean, std, min and max over the seeds.

A seed ``s`` sets ``controller.planner.seed = s``, ``trainer.training.seed = s`` and
``recipe.seed = 100 * s`` (training episodes ``100 s ... 100 s + 44``, disjoint from the
held-out evaluation seeds ``recipe.evaluation_seed`` = 1000...). ``--planner random_shooting``
draws ``population_size * iterations`` candidates per plan, the same model evaluations as CEM.

Usage::

    python benchmarks/push_learning.py --profile cpu --seeds 0 1 2 [--planner cem]
        [--set controller.planner.horizon=20] [--set task.max_joint_speed_rad_s=0.25]
        [--out results.jsonl] [--run-dir runs/bench]

``--set node.key=value`` merges a YAML-parsed value into one node's parameters; a key that does
not start with a node name (``twin``, ``trainer``, ``controller``, ``recipe``) goes to all
four (e.g. ``task.*``).
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml

from mbrl_robot.config import _merge, node_params, profile_argument
from mbrl_robot.inprocess import run_profile

NODES = ('twin', 'trainer', 'controller', 'recipe')
PLANNERS = ('cem', 'random_shooting')


def parse_sets(items: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``['node.a.b=value', ...]`` -> ``{node: {a: {b: value}}}`` (YAML values).

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        parts = [p for p in key.strip().split('.') if p]
        if not sep or not parts:
            raise ValueError(f'--set expects node.key=value, got {item!r}')
        value = yaml.safe_load(raw)
        nodes = [parts.pop(0)] if parts[0] in NODES else list(NODES)
        if not parts:
            raise ValueError(f'--set {item!r}: no key after the node name')
        nested: Any = value
        for p in reversed(parts):
            nested = {p: nested}
        for node in nodes:
            out[node] = _merge(out.get(node, {}), nested)
    return out


def seed_overrides(seed: int, planner: str, profile: str,
                   base: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Overrides for one seed and planner, merged over ``base`` (``--set``)."""
    ov = {'controller': {'planner': {'seed': seed}}, 'trainer': {'training': {'seed': seed}},
          'recipe': {'seed': 100 * seed, 'baselines': ['random', 'zero']}}
    ov = {n: _merge(ov.get(n, {}), base.get(n, {})) for n in NODES}
    if planner == 'random_shooting':
        pcfg = _merge(node_params(profile, 'controller')['planner'],
                      ov['controller'].get('planner', {}))
        ov['controller']['planner'] = _merge(ov['controller']['planner'], {
            'name': 'random_shooting',
            'population_size': int(pcfg['population_size']) * int(pcfg.get('iterations', 1))})
    return ov


def seed_lines(summary: Dict[str, Any], seed: int, planner: str,
               profile: str) -> List[Dict[str, Any]]:
    """The per-method JSON lines of one recipe summary."""
    st = summary['stages']
    lines = []
    for method, stage in ((planner, 'eval_planner'), ('policy', 'eval_policy'),
                          ('random', 'eval_random'), ('zero', 'eval_zero')):
        if stage not in st:
            continue
        planned = method == planner
        learned = method == 'policy'  # trained on the same transitions as the planner
        lines.append({
            'kind': 'seed', 'method': method, 'profile': profile, 'seed': seed,
            'transitions': summary['transitions_used'] if planned or learned else 0,
            'eval_episodes': st[stage]['episodes'],
            'success_rate': st[stage]['success_rate'],
            'mean_final_distance': st[stage]['mean_final_distance'],
            'wall_s': summary['wall_s'] if planned else None,
            'ms_per_plan': summary['plan_latency_ms']['median'] if planned else None,
            'ms_per_plan_p99': summary['plan_latency_ms']['p99'] if planned else None,
            'mpc_success_rate': st.get('mpc', {}).get('success_rate') if planned else None,
            'deadline_misses': summary.get('deadline_misses') if planned else None,
            'plans': summary['plan_latency_ms']['count'] if planned else None,
        })
        if planned:
            lines[-1].update(
                curve=learning_curve(summary['episodes']),
                controller_timing_ms=summary.get('controller_timing_ms'),
                dropped_timing=summary.get('dropped_timing'),
                eval_seeds=sorted({e['seed'] for e in summary['episodes']
                                   if e['stage'] == stage}))
    return lines


def learning_curve(episodes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Success and mean final distance of each MPC iteration's training episodes against the
    real transitions collected before it (the model it ran on saw exactly those), and of the
    policy's training episodes where the policy drove some (stage ``dagger``)."""
    curve = []
    for it in sorted({e['iteration'] for e in episodes if e['stage'] in ('mpc', 'dagger')}):
        before = sum(e['steps'] for e in episodes
                     if not e['stage'].startswith('eval') and e['iteration'] < it)
        point = {'iteration': it, 'transitions': before}
        for stage, prefix in (('mpc', ''), ('dagger', 'dagger_')):
            eps = [e for e in episodes if e['stage'] == stage and e['iteration'] == it]
            if eps:
                point[prefix + 'success_rate'] = float(np.mean([e['success'] for e in eps]))
                point[prefix + 'mean_final_distance'] = float(
                    np.mean([e['final_distance'] for e in eps]))
        curve.append(point)
    return curve


def aggregate(lines: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One line per method: mean, std (population), min and max over seeds."""
    out = []
    for method in dict.fromkeys(r['method'] for r in lines):
        rows = [r for r in lines if r['method'] == method]
        agg = {'kind': 'aggregate', 'method': method, 'profile': rows[0]['profile'],
               'seeds': [r['seed'] for r in rows], 'transitions': rows[0]['transitions']}
        for key in ('success_rate', 'mean_final_distance', 'wall_s', 'ms_per_plan'):
            vals = np.array([r[key] for r in rows if r[key] is not None], dtype=float)
            if len(vals):
                agg[key] = {'mean': float(vals.mean()), 'std': float(vals.std()),
                            'min': float(vals.min()), 'max': float(vals.max())}
        out.append(agg)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--profile', type=profile_argument, default='cpu')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--planner', choices=PLANNERS, default='cem')
    ap.add_argument('--set', dest='sets', action='append', default=[],
                    metavar='NODE.KEY=VALUE')
    ap.add_argument('--threads', type=int, default=1, help='torch threads')
    ap.add_argument('--out', default='', help='also append the JSON lines to this file')
    ap.add_argument('--run-dir', default='', help='write each seed summary.json under here')
    ap.add_argument('--quiet', action='store_true', help='no per-episode progress on stderr')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = parse_sets(args.sets)

    def emit(line: Dict[str, Any]) -> None:
        line = {**line, 'sets': args.sets}
        text = json.dumps(line)
        print(text, flush=True)
        if args.out:
            with open(args.out, 'a') as f:
                f.write(text + '\n')

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    lines: List[Dict[str, Any]] = []
    for seed in args.seeds:
        ov = seed_overrides(seed, args.planner, args.profile, base)
        run_dir = os.path.join(args.run_dir, f'seed{seed}') if args.run_dir else None
        t0 = time.monotonic()
        summary = run_profile(args.profile, overrides=ov, run_dir=run_dir, log=log)
        log(f'seed {seed}: {time.monotonic() - t0:.0f} s')
        for line in seed_lines(summary, seed, args.planner, args.profile):
            lines.append(line)
            emit(line)
    for line in aggregate(lines):
        emit(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
