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
"""``benchmarks/plan_latency.py``: its bf16 variants are the planner in bf16 and the floors'
loops on bf16 tensors, timed beside the fp32 ones; bad variant names are refused; the
compiled variants add the bias as the planner does."""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import plan_latency  # noqa: E402

TINY = ({'name': 'gaussian_ensemble', 'ensemble_size': 2, 'num_layers': 2, 'hidden_size': 16,
         'activation': 'silu', 'probabilistic': True},
        {'name': 'pets', 'horizon': 3, 'population_size': 8, 'elite_count': 2, 'iterations': 2,
         'min_std': 0.05, 'initial_std': 0.5, 'alpha': 0.1, 'particles': 2,
         'propagation': 'ts_inf', 'seed': 0})


def test_split_variant():
    assert plan_latency.split_variant('compiled@bf16') == ('compiled', 'bf16')
    assert plan_latency.split_variant('fused') == ('fused', 'fp32')


def test_bf16_variants_plan_in_bf16_beside_fp32(monkeypatch):
    monkeypatch.setitem(plan_latency.CONFIGS, 'tiny', TINY)
    built = {}
    real_build = plan_latency.build

    def build(variant, *args):
        built[variant] = fn = real_build(variant, *args)
        return fn

    monkeypatch.setattr(plan_latency, 'build', build)
    args = SimpleNamespace(warmup=1, repeats=3, max_seconds=60.0, max_delta=0.4)
    variants = ['fused', 'fused@bf16', 'floor', 'floor@bf16']
    rows = plan_latency.time_config('tiny', variants, torch.device('cpu'), args)
    assert [r['variant'] for r in rows] == variants
    assert [r['precision'] for r in rows] == ['fp32', 'bf16', 'fp32', 'bf16']
    assert all(r['ms_median'] > 0 and r['repeats'] == 3 for r in rows)
    assert rows[3]['x_floor_bf16'] == 1.0 and rows[2]['x_floor'] == 1.0
    # The planner really runs its members in bf16; the floor's loop really is bf16.
    assert built['fused@bf16'].__self__.precision == 'bf16'
    assert built['fused'].__self__.precision == 'fp32'
    assert built['floor@bf16']().dtype == torch.bfloat16
    assert built['floor']().dtype == torch.float32
    json.dumps(rows)


def test_each_round_times_the_variants_in_a_new_order(monkeypatch):
    """No variant always runs first or after the same one (a position bias of ~2% was seen
    at the cpu size); the order is drawn from a fixed seed, so a run can be repeated."""
    calls = []

    def build(v, *args):
        return lambda obs: calls.append(v)
    monkeypatch.setattr(plan_latency, 'build', build)
    monkeypatch.setattr(plan_latency, 'CONFIGS', {'tiny': TINY})
    args = SimpleNamespace(warmup=0, repeats=12, max_seconds=60.0, max_delta=0.4, tf32=False)
    variants = ['fused', 'floor', 'floor_silu']
    orders = []
    for _ in range(2):
        calls.clear()
        rows = plan_latency.time_config('tiny', variants, torch.device('cpu'), args)
        assert [r['variant'] for r in rows] == variants
        assert all(r['repeats'] == 12 for r in rows)
        rounds = [tuple(calls[i:i + 3]) for i in range(0, 36, 3)]
        assert all(sorted(r) == sorted(variants) for r in rounds)
        assert {r[0] for r in rounds} == set(variants)  # each variant leads some round
        orders.append(rounds)
    assert orders[0] == orders[1]


def test_a_failing_variant_leaves_the_others(monkeypatch, capsys):
    """A variant whose build or first plan fails (a compile, a capture) gets a row saying so;
    the others are timed (a lent GPU's minutes are not lost to one failure)."""
    real = plan_latency.build

    def build(v, *args):
        fn = real(v, *args)
        if v != 'fused':
            return fn

        def broken(obs):
            raise RuntimeError('capture failed')
        return broken
    monkeypatch.setattr(plan_latency, 'build', build)
    monkeypatch.setattr(plan_latency, 'CONFIGS', {'tiny': TINY})
    args = SimpleNamespace(warmup=1, repeats=3, max_seconds=0.0, max_delta=0.4, tf32=False)
    rows = {r['variant']: r for r in plan_latency.time_config(
        'tiny', ['fused', 'floor'], torch.device('cpu'), args)}
    assert rows['fused']['skipped'] == 'failed: RuntimeError: capture failed'
    assert rows['floor']['repeats'] == 3 and 'skipped' not in rows['floor']
    assert 'capture failed' in capsys.readouterr().err  # the traceback, for the log


