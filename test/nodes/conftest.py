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
"""Shared fixtures of the node tests."""

import os
import random

import pytest


@pytest.fixture
def ros_env(monkeypatch):
    """An isolated DDS domain with localhost discovery, for this process (its rclpy contexts)
    and, through the returned environment, for the node processes it starts."""
    monkeypatch.setenv('ROS_DOMAIN_ID', str(random.randint(100, 199)))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    return dict(os.environ)
