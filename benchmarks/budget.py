"""Is the epoch budget long enough? The protocol replayed at shorter budgets on runs trained to a longer one.

``pyg-ple bench`` trains each run for at most ``--epochs`` and keeps the epoch of best validation score, stopping
after ``--patience`` epochs without a better one. A run that reaches the budget has not stopped by itself: its
selected epoch lies in the last ``patience`` epochs, and a longer budget might have found a better one. This script
trains every (model, fold) of a ``pyg-ple bench`` command with its early stopping, to its ``--epochs`` (the longest
budget), and records at every epoch the validation score, accuracy and loss, the two halves of the validation split
and the test fold. Training does not depend on the budget (a constant learning rate, or step decay), so what a
budget of ``C`` epochs would have selected is replayed exactly on the first ``C`` epochs of the same runs: every
budget is compared on the same initialisations and batches, and a run "reaches its budget" when its selected epoch
is within the last ``patience`` epochs of it.

    python benchmarks/budget.py --budgets 100,200,300 -- --root DATA --dataset ENZYMES --folds 10 --lr 0.003 \\
        --threads 1 --no-progress --epochs 300 --patience 30 --hidden 32 --node-attr \\
        --models gcn,gat,gin,transformer,laplacian,mixed

(the arguments after ``--`` are those of a ``pyg-ple bench`` run with ``--epochs`` the longest budget; ``--out``,
``--resume``, ``--overwrite``, ``--grid``, ``--final-runs``, ``--inner-splits`` and ``--schedule cosine``, whose
decay depends on the budget, are refused). The curves of each (dataset, split seed, model) go to
``<out>/curves_<dataset>_seed<seed>_<model>.csv`` (its command and settings to the ``.json`` beside it; finished
folds are skipped when the command is run again), and ``budget.md`` is written from every curves file in ``--out``.
The test fold chooses nothing: it is reported beside the validation figures. The extra evaluation loaders draw from
torch's random stream, so these runs are a fresh draw of the protocol, not a copy of ``pyg-ple bench``'s.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from pyg_ple.bench.io import atomic_write_text  # noqa: E402
from pyg_ple.bench.selection import ended_by_budget, heldout_accuracy, replay_selection  # noqa: E402

FIELDS = ['dataset', 'seed', 'model', 'fold', 'epoch', 'train_loss', 'val_score', 'val_acc', 'val_loss', 'val_a_acc',
          'val_a_loss', 'val_b_acc', 'val_b_loss', 'test_acc', 'test_loss']
REFUSED = ('--out', '--resume', '--overwrite', '--grid', '--final-runs', '--inner-splits')


def at_budget(c: dict[str, np.ndarray], budget: int, patience: int | None) -> dict[str, float]:
    """What a run with at most ``budget`` epochs would have given, from the curves of the same run trained longer:
    the selected epoch (1-based), its validation and test accuracy, the held-out validation accuracy, and whether the
    budget ended the run (:func:`~pyg_ple.bench.selection.ended_by_budget`)."""
    cut = {k: v[:budget] for k, v in c.items()}
    t = replay_selection(cut['val_score'], patience)
    return {'epoch': t + 1, 'val': float(cut['val_acc'][t]), 'test': float(cut['test_acc'][t]),
            'heldout': heldout_accuracy(cut, patience),
            'reached': ended_by_budget(t + 1, len(cut['val_score']), budget, patience)}


def _difference_text(d: np.ndarray) -> str:
    # mean ± standard error of paired differences ('–' for none, the mean alone for one)
    if len(d) < 2:
        return f'{d[0]:+.1f}' if len(d) else '–'
    return f'{d.mean():+.1f} ± {d.std(ddof=1) / np.sqrt(len(d)):.1f}'


def report(rows: list[dict], metas: list[dict], budgets: list[int]) -> str:
    """``budget.md``: per dataset (every split seed pooled) and model, the figures of each budget up to the one its
    runs were trained to; then the Laplacian transformer minus each other model at each budget, paired by fold."""
    groups: dict[str, dict[str, dict[tuple, dict]]] = {}  # dataset -> model -> (seed, fold) -> curves
    for (ds, seed, model, fold), c in sorted(C.curves_of(rows, FIELDS[4:]).items()):
        groups.setdefault(ds, {}).setdefault(model, {})[(seed, fold)] = c
    patience = {m['dataset']: m['patience'] for m in metas}
    trained_to = {m['dataset']: m.get('epochs', budgets[-1]) for m in metas}
    env = C.env_info()
    lines = ['# Is the budget long enough? The protocol replayed at shorter budgets', '',
             'Every (model, fold) trained once, with early stopping, to the longest budget; each shorter budget '
             'replayed on the first epochs of the same runs (`benchmarks/budget.py`). Per model and budget: test '
             'accuracy (mean ± population std over the runs, as the graph tables give it; chooses nothing), the '
             'validation accuracy of the selected epochs, the held-out validation accuracy (the epoch chosen on one '
             'half of the validation split, scored on the other, both ways round), the runs the budget ended (every '
             'epoch run, the selected one among the last `patience`: early stopping had not ended them) and the '
             'median selected epoch. Accuracies in %.', '',
             f"- torch {env.get('torch', '?')}, python {env.get('python', '?')}, {env.get('cpus', '?')} CPU "
             'cores, one thread per run', '']
    for ds, models in groups.items():
        pat = patience.get(ds)
        # a budget above the one the runs were trained to cannot be replayed from them
        ds_budgets = [b for b in budgets if b <= trained_to.get(ds, budgets[-1])]
        seeds = sorted({s for by_run in models.values() for s, _ in by_run})
        lines += [f'## {ds}', '', f"Patience {pat}; split seeds {', '.join(map(str, seeds))}.", '',
                  '| model | budget | runs | test | val (selected) | held-out val | ended by the budget | '
                  'selected epoch (median) |', '|---|---:|---:|---:|---:|---:|---:|---:|']
        test_by_run: dict[tuple[str, int], dict[tuple, float]] = {}
        for model, by_run in models.items():
            for b in ds_budgets:
                ev = {key: at_budget(c, b, pat) for key, c in by_run.items()}
                test_by_run[(model, b)] = {key: e['test'] for key, e in ev.items()}
                test = 100 * np.array([e['test'] for e in ev.values()])
                lines.append(
                    f'| {model} | {b} | {len(ev)} | {test.mean():.1f} ± {test.std():.1f}'
                    f" | {100 * statistics.mean(e['val'] for e in ev.values()):.1f}"
                    f" | {100 * statistics.mean(e['heldout'] for e in ev.values()):.1f}"
                    f" | {sum(e['reached'] for e in ev.values())} / {len(ev)}"
                    f" | {statistics.median(e['epoch'] for e in ev.values()):g} |")
        if len(seeds) > 1:
            lines += ['', 'Test accuracy by split seed (mean ± population std over its folds):', '',
                      '| model | budget | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |',
                      '|---|---:|' + '---:|' * len(seeds)]
            for model in models:
                for b in ds_budgets:
                    cells = []
                    for s in seeds:
                        acc = 100 * np.array([t for (seed, _), t in test_by_run[(model, b)].items() if seed == s])
                        cells.append(f'{acc.mean():.1f} ± {acc.std():.1f}' if len(acc) else '–')
                    lines.append(f'| {model} | {b} | ' + ' | '.join(cells) + ' |')
        if 'laplacian' in models and len(models) > 1:
            lines += ['', 'Test accuracy, laplacian minus each model, paired by fold within each split seed and over '
                      'all of them (mean ± standard error; chooses nothing):', '',
                      '| model | budget | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | pooled |',
                      '|---|---:|' + '---:|' * (len(seeds) + 1)]
            for model in models:
                if model == 'laplacian':
                    continue
                for b in ds_budgets:
                    lap, other = test_by_run[('laplacian', b)], test_by_run[(model, b)]
                    cells = []
                    for subset in [[s] for s in seeds] + [seeds]:
                        keys = sorted(k for k in set(lap) & set(other) if k[0] in subset)
                        cells.append(_difference_text(100 * np.array([lap[k] - other[k] for k in keys])))
                    lines.append(f'| {model} | {b} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    commands = sorted({c for m in metas for c in m['commands']})
    lines += ['## Exact commands', ''] + [f'    {c}' for c in commands] + ['']
    return '\n'.join(lines)


def _budgets(text: str) -> list[int]:
    try:
        budgets = sorted({int(b) for b in text.split(',')})
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a comma-separated list of epoch counts: {text!r}') from None
    if budgets[0] < 1:
        raise argparse.ArgumentTypeError(f'budgets must be positive (got {text!r})')
    return budgets


def write_report(out: Path, budgets: list[int]) -> str:
    rows, metas = [], []
    for f in sorted(out.glob('curves_*.csv')):
        if f.with_suffix('.json').exists():
            rows += list(csv.DictReader(f.open()))
            metas.append(json.loads(f.with_suffix('.json').read_text()))
    text = report(rows, metas, budgets)
    atomic_write_text(out / 'budget.md', text)
    return text


def main(argv: list[str] | None = None) -> int:
    own, bench_argv = C.split_argv(argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                usage='%(prog)s --budgets B1,B2,... [--out OUT] -- PYG-PLE-BENCH-ARGS')
    p.add_argument('--budgets', type=_budgets, required=True,
                   help="comma-separated epoch budgets to replay, none above the bench run's --epochs")
    p.add_argument('--out', default=str(C.RESULTS / 'budget'), help='folder of the curves and the report')
    args = p.parse_args(own)
    bench, cfg, ds = C.bench_run(p, bench_argv, REFUSED, 'this script writes its own files and trains one '
                                 'configuration once per fold')
    from pyg_ple.bench.protocol import train_fold
    from pyg_ple.bench.settings import run_seed_of
    from pyg_ple.bench.splits import get_splits
    if cfg.schedule == 'cosine':
        p.error('--schedule cosine decays over --epochs, so a shorter budget cannot be replayed from a longer run')
    if args.budgets[-1] > cfg.epochs:
        p.error(f'--budgets {args.budgets[-1]} is above the bench run\'s --epochs {cfg.epochs}')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = ['DATA' if a == bench.root else a for a in bench_argv]
    command = ('python benchmarks/budget.py ' + ' '.join(map(shlex.quote, own)) + ' -- '
               + ' '.join(map(shlex.quote, shown)))
    settings = {'dataset': ds.name, 'seed': cfg.seed, 'patience': cfg.patience, 'epochs': cfg.epochs}
    splits = get_splits(None, ds.labels, cfg.n_folds, cfg.seed, cfg.val_fraction)
    for name in cfg.models:
        path = out / f'curves_{ds.name}_seed{cfg.seed}_{name}.csv'
        meta_path = path.with_suffix('.json')
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {**settings, 'commands': []}
        if any(meta[k] != v for k, v in settings.items()):
            p.error(f'{path} holds runs with ' + ', '.join(f'{k} {meta[k]}' for k in settings)
                    + '; pass another --out')
        if command not in meta['commands']:
            meta['commands'].append(command)
            C.write_json(meta_path, meta)
        rows = list(csv.DictReader(path.open())) if path.exists() else []
        done = {int(r['fold']) for r in rows}
        for split in splits:
            if split['fold'] in done:
                continue
            res, _ = train_fold(ds, name, split, cfg, {}, run_seed_of(cfg.seed, split['fold']),
                                record={'test': split['test']})
            rows += [{'dataset': ds.name, 'seed': cfg.seed, 'model': name, 'fold': split['fold'],
                      'epoch': h['epoch'], **{k: repr(float(h[k])) for k in FIELDS[5:]}} for h in res.history]
            C.write_csv(path, FIELDS, rows)  # after every run: an interrupted call loses at most one
            print(f'{ds.name} seed {cfg.seed} {name} fold {split["fold"]}: {res.epochs_run} epochs, selected '
                  f'{res.best_epoch}, {res.seconds_per_epoch:.2f} s/epoch', flush=True)
    print(write_report(out, args.budgets))
    return 0


if __name__ == '__main__':
    sys.exit(main())
