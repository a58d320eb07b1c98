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
"""A scripted pusher: the "known model" baseline that shows every episode can be solved.

Resolved-rate control with the analytic kinematics: move the tool tip behind the puck (on the
target->puck line), lifted over the puck when the straight way there would hit it, then push along
the line until the puck reaches the target. Joint velocities come from damped least squares on the
tool-tip Jacobian plus a null-space pull towards the ready pose, then normalised to actions in
[-1, 1].
"""

from typing import Sequence

import numpy as np
import torch

from mbrl_robot.core.kinematics import SerialChainFK
from mbrl_robot.core.tasks.push import JOINT_POS, PUCK, PUCK_RADIUS_M, TOOL_LINK, TOOL_RADIUS_M
from mbrl_robot.paths import urdf_path


class ScriptedPusher:
    """Approach-then-push controller for :class:`mbrl_robot.sim.push_env.PushEnv` states.

    Args:
        joint_names: order of the joints in the state (``task.joints``).
        home_q: (7,) posture the null space pulls towards.
        max_joint_speed: rad/s of action 1.0 (``task.max_joint_speed_rad_s``).
        tip_speed: Cartesian speed of the tool tip while pushing (m/s).
        tip_height: height of the tool tip above the table while pushing (m).
        approach_speed: Cartesian speed of the tool tip on the way behind the puck (m/s).
        lift_height: height of the tool tip when it passes over the puck (m; the puck is 3 cm
            high).
    """

    def __init__(self, joint_names: Sequence[str], home_q: Sequence[float],
                 max_joint_speed: float, tip_speed: float = 0.08, tip_height: float = 0.012,
                 approach_speed: float = 0.15, lift_height: float = 0.06):
        self.fk = SerialChainFK(urdf_path('iiwa7_pusher.urdf'), TOOL_LINK, joint_names,
                                dtype=torch.float64)
        self.home_q = np.asarray(home_q, dtype=np.float64)
        self.max_joint_speed = float(max_joint_speed)
        self.tip_speed = float(tip_speed)
        self.tip_height = float(tip_height)
        self.approach_speed = float(approach_speed)
        self.lift_height = float(lift_height)
        self.gain = 1.0 / 0.05 * 0.5  # close half of the error per 50 ms step
        self.pushing = False

    def reset(self) -> None:
        """Start a new episode (approach phase)."""
        self.pushing = False

    def _jacobian(self, q: np.ndarray):
        # Central differences in one batched FK call (15 rows): cheaper than autograd here.
        eps = 1e-6
        qs = np.concatenate([q[None], q + eps * np.eye(7), q - eps * np.eye(7)])
        tips = self.fk.tip_position(torch.from_numpy(qs)).numpy()
        return tips[0], ((tips[1:8] - tips[8:15]) / (2 * eps)).T

    def act(self, obs: np.ndarray, target: Sequence[float], dt: float = 0.05) -> np.ndarray:
        """Action (7,) in [-1, 1] for state ``obs`` (>=17,) and ``target`` (3,)."""
        q = np.asarray(obs[JOINT_POS], dtype=np.float64)
        puck = np.asarray(obs[PUCK], dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        tip, jac = self._jacobian(q)
        line = target[:2] - puck[:2]
        dist = np.linalg.norm(line)
        u = line / max(dist, 1e-9)
        contact = PUCK_RADIUS_M + TOOL_RADIUS_M
        behind = puck[:2] - u * (contact + 0.005)
        rel = tip[:2] - puck[:2]
        along = float(rel @ u)
        across = float(rel @ np.array([-u[1], u[0]]))
        to_behind = float(np.linalg.norm(tip[:2] - behind))
        low = tip[2] < self.tip_height + 0.008
        if not self.pushing and to_behind < 0.01 and low:
            self.pushing = True
        if self.pushing and (abs(across) > 0.02 or along > -0.5 * contact):
            self.pushing = False
        height, speed_limit = self.tip_height, self.approach_speed
        if self.pushing:
            # Aim at the line behind the puck, move along it; slow down near the target.
            goal = puck[:2] - u * contact + u * min(self.tip_speed * dt, dist)
            speed_limit = self.tip_speed
        else:
            goal = behind
            # Lift over the puck when the straight way behind it passes through it (or when
            # already up there and not yet above the push point).
            if to_behind > 0.01 and (tip[2] > 0.5 * (self.tip_height + self.lift_height)
                                     or _segment_distance(puck[:2], tip[:2], behind) < contact):
                height = self.lift_height
                if tip[2] < self.lift_height - 0.01 and np.linalg.norm(rel) < contact + 0.01:
                    goal = tip[:2]  # next to the puck: straight up first
        goal3 = np.array([goal[0], goal[1], height])
        err = goal3 - tip
        v = self.gain * err
        speed = np.linalg.norm(v)
        if speed > speed_limit:
            v *= speed_limit / speed
        lam = 1e-3
        jjt = jac @ jac.T + lam * np.eye(3)
        pinv = jac.T @ np.linalg.inv(jjt)
        qd = pinv @ v + (np.eye(7) - pinv @ jac) @ (0.5 * (self.home_q - q))
        # Scale the whole command into the action box: the tip keeps its direction.
        action = qd / self.max_joint_speed
        return action / max(1.0, float(np.abs(action).max()))


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance (m) of ``point`` (2,) from the segment ``a``-``b`` (2,), (2,)."""
    ab = b - a
    t = float(np.clip((point - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))
