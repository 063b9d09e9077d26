"""AttentionAdjacency / AttentionGraph: the learned graph is explicit and is
exactly the graph the conv diffuses over."""
import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter

import reference as ref
from pyg_ple import (AttentionAdjacency, AttentionGraph,
                     LaplacianDiffusionConv)


def batched_graph(sizes=(4, 6, 3), seed=0):
    eis, off = [], 0
    for k, n in enumerate(sizes):
        eis.append(ref.random_graph(n, 2 * n, seed=seed + k) + off)
        off += n
    batch = torch.cat([torch.full((n, ), k) for k, n in enumerate(sizes)])
    return torch.cat(eis, 1), batch


def row_sums(graph):
    return scatter(graph.weight, graph.edge_index[1], 0, graph.num_nodes,
                   reduce='sum')


@pytest.mark.parametrize('add_self_loops', [True, False])
def test_adjacency_row_stochastic(add_self_loops):
    n, h = 8, 3
    adj = AttentionAdjacency(5, 4, heads=h, add_self_loops=add_self_loops)
    x = torch.randn(n, 5)
    ei = ref.random_graph(n - 1, 15, seed=2)  # node n-1: no incoming edge
    g = adj(x, ei)
    assert isinstance(g, AttentionGraph)
    assert g.weight.shape == (g.edge_index.size(1), h)
    assert g.num_nodes == n
    assert bool((g.weight >= 0).all())
    s = row_sums(g)
    has_in = torch.zeros(n, dtype=torch.bool)
    has_in[g.edge_index[1]] = True
    assert bool(has_in.all()) == add_self_loops
    torch.testing.assert_close(s[has_in], torch.ones(int(has_in.sum()), h))
    assert torch.equal(s[~has_in], torch.zeros(int((~has_in).sum()), h))


def test_adjacency_matches_reference():
    n, h, c = 7, 2, 3
    adj = AttentionAdjacency(4, c, heads=h).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    ei = ref.random_graph(n, 14, seed=5)
    g = adj(x, ei)
    q = ref.linear(adj.lin_query, x).view(n, h, c)
    k = ref.linear(adj.lin_key, x).view(n, h, c)
    mask = ref.edge_mask(ei, n, add_self_loops=True)
    a = ref.attention_matrices(q, k, mask)
    torch.testing.assert_close(g.to_dense()[0], a)


@pytest.mark.parametrize('lap', [None, 0, 1])
@pytest.mark.parametrize('edge_dim', [None, 2])
def test_graph_is_what_the_conv_diffuses(lap, edge_dim):
    """conv output == per-head A V (plain) / eta (A V - V) (Laplacian) with A
    taken from the graph object, through to_dense()."""
    n, h, c = 7, 3, 2
    conv = LaplacianDiffusionConv(4, c, heads=h, laplacian_heads=lap,
                                  edge_dim=edge_dim, step_size=0.8).double()
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    x = torch.randn(n, 4, dtype=torch.float64)
    ei = ref.random_graph(n, 15, seed=1)
    ea = None if edge_dim is None else torch.randn(ei.size(1), edge_dim,
                                                   dtype=torch.float64)
    graph = conv.attention_graph(x, ei, edge_attr=ea)
    graph2 = conv.attention(x, ei, edge_attr=ea)
    torch.testing.assert_close(graph.to_dense(), graph2.to_dense())
    a = graph.to_dense()[0]  # [H, N, N]
    v = ref.linear(conv.lin_value, x).view(n, h, c)
    mask = a.sum(0) > 0
    out = ref.diffuse(a, v, ref.laplacian_head_mask(h, lap), conv.eta, mask)
    expected = ref.combine_heads(out, True, conv.bias)
    torch.testing.assert_close(conv(x, ei, edge_attr=ea), expected)


def test_return_attention_weights_equal_graph():
    conv = LaplacianDiffusionConv(4, 2, heads=2)
    x = torch.randn(6, 4)
    ei = ref.random_graph(6, 12, seed=3)
    _, (ei_out, alpha) = conv(x, ei, return_attention_weights=True)
    g = conv.attention_graph(x, ei)
    assert torch.equal(ei_out, g.edge_index)
    torch.testing.assert_close(alpha, g.weight)


