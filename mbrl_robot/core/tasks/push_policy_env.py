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
"""``PushEnv`` as the deployed controller drives it, as a gymnasium env for MBPO and SAC.

Every action goes through the last stage of the controller's own step
(:meth:`~mbrl_robot.core.control.PushController.act`: disagreement scale, command filter); the
observation is the push task's policy observation :func:`~mbrl_robot.core.tasks.push.push_obs`.
"""

import gymnasium as gym
import numpy as np
import torch

from mbrl_robot.core.tasks.push import PUSH_OBS_DIM, push_obs, STATE_DIM, TARGET_DIM


class PushPolicyEnv(gym.Wrapper):
    """The twin as the deployed controller drives it: filtered actions, goal in the observation.

    Observation (20,): :func:`push_obs`. Each action is executed by ``control.act`` with the
    command of the previous step, exactly as the controller node and ``run_recipe`` execute
    theirs. ``info`` adds ``state`` (17,), ``goal`` (3,) and ``executed_action`` (7,).

    Args:
        env: a :class:`mbrl_robot.sim.push_env.PushEnv` with the 17-D observation.
        control: the controller's :class:`~mbrl_robot.core.control.PushController`.
    """

    def __init__(self, env: gym.Env, control):
        super().__init__(env)
        if env.observation_space.shape != (STATE_DIM,):
            raise ValueError(f'PushPolicyEnv needs the 17-D observation, got '
                             f'{env.observation_space.shape}')
        self.control = control
        self.command_filter = control.filter
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (PUSH_OBS_DIM,), np.float32)
        self._state = np.zeros(STATE_DIM)
        self._goal = np.zeros(TARGET_DIM)

    def _obs(self) -> np.ndarray:
        return push_obs(torch.as_tensor(self._state[None], dtype=torch.float32),
                        torch.as_tensor(self._goal[None], dtype=torch.float32))[0].numpy()

    def reset(self, **kwargs):
        """Reset the twin; the previous command starts at zero."""
        obs, info = self.env.reset(**kwargs)
        self._state = np.asarray(obs, dtype=np.float64)
        self._goal = np.asarray(info['target'], dtype=np.float64)
        self.control.reset_command()
        return self._obs(), {**info, 'state': self._state.copy(), 'goal': self._goal.copy()}

    def step(self, action):
        """Execute ``action`` (7,) in [-1, 1] like the controller, then step the twin."""
        executed = self.command_filter.to_action(self.control.act(self._state, action))
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._state = np.asarray(obs, dtype=np.float64)
        return self._obs(), reward, terminated, truncated, {
            **info, 'state': self._state.copy(), 'goal': self._goal.copy(),
            'executed_action': executed.astype(np.float32)}
