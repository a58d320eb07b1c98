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
"""The deployed policy network and its checkpoint: what the controller loads, no training code.

* :class:`DeterministicPolicy`: ``tanh(mu(mlp(obs)))``, SAC's deterministic action, copied out of
  an SB3 ``SAC`` by :meth:`DeterministicPolicy.from_sac` (duck-typed: SB3 is not imported here).
* :class:`PolicyEnsemble`: the mean action of several such networks fitted to the same data
  (bagging: the fit's seed alone moves a distilled policy's success by up to 17 points).
* :class:`ChunkEnsemble`: a policy that predicts its next ``chunk`` actions at every step
  (``DeterministicPolicy(..., chunk=k)``) executes, at each step, the weighted mean of every
  prediction made for that step (temporal ensembling, Zhao et al. 2023).
* :func:`save_policy`, :func:`load_policy`: a versioned checkpoint directory, ``policy.pt`` +
  ``policy.json`` (format version, dims, hidden sizes, activation, members, observation layout,
  version, sha256) and, to resume training, ``sac.zip``.

Trained by :mod:`mbrl_robot.core.algorithms.mbpo` (MBPO) and
:mod:`mbrl_robot.core.algorithms.sac_baseline` (SAC); run by ``core/control.py``.
"""

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.checkpoint import load_checkpoint, save_checkpoint

POLICY_FILE = 'policy.pt'
POLICY_META = 'policy.json'
SAC_FILE = 'sac.zip'
POLICY_FORMAT_VERSION = 1
ACTIVATIONS = {'relu': torch.nn.ReLU, 'tanh': torch.nn.Tanh, 'silu': torch.nn.SiLU,
               'elu': torch.nn.ELU}


class DeterministicPolicy(torch.nn.Module):
    """The deployed policy: ``tanh(mu(mlp(obs)))``, SAC's deterministic action.

    Args:
        obs_dim: O.
        act_dim: A, one step's action.
        hidden_sizes: widths of the hidden layers.
        activation: ``relu`` (SB3's SAC default), ``tanh``, ``silu`` or ``elu``.
        chunk: actions predicted per observation, this step's and the next ``chunk - 1``
            (the output is ``chunk * A`` wide, step-major); 1 for an ordinary policy.
        chunk_decay: how a deployed chunked policy weighs its predictions of one step
            (:class:`ChunkEnsemble`: ``exp(-chunk_decay * age)``; 0 averages them).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int],
                 activation: str = 'relu', chunk: int = 1, chunk_decay: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f'activation must be one of {sorted(ACTIVATIONS)}, '
                             f'got {activation!r}')
        for name, v in (('obs_dim', obs_dim), ('act_dim', act_dim), ('chunk', chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'{name} must be an int >= 1, got {v!r}')
        if isinstance(chunk_decay, bool) or not isinstance(chunk_decay, (int, float)) \
                or not 0.0 <= chunk_decay < float('inf'):
            raise ValueError(f'chunk_decay must be a finite number >= 0, got {chunk_decay!r}')
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.chunk, self.chunk_decay = chunk, float(chunk_decay)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.activation = activation
        layers: List[torch.nn.Module] = []
        size = obs_dim
        for h in self.hidden_sizes:
            layers += [torch.nn.Linear(size, h), ACTIVATIONS[activation]()]
            size = h
        self.latent = torch.nn.Sequential(*layers)
        self.mu = torch.nn.Linear(size, act_dim * chunk)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions (B, chunk * A) in [-1, 1] from obs (B, O)."""
        return torch.tanh(self.mu(self.latent(obs)))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """One prediction (chunk * A,) float64 from one observation (O,): one action unless
        the policy predicts chunks.

        Raises:
            ValueError: wrong shape or non-finite observation.
        """
        x = np.asarray(obs, dtype=np.float32)
        if x.shape != (self.obs_dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f'policy observation must be {self.obs_dim} finite numbers, '
                             f'got shape {x.shape}')
        return self.forward(torch.as_tensor(x)[None])[0].double().numpy()

    @property
    def members(self) -> int:
        """Networks whose actions are averaged (1)."""
        return 1

    @classmethod
    def from_sac(cls, sac) -> 'DeterministicPolicy':
        """Copy the actor of an SB3 ``SAC`` (MlpPolicy, no gSDE, Box actions in [-1, 1])."""
        actor = sac.actor
        linears = [m for m in actor.latent_pi if isinstance(m, torch.nn.Linear)]
        acts = [m for m in actor.latent_pi if not isinstance(m, torch.nn.Linear)]
        names = {v: k for k, v in ACTIVATIONS.items()}
        activation = names.get(type(acts[0]), None) if acts else 'relu'
        if activation is None or actor.use_sde:
            raise ValueError('DeterministicPolicy.from_sac: unsupported actor (gSDE or '
                             f'activation {type(acts[0]).__name__})')
        low, high = sac.action_space.low, sac.action_space.high
        if not (np.all(low == -1.0) and np.all(high == 1.0)):
            raise ValueError('DeterministicPolicy.from_sac: action space must be [-1, 1]')
        policy = cls(int(np.prod(sac.observation_space.shape)), int(actor.mu.out_features),
                     [m.out_features for m in linears], activation)
        with torch.no_grad():
            for dst, src in zip([m for m in policy.latent if isinstance(m, torch.nn.Linear)],
                                linears):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
            policy.mu.weight.copy_(actor.mu.weight)
            policy.mu.bias.copy_(actor.mu.bias)
        return policy.eval()


