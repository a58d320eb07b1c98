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
"""The realistic twin's results table (docs/results/realistic_twin.md): the recipe through
the node graph on the realistic twin, JSON lines.

Every row runs ``benchmarks/graph_recipe.py`` (``mbrl_run`` per training seed, each its own DDS
domain) and reports on the **test seeds** ``--test-seed`` .. +19 (default 5000-5019), on which no
choice was ever made; the profiles evaluate on the validation seeds 2000-2019
(``recipe.evaluation_seed`` in config/twin_realistic.yaml), the seeds to tune on. Rows:

- ``forward_realtime``: push_forward, realistic twin, realtime, CEM (cpu size), the random and
  zero baselines on the same test episodes (in the first seed's run);
- ``forward_realtime_no_compensation``: the same without the state prediction (plans still start
  one period ahead, from the latest measurements);
- ``forward_realtime_random_shooting``: random shooting of the same model evaluations;
- ``forward_realtime_no_hold``: the goal hold off;
- ``forward_realtime_compiled``: the planner compiled (``planner.backend: compiled``, now the
  profile's default; the same plans, half the time per plan); the other rows pin the eager
  reference planner they were measured with;
- ``forward_lockstep``: the cpu profile in lockstep (the old, ideal twin), same test seeds: the
  cost of the real world;
- ``forward_realtime_compiled_random_shooting``, ``_no_hold``, ``_no_compensation`` and
  ``forward_lockstep_compiled``: those ablations and the lockstep figure with the headline's
  compiled planner (the rows above pin the reference planner, which was late 3x as often);
- ``anywhere_realtime``: push_anywhere (config/push_anywhere.yaml), realistic twin, realtime,
  150-step episodes (6,750 transitions); ``anywhere_realtime_compiled`` the same with the
  planner compiled; ``anywhere_realtime_compiled_200``: the profile as shipped, 200-step
  episodes (9,000 transitions), the planner compiled;
- ``anywhere_lockstep_compiled_mean``: push_anywhere on the ideal lockstep twin (the cpu
  profile's twin and planner, 200-step episodes, compiled, the final mean): the cost of the
  real world for the general task;
- ``forward_realtime_5000`` and ``anywhere_realtime_10000``: the issue's whole budget of
  real transitions, a fifth iteration of 5 MPC episodes and a retrain (5,000 and 10,000);
- ``forward_realtime_intrusion_35mm``, ``forward_realtime_intrusion`` and
  ``anywhere_realtime_intrusion``: the cost on the tool's end inside the puck's space
  (``task.reward.tool_intrusion_weight: 10``) with that space 3.5 cm and 2 cm wide;
- ``forward_realtime_compiled_n100`` and ``anywhere_realtime_compiled_n100``: the compiled
  planner at the cpu profile's size (100 candidates, 10 elites) instead of 60 and 6;
- ``forward_realtime_compiled_mean``: the headline's profile with CEM executing its final mean
  (``planner.return_mean: true``) instead of the best sample;
  ``anywhere_realtime_compiled_200_mean`` the same for push_anywhere as shipped;
  ``anywhere_realtime_compiled_200_mean_h20`` that with a 20-step horizon (1 s) instead of 15;
  ``anywhere_realtime_compiled_200_mean_p2`` that with two TS-inf particles per candidate
  (each candidate's return averaged over two ensemble members) instead of one;
- ``forward_realtime_distill``: the planner distilled into a policy (config/distill.yaml, issue
  18): the planner collects (as in ``forward_realtime_compiled``), the trainer distils it after
  every retrain (labels on the real states and on policy rollouts in the model), and the planner
  and the policy are evaluated on the same test episodes (lines ``cem`` and ``policy``);
- ``forward_realtime_distill_dagger``: the same with the policy driving the training episodes
  (``controller.mode=policy``: DAgger on real states); both with the collecting planner's best
  sample, as measured; ``forward_realtime_distill_mean`` config/distill.yaml as now shipped
  (the planner collects with its final mean) until session 17, one DAgger round per retrain;
  ``forward_realtime_distill_mean_r3`` that with three DAgger rounds in the model per retrain
  (``trainer.distill.dagger_rounds: 3``, config/distill.yaml as shipped since session 17);
  ``forward_realtime_distill_mean_r3_start100`` that with the model rollouts starting at the
  first states of real episodes and running 100 steps (``trainer.distill.rollout_start:
  episode_start``, ``model_rollout_length: 100``) instead of at any real state for 30;
  ``forward_realtime_distill_mean_r3_tool`` the r3 row with the tool's end in the policy's
  observation (``trainer.distill.observation: state_and_tool``);
  ``forward_realtime_distill_mean_r3_m5`` the r3 row with five policies fitted to each label
  set and deployed as their mean action (``trainer.distill.policy_members: 5``);
  ``forward_realtime_distill_mean_r3_mix`` the r3 row with the policy driving the last 2 of
  each iteration's 5 training episodes from the second iteration on
  (``recipe.policy_episodes_per_iteration: 2``, DAgger on real states);
  ``anywhere_realtime_distill_mean_r3`` the r3 row's distiller on push_anywhere as shipped;
  ``anywhere_realtime_distill_r3_rollouts120`` distill.yaml's distiller as shipped since
  session 24 on push_anywhere as shipped since session 23 (four CEM iterations, labels too).

Usage::

    python benchmarks/realworld.py [--rows forward_realtime,anywhere_realtime] [--seeds 0 1 2]
        [--run-dir runs/realworld]

``--table runs/realworld/*.jsonl`` prints docs/results/realistic_twin.md's markdown table from
the lines.

Runs one after another (the machine's cores are shared: never two at once). Each line is
``graph_recipe.py``'s, with ``label`` = the row; per seed the planner line carries the learning
curve, the controller's timing percentiles (tick interval, joint and puck age, plan, send delay)
and the transitions dropped for timing.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

import graph_recipe
from results_io import json_lines, print_table

# The rows measured before the planner was compiled pin that planner (``reference``: the same
# plans, op by op, ~2x the time per plan) so that they stay what
# docs/results/realistic_twin.md reports.
REF = 'controller.planner.backend=reference'
# The rows measured before CEM executed its final mean on the realistic twin (push_forward
# session 15, push_anywhere and distill session 16) pin the best sample they executed.
BEST = 'controller.planner.return_mean=false'


def episode_steps(n: int) -> List[str]:
    """``--set`` arguments giving every node's task ``n``-step episodes."""
    return [f'{node}.task.episode_steps={n}'
            for node in ('twin', 'buffer', 'trainer', 'controller', 'recipe')]


