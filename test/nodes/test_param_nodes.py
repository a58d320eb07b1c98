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
"""Every node in-process with the schema's parameters: it reads only declared names, every
parameter is declared with its descriptor, and every writable one takes effect when set.

The nodes get their parameters as a ``ParamDict``: reading a name the schema does not declare
raises ``KeyError`` naming the node and the name, so constructing each node here fails if its code
reads an undeclared parameter. A writable (not read_only) parameter without a test below fails
``test_every_writable_parameter_is_tested_live``.
"""

import importlib
import subprocess
import sys

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from mbrl_robot.core.schema import load_schema, NODES, ParamDict  # noqa: E402

pytestmark = pytest.mark.ros

CLASSES = {'twin': 'TwinNode', 'buffer': 'BufferNode', 'trainer': 'TrainerNode',
           'controller': 'ControllerNode', 'recipe': 'RecipeNode', 'monitor': 'MonitorNode'}
# Writable parameter -> the test below that sets it and observes the effect.
LIVE_TESTS = {
    'twin': {'command_timeout_s', 'episode_seed', 'lockstep_stop_after_s'},
    'buffer': {'publish_batch_size'},
    'trainer': {'retrain_period_s', 'max_val_loss', 'warm_start'},
    'controller': {'goal_hold.enter_radius_m', 'goal_hold.exit_radius_m',
                   'disagreement_slowdown', 'disagreement_stop'},
    'recipe': set(),
    'monitor': set(),
}


@pytest.fixture
def make_node(tmp_path, ros_env):
    """Construct one node in this process (default context), its files under ``tmp_path``."""
    made = []

    def make(node):
        args = ['--ros-args', '-p', f'recipe:run_dir:={tmp_path}/run',
                '-p', f'buffer:data_dir:={tmp_path}/buffer', '-p', 'monitor:port:=0',
                '-p', f'trainer:checkpoint_dir:={tmp_path}/models',
                '-p', 'controller:device:=cpu', '-p', 'trainer:device:=cpu']
        rclpy.init(args=args)
        module = importlib.import_module(f'mbrl_robot.nodes.{node}')
        instance = getattr(module, CLASSES[node])()
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.destroy_node()
    rclpy.try_shutdown()


def set_ok(node, name, value) -> bool:
    return node.set_parameters([Parameter(name, value=value)])[0].successful


@pytest.mark.parametrize('name', NODES)
def test_node_declares_its_schema_and_reads_nothing_else(make_node, name):
    node = make_node(name)
    schema = load_schema(name)
    assert isinstance(node.params, ParamDict)
    for param, spec in schema.items():
        described = node.describe_parameter(param)
        assert described.description == spec['description']
        assert described.read_only == spec['read_only']
    read_only = [p for p, s in schema.items() if s['read_only']]
    if read_only:
        assert not set_ok(node, read_only[0], schema[read_only[0]]['default_value'])


def test_every_writable_parameter_is_tested_live():
    for node in NODES:
        writable = {p for p, s in load_schema(node).items() if not s['read_only']}
        assert writable == LIVE_TESTS[node], node


def test_controller_live_parameters(make_node):
    node = make_node('controller')
    assert set_ok(node, 'disagreement_slowdown', 0.1)
    assert set_ok(node, 'disagreement_stop', 0.5)
    settings = node.control.settings
    assert (settings.disagreement_slowdown, settings.disagreement_stop) == (0.1, 0.5)
    assert set_ok(node, 'goal_hold.exit_radius_m', 0.06)
    assert set_ok(node, 'goal_hold.enter_radius_m', 0.03)
    assert node.policies.goal_hold_cfg == {'enter_radius_m': 0.03, 'exit_radius_m': 0.06}
    assert node.params['goal_hold']['enter_radius_m'] == 0.03
    # Cross-parameter rules and the schema's validation reject without changing anything.
    assert not set_ok(node, 'goal_hold.enter_radius_m', 0.1)
    assert not set_ok(node, 'disagreement_stop', 0.05)
    assert not set_ok(node, 'disagreement_slowdown', -1.0)
    assert node.policies.goal_hold_cfg['enter_radius_m'] == 0.03
    assert node.control.settings.disagreement_stop == 0.5
    # A running episode's policy takes the new radii at once.
    from mbrl_robot.config import node_params
    from mbrl_robot.core.models import create_model
    model = create_model(node_params('ci_smoke', 'trainer')['model'], 17, 7, 'cpu', seed=0)
    node.policies.set_model(model, 1)
    node.control._policy = policy = node.policies.create()
    assert set_ok(node, 'goal_hold.enter_radius_m', 0.01)
    assert policy.hold.enter_radius == 0.01
    assert policy.hold.exit_radius == 0.06


