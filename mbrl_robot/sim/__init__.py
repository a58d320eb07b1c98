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
"""PyBullet twin (ROS-free). Importing this package registers ``MBRLPush-v0`` (the
``push_forward`` variant) and ``MBRLPushAnywhere-v0`` (``push_anywhere``) with gymnasium."""

import gymnasium

from mbrl_robot.sim.push_env import PushEnv

ENV_ID = 'MBRLPush-v0'
ANYWHERE_ENV_ID = 'MBRLPushAnywhere-v0'
# Steps of a push_anywhere episode at the default 20 Hz, as config/push_anywhere.yaml (a test
# holds the two equal): the scripted pusher (known kinematics) solves >= 95 % of the episodes
# within 150 (benchmarks/twin_speed.py); the learned planner needs longer
# (docs/results/realistic_twin.md).
ANYWHERE_EPISODE_STEPS = 200

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point='mbrl_robot.sim.push_env:PushEnv')
if ANYWHERE_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ANYWHERE_ENV_ID, entry_point='mbrl_robot.sim.push_env:PushEnv',
                       kwargs={'variant': 'push_anywhere',
                               'episode_steps': ANYWHERE_EPISODE_STEPS})

__all__ = ['ANYWHERE_ENV_ID', 'ANYWHERE_EPISODE_STEPS', 'ENV_ID', 'PushEnv']
