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
"""Checkpoint folders as chunks of bytes, and back: how models reach a host without a shared disk.

The trainer cuts a version's folder (``v<N>/``: ``model.pt``, ``model.json``,
``announcement.json``, MBPO's ``policy/``) into chunks with :func:`pack_dir`; each chunk travels
as one message (the ROS layer puts the header's JSON and the bytes in a standard
``std_msgs/UInt8MultiArray``); a receiver feeds them to :class:`DirAssembler`, which writes the
folder under its cache once every file of the version is complete and matches its sha256, and
atomically (built as ``v<N>.tmp``, then renamed), so a reader never sees half a version. A chunk
of a corrupt file, a chunk that contradicts the others, or a version older than one already
complete is rejected (counted, and said why); a partial version is never written.
"""

import hashlib
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

CHUNK_BYTES = 1 << 20
HEADER_KEYS = ('version', 'file', 'chunk', 'chunks', 'size', 'sha256', 'files')


class TransferRejected(ValueError):
    """A chunk (or the file it completes) that cannot be used; the message says why."""


def pack_dir(path: str, version: int,
             chunk_bytes: int = CHUNK_BYTES) -> List[Tuple[Dict[str, Any], bytes]]:
    """Every file under ``path`` as ``(header, payload)`` chunks.

    Args:
        path: a checkpoint folder (files in sub-folders keep their relative path).
        version: the checkpoint version the chunks belong to.
        chunk_bytes: largest payload of one chunk (> 0).

    Returns:
        Chunks, file by file in sorted order; ``header`` = ``{version, file, chunk, chunks,
        size, sha256, files}`` (``files``: every relative path of the version, so a receiver
        knows when it has all of them).
    """
    if chunk_bytes < 1:
        raise ValueError(f'chunk_bytes must be > 0, got {chunk_bytes}')
    files = []
    for root, _, names in os.walk(path):
        for name in names:
            files.append(os.path.relpath(os.path.join(root, name), path))
    files.sort()
    out = []
    for rel in files:
        with open(os.path.join(path, rel), 'rb') as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        n = max(1, -(-len(data) // chunk_bytes))
        for i in range(n):
            header = {'version': int(version), 'file': rel, 'chunk': i, 'chunks': n,
                      'size': len(data), 'sha256': digest, 'files': files}
            out.append((header, data[i * chunk_bytes:(i + 1) * chunk_bytes]))
    return out


def encode_header(header: Dict[str, Any]) -> str:
    """The header as one line of JSON."""
    return json.dumps(header, separators=(',', ':'), sort_keys=True)


def decode_header(text: str) -> Dict[str, Any]:
    """Parse and check a header.

    Raises:
        TransferRejected: not JSON, a key missing, a wrong type or an unsafe file name.
    """
    try:
        header = json.loads(text)
    except ValueError as e:
        raise TransferRejected(f'chunk header is not JSON: {e}') from e
    if not isinstance(header, dict) or any(k not in header for k in HEADER_KEYS):
        raise TransferRejected(f'chunk header needs the keys {HEADER_KEYS}, got {text[:200]!r}')
    ints = ('version', 'chunk', 'chunks', 'size')
    if any(isinstance(header[k], bool) or not isinstance(header[k], int) for k in ints):
        raise TransferRejected(f'chunk header: {ints} must be integers, got {text[:200]!r}')
    files = header['files']
    if (not isinstance(files, list) or not files or header['file'] not in files
            or any(not _safe(f) for f in files) or _file_is_a_folder(files)):
        raise TransferRejected(f'chunk header: bad file list {files!r} for {header["file"]!r}')
    if not (0 <= header['chunk'] < header['chunks'] and header['size'] >= 0
            and header['version'] >= 1):
        raise TransferRejected(f'chunk header: inconsistent numbers in {text[:200]!r}')
    sha = header['sha256']
    if not (isinstance(sha, str) and len(sha) == 64
            and all(c in '0123456789abcdef' for c in sha)):
        raise TransferRejected(f'chunk header: sha256 must be 64 hex digits, got {sha!r}'[:300])
    return header


def _file_is_a_folder(files: List[str]) -> bool:
    """Whether one name is a folder of another ('a' and 'a/b'): both cannot be written."""
    names = set(files)
    for rel in files:
        parts = rel.replace('\\', '/').split('/')
        if any('/'.join(parts[:i]) in names for i in range(1, len(parts))):
            return True
    return False


def _safe(rel: Any) -> bool:
    """A relative path of a file inside the folder: no absolute path, no '..', no empty or
    '.' part (which would name the folder itself)."""
    if not isinstance(rel, str) or rel == '' or os.path.isabs(rel):
        return False
    parts = rel.replace('\\', '/').split('/')
    return all(part not in ('', '.', '..') for part in parts)


class DirAssembler:
    """Collects chunks and writes each version's folder under ``cache_dir`` once it is whole.

    Args:
        cache_dir: where ``v<N>/`` folders are written (created if missing).
        keep: complete versions kept on disk (older ones are deleted).
    """

    def __init__(self, cache_dir: str, keep: int = 3):
        self.cache_dir = os.path.abspath(cache_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.keep = max(1, int(keep))
        self.latest = 0  # newest complete version
        self.rejected = 0
        self._parts: Dict[int, Dict[str, Dict[str, Any]]] = {}

    def path(self, version: int) -> str:
        """Where version ``version`` is (or will be) written."""
        return os.path.join(self.cache_dir, f'v{int(version):04d}')

    def add(self, header: Dict[str, Any], payload: bytes) -> Optional[str]:
        """Take one chunk.

        Returns:
            The folder of the version this chunk completed, else None.

        Raises:
            TransferRejected: the chunk contradicts the others of its file, or the file it
                completes does not match its sha256 or size (that file's chunks are dropped), or
                the version is older than one already complete. Counted in ``rejected``.
        """
        try:
            return self._add(header, payload)
        except TransferRejected:
            self.rejected += 1
            raise

    def _add(self, header: Dict[str, Any], payload: bytes) -> Optional[str]:
        version, rel = header['version'], header['file']
        if version <= self.latest:
            if version == self.latest:
                return None  # a resent chunk of the version we have: nothing to do
            raise TransferRejected(f'chunk of v{version}: v{self.latest} is already complete')
        parts = self._parts.setdefault(version, {})
        entry = parts.get(rel)
        key = (header['chunks'], header['size'], header['sha256'], tuple(header['files']))
        if entry is None:
            entry = parts[rel] = {'key': key, 'chunks': {}, 'files': list(header['files'])}
        elif entry['key'] != key:
            del parts[rel]
            raise TransferRejected(f'v{version} {rel}: chunk {header["chunk"]} disagrees with '
                                   'the chunks before it (dropped them all)')
        entry['chunks'][header['chunk']] = bytes(payload)
        if len(entry['chunks']) == header['chunks'] and 'data' not in entry:
            data = b''.join(entry['chunks'][i] for i in range(header['chunks']))
            if len(data) != header['size'] or hashlib.sha256(data).hexdigest() != header['sha256']:
                del parts[rel]
                raise TransferRejected(f'v{version} {rel}: {len(data)} bytes with another '
                                       f'sha256 than announced ({header["size"]} bytes, '
                                       f'{header["sha256"][:12]}...): dropped')
            entry['data'] = data
            entry['chunks'] = {}
        files = entry['files']
        if all(f in parts and 'data' in parts[f] for f in files):
            return self._write(version, {f: parts[f]['data'] for f in files})
        return None

    def _write(self, version: int, files: Dict[str, bytes]) -> str:
        final = self.path(version)
        tmp = final + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, data in files.items():
            target = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, 'wb') as f:
                f.write(data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.latest = version
        for v in [v for v in self._parts if v <= version]:
            del self._parts[v]
        done = sorted(int(d[1:]) for d in os.listdir(self.cache_dir)
                      if d.startswith('v') and d[1:].isdigit())
        for v in done[:-self.keep]:
            shutil.rmtree(self.path(v), ignore_errors=True)
        return final
