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
"""docs/interfaces.md is generated from the parameter schema and must match it."""

import os

from mbrl_robot.params_doc import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_interfaces_md_is_the_generated_one():
    with open(os.path.join(ROOT, 'docs', 'interfaces.md')) as f:
        checked_in = f.read()
    assert checked_in == generate(), (
        'docs/interfaces.md is stale: run `python -m mbrl_robot.params_doc > docs/interfaces.md`')
