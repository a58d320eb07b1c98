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
"""The recipe on a physical arm: no twin. State and commands go through ros2_control.

The arm's driver and ros2_control bring-up (joint_state_broadcaster and a
forward_command_controller/ForwardCommandController on velocity interfaces named
``controller_name`` in the profile) run separately; an object tracker publishes the puck on
``topics.puck_pose``. Episodes start through ``recipe.reset_service``: a std_srvs/Trigger that
drives the arm home at limited joint speed and returns once the operator has placed the puck.

    ros2 launch mbrl_robot real_arm.launch.py profile:=real_arm
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('mbrl_robot')
    profile = LaunchConfiguration('profile')
    run_dir = LaunchConfiguration('run_dir')
    device = LaunchConfiguration('device')
    params = PathJoinSubstitution([share, 'config', [profile, '.yaml']])

    def node(executable, name, extra=None, condition=None):
        overrides = {'run_dir': run_dir, 'device': device, 'use_sim_time': False}
        overrides.update(extra or {})
        return Node(package='mbrl_robot', executable=executable, name=name, output='screen',
                    parameters=[params, overrides], emulate_tty=True, condition=condition)

    return LaunchDescription([
        DeclareLaunchArgument('profile', default_value='real_arm',
                              description='config/<profile>.yaml for the physical arm'),
        DeclareLaunchArgument('run_dir', default_value='runs/real_arm',
                              description='where buffer, models, summary and report are written'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='planner and trainer device: auto, cpu or cuda'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='also start the frame tree (world -> iiwa_base from '
                                          'monitor.base_frame), robot_state_publisher, rviz2 '
                                          'and rqt'),
        DeclareLaunchArgument('live', default_value='false',
                              description='also start the monitor node: the Foxglove live '
                                          'view on ws://127.0.0.1:8765 (monitor.port)'),
        node('buffer_node', 'buffer', {'data_dir': PathJoinSubstitution([run_dir, 'buffer'])}),
        node('trainer_node', 'trainer',
             {'checkpoint_dir': PathJoinSubstitution([run_dir, 'models'])}),
        node('controller_node', 'controller',
             {'model_cache_dir': PathJoinSubstitution([run_dir, 'controller_models']),
              'outbox_dir': PathJoinSubstitution([run_dir, 'controller_outbox'])}),
        node('recipe_node', 'recipe'),
        node('monitor_node', 'monitor', condition=IfCondition(LaunchConfiguration('live'))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'monitor.launch.py')),
            launch_arguments={'use_sim_time': 'false', 'profile': profile}.items(),
            condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
