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
"""The in-process recipe on a profile: the core's ``run_recipe`` with the files around it.

Reads the profile exactly as the nodes read it (schema defaults, profile, validated overrides),
builds the twin, writes the run's ``params.yaml`` for the report's setup section, then runs
:func:`mbrl_robot.core.algorithms.mpc_recipe.run_recipe` on that plain data. What the
benchmarks and the learning regression test call.
"""

import os
from typing import Any, Callable, Dict, Optional

from mbrl_robot.config import node_params, write_param_file
from mbrl_robot.core.algorithms.mpc_recipe import run_recipe

NODES = ('twin', 'trainer', 'controller', 'recipe')


def run_profile(profile: str = 'cpu', overrides: Optional[Dict[str, Dict[str, Any]]] = None,
                run_dir: Optional[str] = None, log: Callable[[str], None] = print,
                env=None) -> Dict[str, Any]:
    """Run the recipe in-process on ``profile``; returns the summary (see ``run_recipe``).

    Args:
        profile: config profile; every block is read exactly as the nodes read it.
        overrides: ``{node: {nested params}}`` merged over the profile (e.g.
            ``{'recipe': {'iterations': 1}}``); an unknown or invalid one raises ValueError.
        run_dir: if set, ``params.yaml`` and ``summary.json`` are written there.
        log: progress sink.
        env: a :class:`~mbrl_robot.sim.push_env.PushEnv` to reuse (default: one built from
            the profile's twin parameters).
    """
    cfg = {n: node_params(profile, n, overrides=(overrides or {}).get(n)) for n in NODES}
    if env is None:
        from mbrl_robot.sim.push_env import PushEnv
        env = PushEnv(cfg['twin']['task'], physics=cfg['twin']['physics'],
                      variant=cfg['twin']['variant'])
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        write_param_file(cfg, os.path.join(run_dir, 'params.yaml'))
    return run_recipe(cfg, env, run_dir=run_dir, log=log, label=profile)
