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
"""Compounding model error: the lecture's bound and measurements of a learned model against it.

Notation: true dynamics ``s' = f(s, a)``, model mean ``f_hat``, open-loop rollout
``s_hat_0 = s_0``, ``s_hat_{h+1} = f_hat(s_hat_h, a_h)`` with the *recorded* actions, error
``e_h = ||s_h - s_hat_h||``.

Split the one-step error at the model's own state::

    e_{h+1} = ||f(s_h, a_h) - f_hat(s_hat_h, a_h)||
            <= ||f(s_h, a_h) - f_hat(s_h, a_h)|| + ||f_hat(s_h, a_h) - f_hat(s_hat_h, a_h)||
            <= eps + L e_h,

where ``eps`` bounds the one-step error of the model *on real states* (what a held-out
validation set measures) and ``L`` is the Lipschitz constant in ``s`` of the *learned* step map
``s -> f_hat(s, a)`` (the action sequence is shared by both rollouts, so only state sensitivity
compounds). With ``e_0 = 0``: ``e_H <= eps * sum_{i<H} L^i = eps (L^H - 1) / (L - 1)``.

Rewards: if ``|r(s) - r(s')| <= L_r ||s - s'||`` (``r = -||puck - target||`` has ``L_r = 1``),
the return error over H steps is ``sum_{h=1..H} gamma^{h-1} L_r e_h``, bounded by the same sum
over the state bounds (``reward_error_bound``).

The bound is rigorous only with ``eps`` = the largest one-step error and ``L`` = the global
Lipschitz constant; ``estimate_epsilon_lipschitz`` returns a *mean* ``eps`` and a high quantile
of local Jacobian norms, so the table it feeds is an empirical bound, not a guarantee.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.types import DynamicsModel, TransitionBatch

ArrayLike = Union[float, int, Sequence[float], np.ndarray]
Trajectory = Tuple[np.ndarray, np.ndarray]


def compounding_error_bound(eps: ArrayLike, lipschitz: ArrayLike,
                            horizon: ArrayLike) -> Union[float, np.ndarray]:
    """H-step state error bound ``eps * (L^H - 1) / (L - 1)`` (``eps * H`` when ``L == 1``).

    Broadcasts over its arguments (numpy rules). Example, the lecture's table with eps=0.01,
    L=1.5: H=5 -> 0.132, H=10 -> 1.13, H=20 -> 66.5 (the lecture prints 0.15 for H=5, having
    dropped the -1).

    Args:
        eps: one-step error (>= 0).
        lipschitz: Lipschitz constant L of the model's step map (>= 0).
        horizon: number of steps H (integer >= 0).

    Returns:
        The bound, a float for scalar inputs, else an array of the broadcast shape.
    """
    e = np.asarray(eps, dtype=np.float64)
    lip = np.asarray(lipschitz, dtype=np.float64)
    h = np.asarray(horizon, dtype=np.float64)
    if not (np.isfinite(e).all() and (e >= 0).all()):
        raise ValueError(f'compounding_error_bound: eps must be finite and >= 0, got {eps!r}')
    if not (np.isfinite(lip).all() and (lip >= 0).all()):
        raise ValueError(f'compounding_error_bound: lipschitz must be finite and >= 0, '
                         f'got {lipschitz!r}')
    if not ((h >= 0).all() and (h == np.round(h)).all()):
        raise ValueError(f'compounding_error_bound: horizon must be integers >= 0, '
                         f'got {horizon!r}')
    near_one = np.abs(lip - 1.0) < 1e-9
    safe = np.where(near_one, 2.0, lip)
    with np.errstate(over='ignore'):
        geometric = np.where(near_one, h, (safe ** h - 1.0) / (safe - 1.0))
    out = e * geometric
    return float(out) if out.ndim == 0 else out


def reward_error_bound(eps: ArrayLike, lipschitz: ArrayLike, horizon: ArrayLike,
                       reward_lipschitz: ArrayLike = 1.0,
                       discount: float = 1.0) -> Union[float, np.ndarray]:
    """Bound on the error of an H-step (discounted) model return.

    ``|sum_{h=1..H} gamma^{h-1} (r(s_h) - r(s_hat_h))| <= L_r sum_{h=1..H} gamma^{h-1} B_h`` with
    ``B_h = compounding_error_bound(eps, L, h)``. For ``gamma = 1`` and ``L != 1`` the sum is
    ``L_r eps / (L - 1) * (L (L^H - 1) / (L - 1) - H)``; for ``L = 1`` it is
    ``L_r eps H (H + 1) / 2``. Broadcasts like ``compounding_error_bound``.

    Args:
        eps: one-step state error (>= 0).
        lipschitz: L of the model's step map.
        horizon: H (integer >= 0).
        reward_lipschitz: L_r, Lipschitz constant of the reward in the state (1 for
            ``-||puck - target||``).
        discount: gamma in (0, 1].
    """
    if not 0.0 < discount <= 1.0:
        raise ValueError(f'reward_error_bound: discount must be in (0, 1], got {discount}')
    lr = np.asarray(reward_lipschitz, dtype=np.float64)
    if not (np.isfinite(lr).all() and (lr >= 0).all()):
        raise ValueError(f'reward_error_bound: reward_lipschitz must be >= 0, '
                         f'got {reward_lipschitz!r}')
    h_arr = np.asarray(horizon, dtype=np.float64)
    compounding_error_bound(eps, lipschitz, h_arr)  # validates eps, L, H
    h_max = int(h_arr.max()) if h_arr.size else 0
    total = np.zeros(np.broadcast_shapes(np.shape(eps), np.shape(lipschitz), h_arr.shape))
    for h in range(1, h_max + 1):
        term = discount ** (h - 1) * np.asarray(compounding_error_bound(eps, lipschitz, h))
        total = total + np.where(h_arr >= h, term, 0.0)
    out = lr * total
    return float(out) if out.ndim == 0 else out


def _check_trajectories(trajectories: Sequence[Trajectory]) -> List[Trajectory]:
    out = []
    if len(trajectories) == 0:
        raise ValueError('no trajectories')
    for i, traj in enumerate(trajectories):
        if len(traj) != 2:
            raise ValueError(f'trajectory {i}: expected a pair (obs (T+1, S), act (T, A))')
        obs, act = (np.asarray(x, dtype=np.float32) for x in traj)
        if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act) + 1 or len(act) < 1:
            raise ValueError(f'trajectory {i}: expected obs (T+1, S) and act (T, A) with T >= 1, '
                             f'got {obs.shape} and {act.shape}')
        if not (np.isfinite(obs).all() and np.isfinite(act).all()):
            raise ValueError(f'trajectory {i}: contains NaN or inf')
        out.append((obs, act))
    return out


def _mean_step(model: DynamicsModel, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Ensemble-mean next state (B, S) for (B, S), (B, A)."""
    return model.predict(obs, act)[0].mean(0)


