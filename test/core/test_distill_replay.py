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
"""``benchmarks/distill_replay.py`` on a hand-made run: each model version is distilled on the
training episodes it was trained on, in order (never the evaluation episodes), with the run's
trainer parameters and the ``--set`` overrides; a run it cannot read is one line, exit 1."""

import json
import os
import sys

import numpy as np
import pytest

from mbrl_robot.config import node_params, write_param_file
from mbrl_robot.core.buffer.assembler import Transition
from mbrl_robot.core.buffer.storage import TransitionStore
from mbrl_robot.core.models import create_model
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import distill_replay  # noqa: E402

STEPS = 4
# (episode id, stage): the random episodes, a model, two MPC episodes, an evaluation, a model.
EPISODES = [(0, 'random'), (1, 'random'), (2, 'mpc'), (3, 'eval_planner'), (4, 'mpc')]
TRAININGS = [{'version': 1, 'n_transitions': 2 * STEPS},
             {'version': 2, 'n_transitions': 4 * STEPS}]


def _run(tmp_path):
    store = TransitionStore(str(tmp_path / 'buffer'))
    for ep, _ in EPISODES:
        store.append([Transition(episode=ep, step=k, stamp=0.05 * k, next_stamp=0.05 * k + 0.05,
                                 obs=np.full(STATE_DIM, ep + 0.1 * k), act=np.zeros(ACTION_DIM),
                                 reward=0.0, next_obs=np.full(STATE_DIM, ep + 0.1 * (k + 1)),
                                 done=k == STEPS - 1, target=np.array([0.7, 0.0, 0.016]))
                      for k in range(STEPS)])
    store.close()
    summary = {'episodes': [{'episode': ep, 'index': ep, 'stage': stage} for ep, stage in
                            EPISODES], 'trainings': TRAININGS}
    (tmp_path / 'summary.json').write_text(json.dumps(summary))
    cfg = {n: node_params('distill', n) for n in ('twin', 'trainer', 'controller')}
    write_param_file(cfg, str(tmp_path / 'params.yaml'))
    for t in TRAININGS:
        create_model(dict(cfg['trainer']['model']), STATE_DIM, ACTION_DIM, 'cpu', 0).save(
            tmp_path / 'models' / f"v{t['version']:04d}")
    return str(tmp_path)


class FakeDistiller:
    def __init__(self, params):
        self.params, self.batches, self.models, self.n_real = params, [], [], 0
        self.gtask = type('GoalTask', (), {'obs_layout': 'layout'})

    def add_transitions(self, state, executed, next_state, goal, episode, step):
        self.batches.append((sorted(set(episode.tolist())), state[:, 0].tolist()))
        self.n_real += len(state)

    def catch_up(self, model):
        self.models.append(model)
        return {'real_rows': self.n_real, 'model_rows': 0, 'val_mse': 0.0, 'wall_s': 0.0}

    def policy(self):
        return None


def test_each_model_is_distilled_on_its_own_training_episodes(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path)
    made = []

    def fake_agent(params, log):
        made.append(FakeDistiller(params))
        return made[-1]

    monkeypatch.setattr(distill_replay, 'push_distill_agent', fake_agent)
    monkeypatch.setattr(distill_replay, 'evaluate', lambda *a, **k: {'success_rate': 0.5})
    rc = distill_replay.main([run, '--episodes', '2', '--set',
                              'trainer.distill.rollout_start=episode_start'])
    assert rc == 0
    d = made[0]
    assert d.params['distill']['rollout_start'] == 'episode_start'
    # v1 on the two random episodes, v2 on the two MPC episodes after them; the evaluation
    # episode 3 is never fed. Rows in step order.
    assert [b[0] for b in d.batches] == [[0, 1], [2, 4]]
    assert np.allclose(d.batches[0][1], [0.0, 0.1, 0.2, 0.3, 1.0, 1.1, 1.2, 1.3])
    assert len(d.models) == 2
    out = json.loads(capsys.readouterr().out)
    assert out['real_transitions'] == 4 * STEPS and out['policy'] == {'success_rate': 0.5}
    assert out['eval_seeds'] == [2000, 2001]


