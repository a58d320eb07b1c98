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
"""The pushing task shared by the simulator, the planner and the policy learners.

Here, and only here: the state layout, the reward, success, and the policy observation.

State ``s`` (``STATE_DIM`` = 17, see docs/interfaces.md), the one layout every part uses::

    s[JOINT_POS]  q      (7, rad, URDF joint order)      columns 0-6
    s[JOINT_VEL]  qd     (7, rad/s)                      columns 7-13
    s[PUCK]       puck   (3, m, world frame)             columns 14-16

Action: ``ACTION_DIM`` = 7 joint velocities, normalised to [-1, 1]. Target: ``TARGET_DIM`` = 3
(xyz, m, world frame). Extra columns after these 17 (optional simulator observations) are
ignored here. The policy observation (:func:`push_obs`, layout ``PUSH_OBS_LAYOUT``) is
``[s (17), target - puck (3)]``; :func:`push_goal_task` is the task as MBPO/SAC see it.

Reward of a transition, computed on the next state::

    r = -||puck - target|| - w * g * path(tool_tip(q), push_point) - c * ||a||^2
        - k * intrusion(tool_tip(q), puck)
    push_point = puck + (puck - target) / ||puck - target|| * (puck_radius + tool_radius)
    g = min(1, ||puck - target|| / fade)      (g = 1 when fade = 0)

``push_point`` is where the pusher must stand to push the puck straight towards the target;
``w`` is ``task.reward.tool_shaping_weight`` (0 by default: the lecture's reward);
``path`` is the straight distance or, with ``task.reward.tool_path: around_puck``, the way
around the puck (:func:`tool_path`). On the
target the push direction is undefined (it flips with millimetres of puck motion), so a tool
drawn to the push point there rams the puck off the target; ``fade``
(``task.reward.tool_shaping_fade_m``) fades the tool term out over the last ``fade`` metres.
``c`` (``task.reward.action_cost``) is a control cost on the normalised action ``a`` in [-1, 1]
(as in PETS' pusher): once the puck is on the target, standing still scores best.
``k`` (``task.reward.tool_intrusion_weight``, 0 by default) weighs how deep the tool's end is
inside the space the puck occupies (:func:`tool_intrusion`): a tool there is on top of the puck,
pressing it into the table, which no push comes out of (the twin's stalled episodes).
"""

import copy
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from mbrl_robot.core.kinematics import SerialChainFK
from mbrl_robot.core.types import GoalTask

STATE_DIM = 17
ACTION_DIM = 7
TARGET_DIM = 3
JOINT_POS = slice(0, 7)
JOINT_VEL = slice(7, 14)
PUCK = slice(14, 17)
PUSH_OBS_LAYOUT = 'push_state17_target_minus_puck3'
PUSH_OBS_DIM = STATE_DIM + TARGET_DIM
# The same with the tool's end from the arm's kinematics: [s, target - puck, tip, puck - tip]
# (a policy need not learn the forward kinematics to see where its tool is; the model's inputs
# have them too, ``input_features``).
PUSH_TOOL_OBS_LAYOUT = 'push_state17_target_minus_puck3_tip3_puck_minus_tip3'
# Every policy observation layout of the push task and its width.
PUSH_OBS_LAYOUTS = {PUSH_OBS_LAYOUT: PUSH_OBS_DIM, PUSH_TOOL_OBS_LAYOUT: PUSH_OBS_DIM + 6}
# The layout of each ``trainer.distill.observation`` value.
DISTILL_OBSERVATIONS = {'state': PUSH_OBS_LAYOUT, 'state_and_tool': PUSH_TOOL_OBS_LAYOUT}

PUCK_RADIUS_M = 0.035
PUCK_HEIGHT_M = 0.03
TOOL_RADIUS_M = 0.01
TOOL_LINK = 'tool_tip'


