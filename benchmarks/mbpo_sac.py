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
"""MBPO or model-free SAC on the twin; one JSON line per seed, then the summary on the last line.

Both methods drive ``MBRLPush`` through the controller's ``CommandFilter`` (``PushPolicyEnv``)
in lockstep, in process: the twin is built from the profile's ``twin`` block (its ``variant``,
``physics`` and the dynamics part of ``realism``: actuation delay, velocity lag, per-episode puck
mass and friction; sensing is ideal), so ``--profile push_anywhere`` trains on push_anywhere.
They are evaluated with their deterministic policy on the held-out episodes ``eval_seed ..
eval_seed + eval_episodes - 1`` (1000..1019 by default, like the recipe). The JSON holds, per
seed and averaged: success rate and mean final distance, real transitions used, wall time, the
learning curve (SAC: at every ``--curve`` budget), and the time per control step of the deployed
policy (``LearnedPolicy.plan``) next to the CEM planner of the same profile (``PlannerPolicy``
on a random model of the profile's size).

Usage::

    python benchmarks/mbpo_sac.py --method mbpo --transitions 5000 --seeds 0
    python benchmarks/mbpo_sac.py --method sac --transitions 50000 --curve 5000 20000 50000
    python benchmarks/mbpo_sac.py --method sac --transitions 50000 --seeds 0 1 2 \
        --set eval_seed=5000 relabel_goals=4      # hindsight goals (HER), the test seeds
    python benchmarks/mbpo_sac.py --method sac --transitions 50000 --profile push_anywhere
    python benchmarks/mbpo_sac.py --method floor --seeds 0 1 2 --set eval_seed=5000  # the floor
    # 50k MBPO across sessions: saves every 2,500 transitions; rerun the same line to continue
    python benchmarks/mbpo_sac.py --method mbpo --transitions 50000 --curve 5000 20000 50000 \
        --seeds 0 --set eval_seed=5000 --resume-dir runs/mbpo50k --stop-after-s 9000
"""

import argparse
import json
import os
import time
from typing import Any, Dict, List

import numpy as np
import torch

from mbrl_robot.config import _merge, node_params, profile_argument
from mbrl_robot.core.algorithms.mbpo import (evaluate, Resumable, resume_progress,
                                             ResumeStateError, run_mbpo)
from mbrl_robot.core.algorithms.sac_baseline import run_sac
from mbrl_robot.core.control import PolicyFactory, PushController
from mbrl_robot.core.models import create_model
from mbrl_robot.core.safety import CommandFilter
from mbrl_robot.core.schema import validate_params
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM
from mbrl_robot.core.tasks.push_policy_env import PushPolicyEnv
from mbrl_robot.sim.push_env import PushEnv


EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on --stop-after-s with its state kept; rerun to go on


