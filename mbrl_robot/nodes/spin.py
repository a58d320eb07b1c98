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
deliver it even while sim time stands still; ``destroy_node()`` runs with a valid context. One
that comes while a callback runs (a lockstep controller waiting seconds for its plan) ends the
callback and then the node the same way, not as a callback's fatal error with its traceback
(``GuardedNode``).

A node that cannot start on what it was given (a parameter of the wrong type or out of range, a
file it cannot open, a port that is taken: ``ValueError`` or ``OSError`` from its constructor;
arguments rcl rejects, such as a parameter file that is not YAML)
says so in one line on stderr and exits with status 2, without a traceback, whoever started it
(``mbrl_run``, a launch file, ``ros2 run``).
"""

import errno
import functools
import inspect
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# Between the executable's name and the reason, in the one line of a node that cannot start.
CANNOT_START = ': cannot start: '
CANNOT_START_STATUS = 2  # its exit status
# OSErrors of the moment, not of the input (too many open files, out of memory, try again):
# they end the process as any error does, and its supervisor restarts it.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN,
                              errno.EBUSY, errno.EINTR})


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
        except RuntimeError as e:  # rcl's RCLError
            if 'parse' not in str(e):  # not its arguments (a parameter file it cannot parse)
                raise
            failed = e
            return None
        with init:
            try:
                node = make_node()
            except (ValueError, OSError) as e:
                if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
                    raise  # not its input: a restart may find the resource free
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
                    if getattr(node, 'interrupted', False):
                        raise KeyboardInterrupt  # taken inside a callback (GuardedNode)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if failed is not None:
            # The executable as the user ran it: controller_node, or controller.py under -m.
            name = os.path.basename(sys.argv[0] or 'node').removesuffix('.py')
            reason = ' '.join(str(failed).split())  # one line, whatever the message holds
            print(f'{name}{CANNOT_START}{reason}', file=sys.stderr, flush=True)
            sys.exit(CANNOT_START_STATUS)
    return node


class GuardedNode(Node):
    """A node whose subscription and service callbacks a bad message cannot end.

    An exception a message or a request raises in its callback (a value no check foresaw: an
    infinite episode number, a joint state with names but no positions) is caught: one error
    line naming the topic or service, the exception and where it was raised (then at most one
    per topic every ``FAULT_LOG_PERIOD_S``, with the count), the message dropped, the count in
    ``callback_faults``; a service answers ``success: false`` with the reason. The node's own
    checks reject what they foresee with their own words first; this keeps the node, and the
    arm's control loop, alive past the rest.

    Callbacks also run the node's own work (a lockstep controller ticks, a lockstep twin steps
    its physics, on a message). A fault that is the node's, not the message's, repeats on every
    message: after ``FAULT_LIMIT`` faults in a row on one topic, with no message taken between,
    the exception is raised as before and ends the process with its traceback, for its
    supervisor (``mbrl_run``, a launch file's respawn) to restart it. Timers are not guarded.

    Ctrl-C or SIGTERM (KeyboardInterrupt, see :func:`run_node`) raised inside a callback, a
    timer's too, ends that callback and sets ``interrupted``: ``run_node`` then stops the node as
    for one raised between callbacks. rclpy's EventsExecutor would otherwise log it as the
    callback's fatal error, with its traceback, on every Ctrl-C during a long callback.
    """

    FAULT_LOG_PERIOD_S = 5.0
    FAULT_LIMIT = 100

    def __init__(self, *args, **kwargs):
        self.callback_faults: Dict[str, int] = {}
        self._faults_in_a_row: Dict[str, int] = {}
        self._fault_logged: Dict[str, float] = {}
        self._fault_lock = threading.Lock()  # callbacks run on several executor threads
        self.interrupted = False  # Ctrl-C or SIGTERM came inside a callback
        super().__init__(*args, **kwargs)

    def create_subscription(self, msg_type, topic, callback, *args, **kwargs):
        where = f'a message on {self.resolve_topic_name(topic)}'  # its namespace and remaps
        return super().create_subscription(msg_type, topic, self._guarded(callback, where),
                                           *args, **kwargs)

    def create_service(self, srv_type, srv_name, callback, *args, **kwargs):
        where = f'a {self.resolve_service_name(srv_name)} request'
        return super().create_service(srv_type, srv_name,
                                      self._guarded(callback, where, service=True),
                                      *args, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        if inspect.iscoroutinefunction(callback):
            @functools.wraps(callback)  # rclpy reads the signature (TimerInfo) through it
            async def interruptible(*call_args, **call_kwargs):
                try:
                    return await callback(*call_args, **call_kwargs)
                except KeyboardInterrupt:
                    self.interrupted = True
        else:
            @functools.wraps(callback)
            def interruptible(*call_args, **call_kwargs):
                try:
                    return callback(*call_args, **call_kwargs)
                except KeyboardInterrupt:
                    self.interrupted = True
        return super().create_timer(timer_period_sec, interruptible, *args, **kwargs)

    def on_callback_fault(self, where: str, error: BaseException) -> None:
        """Called after a fault is counted and logged (the controller stops the arm)."""

    def _fault(self, where: str, error: BaseException) -> bool:
        """Count and log one fault; True when it is the ``FAULT_LIMIT``-th in a row."""
        now = time.monotonic()
        with self._fault_lock:
            count = self.callback_faults[where] = self.callback_faults.get(where, 0) + 1
            in_a_row = self._faults_in_a_row[where] = self._faults_in_a_row.get(where, 0) + 1
            log = now - self._fault_logged.get(where, -float('inf')) >= self.FAULT_LOG_PERIOD_S
            if log:
                self._fault_logged[where] = now
        if log or in_a_row >= self.FAULT_LIMIT:
            frame = traceback.extract_tb(error.__traceback__)[-1:]
            at = f' at {os.path.basename(frame[0].filename)}:{frame[0].lineno}' if frame else ''
            self.get_logger().error(
                f'dropped {where}: {type(error).__name__}: {error}{at} ({count} so far'
                + (f', {in_a_row} in a row: ending the node' if in_a_row >= self.FAULT_LIMIT
                   else '') + ')')
        self.on_callback_fault(where, error)
        return in_a_row >= self.FAULT_LIMIT

    def _taken(self, where: str) -> None:
        if self._faults_in_a_row.get(where):
            with self._fault_lock:
                self._faults_in_a_row[where] = 0

    def _guarded(self, callback: Callable, where: str, service: bool = False) -> Callable:
        def answer(args, message):
            """None for a message; a request's response, failed with ``message``."""
            response = args[1] if service and len(args) > 1 else None
            if response is not None:
                if hasattr(response, 'success'):
                    response.success = False
                if hasattr(response, 'message'):
                    response.message = message
            return response

        def failed(args, error):
            """The answer to a dropped message or request."""
            if self._fault(where, error):
                raise error
            return answer(args, f'{type(error).__name__}: {error}')

        def interrupted(args):
            """Ctrl-C or SIGTERM inside the callback: the node stops (``run_node``)."""
            self.interrupted = True
            return answer(args, 'interrupted: the node is stopping')

        if inspect.iscoroutinefunction(callback):
            @functools.wraps(callback)
            async def guarded_async(*args):
                try:
                    result = await callback(*args)
                except KeyboardInterrupt:
                    return interrupted(args)
                except Exception as e:  # noqa: B902 - any input-driven failure, see the class
                    return failed(args, e)
                self._taken(where)
                return result
            return guarded_async

        @functools.wraps(callback)
        def guarded(*args):
            try:
                result = callback(*args)
            except KeyboardInterrupt:
                return interrupted(args)
            except Exception as e:  # noqa: B902 - any input-driven failure, see the class
                return failed(args, e)
            self._taken(where)
            return result
        return guarded
