"""The evaluation protocol of Errica et al. (2020), "A Fair Comparison of Graph Neural Networks for Graph
Classification", shared by every model of the benchmark.

* Outer loop: stratified ``k``-fold cross-validation (``sklearn.model_selection.StratifiedKFold``, shuffled, seeded).
* Inside each training fold: a stratified validation split (10 %) for model selection and early stopping.
* Model selection: every configuration of a (small) grid is trained on the training part; the one with the best
  validation accuracy (ties: lower validation loss) is selected; its test accuracy on the held-out fold is recorded.
  Within a training run the epoch with the best validation accuracy (ties: lower loss) is kept. ``select='loss'``
  keeps the epoch and the configuration of lowest validation loss instead
  (:func:`~pyg_ple.bench.selection.selection_score`).
* Final runs: the selected configuration is trained ``final_runs`` times in all (other initialisations and batch
  orders, the same splits) and the fold's test accuracy is their mean, "to mitigate unlucky random initializations"
  as Errica et al. do with 3. The run that selected the configuration is the first of them.
* Repeated inner splits (``inner_splits`` > 1, instead of final runs): every training fold gets ``inner_splits``
  stratified validation splits (the first is the one above), every grid configuration is trained once on each
  (its own seed and validation split, the rest of the training fold to train on), and a configuration's validation
  score, figures and test accuracy are the means over its runs. Selection then rests on ``inner_splits`` times as
  many validation graphs; the fold's test accuracy averages models stopped on different validation splits.
* Report the mean and standard deviation of the test accuracies over the folds.
* Beside the selection, each training run records its validation curves and a held-out validation accuracy
  (:func:`~pyg_ple.bench.selection.heldout_accuracy`): settings can be compared on it without the optimism of a
  maximum over noisy epochs. With several grid configurations (and one inner split) the fold also records the
  held-out figure of choosing the configuration as well as the epoch
  (:func:`~pyg_ple.bench.selection.heldout_choice_accuracy`, ``grid_choice_heldout_val_acc``).

The splits (:mod:`pyg_ple.bench.splits`) are written to a JSON file (``splits.json`` under the output folder) and
reloaded when it exists, so that every model and every repeated run sees the same splits. Seeds are derived from
one ``seed`` and recorded. Finished (model, fold) results are written atomically to ``state.json`` after each one;
``resume=True`` skips them, and a training run killed half-way continues from its last checkpoint (see
:func:`pyg_ple.bench.training.fit`). The output folder is a :class:`~pyg_ple.bench.io.RunFolder`: a folder with
files pyg-ple did not write is never used, and ``overwrite=True`` deletes only the files of the earlier run.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pyg_ple.bench.datasets import GraphDataset
from pyg_ple.bench.distributed import (barrier, distributed_loader, init_distributed, is_distributed, unwrap_model,
                                       wrap_model)
from pyg_ple.bench.io import RunFileError, RunFolder, load_torch_file
from pyg_ple.bench.models import build_model, count_parameters
from pyg_ple.bench.selection import heldout_accuracy, heldout_choice_accuracy, selection_score, validation_halves
from pyg_ple.bench.settings import RECIPE_KEYS, BenchmarkConfig, differences, run_seed_of, split_settings
from pyg_ple.bench.splits import get_splits, inner_split, labels_digest, load_splits
from pyg_ple.bench.training import TrainConfig, TrainResult, fit, seed_everything

__all__ = ['train_fold', 'evaluate_loader', 'check_run_folder', 'run_benchmark', 'load_model_file']

# Per-epoch validation figures kept in each run's record (``curve``): the whole split and its two halves.
CURVE_KEYS = ('val_acc', 'val_loss', 'val_a_acc', 'val_a_loss', 'val_b_acc', 'val_b_loss')


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader: Iterable, device: str = 'cpu',
                    per_graph: bool = False) -> dict[str, Any]:
    """Mean cross-entropy and accuracy over a loader of graph batches; with ``per_graph`` also ``correct`` (bool) and
    ``losses`` (float) arrays, one entry per graph in the loader's order."""
    was_training = model.training
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    hits, losses = [], []
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        y = batch.y.view(-1)
        loss_sum += float(F.cross_entropy(out, y, reduction='sum'))
        right = out.argmax(-1) == y
        correct += int(right.sum())
        total += int(y.numel())
        if per_graph:  # beside the summed loss above, which stays as it was so that runs reproduce bit for bit
            hits.append(right.cpu())
            losses.append(F.cross_entropy(out, y, reduction='none').cpu())
    model.train(was_training)
    result: dict[str, Any] = {'loss': loss_sum / max(total, 1), 'acc': correct / max(total, 1)}
    if per_graph:
        result['correct'] = torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)
        result['losses'] = torch.cat(losses).double().numpy() if losses else np.zeros(0)
    return result


