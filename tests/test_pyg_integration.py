"""PyG conventions: sparse layouts, attention weights, reset, repr,
torch.compile, GPSConv, AttentionExplainer."""
import copy
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric import EdgeIndex
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import AttentionExplainer
from torch_geometric.nn import GPSConv, MessagePassing, global_mean_pool
from torch_geometric.testing import assert_module
from torch_geometric.utils import (to_torch_coo_tensor, to_torch_csc_tensor,
                                   to_torch_csr_tensor)

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock

warnings.filterwarnings('ignore', '.*Sparse CSR tensor support.*')
warnings.filterwarnings('ignore', '.*to CSR format.*')


def test_is_message_passing():
    conv = LaplacianDiffusionConv(4, 2, heads=2)
    assert isinstance(conv, MessagePassing)


@pytest.mark.parametrize('lap', [None, 0, 1])
@pytest.mark.parametrize('add_self_loops', [True, False])
def test_assert_module_layouts_and_edge_permutation(lap, add_self_loops):
    n = 8
    conv = LaplacianDiffusionConv(5, 3, heads=2, laplacian_heads=lap,
                                  add_self_loops=add_self_loops)
    x = torch.randn(n, 5)
    ei = ref.random_graph(n, 20, seed=3)
    assert_module(conv, x, ei, expected_size=(n, 6), atol=1e-6,
                  test_sparse_layouts=[torch.sparse_csc, torch.sparse_coo])


@pytest.mark.parametrize('layout', ['csr', 'coo', 'csc'])
def test_sparse_adjacency_same_output(layout):
    n = 7
    conv = LaplacianDiffusionConv(4, 3, heads=3, laplacian_heads=2,
                                  add_self_loops=False)
    x = torch.randn(n, 4)
    ei = ref.random_graph(n, 18, seed=1)
    expected = conv(x, ei)
    make = {'csr': to_torch_csr_tensor, 'coo': to_torch_coo_tensor,
            'csc': to_torch_csc_tensor}[layout]
    adj_t = make(ei, size=(n, n)).t()  # PyG's adj_t convention
    if layout == 'coo':
        adj_t = adj_t.coalesce()
    torch.testing.assert_close(conv(x, adj_t), expected)
    # Learned mode: values of the sparse adjacency are ignored (pattern
    # only), as in GATConv, with a warning that says so.
    w = torch.rand(ei.size(1)) * 5
    adj_t = make(ei, w, size=(n, n)).t()
    if layout == 'coo':
        adj_t = adj_t.coalesce()
    with pytest.warns(UserWarning, match="'edge_index' is a weighted sparse"):
        out = conv(x, adj_t)
    torch.testing.assert_close(out, expected)


def test_sparse_adjacency_direction():
    # A single edge 0 -> 1: only node 1 aggregates from node 0.
    conv = LaplacianDiffusionConv(3, 2, heads=1, laplacian_heads=0,
                                  add_self_loops=False, bias=False)
    x = torch.randn(2, 3)
    ei = torch.tensor([[0], [1]])
    adj_t = to_torch_csr_tensor(ei, size=(2, 2)).t()
    out = conv(x, adj_t)
    assert torch.equal(out[0], torch.zeros(2))
    torch.testing.assert_close(out[1], conv.lin_value(x)[0])


@pytest.mark.parametrize('add_self_loops', [True, False])
def test_return_attention_weights(add_self_loops):
    n, h = 6, 3
    conv = LaplacianDiffusionConv(4, 2, heads=h, laplacian_heads=1,
                                  add_self_loops=add_self_loops).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    ei = ref.random_graph(n, 12, seed=2, allow_self_loops=True)
    num_loops = int((ei[0] == ei[1]).sum())
    out, (ei_out, alpha) = conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(out, conv(x, ei))
    e_prime = ei.size(1) - num_loops + n if add_self_loops else ei.size(1)
    assert ei_out.shape == (2, e_prime)
    assert alpha.shape == (e_prime, h)
    # alpha is the dense reference's softmax at each returned edge.
    q, k, _ = ref.project_qkv(conv, x)
    eiw = ei[:, ei[0] != ei[1]] if add_self_loops else ei
    mask = ref.edge_mask(eiw, n, add_self_loops=add_self_loops)
    a = ref.attention_matrices(q, k, mask)  # [H, N, N]
    torch.testing.assert_close(alpha, a[:, ei_out[1], ei_out[0]].t())
    assert isinstance(conv(x, ei, return_attention_weights=False),
                      torch.Tensor)


