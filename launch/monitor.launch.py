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
"""Watch a run with ROS tools: the frame tree, rviz2 and rqt (plots, diagnostics).

Publishes one tree: ``world`` -> ``iiwa_base`` (a static transform with the profile's
``monitor.base_frame`` values: the twin's base is at the world origin, set the real arm's there)
-> every link to ``tool_tip`` (robot_state_publisher from ``joint_states``); the puck, the target
and the controller's markers are in ``world``. rqt_plot shows distance, disagreement, plan
latency and the model's loss, rqt_runtime_monitor the ``/diagnostics``.

    ros2 launch mbrl_robot monitor.launch.py profile:=cpu
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# rqt_plot topics: the controller's per-tick values, plan latency and [epoch, train, val] loss.
PLOTS = ['/controller/distance_to_target/data', '/controller/disagreement/data',
         '/controller/plan_time_ms/data', '/trainer/loss/data[1]', '/trainer/loss/data[2]']


def generate_launch_description():
    share = get_package_share_directory('mbrl_robot')
    with open(os.path.join(share, 'urdf', 'iiwa7_pusher.urdf')) as f:
        robot_description = f.read()
    use_sim_time = LaunchConfiguration('use_sim_time')
    rqt = IfCondition(LaunchConfiguration('rqt'))

    def base_transform(context):
        # Read here, not at import: the profile is a launch argument.
        from mbrl_robot.frames import static_transform_args
        profile = LaunchConfiguration('profile').perform(context)
        return [Node(package='tf2_ros', executable='static_transform_publisher',
                     name='world_to_base', output='screen',
                     arguments=static_transform_args(profile))]

    return LaunchDescription([
        DeclareLaunchArgument('profile', default_value='cpu',
                              description='config/<profile>.yaml: monitor.base_frame places '
                                          'the arm in world'),
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='follow the twin /clock (false for the real arm)'),
        DeclareLaunchArgument('rqt', default_value='true',
                              description='also open rqt_plot and rqt_runtime_monitor'),
        OpaqueFunction(function=base_transform),
        Node(package='robot_state_publisher', executable='robot_state_publisher',
             name='robot_state_publisher', output='screen',
             parameters=[{'robot_description': robot_description,
                          'use_sim_time': use_sim_time}]),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', os.path.join(share, 'config', 'mbrl.rviz')],
             parameters=[{'use_sim_time': use_sim_time}]),
        Node(package='rqt_plot', executable='rqt_plot', name='rqt_plot', output='screen',
             arguments=PLOTS, parameters=[{'use_sim_time': use_sim_time}], condition=rqt),
        Node(package='rqt_runtime_monitor', executable='rqt_runtime_monitor',
             name='rqt_runtime_monitor', output='screen', condition=rqt),
    ])
