"""Seconds per epoch of ``pyg-ple bench`` training with 1, 2 and all torch intra-op threads, on the machine as it is
("idle") and with one core kept busy by a process this script starts, and under ``torchrun`` with 2 processes.

Writes ``threads.csv`` and ``threads.md`` (command, seeds, versions, machine, what else ran) under ``--out`` (default
``benchmarks/results``); both are rewritten after every measurement, so a run stopped early keeps what it measured.

Parts (``--parts``)
  inprocess  In this process, alternating: for each of ``--repeats`` repeats, an idle block and a busy block (their
             order alternates), in each block every case at every thread count (the order of the counts alternates).
             Cases: ``pyg-ple bench``'s own training (:func:`pyg_ple.bench.protocol.train_fold` on fold 0 of 2,
             options parsed and data loaded by the CLI's functions) on ``--digits-n`` digits (the offline default's
             settings otherwise; gcn and laplacian) and on ``--tu`` (default MUTAG; gcn, laplacian), figure: the
             median of ``--epochs`` epochs' times (training and validation); and training steps of the train suite
             of ``benchmarks/speed.py`` (laplacian, width 4 x 16, 2 layers, ``FakeDataset`` graphs of 40 nodes and
             degree 8) in batches of 512 graphs (about 20k nodes), figure: the median of up to ``--epochs`` steps
             (fewer once ``--step-budget`` seconds have passed) times the steps of an epoch of 410 graphs.
             The table shows the median over repeats.
  torchrun   ``pyg-ple bench`` on ``--digits-n`` digits (gcn, laplacian, 2 folds) as one process with ``--threads 1``
             and under ``torchrun --nproc_per_node=2`` with ``--threads 1``, ``--threads 2`` and no ``--threads``,
             alternating, ``--torchrun-repeats`` times; idle only. Figure: the bench's own s/epoch (results.csv).
  e2e        ``pyg-ple bench --folds 2 --epochs 3``: the offline default (all seven models) with no ``--threads``, on
             a budget that fits a shared machine; idle and with one busy core, alternating, ``--e2e-repeats`` times:
             wall time and the bench's s/epoch per model.

The busy process is a pure-Python loop bounded to ``--busy-limit`` seconds that this script stops at the end of each
busy block. Ratios are of figures measured in the same run.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_geometric  # noqa: E402

import pyg_ple  # noqa: E402
from pyg_ple.bench.threads import available_cores, default_threads  # noqa: E402

BUSY = ('import sys, time\nend = time.monotonic() + float(sys.argv[1])\nn = 0\n'
        'while time.monotonic() < end:\n    n += 1\n')
FIELDS = ['part', 'case', 'model', 'load', 'processes', 'threads', 'repeat', 'batch_nodes', 'sec_per_epoch',
          'wall_s', 'default_threads', 'loadavg_start', 'loadavg_end']
SPEED_BATCHES = (512,)
E2E = ['--folds', '2', '--epochs', '3']
SPEED_TRAIN_GRAPHS = 410  # the train part of speed.py's 512 graphs


class Busy:
    """One busy core: a bounded pure-Python loop in a child process, stopped on exit (or a no-op when not ``on``)."""

    def __init__(self, on: bool, limit_s: float):
        self.on, self.limit_s, self.proc = on, limit_s, None

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, '-c', BUSY, str(self.limit_s)])
            time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def loadavg() -> str:
    return f'{os.getloadavg()[0]:.2f}'


def commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or 'unknown'


# --------------------------------------------------------------------------------------------------------------------
# Cases measured in this process
# --------------------------------------------------------------------------------------------------------------------
class BenchCase:
    """``pyg-ple bench`` training as the CLI sets it up (its parser, checks, dataset loading), fold 0 of 2."""

    def __init__(self, name: str, argv: list[str], tmp: Path):
        from pyg_ple.bench.cli import build_parser, load_bench_dataset, validate_bench_args
        from pyg_ple.bench.splits import make_splits
        self.name, self.argv = name, argv
        args = build_parser().parse_args(['bench', *argv, '--out', str(tmp / name), '--no-progress',
                                          '--no-save-models'])
        args.argv = argv
        self.cfg = validate_bench_args(args)
        self.ds, _ = load_bench_dataset(args, self.cfg)
        self.models = list(self.cfg.models)
        self.split = make_splits(self.ds.labels, n_folds=args.folds, seed=args.seed)[0]
        nodes = statistics.fmean(int(g.num_nodes) for g in self.ds.graphs)
        self.batch_nodes = nodes * self.cfg.batch_size

    def epoch_times(self, model: str, epochs: int) -> list[float]:
        from pyg_ple.bench.protocol import train_fold
        from pyg_ple.bench.settings import run_seed_of
        self.cfg.epochs = epochs
        res, _ = train_fold(self.ds, model, self.split, self.cfg, self.cfg.grid[0], run_seed_of(self.cfg.seed, 0))
        return [h['time'] for h in res.history]


class SpeedCase:
    """Training steps of the train suite of ``benchmarks/speed.py`` (laplacian, width 4 x 16, 2 layers, Adam) at one
    batch size, scaled to an epoch of its 410 training graphs."""

    SEED = 3000

    def __init__(self, batch_size: int, step_budget: float):
        import random

        from torch_geometric.data import Batch
        from torch_geometric.datasets import FakeDataset
        self.name, self.models, self.step_budget = f'speed-train-b{batch_size}', ['laplacian'], step_budget
        random.seed(self.SEED)  # FakeDataset draws with ``random``
        torch.manual_seed(self.SEED)
        data = FakeDataset(num_graphs=batch_size, avg_num_nodes=40, avg_degree=8, num_channels=16, num_classes=4,
                           task='graph')
        self.batch = Batch.from_data_list(list(data))
        self.batch_nodes = self.batch.num_nodes
        self.steps_per_epoch = -(-SPEED_TRAIN_GRAPHS // batch_size)

    def epoch_times(self, model: str, steps: int) -> list[float]:
        from pyg_ple.bench.models import build_model
        torch.manual_seed(self.SEED)
        net = build_model(model, 16, 4, hidden=64, num_layers=2, heads=4)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        times: list[float] = []
        begin = time.perf_counter()
        while len(times) < steps and (not times or time.perf_counter() - begin < self.step_budget):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(self.batch), self.batch.y.view(-1)).backward()
            opt.step()
            times.append((time.perf_counter() - t0) * self.steps_per_epoch)
        return times


def run_inprocess(args, cases, settings, emit) -> None:
    for case in cases:  # warm-up: first calls of every kernel, untimed
        torch.set_num_threads(1)
        for model in case.models:
            case.epoch_times(model, 1)
    for r in range(args.repeats):
        loads = ('idle', 'busy') if r % 2 == 0 else ('busy', 'idle')
        for load in loads:
            with Busy(load == 'busy', args.busy_limit):
                for case in cases:
                    for threads in (settings if (r + (load == 'busy')) % 2 == 0 else settings[::-1]):
                        torch.set_num_threads(threads)
                        for model in case.models:
                            start = loadavg()
                            t0 = time.perf_counter()
                            times = case.epoch_times(model, args.epochs)
                            emit(dict(part='inprocess', case=case.name, model=model, load=load, processes=1,
                                      threads=threads, repeat=r, batch_nodes=round(case.batch_nodes),
                                      sec_per_epoch=statistics.median(times), wall_s=time.perf_counter() - t0,
                                      default_threads=default_threads(processes=1),
                                      loadavg_start=start, loadavg_end=loadavg()))
    torch.set_num_threads(available_cores())


# --------------------------------------------------------------------------------------------------------------------
# Runs of the command
# --------------------------------------------------------------------------------------------------------------------
def run_command(bench_argv: list[str], out: Path, processes: int,
                env: dict[str, str]) -> tuple[dict[str, float], float]:
    """Run ``pyg-ple bench`` (under torchrun when ``processes`` > 1); its s/epoch per model and the wall time."""
    launch = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}']
              if processes > 1 else [sys.executable])
    cmd = [*launch, '-m', 'pyg_ple', 'bench', *bench_argv, '--out', str(out), '--no-progress', '--no-save-models']
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f'{shlex.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}')
    first = next((line for line in proc.stderr.splitlines() if line.startswith('pyg-ple bench:')), '')
    print('   ', first, flush=True)
    with open(out / 'results.csv') as f:
        return {row['model']: float(row['sec_per_epoch']) for row in csv.DictReader(f)}, wall


def run_torchrun(args, tmp: Path, emit) -> None:
    bench = ['--digits-n', str(args.digits_n), '--models', 'gcn,laplacian', '--folds', '2', '--epochs',
             str(args.epochs)]
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'} | {'PYTHONPATH': str(ROOT)}
    settings = [(1, '1'), (2, '1'), (2, '2'), (2, None)]
    n = 0
    for r in range(args.torchrun_repeats):
        for processes, threads in (settings if r % 2 == 0 else settings[::-1]):
            n += 1
            start = loadavg()
            per_model, wall = run_command(bench + (['--threads', threads] if threads else []), tmp / f'tr{n}',
                                          processes, env)
            for model, sec in per_model.items():
                emit(dict(part='torchrun', case='digits', model=model, load='idle', processes=processes,
                          threads=threads or 'default', repeat=r, batch_nodes='', sec_per_epoch=sec, wall_s=wall,
                          default_threads=default_threads(processes=processes), loadavg_start=start,
                          loadavg_end=loadavg()))


def run_e2e(args, tmp: Path, emit) -> None:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'} | {'PYTHONPATH': str(ROOT)}
    n = 0
    for r in range(args.e2e_repeats):
        for load in ('idle', 'busy') if r % 2 == 0 else ('busy', 'idle'):
            n += 1
            with Busy(load == 'busy', args.busy_limit):
                start = loadavg()
                per_model, wall = run_command(E2E, tmp / f'e2e{n}', 1, env)
            for model, sec in per_model.items():
                emit(dict(part='e2e', case='digits', model=model, load=load, processes=1, threads='default',
                          repeat=r, batch_nodes='', sec_per_epoch=sec, wall_s=wall,
                          default_threads=default_threads(processes=1), loadavg_start=start, loadavg_end=loadavg()))


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------
def _median(rows, **match) -> float | None:
    vals = [float(r['sec_per_epoch']) for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]
    return statistics.median(vals) if vals else None


def _f(x, fmt='.3f') -> str:
    return '–' if x is None else format(x, fmt)


def _ratio_e2e(rows) -> float | None:
    walls = {load: statistics.median(float(r['wall_s']) for r in rows if r['load'] == load) for load in ('idle', 'busy')
             if any(r['load'] == load for r in rows)}
    return walls['busy'] / walls['idle'] if len(walls) == 2 else None


def write_report(args, rows, header_lines, out: Path) -> None:
    with open(out / f'{args.name}.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator='\n')
        w.writeheader()
        w.writerows(rows)
    L = ['# `pyg-ple bench`: torch intra-op threads, idle and with one busy core', '', *header_lines, '']
    inproc = [r for r in rows if r['part'] == 'inprocess']
    if inproc:
        settings = sorted({int(r['threads']) for r in inproc})
        L += ['## Training in one process (median s/epoch over repeats)', '',
              '"/1" columns: the time over that of 1 thread under the same load in the same run. "busy/idle": the '
              "time with one busy core over the idle time at the same thread count. 'default' is the count "
              '`default_threads` picks for the case (1 process).', '',
              '| case | model | nodes / batch | default | ' + ' | '.join(
                  [f'idle {t}' for t in settings] + [f'busy {t}' for t in settings]
                  + [f'idle {t}/1' for t in settings[1:]] + [f'busy {t}/1' for t in settings[1:]]
                  + [f'busy/idle {t}' for t in settings]) + ' |',
              '|' + '---|' * 2 + '---:|' * (2 + 5 * len(settings) - 2)]
        for case, model in dict.fromkeys((r['case'], r['model']) for r in inproc):
            sel = [r for r in inproc if r['case'] == case and r['model'] == model]
            med = {(load, t): _median(sel, load=load, threads=t) for load in ('idle', 'busy') for t in settings}
            ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
            cells = ([_f(med['idle', t]) for t in settings] + [_f(med['busy', t]) for t in settings]
                     + [_f(ratio(med['idle', t], med['idle', 1]), '.2f') for t in settings[1:]]
                     + [_f(ratio(med['busy', t], med['busy', 1]), '.2f') for t in settings[1:]]
                     + [_f(ratio(med['busy', t], med['idle', t]), '.2f') for t in settings])
            L.append(f"| {case} | {model} | {sel[0]['batch_nodes']:,} | {sel[0]['default_threads']} | "
                     + ' | '.join(cells) + ' |')
        L.append('')
    tr = [r for r in rows if r['part'] == 'torchrun']
    if tr:
        L += ['## torchrun, 2 processes, digits (median of the bench\'s s/epoch over repeats; idle)', '',
              '"threads": per process; "default" is no `--threads` (the rule gives '
              f'{default_threads(processes=2)} per process at 2 processes on these graphs). "/ 1 process": over '
              'one process with `--threads 1` in the same run.', '',
              '| model | processes | threads | s/epoch | / 1 process |', '|---|---:|---|---:|---:|']
        for model in dict.fromkeys(r['model'] for r in tr):
            base = _median(tr, model=model, processes=1, threads='1')
            for processes, threads in dict.fromkeys((r['processes'], str(r['threads'])) for r in tr):
                m = _median(tr, model=model, processes=processes, threads=threads)
                L.append(f'| {model} | {processes} | {threads} | {_f(m)} | '
                         f'{_f(None if m is None or base is None else m / base, ".2f")} |')
        L.append('')
    e2e = [r for r in rows if r['part'] == 'e2e']
    if e2e:
        models = list(dict.fromkeys(r['model'] for r in e2e))
        L += [f'## `pyg-ple bench {" ".join(E2E)}`: the default threads end to end (wall time, the bench\'s s/epoch)',
              '',
              f'No `--threads`: the bench chose {default_threads(processes=1)} thread(s). Busy / idle of the median '
              'wall time: ' + _f(_ratio_e2e(e2e), '.2f') + '.', '',
              '| load | repeat | wall s | ' + ' | '.join(models) + ' |', '|---|---:|---:|' + '---:|' * len(models)]
        for load, r in dict.fromkeys((r['load'], r['repeat']) for r in e2e):
            sel = {x['model']: x for x in e2e if x['load'] == load and x['repeat'] == r}
            L.append(f"| {load} | {r} | {float(next(iter(sel.values()))['wall_s']):.1f} | "
                     + ' | '.join(_f(float(sel[m]['sec_per_epoch']) if m in sel else None) for m in models) + ' |')
        L.append('')
    (out / f'{args.name}.md').write_text('\n'.join(L) + '\n')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=None, help='data folder for --tu (default: $PYG_PLE_DATA, ~/.cache/pyg_ple)')
    p.add_argument('--tu', default='MUTAG', help="the TU dataset of the inprocess part ('' for none)")
    p.add_argument('--parts', nargs='+', default=['inprocess', 'torchrun', 'e2e'],
                   choices=['inprocess', 'torchrun', 'e2e'])
    p.add_argument('--repeats', type=int, default=3, help='repeats of the inprocess part')
    p.add_argument('--torchrun-repeats', type=int, default=2)
    p.add_argument('--e2e-repeats', type=int, default=2)
    p.add_argument('--digits-n', type=int, default=100, help='digits graphs of the inprocess and torchrun parts')
    p.add_argument('--epochs', type=int, default=1,
                   help='epochs per measurement (inprocess bench cases, torchrun); steps of the speed cases')
    p.add_argument('--step-budget', type=float, default=5.0,
                   help='speed cases: no further step after this many seconds (at least one step)')
    p.add_argument('--busy-limit', type=float, default=900.0,
                   help='seconds after which a busy process stops by itself if this script did not stop it')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'))
    p.add_argument('--name', default='threads')
    p.add_argument('--others', default="other users' jobs shared the machine throughout",
                   help='what else ran on the machine, for the report')
    args = p.parse_args(argv)
    for flag, value in (('--repeats', args.repeats), ('--torchrun-repeats', args.torchrun_repeats),
                        ('--e2e-repeats', args.e2e_repeats), ('--digits-n', args.digits_n),
                        ('--epochs', args.epochs), ('--busy-limit', args.busy_limit),
                        ('--step-budget', args.step_budget)):
        if value < 1:
            p.error(f'{flag} must be >= 1, got {value}')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    settings = sorted({1, 2, cores})
    command = 'python benchmarks/threads.py ' + shlex.join(
        ['DATA' if i > 0 and argv[i - 1] == '--root' else a for i, a in enumerate(argv)])
    t_start = time.perf_counter()
    header = [f'- command: `{command}`',
              f'- machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({cores} available to the process); '
              f'thread counts measured: {", ".join(map(str, settings))} ({cores} = all)',
              f'- torch {torch.__version__} (ATen parallel backend: '
              f'{"OpenMP" if "OpenMP" in torch.__config__.parallel_info() else "other"}), torch_geometric '
              f'{torch_geometric.__version__}, pyg_ple {pyg_ple.__version__}, python {platform.python_version()}',
              f'- code: commit {commit()}',
              '- seeds: bench cases seed 0 (fold 0 of the 2-fold splits, run seed of fold 0); speed cases seed 3000 '
              '(as benchmarks/speed.py); the same data and initialisation at every thread count and load',
              f'- epochs per measurement: {args.epochs}; repeats: {args.repeats}; busy core: a pure-Python loop in '
              'a child process, started before and stopped after each busy block']
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(f"{row['part']:9s} {row['case']:18s} {row['model']:16s} {row['load']:4s} p{row['processes']} "
              f"t{row['threads']} r{row['repeat']}: {float(row['sec_per_epoch']):.4f} s/epoch "
              f"(load {row['loadavg_start']} -> {row['loadavg_end']})", flush=True)
        elapsed = time.perf_counter() - t_start
        loads = [float(r[k]) for r in rows for k in ('loadavg_start', 'loadavg_end')]
        write_report(args, rows, header + [
            f'- wall time so far: {elapsed:.0f} s; what else ran: {args.others} ("idle" means without this '
            'script\'s busy process); 1-minute load average during '
            f'the measurements {min(loads):.2f} to {max(loads):.2f} on {os.cpu_count()} CPUs'], out)

    with tempfile.TemporaryDirectory(prefix='pyg_ple_threads_') as tmp:
        tmp = Path(tmp)
        if 'inprocess' in args.parts:
            torch.set_num_threads(1)
            cases = [BenchCase('digits', ['--digits-n', str(args.digits_n), '--folds', '2', '--models',
                                          'gcn,laplacian'], tmp)]
            if args.tu:
                root = ['--root', args.root] if args.root else []
                cases.append(BenchCase(args.tu, ['--dataset', args.tu, '--folds', '2', '--models', 'gcn,laplacian',
                                                 '--patience', 'none', *root], tmp))
            cases += [SpeedCase(b, args.step_budget) for b in SPEED_BATCHES]
            run_inprocess(args, cases, settings, emit)
        if 'torchrun' in args.parts:
            run_torchrun(args, tmp, emit)
        if 'e2e' in args.parts:
            run_e2e(args, tmp, emit)
    print(f'wrote {out / args.name}.md and .csv in {time.perf_counter() - t_start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
