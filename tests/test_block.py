"""Dense (sequence / all-pairs) path vs sparse graph path, for the conv and
the PLETransformerBlock."""
import pytest
import torch

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock
from pyg_ple.edges import full_edge_index, sequence_edge_index
from torch_geometric.utils import to_dense_batch

LAPS = [0, 'all', 'mixed']


def lap_arg(choice, heads):
    return {'all': None, 'mixed': heads // 2}.get(choice, choice)


def dense_reference(conv, x, allowed, lap):
    """Reference forward_dense: x [B, T, F], allowed [B, T, T] bool."""
    outs = []
    for b in range(x.size(0)):
        q, k, v = ref.project_qkv(conv, x[b])
        a = ref.attention_matrices(q, k, allowed[b])
        out = ref.diffuse(a, v, ref.laplacian_head_mask(conv.heads, lap),
                          conv.eta.detach(), allowed[b])
        outs.append(ref.combine_heads(out, conv.concat, conv.bias))
    return torch.stack(outs)


def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


# --------------------------------------------------------------------------
# conv.forward_dense against the dense reference.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', LAPS)
@pytest.mark.parametrize('kind', ['none', 'causal', 'padding', 'pairs',
                                  'batch_pairs', 'padding_causal'])
@pytest.mark.parametrize('concat', [True, False])
def test_forward_dense_matches_reference(lap, kind, concat):
    B, T, F, H, C = 3, 5, 6, 2, 3
    laplacian_heads = lap_arg(lap, H)
    conv = LaplacianDiffusionConv(F, C, heads=H, concat=concat,
                                  laplacian_heads=laplacian_heads,
                                  step_size=0.9).double()
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    x = torch.randn(B, T, F, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1])
    pad = torch.arange(T).view(1, -1) < lengths.view(-1, 1)  # [B, T]
    g = torch.Generator().manual_seed(1)
    rand_pairs = torch.rand(B, T, T, generator=g) < 0.5
    rand_pairs[1, 2] = False  # a row without any key
    kwargs, allowed = {}, torch.ones(B, T, T, dtype=torch.bool)
    if kind == 'causal':
        kwargs = dict(causal=True)
        allowed = causal_mask(T).expand(B, T, T)
    elif kind == 'padding':
        kwargs = dict(mask=pad)
        allowed = pad.unsqueeze(1) & pad.unsqueeze(2)
    elif kind == 'padding_causal':
        kwargs = dict(mask=pad, causal=True)
        allowed = pad.unsqueeze(1) & pad.unsqueeze(2) & causal_mask(T)
    elif kind == 'pairs':
        m = rand_pairs[0]
        kwargs = dict(mask=m.unsqueeze(0))  # a shared pair mask is [1, T, T]
        allowed = m.expand(B, T, T)
    elif kind == 'batch_pairs':
        kwargs = dict(mask=rand_pairs)
        allowed = rand_pairs
    out = conv.forward_dense(x, **kwargs)
    assert out.shape == (B, T, H * C if concat else C)
    expected = dense_reference(conv, x, allowed, laplacian_heads)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize('lap', LAPS)
def test_forward_dense_row_without_key_is_zero(lap):
    B, T, H = 2, 4, 2
    conv = LaplacianDiffusionConv(3, 2, heads=H, laplacian_heads=lap_arg(
        lap, H), bias=False)
    x = torch.randn(B, T, 3, requires_grad=True)
    m = torch.ones(B, T, T, dtype=torch.bool)
    m[0, 1] = False
    m[1, 3] = False
    out = conv.forward_dense(x, mask=m)
    assert torch.equal(out[0, 1], torch.zeros(H * 2))
    assert torch.equal(out[1, 3], torch.zeros(H * 2))
    assert out[0, 0].abs().sum() > 0
    # Fully padded sequence: no real token -> zero update, finite grads.
    pad = torch.tensor([[True, True, False, False], [False] * 4])
    out = conv.forward_dense(x, mask=pad)
    assert torch.equal(out[1], torch.zeros(T, H * 2))
    assert torch.equal(out[0, 2:], torch.zeros(2, H * 2))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('lap', LAPS)
@pytest.mark.parametrize('causal', [False, True])
def test_forward_dense_equals_sparse_conv(lap, causal):
    B, T, F, H = 2, 6, 8, 4
    conv = LaplacianDiffusionConv(F, 2, heads=H, laplacian_heads=lap_arg(
        lap, H))
    x = torch.randn(B, T, F)
    dense = conv.forward_dense(x, causal=causal)
    sparse = conv(x.reshape(B * T, F),
                  sequence_edge_index(T, B, causal=causal)).reshape(B, T, -1)
    torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------
