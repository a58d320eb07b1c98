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
"""Control policies behind the controller node, free of ROS so they are tested with plain pytest.

A :class:`PolicyFactory` owns what outlives an episode (the task's reward, the latest validated
model and its version) and builds a fresh :class:`PlannerPolicy` per episode. The controller node
only converts messages and calls ``plan``.

With ``mode: policy`` the factory loads a trained policy checkpoint (MBPO or SAC, see
``core/algorithms/mbpo.py``) instead of a model and builds a :class:`LearnedPolicy`: the same
interface, a one-step "plan" from one network forward per control step.
"""

import logging
import threading
import time
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.models import GaussianEnsemble
from mbrl_robot.core.planning import create_agent
from mbrl_robot.core.planning.trajectory import position_limits as PlanningJointLimits
from mbrl_robot.core.policy import DeterministicPolicy, load_policy as load_policy_dir
from mbrl_robot.core.safety import CommandFilter
from mbrl_robot.core.tasks.push import (ACTION_DIM, JOINT_POS as Q, PUCK, PUSH_OBS_LAYOUT,
                                        push_obs, PushTask, STATE_DIM)

MODES = ('planner', 'policy')


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; ``cuda`` without a GPU is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name not in ('cpu', 'cuda'):
        raise ValueError(f'device must be auto, cpu or cuda, got {name!r}')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but torch sees no GPU')
    return torch.device(name)


class GoalHold:
    """Stop pushing while the puck is at the target: zero velocity until it drifts out again.

    The learned model brings the puck to within millimetres of the target but cannot predict a
    contact well enough to leave it there: without this, most failed episodes had passed within
    3 cm and were then pushed off by the next plan (benchmarks/push_learning.py). A real pushing
    cell stops when the part is in place; the hysteresis (``exit_radius_m`` > ``enter_radius_m``)
    keeps a puck that settles near the edge from toggling the planner on and off.

    Args:
        enter_radius_m: hold once ``||puck - target||`` is below this (0: never hold).
        exit_radius_m: plan again once it is above this.
    """

    def __init__(self, enter_radius_m: float, exit_radius_m: float):
        enter, leave = float(enter_radius_m), float(exit_radius_m)
        if not (np.isfinite(enter) and np.isfinite(leave)) or enter < 0.0 or leave < enter:
            raise ValueError(f'goal_hold needs 0 <= enter_radius_m <= exit_radius_m, got '
                             f'{enter_radius_m} and {exit_radius_m}')
        self.enter_radius, self.exit_radius = enter, leave
        self.holding = False

    @classmethod
    def from_config(cls, cfg: Optional[Dict[str, Any]]) -> 'GoalHold':
        """From a ``goal_hold`` block (absent: never hold)."""
        cfg = cfg or {}
        return cls(cfg.get('enter_radius_m', 0.0), cfg.get('exit_radius_m', 0.0))

    def __call__(self, state: np.ndarray, target: Optional[np.ndarray]) -> bool:
        """True while the arm should hold still at the goal for ``state`` (>= 17,)."""
        if self.enter_radius <= 0.0 or target is None:
            self.holding = False
            return False
        distance = float(np.linalg.norm(np.asarray(state)[PUCK] - np.asarray(target)))
        self.holding = distance < (self.exit_radius if self.holding else self.enter_radius)
        return self.holding


def _hold_plan(step: int) -> Tuple[np.ndarray, int]:
    return np.zeros((1, ACTION_DIM)), step


