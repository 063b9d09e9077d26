"""The evaluation protocol of Errica et al. (2020), "A Fair Comparison of Graph Neural Networks for Graph
Classification", shared by every model of the benchmark.

* Outer loop: stratified ``k``-fold cross-validation (``sklearn.model_selection.StratifiedKFold``, shuffled, seeded).
* Inside each training fold: a stratified validation split (10 %) for model selection and early stopping.
* Model selection: every configuration of a (small) grid is trained on the training part; the one with the best
  validation accuracy (ties: lower validation loss) is selected; its test accuracy on the held-out fold is recorded.
  Within a training run the epoch with the best validation accuracy (ties: lower loss) is kept.
* Report the mean and standard deviation of the test accuracies over the folds.

The splits are written to a JSON file (``splits.json`` under the output folder) and reloaded when it exists, so that
every model and every repeated run sees the same splits. Seeds are derived from one ``seed`` and recorded. Finished
(model, fold) results are written atomically to ``state.json`` after each one; ``resume=True`` skips them, and a
training run killed half-way continues from its last checkpoint (see :func:`pyg_ple.bench.training.fit`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pyg_ple.bench.datasets import GraphDataset
from pyg_ple.bench.models import build_model, count_parameters
from pyg_ple.bench.distributed import (barrier, distributed_loader, init_distributed, is_distributed, is_main_process,
                                 unwrap_model, wrap_model)
from pyg_ple.bench.io import atomic_torch_save, atomic_write_json
from pyg_ple.bench.training import TrainConfig, fit, seed_everything

__all__ = ['make_splits', 'save_splits', 'load_splits', 'get_splits', 'expand_grid', 'BenchmarkConfig',
           'run_benchmark', 'summarize', 'format_table', 'write_results', 'TRAIN_KEYS']

SPLITS_VERSION = 1
# Grid keys that configure training rather than the model.
TRAIN_KEYS = ('lr', 'weight_decay', 'batch_size', 'patience', 'grad_clip')


# --------------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------------
def _labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def make_splits(labels: Sequence[int], n_folds: int = 10, seed: int = 0,
                val_fraction: float = 0.1) -> list[dict[str, list[int]]]:
    """Stratified ``n_folds``-fold outer splits, each with a stratified ``val_fraction`` validation split taken out
    of its training part. Returns one dict per fold with sorted index lists ``train``, ``val``, ``test``."""
    from sklearn.model_selection import StratifiedKFold, train_test_split
    labels = np.asarray(labels)
    if n_folds < 2:
        raise ValueError(f'n_folds must be >= 2, got {n_folds}')
    counts = np.bincount(labels)
    if counts[counts > 0].min() < n_folds:
        raise ValueError(f'the smallest class has {counts[counts > 0].min()} graphs, fewer than n_folds={n_folds}')
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train_idx, test_idx) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        n_val = max(1, int(round(val_fraction * len(train_idx))))
        try:
            tr, va = train_test_split(train_idx, test_size=n_val, stratify=labels[train_idx],
                                      random_state=seed + 1 + k)
        except ValueError:  # a class too small to stratify (tiny subsets): plain random split
            tr, va = train_test_split(train_idx, test_size=n_val, random_state=seed + 1 + k)
        folds.append({'fold': k, 'train': sorted(int(i) for i in tr), 'val': sorted(int(i) for i in va),
                      'test': sorted(int(i) for i in test_idx)})
    return folds


def save_splits(path: str | os.PathLike, splits: list[dict], labels: Sequence[int], n_folds: int, seed: int,
                val_fraction: float, dataset: str = '') -> Path:
    return atomic_write_json(path, {
        'version': SPLITS_VERSION, 'dataset': dataset, 'num_graphs': len(labels), 'n_folds': n_folds, 'seed': seed,
        'val_fraction': val_fraction, 'labels_sha256': _labels_digest(np.asarray(labels)), 'folds': splits})


def load_splits(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def get_splits(path: str | os.PathLike | None, labels: Sequence[int], n_folds: int = 10, seed: int = 0,
               val_fraction: float = 0.1, dataset: str = '') -> list[dict[str, list[int]]]:
    """Load the splits from ``path`` if it exists (checking that they belong to these labels and settings), else make
    them and save them there."""
    labels = np.asarray(labels)
    if path is not None and Path(path).exists():
        saved = load_splits(path)
        want = {'num_graphs': len(labels), 'n_folds': n_folds, 'seed': seed, 'val_fraction': val_fraction,
                'labels_sha256': _labels_digest(labels)}
        diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f'splits file {path} does not match this run ({diff}); use another output folder or '
                             'delete the file')
        return saved['folds']
    splits = make_splits(labels, n_folds, seed, val_fraction)
    if path is not None:
        save_splits(path, splits, labels, n_folds, seed, val_fraction, dataset)
    return splits


def expand_grid(grid: dict[str, list] | list[dict] | None) -> list[dict[str, Any]]:
    """``{'lr': [1e-3, 1e-4], 'hidden': [32]}`` -> the list of all combinations; a list of dicts is kept as is."""
    if not grid:
        return [{}]
    if isinstance(grid, list):
        return [dict(g) for g in grid]
    keys = sorted(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[k] for k in keys)]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


# --------------------------------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class BenchmarkConfig:
    models: list[str]
    n_folds: int = 10
    epochs: int = 100
    seed: int = 0
    device: str = 'cpu'
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = None
    val_fraction: float = 0.1
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    hparams: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 5
    save_models: bool = True
    progress: bool = True

    def comparable(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one."""
        d = asdict(self)
        for k in ('models', 'device', 'progress', 'checkpoint_every', 'save_models'):
            d.pop(k)
        return d


