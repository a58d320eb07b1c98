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

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = 'Licensed under the Apache License, Version 2.0'


@pytest.mark.linter
@pytest.mark.copyright
def test_copyright():
    files = [f for pattern in ('mbrl_robot/**/*.py', 'test/**/*.py', 'benchmarks/**/*.py',
                               'launch/*.py', 'setup.py')
             for f in glob.glob(os.path.join(ROOT, pattern), recursive=True)]
    assert files
    missing = [os.path.relpath(f, ROOT) for f in files if HEADER not in open(f).read(2000)]
    assert not missing, f'files without the Apache-2.0 header: {missing}'
