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
"""The library on public gymnasium tasks, CPU-sized; prints JSON lines with learning curves.

Methods (``--methods``):

* ``cem``: :func:`mbrl_robot.core.algorithms.recipe.run_mbrl` with CEM on the ensemble mean;
* ``pets``: the same recipe with PETS (CEM over ``ts_inf`` particles);
* ``mbpo``: :func:`mbrl_robot.core.algorithms.mbpo.run_sac_loop` (SAC on real and model data)
  behind a thin wrapper that scales actions to [-1, 1] and reports the return so far;
* ``--mbrl-lib``: mbrl-lib's PETS on the same env, budget and planner size, when ``import
  mbrl`` works; otherwise its line says it was skipped.

Tasks (``--envs``): ``Pendulum-v1`` (the quick smoke), ``InvertedPendulum-v5`` (with its
termination), ``Reacher-v5``, ``HalfCheetah-v5`` and ``MountainCarContinuous-v0``; the reward
and termination functions are :data:`mbrl_robot.core.tasks.gym_tasks.GYM_TASKS`. The MuJoCo
tasks need ``gymnasium[mujoco]``; without it their lines say they were skipped. Long episodes
are capped (``cap`` below) to keep a run on a CPU; the curve reports the env's own reward.

One line per (env, method, seed): ``curve`` ([env steps at the end of the episode, return] per
episode, random episodes first), ``final_return`` (mean of the last two learner episodes),
``random_return`` (mean of five random-action episodes of the same length cap), ``fits``
(transitions, validation loss, epochs), ``plan_ms_median``, ``wall_s``; then one ``aggregate``
line per (env, method) over the seeds.

Usage::

    python benchmarks/gym_suite.py --envs Pendulum-v1 --quick
    python benchmarks/gym_suite.py --envs InvertedPendulum-v5 Reacher-v5 --methods cem pets \\
        --steps 3000 --seeds 0 1 2 [--mbrl-lib] [--out results.jsonl]
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from results_io import json_lines, print_table

from mbrl_robot.core.algorithms.recipe import random_policy_returns, run_mbrl
from mbrl_robot.core.tasks.gym_tasks import GYM_TASKS

MUJOCO = ('InvertedPendulum-v5', 'Reacher-v5', 'HalfCheetah-v5')
METHODS = ('cem', 'pets', 'mbpo')

# Per task: the real-step budget (full / --quick), the episode cap (None: the env's own limit)
# and the planner horizon. Planner sizes are shared (PLANNERS), shrunk by --quick or
# --small-planner (QUICK_PLANNERS; the same sizes for mbrl-lib's PETS).
SETTINGS: Dict[str, Dict[str, Any]] = {
    'Pendulum-v1': {'steps': 2000, 'quick_steps': 600, 'cap': None, 'horizon': 15},
    'MountainCarContinuous-v0': {'steps': 3000, 'quick_steps': 1000, 'cap': 300,
                                 'horizon': 30},
    # InvertedPendulum keeps the env's 1000-step episodes, so 1000 is the top return. MBPO
    # with the MBPO paper's settings for this task (its InvertedPendulum config, as mbrl-lib's
    # mbpo_inv_pendulum.yaml): 400 model rollouts of length 1 per real step, kept for one
    # epoch of 250 steps, 5% real data in SAC's batches, 7 members and 5 elites.
    'InvertedPendulum-v5': {'steps': 3000, 'quick_steps': 400, 'cap': None, 'horizon': 15,
                            'mbpo': {'rollouts_per_step': 400, 'real_ratio': 0.05,
                                     'model_retain_rollouts': 1},
                            'mbpo_model': {'ensemble_size': 7, 'num_elites': 5}},
    'Reacher-v5': {'steps': 2500, 'quick_steps': 500, 'cap': None, 'horizon': 15},
    # HalfCheetah: the env's 1000-step episodes, as in mbrl-lib's published PETS curve.
    'HalfCheetah-v5': {'steps': 20000, 'quick_steps': 600, 'cap': None, 'horizon': 15},
}
PLANNERS = {
    'cem': {'name': 'cem', 'population_size': 200, 'elite_count': 20, 'iterations': 4},
    'pets': {'name': 'pets', 'propagation': 'ts_inf', 'particles': 10, 'population_size': 200,
             'elite_count': 20, 'iterations': 4},
}
QUICK_PLANNERS = {
    'cem': {'name': 'cem', 'population_size': 100, 'elite_count': 10, 'iterations': 3},
    'pets': {'name': 'pets', 'propagation': 'ts_inf', 'particles': 5, 'population_size': 100,
             'elite_count': 10, 'iterations': 3},
}
MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 5, 'num_layers': 3, 'hidden_size': 200}
TRAINING = {'max_epochs': 50, 'patience': 5, 'batch_size': 64}


def make_env(env_id: str, cap: Optional[int]) -> gym.Env:
    """``gym.make(env_id)``, its time limit lowered to ``cap`` when that is shorter."""
    env = gym.make(env_id)
    if cap and (env.spec.max_episode_steps is None or cap < env.spec.max_episode_steps):
        env = gym.make(env_id, max_episode_steps=cap)
    return env


def _final(returns: List[float]) -> Optional[float]:
    return float(np.mean(returns[-2:])) if returns else None


def run_recipe_method(env_id: str, method: str, seed: int, steps: int, quick: bool,
                      log: Callable[[str], None], return_mean: bool = True,
                      horizon: int = 0) -> Dict[str, Any]:
    """``cem`` or ``pets`` through the generic recipe; ``return_mean``: CEM executes its final
    mean (the generic recipe's default, as mbrl-lib's ``return_mean_elites``), else the best
    sample (the pushing stack's); ``horizon``: the planning horizon (0: the task's setting).
    """
    s = SETTINGS[env_id]
    reward_fn, termination_fn = GYM_TASKS[env_id]
    env = make_env(env_id, s['cap'])
    planner = {**(QUICK_PLANNERS if quick else PLANNERS)[method],
               'horizon': horizon or s['horizon'],
               'plan_stats': False, 'return_mean': bool(return_mean)}
    out = run_mbrl(env, reward_fn, {
        'seed': seed, 'random_episodes': 1, 'iterations': 10 ** 6,
        'mpc_episodes_per_iteration': 1, 'max_env_steps': steps, 'model': MODEL,
        'training': TRAINING, 'planner': planner}, termination_fn=termination_fn, log=log)
    mpc = [e for e in out['curve'] if e['stage'] == 'mpc']
    ms = [e['plan_ms_median'] for e in mpc if e['plan_ms_median'] is not None]
    return {'curve': [[e['env_steps'], round(e['return'], 3)] for e in out['curve']],
            'final_return': _final([e['return'] for e in mpc]),
            'env_steps': out['env_steps'], 'wall_s': out['wall_s'],
            'plan_ms_median': float(np.median(ms)) if ms else None, 'planner': planner,
            'fits': [{'n_transitions': f['n_transitions'], 'val_loss': round(f['val_loss'], 5),
                      'epochs': f['epochs'], 'members_improved': f['members_improved']}
                     for f in out['fits']]}


class _UnitActions(gym.Wrapper):
    """What ``run_sac_loop`` expects of an env: actions in [-1, 1] (scaled to the env's box),
    ``info['state']`` (the obs), a constant ``info['goal']``, and at each step
    ``info['distance']`` = minus the return so far (so its "final distance" is -return)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lb = env.action_space.low.astype(np.float64)
        self.ub = env.action_space.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)
        self.total = 0.0

    def scale(self, a):
        return self.lb + (a + 1.0) * 0.5 * (self.ub - self.lb)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.total = 0.0
        return obs, {**info, 'state': obs, 'goal': np.zeros(1)}

    def step(self, action):
        obs, r, terminated, truncated, info = self.env.step(
            self.scale(np.clip(action, -1.0, 1.0)).astype(np.float32))
        self.total += float(r)
        return obs, r, terminated, truncated, {**info, 'state': obs, 'goal': np.zeros(1),
                                               'distance': -self.total, 'is_success': False}


