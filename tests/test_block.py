"""Dense (sequence / all-pairs) path vs sparse graph path, for the conv and
the PLETransformerBlock."""
import pytest
import torch

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock
from pyg_ple.edges import full_edge_index, sequence_edge_index

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


# --------------------------------------------------------------------------
# Block arguments and error messages.
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['dropout', 'attention_dropout'])
@pytest.mark.parametrize('value', [1.5, -0.1, 1.0])
def test_block_rejects_dropout_out_of_range_by_name(name, value):
    with pytest.raises(ValueError, match=f"'{name}' must be in"):
        PLETransformerBlock(8, 2, **{name: value})


def test_block_with_edge_dim_needs_edge_index():
    block = PLETransformerBlock(8, 2, edge_dim=3).eval()
    for kwargs in ({'x': torch.randn(5, 8)}, {'x': torch.randn(5, 8), 'batch': torch.zeros(5, dtype=torch.long)},
                   {'x': torch.randn(2, 5, 8)}):
        for call in (block, block.attention_graph):
            with pytest.raises(ValueError, match=r"edge_dim=3: pass 'edge_index'") as err:
                call(**kwargs)
            assert 'forward_dense' not in str(err.value)


def test_block_ple_init_option_is_ple_init_function():
    from pyg_ple.nn.block import ple_init_
    torch.manual_seed(0)
    opt = PLETransformerBlock(8, 2, step_size=0.5, ple_init=True)
    torch.manual_seed(0)
    fn = ple_init_(PLETransformerBlock(8, 2, step_size=0.5))
    for (name, a), (_, b) in zip(opt.state_dict().items(), fn.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(opt.proj.weight, torch.eye(8)) and torch.count_nonzero(opt.mlp[-1].weight) == 0
    with torch.no_grad():
        opt.proj.weight.normal_()
    opt.reset_parameters()  # re-initialises as a PLE step, not randomly
    assert torch.equal(opt.proj.weight, torch.eye(8))
    assert not torch.equal(PLETransformerBlock(8, 2).proj.weight, torch.eye(8))


# --------------------------------------------------------------------------
# attention_graph of a padded / masked sequence batch.
# --------------------------------------------------------------------------
def _dense_block_attention(block, x, allowed):
    """[B, H, T, T] attention from the block's weights, written from the math (float64)."""
    h = torch.nn.functional.layer_norm(x.double(), (x.size(-1),), block.norm1.weight.double(),
                                       block.norm1.bias.double(), block.norm1.eps)
    out = []
    for b in range(x.size(0)):
        q, k, _ = ref.project_qkv(block.conv, h[b])
        out.append(ref.attention_matrices(q, k, allowed[b]))
    return torch.stack(out)


@pytest.mark.parametrize('kind', ['padding', 'padding_causal', 'pairs', 'none_causal'])
def test_block_attention_graph_with_mask_is_the_dense_attention(kind):
    B, T, F, H = 3, 5, 8, 2
    block = PLETransformerBlock(F, H, laplacian_heads=1).eval()
    x = torch.randn(B, T, F)
    pad = torch.arange(T).view(1, -1) < torch.tensor([5, 3, 1]).view(-1, 1)
    pairs = torch.rand(B, T, T, generator=torch.Generator().manual_seed(3)) < 0.5
    pairs[0, 1] = False  # a query row without a key
    tril = torch.ones(T, T, dtype=torch.bool).tril()
    kwargs, allowed = {
        'padding': (dict(mask=pad), pad.unsqueeze(1) & pad.unsqueeze(2)),
        'padding_causal': (dict(mask=pad, causal=True), pad.unsqueeze(1) & pad.unsqueeze(2) & tril),
        'pairs': (dict(mask=pairs), pairs),
        'none_causal': (dict(causal=True), tril.expand(B, T, T)),
    }[kind]
    g = block.attention_graph(x, **kwargs)
    assert g.num_nodes == B * T and g.heads == H and torch.equal(g.batch, torch.arange(B).repeat_interleave(T))
    # Exactly the allowed pairs are edges: padded tokens and rows without a key have none.
    src, dst = g.edge_index
    got = torch.zeros(B * T, B * T, dtype=torch.bool)
    got[dst, src] = True
    assert torch.equal(got, torch.block_diag(*allowed))
    if kind.startswith('padding'):
        padded = (~pad).reshape(-1).nonzero().view(-1)
        assert not torch.isin(g.edge_index, padded).any()
    # Weights: the dense attention under the same mask (rows sum to one where they have keys).
    expected = _dense_block_attention(block, x, allowed)
    torch.testing.assert_close(g.to_dense().double(), expected, atol=1e-6, rtol=1e-5)
    # The update forward computes from that graph: sum_j A_ij v_j, through the block's own projections.
    v = block.conv.lin_value(block.norm1(x))
    av = torch.einsum('bhij,bjhc->bihc', g.to_dense(), v.view(B, T, H, -1))
    lap = block.conv.eta.view(1, 1, H, 1) * (av - v.view(B, T, H, -1) * allowed.any(-1).view(B, T, 1, 1))
    update = torch.where(block.conv.laplacian_mask.view(1, 1, H, 1), lap, av).reshape(B, T, F)
    h = x + block.proj(update)
    out = block(x, **kwargs)
    real = allowed.any(-1)
    torch.testing.assert_close(out[real], (h + block.mlp(block.norm2(h)))[real], atol=1e-5, rtol=1e-5)


def test_block_attention_graph_graph_inputs_reject_mask():
    block = PLETransformerBlock(8, 2).eval()
    with pytest.raises(ValueError, match='mask'):
        block.attention_graph(torch.randn(4, 8), full_edge_index(num_nodes=4), mask=torch.ones(1, 4, dtype=torch.bool))


# --------------------------------------------------------------------------
# PLETransformer: the stack equals an explicit loop over blocks + LayerNorm.
# --------------------------------------------------------------------------
def _loop(stack, x, **kwargs):
    for block in stack.blocks:
        x = block(x, **kwargs)
    return torch.nn.functional.layer_norm(x, (x.size(-1),), stack.norm.weight, stack.norm.bias, stack.norm.eps)


def _stack_inputs(form):
    F = 8
    if form == 'edges':
        return torch.randn(7, F), dict(edge_index=ref.random_graph(7, 20, seed=2))
    if form == 'edges_attr':
        return torch.randn(7, F), dict(edge_index=ref.random_graph(7, 20, seed=2), edge_attr=torch.randn(20, 3))
    if form == 'all_pairs':
        return torch.randn(9, F), dict(batch=torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2]))
    if form == 'sequence_causal':
        return torch.randn(2, 5, F), dict(causal=True)
    return torch.randn(3, 5, F), dict(mask=torch.arange(5).view(1, -1) < torch.tensor([5, 2, 4]).view(-1, 1))


