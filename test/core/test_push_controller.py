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
"""The one control step (core/control.py PushController) with a fake clock and fake planners.

The clock is the ``now`` and ``stamp`` handed to ``tick``; planners are stand-ins that block
until the test releases them, return hostile plans or raise, so every path of the step (deadline
fallback, homing, gating, disagreement scale, command filter last) is exercised without ROS.
"""

import threading
import time

import numpy as np
import pytest

from mbrl_robot.config import node_params
from mbrl_robot.core.control import ControlSettings, PushController
from mbrl_robot.core.safety import CommandFilter

PARAMS = {**node_params('cpu', 'controller'), 'device': 'cpu'}
TARGET = np.array([0.6, 0.1, 0.015])
DT = 1.0 / PARAMS['task']['control_rate_hz']
H = 6


class FakePolicy:
    """A planner stand-in: each plan waits for ``gate`` (if set), then returns ``make(step)``."""

    def __init__(self, make, gate=None, disagreement=0.0):
        self.make, self.gate, self.disagreement = make, gate, disagreement
        self.model_version = 1
        self.calls = []

    def set_last_action(self, action):
        pass

    def plan(self, state, step):
        self.calls.append(step)
        if self.gate is not None:
            assert self.gate.wait(10.0)
        return self.make(step), step

    def last_info(self):
        return {'plan_time_ms': 1.0, 'disagreement': float(self.disagreement)}


class FakeFactory:
    """Stands in for PolicyFactory: a model is always there and every episode gets ``policy``."""

    device = 'cpu'

    def __init__(self, policy, model_version=1):
        self.policy, self.model_version = policy, model_version

    mode = 'planner'

    def has_model(self, kind='planner'):
        return True

    def create(self, explore=False, kind='planner'):
        return self.policy

    def refresh(self, policy):
        pass


def make_controller(policy, deadline_s=0.02, clock=time.monotonic, **settings):
    command_filter = CommandFilter.from_params(PARAMS)
    base = ControlSettings.from_params(PARAMS)
    values = {**base.__dict__, 'deadline_s': deadline_s, 'wait_for_fresh_state': False,
              **settings}
    return PushController(FakeFactory(policy), command_filter, ControlSettings(**values),
                          clock=clock)


def rest_state(q=None):
    s = np.zeros(17)
    s[:7] = [0.0, 0.8, 0.0, -1.8, 0.0, 0.5, 0.0] if q is None else q
    s[14:17] = TARGET + [0.2, 0.0, 0.0]
    return s


def rows(step):
    """Plan rows that say which step planned them and which row this is."""
    plan = np.zeros((H, 7))
    plan[:, 0] = 0.1 * (np.arange(H) + 1)
    plan[:, 1] = 0.1 * (step + 1)
    return plan


def test_an_overrunning_plan_sends_the_shifted_previous_plan_then_a_smooth_stop():
    gate = threading.Event()
    control = make_controller(FakePolicy(rows, gate))
    control.start_episode(0, 'planner')
    s = rest_state()
    t = 0.0
    first = control.tick(s, t, t, TARGET)  # plan 0 still running, no previous plan
    assert first.event == 'act' and first.info['deadline_miss']
    assert np.allclose(first.command, 0.0)  # a decelerating stop from rest
    gate.set()
    second = control.tick(s, t + DT, t + DT, TARGET)  # plan 0 (for step 0) arrives at step 1
    assert not second.info.get('deadline_miss')
    expected = control.filter(s[:7], control.filter.to_velocity(rows(0)[1]), first.command)
    assert np.allclose(second.command, expected)
    gate.clear()
    for k in range(2, H + 2):
        before = control.prev_command.copy()
        tick = control.tick(s, t + k * DT, t + k * DT, TARGET)
        assert tick.info['deadline_miss']  # plan 2 blocks: rows of plan 0 go out, shifted
        if k < H:
            want = control.filter.to_velocity(rows(0)[k])
            assert np.isclose(tick.command[1], want[1]) and tick.command[0] > 0.0
        else:  # plan 0 exhausted: a smooth stop, max_accel * dt per tick
            assert np.all(np.abs(tick.command) <= np.abs(before) + 1e-12)
            assert np.abs(tick.command).sum() < np.abs(before).sum() or not before.any()
    assert control.stats['deadline_misses'] == H + 1
    gate.set()
    control.close()


