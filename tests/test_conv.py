"""LaplacianDiffusionConv against the independent dense reference and networkx."""
import networkx as nx
import numpy as np
import pytest
import torch

import reference as ref
from pyg_ple import LaplacianDiffusionConv

def lap_arg(choice, heads):
    return {'none': None, 'all': heads}.get(choice, choice)


def graph_with_sink(n=7, e=16, seed=0):
    """Random graph with a few self-loops where node ``n-1`` has no incoming
    edge (it only sends)."""
    ei = ref.random_graph(n, e, seed=seed, allow_self_loops=True)
    ei = ei[:, ei[1] != n - 1]
    extra = torch.tensor([[n - 1, n - 1], [0, 2]])
    ei = torch.cat([ei, extra], 1)
    return torch.unique(ei, dim=1)


# --------------------------------------------------------------------------
# Learned mode.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('heads,lap', [(1, 'none'), (1, 0), (1, 'all'),
                                       (3, 'none'), (3, 0), (3, 1),
                                       (3, 'all')])
@pytest.mark.parametrize('add_self_loops', [True, False])
@pytest.mark.parametrize('concat', [True, False])
@pytest.mark.parametrize('bias', [True, False])
def test_learned_matches_dense_reference(heads, lap, add_self_loops, concat,
                                         bias):
    n, f, c = 7, 5, 4
    laplacian_heads = lap_arg(lap, heads)
    conv = LaplacianDiffusionConv(f, c, heads=heads, concat=concat,
                                  laplacian_heads=laplacian_heads,
                                  step_size=0.7,
                                  add_self_loops=add_self_loops,
                                  bias=bias).double()
    if bias:  # a non-zero bias so that a wrong bias is visible
        with torch.no_grad():
            conv.bias.uniform_(-1, 1)
    x = torch.randn(n, f, dtype=torch.float64)
    ei = graph_with_sink(n)
    out = conv(x, ei)
    assert out.shape == (n, heads * c if concat else c)
    expected = ref.reference_learned(conv, x, ei,
                                     laplacian_heads=laplacian_heads,
                                     add_self_loops=add_self_loops,
                                     concat=concat,
                                     eta=torch.full((heads, ), 0.7))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize('heads,lap,mask', [
    (4, None, [True] * 4),
    (4, 0, [False] * 4),
    (4, 1, [False, False, False, True]),
    (4, 3, [False, True, True, True]),
    (4, 4, [True] * 4),
    (1, 0, [False]),
])
def test_laplacian_mask_and_eta(heads, lap, mask):
    conv = LaplacianDiffusionConv(6, 2, heads=heads, laplacian_heads=lap,
                                  step_size=0.25)
    assert conv.heads == heads
    assert conv.laplacian_mask.dtype == torch.bool
    assert conv.laplacian_mask.tolist() == mask
    assert conv.eta.shape == (heads, )
    torch.testing.assert_close(conv.eta.detach().float(),
                               torch.full((heads, ), 0.25))


def test_float32_matches_reference():
    n, f, c, h = 9, 6, 3, 2
    conv = LaplacianDiffusionConv(f, c, heads=h, laplacian_heads=1)
    x = torch.randn(n, f)
    ei = ref.random_graph(n, 25, seed=4)
    out = conv(x, ei)
    assert out.dtype == torch.float32
    expected = ref.reference_learned(conv, x, ei, laplacian_heads=1,
                                     add_self_loops=True)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('lap', [None, 0, 1])
def test_no_incoming_edge_gives_zero_update(lap):
    conv = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=lap,
                                  add_self_loops=False, bias=False)
    x = torch.randn(5, 4)
    # Node 4 only sends, node 3 is fully isolated.
    ei = torch.tensor([[0, 1, 2, 4, 4], [1, 2, 0, 0, 1]])
    out = conv(x, ei)
    assert torch.equal(out[3], torch.zeros(6))
    assert torch.equal(out[4], torch.zeros(6))
    assert out[:3].abs().sum() > 0
    # With a bias the update is the bias alone.
    conv2 = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=lap,
                                   add_self_loops=False)
    with torch.no_grad():
        conv2.bias.fill_(0.5)
    out2 = conv2(x, ei)
    torch.testing.assert_close(out2[3:], torch.full((2, 6), 0.5))


def test_existing_self_loops_are_not_doubled():
    # With add_self_loops=True an explicit self-loop must not count twice.
    conv = LaplacianDiffusionConv(4, 2, heads=2, laplacian_heads=0).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    ei_loops = torch.cat([ei, torch.tensor([[0, 1, 2], [0, 1, 2]])], 1)
    torch.testing.assert_close(conv(x, ei), conv(x, ei_loops))


def test_add_self_loops_false_keeps_given_self_loops():
    conv = LaplacianDiffusionConv(4, 2, heads=2, laplacian_heads=0,
                                  add_self_loops=False).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
    expected = ref.reference_learned(conv, x, ei, laplacian_heads=0,
                                     add_self_loops=False)
    torch.testing.assert_close(conv(x, ei), expected)


