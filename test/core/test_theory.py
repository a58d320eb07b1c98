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
"""Tests of the compounding-error bound and of measuring a model against it."""

import numpy as np
import pytest
import torch

from mbrl_robot.core.models import GaussianEnsemble
from mbrl_robot.core.theory import (batch_to_trajectories, compounding_error_bound,
                                    error_table, estimate_epsilon_lipschitz, format_table,
                                    measure_h_step_error, reward_error_bound,
                                    trajectories_to_batch)


class LinearModel:
    """Known model ``s' = A_hat s + B a + c`` laid out as a K-member ensemble (all equal)."""

    def __init__(self, a_hat, b, c, ensemble_size=2):
        self.a_hat = torch.as_tensor(a_hat, dtype=torch.float32)
        self.b = torch.as_tensor(b, dtype=torch.float32)
        self.c = torch.as_tensor(c, dtype=torch.float32)
        self.ensemble_size = ensemble_size
        self.device = torch.device('cpu')

    def predict(self, obs, act):
        mean = obs @ self.a_hat.T + act @ self.b.T + self.c
        mean = mean.expand(self.ensemble_size, *mean.shape)
        return mean, torch.zeros_like(mean)


A_TRUE = np.array([[1.02, 0.05], [0.0, 0.97]])
B_TRUE = np.array([[0.0], [0.1]])


def linear_trajectories(n_traj, steps, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_traj):
        obs = [rng.normal(size=2)]
        act = rng.uniform(-1.0, 1.0, (steps, 1))
        for t in range(steps):
            obs.append(A_TRUE @ obs[-1] + B_TRUE @ act[t])
        out.append((np.array(obs, np.float32), act.astype(np.float32)))
    return out


def test_lecture_table():
    h = np.array([5, 10, 20])
    np.testing.assert_allclose(compounding_error_bound(0.01, 1.5, h), [0.132, 1.13, 66.5],
                               rtol=1e-2)
    # The lecture's 0.15 for H=5 drops the -1: eps * L^H / (L - 1).
    assert compounding_error_bound(0.01, 1.5, 5) == pytest.approx(0.01 * (1.5 ** 5 - 1) / 0.5)
    assert 0.01 * 1.5 ** 5 / 0.5 == pytest.approx(0.15, rel=2e-2)


def test_bound_edge_cases_and_broadcasting():
    assert compounding_error_bound(0.1, 1.0, 7) == pytest.approx(0.7)
    assert compounding_error_bound(0.1, 1.0 + 1e-12, 7) == pytest.approx(0.7)
    assert compounding_error_bound(0.1, 0.5, 0) == 0.0
    # L < 1 saturates at eps / (1 - L).
    assert compounding_error_bound(0.1, 0.5, 200) == pytest.approx(0.2)
    grid = compounding_error_bound(np.array([[0.01], [0.02]]), np.array([1.0, 1.5]), 10)
    assert grid.shape == (2, 2)
    assert grid[1, 1] == pytest.approx(2 * grid[0, 1]) and grid[0, 0] == pytest.approx(0.1)
    # Equals the recursion e_{h+1} = L e_h + eps.
    e = 0.0
    for _ in range(12):
        e = 1.3 * e + 0.02
    assert compounding_error_bound(0.02, 1.3, 12) == pytest.approx(e)
    for bad in ((-0.1, 1.5, 5), (0.1, -1.0, 5), (0.1, 1.5, 2.5), (np.nan, 1.5, 5)):
        with pytest.raises(ValueError):
            compounding_error_bound(*bad)


def test_reward_error_bound_sums_state_bounds():
    eps, lip, h = 0.01, 1.5, 5
    explicit = sum(compounding_error_bound(eps, lip, k) for k in range(1, h + 1))
    assert reward_error_bound(eps, lip, h) == pytest.approx(explicit)
    closed = eps / (lip - 1) * (lip * (lip ** h - 1) / (lip - 1) - h)
    assert reward_error_bound(eps, lip, h) == pytest.approx(closed)
    assert reward_error_bound(0.01, 1.0, 4, reward_lipschitz=2.0) == pytest.approx(0.2)
    np.testing.assert_allclose(reward_error_bound(eps, lip, [1, 5]), [0.01, closed])
    discounted = sum(0.9 ** (k - 1) * compounding_error_bound(eps, lip, k) for k in range(1, 6))
    assert reward_error_bound(eps, lip, 5, discount=0.9) == pytest.approx(discounted)
    with pytest.raises(ValueError):
        reward_error_bound(eps, lip, 5, discount=0.0)


