"""Data-parallel training with 2 CPU processes (torchrun, gloo) equals single-process training on the global batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dist_common as dc

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={dc.WORLD}',
           str(HERE / 'dist_worker.py'), str(out)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def reference():
    return dc.reference_run()


@pytest.mark.slow
def test_parameters_match_single_process(ddp_run, reference):
    ref_model, _, _ = reference
    ref = ref_model.state_dict()
    for rank in range(dc.WORLD):
        params = torch.load(ddp_run / f'params_rank{rank}.pt')
        assert params.keys() == ref.keys()
        for k in ref:
            diff = float((params[k] - ref[k]).abs().max()) if ref[k].numel() else 0.0
            assert diff <= 1e-6, f'rank {rank}: {k} differs by {diff:.3g}'


@pytest.mark.slow
def test_metrics_match_single_process(ddp_run, reference):
    _, losses, metrics = reference
    history = json.loads((ddp_run / 'history.json').read_text())
    assert [h['epoch'] for h in history] == list(range(1, dc.EPOCHS + 1))
    for h, loss in zip(history, losses):
        assert abs(h['train_loss'] - loss) <= 1e-6, (h['train_loss'], loss)
    final = history[-1]
    for key, value in metrics.items():
        assert abs(final[key] - value) <= 1e-6, (key, final[key], value)


@pytest.mark.slow
def test_only_rank0_writes(ddp_run):
    assert (ddp_run / 'ckpt.pt').exists() and (ddp_run / 'history.json').exists()
    ckpt = torch.load(ddp_run / 'ckpt.pt', weights_only=True)
    assert ckpt['epoch'] == dc.EPOCHS and ckpt['finished']
    assert not list(ddp_run.glob('.*.tmp')), 'a temporary checkpoint file was left behind'
    # the checkpoint (written by rank 0) holds DDP's state, equal to both ranks' final parameters
    final = torch.load(ddp_run / 'params_rank1.pt')
    for k, v in final.items():
        assert torch.equal(ckpt['model']['module.' + k], v)


@pytest.mark.slow
def test_single_process_fallback(monkeypatch):
    from pyg_ple.bench import distributed as D
    for var in D.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed()
    assert info.world_size == 1 and info.rank == 0 and info.is_main and not info.distributed
    assert D.is_main_process() and D.get_world_size() == 1 and not D.is_distributed()
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, info) is model
    assert D.all_reduce_sums({'loss': 6.0, 'count': 4.0}) == {'count': 4.0, 'loss': 6.0}
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(RuntimeError, match='torchrun'):
        D.init_distributed()


@pytest.mark.slow
def test_torchrun_bench_end_to_end(tmp_path):
    """`torchrun --nproc_per_node=2 -m pyg_ple bench` trains with DDP, writes one set of results from rank 0, and
    saves models that load without DDP's 'module.' prefix."""
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'pyg_ple',
           'bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--models', 'gcn,laplacian', '--out',
           str(out), '--no-progress', '--threads', '1']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('results:') == 1  # only rank 0 reports
    rows = json.loads((out / 'results.json').read_text())['results']
    assert {r['model'] for r in rows} == {'gcn', 'laplacian'} and all(r['folds'] == 2 for r in rows)
    saved = torch.load(out / 'models' / 'laplacian_fold0.pt', weights_only=True)
    assert not any(k.startswith('module.') for k in saved['state_dict'])
    assert not list(out.glob('**/*.tmp'))


@pytest.mark.parametrize('wait_for_all,calls', [(True, ['barrier', 'destroy']), (False, ['destroy'])])
def test_cleanup_meets_at_a_barrier_before_leaving_unless_told_not_to(monkeypatch, wait_for_all, calls):
    """A normal end waits for every rank before tearing the group down (without it, a rank aborted in about one run
    in four above); after an error it leaves at once, since the other ranks may never reach a barrier."""
    import pyg_ple.bench.distributed as distributed
    seen = []

    class FakeDist:
        is_available = staticmethod(lambda: True)
        is_initialized = staticmethod(lambda: True)
        barrier = staticmethod(lambda: seen.append('barrier'))
        destroy_process_group = staticmethod(lambda: seen.append('destroy'))

    monkeypatch.setattr(distributed, 'dist', FakeDist)
    distributed.cleanup(wait_for_all=wait_for_all)
    assert seen == calls


@pytest.mark.slow
def test_bench_leaves_the_group_without_waiting_when_a_run_fails(monkeypatch, tmp_path):
    import pyg_ple.bench.cli as cli
    import pyg_ple.bench.distributed as distributed
    import pyg_ple.bench.protocol as protocol
    waits = []
    monkeypatch.setattr(distributed, 'cleanup', lambda wait_for_all=True: waits.append(wait_for_all))

    def failing(*args, **kwargs):
        raise RuntimeError('a fold failed')

    monkeypatch.setattr(protocol, 'run_benchmark', failing)
    with pytest.raises(RuntimeError, match='a fold failed'):
        cli.main(['bench', '--digits-n', '20', '--folds', '2', '--epochs', '1', '--models', 'gcn', '--no-progress',
                  '--out', str(tmp_path / 'run')])
    assert waits == [False]
