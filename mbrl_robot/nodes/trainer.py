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
"""Trainer node: keeps a copy of every transition the buffer serves and retrains the ensemble.

Transitions arrive as sequence-numbered batches over ROS 2 (``topics.transitions``), so the
trainer can run on another host (a GPU box); every ``sync_period_s`` it asks the buffer to resend
anything from the first sequence number it lacks, which also makes a restarted trainer or buffer
catch up. Training runs on a background thread so the node keeps answering; a model that
validates (finite weights and losses, validation loss below ``max_val_loss``) is saved as a
versioned checkpoint and announced on a transient-local topic.

With ``algorithm: mbpo`` each validated model also trains the MBPO policy (SAC on the recorded
transitions plus short rollouts of that model, ``core/algorithms/mbpo.py``), with ``distill`` the
planner distilled into a policy (DAgger with the MPC planner on that model as the expert,
``core/algorithms/distill.py``): the policy is saved beside the model (``v<N>/policy``) and
announced on ``topics.policy_version`` with the model's version, before the model itself, so a
controller in policy mode that waits for version N finds the policy N as soon as the recipe sees
the model N.
"""

import copy
import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
from typing import Tuple

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from std_msgs.msg import Float64MultiArray, String, UInt64, UInt8MultiArray
from std_srvs.srv import Trigger
import torch

from mbrl_robot.core.algorithms.distill import push_distill_agent
from mbrl_robot.core.algorithms.mbpo import push_mbpo_agent
from mbrl_robot.core.checkpoint import publish_dir, write_json
from mbrl_robot.core.control import resolve_device
from mbrl_robot.core.models import create_model, create_trainer, GaussianEnsemble
from mbrl_robot.core.tasks.push import ACTION_DIM, STATE_DIM
from mbrl_robot.nodes.spin import GuardedNode, run_node
from mbrl_robot.nodes.params import (add_live_parameters, declare_node_parameters,
                                     schema_descriptions)
from mbrl_robot.nodes.transport import (file_chunk_messages, FILES_QOS, LATCHED_QOS, LOSS_QOS,
                                        multiarray_to_rows, parse_transition_rows,
                                        TRANSITION_FIELDS, TRANSITION_LABELS, TransitionRows,
                                        TRANSITIONS_QOS)

VERSION_DIR = re.compile(r'^v(\d+)$')
ALGORITHMS = ('ensemble', 'mbpo', 'distill')
# The algorithms that train a policy with every model (a version is then a model-policy pair).
POLICY_ALGORITHMS = ('mbpo', 'distill')
POLICY_SUBDIR = 'policy'

DESCRIPTIONS = schema_descriptions('trainer')


