"""benchmarks/long_range_runs.py: the commands of every long-range arm, and running them a few at a time."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pyg_ple.bench.cli import build_parser as bench_parser, validate_bench_args

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'long_range_runs.py'


def _load_script():
    spec = importlib.util.spec_from_file_location('long_range_runs', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = _load_script()


def _script(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _config(command: str):
    """The run configuration ``pyg-ple bench`` builds from a command line (no data needed)."""
    argv = shlex.split(command)
    assert argv[:2] == ['pyg-ple', 'bench'], command
    args = bench_parser().parse_args(argv[1:])
    return validate_bench_args(args), args.out


@pytest.mark.parametrize('dataset,table', [('peptides-func', 'peptides_func'), ('hiv', 'molhiv')])
def test_the_commands_are_those_the_results_files_record(dataset, table):
    """Every arm the committed table ran is rerun by this script with the same configuration and folder, so that
    ``--resume`` continues it rather than refusing it."""
    ours = {}
    for extra in ([], ['--seed-jobs', '0,1,2']):  # the arms, and their seeds run apart
        proc = _script('--dataset', dataset, '--root', 'DATA', '--dry-run', *extra)
        assert proc.returncode == 0, proc.stderr
        for line in proc.stdout.splitlines():
            cfg, out = _config(line)
            ours[out] = cfg
    assert len(ours) == 4 * len(runs.ARMS)
    recorded = re.findall(r'^ {4}(pyg-ple bench .*)$', (REPO / 'benchmarks' / 'results' / f'{table}.md').read_text(),
                          flags=re.M)
    assert len(recorded) >= 3
    for command in recorded:
        cfg, out = _config(command)
        assert out in ours, f'{out} is not one of the script\'s arms'
        assert ours[out] == cfg, out


def test_the_field_budget_and_the_options_passed_through():
    proc = _script('--dataset', 'hiv', '--budget', 'field', '--device', 'cpu', '--threads', '2', '--arms',
                   'gps,gcn', '--out', 'elsewhere', '--dry-run')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [_config(line)[1] for line in lines] == ['elsewhere/hiv/gcn', 'elsewhere/hiv/gps']  # the planned order
    cfg, _ = _config(lines[1])
    assert (cfg.epochs, cfg.final_runs, cfg.models) == (200, 4, ['gps'])
    argv = shlex.split(lines[1])
    assert argv[argv.index('--params') + 1] == '500000' and argv[argv.index('--threads') + 1] == '2'
    assert '--root' not in argv  # left to $PYG_PLE_DATA


def test_seed_jobs_run_the_seeds_of_an_arm_apart():
    """One job per seed, each one seed (--final-runs 1) with its own --seed into its own folder, and otherwise the
    arm's configuration: seed job 0 trains the arm's first seed."""
    from pyg_ple.bench.settings import run_seed_of
    whole = _script('--dataset', 'peptides-func', '--arms', 'gps', '--dry-run')
    apart = _script('--dataset', 'peptides-func', '--arms', 'gcn,gps', '--seed-jobs', '0,3', '--dry-run')
    assert whole.returncode == 0 and apart.returncode == 0, apart.stderr
    arm, _ = _config(whole.stdout.strip())
    jobs = [_config(line) for line in apart.stdout.splitlines()]
    assert [out for _, out in jobs] == ['runs/peptides-func/gcn-seed0', 'runs/peptides-func/gcn-seed3',
                                        'runs/peptides-func/gps-seed0', 'runs/peptides-func/gps-seed3']
    for cfg, _ in jobs[2:]:
        assert cfg.final_runs == 1 and cfg.comparable() == {**arm.comparable(), 'seed': cfg.seed}
    assert [cfg.seed for cfg, _ in jobs[2:]] == [0, 3]
    assert run_seed_of(jobs[2][0].seed, 0) == run_seed_of(arm.seed, 0)


@pytest.mark.parametrize('args,flag', [
    (['--seed-jobs', '0,0'], '--seed-jobs'), (['--seed-jobs', '-1'], '--seed-jobs'),
    (['--seed-jobs', ''], '--seed-jobs'),
    (['--arms', 'gcn,nope'], '--arms'), (['--arms', 'gcn,gcn'], '--arms'), (['--arms', ','], '--arms'),
    (['--jobs', '0'], '--jobs'), (['--threads', 'x'], '--threads'), (['--budget', 'gpu'], '--budget')])
def test_bad_arguments_are_one_line_and_status_2(args, flag):
    proc = _script('--dataset', 'hiv', '--dry-run', *args)
    assert proc.returncode == 2 and proc.stdout == ''
    assert len(proc.stderr.strip().splitlines()) == 1 and flag in proc.stderr


def _job(tmp_path, name, seconds, code=0):
    """A job that records when it ran and exits with ``code``."""
    body = (f'import time, pathlib; t = time.time(); time.sleep({seconds}); '
            f'pathlib.Path({str(tmp_path / name)!r}).write_text(f"{{t}} {{time.time()}}"); '
            f'print("output of {name}"); raise SystemExit({code})')
    return name, [sys.executable, '-c', body], tmp_path / 'logs' / f'{name}.log'


def test_run_all_runs_every_job_at_most_parallel_at_once_and_keeps_the_logs(tmp_path):
    jobs = [_job(tmp_path, f'j{i}', 0.6) for i in range(4)] + [_job(tmp_path, 'bad', 0.1, code=3)]
    (tmp_path / 'logs').mkdir()
    jobs[0][2].write_text('an earlier run\n')
    status = runs.run_all(jobs, parallel=2, poll=0.05)
    assert status == {'j0': 0, 'j1': 0, 'j2': 0, 'j3': 0, 'bad': 3}
    spans = [tuple(map(float, (tmp_path / name).read_text().split())) for name, _, _ in jobs]
    for t, _ in spans:  # at the moment a job started, at most two were running (itself included)
        assert sum(1 for s, e in spans if s <= t < e) <= 2
    assert max(s for s, _ in spans) >= min(e for _, e in spans)  # and not all at once: some waited
    log = jobs[0][2].read_text()
    assert log.startswith('an earlier run\n') and 'output of j0' in log  # appended, not overwritten


def test_a_failed_arm_makes_the_exit_status_1(tmp_path):
    """A real ``pyg-ple bench`` run that cannot start (no data under --root) is reported as failed."""
    proc = _script('--dataset', 'hiv', '--root', str(tmp_path / 'no-data'), '--arms', 'gcn', '--jobs', '1',
                   '--out', str(tmp_path / 'runs'), timeout=300,
                   env={**os.environ, 'PYG_PLE_CACHE': str(tmp_path / 'cache')})
    assert proc.returncode == 1, proc.stderr
    assert 'failed: gcn' in proc.stderr
    log = (tmp_path / 'runs' / 'hiv' / 'gcn.log').read_text()
    assert 'error' in log.lower() and '--root' in log


@pytest.mark.slow
@pytest.mark.parametrize('to_group', [True, False], ids=['ctrl-c', 'kill-int'])
def test_an_interrupt_stops_every_job_once(tmp_path, to_group):
    """Ctrl-C reaches the runner and its jobs (one process group): the jobs are not interrupted a second time while
    they save their state. ``kill -INT`` of the runner alone: it passes the interrupt on. Either way the jobs end,
    each interrupted once, and the runner exits with status 130."""
    import signal
    import time
    job = (f'import pathlib, signal, sys, time\nlog = pathlib.Path({str(tmp_path / "sigint")!r})\n'
           'def seen(*_):\n    log.write_text(log.read_text() + "x")\n'
           'signal.signal(signal.SIGINT, seen)\nlog.write_text("")\n'
           'while not log.read_text():\n    time.sleep(0.05)\n'
           'time.sleep(1.0)\n')  # a second interrupt in this second would be counted
    runner = (f'import sys; sys.path.insert(0, {str(REPO / "benchmarks")!r}); import long_range_runs as r\n'
              f'try:\n    r.run_all([("job", [sys.executable, "-c", {job!r}], r.Path({str(tmp_path / "job.log")!r}))],'
              ' 1, poll=0.05)\nexcept KeyboardInterrupt:\n    sys.exit(130)\n')
    proc = subprocess.Popen([sys.executable, '-c', runner], start_new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / 'sigint').exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert (tmp_path / 'sigint').read_text() == 'x'