def test_to_dense_batch_shapes_and_content():
    ei, batch = batched_graph()
    n = batch.numel()
    adj = AttentionAdjacency(3, 2, heads=2)
    x = torch.randn(n, 3)
    g = adj(x, ei, batch=batch)
    dense = g.to_dense()
    assert dense.shape == (3, 2, 6, 6)
    # Rows of real nodes sum to one; padding rows and columns are zero.
    starts = [0, 4, 10]
    for b, size in enumerate([4, 6, 3]):
        block = dense[b, :, :size, :size]
        torch.testing.assert_close(block.sum(-1), torch.ones(2, size))
        assert dense[b, :, size:].abs().sum() == 0
        assert dense[b, :, :, size:].abs().sum() == 0
        # Content equals the graph of that batch element alone.
        s = starts[b]
        keep = (ei[1] >= s) & (ei[1] < s + size)
        alone = adj(x[s:s + size], ei[:, keep] - s)
        torch.testing.assert_close(block, alone.to_dense()[0])


def test_to_dense_single_graph_entries():
    ei = torch.tensor([[0, 2, 1], [1, 1, 2]])
    w = torch.tensor([[0.25, 1.0], [0.75, 0.0], [1.0, 0.5]])
    g = AttentionGraph(ei, w, 3)
    d = g.to_dense()
    assert d.shape == (1, 2, 3, 3)
    expected0 = torch.tensor([[0, 0, 0], [0.25, 0, 0.75], [0, 1.0, 0]])
    torch.testing.assert_close(d[0, 0], expected0)
    assert d[0, 1, 1, 0] == 1.0 and d[0, 1, 2, 1] == 0.5


def test_topk_keeps_k_per_node():
    n, h = 9, 2
    adj = AttentionAdjacency(4, 3, heads=h)
    x = torch.randn(n, 4)
    ei = ref.random_graph(n, 40, seed=4)
    g = adj(x, ei)
    indeg = torch.bincount(g.edge_index[1], minlength=n)
    orig = {(j, i): w for (j, i), w in zip(g.edge_index.t().tolist(),
                                           g.weight.tolist())}
    for k in [1, 2, 3]:
        for head in [None, 0, 1]:
            t = g.topk(k, head=head)
            cnt = torch.bincount(t.edge_index[1], minlength=n)
            assert torch.equal(cnt, indeg.clamp(max=k)), (k, head)
            kept = set(map(tuple, t.edge_index.t().tolist()))
            assert kept <= set(orig)
            # Kept edges are the strongest of their target.
            score = (lambda w: sum(w) / h) if head is None else \
                (lambda w, hd=head: w[hd])
            for i in range(n):
                inc = [(score(w), e) for e, w in orig.items() if e[1] == i]
                inc.sort(reverse=True)
                assert {e for _, e in inc[:k]} == \
                    {e for e in kept if e[1] == i}
            # Weights are carried over unchanged (no renormalisation).
            for (j, i), w in zip(t.edge_index.t().tolist(), t.weight.tolist()):
                assert w == pytest.approx(orig[(j, i)])


def test_topk_normalize():
    adj = AttentionAdjacency(4, 3, heads=2)
    g = adj(torch.randn(6, 4), ref.random_graph(6, 20, seed=1))
    t = g.topk(2, normalize=True)
    torch.testing.assert_close(row_sums(t), torch.ones(6, 2))


def test_threshold():
    ei = torch.tensor([[0, 1, 2, 0], [1, 1, 1, 2]])
    w = torch.tensor([[0.1, 0.9], [0.3, 0.05], [0.6, 0.05], [1.0, 1.0]])
    g = AttentionGraph(ei, w, 3)
    t = g.threshold(0.5, head=0)
    assert set(map(tuple, t.edge_index.t().tolist())) == {(2, 1), (0, 2)}
    t = g.threshold(0.5, head=1)
    assert set(map(tuple, t.edge_index.t().tolist())) == {(0, 1), (0, 2)}
    t = g.threshold(0.4)  # mean over heads: 0.5, 0.175, 0.325, 1.0
    assert set(map(tuple, t.edge_index.t().tolist())) == {(0, 1), (0, 2)}
    assert t.weight.shape == (2, 2)
    assert g.threshold(2.0).edge_index.size(1) == 0


