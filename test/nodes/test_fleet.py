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
"""Two arms, one buffer, one trainer (``mbrl_run --arms 2``), and one arm failing on the way.

The CI smoke recipe with more and longer episodes on two lockstep twins, each arm in its
namespace. Arm 1's twin and controller are killed -9 in its first episode (``mbrl_run``
restarts them), and later its controller hangs (SIGSTOP) in the middle of an episode for
longer than ``episode_stall_s`` (the episode's timeout, far longer, never fires): the recipe
hands the arm's episode to arm 0, which never stops meanwhile, and arm 1 rejoins once it
answers again. The run must finish every phase, both arms must hold
the new models, and every stored transition must pair two rows of one arm.
"""

import json
import os
import signal
import time

import numpy as np
import pytest
import yaml

from mbrl_robot.core.buffer.storage import TransitionStore
from test_faults import kill9, log_time, mbrl_run, wait_for_line  # test/nodes: sys.path

pytestmark = pytest.mark.ros

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 50
RANDOM = 60
STALL_S = 5.0


def count(path, pattern):
    """Occurrences of ``pattern`` in a log file now."""
    return path.read_text().count(pattern) if path.is_file() else 0


def episode_lines(log_text, arm):
    """Wall times of the recipe's 'episode ... on <arm>' lines."""
    return [log_time(ln) for ln in log_text.splitlines()
            if ' episode (seed ' in ln and ln.split(': final distance')[0].endswith(f'on {arm}')]