def train_fold(ds: GraphDataset, name: str, split: dict, cfg: BenchmarkConfig, grid_cfg: dict[str, Any],
               run_seed: int, ckpt: Path | None = None, desc: str = '',
               record: dict[str, Sequence[int]] | None = None) -> tuple[TrainResult, torch.nn.Module]:
    """Train model ``name`` with ``grid_cfg`` on ``split['train']``, keeping the epoch of best validation score on
    ``split['val']`` (:func:`~pyg_ple.bench.selection.selection_score` with ``cfg.select``; early stopping after
    ``patience`` epochs without a better one). Returns the :class:`~pyg_ple.bench.training.TrainResult` and the
    model with the selected weights loaded.

    Every epoch of the history also holds the accuracy and loss on the two halves of the validation split
    (:func:`~pyg_ple.bench.selection.validation_halves`, seeded by ``cfg.seed`` and the fold), ``val_a_acc``,
    ``val_a_loss``, ``val_b_acc``, ``val_b_loss``, from the same forward pass (none for a split of one graph): they
    select nothing; :func:`~pyg_ple.bench.selection.heldout_accuracy` is computed from them.
    ``record`` maps further names to index lists of ``ds`` whose accuracy and loss are added as ``<name>_acc`` and
    ``<name>_loss``; they select nothing either (``benchmarks/selection_rules.py`` records the test fold)."""
    from torch_geometric.loader import DataLoader
    train_kw, model_kw = split_settings(cfg, grid_cfg, name)
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
    a, b = validation_halves(split['val'], ds.labels, cfg.seed + split['fold'])
    half_a = np.isin(split['val'], a) if a and b else None  # None: a split too small to halve
    extra = {key: DataLoader(ds.subset(idx), batch_size=256) for key, idx in (record or {}).items()}

    def loss_fn(m, batch):
        return F.cross_entropy(m(batch), batch.y.view(-1))

    def evaluate(m):
        r = evaluate_loader(m, val_loader, cfg.device, per_graph=True)
        out = {'val_loss': r['loss'], 'val_acc': r['acc'],
               'val_score': selection_score(r['acc'], r['loss'], cfg.select)}
        for key, mask in (() if half_a is None else (('val_a', half_a), ('val_b', ~half_a))):
            out.update({f'{key}_acc': float(r['correct'][mask].mean()), f'{key}_loss': float(r['losses'][mask].mean())})
        for key, loader in extra.items():
            r = evaluate_loader(m, loader, cfg.device)
            out.update({f'{key}_acc': r['acc'], f'{key}_loss': r['loss']})
        return out

    tc = TrainConfig(epochs=cfg.epochs, lr=float(train_kw.get('lr', cfg.lr)),
                     weight_decay=float(train_kw.get('weight_decay', cfg.weight_decay)),
                     patience=train_kw.get('patience', cfg.patience), device=cfg.device, seed=run_seed,
                     checkpoint_path=ckpt, checkpoint_every=cfg.checkpoint_every, resume=ckpt is not None,
                     progress=cfg.progress, desc=desc, progress_metrics=('val_acc', 'val_loss'),
                     **{k: train_kw.get(k, getattr(cfg, k)) for k in RECIPE_KEYS})
    res = fit(model, train_loader, tc, loss_fn, evaluate, monitor='val_score', mode='max',
              meta={'model': name, 'fold': split['fold'], 'config': grid_cfg, 'seed': run_seed})
    model.load_state_dict(res.best_state)
    return res, unwrap_model(model)


