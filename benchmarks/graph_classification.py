"""Collect finished `pyg-ple bench` runs into benchmarks/results/graph_classification.{md,csv,png}.

Usage (after the runs listed in the Markdown file):

    python benchmarks/graph_classification.py runs/MUTAG runs/PROTEINS ... [--out benchmarks/results]

Each run folder holds ``state.json`` (per-fold results) and ``results.json`` (summary and the exact command) written by
``pyg-ple bench``. Only models with all folds finished are reported as complete; partial ones are marked.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

from pyg_ple.bench.io import atomic_write_bytes, atomic_write_text
from pyg_ple.bench.report import format_table, mean_over_runs, plot_results, results_csv, summarize
from pyg_ple.bench.selection import heldout_choice_accuracy

DEFAULT_OUT = Path(__file__).resolve().parent / 'results'
ORDER = ['MUTAG', 'PROTEINS', 'ENZYMES', 'IMDB-BINARY', 'IMDB-MULTI', 'NCI1', 'digits']
MODELS = ['gcn', 'gat', 'gin', 'gps', 'ple-gps', 'transformer', 'laplacian', 'mixed', 'laplacian-tokens']
# Errica et al. (2020), Table 3 (same protocol, full grids, up to 1000 epochs).
LITERATURE = {
    ('PROTEINS', 'GIN'): '73.3 ± 4.0', ('ENZYMES', 'GIN'): '59.6 ± 4.5', ('NCI1', 'GIN'): '80.0 ± 1.4',
    ('IMDB-BINARY', 'GIN'): '71.2 ± 3.9', ('IMDB-MULTI', 'GIN'): '48.5 ± 3.3',
    ('PROTEINS', 'structure-agnostic baseline'): '75.8', ('ENZYMES', 'structure-agnostic baseline'): '65.2',
}


def _splits_digest(run_dir: Path) -> str | None:
    """A digest of the run's outer test folds: rows of two runs are paired fold by fold only when these agree."""
    path = run_dir / 'splits.json'
    if not path.exists():
        return None
    folds = json.loads(path.read_text())['folds']
    return hashlib.sha256(json.dumps([f['test'] for f in folds]).encode()).hexdigest()


def _finished(run_dirs: list[Path]) -> list[Path]:
    """The run folders that hold a ``state.json`` (at least one finished fold)."""
    return [d for d in run_dirs if (d / 'state.json').exists()]


def _order(row: dict) -> tuple[int, int]:
    """Table order: datasets as in ORDER, then models as in MODELS (unknown ones last)."""
    return (ORDER.index(row['dataset']) if row['dataset'] in ORDER else 99,
            MODELS.index(row['model']) if row['model'] in MODELS else 99)


def collect(run_dirs: list[Path]) -> tuple[list[dict], list[dict]]:
    rows, runs = [], []
    for d in run_dirs:
        state = json.loads((d / 'state.json').read_text())
        n_folds = state['config']['n_folds']
        summary = json.loads((d / 'results.json').read_text()) if (d / 'results.json').exists() else {}
        r = summarize(state)
        splits = _splits_digest(d)
        for row in r:
            row['complete'] = row['folds'] == n_folds
            row['splits'] = splits
            row['seed'] = state['config'].get('seed')
            # The training runs per fold (--final-runs) and each fold's first run, the one that selected.
            folds = sorted((x for x in state['runs'].values() if x['model'] == row['model']), key=lambda x: x['fold'])
            finals = [x.get('final_runs') or [x] for x in folds]
            row['final_runs'] = sorted({len(f) for f in finals})
            row['inner_splits'] = state['config'].get('inner_splits', 1)
            row['first_fold_acc'] = [round(100 * f[0]['test_acc'], 2) for f in finals]
            row['run_spread'] = float(np.mean([np.std([100 * x['test_acc'] for x in f]) for f in finals]))
            # Per fold, averaged over its training runs: what the change table's standard errors are taken over.
            row['fold_figures'] = {key: [100 * mean_over_runs(x, key) for x in folds]
                                   for key in ('val_acc', 'heldout_val_acc', 'test_acc')}
        rows += r
        runs.append({'dir': str(d), 'state': state,
                     'models': list(dict.fromkeys(r['model'] for r in state['runs'].values())),
                     'dataset': state['dataset'], 'command': summary.get('command') or state.get('command'),
                     'config': state['config'], 'info': state.get('info', {}), 'seconds': summary.get('seconds'),
                     'n_folds': n_folds, 'splits': splits})
    rows.sort(key=_order)
    return rows, runs


def pivot(rows: list[dict]) -> str:
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    models = sorted(dict.fromkeys(r['model'] for r in rows), key=lambda m: MODELS.index(m) if m in MODELS else 99)
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


def pairwise_counts(rows: list[dict]) -> str:
    """On how many datasets the Laplacian transformer's mean accuracy is at least each other model's (complete rows
    only: a row with folds still to run counts nowhere; a model never compared gets no line)."""
    datasets = list(dict.fromkeys(r['dataset'] for r in rows if r['dataset'] != 'digits'))
    acc = {(r['dataset'], r['model']): r['acc_mean'] for r in rows if r['complete']}
    out = []
    for other in ('gcn', 'gat', 'gin', 'transformer'):
        ds = [d for d in datasets if (d, 'laplacian') in acc and (d, other) in acc]
        if not ds:
            continue
        wins = [d for d in ds if acc[(d, 'laplacian')] >= acc[(d, other)]]
        out.append(f'- laplacian ≥ {other}: {len(wins)} of {len(ds)} datasets ({", ".join(wins) or "none"})')
    return '\n'.join(out)


