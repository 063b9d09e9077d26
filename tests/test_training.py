"""The shared training loop: atomic checkpoints, exact resume after SIGKILL, early stopping."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from pyg_ple.bench.io import atomic_write_json, atomic_write_text
from pyg_ple.bench.training import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(r'''
    import json, sys, time
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    sys.path.insert(0, sys.argv[4])
    from pyg_ple.bench.training import TrainConfig, fit

    torch.set_num_threads(1)
    ckpt, out, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
    g = torch.Generator().manual_seed(123)
    x = torch.randn(64, 5, generator=g)
    y = (x.sum(1) > 0).long()
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    def loss_fn(m, batch):
        if sleep:
            time.sleep(sleep)
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb)

    def evaluate(m):
        return {'val_loss': float(nn.functional.cross_entropy(m(x), y))}

    res = fit(model, loader, TrainConfig(epochs=8, seed=3, checkpoint_path=ckpt or None, resume=bool(ckpt),
                                         progress=False),
              loss_fn, evaluate, optimizer=opt, scheduler=sched)
    with open(out, 'w') as f:
        json.dump({'history': [{k: v for k, v in h.items() if k != 'time'} for h in res.history],
                   'best_epoch': res.best_epoch, 'resumed_from': res.resumed_from_epoch,
                   'final': [p.tolist() for p in model.parameters()]}, f)
''')


def _run(tmp_path, ckpt, out, sleep):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), str(ckpt), str(out), str(sleep), str(ROOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reproduces_loss_curve_exactly(tmp_path):
    # Uninterrupted reference run (no checkpoints).
    ref = _run(tmp_path, '', tmp_path / 'ref.json', 0.0)
    assert ref.wait(timeout=120) == 0, ref.stderr.read().decode()

    # Run with checkpoints, killed with SIGKILL in the middle of epoch 3 or later.
    ckpt = tmp_path / 'ckpt' / 'run.pt'
    proc = _run(tmp_path, ckpt, tmp_path / 'killed.json', 0.01)
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists():
            epoch = torch.load(ckpt, weights_only=True)['epoch']
            if epoch >= 2:
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    time.sleep(0.03)  # a few batches into the next epoch
    assert proc.poll() is None, 'training finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / 'killed.json').exists()
    killed_at = torch.load(ckpt, weights_only=True)['epoch']
    assert 2 <= killed_at < 8

    resumed = _run(tmp_path, ckpt, tmp_path / 'resumed.json', 0.0)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    a = json.loads((tmp_path / 'ref.json').read_text())
    b = json.loads((tmp_path / 'resumed.json').read_text())
    assert b['resumed_from'] == killed_at
    assert len(a['history']) == len(b['history']) == 8
    assert [h['train_loss'] for h in a['history']] == [h['train_loss'] for h in b['history']]
    assert a['history'] == b['history']
    assert a['final'] == b['final']
    assert a['best_epoch'] == b['best_epoch']


def _toy():
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(3, 2)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    loss_fn = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    return model, batches, loss_fn, x, y


def test_fit_history_best_state_and_early_stopping():
    model, batches, loss_fn, x, y = _toy()
    vals = iter([5.0, 4.0, 4.5, 4.6, 4.7, 1.0])
    res = fit(model, batches, TrainConfig(epochs=6, patience=3, progress=False), loss_fn,
              evaluate=lambda m: {'val_loss': next(vals)})
    assert res.epochs_run == 5 and res.stopped_early
    assert res.best_epoch == 2 and res.best_metrics['val_loss'] == 4.0
    assert set(res.best_state) == set(model.state_dict())
    assert all({'epoch', 'train_loss', 'lr', 'time', 'val_loss'} <= set(h) for h in res.history)


def test_fit_mode_max_and_missing_monitor_falls_back_to_train_loss():
    model, batches, loss_fn, x, y = _toy()
    vals = iter([0.5, 0.9, 0.7])
    res = fit(model, batches, TrainConfig(epochs=3, progress=False, lr=0.1), loss_fn,
              evaluate=lambda m: {'val_acc': next(vals)}, monitor='val_acc', mode='max')
    assert res.best_epoch == 2
    model, batches, loss_fn, x, y = _toy()
    res = fit(model, batches, TrainConfig(epochs=3, progress=False, lr=0.1), loss_fn)
    assert res.losses[-1] < res.losses[0]
    assert res.best_epoch == 3


def test_progress_bar_shows_the_chosen_metrics(capsys):
    model, batches, loss_fn, x, y = _toy()
    metrics = lambda m: {'val_loss': 0.5, 'val_acc': 0.75, 'val_score': -0.0002}  # noqa: E731
    fit(model, batches, TrainConfig(epochs=1, progress=True, progress_metrics=('val_acc', 'val_loss')), loss_fn,
        evaluate=metrics, monitor='val_score', mode='max')
    err = capsys.readouterr().err
    assert 'val_acc=0.7500' in err and 'val_loss=0.5000' in err and 'val_score' not in err
    fit(model, batches, TrainConfig(epochs=1, progress=True), loss_fn, evaluate=metrics, monitor='val_score',
        mode='max')
    assert 'val_score=-0.0002' in capsys.readouterr().err  # by default: the monitored metric


def test_resume_of_finished_run_does_not_train(tmp_path):
    model, batches, loss_fn, x, y = _toy()
    cfg = TrainConfig(epochs=3, progress=False, checkpoint_path=tmp_path / 'c.pt', resume=True)
    res1 = fit(model, batches, cfg, loss_fn, meta={'fold': 1})
    w = model.weight.detach().clone()
    model2, *_ = _toy()
    res2 = fit(model2, batches, cfg, loss_fn, meta={'fold': 1})
    assert res2.history == res1.history and res2.resumed_from_epoch == 3
    assert torch.equal(model2.weight, w)
    with pytest.raises(ValueError, match='written for'):
        fit(model2, batches, cfg, loss_fn, meta={'fold': 2})


def test_atomic_writes_leave_no_temp_files(tmp_path):
    p = atomic_write_json(tmp_path / 'sub' / 'r.json', {'a': torch.tensor(1.5), 'b': [1, 2]})
    assert json.loads(p.read_text()) == {'a': 1.5, 'b': [1, 2]}
    atomic_write_text(p, 'x')
    assert p.read_text() == 'x'
    assert [q.name for q in p.parent.iterdir()] == ['r.json']


def test_atomic_write_interrupted_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / 'r.txt'
    atomic_write_text(p, 'old')

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, 'new')
    assert p.read_text() == 'old'
    assert [q.name for q in tmp_path.iterdir()] == ['r.txt']