def test_step_size_scales_laplacian_heads_only():
    x = torch.randn(6, 4)
    ei = ref.random_graph(6, 14, seed=2)
    a = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=1,
                               step_size=1.0, bias=False)
    b = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=1,
                               step_size=0.5, bias=False)
    b.load_state_dict(a.state_dict(), strict=False)
    with torch.no_grad():
        b.eta.fill_(0.5)
    oa, ob = a(x, ei), b(x, ei)
    torch.testing.assert_close(ob[:, :3], oa[:, :3])  # plain head 0
    torch.testing.assert_close(ob[:, 3:], 0.5 * oa[:, 3:])  # Laplacian head 1


@pytest.mark.parametrize('learn', [False, True])
def test_learn_step_size(learn):
    conv = LaplacianDiffusionConv(4, 3, heads=2, learn_step_size=learn)
    in_params = any(p is conv.eta for p in conv.parameters())
    assert in_params == learn
    x = torch.randn(5, 4)
    ei = ref.random_graph(5, 10, seed=1)
    conv(x, ei).pow(2).sum().backward()
    if learn:
        assert conv.eta.grad is not None and conv.eta.grad.abs().sum() > 0
    else:
        assert conv.eta.grad is None
    assert 'eta' in conv.state_dict()


def test_dropout_only_in_training():
    conv = LaplacianDiffusionConv(4, 3, heads=2, dropout=0.5).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    ei = ref.random_graph(8, 30, seed=5)
    conv.eval()
    expected = ref.reference_learned(conv, x, ei, laplacian_heads=None,
                                     add_self_loops=True)
    torch.testing.assert_close(conv(x, ei), expected)
    conv.train()
    outs = [conv(x, ei) for _ in range(3)]
    assert any(not torch.allclose(o, expected) for o in outs)


# --------------------------------------------------------------------------
# Edge features.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', [None, 0, 1])
@pytest.mark.parametrize('add_self_loops', [True, False])
def test_edge_attr_matches_reference(lap, add_self_loops):
    n, f, c, h, d = 6, 5, 4, 2, 3
    conv = LaplacianDiffusionConv(f, c, heads=h, laplacian_heads=lap,
                                  edge_dim=d,
                                  add_self_loops=add_self_loops).double()
    x = torch.randn(n, f, dtype=torch.float64)
    ei = ref.random_graph(n, 14, seed=7)  # no self-loops
    ea = torch.randn(ei.size(1), d, dtype=torch.float64)
    out = conv(x, ei, edge_attr=ea)
    expected = ref.reference_learned_edge(conv, x, ei, ea,
                                          laplacian_heads=lap,
                                          add_self_loops=add_self_loops)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    # The edge term matters.
    out0 = conv(x, ei, edge_attr=torch.zeros_like(ea))
    assert not torch.allclose(out, out0)


def test_edge_attr_enters_score_only():
    """Constant values: the edge term cannot change a Laplacian head's zero
    update, since it only reweights the (row-stochastic) attention."""
    n, f, c, h, d = 5, 3, 2, 2, 2
    conv = LaplacianDiffusionConv(f, c, heads=h, edge_dim=d, bias=False)
    with torch.no_grad():
        conv.lin_value.weight.zero_()
        if conv.lin_value.bias is not None:
            conv.lin_value.bias.fill_(1.3)
        else:  # pragma: no cover - depends on the implementation
            pytest.skip('lin_value has no bias')
    x = torch.randn(n, f)
    ei = ref.random_graph(n, 10, seed=1)
    ea = torch.randn(ei.size(1), d) * 5
    out = conv(x, ei, edge_attr=ea)
    torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-6,
                               rtol=0)


# --------------------------------------------------------------------------
# Fixed-graph mode.
# --------------------------------------------------------------------------
def nx_undirected(ei, w, n):
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for (j, i), wt in zip(ei.t().tolist(), w.tolist()):
        g.add_edge(j, i, weight=wt)
    return g


