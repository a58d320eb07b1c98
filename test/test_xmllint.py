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
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_format3_and_version_matches_setup():
    root = ET.parse(os.path.join(ROOT, 'package.xml')).getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'mbrl_robot'
    assert root.find('export/build_type').text == 'ament_python'
    import mbrl_robot
    assert root.findtext('version') == mbrl_robot.__version__


@pytest.mark.linter
@pytest.mark.xmllint
def test_urdf_files_are_well_formed():
    files = glob.glob(os.path.join(ROOT, 'urdf', '*.urdf'))
    assert files
    for f in files:
        ET.parse(f)
