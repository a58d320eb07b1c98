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
"""MBPO vs SAC on a 2-D point mass, policy checkpoints, and the controller's LearnedPolicy."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl_robot.core.algorithms.mbpo import (evaluate, make_sac, Resumable, resume_progress,
                                             ResumeStateError, rollout_length, run_sac_loop)
from mbrl_robot.core.buffer.replay import ArrayBuffer, MixedReplayBuffer
from mbrl_robot.core.policy import DeterministicPolicy, load_policy, save_policy
from mbrl_robot.core.types import GoalTask


class PointMass(gym.Env):
    """A point in the plane reaching a goal: state (x, y), action = velocity in [-1, 1]^2.

    ``p' = p + 0.15 a``; start and goal uniform in [-1, 1]^2, 25 steps, success when the final
    distance is below 0.1. Observation ``[p, goal - p]`` (4,).
    """

    steps = 25

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.state = rng.uniform(-1, 1, 2)
        self.goal = rng.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), self._info()

    def _obs(self):
        return np.concatenate([self.state, self.goal - self.state]).astype(np.float32)

    def _info(self):
        d = float(np.linalg.norm(self.state - self.goal))
        return {'state': self.state.copy(), 'goal': self.goal.copy(), 'distance': d,
                'is_success': d < 0.1}

    def step(self, action):
        self.state = self.state + 0.15 * np.clip(np.asarray(action, dtype=np.float64), -1, 1)
        self.t += 1
        info = self._info()
        return self._obs(), -info['distance'], False, self.t >= self.steps, info


def point_task() -> GoalTask:
    def make_obs(state, goal):
        return torch.cat((state, goal - state), dim=-1)

    def reward_fn(next_state, act, goal):
        return -torch.linalg.vector_norm(next_state - goal, dim=-1)
    return GoalTask(2, 2, 2, 'point_mass', make_obs, reward_fn,
                    achieved_goal=lambda state, goal: np.asarray(state)[:, :2])


def config(total: int, **kw):
    cfg = {'total_steps': total, 'init_random_steps': 100, 'model_train_freq': 100,
           'model_max_epochs': 10, 'rollout_freq': 50, 'rollouts_per_step': 20,
           'rollout_length_min': 1, 'rollout_length_max': 3, 'rollout_schedule_start': 100,
           'rollout_schedule_end': 300, 'model_retain_rollouts': 3, 'real_ratio': 0.1,
           'gradient_steps': 5, 'batch_size': 128, 'member': 'random',
           'relabel_goals': 0,
           'sac': {'learning_rate': 0.003, 'gamma': 0.9, 'net_arch': [64, 64]},
           'eval_seed': 1000, 'eval_episodes': 20, 'seed': 0}
    cfg.update(kw)
    return cfg


MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 4, 'num_layers': 2, 'hidden_size': 64,
         'probabilistic': True}
TRAINING = {'learning_rate': 0.003, 'batch_size': 64, 'validation_fraction': 0.1,
            'max_epochs': 40, 'patience': 5, 'seed': 0}
EVAL_SEEDS = list(range(1000, 1020))


def run(use_model: bool, total: int = 400, seed: int = 0):
    cfg = config(total, gradient_steps=5 if use_model else 1)
    return run_sac_loop(PointMass(), point_task(), cfg, seed, use_model, MODEL, TRAINING,
                        eval_at=[total], eval_seeds=EVAL_SEEDS, log=lambda s: None)


def test_mbpo_beats_sac_with_few_real_transitions():
    """400 real transitions (16 episodes): model rollouts let SAC learn the task, SAC alone
    (one update per real step, as usual) barely starts. Seeds 1 and 2 give MBPO 0.11 and 0.06
    against SAC's 0.40 and 0.47; the thresholds leave room for seed 0 (0.13 vs 0.40)."""
    mbpo, sac = run(True), run(False)
    assert mbpo['transitions'] == sac['transitions'] == 400
    m, s = mbpo['curve'][-1], sac['curve'][-1]
    assert m['episodes'] == s['episodes'] == 20
    # MBPO gets most of the way from where a do-nothing policy ends (0.88 on these seeds).
    zero = evaluate(lambda obs: np.zeros(2), PointMass(), EVAL_SEEDS)['mean_final_distance']
    assert m['mean_final_distance'] < 0.25 * zero, (m, zero)
    assert m['mean_final_distance'] < 0.5 * s['mean_final_distance'], (m, s)
    assert m['success_rate'] >= s['success_rate'] + 0.2, (m, s)
    assert len(mbpo['model_fits']) == 4 and not sac['model_fits']
    assert mbpo['gradient_steps'] > 4 * sac['gradient_steps']


