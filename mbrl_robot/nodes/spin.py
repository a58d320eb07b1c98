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
"""How every node of the graph spins: one shutdown path that always gets to ``destroy_node()``.

(Plain nodes, not ROS 2 managed lifecycle nodes: each is ready once constructed.)

rclpy's own SIGINT handler shuts the context down underneath a spinning executor, which then may
die with "context is not valid" before ``destroy_node()`` runs: the controller could not send its
final zero-velocity command, the buffer could not close its store. Here SIGINT and SIGTERM raise
KeyboardInterrupt in the main thread instead; the executor spins in short slices so Python can
deliver it even while sim time stands still; ``destroy_node()`` runs with a valid context.

A node that cannot start on what it was given (a parameter of the wrong type or out of range, a
file it cannot open, a port that is taken: ``ValueError`` or ``OSError`` from its constructor;
arguments rcl rejects, such as a parameter file that is not YAML)
says so in one line on stderr and exits with status 2, without a traceback, whoever started it
(``mbrl_run``, a launch file, ``ros2 run``).
"""

import os
import signal
import sys
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# Between the executable's name and the reason, in the one line of a node that cannot start.
CANNOT_START = ': cannot start: '
CANNOT_START_STATUS = 2  # its exit status


def run_node(make_node: Callable[[], Node], args: Optional[List[str]] = None,
             threads: int = 1, until: Optional[Callable[[Node], bool]] = None,
             events: bool = False) -> Optional[Node]:
    """Create the node, spin it until Ctrl-C, SIGTERM or ``until(node)``, then destroy it.
    Returns the (destroyed) node, for what it ended with; None if it was never made. Exits
    with status 2 and one line on stderr when the constructor rejects its input.

    Args:
        make_node: the node's constructor (called after ``rclpy.init``).
        args: command-line arguments (``--ros-args ...``).
        threads: executor threads; more than one gives a MultiThreadedExecutor.
        until: optional predicate checked between slices; True ends the node.
        events: spin with rclpy's EventsExecutor (C++, single-threaded): the Python executors
            rebuild their wait set on every wake-up, which at 100+ messages a second holds the
            GIL for much of the time and starves a worker thread (the controller's planner).
    """
    # Set both explicitly: a process started in the background inherits SIGINT as ignored, and
    # then Python installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = failed = None
    try:
        try:
            init = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        except RuntimeError as e:  # rcl's RCLError: e.g. a parameter file it cannot parse
            failed = e
            return None
        with init:
            try:
                node = make_node()
            except (ValueError, OSError) as e:
                # The context's shutdown destroys the half-made node (destroy_node copes).
                failed = e
                return None
            if events:
                executor = EventsExecutor()
            elif threads > 1:
                executor = MultiThreadedExecutor(num_threads=threads)
            else:
                executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                while rclpy.ok() and not (until is not None and until(node)):
                    executor.spin_once(timeout_sec=0.1)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if failed is not None:
            # The executable as the user ran it: controller_node, or controller.py under -m.
            name = os.path.basename(sys.argv[0] or 'node').removesuffix('.py')
            print(f'{name}{CANNOT_START}{failed}', file=sys.stderr, flush=True)
            sys.exit(CANNOT_START_STATUS)
    return node
