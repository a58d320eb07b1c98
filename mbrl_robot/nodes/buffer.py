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
"""The transition buffer node: executed rows in, exact transitions stored and published.

Graph (``docs/interfaces.md``):

- subscribes ``topics.executed`` of each arm (``arm_namespaces``: ``<arm>/controller/executed``;
  rows ``[episode, step, stamp, s, a, target]``), drops rows it already has and holds back a
  live row after missing ones (``core.buffer.reliable.RowGate``), pairs consecutive rows of an
  episode (``core.buffer.TransitionAssembler``) and commits each tick's transitions, together
  with the row still waiting for its successor and the last row accepted, in one SQLite
  transaction (``core.buffer.TransitionStore``, ``<data_dir>/transitions.sqlite3``, each
  transition with its arm's index); then acknowledges that row on the arm's
  ``topics.executed_ack`` (``[episode, step, stamp]``, transient local, also at start), so the
  arm's controller resends only what the buffer lacks (at-least-once delivery, stored exactly
  once). Each arm has its own gate, assembler and pending row: rows of two arms never pair;
- publishes each committed transition once, right after the commit, on ``topics.transitions``
  as ``[seq, episode, step, s, a, r, s', done, target, arm]`` rows; seqs are consecutive, so a
  consumer that sees a jump (it was not listening, or the buffer died between commit and
  publish) asks again;
- subscribes ``topics.resend_from`` (UInt64 n) and republishes every seq >= n known at the time
  of the request, ``publish_batch_size`` rows per message, one message per 10 ms timer tick:
  a long replay is paced (10k transitions/s at batch 100) rather than dumped into the
  keep-last-100 history, where a slow reader would lose the oldest messages;
- services ``~/stats`` (Trigger, JSON) and ``~/export`` (Trigger: writes a rosbag2
  MCAP bag of standard messages under ``<data_dir>/exports/``; the message is its path).

A restarted buffer reopens the store, restores the pending row and resumes: everything that was
acknowledged is kept, seqs continue, and a restart in the middle of an episode pairs exactly if
the next row received is the next step (otherwise it is counted as a gap).
"""

import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
from rclpy.clock import Clock, ClockType
from std_msgs.msg import Float64MultiArray, UInt64
from std_srvs.srv import Trigger

from mbrl_robot.core.buffer import (puck_distance_reward, ReliableIngest, task_reward,
                                    TransitionAssembler, TransitionStore)
from mbrl_robot.core.buffer.assembler import NumpyRewardFn
from mbrl_robot.core.buffer.export import export_mcap
from mbrl_robot.core.types import TransitionBatch
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.params import (add_live_parameters, declare_node_parameters,
                                     schema_descriptions)
from mbrl_robot.nodes.transport import (arm_topic, check_arm_namespaces, EXECUTED_QOS,
                                        is_resend, LATCHED_QOS, multiarray_to_rows,
                                        RELIABLE_QOS, rows_to_multiarray, transition_rows,
                                        TRANSITIONS_QOS)

# Node-private services: /<namespace>/buffer/stats and /<namespace>/buffer/export.
STATS_SERVICE = '~/stats'
EXPORT_SERVICE = '~/export'
RESEND_PERIOD_S = 0.01
LOG_THROTTLE_S = 5.0

DESCRIPTIONS = schema_descriptions('buffer')


def make_reward_fn(task: Dict[str, Any]):
    """Reward of the ``task`` parameters: PushTask's when available, else ``-||puck - target||``.

    Returns:
        ``(reward_fn, description)``.
    """
    try:
        from mbrl_robot.core.tasks.push import PushTask
    except ImportError as e:
        terms = {k: float(task.get('reward', {}).get(k, 0.0))
                 for k in ('tool_shaping_weight', 'action_cost', 'tool_intrusion_weight')}
        used = {k: v for k, v in terms.items() if v != 0.0}
        if used:
            raise ValueError(', '.join(f'task.reward.{k}={v}' for k, v in used.items())
                             + f' need mbrl_robot.core.tasks.push ({e})') from e
        return puck_distance_reward, f'-||puck - target|| (PushTask unavailable: {e})'
    import torch
    push = PushTask.from_config(task, dtype=torch.float64)
    return task_reward(push), (f'PushTask (tool_shaping_weight='
                               f'{push.tool_shaping_weight})')


def _sum_counters(counters) -> Dict[str, int]:
    """The arms' counters added up, key by key."""
    out: Dict[str, int] = {}
    for c in counters:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return out