def paired_differences(rows: list[dict], reference: str = 'laplacian',
                       others: tuple[str, ...] = ('gcn', 'gat', 'gin', 'transformer')) -> str:
    """The reference model minus each other model, fold by fold on the same test folds: mean difference ± its
    standard error (sample std / sqrt(folds)) and the folds where the reference is at least as accurate. Only complete
    rows of runs with identical splits are paired; the others show '–'."""
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    find = {(r['dataset'], r['model']): r for r in rows}
    lines = ['| dataset | ' + ' | '.join(f'{reference} − {o}' for o in others) + ' |',
             '|---|' + '---:|' * len(others)]
    clear = []
    for d in datasets:
        ref = find.get((d, reference))
        if ref is None:
            continue
        cells = []
        for o in others:
            other = find.get((d, o))
            if (other is None or not (ref['complete'] and other['complete']) or ref['splits'] is None
                    or ref['splits'] != other['splits']):
                cells.append('–')
                continue
            diff = np.asarray(ref['fold_acc']) - np.asarray(other['fold_acc'])
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            cells.append(f'{diff.mean():+.1f} ± {se:.1f} ({int((diff >= 0).sum())}/{len(diff)})')
            if abs(diff.mean()) > 2 * se:
                clear.append(f'{d} vs {o} ({diff.mean():+.1f})')
        lines.append(f'| {d} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'Differences larger than two standard errors: ' + (', '.join(clear) or 'none') + '.']
    return '\n'.join(lines)


def pool_seeds(rows: list[dict], replicate: list[dict]) -> list[dict]:
    """Each (dataset, model) of ``rows`` that every split seed of ``replicate`` has as well, its folds of all seeds
    pooled (``rows`` first, then the other seeds in ascending order, the same order for every model): mean and
    population std over all of them, complete when every seed is, and a splits digest of all seeds, so that pooled
    rows pair fold by fold only when every seed's folds agree."""
    by_seed: dict = {}
    for r in replicate:
        by_seed.setdefault(r['seed'], {})[(r['dataset'], r['model'])] = r
    seeds = sorted(by_seed, key=lambda s: (s is None, s))
    pooled = []
    for r in rows:
        parts = [r] + [by_seed[s].get((r['dataset'], r['model'])) for s in seeds]
        if None in parts:
            continue
        folds = [a for p in parts for a in p['fold_acc']]
        splits = [p['splits'] for p in parts]
        pooled.append({**r, 'fold_acc': folds, 'folds': len(folds), 'acc_mean': float(np.mean(folds)),
                       'acc_std': float(np.std(folds)), 'complete': all(p['complete'] for p in parts),
                       'splits': None if None in splits else '+'.join(splits)})
    return pooled


def models_per_seed(rows: list[dict], what: str) -> list[str]:
    """Markdown lines: for each split seed of ``rows`` with more than one model, their table, the counts and the
    paired differences against the Laplacian transformer; then, with more than one seed, the same pooled over the
    seeds. ``what`` says what each row is."""
    by_seed: dict = {}
    for r in rows:
        by_seed.setdefault(r['seed'], []).append(r)
    md = []
    for seed, seed_rows in sorted(by_seed.items(), key=lambda kv: (kv[0] is None, kv[0])):
        if len({r['model'] for r in seed_rows}) > 1:
            md += [f'Seed {seed}, {what}:', '', pivot(seed_rows), '', pairwise_counts(seed_rows), '',
                   paired_differences(seed_rows), '']
    if len(by_seed) > 1:
        first, *others = sorted(by_seed, key=lambda s: (s is None, s))
        pooled = pool_seeds(by_seed[first], [r for s in others for r in by_seed[s]])
        if len({r['model'] for r in pooled}) > 1:
            md += [f'The {len(by_seed)} seeds pooled (the rows every seed has):', '', pivot(pooled), '',
                   pairwise_counts(pooled), '', paired_differences(pooled), '']
    return md


def _paired(baseline: list[dict], changed: list[dict]):
    """``(baseline row, changed row)`` for each complete row of ``changed`` whose dataset and model have a complete
    ``baseline`` row on the same folds (same splits digest) with as many training runs per fold (``--final-runs``)."""
    def key(r: dict) -> tuple:
        return r['dataset'], r['model'], r['splits'], tuple(r['final_runs'])
    find = {key(r): r for r in baseline if r['complete']}
    for r in changed:
        b = find.get(key(r))
        if b is not None and r['complete'] and r['splits'] is not None:
            yield b, r


def _heldout(before: dict, after: dict) -> str:
    # held-out validation accuracy before and after, '–' where a run predates it
    if np.isnan(before.get('heldout_val_mean', np.nan)) or np.isnan(after.get('heldout_val_mean', np.nan)):
        return '–'
    return f"{before['heldout_val_mean']:.1f} → {after['heldout_val_mean']:.1f}"


def change_table(baseline: list[dict], changed: list[dict]) -> str:
    """Each complete row of ``changed`` beside the ``baseline`` row of the same dataset and model on the same folds:
    validation accuracy (of the selected epochs, and held out: chosen on one half of the validation split, scored on
    the other), validation loss (what selection may look at) and test accuracy, before and after the change; under
    the table, the mean changes over the rows with held-out figures."""
    lines = ['| dataset | model | seed | folds | val acc % | held-out val acc % | val loss | test acc % '
             '| test change |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    changes = []
    by_fold: dict[tuple, list] = {}  # (dataset, seed, fold) -> the models' changes there
    by_model: dict[tuple, list] = {}  # (dataset, model) -> its changes fold by fold, every seed
    for b, r in _paired(baseline, changed):
        heldout = _heldout(b, r)
        cells = [r['dataset'], r['model'], r['seed'], r['folds'], f"{b['val_acc_mean']:.1f} → {r['val_acc_mean']:.1f}",
                 heldout, f"{b['val_loss_mean']:.3f} → {r['val_loss_mean']:.3f}",
                 f"{b['acc_mean']:.1f} → {r['acc_mean']:.1f}", f"{r['acc_mean'] - b['acc_mean']:+.1f}"]
        lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
        if heldout != '–':
            changes.append([r[k] - b[k] for k in ('val_acc_mean', 'heldout_val_mean', 'acc_mean')])
            if 'fold_figures' in b and 'fold_figures' in r:
                for fold, diff in enumerate(zip(*(np.subtract(r['fold_figures'][k], b['fold_figures'][k])
                                                  for k in ('val_acc', 'heldout_val_acc', 'test_acc')))):
                    by_fold.setdefault((r['dataset'], r['seed'], fold), []).append(diff)
                    by_model.setdefault((r['dataset'], r['model']), []).append(diff)
    if changes:
        val, heldout, test = np.mean(changes, axis=0)
        lines += ['', f'Mean change over the {len(changes)} rows with held-out figures: validation accuracy '
                      f'{val:+.2f}, held-out validation accuracy {heldout:+.2f}, test accuracy {test:+.2f} points.']
    if len(by_fold) > 1:
        # Models share a fold's splits, so their changes there are averaged first; the folds are the units.
        units = np.array([np.mean(diffs, axis=0) for diffs in by_fold.values()])
        mean, se = units.mean(0), units.std(0, ddof=1) / np.sqrt(len(units))
        lines.append(f'The same changes fold by fold ({len(units)} outer folds, each the mean over the models that '
                     f'ran it), mean ± standard error: validation accuracy {mean[0]:+.2f} ± {se[0]:.2f}, held-out '
                     f'{mean[1]:+.2f} ± {se[1]:.2f}, test {mean[2]:+.2f} ± {se[2]:.2f} points.')
    if len({model for _, model in by_model}) > 1:
        parts = []
        for (dataset, model), diffs in by_model.items():
            d = np.array(diffs)
            mean, se = d.mean(0), d.std(0, ddof=1) / np.sqrt(len(d))
            parts.append(f'{dataset} {model} ({len(d)} folds): validation {mean[0]:+.2f} ± {se[0]:.2f}, held-out '
                         f'{mean[1]:+.2f} ± {se[1]:.2f}, test {mean[2]:+.2f} ± {se[2]:.2f}')
        lines.append('Per dataset and model, fold by fold over its seeds: ' + '; '.join(parts) + '.')
    return '\n'.join(lines)


def heldout_table(rows: list[dict]) -> str:
    """The rows with a held-out validation figure: validation accuracy of the selected epochs, held-out validation
    accuracy and test accuracy, per dataset, split seed and model."""
    lines = ['| dataset | seed | model | val acc % (selected epochs) | held-out val acc % | test acc % |',
             '|---|---:|---|---:|---:|---:|']
    for r in sorted((r for r in rows if not np.isnan(r.get('heldout_val_mean', np.nan))),
                    key=lambda r: (_order(r)[0], r['seed'] or 0, _order(r)[1])):
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['model']} | {r['val_acc_mean']:.1f} | "
                     f"{r['heldout_val_mean']:.1f} | {r['acc_mean']:.1f} |")
    return '\n'.join(lines)


