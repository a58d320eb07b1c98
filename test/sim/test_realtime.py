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
"""The realistic twin: actuation delay and tracking, sensor rates, latency, noise, drops, and the
per-episode puck (config/twin_realistic.yaml)."""

import numpy as np
import pytest

from mbrl_robot.config import node_params
from mbrl_robot.sim.push_env import PushEnv
from mbrl_robot.sim.realtime import RealtimeLoop


@pytest.fixture(scope='module')
def realistic():
    params = node_params('twin_realistic', 'twin')
    env = PushEnv(params['task'], physics=params['physics'], realism=params['realism'])
    yield env, params['realism']
    env.close()


def test_a_command_applies_after_the_delay_and_is_tracked_to_first_order(realistic):
    env, realism = realistic
    env.reset(seed=0)
    delay = realism['actuation_delay_s']
    tau = realism['velocity_time_constant_s']
    cmd = np.zeros(7)
    cmd[0] = 0.2  # the base joint: no load from gravity
    env.command(cmd)
    qd = []
    for _ in range(int(round(0.2 / env.physics_dt))):
        env.advance_physics(1)
        qd.append(env.joint_state()[1][0])
    t = np.arange(1, len(qd) + 1) * env.physics_dt
    qd = np.array(qd)
    assert np.all(np.abs(qd[t <= delay + 1e-9]) < 1e-3), qd[:4]  # nothing before the delay
    # After delay + tau about 63% of the command, after delay + 5 tau all of it.
    at_tau = qd[np.argmin(np.abs(t - (delay + tau)))] / 0.2
    assert 0.45 < at_tau < 0.8, at_tau
    assert abs(qd[np.argmin(np.abs(t - (delay + 5 * tau)))] / 0.2 - 1.0) < 0.05


def test_sensors_have_their_rates_latency_noise_and_drops(realistic):
    env, realism = realistic
    loop = RealtimeLoop(env, realism)
    _, info = loop.reset(seed=3)
    start = loop.time
    joints, frames = loop.advance_to(start + 10.0)
    assert len(joints) == 1000  # 100 Hz
    assert np.allclose(np.diff([j.t for j in joints]), 0.01)
    # 30 Hz, 3% lost, delivered 60 ms after capture: none captured in the last 60 ms yet.
    assert 270 <= len(frames) <= 300, len(frames)
    assert loop.frames_dropped > 0
    assert max(f.t for f in frames) <= start + 10.0 - realism['tracker_latency_s'] + 1e-9
    gaps = np.diff([f.t for f in frames])
    assert np.all(gaps > 0.02) and np.median(gaps) == pytest.approx(1 / 30, abs=0.003)
    xy = np.array([f.xyz for f in frames])  # the puck is at rest: the spread is the noise
    assert np.std(xy[:, 0]) == pytest.approx(realism['tracker_noise_m'], rel=0.2)
    assert np.allclose(xy[:, 2], info['puck'][2], atol=1e-4)  # z: no noise
    q = np.array([j.q for j in joints])
    assert 0 < np.std(q[:, 0]) < 3 * realism['joint_position_noise_rad']


def test_each_episode_draws_its_puck_and_the_start_stays_the_seeds(realistic):
    env, realism = realistic
    ideal = PushEnv.from_config('cpu')
    try:
        draws = []
        for seed in range(5):
            _, info = env.reset(seed=seed)
            _, ideal_info = ideal.reset(seed=seed)
            assert np.array_equal(info['puck'], ideal_info['puck'])
            assert np.array_equal(info['target'], ideal_info['target'])
            dyn = info['dynamics']
            assert 0.7 * 0.15 <= dyn['puck_mass_kg'] <= 1.3 * 0.15
            assert 0.3 <= dyn['puck_lateral_friction'] <= 0.7
            assert ideal_info['dynamics'] == {'puck_mass_kg': 0.15, 'puck_lateral_friction': 0.5}
            draws.append(dyn['puck_mass_kg'])
        assert len(set(draws)) == 5
        assert env.reset(seed=2)[1]['dynamics']['puck_mass_kg'] == draws[2]
    finally:
        ideal.close()


def test_a_rate_that_does_not_divide_the_physics_is_refused(realistic):
    env, realism = realistic
    with pytest.raises(ValueError, match='joint_state_rate_hz = 30 Hz must divide'):
        RealtimeLoop(env, {**realism, 'joint_state_rate_hz': 30.0})