def test_a_controller_callback_that_raises_stops_the_arm(make_node, monkeypatch):
    """GuardedNode's fault hook on the controller: the message is dropped, the state it
    plans from is gone (zero velocity until a good one), the fault counted on /diagnostics."""
    from sensor_msgs.msg import JointState
    node = make_node('controller')
    [sub] = [s for s in node.subscriptions if s.topic_name.endswith('/joint_states')]
    node.sensed.joints = object()  # a state in force

    def unforeseen(msg):
        raise RuntimeError('unforeseen')
    monkeypatch.setattr(node, '_parse_joint_state', unforeseen)
    sub.callback(JointState())  # what the executor calls: the guarded callback
    assert node.sensed.joints is None
    assert node._stats['callback_faults'] == 1
    assert node.callback_faults == {f'a message on {sub.topic_name}': 1}


def test_a_stats_answer_that_is_not_one_is_asked_again(make_node, monkeypatch, capfd):
    """The recipe reads the trainer's and the buffer's ``~/stats`` answers as JSON. One whose
    server failed (GuardedNode answers ``success: false`` and the exception), that is not JSON
    or that lacks a field the recipe reads is said in one line and asked again a second later,
    not a traceback that ends the recipe; past the stage's deadline the recipe stops with one
    line."""
    import json
    import time
    from std_srvs.srv import Trigger
    from mbrl_robot.nodes.recipe import STATS_RETRY_S
    node = make_node('recipe')
    failed = Trigger.Response(success=False, message='OperationalError: disk I/O error')
    answers = [failed,
               Trigger.Response(success=True, message='{"version": 3'),
               Trigger.Response(success=True, message=json.dumps({'n_transitions': 3})),
               Trigger.Response(success=True, message=json.dumps({'version': 3})),
               failed]
    asked = []

    class Answered:
        def __init__(self, client):
            self.client, self.answer = client, answers.pop(0)

        def result(self):
            return self.answer

    def call(client, request):
        asked.append(client.srv_name)
        node._call_ = Answered(client)
    monkeypatch.setattr(node, '_call', call)
    node._goto('wait_model', 60.0)
    node._call(node.trainer_stats_client, Trigger.Request())
    for n in range(1, 4):  # three answers that are not one
        node.step()
        assert node._stage == 'wait_model' and len(asked) == n and not node.done
        node.step()  # not before STATS_RETRY_S
        assert len(asked) == n
        assert node._ask_again_at > time.monotonic() + 0.5 * STATS_RETRY_S
        node._ask_again_at = time.monotonic()  # the second has passed
        node.step()
        assert asked == ['trainer/stats'] * (n + 1)
    assert "/trainer/stats answered 'OperationalError: disk I/O error': asking again in 1 s" in (
        capfd.readouterr().err)
    node.step()
    assert node.model_version == 3 and node._stage == 'episodes'
    # A server that keeps failing: asked again until the stage's deadline ends the recipe, in
    # one line.
    node._goto('train_sync', 120.0)
    node._call(node.buffer_stats_client, Trigger.Request())
    node.step()
    assert node._ask_again_at is not None and not node.done
    node._deadline = time.monotonic() - 1.0
    node.step()
    assert node.done and not node.finished
    assert 'recipe stopped: timed out waiting for the buffer to store every executed ' \
        'transition' in capfd.readouterr().err


