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
"""Checkpoint folders as chunks and back (core/transfer.py): whole, verified, atomic."""

import os
import random

import pytest
import torch

from mbrl_robot.core.models import create_model, GaussianEnsemble
from mbrl_robot.core.transfer import (decode_header, DirAssembler, encode_header, pack_dir,
                                      TransferRejected)


def checkpoint(tmp_path, version=1, seed=0):
    """A real model folder with a policy-like sub-folder."""
    path = tmp_path / 'trainer' / f'v{version:04d}'
    model = create_model({'name': 'gaussian_ensemble', 'ensemble_size': 2, 'num_layers': 2,
                          'hidden_size': 64}, 17, 7, torch.device('cpu'), seed)
    model.save(path)
    (path / 'policy').mkdir()
    (path / 'policy' / 'policy.json').write_text('{"version": %d}' % version)
    return path


def files_of(path):
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), 'rb') as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


def test_a_folder_arrives_whole_in_any_order(tmp_path):
    src = checkpoint(tmp_path, 3)
    chunks = pack_dir(str(src), 3, chunk_bytes=4096)
    assert len(chunks) > 5 and all(len(p) <= 4096 for _, p in chunks)
    random.Random(0).shuffle(chunks)
    chunks.insert(3, chunks[7])  # a resent chunk
    assembler = DirAssembler(str(tmp_path / 'cache'))
    done = [assembler.add(decode_header(encode_header(h)), p) for h, p in chunks]
    assert [d for d in done if d] == [assembler.path(3)]
    assert files_of(assembler.path(3)) == files_of(src)
    # What arrived is a model that loads (with the checksum its announcement would carry).
    GaussianEnsemble.load(assembler.path(3))
    assert not os.path.exists(assembler.path(3) + '.tmp') and assembler.rejected == 0


def test_a_partial_or_corrupt_transfer_is_never_written(tmp_path):
    src = checkpoint(tmp_path, 2)
    chunks = pack_dir(str(src), 2, chunk_bytes=4096)
    assembler = DirAssembler(str(tmp_path / 'cache'))
    # Partial: every chunk but one.
    for h, p in chunks[:-1]:
        assert assembler.add(h, p) is None
    assert not os.path.exists(assembler.path(2))
    # Corrupt: one flipped byte in the last chunk of a file: that file is dropped.
    h, p = chunks[-1]
    with pytest.raises(TransferRejected, match='sha256'):
        assembler.add(h, bytes([p[0] ^ 0xFF]) + p[1:])
    assert not os.path.exists(assembler.path(2)) and assembler.rejected == 1
    # The file sent again, whole: now the version completes.
    for h, p in chunks:
        if h['file'] == chunks[-1][0]['file']:
            done = assembler.add(h, p)
    assert done == assembler.path(2) and files_of(done) == files_of(src)


def test_contradicting_and_stale_chunks_are_rejected(tmp_path):
    a = pack_dir(str(checkpoint(tmp_path / 'a', 1, seed=0)), 1, chunk_bytes=4096)
    b = pack_dir(str(checkpoint(tmp_path / 'b', 1, seed=1)), 1, chunk_bytes=4096)
    assembler = DirAssembler(str(tmp_path / 'cache'), keep=1)
    big = next(i for i, (h, _) in enumerate(a) if h['chunks'] > 1)
    assembler.add(*a[big])
    with pytest.raises(TransferRejected, match='disagrees'):
        assembler.add(*b[big + 1])  # same file and version, another model
    for h, p in a:
        assembler.add(h, p)
    assert assembler.latest == 1
    v2 = pack_dir(str(checkpoint(tmp_path / 'c', 2, seed=2)), 2, chunk_bytes=1 << 20)
    for h, p in v2:
        assembler.add(h, p)
    assert assembler.latest == 2 and not os.path.exists(assembler.path(1))  # keep=1
    with pytest.raises(TransferRejected, match='already complete'):
        assembler.add(*a[0])


@pytest.mark.parametrize('text, why', [
    ('not json', 'not JSON'),
    ('{"version": 1}', 'needs the keys'),
    (encode_header({'version': 1, 'file': '../x', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': '0', 'files': ['../x']}), 'bad file list'),
    (encode_header({'version': 1, 'file': '/etc/x', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': '0', 'files': ['/etc/x']}), 'bad file list'),
    (encode_header({'version': 1, 'file': 'a', 'chunk': 2, 'chunks': 1, 'size': 1,
                    'sha256': '0', 'files': ['a']}), 'inconsistent'),
    (encode_header({'version': '1', 'file': 'a', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': '0', 'files': ['a']}), 'must be integers'),
    (encode_header({'version': 1, 'file': 'a', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': 5, 'files': ['a']}), 'sha256 must be 64 hex digits'),
    (encode_header({'version': 1, 'file': '.', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': 'ab' * 32, 'files': ['.']}), 'bad file list'),
    (encode_header({'version': 1, 'file': 'a', 'chunk': 0, 'chunks': 1, 'size': 1,
                    'sha256': 'ab' * 32, 'files': ['a', 'a/b']}), 'bad file list'),
])
def test_bad_headers_say_what_is_wrong(text, why):
    with pytest.raises(TransferRejected, match=why):
        decode_header(text)
