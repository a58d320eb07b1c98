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
"""The planner distilled into a policy (core/algorithms/distill.py): labels, DAgger, the fit.

A 2-D point mass (``s' = s + 0.1 a``) with an analytic expert (``a = clip(5 (goal - s))``)
shows the mechanics exactly; the last tests run the push task's real planner as the expert on a
small model, as the trainer node does.
"""

import copy

import numpy as np
import pytest
import torch

from mbrl_robot.config import node_params
import mbrl_robot.core.algorithms.distill as distill_module
from mbrl_robot.core.algorithms.distill import (check_distill_cfg, fit_policy, LABEL_LIMIT,
                                                PlannerDistiller, push_distill_agent)
from mbrl_robot.core.policy import DeterministicPolicy, load_policy, save_policy
from mbrl_robot.core.tasks.push import PUSH_OBS_LAYOUT
from mbrl_robot.core.types import GoalTask

CFG = {'hidden_sizes': [64, 64], 'activation': 'relu', 'epochs': 150, 'batch_size': 64,
       'learning_rate': 3e-3, 'weight_decay': 0.0, 'relabel': False, 'label_mean': True,
       'model_rollouts': 20, 'model_rollout_length': 10, 'rollout_start': 'any_state',
       'expert_fraction': 0.3, 'dagger_rounds': 1, 'observation': 'state',
       'policy_members': 1, 'label_plans': 1, 'action_chunk': 1, 'chunk_decay': 0.0,
       'seed': 0}


def _point_task() -> GoalTask:
    def make_obs(state, goal):
        return torch.cat((state, goal - state), dim=-1)

    def reward_fn(next_state, act, goal):
        return -torch.linalg.vector_norm(next_state - goal, dim=-1)

    return GoalTask(2, 2, 2, 'point', make_obs, reward_fn, None)


def _step(s, a):
    return s + 0.1 * np.clip(a, -1.0, 1.0)


class PointModel:
    """The point mass's exact dynamics behind the ensemble interface (2 members, both elite)."""

    ensemble_size = 2
    elite_indices = [0, 1]

    def sample_next(self, obs, act, deterministic=False, generator=None):
        return obs + 0.1 * act.clamp(-1.0, 1.0)


class PointExpert:
    """``clip(5 (goal - s))``; records every call."""

    def __init__(self):
        self.labels = 0
        self.calls = []
        self.model = None

    def set_model(self, model):
        self.model = model

    def start(self, goal):
        self.goal = np.asarray(goal, dtype=np.float64)
        self.calls.append(('start', self.goal.copy()))

    def label(self, state, previous):
        self.labels += 1
        self.calls.append(('label', np.array(state), None if previous is None
                           else np.array(previous)))
        return np.clip(5.0 * (self.goal - np.asarray(state)), -1.0, 1.0)


