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
"""Watch a run: robot_state_publisher with the arm URDF, rviz2 and rqt (plots, diagnostics).

    ros2 launch mbrl_robot monitor.launch.py
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('mbrl_robot')
    with open(os.path.join(share, 'urdf', 'iiwa7_pusher.urdf')) as f:
        robot_description = f.read()
    use_sim_time = LaunchConfiguration('use_sim_time')
    return LaunchDescription([
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='follow the twin /clock'),
        DeclareLaunchArgument('rqt', default_value='true',
                              description='also open rqt (plot distance, loss, diagnostics)'),
        Node(package='robot_state_publisher', executable='robot_state_publisher',
             name='robot_state_publisher', output='screen',
             parameters=[{'robot_description': robot_description,
                          'use_sim_time': use_sim_time}]),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', os.path.join(share, 'config', 'mbrl.rviz')],
             parameters=[{'use_sim_time': use_sim_time}]),
        Node(package='rqt_gui', executable='rqt_gui', name='rqt', output='screen',
             condition=IfCondition(LaunchConfiguration('rqt'))),
    ])
