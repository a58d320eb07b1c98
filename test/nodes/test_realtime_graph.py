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
"""The graph on the realistic twin in real time (config/twin_realistic.yaml), briefly.

A reduced recipe (two random episodes, a training round, one MPC episode) runs through
``mbrl_run`` while this process listens to the commands and the joint states. It asserts what
a physical arm needs: commands at >= 18 Hz on average with the cpu-sized planner, no
transition paired from states that were not one control period apart (a reused or late state),
no state older than the timeout acted on, and zero velocity at the end.
"""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_robot.config import node_params
from mbrl_robot.core.buffer.storage import TransitionStore

pytestmark = pytest.mark.ros

SMALL = ['recipe.random_episodes=2', 'recipe.iterations=1', 'recipe.mpc_episodes_per_iteration=1',
         'recipe.evaluation_episodes=0', 'recipe.baselines=[""]',
         'trainer.model.num_layers=2', 'trainer.model.hidden_size=32',
         'trainer.training.max_epochs=20', 'trainer.max_val_loss=10.0',
         # The profile compiles its planner (minutes on 2 cores); the same plans, uncompiled.
         'controller.planner.backend=fused']


def test_realistic_realtime_graph(tmp_path, ros_env):
    commands, joints = [], []
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('realtime_probe', context=context)
    controller = node_params('twin_realistic', 'controller')['controller_name']
    node.create_subscription(Float64MultiArray, f'{controller}/commands',
                             lambda m: commands.append((time.monotonic(), list(m.data))), 100)
    node.create_subscription(JointState, 'joint_states',
                             lambda m: joints.append(list(m.velocity)), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        cmd = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'twin_realistic',
               '--run-dir', str(tmp_path), '--timeout', '300']
        for s in SMALL:
            cmd += ['--set', s]
        proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=400)
        time.sleep(0.5)
    finally:
        stop.set()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['complete'], summary.get('failed')

    # Commands at >= 18 Hz on average from the first to the last (episodes and the idle time
    # between them: a realtime controller commands every tick), and zero velocity at the end.
    times = np.array([t for t, _ in commands])
    rate = (len(times) - 1) / (times[-1] - times[0])
    gaps = np.diff(times)
    worst = np.argsort(gaps)[-5:][::-1]
    assert rate >= 18.0, (
        f'{rate:.1f} Hz over {len(times)} commands; longest gaps (s, at s from the first): '
        + ', '.join(f'{gaps[i]:.3f}@{times[i] - times[0]:.1f}' for i in worst)
        + f"; the controller's own: {summary.get('controller_ticks')} ticks, "
        f"{summary.get('deadline_misses')} misses, {summary.get('controller_timing_ms')}")
    assert np.allclose(commands[-1][1], 0.0), commands[-1]
    assert np.max(np.abs(joints[-1])) < 0.02, joints[-1]  # the twin's arm is still

    # Every stored transition spans one control period; no state older than the timeout acted
    # on (the controller's own figures: the p99 age of what it planned from).
    period = 1.0 / node_params('twin_realistic', 'controller')['task']['control_rate_hz']
    store = TransitionStore(str(tmp_path / 'buffer'))
    try:
        records = store.records()
    finally:
        store.close()
    assert len(records.seq) > 0.5 * 3 * 100, len(records.seq)
    span = records.next_stamp - records.stamp
    assert np.all(np.abs(span - period) <= 0.3 * period + 1e-9), span
    timing = summary['controller_timing_ms']
    timeout_ms = 1e3 * node_params('twin_realistic', 'controller')['state_timeout_s']
    assert timing['joint_age_ms_p99'] < timeout_ms and timing['puck_age_ms_p99'] < timeout_ms
    assert timing['tick_interval_ms_p50'] == pytest.approx(1e3 * period, rel=0.1)