def _episodes(n, steps, seed, policy=None):
    """Rows of ``n`` episodes on the point mass, driven by random actions (or ``policy``)."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ('state', 'executed', 'next_state', 'goal', 'episode', 'step')}
    for e in range(n):
        s, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        for t in range(steps):
            a = rng.uniform(-1, 1, 2) if policy is None else policy(s, goal)
            nxt = _step(s, a)
            for k, v in (('state', s), ('executed', a), ('next_state', nxt), ('goal', goal),
                         ('episode', e), ('step', t)):
                cols[k].append(v)
            s = nxt
    return {k: np.asarray(v) for k, v in cols.items()}


def _distiller(**cfg):
    return PlannerDistiller(_point_task(), PointExpert(), {**CFG, **cfg}, log=lambda m: None)


def test_labels_are_planned_along_each_episode_in_step_order():
    d = _distiller(model_rollouts=0)
    rows = _episodes(2, 4, seed=0)
    order = np.random.default_rng(1).permutation(8)  # rows may arrive in any order
    d.add_transitions(*(rows[k][order] for k in ('state', 'executed', 'next_state', 'goal',
                                                 'episode', 'step')))
    d.catch_up(PointModel())
    calls = d.expert.calls
    assert [c[0] for c in calls] == ['start'] + ['label'] * 4 + ['start'] + ['label'] * 4
    for e in range(2):
        block = calls[5 * e:5 * e + 5]
        np.testing.assert_array_equal(block[0][1], rows['goal'][4 * e])
        for t in range(4):
            _, state, previous = block[1 + t]
            np.testing.assert_array_equal(state, rows['state'][4 * e + t])
            if t == 0:
                assert previous is None  # an episode start: no executed action before it
            else:
                np.testing.assert_array_equal(previous, rows['executed'][4 * e + t - 1])
    expected = np.clip(5.0 * (rows['goal'] - rows['state']), -1, 1)[order]
    np.testing.assert_allclose(d.real_labels, expected)


def test_a_gap_in_the_steps_starts_a_new_sequence():
    d = _distiller(model_rollouts=0)
    rows = _episodes(1, 5, seed=0)
    keep = np.array([0, 1, 3, 4])  # step 2 lost
    d.add_transitions(*(rows[k][keep] for k in ('state', 'executed', 'next_state', 'goal',
                                                'episode', 'step')))
    d.catch_up(PointModel())
    assert [c[0] for c in d.expert.calls] == ['start', 'label', 'label', 'start', 'label',
                                              'label']


def test_each_row_is_labelled_once_unless_relabel():
    for relabel, expected in ((False, [6, 6]), (True, [6, 12])):
        d = _distiller(model_rollouts=0, relabel=relabel)
        first, second = _episodes(1, 6, seed=0), _episodes(2, 6, seed=1)
        second['episode'] += 1
        calls = []
        for rows in (first, {k: v[6:] for k, v in second.items()}):
            d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal',
                                                  'episode', 'step')))
            calls.append(d.catch_up(PointModel())['labels'])
        assert calls == expected, relabel


def test_distilled_policy_drives_the_point_to_its_goal():
    """DAgger on random-action data and model rollouts: the policy imitates the expert on
    states it visits itself and reaches goals it never saw."""
    d = _distiller()
    rows = _episodes(10, 20, seed=0)
    d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal', 'episode',
                                          'step')))
    for _ in range(3):
        info = d.catch_up(PointModel())
    assert info['model_rows'] == 3 * 20 * 10
    policy = d.policy()
    rng = np.random.default_rng(123)
    finals = []
    for _ in range(20):
        s, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        for _ in range(40):
            obs = torch.as_tensor(np.concatenate([s, goal - s]), dtype=torch.float32)
            s = _step(s, policy.act(obs.numpy()))
        finals.append(np.linalg.norm(s - goal))
    # The expert ends within ~0.02 (its gain saturates at 0.1 per step); random: ~1.
    assert np.median(finals) < 0.05 and np.max(finals) < 0.15, finals


def test_dagger_rounds_roll_out_each_fitted_policy_in_the_model_and_refit(monkeypatch):
    """One catch_up with ``dagger_rounds: 3``: three rounds of model rollouts and fits; the
    first round's rollouts follow the expert (no policy yet), the later ones the policy just
    fitted (with expert_fraction 0, their steps are the policy's, not the labels)."""
    d = _distiller(dagger_rounds=3, expert_fraction=0.0, model_rollouts=5)
    fits = []
    real_fit = fit_policy

    def counting_fit(obs, labels, cfg, seed, log):
        fits.append((len(obs), seed))
        return real_fit(obs, labels, cfg, seed, log)

    rows = _episodes(4, 10, seed=0)
    d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal', 'episode',
                                          'step')))
    monkeypatch.setattr(distill_module, 'fit_policy', counting_fit)
    info = d.catch_up(PointModel())
    per_round = 5 * 10
    assert info['fits'] == 3 and info['new_model_rows'] == 3 * per_round
    assert info['model_rows'] == 3 * per_round
    # Each fit sees the real rows and every model row so far, with its own seed.
    assert fits == [(40 + per_round, 0), (40 + 2 * per_round, 1), (40 + 3 * per_round, 2)]
    # A step of a rollout moved the point by 0.1 x the executed action: the label in round 1,
    # the policy's action afterwards.
    obs, labels = d.model_obs, d.model_labels
    for r in range(3):
        for k in range(5):
            i = r * per_round + k * 10
            s, s_next = obs[i:i + 9, :2], obs[i + 1:i + 10, :2]
            moved_by_label = np.allclose(s_next - s, 0.1 * np.clip(labels[i:i + 9], -1, 1),
                                         atol=1e-5)
            assert moved_by_label == (r == 0), (r, k)
    # A trainer stopping: the rounds end after the fit in progress (a policy stays).
    info = d.catch_up(PointModel(), stop=lambda: len(fits) >= 4)
    assert info['fits'] == 1 and len(fits) == 4


