"""The long-range and molecule tables (Peptides-func, HIV) from ``pyg-ple bench`` run folders, finished or not.

Finished seeds come from each folder's ``state.json`` (:func:`pyg_ple.bench.report.summarize_fixed`: the
epoch of best validation metric per run, test scored once with it). A seed still training is reported by its
status only (epochs done, validation metric so far, read from its checkpoint): its test metric does not exist yet.
Writes ``<dataset>.csv`` (``model,attention,params,epochs,seeds,val_mean,val_std,test_mean,test_std,status,
sec_per_epoch,best_epoch``), ``<dataset>.md`` (the runs' commands, the table, the validation curves of unfinished
seeds, the field's figures) and ``<dataset>.png`` (validation against test metric, one point per model).

    python benchmarks/long_range.py runs/peptides-func/*/ --name peptides_func

Runs of one model that differ only in ``--seed`` (each with ``--final-runs 1``, run side by side or in different
sessions) are pooled into one row. A run is a run folder or a state file that ``--keep-states DIR`` kept of one
(``DIR/<folder>.json``, with ``--root DATA``), so that finished seeds outlive their folders. ``--earlier CSV`` keeps
the rows of an earlier table whose runs are not given (their commands, split, versions and machine from the ``.md``
beside it)::

    python benchmarks/long_range.py runs/peptides-func/gps-seed0 runs/peptides-func/gps-seed1 --name peptides_func \
        --earlier benchmarks/results/peptides_func.csv --keep-states benchmarks/results/peptides_func_runs
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import _common as C

from pyg_ple.bench.io import load_torch_file
from pyg_ple.bench.report import summarize_fixed
from pyg_ple.bench.tasks import METRIC_LABELS, TASKS

COLUMNS = ['model', 'attention', 'params', 'epochs', 'seeds', 'val_mean', 'val_std', 'test_mean', 'test_std', 'status',
           'sec_per_epoch', 'best_epoch']
TRANSFORMERS = ('transformer', 'laplacian', 'mixed')
PUBLISHED = {
    'peptides-func': ('test average precision (fraction), at the field\'s budgets (~500k parameters)', [
        ('GCN', '0.5930', 'Dwivedi et al. 2022'), ('GINE', '0.5498', 'Dwivedi et al. 2022'),
        ('GatedGCN', '0.5864', 'Dwivedi et al. 2022'), ('GPS', '0.6535', 'Rampášek et al. 2022'),
        ('GCN, tuned', '0.6860', 'Tönshoff et al. 2023'), ('GRIT', '0.6988', 'Ma et al. 2023')]),
    'hiv': ('test ROC-AUC (percent) on OGB\'s scaffold split', [
        ('GCN', '76.06', 'Hu et al. 2020'), ('GIN', '75.58', 'Hu et al. 2020'),
        ('GIN + virtual node', '77.07', 'Hu et al. 2020'), ('GPS', '78.80', 'Rampášek et al. 2022'),
        ('PNA', '79.05', 'Corso et al. 2020')]),
}


def read_run(path: Path) -> tuple[dict, list[Path]]:
    """The state of one run and the checkpoint folders of its unfinished seeds: a run folder (its ``state.json``,
    ``checkpoints/`` beside it) or a state file kept by ``--keep-states`` (no checkpoints)."""
    file = path if path.is_file() else path / 'state.json'
    if not file.exists():
        raise ValueError(f'{path}: no state.json (not a run folder of pyg-ple bench, nor a state file)')
    state = json.loads(file.read_text())
    if not isinstance(state, dict) or 'dataset' not in state or 'runs' not in state:
        raise ValueError(f'{path}: not a state of pyg-ple bench (no dataset or runs)')
    return state, [] if path.is_file() else [path / 'checkpoints']


def run_models(state: dict, checkpoints: list[Path]) -> list[str]:
    """The models a run holds: those of its finished seeds, then those training in its checkpoints."""
    names = [r['model'] for r in state['runs'].values()]
    names += [d.name for c in checkpoints for d in sorted(c.glob('*')) if d.is_dir() and any(d.glob('*.pt'))]
    return list(dict.fromkeys(names))


def pool_runs(named: list[tuple[str, dict]]) -> dict:
    """One state from runs of one model with one configuration that differ only in ``--seed``: their finished seeds
    in the order given, numbered anew. Raises ``ValueError`` where they differ in anything else or share a seed."""
    (first_name, first), runs = named[0], {}
    config = {k: v for k, v in (first.get('config') or {}).items() if k != 'seed'}
    for name, state in named:
        if len((state.get('config') or {}).get('grid') or [{}]) != 1:
            raise ValueError(f'{name}: a run with a grid of configurations cannot be pooled with others')
        other = {k: v for k, v in (state.get('config') or {}).items() if k != 'seed'}
        if other != config or state.get('split_sha256') != first.get('split_sha256'):
            what = 'split' if other == config else 'settings'
            raise ValueError(f'{name} and {first_name} differ in their {what}, not only in --seed: not pooled')
        for record in sorted(state['runs'].values(), key=lambda r: r['seed_index']):
            twin = next((r for r in runs.values() if r['seed'] == record['seed']), None)
            if twin is not None:
                raise ValueError(f"{name}: seed {record['seed']} of {record['model']} is in another run too")
            runs[f"{record['model']}/cfg0/seed{len(runs)}"] = {**record, 'seed_index': len(runs)}
    return {**first, 'runs': runs, 'selected': {r['model']: 0 for r in runs.values()}}


def folder_rows(checkpoints: list[Path], state: dict, total: int) -> tuple[list[dict], list[str], dict]:
    """Table rows, status lines and validation curves of one run (or runs pooled into ``state``) whose models run
    ``total`` seeds; ``checkpoints``: the folders of its unfinished seeds."""
    config = state.get('config') or {}
    scale, digits = _scale(state)
    higher = (state.get('task') or {}).get('higher_is_better', True)
    if len(config.get('grid') or [{}]) == 1:  # one configuration: its first seed counts before the run records it
        for record in state.get('runs', {}).values():
            state.setdefault('selected', {}).setdefault(record['model'], 0)
    rows = summarize_fixed(state)
    lines, curves = [], {}
    for ckpt in (c for folder in checkpoints for c in sorted(folder.glob('*/*.pt'))):
        record = load_torch_file(ckpt, 'a training checkpoint')
        history = record.get('history') or []
        metric = next((k for k in (history[0] if history else {}) if k.startswith('val_') and k != 'val_loss'
                       and k != 'val_score'), None)
        if metric is None:
            continue
        name = ckpt.parent.name
        run = f'{ckpt.parents[2].name}/' if len(checkpoints) > 1 else ''  # which of the pooled runs
        curves[f'{run}{name} {ckpt.stem}'] = [round(scale * h[metric], digits) for h in history]
        best = (max if higher else min)(range(len(history)), key=lambda e: history[e][metric])
        lines.append(f'{run}{name}, {ckpt.stem}: epoch {len(history)} of {config.get("epochs", "?")}, best '
                     f'{metric} so far {scale * history[best][metric]:.{digits}f} (epoch {best + 1}); unfinished, '
                     'no test metric yet')
    for row in rows:
        done = row['seeds']
        row['status'] = 'finished' if done >= total else f'{done} of {total} seeds finished'
    models = {r['model'] for r in rows}
    for name in sorted({k.split()[0].split('/')[-1] for k in curves} - models):
        rows.append({**{k: '' for k in COLUMNS}, 'model': name, 'status': 'no seed finished'})
    attention = (config.get('hparams') or {}).get('attention', 'native')
    for row in rows:  # the transformers' candidate edge set, which --models does not name
        row['attention'] = attention if row['model'] in TRANSFORMERS else ''
    return rows, lines, curves


def _scale(state: dict) -> tuple[float, int]:
    """How the field writes the run's metric: its scale (AP as a fraction, ROC-AUC in percent) and decimals."""
    scale = TASKS[state['task']['kind']].scale if state.get('task') else 1.0
    return scale, 4 if scale == 1.0 else 2


