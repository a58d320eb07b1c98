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
"""The 20 Hz MPC controller: state in, joint-velocity commands out, in the ros2_control convention.

Every cycle of a timer on the node clock (sim time aware) it builds the 17-D state from the latest
``/joint_states`` and puck messages, plans with the configured planner (random shooting, CEM, PETS)
on a worker thread, and publishes the first action on ``/<controller_name>/commands`` through
:class:`~mbrl_robot.core.safety.CommandFilter`. A plan that misses its deadline never leaves the
arm without a command: the next action of the previous plan goes out (or a smooth stop), and the
miss is counted on ``/diagnostics``. Zero velocity on any fault, on e-stop and at shutdown.
"""

import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Dict, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.task import Future
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, Int32, String, UInt8MultiArray
from std_srvs.srv import SetBool, Trigger
import torch
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_robot.core.buffer.assembler import header_problem
from mbrl_robot.core.buffer.reliable import RowSpool, UnackedRows
from mbrl_robot.core.control import EPISODE_POLICIES, PushController
from mbrl_robot.core.latency import RollingStats, StatePredictor
from mbrl_robot.core.safety import StampOrder
from mbrl_robot.core.transfer import DirAssembler, TransferRejected
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.params import (add_live_parameters, declare_node_parameters,
                                     schema_descriptions)
from mbrl_robot.nodes.transport import (EXECUTED_FIELDS, EXECUTED_LABELS, EXECUTED_QOS,
                                        command_message, executed_row, file_chunk,
                                        FILES_QOS, LATCHED_QOS, RESENT_LABELS,
                                        rows_to_multiarray)

NUM_JOINTS = 7
HOME_TIMEOUT_S = 120.0
# An active episode without a tick for this long (wall time) is reported as stalled.
STALL_WARN_S = 5.0
# A tick (a lockstep one waits for its plan: seconds at the lecture size on a CPU) that runs
# longer than this (wall time, s) is a stall too.
TICK_STALL_S = 60.0
# At shutdown: the longest wait for a tick in flight, then for the arm to acknowledge the zero.
SHUTDOWN_WAIT_S = 1.0
# The unacknowledged executed rows under outbox_dir.
OUTBOX_FILE = 'executed_rows.bin'

# Read from the schema (mbrl_robot/params/controller.yaml, shared.yaml): every parameter once.
DESCRIPTIONS = schema_descriptions('controller')