def with_heldout(baseline: list[dict], reruns: list[dict]) -> list[str]:
    """Copy the held-out validation figure of each rerun row into the ``baseline`` row it reruns (same dataset,
    model and folds, the same test accuracy on every fold: runs written before the figure was recorded, rerun
    bit for bit). Returns the rerun rows that match no baseline row."""
    find = {(r['dataset'], r['model'], r['splits']): r for r in baseline}
    unmatched = []
    for r in reruns:
        b = find.get((r['dataset'], r['model'], r['splits']))
        if b is None or b['fold_acc'] != r['fold_acc']:
            unmatched.append(f"{r['dataset']} {r['model']} (seed {r['seed']})")
        else:
            b['heldout_val_mean'] = r['heldout_val_mean']
    return unmatched


def final_runs_table(baseline: list[dict], rows: list[dict]) -> tuple[str, list[dict], list[str]]:
    """Each row of ``rows`` (runs with more than one training run per fold, ``--final-runs``) beside the ``baseline``
    row whose fold accuracies are its first runs': test accuracy with the first run and with the mean of all, and the
    spread of the runs within a fold (population std, mean over folds). Returns the table, the complete rows with
    the same number of runs in every fold (for the tables of the model comparisons) and the rows that extend no
    baseline row."""
    find = {(r['dataset'], r['model'], r['splits']): r for r in baseline}
    lines = ['| dataset | model | seed | runs per fold | test acc %, first run | test acc %, mean of the runs | change '
             '| spread of the runs in a fold |', '|---|---|---:|---:|---:|---:|---:|---:|']
    complete, unmatched = [], []
    for r in rows:
        b = find.get((r['dataset'], r['model'], r['splits']))
        if b is None or b['fold_acc'] != r['first_fold_acc']:
            unmatched.append(f"{r['dataset']} {r['model']} (seed {r['seed']})")
            continue
        runs = '-'.join(map(str, dict.fromkeys((r['final_runs'][0], r['final_runs'][-1]))))  # '3', or '1-3'
        lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | {runs} | {b['acc_mean']:.1f} | "
                     f"{r['acc_mean']:.1f} | {r['acc_mean'] - b['acc_mean']:+.1f} | {r['run_spread']:.1f} |")
        if r['complete'] and len(r['final_runs']) == 1 and r['final_runs'][0] > 1:
            complete.append(r)
    return '\n'.join(lines), complete, unmatched


