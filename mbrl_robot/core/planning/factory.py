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
"""Build an ``MPCAgent`` from the ``controller.planner`` block of ``config/*.yaml``.

Every key, its default, type and allowed values are in the schema
(``mbrl_robot/params/controller.yaml``, block ``planner``; ``docs/interfaces.md``): ``name`` is
required, missing keys take the schema's defaults, unknown keys are an error.
    name: random_shooting | cem | icem | pets.
    horizon (H), population_size (N), elite_count (M), iterations (I), min_std, initial_std,
    alpha: optimizer settings (random shooting uses only H and N).
    particles (P), propagation (mean | ts_inf | ts_1), pessimism (lambda), seed.
    terminal_weight: weight of the last step's reward (1.0 = plain sum).
    deterministic: propagate members' means instead of sampling their Gaussian heads.
    bound_mode: clip | truncnorm, how CEM keeps samples within the action bounds.
    return_mean: CEM executes the final mean instead of the best sample seen.
    noise_beta, keep_elites_fraction, shift_elites: iCEM only (cem samples white noise, keeps
        no elites).
    max_delta: bound on |a_t - a_{t-1}| of the normalised action per step (>= 2 = none).
    joint_limit_penalty: penalty scale for predicted joint-limit violations.
    plan_stats: roll the chosen plan through every member for ``last_plan_info``.
    backend: reference | fused | compiled | cuda_graph | compiled_cuda_graph (``fused``; for
        icem or a model that is not a ``GaussianEnsemble``, ``fused`` means ``reference``).
    precision: fp32 | tf32 | bf16 (fused backends only).

``propagation`` is explicit and independent of ``name``: default ``mean`` (deterministic
ensemble-mean propagation, one particle: the lecture's CEM); pets needs ``ts_inf`` or ``ts_1``
(it rejects ``mean``, so a pets block must name its propagation). Any other value is an error.
The action bounds are ``create_agent``'s ``action_lb``/``action_ub`` (default [-1, 1]).
"""

import math
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.schema import schema_defaults
from mbrl_robot.core.planning.agent import MPCAgent
from mbrl_robot.core.planning.fused import BACKENDS, FusedMPCAgent, PRECISIONS
from mbrl_robot.core.planning.optimizers import CEMOptimizer, RandomShootingOptimizer
from mbrl_robot.core.planning.trajectory import PROPAGATIONS
from mbrl_robot.core.safety import JointLimits
from mbrl_robot.core.tasks.push import JOINT_POS
from mbrl_robot.core.types import DynamicsModel, RewardFnType, TerminationFnType

NAMES = ('random_shooting', 'cem', 'icem', 'pets')

# The schema's planner block (the one place its defaults live), without the required name.
DEFAULTS: Dict[str, Any] = {k: v for k, v in schema_defaults('controller', 'planner').items()
                            if k != 'name'}

_INTS = ('horizon', 'population_size', 'elite_count', 'iterations', 'particles', 'seed')
_FLOATS = ('min_std', 'initial_std', 'alpha', 'pessimism', 'terminal_weight', 'noise_beta',
           'keep_elites_fraction', 'max_delta', 'joint_limit_penalty')
_BOOLS = ('deterministic', 'return_mean', 'shift_elites', 'plan_stats')