def _selection_score(acc: float, loss: float) -> float:
    # Accuracy first; among equal accuracies the lower loss (the loss term is < 1e-3, below one graph of accuracy).
    return acc - 1e-4 * min(loss if math.isfinite(loss) else 10.0, 10.0)


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader: Iterable, device: str = 'cpu') -> dict[str, float]:
    """Mean cross-entropy and accuracy over a loader of graph batches."""
    was_training = model.training
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        y = batch.y.view(-1)
        loss_sum += float(F.cross_entropy(out, y, reduction='sum'))
        correct += int((out.argmax(-1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return {'loss': loss_sum / max(total, 1), 'acc': correct / max(total, 1)}


def _train_one(ds: GraphDataset, name: str, split: dict, cfg: BenchmarkConfig, grid_cfg: dict[str, Any],
               run_seed: int, ckpt: Path | None, desc: str) -> tuple[dict[str, Any], torch.nn.Module]:
    from torch_geometric.loader import DataLoader
    train_kw = {k: grid_cfg[k] for k in TRAIN_KEYS if k in grid_cfg}
    model_kw = {**cfg.hparams, **{k: v for k, v in grid_cfg.items() if k not in TRAIN_KEYS}}
    seed_everything(run_seed)
    model = build_model(name, ds.num_features, ds.num_classes, **model_kw)
    bs = int(train_kw.get('batch_size', cfg.batch_size))
    if is_distributed():  # under torchrun: each process trains on its shard, DDP averages the gradients
        train_loader = distributed_loader(ds.subset(split['train']), batch_size=bs, shuffle=True, seed=run_seed)
        model = wrap_model(model, init_distributed())
    else:
        gen = torch.Generator().manual_seed(run_seed)
        train_loader = DataLoader(ds.subset(split['train']), batch_size=bs, shuffle=True, generator=gen)
    val_loader = DataLoader(ds.subset(split['val']), batch_size=256)
    test_loader = DataLoader(ds.subset(split['test']), batch_size=256)

    def loss_fn(m, batch):
        return F.cross_entropy(m(batch), batch.y.view(-1))

    def evaluate(m):
        r = evaluate_loader(m, val_loader, cfg.device)
        return {'val_loss': r['loss'], 'val_acc': r['acc'], 'val_score': _selection_score(r['acc'], r['loss'])}

    tc = TrainConfig(epochs=cfg.epochs, lr=float(train_kw.get('lr', cfg.lr)),
                     weight_decay=float(train_kw.get('weight_decay', cfg.weight_decay)),
                     patience=train_kw.get('patience', cfg.patience), device=cfg.device, seed=run_seed,
                     checkpoint_path=ckpt, checkpoint_every=cfg.checkpoint_every, resume=ckpt is not None,
                     progress=cfg.progress, desc=desc, grad_clip=train_kw.get('grad_clip'))
    res = fit(model, train_loader, tc, loss_fn, evaluate, monitor='val_score', mode='max',
              meta={'model': name, 'fold': split['fold'], 'config': grid_cfg, 'seed': run_seed})
    model.load_state_dict(res.best_state)
    model = unwrap_model(model)
    test = evaluate_loader(model, test_loader, cfg.device)
    return {
        'config': grid_cfg, 'seed': run_seed, 'best_epoch': res.best_epoch, 'epochs_run': res.epochs_run,
        'val_acc': res.best_metrics.get('val_acc'), 'val_loss': res.best_metrics.get('val_loss'),
        'val_score': res.best_metrics.get('val_score'), 'test_acc': test['acc'], 'test_loss': test['loss'],
        'train_loss': res.best_metrics.get('train_loss'), 'sec_per_epoch': res.seconds_per_epoch,
        'params': count_parameters(model), 'hparams': model_kw, 'train': {**train_kw},
    }, model


def run_benchmark(ds: GraphDataset, cfg: BenchmarkConfig, out: str | os.PathLike, resume: bool = False,
                  command: str = '', dataset_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the protocol for every model of ``cfg`` on ``ds``; results and state go under ``out``.

    Returns the state dict (``runs`` maps ``"<model>/<fold>"`` to the per-fold record). Interrupting it loses at most
    the epochs since the last checkpoint of the current training run.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / 'state.json'
    ckpt_dir = out / 'checkpoints'
    if not resume and is_main_process():
        for p in (state_path, out / 'splits.json'):
            if p.exists():
                p.unlink()
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(out / 'models', ignore_errors=True)
    barrier()  # the other processes read what rank 0 kept or removed
    splits = get_splits(out / 'splits.json', ds.labels, cfg.n_folds, cfg.seed, cfg.val_fraction, ds.name)
    state: dict[str, Any] = {'dataset': ds.name, 'info': ds.info, 'config': cfg.comparable(), 'runs': {},
                             'command': command, 'torch': torch.__version__}
    if resume and state_path.exists():
        old = json.loads(state_path.read_text())
        if old.get('dataset') != ds.name or old.get('config') != json.loads(json.dumps(cfg.comparable())):
            raise ValueError(f'{state_path} was written by a run with other settings '
                             f'({old.get("dataset")}, {old.get("config")}); resume with the same options or use '
                             'another --out')
        state['runs'] = old.get('runs', {})
    atomic_write_json(state_path, state)

    tasks = [(name, split) for name in cfg.models for split in splits]
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(tasks), desc=f'{ds.name}', unit='fold', dynamic_ncols=True)
    try:
        for name, split in tasks:
            key = f'{name}/{split["fold"]}'
            if key in state['runs']:
                if bar is not None:
                    bar.update(1)
                continue
            if bar is not None:
                bar.set_postfix_str(f'{name} fold {split["fold"] + 1}/{len(splits)}')
            t0 = time.perf_counter()
            candidates = []
            best_model = None
            for j, grid_cfg in enumerate(cfg.grid):
                run_seed = cfg.seed * 1_000_003 + 1000 * split['fold'] + j
                ckpt = ckpt_dir / name / f'fold{split["fold"]}_cfg{j}.pt'
                rec, model = _train_one(ds, name, split, cfg, grid_cfg, run_seed, ckpt,
                                        desc=f'{name} f{split["fold"] + 1} c{j + 1}/{len(cfg.grid)}')
                candidates.append(rec)
                if max(candidates, key=lambda r: r['val_score']) is rec:
                    best_model = (model, rec)
            selected = max(candidates, key=lambda r: r['val_score'])
            if cfg.save_models and best_model is not None:
                model, rec = best_model
                atomic_torch_save({'name': name, 'in_channels': ds.num_features, 'num_classes': ds.num_classes,
                                   'hparams': rec['hparams'], 'state_dict': model.state_dict(), 'dataset': ds.name,
                                   'dataset_args': dataset_args or {}, 'fold': split['fold'],
                                   'test_idx': split['test'], 'test_acc': rec['test_acc']},
                                  out / 'models' / f'{name}_fold{split["fold"]}.pt')
            state['runs'][key] = {'model': name, 'fold': split['fold'], **selected,
                                  'selected_config': cfg.grid.index(selected['config']),
                                  'grid_val_acc': [c['val_acc'] for c in candidates],
                                  'seconds': time.perf_counter() - t0}
            atomic_write_json(state_path, state)
            for p in (ckpt_dir / name).glob(f'fold{split["fold"]}_cfg*.pt') if is_main_process() else ():
                p.unlink()  # the fold is stored: drop its checkpoints
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return state


def summarize(state: dict[str, Any], models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per model: accuracy mean and std (population std over folds, as in Errica et al.), folds done,
    parameters, seconds per epoch, selected configurations."""
    runs = list(state['runs'].values())
    names = list(models) if models else list(dict.fromkeys(r['model'] for r in runs))
    rows = []
    for name in names:
        rs = sorted((r for r in runs if r['model'] == name), key=lambda r: r['fold'])
        if not rs:
            continue
        accs = np.array([r['test_acc'] for r in rs]) * 100
        rows.append({
            'dataset': state.get('dataset', ''), 'model': name, 'acc_mean': float(accs.mean()),
            'acc_std': float(accs.std()), 'folds': len(rs), 'params': int(np.median([r['params'] for r in rs])),
            'sec_per_epoch': float(np.mean([r['sec_per_epoch'] for r in rs])),
            'epochs': int(np.median([r['epochs_run'] for r in rs])),
            # Selected epoch: near 'epochs' means the budget, not early stopping, ended training.
            'best_epoch': int(np.median([r['best_epoch'] for r in rs])),
            'selected_config': [int(r.get('selected_config', 0)) for r in rs],
            # Training loss at the selected epoch: high together with the validation loss means underfitting.
            'train_loss': float(np.mean([r['train_loss'] if r.get('train_loss') is not None else np.nan for r in rs])),
            'val_acc_mean': float(np.mean([r['val_acc'] for r in rs]) * 100),
            'fold_acc': [round(float(a), 2) for a in accs],
        })
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------------
COLUMNS = ('dataset', 'model', 'accuracy', 'acc_mean', 'acc_std', 'folds', 'params', 'sec_per_epoch', 'epochs')


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Results table: model, accuracy mean +- std, folds, parameters, seconds per epoch."""
    header = ['dataset', 'model', 'accuracy (%)', 'folds', 'params', 's/epoch', 'epochs (median)',
              'selected epoch (median)', 'train loss (selected)']
    body = [[r['dataset'], r['model'], f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f}", str(r['folds']),
             f"{r['params']:,}", f"{r['sec_per_epoch']:.3f}", str(r['epochs']), str(r.get('best_epoch', '–')),
             f"{r['train_loss']:.3f}" if 'train_loss' in r else '–']
            for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * 2 + ['---:'] * 7) + '|']
        lines += ['| ' + ' | '.join(b) + ' |' for b in body]
        return '\n'.join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: '  '.join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return '\n'.join([fmt(header), fmt(['-' * w for w in widths])] + [fmt(b) for b in body])


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(['dataset', 'model', 'acc_mean', 'acc_std', 'folds', 'params', 'sec_per_epoch', 'epochs', 'best_epoch',
                'fold_acc'])
    for r in rows:
        w.writerow([r['dataset'], r['model'], f"{r['acc_mean']:.2f}", f"{r['acc_std']:.2f}", r['folds'], r['params'],
                    f"{r['sec_per_epoch']:.4f}", r['epochs'], r.get('best_epoch', ''),
                    ' '.join(f'{a:.1f}' for a in r['fold_acc'])])
    return buf.getvalue()


def plot_results(rows: Sequence[dict[str, Any]], title: str = '') -> bytes:
    """PNG bytes of a grouped bar chart (datasets x models) of mean accuracy with std error bars."""
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    models = list(dict.fromkeys(r['model'] for r in rows))
    fig, ax = plt.subplots(figsize=(min(11.0, max(5.0, 1.5 + 1.4 * len(datasets))), 4.2))
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        xs, ys, es = [], [], []
        for i, d in enumerate(datasets):
            r = next((r for r in rows if r['dataset'] == d and r['model'] == m), None)
            if r is not None:
                xs.append(i + (j - (len(models) - 1) / 2) * width)
                ys.append(r['acc_mean'])
                es.append(r['acc_std'])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=m)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel('test accuracy (%)')
    lo = min((r['acc_mean'] - r['acc_std'] for r in rows), default=0)
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.legend(fontsize=7, ncol=min(len(models), 8), loc='lower center', bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis='y', alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_results(out: str | os.PathLike, rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None,
                  stem: str = 'results', title: str = '') -> dict[str, Path]:
    """Write ``<stem>.json``, ``.csv``, ``.md`` and ``.png`` under ``out``, each atomically."""
    from pyg_ple.bench.io import atomic_write_bytes, atomic_write_text
    out = Path(out)
    meta = meta or {}
    paths = {'json': out / f'{stem}.json', 'csv': out / f'{stem}.csv', 'md': out / f'{stem}.md',
             'png': out / f'{stem}.png'}
    atomic_write_json(paths['json'], {**meta, 'results': list(rows)})
    atomic_write_text(paths['csv'], _csv(rows))
    md = [f'# {title or "Graph classification results"}', '']
    if meta.get('command'):
        md += ['Command:', '', '```', str(meta['command']), '```', '']
    md += [format_table(rows, markdown=True), '']
    if meta.get('protocol'):
        md += [str(meta['protocol']), '']
    atomic_write_text(paths['md'], '\n'.join(md))
    atomic_write_bytes(paths['png'], plot_results(rows, title))
    return paths
