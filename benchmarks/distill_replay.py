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
"""A recorded run's distillation replayed with other distill settings, each policy evaluated.

A screen for the distiller's settings (issue 18) that costs minutes, not a graph run: the
recorded run's real rows (its random and MPC training episodes, from ``buffer``) and its
validated models (``models/v<N>``) are fed to a fresh :class:`PlannerDistiller` exactly as the
trainer fed them (the episodes each model was trained on, then ``catch_up`` on that model),
with the run's trainer parameters plus ``--set`` overrides; the last policy drives the
lockstep twin (the run's twin parameters: actuator model, puck mass and friction; no tracker
latency, noise or wall clock) through the controller's own step on ``--episodes`` seeds from
``--eval-seed``. One JSON line per run directory; ``--planner`` adds the run's planner on the
last model on the same episodes, ``--fit-seeds K`` the last labels fitted again with K other
seeds (each policy, and the mean action of all of them). Tune with validation seeds (2000...)
only::

    python benchmarks/distill_replay.py runs/val18/forward_realtime_distill_mean_r3/seed0 \\
        --set trainer.distill.rollout_start=episode_start --eval-seed 2000

What it does not show: the wall clock's effects (a graph run on the realistic twin,
``benchmarks/realworld.py``, is what decides), and the data the new policy would itself have
collected (the recorded MPC episodes were driven by the recorded run's planner).
"""

import argparse
import json
import sqlite3
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.algorithms.distill import fit_policy, push_distill_agent
from mbrl_robot.core.algorithms.mpc_recipe import run_episode
from mbrl_robot.core.control import PushController
from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.policy import PolicyEnsemble
from mbrl_robot.core.tasks.push import ACTION_DIM, PUSH_OBS_LAYOUT, STATE_DIM
from mbrl_robot.runner import parse_sets


def load_rows(run: str, episodes: Sequence[int]):
    """The stored rows of ``episodes`` in step order: state, executed, next state, target,
    episode, step (the store's blobs are little-endian float64)."""
    db = sqlite3.connect(f'file:{run}/buffer/transitions.sqlite3?mode=ro', uri=True)
    cols = {k: [] for k in ('state', 'executed', 'next_state', 'goal', 'episode', 'step')}
    for ep in episodes:
        for obs, act, nxt, target, step in db.execute(
                'SELECT obs, act, next_obs, target, step FROM transitions WHERE episode = ? '
                'ORDER BY step', (int(ep),)):
            cols['state'].append(np.frombuffer(obs, '<f8')[:STATE_DIM])
            cols['executed'].append(np.frombuffer(act, '<f8')[:ACTION_DIM])
            cols['next_state'].append(np.frombuffer(nxt, '<f8')[:STATE_DIM])
            cols['goal'].append(np.frombuffer(target, '<f8')[:3])
            cols['episode'].append(ep)
            cols['step'].append(step)
    db.close()
    return {k: np.asarray(v) for k, v in cols.items()}


def train_episodes(run: str):
    """The recorded run's training episodes (not its evaluations), in the order it ran them."""
    with open(f'{run}/summary.json') as f:
        summary = json.load(f)
    return [e.get('episode', e['index']) for e in summary['episodes']
            if not e['stage'].startswith('eval')]


def evaluate(env, ctl_params, policy, seeds, kind: str, model=None,
             obs_layout=PUSH_OBS_LAYOUT):
    """Success, final distances of ``kind`` (policy or planner) on ``seeds`` in ``env``."""
    control = PushController.from_params(ctl_params, clock=lambda: 0.0)
    control.policies.set_model(model, 1)
    if policy is not None:
        control.policies.set_policy(policy, 1, obs_layout)
    radius = ctl_params['task']['success_radius_m']
    finals = []
    for i, seed in enumerate(seeds):
        states, _, target, _ = run_episode(env, control, {'seed': int(seed), 'index': i,
                                                          'policy': kind,
                                                          'stage': f'eval_{kind}'})
        finals.append(float(np.linalg.norm(states[-1, 14:17] - target)))
    control.close()
    finals = np.asarray(finals)
    return {'success_rate': float(np.mean(finals < radius)),
            'mean_final_distance': float(finals.mean()),
            'successes': [int(s) for s in seeds[finals < radius]]}


def refits(distiller, trainer, env, ctl, seeds, k: int, log) -> dict:
    """The last labels fitted again with ``k`` other seeds: each policy's and their mean's
    (with the distiller's own policy) results on ``seeds`` (how much the fit's seed alone
    moves the success, and whether averaging the fits helps)."""
    obs, labels = distiller.labelled()
    own = distiller.policy()
    policies = list(own.nets) if own.members > 1 else [own]
    for i in range(k):
        policies.append(fit_policy(obs, labels, trainer['distill'], 10_000 + i, log)['policy'])
    layout = distiller.gtask.obs_layout
    each = [evaluate(env, ctl, p, seeds, 'policy', obs_layout=layout) for p in policies]
    return {'fit_seeds': [int(trainer['distill']['seed'])] + [10_000 + i for i in range(k)],
            'each': each, 'mean_of_policies': evaluate(env, ctl, PolicyEnsemble(policies), seeds,
                                                       'policy', obs_layout=layout)}


