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
"""The whole MPC plan as one function of static-shape tensors: fused, compiled, captured.

:class:`FusedMPCAgent` plans exactly what :class:`~mbrl_robot.core.planning.agent.MPCAgent`
(the eager reference) plans, from the same generators in the same order, but as one pure
function ``plan(obs, a_{-1}, warm start, noise..., weights...)`` of tensors whose shapes never
change: sampling, every CEM iteration, the rollouts through all members, the reward (with the
forward kinematics), the elite refit, the acceleration bound and the plan statistics, with no
host synchronisation inside. That function can then be

* run as it is (``backend: fused``),
* compiled by ``torch.compile`` on CPU or GPU (``compiled``),
* captured once as a CUDA graph and replayed every tick (``cuda_graph``, the eager function;
  ``compiled_cuda_graph``, the compiled one).

Randomness stays outside the function: before each plan the optimizer's and the evaluator's
generators fill preallocated noise buffers in place, in the reference's order (the optimizer's
Gaussian or uniform samples per iteration; per iteration and step the TS-1 permutation and the
Gaussian heads' noise), so one seed gives one plan on every backend, and the same plan as the
reference up to floating-point rounding. A captured graph holds those draws too (the generators
registered with it: each replay draws what the same calls would draw eagerly and advances the
generators as they would), so a replay launches nothing per draw; TS-1's ``randperm`` stays on
the host.

Differences from the reference, all by construction:
* the normalisers are folded into the first and last layers (``FoldedEnsemble``), a
  deterministic rollout computes only the mean half of the last layer;
* plan statistics (``mean_states``, ``std_states``, ``disagreement``) come from extra rows of
  the last iteration's batch, one per elite member, that carry the sequence the last iteration
  is centred on (its sampling mean, after the acceleration bound) instead of a second rollout
  of the executed plan;
* the best sample is tracked with ``torch.where``, not a host-side comparison.

Weights are copied into the same tensors on a model swap (``set_model``), so a compiled function
is not recompiled and a captured graph not re-captured; a model of another shape (e.g. another
number of elites) rebuilds the plan function once, with a warning in ``last_plan_info``.

Supported: random shooting, CEM and PETS (``mean``, ``ts_inf``, ``ts_1``; clip or truncnorm
bounds; pessimism; termination; joint-limit penalty) on a ``GaussianEnsemble``. iCEM's coloured
noise and kept elites are reference-only.
"""

import contextlib
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.models.ensemble import ACTIVATIONS, GaussianEnsemble
from mbrl_robot.core.planning.agent import MPCAgent
from mbrl_robot.core.planning.optimizers import (cem_update, CEMOptimizer,
                                                 RandomShootingOptimizer)
from mbrl_robot.core.planning.trajectory import project_action_sequences

BACKENDS = ('reference', 'fused', 'compiled', 'cuda_graph', 'compiled_cuda_graph')
# Where a compiled fp32 plan adds each layer's bias (``FoldedEnsemble.split_bias``), by A/B
# (docs/planner_speed.md, sessions 33 and 40). On CPU, in one ``baddbmm`` while a hidden
# layer's output fits in this many bytes (about a core's L2): the activation then runs as one
# flat loop of aligned vectors, and MKL accumulates onto the bias instead of zeroing its output
# first (Zen 4: 3-4% less time at mid, 0.77 MiB; even at the cpu size). Over it, after
# ``bmm`` in the activation's kernel, which saves the bias copy's pass over a larger output
# (the lecture size, 4.8 MiB: 6% less time on Zen 4, 5% on an AMX Xeon). Always after ``bmm``
# in fp32 on CUDA (unmeasured there); never in bf16 (6-7% slower at mid on CPU).
SPLIT_BIAS_MIN_BYTES = 1 << 20
PRECISIONS = ('fp32', 'tf32', 'bf16')


