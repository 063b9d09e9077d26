"""Bad input gets a ValueError/TypeError whose message names the argument."""
import warnings

import pytest
import torch
from torch_geometric.utils import to_torch_csr_tensor

from pyg_ple import (AttentionAdjacency, AttentionGraph,
                     LaplacianDiffusionConv, PLETransformerBlock)
from pyg_ple.edges import (full_edge_index, knn_edge_index,
                           sequence_edge_index)

N, F = 5, 4
EI = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])


@pytest.fixture
def conv():
    return LaplacianDiffusionConv(F, 3, heads=2)


@pytest.fixture
def x():
    return torch.randn(N, F)


# --------------------------------------------------------------------------
# edge_index.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bad', [
    torch.tensor([[0, 1], [1, N]]),  # target out of range
    torch.tensor([[N + 3, 1], [1, 2]]),  # source out of range
    torch.tensor([[-1, 1], [1, 2]]),  # negative
])
@pytest.mark.parametrize('fixed', [False, True])
def test_edge_index_out_of_range(conv, x, bad, fixed):
    kw = {'edge_weight': torch.ones(bad.size(1))} if fixed else {}
    with pytest.raises(ValueError, match='edge_index'):
        conv(x, bad, **kw)


def test_edge_index_float_dtype(conv, x):
    with pytest.raises(TypeError, match='edge_index'):
        conv(x, EI.float())


def test_edge_index_bool_dtype(conv, x):
    with pytest.raises(TypeError, match='edge_index'):
        conv(x, EI.bool())


@pytest.mark.parametrize('bad', [
    torch.tensor([0, 1, 2]),  # 1-D
    torch.tensor([[0, 1], [1, 2], [2, 3]]),  # [3, E]
    torch.zeros(2, 2, 2, dtype=torch.long),  # 3-D
])
def test_edge_index_wrong_shape(conv, x, bad):
    with pytest.raises(ValueError, match='edge_index'):
        conv(x, bad)


def test_edge_index_not_a_tensor(conv, x):
    with pytest.raises(TypeError, match='edge_index'):
        conv(x, [[0, 1], [1, 2]])


def test_sparse_adjacency_wrong_size(conv, x):
    adj_t = to_torch_csr_tensor(EI, size=(N + 2, N + 2)).t()
    with pytest.raises(ValueError, match='edge_index'):
        conv(x, adj_t)


def test_edge_weight_with_sparse_adjacency(conv, x):
    adj_t = to_torch_csr_tensor(EI, size=(N, N)).t()
    with pytest.raises(ValueError, match='edge_weight'):
        conv(x, adj_t, edge_weight=torch.ones(4))


# --------------------------------------------------------------------------
# x.
# --------------------------------------------------------------------------
def test_x_wrong_feature_size(conv):
    with pytest.raises(ValueError, match="'x'"):
        conv(torch.randn(N, F + 1), EI)


def test_x_integer(conv):
    with pytest.raises(TypeError, match="'x'"):
        conv(torch.ones(N, F, dtype=torch.long), EI)


def test_x_wrong_feature_size_dense(conv):
    with pytest.raises(ValueError, match="'x'"):
        conv.forward_dense(torch.randn(2, 3, F + 2))


def test_x_wrong_feature_size_adjacency():
    adj = AttentionAdjacency(F, 2)
    with pytest.raises(ValueError, match="'x'"):
        adj(torch.randn(N, F - 1), EI)


# --------------------------------------------------------------------------
# edge_weight / edge_attr.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('length', [3, 5, 0])
def test_edge_weight_wrong_length(conv, x, length):
    with pytest.raises(ValueError, match='edge_weight'):
        conv(x, EI, edge_weight=torch.ones(length))


def test_edge_weight_negative(conv, x):
    with pytest.raises(ValueError, match='edge_weight'):
        conv(x, EI, edge_weight=torch.tensor([1.0, -0.5, 1.0, 1.0]))


def test_edge_weight_wrong_dim(conv, x):
    with pytest.raises(ValueError, match='edge_weight'):
        conv(x, EI, edge_weight=torch.ones(4, 2))


def test_edge_attr_wrong_length():
    conv = LaplacianDiffusionConv(F, 3, heads=2, edge_dim=2)
    with pytest.raises(ValueError, match='edge_attr'):
        conv(torch.randn(N, F), EI, edge_attr=torch.randn(3, 2))


