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
"""At-least-once executed rows without ROS: the unacked queue, the gate, a buffer that dies."""

import os

import numpy as np
import pytest

from mbrl_robot.core.buffer import (ReliableIngest, RowGate, RowSpool, TransitionAssembler,
                                    TransitionStore, UnackedRows)
from mbrl_robot.core.buffer.reliable import DUPLICATE, HOLE, NEW, row_key


def row(episode, step, stamp, terminal=False, rng=np.random.default_rng(0)):
    a = np.full(7, np.nan) if terminal else rng.uniform(-1, 1, 7)
    return np.concatenate([[episode, step, stamp], rng.normal(size=17), a, [0.5, 0.0, 0.0]])


def episode_rows(episode, steps, t0):
    return [row(episode, k, t0 + 0.05 * k, terminal=k == steps) for k in range(steps + 1)]


def test_unacked_rows_acknowledge_resend_and_bound():
    q = UnackedRows(max_rows=3)
    for k in range(3):
        assert q.add(row(0, k, 0.05 * k), now=float(k)) is None
    assert q.due(now=0.5, after_s=1.0).shape == (0, 0)  # the oldest went out 0.5 s ago
    assert q.due(now=5.0, after_s=5.0).shape == (3, 30)
    assert q.due(now=5.5, after_s=1.0).shape == (0, 0)  # just resent
    assert q.acknowledge((0, 1, 0.05)) == 2 and len(q) == 1
    dropped = [q.add(row(0, k, 0.05 * k), now=6.0) for k in range(3, 6)]
    assert dropped[-1] is not None and dropped[-1][1] == 2 and q.dropped == 1
    with pytest.raises(ValueError):
        UnackedRows(0)
    with pytest.raises(ValueError):
        q.add(np.full(30, np.nan), now=0.0)


def test_gate_dedups_holds_back_holes_and_keeps_a_restarted_controller_apart():
    gate = RowGate()
    rows = episode_rows(3, 4, 10.0)
    for r in rows[:3]:
        assert gate.check(r) == NEW
        gate.accept(r)
    assert gate.check(rows[1]) == DUPLICATE and gate.check(rows[2], resent=True) == DUPLICATE
    assert gate.check(rows[4]) == HOLE  # step 3 missing: held back...
    assert gate.check(rows[4], resent=True) == NEW  # ...unless nothing better is coming
    # A restarted controller runs episode 3 again from step 0, with later stamps: new data,
    # but not paired with the old run's step 2: its live rows wait for the resend.
    again = [row(3, k, 20.0 + 0.05 * k) for k in range(2)]
    assert gate.check(again[0]) == HOLE and gate.check(again[1]) == HOLE
    assert gate.check(again[0], resent=True) == NEW
    gate.accept(again[0])
    assert gate.check(again[1]) == NEW  # the hole is closed: live rows go through again
    for r in rows[3:]:
        gate.accept(r)
    assert gate.state == (3, 4, 10.2, True)
    assert gate.check(row(5, 0, 11.0)) == NEW  # step 0 of a later episode after a terminal
    assert gate.check(row(5, 1, 11.0)) == HOLE
    assert RowGate(gate.state).check(rows[2]) == DUPLICATE
    assert gate.counters() == {'duplicates': 2, 'held_back': 4}


def test_buffer_killed_mid_episode_loses_nothing_and_stores_once(tmp_path):
    """The producer keeps what is unacknowledged; the buffer 'dies' (its store is reopened)
    while rows are published, live rows after the hole are held back, the resend fills it."""
    produced = episode_rows(0, 10, 1.0) + episode_rows(1, 10, 2.0)
    q = UnackedRows(max_rows=100)
    store = TransitionStore(str(tmp_path))
    ingest = ReliableIngest(store, TransitionAssembler())
    alive, now = True, 0.0
    for i, r in enumerate(produced):
        now += 0.05
        q.add(r, now)
        if i == 6:  # killed after step 6 of episode 0, back for step 0 of episode 1
            alive = False
            store.close()
        if i == 11:
            store = TransitionStore(str(tmp_path))
            ingest = ReliableIngest(store, TransitionAssembler(pending=store.pending()))
            alive = True
        if alive:
            ingest.ingest(r[None])  # live: held back after the hole
            q.acknowledge(ingest.gate.last)
        due = q.due(now, after_s=0.5)
        if alive and len(due):
            ingest.ingest(due, resent=True)
            q.acknowledge(ingest.gate.last)
    rec = store.records(dtype=np.float64)
    assert len(q) == 0 and q.resent > 0
    keys = list(zip(rec.episode.tolist(), rec.step.tolist()))
    assert keys == [(e, k) for e in (0, 1) for k in range(10)]  # every one, once, in order
    assert rec.batch.done.sum() == 2
    np.testing.assert_array_equal(rec.batch.next_obs[:9], rec.batch.obs[1:10])
    assert ingest.assembler.dropped_gaps == ingest.assembler.dropped_breaks == 0
    # Resending everything again stores nothing new.
    again = ingest.ingest(np.stack(produced), resent=True)
    assert len(again[0]) == 0 and len(store) == 20
    store.close()


