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
"""Sampling-based optimizers of action sequences: random shooting, CEM and iCEM.

Every optimizer maximises ``obj_fun(x (N, H, A)) -> (N,)`` (higher is better) over sequences of
``H`` actions of dimension ``A`` within per-dimension bounds. All sampling uses an explicit
``torch.Generator`` and runs batched on the optimizer's device, so the same seed gives the same
result. An optional ``project`` callable ``(N, H, A) -> (N, H, A)`` maps samples onto the feasible
set (e.g. an acceleration bound) before they are scored, so every sequence an optimizer returns is
feasible whenever ``project`` is (the returned mean is projected too).

References:
    Botev et al. 2013, "The cross-entropy method for optimization".
    Pinneri et al. 2020, "Sample-efficient cross-entropy method for real-time planning" (iCEM).
"""

from dataclasses import dataclass
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

ObjectiveFn = Callable[[torch.Tensor], torch.Tensor]
ProjectFn = Callable[[torch.Tensor], torch.Tensor]
BoundType = Union[float, Sequence[float], torch.Tensor]


@dataclass
class OptimizationResult:
    """What one call of ``Optimizer.optimize`` found.

    Attributes:
        best: (H, A) the best sequence that was scored.
        best_value: its objective value.
        mean: (H, A) the final sampling mean (CEM) or ``best`` (random shooting).
    """

    best: torch.Tensor
    best_value: float
    mean: torch.Tensor


def _as_bound(value: BoundType, action_dim: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.dim() == 0:
        t = t.expand(action_dim)
    if t.shape != (action_dim,):
        raise ValueError(f'bound must be a scalar or have shape ({action_dim},), got '
                         f'{tuple(t.shape)}')
    if not torch.isfinite(t).all():
        raise ValueError('bounds must be finite')
    return t.clone()


def _check_x0(x0: torch.Tensor, action_dim: int) -> None:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f'x0 must be a torch.Tensor, got {type(x0).__name__}')
    if x0.dim() != 2 or x0.shape[1] != action_dim or x0.shape[0] < 1:
        raise ValueError(f'x0 must have shape (H >= 1, {action_dim}), got {tuple(x0.shape)}')


def _evaluate(obj_fun: ObjectiveFn, x: torch.Tensor) -> torch.Tensor:
    values = obj_fun(x)
    if values.shape != (x.shape[0],):
        raise ValueError(f'obj_fun must return shape ({x.shape[0]},), got {tuple(values.shape)}')
    # A NaN score (diverged model) must never win.
    return torch.nan_to_num(values, nan=-math.inf)