def _train_one(ds: GraphDataset, name: str, split: dict, cfg: BenchmarkConfig, grid_cfg: dict[str, Any],
               run_seed: int, ckpt: Path | None, desc: str) -> tuple[dict[str, Any], torch.nn.Module]:
    from torch_geometric.loader import DataLoader
    res, model = train_fold(ds, name, split, cfg, grid_cfg, run_seed, ckpt, desc)
    test = evaluate_loader(model, DataLoader(ds.subset(split['test']), batch_size=256), cfg.device)
    train_kw, model_kw = split_settings(cfg, grid_cfg, name)
    curve = {key: [round(h[key], 5) for h in res.history] for key in CURVE_KEYS if key in res.history[0]}
    patience = train_kw.get('patience', cfg.patience)
    heldout = heldout_accuracy(curve, patience, cfg.select) if 'val_a_acc' in curve else None
    return {
        'config': grid_cfg, 'seed': run_seed, 'best_epoch': res.best_epoch, 'epochs_run': res.epochs_run,
        'val_acc': res.best_metrics.get('val_acc'), 'val_loss': res.best_metrics.get('val_loss'),
        'val_score': res.best_metrics.get('val_score'), 'test_acc': test['acc'], 'test_loss': test['loss'],
        'train_loss': res.best_metrics.get('train_loss'), 'sec_per_epoch': res.seconds_per_epoch,
        'params': count_parameters(model), 'hparams': model_kw, 'train': train_kw,
        'heldout_val_acc': heldout, 'curve': curve,
    }, model


def check_run_folder(out: str | os.PathLike, ds: GraphDataset, cfg: BenchmarkConfig, resume: bool = False,
                     overwrite: bool = False) -> RunFolder:
    """Check, writing nothing, that :func:`run_benchmark` can use ``out``: a new or empty folder, or an earlier run
    to continue with the same dataset, labels and settings (``resume``) or to replace (``overwrite``). Returns its
    :class:`~pyg_ple.bench.io.RunFolder`; raises :class:`~pyg_ple.bench.io.RunFileError` saying why not."""
    if resume and overwrite:
        raise ValueError('resume and overwrite exclude each other')
    run = RunFolder(out, 'resume' if resume else 'overwrite' if overwrite else 'new')
    run.check()
    found = []
    if resume and (run.root / 'state.json').exists():
        old = json.loads((run.root / 'state.json').read_text())
        new = json.loads(json.dumps({'dataset': ds.name, **cfg.comparable()}))
        found += differences({'dataset': old.get('dataset'), **(old.get('config') or {})}, new)
    if resume and not found and (run.root / 'splits.json').exists():
        saved = load_splits(run.root / 'splits.json')
        found += differences({k: saved.get(k) for k in ('num_graphs', 'labels_sha256')},
                             {'num_graphs': len(ds.labels), 'labels_sha256': labels_digest(ds.labels)})
    if found:
        raise RunFileError(f'{run.root} holds a run with other settings or data ({"; ".join(found)}): resume '
                           'with the same options, or start afresh with --overwrite or another --out')
    return run