def test_laplacian_rows_sum_to_zero():
    n, h = 7, 2
    adj = AttentionAdjacency(4, 3, heads=h)
    x = torch.randn(n, 4)
    g = adj(x, ref.random_graph(n, 18, seed=9))
    lei, lw = g.laplacian()
    assert lw.shape == (lei.size(1), h)
    s = scatter(lw, lei[1], 0, n, reduce='sum')
    torch.testing.assert_close(s, torch.zeros(n, h), atol=1e-6, rtol=0)
    # Dense: L = I - A.
    dense_l = torch.zeros(h, n, n)
    dense_l[:, lei[1], lei[0]] = lw.t()
    torch.testing.assert_close(dense_l,
                               torch.eye(n) - g.to_dense()[0])


def test_laplacian_zero_row_for_node_without_incoming_edge():
    ei = torch.tensor([[0, 1], [1, 0]])
    g = AttentionGraph(ei, torch.ones(2, 1), 3)
    lei, lw = g.laplacian()
    assert not bool((lei[1] == 2).any())  # no entry in row 2


@pytest.mark.parametrize('heads', [1, 2])
def test_to_networkx_round_trip(heads):
    n = 6
    adj = AttentionAdjacency(4, 3, heads=heads)
    g = adj(torch.randn(n, 4), ref.random_graph(n, 14, seed=2))
    G = g.to_networkx()
    assert isinstance(G, nx.DiGraph)
    assert G.number_of_nodes() == n
    assert G.number_of_edges() == g.edge_index.size(1)
    dense = g.to_dense()[0].detach().numpy()
    for hd in range(heads):
        m = nx.to_numpy_array(G, nodelist=range(n), weight=f'head{hd}').T
        np.testing.assert_allclose(m, dense[hd], rtol=1e-6, atol=1e-7)
    m = nx.to_numpy_array(G, nodelist=range(n), weight='weight').T
    np.testing.assert_allclose(m, dense.mean(0), rtol=1e-6, atol=1e-7)
    G1 = g.to_networkx(head=heads - 1)
    m = nx.to_numpy_array(G1, nodelist=range(n)).T
    np.testing.assert_allclose(m, dense[heads - 1], rtol=1e-6, atol=1e-7)
    # networkx sees the row-stochastic structure: in-weights sum to one.
    for i in range(n):
        assert G.in_degree(i, weight='head0') == pytest.approx(1.0, rel=1e-5)


def test_to_data():
    ei, batch = batched_graph()
    adj = AttentionAdjacency(3, 2, heads=2)
    g = adj(torch.randn(batch.numel(), 3), ei, batch=batch)
    data = g.to_data()
    assert isinstance(data, Data)
    assert data.num_nodes == batch.numel()
    assert torch.equal(data.edge_index, g.edge_index)
    assert torch.equal(data.edge_attr, g.weight)
    assert torch.equal(data.batch, batch)
    data.validate(raise_on_error=True)


def test_adjacency_gradients_flow():
    adj = AttentionAdjacency(4, 3, heads=2, edge_dim=2)
    x = torch.randn(5, 4, requires_grad=True)
    ei = ref.random_graph(5, 10, seed=0)
    g = adj(x, ei, edge_attr=torch.randn(10, 2))
    (g.weight * torch.randn_like(g.weight)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert adj.lin_edge.weight.grad.abs().sum() > 0


def test_duplicate_edges_sum_in_dense_and_networkx():
    ei = torch.tensor([[0, 0, 2, 1], [1, 1, 1, 2]])
    w = torch.tensor([[0.2, 0.1], [0.3, 0.4], [0.5, 0.5], [1.0, 1.0]])
    g = AttentionGraph(ei, w, 3)
    dense = g.to_dense()[0]
    assert dense[0, 1, 0] == pytest.approx(0.5)
    assert dense[1, 1, 0] == pytest.approx(0.5)
    G = g.to_networkx()
    assert G.number_of_edges() == 3
    for hd in range(2):
        m = nx.to_numpy_array(G, nodelist=range(3), weight=f'head{hd}').T
        np.testing.assert_allclose(m, dense[hd].numpy(), rtol=1e-6)
    m = nx.to_numpy_array(G, nodelist=range(3)).T
    np.testing.assert_allclose(m, dense.mean(0).numpy(), rtol=1e-6)


def test_int32_indices_give_int64_graph_and_correct_gradients():
    """AttentionAdjacency and AttentionGraph take int32 indices; the softmax and the renormalised top-k
    differentiate correctly (gradcheck in float64)."""
    adj = AttentionAdjacency(3, 2, heads=2, add_self_loops=False).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 4], [1, 2, 3, 0, 2, 1, 2]])
    graph = adj(x, ei.int())
    assert graph.edge_index.dtype == torch.long and torch.equal(graph.edge_index, ei)
    torch.testing.assert_close(graph.weight, adj(x, ei).weight)
    assert torch.autograd.gradcheck(lambda x: adj(x, ei.int()).weight, (x,))
    weight = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    assert AttentionGraph(ei.int(), weight, 5).edge_index.dtype == torch.long
    assert torch.autograd.gradcheck(
        lambda w: AttentionGraph(ei.int(), w, 5).topk(1, normalize=True).weight, (weight,))
    assert torch.autograd.gradcheck(
        lambda w: AttentionGraph(ei.int(), w, 5).threshold(0.2, normalize=True).weight, (weight,))