def test_edge_attr_missing():
    conv = LaplacianDiffusionConv(F, 3, heads=2, edge_dim=2)
    with pytest.raises(ValueError, match='edge_attr'):
        conv(torch.randn(N, F), EI)


# --------------------------------------------------------------------------
# Constructor arguments.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', [-1, 3, 10, 1.5, '1'])
def test_laplacian_heads_out_of_range(lap):
    with pytest.raises((ValueError, TypeError), match='laplacian_heads'):
        LaplacianDiffusionConv(F, 3, heads=2, laplacian_heads=lap)


@pytest.mark.parametrize('lap', [-1, 5])
def test_block_laplacian_heads_out_of_range(lap):
    with pytest.raises(ValueError, match='laplacian_heads'):
        PLETransformerBlock(8, 4, laplacian_heads=lap)


@pytest.mark.parametrize('lap', [0, 1, 2, None])
def test_laplacian_heads_valid(lap):
    LaplacianDiffusionConv(F, 3, heads=2, laplacian_heads=lap)


@pytest.mark.parametrize('norm', ['lap', 'RW', None, 'symmetric'])
def test_unknown_normalization(norm):
    with pytest.raises(ValueError, match='normalization'):
        LaplacianDiffusionConv(F, 3, normalization=norm)


def test_block_channels_not_multiple_of_heads():
    with pytest.raises(ValueError, match='channels'):
        PLETransformerBlock(10, 4)


# --------------------------------------------------------------------------
# Dense / sequence path.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('shape', [(N, F), (2, 2, 3, F), (F, )])
def test_forward_dense_needs_3d(conv, shape):
    with pytest.raises(ValueError, match="'x'"):
        conv.forward_dense(torch.randn(*shape))


@pytest.mark.parametrize('kw', [dict(causal=True),
                                dict(mask=torch.ones(N, dtype=torch.bool))])
def test_block_sequence_call_with_2d_x(kw):
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match=r"\[B, T, F\]"):
        block(torch.randn(N, 8), **kw)


def test_block_4d_x():
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match="'x'"):
        block(torch.randn(2, 3, 4, 8))


def test_block_sequence_with_edge_index():
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match='edge_index'):
        block(torch.randn(2, 3, 8), EI)


@pytest.mark.parametrize('shape', [(2, 4), (4, 4), (2, 3, 4), (1, 2, 3, 3),
                                   (3, )])
def test_mask_wrong_shape(conv, shape):
    x = torch.randn(2, 3, F)
    with pytest.raises(ValueError, match='mask'):
        conv.forward_dense(x, mask=torch.ones(*shape, dtype=torch.bool))


def test_mask_wrong_dtype(conv):
    x = torch.randn(2, 3, F)
    with pytest.raises(TypeError, match='mask'):
        conv.forward_dense(x, mask=torch.ones(2, 3))


def test_block_mask_wrong_shape():
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match='mask'):
        block(torch.randn(2, 3, 8), mask=torch.ones(2, 5, dtype=torch.bool))


def test_block_batch_wrong_length():
    block = PLETransformerBlock(8, 2)
    with pytest.raises(ValueError, match='batch'):
        block(torch.randn(5, 8), batch=torch.zeros(4, dtype=torch.long))


# --------------------------------------------------------------------------
# Edge builders and the graph object.
# --------------------------------------------------------------------------
def test_sequence_edge_index_bad_args():
    with pytest.raises(ValueError, match='num_tokens'):
        sequence_edge_index(-1)
    with pytest.raises(ValueError, match='window'):
        sequence_edge_index(4, window=-2)
    with pytest.raises(ValueError, match='batch_size'):
        sequence_edge_index(4, batch_size=-1)


def test_full_edge_index_bad_args():
    with pytest.raises(ValueError, match='batch'):
        full_edge_index(torch.tensor([1, 0, 1]))  # unsorted
    with pytest.raises(TypeError, match='batch'):
        full_edge_index(torch.tensor([0.0, 1.0]))


def test_knn_bad_args():
    with pytest.raises(ValueError, match="'k'"):
        knn_edge_index(torch.randn(4, 2), 0)
    with pytest.raises(ValueError, match="'x'"):
        knn_edge_index(torch.randn(4), 1)


