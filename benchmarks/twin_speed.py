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
"""Speed and learnability figures of the PyBullet twin; prints one JSON object on the last line.

* ``steps_per_s``: control steps per second of ``PushEnv.step`` under uniform random actions
  (one core, headless), resets included; ``cpu_steps_per_s`` divides by this process's CPU time
  instead of wall time (the fairer figure on a shared machine).
* ``slide_after_release_m``: how far the puck slides after it is released at a given speed
  (the pusher leaving it), and ``slide_after_contact_m``: the same measured in the random
  rollouts (puck travel from the first step without contact until it stops).
* ``random_success_rate``, ``contact_fraction`` (steps whose end finds the robot touching the
  puck), ``moved_fraction`` (steps that move the puck by more than 1 mm) over seeded episodes.
* ``scripted_success_rate``: the known-model pusher (``mbrl_robot.sim.scripted``) on a fifth as
  many episodes: every episode is solvable by pushing; ``scripted_success_rate_push_anywhere``
  the same for the ``push_anywhere`` variant in its registered episode length
  (``mbrl_robot.sim.ANYWHERE_EPISODE_STEPS``).

Usage: ``python benchmarks/twin_speed.py [--episodes 100] [--profile lecture]``
"""

import argparse
import json
import time
from typing import Dict, List

import numpy as np
import pybullet as pb

from mbrl_robot.config import profile_argument
from mbrl_robot.sim import ANYWHERE_EPISODE_STEPS
from mbrl_robot.sim.push_env import PushEnv
from mbrl_robot.sim.scripted import ScriptedPusher


def release_slide(env: PushEnv, speed: float) -> float:
    """Slide (m) of the puck released at ``speed`` (m/s) along +x, the robot out of the way."""
    env.reset(seed=0, options={'puck': [0.75, 0.3, 0.016]})
    start = env.puck_position()
    pb.resetBaseVelocity(env.puck, [speed, 0.0, 0.0], [0.0, 0.0, 0.0],
                         physicsClientId=env.client_id)
    for _ in range(40):  # 2 s
        env.step_velocity(np.zeros(7))
    return float(np.linalg.norm(env.puck_position()[:2] - start[:2]))


def random_rollouts(env: PushEnv, episodes: int, seed: int) -> Dict[str, float]:
    """Uniform random actions for ``episodes`` seeded episodes."""
    rng = np.random.default_rng(seed)
    steps = contact = moved = success = 0
    slides: List[float] = []
    tip_speeds: List[float] = []
    start = time.perf_counter()
    cpu_start = time.process_time()
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        released_at = None
        prev_tip = info['tool_tip']
        done = False
        while not done:
            prev = obs[14:16].copy()
            obs, _, terminated, truncated, info = env.step(rng.uniform(-1.0, 1.0, 7))
            steps += 1
            step_move = float(np.linalg.norm(obs[14:16] - prev))
            contact += info['contact']
            moved += step_move > 1e-3
            tip_speeds.append(float(np.linalg.norm(info['tool_tip'] - prev_tip))
                              * env.control_rate_hz)
            prev_tip = info['tool_tip']
            if info['contact']:
                released_at = None
            elif step_move > 1e-4 and released_at is None and len(slides) < 10 ** 6:
                released_at = prev
            if released_at is not None and step_move <= 1e-4:
                slides.append(float(np.linalg.norm(obs[14:16] - released_at)))
                released_at = None
            done = terminated or truncated
        success += info['is_success']
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        'steps_per_s': steps / elapsed,
        'cpu_steps_per_s': steps / cpu,
        'random_success_rate': success / episodes,
        'contact_fraction': contact / steps,
        'moved_fraction': moved / steps,
        'slide_after_contact_m_mean': float(np.mean(slides)) if slides else 0.0,
        'slide_after_contact_m_p95': float(np.percentile(slides, 95)) if slides else 0.0,
        'slide_after_contact_count': len(slides),
        'tip_speed_m_s_median': float(np.median(tip_speeds)),
        'tip_speed_m_s_p95': float(np.percentile(tip_speeds, 95)),
        'steps': steps,
    }


def scripted_success(env: PushEnv, episodes: int, seed: int) -> Dict[str, float]:
    """Success rate and mean first-success step of the known-model pusher (an upper bound)."""
    pusher = ScriptedPusher(env.joint_names, env.home_q, env.max_joint_speed)
    wins, first = 0, []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        pusher.reset()
        hit = None
        for t in range(env.episode_steps):
            obs, _, _, _, info = env.step(pusher.act(obs, info['target']))
            if hit is None and info['is_success']:
                hit = t + 1
        wins += info['is_success']
        if hit is not None:
            first.append(hit)
    return {'scripted_success_rate': wins / episodes,
            'scripted_first_success_step_mean': float(np.mean(first)) if first else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--profile', type=profile_argument, default='lecture')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-joint-speed', type=float, default=None,
                        help='override task.max_joint_speed_rad_s')
    parser.add_argument('--physics-hz', type=float, default=None, help='override the default')
    args = parser.parse_args()
    options = {} if args.physics_hz is None else {'physics_hz': args.physics_hz}
    env = PushEnv.from_config(args.profile, **options)
    if args.max_joint_speed is not None:
        env.max_joint_speed = args.max_joint_speed
    result = {'profile': args.profile, 'max_joint_speed_rad_s': env.max_joint_speed,
              'substeps': env.substeps, 'physics_hz': 1.0 / env.physics_dt}
    result.update(random_rollouts(env, args.episodes, args.seed))
    result.update(scripted_success(env, max(1, args.episodes // 5), args.seed))
    result['slide_after_release_m'] = {str(v): release_slide(env, v) for v in (0.1, 0.2, 0.3)}
    env.close()
    options.update(variant='push_anywhere', episode_steps=ANYWHERE_EPISODE_STEPS)
    env = PushEnv.from_config(args.profile, **options)
    if args.max_joint_speed is not None:
        env.max_joint_speed = args.max_joint_speed
    anywhere = scripted_success(env, max(1, args.episodes // 5), args.seed)
    result.update({f'{k}_push_anywhere': v for k, v in anywhere.items()})
    env.close()
    print(json.dumps(result))


if __name__ == '__main__':
    main()