def _versions(folder: Path, state: dict) -> str:
    """The versions a run recorded: in its state (runs since 0.2.0), else in its results (finished runs), else its
    torch."""
    if state.get('versions'):
        return state['versions']
    results = folder / 'results.json'
    if folder.is_dir() and results.exists():
        return json.loads(results.read_text()).get('versions') or f"torch {state.get('torch', '?')}"
    return f"torch {state.get('torch', '?')}"


def validation_against_test(rows: list[dict]) -> list[str]:
    """Whether the models' order on validation carries over to test, over the rows with every seed finished: their
    Spearman rank correlation, and where validation's best model ranks on test. Nothing with fewer than 3 rows."""
    from scipy.stats import rankdata, spearmanr
    done = [r for r in rows if r['status'] == 'finished']
    if len(done) < 3:
        return []
    val, test = [float(r['val_mean']) for r in done], [float(r['test_mean']) for r in done]
    rho = spearmanr(val, test).statistic
    best = val.index(max(val))  # the first of equal ones
    place = int(rankdata([-t for t in test], method='min')[best])
    name = done[best]['model'] + (f" ({done[best]['attention']})" if done[best]['attention'] else '')
    return ['', f'Validation against test over the {len(done)} rows with every seed finished: Spearman rank '
            f'correlation {rho:+.2f}; the best on validation, {name}, is {place} of {len(done)} on test.']