def anywhere_labeller(iterations: int) -> List[str]:
    """``--set`` arguments giving the trainer push_anywhere's planner to label with
    (push_anywhere.yaml keeps it in the controller's block): CEM H=15, N=60, M=6, final mean."""
    return [f'trainer.planner.{k}={v}' for k, v in (
        ('name', 'cem'), ('horizon', 15), ('population_size', 60), ('elite_count', 6),
        ('iterations', iterations), ('propagation', 'ts_inf'), ('particles', 1),
        ('return_mean', 'true'))]


# The push_anywhere distill rows: distill.yaml's trainer settings on push_anywhere's profile,
# the controller compiled, the policy evaluated beside the planner.
ANYWHERE_DISTILL = ['controller.planner.backend=compiled', 'recipe.baselines=["policy"]',
                    'trainer.algorithm=distill', 'trainer.distill.relabel=true',
                    'trainer.distill.dagger_rounds=3']


# push_anywhere's episodes were 150 steps when these rows were measured (now 200).
STEPS_150 = episode_steps(150)
N100 = ['controller.planner.backend=compiled', 'controller.planner.population_size=100',
        'controller.planner.elite_count=10']
INTRUSION = [f'{node}.task.reward.tool_intrusion_weight=10.0'
             for node in ('twin', 'buffer', 'trainer', 'controller')]