def run_benchmark(ds: GraphDataset, cfg: BenchmarkConfig, out: str | os.PathLike, resume: bool = False,
                  command: str = '', dataset_args: dict[str, Any] | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Run the protocol for every model of ``cfg`` on ``ds``; results and state go under ``out``.

    ``out`` must be a new or empty folder, or one written by an earlier run: ``resume=True`` continues that run (its
    settings must be the same), ``overwrite=True`` deletes the files it wrote first; otherwise it is refused
    (:func:`check_run_folder`) before anything is trained or written. Returns the state dict (``runs`` maps
    ``"<model>/<fold>"`` to the per-fold record). Interrupting it loses at most the epochs since the last checkpoint of
    the current training run.

    With ``cfg.final_runs`` > 1 each record also lists its ``final_runs`` (seed, test and validation figures of every
    training run of the selected configuration, the selecting run first) and its ``test_acc`` and ``test_loss`` are
    their means; its other figures (validation, epochs, curves) and the saved model are the selecting run's.
    Resuming a finished run with a larger ``final_runs`` adds the missing runs to every fold.
    """
    run = check_run_folder(out, ds, cfg, resume, overwrite)
    state: dict[str, Any] = {'dataset': ds.name, 'info': ds.info, 'config': cfg.comparable(), 'runs': {},
                             'command': command, 'torch': torch.__version__}
    if resume and (run.root / 'state.json').exists():
        state['runs'] = json.loads((run.root / 'state.json').read_text()).get('runs', {})
    barrier()  # every process has checked the folder before rank 0 writes to it
    run.prepare()
    barrier()
    splits = get_splits(run.claim('splits.json'), ds.labels, cfg.n_folds, cfg.seed, cfg.val_fraction, ds.name,
                        cfg.inner_splits)
    run.write_json('state.json', state)

    tasks = [(name, split) for name in cfg.models for split in splits]
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(tasks), desc=f'{ds.name}', unit='fold', dynamic_ncols=True)
    try:
        for name, split in tasks:
            key = f'{name}/{split["fold"]}'
            if bar is not None:
                bar.set_postfix_str(f'{name} fold {split["fold"] + 1}/{len(splits)}')
            if key not in state['runs']:
                _select_on_fold(ds, name, split, cfg, run, state, dataset_args)
            if len(state['runs'][key].get('final_runs', [None])) < cfg.final_runs:
                _add_final_runs(ds, name, split, cfg, run, state)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return state


def _select_on_fold(ds: GraphDataset, name: str, split: dict, cfg: BenchmarkConfig, run: RunFolder,
                    state: dict[str, Any], dataset_args: dict[str, Any] | None) -> None:
    """Train every grid configuration of model ``name`` on one outer fold (once per inner split) and store the
    selected one's record (and model, with ``cfg.save_models``); the state is written once the fold is done."""
    t0 = time.perf_counter()
    candidates = []  # per configuration: its runs, one per inner split
    best_model = None
    n_inner = cfg.inner_splits
    checkpoints = [[f'checkpoints/{name}/fold{split["fold"]}_cfg{j}' + (f'_split{i}' if i else '') + '.pt'
                    for i in range(n_inner)] for j in range(len(cfg.grid))]
    for j, grid_cfg in enumerate(cfg.grid):
        runs = []
        for i in range(n_inner):
            desc = f'{name} f{split["fold"] + 1} c{j + 1}/{len(cfg.grid)}' + (f' split {i + 1}' if i else '')
            rec, m = _train_one(ds, name, inner_split(split, i), cfg, grid_cfg,
                                run_seed_of(cfg.seed, split['fold'], j, i), run.claim(checkpoints[j][i]), desc)
            runs.append(rec)
            if i == 0:  # the first split's model is the one saved
                model = m
        rec = runs[0] if n_inner == 1 else _mean_over_inner_splits(runs)
        candidates.append(rec)
        if max(candidates, key=lambda r: r['val_score']) is rec:
            best_model = (model, runs[0])
    selected = max(candidates, key=lambda r: r['val_score'])
    choice = {}
    if len(candidates) > 1 and n_inner == 1 and all('val_a_acc' in c['curve'] for c in candidates):
        # The selected configuration's own held-out figure saw the graphs that chose it; this one does not.
        patience = [c['train'].get('patience', cfg.patience) for c in candidates]
        choice['grid_choice_heldout_val_acc'] = heldout_choice_accuracy([c['curve'] for c in candidates], patience,
                                                                        cfg.select)[0]
    if cfg.save_models and best_model is not None:
        model, rec = best_model
        run.torch_save(f'models/{name}_fold{split["fold"]}.pt', {
            'name': name, 'in_channels': ds.num_features, 'num_classes': ds.num_classes,
            'hparams': rec['hparams'], 'state_dict': model.state_dict(), 'dataset': ds.name,
            'dataset_args': dataset_args or {}, 'fold': split['fold'], 'test_idx': split['test'],
            'test_acc': rec['test_acc']})
    state['runs'][f'{name}/{split["fold"]}'] = {
        'model': name, 'fold': split['fold'], **selected, 'selected_config': cfg.grid.index(selected['config']),
        'grid_val_acc': [c['val_acc'] for c in candidates],
        'grid_heldout_val_acc': [c['heldout_val_acc'] for c in candidates], **choice,
        'seconds': time.perf_counter() - t0}
    run.write_json('state.json', state)
    for rel in itertools.chain(*checkpoints):  # the fold is stored: drop its checkpoints
        run.remove(rel)


def _mean_over_inner_splits(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's record over its inner splits: the first run's record with the figures that select and
    report (validation score, accuracy and loss, held-out validation, test accuracy and loss) replaced by their means
    over the runs, which are listed as ``final_runs`` with their inner ``split``."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    finals = [{'split': i, **{k: r.get(k) for k in (*FINAL_RUN_KEYS, 'val_loss')}} for i, r in enumerate(runs)]
    return {**runs[0], **{k: mean(k) for k in ('val_score', 'val_acc', 'val_loss', 'heldout_val_acc', 'test_acc',
                                                'test_loss')}, 'final_runs': finals}


# What each final run keeps in its fold's record.
FINAL_RUN_KEYS = ('seed', 'test_acc', 'test_loss', 'val_acc', 'heldout_val_acc', 'best_epoch', 'epochs_run')


def _add_final_runs(ds: GraphDataset, name: str, split: dict, cfg: BenchmarkConfig, run: RunFolder,
                    state: dict[str, Any]) -> None:
    """Train the selected configuration of a stored fold until it has ``cfg.final_runs`` runs; the fold's test
    accuracy and loss become their means. The state is written after every run."""
    record = state['runs'][f'{name}/{split["fold"]}']
    j = record.get('selected_config', 0)  # runs written before it was recorded had one configuration
    finals = record.setdefault('final_runs', [{k: record.get(k) for k in FINAL_RUN_KEYS}])
    for r in range(len(finals), cfg.final_runs):
        t0 = time.perf_counter()
        rel = f'checkpoints/{name}/fold{split["fold"]}_cfg{j}_run{r}.pt'
        rec, _ = _train_one(ds, name, split, cfg, cfg.grid[j], run_seed_of(cfg.seed, split['fold'], j, r),
                            run.claim(rel), desc=f'{name} f{split["fold"] + 1} run {r + 1}/{cfg.final_runs}')
        finals.append({k: rec[k] for k in FINAL_RUN_KEYS})
        record['test_acc'] = float(np.mean([f['test_acc'] for f in finals]))
        record['test_loss'] = float(np.mean([f['test_loss'] for f in finals]))
        record['seconds'] += time.perf_counter() - t0
        run.write_json('state.json', state)
        run.remove(rel)


MODEL_FILE_KEYS = ('name', 'in_channels', 'num_classes', 'hparams', 'state_dict')


def load_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """The record of a model saved by :func:`run_benchmark` (``<out>/models/<model>_fold<k>.pt``): ``name``,
    ``in_channels``, ``num_classes``, ``hparams``, ``state_dict``, ``dataset_args``, ``fold``, ``test_idx``, ...

    Read with ``weights_only=True`` (see :func:`~pyg_ple.bench.io.load_torch_file`); raises
    :class:`~pyg_ple.bench.io.RunFileError` for a file that is not such a record."""
    what = 'a model file written by pyg-ple bench'
    record = load_torch_file(path, what)
    missing = [k for k in MODEL_FILE_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise RunFileError(f'{path} is not {what} (it has no {", ".join(missing)})')
    return record
