"""What the harness shows: the results of :func:`pyg_ple.bench.protocol.run_benchmark` as tables and a plot (one row per
(dataset, model) with the mean and population std of the test accuracy over the folds, as Errica et al. report it),
written as JSON, CSV, Markdown and PNG; those of :func:`pyg_ple.bench.fixed_split.run_fixed_split` (one row per model
over its seeds, the metric as the field writes it); and the drawing of an attention graph that ``pyg-ple graph``
writes."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pyg_ple.bench.io import RunFolder
from pyg_ple.bench.tasks import METRIC_LABELS, DatasetSpec, Task, dataset_spec

__all__ = ['summarize', 'mean_over_runs', 'format_table', 'results_csv', 'results_figure', 'plot_results',
           'write_results', 'FIXED_RESULT_COLUMNS', 'summarize_fixed', 'fixed_results_table', 'fixed_results_csv',
           'write_fixed_results', 'machine_text', 'versions_text', 'draw_attention_graph']


def mean_over_runs(record: dict[str, Any], key: str) -> float:
    """A fold's ``key`` averaged over its training runs (the record alone for one run); NaN where one lacks it."""
    values = [run.get(key) for run in record.get('final_runs') or [record]]
    return np.nan if any(v is None for v in values) else float(np.mean(values))


def _ended_by_budget(record: dict[str, Any], config: dict[str, Any]) -> tuple[int, int]:
    # (training runs of a fold ended by the budget, training runs), from the epochs and patience they ran with
    from pyg_ple.bench.selection import ended_by_budget
    if 'epochs' not in config:
        return 0, 0
    runs = [r for r in record.get('final_runs') or [record] if r.get('epochs_run') is not None]
    patience = (record.get('train') or {}).get('patience', config.get('patience'))
    return sum(ended_by_budget(r['best_epoch'], r['epochs_run'], config['epochs'], patience) for r in runs), len(runs)


def _heldout(record: dict[str, Any]) -> float:
    # A fold's held-out validation accuracy over its training runs; that of the first, the run that chose the grid
    # configuration, is the held-out figure of the choice where it was recorded.
    values = [run.get('heldout_val_acc') for run in record.get('final_runs') or [record]]
    if record.get('grid_choice_heldout_val_acc') is not None:
        values[0] = record['grid_choice_heldout_val_acc']
    return np.nan if any(v is None for v in values) else float(np.mean(values))


