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
"""Latency of one MPC plan per backend, interleaved in one process; one JSON line each.

For each planner configuration (``--configs``) every variant plans from the same state in
turn, round after round (so a shared machine's load hits all of them alike; each round in a
new order, drawn from a fixed seed, since session 39 found that at the cpu size the variant
timed right after another gained ~2% whichever it was), and one line per
(config, variant) gives ``ms_median``, ``ms_p99``, ``cpu_ms_median`` (process CPU time, which
tracks the unloaded wall time with one thread), ``first_call_s`` (for ``compiled``: the
compilation), ``x_vs_mbrl_lib`` (mbrl-lib's median / this variant's), ``x_floor`` and
``x_floor_silu`` (this variant's median / the bare loops'), ``gflop_per_plan`` (the fused
plan's matmuls, which every floor computes) and ``matmul_tflops`` (those over the median; none
for ``reference`` and ``mbrl_lib``, which batch otherwise). Variants:

* ``reference``: ``MPCAgent``, the eager op-at-a-time planner;
* ``fused``, ``compiled``, ``cuda_graph``, ``compiled_cuda_graph``: ``FusedMPCAgent`` backends
  (``core/planning/fused.py``; the graph ones on CUDA only);
* ``compiled_baddbmm``, ``compiled_split``: ``compiled`` with each layer one ``baddbmm`` (bias
  included), or a ``bmm`` with the bias added in the activation's kernel, whatever the
  device and precision (the shipped plan: ``baddbmm`` in bf16 and on CPU while a hidden
  layer's output fits in ``fused.SPLIT_BIAS_MIN_BYTES``, the split otherwise;
  ``FoldedEnsemble.split_bias``);
* ``compiled_py``: ``compiled`` with inductor's Python wrapper, where the shipped one on CPU
  launches its kernels from a C++ wrapper;
* ``cuda_graph_hostdraw``: ``cuda_graph`` with the noise drawn on the host before each replay
  (one launch per draw), where the shipped graph holds the draws;
* ``mbrl_lib``: mbrl-lib 0.2.0's ``TrajectoryOptimizerAgent`` (CEM, ``GaussianMLP``, the same
  sizes, propagation and reward) when ``--mbrl-lib`` is given and ``import mbrl`` works (it
  lives outside the project's venv: ``pip install --no-deps --target DIR mbrl==0.2.0
  hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 termcolor tqdm`` and
  ``PYTHONPATH=DIR``);
* ``floor``: a bare loop of the same batched matmuls (same FLOPs: every layer of every model
  step of every iteration, the statistics rows included), each one ``bmm`` into a preallocated
  output, with no bias, activation, reward, sampling or refit: what the arithmetic alone costs
  here (until session 33 it was ``baddbmm``, whose broadcast bias is first copied into every
  output row: 9-12% slower at these sizes, so a plan that adds the bias elsewhere could beat
  it; ``floor_baddbmm`` is that old floor, for comparing with earlier tables);
* ``floor_silu``: the same loop with the hidden layers' SiLU applied in place, the part of the
  elementwise work no planner of this network avoids;
* ``floor_onednn_silu``: ``floor_silu``'s products and SiLU computed otherwise, per member by
  oneDNN's linear with the SiLU fused into the matmul's epilogue (``swish`` post-op) on
  prepacked weights (CPU builds with mkldnn only; elsewhere the row says it was skipped): can
  the activation hide inside the matmul on this CPU (session 35: no, below ``floor_silu``'s
  speed);
* ``VARIANT@bf16`` (of every variant but ``reference`` and ``mbrl_lib``): the same in
  bfloat16: the planner with ``precision: bf16`` (its members' matmuls under autocast), the
  floors' loops on bf16 tensors. ``x_floor`` stays the ratio to the fp32 ``floor``;
  ``x_floor_bf16`` is the ratio to ``floor@bf16`` when timed.
  (``tf32`` is set process-wide and would change every fp32 variant of the run: it has the
  precision check only.)

Models are random-init ensembles (the cost does not depend on the weights); state S=17, action
A=7, reward -||puck - target||, acceleration bound 0.4 and plan statistics on, as in the
controller. Configurations (``CONFIGS``): ``cpu`` (the 20 Hz CPU profile, K=5 of 3x200, CEM
H=15 N=100 M=10 I=2, TS-inf, one particle), ``mid`` (the same model, PETS H=15 N=200 M=20 I=3,
P=5), ``lecture`` (K=5 of 4x500, H=25 N=500 M=50 I=5, P=5, TS-inf), ``lecture_mean`` (the
lecture's CEM on the ensemble mean, P=1), ``pets_cpu``.

``--count-ops`` instead counts the aten calls of one plan (torch's dispatch mode): those the
host makes outside the plan function (the draws, the inputs' copies, the outputs' transfers: on
a GPU, each call that runs a kernel is a launch from Python) and those inside it (an eager CUDA
graph replays one kernel per such call), for ``fused`` and, on CUDA, the graph backends (a
replay dispatches nothing). ``*_kernels`` leaves out views and no-op casts.

``--kernel-profile`` instead profiles ``--repeats`` plans of each of ``--variants`` (CPU) and
prints where their time goes: per plan, the self time of the matmuls, the activation's kernels,
the draws, the generated wrapper and the rest, and the largest events (``compiled_py`` shows
the compiled plan's kernels one by one).

``--precision-check RUN_DIR`` instead plans from states recorded in a finished run (its buffer,
its latest model, the targets of its episodes) in fp32 and in ``--precision`` and prints how
far the first action and the plan's fp32-evaluated return move.

Usage::

    python benchmarks/plan_latency.py --threads 1 [--configs cpu,mid,lecture] [--mbrl-lib]
    python benchmarks/plan_latency.py --device cuda --variants fused,compiled,cuda_graph,...
    python benchmarks/plan_latency.py --precision-check runs/<run> --precision bf16
    python benchmarks/plan_latency.py --search --budget-ms 50   # largest CPU profile < 50 ms
    python benchmarks/plan_latency.py --count-ops --configs cpu,mid,lecture
    python benchmarks/plan_latency.py --kernel-profile --threads 1 --configs mid \\
        --variants compiled_py,fused --repeats 5

Compare ratios measured in one run, not absolute times across runs.
"""

