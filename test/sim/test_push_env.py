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
"""The PyBullet twin: gymnasium contract, seeded resets, limits, reward, physics, learnability."""

import copy
import math
import subprocess
import sys

import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import numpy as np
import pytest
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.tasks import PushTask
from mbrl_robot.sim import ANYWHERE_ENV_ID, ANYWHERE_EPISODE_STEPS, ENV_ID
from mbrl_robot.sim.push_env import HOME_TIP, PUCK_Z, PushEnv
from mbrl_robot.sim.scripted import ScriptedPusher

TASK = node_params('lecture', 'twin')['task']


@pytest.fixture(scope='module')
def env():
    e = PushEnv(TASK)
    yield e
    e.close()


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return np.stack(out)


@pytest.mark.parametrize('env_id', [ENV_ID, ANYWHERE_ENV_ID])
def test_gymnasium_contract(env_id):
    # The env's default reward (tool shaping on): determinism must hold bit for bit.
    e = gym.make(env_id)
    try:
        check_env(e.unwrapped, skip_render_check=True)
        assert e.observation_space.shape == (17,)
        assert e.action_space.shape == (7,)
    finally:
        e.close()
    assert e.unwrapped.tool_shaping_weight > 0.0
    if env_id == ANYWHERE_ENV_ID:
        assert e.unwrapped.variant == 'push_anywhere'
        assert e.unwrapped.episode_steps == ANYWHERE_EPISODE_STEPS
        return
    assert e.unwrapped.variant == 'push_forward'
    extra = PushEnv(TASK, obs_puck_velocity=True, obs_tool_tip=True)
    try:
        obs, info = extra.reset(seed=3)
        assert obs.shape == (23,) and extra.observation_space.contains(obs)
        np.testing.assert_allclose(obs[20:23], info['tool_tip'], atol=1e-6)
    finally:
        extra.close()


def test_bad_config_and_actions(env):
    bad = copy.deepcopy(TASK)
    bad['joints'] = bad['joints'][:6] + ['wrist']
    with pytest.raises(ValueError, match='differ from the URDF'):
        PushEnv(bad)
    with pytest.raises(ValueError, match='multiple'):
        PushEnv(TASK, physics_hz=250.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match='7 finite'):
        env.step(np.full(7, np.nan))
    with pytest.raises(ValueError, match='7 finite'):
        env.step_velocity([0.1] * 6)


def test_seeded_resets_are_reproducible(env):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 7))
    first = _rollout(env, 11, actions)
    _rollout(env, 12, actions)            # another episode in between
    again = _rollout(env, 11, actions)
    np.testing.assert_array_equal(first, again)
    other = PushEnv(TASK)
    try:
        np.testing.assert_array_equal(first, _rollout(other, 11, actions))
    finally:
        other.close()
    assert not np.allclose(first[0, 14:17], _rollout(env, 12, actions[:0])[0, 14:17])


def test_start_distribution(env):
    tip = np.array(HOME_TIP)
    angles = []
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        np.testing.assert_allclose(obs[:7], env.home_q, atol=1e-6)
        np.testing.assert_allclose(info['tool_tip'], tip, atol=1e-4)
        puck, target = info['puck'], info['target']
        gap = np.linalg.norm(puck[:2] - tip[:2]) - 0.045
        assert 0.0019 < gap < 0.0101, gap
        assert abs(puck[2] - PUCK_Z) < 1e-6
        push = target[:2] - puck[:2]
        assert 0.10 <= np.linalg.norm(push) <= 0.25
        approach = puck[:2] - tip[:2]
        cos = push @ approach / np.linalg.norm(push) / np.linalg.norm(approach)
        angles.append(math.degrees(math.acos(min(1.0, cos))))
        assert not info['is_success']
    assert max(angles) <= 25.0 + 1e-6 and min(angles) < 5.0
    # The pusher points straight down at the ready pose.
    tool_axis = PushTask(joint_names=env.joint_names).kinematics.tip_pose(
        torch.as_tensor(env.home_q))[0][:, 2]
    np.testing.assert_allclose(tool_axis.numpy(), [0, 0, -1], atol=1e-6)