def test_return_attention_weights_fixed_mode():
    conv = LaplacianDiffusionConv(4, 2, heads=2, normalization='rw')
    x = torch.randn(5, 4)
    ei = ref.random_graph(5, 9, seed=0)
    w = torch.rand(9) + 0.1
    out, (ei_out, coef) = conv(x, ei, edge_weight=w,
                               return_attention_weights=True)
    assert out.shape == (5, 4)
    assert ei_out.shape == (2, 9) and coef.shape == (9, 2)


def test_reset_parameters():
    conv = LaplacianDiffusionConv(4, 3, heads=2, learn_step_size=True,
                                  edge_dim=2, step_size=0.3)
    with torch.no_grad():
        for p in conv.parameters():
            p.fill_(7.0)
    conv.reset_parameters()
    for name in ['lin_query', 'lin_key', 'lin_value']:
        w = getattr(conv, name).weight
        assert not torch.all(w == 7.0), name
    assert not torch.all(conv.attention.lin_edge.weight == 7.0)
    torch.testing.assert_close(conv.eta.detach(), torch.full((2, ), 0.3))
    assert not torch.all(conv.bias == 7.0)
    # Two resets give different random weights.
    before = conv.lin_query.weight.detach().clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin_query.weight)


def test_repr():
    conv = LaplacianDiffusionConv(16, 8, heads=4, laplacian_heads=2)
    r = repr(conv)
    assert r.startswith('LaplacianDiffusionConv(')
    assert '16' in r and '8' in r and 'heads=4' in r
    assert 'PLETransformerBlock(' in repr(PLETransformerBlock(8, 2))


def test_state_dict_round_trip():
    a = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=1,
                               learn_step_size=True)
    with torch.no_grad():
        a.eta.copy_(torch.tensor([0.2, 0.9]))
    b = LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=1,
                               learn_step_size=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 4)
    ei = ref.random_graph(5, 10, seed=0)
    torch.testing.assert_close(a(x, ei), b(x, ei))
    c = copy.deepcopy(a)
    torch.testing.assert_close(c(x, ei), a(x, ei))


# --------------------------------------------------------------------------
# torch.compile: no graph breaks when add_self_loops=False.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('mode', ['learned', 'fixed', 'edge_attr', 'edge_values'])
def test_compile_fullgraph_no_breaks(mode):
    torch._dynamo.reset()
    kw = {'edge_attr': dict(edge_dim=2), 'edge_values': dict(edge_dim=2, edge_values=True)}.get(mode, {})
    conv = LaplacianDiffusionConv(8, 4, heads=2, laplacian_heads=1,
                                  add_self_loops=False, **kw)
    x = torch.randn(10, 8)
    ei = ref.random_graph(10, 30, seed=0)
    extra = {}
    if mode == 'fixed':
        extra['edge_weight'] = torch.rand(ei.size(1)) + 0.1
    if mode in ('edge_attr', 'edge_values'):
        extra['edge_attr'] = torch.randn(ei.size(1), 2)
    # backend='eager' runs dynamo tracing (graph breaks raise with
    # fullgraph=True) without the cost of code generation.
    compiled = torch.compile(conv, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(x, ei, **extra), conv(x, ei, **extra))


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    conv = LaplacianDiffusionConv(8, 4, heads=2, laplacian_heads=1,
                                  add_self_loops=False)
    x = torch.randn(10, 8)
    ei = ref.random_graph(10, 30, seed=0)
    compiled = torch.compile(conv, fullgraph=True)
    torch.testing.assert_close(compiled(x, ei), conv(x, ei), atol=1e-5,
                               rtol=1e-5)


