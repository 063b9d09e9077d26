"""Every one-change screen of the graph models in one table, read from the reports that wrote them.

Each report of ``benchmarks/graph_classification.py --change`` has a section ``## One change: LABEL`` per change with
one row per (dataset, model, seed) cell: the default's validation accuracy of the selected epochs, held-out
validation accuracy and test accuracy, each ``before → after``. This script collects those rows from the reports
given (default: every ``graph_classification.md`` under ``benchmarks/results``) and writes, per change and model, the
number of cells and the mean change of each figure over them, and per model how often the validation figures moved
with the test accuracy across all cells. Means are over cells (each cell the mean of its folds). Screens that share
their default runs share their noise, so the cells of different screens are not independent.

    python benchmarks/screens.py                       # writes benchmarks/results/screens/screens.{md,csv}
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'benchmarks' / 'results'
HEADER = '| dataset | model | seed | folds | val acc % | held-out val acc % | val loss | test acc % |'
FIGURES = ('val', 'heldout', 'test')


class Cell(NamedTuple):
    report: str
    change: str
    dataset: str
    model: str
    seed: int
    val: float | None
    heldout: float | None
    test: float | None


def _delta(text: str) -> float | None:
    """``'94.1 → 92.9'`` → -1.2; ``'–'`` → None."""
    parts = text.split('→')
    if len(parts) != 2:
        return None
    before, after = (float(p.strip()) for p in parts)
    return round(after - before, 6)


def read_report(path: Path, name: str) -> list[Cell]:
    """The cells of every ``## One change:`` section of one report."""
    cells, change, in_table = [], None, False
    for line in path.read_text(encoding='utf-8').splitlines():
        if line.startswith('## '):
            change = line[len('## One change: '):].strip() if line.startswith('## One change: ') else None
            in_table = False
        elif change and line.startswith(HEADER):
            in_table = True
        elif in_table and line.startswith('|') and not line.startswith('|---'):
            col = [c.strip() for c in line.strip().strip('|').split('|')]
            cells.append(Cell(name, change, col[0], col[1], int(col[2]), _delta(col[4]), _delta(col[5]),
                              _delta(col[7])))
        elif in_table and not line.startswith('|'):
            in_table = False
    return cells


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _fmt(x: float, n: int) -> str:
    return '–' if not n else f'{x:+.2f}'


def summarise(cells: list[Cell]) -> tuple[list[dict], list[dict]]:
    """Per (report, change, model): cells and mean changes; per model: agreement of validation and test."""
    rows, groups = [], {}
    for c in cells:
        groups.setdefault((c.report, c.change, c.model), []).append(c)
    for (report, change, model), cs in groups.items():
        row = {'report': report, 'change': change, 'model': model, 'cells': len(cs),
               'datasets': ' '.join(dict.fromkeys(c.dataset for c in cs))}
        for f in FIGURES:
            xs = [getattr(c, f) for c in cs if getattr(c, f) is not None]
            row[f'{f}_cells'], row[f'd_{f}'] = len(xs), _mean(xs)
        rows.append(row)
    agreement = []
    for model in dict.fromkeys(c.model for c in cells):
        cs = [c for c in cells if c.model == model and c.val is not None and c.test is not None]
        moved = [c for c in cs if c.val != 0 and c.test != 0]
        h = [c for c in cs if c.heldout is not None and c.heldout != 0 and c.test != 0]
        agreement.append({
            'model': model, 'cells': len(cs), 'd_val': _mean([c.val for c in cs]), 'd_test': _mean([c.test for c in cs]),
            'val_down_test_up': sum(c.val < 0 < c.test for c in cs),
            'val_sign_agrees': sum((c.val > 0) == (c.test > 0) for c in moved), 'val_moved': len(moved),
            'heldout_sign_agrees': sum((c.heldout > 0) == (c.test > 0) for c in h), 'heldout_moved': len(h)})
    return rows, agreement


def to_markdown(rows: list[dict], agreement: list[dict], command: str) -> str:
    lines = ['# One-change screens of the graph models', '',
             'Read from the `## One change:` sections of the reports named in the tables; each cell is one (dataset, model, split '
             'seed) run of 10 outer folds, and each figure the mean change over the cells, in accuracy points '
             '(validation accuracy of the selected epochs, held-out validation accuracy, test accuracy), computed from '
             'the reports\' figures, which are rounded to 0.1. Held-out '
             'figures exist only for runs made after it was recorded. Screens that share their default runs share '
             'their noise.', '', f'Command: `{command}`', '',
             '## The Laplacian transformer', '',
             '| change | report | cells | datasets | val | held-out val (cells) | test |', '|---|---|---:|---|---:|---:|---:|']
    for r in rows:
        if r['model'] == 'laplacian':
            lines.append(f"| {r['change']} | `{r['report']}` | {r['cells']} | {r['datasets']} | "
                         f"{_fmt(r['d_val'], r['val_cells'])} | {_fmt(r['d_heldout'], r['heldout_cells'])} "
                         f"({r['heldout_cells']}) | {_fmt(r['d_test'], r['test_cells'])} |")
    lines += ['', '## Every model', '', '| change | model | cells | val | held-out val (cells) | test |',
              '|---|---|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['change']} | {r['model']} | {r['cells']} | {_fmt(r['d_val'], r['val_cells'])} | "
                     f"{_fmt(r['d_heldout'], r['heldout_cells'])} ({r['heldout_cells']}) | "
                     f"{_fmt(r['d_test'], r['test_cells'])} |")
    lines += ['', '## Validation against test, every cell of every screen', '',
              'Per model over all its cells: the mean changes, the cells where validation accuracy fell while test '
              'accuracy rose, and the cells where each validation figure moved in the direction of the test '
              'accuracy (of those where both moved).', '',
              '| model | cells | mean val change | mean test change | val down, test up | val agrees with test | '
              'held-out agrees with test |', '|---|---:|---:|---:|---:|---:|---:|']
    for a in agreement:
        lines.append(f"| {a['model']} | {a['cells']} | {a['d_val']:+.2f} | {a['d_test']:+.2f} | "
                     f"{a['val_down_test_up']} | {a['val_sign_agrees']} of {a['val_moved']} | "
                     f"{a['heldout_sign_agrees']} of {a['heldout_moved']} |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('reports', nargs='*', type=Path,
                   help='reports of benchmarks/graph_classification.py (default: every graph_classification.md '
                        'under benchmarks/results)')
    p.add_argument('--out', type=Path, default=RESULTS / 'screens',
                   help='folder for screens.md and screens.csv (default: benchmarks/results/screens)')
    args = p.parse_args(argv)
    reports = args.reports or sorted(RESULTS.rglob('graph_classification.md'))
    missing = [str(r) for r in reports if not r.is_file()]
    if missing:
        p.error(f'argument reports: not a file: {missing[0]}')
    cells = []
    for r in reports:
        r = r.resolve()
        name = str(r.relative_to(REPO)) if r.is_relative_to(REPO) else r.name
        cells += read_report(r, name)
    if not cells:
        p.error('argument reports: no "## One change:" rows in the reports given')
    rows, agreement = summarise(cells)
    args.out.mkdir(parents=True, exist_ok=True)
    command = 'python benchmarks/screens.py' + ''.join(f' {a}' for a in (argv if argv is not None else sys.argv[1:]))
    (args.out / 'screens.md').write_text(to_markdown(rows, agreement, command), encoding='utf-8')
    with open(args.out / 'screens.csv', 'w', newline='', encoding='utf-8') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f'{len(cells)} cells of {len(rows)} (change, model) pairs: {args.out / "screens.md"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