@pytest.mark.timeout(600)
def test_two_arms_feed_one_buffer_and_a_failed_arm_stops_nothing(tmp_path):
    logs = tmp_path / 'logs'
    # ci_smoke with longer episodes (50 steps, 0.1-0.4 s each in lockstep) and more of them:
    # arm 0 alone runs about 30 random episodes while arm 1 is dead and set aside, so that
    # arm 1's hang below mostly comes with random episodes still to run.
    with open(os.path.join(ROOT, 'config', 'ci_smoke.yaml')) as f:
        profile = yaml.safe_load(f)
    profile['/**']['ros__parameters']['task']['episode_steps'] = STEPS
    profile['recipe']['ros__parameters'].update(random_episodes=RANDOM,
                                                mpc_episodes_per_iteration=4,
                                                evaluation_episodes=2,
                                                episode_timeout_s=120.0,
                                                episode_stall_s=STALL_S)
    with open(tmp_path / 'fleet.yaml', 'w') as f:
        yaml.safe_dump(profile, f)
    with mbrl_run('--profile', str(tmp_path / 'fleet.yaml'), '--arms', '2',
                  '--set', 'twin.lockstep_stop_after_s=2.0', '--run-dir', str(tmp_path),
                  '--timeout', '500', '--restarts', '1', '--no-progress') as run:
        # The whole arm killed in its first episode, twin and controller: mbrl_run restarts both.
        wait_for_line(logs / 'arm1.controller.log', ': random policy')
        time.sleep(0.3)
        kill9(tmp_path, 'arm1/twin')
        killed = kill9(tmp_path, 'arm1/controller')[1]
        # Back: an episode of arm 1 finishes after the restart.
        wait_for_line(logs / 'recipe.log', 'on arm1: final distance', count=2)
        # Hung in the middle of its next episode: alive, silent.
        started = count(logs / 'arm1.controller.log', ': random policy')
        wait_for_line(logs / 'arm1.controller.log', ': random policy', count=started + 1)
        time.sleep(0.3)
        with open(tmp_path / 'logs' / 'pids.json') as f:
            pid = json.load(f)['arm1/controller']
        lost = count(logs / 'recipe.log', 'arm1 lost')
        os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        wait_for_line(logs / 'recipe.log', 'arm1 lost', count=lost + 1, timeout=4 * STALL_S)
        # Arm 0 goes on meanwhile (two of its episodes while arm 1 still hangs), then arm 1
        # answers again.
        done0 = count(logs / 'recipe.log', 'on arm0: final distance')
        wait_for_line(logs / 'recipe.log', 'on arm0: final distance', count=done0 + 2, timeout=60)
        os.kill(pid, signal.SIGCONT)
        resumed = time.time()
        out, _ = run.communicate(timeout=500)
    assert run.returncode == 0, out[-4000:]
    for node in ('arm1/twin', 'arm1/controller'):
        assert f'mbrl_run: {node} exited (rc -9)' in out, out[-4000:]
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete'] and summary['failed'] is None and summary['arms'] == [
        'arm0', 'arm1']
    episodes = summary['episodes']
    # Every phase once, whichever arm ran it; the random, 4 MPC, 2 evaluation episodes.
    assert sorted(e['index'] for e in episodes + summary['trainings']) == list(
        range(RANDOM + 4 + 2 + 2))
    ids = [e['episode'] for e in episodes]  # an episode given up runs again under a new id
    assert len(set(ids)) == len(ids) and any(e['episode'] != e['index'] for e in episodes)
    assert all(e['steps'] == STEPS for e in episodes)
    for arm in ('arm0', 'arm1'):  # both retrains reached both controllers
        assert sorted(os.listdir(tmp_path / 'controller_models' / arm)) == ['v0001', 'v0002']

    recipe_log = (logs / 'recipe.log').read_text()
    arm0, arm1 = episode_lines(recipe_log, 'arm0'), episode_lines(recipe_log, 'arm1')
    # Arm 0 kept running while arm 1 was dead and while it hung; arm 1 came back both times.
    assert any(killed < t < killed + STALL_S for t in arm0), (killed, arm0)
    # The hang was caught by the stall watchdog, STALL_S after arm 1's last row (or after the
    # episode's announcement, if the stop came between two episodes, or after the buffer last
    # moved, if it came after the last episode before a training with arm 1's rows still held
    # back: test_an_arm_silent_with_its_last_rows_is_set_aside...); arm 0 was never lost.
    hung = [ln for ln in recipe_log.splitlines() if 'arm1 lost' in ln][lost]
    assert 'arm1 stalled: ' in hung, hung
    assert STALL_S - 1.0 < log_time(hung) - stopped < 3 * STALL_S, (stopped, hung)
    assert 'arm0 lost' not in recipe_log
    assert sum(stopped < t < resumed for t in arm0) >= 2, (stopped, resumed, arm0)
    assert any(t > killed for t in arm1) and any(t > resumed + 1.0 for t in arm1), (
        killed, resumed, arm1)
    # (A lockstep twin moves only on a command: the hung arm stood still. A realtime twin stops
    # the arm after command_timeout_s: test_twin_node, test_faults.)

    store = TransitionStore(str(tmp_path / 'buffer'))
    try:
        rec = store.records(dtype=np.float64)
    finally:
        store.close()
    arm_of = {'arm0': 0, 'arm1': 1}
    # The episode arm 1 was killed in: its restarted pair may run it again on a restarted clock;
    # then the buffer holds the killed run's rows up to the step it reached and the rerun's
    # after it (its earlier rows, stamped no later, count as stored), and the one transition
    # across that seam is dropped for timing (as in test_faults).
    started = [(log_time(ln), int(ln.split(': episode ')[1].split(':')[0])) for ln in
               (logs / 'arm1.controller.log').read_text().splitlines() if ': random policy' in ln]
    killed_in = max(e for t, e in started if t < killed)
    for e in episodes:  # each result's episode is stored whole, under the arm that ran it
        mine = (rec.arm == arm_of[e['arm']]) & (rec.episode == e['episode'])
        missing = set(range(STEPS)) - set(rec.step[mine].tolist())
        assert not missing or (e['arm'], e['episode']) == ('arm1', killed_in) and len(
            missing) == 1, (e, missing, killed_in)
    keys = list(zip(rec.arm.tolist(), rec.episode.tolist(), rec.step.tolist(),
                    rec.stamp.tolist()))
    assert len(set(keys)) == len(keys), 'a transition stored twice'
    # Lockstep: s' is the next row of the same arm, one period later, never another arm's.
    np.testing.assert_allclose(rec.next_stamp - rec.stamp, 0.05, atol=1e-6)
    for arm in (0, 1):
        r = rec.arm == arm
        obs, nxt, ep, st, done = (rec.batch.obs[r], rec.batch.next_obs[r], rec.episode[r],
                                  rec.step[r], rec.batch.done[r])
        chained = (~done[:-1]) & (ep[:-1] == ep[1:]) & (st[1:] == st[:-1] + 1)
        assert chained.sum() > 0
        np.testing.assert_array_equal(nxt[:-1][chained], obs[1:][chained])
    per_arm = {a: sum(e['arm'] == a for e in episodes) for a in arm_of}
    print(f'\nepisodes per arm {per_arm}; arm 0 finished {sum(killed < t < resumed for t in arm0)}'
          f' episodes while arm 1 was killed or hung; {len(rec)} transitions stored')


