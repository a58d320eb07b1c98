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
"""scripts/gpu_check.sh runs on a lent GPU machine with minutes to spare: every benchmark and
runner command line in it must parse here first (flags, configs, variants, --set keys)."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from mbrl_robot import runner
from mbrl_robot.config import config_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'scripts', 'gpu_check.sh')
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import plan_latency  # noqa: E402

# Shell variables of the script, by the values they take there.
VALUES = {'out': 'runs/gpu/recipe', 'precision': 'bf16', 'run_s': '420', 'py': 'python3',
          'gpy': 'python3', 'v': 'compiled_cuda_graph@bf16'}


def commands(marker):
    """The argument lists after ``marker`` in the script's commands (continuations joined,
    variables and the ``fleet`` array expanded)."""
    text = open(SCRIPT).read().replace('\\\n', ' ')
    array = re.search(r'fleet=\((.*?)\)', text, re.S).group(1)
    text = text.replace('"${fleet[@]}"', ' '.join(shlex.quote(t) for t in shlex.split(array)))
    found = []
    for line in text.splitlines():
        if marker not in line or line.lstrip().startswith('#'):
            continue
        line = re.sub(r'\$\{?(\w+)\}?', lambda m: VALUES.get(m.group(1), m.group(0)), line)
        found.append(shlex.split(line.split(marker, 1)[1]))
    return found


def test_the_script_is_valid_bash():
    subprocess.run(['bash', '-n', SCRIPT], check=True)


@pytest.mark.parametrize('args', commands('benchmarks/plan_latency.py'),
                         ids=lambda a: ' '.join(a)[:60])
def test_plan_latency_commands_parse(args):
    ns = plan_latency.build_parser().parse_args(args)  # exits (fails) on an unknown flag
    known = plan_latency.VARIANTS + plan_latency.KNOWN_BF16
    assert set(ns.configs.split(',')) <= set(plan_latency.CONFIGS)
    if ns.precision_check is None and not ns.count_ops:
        assert set(ns.variants.split(',')) <= set(known), ns.variants


@pytest.mark.parametrize('args', commands('-m mbrl_robot.runner'),
                         ids=lambda a: ' '.join(a)[:60])
def test_runner_commands_validate(args, tmp_path):
    """The profile and every --set value validate against the schema, as mbrl_run does before
    it starts a process."""
    ns = runner.parse_args(args)
    sets = runner.parse_sets(ns.set)
    if ns.arms is not None:
        for node in ('buffer', 'recipe'):
            sets[node] = runner._merge(sets.get(node, {}),
                                       {'arm_namespaces': runner.parse_arms(ns.arms)})
    params = runner.effective_params(config_path(ns.profile), sets, str(tmp_path))
    assert params['twin']['mode'] == 'realtime'
    assert len(params['recipe']['arm_namespaces']) == 2


def test_the_commands_were_found():
    # 4 bench, 1 compiled, 1 recipe (its precision checks), 2 essentials only
    assert len(commands('benchmarks/plan_latency.py')) == 8
    assert len(commands('-m mbrl_robot.runner')) == 2
    assert len(SELECTIONS) == 1  # essentials' CUDA-graph tests


SELECTIONS = [a for a in commands('-m pytest') if '-k' in a]  # pytest calls that pick tests


@pytest.mark.parametrize('args', SELECTIONS,
                         ids=lambda a: ' '.join(a)[:60])
def test_a_test_selection_selects_the_cuda_graph_tests(args):
    """`essentials` runs only the CUDA-graph tests: its -k must still name them (collected
    here, skipped without CUDA)."""
    run = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', *args],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    collected = [line for line in run.stdout.splitlines() if '::' in line]
    assert len(collected) == 8, run.stdout
    assert all('cuda_graph' in line for line in collected)
