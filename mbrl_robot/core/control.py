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
"""The pushing stack's control step and the policies behind it, free of ROS (plain pytest).

:class:`PushController` is the one control step: gating, the plan and its deadline fallback,
homing, exploration, the disagreement scale and the command filter, last. The controller node
(messages and a timer), the in-process recipe and the MBPO policy env all call it.

A :class:`PolicyFactory` owns what outlives an episode (the task's reward, the latest validated
model and its version) and builds a fresh :class:`PlannerPolicy` per episode.

With ``mode: policy`` the factory loads a trained policy checkpoint (MBPO or SAC, see
``core/policy.py``) instead of a model and builds a :class:`LearnedPolicy`: the same
interface, a one-step "plan" from one network forward per control step.
"""

import concurrent.futures
import dataclasses
from dataclasses import dataclass, field
import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.models import GaussianEnsemble
from mbrl_robot.core.planning import create_agent
from mbrl_robot.core.planning.fused import native_bf16
from mbrl_robot.core.policy import ChunkEnsemble, DeterministicPolicy, \
    load_policy as load_policy_dir
from mbrl_robot.core.safety import CommandFilter, disagreement_scale
from mbrl_robot.core.tasks.push import (ACTION_DIM, JOINT_POS, PUCK, PUSH_OBS_LAYOUT,
                                        PUSH_OBS_LAYOUTS, push_obs_fn, PushTask, STATE_DIM)