# ------------------------------------------------------------------------- small parts
def test_rollout_length_schedule():
    cfg = config(100, rollout_length_min=1, rollout_length_max=5, rollout_schedule_start=100,
                 rollout_schedule_end=500)
    assert [rollout_length(cfg, s) for s in (0, 100, 200, 300, 499, 500, 10 ** 6)] == \
        [1, 1, 2, 3, 4, 5, 5]


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match='real_ratio'):
        run_sac_loop(PointMass(), point_task(), config(10, real_ratio=0.0), 0, False)
    with pytest.raises(ValueError, match='unknown keys'):
        run_sac_loop(PointMass(), point_task(), config(10, horizon=3), 0, False)
    with pytest.raises(ValueError, match='member'):
        run_sac_loop(PointMass(), point_task(), config(10, member='mean'), 0, False)
    with pytest.raises(ValueError, match='model_cfg'):
        run_sac_loop(PointMass(), point_task(), config(10), 0, True)


def test_mixed_buffer_draws_real_ratio():
    dims = {'obs': 3, 'act': 1, 'reward': 0, 'next_obs': 3, 'done': 0}
    real, model = ArrayBuffer(50, dims), ArrayBuffer(500, dims)
    real.add(obs=np.zeros((50, 3)), act=np.zeros((50, 1)), reward=np.zeros(50),
             next_obs=np.zeros((50, 3)), done=np.zeros(50))
    mixed = MixedReplayBuffer(real, model, 0.25, seed=0)
    assert float(mixed.sample(100).rewards.sum()) == 0.0  # model buffer empty: all real
    model.add(obs=np.ones((600, 3)), act=np.ones((600, 1)), reward=np.ones(600),
              next_obs=np.ones((600, 3)), done=np.zeros(600))
    assert len(model) == 500  # FIFO capacity
    batch = mixed.sample(100)
    assert batch.observations.shape == (100, 3) and batch.rewards.shape == (100, 1)
    assert float(batch.rewards.sum()) == 75.0
    with pytest.raises(ValueError):
        MixedReplayBuffer(real, model, 1.5)


def test_push_rollout_reward_uses_each_rollouts_target():
    from mbrl_robot.core.tasks.push import push_goal_task, push_obs, PushTask
    task = PushTask()
    gtask = push_goal_task(task)
    rng = np.random.default_rng(0)
    nxt = torch.as_tensor(rng.normal(size=(4, 17)), dtype=torch.float32)
    goals = torch.as_tensor(rng.normal(size=(4, 3)), dtype=torch.float32)
    got = gtask.reward_fn(nxt, torch.zeros(4, 7), goals)
    for i in range(4):
        task.set_target(goals[i].numpy())
        assert torch.allclose(got[i], task.reward_fn(nxt[i], torch.zeros(7)))
    obs = push_obs(nxt, goals)
    assert obs.shape == (4, 20)
    assert torch.allclose(obs[:, 17:], goals - nxt[:, 14:17])