# PLETransformerBlock: sequence path vs graph path.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('lap', LAPS)
@pytest.mark.parametrize('causal', [True, False])
def test_block_sequence_equals_graph(lap, causal):
    B, T, F, H = 3, 7, 16, 4
    block = PLETransformerBlock(F, H, laplacian_heads=lap_arg(lap, H)).eval()
    x = torch.randn(B, T, F)
    seq = block(x, causal=causal)
    assert seq.shape == (B, T, F)
    graph = block(x.reshape(B * T, F),
                  sequence_edge_index(T, B, causal=causal)).reshape(B, T, F)
    torch.testing.assert_close(seq, graph, atol=1e-5, rtol=0)


@pytest.mark.parametrize('lap', LAPS)
def test_block_windowed_mask_equals_windowed_edges(lap):
    B, T, F, H, w = 2, 8, 8, 2, 2
    block = PLETransformerBlock(F, H, laplacian_heads=lap_arg(lap, H)).eval()
    x = torch.randn(B, T, F)
    i = torch.arange(T)
    band = (i.view(-1, 1) - i.view(1, -1)).abs() <= w  # [T, T]
    seq = block(x, mask=band.unsqueeze(0), causal=True)
    graph = block(x.reshape(B * T, F),
                  sequence_edge_index(T, B, causal=True, window=w))
    torch.testing.assert_close(seq, graph.reshape(B, T, F), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize('lap', LAPS)
@pytest.mark.parametrize('causal', [False, True])
def test_block_padding_equals_sparse_on_real_tokens(lap, causal):
    T, F, H = 6, 8, 2
    lengths = [6, 2, 4]
    B = len(lengths)
    block = PLETransformerBlock(F, H, laplacian_heads=lap_arg(lap, H)).eval()
    x = torch.randn(B, T, F)
    pad = torch.arange(T).view(1, -1) < torch.tensor(lengths).view(-1, 1)
    seq = block(x, mask=pad, causal=causal)
    # Sparse path on the real tokens only.
    xs = torch.cat([x[b, :n] for b, n in enumerate(lengths)])
    batch = torch.cat([torch.full((n, ), b) for b, n in enumerate(lengths)])
    ei = full_edge_index(batch)
    if causal:
        ei = ei[:, ei[0] <= ei[1]]
    sparse = block(xs, ei)
    torch.testing.assert_close(seq[pad], sparse, atol=1e-5, rtol=0)
    # Padding content does not leak into real tokens.
    x2 = x.clone()
    x2[~pad] = 100.0
    torch.testing.assert_close(block(x2, mask=pad, causal=causal)[pad],
                               seq[pad], atol=1e-5, rtol=0)


@pytest.mark.parametrize('lap', LAPS)
def test_block_all_pairs_equals_full_edges(lap):
    F, H = 8, 2
    sizes = [3, 5, 1, 4]
    batch = torch.cat([torch.full((n, ), b) for b, n in enumerate(sizes)])
    block = PLETransformerBlock(F, H, laplacian_heads=lap_arg(lap, H)).eval()
    x = torch.randn(batch.numel(), F)
    dense = block(x, batch=batch)
    sparse = block(x, full_edge_index(batch), batch=batch)
    assert dense.shape == x.shape
    torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=0)
    # Single graph without batch.
    torch.testing.assert_close(
        block(x[:3]), block(x[:3], full_edge_index(num_nodes=3)),
        atol=1e-5, rtol=0)


def test_block_row_without_key_gets_zero_attention_update():
    B, T, F, H = 2, 4, 8, 2
    block = PLETransformerBlock(F, H, laplacian_heads=1).eval()
    x = torch.randn(B, T, F)
    m = torch.ones(B, T, T, dtype=torch.bool)
    m[1, 2] = False
    out = block(x, mask=m)
    # Attention update is zero, so h = x + W_o(0) = x + b_o.
    xi = x[1, 2]
    h = xi + block.proj.bias
    expected = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(out[1, 2], expected)


@pytest.mark.parametrize('lap', LAPS)
def test_block_is_prenorm_composition(lap):
    F, H = 8, 2
    block = PLETransformerBlock(F, H, laplacian_heads=lap_arg(lap, H),
                                step_size=0.5).eval()
    x = torch.randn(7, F) * 3 + 1
    ei = ref.random_graph(7, 20, seed=0)
    h = x + block.proj(block.conv(block.norm1(x), ei))
    expected = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(block(x, ei), expected)


