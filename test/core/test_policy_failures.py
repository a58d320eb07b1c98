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
"""``benchmarks/policy_failures.py``: each episode's outcome from the tool's and the puck's
paths, and a run it cannot read is one line."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import policy_failures  # noqa: E402

TARGET = np.array([0.2, 0.0, 0.016])
CONTACT = policy_failures.PUCK_RADIUS_M + policy_failures.TOOL_RADIUS_M


def _paths(puck_end_x, tip_gap=0.0, puck_end_y=0.0):
    """A puck from (0, 0) to (puck_end_x, puck_end_y) in 10 steps, the tool behind it at
    ``tip_gap`` from its side (a gap of -CONTACT: on top of it, pressing it into the table)."""
    x = np.linspace(0.0, puck_end_x, 10)
    y = np.linspace(0.0, puck_end_y, 10)
    puck = np.stack([x, y, np.full(10, 0.016)], 1)
    tip = puck - np.array([CONTACT + tip_gap, 0.0, 0.0])
    if tip_gap <= -CONTACT:
        puck[:, 2] = 0.005
        tip[:, 2] = 0.015
    return tip, puck


@pytest.mark.parametrize('end, gap, end_y, kind', [
    (0.18, 0.0, 0.0, 'success'),          # 2 cm from the target
    (0.0, 0.02, 0.0, 'never_touched'),    # the tool stays 2 cm off the puck
    (-0.1, 0.0, 0.0, 'wrong_way'),
    (0.3, 0.0, 0.0, 'overshoot'),         # 10 cm past the target
    (0.03, 0.0, 0.0, 'stall'),            # 3 of 20 cm
    (0.0, -CONTACT, 0.0, 'pinned'),       # the tool on the puck, pressed into the table
    (0.1, 0.0, 0.0, 'short'),             # half way
    (0.0, 0.0, 0.1, 'short'),             # sideways: not against the target, not a stall
])
def test_outcomes(end, gap, end_y, kind):
    tip, puck = _paths(end, gap, end_y)
    out = policy_failures.outcome(tip, puck, TARGET, radius=0.05)
    assert out['outcome'] == kind
    assert out['start_distance'] == pytest.approx(0.2)
    assert out['first_touch'] == (-1 if kind == 'never_touched' else 0)
    assert out['steps_on_puck'] == out['steps_pressed'] == (10 if kind == 'pinned' else 0)


def test_a_run_without_a_policy_is_one_line(tmp_path, capsys):
    (tmp_path / 'models' / 'v0001').mkdir(parents=True)
    (tmp_path / 'params.yaml').write_text('{}\n')
    assert policy_failures.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no version with a policy' in err


def test_labels_and_model_rollouts_on_a_made_up_run(tmp_path):
    """``--labels`` and ``--model-rollouts`` on a run of random networks: the labeller is the
    trainer's planner on the run's newest model, with the policy's layout; one record per
    asked step, one puck movement per member."""
    import torch
    from mbrl_robot.config import node_params
    from mbrl_robot.core.models import create_model
    from mbrl_robot.core.policy import DeterministicPolicy, save_policy
    from mbrl_robot.core.tasks.push import ACTION_DIM, PUSH_OBS_LAYOUT, STATE_DIM, PushTask
    from mbrl_robot.core.safety import CommandFilter
    from mbrl_robot.sim.push_env import PushEnv
    trainer = node_params('distill', 'trainer')
    trainer['planner'].update(population_size=8, elite_count=2, iterations=1, horizon=3)
    path = tmp_path / 'models' / 'v0002'
    create_model(dict(trainer['model']), STATE_DIM, ACTION_DIM, 'cpu', 0).save(path)
    torch.manual_seed(0)
    save_policy(DeterministicPolicy(STATE_DIM + 3, ACTION_DIM, [8]), path / 'policy', 2,
                PUSH_OBS_LAYOUT)
    version, policy, meta, model = policy_failures.newest(str(tmp_path))
    assert version == 'v0002' and meta['obs_layout'] == PUSH_OBS_LAYOUT
    env = PushEnv.from_config('distill')
    obs, info = env.reset(seed=0)
    states = [obs]
    acts = np.full((3, ACTION_DIM), 0.2)
    for a in acts:
        states.append(env.step(a)[0])
    env.close()
    states, target = np.asarray(states, dtype=np.float64), np.asarray(info['target'])
    task = PushTask.from_config(trainer['task'])
    out = policy_failures.labels_at(states, acts, target, policy, PUSH_OBS_LAYOUT, trainer,
                                    model, task, [1, 2], plans=2)
    assert out['step'] == [1, 2]
    for key in ('label_speed', 'policy_speed', 'plans_cos'):
        assert len(out[key]) == 2 and np.all(np.isfinite(out[key]))
    assert all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for c in out['plans_cos'])
    moved = policy_failures.model_rollouts(states, target, policy, PUSH_OBS_LAYOUT, model, task,
                                           CommandFilter.from_params(trainer), 2, seed=0)
    from mbrl_robot.core.algorithms.distill import elite_model
    assert len(moved) == elite_model(model).ensemble_size and np.all(np.isfinite(moved))