def run_mbpo_method(env_id: str, seed: int, steps: int, quick: bool,
                    log: Callable[[str], None], overrides: Optional[Dict[str, Any]] = None,
                    model_overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """MBPO through ``core.algorithms.mbpo.run_sac_loop`` on the wrapped env.

    The task's ``mbpo`` and ``mbpo_model`` settings (``SETTINGS``) replace keys of the
    ``trainer.mbpo`` block and of the ensemble's; ``overrides`` (``--mbpo-set``) and
    ``model_overrides`` (``--model-set``) replace them in turn.
    """
    from mbrl_robot.core.algorithms.mbpo import run_sac_loop
    from mbrl_robot.core.schema import schema_defaults
    from mbrl_robot.core.types import GoalTask
    s = SETTINGS[env_id]
    reward_fn, termination_fn = GYM_TASKS[env_id]
    env = _UnitActions(make_env(env_id, s['cap']))
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    lb = torch.as_tensor(env.lb, dtype=torch.float32)
    ub = torch.as_tensor(env.ub, dtype=torch.float32)

    def scaled(a):
        return lb + (a + 1.0) * 0.5 * (ub - lb)

    gtask = GoalTask(state_dim=obs_dim, goal_dim=1, act_dim=act_dim, obs_layout='gym_obs',
                     make_obs=lambda state, goal: state,
                     reward_fn=lambda nxt, a, goal: reward_fn(nxt, scaled(a)))
    term = None if termination_fn is None else (lambda nxt, a: termination_fn(nxt, scaled(a)))
    cfg = {**schema_defaults('trainer', 'mbpo'), 'total_steps': steps,
           'init_random_steps': min(250, steps // 4), 'model_train_freq': 250,
           'rollout_freq': 250, 'gradient_steps': 5 if quick else 10, 'seed': seed,
           **s.get('mbpo', {}), **(overrides or {})}
    model_cfg = {**MODEL, **s.get('mbpo_model', {}), **(model_overrides or {})}
    evals = sorted({min(steps, b) for b in range(500, steps + 500, 500)})
    out = run_sac_loop(env, gtask, cfg, seed, True, model_cfg, TRAINING, eval_at=evals,
                       eval_seeds=[10 ** 5 + i for i in range(3)], log=log,
                       termination_fn=term)
    # Evaluations run at episode ends, so two budgets can land on one episode: keep one.
    points = {c['transitions']: round(-c['mean_final_distance'], 3) for c in out['curve']}
    curve = [[n, r] for n, r in sorted(points.items())]
    return {'curve': curve, 'curve_kind': 'deterministic policy, 3 held-out episodes',
            'final_return': curve[-1][1] if curve else None, 'env_steps': out['transitions'],
            'wall_s': out['wall_s'], 'gradient_steps': out['gradient_steps'],
            'mbpo_cfg': {k: v for k, v in cfg.items() if k != 'sac'}, 'model_cfg': model_cfg,
            'fits': [{k: f.get(k) for k in ('n_transitions', 'val_loss', 'epochs')}
                     for f in out['model_fits']]}


def run_mbrl_lib_pets(env_id: str, seed: int, steps: int, quick: bool,
                      log: Callable[[str], None], horizon: int = 0) -> Dict[str, Any]:
    """mbrl-lib's PETS (its own ensemble, trainer and CEM agent) with the same budget, model
    and planner sizes and the same reward / termination functions.

    The loop of mbrl-lib's ``pets_example.ipynb``: one random episode, then before each planned
    episode a fit on everything so far (bootstrapped, 10% validation, patience), TS-infinity
    particles (``fixed_model``), CEM returning the mean of the last elites (mbrl-lib's choice).
    Run with mbrl-lib 0.2.0 from PyPI in its own venv, beside gymnasium 1.4.0 and mujoco 4.0.0
    (mbrl 0.2.0 pins gymnasium 0.26.3 and hydra-core 1.0.3, but runs with the newer ones: the
    loop above only uses the 5-tuple step API); see docs/results/public_benchmarks.md for the
    exact install.
    """
    import mbrl.models as models
    import mbrl.planning as planning
    import mbrl.util.common as common_util
    import omegaconf
    s = SETTINGS[env_id]
    reward_fn, termination_fn = GYM_TASKS[env_id]
    env = make_env(env_id, s['cap'])
    planner = (QUICK_PLANNERS if quick else PLANNERS)['pets']
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = omegaconf.OmegaConf.create({
        # _recursive_ off: hydra >= 1.1 would build the activation itself and hand
        # GaussianMLP a module where it expects a config. GaussianMLP's num_layers counts
        # hidden layers (in -> h, then num_layers - 1 times h -> h), as ours does.
        'dynamics_model': {'_target_': 'mbrl.models.GaussianMLP', '_recursive_': False,
                           'device': 'cpu', 'num_layers': MODEL['num_layers'],
                           'ensemble_size': MODEL['ensemble_size'],
                           'hid_size': MODEL['hidden_size'], 'in_size': '???',
                           'out_size': '???', 'deterministic': False,
                           'propagation_method': 'fixed_model',
                           'activation_fn_cfg': {'_target_': 'torch.nn.SiLU'}},
        'algorithm': {'learned_rewards': False, 'target_is_delta': True, 'normalize': True},
        'overrides': {'trial_length': s['cap'] or env.spec.max_episode_steps,
                      'num_steps': steps, 'model_batch_size': TRAINING['batch_size'],
                      'validation_ratio': 0.1}})
    model = common_util.create_one_dim_tr_model(cfg, obs_shape, act_shape)

    def lib_reward(act, next_obs):
        return reward_fn(next_obs, act).reshape(-1, 1)

    def lib_term(act, next_obs):
        if termination_fn is None:
            return torch.zeros(len(next_obs), 1, dtype=torch.bool, device=next_obs.device)
        return termination_fn(next_obs, act).reshape(-1, 1)

    model_env = models.ModelEnv(env, model, lib_term, lib_reward, generator=generator)
    buffer = common_util.create_replay_buffer(cfg, obs_shape, act_shape, rng=rng)
    agent_cfg = omegaconf.OmegaConf.create({
        '_target_': 'mbrl.planning.TrajectoryOptimizerAgent', '_recursive_': False,
        'planning_horizon': horizon or s['horizon'],
        'replan_freq': 1, 'verbose': False, 'action_lb': '???', 'action_ub': '???',
        'optimizer_cfg': {'_target_': 'mbrl.planning.CEMOptimizer',
                          'num_iterations': planner['iterations'],
                          'elite_ratio': planner['elite_count'] / planner['population_size'],
                          'population_size': planner['population_size'], 'alpha': 0.1,
                          'device': 'cpu', 'lower_bound': '???', 'upper_bound': '???',
                          'return_mean_elites': True, 'clipped_normal': False}})
    agent = planning.create_trajectory_optim_agent_for_model(
        model_env, agent_cfg, num_particles=planner['particles'])
    trainer = models.ModelTrainer(model, optim_lr=1e-3, weight_decay=5e-5)
    t0 = time.monotonic()
    curve, n, episode = [], 0, 0
    env.action_space.seed(seed)
    random_agent = planning.RandomAgent(env)
    while n < steps:
        obs, _ = env.reset(seed=seed + episode)
        agent.reset()
        if episode > 0:  # train on everything so far before each planned episode
            model.update_normalizer(buffer.get_all())
            train, val = common_util.get_basic_buffer_iterators(
                buffer, TRAINING['batch_size'], 0.1, ensemble_size=MODEL['ensemble_size'],
                shuffle_each_epoch=True, bootstrap_permutes=False)
            trainer.train(train, dataset_val=val, num_epochs=TRAINING['max_epochs'],
                          patience=TRAINING['patience'])
        total, done = 0.0, False
        while not done:
            act_with = random_agent if episode == 0 else agent
            obs, r, terminated, truncated, _ = common_util.step_env_and_add_to_buffer(
                env, obs, act_with, {}, buffer)
            total += float(r)
            n += 1
            done = terminated or truncated
        curve.append([n, round(total, 3)])
        log(f'mbrl-lib pets episode {episode}: return {total:.1f}, {n} env steps')
        episode += 1
    return {'curve': curve, 'final_return': _final([c[1] for c in curve[1:]]),
            'env_steps': n, 'wall_s': time.monotonic() - t0, 'planner': planner}


# A return that counts as "solved" for the table's steps-to-target column (first episode end,
# or MBPO evaluation, at or above it): InvertedPendulum's top return, the published PETS/MBPO
# Reacher level, a swung-up Pendulum.
TARGETS = {'Pendulum-v1': -200.0, 'InvertedPendulum-v5': 1000.0, 'Reacher-v5': -10.0}
METHOD_NAMES = {'cem': 'mbrl_robot CEM', 'pets': 'mbrl_robot PETS', 'mbpo': 'mbrl_robot MBPO',
                'mbrl_lib_pets': 'mbrl-lib 0.2.0 PETS'}


def stopped_unimproved(line: Dict[str, Any]) -> bool:
    """True for a run from before session 19 (its fits carry no ``members_improved``) in which
    some fit stopped after exactly ``patience`` epochs: no member had improved, and the rule of
    the time (patience from the first epoch, not from the first improvement,
    ``core/models/trainer.py``) handed the old model back. Runs without such a fit would have
    trained the same under today's rule."""
    fits = line.get('fits') or []
    if isinstance(fits, str):  # a few early lines stored the list's repr
        fits = ast.literal_eval(fits)
    return bool(fits) and 'members_improved' not in fits[0] and any(
        f['epochs'] == TRAINING['patience'] for f in fits)


def table(paths: List[str]) -> str:
    """A Markdown table (one row per env and method) from the per-seed JSON lines in ``paths``."""
    runs: Dict[Any, List[Dict[str, Any]]] = {}
    for line in json_lines(paths):
        if 'curve' in line and not line.get('aggregate'):
            # Lines without the key are from before the mean became the default.
            best = line['method'] in ('cem', 'pets') and not line['planner'].get(
                'return_mean', False)
            early = line['method'] in ('cem', 'pets') and stopped_unimproved(line)
            runs.setdefault((line['env'], line['method'] + (
                ' (executes the best sample)' if best else '') + (
                ' (patience from the first epoch)' if early else '') + (
                f" ({line['variant']})" if line.get('variant') else '')),
                []).append(line)
    rows = ['| env | method | planner | budget (real steps) | seeds | final return per seed '
            '(mean) | best episode per seed | first episode at target (steps, per seed) '
            '| random | wall s per run |',
            '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    envs = list(dict.fromkeys(env_id for env_id, _ in runs))  # each env's rows together
    for (env_id, method), lines in sorted(runs.items(), key=lambda kv: envs.index(kv[0][0])):
        lines = sorted(lines, key=lambda ln: ln['seed'])
        finals = [ln['final_return'] for ln in lines]
        target = TARGETS.get(env_id)
        reach, best = [], []
        for ln in lines:
            best.append(max(r for _, r in ln['curve'][(0 if method == 'mbpo' else 1):]))
            hits = [n for n, r in ln['curve'][(0 if method == 'mbpo' else 1):] if r >= target] \
                if target is not None else []
            reach.append(str(hits[0]) if hits else '-')
        planner = ln.get('planner')
        size = (f"{planner['population_size']}x{planner['iterations']}"
                + (f", {planner['particles']} particles" if 'particles' in planner else '')
                if planner else 'SAC')
        name = method.split(' ')[0]
        label = METHOD_NAMES.get(name, name) + method[len(name):]
        rows.append(
            f"| {env_id} | {label} | {size} | {lines[0]['budget']} "
            f"| {', '.join(str(ln['seed']) for ln in lines)} "
            f"| {', '.join(f'{x:.1f}' for x in finals)} ({np.mean(finals):.1f}) "
            f"| {', '.join(f'{x:.1f}' for x in best)} "
            f"| {', '.join(reach) + f' (>= {target:g})' if target is not None else 'n/a'} "
            f"| {np.mean([ln['random_return'] for ln in lines]):.1f} "
            f"| {np.mean([ln['total_wall_s'] for ln in lines]):.0f} |")
    return '\n'.join(rows)


def schema_keys(block: str) -> List[str]:
    """The keys the trainer's ``block`` declares (what ``--mbpo-set``/``--model-set`` accept)."""
    from mbrl_robot.core.schema import schema_defaults
    return list(schema_defaults('trainer', block))


def parse_overrides(items: Sequence[str], known: Sequence[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` pairs (values as JSON, else strings); an unknown key is an error."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        if not sep or key not in known:
            raise ValueError(f'{item!r}: expected KEY=VALUE with KEY one of {", ".join(known)}')
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def variant(method: str, horizon: int, mbpo_overrides: Dict[str, Any],
            model_overrides: Dict[str, Any]) -> str:
    """What a run changed from the suite's settings, in words ('' for none): the table keeps
    such runs in rows of their own."""
    if method == 'mbpo':
        return ', '.join(f'{k}={v}' for k, v in {**mbpo_overrides, **model_overrides}.items())
    return f'horizon {horizon}' if horizon else ''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--envs', nargs='+', default=['Pendulum-v1'], choices=list(SETTINGS))
    ap.add_argument('--methods', nargs='*', default=['cem', 'pets'], choices=METHODS,
                    help='methods of this library; none with --mbrl-lib runs mbrl-lib alone '
                    '(e.g. in a second process beside the run of this library)')
    ap.add_argument('--steps', type=int, default=0,
                    help='real-step budget per run (default: the task setting)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--quick', action='store_true',
                    help='smaller budget and planner (a smoke run, minutes per env on a CPU)')
    ap.add_argument('--small-planner', action='store_true',
                    help='the --quick planner sizes (CEM/PETS, ours and mbrl-lib PETS) at the '
                    'full or --steps budget: about 4x cheaper per step on a CPU')
    output = ap.add_mutually_exclusive_group()
    output.add_argument('--best-sample', action='store_true',
                        help="our CEM/PETS execute the best sample seen (the pushing stack's "
                        'choice) instead of the final CEM mean (the default, as mbrl-lib)')
    output.add_argument('--return-mean', action='store_true',
                        help='the default since session 14 (kept for the earlier commands)')
    ap.add_argument('--horizon', type=int, default=0,
                    help="planning horizon of every planner, mbrl-lib's too (default: the "
                    "task's setting)")
    ap.add_argument('--mbrl-lib', action='store_true',
                    help="also run mbrl-lib's PETS where `import mbrl` works")
    ap.add_argument('--random-episodes', type=int, default=5,
                    help='episodes of the random-action baseline per seed')
    ap.add_argument('--mbpo-set', nargs='*', default=[], metavar='KEY=VALUE',
                    help='override keys of the MBPO block (trainer.mbpo in the schema), values '
                    'as JSON, e.g. rollouts_per_step=400 real_ratio=0.05')
    ap.add_argument('--model-set', nargs='*', default=[], metavar='KEY=VALUE',
                    help="override keys of MBPO's ensemble block, e.g. ensemble_size=7 "
                    'num_elites=5')
    ap.add_argument('--threads', type=int, default=1, help='torch threads')
    ap.add_argument('--out', default='', help='also append the JSON lines to this file')
    ap.add_argument('--quiet', action='store_true', help='no per-episode progress on stderr')
    ap.add_argument('--table', nargs='+', default=[],
                    help='print a Markdown table from these JSON-lines files and exit')
    args = ap.parse_args(argv)
    if args.table:
        return print_table(table, args.table, 'gym_suite.py')
    try:
        mbpo_overrides = parse_overrides(args.mbpo_set, schema_keys('mbpo'))
        model_overrides = parse_overrides(args.model_set, schema_keys('model'))
    except ValueError as e:
        ap.error(str(e))
    if args.out:  # before hours of runs, not after the first
        try:
            open(args.out, 'a').close()
        except OSError as e:
            ap.error(f'--out {args.out}: {e.strerror}')
    torch.set_num_threads(args.threads)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))

    def emit(line: Dict[str, Any]) -> None:
        text = json.dumps(line)
        print(text, flush=True)
        if args.out:
            with open(args.out, 'a') as f:
                f.write(text + '\n')

    try:
        import mujoco  # noqa: F401
        have_mujoco = True
    except ImportError:
        have_mujoco = False
    small = args.quick or args.small_planner
    try:  # which code made the numbers (a dirty tree says so)
        code = subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        code = None
    methods = list(args.methods) + (['mbrl_lib_pets'] if args.mbrl_lib else [])
    if not methods:
        ap.error('nothing to run: name --methods, or add --mbrl-lib')
    for env_id in args.envs:
        s = SETTINGS[env_id]
        steps = args.steps or (s['quick_steps'] if args.quick else s['steps'])
        if env_id in MUJOCO and not have_mujoco:
            emit({'env': env_id, 'skipped': 'mujoco is not installed (pip install '
                  '"gymnasium[mujoco]")'})
            continue
        per_method: Dict[str, List[Dict[str, Any]]] = {m: [] for m in methods}
        for seed in args.seeds:
            rand, lengths = random_policy_returns(make_env(env_id, s['cap']),
                                                  args.random_episodes, 10 ** 5 + seed)
            for method in methods:
                head = {'env': env_id, 'method': method, 'seed': seed, 'budget': steps,
                        'horizon': args.horizon or s['horizon'],
                        'variant': variant(method, args.horizon, mbpo_overrides,
                                           model_overrides),
                        'quick': args.quick, 'small_planner': small, 'code': code}
                if method == 'mbrl_lib_pets':
                    try:
                        import mbrl  # noqa: F401
                    except ImportError as e:
                        emit({**head, 'skipped': f'mbrl-lib is not importable ({e})'})
                        continue
                t0 = time.monotonic()
                if method in ('cem', 'pets'):
                    res = run_recipe_method(env_id, method, seed, steps, small, log,
                                            not args.best_sample, args.horizon)
                elif method == 'mbpo':
                    res = run_mbpo_method(env_id, seed, steps, args.quick, log,
                                          mbpo_overrides, model_overrides)
                else:
                    res = run_mbrl_lib_pets(env_id, seed, steps, small, log, args.horizon)
                line = {**head, **res, 'random_return': float(np.mean(rand)),
                        'random_episode_steps': float(np.mean(lengths)),
                        'total_wall_s': time.monotonic() - t0,
                        'torch_threads': torch.get_num_threads()}
                per_method[method].append(line)
                emit(line)
        for method, lines in per_method.items():
            finals = [ln['final_return'] for ln in lines if ln.get('final_return') is not None]
            if not finals:
                continue
            emit({'aggregate': True, 'env': env_id, 'method': method, 'seeds': len(finals),
                  'budget': steps, 'final_return_mean': float(np.mean(finals)),
                  'final_return_std': float(np.std(finals)),
                  'final_return_min': float(np.min(finals)),
                  'final_return_max': float(np.max(finals)),
                  'random_return_mean': float(np.mean([ln['random_return'] for ln in lines])),
                  'wall_s_mean': float(np.mean([ln['total_wall_s'] for ln in lines]))})
    return 0


if __name__ == '__main__':
    sys.exit(main())
