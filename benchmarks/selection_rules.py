"""How the epoch is chosen: the protocol's rule and its alternatives replayed on the same training curves.

``pyg-ple bench`` keeps the epoch of best validation accuracy (ties: lower validation loss; ``--select acc``, the
protocol of Errica et al.) and stops after ``--patience`` epochs without a better one. On small validation splits (18
graphs on MUTAG, 90 on IMDB-BINARY) that choice is noisy, and a model whose validation curve is noisier gains more
from the noise. This script trains every (model, fold) of a ``pyg-ple bench`` command for the full ``--epochs``
without stopping early, records at every epoch the accuracy and loss on the two halves of the validation split
(stratified) and on the test fold, and then replays each rule of :data:`RULES`, early stopping with the command's
``--patience`` included, on the recorded curves. The training run does not depend on when it is stopped (no schedule
on plateau), so the replay is what each rule would have selected, and every rule is compared on the same runs.

Two figures per rule and model:

- **held-out validation accuracy**: the rule run on one half of the validation split, the accuracy of the selected
  epoch on the other half, both ways round. It uses no test graph, so it may choose a rule.
- **test accuracy** of the rule run on the whole validation split: reported; it chooses nothing. Beside it, the test
  accuracy at the epoch of the best mean test curve (the figure of papers that pick the epoch on test; optimistic,
  it chooses nothing either) shows how much of a model's gap is the choice of the epoch.

    python benchmarks/selection_rules.py -- --root DATA --dataset IMDB-BINARY --models gcn,gat,gin,transformer,\\
        laplacian --folds 10 --lr 0.003 --threads 1 --no-progress --epochs 100 --patience 20 --hidden 32

(the arguments after ``--`` are those of the main table's run, ``--out``, ``--resume`` and ``--no-save-models``
left out). Each finished (model, fold) is written to ``benchmarks/results/selection/curves_<dataset>_seed<seed>.csv``
(a rerun skips it), its command and patience to the ``.json`` beside it, and ``selection_rules.md`` is written from
every curves file there.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from pyg_ple.bench.io import atomic_write_text  # noqa: E402
from pyg_ple.bench.selection import replay_selection, selection_score, validation_halves  # noqa: E402

FIELDS = ['dataset', 'seed', 'model', 'fold', 'epoch', 'train_loss', 'n_val_a', 'n_val_b', 'val_a_acc', 'val_a_loss',
          'val_b_acc', 'val_b_loss', 'test_acc', 'test_loss']
SMOOTH = 5  # epochs averaged by the 'acc-mean5' rule: the candidate epoch and the four before it


def _trailing_mean(x: np.ndarray, width: int) -> np.ndarray:
    # the last ``width`` epochs up to and including each one: known when that epoch ends, so a run can stop on it
    return np.array([x[max(0, t - width + 1):t + 1].mean() for t in range(len(x))])


# rule -> (what it keeps, the score it maximises from a curve's accuracy and loss); 'acc' and 'loss' are the rules of
# `pyg-ple bench --select`
RULES = {
    'acc': ('best accuracy, ties: lower loss (the protocol of Errica et al., `--select acc`)',
            lambda acc, loss: selection_score(acc, loss, 'acc')),
    'loss': ('lowest loss (`--select loss`)', lambda acc, loss: selection_score(acc, loss, 'loss')),
    'acc-mean5': (f'best accuracy averaged over the last {SMOOTH} epochs (the model of the last), ties: lower loss',
                  lambda acc, loss: selection_score(_trailing_mean(acc, SMOOTH), loss, 'acc')),
}


def evaluate_rules(c: dict[str, np.ndarray], patience: int | None) -> dict[str, dict[str, float]]:
    """For one training run's curves: per rule the held-out validation accuracy (selected on one half, scored on the
    other, mean of both ways), and the test accuracy and epoch (1-based) it selects on the whole validation split."""
    order = np.argsort(c['epoch'])
    c = {k: v[order] for k, v in c.items()}
    na, nb = c['n_val_a'][0], c['n_val_b'][0]
    # correct counts from the stored (rounded) accuracies: equal accuracies must tie exactly for the loss to break them
    val_acc = (np.round(na * c['val_a_acc']) + np.round(nb * c['val_b_acc'])) / (na + nb)
    val_loss = (na * c['val_a_loss'] + nb * c['val_b_loss']) / (na + nb)
    out = {}
    for rule, (_, score) in RULES.items():
        ta = replay_selection(score(c['val_a_acc'], c['val_a_loss']), patience)
        tb = replay_selection(score(c['val_b_acc'], c['val_b_loss']), patience)
        t = replay_selection(score(val_acc, val_loss), patience)
        out[rule] = {'heldout': (c['val_b_acc'][ta] + c['val_a_acc'][tb]) / 2, 'test': c['test_acc'][t],
                     'epoch': int(c['epoch'][t])}
    return out


def _mean_se(d: np.ndarray) -> tuple[float, float]:
    # mean and standard error of paired differences
    return d.mean(), (d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float('nan'))


def _pooled_text(pooled: dict[str, list[float]]) -> str:
    # each rule's mean, and each other rule minus the first, paired by run: mean ± standard error (n runs)
    first, *others = pooled
    base = np.asarray(pooled[first])
    text = ', '.join(f'`{r}` {100 * np.mean(v):.2f}' for r, v in pooled.items())
    for r in others:
        mean, se = _mean_se(100 * (np.asarray(pooled[r]) - base))
        text += f'; `{r}` − `{first}` {mean:+.2f} ± {se:.2f}'
    return text + f' ({len(base)} runs)'


def _against_laplacian(test_by_fold: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    # test accuracy of the Laplacian transformer minus each other model under each rule, paired by fold
    if 'laplacian' not in test_by_fold:
        return []
    lap = test_by_fold['laplacian']
    lines = ['Test accuracy, laplacian minus each model under each rule, paired by fold (mean ± standard error; '
             'chooses nothing):', '', '| model | ' + ' | '.join(f'`{r}`' for r in RULES) + ' |',
             '|---|' + '---:|' * len(RULES)]
    for model, by_rule in test_by_fold.items():
        if model == 'laplacian':
            continue
        cells = []
        for r in RULES:
            folds = sorted(set(lap[r]) & set(by_rule[r]))
            if not folds:
                cells.append('–')
                continue
            mean, se = _mean_se(100 * np.array([lap[r][k] - by_rule[r][k] for k in folds]))
            cells.append(f'{mean:+.1f} ± {se:.1f}')
        lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def report(rows: list[dict], meta: dict[tuple, dict]) -> str:
    """The tables of every (dataset, seed) of ``rows``; ``meta`` maps (dataset, seed) to the ``patience`` its rules
    are replayed with and the ``commands`` that recorded its curves."""
    curves = C.curves_of(rows, FIELDS[4:])
    groups: dict[tuple, dict[str, dict[int, dict]]] = {}  # (dataset, seed) -> model -> fold -> curves
    for (ds, seed, model, fold), c in sorted(curves.items()):
        groups.setdefault((ds, seed), {}).setdefault(model, {})[fold] = c
    everywhere: dict[str, list] = {r: [] for r in RULES}
    env = C.env_info()
    lines = ['# How the epoch is chosen: selection rules replayed on the same training curves', '',
             'Each (model, fold) trained for the full budget without early stopping; every rule below replayed on its '
             'recorded curves, early stopping with the patience of its command included '
             '(`benchmarks/selection_rules.py`). '
             'Held-out validation: the rule run on one half of the validation split, the accuracy of its epoch on '
             'the other half, both ways round (no test graph; it may choose a rule). Test: the rule run on the whole '
             'validation split (chooses nothing). Best mean test epoch: the test accuracy at the epoch where the '
             "model's test curve, averaged over the folds, is highest (optimistic; chooses nothing). Accuracies in %, "
             'mean over the folds.', '',
             f"- torch {env.get('torch', '?')}, python {env.get('python', '?')}, {env.get('cpus', '?')} CPU "
             'cores, one thread per run', '']
    lines += ['Rules:', ''] + [f'- `{rule}`: {what}' for rule, (what, _) in RULES.items()] + ['']
    for (ds, seed), models in groups.items():
        patience = meta[(ds, seed)]['patience']
        lines += [f'## {ds}, split seed {seed}', '', f'Patience {patience}.', '',
                  '| model | folds | ' + ' | '.join(f'held-out val `{r}`' for r in RULES) + ' | '
                  + ' | '.join(f'test `{r}`' for r in RULES) + ' | best mean test epoch | selected epoch (median) '
                  + ' '.join(f'`{r}`' for r in RULES) + ' |',
                  '|---|---:|' + '---:|' * (2 * len(RULES) + 2)]
        pooled = {r: [] for r in RULES}
        test_by_fold: dict[str, dict[str, dict[int, float]]] = {}
        for model, by_fold in models.items():
            runs = list(by_fold.values())
            ev = [evaluate_rules(c, patience) for c in runs]
            test_by_fold[model] = {r: {fold: e[r]['test'] for fold, e in zip(by_fold, ev)} for r in RULES}
            n_ep = min(len(c['epoch']) for c in runs)
            mean_test = np.mean([c['test_acc'][np.argsort(c['epoch'])][:n_ep] for c in runs], axis=0)
            for r in RULES:
                pooled[r] += [e[r]['heldout'] for e in ev]
            cell = [f"{100 * statistics.mean(e[r]['heldout'] for e in ev):.1f}" for r in RULES]
            cell += [f"{100 * statistics.mean(e[r]['test'] for e in ev):.1f}" for r in RULES]
            cell += [f'{100 * mean_test.max():.1f} (epoch {int(mean_test.argmax()) + 1})',
                     ' / '.join(f"{statistics.median(e[r]['epoch'] for e in ev):g}" for r in RULES)]
            lines.append(f'| {model} | {len(runs)} | ' + ' | '.join(cell) + ' |')
        lines += ['', 'Held-out validation accuracy over every model and fold: ' + _pooled_text(pooled) + '.', '']
        lines += _against_laplacian(test_by_fold)
        for r, v in pooled.items():
            everywhere[r] += v
    if len(groups) > 1:
        lines += ['## Every dataset', '',
                  f'Held-out validation accuracy over every dataset, model and fold: {_pooled_text(everywhere)}.', '']
    commands = [c for key in groups for c in meta[key]['commands']]
    lines += ['## Exact commands', ''] + [f'    {c}' for c in commands] + ['']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    own, bench_argv = C.split_argv(argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                usage='%(prog)s [--out OUT] -- PYG-PLE-BENCH-ARGS')
    p.add_argument('--out', default=str(C.RESULTS / 'selection'), help='folder of the curves and the report')
    args = p.parse_args(own)
    bench, cfg, ds = C.bench_run(p, bench_argv, ('--out', '--resume', '--overwrite', '--grid', '--select'),
                                 'this script writes its own files, runs one configuration and replays every rule')
    from pyg_ple.bench.protocol import train_fold
    from pyg_ple.bench.settings import run_seed_of
    from pyg_ple.bench.splits import get_splits
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f'curves_{ds.name}_seed{cfg.seed}.csv'
    shown = ['DATA' if a == bench.root else a for a in bench_argv]
    command = ('python benchmarks/selection_rules.py ' + (' '.join(map(shlex.quote, own)) + ' ' if own else '')
               + '-- ' + ' '.join(map(shlex.quote, shown)))
    meta_path = path.with_suffix('.json')
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {'patience': cfg.patience, 'commands': []}
    if meta['patience'] != cfg.patience:
        p.error(f'{path} holds curves replayed with --patience {meta["patience"]}, not {cfg.patience}; pass '
                'another --out')
    if command not in meta['commands']:
        meta['commands'].append(command)
        C.write_json(meta_path, meta)
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r['model'], int(r['fold'])) for r in rows}
    train_cfg = replace(cfg, patience=None)
    for split in get_splits(None, ds.labels, cfg.n_folds, cfg.seed, cfg.val_fraction):
        half_a, half_b = validation_halves(split['val'], ds.labels, cfg.seed + split['fold'])
        for name in cfg.models:
            if (name, split['fold']) in done:
                continue
            # The halves again as extra loaders (the same figures as train_fold's own): the loaders' draws keep the
            # random stream of the curves recorded before train_fold recorded the halves itself.
            res, _ = train_fold(ds, name, split, train_cfg, {}, run_seed_of(cfg.seed, split['fold']),
                                record={'val_a': half_a, 'val_b': half_b, 'test': split['test']})
            rows += [{'dataset': ds.name, 'seed': cfg.seed, 'model': name, 'fold': split['fold'],
                      'epoch': h['epoch'], 'train_loss': f"{h['train_loss']:.4f}", 'n_val_a': len(half_a),
                      'n_val_b': len(half_b),
                      **{k: f'{h[k]:.4f}' for k in FIELDS[8:]}} for h in res.history]
            C.write_csv(path, FIELDS, rows)  # after every run: an interrupted call loses at most one
            print(f'{ds.name} seed {cfg.seed} {name} fold {split["fold"]}: {res.epochs_run} epochs, '
                  f'{res.seconds_per_epoch:.2f} s/epoch', flush=True)
    every, metas = [], {}
    for f in sorted(out.glob('curves_*.csv')):
        part = list(csv.DictReader(f.open()))
        if part and f.with_suffix('.json').exists():
            every += part
            metas[(part[0]['dataset'], int(part[0]['seed']))] = json.loads(f.with_suffix('.json').read_text())
    text = report(every, metas)
    atomic_write_text(out / 'selection_rules.md', text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