@pytest.mark.parametrize('member', ['random', 'ts'])
def test_agent_fed_recorded_transitions_branches_model_rollouts(member):
    """The trainer-node path: rows as the controller records them, then model rollouts."""
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space,
                      config(300, member=member), 0, True, MODEL, TRAINING, log=lambda s: None)
    rng = np.random.default_rng(0)
    state = rng.uniform(-1, 1, (200, 2))
    act = rng.uniform(-1, 1, (200, 2))
    goal = rng.uniform(-1, 1, (200, 2))
    agent.add_transitions(state, act, state + 0.15 * act, goal, np.zeros(200))
    assert len(agent.real) == 200
    np.testing.assert_allclose(agent.real.column('obs')[:, 2:], goal - state, atol=1e-6)
    np.testing.assert_allclose(agent.real.column('reward'),
                               -np.linalg.norm(state + 0.15 * act - goal, axis=1), atol=1e-5)
    fit = agent.fit_model()
    assert fit['val_loss'] < 0.1  # a linear map: the ensemble must nearly nail it
    assert agent.rollout(40, 3) == 120
    rows = agent.model_buffer.column('obs'), agent.model_buffer.column('next_obs')
    assert np.all(np.isfinite(rows[0])) and np.all(np.isfinite(rows[1]))
    # The goal is carried through a rollout; rewards are the task's reward of the next state.
    np.testing.assert_allclose(rows[1][:, :2] + rows[1][:, 2:], rows[0][:, :2] + rows[0][:, 2:],
                               atol=1e-5)
    np.testing.assert_allclose(agent.model_buffer.column('reward'),
                               -np.linalg.norm(rows[1][:, 2:], axis=1), atol=1e-5)
    # One model step moves the point by about 0.15 * action, as the real dynamics do.
    step = np.linalg.norm(rows[1][:, :2] - rows[0][:, :2], axis=1)
    assert np.all(step < 0.15 * np.sqrt(2) + 0.05)


def test_hindsight_copies_take_goals_reached_later_in_the_same_episode():
    """HER's future strategy: k copies per row, the goal a later next state of the episode, the
    observation and reward recomputed; the real buffer (model fits, rollouts) untouched."""
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space,
                      config(100, relabel_goals=3), 0, False, log=lambda s: None)
    rng = np.random.default_rng(2)
    # Two episodes of 6 rows on a line: next states are distinct, so each goal names its t'.
    path = np.cumsum(rng.uniform(0.05, 0.1, (13, 2)), axis=0)
    state, nxt = path[:-1], path[1:]
    act = rng.uniform(-1, 1, (12, 2))
    goal = rng.uniform(-1, 1, (12, 2))
    last = np.zeros(12)
    last[[5, 11]] = 1
    agent.add_transitions(state[:4], act[:4], nxt[:4], goal[:4], last[:4])
    assert len(agent.relabelled) == 0  # the episode has not ended yet
    agent.add_transitions(state[4:], act[4:], nxt[4:], goal[4:], last[4:])
    assert len(agent.real) == 12 and len(agent.relabelled) == 36
    obs, next_obs = agent.relabelled.column('obs'), agent.relabelled.column('next_obs')
    relabel = obs[:, :2] + obs[:, 2:]
    np.testing.assert_allclose(next_obs[:, :2] + next_obs[:, 2:], relabel, atol=1e-5)
    t = np.repeat(np.arange(12), 3)
    np.testing.assert_allclose(obs[:, :2], state[t], atol=1e-6)
    np.testing.assert_allclose(agent.relabelled.column('act'), act[t], atol=1e-6)
    later = [int(np.argmin(np.linalg.norm(nxt - g, axis=1))) for g in relabel]
    np.testing.assert_allclose(relabel, nxt[later], atol=1e-5)
    assert all(t[i] <= later[i] <= (5 if t[i] <= 5 else 11) for i in range(36))
    # Uniform over t..end: from the first steps most goals lie strictly later.
    assert np.mean(np.asarray(later)[t % 6 < 3] > t[t % 6 < 3]) > 0.6
    np.testing.assert_allclose(agent.relabelled.column('reward'),
                               -np.linalg.norm(nxt[t] - relabel, axis=1), atol=1e-5)
    # SAC minibatches draw real and relabelled rows alike (36 of 48 rows relabelled).
    drawn = agent.sac.replay_buffer.sample(4000)
    goals = (drawn.observations[:, :2] + drawn.observations[:, 2:]).numpy()
    share = np.mean(np.linalg.norm(goals[:, None] - goal[None], axis=2).min(axis=1) > 1e-4)
    assert 0.70 < share < 0.80