def leave_out_table(baseline: list[dict], groups: list[tuple[str, list[dict]]]) -> str:
    """One row per (label, model, seed) of ``groups`` (runs with one default setting taken away) and one column per
    dataset: the change of test accuracy against the ``baseline`` row of the same model on the same folds, paired fold
    by fold (mean ± standard error), and in brackets the change of mean validation accuracy, which selection may use.
    The first rows give the defaults' own test and validation accuracy. Where a change ran with more than one seed,
    a row '0+1' pools the paired folds of every seed (datasets where all of them ran). '–': not run, or folds still
    to run."""
    # (label, model) -> dataset -> seed -> (baseline row, changed row)
    pairs: dict[tuple, dict[str, dict]] = {}
    for label, rows in groups:
        for b, r in _paired(baseline, rows):
            pairs.setdefault((label, r['model']), {}).setdefault(r['dataset'], {})[r['seed']] = (b, r)
    datasets = sorted({d for by_ds in pairs.values() for d in by_ds}, key=lambda d: _order({'dataset': d, 'model': ''}))

    def cell(pairs_of_seeds: list[tuple[dict, dict]], default: bool) -> str:
        base = np.concatenate([b['fold_acc'] for b, _ in pairs_of_seeds])
        base_val = np.mean([b['val_acc_mean'] for b, _ in pairs_of_seeds])
        if default:
            return f'{base.mean():.1f} ({base_val:.1f})'
        diff = np.concatenate([r['fold_acc'] for _, r in pairs_of_seeds]) - base
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float('nan')
        val = np.mean([r['val_acc_mean'] for _, r in pairs_of_seeds]) - base_val
        return f'{diff.mean():+.1f} ± {se:.1f} ({val:+.1f})'

    def row_cells(by_ds: dict[str, dict], seeds: tuple, default: bool) -> list[str]:
        return [cell([by_ds[d][s] for s in seeds], default) if d in by_ds and set(seeds) <= set(by_ds[d]) else '–'
                for d in datasets]

    lines = ['| taken away | model | seed | ' + ' | '.join(datasets) + ' |',
             '|---|---|---:|' + '---:|' * len(datasets)]
    body, defaults = [], {}
    for (label, model), by_ds in pairs.items():
        seeds = sorted({s for by_seed in by_ds.values() for s in by_seed})
        rows_seeds = [(s,) for s in seeds] + ([tuple(seeds)] if len(seeds) > 1 else [])
        for ss in rows_seeds:
            name = '+'.join(map(str, ss))
            body.append(f'| {label} | {model} | {name} | ' + ' | '.join(row_cells(by_ds, ss, False)) + ' |')
            # the defaults' own accuracy on the same folds, once per model and seed(s)
            defaults.setdefault((model, name), {}).update(
                {d: c for d, c in zip(datasets, row_cells(by_ds, ss, True)) if c != '–'})
    for (model, name), by_ds in defaults.items():
        lines.append(f'| nothing: test (validation) accuracy % | {model} | {name} | '
                     + ' | '.join(by_ds.get(d, '–') for d in datasets) + ' |')
    return '\n'.join(lines + body)


def _has_final_runs(run: dict) -> bool:
    return any(len(rec.get('final_runs', [])) > 1 for rec in run['state']['runs'].values())


def _fold_runs(runs: list[dict]) -> dict[tuple, dict[int, dict]]:
    """(dataset, model, splits digest) -> {fold: that fold's record in state.json}, for the runs of ``collect``; each
    record with its run's ``patience``, ``select`` rule and ``seed`` (under ``_run``), which replaying it needs."""
    out: dict[tuple, dict[int, dict]] = {}
    for run in runs:
        meta = {k: run['config'].get(k, d) for k, d in (('patience', None), ('select', 'acc'), ('seed', None))}
        for rec in run['state']['runs'].values():
            out.setdefault((run['dataset'], rec['model'], run['splits']), {})[rec['fold']] = {**rec, '_run': meta}
    return out


def _choice_heldout(records: list[dict]) -> float:
    """Held-out validation accuracy (%) of choosing among one fold's ``records`` (selection.heldout_choice_accuracy),
    each replayed with its own patience (a grid point's, else its run's); NaN where a record has no half curves or
    the records differ in selection rule."""
    rules = {r['_run']['select'] for r in records}
    if len(rules) != 1 or not all('val_a_acc' in r.get('curve', {}) for r in records):
        return float('nan')
    patience = [r.get('train', {}).get('patience', r['_run']['patience']) for r in records]
    return 100 * heldout_choice_accuracy([r['curve'] for r in records], patience, rules.pop())[0]


def select_per_fold(base_runs: list[dict], *arm_runs: list[dict]) -> list[dict]:
    """A grid whose points are the default (``base_runs``) and each of ``arm_runs``, chosen in every outer fold as
    ``pyg-ple bench --grid`` chooses: the higher validation accuracy, ties to the lower validation loss, then to the
    earlier point. One row per dataset, model and splits that every point has in every fold (the rows of
    ``collect``, with ``seed``; ``picked``: the folds that chose each point, the default first; ``acc_mean``: the
    test accuracy of the choice; ``heldout_mean``: the held-out validation accuracy of the choice, made on one half
    of the validation split and scored on the other (NaN without half curves); ``base_acc_mean``,
    ``base_heldout_mean``: the default's; ``fold_diffs``: per fold, the choice minus the default, held-out and test,
    in points)."""
    base, arms = _fold_runs(base_runs), [_fold_runs(r) for r in arm_runs]
    n_folds = {run['dataset']: run['n_folds'] for run in base_runs}
    rows = []
    for key, folds in base.items():
        others = [arm.get(key, {}) for arm in arms]
        dataset, model, splits = key
        if len(folds) != n_folds[dataset] or any(set(o) != set(folds) for o in others):
            continue
        order = sorted(folds)
        candidates = [[folds[f], *(o[f] for o in others)] for f in order]
        # the score --grid ranks by (accuracy, then lower loss); max keeps the first of equal ones, as --grid does
        chosen = [max(range(len(c)), key=lambda j, c=c: c[j]['val_score']) for c in candidates]
        accs = np.array([100 * c[j]['test_acc'] for c, j in zip(candidates, chosen)])
        base_accs = np.array([100 * folds[f]['test_acc'] for f in order])
        heldout = np.array([_choice_heldout(c) for c in candidates])
        base_heldout = np.array([np.nan if folds[f].get('heldout_val_acc') is None
                                 else 100 * folds[f]['heldout_val_acc'] for f in order])
        rows.append({'dataset': dataset, 'model': model, 'seed': folds[order[0]]['_run']['seed'],
                     'acc_mean': float(accs.mean()), 'acc_std': float(accs.std()), 'folds': len(accs),
                     'fold_acc': [round(float(a), 2) for a in accs], 'complete': True, 'splits': splits,
                     'picked': [chosen.count(j) for j in range(len(arms) + 1)],
                     'heldout_mean': float(heldout.mean()), 'base_acc_mean': float(base_accs.mean()),
                     'base_heldout_mean': float(base_heldout.mean()),
                     'fold_diffs': np.stack([heldout - base_heldout, accs - base_accs], axis=1)})
    return sorted(rows, key=lambda r: (*_order(r), r['seed'] is None, r['seed'] or 0))