def test_compile_block_sequence_path():
    torch._dynamo.reset()
    block = PLETransformerBlock(8, 2, laplacian_heads=1).eval()
    x = torch.randn(2, 5, 8)
    compiled = torch.compile(block, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(x, causal=True), block(x, causal=True))


# --------------------------------------------------------------------------
# Inside PyG models.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', [None, 0])
def test_gpsconv(lap):
    channels, heads = 8, 2
    conv = LaplacianDiffusionConv(channels, channels // heads, heads,
                                  laplacian_heads=lap)
    gps = GPSConv(channels, conv=conv, heads=2)
    x = torch.randn(9, channels)
    ei = torch.cat([ref.random_graph(5, 10, seed=0),
                    ref.random_graph(4, 8, seed=1) + 5], 1)
    batch = torch.tensor([0] * 5 + [1] * 4)
    out = gps(x, ei, batch)
    assert out.shape == (9, channels)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert conv.lin_query.weight.grad is not None
    assert conv.lin_query.weight.grad.abs().sum() > 0


class TwoLayer(torch.nn.Module):
    def __init__(self, graph_level=False):
        super().__init__()
        self.conv1 = LaplacianDiffusionConv(4, 3, heads=2,
                                            laplacian_heads=1)
        self.conv2 = LaplacianDiffusionConv(6, 3, heads=1, concat=False,
                                            laplacian_heads=0)
        self.graph_level = graph_level

    def forward(self, x, edge_index, batch=None):
        x = self.conv1(x, edge_index).relu()
        x = self.conv2(x, edge_index)
        if self.graph_level:
            x = global_mean_pool(x, batch)
        return x


def test_attention_explainer_node_level():
    model = TwoLayer().eval()
    explainer = Explainer(
        model=model, algorithm=AttentionExplainer(),
        explanation_type='model', edge_mask_type='object',
        model_config=dict(mode='multiclass_classification',
                          task_level='node', return_type='raw'))
    x = torch.randn(8, 4)
    ei = ref.random_graph(8, 20, seed=2)
    expl = explainer(x, ei, index=3)
    assert expl.edge_mask.shape == (ei.size(1), )
    assert bool((expl.edge_mask >= 0).all())
    assert expl.edge_mask.sum() > 0
    # Edges outside node 3's 2-hop neighbourhood get zero.
    hop1 = set(ei[0, ei[1] == 3].tolist()) | {3}
    hop2 = set(ei[0, torch.isin(ei[1], torch.tensor(sorted(hop1)))].tolist())
    far = ~torch.isin(ei[1], torch.tensor(sorted(hop1 | hop2)))
    if bool(far.any()):
        assert expl.edge_mask[far].abs().sum() == 0


def test_attention_explainer_reads_layer_alpha():
    model = TwoLayer(graph_level=True).eval()
    explainer = Explainer(
        model=model, algorithm=AttentionExplainer(reduce='max'),
        explanation_type='model', edge_mask_type='object',
        model_config=dict(mode='regression', task_level='graph',
                          return_type='raw'))
    x = torch.randn(6, 4)
    ei = ref.random_graph(6, 14, seed=4)  # no self-loops
    batch = torch.zeros(6, dtype=torch.long)
    expl = explainer(x, ei, batch=batch)
    # Expected: max over layers and heads of alpha on the native edges.
    _, (ei1, a1) = model.conv1(x, ei, return_attention_weights=True)
    h = model.conv1(x, ei).relu()
    _, (ei2, a2) = model.conv2(h, ei, return_attention_weights=True)
    assert torch.equal(ei1[:, :ei.size(1)], ei)
    expected = torch.maximum(a1[:ei.size(1)].max(-1).values,
                             a2[:ei.size(1)].max(-1).values)
    torch.testing.assert_close(expl.edge_mask, expected)


# --------------------------------------------------------------------------
# Against PyG's TransformerConv on the same weights.
# --------------------------------------------------------------------------
def _copy_linear(dst, src, sign=1.0):
    with torch.no_grad():
        dst.weight.copy_(sign * src.weight)
        if dst.bias is not None:
            dst.bias.copy_(sign * src.bias)


