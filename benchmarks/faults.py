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
"""Fault campaign through the ROS 2 node graph: nodes killed -9 at random points, JSON lines out.

Each run is ``mbrl_run`` (restarting what dies) with ``--kills`` SIGKILLs of random nodes (from
``--nodes``, round robin, random order) at random times between ``--kill-window`` seconds after
the start. After the run it reads ``summary.json`` and the buffer's store and prints one line per
run: the faults injected, whether the recipe completed, transitions executed (the steps of the
recipe's episodes) against stored, transitions stored twice (same episode, step and stamp),
episode steps missing from the final run of an episode, and the time from each controller kill
to the twin's stop of the arm (lockstep: ``twin.lockstep_stop_after_s``; realtime:
``twin.command_timeout_s``). Every node's RSS memory (``/proc/<pid>/status``) is sampled all
along. ``--soak-min M`` then runs the graph without faults for M minutes (``recipe.iterations``
large, stopped by ``--timeout``) and reports each node's RSS at the start, the maximum and at the
end. The last line aggregates the campaign.

Usage::

    python benchmarks/faults.py --profile ci_smoke --runs 1 --kills 1          # smallest
    python benchmarks/faults.py --profile ci_smoke --runs 20 --kills 3 --soak-min 30
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mbrl_robot.config import node_params, profile_argument
from mbrl_robot.core.buffer.storage import TransitionStore

STOP_LINES = ('stepping it with zero velocity', 'stopping the arm')


def rss_mb(pid: int) -> Optional[float]:
    """Resident memory of ``pid`` in MiB, None when it is gone."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def current_pids(run_dir: str) -> Dict[str, int]:
    try:
        with open(os.path.join(run_dir, 'logs', 'pids.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Watcher(threading.Thread):
    """Samples every node's RSS and fires the planned kills while a run goes."""

    def __init__(self, run_dir: str, kills: List[Dict[str, Any]], period_s: float):
        super().__init__(daemon=True)
        self.run_dir, self.kills, self.period_s = run_dir, kills, period_s
        self.rss: Dict[str, List[float]] = {}
        self.done = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        next_sample = 0.0
        pending = sorted(self.kills, key=lambda k: k['at_s'])
        while not self.done.is_set():
            t = time.monotonic() - self.t0
            if pending and t >= pending[0]['at_s']:
                kill = pending.pop(0)
                pid = current_pids(self.run_dir).get(kill['node'])
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kill.update(pid=pid, wall=time.time(), done=True)
                    except ProcessLookupError:
                        pass
            if t >= next_sample:
                for node, pid in current_pids(self.run_dir).items():
                    mb = rss_mb(pid)
                    if mb is not None:
                        self.rss.setdefault(node, []).append(round(mb, 1))
                next_sample = t + self.period_s
            time.sleep(0.05)


def stored_figures(run_dir: str, steps: int) -> Dict[str, int]:
    """Transitions stored, stored twice, and steps missing from each episode's last run."""
    store = TransitionStore.open_read_only(os.path.join(run_dir, 'buffer'))
    try:
        rec = store.records(dtype=np.float64)
    finally:
        store.close()
    keys = list(zip(rec.episode.tolist(), rec.step.tolist(), rec.stamp.tolist()))
    missing = 0
    for ep in set(rec.episode.tolist()):
        mine = rec.episode == ep
        restart = rec.stamp[mine & (rec.step == 0)].max() if (mine & (rec.step == 0)).any() else 0
        last = set(rec.step[mine & (rec.stamp >= restart)].tolist())
        missing += len(set(range(steps)) - last)
    return {'stored': len(keys), 'duplicates': len(keys) - len(set(keys)), 'missing': missing}


def times_to_zero(run_dir: str, kills: List[Dict[str, Any]]) -> List[float]:
    """Seconds from each controller kill that left the arm moving to the twin's stop of it.

    A twin stop line (``no command for X s ...``) at wall time t belongs to a kill at k when the
    last command, t - X, came within a second before k; a kill of a controller that was not
    moving the arm (between episodes, during training) needs no stop and gives no figure.
    """
    try:
        with open(os.path.join(run_dir, 'logs', 'twin.log')) as f:
            stops = [(float(m.group(1)), float(m.group(2))) for line in f
                     if any(s in line for s in STOP_LINES) and (m := re.search(
                         r'\] \[(\d+\.\d+)\] \[.*no command for ([\d.]+) s', line))]
    except OSError:
        return []
    out = []
    for kill in kills:
        if kill['node'] == 'controller' and kill.get('done'):
            after = [t - kill['wall'] for t, idle in stops
                     if kill['wall'] - 1.0 <= t - idle <= kill['wall'] + 0.1]
            if after:
                out.append(round(after[0], 3))
    return out


def one_run(args, index: int, run_dir: str, kills: List[Dict[str, Any]], timeout: float,
            sets: Sequence[str]) -> Dict[str, Any]:
    cmd = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', args.profile, '--run-dir',
           run_dir, '--timeout', str(timeout), '--restarts', str(max(len(kills), 1))]
    cmd += [a for s in sets for a in ('--set', s)]
    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain_id + index % 50),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    watcher = Watcher(run_dir, kills, args.rss_period_s)
    t0 = time.monotonic()
    watcher.start()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 120)
    watcher.done.set()
    watcher.join()
    try:
        with open(os.path.join(run_dir, 'summary.json')) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = {'episodes': [], 'complete': False, 'failed': 'no summary'}
    steps = int(args.episode_steps)
    line = {'run': index, 'run_dir': run_dir, 'rc': proc.returncode,
            'completed': bool(summary.get('complete')) and summary.get('failed') is None,
            'faults': [{k: kill.get(k) for k in ('node', 'at_s', 'pid')} for kill in kills
                       if kill.get('done')],
            'restarts': proc.stdout.count(': restart '),
            'episodes': len(summary['episodes']),
            'executed': sum(e['steps'] for e in summary['episodes']),
            'time_to_zero_s': times_to_zero(run_dir, kills),
            'wall_s': round(time.monotonic() - t0, 1),
            'rss_mb': {n: {'first': v[0], 'max': max(v), 'last': v[-1]}
                       for n, v in watcher.rss.items()}}
    if os.path.isdir(os.path.join(run_dir, 'buffer')):
        line.update(stored_figures(run_dir, steps))
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--profile', type=profile_argument, default='ci_smoke')
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--kills', type=int, default=3, help='SIGKILLs per run')
    ap.add_argument('--nodes', nargs='+', default=['buffer', 'controller', 'trainer'])
    ap.add_argument('--kill-window', type=float, nargs=2, default=[3.0, 20.0],
                    metavar=('FROM_S', 'TO_S'), help='kill times, seconds after the start')
    ap.add_argument('--soak-min', type=float, default=0.0, help='then soak this many minutes')
    ap.add_argument('--rss-period-s', type=float, default=5.0)
    ap.add_argument('--set', dest='sets', action='append', default=[],
                    metavar='NODE.PARAM=VALUE', help='passed to mbrl_run --set')
    ap.add_argument('--run-dir', default='runs/faults')
    ap.add_argument('--domain-id', type=int, default=120)
    ap.add_argument('--timeout', type=float, default=600.0, help='per run, seconds')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    args.episode_steps = node_params(args.profile, 'recipe')['task']['episode_steps']
    rng = random.Random(args.seed)
    lines = []
    for i in range(args.runs):
        nodes = [args.nodes[(i + k) % len(args.nodes)] for k in range(args.kills)]
        rng.shuffle(nodes)
        kills = [{'node': n, 'at_s': round(rng.uniform(*args.kill_window), 2)} for n in nodes]
        line = one_run(args, i, os.path.abspath(os.path.join(args.run_dir, f'run{i}')), kills,
                       args.timeout, args.sets)
        lines.append(line)
        print(json.dumps(line), flush=True)
    if args.soak_min > 0:
        soak = one_run(args, args.runs, os.path.abspath(os.path.join(args.run_dir, 'soak')), [],
                       60.0 * args.soak_min, ['recipe.iterations=100000'] + args.sets)
        soak['soak_min'] = args.soak_min
        print(json.dumps(soak), flush=True)
    zero = [t for line in lines for t in line['time_to_zero_s']]
    print(json.dumps({
        'aggregate': True, 'runs': len(lines),
        'runs_completed': sum(line['completed'] for line in lines),
        'faults_injected': sum(len(line['faults']) for line in lines),
        'executed': sum(line['executed'] for line in lines),
        'stored': sum(line.get('stored', 0) for line in lines),
        'duplicates': sum(line.get('duplicates', 0) for line in lines),
        'missing': sum(line.get('missing', 0) for line in lines),
        'time_to_zero_s_max': max(zero) if zero else None}), flush=True)
    return 0 if all(line['completed'] for line in lines) else 1


if __name__ == '__main__':
    sys.exit(main())
