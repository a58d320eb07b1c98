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
"""Where the installed data (config/, urdf/, launch/) lives.

In a colcon install the files sit under share/mbrl_robot (found through the ament index); in a
pip-only checkout (``pip install -e .``) they sit at the repository root beside the package.
"""

import itertools
import os
from typing import Iterator

PACKAGE_NAME = 'mbrl_robot'


def share_dir() -> str:
    """Return the directory holding config/, urdf/ and launch/."""
    source_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(source_root, 'config')):
        return source_root
    try:
        from ament_index_python.packages import get_package_share_directory
        return get_package_share_directory(PACKAGE_NAME)
    except ImportError:  # pragma: no cover - only without ament and outside the checkout
        raise FileNotFoundError(
            'cannot find mbrl_robot data files: not in a source checkout and '
            'ament_index_python is not installed')


def config_path(name: str) -> str:
    """Path of a parameter file: ``name`` itself when it is a file (absolute, or relative to the
    working directory), else ``config/<name>``; ``name`` may omit the ``.yaml`` suffix."""
    if not name.endswith('.yaml'):
        name += '.yaml'
    path = (name if os.path.isabs(name) or os.path.isfile(name)
            else os.path.join(share_dir(), 'config', name))
    if os.path.isdir(path):
        raise IsADirectoryError(f'config file {path} is a folder, not a parameter file')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    return path


def urdf_path(name: str = 'iiwa7_pusher.urdf') -> str:
    """Path of ``urdf/<name>``."""
    path = os.path.join(share_dir(), 'urdf', name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'URDF not found: {path}')
    return path


def record_paths(path: str) -> Iterator[str]:
    """The names a recording asked for at ``path`` may take, in order: ``path`` itself, then
    ``<stem>.1<ext>``, ``<stem>.2<ext>``, ... (``live.mcap``, ``live.1.mcap``, ...)."""
    stem, ext = os.path.splitext(path)
    yield path
    yield from (f'{stem}.{n}{ext}' for n in itertools.count(1))


def free_record_path(path: str) -> str:
    """The first of :func:`record_paths` with nothing there. A recording is never written over
    an earlier one: the same command run twice, or a live view restarted within its run,
    keeps both files."""
    return next(p for p in record_paths(path) if not os.path.lexists(p))


def recording_note(asked: str, path: str) -> str:
    """The words a log line adds for a recording asked at ``asked`` and going to ``path``
    ('' when none was asked)."""
    if not asked:
        return ''
    return f', recording to {path}' + (f' ({asked} is there already: kept)'
                                       if path != asked else '')
