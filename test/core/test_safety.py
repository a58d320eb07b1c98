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

import numpy as np
import pytest

from mbrl_robot.core.safety import CommandFilter, JointLimits
from mbrl_robot.paths import urdf_path

LIMITS = JointLimits(lower=np.radians([-170, -120, -170, -120, -170, -120, -175.0]),
                     upper=np.radians([170, 120, 170, 120, 170, 120, 175.0]),
                     velocity=np.radians([98, 98, 100, 130, 140, 180, 180.0]))


@pytest.mark.parametrize('seed', range(5))
def test_no_emitted_command_violates_speed_accel_or_position(seed):
    rng = np.random.default_rng(seed)
    dt, accel, speed = 0.05, 4.0, 2.5  # speed above some joints' limits on purpose
    f = CommandFilter(LIMITS, max_speed=speed, max_accel=accel, dt=dt, position_margin=0.02)
    q = rng.uniform(LIMITS.lower + 0.05, LIMITS.upper - 0.05)
    prev = np.zeros(7)
    for t in range(3000):
        # Hostile requests: saturated pushes toward the limits, noise, NaN and inf.
        request = rng.choice([-1e3, 1e3], size=7) if t % 200 < 150 else rng.normal(0, 5, 7)
        if t % 97 == 0:
            request[rng.integers(7)] = np.nan
        if t % 89 == 0:
            request[rng.integers(7)] = np.inf
        v = f(q, request, prev)
        assert np.all(np.isfinite(v))
        assert np.all(np.abs(v) <= np.minimum(speed, LIMITS.velocity) + 1e-12)
        assert np.all(np.abs(v - prev) <= accel * dt + 1e-9)
        q = q + v * dt
        assert np.all(q >= LIMITS.lower) and np.all(q <= LIMITS.upper)
        prev = v


def test_reaches_the_limit_margin_when_pushed():
    f = CommandFilter(LIMITS, max_speed=1.0, max_accel=4.0, dt=0.05, position_margin=0.02)
    q, prev = np.zeros(7), np.zeros(7)
    for _ in range(400):
        prev = f(q, np.full(7, 1.0), prev)
        q = q + prev * 0.05
    # It stops at the margin, not short of it by more than one braking step.
    assert np.all(q <= f.upper + 1e-9)
    assert np.all(q >= f.upper - 0.02)


def test_decelerate_ramps_to_zero_within_the_accel_bound():
    f = CommandFilter(LIMITS, max_speed=1.0, max_accel=4.0, dt=0.05)
    v, q = np.full(7, 0.9), np.zeros(7)
    for _ in range(6):
        nxt = f.decelerate(q, v)
        assert np.all(np.abs(nxt - v) <= 0.2 + 1e-12)
        v = nxt
    assert np.allclose(v, 0.0)


def test_limits_from_urdf_and_errors(tmp_path):
    limits = JointLimits.from_urdf(urdf_path(), [f'iiwa_joint_{i}' for i in range(1, 8)])
    assert limits.lower.shape == (7,) and np.all(limits.upper > limits.lower)
    assert np.all(limits.velocity > 0)
    with pytest.raises(ValueError, match='no joint named'):
        JointLimits.from_urdf(urdf_path(), ['nope'])
    with pytest.raises(FileNotFoundError):
        JointLimits.from_urdf(str(tmp_path / 'missing.urdf'), ['a'])
    with pytest.raises(ValueError):
        CommandFilter(LIMITS, max_speed=0.0, max_accel=1.0, dt=0.05)


def test_disagreement_scale_slows_then_stops():
    from mbrl_robot.core.safety import disagreement_scale
    assert disagreement_scale(0.01, 0.05, 0.2) == 1.0
    assert disagreement_scale(0.125, 0.05, 0.2) == pytest.approx(0.5)
    assert disagreement_scale(0.2, 0.05, 0.2) == 0.0
    assert disagreement_scale(5.0, 0.05, 0.2) == 0.0
