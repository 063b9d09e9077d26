"""The README is a short landing page whose example runs as written, whose test command is the one CI runs, and
whose links resolve; the screening log's entries that the repository cites exist."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
TEST_COMMAND = 'python -m pytest tests'


def test_readme_python_blocks_run():
    blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
    assert blocks, 'the README has no Python example'
    for block in blocks:
        exec(compile(block, str(README), 'exec'), {})


def test_readme_is_a_short_landing_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    tour = re.search(r'## Quick tour\n\n```python\n(.*?)```', text, re.S)
    assert tour and len(tour.group(1).splitlines()) <= 25


def test_readme_test_command_runs_the_whole_suite_as_ci_does():
    bash = '\n'.join(re.findall(r'```bash\n(.*?)```', README.read_text(), re.S))
    commands = [line.split('#')[0].strip() for line in bash.splitlines()]
    assert TEST_COMMAND in commands  # no -m filter, no path beyond tests/
    ci = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()]
    assert TEST_COMMAND in ci


def test_readme_links_point_at_files_in_the_repository():
    links = re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', README.read_text())
    local = [link for link in links if '://' not in link]
    assert local, 'the README links no file'
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing


def test_every_cited_screening_log_entry_exists():
    log = (REPO / 'benchmarks' / 'screening_log.md').read_text()
    anchors = set(re.findall(r'^<a id="([\w-]+)"></a>$', log, re.M))
    cited = set()
    for folder in ('benchmarks', 'docs', 'pyg_ple', 'tests', 'examples'):
        for path in (REPO / folder).rglob('*'):
            if path.suffix in ('.md', '.py', '.rst') and path.is_file():
                cited |= set(re.findall(r'screening_log\.md#([a-z0-9_-]+)', path.read_text(errors='replace')))
    cited |= set(re.findall(r'screening_log\.md#([a-z0-9_-]+)', README.read_text()))
    assert cited, 'nothing cites the screening log'
    assert cited <= anchors, sorted(cited - anchors)
    assert not list((REPO / 'benchmarks').glob('*_notes.md')), 'a notes file outside the log'