def test_the_deadline_runs_on_the_control_clock():
    """A lockstep twin's clock stands still while a plan runs: the plan is waited for. On a
    clock that runs (a realtime twin's sim time, a real arm's wall time) it is not."""
    gate = threading.Event()
    sim_time = [0.0]
    control = make_controller(FakePolicy(rows, gate), deadline_s=0.01,
                              clock=lambda: sim_time[0])
    control.start_episode(0, 'planner')
    threading.Timer(0.1, gate.set).start()  # the plan takes 10 deadlines of wall time
    tick = control.tick(rest_state(), 0.0, 0.0, TARGET)
    assert not tick.info.get('deadline_miss') and control.stats['deadline_misses'] == 0
    assert tick.info['plan_time_ms'] == 1.0
    gate.clear()
    threading.Timer(0.03, lambda: sim_time.__setitem__(0, 0.05)).start()  # sim time moves on
    tick = control.tick(rest_state(), DT, DT, TARGET)
    assert tick.info['deadline_miss'] and control.stats['deadline_misses'] == 1
    gate.set()
    control.close()


HOSTILE = [
    lambda step: np.full((H, 7), np.nan),
    lambda step: np.full((H, 7), 1e9),
    lambda step: np.full((H, 7), -np.inf),
    lambda step: np.ones((H, 3)),  # wrong shape
    lambda step: np.zeros((0, 7)),  # empty
    lambda step: (-1.0) ** step * np.full((H, 7), 50.0),  # bang-bang
    lambda step: 1 / 0,  # the planner raises
]