def test_push_forward_draws_are_unchanged(env):
    # Values of the code before the push_anywhere variant existed (seeds 0, 1, 42).
    old = {0: ([0.5280250351550224, 0.010494467058807315],
               [0.6287472498914208, -0.00840025934869588]),
           1: ([0.5345942955799631, 0.0010138979233039178],
               [0.7666380693247175, -0.06872651636691267]),
           42: ([0.5259058606363194, 0.021071683847396605],
                [0.6765491352487752, 0.15952706823090596])}
    assert env.variant == 'push_forward'
    for seed, (puck, target) in old.items():
        _, info = env.reset(seed=seed)
        assert info['puck'].tolist() == puck + [PUCK_Z]
        assert info['target'].tolist() == target + [PUCK_Z]
    with pytest.raises(ValueError, match="'push_everywhere'"):
        PushEnv(TASK, variant='push_everywhere')


def test_the_registered_push_anywhere_matches_its_profile():
    from mbrl_robot.config import node_params
    assert node_params('push_anywhere', 'twin')['task']['episode_steps'] == \
        ANYWHERE_EPISODE_STEPS


@pytest.fixture(scope='module')
def anywhere_env():
    e = PushEnv(TASK, variant='push_anywhere', episode_steps=ANYWHERE_EPISODE_STEPS)
    yield e
    e.close()


def test_push_anywhere_draws(anywhere_env):
    ph = anywhere_env.physics
    (x0, x1), (y0, y1) = ph['anywhere_x_range_m'], ph['anywhere_y_range_m']
    lo, hi = ph['anywhere_target_distance_range_m']
    tip = np.array(HOME_TIP[:2])
    rng = np.random.default_rng(0)
    headings, pucks = [], []
    for _ in range(2000):
        puck, target = anywhere_env.sample_start(rng)
        for xy in (puck, target):
            assert x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1 and xy[2] == PUCK_Z
        assert np.linalg.norm(puck[:2] - tip) >= ph['anywhere_min_tool_clearance_m']
        push = target[:2] - puck[:2]
        assert lo <= np.linalg.norm(push) <= hi
        approach = puck[:2] - tip
        # Heading of the push relative to the tool->puck direction: 180 deg = towards the tool.
        headings.append(math.degrees(math.atan2(approach[0] * push[1] - approach[1] * push[0],
                                                approach @ push)))
        pucks.append(puck[:2])
    counts = np.histogram(headings, bins=8, range=(-180, 180))[0]
    # Every direction; pulls towards the tool (the region's centre) are the most frequent.
    assert counts.min() > 20 and counts[[0, -1]].sum() > 2000 / 4, counts
    pucks = np.array(pucks)
    assert pucks[:, 0].min() < x0 + 0.01 and pucks[:, 0].max() > x1 - 0.01
    assert pucks[:, 1].min() < y0 + 0.01 and pucks[:, 1].max() > y1 - 0.01
    # Reset: home pose; a new target for a puck pushed out of the region stays in the region.
    obs, info = anywhere_env.reset(seed=3)
    np.testing.assert_allclose(obs[:7], anywhere_env.home_q, atol=1e-6)
    anywhere_env.reset(seed=3, options={'puck': [x1 + 0.1, y1 + 0.1, PUCK_Z]})
    target = anywhere_env.new_target(seed=4)
    assert x0 <= target[0] <= x1 and y0 <= target[1] <= y1


def scripted_wins(env, seeds) -> int:
    """Episodes the known-kinematics pusher solves on ``env`` from ``seeds``."""
    pusher = ScriptedPusher(env.joint_names, env.home_q, env.max_joint_speed)
    wins = 0
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        pusher.reset()
        truncated = False
        while not truncated:
            obs, _, _, truncated, info = env.step(pusher.act(obs, info['target']))
        wins += info['is_success']
    return wins


def test_scripted_pusher_solves_push_anywhere(anywhere_env):
    """The arm goes around (over) the puck and pushes it anywhere within the episode."""
    assert scripted_wins(anywhere_env, range(200, 210)) >= 9