def replay(run: str, sets, eval_seed: int, episodes: int, planner: bool, log,
           fit_seeds: int = 0, save_labels: Optional[str] = None) -> dict:
    t0 = time.monotonic()
    with open(f'{run}/summary.json') as f:
        summary = json.load(f)
    train_eps = train_episodes(run)
    trainer = node_params(f'{run}/params.yaml', 'trainer', overrides=sets.get('trainer'))
    twin = node_params(f'{run}/params.yaml', 'twin')
    ctl = node_params(f'{run}/params.yaml', 'controller')
    distiller = push_distill_agent(trainer, log)
    rows = load_rows(run, train_eps)
    cum = np.cumsum([np.sum(rows['episode'] == e) for e in train_eps])
    fed, model = 0, None
    fits = []
    for t in summary['trainings']:
        # The episodes this model was trained on: the first ones holding its n_transitions.
        upto = int(np.searchsorted(cum, int(t['n_transitions']), side='right'))
        new = np.isin(rows['episode'], train_eps[fed:upto])
        distiller.add_transitions(*(rows[k][new] for k in ('state', 'executed', 'next_state',
                                                           'goal', 'episode', 'step')))
        fed = upto
        model = GaussianEnsemble.load(f"{run}/models/v{int(t['version']):04d}", device='cpu',
                                      obs_dim=STATE_DIM, act_dim=ACTION_DIM).eval()
        fit = distiller.catch_up(model)
        fits.append({k: fit[k] for k in ('real_rows', 'model_rows', 'val_mse', 'wall_s')})
        log(f"v{t['version']}: {fit['real_rows']} real, {fit['model_rows']} model rows, "
            f"val mse {fit['val_mse']:.4f}, {fit['wall_s']:.0f} s")
    if save_labels:
        obs, labels = distiller.labelled()
        np.savez_compressed(save_labels, obs=obs, labels=labels,
                            real_rows=int(np.sum(~np.isnan(distiller.real_labels[:, 0]))),
                            obs_layout=distiller.gtask.obs_layout,
                            rollout_length=int(trainer['distill']['model_rollout_length']))
    from mbrl_robot.sim.push_env import PushEnv
    env = PushEnv(twin['task'], physics=twin['physics'], realism=twin['realism'],
                  variant=twin['variant'])
    seeds = np.arange(eval_seed, eval_seed + episodes)
    out = {'run': run, 'set': sets, 'eval_seeds': [int(seeds[0]), int(seeds[-1])],
           'real_transitions': distiller.n_real, 'fits': fits,
           'policy': evaluate(env, ctl, distiller.policy(), seeds, 'policy', model,
                              distiller.gtask.obs_layout)}
    if planner:
        out['planner'] = evaluate(env, ctl, None, seeds, 'planner', model)
    if fit_seeds:
        out['refits'] = refits(distiller, trainer, env, ctl, seeds, fit_seeds, log)
    env.close()
    out['wall_s'] = time.monotonic() - t0
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', help='recorded run directories (mbrl_run, distill)')
    ap.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                    help='trainer parameter overrides (e.g. trainer.distill.dagger_rounds=5)')
    ap.add_argument('--eval-seed', type=int, default=2000, help='first evaluation seed')
    ap.add_argument('--episodes', type=int, default=20, help='evaluation episodes')
    ap.add_argument('--planner', action='store_true', help='the planner on the same episodes')
    ap.add_argument('--threads', type=int, default=1, help='torch threads')
    ap.add_argument('--fit-seeds', type=int, default=0, metavar='K',
                    help='also refit the last labels with K other seeds: each policy and the '
                         'mean of all evaluated')
    ap.add_argument('--save-labels', metavar='FILE.npz',
                    help='write the last labels (obs, labels; the real rows first) for '
                         'benchmarks/distill_fit.py (one run directory only)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        sets = parse_sets(args.set)
    except ValueError as e:
        print(f'distill_replay: {e}', file=sys.stderr)
        return 2
    if set(sets) - {'trainer'}:
        print(f'distill_replay: only trainer.* can be set, got {sorted(sets)}', file=sys.stderr)
        return 2
    if args.save_labels and len(args.runs) > 1:
        print('distill_replay: --save-labels takes one run directory', file=sys.stderr)
        return 2
    rc = 0
    for run in args.runs:
        try:
            out = replay(run, sets, args.eval_seed, args.episodes, args.planner,
                         log=lambda m: print(m, file=sys.stderr), fit_seeds=args.fit_seeds,
                         save_labels=args.save_labels)
        except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as e:
            print(f'distill_replay: {run}: {e}', file=sys.stderr)
            rc = 1
            continue
        print(json.dumps(out), flush=True)
    return rc


if __name__ == '__main__':
    sys.exit(main())
