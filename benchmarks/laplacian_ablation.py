"""Why do all-Laplacian heads lose on Planetoid node classification? An ablation over one block design.

Runs the NodeTransformer of ``pyg_ple.node`` (PLE blocks over the native edges) on the public split with a few
variants that isolate one factor each, trained by the shared loop, and writes
``benchmarks/results/laplacian_ablation.{md,csv}``.

    python benchmarks/laplacian_ablation.py --root $PYG_PLE_DATA --dataset Cora --seeds 3 --epochs 60
"""
from __future__ import annotations

import argparse
import csv
import io
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch_geometric
from torch import nn

from pyg_ple.node import build_node_model, load_planetoid, train_node_classifier
from pyg_ple.training import TrainConfig, atomic_write_text


def _encoder_layer_norm(model: nn.Module) -> None:
    model.encoder = nn.Sequential(model.encoder, nn.LayerNorm(model.encoder.out_features))


def _fixed_step(value: float):
    def patch(model: nn.Module) -> None:
        for block in model.blocks:
            block.conv.eta.fill_(value)
    return patch


# name -> (model keyword arguments, patch applied after construction, what it isolates)
VARIANTS = {
    'no blocks (MLP)': (dict(num_layers=0), None, 'how much the graph adds at all'),
    'standard (A V)': (dict(laplacian_heads=0), None, 'baseline attention'),
    'Laplacian (A - I) V': (dict(), None, 'default: all heads Laplacian, learned step from 1'),
    'mixed, 2 of 4 Laplacian': (dict(laplacian_heads=2), None, 'half the heads'),
    'Laplacian, fixed step 0.5': (dict(learn_step_size=False), _fixed_step(0.5), 'step size'),
    'Laplacian, fixed step -1': (dict(learn_step_size=False), _fixed_step(-1.0), 'sign of the step (I - A)'),
    'Laplacian + LayerNorm after encoder': (dict(), _encoder_layer_norm, 'scale of the residual stream'),
    'standard + LayerNorm after encoder': (dict(laplacian_heads=0), _encoder_layer_norm, 'same, standard heads'),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=None, help='data root (default: $PYG_PLE_DATA)')
    parser.add_argument('--dataset', default='Cora', choices=['Cora', 'CiteSeer'])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=60)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--variants', nargs='*', default=list(VARIANTS), help='subset of variant names')
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results'))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_planetoid(args.dataset, args.root)
    data = data if hasattr(data, 'x') else data[0]
    num_classes = int(data.y.max()) + 1

    rows, start = [], time.time()
    for name in args.variants:
        kwargs, patch, isolates = VARIANTS[name]
        accs = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_node_model('ple', data.num_features, num_classes, **kwargs)
            if patch is not None:
                with torch.no_grad():
                    patch(model)
            config = TrainConfig(epochs=args.epochs, lr=5e-3, weight_decay=5e-4, progress=False, seed=seed)
            result, _ = train_node_classifier(model, data, config)
            accs.append(100 * result.test_acc)
            print(f'{name:40s} seed {seed}: test {accs[-1]:.1f} (train {100 * result.train_acc:.0f})', flush=True)
        rows.append(dict(variant=name, isolates=isolates, seeds=args.seeds, test_mean=statistics.mean(accs),
                         test_std=statistics.stdev(accs) if len(accs) > 1 else 0.0))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = 'python benchmarks/laplacian_ablation.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    lines = [f'# Laplacian heads on {args.dataset}: ablation', '',
             f'- command: `{command}`',
             f'- seeds 0..{args.seeds - 1}, {args.epochs} epochs, Adam lr 5e-3, weight decay 5e-4, test accuracy at '
             'the best validation epoch; NodeTransformer: 2 blocks, 64 channels, 4 heads over native edges',
             f'- torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, '
             f'{platform.processor() or platform.machine()}, {args.threads} thread(s), {time.time() - start:.0f} s', '',
             '| variant | isolates | test acc % (mean +- std) |', '|---|---|---|']
    lines += [f"| {r['variant']} | {r['isolates']} | {r['test_mean']:.1f} +- {r['test_std']:.1f} |" for r in rows]
    atomic_write_text(out / 'laplacian_ablation.md', '\n'.join(lines) + '\n')
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / 'laplacian_ablation.csv', table.getvalue())
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
