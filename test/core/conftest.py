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
"""Shared fixtures of the ROS-free core tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Small nets run fastest on one thread; two threads thrash on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def controller_factory():
    """``make(**params)``: the controller's PolicyFactory on the cpu profile (on the CPU), with
    ``params`` replacing top-level controller parameters (``mode``, ``goal_hold``, ...)."""
    from mbrl_robot.config import node_params
    from mbrl_robot.core.control import PolicyFactory
    from mbrl_robot.core.safety import CommandFilter

    def make(**params):
        ctl = {**node_params('cpu', 'controller'), 'device': 'cpu', **params}
        command_filter = CommandFilter.from_params(ctl)
        return PolicyFactory(ctl, command_filter)
    return make
