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
"""``benchmarks/model_error.py`` on bad input: one line and exit status 2, never a traceback,
and never a trained model written over a folder that holds something else."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = [sys.executable, os.path.join(ROOT, 'benchmarks', 'model_error.py')]


def run(*args, cwd):
    return subprocess.run(SCRIPT + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_a_folder_without_model_json_is_never_written_over(tmp_path):
    """A checkpoint that lost its model.json (or any folder with files) was taken for no model:
    the model trained here replaced its model.pt."""
    folder = tmp_path / 'v0002'
    folder.mkdir()
    (folder / 'model.pt').write_bytes(b'weights that must stay')
    proc = run('--synthetic', '--episodes', '4', '--max-epochs', '1', '--model-dir',
               str(folder), cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f'model_error.py: --model-dir {folder}: holds no model.json but is not an empty folder: '
        'not writing the trained model over it']
    assert (folder / 'model.pt').read_bytes() == b'weights that must stay'


@pytest.mark.parametrize('content,says', [
    (None, 'No such file or directory: data.npz'),
    (b'\x00garbage', 'data.npz: not an .npz of arrays'),
    ('keys', "data.npz: missing arrays ['act', 'next_obs']"),
])
def test_a_bad_data_file_is_one_line(tmp_path, content, says):
    if content == 'keys':
        np.savez(tmp_path / 'data.npz', obs=np.zeros((3, 17)))
    elif content is not None:
        (tmp_path / 'data.npz').write_bytes(content)
    proc = run('--data', 'data.npz', cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith('model_error.py: ') and says in lines[0], lines
