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
"""The lecture's worked planning examples, computed by the planning code itself.

1-D random shooting. The lecture gives only the dynamics s' = s + a, four candidate returns
(-9.9, -9.0, -9.1, -12.7), the winner (sequence 2) and its first action (1.0). A consistent setup,
reconstructed here: start s0 = -5, target 0, reward r = -|s'| per step, horizon 3, and the four
sequences below (chosen so the returns come out exactly; the lecture's own sequences are not
given):
    seq 1 [0.7, 1.0, 1.0]: s = -4.3, -3.3, -2.3  -> return -9.9
    seq 2 [1.0, 1.0, 1.0]: s = -4.0, -3.0, -2.0  -> return -9.0   (best, first action 1.0)
    seq 3 [1.0, 1.0, 0.9]: s = -4.0, -3.0, -2.1  -> return -9.1
    seq 4 [0.3, 0.4, 0.6]: s = -4.7, -4.3, -3.7  -> return -12.7

CEM elite update. Two elites of a 2-step (or 2-D) sequence, [0.9, 0.9] and [1.2, 1.1], refit
without smoothing (alpha = 0) give mu = [1.05, 1.0] and sigma = [0.15, 0.1] (population std).
"""

from typing import Optional

import numpy as np
import pytest
import torch

from mbrl_robot.core.planning import (cem_update, MPCAgent, OptimizationResult, Optimizer,
                                      TrajectoryEvaluator)

S0 = -5.0
SEQUENCES = torch.tensor([[0.7, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.9],
                          [0.3, 0.4, 0.6]]).unsqueeze(-1)  # (N=4, H=3, A=1)
LECTURE_RETURNS = [-9.9, -9.0, -9.1, -12.7]


class Integrator1D:
    """s' = s + a: one deterministic member."""

    ensemble_size = 1
    device = torch.device('cpu')

    def sample_next(self, obs: torch.Tensor, act: torch.Tensor, deterministic: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return obs + act


def reward_fn(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return -next_obs[..., 0].abs()


class FixedCandidates(Optimizer):
    """Random shooting whose 'random' samples are the lecture's four sequences."""

    def __init__(self, candidates: torch.Tensor):
        super().__init__(candidates.shape[2])
        self.candidates = candidates

    def optimize(self, obj_fun, x0, project=None) -> OptimizationResult:
        values = obj_fun(self.candidates)
        self.values = values
        i = int(torch.argmax(values))
        return OptimizationResult(self.candidates[i], float(values[i]), self.candidates[i])


@pytest.mark.parametrize('propagation', ['mean', 'ts_inf'])
def test_random_shooting_1d_returns_and_winner(propagation):
    ev = TrajectoryEvaluator(Integrator1D(), reward_fn, propagation=propagation)
    returns = ev.evaluate(torch.tensor([S0]), SEQUENCES)
    np.testing.assert_allclose(returns.numpy(), LECTURE_RETURNS, atol=1e-5)
    assert int(torch.argmax(returns)) == 1  # sequence 2 (1-based) wins


def test_random_shooting_1d_agent_executes_first_action_of_winner():
    opt = FixedCandidates(SEQUENCES)
    agent = MPCAgent(Integrator1D(), reward_fn, opt, horizon=3, action_dim=1,
                     propagation='mean')
    action = agent.act(np.array([S0]))
    np.testing.assert_allclose(opt.values.numpy(), LECTURE_RETURNS, atol=1e-5)
    assert action.shape == (1,) and action[0] == pytest.approx(1.0)
    assert agent.last_plan_info['predicted_return'] == pytest.approx(-9.0, abs=1e-5)
    # The predicted trajectory of the chosen plan is the lecture's s = -4, -3, -2.
    np.testing.assert_allclose(agent.last_plan_info['mean_states'][:, 0], [-5, -4, -3, -2],
                               atol=1e-6)


def test_cem_elite_update():
    elites = torch.tensor([[0.9, 0.9], [1.2, 1.1]])
    mu, sigma = cem_update(elites, torch.zeros(2), torch.ones(2), alpha=0.0, min_std=0.05)
    np.testing.assert_allclose(mu.numpy(), [1.05, 1.0], atol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), [0.15, 0.1], atol=1e-6)
    # Smoothing keeps alpha of the old distribution; the floor holds the std up.
    mu_s, sigma_s = cem_update(elites, torch.zeros(2), torch.ones(2), alpha=0.5, min_std=0.05)
    np.testing.assert_allclose(mu_s.numpy(), [0.525, 0.5], atol=1e-6)
    np.testing.assert_allclose(sigma_s.numpy(), [0.575, 0.55], atol=1e-6)
    _, floored = cem_update(elites, torch.zeros(2), torch.ones(2), alpha=0.0, min_std=0.12)
    np.testing.assert_allclose(floored.numpy(), [0.15, 0.12], atol=1e-6)
