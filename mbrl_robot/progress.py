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
"""The runner's progress display: phase, episode k/n, success so far and ETA from summary.json.

On a terminal one status line stays at the bottom, redrawn in place, with the echoed node lines
scrolling above it; when stdout is not a TTY (CI, a pipe) it degrades to one plain
``progress: ...`` line per finished phase. ROS-free: it reads the recipe's ``summary.json``.
"""

import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO

CLEAR_LINE = '\r\033[K'


def progress_line(summary: Dict[str, Any], phases: List[Dict[str, Any]], elapsed_s: float,
                  start_position: int = 0) -> str:
    """One line: phase k/n and its stage, episode k/n, success so far, elapsed and ETA.

    Args:
        summary: the recipe's summary.json (``episodes``, ``trainings``).
        phases: the recipe's phases (``core.algorithms.mpc_recipe.build_phases``).
        elapsed_s: wall time of this session.
        start_position: phases already done when this session started (a resumed run).
    """
    results = summary.get('episodes', [])
    position = len(results) + len(summary.get('trainings', []))
    total = len(phases)
    current = phases[position] if position < total else None
    what = 'done' if current is None else (
        current.get('stage', 'train') + (f' (iteration {current["iteration"]})'
                                         if current['kind'] == 'train' else ''))
    n_episodes = sum(1 for ph in phases if ph['kind'] == 'episode')
    evals = [r for r in results if r['stage'].startswith('eval')]
    scored, label = (evals, 'held-out') if evals else (results, 'so far')
    wins = sum(bool(r['success']) for r in scored)
    success = (f'success {wins}/{len(scored)} {label} ({100.0 * wins / len(scored):.0f}%)'
               if scored else 'success -')
    done_here = position - start_position
    eta = (f'ETA {(total - position) * elapsed_s / done_here / 60:.1f} min'
           if done_here > 0 and current is not None else 'ETA -')
    return (f'phase {min(position + 1, total)}/{total} {what} | episode {len(results)}/'
            f'{n_episodes} | {success} | elapsed {elapsed_s / 60:.1f} min, {eta}')


class ProgressDisplay:
    """Shows the run's progress while the graph runs (see the module docstring).

    Use ``display.write`` for every other line printed meanwhile (it is a stream: it can stand in
    for ``sys.stdout``), so a terminal's status line is cleared first and redrawn after.

    Args:
        summary_path: the recipe's summary.json (may not exist yet).
        phases: the recipe's phases.
        stream: where to write (default: the process's stdout at construction).
        tty: force terminal mode on or off (default: ``stream.isatty()``).
        period_s: how often the status is refreshed.
    """

    def __init__(self, summary_path: str, phases: List[Dict[str, Any]],
                 stream: Optional[TextIO] = None, tty: Optional[bool] = None,
                 period_s: float = 1.0):
        self.summary_path = summary_path
        self.phases = phases
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.period_s = period_s
        self.t0 = time.monotonic()
        self.start_position: Optional[int] = None
        self._status = ''
        self._last_plain = None
        self._mtime = None
        self._summary: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> 'ProgressDisplay':
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            mtime = os.stat(self.summary_path).st_mtime_ns
            if mtime != self._mtime:
                with open(self.summary_path) as f:
                    self._summary = json.load(f)
                self._mtime = mtime
        except (OSError, ValueError):
            pass  # not written yet, or being replaced: keep the last one
        if self.start_position is None:
            self.start_position = (len(self._summary.get('episodes', []))
                                   + len(self._summary.get('trainings', [])))

    def refresh(self) -> None:
        """Read summary.json and redraw the status (terminal) or print a plain line (else)."""
        self._read()
        line = progress_line(self._summary, self.phases, time.monotonic() - self.t0,
                             self.start_position or 0)
        with self._lock:
            if self.tty:
                self._status = line
                self.stream.write(CLEAR_LINE + line)
            else:
                key = line.split(' | elapsed')[0]
                if key != self._last_plain:
                    self._last_plain = key
                    self.stream.write(f'progress: {line}\n')
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.refresh()

    def write(self, text: str) -> int:
        """Print other output above the status line."""
        with self._lock:
            if self.tty and self._status:
                self.stream.write(CLEAR_LINE + text)
                if text.endswith('\n'):
                    self.stream.write(self._status)
            else:
                self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.tty

    def close(self) -> None:
        """Stop refreshing; the last status stays as a finished line."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.refresh()
        if self.tty:
            with self._lock:
                self.stream.write('\n')
                self.stream.flush()
