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
"""Latency of one MPC plan (``MPCAgent.plan``) for the planner profiles; one JSON line each.

Each line: ``{"config", "device", "ms_per_plan_median", "ms_per_plan_p99",
"cpu_ms_per_plan_median", "threads", "repeats", "planner", "model"}``; ``cpu_ms`` is the process
CPU time per plan, which on a shared machine tracks the unloaded wall time (with one thread)
better than the wall clock does. Models are random-init ensembles from
``core.models.create_model`` (a local batched MLP of the same shape if that package is missing):
the cost of a plan does not depend on the weights. State S=17, action A=7, reward
-||puck - target||, the controller's acceleration bound (``--max-delta``) and plan statistics
on, as in the controller.

Profiles:
    lecture: K=5 ensemble of 4x500 MLPs, CEM N=500, M=50, I=5, H=25, deterministic ensemble-mean
        propagation (the lecture's recipe, sized for a GPU).
    pets: the lecture's sizes with P=5 particles, TS-inf, sampling the Gaussian heads.
    cpu: the 20 Hz profile for 2 CPU cores (the model of config/cpu.yaml, K=5 of 3x200 MLPs;
        CEM H=15, N=100, M=10, I=2, TS-inf with one particle, see ``CPU_PROFILE``).
    pets_cpu: the cpu profile with N=30, M=5 and P=5 particles (TS-inf).
``--search`` times a grid of CEM profiles on the cpu model and prints the largest one (by model
evaluations per plan) whose median stays under ``--budget-ms``.

Usage: ``python benchmarks/plan_latency.py [--device cpu|cuda] [--repeats 20]
[--profiles lecture,cpu,pets,pets_cpu] [--threads 1] [--search]``. The machine may be shared:
compare medians.
"""

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from mbrl_robot.core.planning import create_agent
from mbrl_robot.core.tasks.push import ACTION_DIM as A, PUCK, STATE_DIM as S

LECTURE_MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 5, 'num_layers': 4,
                 'hidden_size': 500, 'activation': 'silu', 'probabilistic': True}
LECTURE_PLANNER = {'name': 'cem', 'horizon': 25, 'population_size': 500, 'elite_count': 50,
                   'iterations': 5, 'min_std': 0.05, 'initial_std': 0.5, 'alpha': 0.1,
                   'particles': 1, 'propagation': 'mean', 'seed': 0}
# Chosen with --search --threads 1 on the shared 2-core machine (2026-11-27): median 32-35 ms,
# p99 ~40 ms per plan; I=3 gives 39-48 ms median but a p99 of ~60 ms, too close to 50 ms.
# TS-inf with one particle runs each candidate through one member (a fifth of the cost of
# ensemble-mean propagation), which buys N=100 over N=30 at H=15.
CPU_PROFILE = dict(LECTURE_PLANNER, horizon=15, population_size=100, elite_count=10,
                   iterations=2, particles=1, propagation='ts_inf')


def _cpu_model() -> Dict[str, Any]:
    """``trainer.model`` of config/cpu.yaml over lecture.yaml's (3x200 if unreadable)."""
    try:
        from mbrl_robot.config import node_params
        model = dict(node_params('lecture', 'trainer')['model'])
        model.update(node_params('cpu', 'trainer').get('model', {}))
    except (ImportError, FileNotFoundError, KeyError, ValueError):
        model = dict(LECTURE_MODEL, num_layers=3, hidden_size=200)
    return model


CPU_MODEL = _cpu_model()
PROFILES: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {
    'lecture': (LECTURE_MODEL, LECTURE_PLANNER),
    'pets': (LECTURE_MODEL, dict(LECTURE_PLANNER, name='pets', particles=5,
                                 propagation='ts_inf')),
    'cpu': (CPU_MODEL, CPU_PROFILE),
    'pets_cpu': (CPU_MODEL, dict(CPU_PROFILE, name='pets', population_size=30, elite_count=5,
                                 particles=5)),
}