def test_unknown_variants_are_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['plan_latency.py', '--configs', 'cpu',
                                      '--variants', 'fused,reference@bf16'])
    with pytest.raises(SystemExit) as e:
        plan_latency.main()
    assert 'reference@bf16' in str(e.value)


def test_tf32_is_refused_off_cuda(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['plan_latency.py', '--configs', 'cpu', '--tf32'])
    with pytest.raises(SystemExit, match='CUDA devices only'):
        plan_latency.main()
    assert not torch.backends.cuda.matmul.allow_tf32


def test_compiled_bias_variants():
    """On CPU the shipped compiled plan keeps one ``baddbmm`` per layer, as bf16 and ``fused``
    do; ``compiled_split`` adds the bias after ``bmm`` (the shipped fp32 plan on CUDA),
    ``compiled_baddbmm`` never; ``compiled_py`` has inductor's Python wrapper (built only:
    nothing is compiled here)."""
    model_cfg, planner = TINY
    names = ('compiled', 'compiled_baddbmm', 'compiled_split', 'compiled_split@bf16',
             'compiled_py', 'compiled@bf16', 'fused')
    agents = {v: plan_latency.build(v, model_cfg, planner, torch.device('cpu'), 0.4).__self__
              for v in names}
    assert {v: a.folded.split_bias for v, a in agents.items()} == {
        'compiled': False, 'compiled_baddbmm': False, 'compiled_split': True,
        'compiled_split@bf16': True, 'compiled_py': False, 'compiled@bf16': False,
        'fused': False}
    assert {v: a.backend for v, a in agents.items()} == dict(
        {v: 'compiled' for v in names}, fused='fused')
    assert agents['compiled'].cpp_wrapper and not agents['compiled_py'].cpp_wrapper


def test_graph_draw_variants(monkeypatch):
    """``cuda_graph`` holds the draws in its graph, ``cuda_graph_hostdraw`` draws on the host
    (built on the CPU as a fused agent switched to the graph backend: nothing is captured)."""
    real = plan_latency.create_agent

    def create_agent(cfg, *args, **kwargs):
        graph = cfg['backend'] == 'cuda_graph'
        agent = real(dict(cfg, backend='fused') if graph else cfg, *args, **kwargs)
        if graph:
            agent.backend = 'cuda_graph'
            agent._build()
        return agent
    monkeypatch.setattr(plan_latency, 'create_agent', create_agent)
    model_cfg, planner = TINY
    agents = {v: plan_latency.build(v, model_cfg, planner, torch.device('cpu'), 0.4).__self__
              for v in ('cuda_graph', 'cuda_graph_hostdraw')}
    assert {v: (a.backend, a._graph_draws) for v, a in agents.items()} == {
        'cuda_graph': ('cuda_graph', True), 'cuda_graph_hostdraw': ('cuda_graph', False)}


@pytest.mark.parametrize('config', ['tiny', 'mid'])
def test_plan_gflop_counts_the_planners_matmuls(config):
    """``gflop_per_plan`` (and so every floor) is what the fused plan function multiplies:
    its batched matmuls counted as it runs (mid: the same shapes, fewer iterations)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    if config == 'tiny':
        model_cfg, planner = TINY
    else:
        model_cfg, planner = plan_latency.CONFIGS['mid']
        planner = dict(planner, iterations=1, horizon=2)
    flops = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default):
                a, b = args[-2:]
                flops.append(2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])
            return func(*args, **(kwargs or {}))

    agent = plan_latency.build('fused', model_cfg, planner, torch.device('cpu'), 0.4).__self__
    agent._draw()
    with Count(), torch.inference_mode():
        agent._fn(*agent._inputs())
    assert len(flops) == (model_cfg['num_layers'] + 1) * planner['iterations'] * planner['horizon']
    assert sum(flops) * 1e-9 == pytest.approx(plan_latency.plan_gflop(model_cfg, planner))


def test_count_ops_splits_host_and_function(monkeypatch):
    """``--count-ops``: the host's kernels are the draws (one per iteration for the optimizer,
    one per iteration and step for the heads) and a few copies; the function's include every
    layer's matmul; views are calls but no kernels."""
    monkeypatch.setattr(plan_latency, 'CONFIGS', {'tiny': TINY})
    model_cfg, planner = TINY
    row = plan_latency.count_ops('tiny', 'fused', torch.device('cpu'), 0.4)
    draws = planner['iterations'] * (1 + planner['horizon'])
    assert row['host_top_kernels']['normal_'] == draws
    assert draws <= row['host_kernels'] <= draws + 15 < row['host_calls']  # + obs checks, copies
    assert row['host_matmuls'] == 0
    matmuls = planner['iterations'] * planner['horizon'] * (model_cfg['num_layers'] + 1)
    assert row['function_matmuls'] == matmuls
    assert matmuls < row['function_kernels'] < row['function_calls']


