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
"""pip-only runner: starts the recipe's node graph as separate processes, like the launch file.

For machines without ``ros2 launch`` (ROS 2 from PyPI wheels): each node runs as its own Python
process with ``--ros-args --params-file config/<profile>.yaml``, exactly what
``launch/recipe_twin.launch.py`` starts. Node logs go to ``<run_dir>/logs/<node>.log``; the
recipe's progress is echoed here. Ctrl-C is forwarded to every node, which then stop cleanly
(the controller's last command is zero velocity).
"""

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from mbrl_robot.config import (_merge, check_node_names, load_param_file, node_params,
                               number_argument, write_param_file)
from mbrl_robot.core.algorithms.mpc_recipe import build_phases
from mbrl_robot.core.schema import NODES, suggest, unflatten
from mbrl_robot.nodes.spin import CANNOT_START, CANNOT_START_STATUS
from mbrl_robot.nodes.transport import check_arm_namespaces
from mbrl_robot.paths import config_path, free_record_path, recording_note
from mbrl_robot.progress import ProgressDisplay

# The recipe's graph; --live adds the monitor (the Foxglove live view).
GRAPH_NODES = tuple(n for n in NODES if n != 'monitor')
# Nodes of one arm: with several arms (arm_namespaces), one of each per arm, in its namespace.
ARM_NODES = ('twin', 'controller')
# Topics an arm's nodes take from nodes outside the arm (the trainer's, the recipe's progress):
# made absolute, so they do not move into the arm's namespace.
FLEET_TOPICS = {'controller': ('model_version', 'model_files', 'policy_version'),
                'monitor': ('progress',)}


def fleet_processes(nodes: Sequence[str], arms: Sequence[str], params: Dict[str, Dict[str, Any]],
                    run_dir: str, ros_args: Sequence[str], names: Optional[Dict[str, str]] = None
                    ) -> Tuple[List[str], Dict[str, List[str]]]:
    """The processes of a run with ``arms`` (namespaces; [''] = one arm, no namespace).

    Each node of :data:`ARM_NODES` (and the monitor, which watches the first arm) runs once per
    arm as ``<arm>/<node>``, started in the arm's namespace (under the run's own ``__ns`` when
    ``ros_args`` give one), with ``/clock`` remapped to the arm's (each lockstep twin owns its
    arm's time) and, from ``<run_dir>/params.<arm>.yaml`` (written here), the topics of
    :data:`FLEET_TOPICS` made absolute and a model cache of its own. The buffer, trainer and
    recipe run once and reach every arm (``arm_namespaces``).

    Returns:
        ``(keys, ros_args)``: process keys in start order, and per key its extra ROS arguments.
    """
    if list(arms) == ['']:
        return list(nodes), {}
    names = names or {}
    base = ''
    for i, arg in enumerate(ros_args):
        if arg.startswith('__ns:=') and i and ros_args[i - 1] in ('-r', '--remap'):
            base = arg[len('__ns:='):].rstrip('/')
    keys: List[str] = []
    extra_args: Dict[str, List[str]] = {}
    for arm in arms:
        # A parameter file of the arm's own nodes ('-p node:...' does not reach a node in a
        # namespace), loaded after the run's.
        blocks, fqns = {}, {}
        for node in ARM_NODES + ('monitor',):
            # Not an empty block (the twin's): rclpy reads 'topics: {}' as a parameter 'topics'.
            over: Dict[str, Any] = {'topics': {t: _absolute(base, params[node]['topics'][t])
                                               for t in FLEET_TOPICS.get(node, ())}}
            if not over['topics']:
                del over['topics']
            if node == 'controller':
                over['model_cache_dir'] = os.path.join(run_dir, 'controller_models', arm)
                over['outbox_dir'] = os.path.join(run_dir, 'controller_outbox', arm)
            blocks[node] = over
            fqns[node] = f'{base}/{arm}/{names.get(node, node)}'
        path = os.path.join(run_dir, f'params.{arm}.yaml')
        write_param_file(blocks, path, fqns)
        for node in ARM_NODES + ('monitor',):
            extra_args[f'{arm}/{node}'] = ['-r', f'__ns:={base}/{arm}', '-r',
                                           f'/clock:={base}/{arm}/clock', '--params-file', path]
    for node in nodes:
        if node not in ARM_NODES + ('monitor',):
            keys.append(node)
        else:
            keys += [f'{arm}/{node}' for arm in (arms if node in ARM_NODES else arms[:1])]
    return keys, extra_args


