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
"""The trainer node over real DDS: catches up from the buffer, trains, announces, resumes.

The test plays the buffer: it publishes sequence-numbered transition batches with a hole in
them, answers the trainer's ``/buffer/resend_from`` requests, sends a malformed batch, asks for
a retrain, and checks the announced checkpoint. A restarted trainer announces its last model
again (transient local) so a controller that starts later still gets it, skipping a newer
checkpoint with a bad checksum and removing one left half-saved.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Float64MultiArray, String, UInt64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mbrl_robot.core.models import GaussianEnsemble  # noqa: E402
from mbrl_robot.core.types import TransitionBatch  # noqa: E402
from mbrl_robot.nodes.transport import (LATCHED_QOS, LOSS_QOS,  # noqa: E402
                                        rows_to_multiarray, transition_rows, TRANSITIONS_QOS)
from ros_calls import call_trigger  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trainer_process(env, checkpoint_dir, *extra):
    return subprocess.Popen(
        [sys.executable, '-m', 'mbrl_robot.nodes.trainer', '--ros-args', '--params-file',
         'config/ci_smoke.yaml', '-p', 'trainer:use_sim_time:=false',
         '-p', f'trainer:checkpoint_dir:={checkpoint_dir}', '-p', 'trainer:sync_period_s:=0.5']
        + [a for p in extra for a in ('-p', f'trainer:{p}')],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def dataset(n=300, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 17)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 7)).astype(np.float32)
    nxt = obs + 0.05 * np.tanh(obs) + 0.05 * np.pad(act, ((0, 0), (0, 10)))
    batch = TransitionBatch(obs, act, nxt.astype(np.float32), np.zeros(n, np.float32),
                            np.arange(n) % 100 == 99)
    return transition_rows(np.arange(1, n + 1), np.arange(n) // 100, np.arange(n) % 100, batch,
                           np.tile([0.6, 0.0, 0.015], (n, 1)))


class FakeBuffer:

    def __init__(self, rows):
        self.rows = rows
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('fake_buffer', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.pub = self.node.create_publisher(Float64MultiArray, '/buffer/transitions',
                                              TRANSITIONS_QOS)
        self.requests = []
        self.answer = False
        self.node.create_subscription(UInt64, '/buffer/resend_from', self.resend, 10)
        self.models = []
        self.node.create_subscription(String, '/trainer/model',
                                      lambda m: self.models.append(json.loads(m.data)),
                                      LATCHED_QOS)
        self.train = self.node.create_client(Trigger, '/trainer/train')
        self.stats = self.node.create_client(Trigger, '/trainer/stats')

    def resend(self, msg):
        self.requests.append(msg.data)
        if not self.answer:
            return
        rows = self.rows[self.rows[:, 0] >= msg.data]
        for i in range(0, len(rows), 100):
            self.pub.publish(rows_to_multiarray(rows[i:i + 100]))

    def spin_until(self, predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call(self, client, attempts=1):
        return call_trigger(self.executor, client, attempts=attempts)

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def test_trainer_catches_up_trains_announces_and_resumes(tmp_path, ros_env):
    rows = dataset()
    buffer = FakeBuffer(rows)
    proc = trainer_process(ros_env, tmp_path / 'models')
    try:
        # Live batches with a hole (seqs 1-150 never arrive live) and a malformed batch.
        assert buffer.spin_until(lambda: buffer.requests, 30.0), 'no resend_from request'
        buffer.spin_until(lambda: False, 1.0)
        buffer.pub.publish(rows_to_multiarray(rows[150:220]))
        buffer.pub.publish(Float64MultiArray(data=[1.0, 2.0, 3.0]))
        buffer.spin_until(lambda: False, 1.0)
        # Everything it holds starts at 151: it keeps asking from seq 1 until it gets it.
        buffer.requests.clear()
        assert buffer.spin_until(lambda: buffer.requests, 5.0)
        assert set(buffer.requests) == {1}, buffer.requests
        buffer.answer = True

        def stats():
            return json.loads(buffer.call(buffer.stats, attempts=3).message)

        assert buffer.spin_until(lambda: stats()['n_transitions'] == len(rows), 20.0)
        assert stats()['next_seq'] == len(rows) + 1
        assert buffer.call(buffer.train).success
        assert buffer.spin_until(lambda: buffer.models, 120.0), 'no model announced'
        announcement = buffer.models[-1]
        assert announcement['version'] == 1 and announcement['n_transitions'] == len(rows)
        assert announcement['val_loss'] < 1.0
        model = GaussianEnsemble.load(announcement['path'])
        assert model.ensemble_size == 3
        # A live view that subscribes after the fit still gets its loss curve, every epoch.
        losses = []
        buffer.node.create_subscription(Float64MultiArray, '/trainer/loss',
                                        lambda m: losses.append(list(m.data)), LOSS_QOS)
        assert buffer.spin_until(lambda: len(losses) >= announcement['epochs'], 20.0), losses
        assert [e for e, _, _ in losses] == list(range(1, announcement['epochs'] + 1))
        proc.terminate()
        proc.wait(timeout=20)
        log = proc.stdout.read()
        assert 'malformed transition batch dropped' in log

        # A newer checkpoint with a bad checksum and one killed while being saved: the
        # restarted trainer skips the first, removes the second and announces v1 again.
        models = tmp_path / 'models'
        shutil.copytree(models / 'v0001', models / 'v0002')
        weights = bytearray((models / 'v0002' / 'model.pt').read_bytes())
        weights[-100] ^= 0xFF
        (models / 'v0002' / 'model.pt').write_bytes(bytes(weights))
        shutil.copytree(models / 'v0001', models / 'v0003.tmp')
        buffer.models.clear()
        proc = trainer_process(ros_env, models)
        assert buffer.spin_until(lambda: buffer.models, 30.0)
        assert buffer.models[-1]['version'] == 1
        assert not (models / 'v0003.tmp').exists()
        proc.terminate()
        proc.wait(timeout=20)
        log = proc.stdout.read()
        assert 'v0002 unusable' in log and 'sha256' in log
        assert 'removing the unfinished checkpoint v0003.tmp' in log

        # A checkpoint whose announcement.json is damaged: announced afresh all the same (the
        # recipe waits for the version ~/stats reports), with its weights' checksum.
        (models / 'v0001' / 'announcement.json').write_text('{"version": 1, "pa')
        buffer.models.clear()
        proc = trainer_process(ros_env, models)
        assert buffer.spin_until(lambda: buffer.models, 30.0)
        fresh = buffer.models[-1]
        assert fresh['version'] == 1 and fresh['path'] == announcement['path']
        assert fresh['sha256'] == announcement['sha256']
        proc.terminate()
        proc.wait(timeout=20)
        assert 'announcing v1 afresh' in proc.stdout.read()
    finally:
        buffer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mbpo_trainer_rejects_a_model_whose_policy_update_fails(tmp_path, ros_env):
    """In mbpo mode a version is a model and its policy: if SAC cannot be built, the validated
    model is not announced either (a controller in policy mode would wait for its policy)."""
    rows = dataset()
    buffer = FakeBuffer(rows)
    buffer.answer = True
    proc = trainer_process(ros_env, tmp_path / 'models', 'algorithm:=mbpo',
                           'mbpo.member:=nonsense')
    try:
        def stats():
            return json.loads(buffer.call(buffer.stats, attempts=3).message)

        assert buffer.spin_until(lambda: stats()['n_transitions'] == len(rows), 30.0)
        assert buffer.call(buffer.train).success
        assert buffer.spin_until(lambda: not stats()['training'], 120.0)
        result = stats()
        assert result['version'] == 0 and result['policy_version'] == 0
        assert not result['last_result']['accepted']
        assert 'mbpo policy update failed' in result['last_result']['reason']
        assert not buffer.models and not os.listdir(tmp_path / 'models')
    finally:
        buffer.close()
        proc.kill()
        proc.wait()