def test_joint_limits_never_exceeded_under_extreme_actions(env):
    lo, hi = (x.astype(np.float32) for x in env.position_limits)
    rng = np.random.default_rng(5)
    saved = env.max_joint_speed
    env.max_joint_speed = 10.0  # every joint at its velocity limit
    try:
        touched = np.zeros(7, bool)
        for seed in range(4):
            env.reset(seed=seed)
            sign = np.where(rng.uniform(size=7) < 0.5, 1.0, -1.0)
            for t in range(100):
                if t % 35 == 34:
                    sign = -sign
                obs = env.step(sign)[0]
                assert np.all(obs[:7] >= lo) and np.all(obs[:7] <= hi), (seed, t, obs[:7])
                assert env.observation_space.contains(obs)
                touched |= np.minimum(obs[:7] - lo, hi - obs[:7]) < 0.05
        assert touched.sum() >= 5  # the test really drove joints to their limits
    finally:
        env.max_joint_speed = saved


def test_velocity_command_is_tracked_and_clamped(env):
    env.reset(seed=0)
    # Within the configured action scale (the profile's max_joint_speed_rad_s).
    cmd = np.array([0.2, 0.0, 0.1, 0.0, -0.1, 0.0, 0.3]) * env.max_joint_speed / 0.5
    obs = env.step(cmd / env.max_joint_speed)[0]
    np.testing.assert_allclose(obs[7:14], cmd, atol=0.01)
    # Base and flange joints (no contact possible): commands beyond the limits are clamped.
    obs = env.step_velocity([-100.0, 0, 0, 0, 0, 0, 100.0])
    np.testing.assert_allclose(obs[[7, 13]], env.velocity_limits[[0, 6]] * [-1, 1], rtol=0.01)
    np.testing.assert_allclose(env.clamp_velocity(np.full(7, 100.0), env.home_q),
                               env.velocity_limits)
    at_limit = env.home_q.copy()
    at_limit[0] = env.position_limits[1][0] - 0.005
    assert env.clamp_velocity(np.full(7, 1.0), at_limit)[0] == 0.0
    assert env.clamp_velocity(np.full(7, -1.0), at_limit)[0] == -1.0


@pytest.mark.parametrize('weight, fade, cost, path, intrusion', [
    (0.0, 0.0, 0.0, 'straight', 0.0), (1.5, 0.0, 0.0, 'straight', 0.0),
    (1.5, 0.3, 0.01, 'straight', 0.0), (1.5, 0.0, 0.01, 'around_puck', 0.0),
    (0.0, 0.0, 0.0, 'straight', 10.0)])
def test_env_reward_equals_task_reward(weight, fade, cost, path, intrusion):
    cfg = copy.deepcopy(TASK)
    # With the intrusion term, a space 10 cm wide: the tool starts 5 cm from the puck, low, so
    # the term is non-zero on these random steps (with 2 cm it would stay 0 and prove nothing).
    cfg['reward'] = {'tool_shaping_weight': weight, 'tool_shaping_fade_m': fade,
                     'action_cost': cost, 'tool_path': path,
                     'tool_intrusion_weight': intrusion, 'tool_intrusion_radius_m': 0.1}
    e = PushEnv(cfg)
    task = PushTask.from_config(cfg, dtype=torch.float64)
    without = copy.deepcopy(cfg)
    without['reward']['tool_intrusion_weight'] = 0.0
    plain = PushTask.from_config(without, dtype=torch.float64)
    charged = 0
    rng = np.random.default_rng(2)
    try:
        for seed in range(2):
            obs, info = e.reset(seed=seed)
            task.set_target(info['target'])
            for _ in range(25):
                act = rng.uniform(-1, 1, 7).astype(np.float32)
                obs, reward, _, _, info = e.step(act)
                ours = task.reward_fn(torch.as_tensor(obs, dtype=torch.float64),
                                      torch.as_tensor(act)).item()
                assert abs(reward - ours) < 1e-5, (reward, ours)
                assert abs(info['distance'] - task.distance(obs)) < 1e-6
                plain.set_target(info['target'])
                charged += ours < plain.reward_fn(torch.as_tensor(obs, dtype=torch.float64),
                                                  torch.as_tensor(act)).item() - 1e-9
    finally:
        e.close()
    assert (charged > 0) == (intrusion > 0), charged