import argparse
import json
import math
import time
import traceback
from collections import Counter
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mbrl_robot.core.models import create_model
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
CONFIGS: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {
    'cpu': (CPU_MODEL, CPU_PROFILE),
    'mid': (CPU_MODEL, dict(CPU_PROFILE, name='pets', population_size=200, elite_count=20,
                            iterations=3, particles=5)),
    'lecture': (LECTURE_MODEL, dict(LECTURE_PLANNER, name='pets', particles=5,
                                    propagation='ts_inf')),
    'lecture_mean': (LECTURE_MODEL, LECTURE_PLANNER),
    'pets_cpu': (CPU_MODEL, dict(CPU_PROFILE, name='pets', population_size=30, elite_count=5,
                                 particles=5)),
}
VARIANTS = ('reference', 'fused', 'compiled', 'compiled_baddbmm', 'compiled_split', 'compiled_py',
            'cuda_graph', 'cuda_graph_hostdraw', 'compiled_cuda_graph', 'mbrl_lib', 'floor',
            'floor_silu', 'floor_baddbmm', 'floor_onednn_silu')
AB_VARIANTS = {'compiled_baddbmm': 'compiled', 'compiled_split': 'compiled',
               'compiled_py': 'compiled', 'cuda_graph_hostdraw': 'cuda_graph'}  # -> their backend
KNOWN_BF16 = tuple(f'{v}@bf16' for v in VARIANTS if v not in ('reference', 'mbrl_lib'))
TARGET = (0.6, 0.2, 0.02)


def make_model(cfg: Dict[str, Any], device: torch.device):
    """A random-init ensemble of the block's shape, in eval mode."""
    model = create_model(cfg, obs_dim=S, act_dim=A, device=device, seed=0)
    return model.eval()