def nx_in_degree_digraph(ei, w, n):
    """DiGraph whose out-degree Laplacian is our in-degree Laplacian: edge
    (i, j) for each edge j -> i."""
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for (j, i), wt in zip(ei.t().tolist(), w.tolist()):
        g.add_edge(i, j, weight=wt)
    return g


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('normalization', ['comb', 'sym', 'rw'])
@pytest.mark.parametrize('concat', [True, False])
def test_fixed_undirected_vs_networkx(seed, normalization, concat):
    n, f, c, h = 9, 4, 3, 2
    ei, w = ref.undirected_graph(n, 10, seed=seed, isolated=2)
    g = nx_undirected(ei, w, n)
    if normalization == 'comb':
        lap = nx.laplacian_matrix(g, nodelist=range(n)).toarray()
    elif normalization == 'sym':
        lap = nx.normalized_laplacian_matrix(g, nodelist=range(n)).toarray()
    else:
        comb = nx.laplacian_matrix(g, nodelist=range(n)).toarray()
        deg = np.diag(comb).copy()
        inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
        lap = inv[:, None] * comb  # I - D^-1 W on non-isolated rows
    lap = torch.from_numpy(np.asarray(lap, dtype=np.float64))
    # The reference Laplacian agrees with networkx (checks the reference).
    torch.testing.assert_close(
        ref.laplacian_dense(ref.dense_weight(ei, w, n), normalization), lap)
    conv = LaplacianDiffusionConv(f, c, heads=h, concat=concat,
                                  normalization=normalization,
                                  step_size=0.6).double()
    with torch.no_grad():
        conv.eta.copy_(torch.tensor([0.6, 1.7]))
        conv.bias.uniform_(-1, 1)
    x = torch.randn(n, f, dtype=torch.float64)
    out = conv(x, ei, edge_weight=w)
    expected = ref.reference_fixed(conv, x, ei, w, normalization,
                                   concat=concat, lap=lap)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    # Isolated nodes: zero update (bias only).
    torch.testing.assert_close(out[-2:], conv.bias.detach().expand(2, -1))


@pytest.mark.parametrize('normalization', ['comb', 'rw'])
def test_fixed_directed_vs_networkx(normalization):
    n, f, c = 8, 4, 3
    g0 = torch.Generator().manual_seed(11)
    ei = ref.random_graph(n - 1, 18, seed=3, allow_self_loops=True)
    w = torch.rand(ei.size(1), generator=g0, dtype=torch.float64) + 0.1
    g = nx_in_degree_digraph(ei, w, n)
    comb = torch.from_numpy(
        nx.laplacian_matrix(g, nodelist=range(n)).toarray().astype(
            np.float64))
    if normalization == 'comb':
        lap = comb
    else:
        deg = torch.diag(comb) + torch.tensor(
            [g.get_edge_data(i, i, {'weight': 0.0})['weight']
             for i in range(n)], dtype=torch.float64)  # in-degree incl. loop
        inv = torch.where(deg > 0, 1 / deg.clamp_min(1e-300),
                          torch.zeros_like(deg))
        lap = inv[:, None] * comb
    torch.testing.assert_close(
        ref.laplacian_dense(ref.dense_weight(ei, w, n), normalization), lap)
    conv = LaplacianDiffusionConv(f, c, heads=2, normalization=normalization,
                                  bias=False).double()
    x = torch.randn(n, f, dtype=torch.float64)
    out = conv(x, ei, edge_weight=w)
    expected = ref.reference_fixed(conv, x, ei, w, normalization, lap=lap)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)


def test_fixed_sym_directed_reference():
    # 'sym' on a directed graph: I - D^-1/2 W D^-1/2 with D the in-degree.
    n = 6
    ei = ref.random_graph(n, 12, seed=9)
    w = torch.rand(ei.size(1), dtype=torch.float64) + 0.1
    conv = LaplacianDiffusionConv(3, 2, heads=1, normalization='sym',
                                  bias=False).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    expected = ref.reference_fixed(conv, x, ei, w, 'sym')
    torch.testing.assert_close(conv(x, ei, edge_weight=w), expected)