def _every_target_has_an_edge(n_src, n_dst, e, seed):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, n_src, (e,), generator=g),
                      torch.randint(0, n_dst, (e,), generator=g)])
    extra = torch.stack([torch.randint(0, n_src, (n_dst,), generator=g),
                         torch.arange(n_dst)])  # (duplicates kept: each its own softmax term in both layers)
    return torch.cat([ei, extra], 1)


@pytest.mark.parametrize('in_channels', [5, (5, 3)])
@pytest.mark.parametrize('concat', [True, False])
@pytest.mark.parametrize('edge_dim', [None, 2])
@pytest.mark.parametrize('fused', [True, False])
def test_plain_heads_match_transformer_conv(in_channels, concat, edge_dim,
                                            fused):
    """Plain heads without self-loops are TransformerConv without its root
    weight; with edge_values and the same edge projection for scores and
    values, TransformerConv's edge_dim too. Values, weights and gradients,
    bipartite included."""
    from torch_geometric.nn import TransformerConv
    bipartite = isinstance(in_channels, tuple)
    ours = LaplacianDiffusionConv(in_channels, 4, heads=3, concat=concat,
                                  laplacian_heads=0, add_self_loops=False,
                                  bias=False, edge_dim=edge_dim,
                                  edge_values=edge_dim is not None,
                                  fused=fused).double()
    theirs = TransformerConv(in_channels, 4, heads=3, concat=concat,
                             root_weight=False, edge_dim=edge_dim).double()
    for name in ('lin_query', 'lin_key', 'lin_value'):
        _copy_linear(getattr(theirs, name), getattr(ours, name))
    if edge_dim is not None:
        _copy_linear(theirs.lin_edge, ours.attention.lin_edge)
        _copy_linear(ours.lin_edge_value, ours.attention.lin_edge)
    n_src, n_dst = 8, (5 if bipartite else 8)
    ei = _every_target_has_an_edge(n_src, n_dst, 20, seed=1)
    edge_attr = (torch.randn(ei.size(1), 2, dtype=torch.float64)
                 if edge_dim is not None else None)
    x_src = torch.randn(n_src, 5, dtype=torch.float64)
    x_dst = torch.randn(n_dst, 3, dtype=torch.float64) if bipartite else None
    inputs = []
    for _ in range(2):
        xs = x_src.clone().requires_grad_(True)
        xd = x_dst.clone().requires_grad_(True) if bipartite else None
        inputs.append((xs, xd))
    (xs1, xd1), (xs2, xd2) = inputs
    out, (edges, alpha) = ours((xs1, xd1) if bipartite else xs1, ei,
                               edge_attr=edge_attr,
                               return_attention_weights=True)
    ref_out, (ref_edges, ref_alpha) = theirs(
        (xs2, xd2) if bipartite else xs2, ei, edge_attr=edge_attr,
        return_attention_weights=True)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(edges, ref_edges)
    torch.testing.assert_close(alpha, ref_alpha)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref_out * weights).sum().backward()
    torch.testing.assert_close(xs1.grad, xs2.grad)
    if bipartite:
        torch.testing.assert_close(xd1.grad, xd2.grad)
    for name in ('lin_query', 'lin_key', 'lin_value'):
        torch.testing.assert_close(getattr(ours, name).weight.grad,
                                   getattr(theirs, name).weight.grad)


