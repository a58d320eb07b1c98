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
"""Build models and trainers from the plain config dicts of ``config/*.yaml``.

``create_model`` takes the ``trainer.model`` block, ``create_trainer`` the ``trainer.training``
block; shapes come from the environment, never from the YAML.
"""

from typing import Any, Dict, Union

import torch

from mbrl_robot.core.schema import schema_defaults
from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.models.trainer import ModelTrainer

# The schema's trainer.model and trainer.training blocks (mbrl_robot/params/trainer.yaml) are
# the one place the keys and their defaults live.
MODEL_DEFAULTS = schema_defaults('trainer', 'model')
TRAINING_DEFAULTS = schema_defaults('trainer', 'training')
MODEL_KEYS = tuple(MODEL_DEFAULTS)
TRAINING_KEYS = tuple(TRAINING_DEFAULTS)
MODEL_NAMES = ('gaussian_ensemble',)


def _check_keys(cfg: Dict[str, Any], allowed, what: str) -> None:
    if not isinstance(cfg, dict):
        raise ValueError(f'{what}: expected a mapping, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f'{what}: unknown keys {unknown}; allowed: {list(allowed)}')


def create_model(cfg: Dict[str, Any], obs_dim: int, act_dim: int,
                 device: Union[str, torch.device] = 'cpu', seed: int = 0) -> GaussianEnsemble:
    """Create a dynamics model from a ``trainer.model`` config block.

    Args:
        cfg: ``{name: gaussian_ensemble, ensemble_size, num_layers, hidden_size, activation,
            probabilistic, weight_decay, num_elites (0 = all), input_features}``; missing keys
            take the schema's defaults (``MODEL_DEFAULTS``).
        obs_dim: S, from the environment.
        act_dim: A, from the environment.
        device: where the parameters live.
        seed: initialisation seed.

    Raises:
        ValueError: unknown model name, unknown key or invalid value.
    """
    _check_keys(cfg, MODEL_KEYS, 'create_model')
    name = cfg.get('name')
    if name not in MODEL_NAMES:
        raise ValueError(f'create_model: unknown model name {name!r}; known: {list(MODEL_NAMES)}')
    kwargs = {k: v for k, v in {**MODEL_DEFAULTS, **cfg}.items() if k != 'name'}
    if kwargs['num_elites'] == 0:
        kwargs['num_elites'] = None
    if isinstance(kwargs.get('weight_decay'), int) and not isinstance(
            kwargs.get('weight_decay'), bool):
        kwargs['weight_decay'] = float(kwargs['weight_decay'])
    return GaussianEnsemble(obs_dim, act_dim, device=device, seed=seed, **kwargs)


def create_trainer(model: GaussianEnsemble, cfg: Dict[str, Any]) -> ModelTrainer:
    """Create a ``ModelTrainer`` from a ``trainer.training`` config block.

    Args:
        model: the ensemble to train.
        cfg: ``{learning_rate, batch_size, validation_fraction, max_epochs, patience, bootstrap,
            seed, min_rel_improvement}``; missing keys take the schema's defaults
            (``TRAINING_DEFAULTS``).

    Raises:
        ValueError: unknown key or invalid value.
    """
    _check_keys(cfg, TRAINING_KEYS, 'create_trainer')
    kwargs = {**TRAINING_DEFAULTS, **cfg}
    for key in ('learning_rate', 'validation_fraction', 'min_rel_improvement'):
        if isinstance(kwargs.get(key), int) and not isinstance(kwargs.get(key), bool):
            kwargs[key] = float(kwargs[key])
    return ModelTrainer(model, **kwargs)