def choice_table(rows: list[dict], points: list[str]) -> str:
    """The rows of :func:`select_per_fold`: per cell the folds that chose each of ``points`` (labels, the default
    first), held-out validation and test accuracy of the default and of the choice; under it the choice minus the
    default fold by fold, mean ± standard error, over all folds and per dataset."""
    lines = [f"| dataset | model | seed | folds | folds choosing {' / '.join(points)} | held-out val acc % "
             "(default → choice) | test acc % (default → choice) |", '|---|---|---:|---:|---:|---:|---:|']
    for r in rows:
        heldout = ('–' if np.isnan(r['heldout_mean']) or np.isnan(r['base_heldout_mean'])
                   else f"{r['base_heldout_mean']:.1f} → {r['heldout_mean']:.1f}")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | {r['folds']} | "
                     f"{' / '.join(map(str, r['picked']))} | {heldout} | "
                     f"{r['base_acc_mean']:.1f} → {r['acc_mean']:.1f} |")

    def summary(group: list[dict]) -> str:
        d = np.concatenate([r['fold_diffs'] for r in group])
        parts = []
        for name, col in (('held-out validation', d[:, 0]), ('test', d[:, 1])):
            col = col[~np.isnan(col)]
            se = col.std(ddof=1) / np.sqrt(len(col)) if len(col) > 1 else np.nan
            parts.append(f'{name} {col.mean():+.2f} ± {se:.2f} ({len(col)} folds)' if len(col) else f'{name} –')
        return ', '.join(parts)

    lines += ['', 'The choice minus the default, fold by fold, mean ± standard error: ' + summary(rows) + '.']
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r['dataset'], r['model']), []).append(r)
    if len(groups) > 1:
        lines += ['Per dataset and model: ' + '; '.join(f'{ds} {m}: {summary(g)}' for (ds, m), g in groups.items())
                  + '.']
    return '\n'.join(lines)


def _run_settings(runs: list[dict]) -> list[str]:
    md = ['| run | dataset | models | epochs | patience | grid | hidden | lr | features | wall time (min) |',
          '|---|---|---|---:|---:|---|---:|---:|---|---:|']
    for r in runs:
        c, info = r['config'], r['info']
        grid = '; '.join(json.dumps(g) for g in c['grid']) if c['grid'] != [{}] else 'one config'
        secs = f"{r['seconds'] / 60:.1f}" if r['seconds'] else '–'
        md.append(f"| `{r['dir']}` | {r['dataset']} | {', '.join(r['models'])} | {c['epochs']} | "
                  f"{c['patience'] or '–'} | {grid} | {c['hparams'].get('hidden', '')} | {c['lr']:g} | "
                  f"{info.get('features', '')}{' + ' + info['pe'] + ' PE' if info.get('pe') else ''}"
                  f"{'; ' + info['edge_features'] if info.get('edge_features') else ''} | {secs} |")
    return md


def _selected_configs(runs: list[dict]) -> list[str]:
    """For runs with a grid: how often each configuration was selected (on validation) per model."""
    out = []
    for run in runs:
        state = run['state']
        grid = state['config']['grid']
        if len(grid) < 2:
            continue
        for r in summarize(state):
            counts = np.bincount(r['selected_config'], minlength=len(grid))
            picks = ', '.join(f'{json.dumps(g)} in {n}' for g, n in zip(grid, counts))
            out.append(f"- {state['dataset']} {r['model']}: {picks} of {r['folds']} folds")
    return out


def _ablations(specs: list[str]) -> tuple[list[str], list[str]]:
    """``RUN[@model]=variant|option`` -> a table row per spec, numbers straight from the run's state.json; also the
    commands of those runs."""
    md = ['| dataset | model | variant | option | accuracy (%) | folds | run |', '|---|---|---|---|---:|---:|---|']
    commands = []
    for spec in specs:
        where, _, label = spec.partition('=')
        variant, _, option = label.partition('|')
        run, _, model = where.partition('@')
        state = json.loads((Path(run) / 'state.json').read_text())
        commands.append(state.get('command'))
        for r in summarize(state, [model] if model else None):
            md.append(f"| {state['dataset']} | {r['model']} | {variant} | {f'`{option}`' if option else '–'} | "
                      f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f} | {r['folds']} | `{run}` |")
    return md, commands


def _training_runs_clause(rows: list[dict]) -> str:
    """How often the main table trained each fold's selected configuration, as the budget paragraph says it."""
    counts = {n for r in rows for n in r['final_runs']}
    inner = {r['inner_splits'] for r in rows}
    if inner != {1}:
        k = '/'.join(map(str, sorted(inner)))
        return (f', and each fold has {k} inner validation splits instead of one: every configuration is trained once '
                'on each, the mean of its validation scores selects, and a fold\'s test accuracy is the mean of its '
                'runs')
    if counts == {1}:
        return (', and the selected configuration is trained once per fold instead of three times (the section "More '
                'than one training run per fold" adds the other two where they ran)')
    if len(counts) == 1:
        n = counts.pop()
        return (f', and the selected configuration is trained {n} times per fold, as Errica et al. do (a fold\'s '
                f'test accuracy is the mean of the {n} runs)')
    return (f', and the selected configuration is trained {min(counts)} to {max(counts)} times per fold (the run '
            f'table says which; a fold\'s test accuracy is the mean of its runs)')


