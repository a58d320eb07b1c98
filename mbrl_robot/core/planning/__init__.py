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

"""Planning with learned models: optimizers, batched trajectory evaluation, the MPC agent."""

from mbrl_robot.core.planning.agent import MPCAgent
from mbrl_robot.core.planning.factory import create_agent, resolve_planner_cfg
from mbrl_robot.core.planning.optimizers import (cem_update, CEMOptimizer, colored_noise,
                                                 OptimizationResult, Optimizer,
                                                 RandomShootingOptimizer)
from mbrl_robot.core.planning.trajectory import (project_action_sequences, TrajectoryEvaluator,
                                                 TrajectoryOptimizer)

__all__ = [
    'cem_update', 'CEMOptimizer', 'colored_noise', 'create_agent',
    'MPCAgent', 'OptimizationResult', 'Optimizer', 'project_action_sequences',
    'RandomShootingOptimizer', 'resolve_planner_cfg', 'TrajectoryEvaluator',
    'TrajectoryOptimizer',
]