@pytest.mark.parametrize('start', ['any_state', 'episode_start'])
def test_model_rollouts_start_where_rollout_start_says(start):
    """episode_start: every rollout begins at the first state of a real episode (with that
    episode's goal); any_state: at real states from anywhere in the episodes."""
    d = _distiller(rollout_start=start, model_rollouts=30, model_rollout_length=4)
    rows = _episodes(5, 10, seed=0)
    d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal', 'episode',
                                          'step')))
    d.model_dagger(PointModel(), 30, 4)
    firsts = d.model_obs[::4]  # obs = [state, goal - state]
    assert len(firsts) == 30
    real = np.concatenate([rows['state'], rows['goal'] - rows['state']], axis=1)
    hit = [np.flatnonzero(np.all(np.isclose(real, f, atol=1e-6), axis=1)) for f in firsts]
    assert all(len(h) for h in hit)
    from_first_step = [bool(np.any(rows['step'][h] == 0)) for h in hit]
    if start == 'episode_start':
        assert all(from_first_step)
    else:
        assert not all(from_first_step)


def test_fit_folds_the_input_normalisation_into_the_first_layer():
    rng = np.random.default_rng(0)
    obs = rng.normal(0.0, 1.0, (2000, 3)) * np.array([100.0, 0.01, 1.0]) + np.array([50, 2, -7])
    z = (obs - np.array([50, 2, -7])) / np.array([100.0, 0.01, 1.0])
    labels = np.tanh(z @ np.array([[0.8, -0.5], [1.0, 0.3], [-0.4, 0.9]]))
    fit = fit_policy(obs, labels, {**CFG, 'epochs': 60}, seed=0, log=lambda m: None)
    with torch.no_grad():
        pred = fit['policy'](torch.as_tensor(obs, dtype=torch.float32)).numpy()
    # Raw observations in: without the fold this misses by ~1 (inputs of 50 and 0.01 scale).
    assert np.mean((pred - np.clip(labels, -LABEL_LIMIT, LABEL_LIMIT)) ** 2) < 2e-3
    assert fit['val_mse'] < 2e-3


@pytest.mark.parametrize('change, match', [
    ({'epochs': 0}, 'epochs'), ({'expert_fraction': 1.5}, 'expert_fraction'),
    ({'hidden_sizes': []}, 'hidden_sizes'), ({'relabel': 'yes'}, 'relabel'),
    ({'learning_rate': float('nan')}, 'learning_rate'), ({'model_rollouts': -1}, 'model_rollouts'),
    ({'dagger_rounds': 0}, 'dagger_rounds'), ({'rollouts': 3}, 'unknown keys'),
    ({'rollout_start': 'start'}, 'rollout_start'), ({'observation': 'tool'}, 'observation'),
    ({'policy_members': 0}, 'policy_members'), ({'label_plans': 0}, 'label_plans'),
    ({'action_chunk': 0}, 'action_chunk'), ({'chunk_decay': -1.0}, 'chunk_decay'),
])
def test_bad_config_is_named(change, match):
    with pytest.raises(ValueError, match=match):
        check_distill_cfg({**CFG, **change})


def test_add_transitions_rejects_ragged_rows():
    d = _distiller()
    rows = _episodes(1, 3, seed=0)
    with pytest.raises(ValueError, match='goal has 2 rows'):
        d.add_transitions(rows['state'], rows['executed'], rows['next_state'], rows['goal'][:2],
                          rows['episode'], rows['step'])
    with pytest.raises(RuntimeError, match='no catch_up'):
        d.policy()


def _push_params():
    p = copy.deepcopy(node_params('distill', 'trainer'))
    p['model'].update(ensemble_size=2, num_layers=2, hidden_size=16)
    p['planner'].update(population_size=8, elite_count=2, horizon=3)
    p['distill'].update(epochs=2, model_rollouts=2, model_rollout_length=3, hidden_sizes=[8])
    return p


