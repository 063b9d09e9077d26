"""Candidate edge sets (``pyg_ple.edges``) against brute-force enumeration."""
import pytest
import torch

from pyg_ple.edges import (candidate_edge_index, full_edge_index,
                           knn_edge_index, native_plus_full_edge_index,
                           sequence_edge_index)


def as_set(edge_index):
    return {(int(j), int(i)) for j, i in edge_index.t().tolist()}


def brute_sequence(T, B, causal, window):
    out = set()
    for b in range(B):
        for i in range(T):
            for j in range(T):
                if causal and j > i:
                    continue
                if window is not None and abs(i - j) > window:
                    continue
                out.add((b * T + j, b * T + i))
    return out


@pytest.mark.parametrize('T,B', [(1, 1), (5, 1), (4, 3)])
@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('window', [None, 0, 1, 2, 10])
def test_sequence_edge_index_membership(T, B, causal, window):
    ei = sequence_edge_index(T, B, causal=causal, window=window)
    assert ei.dtype == torch.long and ei.dim() == 2 and ei.size(0) == 2
    expected = brute_sequence(T, B, causal, window)
    # No duplicates, exactly the allowed pairs.
    assert ei.size(1) == len(expected)
    assert as_set(ei) == expected


@pytest.mark.parametrize('T,B', [(6, 1), (6, 2)])
def test_sequence_edge_index_counts(T, B):
    assert sequence_edge_index(T, B).size(1) == B * T * T
    assert sequence_edge_index(T, B, causal=True).size(1) == B * T * (T + 1) // 2
    # window w, non-causal: each i sees min(i, w) + min(T-1-i, w) + 1 tokens.
    w = 2
    n = sum(min(i, w) + min(T - 1 - i, w) + 1 for i in range(T))
    assert sequence_edge_index(T, B, window=w).size(1) == B * n
    n_c = sum(min(i, w) + 1 for i in range(T))
    assert sequence_edge_index(T, B, causal=True, window=w).size(1) == B * n_c
    # Every token has its self-loop.
    ei = sequence_edge_index(T, B, causal=True, window=0)
    assert torch.equal(ei[0], ei[1])
    assert torch.equal(ei[1].sort().values, torch.arange(B * T))