def test_fixed_mode_does_not_add_self_loops():
    # Path 0 -> 1 with weight 2: rw Laplacian row 1 is [-1, 1], row 0 zero.
    conv = LaplacianDiffusionConv(2, 2, heads=1, normalization='rw',
                                  bias=False).double()
    with torch.no_grad():
        conv.lin_value.weight.copy_(torch.eye(2))
        if conv.lin_value.bias is not None:
            conv.lin_value.bias.zero_()
    x = torch.tensor([[1.0, 2.0], [5.0, -1.0]], dtype=torch.float64)
    out = conv(x, torch.tensor([[0], [1]]),
               edge_weight=torch.tensor([2.0], dtype=torch.float64))
    expected = torch.tensor([[0.0, 0.0], [-4.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_fixed_mode_duplicate_edges_sum():
    conv = LaplacianDiffusionConv(3, 2, normalization='comb',
                                  bias=False).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    ei = torch.tensor([[0, 0, 2], [1, 1, 3]])
    w = torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64)
    ei2 = torch.tensor([[0, 2], [1, 3]])
    w2 = torch.tensor([2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(conv(x, ei, edge_weight=w),
                               conv(x, ei2, edge_weight=w2))


# --------------------------------------------------------------------------
# Invariants.
# --------------------------------------------------------------------------
def constant_values(conv, value=1.3):
    with torch.no_grad():
        conv.lin_value.weight.zero_()
        assert conv.lin_value.bias is not None
        conv.lin_value.bias.copy_(
            torch.linspace(-value, value, conv.lin_value.bias.numel()))


@pytest.mark.parametrize('add_self_loops', [True, False])
def test_constant_values_zero_update_on_laplacian_heads(add_self_loops):
    n, f, c, h = 8, 5, 3, 3
    conv = LaplacianDiffusionConv(f, c, heads=h, laplacian_heads=2,
                                  add_self_loops=add_self_loops, bias=False)
    constant_values(conv)
    x = torch.randn(n, f) * 3
    ei = ref.random_graph(n, 20, seed=3)
    out = conv(x, ei).view(n, h, c)
    # Laplacian heads (last two): zero everywhere.
    torch.testing.assert_close(out[:, 1:], torch.zeros(n, 2, c), atol=1e-6,
                               rtol=0)
    # Plain head: A V = the constant value row on nodes with an incoming edge.
    v = conv.lin_value.bias.detach().view(h, c)[0]
    has_in = torch.zeros(n, dtype=torch.bool)
    has_in[ei[1]] = True
    if add_self_loops:
        has_in[:] = True
    torch.testing.assert_close(out[has_in, 0], v.expand(int(has_in.sum()), c))


@pytest.mark.parametrize('normalization', ['rw', 'comb'])
def test_constant_values_zero_update_fixed(normalization):
    n = 7
    conv = LaplacianDiffusionConv(4, 3, heads=2, normalization=normalization,
                                  bias=False)
    constant_values(conv)
    ei = ref.random_graph(n, 15, seed=8)
    w = torch.rand(ei.size(1)) + 0.2
    out = conv(torch.randn(n, 4), ei, edge_weight=w)
    torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-6, rtol=0)


@pytest.mark.parametrize('mode', ['learned', 'fixed', 'edge_attr'])
def test_permutation_equivariance(mode):
    n, f = 9, 5
    kwargs = dict(edge_dim=2) if mode == 'edge_attr' else {}
    conv = LaplacianDiffusionConv(f, 3, heads=2, laplacian_heads=1,
                                  **kwargs).double()
    x = torch.randn(n, f, dtype=torch.float64)
    ei = ref.random_graph(n, 24, seed=6)
    extra = {}
    if mode == 'fixed':
        extra['edge_weight'] = torch.rand(ei.size(1),
                                          dtype=torch.float64) + 0.1
    if mode == 'edge_attr':
        extra['edge_attr'] = torch.randn(ei.size(1), 2, dtype=torch.float64)
    out = conv(x, ei, **extra)
    perm = torch.randperm(n)  # new node k is old node perm[k]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    eperm = torch.randperm(ei.size(1))
    ei_p = inv[ei][:, eperm]
    extra_p = {k: v[eperm] for k, v in extra.items()}
    out_p = conv(x[perm], ei_p, **extra_p)
    torch.testing.assert_close(out_p, out[perm])


@pytest.mark.parametrize('fixed', [False, True])
def test_no_leakage_between_graphs(fixed):
    f = 4
    conv = LaplacianDiffusionConv(f, 3, heads=2, laplacian_heads=1).double()
    n1, n2 = 5, 6
    ei1 = ref.random_graph(n1, 10, seed=1)
    ei2 = ref.random_graph(n2, 12, seed=2)
    x1 = torch.randn(n1, f, dtype=torch.float64)
    x2 = torch.randn(n2, f, dtype=torch.float64)
    w1 = torch.rand(ei1.size(1), dtype=torch.float64) + .1
    w2 = torch.rand(ei2.size(1), dtype=torch.float64) + .1
    ei = torch.cat([ei1, ei2 + n1], 1)
    kw = (lambda w: {'edge_weight': w}) if fixed else (lambda w: {})
    out = conv(torch.cat([x1, x2]), ei, **kw(torch.cat([w1, w2])))
    torch.testing.assert_close(out[:n1], conv(x1, ei1, **kw(w1)))
    torch.testing.assert_close(out[n1:], conv(x2, ei2, **kw(w2)))
    # Changing graph 2's features does not move graph 1's output.
    out2 = conv(torch.cat([x1, x2 * 3 + 1]), ei, **kw(torch.cat([w1, w2])))
    torch.testing.assert_close(out2[:n1], out[:n1])


@pytest.mark.parametrize('add_self_loops', [True, False])
@pytest.mark.parametrize('fixed', [False, True])
def test_empty_graph(add_self_loops, fixed):
    conv = LaplacianDiffusionConv(4, 3, heads=2, add_self_loops=add_self_loops)
    x = torch.empty(0, 4)
    ei = torch.empty(2, 0, dtype=torch.long)
    kw = {'edge_weight': torch.empty(0)} if fixed else {}
    out = conv(x, ei, **kw)
    assert out.shape == (0, 6)


@pytest.mark.parametrize('lap', [None, 0, 1])
def test_nodes_without_edges(lap):
    n = 4
    conv = LaplacianDiffusionConv(3, 2, heads=2, laplacian_heads=lap,
                                  bias=False).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    ei = torch.empty(2, 0, dtype=torch.long)
    # Self-loops only: A = I, so Laplacian heads are zero, plain heads = V.
    out = conv(x, ei).view(n, 2, 2)
    v = ref.linear(conv.lin_value, x).view(n, 2, 2)
    lap_mask = ref.laplacian_head_mask(2, lap)
    expected = torch.where(lap_mask.view(1, 2, 1), torch.zeros_like(v), v)
    torch.testing.assert_close(out, expected)
    # No self-loops: no incoming edge anywhere -> zero update.
    conv2 = LaplacianDiffusionConv(3, 2, heads=2, laplacian_heads=lap,
                                   bias=False, add_self_loops=False).double()
    assert torch.equal(conv2(x, ei), torch.zeros(n, 4, dtype=torch.float64))
    # Fixed mode with no edges: zero update.
    out = conv2(x, ei, edge_weight=torch.empty(0, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(n, 4, dtype=torch.float64))


# --------------------------------------------------------------------------
# Gradients.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', [None, 1])
def test_gradcheck_learned(lap):
    conv = LaplacianDiffusionConv(3, 2, heads=2, laplacian_heads=lap,
                                  learn_step_size=True, edge_dim=2).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    ei = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 0, 3]])
    ea = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, ea: conv(x, ei, edge_attr=ea), (x, ea))


