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
    monkeypatch.setattr('pyg_ple.nn.conv.LaplacianDiffusionConv.fused_min_edges', 0)


@pytest.fixture
def peak_bytes():
    """``peak_bytes(fn)``: the peak tensor memory that ``fn()`` allocates on the CPU, from the profiler's allocator
    events (every allocation and free, in time order; the maximum of their running sum)."""
    from torch.profiler import ProfilerActivity, profile

    def measure(fn) -> int:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == '[memory]')
        level = peak = 0
        for _, nbytes in events:
            level += nbytes
            peak = max(peak, level)
        return peak

    return measure