class BufferNode(GuardedNode):
    """Stores exact transitions from ``topics.executed`` and serves them (see module doc)."""

    def __init__(self, **kwargs):
        super().__init__('buffer', **kwargs)
        params = declare_node_parameters(self, 'buffer')
        self.params = params
        self.data_dir = os.path.abspath(params['data_dir'])
        self.publish_batch_size = int(params['publish_batch_size'])
        self.topics = params['topics']
        self.task = params['task']
        self.controller_name = params['controller_name']
        self.joints = list(self.task['joints'])
        self.max_joint_speed = float(self.task['max_joint_speed_rad_s'])

        self.arms = check_arm_namespaces(params['arm_namespaces'])

        reward_fn, self.reward_source = make_reward_fn(self.task)
        self.store = TransitionStore(self.data_dir)
        # One gate and assembler per arm (index = position in arm_namespaces).
        self.ingests = [ReliableIngest(self.store, self._make_assembler(reward_fn, arm), arm)
                        for arm in range(len(self.arms))]
        self.rejected_messages = 0
        self.published = 0
        self.resent = 0
        self._resend_next = 0
        self._resend_end = -1

        # publish_batch_size takes effect at once; the others are read_only.
        add_live_parameters(self, 'buffer', params, self._apply_parameters)
        self.transitions_pub = self.create_publisher(
            Float64MultiArray, self.topics['transitions'], TRANSITIONS_QOS)
        self.ack_pubs = [self.create_publisher(Float64MultiArray,
                                               arm_topic(ns, self.topics['executed_ack']),
                                               LATCHED_QOS) for ns in self.arms]
        self.executed_subs = [self.create_subscription(
            Float64MultiArray, arm_topic(ns, self.topics['executed']),
            lambda msg, arm=arm: self.executed_callback(msg, arm), EXECUTED_QOS)
            for arm, ns in enumerate(self.arms)]
        self.resend_sub = self.create_subscription(
            UInt64, self.topics['resend_from'], self.resend_callback, RELIABLE_QOS)
        self.stats_srv = self.create_service(Trigger, STATS_SERVICE, self.stats_callback)
        self.export_srv = self.create_service(Trigger, EXPORT_SERVICE, self.export_callback)
        # Wall time: a lockstep twin's clock stands still while the trainer catches up.
        self.resend_timer = self.create_timer(RESEND_PERIOD_S, self.resend_timer_callback,
                                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.resend_timer.cancel()
        arms = '' if self.arms == [''] else f' from {len(self.arms)} arms {self.arms}'
        self.get_logger().info(
            f'buffer at {self.store.path}{arms}: {len(self.store)} transitions, last seq '
            f'{self.store.last_seq}, pending rows: '
            f'{[i.assembler.pending is not None for i in self.ingests]}, last rows '
            f'{[i.gate.last for i in self.ingests]}; reward: {self.reward_source}')
        for arm in range(len(self.arms)):
            self._acknowledge(arm)

    def _make_assembler(self, reward_fn: NumpyRewardFn, arm: int) -> TransitionAssembler:
        pending = self.store.pending(arm)
        # Rows pair only when one control period apart (core/buffer/assembler.py).
        timing = {'period_s': 1.0 / self.params['task']['control_rate_hz'],
                  'period_tolerance': self.params['period_tolerance']}
        try:
            return TransitionAssembler(reward_fn=reward_fn, pending=pending, **timing)
        except ValueError as e:
            self.get_logger().error(f'discarding the stored pending row of arm {arm}: {e}')
            self.store.append([], pending=None, arm=arm)
            return TransitionAssembler(reward_fn=reward_fn, **timing)

    # -- parameters -------------------------------------------------------------------------

    def _apply_parameters(self, changed: Dict[str, Any]) -> None:
        if 'publish_batch_size' in changed:
            self.publish_batch_size = int(changed['publish_batch_size'])

    # -- live path --------------------------------------------------------------------------

    def executed_callback(self, msg: Float64MultiArray, arm: int = 0) -> None:
        """Pair one arm's rows, commit the transitions with its pending row, publish them."""
        where = f' of {self.arms[arm]}' if self.arms[arm] else ''
        try:
            rows = multiarray_to_rows(msg)
        except ValueError as e:
            self.rejected_messages += 1
            self.get_logger().error(f'rejected executed message{where}: {e}',
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        ingest = self.ingests[arm]
        seqs, completed, errors = ingest.ingest(rows, resent=is_resend(msg))
        for e in errors:
            self.get_logger().error(f'rejected executed row{where} '
                                    f'({ingest.assembler.rejected} so far): {e}',
                                    throttle_duration_sec=LOG_THROTTLE_S)
        self._acknowledge(arm)
        if len(seqs):
            self._publish(seqs, completed, arm)
        for tr in completed:
            if tr.done:
                self.get_logger().info(
                    f'episode {tr.episode}{where} closed at step {tr.step + 1}: final reward '
                    f'{tr.reward:.4f}, {len(self.store)} transitions stored')

    def _acknowledge(self, arm: int) -> None:
        """Publish ``[episode, step, stamp]`` of the arm's last row stored (nothing before
        one)."""
        last = self.ingests[arm].gate.last
        if last is not None:
            self.ack_pubs[arm].publish(Float64MultiArray(data=[float(v) for v in last]))

    def _publish(self, seqs: np.ndarray, completed: list, arm: int) -> None:
        batch = TransitionBatch(obs=np.stack([t.obs for t in completed]),
                                act=np.stack([t.act for t in completed]),
                                next_obs=np.stack([t.next_obs for t in completed]),
                                reward=np.array([t.reward for t in completed]),
                                done=np.array([t.done for t in completed]))
        rows = transition_rows(seqs, [t.episode for t in completed],
                               [t.step for t in completed], batch,
                               np.stack([t.target for t in completed]),
                               np.full(len(completed), arm))
        for i in range(0, len(rows), self.publish_batch_size):
            self.transitions_pub.publish(rows_to_multiarray(rows[i:i + self.publish_batch_size]))
        self.published += len(rows)

    # -- resend -----------------------------------------------------------------------------

    def resend_callback(self, msg: UInt64) -> None:
        """Queue every seq >= ``msg.data`` stored now; merged with a replay in progress."""
        start = max(int(msg.data), 1)
        end = self.store.last_seq
        if start > end:
            self.get_logger().info(f'resend_from {msg.data}: nothing stored after seq {end}')
            return
        if self.resend_timer.is_canceled():
            self._resend_next, self._resend_end = start, end
            self.resend_timer.reset()
        else:
            self._resend_next = min(self._resend_next, start)
            self._resend_end = max(self._resend_end, end)
        self.get_logger().info(f'resending seqs {self._resend_next}..{self._resend_end}')

    def resend_timer_callback(self) -> None:
        """Publish the next batch of a replay."""
        limit = min(self.publish_batch_size, self._resend_end - self._resend_next + 1)
        rec = self.store.records(self._resend_next - 1, limit, dtype=np.float64)
        if len(rec):
            self.transitions_pub.publish(rows_to_multiarray(
                transition_rows(rec.seq, rec.episode, rec.step, rec.batch, rec.target,
                                rec.arm)))
            self.resent += len(rec)
            self._resend_next = int(rec.seq[-1]) + 1
        if not len(rec) or self._resend_next > self._resend_end:
            self.resend_timer.cancel()

    # -- services ---------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Store statistics plus this process's assembler and publishing counters."""
        out = self.store.stats()
        out.update({'assembler': _sum_counters(i.assembler.counters() for i in self.ingests),
                    'gate': _sum_counters(i.gate.counters() for i in self.ingests),
                    'arm_namespaces': self.arms,
                    # Each arm's last accepted executed row (episode, step, stamp, terminal),
                    # committed: the recipe trains once every episode it counted is in.
                    'last_rows': [self.store.last_row(arm) for arm in range(len(self.arms))],
                    'rejected_messages': self.rejected_messages, 'published': self.published,
                    'resent': self.resent, 'reward': self.reward_source, 'pid': os.getpid(),
                    'resend_in_progress': not self.resend_timer.is_canceled()})
        return out

    def stats_callback(self, request: Trigger.Request, response: Trigger.Response
                       ) -> Trigger.Response:
        """``~/stats``: JSON of :meth:`stats`."""
        response.success = True
        response.message = json.dumps(self.stats())
        return response

    def export_callback(self, request: Trigger.Request, response: Trigger.Response
                        ) -> Trigger.Response:
        """``~/export``: write an MCAP bag; the message is its directory."""
        stamp = time.strftime('%Y%m%d_%H%M%S', time.gmtime())
        path = os.path.join(self.data_dir, 'exports', f'buffer_{stamp}')
        suffix = 1
        while os.path.exists(path):
            path = os.path.join(self.data_dir, 'exports', f'buffer_{stamp}_{suffix}')
            suffix += 1
        try:
            topics = dict(self.topics, reward=self.params['export_reward_topic'])
            n = export_mcap(self.store.records(dtype=np.float64), path, self.joints,
                            self.controller_name, self.max_joint_speed, topics, self.arms)
        except (OSError, ValueError, RuntimeError) as e:
            response.success = False
            response.message = f'export to {path} failed: {e}'
            self.get_logger().error(response.message)
            return response
        self.get_logger().info(f'exported {n} messages to {path}')
        response.success = True
        response.message = path
        return response

    def destroy_node(self) -> None:
        """Close the store (checkpointing the WAL), then destroy the node."""
        store = getattr(self, 'store', None)  # None when __init__ failed before opening it
        if store is not None:
            store.close()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> None:
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    run_node(BufferNode, args)


if __name__ == '__main__':
    main()
