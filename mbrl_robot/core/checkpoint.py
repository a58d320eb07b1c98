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
"""Checkpoint directories shared by models and policies: weights + JSON metadata with a checksum.

Written atomically (temporaries renamed, the JSON last, so a reader never sees a checksum that
does not match the weights); read with clear errors for every way a file can be missing,
truncated, corrupt or from another save. A versioned checkpoint directory is built under a
temporary name and renamed into place once complete (:func:`publish_dir`), so a process killed
half-way leaves ``v0003.tmp`` behind, never a ``v0003`` without its announcement.
"""

import hashlib
import io
import json
import os
from pathlib import Path
import shutil
from typing import Any, Dict, Sequence, Tuple, Union

import torch


def save_checkpoint(directory: Union[str, os.PathLike], weights_file: str, meta_file: str,
                    module: torch.nn.Module, meta: Dict[str, Any]) -> str:
    """Write ``module``'s state dict and ``meta`` (+ its ``sha256``); returns the sha256."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    meta = {**meta, 'sha256': sha}
    for name, payload in ((weights_file, data), (meta_file, json.dumps(meta, indent=1).encode())):
        tmp = d / (name + '.tmp')
        with open(tmp, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / name)
    return sha


def write_json(path: Union[str, os.PathLike], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: temporary file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_dir(tmp: Union[str, os.PathLike], final: Union[str, os.PathLike]) -> None:
    """Rename the complete directory ``tmp`` to ``final`` (replacing a stale one) and fsync the
    parent, so ``final`` appears whole or not at all, even across a power cut."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(directory: Union[str, os.PathLike], weights_file: str, meta_file: str,
                    format_version: int, required: Sequence[str], expected: Dict[str, Any],
                    kind: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], Path, Path]:
    """Read and verify a checkpoint directory.

    Args:
        directory: the checkpoint directory.
        weights_file: name of the state-dict file.
        meta_file: name of the JSON metadata file.
        format_version: the only ``format_version`` this code reads.
        required: metadata keys that must be present (``sha256`` is always checked).
        expected: metadata values the caller requires (None values are not checked).
        kind: 'model' or 'policy', for messages.

    Returns:
        ``(meta, state_dict, meta_path, weights_path)``.

    Raises:
        FileNotFoundError: the directory or a file is missing.
        ValueError: bad JSON, wrong format version, missing keys, an expectation not met, a
            checksum mismatch or an unreadable state dict.
    """
    d = Path(directory)
    meta_path, weights_path = d / meta_file, d / weights_file
    if not d.is_dir():
        raise FileNotFoundError(f'{d}: {kind} directory does not exist')
    if not meta_path.is_file():
        raise FileNotFoundError(f'{meta_path}: missing (not a saved {kind} directory?)')
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f'{meta_path}: not valid JSON (corrupt or truncated): {e}') from e
    if not isinstance(meta, dict):
        raise ValueError(f'{meta_path}: expected a JSON object')
    if meta.get('format_version') != format_version:
        raise ValueError(f'{meta_path}: format version {meta.get("format_version")!r}, this '
                         f'code reads version {format_version}')
    missing = [k for k in (*required, 'sha256') if k not in meta]
    if missing:
        raise ValueError(f'{meta_path}: missing keys {missing}')
    for name, want in expected.items():
        if want is not None and meta[name] != want:
            raise ValueError(f'{meta_path}: {name} is {meta[name]!r}, expected {want!r}')
    if not weights_path.is_file():
        raise FileNotFoundError(f'{weights_path}: missing')
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta['sha256']:
        raise ValueError(f'{weights_path}: sha256 does not match {meta_path} '
                         f'(corrupt, truncated or from another save)')
    try:
        state = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: B902 - torch raises several types for a bad archive
        raise ValueError(f'{weights_path}: cannot be read as a checkpoint: {e}') from e
    return meta, state, meta_path, weights_path
