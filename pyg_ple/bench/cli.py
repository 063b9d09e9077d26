"""The ``pyg-ple`` command line (also ``python -m pyg_ple``).

``pyg-ple bench``   graph classification under the protocol of Errica et al. (stratified 10-fold CV, inner validation
                    split, model selection over a grid); with no options an offline run on scikit-learn's digits as
                    graphs, a few minutes on 2 CPU cores.
``pyg-ple graph``   export the attention graph of one layer and head of a trained model for one graph (GraphML + PNG).

A usage error (a bad option value, an output folder that cannot be used, a file that is not a model) is reported as one
line ``pyg-ple <command>: error: ...`` on stderr with exit status 2, as argparse reports its own.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pyg_ple import __version__
from pyg_ple.bench.io import RunFileError, run_folder_lock
from pyg_ple.bench.options import (
    DIGITS_DEFAULTS,
    NO_PATIENCE,
    add_bench,
    add_graph,
    bench_defaults,
    default_models,
)

if TYPE_CHECKING:
    from pyg_ple.bench.datasets import GraphDataset
    from pyg_ple.bench.settings import BenchmarkConfig

class CommandError(Exception):
    """A usage error found after parsing: reported like argparse's own (one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a usage error as the single line ``<prog>: error: <message>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'{self.prog}: error: {" ".join(message.splitlines())}\n')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog='pyg-ple',
        description='Transformer attention as an explicit graph: Laplacian-diffusion attention for PyG.')
    parser.add_argument('--version', action='version', version=f'pyg-ple {__version__}')
    sub = parser.add_subparsers(dest='command', title='commands')
    add_bench(sub, cmd_bench)
    add_graph(sub, cmd_graph)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------------------------------
def _parse_grid(text: str | None) -> list[dict[str, Any]]:
    from pyg_ple.bench.settings import expand_grid
    if text is None:
        return [{}]
    source = '--grid'
    if not text.strip().startswith(('{', '[')):
        path = Path(text)
        if not path.is_file():
            raise CommandError(f'--grid {text!r} is neither JSON (an object or a list) nor an existing file')
        text, source = path.read_text(), f'--grid file {path}'
    try:
        return expand_grid(json.loads(text))
    except json.JSONDecodeError as e:
        raise CommandError(f'{source} is not valid JSON ({e})') from None
    except ValueError as e:
        raise CommandError(f'{source}: {e}') from None


def _parse_models(text: str | None, digits: bool) -> list[str]:
    from pyg_ple.bench.models import MODEL_NAMES
    if text is None:
        text = default_models(digits)
    names = [m.strip() for m in text.split(',')]
    unknown = [m for m in names if m not in MODEL_NAMES]
    if names == ['']:
        problem = 'names no model'
    elif unknown:
        problem = f'has unknown model(s) {", ".join(map(repr, unknown))}'
    elif len(set(names)) < len(names):
        problem = 'names a model twice'
    else:
        return names
    raise CommandError(f'--models {text!r} {problem}; choose from {", ".join(MODEL_NAMES)}')


def _check_device(device: str) -> None:
    import torch
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e:
        raise CommandError(f'--device {device} cannot be used here ({str(e).splitlines()[0]}); '
                           f'CUDA available: {torch.cuda.is_available()}') from None


def fill_bench_defaults(args: argparse.Namespace) -> None:
    """Set the options of ``pyg-ple bench`` that were not given to the dataset's defaults
    (:func:`~pyg_ple.bench.options.bench_defaults`), and ``--patience none`` to no early stopping."""
    for key, value in bench_defaults(args.dataset).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.patience == NO_PATIENCE:
        args.patience = None