# --------------------------------------------------------------------------------------------------------------------
# AttentionGraph.from_dense and the graph measures of pyg_ple.analysis
# --------------------------------------------------------------------------------------------------------------------

def dense_attention(B=3, H=2, T=5, seed=0, causal=False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, H, T, T, generator=g, dtype=torch.float64)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float('-inf'))
    return scores.softmax(-1)


def test_from_dense_edges_weights_and_padding():
    att = dense_attention()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]])
    g = AttentionGraph.from_dense(att, mask)
    B, H, T, _ = att.shape
    assert g.num_nodes == B * T and g.heads == H
    assert torch.equal(g.batch, torch.arange(B).repeat_interleave(T))
    # Every pair of real tokens of one sequence, once, weight for weight; nothing else.
    expected = {(b * T + j, b * T + i): att[b, :, i, j].tolist()
                for b in range(B) for i in range(T) for j in range(T) if mask[b, i] and mask[b, j]}
    got = {(j, i): w for (j, i), w in zip(g.edge_index.t().tolist(), g.weight.tolist())}
    assert g.num_edges == len(got) == len(expected) == 25 + 9 + 9
    assert got == expected
    padded = (mask.view(-1) == 0).nonzero().view(-1)
    assert not bool(torch.isin(g.edge_index, padded).any())
    d = g.to_dense()
    real = mask.bool()
    torch.testing.assert_close(d, att * (real[:, None, :, None] & real[:, None, None, :]), rtol=0, atol=0)


def test_from_dense_causal_pattern_and_drop_zeros():
    att = dense_attention(B=2, H=3, T=6, causal=True)
    g = AttentionGraph.from_dense(att)
    j, i = g.edge_index % 6
    assert bool((j <= i).all()) and g.num_edges == 2 * 21
    full = AttentionGraph.from_dense(att, drop_zeros=False)
    assert full.num_edges == 2 * 36
    # A pair that is zero in one head only keeps its edge (with the zero).
    att2 = att.clone()
    att2[0, 1, 3, 2] = 0.0
    g2 = AttentionGraph.from_dense(att2)
    assert g2.num_edges == g.num_edges
    e = ((g2.edge_index[0] == 2) & (g2.edge_index[1] == 3)).nonzero().item()
    assert g2.weight[e].tolist() == [att[0, 0, 3, 2].item(), 0.0, att[0, 2, 3, 2].item()]


def test_from_dense_single_sequence_and_mask_forms():
    att = dense_attention(B=1, H=2, T=4)[0]  # [H, T, T]
    g = AttentionGraph.from_dense(att)
    assert g.batch is None and g.num_nodes == 4 and g.num_edges == 16
    torch.testing.assert_close(g.to_dense()[0], att, rtol=0, atol=0)
    m = AttentionGraph.from_dense(att, torch.tensor([True, True, False, True]))
    assert m.num_edges == 9
    for mask in (torch.tensor([[1., 1., 0., 1.]]), torch.tensor([[1, 1, 0, 1]])):
        assert torch.equal(AttentionGraph.from_dense(att, mask).edge_index, m.edge_index)


def test_from_dense_carries_gradients():
    scores = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    g = AttentionGraph.from_dense(scores.softmax(-1))
    g.weight.sum().backward()
    assert scores.grad is not None


