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
"""PyBullet twin of the pushing cell: iiwa 7 with a pusher, a table and a puck (ROS-free).

Scene (world frame, metres): the robot base at the origin on a table whose top is z = 0; the puck
(radius 0.035, height 0.03, 0.15 kg) slides on the table. Every episode starts from the same
"ready" pose: the pusher points straight down with its tip 1 cm above the table at
:data:`HOME_TIP`. The puck is drawn just in front of the tip (a 2-10 mm gap, within +-45 deg of
the +x direction, away from the base) and the target 10-25 cm beyond the puck, within +-25 deg of
the tip->puck direction: the task is a push, never a pull, and one straight push can solve it.
That is the ``push_forward`` variant (the default). The ``push_anywhere`` variant draws the puck
anywhere in a rectangle of the table (``anywhere_x_range_m`` x ``anywhere_y_range_m``) at least
``anywhere_min_tool_clearance_m`` from :data:`HOME_TIP`, and the target in the same rectangle
10-30 cm from the puck in any direction, so the arm often first has to go around the puck.

Physics: 120 Hz, 6 substeps per 50 ms control step (``physics_hz=240`` gives the same puck slides
within 0.6 mm at 0.6x the speed); joint velocity motors with the iiwa's torque limits, commands
clamped to the velocity limits and stopped short of the position limits (an end-stop guard holds a
joint pushed there by contacts). Contact parameters (the twin's ``physics`` block) make the puck
quasi-static: lateral friction 0.5 (combined with the table's 1.0), torsional and rolling friction,
no restitution; released at 0.1 / 0.2 / 0.3 m/s it slides 0.6 / 3.3 / 8 mm
(``benchmarks/twin_speed.py`` measures it).
"""

import collections
import contextlib
import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import gymnasium as gym
from gymnasium import spaces
import numpy as np
import pybullet as pb
import torch

from mbrl_robot.core.tasks.push import (ACTION_DIM, PUCK, PUCK_HEIGHT_M, PUCK_RADIUS_M,
                                        STATE_DIM, TOOL_LINK, TOOL_RADIUS_M, PushTask)
from mbrl_robot.paths import urdf_path

# Ready pose: J1, J3, J5, J7 = 0; J2/J4/J6 put the tool vertical with its tip at HOME_TIP
# (planar two-link inverse kinematics, see _home_pose).
HOME_TIP = (0.48, 0.0, 0.01)
TABLE_POSITION = (0.45, 0.0, 0.0)
FLOOR_Z = -0.8
# Resting height of the puck centre: half its height plus Bullet's 1 mm collision margin.
PUCK_Z = PUCK_HEIGHT_M / 2.0 + 0.001
# Contact parameters, masses, the physics rate and the start region are the twin's ``physics``
# block (mbrl_robot/params/twin.yaml): pybullet combines lateral frictions by product, so
# puck-table = 0.5, as POM or PVC on wood, and puck-tool = 0.5 * 0.3 = 0.15; spinning friction is
# a torsional coefficient in metres, ~ mu * 2/3 * r for a flat disc = 0.5 * 0.023 ~ 0.01.
PHYSICS_KEYS = ('physics_hz', 'gravity_m_s2', 'puck_mass_kg', 'puck_lateral_friction',
                'puck_spinning_friction', 'puck_rolling_friction', 'table_lateral_friction',
                'tool_lateral_friction', 'puck_gap_range_m', 'puck_angle_range_rad',
                'target_distance_range_m', 'target_angle_spread_deg', 'anywhere_x_range_m',
                'anywhere_y_range_m', 'anywhere_target_distance_range_m',
                'anywhere_min_tool_clearance_m')
# Start distributions (the twin's ``variant``): see the module docstring.
VARIANTS = ('push_forward', 'push_anywhere')
# Rejection sampling of push_anywhere draws gives up after this many tries (a config error).
MAX_DRAWS = 10000
# Stop this far inside a position limit: the joint never reaches, let alone passes, the limit.
LIMIT_MARGIN_RAD = 0.01
# Within this distance of a limit, every physics substep checks the limits (see step_velocity).
LIMIT_GUARD_RAD = 0.1
# Bounds of the observation box for velocities and positions (the box must hold any state).
QD_BOUND = 10.0
XYZ_BOUND = 3.0

