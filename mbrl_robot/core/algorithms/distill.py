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
"""The planner distilled into a policy: DAgger (Ross et al. 2011) with MPC as the expert.

The lecture's version 2.0 is a policy that is cheap at deploy time. SAC and MBPO learn the
push task's precise contact from the reward alone and fail within the MPC's data budget (issue
18); the MPC planner on the learned model already solves it. So the policy imitates the planner,
on the states the policy itself visits (DAgger's fix for compounding imitation errors)::

    real rows of every episode (random, and those the policy drove)     add_transitions
    after each retrain, with the new model as the expert:               catch_up
        label every real state with the planner's first action,         label_episode
            planned in episode order with its warm start, as the
            controller would have planned it;
        ``dagger_rounds`` times:
            DAgger in the model: rollouts from real states driven by     model_dagger
                the current policy (the expert's own action with
                probability ``expert_fraction``), every visited state
                labelled;
            fit the policy to all labels (MSE, inputs normalised; the    fit_policy
                normaliser folded into the first layer); with
                ``policy_members`` > 1 that many fits, each its own seed,
                deployed as their mean action.

Only the real rows cost real transitions: the model rollouts and the labels are computed. The
policy is :class:`~mbrl_robot.core.policy.DeterministicPolicy` (``tanh(mu(mlp(obs)))``) or a
:class:`~mbrl_robot.core.policy.PolicyEnsemble` of them, the format the controller's policy
mode loads.
"""

import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch

from mbrl_robot.core.policy import ChunkEnsemble, DeterministicPolicy, PolicyEnsemble, \
    save_policy
from mbrl_robot.core.types import elite_model, GoalTask

DISTILL_KEYS = ('hidden_sizes', 'activation', 'epochs', 'batch_size', 'learning_rate',
                'weight_decay', 'relabel', 'label_mean', 'model_rollouts',
                'model_rollout_length', 'rollout_start', 'expert_fraction', 'dagger_rounds',
                'observation', 'policy_members', 'label_plans', 'action_chunk', 'chunk_decay',
                'seed')
# Where the model rollouts start: any real state, or the first state of a real episode (the
# deployed policy's own start distribution, rolled out for up to an episode).
ROLLOUT_STARTS = ('any_state', 'episode_start')
# What the policy sees: the task's state and goal, or those and the tool's end (the task's
# kinematics; the push task's layouts ``PUSH_OBS_LAYOUT`` and ``PUSH_TOOL_OBS_LAYOUT``).
OBSERVATIONS = ('state', 'state_and_tool')
# Labels at the box edge are moved this far inside it: tanh reaches +-1 only at infinity.
LABEL_LIMIT = 0.98