def test_block_attention_graph_sequences():
    B, T, F, H = 2, 5, 8, 2
    block = PLETransformerBlock(F, H).eval()
    x = torch.randn(B, T, F)
    g = block.attention_graph(x, causal=True)
    dense = g.to_dense()
    assert dense.shape == (B, H, T, T)
    # Causal: upper triangle is zero; rows sum to one.
    assert dense.triu(1).abs().sum() == 0
    torch.testing.assert_close(dense.sum(-1), torch.ones(B, H, T))
    # It is the conv's attention on LN(x).
    g2 = block.conv.attention_graph(
        block.norm1(x.reshape(B * T, F)), sequence_edge_index(T, B, True))
    torch.testing.assert_close(g.to_dense()[0], g2.to_dense()[0][:, :T, :T])


def test_block_edge_attr():
    F, H = 8, 2
    block = PLETransformerBlock(F, H, edge_dim=3).eval()
    x = torch.randn(6, F)
    ei = ref.random_graph(6, 12, seed=1)
    ea = torch.randn(12, 3)
    out = block(x, ei, edge_attr=ea)
    assert out.shape == (6, F)
    assert not torch.allclose(out, block(x, ei, edge_attr=ea * 0))


def test_block_backward_sequence_and_graph():
    block = PLETransformerBlock(8, 2, laplacian_heads=1)
    x = torch.randn(2, 5, 8, requires_grad=True)
    block(x, causal=True).sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is not None, name


def test_forward_dense_two_dim_mask_is_padding():
    """A 2-D mask is always a [B, T] padding mask (also when B == T); pair masks are 3-D, so a [T, T] mask with
    B != T is rejected instead of being guessed."""
    T = 3
    conv = LaplacianDiffusionConv(4, 2, heads=2, laplacian_heads=1)
    x = torch.randn(T, T, 4)  # B == T
    pad = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    out = conv.forward_dense(x, mask=pad)
    pairs = pad.unsqueeze(1) & pad.unsqueeze(2)
    torch.testing.assert_close(out, conv.forward_dense(x, mask=pairs))
    assert not torch.allclose(out, conv.forward_dense(x, mask=causal_mask(T).unsqueeze(0)))
    with pytest.raises(ValueError, match='mask'):
        conv.forward_dense(torch.randn(2, T, 4), mask=causal_mask(T))


@pytest.mark.parametrize('case', ['graph', 'no_edges', 'seq_B0', 'seq_T0',
                                  'all_pairs_no_batch'])
def test_block_empty_inputs(case):
    F = 8
    block = PLETransformerBlock(F, 2).eval()
    empty = torch.empty(2, 0, dtype=torch.long)
    if case == 'graph':
        out, shape = block(torch.randn(0, F), empty), (0, F)
    elif case == 'no_edges':
        x = torch.randn(3, F)
        out, shape = block(x, empty), (3, F)
        # Only self-loops: equals the all-pairs path of 1-node graphs.
        torch.testing.assert_close(
            out, block(x, batch=torch.arange(3)), atol=1e-5, rtol=0)
    elif case == 'seq_B0':
        out, shape = block(torch.randn(0, 4, F), causal=True), (0, 4, F)
    elif case == 'seq_T0':
        out, shape = block(torch.randn(2, 0, F), causal=True), (2, 0, F)
    else:
        out, shape = block(torch.randn(0, F)), (0, F)
    assert out.shape == shape


def test_block_all_pairs_empty_batch():
    block = PLETransformerBlock(8, 2).eval()
    out = block(torch.randn(0, 8), batch=torch.empty(0, dtype=torch.long))
    assert out.shape == (0, 8)


def test_all_pairs_path_chooser_and_both_paths_agree():
    from pyg_ple.nn.block import DENSE_PADDING_LIMIT, all_pairs_path
    even = torch.arange(4).repeat_interleave(5)  # four graphs of 5 nodes: no padding
    skewed = torch.cat([torch.zeros(40, dtype=torch.long), torch.arange(1, 31)])  # one big graph, 30 singletons
    assert all_pairs_path(even) == 'dense'
    assert all_pairs_path(None) == 'dense'
    sizes = torch.bincount(skewed).double()
    assert sizes.numel() * sizes.max() ** 2 > DENSE_PADDING_LIMIT * (sizes ** 2).sum()
    assert all_pairs_path(skewed) == 'sparse'
    block = PLETransformerBlock(8, 2, laplacian_heads=1).eval()
    x = torch.randn(skewed.numel(), 8)
    out = block(x, batch=skewed)
    dense, valid = to_dense_batch(block.norm1(x), skewed)
    via_dense = block.conv.forward_dense(dense, mask=valid)[valid]
    h = x + block.proj(via_dense)
    torch.testing.assert_close(out, h + block.mlp(block.norm2(h)), atol=1e-5, rtol=1e-5)
