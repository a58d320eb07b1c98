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
"""Nothing lost, nothing stuck: the CI smoke recipe with nodes killed -9 along the way.

``mbrl_run --profile ci_smoke`` with the buffer killed in the middle of a random episode, the
controller in the middle of the MPC episode and the trainer during the retrain; ``mbrl_run``
restarts each. The run must finish with every phase, and the buffer must hold every transition
exactly once: the controller resends what the dead buffer missed, the buffer drops what it has.
"""

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mbrl_robot.config import node_params
from mbrl_robot.core.buffer.storage import TransitionStore

pytestmark = pytest.mark.ros

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for_line(path, pattern, count=1, timeout=200.0):
    """Poll a log file until ``pattern`` occurs ``count`` times; returns the wall time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.isfile(path):
            with open(path) as f:
                if f.read().count(pattern) >= count:
                    return time.time()
        time.sleep(0.05)
    tails = []
    for log in sorted(path.parent.glob('*.log')):  # every node's last lines, to say why
        tails.append(f'--- {log.name}\n' + log.read_text()[-1500:])
    raise AssertionError(f'{pattern!r} x{count} not in {path} within {timeout} s\n'
                         + '\n'.join(tails))


def kill9(run_dir, node, sig=signal.SIGKILL):
    """SIGKILL (or ``sig``) the current process of ``node``; returns its pid and the time."""
    with open(os.path.join(run_dir, 'logs', 'pids.json')) as f:
        pid = json.load(f)[node]
    os.kill(pid, sig)
    return pid, time.time()


def runner_env():
    """The environment of an ``mbrl_run`` under test: its own DDS domain, localhost only."""
    return dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 199)),
                ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1',
                PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


@contextlib.contextmanager
def mbrl_run(*args):
    """``mbrl_run *args`` under test (:func:`runner_env`); stopped with SIGINT and waited for
    when the test leaves before it ends."""
    run = subprocess.Popen([sys.executable, '-m', 'mbrl_robot.runner', *args], env=runner_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield run
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=60)


def log_time(line):
    """Wall time of a ROS log line ``[INFO] [1764590000.123] [twin]: ...``."""
    return float(re.search(r'\] \[(\d+\.\d+)\] \[', line).group(1))


def check_complete_and_once(run_dir, run, out, kills, whole=()):
    """The run finished every phase after ``kills`` (node -> (pid, time)), each restarted once,
    and the buffer holds each transition once, every episode whole but the MPC one (the
    killed controller's partial run may be there beside its rerun) unless in ``whole``.

    Returns:
        (records, (episode, step, stamp) keys, summary, episode steps)
    """
    assert run.returncode == 0, out[-4000:]
    for node in kills:
        assert f'mbrl_run: {node} exited (rc -9)' in out and 'restart 1/1' in out, out[-4000:]
    with open(run_dir / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete'] and summary['failed'] is None
    steps = node_params('ci_smoke', 'recipe')['task']['episode_steps']
    stages = [e['stage'] for e in summary['episodes']]
    assert stages == ['random', 'random', 'mpc', 'eval_planner']
    assert all(e['steps'] == steps for e in summary['episodes'])
    assert all(np.isfinite(e['final_distance']) for e in summary['episodes'])
    assert [t['version'] for t in summary['trainings']] == [1, 2]
    assert sorted(os.listdir(run_dir / 'models')) == ['v0001', 'v0002']

    store = TransitionStore(str(run_dir / 'buffer'))
    try:
        rec = store.records(dtype=np.float64)
        stats = store.stats()
    finally:
        store.close()
    keys = list(zip(rec.episode.tolist(), rec.step.tolist(), rec.stamp.tolist()))
    assert len(set(keys)) == len(keys), 'a transition stored twice'
    episodes = sorted(set(rec.episode.tolist()))
    assert len(episodes) == 4 and stats['episodes_done'] == 4
    for i, ep in enumerate(episodes):
        if i != 2 or 'mpc' in whole:  # every step once, a hole the buffer's death made filled
            ep_steps = rec.step[rec.episode == ep]
            assert ep_steps.tolist() == list(range(steps)), (ep, ep_steps)
    # Lockstep: s' is one control period after s, never from another run of the controller.
    np.testing.assert_allclose(rec.next_stamp - rec.stamp, 0.05, atol=1e-6)
    chained = (~rec.batch.done[:-1]) & (rec.episode[:-1] == rec.episode[1:]) & (
        rec.step[1:] == rec.step[:-1] + 1)
    np.testing.assert_array_equal(rec.batch.next_obs[:-1][chained], rec.batch.obs[1:][chained])
    return rec, keys, summary, steps


@pytest.mark.timeout(600)
def test_killed_nodes_restart_and_the_recipe_finishes_with_every_transition_once(tmp_path):
    logs = tmp_path / 'logs'
    kills = {}
    with mbrl_run('--profile', 'ci_smoke', '--set', 'twin.lockstep_stop_after_s=2.0',
                  '--run-dir', str(tmp_path), '--timeout', '500', '--restarts', '1') as run:
        # The buffer, frozen (SIGSTOP) from the end of the first random episode and killed at
        # the end of the second: it dies with the second's rows unacknowledged (a lockstep
        # episode takes ~0.1 s here: too short to aim a kill into).
        wait_for_line(logs / 'controller.log', 'episode 0 done')
        kill9(tmp_path, 'buffer', signal.SIGSTOP)
        wait_for_line(logs / 'controller.log', 'episode 1 done')
        kills['buffer'] = kill9(tmp_path, 'buffer')
        # The controller, part-way through the MPC episode (the first planner episode).
        wait_for_line(logs / 'controller.log', ': planner policy')
        time.sleep(0.5)
        kills['controller'] = kill9(tmp_path, 'controller')
        # The trainer, as soon as the retrain starts.
        wait_for_line(logs / 'trainer.log', 'training (request) on', count=2)
        kills['trainer'] = kill9(tmp_path, 'trainer')
        out, _ = run.communicate(timeout=500)
    rec, keys, summary, steps = check_complete_and_once(tmp_path, run, out, kills)
    mpc = sorted(set(rec.episode.tolist()))[2]
    ep_steps = rec.step[rec.episode == mpc]  # the restarted controller ran it again: whole
    restart = rec.stamp[(rec.episode == mpc) & (rec.step == 0)].max()
    last = rec.stamp[rec.episode == mpc] >= restart
    assert sorted(ep_steps[last].tolist()) == list(range(steps))
    controller_log = (logs / 'controller.log').read_text()
    assert 'resending' in controller_log
    stops = [ln for ln in (logs / 'twin.log').read_text().splitlines()
             if 'stepping it with zero velocity' in ln]
    executed = sum(e['steps'] for e in summary['episodes'])
    print(f'\nkills: {sorted(kills)}; transitions executed by the final run of each episode '
          f'{executed}, stored {len(keys)} (each once; {len(keys) - executed} from the killed '
          "controller's partial run)")
    after = [log_time(ln) - kills['controller'][1] for ln in stops
             if log_time(ln) > kills['controller'][1]]
    if after:  # the twin's log line comes right before its zero-velocity steps
        print(f'twin stopped the arm {after[0]:.2f} s after the controller was killed '
              '(lockstep_stop_after_s 2.0)')


@pytest.mark.timeout(600)
def test_rows_the_dead_buffer_missed_outlive_the_controller_that_published_them(tmp_path):
    """The buffer frozen through the MPC episode, then the controller and the buffer killed:
    every row of that episode went out and none was acknowledged; the restarted controller
    resends them from its outbox (a fresh-clone CI once lost such rows, the queue in memory,
    and the recipe waited for them until it timed out)."""
    logs = tmp_path / 'logs'
    kills = {}
    with mbrl_run('--profile', 'ci_smoke', '--set', 'twin.lockstep_stop_after_s=2.0',
                  '--run-dir', str(tmp_path), '--timeout', '500', '--restarts', '1') as run:
        # Frozen from the first model (the MPC episode waits for it) to the end of the MPC
        # episode, then both killed: the rows went out, none was acknowledged.
        wait_for_line(logs / 'trainer.log', 'model v1:')
        kill9(tmp_path, 'buffer', signal.SIGSTOP)
        wait_for_line(logs / 'controller.log', ' done: final distance', count=3)
        kills['controller'] = kill9(tmp_path, 'controller')
        kills['buffer'] = kill9(tmp_path, 'buffer')
        out, _ = run.communicate(timeout=500)
    rec, keys, summary, steps = check_complete_and_once(tmp_path, run, out, kills,
                                                        whole=('mpc',))
    assert len(keys) == sum(e['steps'] for e in summary['episodes'])
    recovered = re.findall(r'(\d+) executed rows an earlier run of this controller',
                           (logs / 'controller.log').read_text())
    assert recovered and int(recovered[0]) >= steps // 2, recovered