def test_measured_error_grows_and_stays_below_bound():
    c = np.array([0.01, -0.005])
    model = LinearModel(A_TRUE, B_TRUE, c)
    trajs = linear_trajectories(4, 40, seed=0)
    horizons = [1, 2, 5, 10, 20, 30]
    measured = measure_h_step_error(model, trajs, horizons)
    # A constant offset c: e_H = ||sum_{i<H} A^i c||, independent of the start.
    expected = [np.linalg.norm(sum(np.linalg.matrix_power(A_TRUE, i) @ c for i in range(h)))
                for h in horizons]
    np.testing.assert_allclose(measured, expected, rtol=1e-4)
    assert np.all(np.diff(measured) > 0)
    eps, lip = estimate_epsilon_lipschitz(model, trajectories_to_batch(trajs))
    assert eps == pytest.approx(np.linalg.norm(c), rel=1e-4)
    assert lip == pytest.approx(np.linalg.norm(A_TRUE, 2), rel=1e-4)
    bound = compounding_error_bound(eps, lip, np.array(horizons))
    assert np.all(measured <= bound * (1 + 1e-6))
    assert measured[-1] > 0.3 * bound[-1]  # the bound is not vacuous here

    rows = error_table(model, trajs, horizons)
    assert [r['H'] for r in rows] == horizons
    np.testing.assert_allclose([r['measured'] for r in rows], measured)
    np.testing.assert_allclose([r['bound'] for r in rows], bound, rtol=1e-6)
    text = format_table(rows)
    assert text.splitlines()[0].split() == ['H', 'measured', 'bound', 'ratio']
    assert len(text.splitlines()) == len(horizons) + 2


def test_measure_rejects_bad_input():
    model = LinearModel(A_TRUE, B_TRUE, [0.0, 0.0])
    trajs = linear_trajectories(2, 10, seed=1)
    with pytest.raises(ValueError, match='H=\\[11\\]'):
        measure_h_step_error(model, trajs, [1, 11])
    with pytest.raises(ValueError, match='trajectory 0'):
        measure_h_step_error(model, [(trajs[0][0][:5], trajs[0][1])], [1])
    bad = (trajs[0][0].copy(), trajs[0][1])
    bad[0][2, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        measure_h_step_error(model, [bad], [1])
    # A perfect model has zero error at every H.
    np.testing.assert_allclose(measure_h_step_error(model, trajs, [1, 5, 10]), 0.0, atol=1e-5)


def test_lipschitz_of_ensemble_matches_finite_differences():
    model = GaussianEnsemble(3, 2, ensemble_size=3, num_layers=2, hidden_size=32, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
    batch = trajectories_to_batch([(np.concatenate([obs, obs[:1]]), act)])
    _, lip = estimate_epsilon_lipschitz(model, batch, quantile=1.0)
    # Central differences of the ensemble-mean map in float64 give the same max spectral norm.
    model64 = model.double()
    s = torch.as_tensor(obs, dtype=torch.float64)
    a = torch.as_tensor(act, dtype=torch.float64)
    h = 1e-5
    cols = []
    with torch.no_grad():
        for j in range(3):
            d = torch.zeros(3, dtype=torch.float64)
            d[j] = h
            f_plus = model64.predict(s + d, a)[0].mean(0)
            f_minus = model64.predict(s - d, a)[0].mean(0)
            cols.append((f_plus - f_minus) / (2 * h))
    jac = torch.stack(cols, dim=-1)
    expected = float(torch.linalg.matrix_norm(jac, ord=2).max())
    assert lip == pytest.approx(expected, rel=1e-3)
    assert lip > 0.5  # s' = s + delta: the identity part keeps L near or above 1


def test_measure_rolls_out_the_ensemble_mean():
    model = GaussianEnsemble(2, 1, ensemble_size=3, num_layers=2, hidden_size=16, seed=0)
    (obs, act), = linear_trajectories(1, 6, seed=3)
    measured = measure_h_step_error(model, [(obs, act)], [6])
    # H=6 has a single start (t=0): roll the members' averaged mean by hand.
    s = torch.as_tensor(obs[:1])
    with torch.no_grad():
        for t in range(6):
            s = model.predict(s, torch.as_tensor(act[t:t + 1]))[0].mean(0)
    expected = float(torch.linalg.vector_norm(s[0] - torch.as_tensor(obs[6])))
    assert measured[0] == pytest.approx(expected, rel=1e-5)


def test_batch_trajectory_round_trip():
    trajs = linear_trajectories(3, 7, seed=2)
    batch = trajectories_to_batch(trajs)
    assert len(batch) == 21 and batch.done.sum() == 3
    back = batch_to_trajectories(batch)
    assert len(back) == 3
    for (o1, a1), (o2, a2) in zip(trajs, back):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(a1, a2)
    # Without done flags, episodes still split where next_obs[i] != obs[i + 1]: between the
    # (independently started) trajectories and at the row broken inside the second one.
    batch.done[:] = False
    batch.obs[10] += 1.0
    assert [len(a) for _, a in batch_to_trajectories(batch)] == [7, 3, 4, 7]