def measure_h_step_error(model: DynamicsModel, trajectories: Sequence[Trajectory],
                         horizons: Sequence[int]) -> np.ndarray:
    """Mean L2 error of open-loop rollouts of the ensemble-mean model.

    From every start index t of every trajectory, roll the mean model (average of the members'
    means) forward with the recorded actions and compare ``s_hat_{t+H}`` with ``obs[t+H]``; the
    error at H averages over all starts with ``t + H <= T``.

    Args:
        model: a ``DynamicsModel`` (``predict`` is used).
        trajectories: held-out episodes, each ``(obs (T+1, S), act (T, A))``.
        horizons: the H values (integers >= 1).

    Returns:
        (len(horizons),) mean error at each H, in state units.

    Raises:
        ValueError: bad shapes, non-finite data, or an H longer than every trajectory.
    """
    trajs = _check_trajectories(trajectories)
    hs = [int(h) for h in horizons]
    if not hs or min(hs) < 1:
        raise ValueError(f'measure_h_step_error: horizons must be integers >= 1, got {horizons}')
    h_max = max(hs)
    wanted = {h: i for i, h in enumerate(hs)}
    sums = np.zeros(len(hs))
    counts = np.zeros(len(hs), dtype=np.int64)
    device = model.device
    with torch.no_grad():
        for obs_np, act_np in trajs:
            obs = torch.as_tensor(obs_np, device=device)
            act = torch.as_tensor(act_np, device=device)
            t_len = len(act_np)
            state = obs[:t_len]  # starts t = 0..T-1
            for h in range(1, min(h_max, t_len) + 1):
                n = t_len - h + 1  # starts with t + h <= T
                state = _mean_step(model, state[:n], act[h - 1:h - 1 + n])
                if h in wanted:
                    err = torch.linalg.vector_norm(state - obs[h:h + n], dim=-1)
                    j = wanted[h]
                    sums[j] += float(err.sum())
                    counts[j] += n
    if (counts == 0).any():
        missing = [h for h, c in zip(hs, counts) if c == 0]
        raise ValueError(f'measure_h_step_error: no trajectory is long enough for H={missing}')
    return sums / counts


