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
"""Planners on known linear systems (mock ensembles implementing ``DynamicsModel``)."""

from typing import Optional

import numpy as np
import pytest
import torch

from mbrl_robot.core.planning import (cem_update, CEMOptimizer, colored_noise,
                                      create_agent, MPCAgent, OptimizationResult,
                                      project_action_sequences, RandomShootingOptimizer,
                                      resolve_planner_cfg, TrajectoryEvaluator,
                                      TrajectoryOptimizer)
from mbrl_robot.core.safety import JointLimits


class LinearEnsemble:
    """Member k: s' = s + a @ B_k (+ Gaussian noise of std ``noise_std`` when sampling)."""

    def __init__(self, b_mats: torch.Tensor, noise_std: float = 0.0):
        self.b = torch.as_tensor(b_mats, dtype=torch.float32)  # (K, A, S)
        self.ensemble_size = self.b.shape[0]
        self.device = torch.device('cpu')
        self.noise_std = noise_std

    def sample_next(self, obs: torch.Tensor, act: torch.Tensor, deterministic: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        assert obs.dim() == 3 and obs.shape[0] == self.ensemble_size
        assert act.shape[:2] == obs.shape[:2]
        nxt = obs + torch.bmm(act, self.b)
        if not deterministic and self.noise_std > 0:
            nxt = nxt + self.noise_std * torch.randn(nxt.shape, generator=generator)
        return nxt


def identical_ensemble(k: int, dim: int, gain: float = 0.1, noise_std: float = 0.0):
    return LinearEnsemble(gain * torch.eye(dim).repeat(k, 1, 1), noise_std)


def scalar_gains_ensemble(gains):
    """1-D state and action, member k: s' = s + gains[k] * a."""
    return LinearEnsemble(torch.tensor(gains, dtype=torch.float32).view(-1, 1, 1))


def neg_distance(target):
    target = torch.as_tensor(target, dtype=torch.float32)
    return lambda s, a: -(s - target).norm(dim=-1)


def position(s, a):
    return s[..., 0]


def test_cem_beats_random_shooting_at_equal_budget():
    # 4-D integrator, H=10: the return is -sum_t ||s_t - target||; 500 samples for each planner.
    model = identical_ensemble(1, 4, gain=0.2)
    target = torch.tensor([1.0, -1.0, 0.5, 0.8])
    evaluator = TrajectoryEvaluator(model, neg_distance(target), propagation='mean')
    obs = torch.zeros(4)
    x0 = torch.zeros(10, 4)
    cem_values, rs_values = [], []
    for seed in range(5):
        cem = CEMOptimizer(4, population_size=100, elite_count=10, iterations=5, seed=seed)
        rs = RandomShootingOptimizer(4, population_size=500, seed=seed)
        cem_values.append(cem.optimize(lambda x: evaluator.evaluate(obs, x), x0).best_value)
        rs_values.append(rs.optimize(lambda x: evaluator.evaluate(obs, x), x0).best_value)
    assert all(c > r for c, r in zip(cem_values, rs_values)), (cem_values, rs_values)
    # Not a close call: CEM ends near -6, random shooting near -11 on this problem.
    assert np.mean(cem_values) - np.mean(rs_values) > 3.0


def test_cem_agent_reaches_target_state():
    model = identical_ensemble(5, 2, gain=0.1)
    target = np.array([0.6, -0.4])
    cfg = dict(name='cem', horizon=10, population_size=200, elite_count=20, iterations=4,
               seed=0)
    agent = create_agent(cfg, model, neg_distance(target), action_dim=2)
    s = np.zeros(2)
    for _ in range(15):
        s = s + 0.1 * agent.act(s)
    assert np.linalg.norm(s - target) < 0.02
    # A random policy stays far away.
    rng = np.random.default_rng(0)
    s_rand = np.zeros(2)
    for _ in range(15):
        s_rand = s_rand + 0.1 * rng.uniform(-1, 1, 2)
    assert np.linalg.norm(s_rand - target) > 0.2


@pytest.mark.parametrize('propagation', ['ts_inf', 'ts_1'])
def test_particle_return_shapes(propagation):
    model = scalar_gains_ensemble([0.5, 1.0, 1.5])
    ev = TrajectoryEvaluator(model, position, particles=4, propagation=propagation)
    ret = ev.rollout_returns(torch.zeros(1), torch.ones(7, 5, 1))
    assert ret.shape == (7, 4)
    assert ev.evaluate(torch.zeros(1), torch.ones(7, 5, 1)).shape == (7,)


def test_ts_inf_keeps_members_and_ts_1_mixes_them():
    gains = [0.5, 1.0, 1.5]
    model = scalar_gains_ensemble(gains)
    h = 6
    actions = torch.ones(2, h, 1)
    # Particle r = n * P + p stays on member r % K: return = sum_t t * g.
    ts_inf = TrajectoryEvaluator(model, position, particles=3, propagation='ts_inf')
    ret = ts_inf.rollout_returns(torch.zeros(1), actions)
    tri = h * (h + 1) / 2
    expected = torch.tensor([[g * tri for g in gains]] * 2)
    assert torch.allclose(ret, expected)
    # TS-1 re-draws the member each step: returns leave the set of single-member returns.
    ts_1 = TrajectoryEvaluator(model, position, particles=30, propagation='ts_1')
    ret1 = ts_1.rollout_returns(torch.zeros(1), actions)
    single = torch.tensor([g * tri for g in gains])
    mixed = (ret1.unsqueeze(-1) - single).abs().min(dim=-1).values > 1e-4
    assert mixed.float().mean() > 0.5
    # Every step's member gain lies in [0.5, 1.5], so returns stay in the single-member range.
    assert (ret1 >= single.min() - 1e-4).all() and (ret1 <= single.max() + 1e-4).all()
    # Mean propagation averages the members: gain 1.0.
    mean = TrajectoryEvaluator(model, position, propagation='mean')
    assert torch.allclose(mean.rollout_returns(torch.zeros(1), actions),
                          torch.full((2, 1), tri))


def test_pessimism_lowers_high_variance_candidates_only():
    model = scalar_gains_ensemble([0.0, 1.0, 2.0])
    actions = torch.stack([torch.zeros(4, 1), torch.ones(4, 1)])  # still vs. moving
    plain = TrajectoryEvaluator(model, position, particles=3, pessimism=0.0)
    pess = TrajectoryEvaluator(model, position, particles=3, pessimism=1.0)
    ret = plain.rollout_returns(torch.zeros(1), actions)
    s_plain = plain.evaluate(torch.zeros(1), actions)
    s_pess = pess.evaluate(torch.zeros(1), actions)
    assert s_pess[0] == pytest.approx(float(s_plain[0]))  # no spread, no change
    std = float(ret[1].std(unbiased=False))
    assert std > 1.0
    assert s_pess[1] == pytest.approx(float(s_plain[1]) - std, rel=1e-5)
    # The moving candidate wins without pessimism and loses with enough of it.
    heavy = TrajectoryEvaluator(model, position, particles=3, pessimism=2.0)
    s_heavy = heavy.evaluate(torch.zeros(1), actions)
    assert s_plain[1] > s_plain[0] and s_heavy[1] < s_heavy[0]


def test_terminal_weight_scales_last_reward():
    model = scalar_gains_ensemble([1.0])
    actions = torch.ones(1, 3, 1)
    plain = TrajectoryEvaluator(model, position, propagation='mean')
    weighted = TrajectoryEvaluator(model, position, propagation='mean', terminal_weight=5.0)
    assert float(plain.evaluate(torch.zeros(1), actions)) == pytest.approx(1 + 2 + 3)
    assert float(weighted.evaluate(torch.zeros(1), actions)) == pytest.approx(1 + 2 + 5 * 3)


def test_joint_limit_penalty_and_rollout_plan():
    model = scalar_gains_ensemble([0.1, 0.2])
    limits = JointLimits(lower=[-0.35], upper=[0.35])
    ev = TrajectoryEvaluator(model, position, propagation='mean', joint_limits=limits,
                             joint_pos_start=0)
    inside = torch.full((1, 3, 1), 1.0)  # ends at 0.45 under mean gain 0.15 -> crosses
    slow = torch.full((1, 3, 1), 0.5)  # ends at 0.225: inside
    scores = ev.evaluate(torch.zeros(1), torch.cat([inside, slow]))
    assert scores[0] < -999.0 and scores[1] > 0.0
    mean_states, std_states = ev.rollout_plan(torch.zeros(1), torch.ones(3, 1))
    assert mean_states.shape == (4, 1) and std_states.shape == (4, 1)
    assert torch.allclose(mean_states[:, 0], torch.tensor([0.0, 0.15, 0.3, 0.45]))
    assert torch.allclose(std_states[:, 0], torch.tensor([0.0, 0.05, 0.1, 0.15]))


def test_planner_takes_the_arms_joint_limits_and_the_state_column_of_q():
    """One JointLimits (the command filter's, velocity included); the planner is told where the
    joint positions start in the state."""
    model = LinearEnsemble(torch.tensor([[[0.0, 0.15]]]))  # 2-D state: only column 1 moves
    limits = JointLimits(lower=[-0.35], upper=[0.35], velocity=[1.0])
    fast = torch.full((1, 3, 1), 1.0)  # column 1 ends at 0.45: outside
    on_q = TrajectoryEvaluator(model, position, propagation='mean', joint_limits=limits,
                               joint_pos_start=1)
    off_q = TrajectoryEvaluator(model, position, propagation='mean', joint_limits=limits,
                                joint_pos_start=0)
    assert float(on_q.evaluate(torch.zeros(2), fast)) < -999.0
    assert float(off_q.evaluate(torch.zeros(2), fast)) == 0.0
    with pytest.raises(ValueError, match='state dim'):
        TrajectoryEvaluator(model, position, joint_limits=limits,
                            joint_pos_start=2).evaluate(torch.zeros(2), fast)
    assert np.all(JointLimits(lower=[-1.0], upper=[1.0]).velocity == np.inf)
    for bad in (dict(lower=[1.0], upper=[-1.0]), dict(lower=[], upper=[]),
                dict(lower=[0.0, 0.0], upper=[1.0])):
        with pytest.raises(ValueError):
            JointLimits(**bad)


class SpyOptimizer(CEMOptimizer):
    """CEM that records each warm start and result."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x0s, self.results = [], []

    def optimize(self, obj_fun, x0, project=None) -> OptimizationResult:
        self.x0s.append(x0.clone())
        result = super().optimize(obj_fun, x0, project)
        self.results.append(result)
        return result


def test_warm_start_shifts_previous_mean_and_reset_clears_it():
    model = identical_ensemble(1, 2)
    opt = SpyOptimizer(2, population_size=50, elite_count=5, iterations=2, seed=0)
    agent = MPCAgent(model, neg_distance([0.5, 0.5]), opt, horizon=6, action_dim=2,
                     propagation='mean')
    agent.act(np.zeros(2))
    agent.act(np.zeros(2))
    assert torch.count_nonzero(opt.x0s[0]) == 0
    assert torch.equal(opt.x0s[1][:-1], opt.results[0].mean[1:])
    assert torch.count_nonzero(opt.x0s[1][-1]) == 0
    assert torch.count_nonzero(opt.x0s[1][:-1]) > 0
    agent.reset()
    agent.act(np.zeros(2))
    assert torch.count_nonzero(opt.x0s[2]) == 0


@pytest.mark.parametrize('name,extra', [
    ('random_shooting', {}),
    ('cem', {}),
    ('cem', {'bound_mode': 'truncnorm', 'return_mean': True}),
    ('icem', {}),
    ('pets', {'particles': 3, 'propagation': 'ts_1'}),
])
def test_action_and_acceleration_bounds_never_violated(name, extra):
    rng = np.random.default_rng(1)
    a_dim = 3
    model = identical_ensemble(3, a_dim, gain=0.5, noise_std=0.01)
    for case in range(12):
        target = rng.uniform(-20.0, 20.0, a_dim)  # far away: pushes against every bound
        max_delta = float(rng.uniform(0.02, 0.6))
        cfg = dict(name=name, horizon=int(rng.integers(1, 8)), population_size=40,
                   elite_count=8, iterations=2, initial_std=float(rng.uniform(0.2, 3.0)),
                   seed=case, **extra)
        agent = create_agent(cfg, model, neg_distance(target), a_dim, max_delta=max_delta)
        prev = rng.uniform(-1, 1, a_dim).astype(np.float32)
        agent.set_last_action(prev)
        s = rng.normal(size=a_dim)
        for _ in range(3):
            plan = agent.plan(s)
            assert plan.shape == (cfg['horizon'], a_dim)
            assert np.all(np.abs(plan) <= 1.0 + 1e-6)
            seq = np.concatenate([prev[None], plan])
            assert np.all(np.abs(np.diff(seq, axis=0)) <= max_delta + 1e-5)
            a = agent.act(s)
            assert np.all(np.abs(a - prev) <= max_delta + 1e-5)
            prev = a
            s = s + 0.5 * a


def test_project_action_sequences_is_feasible_and_idempotent():
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(200, 9, 4, generator=g)
    prev = torch.rand(4, generator=g) * 2 - 1
    y = project_action_sequences(x, prev, 0.1)
    assert y.abs().max() <= 1.0
    d = torch.diff(torch.cat([prev.expand(200, 1, 4), y], 1), dim=1)
    assert d.abs().max() <= 0.1 + 1e-6
    assert torch.equal(project_action_sequences(y, prev, 0.1), y)
    inside = 0.05 * torch.ones(1, 3, 4)
    assert torch.equal(project_action_sequences(inside, torch.zeros(4), 0.1), inside)


@pytest.mark.parametrize('bad', [
    {'name': 'mppi'},
    {'name': 'cem', 'horizon': 0},
    {'name': 'cem', 'elite_count': 600},
    {'name': 'cem', 'elite_count': 0},
    {'name': 'cem', 'iterations': 0},
    {'name': 'cem', 'alpha': 1.0},
    {'name': 'cem', 'min_std': -0.1},
    {'name': 'cem', 'initial_std': 0.0},
    {'name': 'cem', 'propagation': 'ts_2'},
    {'name': 'cem', 'particles': 5, 'propagation': 'mean'},
    {'name': 'pets', 'particles': 5, 'propagation': 'mean'},
    {'name': 'pets', 'particles': 0},
    {'name': 'pets', 'pessimism': -1.0},
    {'name': 'cem', 'bound_mode': 'reflect'},
    {'name': 'cem', 'max_delta': 0.0},
    {'name': 'cem', 'horizons': 10},
])
def test_bad_config_raises_value_error(bad):
    with pytest.raises(ValueError):
        create_agent(bad, identical_ensemble(1, 2), position, 2)


def test_bad_types_and_inputs():
    with pytest.raises(TypeError):
        resolve_planner_cfg({'name': 'cem', 'horizon': 2.5})
    with pytest.raises(TypeError):
        create_agent({'name': 'cem'}, object(), position, 2)
    agent = create_agent({'name': 'cem', 'horizon': 3, 'population_size': 10, 'elite_count': 2},
                         identical_ensemble(1, 2), position, 2)
    with pytest.raises(ValueError):
        agent.plan(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError):
        agent.plan(np.zeros((1, 2)))


def test_lecture_yaml_planner_block_builds():
    from mbrl_robot.config import node_params
    cfg = node_params('lecture', 'controller')['planner']
    resolved = resolve_planner_cfg(cfg)
    assert resolved['horizon'] == 25 and resolved['population_size'] == 500


@pytest.mark.parametrize('name', ['random_shooting', 'cem', 'icem', 'pets'])
def test_same_seed_same_plan(name):
    def make(seed):
        model = identical_ensemble(5, 2, noise_std=0.05)
        extra = {'particles': 5, 'propagation': 'ts_inf'} if name == 'pets' else {}
        cfg = dict(name=name, horizon=5, population_size=30, elite_count=5, iterations=3,
                   seed=seed, **extra)
        return create_agent(cfg, model, neg_distance([1.0, 0.0]), 2)

    plans = []
    for seed in (3, 3, 4):
        agent = make(seed)
        agent.plan(np.zeros(2))
        plans.append(agent.plan(np.array([0.1, 0.0])))
    np.testing.assert_array_equal(plans[0], plans[1])
    assert not np.array_equal(plans[0], plans[2])


def test_set_model_hot_swap_changes_plan_and_info():
    agent = create_agent({'name': 'cem', 'horizon': 4, 'population_size': 50, 'elite_count': 5},
                         scalar_gains_ensemble([1.0, 1.0]), neg_distance([0.5]), 1)
    a_fwd = agent.act(np.zeros(1))
    assert agent.last_plan_info['disagreement'] == pytest.approx(0.0, abs=1e-7)
    assert agent.last_plan_info['plan_time_ms'] > 0.0
    assert agent.last_plan_info['mean_states'].shape == (5, 1)
    agent.reset()
    agent.set_model(scalar_gains_ensemble([-1.0, -0.5]))  # flipped actuator
    a_rev = agent.act(np.zeros(1))
    assert a_fwd[0] > 0.2 and a_rev[0] < -0.2
    assert agent.last_plan_info['disagreement'] > 0.0


def test_colored_noise_is_smooth_and_unit_variance():
    g = torch.Generator().manual_seed(0)
    white = colored_noise(0.0, (4000,), 32, g)
    red = colored_noise(2.0, (4000,), 32, g)
    assert red.shape == (4000, 32)
    assert 0.7 < float(red.std()) < 1.3 and 0.9 < float(white.std()) < 1.1
    step_white = float(torch.diff(white, dim=1).abs().mean())
    step_red = float(torch.diff(red, dim=1).abs().mean())
    assert step_red < 0.5 * step_white


def test_truncnorm_samples_stay_in_bounds_and_follow_the_mean():
    opt = CEMOptimizer(2, population_size=4000, elite_count=10, iterations=1,
                       bound_mode='truncnorm', seed=0)
    mean = torch.tensor([[0.9, -0.2]])
    x = opt._sample(4000, mean, torch.full((1, 2), 0.3))
    assert x.abs().max() <= 1.0
    assert float(x[:, 0, 1].mean()) == pytest.approx(-0.2, abs=0.03)
    assert 0.6 < float(x[:, 0, 0].mean()) < 0.9  # pulled inside by the upper bound


def test_cem_std_is_in_units_of_half_the_action_range():
    # Issue 14: the std was absolute, so on InvertedPendulum's [-3, 3] box CEM explored a sixth
    # of the range (mbrl-lib: a quarter of the range, i.e. 0.5 of the half range).
    lower, upper = torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 0.5])
    opt = CEMOptimizer(2, population_size=4000, elite_count=4000, iterations=2, alpha=0.0,
                       initial_std=0.1, min_std=0.2, lower=lower, upper=upper, seed=0)
    seen = []

    def objective(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0])

    opt.optimize(objective, torch.tensor([[0.0, 0.25]]))
    np.testing.assert_allclose(seen[0].std(dim=0)[0].numpy(), [0.3, 0.025], rtol=0.1)
    # Every sample is an elite, so the refit std (about 0.3, 0.025) is raised to the floor
    # min_std * half range = (0.6, 0.05) for the second round.
    np.testing.assert_allclose(seen[1].std(dim=0)[0].numpy(), [0.6, 0.05], rtol=0.1)
    # The default box keeps the old numbers: std 0.5 (clipped at +-1, two stds).
    unit = CEMOptimizer(1, population_size=4000, elite_count=10, iterations=1, seed=0)
    seen.clear()
    unit.optimize(objective, torch.zeros(1, 1))
    assert 0.4 < float(seen[0].std()) < 0.5
    _, floored = cem_update(torch.zeros(3, 2), torch.zeros(2), torch.ones(2), 0.0,
                            torch.tensor([0.1, 0.4]))
    assert floored.tolist() == pytest.approx([0.1, 0.4])


def test_trajectory_optimizer_owns_the_shift():
    opt = SpyOptimizer(2, population_size=20, elite_count=4, iterations=2, seed=0)
    traj = TrajectoryOptimizer(opt, horizon=4)
    first = traj.optimize(lambda x: -(x - 0.3).pow(2).sum(dim=(1, 2)))
    assert torch.equal(traj.previous_solution[:3], first.mean[1:])
    assert torch.count_nonzero(traj.previous_solution[3]) == 0
    traj.optimize(lambda x: -(x - 0.3).pow(2).sum(dim=(1, 2)))
    assert torch.equal(opt.x0s[1], torch.cat([first.mean[1:], torch.zeros(1, 2)]))
    traj.reset()
    assert torch.count_nonzero(traj.previous_solution) == 0
    with pytest.raises(ValueError):
        TrajectoryOptimizer(opt, horizon=0)


# ---------------------------------------------------------------------- issue 14
def poisoned_ensemble(elites):
    """A 5-member GaussianEnsemble whose non-elite members predict NaN; elites ``elites``."""
    from mbrl_robot.core.models import create_model
    model = create_model({'name': 'gaussian_ensemble', 'ensemble_size': 5, 'num_layers': 1,
                          'hidden_size': 16}, 2, 2, seed=0)
    with torch.no_grad():
        for k in set(range(5)) - set(elites):
            model.layers[-1].bias[k] = float('nan')
    model.set_elites(elites)
    return model.eval()


@pytest.mark.parametrize('name,extra', [
    ('cem', {}),
    ('cem', {'propagation': 'ts_inf', 'particles': 4}),
    ('pets', {'propagation': 'ts_1', 'particles': 4}),
    ('pets', {'propagation': 'ts_inf', 'particles': 3, 'pessimism': 0.5}),
])
def test_planner_rollouts_use_only_the_elites(name, extra):
    model = poisoned_ensemble([0, 2])
    cfg = dict(name=name, horizon=4, population_size=30, elite_count=5, iterations=2, seed=1,
               **extra)
    agent = create_agent(cfg, model, neg_distance([1.0, -0.5]), 2)
    plan = agent.plan(np.zeros(2))
    assert np.isfinite(plan).all() and np.isfinite(agent.last_plan_info['predicted_return'])
    assert np.isfinite(agent.last_plan_info['std_states']).all()
    # Exactly the plan of an ensemble made of the elites alone.
    elites_only = create_agent(cfg, model.select_members([0, 2]), neg_distance([1.0, -0.5]), 2)
    np.testing.assert_array_equal(plan, elites_only.plan(np.zeros(2)))
    # A hot-swapped model brings its own elites.
    agent.set_model(poisoned_ensemble([1, 3, 4]))
    assert np.isfinite(agent.plan(np.zeros(2))).all()


def test_rewards_stop_after_a_predicted_termination():
    model = identical_ensemble(2, 1, gain=0.1)

    def one(s, a):
        return torch.ones(s.shape[:-1])

    def beyond(s, a):
        return s[..., 0] >= 0.45

    actions = torch.ones(3, 10, 1)
    actions[1] = 0.0  # never terminates
    actions[2, :2] = 0.0  # terminates two steps later
    for propagation, particles in (('mean', 1), ('ts_inf', 2), ('ts_1', 3)):
        plain = TrajectoryEvaluator(model, one, particles=particles, propagation=propagation)
        ended = TrajectoryEvaluator(model, one, particles=particles, propagation=propagation,
                                    termination_fn=beyond)
        assert plain.evaluate(torch.zeros(1), actions).tolist() == [10.0, 10.0, 10.0]
        # s_t = 0.1 t: step 5 reaches 0.5 and ends the rollout; its own reward counts.
        assert ended.evaluate(torch.zeros(1), actions).tolist() == [5.0, 10.0, 7.0]
    # Joint-limit penalties after the termination do not count either.
    limits = JointLimits(np.array([-1.0]), np.array([0.55]))
    ended = TrajectoryEvaluator(model, one, propagation='mean', termination_fn=beyond,
                                joint_limits=limits, joint_pos_start=0)
    assert ended.evaluate(torch.zeros(1), actions[:1]).tolist() == [5.0]
    agent = create_agent({'name': 'cem', 'horizon': 3, 'population_size': 10,
                          'elite_count': 2}, model, one, 1, termination_fn=beyond)
    assert agent.evaluator.termination_fn is beyond
    with pytest.raises(ValueError, match='termination_fn returned shape'):
        TrajectoryEvaluator(model, one, termination_fn=lambda s, a: s).evaluate(
            torch.zeros(1), actions)


@pytest.mark.parametrize('name,extra', [
    ('random_shooting', {}),
    ('cem', {}),
    ('cem', {'bound_mode': 'truncnorm', 'return_mean': True}),
    ('icem', {}),
    ('pets', {'particles': 2, 'propagation': 'ts_inf'}),
])
def test_asymmetric_action_bounds(name, extra):
    lb, ub = np.array([0.2, -3.0]), np.array([0.6, -1.5])
    model = identical_ensemble(2, 2, gain=0.5)
    cfg = dict(name=name, horizon=5, population_size=60, elite_count=6, iterations=3, seed=0,
               **extra)
    for target, corner in (([-50.0, -50.0], lb), ([50.0, 50.0], ub)):
        agent = create_agent(cfg, model, neg_distance(target), 2, action_lb=lb, action_ub=ub,
                             max_delta=0.3)
        s = np.zeros(2)
        for _ in range(8):  # a_{-1} = 0 clipped into the box, then steps of at most 0.3
            plan = agent.plan(s)
            assert np.all(plan >= lb - 1e-6) and np.all(plan <= ub + 1e-6), plan
            a = agent.act(s)
            s = s + 0.5 * a
        if name != 'random_shooting':
            np.testing.assert_allclose(a, corner, atol=0.15)
    with pytest.raises(ValueError, match='action_lb must be below action_ub'):
        create_agent(cfg, model, position, 2, action_lb=[0.0, 0.0], action_ub=[1.0, 0.0])
    with pytest.raises(ValueError, match=r'action_ub must be a finite scalar or have shape'):
        create_agent(cfg, model, position, 2, action_ub=[1.0, 1.0, 1.0])


def test_propagation_is_explicit():
    assert resolve_planner_cfg({'name': 'cem'})['propagation'] == 'mean'
    assert resolve_planner_cfg({'name': 'cem', 'propagation': 'ts_1'})['propagation'] == 'ts_1'
    with pytest.raises(ValueError, match='set planner.propagation to ts_inf or ts_1'):
        resolve_planner_cfg({'name': 'pets', 'particles': 5})
    with pytest.raises(ValueError, match="propagation must be one of .* got 'auto'"):
        resolve_planner_cfg({'name': 'cem', 'propagation': 'auto'})
