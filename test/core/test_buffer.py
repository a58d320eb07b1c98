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
"""Transition buffer core: assembler rules, SQLite store durability and round trips (no ROS)."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from mbrl_robot.core.buffer import (puck_distance_reward, RowRejected, Transition,
                                    TransitionAssembler, TransitionStore)
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM, TARGET_DIM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
F = 3 + STATE_DIM + ACTION_DIM + TARGET_DIM


def make_row(rng, episode, step, stamp=None, terminal=False, target=None):
    s = rng.normal(size=STATE_DIM)
    a = np.full(ACTION_DIM, np.nan) if terminal else rng.uniform(-1, 1, ACTION_DIM)
    target = rng.normal(size=TARGET_DIM) if target is None else target
    stamp = 0.05 * step if stamp is None else stamp
    return np.concatenate([[episode, step, stamp], s, a, target])


def episode_rows(rng, episode, steps):
    """``steps`` action rows then the terminal row (steps + 1 rows, one target)."""
    target = rng.normal(size=TARGET_DIM)
    return [make_row(rng, episode, k, terminal=(k == steps), target=target)
            for k in range(steps + 1)]


def feed(asm, rows):
    out = []
    for row in rows:
        out.extend(asm.add_row(row))
    return out


def make_transitions(rng, n, episode=0):
    asm = TransitionAssembler()
    return feed(asm, episode_rows(rng, episode, n))


# -- assembler ------------------------------------------------------------------------------

def test_assembler_pairs_exactly_and_closes_episodes():
    rng = np.random.default_rng(0)
    rows = episode_rows(rng, 0, 5) + episode_rows(rng, 1, 3)
    asm = TransitionAssembler()
    out = feed(asm, rows)
    assert len(out) == 8
    assert [t.done for t in out] == [False] * 4 + [True] + [False] * 2 + [True]
    assert [(t.episode, t.step) for t in out] == [(0, k) for k in range(5)] + \
        [(1, k) for k in range(3)]
    ep0, ep1 = rows[:6], rows[6:]
    for t, r, r_next in zip(out, ep0[:-1] + ep1[:-1], ep0[1:] + ep1[1:]):
        np.testing.assert_array_equal(t.obs, r[3:20])
        np.testing.assert_array_equal(t.act, r[20:27])
        np.testing.assert_array_equal(t.next_obs, r_next[3:20])  # s' is exactly the next s
        np.testing.assert_array_equal(t.target, r[27:30])
        assert t.reward == pytest.approx(-np.linalg.norm(r_next[17:20] - r[27:30]), abs=1e-12)
        assert (t.stamp, t.next_stamp) == (r[2], r_next[2])
    assert asm.episodes_closed == 2 and asm.pending is None
    assert asm.dropped_gaps == asm.dropped_breaks == asm.rejected == 0


def test_assembler_never_pairs_across_gaps_episodes_or_resets():
    rng = np.random.default_rng(1)
    asm = TransitionAssembler()
    rows = episode_rows(rng, 0, 6)
    # Steps 0, 1, then 3 (step 2 lost): the pair (1, 2) and (2, 3) are both impossible.
    out = feed(asm, [rows[0], rows[1], rows[3]])
    assert [t.step for t in out] == [0]
    assert asm.dropped_gaps == 1
    # Episode 1 starts before episode 0's terminal row: (3, ep1-0) is not a transition.
    ep1 = episode_rows(rng, 1, 4)
    out = feed(asm, ep1[:3])
    assert [(t.episode, t.step) for t in out] == [(1, 0), (1, 1)]
    assert asm.dropped_breaks == 1
    # A duplicate row (same step) and a step going back are breaks, never pairs.
    assert asm.add_row(ep1[2]) == []
    assert asm.add_row(ep1[1]) == []
    assert asm.dropped_breaks == 3
    # Time going backwards at the next step (the twin was reset): no pair.
    back = make_row(rng, 1, 2, stamp=0.0)
    assert asm.add_row(back) == []
    assert asm.dropped_breaks == 4
    # After a terminal row nothing pairs with it, even a row that claims the next step.
    fin = feed(asm, [make_row(rng, 1, 3), make_row(rng, 1, 4, terminal=True),
                     make_row(rng, 1, 5)])
    assert [(t.step, t.done) for t in fin] == [(2, False), (3, True)]  # after the reset
    assert asm.pending is not None and asm.pending[1] == 5
    all_steps = [(t.episode, t.step) for t in out + fin]
    assert len(all_steps) == len(set(all_steps))


def test_assembler_rejects_bad_rows_without_losing_good_data():
    rng = np.random.default_rng(2)
    rows = episode_rows(rng, 3, 4)
    bad_state = rows[2].copy()
    bad_state[5] = np.nan
    partial_nan = rows[2].copy()
    partial_nan[21] = np.nan
    negative_step = rows[2].copy()
    negative_step[1] = -1
    fractional = rows[2].copy()
    fractional[0] = 3.5
    bad_target = rows[2].copy()
    bad_target[-1] = np.inf
    # Finite but beyond what a row can hold: an SQLite INTEGER, a ROS Time, a finite reward.
    beyond = []
    for column, value in ((0, 1e19), (1, 2.0 ** 31), (2, 3e9), (5, 1e200), (-1, -1e12),
                          (21, 1e10)):
        row = rows[2].copy()
        row[column] = value
        beyond.append(row)
    junk = [rows[2][:-1], np.append(rows[2], 0.0), bad_state, partial_nan, negative_step,
            fractional, bad_target, 'not a row', np.zeros((2, F))] + beyond
    asm = TransitionAssembler()
    out = feed(asm, rows[:2])
    for row in junk:
        with pytest.raises(RowRejected):
            asm.add_row(row)
    out += feed(asm, rows[2:])
    assert asm.rejected == len(junk)
    assert [t.step for t in out] == [0, 1, 2, 3]  # the junk cost nothing
    assert asm.dropped_gaps == asm.dropped_breaks == 0
    np.testing.assert_array_equal(out[1].next_obs, rows[2][3:20])


def test_assembler_pending_row_survives_a_restart():
    rng = np.random.default_rng(3)
    rows = episode_rows(rng, 0, 4)
    first = TransitionAssembler()
    out = feed(first, rows[:3])
    saved = first.pending
    np.testing.assert_array_equal(saved, rows[2])
    second = TransitionAssembler(pending=saved)
    out += feed(second, rows[3:])
    assert [(t.step, t.done) for t in out] == [(0, False), (1, False), (2, False), (3, True)]
    np.testing.assert_array_equal(out[2].obs, rows[2][3:20])
    # A restored row whose successor was missed is a gap, not a pair.
    third = TransitionAssembler(pending=saved)
    assert third.add_row(rows[4]) == [] and third.dropped_gaps == 1
    with pytest.raises(ValueError, match='pending'):
        TransitionAssembler(pending=rows[4])  # a terminal row is never pending
    with pytest.raises(ValueError, match='pending'):
        TransitionAssembler(pending=rows[2][:10])


def test_assembler_uses_the_given_reward_fn():
    rng = np.random.default_rng(4)
    calls = []

    def reward(next_obs, act, target):
        calls.append((next_obs.shape, act.shape, target.shape))
        return next_obs[:, 0] * 2.0

    out = feed(TransitionAssembler(reward_fn=reward), episode_rows(rng, 0, 2))
    assert calls == [((1, STATE_DIM), (1, ACTION_DIM), (1, TARGET_DIM))] * 2
    assert [t.reward for t in out] == [2.0 * t.next_obs[0] for t in out]
    with pytest.raises(ValueError, match='reward_fn'):
        feed(TransitionAssembler(reward_fn=lambda n, a, t: np.full(1, np.nan)),
             episode_rows(rng, 0, 1))


def test_push_task_reward_matches_the_lecture_reward():
    push = pytest.importorskip('mbrl_robot.core.tasks.push')
    import torch
    from mbrl_robot.core.buffer import task_reward
    rng = np.random.default_rng(5)
    fn = task_reward(push.PushTask(dtype=torch.float64))
    next_obs, act = rng.normal(size=(4, STATE_DIM)), rng.uniform(-1, 1, (4, ACTION_DIM))
    target = rng.normal(size=(4, TARGET_DIM))
    np.testing.assert_allclose(fn(next_obs, act, target),
                               puck_distance_reward(next_obs, act, target), rtol=0, atol=1e-12)


# -- store ----------------------------------------------------------------------------------

def test_store_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    trs = make_transitions(rng, 7, episode=0) + make_transitions(rng, 3, episode=1)
    with TransitionStore(str(tmp_path)) as store:
        assert len(store) == 0 and store.last_seq == 0
        seqs = store.append(trs[:4])
        seqs2 = store.append(trs[4:])
        np.testing.assert_array_equal(np.concatenate([seqs, seqs2]), np.arange(1, 11))
        assert len(store) == 10 and store.last_seq == 10
        rec = store.records(dtype=np.float64)
        np.testing.assert_array_equal(rec.batch.obs, np.stack([t.obs for t in trs]))
        np.testing.assert_array_equal(rec.batch.next_obs, np.stack([t.next_obs for t in trs]))
        np.testing.assert_array_equal(rec.batch.act, np.stack([t.act for t in trs]))
        np.testing.assert_array_equal(rec.batch.reward, [t.reward for t in trs])
        np.testing.assert_array_equal(rec.batch.done, [t.done for t in trs])
        np.testing.assert_array_equal(rec.target, np.stack([t.target for t in trs]))
        np.testing.assert_array_equal(rec.episode, [0] * 7 + [1] * 3)
        np.testing.assert_array_equal(rec.step, list(range(7)) + list(range(3)))
        np.testing.assert_array_equal(rec.stamp, [t.stamp for t in trs])
        batch = store.all()
        assert batch.obs.dtype == np.float32 and batch.obs.shape == (10, STATE_DIM)
        np.testing.assert_allclose(batch.next_obs, rec.batch.next_obs, rtol=1e-6)
        seq, part = store.since(4, limit=3)
        np.testing.assert_array_equal(seq, [5, 6, 7])
        np.testing.assert_array_equal(part.obs, batch.obs[4:7])
        seq, part = store.since(10)
        assert len(seq) == 0 and part.obs.shape == (0, STATE_DIM)
        stats = store.stats()
        assert stats['transitions'] == 10 and stats['episodes'] == 2
        assert stats['episodes_done'] == 2 and stats['last_seq'] == 10
        assert stats['mean_reward'] == pytest.approx(np.mean([t.reward for t in trs]))
        path = store.export_npz(str(tmp_path / 'out' / 'buffer'))
    data = np.load(path)
    np.testing.assert_array_equal(data['obs'], rec.batch.obs)
    np.testing.assert_array_equal(data['seq'], np.arange(1, 11))
    np.testing.assert_array_equal(data['done'], rec.batch.done)
    with TransitionStore(str(tmp_path)) as again:  # reopened: same content, seqs continue
        assert len(again) == 10
        assert list(again.append(trs[:1])) == [11]


def test_store_validates_and_is_atomic(tmp_path):
    rng = np.random.default_rng(7)
    trs = make_transitions(rng, 3)
    store = TransitionStore(str(tmp_path))
    broken = Transition(**{**trs[1].__dict__, 'next_obs': np.full(STATE_DIM, np.nan)})
    with pytest.raises(ValueError, match='next_obs'):
        store.append([trs[0], broken])
    short = Transition(**{**trs[1].__dict__, 'act': np.zeros(3)})
    with pytest.raises(ValueError, match='act'):
        store.append([trs[0], short])
    with pytest.raises(ValueError, match='pending'):
        store.append(trs[:1], pending=np.zeros(5))
    assert len(store) == 0  # nothing of a failed call is stored
    pending = make_row(rng, 0, 3)
    store.append(trs, pending=pending)
    np.testing.assert_array_equal(store.pending(), pending)
    store.append([])  # ``...``: pending unchanged
    np.testing.assert_array_equal(store.pending(), pending)
    store.append([], pending=None)
    assert store.pending() is None
    store.close()
    with pytest.raises(ValueError, match='closed'):
        len(store)


def test_store_wal_mode_and_dims_check(tmp_path):
    store = TransitionStore(str(tmp_path))
    assert store._conn.execute('PRAGMA synchronous').fetchone()[0] == 2  # FULL
    store.close()
    conn = sqlite3.connect(os.path.join(str(tmp_path), 'transitions.sqlite3'))
    assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'  # persistent
    conn.close()
    with pytest.raises(ValueError, match='state_dim=17'):
        TransitionStore(str(tmp_path), state_dim=16)
    with pytest.raises(ValueError, match='action_dim=7'):
        TransitionStore(str(tmp_path), action_dim=6)


def test_a_damaged_store_is_one_error_and_left_as_it_is(tmp_path):
    path = tmp_path / 'transitions.sqlite3'
    garbage = bytes(range(256)) * 4
    path.write_bytes(garbage)
    with pytest.raises(ValueError, match='cannot open the transition store .*file is not a '
                                         'database.*left as it is'):
        TransitionStore(str(tmp_path))
    assert path.read_bytes() == garbage


def test_store_is_safe_across_threads(tmp_path):
    rng = np.random.default_rng(8)
    trs = make_transitions(rng, 20)
    store = TransitionStore(str(tmp_path))
    got = []

    def worker():
        for tr in trs:
            got.extend(store.append([tr]).tolist())
            store.stats()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 81)) and len(store) == 80
    store.close()


CRASH_CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    from mbrl_robot.core.buffer import Transition, TransitionStore

    store = TransitionStore(sys.argv[1])
    k = 0
    while True:
        rng = np.random.default_rng(k)
        tr = Transition(episode=k // 10, step=k % 10, stamp=0.05 * k, next_stamp=0.05 * k + 0.05,
                        obs=rng.normal(size=17), act=rng.uniform(-1, 1, 7), reward=-float(k),
                        next_obs=rng.normal(size=17), done=k % 10 == 9, target=rng.normal(size=3))
        seqs = store.append([tr], pending=np.full(30, float(k)))
        print(int(seqs[0]), k, flush=True)  # acknowledged
        k += 1
''')


def test_store_keeps_everything_acknowledged_after_sigkill(tmp_path):
    script = tmp_path / 'child.py'
    script.write_text(CRASH_CHILD)
    data_dir = str(tmp_path / 'db')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    child = subprocess.Popen([sys.executable, str(script), data_dir], stdout=subprocess.PIPE,
                             text=True, env=env)
    acked = []
    try:
        for line in child.stdout:
            acked.append(tuple(int(x) for x in line.split()))
            if len(acked) >= 60:
                break
    finally:
        child.send_signal(signal.SIGKILL)  # mid-write: it keeps appending until killed
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL and len(acked) == 60
    with TransitionStore(data_dir) as store:
        conn = store._conn
        assert conn.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        rec = store.records(dtype=np.float64)
        assert len(rec) >= len(acked)  # maybe more: committed but not yet printed
        np.testing.assert_array_equal(rec.seq, np.arange(1, len(rec) + 1))
        for seq, k in acked:
            i = seq - 1
            rng = np.random.default_rng(k)
            np.testing.assert_array_equal(rec.batch.obs[i], rng.normal(size=17))
            np.testing.assert_array_equal(rec.batch.act[i], rng.uniform(-1, 1, 7))
            assert rec.batch.reward[i] == -k and rec.episode[i] == k // 10
        # The pending row went in the same transaction as the last stored transition.
        np.testing.assert_array_equal(store.pending(), np.full(30, float(len(rec) - 1)))
        assert list(store.append(make_transitions(np.random.default_rng(9), 1))) == \
            [len(rec) + 1]


def test_rows_pair_only_one_control_period_apart():
    """The old realtime twin's failure: a tick that reused the previous tick's state (stamps
    equal, s' = s after an action) or one that came late (two periods of motion for one action)
    made transitions of the wrong length (36% of a realtime run's). With the period given they
    are dropped and counted; lockstep's exact periods all pair."""
    def row(step, stamp):
        s = np.full(STATE_DIM, float(step))
        return np.concatenate([[0, step, stamp], s, np.zeros(ACTION_DIM), np.ones(3)])

    stamps = [1.00, 1.05, 1.05, 1.10, 1.20, 1.25, 1.262, 1.31, 1.36]
    asm = TransitionAssembler(period_s=0.05, period_tolerance=0.3)
    pairs = [t for i, stamp in enumerate(stamps) for t in asm.add_row(row(i, stamp))]
    lengths = [round(t.next_stamp - t.stamp, 3) for t in pairs]
    assert lengths == [0.05, 0.05, 0.05, 0.048, 0.05], lengths
    assert asm.dropped_timing == 3  # 1.05 -> 1.05, 1.10 -> 1.20, 1.25 -> 1.262
    # Without a period (the old rule) every non-decreasing pair was taken, wrong lengths too.
    old = TransitionAssembler()
    assert len([t for i, stamp in enumerate(stamps) for t in old.add_row(row(i, stamp))]) == 8
    with pytest.raises(ValueError, match='period_s must be > 0'):
        TransitionAssembler(period_s=0.0)
