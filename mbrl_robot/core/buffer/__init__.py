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
"""Transition buffer: exact (s, a, r, s') from executed rows, stored crash-safe in SQLite."""

from mbrl_robot.core.buffer.assembler import (HEADER, puck_distance_reward, RowRejected,
                                              task_reward, Transition, TransitionAssembler)
from mbrl_robot.core.buffer.reliable import ReliableIngest, RowGate, RowSpool, UnackedRows
from mbrl_robot.core.buffer.storage import TransitionRecords, TransitionStore

__all__ = ['HEADER', 'ReliableIngest', 'RowGate', 'RowRejected', 'RowSpool', 'Transition',
           'TransitionAssembler', 'TransitionRecords', 'TransitionStore', 'UnackedRows',
           'puck_distance_reward', 'task_reward']