class ControllerNode(GuardedNode):
    """MPC controller: converts messages for :class:`PushController` and runs it on a timer."""

    def __init__(self, **kwargs):
        super().__init__('controller', **kwargs)
        p = declare_node_parameters(self, 'controller')
        self.params = p
        problem = self.check_live_params(p)
        if problem:
            raise ValueError(problem)
        if p['torch_threads'] > 0:
            torch.set_num_threads(p['torch_threads'])
        self.joints = list(p['task']['joints'])
        if len(self.joints) != NUM_JOINTS or len(set(self.joints)) != NUM_JOINTS:
            raise ValueError(f'task.joints must name {NUM_JOINTS} distinct joints, '
                             f'got {self.joints}')
        self.min_executed_subscribers = p['min_executed_subscribers']
        # Executed rows until the buffer acknowledges them (at-least-once; on disk too when
        # outbox_dir is set, so the rows of a controller that was killed are resent).
        self.unacked = UnackedRows(p['max_unacked_rows'], self._open_outbox(p['outbox_dir']))
        self._outbox_failed = False
        self._check_outbox()
        self._unacked_lock = threading.Lock()
        # Plan deadlines on the node clock: sim time under a twin (a lockstep twin's stands still
        # while a plan runs), wall time on a real arm.
        self.control = PushController.from_params(
            p, logger=self.get_logger(), clock=lambda: self.get_clock().now().nanoseconds * 1e-9)
        self.policies = self.control.policies
        self._lock = threading.Lock()  # the latest inputs
        self._tick_lock = threading.Lock()  # one tick at a time; guards self.control
        self._target = None
        # The latest measurements with their stamps and the commands sent: the state a tick
        # plans from (predicted for the moment its command takes effect when compensating).
        lat = p['latency']
        self.realtime = not p['wait_for_fresh_state']
        self.compensate = bool(lat['compensation']) and self.realtime
        # What a tick waits for between ticks (as 'waiting for ...' in the diagnostics).
        self._idle_wait = 'the control timer' if self.realtime else 'a fresh state'
        self.sensed = StatePredictor(lat['actuation_delay_s'], lat['velocity_time_constant_s'],
                                     lat['puck_window_s'], lat['puck_speed_deadband_m_s'],
                                     puck_noise_m=lat['puck_noise_m'])
        self._send_delay = RollingStats(50)  # tick start -> command sent (s)
        self.timing = {name: RollingStats() for name in
                       ('tick_interval_ms', 'joint_age_ms', 'puck_age_ms', 'plan_ms',
                        'send_delay_ms')}
        self._last_tick_now: Optional[float] = None
        self._tick_due = False
        self._tick_again = False  # a _try_tick found the tick lock held (see there)
        self._diagnostics_due = False  # an episode ended: publish them once the tick is done
        # What the last tick attempt waited for, and when (wall) the last tick ran: a stalled
        # arm says why in the diagnostics and the log.
        self._waiting_for = 'a first tick'  # what the next tick waits for, as 'waiting for ...'
        self._last_tick_wall = time.monotonic()  # when the last tick ended
        self._tick_started = None  # wall time of the tick in progress (None: none)
        self._homed: Optional[Future] = None  # go_home's pending answer
        self._stats = {'faults': 0, 'rejected_states': 0, 'dropped_stamps': 0,
                       'callback_faults': 0, 'commands_resent': 0, 'state_age_ms': float('nan')}
        # Late, replayed or future-stamped inputs never overwrite a newer state.
        self._stamps = StampOrder(p['max_future_stamp_s'])
        self._clock_restarted = False
        self._create_interfaces(p)
        # goal_hold.* and disagreement_* take effect at once (the others are read_only).
        add_live_parameters(self, 'controller', p, self.apply_params, self.check_live_params)
        self.get_logger().info(
            'controller ready: '
            + (f'{p["planner"]["name"]} planner' if p['mode'] == 'planner' else 'policy mode')
            + f' on {self.policies.device}, {p["task"]["control_rate_hz"]:.0f} Hz, '
            f'commands on {self.command_pub.topic_name}')

    def _open_outbox(self, folder: str) -> Optional[RowSpool]:
        if not folder:
            return None
        try:
            spool = RowSpool(os.path.join(folder, OUTBOX_FILE), EXECUTED_FIELDS)
        except OSError as e:
            raise ValueError(f'outbox_dir {folder!r}: {e.strerror or e}') from None
        if spool.problem:
            self.get_logger().error(spool.problem)
        if len(spool.loaded):
            self.get_logger().warning(
                f'{len(spool.loaded)} executed rows an earlier run of this controller did not '
                f'have acknowledged (from episode {int(spool.loaded[0, 0])} step '
                f'{int(spool.loaded[0, 1])}): resending them')
        return spool

    def _check_outbox(self):
        """Log once that a disk error turned the outbox off (the queue goes on in memory)."""
        if self.unacked.spool_error and not self._outbox_failed:
            self._outbox_failed = True
            self.get_logger().error(f'outbox {self.unacked.spool_error}; keeping unacknowledged '
                                    'rows in memory only from now on')

    def _create_interfaces(self, p):
        io = ReentrantCallbackGroup()
        # Joint states and tracker frames in order, one at a time (in parallel a later one could
        # be taken first and the earlier then dropped as out of order).
        sensors = MutuallyExclusiveCallbackGroup()
        # No default QoS event handlers on the publishers and the sensor subscriptions: rclpy's
        # executor rebuilds its wait set in Python on every wake-up (100+ per second here), and
        # with ~40 event handlers that held the GIL over half the time and starved the planner
        # thread (plans 3x slower; py-spy). The latched inputs keep theirs (incompatible QoS
        # warnings).
        pub = {'event_callbacks': PublisherEventCallbacks(use_default_callbacks=False)}
        sub = {'event_callbacks': SubscriptionEventCallbacks(use_default_callbacks=False)}
        topics = p['topics']
        # Relative names from the profile: a namespace moves them, a renamed node does not.
        prefix = p['controller_name'].strip('/')
        self.command_pub = self.create_publisher(Float64MultiArray, prefix + '/commands', 10,
                                                 **pub)
        self.executed_pub = self.create_publisher(Float64MultiArray, topics['executed'],
                                                  EXECUTED_QOS, **pub)
        self.done_pub = self.create_publisher(Int32, topics['episode_done'], EXECUTED_QOS, **pub)
        self.marker_pub = self.create_publisher(MarkerArray, '~/predicted_paths', 1, **pub)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10, **pub)
        self.distance_pub = self.create_publisher(Float64, '~/distance_to_target', 10, **pub)
        self.disagreement_pub = self.create_publisher(Float64, '~/disagreement', 10, **pub)
        self.plan_ms_pub = self.create_publisher(Float64, topics['plan_time_ms'], 100, **pub)
        self.create_subscription(JointState, topics['joint_states'], self.joint_state_callback,
                                 10, callback_group=sensors, **sub)
        self.create_subscription(PointStamped, topics['puck_pose'], self.puck_callback, 10,
                                 callback_group=sensors, **sub)
        self.create_subscription(PointStamped, topics['target_pose'], self.target_callback,
                                 LATCHED_QOS, callback_group=io)
        # Policy mode deploys a trained policy; its checkpoints are announced like models. A
        # planner-mode controller follows the models, and the policies too for the recipe's
        # policy episodes (a distilling trainer's policy evaluated beside its planner).
        if p['mode'] == 'planner':
            self.create_subscription(String, topics['model_version'],
                                     functools.partial(self.model_callback, kind='model'),
                                     LATCHED_QOS, callback_group=io)
        self.create_subscription(String, topics['policy_version'],
                                 functools.partial(self.model_callback, kind='policy'),
                                 LATCHED_QOS, callback_group=io)
        # Checkpoints without a shared disk: the trainer's bytes over DDS (core/transfer.py).
        self.model_source = p['model_source']
        self._files_lock = threading.Lock()
        # (kind, version) -> (path, sha256, monotonic time of the first announcement, whether
        # its overdue warning was said): announced but not yet received over DDS.
        self._waiting: Dict[Tuple[str, int], Tuple[str, Optional[str], float, bool]] = {}
        self._files_wait_s = p['model_files_wait_s']
        self._loads_in_flight = 0  # load (and compile) threads running
        self.files = None
        # A temporary cache is this run's alone: removed with the node (a configured one stays).
        self._temp_cache = None
        if self.model_source != 'path':
            if not p['model_cache_dir']:
                self._temp_cache = tempfile.mkdtemp(prefix='mbrl_robot_models_')
            self.files = DirAssembler(p['model_cache_dir'] or self._temp_cache)
            self.create_subscription(UInt8MultiArray, topics['model_files'], self.files_callback,
                                     FILES_QOS, callback_group=io)
        self.create_subscription(String, topics['episode'], self.episode_callback, LATCHED_QOS,
                                 callback_group=io)
        self.create_service(SetBool, '~/estop', self.estop_callback, callback_group=io)
        self.create_service(Trigger, '~/go_home', self.go_home_callback, callback_group=io)
        self.create_subscription(Float64MultiArray, topics['executed_ack'], self.ack_callback,
                                 LATCHED_QOS, callback_group=io)
        # Wall time: a lockstep twin's clock stands still while the buffer is away.
        self.resend_timer = self.create_timer(
            p['executed_resend_period_s'] / 2, self.resend_callback, callback_group=io,
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        period = self.period = 1.0 / p['task']['control_rate_hz']
        self.timer = self.create_timer(period, self.timer_callback,
                                       callback_group=MutuallyExclusiveCallbackGroup())
        if not self.realtime:  # wall time: a lost command stops a lockstep twin's clock
            self._lockstep_sent = None  # (message, wall time sent) of the last tick's command
            self.lockstep_timer = self.create_timer(
                p['lockstep_resend_s'] / 2, self.lockstep_resend_callback, callback_group=io,
                clock=Clock(clock_type=ClockType.STEADY_TIME))
        # Wall time: a lockstep twin's clock stands still when the loop stalls, and a stall must
        # still be reported.
        self.diag_timer = self.create_timer(p['diagnostics_period_s'], self.publish_diagnostics,
                                            callback_group=io,
                                            clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- parameters -----------------------------------------------------------------------
    @staticmethod
    def check_live_params(p: dict) -> str:
        """'' when the writable parameters agree with each other, else why not."""
        hold = p['goal_hold']
        if hold['exit_radius_m'] < hold['enter_radius_m']:
            return (f'goal_hold.exit_radius_m = {hold["exit_radius_m"]} must be >= '
                    f'goal_hold.enter_radius_m = {hold["enter_radius_m"]}')
        if p['disagreement_stop'] <= p['disagreement_slowdown']:
            return (f'disagreement_stop = {p["disagreement_stop"]} must be > '
                    f'disagreement_slowdown = {p["disagreement_slowdown"]}')
        return ''

    def apply_params(self, changed: dict):
        """Apply writable parameters set at run time (``changed`` is nested and valid) between
        two ticks."""
        with self._tick_lock:
            self.control.apply_params({**changed, 'goal_hold': dict(self.params['goal_hold'])}
                                      if 'goal_hold' in changed else changed)
        self._after_tick_section()
        self.get_logger().info(f'parameters set: {changed}')

    # --- inputs ---------------------------------------------------------------------------
    def joint_state_callback(self, msg: JointState):
        try:
            q, qd = self._parse_joint_state(msg)
        except ValueError as e:
            self._reject_state(str(e))
            return
        if self._out_of_order('joint_states', msg.header.stamp):
            return
        with self._lock:
            self.sensed.observe_joints(Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, q, qd)
        if not self.realtime:
            self._tick_soon()

    def _parse_joint_state(self, msg: JointState):
        if len(msg.position) != len(msg.name) or len(msg.velocity) != len(msg.name):
            raise ValueError(f'JointState with {len(msg.name)} names, {len(msg.position)} '
                             f'positions and {len(msg.velocity)} velocities')
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.joints if j not in index]
        if missing:
            raise ValueError(f'JointState lacks configured joints {missing} '
                             f'(got {list(msg.name)})')
        order = [index[j] for j in self.joints]
        q = np.asarray(msg.position, dtype=np.float64)[order]
        qd = np.asarray(msg.velocity, dtype=np.float64)[order]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            raise ValueError('JointState holds NaN or inf')
        return q, qd

    def puck_callback(self, msg: PointStamped):
        puck = np.array([msg.point.x, msg.point.y, msg.point.z])
        if not np.all(np.isfinite(puck)):
            self._reject_state('puck position holds NaN or inf')
            return
        if self._out_of_order('puck', msg.header.stamp):
            return
        with self._lock:
            self.sensed.observe_puck(Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, puck)
        if not self.realtime:
            self._tick_soon()

    def target_callback(self, msg: PointStamped):
        target = np.array([msg.point.x, msg.point.y, msg.point.z])
        if not np.all(np.isfinite(target)):
            self.get_logger().error('target holds NaN or inf: ignored, keeping the last target')
            return
        with self._lock:
            self._target = target
        self.policies.set_target(target)

    def _out_of_order(self, stream: str, stamp) -> bool:
        """True (logged, counted) when ``stamp`` is older than the stream's last accepted one
        or too far ahead of the node clock: the message is dropped, the last state kept. A
        negative stamp is a malformed state (zero velocity until a good one)."""
        if stamp.sec < 0:
            self._reject_state(f'{stream} stamp {stamp.sec} s is negative')
            return True
        t = Time.from_msg(stamp).nanoseconds * 1e-9
        now = self.get_clock().now().nanoseconds * 1e-9
        with self._lock:
            restarts = self._stamps.restarts
            why = self._stamps.check(stream, t, now)
            restarted = self._stamps.restarts > restarts
            if why:
                self._stats['dropped_stamps'] += 1
            elif restarted:
                self._clock_restarted = True  # applied by the next tick, under the tick lock
        if why:
            self.get_logger().warning(f'dropped: {why} ({self._stats["dropped_stamps"]} so far)',
                                      throttle_duration_sec=1.0)
        elif restarted:
            self.get_logger().warning(f'{stream} stamps started again at {t:.3f} s: a restarted '
                                      'clock (twin?), taken as the new timeline')
        return bool(why)

    def on_callback_fault(self, where: str, error: BaseException) -> None:
        """A message or request whose callback raised (GuardedNode logged it), on any topic:
        zero velocity until a good state arrives, as for a malformed state; counted on
        /diagnostics as callback_faults."""
        with self._lock:
            self._stats['callback_faults'] += 1
            self.sensed.joints = None

    def _reject_state(self, why: str):
        with self._lock:
            self._stats['rejected_states'] += 1
            # A malformed message invalidates the state until a good one arrives.
            self.sensed.joints = None
        self.get_logger().error(f'rejected state: {why}; holding zero velocity',
                                throttle_duration_sec=1.0)

    def model_callback(self, msg: String, kind: str = 'model'):
        """An announced checkpoint: ``kind`` model (a model's folder) or policy."""
        try:
            info = json.loads(msg.data)
            path, version = str(info['path']), int(info['version'])
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            self.get_logger().error(f'bad {kind} announcement {msg.data!r}: {e}')
            return
        sha256 = info.get('sha256')
        if self.model_source == 'path' or (self.model_source == 'auto' and os.path.isdir(path)):
            self._start_load(path, version, sha256, kind)
            return
        with self._files_lock:
            local = self._received(path, version)
            if local is None:
                # The wait runs from the first announcement: announcing the version again (a
                # restarted trainer, a liar) does not restart it.
                first = self._waiting.get((kind, version))
                since, said = (time.monotonic(), False) if first is None else first[2:]
                self._waiting[(kind, version)] = (path, sha256, since, said)
        if local is None:
            self.get_logger().info(f'v{version} announced at {path}: waiting for its files over '
                                   'DDS')
        else:
            self._start_load(local, version, sha256, kind)

    def files_callback(self, msg: UInt8MultiArray):
        """A chunk of a checkpoint folder; a version made whole is loaded if announced."""
        try:
            header, payload = file_chunk(msg)
            with self._files_lock:
                done = self.files.add(header, payload)
                ready = []
                if done is not None:
                    for kind, version in sorted(k for k in self._waiting
                                                if k[1] <= header['version']):
                        path, sha256, _, _ = self._waiting.pop((kind, version))
                        local = self._received(path, version)
                        if local is not None:
                            ready.append((local, version, sha256, kind))
        except TransferRejected as e:
            self.get_logger().error(f'checkpoint chunk rejected, keeping the last good model: '
                                    f'{e}', throttle_duration_sec=1.0)
            return
        if done is not None:
            self.get_logger().info(f'v{header["version"]} received over DDS into {done}')
        for local, version, sha256, kind in ready:
            self._start_load(local, version, sha256, kind)

    def _received(self, path: str, version: int) -> Optional[str]:
        """Where the announced ``path`` of ``version`` lies among the received files (the part
        of ``path`` after its ``v<N>`` folder, e.g. ``policy``), or None if not received."""
        if self.files is None or self.files.latest != version:
            return None
        parts = os.path.normpath(path).split(os.sep)
        tail = []
        while parts and parts[-1] != f'v{version:04d}':
            tail.insert(0, parts.pop())
        local = os.path.join(self.files.path(version), *tail)
        return local if parts and os.path.isdir(local) else None

    def _start_load(self, path: str, version: int, sha256: Optional[str], kind: str) -> None:
        # Loading takes longer than a cycle: do it aside and swap between two ticks.
        with self._files_lock:
            self._loads_in_flight += 1
        threading.Thread(target=self._load_model, args=(path, version, sha256, kind),
                         daemon=True).start()

    def _load_model(self, path: str, version: int, sha256: Optional[str], kind: str):
        load = self.policies.load_policy if kind == 'policy' else self.policies.load_model
        try:
            loaded = load(path, version, sha256)
        finally:
            with self._files_lock:
                self._loads_in_flight -= 1
        if loaded:
            # An episode may be waiting for exactly this model (lockstep: nothing else ticks).
            self._try_tick()

    def loading(self) -> int:
        """Models and policies being loaded (or compiled for), or announced and waited for over
        DDS for less than ``model_files_wait_s``: the recipe's stall watchdog counts this as
        progress. (An announcement whose files never come, a lie or a lost trainer, stops
        counting then; its files are still loaded if they come later.)"""
        now = time.monotonic()
        with self._files_lock:
            waited = 0
            # Said here, where the diagnostics timer asks, once per announcement.
            for (kind, version), (path, sha256, since, said) in self._waiting.items():
                if now - since < self._files_wait_s:
                    waited += 1
                elif not said:
                    self._waiting[(kind, version)] = (path, sha256, since, True)
                    self.get_logger().warning(
                        f'{kind} v{version} announced at {path} {now - since:.0f} s ago: its '
                        'files have not arrived over DDS; no longer reported as loading '
                        '(still loaded if they come)')
            return self._loads_in_flight + waited

    def episode_callback(self, msg: String):
        try:
            info = json.loads(msg.data)
            episode = int(info['episode'])
            kind = info.get('policy', 'planner')
            min_version = int(info.get('min_model_version', 0))
            explore = bool(info.get('explore', False))
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            self.get_logger().error(f'bad episode message {msg.data!r}: {e}')
            return
        if kind not in EPISODE_POLICIES:
            self.get_logger().error(f'unknown episode policy {kind!r}: holding still')
            episode = -1
        with self._tick_lock:
            if episode == self.control.episode:
                return
            self.control.start_episode(episode, kind, explore, min_version)
        self._after_tick_section()
        with self._lock:
            # The puck was put at its new start: no fit across the reset (the newest frame is
            # the twin's or the operator's start).
            self.sensed.restart_track()
        if episode >= 0:
            self.get_logger().info(f'episode {episode}: {kind} policy')
            if not self.realtime:  # realtime: step 0 on the timer, one period before step 1
                self._tick_soon()

    def ack_callback(self, msg: Float64MultiArray):
        """The buffer stored every row up to ``[episode, step, stamp]``: forget those."""
        ack = np.asarray(msg.data, dtype=np.float64)
        # Beyond the bounds every stored row keeps (core/buffer/assembler.py) an ack is not one
        # of the buffer's, and it would forget every queued row.
        if ack.shape != (3,) or header_problem(*ack):
            self.get_logger().error(f'bad executed_ack {list(msg.data)}: ignored')
            return
        with self._unacked_lock:
            self.unacked.acknowledge(tuple(msg.data))
            self._check_outbox()

    def resend_callback(self):
        """Publish again, oldest first, the rows unacknowledged for executed_resend_period_s."""
        with self._unacked_lock:
            rows = self.unacked.due(time.monotonic(), self.params['executed_resend_period_s'])
        if len(rows):
            self.get_logger().warning(
                f'resending {len(rows)} executed rows the buffer has not acknowledged (from '
                f'episode {int(rows[0, 0])} step {int(rows[0, 1])})', throttle_duration_sec=5.0)
            self.executed_pub.publish(rows_to_multiarray(rows, RESENT_LABELS))

    def _publish_executed(self, row: np.ndarray):
        with self._unacked_lock:
            dropped = self.unacked.add(row, time.monotonic())
            self._check_outbox()
        self.executed_pub.publish(rows_to_multiarray(row[None], EXECUTED_LABELS))
        if dropped is not None:
            self.get_logger().error(
                f'{self.unacked.dropped} executed rows never acknowledged dropped (queue of '
                f'{self.unacked.max_rows} full): is the buffer running?',
                throttle_duration_sec=5.0)

    def estop_callback(self, request, response):
        self.control.estop = bool(request.data)
        if self.control.estop:
            self._send(np.zeros(NUM_JOINTS))
            self.get_logger().warning('E-STOP engaged: zero velocity until released')
        else:
            self.get_logger().info('e-stop released')
        self.publish_diagnostics()  # a state change: said at once, not at the next period
        response.success = True
        response.message = 'engaged' if self.control.estop else 'released'
        return response

    async def go_home_callback(self, request, response):
        """Drive to the ready pose at ``home_speed_rad_s``; answers once there (real-arm reset).

        A coroutine: the executor keeps ticking (the ticks drive the arm home) while it waits."""
        try:
            with self._tick_lock:
                self.control.start_homing()
        except RuntimeError as e:
            response.success, response.message = False, str(e)
            return response
        finally:
            self._after_tick_section()
        homed = self._homed = Future()
        timeout = self.create_timer(HOME_TIMEOUT_S,
                                    lambda: homed.done() or homed.set_result(False))
        self._tick_soon()
        try:
            response.success = bool(await homed)
        finally:
            self.destroy_timer(timeout)
        self.control.homing = False
        response.message = ('home' if response.success
                            else f'did not reach home in {HOME_TIMEOUT_S:g} s')
        self.get_logger().info(f'go_home: {response.message}')
        return response

    # --- the control cycle ----------------------------------------------------------------
    # Realtime ticks on the control timer; lockstep on each fresh state (the twin steps one
    # period per command, and PushController.ready takes only a state newer than the last),
    # not on the timer: under rclpy's EventsExecutor a sim-time timer is called twice when two
    # /clock messages arrive back to back, its next call then one period late, and a lockstep
    # arm whose twin waits for the command stood still for good (benchmarks/sim_time_timer.py:
    # 1-2 of 60 periods with a second /clock right behind each; none with one /clock a period).
    def timer_callback(self):
        self._tick_soon()

    def _tick_soon(self):
        with self._lock:
            self._tick_due = True
        self._try_tick()

    def _try_tick(self):
        """Run a due tick once :meth:`PushController.ready` and the executed-row subscribers
        allow it (lockstep: on the fresh state of this tick).

        A call that finds the tick section held leaves a note, and the holder tries again as it
        leaves (:meth:`_after_tick_section`): otherwise a wake-up from another thread (a model
        loaded while the executor's thread holds the section, or the reverse) could be lost,
        and a lockstep arm would wait for a state that never comes fresher."""
        with self._lock:
            self._tick_again = True
        while True:
            if not self._tick_lock.acquire(blocking=False):
                return  # the holder sees _tick_again
            try:
                with self._lock:
                    self._tick_again = False
                self._try_tick_once()
            finally:
                self._tick_lock.release()
            # Outside the tick section: publish_diagnostics waits on the files lock, which a
            # checkpoint chunk being written holds.
            with self._lock:
                due, self._diagnostics_due = self._diagnostics_due, False
            if due:
                self.publish_diagnostics()  # the episode's last figures, whatever the period
            with self._lock:
                if not self._tick_again:
                    return

    def _after_tick_section(self):
        """After holding the tick lock outside :meth:`_try_tick`: run what was asked meanwhile."""
        with self._lock:
            again = self._tick_again
        if again:
            self._try_tick()

    def _try_tick_once(self):
        """One attempt of :meth:`_try_tick`, the tick lock held."""
        with self._lock:
            if self._clock_restarted:
                self.control.clock_restarted()
                self._clock_restarted = False
            if not self._tick_due:
                self._waiting_for = self._idle_wait
                return
            now = self.get_clock().now().nanoseconds * 1e-9
            state, stamp, row_stamp, plan_state_fn = self._state(now)
            target = self._target
        wait = self.control.ready(stamp)
        if wait is None and self.control.episode >= 0 and self.control.step == 0 and (
                self.executed_pub.get_subscription_count() < self.min_executed_subscribers):
            # Every executed row must reach the buffer: start once it has discovered us.
            # Not mid-episode: unacknowledged rows are kept and resent to a restarted
            # buffer, and a pause would leave the arm moving until the twin stops it.
            wait = 'waiting for the buffer to subscribe to executed rows'
        if wait is not None:
            self._waiting_for = wait.removeprefix('waiting for ')
            if 'fresh state' not in wait:  # lockstep waits for its state every tick
                self.get_logger().info(wait, throttle_duration_sec=2.0)
            return
        with self._lock:
            self._tick_due = False
        # A lockstep tick waits for its plan (seconds at the lecture size on a CPU): no stall
        # up to TICK_STALL_S; meanwhile no lockstep resend (it waits for no state).
        self._tick_started = time.monotonic()
        self._waiting_for = 'its tick to end'
        try:
            self._tick(state, stamp, row_stamp, target, now, plan_state_fn)
        finally:
            self._last_tick_wall, self._tick_started = time.monotonic(), None
        self._waiting_for = self._idle_wait

    def _state(self, now: float):
        """The 17-D state of this tick's row, its stamp (s: the older of the joint and puck
        stamps, for the staleness check), the row's stamp (the time the state stands for) and the
        next plan's state as a function of this tick's command (or None).

        Lockstep: the latest measurements, stamped with their own time. Realtime: the latest
        measurements at the tick time ``now``. With ``latency.compensation``: the state
        predicted for the moment this tick's command takes effect, and the next plan starts
        from the state predicted one period later (``PushController.tick``, plan ahead)."""
        stamps = self.sensed.stamps()
        if stamps is None:
            return None, None, None, None
        stamp = min(stamps)
        if not self.realtime:
            return self.sensed.measured(), stamp, stamp, None
        if not self.compensate:
            measured = self.sensed.measured()
            return measured, stamp, now, lambda command: measured
        values = self._send_delay.values
        sent = now + (float(np.median(values)) if values else 0.0)
        effect = sent + self.sensed.delay

        def plan_state(command: np.ndarray) -> np.ndarray:
            with self._lock:
                return self.sensed.predict(effect + self.period, pending=(sent, command))

        return self.sensed.predict(effect), stamp, effect, plan_state

    def _tick(self, state, stamp, row_stamp, target, now, plan_state_fn=None):
        if stamp is not None:
            self._stats['state_age_ms'] = (now - stamp) * 1e3
        try:
            tick = self.control.tick(state, stamp, now, target, plan_state_fn)
        except Exception as e:  # noqa: B902 - any fault must end in zero velocity, then report
            self._stats['faults'] += 1
            self.control.prev_command = np.zeros(NUM_JOINTS)
            self._send(np.zeros(NUM_JOINTS), answers=stamp)
            self.get_logger().error(f'control fault, zero velocity sent: {e!r}',
                                    throttle_duration_sec=1.0)
            return
        if tick.command is not None:
            self._send(tick.command, answers=stamp)
            if tick.event == 'act':
                self._time_tick(tick, now, stamp)
        self._report(tick, state, row_stamp, target)

    def _time_tick(self, tick, now: float, stamp: float):
        """Timing figures of an episode tick (published in the diagnostics)."""
        sent = self.get_clock().now().nanoseconds * 1e-9
        self._send_delay.add(sent - now)
        joint_stamp, puck_stamp = self.sensed.stamps()
        figures = {'send_delay_ms': sent - now, 'joint_age_ms': now - joint_stamp,
                   'puck_age_ms': now - puck_stamp}
        if self._last_tick_now is not None and tick.step > 0:
            figures['tick_interval_ms'] = now - self._last_tick_now
        self._last_tick_now = now
        for name, seconds in figures.items():
            self.timing[name].add(seconds * 1e3)
        if 'plan_time_ms' in tick.info:
            self.timing['plan_ms'].add(tick.info['plan_time_ms'])

    def _report(self, tick, state, stamp, target):
        """Publish what a tick did: executed rows, episode end, plan figures, warnings."""
        log = self.get_logger()
        if tick.event in ('stale', 'no_target'):
            log.warning(f'{"no fresh state" if tick.event == "stale" else "no target yet"}: '
                        'zero velocity', throttle_duration_sec=1.0)
        elif tick.event == 'homed' and self._homed is not None and not self._homed.done():
            self._homed.set_result(True)
        if tick.event not in ('act', 'done'):
            return
        self.distance_pub.publish(Float64(data=tick.info['distance']))
        self._publish_executed(executed_row(tick.episode, tick.step, stamp, state, tick.action,
                                            target))
        if tick.event == 'done':
            self.done_pub.publish(Int32(data=tick.episode))
            log.info(f'episode {tick.episode} done: final distance '
                     f'{tick.info["distance"]:.3f} m')
            with self._lock:
                self._diagnostics_due = True  # published as the tick section ends (_try_tick)
            return
        info = tick.info
        if 'plan_time_ms' in info:
            self.plan_ms_pub.publish(Float64(data=float(info['plan_time_ms'])))
        if 'disagreement' in info or 'holding' in info:  # a plan (or a hold) finished
            self.disagreement_pub.publish(Float64(data=self.control.disagreement))
        self._publish_markers(info)
        if info.get('deadline_miss'):
            log.warning('plan missed its deadline: sending the previous plan',
                        throttle_duration_sec=1.0)
        if info['scale'] < 1.0:
            log.warning(f'ensemble disagreement {self.control.disagreement:.3f}: command scaled '
                        f'by {info["scale"]:.2f}', throttle_duration_sec=1.0)

    def _send(self, command: np.ndarray, answers: Optional[float] = None):
        """Publish ``command``; lockstep: labelled with ``answers``, the stamp (s) of the state
        it answers, and kept for :meth:`lockstep_resend_callback`."""
        label = not self.realtime and answers is not None
        msg = command_message(command, int(round(answers * 1e9)) if label else None)
        self.command_pub.publish(msg)
        with self._lock:
            self.sensed.commanded(self.get_clock().now().nanoseconds * 1e-9, command)
            if label:
                self._lockstep_sent = (msg, time.monotonic())

    def lockstep_resend_callback(self):
        """Lockstep: publish the last tick's command again when the state it should bring has
        not come for ``lockstep_resend_s`` (the twin ignores it if it had stepped)."""
        wait = self.params['lockstep_resend_s']
        with self._lock:
            sent = self._lockstep_sent
        active = self.control.episode >= 0 or self.control.homing
        if (sent is None or not active or 'fresh state' not in self._waiting_for
                or time.monotonic() - max(sent[1], self._last_tick_wall) < wait):
            return
        self._stats['commands_resent'] += 1
        self.get_logger().info(
            f'no state for {wait:g} s after episode {self.control.episode} step '
            f'{self.control.step}\'s command: sending it again ({self._stats["commands_resent"]} '
            'resent so far)', throttle_duration_sec=2.0)
        with self._lock:
            self._lockstep_sent = (sent[0], time.monotonic())
        self.command_pub.publish(sent[0])

    def _publish_markers(self, info: dict):
        paths = info.get('paths')
        if not paths or not self.marker_pub.get_subscription_count():
            return  # building the markers costs the planner thread the GIL: only for a viewer
        markers = MarkerArray()
        stamp = self.get_clock().now().to_msg()
        for i, (name, mean, spread, rgb) in enumerate(paths):
            line = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, ns=name, id=i)
            line.header.frame_id = 'world'
            line.header.stamp = stamp
            line.scale.x = 0.005
            line.color.r, line.color.g, line.color.b, line.color.a = (*rgb, 1.0)
            line.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in mean]
            spheres = Marker(type=Marker.SPHERE_LIST, action=Marker.ADD, ns=name + '_spread',
                             id=100 + i)
            spheres.header = line.header
            # One sphere size per marker: the largest spread along the path, so the worst
            # disagreement is what the operator sees.
            size = float(max(2.0 * np.max(spread), 0.005))
            spheres.scale.x = spheres.scale.y = spheres.scale.z = size
            spheres.color.r, spheres.color.g, spheres.color.b, spheres.color.a = (*rgb, 0.25)
            spheres.points = line.points
            markers.markers += [line, spheres]
        self.marker_pub.publish(markers)

    def publish_diagnostics(self):
        with self._unacked_lock:
            s = {**self.control.stats, **self._stats, **self.unacked.counters()}
        for name, stats in self.timing.items():
            s.update(stats.percentiles(name))
        status = DiagnosticStatus(name='mbrl_robot: controller',
                                  hardware_id=self.get_namespace())
        level, message = DiagnosticStatus.OK, 'ok'
        if self.control.estop:
            level, message = DiagnosticStatus.ERROR, 'e-stop engaged'
        elif s['faults'] or s['rejected_states'] or s['plan_errors']:
            level, message = DiagnosticStatus.WARN, 'faults, plan errors or rejected states'
        elif s['deadline_misses']:
            level, message = DiagnosticStatus.WARN, 'plan deadline misses'
        now, started = time.monotonic(), self._tick_started
        if started is None:
            since_tick, waiting_for = now - self._last_tick_wall, self._waiting_for
            stalled = since_tick > STALL_WARN_S
        else:  # a tick runs in another thread (a model loader's): a stall only when very long
            since_tick, waiting_for = now - started, 'its tick to end'
            stalled = since_tick > TICK_STALL_S
        if self.control.episode >= 0 and stalled and not self.control.estop:
            level, message = DiagnosticStatus.WARN, f'stalled: waiting for {waiting_for}'
            self.get_logger().warning(
                f'episode {self.control.episode} step {self.control.step}: no tick for '
                f'{since_tick:.0f} s, waiting for {waiting_for}',
                throttle_duration_sec=STALL_WARN_S)
        status.level, status.message = level, message
        s.update(model_version=self.policies.model_version, episode=self.control.episode,
                 step=self.control.step, waiting_for=waiting_for,
                 since_tick_s=since_tick, loading=self.loading())
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in s.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self):
        # Last word to the arm is zero velocity, whatever happened before: e-stop first (any
        # later tick sends zeros), a tick in flight on another thread finishes before the zero,
        # and the zero is delivered (acknowledged by the arm's reliable subscriber) before the
        # publisher goes away with it unsent.
        if not hasattr(self, 'command_pub'):  # __init__ failed: it never commanded the arm
            self._release_partial()
            return
        self.control.estop = True
        locked = self._tick_lock.acquire(timeout=SHUTDOWN_WAIT_S)
        try:
            self._send(np.zeros(NUM_JOINTS))
            self.command_pub.wait_for_all_acked(Duration(seconds=SHUTDOWN_WAIT_S))
        finally:
            if locked:
                self._tick_lock.release()
            self.control.close()
            with self._unacked_lock:  # a late row stays in memory, not on a closed file
                spool, self.unacked.spool = self.unacked.spool, None
            if spool is not None:
                spool.release()
            if getattr(self, '_temp_cache', None) is not None:  # absent: __init__ failed
                shutil.rmtree(self._temp_cache, ignore_errors=True)
            super().destroy_node()

    def _release_partial(self):
        """Destroy a node whose ``__init__`` failed (rclpy destroys it at shutdown): close what
        it had opened, without the shutdown's zero command (it has sent no command)."""
        control = getattr(self, 'control', None)
        if control is not None:
            control.close()
        unacked = getattr(self, 'unacked', None)
        if unacked is not None and unacked.spool is not None:
            unacked.spool.release()
        super().destroy_node()


def main(args=None):
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    # The planner thread must not hold the GIL for long stretches: the 20 Hz tick needs it.
    sys.setswitchinterval(0.0005)
    run_node(ControllerNode, args, events=True)


if __name__ == '__main__':
    main()