def test_graph_bad_head():
    g = AttentionGraph(EI, torch.rand(4, 2), N)
    with pytest.raises(ValueError, match='head'):
        g.topk(1, head=2)
    with pytest.raises(ValueError, match='head'):
        g.threshold(0.1, head=-1)
    with pytest.raises(ValueError, match="'k'"):
        g.topk(-1)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_edge_weight_not_finite(conv, x, bad):
    """NaN/inf scans are opt-in (``pyg_ple.validation.finite_checks``)."""
    from pyg_ple.validation import finite_checks
    w = torch.tensor([1.0, bad, 1.0, 1.0])
    with finite_checks():
        with pytest.raises(ValueError, match='edge_weight'):
            conv(x, EI, edge_weight=w)
    # Off by default: no error (and no device sync).
    conv(x, EI, edge_weight=w)


def test_finite_checks_cover_edge_attr():
    conv = LaplacianDiffusionConv(F, 3, heads=2, edge_dim=2)
    x, ea = torch.randn(N, F), torch.randn(4, 2)
    ea[2, 1] = float('nan')
    from pyg_ple.validation import finite_checks
    with finite_checks():
        with pytest.raises(ValueError, match="'edge_attr'"):
            conv(x, EI, edge_attr=ea)
        with pytest.raises(ValueError, match="'edge_attr'"):
            conv.attention(x, EI, edge_attr=ea)
    conv(x, EI, edge_attr=ea)  # off by default


@pytest.mark.parametrize('weighted', [True, False])
def test_weighted_sparse_adjacency_warns(conv, x, weighted):
    values = torch.tensor([0.5, 2.0, 1.0, 3.0]) if weighted else None
    adj_t = to_torch_csr_tensor(EI, values, size=(N, N)).t()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        conv(x, adj_t)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
                and "'edge_index'" in str(w.message)]
    if weighted:
        assert len(messages) == 1 and "'edge_weight'" in messages[0] and '[2, E]' in messages[0]
    else:
        assert messages == []


# --------------------------------------------------------------------------
# Value checks run once per tensor object and version.
# --------------------------------------------------------------------------
# Reductions and scalar reads that the index-range and sign checks cost (a host-device sync each on a GPU).
HOST_READS = {'aten::item', 'aten::_local_scalar_dense', 'aten::is_nonzero', 'aten::min', 'aten::max', 'aten::amin',
              'aten::amax'}


def host_reads(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in HOST_READS]


@pytest.mark.parametrize('fixed', [False, True])
@pytest.mark.parametrize('fused', [False, True])
def test_value_checks_run_once_per_graph(fixed, fused):
    """A three-layer stack checks a graph's values in its first layer of its first step only."""
    convs = [LaplacianDiffusionConv(F, 2, heads=2, fused=fused) for _ in range(3)]
    x = torch.randn(30, F)
    ei = torch.randint(0, 30, (2, 90))
    kw = {'edge_weight': torch.rand(90)} if fixed else {}

    def step(edge_index):
        h = x
        for conv in convs:
            h = conv(h, edge_index, **kw)
        return h

    first = host_reads(lambda: step(ei))
    if not fused:  # (the kernel path also reads values to build each layer's CSR, once per graph)
        assert first.count('aten::amin') == first.count('aten::amax') == 1, first  # one range check, 3 layers
        assert len(first) == (5 if fixed else 2), first  # + the sign of edge_weight: one bool() read
    assert host_reads(lambda: step(ei)) == []  # the same graph again: nothing read
    assert len(host_reads(lambda: step(ei.clone()))) > 0  # another tensor object: checked
    ei[1, 0] = 30  # in place: the version changes and the new value is checked
    with pytest.raises(ValueError, match='edge_index'):
        step(ei)


def test_value_checks_on_inference_tensors():
    """Inference tensors have no version counter: they are checked every time."""
    conv = LaplacianDiffusionConv(F, 2, heads=2)
    with torch.inference_mode():
        ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
        x = torch.randn(N, F)
        assert conv(x, ei).shape == (N, 4)
        assert len(host_reads(lambda: conv(x, ei))) > 0
        with pytest.raises(ValueError, match='edge_index'):
            conv(x, torch.tensor([[0, 1, 2], [1, 2, N]]))