class BatchedMLP:
    """Fallback ensemble of the same shape as ``GaussianEnsemble`` (random weights).

    Args:
        cfg: a ``trainer.model`` block (ensemble_size, num_layers, hidden_size).
        device: where the weights live.
        seed: weight seed.
    """

    def __init__(self, cfg: Dict[str, Any], device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        k, h = cfg['ensemble_size'], cfg['hidden_size']
        sizes = [S + A] + [h] * cfg['num_layers'] + [2 * S]
        self.ensemble_size = k
        self.device = device
        self.weights = [(torch.randn(k, i, o, generator=g) / i ** 0.5).to(device)
                        for i, o in zip(sizes[:-1], sizes[1:])]
        self.biases = [torch.zeros(k, 1, o, device=device) for o in sizes[1:]]

    def sample_next(self, obs: torch.Tensor, act: torch.Tensor, deterministic: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(K, B, S) next states; see ``types.DynamicsModel``."""
        h = torch.cat((obs, act), dim=-1)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = torch.nn.functional.silu(torch.baddbmm(b, h, w))
        out = torch.baddbmm(self.biases[-1], h, self.weights[-1])
        delta = out[..., :S]
        if not deterministic:
            noise = torch.randn(delta.shape, generator=generator, device=delta.device)
            delta = delta + noise * (0.5 * out[..., S:].clamp(-10, 0.5)).exp()
        return obs + 0.01 * delta


def make_model(cfg: Dict[str, Any], device: torch.device):
    """A random-init model of the block's shape (the factory's if it is importable)."""
    try:
        from mbrl_robot.core.models import create_model
    except ImportError:
        return BatchedMLP(cfg, device)
    model = create_model(cfg, obs_dim=S, act_dim=A, device=device, seed=0)
    model.eval()
    return model


def time_profile(name: str, model_cfg: Dict[str, Any], planner: Dict[str, Any],
                 device: torch.device, repeats: int, warmup: int, max_seconds: float,
                 max_delta: float) -> Dict[str, Any]:
    """Median and p99 wall time of ``agent.plan`` over ``repeats`` calls (fewer past
    ``max_seconds``, at least 2)."""
    model = make_model(model_cfg, device)
    target = torch.tensor([0.6, 0.2, 0.02], device=device)

    def reward_fn(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(next_obs[..., PUCK] - target, dim=-1)

    agent = create_agent(planner, model, reward_fn, A, device, max_delta=max_delta)
    rng = np.random.default_rng(0)
    obs = rng.normal(scale=0.3, size=S).astype(np.float32)
    for _ in range(warmup):
        agent.act(obs)
    times: List[float] = []
    cpu_times: List[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        agent.act(obs)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
        cpu_times.append(1e3 * (time.process_time() - c0))
        if time.perf_counter() - start > max_seconds and len(times) >= 2:
            break
    return {'config': name, 'device': str(device),
            'ms_per_plan_median': round(float(np.median(times)), 2),
            'ms_per_plan_p99': round(float(np.percentile(times, 99)), 2),
            'cpu_ms_per_plan_median': round(float(np.median(cpu_times)), 2),
            'threads': torch.get_num_threads(), 'repeats': len(times),
            'planner': planner, 'model': {k: model_cfg[k] for k in
                                          ('ensemble_size', 'num_layers', 'hidden_size')}}


def search_cpu(device: torch.device, budget_ms: float, args) -> Dict[str, Any]:
    """Largest CEM profile under the budget on the cpu model.

    Size = model evaluations per plan, ``N * H * I * K`` for ensemble-mean propagation and
    ``N * H * I`` for TS-inf with one particle. Only horizons >= 10 (0.5 s at 20 Hz) and at
    least 2 iterations count as sensible.
    """
    best = None
    k = CPU_MODEL['ensemble_size']
    for propagation in ('mean', 'ts_inf'):
        for horizon in (10, 15, 20):
            for iterations in (2, 3):
                for population in (30, 50, 75, 100, 150, 200, 300, 400):
                    planner = dict(LECTURE_PLANNER, horizon=horizon, iterations=iterations,
                                   population_size=population, elite_count=population // 10,
                                   propagation=propagation)
                    row = time_profile(f'search_{propagation}_h{horizon}_i{iterations}_'
                                       f'n{population}', CPU_MODEL, planner, device,
                                       args.repeats, args.warmup, args.max_seconds,
                                       args.max_delta)
                    print(json.dumps(row), flush=True)
                    if row['ms_per_plan_median'] > budget_ms:
                        break  # larger populations only cost more
                    members = k if propagation == 'mean' else 1
                    work = population * horizon * iterations * members
                    if best is None or work > best[0]:
                        best = (work, row)
    return {'config': 'search_result', 'budget_ms': budget_ms,
            'best': None if best is None else best[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='stop repeating a profile after this long (>= 2 repeats)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--profiles', default='lecture,cpu,pets,pets_cpu',
                        help=f'comma list of {sorted(PROFILES)}')
    parser.add_argument('--max-delta', type=float, default=0.4,
                        help='acceleration bound per step (normalised action)')
    parser.add_argument('--search', action='store_true',
                        help='search the largest CEM profile under --budget-ms')
    parser.add_argument('--budget-ms', type=float, default=50.0)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no GPU')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.profiles.split(',') if n]
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise SystemExit(f'unknown profiles {unknown}; known: {sorted(PROFILES)}')
    for name in names:
        model_cfg, planner = PROFILES[name]
        print(json.dumps(time_profile(name, model_cfg, planner, device, args.repeats,
                                      args.warmup, args.max_seconds, args.max_delta)),
              flush=True)
    if args.search:
        print(json.dumps(search_cpu(device, args.budget_ms, args)), flush=True)


if __name__ == '__main__':
    main()