def cem_update(elites: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, alpha: float,
               min_std: Union[float, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """One CEM refit of the sampling distribution to the elites.

    ``mean' = alpha * mean + (1 - alpha) * mean(elites)`` and the same for the std, where the
    elite std is the population std (divide by M); the new std is floored at ``min_std``.

    Args:
        elites: (M, H, A) or (M, D) elite samples.
        mean: (H, A) or (D,) current mean.
        std: (H, A) or (D,) current std.
        alpha: smoothing weight of the old distribution in [0, 1).
        min_std: floor of the std (>= 0): a float, or a tensor that broadcasts to ``mean``
            (one floor per action dimension).

    Returns:
        (mean, std) with the shape of ``mean``.
    """
    if elites.shape[1:] != mean.shape or std.shape != mean.shape:
        raise ValueError(f'elites {tuple(elites.shape)}, mean {tuple(mean.shape)} and std '
                         f'{tuple(std.shape)} do not match')
    if elites.shape[0] < 1:
        raise ValueError('cem_update needs at least one elite')
    elite_mean = elites.mean(dim=0)
    elite_std = elites.std(dim=0, unbiased=False)
    new_mean = alpha * mean + (1.0 - alpha) * elite_mean
    new_std = alpha * std + (1.0 - alpha) * elite_std
    if isinstance(min_std, torch.Tensor):
        return new_mean, torch.maximum(new_std, min_std.to(new_std))
    return new_mean, new_std.clamp_min(min_std)


def colored_noise(beta: float, shape: Tuple[int, ...], horizon: int,
                  generator: Optional[torch.Generator] = None,
                  device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """Unit-variance Gaussian noise with power spectrum ``1 / f**beta`` along the horizon.

    ``beta = 0`` is white noise, ``beta = 2`` is red (Brownian-like); iCEM uses 2-2.5 for
    smooth action sequences. Same construction as the ``colorednoise`` package.

    Args:
        beta: spectral exponent (>= 0).
        shape: leading shape, e.g. (N,); the output is ``shape + (horizon,)``.
        horizon: length H of each noise sequence.
        generator: random generator (on ``device``).
        device: where to sample.

    Returns:
        (*shape, H) float32 noise, each sequence of zero mean and unit variance in expectation.
    """
    if beta < 0:
        raise ValueError(f'colored noise exponent must be >= 0, got {beta}')
    if horizon < 1:
        raise ValueError(f'horizon must be >= 1, got {horizon}')
    if beta == 0 or horizon < 2:
        return torch.randn(*shape, horizon, generator=generator, device=device)
    f = torch.fft.rfftfreq(horizon, device=device)
    f[0] = 1.0 / horizon
    s_scale = f.pow(-beta / 2.0)
    w = s_scale[1:].clone()
    w[-1] *= (1 + (horizon % 2)) / 2.0
    sigma = 2.0 * torch.sqrt((w ** 2).sum()) / horizon
    n_f = f.shape[0]
    sr = torch.randn(*shape, n_f, generator=generator, device=device) * s_scale
    si = torch.randn(*shape, n_f, generator=generator, device=device) * s_scale
    if horizon % 2 == 0:
        si[..., -1] = 0.0
        sr[..., -1] *= math.sqrt(2.0)
    si[..., 0] = 0.0
    sr[..., 0] *= math.sqrt(2.0)
    return torch.fft.irfft(torch.complex(sr, si), n=horizon) / sigma


class Optimizer:
    """Base class: maximise an objective over (H, A) action sequences.

    Args:
        action_dim: A.
        lower: lower action bound, scalar or (A,).
        upper: upper action bound, scalar or (A,).
        device: where samples live.
        generator: random generator on ``device``; a fresh one seeded with ``seed`` if None.
        seed: seed of the fresh generator.
    """

    def __init__(self, action_dim: int, lower: BoundType = -1.0, upper: BoundType = 1.0,
                 device: Union[str, torch.device] = 'cpu',
                 generator: Optional[torch.Generator] = None, seed: int = 0):
        if int(action_dim) < 1:
            raise ValueError(f'action_dim must be >= 1, got {action_dim}')
        self.action_dim = int(action_dim)
        self.device = torch.device(device)
        self.lower = _as_bound(lower, self.action_dim, self.device)
        self.upper = _as_bound(upper, self.action_dim, self.device)
        if not (self.lower < self.upper).all():
            raise ValueError('every lower bound must be below its upper bound')
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed))
        self.generator = generator

    def reset(self) -> None:
        """Forget anything carried over between calls (new episode)."""

    def preferred(self, result: OptimizationResult) -> torch.Tensor:
        """The (H, A) sequence to execute from a result (the best sample by default)."""
        return result.best

    def optimize(self, obj_fun: ObjectiveFn, x0: torch.Tensor,
                 project: Optional[ProjectFn] = None) -> OptimizationResult:
        """Maximise ``obj_fun``.

        Args:
            obj_fun: maps (N, H, A) candidates to (N,) scores, higher is better.
            x0: (H, A) initial guess (warm start).
            project: optional map of (N, H, A) samples onto the feasible set.

        Returns:
            OptimizationResult with (H, A) tensors.
        """
        raise NotImplementedError

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.upper), self.lower)


