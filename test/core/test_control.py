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
"""GoalHold and its use by the controller's policies (core/control.py)."""

import json

import numpy as np
import pytest
import torch

from mbrl_robot.core.control import GoalHold
from mbrl_robot.core.models import create_model

TARGET = np.array([0.6, 0.1, 0.015])


def state_at(distance: float) -> np.ndarray:
    s = np.zeros(17)
    s[1], s[3] = 0.8, -1.8
    s[14:17] = TARGET + [distance, 0.0, 0.0]
    return s


def test_goal_hold_has_hysteresis():
    hold = GoalHold(0.02, 0.04)
    seen = [hold(state_at(d), TARGET) for d in (0.10, 0.03, 0.019, 0.03, 0.039, 0.041, 0.03)]
    assert seen == [False, False, True, True, True, False, False]
    assert not GoalHold(0.0, 0.0)(state_at(0.0), TARGET)  # 0: off
    assert not hold(state_at(0.0), None)  # no target: never hold


@pytest.mark.parametrize('enter, leave', [(-0.01, 0.02), (0.03, 0.02), (np.nan, 0.02)])
def test_goal_hold_rejects_bad_radii(enter, leave):
    with pytest.raises(ValueError, match='goal_hold'):
        GoalHold(enter, leave)


MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 2, 'num_layers': 2, 'hidden_size': 16}


def saved_model(tmp_path, name: str, seed: int) -> tuple:
    """(checkpoint dir, its sha256) of a MODEL saved under ``tmp_path / name``."""
    create_model(MODEL, 17, 7, torch.device('cpu'), seed).save(tmp_path / name)
    return str(tmp_path / name), json.loads((tmp_path / name / 'model.json').read_text())['sha256']


def test_planner_policy_holds_still_at_the_goal_and_plans_elsewhere(controller_factory):
    f = controller_factory(goal_hold={'enter_radius_m': 0.025, 'exit_radius_m': 0.04})
    f.set_model(create_model(MODEL, 17, 7, torch.device('cpu'), 0), 1)
    f.set_target(TARGET)
    policy = f.create()
    plan, start = policy.plan(state_at(0.2), 3)
    assert start == 3 and plan.shape[0] > 1 and np.abs(plan).max() > 0.0
    assert not policy.last_info().get('holding') and policy.last_info()['plan_time_ms'] > 0
    plan, start = policy.plan(state_at(0.01), 4)
    assert start == 4 and plan.shape == (1, 7) and not plan.any()
    assert policy.last_info() == {'holding': True}
    plan, _ = policy.plan(state_at(0.05), 5)  # drifted past exit_radius_m: planning again
    assert plan.shape[0] > 1 and not policy.last_info().get('holding')


def test_factory_refuses_bad_goal_hold_at_start_up(controller_factory):
    with pytest.raises(ValueError, match='goal_hold'):
        controller_factory(goal_hold={'enter_radius_m': 0.05, 'exit_radius_m': 0.01})


def test_factory_loads_a_model_only_with_the_announced_checksum(tmp_path, controller_factory):
    f = controller_factory()
    create_model(MODEL, 17, 7, torch.device('cpu'), 0).save(tmp_path / 'v1')
    assert not f.load_model(str(tmp_path / 'v1'), 1, '0' * 64)  # checksum mismatch: kept none
    assert not f.has_model()
    sha256 = json.loads((tmp_path / 'v1' / 'model.json').read_text())['sha256']
    assert f.load_model(str(tmp_path / 'v1'), 1, sha256) and f.model_version == 1


def test_one_planner_per_run_restarted_each_episode(tmp_path, controller_factory):
    """The factory builds the planner once (a compiled or captured plan must not be rebuilt per
    episode); each episode restarts it as if new, and a new model goes into its tensors."""
    f = controller_factory()
    f.set_model(create_model(MODEL, 17, 7, torch.device('cpu'), 0), 1)
    f.set_target(TARGET)
    first = f.create()
    plans = [first.plan(state_at(0.2), 0)[0] for _ in range(2)]
    second = f.create()
    assert second.agent is first.agent and second.agent.backend == 'fused'
    again = [second.plan(state_at(0.2), 0)[0] for _ in range(2)]
    np.testing.assert_array_equal(again[0], plans[0])  # same seeds, no warm start carried
    np.testing.assert_array_equal(again[1], plans[1])
    new = create_model(MODEL, 17, 7, torch.device('cpu'), 7)
    f.set_model(new, 2)
    third = f.create()
    assert third.agent is first.agent and third.model_version == 2
    assert not np.allclose(third.plan(state_at(0.2), 0)[0], plans[0])


