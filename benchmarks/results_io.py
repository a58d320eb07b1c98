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
"""The JSON-lines files the benchmarks write, read back for their ``--table``: a missing or
damaged file, or a line without a figure the table needs, is one line and exit status 2."""

import json
import sys
from typing import Any, Callable, Dict, Iterator, Sequence


def json_lines(paths: Sequence[str]) -> Iterator[Dict[str, Any]]:
    """Every JSON object in ``paths``, in order; blank lines are skipped.

    Raises:
        OSError: a file cannot be read.
        ValueError: a line is not a JSON object (its file and line number named).
    """
    for path in paths:
        with open(path, encoding='utf-8') as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    line = json.loads(text)
                except ValueError as e:
                    raise ValueError(f'{path}:{number}: not a JSON line ({e})') from None
                if not isinstance(line, dict):
                    raise ValueError(f'{path}:{number}: a JSON {type(line).__name__}, not an '
                                     'object')
                yield line


def print_table(table: Callable[[Sequence[str]], str], paths: Sequence[str], prog: str) -> int:
    """Print ``table(paths)``; 0, or 2 with one line on stderr saying what is wrong."""
    try:
        print(table(paths))
    except (OSError, ValueError, KeyError, TypeError) as e:
        what = (f'{e.strerror}: {e.filename}' if isinstance(e, OSError) and e.strerror
                else f'a line without the figure {e}' if isinstance(e, KeyError)
                else str(e))
        print(f'{prog}: --table: {what}', file=sys.stderr)
        return 2
    return 0
