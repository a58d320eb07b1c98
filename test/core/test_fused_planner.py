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
"""The fused plan (core/planning/fused.py) against the eager reference, compiled and captured."""

import numpy as np
import pytest
import torch

from mbrl_robot.core.models import create_model
from mbrl_robot.core.planning import create_agent
from mbrl_robot.core.planning.agent import MPCAgent
from mbrl_robot.core.planning import fused
from mbrl_robot.core.planning.fused import FoldedEnsemble, FusedMPCAgent
from mbrl_robot.core.safety import JointLimits
from mbrl_robot.core.tasks.push import PushTask

CUDA = torch.cuda.is_available()


def small_model(seed=0, probabilistic=True, features=(), device='cpu', num_elites=None):
    """A random ensemble with non-trivial normalisers (so that folding them matters)."""
    cfg = {'name': 'gaussian_ensemble', 'ensemble_size': 4, 'num_layers': 2, 'hidden_size': 24,
           'activation': 'silu', 'probabilistic': probabilistic, 'input_features': list(features)}
    if num_elites is not None:
        cfg['num_elites'] = num_elites
    model = create_model(cfg, obs_dim=17, act_dim=7, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    model.input_normalizer.fit(torch.randn(300, model.in_size, generator=g) * 0.5 + 0.1)
    model.output_normalizer.fit(torch.randn(300, 17, generator=g) * 0.02 + 0.001)
    if num_elites is not None:
        model.set_elites(list(range(model.ensemble_size))[-num_elites:])
    return model.to(device).eval()


def push_task(device='cpu'):
    task = PushTask(tool_shaping_weight=0.5).to(torch.device(device))
    task.set_target([0.65, 0.05, 0.02])
    return task


def states(n=3, seed=0):
    rng = np.random.default_rng(seed)
    base = np.zeros(17, np.float32)
    base[:7] = [0.0, 0.6, 0.0, -1.4, 0.0, 1.0, 0.0]
    base[14:] = [0.55, 0.0, 0.02]
    return [base + rng.normal(scale=0.05, size=17).astype(np.float32) for _ in range(n)]


PLANNERS = {
    'cem_mean': dict(name='cem', horizon=5, population_size=24, elite_count=4, iterations=3,
                     propagation='mean'),
    'pets_ts_inf': dict(name='pets', horizon=5, population_size=24, elite_count=4,
                        iterations=2, propagation='ts_inf', particles=3),
    'pets_ts_1_pessimism': dict(name='pets', horizon=5, population_size=20, elite_count=4,
                                iterations=2, propagation='ts_1', particles=2, pessimism=0.5),
    'cem_truncnorm_mean': dict(name='cem', horizon=5, population_size=24, elite_count=4,
                               iterations=2, propagation='ts_inf', bound_mode='truncnorm',
                               return_mean=True, deterministic=True),
    'random_shooting': dict(name='random_shooting', horizon=5, population_size=30,
                            propagation='ts_inf'),
}


def run(cfg, model, task, backend, obs_list, **kw):
    agent = create_agent(dict(cfg, backend=backend), model, task.reward_fn, 7, 'cpu',
                         max_delta=0.4, **kw)
    plans, infos = [], []
    for obs in obs_list:
        plans.append(agent.plan(obs))
        infos.append(dict(agent.last_plan_info))
        agent.set_last_action(plans[-1][0])
    return agent, np.stack(plans), infos


@pytest.mark.parametrize('name', sorted(PLANNERS))
@pytest.mark.parametrize('features', [(), ('tool_tip', 'tip_to_puck')])
def test_fused_plans_what_the_reference_plans(name, features):
    """Same seed, same plans, warm start and last action carried over three plans: the fused
    function draws the reference's random numbers in the reference's order."""
    model, task = small_model(features=features), push_task()
    limits = JointLimits(np.full(7, -2.0), np.full(7, 2.0))
    ref_agent, ref, ref_info = run(PLANNERS[name], model, task, 'reference', states(),
                                   joint_limits=limits)
    agent, fused, info = run(PLANNERS[name], model, task, 'fused', states(),
                             joint_limits=limits)
    assert isinstance(ref_agent, MPCAgent) and isinstance(agent, FusedMPCAgent)
    np.testing.assert_allclose(fused, ref, atol=1e-5)
    for a, b in zip(info, ref_info):
        assert a['predicted_return'] == pytest.approx(b['predicted_return'], rel=1e-4, abs=1e-5)
        assert a['mean_states'].shape == b['mean_states'].shape == (6, 17)
        np.testing.assert_allclose(a['mean_states'][0], b['mean_states'][0])
        assert np.all(a['std_states'][0] == 0) and a['disagreement'] > 0
    # The plans respect the box and the acceleration bound from the last executed action.
    assert np.all(np.abs(fused) <= 1 + 1e-6)
    assert np.all(np.abs(np.diff(fused, axis=1)) <= 0.4 + 1e-5)


@pytest.mark.parametrize('name', ['cem_mean', 'pets_ts_inf', 'random_shooting'])
def test_fused_plans_what_the_reference_plans_in_any_box(name):
    """Asymmetric per-dimension action bounds (the stds scale with half the range)."""
    model, task = small_model(), push_task()
    box = dict(action_lb=np.linspace(-0.5, -2.0, 7), action_ub=np.linspace(0.2, 3.0, 7))
    _, ref, _ = run(PLANNERS[name], model, task, 'reference', states(), **box)
    _, fused, _ = run(PLANNERS[name], model, task, 'fused', states(), **box)
    np.testing.assert_allclose(fused, ref, atol=1e-5)
    assert np.all(fused >= box['action_lb'] - 1e-6) and np.all(fused <= box['action_ub'] + 1e-6)


@pytest.mark.parametrize('split_bias', [False, True])
def test_folded_step_is_the_models_step(split_bias):
    """Either way of adding the bias (``baddbmm``; ``bmm`` then ``+``: ``split_bias``)."""
    model = small_model(features=('tool_tip',))
    folded = FoldedEnsemble(model, split_bias=split_bias)
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(4, 6, 17, generator=g) * 0.3
    act = torch.rand(4, 6, 7, generator=g) * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(folded.step(folded.tensors, obs, act, None),
                                   model.sample_next(obs, act, deterministic=True), atol=1e-5)
        noise = torch.randn(4, 6, 17, generator=torch.Generator().manual_seed(9))
        sampled = model.sample_next(obs, act, generator=torch.Generator().manual_seed(9))
        np.testing.assert_allclose(folded.step(folded.tensors, obs, act, noise), sampled,
                                   atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('bounds', [(0.5, -10.0), (3.0, -25.0), (60.0, -60.0)])
def test_bounded_std_is_the_models_soft_clamp(bounds, dtype):
    """``bounded_std`` (closed form) against exp(0.5 * the model's soft-clamped log-variance),
    computed in float64, for raw log-variances from far below the lower bound to far above the
    upper one (exp(-u) overflows at the low end), given in fp32 or in bf16 (a bf16 layer's
    output: the exp runs in fp32 all the same)."""
    from mbrl_robot.core.planning.fused import bounded_std
    model = small_model()
    with torch.no_grad():
        model.max_logvar.fill_(bounds[0])
        model.min_logvar.fill_(bounds[1])
    u = torch.linspace(-120.0, 120.0, 4801).unsqueeze(1).expand(-1, model.obs_dim).to(dtype)
    folded = FoldedEnsemble(model)
    j = 2 * folded.num_hidden
    std = bounded_std(u, folded.tensors[j + 4], folded.tensors[j + 5])
    assert std.dtype == torch.float32 and torch.isfinite(std).all()
    model64 = small_model().double()
    with torch.no_grad():
        model64.max_logvar.fill_(bounds[0])
        model64.min_logvar.fill_(bounds[1])
        expected = torch.exp(0.5 * model64._soft_clamp(u.double()))
    np.testing.assert_allclose(std.double(), expected, rtol=2e-6)


@pytest.mark.parametrize('bounds', [(0.5, -10.0), (3.0, -25.0)])
def test_folded_variance_is_the_models_bounded_variance_at_any_log_variance(bounds):
    """The folded step's standard deviation, in closed form (sqrt(e^min + 1/(e^-max + e^-u))),
    is the model's (exp of its softplus-bounded log-variance) for raw log-variances u from far
    below the lower bound to far above the upper one."""
    model = small_model(features=('tool_tip',))
    s = model.obs_dim
    with torch.no_grad():
        last = model.layers[-1]
        last.weight[..., s:] = 0.0  # each log-variance column: its bias alone
        last.bias[..., s:] = torch.linspace(-80.0, 80.0, s)
        model.max_logvar.fill_(bounds[0])
        model.min_logvar.fill_(bounds[1])
    folded = FoldedEnsemble(model)
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(4, 6, 17, generator=g) * 0.3
    act = torch.rand(4, 6, 7, generator=g) * 2 - 1
    with torch.no_grad():
        mean = model.sample_next(obs, act, deterministic=True)
        noise = torch.randn(4, 6, 17, generator=torch.Generator().manual_seed(9))
        sampled = model.sample_next(obs, act, generator=torch.Generator().manual_seed(9))
        folded_next = folded.step(folded.tensors, obs, act, noise)
    assert torch.isfinite(folded_next).all()
    # The noise's part alone (the means agree to 1e-5 above), relative to its size.
    np.testing.assert_allclose(folded_next - mean, sampled - mean, rtol=1e-4, atol=1e-6)


def test_hot_swap_copies_weights_in_place():
    """A new model of the same layout goes into the same tensors (nothing to recompile or
    re-capture); its plans are a fresh agent's on that model; another layout rebuilds."""
    cfg = PLANNERS['pets_ts_inf']
    task = push_task()
    agent = create_agent(dict(cfg, backend='fused'), small_model(0), task.reward_fn, 7, 'cpu')
    first = agent.plan(states(1)[0])
    tensors = [t.data_ptr() for t in agent.folded.tensors]
    new = small_model(seed=5)
    agent.set_model(new)
    assert [t.data_ptr() for t in agent.folded.tensors] == tensors
    fresh = create_agent(dict(cfg, backend='fused'), new, task.reward_fn, 7, 'cpu')
    fresh.plan(states(1)[0])  # as many draws as the swapped agent
    for a in (agent, fresh):  # the same warm start and last action
        a.reset_warm_start()
        a.set_last_action(np.zeros(7))
    obs = states(2, seed=1)[1]
    np.testing.assert_allclose(agent.plan(obs), fresh.plan(obs), atol=1e-6)
    assert not np.allclose(agent.plan(obs), first)
    # Other elites (the rolled-out members differ in number): rebuilt once, said so.
    agent.set_model(small_model(seed=6, num_elites=2))
    assert agent.folded.ensemble_size == 2 and agent.last_plan_info.get('rebuilt')
    agent.plan(obs)
    assert agent.last_plan_info.get('rebuilt')


def test_set_target_updates_a_running_plan_in_place():
    task = push_task()
    target = task._target
    task.set_target([0.5, -0.1, 0.02])
    assert task._target is target and target.tolist() == pytest.approx([0.5, -0.1, 0.02])
    # ... and never writes into the caller's array.
    mine = np.array([0.4, 0.0, 0.02])
    fresh = PushTask()
    fresh.set_target(mine)
    fresh.set_target([0.7, 0.1, 0.02])
    assert mine.tolist() == [0.4, 0.0, 0.02]


@pytest.mark.parametrize('split', [False, True], ids=['baddbmm', 'split_bias'])
def test_compiled_plan_is_the_fused_plan_and_survives_a_swap(monkeypatch, split):
    """torch.compile of the whole plan (CPU, inductor's C++ wrapper; each layer one
    ``baddbmm``, as a plan this small has it on CPU, or ``bmm`` then the bias in the
    activation's kernel, as larger ones and CUDA's have it): the same plans as the eager fused
    function, no recompilation after a model swap or a new target; a rebuild for another
    layout keeps both settings."""
    from torch._dynamo.utils import counters
    if split:
        monkeypatch.setattr(fused, 'SPLIT_BIAS_MIN_BYTES', 0)
    options = []
    real_compile = torch.compile

    def compile_(fn, **kwargs):
        options.append(kwargs.get('options'))
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, 'compile', compile_)
    cfg = dict(PLANNERS['pets_ts_inf'], horizon=2)
    obs_list = states(2)
    task = push_task()
    _, eager, _ = run(cfg, small_model(), task, 'fused', obs_list)
    assert options == []
    torch._dynamo.reset()
    counters.clear()
    agent, compiled, _ = run(cfg, small_model(), task, 'compiled', obs_list)
    assert options == [{'cpp_wrapper': True}] and agent.folded.split_bias == split
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    graphs = counters['stats']['unique_graphs']
    assert graphs >= 1
    agent.set_model(small_model(seed=5))
    task.set_target([0.5, -0.1, 0.02])
    agent.plan(obs_list[0])
    assert counters['stats']['unique_graphs'] == graphs
    agent.set_model(small_model(seed=6, num_elites=2))  # rebuilt (not planned: no compile)
    assert agent.last_plan_info.get('rebuilt') and agent.folded.split_bias == split
    assert options == [{'cpp_wrapper': True}] * 2


@pytest.mark.parametrize('name, rows', [('pets_ts_inf', 24 * 3 // 4 + 1), ('cem_mean', 24 + 1)])
def test_where_the_bias_goes(name, rows):
    """``split_bias`` (bias after ``bmm``) only for compiled fp32 plans whose hidden layer's
    output (4 members x their rows, the centre row included, x 24 wide; under ``mean`` every
    member steps every candidate) exceeds ``SPLIT_BIAS_MIN_BYTES`` on CPU (all on CUDA); one
    ``baddbmm`` otherwise, in bf16 and in the eager backends (built only: nothing is compiled
    here)."""
    cfg = dict(PLANNERS[name], horizon=2)  # 24 candidates
    out_bytes = 4 * 4 * rows * 24

    def split(backend='compiled', precision='fp32'):
        agent = create_agent(dict(cfg, backend=backend, precision=precision), small_model(),
                             push_task().reward_fn, 7, 'cpu')
        return agent.folded.split_bias

    assert fused.SPLIT_BIAS_MIN_BYTES == 1 << 20 and not split()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, 'SPLIT_BIAS_MIN_BYTES', out_bytes)
        assert not split()
        mp.setattr(fused, 'SPLIT_BIAS_MIN_BYTES', out_bytes - 1)
        assert split() and not split(precision='bf16') and not split(backend='fused')


GRAPHED = ['pets_ts_inf', 'random_shooting', 'cem_mean', 'pets_ts_1_pessimism']


def graph_replays_the_fused_plan(name, device, make_graph_agent, atol, warm):
    """The captured plan against the eager fused one: the same plans (the draws inside the
    graph, or TS-1's on the host), then a model swap into the captured buffers. ``warm``: the
    capture in ``warmup()`` (as the controller does), else in the first plan."""
    cfg = PLANNERS[name]
    task = push_task(device)
    model = small_model(device=device)
    eager = create_agent(dict(cfg, backend='fused'), model, task.reward_fn, 7, device)
    graph = make_graph_agent(cfg, model, task)
    assert graph._graph_draws == (cfg.get('propagation') != 'ts_1')
    if warm:
        graph.warmup()  # captures, plans once, leaves no trace
    for obs in states(3):
        plan = eager.plan(obs)
        np.testing.assert_allclose(graph.plan(obs), plan, atol=atol)
        for agent in (graph, eager):
            agent.set_last_action(plan[0])
    captured = graph._graph
    new = small_model(seed=5, device=device)
    graph.set_model(new)
    eager.set_model(new)
    graph.restart()  # generators back at their seeds: the graph reads them at each replay
    eager.restart()
    for obs in states(2, seed=2):
        np.testing.assert_allclose(graph.plan(obs), eager.plan(obs), atol=atol)
    assert graph._graph is captured  # weights copied into the captured buffers
    return graph


class FakeCudaGraphs:
    """torch.cuda's graph API on the CPU, with a CUDA graph's semantics as the planner relies
    on them: a capture leaves no trace (the generators it drew from come back where they were,
    and drawing from one not registered with the graph fails, as on CUDA); a replay runs the
    captured step again into the captured outputs, advancing the registered generators."""

    def __init__(self, monkeypatch, generators):
        self.generators = generators
        self.capturing, self.replaying, self.replays = None, False, 0
        fake = self

        class Graph:
            def __init__(self):
                self.registered, self.step, self.out, self.inputs = [], None, None, None

            def register_generator_state(self, g):
                assert fake.capturing is None, 'registered during the capture'
                self.registered.append(g)

            def replay(self):
                fake.replays += 1
                fake.replaying = True
                with torch.inference_mode():  # as the capture ran
                    out = self.step()
                    # A graph reads and writes the tensors it was captured with: a buffer
                    # replaced instead of written into would be stale.
                    assert self.inputs == fake.pointers(), 'an input buffer was replaced'
                    for mine, new in zip(self.out, out):
                        mine.copy_(new)
                fake.replaying = False

        class Capture:
            def __init__(self, graph):
                self.graph = graph

            def __enter__(self):
                self.before = [g.get_state() for g in fake.generators]
                fake.capturing = self.graph

            def __exit__(self, *exc):
                fake.capturing = None
                for g, state in zip(fake.generators, self.before):
                    if not torch.equal(g.get_state(), state):
                        assert any(g is r for r in self.graph.registered), \
                            'a draw from a generator not registered with the graph'
                    g.set_state(state)

        class Stream:
            def wait_stream(self, other):
                pass

        import contextlib
        monkeypatch.setattr(torch.cuda, 'CUDAGraph', Graph)
        monkeypatch.setattr(torch.cuda, 'graph', Capture)
        monkeypatch.setattr(torch.cuda, 'Stream', lambda device=None: Stream())
        monkeypatch.setattr(torch.cuda, 'current_stream', lambda device=None: Stream())
        monkeypatch.setattr(torch.cuda, 'stream', lambda s: contextlib.nullcontext())

    def wrap(self, agent):
        """Let the capture see the step it records (its outputs are the graph's, its inputs'
        addresses the ones every replay must find)."""
        step = agent._graph_step
        self.pointers = lambda: [t.data_ptr() for t in agent._inputs()
                                 if isinstance(t, torch.Tensor)]

        def recorded():
            out = step()
            if self.capturing is not None:
                self.capturing.step, self.capturing.out = step, out
                self.capturing.inputs = self.pointers()
            return out
        agent._graph_step = recorded


@pytest.mark.parametrize('warm', [True, False])
@pytest.mark.parametrize('name', GRAPHED)
def test_captured_plan_orchestration_on_cpu(name, warm, monkeypatch):
    """The capture and replay logic (warm-up draws undone, the draws inside the graph, no host
    draw per plan, a swap without re-capture), run on the CPU through FakeCudaGraphs: the
    CUDA test below checks the same on a GPU where one exists."""
    def make(cfg, model, task):
        agent = create_agent(dict(cfg, backend='fused'), model, task.reward_fn, 7, 'cpu')
        agent.backend = 'cuda_graph'
        agent._build()
        fake = FakeCudaGraphs(monkeypatch, (agent.optimizer.generator,
                                            agent.evaluator.generator))
        fake.wrap(agent)
        draws = []  # where each draw ran
        draw = agent._draw

        def located_draw():
            draws.append('replay' if fake.replaying else
                         'capture' if fake.capturing is not None else 'host')
            draw()
        agent._draw = located_draw
        agent.test_record = (fake, draws)
        return agent

    graph = graph_replays_the_fused_plan(name, 'cpu', make, atol=1e-6, warm=warm)
    fake, draws = graph.test_record
    plans = 5 + warm  # the agent's warm-up plan, then five plans
    assert fake.replays == plans
    if graph._graph_draws:  # the capture's 3 warm-ups (undone) and itself, then only replays
        assert draws == ['host'] * 3 + ['capture'] + ['replay'] * plans
    else:  # TS-1: a host draw before each replay
        assert draws == ['host'] * plans


@pytest.mark.skipif(not CUDA, reason='no CUDA device: the CUDA-graph path needs one')
@pytest.mark.parametrize('warm', [True, False])
@pytest.mark.parametrize('name', GRAPHED)
def test_cuda_graph_replays_the_fused_plan_and_takes_a_swap(name, warm):
    def make(cfg, model, task):
        return create_agent(dict(cfg, backend='cuda_graph'), model, task.reward_fn, 7, 'cuda')
    graph_replays_the_fused_plan(name, 'cuda', make, atol=1e-4, warm=warm)


def test_bf16_plan_is_close_and_bounded():
    """bf16 autocast of the members' matmuls: the model step stays within bf16's precision of
    fp32; the plan is finite and feasible (its distance to fp32 is measured by
    benchmarks/plan_latency.py --precision-check on recorded states)."""
    model = small_model()
    folded = FoldedEnsemble(model)
    g = torch.Generator().manual_seed(3)
    obs, act = torch.randn(4, 6, 17, generator=g) * 0.3, torch.rand(4, 6, 7, generator=g)
    with torch.no_grad():
        exact = folded.step(folded.tensors, obs, act, None)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = folded.step(folded.tensors, obs, act, None)
    assert low.dtype == torch.float32
    delta = exact - obs
    assert float((low - exact).abs().max()) <= 0.05 * float(delta.abs().max()) + 1e-4
    _, plans, _ = run(dict(PLANNERS['cem_mean'], precision='bf16'), model, push_task(),
                      'fused', states(2))
    assert np.isfinite(plans).all() and np.all(np.abs(plans) <= 1 + 1e-6)


def test_bf16_weights_are_cast_once_to_the_same_values():
    """precision bf16 keeps the layers in bf16 (autocast then casts nothing at each step): the
    same step, bit for bit, as fp32 weights cast by autocast; the bounds stay fp32; a swap
    rounds the new weights the same way."""
    model = small_model()
    low = FoldedEnsemble(model, matmul_dtype=torch.bfloat16)
    full = FoldedEnsemble(model)
    assert [t.dtype for t in low.tensors] == [torch.bfloat16] * 8 + [torch.float32] * 3
    g = torch.Generator().manual_seed(4)
    obs, act = torch.randn(4, 6, 17, generator=g) * 0.3, torch.rand(4, 6, 7, generator=g)
    noise = torch.randn(4, 6, 17, generator=g)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        for nz in (None, noise):
            assert torch.equal(low.step(low.tensors, obs, act, nz),
                               full.step(full.tensors, obs, act, nz))
    new = small_model(seed=5)
    assert low.copy_from(new) and full.copy_from(new)
    assert all(torch.equal(a, b.to(a.dtype)) for a, b in zip(low.tensors, full.tensors))
    agent = create_agent(dict(PLANNERS['pets_ts_inf'], backend='fused', precision='bf16'),
                         model, push_task().reward_fn, 7, 'cpu')
    assert agent.folded.tensors[0].dtype == torch.bfloat16


@pytest.mark.parametrize('change, message', [
    (dict(name='icem', noise_beta=2.0, backend='compiled'), "backend 'reference' only"),
    (dict(backend='cuda_graph'), 'needs a CUDA device'),
    (dict(precision='tf32'), 'tf32 exists on CUDA'),
    (dict(backend='reference', precision='bf16'), 'needs a fused backend'),
    (dict(backend='jit'), 'planner.backend must be one of'),
])
def test_wrong_backend_settings_fail_clearly(change, message):
    if CUDA and 'CUDA' in message:
        pytest.skip('this machine has CUDA')
    cfg = dict(PLANNERS['cem_mean'], **change)
    with pytest.raises(ValueError, match=message):
        create_agent(cfg, small_model(), push_task().reward_fn, 7, 'cpu')