def test_the_planner_is_built_and_warmed_up_when_its_model_loads(tmp_path, controller_factory):
    """load_model builds the run's planner and plans once with it (compiling a compiled
    backend, capturing a CUDA graph) in the loading thread, before the version is announced; the
    warm-up leaves no trace: the first episode plans what a fresh planner plans."""
    f = controller_factory()
    path, sha256 = saved_model(tmp_path, 'v1', 0)
    assert f.load_model(path, 1, sha256)
    agent = f._agent
    assert agent is not None and agent.backend == 'fused'
    calls = []
    agent.warmup = lambda: calls.append(1)  # a second load must not warm up again
    path, sha256 = saved_model(tmp_path, 'v2', 3)
    assert f.load_model(path, 2, sha256) and not calls
    f.set_target(TARGET)
    policy = f.create()
    assert policy.agent is agent
    fresh = controller_factory()
    fresh.set_model(f._model, 2)
    fresh.set_target(TARGET)
    np.testing.assert_array_equal(policy.plan(state_at(0.2), 0)[0],
                                  fresh.create().plan(state_at(0.2), 0)[0])


def test_a_planner_backend_that_fails_to_build_falls_back_to_fused(tmp_path, controller_factory,
                                                                   monkeypatch):
    """No C++ compiler, no CUDA-graph support: one error line, then the fused plan."""
    from mbrl_robot.core.planning.fused import FusedMPCAgent

    def broken(self):
        raise RuntimeError('no C++ compiler')
    monkeypatch.setattr(FusedMPCAgent, 'warmup', broken)
    f = controller_factory(planner={**controller_factory().planner_cfg, 'backend': 'compiled'})
    errors = []
    f.logger = type('L', (), {'info': lambda *a: None, 'error': lambda s, m: errors.append(m)})()
    path, sha256 = saved_model(tmp_path, 'v1', 0)
    assert f.load_model(path, 1, sha256)
    assert f._agent.backend == 'fused' and len(errors) == 1 and 'no C++ compiler' in errors[0]


def test_a_cuda_only_backend_on_a_cpu_falls_back_to_fused(tmp_path, controller_factory):
    """config/lecture_realtime.yaml's cuda_graph on a machine without CUDA: the planner cannot
    even be built there; one error line naming the device, then the fused plan (until session
    35 the error escaped the loading thread and no model was ever loaded)."""
    f = controller_factory(planner={**controller_factory().planner_cfg, 'backend': 'cuda_graph'})
    errors = []
    f.logger = type('L', (), {'info': lambda *a: None, 'error': lambda s, m: errors.append(m)})()
    path, sha256 = saved_model(tmp_path, 'v1', 0)
    assert f.load_model(path, 1, sha256) and f.model_version == 1
    assert f._agent.backend == 'fused' and len(errors) == 1
    assert 'cuda_graph' in errors[0] and 'cpu' in errors[0] and 'CUDA' in errors[0]


@pytest.mark.parametrize('native', [False, True, None])
def test_bf16_on_a_cpu_without_native_bf16_says_it_is_emulated(tmp_path, controller_factory,
                                                               monkeypatch, native):
    """precision bf16 plans on any CPU; where the CPU has no native bf16 one warning says so."""
    from mbrl_robot.core import control
    monkeypatch.setattr(control, 'native_bf16', lambda device: native)
    f = controller_factory(planner={**controller_factory().planner_cfg, 'precision': 'bf16'})
    said = []
    f.logger = type('L', (), {'info': lambda *a: None,
                              'warning': lambda s, m: said.append(m)})()
    path, sha256 = saved_model(tmp_path, 'v1', 0)
    assert f.load_model(path, 1, sha256)
    assert f._agent.precision == 'bf16'
    assert len(said) == (native is False)
    assert all('no native bf16' in m and 'emulated' in m for m in said)


def test_native_bf16_reads_the_cpu():
    from mbrl_robot.core.planning.fused import native_bf16
    cpu = native_bf16(torch.device('cpu'))
    assert cpu is None or cpu == (torch.cpu._is_avx512_bf16_supported()
                                  or torch.cpu._is_amx_tile_supported())
