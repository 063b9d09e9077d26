"""Repeated inner splits (``inner_splits``): every training fold gets several validation splits, every grid
configuration is trained once on each, and the means of their figures select and report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pyg_ple.bench import protocol
from pyg_ple.bench.protocol import run_benchmark
from pyg_ple.bench.settings import BenchmarkConfig, run_seed_of
from pyg_ple.bench.splits import get_splits, inner_split, make_splits

LABELS = np.array([0] * 60 + [1] * 30 + [2] * 15)


def test_inner_splits_keep_the_folds_and_draw_other_stratified_validation_splits():
    plain = make_splits(LABELS, 5, seed=0)
    folds = make_splits(LABELS, 5, seed=0, inner_splits=3)
    assert folds == make_splits(LABELS, 5, seed=0, inner_splits=3)  # seeded
    for a, f in zip(plain, folds):
        assert {k: f[k] for k in ('fold', 'train', 'val', 'test')} == a  # the first split is the fold's own
        part = set(f['train']) | set(f['val'])
        vals = [f['val'], *f['inner_val']]
        assert len(vals) == 3 and len({tuple(v) for v in vals}) == 3
        for i, val in enumerate(vals):
            assert len(val) == len(f['val']) and set(val) <= part and not set(val) & set(f['test'])
            counts = np.bincount(LABELS[val], minlength=3)
            assert np.abs(counts - np.bincount(LABELS[f['val']], minlength=3)).max() <= 1  # stratified alike
            s = inner_split(f, i)
            assert s['val'] == val and s['test'] == f['test'] and s['fold'] == f['fold']
            assert not set(s['train']) & set(val) and set(s['train']) | set(val) == part
            assert s['train'] == sorted(s['train'])
    assert inner_split(folds[0], 0) is folds[0]
    with pytest.raises(ValueError, match='has 3 inner split'):
        inner_split(folds[0], 3)
    with pytest.raises(ValueError, match='inner_splits must be an integer >= 1'):
        make_splits(LABELS, 5, inner_splits=0)


def test_splits_file_records_the_inner_splits(tmp_path):
    path = tmp_path / 'splits.json'
    folds = get_splits(path, LABELS, 5, seed=2, inner_splits=3)
    assert json.loads(path.read_text())['inner_splits'] == 3
    assert get_splits(path, LABELS, 5, seed=2, inner_splits=3) == folds
    assert get_splits(path, LABELS, 5, seed=2)[0]['val'] == folds[0]['val']  # one split: the first of each fold
    with pytest.raises(ValueError, match=r'inner_splits: 3 in the file, 2 now'):
        get_splits(path, LABELS, 5, seed=2, inner_splits=2)
    one = tmp_path / 'one.json'
    get_splits(one, LABELS, 5, seed=2)
    assert 'inner_splits' not in json.loads(one.read_text())  # files of one split are as they were
    with pytest.raises(ValueError, match=r'inner_splits: None in the file, 3 now'):
        get_splits(one, LABELS, 5, seed=2, inner_splits=3)


def test_settings_are_checked():
    with pytest.raises(ValueError, match='inner_splits must be an integer >= 1, got 0'):
        BenchmarkConfig(models=['gcn'], inner_splits=0)
    with pytest.raises(ValueError, match='exclude each other'):
        BenchmarkConfig(models=['gcn'], inner_splits=2, final_runs=3)
    assert 'inner_splits' not in BenchmarkConfig(models=['gcn']).comparable()
    assert BenchmarkConfig(models=['gcn'], inner_splits=2).comparable()['inner_splits'] == 2


@pytest.mark.slow
def test_the_configuration_with_the_best_mean_over_the_splits_is_selected(tmp_path, monkeypatch):
    """Scripted training runs: configuration 0 is best on the first validation split and worse on average; the mean
    selects configuration 1, and the fold's figures are the means of its runs."""
    from pyg_ple.bench.datasets import digits_graphs
    ds = digits_graphs(40)
    folds = make_splits(ds.labels, 2, seed=0, inner_splits=2)
    scores = {0: (0.9, 0.1), 1: (0.5, 0.6)}  # configuration -> validation score on split 0, split 1
    calls = []

    def fake_train_one(ds, name, split, cfg, grid_cfg, run_seed, ckpt, desc):
        j = cfg.grid.index(grid_cfg)
        fold = folds[split['fold']]
        i = [fold['val'], *fold['inner_val']].index(split['val'])
        calls.append((split['fold'], j, i, run_seed))
        v, t = scores[j][i], 0.25 * (1 + i) + 0.1 * j
        return {'config': grid_cfg, 'seed': run_seed, 'best_epoch': i, 'epochs_run': 3, 'val_acc': v, 'val_loss': 1 - v,
                'val_score': v, 'test_acc': t, 'test_loss': 2 * t, 'train_loss': 0.5, 'sec_per_epoch': 0.0,
                'params': 1, 'hparams': {}, 'train': {}, 'heldout_val_acc': v / 2, 'curve': {}}, torch.nn.Linear(1, 1)

    monkeypatch.setattr(protocol, '_train_one', fake_train_one)
    cfg = BenchmarkConfig(models=['gcn'], n_folds=2, epochs=3, progress=False, save_models=False, inner_splits=2,
                          grid=[{}, {'lr': 0.01}])
    state = run_benchmark(ds, cfg, tmp_path / 'run')
    assert sorted(calls) == sorted((f, j, i, run_seed_of(0, f, j, i)) for f in (0, 1) for j in (0, 1) for i in (0, 1))
    for rec in state['runs'].values():
        assert rec['selected_config'] == 1
        assert rec['grid_val_acc'] == pytest.approx([0.5, 0.55])
        assert rec['val_acc'] == pytest.approx(0.55) and rec['val_score'] == pytest.approx(0.55)
        assert rec['heldout_val_acc'] == pytest.approx(0.275) and rec['val_loss'] == pytest.approx(0.45)
        assert rec['test_acc'] == pytest.approx(np.mean([0.35, 0.6]))
        assert rec['test_loss'] == pytest.approx(2 * np.mean([0.35, 0.6]))
        assert [(r['split'], r['seed'], r['test_acc']) for r in rec['final_runs']] == [
            (i, run_seed_of(0, rec['fold'], 1, i), pytest.approx(0.25 * (1 + i) + 0.1)) for i in (0, 1)]