def check_record_path(path: str) -> None:
    """Raise ``ValueError`` unless the live view can write its recording to ``path`` ('' = no
    recording): else the monitor would fail at its start, and the run go on unrecorded."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    where = f'monitor.record_path {path!r}'
    if os.path.isdir(path):
        raise ValueError(f'{where} is a folder: name a file in it, e.g. '
                         f'{os.path.join(path, "run.mcap")}')
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f'{where}: {folder} is a file, not a folder')
    if not os.path.isdir(folder):
        raise ValueError(f'{where}: the folder {folder} does not exist')
    if not os.access(folder, os.W_OK):
        raise ValueError(f'{where}: the folder {folder} is not writable')


def check_port_free(host: str, port: int) -> None:
    """Raise ``ValueError`` when the live view's port is taken (0 = any free port): else the
    monitor cannot start and the run stops."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as s:
        # As a server binds: a port left in TIME_WAIT by an earlier run is free, a listening
        # one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f'monitor: the live view cannot listen on {host}:{port} '
                             f'({e.strerror or e}): --set monitor.port=0 (any free port) or '
                             'another port') from None


def check_policy_source(params: Dict[str, Dict[str, Any]]) -> None:
    """Raise ``ValueError`` when the recipe runs episodes of a trained policy (a ``policy``
    baseline, ``policy_episodes_per_iteration``) that nothing trains: a planner-mode controller
    follows the policies the trainer announces, and only ``distill`` and ``mbpo`` announce any
    (a controller in policy mode runs the policy whatever the episode says). Also checks the
    phases themselves (:func:`build_phases`)."""
    wanted = sorted({ph['stage'] for ph in build_phases(params['recipe'])
                     if ph.get('policy') == 'policy'})
    if (wanted and params['controller']['mode'] == 'planner'
            and params['trainer']['algorithm'] not in ('distill', 'mbpo')):
        raise ValueError(f'recipe: {", ".join(wanted)} episodes run the trained policy, but '
                         f'trainer.algorithm {params["trainer"]["algorithm"]!r} trains none '
                         '(use distill or mbpo)')


def check_stall_watch(params: Dict[str, Dict[str, Any]]) -> None:
    """Raise ``ValueError`` when the recipe's stall watchdog could miss a loading controller:
    it hears of the loading on the controller's diagnostics, at least twice within
    ``episode_stall_s`` only if they come at most every half of it."""
    period = params['controller']['diagnostics_period_s']
    stall = params['recipe']['episode_stall_s']
    if 2.0 * period >= stall:
        raise ValueError(f'controller.diagnostics_period_s {period:g} s is not below half of '
                         f'recipe.episode_stall_s {stall:g} s: the stall watchdog would take a '
                         'loading controller for a stalled one')


def _absolute(base: str, name: str) -> str:
    return name if name.startswith('/') else f'{base}/{name}'


def node_command(node: str, params_file: str, overrides: Optional[Dict[str, str]] = None,
                 ros_args: Optional[List[str]] = None) -> List[str]:
    """The command line of one node: ``python -m mbrl_robot.nodes.<node> --ros-args ...``."""
    cmd = [sys.executable, '-m', f'mbrl_robot.nodes.{node}', '--ros-args',
           '--params-file', params_file]
    for name, value in (overrides or {}).items():
        # Node-qualified, because a --params-file entry for the node outranks a bare -p.
        cmd += ['-p', f'{node}:{name}:={value}']
    return cmd + list(ros_args or [])


