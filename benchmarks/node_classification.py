"""Node classification on Planetoid (public split) and time/memory on a 1e6-node synthetic graph.

    # accuracy: 10 seeds x models x modes, every finished run appended to the CSV (a rerun skips finished runs)
    python benchmarks/node_classification.py accuracy --root DATA --datasets Cora CiteSeer \
        --models gcn gat ple ple-std --modes full neighbor --seeds 10 --epochs 100
    # scale: a few NeighborLoader training steps on a 1e6-node stochastic-block-model graph
    python benchmarks/node_classification.py scale --nodes 1000000 --batches 5
    # tables: rewrite benchmarks/results/node_classification.md from the CSVs
    python benchmarks/node_classification.py report

Data: the raw Planetoid files are read from ``--root`` (or ``$PYG_PLE_DATA``) ``/Planetoid/<Name>/raw`` and symlinked into
``$PYG_PLE_CACHE/Planetoid`` (default ``~/.cache/pyg_ple/cache/Planetoid``), where PyG writes ``processed/``; the data folder
is never written to. Threads: one (``--threads``), the machine is shared.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import time
from pathlib import Path

from _common import EARLIER_NODE_MODEL, EARLIER_NODE_OPTIMIZER, RESULTS, env_info, md_table, mean_std, set_threads

CSV_ACC = RESULTS / 'node_classification.csv'
CSV_SCALE = RESULTS / 'node_classification_scale.csv'
MD = RESULTS / 'node_classification.md'
# num_neighbors: the NeighborLoader fan-out per hop ('10x10'), empty for full batch
ACC_FIELDS = ['dataset', 'model', 'mode', 'num_neighbors', 'seed', 'test_acc', 'val_acc', 'train_acc', 'best_epoch',
              'epochs', 'sec_per_epoch']
SCALE_FIELDS = ['model', 'nodes', 'edges', 'features', 'batch_size', 'num_neighbors', 'batches_timed',
                'sec_per_batch', 'sample_sec_per_batch', 'batches_per_epoch', 'sec_per_epoch_extrapolated',
                'peak_rss_mb', 'rss_graph_mb', 'threads']
# model name -> (node.py model, extra hyper-parameters, optimiser settings over OPTIMIZER_DEFAULTS of that model)
# The earlier rows: the node model and optimiser before their defaults were chosen on Cora's validation split.
MODELS = {'gcn': ('gcn', {}, {}), 'gat': ('gat', {}, {}), 'ple': ('ple', {}, {}),
          'ple-std': ('ple', {'laplacian_heads': 0}, {}), 'ple-mixed': ('ple', {'laplacian_heads': 4}, {}),
          'ple-wd5e-3': ('ple', {}, {'weight_decay': 5e-3}),
          'ple-std-wd5e-3': ('ple', {'laplacian_heads': 0}, {'weight_decay': 5e-3}),
          'ple-earlier': ('ple', EARLIER_NODE_MODEL, EARLIER_NODE_OPTIMIZER),
          'ple-std-earlier': ('ple', {**EARLIER_NODE_MODEL, 'laplacian_heads': 0}, EARLIER_NODE_OPTIMIZER)}
LABELS = {'gcn': 'GCN', 'gat': 'GAT', 'ple': 'PLE node model, all heads Laplacian (default)',
          'ple-std': 'PLE node model, standard attention heads (laplacian_heads=0)',
          'ple-mixed': 'PLE node model, 4 of 8 heads Laplacian',
          'ple-wd5e-3': 'PLE node model, all heads Laplacian, weight decay 5e-3 (the default before 2e-2)',
          'ple-std-wd5e-3': 'PLE node model, standard attention heads, weight decay 5e-3',
          'ple-earlier': 'PLE node model, all heads Laplacian, earlier defaults (2 blocks, no PLE init)',
          'ple-std-earlier': 'PLE node model, standard heads, earlier defaults (2 blocks, no PLE init)'}


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def append_csv(path: Path, fields: list[str], row: dict) -> None:
    """Append one row (and flush + fsync): a killed run loses at most the run in progress."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a', newline='') as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def cmd_accuracy(args) -> None:
    import torch

    from pyg_ple.bench.node import (OPTIMIZER_DEFAULTS, build_node_model, default_num_neighbors, load_planetoid,
                                    train_node_classifier)
    from pyg_ple.bench.training import TrainConfig
    done = {(r['dataset'], r['model'], r['mode'], r['num_neighbors'], int(r['seed'])) for r in read_csv(CSV_ACC)}
    graphs = {name: load_planetoid(name, args.root) for name in args.datasets}
    # seeds outermost: an interrupted run leaves every (dataset, model, mode) cell with about as many seeds
    for seed in range(args.seeds):
        for dataset, data in graphs.items():
            classes = int(data.y.max()) + 1
            for mode, model_name in [(mo, m) for mo in args.modes for m in args.models]:
                kind, extra, optimizer = MODELS[model_name]
                torch.manual_seed(seed)
                model = build_node_model(kind, data.num_features, classes, **extra)
                fan_out = (args.num_neighbors or default_num_neighbors(model)) if mode == 'neighbor' else []
                if (dataset, model_name, mode, 'x'.join(map(str, fan_out)), seed) in done:
                    continue
                config = TrainConfig(epochs=args.epochs, **{**OPTIMIZER_DEFAULTS[kind], **optimizer}, seed=seed,
                                     progress=False)
                run, _ = train_node_classifier(model, data, config, mode=mode, num_neighbors=fan_out or None,
                                               batch_size=args.batch_size)
                row = {'dataset': dataset, 'model': model_name, 'mode': mode,
                       'num_neighbors': 'x'.join(map(str, fan_out)), 'seed': seed,
                       'test_acc': f'{100 * run.test_acc:.2f}', 'val_acc': f'{100 * run.val_acc:.2f}',
                       'train_acc': f'{100 * run.train_acc:.2f}', 'best_epoch': run.best_epoch,
                       'epochs': run.epochs_run, 'sec_per_epoch': f'{run.seconds_per_epoch:.4f}'}
                append_csv(CSV_ACC, ACC_FIELDS, row)
                print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
    cmd_report(args)


def rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def cmd_scale(args) -> None:
    import torch
    import torch.nn.functional as F

    from pyg_ple.bench.node import build_node_model, neighbor_loader
    from torch_geometric.data import Data
    torch.manual_seed(0)
    rss0 = rss_mb()
    n, blocks = args.nodes, args.blocks
    # Stochastic block model: `blocks` equal communities, each node with `degree` out-edges, a fraction
    # `p_in` of them inside its community (sampled directly: O(E) memory, no N x N matrix).
    deg = args.degree
    src = torch.arange(n).repeat_interleave(deg)
    community = src % blocks
    inside = torch.rand(src.numel()) < args.p_in
    other = torch.randint(0, n, (src.numel(),))
    same = (torch.randint(0, n // blocks, (src.numel(),)) * blocks + community).clamp_max(n - 1)
    dst = torch.where(inside, same, other)
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])  # undirected
    y = torch.arange(n) % blocks
    x = torch.randn(n, args.features) + 0.5 * F.one_hot(y, blocks).float().repeat(1, math.ceil(args.features / blocks))[:, :args.features]
    data = Data(x=x, edge_index=edge_index, y=y)
    del src, dst, inside, other, same, community
    rss_graph = rss_mb() - rss0
    print(f'graph: {n} nodes, {edge_index.size(1)} edges, {args.features} features, {rss_graph:.0f} MB', flush=True)
    loader = neighbor_loader(data, args.num_neighbors, batch_size=args.batch_size, shuffle=True)
    batches_per_epoch = math.ceil(n / args.batch_size)
    for model_name in args.models:
        kind, extra, _ = MODELS[model_name]
        torch.manual_seed(0)
        model = build_node_model(kind, args.features, blocks, **extra)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        it = iter(loader)
        times, sample_times = [], []
        for b in range(args.batches + 1):  # the first batch is a warm-up
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            model.train()
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)[:batch.batch_size]
            loss = F.cross_entropy(out, batch.y[:batch.batch_size])
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if b > 0:
                times.append(t2 - t0)
                sample_times.append(t1 - t0)
        per_batch = sum(times) / len(times)
        row = {'model': model_name, 'nodes': n, 'edges': edge_index.size(1), 'features': args.features,
               'batch_size': args.batch_size, 'num_neighbors': 'x'.join(map(str, args.num_neighbors)),
               'batches_timed': len(times), 'sec_per_batch': f'{per_batch:.4f}',
               'sample_sec_per_batch': f'{sum(sample_times) / len(sample_times):.4f}',
               'batches_per_epoch': batches_per_epoch, 'sec_per_epoch_extrapolated': f'{per_batch * batches_per_epoch:.0f}',
               'peak_rss_mb': f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}',
               'rss_graph_mb': f'{rss_graph:.0f}', 'threads': torch.get_num_threads()}
        append_csv(CSV_SCALE, SCALE_FIELDS, row)
        print(' '.join(f'{k}={v}' for k, v in row.items()), flush=True)
    cmd_report(args)