@pytest.mark.parametrize('normalization', ['rw', 'sym', 'comb'])
def test_gradcheck_fixed(normalization):
    conv = LaplacianDiffusionConv(3, 2, heads=2,
                                  normalization=normalization).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    ei = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 0, 3]])
    w = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w: conv(x, ei, edge_weight=w), (x, w))


def test_gradients_reach_all_projections():
    conv = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=1)
    x = torch.randn(6, 4)
    ei = ref.random_graph(6, 15, seed=0)
    conv(x, ei).pow(2).sum().backward()
    for name in ['lin_query', 'lin_key', 'lin_value']:
        g = getattr(conv, name).weight.grad
        assert g is not None and g.abs().sum() > 0, name


@pytest.mark.parametrize('normalization', ['rw', 'sym', 'comb'])
def test_fixed_mode_plain_heads_propagate(normalization):
    """Fixed mode with mixed heads: Laplacian heads -eta L V; plain heads the
    propagation matrix P V (D^-1 W, D^-1/2 W D^-1/2 or W: the off-diagonal
    part that L subtracts), zero on nodes without an incoming edge."""
    n, c = 8, 2
    ei, w = ref.undirected_graph(n, 10, seed=5, isolated=2)
    conv = LaplacianDiffusionConv(3, c, heads=2, laplacian_heads=1,
                                  normalization=normalization, step_size=0.4,
                                  bias=False).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    out = conv(x, ei, edge_weight=w).view(n, 2, c)
    lap = ref.laplacian_dense(ref.dense_weight(ei, w, n), normalization)
    v = ref.linear(conv.lin_value, x).view(n, 2, c)
    lv = torch.einsum('ij,jhc->ihc', lap, v)
    has_in = torch.zeros(n, dtype=torch.bool)
    has_in[ei[1]] = True
    torch.testing.assert_close(out[:, 1], -0.4 * lv[:, 1])  # Laplacian head
    # P = S - L with S the diagonal part: I on nodes with in-edges ('rw', 'sym'), D ('comb').
    deg = ref.dense_weight(ei, w, n).sum(1)
    diag = deg if normalization == 'comb' else has_in.double()
    torch.testing.assert_close(out[:, 0], (diag.view(-1, 1, 1) * v - lv)[:, 0])


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('edge_dim', [None, 2])
def test_fused_and_message_passing_paths_match_reference(fused, edge_dim):
    n, h, c = 7, 3, 2
    conv = LaplacianDiffusionConv(4, c, heads=h, laplacian_heads=2,
                                  edge_dim=edge_dim, fused=fused).double()
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    ei = graph_with_sink(n, seed=3)
    ei = ei[:, ei[0] != ei[1]]
    ea = None if edge_dim is None else torch.randn(
        ei.size(1), edge_dim, dtype=torch.float64)
    out = conv(x, ei, edge_attr=ea)
    if edge_dim is None:
        expected = ref.reference_learned(conv, x.detach(), ei,
                                         laplacian_heads=2,
                                         add_self_loops=True)
    else:
        expected = ref.reference_learned_edge(conv, x.detach(), ei, ea,
                                              laplacian_heads=2,
                                              add_self_loops=True)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradcheck(lambda x: conv(x, ei, edge_attr=ea),
                                    (x, ))


# Every mode on each of its paths; with int32 indices, 'learned, no self-loops', 'edge_attr' and 'fixed' once gave
# wrong gradients (on CPU, the backward of scatter gathered with an expanded int32 index).
INDEX_DTYPE_MODES = {'learned': {}, 'learned, no self-loops': dict(add_self_loops=False), 'edge_attr': dict(edge_dim=2),
                     'fixed': {}}
INDEX_DTYPE_PATHS = [(mode, fused) for mode in INDEX_DTYPE_MODES for fused in (True, False)
                     if mode != 'fixed' or not fused]  # fixed-graph mode has one path


