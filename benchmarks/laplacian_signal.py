"""How much neighbourhood signal does a Laplacian head pass, at initialisation and after training?

A Laplacian head outputs ``eta (A V - V)``, a standard head ``A V``. Where a node's neighbours carry nearly the same
values as the node, ``A V - V`` is small: the Laplacian sublayer then passes little neighbourhood information until
training separates the values. This script measures that on finished ``pyg-ple bench`` runs (which keep the selected
model of every fold), on the test graphs of each fold:

* ``input ||mean_nbr(x) - x|| / ||x||``: how different a node's raw features are from its neighbours' mean;
* ``||A V - V|| / ||A V||`` per block, for the Laplacian model at initialisation (same seed and data, untrained) and
  after training (the selected model of each fold): the Laplacian signal relative to what a standard head passes;
* ``||attention update|| / ||residual||`` per block for the Laplacian and the standard transformer: how much the
  attention sublayer moves the residual stream.

Usage::

    python benchmarks/laplacian_signal.py runs/MUTAG runs/PROTEINS ... [--out benchmarks/results]

Writes ``laplacian_signal.{md,csv}``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402
from torch_geometric.utils import degree, scatter  # noqa: E402

from pyg_ple.bench.datasets import load_dataset  # noqa: E402
from pyg_ple.bench.models import TransformerClassifier, build_model  # noqa: E402
from pyg_ple.bench.io import atomic_write_text  # noqa: E402
from pyg_ple.bench.protocol import load_model_file  # noqa: E402


def _norm(t: torch.Tensor) -> float:
    return float(t.norm())


@torch.no_grad()
def neighbour_contrast(batch: Batch) -> float:
    """||mean of the in-neighbours' features - own features|| / ||own features|| over the nodes of ``batch``."""
    src, dst = batch.edge_index
    x = batch.x.float()
    mean = scatter(x[src], dst, dim=0, dim_size=x.size(0), reduce='mean')
    has = degree(dst, x.size(0)) > 0
    return _norm(mean[has] - x[has]) / max(_norm(x[has]), 1e-12)


@torch.no_grad()
def block_signals(model: TransformerClassifier, batch: Batch) -> list[dict[str, float]]:
    """Per block: ``||A V - V|| / ||A V||`` and ``||attention update|| / ||residual input||`` on ``batch``."""
    model.eval()
    edge_index, edge_attr = model.attention_edges(batch)
    h = model.encode(batch)
    out = []
    for block in model.transformer.blocks:
        hn = block.norm1(h)
        graph = block.conv.attention_graph(hn, edge_index, edge_attr, batch.batch)
        value = block.conv.lin_value(hn).view(-1, block.conv.heads, block.conv.out_channels)
        src, dst = graph.edge_index
        av = scatter(graph.weight.unsqueeze(-1) * value[src], dst, dim=0, dim_size=h.size(0), reduce='sum')
        captured = {}
        hook = block.proj.register_forward_hook(lambda mod, args, res: captured.__setitem__('update', res))
        try:
            h_next = block(h, edge_index, batch=batch.batch, edge_attr=edge_attr)
        finally:
            hook.remove()
        out.append({'lap_rel': _norm(av - value) / max(_norm(av), 1e-12),
                    'update_rel': _norm(captured['update']) / max(_norm(h), 1e-12)})
        h = h_next
    return out


def _build(ckpt: dict, trained: bool) -> TransformerClassifier:
    torch.manual_seed(0)
    model = build_model(ckpt['name'], ckpt['in_channels'], ckpt['num_classes'], **ckpt['hparams'])
    if trained:
        model.load_state_dict(ckpt['state_dict'])
    return model


