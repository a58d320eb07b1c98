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
"""Message <-> numpy conversions and QoS profiles shared by the nodes (``docs/interfaces.md``).

Row layouts (float64, one row per tick or per transition):

- executed row, ``/controller/executed``: ``[episode, step, stamp_s, s (17), a (7), target (3)]``
  (30 fields), ``a`` all-NaN on the terminal row; rows the buffer has not acknowledged on
  ``buffer/executed_ack`` (``[episode, step, stamp]`` of the last row stored, transient local)
  are published again in one message labelled ``resent``/``fields``;
- transition row, ``/buffer/transitions``: ``[seq, episode, step, s (17), a (7), r, s' (17),
  done, target (3), arm]`` (50 fields): the target lets a trainer recompute any goal-conditioned
  reward or observation (MBPO's policy sees ``target - puck``); ``arm`` is the index of the arm
  the rows came from (in the buffer's ``arm_namespaces``; 0 with one arm).

Both travel as ``std_msgs/Float64MultiArray`` with a 2-D layout, dim[0] the rows and dim[1] the
fields (labels ``rows``/``fields`` for executed rows, ``transitions``/``fields`` for
transitions). The data array is filled with ``array.array`` from the numpy buffer (about 100x
faster than assigning a numpy array, which rclpy copies element by element) and read back with
``np.frombuffer``.
"""

import array
import re
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt8MultiArray

from mbrl_robot.core.buffer.assembler import header_problem, HEADER, MAX_INDEX
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM, TARGET_DIM
from mbrl_robot.core.transfer import (CHUNK_BYTES, decode_header, encode_header, pack_dir,
                                      TransferRejected)
from mbrl_robot.core.types import TransitionBatch

# Controller -> buffer, one row per tick: deep enough for ~50 s at 20 Hz of a stalled reader.
EXECUTED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                          depth=1000, durability=DurabilityPolicy.VOLATILE)
# Buffer -> trainer batches; a trainer that misses some asks again with /buffer/resend_from.
TRANSITIONS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST, depth=100,
                             durability=DurabilityPolicy.VOLATILE)
# Latest value for late joiners: /target/pose, /recipe/episode, /trainer/model.
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The trainer's ~/loss, one message per epoch: its last 200 (a fit at the default max_epochs,
# or the last few short fits, each counting from epoch 1) stay with the trainer, so a live view
# that starts after a fit still plots it.
LOSS_HISTORY = 200
LOSS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      depth=LOSS_HISTORY, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Checkpoint files (/trainer/model_files): every chunk of the last versions stays with the
# trainer for late joiners (64 chunks of at most 1 MiB: a lecture-size version is 16).
FILES_HISTORY = 64
FILES_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                       depth=FILES_HISTORY, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Plain requests (/buffer/resend_from, /controller/episode_done).
RELIABLE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST, depth=10,
                          durability=DurabilityPolicy.VOLATILE)

EXECUTED_FIELDS = HEADER + STATE_DIM + ACTION_DIM + TARGET_DIM
EXECUTED_LABELS = ('rows', 'fields')
# Rows the controller publishes again because the buffer has not acknowledged them.
RESENT_LABELS = ('resent', 'fields')
TRANSITION_LABELS = ('transitions', 'fields')
# The label of a lockstep command's one dimension: the stamp (ns) of the state it answers.
ANSWERS_LABEL = 'answers_state_ns'


_NAMESPACE = re.compile(r'^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')


def check_arm_namespaces(namespaces: Sequence[str]) -> list:
    """The ``arm_namespaces`` parameter, checked: each '' (this node's namespace) or a ROS
    namespace such as ``arm0`` or ``lab/left``.

    Raises:
        ValueError: naming the bad entry.
    """
    for ns in namespaces:
        if ns and not _NAMESPACE.match(ns):
            raise ValueError(f'arm_namespaces: {ns!r} is not a ROS namespace (letters, digits '
                             'and _, parts separated by /, not starting with a digit)')
    return list(namespaces)


def arm_topic(namespace: str, name: str) -> str:
    """``name`` (a relative topic or service of an arm's node) seen from outside the arm:
    ``arm_topic('arm0', 'controller/executed') == 'arm0/controller/executed'``; absolute names
    and the '' namespace leave it unchanged."""
    if not namespace or name.startswith('/'):
        return name
    return f'{namespace.rstrip("/")}/{name}'


def transition_fields(state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM,
                      target_dim: int = TARGET_DIM) -> int:
    """Fields of a transition row: ``3 + S + A + 1 + S + 1 + T + 1``."""
    return 3 + 2 * state_dim + action_dim + 2 + target_dim + 1