def weights_sha256(folder: str) -> str:
    """The checksum a model's announcement carries: its ``model.pt``'s sha256."""
    with open(os.path.join(folder, 'model.pt'), 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class TrainerNode(GuardedNode):
    """Retrains the dynamics ensemble on all transitions, on request and on a schedule."""

    def __init__(self):
        super().__init__('trainer')
        p = declare_node_parameters(self, 'trainer')
        if p['torch_threads'] > 0:
            torch.set_num_threads(p['torch_threads'])
        self.device = resolve_device(p['device'])
        self.model_cfg = p['model']
        self.training_cfg = p['training']
        self.checkpoint_dir = p['checkpoint_dir']
        self.max_val_loss = p['max_val_loss']
        self.warm_start = p['warm_start']
        self.algorithm = p['algorithm']
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f'algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}')
        self.params = p
        self.has_policy = self.algorithm in POLICY_ALGORITHMS
        os.makedirs(self.checkpoint_dir, exist_ok=True)

        self._lock = threading.Lock()
        self._rows = {}  # seq -> transition row; the trainer's own copy of the buffer
        self._next_seq = 1  # lowest sequence number not yet held (the buffer starts at 1)
        self._n_at_last_fit = 0
        self._thread = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._model = None
        self.version = 0
        self.last_result = {}
        self._agent = None  # the policy learner (MBPO, distill), built at the first model
        self._fed_seq = 0  # highest seq handed to the policy learner
        self.policy_result = {}

        io = ReentrantCallbackGroup()
        self.model_pub = self.create_publisher(String, p['topics']['model_version'], LATCHED_QOS)
        self.policy_pub = self.create_publisher(String, p['topics']['policy_version'],
                                                LATCHED_QOS)
        # The checkpoint's bytes, for controllers on hosts that cannot read checkpoint_dir.
        self.files_pub = self.create_publisher(UInt8MultiArray, p['topics']['model_files'],
                                               FILES_QOS)
        self.loss_pub = self.create_publisher(Float64MultiArray, '~/loss', LOSS_QOS)
        self.resend_pub = self.create_publisher(UInt64, p['topics']['resend_from'], 10)
        self.create_subscription(Float64MultiArray, p['topics']['transitions'],
                                 self.transitions_callback, TRANSITIONS_QOS, callback_group=io)
        self.create_service(Trigger, '~/train', self.train_callback, callback_group=io)
        self.create_service(Trigger, '~/stats', self.stats_callback, callback_group=io)
        # Wall time: a lockstep twin's clock stands still while the recipe waits for training.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._io = io
        self.sync_timer = self.create_timer(p['sync_period_s'], self.sync_callback,
                                            callback_group=io, clock=self._steady)
        self.retrain_timer = None
        self._set_retrain_period(p['retrain_period_s'])
        # retrain_period_s, max_val_loss and warm_start take effect at once; the rest is
        # read_only (the model, the training set-up and MBPO's learner are built once).
        add_live_parameters(self, 'trainer', p, self.apply_params)
        self._resume()
        self.sync_callback()
        m = self.model_cfg
        self.get_logger().info(f'trainer ready on {self.device}: K={m["ensemble_size"]} '
                               f'{m["num_layers"]}x{m["hidden_size"]}'
                               f'{" + " + self.algorithm + " policy" if self.has_policy else ""}, '
                               f'checkpoints in {self.checkpoint_dir}')

    def apply_params(self, changed: dict):
        """Apply writable parameters set at run time (``changed`` is nested, already valid)."""
        if 'retrain_period_s' in changed:
            self._set_retrain_period(changed['retrain_period_s'])
        if 'max_val_loss' in changed:
            self.max_val_loss = changed['max_val_loss']
        if 'warm_start' in changed:
            self.warm_start = changed['warm_start']
        self.get_logger().info(f'parameters set: {changed}')

    def _set_retrain_period(self, period_s: float):
        """(Re)start the retrain schedule on wall time; 0 stops it."""
        if self.retrain_timer is not None:
            self.destroy_timer(self.retrain_timer)
            self.retrain_timer = None
        if period_s > 0:
            self.retrain_timer = self.create_timer(period_s, self.schedule_callback,
                                                   callback_group=self._io, clock=self._steady)

    def _resume(self):
        """Reannounce the newest checkpoint that loads, so a restarted trainer serves it again."""
        for name in os.listdir(self.checkpoint_dir):
            if name.endswith('.tmp') and VERSION_DIR.match(name[:-4]):
                # A version the last trainer did not finish (killed while saving it).
                self.get_logger().warning(f'removing the unfinished checkpoint {name}')
                shutil.rmtree(os.path.join(self.checkpoint_dir, name), ignore_errors=True)
        versions = sorted((int(m.group(1)), name) for name in os.listdir(self.checkpoint_dir)
                          if (m := VERSION_DIR.match(name)))
        for version, name in reversed(versions):
            path = os.path.join(self.checkpoint_dir, name)
            policy_info = os.path.join(path, POLICY_SUBDIR, 'announcement.json')
            if self.has_policy and not os.path.isfile(policy_info):
                # Stopped between the model and its policy: a version is a pair in mbpo mode.
                self.get_logger().warning(f'checkpoint {path} has no policy: skipped')
                continue
            try:
                self._model = GaussianEnsemble.load(path, device=self.device,
                                                    obs_dim=STATE_DIM, act_dim=ACTION_DIM)
            except (OSError, ValueError) as e:
                self.get_logger().error(f'checkpoint {path} unusable: {e}')
                continue
            self.version = version
            self._publish_files(path, version)
            if self.has_policy:
                # The SAC state is not restored: the next retrain trains the policy afresh on
                # every transition (docs/realtime_and_faults.md, "Restarting a node").
                with open(policy_info) as f:
                    self.policy_result = json.load(f)
                self.policy_pub.publish(String(data=json.dumps(self.policy_result)))
            # Announced again whatever its announcement.json holds: the recipe waits for the
            # version ~/stats reports, so that version must reach the controllers.
            info_path = os.path.join(path, 'announcement.json')
            try:
                with open(info_path) as f:
                    announcement = json.load(f)
                if not (isinstance(announcement, dict) and announcement.get('version') == version):
                    raise ValueError(f'not the announcement of v{version}')
            except (OSError, ValueError) as e:
                self.get_logger().warning(f'{info_path}: {e}: announcing v{version} afresh')
                announcement = {'version': version, 'path': path,
                                'sha256': weights_sha256(path), 'accepted': True}
            self.last_result = announcement
            self.model_pub.publish(String(data=json.dumps(announcement)))
            self.get_logger().info(f'resumed from checkpoint v{version}')
            return

    def _publish_files(self, path: str, version: int) -> None:
        """Send version ``version``'s folder as chunks on ``topics.model_files`` (before its
        announcement, so a controller that waits for the bytes has them soon after)."""
        for msg in file_chunk_messages(path, version):
            self.files_pub.publish(msg)

    # --- data ----------------------------------------------------------------------------
    def transitions_callback(self, msg: Float64MultiArray):
        try:
            rows = multiarray_to_rows(msg, TRANSITION_FIELDS, TRANSITION_LABELS)
            seqs = parse_transition_rows(rows).seqs
        except ValueError as e:
            self.get_logger().error(f'malformed transition batch dropped: {e}',
                                    throttle_duration_sec=1.0)
            return
        with self._lock:
            for seq, row in zip(seqs.tolist(), rows):
                self._rows.setdefault(seq, row)
            gap = seqs.size and seqs.min() > self._next_seq
            while self._next_seq in self._rows:
                self._next_seq += 1
            next_seq = self._next_seq
        if gap:
            self.resend_pub.publish(UInt64(data=int(next_seq)))

    def sync_callback(self):
        with self._lock:
            next_seq = self._next_seq
        self.resend_pub.publish(UInt64(data=int(next_seq)))

    def _batch(self) -> Tuple[TransitionRows, int]:
        """Every row held, and the first seq missing (rows below it have no gap)."""
        with self._lock:
            rows = np.stack([self._rows[s] for s in sorted(self._rows)])
            next_seq = self._next_seq
        return parse_transition_rows(rows), next_seq

    # --- training ------------------------------------------------------------------------
    def train_callback(self, request, response):
        response.success, response.message = self._start_training('request')
        return response

    def schedule_callback(self):
        with self._lock:
            fresh = len(self._rows) > self._n_at_last_fit
        if fresh:
            self._start_training('schedule')

    def _start_training(self, why: str):
        # The train service and the schedule timer run in a reentrant group: one start at a time.
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return False, 'already training'
            with self._lock:
                n = len(self._rows)
            if n < 10:
                return False, f'only {n} transitions: need at least 10'
            self._thread = threading.Thread(target=self._train, args=(why,), daemon=True)
            self._thread.start()
        return True, f'training on {n} transitions'

    def _train(self, why: str):
        t0 = time.monotonic()
        try:
            data, next_seq = self._batch()
            batch = data.batch
            seed = int(self.training_cfg['seed']) + self.version
            if self._model is None or not self.warm_start:
                model = create_model(self.model_cfg, STATE_DIM, ACTION_DIM, self.device, seed)
            else:
                # A copy: a fit that fails validation must not spoil the last good model.
                model = copy.deepcopy(self._model)
            trainer = create_trainer(model, {**self.training_cfg, 'seed': seed})
            self.get_logger().info(f'training ({why}) on {len(batch)} transitions')
            # The sequence numbers fix the validation split: a row is held out in every fit or
            # in none, so a warm-started model is never validated on rows it trained on.
            result = trainer.fit(batch, epoch_callback=self._publish_loss, stop_event=self._stop,
                                 ids=data.seqs)
        except Exception as e:  # noqa: B902 - a failed fit must not take the node down
            self.get_logger().error(f'training failed, keeping v{self.version}: {e!r}')
            self.last_result = {'accepted': False, 'reason': repr(e)}
            return
        with self._lock:
            self._n_at_last_fit = len(batch)
        problem = self._validate(model, result)
        summary = {'train_loss': result.train_losses[-1] if result.train_losses else None,
                   'val_loss': result.best_val_loss, 'epochs': result.epochs,
                   'n_transitions': len(batch), 'train_seconds': time.monotonic() - t0,
                   'members_improved': result.members_improved,
                   'elite_indices': list(model.elite_indices),
                   'train_losses': result.train_losses, 'val_losses': result.val_losses}
        if problem:
            # Cancelled by a shutdown is how a stopped run ends, not an error.
            log = self.get_logger().info if result.cancelled else self.get_logger().error
            log(f'model rejected ({problem}); keeping v{self.version}')
            self.last_result = {**summary, 'accepted': False, 'reason': problem}
            return
        version = self.version + 1
        path = os.path.abspath(os.path.join(self.checkpoint_dir, f'v{version:04d}'))
        # Built under v<N>.tmp and renamed once complete: a kill never leaves half a version.
        tmp = path + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        sha256 = weights_sha256(tmp)
        if self.has_policy:
            problem = self._train_policy(model, data, next_seq, version,
                                         os.path.join(tmp, POLICY_SUBDIR),
                                         os.path.join(path, POLICY_SUBDIR))
            if problem:
                # No model without its policy: a controller in policy mode waits for the policy
                # of the version the recipe saw, so the pair is rejected together.
                shutil.rmtree(tmp, ignore_errors=True)
                self.get_logger().error(f'model rejected ({problem}); keeping v{self.version}')
                self.last_result = {**summary, 'accepted': False, 'reason': problem}
                return
        announcement = {'version': version, 'path': path, 'sha256': sha256, 'accepted': True,
                        **summary, 'train_seconds': time.monotonic() - t0}
        write_json(os.path.join(tmp, 'announcement.json'), announcement)
        publish_dir(tmp, path)
        self._publish_files(path, version)
        if self.has_policy:
            self.policy_result = self._policy_announcement
            self.policy_pub.publish(String(data=json.dumps(self.policy_result)))
        self._model, self.version, self.last_result = model, version, announcement
        self.model_pub.publish(String(data=json.dumps(announcement)))
        self.get_logger().info(
            f'model v{version}: val loss {result.best_val_loss:.4f} after {result.epochs} epochs '
            f'on {len(batch)} transitions ({summary["train_seconds"]:.1f} s)')

    def _train_policy(self, model, data: TransitionRows, next_seq: int, version: int,
                      path: str, final: str) -> str:
        """The policy of ``model``: feed the rows the learner lacks, run its update on
        ``model`` (MBPO: SAC's schedule over the new rows; distill: one DAgger round), save to
        ``path`` and announce it as ``final`` (where ``path`` is renamed to once the version is
        whole).

        Only rows below ``next_seq`` (no gap before them) are fed, each exactly once, in order.
        Returns '' on success, else why the policy (and so the model) is rejected.
        """
        t0 = time.monotonic()
        try:
            if self._agent is None:
                make = push_mbpo_agent if self.algorithm == 'mbpo' else push_distill_agent
                self._agent = make(self.params, self.get_logger().info)
            new = (data.seqs > self._fed_seq) & (data.seqs < next_seq)
            if new.any():
                b = data.batch
                if self.algorithm == 'mbpo':
                    self._agent.add_transitions(b.obs[new], b.act[new], b.next_obs[new],
                                                data.targets[new], b.done[new],
                                                data.episodes[new], data.arms[new])
                else:
                    self._agent.add_transitions(b.obs[new], b.act[new], b.next_obs[new],
                                                data.targets[new], data.episodes[new],
                                                data.steps[new])
                self._fed_seq = int(data.seqs[new].max())
            self.get_logger().info(f'{self.algorithm}: policy update on model v{version}')
            # The policy learners run on the CPU, whatever device trained the model.
            run = self._agent.catch_up(copy.deepcopy(model).cpu(), stop=self._stop.is_set)
            if self._stop.is_set():
                return 'stopped during the policy update'
            sha256 = self._agent.save(path, version, extra={'method': self.algorithm,
                                                            'model_version': version})
        except Exception as e:  # noqa: B902 - a failed policy update must not stop the node
            return f'{self.algorithm} policy update failed: {e!r}'

        announcement = {'version': version, 'path': os.path.abspath(final), 'sha256': sha256,
                        'n_transitions': self._agent.n_real,
                        'train_seconds': time.monotonic() - t0, **run}
        if self.algorithm == 'mbpo':
            announcement['total_gradient_steps'] = self._agent.n_updates
        write_json(os.path.join(path, 'announcement.json'), announcement)
        self._policy_announcement = announcement
        self.get_logger().info(f'policy v{version}: ' + ', '.join(
            f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in run.items()))
        return ''

    def _validate(self, model, result) -> str:
        if result.cancelled:
            return 'training cancelled'
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            return 'non-finite weights'
        if not math.isfinite(result.best_val_loss) or result.best_val_loss > self.max_val_loss:
            return f'validation loss {result.best_val_loss} above {self.max_val_loss}'
        return ''

    def _publish_loss(self, epoch: int, train_loss: float, val_loss: float):
        self.loss_pub.publish(Float64MultiArray(data=[float(epoch), float(train_loss),
                                                      float(val_loss)]))

    def stats_callback(self, request, response):
        with self._lock:
            stats = {'n_transitions': len(self._rows), 'next_seq': self._next_seq,
                     'version': self.version,
                     'policy_version': self.policy_result.get('version', 0),
                     'training': self._thread is not None and self._thread.is_alive(),
                     'pid': os.getpid(),
                     'last_result': {k: v for k, v in self.last_result.items()
                                     if k not in ('train_losses', 'val_losses')}}
        response.success, response.message = True, json.dumps(stats)
        return response

    def destroy_node(self):
        if not hasattr(self, '_stop'):  # __init__ failed before the training thread existed
            super().destroy_node()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        super().destroy_node()


def main(args=None):
    """Run the node until Ctrl-C or SIGTERM (see ``spin.run_node``)."""
    run_node(TrainerNode, args, threads=3)


if __name__ == '__main__':
    main()