def test_unreadable_run_and_bad_sets_are_one_line(tmp_path, capsys):
    assert distill_replay.main([str(tmp_path / 'missing')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'missing' in err
    assert distill_replay.main([str(tmp_path), '--set', 'controller.mode=policy']) == 2
    assert 'only trainer' in capsys.readouterr().err


def test_a_real_replay_refits_and_evaluates_the_mean_of_its_policies(tmp_path, capsys):
    """End to end on the hand-made run (random models, one evaluation episode): the distiller's
    policy, one refit and their mean are each evaluated."""
    run = _run(tmp_path)
    rc = distill_replay.main([run, '--episodes', '1', '--fit-seeds', '1',
                              '--set', 'trainer.distill.epochs=1',
                              '--set', 'trainer.distill.model_rollouts=2',
                              '--set', 'trainer.distill.model_rollout_length=3',
                              '--set', 'trainer.distill.dagger_rounds=1'])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    refits = out['refits']
    assert refits['fit_seeds'] == [0, 10_000] and len(refits['each']) == 2
    for result in refits['each'] + [refits['mean_of_policies'], out['policy']]:
        assert 0.0 <= result['success_rate'] <= 1.0 and result['mean_final_distance'] > 0.0


def test_saved_labels_are_refitted_and_smoothed_along_their_sequences(tmp_path, capsys):
    """``--save-labels`` then ``benchmarks/distill_fit.py`` on them: the saved rows are the real
    rows the models were trained on then the model rollouts' rows; ``--smooth`` averages each
    label with the next ones of its own sequence only (an episode, a rollout)."""
    import distill_fit
    run = _run(tmp_path)
    saved = str(tmp_path / 'labels.npz')
    rc = distill_replay.main([run, '--episodes', '1', '--save-labels', saved,
                              '--set', 'trainer.distill.epochs=1',
                              '--set', 'trainer.distill.model_rollouts=2',
                              '--set', 'trainer.distill.model_rollout_length=3',
                              '--set', 'trainer.distill.dagger_rounds=1'])
    assert rc == 0
    capsys.readouterr()
    with np.load(saved) as f:
        obs, n_real = f['obs'], int(f['real_rows'])
    assert n_real == 4 * STEPS and len(obs) == n_real + 2 * 2 * 3  # 2 versions x 2 rollouts x 3
    # The real rows in the order the models saw them: episodes 0, 1, 2, 4 (not 3, an evaluation).
    assert np.allclose(obs[:n_real, 0], [ep + 0.1 * k for ep in (0, 1, 2, 4)
                                         for k in range(STEPS)], atol=1e-6)
    seq = distill_fit.sequences(run, n_real, len(obs) - n_real, 3)
    assert seq[:n_real].tolist() == [ep for ep in (0, 1, 2, 4) for _ in range(STEPS)]
    assert seq[n_real:].tolist() == [5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]
    rc = distill_fit.main([saved, run, '--smooth', '2', '--fit-seeds', '1', '--episodes', '1',
                           '--set', 'trainer.distill.epochs=1'])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out['smooth'] == 2 and out['rows'] == len(obs) and len(out['fits']) == 1
    assert 0.0 <= out['mean_success'] <= 1.0
    # The same labels seen with the tool's end: the state and the target rebuilt, the tip added.
    from mbrl_robot.core.tasks.push import PUSH_OBS_LAYOUT, PUSH_TOOL_OBS_LAYOUT, PushTask
    task = PushTask.from_config(node_params('distill', 'trainer')['task'])
    tool = distill_fit.observe(obs, PUSH_OBS_LAYOUT, PUSH_TOOL_OBS_LAYOUT, task)
    assert tool.shape == (len(obs), 26) and np.allclose(tool[:, :20], obs[:, :20], atol=1e-6)
    import torch
    tip = task.tool_tip(torch.as_tensor(obs[:, :STATE_DIM], dtype=torch.float32)).numpy()
    assert np.allclose(tool[:, 20:23], tip, atol=1e-5)
    with pytest.raises(ValueError, match='cannot be seen'):
        distill_fit.observe(tool, PUSH_TOOL_OBS_LAYOUT, PUSH_OBS_LAYOUT, task)
    assert distill_fit.main([saved, run, '--fit-seeds', '1', '--episodes', '1',
                             '--set', 'trainer.distill.epochs=1',
                             '--set', 'trainer.distill.observation=state_and_tool']) == 0
    assert json.loads(capsys.readouterr().out)['rows'] == len(obs)
    # DAgger on real states first: a policy in the newest version drives, its states labelled,
    # refitted, twice; the arm's rows grow by both rounds' steps.
    from mbrl_robot.core.policy import DeterministicPolicy, save_policy
    save_policy(DeterministicPolicy(STATE_DIM + 3, ACTION_DIM, [8]),
                tmp_path / 'models' / 'v0002' / 'policy', 2, PUSH_OBS_LAYOUT)
    assert distill_fit.main([saved, run, '--fit-seeds', '1', '--episodes', '1',
                             '--policy-episodes', '1', '--rounds', '2',
                             '--set', 'trainer.distill.epochs=1']) == 0
    out = json.loads(capsys.readouterr().out)
    steps = node_params('distill', 'controller')['task']['episode_steps']
    assert out['rows'] == len(obs) + 2 * steps
    assert out['policy_episodes']['seeds'] == [3000, 3001]
    assert len(out['policy_episodes']['successes']) == 2
    assert distill_fit.main([saved, run, '--policy-episodes', '1', '--smooth', '2']) == 2
    assert 'cannot follow' in capsys.readouterr().err
    # A run that is not there, or model rows that are not whole rollouts: one line, exit 2.
    assert distill_fit.main([saved, str(tmp_path / 'missing'), '--smooth', '2']) == 2
    assert capsys.readouterr().err.count('\n') == 1
    with pytest.raises(ValueError, match='not whole rollouts'):
        distill_fit.sequences(run, n_real, len(obs) - n_real - 1, 3)


def test_smoothing_stays_inside_each_sequence():
    import distill_fit
    labels = np.array([[0.0], [2.0], [4.0], [10.0], [20.0]])
    seq = np.array([0, 0, 0, 1, 1])
    assert np.allclose(distill_fit.smooth(labels, seq, 2)[:, 0], [1.0, 3.0, 4.0, 15.0, 20.0])
    assert np.allclose(distill_fit.smooth(labels, seq, 1), labels)
    assert np.allclose(distill_fit.smooth(labels, seq, 9)[:, 0], [2.0, 3.0, 4.0, 15.0, 20.0])