@pytest.mark.parametrize('att, mask, error, match', [
    (torch.ones(2, 3, 3, 3, dtype=torch.long), None, TypeError, "'att' must be a floating-point tensor"),
    ([[0.5, 0.5]], None, TypeError, "'att' must be a floating-point tensor"),
    (torch.ones(3, 3), None, ValueError, r"'att' must have shape \[B, H, T, T\]"),
    (torch.ones(2, 3, 3, 4), None, ValueError, r"'att' must have shape"),
    (torch.ones(2, 1, 3, 3), torch.ones(2, 4), ValueError, r"'mask' must have shape \[B, T\] = \[2, 3\]"),
    (torch.ones(2, 1, 3, 3), torch.full((2, 3), 2), ValueError, "'mask' must hold only 0/1"),
    (torch.ones(2, 1, 3, 3), [[1, 1, 1]] * 2, TypeError, "'mask' must be a tensor"),
])
def test_from_dense_rejects_bad_input(att, mask, error, match):
    with pytest.raises(error, match=match):
        AttentionGraph.from_dense(att, mask)


def test_tokens_travel_with_the_graph():
    att = dense_attention(B=2, H=2, T=3)
    tokens = ['a', 'b', 'c', 'd', 'e', 'f']
    g = AttentionGraph.from_dense(att, torch.tensor([[1, 1, 1], [1, 1, 0]]), tokens=tokens)
    assert g.topk(1).tokens == tokens and g.threshold(0.1).tokens == tokens
    assert g.graph(1).tokens == ['d', 'e', 'f']
    G = g.to_networkx()
    assert [G.nodes[n]['token'] for n in range(6)] == tokens
    with pytest.raises(ValueError, match="'tokens' must hold one string per node"):
        AttentionGraph.from_dense(att, tokens=tokens[:5])


def analysis_graph(seed=0):
    """A batch of three sparse, row-stochastic graphs with duplicate edges and a node without incoming edges."""
    from pyg_ple.analysis import attention_entropy  # noqa: F401 (the module imports)
    ei, batch = batched_graph(seed=seed)
    loops = torch.arange(batch.numel()).expand(2, -1)
    ei = torch.cat([ei, loops], dim=1)  # every node a query, ...
    keep = ei[1] != 5  # ... except node 5 (in graph 1), which has no incoming edge
    ei = torch.cat([ei[:, keep], ei[:, :3]], dim=1)  # and three duplicates
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(ei.size(1), 3, generator=gen, dtype=torch.float64) + 0.05
    w = w / scatter(w, ei[1], 0, batch.numel(), reduce='sum')[ei[1]]
    return AttentionGraph(ei, w, batch.numel(), batch)


def dense_rows(graph):
    """``[H, N, N]`` numpy attention matrices via networkx (an independent path from edge_index to matrices)."""
    G = graph.to_networkx()
    return np.stack([nx.to_numpy_array(G, nodelist=range(graph.num_nodes), weight=f'head{h}').T
                     for h in range(graph.heads)])


def test_attention_entropy_matches_scipy():
    from scipy.stats import entropy

    from pyg_ple.analysis import attention_entropy
    g = analysis_graph()
    A = dense_rows(g)
    got = attention_entropy(g).numpy()
    assert got.shape == (g.num_nodes, g.heads)
    for i in range(g.num_nodes):
        for h in range(g.heads):
            if A[h, i].sum() == 0:
                assert np.isnan(got[i, h]) and i == 5
            else:
                assert got[i, h] == pytest.approx(entropy(A[h, i]), rel=1e-12, abs=1e-12)
    # Uniform attention over n keys: log n; one key: 0.
    uniform = AttentionGraph.from_dense(torch.full((1, 4, 4), 0.25))
    torch.testing.assert_close(attention_entropy(uniform), torch.full((4, 1), float(np.log(4))))
    assert torch.equal(attention_entropy(AttentionGraph.from_dense(torch.eye(3)[None])), torch.zeros(3, 1))