TRANSITION_FIELDS = transition_fields()


class TransitionRows(NamedTuple):
    """Parsed transition rows (see :func:`parse_transition_rows`)."""

    seqs: np.ndarray
    episodes: np.ndarray
    steps: np.ndarray
    batch: TransitionBatch
    targets: np.ndarray
    arms: np.ndarray


class ExecutedRow(NamedTuple):
    """One parsed executed row (see :func:`parse_executed_row`)."""

    episode: int
    step: int
    stamp: float
    s: np.ndarray
    a: np.ndarray
    target: np.ndarray
    terminal: bool


def rows_to_multiarray(rows: np.ndarray,
                       labels: Tuple[str, str] = TRANSITION_LABELS) -> Float64MultiArray:
    """Pack rows into a Float64MultiArray with a 2-D layout.

    Args:
        rows: (n, F) numbers (n may be 0).
        labels: labels of dim[0] and dim[1].

    Returns:
        The message: ``layout.dim = [(labels[0], n, n*F), (labels[1], F, F)]``, offset 0.

    Raises:
        ValueError: rows is not 2-D.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f'rows must be (n, F), got shape {rows.shape}')
    n, f = rows.shape
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=labels[0], size=n, stride=n * f),
                      MultiArrayDimension(label=labels[1], size=f, stride=f)]
    msg.layout.data_offset = 0
    data = array.array('d')
    data.frombytes(rows.tobytes())
    msg.data = data
    return msg


def multiarray_to_rows(msg: Float64MultiArray, fields: Optional[int] = None,
                       labels: Optional[Tuple[str, str]] = None) -> np.ndarray:
    """Unpack a Float64MultiArray into rows, validating its layout.

    A 2-D layout gives (n, F) rows. A message with no layout dims, or one dim that covers all the
    data, is read as a single row (what a plain ``Float64MultiArray(data=[...])`` carries).

    Args:
        msg: the message.
        fields: required F, or None to accept any.
        labels: required dim labels, or None to accept any.

    Returns:
        (n, F) float64 array (a copy).

    Raises:
        ValueError: offset, sizes or strides inconsistent with the data, more than 2 dims, or
            the fields/labels differ from the ones required.
    """
    data = np.frombuffer(msg.data, dtype=np.float64) if len(msg.data) else np.zeros(0)
    dims = list(msg.layout.dim)
    if msg.layout.data_offset != 0:
        raise ValueError(f'data_offset must be 0, got {msg.layout.data_offset}')
    if len(dims) == 0 or (len(dims) == 1 and dims[0].size == len(data)):
        if len(dims) == 1 and dims[0].stride not in (0, len(data)):
            raise ValueError(f'1-D layout stride {dims[0].stride} != size {len(data)}')
        rows = data.reshape(1, len(data))
    elif len(dims) == 2:
        n, f = dims[0].size, dims[1].size
        if n * f != len(data) or (f == 0 and n > 0):
            # The second: 4e9 rows of no field would match an empty message.
            raise ValueError(f'layout {n}x{f} does not match {len(data)} data values')
        if dims[1].stride != f or dims[0].stride != n * f:
            raise ValueError(f'strides ({dims[0].stride}, {dims[1].stride}) are not row-major '
                             f'for {n}x{f}')
        if labels is not None and (dims[0].label, dims[1].label) != tuple(labels):
            raise ValueError(f'labels ({dims[0].label!r}, {dims[1].label!r}) != {tuple(labels)}')
        rows = data.reshape(n, f)
    else:
        raise ValueError(f'expected a 2-D layout, got {len(dims)} dims of sizes '
                         f'{[d.size for d in dims]} for {len(data)} values')
    if fields is not None and rows.shape[1] != fields:
        raise ValueError(f'expected {fields} fields per row, got {rows.shape[1]}')
    return rows.copy()


def is_resend(msg: Float64MultiArray) -> bool:
    """True for executed rows published again (dim[0] labelled ``resent``)."""
    return len(msg.layout.dim) == 2 and msg.layout.dim[0].label == RESENT_LABELS[0]


def command_message(command: np.ndarray,
                    answers_ns: Optional[int] = None) -> Float64MultiArray:
    """A joint-velocity command (rad/s); with ``answers_ns`` its one dimension is labelled with
    the stamp (ns) of the state it answers, so a lockstep twin steps once per state however often
    the command arrives (:func:`answered_state_ns`). Other subscribers (ros2_control's forward
    command controllers) read only the data."""
    msg = Float64MultiArray(data=np.asarray(command, float).tolist())
    if answers_ns is not None:
        n = len(msg.data)
        msg.layout.dim = [MultiArrayDimension(label=f'{ANSWERS_LABEL}={int(answers_ns)}',
                                              size=n, stride=n)]
    return msg


def answered_state_ns(msg: Float64MultiArray) -> Optional[int]:
    """The state stamp (ns) a command answers (:func:`command_message`), or None: unlabelled
    (or a label that is not one of ours)."""
    dims = msg.layout.dim
    if len(dims) != 1 or not dims[0].label.startswith(ANSWERS_LABEL + '='):
        return None
    try:
        return int(dims[0].label[len(ANSWERS_LABEL) + 1:])
    except ValueError:
        return None


def executed_row(episode: int, step: int, stamp: float, s: np.ndarray,
                 a: Optional[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Build one ``/controller/executed`` row.

    Args:
        episode: episode index (>= 0).
        step: step in the episode (>= 0).
        stamp: time of the measurement of s, seconds.
        s: (17,) state.
        a: (7,) action applied from s, or None on the terminal row (written as NaN).
        target: (3,) target in force.

    Returns:
        (30,) float64 row.

    Raises:
        ValueError: wrong shapes or a negative episode/step.
    """
    if episode < 0 or step < 0:
        raise ValueError(f'episode and step must be >= 0, got {episode}, {step}')
    row = np.empty(EXECUTED_FIELDS, dtype=np.float64)
    row[:HEADER] = (episode, step, stamp)
    parts = ((s, STATE_DIM, 's'), (np.full(ACTION_DIM, np.nan) if a is None else a, ACTION_DIM,
                                   'a'), (target, TARGET_DIM, 'target'))
    i = HEADER
    for value, size, name in parts:
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (size,):
            raise ValueError(f'{name} must have shape ({size},), got {value.shape}')
        row[i:i + size] = value
        i += size
    return row


