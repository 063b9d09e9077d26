"""Protocol of Errica et al.: stratified, disjoint, covering, deterministic folds; validation inside training."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_ple.bench.settings import expand_grid
from pyg_ple.bench.splits import get_splits, make_splits

LABELS = np.array([0] * 60 + [1] * 30 + [2] * 15)


def test_folds_are_disjoint_cover_every_graph_and_are_stratified():
    folds = make_splits(LABELS, n_folds=5, seed=0)
    assert len(folds) == 5
    tests = [set(f['test']) for f in folds]
    assert set().union(*tests) == set(range(len(LABELS)))
    assert sum(len(t) for t in tests) == len(LABELS)  # pairwise disjoint
    overall = np.bincount(LABELS) / len(LABELS)
    for f in folds:
        tr, va, te = set(f['train']), set(f['val']), set(f['test'])
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == set(range(len(LABELS)))
        for part, tol in ((f['test'], 0.06), (f['train'] + f['val'], 0.02)):
            frac = np.bincount(LABELS[part], minlength=3) / len(part)
            assert np.abs(frac - overall).max() <= tol
        # 10 % validation, stratified: every class present.
        assert len(f['val']) == round(0.1 * (len(f['train']) + len(f['val'])))
        assert set(LABELS[f['val']]) == {0, 1, 2}


def test_folds_deterministic_under_seed_and_differ_across_seeds():
    a = make_splits(LABELS, 10, seed=3)
    b = make_splits(LABELS, 10, seed=3)
    c = make_splits(LABELS, 10, seed=4)
    assert a == b
    assert a != c


def test_validation_never_overlaps_test_fold():
    for seed in range(3):
        for f in make_splits(LABELS, 10, seed=seed):
            assert not set(f['val']) & set(f['test'])


def test_splits_saved_and_reloaded(tmp_path):
    path = tmp_path / 'splits.json'
    a = get_splits(path, LABELS, 5, seed=1, dataset='toy')
    saved = json.loads(path.read_text())
    assert saved['n_folds'] == 5 and saved['seed'] == 1 and saved['num_graphs'] == len(LABELS)
    # Reloading returns the stored splits, even if making them again would differ.
    saved['folds'][0]['val'], saved['folds'][0]['train'] = saved['folds'][0]['train'][:2], saved['folds'][0]['val']
    path.write_text(json.dumps(saved))
    b = get_splits(path, LABELS, 5, seed=1)
    assert b[0]['val'] == a[0]['train'][:2]
    with pytest.raises(ValueError, match='does not match'):
        get_splits(path, LABELS, 5, seed=2)
    with pytest.raises(ValueError, match='does not match'):
        get_splits(path, LABELS[::-1], 5, seed=1)


def test_too_small_class_is_rejected():
    with pytest.raises(ValueError, match='smallest class'):
        make_splits(np.array([0] * 20 + [1] * 3), n_folds=5)


def test_expand_grid():
    assert expand_grid(None) == [{}]
    g = expand_grid({'lr': [1e-3, 1e-4], 'hidden': [32, 64], 'pool': 'mean'})
    assert len(g) == 4 and {'lr': 1e-4, 'hidden': 32, 'pool': 'mean'} in g
    assert expand_grid([{'lr': 1}, {'lr': 2}]) == [{'lr': 1}, {'lr': 2}]
    with pytest.raises(ValueError, match="grid key 'lr' has an empty list"):
        expand_grid({'lr': [], 'hidden': [8]})
    with pytest.raises(ValueError, match='must hold objects'):
        expand_grid([1, 2])
    with pytest.raises(ValueError, match='a grid must be'):
        expand_grid('lr')


def test_benchmark_config_refuses_bad_settings_before_training():
    from pyg_ple.bench.settings import TRAIN_KEYS, BenchmarkConfig, model_hparam_names
    ok = BenchmarkConfig(models=['gcn', 'laplacian'], grid=[{'lr': 1e-3, 'hidden': 16}, {'dropout': 0.5}])
    assert ok.grid[0]['hidden'] == 16
    assert {'hidden', 'num_layers', 'heads', 'dropout', 'pool', 'attention'} <= set(model_hparam_names())
    assert not set(TRAIN_KEYS) & set(model_hparam_names())
    for kwargs, match in (
            (dict(models=[]), 'models must name each model once'),
            (dict(models=['gcn', 'gcn']), 'models must name each model once'),
            (dict(models=['nope']), 'models must name each model once, from gcn, gat'),
            (dict(epochs=0), 'epochs must be an integer >= 1, got 0'),
            (dict(n_folds=1), 'n_folds must be an integer >= 2'),
            (dict(batch_size=0), 'batch_size must be an integer >= 1'),
            (dict(lr=0.0), 'lr must be a number > 0'),
            (dict(lr=float('nan')), 'lr must be a number > 0'),
            (dict(weight_decay=-1e-4), 'weight_decay must be a number >= 0'),
            (dict(patience=0), 'patience must be an integer >= 1'),
            (dict(val_fraction=1.0), 'val_fraction must be in'),
            (dict(grid=[{'dropuot': 0.5}]), "unknown grid key 'dropuot'; accepted keys: attention"),
            (dict(grid=[{'lr': 'abc'}]), "grid value of 'lr' must be a number > 0, got 'abc'"),
            (dict(grid=[{'batch_size': True}]), "grid value of 'batch_size' must be an integer >= 1, got True"),
            (dict(grid=[{'lr': 0.1}, {'lr': 0.1}]), 'twice'),
            (dict(grid=[{'hidden': 0}]), "with the grid configuration {\"hidden\": 0}: 'hidden' must be positive"),
            (dict(hparams={'hidden': 30, 'heads': 4}), "model 'laplacian': 'hidden' \\(30\\) must be a multiple"),
    ):
        with pytest.raises(ValueError, match=match):
            BenchmarkConfig(**{'models': ['gcn', 'laplacian'], **kwargs})


@pytest.mark.slow
def test_progress_bar_shows_validation_accuracy_and_loss(tmp_path, capsys):
    from pyg_ple.bench.cli import main
    assert main(['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--models', 'gcn', '--threads', '1',
                 '--out', str(tmp_path / 'run')]) == 0
    err = capsys.readouterr().err
    assert 'val_acc=' in err and 'val_loss=' in err and 'loss=' in err
    assert 'val_score' not in err


def _tu_root():
    for cand in (os.environ.get('PYG_PLE_DATA'), Path(__file__).resolve().parents[2] / 'shared' / 'data',
                 '/work/shared/data'):
        if cand and (Path(cand) / 'TUDataset' / 'MUTAG' / 'raw').is_dir():
            return Path(cand)
    return None


@pytest.mark.skipif(_tu_root() is None, reason='TU data not found (set PYG_PLE_DATA to a folder with TUDataset/)')
def test_tu_loading_mutag_and_degree_features(tmp_path, monkeypatch):
    from pyg_ple.bench.datasets import load_dataset
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    root = _tu_root()
    ds = load_dataset('MUTAG', root=root)
    assert len(ds) == 188 and ds.num_features == 7 and ds.num_classes == 2
    assert np.bincount(ds.labels).tolist() == [63, 125]
    assert not (root / 'TUDataset' / 'MUTAG' / 'processed').exists()  # nothing written into the data folder
    assert [p.is_dir() for p in (tmp_path / 'cache' / 'TUDataset').glob('*/MUTAG/processed')] == [True]
    if (root / 'TUDataset' / 'IMDB-BINARY' / 'raw').is_dir():
        ds = load_dataset('IMDB-BINARY', root=root / 'TUDataset')
        assert ds.num_features == 136 and 'degree' in ds.info['features']
        g = ds.graphs[0]
        assert g.x.shape == (g.num_nodes, 136) and bool((g.x.sum(1) == 1).all())


@pytest.mark.skipif(_tu_root() is None or not (_tu_root() / 'TUDataset' / 'ENZYMES' / 'raw').is_dir(),
                    reason='ENZYMES raw files not found (set PYG_PLE_DATA to a folder with TUDataset/)')
@pytest.mark.slow
def test_cli_node_attr_loads_continuous_attributes_and_normalises_them(tmp_path, monkeypatch):
    """ENZYMES has 3 node labels and 18 continuous attributes (Errica et al. use all 21); --node-attr uses them and
    adds the input BatchNorm, and the saved model records both so that `pyg-ple graph` can rebuild it."""
    import torch

    from pyg_ple.bench.cli import main
    from pyg_ple.bench.datasets import load_dataset
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    root = _tu_root() / 'TUDataset'
    assert load_dataset('ENZYMES', root=root).num_features == 3
    ds = load_dataset('ENZYMES', root=root, use_node_attr=True)
    assert ds.num_features == 21 and 'attributes' in ds.info['features']
    assert float(ds.graphs[0].x[:, :18].abs().max()) > 1.0  # continuous, not one-hot
    out = tmp_path / 'run'
    assert main(['bench', '--dataset', 'ENZYMES', '--root', str(root), '--node-attr', '--models', 'gcn', '--folds', '2',
                 '--epochs', '1', '--no-progress', '--threads', '1', '--out', str(out)]) == 0
    state = json.loads((out / 'state.json').read_text())
    assert state['config']['hparams']['input_norm'] is True
    ckpt = torch.load(out / 'models' / 'gcn_fold0.pt', weights_only=True)
    assert ckpt['in_channels'] == 21 and ckpt['dataset_args']['use_node_attr'] is True
    assert 'input_norm.running_mean' in ckpt['state_dict']


@pytest.mark.skipif(_tu_root() is None, reason='TU data not found (set PYG_PLE_DATA to a folder with TUDataset/)')
def test_degree_features_are_appended_to_node_labels(tmp_path, monkeypatch):
    import torch
    from torch_geometric.utils import degree

    from pyg_ple.bench.datasets import load_dataset
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    plain = load_dataset('MUTAG', root=_tu_root())
    ds = load_dataset('MUTAG', root=_tu_root(), degree_features=True)
    extra = ds.num_features - plain.num_features
    assert extra == 5 and 'degree' in ds.info['features']  # MUTAG: degrees 0..4
    for a, b in zip(plain.graphs[:20], ds.graphs[:20]):
        assert torch.equal(b.x[:, :plain.num_features], a.x)
        assert torch.equal(b.x[:, plain.num_features:].argmax(1), degree(a.edge_index[1], a.num_nodes).long())


@pytest.mark.slow
def test_tu_only_feature_options_are_rejected_on_digits(tmp_path, capsys):
    from pyg_ple.bench.cli import main
    from pyg_ple.bench.datasets import load_dataset
    for kw in ({'use_node_attr': True}, {'degree_features': True}):
        with pytest.raises(ValueError, match='TU datasets'):
            load_dataset('digits', digits_n=20, **kw)
    with pytest.raises(SystemExit) as e:
        main(['bench', '--degree', '--no-progress', '--digits-n', '40', '--out', str(tmp_path / 'o')])
    assert e.value.code == 2
    assert 'TU datasets' in capsys.readouterr().err


def test_unknown_tu_dataset_offline_gives_clear_error(tmp_path, monkeypatch):
    from pyg_ple.bench import datasets
    from pyg_ple.bench.datasets import DatasetUnavailableError, load_tu

    class Offline:
        def __init__(self, *a, **k):
            raise OSError('network is unreachable')

    import torch_geometric.datasets
    monkeypatch.setattr(torch_geometric.datasets, 'TUDataset', Offline)
    with pytest.raises(DatasetUnavailableError) as e:
        load_tu('NOT_A_DATASET', root=tmp_path)
    msg = str(e.value)
    assert 'NOT_A_DATASET' in msg and '--root' in msg and 'PYG_PLE_DATA' in msg and 'raw' in msg
    assert not (tmp_path / 'NOT_A_DATASET').exists()
    with pytest.raises(DatasetUnavailableError):
        load_tu('MUTAG', root=tmp_path, download=False)
    assert datasets.TU_DATASETS


@pytest.mark.parametrize('datasets', [['digits'], ['MUTAG', 'PROTEINS', 'ENZYMES', 'IMDB-BINARY', 'IMDB-MULTI',
                                                    'NCI1']])
def test_results_plot_shows_every_model_name_whole(datasets):
    import matplotlib.pyplot as plt

    from pyg_ple.bench.report import results_figure
    models = ['gcn', 'gat', 'gin', 'gps', 'transformer', 'laplacian', 'mixed', 'laplacian-tokens']
    rows = [{'dataset': d, 'model': m, 'acc_mean': 60.0 + i, 'acc_std': 2.0} for d in datasets
            for i, m in enumerate(models)]
    fig = results_figure(rows, 'title')
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for legend in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()] for t in legend.texts]
    assert [t.get_text() for t in texts] == models
    for t in texts:
        box = t.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and 0 <= box.y0 and box.y1 <= fig.bbox.y1, t.get_text()
    plt.close(fig)


@pytest.mark.slow
def test_tu_processing_holds_an_inter_process_lock(tmp_path, monkeypatch):
    """PyG writes processed/ in place; two runs starting together must not read each other's half-written files, so
    the dataset is built while a lock that other processes see is held."""
    import subprocess
    import sys

    from pyg_ple.bench import datasets
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    raw = tmp_path / 'data' / 'TOY' / 'raw'
    raw.mkdir(parents=True)
    for suffix in datasets.TU_RAW_SUFFIXES:
        (raw / f'TOY{suffix}').write_text('1\n')
    lock_file = tmp_path / 'cache' / 'locks' / 'TUDataset-TOY.lock'
    probe = ('import fcntl, sys\nf = open(sys.argv[1], "a")\n'
             'try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n')
    seen = []

    def fake_tu(root, name, use_node_attr=False):
        seen.append(subprocess.run([sys.executable, '-c', probe, str(lock_file)]).returncode)
        return 'dataset'

    monkeypatch.setattr('torch_geometric.datasets.TUDataset', fake_tu)
    assert datasets.load_tu('TOY', root=tmp_path / 'data') == 'dataset'
    assert seen == [3]  # another process could not take the lock while the dataset was being built


def test_failed_download_removes_only_the_folder_it_created(tmp_path, monkeypatch):
    from pyg_ple.bench import datasets
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))

    def offline(root, name, use_node_attr=False):
        (Path(root) / name / 'raw').mkdir(parents=True, exist_ok=True)  # what a failing download leaves behind
        raise OSError('no network')

    monkeypatch.setattr('torch_geometric.datasets.TUDataset', offline)
    mine = tmp_path / 'TOY' / 'notes.txt'  # a folder of the same name that the user made
    mine.parent.mkdir()
    mine.write_text('keep')
    with pytest.raises(datasets.DatasetUnavailableError):
        datasets.load_tu('TOY', root=tmp_path)
    assert mine.read_text() == 'keep'
    with pytest.raises(datasets.DatasetUnavailableError):
        datasets.load_tu('OTHER', root=tmp_path)
    assert not (tmp_path / 'OTHER').exists()  # the half-downloaded folder it made is gone


def test_heldout_accuracy_selects_on_one_half_and_scores_the_other_by_hand():
    from pyg_ple.bench.selection import heldout_accuracy, replay_selection
    # epochs 1..4; half a: acc .5, 1, .5, .75 (loss falling); half b: acc .2, .4, .8, .4 (loss falling)
    curve = {'val_a_acc': [0.5, 1.0, 0.5, 0.75], 'val_a_loss': [0.6, 0.5, 0.4, 0.3],
             'val_b_acc': [0.2, 0.4, 0.8, 0.4], 'val_b_loss': [0.9, 0.8, 0.7, 0.6]}
    # best accuracy: a keeps epoch 2 (b scores .4), b keeps epoch 3 (a scores .5)
    assert heldout_accuracy(curve, patience=None) == pytest.approx((0.4 + 0.5) / 2)
    assert heldout_accuracy(curve, patience=1) == pytest.approx((0.4 + 0.5) / 2)  # a stops after epoch 3
    # lowest loss: both keep epoch 4 (b scores .4, a .75)
    assert heldout_accuracy(curve, patience=None, rule='loss') == pytest.approx((0.4 + 0.75) / 2)
    tie = {**curve, 'val_a_acc': [1.0, 1.0, 0.5, 0.75]}  # equal accuracy: the lower loss (epoch 2) is kept
    assert heldout_accuracy(tie, patience=None) == pytest.approx((0.4 + 0.5) / 2)
    early = {**curve, 'val_a_acc': [0.25, 1.0, 0.5, 0.75], 'val_b_acc': [0.6, 0.4, 0.8, 0.4]}
    assert heldout_accuracy(early, patience=1) == pytest.approx((0.4 + 0.25) / 2)  # b stops after epoch 2, keeps 1
    assert heldout_accuracy(early, patience=2) == pytest.approx((0.4 + 0.5) / 2)  # b reaches epoch 3
    assert replay_selection(np.array([0.5, 0.7, 0.6, 0.6, 0.9]), 2) == 1
    assert replay_selection(np.array([0.5, 0.7, 0.6, 0.6, 0.9]), None) == 4


def test_heldout_choice_accuracy_chooses_the_configuration_on_one_half_and_scores_it_on_the_other_by_hand():
    from pyg_ple.bench.selection import heldout_accuracy, heldout_choice_accuracy
    # run 0 as above (a keeps epoch 2 at 1.0, b keeps epoch 3 at .8); run 1: a keeps epoch 1 at .75, b keeps epoch 2
    # at .9. On a run 0 wins (1.0 > .75) and b scores its epoch 2: .4; on b run 1 wins (.9 > .8), a scores its
    # epoch 2: .25 (run 0 alone would give (.4 + .5) / 2).
    run0 = {'val_a_acc': [0.5, 1.0, 0.5, 0.75], 'val_a_loss': [0.6, 0.5, 0.4, 0.3],
            'val_b_acc': [0.2, 0.4, 0.8, 0.4], 'val_b_loss': [0.9, 0.8, 0.7, 0.6]}
    run1 = {'val_a_acc': [0.75, 0.25, 0.5, 0.25], 'val_a_loss': [0.5, 0.5, 0.5, 0.5],
            'val_b_acc': [0.3, 0.9, 0.6, 0.1], 'val_b_loss': [0.5, 0.5, 0.5, 0.5]}
    assert heldout_choice_accuracy([run0, run1], None) == (pytest.approx((0.4 + 0.25) / 2), [0, 1])
    assert heldout_choice_accuracy([run0], 1) == (pytest.approx(heldout_accuracy(run0, 1)), [0, 0])
    # equal scores on a half: the first run is chosen, in either order
    assert heldout_choice_accuracy([run0, dict(run0)], None)[1] == [0, 0]
    with pytest.raises(ValueError, match='curves'):
        heldout_choice_accuracy([], None)
    with pytest.raises(ValueError, match='patience'):
        heldout_choice_accuracy([run0, run1], [None])


def test_heldout_choice_accuracy_matches_a_loop_over_epochs_and_runs():
    """Against an independent reference: plain loops, early stopping and ties written out, on random curves with
    many ties (accuracies on a coarse grid)."""
    from pyg_ple.bench.selection import heldout_choice_accuracy
    rng = np.random.default_rng(0)

    def kept_epoch(acc, loss, patience):
        best, best_t, bad = None, 0, 0
        for t in range(len(acc)):
            key = (acc[t], -loss[t])
            if best is None or key > best:
                best, best_t, bad = key, t, 0
            else:
                bad += 1
                if patience is not None and bad >= patience:
                    break
        return best_t, best

    def reference(runs, patience):
        out, chosen = [], []
        for on, other in (('a', 'b'), ('b', 'a')):
            best_j, best_key, best_t = None, None, None
            for j, r in enumerate(runs):
                p = patience[j] if isinstance(patience, list) else patience
                t, key = kept_epoch(r[f'val_{on}_acc'], r[f'val_{on}_loss'], p)
                if best_key is None or key > best_key:
                    best_j, best_key, best_t = j, key, t
            out.append(runs[best_j][f'val_{other}_acc'][best_t])
            chosen.append(best_j)
        return sum(out) / 2, chosen

    for trial in range(200):
        n_runs, n_epochs = int(rng.integers(1, 4)), int(rng.integers(1, 12))
        runs = [{f'val_{h}_{k}': (rng.integers(0, 5, n_epochs) / 4 if k == 'acc' else rng.integers(1, 4, n_epochs) / 2)
                 .tolist() for h in 'ab' for k in ('acc', 'loss')} for _ in range(n_runs)]
        patience = [None, 1, 3][trial % 3]
        if trial % 2:  # one patience per run, as a grid that varies it has
            patience = [[None, 1, 3][int(i)] for i in rng.integers(0, 3, n_runs)]
        value, chosen = heldout_choice_accuracy(runs, patience)
        ref_value, ref_chosen = reference(runs, patience)
        assert value == pytest.approx(ref_value) and chosen == ref_chosen


def test_validation_halves_partition_the_split_stratified_and_seeded():
    from pyg_ple.bench.selection import validation_halves
    labels = np.array([0, 1] * 20)
    val = list(range(0, 40, 2)) + list(range(1, 21, 2))  # 20 of class 0, 10 of class 1
    a, b = validation_halves(val, labels, seed=3)
    assert sorted(a + b) == sorted(val) and not set(a) & set(b) and len(a) == len(b) == 15
    assert sorted(labels[a].tolist()) == sorted(labels[b].tolist())  # 10 and 5 of each class in each half
    assert validation_halves(val, labels, seed=3) == (a, b)
    assert validation_halves(val, labels, seed=4) != (a, b)
    one = validation_halves([0, 2, 4, 1], labels, seed=0)  # one graph of class 1: unstratified, still halves
    assert sorted(one[0] + one[1]) == [0, 1, 2, 4] and len(one[0]) == 2


def test_train_fold_records_validation_halves_without_changing_training(monkeypatch):
    """The halves come from the validation pass that selects (their correct counts add up to it); moving them
    changes nothing in training or selection."""
    from pyg_ple.bench import protocol
    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.selection import validation_halves
    from pyg_ple.bench.settings import BenchmarkConfig
    ds = digits_graphs(120)
    split = make_splits(ds.labels, n_folds=2, seed=0, val_fraction=0.2)[0]
    cfg = BenchmarkConfig(models=['laplacian'], epochs=4, lr=0.01, progress=False,
                          hparams=dict(hidden=8, num_layers=1, heads=2, dropout=0.5))
    res, _ = protocol.train_fold(ds, 'laplacian', split, cfg, {}, run_seed=5)
    a, b = validation_halves(split['val'], ds.labels, cfg.seed + split['fold'])
    for h in res.history:
        assert round(h['val_a_acc'] * len(a) + h['val_b_acc'] * len(b)) == round(h['val_acc'] * len(split['val']))
        loss = (h['val_a_loss'] * len(a) + h['val_b_loss'] * len(b)) / len(split['val'])
        assert loss == pytest.approx(h['val_loss'], rel=1e-5)
    monkeypatch.setattr(protocol, 'validation_halves', lambda val, labels, seed: (list(val[1::2]), list(val[::2])))
    other, _ = protocol.train_fold(ds, 'laplacian', split, cfg, {}, run_seed=5)
    keys = ('train_loss', 'val_acc', 'val_loss')
    assert [[h[k] for k in keys] for h in other.history] == [[h[k] for k in keys] for h in res.history]
    assert [h['val_a_acc'] for h in other.history] != [h['val_a_acc'] for h in res.history]


@pytest.mark.slow
def test_run_records_heldout_validation_accuracy_and_its_curves(tmp_path):
    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.protocol import CURVE_KEYS, run_benchmark
    from pyg_ple.bench.report import summarize
    from pyg_ple.bench.selection import heldout_accuracy
    from pyg_ple.bench.settings import BenchmarkConfig
    cfg = BenchmarkConfig(models=['gcn'], n_folds=2, epochs=5, lr=0.01, patience=2, progress=False,
                          hparams=dict(hidden=8, num_layers=1), grid=[{}, {'lr': 0.001}], save_models=False)
    state = run_benchmark(digits_graphs(60), cfg, tmp_path / 'run')
    assert json.loads((tmp_path / 'run' / 'state.json').read_text())['runs'] == json.loads(json.dumps(state['runs']))
    for rec in state['runs'].values():
        assert set(rec['curve']) == set(CURVE_KEYS)
        assert all(len(v) == rec['epochs_run'] for v in rec['curve'].values())
        assert rec['curve']['val_acc'][rec['best_epoch'] - 1] == pytest.approx(rec['val_acc'], abs=1e-5)
        assert rec['heldout_val_acc'] == heldout_accuracy(rec['curve'], 2)
        assert len(rec['grid_heldout_val_acc']) == 2 and rec['heldout_val_acc'] in rec['grid_heldout_val_acc']
    row, = summarize(state)
    # with a grid, the held-out figure of the choice (test_grid_records_the_heldout_figure_of_its_choice)
    assert row['heldout_val_mean'] == pytest.approx(
        50 * sum(r['grid_choice_heldout_val_acc'] for r in state['runs'].values()))
    for rec in state['runs'].values():  # runs written before these were recorded
        del rec['heldout_val_acc'], rec['grid_choice_heldout_val_acc']
    assert np.isnan(summarize(state)[0]['heldout_val_mean'])


@pytest.mark.slow
def test_grid_records_the_heldout_figure_of_its_choice(tmp_path, monkeypatch):
    """Each fold of a two-point grid (the first with its own patience) records the held-out figure of choosing
    between its configurations, computed from both training runs retrained by hand, each with its own patience; one
    configuration records none, and its summary keeps the run's own held-out figure."""
    from pyg_ple.bench import protocol
    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.protocol import run_benchmark, train_fold
    from pyg_ple.bench.report import summarize
    from pyg_ple.bench.selection import heldout_choice_accuracy
    from pyg_ple.bench.settings import BenchmarkConfig, run_seed_of
    from pyg_ple.bench.splits import get_splits
    ds = digits_graphs(80)
    grid = [{'patience': 1}, {'lr': 0.01}]
    cfg = BenchmarkConfig(models=['gcn'], n_folds=2, epochs=8, lr=0.03, patience=4, progress=False,
                          hparams=dict(hidden=8, num_layers=1), grid=grid, save_models=False)
    patiences = []
    monkeypatch.setattr(protocol, 'heldout_choice_accuracy',
                        lambda curves, patience, rule: patiences.append(patience) or heldout_choice_accuracy(
                            curves, patience, rule))
    state = run_benchmark(ds, cfg, tmp_path / 'grid')
    assert [p for p in patiences if isinstance(p, list)] == [[1, 4]] * 2  # one choice per fold
    splits = get_splits(tmp_path / 'grid' / 'splits.json', ds.labels, 2)
    for fold, split in enumerate(splits):
        curves = []
        for j, grid_cfg in enumerate(grid):
            res, _ = train_fold(ds, 'gcn', split, cfg, grid_cfg, run_seed_of(0, fold, j))
            curves.append({k: [round(h[k], 5) for h in res.history] for k in ('val_a_acc', 'val_a_loss', 'val_b_acc',
                                                                                 'val_b_loss')})
        expected = heldout_choice_accuracy(curves, [1, 4])[0]
        assert state['runs'][f'gcn/{fold}']['grid_choice_heldout_val_acc'] == pytest.approx(expected)
    one = run_benchmark(ds, BenchmarkConfig(**{**cfg.__dict__, 'grid': [{}]}), tmp_path / 'one')
    assert all('grid_choice_heldout_val_acc' not in rec for rec in one['runs'].values())
    assert summarize(one)[0]['heldout_val_mean'] == pytest.approx(
        50 * sum(r['heldout_val_acc'] for r in one['runs'].values()))


