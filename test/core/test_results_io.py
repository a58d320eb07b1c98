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
"""``benchmarks/results_io.py``: the benchmarks' ``--table`` on a missing or damaged JSON-lines
file says so in one line (a traceback before, in gym_suite, fleet and realworld)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
from results_io import json_lines, print_table  # noqa: E402


def test_json_lines_reads_objects_and_skips_blank_lines(tmp_path):
    (tmp_path / 'a.jsonl').write_text('{"x": 1}\n\n{"x": 2}\n')
    (tmp_path / 'b.jsonl').write_text('{"x": 3}')
    assert [d['x'] for d in json_lines([tmp_path / 'a.jsonl', tmp_path / 'b.jsonl'])] == [1, 2, 3]


@pytest.mark.parametrize('content,says', [
    (None, 'No such file or directory: '),
    ('{"x": 1}\nnot json\n', 'r.jsonl:2: not a JSON line (Expecting value'),
    ('[1, 2]\n', 'r.jsonl:1: a JSON list, not an object'),
    ('{"y": 1}\n', "a line without the figure 'x'"),
])
def test_a_bad_table_file_is_one_line_and_status_2(tmp_path, capsys, content, says):
    path = tmp_path / 'r.jsonl'
    if content is not None:
        path.write_text(content)
    assert print_table(lambda paths: str([d['x'] for d in json_lines(paths)]), [str(path)],
                       'bench.py') == 2
    out, err = capsys.readouterr()
    assert not out and len(err.strip().splitlines()) == 1, err
    assert err.startswith('bench.py: --table: ') and says in err, err
