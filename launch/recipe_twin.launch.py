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
    ros2 launch mbrl_robot recipe_twin.launch.py profile:=cpu arms:=2

``arms:=N`` (N > 1) starts a fleet, as ``mbrl_run --arms N`` does: a twin and a controller per arm
in namespaces ``arm0`` ... (each arm on its twin's ``/clock``, remapped to ``/armK/clock``; the
trainer's model topics absolute), one buffer, trainer and recipe that reach every arm
(``arm_namespaces``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
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

    def node(executable, name, extra=None, condition=None, namespace=None, remappings=None):
        overrides = {'run_dir': run_dir, 'device': device}
        if name != 'twin':
            overrides['use_sim_time'] = use_sim_time
        overrides.update(extra or {})
        # A node that dies is started again (docs/realtime_and_faults.md, "Restarting a
        # node"); the recipe is not: it resumes with resume:=true.
        return Node(package='mbrl_robot', executable=executable, name=name, output='screen',
                    parameters=[params, overrides], emulate_tty=True, namespace=namespace,
                    remappings=remappings, respawn=name != 'recipe', respawn_delay=2.0,
                    condition=condition)

    def graph(context):
        """The nodes: one twin and controller per arm, one buffer, trainer and recipe."""
        n = int(context.perform_substitution(LaunchConfiguration('arms')))
        if n < 1:
            raise ValueError(f'arms:={n}: give at least one arm')
        arms = [f'arm{i}' for i in range(n)] if n > 1 else ['']
        fleet = {'arm_namespaces': arms}
        from mbrl_robot.config import node_params
        topics = node_params(context.perform_substitution(params), 'controller')['topics']
        actions = []
        for arm in arms:
            at = {'namespace': arm, 'remappings': [('/clock', f'/{arm}/clock')]} if arm else {}
            cache = PathJoinSubstitution([run_dir, 'controller_models', arm or '.'])
            outbox = PathJoinSubstitution([run_dir, 'controller_outbox', arm or '.'])
            absolute = ({'topics': {t: '/' + topics[t] for t in
                                    ('model_version', 'model_files', 'policy_version')}}
                        if arm else {})
            actions += [node('twin_node', 'twin', **at),
                        node('controller_node', 'controller',
                             {'model_cache_dir': cache, 'outbox_dir': outbox, **absolute},
                             **at)]
        return actions + [
            node('buffer_node', 'buffer',
                 {'data_dir': PathJoinSubstitution([run_dir, 'buffer']), **fleet}),
            node('trainer_node', 'trainer',
                 {'checkpoint_dir': PathJoinSubstitution([run_dir, 'models'])}),
            node('recipe_node', 'recipe', {**fleet, 'resume': LaunchConfiguration('resume')})]

    return LaunchDescription([
        DeclareLaunchArgument('profile', default_value='cpu',
                              description='config/<profile>.yaml, e.g. cpu, twin_realistic, '
                                          'lecture, ci_smoke'),
        DeclareLaunchArgument('run_dir', default_value='runs/latest',
                              description='where buffer, models, summary and report are written'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='planner and trainer device: auto, cpu or cuda'),
        DeclareLaunchArgument('resume', default_value='false',
                              description='continue the stopped recipe in run_dir from its '
                                          'summary, buffer and last good model'),
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='run every node but the twin on the twin /clock'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='also start the frame tree (world -> iiwa_base), '
                                          'robot_state_publisher, rviz2 and rqt'),
        DeclareLaunchArgument('live', default_value='false',
                              description='also start the monitor node: the Foxglove live '
                                          'view on ws://127.0.0.1:8765 (monitor.port)'),
        DeclareLaunchArgument('arms', default_value='1',
                              description='twin arms feeding one buffer and trainer, each with '
                                          'its twin and controller in namespace armK (> 1: a '
                                          'fleet; the live view then needs monitor.launch.py '
                                          'per arm)'),
        OpaqueFunction(function=graph),
        node('monitor_node', 'monitor', condition=IfCondition(LaunchConfiguration('live'))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'monitor.launch.py')),
            launch_arguments={'use_sim_time': use_sim_time, 'profile': profile}.items(),
            condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