def validate_bench_args(args: argparse.Namespace) -> BenchmarkConfig:
    """Check every ``pyg-ple bench`` argument that can be checked without the data and return the run's
    :class:`~pyg_ple.bench.settings.BenchmarkConfig`; raises :class:`CommandError` naming the option.
    :func:`validate_bench_data` checks the rest once the dataset is loaded."""
    from pyg_ple.bench.io import RunFolder
    from pyg_ple.bench.settings import BenchmarkConfig, check_setting
    digits = args.dataset.lower() == 'digits'
    fill_bench_defaults(args)
    try:
        for flag, key, value in (('--epochs', 'epochs', args.epochs), ('--folds', 'n_folds', args.folds),
                                 ('--seed', 'seed', args.seed), ('--batch-size', 'batch_size', args.batch_size),
                                 ('--lr', 'lr', args.lr), ('--weight-decay', 'weight_decay', args.weight_decay),
                                 ('--patience', 'patience', args.patience),
                                 ('--final-runs', 'final_runs', args.final_runs),
                                 ('--inner-splits', 'inner_splits', args.inner_splits),
                                 ('--optimizer', 'optimizer', args.optimizer),
                                 ('--schedule', 'schedule', None if args.schedule == 'none' else args.schedule),
                                 ('--warmup-epochs', 'warmup_epochs', args.warmup_epochs),
                                 ('--decay-every', 'decay_every', args.decay_every),
                                 ('--decay-gamma', 'decay_gamma', args.decay_gamma),
                                 ('--grad-clip', 'grad_clip', args.grad_clip),
                                 ('--ema-decay', 'ema_decay', args.ema_decay),
                                 ('--checkpoint-every', 'checkpoint_every', args.checkpoint_every)):
            check_setting(key, value, flag)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.inner_splits > 1 and args.final_runs > 1:
        raise CommandError('--inner-splits and --final-runs exclude each other: with --inner-splits each fold '
                           'averages one training run per inner split')
    for flag, value, lo in (('--digits-n', args.digits_n, 0), ('--threads', args.threads, 1),
                            ('--pe-dim', args.pe_dim, 1 if args.pe != 'none' else 0)):
        if value is not None and value < lo:
            raise CommandError(f'{flag} must be an integer >= {lo}, got {value}')
    if digits and args.edge_features:
        raise CommandError('--edge-features applies to TU datasets with edge labels (MUTAG, PTC_MR, ...); the digits '
                           'graphs have none')
    if args.edge_values and (digits or args.edge_features is False or args.attention == 'full'):
        raise CommandError('--edge-values adds edge features to the transformers\' values: it needs them (a TU '
                           'dataset with edge labels, without --no-edge-features, and --attention native or '
                           'native+full)')
    if args.edge_features and args.attention == 'full':
        raise CommandError("--edge-features needs --attention native or native+full: the all-pairs path of 'full' "
                           'has no edge features')
    models = _parse_models(args.models, digits)
    if args.readout_layers != 'last' and any(name.endswith('-tokens') for name in models):
        raise CommandError(f'--readout-layers {args.readout_layers} does not apply to the token models (they '
                           "average their last layer's tokens); leave it out or drop the -tokens models")
    _check_device(args.device)
    grid = _parse_grid(args.grid)
    widths = args.hidden if isinstance(args.hidden, tuple) else (args.hidden,)
    if len(widths) > 1:  # a choice of width: each configuration that does not set one, once per width
        grid = [one for c in grid for one in ([c] if 'hidden' in c else [{**c, 'hidden': w} for w in widths])]
    hparams = dict(hidden=widths[0], num_layers=args.layers, heads=args.heads, dropout=args.dropout,
                   pool=args.pool, attention=args.attention, step_size=args.step_size,
                   learn_step_size=args.learn_step_size, pe_dim=args.pe_dim if args.pe != 'none' else 0,
                   ple_init=args.ple_init, encoder_norm=args.encoder_norm, input_norm=args.node_attr,
                   # Always recorded: a run begun when they defaulted otherwise is then refused on --resume
                   # instead of continuing with other blocks.
                   norm=args.norm, prenorm=args.prenorm, degree_scaler=args.degree_scaler)
    # Recorded only when set, so that runs from before these options still resume.
    if args.share_weights:
        hparams['share_weights'] = True
    if args.edge_values:
        hparams['edge_values'] = True
    if args.uniform_init:
        if args.ple_init:
            raise CommandError('--uniform-init and --ple-init start the queries differently (W_q = 0, W_q = I): '
                               'give one')
        hparams['uniform_init'] = True
    if args.readout_layers != 'last':
        hparams['readout_layers'] = args.readout_layers
    if _edge_features(args) is not False:  # their width is known once the data is loaded (cmd_bench sets it)
        hparams['edge_dim'] = 1
    try:
        cfg = BenchmarkConfig(models=models, n_folds=args.folds, epochs=args.epochs, seed=args.seed,
                              device=args.device, batch_size=args.batch_size, lr=args.lr,
                              weight_decay=args.weight_decay, patience=args.patience, select=args.select,
                              final_runs=args.final_runs, inner_splits=args.inner_splits,
                              grid=grid, hparams=hparams,
                              optimizer=args.optimizer, schedule=None if args.schedule == 'none' else args.schedule,
                              warmup_epochs=args.warmup_epochs, decay_every=args.decay_every,
                              decay_gamma=args.decay_gamma, grad_clip=args.grad_clip,
                              ema_decay=args.ema_decay,
                              checkpoint_every=args.checkpoint_every, save_models=not args.no_save_models,
                              progress=not args.no_progress)
    except ValueError as e:
        raise CommandError(str(e)) from None
    try:
        RunFolder(_bench_out(args), 'resume' if args.resume else 'overwrite' if args.overwrite else 'new').check()
    except RunFileError as e:
        raise CommandError(f'--out {e}') from None
    return cfg