def check_distill_cfg(cfg: Dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first unknown, missing or invalid key of a ``distill``
    block."""
    unknown = sorted(set(cfg) - set(DISTILL_KEYS))
    missing = sorted(set(DISTILL_KEYS) - set(cfg))
    if unknown or missing:
        raise ValueError(f'distill config: unknown keys {unknown}, missing keys {missing}')
    for key in ('epochs', 'batch_size', 'dagger_rounds', 'policy_members', 'label_plans',
                'action_chunk'):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'distill.{key} must be an int >= 1, got {v!r}')
    for key in ('model_rollouts', 'model_rollout_length', 'seed'):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f'distill.{key} must be an int >= 0, got {v!r}')
    for key, lo in (('learning_rate', 0.0), ('weight_decay', -1e-12), ('chunk_decay', -1e-12)):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not v > lo:
            raise ValueError(f'distill.{key} must be a finite number > {max(lo, 0.0)}, '
                             f'got {v!r}')
    f = cfg['expert_fraction']
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
        raise ValueError(f'distill.expert_fraction must be in [0, 1], got {f!r}')
    if cfg['observation'] not in OBSERVATIONS:
        raise ValueError(f'distill.observation must be one of {list(OBSERVATIONS)}, '
                         f"got {cfg['observation']!r}")
    if cfg['rollout_start'] not in ROLLOUT_STARTS:
        raise ValueError(f'distill.rollout_start must be one of {list(ROLLOUT_STARTS)}, '
                         f"got {cfg['rollout_start']!r}")
    for key in ('relabel', 'label_mean'):
        if not isinstance(cfg[key], bool):
            raise ValueError(f'distill.{key} must be a bool, got {cfg[key]!r}')
    sizes = cfg['hidden_sizes']
    if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
        raise ValueError(f'distill.hidden_sizes must be ints >= 1, got {sizes!r}')


class PlannerExpert:
    """The expert: the MPC agent's first action, planned along a sequence of states.

    Args:
        agent: an :class:`~mbrl_robot.core.planning.agent.MPCAgent` (or the fused one):
            ``restart()``, ``set_model(model)``, ``set_last_action(a)``, ``plan(state) -> (H,
            A)``, ``trajectory_optimizer.previous_solution`` (the warm start).
        set_goal: ``set_goal(goal (G,))`` points the agent's reward at a goal (the push task's
            ``set_target``).
        plans: plans per label, each from the same warm start with its own samples, their first
            actions averaged (the planner's expected action at that state and warm start, its
            sampling noise divided by ``plans``); the first plan's warm start carries on.
        chunk: actions per label: the plan's first ``chunk`` rows (a chunked policy's target:
            what the planner intends next, which its warm start carries and the state does
            not show); at most the planner's horizon.
    """

    def __init__(self, agent, set_goal: Callable[[np.ndarray], None], plans: int = 1,
                 chunk: int = 1):
        for name, v in (('plans', plans), ('chunk', chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'PlannerExpert: {name} must be an int >= 1, got {v!r}')
        self.agent = agent
        self.set_goal = set_goal
        self.plans, self.chunk = plans, chunk
        self.labels = 0

    def set_model(self, model) -> None:
        """Plan on ``model`` from now on (a new version after a retrain)."""
        if self.agent.model is not model:
            self.agent.set_model(model)

    def start(self, goal: np.ndarray) -> None:
        """A new sequence: the goal, a fresh planner (no warm start, reseeded)."""
        self.set_goal(np.asarray(goal, dtype=np.float64))
        self.agent.restart()

    def label(self, state: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
        """The planner's first ``chunk`` actions (chunk * A,) at ``state`` (the mean over
        ``plans`` plans); ``previous``: the action executed before it (the planner's
        acceleration bound starts there), None at an episode start."""
        if previous is not None:
            self.agent.set_last_action(np.clip(previous, -1.0, 1.0))
        self.labels += 1
        optimizer = self.agent.trajectory_optimizer
        warm = optimizer.previous_solution.clone()
        first = self._rows(self.agent.plan(state))
        if self.plans == 1:
            return first
        carried = optimizer.previous_solution
        total = first.copy()
        for _ in range(self.plans - 1):
            optimizer.previous_solution = warm.clone()
            total += self._rows(self.agent.plan(state))
        optimizer.previous_solution = carried
        return total / self.plans

    def _rows(self, plan) -> np.ndarray:
        plan = np.asarray(plan, dtype=np.float64)
        if len(plan) < self.chunk:
            raise ValueError(f'PlannerExpert: a plan of {len(plan)} steps is shorter than the '
                             f'action chunk ({self.chunk})')
        return plan[:self.chunk].reshape(-1)


def fit_policy(obs: np.ndarray, labels: np.ndarray, cfg: Dict[str, Any], seed: int,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Fit a :class:`DeterministicPolicy` to ``labels`` (N, A) at ``obs`` (N, O) by MSE.

    Inputs are standardised during training and the standardisation is then folded into the
    first layer, so the saved network takes raw observations. 10% of the rows (at least one)
    are held out to report the validation error. With ``cfg['action_chunk']`` = k the labels
    are (N, k * A), k actions each, and the policy predicts chunks (deployed with
    ``cfg['chunk_decay']``).

    Returns:
        ``{'policy', 'train_mse', 'val_mse', 'rows', 'wall_s'}``.
    """
    t0 = time.monotonic()
    obs = np.asarray(obs, dtype=np.float32)
    y = np.clip(np.asarray(labels, dtype=np.float32), -LABEL_LIMIT, LABEL_LIMIT)
    n = len(obs)
    if n < 2:
        raise ValueError(f'fit_policy needs at least 2 labelled rows, got {n}')
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).numpy()
    n_val = max(1, n // 10)
    val, train = perm[:n_val], perm[n_val:]
    mu = obs[train].mean(0)
    sd = obs[train].std(0) + 1e-3
    x = torch.as_tensor((obs - mu) / sd)
    t = torch.as_tensor(y)
    chunk = int(cfg.get('action_chunk', 1))
    if y.shape[1] % chunk:
        raise ValueError(f'fit_policy: labels of width {y.shape[1]} do not hold {chunk} '
                         'actions each')
    policy = DeterministicPolicy(obs.shape[1], y.shape[1] // chunk, list(cfg['hidden_sizes']),
                                 cfg['activation'], chunk, float(cfg.get('chunk_decay', 0.0)))
    opt = torch.optim.AdamW(policy.parameters(), lr=float(cfg['learning_rate']),
                            weight_decay=float(cfg['weight_decay']))
    bs = int(cfg['batch_size'])
    train_t = torch.as_tensor(train)
    loss = torch.zeros(())
    for _ in range(int(cfg['epochs'])):
        order = train_t[torch.randperm(len(train_t), generator=g)]
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            loss = torch.nn.functional.mse_loss(policy(x[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    policy.eval()
    with torch.no_grad():
        train_mse = float(torch.nn.functional.mse_loss(policy(x[train_t]), t[train_t]))
        val_mse = float(torch.nn.functional.mse_loss(policy(x[val]), t[val]))
        first = [m for m in policy.latent if isinstance(m, torch.nn.Linear)][0]
        w = first.weight / torch.as_tensor(sd)[None]
        first.bias.sub_(w @ torch.as_tensor(mu))
        first.weight.copy_(w)
    log(f'policy fit on {n} labels: train mse {train_mse:.4f}, val mse {val_mse:.4f}, '
        f'{time.monotonic() - t0:.1f} s')
    return {'policy': policy, 'train_mse': train_mse, 'val_mse': val_mse, 'rows': n,
            'wall_s': time.monotonic() - t0}


class PlannerDistiller:
    """DAgger with the planner as the expert, fed with recorded rows like the MBPO learner.

    The trainer node calls :meth:`add_transitions` with the rows the controller recorded and
    :meth:`catch_up` after each validated retrain; :meth:`save` writes the policy checkpoint.

    Args:
        gtask: the task (``make_obs``, and ``action_filter``: the controller's command filter
            as a function of the state, used in the model rollouts).
        expert: the :class:`PlannerExpert` (its model is replaced by each ``catch_up``).
        cfg: a ``distill`` block (:data:`DISTILL_KEYS`).
        log: progress sink.
    """

    def __init__(self, gtask: GoalTask, expert: PlannerExpert, cfg: Dict[str, Any],
                 log: Callable[[str], None] = print):
        check_distill_cfg(cfg)
        self.gtask, self.expert, self.cfg, self.log = gtask, expert, dict(cfg), log
        self.seed = int(cfg['seed'])
        self.obs_dim = int(gtask.make_obs(torch.zeros(1, gtask.state_dim),
                                          torch.zeros(1, gtask.goal_dim)).shape[-1])
        self.rng = np.random.default_rng(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        # Real rows, in arrival order, and the label of each (NaN until labelled).
        self._cols: Dict[str, List[np.ndarray]] = {k: [] for k in (
            'state', 'executed', 'next_state', 'goal', 'episode', 'step')}
        self.chunk = int(cfg['action_chunk'])
        self.label_dim = gtask.act_dim * self.chunk
        self.real_labels = np.zeros((0, self.label_dim))
        # Labelled model-rollout rows (obs, label), aggregated over rounds as DAgger does.
        self.model_obs = np.zeros((0, self.obs_dim), dtype=np.float32)
        self.model_labels = np.zeros((0, self.label_dim))
        self._policy: Optional[DeterministicPolicy] = None
        self.fits = 0  # policy fits so far (each fit's seed is seed + its index)
        self.last_fit: Dict[str, Any] = {}

    # -------------------------------------------------------------------------------- data
    def add_transitions(self, state: np.ndarray, executed: np.ndarray, next_state: np.ndarray,
                        goal: np.ndarray, episode: np.ndarray, step: np.ndarray) -> None:
        """Store N real rows (each (N, ·) / (N,)): state, executed action, next state, goal, and
        the episode and step they belong to (labels are planned along each episode)."""
        n = len(state)
        for key, v in (('state', state), ('executed', executed), ('next_state', next_state),
                       ('goal', goal), ('episode', episode), ('step', step)):
            v = np.asarray(v)
            if len(v) != n:
                raise ValueError(f'add_transitions: {key} has {len(v)} rows, state has {n}')
            self._cols[key].append(v.astype(np.int64 if key in ('episode', 'step')
                                            else np.float64))
        self.real_labels = np.concatenate([self.real_labels,
                                           np.full((n, self.label_dim), np.nan)])

    def _col(self, key: str) -> np.ndarray:
        parts = self._cols[key]
        if len(parts) > 1:
            self._cols[key] = [np.concatenate(parts)]
        return self._cols[key][0] if parts else np.zeros((0,))

    @property
    def n_real(self) -> int:
        """Real rows stored."""
        return len(self.real_labels)

    # ------------------------------------------------------------------------------ labels
    def label_episodes(self, rows: np.ndarray, stop: Optional[Callable[[], bool]] = None) -> int:
        """Label the real rows ``rows`` (indices), planning along each episode in step order
        with the executed previous action, as the controller planned. Returns rows labelled."""
        if len(rows) == 0:
            return 0
        state, executed = self._col('state'), self._col('executed')
        goal, episode, step = self._col('goal'), self._col('episode'), self._col('step')
        done = 0
        order = rows[np.lexsort((step[rows], episode[rows]))]
        prev_ep, prev_step = None, None
        for i in order:
            if stop is not None and stop():
                break
            if episode[i] != prev_ep or step[i] != prev_step + 1:
                self.expert.start(goal[i])
                previous = None
            self.real_labels[i] = self.expert.label(state[i], previous)
            previous = executed[i]
            prev_ep, prev_step = episode[i], step[i]
            done += 1
        return done

    @torch.no_grad()
    def model_dagger(self, model, n: int, length: int,
                     stop: Optional[Callable[[], bool]] = None) -> int:
        """``n`` rollouts of ``length`` steps in ``model`` from random real states (with their
        goals; with ``rollout_start: episode_start`` the first states of real episodes), each
        step driven by the policy (by the expert's own label with probability
        ``expert_fraction``, and always before a policy exists; a chunked policy's temporal
        ensemble, as deployed); every visited state is labelled. One elite member per rollout
        (PETS' TS-inf); a rollout whose prediction leaves the finite numbers ends. Returns rows
        labelled."""
        if n == 0 or length == 0 or self.n_real == 0:
            return 0
        m = elite_model(model)
        state_all, goal_all = self._col('state'), self._col('goal')
        starts = (np.flatnonzero(self._col('step') == 0)
                  if self.cfg['rollout_start'] == 'episode_start' else np.zeros(0, np.int64))
        if len(starts) == 0:  # any_state, or no episode's first row stored
            starts = np.arange(self.n_real)
        obs_rows, label_rows = [], []
        for _ in range(n):
            if stop is not None and stop():
                break
            i = int(starts[self.rng.integers(len(starts))])
            s = torch.as_tensor(state_all[i], dtype=torch.float32)[None]
            goal = goal_all[i]
            g = torch.as_tensor(goal, dtype=torch.float32)[None]
            member = int(self.rng.integers(m.ensemble_size))
            self.expert.start(goal)
            previous = None
            chunks = ChunkEnsemble(self.gtask.act_dim, self.chunk, self.cfg['chunk_decay'])
            for t in range(length):
                obs = self.gtask.make_obs(s, g)
                label = self.expert.label(s[0].numpy(), previous)
                obs_rows.append(obs[0].numpy())
                label_rows.append(label)
                mine = None
                if self._policy is not None:
                    mine = chunks.add(t, self._policy(obs)[0].numpy())[0]
                if mine is None or self.rng.random() < float(self.cfg['expert_fraction']):
                    act = label[None, :self.gtask.act_dim].astype(np.float32)
                else:
                    act = mine[None].astype(np.float32)
                if self.gtask.action_filter is not None:
                    act = self.gtask.action_filter(s.numpy(), act)
                previous = act[0]
                a = torch.as_tensor(act, dtype=torch.float32)
                inputs = s[None].expand(m.ensemble_size, 1, -1).contiguous()
                acts = a[None].expand(m.ensemble_size, 1, -1).contiguous()
                nxt = m.sample_next(inputs, acts, generator=self.gen)[member]
                if not bool(torch.isfinite(nxt).all()):
                    break
                s = nxt
        if obs_rows:
            self.model_obs = np.concatenate([self.model_obs, np.stack(obs_rows)])
            self.model_labels = np.concatenate([self.model_labels, np.stack(label_rows)])
        return len(obs_rows)

    # ----------------------------------------------------------------------------- the loop
    def catch_up(self, model, stop: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
        """Catch up with ``model`` (the trainer's validated ensemble, eval mode, on the
        expert's device: the trainer hands over a CPU copy): label the real rows (all of them
        with ``relabel``, else the new ones), then ``dagger_rounds`` DAgger rounds in the model,
        each adding labelled rollouts of the current policy and refitting the policy on
        everything.

        Returns:
            ``{'steps', 'labels', 'model_rows', 'real_rows', 'new_model_rows', 'fits',
            'train_mse', 'val_mse', 'wall_s'}``: ``steps`` the real rows labelled now,
            ``labels`` the expert calls, ``fits`` the policy fits of this call (the errors
            are the last fit's).
        """
        t0 = time.monotonic()
        self.expert.set_model(model)
        calls = self.expert.labels
        rows = (np.arange(self.n_real) if self.cfg['relabel']
                else np.flatnonzero(np.isnan(self.real_labels[:, 0])))
        steps = self.label_episodes(rows, stop)
        added = 0
        for fits in range(1, int(self.cfg['dagger_rounds']) + 1):
            added += self.model_dagger(model, int(self.cfg['model_rollouts']),
                                       int(self.cfg['model_rollout_length']), stop)
            obs, labels = self.labelled()
            fit = self.fit_members(obs, labels)
            self._policy = fit.pop('policy')
            self.fits += 1
            if stop is not None and stop():
                break
        labelled = ~np.isnan(self.real_labels[:, 0])
        self.last_fit = {'steps': steps, 'labels': self.expert.labels - calls,
                         'model_rows': len(self.model_obs), 'real_rows': int(labelled.sum()),
                         'new_model_rows': added, 'fits': fits, 'train_mse': fit['train_mse'],
                         'val_mse': fit['val_mse'], 'wall_s': time.monotonic() - t0}
        return self.last_fit

    def fit_members(self, obs: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
        """``policy_members`` fits of the labels (member k seeded ``seed + fits + 10000 k``),
        one :class:`DeterministicPolicy` or their :class:`PolicyEnsemble`; the errors are the
        members' means."""
        fits = [fit_policy(obs, labels, self.cfg, self.seed + self.fits + 10_000 * k, self.log)
                for k in range(int(self.cfg['policy_members']))]
        nets = [f['policy'] for f in fits]
        return {'policy': nets[0] if len(nets) == 1 else PolicyEnsemble(nets),
                **{key: float(np.mean([f[key] for f in fits]))
                   for key in ('train_mse', 'val_mse')}}

    def labelled(self):
        """Every label so far: ``(obs (N, O), labels (N, A))``, the labelled real rows (in
        arrival order) then the model rollouts' rows: what each policy fit is fitted to."""
        labelled = ~np.isnan(self.real_labels[:, 0])
        goal = torch.as_tensor(self._col('goal')[labelled], dtype=torch.float32)
        state = torch.as_tensor(self._col('state')[labelled], dtype=torch.float32)
        real_obs = self.gtask.make_obs(state, goal).numpy()
        return (np.concatenate([real_obs, self.model_obs]),
                np.concatenate([self.real_labels[labelled], self.model_labels]))

    def policy(self) -> DeterministicPolicy:
        """The current policy (after the first :meth:`catch_up`).

        Raises:
            RuntimeError: no round has run yet.
        """
        if self._policy is None:
            raise RuntimeError('PlannerDistiller.policy: no catch_up has run yet')
        return self._policy

    def save(self, directory: Union[str, os.PathLike], version: int,
             extra: Optional[Dict[str, Any]] = None) -> str:
        """Write the policy checkpoint (``core/policy.py`` format); returns its sha256."""
        return save_policy(self.policy(), directory, version, self.gtask.obs_layout,
                           extra={**(extra or {}), 'distill': self.last_fit})


def push_distill_agent(params: Dict[str, Any], log: Callable[[str], None] = print,
                       model=None) -> PlannerDistiller:
    """The distiller of the push task from a trainer node's parameters.

    Args:
        params: ``task``, ``planner`` (the expert: the controller's planner block),
            ``max_joint_accel_rad_s2``, ``position_margin_rad`` and ``distill``
            (``node_params(profile, 'trainer')``).
        log: progress sink.
        model: the ensemble to build the planner on (any; each ``catch_up`` swaps in its own).
    """
    from mbrl_robot.core.models import create_model
    from mbrl_robot.core.planning import create_agent
    from mbrl_robot.core.safety import CommandFilter
    from mbrl_robot.core.tasks.push import (ACTION_DIM, DISTILL_OBSERVATIONS, push_goal_task,
                                            PushTask, STATE_DIM)
    task = PushTask.from_config(params['task'])
    command_filter = CommandFilter.from_params(params)
    check_distill_cfg(params['distill'])
    layout = DISTILL_OBSERVATIONS[params['distill']['observation']]
    gtask = push_goal_task(task, command_filter, layout)
    if model is None:
        model = create_model(dict(params['model']), STATE_DIM, ACTION_DIM, 'cpu', 0)
    planner = dict(params['planner'])
    # Labels come from the fused plan (the compiled and captured backends make the same plans;
    # a compile here would only delay the first policy) without the plan statistics; with
    # label_mean, the optimiser's final mean rather than its best sample (the expected action:
    # the best sample's first action is mostly sampling noise).
    planner.update(backend='fused', plan_stats=False)
    if params['distill']['label_mean']:
        planner['return_mean'] = True
    agent = create_agent(planner, model.eval(), task.reward_fn, ACTION_DIM, 'cpu',
                         max_delta=command_filter.max_action_step,
                         joint_limits=command_filter.limits)
    expert = PlannerExpert(agent, task.set_target, int(params['distill']['label_plans']),
                           int(params['distill']['action_chunk']))
    return PlannerDistiller(gtask, expert, dict(params['distill']), log)