@pytest.mark.parametrize('disagreement', [0.0, 0.15, 5.0])
def test_every_command_satisfies_speed_accel_and_position_bounds(disagreement):
    rng = np.random.default_rng(0)
    f = CommandFilter.from_params(PARAMS)
    lower = f.limits.lower + PARAMS['position_margin_rad']
    upper = f.limits.upper - PARAMS['position_margin_rad']
    # Start within 2 cm of the limits, pushed toward them by hostile and random plans.
    q = np.where(rng.random(7) < 0.5, lower + 0.02, upper - 0.02)

    def plan(step):
        if step % 3 == 0:
            return HOSTILE[step // 3 % len(HOSTILE)](step)
        return np.sign(q - (lower + upper) / 2) * rng.uniform(0.5, 1e3, (H, 7))

    policy = FakePolicy(plan, disagreement=disagreement)
    control = make_controller(policy, deadline_s=1.0, episode_steps=1000)
    control.start_episode(0, 'planner')
    prev = np.zeros(7)
    for k in range(300):
        state = rest_state(q)
        if k % 50 == 25:  # the disagreement jumps: the scale must not skip the accel bound
            policy.disagreement = 10.0 if policy.disagreement < 1.0 else 0.0
        tick = control.tick(state, k * DT, k * DT, TARGET)
        cmd = tick.command
        assert tick.event == 'act' and np.all(np.isfinite(cmd))
        assert np.all(np.abs(cmd) <= f.speed_cap + 1e-12)
        assert np.all(np.abs(cmd - prev) <= f.max_accel * DT + 1e-9)
        q = q + cmd * DT
        assert np.all(q >= lower - 1e-9) and np.all(q <= upper + 1e-9)
        prev = cmd
    assert control.stats['plan_errors'] > 0
    control.close()


def test_disagreement_slows_the_command_within_the_acceleration_bound():
    # The old node scaled the filtered command: 0.25 rad/s to 0 in one tick.
    policy = FakePolicy(lambda step: np.ones((H, 7)))
    control = make_controller(policy, deadline_s=1.0)
    control.start_episode(0, 'planner')
    s = rest_state()
    for k in range(10):
        tick = control.tick(s, k * DT, k * DT, TARGET)
    cruising = tick.command.copy()
    assert np.allclose(np.abs(cruising[[0, 2, 4, 6]]), control.filter.max_speed)
    policy.disagreement = 10.0  # far above disagreement_stop
    step = control.filter.max_accel * DT
    for k in range(10, 30):
        before = control.prev_command.copy()
        tick = control.tick(s, k * DT, k * DT, TARGET)
        assert np.all(np.abs(tick.command - before) <= step + 1e-12)
    assert tick.info['scale'] == 0.0 and np.allclose(tick.command, 0.0)
    control.close()


def test_homing_reaches_the_ready_pose_at_limited_speed():
    control = make_controller(FakePolicy(rows))
    home = control.settings.home
    q = home + np.array([0.3, -0.2, 0.1, 0.25, -0.3, 0.2, 0.1])
    control.start_homing()
    events = []
    for k in range(2000):
        tick = control.tick(rest_state(q), k * DT, k * DT, None)
        events.append(tick.event)
        assert np.all(np.abs(tick.command) <= control.settings.home_speed + 1e-12)
        q = q + tick.command * DT
        if tick.event == 'homed':
            break
    assert events[-1] == 'homed' and set(events[:-1]) == {'homing'}
    assert np.max(np.abs(q - home)) < 0.01 and not control.homing
    control.start_episode(0, 'zero')
    with pytest.raises(RuntimeError, match='episode is running'):
        control.start_homing()
    control.close()


def test_gating_fresh_state_model_version_stale_state_and_target():
    policy = FakePolicy(rows)
    control = make_controller(policy, wait_for_fresh_state=True)
    s = rest_state()
    assert control.ready(None) is None  # between episodes nothing waits
    control.start_episode(0, 'planner', min_model_version=2)
    assert 'model v2' in control.ready(1.0)
    control.policies.model_version = 2
    assert control.ready(None) == 'waiting for a fresh state'
    assert control.ready(1.0) is None
    assert control.tick(s, 1.0, 1.0, TARGET).event == 'act'
    assert control.ready(1.0) == 'waiting for a fresh state'  # lockstep: same state again
    assert control.ready(1.05) is None
    timeout = control.settings.state_timeout_s
    stale = control.tick(s, 1.05, 1.05 + timeout + 0.01, TARGET)
    assert stale.event == 'stale' and not stale.command.any()
    assert control.tick(s, 1.1, 1.1, None).event == 'no_target'
    control.estop = True
    assert control.ready(None) is None  # e-stop ticks without a state
    assert control.ready(1.2) is None
    assert control.tick(s, 1.2, 1.2, TARGET).event == 'estop'
    # ... but once per lockstep state: each zero steps the twin, which then sends one state (a
    # tick on every message doubled the commands each step).
    assert control.ready(1.2) == 'waiting for a fresh state'
    assert control.ready(1.25) is None
    control.estop = False
    with pytest.raises(ValueError, match='episode policy'):
        control.start_episode(1, 'dance')
    control.close()


def test_episode_ends_with_a_terminal_tick_after_episode_steps():
    control = make_controller(FakePolicy(rows), episode_steps=5)
    control.start_episode(3, 'random')
    s = rest_state()
    ticks = [control.tick(s, k * DT, k * DT, TARGET) for k in range(6)]
    assert [t.event for t in ticks] == ['act'] * 5 + ['done']
    assert [t.step for t in ticks] == list(range(6)) and ticks[-1].episode == 3
    assert ticks[-1].action is None and control.episode == -1
    assert control.tick(s, 1.0, 1.0, TARGET).event == 'idle'
    control.close()


def test_plan_ahead_sends_at_the_tick_the_plan_started_a_period_before():
    """Realtime with latency compensation: each tick sends row 0 of the plan started one tick
    earlier for this step, then starts the next step's plan from the state predicted with the
    command just sent. A command's timing no longer depends on the plan's latency."""
    policy = FakePolicy(rows)
    states = []
    control = make_controller(policy, plan_ahead=True)
    control.start_episode(0, 'planner')
    s = rest_state()

    def plan_state(command):
        states.append(command.copy())
        out = s.copy()
        out[7:14] = command  # stands for "predicted with the command just sent"
        return out

    sent = []
    for k in range(4):
        tick = control.tick(s, k * DT, k * DT, TARGET, plan_state)
        assert control._future is not None
        control._future.result(timeout=5.0)  # the plan finishes within the period
        sent.append(tick.command)
    assert policy.calls == [1, 2, 3, 4]  # each plan starts at the next step
    assert np.allclose(sent[0], 0.0)  # step 0: no plan yet, a stop from rest
    for k in (1, 2, 3):  # row 0 of the plan for step k (planned at k - 1), filtered
        want = control.filter(s[:7], control.filter.to_velocity(rows(k)[0]), sent[k - 1])
        assert np.allclose(sent[k], want)
        assert np.allclose(states[k], sent[k])  # the next plan saw the command just sent
    # A plan still running at its tick: counted as a miss, the previous plan's next row goes out.
    gate = threading.Event()
    policy.gate = gate
    control.tick(s, 4 * DT, 4 * DT, TARGET, plan_state)  # starts plan 5, which blocks
    before = control.prev_command.copy()
    late = control.tick(s, 5 * DT, 5 * DT, TARGET, plan_state)
    assert late.info['deadline_miss'] and control.stats['deadline_misses'] == 1
    assert np.allclose(late.command,
                       control.filter(s[:7], control.filter.to_velocity(rows(4)[1]), before))
    gate.set()
    control.close()
    # Without a prediction (in-process twin) the same settings plan synchronously.
    sync = make_controller(FakePolicy(rows), plan_ahead=True, deadline_s=5.0)
    sync.start_episode(0, 'planner')
    first = sync.tick(s, 0.0, 0.0, TARGET)
    assert np.allclose(first.command,
                       sync.filter(s[:7], sync.filter.to_velocity(rows(0)[0]), np.zeros(7)))
    sync.close()
