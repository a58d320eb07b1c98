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
"""Recipe node: the orchestrator of the lecture's pushing recipe, as a state machine.

N random episodes -> train -> (E MPC episodes -> retrain) x iterations -> evaluation episodes on
held-out seeds (plus optional baselines). Each episode: seed the twin, reset it, tell the
controller to run the episode, wait for it to finish. With several arms (``arm_namespaces``),
the episodes between two trainings run on all arms at once, each on the first arm free
(:class:`ArmSlot`: the arm's twin services, its controller's topics, in its namespace); an arm
whose episode fails (a call or the episode times out) is set aside for ``LOST_RETRY_S``, its
episode goes to another arm, and it is offered episodes again when its services answer.
Progress is logged with an ETA and the run summary (``summary.json``) is rewritten after every
phase, so a stopped run resumes where it stopped: the buffer and the trainer's checkpoints keep
the data and the model (episodes finished out of order are kept by their phase index).
"""

import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Float64, Float64MultiArray, Int32, String
from std_srvs.srv import Trigger

from mbrl_robot.core.algorithms.mpc_recipe import (build_phases, episode_result,
                                                   summarize)
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.params import declare_node_parameters, schema_descriptions
from mbrl_robot.nodes.transport import (arm_topic, check_arm_namespaces, EXECUTED_QOS,
                                        LATCHED_QOS, multiarray_to_rows, parse_executed_row)

DESCRIPTIONS = schema_descriptions('recipe')
# A service call unanswered this long (s) is sent again once the service is back: its server
# died with the request and mbrl_run restarted it.
CALL_RETRY_S = 5.0
# An arm whose episode failed (a call or the episode timed out) is offered episodes again
# after this long (s); meanwhile the other arms run its episode.
LOST_RETRY_S = 5.0
# A ~/stats answer that is not one (its server's callback failed) is asked again after this
# long (s), within the stage's deadline.
STATS_RETRY_S = 1.0
# At its end, how long (in all) the recipe waits for its last progress and announcements to
# be acknowledged by their subscribers (the live view, the controllers) before it exits.
FINAL_ACK_WAIT_S = 2.0
# What the recipe reads of the trainer's ~/stats answer (nodes/trainer.py, stats_callback).
TRAINER_STATS = {'n_transitions': int, 'training': bool, 'version': int, 'last_result': dict}


class Call:
    """One service call in flight, asked again when its server died with the request."""

    def __init__(self, node: Node, client, request, what: str = 'a service',
                 timeout_s: Optional[float] = None):
        self.node, self.client, self.request, self.what = node, client, request, what
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._send()

    def _send(self):
        self.future = self.client.call_async(self.request)
        self.t_call = time.monotonic()

    def result(self):
        """The response, or None while it is on its way.

        Raises:
            RuntimeError: past the deadline, or the call failed.
        """
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RuntimeError(f'timed out waiting for {self.what}')
        if not self.future.done():
            if time.monotonic() - self.t_call > CALL_RETRY_S and self.client.service_is_ready():
                # The server died with our request (a node restarted): ask its successor.
                self.node.get_logger().warning(f'no answer from {self.client.srv_name} in '
                                               f'{CALL_RETRY_S:g} s: asking again')
                self._send()
            return None
        result = self.future.result()
        if result is None:
            raise RuntimeError(f'{self.what}: service call failed')
        return result


def arms_behind(results: List[Dict[str, Any]], stats: Dict[str, Any]) -> List[str]:
    """The arms (namespaces) whose executed rows of the episodes in ``results`` (the recipe's
    episode results, ``episode`` and, with several arms, ``arm``) the buffer (its ``~/stats``)
    has not all taken in yet; empty once it has them all.

    Per arm, the buffer's last accepted row must be the terminal row of the arm's last counted
    episode, or a row of a later one: its gate accepts each arm's rows in order, so every row
    before it is stored or deliberately dropped (and counted). Counting transitions is not
    enough: a controller and twin killed mid-episode leave the rows of the interrupted attempt,
    and the attempt run again on a restarted clock has its first rows taken as already stored,
    so the episode ends a few transitions off its step count and the count never matches.
    A buffer without ``last_rows`` (or with other arm names) is judged by the count (stored +
    dropped for timing); short, every arm of ``results`` is named.
    """
    last_rows = stats.get('last_rows')
    arms = stats.get('arm_namespaces') or ['']
    if last_rows is None or any(r.get('arm', '') not in arms for r in results):
        dropped = int(stats.get('assembler', {}).get('dropped_timing', 0))
        if int(stats['transitions']) + dropped >= sum(r['steps'] for r in results):
            return []
        return sorted({r.get('arm', '') for r in results})
    behind = []
    for arm, namespace in enumerate(arms):
        episodes = [r['episode'] for r in results if r.get('arm', '') == namespace]
        if not episodes:
            continue
        last = last_rows[arm] if arm < len(last_rows) else None
        # (episode, terminal) of the last row against the arm's last counted episode, closed
        if last is None or (last[0], bool(last[3])) < (max(episodes), True):
            behind.append(namespace)
    return behind


