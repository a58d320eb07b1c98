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
"""mbrl_run checks every parameter before it starts a node, and writes the file the nodes use.

A bad ``--set`` (wrong type, misspelt name, unknown node) or a missing or broken ``--profile``
file ends the runner with one clear line on stderr, no traceback, a non-zero exit, and no node
started.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mbrl_robot.config import node_params
from mbrl_robot.core.schema import flatten, NODES
from mbrl_robot.runner import (effective_params, Graph, GRAPH_NODES, main as runner_main,
                               parse_args, parse_sets)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('setting,needle', [
    ('controller.planner.population_size=abc',
     "planner.population_size = 'abc' is a string, expected int"),
    ('controller.planner.population_size=1e3', "planner.population_size = '1e3' is a string"),
    ('controller.planner.horizon=[',
     "not a YAML value (expected the node content, but found '<stream end>')"),
    ('controller.planner.populaton_size=100',
     "unknown parameter 'planner.populaton_size'; did you mean 'planner.population_size'?"),
    ('controler.mode=planner', "unknown node 'controler'; did you mean 'controller'?"),
    ('recipe.iterations=-1', 'recipe: parameter iterations = -1 is not allowed'),
    ('monitor.port=70000', 'monitor: parameter port = 70000 is not allowed'),
    ('recipe.policy_episodes_per_iteration=2',
     'recipe.policy_episodes_per_iteration (2) is more than mpc_episodes_per_iteration (1)'),
    ('recipe.policy_episodes_per_iteration=1',
     "recipe: dagger episodes run the trained policy, but trainer.algorithm 'ensemble' trains "
     'none (use distill or mbpo)'),
])
def test_bad_set_fails_before_any_node_with_one_line(tmp_path, setting, needle):
    run_dir = tmp_path / 'run'
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(run_dir), '--set', setting],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mbrl_run: '), proc.stderr
    assert needle in lines[0]
    assert 'Traceback' not in proc.stderr + proc.stdout
    assert not run_dir.exists()  # no logs, no params.yaml, no node


@pytest.mark.parametrize('profile', ['no_such_profile', '/nonexistent/dir/profile.yaml'])
def test_a_missing_profile_fails_with_one_line(tmp_path, profile):
    run_dir = tmp_path / 'run'
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', profile,
                           '--run-dir', str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mbrl_run: config file not found: '), lines
    assert 'Traceback' not in proc.stderr + proc.stdout and not run_dir.exists()


def refused(argv, capfd) -> str:
    """``mbrl_run argv`` in this process, for input refused before any node starts (no process
    to spawn: the runner's import is paid once): its exit status must be 2 and its output one
    line on stderr, which is returned."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert runner_main(argv) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mbrl_run: ') and not out, (out, err)
    return lines[0]


@pytest.mark.parametrize('content,needle', [
    (b'controller:\n  ros__parameters: {planner: [1, 2\n', 'not valid YAML at line 3, column 1: '),
    (b'\xff\xfe\x00 not text', 'not a UTF-8 text file'),
    (b'- 1\n- 2\n', 'expected a mapping of node names'),
    (b'controller:\n  planner: {horizon: 15}\n', "node 'controller' has no ros__parameters"),
    (b'controller:\n  ros__parameters: {planner: {horizon: .nan}}\n',
     'parameter planner.horizon = nan is a double, expected int'),
    # A misspelt or namespaced node: its whole block would be ignored.
    (b'contoller:\n  ros__parameters: {planner: {horizon: 5}}\n',
     "unknown node 'contoller'; did you mean 'controller'?"),
    (b'/arm1/controller:\n  ros__parameters: {planner: {horizon: 5}}\n',
     "unknown node 'arm1/controller'"),
    # Two blocks for one node, or a key twice: the first would be dropped without a word.
    (b'/**/controller:\n  ros__parameters: {planner: {horizon: 3}}\n'
     b'controller:\n  ros__parameters: {planner: {horizon: 5}}\n',
     "two blocks for node 'controller': '/**/controller' and 'controller'"),
    (b'controller:\n  ros__parameters:\n    planner: {horizon: 3, horizon: 5}\n',
     "not valid YAML at line 3, column 27: 'horizon' given twice in one mapping"),
    (b'twin:\n  ros__parameters: [1, 2]\n',
     "node 'twin': ros__parameters is a list, not a mapping of parameters"),
    (b'5:\n  ros__parameters: {}\n', '5 is not a node name'),
])
def test_a_broken_profile_fails_with_one_line_naming_it(tmp_path, capfd, content, needle):
    profile, run_dir = tmp_path / 'broken.yaml', tmp_path / 'run'
    profile.write_bytes(content)
    line = refused(['--profile', str(profile), '--run-dir', str(run_dir)], capfd)
    assert line.startswith(f'mbrl_run: {profile}: ') and needle in line, line
    assert not run_dir.exists()


@pytest.mark.parametrize('argv,env,says', [
    (['--nodes', 'trainer,trainer'], {}, '--nodes trainer,trainer: name each node once'),
    (['--rename', 'controller=twin'], {},
     "--rename: two nodes would be named 'twin' (renamed: controller=twin)"),
    (['--rename', 'controller=ctl', '--rename', 'trainer=ctl'], {},
     "--rename: two nodes would be named 'ctl'"),
    (['--resume', '--run-dir', '{tmp}/typo'], {}, '--resume: no run in {tmp}/typo to continue'),
    ([], {'ROS_DOMAIN_ID': 'abc'}, "ROS_DOMAIN_ID='abc': give a whole number from 0 to 232"),
    ([], {'ROS_DOMAIN_ID': '999'}, "ROS_DOMAIN_ID='999': give a whole number from 0 to 232"),
    # rcl fails on blanks and reads a leading zero as octal.
    ([], {'ROS_DOMAIN_ID': '  '}, "ROS_DOMAIN_ID='  ': give a whole number from 0 to 232"),
    ([], {'ROS_DOMAIN_ID': '010'}, "ROS_DOMAIN_ID='010': give a whole number from 0 to 232"),
    # Last: no --run-dir (the default, runs/<profile>-<time>, is a new one: nothing to resume).
    (['--resume'], {}, '--resume: give the --run-dir of the run to continue'),
])
def test_arguments_that_would_start_a_broken_graph_are_refused(tmp_path, capfd, monkeypatch,
                                                               argv, env, says):
    """Each of these started nodes before: a second trainer left running after the run, a
    node under another's name and parameters, a fresh run where a stopped one was meant, every
    node failing on the DDS domain with a traceback's first line."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [a.replace('{tmp}', str(tmp_path)) for a in argv]
    if argv != ['--resume']:
        argv += [] if '--run-dir' in argv else ['--run-dir', str(tmp_path / 'run')]
    monkeypatch.chdir(tmp_path)  # where a default run dir would go
    line = refused(argv, capfd)
    assert line.startswith('mbrl_run: ' + says.replace('{tmp}', str(tmp_path))), line
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)  # no run dir, no runs/


@pytest.mark.parametrize('extra,needle', [
    (['--record', '{tmp}/no_such_dir/live.mcap'], 'the folder {tmp}/no_such_dir does not exist'),
    (['--record', '{tmp}'], "monitor.record_path '{tmp}' is a folder"),
    (['--live', '--set', 'monitor.record_path={tmp}/no_such_dir/live.mcap'],
     'does not exist'),
    (['--record', '{tmp}/a_file/live.mcap'], '{tmp}/a_file is a file, not a folder'),
])
def test_a_recording_that_cannot_be_written_fails_before_any_node(tmp_path, capfd, extra,
                                                                  needle):
    """Else the monitor fails at its start and the run goes on unrecorded."""
    (tmp_path / 'a_file').write_text('')
    run_dir = tmp_path / 'run'
    line = refused(['--profile', 'ci_smoke', '--run-dir', str(run_dir)]
                   + [a.format(tmp=tmp_path) for a in extra], capfd)
    assert needle.format(tmp=tmp_path) in line and not run_dir.exists()


def test_a_taken_live_view_port_fails_before_any_node(tmp_path, capfd):
    """Else the monitor cannot start, and a node that cannot start stops the run."""
    run_dir = tmp_path / 'run'
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(['--profile', 'ci_smoke', '--run-dir', str(run_dir), '--live', '--set',
                        f'monitor.port={port}'], capfd)
    assert f'cannot listen on 127.0.0.1:{port}' in line and 'monitor.port=0' in line
    assert not run_dir.exists()


def test_a_run_dir_that_cannot_be_made_fails_with_one_line(tmp_path, capfd):
    (tmp_path / 'a_file').write_text('')
    run_dir = tmp_path / 'a_file' / 'run'
    line = refused(['--profile', 'ci_smoke', '--run-dir', str(run_dir)], capfd)
    assert line == f'mbrl_run: run dir {run_dir}: Not a directory'


def test_the_run_params_file_is_what_the_nodes_use(tmp_path):
    sets = parse_sets(['controller.planner.horizon=7', 'trainer.model.hidden_size=64',
                       'controller.disagreement_stop=1'])
    params = effective_params('ci_smoke', sets, str(tmp_path))
    path = str(tmp_path / 'params.yaml')
    from mbrl_robot.config import write_param_file
    write_param_file(params, path)
    for node in NODES:
        # Complete: every schema parameter, coerced to its type, for each node.
        assert flatten(node_params(path, node)) == flatten(params[node])
    assert params['controller']['planner']['horizon'] == 7
    assert params['controller']['disagreement_stop'] == 1.0
    assert params['trainer']['model']['hidden_size'] == 64
    assert params['trainer']['checkpoint_dir'] == os.path.join(str(tmp_path), 'models')
    assert params['twin']['use_sim_time'] is False
    assert params['controller']['use_sim_time'] is True


@pytest.mark.parametrize('argv,says', [
    (['--timeout', '-5'], 'argument --timeout: -5 must be > 0.0'),
    (['--timeout', 'nan'], 'argument --timeout: nan must be > 0.0'),
    (['--restarts', '-1'], 'argument --restarts: -1 must be >= 0'),
    (['--restarts', '1.5'], "argument --restarts: '1.5' is not an integer"),
])
def test_a_timeout_or_restart_count_out_of_range_is_refused(capsys, argv, says):
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f'mbrl_run: error: {says}'


def test_the_live_view_is_started_only_on_request():
    assert 'monitor' in NODES and 'monitor' not in GRAPH_NODES
    args = parse_args(['--record', 'x.mcap'])
    assert args.record == 'x.mcap' and not args.live and args.progress
    assert parse_args(['--live', '--no-progress']).live and not parse_args(
        ['--no-progress']).progress
    params = effective_params('ci_smoke', parse_sets(['monitor.record_path=/tmp/a.mcap']), '/r')
    assert params['monitor']['record_path'] == '/tmp/a.mcap'
    assert params['monitor']['port'] == 8765 and params['monitor']['controller'] == 'controller'


def test_a_fleet_runs_each_arms_nodes_in_its_namespace_on_its_clock(tmp_path):
    from mbrl_robot.config import load_param_file
    from mbrl_robot.runner import fleet_processes, parse_arms, waited_node
    assert parse_arms('1') == [''] and parse_arms('3') == ['arm0', 'arm1', 'arm2']
    assert parse_arms('left, right') == ['left', 'right']
    for bad in ('0', '65', 'a,a', '1arm', 'a,,b'):
        with pytest.raises(ValueError, match='--arms|arm_namespaces'):
            parse_arms(bad)
    params = effective_params('ci_smoke', {}, str(tmp_path))
    nodes = ('twin', 'buffer', 'trainer', 'controller', 'recipe', 'monitor')
    assert fleet_processes(nodes, [''], params, str(tmp_path), []) == (list(nodes), {})
    keys, args = fleet_processes(nodes, ['arm0', 'arm1'], params, str(tmp_path),
                                 ['-r', '__ns:=/lab'])
    assert keys == ['arm0/twin', 'arm1/twin', 'buffer', 'trainer', 'arm0/controller',
                    'arm1/controller', 'recipe', 'arm0/monitor']
    assert args['arm1/controller'][:4] == ['-r', '__ns:=/lab/arm1', '-r',
                                           '/clock:=/lab/arm1/clock']
    own = load_param_file(args['arm1/controller'][-1])['lab/arm1/controller']
    assert own['topics'] == {'model_version': '/lab/trainer/model',
                             'model_files': '/lab/trainer/model_files',
                             'policy_version': '/lab/trainer/policy'}
    assert own['model_cache_dir'] == os.path.join(str(tmp_path), 'controller_models', 'arm1')
    assert own['outbox_dir'] == os.path.join(str(tmp_path), 'controller_outbox', 'arm1')
    monitor = load_param_file(args['arm0/monitor'][-1])['lab/arm0/monitor']
    assert monitor['topics'] == {'progress': '/lab/recipe/progress'}
    assert waited_node(keys) == 'recipe'
    # --live starts the monitor first; without the recipe the run still ends with its first
    # node (the waited node is never restarted, the monitor is).
    other = tmp_path / 'other'  # its own parameter files
    other.mkdir()
    for nodes, arms, waited in ((('monitor', 'trainer'), [''], 'trainer'),
                                (('monitor', 'twin', 'controller'), ['arm0', 'arm1'],
                                 'arm0/twin')):
        assert waited_node(fleet_processes(nodes, arms, params, str(other), [])[0]) == waited


def test_the_buffer_and_the_recipe_must_agree_on_the_arms(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--set', 'buffer.arm_namespaces=[a, b]'],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mbrl_run: arm_namespaces differ: buffer ['a', 'b'], recipe ['']: set it under /** in "
        'the profile']
    assert not os.path.isdir(tmp_path / 'logs')


def test_diagnostics_slower_than_the_stall_watch_stop_the_run_in_one_line(tmp_path):
    """The recipe hears a loading controller on its diagnostics: a period that its stall
    watchdog could miss would take a loading arm for a stalled one."""
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--set',
                           'controller.diagnostics_period_s=30', '--set',
                           'recipe.episode_stall_s=60'],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'mbrl_run: controller.diagnostics_period_s 30 s is not below half of '
        'recipe.episode_stall_s 60 s: the stall watchdog would take a loading controller for a '
        'stalled one']
    assert not os.path.isdir(tmp_path / 'logs')


def test_a_node_that_cannot_start_stops_the_run_at_once(tmp_path, capsys):
    """Exit status 2 is a node rejecting its input (spin.run_node): a restart would be rejected
    the same way, so the run stops instead of restarting it."""
    graph = Graph(str(tmp_path / 'params.yaml'), str(tmp_path), nodes=['recipe', 'monitor'],
                  restarts=3)
    sleep = [sys.executable, '-c', 'import time; time.sleep(60)']
    graph.procs = {'recipe': subprocess.Popen(sleep, start_new_session=True),
                   'monitor': subprocess.Popen([sys.executable, '-c', 'raise SystemExit(2)'],
                                               start_new_session=True)}
    graph._started = {n: time.monotonic() for n in graph.procs}
    graph._spawn = lambda *args, **kwargs: pytest.fail('a node that cannot start restarted')
    try:
        assert graph.wait('recipe', timeout=30) is None
    finally:
        graph.stop()
    assert ('mbrl_run: monitor cannot start on its input (its line above, logs/monitor.log): '
            'stopping') in capsys.readouterr().out


FAKE_NODE = ('import signal, sys, time\n'
             'def say(what):\n'
             '    open(sys.argv[2], "a").write(f"{sys.argv[1]} {what} {time.time()}\\n")\n'
             'def term(*_):\n'
             '    say("term")\n'
             '    time.sleep(float(sys.argv[3]))\n'
             '    say("exit")\n'
             '    sys.exit(0)\n'
             'signal.signal(signal.SIGTERM, term)\n'
             'print("ready", flush=True)\n'
             'time.sleep(60)\n')


def fake_graph(tmp_path, lingers):
    """A Graph of stand-in processes, each logging when SIGTERM came and when it exited (after
    lingering its seconds), and the log."""
    graph = Graph(str(tmp_path / 'params.yaml'), str(tmp_path), nodes=list(lingers))
    log = tmp_path / 'stops.log'
    graph.procs = {name: subprocess.Popen([sys.executable, '-c', FAKE_NODE, name, str(log),
                                           str(linger)], stdout=subprocess.PIPE, text=True,
                                          start_new_session=True)
                   for name, linger in lingers.items()}
    for proc in graph.procs.values():
        assert proc.stdout.readline() == 'ready\n'
    return graph, log


def stop_events(log):
    return {tuple(line.split()[:2]): float(line.split()[2])
            for line in log.read_text().splitlines()}


def test_the_monitor_is_stopped_last_once_the_others_are_gone(tmp_path):
    """The live view records until the nodes it watches are gone (what they said last: the
    recipe's final progress), not stopped beside them; a fleet's monitors too."""
    graph, log = fake_graph(tmp_path, {'monitor': 0, 'arm1/monitor': 0, 'recipe': 0.5,
                                       'arm0/controller': 1.0})
    graph.stop()
    events = stop_events(log)
    last_exit = max(events[('recipe', 'exit')], events[('arm0/controller', 'exit')])
    assert events[('monitor', 'term')] >= last_exit, events
    assert events[('arm1/monitor', 'term')] >= last_exit, events
    assert all(p.poll() == 0 for p in graph.procs.values())


def test_a_second_ctrl_c_while_stopping_leaves_no_monitor_behind(tmp_path):
    """Ctrl-C again while the others are still stopping: the monitor is stopped then too (its
    port and recording freed), and the interrupt goes on to the caller."""
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt
    graph, log = fake_graph(tmp_path, {'monitor': 0, 'arm0/controller': 3.0})
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # during the controller's 3 s
        with pytest.raises(KeyboardInterrupt):
            graph.stop()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert ('monitor', 'exit') in stop_events(log)
    assert graph.procs['monitor'].wait(timeout=10) == 0
    assert graph.procs['arm0/controller'].wait(timeout=10) == 0


@pytest.mark.parametrize('summary', ['{"episodes": [', '{"episodes": [1, 2], "trainings": []}'])
def test_resuming_from_a_damaged_summary_stops_in_one_line_and_keeps_it(tmp_path, ros_env,
                                                                        summary):
    """The recipe node alone, as mbrl_run --resume starts it (it stops before it needs the
    others; mbrl_run then stops the run: test_a_node_that_cannot_start_stops_the_run_at_once)."""
    (tmp_path / 'summary.json').write_text(summary)
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.nodes.recipe', '--ros-args',
                           '-p', 'resume:=true', '-p', f'run_dir:={tmp_path}'],
                          cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f'recipe: cannot start: cannot resume from {tmp_path}/'
                               'summary.json ('), lines[0]
    assert 'Traceback' not in proc.stdout + proc.stderr
    assert (tmp_path / 'summary.json').read_text() == summary


def test_a_run_stopped_while_its_nodes_start_ends_without_tracebacks(tmp_path, ros_env):
    """The nodes are still importing (torch, rclpy) when the run stops: SIGTERM ends them
    silently, where SIGINT gave each a KeyboardInterrupt traceback."""
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--timeout', '0.3', '--no-progress'],
                          cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=120)
    assert 'recipe did not finish within 0.3 s' in proc.stdout, proc.stdout
    logs = {p.name: p.read_text() for p in (tmp_path / 'logs').glob('*.log')}
    assert set(GRAPH_NODES) <= {name[:-len('.log')] for name in logs}
    assert not [name for name, text in logs.items() if 'Traceback' in text], logs
    assert 'Traceback' not in proc.stdout + proc.stderr


def test_a_run_without_the_recipe_ends_at_its_timeout_with_success(tmp_path, ros_env):
    """``--nodes trainer`` on a GPU host lasts until Ctrl-C or --timeout (README): the timeout
    is its normal end, not a failure (exit status 1 and "trainer did not finish" before)."""
    proc = subprocess.run([sys.executable, '-m', 'mbrl_robot.runner', '--profile', 'ci_smoke',
                           '--run-dir', str(tmp_path), '--nodes', 'trainer', '--timeout', '2',
                           '--no-progress'],
                          cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'mbrl_run: --timeout 2 s: stopping every node' in proc.stdout, proc.stdout


@pytest.mark.parametrize('setting,holds', [('recipe.run_dir', 'summary.json'),
                                           ('buffer.data_dir', 'transitions.sqlite3'),
                                           ('trainer.checkpoint_dir', 'v0001'),
                                           (None, 'summary.json')])
def test_a_new_run_pointed_at_an_earlier_runs_files_is_refused(tmp_path, capfd, setting, holds):
    """A new run in --run-dir that holds a run is refused, and so is one that --set points at
    an earlier run's files: the recipe would have replaced the earlier run's summary, the
    buffer and trainer taken up its data."""
    earlier = tmp_path / 'earlier'
    earlier.mkdir()
    (earlier / holds).write_text('{}')
    if setting is None:  # --run-dir itself
        line = refused(['--run-dir', str(earlier)], capfd)
        setting = 'recipe.run_dir'
    else:
        line = refused(['--run-dir', str(tmp_path / 'run'), '--set', f'{setting}={earlier}'],
                       capfd)
    node, key = setting.split('.')
    assert line == (f'mbrl_run: {earlier} holds a run already ({holds}; {node}.{key}): pass '
                    '--resume to continue it, or choose another --run-dir'), line
    assert not (tmp_path / 'run').exists() and os.listdir(earlier) == [holds]