class RandomShootingOptimizer(Optimizer):
    """N sequences drawn uniformly within the bounds; the best one wins.

    Args:
        population_size: N (>= 1).
        include_x0: also score the (projected) warm start ``x0`` as one of the N candidates.
        **kwargs: see ``Optimizer``.
    """

    def __init__(self, action_dim: int, population_size: int, include_x0: bool = False,
                 **kwargs):
        super().__init__(action_dim, **kwargs)
        if int(population_size) < 1:
            raise ValueError(f'population_size must be >= 1, got {population_size}')
        self.population_size = int(population_size)
        self.include_x0 = bool(include_x0)

    def optimize(self, obj_fun: ObjectiveFn, x0: torch.Tensor,
                 project: Optional[ProjectFn] = None) -> OptimizationResult:
        """See ``Optimizer.optimize``."""
        _check_x0(x0, self.action_dim)
        h = x0.shape[0]
        u = torch.rand(self.population_size, h, self.action_dim, generator=self.generator,
                       device=self.device)
        x = self.lower + u * (self.upper - self.lower)
        if self.include_x0:
            x[0] = self._clip(x0.to(self.device))
        if project is not None:
            x = project(x)
        values = _evaluate(obj_fun, x)
        i = int(torch.argmax(values))
        return OptimizationResult(best=x[i].clone(), best_value=float(values[i]),
                                  mean=x[i].clone())