ROWS = {
    'forward_realtime': ('twin_realistic', [REF, BEST], True),
    'forward_realtime_no_compensation': ('twin_realistic',
                                         [REF, BEST, 'controller.latency.compensation=false'],
                                         False),
    'forward_realtime_random_shooting': ('twin_realistic',
                                         [REF, 'controller.planner.name=random_shooting',
                                          'controller.planner.population_size=200'], False),
    'forward_realtime_no_hold': ('twin_realistic',
                                 [REF, BEST, 'controller.goal_hold.enter_radius_m=0.0'], False),
    'forward_realtime_compiled': ('twin_realistic', ['controller.planner.backend=compiled', BEST],
                                  False),
    'forward_lockstep': ('cpu', [REF], False),
    # The ablations and the lockstep figure with the headline's compiled planner.
    'forward_realtime_compiled_random_shooting': ('twin_realistic',
                                                  ['controller.planner.name=random_shooting',
                                                   'controller.planner.population_size=200'],
                                                  False),
    'forward_realtime_compiled_no_hold': ('twin_realistic',
                                          [BEST, 'controller.goal_hold.enter_radius_m=0.0'],
                                          False),
    'forward_realtime_compiled_no_compensation': ('twin_realistic',
                                                  [BEST, 'controller.latency.compensation=false'],
                                                  False),
    'forward_lockstep_compiled': ('cpu', ['controller.planner.backend=compiled'], False),
    'anywhere_realtime': ('push_anywhere', [REF, BEST] + STEPS_150, True),
    'anywhere_realtime_compiled': ('push_anywhere',
                                   ['controller.planner.backend=compiled', BEST] + STEPS_150,
                                   False),
    'anywhere_realtime_compiled_200': ('push_anywhere',
                                       ['controller.planner.backend=compiled', BEST], False),
    # push_anywhere on the ideal lockstep twin (the cpu profile, as forward_lockstep, with
    # push_anywhere's task and 200-step episodes, compiled, the final mean and four iterations
    # as the realtime row since session 23): the cost of the real world for the general task.
    'anywhere_lockstep_compiled_mean': ('cpu', ['twin.variant=push_anywhere',
                                                'controller.planner.backend=compiled',
                                                'controller.planner.return_mean=true',
                                                'controller.planner.iterations=4']
                                        + episode_steps(200), False),
    # The whole budget: a fifth collect-and-retrain iteration (5,000 and 10,000 transitions).
    'forward_realtime_5000': ('twin_realistic', [BEST, 'recipe.iterations=5'], False),
    'anywhere_realtime_10000': ('push_anywhere', ['controller.planner.backend=compiled', BEST,
                                                  'recipe.iterations=5'], False),
    # The planner at the cpu profile's size (100 candidates, 10 elites, as the lockstep rows),
    # compiled: whether a quieter machine's plan times leave room for it in real time.
    'forward_realtime_compiled_n100': ('twin_realistic', N100 + [BEST], False),
    'anywhere_realtime_compiled_n100': ('push_anywhere', N100 + [BEST], False),
    # The tool-on-the-puck cost (task.reward.tool_intrusion_weight) in every node's task; the
    # first measured with the puck's whole radius as the space (3.5 cm).
    'forward_realtime_intrusion_35mm': ('twin_realistic', INTRUSION + [BEST] + [
        f'{node}.task.reward.tool_intrusion_radius_m=0.035'
        for node in ('twin', 'buffer', 'trainer', 'controller')], False),
    'forward_realtime_intrusion': ('twin_realistic', INTRUSION + [BEST], False),
    'anywhere_realtime_intrusion': ('push_anywhere',
                                    ['controller.planner.backend=compiled', BEST] + INTRUSION,
                                    False),
    # CEM executes its final mean instead of the best sample (the library's default since
    # session 14, as mbrl-lib's; the distilled policy's labels showed the best sample's noise).
    'forward_realtime_compiled_mean': ('twin_realistic', ['controller.planner.return_mean=true'],
                                       False),
    'anywhere_realtime_compiled_200_mean': ('push_anywhere',
                                            ['controller.planner.backend=compiled',
                                             'controller.planner.return_mean=true'], False),
    # push_anywhere as shipped with a 20-step horizon (1 s) instead of 15: whether seeing
    # further ahead mends the pushes in a wrong direction (session 17, validation seeds).
    'anywhere_realtime_compiled_200_mean_h20': ('push_anywhere',
                                                ['controller.planner.backend=compiled',
                                                 'controller.planner.return_mean=true',
                                                 'controller.planner.horizon=20'], False),
    # push_anywhere as shipped with two particles per candidate: whether judging each
    # candidate on two members (PETS' trajectory sampling) mends the pushes in a wrong
    # direction; 1.6x the plan's compute (session 20, validation seeds).
    'anywhere_realtime_compiled_200_mean_p2': ('push_anywhere',
                                               ['controller.planner.backend=compiled',
                                                'controller.planner.return_mean=true',
                                                'controller.planner.particles=2'], False),
    # push_anywhere as shipped with four CEM iterations instead of two: whether a plan with
    # less sampling noise in its final mean pushes faster (session 23, screened first with
    # benchmarks/reevaluate.py on a validation run's final model).
    'anywhere_realtime_compiled_200_mean_i4': ('push_anywhere',
                                               ['controller.planner.backend=compiled',
                                                'controller.planner.return_mean=true',
                                                'controller.planner.iterations=4'], False),
    # The collecting planner executed its best sample until session 16.
    'forward_realtime_distill': ('distill', [BEST], True),
    'forward_realtime_distill_dagger': ('distill', [BEST, 'controller.mode=policy'], False),
    # config/distill.yaml as shipped since session 16 (its planner executes the final mean);
    # the policy evaluated beside the planner, without the random and zero baselines (measured
    # in the rows above).
    'forward_realtime_distill_mean': ('distill', ['recipe.baselines=["policy"]',
                                                  'trainer.distill.dagger_rounds=1'], True),
    # The same with three DAgger rounds in the model per retrain (session 17, validation seeds).
    'forward_realtime_distill_mean_r3': ('distill', ['recipe.baselines=["policy"]',
                                                     'trainer.distill.dagger_rounds=3',
                                                     'trainer.distill.rollout_start=any_state',
                                                     'trainer.distill.model_rollout_length=30',
                                                     'trainer.distill.observation=state',
                                                     'trainer.distill.policy_members=1'],
                                         True),
    # The same with the tool's end in the policy's observation (session 18, validation seeds).
    'forward_realtime_distill_mean_r3_tool': (
        'distill', ['recipe.baselines=["policy"]', 'trainer.distill.dagger_rounds=3',
                    'trainer.distill.rollout_start=any_state',
                    'trainer.distill.model_rollout_length=30',
                    'trainer.distill.observation=state_and_tool',
                    'trainer.distill.policy_members=1'], True),
    # The same with five policies fitted to each label set, deployed as their mean action
    # (session 18, validation seeds).
    'forward_realtime_distill_mean_r3_m5': (
        'distill', ['recipe.baselines=["policy"]', 'trainer.distill.dagger_rounds=3',
                    'trainer.distill.rollout_start=any_state',
                    'trainer.distill.model_rollout_length=30',
                    'trainer.distill.observation=state', 'trainer.distill.policy_members=5'],
        True),
    # The same with the model rollouts starting at real episodes' first states and running a
    # whole episode (session 18, validation seeds).
    'forward_realtime_distill_mean_r3_start100': (
        'distill', ['recipe.baselines=["policy"]', 'trainer.distill.dagger_rounds=3',
                    'trainer.distill.rollout_start=episode_start',
                    'trainer.distill.model_rollout_length=100'], True),
    # The r3 row with DAgger on real states: from the second collect-and-retrain iteration on,
    # the last 2 of the 5 training episodes are the policy's (no exploration noise: its own
    # states), labelled by the planner at the next retrain (session 21, validation seeds).
    'forward_realtime_distill_mean_r3_mix': (
        'distill', ['recipe.baselines=["policy"]', 'trainer.distill.dagger_rounds=3',
                    'recipe.policy_episodes_per_iteration=2',
                    'recipe.policy_episodes_from_iteration=2',
                    'controller.policy_exploration_std=0.0'], True),
    # The r3 row with six times the DAgger rollouts in the model per round (120 of 30 steps:
    # 54,000 labelled model states over the recipe; session 24, validation seeds).
    'forward_realtime_distill_mean_r3_rollouts120': (
        'distill', ['recipe.baselines=["policy"]', 'trainer.distill.dagger_rounds=3',
                    'trainer.distill.model_rollouts=120'], True),
    # config/distill.yaml's distiller (as shipped since session 17) on push_anywhere as shipped:
    # the trainer labels with the controller's planner (push_anywhere.yaml keeps it in the
    # controller's block, so it is given to the trainer here), the policy evaluated beside the
    # planner (session 21, issue 18's "push_anywhere: the same table"; nothing tuned for it).
    'anywhere_realtime_distill_mean_r3': (
        'push_anywhere', ['controller.planner.return_mean=true'] + ANYWHERE_DISTILL
        + anywhere_labeller(iterations=2), True),
    # config/distill.yaml's distiller as shipped since session 24 (120 model rollouts per
    # round) on push_anywhere as shipped since session 23 (four CEM iterations): the trainer
    # labels with the controller's planner, four iterations too (session 25, test seeds).
    'anywhere_realtime_distill_r3_rollouts120': (
        'push_anywhere', ['controller.planner.iterations=4', 'trainer.distill.model_rollouts=120']
        + ANYWHERE_DISTILL + anywhere_labeller(iterations=4), True),
}

