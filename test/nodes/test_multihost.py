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
"""Two hosts, emulated: the trainer in one network namespace, the arm's nodes in another.

The test makes two Linux network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2) and
removes them afterwards; it is skipped, saying why, where that is not permitted (not root, no
``ip``). Each side runs ``mbrl_run --nodes ...`` with the discovery settings README's "Several
hosts" gives for two machines (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``,
``ROS_STATIC_PEERS=<the other host>``) and UDP only (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``: the
two namespaces share /dev/shm, so Fast DDS's shared-memory transport would otherwise carry the
data past the network). The controller reads models only from the bytes it receives over DDS
(``controller.model_source=dds``): the recipe completes with every model delivered across.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.ros

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTS = {'a': '10.77.0.1', 'b': '10.77.0.2'}


def _ip(*args):
    return subprocess.run(['ip', *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def two_hosts():
    """Namespaces ``<tag>a`` (10.77.0.1) and ``<tag>b`` (10.77.0.2) over a veth pair."""
    if shutil.which('ip') is None:
        pytest.skip('no `ip` command (iproute2): cannot make network namespaces here')
    tag = 'mbrl' + uuid.uuid4().hex[:6]
    ns = {h: tag + h for h in HOSTS}
    made = []
    try:
        for name in ns.values():
            r = _ip('netns', 'add', name)
            if r.returncode != 0:
                pytest.skip(f'cannot create a network namespace here ({r.stderr.strip()}): '
                            'needs root or CAP_SYS_ADMIN')
            made.append(name)
        veth = {h: f'{tag}v{h}' for h in HOSTS}
        steps = [('link', 'add', veth['a'], 'type', 'veth', 'peer', 'name', veth['b'])]
        for h, addr in HOSTS.items():
            steps += [('link', 'set', veth[h], 'netns', ns[h]),
                      ('-n', ns[h], 'addr', 'add', f'{addr}/24', 'dev', veth[h]),
                      ('-n', ns[h], 'link', 'set', veth[h], 'up'),
                      ('-n', ns[h], 'link', 'set', 'lo', 'up')]
        for step in steps:
            r = _ip(*step)
            if r.returncode != 0:
                pytest.skip(f'cannot set up the veth pair (ip {" ".join(step)}: '
                            f'{r.stderr.strip()})')
        yield ns
    finally:
        for name in made:
            _ip('netns', 'del', name)


def start(two_hosts, host, nodes, run_dir, domain, *sets):
    """``mbrl_run --nodes nodes`` in namespace ``host``, set up as README's "Several hosts"."""
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET',
               ROS_STATIC_PEERS=HOSTS['b' if host == 'a' else 'a'],
               FASTDDS_BUILTIN_TRANSPORTS='UDPv4', PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = ['ip', 'netns', 'exec', two_hosts[host], sys.executable, '-m', 'mbrl_robot.runner',
           '--profile', 'ci_smoke', '--run-dir', str(run_dir), '--nodes', nodes,
           '--no-progress', '--timeout', '420']
    for s in sets:
        cmd += ['--set', s]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(gpu_host, arm_host, arm_out=''):
    """Wait for the arm host's run, then stop the trainer host's; both outputs."""
    try:
        out, _ = arm_host.communicate(timeout=480)
    finally:
        gpu_host.send_signal(signal.SIGINT)
        trainer_out, _ = gpu_host.communicate(timeout=60)
        if arm_host.poll() is None:
            arm_host.kill()
    return arm_out + out, trainer_out


def check_models_crossed(tmp_path, out, trainer_out, gpu_host, arm_host):
    assert arm_host.returncode == 0, out[-3000:] + trainer_out[-2000:]
    with open(tmp_path / 'arm_host' / 'summary.json') as f:
        summary = json.load(f)
    assert summary['complete']
    versions = [t['version'] for t in summary['trainings']]
    assert versions == [1, 2]
    # Trained on host a, written there; received, verified and loaded on host b.
    assert sorted(os.listdir(tmp_path / 'trainer_host' / 'models')) == ['v0001', 'v0002']
    log = (tmp_path / 'arm_host' / 'logs' / 'controller.log').read_text()
    cache = tmp_path / 'arm_host' / 'controller_models'
    for version in versions:
        assert f'model v{version} loaded from {cache / f"v{version:04d}"}' in log, log[-3000:]
    assert gpu_host.returncode == 0, trainer_out[-2000:]
    return summary


def test_trainer_on_another_host_models_cross_over_dds(two_hosts, tmp_path):
    domain = str(random.randint(200, 215))
    gpu_host = start(two_hosts, 'a', 'trainer', tmp_path / 'trainer_host', domain)
    arm_host = start(two_hosts, 'b', 'twin,buffer,controller,recipe', tmp_path / 'arm_host',
                     domain, 'controller.model_source=dds')
    out, trainer_out = finish(gpu_host, arm_host)
    check_models_crossed(tmp_path, out, trainer_out, gpu_host, arm_host)


def test_a_lost_link_to_the_trainer_host_loses_no_data(two_hosts, tmp_path):
    """The link goes down for 5 s as the first training starts and comes back: the trainer
    catches up on every transition and the recipe completes."""
    domain = str(random.randint(216, 231))
    gpu_host = start(two_hosts, 'a', 'trainer', tmp_path / 'trainer_host', domain)
    arm_host = start(two_hosts, 'b', 'twin,buffer,controller,recipe', tmp_path / 'arm_host',
                     domain, 'controller.model_source=dds')
    seen = []
    veth = None
    for line in arm_host.stdout:
        seen.append(line)
        if '[3/6]' in line:
            links = _ip('-n', two_hosts['a'], '-o', 'link', 'show', 'type', 'veth').stdout
            veth = links.split(':')[1].strip().split('@')[0]
            assert _ip('-n', two_hosts['a'], 'link', 'set', veth, 'down').returncode == 0
            time.sleep(5.0)
            assert _ip('-n', two_hosts['a'], 'link', 'set', veth, 'up').returncode == 0
            break
    assert veth is not None, ''.join(seen)[-3000:]
    out, trainer_out = finish(gpu_host, arm_host, ''.join(seen))
    summary = check_models_crossed(tmp_path, out, trainer_out, gpu_host, arm_host)
    steps = 20  # ci_smoke's task.episode_steps
    assert [t['n_transitions'] for t in summary['trainings']] == [2 * steps, 3 * steps]
