"""`pyg-ple bench` on fixed-split datasets (Peptides-func, HIV): seeds instead of folds, the task's metric, selection
on validation, resume; and the widths of a parameter budget."""
from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch

from pyg_ple.bench import fixed_split
from pyg_ple.bench.budget import parameter_count, width_for_budget, widths_for_budget
from pyg_ple.bench.cli import main
from pyg_ple.bench.models import CategoricalInput
from pyg_ple.bench.report import FIXED_RESULT_COLUMNS

pytest.importorskip('rdkit')
pytest.importorskip('ogb')

from test_molecules import _write_ogb_molhiv, _write_peptides  # noqa: E402 (after the skips)

# Scaffold groups of 10 (benzene), 6 (acyclic), 2 (pyridine) and 2 (cyclohexane): the scaffold split puts the first
# two in train, pyridine in valid and cyclohexane in test; every group has both labels.
HIV = ['Cc1ccccc1', 'Oc1ccccc1', 'Nc1ccccc1', 'CCc1ccccc1', 'Clc1ccccc1', 'Fc1ccccc1', 'Brc1ccccc1', 'COc1ccccc1',
       'CNc1ccccc1', 'OCc1ccccc1', 'CCO', 'CCN', 'CC(=O)O', 'CCCO', 'CCCN', 'CCCC', 'C1CCCCC1C', 'OC1CCCCC1',
       'Cc1ccncc1', 'Oc1ccncc1']


def _write_hiv(raw):
    raw.mkdir(parents=True)
    lines = ['smiles,activity,HIV_active'] + [f'{s},CI,{i % 2}' for i, s in enumerate(HIV)]
    (raw / 'HIV.csv').write_text('\n'.join(lines) + '\n')


ATOMS = CategoricalInput((119, 5, 12, 12, 10, 6, 6, 2, 2), (5, 6, 2))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    _write_peptides(tmp_path / 'data' / 'LRGB' / 'peptides-functional' / 'raw', rows=24)
    _write_hiv(tmp_path / 'data' / 'MoleculeNet' / 'HIV' / 'raw')
    return tmp_path / 'data'


def _bench(root, out, *extra):
    return main(['bench', '--dataset', 'peptides-func', '--root', str(root), '--out', str(out), '--models', 'gcn,gin',
                 '--epochs', '2', '--final-runs', '2', '--batch-size', '8', '--no-progress', '--threads', '1',
                 '--pe', 'none', '--checkpoint-every', '1', *extra])


def test_peptides_run_writes_one_row_per_model_over_its_seeds(data_root, tmp_path, capsys):
    out = tmp_path / 'run'
    assert _bench(data_root, out, '--params', '15000') == 0
    state = json.loads((out / 'state.json').read_text())
    assert sorted(state['runs']) == ['gcn/cfg0/seed0', 'gcn/cfg0/seed1', 'gin/cfg0/seed0', 'gin/cfg0/seed1']
    assert state['task'] == {'kind': 'multilabel', 'metric': 'ap', 'higher_is_better': True}
    assert state['machine'].startswith(f'{os.cpu_count()} cores, ') and 'torch ' in state['versions']
    assert str(tmp_path) not in state['machine']
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['model'] for r in rows] == ['gcn', 'gin']
    assert list(rows[0])[:8] == list(FIXED_RESULT_COLUMNS)
    for row in rows:
        assert row['seeds'] == '2' and row['epochs'] == '2'
        assert abs(int(row['params']) - 15000) <= 1500  # the budget: every model within 10 %
        recs = [r for r in state['runs'].values() if r['model'] == row['model']]
        assert recs[0]['seed'] != recs[1]['seed']
        assert float(row['test_mean']) == pytest.approx(np.mean([r['test_metric'] for r in recs]), abs=1e-4)
        assert float(row['test_std']) == pytest.approx(np.std([r['test_metric'] for r in recs]), abs=1e-4)
    # GINE embeds the bonds as wide as the model; GCN takes no edge features.
    assert [r['hparams']['edge_dim'] for r in state['runs'].values()][::2] == [0, state['runs']['gin/cfg0/seed0'][
        'hparams']['hidden']]
    md = (out / 'results.md').read_text()
    assert 'official LRGB split' in md and 'val AP' in md and 'ogb' in md
    assert not list(out.glob('checkpoints/**/*.pt'))  # dropped once each run is stored
    assert len(list(out.glob('models/*.pt'))) == 4


