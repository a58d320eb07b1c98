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
"""Milliseconds per action of a deployed policy on one CPU core, JSON lines.

Times what the controller runs per step in policy mode (``core/control.py:LearnedPolicy.plan``:
the observation, one forward pass, a chunked policy's temporal ensemble, the clip) on the
recorded states of a run, one thread, and beside it the run's planner on the same states
(``--planner``), in the same process.

Usage::

    python benchmarks/policy_latency.py RUN_DIR [--planner] [--steps 2000]

``RUN_DIR`` is a finished graph run of a policy profile (e.g. ``runs/realworld/
forward_realtime_distill/seed0``): its newest ``models/v<N>/policy`` and ``buffer``.
"""

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from mbrl_robot.config import node_params
from mbrl_robot.core.buffer.storage import TransitionStore
from mbrl_robot.core.control import GoalHold, LearnedPolicy, PolicyFactory
from mbrl_robot.core.policy import load_policy
from mbrl_robot.core.safety import CommandFilter
from mbrl_robot.core.tasks.push import PushTask


def newest_with(run_dir: str, sub: str) -> str:
    """``models/vN/sub`` of the run's newest version that holds ``sub`` (e.g. ``policy``)."""
    models = os.path.join(run_dir, 'models')
    names = sorted(n for n in os.listdir(models) if n.startswith('v') and n[1:].isdigit()
                   and os.path.isdir(os.path.join(models, n, sub)))
    if not names:
        raise FileNotFoundError(f'{models}: no version with a {sub}')
    return os.path.join(models, names[-1], sub)


def _percentiles(ms) -> dict:
    ms = np.asarray(ms)
    return {'ms_p50': float(np.median(ms)), 'ms_p99': float(np.percentile(ms, 99)),
            'ms_max': float(ms.max()), 'n': len(ms)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('run_dir')
    ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--planner', action='store_true',
                    help="also time the run's planner (controller.planner) on the same states")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        params = node_params(os.path.join(args.run_dir, 'params.yaml'), 'controller')
        policy, meta = load_policy(newest_with(args.run_dir, 'policy'))
        store = TransitionStore.open_read_only(os.path.join(args.run_dir, 'buffer'))
        rec = store.records(0, args.steps, np.float64)
        store.close()
    except (OSError, ValueError, KeyError) as e:
        print(f'policy_latency: {e}', file=sys.stderr)
        return 2
    task = PushTask.from_config(params['task'])
    learned = LearnedPolicy(policy, task, meta['version'], GoalHold(0.0, 0.0),
                            obs_layout=meta['obs_layout'])
    lines = []
    ms = []
    for step, (s, target) in enumerate(zip(rec.batch.obs, rec.target)):
        task.set_target(target)
        t0 = time.perf_counter()
        learned.plan(s, step)  # consecutive steps: a chunked policy ensembles all k
        ms.append(1e3 * (time.perf_counter() - t0))
    lines.append({'kind': 'policy_latency', 'what': 'policy', 'threads': 1,
                  'hidden_sizes': meta['hidden_sizes'], 'chunk': policy.chunk,
                  'version': meta['version'],
                  **_percentiles(ms[10:])})
    if args.planner:
        cfg = {**params, 'mode': 'planner'}
        factory = PolicyFactory(cfg, CommandFilter.from_params(params))
        factory.load_model(os.path.dirname(newest_with(args.run_dir, 'policy')), meta['version'])
        factory.set_target(rec.target[0])
        planner = factory.create()
        ms = []
        for s, target in zip(rec.batch.obs[:200], rec.target[:200]):
            factory.set_target(target)
            t0 = time.perf_counter()
            planner.plan(s, 0)
            ms.append(1e3 * (time.perf_counter() - t0))
        lines.append({'kind': 'policy_latency', 'what': 'planner', 'threads': 1,
                      'backend': params['planner']['backend'], **_percentiles(ms[10:])})
    for line in lines:
        print(json.dumps({**line, 'run_dir': args.run_dir}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