def test_push_distiller_labels_with_the_planner_and_saves_a_deployable_policy(tmp_path):
    """The trainer's path: the planner block as the expert on a (small, untrained) model; the
    labels are the planner's first actions, the checkpoint loads as the controller loads it."""
    from mbrl_robot.core.models import create_model
    from mbrl_robot.core.planning import create_agent
    from mbrl_robot.core.safety import CommandFilter
    from mbrl_robot.core.tasks.push import PushTask
    p = _push_params()
    model = create_model(dict(p['model']), 17, 7, 'cpu', 0).eval()
    d = push_distill_agent(p, log=lambda m: None, model=model)
    rng = np.random.default_rng(0)
    n = 6
    state = np.tile(np.r_[np.zeros(14), 0.6, 0.0, 0.02], (n, 1)) + rng.normal(0, 0.01, (n, 17))
    executed = rng.uniform(-1, 1, (n, 7))
    goal = np.tile([0.7, 0.05, 0.02], (n, 1))
    d.add_transitions(state, executed, state, goal, np.zeros(n, int), np.arange(n))
    info = d.catch_up(model)
    rounds = p['distill']['dagger_rounds']  # the profile's (3)
    assert info['steps'] == n and info['labels'] == n + rounds * 2 * 3
    assert info['model_rows'] == rounds * 6 and info['fits'] == rounds
    # The same planner, fresh, fed the same sequence, makes the same first actions.
    task = PushTask.from_config(p['task'])
    task.set_target(goal[0])
    cf = CommandFilter.from_params(p)
    agent = create_agent({**p['planner'], 'backend': 'fused', 'plan_stats': False,
                          'return_mean': True},
                         model, task.reward_fn, 7, 'cpu',
                         max_delta=cf.max_action_step, joint_limits=cf.limits)
    for t in range(n):
        if t:
            agent.set_last_action(executed[t - 1])
        np.testing.assert_allclose(d.real_labels[t], agent.plan(state[t])[0], atol=1e-6)
    sha = d.save(tmp_path / 'policy', 3, extra={'method': 'distill'})
    policy, meta = load_policy(tmp_path / 'policy', version=3, sha256=sha, obs_dim=20, act_dim=7,
                               obs_layout=PUSH_OBS_LAYOUT)
    assert meta['extra']['method'] == 'distill'
    assert meta['extra']['distill']['labels'] == n + rounds * 6
    assert policy.act(np.zeros(20)).shape == (7,)


def test_label_plans_average_plans_from_one_warm_start_and_carry_the_first_on():
    """``distill.label_plans: 3``: each label is the mean first action of three plans made
    from the same warm start (each its own samples), and the next state's plan starts from the
    first plan's warm start, so the chain is the one label_plans 1 would have planned."""
    from mbrl_robot.core.models import create_model
    p = _push_params()
    model = create_model(dict(p['model']), 17, 7, 'cpu', 0).eval()
    rng = np.random.default_rng(1)
    states = np.tile(np.r_[np.zeros(14), 0.6, 0.0, 0.02], (3, 1)) + rng.normal(0, 0.01, (3, 17))
    goal = np.array([0.7, 0.05, 0.02])

    def expert(plans):
        q = copy.deepcopy(p)
        q['distill']['label_plans'] = plans
        e = push_distill_agent(q, log=lambda m: None, model=model).expert
        e.start(goal)
        return e

    single, averaged, reference = expert(1), expert(3), expert(1)
    opt = reference.agent.trajectory_optimizer
    for t, s in enumerate(states):
        previous = None if t == 0 else np.full(7, 0.1)
        label = averaged.label(s, previous)
        # By hand on a third expert: three plans from one warm start, the first one's kept.
        if previous is not None:
            reference.agent.set_last_action(previous)
        warm = opt.previous_solution.clone()
        firsts, kept = [], None
        for k in range(3):
            opt.previous_solution = warm.clone()
            firsts.append(reference.agent.plan(s)[0])
            kept = opt.previous_solution if k == 0 else kept
        opt.previous_solution = kept
        np.testing.assert_allclose(label, np.mean(firsts, axis=0), atol=1e-6)
        one = single.label(s, previous)
        assert not np.allclose(label, one, atol=1e-4)  # other samples, a different mean
    assert averaged.labels == single.labels == 3
    with pytest.raises(ValueError, match='plans'):
        distill_module.PlannerExpert(single.agent, lambda g: None, plans=0)


