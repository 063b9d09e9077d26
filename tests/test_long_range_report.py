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
        'config': {'epochs': 20, 'grid': [{}]}, 'selected': {},
        'runs': {'gin/cfg0/seed0': _record('gin', 0, 0.8, 0.75)},
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


def _gps_run(folder, seed, val, test, command_seed=None, epochs=2):
    """A run folder of GPS with one finished seed of run seed ``seed`` (``--seed`` ``command_seed``)."""
    folder.mkdir(parents=True)
    record = {**_record('gps', 0, val, test, params=1200), 'seed': seed}
    folder.joinpath('state.json').write_text(json.dumps({
        'dataset': 'peptides-func', 'task': {'kind': 'multilabel', 'metric': 'ap', 'higher_is_better': True},
        'config': {'epochs': epochs, 'seed': command_seed, 'grid': [{}]}, 'selected': {'gps': 0},
        'split_sha256': 'abc', 'runs': {'gps/cfg0/seed0': record},
        'info': {'source': 'PeptidesFunctional from /a/machine/path/LRGB/raw', 'processed_dir': '/home/me/.cache/x',
                 'molecules': 15535},
        'command': f'pyg-ple bench --dataset peptides-func --root /a/machine/path --models gps --seed {command_seed} '
                   '--final-runs 1', 'split': 'official LRGB split', 'versions': 'torch 2.13', 'machine': '2 cores'}))
    return folder


def _long_range(*argv):
    return subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'long_range.py'), *map(str, argv)],
                          capture_output=True, text=True, timeout=120)


def test_runs_differing_only_in_seed_pool_into_one_row_and_outlive_their_folders(tmp_path):
    a = _gps_run(tmp_path / 'gps-seed0', 0, 0.40, 0.30, command_seed=0)
    b = _gps_run(tmp_path / 'gps-seed1', 1000003, 0.60, 0.50, command_seed=1)
    out, kept = tmp_path / 'out', tmp_path / 'kept'
    proc = _long_range(a, b, '--name', 'peptides_func', '--out', out, '--keep-states', kept)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / 'peptides_func.csv')))
    assert len(rows) == 1 and rows[0]['seeds'] == '2' and rows[0]['status'] == '2 of 3 seeds finished'
    assert abs(float(rows[0]['val_mean']) - 0.5) < 1e-9 and abs(float(rows[0]['test_std']) - 0.1) < 1e-9
    text = (out / 'peptides_func.md').read_text()
    assert 'gps: gps-seed0, gps-seed1 (run seeds 0, 1000003)' in text and '/a/machine/path' not in text
    # the kept states hold no machine path and stand for their folders: the same table from them and a third seed
    states = sorted(kept.glob('*.json'))
    assert [s.name for s in states] == ['gps-seed0.json', 'gps-seed1.json']
    kept_state = json.loads(states[0].read_text())
    assert kept_state['command'].startswith('pyg-ple bench --dataset peptides-func --root DATA --models gps')
    assert kept_state['info'] == {'source': 'PeptidesFunctional from DATA/LRGB/raw', 'molecules': 15535}
    c = _gps_run(tmp_path / 'gps-seed2', 2000006, 0.50, 0.40, command_seed=2)
    proc = _long_range(*states, c, '--name', 'peptides_func', '--out', out)
    assert proc.returncode == 0, proc.stderr
    row = next(csv.DictReader(open(out / 'peptides_func.csv')))
    assert row['seeds'] == '3' and row['status'] == 'finished' and abs(float(row['test_mean']) - 0.4) < 1e-9


def test_runs_that_differ_in_more_than_the_seed_are_not_pooled(tmp_path):
    a = _gps_run(tmp_path / 'gps-seed0', 0, 0.40, 0.30, command_seed=0)
    b = _gps_run(tmp_path / 'gps-seed1', 1000003, 0.60, 0.50, command_seed=1, epochs=3)
    proc = _long_range(a, b, '--name', 'x', '--out', tmp_path / 'out')
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert 'differ in their settings, not only in --seed' in proc.stderr
    same = _gps_run(tmp_path / 'again', 0, 0.40, 0.30, command_seed=0)
    proc = _long_range(a, same, '--name', 'x', '--out', tmp_path / 'out')
    assert proc.returncode == 2 and 'seed 0 of gps is in another run too' in proc.stderr
    assert not (tmp_path / 'out').exists()


def test_keep_states_refuses_to_replace_a_file_it_did_not_write(tmp_path):
    a = _gps_run(tmp_path / 'gps-seed0', 0, 0.40, 0.30, command_seed=0)
    kept = tmp_path / 'kept'
    kept.mkdir()
    (kept / 'gps-seed0.json').write_text('{"my": "notes"}')
    proc = _long_range(a, '--name', 'x', '--out', tmp_path / 'out', '--keep-states', kept)
    assert proc.returncode == 2 and 'is not a state of pyg-ple bench: not replaced' in proc.stderr
    assert (kept / 'gps-seed0.json').read_text() == '{"my": "notes"}'


def test_earlier_rows_are_kept_where_no_run_gives_them(tmp_path):
    """A first table of GCN and the Laplacian transformer; then GPS alone, with the first table as --earlier: GCN's
    and the transformer's rows, commands and machine are kept, in the earlier order, and GPS's row is added."""
    base = {'dataset': 'peptides-func', 'task': {'kind': 'multilabel', 'metric': 'ap', 'higher_is_better': True},
            'split': 'official LRGB split', 'versions': 'torch 2.13'}
    folders = []
    for model, attention, v, t in (('gcn', 'native', 0.5, 0.4), ('laplacian', 'native+full', 0.7, 0.6)):
        folder = tmp_path / model
        folder.mkdir()
        folder.joinpath('state.json').write_text(json.dumps({
            **base, 'config': {'epochs': 2, 'hparams': {'attention': attention}, 'grid': [{}]},
            'selected': {model: 0}, 'runs': {f'{model}/cfg0/seed0': _record(model, 0, v, t)},
            'machine': 'an older machine', 'command': f'pyg-ple bench --models {model} --attention {attention} '
                                                     '--params 1000'}))
        folders.append(folder)
    first = tmp_path / 'first'
    assert _long_range(*folders, '--name', 'peptides_func', '--seeds', '1', '--out', first).returncode == 0
    gps = _gps_run(tmp_path / 'gps-seed0', 0, 0.6, 0.5, command_seed=0)
    out = tmp_path / 'out'
    proc = _long_range(gps, '--name', 'peptides_func', '--seeds', '1', '--out', out, '--earlier',
                       first / 'peptides_func.csv')
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / 'peptides_func.csv')))
    assert [(r['model'], r['attention']) for r in rows] == [('gcn', ''), ('laplacian', 'native+full'), ('gps', '')]
    assert [r['test_mean'] for r in rows] == ['0.4', '0.6', '0.5'] and rows[1]['status'] == 'finished'
    text = (out / 'peptides_func.md').read_text()
    assert 'pyg-ple bench --models laplacian --attention native+full --params 1000' in text
    assert 'Rows kept from the earlier table `peptides_func.csv` (their runs are not at hand): gcn, laplacian ' \
        '(native+full).' in text
    assert 'an older machine' in text and 'Spearman rank correlation +1.00' in text
