"""Small helpers shared by the paper-claims scripts (statistics, JSON, timing, data root)."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))

# The scripts call C.data_root and C.write_json (atomic: a temporary file, fsync, os.replace).
from pyg_ple.bench.io import atomic_write_json as write_json, data_root  # noqa: E402,F401

RESULTS = REPO / 'benchmarks' / 'results'

# The node model (NodeTransformer) and its optimiser before benchmarks/node_recipe.py chose today's defaults: what the
# earlier node rows and ablations ran. Every field of NodeModelConfig is spelled out, so a later change of its defaults
# cannot change what these rows rerun.
EARLIER_NODE_MODEL = dict(hidden=64, num_layers=2, heads=4, laplacian_heads=None, dropout=0.5, input_dropout=0.5,
                          attention_dropout=0.1, mlp_ratio=2.0, step_size=1.0, learn_step_size=True, ple_init=False,
                          norm='layer', prenorm=True, degree_scaler=False, share_weights=False, encoder_norm=False)
EARLIER_NODE_OPTIMIZER = dict(lr=5e-3, weight_decay=5e-4)


def require(path: Path, what: str) -> Path:
    if not path.exists():
        sys.exit(f'{what} not found at {path}; pass --root (or set PYG_PLE_DATA) to the data folder')
    return path


_LIMITS = []


def set_threads(n: Optional[int]) -> None:
    """Use ``n`` threads in torch and in the BLAS/OpenMP pools of numpy and scikit-learn (0/None: leave as is).

    On a shared machine this matters: scikit-learn's OpenMP neighbour searches spin-wait when the cores are busy and
    become orders of magnitude slower than single-threaded."""
    import torch
    if n:
        torch.set_num_threads(n)
        try:
            from threadpoolctl import threadpool_limits
            _LIMITS.append(threadpool_limits(n))
        except ImportError:  # pragma: no cover
            pass


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {'mean': float(v.mean()) if v.size else float('nan'),
            'std': float(v.std(ddof=1)) if v.size > 1 else 0.0, 'n': int(v.size)}


def fmt(ms: Dict[str, float], digits: int = 3) -> str:
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def paired(a: Sequence[float], b: Sequence[float], lower_is_better: bool = True) -> Dict[str, float]:
    """Paired comparison of ``a`` against ``b`` (same seeds): mean difference a - b, its std, paired t-test p value,
    and how many pairs favour ``a``."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    out = {'mean_diff': float(d.mean()), 'std_diff': float(d.std(ddof=1)) if d.size > 1 else 0.0, 'n': int(d.size)}
    out['wins'] = int((d < 0).sum() if lower_is_better else (d > 0).sum())
    if d.size > 1 and np.any(d != d[0]):
        out['t'], out['p'] = (float(x) for x in stats.ttest_rel(a, b))
    else:
        out['t'], out['p'] = float('nan'), float('nan')
    # exact two-sided sign test
    k, n = out['wins'], int((d != 0).sum())
    out['sign_p'] = float(stats.binomtest(k, n).pvalue) if n else float('nan')
    return out


def env_info() -> Dict[str, str]:
    import sklearn
    import torch
    return {'python': platform.python_version(), 'torch': torch.__version__, 'sklearn': sklearn.__version__,
            'threads': str(torch.get_num_threads()), 'machine': platform.machine(),
            'cpus': str(os.cpu_count())}


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def md_table(header: List[str], rows: Iterable[Sequence]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


def split_argv(argv: Optional[Sequence[str]]) -> Tuple[List[str], List[str]]:
    """A script's own arguments and, after ``--``, those of the ``pyg-ple bench`` run it replays."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (argv, [])


def bench_run(parser: Any, bench_argv: Sequence[str], refused: Sequence[str], why: str) -> Tuple[Any, Any, Any]:
    """``(bench arguments, BenchmarkConfig, dataset)`` of the ``pyg-ple bench`` arguments a script was given after
    ``--``, checked as the command checks them; none given, one of ``refused`` (``why`` says why) or a bad setting
    stops the script through ``parser.error`` (one line, exit status 2). Sets the run's ``--threads``."""
    import tempfile

    from pyg_ple.bench.cli import CommandError, build_parser, load_bench_dataset, validate_bench_args, \
        validate_bench_data
    if not bench_argv:
        parser.error('give the arguments of a pyg-ple bench run after --')
    if any(a.split('=')[0] in refused for a in bench_argv):
        parser.error(f"the bench arguments after -- take none of {', '.join(refused)}: {why}")
    with tempfile.TemporaryDirectory() as empty:  # bench's checks want a usable --out; nothing is written there
        bench = build_parser().parse_args(['bench', *bench_argv, '--out', empty])
        try:
            cfg = validate_bench_args(bench)
            set_threads(bench.threads)
            ds, _ = load_bench_dataset(bench, cfg)
            validate_bench_data(bench, ds, cfg)
        except CommandError as e:
            parser.error(str(e))
    return bench, cfg, ds


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict]) -> None:
    """``rows`` as CSV with the columns ``fields``, written atomically."""
    import csv
    import io

    from pyg_ple.bench.io import atomic_write_text
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(fields), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, table.getvalue())


def curves_of(rows: Iterable[dict], columns: Sequence[str]) -> Dict[tuple, Dict[str, np.ndarray]]:
    """Per-epoch CSV rows of training runs as ``(dataset, seed, model, fold) -> column -> array over the epochs``,
    in epoch order."""
    out: Dict[tuple, Dict[str, list]] = {}
    for r in sorted(rows, key=lambda r: int(r['epoch'])):
        c = out.setdefault((r['dataset'], int(r['seed']), r['model'], int(r['fold'])), {})
        for k in columns:
            c.setdefault(k, []).append(float(r[k]))
    return {k: {col: np.asarray(v) for col, v in c.items()} for k, c in out.items()}