def test_success_flag_and_truncation(env):
    obs, info = env.reset(seed=1, options={'target': [0.56, 0.02, PUCK_Z],
                                           'puck': [0.55, 0.0, PUCK_Z]})
    assert info['is_success'] and info['distance'] < 0.05
    obs, info = env.reset(seed=1, options={'target': [0.75, 0.1, PUCK_Z]})
    assert not info['is_success']
    steps = 0
    truncated = False
    while not truncated:
        obs, _, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert not terminated
        steps += 1
        assert info['is_success'] == (info['distance'] < env.success_radius)
    assert steps == TASK['episode_steps']


def test_puck_is_quasi_static(env):
    """Released at 0.2 m/s (a fast push), the puck stops within 1 cm."""
    env.reset(seed=0, options={'puck': [0.75, 0.3, PUCK_Z]})
    start = env.puck_position()
    import pybullet as pb
    pb.resetBaseVelocity(env.puck, [0.2, 0.0, 0.0], [0, 0, 0], physicsClientId=env.client_id)
    for _ in range(20):
        obs = env.step_velocity(np.zeros(7))
    slide = np.linalg.norm(obs[14:16] - start[:2])
    assert 0.001 < slide < 0.01, slide
    assert abs(obs[16] - PUCK_Z) < 1e-3


def test_scripted_pusher_solves_episodes(env):
    """Pushing works as a model-based planner would need: a known-model controller succeeds."""
    assert scripted_wins(env, range(100, 105)) >= 4


def test_random_policy_rarely_succeeds(env):
    rng = np.random.default_rng(0)
    episodes, wins, moved = 30, 0, 0
    for seed in range(episodes):
        obs, info = env.reset(seed=1000 + seed)
        start = info['puck']
        truncated = False
        while not truncated:
            obs, _, _, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        wins += info['is_success']
        moved += np.linalg.norm(info['puck'][:2] - start[:2]) > 0.005
    print(f'random policy: {wins}/{episodes} successes, puck moved in {moved} episodes')
    assert wins / episodes < 0.2
    assert moved >= 3  # random exploration does touch the puck


def test_sim_and_core_never_import_rclpy():
    code = ('import sys; sys.modules["rclpy"] = None; '
            'import mbrl_robot.sim, mbrl_robot.core.tasks, mbrl_robot.core.kinematics, '
            'mbrl_robot.sim.scripted; '
            'assert not any(m.startswith(("rclpy", "sensor_msgs", "std_msgs")) and sys.modules[m] '
            'for m in sys.modules)')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_policy_env_executes_actions_through_the_controller_step():
    from mbrl_robot.core.control import PushController
    from mbrl_robot.core.tasks.push_policy_env import PushPolicyEnv
    ctl = {**node_params('cpu', 'controller'), 'device': 'cpu'}
    control = PushController.from_params(ctl)
    env = PushPolicyEnv(PushEnv(node_params('cpu', 'twin')['task']), control)
    obs, info = env.reset(seed=3)
    assert obs.shape == (20,) and not control.prev_command.any()
    step = control.filter.max_action_step
    executed = []
    for action in ([50.0] * 7, [np.nan] * 7, [-1.0] * 7, [-1.0] * 7, [1.0] * 7):
        obs, _, _, _, info = env.step(np.array(action))
        executed.append(info['executed_action'])
        np.testing.assert_allclose(executed[-1], control.prev_command / control.filter.max_speed,
                                   atol=1e-6)
    executed = np.array(executed)
    assert np.abs(executed).max() <= 1.0 + 1e-6
    assert np.abs(np.diff(np.vstack([np.zeros(7), executed]), axis=0)).max() <= step + 1e-6
    env.reset(seed=4)
    assert not control.prev_command.any()  # the twin restarts at rest
    env.close()