def _data_as_placeholder(command: str) -> str:
    """The command with its data folder written ``DATA``: the results name no path of the machine they ran on."""
    return re.sub(r'--root(=|\s+)\S+', '--root DATA', command)



def read_notes(spec: str) -> str | None:
    """The text of ``--notes``: a whole Markdown file, or with ``FILE#NAME`` the entry of a log that starts at the line
    ``<a id="NAME"></a>`` and ends before the next such line (its dated heading left out). A missing plain file gives
    None, as before; a missing log entry is an error."""
    path, _, name = spec.partition('#')
    if not name:
        return Path(path).read_text().strip() if Path(path).exists() else None
    lines = Path(path).read_text().split('\n')
    marker = f'<a id="{name}"></a>'
    if marker not in lines:
        raise SystemExit(f'graph_classification.py: error: {path} has no entry {name!r}')
    entry = []
    for line in lines[lines.index(marker) + 1:]:
        if line.startswith('<a id="'):
            break
        entry.append(line)
    text = '\n'.join(entry).strip()
    return text.split('\n', 1)[1].strip() if text.startswith('## ') else text

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs', nargs='+', type=Path, help='run folders of the main table')
    ap.add_argument('--earlier', nargs='*', type=Path, default=[],
                    help='run folders with other budgets, features or no grid, shown as a second table')
    ap.add_argument('--short-budget', nargs='*', type=Path, default=[],
                    help='run folders of the same models and inputs with shorter training budgets, shown as a table')
    ap.add_argument('--replicate', nargs='*', type=Path, default=[],
                    help='run folders of the main table\'s models and settings with other --seed values (other '
                         'splits): a table per seed and all seeds pooled')
    ap.add_argument('--change', nargs='+', action='append', default=[], metavar=('LABEL', 'RUN'),
                    help='LABEL RUN [RUN ...]: runs of the main table\'s (or --replicate\'s) settings with one change, '
                         'each model shown beside its default row on the same folds (repeatable)')
    ap.add_argument('--choose', nargs='+', action='append', default=[], metavar=('LABEL', 'RUN'),
                    help='LABEL RUN [RUN ...]: runs of the main table\'s (or --replicate\'s) settings with other '
                         'values of a one-point --grid; the default and each grid value found are the points of a '
                         'grid chosen per outer fold on validation, with the held-out figure of that choice '
                         '(repeatable)')
    ap.add_argument('--leave-out', nargs='+', action='append', default=[], metavar=('LABEL', 'RUN'),
                    help='LABEL RUN [RUN ...]: runs of the main table\'s (or --replicate\'s) settings with one '
                         'default taken away; every such group is a row of one table of changes against the default '
                         'on the same folds (repeatable)')
    ap.add_argument('--heldout-from', nargs='*', type=Path, default=[], metavar='RUN',
                    help='reruns of main-table or --replicate runs (the same command, the same fold accuracies) that '
                         'recorded the held-out validation accuracy the earlier runs predate; the change tables '
                         'show it')
    ap.add_argument('--final-runs-from', nargs='*', type=Path, default=[], metavar='RUN',
                    help='main-table or --replicate runs extended with --final-runs (their first run per fold is the '
                         'earlier run, bit for bit): a table of the test accuracy of one run and of the mean of all')
    ap.add_argument('--ablation', action='append', default=[], metavar='RUN[@MODEL]=VARIANT|OPTION',
                    help='one row of the ablation table (repeatable)')
    ap.add_argument('--out', type=Path, default=DEFAULT_OUT)
    ap.add_argument('--notes', type=str, default=None,
                    help='Markdown appended as "Findings": a file, or FILE#NAME for the entry NAME of a log such as '
                         'benchmarks/screening_log.md')
    args = ap.parse_args(argv)
    for flag, groups in (('--change', args.change), ('--choose', args.choose), ('--leave-out', args.leave_out)):
        if any(len(g) < 2 for g in groups):
            ap.error(f'{flag} needs a label and at least one run folder')
    rows, runs = collect(_finished(args.runs))
    main_runs = list(runs)  # runs grows with every table's runs, for the command list
    if not rows:
        print('no finished runs found', file=sys.stderr)
        return 1
    md = ['# Graph classification: Laplacian-attention transformers vs GCN / GAT / GIN / GPS', '',
          'Test accuracy (%), mean ± population std over the outer folds of the protocol of Errica et al. (2020): '
          'stratified 10-fold CV; inside each training fold a stratified 10 % validation split selects the epoch '
          '(best validation accuracy, ties: lower validation loss) and the grid configuration; the selected model is '
          'tested on the held-out fold. All models see the same splits (`splits.json` of each run; the same seed '
          'gives the same folds in every run folder), the same inputs and readout (the defaults of `pyg-ple bench`: '
          'a linear map of the node features plus one of 8 random-walk return probabilities; one-hot degree for '
          'IMDB; on ENZYMES the 3 node labels and 18 continuous attributes, as Errica et al., with a BatchNorm on the '
          'raw features; the bond labels of MUTAG as edge features of every model that takes them, i.e. all but '
          'GCN; mean and sum pooling concatenated), MLP head, optimiser (Adam) and training loop '
          '(`pyg_ple.bench.training.fit`). The transformers are post-norm BatchNorm blocks with the degree scaler '
          'and differ only in their heads: standard softmax `A V` (transformer) or Laplacian `(A - I) V` '
          '(laplacian). Bold: best on the dataset.',
          '', pivot(rows), '',
          '**Compute budget (read before comparing with the literature).** These runs share 2 CPU cores, so the '
          'grid is shrunk: one configuration per model (3 layers, 4 heads, dropout 0.1, batch 32, Adam lr 3e-3, no '
          'weight decay, attention over the native edges; the width is in the run table) except where the run '
          'table below lists a grid, and training runs of at most 100 epochs that stop after `patience` epochs '
          'without a better validation accuracy (the run table gives both) instead of Errica et al.\'s grid of up '
          'to 1000 epochs with patience 500' + _training_runs_clause(rows) + '. The '
          'rest of the protocol (10 outer folds, inner validation, selection on validation only) is not shrunk. '
          'Numbers are lower bounds for every model; differences within one '
          'standard deviation are not meaningful. "selected epoch" near "epochs" in the details means the budget, '
          'not early stopping, ended training.', '',
          '## Laplacian transformer against each other model', '', pairwise_counts(rows) or '(no model to compare)', '',
          'Paired by fold (the same test folds): laplacian minus the other model in accuracy points, mean ± standard '
          'error over the folds, and in parentheses the folds where laplacian is at least as accurate.', '',
          paired_differences(rows), '',
          '## Details', '', format_table(rows, markdown=True), '',
          'Literature (Errica et al. 2020, same protocol, full grid): ' + '; '.join(
              f'{m} {d} {v}' for (d, m), v in LITERATURE.items()) + '.', '']
    selected = _selected_configs(runs)
    if selected:
        md += ['Grid configurations selected on validation, per fold:', '', *selected, '']
    md += ['## Runs', '', *_run_settings(runs), '']
    for title, prose, dirs in [
            ('The same models with shorter budgets (same splits)',
             'Fixed budgets of 15 (PROTEINS, IMDB), 25 (NCI1) or 50 (MUTAG) epochs without early stopping, the run '
             'table says which: what the longer budgets of the main table change.', args.short_budget),
            ('Earlier runs (same splits)',
             'The same protocol and splits with other budgets, features or no grid (the run table below says which): '
             'what those choices change.', args.earlier)]:
        if dirs:
            side_rows, side_runs = collect(_finished(dirs))
            md += [f'## {title}', '', prose, '', pivot(side_rows), '', *_run_settings(side_runs), '']
            runs += side_runs
    if args.replicate:
        rep_rows, rep_runs = collect(_finished(args.replicate))
        pooled = pool_seeds(rows, rep_rows)
        seeds = sorted({r['seed'] for r in rep_rows}, key=lambda s: (s is None, s))
        n_seeds = len(seeds) + 1
        md += ['## Other split seeds', '',
               'The main table\'s models and settings rerun with `--seed ' + '`, `--seed '.join(map(str, seeds))
               + '`: other outer folds, inner validation splits and initialisations.', '']
        for seed in seeds:
            md += [f'Seed {seed} alone:', '', pivot([r for r in rep_rows if r['seed'] == seed]), '']
        md += [f'All {n_seeds} seeds pooled ({n_seeds} × {main_runs[0]["n_folds"]} folds per cell; folds of different '
               'seeds overlap in their graphs, so the spread understates the uncertainty):', '', pivot(pooled), '',
               pairwise_counts(pooled), '',
               f'Paired by fold within each seed, the differences of all {n_seeds} seeds pooled:', '',
               paired_differences(pooled), '', *_run_settings(rep_runs), '']
        runs += rep_runs
    baseline = rows + (rep_rows if args.replicate else [])  # the default rows a change is paired with
    # the default runs a grid choice starts from: one training run per fold, so the choice reads the selecting run
    baseline_runs = [r for r in main_runs + (rep_runs if args.replicate else []) if not _has_final_runs(r)]
    if args.heldout_from:
        rerun_rows, rerun_runs = collect(_finished(args.heldout_from))
        unmatched = with_heldout(baseline, rerun_rows)
        if unmatched:
            ap.error('--heldout-from: not a rerun of a main-table or --replicate run (no row with the same fold '
                     'accuracies): ' + ', '.join(unmatched))
        runs += rerun_runs
        md += ['## Validation of the selected epochs and held out', '',
               'The rows of the main table and the other split seeds rerun to record the held-out validation '
               'accuracy (the epoch chosen on one half of the validation split, scored on the other half, both ways '
               'round; the same fold accuracies as the runs above, bit for bit). The validation accuracy of the '
               'selected epochs is a maximum over noisy epochs; the held-out figure is not. Neither looks at a test '
               'graph.', '', heldout_table(baseline), '']
    if args.final_runs_from:
        final_rows, final_runs = collect(_finished(args.final_runs_from))
        table, complete, unmatched = final_runs_table(baseline, final_rows)
        if unmatched:
            ap.error('--final-runs-from: not an extension of a main-table or --replicate run (no row whose fold '
                     'accuracies are its first runs\'): ' + ', '.join(unmatched))
        md += ['## More than one training run per fold', '',
               'Errica et al. train the selected configuration three times per fold and report the mean test accuracy '
               '"to mitigate unlucky random initializations"; the tables above train it once. These runs add training '
               'runs to every fold of runs above (`--final-runs 3 --resume` on copies of their folders: the first run '
               'of each fold is the one above, bit for bit; the others differ in initialisation and batch order '
               'only, with the same splits and early stopping on the same validation split).', '', table, '']
        md += [*models_per_seed(complete, 'the models with every fold complete, each fold the mean of its runs'),
               *_run_settings(final_runs), '']
        runs += final_runs
    # A change with several training runs per fold is set beside the default's runs with as many (the section above).
    change_baseline = baseline + (complete if args.final_runs_from else [])
    for label, *dirs in args.change:
        change_rows, change_runs = collect(_finished([Path(d) for d in dirs]))
        md += [f'## One change: {label}', '',
               'Each row: a model at the default settings (the main table, or another split seed on its folds) → the '
               'same model with this one change, on the same folds; the run table says which models and datasets '
               'ran. Validation figures are what selection may use, test figures what it must not.', '',
               change_table(change_baseline, change_rows), '']
        # one run per fold on both sides: the choice reads the selecting run's validation figures
        selected = select_per_fold(baseline_runs, [r for r in change_runs if not _has_final_runs(r)])
        if selected:
            md += ['Chosen per outer fold between the default and the change, as a two-point grid of `pyg-ple bench` '
                   'would choose (validation accuracy, ties: lower validation loss), where the change ran on the '
                   'default\'s folds. The held-out figure makes the same choice on one half of the validation split '
                   'and scores it on the other, both ways round (`heldout_choice_accuracy`): a choice that validation '
                   'cannot make shows there, without a test graph.', '', choice_table(selected, ['default', 'change']),
                   '']
        md += [*_run_settings(change_runs), '']
        runs += change_runs
    for label, *dirs in args.choose:
        _, choose_runs = collect(_finished([Path(d) for d in dirs]))
        points: dict[str, list[dict]] = {}  # a run's grid, e.g. 'heads 8' -> its runs
        for run in choose_runs:
            grid = run['config'].get('grid') or [{}]
            name = ('; '.join(', '.join(f'{k} {v}' for k, v in g.items()) for g in grid) or 'default')
            points.setdefault(name, []).append(run)
        selected = select_per_fold(baseline_runs, *([r for r in p if not _has_final_runs(r)] for p in points.values()))
        md += [f'## Chosen per fold: {label}', '',
               'The default and the runs below, one grid point each, as the points of one grid chosen in every outer '
               'fold as `pyg-ple bench --grid` chooses (validation accuracy, ties: lower validation loss, then the '
               'earlier point), where every point ran on the same folds. The held-out figure makes the same choice '
               'on one half of the validation split and scores it on the other, both ways round '
               '(`heldout_choice_accuracy`); test accuracy is reported and chooses nothing. The points ran with the '
               'same run seed in a fold, where one `--grid` run gives each point its own.', '',
               choice_table(selected, ['default', *points]) if selected
               else '(no cell where every point finished every fold)', '',
               *models_per_seed(selected, 'each model with the point chosen in each fold'),
               *_run_settings(choose_runs), '']
        runs += choose_runs
    if args.leave_out:
        collected = [(label, collect(_finished([Path(d) for d in dirs]))) for label, *dirs in args.leave_out]
        leave_out_runs = [run for _, (_, label_runs) in collected for run in label_runs]
        md += ['## The defaults, one taken away at a time', '',
               'Each row: one setting of the defaults taken away (the run table gives its flags), the rest as in the '
               'main table, on the same folds. Each cell: the change of test accuracy in points, paired fold by fold '
               '(mean ± standard error over the folds), and in brackets the change of mean validation accuracy, '
               'which is what selection may use. The first row gives the defaults\' own test (validation) accuracy. '
               '–: not run, or folds still to run.', '',
               leave_out_table(baseline, [(label, label_rows) for label, (label_rows, _) in collected]), '',
               *_run_settings(leave_out_runs), '']
        runs += leave_out_runs
    ablation_md, ablation_commands = _ablations(args.ablation)
    if args.ablation:
        md += ['## Ablations', '', *ablation_md, '']
    md += ['## Exact commands', '',
           'Data: `../shared/data/TUDataset/<NAME>/raw` (read-only). `pyg-ple` never writes there: it symlinks the raw '
           'files into a writable cache (`$PYG_PLE_CACHE/TUDataset`, default '
           '`~/.cache/pyg_ple/cache/TUDataset/<NAME>/raw`) and PyG writes `processed/` next to the links. Run folders '
           '(`runs/`, git-ignored) hold `splits.json`, `state.json`, the selected model of every fold and the per-run '
           'results. The runs were started from the repository root as `python -m pyg_ple bench ...` (the same entry '
           'point as `pyg-ple`), two at a time with one thread each, with `DATA` being `../shared/data` seen from the '
           'repository.', '', '```']
    md += [_data_as_placeholder(c) for c in dict.fromkeys([r['command'] for r in runs] + ablation_commands) if c]
    cmd = ['python benchmarks/graph_classification.py ' + ' '.join(map(str, args.runs))]
    if args.short_budget:
        cmd.append('--short-budget ' + ' '.join(map(str, args.short_budget)))
    if args.earlier:
        cmd.append('--earlier ' + ' '.join(map(str, args.earlier)))
    if args.replicate:
        cmd.append('--replicate ' + ' '.join(map(str, args.replicate)))
    if args.heldout_from:
        cmd.append('--heldout-from ' + ' '.join(map(str, args.heldout_from)))
    if args.final_runs_from:
        cmd.append('--final-runs-from ' + ' '.join(map(str, args.final_runs_from)))
    cmd += [f"--change '{label}' " + ' '.join(dirs) for label, *dirs in args.change]
    cmd += [f"--choose '{label}' " + ' '.join(dirs) for label, *dirs in args.choose]
    cmd += [f"--leave-out '{label}' " + ' '.join(dirs) for label, *dirs in args.leave_out]
    cmd += [f"--ablation '{a}'" for a in args.ablation]
    if args.notes:
        cmd.append(f'--notes {args.notes}')
    if args.out.resolve() != DEFAULT_OUT:  # else rerunning the command would write over the main report
        cmd.append(f'--out {args.out}')
    md += [' \\\n    '.join(cmd), '```', '']
    notes = read_notes(args.notes) if args.notes else None
    if notes:
        md += ['## Findings', '', notes, '']
    out = args.out
    atomic_write_text(out / 'graph_classification.md', '\n'.join(md))
    atomic_write_text(out / 'graph_classification.csv', results_csv(rows))
    atomic_write_bytes(out / 'graph_classification.png',
                       plot_results(rows, 'Graph classification, 10-fold CV (Errica et al. protocol)'))
    print(pivot(rows))
    print(f'\nwrote {out}/graph_classification.{{md,csv,png}}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
