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
"""What the live view costs the 20 Hz control loop: plan latency and tick jitter, off and on.

Runs ``mbrl_run`` (default: the ci_smoke profile with a realtime twin, so the controller's ticks
are paced by the wall clock, and more MPC and evaluation episodes) alternately without and with
``--live``; with the live view a Foxglove client (``mbrl_robot/live_client.py``) subscribes to
every channel for the whole run, the worst case. Per run, one JSON line: plan latency (the run's
summary), the wall-clock intervals between the controller's commands as this process receives
them (jitter = their deviation from the 50 ms period), the monitor's CPU time and what the client
received; then one ``ratio`` line (live / off, medians over the repeats).

Usage::

    python benchmarks/live_view_cost.py [--profile ci_smoke] [--repeats 2] [--set ...]
"""

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mbrl_robot import live_client
from mbrl_robot.config import profile_argument

DEFAULT_SETS = ['twin.mode=realtime', 'recipe.mpc_episodes_per_iteration=4',
                'recipe.evaluation_episodes=4']


class CommandTimes:
    """Wall-clock receive times of the controller's commands (rclpy in a thread)."""

    def __init__(self, topic: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Float64MultiArray
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('live_view_cost', context=self.context)
        self.times: List[float] = []
        self.node.create_subscription(Float64MultiArray, topic,
                                      lambda _: self.times.append(time.monotonic()), 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    def close(self):
        self.rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()


def monitor_cpu_s(run_dir: str) -> Optional[float]:
    """CPU seconds (user + system) of this run's monitor process so far, from /proc."""
    clock = os.sysconf('SC_CLK_TCK')
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().split(b'\0')
            if b'mbrl_robot.nodes.monitor' in cmd and any(run_dir.encode() in a for a in cmd):
                with open(f'/proc/{pid}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / clock
        except OSError:
            continue
    return None


def jitter(times: List[float], period_s: float) -> Dict[str, float]:
    """Intervals between consecutive commands (ms) within episodes (gaps > 4 periods dropped)."""
    dt = np.diff(np.asarray(times)) * 1e3
    dt = dt[dt < 4 * period_s * 1e3]
    dev = np.abs(dt - period_s * 1e3)
    if not len(dt):
        return {'ticks': 0}
    return {'ticks': int(len(dt) + 1), 'period_ms_median': float(np.median(dt)),
            'jitter_ms_std': float(np.std(dt)), 'jitter_ms_p99': float(np.percentile(dev, 99)),
            'jitter_ms_max': float(dev.max())}


def run_once(args, live: bool, index: int) -> Dict[str, Any]:
    name = f'{index:02d}-{"live" if live else "off"}'
    run_dir = os.path.abspath(os.path.join(args.run_dir, name))
    port = 20000 + random.randint(0, 20000)
    domain = random.randint(100, 199)
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    cmd = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', args.profile, '--run-dir',
           run_dir, '--timeout', str(args.timeout), '--no-progress']
    cmd += [a for s in DEFAULT_SETS + args.sets for a in ('--set', s)]
    if live:
        cmd += ['--live', '--set', f'monitor.port={port}']
    commands = CommandTimes('velocity_controller/commands')
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    session: Dict[str, Any] = {}
    watcher = None
    if live:
        def watch():
            session['s'] = asyncio.run(live_client.collect(
                f'ws://127.0.0.1:{port}', seconds=args.timeout, connect_timeout_s=60.0))
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    cpu = None
    while proc.poll() is None:
        cpu = (monitor_cpu_s(run_dir) if live else None) or cpu
        time.sleep(0.5)
    if watcher is not None:
        watcher.join(timeout=30.0)
    commands.close()
    with open(os.path.join(run_dir, 'summary.json')) as f:
        summary = json.load(f)
    received = session['s'].messages if 's' in session else {}
    return {'kind': 'run', 'live': live, 'rc': proc.returncode, 'run_dir': run_dir,
            'plan_ms_median': summary['plan_latency_ms']['median'],
            'plan_ms_p99': summary['plan_latency_ms']['p99'],
            'plans': summary['plan_latency_ms']['count'],
            'deadline_misses': summary.get('deadline_misses'),
            **jitter(commands.times, 1.0 / 20.0), 'monitor_cpu_s': cpu,
            'client_messages': sum(len(v) for v in received.values()),
            'client_topics': len(received), 'wall_s': summary['wall_s']}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--profile', type=profile_argument, default='ci_smoke')
    ap.add_argument('--repeats', type=int, default=2, help='pairs of runs (off, live)')
    ap.add_argument('--set', dest='sets', action='append', default=[],
                    metavar='NODE.PARAM=VALUE', help='passed to mbrl_run --set')
    ap.add_argument('--run-dir', default='runs/live_view_cost')
    ap.add_argument('--timeout', type=float, default=600.0)
    args = ap.parse_args(argv)
    lines = []
    for k in range(args.repeats):
        for live in (False, True):
            line = run_once(args, live, len(lines))
            lines.append(line)
            print(json.dumps(line), flush=True)
    ratio = {'kind': 'ratio', 'note': 'live / off, medians over the runs'}
    for key in ('plan_ms_median', 'plan_ms_p99', 'jitter_ms_std', 'jitter_ms_p99'):
        on = [ln[key] for ln in lines if ln['live'] and key in ln]
        off = [ln[key] for ln in lines if not ln['live'] and key in ln]
        if on and off:
            ratio[key] = float(np.median(on) / np.median(off))
            ratio[key + '_off'], ratio[key + '_live'] = float(np.median(off)), float(np.median(on))
    print(json.dumps(ratio), flush=True)
    return 0 if all(ln['rc'] == 0 for ln in lines) else 1


if __name__ == '__main__':
    sys.exit(main())