def test_the_recipe_trains_once_every_counted_episode_is_in_the_buffer():
    """What this graph test once met (CI, a loaded machine): arm 1's twin and controller killed
    in episode 2 after 5 of its rows were stored; the restarted pair ran episode 2 again on a
    restarted clock, whose first 5 rows the buffer took as already stored. The buffer held 1,999
    transitions for 40 counted 50-step episodes, every row in, and the recipe, counting
    transitions, waited for the 2,000th until it gave up. It now asks each arm's last row."""
    from mbrl_robot.nodes.recipe import arms_behind
    results = [{'episode': e, 'arm': 'arm1' if e in (1, 2, 5) else 'arm0', 'steps': STEPS}
               for e in range(41) if e != 18]
    stats = {'transitions': 1999, 'assembler': {'dropped_timing': 0},
             'arm_namespaces': ['arm0', 'arm1'],
             'last_rows': [[40, 50, 95.35, True], [5, 50, 6.2, True]]}
    assert not arms_behind(results, stats)
    assert arms_behind(results, {k: v for k, v in stats.items() if k != 'last_rows'}) == [
        'arm0', 'arm1']  # short by the count: which arm, it cannot tell
    # An arm whose last counted episode is not closed yet, or has no row at all: not yet.
    for arm1 in ([5, 49, 6.15, False], [2, 50, 3.0, True], None):
        assert arms_behind(results, {**stats, 'last_rows': [[40, 50, 95.35, True], arm1]}) == [
            'arm1']
    # A later episode's row (its episode still running) means the counted ones are in.
    assert not arms_behind(results, {**stats, 'last_rows': [[41, 3, 95.5, False],
                                                            [5, 50, 6.2, True]]})
    # One arm, no namespaces; an arm name the buffer does not know: judged by the count.
    one = [{'episode': e, 'steps': STEPS} for e in range(3)]
    assert not arms_behind(one, {'transitions': 140, 'assembler': {'dropped_timing': 10},
                                 'arm_namespaces': [''], 'last_rows': [[2, 50, 7.0, True]]})
    assert arms_behind(one, {'transitions': 150, 'arm_namespaces': [''],
                             'last_rows': [[2, 49, 7.0, False]]}) == ['']
    assert arms_behind(results, {**stats, 'arm_namespaces': ['a', 'b']})


def test_an_arm_silent_with_its_last_rows_is_set_aside_and_the_others_train(monkeypatch):
    """What this graph test met next (CI): arm 1's controller hung just after the last episode
    of a phase, before it resent the rows the buffer was holding back after its restart. The
    recipe waited for those rows until it timed out. Now, once the buffer has not moved for
    episode_stall_s, the silent arm is set aside and the model trained on what is stored; with
    one arm (or every arm silent) it waits: nothing could run the next episode."""
    import types

    from mbrl_robot.nodes import recipe
    clock = [100.0]
    monkeypatch.setattr(recipe.time, 'monotonic', lambda: clock[0])
    lost = []
    slots = [types.SimpleNamespace(namespace=a, name=a, abandon=lambda why, instead, a=a:
                                   lost.append((a, why, instead))) for a in ('arm0', 'arm1')]
    me = types.SimpleNamespace(p={'episode_stall_s': STALL_S}, slots=slots, _sync_seen=None,
                               _sync_since=clock[0],
                               results=[{'episode': 3, 'arm': 'arm1', 'steps': STEPS},
                                        {'episode': 4, 'arm': 'arm0', 'steps': STEPS}])
    stats = {'transitions': 150, 'arm_namespaces': ['arm0', 'arm1'],
             'last_rows': [[4, 50, 9.0, True], [1, 37, 2.0, False]]}
    train_without = recipe.RecipeNode._train_without
    assert recipe.arms_behind(me.results, stats) == ['arm1']
    assert not train_without(me, ['arm1'], stats)
    clock[0] += STALL_S - 0.5
    assert not train_without(me, ['arm1'], stats) and not lost
    clock[0] += 1.0  # the buffer moved: the wait starts again
    assert not train_without(me, ['arm1'], {**stats, 'transitions': 151})
    clock[0] += STALL_S - 0.5
    assert not train_without(me, ['arm1'], {**stats, 'transitions': 151})
    clock[0] += 1.0
    assert not train_without(me, ['arm0', 'arm1'], {**stats, 'transitions': 151}) and not lost
    me.slots = slots[1:]  # one arm: wait
    assert not train_without(me, ['arm1'], {**stats, 'transitions': 151}) and not lost
    me.slots = slots
    assert train_without(me, ['arm1'], {**stats, 'transitions': 151})
    assert [(a, why) for a, why, _ in lost] == [(
        'arm1', 'arm1 stalled: the buffer has not taken in its rows up to episode 3 for 5 s, '
        'its last row episode 1 step 37')]
    assert 'training on the 151 transitions stored' in lost[0][2]
