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
"""Model-predictive control agent: re-plan every step, execute the first action.

The lecture's planners are configurations of ``MPCAgent``:
    random shooting MPC = ``RandomShootingOptimizer``, one particle;
    MPC + CEM = ``CEMOptimizer`` with deterministic ensemble-mean propagation (``mean``);
    PETS = ``CEMOptimizer`` with P particles, ``ts_inf``/``ts_1`` and optional pessimism.
"""

import math
import time
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from mbrl_robot.core.planning.optimizers import Optimizer
from mbrl_robot.core.planning.trajectory import (project_action_sequences, TrajectoryEvaluator,
                                                 TrajectoryOptimizer)
from mbrl_robot.core.safety import JointLimits
from mbrl_robot.core.tasks.push import JOINT_POS
from mbrl_robot.core.types import DynamicsModel, RewardFnType, TerminationFnType


class MPCAgent:
    """Plans (H, A) action sequences within the optimizer's bounds with a learned ensemble.

    Warm start: each plan starts from the previous call's final mean shifted by one step, the
    last step filled with the middle of the bounds (zeros for [-1, 1]). Every returned action
    satisfies the optimizer's box ``[lower, upper]`` and, when ``max_delta`` is set,
    ``|a_t - a_{t-1}| <= max_delta`` over the whole horizon, where ``a_{-1}`` is the last
    executed action (zeros, clipped to the box, after ``reset``; see ``set_last_action``).

    Args:
        model: ensemble implementing ``types.DynamicsModel``; rollouts use its elites.
        reward_fn: ``reward_fn(next_obs (..., S), act (..., A)) -> (...)``.
        optimizer: an ``Optimizer`` over (H, A) on the model's device; its ``lower``/``upper``
            are the action bounds.
        horizon: H >= 1.
        action_dim: A.
        particles: P rollouts per candidate.
        propagation: 'ts_inf', 'ts_1' or 'mean' (see ``trajectory``).
        pessimism: lambda >= 0: score = mean return - lambda * std over particles.
        terminal_weight: weight of the last step's reward.
        deterministic: members' means instead of samples from their Gaussian heads.
        max_delta: acceleration bound per step on the normalised action, or None.
        joint_limits: optional ``JointLimits`` penalised along predicted trajectories.
        joint_limit_penalty: see ``TrajectoryEvaluator``.
        joint_pos_start: where the joint positions start in the state (``TrajectoryEvaluator``).
        plan_stats: also roll the chosen plan through every member for ``last_plan_info``.
        seed: seed of the evaluator's generator (the optimizer has its own).
        termination_fn: optional ``termination_fn(next_obs (..., S), act (..., A)) -> bool
            (...)``: rewards after a predicted termination are not counted.
    """

    def __init__(self, model: DynamicsModel, reward_fn: RewardFnType, optimizer: Optimizer,
                 horizon: int, action_dim: int, particles: int = 1, propagation: str = 'ts_inf',
                 pessimism: float = 0.0, terminal_weight: float = 1.0,
                 deterministic: bool = False, max_delta: Optional[float] = None,
                 joint_limits: Optional[JointLimits] = None, joint_limit_penalty: float = 1e3,
                 plan_stats: bool = True, seed: int = 0,
                 joint_pos_start: int = JOINT_POS.start,
                 termination_fn: Optional[TerminationFnType] = None):
        if int(horizon) < 1:
            raise ValueError(f'horizon must be >= 1, got {horizon}')
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f'optimizer must be an Optimizer, got {type(optimizer).__name__}')
        if optimizer.action_dim != int(action_dim):
            raise ValueError(f'optimizer action_dim {optimizer.action_dim} != {action_dim}')
        if max_delta is not None and not (max_delta > 0 and math.isfinite(max_delta)):
            raise ValueError(f'max_delta must be finite and > 0 (or None), got {max_delta}')
        self.backend = 'reference'
        self.horizon = int(horizon)
        self.action_dim = int(action_dim)
        self.optimizer = optimizer
        self.lower, self.upper = optimizer.lower, optimizer.upper
        self.trajectory_optimizer = TrajectoryOptimizer(optimizer, self.horizon)
        self.max_delta = None if max_delta is None else float(max_delta)
        self.plan_stats = bool(plan_stats)
        generator = torch.Generator(device=torch.device(getattr(model, 'device', 'cpu')))
        generator.manual_seed(int(seed))
        self.evaluator = TrajectoryEvaluator(
            model, reward_fn, particles=particles, propagation=propagation,
            pessimism=pessimism, terminal_weight=terminal_weight, deterministic=deterministic,
            joint_limits=joint_limits, joint_limit_penalty=joint_limit_penalty,
            generator=generator, joint_pos_start=joint_pos_start, termination_fn=termination_fn)
        if self.evaluator.device != optimizer.device:
            raise ValueError(f'optimizer device {optimizer.device} != model device '
                             f'{self.evaluator.device}')
        self.device = self.evaluator.device
        self.last_plan_info: Dict[str, Any] = {}
        self.reset()

    @property
    def model(self) -> DynamicsModel:
        """The model used for planning."""
        return self.evaluator.model

    def set_model(self, model: DynamicsModel) -> None:
        """Hot-swap the model (same layout, same device); the warm start is kept."""
        device = torch.device(getattr(model, 'device', 'cpu'))
        if device != self.device:
            raise ValueError(f'new model is on {device}, the agent plans on {self.device}')
        self.evaluator.set_model(model)

    def reset(self) -> None:
        """New episode: no warm start, the arm is at rest (``a_{-1} = 0``, clipped to the box)."""
        self._last_action = torch.zeros(self.action_dim, device=self.device).clamp(self.lower,
                                                                                   self.upper)
        self.trajectory_optimizer.reset()
        self.last_plan_info = {}

    def restart(self) -> None:
        """As if new: the generators back at their seeds, then :meth:`reset`."""
        for generator in (self.optimizer.generator, self.evaluator.generator):
            generator.manual_seed(generator.initial_seed())
        self.reset()

    def reset_warm_start(self) -> None:
        """Start the next plan from the middle of the bounds (no shifted previous plan)."""
        self.trajectory_optimizer.reset()

    def set_last_action(self, action: Union[np.ndarray, torch.Tensor]) -> None:
        """Tell the agent what was really executed (e.g. after a joint-limit clamp).

        Args:
            action: (A,) normalised action (clipped to the bounds).
        """
        a = torch.as_tensor(action, dtype=torch.float32, device=self.device).reshape(-1)
        if a.shape != (self.action_dim,) or not torch.isfinite(a).all():
            raise ValueError(f'last action must be finite with shape ({self.action_dim},)')
        self._last_action = a.clamp(self.lower, self.upper)

    def _obs(self, obs: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if o.dim() != 1:
            raise ValueError(f'obs must have shape (S,), got {tuple(o.shape)}')
        if not torch.isfinite(o).all():
            raise ValueError('obs contains non-finite values')
        return o

    def plan(self, obs: Union[np.ndarray, torch.Tensor],
             prev_action: Optional[Union[np.ndarray, torch.Tensor]] = None) -> np.ndarray:
        """Optimise an action sequence from ``obs``.

        Args:
            obs: (S,) current state.
            prev_action: (A,) ``a_{-1}`` for the acceleration bound; default the last action
                returned by ``act`` (or set by ``set_last_action``).

        Returns:
            (H, A) float32 plan; ``last_plan_info`` holds ``predicted_return`` (score of the
            plan's best sample), ``plan_time_ms``, ``disagreement`` (mean over state dims of the
            members' std one step ahead), ``disagreement_horizon`` (the same averaged over the
            horizon), ``mean_states`` and ``std_states`` ((H+1, S) numpy arrays); the last four
            only with ``plan_stats``.
        """
        t0 = time.perf_counter()
        o = self._obs(obs)
        if prev_action is not None:
            self.set_last_action(prev_action)
        prev = self._last_action
        max_delta = self.max_delta
        lower, upper = self.lower, self.upper

        def project(x: torch.Tensor) -> torch.Tensor:
            return project_action_sequences(x, prev, max_delta, lower, upper)

        with torch.inference_mode():
            result = self.trajectory_optimizer.optimize(
                lambda x: self.evaluator.evaluate(o, x), project)
            plan = project(self.optimizer.preferred(result).unsqueeze(0))[0]
            info: Dict[str, Any] = {'predicted_return': result.best_value}
            if self.plan_stats:
                mean_states, std_states = self.evaluator.rollout_plan(o, plan)
                info['disagreement'] = float(std_states[1].mean())
                info['disagreement_horizon'] = float(std_states[1:].mean())
                info['mean_states'] = mean_states.cpu().numpy()
                info['std_states'] = std_states.cpu().numpy()
        info['plan_time_ms'] = 1e3 * (time.perf_counter() - t0)
        self.last_plan_info = info
        return plan.cpu().numpy().astype(np.float32)

    def act(self, obs: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        """Plan and return the first action (A,); it becomes ``a_{-1}`` of the next plan."""
        action = self.plan(obs)[0]
        self._last_action = torch.as_tensor(action, device=self.device)
        return action