def test_a_planner_mode_controller_runs_the_policy_in_policy_episodes():
    """The recipe's ``policy`` baseline: a planner-mode controller plans in planner episodes
    and runs the announced policy (one forward, no plan) in policy episodes, each waiting for
    its own version."""
    from mbrl_robot.core.control import LearnedPolicy, PlannerPolicy, PushController
    from mbrl_robot.core.models import create_model
    from mbrl_robot.core.policy import DeterministicPolicy
    ctl = copy.deepcopy(node_params('ci_smoke', 'controller'))
    assert ctl['mode'] == 'planner'
    control = PushController.from_params(ctl, clock=lambda: 0.0)
    model = create_model({'name': 'gaussian_ensemble', 'ensemble_size': 2, 'num_layers': 2,
                          'hidden_size': 8}, 17, 7).eval()
    control.policies.set_model(model, 1)
    control.policies.set_target([0.6, 0.05, 0.02])
    state = np.r_[np.zeros(14), 0.55, 0.0, 0.02]
    control.start_episode(0, 'policy', min_model_version=1)
    assert control.ready(0.0) == 'waiting for policy v1'  # the model alone is not enough
    control.policies.set_policy(DeterministicPolicy(20, 7, [8]), 1)
    assert control.ready(0.0) is None
    tick = control.tick(state, 0.0, 0.0, np.array([0.6, 0.05, 0.02]))
    assert tick.event == 'act' and isinstance(control._policy, LearnedPolicy)
    assert 'policy_version' in tick.info and 'predicted_return' not in tick.info
    control.start_episode(1, 'planner', min_model_version=1)
    tick = control.tick(state, 0.05, 0.05, np.array([0.6, 0.05, 0.02]))
    assert tick.event == 'act' and isinstance(control._policy, PlannerPolicy)
    assert 'predicted_return' in tick.info
    control.close()


def test_the_policy_drives_the_last_k_training_episodes_from_the_iteration_named():
    """DAgger on real states (``recipe.policy_episodes_per_iteration``): from
    ``policy_episodes_from_iteration`` on, the last K of each iteration's episodes are the
    policy's (stage ``dagger``), on the seeds the planner's would have had; K = 0 leaves the
    recipe as it was, K above the iteration's episodes is named."""
    from mbrl_robot.core.algorithms.mpc_recipe import build_phases
    p = dict(node_params('ci_smoke', 'recipe'), random_episodes=1, iterations=3,
             mpc_episodes_per_iteration=3)
    plain = build_phases(p)
    mixed = build_phases(dict(p, policy_episodes_per_iteration=2,
                              policy_episodes_from_iteration=2))
    assert [ph.get('stage', 'train') for ph in mixed] == (
        ['random', 'train'] + ['mpc'] * 3 + ['train'] + (['mpc'] + ['dagger'] * 2 + ['train']) * 2
        + ['eval_planner'])
    assert [ph.get('policy') for ph in mixed if ph.get('stage') == 'dagger'] == ['policy'] * 4
    assert [ph.get('seed') for ph in mixed] == [ph.get('seed') for ph in plain]
    assert plain == build_phases(dict(p, policy_episodes_per_iteration=0))
    assert all(ph.get('stage') != 'dagger' for ph in plain)
    with pytest.raises(ValueError, match=r'policy_episodes_per_iteration \(4\) is more than '
                                         r'mpc_episodes_per_iteration \(3\)'):
        build_phases(dict(p, policy_episodes_per_iteration=4))


