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
"""A sim-time timer under rclpy's executors when /clock messages come back to back, JSON lines.

Why the lockstep controller ticks on fresh states and not on its control timer: a child process
publishes ``/clock`` one period (50 ms of sim time) at a time, ``--periods`` times, either once
per period or twice back to back (the second 1 us later); the node here runs a 50 ms timer on
sim time under the EventsExecutor (what the nodes spin) or the SingleThreadedExecutor. One line
per case: timer calls, extra calls in a period already called, periods skipped between the first
and last call (the first periods can fall before discovery: not counted).

Measured on the 2-core machine (rclpy 9.1.2, Kilted): EventsExecutor with bursts 1-2 extra
calls and as many skipped periods in 60, none without bursts; SingleThreadedExecutor none.

Usage::

    python benchmarks/sim_time_timer.py [--periods 60] [--repeats 2]

Run it alone, with its own ``ROS_DOMAIN_ID`` (it publishes ``/clock``).
"""

import argparse
import json
import subprocess
import sys
import time

PERIOD_NS = 50_000_000
T0_NS = 1_000_000_000


def publish(periods: int, burst: bool) -> None:
    """The child: ``/clock`` one period at a time (30 ms of wall time apart)."""
    import rclpy
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock
    rclpy.init()
    pub = rclpy.create_node('sim_time_timer_clock').create_publisher(Clock, '/clock', 100)

    def send(ns):
        pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))
    time.sleep(2.0)  # discovery
    t = T0_NS
    send(t)
    time.sleep(0.3)
    for _ in range(periods):
        t += PERIOD_NS
        send(t)
        if burst:
            send(t + 1000)
        time.sleep(0.03)
    time.sleep(0.5)


def measure(executor: str, burst: bool, periods: int) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor
    from rclpy.parameter import Parameter
    rclpy.init()
    node = rclpy.create_node('sim_time_timer',
                             parameter_overrides=[Parameter('use_sim_time', value=True)])
    calls = []
    node.create_timer(PERIOD_NS * 1e-9, lambda: calls.append(node.get_clock().now().nanoseconds))
    ex = {'events': EventsExecutor, 'single': SingleThreadedExecutor}[executor]()
    ex.add_node(node)
    child = subprocess.Popen([sys.executable, __file__, '--child', str(periods), str(int(burst))])
    end = time.monotonic() + periods * 0.1 + 10
    while time.monotonic() < end and child.poll() is None:
        ex.spin_once(timeout_sec=0.05)
    child.kill()
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    idx = [(c - T0_NS + 1000) // PERIOD_NS for c in calls if c > T0_NS]
    span = max(idx) - min(idx) + 1 if idx else 0
    return {'executor': executor, 'burst': burst, 'periods': periods, 'calls': len(idx),
            'extra_calls': len(idx) - len(set(idx)), 'skipped_periods': span - len(set(idx))}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == '--child':
        publish(int(sys.argv[2]), sys.argv[3] == '1')
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--periods', type=int, default=60)
    ap.add_argument('--repeats', type=int, default=2)
    args = ap.parse_args()
    for executor in ('events', 'single'):
        for burst in (False, True):
            for _ in range(args.repeats):
                print(json.dumps(measure(executor, burst, args.periods)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