class PlannerPolicy:
    """MPC with a learned ensemble for one episode: plan from a state, keep the plan's info."""

    def __init__(self, agent, task: PushTask, model_version: int,
                 hold: Optional[GoalHold] = None):
        self.agent = agent
        self.task = task
        self.model_version = model_version
        self.hold = hold or GoalHold(0.0, 0.0)
        self._info: Dict[str, Any] = {}

    def set_model(self, model: GaussianEnsemble, version: int) -> None:
        """Hot-swap the model between two plans; the warm start is kept."""
        self.agent.set_model(model)
        self.model_version = version

    def set_last_action(self, action: np.ndarray) -> None:
        """The normalised action really executed last cycle (after the safety filter)."""
        self.agent.set_last_action(np.clip(action, -1.0, 1.0))

    def plan(self, state: np.ndarray, step: int) -> Tuple[np.ndarray, int]:
        """Plan (H, A) from ``state``; returns it with the step it starts at.

        While :class:`GoalHold` holds, the plan is one zero row and ``last_info()`` is
        ``{'holding': True}`` (no planning time is spent or reported).
        """
        was_holding = self.hold.holding
        if self.hold(state, self.task.target):
            if not was_holding:
                # The warm start is the push that brought the puck here: a puck that drifts
                # out again needs a fresh plan, not the rest of that push.
                self.agent.trajectory_optimizer.reset()
            self._info = {'holding': True}
            return _hold_plan(step)
        plan = self.agent.plan(state)
        info = dict(self.agent.last_plan_info)
        mean, std = info.pop('mean_states', None), info.pop('std_states', None)
        if mean is not None:
            info['paths'] = self._paths(mean, std)
        self._info = info
        return plan, step

    def _paths(self, mean: np.ndarray, std: np.ndarray):
        # Tool-tip spread: how far the tip moves when each joint is off by its ensemble std.
        with torch.inference_mode():
            q = torch.as_tensor(mean[:, Q], dtype=torch.float32, device=self.task.device)
            dq = torch.as_tensor(std[:, Q], dtype=torch.float32, device=self.task.device)
            tip = self.task.kinematics.tip_position(q)
            tip_spread = torch.linalg.vector_norm(
                self.task.kinematics.tip_position(q + dq) - tip, dim=-1)
        return [('puck', mean[:, PUCK], np.linalg.norm(std[:, PUCK], axis=-1), (1.0, 0.5, 0.0)),
                ('tool', tip.cpu().numpy(), tip_spread.cpu().numpy(), (0.2, 0.6, 1.0))]

    def last_info(self) -> Dict[str, Any]:
        """``plan_time_ms``, ``disagreement``, ``predicted_return``, ``paths`` of the last plan."""
        return self._info