def test_per_graph_evaluation_gives_the_same_figures_and_draws_nothing_more():
    """Recording the halves leaves a run as it was: the same loss and accuracy, the same state of the random
    generator after the pass (runs written before the halves were recorded reproduce bit for bit)."""
    from torch_geometric.loader import DataLoader

    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.models import build_model
    from pyg_ple.bench.protocol import evaluate_loader
    ds = digits_graphs(120)
    model = build_model('gcn', ds.num_features, ds.num_classes, hidden=8, num_layers=1)
    loader = DataLoader(ds.subset(list(range(100))), batch_size=32)
    torch.manual_seed(0)
    plain = evaluate_loader(model, loader)
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    full = evaluate_loader(model, loader, per_graph=True)
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert (full['loss'], full['acc']) == (plain['loss'], plain['acc'])
    assert full['correct'].shape == full['losses'].shape == (100,)
    assert full['correct'].mean() == pytest.approx(plain['acc']) and full['losses'].mean() == pytest.approx(
        plain['loss'])


@pytest.mark.slow
def test_a_validation_split_of_one_graph_has_no_heldout_figure(tmp_path):
    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.protocol import run_benchmark
    from pyg_ple.bench.report import summarize
    from pyg_ple.bench.selection import validation_halves
    from pyg_ple.bench.settings import BenchmarkConfig
    assert validation_halves([7], np.array([0] * 8), seed=0) == ([7], [])
    cfg = BenchmarkConfig(models=['gcn'], n_folds=2, epochs=2, progress=False, save_models=False,
                          hparams=dict(hidden=8, num_layers=1))
    state = run_benchmark(digits_graphs(20), cfg, tmp_path / 'run')  # 10 training graphs: 1 for validation
    for rec in state['runs'].values():
        assert rec['heldout_val_acc'] is None and set(rec['curve']) == {'val_acc', 'val_loss'}
    assert np.isnan(summarize(state)[0]['heldout_val_mean'])


