"""All-pairs attention without listing the pairs: size buckets, the op against dense float64 math, the conv and the
block against the per-edge path over the listed pairs (values and gradients)."""
from __future__ import annotations

import itertools
from copy import deepcopy

import pytest
import torch

from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock, full_edge_index
from pyg_ple.edges import all_pairs_edge_attr
from pyg_ple.ops.all_pairs import all_pairs_attention, graph_buckets, size_buckets


def _batch(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def _native_edges(sizes, per_node=2, seed=0):
    """Random edges within each graph, repeats and self-loops included."""
    g = torch.Generator().manual_seed(seed)
    edges, start = [], 0
    for n in sizes:
        for _ in range(per_node * n):
            i, j = torch.randint(n, (2,), generator=g).tolist()
            edges.append((start + j, start + i))
        start += n
    return torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)


def _dense_reference(q, k, v, sizes, edge_index=None, bias=None):
    """Per graph, softmax(Q K^T / sqrt(C) + B) V written out in float64 (B: the native edges' bias, summed)."""
    C = q.size(-1)
    out, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        scores = torch.einsum('ihc,jhc->hij', q[sl], k[sl]) / C ** 0.5
        if bias is not None:
            inside = (edge_index[1] >= start) & (edge_index[1] < start + n)
            extra = torch.zeros_like(scores)
            for e in inside.nonzero().view(-1).tolist():
                i, j = int(edge_index[1, e]) - start, int(edge_index[0, e]) - start
                extra[:, i, j] = extra[:, i, j] + bias[e]
            scores = scores + extra
        out.append(torch.einsum('hij,jhc->ihc', scores.softmax(-1), v[sl]))
        start += n
    return torch.cat(out)


def _cost(groups, sizes, call):
    return sum(len(g) * int(sizes[g].max()) ** 2 + call for g in groups)


@pytest.mark.parametrize('seed', range(5))
def test_size_buckets_are_optimal_over_every_cut_of_the_sorted_sizes(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 60, (7,), generator=g)
    call = int(torch.randint(0, 3000, (1,), generator=g))
    groups = size_buckets(sizes, call)
    assert sorted(torch.cat(groups).tolist()) == list(range(7))
    order = torch.argsort(sizes, stable=True)
    best = min(_cost(torch.tensor_split(order, list(cuts)), sizes, call)
               for r in range(7) for cuts in itertools.combinations(range(1, 7), r))
    assert _cost(groups, sizes, call) == best


def test_size_buckets_skip_empty_graphs_and_one_graph_is_one_bucket():
    groups = size_buckets(torch.tensor([3, 0, 5]))
    assert sorted(torch.cat(groups).tolist()) == [0, 2]
    (bucket,) = graph_buckets(None, 4)
    assert bucket.index.tolist() == [[0, 1, 2, 3]] and bool(bucket.valid.all())


# One graph of 444 nodes beside small ones and a single node, as in a Peptides-func batch.
SIZES = [[5, 1, 12, 3, 7, 30, 2], [1], [444, 3, 9, 1, 20]]


@pytest.mark.parametrize('sizes', SIZES)
@pytest.mark.parametrize('with_bias', [False, True])
def test_all_pairs_attention_matches_dense_float64_math_with_gradients(sizes, with_bias):
    torch.manual_seed(0)
    N, H, C = sum(sizes), 2, 4
    q, k, v = (torch.randn(N, H, C, dtype=torch.float64, requires_grad=True) for _ in range(3))
    batch = _batch(sizes)
    edge_index = _native_edges(sizes) if with_bias else None
    bias = torch.randn(edge_index.size(1), H, dtype=torch.float64, requires_grad=True) if with_bias else None
    got = all_pairs_attention(q, k, v, batch, edge_index, bias)
    want = _dense_reference(q, k, v, sizes, edge_index, bias)
    torch.testing.assert_close(got, want)
    inputs = [q, k, v] + ([bias] if with_bias else [])
    weight = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * weight).sum(), inputs),
                    torch.autograd.grad((want * weight).sum(), inputs)):
        torch.testing.assert_close(a, b)


def test_all_pairs_attention_needs_the_edges_of_its_bias_and_handles_no_nodes():
    q = torch.randn(3, 1, 2)
    with pytest.raises(ValueError, match="'score_bias' needs the 'edge_index'"):
        all_pairs_attention(q, q, q, score_bias=torch.zeros(2, 1))
    empty = torch.randn(0, 2, 3)
    assert all_pairs_attention(empty, empty, empty, torch.empty(0, dtype=torch.long)).shape == (0, 2, 3)


def _listed_copy(conv):
    """The same layer on listed pairs that already hold every self pair."""
    listed = deepcopy(conv)
    listed.add_self_loops = listed.attention.add_self_loops = False
    return listed


@pytest.mark.parametrize('kwargs', [dict(), dict(laplacian_heads=1, degree_scaler=True),
                                    dict(laplacian_heads=0, degree_scaler='linear', concat=False)])