class LearnedPolicy:
    """A trained policy behind :class:`PlannerPolicy`'s interface: one forward per control step.

    The "plan" is one row, the policy's deterministic action for ``[s, target - puck]``, plus
    Gaussian noise of std ``exploration_std`` when collecting data (MBPO collects with SAC's
    stochastic policy; the deployed checkpoint holds the mean only, so the noise stands in).

    Args:
        policy: the network (``obs (B, 20) -> action (B, 7)`` in [-1, 1]).
        task: the factory's task; its current target is read at every step.
        version: the policy checkpoint's version.
        hold: stop at the goal (:class:`GoalHold`).
        exploration_std: noise std in normalised action units (0: deterministic).
        rng: source of the noise (the factory's, so episodes draw different noise).
    """

    def __init__(self, policy: DeterministicPolicy, task: PushTask, version: int,
                 hold: Optional[GoalHold] = None, exploration_std: float = 0.0,
                 rng: Optional[np.random.Generator] = None):
        if policy.obs_dim != STATE_DIM + 3 or policy.act_dim != ACTION_DIM:
            raise ValueError(f'LearnedPolicy: policy maps {policy.obs_dim} -> {policy.act_dim}, '
                             f'expected {STATE_DIM + 3} -> {ACTION_DIM}')
        self.policy = policy
        self.task = task
        self.policy_version = version
        self.model_version = version
        self.hold = hold or GoalHold(0.0, 0.0)
        self.exploration_std = float(exploration_std)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._info: Dict[str, Any] = {}

    def set_model(self, policy: DeterministicPolicy, version: int) -> None:
        """Swap in a newer policy between two steps (the factory's ``refresh`` calls this)."""
        self.policy = policy
        self.policy_version = self.model_version = version

    def set_last_action(self, action: np.ndarray) -> None:
        """Unused: the policy is a function of the state (kept for the controller's calls)."""

    @torch.inference_mode()
    def plan(self, state: np.ndarray, step: int) -> Tuple[np.ndarray, int]:
        """Plan (1, A): the deterministic action for ``state`` (>= 17,); returns it with ``step``.

        Raises:
            RuntimeError: no target set on the task.
            ValueError: ``state`` too short or not finite.
        """
        t0 = time.perf_counter()
        target = self.task.target
        if target is None:
            raise RuntimeError('LearnedPolicy.plan: no target; call set_target first')
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        if s.shape[0] < STATE_DIM or not np.all(np.isfinite(s[:STATE_DIM])):
            raise ValueError(f'LearnedPolicy.plan: state must hold {STATE_DIM} finite numbers, '
                             f'got shape {np.shape(state)}')
        if self.hold(s, target):
            self._info = {'holding': True, 'policy_version': self.policy_version}
            return _hold_plan(step)
        obs = push_obs(torch.as_tensor(s[None, :STATE_DIM]),
                       torch.as_tensor(target[None], dtype=torch.float32))
        action = self.policy(obs).double().numpy()
        if self.exploration_std > 0.0:
            action = action + self._rng.normal(0.0, self.exploration_std, action.shape)
        action = np.clip(np.nan_to_num(action, nan=0.0), -1.0, 1.0)
        self._info = {'plan_time_ms': (time.perf_counter() - t0) * 1e3,
                      'policy_version': self.policy_version}
        return action, step

    def last_info(self) -> Dict[str, Any]:
        """``plan_time_ms`` and ``policy_version`` of the last step (no disagreement, no paths)."""
        return self._info