def resolve_planner_cfg(planner_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Validate a planner block and fill the defaults.

    Args:
        planner_cfg: the ``controller.planner`` dict.

    Returns:
        A new dict with every key of ``DEFAULTS`` plus ``name``, typed and checked.

    Raises:
        ValueError: unknown name or key, or an invalid value.
        TypeError: a value of the wrong type.
    """
    if not isinstance(planner_cfg, dict):
        raise TypeError(f'planner config must be a dict, got {type(planner_cfg).__name__}')
    name = planner_cfg.get('name')
    if name not in NAMES:
        raise ValueError(f'planner name must be one of {NAMES}, got {name!r}')
    unknown = set(planner_cfg) - set(DEFAULTS) - {'name'}
    if unknown:
        raise ValueError(f'unknown planner keys: {sorted(unknown)}')
    cfg = dict(DEFAULTS)
    cfg.update({k: v for k, v in planner_cfg.items() if v is not None})
    if name != 'icem':
        # Coloured noise and kept elites are iCEM's; cem samples white noise afresh.
        cfg.update(noise_beta=0.0, keep_elites_fraction=0.0, shift_elites=False)
    if (isinstance(cfg['max_delta'], (int, float)) and not isinstance(cfg['max_delta'], bool)
            and cfg['max_delta'] >= 2.0):
        cfg['max_delta'] = None  # actions lie in [-1, 1]: a step of 2 or more is no bound
    for key in _INTS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):
            raise TypeError(f'planner.{key} must be an int, got {cfg[key]!r}')
    for key in _FLOATS:
        v = cfg[key]
        if v is None and key == 'max_delta':
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f'planner.{key} must be a finite number, got {v!r}')
        cfg[key] = float(v)
    for key in _BOOLS:
        if not isinstance(cfg[key], bool):
            raise TypeError(f'planner.{key} must be a bool, got {cfg[key]!r}')
    checks = (
        ('horizon', cfg['horizon'] >= 1, '>= 1'),
        ('population_size', cfg['population_size'] >= (1 if name == 'random_shooting' else 2),
         '>= 2 (>= 1 for random shooting)'),
        ('iterations', cfg['iterations'] >= 1, '>= 1'),
        ('particles', cfg['particles'] >= 1, '>= 1'),
        ('min_std', cfg['min_std'] >= 0.0, '>= 0'),
        ('initial_std', cfg['initial_std'] > 0.0, '> 0'),
        ('alpha', 0.0 <= cfg['alpha'] < 1.0, 'in [0, 1)'),
        ('pessimism', cfg['pessimism'] >= 0.0, '>= 0'),
        ('noise_beta', cfg['noise_beta'] >= 0.0, '>= 0'),
        ('keep_elites_fraction', 0.0 <= cfg['keep_elites_fraction'] <= 1.0, 'in [0, 1]'),
        ('joint_limit_penalty', cfg['joint_limit_penalty'] >= 0.0, '>= 0'),
        ('max_delta', cfg['max_delta'] is None or cfg['max_delta'] > 0.0, '> 0 or null'),
    )
    for key, ok, what in checks:
        if not ok:
            raise ValueError(f'planner.{key} must be {what}, got {cfg[key]!r}')
    if name != 'random_shooting' and not 1 <= cfg['elite_count'] <= cfg['population_size']:
        raise ValueError('planner.elite_count must be in [1, population_size='
                         f"{cfg['population_size']}], got {cfg['elite_count']}")
    for key, allowed in (('backend', BACKENDS), ('precision', PRECISIONS)):
        if cfg[key] not in allowed:
            raise ValueError(f'planner.{key} must be one of {allowed}, got {cfg[key]!r}')
    if name == 'icem' and cfg['backend'] not in ('reference', 'fused'):
        raise ValueError("planner 'icem' (coloured noise, kept elites) runs on backend "
                         f"'reference' only, got {cfg['backend']!r}")
    if cfg['backend'] == 'reference' and cfg['precision'] != 'fp32':
        raise ValueError(f"planner.precision {cfg['precision']!r} needs a fused backend; "
                         'the reference runs in fp32')
    if cfg['propagation'] not in PROPAGATIONS:
        raise ValueError(f'planner.propagation must be one of {PROPAGATIONS} (there is no '
                         f"per-planner automatic choice), got {cfg['propagation']!r}")
    if name == 'pets' and cfg['propagation'] == 'mean':
        raise ValueError("planner 'pets' propagates particles: set planner.propagation to "
                         'ts_inf or ts_1 (the default, mean, is the ensemble-mean propagation '
                         'of cem)')
    if cfg['propagation'] == 'mean' and cfg['particles'] != 1:
        raise ValueError(f"propagation 'mean' is deterministic: planner.particles must be 1, "
                         f"got {cfg['particles']}")
    if cfg['bound_mode'] not in ('clip', 'truncnorm'):
        raise ValueError('planner.bound_mode must be clip or truncnorm, got '
                         f"{cfg['bound_mode']!r}")
    if cfg['shift_elites'] and cfg['keep_elites_fraction'] == 0.0:
        raise ValueError('planner.shift_elites needs keep_elites_fraction > 0')
    cfg['name'] = name
    return cfg


def create_agent(planner_cfg: Dict[str, Any], model: DynamicsModel, reward_fn: RewardFnType,
                 action_dim: int, device: Optional[Union[str, torch.device]] = None,
                 max_delta: Optional[float] = None,
                 joint_limits: Optional[JointLimits] = None,
                 joint_pos_start: int = JOINT_POS.start,
                 action_lb: Optional[Union[float, Sequence[float], np.ndarray]] = None,
                 action_ub: Optional[Union[float, Sequence[float], np.ndarray]] = None,
                 termination_fn: Optional[TerminationFnType] = None) -> MPCAgent:
    """Build the MPC agent a planner block describes.

    Args:
        planner_cfg: the ``controller.planner`` dict (see the module docstring).
        model: ensemble implementing ``types.DynamicsModel``.
        reward_fn: batched ``reward_fn(next_obs (..., S), act (..., A)) -> (...)``.
        action_dim: A.
        device: planning device; must be the model's (default: the model's).
        max_delta: acceleration bound on the normalised action per step; overrides the block's
            ``max_delta`` (the controller derives it from ``max_joint_accel_rad_s2``).
        joint_limits: optional ``JointLimits`` penalised along predicted trajectories.
        joint_pos_start: where the joint positions start in the state (default: the push
            state's ``JOINT_POS.start``).
        action_lb: lower action bound, scalar or (A,) (default -1): samples, the plan and
            ``a_{-1}`` are kept within [action_lb, action_ub].
        action_ub: upper action bound, scalar or (A,) (default 1); above ``action_lb``.
        termination_fn: optional ``termination_fn(next_obs (..., S), act (..., A)) -> bool
            (...)``: predicted returns stop accumulating after a predicted termination.

    Returns:
        A reset ``MPCAgent`` with actions bounded to [action_lb, action_ub].

    Raises:
        ValueError: invalid block, bounds of the wrong size, non-finite or not lb < ub.
    """
    cfg = resolve_planner_cfg(planner_cfg)
    if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f'action_dim must be a positive int, got {action_dim!r}')
    model_device = torch.device(getattr(model, 'device', 'cpu'))
    device = model_device if device is None else torch.device(device)
    if device != model_device:
        raise ValueError(f'planning device {device} differs from the model device {model_device}')
    bounds = []
    for what, value, default in (('action_lb', action_lb, -1.0), ('action_ub', action_ub, 1.0)):
        b = np.asarray(default if value is None else value, dtype=np.float64)
        if b.ndim == 0:
            b = np.full(action_dim, float(b))
        if b.shape != (action_dim,) or not np.isfinite(b).all():
            raise ValueError(f'{what} must be a finite scalar or have shape ({action_dim},), '
                             f'got {value!r}')
        bounds.append(torch.as_tensor(b, dtype=torch.float32, device=device))
    if not (bounds[0] < bounds[1]).all():
        raise ValueError(f'action_lb must be below action_ub in every dimension, got '
                         f'{bounds[0].tolist()} and {bounds[1].tolist()}')
    common = dict(lower=bounds[0], upper=bounds[1], device=device, seed=cfg['seed'])
    if cfg['name'] == 'random_shooting':
        optimizer = RandomShootingOptimizer(action_dim, cfg['population_size'], **common)
    else:
        optimizer = CEMOptimizer(
            action_dim, cfg['population_size'], cfg['elite_count'], cfg['iterations'],
            alpha=cfg['alpha'], initial_std=cfg['initial_std'], min_std=cfg['min_std'],
            bound_mode=cfg['bound_mode'], return_mean=cfg['return_mean'],
            noise_beta=cfg['noise_beta'], keep_elites_fraction=cfg['keep_elites_fraction'],
            shift_elites=cfg['shift_elites'], **common)
    backend = cfg['backend']
    if backend == 'fused' and (cfg['name'] == 'icem' or not isinstance(model, GaussianEnsemble)):
        # The fused function plans what the reference plans; where it does not apply (iCEM's
        # coloured noise and kept elites, a model that is not a GaussianEnsemble) the default
        # is the reference itself. An explicit compiled or captured backend is an error there.
        if cfg['precision'] != 'fp32':
            raise ValueError(f"planner.precision {cfg['precision']!r} needs the fused plan, "
                             f"which does not apply to {cfg['name']} on "
                             f'{type(model).__name__}')
        backend = 'reference'
    fused = {} if backend == 'reference' else {'backend': backend,
                                               'precision': cfg['precision']}
    agent_class = MPCAgent if backend == 'reference' else FusedMPCAgent
    return agent_class(model, reward_fn, optimizer, cfg['horizon'], action_dim,
                       particles=cfg['particles'], propagation=cfg['propagation'],
                       pessimism=cfg['pessimism'], terminal_weight=cfg['terminal_weight'],
                       deterministic=cfg['deterministic'],
                       max_delta=cfg['max_delta'] if max_delta is None else max_delta,
                       joint_limits=joint_limits,
                       joint_limit_penalty=cfg['joint_limit_penalty'],
                       plan_stats=cfg['plan_stats'], seed=cfg['seed'] + 1,
                       joint_pos_start=joint_pos_start, termination_fn=termination_fn,
                       **fused)