def summarize(state: dict[str, Any], models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per model: accuracy mean and std (population std over folds, as in Errica et al.), folds done,
    parameters, seconds per epoch, selected configurations, mean validation accuracy (best epoch, and held out: with
    a grid, the run that chose counts with the held-out figure of its choice of configuration and epoch), and
    how many training runs the budget ended (:func:`~pyg_ple.bench.selection.ended_by_budget`) out of how many.
    Where a fold has several training runs (``--final-runs``), its validation accuracies (selected epoch and held
    out) are their means, as its test accuracy is; its validation loss is the first run's (the runs record none)."""
    runs = list(state['runs'].values())
    names = list(models) if models else list(dict.fromkeys(r['model'] for r in runs))
    rows = []
    for name in names:
        rs = sorted((r for r in runs if r['model'] == name), key=lambda r: r['fold'])
        if not rs:
            continue
        accs = np.array([r['test_acc'] for r in rs]) * 100
        budget_ended = np.array([_ended_by_budget(r, state.get('config') or {}) for r in rs]).reshape(-1, 2).sum(0)
        rows.append({
            'dataset': state.get('dataset', ''), 'model': name, 'acc_mean': float(accs.mean()),
            'acc_std': float(accs.std()), 'folds': len(rs), 'params': int(np.median([r['params'] for r in rs])),
            'sec_per_epoch': float(np.mean([r['sec_per_epoch'] for r in rs])),
            'epochs': int(np.median([r['epochs_run'] for r in rs])),
            # Selected epoch: near 'epochs' means the budget, not early stopping, ended training.
            'best_epoch': int(np.median([r['best_epoch'] for r in rs])),
            # Runs the budget ended with their best epoch among the last `patience`: a longer one might do better.
            'ended_by_budget': [int(budget_ended[0]), int(budget_ended[1])],
            'selected_config': [int(r.get('selected_config', 0)) for r in rs],
            # Training loss at the selected epoch: high together with the validation loss means underfitting.
            'train_loss': float(np.mean([r['train_loss'] if r.get('train_loss') is not None else np.nan for r in rs])),
            'val_acc_mean': float(np.mean([mean_over_runs(r, 'val_acc') for r in rs]) * 100),
            'val_loss_mean': float(np.mean([r['val_loss'] if r.get('val_loss') is not None else np.nan for r in rs])),
            # Held-out validation accuracy (selection.heldout_accuracy); NaN for runs written before it was recorded.
            # With a grid, that of the choice of configuration (selection.heldout_choice_accuracy) for the run that
            # chose: the selected configuration's own figure saw the graphs that chose it.
            'heldout_val_mean': float(np.mean([_heldout(r) for r in rs]) * 100),
            'fold_acc': [round(float(a), 2) for a in accs],
        })
    return rows


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Results table: model, accuracy mean +- std, folds, parameters, seconds per epoch, epochs run and selected,
    training loss at the selected epoch, training runs ended by the budget."""
    header = ['dataset', 'model', 'accuracy (%)', 'folds', 'params', 's/epoch', 'epochs (median)',
              'selected epoch (median)', 'train loss (selected)', 'ended by the budget']
    body = [[r['dataset'], r['model'], f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f}", str(r['folds']),
             f"{r['params']:,}", f"{r['sec_per_epoch']:.3f}", str(r['epochs']), str(r.get('best_epoch', '–')),
             f"{r['train_loss']:.3f}" if 'train_loss' in r else '–',
             '{} / {}'.format(*r['ended_by_budget']) if r.get('ended_by_budget', [0, 0])[1] else '–']
            for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * 2 + ['---:'] * 8) + '|']
        lines += ['| ' + ' | '.join(b) + ' |' for b in body]
        return '\n'.join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: '  '.join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return '\n'.join([fmt(header), fmt(['-' * w for w in widths])] + [fmt(b) for b in body])


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV: dataset, model, accuracy mean and std, folds, parameters, s/epoch, epochs, per-fold accuracy."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(['dataset', 'model', 'acc_mean', 'acc_std', 'folds', 'params', 'sec_per_epoch', 'epochs', 'best_epoch',
                'fold_acc'])
    for r in rows:
        w.writerow([r['dataset'], r['model'], f"{r['acc_mean']:.2f}", f"{r['acc_std']:.2f}", r['folds'], r['params'],
                    f"{r['sec_per_epoch']:.4f}", r['epochs'], r.get('best_epoch', ''),
                    ' '.join(f'{a:.1f}' for a in r['fold_acc'])])
    return buf.getvalue()


def results_figure(rows: Sequence[dict[str, Any]], title: str = '') -> Any:
    """A matplotlib figure: grouped bars (datasets x models) of mean accuracy with std error bars, the legend of the
    models to the right of the axes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    models = list(dict.fromkeys(r['model'] for r in rows))
    # Constrained layout sizes the axes around the legend outside them, so no label is cut off.
    fig, ax = plt.subplots(figsize=(min(11.0, max(5.0, 1.5 + 1.4 * len(datasets))) + 1.5, 4.2),
                           layout='constrained')
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        xs, ys, es = [], [], []
        for i, d in enumerate(datasets):
            r = next((r for r in rows if r['dataset'] == d and r['model'] == m), None)
            if r is not None:
                xs.append(i + (j - (len(models) - 1) / 2) * width)
                ys.append(r['acc_mean'])
                es.append(r['acc_std'])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=m)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel('test accuracy (%)')
    lo = min((r['acc_mean'] - r['acc_std'] for r in rows), default=0)
    ax.set_ylim(max(0.0, lo - 10), 100)
    fig.legend(loc='outside right upper', fontsize=8, frameon=False)
    ax.grid(axis='y', alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_results(rows: Sequence[dict[str, Any]], title: str = '') -> bytes:
    """PNG bytes of :func:`results_figure`."""
    import io

    import matplotlib.pyplot as plt
    fig = results_figure(rows, title)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_results(out: str | os.PathLike | RunFolder, rows: Sequence[dict[str, Any]],
                  meta: dict[str, Any] | None = None, stem: str = 'results', title: str = '') -> dict[str, Path]:
    """Write ``<stem>.json``, ``.csv``, ``.md`` and ``.png`` into the run folder ``out``, each atomically (a path is
    opened as ``RunFolder(out, 'add')``: new, empty, or written by pyg-ple)."""
    run = out if isinstance(out, RunFolder) else RunFolder(out, 'add').prepare()
    meta = meta or {}
    md = [f'# {title or "Graph classification results"}', '']
    if meta.get('command'):
        md += ['Command:', '', '```', str(meta['command']), '```', '']
    md += [format_table(rows, markdown=True), '']
    if meta.get('protocol'):
        md += [str(meta['protocol']), '']
    return {'json': run.write_json(f'{stem}.json', {**meta, 'results': list(rows)}),
            'csv': run.write_text(f'{stem}.csv', results_csv(rows)),
            'md': run.write_text(f'{stem}.md', '\n'.join(md)),
            'png': run.write_bytes(f'{stem}.png', plot_results(rows, title))}


# --------------------------------------------------------------------------------------------------------------------
# Fixed official splits (Peptides-func, HIV): one row per model over its seeds, metric as the field writes it
# --------------------------------------------------------------------------------------------------------------------
FIXED_RESULT_COLUMNS = ('model', 'params', 'epochs', 'seeds', 'val_mean', 'val_std', 'test_mean', 'test_std')


def summarize_fixed(state: dict[str, Any], models: Sequence[str] | None = None,
                    task: Task | None = None) -> list[dict[str, Any]]:
    """One row per model over the seeds of its selected configuration: ``model, params, epochs, seeds, val_mean,
    val_std, test_mean, test_std`` (population std over seeds; the metric as the field writes it: AP as a fraction,
    ROC-AUC in percent), and ``sec_per_epoch``, ``best_epoch`` (median), ``selected_config``."""
    task = task or dataset_spec(state['dataset']).task
    runs = state['runs']
    names = list(models) if models else list(dict.fromkeys(r['model'] for r in runs.values()))
    rows = []
    for name in names:
        j = state.get('selected', {}).get(name)
        recs = sorted((r for r in runs.values() if r['model'] == name and r['config_index'] == j),
                      key=lambda r: r['seed_index']) if j is not None else []
        if not recs:
            continue
        val = np.array([r['val_metric'] for r in recs]) * task.scale
        test = np.array([r['test_metric'] for r in recs]) * task.scale
        rows.append({'dataset': state['dataset'], 'model': name, 'params': int(recs[0]['params']),
                     'epochs': int((state.get('config') or {}).get('epochs', recs[0]['epochs_run'])),
                     'seeds': len(recs), 'val_mean': float(val.mean()), 'val_std': float(val.std()),
                     'test_mean': float(test.mean()), 'test_std': float(test.std()),
                     'sec_per_epoch': float(np.mean([r['sec_per_epoch'] for r in recs])),
                     'best_epoch': int(np.median([r['best_epoch'] for r in recs])), 'selected_config': j,
                     'hidden': recs[0]['hparams'].get('hidden')})
    return rows


def _fixed_fmt(value: float, task: Task) -> str:
    return f'{value:.2f}' if task.scale != 1 else f'{value:.4f}'


def fixed_results_table(rows: Sequence[dict[str, Any]], task: Task) -> str:
    """The rows as a Markdown table (metric as the field writes it)."""
    name = METRIC_LABELS[task.metric]
    lines = [f'| model | params | width | epochs | seeds | val {name} | test {name} | s/epoch | '
             'selected epoch (median) |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['hidden']} | {r['epochs']} | {r['seeds']} | "
                     f"{_fixed_fmt(r['val_mean'], task)} ± {_fixed_fmt(r['val_std'], task)} | "
                     f"{_fixed_fmt(r['test_mean'], task)} ± {_fixed_fmt(r['test_std'], task)} | {r['sec_per_epoch']:.1f} | "
                     f"{r['best_epoch']} |")
    return '\n'.join(lines)


def fixed_results_csv(rows: Sequence[dict[str, Any]], task: Task) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow([*FIXED_RESULT_COLUMNS, 'sec_per_epoch'])
    for r in rows:
        w.writerow([r['model'], r['params'], r['epochs'], r['seeds'], *(_fixed_fmt(r[k], task) for k in
                    ('val_mean', 'val_std', 'test_mean', 'test_std')), f"{r['sec_per_epoch']:.2f}"])
    return buf.getvalue()


def write_fixed_results(run: RunFolder, rows: Sequence[dict[str, Any]], meta: dict[str, Any], spec: DatasetSpec) -> \
        dict[str, Any]:
    """``results.json``, ``results.csv`` (the columns of :data:`FIXED_RESULT_COLUMNS` and s/epoch) and ``results.md`` (the
    command, the split, the metric, versions and the table) in ``run``."""
    task = spec.task
    md = [f'# {spec.name}: {task.kind} classification, {task.metric}' if task.kind != 'regression'
          else f'# {spec.name}: regression, {task.metric}', '']
    if meta.get('command'):
        md += ['Command:', '', '```', str(meta['command']), '```', '']
    md += [fixed_results_table(rows, task), '',
           f'Split: {spec.note}. Each model trained with {meta.get("seeds")} seed(s) on the training split; the epoch '
           f'{"of lowest validation loss" if meta.get("select") == "loss" else "of best validation " + task.metric} '
           'is kept and scored once on test; mean ± population std over seeds. Parameter counts as stated (width '
           'per model from the budget where --params is given).',
           f'Versions: {meta.get("versions")}.', '']
    return {'json': run.write_json('results.json', {**meta, 'results': list(rows)}),
            'csv': run.write_text('results.csv', fixed_results_csv(rows, task)),
            'md': run.write_text('results.md', '\n'.join(md))}


def machine_text() -> str:
    """What the timings ran on: cores and architecture (never a host name or a path)."""
    return f'{os.cpu_count()} cores, {platform.machine()}, {platform.system()}'


def versions_text() -> str:
    """The versions a fixed-split run records: python, torch and the libraries that shape its numbers."""
    import torch
    parts = [f'python {platform.python_version()}', f'torch {torch.__version__}']
    for module in ('torch_geometric', 'ogb', 'rdkit', 'sklearn'):
        try:
            parts.append(f'{module} {__import__(module).__version__}')
        except (ImportError, AttributeError):
            pass
    return ', '.join(parts)


def draw_attention_graph(G: Any, data: Any, name: str, min_weight: float = 0.0) -> bytes:
    """PNG bytes of an attention graph ``G`` (from :meth:`~pyg_ple.AttentionGraph.to_networkx`) of the graph ``data`` of
    dataset ``name``: digits at their pixel positions, other graphs in a spring layout; edge width by weight, edges up
    to ``min_weight`` and self-loops left out."""
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import networkx as nx
    if name == 'digits':  # pixel positions: column right, row down
        pos = {i: (float(data.pixel[i] % 8), -float(data.pixel[i] // 8)) for i in range(G.number_of_nodes())}
        node_color = [float(data.x[i, 0]) for i in range(G.number_of_nodes())]
    else:
        import torch_geometric.utils as U
        pos = nx.spring_layout(U.to_networkx(data, to_undirected=True), seed=0)
        node_color = [int(data.x[i].argmax()) for i in range(G.number_of_nodes())]  # node label
    edges = [(j, i) for j, i, w in G.edges(data='weight') if j != i and w > min_weight]
    weights = [G[j][i]['weight'] for j, i in edges]
    wmax = max(weights, default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(5, 5))
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=60, node_color=node_color,
                           cmap='Greys' if name == 'digits' else 'tab10', edgecolors='k', linewidths=0.5)
    nx.draw_networkx_edges(G, pos, edgelist=edges, ax=ax, width=[0.2 + 3.0 * w / wmax for w in weights],
                           alpha=0.6, arrows=True, arrowsize=6, edge_color='tab:blue',
                           connectionstyle='arc3,rad=0.1')
    ax.set_title(f"{G.graph.get('model')} layer {G.graph.get('layer')} head {G.graph.get('head')}: "
                 f"label {G.graph.get('label')}, predicted {G.graph.get('prediction')}", fontsize=9)
    ax.axis('off')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=120)
    plt.close(fig)
    return buf.getvalue()