def validate_bench_data(args: argparse.Namespace, ds: GraphDataset, cfg: BenchmarkConfig) -> None:
    """The checks of ``pyg-ple bench`` that need the data: enough graphs per class for ``--folds``, and a run in
    ``--out`` to resume that has the same settings and data. Raises :class:`CommandError`."""
    import numpy as np

    from pyg_ple.bench.protocol import check_run_folder
    counts = np.bincount(ds.labels)
    smallest = int(counts[counts > 0].min())
    if args.folds > smallest:
        hint = f'use 2 to {smallest} folds' if smallest >= 2 else 'cross-validation needs 2 graphs per class or more'
        raise CommandError(f'--folds {args.folds} is more than the smallest class of {ds.name} allows: it has '
                           f'{smallest} graph(s); {hint}')
    check_run_folder(_bench_out(args), ds, cfg, resume=args.resume, overwrite=args.overwrite)


def _edge_features(args: argparse.Namespace) -> bool | None:
    # --edge-features: True; --no-edge-features: False; neither: the dataset's edge labels where it has them (None,
    # see load_dataset), except on the digits and with --attention full, which have no use for them.
    if args.edge_features is None:
        return False if args.dataset.lower() == 'digits' or args.attention == 'full' else None
    return args.edge_features


def load_bench_dataset(args: argparse.Namespace, cfg: BenchmarkConfig) -> tuple[GraphDataset, dict[str, Any]]:
    """The dataset of ``pyg-ple bench`` ``args`` and the arguments of ``load_dataset`` that rebuild it; sets
    ``cfg.hparams['edge_dim']`` to its edge-feature width (or drops it). Raises :class:`CommandError`."""
    from pyg_ple.bench.datasets import DatasetUnavailableError, load_dataset
    digits = args.dataset.lower() == 'digits'
    digits_n = args.digits_n if args.digits_n is not None else DIGITS_DEFAULTS['digits_n']
    dataset_args = {'name': args.dataset, 'root': args.root, 'pe': None if args.pe == 'none' else args.pe,
                    'pe_dim': args.pe_dim, 'digits_n': (digits_n or None) if digits else None, 'seed': args.seed,
                    'use_node_attr': args.node_attr, 'degree_features': args.degree}
    try:
        ds = load_dataset(**dataset_args, edge_features=_edge_features(args))
    except (DatasetUnavailableError, ValueError) as e:
        raise CommandError(str(e)) from None
    if ds.num_edge_features:  # recorded only when used, so that runs begun before the option existed can resume
        dataset_args['edge_features'] = True
        cfg.hparams['edge_dim'] = ds.num_edge_features
    else:
        if cfg.hparams.get('edge_values'):
            raise CommandError(f'--edge-values needs edge features, and {ds.name} has no edge labels')
        cfg.hparams.pop('edge_dim', None)
    return ds, dataset_args


def _bench_out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out is not None else Path('runs') / args.dataset


PROTOCOL_NOTE = (
    'Protocol (Errica et al. 2020): stratified {folds}-fold outer CV; {inner} inside each '
    'training fold; the epoch and the grid configuration with {selected} are selected; test accuracy of the selected '
    'configuration on the held-out fold{final}; mean ± population std over folds. Grid: {grid}. Same splits for every '
    'model (splits.json). Seed {seed}.')
SELECTED = {'acc': 'the best validation accuracy (ties: lower validation loss)',
            'loss': 'the lowest validation loss'}


def _final_runs_text(state: dict, inner_splits: int = 1) -> str:
    # What the stored folds hold: a resumed run may have more final runs than this call asked for.
    counts = sorted({len(r.get('final_runs', [None])) for r in state['runs'].values()})
    if counts in ([], [1]):
        return ''
    n = counts[0] if len(counts) == 1 else f'{counts[0]} to {counts[-1]}'
    return f', the mean of {n} training runs of it' + (', one per inner split' if inner_splits > 1 else '')


