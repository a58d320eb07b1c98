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
"""The lecture's pushing recipe in one process, with the same parts as the node graph.

``run_recipe`` runs what the recipe node orchestrates (random episodes, train, MPC episodes,
retrain, evaluation on held-out seeds, baselines) directly on a :class:`PushEnv`, with the
controller node's own control step (:class:`PushController`: plan deadline and fallback, goal
hold, disagreement scale, command filter) and the trainer's model factory, so learning results
measured here carry over to the graph: only the transport differs. It is what the benchmarks
and the learning regression test run, and it writes the same ``summary.json`` as the recipe
node, so one report generator serves both. The model fit is the generic recipe's
(:func:`mbrl_robot.core.algorithms.recipe.fit_ensemble`); :func:`~mbrl_robot.core.algorithms.
recipe.run_mbrl` is the same recipe on any gymnasium env, without the push controller.
"""

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from mbrl_robot.core.control import PushController
from mbrl_robot.core.algorithms.recipe import fit_ensemble
from mbrl_robot.core.tasks.push import ACTION_DIM, PUCK, STATE_DIM
from mbrl_robot.core.types import TransitionBatch

POLICIES = ('planner', 'random', 'zero', 'policy')


def build_phases(p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The recipe as a list of phases, from the ``recipe`` parameters.

    Deterministic from the parameters, so a stopped run resumes at the phase it reached. With
    ``policy_episodes_per_iteration`` K > 0 the last K episodes of every iteration from
    ``policy_episodes_from_iteration`` on are the trained policy's (stage ``dagger``: DAgger on
    real states, the planner labels them at the next retrain); the seeds are the same.

    Raises:
        ValueError: more policy episodes than MPC episodes per iteration, an unknown baseline.
    """
    n, k = p['mpc_episodes_per_iteration'], p.get('policy_episodes_per_iteration', 0)
    if k > n:
        raise ValueError(f'recipe.policy_episodes_per_iteration ({k}) is more than '
                         f'mpc_episodes_per_iteration ({n})')
    first = p.get('policy_episodes_from_iteration', 1)
    phases = [{'kind': 'episode', 'stage': 'random', 'policy': 'random', 'iteration': 0,
               'seed': p['seed'] + i} for i in range(p['random_episodes'])]
    seed = p['seed'] + p['random_episodes']
    phases.append({'kind': 'train', 'iteration': 0})
    for it in range(1, p['iterations'] + 1):
        for j in range(n):
            driven = it >= first and j >= n - k
            phases.append({'kind': 'episode', 'stage': 'dagger' if driven else 'mpc',
                           'policy': 'policy' if driven else 'planner',
                           'iteration': it, 'seed': seed})
            seed += 1
        phases.append({'kind': 'train', 'iteration': it})
    for policy in ['planner'] + [b for b in p['baselines'] if b]:
        if policy not in POLICIES:
            raise ValueError(f'unknown baseline {policy!r}: use random, zero or policy')
        for i in range(p['evaluation_episodes']):
            phases.append({'kind': 'episode', 'stage': f'eval_{policy}', 'policy': policy,
                           'iteration': p['iterations'], 'seed': p['evaluation_seed'] + i})
    for index, phase in enumerate(phases):
        phase['index'] = index
    return phases


def summarize(results: List[Dict[str, Any]], trainings: List[Dict[str, Any]],
              plan_ms: List[float], wall_s: float, success_radius: float,
              **extra) -> Dict[str, Any]:
    """The run summary both the recipe node and :func:`run_recipe` write as summary.json."""
    stages: Dict[str, Dict[str, Any]] = {}
    for r in results:
        stages.setdefault(r['stage'], []).append(r)
    ms = np.asarray(plan_ms if plan_ms else [0.0])
    return {
        'wall_s': wall_s, 'success_radius_m': success_radius,
        'transitions_used': sum(r['steps'] for r in results
                                if not r['stage'].startswith('eval')),
        'stages': {k: {'episodes': len(v),
                       'success_rate': float(np.mean([r['success'] for r in v])),
                       'mean_final_distance': float(np.mean([r['final_distance'] for r in v]))}
                   for k, v in stages.items()},
        'plan_latency_ms': {'median': float(np.median(ms)), 'p99': float(np.percentile(ms, 99)),
                            'max': float(ms.max()), 'count': len(plan_ms)},
        'episodes': results, 'trainings': trainings, 'plan_ms': list(map(float, plan_ms)),
        **extra}


def episode_result(phase: Dict[str, Any], states: np.ndarray, target: np.ndarray,
                   success_radius: float, wall_s: float) -> Dict[str, Any]:
    """Per-episode figures from the visited states (T+1, 17)."""
    d = np.linalg.norm(states[:, PUCK] - target, axis=-1)
    return {**phase, 'steps': len(states) - 1, 'return': -float(d[1:].sum()),
            'initial_distance': float(d[0]), 'final_distance': float(d[-1]),
            'min_distance': float(d.min()), 'success': bool(d[-1] < success_radius),
            'wall_s': wall_s}


def run_recipe(cfg: Dict[str, Dict[str, Any]], env, run_dir: Optional[str] = None,
               log: Callable[[str], None] = print, label: str = '') -> Dict[str, Any]:
    """Run the recipe in-process on ``env`` and return (and optionally write) its summary.

    Plain data in: ``mbrl_robot/inprocess.py:run_profile`` reads a profile into ``cfg``, builds
    the twin and writes the run's ``params.yaml`` around this.

    Args:
        cfg: ``{'twin', 'trainer', 'controller', 'recipe': nested parameters}``, complete, as the
            nodes see them (``mbrl_robot.config.node_params``).
        env: the lockstep twin (a :class:`PushEnv`-like gymnasium env with the 17-D state and
            ``info['target']`` from ``reset``).
        run_dir: if set, ``summary.json`` is written there after every phase.
        log: progress sink.
        label: the profile name recorded in the summary.

    Returns:
        The summary dict (see :func:`summarize`).
    """
    ctl = cfg['controller']
    task = ctl['task']
    # The env is a lockstep twin: its sim time stands still while the controller plans, so the
    # plan deadline (measured on the control clock) never passes, exactly as under the node graph's
    # lockstep twin. A realtime twin's clock runs on and enforces it.
    control = PushController.from_params(ctl, clock=lambda: 0.0)
    device = control.policies.device
    tcfg = cfg['trainer']
    radius = task['success_radius_m']
    data: List[TransitionBatch] = []
    targets: List[np.ndarray] = []  # the target of each episode in data
    results: List[Dict[str, Any]] = []
    trainings: List[Dict[str, Any]] = []
    plan_ms: List[float] = []
    model, version = None, 0
    # trainer.algorithm distill: every model also distils the planner into the policy the
    # controller runs (controller.mode policy), as the trainer node does.
    distiller = None
    if tcfg['algorithm'] == 'distill':
        from mbrl_robot.core.algorithms.distill import push_distill_agent
        distiller = push_distill_agent(tcfg, log)
    elif tcfg['algorithm'] != 'ensemble':
        raise ValueError(f"run_recipe: trainer.algorithm {tcfg['algorithm']!r} runs through "
                         'the node graph only (mbrl_run); in-process: ensemble or distill')
    fed = 0
    t0 = time.monotonic()
    phases = build_phases(cfg['recipe'])
    learned = sorted({ph['stage'] for ph in phases if ph.get('policy') == 'policy'})
    if learned and distiller is None and ctl['mode'] == 'planner':
        raise ValueError(f'run_recipe: {", ".join(learned)} episodes run the trained policy; '
                         'in-process only trainer.algorithm distill trains one')
    for phase in phases:
        tp = time.monotonic()
        if phase['kind'] == 'train':
            batch = TransitionBatch.concat(data)
            seed = int(tcfg['training']['seed']) + version
            model, fit = fit_ensemble(model, batch, tcfg['model'], tcfg['training'], STATE_DIM,
                                      ACTION_DIM, device, seed, tcfg['warm_start'])
            version += 1
            control.policies.set_model(model, version)
            policy_fit = {}
            if distiller is not None:
                for i in range(fed, len(data)):
                    d = data[i]
                    distiller.add_transitions(d.obs, d.act, d.next_obs,
                                              np.repeat(targets[i][None], len(d), 0),
                                              np.full(len(d), i), np.arange(len(d)))
                fed = len(data)
                policy_fit = distiller.catch_up(model)
                control.policies.set_policy(distiller.policy(), version,
                                            distiller.gtask.obs_layout)
            trainings.append({**phase, 'version': version, 'n_transitions': len(batch),
                              'val_loss': fit.best_val_loss, 'epochs': fit.epochs,
                              'train_losses': fit.train_losses, 'val_losses': fit.val_losses,
                              'wall_s': time.monotonic() - tp,
                              **({'policy': policy_fit} if policy_fit else {})})
            log(f'[{phase["index"] + 1}/{len(phases)}] model v{version} on {len(batch)} '
                f'transitions: val loss {fit.best_val_loss:.4f}, {fit.epochs} epochs, '
                f'{time.monotonic() - tp:.1f} s')
        else:
            states_arr, acts, target, ep_ms = run_episode(env, control, phase)
            plan_ms += ep_ms
            if not phase['stage'].startswith('eval'):
                d = np.linalg.norm(states_arr[1:, PUCK] - target, axis=-1)
                done = np.zeros(len(acts), dtype=bool)
                done[-1] = True
                data.append(TransitionBatch(states_arr[:-1].astype(np.float32),
                                            acts.astype(np.float32),
                                            states_arr[1:].astype(np.float32),
                                            (-d).astype(np.float32), done))
                targets.append(target)
            result = episode_result(phase, states_arr, target, radius, time.monotonic() - tp)
            results.append(result)
            log(f'[{phase["index"] + 1}/{len(phases)}] {phase["stage"]} seed {phase["seed"]}: '
                f'final {result["final_distance"]:.3f} m (min {result["min_distance"]:.3f}), '
                f'{"success" if result["success"] else "failure"}')
        if run_dir:
            _write(run_dir, summarize(results, trainings, plan_ms, time.monotonic() - t0,
                                      radius, profile=label, complete=False,
                                      **_counts(control)))
    control.close()
    summary = summarize(results, trainings, plan_ms, time.monotonic() - t0, radius,
                        profile=label, complete=True, torch_threads=torch.get_num_threads(),
                        **_counts(control))
    if run_dir:
        _write(run_dir, summary)
    return summary


def run_episode(env, control: PushController, phase: Dict[str, Any]):
    """One episode of ``phase`` on ``env`` through the controller's own step.

    The env stands in for a lockstep twin: each state is new (stamped by its step) and the
    episode ends at the controller's terminal row. Returns the visited states (T+1, 17), the
    executed actions (T, 7), the target and the plan times (ms).
    """
    obs, info = env.reset(seed=phase['seed'])
    target = np.asarray(info['target'], dtype=np.float64)
    control.policies.set_target(target)
    control.reset_command()  # the twin starts each episode at rest
    # As the recipe node marks them: training episodes explore (policy mode adds noise).
    control.start_episode(phase['index'], phase['policy'],
                          explore=not phase['stage'].startswith('eval'))
    states, acts, plan_ms = [np.asarray(obs, dtype=np.float64)], [], []
    dt = control.filter.dt
    while True:
        stamp = len(acts) * dt
        tick = control.tick(states[-1], stamp, stamp, target)
        if tick.event != 'act':
            break
        if 'plan_time_ms' in tick.info:  # absent while holding at the goal
            plan_ms.append(tick.info['plan_time_ms'])
        obs, _, _, _, _ = env.step(tick.action)
        acts.append(tick.action)
        states.append(np.asarray(obs, dtype=np.float64))
    if tick.event != 'done':
        raise RuntimeError(f'episode {phase["index"]} stopped on {tick.event!r}')
    return np.stack(states), np.stack(acts), target, plan_ms


def _counts(control: PushController) -> Dict[str, int]:
    """The controller's tick and deadline-miss counts, as the recipe node reports them."""
    return {'deadline_misses': control.stats['deadline_misses'],
            'controller_ticks': control.stats['ticks']}


def _write(run_dir: str, summary: Dict[str, Any]) -> None:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, 'summary.json')
    with open(path + '.tmp', 'w') as f:
        json.dump(summary, f, indent=1)
    os.replace(path + '.tmp', path)