def test_two_arms_interleaved_never_pair_across_and_resume_per_arm(tmp_path):
    """Two arms with the same episode and step numbers, rows interleaved tick by tick: each
    arm's transitions pair only its own rows; reopened mid-episode, each arm's pending row and
    last row come back and pairing continues exactly."""
    arms = [episode_rows(0, 6, 1.0), episode_rows(0, 6, 1.0 + 1e-3)]
    store = TransitionStore(str(tmp_path))
    ingests = [ReliableIngest(store, TransitionAssembler(), arm) for arm in (0, 1)]
    for k in range(7):
        if k == 4:  # the buffer restarts in the middle of both episodes
            store.close()
            store = TransitionStore(str(tmp_path))
            ingests = [ReliableIngest(store, TransitionAssembler(pending=store.pending(arm)),
                                      arm) for arm in (0, 1)]
            assert [i.gate.last[:2] for i in ingests] == [(0, 3), (0, 3)]
        for arm in (0, 1):
            ingests[arm].ingest(arms[arm][k][None])
    rec = store.records(dtype=np.float64)
    assert len(rec) == 12 and sorted(rec.arm.tolist()) == [0] * 6 + [1] * 6
    assert store.stats()['transitions_per_arm'] == {'0': 6, '1': 6}
    for arm in (0, 1):
        mine = rec.arm == arm
        states = np.stack([r[3:20] for r in arms[arm]])
        np.testing.assert_array_equal(rec.batch.obs[mine], states[:6])
        np.testing.assert_array_equal(rec.batch.next_obs[mine], states[1:])
        assert rec.step[mine].tolist() == list(range(6))
    assert all(i.assembler.dropped_gaps == i.assembler.dropped_breaks == 0 for i in ingests)
    with pytest.raises(ValueError, match='arm must be >= 0'):
        store.append([], arm=-1)
    store.close()


