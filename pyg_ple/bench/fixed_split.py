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

Results go to a :class:`~pyg_ple.bench.io.RunFolder` as in :mod:`pyg_ple.bench.protocol`: ``state.json`` after every
training run (``resume=True`` skips finished runs, and a run killed half-way continues from its last checkpoint),
``results.json``/``.csv``/``.md``, and the kept model of every run under ``models/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch

from pyg_ple.bench.io import RunFileError, RunFolder
from pyg_ple.bench.models import CategoricalInput, build_model, count_parameters
from pyg_ple.bench.settings import RECIPE_KEYS, BenchmarkConfig, differences, run_seed_of, split_settings
from pyg_ple.bench.tasks import METRIC_LABELS, DatasetSpec, Task, dataset_spec
from pyg_ple.bench.training import TrainConfig, fit, seed_everything

__all__ = ['FIXED_SPLIT_DEFAULTS', 'takes_edge_features', 'model_settings', 'predict', 'evaluate_split',
           'check_fixed_run_folder', 'run_fixed_split', 'summarize_fixed', 'results_table', 'cmd_fixed_split']

# `pyg-ple bench --dataset peptides-func|hiv` without other options: the budget of benchmarks/long_range_plan.md.
FIXED_SPLIT_DEFAULTS = dict(epochs=20, hidden=64, layers=4, batch_size=64, lr=1e-3, patience=None, node_attr=False,
                            final_runs=3)
RESULT_COLUMNS = ('model', 'params', 'epochs', 'seeds', 'val_mean', 'val_std', 'test_mean', 'test_std')


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
                             'command': command, 'torch': torch.__version__, 'versions': _versions(),
                             'machine': _machine()}
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


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------
def summarize_fixed(state: dict[str, Any], models: Sequence[str] | None = None,
                    task: Task | None = None) -> list[dict[str, Any]]:
    """One row per model over the seeds of its selected configuration: ``model, params, epochs, seeds, val_mean,
    val_std, test_mean, test_std`` (population std over seeds; the metric as the field writes it: AP as a fraction,
    ROC-AUC in percent), and ``sec_per_epoch``, ``best_epoch`` (median), ``selected_config``."""
    task = task or dataset_spec(state['dataset']).task
    runs = state['runs']
    names = list(models) if models else list(dict.fromkeys(r['model'] for r in runs.values()))
    rows = []
    for name in names:
        j = state.get('selected', {}).get(name)
        recs = sorted((r for r in runs.values() if r['model'] == name and r['config_index'] == j),
                      key=lambda r: r['seed_index']) if j is not None else []
        if not recs:
            continue
        val = np.array([r['val_metric'] for r in recs]) * task.scale
        test = np.array([r['test_metric'] for r in recs]) * task.scale
        rows.append({'dataset': state['dataset'], 'model': name, 'params': int(recs[0]['params']),
                     'epochs': int((state.get('config') or {}).get('epochs', recs[0]['epochs_run'])),
                     'seeds': len(recs), 'val_mean': float(val.mean()), 'val_std': float(val.std()),
                     'test_mean': float(test.mean()), 'test_std': float(test.std()),
                     'sec_per_epoch': float(np.mean([r['sec_per_epoch'] for r in recs])),
                     'best_epoch': int(np.median([r['best_epoch'] for r in recs])), 'selected_config': j,
                     'hidden': recs[0]['hparams'].get('hidden')})
    return rows


def _fmt(value: float, task: Task) -> str:
    return f'{value:.2f}' if task.scale != 1 else f'{value:.4f}'


def results_table(rows: Sequence[dict[str, Any]], task: Task) -> str:
    """The rows as a Markdown table (metric as the field writes it)."""
    name = METRIC_LABELS[task.metric]
    lines = [f'| model | params | width | epochs | seeds | val {name} | test {name} | s/epoch | '
             'selected epoch (median) |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['hidden']} | {r['epochs']} | {r['seeds']} | "
                     f"{_fmt(r['val_mean'], task)} ± {_fmt(r['val_std'], task)} | "
                     f"{_fmt(r['test_mean'], task)} ± {_fmt(r['test_std'], task)} | {r['sec_per_epoch']:.1f} | "
                     f"{r['best_epoch']} |")
    return '\n'.join(lines)


def results_csv(rows: Sequence[dict[str, Any]], task: Task) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow([*RESULT_COLUMNS, 'sec_per_epoch'])
    for r in rows:
        w.writerow([r['model'], r['params'], r['epochs'], r['seeds'], *(_fmt(r[k], task) for k in
                    ('val_mean', 'val_std', 'test_mean', 'test_std')), f"{r['sec_per_epoch']:.2f}"])
    return buf.getvalue()


def write_fixed_results(run: RunFolder, rows: Sequence[dict[str, Any]], meta: dict[str, Any], spec: DatasetSpec) -> \
        dict[str, Any]:
    """``results.json``, ``results.csv`` (the columns of :data:`RESULT_COLUMNS` and s/epoch) and ``results.md`` (the
    command, the split, the metric, versions and the table) in ``run``."""
    task = spec.task
    md = [f'# {spec.name}: {task.kind} classification, {task.metric}' if task.kind != 'regression'
          else f'# {spec.name}: regression, {task.metric}', '']
    if meta.get('command'):
        md += ['Command:', '', '```', str(meta['command']), '```', '']
    md += [results_table(rows, task), '',
           f'Split: {spec.note}. Each model trained with {meta.get("seeds")} seed(s) on the training split; the epoch '
           f'{"of lowest validation loss" if meta.get("select") == "loss" else "of best validation " + task.metric} '
           'is kept and scored once on test; mean ± population std over seeds. Parameter counts as stated (width '
           'per model from the budget where --params is given).',
           f'Versions: {meta.get("versions")}.', '']
    return {'json': run.write_json('results.json', {**meta, 'results': list(rows)}),
            'csv': run.write_text('results.csv', results_csv(rows, task)),
            'md': run.write_text('results.md', '\n'.join(md))}