def test_mbpo_branches_model_rollouts_from_hindsight_goals_too():
    """Goal relabelling in the model rollouts: starts drawn like SAC's real share, so about
    k / (k + 1) of them carry a goal reached later in the start's episode."""
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space,
                      config(300, relabel_goals=4), 0, True, MODEL, TRAINING, log=lambda s: None)
    rng = np.random.default_rng(3)
    state, act = rng.uniform(-1, 1, (200, 2)), rng.uniform(-1, 1, (200, 2))
    goal = np.repeat(rng.uniform(2, 3, (8, 2)), 25, axis=0)  # 8 episodes, goals off the map
    last = np.zeros(200)
    last[24::25] = 1
    agent.add_transitions(state, act, state + 0.15 * act, goal, last)
    agent.fit_model()
    assert agent.rollout(400, 1) == 400
    obs = agent.model_buffer.column('obs')
    goals = obs[:, :2] + obs[:, 2:]
    nxt = state + 0.15 * act
    hindsight = 0
    for start, g in zip(obs[:, :2], goals):
        i = int(np.argmin(np.linalg.norm(state - start, axis=1)))  # the start's real row
        assert np.linalg.norm(state[i] - start) < 1e-5
        if np.linalg.norm(g - goal[i]) < 1e-4:
            continue  # its own episode's goal
        j = int(np.argmin(np.linalg.norm(nxt - g, axis=1)))
        assert np.linalg.norm(nxt[j] - g) < 1e-4 and i <= j < (i // 25 + 1) * 25
        hindsight += 1
    assert 0.7 < hindsight / len(obs) < 0.9


def test_hindsight_keeps_each_arms_episodes_apart():
    """The trainer node's rows: two arms interleaved, one episode whose last row was dropped."""
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space,
                      config(100, relabel_goals=4), 0, False, log=lambda s: None)
    # Arm 0 at x in [0, 1), arm 1 at x in [10, 11): a goal from the other arm shows at once.
    arms = np.array([0, 1, 0, 1, 0, 1, 0, 0, 1])
    episodes = np.array([3, 7, 3, 7, 3, 7, 4, 4, 7])
    last = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])  # arm 0's episode 3 lost its last row
    state = np.stack([arms * 10.0 + np.arange(9) * 0.1, np.zeros(9)], axis=1)
    nxt = state + [0.05, 0.0]
    agent.add_transitions(state, np.zeros((9, 2)), nxt, np.zeros((9, 2)), last, episodes, arms)
    assert len(agent.relabelled) == 4 * 9 and not agent._pending
    obs = agent.relabelled.column('obs')
    relabel = obs[:, :2] + obs[:, 2:]
    later = 0
    for row_state, goal in zip(obs[:, :2], relabel):
        source = int(np.argmin(np.linalg.norm(nxt - goal, axis=1)))
        row = int(np.argmin(np.linalg.norm(state - row_state, axis=1)))
        assert (arms[source], episodes[source]) == (arms[row], episodes[row])
        assert source >= row
        later += source > row
    # Episodes of several rows, not each row alone: rows 0-4 and 1-5 draw later goals too.
    assert later > 9


def test_push_task_achieves_the_pucks_position_at_the_targets_height():
    from mbrl_robot.core.tasks.push import push_goal_task, PushTask
    gtask = push_goal_task(PushTask())
    state = np.zeros((2, 17), np.float32)
    state[:, 14:17] = [[0.5, 0.1, 0.03], [0.6, -0.1, 0.02]]
    goal = np.array([[0.7, 0.0, 0.0185], [0.4, 0.2, 0.0185]], np.float32)
    before = goal.copy()
    np.testing.assert_allclose(gtask.achieved_goal(state, goal),
                               [[0.5, 0.1, 0.0185], [0.6, -0.1, 0.0185]])
    np.testing.assert_array_equal(goal, before)  # the goal itself is not written to


def test_hindsight_needs_a_task_that_names_its_achieved_goal():
    from mbrl_robot.core.algorithms.mbpo import hindsight_rows, MBPOAgent
    env = PointMass()
    task = point_task()
    blind = GoalTask(2, 2, 2, 'point_mass', task.make_obs, task.reward_fn)
    with pytest.raises(ValueError, match='relabel_goals.*achieved_goal'):
        MBPOAgent(blind, env.observation_space, env.action_space, config(100, relabel_goals=2),
                  0, False, log=lambda s: None)
    with pytest.raises(ValueError, match='relabel_goals must be an int >= 0'):
        MBPOAgent(task, env.observation_space, env.action_space, config(100, relabel_goals=-1),
                  0, False, log=lambda s: None)
    row = {k: np.zeros((1, 2), np.float32)
           for k in ('state', 'act', 'executed', 'next_state', 'goal')}
    with pytest.raises(ValueError, match='k must be >= 1'):
        hindsight_rows(task, {**row, 'done': np.zeros(1)}, 0, np.random.default_rng(0))


