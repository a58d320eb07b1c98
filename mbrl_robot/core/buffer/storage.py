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
"""Crash-safe transition storage: one SQLite database in WAL mode under ``data_dir``.

File: ``<data_dir>/transitions.sqlite3`` (plus SQLite's ``-wal``/``-shm`` side files). Tables:

- ``transitions(seq INTEGER PRIMARY KEY, episode, step, stamp, next_stamp, obs BLOB, act BLOB,
  reward, next_obs BLOB, done, target BLOB, created, arm)``: vectors are little-endian float64
  blobs, so what the topic and the exports carry is bit-exact what the controller measured;
  ``created`` is the wall time of the insert; ``arm`` the index of the arm the rows came from
  (0 with one arm; the buffer's ``arm_namespaces``). ``seq`` starts at 1 and increases by one
  per transition, over all arms; rows are never deleted, so a seq names one transition forever.
- ``meta(key PRIMARY KEY, value)``: ``schema_version``, ``state_dim``, ``action_dim``,
  ``target_dim``; opening a store with other dims raises ValueError. ``last_row`` (arm 0) and
  ``last_row:<arm>`` (JSON ``[episode, step, stamp, terminal]``) are the last executed row
  accepted from each arm, written with the transitions it completed: what the buffer
  acknowledges to that arm (``reliable.RowGate``).
- ``arm_pending(arm PRIMARY KEY, row BLOB)``: each arm's executed row still waiting for its
  successor, written in the same transaction as the transitions it goes with (see
  ``assembler.py``). Two arms' rows are never paired: each arm has its own gate, assembler
  and pending row.

A store of schema 1 (one arm, ``pending(id = 0, row)``) is migrated when opened: its rows
become arm 0's.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. WAL alone (any synchronous level)
already survives a killed process: a commit is in the WAL file once ``append`` returns. FULL also
fsyncs the WAL on every commit, so the last transitions survive a power cut or kernel crash too.
That matters here because a seq, once published, is a promise: with NORMAL an OS crash could roll
back the last commits and the restarted buffer would hand the same seqs to different transitions,
silently corrupting a trainer that already holds them. The price is one fsync per control tick:
on the 2-core CI VM one append (1 transition + pending row) took 4.8 ms with FULL vs 0.19 ms
with NORMAL, i.e. 10% of the 50 ms tick at 20 Hz spent waiting on the disk, not the CPU.

Threads: one connection shared under a lock (``check_same_thread=False``), so any executor
thread may call any method; other processes may read the same file concurrently (WAL).
"""

import errno
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from mbrl_robot.core.buffer.assembler import HEADER, Transition
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM, TARGET_DIM
from mbrl_robot.core.types import TransitionBatch

SCHEMA_VERSION = 2
DB_NAME = 'transitions.sqlite3'
_F64 = np.dtype('<f8')

_SCHEMA = '''
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY,
    episode INTEGER NOT NULL,
    step INTEGER NOT NULL,
    stamp REAL NOT NULL,
    next_stamp REAL NOT NULL,
    obs BLOB NOT NULL,
    act BLOB NOT NULL,
    reward REAL NOT NULL,
    next_obs BLOB NOT NULL,
    done INTEGER NOT NULL,
    target BLOB NOT NULL,
    created REAL NOT NULL,
    arm INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS arm_pending (arm INTEGER PRIMARY KEY, row BLOB NOT NULL);
'''

_COLUMNS = ('seq, episode, step, stamp, next_stamp, obs, act, reward, next_obs, done, target, '
            'created, arm')


def _last_row_key(arm: int) -> str:
    return 'last_row' if int(arm) == 0 else f'last_row:{int(arm)}'


@dataclass
class TransitionRecords:
    """Stored transitions with their bookkeeping columns.

    Attributes:
        seq: (N,) int64 sequence numbers, increasing.
        episode: (N,) int64 episode indices.
        step: (N,) int64 step of s.
        stamp: (N,) float64 stamp (s) of s.
        next_stamp: (N,) float64 stamp (s) of s'.
        target: (N, T) float64 targets.
        created: (N,) float64 wall time of the insert.
        batch: the transitions (dtype chosen by the caller).
        arm: (N,) int64 index of the arm each transition came from.
    """

    seq: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    stamp: np.ndarray
    next_stamp: np.ndarray
    target: np.ndarray
    created: np.ndarray
    batch: TransitionBatch
    arm: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)


