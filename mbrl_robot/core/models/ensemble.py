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
"""Probabilistic ensemble of MLPs predicting state deltas (PETS; Chua et al., NeurIPS 2018).

All K members run as one batched program: every layer holds its weights as a (K, in, out)
tensor and applies ``torch.baddbmm``, so an ensemble costs one kernel per layer, not K.
Member k of a (K, B, ·) batch only ever sees row k.

Units: ``forward``/``loss``/``eval_score`` work on *normalised* tensors (inputs standardised by
``input_normalizer``, targets = standardised deltas); ``predict``/``sample_next`` take and
return real units.
"""

import copy
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from mbrl_robot.core.checkpoint import load_checkpoint, save_checkpoint
from mbrl_robot.core.models.normalizer import Normalizer
from mbrl_robot.core.tasks.push import ACTION_DIM, JOINT_POS, PUCK, STATE_DIM

FORMAT_VERSION = 1
# Known-kinematics input features (see ``GaussianEnsemble``): name -> number of columns. They need
# the pushing task's state layout exactly (``core.tasks.push``: STATE_DIM = 17 columns, q of the
# iiwa7 pusher in JOINT_POS in URDF joint order, puck xyz in PUCK; ACTION_DIM = 7).
INPUT_FEATURES: Dict[str, int] = {'tool_tip': 3, 'tip_to_puck': 3}
MODEL_FILE = 'model.pt'
META_FILE = 'model.json'


def _silu_(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=True)


def _elu_(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, inplace=True)


# Out-of-place activations (training, autograd) and in-place twins (no-grad hot path); named
# functions, not lambdas, so a model pickles (MBPO's resume state holds the whole learner).
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'silu': F.silu, 'relu': F.relu, 'tanh': torch.tanh, 'elu': F.elu,
}
_INPLACE_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'silu': _silu_, 'relu': torch.relu_, 'tanh': torch.tanh_, 'elu': _elu_,
}


