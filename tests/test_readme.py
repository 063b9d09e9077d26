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


def test_the_long_range_figures_are_those_of_the_results_files():
    """The README's Peptides-func and HIV rows: every test figure is the results CSV's mean, written as the table
    writes it, and a model with fewer seeds than the others says how many."""
    import csv
    columns = {'Laplacian transformer': ('laplacian', 'native+full'), 'GCN': ('gcn', ''), 'GINE': ('gin', ''),
               'GatedGCN': ('gatedgcn', ''), 'GPS': ('gps', ''), 'standard heads': ('transformer', 'native+full'),
               'ple-gps': ('ple-gps', '')}
    lines = README.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('| Peptides-func (AP) |'))
    header = lines[first - 2]
    names = [c.strip() for c in header.strip('|').split('|')][1:-1]
    assert set(names) == set(columns)
    for label, stem, digits in (('Peptides-func (AP)', 'peptides_func', 4), ('HIV (ROC-AUC, %)', 'molhiv', 2)):
        line = next(line for line in lines if line.startswith(f'| {label} |'))
        cells = [c.strip().strip('*') for c in line.strip('|').split('|')][1:-1]
        with open(REPO / 'benchmarks' / 'results' / f'{stem}.csv', newline='') as f:
            rows = {(r['model'], r['attention']): r for r in csv.DictReader(f)}
        for name, cell in zip(names, cells):
            row = rows[columns[name]]
            figure = f"{float(row['test_mean']):.{digits}f}"
            seeds = int(row['seeds'])
            assert cell == (figure if seeds == 3 else f'{figure} ({seeds} seeds)'), (label, name)
