"""PLETransformerBlock norms (LayerNorm, BatchNorm, RMSNorm) x pre/post-norm on the three call forms, against the
block written out in float64 in this file."""
import pytest
import torch
import torch.nn.functional as F

import reference as ref
from pyg_ple import PLETransformer, PLETransformerBlock
from pyg_ple.edges import sequence_edge_index

CH, HEADS = 8, 2
DT = torch.float64


def make_block(norm, prenorm, degree_scaler=False, seed=0, **kw):
    torch.manual_seed(seed)
    block = PLETransformerBlock(CH, HEADS, laplacian_heads=1, norm=norm, prenorm=prenorm,
                                degree_scaler=degree_scaler, **kw).double().train()
    with torch.no_grad():  # non-trivial affine parameters and conductance, so each of them is tested
        for module in (block.norm1, block.norm2):
            module.weight.uniform_(0.5, 1.5)
            if getattr(module, 'bias', None) is not None:
                module.bias.uniform_(-0.5, 0.5)
        if degree_scaler:
            block.conv.deg_coef.copy_(torch.randn_like(block.conv.deg_coef))
    return block


def norm_formula(kind, module, x):
    """``x [M, F]``: LayerNorm / RMSNorm per row, BatchNorm over the rows (training statistics)."""
    w = module.weight.detach().to(DT)
    if kind == 'rms':
        eps = module.eps if module.eps is not None else torch.finfo(DT).eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    dim = 0 if kind == 'batch' else -1
    mean, var = x.mean(dim, keepdim=True), x.var(dim, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * w + module.bias.detach().to(DT)


def block_formula(block, kind, prenorm, x, conv_update):
    """Pre: ``h = x + W_o conv(N1(x))``, ``out = h + MLP(N2(h))``; post: ``h = N1(x + W_o conv(x))``,
    ``out = N2(h + MLP(h))``. ``x [M, F]`` are the real rows, ``conv_update`` the conv reference on them."""
    def mlp(h):
        return ref.linear(block.mlp[3], F.gelu(ref.linear(block.mlp[0], h)))

    n1 = lambda h: norm_formula(kind, block.norm1, h)  # noqa: E731
    n2 = lambda h: norm_formula(kind, block.norm2, h)  # noqa: E731
    if prenorm:
        h = x + ref.linear(block.proj, conv_update(n1(x)))
        return h + mlp(n2(h))
    h = n1(x + ref.linear(block.proj, conv_update(x)))
    return n2(h + mlp(h))


def conv_reference(block, h, edge_index, add_self_loops):
    conv = block.conv
    deg_coef = conv.deg_coef.detach() if conv.deg_coef is not None else None
    return ref.reference_learned(conv, h, edge_index, laplacian_heads=1, add_self_loops=add_self_loops,
                                 deg_coef=deg_coef)


def all_pairs(sizes):
    edges, start = [], 0
    for n in sizes:
        idx = torch.arange(start, start + n)
        edges.append(torch.stack([idx.repeat(n), idx.repeat_interleave(n)]))
        start += n
    return torch.cat(edges, 1)


def form_inputs(form):
    """``(x, call kwargs, real-row selector, conv reference on the real rows)`` for a call form."""
    g = torch.Generator().manual_seed(5)
    if form == 'edges':
        ei = torch.cat([ref.random_graph(6, 14, seed=1), ref.random_graph(5, 10, seed=2) + 6], 1)
        x = torch.randn(11, CH, dtype=DT, generator=g)
        return x, dict(edge_index=ei), slice(None), lambda b, h: conv_reference(b, h, ei, True)
    if form == 'all_pairs':
        sizes = [4, 6, 5]
        batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
        x = torch.randn(15, CH, dtype=DT, generator=g)
        return x, dict(batch=batch), slice(None), lambda b, h: conv_reference(b, h, all_pairs(sizes), False)
    lengths = [5, 3]
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    x = torch.randn(2, 5, CH, dtype=DT, generator=g)
    # padding neither attends nor is attended: each sequence's real tokens attend over all of themselves
    return x, dict(mask=mask), mask, lambda b, h: conv_reference(b, h, all_pairs(lengths), False)


@pytest.mark.parametrize('form', ['edges', 'all_pairs', 'sequences'])
@pytest.mark.parametrize('prenorm', [True, False])
@pytest.mark.parametrize('norm', ['layer', 'batch', 'rms'])
def test_block_matches_formula(norm, prenorm, form):
    block = make_block(norm, prenorm, degree_scaler=(form == 'edges'))
    x, kwargs, real, conv_ref = form_inputs(form)
    x = x.requires_grad_()
    out = block(x, **kwargs)[real]
    x_ref = x.detach()[real].clone().requires_grad_()
    expected = block_formula(block, norm, prenorm, x_ref, lambda h: conv_ref(block, h))
    torch.testing.assert_close(out, expected)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(x.grad[real], x_ref.grad)


@pytest.mark.parametrize('prenorm', [True, False])
@pytest.mark.parametrize('norm', ['layer', 'batch', 'rms'])
def test_sparse_and_dense_paths_agree(norm, prenorm):
    block = make_block(norm, prenorm, degree_scaler=True)
    B, T = 2, 5
    x = torch.randn(B, T, CH, dtype=DT)
    dense = block(x, causal=True)
    sparse = block(x.reshape(B * T, CH), sequence_edge_index(T, B, causal=True))
    torch.testing.assert_close(sparse.view(B, T, CH), dense)


def test_batch_norm_statistics_over_real_tokens():
    block = make_block('batch', prenorm=False)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    x = torch.randn(2, 5, CH, dtype=DT)
    y = x.clone()
    y[1, 3:] = 1e3 * torch.randn(2, CH, dtype=DT)  # padding values must not move the statistics
    torch.testing.assert_close(block(x, mask=mask)[mask], block(y, mask=mask)[mask])


@pytest.mark.parametrize('norm', ['layer', 'batch', 'rms'])
def test_stack_final_norm_only_when_prenorm(norm):
    torch.manual_seed(0)
    pre = PLETransformer(CH, HEADS, num_layers=1, norm=norm).double()
    post = PLETransformer(CH, HEADS, num_layers=1, norm=norm, prenorm=False).double()
    assert type(pre.norm) is type(pre.blocks[0].norm1) and post.norm is None
    x, ei = torch.randn(7, CH, dtype=DT), ref.random_graph(7, 15, seed=0)
    torch.testing.assert_close(post(x, ei), post.blocks[0](x, ei))
    torch.testing.assert_close(pre(x, ei), pre.norm(pre.blocks[0](x, ei)))


@pytest.mark.parametrize('norm', ['batch', 'rms'])
def test_ple_init_prenorm_other_norms(norm):
    block = PLETransformerBlock(CH, HEADS, norm=norm, ple_init=True).double()
    x, ei = torch.randn(7, CH, dtype=DT), ref.random_graph(7, 15, seed=0)
    h = block.norm1(x)
    expected = x + conv_reference_plain(block, h, ei)
    torch.testing.assert_close(block(x, ei), expected)


def conv_reference_plain(block, h, ei):
    return ref.reference_learned(block.conv, h, ei, laplacian_heads=None, add_self_loops=True)


def test_ple_init_postnorm():
    block = PLETransformerBlock(CH, HEADS, prenorm=False, ple_init=True).double()
    x, ei = torch.randn(7, CH, dtype=DT), ref.random_graph(7, 15, seed=0)
    expected = block.norm2(block.norm1(x + conv_reference_plain(block, x, ei)))
    torch.testing.assert_close(block(x, ei), expected)


@pytest.mark.parametrize('kwargs,name', [(dict(norm='group'), 'norm'), (dict(norm=None), 'norm'),
                                         (dict(prenorm='yes'), 'prenorm'),
                                         (dict(degree_scaler='cubic'), 'degree_scaler')])
def test_bad_values_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        PLETransformerBlock(CH, HEADS, **kwargs)
    with pytest.raises(ValueError, match=f"'{name}'"):
        PLETransformer(CH, HEADS, num_layers=0, **kwargs) if name != 'degree_scaler' else \
            PLETransformer(CH, HEADS, num_layers=1, **kwargs)


def test_repr_shows_non_default_options():
    assert repr(PLETransformerBlock(CH, HEADS)) == 'PLETransformerBlock(8, heads=2, laplacian_heads=2)'
    text = repr(PLETransformerBlock(CH, HEADS, norm='batch', prenorm=False, degree_scaler=True))
    assert "norm='batch'" in text and 'prenorm=False' in text and 'degree_scaler=True' in text


def test_compile_fullgraph_post_norm_sequences():
    torch._dynamo.reset()
    block = make_block('rms', prenorm=False, degree_scaler=True).float().eval()
    x = torch.randn(2, 5, CH)
    compiled = torch.compile(block, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(x, causal=True), block(x, causal=True))
