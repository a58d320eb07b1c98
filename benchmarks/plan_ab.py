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
"""Two A/Bs of the fused planner against what it did before session 34, interleaved on one
thread; one JSON line per config.

* ``--ab draws``: the noise drawn in place (``FusedMPCAgent._draw``) against ``torch.randn``
  and a copy into the buffer (the old draw, kept here): the same numbers? ms per plan's draws.
* ``--ab bf16_weights``: under ``precision: bf16``, the folded layers kept in bf16
  (``FoldedEnsemble.matmul_dtype``) against fp32 layers that autocast casts at every step:
  the same plans? ms per plan, and (``fused``) kernels per plan.

Usage::

    python benchmarks/plan_ab.py --ab draws --configs cpu,mid,lecture
    python benchmarks/plan_ab.py --ab bf16_weights --backend compiled --configs cpu,mid
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plan_latency  # noqa: E402
from mbrl_robot.core.planning.fused import FoldedEnsemble  # noqa: E402
from mbrl_robot.core.planning.optimizers import RandomShootingOptimizer  # noqa: E402

ROUNDS = {'cpu': 200, 'mid': 60, 'lecture': 5, 'lecture_mean': 5, 'pets_cpu': 200}


def old_draw(agent) -> None:
    """The draws before session 34: a fresh tensor per call, copied into the buffer."""
    opt, ev = agent.optimizer, agent.evaluator
    n, h, a = agent._noise.shape[1:]
    uniform = (isinstance(opt, RandomShootingOptimizer)
               or getattr(opt, 'bound_mode', 'clip') == 'truncnorm')
    draw = torch.rand if uniform else torch.randn
    for i in range(agent._iterations):
        agent._noise[i] = draw(n, h, a, generator=opt.generator, device=agent.device)
        for t in range(h if agent._perms is not None or agent._head is not None else 0):
            if agent._perms is not None:
                perm = torch.randperm(agent._perms.shape[-1], generator=ev.generator,
                                      device=agent.device)
                agent._perms[i, t] = perm
                agent._inv[i, t] = torch.argsort(perm)
            if agent._head is not None:
                agent._head[i, t] = torch.randn(agent._head.shape[2:], generator=ev.generator,
                                                device=agent.device)


def interleaved(fns, rounds):
    """Median ms of each of ``fns`` (name -> callable), run alternately in both orders."""
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in (names if r % 2 else names[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}


def kernels(agent) -> int:
    """Kernels one call of the plan function runs (``plan_latency.OpCounter``)."""
    counter = plan_latency.OpCounter()
    with counter, torch.inference_mode():
        agent._fn(*agent._inputs())
    return sum(counter.kernels['host'].values())


def ab_draws(name, args):
    model_cfg, planner = plan_latency.CONFIGS[name]
    agent = plan_latency.build('fused', model_cfg, planner, torch.device('cpu'), 0.4).__self__
    gens = (agent.optimizer.generator, agent.evaluator.generator)
    state = [g.get_state() for g in gens]
    old_draw(agent)
    before = [t.clone() for t in (agent._noise, agent._head, agent._perms, agent._inv)
              if t is not None]
    for g, s in zip(gens, state):
        g.set_state(s)
    agent._draw()
    after = [t for t in (agent._noise, agent._head, agent._perms, agent._inv) if t is not None]
    same = all(torch.equal(a, b) for a, b in zip(before, after))
    med = interleaved({'old': lambda: old_draw(agent), 'new': agent._draw},
                      args.rounds or ROUNDS[name])
    return {'ab': 'draws', 'config': name, 'same_numbers': same,
            'old_ms': round(med['old'], 3), 'new_ms': round(med['new'], 3),
            'x': round(med['old'] / med['new'], 3)}


def ab_bf16_weights(name, args):
    model_cfg, planner = plan_latency.CONFIGS[name]
    variant = f'{args.backend}@bf16'
    new = plan_latency.build(variant, model_cfg, planner, torch.device('cpu'), 0.4).__self__
    old = plan_latency.build(variant, model_cfg, planner, torch.device('cpu'), 0.4).__self__
    old.folded = FoldedEnsemble(old.evaluator._rollout_model)  # fp32 layers: autocast casts
    obs = np.random.default_rng(0).normal(scale=0.3, size=plan_latency.S).astype(np.float32)
    same = all(np.array_equal(new.plan(obs), old.plan(obs)) for _ in range(3))
    med = interleaved({'old': lambda: old.plan(obs), 'new': lambda: new.plan(obs)},
                      args.rounds or ROUNDS[name])
    row = {'ab': 'bf16_weights', 'config': name, 'backend': variant, 'same_plans': same,
           'old_ms': round(med['old'], 2), 'new_ms': round(med['new'], 2),
           'x': round(med['old'] / med['new'], 3)}
    if args.backend == 'fused':
        row['kernels_old'], row['kernels_new'] = kernels(old), kernels(new)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ab', required=True, choices=('draws', 'bf16_weights'))
    parser.add_argument('--configs', default='cpu,mid')
    parser.add_argument('--backend', default='fused', choices=('fused', 'compiled'))
    parser.add_argument('--rounds', type=int, default=0, help='0: per config (ROUNDS)')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = ab_draws if args.ab == 'draws' else ab_bf16_weights
    for name in args.configs.split(','):
        if name not in plan_latency.CONFIGS:
            raise SystemExit(f'unknown config {name!r}; known: {sorted(plan_latency.CONFIGS)}')
        row = run(name, args)
        row.update(threads=torch.get_num_threads(), rounds=args.rounds or ROUNDS[name])
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
