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
"""Draw the live view of a run from what a Foxglove WebSocket client decodes (docs/live_view.png).

Starts ``mbrl_run --live`` with the given arguments, watches the whole run with
``mbrl_robot/live_client.py`` (every channel) and draws the scene of the plan with the longest
predicted paths, with the plots (``live_client.render``). No Foxglove app is needed.

Usage::

    python scripts/render_live_view.py docs/live_view.png -- --profile ci_smoke [mbrl_run args]
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys

from mbrl_robot import live_client


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('png')
    ap.add_argument('--port', type=int, default=None, help='default: a random one')
    ap.add_argument('run_args', nargs=argparse.REMAINDER, help='-- then mbrl_run arguments')
    args = ap.parse_args(argv)
    port = args.port or random.randint(20000, 40000)
    run_args = [a for a in args.run_args if a != '--']
    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get('ROS_DOMAIN_ID',
                                                        str(random.randint(100, 199))),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    runner = subprocess.Popen([sys.executable, '-m', 'mbrl_robot.runner', '--live',
                               '--no-progress', '--set', f'monitor.port={port}'] + run_args,
                              env=env)
    session = asyncio.run(live_client.collect(f'ws://127.0.0.1:{port}', seconds=24 * 3600.0,
                                              connect_timeout_s=120.0))
    runner.wait()
    counts = {t: len(m) for t, m in sorted(session.messages.items())}
    print(f'decoded: {counts}', flush=True)
    print(live_client.render(session, args.png))
    return runner.returncode


if __name__ == '__main__':
    sys.exit(main())