def test_kernel_profile_groups_a_plans_time(monkeypatch):
    """``--kernel-profile``: the fused (eager) plan's matmuls are counted as matmuls, one per
    layer, iteration and step; its SiLU as the activation; the draws as draws."""
    monkeypatch.setattr(plan_latency, 'CONFIGS', {'tiny': TINY})
    model_cfg, planner = TINY
    args = SimpleNamespace(max_delta=0.4, warmup=1, repeats=2)
    row = plan_latency.kernel_profile('tiny', 'fused', torch.device('cpu'), args)
    groups = row['self_ms_per_plan']
    assert {'matmul', 'activation', 'draws', 'other'} <= set(groups)
    assert all(v >= 0 for v in groups.values()) and groups['matmul'] > 0
    calls = row['calls_per_plan']
    assert calls['matmul'] == planner['iterations'] * planner['horizon'] * (
        model_cfg['num_layers'] + 1)
    assert calls['draws'] >= planner['iterations'] * (1 + planner['horizon'])
    assert row['other_events'] > 0 and row['other_event_ms_max'] >= row['other_event_ms_median']
    assert plan_latency.kernel_group('aten::baddbmm') == 'matmul'
    assert plan_latency.kernel_group('graph_0_cpp_fused_add_silu_1') == 'activation'
    assert plan_latency.kernel_group('aten::normal_') == 'draws'
    with pytest.raises(SystemExit, match='CPU plans only'):
        plan_latency.kernel_profile('tiny', 'fused', torch.device('meta'), args)


def test_floors_compute_the_same_products(monkeypatch):
    """``floor`` (``bmm``, no bias) and ``floor_baddbmm`` (the old floor: ``baddbmm`` of a zero
    bias) multiply the same matrices, each with its own op; ``floor_silu`` differs by the
    activation only."""
    model_cfg, planner = TINY
    calls = []
    for name in ('bmm', 'baddbmm'):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name,
                            lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k))
    out = {}
    for v in ('floor', 'floor_baddbmm', 'floor_silu'):
        calls.clear()
        out[v] = plan_latency.build(v, model_cfg, planner, torch.device('cpu'), 0.4)()
        steps = planner['iterations'] * planner['horizon'] * (model_cfg['num_layers'] + 1)
        assert calls == ['baddbmm' if v == 'floor_baddbmm' else 'bmm'] * steps, v
    torch.testing.assert_close(out['floor'], out['floor_baddbmm'])
    assert out['floor'].shape == out['floor_silu'].shape
    assert not torch.allclose(out['floor'], out['floor_silu'])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason='torch built without mkldnn')
def test_onednn_floor_computes_floor_silu_with_the_activation_in_the_epilogue(monkeypatch):
    """``floor_onednn_silu`` gives ``floor_silu``'s outputs from the same random matrices, with
    every layer one oneDNN linear (SiLU as the hidden layers' post-op) and no separate SiLU."""
    model_cfg, planner = TINY
    attrs, silu = [], []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.nn.functional, 'silu', lambda *a, **k: silu.append(1))
    fused = plan_latency.build('floor_onednn_silu', model_cfg, planner, torch.device('cpu'), 0.4)

    class Ops:  # count the epilogues without touching torch.ops itself
        def __getattr__(self, name):
            return getattr(torch.ops.mkldnn, name)

        def _linear_pointwise(self, *a):
            attrs.append(a[3])
            return real(*a)
    monkeypatch.setattr(torch.ops, 'mkldnn', Ops(), raising=False)
    out = fused()
    k, _, sizes, steps = plan_latency.matmul_shapes(model_cfg, planner)
    layers = len(sizes) - 1
    assert attrs == (['swish'] * (layers - 1) + ['none']) * k * steps and not silu
    monkeypatch.undo()
    torch.testing.assert_close(out, plan_latency.build('floor_silu', model_cfg, planner,
                                                       torch.device('cpu'), 0.4)())