def test_sequence_edge_index_direction():
    # causal: a target i only receives from sources j <= i.
    ei = sequence_edge_index(5, 2, causal=True)
    assert bool((ei[0] <= ei[1]).all())
    assert bool((ei[0] < ei[1]).any())
    # No edge crosses sequences.
    assert torch.equal(ei[0] // 5, ei[1] // 5)


def dense_sequence_reference(T, B, causal, window):
    """The earlier construction, from a dense T x T offset matrix (O(T^2) memory): the same edges in the same
    order (by target, then source)."""
    pos = torch.arange(T)
    allowed = torch.ones(T, T, dtype=torch.bool)  # allowed[i, j]
    offset = pos.view(-1, 1) - pos.view(1, -1)  # i - j
    if causal:
        allowed &= offset >= 0
    if window is not None:
        allowed &= offset.abs() <= window
    dst, src = allowed.nonzero(as_tuple=True)
    shift = (torch.arange(B) * T).repeat_interleave(src.numel())
    return torch.stack([src.repeat(B) + shift, dst.repeat(B) + shift])


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('window', [None, 0, 1, 2, 3, 6, 7, 50])
def test_sequence_edge_index_equals_dense_construction(causal, window):
    for T in range(0, 9):
        for B in (0, 1, 3):
            expected = dense_sequence_reference(T, B, causal, window)
            ei = sequence_edge_index(T, B, causal=causal, window=window)
            assert ei.dtype == torch.long and torch.equal(ei, expected), (T, B)


def test_sequence_edge_index_memory_grows_with_edges_not_tokens_squared(peak_bytes):
    """Peak memory of a windowed sequence graph stays within a few copies of its edges (a T x T matrix would be
    T / (2 w + 1) times larger)."""
    T, w = 4000, 2
    peak = peak_bytes(lambda: sequence_edge_index(T, window=w))
    ei = sequence_edge_index(T, window=w)
    edge_bytes = ei.numel() * ei.element_size()
    assert ei.size(1) == (2 * w + 1) * T - w * (w + 1)
    assert peak < 6 * edge_bytes, (peak, edge_bytes)


def test_sequence_edge_index_long_sequence_with_window():
    """T = 200,000 with window 2: about a million edges (a T x T matrix would need 40 GB)."""
    import time
    start = time.perf_counter()
    ei = sequence_edge_index(200_000, window=2, causal=False)
    assert time.perf_counter() - start < 10.0
    assert ei.shape == (2, 5 * 200_000 - 6)
    assert int((ei[1] - ei[0]).abs().max()) == 2
    assert bool((ei[1][1:] >= ei[1][:-1]).all())  # sorted by target
    head = dense_sequence_reference(20, 1, False, 2)
    assert torch.equal(ei[:, :head.size(1) - 7], head[:, :head.size(1) - 7])  # the first 18 targets match


def test_sequence_edge_index_empty():
    assert sequence_edge_index(0, 3).shape == (2, 0)
    assert sequence_edge_index(4, 0).shape == (2, 0)


@pytest.mark.parametrize('self_loops', [True, False])
def test_full_edge_index_batch(self_loops):
    batch = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    ei = full_edge_index(batch, self_loops=self_loops)
    expected = {(j, i) for i in range(8) for j in range(8)
                if batch[i] == batch[j] and (self_loops or i != j)}
    assert ei.size(1) == len(expected)
    assert as_set(ei) == expected


def test_full_edge_index_num_nodes():
    ei = full_edge_index(num_nodes=4)
    assert as_set(ei) == {(j, i) for i in range(4) for j in range(4)}
    assert full_edge_index(num_nodes=4, self_loops=False).size(1) == 12
    assert full_edge_index(num_nodes=0).size(1) == 0


def test_full_edge_index_with_empty_graph_in_batch():
    # Graph 1 has no nodes (indices skip from 0 to 2).
    batch = torch.tensor([0, 0, 2, 2, 2])
    ei = full_edge_index(batch)
    expected = {(j, i) for i in range(5) for j in range(5)
                if batch[i] == batch[j]}
    assert as_set(ei) == expected and ei.size(1) == 4 + 9


def test_native_plus_full():
    batch = torch.tensor([0, 0, 0, 1, 1])
    native = torch.tensor([[0, 1, 3, 1], [1, 2, 4, 2]])  # one duplicate
    ei, is_native = native_plus_full_edge_index(native, batch)
    assert is_native.dtype == torch.bool and is_native.shape == (ei.size(1), )
    expected = {(j, i) for i in range(5) for j in range(5)
                if batch[i] == batch[j]}
    assert as_set(ei) == expected and ei.size(1) == len(expected)
    flagged = {(int(j), int(i)) for (j, i), f in zip(ei.t().tolist(),
                                                   is_native.tolist()) if f}
    assert flagged == {(0, 1), (1, 2), (3, 4)}


def test_native_plus_full_int32_indices():
    batch = torch.tensor([0, 0, 0, 1, 1])
    native = torch.tensor([[0, 1, 3], [1, 2, 4]])
    ei, is_native = native_plus_full_edge_index(native.int(), batch)
    ei64, is_native64 = native_plus_full_edge_index(native, batch)
    assert ei.dtype == torch.long and torch.equal(ei, ei64) and torch.equal(is_native, is_native64)


def test_full_edge_index_num_nodes_must_match_batch():
    with pytest.raises(ValueError, match="'num_nodes'.*'batch'"):
        full_edge_index(torch.tensor([0, 0, 1]), num_nodes=4)
    with pytest.raises(ValueError, match="'num_nodes'"):
        full_edge_index(num_nodes=-1)
    assert full_edge_index(torch.tensor([0, 0, 1]), num_nodes=3).size(1) == 5


def test_native_plus_full_rejects_cross_graph_edges():
    batch = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match='edge_index'):
        native_plus_full_edge_index(torch.tensor([[0], [3]]), batch)


def brute_knn(x, k, batch, self_loops):
    n = x.size(0)
    d = torch.cdist(x.double(), x.double())
    out = set()
    for i in range(n):
        cands = [j for j in range(n)
                 if batch[j] == batch[i] and (self_loops or j != i)]
        cands.sort(key=lambda j: float(d[i, j]))
        for j in cands[:k]:
            out.add((j, i))
    return out


