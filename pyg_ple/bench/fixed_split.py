"""The benchmark on datasets with a fixed official split (LRGB Peptides-func, MoleculeNet HIV): the field's protocol
rather than k-fold cross-validation.

* Every model trains on the official training split with ``cfg.final_runs`` seeds (LRGB and OGB report the mean and
  standard deviation over seeds); the task's loss and metric come from :mod:`pyg_ple.bench.tasks` (Peptides-func:
  binary cross-entropy per label, average precision; HIV: binary cross-entropy, ROC-AUC).
* Model selection on the validation split only: within a training run the epoch with the best validation metric is
  kept (``select='loss'``: the lowest validation loss); with a ``grid`` every configuration is trained with the first
  seed, the one with the best validation metric is selected (ties: the first) and trained with the other seeds.
  The test split is scored once per run, with the kept weights.
* Widths at one parameter budget: ``cfg.model_hparams`` holds each model's width (:mod:`pyg_ple.bench.budget`).
  Categorical atom and bond features are embedded as OGB's ``AtomEncoder``/``BondEncoder`` do; the bond embedding is
  as wide as the model (``edge_dim = hidden``, as OGB's GNNs embed bonds per layer at the model's width) for every
  model that takes edge features (not GCN, the token models, or ``attention='full'``).

Runs go to a :class:`~pyg_ple.bench.io.RunFolder` as in :mod:`pyg_ple.bench.protocol`: ``state.json`` after every
training run (``resume=True`` skips finished runs, and a run killed half-way continues from its last checkpoint) and
the kept model of every run under ``models/``; :mod:`pyg_ple.bench.report` turns the state into the results files
(``results.json``/``.csv``/``.md``, :func:`~pyg_ple.bench.report.write_fixed_results`), and ``pyg-ple bench
--dataset peptides-func|hiv`` (:mod:`pyg_ple.bench.cli`) runs both.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import numpy as np
import torch

from pyg_ple.bench.io import RunFileError, RunFolder
from pyg_ple.bench.models import CategoricalInput, build_model, count_parameters
from pyg_ple.bench.report import machine_text, versions_text
from pyg_ple.bench.settings import RECIPE_KEYS, BenchmarkConfig, differences, run_seed_of, split_settings
from pyg_ple.bench.tasks import DatasetSpec, Task, dataset_spec
from pyg_ple.bench.training import TrainConfig, fit, seed_everything

__all__ = ['FIXED_SPLIT_DEFAULTS', 'takes_edge_features', 'model_settings', 'predict', 'evaluate_split',
           'check_fixed_run_folder', 'run_fixed_split']

# `pyg-ple bench --dataset peptides-func|hiv` without other options: the budget of benchmarks/long_range_plan.md.
FIXED_SPLIT_DEFAULTS = dict(epochs=20, hidden=64, layers=4, batch_size=64, lr=1e-3, patience=None, node_attr=False,
                            final_runs=3)


def takes_edge_features(name: str, hparams: dict[str, Any]) -> bool:
    """Whether model ``name`` with ``hparams`` uses edge features: not GCN, the token models, or all-pairs
    attention without native edges (``attention='full'``)."""
    return not (name == 'gcn' or name.endswith('-tokens') or hparams.get('attention') == 'full')


def model_settings(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters model ``name`` is built with on a molecule dataset: ``hparams`` with ``edge_dim`` set to
    the width for a model that takes edge features (the embedded bonds), else 0."""
    return {**hparams, 'edge_dim': int(hparams.get('hidden', 64)) if takes_edge_features(name, hparams) else 0}