def full_namespace(own: str, arm: str) -> str:
    """The absolute namespace of arm namespace ``arm`` ('' for none; relative, or absolute as
    ``arm_topic`` keeps it) as seen from a node in ``own``: what a controller there reports as
    its diagnostics' hardware_id."""
    parts = (arm,) if arm.startswith('/') else (own, arm)
    return '/' + '/'.join(p.strip('/') for p in parts if p.strip('/'))


class ArmSlot:
    """One arm's side of the recipe: seed and reset its twin, announce an episode to its
    controller, collect the executed rows until the episode is done.

    Its topics and services are the arm's (``<namespace>/recipe/episode``,
    ``<namespace>/controller/executed``, ``<namespace>/twin/reset``, ...); namespace '' is the
    recipe's own (one arm).
    """

    def __init__(self, node: 'RecipeNode', namespace: str):
        self.node, self.namespace = node, namespace
        self.name = namespace or 'the arm'
        p, topics = node.p, node.p['topics']

        def name(n):
            return arm_topic(namespace, n)

        self.episode_pub = node.create_publisher(String, name(topics['episode']), LATCHED_QOS)
        node.create_subscription(Float64MultiArray, name(topics['executed']),
                                 self.executed_callback, EXECUTED_QOS)
        node.create_subscription(Int32, name(topics['episode_done']), self.done_callback,
                                 EXECUTED_QOS)
        node.create_subscription(Float64, name(topics['plan_time_ms']), node.plan_ms_callback,
                                 100)
        self.reset_client = node.create_client(Trigger, name(p['reset_service']))
        self.seed_client = (node.create_client(SetParameters, name(p['seed_service']))
                            if p['seed_service'] else None)
        self.phase: Optional[Dict[str, Any]] = None
        self.stage = 'idle'
        self.call: Optional[Call] = None
        self.deadline: Optional[float] = None
        self.lost_until = 0.0  # a lost arm is offered an episode again after this (monotonic)
        self.object_placed = False
        self._rows: Dict[int, Dict[int, Any]] = {}
        self._done_episode: Optional[int] = None
        self._grace_end: Optional[float] = None
        self.episode = -1
        self._progress_at = 0.0  # when the running episode last progressed (monotonic)
        self._heard: Optional[Tuple[float, str, Dict[str, str]]] = None  # controller's last word

    @property
    def clients(self):
        return [self.reset_client] + ([self.seed_client] if self.seed_client else [])

    def executed_callback(self, msg: Float64MultiArray):
        try:
            for raw in multiarray_to_rows(msg):
                row = parse_executed_row(raw)
                rows = self._rows.setdefault(row.episode, {})
                seen = rows.get(row.step)
                if row.episode == self.episode and (seen is None or seen.stamp != row.stamp):
                    # A new row (a resend carries its old stamp; a restarted controller's rerun
                    # of the episode new ones).
                    self._progress_at = time.monotonic()
                rows[row.step] = row
        except ValueError as e:
            self.node.get_logger().error(f'malformed executed row of {self.name} ignored: {e}',
                                         throttle_duration_sec=1.0)

    def done_callback(self, msg: Int32):
        self._done_episode = msg.data

    def available(self) -> bool:
        """Idle, and not waiting out a failure."""
        return (self.stage == 'idle' and time.monotonic() >= self.lost_until
                and all(c.service_is_ready() for c in self.clients))

    def start(self, phase: Dict[str, Any], episode: int):
        """Seed (when there is a seed service) and reset the arm, then run ``phase`` as episode
        number ``episode`` (the id its rows carry)."""
        self.phase, self.episode = phase, int(episode)
        self.t0 = time.monotonic()
        self._rows.pop(self.episode, None)
        if self.seed_client is None:
            self._goto_call('resetting', self.reset_client, Trigger.Request(), 'the reset',
                            self.node.p['episode_timeout_s'])
        else:
            self._goto_call('seeding', self.seed_client,
                            RecipeNode.seed_request(phase['seed']),
                            f'{self.name} to take the episode seed', 30.0)

    def _goto_call(self, stage: str, client, request, what: str, timeout_s: float):
        self.stage = stage
        self.call = Call(self.node, client, request, f'{what} ({self.name})', timeout_s)

    def step(self) -> Optional[Dict[str, Any]]:
        """Advance; the episode's result once it is over, else None.

        Raises:
            RuntimeError: a call failed or timed out, or the episode did (the arm is lost).
        """
        if self.stage == 'idle':
            return None
        return getattr(self, '_stage_' + self.stage)()

    def abandon(self, why: str, instead: str = 'its episode goes to another arm'):
        """Give the running phase up (the recipe hands it to another arm or stops) and stop the
        arm's controller; the arm is offered episodes again after ``LOST_RETRY_S``."""
        self.node.get_logger().error(f'{self.name} lost ({why}): {instead}; offered episodes '
                                     f'again in {LOST_RETRY_S:g} s')
        self.episode_pub.publish(String(data=json.dumps({'episode': -1})))
        self._rows.clear()  # the given-up episode's rows, and any late ones
        self.stage, self.phase, self.call = 'idle', None, None
        self.lost_until = time.monotonic() + LOST_RETRY_S

    def _stage_seeding(self):
        result = self.call.result()
        if result is None:
            return None
        if not all(r.successful for r in result.results):
            raise RuntimeError(f'{self.name} refused the episode seed: {result.results}')
        self._goto_call('resetting', self.reset_client, Trigger.Request(), 'the reset', 120.0)
        return None

    def _stage_resetting(self):
        result = self.call.result()
        if result is None:
            return None
        if not result.success:
            raise RuntimeError(f'reset of {self.name} failed: {result.message}')
        if self.node.p['wait_for_operator']:
            self.object_placed = False
            where = f'{self.namespace}/' if self.namespace else ''
            self.node.get_logger().info(
                f'{self.name} at home: place the puck, then call '
                f'{self.node.get_name()}/{where}object_placed (std_srvs/Trigger)')
            self.stage = 'operator'
            return None
        self._announce()
        return None

    def _stage_operator(self):
        if self.object_placed:
            self._announce()
        return None

    def _announce(self):
        phase = self.phase
        self._done_episode = None
        # A planner episode waits for the model it asked for, a policy episode for its policy
        # (announced with the model's version).
        min_version = (self.node.model_version if phase['policy'] in ('planner', 'policy')
                       else 0)
        self.episode_pub.publish(String(data=json.dumps({
            'episode': self.episode, 'policy': phase['policy'], 'seed': phase['seed'],
            'min_model_version': min_version,
            'explore': not phase['stage'].startswith('eval')})))
        self.stage = 'running'
        self.deadline = time.monotonic() + self.node.p['episode_timeout_s']
        self._grace_end = None
        self._progress_at = time.monotonic()

    def _stage_running(self):
        phase = self.phase
        now = time.monotonic()
        if now > self.deadline:
            raise RuntimeError(f'timed out waiting for episode {self.episode} on {self.name}')
        rows = self._rows.get(self.episode, {})
        if self._done_episode != self.episode:
            self._check_progress(rows, now)
            return None
        if not self._complete(rows):
            if self._grace_end is None:
                self._grace_end = now + 5.0
            if now < self._grace_end:
                return None  # episode_done may overtake the last rows: another topic
        # The episode is over: a controller restarted from now on must not run it again
        # (the latched announcement would say it is still on).
        self.episode_pub.publish(String(data=json.dumps({'episode': -1})))
        self._rows.pop(self.episode, None)
        result = self._episode_result(phase, rows)
        self.stage, self.phase = 'idle', None
        return result

    def _check_progress(self, rows: Dict[int, Any], now: float):
        """Raise when the running episode has not progressed for ``episode_stall_s``.

        Progress is a new row of the episode, or the arm's controller saying on its diagnostics
        (every ``diagnostics_period_s`` of wall time, and at an e-stop change;
        :meth:`controller_heard`) that it is loading a model (or compiling
        the planner for it, or waiting for its files over DDS, for up to its
        ``model_files_wait_s``) or that its e-stop is engaged.
        Whatever else stops an arm mid-episode (a hung process, a lost link, a controller and a
        lockstep twin waiting on each other) loses it for ``episode_stall_s``, not for
        ``episode_timeout_s``.
        """
        stall_s = self.node.p['episode_stall_s']
        if now - self._progress_at <= stall_s or self._complete(rows):
            return
        where = f'after step {max(rows)}' if rows else 'before its first step'
        if self._heard is None:
            said = 'its controller never heard on /diagnostics'
        else:
            at, message, values = self._heard
            episode, step = values.get('episode', '?'), values.get('step', '?')
            waiting = values.get('waiting_for') or 'nothing'
            said = (f'its controller last heard {now - at:.0f} s ago: {message!r}, episode '
                    f'{episode} step {step}, waiting for {waiting}')
        raise RuntimeError(f'{self.name} stalled: no row of episode {self.episode} for '
                           f'{stall_s:g} s {where} ({said})')

    def controller_heard(self, message: str, values: Dict[str, str]):
        """The arm's controller's diagnostics (its status message and values)."""
        now = time.monotonic()
        self._heard = (now, message, values)
        loading = values.get('loading', '0')
        if self.stage == 'running' and ((loading.isdigit() and int(loading) > 0)
                                        or message == 'e-stop engaged'):
            self._progress_at = now  # a pause the episode waits out, not a stall

    @staticmethod
    def _complete(rows: Dict[int, Any]) -> bool:
        """Every step of the episode, up to its terminal row, is here."""
        return bool(rows) and rows[max(rows)].terminal and len(rows) == max(rows) + 1

    def _episode_result(self, phase, rows) -> Dict[str, Any]:
        steps = sorted(rows)
        if not steps or not rows[steps[-1]].terminal:
            raise RuntimeError(f'episode {self.episode} ended without its terminal row '
                               f'({len(steps)} rows received from {self.name})')
        states = np.stack([rows[s].s for s in steps])
        stamps = np.array([rows[s].stamp for s in steps])
        result = episode_result(phase, states, rows[steps[-1]].target,
                                self.node.p['task']['success_radius_m'],
                                time.monotonic() - self.t0)
        result['command_period_s'] = float(np.median(np.diff(stamps))) if len(steps) > 1 else 0.0
        result['episode'] = self.episode
        if self.namespace:
            result['arm'] = self.namespace
        return result


