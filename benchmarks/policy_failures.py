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
"""How a recorded run's distilled policy fails, episode by episode, beside its planner.

The run's newest policy (and, with ``--planner``, the planner on the newest model) drives the
lockstep twin (the run's twin parameters) through the controller's own step on ``--episodes``
seeds from ``--eval-seed``; each episode is sorted into one outcome from the tool's and the
puck's paths (the tool's end from the arm's kinematics, as the planner's reward has it):

- ``success``: the puck ends within the success radius;
- ``never_touched``: the tool never came within ``--touch-mm`` of the puck's side;
- ``wrong_way``: the puck moved more than the radius, against the target's direction;
- ``overshoot``: pushed towards the target, past it by more than the radius;
- ``pinned``: the puck moved less than a quarter of its start distance, the tool's end on top
  of the puck (within its radius, below its top) for ``--steps`` steps or more (in the twin a
  tool on the puck presses it into the table: ``benchmarks/failure_modes.py``);
- ``stall``: touched, the puck moved less than a quarter of its start distance;
- ``short``: touched and pushed towards the target, not far enough.

``--takeover T`` also runs, for each stalled or pinned policy episode, the same first T steps
of the policy and then the planner (cold start) to the episode's end: whether the planner
recovers from the states where the policy stalls. ``--labels`` compares, at the stalled
episodes' states, what the labeller (the trainer's planner, as the distiller labels) and the
policy do towards the target; ``--model-rollouts H`` how far the policy moves the puck in the
learned model against the twin. One JSON line per kind::

    python benchmarks/policy_failures.py runs/realworld/ROW/seed0 --planner --takeover 40
"""

import argparse
import json
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.algorithms.mpc_recipe import run_episode
from mbrl_robot.core.control import PushController
from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.policy import load_policy
from mbrl_robot.core.tasks.push import (ACTION_DIM, PUCK_HEIGHT_M, PUCK_RADIUS_M, STATE_DIM,
                                        TOOL_RADIUS_M, PushTask, tool_intrusion)

from failure_modes import REST_Z_M
from policy_latency import newest_with

OUTCOMES = ('success', 'never_touched', 'wrong_way', 'overshoot', 'pinned', 'stall', 'short')


def outcome(tip: np.ndarray, puck: np.ndarray, target: np.ndarray, radius: float,
            touch_m: float = 0.005, on_steps: int = 5) -> Dict[str, float]:
    """The outcome of one episode from the tool's end (T, 3) and the puck (T, 3) paths."""
    d0 = float(np.linalg.norm(puck[0, :2] - target[:2]))
    final = float(np.linalg.norm(puck[-1, :2] - target[:2]))
    gap = np.linalg.norm((tip - puck)[:, :2], axis=1) - (PUCK_RADIUS_M + TOOL_RADIUS_M)
    touched = np.flatnonzero(gap < touch_m)
    move = puck[-1, :2] - puck[0, :2]
    along = float(move @ (target[:2] - puck[0, :2]) / max(d0, 1e-9))
    moved = float(np.linalg.norm(move))
    on_puck = int((tool_intrusion(torch.as_tensor(tip), torch.as_tensor(puck), PUCK_RADIUS_M,
                                  PUCK_HEIGHT_M / 2.0) > 0).sum())
    pressed = int((puck[:, 2] < REST_Z_M - 0.006).sum())
    if final < radius:
        kind = 'success'
    elif len(touched) == 0:
        kind = 'never_touched'
    elif along < 0 and moved > radius:
        kind = 'wrong_way'
    elif along > d0 + radius:
        kind = 'overshoot'
    elif moved < 0.25 * d0:
        kind = 'pinned' if on_puck >= on_steps else 'stall'
    else:
        kind = 'short'
    return {'outcome': kind, 'start_distance': d0, 'final_distance': final, 'moved': moved,
            'along': along, 'first_touch': int(touched[0]) if len(touched) else -1,
            'steps_on_puck': on_puck, 'steps_pressed': pressed}


def newest(run: str):
    """The run's newest model version holding a policy: ``(name, policy, meta, model)``.

    Raises:
        FileNotFoundError: no version holds a policy.
        ValueError: a corrupt checkpoint.
    """
    path = os.path.dirname(newest_with(run, 'policy'))
    policy, meta = load_policy(os.path.join(path, 'policy'))
    model = GaussianEnsemble.load(path, device='cpu', obs_dim=STATE_DIM,
                                  act_dim=ACTION_DIM).eval()
    return os.path.basename(path), policy, meta, model