def _machine() -> str:
    """What the timings ran on: cores and architecture (never a host name or a path)."""
    return f'{os.cpu_count()} cores, {platform.machine()}, {platform.system()}'


def _versions() -> str:
    parts = [f'python {platform.python_version()}', f'torch {torch.__version__}']
    for module in ('torch_geometric', 'ogb', 'rdkit', 'sklearn'):
        try:
            parts.append(f'{module} {__import__(module).__version__}')
        except (ImportError, AttributeError):
            pass
    return ', '.join(parts)


# --------------------------------------------------------------------------------------------------------------------
# Command line: `pyg-ple bench --dataset peptides-func|hiv`
# --------------------------------------------------------------------------------------------------------------------
def cmd_fixed_split(args: argparse.Namespace) -> int:
    """``pyg-ple bench`` on a fixed-split dataset (called by :func:`pyg_ple.bench.cli.cmd_bench`); usage errors raise
    :class:`pyg_ple.bench.cli.CommandError`."""
    from pyg_ple.bench.budget import widths_for_budget
    from pyg_ple.bench.cli import CommandError, validate_bench_args
    from pyg_ple.bench.molecules import MolExtraMissingError, atom_feature_dims, bond_feature_dims
    from pyg_ple.bench.settings import check_setting
    spec = dataset_spec(args.dataset)
    args.dataset = spec.name  # validate_bench_args fills the options not given from FIXED_SPLIT_DEFAULTS
    if args.inner_splits > 1:
        raise CommandError(f'--inner-splits applies to k-fold datasets; {spec.name} has a fixed split (--final-runs '
                           'sets the seeds)')
    params = getattr(args, 'params', None)
    if params is not None:
        try:
            check_setting('epochs', params, '--params')  # an integer >= 1
        except ValueError as e:
            raise CommandError(str(e)) from None
        if isinstance(args.hidden, tuple):
            raise CommandError('--params sets each model\'s width: leave out --hidden')
    cfg = validate_bench_args(args)
    cfg.hparams.pop('edge_dim', None)  # set per model from its width (model_settings)
    if params is not None and any('hidden' in c for c in cfg.grid):
        raise CommandError('--params sets each model\'s width: the --grid must not set "hidden"')
    try:
        categorical = CategoricalInput(tuple(atom_feature_dims()), tuple(bond_feature_dims()))
    except MolExtraMissingError as e:
        raise CommandError(str(e)) from None
    outputs = 10 if spec.name == 'peptides-func' else 1
    if params is not None:
        try:
            widths = widths_for_budget(cfg.models, params, categorical, outputs, cfg.hparams, model_settings)
        except ValueError as e:
            raise CommandError(f'--params {e}') from None
        cfg = dataclasses.replace(cfg, model_hparams={n: {'hidden': w} for n, (w, _) in widths.items()})
    if args.threads:
        torch.set_num_threads(args.threads)
    pe = None if args.pe == 'none' else args.pe
    try:
        data = spec.loader(spec.name, args.root, pe=pe, pe_dim=args.pe_dim)
    except (FileNotFoundError, ValueError, MolExtraMissingError) as e:
        raise CommandError(str(e)) from None
    spec = split_spec(spec, data)
    from pyg_ple.bench.cli import _bench_out
    out = _bench_out(args)
    try:
        check_fixed_run_folder(out, data, cfg, resume=args.resume, overwrite=args.overwrite)
    except RunFileError as e:
        raise CommandError(f'--out {e}') from None
    command = 'pyg-ple ' + ' '.join(shlex.quote(a) for a in (args.argv or []))
    width = {n: split_settings(cfg, {}, n)[1]['hidden'] for n in cfg.models}
    sizes = ' / '.join(f'{len(data.split[k]):,}' for k in ('train', 'val', 'test'))
    print(f'pyg-ple bench: {data.name}, {len(data)} graphs, {spec.note} ({sizes}), {spec.task.kind}, metric '
          f'{spec.task.metric}; models {", ".join(cfg.models)}; {cfg.final_runs} seed(s) x {len(cfg.grid)} '
          f'config(s) x {cfg.epochs} epochs; width {", ".join(f"{n} {w}" for n, w in width.items())}; out {out}',
          file=sys.stderr)
    t0 = time.time()
    try:
        state = run_fixed_split(data, cfg, out, resume=args.resume, overwrite=args.overwrite, command=command,
                                spec=spec)
    except KeyboardInterrupt:
        print(f'\npyg-ple bench: interrupted; finished runs are in {out / "state.json"}. Continue with the same '
              'command and --resume.', file=sys.stderr)
        return 130
    rows = summarize_fixed(state, cfg.models, spec.task)
    meta = {'command': command, 'dataset': data.name, 'split': spec.note, 'info': data.info,
            'config': cfg.comparable(), 'seeds': cfg.final_runs, 'select': cfg.select, 'params_target': params,
            'versions': _versions(), 'seconds': time.time() - t0}
    paths = write_fixed_results(RunFolder(out, 'add').prepare(), rows, meta, spec)
    print(results_table(rows, spec.task))
    print(f'\nresults: {", ".join(str(p) for p in paths.values())}')
    return 0