@pytest.mark.parametrize('index_dtype', [torch.int64, torch.int32])
@pytest.mark.parametrize('mode,fused', INDEX_DTYPE_PATHS)
def test_index_dtype_values_and_gradients(index_dtype, mode, fused):
    """int32 and int64 indices give the reference's values and correct gradients (gradcheck in float64)."""
    lap = None if mode == 'fixed' else 1  # the fixed-graph reference has Laplacian heads only
    conv = LaplacianDiffusionConv(3, 2, heads=2, laplacian_heads=lap, fused=fused, **INDEX_DTYPE_MODES[mode]).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 4], [1, 2, 3, 0, 2, 1, 2]])
    extra = {}
    if mode == 'fixed':
        extra['edge_weight'] = (torch.rand(7, dtype=torch.float64) + 0.5).requires_grad_()
    if mode == 'edge_attr':
        extra['edge_attr'] = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    out = conv(x, ei.to(index_dtype), **extra)
    if mode == 'fixed':
        expected = ref.reference_fixed(conv, x.detach(), ei, extra['edge_weight'].detach(), 'rw')
    elif mode == 'edge_attr':
        expected = ref.reference_learned_edge(conv, x.detach(), ei, extra['edge_attr'].detach(), laplacian_heads=1,
                                              add_self_loops=True)
    else:
        expected = ref.reference_learned(conv, x.detach(), ei, laplacian_heads=1,
                                         add_self_loops=conv.add_self_loops)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    names = list(extra)
    assert torch.autograd.gradcheck(
        lambda x, *rest: conv(x, ei.to(index_dtype), **dict(zip(names, rest))), (x, *extra.values()))


def test_edge_attr_vector_with_edge_dim_one():
    """``edge_attr [E]`` is one feature per edge when ``edge_dim=1`` (as in PyG's convs)."""
    conv = LaplacianDiffusionConv(4, 3, heads=2, edge_dim=1).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    ei = ref.random_graph(6, 12, seed=3)
    ea = torch.randn(12, dtype=torch.float64)
    out = conv(x, ei, edge_attr=ea)
    torch.testing.assert_close(out, conv(x, ei, edge_attr=ea.view(-1, 1)))
    expected = ref.reference_learned_edge(conv, x, ei, ea.view(-1, 1), laplacian_heads=None, add_self_loops=True)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    graph = conv.attention_graph(x, ei, edge_attr=ea)
    torch.testing.assert_close(graph.weight, conv.attention_graph(x, ei, edge_attr=ea.view(-1, 1)).weight)
    with pytest.raises(ValueError, match="'edge_attr'"):
        LaplacianDiffusionConv(4, 3, heads=2, edge_dim=2)(x.float(), ei, edge_attr=ea.float())


def test_edge_attr_needs_edge_dim_and_learned_mode():
    x, ei = torch.randn(6, 4), ref.random_graph(6, 12, seed=3)
    with pytest.raises(ValueError, match="'edge_attr'.*edge_dim=None"):
        LaplacianDiffusionConv(4, 3)(x, ei, edge_attr=torch.randn(12, 2))
    with pytest.raises(ValueError, match="'edge_attr'.*'edge_weight'"):
        LaplacianDiffusionConv(4, 3, edge_dim=2)(x, ei, edge_weight=torch.rand(12), edge_attr=torch.randn(12, 2))
    with pytest.raises(ValueError, match="'edge_attr'.*edge_dim=None"):
        LaplacianDiffusionConv(4, 3).attention(x, ei, edge_attr=torch.randn(12, 2))


@pytest.mark.parametrize('kwargs,word', [(dict(flow='target_to_source'), 'flow'), (dict(step_size=-0.5), 'step_size'),
                                         (dict(step_size=float('nan')), 'step_size'),
                                         (dict(edge_dim=0), 'edge_dim')])
def test_constructor_rejects(kwargs, word):
    with pytest.raises(ValueError, match=f"'{word}'"):
        LaplacianDiffusionConv(4, 3, **kwargs)


def test_step_size_zero_and_source_to_target_flow_are_accepted():
    conv = LaplacianDiffusionConv(4, 3, step_size=0.0, flow='source_to_target', bias=False)
    out = conv(torch.randn(5, 4), ref.random_graph(5, 8, seed=0))
    assert torch.equal(out, torch.zeros_like(out))  # eta = 0 on every (Laplacian) head


@pytest.mark.parametrize('normalization', ['rw', 'sym', 'comb'])
def test_fixed_mode_output_keeps_x_dtype(normalization):
    conv = LaplacianDiffusionConv(4, 2, heads=2, normalization=normalization)
    x = torch.randn(6, 4)
    ei = ref.random_graph(6, 12, seed=1)
    w = torch.rand(12, dtype=torch.float64) + 0.1
    out = conv(x, ei, edge_weight=w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, conv(x, ei, edge_weight=w.float()))