def _blob(x: np.ndarray, size: int, name: str) -> bytes:
    x = np.asarray(x, dtype=_F64)
    if x.shape != (size,):
        raise ValueError(f'{name} must have shape ({size},), got {x.shape}')
    return x.tobytes()


class TransitionStore:
    """Append-only, crash-safe store of transitions.

    Args:
        data_dir: directory of the database (created if missing).
        state_dim: S, checked against the stored value.
        action_dim: A, checked against the stored value.
        target_dim: T, checked against the stored value.

    Raises:
        ValueError: the store on disk was made with other dims or another schema version, or
            is not an SQLite database (damaged; it is left as it is).
    """

    def __init__(self, data_dir: str, state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM,
                 target_dim: int = TARGET_DIM):
        self._layout(data_dir, state_dim, action_dim, target_dim, read_only=False)
        os.makedirs(self.data_dir, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, nothing implicit.
        self._conn: Optional[sqlite3.Connection] = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            mode = self._conn.execute('PRAGMA journal_mode=WAL').fetchone()[0]
            if mode.lower() != 'wal':
                raise ValueError(f'{self.path}: cannot enable WAL mode (got {mode!r})')
            self._conn.execute('PRAGMA synchronous=FULL')
            self._migrate_v1()
            self._conn.executescript(_SCHEMA)
            self._check_meta()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            self._conn = None
            # Not a database (nothing was written to it); a locked store, a full disk or an I/O
            # error stay what they are (a restart may succeed).
            if getattr(e, 'sqlite_errorname', '') not in ('SQLITE_NOTADB', 'SQLITE_CORRUPT'):
                raise
            raise ValueError(f'{self.path}: cannot open the transition store ({e}); it is left '
                             'as it is: move it away to start an empty one') from None
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    @classmethod
    def open_read_only(cls, data_dir: str, state_dim: int = STATE_DIM,
                       action_dim: int = ACTION_DIM,
                       target_dim: int = TARGET_DIM) -> 'TransitionStore':
        """The store for reading only (a report of a run): nothing is created, migrated or
        written, whatever the file holds.

        Raises:
            FileNotFoundError: there is no store in ``data_dir``.
            ValueError: not a transition store of these dims and schema version.
        """
        self = cls.__new__(cls)
        self._layout(data_dir, state_dim, action_dim, target_dim, read_only=True)
        self._conn = None
        if not os.path.isfile(self.path):
            raise FileNotFoundError(errno.ENOENT, 'no transition store', self.path)
        self._conn = sqlite3.connect(f'file:{urllib.parse.quote(self.path)}?mode=ro', uri=True,
                                     timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            have = dict(self._conn.execute('SELECT key, value FROM meta').fetchall())
            want = self._wanted_meta()
            if have.get('schema_version') == '1':
                raise ValueError(f'{self.path}: a schema-1 store (one arm), read only after its '
                                 'migration: open it once with the buffer node or '
                                 'TransitionStore(data_dir)')
            if have != {**have, **want}:
                raise ValueError(f'{self.path}: a store of {have}, not {want}')
        except sqlite3.DatabaseError as e:
            self.close()
            raise ValueError(f'{self.path}: not a readable transition store ({e})') from None
        except BaseException:
            self.close()
            raise
        return self

    # -- setup ------------------------------------------------------------------------------

    def _layout(self, data_dir: str, state_dim: int, action_dim: int, target_dim: int,
                read_only: bool) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.path = os.path.join(self.data_dir, DB_NAME)
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.target_dim = int(target_dim)
        self.row_size = HEADER + self.state_dim + self.action_dim + self.target_dim
        self._lock = threading.RLock()
        self._read_only = read_only

    def _wanted_meta(self) -> Dict[str, str]:
        """The meta table this store's schema version and dims must have."""
        return {'schema_version': str(SCHEMA_VERSION), 'state_dim': str(self.state_dim),
                'action_dim': str(self.action_dim), 'target_dim': str(self.target_dim)}

    def _migrate_v1(self) -> None:
        """A schema-1 store (one arm): add the ``arm`` column, move its pending row to arm 0."""
        conn = self._db()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if 'pending' not in tables:
            return
        conn.execute('BEGIN IMMEDIATE')
        try:
            conn.execute('ALTER TABLE transitions ADD COLUMN arm INTEGER NOT NULL DEFAULT 0')
            conn.execute('CREATE TABLE arm_pending (arm INTEGER PRIMARY KEY, row BLOB NOT NULL)')
            conn.execute('INSERT INTO arm_pending (arm, row) SELECT 0, row FROM pending')
            conn.execute('DROP TABLE pending')
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value = '1'",
                         (str(SCHEMA_VERSION),))
            conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                conn.execute('ROLLBACK')
            raise

    def _check_meta(self) -> None:
        want = self._wanted_meta()
        conn = self._db()
        conn.execute('BEGIN IMMEDIATE')
        try:
            have = dict(conn.execute('SELECT key, value FROM meta').fetchall())
            if not have:
                conn.executemany('INSERT INTO meta (key, value) VALUES (?, ?)', want.items())
            else:
                diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
                if diff:
                    raise ValueError(
                        f'{self.path} was made with ' + ', '.join(
                            f'{k}={a}' for k, (a, _) in diff.items())
                        + '; this store was opened with ' + ', '.join(
                            f'{k}={b}' for k, (_, b) in diff.items()))
            conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                conn.execute('ROLLBACK')
            raise

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f'TransitionStore({self.data_dir}) is closed')
        return self._conn

    # -- writing ----------------------------------------------------------------------------

    def append(self, transitions: Sequence[Transition],
               pending: Any = ..., last_row: Optional[Sequence[Any]] = None,
               arm: int = 0) -> np.ndarray:
        """Store one arm's transitions in one transaction; durable once this returns.

        Args:
            transitions: completed transitions (``assembler.Transition``), in order.
            pending: the arm's pending row to save in the same transaction: an (F,) array,
                None to clear it, or omitted (``...``) to leave it unchanged.
            last_row: ``(episode, step, stamp, terminal)`` of the last executed row accepted
                from the arm, saved in the same transaction (None: unchanged).
            arm: index of the arm the rows came from (>= 0).

        Returns:
            (N,) int64 seqs given to the transitions, consecutive.

        Raises:
            ValueError: a transition has the wrong shapes or a non-finite value; nothing of the
                call is stored.
        """
        arm = int(arm)
        if arm < 0:
            raise ValueError(f'arm must be >= 0, got {arm}')
        now = time.time()
        values = []
        for tr in transitions:
            if not np.isfinite(tr.reward):
                raise ValueError(f'non-finite reward {tr.reward} (episode {tr.episode}, '
                                 f'step {tr.step})')
            obs = _blob(tr.obs, self.state_dim, 'obs')
            act = _blob(tr.act, self.action_dim, 'act')
            next_obs = _blob(tr.next_obs, self.state_dim, 'next_obs')
            target = _blob(tr.target, self.target_dim, 'target')
            for name, blob in (('obs', obs), ('act', act), ('next_obs', next_obs),
                               ('target', target)):
                if not np.isfinite(np.frombuffer(blob, _F64)).all():
                    raise ValueError(f'non-finite {name} (episode {tr.episode}, step {tr.step})')
            values.append([int(tr.episode), int(tr.step), float(tr.stamp), float(tr.next_stamp),
                           obs, act, float(tr.reward), next_obs, int(bool(tr.done)), target, now,
                           arm])
        pending_blob = None
        if pending is not ... and pending is not None:
            pending = np.asarray(pending, dtype=_F64)
            if pending.shape != (self.row_size,):
                raise ValueError(f'pending row must have shape ({self.row_size},), '
                                 f'got {pending.shape}')
            pending_blob = pending.tobytes()
        with self._lock:
            conn = self._db()
            conn.execute('BEGIN IMMEDIATE')
            try:
                first = conn.execute('SELECT COALESCE(MAX(seq), 0) FROM transitions'
                                     ).fetchone()[0] + 1
                seqs = np.arange(first, first + len(values), dtype=np.int64)
                conn.executemany(f'INSERT INTO transitions ({_COLUMNS}) '
                                 'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                                 ([int(s)] + v for s, v in zip(seqs, values)))
                if last_row is not None:
                    conn.execute('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)',
                                 (_last_row_key(arm), json.dumps(
                                     [int(last_row[0]), int(last_row[1]), float(last_row[2]),
                                      bool(last_row[3])])))
                if pending is not ...:
                    conn.execute('DELETE FROM arm_pending WHERE arm = ?', (arm,))
                    if pending_blob is not None:
                        conn.execute('INSERT INTO arm_pending (arm, row) VALUES (?, ?)',
                                     (arm, pending_blob))
                conn.execute('COMMIT')
            except BaseException:
                if conn.in_transaction:
                    conn.execute('ROLLBACK')
                raise
        return seqs

    def pending(self, arm: int = 0) -> Optional[np.ndarray]:
        """The arm's saved pending row (F,) float64, or None."""
        with self._lock:
            got = self._db().execute('SELECT row FROM arm_pending WHERE arm = ?',
                                     (int(arm),)).fetchone()
        return None if got is None else np.frombuffer(got[0], _F64).copy()

    def last_row(self, arm: int = 0) -> Optional[Tuple[int, int, float, bool]]:
        """The saved ``(episode, step, stamp, terminal)`` of the arm's last accepted row, or
        None."""
        with self._lock:
            got = self._db().execute('SELECT value FROM meta WHERE key = ?',
                                     (_last_row_key(arm),)).fetchone()
        if got is None:
            return None
        e, k, stamp, terminal = json.loads(got[0])
        return int(e), int(k), float(stamp), bool(terminal)

    # -- reading ----------------------------------------------------------------------------

    def records(self, after_seq: int = 0, limit: Optional[int] = None,
                dtype: Any = np.float32) -> TransitionRecords:
        """Transitions with ``seq > after_seq``, oldest first, with their bookkeeping.

        Args:
            after_seq: only seqs strictly greater than this (0 = from the start).
            limit: at most this many (None = all).
            dtype: float dtype of the batch arrays (float32 for training, float64 exact).

        Raises:
            ValueError: a negative limit.
        """
        if limit is not None and limit < 0:
            raise ValueError(f'limit must be >= 0, got {limit}')
        sql = f'SELECT {_COLUMNS} FROM transitions WHERE seq > ? ORDER BY seq'
        args: Tuple[int, ...] = (int(after_seq),)
        if limit is not None:
            sql += ' LIMIT ?'
            args += (int(limit),)
        with self._lock:
            rows = self._db().execute(sql, args).fetchall()
        n = len(rows)
        cols = list(zip(*rows)) if n else [()] * 13

        def vec(i: int, size: int) -> np.ndarray:
            return np.frombuffer(b''.join(cols[i]), _F64).reshape(n, size).astype(dtype)

        batch = TransitionBatch(obs=vec(5, self.state_dim), act=vec(6, self.action_dim),
                                next_obs=vec(8, self.state_dim),
                                reward=np.asarray(cols[7], dtype=dtype).reshape(n),
                                done=np.asarray(cols[9], dtype=bool).reshape(n))
        return TransitionRecords(
            seq=np.asarray(cols[0], dtype=np.int64).reshape(n),
            episode=np.asarray(cols[1], dtype=np.int64).reshape(n),
            step=np.asarray(cols[2], dtype=np.int64).reshape(n),
            stamp=np.asarray(cols[3], dtype=np.float64).reshape(n),
            next_stamp=np.asarray(cols[4], dtype=np.float64).reshape(n),
            target=np.frombuffer(b''.join(cols[10]), _F64).reshape(n, self.target_dim).copy(),
            created=np.asarray(cols[11], dtype=np.float64).reshape(n), batch=batch,
            arm=np.asarray(cols[12], dtype=np.int64).reshape(n))

    def since(self, seq: int = 0, limit: Optional[int] = None,
              dtype: Any = np.float32) -> Tuple[np.ndarray, TransitionBatch]:
        """Transitions with seq strictly greater than ``seq``: ``(seqs (N,), batch)``.

        ``since(0)`` is everything; a consumer that holds up to ``last`` calls ``since(last)``.
        """
        rec = self.records(seq, limit, dtype)
        return rec.seq, rec.batch

    def all(self, dtype: Any = np.float32) -> TransitionBatch:
        """Every stored transition, in seq order (float32 by default, like TransitionBatch)."""
        return self.records(0, None, dtype).batch

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute('SELECT COUNT(*) FROM transitions').fetchone()[0])

    @property
    def last_seq(self) -> int:
        """Highest seq stored, 0 when empty."""
        with self._lock:
            return int(self._db().execute('SELECT COALESCE(MAX(seq), 0) FROM transitions'
                                          ).fetchone()[0])

    def stats(self) -> Dict[str, Any]:
        """Summary for ``/buffer/stats``: counts, rewards, dims, file size (JSON-ready)."""
        with self._lock:
            conn = self._db()
            n, episodes, done, last, mean_r, min_r, max_r, first_t, last_t = conn.execute(
                'SELECT COUNT(*), COUNT(DISTINCT episode), COALESCE(SUM(done), 0), '
                'COALESCE(MAX(seq), 0), AVG(reward), MIN(reward), MAX(reward), MIN(created), '
                'MAX(created) FROM transitions').fetchone()
            final_r = conn.execute('SELECT AVG(reward) FROM transitions WHERE done = 1'
                                   ).fetchone()[0]
            has_pending = conn.execute('SELECT COUNT(*) FROM arm_pending').fetchone()[0] > 0
            per_arm = conn.execute('SELECT arm, COUNT(*) FROM transitions GROUP BY arm'
                                   ).fetchall()
        size = sum(os.path.getsize(self.path + ext) for ext in ('', '-wal')
                   if os.path.exists(self.path + ext))
        return {'transitions': int(n), 'episodes': int(episodes), 'episodes_done': int(done),
                'last_seq': int(last), 'mean_reward': mean_r, 'min_reward': min_r,
                'max_reward': max_r, 'mean_final_reward': final_r,
                'first_created': first_t, 'last_created': last_t, 'pending_row': has_pending,
                'transitions_per_arm': {str(a): int(c) for a, c in per_arm},
                'state_dim': self.state_dim, 'action_dim': self.action_dim,
                'target_dim': self.target_dim, 'schema_version': SCHEMA_VERSION,
                'path': self.path, 'bytes': size}

    # -- export and lifetime ----------------------------------------------------------------

    def export_npz(self, path: str) -> str:
        """Write every transition to ``path`` (.npz, float64, atomically) and return the path.

        Keys: obs (N, S), act (N, A), next_obs (N, S), reward (N,), done (N,), seq, episode,
        step, stamp, next_stamp, arm (N,), target (N, T), and meta (a JSON string of the dims).
        """
        rec = self.records(0, None, np.float64)
        if not path.endswith('.npz'):
            path += '.npz'
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp.npz'
        meta = json.dumps({'state_dim': self.state_dim, 'action_dim': self.action_dim,
                           'target_dim': self.target_dim, 'schema_version': SCHEMA_VERSION})
        np.savez(tmp, obs=rec.batch.obs, act=rec.batch.act, next_obs=rec.batch.next_obs,
                 reward=rec.batch.reward, done=rec.batch.done, seq=rec.seq,
                 episode=rec.episode, step=rec.step, stamp=rec.stamp,
                 next_stamp=rec.next_stamp, arm=rec.arm, target=rec.target,
                 meta=np.array(meta))
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        """Checkpoint the WAL into the database and close; further calls raise ValueError."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if not self._read_only:
                    self._conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
            finally:
                self._conn.close()
                self._conn = None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._conn is None

    def __enter__(self) -> 'TransitionStore':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
