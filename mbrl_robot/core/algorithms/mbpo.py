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
"""MBPO (Janner et al. 2019, "When to Trust Your Model"): SAC on real and short model rollouts.

The lecture's "version 2.0" of model-based RL: learn the ensemble from real data, branch short
synthetic rollouts (1-5 steps) from real states, train SAC on real ∪ model data, and deploy the
policy (one network forward per control step instead of a plan). The paper's Algorithm 2, and
where each line lives in this file::

    initialise policy pi, model p, real data D_env, model data D_model   MBPOAgent.__init__
    for each real step:                                                  run_sac_loop
        take an action in the env with pi, add it to D_env               MBPOAgent.act, add_real
        every model_train_freq steps: train p on D_env                   MBPOAgent.fit_model
        every rollout_freq steps: M rollouts of length k (schedule)      rollout_length,
            from states sampled from D_env, added to D_model               model_rollouts
        G gradient steps of SAC on real_ratio D_env + the rest D_model   MBPOAgent.train

:func:`run_sac_loop` serves MBPO and the model-free baseline (``sac_baseline.py``), so the two
differ only in the model data; :func:`push_mbpo_agent` is the learner the trainer node feeds
with recorded transitions (:meth:`MBPOAgent.add_transitions`, :meth:`MBPOAgent.catch_up`).

What it uses lives elsewhere, free of this algorithm:

* the task as the learner sees it: :class:`mbrl_robot.core.types.GoalTask`; the push task's
  (``push_obs``, ``push_goal_task``) in :mod:`mbrl_robot.core.tasks.push`;
* the twin as the controller drives it (a gymnasium wrapper):
  :class:`mbrl_robot.core.tasks.push_policy_env.PushPolicyEnv`;
* the replay buffers: :mod:`mbrl_robot.core.buffer.replay` (``ArrayBuffer``,
  ``MixedReplayBuffer``);
* the deployed policy and its checkpoint: :mod:`mbrl_robot.core.policy`
  (``DeterministicPolicy``, ``save_policy``, ``load_policy``).
"""

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np
import torch

from mbrl_robot.core.buffer.replay import ArrayBuffer, MixedReplayBuffer, SAC_COLUMNS
from mbrl_robot.core.models import create_model, create_trainer
from mbrl_robot.core.policy import DeterministicPolicy, save_policy
from mbrl_robot.core.tasks.push import PUSH_OBS_DIM, push_goal_task, PushTask
from mbrl_robot.core.types import elite_model, GoalTask, TerminationFnType, TransitionBatch

MEMBER_CHOICES = ('random', 'ts')
MBPO_KEYS = ('total_steps', 'init_random_steps', 'model_train_freq', 'model_max_epochs',
             'rollout_freq', 'rollouts_per_step', 'rollout_length_min', 'rollout_length_max',
             'rollout_schedule_start', 'rollout_schedule_end', 'model_retain_rollouts',
             'real_ratio', 'gradient_steps', 'batch_size', 'member', 'relabel_goals', 'sac',
             'eval_seed', 'eval_episodes', 'seed')
SAC_KEYS = ('learning_rate', 'gamma', 'tau', 'net_arch', 'ent_coef', 'target_entropy')


# ---------------------------------------------------------------------- config and SAC
def _check_mbpo_cfg(m: Dict[str, Any]) -> None:
    unknown = sorted(set(m) - set(MBPO_KEYS))
    missing = sorted(set(MBPO_KEYS) - set(m))
    if unknown or missing:
        raise ValueError(f'mbpo config: unknown keys {unknown}, missing keys {missing}')
    for key in ('total_steps', 'model_train_freq', 'model_max_epochs', 'rollout_freq',
                'rollout_length_min', 'rollout_length_max', 'model_retain_rollouts',
                'batch_size', 'eval_episodes'):
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'mbpo.{key} must be an int >= 1, got {v!r}')
    for key in ('init_random_steps', 'rollouts_per_step', 'gradient_steps',
                'rollout_schedule_start', 'rollout_schedule_end', 'relabel_goals'):
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f'mbpo.{key} must be an int >= 0, got {v!r}')
    if m['rollout_length_max'] < m['rollout_length_min']:
        raise ValueError('mbpo.rollout_length_max must be >= rollout_length_min')
    if m['member'] not in MEMBER_CHOICES:
        raise ValueError(f'mbpo.member must be one of {MEMBER_CHOICES}, got {m["member"]!r}')
    if not 0.0 < float(m['real_ratio']) <= 1.0:
        raise ValueError(f'mbpo.real_ratio must be in (0, 1], got {m["real_ratio"]!r}')


class _SpacesEnv(gym.Env):
    """Carries the spaces SB3 needs to build SAC; never stepped."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        raise RuntimeError('_SpacesEnv is not steppable')

    def step(self, action):
        raise RuntimeError('_SpacesEnv is not steppable')


def make_sac(observation_space, action_space, sac_cfg: Dict[str, Any], batch_size: int,
             seed: int):
    """An SB3 ``SAC`` (MlpPolicy, cpu) from a ``sac`` config block; its own buffer is unused."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger
    from mbrl_robot.core.schema import schema_defaults
    unknown = sorted(set(sac_cfg) - set(SAC_KEYS))
    if unknown:
        raise ValueError(f'sac config: unknown keys {unknown}; allowed: {list(SAC_KEYS)}')
    # Missing keys: the schema's trainer.mbpo.sac block (the one place the defaults live).
    cfg = {**schema_defaults('trainer', 'mbpo')['sac'], **sac_cfg}
    sac = SAC('MlpPolicy', _SpacesEnv(observation_space, action_space),
              learning_rate=float(cfg['learning_rate']), buffer_size=1,
              learning_starts=0, batch_size=batch_size, tau=float(cfg['tau']),
              gamma=float(cfg['gamma']), ent_coef=cfg['ent_coef'],
              target_entropy=cfg['target_entropy'],
              policy_kwargs={'net_arch': list(cfg['net_arch']),
                             # Multi-tensor Adam: a third less time per update on a CPU.
                             'optimizer_kwargs': {'foreach': True}},
              seed=seed, device='cpu')
    sac.set_logger(Logger(folder=None, output_formats=[]))
    return sac