def plot_val_test(rows: list[dict], path: Path, metric: str) -> bool:
    """Validation against test metric, one point per model with finished seeds (error bars: std over seeds): whether
    validation orders the models as test does. Returns False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in rows if r.get('seeds')]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for r in done:
        label = r['model'] + (f" ({r['attention']})" if r['attention'] else '')
        ax.errorbar(r['val_mean'], r['test_mean'], xerr=r['val_std'], yerr=r['test_std'], fmt='o', capsize=3)
        ax.annotate(label, (r['val_mean'], r['test_mean']), textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f'validation {metric} (mean over seeds)')
    ax.set_ylabel(f'test {metric} (mean over seeds)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def earlier_table(path: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """The rows of an earlier table (this script's CSV) with the numbers as numbers, and what its ``.md`` beside
    it records: ``commands``, ``split``, ``versions``, ``machine`` (each a list, empty where the ``.md`` is missing)."""
    import csv
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows or set(COLUMNS) - set(rows[0]):
        raise ValueError(f'{path}: not a table of this script (columns {", ".join(COLUMNS)})')
    for row in rows:
        for key, kind in (('params', int), ('epochs', int), ('seeds', int), ('best_epoch', int),
                          ('val_mean', float), ('val_std', float), ('test_mean', float), ('test_std', float),
                          ('sec_per_epoch', float)):
            row[key] = kind(float(row[key])) if row[key] not in ('', None) else ''
    md = path.with_suffix('.md')
    text = md.read_text().splitlines() if md.exists() else []
    found = {'commands': [line.strip() for line in text if line.startswith('    pyg-ple bench ')]}
    for key, label in (('split', 'Split'), ('versions', 'Versions'), ('machine', 'Machine')):
        found[key] = [line[len(label) + 2:].rstrip('.') for line in text if line.startswith(f'{label}: ')]
    return rows, found


def command_of(row: dict, commands: list[str]) -> list[str]:
    """The commands among ``commands`` that ran the row's model with its attention."""
    def option(command: str, name: str) -> str:
        found = re.search(rf'--{name} (\S+)', command)
        return found.group(1) if found else ''
    return [c for c in commands if option(c, 'models') == row['model']
            and (option(c, 'attention') or 'native') == (row['attention'] or 'native')]


def without_paths(state: dict) -> dict:
    """``state`` without this machine's paths: ``--root DATA`` in its command, the data root written ``DATA`` in its
    dataset's description, which keeps no other absolute path (the cache folder)."""
    command = state.get('command', '')
    found = re.search(r'--root (\S+)', command)
    root = found.group(1) if found else os.environ.get('PYG_PLE_DATA')
    info = {}
    for key, value in (state.get('info') or {}).items():
        if isinstance(value, str) and root:
            value = value.replace(str(Path(root).resolve()), 'DATA').replace(root.rstrip('/'), 'DATA')
        if not (isinstance(value, str) and re.search(r'(^|\s)/\S', value)):
            info[key] = value
    return {**state, 'command': re.sub(r'--root \S+', '--root DATA', command), 'info': info}


def keep_state(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` without this machine's paths (:func:`without_paths`); refuses to replace a file
    that is not a state of pyg-ple bench."""
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if not (isinstance(old, dict) and 'runs' in old and 'dataset' in old):
            raise ValueError(f'{path} exists and is not a state of pyg-ple bench: not replaced')
    path.parent.mkdir(parents=True, exist_ok=True)
    C.write_json(path, without_paths(state))


def _run_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def gather(loaded: list[tuple[Path, dict, list[Path]]], total: int) -> tuple[list[dict], list[str], dict, list[str]]:
    """Rows, status lines, validation curves and the pooled runs (one line each) of ``(path, state, checkpoints)``
    runs whose models run ``total`` seeds: runs of one model and attention are pooled (seeds run apart), any other
    run gives rows of its own. Raises ``ValueError`` where runs of one model cannot be pooled."""
    groups: dict[tuple, list] = {}
    for path, state, checkpoints in loaded:
        models = run_models(state, checkpoints)
        attention = ((state.get('config') or {}).get('hparams') or {}).get('attention', 'native')
        key = (models[0], attention) if len(models) == 1 else (str(path),)
        groups.setdefault(key, []).append((path, state, checkpoints))
    rows, status, curves, pooled = [], [], {}, []
    for key, members in groups.items():
        state = members[0][1]
        if len(members) > 1:
            state = pool_runs([(str(path), st) for path, st, _ in members])
            seeds = ', '.join(str(r['seed']) for r in state['runs'].values()) or 'none finished'
            pooled.append(f"{key[0]}: {', '.join(_run_name(path) for path, _, _ in members)} (run seeds {seeds})")
        r, s, c = folder_rows([c for _, _, cks in members for c in cks], state, total)
        rows += r
        status += s
        curves.update(c)
    return rows, status, curves, pooled


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr, exit status 2
        self.exit(2, f'{self.prog}: error: {" ".join(message.splitlines())}\n')


def main(argv=None) -> int:
    p = _Parser(prog='long_range.py', description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', type=Path, help='run folders of pyg-ple bench on one dataset, or state files '
                   'kept by --keep-states')
    p.add_argument('--name', required=True, help='file stem of the results, e.g. peptides_func')
    p.add_argument('--seeds', type=int, default=3, help="the seeds every model runs (the runs' --final-runs)")
    p.add_argument('--out', type=Path, default=C.RESULTS)
    p.add_argument('--earlier', type=Path, help='an earlier table (CSV) of this script: its rows whose model '
                   'and attention no run gives are kept')
    p.add_argument('--keep-states', type=Path, metavar='DIR', help='write each run folder\'s state (its finished '
                   'seeds) to DIR/<folder>.json')
    args = p.parse_args(argv)
    try:
        loaded = [(path, *read_run(path)) for path in args.runs]
        earlier = earlier_table(args.earlier) if args.earlier else ([], {})
    except (OSError, ValueError) as e:
        p.error(str(e))
    dataset = loaded[0][1]['dataset']
    for path, state, _ in loaded:
        if state['dataset'] != dataset:
            p.error(f"{path}: dataset {state['dataset']!r}, the others {dataset!r}")
    try:
        rows, status, curves, pooled = gather(loaded, args.seeds)
    except ValueError as e:
        p.error(str(e))
    commands = [re.sub(r'--root \S+', '--root DATA', st.get('command', '')) for _, st, _ in loaded]
    splits = {st['split']: None for _, st, _ in loaded if st.get('split')}
    versions = {_versions(path, st): None for path, st, _ in loaded}
    machines: dict = {}
    for path, st, _ in loaded:
        machines.setdefault(st.get('machine'), []).append(_run_name(path))

    # Rows of the earlier table that no run gives, in its order; the runs' rows take their places.
    given = {(r['model'], r['attention']) for r in rows}
    old_rows, found = earlier
    kept = [r for r in old_rows if (r['model'], r['attention']) not in given and r['seeds'] != '']
    if kept:
        order = {(r['model'], r['attention']): i for i, r in enumerate(old_rows)}
        rows = sorted(rows + kept, key=lambda r: order.get((r['model'], r['attention']), len(order)))
        commands = [c for r in kept for c in command_of(r, found['commands'])] + commands
        for key, into in (('split', splits), ('versions', versions)):
            into.update({v: None for v in found[key]})
        for machine in found['machine']:
            machines.setdefault(machine, [])

    if args.keep_states:
        try:
            for path, st, _ in loaded:
                if not path.is_file():
                    keep_state(st, args.keep_states / f'{path.name}.json')
        except (OSError, ValueError) as e:
            p.error(str(e))

    state = loaded[0][1]
    digits = _scale(state)[1]  # the rows are on the task's scale already (summarize_fixed)
    fmt = lambda v: f'{v:.{digits}f}'  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    C.write_csv(args.out / f'{args.name}.csv', COLUMNS, [{k: row.get(k, '') for k in COLUMNS} for row in rows])
    what, published = PUBLISHED.get(dataset, ('', []))
    built = ' '.join(str(f) for f in args.runs) + f' --name {args.name}' + \
        (f' --earlier {args.earlier}' if args.earlier else '')
    md = [f'# {dataset}: pyg-ple bench on a fixed split', '',
          f'Built by `python benchmarks/long_range.py {built}` from the runs of these commands (one thread each, two '
          'at a time):', '']
    md += [f'    {c}' for c in commands]
    if kept:
        md += ['', f'Rows kept from the earlier table `{args.earlier.name}` (their runs are not at hand): '
               + ', '.join(r['model'] + (f" ({r['attention']})" if r['attention'] else '') for r in kept) + '.']
    if pooled:
        md += ['', 'Seeds pooled from runs that differ only in `--seed`: ' + '; '.join(pooled) + '.']
    md += ['', f'Split: {"; ".join(splits) or "not recorded"}.', '', f'Versions: {"; ".join(versions)}.', '',
           'Machine: ' + '; '.join(m if m else f'not recorded in the run folder(s) {", ".join(f)}'
                                   for m, f in machines.items()) + '.']
    md += ['', 'Validation metric: the epoch of best validation metric in each run; test scored once, with it. Mean '
           'and population std over the finished seeds. s/epoch: wall-clock seconds per epoch (training and '
           'validation), the mean over the finished seeds, each run on one thread beside one other run, so a rough '
           'figure; selected epoch: the median over the seeds of the epoch validation chose.', '',
           C.md_table(['model', 'attention', 'params', 'epochs', 'seeds', 'validation', 'test', 's/epoch',
                       'selected epoch', 'status'],
                      [[r['model'], r['attention'], r.get('params', ''), r.get('epochs', ''), r.get('seeds', ''),
                        f"{fmt(r['val_mean'])} ± {fmt(r['val_std'])}" if r.get('seeds') else '',
                        f"{fmt(r['test_mean'])} ± {fmt(r['test_std'])}" if r.get('seeds') else '',
                        f"{r['sec_per_epoch']:.0f}" if r.get('seeds') else '', r.get('best_epoch', ''), r['status']]
                       for r in rows])]
    counts = [int(r['params']) for r in rows if r.get('params') not in (None, '')]
    targets = {int(t) for c in commands for t in re.findall(r'--params (\d+)', c)}
    if counts:  # every model at one budget: how far the counts are from its target and from each other
        lo, hi = min(counts), max(counts)
        budget = ''
        if len(targets) == 1:
            t = targets.pop()
            budget = f' ({lo / t - 1:+.1%} to {hi / t - 1:+.1%} of the --params target {t:,})'
        md += ['', f'Parameters: {lo:,} to {hi:,}{budget}; the largest {hi / lo - 1:.1%} above the smallest.']
    md += validation_against_test(rows)
    if status:
        md += ['', '## Unfinished seeds', ''] + [f'- {line}' for line in status]
        md += ['', 'Validation curves (one value per epoch):', '']
        md += [f'- {name}: {", ".join(map(str, curve))}' for name, curve in curves.items()]
    metric = METRIC_LABELS.get((state.get('task') or {}).get('metric'), 'metric')
    if plot_val_test(rows, args.out / f'{args.name}.png', metric):
        md += ['', f'![validation against test, one point per model]({args.name}.png)']
    if published:
        md += ['', f'## Published figures: {what}', '', C.md_table(['model', 'figure', 'source'], published)]
    (args.out / f'{args.name}.md').write_text('\n'.join(md) + '\n')
    print(f'wrote {args.out / args.name}.csv, .md and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
