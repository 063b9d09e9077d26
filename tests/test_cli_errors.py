"""Every usage error of the real ``pyg-ple`` command (run as ``python -m pyg_ple`` in a subprocess) exits with status 2
and prints exactly one line ``pyg-ple <command>: error: ...`` on stderr that names the bad value; no traceback, and
nothing is trained or written first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pyg_ple.bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--dataset', 'digits', '--digits-n', '40', '--epochs', '1', '--folds', '2', '--models', 'gcn', '--no-progress',
        '--threads', '1']
# A device string this machine cannot use: 'cuda' without CUDA, else an ordinal past the last GPU.
NO_DEVICE = 'cuda' if not torch.cuda.is_available() else f'cuda:{torch.cuda.device_count()}'

# (id, argv after 'pyg-ple', text the error line must contain). {run} is a finished run folder (laplacian and gcn,
# 2 layers), {file} an existing plain file, {foreign} a non-empty folder pyg-ple did not write, {new} a path that does
# not exist. CASES run the real command in a subprocess; MORE_CASES call main() in this process (each subprocess pays
# the ~2 s import of torch and PyG).
CASES = [
    ('epochs-0', ['bench', *TINY, '--epochs', '0', '--out', '{new}'], '--epochs must be an integer >= 1, got 0'),
    ('epochs-negative', ['bench', *TINY, '--epochs', '-3', '--out', '{new}'], '--epochs must be an integer >= 1'),
    ('folds-1', ['bench', *TINY, '--folds', '1', '--out', '{new}'], '--folds must be an integer >= 2, got 1'),
    ('folds-200', ['bench', *TINY, '--folds', '200', '--out', '{new}'], 'smallest class of digits'),
    ('out-is-file', ['bench', *TINY, '--out', '{file}'], 'is a file, not a folder'),
    ('grid-list-of-numbers', ['bench', *TINY, '--grid', '[1,2]', '--out', '{new}'], 'got 1'),
    ('grid-empty-values', ['bench', *TINY, '--grid', '{"lr": []}', '--out', '{new}'], "'lr' has an empty list"),
    ('grid-not-a-number', ['bench', *TINY, '--grid', '{"lr": "abc"}', '--out', '{new}'], "'abc'"),
    ('grid-missing-file', ['bench', *TINY, '--grid', '{new}.json', '--out', '{new}'], 'nor an existing file'),
    ('grid-misspelled-key', ['bench', *TINY, '--grid', '{"dropuot": [0, 0.5]}', '--out', '{new}'],
     "unknown grid key 'dropuot'; accepted keys: "),
    ('heads-not-dividing-hidden', ['bench', *TINY, '--models', 'laplacian', '--heads', '3', '--hidden', '32', '--out',
                                   '{new}'], "'hidden' (32) must be a multiple of 'heads' (3)"),
    ('device-unavailable', ['bench', *TINY, '--device', NO_DEVICE, '--out', '{new}'], f'--device {NO_DEVICE}'),
    ('lr-negative', ['bench', *TINY, '--lr', '-1', '--out', '{new}'], '--lr must be a number > 0, got -1.0'),
    ('lr-0', ['bench', *TINY, '--lr', '0', '--out', '{new}'], '--lr must be a number > 0, got 0.0'),
    ('batch-size-0', ['bench', *TINY, '--batch-size', '0', '--out', '{new}'], '--batch-size must be an integer >= 1'),
    ('hidden-0', ['bench', *TINY, '--hidden', '0', '--out', '{new}'], "'hidden' must be positive (got 0)"),
    ('layers-0', ['bench', *TINY, '--layers', '0', '--out', '{new}'], "'num_layers' must be positive (got 0)"),
    ('models-empty', ['bench', *TINY, '--models', '', '--out', '{new}'], "--models '' names no model; choose from gcn"),
    ('resume-other-settings', ['bench', '--dataset', 'digits', '--digits-n', '40', '--folds', '2', '--models',
                               'laplacian', '--no-progress', '--hidden', '8', '--heads', '2', '--epochs', '2',
                               '--resume', '--out', '{run}'], 'epochs: 1 in the run, 2 now'),
    ('graph-results-json', ['graph', '{run}/results.json'], 'is not a model file written by pyg-ple bench'),
    ('graph-folder', ['graph', '{run}'], 'is a folder, not a model file'),
    ('graph-missing-file', ['graph', '{new}.pt'], 'no such file'),
    ('graph-layer-out-of-range', ['graph', '{run}/models/laplacian_fold0.pt', '--layer', '2'],
     '--layer 2 is out of range: the model has 2 layers'),
]
MORE_CASES = [
    ('out-foreign', ['bench', *TINY, '--out', '{foreign}'], 'not written by pyg-ple'),
    ('out-earlier-run', ['bench', *TINY, '--out', '{run}'],
     'continue it with --resume, or replace it with --overwrite'),
    ('resume-and-overwrite', ['bench', *TINY, '--resume', '--overwrite', '--out', '{run}'], 'not allowed with'),
    ('resume-foreign', ['bench', *TINY, '--resume', '--out', '{foreign}'], 'not written by pyg-ple'),
    ('grid-bad-json', ['bench', *TINY, '--grid', '{"lr": [1e-3,', '--out', '{new}'], 'not valid JSON'),
    ('grid-same-config-twice', ['bench', *TINY, '--grid', '{"lr": [0.1, 0.1]}', '--out', '{new}'], 'twice'),
    ('grid-bad-model-value', ['bench', *TINY, '--grid', '{"pool": ["avg"]}', '--out', '{new}'], "got 'avg'"),
    ('hidden-not-a-width', ['bench', *TINY, '--hidden', '16,x', '--out', '{new}'],
     "argument --hidden: invalid value: '16,x' (a width, or widths separated by commas"),
    ('hidden-width-twice', ['bench', *TINY, '--hidden', '16,8,16', '--out', '{new}'], '(widths >= 1, each once)'),
    ('hidden-width-0', ['bench', *TINY, '--hidden', '16,0', '--out', '{new}'], "invalid value: '16,0'"),
    ('models-unknown', ['bench', *TINY, '--models', 'gcn,nope', '--out', '{new}'], "unknown model(s) 'nope'"),
    ('models-twice', ['bench', *TINY, '--models', 'gcn,gcn', '--out', '{new}'], 'names a model twice'),
    ('epochs-not-an-int', ['bench', *TINY, '--epochs', 'abc', '--out', '{new}'], "invalid int value: 'abc'"),
    ('seed-negative', ['bench', *TINY, '--seed', '-1', '--out', '{new}'], '--seed must be an integer >= 0'),
    ('pe-dim-0', ['bench', *TINY, '--pe', 'rw', '--pe-dim', '0', '--out', '{new}'], '--pe-dim must be'),
    ('digits-n-too-small', ['bench', *TINY, '--digits-n', '5', '--out', '{new}'], 'digits_n must be 10 to'),
    ('degree-on-digits', ['bench', *TINY, '--degree', '--out', '{new}'], 'apply to TU datasets'),
    ('edge-features-on-digits', ['bench', *TINY, '--edge-features', '--out', '{new}'],
     '--edge-features applies to TU datasets with edge labels'),
    ('edge-features-with-full-attention', ['bench', *TINY, '--dataset', 'MUTAG', '--edge-features', '--attention',
                                           'full', '--out', '{new}'],
     '--edge-features needs --attention native or native+full'),
    ('edge-values-on-digits', ['bench', *TINY, '--edge-values', '--out', '{new}'],
     "--edge-values adds edge features to the transformers' values: it needs them"),
    ('edge-values-without-edge-features', ['bench', *TINY, '--dataset', 'MUTAG', '--edge-values',
                                           '--no-edge-features', '--out', '{new}'], 'it needs them'),
    ('readout-layers-with-token-models', ['bench', *TINY, '--models', 'gcn,laplacian-tokens', '--readout-layers',
                                          'all', '--out', '{new}'],
     '--readout-layers all does not apply to the token models'),
    ('readout-layers-unknown', ['bench', *TINY, '--readout-layers', 'every', '--out', '{new}'],
     "invalid choice: 'every'"),
    ('optimizer-unknown', ['bench', *TINY, '--optimizer', 'sgd', '--out', '{new}'], "invalid choice: 'sgd'"),
    ('schedule-unknown', ['bench', *TINY, '--schedule', 'linear', '--out', '{new}'], "invalid choice: 'linear'"),
    ('warmup-negative', ['bench', *TINY, '--warmup-epochs', '-1', '--out', '{new}'],
     '--warmup-epochs must be an integer >= 0, got -1'),
    ('decay-every-0', ['bench', *TINY, '--decay-every', '0', '--out', '{new}'],
     '--decay-every must be an integer >= 1'),
    ('decay-gamma-0', ['bench', *TINY, '--decay-gamma', '0', '--out', '{new}'], '--decay-gamma must be a number in'),
    ('final-runs-0', ['bench', *TINY, '--final-runs', '0', '--out', '{new}'],
     '--final-runs must be an integer >= 1, got 0'),
    ('inner-splits-0', ['bench', *TINY, '--inner-splits', '0', '--out', '{new}'],
     '--inner-splits must be an integer >= 1, got 0'),
    ('inner-splits-with-final-runs', ['bench', *TINY, '--inner-splits', '2', '--final-runs', '3', '--out', '{new}'],
     '--inner-splits and --final-runs exclude each other'),
    ('decay-gamma-nan', ['bench', *TINY, '--decay-gamma', 'nan', '--out', '{new}'], '--decay-gamma must be a number'),
    ('grad-clip-0', ['bench', *TINY, '--grad-clip', '0', '--out', '{new}'], '--grad-clip must be a number > 0'),
    ('grad-clip-inf', ['bench', *TINY, '--grad-clip', 'inf', '--out', '{new}'], '--grad-clip must be a number > 0'),
    ('grid-bad-schedule', ['bench', *TINY, '--grid', '{"schedule": ["linear"]}', '--out', '{new}'], "'linear'"),
    ('norm-unknown', ['bench', *TINY, '--norm', 'group', '--out', '{new}'], "invalid choice: 'group'"),
    ('grid-bad-norm', ['bench', *TINY, '--models', 'laplacian', '--grid', '{"norm": ["group"]}', '--out', '{new}'],
     "'norm' must be one of"),
    ('pool-unknown', ['bench', *TINY, '--pool', 'median', '--out', '{new}'], "invalid choice: 'median'"),
    ('graph-gnn-model', ['graph', '{gcn_model}'], "'gcn' model, which has no attention graph"),
    ('graph-out-foreign', ['graph', '{run}/models/laplacian_fold0.pt', '--out', '{foreign}'], 'not written by pyg-ple'),
    ('graph-head-out-of-range', ['graph', '{run}/models/laplacian_fold0.pt', '--head', '2', '--out', '{new}'],
     '--head 2 is out of range: the model has 2 heads'),
    ('graph-index-out-of-range', ['graph', '{run}/models/laplacian_fold0.pt', '--index', '40', '--out', '{new}'],
     '--index 40 is out of range: digits has 40 graphs'),
]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'pyg_ple', *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """A finished run (laplacian and gcn, 2 layers, 2 heads), a plain file, a folder of someone else's files."""
    base = tmp_path_factory.mktemp('cli_errors')
    run = base / 'run'
    assert main(['bench', '--dataset', 'digits', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--models',
                 'laplacian,gcn', '--no-progress', '--hidden', '8', '--heads', '2', '--out', str(run)]) == 0
    (base / 'a_file.txt').write_text('not a folder')
    (base / 'foreign').mkdir()
    (base / 'foreign' / 'mine.py').write_text('code')
    return base, run, _snapshot(base)


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _fill(argv: list[str], base: Path, run: Path, case_id: str) -> tuple[list[str], Path]:
    new = base / f'new_{case_id}'
    values = {'run': run, 'file': base / 'a_file.txt', 'foreign': base / 'foreign', 'new': new,
              'gcn_model': run / 'models' / 'gcn_fold0.pt'}
    for key, value in values.items():
        argv = [a.replace(f'{{{key}}}', str(value)) for a in argv]
    return argv, new