# ------------------------------------------------------------- the model rollouts
def hindsight_rows(gtask: GoalTask, episode: Dict[str, np.ndarray], k: int,
                   rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """HER's ``future`` relabelling (Andrychowicz et al. 2017) of one finished episode.

    Every transition t gets ``k`` copies whose goal is the goal achieved after a transition
    t' drawn uniformly from t .. T-1 of the same episode (``gtask.achieved_goal`` of its
    next state); observation, next observation and reward are recomputed for that goal with
    ``gtask.make_obs`` and ``gtask.reward_fn`` (on the executed action, as for real rows).
    ``done`` is the row's own: right for tasks whose termination does not depend on the goal
    (the push task never terminates; ``GoalTask`` has no goal-dependent termination).

    Args:
        gtask: the task; needs ``achieved_goal``.
        episode: the episode's rows in order: ``state``, ``act``, ``executed``,
            ``next_state``, ``goal`` (T, ·) and ``done`` (T,).
        k: copies per transition (>= 1).
        rng: draws t'.

    Returns:
        the SAC columns (``obs``, ``act``, ``reward``, ``next_obs``, ``done``) of T * k rows,
        and ``state`` and the hindsight ``goal``, where MBPO's model rollouts may branch.

    Raises:
        ValueError: the task has no ``achieved_goal`` or ``k`` < 1.
    """
    if gtask.achieved_goal is None:
        raise ValueError(f'hindsight relabelling: task {gtask.obs_layout!r} has no achieved_goal')
    if k < 1:
        raise ValueError(f'hindsight relabelling: k must be >= 1, got {k}')
    n = len(episode['state'])
    t = np.repeat(np.arange(n), k)
    future = rng.integers(t, n)
    goal = torch.as_tensor(np.asarray(
        gtask.achieved_goal(episode['next_state'][future], episode['goal'][t]),
        dtype=np.float32))
    state = torch.as_tensor(episode['state'][t], dtype=torch.float32)
    nxt = torch.as_tensor(episode['next_state'][t], dtype=torch.float32)
    executed = torch.as_tensor(episode['executed'][t], dtype=torch.float32)
    with torch.no_grad():
        return {'obs': gtask.make_obs(state, goal).numpy(), 'act': episode['act'][t],
                'reward': gtask.reward_fn(nxt, executed, goal).numpy(),
                'next_obs': gtask.make_obs(nxt, goal).numpy(), 'done': episode['done'][t],
                'state': episode['state'][t], 'goal': goal.numpy()}


def rollout_length(cfg: Dict[str, Any], step: int) -> int:
    """MBPO's linear schedule: ``min`` until ``start``, ``max`` after ``end`` (real steps)."""
    k_min, k_max = int(cfg['rollout_length_min']), int(cfg['rollout_length_max'])
    a, b = int(cfg['rollout_schedule_start']), int(cfg['rollout_schedule_end'])
    if step <= a or b <= a:
        return k_min if step <= a else k_max
    frac = min(1.0, (step - a) / (b - a))
    return int(math.floor(k_min + frac * (k_max - k_min)))


def model_rollouts(model, actor, gtask: GoalTask, states: np.ndarray, goals: np.ndarray,
                   length: int, member: str, rng: np.random.Generator,
                   generator: torch.Generator,
                   termination_fn: Optional[TerminationFnType] = None) -> Dict[str, np.ndarray]:
    """Branch ``length``-step rollouts from real states with the current (stochastic) policy.

    Each step every rollout is assigned one of the model's elite members (``elite_indices``,
    as in MBPO): a fresh random one per step (``member='random'``, MBPO) or the same one for the
    whole rollout (``'ts'``, PETS' TS-inf). Rows are split into E equal groups (E elites) so all
    elites run as one batched call. With ``termination_fn``, a row on which the model's next
    state terminates is stored with ``done = 1`` (SAC does not bootstrap past it) and its
    rollout ends there.

    Args:
        model: the ensemble (``sample_next`` on (K, B, S); ``elite_indices`` and
            ``select_members`` when only some members are elites).
        actor: SB3 SAC actor (``actor(obs, deterministic=False)`` -> actions (B, A)).
        gtask: the task.
        states: (B, S) start states from the real buffer.
        goals: (B, G) their episode goals, or hindsight goals (``relabel_goals``).
        length: k >= 1.
        member: ``random`` or ``ts``.
        rng: member assignment RNG.
        generator: the model's sampling noise.
        termination_fn: optional ``termination_fn(next_state (B, S), executed act (B, A)) ->
            bool (B,)``; None: model rollouts never terminate (done = 0).

    Returns:
        SAC columns for up to ``B * length`` rows (non-finite predictions are dropped, with
        their rollouts).
    """
    model = elite_model(model)
    k_members = model.ensemble_size
    b = (len(states) // k_members) * k_members
    state = torch.as_tensor(states[:b], dtype=torch.float32)
    goal = torch.as_tensor(goals[:b], dtype=torch.float32)
    alive = torch.ones(b, dtype=torch.bool)
    out: Dict[str, List[np.ndarray]] = {c: [] for c in SAC_COLUMNS}
    perm = torch.as_tensor(rng.permutation(b))
    for _ in range(length):
        if member == 'random':
            perm = torch.as_tensor(rng.permutation(b))
        with torch.no_grad():
            obs = gtask.make_obs(state, goal)
            act = actor(obs, deterministic=False)
            executed = act
            if gtask.action_filter is not None:
                executed = torch.as_tensor(gtask.action_filter(state.numpy(), act.numpy()))
            grouped = model.sample_next(state[perm].reshape(k_members, -1, gtask.state_dim),
                                        executed[perm].reshape(k_members, -1, gtask.act_dim),
                                        generator=generator)
            nxt = torch.empty_like(state)
            nxt[perm] = grouped.reshape(b, gtask.state_dim)
            reward = gtask.reward_fn(nxt, executed, goal)
            next_obs = gtask.make_obs(nxt, goal)
            if termination_fn is None:
                done = torch.zeros(b, dtype=torch.bool)
            else:
                done = torch.as_tensor(termination_fn(nxt, executed)).reshape(b).bool()
        alive &= torch.isfinite(next_obs).all(-1) & torch.isfinite(reward)
        keep = alive.numpy()
        out['obs'].append(obs.numpy()[keep])
        out['act'].append(act.numpy()[keep])
        out['reward'].append(reward.numpy()[keep])
        out['next_obs'].append(next_obs.numpy()[keep])
        out['done'].append(done.numpy()[keep].astype(np.float32))
        state = torch.where(alive[:, None], nxt, state)
        alive &= ~done
        if not bool(alive.any()):
            break
    return {k: np.concatenate(v) for k, v in out.items()}


# -------------------------------------------------------------------------- the learner
class MBPOAgent:
    """MBPO's learner without the environment loop: what ``run_sac_loop`` and a trainer node share.

    Real transitions come in through :meth:`add_real` (an env loop) or :meth:`add_transitions`
    (rows recorded by the controller: executed actions, state, next state, goal); after each
    real step :meth:`after_real_step` runs the schedule of ``cfg``: model (re)fits every
    ``model_train_freq`` steps, rollouts every ``rollout_freq`` steps, ``gradient_steps`` SAC
    updates per step. :meth:`policy` / :meth:`save` export the deployable policy.

    Args:
        gtask: the task.
        observation_space: the policy's observation space (``gtask.make_obs`` output).
        action_space: Box in [-1, 1].
        cfg: an ``mbpo`` block.
        seed: seeds SAC, the model, the minibatches and the rollouts.
        use_model: MBPO (True) or model-free SAC (False).
        model_cfg: ``trainer.model`` block (with ``use_model``).
        training_cfg: ``trainer.training`` block (with ``use_model``).
        log: progress sink.
        termination_fn: optional ``termination_fn(next_state (B, S), executed act (B, A)) ->
            bool (B,)`` for the model rollouts (see :func:`model_rollouts`); None: the task
            has time limits only (the push task).
    """

    def __init__(self, gtask: GoalTask, observation_space, action_space, cfg: Dict[str, Any],
                 seed: int, use_model: bool, model_cfg: Optional[Dict[str, Any]] = None,
                 training_cfg: Optional[Dict[str, Any]] = None,
                 log: Callable[[str], None] = print,
                 termination_fn: Optional[TerminationFnType] = None):
        _check_mbpo_cfg(cfg)
        if use_model and (model_cfg is None or training_cfg is None):
            raise ValueError('MBPO: use_model needs model_cfg and training_cfg')
        self.gtask, self.cfg, self.seed, self.use_model = gtask, cfg, int(seed), use_model
        self.model_cfg, self.training_cfg, self.log = model_cfg, training_cfg, log
        if termination_fn is not None and not callable(termination_fn):
            raise TypeError('MBPO: termination_fn must be callable or None')
        self.termination_fn = termination_fn
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.batch_size = int(cfg['batch_size'])
        self.sac = make_sac(observation_space, action_space, dict(cfg['sac']), self.batch_size,
                            seed)
        obs_dim = int(np.prod(observation_space.shape))
        act_dim = gtask.act_dim
        self.real = ArrayBuffer(int(cfg['total_steps']), {
            'obs': obs_dim, 'act': act_dim, 'reward': 0, 'next_obs': obs_dim, 'done': 0,
            'state': gtask.state_dim, 'executed': act_dim, 'next_state': gtask.state_dim,
            'goal': gtask.goal_dim, 'last': 0})
        self.model_buffer = None
        if use_model:
            cap = (int(cfg['rollouts_per_step']) * int(cfg['rollout_freq'])
                   * int(cfg['rollout_length_max']) * int(cfg['model_retain_rollouts']))
            self.model_buffer = ArrayBuffer(max(cap, 1), {
                'obs': obs_dim, 'act': act_dim, 'reward': 0, 'next_obs': obs_dim, 'done': 0})
        # Hindsight copies of the real rows (``relabel_goals`` per row), apart from the real
        # buffer: the model is fitted on the real rows only (rollouts branch from both).
        self.relabel_k = int(cfg['relabel_goals'])
        self.relabelled = None
        # Each arm's unfinished episode: arm -> ((arm, episode) key, its rows) (arm None: one
        # env loop); its own RNG, so runs with and without relabelling explore alike.
        self._pending: Dict[Any, Tuple[Any, List[Dict[str, np.ndarray]]]] = {}
        self.her_rng = np.random.default_rng([self.seed, 1])
        if self.relabel_k:
            if gtask.achieved_goal is None:
                raise ValueError(f'mbpo.relabel_goals: task {gtask.obs_layout!r} has no '
                                 'achieved_goal to relabel with')
            self.relabelled = ArrayBuffer(int(cfg['total_steps']) * self.relabel_k, {
                'obs': obs_dim, 'act': act_dim, 'reward': 0, 'next_obs': obs_dim, 'done': 0,
                'state': gtask.state_dim, 'goal': gtask.goal_dim})
        self.sac.replay_buffer = MixedReplayBuffer(
            self.real, self.model_buffer, float(cfg['real_ratio']) if use_model else 1.0, seed,
            self.relabelled)
        self.model = None
        self.fits: List[Dict[str, Any]] = []
        self.n_updates = 0
        self.n_real = 0

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Action (A,) for one observation: uniform random during ``init_random_steps``, then
        SAC's stochastic (``explore``) or deterministic action."""
        if explore and self.n_real < int(self.cfg['init_random_steps']):
            return self.rng.uniform(-1.0, 1.0, self.gtask.act_dim).astype(np.float32)
        return self.sac.actor(torch.as_tensor(obs, dtype=torch.float32)[None],
                              deterministic=not explore)[0].numpy()

    def add_real(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray,
                 terminated: np.ndarray, last: np.ndarray, state: np.ndarray,
                 executed: np.ndarray, next_state: np.ndarray, goal: np.ndarray,
                 episode_keys: Optional[Sequence[Any]] = None) -> None:
        """Store N real rows (all (N, ·) / (N,)); the reward is ``gtask.reward_fn`` on the
        executed action, exactly as in model rollouts.

        With ``relabel_goals``, an episode's rows get their hindsight copies when its last row
        (``last``) arrives, or when the same arm starts another episode (its last row was
        dropped); ``episode_keys`` (N,) names each row's ``(arm, episode)`` when rows of several
        arms interleave (the trainer node), None for one env loop's rows in order.
        """
        if episode_keys is not None and len(episode_keys) != len(act):
            raise ValueError(f'add_real: {len(act)} rows, {len(episode_keys)} episode keys')
        reward = self.gtask.reward_fn(torch.as_tensor(next_state, dtype=torch.float32),
                                      torch.as_tensor(executed, dtype=torch.float32),
                                      torch.as_tensor(goal, dtype=torch.float32)).numpy()
        done = np.asarray(terminated, dtype=np.float32)
        self.real.add(obs=obs, act=act, reward=reward, next_obs=next_obs, done=done,
                      state=state, executed=executed, next_state=next_state, goal=goal,
                      last=np.asarray(last, dtype=np.float32))
        if not self.relabel_k:
            return
        for i in range(len(act)):
            key = None if episode_keys is None else episode_keys[i]
            arm = None if key is None else key[0]
            if arm in self._pending and self._pending[arm][0] != key:
                self._relabel(arm)
            self._pending.setdefault(arm, (key, []))[1].append({
                'state': state[i], 'act': act[i], 'executed': executed[i],
                'next_state': next_state[i], 'goal': goal[i], 'done': done[i]})
            if last[i]:
                self._relabel(arm)

    def _relabel(self, arm: Any) -> None:
        rows = self._pending.pop(arm)[1]
        episode = {k: np.stack([np.asarray(r[k], dtype=np.float32) for r in rows])
                   for k in rows[0]}
        self.relabelled.add(**hindsight_rows(self.gtask, episode, self.relabel_k, self.her_rng))

    def add_transitions(self, state: np.ndarray, executed: np.ndarray, next_state: np.ndarray,
                        goal: np.ndarray, last: np.ndarray, episodes: Optional[np.ndarray] = None,
                        arms: Optional[np.ndarray] = None) -> None:
        """Store N rows recorded by the controller (no termination on the push task: time
        limits only). SAC learns on the executed action, the only one recorded. ``episodes``
        and ``arms`` (N,) keep hindsight relabelling within each arm's episode (see
        :meth:`add_real`); None: the rows are one arm's, in order."""
        g = torch.as_tensor(goal, dtype=torch.float32)
        obs = self.gtask.make_obs(torch.as_tensor(state, dtype=torch.float32), g).numpy()
        nxt = self.gtask.make_obs(torch.as_tensor(next_state, dtype=torch.float32), g).numpy()
        keys = None
        if episodes is not None:
            arm_ids = np.zeros(len(obs), np.int64) if arms is None else np.asarray(arms)
            if not len(arm_ids) == len(episodes) == len(obs):
                raise ValueError(f'add_transitions: {len(obs)} rows, {len(episodes)} episode ids'
                                 f' and {len(arm_ids)} arm ids')
            keys = [(int(a), int(e)) for a, e in zip(arm_ids, np.asarray(episodes))]
        self.add_real(obs, executed, nxt, np.zeros(len(obs)), last, state, executed, next_state,
                      goal, keys)

    def after_real_step(self, fit_model: bool = True) -> None:
        """Count one real step and run what the schedule asks for at this step.

        Args:
            fit_model: refit the ensemble on the schedule; False when someone else (the
                trainer node) trains and validates it and hands it over with :meth:`set_model`.
        """
        self.n_real += 1
        step, cfg = self.n_real, self.cfg
        started = step >= int(cfg['init_random_steps'])
        if fit_model and self.use_model and started and (
                self.model is None or step % int(cfg['model_train_freq']) == 0):
            self.fit_model()
        if self.use_model and self.model is not None and int(cfg['rollouts_per_step']) > 0 and (
                step % int(cfg['rollout_freq']) == 0 or len(self.model_buffer) == 0):
            self.rollout(int(cfg['rollouts_per_step']) * int(cfg['rollout_freq']),
                         rollout_length(cfg, step))
        if started and len(self.real) >= self.batch_size and int(cfg['gradient_steps']) > 0:
            self.train(int(cfg['gradient_steps']))

    def set_model(self, model) -> None:
        """Use an ensemble trained elsewhere (in eval mode) for the next rollouts."""
        model.eval()
        self.model = model

    def catch_up(self, model, stop: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
        """Run the schedule for every real row added since the last call, on ``model``.

        What the trainer node does after each validated retrain: rows recorded by the
        controller arrive in batches (:meth:`add_transitions`), so the per-step schedule
        (rollouts, ``gradient_steps`` SAC updates per real step) runs here for all of them at
        once; the ensemble is the trainer's, never refit here.

        Args:
            model: the validated ensemble.
            stop: polled between steps; True ends early (node shutdown).

        Returns:
            ``{'steps', 'gradient_steps', 'model_rows', 'relabelled_rows', 'wall_s'}`` of this
            call (``relabelled_rows``: hindsight copies held, 0 without ``relabel_goals``).
        """
        t0 = time.monotonic()
        self.set_model(model)
        updates = self.n_updates
        steps = 0
        while self.n_real < self.real.added:
            if stop is not None and stop():
                break
            self.after_real_step(fit_model=False)
            steps += 1
        return {'steps': steps, 'gradient_steps': self.n_updates - updates,
                'model_rows': 0 if self.model_buffer is None else len(self.model_buffer),
                'relabelled_rows': 0 if self.relabelled is None else len(self.relabelled),
                'wall_s': time.monotonic() - t0}

    def fit_model(self) -> Dict[str, Any]:
        """(Re)fit the ensemble on every real row (warm start after the first fit)."""
        tp = time.monotonic()
        r = self.real
        # Row index as the validation id: the real buffer is append-only (capacity total_steps).
        batch = TransitionBatch(r.column('state'), r.column('executed'), r.column('next_state'))
        version = len(self.fits)
        epochs = None
        if self.model is None:
            self.model = create_model(dict(self.model_cfg), self.gtask.state_dim,
                                      self.gtask.act_dim, 'cpu', self.seed + version)
        else:
            epochs = int(self.cfg['model_max_epochs'])
        trainer = create_trainer(self.model, {**dict(self.training_cfg),
                                              'seed': int(self.seed + version)})
        res = trainer.fit(batch, max_epochs=epochs)
        self.model.eval()
        fit = {'n_transitions': len(batch), 'val_loss': float(res.best_val_loss),
               'epochs': res.epochs, 'members_improved': res.members_improved,
               'elites': list(res.elite_indices), 'wall_s': time.monotonic() - tp}
        self.fits.append(fit)
        self.log(f'model fit {version} on {len(batch)} transitions: val loss '
                 f'{res.best_val_loss:.4f}, {res.epochs} epochs, {fit["wall_s"]:.1f} s')
        return fit

    def rollout(self, n: int, length: int) -> int:
        """Branch ``n`` rollouts of ``length`` steps into the model buffer; returns rows added.

        They start from real states with their episode's goal or, with ``relabel_goals``, as
        often as SAC's real share draws them, with a hindsight goal (goal relabelling in the
        model rollouts).
        """
        if self.relabelled is None:
            start = self.real.sample(n, self.rng)
        else:
            parts = self.sac.replay_buffer.sample_real(n)
            order = self.rng.permutation(n)  # model_rollouts may drop the last rows
            start = {k: np.concatenate([p[k] for p in parts])[order] for k in ('state', 'goal')}
        rows = model_rollouts(self.model, self.sac.actor, self.gtask, start['state'],
                              start['goal'], length, self.cfg['member'], self.rng, self.gen,
                              self.termination_fn)
        self.model_buffer.add(**rows)
        return len(rows['obs'])

    def train(self, gradient_steps: int) -> None:
        """``gradient_steps`` SB3 SAC updates on mixed minibatches."""
        self.sac.train(gradient_steps=gradient_steps, batch_size=self.batch_size)
        self.n_updates += gradient_steps

    def policy(self) -> DeterministicPolicy:
        """The current deterministic policy, copied out of SAC."""
        return DeterministicPolicy.from_sac(self.sac)

    def save(self, directory: Union[str, os.PathLike], version: int,
             extra: Optional[Dict[str, Any]] = None) -> str:
        """Write the policy checkpoint (with ``sac.zip``); returns its sha256."""
        return save_policy(self.policy(), directory, version, self.gtask.obs_layout,
                           sac=self.sac, extra=extra)


def push_mbpo_agent(params: Dict[str, Any], log: Callable[[str], None] = print) -> MBPOAgent:
    """The MBPO learner of the push task from a trainer node's parameters.

    Args:
        params: ``task`` (reward, joints, action scale), the command filter's
            ``max_joint_accel_rad_s2`` and ``position_margin_rad``, and the ``model``,
            ``training`` and ``mbpo`` blocks (``node_params(profile, 'trainer')``).
        log: progress sink.
    """
    from mbrl_robot.core.safety import CommandFilter
    gtask = push_goal_task(PushTask.from_config(params['task']),
                           CommandFilter.from_params(params))
    obs_space = gym.spaces.Box(-np.inf, np.inf, (PUSH_OBS_DIM,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (gtask.act_dim,), np.float32)
    m = dict(params['mbpo'])
    return MBPOAgent(gtask, obs_space, act_space, m, int(m['seed']), True, params['model'],
                     params['training'], log)


# -------------------------------------------------------------------------- the env loop
def evaluate(act_fn: Callable[[np.ndarray], np.ndarray], env: gym.Env,
             seeds: Sequence[int]) -> Dict[str, Any]:
    """Run one episode per seed with ``act_fn(obs) -> action``; success and distance at the end.

    The env's ``info`` must hold ``is_success`` and ``distance`` (``PushEnv`` and the tests'
    point mass do).

    Returns:
        ``{'episodes', 'success_rate', 'mean_final_distance', 'final_distances'}``.
    """
    finals, successes = [], []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(act_fn(obs))
            done = terminated or truncated
        finals.append(float(info['distance']))
        successes.append(bool(info['is_success']))
    return {'episodes': len(finals), 'success_rate': float(np.mean(successes)),
            'mean_final_distance': float(np.mean(finals)), 'final_distances': finals}


# What a resume state leaves out: the caller passes them again (the task's functions, sinks).
_RUNTIME_ATTRS = ('gtask', 'log', 'termination_fn')
RESUME_FORMAT = 2
_STATE_KEYS = ('format', 'versions', 'identity', 'cfg', 'seed', 'use_model', 'loop', 'agent',
               'rng')
_LOOP_KEYS = ('episode', 'curve', 'eval_at', 'budgets', 'eval_seeds', 'wall_s', 'resumed_at')


class ResumeStateError(ValueError):
    """A resume state that cannot continue this run: unreadable, or written by another one."""


@dataclass
class Resumable:
    """Where :func:`run_sac_loop` keeps its resume state, how often, and when to stop early.

    Attributes:
        path: the state file (written atomically; read back when it exists).
        every: real transitions between saves (at the end of the episode that reaches them).
        stop: polled at each episode end; True saves the state and returns an unfinished run.
        identity: what else names the run, JSON-able (profile, task, twin): a state whose
            identity differs is refused.
    """

    path: str
    every: int = 2500
    stop: Optional[Callable[[], bool]] = None
    identity: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f'Resumable.every must be an int >= 1, got {self.every!r}')


def _versions() -> Dict[str, str]:
    import stable_baselines3
    return {'torch': torch.__version__, 'stable_baselines3': stable_baselines3.__version__,
            'numpy': np.__version__}


def _first_difference(saved: Any, wanted: Any, prefix: str = '') -> Optional[str]:
    """``key=saved, this run has wanted`` for the first differing (nested) key, or None."""
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(wanted))
    if saved == wanted:
        return None
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                return _first_difference(saved.get(key), wanted.get(key), f'{prefix}{key}.')
    return f'{prefix.rstrip(".")}={saved!r}, this run has {wanted!r}'


def save_resume_state(path: str, agent: 'MBPOAgent', loop: Dict[str, Any],
                      identity: Optional[Dict[str, Any]] = None) -> None:
    """Write everything the rest of a run depends on to ``path`` (temporary, then renamed).

    The learner whole (SAC with its optimisers, the ensemble and its elites, the buffers, every
    RNG it owns), the loop's position (``loop``: episode, curve, budgets left) and the global
    RNGs SB3 and torch draw from, so that a resumed run continues bit for bit; the library
    versions and ``identity`` to refuse a state that could not.
    """
    state = {'format': RESUME_FORMAT, 'versions': _versions(), 'identity': identity or {},
             'cfg': agent.cfg, 'seed': agent.seed, 'use_model': agent.use_model, 'loop': loop,
             'agent': {k: v for k, v in agent.__dict__.items() if k not in _RUNTIME_ATTRS},
             'rng': {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(),
                     'python': random.getstate()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)


def _read_state(path: str) -> Dict[str, Any]:
    """A resume state of this format with every key, or :class:`ResumeStateError`."""
    try:
        state = torch.load(path, weights_only=False)
        missing = [k for k in _STATE_KEYS if k not in state]
        missing += [f'loop.{k}' for k in _LOOP_KEYS if k not in state.get('loop', {})]
        missing += [f'agent.{k}' for k in ('n_real',) if k not in state.get('agent', {})]
    except Exception as e:  # torch.load raises many types on a corrupt or truncated file
        raise ResumeStateError(f'{path}: unreadable resume state ({type(e).__name__}: {e})') from e
    if state.get('format') != RESUME_FORMAT:
        raise ResumeStateError(f'{path}: resume state format {state.get("format")!r}, expected '
                               f'{RESUME_FORMAT}')
    if missing:
        raise ResumeStateError(f'{path}: incomplete resume state, missing {missing}')
    return state


def resume_progress(path: str) -> Dict[str, Any]:
    """Where the run of a resume state stands, read without continuing it (JSON-able).

    Returns:
        ``{'seed', 'method', 'identity', 'transitions', 'total', 'episode', 'wall_s',
        'resumed_at', 'finished', 'curve'}``: ``curve`` holds the evaluations made so far;
        ``finished`` once the total is reached and every curve budget evaluated.

    Raises:
        ResumeStateError: as :func:`load_resume_state` for an unreadable or incomplete state.
    """
    state = _read_state(path)
    try:
        loop, total = state['loop'], int(state['cfg']['total_steps'])
        n_real = int(state['agent']['n_real'])
    except (KeyError, TypeError, ValueError) as e:
        raise ResumeStateError(f'{path}: resume state without a run length or transition count '
                               f'({type(e).__name__}: {e})') from e
    return {'seed': state['seed'], 'method': 'mbpo' if state['use_model'] else 'sac',
            'identity': state['identity'], 'transitions': n_real, 'total': total,
            'episode': loop['episode'], 'wall_s': loop['wall_s'],
            'resumed_at': loop['resumed_at'],
            'finished': n_real >= total and not loop['eval_at'], 'curve': loop['curve']}


def load_resume_state(path: str, agent: 'MBPOAgent',
                      identity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load a state of :func:`save_resume_state` into a fresh ``agent`` built for this run
    (its config, seed, method, model and training blocks are compared with the saved ones);
    restores the global RNGs. Returns the loop position.

    Raises:
        ResumeStateError: the file is unreadable, truncated or incomplete, of another format or
            library version, or was written by a run with another identity, config, seed or
            method (the first differing key named).
    """
    state = _read_state(path)
    mine = {k: v for k, v in agent.__dict__.items() if k not in _RUNTIME_ATTRS}
    checks = (('versions', state['versions'], _versions()),
              ('', state['identity'], identity or {}),
              ('', state['cfg'], agent.cfg),
              ('', {'seed': state['seed'], 'use_model': state['use_model'],
                    'model': state['agent'].get('model_cfg'),
                    'training': state['agent'].get('training_cfg')},
               {'seed': agent.seed, 'use_model': agent.use_model, 'model': agent.model_cfg,
                'training': agent.training_cfg}),
              ('learner attributes', sorted(state['agent']), sorted(mine)))
    for prefix, saved, wanted in checks:
        diff = _first_difference(saved, wanted, f'{prefix}.' if prefix else '')
        if diff is not None:
            raise ResumeStateError(f'{path}: written by a run with {diff}; use another state '
                                   'file or the same settings')
    agent.__dict__.update(state['agent'])
    torch.set_rng_state(state['rng']['torch'])
    np.random.set_state(state['rng']['numpy'])
    random.setstate(state['rng']['python'])
    return state['loop']


def run_sac_loop(env: gym.Env, gtask: GoalTask, cfg: Dict[str, Any], seed: int,
                 use_model: bool, model_cfg: Optional[Dict[str, Any]] = None,
                 training_cfg: Optional[Dict[str, Any]] = None,
                 eval_at: Sequence[int] = (), eval_seeds: Sequence[int] = (),
                 log: Callable[[str], None] = print,
                 termination_fn: Optional[TerminationFnType] = None,
                 resumable: Optional[Resumable] = None) -> Dict[str, Any]:
    """SAC on ``env`` with (MBPO) or without (model-free) model rollouts.

    One loop for both methods: the real buffer, the SB3 SAC networks and update, the episode
    seeds and the evaluation are shared; ``use_model`` adds the ensemble, the rollouts and the
    mixed minibatches (:class:`MBPOAgent`). Training episodes use seeds
    ``10**6 * (seed + 1) + episode``, disjoint from the held-out evaluation seeds.

    Args:
        env: env whose ``info`` holds ``state``, ``goal`` (and ``executed_action`` when the env
            filters actions); observations equal ``gtask.make_obs(state, goal)``.
        gtask: the task.
        cfg: an ``mbpo`` block (see ``config/lecture.yaml``, ``trainer.mbpo``).
        seed: seeds SAC, the episodes, the model and every RNG.
        use_model: MBPO (True) or plain SAC (False, ``real_ratio`` taken as 1).
        model_cfg: ``trainer.model`` block (needed with ``use_model``).
        training_cfg: ``trainer.training`` block (needed with ``use_model``).
        eval_at: real-step counts after which the deterministic policy is evaluated (at the end
            of the episode that reaches them).
        eval_seeds: held-out episode seeds for those evaluations.
        log: progress sink.
        termination_fn: the model rollouts' termination (see :class:`MBPOAgent`); the real
            episodes end by the env's own ``terminated``.
        resumable: keep a resume state (:class:`Resumable`): an existing one is continued,
            bit for bit as if the run had not stopped (episodes are seeded, so the env needs
            no state of its own between episodes); None: run straight through.

    Returns:
        ``{'agent', 'sac', 'policy', 'curve': [{'transitions', 'wall_s', **evaluate()}],
        'model_fits', 'transitions', 'wall_s', 'gradient_steps', 'model', 'finished',
        'resumed_at'}``: ``wall_s`` sums the saved parts of a resumed run (work lost to a
        kill after the last save is not counted); ``finished`` is False when
        ``resumable.stop`` ended it early; ``resumed_at``, the real transitions at which it was
        resumed (a finished state rerun is returned as it was, not resumed again).

    Raises:
        ResumeStateError: the resume state is unreadable or was written by another run (see
            :func:`load_resume_state`).
    """
    eval_at = sorted(int(x) for x in eval_at)
    loop: Dict[str, Any] = {'episode': 0, 'curve': [], 'eval_at': eval_at,
                            'budgets': list(eval_at),
                            'eval_seeds': [int(x) for x in eval_seeds], 'wall_s': 0.0,
                            'resumed_at': []}
    agent = MBPOAgent(gtask, env.observation_space, env.action_space, cfg, seed, use_model,
                      model_cfg, training_cfg, log, termination_fn)
    total = int(cfg['total_steps'])
    was_finished = False
    if resumable is not None and os.path.exists(resumable.path):
        saved = load_resume_state(resumable.path, agent, resumable.identity)
        for key, what in (('eval_seeds', 'evaluation seeds'), ('budgets', 'curve budgets')):
            if saved[key] != loop[key]:
                raise ResumeStateError(f'{resumable.path}: written by a run with {what} '
                                       f'{saved[key]}, this run has {loop[key]}')
        was_finished = agent.n_real >= total and not saved['eval_at']
        loop = saved if was_finished else {
            **saved, 'resumed_at': saved['resumed_at'] + [agent.n_real]}
        log(f'resumed {resumable.path} at {agent.n_real} transitions, episode '
            f'{loop["episode"]}' + (' (finished)' if was_finished else ''))
    eval_at, curve = loop['eval_at'], loop['curve']
    t0 = time.monotonic() - loop['wall_s']
    saved_at = agent.n_real

    def evaluate_now():
        res = evaluate(lambda o: agent.act(o, explore=False), env, eval_seeds)
        curve.append({'transitions': agent.n_real, 'wall_s': time.monotonic() - t0, **res})
        log(f'{"mbpo" if use_model else "sac"} seed {seed}: {agent.n_real} transitions, '
            f'success {res["success_rate"]:.2f}, final distance '
            f'{res["mean_final_distance"]:.3f}, {time.monotonic() - t0:.0f} s')

    def keep(force: bool = False) -> None:
        nonlocal saved_at
        if resumable is not None and (force or agent.n_real - saved_at >= resumable.every):
            save_resume_state(resumable.path, agent,
                              {**loop, 'wall_s': time.monotonic() - t0}, resumable.identity)
            saved_at = agent.n_real

    finished = True
    episode = loop['episode']
    obs, info = env.reset(seed=10 ** 6 * (seed + 1) + episode)
    while agent.n_real < total:
        action = agent.act(obs)
        state = info['state']
        next_obs, _, terminated, truncated, info = env.step(action)
        executed = info.get('executed_action', action)
        agent.add_real(obs[None], action[None], next_obs[None], np.array([terminated]),
                       np.array([terminated or truncated]), np.asarray(state)[None],
                       np.asarray(executed)[None], np.asarray(info['state'])[None],
                       np.asarray(info['goal'])[None])
        agent.after_real_step()
        obs = next_obs
        if terminated or truncated:
            while eval_at and agent.n_real >= eval_at[0]:
                evaluate_now()
                eval_at.pop(0)
            episode += 1
            loop['episode'] = episode
            stopping = (resumable is not None and resumable.stop is not None
                        and agent.n_real < total and resumable.stop())
            keep(force=stopping)
            if stopping:
                finished = False
                log(f'stopped at {agent.n_real} transitions; state kept in {resumable.path}')
                break
            obs, info = env.reset(seed=10 ** 6 * (seed + 1) + episode)
    if finished and not was_finished:  # a finished state is kept as it was
        while eval_at:  # budgets not reached at an episode end (total not a multiple)
            evaluate_now()
            eval_at.pop(0)
        keep(force=True)
    return {'agent': agent, 'sac': agent.sac, 'policy': agent.policy(), 'curve': curve,
            'model_fits': agent.fits, 'transitions': agent.n_real,
            'wall_s': time.monotonic() - t0, 'gradient_steps': agent.n_updates,
            'model': agent.model, 'finished': finished, 'resumed_at': loop['resumed_at']}


def run_mbpo(env: gym.Env, cfg: Dict[str, Any], seed: int, gtask: Optional[GoalTask] = None,
             checkpoint_dir: Optional[str] = None, version: int = 1,
             eval_env: Optional[gym.Env] = None, eval_at: Sequence[int] = (),
             log: Callable[[str], None] = print,
             resumable: Optional[Resumable] = None) -> Dict[str, Any]:
    """MBPO on ``env``: returns a JSON-able summary, optionally saves the policy checkpoint.

    Args:
        env: a :class:`~mbrl_robot.core.tasks.push_policy_env.PushPolicyEnv` (default task) or
            any env following :func:`run_sac_loop`'s contract for ``gtask``.
        cfg: the trainer's parameters: ``model``, ``training`` and ``mbpo`` blocks
            (``node_params(profile, 'trainer')``).
        seed: run seed (overrides ``mbpo.seed``).
        gtask: the task; default :func:`push_goal_task` with ``env``'s command filter.
        checkpoint_dir: if set, the policy is saved there (:func:`save_policy`) with ``version``.
        version: policy version to record.
        eval_env: env for the final held-out evaluation (default ``env``), seeds
            ``mbpo.eval_seed + i`` for ``i < mbpo.eval_episodes``.
        eval_at: extra learning-curve points (real transitions).
        log: progress sink.
        resumable: keep and continue a resume state (see :func:`run_sac_loop`).

    Returns:
        ``{'method': 'mbpo', 'seed', 'transitions', 'wall_s', 'gradient_steps', 'eval',
        'curve', 'model_fits', 'checkpoint', 'sha256', 'finished', 'resumed_at'}`` (JSON-able)
        plus ``'policy'``, the :class:`DeterministicPolicy`. A run stopped early
        (``finished`` False) has no final evaluation (``eval`` None) and no checkpoint.
    """
    m = dict(cfg['mbpo'])
    if gtask is None:
        task = PushTask.from_config(cfg['task']) if 'task' in cfg else PushTask()
        gtask = push_goal_task(task, getattr(env, 'command_filter', None))
    seeds = [int(m['eval_seed']) + i for i in range(int(m['eval_episodes']))]
    out = run_sac_loop(env, gtask, m, seed, True, cfg['model'], cfg['training'],
                       eval_at=eval_at, eval_seeds=seeds, log=log, resumable=resumable)
    t_eval = time.monotonic()
    policy = out['policy']
    result = evaluate(lambda o: policy.act(o), eval_env or env, seeds) if out['finished'] else None
    summary = {'method': 'mbpo', 'seed': seed, 'transitions': out['transitions'],
               'wall_s': out['wall_s'], 'eval_wall_s': time.monotonic() - t_eval,
               'gradient_steps': out['gradient_steps'], 'eval': result, 'curve': out['curve'],
               'model_fits': out['model_fits'], 'checkpoint': None, 'sha256': None,
               'finished': out['finished'], 'resumed_at': out['resumed_at']}
    if checkpoint_dir and out['finished']:
        summary['sha256'] = save_policy(policy, checkpoint_dir, version, gtask.obs_layout,
                                        sac=out['sac'], extra={'method': 'mbpo', 'seed': seed,
                                                               'transitions': out['transitions']})
        summary['checkpoint'] = str(checkpoint_dir)
    summary['policy'] = policy
    return summary
