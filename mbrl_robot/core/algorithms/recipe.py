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
"""The lecture's model-based RL recipe on any gymnasium env with Box spaces.

:func:`run_mbrl` is the task-agnostic form of the pushing recipe (``mpc_recipe.run_recipe``)::

    collect N episodes with uniformly random actions
    train the probabilistic ensemble on state deltas
    for each iteration:
        run M episodes with the MPC planner (random shooting, CEM or PETS) on the model
        retrain the ensemble on everything collected so far

The task enters only through a batched torch ``reward_fn(next_obs, act) -> (N,)`` and an
optional ``termination_fn(next_obs, act) -> bool (N,)``; the action bounds come from
``env.action_space``. Nothing here knows about the robot, ROS or the twin.
"""

import copy
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from mbrl_robot.core.models import create_model, create_trainer
from mbrl_robot.core.planning.factory import create_agent
from mbrl_robot.core.types import RewardFnType, TerminationFnType, TransitionBatch

# A CPU-sized default: small ensemble, CEM with ensemble-mean propagation that executes its
# final mean (as mbrl-lib's CEM does; the pushing stack's schema keeps the best sample, chosen
# on its task: docs/results/public_benchmarks.md says why each). Every block is
# completed by its factory's defaults (the schema), so a user overrides only what they need.
DEFAULT_CFG: Dict[str, Any] = {
    'seed': 0,
    'random_episodes': 1,
    'iterations': 5,
    'mpc_episodes_per_iteration': 1,
    'max_episode_steps': None,
    'max_env_steps': None,
    'warm_start': True,
    'model': {'name': 'gaussian_ensemble', 'ensemble_size': 5, 'num_layers': 3,
              'hidden_size': 200},
    'training': {'max_epochs': 50, 'patience': 5, 'batch_size': 64},
    'planner': {'name': 'cem', 'horizon': 15, 'population_size': 200, 'elite_count': 20,
                'iterations': 3, 'plan_stats': False, 'return_mean': True},
}

_TOP_KEYS = tuple(DEFAULT_CFG)


def resolve_cfg(cfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``DEFAULT_CFG`` updated with ``cfg``: top-level keys replaced, the ``model``,
    ``training`` and ``planner`` blocks merged key by key (``{'planner': {'name': 'pets',
    'propagation': 'ts_inf', 'particles': 20}}`` keeps the CPU-sized horizon and population).

    Raises:
        ValueError: an unknown top-level key or a bad episode count.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f'run_mbrl: unknown config keys {unknown}; allowed: {list(_TOP_KEYS)}')
    out = copy.deepcopy(DEFAULT_CFG)
    for key, value in cfg.items():
        if key in ('model', 'training', 'planner'):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    for key, low in (('random_episodes', 1), ('iterations', 0),
                     ('mpc_episodes_per_iteration', 1)):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f'run_mbrl: {key} must be an int >= {low}, got {v!r}')
    for key in ('max_episode_steps', 'max_env_steps'):
        m = out[key]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f'run_mbrl: {key} must be None or an int >= 1, got {m!r}')
    return out


def fit_ensemble(model, batch: TransitionBatch, model_cfg: Dict[str, Any],
                 training_cfg: Dict[str, Any], obs_dim: int, act_dim: int,
                 device: Union[str, torch.device], seed: int, warm_start: bool):
    """One model (re)fit of the recipe: a fresh ensemble (first fit, or ``warm_start`` off) or
    a copy of ``model``, trained on ``batch`` (state deltas, see ``ModelTrainer``).

    The copy leaves ``model`` untouched, so whoever plans with it keeps a consistent model
    until the new one is handed over.

    Args:
        model: the current ensemble, or None before the first fit.
        batch: every real transition so far.
        model_cfg: ``trainer.model`` block (``create_model``).
        training_cfg: ``trainer.training`` block (``create_trainer``); its ``seed`` is
            replaced by ``seed``.
        obs_dim: S.
        act_dim: A.
        device: where the model lives.
        seed: seed of the initialisation and of the fit.
        warm_start: continue from ``model`` when there is one.

    Returns:
        ``(new_model, TrainResult)``.
    """
    if model is None or not warm_start:
        model = create_model(model_cfg, obs_dim, act_dim, device, seed)
    else:
        model = copy.deepcopy(model)
    fit = create_trainer(model, {**training_cfg, 'seed': seed}).fit(batch)
    return model, fit