class CEMOptimizer(Optimizer):
    """Cross-entropy method with the iCEM extensions (Pinneri et al. 2020), off by default.

    Each of ``iterations`` rounds samples N sequences from a diagonal Gaussian (mean starts at the
    warm start ``x0``, std at ``initial_std``), keeps the M best (elites) and refits the Gaussian
    to them with ``cem_update`` (smoothing ``alpha``, floor ``min_std``). Both stds are in
    normalised action units: they are multiplied by half the action range, ``(upper - lower) /
    2``, per dimension (1 for the default [-1, 1] box; mbrl-lib's first std is a quarter of the
    range, ``initial_std`` 0.5 here).

    Args:
        action_dim: A.
        population_size: N (>= 2).
        elite_count: M (1 <= M <= N).
        iterations: I (>= 1).
        alpha: weight of the old distribution in the refit, in [0, 1).
        initial_std: std of the first round (> 0), times half the action range.
        min_std: std floor (>= 0), times half the action range.
        bound_mode: 'clip' (sample then clip to the bounds) or 'truncnorm' (sample the truncated
            normal exactly, by inverse CDF).
        return_mean: ``optimize`` still returns both; this only picks ``preferred(result)``.
        noise_beta: iCEM coloured-noise exponent along the horizon (0 = white noise, CEM).
        keep_elites_fraction: iCEM: this fraction of the elites is carried into the next round
            (and, shifted by one step, into the first round of the next ``optimize`` call).
        shift_elites: iCEM: carry the shifted elites across calls (needs keep_elites_fraction).
        **kwargs: see ``Optimizer``.
    """

    def __init__(self, action_dim: int, population_size: int, elite_count: int,
                 iterations: int, alpha: float = 0.1, initial_std: float = 0.5,
                 min_std: float = 0.05, bound_mode: str = 'clip', return_mean: bool = False,
                 noise_beta: float = 0.0, keep_elites_fraction: float = 0.0,
                 shift_elites: bool = False, **kwargs):
        super().__init__(action_dim, **kwargs)
        population_size, elite_count, iterations = (int(population_size), int(elite_count),
                                                    int(iterations))
        if population_size < 2:
            raise ValueError(f'population_size must be >= 2, got {population_size}')
        if not 1 <= elite_count <= population_size:
            raise ValueError(f'elite_count must be in [1, population_size={population_size}], '
                             f'got {elite_count}')
        if iterations < 1:
            raise ValueError(f'iterations must be >= 1, got {iterations}')
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f'alpha must be in [0, 1), got {alpha}')
        if not initial_std > 0.0:
            raise ValueError(f'initial_std must be > 0, got {initial_std}')
        if not min_std >= 0.0:
            raise ValueError(f'min_std must be >= 0, got {min_std}')
        if bound_mode not in ('clip', 'truncnorm'):
            raise ValueError(f"bound_mode must be 'clip' or 'truncnorm', got {bound_mode!r}")
        if not noise_beta >= 0.0:
            raise ValueError(f'noise_beta must be >= 0, got {noise_beta}')
        if not 0.0 <= keep_elites_fraction <= 1.0:
            raise ValueError(f'keep_elites_fraction must be in [0, 1], got {keep_elites_fraction}')
        if shift_elites and keep_elites_fraction == 0.0:
            raise ValueError('shift_elites needs keep_elites_fraction > 0')
        self.population_size = population_size
        self.elite_count = elite_count
        self.iterations = iterations
        self.alpha = float(alpha)
        self.initial_std = float(initial_std)
        self.min_std = float(min_std)
        self.bound_mode = bound_mode
        self.return_mean = bool(return_mean)
        self.noise_beta = float(noise_beta)
        self.n_keep = int(round(keep_elites_fraction * elite_count))
        if self.n_keep >= population_size:
            raise ValueError('kept elites must leave room for fresh samples')
        self.shift_elites = bool(shift_elites)
        self._carried: Optional[torch.Tensor] = None

    def reset(self) -> None:
        """Drop the elites carried between calls."""
        self._carried = None

    def preferred(self, result: OptimizationResult) -> torch.Tensor:
        """The sequence to execute: the final mean if ``return_mean`` else the best sample."""
        return result.mean if self.return_mean else result.best

    def _sample(self, n: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        h = mean.shape[0]
        if self.bound_mode == 'clip':
            if self.noise_beta > 0.0:
                eps = colored_noise(self.noise_beta, (n, self.action_dim), h, self.generator,
                                    self.device).transpose(1, 2)
            else:
                eps = torch.randn(n, h, self.action_dim, generator=self.generator,
                                  device=self.device)
            return self._clip(mean + std * eps)
        # Truncated normal by inverse CDF; coloured noise is mapped through the normal CDF
        # so the temporal correlation survives.
        if self.noise_beta > 0.0:
            z = colored_noise(self.noise_beta, (n, self.action_dim), h, self.generator,
                              self.device).transpose(1, 2)
            u = torch.special.ndtr(z)
        else:
            u = torch.rand(n, h, self.action_dim, generator=self.generator, device=self.device)
        std = std.clamp_min(1e-6)
        lo = torch.special.ndtr((self.lower - mean) / std)
        hi = torch.special.ndtr((self.upper - mean) / std)
        p = (lo + u * (hi - lo)).clamp(1e-6, 1.0 - 1e-6)
        return self._clip(mean + std * torch.special.ndtri(p))

    def optimize(self, obj_fun: ObjectiveFn, x0: torch.Tensor,
                 project: Optional[ProjectFn] = None) -> OptimizationResult:
        """See ``Optimizer.optimize``."""
        _check_x0(x0, self.action_dim)
        mean = self._clip(x0.to(self.device, torch.float32))
        half_range = (self.upper - self.lower) / 2.0
        std = (self.initial_std * half_range).expand_as(mean).clone()
        min_std = self.min_std * half_range
        h = mean.shape[0]
        kept = None
        if self.shift_elites and self._carried is not None and self._carried.shape[1] == h:
            kept = torch.cat([self._carried[:, 1:], mean[-1:].expand(self.n_keep, 1, -1)], 1)
        best, best_value = mean.clone(), -math.inf
        for _ in range(self.iterations):
            n_new = self.population_size - (0 if kept is None else kept.shape[0])
            x = self._sample(n_new, mean, std)
            if kept is not None:
                x = torch.cat([x, kept], 0)
            if project is not None:
                x = project(x)
            values = _evaluate(obj_fun, x)
            top_values, top_idx = torch.topk(values, self.elite_count)
            elites = x[top_idx]
            if float(top_values[0]) > best_value:
                best_value = float(top_values[0])
                best = elites[0].clone()
            mean, std = cem_update(elites, mean, std, self.alpha, min_std)
            if self.n_keep > 0:
                kept = elites[:self.n_keep]
        if self.shift_elites:
            self._carried = kept.clone()
        if project is not None:
            mean = project(mean.unsqueeze(0))[0]
        return OptimizationResult(best=best, best_value=best_value, mean=mean)