def parse_executed_row(row: np.ndarray) -> ExecutedRow:
    """Inverse of :func:`executed_row` (no semantic checks: the assembler does those).

    Raises:
        ValueError: not a (30,) row, or a header outside the bounds every row keeps
            (``core.buffer.assembler.header_problem``).
    """
    row = np.asarray(row, dtype=np.float64)
    if row.shape != (EXECUTED_FIELDS,):
        raise ValueError(f'executed row must have shape ({EXECUTED_FIELDS},), got {row.shape}')
    problem = header_problem(*row[:HEADER])
    if problem:
        raise ValueError(problem)
    s_end = HEADER + STATE_DIM
    a_end = s_end + ACTION_DIM
    a = row[s_end:a_end].copy()
    return ExecutedRow(episode=int(row[0]), step=int(row[1]), stamp=float(row[2]),
                       s=row[HEADER:s_end].copy(), a=a, target=row[a_end:].copy(),
                       terminal=bool(np.isnan(a).all()))


def transition_rows(seqs: Sequence[int], episodes: Sequence[int], steps: Sequence[int],
                    batch: TransitionBatch, targets: np.ndarray,
                    arms: Optional[Sequence[int]] = None) -> np.ndarray:
    """Lay transitions out as ``/buffer/transitions`` rows.

    Args:
        seqs: (n,) sequence numbers.
        episodes: (n,) episode indices.
        steps: (n,) steps of s.
        batch: n transitions, obs/next_obs (n, S), act (n, A), reward (n,), done (n,).
        targets: (n, T) target in force when each action was taken.
        arms: (n,) index of each transition's arm (None: all 0).

    Returns:
        (n, 3 + 2S + A + 2 + T + 1) float64 rows
        ``[seq, episode, step, s, a, r, s', done, target, arm]``.

    Raises:
        ValueError: lengths differ.
    """
    n = len(batch)
    arms = np.zeros(n) if arms is None else arms
    for name, v in (('seqs', seqs), ('episodes', episodes), ('steps', steps),
                    ('targets', targets), ('arms', arms)):
        if len(v) != n:
            raise ValueError(f'{name} has {len(v)} entries, batch has {n}')
    obs = np.asarray(batch.obs).reshape(n, -1)
    act = np.asarray(batch.act).reshape(n, -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(n, -1)
    s_dim, a_dim, t_dim = obs.shape[1], act.shape[1], targets.shape[1]
    out = np.empty((n, transition_fields(s_dim, a_dim, t_dim)), dtype=np.float64)
    out[:, 0] = seqs
    out[:, 1] = episodes
    out[:, 2] = steps
    out[:, 3:3 + s_dim] = obs
    out[:, 3 + s_dim:3 + s_dim + a_dim] = act
    out[:, 3 + s_dim + a_dim] = np.asarray(batch.reward).reshape(n)
    out[:, 4 + s_dim + a_dim:4 + 2 * s_dim + a_dim] = np.asarray(batch.next_obs).reshape(n, -1)
    out[:, 4 + 2 * s_dim + a_dim] = np.asarray(batch.done).reshape(n)
    out[:, 5 + 2 * s_dim + a_dim:-1] = targets
    out[:, -1] = arms
    return out


def parse_transition_rows(rows: np.ndarray, state_dim: int = STATE_DIM,
                          action_dim: int = ACTION_DIM, target_dim: int = TARGET_DIM,
                          dtype=np.float32) -> TransitionRows:
    """Inverse of :func:`transition_rows`.

    Args:
        rows: (n, 3 + 2S + A + 2 + T + 1) transition rows.
        state_dim: S.
        action_dim: A.
        target_dim: T.
        dtype: float dtype of the batch arrays.

    Returns:
        :class:`TransitionRows`: seqs, episodes, steps (n,) int64, the batch, targets (n, T),
        arms (n,) int64.

    Raises:
        ValueError: wrong number of fields, seq/episode/step/arm not integers within
            [0, MAX_INDEX] (seq: [0, 2^53]), a non-finite value, or done not 0/1.
    """
    rows = np.asarray(rows, dtype=np.float64)
    f = transition_fields(state_dim, action_dim, target_dim)
    if rows.ndim != 2 or rows.shape[1] != f:
        raise ValueError(f'transition rows must be (n, {f}), got shape {rows.shape}')
    ints = np.concatenate([rows[:, :3], rows[:, -1:]], axis=1)
    if not (np.isfinite(ints).all() and (ints == np.round(ints)).all()):
        raise ValueError('seq, episode, step and arm must be integers')
    if not ((ints[:, 1:] >= 0).all() and (ints[:, 1:] <= MAX_INDEX).all()
            and (ints[:, 0] >= 0).all() and (ints[:, 0] <= 2.0 ** 53).all()):
        raise ValueError(f'seq must be within [0, 2^53], episode, step and arm within '
                         f'[0, {MAX_INDEX}]')
    # What the buffer stores is finite (core/buffer/storage.py): a NaN here is not its row,
    # and one held row would fail every later training.
    if not np.isfinite(rows).all():
        raise ValueError('a transition holds NaN or inf')
    s, a = state_dim, action_dim
    done = rows[:, 4 + 2 * s + a]
    if not np.isin(done, (0.0, 1.0)).all():
        raise ValueError('done must be 0 or 1')
    batch = TransitionBatch(obs=rows[:, 3:3 + s].astype(dtype),
                            act=rows[:, 3 + s:3 + s + a].astype(dtype),
                            next_obs=rows[:, 4 + s + a:4 + 2 * s + a].astype(dtype),
                            reward=rows[:, 3 + s + a].astype(dtype), done=done.astype(bool))
    ints = ints.astype(np.int64)
    return TransitionRows(ints[:, 0].copy(), ints[:, 1].copy(), ints[:, 2].copy(), batch,
                          rows[:, 5 + 2 * s + a:-1].astype(dtype), ints[:, 3].copy())


def file_chunk_messages(path: str, version: int,
                        chunk_bytes: int = CHUNK_BYTES) -> Sequence[UInt8MultiArray]:
    """A checkpoint folder as ``std_msgs/UInt8MultiArray`` chunks: the bytes in ``data``, the
    chunk's JSON header (``core.transfer``) as the label of its one dimension."""
    out = []
    for header, payload in pack_dir(path, version, chunk_bytes):
        msg = UInt8MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=encode_header(header), size=len(payload),
                                              stride=len(payload))]
        msg.data = array.array('B', payload)
        out.append(msg)
    return out


def file_chunk(msg: UInt8MultiArray) -> Tuple[dict, bytes]:
    """``(header, payload)`` of a chunk message.

    Raises:
        TransferRejected: no header, a bad header, or a payload of another length.
    """
    if len(msg.layout.dim) != 1:
        raise TransferRejected(f'file chunk needs one layout dimension, got {len(msg.layout.dim)}')
    header = decode_header(msg.layout.dim[0].label)
    payload = bytes(msg.data)
    if len(payload) != msg.layout.dim[0].size:
        raise TransferRejected(f'file chunk: {len(payload)} bytes, the layout says '
                               f'{msg.layout.dim[0].size}')
    return header, payload