def measure_run(run: Path, folds: int | None = None) -> list[dict]:
    state = json.loads((run / 'state.json').read_text())
    acc = {}
    for r in state['runs'].values():
        acc.setdefault(r['model'], []).append(r['test_acc'] * 100)
    rows, dataset, contrast = [], None, []
    for name in ('laplacian', 'transformer'):
        paths = sorted((run / 'models').glob(f'{name}_fold*.pt'), key=lambda p: int(p.stem.split('fold')[1]))
        paths = paths[:folds] if folds else paths
        per_fold = {'init': [], 'trained': []}
        for p in paths:
            ckpt = load_model_file(p)
            if dataset is None:
                dataset = load_dataset(**ckpt['dataset_args'])
            batch = Batch.from_data_list([dataset.graphs[i] for i in ckpt['test_idx']])
            if name == 'laplacian':
                contrast.append(neighbour_contrast(batch))
            for when in per_fold:
                per_fold[when].append(block_signals(_build(ckpt, when == 'trained'), batch))
        if not paths:
            continue
        for when, folds_ in per_fold.items():
            for layer in range(len(folds_[0])):
                rows.append({
                    'dataset': state['dataset'], 'model': name, 'when': when, 'layer': layer + 1,
                    'folds': len(folds_),
                    'lap_rel': float(np.mean([f[layer]['lap_rel'] for f in folds_])),
                    'update_rel': float(np.mean([f[layer]['update_rel'] for f in folds_])),
                    'input_contrast': float(np.mean(contrast)) if contrast else float('nan'),
                    'test_acc': float(np.mean(acc.get(name, [np.nan]))),
                })
    return rows


def report(rows: list[dict], command: str) -> str:
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    get = lambda d, m, w, key, layer=1: next(  # noqa: E731
        (r[key] for r in rows if (r['dataset'], r['model'], r['when'], r['layer']) == (d, m, w, layer)),
        float('nan'))
    md = ['# Laplacian signal: how much a Laplacian head passes, at initialisation and after training', '',
          'A Laplacian head outputs `eta (A V - V)`, a standard head `A V`. Measured on the test graphs of every fold '
          'with the selected model of each fold (`trained`) and the same architecture untrained (`init`, seed 0), '
          'block 1 of 3 (all blocks in the CSV). Generated by `benchmarks/laplacian_signal.py`.', '',
          '| dataset | input contrast | Laplacian `‖AV−V‖/‖AV‖` init | trained | attention update / residual, '
          'Laplacian: init → trained | standard: init → trained | accuracy Laplacian − standard |',
          '|---|---:|---:|---:|---:|---:|---:|']
    for d in datasets:
        md.append(
            f"| {d} | {get(d, 'laplacian', 'init', 'input_contrast'):.2f} | "
            f"{get(d, 'laplacian', 'init', 'lap_rel'):.2f} | {get(d, 'laplacian', 'trained', 'lap_rel'):.2f} | "
            f"{get(d, 'laplacian', 'init', 'update_rel'):.2f} → "
            f"{get(d, 'laplacian', 'trained', 'update_rel'):.2f} | "
            f"{get(d, 'transformer', 'init', 'update_rel'):.2f} → "
            f"{get(d, 'transformer', 'trained', 'update_rel'):.2f} | "
            f"{get(d, 'laplacian', 'trained', 'test_acc') - get(d, 'transformer', 'trained', 'test_acc'):+.1f} |")
    md += ['', '"input contrast": `‖mean of the neighbours\' features − own features‖ / ‖own features‖` on the raw '
           'node features. `‖AV−V‖/‖AV‖`: the Laplacian signal relative to what a standard head with the same '
           'weights passes (1 when the neighbourhood average is unrelated to the node\'s own value, 0 when they are '
           'equal).', '', '## Command', '', '```', command, '```', '',
           'Environment: ' + ', '.join(f'{k} {v}' for k, v in C.env_info().items()) + '.', '']
    return '\n'.join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs', nargs='+', type=Path, help='pyg-ple bench run folders with saved models')
    ap.add_argument('--folds', type=int, default=None, help='use the first N folds only (default: all)')
    ap.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'results')
    ap.add_argument('--threads', type=int, default=None)
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    rows = []
    for run in args.runs:
        if not (run / 'state.json').exists():
            print(f'{run}: no state.json, skipped', file=sys.stderr)
            continue
        rows += measure_run(run, args.folds)
        print(f'{run}: done', file=sys.stderr)
    if not rows:
        print('no run with saved laplacian/transformer models found', file=sys.stderr)
        return 1
    command = 'python benchmarks/laplacian_signal.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(args.out / 'laplacian_signal.md', report(rows, command))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator='\n')
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(args.out / 'laplacian_signal.csv', buf.getvalue())
    print(report(rows, command))
    return 0


if __name__ == '__main__':
    sys.exit(main())