@pytest.mark.slow
def test_final_runs_average_retrainings_of_the_selected_configuration_and_extend_on_resume(tmp_path):
    """Each extra final run is the selected configuration trained again with its own seed (checked against
    train_fold by hand); the fold's test accuracy is their mean; resuming with more runs extends a finished run to
    what a fresh run with that many gives, and resuming with fewer changes nothing."""
    from torch_geometric.loader import DataLoader

    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.protocol import evaluate_loader, run_benchmark, train_fold
    from pyg_ple.bench.settings import BenchmarkConfig, run_seed_of
    from pyg_ple.bench.splits import get_splits
    ds = digits_graphs(60)
    settings = dict(models=['gcn'], n_folds=2, epochs=3, lr=0.01, progress=False, save_models=False,
                    hparams=dict(hidden=8, num_layers=1), grid=[{}, {'lr': 0.001}])
    one = run_benchmark(ds, BenchmarkConfig(**settings), tmp_path / 'a')
    first = {key: dict(rec) for key, rec in one['runs'].items()}
    assert all('final_runs' not in rec for rec in first.values())  # one run: the record as before

    cfg = BenchmarkConfig(**settings, final_runs=3)
    extended = run_benchmark(ds, cfg, tmp_path / 'a', resume=True)
    splits = get_splits(tmp_path / 'a' / 'splits.json', ds.labels, 2)
    for key, rec in extended['runs'].items():
        finals, j, fold = rec['final_runs'], rec['selected_config'], rec['fold']
        assert len(finals) == 3
        assert (finals[0]['seed'], finals[0]['test_acc']) == (first[key]['seed'], first[key]['test_acc'])
        assert [f['seed'] for f in finals[1:]] == [run_seed_of(0, fold, j, r) for r in (1, 2)]
        assert len({f['seed'] for f in finals}) == 3
        for f in finals[1:]:
            res, model = train_fold(ds, 'gcn', splits[fold], cfg, cfg.grid[j], f['seed'])
            test = evaluate_loader(model, DataLoader(ds.subset(splits[fold]['test']), batch_size=256))
            assert (f['test_acc'], f['val_acc'], f['best_epoch']) == (test['acc'], res.best_metrics['val_acc'],
                                                                      res.best_epoch)
        assert rec['test_acc'] == pytest.approx(np.mean([f['test_acc'] for f in finals]))
        assert rec['test_loss'] == pytest.approx(np.mean([f['test_loss'] for f in finals]))
        assert (rec['val_acc'], rec['best_epoch']) == (first[key]['val_acc'], first[key]['best_epoch'])
    assert not list((tmp_path / 'a').rglob('*.pt'))
    # The summary's validation figures average each fold's runs, as its test accuracy does.
    from pyg_ple.bench.report import summarize
    row, = summarize(extended)
    # The held-out figure of the first run, which chose the configuration, is that of the choice.
    for key, figure in (('val_acc', 'val_acc_mean'), ('heldout_val_acc', 'heldout_val_mean')):
        want = 100 * np.mean([np.mean([rec.get('grid_choice_heldout_val_acc', rec['final_runs'][0][key])
                                       if key == 'heldout_val_acc' and i == 0 else f[key]
                                       for i, f in enumerate(rec['final_runs'])])
                              for rec in extended['runs'].values()])
        assert row[figure] == pytest.approx(want)
    assert row['acc_mean'] == pytest.approx(100 * np.mean([r['test_acc'] for r in extended['runs'].values()]))

    fresh = run_benchmark(ds, cfg, tmp_path / 'b')
    drop = ('seconds', 'sec_per_epoch')
    assert [{k: v for k, v in r.items() if k not in drop} for r in fresh['runs'].values()] == \
        [{k: v for k, v in r.items() if k not in drop} for r in extended['runs'].values()]
    again = run_benchmark(ds, BenchmarkConfig(**settings, final_runs=2), tmp_path / 'a', resume=True)
    assert again['runs'] == json.loads(json.dumps(extended['runs']))
    with pytest.raises(ValueError, match='final_runs must be an integer >= 1'):
        BenchmarkConfig(**settings, final_runs=0)