def test_catch_up_runs_the_schedule_for_rows_fed_in_batches():
    """The trainer node's path: batches of rows, a model trained elsewhere, then catch_up."""
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space,
                      config(300, init_random_steps=50, rollout_freq=25, batch_size=64), 0, True,
                      MODEL, TRAINING, log=lambda s: None)
    rng = np.random.default_rng(1)

    def feed(n):
        state, act = rng.uniform(-1, 1, (n, 2)), rng.uniform(-1, 1, (n, 2))
        agent.add_transitions(state, act, state + 0.15 * act, rng.uniform(-1, 1, (n, 2)),
                              np.zeros(n))
    feed(120)
    agent.fit_model()
    model = agent.model
    run = agent.catch_up(model)
    # Updates start at init_random_steps: steps 50..120 update, 5 per step (the config's G).
    assert run['steps'] == 120 and run['gradient_steps'] == 5 * 71
    assert agent.model is model and len(agent.fits) == 1  # the given model, never refit
    assert run['model_rows'] > 0
    assert agent.catch_up(model)['steps'] == 0  # nothing new: nothing to do
    feed(30)
    stopped = agent.catch_up(model, stop=lambda: True)
    assert stopped['steps'] == 0 and stopped['gradient_steps'] == 0
    assert agent.catch_up(model)['gradient_steps'] == 5 * 30


# ------------------------------------------------------------------- resume across sessions
def resumable_run(resumable=None, **kw):
    """MBPO with hindsight goals (so the pending episodes and their RNG are state too)."""
    cfg = config(300, relabel_goals=2, **kw)
    return run_sac_loop(PointMass(), point_task(), cfg, 0, True, MODEL, TRAINING,
                        eval_at=[150, 300], eval_seeds=EVAL_SEEDS[:5], log=lambda s: None,
                        resumable=resumable)


def same_run(a, b):
    sa, sb = a['sac'].policy.state_dict(), b['sac'].policy.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ma, mb = a['model'].state_dict(), b['model'].state_dict()
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert a['model'].elite_indices == b['model'].elite_indices
    strip = [{k: v for k, v in c.items() if k != 'wall_s'} for c in a['curve']]
    assert strip == [{k: v for k, v in c.items() if k != 'wall_s'} for c in b['curve']]
    assert a['gradient_steps'] == b['gradient_steps'] and a['transitions'] == b['transitions']


def test_a_stopped_or_killed_run_resumes_bit_for_bit(tmp_path):
    """The 50k runs span sessions: stopping (the session's budget) or dying between saves (the
    session's end) and rerunning gives the very run that never stopped."""
    straight = resumable_run()
    assert straight['finished'] and straight['resumed_at'] == []
    path = str(tmp_path / 'state.pt')
    calls = []
    part = resumable_run(Resumable(path, every=50,
                                   stop=lambda: calls.append(1) or len(calls) >= 4))
    assert not part['finished'] and part['transitions'] == 100 and len(part['curve']) == 0
    where = resume_progress(path)  # read without continuing
    assert {k: where[k] for k in ('seed', 'method', 'transitions', 'total', 'finished',
                                  'curve', 'resumed_at')} == {
        'seed': 0, 'method': 'mbpo', 'transitions': 100, 'total': 300, 'finished': False,
        'curve': [], 'resumed_at': []}
    resumed = resumable_run(Resumable(path, every=50))
    assert resumed['finished'] and resumed['resumed_at'] == [100]
    where = resume_progress(path)
    assert where['finished'] and where['transitions'] == 300 and where['resumed_at'] == [100]
    assert [c['transitions'] for c in where['curve']] == [150, 300]
    assert where['curve'][-1]['success_rate'] == resumed['curve'][-1]['success_rate']
    same_run(straight, resumed)
    # Killed between saves: the state saved every 100 transitions is at 100 when an exception
    # (the session ending) hits at the episode end of 175 (the stop poll is the last call).
    killed = str(tmp_path / 'killed.pt')

    def die():
        calls.append(1)
        if len(calls) >= 7:
            raise KeyboardInterrupt
        return False
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        resumable_run(Resumable(killed, every=100, stop=die))
    resumed = resumable_run(Resumable(killed, every=100))
    assert resumed['resumed_at'] == [100]
    same_run(straight, resumed)
    # A finished run's state is kept as it was: rerunning returns at once with the same result.
    before = os.path.getmtime(killed)
    again = resumable_run(Resumable(killed, every=100))
    assert again['resumed_at'] == [100] and again['finished']
    same_run(straight, again)
    assert os.path.getmtime(killed) == before