@pytest.mark.slow
def test_a_run_with_inner_splits_trains_each_split_and_reproduces_the_first(tmp_path):
    """The runs of a fold are the selected configuration trained on each inner split (checked against train_fold by
    hand); the first is the run of the same command without inner splits, bit for bit."""
    from torch_geometric.loader import DataLoader

    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.io import RunFileError
    from pyg_ple.bench.protocol import evaluate_loader, train_fold
    from pyg_ple.bench.report import summarize
    ds = digits_graphs(60)
    settings = dict(models=['gcn'], n_folds=2, epochs=3, lr=0.01, progress=False, save_models=False,
                    hparams=dict(hidden=8, num_layers=1))
    single = run_benchmark(ds, BenchmarkConfig(**settings), tmp_path / 'one')
    cfg = BenchmarkConfig(**settings, inner_splits=2)
    state = run_benchmark(ds, cfg, tmp_path / 'two')
    folds = get_splits(tmp_path / 'two' / 'splits.json', ds.labels, 2, inner_splits=2)
    for key, rec in state['runs'].items():
        first, second = rec['final_runs']
        assert (first['split'], second['split']) == (0, 1)
        assert (first['seed'], first['test_acc'], first['val_acc']) == (
            single['runs'][key]['seed'], single['runs'][key]['test_acc'], single['runs'][key]['val_acc'])
        split = inner_split(folds[rec['fold']], 1)
        res, model = train_fold(ds, 'gcn', split, cfg, {}, second['seed'])
        test = evaluate_loader(model, DataLoader(ds.subset(split['test']), batch_size=256))
        assert (second['test_acc'], second['val_acc'], second['best_epoch']) == (
            test['acc'], res.best_metrics['val_acc'], res.best_epoch)
        assert rec['test_acc'] == pytest.approx((first['test_acc'] + second['test_acc']) / 2)
        assert rec['val_acc'] == pytest.approx((first['val_acc'] + second['val_acc']) / 2)
    assert not list((tmp_path / 'two').rglob('*.pt'))
    row, = summarize(state)
    assert row['acc_mean'] == pytest.approx(100 * np.mean([r['test_acc'] for r in state['runs'].values()]))
    assert run_benchmark(ds, cfg, tmp_path / 'two', resume=True)['runs'] == json.loads(json.dumps(state['runs']))
    with pytest.raises(RunFileError, match='inner_splits: 2 in the run, null now'):
        run_benchmark(ds, BenchmarkConfig(**settings), tmp_path / 'two', resume=True)


@pytest.mark.slow
def test_cli_protocol_note_names_the_inner_splits(tmp_path):
    from pyg_ple.bench.cli import main
    out = tmp_path / 'run'
    assert main(['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--hidden', '8', '--layers', '1',
                 '--heads', '2', '--no-progress', '--models', 'gcn', '--no-save-models', '--inner-splits', '2',
                 '--out', str(out)]) == 0
    res = json.loads((out / 'results.json').read_text())
    assert '2 stratified 10% validation splits' in res['protocol']
    assert 'the mean of 2 training runs of it, one per inner split' in res['protocol']
    assert json.loads((out / 'splits.json').read_text())['inner_splits'] == 2