def run_mbrl(env, reward_fn: RewardFnType, cfg: Optional[Dict[str, Any]] = None,
             termination_fn: Optional[TerminationFnType] = None,
             device: Union[str, torch.device] = 'cpu',
             log: Optional[Callable[[str], None]] = print) -> Dict[str, Any]:
    """Run the recipe on a gymnasium env and return its learning curve.

    Episode ``i`` is reset with seed ``cfg['seed'] + i``; random actions and the model and
    planner seeds derive from ``cfg['seed']`` too, so a run is reproducible on one machine.
    The planner re-plans every step from the real observation (MPC) and keeps its warm start
    within an episode. The curve reports the env's own reward; ``reward_fn`` only steers the
    planner, so a reward function that disagrees with the env shows up as a flat curve.

    Example (Pendulum, about 30 lines with the imports)::

        import gymnasium as gym
        import torch
        from mbrl_robot.core.algorithms.recipe import run_mbrl

        def pendulum_reward(next_obs, act):
            # gymnasium's Pendulum-v1 cost, evaluated on the next observation.
            theta = torch.atan2(next_obs[..., 1], next_obs[..., 0])
            cost = theta ** 2 + 0.1 * next_obs[..., 2] ** 2 + 0.001 * act[..., 0] ** 2
            return -cost

        env = gym.make('Pendulum-v1')
        out = run_mbrl(env, pendulum_reward, {
            'random_episodes': 1, 'iterations': 3,
            'planner': {'name': 'cem', 'horizon': 15, 'population_size': 200,
                        'elite_count': 20, 'iterations': 3, 'plan_stats': False},
        })
        for ep in out['curve']:
            print(ep['stage'], ep['env_steps'], round(ep['return'], 1))
        # PETS instead: {'planner': {'name': 'pets', 'propagation': 'ts_inf',
        #                            'particles': 20, ...}}
        # Episodes that end early: run_mbrl(env, reward, cfg, termination_fn=done_fn)

    Args:
        env: a gymnasium env with Box observation and action spaces (finite action bounds).
        reward_fn: batched torch ``reward_fn(next_obs (..., S), act (..., A)) -> (...)``.
        cfg: overrides of :data:`DEFAULT_CFG` (see :func:`resolve_cfg`): ``seed``,
            ``random_episodes`` (N), ``iterations``, ``mpc_episodes_per_iteration`` (M),
            ``max_episode_steps`` (cap on top of the env's own time limit, None = none),
            ``max_env_steps`` (a budget of real steps: no MPC iteration starts once it is
            reached, so the last episode may run past it; None = ``iterations`` alone),
            ``warm_start`` (retrain from the last model), and the ``model`` (``create_model``),
            ``training`` (``create_trainer``) and ``planner`` (``create_agent``) blocks.
        termination_fn: optional batched ``termination_fn(next_obs, act) -> bool``; the
            planner stops counting predicted reward after a predicted termination.
        device: torch device of the model and planner.
        log: progress sink (None = quiet).

    Returns:
        ``{'curve': [per episode: 'episode', 'stage' ('random' | 'mpc'), 'iteration',
        'seed', 'steps', 'env_steps' (cumulative real steps at its end), 'return',
        'terminated', 'wall_s', 'plan_ms_median'], 'fits': [per model fit: 'iteration',
        'n_transitions', 'val_loss', 'epochs', 'members_improved', 'train_losses', 'val_losses',
        'elite_indices', 'wall_s'], 'env_steps', 'wall_s', 'cfg', 'model', 'agent'}``;
        everything but ``model`` (the last ensemble) and ``agent`` (the ``MPCAgent``) is
        JSON-able.

    Raises:
        ValueError: non-Box spaces, unbounded actions or an invalid config.
    """
    cfg = resolve_cfg(cfg)
    log = log or (lambda _msg: None)
    obs_space, act_space = env.observation_space, env.action_space
    for what, space in (('observation', obs_space), ('action', act_space)):
        if type(space).__name__ != 'Box' or len(space.shape) != 1:
            raise ValueError(f'run_mbrl: the {what} space must be a 1-D Box, got {space!r}')
    lb = np.asarray(act_space.low, dtype=np.float64)
    ub = np.asarray(act_space.high, dtype=np.float64)
    if not (np.isfinite(lb).all() and np.isfinite(ub).all()):
        raise ValueError(f'run_mbrl: the action space must be bounded, got {act_space!r}')
    obs_dim, act_dim = int(obs_space.shape[0]), int(act_space.shape[0])
    seed = int(cfg['seed'])
    rng = np.random.default_rng(seed)
    planner_cfg = {**cfg['planner'], 'seed': seed + int(cfg['planner'].get('seed', 0))}
    data: List[TransitionBatch] = []
    curve: List[Dict[str, Any]] = []
    fits: List[Dict[str, Any]] = []
    model, agent = None, None
    env_steps = 0
    t0 = time.monotonic()

    def episode(stage: str, iteration: int) -> None:
        nonlocal env_steps
        tp = time.monotonic()
        ep_seed = seed + len(curve)
        obs, _ = env.reset(seed=ep_seed)
        if stage == 'mpc':
            agent.reset()
        rows, total, plan_ms = ([], [], [], []), 0.0, []
        terminated = truncated = False
        while not (terminated or truncated):
            if stage == 'random':
                act = rng.uniform(lb, ub).astype(np.float32)
            else:
                act = agent.act(np.asarray(obs, dtype=np.float32))
                plan_ms.append(agent.last_plan_info['plan_time_ms'])
            next_obs, reward, terminated, truncated, _ = env.step(act)
            for col, x in zip(rows, (obs, act, next_obs, terminated or truncated)):
                col.append(x)
            total += float(reward)
            obs = next_obs
            if cfg['max_episode_steps'] and len(rows[0]) >= cfg['max_episode_steps']:
                truncated = True
        rows[3][-1] = True
        data.append(TransitionBatch(np.asarray(rows[0], dtype=np.float32),
                                    np.asarray(rows[1], dtype=np.float32),
                                    np.asarray(rows[2], dtype=np.float32),
                                    done=np.asarray(rows[3], dtype=bool)))
        env_steps += len(rows[0])
        curve.append({'episode': len(curve), 'stage': stage, 'iteration': iteration,
                      'seed': ep_seed, 'steps': len(rows[0]), 'env_steps': env_steps,
                      'return': total, 'terminated': bool(terminated),
                      'wall_s': time.monotonic() - tp,
                      'plan_ms_median': float(np.median(plan_ms)) if plan_ms else None})
        log(f'episode {len(curve) - 1} ({stage}, iteration {iteration}): return {total:.1f} '
            f'over {len(rows[0])} steps, {env_steps} env steps, '
            f'{time.monotonic() - tp:.1f} s')

    def train(iteration: int) -> None:
        nonlocal model, agent
        tp = time.monotonic()
        batch = TransitionBatch.concat(data)
        model, fit = fit_ensemble(model, batch, cfg['model'], cfg['training'], obs_dim,
                                  act_dim, device, seed + iteration, cfg['warm_start'])
        if agent is None:
            agent = create_agent(planner_cfg, model, reward_fn, act_dim, device,
                                 action_lb=lb, action_ub=ub, termination_fn=termination_fn)
        else:
            agent.set_model(model)
        fits.append({'iteration': iteration, 'n_transitions': len(batch),
                     'val_loss': float(fit.best_val_loss), 'epochs': fit.epochs,
                     'members_improved': fit.members_improved,
                     'train_losses': [float(x) for x in fit.train_losses],
                     'val_losses': [float(x) for x in fit.val_losses],
                     'elite_indices': [int(i) for i in fit.elite_indices],
                     'wall_s': time.monotonic() - tp})
        log(f'model fit {iteration} on {len(batch)} transitions: val loss '
            f'{fit.best_val_loss:.4f}, {fit.epochs} epochs, {time.monotonic() - tp:.1f} s')

    for _ in range(cfg['random_episodes']):
        episode('random', 0)
    train(0)
    for it in range(1, cfg['iterations'] + 1):
        if cfg['max_env_steps'] and env_steps >= cfg['max_env_steps']:
            break
        for _ in range(cfg['mpc_episodes_per_iteration']):
            episode('mpc', it)
        train(it)
    return {'curve': curve, 'fits': fits, 'env_steps': env_steps,
            'wall_s': time.monotonic() - t0, 'cfg': cfg, 'model': model, 'agent': agent}


def random_policy_returns(env, episodes: int, seed: int = 0) -> Tuple[List[float], List[int]]:
    """Returns and lengths of ``episodes`` uniformly random episodes (the baseline to beat).

    Episode ``i`` is reset with seed ``seed + i`` like :func:`run_mbrl`'s episodes.
    """
    rng = np.random.default_rng(seed + 10 ** 6)
    lb, ub = env.action_space.low, env.action_space.high
    returns, lengths = [], []
    for i in range(episodes):
        env.reset(seed=seed + i)
        total, n, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(lb, ub).astype(np.float32))
            total += float(reward)
            n += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(n)
    return returns, lengths