def test_the_kept_epoch_is_the_best_on_validation_and_test_is_scored_with_it(data_root, tmp_path):
    from torch_geometric.loader import DataLoader

    from pyg_ple.bench.models import build_model
    from pyg_ple.bench.molecules import load_molecules
    from pyg_ple.bench.protocol import load_model_file
    from pyg_ple.bench.tasks import average_precision
    out = tmp_path / 'run'
    assert _bench(data_root, out, '--models', 'gin', '--epochs', '3', '--final-runs', '1') == 0
    rec = json.loads((out / 'state.json').read_text())['runs']['gin/cfg0/seed0']
    curve = rec['curve']['val_ap']
    assert rec['best_epoch'] == int(np.argmax(curve)) + 1 and rec['val_metric'] == pytest.approx(max(curve), abs=1e-5)
    saved = load_model_file(out / 'models' / 'gin_cfg0_seed0.pt')
    model = build_model(saved['name'], saved['in_channels'], saved['num_classes'], **saved['hparams']).eval()
    model.load_state_dict(saved['state_dict'])
    data = load_molecules('peptides-func', data_root)
    batch = next(iter(DataLoader(data.dataset[data.split['test']], batch_size=100)))
    with torch.no_grad():
        scores = model(batch).numpy()
    assert rec['test_metric'] == pytest.approx(average_precision(batch.y.numpy(), scores))


def test_hiv_run_reports_roc_auc_in_percent_on_the_rebuilt_split(data_root, tmp_path):
    out = tmp_path / 'hiv'
    assert main(['bench', '--dataset', 'hiv', '--root', str(data_root), '--out', str(out), '--models', 'gin',
                 '--epochs', '1', '--final-runs', '1', '--no-progress', '--pe', 'none', '--hidden', '16']) == 0
    result = json.loads((out / 'results.json').read_text())
    assert 'rebuilt scaffold split' in result['split'] and 'rebuilt scaffold split' in (out / 'results.md').read_text()
    rec = json.loads((out / 'state.json').read_text())['runs']['gin/cfg0/seed0']
    assert result['results'][0]['test_mean'] == pytest.approx(100 * rec['test_metric'])
    assert json.loads((out / 'state.json').read_text())['info']['split_sizes'] == {'train': 16, 'val': 2, 'test': 2}


def test_hiv_run_on_a_real_ogb_folder_says_it_used_ogbs_split(data_root, tmp_path):
    _write_ogb_molhiv(data_root / 'ogbg_molhiv', HIV, [i % 2 for i in range(len(HIV))],
                      {'train': list(range(14)), 'valid': [14, 15, 16], 'test': [17, 18, 19]})
    out = tmp_path / 'hiv'
    assert main(['bench', '--dataset', 'hiv', '--root', str(data_root), '--out', str(out), '--models', 'gcn',
                 '--epochs', '1', '--final-runs', '1', '--no-progress', '--pe', 'none', '--hidden', '16']) == 0
    result = json.loads((out / 'results.json').read_text())
    assert result['split'] == "OGB's scaffold split (the split files of the ogbg_molhiv folder)"
    assert 'rebuilt' not in (out / 'results.md').read_text()
    assert json.loads((out / 'state.json').read_text())['info']['split_sizes'] == {'train': 14, 'val': 3, 'test': 3}