def test_a_schema_1_store_opens_as_arm_0(tmp_path):
    """A store written before arms existed: its transitions and pending row become arm 0's."""
    import sqlite3
    from mbrl_robot.core.buffer import storage
    store = TransitionStore(str(tmp_path))
    ingest = ReliableIngest(store, TransitionAssembler())
    for r in episode_rows(0, 3, 1.0)[:3]:
        ingest.ingest(r[None])
    pending = store.pending()
    store.close()
    with sqlite3.connect(str(tmp_path / storage.DB_NAME)) as conn:  # back to schema 1
        conn.executescript(
            'CREATE TABLE pending (id INTEGER PRIMARY KEY CHECK (id = 0), row BLOB NOT NULL);'
            'INSERT INTO pending SELECT 0, row FROM arm_pending; DROP TABLE arm_pending;'
            'ALTER TABLE transitions DROP COLUMN arm;'
            "UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    store = TransitionStore(str(tmp_path))
    assert len(store) == 2 and store.records().arm.tolist() == [0, 0]
    np.testing.assert_array_equal(store.pending(0), pending)
    assert store.pending(1) is None and store.stats()['schema_version'] == 2
    store.close()


def test_a_spooled_queue_survives_its_producer_and_the_ack_prunes_it(tmp_path):
    path = str(tmp_path / 'outbox' / 'rows.bin')
    q = UnackedRows(max_rows=4, spool=RowSpool(path, 30))
    rows = episode_rows(0, 5, 10.0)
    for k, r in enumerate(rows[:3]):
        q.add(r, now=float(k))
    q.acknowledge(row_key(rows[2]))  # everything acknowledged: the file back to its header
    assert len(q) == 0 and os.path.getsize(path) == 16
    for k, r in enumerate(rows[3:]):
        q.add(r, now=float(k))
    q.spool.release()  # killed: the kernel closes its files, nothing else happens
    # A new producer starts with the three rows, due at once.
    again = UnackedRows(max_rows=4, spool=RowSpool(path, 30))
    assert again.recovered == 3 and again.counters()['recovered_unacked'] == 3
    np.testing.assert_array_equal(again.due(now=0.0, after_s=1.0), np.stack(rows[3:]))
    assert again.acknowledge(row_key(rows[4])) == 2 and len(again) == 1
    # More than twice max_rows in the file: rewritten with the queue (the oldest dropped).
    for k in range(10):
        again.add(row(1, k, 20.0 + 0.05 * k), now=0.0)
    assert len(again) == 4 and again.dropped == 7 and again.spool.rows_in_file <= 8
    again.spool.release()
    third = UnackedRows(max_rows=4, spool=RowSpool(path, 30))
    assert [row_key(r)[1] for r in third.due(0.0, 1.0)] == [6, 7, 8, 9]


def test_a_torn_or_foreign_spool_says_what_is_wrong_and_keeps_what_it_can(tmp_path):
    path = str(tmp_path / 'rows.bin')
    spool = RowSpool(path, 30)
    assert spool.problem is None and len(spool.loaded) == 0
    for k in range(2):
        spool.append(row(0, k, 0.05 * k))
    spool.release()
    with open(path, 'ab') as f:
        f.write(b'\x00' * 100)  # killed part-way through a row
    torn = RowSpool(path, 30)
    assert 'torn last row (100 of 240 bytes' in torn.problem and len(torn.loaded) == 2
    assert os.path.getsize(path) == 16 + 2 * 240  # the torn bytes gone from the file
    nan = row(0, 2, 0.1)
    nan[1] = np.nan
    torn.append(nan)
    with pytest.raises(ValueError, match='row of 29 values'):
        torn.append(np.zeros(29))
    torn.release()
    nans = RowSpool(path, 30)
    assert '1 rows without a finite episode' in nans.problem
    nans.release()
    wider = RowSpool(path, 31)  # another task's rows: moved aside, kept
    assert 'rows of 30 values, not 31; moved aside to' in wider.problem
    assert len(wider.loaded) == 0 and len(list(tmp_path.glob('rows.bin.corrupt-*'))) == 1
    wider.release()
    with open(path, 'wb') as f:
        f.write(b'{"not": "rows"}')
    assert 'not a row spool (bad header)' in RowSpool(path, 31).problem
    assert len(list(tmp_path.glob('rows.bin.corrupt-*'))) == 2  # each kept


def test_an_ack_of_the_new_run_clears_the_old_run_a_resend_carried_ahead_of_it(tmp_path):
    """A restarted controller's queue: the old run's recovered rows (episode 0, steps 8-10)
    ahead of the new run's (episode 0 again from step 0, later stamps). The buffer accepts the
    resend in order and acknowledges the new run's step 2: everything queued is stored, and
    nothing comes back to be stored twice."""
    old_run = episode_rows(0, 12, 1.0)[8:11]
    new_run = episode_rows(0, 12, 5.0)[:3]
    path = str(tmp_path / 'rows.bin')
    spool = RowSpool(path, 30)
    for r in old_run:
        spool.append(r)
    spool.release()
    q = UnackedRows(max_rows=100, spool=RowSpool(path, 30))
    for r in new_run:
        q.add(r, now=0.0)
    store = TransitionStore(str(tmp_path / 'store'))
    ingest = ReliableIngest(store, TransitionAssembler())
    ingest.ingest(q.due(now=1.0, after_s=0.5), resent=True)
    assert q.acknowledge(ingest.gate.last) == 6 and len(q) == 0
    assert os.path.getsize(path) == 16
    later = episode_rows(0, 12, 5.0)[3:6]
    for r in later:
        q.add(r, now=2.0)
        ingest.ingest(r[None])
        q.acknowledge(ingest.gate.last)
    assert len(q) == 0
    rec = store.records(dtype=np.float64)
    keys = list(zip(rec.episode.tolist(), rec.step.tolist(), rec.stamp.tolist()))
    assert len(set(keys)) == len(keys) and len(keys) == 2 + 5  # 8->9, 9->10; 0->1 .. 4->5
    store.close()


def test_one_producer_per_spool_and_a_disk_error_goes_on_in_memory(tmp_path, monkeypatch):
    path = str(tmp_path / 'rows.bin')
    first = RowSpool(path, 30)
    with pytest.raises(OSError, match='open in another process'):
        RowSpool(path, 30)
    q = UnackedRows(max_rows=2, spool=first)
    q.add(row(0, 0, 0.0), now=0.0)
    monkeypatch.setattr(os, 'write', lambda fd, data: len(data) // 2)  # the disk fills up
    q.add(row(0, 1, 0.05), now=0.0)
    monkeypatch.undo()
    assert q.spool is None and 'wrote 120 of 240 bytes' in q.spool_error
    assert len(q) == 2 and not os.path.exists(path)  # the stale queue moved aside
    assert len(list(tmp_path.glob('rows.bin.failed-*'))) == 1
    assert q.add(row(0, 2, 0.1), now=0.0) is not None and len(q) == 2  # memory only, bounded
    # The lock went with the failed spool; more recovered rows than max_rows: counted.
    spool = RowSpool(path, 30)
    for k in range(5):
        spool.append(row(1, k, 1.0 + 0.05 * k))
    spool.release()
    big = UnackedRows(max_rows=3, spool=RowSpool(path, 30))
    assert big.recovered == 3 and big.dropped == 2 and big.spool.rows_in_file == 3