def native_bf16(device: torch.device) -> Optional[bool]:
    """Whether ``device`` computes bf16 matmuls natively (a CUDA GPU that supports bf16; a CPU
    with AVX512-BF16 or AMX); None where torch cannot tell. Without it bf16 is emulated:
    the same plans (within the precision check's tolerance) but slower than fp32."""
    if device.type == 'cuda':
        return bool(torch.cuda.is_bf16_supported())
    if device.type != 'cpu':
        return None
    probes = [getattr(torch.cpu, name, None)
              for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    if any(p is None for p in probes):
        return None
    return any(p() for p in probes)


def bounded_std(u: torch.Tensor, exp_neg_max: torch.Tensor,
                exp_min: torch.Tensor) -> torch.Tensor:
    """The standard deviation of a Gaussian head whose raw log-variance is ``u``, bounded as
    ``GaussianEnsemble`` bounds it, from ``e^-max_logvar`` and ``e^min_logvar``.

    The model bounds u softly: with b = max - softplus(max - u), logvar = min + softplus(b -
    min). Its exponential is exactly e^min + e^b, and e^b = 1 / (e^-max + e^-u): one exp, a
    division and a square root per element, where the bounds take three exps and two log1ps
    (the reference computes those; the plans agree to rounding). In fp32 whatever ``u``'s
    dtype (bf16 layers: as the softplus form, whose first step meets the fp32 bounds).
    """
    return torch.sqrt(exp_min + 1.0 / (exp_neg_max + torch.exp(-u.float())))


class FoldedEnsemble:
    """A ``GaussianEnsemble``'s members as plain tensors with both normalisers folded in.

    Input normalisation ``(x - mu) / sd`` becomes part of the first layer
    (``W' = W / sd``, ``b' = b - (mu / sd) W``) and the output one, ``delta = d * osd + omu``,
    part of the mean columns of the last layer; a deterministic step computes only those.

    ``tensors`` is a flat list ``[W_0, b_0, ..., W_mean, b_mean, W_out, b_out, exp(-max_lv),
    exp(min_lv), osd]`` (the last five, the mean and log-variance columns together, only for a
    probabilistic model); ``step`` takes that list as an
    argument so that compiled or captured code sees the same tensors, refreshed in place by
    :meth:`copy_from`.

    Args:
        model: the ensemble (all of its members; select the elites first).
        split_bias: each layer as ``bmm`` then ``+ bias``, the bias added in the
            activation's fused kernel, not one ``baddbmm``; the same arithmetic up to
            rounding. ``FusedMPCAgent`` sets it (``SPLIT_BIAS_MIN_BYTES``).
        matmul_dtype: the layers' weights and biases kept in this dtype (``torch.bfloat16``
            for bf16 autocast: cast once per model, not by autocast at every step; the same
            values), None: fp32. The log-variance bounds and the output scale stay fp32.
    """

    def __init__(self, model: GaussianEnsemble, split_bias: bool = False,
                 matmul_dtype: Optional[torch.dtype] = None):
        if not isinstance(model, GaussianEnsemble):
            raise TypeError(f'the fused planner needs a GaussianEnsemble, got '
                            f'{type(model).__name__}')
        self.obs_dim = model.obs_dim
        self.ensemble_size = model.ensemble_size
        self.num_hidden = model.num_layers
        self.probabilistic = model.probabilistic
        self.activation = ACTIVATIONS[model.activation]
        self.signature = self._signature(model)
        self._features = model.features if model.input_features else None
        self.tensors = self.fold(model)
        if matmul_dtype is not None:
            # The layers' weights and biases: all but a probabilistic model's last three
            # (the log-variance bounds' exponentials, osd).
            layers = 2 * self.num_hidden + (4 if self.probabilistic else 2)
            self.tensors = [t.to(matmul_dtype) if i < layers else t
                            for i, t in enumerate(self.tensors)]
        # False: each layer one ``baddbmm`` (one kernel, bias included). True: ``bmm`` then
        # ``+ bias``, which torch.compile adds in the next pointwise kernel (the activation)
        # instead of first copying the broadcast bias into every output row: for compiled fp32
        # plans on CUDA, and on CPU over ``SPLIT_BIAS_MIN_BYTES``.
        self.split_bias = bool(split_bias)

    @staticmethod
    def _signature(model: GaussianEnsemble) -> Tuple:
        return (model.obs_dim, model.act_dim, model.ensemble_size, model.num_layers,
                model.hidden_size, model.activation, model.probabilistic,
                tuple(model.input_features), str(model.device))

    @staticmethod
    @torch.no_grad()
    def fold(model: GaussianEnsemble) -> List[torch.Tensor]:
        """The flat tensor list of ``model`` (new tensors; see the class)."""
        s = model.obs_dim
        mu = model.input_normalizer.mean.to(model.device)
        sd = model.input_normalizer.std.to(model.device)
        omu = model.output_normalizer.mean.to(model.device)
        osd = model.output_normalizer.std.to(model.device)
        out: List[torch.Tensor] = []
        layers = list(model.layers)
        for i, layer in enumerate(layers[:-1]):
            w, b = layer.weight.detach(), layer.bias.detach()
            if i == 0:
                b = b - torch.einsum('i,kio->ko', mu / sd, w).unsqueeze(1)
                w = w / sd.view(1, -1, 1)
            out += [w.contiguous().clone(), b.contiguous().clone()]
        w, b = layers[-1].weight.detach(), layers[-1].bias.detach()
        if len(layers) == 1:  # no hidden layer: fold the input normaliser here too
            b = b - torch.einsum('i,kio->ko', mu / sd, w).unsqueeze(1)
            w = w / sd.view(1, -1, 1)
        w_mean, b_mean = w[..., :s] * osd, b[..., :s] * osd + omu
        out += [w_mean.contiguous(), b_mean.contiguous()]
        if model.probabilistic:
            # Mean and log-variance columns together: a sampling step is one matmul.
            # The bounds as the variance's closed form (``step``) uses them.
            out += [torch.cat([w_mean, w[..., s:]], -1).contiguous(),
                    torch.cat([b_mean, b[..., s:]], -1).contiguous(),
                    torch.exp(-model.max_logvar.detach()), torch.exp(model.min_logvar.detach()),
                    osd.clone()]
        return out

    def copy_from(self, model: GaussianEnsemble) -> bool:
        """Refresh the tensors in place from ``model``; False (nothing copied) if its shape or
        layout differs from the one folded first."""
        if self._signature(model) != self.signature:
            return False
        with torch.no_grad():
            for dst, src in zip(self.tensors, self.fold(model)):
                dst.copy_(src)  # to the matmul dtype as .to() rounds (nearest even)
        return True

    def _affine(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(K, B, I) @ (K, I, O) + (K, 1, O), as :attr:`split_bias` says."""
        return torch.bmm(h, w) + b if self.split_bias else torch.baddbmm(b, h, w)

    def step(self, p: Sequence[torch.Tensor], obs: torch.Tensor, act: torch.Tensor,
             noise: Optional[torch.Tensor]) -> torch.Tensor:
        """(K, B, S), (K, B, A) -> (K, B, S) next states; ``noise`` (K, B, S) samples the
        Gaussian heads (None: the members' means)."""
        parts = [obs, act]
        if self._features is not None:
            parts.append(self._features(obs))
        h = torch.cat(parts, dim=-1)
        for i in range(self.num_hidden):
            h = self.activation(self._affine(h, p[2 * i], p[2 * i + 1]))
        j = 2 * self.num_hidden
        if noise is None or not self.probabilistic:
            delta = self._affine(h, p[j], p[j + 1])
        else:
            s = self.obs_dim
            exp_neg_max, exp_min, osd = p[j + 4], p[j + 5], p[j + 6]
            out = self._affine(h, p[j + 2], p[j + 3])
            delta, lv = out[..., :s], out[..., s:]
            delta = delta + noise * bounded_std(lv, exp_neg_max, exp_min) * osd
        return obs + delta.to(obs.dtype)


class FusedMPCAgent(MPCAgent):
    """``MPCAgent`` whose plan is one static-shape function (see the module docstring).

    Same arguments and behaviour as :class:`MPCAgent` (same generators: the same seed gives the
    same plan as the reference, up to rounding), plus:

    Args:
        backend: 'fused' (eager), 'compiled' (``torch.compile``), 'cuda_graph' or
            'compiled_cuda_graph' (CUDA only).
        precision: 'fp32'; 'tf32' (CUDA matmuls in TF32, set process-wide through
            ``torch.backends.cuda.matmul.allow_tf32``); 'bf16' (the members' matmuls under
            bf16 autocast, states and rewards in fp32).
        **kwargs: see :class:`MPCAgent`.
    """

    cpp_wrapper = True  # CPU 'compiled': inductor's C++ wrapper (False: its Python one)
    draw_in_graph = True  # CUDA graphs: the noise draws captured in the graph (False: host)

    def __init__(self, *args, backend: str = 'fused', precision: str = 'fp32', **kwargs):
        super().__init__(*args, **kwargs)  # sets self.backend = 'reference'
        if backend not in BACKENDS[1:]:
            raise ValueError(f'FusedMPCAgent backend must be one of {BACKENDS[1:]}, '
                             f'got {backend!r}')
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        if 'cuda_graph' in backend and self.device.type != 'cuda':
            raise ValueError(f'backend {backend} needs a CUDA device, the model is on '
                             f'{self.device}')
        if precision == 'tf32' and self.device.type != 'cuda':
            raise ValueError('precision tf32 exists on CUDA devices only')
        opt = self.optimizer
        if isinstance(opt, CEMOptimizer):
            if opt.noise_beta > 0.0 or opt.n_keep > 0:
                raise ValueError("iCEM's coloured noise and kept elites are not fused: use "
                                 "backend 'reference' for icem")
        elif isinstance(opt, RandomShootingOptimizer):
            if opt.include_x0:
                raise ValueError('random shooting with include_x0 is not fused')
        else:
            raise TypeError(f'no fused plan for {type(opt).__name__}')
        self.backend = backend
        self.precision = precision
        if precision == 'tf32':
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._build()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        ev = self.evaluator
        compiled = self.backend in ('compiled', 'compiled_cuda_graph')
        bf16 = self.precision == 'bf16'
        self.folded = FoldedEnsemble(ev._rollout_model,
                                     matmul_dtype=torch.bfloat16 if bf16 else None)
        k, h, a, s = (self.folded.ensemble_size, self.horizon, self.action_dim,
                      self.folded.obs_dim)
        opt = self.optimizer
        cem = isinstance(opt, CEMOptimizer)
        self._iterations = opt.iterations if cem else 1
        n = opt.population_size
        p = ev.particles
        self._rows = n * p
        self._b = -(-self._rows // k)
        # A hidden layer's output: k members x their rows (each member's share of the
        # particles, or every candidate under ``mean``; plus the centre row) x the width.
        step_rows = (n if ev.propagation == 'mean' else self._b) + 1
        self.folded.split_bias = compiled and not bf16 and (
            self.device.type == 'cuda'
            or 4 * k * step_rows * ev._rollout_model.hidden_size > SPLIT_BIAS_MIN_BYTES)
        sampling = not ev.deterministic and self.folded.probabilistic
        dev = self.device
        self._noise = torch.zeros(self._iterations, n, h, a, device=dev)
        self._head = (torch.zeros(self._iterations, h, k, self._b, s, device=dev)
                      if sampling else None)
        self._perms = (torch.zeros(self._iterations, h, self._b * k, dtype=torch.long,
                                   device=dev) if ev.propagation == 'ts_1' else None)
        self._inv = torch.zeros_like(self._perms) if self._perms is not None else None
        self._positions = (torch.arange(self._b * k, device=dev) if self._perms is not None
                           else None)
        self._obs_in = torch.zeros(s, device=dev)
        self._prev_in = torch.zeros(a, device=dev)
        self._warm_in = torch.zeros(h, a, device=dev)
        fn = self._core
        if compiled:
            # On CPU, inductor's C++ wrapper launches the plan's ~300 kernels without a Python
            # call each (session 33, AMX CPU, 1 thread: 1.02-1.11x at the cpu size, 1.00x at mid;
            # the same plans; a cold compile takes ~5 s more).
            options = {'cpp_wrapper': True} if dev.type == 'cpu' and self.cpp_wrapper else None
            fn = torch.compile(fn, dynamic=False, options=options)
        self._fn = fn
        self._graph = None
        self._graph_out = None
        # The draws go into the graph unless a permutation is drawn (randperm's capture is not
        # relied upon).
        self._graph_draws = ('cuda_graph' in self.backend and self.draw_in_graph
                             and self._perms is None)

    def set_model(self, model) -> None:
        """Hot-swap the model: its weights are copied into the planner's tensors (no recompile,
        no re-capture); a model of another layout rebuilds the plan function once."""
        super().set_model(model)
        if not self.folded.copy_from(self.evaluator._rollout_model):
            self._build()
            self.last_plan_info = {'rebuilt': True}

    def _draw(self) -> None:
        """Fill the noise buffers from the generators, in the reference's order, in place
        (``x.normal_(generator=g)`` draws what ``torch.randn(x.shape, generator=g)`` draws)."""
        opt, ev = self.optimizer, self.evaluator
        h = self._noise.shape[2]
        uniform = (isinstance(opt, RandomShootingOptimizer)
                   or getattr(opt, 'bound_mode', 'clip') == 'truncnorm')
        for i in range(self._iterations):
            if uniform:
                self._noise[i].uniform_(generator=opt.generator)
            else:
                self._noise[i].normal_(generator=opt.generator)
            if self._perms is None and self._head is None:
                continue
            for t in range(h):
                if self._perms is not None:
                    perm = self._perms[i, t]
                    torch.randperm(perm.shape[0], generator=ev.generator, out=perm)
                    self._inv[i, t].scatter_(0, perm, self._positions)  # argsort(perm)
                if self._head is not None:
                    self._head[i, t].normal_(generator=ev.generator)

    # ------------------------------------------------------------------ the plan function
    def _project(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return project_action_sequences(x, prev, self.max_delta, self.lower, self.upper)

    def _rollout(self, p: Sequence[torch.Tensor], obs: torch.Tensor, x: torch.Tensor,
                 center: torch.Tensor, head: Optional[torch.Tensor],
                 perms: Optional[torch.Tensor], inv: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (N, P) of the candidates ``x`` (N, H, A) and the (H, K, S) trajectory of
        ``center`` (H, A) through each member, in one batched pass."""
        ev, fe = self.evaluator, self.folded
        k, s = fe.ensemble_size, fe.obs_dim
        n, h, a = x.shape
        step = fe.step
        autocast = self.precision == 'bf16'
        center_k = center.unsqueeze(1).expand(h, k, a).unsqueeze(2)  # (H, K, 1, A)
        zeros = obs.new_zeros(k, 1, s)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            if ev.propagation == 'mean':
                acts = x.transpose(0, 1)  # (H, N, A)
                xs_c, xs_p = obs.expand(n, s), obs.expand(k, 1, s)
                cand, path = [], []
                for t in range(h):
                    inp = torch.cat([xs_c.expand(k, n, s), xs_p], 1)
                    act = torch.cat([acts[t].expand(k, n, a), center_k[t]], 1)
                    out = step(p, inp, act, None)
                    xs_c, xs_p = out[:, :n].mean(0), out[:, n:]
                    cand.append(xs_c)
                    path.append(xs_p[:, 0])
                ret = ev._returns(torch.stack(cand), acts).unsqueeze(1)
                return ret, torch.stack(path)
            b, r = self._b, self._rows
            rp = b * k
            rows = x.repeat_interleave(ev.particles, dim=0) if ev.particles > 1 else x
            if rp > r:
                rows = torch.cat([rows, rows.new_zeros(rp - r, h, a)], 0)
            cand, path = [], []
            if ev.propagation == 'ts_inf':
                acts = rows.view(b, k, h, a).permute(2, 1, 0, 3)  # (H, K, B, A)
                xs = obs.expand(k, b + 1, s)
                for t in range(h):
                    act = torch.cat([acts[t], center_k[t]], 1)
                    nz = None if head is None else torch.cat([head[t], zeros], 1)
                    xs = step(p, xs, act, nz)
                    cand.append(xs[:, :b])
                    path.append(xs[:, b])
                ret = ev._returns(torch.stack(cand), acts).transpose(0, 1).reshape(rp)
            else:  # ts_1
                acts = rows.transpose(0, 1)  # (H, Rp, A)
                xs, xp = obs.expand(rp, s), obs.expand(k, 1, s)
                for t in range(h):
                    perm = perms[t]
                    inp = torch.cat([xs[perm].view(k, b, s), xp], 1)
                    act = torch.cat([acts[t][perm].view(k, b, a), center_k[t]], 1)
                    nz = None if head is None else torch.cat([head[t], zeros], 1)
                    out = step(p, inp, act, nz)
                    xs = out[:, :b].reshape(rp, s)[inv[t]]
                    xp = out[:, b:]
                    cand.append(xs)
                    path.append(xp[:, 0])
                ret = ev._returns(torch.stack(cand), acts)
            return ret[:r].view(n, ev.particles), torch.stack(path)

    def _score(self, ret: torch.Tensor) -> torch.Tensor:
        # The reference's score; a NaN (diverged model) never wins, as in optimizers._evaluate.
        return torch.nan_to_num(self.evaluator.score(ret), nan=-math.inf)

    def _core(self, obs: torch.Tensor, prev: torch.Tensor, warm: torch.Tensor,
              noise: torch.Tensor, head: Optional[torch.Tensor], perms: Optional[torch.Tensor],
              inv: Optional[torch.Tensor], *p: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The whole plan: (plan (H, A), next warm start (H, A), best score (), mean states
        (H+1, S), std states (H+1, S))."""
        opt = self.optimizer
        lower, upper = self.lower, self.upper
        mean = torch.maximum(torch.minimum(warm, upper), lower)
        last = self._iterations - 1
        path = None
        if isinstance(opt, RandomShootingOptimizer):
            x = self._project(lower + noise[0] * (upper - lower), prev)
            center = self._project(mean.unsqueeze(0), prev)[0]
            ret, path = self._rollout(p, obs, x, center, None if head is None else head[0],
                                      None if perms is None else perms[0],
                                      None if inv is None else inv[0])
            values = self._score(ret)
            i = torch.argmax(values)
            best, best_value = x[i], values[i]
            mean = best
            plan = best
        else:
            # In normalised action units, as the reference: times half the range per dimension.
            half_range = (upper - lower) / 2.0
            std = (opt.initial_std * half_range).expand_as(mean)
            min_std = opt.min_std * half_range
            best, best_value = mean, torch.full((), -math.inf, device=mean.device)
            for it in range(self._iterations):
                if opt.bound_mode == 'clip':
                    x = torch.maximum(torch.minimum(mean + std * noise[it], upper), lower)
                else:
                    sd = std.clamp_min(1e-6)
                    lo = torch.special.ndtr((lower - mean) / sd)
                    hi = torch.special.ndtr((upper - mean) / sd)
                    u = (lo + noise[it] * (hi - lo)).clamp(1e-6, 1.0 - 1e-6)
                    x = torch.maximum(torch.minimum(mean + sd * torch.special.ndtri(u), upper),
                                      lower)
                x = self._project(x, prev)
                center = self._project(mean.unsqueeze(0), prev)[0]
                ret, traj = self._rollout(p, obs, x, center,
                                          None if head is None else head[it],
                                          None if perms is None else perms[it],
                                          None if inv is None else inv[it])
                if it == last:
                    path = traj
                values = self._score(ret)
                top_values, top_idx = torch.topk(values, opt.elite_count)
                elites = x[top_idx]
                better = top_values[0] > best_value
                best = torch.where(better, elites[0], best)
                best_value = torch.where(better, top_values[0], best_value)
                mean, std = cem_update(elites, mean, std, opt.alpha, min_std)
            mean = self._project(mean.unsqueeze(0), prev)[0]
            preferred = mean if opt.return_mean else best
            plan = self._project(preferred.unsqueeze(0), prev)[0]
        middle = 0.5 * (lower + upper)
        warm_next = torch.cat([mean[1:], middle.view(1, -1)])
        members = torch.cat([obs.expand(1, path.shape[1], obs.shape[0]), path])  # (H+1, K, S)
        return (plan, warm_next, best_value, members.mean(dim=1),
                members.std(dim=1, unbiased=False))

    def warmup(self) -> float:
        """Plan once from a zero state and leave no trace (generators, warm start, last action
        and info restored): compiles a ``compiled`` backend, captures a CUDA graph. Returns the
        seconds it took."""
        t0 = time.perf_counter()
        saved = (self.trajectory_optimizer.previous_solution.clone(), self._last_action.clone(),
                 self.last_plan_info)
        with self._generators_kept():
            self.plan(np.zeros(self._obs_in.shape[0], dtype=np.float32))
        self.trajectory_optimizer.previous_solution = saved[0]
        self._last_action, self.last_plan_info = saved[1], saved[2]
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def _generators_kept(self):
        """The optimizer's and the evaluator's generators back where they were on exit."""
        generators = (self.optimizer.generator, self.evaluator.generator)
        saved = [g.get_state() for g in generators]
        try:
            yield generators
        finally:
            for g, state in zip(generators, saved):
                g.set_state(state)

    # ------------------------------------------------------------------ running it
    def _inputs(self) -> Tuple[Any, ...]:
        return (self._obs_in, self._prev_in, self._warm_in, self._noise, self._head,
                self._perms, self._inv, *self.folded.tensors)

    def _run(self) -> Tuple[torch.Tensor, ...]:
        if not self._graph_draws:
            self._draw()
        if 'cuda_graph' not in self.backend:
            with torch.inference_mode():
                return self._fn(*self._inputs())
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._graph_out

    def _graph_step(self) -> Tuple[torch.Tensor, ...]:
        """What the graph holds: the draws (``_graph_draws``), then the plan function."""
        if self._graph_draws:
            self._draw()
        return self._fn(*self._inputs())

    def _capture(self) -> None:
        """Warm up on a side stream, then capture one plan as a CUDA graph. The warm-up's
        draws are undone (the generators restored), so the first replay draws what an eager
        plan would."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._generators_kept() as generators:
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):
                    self._graph_step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self._graph_draws:
            for g in generators:
                graph.register_generator_state(g)
        with torch.cuda.graph(graph), torch.inference_mode():
            out = self._graph_step()
        self._graph, self._graph_out = graph, out

    def plan(self, obs: Union[np.ndarray, torch.Tensor],
             prev_action: Optional[Union[np.ndarray, torch.Tensor]] = None) -> np.ndarray:
        """See :meth:`MPCAgent.plan` (statistics: see the module docstring)."""
        t0 = time.perf_counter()
        o = self._obs(obs)
        if prev_action is not None:
            self.set_last_action(prev_action)
        rebuilt = self.last_plan_info.get('rebuilt', False)
        with torch.no_grad():
            self._obs_in.copy_(o)
            self._prev_in.copy_(self._last_action)
            self._warm_in.copy_(self.trajectory_optimizer.previous_solution)
            plan, warm, best_value, mean_states, std_states = self._run()
            self.trajectory_optimizer.previous_solution = warm.clone()
            plan_np = plan.detach().float().cpu().numpy().astype(np.float32)
            info: Dict[str, Any] = {'predicted_return': float(best_value)}
            if self.plan_stats:
                mean_np = mean_states.float().cpu().numpy()
                std_np = std_states.float().cpu().numpy()
                info['disagreement'] = float(std_np[1].mean())
                info['disagreement_horizon'] = float(std_np[1:].mean())
                info['mean_states'] = mean_np
                info['std_states'] = std_np
        if rebuilt:
            info['rebuilt'] = True
        info['plan_time_ms'] = 1e3 * (time.perf_counter() - t0)
        self.last_plan_info = info
        return plan_np
