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
"""The recipe learns to push on the twin, and the known-kinematics model inputs behave.

``test_recipe_and_its_distilled_policy_beat_random_policy`` runs a reduced recipe of the
``cpu`` profile in-process (:func:`mbrl_robot.inprocess.run_profile`, the core's ``run_recipe``
on a profile: 25 random episodes, 2 x 5 MPC episodes, 10 held-out evaluation episodes with the
planner, the policy distilled from it, a random and a zero policy on the same seeds) with fixed
seeds, and requires the planner and the distilled policy to be clearly better than the random
policy. ``benchmarks/push_learning.py`` runs the full recipe over several seeds.
"""

import tempfile

import numpy as np
import pytest
import torch

from mbrl_robot.config import node_params
from mbrl_robot.inprocess import run_profile
from mbrl_robot.core.models import create_model
from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.tasks.push import (PUCK_HEIGHT_M, PUCK_RADIUS_M, TOOL_RADIUS_M, PushTask,
                                        tool_intrusion, tool_path)
from mbrl_robot.sim.push_env import PushEnv

MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 3, 'num_layers': 2, 'hidden_size': 32}


def _push_states(n: int, seed: int = 0) -> np.ndarray:
    """Real (n, 17) states of the twin under random actions, and the tool tips (n, 3)."""
    env = PushEnv.from_config('cpu')
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    states, tips = [], []
    for _ in range(n):
        obs, _, _, _, info = env.step(rng.uniform(-1.0, 1.0, 7))
        states.append(obs)
        tips.append(info['tool_tip'])
    env.close()
    return np.stack(states), np.stack(tips)


def test_input_features_are_the_twin_tool_tip():
    torch.manual_seed(0)
    states, tips = _push_states(20)
    model = create_model({**MODEL, 'input_features': ['tool_tip', 'tip_to_puck']}, 17, 7)
    feats = model.features(torch.as_tensor(states, dtype=torch.float32)).numpy()
    assert feats.shape == (20, 6)
    np.testing.assert_allclose(feats[:, :3], tips, atol=1e-4)
    np.testing.assert_allclose(feats[:, 3:], states[:, 14:17] - tips, atol=1e-4)
    assert model.input_normalizer.size == 17 + 7 + 6