def _inner_text(inner_splits: int) -> str:
    if inner_splits == 1:
        return 'a stratified 10% validation split'
    return (f'{inner_splits} stratified 10% validation splits (every configuration trained once on each; the means '
            'of their figures select)')


def _in_effect(cfg: BenchmarkConfig, key: str, value: Any, name: str | None = None) -> str:
    """``NAME VALUE`` for the first line of a run: the value the options give, or the values of the grid where it
    sets ``key`` (with the options' value where some configuration does not)."""
    values = [c[key] for c in cfg.grid if key in c]
    shown = dict.fromkeys(values if len(values) == len(cfg.grid) else [value, *values])
    text = '/'.join(f'{v:g}' if isinstance(v, float) else str(v) for v in shown)
    return f'{name or key} {text}' + (' (grid)' if values else '')


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from pyg_ple.bench.tasks import dataset_spec
    from pyg_ple.bench.threads import default_threads
    # Before loading, and for every kind of dataset: the per-graph transforms are small work too.
    if args.threads is not None and args.threads < 1:
        raise CommandError(f'--threads must be an integer >= 1, got {args.threads}')
    try:
        threads = args.threads or default_threads()
    except ValueError as e:
        raise CommandError(str(e)) from None
    torch.set_num_threads(threads)
    # One process at a time writes a run folder (torchrun: rank 0, the one that writes, holds the lock).
    holder = os.environ.get('RANK', '0') == '0'
    with run_folder_lock(_bench_out(args)) if holder else contextlib.nullcontext():
        if dataset_spec(args.dataset).split == 'fixed':  # an official split and several seeds, not k-fold
            return _bench_fixed_split(args)
        return _bench_k_fold(args, threads)


def _bench_k_fold(args: argparse.Namespace, threads: int) -> int:
    """``pyg-ple bench`` on a k-fold dataset (TU datasets, digits)."""
    from pyg_ple.bench.distributed import cleanup, init_distributed
    from pyg_ple.bench.protocol import run_benchmark
    from pyg_ple.bench.report import format_table, summarize, write_results
    if args.params is not None:
        raise CommandError('--params applies to peptides-func and hiv; on k-fold datasets set --hidden')
    cfg = validate_bench_args(args)
    ds, dataset_args = load_bench_dataset(args, cfg)
    validate_bench_data(args, ds, cfg)
    out = _bench_out(args)
    command = 'pyg-ple ' + ' '.join(shlex.quote(a) for a in (args.argv or []))
    print(f'pyg-ple bench: {ds.name}, {len(ds)} graphs, {ds.num_features} features, {ds.num_classes} classes; '
          f'models {", ".join(cfg.models)}; {args.folds} folds x {len(cfg.grid)} config(s) x {cfg.epochs} epochs '
          f'({_in_effect(cfg, "patience", cfg.patience)}, {_in_effect(cfg, "lr", cfg.lr)}, '
          f'{_in_effect(cfg, "hidden", cfg.hparams["hidden"], "width")}); '
          f'out {out}; threads {threads}{" (--threads)" if args.threads else " (default; --threads N to change)"}',
          file=sys.stderr)
    t0 = time.time()
    info = init_distributed()  # a no-op unless launched by torchrun
    if info.world_size > 1:
        cfg.device, cfg.progress = str(info.device), cfg.progress and info.is_main
    finished = False
    try:
        state = run_benchmark(ds, cfg, out, resume=args.resume, overwrite=args.overwrite, command=command,
                              dataset_args=dataset_args)
        finished = True
    except KeyboardInterrupt:
        print(f'\npyg-ple bench: interrupted; finished folds are in {out / "state.json"}. Continue with the same '
              'command and --resume.', file=sys.stderr)
        return 130
    finally:
        cleanup(wait_for_all=finished)
    if not info.is_main:
        return 0
    rows = summarize(state, cfg.models)
    grid_text = json.dumps(cfg.grid) if cfg.grid != [{}] else f'one configuration {json.dumps(cfg.hparams)}'
    meta = {'command': command, 'dataset': ds.name, 'info': ds.info, 'config': cfg.comparable(),
            'protocol': PROTOCOL_NOTE.format(folds=args.folds, grid=grid_text, seed=args.seed,
                                             selected=SELECTED[args.select], inner=_inner_text(cfg.inner_splits),
                                             final=_final_runs_text(state, cfg.inner_splits)),
            'seconds': time.time() - t0}
    paths = write_results(out, rows, meta, title=f'{ds.name}: graph classification, {args.folds}-fold CV')
    print(format_table(rows))
    short = [f"{r['model']} {r['ended_by_budget'][0]} of {r['ended_by_budget'][1]}" for r in rows
             if r['ended_by_budget'][0]]
    if short and cfg.patience is not None:
        print(f'\nruns ended by the budget, their best epoch among the last --patience {cfg.patience} of --epochs '
              f'{cfg.epochs}: {", ".join(short)}; a larger --epochs may select later epochs')
    print(f'\nresults: {", ".join(str(p) for p in paths.values())}')
    return 0


