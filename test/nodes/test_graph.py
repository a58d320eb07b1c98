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
"""The whole node graph in separate processes over real DDS: the CI smoke recipe end to end.

Runs ``mbrl_run --profile ci_smoke`` (twin, buffer, trainer, controller and recipe nodes, each its
own process) on an isolated ROS_DOMAIN_ID with localhost discovery, then checks what each node
left behind: transitions persisted by the buffer and served to the trainer, model versions
trained on them and used by the controller, and commands at 20 Hz of sim time.
"""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

from mbrl_robot.config import node_params
from mbrl_robot.core.buffer.storage import TransitionStore

pytestmark = pytest.mark.ros


def graph_env():
    """Environment of one runner: its own DDS domain, localhost discovery, unbuffered logs."""
    return dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 199)),
                ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('smoke')
    env = graph_env()
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(run_dir), '--timeout', '400'],
                          env=env, capture_output=True, text=True, timeout=480)
    with open(run_dir / 'summary.json') as f:
        summary = json.load(f)
    return proc, run_dir, summary


def test_runner_finishes_the_recipe(smoke_run):
    proc, run_dir, summary = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary['complete'] and summary['failed'] is None
    assert 'summary:' in proc.stdout


def test_every_phase_ran_with_full_episodes(smoke_run):
    _, _, summary = smoke_run
    steps = node_params('ci_smoke', 'recipe')['task']['episode_steps']
    stages = [e['stage'] for e in summary['episodes']]
    assert stages == ['random', 'random', 'mpc', 'eval_planner']
    assert all(e['steps'] == steps for e in summary['episodes'])
    assert [t['version'] for t in summary['trainings']] == [1, 2]


def test_transitions_are_persisted_and_served_to_the_trainer(smoke_run):
    _, run_dir, summary = smoke_run
    steps = node_params('ci_smoke', 'recipe')['task']['episode_steps']
    store = TransitionStore(str(run_dir / 'buffer'))
    twin_log = (run_dir / 'logs' / 'twin.log').read_text()
    why = (f"dropped_timing {summary.get('dropped_timing')}, safety stops "
           f"{twin_log.count('stepping it with zero velocity')}")
    try:
        assert len(store) == 4 * steps, why
        batch = store.all()
    finally:
        store.close()
    assert int(batch.done.sum()) == 4
    # The trainer trained on exactly what the buffer held at each training phase.
    assert [t['n_transitions'] for t in summary['trainings']] == [2 * steps, 3 * steps]
    # Consecutive transitions chain: s' of one is s of the next within an episode.
    chained = ~batch.done[:-1]
    assert np.array_equal(batch.next_obs[:-1][chained], batch.obs[1:][chained])


def test_models_were_published_and_used(smoke_run):
    _, run_dir, _ = smoke_run
    assert sorted(os.listdir(run_dir / 'models')) == ['v0001', 'v0002']
    with open(run_dir / 'logs' / 'controller.log') as f:
        log = f.read()
    assert 'model v1 loaded' in log and 'model v2 loaded' in log


def test_a_recipe_that_stops_early_fails_the_run_with_one_line(tmp_path):
    """A recipe that cannot go on (here: every model rejected, its validation loss above a bar no
    model reaches) stops, says why, and makes ``mbrl_run`` exit 1, not 0: a script or CI running
    the main command sees the failure (until session 35 the run exited 0)."""
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--timeout', '300',
                           '--set', 'trainer.max_val_loss=1.0e-9', '--no-progress'],
                          env=graph_env(), capture_output=True, text=True, timeout=400)
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not summary['complete'] and 'no usable model' in summary['failed']
    lines = [line for line in proc.stderr.splitlines()
             if line.startswith('mbrl_run: the recipe stopped before its end: ')]
    assert len(lines) == 1 and summary['failed'] in lines[0]
    assert 'Traceback' not in proc.stderr  # mbrl_run's own


def test_commands_at_20_hz_of_sim_time(smoke_run):
    _, _, summary = smoke_run
    for episode in summary['episodes']:
        assert episode['command_period_s'] == pytest.approx(0.05, abs=1e-6)