MODES = ('planner', 'policy')
EXPLORATIONS = ('random', 'zero')
# How often a tick waiting for a plan looks at the control clock (s).
WAIT_SLICE_S = 0.005
# 'policy': the trained policy whatever the mode (a planner-mode controller that also follows
# the policies a distilling trainer announces evaluates both on the same episodes).
EPISODE_POLICIES = ('planner', 'random', 'zero', 'policy')


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
    def from_config(cls, cfg: Dict[str, Any]) -> 'GoalHold':
        """From a ``goal_hold`` block (``enter_radius_m``, ``exit_radius_m``)."""
        return cls(cfg['enter_radius_m'], cfg['exit_radius_m'])

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
                self.agent.reset_warm_start()
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
            q = torch.as_tensor(mean[:, JOINT_POS], dtype=torch.float32, device=self.task.device)
            dq = torch.as_tensor(std[:, JOINT_POS], dtype=torch.float32, device=self.task.device)
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

    The "plan" is one row, the policy's deterministic action for its observation of the state
    and the target (``obs_layout``: ``[s, target - puck]``, or with the tool's end), plus
    Gaussian noise of std ``exploration_std`` when collecting data (MBPO collects with SAC's
    stochastic policy; the deployed checkpoint holds the mean only, so the noise stands in).
    A policy that predicts chunks of actions (``policy.chunk`` > 1) executes each step's
    temporal ensemble of its predictions (:class:`ChunkEnsemble`); the "plan" is then the
    ensembled actions of this step and the next ``chunk - 1`` (the controller's fallback rows).

    Args:
        policy: the network (``obs (B, O) -> action (B, 7)`` in [-1, 1]).
        task: the factory's task; its current target is read at every step.
        version: the policy checkpoint's version.
        obs_layout: the checkpoint's observation layout (``PUSH_OBS_LAYOUTS``).
        hold: stop at the goal (:class:`GoalHold`).
        exploration_std: noise std in normalised action units (0: deterministic).
        rng: source of the noise (the factory's, so episodes draw different noise).
    """

    def __init__(self, policy: DeterministicPolicy, task: PushTask, version: int,
                 hold: Optional[GoalHold] = None, exploration_std: float = 0.0,
                 rng: Optional[np.random.Generator] = None,
                 obs_layout: str = PUSH_OBS_LAYOUT):
        self.task = task
        self.set_model(policy, version, obs_layout)
        self.hold = hold or GoalHold(0.0, 0.0)
        self.exploration_std = float(exploration_std)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._info: Dict[str, Any] = {}

    @staticmethod
    def check(policy: DeterministicPolicy, obs_layout: str) -> None:
        """Raise ``ValueError`` unless ``policy`` maps ``obs_layout``'s observation to an
        action."""
        if PUSH_OBS_LAYOUTS.get(obs_layout) != policy.obs_dim or policy.act_dim != ACTION_DIM:
            raise ValueError(f'LearnedPolicy: policy maps {policy.obs_dim} -> {policy.act_dim}, '
                             f'expected {PUSH_OBS_LAYOUTS.get(obs_layout)} -> {ACTION_DIM} '
                             f'for the observation layout {obs_layout!r}')

    def set_model(self, policy: DeterministicPolicy, version: int,
                  obs_layout: str = PUSH_OBS_LAYOUT) -> None:
        """Swap in a newer policy between two steps (the factory's ``refresh`` calls this)."""
        self.check(policy, obs_layout)
        self.make_obs = push_obs_fn(self.task, obs_layout)
        self.policy = policy
        self.policy_version = self.model_version = version
        # A new policy's chunks do not mix with the last one's.
        self.chunks = ChunkEnsemble(ACTION_DIM, policy.chunk, policy.chunk_decay)

    def set_last_action(self, action: np.ndarray) -> None:
        """Unused: the policy is a function of the state (kept for the controller's calls)."""

    @torch.inference_mode()
    def plan(self, state: np.ndarray, step: int) -> Tuple[np.ndarray, int]:
        """Plan (1, A): the deterministic action for ``state`` (>= 17,), or (chunk, A): the
        ensembled actions of a chunked policy; returns it with ``step``.

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
            self.chunks.reset()
            self._info = {'holding': True, 'policy_version': self.policy_version}
            return _hold_plan(step)
        obs = self.make_obs(torch.as_tensor(s[None, :STATE_DIM]),
                            torch.as_tensor(target[None], dtype=torch.float32))
        action = self.policy(obs)[0].double().numpy()
        if self.policy.chunk > 1:
            action = self.chunks.add(step, action)
        else:
            action = action[None]
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
        logger: anything with ``info``/``error`` (an rclpy logger or a ``logging.Logger``).
    """

    def __init__(self, params: Dict[str, Any], command_filter: CommandFilter, logger=None):
        self.device = resolve_device(params['device'])
        self.task = PushTask.from_config(params['task'], device=self.device)
        self.planner_cfg = dict(params['planner'])
        self.goal_hold_cfg = dict(params['goal_hold'])
        GoalHold.from_config(self.goal_hold_cfg)  # fail at start-up, not at the first plan
        self.logger = logger or logging.getLogger(__name__)
        self.joint_limits = command_filter.limits
        # The acceleration bound in normalised action units per step.
        self.max_delta = command_filter.max_action_step
        self._lock = threading.Lock()
        self._model: Optional[GaussianEnsemble] = None
        self.model_version = -1
        self.mode = params['mode']
        if self.mode not in MODES:
            raise ValueError(f'controller mode must be one of {MODES}, got {self.mode!r}')
        self._policy: Optional[DeterministicPolicy] = None
        self._policy_layout = PUSH_OBS_LAYOUT
        self.policy_version = -1
        self.exploration_std = float(params['policy_exploration_std'])
        self._noise_rng = np.random.default_rng(int(self.planner_cfg['seed']))
        # One planner for the whole run (a compiled or captured plan is built once): each
        # episode restarts it as if new (same seeds), a new model goes into its tensors.
        self._agent = None
        self._agent_lock = threading.Lock()

    def set_target(self, xyz) -> None:
        """New target for the reward (copied into the task's tensor, which a compiled or
        captured plan keeps reading; set it between episodes)."""
        self.task.set_target(xyz)

    def has_model(self, kind: str = 'planner') -> bool:
        """True once :meth:`create` can build a policy for an episode of ``kind``: a validated
        model (planner mode) or a validated policy checkpoint (policy mode, or ``kind`` policy)
        has been loaded."""
        if self.mode == 'policy' or kind == 'policy':
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
            policy, meta = load_policy_dir(path, version=version, sha256=sha256,
                                           act_dim=ACTION_DIM, device='cpu')
            self.set_policy(policy, version, meta['obs_layout'])  # checks the layout first
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            self.logger.error(f'policy v{version} at {path} rejected, keeping '
                              f'v{self.policy_version}: {e}')
            return False
        self.logger.info(f'policy v{version} loaded from {path}')
        return True

    def set_policy(self, policy: DeterministicPolicy, version: int,
                   obs_layout: str = PUSH_OBS_LAYOUT) -> None:
        """Use an in-memory policy (tests, benchmarks) that takes ``obs_layout``'s
        observation."""
        LearnedPolicy.check(policy, obs_layout)
        with self._lock:
            self._policy, self.policy_version = policy, version
            self._policy_layout = obs_layout
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
        if self.mode == 'planner' and self._agent is None:
            # Build (and, for compiled or captured backends, compile or capture) the planner
            # here, in the loading thread, before the version is announced: no episode waits
            # for it.
            t0 = time.perf_counter()
            self._planner_for(model)
            if self.planner_cfg.get('backend', 'fused') not in ('reference', 'fused'):
                self.logger.info(f"planner backend {self.planner_cfg['backend']} ready in "
                                 f'{time.perf_counter() - t0:.1f} s')
        with self._lock:
            self._model, self.model_version = model, version
        self.logger.info(f'model v{version} loaded from {path}')
        return True

    def _built_agent(self, cfg: Dict[str, Any], model: GaussianEnsemble, warm_up: bool = True):
        """The planner ``cfg`` makes on ``model``, planned once (a compile, a capture) where it
        has a warm-up and ``warm_up`` asks for it."""
        agent = create_agent(cfg, model, self.task.reward_fn, ACTION_DIM, self.device,
                             max_delta=self.max_delta, joint_limits=self.joint_limits)
        warmup = getattr(agent, 'warmup', None) if warm_up else None
        if warmup is not None:
            if self.task.target is None:
                # A placeholder the warm-up plans for; every episode sets its own (in place: a
                # captured plan reads this very tensor).
                self.task.set_target([0.6, 0.0, 0.02])
            warmup()
        return agent

    def _planner_for(self, model: GaussianEnsemble):
        """The run's planner on ``model``, restarted (reseeded, no warm start); built and
        warmed up the first time."""
        with self._agent_lock:
            if self._agent is None:
                try:
                    agent = self._built_agent(self.planner_cfg, model)
                except Exception as e:  # noqa: B902 - no compiler, no CUDA, no graph support
                    if self.planner_cfg.get('backend') in ('reference', 'fused'):
                        raise
                    self.logger.error(
                        f"planner backend {self.planner_cfg['backend']} failed to build on "
                        f'{self.device} ({type(e).__name__}: {str(e)[:300]}): planning with '
                        'the fused backend instead (the same plans, slower)')
                    agent = self._built_agent({**self.planner_cfg, 'backend': 'fused'}, model,
                                              warm_up=False)
                if (self.planner_cfg.get('precision') == 'bf16'
                        and native_bf16(self.device) is False):
                    self.logger.warning(
                        f'planner precision bf16 on {self.device}, which has no native bf16: '
                        'emulated, slower than fp32')
                self._agent = agent
            elif self._agent.model is not model:
                self._agent.set_model(model)
            self._agent.restart()
            return self._agent

    def set_model(self, model: GaussianEnsemble, version: int) -> None:
        """Use an in-memory model (tests, benchmarks)."""
        with self._lock:
            self._model, self.model_version = model, version

    def create(self, explore: bool = False,
               kind: str = 'planner') -> Union[PlannerPolicy, LearnedPolicy]:
        """A fresh policy on the latest model, or the latest policy in policy mode or for an
        episode of ``kind`` policy (call at episode start). ``explore``: a data-collection
        episode (the learned policy adds noise)."""
        if self.mode == 'policy' or kind == 'policy':
            with self._lock:
                policy, version = self._policy, self.policy_version
                layout = self._policy_layout
            if policy is None:
                raise RuntimeError('no policy loaded yet')
            return LearnedPolicy(policy, self.task, version,
                                 GoalHold.from_config(self.goal_hold_cfg),
                                 self.exploration_std if explore else 0.0, self._noise_rng,
                                 layout)
        with self._lock:
            model, version = self._model, self.model_version
        if model is None:
            raise RuntimeError('no model loaded yet')
        return PlannerPolicy(self._planner_for(model), self.task, version,
                             GoalHold.from_config(self.goal_hold_cfg))

    def refresh(self, policy: Union[PlannerPolicy, LearnedPolicy]) -> None:
        """Swap a newer model (or policy) into a running policy (call between two plans)."""
        if isinstance(policy, LearnedPolicy):
            with self._lock:
                net, version, layout = self._policy, self.policy_version, self._policy_layout
            if net is not None and version != policy.policy_version:
                policy.set_model(net, version, layout)
            return
        with self._lock:
            model, version = self._model, self.model_version
        if model is not None and version != policy.model_version:
            policy.set_model(model, version)


@dataclass
class Tick:
    """What one control step decided.

    Attributes:
        event: ``estop``, ``idle`` (no episode), ``homing``, ``homed``, ``waiting`` (nothing to
            send yet: no fresh state or model), ``stale`` (no usable state: zero velocity),
            ``no_target``, ``act`` (an episode step) or ``done`` (the episode's terminal row).
        command: (7,) joint velocities (rad/s) to send, or None (send nothing).
        action: (7,) normalised action the command executes (``act`` only), the one the data
            records.
        step: the episode step this tick was (``act``/``done``).
        episode: the episode it belongs to (``act``/``done``).
        info: the plan's figures when one finished this tick (``plan_time_ms``,
            ``disagreement``, ``paths``, ...), ``deadline_miss``, ``scale``, ``distance``.
    """

    event: str
    command: Optional[np.ndarray] = None
    action: Optional[np.ndarray] = None
    step: int = -1
    info: Dict[str, Any] = field(default_factory=dict)
    episode: int = -1


@dataclass(frozen=True)
class ControlSettings:
    """The controller's own settings (see the controller's parameter schema).

    Attributes:
        episode_steps: commands per episode.
        deadline_s: how long a tick waits for a running plan before the fallback goes out.
        state_timeout_s: a state older than this is stale.
        wait_for_fresh_state: lockstep twins: tick only on a state newer than the last used.
        exploration: ``random`` or ``zero``, the policy before the first model.
        disagreement_slowdown: disagreement above which commands are scaled down.
        disagreement_stop: disagreement at which the command scale reaches 0.
        home: (7,) ready pose (rad).
        home_speed: joint speed cap while homing (rad/s).
        seed: seed of the random exploration.
        plan_ahead: realtime: plan one period ahead (see :meth:`PushController.tick`).
    """

    episode_steps: int
    deadline_s: float
    state_timeout_s: float
    wait_for_fresh_state: bool
    exploration: str
    disagreement_slowdown: float
    disagreement_stop: float
    home: np.ndarray
    home_speed: float
    seed: int = 0
    plan_ahead: bool = False

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> 'ControlSettings':
        """From the controller's nested parameters."""
        task = params['task']
        home = np.asarray(params['home_joint_positions'], dtype=np.float64)
        if home.shape != (ACTION_DIM,):
            raise ValueError(f'home_joint_positions must have {ACTION_DIM} values, '
                             f'got {home.shape}')
        exploration = params['exploration']
        if exploration not in EXPLORATIONS:
            raise ValueError(f'exploration must be one of {EXPLORATIONS}, got {exploration!r}')
        return cls(int(task['episode_steps']),
                   float(params['plan_deadline_fraction']) / float(task['control_rate_hz']),
                   float(params['state_timeout_s']), bool(params['wait_for_fresh_state']),
                   exploration, float(params['disagreement_slowdown']),
                   float(params['disagreement_stop']), home, float(params['home_speed_rad_s']),
                   int(params['planner']['seed']),
                   bool(params['plan_ahead']) and not bool(params['wait_for_fresh_state']))


class PushController:
    """The one control step of the pushing stack, free of ROS: state in, safe command out.

    The controller node, the in-process recipe and the MBPO policy env all call it, so what they
    run is the same by construction; only the transport differs. Each :meth:`tick`:

    1. gates: e-stop, homing, episode running, a fresh state (``wait_for_fresh_state``), the
       model the episode asked for (``min_model_version``), a state not older than
       ``state_timeout_s`` and a target;
    2. chooses a normalised action: random or zero exploration, or the running plan. A plan is
       computed on ``executor`` (a worker thread); a tick waits at most ``deadline_s`` of the
       control clock for it (see :meth:`_wait_for_plan`).
       A plan that overruns never leaves the arm without a command: the next action of the
       previous plan goes out (shifted by the steps since it was planned), else a decelerating
       stop, and the miss is counted. The goal hold lives in the policy (:class:`GoalHold`);
    3. scales the request by the ensemble's disagreement along the chosen plan;
    4. passes it through the :class:`CommandFilter` **last**, so every command that leaves
       satisfies the speed, acceleration and position-envelope bounds.

    The exceptions are deliberate hard stops: e-stop, a stale or missing state (the position
    envelope needs ``q``) and a missing target send zero velocity at once.

    Args:
        policies: builds the per-episode policy on the latest model (:class:`PolicyFactory`).
        command_filter: the arm's :class:`CommandFilter`.
        settings: :class:`ControlSettings`.
        executor: runs plans; default: one worker thread owned by this controller.
        clock: the control loop's clock in seconds, on which the plan deadline is measured (the
            node's clock: sim time under a twin); default: monotonic wall time.
        logger: anything with ``info``/``warning``/``error``.
    """

    def __init__(self, policies: PolicyFactory, command_filter: CommandFilter,
                 settings: ControlSettings,
                 executor: Optional[concurrent.futures.Executor] = None,
                 clock: Callable[[], float] = time.monotonic, logger=None):
        self.policies = policies
        self._clock = clock
        self.filter = command_filter
        self.settings = settings
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix='planner')
        self.logger = logger or logging.getLogger(__name__)
        self._rng = np.random.default_rng(settings.seed)
        self.prev_command = np.zeros(ACTION_DIM)
        self.estop = False
        self.homing = False
        self.episode = -1
        self.step = 0
        self.kind = 'zero'
        self.explore = False
        self.min_model_version = 0
        self._policy: Optional[Union[PlannerPolicy, LearnedPolicy]] = None
        self._future: Optional[concurrent.futures.Future] = None
        self._fallback: Optional[Tuple[np.ndarray, int]] = None
        self._last_stamp: Optional[float] = None
        self._plan_ahead = False
        self.stats = {'ticks': 0, 'deadline_misses': 0, 'plan_errors': 0, 'plan_ms': 0.0,
                      'plan_ms_max': 0.0, 'disagreement': 0.0, 'scale': 1.0}

    @classmethod
    def from_params(cls, params: Dict[str, Any], logger=None, urdf: Optional[str] = None,
                    **kwargs) -> 'PushController':
        """The controller the nested controller parameters define (``kwargs``: executor,
        clock)."""
        command_filter = CommandFilter.from_params(params, urdf)
        policies = PolicyFactory(params, command_filter, logger)
        return cls(policies, command_filter, ControlSettings.from_params(params),
                   logger=logger, **kwargs)

    # --- episodes -------------------------------------------------------------------------
    def start_episode(self, episode: int, kind: str = 'planner', explore: bool = False,
                      min_model_version: int = 0) -> None:
        """Begin ``episode`` with policy ``kind`` (planner, random, zero or policy); -1 ends
        it."""
        if kind not in EPISODE_POLICIES:
            raise ValueError(f'episode policy must be one of {EPISODE_POLICIES}, got {kind!r}')
        self.episode, self.kind, self.explore = int(episode), kind, bool(explore)
        self.min_model_version = int(min_model_version)
        self.step = 0
        self._policy = None
        self._future = None  # a plan still running for the last episode is never used
        self._fallback = None
        self._last_stamp = None

    def start_homing(self) -> None:
        """Drive to the ready pose on the next ticks (between episodes only)."""
        if self.episode >= 0:
            raise RuntimeError('an episode is running')
        self.homing = True
        self._last_stamp = None

    def ready(self, stamp: Optional[float]) -> Optional[str]:
        """Why a tick on a state stamped ``stamp`` (s) must wait, or None when it can run.

        Lockstep (``wait_for_fresh_state``) ticks only on a state newer than the last one used;
        a planner episode waits for the model version it asked for, a policy episode of a
        planner-mode controller for that version of the policy.
        """
        active = self.episode >= 0 or self.homing
        if self.episode >= 0 and self.kind in ('planner', 'policy'):
            learned = self.kind == 'policy' and self.policies.mode == 'planner'
            version = self.policies.policy_version if learned else self.policies.model_version
            if version < self.min_model_version:
                return f"waiting for {'policy' if learned else 'model'} v{self.min_model_version}"
        # An e-stopped lockstep arm too: each zero it is sent steps the twin once.
        if self.settings.wait_for_fresh_state and (active or self.estop):
            if stamp is not None and self._last_stamp is not None and stamp <= self._last_stamp:
                return 'waiting for a fresh state'
            if stamp is None and not self.estop:
                return 'waiting for a fresh state'
        return None

    def clock_restarted(self) -> None:
        """The state's clock started again (a restarted twin): the next state is fresh."""
        self._last_stamp = None

    # --- the step -------------------------------------------------------------------------
    def tick(self, state: Optional[np.ndarray], stamp: Optional[float], now: float,
             target: Optional[np.ndarray],
             plan_state_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Tick:
        """One control step on ``state`` (17,) stamped ``stamp`` at time ``now`` (s, the same
        clock as the stamps) toward ``target`` (3,). Call :meth:`ready` first.

        ``plan_ahead`` (realtime): this step sends the plan started one tick ago, then starts the
        next step's plan from ``plan_state_fn(command)``, the state predicted for the moment the
        next command takes effect given the one sent now (or the latest measurements). So
        every command leaves at its tick and takes effect a fixed delay later, whatever the
        plan's latency, and a plan has the whole period."""
        self.stats['ticks'] += 1
        if self.estop:
            if stamp is not None:
                self._last_stamp = stamp
            return Tick('estop', self._hard_stop())
        if self.episode < 0:
            if self.homing and state is not None:
                self._last_stamp = stamp
                return self._home(state[JOINT_POS])
            if self.settings.wait_for_fresh_state:
                return Tick('idle')  # lockstep: nothing moves between episodes
            q = state[JOINT_POS] if state is not None else np.zeros(ACTION_DIM)
            return Tick('idle', self._send(self.filter.decelerate(q, self.prev_command)))
        if state is None or stamp is None or now - stamp > self.settings.state_timeout_s:
            return Tick('stale', self._hard_stop())
        if target is None:
            return Tick('no_target', self._hard_stop())
        self._last_stamp = stamp
        distance = float(np.linalg.norm(state[PUCK] - target))
        if self.step >= self.settings.episode_steps:
            episode, self.episode = self.episode, -1
            command = None
            if not self.settings.wait_for_fresh_state:  # realtime: brake smoothly
                command = self._send(self.filter.decelerate(state[JOINT_POS], self.prev_command))
            return Tick('done', command, None, self.step, {'distance': distance}, episode)
        # Planning ahead needs the prediction; without one (in-process) plan synchronously.
        self._plan_ahead = self.settings.plan_ahead and plan_state_fn is not None
        action, info = self._choose(state)
        command = self.act(state, action)
        if (self._plan_ahead and self._policy is not None
                and self._future is None and self.step + 1 < self.settings.episode_steps):
            self._submit(plan_state_fn(command), self.step + 1, self.filter.to_action(command))
        info.update(distance=distance, scale=self.stats['scale'])
        tick = Tick('act', command, self.filter.to_action(command), self.step, info, self.episode)
        self.step += 1
        return tick

    def act(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The last stage of every step: the normalised ``action`` (7,), scaled by the ensemble's
        disagreement, through the command filter; returns the command sent (rad/s).

        Policies trained on the twin (MBPO's env) execute their actions through this too."""
        scale = disagreement_scale(self.disagreement, self.settings.disagreement_slowdown,
                                   self.settings.disagreement_stop)
        self.stats['scale'] = scale
        request = self.filter.to_velocity(np.asarray(action, dtype=np.float64)) * scale
        return self._send(self.filter(np.asarray(state)[JOINT_POS], request, self.prev_command))

    @property
    def disagreement(self) -> float:
        """The ensemble's disagreement along the last finished plan (0 without one)."""
        return self.stats['disagreement']

    def apply_params(self, changed: Dict[str, Any]) -> None:
        """Take run-time changes of the writable parameters: ``disagreement_slowdown``,
        ``disagreement_stop`` and ``goal_hold`` (a running episode's hold keeps its state and
        takes the new radii at once). ``changed`` is nested like the parameters."""
        names = ('disagreement_slowdown', 'disagreement_stop')
        new = {k: float(changed[k]) for k in names if k in changed}
        if new:
            self.settings = dataclasses.replace(self.settings, **new)
        if 'goal_hold' in changed:
            cfg = {**self.policies.goal_hold_cfg, **changed['goal_hold']}
            hold = GoalHold.from_config(cfg)
            self.policies.goal_hold_cfg = cfg
            if self._policy is not None:
                self._policy.hold.enter_radius = hold.enter_radius
                self._policy.hold.exit_radius = hold.exit_radius

    def reset_command(self) -> None:
        """Forget the previous command (a new episode on a twin that starts at rest)."""
        self.prev_command = np.zeros(ACTION_DIM)
        self.stats['disagreement'] = 0.0

    def _send(self, command: np.ndarray) -> np.ndarray:
        self.prev_command = np.asarray(command, dtype=np.float64)
        return self.prev_command.copy()

    def _hard_stop(self) -> np.ndarray:
        return self._send(np.zeros(ACTION_DIM))

    def _home(self, q: np.ndarray) -> Tick:
        error = self.settings.home - q
        if np.max(np.abs(error)) < 0.01 and np.max(np.abs(self.prev_command)) < 1e-3:
            self.homing = False
            return Tick('homed', self._hard_stop())
        # Proportional approach at capped speed; the filter adds the acceleration bound.
        speed = self.settings.home_speed
        request = np.clip(2.0 * error, -speed, speed)
        return Tick('homing', self._send(self.filter(q, request, self.prev_command)))

    def _choose(self, state: np.ndarray) -> Tuple[np.ndarray, Dict[str, Any]]:
        has_model = self.policies.has_model(self.kind)
        if self.kind == 'zero' or (self.kind != 'random' and not has_model
                                   and self.settings.exploration == 'zero'):
            return np.zeros(ACTION_DIM), {}
        if self.kind == 'random' or not has_model:
            return self._rng.uniform(-1.0, 1.0, ACTION_DIM), {}
        return self._planned(state)

    def _planned(self, state: np.ndarray) -> Tuple[np.ndarray, Dict[str, Any]]:
        if self._policy is None:
            self._policy = self.policies.create(explore=self.explore, kind=self.kind)
        if self._plan_ahead:
            # The plan for this step was started one tick ago (see tick's plan_state_fn).
            if self._future is None:
                return self._row(self._fallback, state), {}
            if not self._future.done():
                self.stats['deadline_misses'] += 1
                return self._row(self._fallback, state), {'deadline_miss': True}
            return self._collect(state)
        if self._future is None:
            self._submit(state, self.step, self.filter.to_action(self.prev_command))
        try:
            self._wait_for_plan()
        except concurrent.futures.TimeoutError:
            self.stats['deadline_misses'] += 1
            return self._row(self._fallback, state), {'deadline_miss': True}
        return self._collect(state)

    def _submit(self, state: np.ndarray, start: int, last_action: np.ndarray) -> None:
        """Start a plan from ``state`` whose first row is step ``start``, after
        ``last_action``."""
        # Between two plans: the only safe moment to swap in a newer model.
        self.policies.refresh(self._policy)
        self._policy.set_last_action(last_action)
        self._future = self._executor.submit(self._policy.plan, np.array(state), start)

    def _collect(self, state: np.ndarray) -> Tuple[np.ndarray, Dict[str, Any]]:
        """This step's action from the finished plan (it becomes the fallback), or a smooth
        stop when planning failed."""
        future, self._future = self._future, None
        try:
            plan, start = future.result()
        except Exception as e:  # noqa: B902 - a failing planner must not stop the control loop
            self.stats['plan_errors'] += 1
            self.logger.error(f'plan failed, stopping smoothly: {e!r}')
            return self._row(None, state), {'plan_error': repr(e)}
        plan = np.asarray(plan, dtype=np.float64)
        if plan.ndim != 2 or plan.shape[1] != ACTION_DIM or len(plan) == 0:
            self.stats['plan_errors'] += 1
            self.logger.error(f'plan of shape {plan.shape} rejected, stopping smoothly')
            return self._row(None, state), {'plan_error': f'shape {plan.shape}'}
        self._fallback = (plan, start)
        info = dict(self._policy.last_info())
        if 'plan_time_ms' in info:  # absent while holding at the goal: nothing was planned
            self.stats['plan_ms'] = info['plan_time_ms']
            self.stats['plan_ms_max'] = max(self.stats['plan_ms_max'], info['plan_time_ms'])
        self.stats['disagreement'] = float(info.get('disagreement', 0.0))
        return self._row((plan, start), state), info

    def _wait_for_plan(self) -> None:
        """Return once the running plan is done; TimeoutError once ``deadline_s`` passed on
        ``clock``.

        The deadline is measured on the control loop's own clock: wall time on a real arm, sim
        time under a twin. A lockstep twin's clock stands still until the next command, so there
        a plan is always waited for (the physics waits too); whenever time runs, an overrun
        yields the fallback on time.
        """
        began = self._clock()
        wait = min(self.settings.deadline_s, WAIT_SLICE_S)
        while True:
            try:
                self._future.exception(timeout=wait)
                return
            except concurrent.futures.TimeoutError:
                if self._clock() - began >= self.settings.deadline_s:
                    raise

    def _row(self, plan: Optional[Tuple[np.ndarray, int]], state: np.ndarray) -> np.ndarray:
        """The row of ``plan`` for this step (a plan computed ``k`` steps ago: row ``k``), else a
        decelerating stop, as a normalised action."""
        if plan is not None and 0 <= self.step - plan[1] < len(plan[0]):
            return plan[0][self.step - plan[1]]
        stop = self.filter.decelerate(state[JOINT_POS], self.prev_command)
        return self.filter.to_action(stop)

    def close(self) -> None:
        """Stop the worker (pending plans are dropped)."""
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
