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
"""Reward and termination functions of public gymnasium tasks, for the planners.

Each is written from the env's own definition (gymnasium 1.x, ``gymnasium/envs/...``), in
batched torch on the observation after the step and the action, as
:func:`mbrl_robot.core.algorithms.recipe.run_mbrl` and ``create_agent`` take them: ``(next_obs
(..., S), act (..., A)) -> (...)``. Where the env computes its reward from something the
observation does not hold exactly, the docstring says what differs.

:data:`GYM_TASKS` maps an env id to ``(reward_fn, termination_fn or None)``; the MuJoCo ones need
``gymnasium[mujoco]`` only to make the env, not to import this module.
"""

from typing import Dict, Optional, Tuple

import torch

from mbrl_robot.core.types import RewardFnType, TerminationFnType


def pendulum_reward(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``Pendulum-v1``: ``-(theta^2 + 0.1 thetadot^2 + 0.001 u^2)``, theta in [-pi, pi].

    The obs is ``(cos theta, sin theta, thetadot)``. The env charges the state *before* the
    step (and the clipped torque, |u| <= 2); here the state after it, as planners see rewards:
    the same cost shifted by one step.
    """
    theta = torch.atan2(next_obs[..., 1], next_obs[..., 0])
    u = act[..., 0].clamp(-2.0, 2.0)
    return -(theta ** 2 + 0.1 * next_obs[..., 2] ** 2 + 0.001 * u ** 2)


def mountain_car_termination(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``MountainCarContinuous-v0`` ends at position >= 0.45 with velocity >= 0."""
    return (next_obs[..., 0] >= 0.45) & (next_obs[..., 1] >= 0.0)


def mountain_car_reward(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``MountainCarContinuous-v0``: +100 on reaching the goal, ``-0.1 a^2`` every step.

    The env squares the unclipped action; its action space is [-1, 1].
    """
    goal = mountain_car_termination(next_obs, act).to(next_obs.dtype)
    return 100.0 * goal - 0.1 * act[..., 0] ** 2


def inverted_pendulum_termination(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``InvertedPendulum-v5`` ends when the obs is not finite or the hinge angle (obs[1];
    the obs is qpos (slider, hinge), qvel) leaves [-0.2, 0.2] rad."""
    return ~torch.isfinite(next_obs).all(dim=-1) | (next_obs[..., 1].abs() > 0.2)


def inverted_pendulum_reward(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``InvertedPendulum-v5``: 1 per step while the pole is up, 0 on the terminating step."""
    return (~inverted_pendulum_termination(next_obs, act)).to(next_obs.dtype)


def reacher_reward(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``Reacher-v5`` with its default weights: ``-||fingertip - target|| - ||a||^2``.

    The obs is (cos q (2), sin q (2), target xy (2), qdot (2), fingertip - target xy (2)), so the
    distance is ``||obs[8:10]||``; the env takes the 3-D vector, whose z component is zero
    (fingertip and target lie in the same plane). ``reward_control_weight`` defaults to 1 in
    ``reacher_v5.py`` (the v4 cost; the docs' table says 0.1), and the env squares the
    unclipped action.
    """
    return -torch.linalg.vector_norm(next_obs[..., 8:10], dim=-1) - (act ** 2).sum(dim=-1)


def half_cheetah_reward(next_obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``HalfCheetah-v5`` with its default weights: ``x_velocity - 0.1 ||a||^2``.

    The obs is qpos without rootx (8) then qvel (9), so obs[8] is the torso's x velocity at the
    end of the step; the env takes the mean over the step (displacement / dt), so the two
    differ a little within a step.
    """
    return next_obs[..., 8] - 0.1 * (act ** 2).sum(dim=-1)


GYM_TASKS: Dict[str, Tuple[RewardFnType, Optional[TerminationFnType]]] = {
    'Pendulum-v1': (pendulum_reward, None),
    'MountainCarContinuous-v0': (mountain_car_reward, mountain_car_termination),
    'InvertedPendulum-v5': (inverted_pendulum_reward, inverted_pendulum_termination),
    'Reacher-v5': (reacher_reward, None),
    'HalfCheetah-v5': (half_cheetah_reward, None),
}
