import os
import sys

import pytest
import torch

# The suite must stay small and fast on a shared machine.
torch.set_num_threads(1)

# Make ``tests/reference.py`` importable as ``reference`` however pytest is run.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)
    yield


@pytest.fixture(autouse=True)
def _fused_on_small_graphs(monkeypatch):
    """Test graphs are tiny: let ``fused=True`` take the kernel on them too, so both paths stay covered
    (``test_fused_size_threshold`` checks the size rule itself)."""
    monkeypatch.setattr('pyg_ple.nn.conv.FUSED_MIN_EDGES', 0)
