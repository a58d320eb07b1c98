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
"""Fit-side settings of the distilled policy screened on saved labels, each policy evaluated.

The labels a replay saved (``benchmarks/distill_replay.py --save-labels``: the last
observation/label set of a recorded run's distillation) are fitted again with the run's
``trainer.distill`` settings plus ``--set`` overrides (network, epochs, learning rate, the
observation: what the fit does, not which states are labelled), ``--fit-seeds`` times; each
policy drives the lockstep twin (the run's twin parameters) through the controller's own step
on ``--episodes`` seeds from ``--eval-seed``. ``--smooth K`` replaces each label by the mean
of the labels of the next K steps of its sequence (the recorded episode, or the model rollout
it came from): the planner's intent over K steps, its step-to-step sampling noise averaged.
``--policy-episodes N --rounds R`` first adds DAgger on real states: the run's newest policy
drives N lockstep episodes from ``--policy-seed`` (seeds outside validation and test), the
run's newest model's planner labels every visited state (its warm start carried along the
path), the policy is refitted on everything, R times; these are extra real transitions, so
the arm screens a mechanism, not a recipe within a budget.
One JSON line per call. Minutes per arm, so several arms can be screened before a graph run;
validation seeds (2000...) only::

    python benchmarks/distill_fit.py runs/s27/labels.npz runs/test25/RUN/seed0 --smooth 5

What it does not show: labels the new policy would have collected itself (DAgger's later
rounds), and the wall clock's effects (a graph run, ``benchmarks/realworld.py``, decides).
"""

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.algorithms.distill import fit_policy
from mbrl_robot.core.policy import PolicyEnsemble
from mbrl_robot.core.tasks.push import (DISTILL_OBSERVATIONS, PUCK, PUSH_OBS_LAYOUT, STATE_DIM,
                                        push_obs_fn, PushTask)
from mbrl_robot.runner import parse_sets

from distill_replay import evaluate, load_rows, train_episodes
from policy_failures import newest


def sequences(run: str, n_real: int, n_model: int, rollout_length: int) -> np.ndarray:
    """A sequence id per saved row: the real rows' recorded episodes (the replay's arrival
    order), then the model rollouts (whole blocks of ``rollout_length`` rows: a rollout ends
    early only on a non-finite prediction, checked by the caller's row count).

    Raises:
        ValueError: the run's rows or the model rows do not add up.
    """
    rows = load_rows(run, train_episodes(run))
    if len(rows['episode']) < n_real:
        raise ValueError(f'{run}: {len(rows["episode"])} recorded rows, the labels hold '
                         f'{n_real} real rows')
    if rollout_length < 1 or n_model % rollout_length:
        raise ValueError(f'{n_model} model rows are not whole rollouts of {rollout_length} '
                         'steps (a rollout ended early): cannot recover the sequences')
    real = rows['episode'][:n_real].astype(np.int64)
    model = real.max(initial=-1) + 1 + np.arange(n_model) // rollout_length
    return np.concatenate([real, model])


def observe(obs: np.ndarray, layout: str, wanted: str, task: PushTask) -> np.ndarray:
    """The saved observations in the ``wanted`` layout (rebuilt from the state and the target
    that the state-only layout holds).

    Raises:
        ValueError: the saved layout does not hold the state and the target.
    """
    if wanted == layout:
        return obs
    if layout != PUSH_OBS_LAYOUT:
        raise ValueError(f'labels saved with the {layout!r} observation cannot be seen as '
                         f'{wanted!r}')
    state = torch.as_tensor(obs[:, :STATE_DIM], dtype=torch.float32)
    target = state[:, PUCK] + torch.as_tensor(obs[:, STATE_DIM:STATE_DIM + 3])
    return push_obs_fn(task, wanted)(state, target).numpy()


