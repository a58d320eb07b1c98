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
"""At-least-once delivery of executed rows, producer and consumer halves (pure logic, no ROS).

The controller keeps every executed row it published in :class:`UnackedRows` until the buffer
acknowledges it, and resends what is still unacknowledged after a while (a buffer that was
killed and restarted missed what was published meanwhile). The buffer passes each row through
:class:`RowGate` before the assembler and, once the rows are committed, acknowledges the last
one it accepted (:attr:`RowGate.last`: ``(episode, step, stamp)``).

A row is identified by ``(episode, step)`` and its ``stamp``. Row ``r`` is *covered* by the
acknowledged row ``L`` when ``(r.episode, r.step) <= (L.episode, L.step)`` and
``r.stamp <= L.stamp``: a resend of something already stored. The stamp keeps a restarted
controller's rows apart from the old ones: it starts the latched episode again at step 0, but
with later stamps (a restarted twin goes back in stamps, but then the episode moves on).

The gate lets a row through when it is the next one after ``L`` (the next step of the same
episode, or step 0 of a later episode after a terminal row), or when it comes in a resend (the
producer's oldest unacknowledged rows are the best there is). A live row after a hole (the rows
in between were published while the buffer was down, or a restarted controller began the
episode again) is held back, not acknowledged, and so is every live row after it until a resend
comes: the resend brings the hole and the rows in order. So nothing is paired across a hole or
across two runs of the controller, and nothing is stored twice.
"""

import collections
import errno
import fcntl
import os
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from mbrl_robot.core.buffer.assembler import HEADER, RowRejected
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM

Key = Tuple[int, int, float]  # episode, step, stamp

NEW, DUPLICATE, HOLE = 'new', 'duplicate', 'hole'


def row_key(row: np.ndarray) -> Optional[Key]:
    """``(episode, step, stamp)`` of an executed row, None when the header is not valid."""
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    if row.size < 3 or not np.isfinite(row[:3]).all():
        return None
    return int(row[0]), int(row[1]), float(row[2])


def covered(key: Key, ack: Optional[Key]) -> bool:
    """True when the row ``key`` is at or before the acknowledged row ``ack``."""
    return ack is not None and key[:2] <= ack[:2] and key[2] <= ack[2]