def _tip_velocity(task: PushTask, q: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The tool's end's velocity in the table plane (per unit of normalised action) that
    ``action`` gives at the state ``q`` (>= 7,), by the arm's kinematics."""
    x = np.tile(np.asarray(q[:STATE_DIM], dtype=np.float32), (2, 1))
    x[1, :ACTION_DIM] += 0.01 * np.asarray(action, dtype=np.float32)
    tip = task.tool_tip(torch.as_tensor(x)).numpy()
    return (tip[1] - tip[0])[:2] / 0.01


def labels_at(states, acts, target, policy, layout, trainer, model, task, steps,
              plans: int = 4) -> Dict[str, list]:
    """What the labeller (the trainer's planner on ``model``, its warm start carried along
    the episode as the distiller labels) says at ``steps`` of a policy episode, against the
    policy: per step, the tool's end's speed towards the target of the mean of ``plans`` plans
    from the same warm start and of the policy's action, and the plans' mean pairwise cosine
    in the table plane."""
    from mbrl_robot.core.algorithms.distill import push_distill_agent
    from mbrl_robot.core.tasks.push import push_obs_fn
    expert = push_distill_agent(trainer, log=lambda m: None, model=model).expert
    expert.set_model(model)
    expert.start(target)
    agent = expert.agent
    optimizer = agent.trajectory_optimizer
    make_obs = push_obs_fn(task, layout)
    goal = torch.as_tensor(target, dtype=torch.float32)[None]
    out = {'step': [], 'label_speed': [], 'policy_speed': [], 'plans_cos': []}
    steps = [t for t in steps if t < len(acts)]  # a shorter episode: its own steps only
    previous = None
    for t in range(max(steps, default=-1) + 1):
        if t in steps:
            warm = optimizer.previous_solution.clone()
            if previous is not None:
                agent.set_last_action(np.clip(previous, -1.0, 1.0))
            tips = []
            for _ in range(plans):
                optimizer.previous_solution = warm.clone()
                tips.append(_tip_velocity(task, states[t], np.asarray(agent.plan(states[t]))[0]))
            optimizer.previous_solution = warm
            way = target[:2] - states[t, 14:16]
            way = way / max(np.linalg.norm(way), 1e-9)
            unit = [v / max(np.linalg.norm(v), 1e-9) for v in tips]
            with torch.no_grad():
                mine = policy(make_obs(torch.as_tensor(states[t], dtype=torch.float32)[None],
                                       goal))[0, :ACTION_DIM].numpy()
            out['step'].append(t)
            out['label_speed'].append(float(np.mean(tips, 0) @ way))
            out['policy_speed'].append(float(_tip_velocity(task, states[t], mine) @ way))
            out['plans_cos'].append(float(np.mean([unit[i] @ unit[j] for i in range(plans)
                                                   for j in range(i + 1, plans)])))
        expert.label(states[t], previous)
        previous = acts[t]
    return out


@torch.no_grad()
def model_rollouts(states, target, policy, layout, model, task, command_filter, steps: int,
                   seed: int) -> list:
    """How far the puck moves when the policy drives ``model`` for ``steps`` steps from the
    episode's first state, once with each member (the twin's own figure is the episode's)."""
    from mbrl_robot.core.algorithms.distill import elite_model
    from mbrl_robot.core.tasks.push import push_goal_task
    gtask = push_goal_task(task, command_filter, layout)
    m = elite_model(model)
    gen = torch.Generator().manual_seed(seed)
    goal = torch.as_tensor(target, dtype=torch.float32)[None]
    moved = []
    for member in range(m.ensemble_size):
        s = torch.as_tensor(states[0], dtype=torch.float32)[None]
        for _ in range(steps):
            a = gtask.action_filter(s.numpy(), policy(gtask.make_obs(s, goal)).numpy())
            a = torch.as_tensor(a[:, :ACTION_DIM], dtype=torch.float32)
            s = m.sample_next(s[None].expand(m.ensemble_size, 1, -1).contiguous(),
                              a[None].expand(m.ensemble_size, 1, -1).contiguous(),
                              generator=gen)[member]
        moved.append(float(np.linalg.norm(s[0, 14:16].numpy() - states[0, 14:16])))
    return moved


def _controller(ctl, model, policy=None, layout=None) -> PushController:
    control = PushController.from_params(ctl, clock=lambda: 0.0)
    control.policies.set_model(model, 1)
    if policy is not None:
        control.policies.set_policy(policy, 1, layout)
    return control


def takeover(env, ctl, model, policy, layout, seed: int, steps: int) -> float:
    """The policy's first ``steps`` steps of episode ``seed``, then the planner (fresh, cold
    start, the last command carried) to the end; the final distance."""
    obs, info = env.reset(seed=seed)
    target = np.asarray(info['target'], dtype=np.float64)
    state = np.asarray(obs, dtype=np.float64)
    first = _controller(ctl, model, policy, layout)
    second = _controller(ctl, model)
    for control, kind, start in ((first, 'policy', 0), (second, 'planner', steps)):
        control.policies.set_target(target)
        control.start_episode(0, kind, explore=False)
        if start:
            control.prev_command = first.prev_command.copy()
        dt = control.filter.dt
        k = start
        while k < (steps if kind == 'policy' else int(ctl['task']['episode_steps'])):
            tick = control.tick(state, k * dt, k * dt, target)
            if tick.event != 'act':
                break
            state = np.asarray(env.step(tick.action)[0], dtype=np.float64)
            k += 1
        control.close()
    return float(np.linalg.norm(state[14:16] - target[:2]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run', help='a recorded run directory with models/vN/policy')
    ap.add_argument('--eval-seed', type=int, default=2000, help='first evaluation seed')
    ap.add_argument('--episodes', type=int, default=20, help='evaluation episodes')
    ap.add_argument('--planner', action='store_true', help='the planner on the same episodes')
    ap.add_argument('--takeover', type=int, default=0, metavar='T',
                    help='the planner takes over each stalled policy episode at step T')
    ap.add_argument('--touch-mm', type=float, default=5.0, help='touch: tool within this of '
                    "the puck's side")
    ap.add_argument('--steps', type=int, default=5, help='steps on the puck that make a stall '
                    'pinned')
    ap.add_argument('--labels', action='store_true',
                    help='the labeller against the policy at steps 20-76 (every 4th) of each '
                         'stalled or pinned policy episode')
    ap.add_argument('--model-rollouts', type=int, default=0, metavar='H',
                    help="the puck's movement when the policy drives the learned model H steps "
                         'from each episode start, per member')
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        ctl = node_params(f'{args.run}/params.yaml', 'controller')
        twin = node_params(f'{args.run}/params.yaml', 'twin')
        trainer = node_params(f'{args.run}/params.yaml', 'trainer')
        version, policy, meta, model = newest(args.run)
    except (OSError, ValueError, KeyError) as e:
        print(f'policy_failures: {e}', file=sys.stderr)
        return 2
    from mbrl_robot.sim.push_env import PushEnv
    env = PushEnv(twin['task'], physics=twin['physics'], realism=twin['realism'],
                  variant=twin['variant'])
    task = PushTask.from_config(ctl['task'])
    radius = float(ctl['task']['success_radius_m'])
    seeds = range(args.eval_seed, args.eval_seed + args.episodes)
    for kind in ('policy', 'planner') if args.planner else ('policy',):
        control = _controller(ctl, model, policy if kind == 'policy' else None,
                              meta['obs_layout'])
        episodes = []
        for i, seed in enumerate(seeds):
            states, acts, target, _ = run_episode(env, control, {'seed': seed, 'index': i,
                                                                 'policy': kind,
                                                                 'stage': f'eval_{kind}'})
            tip = task.tool_tip(torch.as_tensor(states, dtype=torch.float32)).numpy()
            e = {'seed': seed, **outcome(tip, states[:, 14:17], target, radius,
                                         args.touch_mm / 1000.0, args.steps)}
            if kind == 'policy' and args.labels and e['outcome'] in ('stall', 'pinned'):
                e['labels'] = labels_at(states, acts, target, policy, meta['obs_layout'],
                                        trainer, model, task, range(20, 80, 4))
            if kind == 'policy' and args.model_rollouts:
                e['model_puck_moved'] = model_rollouts(
                    states, target, policy, meta['obs_layout'], model, task,
                    control.filter, args.model_rollouts, seed)
                e['twin_puck_moved'] = float(np.linalg.norm(
                    states[min(args.model_rollouts, len(states) - 1), 14:16] - states[0, 14:16]))
            episodes.append(e)
        control.close()
        out = {'run': args.run, 'version': version, 'kind': kind,
               'eval_seeds': [seeds[0], seeds[-1]],
               'counts': {k: sum(e['outcome'] == k for e in episodes) for k in OUTCOMES},
               'episodes': episodes}
        if kind == 'policy' and args.takeover:
            stalled = [e['seed'] for e in episodes if e['outcome'] in ('stall', 'pinned')]
            finals = [takeover(env, ctl, model, policy, meta['obs_layout'], s, args.takeover)
                      for s in stalled]
            out['takeover'] = {'step': args.takeover, 'seeds': stalled, 'final_distance': finals,
                               'successes': int(sum(f < radius for f in finals))}
        if kind == 'policy' and args.labels:
            at = [e['labels'] for e in episodes if 'labels' in e]
            out['labels_at_stalls'] = {
                key: float(np.mean([v for a in at for v in a[key]])) if at else None
                for key in ('label_speed', 'policy_speed', 'plans_cos')}
        print(json.dumps(out), flush=True)
    env.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