def step_latency(profile: str, policy, repeats: int = 200) -> Dict[str, float]:
    """Median / p99 ms per control step: ``LearnedPolicy.plan`` and ``PlannerPolicy.plan``."""
    ctl = node_params(profile, 'controller')
    trainer = node_params(profile, 'trainer')
    cf = CommandFilter.from_params(ctl)
    env = PushEnv.from_config(profile, task=ctl['task'])
    state, info = env.reset(seed=1000)
    env.close()
    out = {}
    for mode in ('policy', 'planner'):
        factory = PolicyFactory({**ctl, 'mode': mode, 'device': 'cpu'}, cf)
        factory.set_target(info['target'])
        if mode == 'policy':
            factory.set_policy(policy, 1)
        else:
            model = create_model(trainer['model'], STATE_DIM, ACTION_DIM, 'cpu', 0)
            factory.set_model(model.eval(), 1)
        p = factory.create()
        n = repeats if mode == 'policy' else max(repeats // 10, 10)
        ms = []
        for i in range(n):
            p.set_last_action(np.zeros(7))
            p.plan(state, i)
            ms.append(p.last_info()['plan_time_ms'])
        out[f'{mode}_ms_median'] = float(np.median(ms))
        out[f'{mode}_ms_p99'] = float(np.percentile(ms, 99))
    return out


def floor(env: PushPolicyEnv, m: Dict[str, Any], seeds: List[int]) -> Dict[str, Any]:
    """Do nothing, and uniform random actions (one rng per seed), on the evaluation episodes."""
    eval_seeds = [int(m['eval_seed']) + i for i in range(int(m['eval_episodes']))]
    zero = np.zeros(env.action_space.shape, np.float32)
    out: Dict[str, Any] = {'eval_seed': eval_seeds[0],
                           'zero': evaluate(lambda o: zero, env, eval_seeds)}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        act = (lambda o: rng.uniform(env.action_space.low, env.action_space.high)
               .astype(np.float32))
        out[f'random_seed{seed}'] = evaluate(act, env, eval_seeds)
    return out


def _state_path(resume_dir: str, method: str, seed: int) -> str:
    """Where ``--resume-dir`` keeps one seed's whole state (``--progress`` reads the same)."""
    return os.path.join(resume_dir, f'{method}_seed{seed}.pt')


def main() -> None:
    """Parse arguments, run one method per seed, print the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--method', choices=('mbpo', 'sac', 'floor'), required=True,
                    help='floor: do nothing and uniform random actions, no learning')
    ap.add_argument('--transitions', type=int, default=5000, help='real transitions')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--profile', type=profile_argument, default='cpu')
    ap.add_argument('--curve', type=int, nargs='*', default=None,
                    help='extra evaluation budgets (default: SAC 5000/20000/50000 up to N)')
    ap.add_argument('--gradient-steps', type=int, default=None,
                    help='updates per real step (default: mbpo.gradient_steps; SAC: 1)')
    ap.add_argument('--set', nargs='*', default=[], metavar='KEY=JSON',
                    help='mbpo block overrides, e.g. sac.net_arch=[128,128] real_ratio=0.1')
    ap.add_argument('--shaping', type=float, default=None,
                    help='task.reward.tool_shaping_weight for the twin and the learner')
    ap.add_argument('--out-dir', default=None, help='write summary.json and the policy here')
    ap.add_argument('--resume-dir', default=None,
                    help="keep each seed's whole state here (METHOD_seedS.pt) and continue it "
                         'when rerun with the same arguments: long runs across sessions')
    ap.add_argument('--checkpoint-every', type=int, default=2500,
                    help='real transitions between saves of the resume state')
    ap.add_argument('--stop-after-s', type=float, default=None,
                    help='with --resume-dir: save and stop at the first episode end after '
                         f'this many seconds, exit status {EXIT_STOPPED} (rerun to continue)')
    ap.add_argument('--step-latency-repeats', type=int, default=200,
                    help="policy steps timed for the summary's control_step_ms (the planner "
                         "gets a tenth, at least 10, on the profile's backend: a compiled one "
                         'compiles first, ~30 s on 2 cores); 0 skips the timing')
    ap.add_argument('--progress', action='store_true',
                    help="with --resume-dir: print where each seed's state stands (one JSON "
                         'line per seed: transitions, curve so far, wall time) and exit')
    args = ap.parse_args()
    if args.progress:
        if args.resume_dir is None:
            ap.error('--progress needs --resume-dir (where the states are)')
        for seed in args.seeds:
            path = _state_path(args.resume_dir, args.method, seed)
            if not os.path.exists(path):
                print(json.dumps({'seed': seed, 'method': args.method, 'state': None}))
                continue
            try:
                print(json.dumps(resume_progress(path) | {'state': path}))
            except ResumeStateError as e:
                raise SystemExit(f'mbpo_sac: {e}')
        return
    if args.stop_after_s is not None and args.resume_dir is None:
        ap.error('--stop-after-s needs --resume-dir (where the run continues from)')
    if args.step_latency_repeats < 0:
        ap.error(f'--step-latency-repeats must be >= 0, got {args.step_latency_repeats}')
    if args.checkpoint_every < 1:
        ap.error(f'--checkpoint-every must be >= 1, got {args.checkpoint_every}')
    torch.set_num_threads(1)
    cfg = node_params(args.profile, 'trainer')
    ctl = node_params(args.profile, 'controller')
    over: Dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition('=')
        try:
            parsed = json.loads(value)
        except ValueError:
            ap.error(f'--set {item!r}: expected KEY=JSON, e.g. relabel_goals=4')
        node = over
        *parents, leaf = key.split('.')
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = parsed
    try:  # names, types and bounds of trainer.mbpo, before the twin is built
        validate_params('trainer', {'mbpo': over}, source='--set')
    except ValueError as e:
        ap.error(str(e))
    cfg['mbpo'] = _merge(cfg['mbpo'], {**over, 'total_steps': args.transitions})
    if args.gradient_steps is not None and args.method == 'mbpo':
        cfg['mbpo']['gradient_steps'] = args.gradient_steps
    if args.shaping is not None:
        for block in (cfg, ctl):
            block['task']['reward'] = {**block['task'].get('reward', {}),
                                       'tool_shaping_weight': args.shaping}
    task = ctl['task']
    control = PushController.from_params(ctl)
    env = PushPolicyEnv(PushEnv.from_config(args.profile, task=task), control)
    variant = env.env.variant
    runs: List[Dict[str, Any]] = []
    policy = None
    t0 = time.monotonic()
    log = (lambda s: print(s, flush=True))
    if args.method == 'floor':
        print(json.dumps(floor(env, cfg['mbpo'], args.seeds) | {
            'method': 'floor', 'profile': args.profile, 'variant': variant}))
        env.close()
        return

    def stop() -> bool:
        return args.stop_after_s is not None and time.monotonic() - t0 > args.stop_after_s

    for seed in args.seeds:
        ckpt = os.path.join(args.out_dir, f'policy_seed{seed}') if args.out_dir else None
        resumable = None
        if args.resume_dir:
            resumable = Resumable(
                _state_path(args.resume_dir, args.method, seed),
                args.checkpoint_every, stop,
                {'profile': args.profile, 'variant': variant, 'task': task})
        try:
            if args.method == 'mbpo':
                s = run_mbpo(env, cfg, seed, checkpoint_dir=ckpt, eval_at=args.curve or (),
                             log=log, resumable=resumable)
            else:
                points = args.curve or [p for p in (5000, 20000, 50000) if p < args.transitions]
                s = run_sac(env, cfg, seed, curve_points=sorted(set(points) | {args.transitions}),
                            gradient_steps=args.gradient_steps or 1, checkpoint_dir=ckpt,
                            log=log, resumable=resumable)
        except ResumeStateError as e:  # a resume state of another run, or a corrupt one
            env.close()
            raise SystemExit(f'mbpo_sac: {e}')
        policy = s.pop('policy')
        line = {'method': args.method, 'profile': args.profile, 'variant': variant,
                'seed': seed, 'relabel_goals': cfg['mbpo']['relabel_goals'],
                'eval_seed': cfg['mbpo']['eval_seed'], 'transitions': s['transitions'],
                'wall_s': s['wall_s'], 'eval': s['eval'], 'curve': s['curve'],
                'finished': s['finished'], 'resumed_at': s['resumed_at']}
        print(json.dumps(line), flush=True)
        if not s['finished']:
            print(f'mbpo_sac: seed {seed} stopped at {s["transitions"]} of {args.transitions} '
                  f'transitions; rerun the same command to continue', flush=True)
            env.close()
            raise SystemExit(EXIT_STOPPED)
        runs.append(s)
    summary = {
        'method': args.method, 'profile': args.profile, 'variant': variant,
        'transitions': args.transitions,
        'seeds': args.seeds, 'mbpo_config': cfg['mbpo'], 'task': ctl['task'],
        'success_rate': float(np.mean([r['eval']['success_rate'] for r in runs])),
        'mean_final_distance': float(np.mean([r['eval']['mean_final_distance'] for r in runs])),
        'eval_episodes': sum(r['eval']['episodes'] for r in runs),
        'wall_s': time.monotonic() - t0,
        'control_step_ms': (step_latency(args.profile, policy, args.step_latency_repeats)
                            if args.step_latency_repeats else None),
        'torch_threads': torch.get_num_threads(),
        'runs': [{k: v for k, v in r.items() if k != 'model_fits'}
                 | {'model_fits': len(r.get('model_fits', []))} for r in runs],
    }
    env.close()
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, 'summary.json'), 'w') as f:
            json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
