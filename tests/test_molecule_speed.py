"""benchmarks/molecule_speed.py end to end on tiny batches: every model trains a step in its own process and the
results files name the command, the per-model figures and the ratios."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_tiny(models: str, out: Path) -> dict[str, dict[str, str]]:
    """The script on tiny batches and models, one step and one round; its CSV rows by model name."""
    done = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'molecule_speed.py'), '--batch-size', '3',
                           '--hidden', '8', '--heads', '2', '--layers', '1', '--steps', '1', '--rounds', '1',
                           '--models', models, '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {row['name']: row for row in csv.DictReader(open(out / 'molecule_speed.csv'))}


@pytest.mark.slow
def test_molecule_speed_writes_a_row_per_model_with_ratios(tmp_path):
    models = 'gps,laplacian-native,laplacian-full,laplacian-native+full'
    rows = _run_tiny(models, tmp_path)
    assert list(rows) == models.split(',')
    assert float(rows['gps']['vs_gps']) == 1.0 and float(rows['laplacian-native']['vs_native']) == 1.0
    for row in rows.values():
        assert float(row['s_per_step']) > 0 and float(row['peak_gb']) > 0 and int(row['params']) > 0
    assert 'laplacian-full' in rows and rows['laplacian-full']['vs_native'] != ''
    text = (tmp_path / 'molecule_speed.md').read_text()
    assert '--models ' + models in text and 'synthetic' in text


@pytest.mark.slow
def test_molecule_speed_refuses_an_unknown_model():
    done = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'molecule_speed.py'), '--models', 'nope'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and 'unknown nope' in done.stderr


@pytest.mark.slow
def test_molecule_speed_leaves_a_ratio_to_an_unmeasured_model_empty(tmp_path):
    """Without GPS and the bonds-only Laplacian transformer their columns stay empty, in the CSV and the table."""
    rows = _run_tiny('gine,laplacian-full,transformer-native+full', tmp_path)
    assert all(row['vs_gps'] == '' and row['vs_native'] == '' for row in rows.values())
    assert float(rows['laplacian-full']['vs_full']) == 1.0 and rows['transformer-native+full']['vs_full'] == ''
    table = (tmp_path / 'molecule_speed.md').read_text()
    assert 'nan' not in table
    assert [line.split('|')[5:8] for line in table.splitlines() if line.startswith('| laplacian-full ')] == \
        [['  ', '  ', ' 1.00 ']]