class PolicyFactory:
    """Builds per-episode policies from the controller's parameters and the latest model.

    Args:
        params: the controller's nested parameters (``task``, ``planner``, ``device``, and
            ``mode``: ``planner`` (default: MPC on the latest model) or ``policy`` (a trained
            policy checkpoint, loaded with :meth:`load_policy`), and ``goal_hold``
            (:class:`GoalHold`, optional), ``policy_exploration_std`` (policy mode, optional)).
        command_filter: the safety filter; its limits and acceleration bound also constrain the
            planner over the whole horizon.
        period: control period (s).
        logger: anything with ``info``/``error`` (an rclpy logger or a ``logging.Logger``).
    """

    def __init__(self, params: Dict[str, Any], command_filter: CommandFilter, period: float,
                 logger=None):
        self.device = resolve_device(params.get('device', 'auto'))
        self.task = PushTask.from_config(params['task'], device=self.device)
        self.planner_cfg = dict(params['planner'])
        self.goal_hold_cfg = dict(params.get('goal_hold') or {})
        GoalHold.from_config(self.goal_hold_cfg)  # fail at start-up, not at the first plan
        self.logger = logger or logging.getLogger(__name__)
        limits = command_filter.limits
        self.joint_limits = PlanningJointLimits(q_start=0, lower=limits.lower,
                                                upper=limits.upper)
        # The acceleration bound in normalised action units per step.
        self.max_delta = command_filter.max_accel * period / command_filter.max_speed
        self._lock = threading.Lock()
        self._model: Optional[GaussianEnsemble] = None
        self.model_version = -1
        self.mode = params.get('mode', 'planner')
        if self.mode not in MODES:
            raise ValueError(f'controller mode must be one of {MODES}, got {self.mode!r}')
        self._policy: Optional[DeterministicPolicy] = None
        self.policy_version = -1
        self.exploration_std = float(params.get('policy_exploration_std', 0.0))
        self._noise_rng = np.random.default_rng(int(self.planner_cfg.get('seed', 0)))

    def set_target(self, xyz) -> None:
        """New target for the reward (thread-safe: the tensor is replaced, not mutated)."""
        self.task.set_target(xyz)

    def has_model(self) -> bool:
        """True once :meth:`create` can build a policy: a validated model (planner mode) or a
        validated policy checkpoint (policy mode) has been loaded."""
        if self.mode == 'policy':
            return self._policy is not None
        return self._model is not None

    def load_policy(self, path: str, version: int, sha256: Optional[str] = None) -> bool:
        """Load a policy checkpoint directory (``policy.pt`` + ``policy.json``).

        The policy runs on the CPU whatever ``device`` says: one small forward per step is
        faster there than a GPU round trip. Keeps the current policy if it fails (wrong dims or
        layout, version other than announced, checksum mismatch, corrupt files) and logs why.
        In policy mode ``model_version`` follows the policy's version, so version gating in the
        node works unchanged. Returns success.
        """
        if version <= self.policy_version:
            return False
        try:
            policy, _ = load_policy_dir(path, version=version, sha256=sha256,
                                        obs_dim=STATE_DIM + 3, act_dim=ACTION_DIM,
                                        obs_layout=PUSH_OBS_LAYOUT, device='cpu')
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            self.logger.error(f'policy v{version} at {path} rejected, keeping '
                              f'v{self.policy_version}: {e}')
            return False
        self.set_policy(policy, version)
        self.logger.info(f'policy v{version} loaded from {path}')
        return True

    def set_policy(self, policy: DeterministicPolicy, version: int) -> None:
        """Use an in-memory policy (tests, benchmarks)."""
        with self._lock:
            self._policy, self.policy_version = policy, version
            if self.mode == 'policy':
                self.model_version = version

    def load_model(self, path: str, version: int, sha256: Optional[str] = None) -> bool:
        """Load a checkpoint directory; keeps the current model if it fails. Returns success."""
        if version <= self.model_version:
            return False
        try:
            model = GaussianEnsemble.load(path, device=self.device, obs_dim=STATE_DIM,
                                          act_dim=ACTION_DIM, sha256=sha256)
            model.eval()
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            self.logger.error(f'model v{version} at {path} rejected, keeping '
                              f'v{self.model_version}: {e}')
            return False
        with self._lock:
            self._model, self.model_version = model, version
        self.logger.info(f'model v{version} loaded from {path}')
        return True

    def set_model(self, model: GaussianEnsemble, version: int) -> None:
        """Use an in-memory model (tests, benchmarks)."""
        with self._lock:
            self._model, self.model_version = model, version

    def create(self, explore: bool = False) -> Union[PlannerPolicy, LearnedPolicy]:
        """A fresh policy on the latest model, or the latest policy in policy mode (call at
        episode start). ``explore``: a data-collection episode (policy mode adds noise)."""
        if self.mode == 'policy':
            with self._lock:
                policy, version = self._policy, self.policy_version
            if policy is None:
                raise RuntimeError('no policy loaded yet')
            return LearnedPolicy(policy, self.task, version,
                                 GoalHold.from_config(self.goal_hold_cfg),
                                 self.exploration_std if explore else 0.0, self._noise_rng)
        with self._lock:
            model, version = self._model, self.model_version
        if model is None:
            raise RuntimeError('no model loaded yet')
        agent = create_agent(self.planner_cfg, model, self.task.reward_fn, ACTION_DIM,
                             self.device, max_delta=self.max_delta,
                             joint_limits=self.joint_limits)
        return PlannerPolicy(agent, self.task, version, GoalHold.from_config(self.goal_hold_cfg))

    def refresh(self, policy: Union[PlannerPolicy, LearnedPolicy]) -> None:
        """Swap a newer model (or policy) into a running policy (call between two plans)."""
        if isinstance(policy, LearnedPolicy):
            with self._lock:
                net, version = self._policy, self.policy_version
            if net is not None and version != policy.policy_version:
                policy.set_model(net, version)
            return
        with self._lock:
            model, version = self._model, self.model_version
        if model is not None and version != policy.model_version:
            policy.set_model(model, version)