def parse_sets(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """``['controller.planner.horizon=5']`` -> ``{'controller': {'planner': {'horizon': 5}}}``.

    Values are YAML (``5`` is an int, ``5.0`` a double, ``[a, b]`` a list).

    Raises:
        ValueError: not ``NODE.PARAM=VALUE``, or an unknown node (with the nearest one).
    """
    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition('=')
        node, dot, param = name.partition('.')
        if not sep or not dot or not param:
            raise ValueError(f'--set {item!r}: expected NODE.PARAM=VALUE with NODE in {NODES}')
        if node not in NODES:
            raise ValueError(f'--set {item!r}: unknown node {node!r}' + suggest(node, NODES)
                             + f' (nodes: {list(NODES)})')
        try:
            parsed = yaml.safe_load(value) if value.strip() else ''
        except yaml.YAMLError as e:  # one line: PyYAML's message spans several
            what = getattr(e, 'problem', None) or str(e).splitlines()[0]
            raise ValueError(f'--set {item!r}: not a YAML value ({what})') from None
        out[node] = _merge(out.get(node, {}), unflatten({param: parsed}))
    return out


def parse_arms(value: str) -> List[str]:
    """``--arms``: ``'2'`` -> ``['arm0', 'arm1']``, ``'1'`` -> ``['']`` (one arm, no namespace),
    ``'left,right'`` -> ``['left', 'right']``.

    Raises:
        ValueError: a count outside 1-64, or a name that is not a ROS namespace.
    """
    if value.strip().isdigit():
        n = int(value)
        if not 1 <= n <= 64:
            raise ValueError(f'--arms {value}: give 1 to 64 arms')
        return [f'arm{i}' for i in range(n)] if n > 1 else ['']
    names = [v.strip() for v in value.split(',')]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f'--arms {value!r}: a count or distinct names separated by commas')
    return check_arm_namespaces(names)


def parse_renames(items: List[str]) -> Dict[str, str]:
    """``['controller=ctl']`` -> ``{'controller': 'ctl'}``.

    Raises:
        ValueError: not ``NODE=NAME``, an unknown node or an invalid name.
    """
    out = {}
    for item in items:
        node, sep, name = item.partition('=')
        if not sep or node not in NODES or not name.replace('_', 'a').isalnum():
            raise ValueError(f'--rename {item!r}: expected NODE=NAME with NODE in {NODES} and '
                             'NAME of letters, digits and _' + suggest(node, NODES))
        out[node] = name
    final = [out.get(node, node) for node in NODES]
    taken = sorted({name for name in final if final.count(name) > 1})
    if taken:
        raise ValueError(f'--rename: two nodes would be named {taken[0]!r} (renamed: '
                         + ', '.join(f'{n}={m}' for n, m in out.items()) + ')')
    return out


def check_no_earlier_run(params: Dict[str, Dict[str, Any]]) -> None:
    """Raise ``ValueError`` when a new run's files would land on an earlier run's (its summary,
    transitions or checkpoints, which the new run's nodes would take up as their own), wherever
    ``--run-dir`` or ``--set`` puts them."""
    for node, key, holds in (('recipe', 'run_dir', 'summary.json'),
                             ('buffer', 'data_dir', 'transitions.sqlite3'),
                             ('trainer', 'checkpoint_dir', 'v0001')):
        path = params[node][key]
        if os.path.exists(os.path.join(path, holds)):
            raise ValueError(f'{path} holds a run already ({holds}; {node}.{key}): pass '
                             '--resume to continue it, or choose another --run-dir')


def check_domain_id(value: Optional[str]) -> None:
    """Raise ``ValueError`` unless ``ROS_DOMAIN_ID`` is unset, empty or 0-232: rcl fails on
    anything else in every node, each printing only its traceback's first line here."""
    if value is None or value == '':
        return
    # Digits only: rcl reads '010' as octal and fails on blanks (every node, after the start).
    if not (value.isdigit() and value.isascii()) or int(value) > 232 or (
            len(value) > 1 and value.startswith('0')):
        raise ValueError(f'ROS_DOMAIN_ID={value!r}: give a whole number from 0 to 232 without '
                         'leading zeros (0-101 is safe on Linux)')


def effective_params(params_file: str, sets: Dict[str, Dict[str, Any]],
                     run_dir: str) -> Dict[str, Dict[str, Any]]:
    """Every node's complete, validated parameters: schema, profile, run paths, ``--set``.

    Raises:
        ValueError: an unknown or invalid parameter in the profile or in ``--set``.
    """
    out = {}
    for node in NODES:
        overrides = _merge(unflatten(graph_overrides(run_dir, node)), sets.get(node, {}))
        out[node] = node_params(params_file, node, overrides=overrides,
                                overrides_source='--set')
    return out