@pytest.mark.parametrize('k', [1, 3, 10])
@pytest.mark.parametrize('self_loops', [False, True])
def test_knn_against_brute_force(k, self_loops):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, 3, generator=g)
    batch = torch.tensor([0] * 6 + [1] * 2 + [2] * 3)
    ei = knn_edge_index(x, k, batch, self_loops=self_loops)
    expected = brute_knn(x, k, batch, self_loops)
    assert ei.size(1) == len(expected)
    assert as_set(ei) == expected


def test_knn_single_graph_direction():
    # 1-D points: nearest neighbour of 0.0 is 0.1 etc. Edge j -> i where j
    # is among the neighbours of i.
    x = torch.tensor([[0.0], [0.1], [5.0], [5.3]])
    ei = knn_edge_index(x, 1)
    assert as_set(ei) == {(1, 0), (0, 1), (3, 2), (2, 3)}
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert as_set(knn_edge_index(x, 1)) == {(1, 0), (0, 1), (1, 2)}


def test_knn_empty():
    assert knn_edge_index(torch.randn(0, 3), 2).shape == (2, 0)


def test_candidate_edge_index():
    batch = torch.tensor([0, 0, 1, 1, 1])
    native = torch.tensor([[0, 2], [1, 3]])
    ei, flag = candidate_edge_index('native', edge_index=native)
    assert torch.equal(ei, native) and flag is None
    ei, flag = candidate_edge_index('full', batch=batch)
    assert as_set(ei) == as_set(full_edge_index(batch)) and flag is None
    ei, flag = candidate_edge_index('native+full', edge_index=native,
                                    batch=batch)
    assert flag is not None and int(flag.sum()) == 2
    x = torch.randn(5, 2)
    ei, flag = candidate_edge_index('knn', x=x, k=1, batch=batch)
    assert as_set(ei) == brute_knn(x, 1, batch, False) and flag is None
    with pytest.raises(ValueError, match='kind'):
        candidate_edge_index('bogus', edge_index=native)


def test_candidate_native_checks_indices_and_returns_int64():
    native = torch.tensor([[0, 2], [1, 3]])
    ei, _ = candidate_edge_index('native', edge_index=native.int(), num_nodes=4)
    assert ei.dtype == torch.long and torch.equal(ei, native)
    with pytest.raises(ValueError, match="'edge_index'"):
        candidate_edge_index('native', edge_index=native, num_nodes=3)  # node 3 of 3
    with pytest.raises(ValueError, match="'edge_index'"):
        candidate_edge_index('native', edge_index=native, batch=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="'edge_index'"):
        candidate_edge_index('native', edge_index=torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match="'edge_index'"):
        candidate_edge_index('native', edge_index=native.float(), num_nodes=4)


def test_native_flag_as_edge_feature():
    """The documented use: ``is_native.float()`` as a ``[E]`` edge feature of a layer with ``edge_dim=1``."""
    from pyg_ple import LaplacianDiffusionConv
    batch = torch.tensor([0, 0, 0, 1, 1])
    ei, is_native = native_plus_full_edge_index(torch.tensor([[0, 1, 3], [1, 2, 4]]), batch)
    conv = LaplacianDiffusionConv(4, 2, heads=2, edge_dim=1)
    x = torch.randn(5, 4)
    out = conv(x, ei, edge_attr=is_native.float())
    torch.testing.assert_close(out, conv(x, ei, edge_attr=is_native.float().view(-1, 1)))
    assert not torch.allclose(out, conv(x, ei, edge_attr=torch.zeros(ei.size(1))))


def test_full_pair_position_finds_every_edge_in_the_all_pairs_list():
    from pyg_ple.edges import full_pair_position
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    edge_index = torch.tensor([[0, 2, 1, 4, 3, 8, 5, 5, 6], [1, 0, 1, 3, 4, 5, 8, 8, 6]])  # a repeat and self-loops
    full = full_edge_index(batch)
    pos = full_pair_position(full, edge_index, batch.numel())
    assert pos.dtype == torch.long and torch.equal(full[:, pos], edge_index)
    listed = {(int(s), int(t)): k for k, (s, t) in enumerate(full.t())}
    assert pos.tolist() == [listed[(int(s), int(t))] for s, t in edge_index.t()]
    # int32 indices give the same positions
    assert torch.equal(full_pair_position(full, edge_index.int(), batch.numel()), pos)