def test_an_interrupted_run_resumes_where_it_stopped_and_refuses_other_settings(data_root, tmp_path, monkeypatch,
                                                                                capsys):
    out = tmp_path / 'run'
    real, calls = fixed_split._train_run, []

    def interrupted(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(fixed_split, '_train_run', interrupted)
    assert _bench(data_root, out) == 130
    first = json.loads((out / 'state.json').read_text())['runs']
    assert list(first) == ['gcn/cfg0/seed0']
    monkeypatch.setattr(fixed_split, '_train_run', real)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _bench(data_root, out, '--resume', '--lr', '0.01')
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'lr: 0.001 in the run, 0.01 now' in err
    assert _bench(data_root, out, '--resume') == 0
    runs = json.loads((out / 'state.json').read_text())['runs']
    assert len(runs) == 4 and runs['gcn/cfg0/seed0'] == first['gcn/cfg0/seed0']


def test_a_grid_is_chosen_on_validation_with_the_first_seed(data_root, tmp_path):
    out = tmp_path / 'grid'
    assert _bench(data_root, out, '--models', 'gin', '--grid', '{"lr": [0.01, 0.0001]}') == 0
    state = json.loads((out / 'state.json').read_text())
    a, b = state['runs']['gin/cfg0/seed0'], state['runs']['gin/cfg1/seed0']
    chosen = int(b['val_metric'] > a['val_metric'])
    assert state['selected'] == {'gin': chosen}
    assert sorted(state['runs']) == sorted(['gin/cfg0/seed0', 'gin/cfg1/seed0', f'gin/cfg{chosen}/seed1'])


@pytest.mark.parametrize('argv, message', [
    (['--dataset', 'MUTAG', '--params', '1000'], '--params applies to peptides-func and hiv'),
    (['--dataset', 'peptides-func', '--inner-splits', '2'], '--inner-splits applies to k-fold datasets'),
    (['--dataset', 'peptides-func', '--params', '100', '--models', 'gin'], 'no width puts gin'),
    (['--dataset', 'peptides-func', '--params', '5000', '--hidden', '16,32'], '--params sets each model'),
])
def test_bad_options_are_one_line_and_exit_status_2(argv, message, data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(['bench', '--root', str(data_root), '--out', str(tmp_path / 'o'), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and message in err and 'Traceback' not in err
    assert not (tmp_path / 'o').exists()


def test_missing_extra_is_named_by_the_cli(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'ogb', None)
    with pytest.raises(SystemExit) as e:
        _bench(data_root, tmp_path / 'o')
    assert e.value.code == 2 and "pip install 'pyg-ple[mol]'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# The parameter budget
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['gcn', 'gin', 'gatedgcn', 'gps', 'ple-gps', 'laplacian'])
def test_width_for_budget_is_the_closest_multiple_of_heads(name):
    hp = {'num_layers': 3, 'heads': 4, 'pe_dim': 8}
    width, count = width_for_budget(name, 50_000, ATOMS, 10, hp, fixed_split.model_settings)
    assert width % 4 == 0
    assert count == parameter_count(name, ATOMS, 10, {**hp, 'hidden': width}, fixed_split.model_settings)
    for other in (width - 4, width + 4):  # the neighbours are no closer
        c = parameter_count(name, ATOMS, 10, {**hp, 'hidden': other}, fixed_split.model_settings)
        assert abs(c - 50_000) >= abs(count - 50_000)
    assert abs(count - 50_000) <= 5_000


def test_the_budget_builds_the_models_it_counts():
    from pyg_ple.bench.models import build_model, count_parameters
    hp = {'num_layers': 2, 'heads': 4, 'hidden': 20}
    built = build_model('gin', ATOMS, 1, **fixed_split.model_settings('gin', hp))
    assert parameter_count('gin', ATOMS, 1, hp, fixed_split.model_settings) == count_parameters(built)


def test_widths_for_budget_refuses_a_budget_no_width_meets():
    with pytest.raises(ValueError, match='no width puts gin .* within 10% of it'):
        widths_for_budget(['gcn', 'gin'], 3_000, ATOMS, 10, {'num_layers': 3, 'heads': 4}, fixed_split.model_settings)
    with pytest.raises(ValueError, match='target must be an integer >= 1'):
        width_for_budget('gcn', 0, ATOMS, 10)
