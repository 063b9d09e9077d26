"""benchmarks/long_range.py: the table of finished seeds and the status of unfinished ones from run folders."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _record(model, seed, val, test, params=1000):
    return {'model': model, 'config_index': 0, 'seed_index': seed, 'val_metric': val, 'test_metric': test,
            'params': params, 'epochs_run': 2, 'sec_per_epoch': 1.0, 'best_epoch': 2, 'hparams': {'hidden': 8}}


def test_report_of_a_finished_and_an_unfinished_model(tmp_path):
    done, going = tmp_path / 'gcn', tmp_path / 'laplacian'
    base = {'dataset': 'peptides-func', 'task': {'kind': 'multilabel', 'metric': 'ap', 'higher_is_better': True}}
    (done / 'checkpoints').mkdir(parents=True)
    (done / 'state.json').write_text(json.dumps({
        **base, 'config': {'epochs': 2, 'hparams': {'attention': 'native'}}, 'selected': {'gcn': 0},
        'runs': {f'gcn/cfg0/seed{r}': _record('gcn', r, v, t) for r, (v, t) in enumerate([(0.5, 0.4), (0.7, 0.6)])},
        'command': 'pyg-ple bench --dataset peptides-func --root /some/machine/path --models gcn --params 1050',
        'split': 'official LRGB split', 'versions': 'python 3.11, torch 2.13', 'machine': '2 cores, x86_64, Linux'}))
    (going / 'checkpoints' / 'laplacian').mkdir(parents=True)
    (going / 'state.json').write_text(json.dumps({
        **base, 'config': {'epochs': 2, 'hparams': {'attention': 'native+full'}, 'grid': [{}]}, 'selected': {},
        'runs': {'laplacian/cfg0/seed0': _record('laplacian', 0, 0.3, 0.2, params=1090)},
        'command': 'pyg-ple bench --models laplacian --params 1050'}))
    torch.save({'history': [{'epoch': 1, 'val_loss': 0.3, 'val_ap': 0.25}, {'epoch': 2, 'val_loss': 0.2,
                                                                           'val_ap': 0.2}]},
               going / 'checkpoints' / 'laplacian' / 'cfg0_seed1.pt')
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'long_range.py'), str(done), str(going),
                           '--name', 'peptides_func', '--seeds', '3', '--out', str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r['model']: r for r in csv.DictReader(open(out / 'peptides_func.csv'))}
    assert rows['gcn']['seeds'] == '2' and abs(float(rows['gcn']['val_mean']) - 0.6) < 1e-9
    assert abs(float(rows['gcn']['test_mean']) - 0.5) < 1e-9 and abs(float(rows['gcn']['test_std']) - 0.1) < 1e-9
    assert rows['gcn']['status'] == '2 of 3 seeds finished' and rows['gcn']['attention'] == ''
    # the first seed of a one-configuration run counts before the run has recorded its selection
    assert rows['laplacian']['status'] == '1 of 3 seeds finished' and rows['laplacian']['attention'] == 'native+full'
    assert abs(float(rows['laplacian']['test_mean']) - 0.2) < 1e-9
    text = (out / 'peptides_func.md').read_text()
    assert 'epoch 2 of 2, best val_ap so far 0.2500 (epoch 1)' in text and '--root DATA' in text
    assert '/some/machine/path' not in text and '0.6535' in text
    assert 'Split: official LRGB split.' in text and 'Versions: python 3.11, torch 2.13; torch ?.' in text
    assert 'Machine: 2 cores, x86_64, Linux; not recorded in the run folder(s) laplacian.' in text
    assert 'Parameters: 1,000 to 1,090 (-4.8% to +3.8% of the --params target 1,050); the largest 9.0% above the ' \
        'smallest.' in text


def test_unfinished_hiv_seeds_are_reported_in_percent_as_the_table(tmp_path):
    going = tmp_path / 'gin'
    (going / 'checkpoints' / 'gin').mkdir(parents=True)
    (going / 'state.json').write_text(json.dumps({
        'dataset': 'hiv', 'task': {'kind': 'binary', 'metric': 'rocauc', 'higher_is_better': True},
        'config': {'epochs': 20, 'grid': [{}]}, 'selected': {}, 'runs': {'gin/cfg0/seed0': _record('gin', 0, 0.8, 0.75)},
        'command': 'pyg-ple bench --dataset hiv', 'split': 'rebuilt scaffold split (...)'}))
    torch.save({'history': [{'epoch': 1, 'val_loss': 0.1, 'val_rocauc': 0.7123}, {'epoch': 2, 'val_loss': 0.09,
                                                                                 'val_rocauc': 0.69}]},
               going / 'checkpoints' / 'gin' / 'cfg0_seed1.pt')
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'long_range.py'), str(going), '--name', 'molhiv',
                           '--out', str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (out / 'molhiv.md').read_text()
    assert '| gin |  |' in text and '80.00 ± 0.00 | 75.00 ± 0.00 | 1 | 2 |' in text  # s/epoch, selected epoch
    assert 'epoch 2 of 20, best val_rocauc so far 71.23 (epoch 1)' in text and 'gin cfg0_seed1: 71.23, 69.0' in text
    assert 'Split: rebuilt scaffold split (...).' in text and '78.80' in text
    assert 'Parameters: 1,000 to 1,000; the largest 0.0% above the smallest.' in text  # no --params: no target
    assert (out / 'molhiv.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and '](molhiv.png)' in text


def test_rank_correlation_of_validation_and_test_over_finished_rows(tmp_path):
    """Validation orders a < b < c, test orders c < a < b: rank differences -1, -1, +2, so rho = 1 - 6 * 6 / (3 * 8)
    = -0.5, and validation's best (c) is last on test. A row with a seed missing does not count."""
    base = {'dataset': 'hiv', 'task': {'kind': 'binary', 'metric': 'rocauc', 'higher_is_better': True},
            'config': {'epochs': 2, 'grid': [{}]}, 'selected': {}, 'command': 'pyg-ple bench --dataset hiv'}
    figures = {'gcn': [(0.70, 0.75)], 'gin': [(0.80, 0.76)], 'gps': [(0.90, 0.70)], 'laplacian': []}
    folders = []
    for model, runs in figures.items():
        folder = tmp_path / model
        folder.mkdir()
        records = {f'{model}/cfg0/seed{r}': _record(model, r, v, t) for r, (v, t) in enumerate(runs)}
        folder.joinpath('state.json').write_text(json.dumps({**base, 'runs': records}))
        folders.append(str(folder))
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'long_range.py'), *folders, '--name', 'molhiv',
                           '--seeds', '1', '--out', str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ('Validation against test over the 3 rows with every seed finished: Spearman rank correlation -0.50; the '
            'best on validation, gps, is 3 of 3 on test.') in (out / 'molhiv.md').read_text()
