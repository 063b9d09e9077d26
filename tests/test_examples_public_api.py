"""The examples that teach the core use pyg_ple's public API only, and the TU example trains end to end."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyg_ple

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('PYG_PLE_DATA', REPO.parent / 'shared' / 'data'))
HAS_MUTAG = any((DATA / sub / 'MUTAG' / 'raw').is_dir() for sub in ('TUDataset', '.'))
CORE_EXAMPLES = ['attention_graph.py', 'tu_laplacian_transformer.py']


def _pyg_ple_imports(path: Path) -> list[tuple[str, list[str]]]:
    imports = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'pyg_ple':
            imports.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            imports += [(alias.name, []) for alias in node.names if alias.name.split('.')[0] == 'pyg_ple']
    return imports


@pytest.mark.parametrize('name', CORE_EXAMPLES)
def test_core_examples_import_public_names_only(name):
    imports = _pyg_ple_imports(REPO / 'examples' / name)
    assert imports, f'{name} does not use pyg_ple'
    for module, names in imports:
        assert module == 'pyg_ple', f'{name} imports {module}, not the public API'
        assert set(names) <= set(pyg_ple.__all__), f'{name} imports non-public {set(names) - set(pyg_ple.__all__)}'


def test_tu_example_is_one_short_file():
    assert len((REPO / 'examples' / 'tu_laplacian_transformer.py').read_text().splitlines()) < 150


@pytest.mark.slow
def test_tu_example_needs_a_root():
    env = {k: v for k, v in os.environ.items() if k != 'PYG_PLE_DATA'}
    env['PYTHONPATH'] = str(Path(pyg_ple.__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, str(REPO / 'examples' / 'tu_laplacian_transformer.py')],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and '--root DATA' in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MUTAG, reason='MUTAG is not under $PYG_PLE_DATA')
def test_tu_example_trains_on_mutag_without_writing_to_the_data_folder(tmp_path):
    before = sorted(p.relative_to(DATA) for p in DATA.rglob('*') if 'MUTAG' in p.parts)
    env = {**os.environ, 'PYTHONPATH': str(Path(pyg_ple.__file__).resolve().parents[1]), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, str(REPO / 'examples' / 'tu_laplacian_transformer.py'), '--root',
                           str(DATA), '--cache', str(tmp_path), '--epochs', '2', '--hidden', '8', '--layers', '1',
                           '--heads', '2'], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    epochs = re.findall(r'^Epoch: (\d+), Loss: ([\d.]+), Val: ([\d.]+), Test: ([\d.]+)$', proc.stdout, re.M)
    assert [int(e[0]) for e in epochs] == [1, 2]
    assert all(0.0 <= float(v) <= 1.0 for e in epochs for v in e[2:])
    assert 'MUTAG: 188 graphs' in proc.stdout and 'Best validation accuracy' in proc.stdout
    assert (tmp_path / 'MUTAG' / 'processed').is_dir()  # processed files went to --cache
    assert sorted(p.relative_to(DATA) for p in DATA.rglob('*') if 'MUTAG' in p.parts) == before
