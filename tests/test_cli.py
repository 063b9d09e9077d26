"""The pyg-ple command line end to end on a tiny budget (digits subset, 1 epoch, 2 folds)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyg_ple import __version__
from pyg_ple.bench.cli import main

TINY = ['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--hidden', '8', '--layers', '1',
        '--heads', '2', '--no-progress', '--checkpoint-every', '1']


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--version'])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert 'bench' in capsys.readouterr().out


def test_bench_end_to_end_writes_all_result_files_and_resumes(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(TINY + ['--models', 'gcn,laplacian,laplacian-tokens', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ('gcn', 'laplacian', 'laplacian-tokens'):
        assert name in printed
    assert '±' in printed and 's/epoch' in printed
    for suffix in ('json', 'csv', 'md', 'png'):
        assert (out / f'results.{suffix}').stat().st_size > 0
    assert (out / 'results.png').read_bytes()[:4] == b'\x89PNG'
    res = json.loads((out / 'results.json').read_text())
    assert [r['model'] for r in res['results']] == ['gcn', 'laplacian', 'laplacian-tokens']
    assert all(r['folds'] == 2 and 0 <= r['acc_mean'] <= 100 for r in res['results'])
    assert 'pyg-ple bench' in res['command']
    rows = list(csv.DictReader((out / 'results.csv').open()))
    assert len(rows) == 3 and set(rows[0]) >= {'model', 'acc_mean', 'acc_std', 'params', 'sec_per_epoch'}
    md = (out / 'results.md').read_text()
    assert '| gcn |' in md.replace('| digits ', '') or 'gcn' in md
    splits = json.loads((out / 'splits.json').read_text())
    assert splits['n_folds'] == 2 and len(splits['folds']) == 2
    assert sorted(p.name for p in (out / 'models').iterdir()) == sorted(
        f'{m}_fold{k}.pt' for m in ('gcn', 'laplacian', 'laplacian-tokens') for k in (0, 1))
    assert not list((out / 'checkpoints').rglob('*.pt'))  # training checkpoints are dropped once a fold is stored
    assert not [p for p in out.rglob('*.tmp')]

    # Resume: finished folds are not recomputed; a missing one is.
    state = json.loads((out / 'state.json').read_text())
    dropped = state['runs'].pop('laplacian/1')
    (out / 'state.json').write_text(json.dumps(state))
    assert main(TINY + ['--models', 'gcn,laplacian,laplacian-tokens', '--out', str(out), '--resume']) == 0
    new = json.loads((out / 'state.json').read_text())
    for key, rec in state['runs'].items():
        assert new['runs'][key] == rec  # untouched (same timings: not retrained)
    assert new['runs']['laplacian/1']['test_acc'] == dropped['test_acc']  # recomputed, deterministically
    # Resuming with other settings is refused.
    assert pytest.raises(ValueError, main, TINY[:-2] + ['--epochs', '2', '--out', str(out), '--resume',
                                                        '--models', 'gcn'])


def test_interrupted_bench_leaves_no_half_written_file_and_resumes(tmp_path, monkeypatch, capsys):
    from pyg_ple.bench import protocol
    out = tmp_path / 'run'
    real = protocol._train_one
    calls = {'n': 0}

    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(protocol, '_train_one', flaky)
    assert main(TINY + ['--models', 'gcn', '--out', str(out)]) == 130
    assert 'resume' in capsys.readouterr().err
    state = json.loads((out / 'state.json').read_text())
    assert list(state['runs']) == ['gcn/0']
    assert not (out / 'results.json').exists()
    assert not list(out.rglob('*.tmp'))
    monkeypatch.setattr(protocol, '_train_one', real)
    assert main(TINY + ['--models', 'gcn', '--out', str(out), '--resume']) == 0
    assert json.loads((out / 'state.json').read_text())['runs']['gcn/0'] == state['runs']['gcn/0']
    assert json.loads((out / 'results.json').read_text())['results'][0]['folds'] == 2


def test_graph_command_exports_graphml_and_png(tmp_path, capsys):
    import networkx as nx
    out = tmp_path / 'run'
    assert main(TINY + ['--models', 'mixed', '--out', str(out)]) == 0
    capsys.readouterr()
    ckpt = out / 'models' / 'mixed_fold0.pt'
    assert main(['graph', str(ckpt), '--index', '3', '--layer', '0', '--head', '1', '--out', str(tmp_path / 'g')]) == 0
    files = sorted((tmp_path / 'g').iterdir())
    assert [f.suffix for f in files] == ['.graphml', '.png']
    G = nx.read_graphml(files[0])
    assert G.number_of_nodes() > 0 and G.number_of_edges() > 0
    assert all('weight' in d and 'head1' in d for _, _, d in G.edges(data=True))
    assert main(['graph', str(ckpt), '--layer', '7']) == 2
    assert main(['graph', str(tmp_path / 'missing.pt')]) == 2


def test_bench_errors_are_clear(tmp_path, capsys):
    assert main(['bench', '--dataset', 'NOT_A_TU_SET', '--root', str(tmp_path / 'empty'), '--no-progress',
                 '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'NOT_A_TU_SET' in err and '--root' in err
    assert main(TINY + ['--models', 'gcn,nope', '--out', str(tmp_path / 'o')]) == 2
    assert 'unknown model' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(TINY + ['--grid', '{not json', '--out', str(tmp_path / 'o')])


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, '-m', 'pyg_ple', '--version'], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode == 0 and __version__ in r.stdout