# --------------------------------------------------------------------------
# Bipartite inputs, lazy in_channels, fill_value.
# --------------------------------------------------------------------------
def dense_bipartite(conv, x_src, x_dst, edge_index, root):
    """Dense float64 math of the bipartite learned step: ``A [H, N_dst, N_src]`` from the edges (unique, no
    self-loops added), ``eta (A V - s R)`` on Laplacian heads with ``R = x_dst W_r`` the given root projection."""
    H, C = conv.heads, conv.out_channels
    n_dst, n_src = x_dst.size(0), x_src.size(0)
    q = ref.linear(conv.lin_query, x_dst).view(n_dst, H, C).transpose(0, 1)
    k = ref.linear(conv.lin_key, x_src).view(n_src, H, C).transpose(0, 1)
    v = ref.linear(conv.lin_value, x_src).view(n_src, H, C).transpose(0, 1)
    r = ref.linear(root, x_dst).view(n_dst, H, C).transpose(0, 1) if root is not None else 0.0
    mask = torch.zeros(n_dst, n_src, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    a = ref.masked_softmax(q @ k.transpose(1, 2) / C ** 0.5, mask)  # [H, N_dst, N_src]
    has_key = mask.any(1).to(x_dst.dtype).view(1, -1, 1)
    lap = conv.laplacian_mask.view(-1, 1, 1)
    out = torch.where(lap, conv.eta.view(-1, 1, 1) * (a @ v - has_key * r), a @ v)
    return out.transpose(0, 1).reshape(n_dst, H * C) + conv.bias


def bipartite_graph(n_src, n_dst, e, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, n_src, (e,), generator=g), torch.randint(0, n_dst, (e,), generator=g)])
    ei = torch.unique(ei, dim=1)
    return ei[:, ei[1] != n_dst - 1]  # the last target has no incoming edge


@pytest.mark.parametrize('in_channels', [(5, 3), (4, 4), 4])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('lap', [None, 1, 0])
def test_bipartite_matches_dense_reference(in_channels, fused, lap):
    f_src, f_dst = in_channels if isinstance(in_channels, tuple) else (in_channels, in_channels)
    conv = LaplacianDiffusionConv(in_channels, 3, heads=2, laplacian_heads=lap, add_self_loops=False,
                                  fused=fused, learn_step_size=True).double()
    with torch.no_grad():
        conv.eta.copy_(torch.tensor([0.6, 1.4]))
        conv.bias.uniform_(-1, 1)
    # A separate target projection only where the two sides may differ and a head is Laplacian.
    assert (conv.lin_root is not None) == (in_channels == (5, 3) and lap != 0)
    x_src = torch.randn(7, f_src, dtype=torch.float64, requires_grad=True)
    x_dst = torch.randn(4, f_dst, dtype=torch.float64, requires_grad=True)
    ei = bipartite_graph(7, 4, 12)
    out = conv((x_src, x_dst), ei)
    assert out.shape == (4, 6)
    root = None if lap == 0 else conv.lin_value if conv.lin_root is None else conv.lin_root
    x_src2, x_dst2 = x_src.detach().clone().requires_grad_(True), x_dst.detach().clone().requires_grad_(True)
    expected = dense_bipartite(conv, x_src2, x_dst2, ei, root)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x_src.grad, x_src2.grad)
    torch.testing.assert_close(x_dst.grad, x_dst2.grad)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('add_self_loops', [True, False])
def test_bipartite_block_gives_the_target_rows_of_the_full_output(fused, add_self_loops):
    """NeighborLoader's layout: the targets are the first sources; with one feature size the bipartite output is
    the targets' rows of the output on the whole graph (self-loops included)."""
    n, n_dst = 9, 4
    conv = LaplacianDiffusionConv(5, 3, heads=3, laplacian_heads=2, add_self_loops=add_self_loops,
                                  fused=fused, edge_dim=2).double()
    x = torch.randn(n, 5, dtype=torch.float64)
    ei = ref.random_graph(n, 30, seed=4, allow_self_loops=True)
    ei = ei[:, ei[1] < n_dst]  # the edges into the targets
    edge_attr = torch.randn(ei.size(1), 2, dtype=torch.float64)
    full = conv(x, ei, edge_attr=edge_attr)[:n_dst]
    out, (edges, alpha) = conv((x, x[:n_dst]), ei, edge_attr=edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out, full)
    assert int(edges[1].max()) < n_dst and alpha.shape == (edges.size(1), 3)
    if add_self_loops:  # one self-loop per target, none for the other sources
        loops = edges[:, edges[0] == edges[1]]
        assert sorted(loops[0].tolist()) == list(range(n_dst))