class PolicyEnsemble(DeterministicPolicy):
    """The mean action of ``members`` :class:`DeterministicPolicy` networks of one architecture.

    Args:
        policies: the networks (each ``obs (B, O) -> action (B, A)``), or
        obs_dim, act_dim, hidden_sizes, activation, members, chunk, chunk_decay: an untrained
            ensemble of that shape (what :func:`load_policy` fills).
    """

    def __init__(self, policies: Optional[Sequence[DeterministicPolicy]] = None, *,
                 obs_dim: int = 0, act_dim: int = 0, hidden_sizes: Sequence[int] = (),
                 activation: str = 'relu', members: int = 0, chunk: int = 1,
                 chunk_decay: float = 0.0):
        if policies is None:
            if isinstance(members, bool) or not isinstance(members, int) or members < 2:
                raise ValueError(f'PolicyEnsemble: members must be an int >= 2, got {members!r}')
            policies = [DeterministicPolicy(obs_dim, act_dim, hidden_sizes, activation, chunk,
                                            chunk_decay) for _ in range(members)]
        policies = list(policies)
        first = policies[0]
        shape = (first.obs_dim, first.act_dim, first.hidden_sizes, first.activation,
                 first.chunk, first.chunk_decay)
        if len(policies) < 2 or any(
                (p.obs_dim, p.act_dim, p.hidden_sizes, p.activation, p.chunk,
                 p.chunk_decay) != shape
                or type(p) is not DeterministicPolicy for p in policies):
            raise ValueError('PolicyEnsemble: needs >= 2 DeterministicPolicy networks of one '
                             'architecture')
        torch.nn.Module.__init__(self)
        (self.obs_dim, self.act_dim, self.hidden_sizes, self.activation, self.chunk,
         self.chunk_decay) = shape
        self.nets = torch.nn.ModuleList(policies)

    @property
    def members(self) -> int:
        """Networks whose actions are averaged."""
        return len(self.nets)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The members' mean prediction (B, chunk * A) in [-1, 1] from obs (B, O)."""
        return torch.stack([net(obs) for net in self.nets]).mean(0)


class ChunkEnsemble:
    """Temporal ensembling of a chunked policy's predictions (ACT, Zhao et al. 2023).

    A policy with ``chunk = k`` predicts at step ``t`` the actions of steps ``t .. t + k - 1``.
    Each step executes the weighted mean of the predictions made for it in the last ``k``
    steps, weight ``exp(-decay * age)`` (``age``: steps since that prediction was made), so
    the executed actions carry what the policy intended a moment ago, as a planner's warm
    start carries its last plan.

    Args:
        act_dim: A.
        chunk: k, the actions per prediction.
        decay: >= 0; 0 averages the predictions, larger trusts the newest more.
    """

    def __init__(self, act_dim: int, chunk: int, decay: float = 0.0):
        self.act_dim, self.chunk, self.decay = int(act_dim), int(chunk), float(decay)
        self._made: List[Tuple[int, np.ndarray]] = []  # (step, (k, A)), oldest first

    def reset(self) -> None:
        """Forget every prediction (an episode start, or after a stop at the goal)."""
        self._made = []

    def add(self, step: int, prediction: np.ndarray) -> np.ndarray:
        """Store the prediction (k * A,) made at ``step``; returns the ensembled actions
        (k, A) of steps ``step .. step + k - 1`` from every stored prediction that covers them
        (the first row is this step's action, the others a fallback for late steps). A step
        before the last stored one starts afresh."""
        rows = np.asarray(prediction, dtype=np.float64).reshape(self.chunk, self.act_dim)
        if self._made and step <= self._made[-1][0]:
            self._made = []
        self._made = [(s, p) for s, p in self._made if s + self.chunk > step] + [(step, rows)]
        out = np.zeros((self.chunk, self.act_dim))
        weights = np.zeros(self.chunk)
        for made, rows_made in self._made:
            for i in range(self.chunk):
                j = step + i - made  # that prediction's row for step + i
                if j < self.chunk:
                    w = np.exp(-self.decay * j)
                    out[i] += w * rows_made[j]
                    weights[i] += w
        return out / weights[:, None]


