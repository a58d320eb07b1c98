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
controller to run the episode, wait for it to finish. Progress is logged with an ETA and the run
summary (``summary.json``) is rewritten after every phase, so a stopped run resumes where it
stopped: the buffer and the trainer's checkpoints keep the data and the model.
"""

import json
import os
import time
from typing import Any, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Float64, Float64MultiArray, Int32, String
from std_srvs.srv import Trigger

from mbrl_robot.core.algorithms.mpc_recipe import (build_phases, episode_result,
                                                   summarize)
from mbrl_robot.nodes.spin import run_node
from mbrl_robot.nodes.params import declare_node_parameters, schema_descriptions
from mbrl_robot.nodes.transport import (EXECUTED_QOS, LATCHED_QOS, multiarray_to_rows,
                                        parse_executed_row)

DESCRIPTIONS = schema_descriptions('recipe')
# A service call unanswered this long (s) is sent again once the service is back: its server
# died with the request and mbrl_run restarted it.
CALL_RETRY_S = 5.0


class RecipeNode(Node):
    """Runs the recipe's phases one after another through the node graph."""

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
        self.controller_counts: Dict[str, int] = {}  # the controller's diagnostics, latest
        self.controller_timing: Dict[str, float] = {}  # its timing percentiles, latest
        self.dropped_timing = 0  # rows the buffer did not pair (not one period apart)
        if p['resume'] and os.path.isfile(self.summary_path):
            with open(self.summary_path) as f:
                old = json.load(f)
            self.results, self.trainings = old['episodes'], old['trainings']
            self.plan_ms = old.get('plan_ms', [])
        self.position = len(self.results) + len(self.trainings)
        self.finished = False
        self.done = False
        self._phases_done_here = 0
        self.model_version = 0
        self.t_start = time.monotonic()
        self.phase_t0 = None
        self._stage = 'wait_graph'
        self._future = None
        self._deadline = None
        self._closed_episode: Optional[int] = None
        self._rows: Dict[int, Dict[int, Any]] = {}
        self._done_episode: Optional[int] = None
        self._train_target = None
        self._grace_end = None

        topics = p['topics']
        self.episode_pub = self.create_publisher(String, topics['episode'], LATCHED_QOS)
        self.progress_pub = self.create_publisher(String, topics['progress'], LATCHED_QOS)
        self.create_subscription(Float64MultiArray, topics['executed'], self.executed_callback,
                                 EXECUTED_QOS)
        self.create_subscription(Int32, topics['episode_done'], self.done_callback,
                                 EXECUTED_QOS)
        self.create_subscription(Float64, topics['plan_time_ms'], self.plan_ms_callback, 100)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics_callback, 10)
        self.create_subscription(String, topics['model_version'], self.model_callback,
                                 LATCHED_QOS)
        self.reset_client = self.create_client(Trigger, p['reset_service'])
        self.seed_client = (self.create_client(SetParameters, p['seed_service'])
                            if p['seed_service'] else None)
        self.train_client = self.create_client(Trigger, topics['trainer_train'])
        self.trainer_stats_client = self.create_client(Trigger, topics['trainer_stats'])
        self.buffer_stats_client = self.create_client(Trigger, topics['buffer_stats'])
        # Wall time: a lockstep twin's clock stands still between episodes.
        self._object_placed = False
        self.create_service(Trigger, '~/object_placed', self.object_placed_callback)
        self.timer = self.create_timer(0.05, self.step,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'recipe: {len(self.phases)} phases ({p["random_episodes"]} random episodes, '
            f'{p["iterations"]} x {p["mpc_episodes_per_iteration"]} MPC episodes, '
            f'{p["evaluation_episodes"]} evaluation episodes), run dir {self.run_dir}'
            + (f', resuming at phase {self.position}' if self.position else ''))
        self._publish_progress('resumed' if self.position else 'started', 0.0, None)

    # --- inputs --------------------------------------------------------------------------
    def executed_callback(self, msg: Float64MultiArray):
        try:
            for raw in multiarray_to_rows(msg):
                row = parse_executed_row(raw)
                self._rows.setdefault(row.episode, {})[row.step] = row
        except ValueError as e:
            self.get_logger().error(f'malformed executed row ignored: {e}',
                                    throttle_duration_sec=1.0)

    def done_callback(self, msg: Int32):
        self._done_episode = msg.data

    def plan_ms_callback(self, msg: Float64):
        self.plan_ms.append(float(msg.data))

    def diagnostics_callback(self, msg: DiagnosticArray):
        """Keep the controller's tick and deadline-miss counts and its timing percentiles (tick
        interval, joint and puck age, plan and send delay, ms) for the summary."""
        for status in msg.status:
            if status.name == 'mbrl_robot: controller':
                values = {v.key: v.value for v in status.values}
                try:
                    self.controller_counts = {k: int(values[k]) for k in
                                              ('ticks', 'deadline_misses') if k in values}
                    self.controller_timing = {k: float(v) for k, v in values.items()
                                              if k.endswith(('_p50', '_p99'))}
                except ValueError:
                    self.get_logger().error(f'bad controller diagnostics {values}: ignored',
                                            throttle_duration_sec=5.0)

    def model_callback(self, msg: String):
        try:
            info = json.loads(msg.data)
            self.model_version = max(self.model_version, int(info['version']))
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f'bad model announcement {msg.data!r}')

    def object_placed_callback(self, request, response):
        self._object_placed = True
        response.success, response.message = True, 'starting the episode'
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

    def _check_deadline(self, what: str):
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise RuntimeError(f'timed out waiting for {what}')

    def _stage_wait_graph(self):
        clients = [self.reset_client, self.train_client, self.trainer_stats_client,
                   self.buffer_stats_client]
        if self.seed_client is not None:
            clients.append(self.seed_client)
        missing = [c.srv_name for c in clients if not c.service_is_ready()]
        if missing:
            self.get_logger().info(f'waiting for services {missing}', throttle_duration_sec=5.0)
            return
        self._next_phase()

    def _next_phase(self):
        if self.position >= len(self.phases):
            self._finish()
            return
        phase = self.phases[self.position]
        self.phase_t0 = time.monotonic()
        if phase['kind'] == 'episode' and self.seed_client is None:
            self._call(self.reset_client, Trigger.Request())
            self._goto('resetting', self.p['episode_timeout_s'])
        elif phase['kind'] == 'episode':
            self._call(self.seed_client, self._seed_request(phase['seed']))
            self._goto('seeding', 30.0)
        else:
            self._call(self.buffer_stats_client, Trigger.Request())
            self._goto('train_sync', 120.0)

    def _call(self, client, request):
        self._future = client.call_async(request)
        self._pending_call = (client, request, time.monotonic())

    def _result(self, what: str):
        self._check_deadline(what)
        if not self._future.done():
            client, request, t_call = self._pending_call
            if time.monotonic() - t_call > CALL_RETRY_S and client.service_is_ready():
                # The server died with our request (a node restarted): ask its successor.
                self.get_logger().warning(f'no answer from {client.srv_name} in '
                                          f'{CALL_RETRY_S:g} s: asking again')
                self._call(client, request)
            return None
        result = self._future.result()
        if result is None:
            raise RuntimeError(f'{what}: service call failed')
        return result

    @staticmethod
    def _seed_request(seed: int) -> SetParameters.Request:
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        return SetParameters.Request(parameters=[ParameterMsg(name='episode_seed', value=value)])

    def _stage_seeding(self):
        result = self._result('the twin to take the episode seed')
        if result is None:
            return
        if not all(r.successful for r in result.results):
            raise RuntimeError(f'twin refused the episode seed: {result.results}')
        self._call(self.reset_client, Trigger.Request())
        self._goto('resetting', 120.0)

    def _stage_resetting(self):
        result = self._result('the reset')
        if result is None:
            return
        if not result.success:
            raise RuntimeError(f'reset failed: {result.message}')
        if self.p['wait_for_operator']:
            self._object_placed = False
            self.get_logger().info('arm at home: place the puck, then call '
                                   f'{self.get_name()}/object_placed (std_srvs/Trigger)')
            self._goto('operator')
            return
        self._start_episode()

    def _stage_operator(self):
        if self._object_placed:
            self._start_episode()

    def _start_episode(self):
        phase = self.phases[self.position]
        self._done_episode = None
        # A planner episode waits for the model it asked for, a policy episode for its policy
        # (announced with the model's version).
        min_version = self.model_version if phase['policy'] in ('planner', 'policy') else 0
        self.episode_pub.publish(String(data=json.dumps({
            'episode': phase['index'], 'policy': phase['policy'], 'seed': phase['seed'],
            'min_model_version': min_version,
            'explore': not phase['stage'].startswith('eval')})))
        self._goto('running', self.p['episode_timeout_s'])

    def _stage_running(self):
        self._check_deadline(f'episode {self.phases[self.position]["index"]}')
        phase = self.phases[self.position]
        if self._done_episode != phase['index']:
            return
        if self._closed_episode != phase['index']:
            # The episode is over: a controller restarted from now on must not run it again
            # (the latched announcement would say it is still on).
            self._closed_episode = phase['index']
            self.episode_pub.publish(String(data=json.dumps({'episode': -1})))
        rows = self._rows.get(phase['index'], {})
        complete = rows and rows[max(rows)].terminal and len(rows) == max(rows) + 1
        if not complete and time.monotonic() < self._done_grace_end():
            return  # episode_done may overtake the last rows: they travel on another topic
        self._rows.pop(phase['index'], None)
        self._grace_end = None
        result = self._episode_result(phase, rows)
        self.results.append(result)
        self._advance(f'{phase["stage"]} episode (seed {phase["seed"]}): final distance '
                      f'{result["final_distance"]:.3f} m, '
                      f'{"success" if result["success"] else "failure"}')

    def _done_grace_end(self) -> float:
        if self._grace_end is None:
            self._grace_end = time.monotonic() + 5.0
        return self._grace_end

    def _episode_result(self, phase, rows) -> Dict[str, Any]:
        steps = sorted(rows)
        if not steps or not rows[steps[-1]].terminal:
            raise RuntimeError(f'episode {phase["index"]} ended without its terminal row '
                               f'({len(steps)} rows received)')
        states = np.stack([rows[s].s for s in steps])
        stamps = np.array([rows[s].stamp for s in steps])
        result = episode_result(phase, states, rows[steps[-1]].target,
                                self.p['task']['success_radius_m'],
                                time.monotonic() - self.phase_t0)
        result['command_period_s'] = float(np.median(np.diff(stamps))) if len(steps) > 1 else 0.0
        return result

    def _stage_train_sync(self):
        result = self._result('the buffer to store every executed transition')
        if result is None:
            return
        # The buffer commits each row durably, so it may still be a few rows behind: train
        # only once it holds every transition of the episodes run so far.
        expected = sum(r['steps'] for r in self.results)
        stats = json.loads(result.message)
        stored = int(stats['transitions'])
        # Rows not one control period apart are dropped by the buffer, on purpose (counted).
        self.dropped_timing = int(stats.get('assembler', {}).get('dropped_timing', 0))
        if stored + self.dropped_timing < expected:
            self._call(self.buffer_stats_client, Trigger.Request())
            return
        self._train_target = stored
        self._call(self.trainer_stats_client, Trigger.Request())
        self._goto('train_wait_data', 300.0)

    def _stage_train_wait_data(self):
        result = self._result(f'the trainer to receive {self._train_target} transitions')
        if result is None:
            return
        stats = json.loads(result.message)
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
        result = self._result('training')
        if result is None:
            return
        stats = json.loads(result.message)
        if stats['training']:
            self._call(self.trainer_stats_client, Trigger.Request())
            return
        last = stats['last_result']
        phase = self.phases[self.position]
        if stats.get('pid') != self._trainer_pid and stats['version'] <= self._version_before:
            # Restarted before it announced the new model: sync and train again.
            self.get_logger().warning('the trainer restarted during training: training again')
            self._call(self.buffer_stats_client, Trigger.Request())
            self._goto('train_sync', 120.0)
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
            self._advance(f'kept model v{stats["version"]}')
            return
        self.model_version = max(self.model_version, stats['version'])
        self.trainings.append({**phase, 'version': stats['version'],
                               'n_transitions': last.get('n_transitions'),
                               'val_loss': last.get('val_loss'),
                               'train_loss': last.get('train_loss'),
                               'epochs': last.get('epochs'),
                               'wall_s': time.monotonic() - self.phase_t0})
        self._advance(f'trained model v{stats["version"]} on {last.get("n_transitions")} '
                      f'transitions: val loss {last.get("val_loss"):.4f}')

    def _advance(self, what: str):
        self.position += 1
        self._write_summary()
        self._phases_done_here += 1
        elapsed = time.monotonic() - self.t_start
        # ETA from this session's pace (a resumed run did not time the phases it skipped).
        rate = elapsed / self._phases_done_here
        remaining = len(self.phases) - self.position
        self.get_logger().info(f'[{self.position}/{len(self.phases)}] {what} | elapsed '
                               f'{elapsed / 60:.1f} min, ETA {remaining * rate / 60:.1f} min')
        self._publish_progress(what, elapsed, remaining * rate)
        self._next_phase()

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
        return summarize(self.results, self.trainings, self.plan_ms,
                         time.monotonic() - self.t_start, self.p['task']['success_radius_m'],
                         run_dir=os.path.abspath(self.run_dir), complete=self.finished,
                         failed=failed, phases=len(self.phases), position=self.position,
                         deadline_misses=self.controller_counts.get('deadline_misses'),
                         controller_ticks=self.controller_counts.get('ticks'),
                         controller_timing_ms=self.controller_timing,
                         dropped_timing=self.dropped_timing)

    def _write_summary(self, failed: Optional[str] = None):
        tmp = self.summary_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self._summary(failed), f, indent=1)
        os.replace(tmp, self.summary_path)

    def _finish(self, failed: Optional[str] = None):
        self.episode_pub.publish(String(data=json.dumps({'episode': -1})))
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
        self.done = True


def main(args=None):
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    run_node(RecipeNode, args, until=lambda node: node.done)


if __name__ == '__main__':
    main()