def cmd_report(args) -> None:
    import torch
    import torch_geometric

    from pyg_ple.bench.node import PUBLISHED
    rows = read_csv(CSV_ACC)
    lines = ['# Node classification: Planetoid (public split) and a 1e6-node graph', '',
             'Produced by `benchmarks/node_classification.py` (numbers below are regenerated from '
             '`node_classification.csv` and `node_classification_scale.csv` by its `report` command).', '',
             '## Accuracy (test %, mean ± std over seeds; model selected at the epoch of best validation accuracy)', '']
    groups: dict = {}
    for r in rows:
        mode = r['mode'] + (f" {r['num_neighbors']}" if r['num_neighbors'] else '')
        groups.setdefault((r['dataset'], r['model'], mode), []).append(r)
    table = []
    for (dataset, model, mode), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        acc = mean_std([float(r['test_acc']) for r in rs])
        val = mean_std([float(r['val_acc']) for r in rs])
        sec = mean_std([float(r['sec_per_epoch']) for r in rs])
        pub = PUBLISHED.get(dataset, {}).get(model)
        table.append([dataset, LABELS.get(model, model), mode, f"{acc['mean']:.1f} ± {acc['std']:.1f}",
                      f"{val['mean']:.1f} ± {val['std']:.1f}", acc['n'], f'{pub:.1f}' if pub else '-',
                      f"{sec['mean']:.3f}"])
    if table:
        lines.append(md_table(['dataset', 'model', 'mode', 'test acc', 'val acc', 'seeds', 'published',
                               's/epoch (train + eval)'], table))
    else:
        lines.append('(no runs yet)')
    scale = read_csv(CSV_SCALE)
    lines += ['', '## Time and memory with NeighborLoader on a 1e6-node graph', '']
    if scale:
        lines.append(md_table(['model', 'nodes', 'edges', 'features', 'batch', 'fan-out', 'batches timed',
                               's/batch (step)', 's/batch (sampling)', 'batches/epoch', 's/epoch (extrapolated)',
                               'peak RSS MB', 'graph MB', 'threads'],
                              [[r[k] for k in SCALE_FIELDS] for r in scale]))
    else:
        lines.append('(not run yet)')
    info = env_info()
    lines += ['', '## Setup', '',
              f"torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, python {info['python']}, "
              f"{info['cpus']} CPUs (shared), 1 torch thread.", '']
    _write_md_keep_notes(lines)
    print(f'wrote {MD}')


NOTES_MARK = '<!-- notes below are kept by `report` -->'


def _write_md_keep_notes(lines: list[str]) -> None:
    """Rewrite the generated part of the markdown, keeping hand-written notes after ``NOTES_MARK``."""
    notes = ''
    if MD.exists():
        text = MD.read_text()
        if NOTES_MARK in text:
            notes = text[text.index(NOTES_MARK):]
    body = '\n'.join(lines) + '\n'
    tmp = MD.with_suffix('.md.tmp')
    tmp.write_text(body + ('\n' + notes if notes else ''))
    os.replace(tmp, MD)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=1)
    sub = parser.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('accuracy')
    a.add_argument('--root', default=None, help='data folder holding Planetoid/<Name>/raw (default $PYG_PLE_DATA)')
    a.add_argument('--datasets', nargs='+', default=['Cora', 'CiteSeer'])
    a.add_argument('--models', nargs='+', default=['gcn', 'gat', 'ple', 'ple-std'], choices=sorted(MODELS))
    a.add_argument('--modes', nargs='+', default=['full', 'neighbor'], choices=['full', 'neighbor'])
    a.add_argument('--seeds', type=int, default=10)
    a.add_argument('--epochs', type=int, default=100)
    a.add_argument('--num-neighbors', type=int, nargs='+', default=None,
                   help='NeighborLoader fan-out per hop (default: 10 for each message-passing layer of the model)')
    a.add_argument('--batch-size', type=int, default=64)
    s = sub.add_parser('scale')
    s.add_argument('--nodes', type=int, default=1_000_000)
    s.add_argument('--degree', type=int, default=5, help='out-edges per node before symmetrising')
    s.add_argument('--blocks', type=int, default=10)
    s.add_argument('--p-in', type=float, default=0.8)
    s.add_argument('--features', type=int, default=64)
    s.add_argument('--batch-size', type=int, default=1024)
    s.add_argument('--num-neighbors', type=int, nargs='+', default=[10, 10])
    s.add_argument('--batches', type=int, default=5)
    s.add_argument('--models', nargs='+', default=['gcn', 'gat', 'ple'], choices=sorted(MODELS))
    sub.add_parser('report')
    args = parser.parse_args(argv)
    set_threads(args.threads)
    {'accuracy': cmd_accuracy, 'scale': cmd_scale, 'report': cmd_report}[args.cmd](args)


if __name__ == '__main__':
    main()
