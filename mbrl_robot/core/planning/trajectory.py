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
"""Batched evaluation of candidate action sequences through an ensemble model.

All candidates x particles x members run as one batched program per time step: rollout
``r = n * P + p`` (candidate ``n``, particle ``p``) sits in row ``r % K`` of the model's
(K, B, S) input, so each of the K members sees a contiguous batch.

Propagation (Chua et al. 2018, PETS):
    ``ts_inf``: each particle keeps its member for the whole horizon (member ``r % K``).
    ``ts_1``: particles are re-assigned to members by a fresh random permutation every step.
    ``mean``: deterministic ensemble-mean propagation: every candidate runs through all K members
        and the next state is their average (one particle; the lecture's CEM).

Only the model's elites take part (``elite_indices``, the members with the best validation
score; as in PETS and mbrl-lib): particles are spread over the E elites and ``mean`` averages the
elites; K above then reads E. An optional ``termination_fn(next_obs, act) -> bool`` ends
rollouts: rewards after the step on which a rollout terminates are not counted (as in
mbrl-lib's ``ModelEnv.evaluate_action_sequences``).

Also here: the action-sequence constraints the agent applies (box and acceleration bound) and a
pure joint-limit clamp for the controller.
"""

import math
from typing import Optional, Tuple, Union

import torch

from mbrl_robot.core.planning.optimizers import (ObjectiveFn, OptimizationResult, Optimizer,
                                                 ProjectFn)
from mbrl_robot.core.safety import JointLimits
from mbrl_robot.core.tasks.push import JOINT_POS
from mbrl_robot.core.types import DynamicsModel, elite_model, RewardFnType, TerminationFnType

PROPAGATIONS = ('ts_inf', 'ts_1', 'mean')


def _check_model(model: DynamicsModel) -> int:
    if not callable(getattr(model, 'sample_next', None)):
        raise TypeError(f'model {type(model).__name__} has no sample_next(obs, act, ...)')
    k = getattr(model, 'ensemble_size', None)
    if not isinstance(k, int) or k < 1:
        raise TypeError(f'model.ensemble_size must be a positive int, got {k!r}')
    return k


