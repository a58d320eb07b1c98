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
"""``benchmarks/mbpo_sac.py``: its twin is the profile's (variant, physics, realism), and its
floor evaluates doing nothing and random actions on the evaluation episodes."""

import os
import sys

import numpy as np

from mbrl_robot.config import node_params
from mbrl_robot.core.control import PushController
from mbrl_robot.core.tasks.push_policy_env import PushPolicyEnv
from mbrl_robot.sim.push_env import PushEnv

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import mbpo_sac  # noqa: E402


def test_the_benchmark_twin_follows_the_profile_twin_block():
    for profile, variant in (('cpu', 'push_forward'), ('push_anywhere', 'push_anywhere')):
        twin = node_params(profile, 'twin')
        env = PushEnv.from_config(profile, task=node_params(profile, 'controller')['task'])
        try:
            assert env.variant == variant
            assert env.physics['physics_hz'] == twin['physics']['physics_hz']
            assert env.episode_steps == node_params(profile, 'controller')['task'][
                'episode_steps']
        finally:
            env.close()
    # push_anywhere's starts differ from push_forward's for the same seed.
    starts = []
    for profile in ('cpu', 'push_anywhere'):
        env = PushEnv.from_config(profile, task=node_params(profile, 'controller')['task'])
        starts.append(env.reset(seed=5000)[0][14:17])
        env.close()
    assert not np.allclose(starts[0], starts[1])


def test_floor_does_nothing_and_acts_randomly_on_the_evaluation_episodes():
    ctl = node_params('cpu', 'controller')
    task = {**ctl['task'], 'episode_steps': 5}
    env = PushPolicyEnv(PushEnv.from_config('cpu', task=task), PushController.from_params(ctl))
    try:
        out = mbpo_sac.floor(env, {'eval_seed': 7, 'eval_episodes': 2}, [0, 1])
    finally:
        env.close()
    assert out['eval_seed'] == 7
    assert set(out) == {'eval_seed', 'zero', 'random_seed0', 'random_seed1'}
    for key in ('zero', 'random_seed0', 'random_seed1'):
        assert out[key]['episodes'] == 2
    # Random actions are drawn from one generator per seed.
    assert out['random_seed0']['final_distances'] != out['random_seed1']['final_distances']


def test_step_latency_times_the_policy_and_the_planner_of_the_profile():
    from mbrl_robot.core.policy import DeterministicPolicy
    out = mbpo_sac.step_latency('cpu', DeterministicPolicy(20, 7, [8]), repeats=3)
    assert set(out) == {'policy_ms_median', 'policy_ms_p99', 'planner_ms_median',
                        'planner_ms_p99'}
    assert all(0.0 < v < 60_000.0 for v in out.values()), out
    # Each mode timed on its own: the planner's rollouts cost more than one MLP forward.
    assert out['planner_ms_median'] > out['policy_ms_median'], out


def test_a_long_run_stops_on_its_budget_and_the_same_command_continues_it(tmp_path):
    """``--resume-dir`` / ``--stop-after-s`` on the push_anywhere twin (random puck mass and
    friction, a fitted ensemble in the state): stopped after its first episode and rerun in a
    new process (a fresh physics client), the policy is the one of the run that never stopped
    (same sha256); a state of another run is one line, not a traceback."""
    import json
    import subprocess
    bench = os.path.join(os.path.dirname(mbpo_sac.__file__), 'mbpo_sac.py')
    base = [sys.executable, bench, '--method', 'mbpo', '--profile', 'push_anywhere',
            '--transitions', '400', '--set', 'sac.net_arch=[16,16]', 'eval_episodes=1',
            'init_random_steps=100', 'batch_size=16', 'gradient_steps=1',
            'model_train_freq=100', 'rollout_freq=50', 'rollouts_per_step=2',
            'model_max_epochs=2', '--step-latency-repeats', '0']

    def run(*extra, out='resumed', cmd=base):
        p = subprocess.run(cmd + ['--out-dir', str(tmp_path / out), *extra],
                           capture_output=True, text=True, timeout=300)
        return p, [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{')]

    _, straight = run(out='straight')
    resume = ['--resume-dir', str(tmp_path / 'state')]
    p, part = run(*resume, '--stop-after-s', '0')
    assert p.returncode == mbpo_sac.EXIT_STOPPED == 75
    assert part[0]['finished'] is False and part[0]['transitions'] == 200
    assert 'rerun the same command to continue' in p.stdout
    where = subprocess.run(base[:2] + ['--method', 'mbpo', '--seeds', '0', '1', '--progress',
                                       *resume], capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in where.stdout.splitlines() if x.startswith('{')]
    assert where.returncode == 0 and len(lines) == 2, where.stderr
    assert lines[0]['transitions'] == 200 and lines[0]['total'] == 400
    assert not lines[0]['finished'] and lines[0]['identity']['profile'] == 'push_anywhere'
    assert lines[1] == {'seed': 1, 'method': 'mbpo', 'state': None}  # not started
    p, done = run(*resume)
    assert p.returncode == 0 and done[0]['resumed_at'] == [200]
    assert done[-1]['runs'][0]['sha256'] == straight[-1]['runs'][0]['sha256']
    assert done[0]['eval'] == straight[0]['eval']
    assert done[-1]['control_step_ms'] is None  # not timed: no planner compile here
    other_epochs = [('model_max_epochs=3' if a == 'model_max_epochs=2' else a) for a in base]
    for cmd, says in ((other_epochs, 'model_max_epochs=2, this run has 3'),
                      (base[:5] + ['cpu'] + base[6:], "profile='push_anywhere', this run has "
                                                      "'cpu'")):
        p, _ = run(*resume, cmd=cmd)
        assert p.returncode not in (0, 75) and 'Traceback' not in p.stderr, p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith('mbpo_sac: ') and says in p.stderr