class RowSpool:
    """The unacknowledged rows on disk: a producer killed and restarted still resends them.

    The file: ``MAGIC``, the row width (int64), then rows of float64, each appended with one
    ``write`` (the page cache keeps what a killed process wrote; no fsync, so not a power cut).
    Acknowledged rows are not erased one by one: a restarted producer loads every row and the
    consumer's latched acknowledgement prunes them (:meth:`UnackedRows.acknowledge`). The file
    is truncated to its header whenever nothing is unacknowledged (the usual case at every
    acknowledgement) and rewritten with the queue when it holds more than ``2 * max_rows``.
    One producer per file: ``<path>.lock`` is held (flock) while the spool is open.

    Args:
        path: the file; created with its folder when missing.
        width: the row width F.

    Attributes:
        loaded: (n, F) rows found in the file at construction, oldest first.
        problem: one line on what was wrong with the file found (a torn last row, a foreign or
            corrupt file moved aside to ``<path>.corrupt-<unix time ns>``), or None.
    """

    MAGIC = b'MBRLROW1'

    def __init__(self, path: str, width: int):
        if width < 1:
            raise ValueError(f'width must be >= 1, got {width}')
        self.path = path
        self.width = int(width)
        self._fd = -1
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock_fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise OSError(errno.EBUSY, f'{path} is open in another process (one producer per '
                                       'outbox)') from None
        self.problems: List[str] = []
        self.loaded = self._load()
        self.rewrite(self.loaded)  # a torn last row or bad rows gone from the file too

    @property
    def problem(self) -> Optional[str]:
        """What was wrong with the file found, in one line, or None."""
        return '; '.join(self.problems) or None

    def _header(self) -> bytes:
        return self.MAGIC + np.int64(self.width).tobytes()

    def _load(self) -> np.ndarray:
        empty = np.zeros((0, self.width))
        if not os.path.exists(self.path):
            return empty
        with open(self.path, 'rb') as f:
            data = f.read()
        head = len(self._header())
        if not data:
            return empty
        if data[:head] != self._header():
            if len(data) < head or not data.startswith(self.MAGIC):
                what = 'not a row spool (bad header)'
            else:
                what = (f'rows of {int(np.frombuffer(data[len(self.MAGIC):head], np.int64)[0])}'
                        f' values, not {self.width}')
            aside = f'{self.path}.corrupt-{time.time_ns()}'
            os.replace(self.path, aside)
            self.problems.append(f'{self.path}: {what}; moved aside to {aside}, starting empty')
            return empty
        body = data[head:]
        size = self.width * 8
        whole = len(body) // size
        if len(body) % size:
            self.problems.append(f'{self.path}: a torn last row ({len(body) % size} of {size} '
                                 'bytes, the writer was killed while writing it) dropped')
        rows = np.frombuffer(body[:whole * size], dtype=np.float64).reshape(whole, self.width)
        keep = np.array([row_key(r) is not None for r in rows], dtype=bool)
        if not keep.all():
            self.problems.append(f'{self.path}: {int((~keep).sum())} rows without a finite '
                                 'episode, step and stamp dropped')
        return rows[keep].copy()

    def append(self, row: np.ndarray) -> None:
        """Write one (F,) row at the end of the file."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        if row.size != self.width:
            raise ValueError(f'row of {row.size} values, the spool holds {self.width}')
        data = row.tobytes()
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: no half row left to shift the rows after it
            os.ftruncate(self._fd, len(self._header()) + self._rows_in_file * len(data))
            raise OSError(errno.ENOSPC, f'{self.path}: wrote {written} of {len(data)} bytes')
        self._rows_in_file += 1

    def rewrite(self, rows: np.ndarray) -> None:
        """Make the file hold exactly ``rows`` (n, F): none, truncated to its header; else
        written aside, then renamed over it."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        if not len(rows) and self._fd >= 0:
            os.ftruncate(self._fd, len(self._header()))
        else:
            tmp = self.path + '.tmp'
            with open(tmp, 'wb') as f:
                f.write(self._header() + rows.tobytes())
            os.replace(tmp, self.path)
            self.close()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._rows_in_file = len(rows)

    @property
    def rows_in_file(self) -> int:
        return self._rows_in_file

    def close(self) -> None:
        """Close the file (the lock is kept: :meth:`release`)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        """Close the file and let another producer open it."""
        self.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class UnackedRows:
    """The producer's bounded queue of executed rows not yet acknowledged.

    The consumer accepts rows in the order they were published (a resend starts at the oldest
    unacknowledged row), so an acknowledgement of a queued row acknowledges every row before it
    in the queue: also the rows of an earlier run of the producer that a resend carried ahead
    of the new run's (a restarted controller starts the episode again at step 0, so the two
    runs' keys do not increase together).

    Args:
        max_rows: most rows kept; beyond it the oldest is dropped (and counted).
        spool: where the queue is also kept on disk (:class:`RowSpool`); its rows from an
            earlier producer start the queue, due for resending at once. None: memory only.
            A disk error turns it off (:attr:`spool_error`); the queue goes on in memory.

    Raises:
        ValueError: max_rows < 1.
    """

    def __init__(self, max_rows: int, spool: Optional[RowSpool] = None):
        if max_rows < 1:
            raise ValueError(f'max_rows must be >= 1, got {max_rows}')
        self.max_rows = int(max_rows)
        self._rows: Deque[Tuple[Key, np.ndarray, float]] = collections.deque()
        self.ack: Optional[Key] = None
        self.dropped = 0
        self.acked = 0
        self.resent = 0
        self.spool = spool
        self.spool_error: Optional[str] = None
        if spool is not None:
            for r in spool.loaded[-self.max_rows:]:
                self._rows.append((row_key(r), r.copy(), float('-inf')))
            self.dropped = len(spool.loaded) - len(self._rows)
            if self.dropped:
                self._spool_io(spool.rewrite, self._stacked())
        self.recovered = len(self._rows)

    def _stacked(self) -> np.ndarray:
        width = self.spool.width if self.spool is not None else 0
        return (np.stack([r[1] for r in self._rows]) if self._rows
                else np.zeros((0, width)))

    def _spool_io(self, fn, *args) -> None:
        """``fn(*args)`` on the spool; an OSError turns the spool off (the file moved aside when
        it can be, so a later producer does not resend a stale queue)."""
        if self.spool is None:
            return
        try:
            fn(*args)
        except OSError as e:
            spool, self.spool = self.spool, None
            self.spool_error = f'{spool.path}: {e.strerror or e}'
            spool.release()
            try:
                os.replace(spool.path, f'{spool.path}.failed-{time.time_ns()}')
            except OSError:
                pass

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: np.ndarray, now: float) -> Optional[np.ndarray]:
        """Keep ``row`` (F,), published at ``now`` (s); returns the row dropped to make room."""
        key = row_key(row)
        if key is None:
            raise ValueError('executed row without a finite episode, step and stamp')
        self._rows.append((key, np.array(row, dtype=np.float64), float(now)))
        dropped = None
        if len(self._rows) > self.max_rows:
            self.dropped += 1
            dropped = self._rows.popleft()[1]
        self._spool_io(self.spool.append if self.spool else None, row)
        if dropped is not None:
            self._compact()
        return dropped

    def _compact(self):
        """Keep the spool's file near the queue: empty with it, rewritten when twice as long."""
        if self.spool is not None and (
                (not self._rows and self.spool.rows_in_file)
                or self.spool.rows_in_file > 2 * self.max_rows):
            self._spool_io(self.spool.rewrite, self._stacked())

    def acknowledge(self, ack: Key) -> int:
        """Forget the queued rows up to the last one equal to ``ack`` and every row covered by
        it (an acknowledgement of a row no longer queued, e.g. latched from before a restart);
        returns how many."""
        self.ack = (int(ack[0]), int(ack[1]), float(ack[2]))
        rows = list(self._rows)
        last = max((i for i, r in enumerate(rows) if r[0] == self.ack), default=-1)
        keep = collections.deque(r for r in rows[last + 1:] if not covered(r[0], self.ack))
        n = len(self._rows) - len(keep)
        self._rows = keep
        self.acked += n
        if n:
            self._compact()
        return n

    def due(self, now: float, after_s: float) -> np.ndarray:
        """Every unacknowledged row, oldest first, when the oldest was (re)sent ``after_s`` or
        more before ``now``; those rows count as sent at ``now``.

        Returns:
            (n, F) rows, n = 0 when nothing is due.
        """
        if not self._rows or now - self._rows[0][2] < after_s:
            return np.zeros((0, 0))
        rows = np.stack([r[1] for r in self._rows])
        self._rows = collections.deque((k, r, now) for k, r, _ in self._rows)
        self.resent += len(rows)
        return rows

    def counters(self) -> Dict[str, int]:
        """unacked, acked, resent and dropped rows since construction, and the rows recovered
        from the spool at construction."""
        return {'unacked': len(self._rows), 'acked': self.acked, 'resent': self.resent,
                'dropped_unacked': self.dropped, 'recovered_unacked': self.recovered}


