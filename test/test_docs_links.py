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
"""The README and the pages under docs/ point at things that exist: every relative link (and its
``#anchor``, as GitHub makes it from a heading) and every repository file they name in
backticks (``benchmarks/x.py``, ``docs/results/{a,b}.jsonl``)."""

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').rglob('*.md'))
FILE_REF = re.compile(r'`((?:benchmarks|scripts|config|test|mbrl_robot|docs|launch|urdf)/'
                      r'[A-Za-z0-9_./{},-]+\.(?:py|sh|yaml|json|jsonl|md|png|urdf))[`: ]')


def prose(text: str):
    """The lines outside fenced code blocks."""
    fenced = False
    for line in text.split('\n'):
        if line.startswith('```'):
            fenced = not fenced
        elif not fenced:
            yield line


def anchors(path: Path) -> set:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    return {re.sub(r'[^\w\- ]', '', line.lstrip('#').strip().lower()).replace(' ', '-')
            for line in prose(path.read_text()) if line.startswith('#')}


def expand(ref: str):
    """``a/{x,y}.jsonl`` -> ``a/x.jsonl``, ``a/y.jsonl`` (shell brace expansion)."""
    parts = re.split(r'\{([^}]*)\}', ref)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(c) for c in itertools.product(*choices)]


def broken(page: Path):
    text = '\n'.join(prose(page.read_text()))
    for link in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:', link):
            continue
        target, _, anchor = link.partition('#')
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            yield f'{link}: no such file'
        elif anchor and anchor not in anchors(path):
            yield f'{link}: no heading makes #{anchor}'
    for ref in FILE_REF.findall(text + '\n'):
        for name in expand(ref):
            if not (ROOT / name).exists():
                yield f'`{name}`: no such file'


@pytest.mark.parametrize('page', PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_and_named_files_exist(page):
    assert not list(broken(page))


def test_the_check_finds_what_is_broken(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# A title\n\n[ok](#a-title) [bad](#nothing) [gone](missing.md)\n'
                    '`docs/results/{nope,nor}.jsonl` `README.md`\n```\n[in code](x.md)\n```\n')
    assert sorted(broken(page)) == sorted([
        '#nothing: no heading makes #nothing', 'missing.md: no such file',
        '`docs/results/nope.jsonl`: no such file', '`docs/results/nor.jsonl`: no such file'])
