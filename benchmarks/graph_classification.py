"""Collect finished `pyg-ple bench` runs into benchmarks/results/graph_classification.{md,csv,png}.

Usage (after the runs listed in the Markdown file):

    python benchmarks/graph_classification.py runs/MUTAG runs/PROTEINS ... [--out benchmarks/results]

Each run folder holds ``state.json`` (per-fold results) and ``results.json`` (summary and the exact command) written by
``pyg-ple bench``. Only models with all folds finished are reported as complete; partial ones are marked.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyg_ple.protocol import _csv, format_table, plot_results, summarize
from pyg_ple.training import atomic_write_bytes, atomic_write_text

ORDER = ['MUTAG', 'PROTEINS', 'ENZYMES', 'IMDB-BINARY', 'IMDB-MULTI', 'NCI1', 'digits']
MODELS = ['gcn', 'gat', 'gin', 'gps', 'transformer', 'laplacian', 'mixed', 'laplacian-tokens']
# Errica et al. (2020), Table 3 (same protocol, full grids, up to 1000 epochs).
LITERATURE = {
    ('PROTEINS', 'GIN'): '73.3 ± 4.0', ('ENZYMES', 'GIN'): '59.6 ± 4.5', ('NCI1', 'GIN'): '80.0 ± 1.4',
    ('IMDB-BINARY', 'GIN'): '71.2 ± 3.9', ('IMDB-MULTI', 'GIN'): '48.5 ± 3.3',
    ('PROTEINS', 'structure-agnostic baseline'): '75.8', ('ENZYMES', 'structure-agnostic baseline'): '65.2',
}


def collect(run_dirs: list[Path]) -> tuple[list[dict], list[dict]]:
    rows, runs = [], []
    for d in run_dirs:
        state = json.loads((d / 'state.json').read_text())
        n_folds = state['config']['n_folds']
        summary = json.loads((d / 'results.json').read_text()) if (d / 'results.json').exists() else {}
        r = summarize(state)
        for row in r:
            row['complete'] = row['folds'] == n_folds
        rows += r
        runs.append({'dataset': state['dataset'], 'command': summary.get('command') or state.get('command'),
                     'config': state['config'], 'info': state.get('info', {}), 'seconds': summary.get('seconds'),
                     'n_folds': n_folds})
    key = lambda r: (ORDER.index(r['dataset']) if r['dataset'] in ORDER else 99,  # noqa: E731
                     MODELS.index(r['model']) if r['model'] in MODELS else 99)
    rows.sort(key=key)
    return rows, runs


def pivot(rows: list[dict]) -> str:
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    models = list(dict.fromkeys(r['model'] for r in rows))
    lines = ['| model | ' + ' | '.join(datasets) + ' |', '|---|' + '---:|' * len(datasets)]
    for m in models:
        cells = []
        for d in datasets:
            r = next((r for r in rows if r['dataset'] == d and r['model'] == m), None)
            if r is None:
                cells.append('–')
            else:
                best = max(x['acc_mean'] for x in rows if x['dataset'] == d)
                txt = f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f}"
                if not r['complete']:
                    txt += f" ({r['folds']} folds)"
                cells.append(f'**{txt}**' if r['acc_mean'] == best else txt)
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def goal(rows: list[dict]) -> str:
    datasets = list(dict.fromkeys(r['dataset'] for r in rows if r['dataset'] != 'digits'))
    acc = {(r['dataset'], r['model']): r['acc_mean'] for r in rows}
    out = []
    for other, need in (('gcn', 5), ('gat', 5), ('gin', 3), ('transformer', 4)):
        ds = [d for d in datasets if (d, 'laplacian') in acc and (d, other) in acc]
        wins = [d for d in ds if acc[(d, 'laplacian')] >= acc[(d, other)]]
        out.append(f'- laplacian ≥ {other}: {len(wins)} of {len(ds)} datasets ({", ".join(wins) or "none"}); '
                   f'target {need} of 6')
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs', nargs='+', type=Path)
    ap.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'results')
    ap.add_argument('--notes', type=Path, default=None, help='Markdown file appended as "Findings"')
    args = ap.parse_args(argv)
    rows, runs = collect([d for d in args.runs if (d / 'state.json').exists()])
    if not rows:
        print('no finished runs found', file=sys.stderr)
        return 1
    md = ['# Graph classification: Laplacian-attention transformers vs GCN / GAT / GIN', '',
          'Test accuracy (%), mean ± population std over the outer folds of the protocol of Errica et al. (2020): '
          'stratified 10-fold CV; inside each training fold a stratified 10 % validation split selects the epoch '
          '(best validation accuracy, ties: lower validation loss) and the grid configuration; the selected model is '
          'tested on the held-out fold. All models see the same splits (`splits.json` of each run), the same '
          'encoder (linear map of the node features; one-hot degree for IMDB), mean pooling, MLP head, optimiser '
          '(Adam) and training loop (`pyg_ple.training.fit`). Edge labels are not used. Bold: best on the dataset.',
          '', pivot(rows), '',
          '**Compute budget (read before comparing with the literature).** These runs share 2 CPU cores with other '
          'jobs, so the grid is shrunk to ONE configuration per model (3 layers, 4 heads, dropout 0.1, mean '
          'pooling, batch 32, Adam lr 3e-3, no weight decay, no positional encoding, attention over the native '
          'edges; hidden width and epochs per dataset in the table below) and the epoch budget is short instead of '
          'Errica et al.\'s grid and up to 1000 '
          'epochs with early stopping. The protocol itself (10 outer folds, inner validation, selection on '
          'validation only) is not shrunk. Numbers are therefore lower bounds for every model, and differences '
          'within one standard deviation are not meaningful.', '',
          '## Goal check (issue: Laplacian transformer vs the others)', '', goal(rows), '',
          '## Details', '', format_table(rows, markdown=True), '',
          'Literature (Errica et al. 2020, same protocol, full grid): ' + '; '.join(
              f'{m} {d} {v}' for (d, m), v in LITERATURE.items()) + '.', '',
          '## Exact commands', '',
          'Data: `../shared/data/TUDataset/<NAME>/raw` (read-only). `pyg-ple` never writes there: it symlinks the raw '
          'files into a writable cache (`$PYG_PLE_CACHE`, default `~/.cache/pyg_ple/tu/<NAME>/raw`) and PyG writes '
          '`processed/` next to the links. Run folders (`runs/`, git-ignored) hold `splits.json`, `state.json`, the '
          'selected model of every fold and the per-run results. The runs were started from the repository root as '
          '`python -m pyg_ple bench ...` (the same entry point as `pyg-ple`), one after another, with '
          '`/work/shared/data` being `../shared/data` seen from the repository.', '', '```']
    for r in runs:
        md.append(r['command'])
    md += [f'python benchmarks/graph_classification.py {" ".join(str(d) for d in args.runs)}', '```', '']
    md += ['| dataset | epochs | hidden | graphs | features | wall time (min) |', '|---|---:|---:|---:|---|---:|']
    for r in runs:
        info = r['info']
        secs = f"{r['seconds'] / 60:.1f}" if r['seconds'] else '–'
        md.append(f"| {r['dataset']} | {r['config']['epochs']} | {r['config']['hparams'].get('hidden', '')} | "
                  f"{info.get('graphs', '')} | "
                  f"{info.get('features', '')} | {secs} |")
    md.append('')
    if args.notes and args.notes.exists():
        md += ['## Findings', '', args.notes.read_text().strip(), '']
    out = args.out
    atomic_write_text(out / 'graph_classification.md', '\n'.join(md))
    atomic_write_text(out / 'graph_classification.csv', _csv(rows))
    atomic_write_bytes(out / 'graph_classification.png',
                       plot_results(rows, 'Graph classification, 10-fold CV (Errica et al. protocol)'))
    print(pivot(rows))
    print(f'\nwrote {out}/graph_classification.{{md,csv,png}}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
