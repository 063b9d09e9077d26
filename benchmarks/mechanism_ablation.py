"""One mechanism at a time: graph classification arms of the Laplacian transformer under one protocol and budget.

Each arm is ``pyg-ple bench`` with one change against the arm ``laplacian`` (the Laplacian transformer with the
settings of :data:`BASE`, the defaults before this ablation chose today's), run into its own
run folder (resumable: a finished arm is read back, an interrupted one continues), and the table reports every arm,
the selection metric (mean inner-validation accuracy of the selected epochs) beside the test accuracy, the selected
epoch and the training loss there. Baselines (``gin``, ``gcn``) run with the same budget and recipe.

    python benchmarks/mechanism_ablation.py --root DATA --dataset MUTAG --epochs 50 --jobs 2 --threads 1

writes ``benchmarks/results/mechanism_ablation_<dataset>.{md,csv}``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from pyg_ple.bench.io import atomic_write_text  # noqa: E402

# The arms change one thing each against the Laplacian transformer as it was before this ablation chose today's
# defaults (pre-norm LayerNorm blocks, mean readout, no structural encoding, no edge labels, no degree scaler):
# every arm starts from these flags, so the table reproduces under today's defaults.
# The earlier defaults, early stopping included (pyg-ple bench had none then; an --extra=--patience overrides it).
BASE = ['--pe', 'none', '--pool', 'mean', '--norm', 'layer', '--prenorm', '--no-degree-scaler', '--no-edge-features',
        '--patience', 'none']
# arm -> (model, extra arguments, what it isolates)
ARMS = {
    'laplacian': ('laplacian', [], 'the Laplacian transformer with the earlier defaults (BASE)'),
    'degree-scaler': ('laplacian', ['--degree-scaler'], 'learned conductance theta_1 + theta_2 log(1 + d_i)'),
    'pool-mean+sum': ('laplacian', ['--pool', 'mean+sum'], 'readout: mean and sum concatenated'),
    'pool-sum': ('laplacian', ['--pool', 'sum'], 'readout: sum'),
    'edge-features': ('laplacian', ['--edge-features'], 'edge labels in the attention score'),
    'pe-rw': ('laplacian', ['--pe', 'rw', '--pe-dim', '8'], 'random-walk structural encoding'),
    'postnorm-batch': ('laplacian', ['--postnorm', '--norm', 'batch'], 'post-norm with BatchNorm (GPS/GRIT)'),
    'ple-init': ('laplacian', ['--ple-init', '--encoder-norm'], 'diffusion initialisation, LayerNorm after encoder'),
    'adamw-cosine': ('laplacian', ['--optimizer', 'adamw', '--weight-decay', '1e-4', '--schedule', 'cosine',
                                   '--warmup-epochs', '5', '--grad-clip', '1.0'], 'AdamW, warm-up + cosine, clipping'),
    'combined': ('laplacian', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum', '--postnorm', '--norm', 'batch',
                               '--edge-features'],
                 'the arms above whose validation accuracy beat the default by more than one point, together'),
    'combined+degree-scaler': ('laplacian', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum', '--postnorm',
                                             '--norm', 'batch', '--edge-features', '--degree-scaler'],
                               'combined, plus the degree scaler'),
    'transformer-combined': ('transformer', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum', '--postnorm',
                                             '--norm', 'batch', '--edge-features'],
                             'standard heads with the combined settings'),
    'gin-combined': ('gin', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum', '--edge-features'],
                     'GIN with the same features and readout (GINE layers for the edge labels)'),
    # For datasets without edge labels (NCI1, PROTEINS, ...): the combined settings less --edge-features.
    'combined-no-edge-labels+degree-scaler': ('laplacian', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum',
                                                            '--postnorm', '--norm', 'batch', '--degree-scaler'],
                                              'combined+degree-scaler without edge labels'),
    'gin-pe-rw+mean+sum': ('gin', ['--pe', 'rw', '--pe-dim', '8', '--pool', 'mean+sum'],
                           'GIN with the same structural encoding and readout'),
    'transformer': ('transformer', [], 'standard heads (no Laplacian head), same block'),
    'gin': ('gin', [], 'baseline'),
    'gcn': ('gcn', [], 'baseline'),
}


def bench_command(args, arm: str, out: Path) -> list[str]:
    model, extra, _ = ARMS[arm]
    cmd = ['--dataset', args.dataset, '--models', model, '--epochs', str(args.epochs), '--folds', str(args.folds),
           '--lr', str(args.lr), '--threads', str(args.threads), '--no-progress', '--no-save-models', *BASE,
           *args.extra, *extra,
           '--out', str(out)]
    if args.root:
        cmd[:0] = ['--root', str(args.root)]
    return cmd


def run_arm(args, arm: str) -> dict:
    out = Path(args.runs) / args.dataset / arm
    cmd = bench_command(args, arm, out)
    results = out / 'results.json'
    if not results.exists():
        resume = ['--resume'] if (out / 'state.json').exists() else []
        t0 = time.time()
        proc = subprocess.run([sys.executable, '-m', 'pyg_ple', 'bench', *cmd, *resume], capture_output=True, text=True)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1][:160] if proc.stderr.strip() else f'exit {proc.returncode}'
            return {'arm': arm, 'status': f'failed ({last})'}
        print(f'{arm}: {time.time() - t0:.0f} s', file=sys.stderr)
    row = json.loads(results.read_text())['results'][0]
    return {'arm': arm, 'status': 'ok', 'model': row['model'], 'val_acc': row['val_acc_mean'],
            'acc_mean': row['acc_mean'], 'acc_std': row['acc_std'], 'folds': row['folds'],
            'best_epoch': row['best_epoch'], 'train_loss': row['train_loss'], 'sec_per_epoch': row['sec_per_epoch'],
            'params': row['params']}


SUMMARY_COLUMNS = (('laplacian, earlier defaults', ('laplacian',)),
                   ('laplacian + settings (today\'s defaults)', ('combined+degree-scaler',
                                                                 'combined-no-edge-labels+degree-scaler')),
                   ('gin', ('gin',)),
                   ('gin + same features', ('gin-combined', 'gin-pe-rw+mean+sum')))


def summarize(out: Path) -> str:
    """One row per dataset from every ``mechanism_ablation_<dataset>.csv`` in ``out``: test accuracy (validation
    accuracy in brackets) of the Laplacian transformer with the earlier defaults, of the settings chosen on MUTAG's
    validation folds (edge labels where the dataset has them; today's defaults), of GIN and of GIN given the same
    features and readout."""
    lines = ['# Mechanisms across datasets', '',
             'Test accuracy % (mean ± std over 10 folds; in brackets the inner-validation accuracy that selects). '
             '"settings": random-walk PE, mean+sum readout, post-norm BatchNorm, the degree scaler, and edge labels '
             'where the dataset has them (MUTAG), chosen on MUTAG\'s validation accuracy; they are the defaults of '
             '`build_model` and `pyg-ple bench` now. Each dataset\'s file has its command and budget.', '',
             '| dataset | ' + ' | '.join(name for name, _ in SUMMARY_COLUMNS) + ' |',
             '|---|' + '---:|' * len(SUMMARY_COLUMNS)]
    for path in sorted(out.glob('mechanism_ablation_*.csv')):
        rows = {r['arm']: r for r in csv.DictReader(path.open()) if r['status'] == 'ok'}
        cells = []
        for _, arms in SUMMARY_COLUMNS:
            r = next((rows[a] for a in arms if a in rows), None)
            cells.append('–' if r is None else
                         f"{float(r['acc_mean']):.1f} ± {float(r['acc_std']):.1f} ({float(r['val_acc']):.1f})")
        lines.append(f"| {path.stem.removeprefix('mechanism_ablation_')} | " + ' | '.join(cells) + ' |')
    text = '\n'.join(lines) + '\n'
    atomic_write_text(out / 'mechanism_ablation.md', text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=None, help='data folder (or $PYG_PLE_DATA)')
    p.add_argument('--dataset', default='MUTAG')
    p.add_argument('--arms', nargs='*', default=list(ARMS), choices=list(ARMS))
    p.add_argument('--epochs', type=int, default=50)
    p.add_argument('--folds', type=int, default=10)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--jobs', type=int, default=2, help='arms run at the same time')
    p.add_argument('--extra', action='append', default=[],
                   help='an argument for every arm (repeat it): --extra=--hidden --extra=32')
    p.add_argument('--runs', default='runs/mechanisms', help='parent folder of the run folders')
    p.add_argument('--out', default=str(C.RESULTS))
    p.add_argument('--summarize', action='store_true',
                   help='only write mechanism_ablation.md from the per-dataset CSV files in --out')
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(Path(args.out)))
        return 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda arm: run_arm(args, arm), args.arms))
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.root:  # results name the data folder DATA, not this machine's path
        argv = ['DATA' if a == args.root else a for a in argv]
    command = 'python benchmarks/mechanism_ablation.py ' + ' '.join(shlex.quote(a) for a in argv)
    generic = bench_command(args, 'laplacian', Path('RUN'))
    generic = ['DATA' if a == args.root else ('MODEL' if a == 'laplacian' else a) for a in generic]
    env = C.env_info()
    lines = [f'# One mechanism at a time: {args.dataset}', '',
             f'- command: `{command}`',
             f'- each arm: `pyg-ple bench {" ".join(generic)}` plus the arm\'s arguments (RUN: `{args.runs}/'
             f'{args.dataset}/<arm>`)',
             f'- protocol of Errica et al.: {args.folds} stratified outer folds, a 10 % inner validation split selects '
             'the epoch; seed 0 (the same splits for every arm)',
             f'- torch {env["torch"]}, python {env["python"]}, {env["cpus"]} CPU cores, {args.threads} thread(s) per '
             f'arm, {args.jobs} arms at a time', '',
             '| arm | model | change | val acc % (selection) | test acc % | selected epoch | train loss | s/epoch |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in rows:
        model, extra, what = ARMS[r['arm']]
        change = f'`{" ".join(extra)}`: {what}' if extra else what
        if r['status'] != 'ok':
            lines.append(f"| {r['arm']} | {model} | {change} | {r['status']} | | | | |")
            continue
        lines.append(f"| {r['arm']} | {model} | {change} | {r['val_acc']:.1f} | {r['acc_mean']:.1f} ± "
                     f"{r['acc_std']:.1f} | {r['best_epoch']} | {r['train_loss']:.3f} | {r['sec_per_epoch']:.3f} |")
    out = Path(args.out)
    atomic_write_text(out / f'mechanism_ablation_{args.dataset}.md', '\n'.join(lines) + '\n')
    buf = io.StringIO()
    keys = ['arm', 'status', 'model', 'val_acc', 'acc_mean', 'acc_std', 'folds', 'best_epoch', 'train_loss',
            'sec_per_epoch', 'params']
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, '') for k in keys})
    atomic_write_text(out / f'mechanism_ablation_{args.dataset}.csv', buf.getvalue())
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
