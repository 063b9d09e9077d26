"""Seconds per training step and peak memory of the graph models on LRGB Peptides-func-shaped batches, in one run.

Each model runs in a subprocess of its own (so that its peak memory is its own): ``--warmup`` steps, then ``--steps``
timed training steps (forward, backward, Adam step), one thread by default. The models take turns for ``--rounds``
rounds and each keeps its fastest round, so that load from other processes, which comes and goes, weighs on every
model alike. On CUDA (``--device cuda``) the peak is the allocator's and steps are synchronised. Batches
are ``--batch-size`` graphs drawn from Peptides-func's training split when ``--root`` holds it (the molecule loader
of ``pyg-ple bench``, extra ``[mol]``), else synthetic graphs with its size distribution: sizes from a gamma with
Peptides-func's mean and spread (151 and 84 atoms) clipped to its range (8 to 444), a backbone chain with
short-range branches and rings (about 2.0 directed edges per atom, as in the data), 9 atom and 3 bond features.

Ratios are taken within one run: against PyG's GPS, and the all-pairs Laplacian transformer against the same model
over the bonds only. Writes ``molecule_speed.csv`` and ``molecule_speed.md`` under ``--out``.

    python benchmarks/molecule_speed.py                       # synthetic batches, every model
    python benchmarks/molecule_speed.py --root DATA           # real Peptides-func training batches
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: F401  (puts the repo on sys.path)

# name: (model, hyper-parameters beyond the shared ones)
MODELS = {
    'gine': ('gin', {}),
    'gps': ('gps', {}),
    'laplacian-native': ('laplacian', {'attention': 'native'}),
    'laplacian-full': ('laplacian', {'attention': 'full', 'edge_dim': 0}),
    'laplacian-native+full': ('laplacian', {'attention': 'native+full'}),
    'transformer-native+full': ('transformer', {'attention': 'native+full'}),
    'ple-gps': ('ple-gps', {}),
}
FIELDS = ['model', 'name', 'params', 's_per_step', 'peak_gb', 'vs_gps', 'vs_native', 'vs_full', 'nodes_per_batch',
          'pairs_per_batch']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=None, help='data root with LRGB/peptides-functional (default: synthetic batches)')
    p.add_argument('--models', default=','.join(MODELS), help=f'comma-separated, from {", ".join(MODELS)}')
    p.add_argument('--hidden', type=int, default=128)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--steps', type=int, default=3, help='timed steps (each on its own batch)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--rounds', type=int, default=2, help='turns each model takes; its fastest counts')
    p.add_argument('--device', default='cpu')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(C.RESULTS))
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [m for m in args.models.split(',') if m not in MODELS]
    if unknown:
        p.error(f'--models: unknown {", ".join(unknown)}; choose from {", ".join(MODELS)}')
    return args


def synthetic_batches(count, batch_size, seed):
    import numpy as np
    import torch
    from torch_geometric.data import Batch, Data
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        graphs = []
        for n in np.clip(rng.gamma((151 / 84) ** 2, 84 ** 2 / 151, batch_size), 8, 444).astype(int):
            # backbone i-1 -> i, a branch every third atom from one of the two previous, a ring closure every 40
            src = [i - 1 for i in range(1, n)] + [i - 2 for i in range(2, n, 3)] + [i - 5 for i in range(5, n, 40)]
            dst = list(range(1, n)) + list(range(2, n, 3)) + list(range(5, n, 40))
            edge_index = torch.tensor([src + dst, dst + src])
            graphs.append(Data(x=torch.randn(n, 9), edge_index=edge_index, edge_attr=torch.randn(edge_index.size(1), 3),
                               y=torch.randint(0, 2, (1, 10)).float()))
        batches.append(Batch.from_data_list(graphs))
    return batches, 9, 3


def real_batches(root, count, batch_size, seed):
    import torch
    from torch_geometric.data import Batch
    from pyg_ple.bench.molecules import load_molecules
    data = load_molecules('peptides-func', root)
    train = data.split['train']
    g = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(len(train), generator=g)[:batch_size] for _ in range(count)]
    batches = []
    for pick in picks:
        graphs = [data.graphs[int(train[int(i)])] for i in pick]
        for graph in graphs:
            graph.x, graph.edge_attr = graph.x.float(), graph.edge_attr.float()
        batches.append(Batch.from_data_list(graphs))
    return batches, batches[0].x.size(1), batches[0].edge_attr.size(1)


def worker(args):
    import torch
    from pyg_ple.bench.models import build_model, count_parameters
    C.set_threads(args.threads)
    torch.manual_seed(args.seed)
    count = args.warmup + args.steps
    if args.root:
        batches, in_dim, edge_dim = real_batches(args.root, count, args.batch_size, args.seed)
    else:
        batches, in_dim, edge_dim = synthetic_batches(count, args.batch_size, args.seed)
    kind, extra = MODELS[args.worker]
    hparams = {'hidden': args.hidden, 'num_layers': args.layers, 'heads': args.heads, 'edge_dim': edge_dim, **extra}
    device = torch.device(args.device)
    model = build_model(kind, in_dim, 10, **hparams).to(device).train()
    if not hparams['edge_dim']:
        for batch in batches:
            del batch.edge_attr
    batches = [batch.to(device) for batch in batches]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.y)
        loss.backward()
        opt.step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    sizes = [torch.bincount(b.batch) for b in batches[args.warmup:]]
    peak = (torch.cuda.max_memory_allocated(device) if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({
        'params': count_parameters(model), 's_per_step': sum(times) / len(times), 'peak_gb': peak / 2 ** 30,
        'nodes_per_batch': sum(int(s.sum()) for s in sizes) / len(sizes),
        'pairs_per_batch': sum(int((s ** 2).sum()) for s in sizes) / len(sizes)}))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    C.set_threads(args.threads)
    rows = {}
    for round_ in range(args.rounds):
        for name in args.models.split(','):
            cmd = [sys.executable, __file__, '--worker', name] + list(argv if argv is not None else sys.argv[1:])
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
            if done.returncode != 0:
                error = (done.stderr.strip().splitlines() or ['(no output)'])[-1]
                print(f'round {round_}, {name}: failed: {error}', flush=True)
                rows.setdefault(name, {'model': MODELS[name][0], 'name': name, 's_per_step': float('nan'),
                                       'peak_gb': float('nan')})
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f'round {round_}, {name}: {result["s_per_step"]:.3f} s/step, peak {result["peak_gb"]:.2f} GB',
                  flush=True)
            row = rows.get(name)
            if row is None or not row['s_per_step'] <= result['s_per_step']:
                rows[name] = {'model': MODELS[name][0], 'name': name, **result,
                              'peak_gb': max(result['peak_gb'], (row or {}).get('peak_gb', 0.0) or 0.0)}
    gps = rows.get('gps', {}).get('s_per_step')
    native = rows.get('laplacian-native', {}).get('s_per_step')
    full = rows.get('laplacian-full', {}).get('s_per_step')
    for row in rows.values():  # a ratio to a model that was not measured is left empty, not written as nan
        row['vs_gps'] = row['s_per_step'] / gps if gps else None
        laplacian = row['model'] == 'laplacian'
        row['vs_native'] = row['s_per_step'] / native if native and laplacian else None
        row['vs_full'] = row['s_per_step'] / full if full and laplacian else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = 'molecule_speed' + ('_real' if args.root else '') + ('' if args.device == 'cpu' else f'_{args.device}')
    C.write_csv(out / f'{stem}.csv', FIELDS, [{k: '' if row.get(k) is None else row[k] for k in FIELDS}
                                             for row in rows.values()])
    import platform
    import torch
    import torch_geometric
    env = {'python': platform.python_version(), 'torch': torch.__version__, 'torch_geometric': torch_geometric.__version__,
           'machine': platform.machine(), 'cpus': str(os.cpu_count())}
    if args.device != 'cpu':
        env['device'] = torch.cuda.get_device_name(torch.device(args.device))
    command = 'python benchmarks/molecule_speed.py ' + ' '.join(
        '--root DATA' if a == args.root else a for a in (argv or sys.argv[1:]) if a != '--root')
    lines = [
        '# Training step time and peak memory on Peptides-func-shaped batches', '',
        f'Command: `{command.strip()}`', '',
        f'Batches: {"Peptides-func training graphs" if args.root else "synthetic, Peptides-func size distribution"}, '
        f'{args.batch_size} graphs each, seed {args.seed}; width {args.hidden}, {args.layers} layers, {args.heads} '
        f'heads; {args.warmup} warm-up step(s), mean of {args.steps} timed steps (forward, backward, Adam); '
        f'{args.threads} thread(s) on {args.device}; each model in its own process, the fastest of {args.rounds} '
        f'rounds in which the models take turns (peak memory: {"the CUDA allocator" if args.device != "cpu" else "RSS"}'
        ', the largest over the rounds).', '',
        'Machine and versions: ' + ', '.join(f'{k} {v}' for k, v in env.items()), '',
        C.md_table(['model', 'params', 's / step', 'peak memory (GB)', 'x GPS', 'x same model, bonds only',
                    'x same model, all pairs without bond features'],
                   [[row['name'], row.get('params', ''), f"{row['s_per_step']:.3f}", f"{row['peak_gb']:.2f}",
                     *('' if row[k] is None else f'{row[k]:.2f}' for k in ('vs_gps', 'vs_native', 'vs_full'))]
                    for row in rows.values()]),
    ]
    if rows:
        any_row = next(iter(rows.values()))
        if 'nodes_per_batch' in any_row:
            lines += ['', f"Per timed batch: {any_row['nodes_per_batch']:.0f} nodes, "
                          f"{any_row['pairs_per_batch']:.0f} node pairs within graphs."]
    (out / f'{stem}.md').write_text('\n'.join(lines) + '\n')
    print(f'wrote {out / stem}.csv and .md')


if __name__ == '__main__':
    main()
