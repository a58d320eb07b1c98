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
"""benchmarks/plan_ab.py on tiny planners: its A/Bs compare like with like (the old draws give
the new draws' numbers, fp32 layers under autocast the bf16 layers' plans)."""

import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
import plan_ab  # noqa: E402
import plan_latency  # noqa: E402

MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 2, 'num_layers': 2, 'hidden_size': 16,
         'activation': 'silu', 'probabilistic': True}
PLANNER = {'name': 'pets', 'horizon': 3, 'population_size': 8, 'elite_count': 2,
           'iterations': 2, 'min_std': 0.05, 'initial_std': 0.5, 'alpha': 0.1, 'particles': 2,
           'propagation': 'ts_inf', 'seed': 0}


@pytest.mark.parametrize('propagation', ['ts_inf', 'ts_1', 'mean'])
def test_both_ab_compare_like_with_like(monkeypatch, propagation):
    planner = dict(PLANNER, propagation=propagation)
    if propagation == 'mean':
        planner.update(name='cem', particles=1)
    monkeypatch.setattr(plan_latency, 'CONFIGS', {'tiny': (MODEL, planner)})
    args = SimpleNamespace(rounds=2, backend='fused')
    row = plan_ab.ab_draws('tiny', args)
    assert row['same_numbers'] and row['old_ms'] > 0 and row['new_ms'] > 0
    row = plan_ab.ab_bf16_weights('tiny', args)
    assert row['same_plans'] and row['kernels_new'] < row['kernels_old']