# Profile values changed after older rows were measured: those rows pin what they ran with
# (push_anywhere.yaml plans with four CEM iterations since session 23; distill.yaml rolls out
# 120 DAgger rollouts per round in the model since session 24).
PINNED = {'push_anywhere': ('controller.planner.iterations', 2),
          'distill': ('trainer.distill.model_rollouts', 20)}
for _profile, _sets, _ in ROWS.values():
    if _profile in PINNED:
        _key, _value = PINNED[_profile]
        if not any(x.startswith(f'{_key}=') for x in _sets):
            _sets.append(f'{_key}={_value}')


def table(paths: Sequence[str]) -> str:
    """docs/results/realistic_twin.md's markdown table from this script's JSON lines (one row
    per label and method, over the seeds of its ``seed`` lines)."""
    rows: Dict[tuple, List[dict]] = {}
    for r in json_lines(paths):
        if r.get('kind') == 'seed':
            rows.setdefault((r.get('label', ''), r['method']), []).append(r)
    out = ['| row | method | transitions | test success (per seed) | final distance (m) | '
           'plans late | plan ms p50/p99 | puck age ms p50/p99 | tick ms p99 |',
           '|---|---|---|---|---|---|---|---|---|']
    for (label, method), rs in rows.items():
        succ = np.array([r['success_rate'] for r in rs])
        per_seed = '/'.join(f'{100 * v:.0f}' for v in succ)
        dist = np.mean([r['mean_final_distance'] for r in rs])
        line = (f'| {label} | {method} | {rs[0]["transitions"]:,} | {100 * succ.mean():.0f} '
                f'+- {100 * succ.std():.0f}% ({per_seed}) | {dist:.3f} |')
        timing = [r.get('controller_timing_ms') for r in rs if r.get('controller_timing_ms')]
        if rs[0].get('plans'):
            # A planner tick either collects a finished plan or finds it late (goal-hold
            # ticks plan nothing): the late share of the ticks that wanted a plan.
            late = sum(r['deadline_misses'] or 0 for r in rs)
            misses = late / max(late + sum(r['plans'] or 0 for r in rs), 1)
            line += f' {100 * misses:.0f}% |'
        else:
            line += ' |'
        if timing:
            t = {k: np.mean([x[k] for x in timing]) for k in timing[0]}
            line += (f' {t["plan_ms_p50"]:.0f}/{t["plan_ms_p99"]:.0f} | '
                     f'{t["puck_age_ms_p50"]:.0f}/{t["puck_age_ms_p99"]:.0f} | '
                     f'{t["tick_interval_ms_p99"]:.0f} |')
        else:
            line += ' | | |'
        out.append(line)
    return '\n'.join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--table', nargs='+', metavar='JSONL',
                    help='print the markdown table of the JSON lines of earlier runs and exit')
    ap.add_argument('--rows', default=','.join(ROWS), help=f'comma-separated, of {list(ROWS)}')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--test-seed', type=int, default=5000)
    ap.add_argument('--run-dir', default='runs/realworld')
    args = ap.parse_args(argv)
    if args.table:
        return print_table(table, args.table, 'realworld.py')
    rc = 0
    for i, row in enumerate(args.rows.split(',')):
        if row not in ROWS:
            print(f'unknown row {row!r}; rows: {list(ROWS)}', file=sys.stderr)
            return 2
        profile, sets, baselines = ROWS[row]
        sets = sets + [f'recipe.evaluation_seed={args.test_seed}']
        if not baselines:
            sets.append('recipe.baselines=[""]')
        argv = ['--profile', profile, '--seeds', *map(str, args.seeds), '--label', row,
                '--run-dir', os.path.join(args.run_dir, row), '--domain-id', str(40 + 5 * i),
                '--baselines-once'] + [a for s in sets for a in ('--set', s)]
        rc |= graph_recipe.main(argv)
    return rc


if __name__ == '__main__':
    sys.exit(main())