def test_input_features_survive_save_load_and_match_predict():
    states, _ = _push_states(8)
    obs = torch.as_tensor(states, dtype=torch.float32)
    act = torch.zeros(8, 7)
    model = create_model({**MODEL, 'input_features': 'tool_tip, tip_to_puck'}, 17, 7, seed=1)
    model.fit_normalizers(obs, act, obs + 0.01)
    with tempfile.TemporaryDirectory() as d:
        model.save(d)
        loaded = GaussianEnsemble.load(d, obs_dim=17, act_dim=7)
    assert loaded.input_features == ['tool_tip', 'tip_to_puck']
    mean, _ = model.predict(obs, act)
    k_obs = obs.expand(3, -1, -1).contiguous()
    k_act = act.expand(3, -1, -1).contiguous()
    np.testing.assert_allclose(loaded.sample_next(k_obs, k_act, deterministic=True).numpy(),
                               mean.detach().numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize('features', [['elbow'], ['tool_tip', 'tool_tip'], 3])
def test_bad_input_features_rejected(features):
    with pytest.raises(ValueError, match='input_features'):
        create_model({**MODEL, 'input_features': features}, 17, 7)


def test_input_features_need_the_push_state():
    with pytest.raises(ValueError, match='obs_dim'):
        create_model({**MODEL, 'input_features': ['tool_tip']}, 4, 2)


def test_tool_shaping_fades_out_on_the_target():
    target = [0.6, 0.0, 0.016]
    obs = torch.zeros(3, 17)
    obs[:, 14:17] = torch.tensor([[0.6, 0.0, 0.016], [0.62, 0.0, 0.016], [0.7, 0.0, 0.016]])
    plain = PushTask(tool_shaping_weight=1.0, target=target).reward_fn(obs, torch.zeros(3, 7))
    faded = PushTask(tool_shaping_weight=1.0, tool_shaping_fade=0.05,
                     target=target).reward_fn(obs, torch.zeros(3, 7))
    dist = torch.tensor([0.0, 0.02, 0.1])
    tool = -plain - dist
    assert bool((tool > 0.1).all())  # q = 0 puts the tip far from every push point
    expected = -dist - tool * torch.tensor([0.0, 0.4, 1.0])
    np.testing.assert_allclose(faded.numpy(), expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match='fade'):
        PushTask(tool_shaping_weight=1.0, tool_shaping_fade=-0.01)


def test_tool_intrusion_costs_a_tool_on_the_puck_and_nothing_beside_it():
    """The intrusion term: zero for a rod touching the puck's side at push height or above the
    puck with clearance, the depth for a tool end over the puck and below its top."""
    puck = torch.tensor([0.6, 0.0, PUCK_HEIGHT_M / 2], dtype=torch.float64)
    top = PUCK_HEIGHT_M + TOOL_RADIUS_M  # tool end at the clearance above the puck's top

    def depth(x, z):
        return tool_intrusion(torch.tensor([0.6 + x, 0.0, z], dtype=torch.float64), puck,
                              PUCK_RADIUS_M).item()

    side = PUCK_RADIUS_M + TOOL_RADIUS_M
    assert depth(side, 0.01) == 0.0 and depth(side - 0.005, 0.01) == 0.0  # pushing, pressed in
    assert depth(0.0, top + 0.001) == 0.0  # over the puck, clear of it
    assert depth(0.0, top - 0.02) == pytest.approx(0.02)  # on top, 1 cm into the puck
    assert depth(PUCK_RADIUS_M - 0.005, 0.0) == pytest.approx(0.005)  # at the rim, inside
    # In the reward: -k * depth, nothing else changes.
    obs = torch.zeros(1, 17, dtype=torch.float64)
    obs[0, 14:17] = puck
    task = PushTask(target=[0.7, 0.0, 0.016], dtype=torch.float64)
    tip = task.tool_tip(obs)[0]
    obs[0, 14:17] = torch.stack([tip[0], tip[1], tip[2] - 0.005])  # tip 2 cm under the top
    weighed = PushTask(target=[0.7, 0.0, 0.016], tool_intrusion_weight=10.0,
                       dtype=torch.float64)
    act = torch.zeros(1, 7, dtype=torch.float64)
    gap = (task.reward_fn(obs, act) - weighed.reward_fn(obs, act)).item()
    assert gap == pytest.approx(10.0 * (PUCK_HEIGHT_M / 2 + TOOL_RADIUS_M - 0.005))
    # The reward's space is 2 cm wide (the recorded puck lags a pushing tool): a tool end 2.5
    # cm from the recorded centre costs nothing there, 1 cm costs the 1 cm inside its rim.
    for offset, expected in ((0.025, 0.0), (0.01, 0.01)):
        moved = obs.clone()
        moved[0, 14] = tip[0] + offset
        gap = (task.reward_fn(moved, act) - weighed.reward_fn(moved, act)).item()
        assert gap == pytest.approx(10.0 * expected, abs=1e-9)
    with pytest.raises(ValueError, match='tool_intrusion_weight'):
        PushTask(tool_intrusion_weight=-1.0)
    with pytest.raises(ValueError, match='tool_intrusion_radius'):
        PushTask(tool_intrusion_radius=0.0)


def test_tool_path_goes_around_the_puck():
    """The around_puck way: straight where the line clears the puck, else tangent plus arc; it
    is never shorter than the straight line and continuous where the two meet."""
    r = 0.045
    puck = torch.zeros(3, dtype=torch.float64)
    point = torch.tensor([-r, 0.0, 0.0], dtype=torch.float64)  # push point on the rim

    def both(tip):
        tip = torch.tensor(tip, dtype=torch.float64)
        return (tool_path(tip, point, puck, r, around=True).item(),
                tool_path(tip, point, puck, r, around=False).item())

    # Same side: the straight line clears the puck.
    assert both([-0.1, 0.02, 0.0])[0] == pytest.approx(both([-0.1, 0.02, 0.0])[1])
    # Diametrically opposite on the rim: half the rim, not the diameter through the puck.
    around, straight = both([r, 0.0, 0.0])
    assert straight == pytest.approx(2 * r) and around == pytest.approx(np.pi * r)
    # Far on the other side: the tangent, then the arc from the tangent point to the push point.
    d = 0.2
    around, straight = both([d, 0.0, 0.0])
    tangent = np.sqrt(d ** 2 - r ** 2)
    assert around == pytest.approx(tangent + r * (np.pi - np.arccos(r / d)))
    assert around > straight
    # Height adds in quadrature.
    assert both([-0.1, 0.0, 0.03])[0] == pytest.approx(np.hypot(0.1 - r, 0.03))
    # Continuous at the tangent: points on a circle of radius d around the puck.
    angles = torch.linspace(0.0, np.pi, 2001, dtype=torch.float64)
    tips = torch.stack([-d * torch.cos(angles), d * torch.sin(angles), 0 * angles], -1)
    ways = tool_path(tips, point, puck, r).numpy()
    assert np.abs(np.diff(ways)).max() < 1e-3
    assert (ways >= tool_path(tips, point, puck, r, around=False).numpy() - 1e-12).all()


def _stages(summary, what):
    """The summary's stages and a message of their success rates and distances (printed)."""
    st = summary['stages']
    msg = {k: (v['success_rate'], round(v['mean_final_distance'], 4)) for k, v in st.items()}
    print(f'{what} (success rate, mean final distance m):', msg)
    return st, msg


@pytest.mark.slow
def test_recipe_and_its_distilled_policy_beat_random_policy():
    """The reduced recipe learns (the planner), and so does the policy distilled from it (issue
    18: ``trainer.algorithm: distill``, the distilled policy evaluated on the same held-out
    seeds as the planner and the random policy). The labelling planner is smaller than the
    controller's to keep CI short."""
    # The controller's planner with fewer candidates and a shorter horizon labels (the cpu
    # profile sets it for the controller only). Session 37, 1 thread, same process order: a
    # 10-step labeller took 93 s against 104 s for the 15-step one, and its policy solved 6 of
    # the 10 held-out episodes against 3 (the assertion's bare minimum).
    labeller = {**node_params('cpu', 'controller')['planner'], 'population_size': 40,
                'elite_count': 4, 'horizon': 10, 'seed': 0}
    summary = run_profile('cpu', overrides={
        'recipe': {'random_episodes': 25, 'mpc_episodes_per_iteration': 5, 'iterations': 2,
                   'evaluation_episodes': 10, 'baselines': ['random', 'zero', 'policy'],
                   'seed': 0},
        'controller': {'planner': {'seed': 0}},
        'trainer': {'training': {'seed': 0}, 'algorithm': 'distill', 'planner': labeller,
                    'distill': {'model_rollouts': 10, 'model_rollout_length': 20}}},
        log=lambda msg: None)
    st, msg = _stages(summary, 'reduced recipe')
    planner, random, policy = st['eval_planner'], st['eval_random'], st['eval_policy']
    assert summary['transitions_used'] == 3500
    assert planner['episodes'] == random['episodes'] == policy['episodes'] == 10
    # Every real row labelled once, as it arrived (relabel false).
    assert [t['policy']['steps'] for t in summary['trainings']] == [2500, 500, 500]
    # Random and zero policies never succeed on these seeds (the puck stays 15-18 cm away).
    assert planner['success_rate'] >= random['success_rate'] + 0.4, msg
    assert planner['mean_final_distance'] < 0.5 * random['mean_final_distance'], msg
    assert planner['mean_final_distance'] < st['eval_zero']['mean_final_distance'] - 0.05, msg
    assert policy['success_rate'] >= random['success_rate'] + 0.3, msg
    assert policy['mean_final_distance'] < 0.6 * random['mean_final_distance'], msg