def test_the_learning_curve_counts_the_policys_training_episodes():
    """``benchmarks/push_learning.py``'s curve: each iteration's transitions include the
    policy's training episodes before it, and its planner and policy episodes are scored apart."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
    import push_learning

    def ep(stage, it, success, final=0.1):
        return {'stage': stage, 'iteration': it, 'steps': 10, 'success': success,
                'final_distance': final}
    episodes = [ep('random', 0, False), ep('mpc', 1, True, 0.02), ep('dagger', 1, False, 0.2),
                ep('mpc', 2, False), ep('dagger', 2, True, 0.04), ep('eval_planner', 2, True)]
    assert push_learning.learning_curve(episodes) == [
        {'iteration': 1, 'transitions': 10, 'success_rate': 1.0, 'mean_final_distance': 0.02,
         'dagger_success_rate': 0.0, 'dagger_mean_final_distance': 0.2},
        {'iteration': 2, 'transitions': 30, 'success_rate': 0.0, 'mean_final_distance': 0.1,
         'dagger_success_rate': 1.0, 'dagger_mean_final_distance': 0.04}]


def test_policy_episodes_without_a_policy_trainer_are_refused_in_process():
    """In-process, only the distiller trains a policy: DAgger episodes of a planner-mode
    controller with the ensemble trainer are named before any episode runs."""
    from mbrl_robot.core.algorithms.mpc_recipe import run_recipe
    cfg = {n: copy.deepcopy(node_params('ci_smoke', n))
           for n in ('twin', 'trainer', 'controller', 'recipe')}
    cfg['recipe']['policy_episodes_per_iteration'] = 1
    assert cfg['trainer']['algorithm'] == 'ensemble'
    with pytest.raises(ValueError, match='dagger episodes run the trained policy'):
        run_recipe(cfg, env=None, log=lambda m: None)


def test_a_policy_that_sees_the_tool_is_fitted_saved_and_run_with_the_same_observation(
        tmp_path):
    """``distill.observation: state_and_tool``: the distiller fits on [s, target - puck, tip,
    puck - tip] (tip from the arm's kinematics), the checkpoint records that layout, and a
    controller that loads it acts on the same observation (the same action as the network
    fed the distiller's observation); a checkpoint whose inputs do not match its layout is
    rejected."""
    from mbrl_robot.core.control import PolicyFactory
    from mbrl_robot.core.models import create_model

    from mbrl_robot.core.safety import CommandFilter
    from mbrl_robot.core.tasks.push import PUSH_TOOL_OBS_LAYOUT, PushTask
    p = _push_params()
    p['distill']['observation'] = 'state_and_tool'
    model = create_model(dict(p['model']), 17, 7, 'cpu', 0).eval()
    d = push_distill_agent(p, log=lambda m: None, model=model)
    assert d.obs_dim == 26 and d.gtask.obs_layout == PUSH_TOOL_OBS_LAYOUT
    rng = np.random.default_rng(1)
    n = 6
    state = np.tile(np.r_[0.0, 0.8, 0.0, -1.8, 0.0, 0.5, 0.0, np.zeros(7), 0.6, 0.0, 0.02],
                    (n, 1)) + rng.normal(0, 0.01, (n, 17))
    goal = np.tile([0.7, 0.05, 0.02], (n, 1))
    d.add_transitions(state, rng.uniform(-1, 1, (n, 7)), state, goal, np.zeros(n, int),
                      np.arange(n))
    d.catch_up(model)
    obs, _ = d.labelled()
    task = PushTask.from_config(p['task'])
    s = torch.as_tensor(state, dtype=torch.float32)
    tip = task.tool_tip(s)
    np.testing.assert_allclose(obs[:n, 20:23], tip.numpy(), atol=1e-5)
    np.testing.assert_allclose(obs[:n, 23:26], (s[:, 14:17] - tip).numpy(), atol=1e-5)
    d.save(tmp_path / 'v1', 1)
    ctl = copy.deepcopy(node_params('distill', 'controller'))
    factory = PolicyFactory(ctl, CommandFilter.from_params(ctl))
    assert factory.load_policy(str(tmp_path / 'v1'), 1)
    factory.set_target(goal[0])
    learned = factory.create(kind='policy')
    action, _ = learned.plan(state[0], 0)
    with torch.no_grad():
        expected = d.policy()(torch.as_tensor(obs[:1])).double().numpy()
    np.testing.assert_allclose(action, np.clip(expected, -1, 1), atol=1e-5)
    # 20 inputs under the tool layout's name: rejected, the loaded policy kept.
    from mbrl_robot.core.policy import DeterministicPolicy
    save_policy(DeterministicPolicy(20, 7, [8]), tmp_path / 'v2', 2, PUSH_TOOL_OBS_LAYOUT)
    assert not factory.load_policy(str(tmp_path / 'v2'), 2)
    assert factory.policy_version == 1


def test_policy_members_are_fitted_with_their_own_seeds_and_deployed_as_their_mean(tmp_path):
    """``distill.policy_members: 3``: every fit makes three networks (distinct seeds, so
    distinct weights), the policy is their mean action, the checkpoint holds all three and
    loads back (in the controller too) acting the same."""
    from mbrl_robot.core.control import PolicyFactory
    from mbrl_robot.core.policy import PolicyEnsemble
    from mbrl_robot.core.safety import CommandFilter
    d = _distiller(policy_members=3, model_rollouts=2, epochs=5)
    rows = _episodes(4, 10, seed=0)
    d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal', 'episode',
                                          'step')))
    d.catch_up(PointModel())
    policy = d.policy()
    assert isinstance(policy, PolicyEnsemble) and policy.members == 3
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(5, 4)), dtype=torch.float32)
    with torch.no_grad():
        each = torch.stack([net(x) for net in policy.nets])
        assert float((each[0] - each[1]).abs().max()) > 1e-4  # not one seed three times
        torch.testing.assert_close(policy(x), each.mean(0))
    save_policy(policy, tmp_path / 'p', 1, 'point')
    loaded, meta = load_policy(tmp_path / 'p', version=1)
    assert meta['members'] == 3 and isinstance(loaded, PolicyEnsemble)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), policy(x))
    # The push task's: the controller loads an ensemble checkpoint and runs it.
    p = _push_params()
    p['distill']['policy_members'] = 2
    from mbrl_robot.core.models import create_model
    model = create_model(dict(p['model']), 17, 7, 'cpu', 0).eval()
    push = push_distill_agent(p, log=lambda m: None, model=model)
    n = 4
    state = np.tile(np.r_[np.zeros(14), 0.6, 0.0, 0.02], (n, 1))
    push.add_transitions(state, np.zeros((n, 7)), state, np.tile([0.7, 0.05, 0.02], (n, 1)),
                         np.zeros(n, int), np.arange(n))
    push.catch_up(model)
    push.save(tmp_path / 'push', 1)
    ctl = copy.deepcopy(node_params('distill', 'controller'))
    factory = PolicyFactory(ctl, CommandFilter.from_params(ctl))
    assert factory.load_policy(str(tmp_path / 'push'), 1)
    factory.set_target([0.7, 0.05, 0.02])
    action, _ = factory.create(kind='policy').plan(state[0], 0)
    assert action.shape == (1, 7) and np.all(np.isfinite(action))


def test_a_policy_ensemble_needs_two_networks_of_one_shape():
    from mbrl_robot.core.policy import DeterministicPolicy, PolicyEnsemble
    with pytest.raises(ValueError, match='one architecture'):
        PolicyEnsemble([DeterministicPolicy(4, 2, [8]), DeterministicPolicy(4, 2, [16])])
    with pytest.raises(ValueError, match='one architecture'):
        PolicyEnsemble([DeterministicPolicy(4, 2, [8])])
    with pytest.raises(ValueError, match='members'):
        PolicyEnsemble(obs_dim=4, act_dim=2, hidden_sizes=[8], members=1)


class ChunkPointExpert(PointExpert):
    """The point expert's plan: its own clipped-gain actions rolled out ``chunk`` steps."""

    def __init__(self, chunk):
        super().__init__()
        self.chunk = chunk

    def label(self, state, previous):
        first = super().label(state, previous)
        rows, s = [first], _step(np.asarray(state), first)
        for _ in range(self.chunk - 1):
            rows.append(np.clip(5.0 * (self.goal - s), -1.0, 1.0))
            s = _step(s, rows[-1])
        return np.concatenate(rows)


def test_chunk_ensemble_weighs_every_prediction_made_for_a_step():
    """Step t executes the mean over the last k predictions of their rows for t, weight
    exp(-decay * age); later rows are the fallback; a step back in time starts afresh."""
    from mbrl_robot.core.policy import ChunkEnsemble
    e = ChunkEnsemble(1, 3, decay=0.0)
    np.testing.assert_allclose(e.add(0, [1.0, 2.0, 3.0]), [[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(e.add(1, [10.0, 20.0, 30.0]), [[6.0], [11.5], [30.0]])
    # Step 2: rows 2, 1 and 0 of the predictions made at steps 0, 1 and 2.
    np.testing.assert_allclose(e.add(2, [100.0, 0.0, 0.0])[0], [(3.0 + 20.0 + 100.0) / 3])
    # Step 3 (step 0's prediction is spent): rows 2 and 1 of steps 1 and 2, row 0 of step 3.
    np.testing.assert_allclose(e.add(3, [7.0, 0.0, 0.0])[0], [(30.0 + 0.0 + 7.0) / 3])
    # A skipped step: predictions still align by step number.
    np.testing.assert_allclose(e.add(5, [1.0, 1.0, 1.0])[0], [(0.0 + 1.0) / 2])
    np.testing.assert_allclose(e.add(0, [4.0, 5.0, 6.0]), [[4.0], [5.0], [6.0]])
    d = ChunkEnsemble(1, 2, decay=np.log(3.0))  # the older prediction weighs a third
    d.add(0, [0.0, 4.0])
    np.testing.assert_allclose(d.add(1, [8.0, 0.0])[0], [(4.0 / 3 + 8.0) / (1.0 / 3 + 1.0)])
    single = ChunkEnsemble(2, 1)
    np.testing.assert_allclose(single.add(0, [0.5, -0.5]), [[0.5, -0.5]])


def test_a_chunked_policy_is_fitted_to_plans_rolled_out_as_an_ensemble_and_deployed(tmp_path):
    """action_chunk 3: each label is the expert's next three actions; the model rollouts
    execute the policy's temporal ensemble; the checkpoint keeps the chunk and its decay, and
    the controller's LearnedPolicy executes the ensemble, forgetting it at the goal hold."""
    from mbrl_robot.core.control import GoalHold, LearnedPolicy
    from mbrl_robot.core.tasks.push import PushTask
    d = PlannerDistiller(_point_task(), ChunkPointExpert(3),
                         {**CFG, 'action_chunk': 3, 'chunk_decay': 0.5}, log=lambda m: None)
    rows = _episodes(10, 20, seed=0)
    d.add_transitions(*(rows[k] for k in ('state', 'executed', 'next_state', 'goal', 'episode',
                                          'step')))
    for _ in range(2):
        d.catch_up(PointModel())
    assert d.real_labels.shape == (200, 6) and d.model_labels.shape[1] == 6
    policy = d.policy()
    assert (policy.act_dim, policy.chunk, policy.chunk_decay) == (2, 3, 0.5)
    # The second round's rollouts moved by the ensembled policy: not by the label's first
    # action (expert_fraction 0.3 leaves most steps to the policy).
    obs, labels = d.model_obs[200:], d.model_labels[200:]
    moved = obs[1:10, :2] - obs[:9, :2]
    assert not np.allclose(moved, 0.1 * np.clip(labels[:9, :2], -1, 1), atol=1e-5)
    # It drives the point home with its ensemble.
    from mbrl_robot.core.policy import ChunkEnsemble
    rng = np.random.default_rng(123)
    finals = []
    for _ in range(10):
        s, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        e = ChunkEnsemble(2, 3, 0.5)
        for t in range(40):
            obs = np.concatenate([s, goal - s])
            s = _step(s, e.add(t, policy.act(obs))[0])
        finals.append(np.linalg.norm(s - goal))
    assert np.median(finals) < 0.05, finals
    # Saved and loaded with its chunk; a push-shaped chunked policy in the controller.
    net = DeterministicPolicy(20, 7, [8], chunk=3, chunk_decay=0.5)
    save_policy(net, tmp_path / 'p', 1, PUSH_OBS_LAYOUT)
    loaded, meta = load_policy(tmp_path / 'p', act_dim=7)
    assert (loaded.chunk, loaded.chunk_decay, meta['chunk']) == (3, 0.5, 3)
    task = PushTask.from_config(node_params('ci_smoke', 'controller')['task'])
    task.set_target([0.6, 0.05, 0.02])
    lp = LearnedPolicy(loaded, task, 1, GoalHold(0.02, 0.03))
    state = np.r_[np.zeros(14), 0.55, 0.0, 0.02]
    first, _ = lp.plan(state, 0)
    second, _ = lp.plan(state, 1)
    with torch.no_grad():
        pred = loaded(lp.make_obs(torch.as_tensor(state[None], dtype=torch.float32),
                                  torch.tensor([[0.6, 0.05, 0.02]]))).numpy().reshape(3, 7)
    assert first.shape == (3, 7)
    np.testing.assert_allclose(first, np.clip(pred, -1, 1), atol=1e-6)
    w = np.exp(-0.5)
    np.testing.assert_allclose(second[0], (w * pred[1] + pred[0]) / (w + 1), atol=1e-6)
    held, _ = lp.plan(np.r_[np.zeros(14), 0.6, 0.05, 0.02], 2)  # at the goal: hold, forget
    assert np.all(held == 0) and lp.chunks._made == []


def test_the_push_expert_labels_a_chunk_with_the_plans_first_rows():
    """``action_chunk: 2``: a label is the first two rows of the plan that ``action_chunk: 1``
    labels by its first row (same planner, same seed); a chunk longer than the horizon is
    named."""
    from mbrl_robot.core.models import create_model
    p = _push_params()
    model = create_model(dict(p['model']), 17, 7, 'cpu', 0).eval()
    state = np.r_[np.zeros(14), 0.6, 0.0, 0.02]
    goal = np.array([0.7, 0.05, 0.02])
    labels = {}
    for chunk in (1, 2, 4):
        q = copy.deepcopy(p)
        q['distill']['action_chunk'] = chunk
        e = push_distill_agent(q, log=lambda m: None, model=model).expert
        e.start(goal)
        if chunk == 4:  # the planner's horizon is 3
            with pytest.raises(ValueError, match='shorter than the action chunk'):
                e.label(state, None)
            continue
        e.start(goal)
        labels[chunk] = e.label(state, None)
        if chunk == 2:
            e.start(goal)
            plan = e.agent.plan(state)
            np.testing.assert_allclose(labels[2], np.asarray(plan)[:2].reshape(-1), atol=1e-6)
    assert labels[2].shape == (14,)
    np.testing.assert_allclose(labels[2][:7], labels[1], atol=1e-6)