class RowGate:
    """The consumer's filter in front of the assembler (see the module docstring).

    Args:
        last: the last accepted row ``(episode, step, stamp, terminal)`` saved by an earlier
            gate (:attr:`state`), or None.
        state_dim: S of the rows (the action, all NaN on a terminal row, follows s).
        action_dim: A.
    """

    def __init__(self, last: Optional[Tuple[int, int, float, bool]] = None,
                 state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM):
        self._a = slice(HEADER + state_dim, HEADER + state_dim + action_dim)
        self._last: Optional[Key] = None
        self._terminal = False
        if last is not None:
            self._last = (int(last[0]), int(last[1]), float(last[2]))
            self._terminal = bool(last[3])
        self.duplicates = 0
        self.held_back = 0
        self._holding = False

    @property
    def last(self) -> Optional[Key]:
        """``(episode, step, stamp)`` of the last accepted row: what to acknowledge."""
        return self._last

    @property
    def state(self) -> Optional[Tuple[int, int, float, bool]]:
        """What a new gate needs to carry on (``last`` plus whether that row was terminal)."""
        return None if self._last is None else (*self._last, self._terminal)

    def check(self, row: np.ndarray, resent: bool = False) -> str:
        """``NEW`` (feed it to the assembler, then :meth:`accept`), ``DUPLICATE`` (already
        stored: drop it) or ``HOLE`` (a live row after missing rows: drop it, the resend brings
        it back in order). Counted."""
        key = row_key(row)
        if resent:
            self._holding = False  # the resend starts at the producer's oldest unacked row
        if key is None or self._last is None:
            return NEW
        if covered(key, self._last):
            self.duplicates += 1
            return DUPLICATE
        episode, step, _ = self._last
        nxt = ((key[0] == episode and key[1] == step + 1)
               or (self._terminal and key[0] > episode and key[1] == 0))
        if resent or (nxt and not self._holding):
            return NEW
        self._holding = True
        self.held_back += 1
        return HOLE

    def accept(self, row: np.ndarray) -> None:
        """Record ``row`` as accepted (it went to the assembler, paired or not)."""
        key = row_key(row)
        if key is not None:
            self._last = key
            self._terminal = bool(np.isnan(np.asarray(row, dtype=np.float64)[self._a]).all())

    def counters(self) -> Dict[str, int]:
        """duplicates and held-back rows since construction."""
        return {'duplicates': self.duplicates, 'held_back': self.held_back}


class ReliableIngest:
    """The buffer's receive path: :class:`RowGate`, then the assembler, then one commit.

    One per arm: an arm's rows go through its own gate and assembler, so two arms' rows are
    never paired, and each arm is acknowledged its own last row.

    Args:
        store: the ``TransitionStore`` (its saved ``last_row`` of ``arm`` seeds the gate).
        assembler: the ``TransitionAssembler`` (the arm's pending row restored from the store).
        arm: index of the arm whose rows this ingests (stored with its transitions).
    """

    def __init__(self, store: Any, assembler: Any, arm: int = 0):
        self.store = store
        self.assembler = assembler
        self.arm = int(arm)
        self.gate = RowGate(store.last_row(self.arm), assembler.state_dim, assembler.action_dim)

    def ingest(self, rows: np.ndarray, resent: bool = False
               ) -> Tuple[np.ndarray, List[Any], List[str]]:
        """Gate, pair and durably store ``rows`` (n, F) from one message.

        Returns:
            ``(seqs, transitions, errors)``: the seqs and transitions committed, and why
            malformed rows were rejected (counted by the assembler; never acknowledged).
        """
        completed: List[Any] = []
        errors: List[str] = []
        for row in rows:
            try:
                row = self.assembler.validate(row)
            except RowRejected as e:
                errors.append(str(e))
                continue
            if self.gate.check(row, resent) == NEW:
                completed.extend(self.assembler.add_row(row))
                self.gate.accept(row)
        seqs = self.store.append(completed, pending=self.assembler.pending,
                                 last_row=self.gate.state, arm=self.arm)
        return seqs, completed, errors