def policy_states(run, trainer, ctl, env, layout, obs, labels, n: int, rounds: int, seed: int,
                  log) -> dict:
    """DAgger on real states: ``rounds`` x ``n`` lockstep episodes of the policy (the run's
    newest, then each round's refit), every visited state labelled by the run's newest model's
    planner as the distiller labels real rows (its ``label_episodes``); returns the grown
    ``obs``, ``labels`` and each round's successes."""
    from mbrl_robot.core.algorithms.distill import push_distill_agent
    from mbrl_robot.core.algorithms.mpc_recipe import run_episode
    from mbrl_robot.core.control import PushController
    _, policy, _, model = newest(run)
    distiller = push_distill_agent(trainer, log=lambda m: None, model=model)
    distiller.expert.set_model(model)
    if distiller.gtask.obs_layout != layout:
        raise ValueError(f'the distiller sees {distiller.gtask.obs_layout!r}, the labels '
                         f'{layout!r}')
    radius = float(ctl['task']['success_radius_m'])
    successes = []
    for r in range(rounds):
        control = PushController.from_params(ctl, clock=lambda: 0.0)
        control.policies.set_model(model, 1)
        control.policies.set_policy(policy, 1, layout)
        wins = 0
        for i in range(n):
            episode = seed + r * n + i
            states, acts, target, _ = run_episode(env, control, {
                'seed': episode, 'index': i, 'policy': 'policy', 'stage': 'eval_p'})
            wins += int(np.linalg.norm(states[-1, 14:16] - target[:2]) < radius)
            steps = len(acts)
            distiller.add_transitions(states[:-1], acts, states[1:], np.tile(target, (steps, 1)),
                                      np.full(steps, episode), np.arange(steps))
        control.close()
        distiller.label_episodes(np.flatnonzero(np.isnan(distiller.real_labels[:, 0])))
        new_obs, new_labels = distiller.labelled()
        successes.append(wins)
        log(f'round {r}: the policy succeeded {wins}/{n}, {len(new_obs)} labels on its states')
        obs_all = np.concatenate([obs, new_obs])
        labels_all = np.concatenate([labels, new_labels])
        if r < rounds - 1:
            policy = fit_policy(obs_all, labels_all, trainer['distill'],
                                int(trainer['distill']['seed']) + 20_000, log)['policy']
    return {'obs': obs_all, 'labels': labels_all, 'successes': successes,
            'seeds': [seed, seed + rounds * n - 1]}