def test_cli_protocol_note_says_how_many_final_runs_each_fold_averages(tmp_path):
    from pyg_ple.bench.cli import main
    out = tmp_path / 'run'
    tiny = ['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--hidden', '8', '--layers', '1',
            '--heads', '2', '--no-progress', '--models', 'gcn', '--no-save-models', '--out', str(out)]
    assert main(tiny) == 0
    assert 'training runs of it' not in json.loads((out / 'results.json').read_text())['protocol']
    assert main(tiny + ['--resume', '--final-runs', '2']) == 0
    res = json.loads((out / 'results.json').read_text())
    assert 'the mean of 2 training runs of it' in res['protocol']
    state = json.loads((out / 'state.json').read_text())
    assert res['results'][0]['fold_acc'] == [round(100 * r['test_acc'], 2) for r in state['runs'].values()]
    assert all(len(r['final_runs']) == 2 for r in state['runs'].values())


def _early_stopping(curve, budget, patience):
    """(best epoch 1-based, epochs run) of fit's rule on a validation curve: a strictly better value resets the
    count, training stops after ``patience`` epochs without one or at the end of the budget."""
    best, best_t, bad = -1.0, 0, 0
    for t, v in enumerate(curve[:budget]):
        if v > best:
            best, best_t, bad = v, t, 0
        else:
            bad += 1
            if patience is not None and bad >= patience:
                return best_t + 1, t + 1
    return best_t + 1, budget