# The realism block (twin.yaml) PushEnv itself uses: the actuator and per-episode dynamics.
# Sensor rates, noise and latency are the realtime loop's (mbrl_robot/sim/realtime.py).
REALISM_KEYS = ('actuation_delay_s', 'velocity_time_constant_s', 'puck_mass_scale_range',
                'puck_friction_range')

TASK_KEYS = ('joints', 'control_rate_hz', 'episode_steps', 'success_radius_m',
             'max_joint_speed_rad_s')


@contextlib.contextmanager
def _quiet_stdout():
    """Silence pybullet's C-level prints (URDF importer warnings) on file descriptor 1."""
    try:
        fd = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _home_pose(tip: Sequence[float] = HOME_TIP) -> np.ndarray:
    """Joint angles (7,) with the tool vertical, pointing down, its tip at ``tip`` (y = 0)."""
    shoulder_z = 0.15 + 0.19
    upper, fore = 0.21 + 0.19, 0.21 + 0.19
    wrist = np.array([tip[0], tip[2] + 0.12 + 0.045 + 0.081])  # J6 above the tip (x, z)
    dx, dz = wrist[0], wrist[1] - shoulder_z
    d = math.hypot(dx, dz)
    if not (abs(upper - fore) < d < upper + fore):
        raise ValueError(f'home tip {tip} is out of reach')
    to_wrist = math.atan2(dx, dz)          # angle from +z towards +x
    alpha = math.acos((upper ** 2 + d ** 2 - fore ** 2) / (2 * upper * d))
    q2 = to_wrist - alpha                  # elbow up
    beta = math.atan2(dx - upper * math.sin(q2), dz - upper * math.cos(q2))
    q4 = q2 - beta                         # J4 turns about -y
    q6 = math.pi - beta                    # tool direction q2 - q4 + q6 = pi (down)
    return np.array([0.0, q2, 0.0, q4, 0.0, q6, 0.0])


class Actuator:
    """Joint-velocity actuation: a command applies ``delay`` after it is given (zero-order hold),
    and the joints track it to first order with time constant ``tau``.

    Args:
        delay: actuation delay (s, >= 0).
        tau: time constant of the velocity tracking (s; 0 = instantaneous).
        dt: physics step (s).
    """

    def __init__(self, delay: float, tau: float, dt: float):
        if delay < 0 or tau < 0 or dt <= 0:
            raise ValueError(f'actuation delay {delay} and time constant {tau} must be >= 0, '
                             f'dt {dt} > 0')
        self.delay = float(delay)
        self.alpha = 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
        self.reset()

    def reset(self) -> None:
        """Forget every command: the joints are still and track zero."""
        self._pending: collections.deque = collections.deque()
        self.command = np.zeros(7)
        self.reference = np.zeros(7)

    def give(self, t: float, command: np.ndarray) -> None:
        """A command (7,) rad/s given at time ``t`` (s): it takes effect at ``t + delay``."""
        self._pending.append((t + self.delay, np.array(command, dtype=np.float64)))

    def reference_at(self, t: float) -> np.ndarray:
        """The velocity (7,) the joint motors track during the physics step starting at ``t``."""
        while self._pending and self._pending[0][0] <= t + 1e-9:
            self.command = self._pending.popleft()[1]
        if self.alpha >= 1.0:
            self.reference = self.command
        else:
            self.reference = self.reference + self.alpha * (self.command - self.reference)
        return self.reference