def write_effective_params(params_file: str, overrides: Dict[str, Dict[str, Any]],
                           path: str, run_dir: Optional[str] = None) -> None:
    """The profile with the run's paths and the ``--set`` values merged in: the file the nodes
    are started with, so it is exactly what the run used."""
    write_param_file(effective_params(params_file, overrides,
                                      run_dir or os.path.dirname(os.path.abspath(path))), path)


def graph_overrides(run_dir: str, node: str) -> Dict[str, str]:
    """Per-node parameters that place all of a run's files under ``run_dir``."""
    overrides = {}
    if node == 'recipe':
        overrides['run_dir'] = run_dir
    if node == 'buffer':
        overrides['data_dir'] = os.path.join(run_dir, 'buffer')
    if node == 'trainer':
        overrides['checkpoint_dir'] = os.path.join(run_dir, 'models')
    if node == 'controller':
        overrides['model_cache_dir'] = os.path.join(run_dir, 'controller_models')
        overrides['outbox_dir'] = os.path.join(run_dir, 'controller_outbox')
    return overrides


class Graph:
    """The node processes of one run, restarted when they die (``restarts`` times each)."""

    def __init__(self, params_file: str, run_dir: str, nodes=GRAPH_NODES,
                 extra: Optional[Dict[str, Dict[str, str]]] = None, echo=True,
                 ros_args: Optional[List[str]] = None,
                 names: Optional[Dict[str, str]] = None, restarts: int = 0,
                 node_ros_args: Optional[Dict[str, List[str]]] = None,
                 log_header: Optional[str] = None):
        """``log_header``: append to the nodes' logs after this line (a resumed run keeps the
        stopped session's logs); None starts them afresh."""
        self.params_file = params_file
        self.log_header = log_header
        self.run_dir = run_dir
        # A key is a node ('buffer') or an arm's node ('arm0/controller', see fleet_processes).
        self.nodes = list(nodes)
        self.extra = extra or {}
        self.echo = echo
        self.ros_args = list(ros_args or [])
        self.node_ros_args = dict(node_ros_args or {})
        self.names = dict(names or {})
        self.restarts = int(restarts)
        self.restarted: Dict[str, int] = {node: 0 for node in self.nodes}
        self.procs: Dict[str, subprocess.Popen] = {}
        self._started: Dict[str, float] = {}
        self._threads: List[threading.Thread] = []

    def start(self):
        os.makedirs(os.path.join(self.run_dir, 'logs'), exist_ok=True)
        for node in self.nodes:
            self._spawn(node, 'w' if self.log_header is None else 'a', self.log_header)

    def _spawn(self, node: str, mode: str = 'a', header: Optional[str] = None):
        """Start one node's process (its log appended to after a restart, after ``header``
        when given); record its pid."""
        log = open(os.path.join(self.run_dir, 'logs', f'{node.replace("/", ".")}.log'), mode)
        if header is not None:
            log.write(header + '\n')
            log.flush()
        module = node.rpartition('/')[2]
        rename = ['-r', f'__node:={self.names[module]}'] if module in self.names else []
        cmd = node_command(module, self.params_file, self.extra.get(node),
                           self.ros_args + rename + self.node_ros_args.get(node, []))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        self.procs[node] = proc
        self._started[node] = time.monotonic()
        t = threading.Thread(target=self._pump, args=(node, proc, log), daemon=True)
        t.start()
        self._threads.append(t)
        # Where a fault campaign finds each node's current process (benchmarks/faults.py).
        tmp = os.path.join(self.run_dir, 'logs', 'pids.json.tmp')
        with open(tmp, 'w') as f:
            json.dump({n: p.pid for n, p in self.procs.items()}, f)
        os.replace(tmp, os.path.join(self.run_dir, 'logs', 'pids.json'))

    def _pump(self, node, proc, log):
        with log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if self.echo and (node == 'recipe' or 'ERROR' in line or 'Traceback' in line
                                  or CANNOT_START in line):
                    sys.stdout.write(f'[{node}] {line}')
                    sys.stdout.flush()

    def wait(self, node: str, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for one node, restarting any other that exits while its budget lasts.

        Returns:
            ``node``'s exit code, or None when another node exited with no restart left.
        """
        t_end = None if timeout is None else time.monotonic() + timeout
        while t_end is None or time.monotonic() < t_end:
            rc = self.procs[node].poll()
            if rc is not None:
                return rc
            dead = {n: p.returncode for n, p in self.procs.items()
                    if n != node and p.poll() is not None}
            for name, code in dead.items():
                if code == CANNOT_START_STATUS:  # it rejected its input: it would again
                    print(f'mbrl_run: {name} cannot start on its input (its line above, '
                          f'logs/{name.replace("/", ".")}.log): stopping', flush=True)
                    return None
                if self.restarted[name] >= self.restarts:
                    print(f'mbrl_run: {name} exited (rc {code}) with no restart left '
                          f'({self.restarts}): stopping; see {self.run_dir}/logs', flush=True)
                    return None
                self.restarted[name] += 1
                print(f'mbrl_run: {name} exited (rc {code}) after '
                      f'{time.monotonic() - self._started[name]:.1f} s: restart '
                      f'{self.restarted[name]}/{self.restarts}', flush=True)
                self._spawn(name)
            time.sleep(0.2)
        raise TimeoutError(f'{node} did not finish within {timeout} s')

    def stop(self, grace: float = 10.0):
        """SIGTERM every node (a clean shutdown, as SIGINT: spin.run_node), again, then SIGKILL
        what is left. SIGTERM, not SIGINT: a node still importing (a run stopped in its first
        second) then ends silently, not with a KeyboardInterrupt traceback.

        The monitor last, once the others are gone: it records until then what they said last
        (the recipe's final progress, the controller's last diagnostics), where stopping all at
        once lost what it had not yet taken (CI: a recording without its last progress)."""
        watchers = [n for n in self.procs if n.rpartition('/')[2] == 'monitor']
        others_gone = False
        try:
            self._stop([n for n in self.procs if n not in watchers], grace)
            others_gone = True
        finally:  # a second Ctrl-C meanwhile: every node at once, the monitor not left behind
            self._stop(watchers if others_gone else list(self.procs), grace)
        for t in self._threads:
            t.join(timeout=2.0)

    def _stop(self, nodes: Sequence[str], grace: float):
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            alive = [self.procs[n] for n in nodes if self.procs[n].poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            t_end = time.monotonic() + wait
            while time.monotonic() < t_end and any(p.poll() is None for p in alive):
                time.sleep(0.1)


def waited_node(keys: Sequence[str]) -> str:
    """The process whose exit ends the run: the recipe, else the first node that is not the
    monitor (``--nodes trainer --live``), which the monitor's start order must not change: the
    waited node is never restarted, every other one is."""
    if 'recipe' in keys:
        return 'recipe'
    return next((k for k in keys if k.rpartition('/')[2] != 'monitor'), keys[0])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='mbrl_run', description='Run the MBRL pushing recipe on the PyBullet twin through '
        'the ROS 2 node graph (separate processes over DDS), without ros2 launch.')
    parser.add_argument('--profile', default='cpu',
                        help='config/<profile>.yaml, or a path to a parameter file')
    parser.add_argument('--run-dir', default=None,
                        help='where logs, buffer, models, summary and report go '
                             '(default runs/<profile>-<timestamp>)')
    parser.add_argument('--resume', action='store_true',
                        help='continue a stopped run in --run-dir from its buffer and models')
    parser.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                        help='override one parameter, e.g. recipe.iterations=2')
    parser.add_argument('--timeout', type=number_argument(float, 0.0, False), default=None,
                        help='stop the run after this many seconds')
    parser.add_argument('--restarts', type=number_argument(int, 0, True), default=3, metavar='N',
                        help='restart a node that exits (crash, kill) up to N times, each node '
                             'its own budget; 0 stops the run at the first exit (default 3)')
    parser.add_argument('--rename', action='append', default=[], metavar='NODE=NAME',
                        help='run a node under another name, e.g. controller=ctl (its '
                             'parameters follow; every topic it shares comes from topics.*)')
    parser.add_argument('--nodes', default=','.join(GRAPH_NODES), metavar='NODE,...',
                        help='start only these nodes, e.g. --nodes trainer on a GPU host and '
                             "--nodes twin,buffer,controller,recipe on the arm's host (same "
                             'ROS_DOMAIN_ID, discovery across hosts: README, "Several hosts"); '
                             'without the recipe, the run lasts until Ctrl-C or --timeout')
    parser.add_argument('--arms', default=None, metavar='N|NAME,...',
                        help='run N twin arms (namespaces arm0 ... armN-1, each its twin and '
                             'controller) into one buffer and one trainer; the recipe runs '
                             'episodes on all of them at once (sets arm_namespaces). Or name the '
                             'arms: --arms arm1 --nodes twin,controller on the host of arm1')
    parser.add_argument('--live', action='store_true',
                        help='also start the monitor node: the live view for Foxglove on '
                             'ws://127.0.0.1:8765 (monitor.host, monitor.port)')
    parser.add_argument('--record', metavar='FILE.mcap', default=None,
                        help='with the live view, record its channels to this MCAP file '
                             '(implies --live)')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress display (a status line on a terminal, plain '
                             'lines otherwise)')
    parser.add_argument('--ros-args', dest='ros_args', nargs=argparse.REMAINDER, default=[],
                        help='passed to every node after its parameters, e.g. '
                             '--ros-args -r __ns:=/arm1')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    # Ctrl-C must stop the run even when started from a background job (SIGINT inherited as
    # ignored); SIGTERM stops it the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    try:
        profile_file = config_path(args.profile)
        profile = os.path.splitext(os.path.basename(profile_file))[0]
        run_dir = os.path.abspath(args.run_dir or os.path.join('runs', f'{profile}-{stamp}'))
        check_domain_id(os.environ.get('ROS_DOMAIN_ID'))
        # A misspelt node's block would be ignored, every value in it with it.
        check_node_names(load_param_file(profile_file), profile_file)
        sets = parse_sets(args.set)
        names = parse_renames(args.rename)
        if args.resume and not any(os.path.isfile(os.path.join(run_dir, name))
                                   for name in ('summary.json', 'params.yaml')):
            raise ValueError(f'--resume: no run in {run_dir} to continue (no summary.json or '
                             'params.yaml)' if args.run_dir
                             else '--resume: give the --run-dir of the run to continue')
        if args.resume:
            sets['recipe'] = _merge(sets.get('recipe', {}), {'resume': True})
        if args.arms is not None:
            arms = parse_arms(args.arms)
            for node in ('buffer', 'recipe'):
                sets[node] = _merge(sets.get(node, {}), {'arm_namespaces': arms})
        if args.record:
            sets['monitor'] = _merge(sets.get('monitor', {}),
                                     {'record_path': os.path.abspath(args.record)})
        # The live view follows renamed nodes unless told otherwise.
        watched = {n: names[n] for n in ('controller', 'trainer') if n in names}
        sets['monitor'] = _merge(watched, sets.get('monitor', {}))
        # Every node's parameters, validated before any process starts: the one file they use.
        params = effective_params(profile_file, sets, run_dir)
        if not args.resume:  # its files would be taken up by the new run's nodes
            check_no_earlier_run(params)
        nodes = tuple(n for n in args.nodes.split(',') if n)
        unknown = [n for n in nodes if n not in GRAPH_NODES]
        if unknown or not nodes:
            raise ValueError(f'--nodes: unknown nodes {unknown} (known: {", ".join(GRAPH_NODES)})'
                             if unknown else '--nodes: name at least one node')
        if len(set(nodes)) != len(nodes):
            raise ValueError(f'--nodes {args.nodes}: name each node once')
        arms = params['recipe']['arm_namespaces']
        if arms != params['buffer']['arm_namespaces']:
            raise ValueError(f'arm_namespaces differ: buffer {params["buffer"]["arm_namespaces"]}'
                             f', recipe {arms}: set it under /** in the profile')
        check_arm_namespaces(arms)
        check_policy_source(params)
        check_stall_watch(params)
        live = args.live or bool(args.record)
        if live:
            check_record_path(params['monitor']['record_path'])
            check_port_free(params['monitor']['host'], params['monitor']['port'])
    except (ValueError, OSError) as e:
        print(f'mbrl_run: {e}', file=sys.stderr)
        return 2
    params_file = os.path.join(run_dir, 'params.yaml')
    try:
        os.makedirs(run_dir, exist_ok=True)
        if args.resume and os.path.isfile(params_file):
            # The stopped session's parameters stay beside this one's.
            os.replace(params_file, os.path.join(run_dir, f'params.before-{stamp}.yaml'))
        # '/**/<name>': the blocks apply in any namespace (--ros-args -r __ns:=/arm1).
        write_param_file(params, params_file, {n: f'/**/{names.get(n, n)}' for n in NODES})
    except OSError as e:
        print(f'mbrl_run: run dir {run_dir}: {e.strerror or e}', file=sys.stderr)
        return 2
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    print(f'mbrl_run: profile {profile}, run dir {run_dir}, ROS_DOMAIN_ID '
          f'{os.environ.get("ROS_DOMAIN_ID", "0")}', flush=True)
    # The monitor first, so that its recording starts with the run (nothing waits for it).
    keys, per_arm_args = fleet_processes((('monitor',) if live else ()) + nodes, arms, params,
                                         run_dir, args.ros_args, names)
    if arms != ['']:
        print(f'mbrl_run: {len(arms)} arms {arms}: ' + ', '.join(keys), flush=True)
    graph = Graph(params_file, run_dir, ros_args=args.ros_args, names=names, nodes=keys,
                  restarts=args.restarts, node_ros_args=per_arm_args,
                  log_header=f'--- mbrl_run --resume {stamp} ---' if args.resume else None)
    with_recipe = 'recipe' in nodes
    if live:
        monitor = params['monitor']
        port = monitor['port'] or '<any free port: see logs/monitor.log>'
        # Where the monitor will record: never over an earlier file (paths.record_paths). A
        # monitor restarted in this run goes on beside it, as its log says.
        asked = monitor['record_path']
        print(f'mbrl_run: live view on ws://{monitor["host"]}:{port} (Foxglove: '
              'open connection; layout config/foxglove_layout.json)'
              + recording_note(asked, free_record_path(asked) if asked else ''), flush=True)
    progress = (ProgressDisplay(os.path.join(run_dir, 'summary.json'),
                                build_phases(params['recipe']))
                if args.progress and with_recipe else None)
    t0, started = time.monotonic(), time.time()
    rc = 1
    try:
        if progress is not None:
            sys.stdout = progress.start()
        graph.start()
        rc = graph.wait(waited_node(keys), timeout=args.timeout)
    except KeyboardInterrupt:
        print('\nmbrl_run: Ctrl-C, stopping every node (zero velocity first)', flush=True)
        rc = 1 if with_recipe else 0  # without the recipe, Ctrl-C is how a run ends
    except TimeoutError as e:
        # Without the recipe the run lasts until --timeout: its normal end.
        print(f'mbrl_run: {e}' if with_recipe else
              f'mbrl_run: --timeout {args.timeout:g} s: stopping every node', flush=True)
        rc = 1 if with_recipe else 0
    finally:
        graph.stop()
        if progress is not None:
            sys.stdout = progress.stream
            progress.close()
    summary = os.path.join(run_dir, 'summary.json')
    print(f'mbrl_run: finished in {(time.monotonic() - t0) / 60:.1f} min; logs in '
          f'{run_dir}/logs' + (f'; summary: {summary}' if os.path.isfile(summary) else ''),
          flush=True)
    report = os.path.join(run_dir, 'report.md')
    if os.path.isfile(report):
        print(f'mbrl_run: report: {report}', flush=True)
    failed = recipe_failure(summary, since=started) if with_recipe and rc != 0 else None
    if failed:
        print(f'mbrl_run: the recipe stopped before its end: {failed}', file=sys.stderr,
              flush=True)
    return 0 if rc == 0 else 1


def recipe_failure(summary_path: str, since: float = 0.0) -> Optional[str]:
    """Why the recipe of ``summary.json`` stopped before its end, None if it did not, wrote no
    summary or wrote it before ``since`` (a resumed run's old summary)."""
    try:
        if os.path.getmtime(summary_path) < since:
            return None
        with open(summary_path) as f:
            return json.load(f).get('failed') or None
    except (OSError, ValueError, AttributeError):
        return None


if __name__ == '__main__':
    sys.exit(main())