@pytest.mark.parametrize('form', ['edges', 'edges_attr', 'all_pairs', 'sequence_causal', 'sequence_padding'])
def test_stack_equals_loop_over_blocks_and_layer_norm(form):
    from pyg_ple.nn import PLETransformer
    x, kwargs = _stack_inputs(form)
    edge_dim = 3 if form == 'edges_attr' else None
    stack = PLETransformer(8, 2, 3, laplacian_heads=1, step_size=0.7, edge_dim=edge_dim, dropout=0.1).eval()
    with torch.no_grad():
        stack.norm.weight.uniform_(0.5, 1.5)
        stack.norm.bias.uniform_(-1, 1)
    assert len(stack.blocks) == 3 and stack.num_layers == 3
    assert all(b.conv.laplacian_heads == 1 and b.conv.edge_dim == edge_dim for b in stack.blocks)
    out = stack(x, **kwargs)
    torch.testing.assert_close(out, _loop(stack, x, **kwargs), atol=0, rtol=0)
    # attention_graph(layer=i) runs the first i blocks, then block i's attention_graph
    for layer in (0, 2, -1):
        h = x
        for block in stack.blocks[:layer % 3]:
            h = block(h, **kwargs)
        want = stack.blocks[layer].attention_graph(h, **kwargs)
        got = stack.attention_graph(x, layer=layer, **kwargs)
        assert torch.equal(got.edge_index, want.edge_index)
        torch.testing.assert_close(got.weight, want.weight, atol=0, rtol=0)
    with pytest.raises(IndexError, match='layer'):
        stack.attention_graph(x, layer=3, **kwargs)
    # layer_outputs: the input, then each block's output; the last through the final norm, as forward returns it
    outputs = stack.layer_outputs(x, **kwargs)
    assert len(outputs) == 4 and outputs[0] is x
    h = x
    for block, got in zip(stack.blocks[:2], outputs[1:3]):
        h = block(h, **kwargs)
        torch.testing.assert_close(got, h, atol=0, rtol=0)
    torch.testing.assert_close(outputs[-1], out, atol=0, rtol=0)
    # gradients reach every block
    stack.train()
    x = x.clone().requires_grad_()
    stack(x, **kwargs).square().sum().backward()
    assert all(p.grad is not None for p in stack.parameters())


def test_stack_without_blocks_is_layer_norm_and_reset_parameters():
    from pyg_ple.nn import PLETransformer
    empty = PLETransformer(8, 2, 0)
    x = torch.randn(4, 8)
    torch.testing.assert_close(empty(x), torch.nn.functional.layer_norm(x, (8,)))
    with pytest.raises(ValueError, match='num_layers'):
        PLETransformer(8, 2, -1)
    with pytest.raises(TypeError, match='dropuot'):
        PLETransformer(8, 2, 1, dropuot=0.1)
    stack = PLETransformer(8, 2, 2, ple_init=True)
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_()
    stack.reset_parameters()
    assert all(torch.equal(b.proj.weight, torch.eye(8)) for b in stack.blocks)
    assert torch.equal(stack.norm.weight, torch.ones(8))
    assert 'num_layers=2' in repr(stack)


def test_variant_table():
    from pyg_ple.nn.block import VARIANTS, variant_kwargs
    assert list(VARIANTS) == ['transformer', 'laplacian', 'mixed', 'laplacian_learned_eta', 'mixed_learned_eta']
    for heads in (1, 3, 4, 6):
        assert variant_kwargs('transformer', heads) == {'laplacian_heads': 0, 'learn_step_size': False}
        assert variant_kwargs('laplacian', heads) == {'laplacian_heads': heads, 'learn_step_size': False}
        assert variant_kwargs('mixed', heads) == {'laplacian_heads': heads // 2, 'learn_step_size': False}
        assert variant_kwargs('mixed_learned_eta', heads) == {'laplacian_heads': heads // 2, 'learn_step_size': True}
        assert variant_kwargs('laplacian_learned_eta', heads) == {'laplacian_heads': heads, 'learn_step_size': True}
    with pytest.raises(ValueError, match="unknown variant 'standard'"):
        variant_kwargs('standard', 4)
    with pytest.raises(ValueError, match='heads'):
        variant_kwargs('mixed', 0)