def distance(obs: np.ndarray, target: Sequence[float]) -> np.ndarray:
    """Puck-to-target distance.

    Args:
        obs: (..., >=17) states.
        target: (3,) or (..., 3) target position (m, world frame).

    Returns:
        (...) distances in metres (float64).

    Raises:
        ValueError: ``obs`` has fewer than 17 columns or ``target`` is not 3-D.
    """
    obs = np.asarray(obs, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if obs.ndim == 0 or obs.shape[-1] < STATE_DIM:
        raise ValueError(f'obs must have >= {STATE_DIM} columns, got shape {obs.shape}')
    if target.ndim == 0 or target.shape[-1] != 3:
        raise ValueError(f'target must be xyz (..., 3), got shape {target.shape}')
    return np.linalg.norm(obs[..., PUCK] - target, axis=-1)


def tool_path(tip: torch.Tensor, point: torch.Tensor, puck: torch.Tensor,
              radius: float = PUCK_RADIUS_M + TOOL_RADIUS_M, around: bool = True) -> torch.Tensor:
    """Length (...) of the tool's way from ``tip`` to the push ``point`` (..., 3 each, m).

    ``around`` False: the straight line. True: the shortest way in the table plane that does not
    cross the puck, a disk of ``radius`` (puck + tool radius) around ``puck`` with ``point`` on
    its rim: the straight line where it clears the disk, else the tangent from ``tip`` plus the
    arc to ``point``; the height difference is added in quadrature. A tip inside the disk counts
    as on its rim. With the straight line the tool drawn to a push point on the far side of the
    puck goes through it, pushing the puck away from the target (push_anywhere's failures).
    """
    if not around:
        return torch.linalg.vector_norm(tip - point, dim=-1)
    a = tip[..., :2] - puck[..., :2]
    b = point[..., :2] - puck[..., :2]
    na = torch.linalg.vector_norm(a, dim=-1).clamp_min(radius)
    nb = torch.linalg.vector_norm(b, dim=-1).clamp_min(1e-9)
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    theta = torch.atan2(cross.abs(), (a * b).sum(-1))  # angle tip-puck-point, [0, pi]
    clear = torch.acos((radius / na).clamp(max=1.0))  # the widest angle a straight line clears
    straight = torch.linalg.vector_norm(a - b, dim=-1)
    detour = torch.sqrt((na ** 2 - radius ** 2).clamp_min(0.0)) + nb * (theta - clear)
    plane = torch.where(theta <= clear, straight, detour)
    dz = tip[..., 2] - point[..., 2]
    return torch.sqrt(plane ** 2 + dz ** 2)


def tool_intrusion(tip: torch.Tensor, puck: torch.Tensor, radius: float,
                   top: float = PUCK_HEIGHT_M / 2.0 + TOOL_RADIUS_M) -> torch.Tensor:
    """How deep (...) the tool's end ``tip`` (..., 3, m) is inside the puck's space, 0 outside.

    The space is a cylinder around ``puck`` (..., 3, its centre): ``radius`` (m) wide, up to
    ``top`` above the centre (default: the puck's top plus a tool radius of clearance). The
    depth is the smaller of how far the tip is inside the rim in the table plane and how far
    below the top. A rod of ``TOOL_RADIUS_M`` whose end centre is within the puck's own radius
    can only be on top of the puck (from the side the rod touches at ``PUCK_RADIUS_M +
    TOOL_RADIUS_M``). The reward's ``radius`` is ``task.reward.tool_intrusion_radius_m`` (2 cm
    by default, narrower than the puck): the puck a controller records is the tracker's, 60-120
    ms old, and during a firm side push the tool end often shows inside its rim (a guess, not
    validated: docs/results/realistic_twin.md).
    """
    horizontal = torch.linalg.vector_norm(tip[..., :2] - puck[..., :2], dim=-1)
    inside = (radius - horizontal).clamp_min(0.0)
    below = (puck[..., 2] + top - tip[..., 2]).clamp_min(0.0)
    return torch.minimum(inside, below)


def push_point(puck: np.ndarray, target: np.ndarray,
               offset: float = PUCK_RADIUS_M + TOOL_RADIUS_M) -> np.ndarray:
    """Point (..., 3) behind the puck on the target->puck line, ``offset`` from the puck centre."""
    puck = np.asarray(puck, dtype=np.float64)
    away = puck - np.asarray(target, dtype=np.float64)
    norm = np.linalg.norm(away, axis=-1, keepdims=True)
    return puck + away / np.maximum(norm, 1e-9) * offset


class PushTask:
    """Reward and success of the puck-pushing task, batched in torch for planners.

    Args:
        urdf_file: robot URDF for the tool-tip kinematics (default: ``urdf/iiwa7_pusher.urdf``).
        joint_names: order of the 7 joints in the state (``task.joints``); default: URDF order.
        tool_shaping_weight: ``w`` above (>= 0).
        tool_shaping_fade: ``fade`` above (m, >= 0; 0: no fading).
        action_cost: ``c`` above (>= 0).
        tool_intrusion_weight: ``k`` above (>= 0).
        tool_intrusion_radius: the width of the puck's space in ``k``'s term (m, > 0).
        tool_around_puck: the tool term measures the way around the puck, not the straight
            line (:func:`tool_path`; ``task.reward.tool_path``).
        success_radius: success when the final puck-target distance is below this (m).
        target: initial (3,) target, or None (call :meth:`set_target` before :meth:`reward_fn`).
        push_offset: distance of the push point behind the puck centre (m); default puck radius
            + tool radius.
        device: torch device of the reward computation.
        dtype: torch dtype of the reward computation.

    Raises:
        ValueError: negative weight or radius.
    """

    obs_dim = STATE_DIM
    act_dim = ACTION_DIM
    q_slice = JOINT_POS
    qd_slice = JOINT_VEL
    puck_slice = PUCK

    def __init__(self, urdf_file: Optional[str] = None,
                 joint_names: Optional[Sequence[str]] = None,
                 tool_shaping_weight: float = 0.0, success_radius: float = 0.05,
                 tool_shaping_fade: float = 0.0, action_cost: float = 0.0,
                 tool_around_puck: bool = False, tool_intrusion_weight: float = 0.0,
                 tool_intrusion_radius: float = 0.02,
                 target: Optional[Sequence[float]] = None,
                 push_offset: float = PUCK_RADIUS_M + TOOL_RADIUS_M,
                 device: torch.device = torch.device('cpu'), dtype: torch.dtype = torch.float32):
        if min(tool_shaping_weight, tool_shaping_fade, action_cost, tool_intrusion_weight) < 0.0:
            raise ValueError('tool_shaping_weight, tool_shaping_fade, action_cost and '
                             'tool_intrusion_weight must be >= 0, got '
                             f'{tool_shaping_weight}, {tool_shaping_fade}, {action_cost}, '
                             f'{tool_intrusion_weight}')
        if success_radius <= 0.0 or push_offset < 0.0 or tool_intrusion_radius <= 0.0:
            raise ValueError('success_radius and tool_intrusion_radius must be > 0 and '
                             f'push_offset >= 0, got {success_radius}, {tool_intrusion_radius}, '
                             f'{push_offset}')
        if urdf_file is None:
            from mbrl_robot.paths import urdf_path
            urdf_file = urdf_path('iiwa7_pusher.urdf')
        self.device = torch.device(device)
        self.dtype = dtype
        self.kinematics = SerialChainFK(urdf_file, TOOL_LINK, joint_names, self.device, dtype)
        if self.kinematics.num_joints != ACTION_DIM:
            raise ValueError(f'{urdf_file}: expected {ACTION_DIM} joints to {TOOL_LINK}, found '
                             f'{self.kinematics.num_joints}')
        self.joint_names = self.kinematics.joint_names
        self.tool_shaping_weight = float(tool_shaping_weight)
        self.tool_shaping_fade = float(tool_shaping_fade)
        self.action_cost = float(action_cost)
        self.tool_intrusion_weight = float(tool_intrusion_weight)
        self.tool_intrusion_radius = float(tool_intrusion_radius)
        self.tool_around_puck = bool(tool_around_puck)
        self.success_radius = float(success_radius)
        self.push_offset = float(push_offset)
        self._target: Optional[torch.Tensor] = None
        if target is not None:
            self.set_target(target)

    @classmethod
    def from_config(cls, task_config: Mapping[str, Any], **kwargs) -> 'PushTask':
        """Build from the ``task`` block of a config (``node_params(profile, node)['task']``);
        missing keys take the schema's defaults (``mbrl_robot/params/shared.yaml``)."""
        from mbrl_robot.core.schema import schema_defaults
        task = schema_defaults('shared', 'task')
        reward = {**task['reward'], **(dict(task_config).get('reward') or {})}
        task = {**task, **dict(task_config)}
        return cls(joint_names=task['joints'],
                   tool_shaping_weight=float(reward['tool_shaping_weight']),
                   tool_shaping_fade=float(reward['tool_shaping_fade_m']),
                   action_cost=float(reward['action_cost']),
                   tool_around_puck=reward['tool_path'] == 'around_puck',
                   tool_intrusion_weight=float(reward['tool_intrusion_weight']),
                   tool_intrusion_radius=float(reward['tool_intrusion_radius_m']),
                   success_radius=float(task['success_radius_m']), **kwargs)

    def to(self, device: torch.device) -> 'PushTask':
        """Move the computation to ``device`` in place; returns self."""
        self.device = torch.device(device)
        self.kinematics.to(self.device)
        if self._target is not None:
            self._target = self._target.to(self.device)
        return self

    @property
    def target(self) -> Optional[np.ndarray]:
        """Current target (3,) as numpy, or None."""
        return None if self._target is None else self._target.detach().cpu().numpy().copy()

    def set_target(self, xyz: Sequence[float]) -> None:
        """Set the target position (3,) in metres, world frame.

        Raises:
            ValueError: not 3 finite numbers.
        """
        # A copy: the task's tensor is later written in place and must never be the caller's.
        xyz = torch.tensor(np.asarray(xyz, dtype=np.float64), dtype=self.dtype,
                           device=self.device)
        if xyz.shape != (3,) or not bool(torch.isfinite(xyz).all()):
            raise ValueError(f'target must be 3 finite numbers, got {xyz.tolist()}')
        if self._target is not None and self._target.device == xyz.device:
            # In place: a compiled or captured plan keeps reading the same tensor.
            self._target.copy_(xyz)
        else:
            self._target = xyz

    def tool_tip(self, obs: torch.Tensor) -> torch.Tensor:
        """Tool-tip position (..., 3) from the joint angles in obs (..., >=17)."""
        return self.kinematics.tip_position(obs[..., JOINT_POS])

    def reward_fn(self, next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Reward (...) of taking ``act`` (..., 7) and reaching ``next_obs`` (..., >=17).

        Matches :data:`mbrl_robot.core.types.RewardFnType`.

        Raises:
            RuntimeError: no target set.
            ValueError: ``next_obs`` has fewer than 17 columns.
        """
        if self._target is None:
            raise RuntimeError('PushTask.reward_fn: no target; call set_target(xyz) first')
        if next_obs.shape[-1] < STATE_DIM:
            raise ValueError(f'next_obs must have >= {STATE_DIM} columns, '
                             f'got shape {tuple(next_obs.shape)}')
        target = self._target.to(device=next_obs.device)
        tip = None
        if self.tool_shaping_weight > 0.0 or self.tool_intrusion_weight > 0.0:
            tip = self.kinematics.to(next_obs.device).tip_position(next_obs[..., JOINT_POS])
        return self.reward_from_tip(next_obs[..., PUCK], tip, act, target)

    def reward_from_tip(self, puck: torch.Tensor, tip: Optional[torch.Tensor],
                        act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reward's terms (...) from the puck (..., 3), the tool tip (..., 3; None when no
        term uses it), the action (..., 7) and the target (..., 3), in ``target``'s dtype. The
        twin computes its reward here too, with the tip its physics reports."""
        puck = puck.to(target.dtype)
        away = puck - target
        dist = torch.linalg.vector_norm(away, dim=-1)
        reward = -dist
        if tip is not None:
            tip = tip.to(target.dtype)
        if self.tool_intrusion_weight > 0.0:
            reward = reward - self.tool_intrusion_weight * tool_intrusion(
                tip, puck, self.tool_intrusion_radius)
        if self.tool_shaping_weight > 0.0:
            point = puck + away / dist.clamp_min(1e-9).unsqueeze(-1) * self.push_offset
            term = self.tool_shaping_weight * tool_path(
                tip, point, puck, self.push_offset, self.tool_around_puck)
            if self.tool_shaping_fade > 0.0:
                term = term * (dist / self.tool_shaping_fade).clamp_max(1.0)
            reward = reward - term
        if self.action_cost > 0.0:
            reward = reward - self.action_cost * (act.to(reward.dtype) ** 2).sum(-1)
        return reward

    def distance(self, obs: np.ndarray, target: Optional[Sequence[float]] = None) -> np.ndarray:
        """Puck-target distance (...) of obs (..., >=17); default target: the current one."""
        if target is None:
            if self._target is None:
                raise RuntimeError('PushTask.distance: no target; pass one or call set_target')
            target = self.target
        return distance(obs, target)

    def is_success(self, obs: np.ndarray, target: Optional[Sequence[float]] = None) -> np.ndarray:
        """Boolean (...): puck within ``success_radius`` of the target."""
        return self.distance(obs, target) < self.success_radius


def push_obs(state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Policy observation (B, 20) of the push task: ``[s (17), target - puck (3)]``.

    Args:
        state: (B, >=17) states (extra columns are dropped).
        target: (B, 3) targets.
    """
    state = state[..., :STATE_DIM]
    return torch.cat((state, target - state[..., PUCK]), dim=-1)


def push_obs_fn(task: PushTask, obs_layout: str = PUSH_OBS_LAYOUT
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The policy observation of ``obs_layout`` (:data:`PUSH_OBS_LAYOUTS`) as a function
    ``(state (B, >=17), target (B, 3)) -> obs (B, O)`` (float32, on the state's device); the
    tool layout takes the tool's end from ``task``'s kinematics.

    Raises:
        ValueError: an unknown layout.
    """
    if obs_layout == PUSH_OBS_LAYOUT:
        return push_obs
    if obs_layout != PUSH_TOOL_OBS_LAYOUT:
        raise ValueError(f'push policy observation layout must be one of '
                         f'{sorted(PUSH_OBS_LAYOUTS)}, got {obs_layout!r}')

    def make_obs(state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        state = state[..., :STATE_DIM]
        tip = task.tool_tip(state.to(device=task.device, dtype=task.dtype)).to(
            device=state.device, dtype=state.dtype)
        puck = state[..., PUCK]
        return torch.cat((state, target - puck, tip, puck - tip), dim=-1)

    return make_obs


def push_goal_task(task: PushTask, command_filter=None,
                   obs_layout: str = PUSH_OBS_LAYOUT) -> GoalTask:
    """The twin's task for MBPO: PushTask's reward per rollout target, the controller's filter.

    Args:
        task: a :class:`PushTask` (its reward settings are used; its own target is not touched).
        command_filter: the controller's :class:`~mbrl_robot.core.safety.CommandFilter`, or
            None. In model rollouts the previous command is not in the state; the filter uses
            the state's joint velocities ``qd`` instead (the arm tracks its velocity command
            within one step).
        obs_layout: the policy's observation (:data:`PUSH_OBS_LAYOUTS`).
    """
    make_obs = push_obs_fn(task, obs_layout)

    def reward_fn(next_state: torch.Tensor, act: torch.Tensor,
                  goal: torch.Tensor) -> torch.Tensor:
        # PushTask.reward_fn broadcasts over rows: a shallow copy carries (B, 3) targets, one per
        # rollout, while the shared kinematics and weights stay those of ``task``.
        per_row = copy.copy(task)
        per_row._target = goal.to(dtype=task.dtype, device=next_state.device)
        return per_row.reward_fn(next_state, act)

    def action_filter(state: np.ndarray, act: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        previous = state[:, JOINT_VEL]
        cmd = command_filter(state[:, JOINT_POS], command_filter.to_velocity(act), previous)
        return command_filter.to_action(cmd).astype(np.float32)

    def achieved_goal(state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        # The puck's x, y; the target's height stays (a target is where the resting puck's
        # centre would be; the measured centre height only adds tracker noise).
        reached = np.array(goal, dtype=np.float32, copy=True)
        reached[:, :2] = np.asarray(state)[:, PUCK][:, :2]
        return reached

    return GoalTask(STATE_DIM, TARGET_DIM, ACTION_DIM, obs_layout, make_obs, reward_fn,
                    None if command_filter is None else action_filter, achieved_goal)