# --------------------------------------------------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------------------------------------------------
def _bench_fixed_split(args: argparse.Namespace) -> int:
    """``pyg-ple bench`` on a fixed-split dataset (Peptides-func, HIV): an official split and several seeds."""
    import dataclasses

    from pyg_ple.bench.budget import widths_for_budget
    from pyg_ple.bench.fixed_split import (
        check_fixed_run_folder,
        model_settings,
        run_fixed_split,
        split_spec,
    )
    from pyg_ple.bench.io import RunFolder
    from pyg_ple.bench.models import CategoricalInput
    from pyg_ple.bench.molecules import MolExtraMissingError, atom_feature_dims, bond_feature_dims
    from pyg_ple.bench.report import fixed_results_table, summarize_fixed, versions_text, write_fixed_results
    from pyg_ple.bench.settings import check_setting, split_settings
    from pyg_ple.bench.tasks import dataset_spec
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
    pe = None if args.pe == 'none' else args.pe
    try:
        data = spec.loader(spec.name, args.root, pe=pe, pe_dim=args.pe_dim)
    except (FileNotFoundError, ValueError, MolExtraMissingError) as e:
        raise CommandError(str(e)) from None
    spec = split_spec(spec, data)
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
            'versions': versions_text(), 'seconds': time.time() - t0}
    paths = write_fixed_results(RunFolder(out, 'add').prepare(), rows, meta, spec)
    print(fixed_results_table(rows, spec.task))
    print(f'\nresults: {", ".join(str(p) for p in paths.values())}')
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    import io

    import networkx as nx
    import torch
    from torch_geometric.data import Batch

    from pyg_ple.bench.datasets import DatasetUnavailableError, load_dataset
    from pyg_ple.bench.io import RunFolder
    from pyg_ple.bench.models import TokenClassifier, TransformerClassifier, build_model
    from pyg_ple.bench.protocol import load_model_file
    from pyg_ple.bench.report import draw_attention_graph

    if args.hf is not None or args.text is not None:  # a local Hugging Face model folder instead of a checkpoint
        if args.hf is None or args.text is None:
            raise CommandError('--hf PATH and --text "..." go together: the model of --hf reads --text')
        if args.checkpoint is not None:
            raise CommandError(f'pass either a checkpoint or --hf, not both (got {args.checkpoint} and --hf {args.hf})')
        if args.index is not None or args.root is not None:
            raise CommandError("--index and --root choose a graph of a checkpoint's dataset; with --hf the input is "
                               '--text')
        if not args.out:
            raise CommandError('--hf needs --out, the folder to write the GraphML, PNG and summary files into')
        run = RunFolder(args.out, 'add')
        try:
            run.check()
        except RunFileError as e:
            raise CommandError(f'--out {e}') from None
        try:
            from pyg_ple import hf
            model, tokenizer = hf.load_pretrained(args.hf)
            if tokenizer is None:
                raise ValueError(f'{args.hf} has no tokenizer, which --text needs')
            graphs = hf.attention_graphs(model, tokenizer, text=args.text)
        except (ImportError, ValueError) as e:
            raise CommandError(f'--hf: {e}') from None
        nlayers, heads = len(graphs), graphs[0].heads
        if args.layer is not None and not -nlayers <= args.layer < nlayers:
            raise CommandError(f'--layer {args.layer} is out of range: the model has {nlayers} layers (0 to '
                               f'{nlayers - 1}, or -{nlayers} to -1)')
        if args.head is not None and not 0 <= args.head < heads:
            raise CommandError(f'--head {args.head} is out of range: the model has {heads} heads (0 to {heads - 1})')
        name = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in Path(args.hf).resolve().name) or 'model'
        files = hf.export_files(graphs, name, head=args.head,
                                layers=None if args.layer is None else [args.layer % nlayers],
                                min_weight=args.min_weight,
                                graph_attrs={'model': name, 'model_type': str(model.config.model_type),
                                             'text': args.text})
        run.prepare()
        tokens = graphs[0].num_nodes
        print(f'{name} ({model.config.model_type}) on {tokens} tokens: {nlayers} layers of {heads} heads')
        print(files[f'{name}_summary.md'].decode(), end='')
        for rel, data in files.items():
            print(f'wrote {run.write_bytes(rel, data)}')
        return 0

    if args.checkpoint is None:
        raise CommandError('pass a model file written by pyg-ple bench, or a Hugging Face model folder with --hf')
    if args.layer is None:
        args.layer = 0
    path = Path(args.checkpoint)
    try:
        record = load_model_file(path)
    except FileNotFoundError:
        raise CommandError(f'no such file {path}; pyg-ple bench saves models as <out>/models/<model>_fold<k>.pt') \
            from None
    try:
        model = build_model(record['name'], record['in_channels'], record['num_classes'], **record['hparams'])
        model.load_state_dict(record['state_dict'])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CommandError(f'{path}: its model cannot be rebuilt ({str(e).splitlines()[0]})') from None
    model.eval()
    if not isinstance(model, (TransformerClassifier, TokenClassifier)):
        raise CommandError(f"{path} holds a {record['name']!r} model, which has no attention graph; use a "
                           'transformer, laplacian or mixed model (or their -tokens variants)')
    nlayers = model.config.num_layers
    if not -nlayers <= args.layer < nlayers:
        raise CommandError(f'--layer {args.layer} is out of range: the model has {nlayers} layers (0 to {nlayers - 1}, '
                           f'or -{nlayers} to -1)')
    layer = args.layer % nlayers
    # Into --out, or the attention/ folder of the run the model belongs to.
    run, folder = (RunFolder(args.out, 'add'), '') if args.out else (RunFolder(path.parent.parent, 'add'), 'attention/')
    try:
        run.check()
    except RunFileError as e:
        raise CommandError(f'{e}; pass --out' if not args.out else f'--out {e}') from None
    dargs = dict(record.get('dataset_args') or {}) or {'name': record.get('dataset')}
    if not dargs.get('name'):
        raise CommandError(f'{path} does not name the dataset its model was trained on')
    if args.root is not None:
        dargs['root'] = args.root
    try:
        ds = load_dataset(**dargs)
    except (DatasetUnavailableError, ValueError, TypeError) as e:
        raise CommandError(f'the dataset of {path} cannot be loaded: {e}') from None
    index = args.index if args.index is not None else int((record.get('test_idx') or [0])[0])
    if not 0 <= index < len(ds):
        raise CommandError(f'--index {index} is out of range: {ds.name} has {len(ds)} graphs')
    data = ds.graphs[index]
    att = model.attention_graph(data, layer=layer)
    if args.head is not None and not 0 <= args.head < att.heads:
        raise CommandError(f'--head {args.head} is out of range: the model has {att.heads} heads (0 to '
                           f'{att.heads - 1})')
    with torch.no_grad():
        pred = int(model(Batch.from_data_list([data])).argmax(-1))
    G = att.to_networkx(head=args.head)
    name = record['name']
    G.graph.update({'dataset': ds.name, 'index': index, 'layer': layer,
                    'head': 'mean' if args.head is None else args.head, 'model': name,
                    'label': int(data.y.view(-1)[0]), 'prediction': pred})
    stem = f'{folder}{name}_{ds.name}_g{index}_l{layer}_h{G.graph["head"]}'
    buf = io.BytesIO()
    nx.write_graphml(G, buf)
    run.prepare()
    gpath = run.write_bytes(f'{stem}.graphml', buf.getvalue())
    ppath = run.write_bytes(f'{stem}.png', draw_attention_graph(G, data, ds.name, args.min_weight))
    print(f'{name} on {ds.name}[{index}] (label {G.graph["label"]}, predicted {pred}): layer {layer}, '
          f'head {G.graph["head"]}: {G.number_of_nodes()} nodes, {G.number_of_edges()} attention edges')
    print(f'wrote {gpath}\nwrote {ppath}')
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``pyg-ple`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status (130: interrupted). A usage
    error raises ``SystemExit(2)`` after printing one line ``pyg-ple <command>: error: ...`` on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (CommandError, RunFileError) as e:  # RunFileError: an output folder or input file that cannot be used
        args.parser.error(str(e))


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