def save_policy(policy: DeterministicPolicy, directory: Union[str, os.PathLike], version: int,
                obs_layout: str, sac=None, extra: Optional[Dict[str, Any]] = None) -> str:
    """Write a versioned policy checkpoint directory; returns the sha256 of ``policy.pt``.

    Files: ``policy.pt`` (state dict), ``policy.json`` (format version, dims, hidden sizes,
    activation, ``obs_layout``, ``version``, ``sha256``, ``extra``), and ``sac.zip`` (the full
    SB3 model, to resume training) when ``sac`` is given. ``policy.json`` is renamed into place
    last, so a reader never sees a checksum that does not match the weights.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f'save_policy: version must be an int >= 0, got {version!r}')
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if sac is not None:
        sac.save(str(d / SAC_FILE))
    meta = {'format_version': POLICY_FORMAT_VERSION, 'policy_class': type(policy).__name__,
            'obs_dim': policy.obs_dim, 'act_dim': policy.act_dim,
            'hidden_sizes': policy.hidden_sizes, 'activation': policy.activation,
            'members': policy.members, 'chunk': policy.chunk,
            'chunk_decay': policy.chunk_decay, 'obs_layout': obs_layout, 'version': version,
            'torch_version': torch.__version__, 'extra': extra or {}}
    sha = save_checkpoint(d, POLICY_FILE, POLICY_META, policy, meta)
    return sha


def load_policy(directory: Union[str, os.PathLike], version: Optional[int] = None,
                sha256: Optional[str] = None, obs_dim: Optional[int] = None,
                act_dim: Optional[int] = None, obs_layout: Optional[str] = None,
                device: Union[str, torch.device] = 'cpu'
                ) -> Tuple[DeterministicPolicy, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_policy`.

    Args:
        directory: folder with ``policy.pt`` and ``policy.json``.
        version: if given, the version the checkpoint must carry.
        sha256: if given, the checksum announced for ``policy.pt``.
        obs_dim: if given, the expected observation dimension.
        act_dim: if given, the expected action dimension.
        obs_layout: if given, the expected observation layout name.
        device: where to put the weights.

    Returns:
        The policy (eval mode) and the metadata dict.

    Raises:
        FileNotFoundError: the directory or a file is missing.
        ValueError: corrupt JSON or weights, checksum, version, dims or layout mismatch.
    """
    meta, state, meta_path, weights_path = load_checkpoint(
        directory, POLICY_FILE, POLICY_META, POLICY_FORMAT_VERSION,
        ('obs_dim', 'act_dim', 'hidden_sizes', 'activation', 'obs_layout', 'version'),
        {'obs_dim': obs_dim, 'act_dim': act_dim, 'obs_layout': obs_layout, 'version': version,
         'sha256': sha256}, 'policy')
    try:
        members = meta.get('members', 1)  # absent before session 18: one network
        # Absent before session 24: one action per observation.
        chunk, decay = meta.get('chunk', 1), meta.get('chunk_decay', 0.0)
        if members == 1:
            policy = DeterministicPolicy(int(meta['obs_dim']), int(meta['act_dim']),
                                         meta['hidden_sizes'], meta['activation'], chunk, decay)
        else:
            policy = PolicyEnsemble(obs_dim=int(meta['obs_dim']), act_dim=int(meta['act_dim']),
                                    hidden_sizes=meta['hidden_sizes'],
                                    activation=meta['activation'], members=members,
                                    chunk=chunk, chunk_decay=decay)
        policy.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f'{weights_path}: weights do not match the architecture in '
                         f'{meta_path}: {e}') from e
    return policy.to(device).eval(), meta