class PushEnv(gym.Env):
    """Gymnasium env of the pushing task (``MBRLPush-v0``).

    Observation (17,) float32: ``q`` (7), ``qd`` (7), puck xyz (3); with options, then puck linear
    velocity (3) and tool-tip xyz (3). Action (7,) in [-1, 1]: joint velocity
    ``a * max_joint_speed_rad_s``, clamped to each joint's velocity limit, held for one control
    step. Reward: :meth:`~mbrl_robot.core.tasks.push.PushTask.reward_from_tip` of the step's
    puck and tool tip (``-||puck - target||`` and the optional terms of ``task.reward``; without
    encoder noise equal to :meth:`~mbrl_robot.core.tasks.push.PushTask.reward_fn` of the
    observation). Episodes are truncated after ``episode_steps``; ``info`` holds ``distance``,
    ``is_success``, ``tool_tip``, ``puck``, ``target``, ``contact`` (pusher or arm touches the
    puck at the end of the step).

    Args:
        task_config: the ``task`` block of a config (joints, control_rate_hz, episode_steps,
            success_radius_m, max_joint_speed_rad_s, reward); default: the
            ``lecture`` profile's.
        physics_hz: physics rate; must be a multiple of ``control_rate_hz`` (overrides
            ``physics['physics_hz']``).
        gui: open the PyBullet GUI instead of a headless DIRECT client.
        obs_puck_velocity: append the puck's linear velocity (3) to the observation.
        obs_tool_tip: append the tool-tip position (3) to the observation.
        render_mode: None or 'rgb_array' (a 320x240 camera image).
        physics: the twin's ``physics`` block (``PHYSICS_KEYS``; default: the schema's).
        realism: the twin's ``realism`` block (``REALISM_KEYS`` are used: actuation delay,
            velocity tracking, per-episode puck mass and friction; default: the schema's, an
            ideal arm and a fixed puck).
        variant: start distribution, one of ``VARIANTS`` (see the module docstring).
        episode_steps: overrides ``task_config['episode_steps']``.

    Raises:
        ValueError: missing or invalid task keys, joints that differ from the URDF's, an unknown
            variant.
    """

    metadata = {'render_modes': ['rgb_array'], 'render_fps': 20}

    def __init__(self, task_config: Optional[Mapping[str, Any]] = None,
                 physics_hz: Optional[float] = None, gui: bool = False,
                 obs_puck_velocity: bool = False, obs_tool_tip: bool = False,
                 render_mode: Optional[str] = None,
                 physics: Optional[Mapping[str, Any]] = None,
                 realism: Optional[Mapping[str, Any]] = None, variant: str = 'push_forward',
                 episode_steps: Optional[int] = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f'variant must be one of {list(VARIANTS)}, got {variant!r}')
        self.variant = variant
        from mbrl_robot.config import node_params
        from mbrl_robot.core.schema import schema_defaults
        if task_config is None:
            task_config = node_params('lecture', 'twin')['task']
        physics = dict(schema_defaults('twin', 'physics') if physics is None else physics)
        if physics_hz is not None:
            physics['physics_hz'] = physics_hz
        missing = [k for k in PHYSICS_KEYS if k not in physics]
        if missing:
            raise ValueError(f'physics config lacks {missing}')
        self.physics = physics
        realism = {**schema_defaults('twin', 'realism'), **dict(realism or {})}
        missing = [k for k in REALISM_KEYS if k not in realism]
        if missing:
            raise ValueError(f'realism config lacks {missing}')
        self.realism = realism
        for key in ('puck_mass_scale_range', 'puck_friction_range'):
            lo, hi = (float(v) for v in realism[key])
            if not 0.0 <= lo <= hi or (key == 'puck_mass_scale_range' and lo <= 0.0):
                raise ValueError(f'realism.{key} must be [low, high] with 0 <= low <= high '
                                 f'(mass scale > 0), got {list(realism[key])}')
        physics_hz = float(physics['physics_hz'])
        missing = [k for k in TASK_KEYS if k not in task_config]
        if missing:
            raise ValueError(f'task config lacks {missing}')
        if render_mode not in (None, 'rgb_array'):
            raise ValueError(f'render_mode must be None or "rgb_array", got {render_mode!r}')
        self.render_mode = render_mode
        self.joint_names = tuple(str(j) for j in task_config['joints'])
        self.control_rate_hz = float(task_config['control_rate_hz'])
        self.episode_steps = int(task_config['episode_steps'] if episode_steps is None
                                 else episode_steps)
        self.max_joint_speed = float(task_config['max_joint_speed_rad_s'])
        if len(self.joint_names) != 7 or len(set(self.joint_names)) != 7:
            raise ValueError(f'task.joints must be 7 distinct names, got {self.joint_names}')
        if self.control_rate_hz <= 0 or self.episode_steps <= 0 or self.max_joint_speed <= 0:
            raise ValueError('control_rate_hz, episode_steps and max_joint_speed_rad_s must be '
                             '> 0')
        # The reward and success are PushTask's (one formula and one validation of the task's
        # reward block and success radius; missing terms take the schema's defaults), fed with
        # the tip the physics reports, so its kinematics' joint order is not used here (the
        # joints are checked against the URDF with the scene).
        self.reward_task = PushTask.from_config({**task_config, 'joints': None},
                                                dtype=torch.float64)
        self.success_radius = self.reward_task.success_radius
        substeps = physics_hz / self.control_rate_hz
        if substeps < 1 or abs(substeps - round(substeps)) > 1e-9:
            raise ValueError(f'physics_hz {physics_hz} must be a multiple of control_rate_hz '
                             f'{self.control_rate_hz}')
        self.substeps = int(round(substeps))
        self.physics_dt = 1.0 / float(physics_hz)
        self.control_dt = 1.0 / self.control_rate_hz
        self.actuator = Actuator(float(realism['actuation_delay_s']),
                                 float(realism['velocity_time_constant_s']), self.physics_dt)
        self.sim_time = 0.0  # physics time since the reset (s)
        self.physics_steps = 0
        self.episode_dynamics: Dict[str, float] = {}
        self.obs_puck_velocity = bool(obs_puck_velocity)
        self.obs_tool_tip = bool(obs_tool_tip)
        self.gui = bool(gui)

        self._client = -1
        self._connect()
        self._build_scene()

        lo, hi = self.position_limits
        obs_dim = STATE_DIM + 3 * (self.obs_puck_velocity + self.obs_tool_tip)
        n_xyz = obs_dim - PUCK.start  # puck, then the optional puck velocity and tool tip
        low = np.concatenate([lo, np.full(7, -QD_BOUND), np.full(n_xyz, -XYZ_BOUND)])
        high = np.concatenate([hi, np.full(7, QD_BOUND), np.full(n_xyz, XYZ_BOUND)])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32),
                                            dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)

        self._target = np.zeros(3)
        self._step_count = 0
        self._last_obs: Optional[np.ndarray] = None

    @classmethod
    def from_config(cls, profile: str = 'lecture', task: Optional[Mapping[str, Any]] = None,
                    **options) -> 'PushEnv':
        """Build from ``config/<profile>.yaml``: the twin's merged ``task`` block (or ``task``),
        its ``physics``, ``realism`` and ``variant`` unless ``options`` give them."""
        from mbrl_robot.config import node_params
        params = node_params(profile, 'twin')
        options.setdefault('physics', params['physics'])
        options.setdefault('realism', params['realism'])
        options.setdefault('variant', params['variant'])
        return cls(params['task'] if task is None else task, **options)

    # ----------------------------------------------------------------------------- setup
    def _connect(self) -> None:
        with _quiet_stdout():
            self._client = pb.connect(pb.GUI if self.gui else pb.DIRECT)
        if self._client < 0:
            raise RuntimeError('PyBullet: cannot connect (GUI needs a display)')
        if self.gui:
            pb.configureDebugVisualizer(pb.COV_ENABLE_GUI, 0, physicsClientId=self._client)
            pb.resetDebugVisualizerCamera(1.2, 60.0, -35.0, [0.45, 0.0, 0.0],
                                          physicsClientId=self._client)

    def _build_scene(self) -> None:
        c = self._client
        ph = self.physics
        pb.setGravity(0.0, 0.0, -float(ph['gravity_m_s2']), physicsClientId=c)
        pb.setPhysicsEngineParameter(fixedTimeStep=self.physics_dt, numSubSteps=0,
                                     deterministicOverlappingPairs=1, physicsClientId=c)
        with _quiet_stdout():
            self.robot = pb.loadURDF(urdf_path('iiwa7_pusher.urdf'), [0, 0, 0], useFixedBase=True,
                                     flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
            self.table = pb.loadURDF(urdf_path('table.urdf'), TABLE_POSITION, useFixedBase=True,
                                     physicsClientId=c)
            self.puck = pb.loadURDF(urdf_path('puck.urdf'), [0.6, 0.0, PUCK_Z],
                                    flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
        floor = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=c)
        self.floor = pb.createMultiBody(0.0, floor, basePosition=[0, 0, FLOOR_Z],
                                        physicsClientId=c)
        by_name = {}
        self.link_index = {}
        for j in range(pb.getNumJoints(self.robot, physicsClientId=c)):
            info = pb.getJointInfo(self.robot, j, physicsClientId=c)
            self.link_index[info[12].decode()] = j
            if info[2] == pb.JOINT_REVOLUTE:
                by_name[info[1].decode()] = (j, info[8], info[9], info[10], info[11])
        if set(by_name) != set(self.joint_names):
            raise ValueError(f'task.joints {list(self.joint_names)} differ from the URDF joints '
                             f'{sorted(by_name)}')
        self.joint_ids = [by_name[n][0] for n in self.joint_names]
        self.position_limits = (np.array([by_name[n][1] for n in self.joint_names]),
                                np.array([by_name[n][2] for n in self.joint_names]))
        self.effort_limits = np.array([by_name[n][3] for n in self.joint_names])
        self.velocity_limits = np.array([by_name[n][4] for n in self.joint_names])
        self.tool_link = self.link_index[TOOL_LINK]
        pb.changeDynamics(self.puck, -1, mass=float(ph['puck_mass_kg']),
                          lateralFriction=float(ph['puck_lateral_friction']),
                          spinningFriction=float(ph['puck_spinning_friction']),
                          rollingFriction=float(ph['puck_rolling_friction']),
                          restitution=0.0, linearDamping=0.0, angularDamping=0.0,
                          physicsClientId=c)
        pb.changeDynamics(self.table, -1, lateralFriction=float(ph['table_lateral_friction']),
                          spinningFriction=1.0, rollingFriction=1.0, restitution=0.0,
                          physicsClientId=c)
        pb.changeDynamics(self.robot, self.link_index['pusher'], physicsClientId=c,
                          lateralFriction=float(ph['tool_lateral_friction']), restitution=0.0)
        for j in range(-1, pb.getNumJoints(self.robot, physicsClientId=c)):
            # No joint friction or damping in the velocity motors' way; no sleeping bodies.
            pb.changeDynamics(self.robot, j, linearDamping=0.0, angularDamping=0.0,
                              jointDamping=0.0, physicsClientId=c)
        pb.changeDynamics(self.puck, -1, activationState=pb.ACTIVATION_STATE_DISABLE_SLEEPING,
                          physicsClientId=c)
        home_by_urdf = dict(zip(['iiwa_joint_%d' % i for i in range(1, 8)], _home_pose()))
        self.home_q = np.array([home_by_urdf[n] for n in self.joint_names])
        for j, q in zip(self.joint_ids, self.home_q):
            pb.resetJointState(self.robot, j, q, 0.0, physicsClientId=c)
        self._set_velocity(np.zeros(7))
        # Target marker: a visual-only disc of the success radius (no collision shape).
        marker = pb.createVisualShape(pb.GEOM_CYLINDER, radius=self.success_radius, length=0.001,
                                      rgbaColor=[0.1, 0.8, 0.2, 0.5], physicsClientId=c)
        self._target_marker = pb.createMultiBody(0.0, -1, marker, [0.6, 0.0, 0.0005],
                                                 physicsClientId=c)
        self._saved_state = pb.saveState(physicsClientId=c)

    # ----------------------------------------------------------------------------- state
    @property
    def client_id(self) -> int:
        """PyBullet physics client id (-1 after :meth:`close`)."""
        return self._client

    @property
    def target(self) -> np.ndarray:
        """Current target (3,), metres, world frame."""
        return self._target.copy()

    @property
    def step_count(self) -> int:
        """Control steps since the last reset."""
        return self._step_count

    def joint_state(self) -> Tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities (7,), (7,) in ``task.joints`` order."""
        states = pb.getJointStates(self.robot, self.joint_ids, physicsClientId=self._client)
        return (np.array([s[0] for s in states]), np.array([s[1] for s in states]))

    def puck_position(self) -> np.ndarray:
        """Puck centre (3,) in the world frame."""
        return np.array(pb.getBasePositionAndOrientation(self.puck,
                                                         physicsClientId=self._client)[0])

    def tool_tip(self) -> np.ndarray:
        """Tool-tip position (3,) in the world frame."""
        return np.array(pb.getLinkState(self.robot, self.tool_link, computeForwardKinematics=True,
                                        physicsClientId=self._client)[4])

    def in_contact(self) -> bool:
        """Whether the robot touches the puck now."""
        return bool(pb.getContactPoints(self.robot, self.puck, physicsClientId=self._client))

    def _observe(self) -> np.ndarray:
        q, qd = self.joint_state()
        parts = [q, qd, self.puck_position()]
        if self.obs_puck_velocity:
            parts.append(np.array(pb.getBaseVelocity(self.puck, physicsClientId=self._client)[0]))
        if self.obs_tool_tip:
            parts.append(self.tool_tip())
        return np.concatenate(parts)

    def _info(self, obs: np.ndarray, tip: np.ndarray) -> Dict[str, Any]:
        puck = obs[PUCK]
        dist = float(np.linalg.norm(puck - self._target))
        return {'distance': dist, 'is_success': dist < self.success_radius, 'tool_tip': tip,
                'puck': puck.copy(), 'target': self._target.copy(), 'contact': self.in_contact()}

    @property
    def tool_shaping_weight(self) -> float:
        """``task.reward.tool_shaping_weight`` of this env's reward."""
        return self.reward_task.tool_shaping_weight

    def _reward(self, obs: np.ndarray, tip: np.ndarray, action: np.ndarray) -> float:
        def t(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float64))
        return float(self.reward_task.reward_from_tip(t(obs[PUCK]), t(tip), t(action),
                                                      t(self._target)))

    # ----------------------------------------------------------------------------- control
    def clamp_velocity(self, qd_cmd: np.ndarray, q: Optional[np.ndarray] = None) -> np.ndarray:
        """Clamp a joint velocity command (7,) to the velocity limits and the position limits.

        A joint may move towards a position limit only as far as ``LIMIT_MARGIN_RAD`` inside it
        within one control step, so it stops short of the limit.
        """
        if q is None:
            q, _ = self.joint_state()
        lo, hi = self.position_limits
        vmax = self.velocity_limits
        cmd = np.clip(np.asarray(qd_cmd, dtype=np.float64), -vmax, vmax)
        room_up = np.maximum(hi - LIMIT_MARGIN_RAD - q, 0.0) / self.control_dt
        room_down = np.maximum(q - (lo + LIMIT_MARGIN_RAD), 0.0) / self.control_dt
        return np.clip(cmd, -room_down, room_up)

    def _enforce_limits(self) -> None:
        q, qd = self.joint_state()
        lo, hi = self.position_limits
        for i in np.flatnonzero((q < lo) | (q > hi)):
            pb.resetJointState(self.robot, self.joint_ids[i], float(np.clip(q[i], lo[i], hi[i])),
                               0.0, physicsClientId=self._client)

    def _set_velocity(self, qd: np.ndarray) -> None:
        pb.setJointMotorControlArray(self.robot, self.joint_ids, pb.VELOCITY_CONTROL,
                                     targetVelocities=list(qd), forces=list(self.effort_limits),
                                     physicsClientId=self._client)

    def command(self, qd_cmd: Sequence[float], at: Optional[float] = None) -> None:
        """Give the actuator joint velocities ``qd_cmd`` (7,) rad/s at physics time ``at``
        (default now); they apply after the actuation delay and hold until the next command.

        The command is clamped to the joint velocity limits and stops each joint short of its
        position limits within one control period.

        Raises:
            ValueError: not 7 finite numbers.
        """
        cmd = np.asarray(qd_cmd, dtype=np.float64)
        if cmd.shape != (7,) or not np.all(np.isfinite(cmd)):
            raise ValueError(f'joint velocity command must be 7 finite numbers, got {cmd}')
        self.actuator.give(self.sim_time if at is None else float(at),
                           self.clamp_velocity(cmd))

    def advance_physics(self, steps: int) -> None:
        """Run ``steps`` physics steps with the actuator's velocity references."""
        q, _ = self.joint_state()
        lo, hi = self.position_limits
        # Contacts (the arm pressed on the table) can push a joint past the motor's stop; near a
        # limit every substep checks and holds the joint at the limit like an end stop.
        guard = bool(np.any(np.minimum(q - lo, hi - q) < LIMIT_GUARD_RAD))
        for _ in range(int(steps)):
            before = self.actuator.reference
            reference = self.actuator.reference_at(self.sim_time)
            if reference is not before:
                self._set_velocity(reference)
            pb.stepSimulation(physicsClientId=self._client)
            if guard:
                self._enforce_limits()
            self.physics_steps += 1
            self.sim_time = self.physics_steps * self.physics_dt

    def step_velocity(self, qd_cmd: Sequence[float]) -> np.ndarray:
        """Advance one control step with joint velocities ``qd_cmd`` (7,) in rad/s given now.

        See :meth:`command` (clamping, actuation delay). Used by :meth:`step` and by the ROS
        twin node's lockstep mode.

        Returns:
            The observation (obs_dim,) float64 after the step.

        Raises:
            ValueError: not 7 finite numbers.
        """
        self.command(qd_cmd)
        self.advance_physics(self.substeps)
        self._step_count += 1
        self._last_obs = self._observe()
        return self._last_obs

    def step(self, action: np.ndarray):
        """Gymnasium step: action (7,) in [-1, 1] (clipped) -> obs, reward, terminated, truncated,
        info."""
        if self._last_obs is None:
            raise RuntimeError('PushEnv.step before reset()')
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f'action must be 7 finite numbers, got {action}')
        action = np.clip(action, -1.0, 1.0)
        obs = self.step_velocity(action * self.max_joint_speed)
        tip = self.tool_tip()
        reward = self._reward(obs, tip, action)
        truncated = self._step_count >= self.episode_steps
        return obs.astype(np.float32), reward, False, truncated, self._info(obs, tip)

    # ----------------------------------------------------------------------------- episodes
    def sample_start(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Draw a puck start and a target (3,), (3,) from ``rng`` (see module docstring)."""
        tip = np.array(HOME_TIP)
        if self.variant == 'push_anywhere':
            clearance = float(self.physics['anywhere_min_tool_clearance_m'])
            for _ in range(MAX_DRAWS):
                puck = self._anywhere_point(rng)
                if math.hypot(puck[0] - tip[0], puck[1] - tip[1]) >= clearance:
                    return puck, self.sample_target(rng, puck)
            raise ValueError(f'no puck start in the anywhere region {clearance} m from the tool')
        phi = rng.uniform(*self.physics['puck_angle_range_rad'])
        gap = rng.uniform(*self.physics['puck_gap_range_m'])
        r = PUCK_RADIUS_M + TOOL_RADIUS_M + gap
        puck = np.array([tip[0] + r * math.cos(phi), tip[1] + r * math.sin(phi), PUCK_Z])
        target = self.sample_target(rng, puck, phi)
        return puck, target

    def _anywhere_point(self, rng: np.random.Generator) -> np.ndarray:
        x = rng.uniform(*self.physics['anywhere_x_range_m'])
        y = rng.uniform(*self.physics['anywhere_y_range_m'])
        return np.array([x, y, PUCK_Z])

    def _in_anywhere_region(self, xy: Sequence[float]) -> bool:
        (x0, x1), (y0, y1) = (self.physics['anywhere_x_range_m'],
                              self.physics['anywhere_y_range_m'])
        return x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1

    def sample_target(self, rng: np.random.Generator, puck: np.ndarray,
                      direction: Optional[float] = None) -> np.ndarray:
        """Draw a target for ``puck`` (3,).

        ``push_forward``: 10-25 cm from the puck, within 25 deg of ``direction`` (rad, about +z;
        default: from the tool tip to the puck). ``push_anywhere``: in the anywhere region,
        ``anywhere_target_distance_range_m`` from the puck in any direction (``direction`` is
        ignored).

        Raises:
            ValueError: push_anywhere, no such target after ``MAX_DRAWS`` tries (a region too
                small for the distance range).
        """
        if self.variant == 'push_anywhere':
            lo, hi = self.physics['anywhere_target_distance_range_m']
            # A puck pushed out of the region draws around its nearest point in the region.
            centre = np.clip(puck[:2], *zip(self.physics['anywhere_x_range_m'],
                                            self.physics['anywhere_y_range_m']))
            for _ in range(MAX_DRAWS):
                psi = rng.uniform(-math.pi, math.pi)
                dist = rng.uniform(lo, hi)
                target = np.array([centre[0] + dist * math.cos(psi),
                                   centre[1] + dist * math.sin(psi), PUCK_Z])
                if self._in_anywhere_region(target):
                    return target
            raise ValueError(f'no target in the anywhere region {lo}-{hi} m from {list(centre)}')
        if direction is None:
            tip = self.tool_tip()
            direction = math.atan2(puck[1] - tip[1], puck[0] - tip[0])
        spread = math.radians(float(self.physics['target_angle_spread_deg']))
        psi = direction + rng.uniform(-spread, spread)
        dist = rng.uniform(*self.physics['target_distance_range_m'])
        return np.array([puck[0] + dist * math.cos(psi), puck[1] + dist * math.sin(psi), PUCK_Z])

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        """Start an episode from the ready pose; the puck and target come from the seeded RNG.

        Options: ``puck`` (3,) and/or ``target`` (3,) override the drawn values.
        """
        super().reset(seed=seed)
        puck, target = self.sample_start(self.np_random)
        options = options or {}
        if options.get('puck') is not None:
            puck = self._xyz(options['puck'], 'puck')
        if options.get('target') is not None:
            target = self._xyz(options['target'], 'target')
        pb.restoreState(self._saved_state, physicsClientId=self._client)
        self._set_velocity(np.zeros(7))
        self.actuator.reset()
        self.sim_time, self.physics_steps = 0.0, 0
        self._randomise_puck(self.np_random)
        # restoreState keeps the puck-table contact manifold of the last episode, whose cached
        # impulses warm-start the first step when the puck starts where it was (it then moves
        # by ~1e-7 m depending on the history, and gymnasium's check_env compares rewards
        # exactly): lift the puck off the table and collide, which drops the pair, then collide
        # at the start, so the episode starts from a fresh manifold. KNOWN ISSUE: two resets
        # without a step in between can still leave a ~1e-8 m dependence.
        for xyz in ([0.0, 0.0, -FLOOR_Z + 10.0], puck):
            pb.resetBasePositionAndOrientation(self.puck, xyz, [0, 0, 0, 1],
                                               physicsClientId=self._client)
            pb.performCollisionDetection(physicsClientId=self._client)
        pb.resetBaseVelocity(self.puck, [0, 0, 0], [0, 0, 0], physicsClientId=self._client)
        self.set_target(target)
        self._step_count = 0
        self._last_obs = self._observe()
        info = self._info(self._last_obs, self.tool_tip())
        info['dynamics'] = dict(self.episode_dynamics)
        return self._last_obs.astype(np.float32), info

    def _randomise_puck(self, rng: np.random.Generator) -> None:
        """Draw this episode's puck mass and friction (``realism`` ranges; after the start
        draws, so a fixed puck leaves the seeded episodes as they were)."""
        mass = float(self.physics['puck_mass_kg'])
        friction = float(self.physics['puck_lateral_friction'])
        lo, hi = (float(v) for v in self.realism['puck_mass_scale_range'])
        if hi > lo or lo != 1.0:
            mass *= float(rng.uniform(lo, hi)) if hi > lo else lo
        lo, hi = (float(v) for v in self.realism['puck_friction_range'])
        if hi > 0.0:
            friction = float(rng.uniform(lo, hi)) if hi > lo else lo
        pb.changeDynamics(self.puck, -1, mass=mass, lateralFriction=friction,
                          physicsClientId=self._client)
        self.episode_dynamics = {'puck_mass_kg': mass, 'puck_lateral_friction': friction}

    def set_target(self, xyz: Sequence[float]) -> None:
        """Set the target (3,) (metres, world frame) of the running episode."""
        self._target = self._xyz(xyz, 'target')
        pb.resetBasePositionAndOrientation(self._target_marker,
                                           [self._target[0], self._target[1], 0.0005],
                                           [0, 0, 0, 1], physicsClientId=self._client)

    def new_target(self, seed: Optional[int] = None) -> np.ndarray:
        """Draw and set a new target for the current puck (see :meth:`sample_target`)."""
        rng = self.np_random if seed is None else np.random.default_rng(seed)
        target = self.sample_target(rng, self.puck_position())
        self.set_target(target)
        return target

    @staticmethod
    def _xyz(value, name: str) -> np.ndarray:
        xyz = np.asarray(value, dtype=np.float64)
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise ValueError(f'{name} must be 3 finite numbers, got {value}')
        return xyz

    # ----------------------------------------------------------------------------- misc
    def render(self):
        """An RGB image (240, 320, 3) uint8 of the cell when ``render_mode='rgb_array'``."""
        if self.render_mode != 'rgb_array':
            return None
        view = pb.computeViewMatrixFromYawPitchRoll([0.55, 0.0, 0.0], 1.0, 50.0, -35.0, 0.0, 2,
                                                    physicsClientId=self._client)
        proj = pb.computeProjectionMatrixFOV(60.0, 320 / 240, 0.05, 5.0,
                                             physicsClientId=self._client)
        img = pb.getCameraImage(320, 240, view, proj, renderer=pb.ER_TINY_RENDERER,
                                physicsClientId=self._client)[2]
        return np.asarray(img, dtype=np.uint8).reshape(240, 320, 4)[..., :3]

    def close(self) -> None:
        """Disconnect the PyBullet client (idempotent)."""
        if self._client >= 0:
            try:
                pb.disconnect(physicsClientId=self._client)
            except pb.error:
                pass
            self._client = -1
        super().close()
