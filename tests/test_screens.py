"""benchmarks/screens.py: the one-change rows of graph reports collected and averaged."""
import csv

import pytest

from test_paper_scripts import load_script

REPORT = """# Graph classification

## Details

| dataset | model | val acc % | held-out val acc % | val loss | test acc % |
|---|---|---:|---:|---:|---:|
| MUTAG | laplacian | 1.0 → 2.0 | 1.0 → 2.0 | 0.1 → 0.1 | 1.0 → 2.0 |

## One change: wider (--hidden 64)

Each row: ...

| dataset | model | seed | folds | val acc % | held-out val acc % | val loss | test acc % | test change |
|---|---|---:|---:|---:|---:|---:|---:|---:|
| MUTAG | gcn | 0 | 10 | 90.0 → 91.0 | 80.0 → 79.0 | 0.300 → 0.250 | 85.0 → 84.0 | -1.0 |
| MUTAG | laplacian | 0 | 10 | 94.1 → 92.9 | 86.0 → 85.0 | 0.216 → 0.268 | 86.7 → 88.3 | +1.6 |
| MUTAG | laplacian | 1 | 10 | 93.0 → 93.4 | – | 0.209 → 0.260 | 83.0 → 82.0 | -1.0 |

Mean change over the 2 rows with held-out figures: validation accuracy +0.0.

## One change: dropout 0.3

| dataset | model | seed | folds | val acc % | held-out val acc % | val loss | test acc % | test change |
|---|---|---:|---:|---:|---:|---:|---:|---:|
| PROTEINS | laplacian | 0 | 10 | 80.0 → 79.0 | – | 0.5 → 0.5 | 74.0 → 75.0 | +1.0 |
"""


@pytest.fixture()
def screens():
    return load_script('benchmarks/screens.py')


def test_rows_and_means(tmp_path, screens):
    report = tmp_path / 'graph_classification.md'
    report.write_text(REPORT, encoding='utf-8')
    cells = screens.read_report(report, 'r.md')
    # the Details table is not a change; three rows under the first change, one under the second
    assert [(c.change, c.model, c.seed) for c in cells] == [
        ('wider (--hidden 64)', 'gcn', 0), ('wider (--hidden 64)', 'laplacian', 0),
        ('wider (--hidden 64)', 'laplacian', 1), ('dropout 0.3', 'laplacian', 0)]
    assert cells[1].val == pytest.approx(-1.2) and cells[1].heldout == pytest.approx(-1.0)
    assert cells[2].heldout is None and cells[2].test == pytest.approx(-1.0)
    rows, agreement = screens.summarise(cells)
    wider = next(r for r in rows if r['change'].startswith('wider') and r['model'] == 'laplacian')
    assert wider['cells'] == 2 and wider['heldout_cells'] == 1
    assert wider['d_val'] == pytest.approx((-1.2 + 0.4) / 2)
    assert wider['d_heldout'] == pytest.approx(-1.0)
    assert wider['d_test'] == pytest.approx((1.6 - 1.0) / 2)
    lap = next(a for a in agreement if a['model'] == 'laplacian')
    # val down, test up: seed 0 of the first change and the dropout row; no cell moves val and test the same way
    assert lap['cells'] == 3 and lap['val_down_test_up'] == 2
    assert lap['val_sign_agrees'] == 0 and lap['val_moved'] == 3
    assert lap['heldout_sign_agrees'] == 0 and lap['heldout_moved'] == 1


@pytest.mark.slow
def test_writes_tables(tmp_path, screens):
    report = tmp_path / 'graph_classification.md'
    report.write_text(REPORT, encoding='utf-8')
    out = tmp_path / 'out'
    assert screens.main([str(report), '--out', str(out)]) == 0
    md = (out / 'screens.md').read_text(encoding='utf-8')
    assert '| wider (--hidden 64) | `graph_classification.md` | 2 | MUTAG | -0.40 | -1.00 (1) | +0.30 |' in md
    with open(out / 'screens.csv', newline='', encoding='utf-8') as f:
        assert len(list(csv.DictReader(f))) == 3  # (change, model): wider/gcn, wider/laplacian, dropout/laplacian


@pytest.mark.slow
def test_bad_arguments(tmp_path, screens, capsys):
    with pytest.raises(SystemExit) as e:
        screens.main([str(tmp_path / 'missing.md'), '--out', str(tmp_path / 'o')])
    assert e.value.code == 2 and 'not a file' in capsys.readouterr().err
    empty = tmp_path / 'empty.md'
    empty.write_text('# nothing\n', encoding='utf-8')
    with pytest.raises(SystemExit) as e:
        screens.main([str(empty), '--out', str(tmp_path / 'o')])
    assert e.value.code == 2 and 'no "## One change:" rows' in capsys.readouterr().err
