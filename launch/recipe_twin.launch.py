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
"""The pushing recipe on the PyBullet twin: twin, buffer, trainer, controller and recipe nodes.

The same graph as the pip-only ``mbrl_run``; every value comes from ``config/<profile>.yaml``.

    ros2 launch mbrl_robot recipe_twin.launch.py profile:=cpu rviz:=true
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
    use_sim_time = LaunchConfiguration('use_sim_time')
    params = PathJoinSubstitution([share, 'config', [profile, '.yaml']])

    def node(executable, name, extra=None, condition=None):
        overrides = {'run_dir': run_dir, 'device': device}
        if name != 'twin':
            overrides['use_sim_time'] = use_sim_time
        overrides.update(extra or {})
        # A node that dies is started again (README, "Restarting a node"); the recipe is not:
        # it resumes with resume:=true.
        return Node(package='mbrl_robot', executable=executable, name=name, output='screen',
                    parameters=[params, overrides], emulate_tty=True,
                    respawn=name != 'recipe', respawn_delay=2.0, condition=condition)

    return LaunchDescription([
        DeclareLaunchArgument('profile', default_value='cpu',
                              description='config/<profile>.yaml: lecture, cpu or ci_smoke'),
        DeclareLaunchArgument('run_dir', default_value='runs/latest',
                              description='where buffer, models, summary and report are written'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='planner and trainer device: auto, cpu or cuda'),
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='run every node but the twin on the twin /clock'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='also start the frame tree (world -> iiwa_base), '
                                          'robot_state_publisher, rviz2 and rqt'),
        DeclareLaunchArgument('live', default_value='false',
                              description='also start the monitor node: the Foxglove live '
                                          'view on ws://127.0.0.1:8765 (monitor.port)'),
        node('twin_node', 'twin'),
        node('buffer_node', 'buffer',
             {'data_dir': PathJoinSubstitution([run_dir, 'buffer'])}),
        node('trainer_node', 'trainer',
             {'checkpoint_dir': PathJoinSubstitution([run_dir, 'models'])}),
        node('controller_node', 'controller',
             {'model_cache_dir': PathJoinSubstitution([run_dir, 'controller_models'])}),
        node('recipe_node', 'recipe'),
        node('monitor_node', 'monitor', condition=IfCondition(LaunchConfiguration('live'))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'monitor.launch.py')),
            launch_arguments={'use_sim_time': use_sim_time, 'profile': profile}.items(),
            condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
