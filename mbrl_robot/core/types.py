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
"""Shared vocabulary of the core: transition batches, goal tasks and the interfaces planners use.

Shapes: ``S`` state dim, ``A`` action dim, ``K`` ensemble members, ``B`` batch, ``H`` horizon.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Tuple

import numpy as np
import torch

# reward_fn(next_obs (..., S), act (..., A)) -> reward (...). Batched, pure torch, any device.
RewardFnType = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TransitionBatch:
    """A batch of real transitions (s, a, r, s').

    Attributes:
        obs: (N, S) float32 states.
        act: (N, A) float32 actions (normalised to [-1, 1]).
        next_obs: (N, S) float32 next states.
        reward: (N,) float32 rewards, or None where nobody needs them (model training).
        done: (N,) bool, True on the last step of an episode (time limit or termination), or
            None where nobody needs them (model training).
    """

    obs: np.ndarray
    act: np.ndarray
    next_obs: np.ndarray
    reward: Optional[np.ndarray] = None
    done: Optional[np.ndarray] = None

    def __post_init__(self):
        n = len(self.obs)
        for name in ('act', 'next_obs', 'reward', 'done'):
            if getattr(self, name) is None and name in ('reward', 'done'):
                continue
            if len(getattr(self, name)) != n:
                raise ValueError(f'TransitionBatch: {name} has {len(getattr(self, name))} rows, '
                                 f'obs has {n}')
        if self.obs.shape != self.next_obs.shape:
            raise ValueError('TransitionBatch: obs and next_obs shapes differ')

    def __len__(self) -> int:
        return len(self.obs)

    @staticmethod
    def concat(batches) -> 'TransitionBatch':
        """Concatenate batches row-wise; reward/done stay None unless every batch has them.

        Raises:
            ValueError: some batches have reward (or done) and others do not.
        """
        batches = list(batches)
        cols = {}
        for f in ('obs', 'act', 'next_obs', 'reward', 'done'):
            parts = [getattr(b, f) for b in batches]
            missing = sum(p is None for p in parts)
            if missing == len(parts) and f in ('reward', 'done'):
                cols[f] = None
            elif missing:
                raise ValueError(f'TransitionBatch.concat: {missing} of {len(parts)} batches '
                                 f'have no {f}')
            else:
                cols[f] = np.concatenate(parts)
        return TransitionBatch(**cols)


@dataclass
class GoalTask:
    """A goal-reaching task as a policy learner (MBPO, SAC) sees it.

    Attributes:
        state_dim: S, what the ensemble predicts.
        goal_dim: G, fixed for an episode (the target).
        act_dim: A.
        obs_layout: name of the ``make_obs`` layout, recorded in the policy checkpoint.
        make_obs: ``(state (B, S), goal (B, G)) -> obs (B, O)`` on torch tensors.
        reward_fn: ``(next_state (B, S), act (B, A), goal (B, G)) -> (B,)`` torch.
        action_filter: ``(state (B, S), act (B, A)) -> executed act (B, A)`` in numpy, or None.
            In model rollouts the ensemble sees the executed action, like in the real data.
        achieved_goal: ``(state (B, S), goal (B, G)) -> goal (B, G)`` in numpy: the goal the
            state achieves (the push task: the puck's x, y, with the given goal's height),
            what hindsight relabelling (``mbpo.relabel_goals``) substitutes for the episode's
            goal; None: the task cannot be relabelled.
    """

    state_dim: int
    goal_dim: int
    act_dim: int
    obs_layout: str
    make_obs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reward_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    action_filter: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None
    achieved_goal: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None

    def obs_np(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """``make_obs`` for numpy (S,)/(G,) or (B, S)/(B, G) arrays; float32 result."""
        s = torch.as_tensor(np.asarray(state, dtype=np.float32))
        g = torch.as_tensor(np.asarray(goal, dtype=np.float32))
        single = s.ndim == 1
        out = self.make_obs(s.reshape(-1, self.state_dim), g.reshape(-1, self.goal_dim))
        out = out.numpy().astype(np.float32)
        return out[0] if single else out


class DynamicsModel(Protocol):
    """What a planner needs of a learned model (see ``core.models.ensemble``).

    Members are laid out on the leading axis so all K run as one batched program.
    """

    ensemble_size: int
    device: torch.device

    def sample_next(self, obs: torch.Tensor, act: torch.Tensor,
                    deterministic: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Next states (K, B, S) from obs (K, B, S), act (K, B, A); row k runs on member k.

        Probabilistic members sample from their Gaussian head unless ``deterministic``.
        """

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (K, B, S) of each member's next state for shared (B, ·) inputs."""


# termination_fn(next_obs (..., S), act (..., A)) -> bool (...): True where the episode ends.
TerminationFnType = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def elite_model(model: DynamicsModel) -> DynamicsModel:
    """The model restricted to its elites, as PETS and MBPO roll out.

    A model whose ``elite_indices`` (optional attribute) name a strict subset of its members
    must offer ``select_members(indices)`` (``GaussianEnsemble`` does); the result holds only
    the elites. Without ``elite_indices``, or when every member is an elite, ``model`` itself.

    Raises:
        TypeError: elites are a strict subset but the model cannot select members.
    """
    elites = getattr(model, 'elite_indices', None)
    k = getattr(model, 'ensemble_size', None)
    if elites is None or sorted(int(i) for i in elites) == list(range(k)):
        return model
    select = getattr(model, 'select_members', None)
    if not callable(select):
        raise TypeError(f'model {type(model).__name__} has elites {list(elites)} of {k} members '
                        f'but no select_members(indices)')
    return select(elites)