def puck_reward(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """-||puck - target||, the benchmark's reward for every planner."""
    target = torch.tensor(TARGET, device=device)

    def reward_fn(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(next_obs[..., PUCK] - target, dim=-1)

    return reward_fn


def project_planner(model_cfg, planner, device, backend, max_delta, precision='fp32'):
    """``act(obs)`` of the project's planner on a random-init model; ``compiled_baddbmm``,
    ``compiled_split``: ``compiled`` with every layer one ``baddbmm``, or ``bmm`` then the bias,
    whatever the device and precision (``FoldedEnsemble.split_bias``); ``compiled_py``:
    ``compiled`` with inductor's Python wrapper (``FusedMPCAgent.cpp_wrapper``);
    ``cuda_graph_hostdraw``: the draws outside the graph (``FusedMPCAgent.draw_in_graph``)."""
    variant, backend = backend, AB_VARIANTS.get(backend, backend)
    agent = create_agent(dict(planner, backend=backend, precision=precision),
                         make_model(model_cfg, device), puck_reward(device), A, device,
                         max_delta=max_delta)
    if variant in ('compiled_baddbmm', 'compiled_split'):
        agent.folded.split_bias = variant == 'compiled_split'  # before the first plan traces
    if variant == 'compiled_py':
        agent.cpp_wrapper = False
        agent._build()  # the plan function again, with the Python wrapper
    if variant == 'cuda_graph_hostdraw':
        agent.draw_in_graph = False
        agent._build()  # nothing captured yet: the first plan captures without the draws
    return agent.act


def mbrl_lib_planner(model_cfg, planner, device, max_delta):
    """``act(obs)`` of mbrl-lib 0.2.0's CEM agent with the same sizes (``import mbrl``).

    mbrl-lib has no acceleration bound (``max_delta`` is ignored) and computes no plan
    statistics; its ``num_layers`` counts hidden layers, as ours does; its propagation:
    ``mean`` -> expectation, ``ts_inf`` -> fixed_model, ``ts_1`` -> random_model.
    """
    import gymnasium as gym
    import mbrl.models
    import mbrl.planning
    import omegaconf
    prop = {'mean': 'expectation', 'ts_inf': 'fixed_model', 'ts_1': 'random_model'}
    net = mbrl.models.GaussianMLP(
        in_size=S + A, out_size=S, device=device, num_layers=model_cfg['num_layers'],
        ensemble_size=model_cfg['ensemble_size'], hid_size=model_cfg['hidden_size'],
        deterministic=not model_cfg.get('probabilistic', True),
        propagation_method=prop[planner['propagation']],
        activation_fn_cfg={'_target_': 'torch.nn.SiLU'})
    dynamics = mbrl.models.OneDTransitionRewardModel(net, target_is_delta=True, normalize=True,
                                                     learned_rewards=False)
    target = torch.tensor(TARGET, device=device)

    class Spaces:
        observation_space = gym.spaces.Box(-np.inf, np.inf, (S,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)

    def reward_fn(act, next_obs):
        return -torch.linalg.vector_norm(next_obs[..., PUCK] - target, dim=-1, keepdim=True)

    def termination_fn(act, next_obs):
        return torch.zeros(next_obs.shape[0], 1, dtype=torch.bool, device=next_obs.device)

    generator = torch.Generator(device=device).manual_seed(0)
    model_env = mbrl.models.ModelEnv(Spaces(), dynamics, termination_fn, reward_fn,
                                     generator=generator)
    cfg = omegaconf.OmegaConf.create({
        '_target_': 'mbrl.planning.TrajectoryOptimizerAgent', '_recursive_': False,
        'planning_horizon': planner['horizon'], 'replan_freq': 1, 'verbose': False,
        'action_lb': [-1.0] * A, 'action_ub': [1.0] * A,
        'optimizer_cfg': {
            '_target_': 'mbrl.planning.CEMOptimizer', 'num_iterations': planner['iterations'],
            'elite_ratio': planner['elite_count'] / planner['population_size'],
            'population_size': planner['population_size'], 'alpha': planner['alpha'],
            'device': str(device), 'lower_bound': '???', 'upper_bound': '???',
            'return_mean_elites': True, 'clipped_normal': False}})
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(
        model_env, cfg, num_particles=planner.get('particles', 1))
    agent.reset()
    return agent.act


def matmul_shapes(model_cfg, planner) -> Tuple[int, int, List[int], int]:
    """(members K, rows per member, layer sizes, model steps per plan) of the plan's batched
    matmuls, rows as the fused planner batches them (the statistics rows included)."""
    k, hid, layers = (model_cfg['ensemble_size'], model_cfg['hidden_size'],
                      model_cfg['num_layers'])
    n, p = planner['population_size'], planner.get('particles', 1)
    rows = k * (n + 1) if planner['propagation'] == 'mean' else -(-n * p // k) * k + k
    probabilistic = model_cfg.get('probabilistic', True) and not planner.get('deterministic')
    sampling = probabilistic and planner['propagation'] != 'mean'
    sizes = [S + A] + [hid] * layers + [2 * S if sampling else S]
    return k, rows // k, sizes, planner['iterations'] * planner['horizon']


def plan_gflop(model_cfg, planner) -> float:
    """The matmuls' GFLOP per plan (2 per multiply-add): what ``floor`` computes."""
    k, b, sizes, steps = matmul_shapes(model_cfg, planner)
    return 2e-9 * steps * k * b * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def floor_loop(model_cfg, planner, device, activation: bool = False,
               dtype: torch.dtype = torch.float32, bias: bool = False):
    """The plan's batched matmuls alone: ``iterations * horizon`` model steps, each every layer
    as one ``bmm`` into a preallocated output (no bias), rows as the fused planner batches
    them (the statistics rows included); with ``activation``, plus the hidden layers' SiLU in
    place (what any planner of this network must compute); with ``bias``, each layer one
    ``baddbmm`` of a zero bias instead (the floor until session 33); every tensor in
    ``dtype``."""
    k, b, sizes, steps = matmul_shapes(model_cfg, planner)
    layers = len(sizes) - 2
    g = torch.Generator().manual_seed(0)
    ws = [(torch.randn(k, i, o, generator=g) / math.sqrt(i)).to(device, dtype)
          for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [torch.zeros(k, 1, o, device=device, dtype=dtype) for o in sizes[1:]]
    outs = [torch.empty(k, b, o, device=device, dtype=dtype) for o in sizes[1:]]
    x = torch.randn(k, b, sizes[0], generator=g).to(device, dtype)

    def run(obs=None):
        for _ in range(steps):
            h = x
            for i, (w, c, out) in enumerate(zip(ws, bs, outs)):
                if bias:
                    torch.baddbmm(c, h, w, out=out)
                else:
                    torch.bmm(h, w, out=out)
                if activation and i < layers:
                    torch.nn.functional.silu(out, inplace=True)
                h = out
        return h
    return run


def onednn_floor_loop(model_cfg, planner, device, dtype: torch.dtype = torch.float32):
    """``floor_loop(activation=True)``'s products and SiLU, each member's layer one oneDNN
    linear with the SiLU in its epilogue (the ``swish`` post-op) on weights packed once for the
    row count: the matmul-epilogue fusion a C++ kernel library offers on CPU."""
    if device.type != 'cpu' or not torch.backends.mkldnn.is_available():
        raise RuntimeError('floor_onednn_silu needs a CPU build of torch with mkldnn')
    k, b, sizes, steps = matmul_shapes(model_cfg, planner)
    layers = len(sizes) - 2
    g = torch.Generator().manual_seed(0)
    ws = [(torch.randn(k, i, o, generator=g) / math.sqrt(i)).to(dtype)
          for i, o in zip(sizes[:-1], sizes[1:])]
    packed = [[torch.ops.mkldnn._reorder_linear_weight(w[m].t().contiguous(), b)
               for m in range(k)] for w in ws]
    x = torch.randn(k, b, sizes[0], generator=g).to(dtype)
    attrs = ['swish'] * layers + ['none']

    def run(obs=None):
        for _ in range(steps):
            outs = []
            for m in range(k):
                h = x[m]
                for w, attr in zip(packed, attrs):
                    h = torch.ops.mkldnn._linear_pointwise(h, w[m], None, attr, [], '')
                outs.append(h)
        return torch.stack(outs)
    return run


def split_variant(variant: str) -> Tuple[str, str]:
    """'compiled@bf16' -> ('compiled', 'bf16'); 'fused' -> ('fused', 'fp32')."""
    base, _, precision = variant.partition('@')
    return base, precision or 'fp32'


def build(variant, model_cfg, planner, device, max_delta):
    base, precision = split_variant(variant)
    if base == 'mbrl_lib':
        return mbrl_lib_planner(model_cfg, planner, device, max_delta)
    if base.startswith('floor'):
        dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
        if base == 'floor_onednn_silu':
            return onednn_floor_loop(model_cfg, planner, device, dtype)
        return floor_loop(model_cfg, planner, device, activation=base == 'floor_silu',
                          dtype=dtype, bias=base == 'floor_baddbmm')
    return project_planner(model_cfg, planner, device, base, max_delta, precision)


def time_config(name: str, variants: List[str], device: torch.device, args) -> List[Dict]:
    """Interleaved timing of ``variants`` on config ``name``; one row per variant."""
    model_cfg, planner = CONFIGS[name]
    obs = np.random.default_rng(0).normal(scale=0.3, size=S).astype(np.float32)
    fns: Dict[str, Callable] = {}
    first: Dict[str, float] = {}
    skipped: Dict[str, str] = {}
    for v in variants:
        if 'cuda_graph' in v and device.type != 'cuda':
            skipped[v] = 'needs CUDA'
            continue
        t0 = time.perf_counter()
        try:
            fn = build(v, model_cfg, planner, device, args.max_delta)
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                fn(obs)
            _sync(device)
        except ImportError as e:
            skipped[v] = f'not importable: {e}'
            continue
        except Exception as e:  # noqa: B902 - a failing variant (compile, capture): the others run
            traceback.print_exc()
            skipped[v] = f'failed: {type(e).__name__}: {str(e)[:300]}'
            continue
        first[v] = time.perf_counter() - t0
        fns[v] = fn
    times = {v: [] for v in fns}
    cpu = {v: [] for v in fns}
    names = list(fns)
    shuffle = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(args.repeats):
        # Each round in a new order: no variant always runs first, or after the same one.
        for v in (names[i] for i in shuffle.permutation(len(names))):
            fn = fns[v]
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(obs)
            _sync(device)
            times[v].append(1e3 * (time.perf_counter() - t0))
            cpu[v].append(1e3 * (time.process_time() - c0))
        if (time.perf_counter() - start > args.max_seconds
                and all(len(t) >= 3 for t in times.values())):
            break
    med = {v: float(np.median(t)) for v, t in times.items()}
    gflop = plan_gflop(model_cfg, planner)
    rows = []
    for v in variants:
        row: Dict[str, Any] = {'config': name, 'variant': v, 'device': str(device),
                               'threads': torch.get_num_threads()}
        if v in skipped:
            row['skipped'] = skipped[v]
        else:
            row.update({
                'ms_median': round(med[v], 3),
                'ms_p99': round(float(np.percentile(times[v], 99)), 3),
                'cpu_ms_median': round(float(np.median(cpu[v])), 3),
                'first_call_s': round(first[v], 2), 'repeats': len(times[v]),
                'x_vs_mbrl_lib': round(med['mbrl_lib'] / med[v], 3) if 'mbrl_lib' in med
                else None,
                'x_floor': round(med[v] / med['floor'], 3) if 'floor' in med else None,
                'x_floor_silu': round(med[v] / med['floor_silu'], 3) if 'floor_silu' in med
                else None,
                'gflop_per_plan': round(gflop, 3),
                # The fused plan's matmuls (its batching, its statistics rows) per median time:
                # not the matmuls of the reference or of mbrl-lib, which batch otherwise.
                'matmul_tflops': (None if split_variant(v)[0] in ('reference', 'mbrl_lib')
                                  else round(gflop / med[v], 4)),
                'precision': split_variant(v)[1]})
            if row['precision'] == 'fp32' and getattr(args, 'tf32', False):
                row['precision'] = 'tf32'
            if 'floor@bf16' in med:
                row['x_floor_bf16'] = round(med[v] / med['floor@bf16'], 3)
        row.update(planner=planner, model={k: model_cfg[k] for k in
                                           ('ensemble_size', 'num_layers', 'hidden_size')})
        rows.append(row)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_profile(name: str, model_cfg: Dict[str, Any], planner: Dict[str, Any],
                 device: torch.device, repeats: int, warmup: int, max_seconds: float,
                 max_delta: float, backend: str = 'fused') -> Dict[str, Any]:
    """Median and p99 wall time of one planner alone (``--search``)."""
    act = project_planner(model_cfg, planner, device, backend, max_delta)
    obs = np.random.default_rng(0).normal(scale=0.3, size=S).astype(np.float32)
    for _ in range(warmup):
        act(obs)
    times: List[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        act(obs)
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
        if time.perf_counter() - start > max_seconds and len(times) >= 2:
            break
    return {'config': name, 'variant': backend, 'device': str(device),
            'ms_median': round(float(np.median(times)), 2),
            'ms_p99': round(float(np.percentile(times, 99)), 2),
            'threads': torch.get_num_threads(), 'repeats': len(times), 'planner': planner}


def _launches(func, args, out) -> bool:
    """Whether an aten call runs a kernel: not a view or a no-op cast (its output shares its
    first input's storage without writing it in place)."""
    first = args[0] if args else None
    if (func.__name__.split('.')[0].endswith('_') or not isinstance(first, torch.Tensor)
            or not isinstance(out, torch.Tensor)):
        return True
    return out.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()


class OpCounter(TorchDispatchMode):
    """Counts the aten calls made under it, and those that run a kernel, per ``side`` (set it
    to tell apart where the calls come from)."""

    def __init__(self):
        super().__init__()
        self.side = 'host'
        self.calls: Dict[str, Counter] = {}
        self.kernels: Dict[str, Counter] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split('.')[0]
        self.calls.setdefault(self.side, Counter())[name] += 1
        kernels = self.kernels.setdefault(self.side, Counter())
        if _launches(func, args, out):
            kernels[name] += 1
        return out


def count_ops(name: str, variant: str, device: torch.device, max_delta: float) -> Dict:
    """The aten calls of one plan (after a first one), host-side and inside the function."""
    model_cfg, planner = CONFIGS[name]
    agent = build(variant, model_cfg, planner, device, max_delta).__self__
    obs = np.random.default_rng(0).normal(scale=0.3, size=S).astype(np.float32)
    agent.plan(obs)
    counter = OpCounter()
    fn = agent._fn

    def counted_fn(*inputs):
        counter.side = 'function'
        try:
            return fn(*inputs)
        finally:
            counter.side = 'host'

    agent._fn = counted_fn
    try:
        with counter:
            agent.plan(obs)
    finally:
        agent._fn = fn
    row: Dict[str, Any] = {'config': name, 'variant': variant, 'device': str(device),
                           'count': 'aten calls per plan'}
    for side in ('host', 'function'):
        calls, kernels = counter.calls.get(side, Counter()), counter.kernels.get(side, Counter())
        row[f'{side}_calls'] = sum(calls.values())
        row[f'{side}_kernels'] = sum(kernels.values())
        row[f'{side}_matmuls'] = kernels['bmm'] + kernels['baddbmm']
        row[f'{side}_top_kernels'] = dict(kernels.most_common(5))
    return row


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
                                       args.max_delta, args.search_backend)
                    print(json.dumps(row), flush=True)
                    if row['ms_median'] > budget_ms:
                        break  # larger populations only cost more
                    members = k if propagation == 'mean' else 1
                    work = population * horizon * iterations * members
                    if best is None or work > best[0]:
                        best = (work, row)
    return {'config': 'search_result', 'budget_ms': budget_ms,
            'best': None if best is None else best[1]}


def precision_check(run_dir: str, precision: str, device: torch.device, args) -> Dict:
    """Plans from recorded states of a finished run in fp32 and in ``precision``."""
    import glob
    import os
    from mbrl_robot.config import node_params
    from mbrl_robot.core.buffer.storage import TransitionStore
    from mbrl_robot.core.models import GaussianEnsemble
    from mbrl_robot.core.planning.trajectory import TrajectoryEvaluator
    from mbrl_robot.core.tasks.push import PushTask
    models = sorted(glob.glob(os.path.join(run_dir, 'models', 'v*')))
    if not models:
        raise SystemExit(f'{run_dir}: no models/v*/ (a finished run of mbrl_run is needed)')
    model = GaussianEnsemble.load(models[-1], device=device).eval()
    store = TransitionStore.open_read_only(os.path.join(run_dir, 'buffer'))
    try:
        rec = store.records()
    finally:
        store.close()
    obs_all, targets = rec.batch.obs, rec.target
    rng = np.random.default_rng(0)
    idx = rng.choice(len(obs_all), size=min(args.states, len(obs_all)), replace=False)
    planner = dict(node_params(args.profile, 'controller')['planner'])
    task = PushTask.from_config(node_params(args.profile, 'controller')['task']).to(device)
    mean_eval = TrajectoryEvaluator(model, task.reward_fn, propagation='mean')
    rows = []
    for i in idx:
        obs = obs_all[i].astype(np.float32)
        task.set_target(targets[i])
        plans = {}
        for prec in ('fp32', precision):
            agent = create_agent(dict(planner, backend='fused', precision=prec), model,
                                 task.reward_fn, A, device, max_delta=args.max_delta)
            plans[prec] = agent.plan(obs)
        ret = {p: float(mean_eval.evaluate(torch.as_tensor(obs, device=device),
                                           torch.as_tensor(a[None], device=device))[0])
               for p, a in plans.items()}
        rows.append((float(np.abs(plans['fp32'][0] - plans[precision][0]).max()),
                     ret['fp32'] - ret[precision], abs(ret['fp32']) + 1e-9))
    da, dr, scale = (np.array(c) for c in zip(*rows))
    return {'check': 'precision', 'precision': precision, 'device': str(device),
            'run': run_dir, 'model': os.path.basename(models[-1]), 'states': len(rows),
            'first_action_max_abs_diff_median': round(float(np.median(da)), 4),
            'first_action_max_abs_diff_p95': round(float(np.percentile(da, 95)), 4),
            'identical_plans': int((da == 0).sum()),
            'fp32_return_loss_rel_median': round(float(np.median(dr / scale)), 5),
            'fp32_return_loss_rel_p95': round(float(np.percentile(dr / scale, 95)), 5)}


KERNEL_GROUPS = (('matmul', ('aten::bmm', 'aten::baddbmm', 'aten::mm', 'aten::addmm')),
                 ('draws', ('aten::normal_', 'aten::uniform_', 'aten::randperm',
                            'aten::randn', 'aten::scatter_')))


def kernel_group(name: str) -> str:
    """The part of a plan a profiler event's name belongs to (see :func:`kernel_profile`)."""
    for group, names in KERNEL_GROUPS:
        if name in names:
            return group
    if 'silu' in name:
        return 'activation'  # the hidden layers' SiLU, with the bias added in its kernel
    if name.startswith('## Call CompiledFxGraph'):
        return 'wrapper'  # the generated code between the kernels
    return 'other'


def kernel_profile(name: str, variant: str, device: torch.device, args) -> Dict:
    """Where one plan's CPU time goes: torch.profiler's self time per event over
    ``args.repeats`` plans (after ``args.warmup``), per plan, grouped by :func:`kernel_group`
    (matmuls, the activation's kernels, the draws, the generated wrapper, the rest) and the
    eight largest events, and how many events the rest is and their median and largest self
    time. Compiled variants record each generated kernel (``cpp.enable_kernel_profile``, set
    for their compile only); ``compiled_py`` (the Python wrapper) shows the library matmuls as
    ``aten::bmm`` too."""
    from torch.profiler import profile, ProfilerActivity
    if device.type != 'cpu':
        raise SystemExit('--kernel-profile times CPU plans only')
    import torch._inductor.config as inductor_config
    model_cfg, planner = CONFIGS[name]
    obs = np.random.default_rng(0).normal(scale=0.3, size=S).astype(np.float32)
    # Compiled here (the first plans), with each generated kernel recorded; nothing else in
    # the process is compiled with it.
    with inductor_config.patch({'cpp.enable_kernel_profile': True}):
        act = build(variant, model_cfg, planner, device, args.max_delta)
        for _ in range(max(args.warmup, 1)):
            act(obs)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            act(obs)
    wall_ms = (time.perf_counter() - t0) * 1e3 / args.repeats
    events = [(e.key, e.self_cpu_time_total / 1e3 / args.repeats, e.count / args.repeats)
              for e in prof.key_averages()]
    groups: Dict[str, float] = {}
    calls: Dict[str, float] = {}
    for key, ms, n in events:
        groups[kernel_group(key)] = groups.get(kernel_group(key), 0.0) + ms
        calls[kernel_group(key)] = calls.get(kernel_group(key), 0.0) + n
    top = sorted(events, key=lambda e: -e[1])[:8]
    others = sorted(ms for key, ms, _ in events if kernel_group(key) == 'other')
    return {'config': name, 'variant': variant, 'plans': args.repeats,
            'threads': torch.get_num_threads(), 'profiled_ms_per_plan': round(wall_ms, 2),
            'self_ms_per_plan': {g: round(v, 2) for g, v in sorted(groups.items())},
            'calls_per_plan': {g: calls[g] for g in sorted(calls)},
            # The rest, event by event (a compiled plan: each generated kernel).
            'other_events': len(others),
            'other_event_ms_median': round(float(np.median(others)), 4) if others else None,
            'other_event_ms_max': round(others[-1], 4) if others else None,
            'top': [{'name': k[:90], 'ms_per_plan': round(ms, 3), 'calls_per_plan': n}
                    for k, ms, n in top]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--configs', default='cpu,mid,lecture',
                        help=f'comma list of {sorted(CONFIGS)}')
    parser.add_argument('--variants', default='reference,fused,compiled,cuda_graph,'
                        'compiled_cuda_graph,floor,floor_silu',
                        help=f'comma list of {VARIANTS + KNOWN_BF16}')
    parser.add_argument('--mbrl-lib', action='store_true', help='add the mbrl_lib variant')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--max-seconds', type=float, default=120.0,
                        help='stop the rounds of a config after this long (>= 3 rounds)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--tf32', action='store_true',
                        help='CUDA: TF32 matmuls process-wide (every fp32 variant and floor of '
                        'the run; its rows say precision tf32)')
    parser.add_argument('--max-delta', type=float, default=0.4,
                        help='acceleration bound per step (normalised action)')
    parser.add_argument('--search', action='store_true',
                        help='search the largest CEM profile under --budget-ms')
    parser.add_argument('--search-backend', default='fused')
    parser.add_argument('--budget-ms', type=float, default=50.0)
    parser.add_argument('--count-ops', action='store_true',
                        help='count the aten calls of one plan, host-side and in the function')
    parser.add_argument('--kernel-profile', action='store_true',
                        help='where each --variants plan spends its CPU time, by kernel')
    parser.add_argument('--precision-check', metavar='RUN_DIR', default=None)
    parser.add_argument('--precision', default='bf16', choices=('tf32', 'bf16'))
    parser.add_argument('--profile', default='twin_realistic',
                        help='config profile whose planner the precision check uses')
    parser.add_argument('--states', type=int, default=50)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no GPU')
    if args.tf32 and args.device != 'cuda':
        raise SystemExit('--tf32 exists on CUDA devices only')
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.precision_check:
        print(json.dumps(precision_check(args.precision_check, args.precision, device, args)),
              flush=True)
        return
    if args.search:
        print(json.dumps(search_cpu(device, args.budget_ms, args)), flush=True)
        return
    configs = [c for c in args.configs.split(',') if c]
    if args.count_ops:
        graphs = ['cuda_graph', 'cuda_graph_hostdraw'] if device.type == 'cuda' else []
        for name in configs:
            for variant in ['fused'] + graphs:
                print(json.dumps(count_ops(name, variant, device, args.max_delta)), flush=True)
        return
    variants = [v for v in args.variants.split(',') if v]
    if args.mbrl_lib and 'mbrl_lib' not in variants:
        variants.insert(0, 'mbrl_lib')
    known = VARIANTS + KNOWN_BF16
    bad = [c for c in configs if c not in CONFIGS] + [v for v in variants if v not in known]
    if bad:
        raise SystemExit(f'unknown configs/variants {bad}; known: {sorted(CONFIGS)}, {known}')
    for name in configs:
        if args.kernel_profile:
            for variant in variants:
                print(json.dumps(kernel_profile(name, variant, device, args)), flush=True)
            continue
        for row in time_config(name, variants, device, args):
            print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