def test_a_resume_state_of_another_run_or_a_corrupt_one_is_one_error(tmp_path):
    path = str(tmp_path / 'state.pt')
    assert issubclass(ResumeStateError, ValueError)
    for every in (0, 2.5, True):
        with pytest.raises(ValueError, match='Resumable.every must be an int >= 1'):
            Resumable(path, every=every)
    resumable_run(Resumable(path, every=50, stop=lambda: True, identity={'profile': 'cpu'}))

    def same():  # the saved run's identity
        return Resumable(path, identity={'profile': 'cpu'})
    with pytest.raises(ValueError, match=r'state.pt: written by a run with gradient_steps=5, '
                                         r'this run has 3'):
        resumable_run(same(), gradient_steps=3)
    with pytest.raises(ValueError, match='written by a run with seed=0, this run has 1'):
        run_sac_loop(PointMass(), point_task(), config(300, relabel_goals=2), 1, True, MODEL,
                     TRAINING, eval_at=[150, 300], eval_seeds=EVAL_SEEDS[:5],
                     log=lambda s: None, resumable=same())
    with pytest.raises(ValueError, match=r'with curve budgets \[150, 300\], this run has \[300\]'):
        run_sac_loop(PointMass(), point_task(), config(300, relabel_goals=2), 0, True, MODEL,
                     TRAINING, eval_at=[300], eval_seeds=EVAL_SEEDS[:5],
                     log=lambda s: None, resumable=same())
    with pytest.raises(ResumeStateError, match=r'with profile=\'cpu\', this run has \'other\''):
        resumable_run(Resumable(path, identity={'profile': 'other'}))
    with pytest.raises(ResumeStateError, match='with model.hidden_size=64, this run has 32'):
        run_sac_loop(PointMass(), point_task(), config(300, relabel_goals=2), 0, True,
                     {**MODEL, 'hidden_size': 32}, TRAINING, eval_at=[150, 300],
                     eval_seeds=EVAL_SEEDS[:5], log=lambda s: None, resumable=same())
    state = torch.load(path, weights_only=False)
    torch.save({**state, 'cfg': {}}, path)
    with pytest.raises(ResumeStateError, match='without a run length'):
        resume_progress(path)
    torch.save({k: v for k, v in state.items() if k != 'rng'}, path)
    with pytest.raises(ResumeStateError, match=r"incomplete resume state, missing \['rng'\]"):
        resumable_run(same())
    state['agent'].pop('her_rng')  # a learner of another version of the code
    torch.save(state, path)
    with pytest.raises(ResumeStateError, match='with learner attributes='):
        resumable_run(same())
    with open(path, 'r+b') as f:
        f.truncate(1000)
    with pytest.raises(ResumeStateError, match='state.pt: unreadable resume state'):
        resumable_run(same())
    with pytest.raises(ResumeStateError, match='state.pt: unreadable resume state'):
        resume_progress(path)


# ------------------------------------------------------------------------ checkpoints
def small_sac(seed: int = 0):
    return make_sac(gym.spaces.Box(-np.inf, np.inf, (20,), np.float32),
                    gym.spaces.Box(-1.0, 1.0, (7,), np.float32), {'net_arch': [32, 32]}, 16,
                    seed)