def test_a_stopped_run_resumes_from_the_buffer_and_the_last_model(tmp_path):
    """Also: the controller reads models only from the bytes the trainer sends over DDS
    (model_source dds, as on a host without the trainer's disk), the resumed trainer sends the
    last model again."""
    env = graph_env()
    base = [sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
            '--run-dir', str(tmp_path), '--set', 'controller.model_source=dds']
    # Ctrl-C part-way, once the recipe has finished its third phase (the first training).
    run = subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    for line in run.stdout:
        if '[3/6]' in line:
            run.send_signal(signal.SIGINT)
            break
    run.communicate(timeout=120)
    with open(tmp_path / 'summary.json') as f:
        stopped = json.load(f)
    assert not stopped['complete'], stopped
    # A publisher that lies on the trainer's topic: a huge model version, latched. The recipe
    # takes the version its episodes wait for from the trainer's service, so it is not fooled
    # into waiting for a model that never comes.
    liar = subprocess.Popen([sys.executable, '-c', LIAR], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert liar.stdout.readline().strip() == 'announced'
        proc = subprocess.run(base + ['--resume', '--timeout', '400'], env=env,
                              capture_output=True, text=True, timeout=480)
    finally:
        liar.terminate()
        liar.wait(timeout=30)
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete'], summary
    # Every phase exactly once, whatever was done before the stop is kept, not redone.
    assert [e['stage'] for e in summary['episodes']] == ['random', 'random', 'mpc',
                                                         'eval_planner'], summary['episodes']
    assert summary['episodes'][:len(stopped['episodes'])] == stopped['episodes'], (
        stopped['episodes'], summary['episodes'])
    versions = [t['version'] for t in summary['trainings']]
    assert len(versions) == 2 and versions == sorted(set(versions)), summary['trainings']
    log = (tmp_path / 'logs' / 'controller.log').read_text()
    cache = tmp_path / 'controller_models'
    for version in versions:
        assert f'model v{version} loaded from {cache / f"v{version:04d}"}' in log, log[-3000:]
    assert 'received over DDS' in log and (cache / f'v{versions[-1]:04d}' / 'model.pt').is_file()
    # The resumed recipe's model episodes waited for the trainer's model, not the liar's.
    recipe_log = (tmp_path / 'logs' / 'recipe.log').read_text()
    assert (f'the trainer has model v{versions[0]}: the model episodes wait for it'
            in recipe_log), recipe_log[-3000:]
    assert f'v{10 ** 15} announced' in log, log[-3000:]  # the lie reached the controller too
    # The stopped session's logs and parameters are kept: the logs go on after a marker line.
    before, marker, after = recipe_log.partition('--- mbrl_run --resume ')
    assert marker and '[3/6] trained model v1' in before and '[6/6]' in after, recipe_log[-3000:]
    assert len(list(tmp_path.glob('params.before-*.yaml'))) == 1
    assert (tmp_path / 'params.yaml').is_file()


LIAR = '''
import json, rclpy, rclpy.executors
from std_msgs.msg import String
from mbrl_robot.nodes.transport import LATCHED_QOS
rclpy.init()
node = rclpy.create_node('liar')
pub = node.create_publisher(String, '/trainer/model', LATCHED_QOS)
lie = String(data=json.dumps({'version': 10 ** 15, 'path': '/nowhere'}))
pub.publish(lie)
print('announced', flush=True)
# Again every second: a subscriber keeps the last announcement only (depth 1), so the latched
# one could be dropped for the trainer's arriving beside it (CI saw it once).
node.create_timer(1.0, lambda: pub.publish(lie))
try:
    rclpy.spin(node)
except rclpy.executors.ExternalShutdownException:  # terminated: rclpy's SIGTERM handler
    pass
'''


def _policy_run(tmp_path, sets, mode='policy', training_stage='mpc'):
    """ci_smoke through the graph with a policy-training trainer; checks what every such run
    must show and returns the episode length and the two policy announcements. ``mode``
    policy: the controller runs the policy in every non-random episode; planner: it plans, and
    runs the policy in the evaluation's policy episodes (recipe.baselines [policy]).
    ``training_stage``: the stage the recipe gives its one collect-and-retrain episode."""
    sets = [f'controller.mode={mode}'] + sets
    if mode == 'planner':
        sets.append('recipe.baselines=[policy]')
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--timeout', '400']
                          + [a for s in sets for a in ('--set', s)],
                          env=graph_env(), capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete']
    steps = node_params('ci_smoke', 'recipe')['task']['episode_steps']
    assert [e['stage'] for e in summary['episodes']] == (
        ['random', 'random', training_stage, 'eval_planner']
        + (['eval_policy'] if mode == 'planner' else []))
    assert all(e['steps'] == steps for e in summary['episodes'])
    announced = []
    for version in (1, 2):
        with open(tmp_path / 'models' / f'v{version:04d}' / 'policy' / 'announcement.json') as f:
            announced.append(json.load(f))
    assert [a['version'] for a in announced] == [1, 2]
    assert [a['n_transitions'] for a in announced] == [2 * steps, 3 * steps]
    with open(tmp_path / 'logs' / 'controller.log') as f:
        log = f.read()
    assert 'policy v1 loaded' in log and 'policy v2 loaded' in log
    if mode == 'policy':
        assert 'policy mode' in log
        assert 'model v' not in log  # policy mode follows policies only
    else:
        assert 'model v2 loaded' in log and ': policy policy' in log
    return steps, announced


def test_mbpo_through_the_graph(tmp_path):
    """MBPO end to end, with hindsight goals: the trainer trains SAC on each validated model,
    relabelling each finished episode's rows, and the controller runs the announced policy
    (policy mode) in the recipe's episodes."""
    steps, announced = _policy_run(tmp_path, [
        'trainer.algorithm=mbpo', 'trainer.mbpo.init_random_steps=0',
        'trainer.mbpo.gradient_steps=2', 'trainer.mbpo.batch_size=32',
        'trainer.mbpo.sac.net_arch=[32,32]', 'trainer.mbpo.rollout_freq=20',
        'trainer.mbpo.relabel_goals=2'])
    # Policy v1: SAC on the 2 random episodes (2 updates per real step); v2 adds the MPC one.
    assert [a['gradient_steps'] for a in announced] == [2 * 2 * steps, 2 * steps]
    assert all(a['model_rows'] > 0 for a in announced)
    # Two hindsight copies of every row of each finished episode, per arm and episode.
    assert [a['relabelled_rows'] for a in announced] == [2 * 2 * steps, 2 * 3 * steps]


def test_distilled_policy_through_the_graph(tmp_path, mode='planner'):
    """The planner distilled into a policy end to end (trainer.algorithm distill): the trainer
    labels every new real row with the planner on each validated model plus its model rollouts,
    fits and announces the policy; the controller plans and runs the policy in the evaluation's
    policy episodes (planner mode; policy mode's path is test_mbpo_through_the_graph's). The
    training episode is DAgger on real states (recipe.policy_episodes_per_iteration): the
    planner-mode controller runs policy v1 in it, and v2's labels are of the states it visited."""
    steps, announced = _policy_run(tmp_path, [
        'trainer.algorithm=distill', 'trainer.distill.epochs=2',
        'trainer.distill.model_rollouts=2', 'trainer.distill.model_rollout_length=3',
        'trainer.distill.hidden_sizes=[16]', 'recipe.policy_episodes_per_iteration=1'], mode,
        training_stage='dagger')
    # v1 labels the 2 random episodes, v2 the training episode (driven by the policy v1); each
    # adds 2 model rollouts of 3 labelled steps.
    assert [a['steps'] for a in announced] == [2 * steps, steps]
    assert [a['labels'] for a in announced] == [2 * steps + 6, steps + 6]
    assert [a['model_rows'] for a in announced] == [6, 12]


def test_namespaced_graph_with_a_renamed_controller_completes(tmp_path):
    """Every shared name is relative and comes from topics.*: under /arm1, with the controller
    running as ``ctl``, the buffer and the recipe still get every executed row."""
    env = graph_env()
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--timeout', '300',
                           '--set', 'recipe.iterations=0', '--rename', 'controller=ctl',
                           '--ros-args', '-r', '__ns:=/arm1'],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete'] and summary['failed'] is None
    assert [e['stage'] for e in summary['episodes']] == ['random', 'random', 'eval_planner']
    with open(tmp_path / 'logs' / 'controller.log') as f:
        log = f.read()
    assert '[arm1.ctl]' in log or '[ctl]' in log
    assert 'commands on /arm1/velocity_controller/commands' in log
    store = TransitionStore(str(tmp_path / 'buffer'))
    try:
        steps = node_params('ci_smoke', 'recipe')['task']['episode_steps']
        assert len(store) == 3 * steps
    finally:
        store.close()