@pytest.mark.parametrize('in_channels', [5, (5, 5), (5, 3)])
@pytest.mark.parametrize('fused', [True, False])
def test_laplacian_heads_match_transformer_conv_with_negated_root(
        in_channels, fused):
    """A Laplacian head at step 1, ``A V - x_dst W_r``, is TransformerConv
    with root weight ``-W_r`` (lin_value, or lin_root across feature sizes)
    when every target has an incoming edge."""
    from torch_geometric.nn import TransformerConv
    ours = LaplacianDiffusionConv(in_channels, 4, heads=2,
                                  add_self_loops=False, bias=False,
                                  fused=fused).double()
    theirs = TransformerConv(in_channels, 4, heads=2).double()
    for name in ('lin_query', 'lin_key', 'lin_value'):
        _copy_linear(getattr(theirs, name), getattr(ours, name))
    root = ours.lin_root if ours.lin_root is not None else ours.lin_value
    assert (ours.lin_root is not None) == (in_channels == (5, 3))
    _copy_linear(theirs.lin_skip, root, sign=-1.0)
    f_dst = in_channels[1] if isinstance(in_channels, tuple) else 5
    x_src = torch.randn(8, 5, dtype=torch.float64)
    x = x_src if isinstance(in_channels, int) else (
        x_src, torch.randn(6, f_dst, dtype=torch.float64))
    n_dst = 8 if isinstance(in_channels, int) else 6
    ei = _every_target_has_an_edge(8, n_dst, 16, seed=2)
    torch.testing.assert_close(ours(x, ei), theirs(x, ei))


