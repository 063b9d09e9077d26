"""Every run behind the long-range tables (Peptides-func, HIV): one ``pyg-ple bench`` run per arm, resumable, a few
at a time.

    python benchmarks/long_range_runs.py --dataset peptides-func --root DATA --jobs 2
    python benchmarks/long_range_runs.py --dataset hiv --root DATA --arms gps,ple-gps
    python benchmarks/long_range_runs.py --dataset peptides-func --root DATA --budget field --device cuda --jobs 1
    python benchmarks/long_range_runs.py --dataset hiv --root DATA --dry-run      # the commands, one per line
    python benchmarks/long_range_runs.py --dataset peptides-func --root DATA --arms gps --seed-jobs 0,1

Each arm runs into ``OUT/<dataset>/<arm>`` with ``--resume --checkpoint-every 1`` and appends its output to
``OUT/<dataset>/<arm>.log``. Stopped (Ctrl-C, a closed session) and started again with the same arguments, every arm
continues from its last finished epoch; a finished arm loads its data, finds every seed done and stops (about 20 s).
``benchmarks/long_range.py OUT/<dataset>/*/`` then writes the tables. The budgets are those of
``benchmarks/long_range_plan.md``: ``cpu`` is the one every model got on 2 CPU cores; ``field`` is the field's scale
(500k parameters, 200 epochs, 4 seeds), for a GPU. Started a second time while the first is running, its arms stop
at once: one process at a time writes a run folder.
``--seed-jobs 0,1`` runs an arm's seeds apart, each its own job (``--seed S --final-runs 1`` into
``OUT/<dataset>/<arm>-seed<S>``), so that they train side by side or in different sessions; ``long_range.py`` pools
them into one row. Seed job 0 trains the seed every arm trains first.
The exit status is 0 when every arm finished, 1 when one failed (its log says why), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

# (folder, model, options), in the order they start: the cheap message-passing baselines first, GPS last.
ARMS = [
    ('gcn', 'gcn', []),
    ('gin', 'gin', []),
    ('gatedgcn', 'gatedgcn', []),
    ('laplacian-native+full', 'laplacian', ['--attention', 'native+full']),
    ('laplacian-native', 'laplacian', ['--attention', 'native']),
    ('transformer-native+full', 'transformer', ['--attention', 'native+full']),
    ('ple-gps', 'ple-gps', []),
    ('gps', 'gps', []),
]
ARM_NAMES = [name for name, _, _ in ARMS]

# What differs between the budgets; the rest of the recipe (4 layers, 4 heads, batches of 64, Adam at 1e-3, cosine
# schedule with 5 warm-up epochs, RWSE 8) is every budget's, in arm_command.
BUDGETS = {
    'cpu': dict(params=100000, epochs=20, final_runs=3),
    'field': dict(params=500000, epochs=200, final_runs=4),
}
# LRGB and GraphGPS read Peptides-func out with mean pooling; HIV keeps the harness's mean + sum readout.
DATASET_OPTIONS = {'peptides-func': ['--pool', 'mean'], 'hiv': []}
TABLE_NAMES = {'peptides-func': 'peptides_func', 'hiv': 'molhiv'}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr, exit status 2
        self.exit(2, f'{self.prog}: error: {" ".join(message.splitlines())}\n')


def _arm_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in ARM_NAMES]
    if not names or unknown or len(set(names)) < len(names):
        problem = 'names no arm' if not names else (f'has unknown arm(s) {", ".join(map(repr, unknown))}' if unknown
                                                    else 'names an arm twice')
        raise argparse.ArgumentTypeError(f'{text!r} {problem}; choose from {", ".join(ARM_NAMES)}')
    return [n for n in ARM_NAMES if n in names]  # always in the planned order


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(n) for n in text.split(',')]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of distinct seeds >= 0')
    return seeds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog='long_range_runs.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', required=True, choices=sorted(DATASET_OPTIONS))
    p.add_argument('--root', help='the data folder (default: $PYG_PLE_DATA)')
    p.add_argument('--budget', choices=sorted(BUDGETS), default='cpu')
    p.add_argument('--arms', type=_arm_list, default=ARM_NAMES, help=f'comma-separated (default: all: '
                   f'{",".join(ARM_NAMES)})')
    p.add_argument('--jobs', type=_positive, default=2, help='arms running at once (default: 2)')
    p.add_argument('--seed-jobs', type=_seed_list, metavar='S,...', help="run each arm's seeds apart: one job "
                   'per --seed S with --final-runs 1 (folders <arm>-seed<S>)')
    p.add_argument('--threads', type=_positive, default=1, help='torch threads per arm (default: 1)')
    p.add_argument('--device', help='passed to pyg-ple bench (its default: cpu)')
    p.add_argument('--out', type=Path, default=Path('runs'), help='parent of the run folders (default: runs)')
    p.add_argument('--dry-run', action='store_true', help='print the commands and run nothing')
    return p


def arm_command(args: argparse.Namespace, arm: str, seed: int | None = None) -> list[str]:
    """The ``pyg-ple bench`` arguments of one arm (without the program name); with ``seed``, its job of that one
    seed (see ``--seed-jobs``)."""
    _, model, options = next(a for a in ARMS if a[0] == arm)
    budget = BUDGETS[args.budget]
    runs = ['--final-runs', str(budget['final_runs'])] if seed is None else ['--final-runs', '1', '--seed', str(seed)]
    root = ['--root', args.root] if args.root else []
    device = ['--device', args.device] if args.device else []
    return ['bench', '--dataset', args.dataset, *root, '--models', model, *options,
            '--params', str(budget['params']), '--layers', '4', '--heads', '4', '--epochs', str(budget['epochs']),
            *runs, '--batch-size', '64', '--lr', '0.001', '--schedule', 'cosine',
            '--warmup-epochs', '5', *DATASET_OPTIONS[args.dataset], '--pe', 'rw', '--pe-dim', '8', *device,
            '--threads', str(args.threads), '--checkpoint-every', '1', '--resume',
            '--out', str(args.out / args.dataset / job_name(arm, seed))]


def job_name(arm: str, seed: int | None = None) -> str:
    """The folder (and log) name of an arm's job: the arm, or ``<arm>-seed<S>`` for its job of seed ``S``."""
    return arm if seed is None else f'{arm}-seed{seed}'


