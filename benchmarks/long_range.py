"""The long-range and molecule tables (Peptides-func, HIV) from ``pyg-ple bench`` run folders, finished or not.

Finished seeds come from each folder's ``state.json`` (:func:`pyg_ple.bench.fixed_split.summarize_fixed`: the
epoch of best validation metric per run, test scored once with it). A seed still training is reported by its
status only (epochs done, validation metric so far, read from its checkpoint): its test metric does not exist yet.
Writes ``<dataset>.csv`` (``model,attention,params,epochs,seeds,val_mean,val_std,test_mean,test_std,status,
sec_per_epoch,best_epoch``), ``<dataset>.md`` (the runs' commands, the table, the validation curves of unfinished
seeds, the field's figures) and ``<dataset>.png`` (validation against test metric, one point per model).

    python benchmarks/long_range.py runs/peptides-func/*/ --name peptides_func
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import _common as C

from pyg_ple.bench.fixed_split import summarize_fixed
from pyg_ple.bench.io import load_torch_file
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


def folder_rows(folder: Path, state: dict, total: int) -> tuple[list[dict], list[str], str, dict]:
    """Table rows, status lines and the command of one run folder (its ``state.json`` read as ``state``) whose
    models run ``total`` seeds."""
    config = state.get('config') or {}
    scale, digits = _scale(state)
    higher = (state.get('task') or {}).get('higher_is_better', True)
    if len(config.get('grid') or [{}]) == 1:  # one configuration: its first seed counts before the run records it
        for record in state.get('runs', {}).values():
            state.setdefault('selected', {}).setdefault(record['model'], 0)
    rows = summarize_fixed(state)
    lines, curves = [], {}
    for ckpt in sorted((folder / 'checkpoints').glob('*/*.pt')):
        record = load_torch_file(ckpt, 'a training checkpoint')
        history = record.get('history') or []
        metric = next((k for k in (history[0] if history else {}) if k.startswith('val_') and k != 'val_loss'
                       and k != 'val_score'), None)
        if metric is None:
            continue
        name = ckpt.parent.name
        curves[f'{name} {ckpt.stem}'] = [round(scale * h[metric], digits) for h in history]
        best = (max if higher else min)(range(len(history)), key=lambda e: history[e][metric])
        lines.append(f'{name}, {ckpt.stem}: epoch {len(history)} of {config.get("epochs", "?")}, best '
                     f'{metric} so far {scale * history[best][metric]:.{digits}f} (epoch {best + 1}); unfinished, '
                     'no test metric yet')
    for row in rows:
        done = row['seeds']
        row['status'] = 'finished' if done >= total else f'{done} of {total} seeds finished'
    models = {r['model'] for r in rows}
    for name in sorted({k.split()[0] for k in curves} - models):
        rows.append({**{k: '' for k in COLUMNS}, 'model': name, 'status': 'no seed finished'})
    attention = (config.get('hparams') or {}).get('attention', 'native')
    for row in rows:  # the transformers' candidate edge set, which --models does not name
        row['attention'] = attention if row['model'] in TRANSFORMERS else ''
    return rows, lines, state.get('command', ''), curves


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
    if results.exists():
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('folders', nargs='+', type=Path, help='run folders of pyg-ple bench on one dataset')
    p.add_argument('--name', required=True, help='file stem of the results, e.g. peptides_func')
    p.add_argument('--seeds', type=int, default=3, help="the runs' --final-runs")
    p.add_argument('--out', type=Path, default=C.RESULTS)
    args = p.parse_args(argv)
    rows, status, commands, curves, dataset = [], [], [], {}, None
    splits, versions, machines = {}, {}, {}  # in order of the folders, each once; machines: their folders
    for folder in args.folders:
        if not (folder / 'state.json').exists():
            p.error(f'{folder}: no state.json (not a run folder of pyg-ple bench)')
        state = json.loads((folder / 'state.json').read_text())
        if dataset not in (None, state['dataset']):
            p.error(f"{folder}: dataset {state['dataset']!r}, the others {dataset!r}")
        dataset = state['dataset']
        if state.get('split'):
            splits[state['split']] = None
        versions[_versions(folder, state)] = None
        machines.setdefault(state.get('machine'), []).append(folder.name)
        r, s, cmd, c = folder_rows(folder, state, args.seeds)
        rows += r
        status += s
        curves.update(c)
        commands.append(re.sub(r'--root \S+', '--root DATA', cmd))
    digits = _scale(state)[1]  # the rows are on the task's scale already (summarize_fixed)
    fmt = lambda v: f'{v:.{digits}f}'  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    C.write_csv(args.out / f'{args.name}.csv', COLUMNS, [{k: row.get(k, '') for k in COLUMNS} for row in rows])
    what, published = PUBLISHED.get(dataset, ('', []))
    md = [f'# {dataset}: pyg-ple bench on a fixed split', '',
          'Built by `python benchmarks/long_range.py ' + ' '.join(str(f) for f in args.folders)
          + f' --name {args.name}` from the run folders of these commands (one thread each, two at a time):', '']
    md += [f'    {c}' for c in commands]
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