# --------------------------------------------------------------------------
# torch_geometric.EdgeIndex input.
# --------------------------------------------------------------------------
class CountSorts(TorchDispatchMode):
    """Counts the sorts run below it (``aten.sort``/``argsort``, whoever
    calls them: EdgeIndex, EdgeCSR, index_sort)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.sort, torch.ops.aten.argsort):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _edge_index(ei, size, order):
    out = EdgeIndex(ei, sparse_size=size)
    perm = None
    if order is not None:
        out, perm = out.sort_by(order)
    return out, perm


@pytest.mark.parametrize('order', ['col', 'row', None])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('bipartite', [False, True])
def test_edge_index_input_values_and_gradients(order, fused, bipartite):
    n_src, n_dst = 9, (5 if bipartite else 9)
    conv = LaplacianDiffusionConv((5, 5) if bipartite else 5, 3, heads=2,
                                  laplacian_heads=1, edge_dim=2,
                                  fill_value='max', fused=fused).double()
    ei = ref.random_graph(n_src, 30, seed=6, allow_self_loops=True)
    ei = ei[:, ei[1] < n_dst]
    edge_attr = torch.randn(ei.size(1), 2, dtype=torch.float64)
    x = torch.randn(n_src, 5, dtype=torch.float64)

    def run(edge_index, attr):
        xx = x.clone().requires_grad_(True)
        inp = (xx, xx[:n_dst]) if bipartite else xx
        out = conv(inp, edge_index, edge_attr=attr)
        conv.zero_grad()
        out.square().sum().backward()
        return out, xx.grad, conv.lin_query.weight.grad.clone()

    expected = run(ei, edge_attr)
    edge_index, perm = _edge_index(ei, (n_src, n_dst), order)
    got = run(edge_index, edge_attr if perm is None else edge_attr[perm])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('fused', [True, False])
def test_edge_index_uses_its_cached_sort(fused):
    """A target-sorted EdgeIndex is never sorted; a source-sorted one once
    (its cached transpose); a plain tensor the kernel sorts on every new
    graph (its CSR), which an EdgeIndex spares."""
    n = 12
    conv = LaplacianDiffusionConv(4, 2, heads=2, fused=fused)
    x = torch.randn(n, 4)
    ei = ref.random_graph(n, 40, seed=7)
    col, _ = _edge_index(ei, (n, n), 'col')
    row, _ = _edge_index(ei, (n, n), 'row')
    counts = {}
    for name, edge_index in (('col', col), ('row', row), ('plain', ei)):
        for call in range(2):
            conv.kernel_cache.clear()  # as for a new graph every step
            with CountSorts() as sorts:
                conv(x, edge_index)
            counts[name, call] = sorts.count
    assert counts['col', 0] == counts['col', 1] == 0
    assert counts['row', 0] == 1 and counts['row', 1] == 0
    assert counts['plain', 0] == counts['plain', 1] == int(fused)
    # The count sees a sort where there is one.
    with CountSorts() as sorts:
        EdgeIndex(ei, sparse_size=(n, n)).sort_by('col')
    assert sorts.count == 1


@pytest.mark.parametrize('layout', ['csr', 'coo', 'csc'])
@pytest.mark.parametrize('bipartite', [False, True])
def test_attention_weights_come_in_the_input_layout(layout, bipartite):
    """As PyG's GATConv: a torch.sparse input gives ``(adj, alpha)`` with
    ``adj`` of its layout and shape holding the weights, ``alpha`` its
    values; the same weights as for the ``[2, E]`` input."""
    from torch_geometric.nn import GATConv
    n_src, n_dst = 7, (4 if bipartite else 7)
    conv = LaplacianDiffusionConv((3, 3) if bipartite else 3, 2, heads=3,
                                  add_self_loops=False).double()
    x = torch.randn(n_src, 3, dtype=torch.float64)
    inp = (x, x[:n_dst]) if bipartite else x
    ei = ref.random_graph(n_src, 16, seed=8)
    ei = torch.unique(ei[:, ei[1] < n_dst], dim=1)
    out, (edges, alpha) = conv(inp, ei, return_attention_weights=True)
    make = {'csr': to_torch_csr_tensor, 'coo': to_torch_coo_tensor,
            'csc': to_torch_csc_tensor}[layout]
    adj_t = make(ei.flip(0), size=(n_dst, n_src))  # [N_dst, N_src]
    if layout == 'coo':
        adj_t = adj_t.coalesce()
    out2, (weights, values) = conv(inp, adj_t, return_attention_weights=True)
    torch.testing.assert_close(out2, out)
    assert weights.layout == adj_t.layout
    assert weights.shape == (n_dst, n_src, 3)
    assert torch.equal(values, weights.values())
    dense = weights.to_dense()
    torch.testing.assert_close(dense[edges[1], edges[0]], alpha)
    assert int((dense.abs().sum(-1) > 0).sum()) == ei.size(1)
    if layout == 'csr' and not bipartite:  # the convention is GATConv's
        gat = GATConv(3, 2, heads=3, add_self_loops=False).double()
        _, (gat_weights, gat_alpha) = gat(x, adj_t,
                                          return_attention_weights=True)
        assert gat_weights.layout == adj_t.layout
        assert gat_weights.shape == weights.shape
        assert torch.equal(gat_alpha, gat_weights.values())


@pytest.mark.parametrize('fused', ['auto', True])
def test_message_hooks_see_every_call_while_registered(fused):
    """A hook registered through the conv's MessagePassing registrars runs
    on every call (the rule keeps propagate while it is in place), sees the
    attention weights, and once removed the kernel runs again."""
    conv = LaplacianDiffusionConv(4, 2, heads=2, fused=fused)
    x, ei = torch.randn(8, 4), ref.random_graph(8, 20, seed=9)
    seen = []
    handle = conv.register_message_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0]['alpha']))
    out = conv(x, ei)
    assert len(seen) == 1 and seen[0].shape == (20 - int((ei[0] == ei[1]).sum()) + 8, 2)
    assert len(conv.kernel_cache) == 0  # propagate ran
    handle.remove()
    handle.remove()  # (twice is harmless, as for RemovableHandle)
    assert conv.num_propagate_hooks == 0
    torch.testing.assert_close(conv(x, ei), out)
    assert len(seen) == 1 and len(conv.kernel_cache) == 1  # the kernel ran


@pytest.mark.parametrize('in_channels', [8, (8, 5)])
def test_compile_fullgraph_bipartite(in_channels):
    """The bipartite forward (self-loops on the first targets, a separate
    target projection) traces without graph breaks too."""
    torch._dynamo.reset()
    conv = LaplacianDiffusionConv(in_channels, 4, heads=2, laplacian_heads=1)
    f_dst = in_channels[1] if isinstance(in_channels, tuple) else 8
    x = (torch.randn(10, 8), torch.randn(6, f_dst))
    ei = ref.random_graph(10, 30, seed=0)
    ei = ei[:, ei[1] < 6]
    compiled = torch.compile(conv, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(x, ei), conv(x, ei))