def run_all(jobs: Sequence[tuple[str, list[str], Path]], parallel: int, poll: float = 1.0) -> dict[str, int]:
    """Run ``(name, argv, log)`` jobs, at most ``parallel`` at once, in the order given; each appends its stdout and
    stderr to its log. Returns every job's exit status. On Ctrl-C the running jobs are stopped (they resume later)
    and ``KeyboardInterrupt`` is raised again."""
    waiting, running, status = list(jobs), {}, {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                name, argv, log = waiting.pop(0)
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, 'a') as f:
                    f.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")}: {shlex.join(argv)}\n')
                    f.flush()
                    running[name] = (subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                                      stdin=subprocess.DEVNULL), time.time())
                print(f'started {name} (log {log})', flush=True)
            for name, (proc, start) in list(running.items()):
                if proc.poll() is not None:
                    status[name] = proc.returncode
                    del running[name]
                    outcome = 'finished' if proc.returncode == 0 else f'failed with exit status {proc.returncode}'
                    print(f'{name} {outcome} after {(time.time() - start) / 60:.1f} min', flush=True)
            time.sleep(poll)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the jobs too (one process group); a SIGINT sent to this process alone does not.
        for proc, _ in running.values():
            for signum, grace in ((None, 5), (signal.SIGINT, 60), (signal.SIGKILL, None)):
                if signum is not None:
                    proc.send_signal(signum)
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        raise
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    program = [sys.executable, '-m', 'pyg_ple']
    jobs = [(job_name(arm, seed), program + arm_command(args, arm, seed),
             args.out / args.dataset / f'{job_name(arm, seed)}.log')
            for arm in args.arms for seed in (args.seed_jobs or [None])]
    if args.dry_run:
        for _, command, _ in jobs:
            print(shlex.join(['pyg-ple', *command[len(program):]]))
        return 0
    # The package of this tree, installed or not.
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    try:
        status = run_all(jobs, args.jobs)
    except KeyboardInterrupt:
        print('interrupted: the stopped arms continue where they were when this command runs again', file=sys.stderr)
        return 130
    failed = [name for name, code in status.items() if code != 0]
    if failed:
        print(f'failed: {", ".join(failed)} (see their logs)', file=sys.stderr)
        return 1
    print(f'every arm finished; tables: python benchmarks/long_range.py {args.out / args.dataset}/*/ '
          f'--name {TABLE_NAMES[args.dataset]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
