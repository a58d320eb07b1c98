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
"""Model-free yardstick: SAC on the same twin, task, action filter and held-out episodes as MBPO.

It runs :func:`mbrl_robot.core.algorithms.mbpo.run_sac_loop` without the model: the same SB3
SAC networks and update, real buffer, training-episode seeds and evaluation as MBPO, with one
gradient step per real transition (SAC's usual update-to-data ratio) and no random warm-up
beyond ``init_random_steps``. The learning curve is measured on the held-out fixed-seed episodes
``eval_seed .. eval_seed + eval_episodes - 1`` (1000..1019, like the recipe's evaluation).
"""

from typing import Any, Callable, Dict, Optional, Sequence

import gymnasium as gym

from mbrl_robot.core.algorithms.mbpo import Resumable, run_sac_loop
from mbrl_robot.core.policy import save_policy
from mbrl_robot.core.tasks.push import push_goal_task, PushTask
from mbrl_robot.core.types import GoalTask

CURVE_POINTS = (5000, 20000, 50000)


def run_sac(env: gym.Env, cfg: Dict[str, Any], seed: int, gtask: Optional[GoalTask] = None,
            curve_points: Sequence[int] = CURVE_POINTS, gradient_steps: int = 1,
            checkpoint_dir: Optional[str] = None, version: int = 1,
            log: Callable[[str], None] = print,
            resumable: Optional[Resumable] = None) -> Dict[str, Any]:
    """Model-free SAC; returns a JSON-able summary with the learning curve.

    Args:
        env: a :class:`mbrl_robot.core.tasks.push_policy_env.PushPolicyEnv` (default task) or
            any env following ``run_sac_loop``'s contract for ``gtask``.
        cfg: the trainer's parameters; the ``mbpo`` block supplies ``sac``, ``batch_size``,
            ``init_random_steps``, ``eval_seed``, ``eval_episodes`` (the model keys are unused).
        seed: run seed.
        gtask: the task; default :func:`push_goal_task` with ``env``'s command filter.
        curve_points: real-transition budgets at which the deterministic policy is evaluated;
            training stops at the largest.
        gradient_steps: SAC updates per real transition.
        checkpoint_dir: if set, the final policy is saved there with ``version``.
        version: policy version to record.
        log: progress sink.
        resumable: keep and continue a resume state (see :func:`run_sac_loop`).

    Returns:
        ``{'method': 'sac', 'seed', 'transitions', 'wall_s', 'gradient_steps', 'curve',
        'eval' (the last curve point; None when stopped early), 'checkpoint', 'sha256',
        'finished', 'resumed_at'}`` (JSON-able) plus ``'policy'``, the
        :class:`DeterministicPolicy`.

    Raises:
        ValueError: empty or non-positive ``curve_points``.
    """
    points = sorted(int(p) for p in curve_points)
    if not points or points[0] < 1:
        raise ValueError(f'curve_points must be positive transition counts, got {curve_points}')
    m = {**dict(cfg['mbpo']), 'total_steps': points[-1], 'gradient_steps': int(gradient_steps)}
    if gtask is None:
        task = PushTask.from_config(cfg['task']) if 'task' in cfg else PushTask()
        gtask = push_goal_task(task, getattr(env, 'command_filter', None))
    seeds = [int(m['eval_seed']) + i for i in range(int(m['eval_episodes']))]
    out = run_sac_loop(env, gtask, m, seed, False, eval_at=points, eval_seeds=seeds, log=log,
                       resumable=resumable)
    curve = out['curve']
    summary = {'method': 'sac', 'seed': seed, 'transitions': out['transitions'],
               'wall_s': out['wall_s'], 'gradient_steps': out['gradient_steps'],
               'curve': curve, 'eval': curve[-1] if curve and out['finished'] else None,
               'checkpoint': None, 'sha256': None, 'finished': out['finished'],
               'resumed_at': out['resumed_at']}
    if checkpoint_dir and out['finished']:
        summary['sha256'] = save_policy(out['policy'], checkpoint_dir, version, gtask.obs_layout,
                                        sac=out['sac'], extra={'method': 'sac', 'seed': seed,
                                                               'transitions': out['transitions']})
        summary['checkpoint'] = str(checkpoint_dir)
    summary['policy'] = out['policy']
    return summary