def test_lazy_in_channels_match_the_explicit_layer():
    torch.manual_seed(0)
    x, ei = torch.randn(6, 5), ref.random_graph(6, 14, seed=2)
    lazy = LaplacianDiffusionConv(-1, 4, heads=2, edge_dim=1)
    with torch.no_grad():
        lazy(x, ei, edge_attr=torch.randn(ei.size(1)))  # PyG's recipe: one forward gives the shapes
    explicit = LaplacianDiffusionConv(5, 4, heads=2, edge_dim=1)
    explicit.load_state_dict(lazy.state_dict())
    edge_attr = torch.randn(ei.size(1))
    torch.testing.assert_close(lazy(x, ei, edge_attr=edge_attr), explicit(x, ei, edge_attr=edge_attr))
    assert lazy.lin_value.weight.shape == (8, 5) and lazy.lin_query.weight.shape == (8, 5)
    pair = LaplacianDiffusionConv((-1, -1), 4, heads=2)
    with torch.no_grad():
        out = pair((torch.randn(6, 5), torch.randn(3, 2)), ei[:, ei[1] < 3])
    assert out.shape == (3, 8) and pair.lin_key.weight.shape == (8, 5) and pair.lin_root.weight.shape == (8, 2)
    assert pair.lin_query.weight.shape == (8, 2)
    # uniform_init zeroes W_q once the lazy projection has its shape
    uniform = LaplacianDiffusionConv(-1, 4, heads=2, uniform_init=True)
    uniform(x, ei)
    assert not uniform.lin_query.weight.any() and not uniform.lin_query.bias.any()


@pytest.mark.parametrize('fill_value', ['mean', 'add', 'max', 0.5, torch.tensor([1.0, -2.0])])
@pytest.mark.parametrize('fused', [True, False])
def test_fill_value_gives_the_self_loop_features(fill_value, fused):
    """Against explicit self-loops whose features are the reduction of each node's incoming edge features."""
    n = 6
    ei = ref.random_graph(n, 15, seed=5)
    ei = ei[:, ei[0] != ei[1]]
    edge_attr = torch.randn(ei.size(1), 2, dtype=torch.float64)
    conv = LaplacianDiffusionConv(4, 3, heads=2, edge_dim=2, fill_value=fill_value, fused=fused).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    if isinstance(fill_value, str):
        loop_attr = torch.zeros(n, 2, dtype=torch.float64)
        for i in range(n):
            incoming = edge_attr[ei[1] == i]
            if incoming.numel():
                loop_attr[i] = {'mean': incoming.mean(0), 'add': incoming.sum(0),
                                'max': incoming.max(0).values}[fill_value]
    else:
        loop_attr = torch.as_tensor(fill_value, dtype=torch.float64).expand(n, 2)
    explicit = LaplacianDiffusionConv(4, 3, heads=2, edge_dim=2, add_self_loops=False, fused=fused).double()
    explicit.load_state_dict(conv.state_dict())
    loops = torch.arange(n).repeat(2, 1)
    expected = explicit(x, torch.cat([ei, loops], 1), edge_attr=torch.cat([edge_attr, loop_attr]))
    torch.testing.assert_close(conv(x, ei, edge_attr=edge_attr), expected)


@pytest.mark.parametrize('kwargs,error,word', [
    (dict(in_channels=0), ValueError, 'in_channels'), (dict(in_channels=(4,)), ValueError, 'in_channels'),
    (dict(in_channels=(4, -2)), ValueError, 'in_channels'), (dict(in_channels=2.0), ValueError, 'in_channels'),
    (dict(fill_value='median'), ValueError, 'fill_value'), (dict(fill_value=None), TypeError, 'fill_value'),
    (dict(fused='yes'), ValueError, 'fused'), (dict(fused=1), ValueError, 'fused')])
def test_new_arguments_are_checked(kwargs, error, word):
    args = dict(in_channels=4, out_channels=2)
    with pytest.raises(error, match=word):
        LaplacianDiffusionConv(**{**args, **kwargs})


def test_bipartite_inputs_are_checked():
    conv = LaplacianDiffusionConv((5, 3), 2, heads=2)
    x_src, x_dst = torch.randn(6, 5), torch.randn(4, 3)
    with pytest.raises(ValueError, match="'x_dst'"):
        conv((x_src, torch.randn(4, 5)), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="'edge_index'"):
        conv((x_src, x_dst), torch.tensor([[5], [4]]))  # target 4 of 4
    with pytest.raises(ValueError, match="'edge_index'"):
        conv((x_src, x_dst), torch.tensor([[6], [0]]))  # source 6 of 6
    with pytest.raises(TypeError, match="'x'"):
        conv((x_src, x_dst, x_dst), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="'edge_weight'"):
        LaplacianDiffusionConv(4, 2)((torch.randn(3, 4), torch.randn(2, 4)), torch.tensor([[0], [1]]),
                                     edge_weight=torch.ones(1))


def test_bipartite_attention_graph_covers_both_sides():
    conv = LaplacianDiffusionConv(4, 2, heads=2)
    x = torch.randn(7, 4)
    ei = ref.random_graph(7, 20, seed=3)
    ei = ei[:, ei[1] < 3]
    graph = conv.attention_graph((x, x[:3]), ei)
    assert graph.num_nodes == 7
    dense = graph.to_dense()[0]  # [H, N, N]: rows of the targets only
    assert dense[:, 3:].abs().sum() == 0
    torch.testing.assert_close(dense[:, :3].sum(-1), torch.ones(2, 3))
    full = conv.attention_graph(x, ei).to_dense()[0]
    torch.testing.assert_close(dense[:, :3], full[:, :3])
