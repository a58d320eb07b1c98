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
"""CEM and PETS with a learned ensemble on a task whose true model the planner never sees.

Task: a 2-D point mass with velocity, state [x, y, vx, vy], action = acceleration in [-1, 1]^2:
``v' = v + 0.2 a``, ``p' = p + 0.1 v'``. The ensemble is trained by ``create_trainer`` on
uniform-random-action data only; the planner knows the reward -||p' - goal|| but not the
dynamics.
"""

import numpy as np
import pytest
import torch

from mbrl_robot.core.models import create_model, create_trainer
from mbrl_robot.core.planning import create_agent
from mbrl_robot.core.types import TransitionBatch

GOAL = np.array([0.6, -0.4])
STEPS = 30


def true_step(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    v = s[2:] + 0.2 * np.clip(a, -1.0, 1.0)
    return np.concatenate([s[:2] + 0.1 * v, v])


def reward_fn(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    goal = torch.as_tensor(GOAL, dtype=next_obs.dtype, device=next_obs.device)
    return -(next_obs[..., :2] - goal).norm(dim=-1)


def random_data(n_episodes: int, length: int, seed: int) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    obs, act, nxt = [], [], []
    for _ in range(n_episodes):
        s = np.concatenate([rng.uniform(-1, 1, 2), rng.uniform(-0.8, 0.8, 2)])
        for _ in range(length):
            a = rng.uniform(-1, 1, 2)
            s2 = true_step(s, a)
            obs.append(s)
            act.append(a)
            nxt.append(s2)
            s = s2
    obs, act, nxt = (np.asarray(x, dtype=np.float32) for x in (obs, act, nxt))
    n = len(obs)
    return TransitionBatch(obs, act, nxt, np.zeros(n, np.float32), np.zeros(n, bool))


@pytest.fixture(scope='module')
def learned_model():
    torch.manual_seed(0)
    model = create_model({'name': 'gaussian_ensemble', 'ensemble_size': 3, 'num_layers': 2,
                          'hidden_size': 32, 'activation': 'silu', 'probabilistic': True,
                          'weight_decay': 0.00005}, obs_dim=4, act_dim=2, device='cpu', seed=0)
    trainer = create_trainer(model, {'learning_rate': 0.003, 'batch_size': 128,
                                     'validation_fraction': 0.1, 'max_epochs': 20,
                                     'patience': 8, 'bootstrap': True, 'seed': 0})
    trainer.fit(random_data(40, 25, seed=0))
    return model


def final_distance(policy) -> float:
    s = np.zeros(4)
    for _ in range(STEPS):
        s = true_step(s, policy(s))
    return float(np.linalg.norm(s[:2] - GOAL))


def random_policy_distance() -> float:
    rng = np.random.default_rng(1)
    return float(np.mean([final_distance(lambda s: rng.uniform(-1, 1, 2)) for _ in range(20)]))


@pytest.mark.parametrize('cfg', [
    {'name': 'cem', 'propagation': 'mean'},
    {'name': 'pets', 'particles': 3, 'propagation': 'ts_inf', 'pessimism': 0.5},
    {'name': 'pets', 'particles': 3, 'propagation': 'ts_1'},
])
def test_planner_with_learned_model_reaches_goal(learned_model, cfg):
    planner = dict(horizon=12, population_size=100, elite_count=10, iterations=3,
                   initial_std=0.7, seed=0, **cfg)
    agent = create_agent(planner, learned_model, reward_fn, action_dim=2)
    dist = final_distance(agent.act)
    baseline = random_policy_distance()
    assert baseline > 0.4
    assert dist < 0.08, dist
    assert dist < 0.15 * baseline
