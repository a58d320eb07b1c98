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
"""The controller's stamp-order check on its input streams (no ROS)."""

import pytest

from mbrl_robot.core.safety import StampOrder


def test_older_and_future_stamps_are_refused_equal_and_newer_accepted():
    order = StampOrder(future_tolerance_s=0.5, restart_after=3)
    assert order.check('joint_states', 2.0, now=2.0) is None
    assert order.check('joint_states', 2.0, now=2.0) is None  # a lockstep repeat
    assert 'older' in order.check('joint_states', 1.95, now=2.0)
    assert order.check('puck', 1.95, now=2.0) is None  # streams are separate
    assert 'ahead of the clock' in order.check('joint_states', 2.6, now=2.0)
    assert order.check('joint_states', 2.4, now=2.0) is None
    assert order.check('joint_states', 1e9, now=None) is None  # no clock yet: no future check
    assert (order.stale, order.future) == (1, 1)


def test_a_clock_that_stays_behind_is_a_restart():
    order = StampOrder(future_tolerance_s=1.0, restart_after=3)
    assert order.check('joint_states', 50.0, now=50.0) is None
    assert order.check('joint_states', 1.0, now=1.0) is not None
    assert order.check('joint_states', 1.05, now=1.05) is not None
    assert order.check('joint_states', 1.10, now=1.1) is None  # third in a row: a new timeline
    assert order.check('joint_states', 1.15, now=1.15) is None
    assert order.restarts == 1
    with pytest.raises(ValueError):
        StampOrder(-1.0)
    with pytest.raises(ValueError):
        StampOrder(1.0, restart_after=0)
