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

import glob
import os
import re

from setuptools import find_packages, setup

package_name = 'mbrl_robot'


def _version() -> str:
    # package.xml is the one place the version lives.
    with open(os.path.join(os.path.dirname(__file__), 'package.xml')) as f:
        return re.search(r'<version>([^<]+)</version>', f.read()).group(1)


setup(
    name=package_name,
    version=_version(),
    packages=find_packages(exclude=['test', 'test.*']),
    # The parameter schema, read by mbrl_robot.config next to the package.
    package_data={package_name: ['params/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        (os.path.join('share', package_name, 'launch'), glob.glob('launch/*.launch.py')),
        (os.path.join('share', package_name, 'config'), glob.glob('config/*')),
        (os.path.join('share', package_name, 'params'), glob.glob('mbrl_robot/params/*.yaml')),
        (os.path.join('share', package_name, 'urdf'), glob.glob('urdf/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='mbrl_robot maintainers',
    maintainer_email='maintainers@mbrl-robot.dev',
    description='Model-based RL for a 7-DOF pushing arm on ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'twin_node = mbrl_robot.nodes.twin:main',
            'buffer_node = mbrl_robot.nodes.buffer:main',
            'trainer_node = mbrl_robot.nodes.trainer:main',
            'controller_node = mbrl_robot.nodes.controller:main',
            'recipe_node = mbrl_robot.nodes.recipe:main',
            'monitor_node = mbrl_robot.nodes.monitor:main',
            'mbrl_run = mbrl_robot.runner:main',
        ],
    },
)