def test_summary_counts_the_runs_the_budget_ended():
    """A run counts as ended by its budget exactly when the same run, given a longer budget, trains past it (patience
    had not stopped it); the boundary case, stopped by patience at the last epoch of the budget, does not count.
    The runs are constructed from validation curves, so the check does not depend on one machine's training."""
    from pyg_ple.bench.report import format_table, summarize
    from pyg_ple.bench.selection import ended_by_budget, replay_selection
    budget, longer, patience = 7, 30, 2
    curves = {
        'still rising at the budget': [0.1 + 0.02 * t for t in range(12)] + [0.2] * (longer - 12),
        'best one epoch before the budget': [0.1 * t for t in range(1, 7)] + [0.55, 0.65] + [0.5] * (longer - 8),
        'stopped by patience at the last epoch of the budget': [0.1 * t for t in range(1, 6)] + [0.4] * (longer - 5),
        'stopped by patience early': [0.5, 0.6] + [0.4] * (longer - 2),
    }
    short = {name: _early_stopping(c, budget, patience) for name, c in curves.items()}
    long = {name: _early_stopping(c, longer, patience) for name, c in curves.items()}
    assert short['stopped by patience at the last epoch of the budget'] == (5, 7)  # the boundary case is built in
    for name, c in curves.items():  # the helper keeps the epoch the protocol's own replay keeps
        assert replay_selection(c[:short[name][1]], patience) + 1 == short[name][0], name
    expected = {name: long[name][1] > budget for name in curves}  # a longer budget trains past this one
    assert expected == {'still rising at the budget': True, 'best one epoch before the budget': True,
                        'stopped by patience at the last epoch of the budget': False,
                        'stopped by patience early': False}
    for name, (best_epoch, epochs_run) in short.items():
        assert ended_by_budget(best_epoch, epochs_run, budget, patience) == expected[name], name

    def state(runs, epochs):
        records = {f'gcn_fold{i}': {'model': 'gcn', 'fold': i, 'test_acc': 0.5, 'params': 10, 'sec_per_epoch': 0.1,
                                    'best_epoch': b, 'epochs_run': e, 'train_loss': 0.5, 'val_acc': 0.5,
                                    'val_loss': 0.7, 'heldout_val_acc': 0.5}
                   for i, (b, e) in enumerate(runs)}
        return {'dataset': 'TOY', 'config': {'epochs': epochs, 'patience': patience}, 'runs': records}

    row, = summarize(state(short.values(), budget))
    assert row['ended_by_budget'] == [sum(expected.values()), len(curves)] == [2, 4]
    assert '| 2 / 4 |' in format_table([row], markdown=True)
    assert summarize(state(long.values(), longer))[0]['ended_by_budget'] == [0, 4]
    # A fold's own patience (as a grid point records it) overrides the run's: with patience 3, the run whose best
    # epoch is 5 of 7 is within the last 3 epochs, so the budget ended it.
    folds = state([short['stopped by patience at the last epoch of the budget']], budget)
    folds['runs']['gcn_fold0']['train'] = {'patience': 3}
    assert summarize(folds)[0]['ended_by_budget'] == [1, 1]
    # Several training runs per fold (--final-runs) are each counted.
    folds = state([(7, 7)], budget)
    folds['runs']['gcn_fold0']['final_runs'] = [{'best_epoch': 7, 'epochs_run': 7}, {'best_epoch': 2, 'epochs_run': 4}]
    assert summarize(folds)[0]['ended_by_budget'] == [1, 2]
    assert ended_by_budget(5, 5, 5, None) and not ended_by_budget(4, 4, 5, None)  # no early stopping: the budget