def smooth(labels: np.ndarray, seq: np.ndarray, k: int) -> np.ndarray:
    """Each label replaced by the mean of its own and the next ``k - 1`` labels of the same
    sequence (fewer at a sequence's end)."""
    out = np.empty_like(labels)
    n = len(labels)
    for i in range(n):
        j = i + 1
        while j < min(n, i + k) and seq[j] == seq[i]:
            j += 1
        out[i] = labels[i:j].mean(0)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('labels', help='FILE.npz from distill_replay.py --save-labels')
    ap.add_argument('run', help='the recorded run the labels came from (its params and rows)')
    ap.add_argument('--set', action='append', default=[], metavar='trainer.distill.KEY=VALUE',
                    help='fit overrides (e.g. trainer.distill.epochs=200)')
    ap.add_argument('--smooth', type=int, default=1, metavar='K',
                    help='label = mean of the next K labels of its sequence (1: as saved)')
    ap.add_argument('--fit-seeds', type=int, default=3, metavar='K', help='fits per arm')
    ap.add_argument('--eval-seed', type=int, default=2000, help='first evaluation seed')
    ap.add_argument('--episodes', type=int, default=40, help='evaluation episodes')
    ap.add_argument('--threads', type=int, default=1, help='torch threads')
    ap.add_argument('--policy-episodes', type=int, default=0, metavar='N',
                    help='DAgger on real states first: N lockstep policy episodes per round')
    ap.add_argument('--rounds', type=int, default=1, help='rounds of --policy-episodes')
    ap.add_argument('--policy-seed', type=int, default=3000,
                    help='first seed of the policy episodes (not a validation or test seed)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    try:
        sets = parse_sets(args.set)
        if set(sets) - {'trainer'} or set(sets.get('trainer', {})) - {'distill'}:
            raise ValueError(f'only trainer.distill.* can be set, got {args.set}')
        if min(args.smooth, args.fit_seeds, args.episodes, args.rounds) < 1:
            raise ValueError('--smooth, --fit-seeds, --episodes and --rounds must be >= 1')
        if args.policy_episodes and args.smooth > 1:
            raise ValueError('--smooth cannot follow the sequences of --policy-episodes')
        trainer = node_params(f'{args.run}/params.yaml', 'trainer',
                              overrides=sets.get('trainer'))
        ctl = node_params(f'{args.run}/params.yaml', 'controller')
        twin = node_params(f'{args.run}/params.yaml', 'twin')
        with np.load(args.labels) as f:
            obs, labels = f['obs'], f['labels']
            n_real, layout = int(f['real_rows']), str(f['obs_layout'])
            # The replay's rollout length (absent from the first saved files: the run's own).
            length = int(f['rollout_length'] if 'rollout_length' in f.files
                         else trainer['distill']['model_rollout_length'])
        if len(obs) != len(labels) or labels.ndim != 2 or not 0 <= n_real <= len(obs):
            raise ValueError(f'{args.labels}: {len(obs)} observations, labels of shape '
                             f'{labels.shape}, {n_real} real rows: not one label per row')
        if not (np.isfinite(obs).all() and np.isfinite(labels).all()):
            raise ValueError(f'{args.labels}: observations or labels that are not finite')
        wanted = DISTILL_OBSERVATIONS[trainer['distill']['observation']]
        obs = observe(obs, layout, wanted, PushTask.from_config(trainer['task']))
        layout = wanted
        if args.smooth > 1:
            seq = sequences(args.run, n_real, len(obs) - n_real, length)
            labels = smooth(labels, seq, args.smooth)
    except (OSError, ValueError, KeyError) as e:
        print(f'distill_fit: {e}', file=sys.stderr)
        return 2
    from mbrl_robot.sim.push_env import PushEnv
    env = PushEnv(twin['task'], physics=twin['physics'], realism=twin['realism'],
                  variant=twin['variant'])
    seeds = np.arange(args.eval_seed, args.eval_seed + args.episodes)
    cfg = trainer['distill']
    log = (lambda m: print(m, file=sys.stderr))
    dagger = None
    if args.policy_episodes:
        dagger = policy_states(args.run, trainer, ctl, env, layout, obs, labels,
                               args.policy_episodes, args.rounds, args.policy_seed, log)
        obs, labels = dagger.pop('obs'), dagger.pop('labels')
    fits, policies = [], []
    for k in range(args.fit_seeds):
        fit = fit_policy(obs, labels, cfg, int(cfg['seed']) + 20_000 + k, log)
        policies.append(fit['policy'])
        fits.append({'train_mse': fit['train_mse'], 'val_mse': fit['val_mse'],
                     'wall_s': fit['wall_s'],
                     'result': evaluate(env, ctl, fit['policy'], seeds, 'policy',
                                        obs_layout=layout)})
    out = {'labels': args.labels, 'run': args.run, 'set': sets, 'smooth': args.smooth,
           'rows': len(obs), 'real_rows': n_real, 'policy_episodes': dagger,
           'eval_seeds': [int(seeds[0]), int(seeds[-1])], 'fits': fits,
           'mean_success': float(np.mean([f['result']['success_rate'] for f in fits]))}
    if len(policies) > 1:
        out['mean_of_policies'] = evaluate(env, ctl, PolicyEnsemble(policies), seeds, 'policy',
                                           obs_layout=layout)
    env.close()
    out['wall_s'] = time.monotonic() - t0
    print(json.dumps(out), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