def test_policy_matches_sac_actor_and_round_trips(tmp_path):
    sac = small_sac()
    policy = DeterministicPolicy.from_sac(sac)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(8, 20)), dtype=torch.float32)
    with torch.no_grad():
        want = sac.actor(obs, deterministic=True)
        assert torch.allclose(policy(obs), want, atol=1e-6)
    sha = save_policy(policy, tmp_path / 'p', 3, 'push_state17_target_minus_puck3', sac=sac)
    meta = json.loads((tmp_path / 'p' / 'policy.json').read_text())
    assert meta['version'] == 3 and meta['sha256'] == sha
    assert meta['obs_dim'] == 20 and meta['act_dim'] == 7
    assert (tmp_path / 'p' / 'sac.zip').is_file()
    loaded, meta2 = load_policy(tmp_path / 'p', version=3, sha256=sha, obs_dim=20, act_dim=7,
                                obs_layout='push_state17_target_minus_puck3')
    with torch.no_grad():
        assert torch.equal(loaded(obs), policy(obs))
    assert meta2 == meta


def test_policy_checkpoint_errors(tmp_path):
    policy = DeterministicPolicy(20, 7, [16])
    d = tmp_path / 'p'
    save_policy(policy, d, 1, 'layout')
    for kwargs, match in (({'version': 2}, 'version'), ({'sha256': '0' * 64}, 'sha256'),
                          ({'obs_dim': 17}, 'obs_dim'), ({'act_dim': 2}, 'act_dim'),
                          ({'obs_layout': 'other'}, 'obs_layout')):
        with pytest.raises(ValueError, match=match):
            load_policy(d, **kwargs)
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / 'missing')
    weights = (d / 'policy.pt').read_bytes()
    (d / 'policy.pt').write_bytes(weights[:len(weights) // 2])
    with pytest.raises(ValueError, match='sha256 does not match'):
        load_policy(d)
    os.remove(d / 'policy.pt')
    with pytest.raises(FileNotFoundError):
        load_policy(d)
    (d / 'policy.json').write_text('{"format_version": 1, "obs_')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_policy(d)
    save_policy(policy, d, 1, 'layout')
    meta = json.loads((d / 'policy.json').read_text())
    (d / 'policy.json').write_text(json.dumps({**meta, 'hidden_sizes': [8]}))
    with pytest.raises(ValueError, match='do not match the architecture'):
        load_policy(d)
    (d / 'policy.json').write_text(json.dumps({**meta, 'format_version': 99}))
    with pytest.raises(ValueError, match='format version'):
        load_policy(d)
    with pytest.raises(ValueError):
        save_policy(policy, d, -1, 'layout')
    with pytest.raises(ValueError, match='observation'):
        policy.act(np.full(20, np.nan))


# ----------------------------------------------------------------------- deployment
def test_learned_policy_in_the_controller_factory(tmp_path, controller_factory):
    from mbrl_robot.core.control import LearnedPolicy
    factory = controller_factory(mode='policy')
    assert not factory.has_model()
    with pytest.raises(RuntimeError, match='no policy'):
        factory.create()
    policy = DeterministicPolicy.from_sac(small_sac())
    sha = save_policy(policy, tmp_path / 'v1', 1, 'push_state17_target_minus_puck3')
    assert not factory.load_policy(str(tmp_path / 'v1'), 1, '0' * 64)  # checksum mismatch
    assert not factory.load_policy(str(tmp_path / 'v1'), 2, sha)  # announced version differs
    assert not factory.has_model()
    assert factory.load_policy(str(tmp_path / 'v1'), 1, sha)
    assert factory.has_model() and factory.model_version == 1
    assert not factory.load_policy(str(tmp_path / 'v1'), 1, sha)  # not newer
    factory.set_target([0.6, 0.1, 0.015])
    p = factory.create()
    assert isinstance(p, LearnedPolicy)
    rng = np.random.default_rng(0)
    for step in range(20):
        state = np.concatenate([rng.uniform(-2, 2, 7), rng.uniform(-0.5, 0.5, 7),
                                [0.5, 0.0, 0.015]]) * (1e3 if step == 19 else 1.0)
        p.set_last_action(np.zeros(7))
        plan, start = p.plan(state, step)
        assert start == step and plan.shape == (1, 7)
        assert np.all(np.isfinite(plan)) and np.all(np.abs(plan) <= 1.0)
        assert p.last_info()['plan_time_ms'] >= 0.0
    with pytest.raises(ValueError, match='finite'):
        p.plan(np.full(17, np.nan), 0)
    # A newer policy reaches a running episode through refresh, like a newer model.
    save_policy(DeterministicPolicy(20, 7, [8]), tmp_path / 'v2', 2,
                'push_state17_target_minus_puck3')
    assert factory.load_policy(str(tmp_path / 'v2'), 2)
    factory.refresh(p)
    assert p.policy_version == 2 and p.policy.hidden_sizes == [8]
    # A checkpoint for another observation layout is refused, the current one kept.
    save_policy(DeterministicPolicy(20, 7, [8]), tmp_path / 'v3', 3, 'point_mass')
    assert not factory.load_policy(str(tmp_path / 'v3'), 3)
    assert factory.policy_version == 2


def test_planner_mode_is_unchanged(controller_factory):
    factory = controller_factory(mode='planner')
    assert factory.mode == 'planner' and not factory.has_model()
    with pytest.raises(RuntimeError, match='no model'):
        factory.create()
    with pytest.raises(ValueError, match='mode'):
        controller_factory(mode='mpc')


# ---------------------------------------------------------------------- issue 14
class StepModel:
    """Two identical deterministic members: the point moves by 0.15 * action."""

    ensemble_size = 2

    def sample_next(self, obs, act, deterministic=False, generator=None):
        return obs + 0.15 * act


def ones_actor(obs, deterministic=False):
    return torch.ones(obs.shape[0], 2)


def test_model_rollouts_stop_at_a_termination_and_flag_it():
    from mbrl_robot.core.algorithms.mbpo import model_rollouts
    states = np.array([[0.0, 0.0], [0.2, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    goals = np.zeros((4, 2), dtype=np.float32)

    def beyond(next_state, act):
        return next_state[:, 0] > 0.25

    rows = model_rollouts(StepModel(), ones_actor, point_task(), states, goals, 4, 'ts',
                          np.random.default_rng(0), torch.Generator(), termination_fn=beyond)
    # x after each step: 0.15, 0.3 | 0.35 | -0.85, -0.7, -0.55, -0.4 (x2): 2 + 1 + 4 + 4 rows.
    assert len(rows['obs']) == 11
    done_x = rows['next_obs'][rows['done'] == 1.0][:, 0]
    np.testing.assert_allclose(np.sort(done_x), [0.3, 0.35], atol=1e-6)
    assert rows['done'].sum() == 2
    plain = model_rollouts(StepModel(), ones_actor, point_task(), states, goals, 4, 'ts',
                           np.random.default_rng(0), torch.Generator())
    assert len(plain['obs']) == 16 and not plain['done'].any()


def test_mbpo_agent_passes_termination_to_its_rollouts():
    from mbrl_robot.core.algorithms.mbpo import MBPOAgent
    env = PointMass()
    agent = MBPOAgent(point_task(), env.observation_space, env.action_space, config(300), 0,
                      True, MODEL, TRAINING, log=lambda s: None,
                      termination_fn=lambda s, a: torch.ones(s.shape[0], dtype=torch.bool))
    rng = np.random.default_rng(0)
    state, act, goal = (rng.uniform(-1, 1, (200, 2)) for _ in range(3))
    agent.add_transitions(state, act, state + 0.15 * act, goal, np.zeros(200))
    fit = agent.fit_model()
    assert fit['members_improved'] == 4
    assert agent.rollout(40, 3) == 40  # every rollout ends after its first step
    assert np.all(agent.model_buffer.column('done') == 1.0)


@pytest.mark.parametrize('member', ['random', 'ts'])
def test_model_rollouts_draw_only_from_the_elites(member):
    from mbrl_robot.core.algorithms.mbpo import model_rollouts
    from mbrl_robot.core.models import create_model
    model = create_model(dict(MODEL, num_layers=1, hidden_size=8), 2, 2, seed=0).eval()
    with torch.no_grad():
        for k in (1, 3):
            model.layers[-1].bias[k] = float('nan')
    model.set_elites([0, 2])
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (40, 2)).astype(np.float32)
    goals = rng.uniform(-1, 1, (40, 2)).astype(np.float32)
    rows = model_rollouts(model, ones_actor, point_task(), states, goals, 3, member,
                          np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert len(rows['obs']) == 120  # no row lost to the NaN members
    assert np.isfinite(rows['next_obs']).all()
