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
