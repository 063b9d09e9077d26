"""Model files and training checkpoints are read with ``torch.load(weights_only=True)``: a file whose unpickling would
run code is refused before the code runs, and what pyg-ple writes loads under that restriction."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_ple.bench import protocol
from pyg_ple.bench.cli import main
from pyg_ple.bench.io import RunFileError, load_torch_file
from pyg_ple.bench.training import TrainConfig, fit, get_rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]
TINY = ['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--models', 'gcn', '--no-progress',
        '--threads', '1', '--checkpoint-every', '1']


class Payload:
    """Unpickling this opens (creates) ``marker``: the stand-in for code in a file from someone else."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), 'w')


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({'name': 'laplacian', 'in_channels': 17, 'num_classes': 10, 'hparams': {}, 'version': 2,
                'state_dict': {'w': torch.zeros(1)}, 'meta': Payload(marker)}, path)
    return path


def test_the_crafted_file_does_run_code_when_fully_unpickled(tmp_path):
    marker = tmp_path / 'ran'
    torch.load(_crafted(tmp_path / 'evil.pt', marker), weights_only=False)
    assert marker.exists()  # so its absence below means the loader refused it


@pytest.mark.slow
def test_graph_refuses_a_file_that_would_run_code(tmp_path):
    marker = tmp_path / 'ran'
    evil = _crafted(tmp_path / 'laplacian_fold0.pt', marker)
    proc = subprocess.run([sys.executable, '-m', 'pyg_ple', 'graph', str(evil), '--out', str(tmp_path / 'g')],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.startswith(f'pyg-ple graph: error: {evil} is not a model file written by pyg-ple bench: '
                                  'torch.load(weights_only=True) refused it (Unsupported global: GLOBAL io.open')
    assert not marker.exists()
    assert not (tmp_path / 'g').exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'run'
    real = protocol._train_one
    calls = {'n': 0}

    def interrupted(*a, **k):  # fold 1 is interrupted after its checkpoint was entered in the manifest
        calls['n'] += 1
        if calls['n'] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(protocol, '_train_one', interrupted)
    assert main(TINY + ['--out', str(out)]) == 130
    monkeypatch.setattr(protocol, '_train_one', real)
    marker = tmp_path / 'ran'
    (out / 'checkpoints' / 'gcn').mkdir(parents=True, exist_ok=True)
    _crafted(out / 'checkpoints' / 'gcn' / 'fold1_cfg0.pt', marker)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(TINY + ['--out', str(out), '--resume'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith('pyg-ple bench: digits')  # the plan, then the error
    assert err[1].startswith('pyg-ple bench: error: ') and 'fold1_cfg0.pt is not a training checkpoint' in err[1]
    assert 'weights_only=True' in err[1]
    assert not marker.exists()
    assert list(json.loads((out / 'state.json').read_text())['runs']) == ['gcn/0']


def test_fit_refuses_a_checkpoint_that_would_run_code(tmp_path):
    marker = tmp_path / 'ran'
    evil = _crafted(tmp_path / 'ckpt.pt', marker)
    model = torch.nn.Linear(2, 2)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    with pytest.raises(RunFileError, match='is not a training checkpoint written by pyg_ple.bench.training.fit'):
        fit(model, batches, TrainConfig(epochs=2, checkpoint_path=evil, resume=True, progress=False),
            lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]))
    assert not marker.exists()


def test_load_torch_file_names_what_was_expected(tmp_path):
    (tmp_path / 'r.json').write_text('{"a": 1}')
    with pytest.raises(RunFileError, match='r.json is not a model file: torch.load'):
        load_torch_file(tmp_path / 'r.json', 'a model file')
    with pytest.raises(RunFileError, match='is a folder, not a model file'):
        load_torch_file(tmp_path, 'a model file')
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / 'missing.pt', 'a model file')
    (tmp_path / 'cut.pt').write_bytes(b'PK\x03\x04')
    with pytest.raises(RunFileError, match='cut.pt is not a model file'):
        load_torch_file(tmp_path / 'cut.pt', 'a model file')


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, shuffle=True, generator=gen)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached gaussian in numpy's state
    torch.save(get_rng_state(loader), tmp_path / 'rng.pt')
    def draws():
        return (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist(),
                torch.rand(2, generator=gen).tolist())

    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9), gen.manual_seed(9)
    assert draws() != expected
    set_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True), loader)
    assert draws() == expected


def test_saved_models_and_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    out = tmp_path / 'run'
    assert main(TINY + ['--models', 'laplacian', '--hidden', '8', '--heads', '2', '--out', str(out)]) == 0
    record = torch.load(out / 'models' / 'laplacian_fold1.pt', weights_only=True)
    assert record['name'] == 'laplacian' and record['fold'] == 1 and record['hparams']['hidden'] == 8
    assert protocol.load_model_file(out / 'models' / 'laplacian_fold1.pt')['test_idx'] == record['test_idx']
    model = torch.nn.Linear(2, 2)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    cfg = TrainConfig(epochs=2, checkpoint_path=tmp_path / 'c.pt', progress=False)
    fit(model, batches, cfg, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), meta={'fold': 0})
    ckpt = torch.load(tmp_path / 'c.pt', weights_only=True)
    assert ckpt['epoch'] == 2 and ckpt['finished'] and ckpt['meta'] == {'fold': 0}
