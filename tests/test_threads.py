"""The intra-op thread count of ``pyg-ple bench`` (pyg_ple.bench.threads), and that the library layers leave torch's
thread settings alone. No timing here: benchmarks/results/threads.md holds the measurements behind the rule."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyg_ple
from pyg_ple.bench.cli import main
from pyg_ple.bench.threads import MAX_DEFAULT_THREADS, default_threads, local_processes

TINY = ['bench', '--digits-n', '20', '--folds', '2', '--epochs', '1', '--models', 'gcn', '--hidden', '8',
        '--layers', '1', '--heads', '2', '--no-progress', '--no-save-models']


@pytest.fixture
def threads_restored():
    """Start from 3 intra-op threads (neither torch's default here nor the bench's), restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_the_measured_default_is_one_thread_per_process():
    """benchmarks/results/threads.md: one thread was never slower than more on graph batches, with or without a busy
    core; a change of the rule must come with a new measurement."""
    assert MAX_DEFAULT_THREADS == 1
    for cores in (1, 2, 16, 128):
        assert default_threads(cores=cores, processes=1) == 1


@pytest.mark.parametrize('cores', [1, 2, 3, 8, 64])
@pytest.mark.parametrize('processes', [1, 2, 4, 8])
def test_processes_times_threads_fit_the_cores(monkeypatch, cores, processes):
    monkeypatch.setattr('pyg_ple.bench.threads.MAX_DEFAULT_THREADS', 1000)  # the share of the cores alone
    threads = default_threads(cores=cores, processes=processes)
    assert threads >= 1
    assert processes * threads <= max(cores, processes)  # more processes than cores: still one thread each
    assert threads == max(1, cores // processes)


def test_torchrun_processes_come_from_local_world_size(monkeypatch):
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    assert local_processes() == 1
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4')
    assert local_processes() == 4
    monkeypatch.setattr('pyg_ple.bench.threads.MAX_DEFAULT_THREADS', 1000)
    assert default_threads(cores=8) == 2
    for bad in ('x', '0'):
        monkeypatch.setenv('LOCAL_WORLD_SIZE', bad)
        with pytest.raises(ValueError, match=f"LOCAL_WORLD_SIZE must be an integer >= 1, got '{bad}'"):
            local_processes()
    with pytest.raises(ValueError, match='cores and processes must be >= 1'):
        default_threads(cores=0, processes=1)


def test_bench_uses_the_default_on_a_small_dataset_and_says_so(tmp_path, capsys, threads_restored):
    assert main(TINY + ['--out', str(tmp_path / 'run')]) == 0
    assert torch.get_num_threads() == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith('pyg-ple bench: digits, 20 graphs')
    assert first.endswith('; threads 1 (default; --threads N to change)')


def test_threads_option_overrides_the_default(tmp_path, capsys, threads_restored):
    assert main(TINY + ['--threads', '2', '--out', str(tmp_path / 'run')]) == 0
    assert torch.get_num_threads() == 2
    assert capsys.readouterr().err.splitlines()[0].endswith('; threads 2 (--threads)')


def test_bad_local_world_size_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('LOCAL_WORLD_SIZE', 'two')
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--out', str(tmp_path / 'run')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == ("pyg-ple bench: error: LOCAL_WORLD_SIZE must be an integer >= 1, "
                                               "got 'two'")


LIBRARY_RUN = r"""
import importlib, pkgutil, sys
import torch
torch.set_num_threads(3)
calls = []
for name in ('set_num_threads', 'set_num_interop_threads'):
    setattr(torch, name, lambda *a, _name=name: calls.append(_name))
import pyg_ple
for package in ('pyg_ple.nn', 'pyg_ple.ops'):
    for m in pkgutil.iter_modules(importlib.import_module(package).__path__, package + '.'):
        importlib.import_module(m.name)
from torch_geometric.data import Batch, Data
from pyg_ple import LaplacianDiffusionConv
from pyg_ple.bench.models import build_model
ring = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
graph = Data(x=torch.randn(6, 4), edge_index=torch.cat([ring, ring.flip(0)], 1), y=torch.tensor([1]))
LaplacianDiffusionConv(4, 2, heads=2)(graph.x, graph.edge_index).sum().backward()
batch = Batch.from_data_list([graph, graph])
for model in ('laplacian', 'transformer', 'gps', 'laplacian-tokens'):
    build_model(model, 4, 2, hidden=8, num_layers=1, heads=2, pe_dim=0)(batch).sum().backward()
print(calls, torch.get_num_threads())
"""


@pytest.mark.slow  # a fresh interpreter
def test_library_layers_leave_torch_threads_alone():
    """Importing every module of pyg_ple.nn and pyg_ple.ops and training steps of the layer and the bench's models
    neither call torch's thread setters nor change the thread count (in a fresh process: imports run once)."""
    proc = subprocess.run([sys.executable, '-c', LIBRARY_RUN], capture_output=True, text=True, timeout=300,
                          cwd=Path(pyg_ple.__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split('\n')[-2] == '[] 3'


def test_only_the_command_line_sets_torch_threads():
    """No module of the library (the package outside pyg_ple.bench, the command line's) names torch's thread setters:
    a call that the run above would not reach shows up here."""
    root = Path(pyg_ple.__file__).parent
    setter = re.compile(r'set_num_(interop_)?threads')
    found = sorted(str(p.relative_to(root)) for p in root.rglob('*.py') if setter.search(p.read_text()))
    assert 'bench/cli.py' in found
    assert [f for f in found if not f.startswith('bench/')] == []


def test_the_default_applies_to_fixed_split_datasets_too(tmp_path, monkeypatch, threads_restored):
    """cmd_bench sets the threads before it hands a fixed-split dataset (peptides-func, hiv) to _bench_fixed_split."""
    import pyg_ple.bench.cli as cli
    seen = []
    monkeypatch.setattr(cli, '_bench_fixed_split', lambda args: seen.append(torch.get_num_threads()) or 0)
    assert main(['bench', '--dataset', 'peptides-func', '--out', str(tmp_path / 'run')]) == 0
    assert main(['bench', '--dataset', 'hiv', '--threads', '2', '--out', str(tmp_path / 'run')]) == 0
    assert seen == [1, 2]


def test_threads_below_one_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--threads', '0', '--out', str(tmp_path / 'run')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == 'pyg-ple bench: error: --threads must be an integer >= 1, got 0'