class EnsembleLinear(torch.nn.Module):
    """K independent affine maps applied as one batched matmul.

    Args:
        ensemble_size: K.
        in_size: input features.
        out_size: output features.
        generator: optional CPU generator for the initialisation (reproducible members).

    Shapes: weight (K, in, out), bias (K, 1, out); ``forward`` maps (K, B, in) -> (K, B, out).
    """

    def __init__(self, ensemble_size: int, in_size: int, out_size: int,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(ensemble_size, in_size, out_size))
        self.bias = torch.nn.Parameter(torch.zeros(ensemble_size, 1, out_size))
        # PETS / mbrl-lib init: truncated normal, std = 1 / (2 sqrt(in)).
        std = 1.0 / (2.0 * math.sqrt(in_size))
        torch.nn.init.trunc_normal_(self.weight, std=std, a=-2.0 * std, b=2.0 * std,
                                    generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in) -> (K, B, out)."""
        return torch.baddbmm(self.bias, x, self.weight)


class GaussianEnsemble(torch.nn.Module):
    """K MLPs predicting the normalised state delta, optionally with a Gaussian head.

    ``s' = s + delta``; inputs are ``[obs, act]`` standardised by ``input_normalizer``,
    targets are ``delta`` standardised by ``output_normalizer`` (both refitted by the trainer
    on every fit). With ``probabilistic=True`` each member outputs mean and log-variance, the
    log-variance softly clamped between learned ``min_logvar``/``max_logvar`` (PETS, Chua et al.
    2018, appendix A.1), and is trained with the Gaussian NLL plus
    ``0.01 * (max_logvar.sum() - min_logvar.sum())``.
    With ``probabilistic=False`` members output the mean only and are trained with MSE.

    ``input_features`` appends quantities computed from the state with the *known* forward
    kinematics of the pusher (``urdf/iiwa7_pusher.urdf``) to the network input: ``tool_tip``, the
    tool-tip position (3), and ``tip_to_puck``, the puck centre minus the tool tip (3). The
    network then only has to learn how contact moves the puck, not the arm's kinematics. They
    are part of the model (saved in ``model.json``), so a loaded model computes them itself.

    Implements the ``DynamicsModel`` protocol of ``mbrl_robot.core.types``.

    Args:
        obs_dim: S, state dimension.
        act_dim: A, action dimension.
        ensemble_size: K, number of members.
        num_layers: hidden layers per member (the lecture's "4x500" is 4 layers of 500).
        hidden_size: width of each hidden layer.
        activation: one of ``silu``, ``relu``, ``tanh``, ``elu``.
        probabilistic: Gaussian mean + log-variance head (True) or deterministic mean (False).
        weight_decay: L2 coefficient(s) on the weights, one float for every layer or a sequence of
            ``num_layers + 1`` floats (input, hidden..., output layer), as in PETS; the penalty is
            ``sum_l wd_l * ||W_l||^2 / 2`` and biases are not decayed.
        num_elites: number of members in ``elite_indices`` (default: all K), the members with
            the best validation score after a fit; planners and MBPO roll out only those
            (:meth:`select_members`). Saved with the model.
        device: where the parameters live.
        seed: seeds the weight initialisation (None: torch's global RNG).
        input_features: names from :data:`INPUT_FEATURES` (a list, or one comma-separated string;
            empty: the plain ``[obs, act]`` input). They compute the iiwa7 pusher's kinematics
            and need the push task's layout exactly: ``obs_dim == 17`` and ``act_dim == 7``
            (anything else raises ValueError).
    """

    def __init__(self, obs_dim: int, act_dim: int, ensemble_size: int = 5, num_layers: int = 4,
                 hidden_size: int = 200, activation: str = 'silu', probabilistic: bool = True,
                 weight_decay: Union[float, Sequence[float]] = 5e-5,
                 num_elites: Optional[int] = None,
                 device: Union[str, torch.device] = 'cpu', seed: Optional[int] = None,
                 input_features: Union[str, Sequence[str]] = ()):
        super().__init__()
        for name, value, low in (('obs_dim', obs_dim, 1), ('act_dim', act_dim, 0),
                                 ('ensemble_size', ensemble_size, 1),
                                 ('num_layers', num_layers, 1), ('hidden_size', hidden_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'GaussianEnsemble: {name} must be an int >= {low}, '
                                 f'got {value!r}')
        if activation not in ACTIVATIONS:
            raise ValueError(f'GaussianEnsemble: activation must be one of '
                             f'{sorted(ACTIVATIONS)}, got {activation!r}')
        if not isinstance(probabilistic, bool):
            raise ValueError(f'GaussianEnsemble: probabilistic must be a bool, '
                             f'got {probabilistic!r}')
        decays = self._parse_weight_decay(weight_decay, num_layers + 1)
        features = self._parse_features(input_features, obs_dim, act_dim)
        if num_elites is None:
            num_elites = ensemble_size
        if (isinstance(num_elites, bool) or not isinstance(num_elites, int)
                or not 1 <= num_elites <= ensemble_size):
            raise ValueError(f'GaussianEnsemble: num_elites must be an int in '
                             f'[1, {ensemble_size}], got {num_elites!r}')

        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.ensemble_size = ensemble_size
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.activation = activation
        self.probabilistic = probabilistic
        self.weight_decays = decays
        self.num_elites = num_elites
        self.config: Dict[str, Any] = {
            'ensemble_size': ensemble_size, 'num_layers': num_layers, 'hidden_size': hidden_size,
            'activation': activation, 'probabilistic': probabilistic,
            'weight_decay': weight_decay if isinstance(weight_decay, (int, float))
            else list(decays),
            'num_elites': num_elites, 'input_features': list(features),
        }
        self._act = ACTIVATIONS[activation]
        self._act_ = _INPLACE_ACTIVATIONS[activation]

        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        self.input_features = features
        self._fk = None
        if features:
            from mbrl_robot.core.kinematics import SerialChainFK
            from mbrl_robot.paths import urdf_path
            self._fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'), 'tool_tip')
        in_size = obs_dim + act_dim + sum(INPUT_FEATURES[f] for f in features)
        self.in_size = in_size
        out_size = obs_dim * (2 if probabilistic else 1)
        sizes = [in_size] + [hidden_size] * num_layers + [out_size]
        self.layers = torch.nn.ModuleList(
            EnsembleLinear(ensemble_size, sizes[i], sizes[i + 1], generator=gen)
            for i in range(len(sizes) - 1))
        if probabilistic:
            # Shared across members as in PETS; initial values from mbrl-lib's GaussianMLP.
            self.max_logvar = torch.nn.Parameter(torch.full((obs_dim,), 0.5))
            self.min_logvar = torch.nn.Parameter(torch.full((obs_dim,), -10.0))
        else:
            self.max_logvar = None
            self.min_logvar = None
        self.input_normalizer = Normalizer(in_size)
        self.output_normalizer = Normalizer(obs_dim)
        self.elite_indices: List[int] = list(range(num_elites))
        self.to(device)

    @staticmethod
    def _parse_weight_decay(weight_decay: Union[float, Sequence[float]],
                            n_layers: int) -> List[float]:
        if isinstance(weight_decay, bool):
            raise ValueError(f'GaussianEnsemble: weight_decay must be a float, got {weight_decay}')
        if isinstance(weight_decay, (int, float)):
            decays = [float(weight_decay)] * n_layers
        else:
            decays = [float(d) for d in weight_decay]
            if len(decays) != n_layers:
                raise ValueError(f'GaussianEnsemble: weight_decay needs 1 or {n_layers} values '
                                 f'(num_layers + 1), got {len(decays)}')
        if any(not math.isfinite(d) or d < 0.0 for d in decays):
            raise ValueError(f'GaussianEnsemble: weight_decay must be finite and >= 0, '
                             f'got {weight_decay!r}')
        return decays

    @staticmethod
    def _parse_features(input_features: Union[str, Sequence[str]], obs_dim: int,
                        act_dim: int) -> List[str]:
        if isinstance(input_features, str):
            names = [f.strip() for f in input_features.split(',') if f.strip()]
        elif isinstance(input_features, (list, tuple)) and all(
                isinstance(f, str) for f in input_features):
            names = [f.strip() for f in input_features]
        else:
            raise ValueError(f'GaussianEnsemble: input_features must be a list of names or a '
                             f'comma-separated string, got {input_features!r}')
        unknown = [f for f in names if f not in INPUT_FEATURES]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f'GaussianEnsemble: input_features {names} must be distinct names '
                             f'from {sorted(INPUT_FEATURES)}')
        if names and (obs_dim != STATE_DIM or act_dim != ACTION_DIM):
            raise ValueError(
                f'GaussianEnsemble: input_features {names} compute the kinematics of the '
                f'iiwa7 pusher and need the push task layout (obs_dim == {STATE_DIM}: q in '
                f'columns {JOINT_POS.start}-{JOINT_POS.stop - 1}, puck in '
                f'{PUCK.start}-{PUCK.stop - 1}; act_dim == {ACTION_DIM}), got '
                f'obs_dim={obs_dim}, act_dim={act_dim}')
        return names

    def features(self, obs: torch.Tensor) -> Optional[torch.Tensor]:
        """Known-kinematics features (..., F) of states (..., S), or None without features."""
        if not self.input_features:
            return None
        fk = self._fk
        if fk._rot.device != obs.device or fk._rot.dtype != obs.dtype:
            fk.to(obs.device, obs.dtype)
        tip = fk.tip_position(obs[..., JOINT_POS])
        parts = []
        for name in self.input_features:
            if name == 'tool_tip':
                parts.append(tip)
            else:  # tip_to_puck
                parts.append(obs[..., PUCK] - tip)
        return torch.cat(parts, dim=-1)

    def raw_inputs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(..., S), (..., A) real -> (..., S+A+F) network inputs before normalisation."""
        feats = self.features(obs)
        if feats is None:
            return torch.cat((obs, act), dim=-1)
        return torch.cat((obs, act, feats), dim=-1)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.layers[0].weight.device

    def elite_mask(self) -> torch.Tensor:
        """Bool (K,) mask of the elite members (``elite_indices``) on the model's device."""
        mask = torch.zeros(self.ensemble_size, dtype=torch.bool, device=self.device)
        mask[self.elite_indices] = True
        return mask

    def set_elites(self, indices: Sequence[int]) -> None:
        """Set ``elite_indices``; validates range and uniqueness."""
        idx = [int(i) for i in indices]
        if not idx or len(set(idx)) != len(idx) or any(
                not 0 <= i < self.ensemble_size for i in idx):
            raise ValueError(f'GaussianEnsemble: bad elite indices {list(indices)} for '
                             f'K={self.ensemble_size}')
        self.elite_indices = idx

    def select_members(self, indices: Sequence[int]) -> 'GaussianEnsemble':
        """A new ensemble made of copies of the given members (e.g. the elites).

        Its member ``j`` is this ensemble's member ``indices[j]``; normalisers and log-variance
        bounds are copied; all of its members are elites. Planners and MBPO roll out
        ``select_members(elite_indices)`` so that only the elites are ever used.

        Args:
            indices: distinct member indices in [0, K).

        Returns:
            A ``GaussianEnsemble`` of ``len(indices)`` members on the same device, in eval mode.
        """
        idx = [int(i) for i in indices]
        if not idx or len(set(idx)) != len(idx) or any(
                not 0 <= i < self.ensemble_size for i in idx):
            raise ValueError(f'GaussianEnsemble: bad member indices {list(indices)} for '
                             f'K={self.ensemble_size}')
        # A deep copy in which the per-member tensors are replaced by their selected rows (no
        # re-initialisation, no copy of the unselected members: cheap enough for a hot swap).
        pick = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        memo: Dict[int, Any] = {}
        for layer in self.layers:
            for name in ('weight', 'bias'):
                p = getattr(layer, name)
                memo[id(p)] = torch.nn.Parameter(p.detach().index_select(0, pick),
                                                 requires_grad=p.requires_grad)
        sub = copy.deepcopy(self, memo)
        sub.ensemble_size = len(idx)
        sub.num_elites = len(idx)
        sub.config = {**self.config, 'ensemble_size': len(idx), 'num_elites': len(idx)}
        sub.elite_indices = list(range(len(idx)))
        return sub.eval()

    # ------------------------------------------------------------------ normalised API
    def _soft_clamp(self, logvar: torch.Tensor) -> torch.Tensor:
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Normalised delta mean and log-variance of every member.

        Args:
            x: (K, B, S+A+F) normalised inputs (row k goes to member k), or (B, S+A+F) shared
                by all (F: the ``input_features`` columns, 0 by default).

        Returns:
            mean (K, B, S) and logvar (K, B, S) in normalised delta units; logvar is None for a
            deterministic ensemble.
        """
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        h = x
        for layer in self.layers[:-1]:
            h = self._act(layer(h))
        out = self.layers[-1](h)
        if not self.probabilistic:
            return out, None
        mean, logvar = out.split(self.obs_dim, dim=-1)
        return mean, self._soft_clamp(logvar)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training objective for one minibatch per member (scalar, differentiable).

        Sum over members of the mean Gaussian NLL (up to constants) or MSE, plus the log-variance
        bound penalty and the per-layer weight decay.

        Args:
            x: (K, B, S+A+F) normalised inputs.
            target: (K, B, S) normalised deltas.
        """
        mean, logvar = self.forward(x)
        if self.probabilistic:
            per_member = ((mean - target) ** 2 * torch.exp(-logvar) + logvar).mean((1, 2))
            total = per_member.sum() + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        else:
            total = ((mean - target) ** 2).mean((1, 2)).sum()
        return total + self.decay_loss()

    def decay_loss(self) -> torch.Tensor:
        """Weight decay penalty ``sum_l wd_l * ||W_l||^2 / 2`` (all members)."""
        total = self.layers[0].weight.new_zeros(())
        for wd, layer in zip(self.weight_decays, self.layers):
            if wd > 0.0:
                total = total + 0.5 * wd * (layer.weight ** 2).sum()
        return total

    @torch.no_grad()
    def eval_score(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validation score per member: MSE of the mean in normalised delta units.

        Args:
            x: (B, S+A+F) shared or (K, B, S+A+F) normalised inputs.
            target: (B, S) or (K, B, S) normalised deltas.

        Returns:
            (K,) mean squared error of each member.
        """
        mean, _ = self.forward(x)
        return ((mean - target) ** 2).mean((1, 2))

    # ------------------------------------------------------------------ data helpers
    def fit_normalizers(self, obs: torch.Tensor, act: torch.Tensor,
                        next_obs: torch.Tensor) -> None:
        """Refit input and output normalisers on (N, S), (N, A), (N, S) real data."""
        self.input_normalizer.fit(self.raw_inputs(obs, act))
        self.output_normalizer.fit(next_obs - obs)

    def normalized_inputs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(..., S), (..., A) real -> (..., S+A+F) normalised network inputs."""
        return self.input_normalizer.normalize(self.raw_inputs(obs, act))

    def normalized_targets(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(..., S), (..., S) real -> (..., S) normalised delta targets."""
        return self.output_normalizer.normalize(next_obs - obs)

    # ------------------------------------------------------------------ real-unit API
    def _check_inputs(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        if obs.shape[-1] != self.obs_dim or act.shape[-1] != self.act_dim:
            raise ValueError(f'GaussianEnsemble: expected obs (..., {self.obs_dim}) and act '
                             f'(..., {self.act_dim}), got {tuple(obs.shape)} and '
                             f'{tuple(act.shape)}')

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the next state of every member, in real units.

        Differentiable (callers that do not need gradients wrap it in ``torch.no_grad``).

        Args:
            obs: (B, S) shared by all members, or (K, B, S) one row per member.
            act: (B, A) or (K, B, A), matching ``obs``.

        Returns:
            mean (K, B, S) and variance (K, B, S); the variance is zero for a deterministic
            ensemble (it carries the aleatoric part only; epistemic spread is across members).
        """
        self._check_inputs(obs, act)
        if obs.ndim not in (2, 3) or act.ndim != obs.ndim:
            raise ValueError(f'GaussianEnsemble.predict: obs/act must both be (B, .) or '
                             f'(K, B, .), got {tuple(obs.shape)} and {tuple(act.shape)}')
        mean, logvar = self.forward(self.normalized_inputs(obs, act))
        std = self.output_normalizer.std
        next_mean = obs + self.output_normalizer.denormalize(mean)
        if logvar is None:
            var = torch.zeros_like(next_mean)
        else:
            var = torch.exp(logvar) * std ** 2
        return next_mean, var

    @torch.no_grad()
    def sample_next(self, obs: torch.Tensor, act: torch.Tensor, deterministic: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One model step for the planner: member k propagates row k (no autograd).

        Args:
            obs: (K, B, S) states in real units.
            act: (K, B, A) actions.
            deterministic: return the members' means instead of sampling the Gaussian head.
            generator: torch generator on the model's device for the sampling noise.

        Returns:
            (K, B, S) next states.
        """
        if obs.ndim != 3 or obs.shape[0] != self.ensemble_size:
            raise ValueError(f'GaussianEnsemble.sample_next: obs must be '
                             f'({self.ensemble_size}, B, {self.obs_dim}), got {tuple(obs.shape)}')
        self._check_inputs(obs, act)
        # Input normalisation in place on the freshly concatenated buffer.
        h = self.raw_inputs(obs, act)
        h.sub_(self.input_normalizer.mean).div_(self.input_normalizer.std)
        for layer in self.layers[:-1]:
            h = self._act_(torch.baddbmm(layer.bias, h, layer.weight))
        out = torch.baddbmm(self.layers[-1].bias, h, self.layers[-1].weight)
        delta = out[..., :self.obs_dim]
        if self.probabilistic and not deterministic:
            std = self._soft_clamp(out[..., self.obs_dim:]).mul_(0.5).exp_()
            noise = torch.randn(delta.shape, generator=generator, device=delta.device,
                                dtype=delta.dtype)
            delta = noise.mul_(std).add_(delta)
        # next = obs + delta * out_std + out_mean
        return torch.addcmul(self.output_normalizer.mean, delta,
                             self.output_normalizer.std).add_(obs)

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> Dict[str, Any]:
        """Everything ``model.json`` holds except the checksum of ``model.pt``."""
        return {
            'format_version': FORMAT_VERSION,
            'model_class': type(self).__name__,
            'obs_dim': self.obs_dim,
            'act_dim': self.act_dim,
            'config': dict(self.config),
            'elite_indices': list(self.elite_indices),
            'normalizers': {'input': self.input_normalizer.to_dict(),
                            'output': self.output_normalizer.to_dict()},
            'torch_version': torch.__version__,
            'model_file': MODEL_FILE,
        }

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``model.pt`` (state dict) and ``model.json`` (config, stats, sha256) to a folder.

        Both files are written to temporaries and renamed, ``model.json`` last, so a reader never
        sees a checksum that does not match the weights.

        Returns:
            The directory path.
        """
        d = Path(directory)
        save_checkpoint(d, MODEL_FILE, META_FILE, self, self.metadata())
        return d

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = 'cpu',
             obs_dim: Optional[int] = None, act_dim: Optional[int] = None,
             sha256: Optional[str] = None) -> 'GaussianEnsemble':
        """Load a model written by ``save``.

        Args:
            directory: folder holding ``model.pt`` and ``model.json``.
            device: where to put the parameters.
            obs_dim: if given, the expected state dimension (mismatch -> ValueError).
            act_dim: if given, the expected action dimension (mismatch -> ValueError).
            sha256: if given, the checksum the weights must have (e.g. the one announced).

        Raises:
            FileNotFoundError: the directory or one of the two files is missing.
            ValueError: a file is corrupt or truncated (bad JSON, sha256 mismatch, unreadable
                checkpoint), the format version is not ``FORMAT_VERSION``, or the weights or
                dimensions do not match the recorded / expected architecture.
        """
        meta, state, meta_path, model_path = load_checkpoint(
            directory, MODEL_FILE, META_FILE, FORMAT_VERSION,
            ('obs_dim', 'act_dim', 'config', 'elite_indices'),
            {'obs_dim': obs_dim, 'act_dim': act_dim, 'sha256': sha256}, 'model')
        try:
            model = cls(int(meta['obs_dim']), int(meta['act_dim']), **meta['config'])
        except (TypeError, ValueError) as e:
            raise ValueError(f'{meta_path}: invalid model config: {e}') from e
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise ValueError(f'{model_path}: weights do not match the architecture recorded in '
                             f'{meta_path}: {e}') from e
        try:
            model.set_elites(meta['elite_indices'])
        except (TypeError, ValueError) as e:
            raise ValueError(f'{meta_path}: {e}') from e
        return model.to(device)
