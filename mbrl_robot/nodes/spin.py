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
"""

import signal
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(make_node: Callable[[], Node], args: Optional[List[str]] = None,
             threads: int = 1, until: Optional[Callable[[Node], bool]] = None,
             events: bool = False) -> Optional[Node]:
    """Create the node, spin it until Ctrl-C, SIGTERM or ``until(node)``, then destroy it.
    Returns the (destroyed) node, for what it ended with; None if it was never made.

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
    node = None
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            node = make_node()
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
    return node