@pytest.fixture(scope='module')
def outcomes(folders):
    """Every case of CASES run once as a subprocess, four at a time: {id: (completed process, its new path)}."""
    base, run, _ = folders
    filled = {case_id: _fill(argv, base, run, case_id) for case_id, argv, _ in CASES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(filled, pool.map(lambda item: _run(item[0]), filled.values())))
    return {case_id: (done[case_id], filled[case_id][1]) for case_id in filled}


def _check_one_line(stderr: str, command: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 'Traceback' not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f'pyg-ple {command}: error: '), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize('case_id, argv, expected', CASES, ids=[c[0] for c in CASES])
def test_real_command_reports_usage_error_in_one_line_with_status_2(outcomes, case_id, argv, expected):
    proc, new = outcomes[case_id]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    _check_one_line(proc.stderr, argv[0], expected)
    assert proc.stdout == ''
    assert not new.exists()  # refused before anything was written


@pytest.mark.parametrize('case_id, argv, expected', MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_usage_error_is_one_line_with_status_2(folders, capsys, case_id, argv, expected):
    base, run, _ = folders
    argv, new = _fill(argv, base, run, case_id)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    _check_one_line(err, argv[0], expected)
    assert out == ''
    assert not new.exists()


@pytest.mark.slow
def test_refused_commands_left_every_file_as_it_was(folders, outcomes):
    base, run, snapshot = folders
    for case_id, argv, _ in MORE_CASES:
        with pytest.raises(SystemExit):
            main(_fill(argv, base, run, case_id)[0])
    assert _snapshot(base) == snapshot
    assert json.loads((run / 'state.json').read_text())['config']['epochs'] == 1
