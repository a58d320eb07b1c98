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
"""Latency compensation: the state predicted for the moment a command takes effect."""

import numpy as np
import pytest

from mbrl_robot.core.latency import RollingStats, StatePredictor


def test_joints_follow_the_commands_sent_with_the_actuator_model():
    """Against the exact first-order response: a command sent at 0 takes effect at the delay,
    the velocity approaches it with the time constant, the position integrates it."""
    delay, tau, v = 0.01, 0.03, 0.2
    p = StatePredictor(delay, tau)
    p.observe_puck(0.0, np.zeros(3))
    p.observe_joints(0.0, np.zeros(7), np.zeros(7))
    cmd = np.full(7, v)
    p.commanded(0.0, cmd)
    for t in (0.005, 0.01, 0.04, 0.1):
        state = p.predict(t)
        s = max(t - delay, 0.0)
        qd = v * (1 - np.exp(-s / tau))
        q = v * (s - tau * (1 - np.exp(-s / tau)))
        assert state[7] == pytest.approx(qd, abs=1e-12)
        assert state[0] == pytest.approx(q, abs=1e-12)
    # A later joint state restarts the prediction from the measurement, under the same command.
    p.observe_joints(0.1, np.ones(7), np.full(7, v))
    assert p.predict(0.15)[0] == pytest.approx(1.0 + 0.05 * v)
    # Never further than max_horizon_s ahead of the measurement.
    assert p.predict(5.0)[0] == pytest.approx(1.0 + p.max_horizon * v)


def test_the_puck_moves_on_with_its_fitted_velocity_and_a_still_one_stays():
    p = StatePredictor(puck_window_s=0.15, puck_speed_deadband_m_s=0.02)
    p.observe_joints(0.0, np.zeros(7), np.zeros(7))
    rng = np.random.default_rng(0)
    for k in range(6):  # 30 Hz frames of a puck pushed at 0.1 m/s along x, 2 mm noise
        t = k / 30
        p.observe_puck(t, np.array([0.5 + 0.1 * t + rng.normal(0, 0.002), 0.0, 0.016]))
    predicted = p.predict(5 / 30 + 0.09)  # 90 ms after the last capture
    assert predicted[14] == pytest.approx(0.5 + 0.1 * (5 / 30 + 0.09), abs=0.004)
    assert predicted[16] == 0.016
    # A resting puck seen with 2 mm noise: the mean of the window's frames, 3x less noisy.
    still = StatePredictor()
    still.observe_joints(0.0, np.zeros(7), np.zeros(7))
    frames = [np.array([0.5 + rng.normal(0, 0.002), rng.normal(0, 0.002), 0.016])
              for _ in range(10)]
    for k, xyz in enumerate(frames):
        still.observe_puck(k / 30, xyz)
    assert np.allclose(still.predict(0.4)[14:16], np.mean(frames, axis=0)[:2])
    errors = []
    for trial in range(200):
        p = StatePredictor()
        p.observe_joints(0.0, np.zeros(7), np.zeros(7))
        for k in range(10):
            p.observe_puck(k / 30, np.array([0.5 + rng.normal(0, 0.002), 0.0, 0.016]))
        errors.append(p.predict(0.4)[14] - 0.5)
    assert np.std(errors) < 0.002 / 2


def test_a_reset_puck_starts_a_new_track():
    """Frames of the last episode never enter the fit of the next (they made the first seven
    steps of every realtime episode record puck jumps of 2-20 cm)."""
    p = StatePredictor()
    p.observe_joints(0.0, np.zeros(7), np.zeros(7))
    for k in range(9):
        p.observe_puck(k / 30, np.array([0.5, 0.0, 0.016]))
    p.observe_puck(0.3, np.array([0.6, 0.1, 0.016]))  # reset elsewhere
    assert np.allclose(p.predict(0.4)[14:16], [0.6, 0.1])
    for k in range(9):  # and a reset to within 5 cm, after restart_track
        p.observe_puck(0.4 + k / 30, np.array([0.6, 0.1, 0.016]))
    p.observe_puck(0.7, np.array([0.62, 0.1, 0.016]))
    p.restart_track()
    p.observe_puck(0.73, np.array([0.62, 0.1, 0.016]))
    p.observe_puck(0.76, np.array([0.62, 0.1, 0.016]))
    assert np.allclose(p.predict(0.8)[14:16], [0.62, 0.1])


def test_without_measurements_there_is_no_state():
    p = StatePredictor()
    assert p.predict(1.0) is None and p.measured() is None and p.stamps() is None
    p.observe_joints(1.0, np.zeros(7), np.zeros(7))
    assert p.predict(1.0) is None  # no puck yet
    with pytest.raises(ValueError):
        StatePredictor(actuation_delay_s=-0.1)


def test_rolling_percentiles():
    stats = RollingStats(size=100)
    for v in range(200):
        stats.add(float(v))
    stats.add(float('nan'))
    out = stats.percentiles('x')
    assert out['x_p50'] == pytest.approx(149.5) and out['x_p99'] > 197