def _input(data: Any) -> CategoricalInput:
    return CategoricalInput(tuple(data.node_dims), tuple(data.edge_dims))


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, device: str = 'cpu') -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs and the targets over a loader, ``[graphs, outputs]`` each, in the loader's order."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        outs.append(out.float().cpu())
        ys.append(batch.y.view(out.size(0), -1).float().cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def evaluate_split(model: torch.nn.Module, loader: Any, task: Task, device: str = 'cpu') -> dict[str, float]:
    """``loss`` (the task's training loss over the whole split) and ``metric`` (the task's metric)."""
    out, y = predict(model, loader, device)
    return {'loss': float(task.loss(out, y)), 'metric': task.score(y.numpy(), out.numpy())}


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------
def split_spec(spec: DatasetSpec, data: Any) -> DatasetSpec:
    """``spec`` saying the split ``data`` was loaded with: which one depends on the files (HIV: OGB's split files
    where the root has them, else the rebuilt split), so what results say comes from the loaded data."""
    note = (getattr(data, 'info', None) or {}).get('split')
    return dataclasses.replace(spec, note=note) if note else spec


def _split_digest(split: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in ('train', 'val', 'test'):
        h.update(split[key].numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def check_fixed_run_folder(out: str | os.PathLike, data: Any, cfg: BenchmarkConfig, resume: bool = False,
                           overwrite: bool = False) -> RunFolder:
    """Check, writing nothing, that :func:`run_fixed_split` can use ``out`` (see
    :func:`pyg_ple.bench.protocol.check_run_folder`): a new or empty folder, or an earlier run with the same dataset,
    split and settings to ``resume``, or one to ``overwrite``. Raises :class:`~pyg_ple.bench.io.RunFileError`."""
    if resume and overwrite:
        raise ValueError('resume and overwrite exclude each other')
    run = RunFolder(out, 'resume' if resume else 'overwrite' if overwrite else 'new')
    run.check()
    if resume and (run.root / 'state.json').exists():
        old = json.loads((run.root / 'state.json').read_text())
        new = json.loads(json.dumps({'dataset': data.name, 'split_sha256': _split_digest(data.split),
                                     **cfg.comparable()}))
        found = differences({'dataset': old.get('dataset'), 'split_sha256': old.get('split_sha256'),
                             **(old.get('config') or {})}, new)
        if found:
            raise RunFileError(f'{run.root} holds a run with other settings or data ({"; ".join(found)}): resume '
                               'with the same options, or start afresh with --overwrite or another --out')
    return run


def _train_run(data: Any, spec: DatasetSpec, name: str, cfg: BenchmarkConfig, grid_cfg: dict[str, Any],
               run_seed: int, ckpt: Any, desc: str) -> tuple[dict[str, Any], torch.nn.Module]:
    from torch_geometric.loader import DataLoader
    task, metric = spec.task, spec.task.metric
    train_kw, model_kw = split_settings(cfg, grid_cfg, name)
    model_kw = model_settings(name, model_kw)
    seed_everything(run_seed)
    model = build_model(name, _input(data), data.num_tasks, **model_kw)
    bs = int(train_kw.get('batch_size', cfg.batch_size))
    gen = torch.Generator().manual_seed(run_seed)
    train_loader = DataLoader(data.dataset[data.split['train']], batch_size=bs, shuffle=True, generator=gen)
    val_loader = DataLoader(data.dataset[data.split['val']], batch_size=256)

    def loss_fn(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        return task.loss(m(batch), batch.y)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        r = evaluate_split(m, val_loader, task, cfg.device)
        score = -r['loss'] if cfg.select == 'loss' else task.selection_value(r['metric'])
        return {'val_loss': r['loss'], f'val_{metric}': r['metric'], 'val_score': score}

    tc = TrainConfig(epochs=cfg.epochs, lr=float(train_kw.get('lr', cfg.lr)),
                     weight_decay=float(train_kw.get('weight_decay', cfg.weight_decay)),
                     patience=train_kw.get('patience', cfg.patience), device=cfg.device, seed=run_seed,
                     checkpoint_path=ckpt, checkpoint_every=cfg.checkpoint_every, resume=ckpt is not None,
                     progress=cfg.progress, desc=desc, progress_metrics=(f'val_{metric}', 'val_loss'),
                     **{k: train_kw.get(k, getattr(cfg, k)) for k in RECIPE_KEYS})
    res = fit(model, train_loader, tc, loss_fn, evaluate, monitor='val_score', mode='max',
              meta={'model': name, 'dataset': data.name, 'config': grid_cfg, 'seed': run_seed})
    model.load_state_dict(res.best_state)
    test = evaluate_split(model, DataLoader(data.dataset[data.split['test']], batch_size=256), task, cfg.device)
    best = res.best_metrics
    return {
        'model': name, 'config': grid_cfg, 'seed': run_seed, 'best_epoch': res.best_epoch,
        'epochs_run': res.epochs_run, 'val_metric': best.get(f'val_{metric}'), 'val_loss': best.get('val_loss'),
        'test_metric': test['metric'], 'test_loss': test['loss'], 'train_loss': best.get('train_loss'),
        'sec_per_epoch': res.seconds_per_epoch, 'params': count_parameters(model), 'hparams': model_kw,
        'train': train_kw,
        'curve': {key: [round(h[key], 5) for h in res.history] for key in ('train_loss', f'val_{metric}', 'val_loss')},
    }, model


def run_fixed_split(data: Any, cfg: BenchmarkConfig, out: str | os.PathLike, resume: bool = False,
                    overwrite: bool = False, command: str = '', spec: DatasetSpec | None = None) -> dict[str, Any]:
    """Train every model of ``cfg`` on the fixed split of ``data`` (a :class:`~pyg_ple.bench.molecules.MoleculeData`)
    with ``cfg.final_runs`` seeds, selecting on validation only (see the module docstring); results and state go
    under ``out`` (new, empty, or an earlier run to ``resume`` or ``overwrite``, see
    :func:`check_fixed_run_folder`). Returns the state dict: ``runs`` maps ``"<model>/cfg<j>/seed<r>"`` to the
    record of one training run, ``selected`` each model to the index of its grid configuration."""
    spec = split_spec(spec or dataset_spec(data.name), data)
    if cfg.inner_splits > 1:
        raise ValueError(f'inner_splits ({cfg.inner_splits}) applies to k-fold cross-validation; {data.name} has a '
                         'fixed split (final_runs sets the seeds)')
    run = check_fixed_run_folder(out, data, cfg, resume, overwrite)
    state: dict[str, Any] = {'dataset': data.name, 'split': spec.note, 'split_sha256': _split_digest(data.split),
                             'task': {'kind': spec.task.kind, 'metric': spec.task.metric,
                                      'higher_is_better': spec.task.higher_is_better},
                             'info': data.info, 'config': cfg.comparable(), 'runs': {}, 'selected': {},
                             'command': command, 'torch': torch.__version__, 'versions': versions_text(),
                             'machine': machine_text()}
    if resume and (run.root / 'state.json').exists():
        old = json.loads((run.root / 'state.json').read_text())
        state['runs'], state['selected'] = old.get('runs', {}), old.get('selected', {})
    run.prepare()
    run.write_json('state.json', state)
    todo = len(cfg.models) * (len(cfg.grid) + cfg.final_runs - 1)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=todo, desc=data.name, unit='run', dynamic_ncols=True)
    try:
        for name in cfg.models:
            for j, grid_cfg in enumerate(cfg.grid):  # every configuration with the first seed
                _run_once(data, spec, name, cfg, run, state, j, 0, bar)
            candidates = [state['runs'][f'{name}/cfg{j}/seed0'] for j in range(len(cfg.grid))]
            scores = [(-c['val_loss'] if cfg.select == 'loss' else spec.task.selection_value(c['val_metric']))
                      for c in candidates]
            selected = int(np.argmax(scores))  # the first of equal ones
            state['selected'][name] = selected
            for r in range(1, cfg.final_runs):
                _run_once(data, spec, name, cfg, run, state, selected, r, bar)
            run.write_json('state.json', state)
    finally:
        if bar is not None:
            bar.close()
    return state


def _run_once(data: Any, spec: DatasetSpec, name: str, cfg: BenchmarkConfig, run: RunFolder, state: dict[str, Any],
              j: int, r: int, bar: Any) -> None:
    key = f'{name}/cfg{j}/seed{r}'
    if bar is not None:
        bar.set_postfix_str(f'{name} config {j + 1}/{len(cfg.grid)} seed {r + 1}/{cfg.final_runs}')
    if key not in state['runs']:
        t0 = time.perf_counter()
        rel = f'checkpoints/{name}/cfg{j}_seed{r}.pt'
        rec, model = _train_run(data, spec, name, cfg, cfg.grid[j], run_seed_of(cfg.seed, 0, j, r), run.claim(rel),
                                desc=f'{name} c{j + 1} seed {r + 1}/{cfg.final_runs}')
        rec.update(config_index=j, seed_index=r, seconds=time.perf_counter() - t0)
        if cfg.save_models:
            categorical = _input(data)
            run.torch_save(f'models/{name}_cfg{j}_seed{r}.pt', {
                'name': name, 'in_channels': categorical.as_dict(), 'num_classes': data.num_tasks,
                'hparams': rec['hparams'], 'state_dict': model.state_dict(), 'dataset': data.name,
                'dataset_args': {'name': data.name}, 'seed': rec['seed'],
                f'test_{spec.task.metric}': rec['test_metric']})
        state['runs'][key] = rec
        run.write_json('state.json', state)
        run.remove(rel)
    if bar is not None:
        bar.update(1)