def test_trainer_live_parameters(make_node):
    node = make_node('trainer')
    assert node.retrain_timer is None
    assert set_ok(node, 'retrain_period_s', 5.0)
    assert node.retrain_timer is not None
    assert node.retrain_timer.timer_period_ns == 5_000_000_000
    assert set_ok(node, 'retrain_period_s', 0.0)
    assert node.retrain_timer is None
    assert set_ok(node, 'max_val_loss', 3.0) and node.max_val_loss == 3.0
    assert set_ok(node, 'warm_start', False) and node.warm_start is False
    assert not set_ok(node, 'retrain_period_s', -1.0)
    assert not set_ok(node, 'max_val_loss', 'big')


def test_twin_live_parameters(make_node):
    node = make_node('twin')
    assert set_ok(node, 'command_timeout_s', 1.5) and node.command_timeout_s == 1.5
    assert set_ok(node, 'episode_seed', 7) and node.episode_seed == 7
    assert set_ok(node, 'lockstep_stop_after_s', 0.0) and node.lockstep_stop_after_s == 0.0
    assert not set_ok(node, 'lockstep_stop_after_s', -1.0)
    assert not set_ok(node, 'episode_seed', -5)
    assert node.episode_seed == 7


def test_buffer_live_parameters(make_node):
    node = make_node('buffer')
    assert set_ok(node, 'publish_batch_size', 7) and node.publish_batch_size == 7
    assert not set_ok(node, 'publish_batch_size', 0)
    assert node.publish_batch_size == 7


@pytest.mark.parametrize('node,args,needle', [
    ('controller', ['planner.horizon:=-3'],
     'controller: parameter planner.horizon = -3 is not allowed: must be within [1, 500]'),
    ('trainer', ['training.max_epoch:=3'],
     "trainer: unknown parameter 'training.max_epoch'; did you mean 'training.max_epochs'?"),
    ('twin', ['command_timeout_s:=abc'],
     "twin: parameter command_timeout_s = 'abc' is a string, expected double"),
    ('monitor', ['port:=0', 'record_path:=/nonexistent/dir/live.mcap'],
     "record_path '/nonexistent/dir/live.mcap': "),
])
def test_a_node_started_with_bad_input_says_so_in_one_line(tmp_path, ros_env, node, args,
                                                           needle):
    """As a launch file or ``ros2 run`` starts it (``mbrl_run`` checks first): exit status 2, one
    line naming the parameter and what is allowed, no traceback; rclpy's shutdown destroys the
    half-made node without another error."""
    cmd = [sys.executable, '-m', f'mbrl_robot.nodes.{node}', '--ros-args',
           '-p', f'run_dir:={tmp_path}/run']
    for arg in args:
        cmd += ['-p', arg]
    proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # Only the twin's import of pybullet prints a line before it ("pybullet build time").
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith('pybullet build time')]
    assert len(lines) == 1 and lines[0].startswith(f'{node}: cannot start: '), proc.stderr
    assert needle in lines[0], lines[0]
    assert 'Traceback' not in proc.stdout + proc.stderr


def test_a_node_given_a_parameter_file_rcl_cannot_parse_says_so(tmp_path, ros_env):
    broken = tmp_path / 'broken.yaml'
    broken.write_text('/**/controller:\n  ros__parameters:\n    planner: {horizon: 3\n')
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.nodes.controller', '--ros-args',
                           '--params-file', str(broken)],
                          env=ros_env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('controller: cannot start: failed to initialize rcl: '), last
    assert str(broken) in last and 'Traceback' not in proc.stdout + proc.stderr


def test_an_integer_for_a_double_parameter_is_taken_as_the_double(ros_env):
    """``command_timeout_s: 1`` in a hand-written profile: rclpy alone rejects an integer for a
    double parameter (with a traceback); the schema takes it, as ``mbrl_run`` does."""
    rclpy.init(args=['--ros-args', '-p', 'command_timeout_s:=1', '-p', 'episode_seed:=3'])
    try:
        module = importlib.import_module('mbrl_robot.nodes.twin')
        node = module.TwinNode()
        try:
            assert node.params['command_timeout_s'] == 1.0
            assert isinstance(node.params['command_timeout_s'], float)
            assert node.get_parameter('command_timeout_s').type_ == Parameter.Type.DOUBLE
            assert node.params['episode_seed'] == 3  # an override of another type, unchanged
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