class RecipeNode(GuardedNode):
    """Runs the recipe's phases through the node graph: a block of episodes on every arm at
    once (each episode on one arm), then a training, and so on."""

    def __init__(self):
        super().__init__('recipe')
        # Every parameter is read_only: the phases are planned once, at start.
        p = declare_node_parameters(self, 'recipe')
        self.p = self.params = p
        self.run_dir = p['run_dir']
        os.makedirs(self.run_dir, exist_ok=True)
        self.summary_path = os.path.join(self.run_dir, 'summary.json')
        self.phases = build_phases(p)
        self.results: List[Dict[str, Any]] = []
        self.trainings: List[Dict[str, Any]] = []
        self.plan_ms: List[float] = []
        # The controllers' diagnostics, latest, by namespace (hardware_id).
        self.controller_counts: Dict[str, Dict[str, int]] = {}
        self.controller_timing: Dict[str, Dict[str, float]] = {}
        self.dropped_timing = 0  # rows the buffer did not pair (not one period apart)
        old: Dict[str, Any] = {}
        if p['resume'] and not os.path.isfile(self.summary_path):
            self.get_logger().warning(f'resume: nothing to resume in {p["run_dir"]} (no '
                                      'summary.json): starting from the first phase')
        try:
            if p['resume'] and os.path.isfile(self.summary_path):
                with open(self.summary_path) as f:
                    old = json.load(f)
                self.results, self.trainings = list(old['episodes']), list(old['trainings'])
                self.plan_ms = [float(ms) for ms in old.get('plan_ms', [])]
            # Phases done, by index: with several arms, episodes finish out of order.
            self.done_phases = {int(r['index']) for r in self.results + self.trainings}
            # Episode ids (what the rows carry) only grow: the buffer pairs and acknowledges
            # each arm's rows in episode order, and an episode another arm gave up runs under a
            # new id. Without failures the id is the phase index.
            self.last_episode = max([int(r.get('episode', r['index'])) for r in self.results]
                                    + [int(old.get('last_episode', -1))])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # spin.run_node says it in one line; the file stays for whoever can mend it.
            raise ValueError(f'cannot resume from {self.summary_path} ({type(e).__name__}: '
                             f'{e}): move it away to start the run again') from None
        self.finished = False
        self.done = False
        self._phases_done_here = 0
        self.model_version = 0
        self.t_start = time.monotonic()
        self.phase_t0 = None
        self._stage = 'wait_graph'
        self._call_: Optional[Call] = None
        self._deadline: Optional[float] = None
        self._ask_again_at: Optional[float] = None  # a bad ~/stats answer: ask again then
        self._block: List[Dict[str, Any]] = []
        self._train_target = None
        self._sync_seen: Optional[Tuple[int, str]] = None
        self._sync_since = 0.0

        topics = p['topics']
        self.arms = check_arm_namespaces(p['arm_namespaces'])
        self.slots = [ArmSlot(self, ns) for ns in self.arms]
        # Each arm's controller by its diagnostics' hardware_id (its node's full namespace).
        self._slot_of = {full_namespace(self.get_namespace(), slot.namespace): slot
                         for slot in self.slots}
        self.progress_pub = self.create_publisher(String, topics['progress'], LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics_callback, 10)
        self.train_client = self.create_client(Trigger, topics['trainer_train'])
        self.trainer_stats_client = self.create_client(Trigger, topics['trainer_stats'])
        self.buffer_stats_client = self.create_client(Trigger, topics['buffer_stats'])
        for slot in self.slots:
            where = f'{slot.namespace}/' if slot.namespace else ''
            self.create_service(Trigger, f'~/{where}object_placed',
                                lambda req, res, slot=slot: self.object_placed_callback(
                                    req, res, slot))
        # Wall time: a lockstep twin's clock stands still between episodes.
        self.timer = self.create_timer(0.05, self.step,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        arms = f' on {len(self.arms)} arms {self.arms}' if self.arms != [''] else ''
        self.get_logger().info(
            f'recipe: {len(self.phases)} phases ({p["random_episodes"]} random episodes, '
            f'{p["iterations"]} x {p["mpc_episodes_per_iteration"]} MPC episodes'
            + (f' (the last {p["policy_episodes_per_iteration"]} the policy\'s from iteration '
               f'{p["policy_episodes_from_iteration"]})' if p['policy_episodes_per_iteration']
               else '')
            + f', {p["evaluation_episodes"]} evaluation episodes){arms}, run dir {self.run_dir}'
            + (f', resuming with {self.position} phases done' if self.position else ''))
        self._publish_progress('resumed' if self.position else 'started', 0.0, None)

    @property
    def position(self) -> int:
        """Phases done."""
        return len(self.done_phases)

    # --- inputs --------------------------------------------------------------------------
    def plan_ms_callback(self, msg: Float64):
        # A plan time is finite and >= 0; anything else would put NaN into summary.json.
        if math.isfinite(msg.data) and msg.data >= 0.0:
            self.plan_ms.append(float(msg.data))
        else:
            self.get_logger().error(f'plan time {msg.data} ms ignored', throttle_duration_sec=5.0)

    def diagnostics_callback(self, msg: DiagnosticArray):
        """Keep each controller's tick and deadline-miss counts and its timing percentiles
        (tick interval, joint and puck age, plan and send delay, ms) for the summary."""
        for status in msg.status:
            if status.name == 'mbrl_robot: controller':
                values = {v.key: v.value for v in status.values}
                try:
                    counts = {k: int(values[k]) for k in ('ticks', 'deadline_misses')
                              if k in values}
                    timing = {k: float(v) for k, v in values.items()
                              if k.endswith(('_p50', '_p99'))}
                except ValueError:
                    self.get_logger().error(f'bad controller diagnostics {values}: ignored',
                                            throttle_duration_sec=5.0)
                    continue
                self.controller_counts[status.hardware_id] = counts
                self.controller_timing[status.hardware_id] = timing
                slot = self._slot_of.get(status.hardware_id)
                if slot is not None:
                    slot.controller_heard(status.message, values)

    def object_placed_callback(self, request, response, slot: ArmSlot):
        slot.object_placed = True
        response.success, response.message = True, f'starting the episode on {slot.name}'
        return response

    # --- the state machine ---------------------------------------------------------------
    def step(self):
        try:
            getattr(self, '_stage_' + self._stage)()
        except RuntimeError as e:
            self.get_logger().error(f'recipe stopped: {e}')
            self._finish(failed=str(e))

    def _goto(self, stage: str, timeout: Optional[float] = None):
        self._stage = stage
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._ask_again_at = None

    def _call(self, client, request):
        self._call_ = Call(self, client, request)

    def _result(self, what: str):
        """The answer to the last call, None while on its way; the stage's deadline holds."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise RuntimeError(f'timed out waiting for {what}')
        self._call_.what = what
        return self._call_.result()

    def _stats(self, what: str, fields: Dict[str, type]) -> Optional[Dict[str, Any]]:
        """The JSON answer of the last ``~/stats`` call, None while on its way. An answer that
        is not one (the server's callback failed: ``success: false`` and why; not JSON; a
        field of ``fields`` missing or not of its type) is said in one line and the question
        asked again ``STATS_RETRY_S`` later, within the stage's deadline."""
        if self._ask_again_at is not None:
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise RuntimeError(f'timed out waiting for {what}')
            if time.monotonic() < self._ask_again_at:
                return None
            self._ask_again_at = None
            self._call(self._call_.client, Trigger.Request())
            return None
        result = self._result(what)
        if result is None:
            return None
        try:
            stats = json.loads(result.message) if result.success else None
        except ValueError:
            stats = None
        if not (isinstance(stats, dict) and all(isinstance(stats.get(k), t)
                                                for k, t in fields.items())):
            name = self.resolve_service_name(self._call_.client.srv_name)
            self.get_logger().error(f'{name} answered {result.message[:200]!r}: asking again '
                                    f'in {STATS_RETRY_S:g} s', throttle_duration_sec=5.0)
            self._ask_again_at = time.monotonic() + STATS_RETRY_S
            return None
        return stats

    def _stage_wait_graph(self):
        clients = [self.train_client, self.trainer_stats_client, self.buffer_stats_client]
        clients += [c for slot in self.slots for c in slot.clients]
        missing = [c.srv_name for c in clients if not c.service_is_ready()]
        if missing:
            self.get_logger().info(f'waiting for services {missing}', throttle_duration_sec=5.0)
            return
        # The model episodes wait for: the trainer's own count (a resumed run goes on with the
        # model its trainer loaded). Taken from the trainer's service, never from an
        # announcement on a topic, which any publisher could send.
        self._call(self.trainer_stats_client, Trigger.Request())
        self._goto('wait_model', 60.0)

    def _stage_wait_model(self):
        stats = self._stats("the trainer's model version", {'version': int})
        if stats is None:
            return
        self.model_version = stats['version']
        if self.model_version:
            self.get_logger().info(f'the trainer has model v{self.model_version}: the model '
                                   'episodes wait for it')
        self._next_phase()

    def _next_phase(self):
        pending = [ph for ph in self.phases if ph['index'] not in self.done_phases]
        if not pending:
            self._finish()
            return
        phase = pending[0]
        self.phase_t0 = time.monotonic()
        if phase['kind'] == 'episode':
            # Every episode up to the next training: run on the arms side by side.
            self._block = []
            for ph in pending:
                if ph['kind'] != 'episode':
                    break
                self._block.append(ph)
            self._goto('episodes')
        else:
            self._start_sync()

    def _stage_episodes(self):
        running = {slot.phase['index'] for slot in self.slots if slot.phase is not None}
        waiting = [ph for ph in self._block
                   if ph['index'] not in self.done_phases and ph['index'] not in running]
        for slot in self.slots:
            if waiting and slot.available():
                phase = waiting.pop(0)
                self.last_episode = max(phase['index'], self.last_episode + 1)
                slot.start(phase, self.last_episode)
                self._write_summary()  # the id is used: a resumed run goes on after it
        for slot in self.slots:
            try:
                result = slot.step()
            except RuntimeError as e:
                if len(self.slots) == 1:
                    raise
                slot.abandon(str(e))  # another arm runs the phase; this one rejoins later
                continue
            if result is not None:
                self.results.append(result)
                where = f' on {slot.namespace}' if slot.namespace else ''
                self._advance(result['index'],
                              f'{result["stage"]} episode (seed {result["seed"]}){where}: '
                              f'final distance {result["final_distance"]:.3f} m, '
                              f'{"success" if result["success"] else "failure"}')
        if all(ph['index'] in self.done_phases for ph in self._block):
            self._next_phase()
        elif not any(slot.phase is not None or time.monotonic() < slot.lost_until
                     or slot.available() for slot in self.slots):
            self.get_logger().info('waiting for an arm: none is ready',
                                   throttle_duration_sec=5.0)

    @staticmethod
    def seed_request(seed: int) -> SetParameters.Request:
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        return SetParameters.Request(parameters=[ParameterMsg(name='episode_seed', value=value)])

    def _stage_train_sync(self):
        stats = self._stats('the buffer to store every executed transition',
                            {'transitions': int})
        if stats is None:
            return
        # The buffer commits each row durably, so it may still be a few rows behind: train
        # only once it has taken in every row of the episodes run so far.
        stored = int(stats['transitions'])
        # Rows not one control period apart are dropped by the buffer, on purpose (counted).
        self.dropped_timing = int(stats.get('assembler', {}).get('dropped_timing', 0))
        behind = arms_behind(self.results, stats)
        if behind and not self._train_without(behind, stats):
            self._call(self.buffer_stats_client, Trigger.Request())
            return
        self._train_target = stored
        self._call(self.trainer_stats_client, Trigger.Request())
        self._goto('train_wait_data', 300.0)

    def _start_sync(self):
        """Ask the buffer whether it holds every executed row yet (stage ``train_sync``)."""
        self._call(self.buffer_stats_client, Trigger.Request())
        self._sync_seen = None  # the buffer's (transitions, last rows): its first answer sets it
        self._goto('train_sync', 120.0)

    def _train_without(self, behind: List[str], stats: Dict[str, Any]) -> bool:
        """Whether to train without the rows the buffer still lacks from the arms ``behind``.

        An arm's controller resends its rows until the buffer has them, so they are only late;
        but a controller that hangs (or loses its link) right after its episode holds them for
        as long as it hangs. With other arms to go on, once the buffer has not moved for
        ``episode_stall_s`` those arms are set aside like an arm stalled in an episode and the
        model is trained on what is stored; their rows go into the next training. With one arm
        (or every arm behind) the recipe waits: nothing could run the next episode anyway.
        """
        now = time.monotonic()
        seen = (stats['transitions'], json.dumps(stats.get('last_rows')))
        if seen != self._sync_seen:
            self._sync_seen, self._sync_since = seen, now
        stall_s = self.p['episode_stall_s']
        slots = [slot for slot in self.slots if slot.namespace in behind]
        if (now - self._sync_since <= stall_s or len(slots) != len(behind)
                or len(slots) == len(self.slots)):
            return False
        last_rows = dict(zip(stats.get('arm_namespaces') or [], stats.get('last_rows') or []))
        for slot in slots:
            episode = max(r['episode'] for r in self.results if r.get('arm') == slot.namespace)
            last = last_rows.get(slot.namespace)
            where = ('none of its rows' if last is None
                     else f'its last row episode {last[0]} step {last[1]}')
            slot.abandon(f'{slot.name} stalled: the buffer has not taken in its rows up to '
                         f'episode {episode} for {stall_s:g} s, {where}',
                         f'training on the {stats["transitions"]} transitions stored, its late '
                         'rows go into the next training')
        return True

    def _stage_train_wait_data(self):
        stats = self._stats(f'the trainer to receive {self._train_target} transitions',
                            TRAINER_STATS)
        if stats is None:
            return
        if stats['n_transitions'] < self._train_target or stats['training']:
            self._call(self.trainer_stats_client, Trigger.Request())
            return
        self._version_before = stats['version']
        self._trainer_pid = stats.get('pid')
        self._call(self.train_client, Trigger.Request())
        self._goto('train_start', 30.0)

    def _stage_train_start(self):
        result = self._result('the trainer to start')
        if result is None:
            return
        if not result.success and result.message != 'already training':  # asked twice
            raise RuntimeError(f'trainer refused to train: {result.message}')
        self._goto('training', self.p['episode_timeout_s'])
        self._call(self.trainer_stats_client, Trigger.Request())

    def _stage_training(self):
        stats = self._stats('training', TRAINER_STATS)
        if stats is None:
            return
        if stats['training']:
            self._call(self.trainer_stats_client, Trigger.Request())
            return
        last = stats['last_result']
        phase = next(ph for ph in self.phases if ph['index'] not in self.done_phases)
        if stats.get('pid') != self._trainer_pid and stats['version'] <= self._version_before:
            # Restarted before it announced the new model: sync and train again.
            self.get_logger().warning('the trainer restarted during training: training again')
            self._start_sync()
            return
        if stats['version'] <= self._version_before:
            if stats['version'] == 0:
                raise RuntimeError(f'training produced no usable model: {last.get("reason")}')
            # A retrain that fails validation is not published: go on with the last good model.
            self.get_logger().warning(f'retrain rejected ({last.get("reason")}): continuing '
                                      f'with model v{stats["version"]}')
            self.trainings.append({**phase, 'version': stats['version'], 'rejected': True,
                                   'reason': last.get('reason'),
                                   'n_transitions': last.get('n_transitions'),
                                   'wall_s': time.monotonic() - self.phase_t0})
            self._advance(phase['index'], f'kept model v{stats["version"]}')
            self._next_phase()
            return
        self.model_version = max(self.model_version, stats['version'])
        self.trainings.append({**phase, 'version': stats['version'],
                               'n_transitions': last.get('n_transitions'),
                               'val_loss': last.get('val_loss'),
                               'train_loss': last.get('train_loss'),
                               'epochs': last.get('epochs'),
                               'wall_s': time.monotonic() - self.phase_t0})
        self._advance(phase['index'], f'trained model v{stats["version"]} on '
                      f'{last.get("n_transitions")} transitions: val loss '
                      f'{last.get("val_loss"):.4f}')
        self._next_phase()

    def _advance(self, index: int, what: str):
        """Phase ``index`` is done: write the summary, log and publish the progress."""
        self.done_phases.add(index)
        self._write_summary()
        self._phases_done_here += 1
        elapsed = time.monotonic() - self.t_start
        # ETA from this session's pace (a resumed run did not time the phases it skipped).
        rate = elapsed / self._phases_done_here
        remaining = len(self.phases) - self.position
        self.get_logger().info(f'[{self.position}/{len(self.phases)}] {what} | elapsed '
                               f'{elapsed / 60:.1f} min, ETA {remaining * rate / 60:.1f} min')
        self._publish_progress(what, elapsed, remaining * rate)

    def _publish_progress(self, what: str, elapsed_s: float, eta_s: Optional[float]):
        """The recipe's progress as JSON on ``topics.progress`` (the live view's panel);
        ``eta_s`` None: not known yet."""
        current = self.phases[min(self.position, len(self.phases) - 1)]
        episodes = [ph for ph in self.phases if ph['kind'] == 'episode']
        done = [r for r in self.results if r['stage'].startswith('eval')] or self.results
        self.progress_pub.publish(String(data=json.dumps({
            'position': self.position, 'phases': len(self.phases),
            'phase': current.get('stage', current['kind']), 'last': what,
            'episode': len(self.results), 'episodes': len(episodes),
            'successes': sum(bool(r['success']) for r in done), 'evaluated': len(done),
            'elapsed_s': elapsed_s, 'eta_s': eta_s})))

    def _summary(self, failed: Optional[str] = None) -> Dict[str, Any]:
        counts = list(self.controller_counts.values())
        # The worst arm's timing percentiles.
        timing: Dict[str, float] = {}
        for arm in self.controller_timing.values():
            for k, v in arm.items():
                timing[k] = max(timing.get(k, v), v)
        return summarize(self.results, self.trainings, self.plan_ms,
                         time.monotonic() - self.t_start, self.p['task']['success_radius_m'],
                         run_dir=os.path.abspath(self.run_dir), complete=self.finished,
                         failed=failed, phases=len(self.phases), position=self.position,
                         deadline_misses=(sum(c.get('deadline_misses', 0) for c in counts)
                                          if counts else None),
                         controller_ticks=sum(c.get('ticks', 0) for c in counts) if counts
                         else None,
                         controller_timing_ms=timing, dropped_timing=self.dropped_timing,
                         last_episode=self.last_episode,
                         **({'arms': self.arms} if self.arms != [''] else {}))

    def _write_summary(self, failed: Optional[str] = None):
        tmp = self.summary_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self._summary(failed), f, indent=1)
        os.replace(tmp, self.summary_path)

    def _finish(self, failed: Optional[str] = None):
        for slot in self.slots:
            slot.episode_pub.publish(String(data=json.dumps({'episode': -1})))
        self.finished = failed is None
        self._write_summary(failed)
        self.timer.cancel()
        if failed is None and self.p['write_report']:
            try:
                from mbrl_robot.report import write_report
                path = write_report(self.run_dir)
                self.get_logger().info(f'report: {path}')
            except (ImportError, OSError, ValueError) as e:
                self.get_logger().error(f'report not written: {e}')
        summary = self._summary(failed)
        for stage, s in summary['stages'].items():
            self.get_logger().info(f'{stage}: {s["success_rate"] * 100:.0f}% success over '
                                   f'{s["episodes"]} episodes, mean final distance '
                                   f'{s["mean_final_distance"]:.3f} m')
        self.get_logger().info(f'summary: {self.summary_path}')
        # Delivered before the node goes with them: the live view's recording ends on the last
        # phase, and no controller runs on after the end (spin.run_node exits once done).
        end = time.monotonic() + FINAL_ACK_WAIT_S
        for pub in [self.progress_pub] + [slot.episode_pub for slot in self.slots]:
            pub.wait_for_all_acked(Duration(seconds=max(0.0, end - time.monotonic())))
        self.done = True


def main(args=None):
    """Run the node until the recipe ends, Ctrl-C or SIGTERM (see ``spin.run_node``); exit
    status 1 when the recipe stopped before its end (``summary.json``'s ``failed`` says why),
    so that ``mbrl_run`` and whatever runs it see the failure."""
    node = run_node(RecipeNode, args, until=lambda node: node.done)
    if node is not None and node.done and not node.finished:
        sys.exit(1)


if __name__ == '__main__':
    main()