class TrajectoryEvaluator:
    """Scores candidate action sequences with an ensemble model and a reward function.

    Score of a candidate = mean over particles of the return minus ``pessimism`` times the std
    over particles (population std), minus the joint-limit penalty. The return of a rollout is
    ``sum_t r_t`` with the last step's reward weighted by ``terminal_weight``; with a
    ``termination_fn``, the sum (and the joint-limit penalty) stops after the step on which the
    rollout terminates. Rollouts use only the model's elites (see the module docstring).

    Args:
        model: ensemble implementing ``types.DynamicsModel``.
        reward_fn: ``reward_fn(next_obs (..., S), act (..., A)) -> (...)``.
        particles: P rollouts per candidate (must be 1 for ``mean``).
        propagation: 'ts_inf', 'ts_1' or 'mean'.
        pessimism: lambda >= 0 of the score.
        terminal_weight: weight of the last step's reward (1.0 = plain sum).
        deterministic: use the members' means instead of sampling their Gaussian heads
            (always true for ``mean``).
        joint_limits: optional :class:`~mbrl_robot.core.safety.JointLimits` (positions only);
            rollouts leaving them are penalised.
        joint_pos_start: column of the state where the J joint positions start (q is
            ``state[joint_pos_start:joint_pos_start + J]``); default: the push state's.
        joint_limit_penalty: penalty = this * (1 + total violation in rad) for a violating rollout.
        generator: random generator on the model's device (sampling and TS-1 permutations).
        termination_fn: optional ``termination_fn(next_obs (..., S), act (..., A)) -> bool
            (...)``; None: rollouts never terminate.
    """

    def __init__(self, model: DynamicsModel, reward_fn: RewardFnType, particles: int = 1,
                 propagation: str = 'ts_inf', pessimism: float = 0.0,
                 terminal_weight: float = 1.0, deterministic: bool = False,
                 joint_limits: Optional[JointLimits] = None, joint_limit_penalty: float = 1e3,
                 generator: Optional[torch.Generator] = None,
                 joint_pos_start: int = JOINT_POS.start,
                 termination_fn: Optional[TerminationFnType] = None):
        if propagation not in PROPAGATIONS:
            raise ValueError(f'propagation must be one of {PROPAGATIONS}, got {propagation!r}')
        if int(particles) < 1:
            raise ValueError(f'particles must be >= 1, got {particles}')
        if propagation == 'mean' and int(particles) != 1:
            raise ValueError(f"propagation 'mean' is deterministic: particles must be 1, "
                             f'got {particles}')
        if not (pessimism >= 0.0 and math.isfinite(pessimism)):
            raise ValueError(f'pessimism must be finite and >= 0, got {pessimism}')
        if not math.isfinite(terminal_weight):
            raise ValueError(f'terminal_weight must be finite, got {terminal_weight}')
        if int(joint_pos_start) < 0:
            raise ValueError(f'joint_pos_start must be >= 0, got {joint_pos_start}')
        if not joint_limit_penalty >= 0.0:
            raise ValueError(f'joint_limit_penalty must be >= 0, got {joint_limit_penalty}')
        if not callable(reward_fn):
            raise TypeError('reward_fn must be callable')
        if termination_fn is not None and not callable(termination_fn):
            raise TypeError('termination_fn must be callable or None')
        self.termination_fn = termination_fn
        self.particles = int(particles)
        self.propagation = propagation
        self.pessimism = float(pessimism)
        self.terminal_weight = float(terminal_weight)
        self.deterministic = bool(deterministic) or propagation == 'mean'
        self.joint_limits = joint_limits
        self.joint_pos_start = int(joint_pos_start)
        self.joint_limit_penalty = float(joint_limit_penalty)
        self.reward_fn = reward_fn
        self.set_model(model)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(0)
        self.generator = generator

    def set_model(self, model: DynamicsModel) -> None:
        """Swap the model (same state/action layout); takes effect on the next evaluation.

        Rollouts use ``elite_model(model)``: its elites only; ``ensemble_size`` is their number.
        """
        _check_model(model)
        self.model = model
        self._rollout_model = elite_model(model)
        self.ensemble_size = _check_model(self._rollout_model)
        self.device = torch.device(getattr(model, 'device', 'cpu'))
        self._limits_t = None
        if self.joint_limits is not None:
            self._limits_t = (torch.as_tensor(self.joint_limits.lower, dtype=torch.float32,
                                              device=self.device),
                              torch.as_tensor(self.joint_limits.upper, dtype=torch.float32,
                                              device=self.device))

    def _check_inputs(self, obs: torch.Tensor,
                      actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if obs.dim() != 1:
            raise ValueError(f'obs must have shape (S,), got {tuple(obs.shape)}')
        if actions.dim() != 3 or min(actions.shape) < 1:
            raise ValueError(f'actions must have shape (N, H, A), got {tuple(actions.shape)}')
        if self.joint_limits is not None:
            j = self.joint_pos_start + self.joint_limits.lower.size
            if j > obs.shape[0]:
                raise ValueError(f'joint limits need state dim >= {j}, got {obs.shape[0]}')
        return obs, actions

    def _penalty(self, states: torch.Tensor,
                 ended: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(H, ..., S) -> (...) joint-limit penalty per rollout, ``ended`` steps left out."""
        lower, upper = self._limits_t
        q0 = self.joint_pos_start
        q = states[..., q0:q0 + lower.shape[0]]
        viol = (torch.relu(q - upper) + torch.relu(lower - q)).sum(dim=-1)
        if ended is not None:
            viol = viol.masked_fill(ended, 0.0)
        viol = viol.sum(dim=0)
        return self.joint_limit_penalty * ((viol > 0).float() + viol)

    def _returns(self, states: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(H, ..., S), (H, ..., A) -> (...) returns (minus the joint-limit penalty)."""
        rewards = self.reward_fn(states, acts)
        if rewards.shape != states.shape[:-1]:
            raise ValueError(f'reward_fn returned shape {tuple(rewards.shape)}, expected '
                             f'{tuple(states.shape[:-1])}')
        if self.termination_fn is not None:
            done = torch.as_tensor(self.termination_fn(states, acts), device=rewards.device)
            if done.shape != rewards.shape:
                raise ValueError(f'termination_fn returned shape {tuple(done.shape)}, expected '
                                 f'{tuple(rewards.shape)}')
            # Step t counts while no earlier step terminated (the terminating step counts).
            ended = torch.cumsum(done.to(torch.int32), dim=0) - done.to(torch.int32) > 0
            rewards = rewards.masked_fill(ended, 0.0)
        else:
            ended = None
        ret = rewards.sum(dim=0)
        if self.terminal_weight != 1.0:
            ret = ret + (self.terminal_weight - 1.0) * rewards[-1]
        if self._limits_t is not None:
            ret = ret - self._penalty(states, ended)
        return ret

    def rollout_returns(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Returns of all particles of all candidates.

        Args:
            obs: (S,) current state.
            actions: (N, H, A) candidate sequences.

        Returns:
            (N, P) returns (P = 1 for ``mean``).
        """
        obs, actions = self._check_inputs(obs, actions)
        n, h, a = actions.shape
        s = obs.shape[0]
        k = self.ensemble_size
        g = self.generator
        model = self._rollout_model
        with torch.inference_mode():
            if self.propagation == 'mean':
                acts_t = actions.transpose(0, 1).contiguous()  # (H, N, A)
                states = torch.empty(h, n, s, device=self.device)
                x = obs.expand(n, s)
                for t in range(h):
                    nxt = model.sample_next(x.expand(k, n, s), acts_t[t].expand(k, n, a),
                                            deterministic=True, generator=g)
                    states[t] = nxt.mean(dim=0)
                    x = states[t]
                return self._returns(states, acts_t).unsqueeze(1)
            p = self.particles
            r = n * p
            b = -(-r // k)
            rp = b * k
            acts = actions.repeat_interleave(p, dim=0) if p > 1 else actions
            if rp > r:
                acts = torch.cat([acts, acts.new_zeros(rp - r, h, a)], 0)
            if self.propagation == 'ts_inf':
                # rollout r = b_idx * K + k_idx -> row k_idx = r % K, column b_idx.
                acts_kb = acts.view(b, k, h, a).permute(2, 1, 0, 3).contiguous()  # (H, K, B, A)
                states = torch.empty(h, k, b, s, device=self.device)
                x = obs.expand(k, b, s)
                for t in range(h):
                    states[t] = model.sample_next(x, acts_kb[t],
                                                  deterministic=self.deterministic,
                                                  generator=g)
                    x = states[t]
                ret = self._returns(states, acts_kb)  # (K, B)
                ret = ret.transpose(0, 1).reshape(rp)
            else:
                acts_t = acts.transpose(0, 1).contiguous()  # (H, Rp, A)
                states = torch.empty(h, rp, s, device=self.device)
                x = obs.expand(rp, s)
                for t in range(h):
                    perm = torch.randperm(rp, generator=g, device=self.device)
                    out = model.sample_next(x[perm].view(k, b, s),
                                            acts_t[t][perm].view(k, b, a),
                                            deterministic=self.deterministic, generator=g)
                    states[t][perm] = out.reshape(rp, s)
                    x = states[t]
                ret = self._returns(states, acts_t)
            return ret[:r].view(n, p)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Score candidates: mean return - pessimism * std over particles.

        Args:
            obs: (S,) current state.
            actions: (N, H, A) candidate sequences.

        Returns:
            (N,) scores, higher is better.
        """
        return self.score(self.rollout_returns(obs, actions))

    def score(self, ret: torch.Tensor) -> torch.Tensor:
        """(N, P) returns -> (N,) scores: mean - pessimism * std over particles."""
        score = ret.mean(dim=1)
        if self.pessimism > 0.0 and ret.shape[1] > 1:
            score = score - self.pessimism * ret.std(dim=1, unbiased=False)
        return score

    def rollout_plan(self, obs: torch.Tensor,
                     actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predicted state trajectory of one plan and the ensemble spread along it.

        Each elite member rolls the plan out on its own with its mean prediction (no sampling), so
        the std is the elites' disagreement (epistemic uncertainty).

        Args:
            obs: (S,) current state.
            actions: (H, A) the plan.

        Returns:
            (mean_states (H+1, S), std_states (H+1, S)); row 0 is ``obs`` with zero std.
        """
        obs, acts = self._check_inputs(obs, torch.as_tensor(actions).unsqueeze(0))
        acts = acts[0]
        h, a = acts.shape
        k = self.ensemble_size
        with torch.inference_mode():
            traj = torch.empty(h + 1, k, 1, obs.shape[0], device=self.device)
            traj[0] = obs
            for t in range(h):
                traj[t + 1] = self._rollout_model.sample_next(
                    traj[t], acts[t].expand(k, 1, a), deterministic=True,
                    generator=self.generator)
            traj = traj[:, :, 0]
            return traj.mean(dim=1), traj.std(dim=1, unbiased=False)


class TrajectoryOptimizer:
    """Owns the (H, A) solution between calls: the warm start and its shift (as mbrl-lib's).

    Each ``optimize`` starts the optimizer from the previous call's final mean shifted by one
    step, the last step filled with the middle of the optimizer's bounds (zeros for [-1, 1]);
    ``reset`` starts again from the middle.

    Args:
        optimizer: the sampling optimizer; its (A,) bounds apply to every step.
        horizon: H >= 1.
    """

    def __init__(self, optimizer: Optimizer, horizon: int):
        if int(horizon) < 1:
            raise ValueError(f'horizon must be >= 1, got {horizon}')
        self.optimizer = optimizer
        self.horizon = int(horizon)
        self.action_dim = optimizer.action_dim
        self._middle = (0.5 * (optimizer.lower + optimizer.upper)).reshape(1, self.action_dim)
        self.reset()

    def reset(self) -> None:
        """Forget the warm start and anything the optimizer carries between calls."""
        self.previous_solution = self._middle.expand(self.horizon, self.action_dim).clone()
        self.optimizer.reset()

    def optimize(self, obj_fun: ObjectiveFn,
                 project: Optional[ProjectFn] = None) -> OptimizationResult:
        """Optimise from the warm start, then shift the final mean into the next warm start.

        Args:
            obj_fun: (N, H, A) -> (N,) scores, higher is better.
            project: optional map of (N, H, A) samples onto the feasible set.

        Returns:
            The optimizer's result, (H, A) tensors.
        """
        result = self.optimizer.optimize(obj_fun, self.previous_solution, project)
        mean = result.mean
        self.previous_solution = torch.cat([mean[1:], self._middle.to(mean)])
        return result


def project_action_sequences(x: torch.Tensor, prev_action: Optional[torch.Tensor],
                             max_delta: Optional[float],
                             lower: Union[float, torch.Tensor] = -1.0,
                             upper: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """Clip sequences to the box and to ``|a_t - a_{t-1}| <= max_delta`` over the horizon.

    Sequential clipping: ``a_t <- clip(a_t, a_{t-1} - d, a_{t-1} + d)`` then to the box. Since
    ``a_{t-1}`` is inside the box the two intervals intersect, so the result satisfies both.

    Args:
        x: (N, H, A) sequences.
        prev_action: (A,) ``a_{-1}``, the last executed action (in the box); None = no bound on
            the first step.
        max_delta: the per-step bound d > 0, or None for the box only.
        lower: box lower bound, scalar or (A,) tensor.
        upper: box upper bound, scalar or (A,) tensor.

    Returns:
        (N, H, A) projected sequences (a new tensor).
    """
    if isinstance(lower, torch.Tensor) or isinstance(upper, torch.Tensor):
        lower = torch.as_tensor(lower).to(x)
        upper = torch.as_tensor(upper).to(x)
    x = x.clamp(lower, upper)
    if max_delta is None:
        return x
    # Functional (no in-place writes into views), so torch.compile traces it as one graph.
    prev = None if prev_action is None else prev_action.to(x).clamp(lower, upper).expand(
        x.shape[0], x.shape[2])
    steps = []
    for t in range(x.shape[1]):
        step = x[:, t] if prev is None else torch.clamp(x[:, t], prev - max_delta,
                                                        prev + max_delta)
        steps.append(step)
        prev = step
    return torch.stack(steps, dim=1)
