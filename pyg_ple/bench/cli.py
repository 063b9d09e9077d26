"""The ``pyg-ple`` command line (also ``python -m pyg_ple``).

``pyg-ple bench``   graph classification under the protocol of Errica et al. (stratified 10-fold CV, inner validation
                    split, model selection over a grid); with no options an offline run on scikit-learn's digits as
                    graphs, a few minutes on 2 CPU cores.
``pyg-ple graph``   export the attention graph of one layer and head of a trained model for one graph (GraphML + PNG).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pyg_ple import __version__

DEFAULT_TU_MODELS = 'gcn,gat,gin,gps,transformer,laplacian,mixed'
DEFAULT_DIGITS_MODELS = 'gcn,gat,gin,transformer,laplacian,mixed,laplacian-tokens'
# The offline default: a stratified subset of the digits, sized to finish in a few minutes on 2 cores.
DIGITS_DEFAULTS = dict(digits_n=300, epochs=10, hidden=32, layers=2, batch_size=16, lr=3e-3)
TU_DEFAULTS = dict(epochs=100, hidden=64, layers=3, batch_size=32, lr=1e-3)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'bench', help='graph classification benchmark (Errica et al. protocol)',
        description='Graph classification under the protocol of Errica et al. (2020): stratified k-fold outer CV, a '
                    'stratified 10%% validation split inside each training fold for model selection over --grid, '
                    'test accuracy of the selected model per fold, mean +- std. With no options: scikit-learn digits '
                    'as graphs, offline, a few minutes on 2 CPU cores.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset', default='digits',
                   help="'digits' (offline, ships with scikit-learn) or a TU dataset name (MUTAG, PROTEINS, ...)")
    p.add_argument('--models', default=None,
                   help=f'comma-separated model names (default: {DEFAULT_DIGITS_MODELS} on digits, '
                        f'{DEFAULT_TU_MODELS} on TU datasets); see pyg_ple.bench.models.MODEL_NAMES')
    p.add_argument('--folds', type=int, default=10, help='outer cross-validation folds')
    p.add_argument('--epochs', type=int, default=None,
                   help=f'epochs per training run (default {DIGITS_DEFAULTS["epochs"]} on digits, '
                        f'{TU_DEFAULTS["epochs"]} on TU)')
    p.add_argument('--root', default=None,
                   help='data folder with <NAME>/raw or TUDataset/<NAME>/raw (default: $PYG_PLE_DATA, else '
                        '~/.cache/pyg_ple, where PyG downloads as usual)')
    p.add_argument('--out', default=None, help='output folder (default: runs/<dataset>)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--resume', action='store_true',
                   help='continue an interrupted run in --out: finished folds are kept, an interrupted training run '
                        'continues from its last checkpoint')
    p.add_argument('--grid', default=None,
                   help='model-selection grid: JSON (or a JSON file) {"lr": [1e-3, 1e-4], "hidden": [32, 64]} or a '
                        'list of configurations; keys lr, weight_decay, batch_size, patience, grad_clip configure '
                        'training, the others the model (default: one configuration)')
    p.add_argument('--batch-size', type=int, default=None, help='default 16 on digits, 32 on TU')
    p.add_argument('--lr', type=float, default=None, help='default 3e-3 on digits, 1e-3 on TU')
    p.add_argument('--weight-decay', type=float, default=0.0)
    p.add_argument('--patience', type=int, default=None, help='early-stopping patience in epochs (default: none)')
    p.add_argument('--hidden', type=int, default=None, help='hidden width (default 32 on digits, 64 on TU)')
    p.add_argument('--layers', type=int, default=None, help='number of layers (default 2 on digits, 3 on TU)')
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--dropout', type=float, default=0.1)
    p.add_argument('--pool', default='mean', choices=['mean', 'add', 'max'])
    p.add_argument('--attention', default='native', choices=['native', 'full', 'both'],
                   help='what the transformer blocks attend over')
    p.add_argument('--step-size', type=float, default=1.0, help='Laplacian step size eta')
    p.add_argument('--learn-step-size', action='store_true')
    p.add_argument('--ple-init', action='store_true',
                   help='transformer blocks start as the diffusion step: W_v = W_o = I (pyg_ple.nn.block.ple_init_)')
    p.add_argument('--encoder-norm', action='store_true',
                   help='LayerNorm after the node encoder of the transformer models (residual stream on LN scale)')
    p.add_argument('--node-attr', action='store_true',
                   help='TU datasets: use the continuous node attributes as well as the node labels (ENZYMES: 3 + 18, '
                        'as Errica et al.); adds a BatchNorm on the raw features of every model (input_norm)')
    p.add_argument('--degree', action='store_true',
                   help='TU datasets with node features: append the one-hot node degree to them')
    p.add_argument('--pe', default='none', choices=['none', 'rw', 'lap'], help='positional encoding (all models)')
    p.add_argument('--pe-dim', type=int, default=8)
    p.add_argument('--digits-n', type=int, default=None,
                   help=f'digits: stratified subset size (default {DIGITS_DEFAULTS["digits_n"]}; 0 = all 1797)')
    p.add_argument('--checkpoint-every', type=int, default=5, help='epochs between training checkpoints')
    p.add_argument('--no-save-models', action='store_true', help='do not keep the selected model of each fold')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=cmd_bench)


def _add_graph(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'graph', help='export the attention graph of a trained model (GraphML + PNG)',
        description='Load a model saved by `pyg-ple bench` (<out>/models/<model>_fold<k>.pt), run it on one graph of '
                    'its dataset and export the attention graph of one layer and head: GraphML (networkx) and a PNG '
                    'drawing with edge widths by attention weight.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('checkpoint', help='model file written by pyg-ple bench')
    p.add_argument('--index', type=int, default=None, help='graph index in the dataset (default: first test graph)')
    p.add_argument('--layer', type=int, default=0)
    p.add_argument('--head', type=int, default=None, help='head (default: mean over heads)')
    p.add_argument('--root', default=None, help='data folder (as for bench)')
    p.add_argument('--out', default=None, help='output folder (default: next to the checkpoint)')
    p.add_argument('--min-weight', type=float, default=0.0, help='drop edges below this weight in the drawing')
    p.set_defaults(func=cmd_graph)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-ple',
        description='Transformer attention as an explicit graph: Laplacian-diffusion attention for PyG.')
    parser.add_argument('--version', action='version', version=f'pyg-ple {__version__}')
    sub = parser.add_subparsers(dest='command', title='commands')
    _add_bench(sub)
    _add_graph(sub)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------------------------------
def _parse_grid(text: str | None) -> list[dict[str, Any]]:
    from pyg_ple.bench.protocol import expand_grid
    if not text:
        return [{}]
    src = Path(text)
    try:
        raw = json.loads(src.read_text() if src.suffix == '.json' and src.exists() else text)
    except json.JSONDecodeError as e:
        raise SystemExit(f'pyg-ple bench: --grid is not valid JSON ({e}): {text!r}')
    if not isinstance(raw, (dict, list)):
        raise SystemExit('pyg-ple bench: --grid must be a JSON object of lists or a list of objects')
    return expand_grid(raw)


PROTOCOL_NOTE = (
    'Protocol (Errica et al. 2020): stratified {folds}-fold outer CV; a stratified 10% validation split inside each '
    'training fold; the epoch and the grid configuration with the best validation accuracy (ties: lower validation '
    'loss) are selected; test accuracy of the selected model on the held-out fold; mean ± population std over folds. '
    'Grid: {grid}. Same splits for every model (splits.json). Seed {seed}.')


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from pyg_ple.bench.datasets import DatasetUnavailableError, load_dataset
    from pyg_ple.bench.models import MODEL_NAMES
    from pyg_ple.bench.distributed import cleanup, init_distributed
    from pyg_ple.bench.protocol import BenchmarkConfig, format_table, run_benchmark, summarize, write_results

    if args.threads:
        torch.set_num_threads(args.threads)
    digits = args.dataset.lower() == 'digits'
    d = DIGITS_DEFAULTS if digits else TU_DEFAULTS
    models = [m.strip() for m in (args.models or (DEFAULT_DIGITS_MODELS if digits else DEFAULT_TU_MODELS)).split(',')
              if m.strip()]
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        print(f'pyg-ple bench: unknown model(s) {", ".join(unknown)}; choose from {", ".join(MODEL_NAMES)}',
              file=sys.stderr)
        return 2
    epochs = args.epochs if args.epochs is not None else d['epochs']
    digits_n = args.digits_n if args.digits_n is not None else DIGITS_DEFAULTS['digits_n']
    pe = None if args.pe == 'none' else args.pe
    dataset_args = {'name': args.dataset, 'root': args.root, 'pe': pe, 'pe_dim': args.pe_dim,
                    'digits_n': (digits_n or None) if digits else None, 'seed': args.seed,
                    'use_node_attr': args.node_attr, 'degree_features': args.degree}
    try:
        ds = load_dataset(**dataset_args)
    except (DatasetUnavailableError, ValueError) as e:
        print(f'pyg-ple bench: {e}', file=sys.stderr)
        return 2
    hparams = dict(hidden=args.hidden or d['hidden'], num_layers=args.layers or d['layers'], heads=args.heads,
                   dropout=args.dropout, pool=args.pool, attention=args.attention, step_size=args.step_size,
                   learn_step_size=args.learn_step_size, pe_dim=args.pe_dim if pe else 0,
                   ple_init=args.ple_init, encoder_norm=args.encoder_norm, input_norm=args.node_attr)
    grid = _parse_grid(args.grid)
    cfg = BenchmarkConfig(models=models, n_folds=args.folds, epochs=epochs, seed=args.seed, device=args.device,
                          batch_size=args.batch_size or d['batch_size'], lr=args.lr or d['lr'], weight_decay=args.weight_decay,
                          patience=args.patience, grid=grid, hparams=hparams, checkpoint_every=args.checkpoint_every,
                          save_models=not args.no_save_models, progress=not args.no_progress)
    out = Path(args.out or Path('runs') / args.dataset)
    command = 'pyg-ple ' + ' '.join(shlex.quote(a) for a in (args.argv or []))
    print(f'pyg-ple bench: {ds.name}, {len(ds)} graphs, {ds.num_features} features, {ds.num_classes} classes; '
          f'models {", ".join(models)}; {args.folds} folds x {len(grid)} config(s) x {epochs} epochs; out {out}',
          file=sys.stderr)
    t0 = time.time()
    info = init_distributed()  # a no-op unless launched by torchrun
    if info.world_size > 1:
        cfg.device, cfg.progress = str(info.device), cfg.progress and info.is_main
    try:
        state = run_benchmark(ds, cfg, out, resume=args.resume, command=command, dataset_args=dataset_args)
    except KeyboardInterrupt:
        print(f'\npyg-ple bench: interrupted; finished folds are in {out / "state.json"}. Continue with the same '
              'command and --resume.', file=sys.stderr)
        return 130
    finally:
        cleanup()
    if not info.is_main:
        return 0
    rows = summarize(state, models)
    grid_text = json.dumps(grid) if grid != [{}] else f'one configuration {json.dumps(hparams)}'
    meta = {'command': command, 'dataset': ds.name, 'info': ds.info, 'config': cfg.comparable(),
            'protocol': PROTOCOL_NOTE.format(folds=args.folds, grid=grid_text, seed=args.seed),
            'seconds': time.time() - t0}
    paths = write_results(out, rows, meta, title=f'{ds.name}: graph classification, {args.folds}-fold CV')
    print(format_table(rows))
    print(f'\nresults: {", ".join(str(p) for p in paths.values())}')
    return 0


# --------------------------------------------------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------------------------------------------------
def cmd_graph(args: argparse.Namespace) -> int:
    import io

    import networkx as nx
    import torch

    from pyg_ple.bench.datasets import DatasetUnavailableError, load_dataset
    from pyg_ple.bench.models import TokenClassifier, TransformerClassifier, build_model
    from pyg_ple.bench.io import atomic_write_bytes

    ckpt_path = Path(args.checkpoint)
    if not ckpt_path.exists():
        print(f'pyg-ple graph: no such file {ckpt_path}; models are saved by pyg-ple bench under '
              '<out>/models/<model>_fold<k>.pt', file=sys.stderr)
        return 2
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    model = build_model(ckpt['name'], ckpt['in_channels'], ckpt['num_classes'], **ckpt['hparams'])
    model.load_state_dict(ckpt['state_dict'])
    model.eval()
    if not isinstance(model, (TransformerClassifier, TokenClassifier)):
        print(f"pyg-ple graph: model {ckpt['name']!r} has no attention graph; use a transformer, laplacian or mixed "
              'model', file=sys.stderr)
        return 2
    dargs = dict(ckpt.get('dataset_args') or {'name': ckpt['dataset']})
    if args.root is not None:
        dargs['root'] = args.root
    try:
        ds = load_dataset(**dargs)
    except DatasetUnavailableError as e:
        print(f'pyg-ple graph: {e}', file=sys.stderr)
        return 2
    index = args.index if args.index is not None else int(ckpt.get('test_idx', [0])[0])
    if not 0 <= index < len(ds):
        print(f'pyg-ple graph: --index {index} out of range (dataset has {len(ds)} graphs)', file=sys.stderr)
        return 2
    data = ds.graphs[index]
    nlayers = len(model.blocks)
    if not -nlayers <= args.layer < nlayers:
        print(f'pyg-ple graph: --layer {args.layer} out of range (model has {nlayers} layers)', file=sys.stderr)
        return 2
    att = model.attention_graph(data, layer=args.layer)
    if args.head is not None and not 0 <= args.head < att.heads:
        print(f'pyg-ple graph: --head {args.head} out of range (model has {att.heads} heads)', file=sys.stderr)
        return 2
    with torch.no_grad():
        from torch_geometric.data import Batch
        pred = int(model(Batch.from_data_list([data])).argmax(-1))
    G = att.to_networkx(head=args.head)
    G.graph.update({'dataset': ds.name, 'index': index, 'layer': args.layer,
                    'head': 'mean' if args.head is None else args.head, 'model': ckpt['name'],
                    'label': int(data.y.view(-1)[0]), 'prediction': pred})
    out = Path(args.out) if args.out else ckpt_path.parent.parent / 'attention'
    stem = f'{ckpt["name"]}_{ds.name}_g{index}_l{args.layer}_h{"mean" if args.head is None else args.head}'
    buf = io.BytesIO()
    nx.write_graphml(G, buf)
    gpath = atomic_write_bytes(out / f'{stem}.graphml', buf.getvalue())
    ppath = atomic_write_bytes(out / f'{stem}.png', _draw(G, data, ds.name, args.min_weight))
    print(f'{ckpt["name"]} on {ds.name}[{index}] (label {G.graph["label"]}, predicted {pred}): layer {args.layer}, '
          f'head {G.graph["head"]}: {G.number_of_nodes()} nodes, {G.number_of_edges()} attention edges')
    print(f'wrote {gpath}\nwrote {ppath}')
    return 0


def _draw(G: Any, data: Any, name: str, min_weight: float) -> bytes:
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import networkx as nx
    if name == 'digits':  # pixel positions: column right, row down
        pos = {i: (float(data.pixel[i] % 8), -float(data.pixel[i] // 8)) for i in range(G.number_of_nodes())}
        node_color = [float(data.x[i, 0]) for i in range(G.number_of_nodes())]
    else:
        import torch_geometric.utils as U
        pos = nx.spring_layout(U.to_networkx(data, to_undirected=True), seed=0)
        node_color = [int(data.x[i].argmax()) for i in range(G.number_of_nodes())]  # node label
    edges = [(j, i) for j, i, w in G.edges(data='weight') if j != i and w > min_weight]
    weights = [G[j][i]['weight'] for j, i in edges]
    wmax = max(weights, default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(5, 5))
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=60, node_color=node_color, cmap='Greys' if name == 'digits' else 'tab10', edgecolors='k',
                           linewidths=0.5)
    nx.draw_networkx_edges(G, pos, edgelist=edges, ax=ax, width=[0.2 + 3.0 * w / wmax for w in weights],
                           alpha=0.6, arrows=True, arrowsize=6, edge_color='tab:blue',
                           connectionstyle='arc3,rad=0.1')
    ax.set_title(f"{G.graph.get('model')} layer {G.graph.get('layer')} head {G.graph.get('head')}: "
                 f"label {G.graph.get('label')}, predicted {G.graph.get('prediction')}", fontsize=9)
    ax.axis('off')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=120)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv
    return int(args.func(args) or 0)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