def test_attention_distance_matches_numpy():
    from pyg_ple.analysis import attention_distance
    att = dense_attention(B=2, H=2, T=5, seed=3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    g = AttentionGraph.from_dense(att, mask)
    got = attention_distance(g)
    a = att.numpy()
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(2):
            rows = a[b, h, :n, :n] / a[b, h, :n, :n].sum(1, keepdims=True)
            ref_d = (rows * np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])).sum(1)
            np.testing.assert_allclose(got[b * 5:b * 5 + n, h].numpy(), ref_d, rtol=1e-12)
    assert bool(got[8:, :].isnan().all()) and not bool(got[:8].isnan().any())
    # Positions in the plane: Euclidean distance.
    g1 = analysis_graph()
    pos = torch.randn(g1.num_nodes, 2, dtype=torch.float64)
    A, P = dense_rows(g1), pos.numpy()
    D = np.linalg.norm(P[:, None] - P[None, :], axis=-1)
    ref_d = (A * D[None]).sum(-1).T
    ref_d[5] = np.nan
    np.testing.assert_allclose(attention_distance(g1, pos).numpy(), ref_d, rtol=1e-12)
    with pytest.raises(ValueError, match="'pos' must have shape"):
        attention_distance(g1, pos[:3])


def test_laplacian_spectrum_and_gap_match_numpy():
    from pyg_ple.analysis import laplacian_spectrum, spectral_gap
    g = analysis_graph(seed=1)
    A = dense_rows(g)
    spectra = laplacian_spectrum(g)
    assert len(spectra) == 3
    gaps, gaps_real = spectral_gap(g), spectral_gap(g, mode='real')
    assert gaps.shape == (3, g.heads)
    for b, (start, size) in enumerate([(0, 4), (4, 6), (10, 3)]):
        nodes = [n for n in range(start, start + size) if n != 5]  # node 5: no incoming edge
        assert spectra[b].shape == (g.heads, len(nodes))
        for h in range(g.heads):
            sub = A[h][np.ix_(nodes, nodes)]
            mu = np.sort_complex(np.linalg.eigvals(np.eye(len(nodes)) - sub))
            np.testing.assert_allclose(spectra[b][h].numpy(), mu, atol=1e-10)
            lam = np.linalg.eigvals(sub)
            assert float(gaps[b, h]) == pytest.approx(1 - np.sort(np.abs(lam))[-2], abs=1e-10)
            assert float(gaps_real[b, h]) == pytest.approx(1 - np.sort(lam.real)[-2], abs=1e-10)
    # The eigenvalues of the full graph's laplacian() are these plus one 0 for node 5.
    lei, lw = g.laplacian()
    L = np.zeros((g.heads, 13, 13))
    L[:, lei[1].numpy(), lei[0].numpy()] = lw.t().numpy()
    full = np.sort_complex(np.linalg.eigvals(L[0]))
    mine = np.sort_complex(np.concatenate([s[0].numpy() for s in spectra] + [np.zeros(1)]))
    np.testing.assert_allclose(mine, full, atol=1e-10)