def estimate_epsilon_lipschitz(model: DynamicsModel, batch: TransitionBatch,
                               quantile: float = 0.95, max_points: int = 512,
                               seed: int = 0) -> Tuple[float, float]:
    """Estimate the bound's ``eps`` and ``L`` for a model from held-out transitions.

    ``eps`` is the mean one-step L2 error of the ensemble-mean prediction over all rows.
    ``L`` is the ``quantile`` of the spectral norm of the Jacobian ``d f_hat(s, a) / d s`` of the
    ensemble-mean step map, evaluated (by ``torch.func.jacrev``) at up to
    ``max_points`` rows drawn with ``seed``. The spectral norm is the local Lipschitz constant
    in the worst direction; a high quantile rather than the maximum keeps one odd point from
    dominating, while staying above the typical value so the bound stays conservative.

    Args:
        model: a ``DynamicsModel`` whose ``predict`` is written in differentiable torch.
        batch: held-out transitions (obs (N, S), act (N, A), next_obs (N, S)).
        quantile: in (0, 1].
        max_points: rows at which the Jacobian is evaluated.
        seed: row subsampling seed.

    Returns:
        (eps, L) as floats.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f'estimate_epsilon_lipschitz: quantile must be in (0, 1], '
                         f'got {quantile}')
    if len(batch) < 1:
        raise ValueError('estimate_epsilon_lipschitz: empty batch')
    device = model.device
    obs = torch.as_tensor(np.asarray(batch.obs, dtype=np.float32), device=device)
    act = torch.as_tensor(np.asarray(batch.act, dtype=np.float32), device=device)
    nxt = torch.as_tensor(np.asarray(batch.next_obs, dtype=np.float32), device=device)
    if not (torch.isfinite(obs).all() and torch.isfinite(act).all()
            and torch.isfinite(nxt).all()):
        raise ValueError('estimate_epsilon_lipschitz: batch contains NaN or inf')
    with torch.no_grad():
        errs = [torch.linalg.vector_norm(_mean_step(model, o, a) - s, dim=-1)
                for o, a, s in zip(obs.split(4096), act.split(4096), nxt.split(4096))]
        eps = float(torch.cat(errs).mean())

    rng = np.random.default_rng(seed)
    n = len(batch)
    rows = rng.choice(n, size=min(n, max_points), replace=False)
    rows_t = torch.as_tensor(rows, device=device)

    def step(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return _mean_step(model, s.unsqueeze(0), a.unsqueeze(0))[0]

    jac_fn = torch.func.vmap(torch.func.jacrev(step, argnums=0))
    norms = []
    for chunk in rows_t.split(128):
        jac = jac_fn(obs[chunk], act[chunk]).detach()  # (b, S, S)
        norms.append(torch.linalg.matrix_norm(jac.double(), ord=2))
    lip = float(torch.quantile(torch.cat(norms), quantile))
    return eps, lip


def trajectories_to_batch(trajectories: Sequence[Trajectory]) -> TransitionBatch:
    """Flatten ``(obs (T+1, S), act (T, A))`` episodes into a ``TransitionBatch``."""
    trajs = _check_trajectories(trajectories)
    obs = np.concatenate([o[:-1] for o, _ in trajs])
    nxt = np.concatenate([o[1:] for o, _ in trajs])
    act = np.concatenate([a for _, a in trajs])
    done = np.concatenate([np.arange(len(a)) == len(a) - 1 for _, a in trajs])
    return TransitionBatch(obs, act, nxt, np.zeros(len(obs), np.float32), done)


def batch_to_trajectories(batch: TransitionBatch, atol: float = 1e-6) -> List[Trajectory]:
    """Cut a row-ordered batch into episodes ``(obs (T+1, S), act (T, A))``.

    An episode ends at a ``done`` row or wherever ``next_obs[i] != obs[i + 1]`` (so
    concatenated or shuffled data never yields a fake continuation).
    """
    obs, act, nxt = (np.asarray(x, dtype=np.float32)
                     for x in (batch.obs, batch.act, batch.next_obs))
    done = np.asarray(batch.done, dtype=bool)
    out = []
    start = 0
    for i in range(len(obs)):
        last = i == len(obs) - 1 or done[i] or not np.allclose(nxt[i], obs[i + 1], atol=atol)
        if last:
            out.append((np.concatenate([obs[start:i + 1], nxt[i:i + 1]]), act[start:i + 1]))
            start = i + 1
    return out


def error_table(model: DynamicsModel, trajectories: Sequence[Trajectory],
                horizons: Sequence[int], batch: Optional[TransitionBatch] = None,
                eps: Optional[float] = None, lipschitz: Optional[float] = None,
                quantile: float = 0.95) -> List[Dict[str, float]]:
    """Measured H-step error next to the compounding bound, one row per H.

    Args:
        model: the model under test.
        trajectories: held-out episodes ``(obs (T+1, S), act (T, A))``.
        horizons: H values.
        batch: transitions for ``estimate_epsilon_lipschitz`` (default: the trajectories').
        eps: use this one-step error instead of estimating it.
        lipschitz: use this L instead of estimating it.
        quantile: passed to ``estimate_epsilon_lipschitz``.

    Returns:
        Rows ``{'H', 'measured', 'bound', 'eps', 'L'}``.
    """
    if eps is None or lipschitz is None:
        data = batch if batch is not None else trajectories_to_batch(trajectories)
        eps_hat, lip_hat = estimate_epsilon_lipschitz(model, data, quantile=quantile)
        eps = eps_hat if eps is None else eps
        lipschitz = lip_hat if lipschitz is None else lipschitz
    measured = measure_h_step_error(model, trajectories, horizons)
    bounds = compounding_error_bound(eps, lipschitz, np.asarray(horizons))
    return [{'H': int(h), 'measured': float(m), 'bound': float(b), 'eps': float(eps),
             'L': float(lipschitz)}
            for h, m, b in zip(horizons, measured, np.atleast_1d(bounds))]


def format_table(rows: Sequence[Dict[str, float]]) -> str:
    """Plain-text table of ``error_table`` rows (H, measured, bound, measured/bound)."""
    lines = [f'{"H":>4}  {"measured":>12}  {"bound":>12}  {"ratio":>7}']
    for r in rows:
        ratio = r['measured'] / r['bound'] if r['bound'] > 0 else math.inf
        lines.append(f'{r["H"]:>4d}  {r["measured"]:>12.5g}  {r["bound"]:>12.5g}  {ratio:>7.3f}')
    if rows and 'eps' in rows[0]:
        lines.append(f'eps = {rows[0]["eps"]:.5g}, L = {rows[0]["L"]:.5g}')
    return '\n'.join(lines)
