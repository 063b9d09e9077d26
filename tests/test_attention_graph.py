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