def test_spectral_gap_known_cases():
    from pyg_ple.analysis import spectral_gap
    uniform = AttentionGraph.from_dense(torch.full((1, 5, 5), 0.2, dtype=torch.float64))
    assert float(spectral_gap(uniform)) == pytest.approx(1.0) == float(spectral_gap(uniform, mode='real'))
    assert float(spectral_gap(AttentionGraph.from_dense(torch.eye(4)[None]))) == 0.0  # nothing ever mixes
    # A 2-cycle: eigenvalues +1 and -1, so x -> Ax never mixes (modulus), yet the continuous diffusion does.
    swap = AttentionGraph.from_dense(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    assert float(spectral_gap(swap)) == pytest.approx(0.0, abs=1e-12)
    assert float(spectral_gap(swap, mode='real')) == pytest.approx(2.0)
    assert bool(spectral_gap(AttentionGraph.from_dense(torch.ones(1, 1, 1))).isnan().all())
    with pytest.raises(ValueError, match="'mode' must be"):
        spectral_gap(uniform, mode='abs')


@pytest.mark.parametrize('metric', ['jensen_shannon', 'cosine'])
def test_head_similarity_matches_scipy(metric):
    from scipy.spatial.distance import cosine, jensenshannon

    from pyg_ple.analysis import head_similarity
    g = analysis_graph(seed=2)
    w = g.weight.clone()
    w[g.edge_index[1] == 0, 2] = w[g.edge_index[1] == 0, 0]  # node 0: heads 0 and 2 alike
    g = AttentionGraph(g.edge_index, w, g.num_nodes, g.batch)
    A = dense_rows(g)
    queries = [i for i in range(g.num_nodes) if i != 5]
    ref_s = np.zeros((g.heads, g.heads))
    for a in range(g.heads):
        for b in range(g.heads):
            if metric == 'cosine':
                vals = [1 - cosine(A[a, i], A[b, i]) for i in queries]
            else:
                vals = [1 - jensenshannon(A[a, i], A[b, i], base=2) ** 2 for i in queries]
            ref_s[a, b] = np.mean(vals)
    got = head_similarity(g, metric=metric).numpy()
    np.testing.assert_allclose(got, ref_s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-12)
    # Rows on disjoint keys: 0.
    disjoint = torch.zeros(2, 2, 2, dtype=torch.float64)
    disjoint[0, :, 0] = 1.0
    disjoint[1, :, 1] = 1.0
    assert float(head_similarity(AttentionGraph.from_dense(disjoint), metric=metric)[0, 1]) == pytest.approx(0.0)


def rollout_reference(atts, mask, residual=0.5):
    """Abnar & Zuidema's rollout over dense per-sequence numpy matrices (padding cut off): mean over heads, add the
    identity, renormalise the rows, multiply from the first layer up."""
    out = []
    for b in range(atts[0].shape[0]):
        n = int(mask[b].sum())
        R = np.eye(n)
        for att in atts:
            a = att[b][:, mask[b].bool()][:, :, mask[b].bool()].mean(0)
            a = (1 - residual) * a + residual * np.eye(n)
            a = a / a.sum(-1, keepdims=True)
            R = a @ R
        out.append(R)
    return out


@pytest.mark.parametrize('residual', [0.5, 0.2])
def test_attention_rollout_matches_numpy(residual):
    from pyg_ple.analysis import attention_rollout
    atts = [dense_attention(B=2, H=2, T=4, seed=s) for s in range(3)]
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]])
    graphs = [AttentionGraph.from_dense(a, mask, tokens=list('abcdefgh')) for a in atts]
    R = attention_rollout(graphs, residual=residual)
    assert R.heads == 1 and R.num_nodes == 8 and torch.equal(R.batch, graphs[0].batch) and R.tokens == list('abcdefgh')
    ref_r = rollout_reference([a.numpy() for a in atts], mask, residual)
    d = R.to_dense()[:, 0].numpy()
    np.testing.assert_allclose(d[0], ref_r[0], rtol=1e-12)
    np.testing.assert_allclose(d[1][1:3, 1:3], ref_r[1], rtol=1e-12)
    assert not bool(torch.isin(R.edge_index, torch.tensor([4, 7])).any())  # the padding stays isolated
    # One layer with residual 0: the head mean itself.
    one = attention_rollout(graphs[:1], residual=0.0)
    np.testing.assert_allclose(one.to_dense()[0, 0].numpy(), atts[0][0].mean(0).numpy(), rtol=1e-12)


def test_attention_rollout_of_a_causal_stack_stays_causal():
    from pyg_ple.analysis import attention_rollout
    graphs = [AttentionGraph.from_dense(dense_attention(B=1, H=2, T=5, seed=s, causal=True)) for s in range(2)]
    R = attention_rollout(graphs)
    assert bool((R.edge_index[0] <= R.edge_index[1]).all()) and R.num_edges == 15
    torch.testing.assert_close(row_sums(R), torch.ones(5, 1, dtype=torch.float64))


def test_analysis_rejects_bad_input():
    from pyg_ple.analysis import attention_entropy, attention_rollout, head_similarity
    g = analysis_graph()
    with pytest.raises(TypeError, match="'graph' must be an AttentionGraph"):
        attention_entropy(torch.ones(3, 3))
    with pytest.raises(ValueError, match="'metric' must be"):
        head_similarity(g, metric='kl')
    with pytest.raises(ValueError, match="'graphs' must hold at least one"):
        attention_rollout([])
    with pytest.raises(ValueError, match="'residual' must be a number in"):
        attention_rollout([g], residual=1.5)
    with pytest.raises(ValueError, match="'head_fusion' must be"):
        attention_rollout([g], head_fusion='sum')
    other = AttentionGraph(g.edge_index, g.weight, g.num_nodes)
    with pytest.raises(ValueError, match=r"'graphs\[1\]' is not on the nodes"):
        attention_rollout([g, other])