@pytest.mark.parametrize('edge_dim', [None, 3])
def test_conv_all_pairs_equals_the_per_edge_path_over_the_listed_pairs(kwargs, edge_dim):
    torch.manual_seed(1)
    sizes = SIZES[0]
    batch, N = _batch(sizes), sum(sizes)
    conv = LaplacianDiffusionConv(8, 4, heads=2, edge_dim=edge_dim, **kwargs).double()
    with torch.no_grad():
        if conv.deg_coef is not None:
            conv.deg_coef.normal_()
    x = torch.randn(N, 8, dtype=torch.float64, requires_grad=True)
    native = _native_edges(sizes)
    edge_attr = torch.randn(native.size(1), 3, dtype=torch.float64) if edge_dim else None
    got = conv.forward_all_pairs(x, batch, native if edge_dim else None, edge_attr)
    listed = _listed_copy(conv)
    if edge_dim:
        pairs, pair_attr = all_pairs_edge_attr(native, edge_attr, batch)
    else:
        pairs, pair_attr = full_edge_index(batch), None
    want = listed(x, pairs, edge_attr=pair_attr)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got.square().sum(), [x, *conv.parameters()]),
                    torch.autograd.grad(want.square().sum(), [x, *listed.parameters()])):
        torch.testing.assert_close(a, b)


def test_conv_all_pairs_refuses_what_it_cannot_do():
    x, batch = torch.randn(4, 8), torch.zeros(4, dtype=torch.long)
    edge_index, edge_attr = torch.tensor([[0, 1], [1, 0]]), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"edge_dim=3: pass the native 'edge_index'"):
        LaplacianDiffusionConv(8, 4, heads=2, edge_dim=3).forward_all_pairs(x, batch)
    with pytest.raises(ValueError, match="no edge_dim"):
        LaplacianDiffusionConv(8, 4, heads=2).forward_all_pairs(x, batch, edge_index, edge_attr)
    with pytest.raises(ValueError, match="'edge_values'"):
        LaplacianDiffusionConv(8, 4, heads=2, edge_dim=3, edge_values=True).forward_all_pairs(
            x, batch, edge_index, edge_attr)
    with pytest.raises(ValueError, match="different graphs"):
        LaplacianDiffusionConv(8, 4, heads=2, edge_dim=3).forward_all_pairs(
            x, torch.tensor([0, 0, 1, 1]), torch.tensor([[0], [3]]), torch.randn(1, 3))


def test_block_all_pairs_with_bonds_equals_listed_pairs_and_its_attention_graph():
    torch.manual_seed(2)
    sizes = [6, 1, 9]
    batch, N = _batch(sizes), sum(sizes)
    block = PLETransformerBlock(8, 2, edge_dim=3, degree_scaler=True).double().eval()
    x = torch.randn(N, 8, dtype=torch.float64)
    native = _native_edges(sizes)
    edge_attr = torch.randn(native.size(1), 3, dtype=torch.float64)
    got = block(x, native, batch=batch, edge_attr=edge_attr, all_pairs=True)
    listed = deepcopy(block)
    listed.conv = _listed_copy(block.conv)
    pairs, pair_attr = all_pairs_edge_attr(native, edge_attr, batch)
    torch.testing.assert_close(got, listed(x, pairs, batch=batch, edge_attr=pair_attr))
    graph = block.attention_graph(x, native, batch, edge_attr, all_pairs=True)
    want = listed.conv.attention(block.norm1(x), pairs, pair_attr, batch)
    assert graph.edge_index.size(1) == sum(n * n for n in sizes)
    torch.testing.assert_close(graph.to_dense(), want.to_dense())


def test_block_all_pairs_on_an_empty_batch():
    block = PLETransformerBlock(8, 2, edge_dim=3).eval()
    out = block(torch.randn(0, 8), torch.empty(2, 0, dtype=torch.long), batch=torch.empty(0, dtype=torch.long),
                edge_attr=torch.empty(0, 3), all_pairs=True)
    assert out.shape == (0, 8)


def test_all_pairs_and_dense_paths_subtract_the_root_values_of_a_layer_with_lin_root():
    torch.manual_seed(3)
    sizes = [4, 6]
    batch, N = _batch(sizes), sum(sizes)
    conv = LaplacianDiffusionConv((-1, -1), 4, heads=2, laplacian_heads=1).eval()
    x = torch.randn(N, 8)
    conv(x, full_edge_index(batch))  # initialises the lazy projections, lin_root among them
    assert conv.lin_root is not None
    want = _listed_copy(conv)(x, full_edge_index(batch))
    torch.testing.assert_close(conv.forward_all_pairs(x, batch), want)
    torch.testing.assert_close(conv.forward_dense(x[:4].unsqueeze(0)).squeeze(0), want[:4])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bias_gradient_at_the_pairs_equals_sdpa_through_the_whole_mask(dtype):
    torch.manual_seed(4)
    sizes = SIZES[2]
    N, H, C = sum(sizes), 2, 4
    batch, edge_index = _batch(sizes), _native_edges(sizes, per_node=3)
    inputs = [torch.randn(N, H, C, dtype=dtype, requires_grad=True) for _ in range(3)]
    inputs.append(torch.randn(edge_index.size(1), H, dtype=dtype, requires_grad=True))
    results = []
    for fused in (True, False):
        out = all_pairs_attention(*inputs[:3], batch, edge_index, inputs[3], fused=fused)
        results.append((out, torch.autograd.grad(out.sin().sum(), inputs)))
    (out, grads), (ref, ref_grads) = results
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_block_refuses_all_pairs_on_a_token_sequence():
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match="a \\[B, T, F\\] sequence takes 'mask' and 'causal'"):
        block(torch.randn(2, 3, 8), all_pairs=True)
