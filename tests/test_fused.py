"""The fused sparse kernel path (``pyg_ple.ops.edge_softmax``) against a plain gather / softmax / scatter reference."""
import math
import os
import subprocess
import sys

import pytest
import torch

import pyg_ple.ops.edge_softmax as fused
from pyg_ple.ops.edge_softmax import build_csr, edge_softmax_aggregate
from torch_geometric.utils import coalesce

DT = torch.float64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plain_reference(q, k, v, edge_index, num_nodes, score_bias=None, keep=None):
    """Written from the formula with dense per-edge tensors: s = q_i.k_j / sqrt(C) + b, alpha = softmax over the
    incoming edges of i, out_i = sum_j alpha_ij v_j (times ``keep`` [E, H], the dropout multiplier, if given)."""
    src, dst = edge_index[0], edge_index[1]
    E, H = src.numel(), q.size(1)
    s = (q[dst] * k[src]).sum(-1) / math.sqrt(q.size(-1))
    if score_bias is not None:
        s = s + score_bias
    smax = torch.full((num_nodes, H), -math.inf, dtype=s.dtype).scatter_reduce(
        0, dst.view(-1, 1).expand(E, H), s, 'amax', include_self=True)
    smax = torch.where(torch.isfinite(smax), smax, torch.zeros_like(smax))
    ex = (s - smax[dst].detach()).exp()
    den = torch.zeros(num_nodes, H, dtype=s.dtype).index_add(0, dst, ex)
    alpha = ex / den[dst].clamp_min(1e-300)
    weight = alpha if keep is None else alpha * keep
    out = torch.zeros(num_nodes, H, v.size(-1), dtype=v.dtype).index_add(0, dst, weight.unsqueeze(-1) * v[src])
    return out, alpha


def make_inputs(num_dst, num_src, heads, channels, value_channels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    value_channels = channels if value_channels is None else value_channels
    q = torch.randn(num_dst, heads, channels, generator=g, dtype=DT, requires_grad=True)
    k = torch.randn(num_src, heads, channels, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn(num_src, heads, value_channels, generator=g, dtype=DT, requires_grad=True)
    return q, k, v


def compare(q, k, v, edge_index, num_nodes, bias=None, atol=1e-10, **kwargs):
    out_f, alpha_f = edge_softmax_aggregate(q, k, v, edge_index, num_nodes, score_bias=bias, **kwargs)
    out_r, alpha_r = plain_reference(q, k, v, edge_index, num_nodes, bias)
    assert out_f.shape == out_r.shape and alpha_f.shape == alpha_r.shape
    torch.testing.assert_close(out_f, out_r, atol=atol, rtol=1e-8)
    torch.testing.assert_close(alpha_f, alpha_r, atol=atol, rtol=1e-8)  # original edge order
    g = torch.Generator().manual_seed(1)
    w_out = torch.randn(out_f.shape, generator=g, dtype=DT)
    w_alpha = torch.randn(alpha_f.shape, generator=g, dtype=DT)
    inputs = [t for t in (q, k, v, bias) if t is not None]
    grads_f = torch.autograd.grad((out_f * w_out).sum() + (alpha_f * w_alpha).sum(), inputs, allow_unused=True)
    grads_r = torch.autograd.grad((out_r * w_out).sum() + (alpha_r * w_alpha).sum(), inputs, allow_unused=True)
    for name, gf, gr in zip('qkvb', grads_f, grads_r):
        gf = torch.zeros_like(inputs['qkvb'.index(name)]) if gf is None else gf
        gr = torch.zeros_like(inputs['qkvb'.index(name)]) if gr is None else gr
        torch.testing.assert_close(gf, gr, atol=atol, rtol=1e-8, msg=f'grad of {name}')
    return out_f, alpha_f


def random_graph(num_nodes, num_edges, seed=0, num_src=None):
    g = torch.Generator().manual_seed(seed)
    num_src = num_nodes if num_src is None else num_src
    return torch.stack([torch.randint(0, num_src, (num_edges,), generator=g),
                        torch.randint(0, num_nodes, (num_edges,), generator=g)])


@pytest.mark.parametrize('heads', [1, 3])
@pytest.mark.parametrize('channels', [1, 5])
def test_random_graph_matches_reference(heads, channels):
    ei = random_graph(12, 40, seed=heads * 10 + channels)
    q, k, v = make_inputs(12, 12, heads, channels)
    compare(q, k, v, ei, 12)


def test_self_loops_isolated_and_duplicate_edges():
    # node 4 and 6 have no incoming edge; 0 -> 1 appears three times; self-loops on 2 and 5; 5 has only its loop.
    ei = torch.tensor([[0, 0, 0, 2, 1, 3, 5, 4, 6, 2],
                       [1, 1, 1, 2, 2, 0, 5, 3, 3, 3]])
    q, k, v = make_inputs(7, 7, 4, 3)
    out, alpha = compare(q, k, v, ei, 7)
    assert torch.all(out[4] == 0) and torch.all(out[6] == 0)
    torch.testing.assert_close(alpha[6], torch.ones(4, dtype=DT))  # the only incoming edge of node 5
    torch.testing.assert_close(alpha[0], alpha[1])  # duplicate edges each keep their own (equal) weight
    sums = torch.zeros(7, 4, dtype=DT).index_add(0, ei[1], alpha.detach())
    torch.testing.assert_close(sums[[0, 1, 2, 3, 5]], torch.ones(5, 4, dtype=DT))


def test_score_bias_and_value_channels_differ():
    ei = random_graph(9, 30, seed=3)
    q, k, v = make_inputs(9, 9, 2, 4, value_channels=6)
    bias = torch.randn(30, 2, dtype=DT, requires_grad=True)
    out, _ = compare(q, k, v, ei, 9, bias)
    assert out.shape == (9, 2, 6)


def test_bipartite_source_set():
    ei = random_graph(5, 25, seed=4, num_src=8)  # 8 sources (key/value), 5 targets (query)
    q, k, v = make_inputs(5, 8, 2, 3)
    compare(q, k, v, ei, 5)


def test_alpha_is_in_original_edge_order():
    ei = random_graph(10, 35, seed=5)
    q, k, v = make_inputs(10, 10, 2, 4)
    _, alpha = edge_softmax_aggregate(q, k, v, ei, 10)
    perm = torch.randperm(35, generator=torch.Generator().manual_seed(0))
    out_p, alpha_p = edge_softmax_aggregate(q, k, v, ei[:, perm], 10)
    torch.testing.assert_close(alpha_p, alpha[perm])
    # already target-sorted input takes the no-permutation path and agrees too
    order = torch.argsort(ei[1], stable=True)
    assert build_csr(ei[:, order], 10).perm is None
    _, alpha_s = edge_softmax_aggregate(q, k, v, ei[:, order], 10)
    torch.testing.assert_close(alpha_s, alpha[order])


def test_empty_graph_zero_edges():
    q, k, v = make_inputs(4, 4, 2, 3)
    ei = torch.empty(2, 0, dtype=torch.long)
    out, alpha = edge_softmax_aggregate(q, k, v, ei, 4, score_bias=torch.zeros(0, 2, dtype=DT))
    assert out.shape == (4, 2, 3) and alpha.shape == (0, 2)
    assert torch.all(out == 0)
    (out.sum() + alpha.sum()).backward()
    for t in (q, k, v):
        assert t.grad is None or torch.all(t.grad == 0)


def test_zero_nodes():
    q, k, v = make_inputs(0, 0, 3, 2)
    out, alpha = edge_softmax_aggregate(q, k, v, torch.empty(2, 0, dtype=torch.long), 0)
    assert out.shape == (0, 3, 2) and alpha.shape == (0, 3)
    out.sum().backward()


def test_gradcheck_tiny():
    ei = torch.tensor([[0, 1, 2, 2, 3, 0, 1], [1, 1, 0, 3, 3, 3, 1]])  # duplicates, self-loops, isolated node 2
    q, k, v = make_inputs(4, 4, 2, 3)
    bias = torch.randn(7, 2, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: edge_softmax_aggregate(*t[:3], ei, 4, score_bias=t[3]),
                                    (q, k, v, bias))


def test_gradcheck_bipartite():
    ei = torch.tensor([[0, 1, 2, 4, 4], [0, 0, 2, 2, 1]])
    q, k, v = make_inputs(3, 5, 2, 2)
    assert torch.autograd.gradcheck(lambda *t: edge_softmax_aggregate(*t, ei, 3), (q, k, v))


def test_precomputed_csr_is_reused_and_checked():
    ei = random_graph(8, 20, seed=6)
    q, k, v = make_inputs(8, 8, 2, 3)
    csr = build_csr(ei, 8)
    out1, alpha1 = edge_softmax_aggregate(q, k, v, ei, 8, csr=csr)
    out2, alpha2 = edge_softmax_aggregate(q, k, v, ei, 8, csr=csr)
    out2.sum().backward()  # builds the transposed CSR lazily, once
    assert csr.tperm is not None
    torch.testing.assert_close(out1, out2)
    torch.testing.assert_close(alpha1, alpha2)
    with pytest.raises(ValueError):
        edge_softmax_aggregate(q, k, v, ei[:, :10], 8, csr=csr)


def test_gather_fallback_matches(monkeypatch):
    """The chunked gather SDDMM (used where sampled_addmm is unavailable) agrees, across chunk boundaries."""
    monkeypatch.setitem(fused._SAMPLED_ADDMM_OK, 'cpu', False)
    monkeypatch.setattr(fused, 'SDDMM_CHUNK', 7)
    ei = random_graph(11, 50, seed=7)
    q, k, v = make_inputs(11, 11, 3, 4)
    compare(q, k, v, ei, 11, torch.randn(50, 3, dtype=DT, requires_grad=True))


def test_fully_masked_row_gives_zero_and_finite_grads():
    ei = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 0]])
    q, k, v = make_inputs(3, 3, 2, 2)
    bias = torch.zeros(4, 2, dtype=DT)
    bias[0:2, 0] = -math.inf  # both edges into node 1, head 0
    out, alpha = edge_softmax_aggregate(q, k, v, ei, 3, score_bias=bias)
    assert torch.all(out[1, 0] == 0) and torch.all(alpha[0:2, 0] == 0)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_need_alpha_false():
    ei = random_graph(6, 15, seed=8)
    q, k, v = make_inputs(6, 6, 2, 3)
    out, alpha = edge_softmax_aggregate(q, k, v, ei, 6)
    out2, none = edge_softmax_aggregate(q, k, v, ei, 6, need_alpha=False)
    assert none is None
    torch.testing.assert_close(out, out2)


def test_dropout_mask_and_gradients():
    N, H, C, p = 6, 2, 6, 0.5
    ei = random_graph(N, 24, seed=9)
    q, k, _ = make_inputs(N, N, H, C)
    # v = one-hot of the source node: out[i, h, j] then reads the (dropped) weight of the edges j -> i.
    v = torch.eye(N, dtype=DT).unsqueeze(1).expand(N, H, N).contiguous().requires_grad_(True)
    # Without duplicate edges each (i, j) entry is one edge's weight: it is 0 or alpha / (1 - p).
    keep_edges = torch.ones(ei.size(1), dtype=torch.bool)
    seen = set()
    for e, (j, i) in enumerate(ei.t().tolist()):
        if (i, j) in seen:
            keep_edges[e] = False
        seen.add((i, j))
    ei_u = ei[:, keep_edges]
    torch.manual_seed(3)
    out, alpha = edge_softmax_aggregate(q, k, v, ei_u, N, dropout=p, training=True)
    w = out[ei_u[1], :, ei_u[0]].detach()  # [E, H]
    a = alpha.detach()
    assert torch.all((w == 0) | torch.isclose(w, a / (1 - p)))
    assert (w == 0).any() and (w != 0).any()
    keep = (w != 0).to(DT) / (1 - p)
    out_r, alpha_r = plain_reference(q, k, v, ei_u, N, keep=keep)
    torch.testing.assert_close(out, out_r)
    torch.testing.assert_close(alpha, alpha_r)  # alpha is returned before dropout
    go = torch.randn_like(out)
    gf = torch.autograd.grad((out * go).sum(), (q, k, v))
    gr = torch.autograd.grad((out_r * go).sum(), (q, k, v))
    for a_, b_ in zip(gf, gr):
        torch.testing.assert_close(a_, b_)
    # not training: no dropout
    out_eval, _ = edge_softmax_aggregate(q, k, v, ei_u, N, dropout=p, training=False)
    torch.testing.assert_close(out_eval, plain_reference(q, k, v, ei_u, N)[0])


def test_float32_matches_reference():
    ei = random_graph(30, 200, seed=10)
    q, k, v = (t.detach().float().requires_grad_(True) for t in make_inputs(30, 30, 4, 8))
    out_f, alpha_f = edge_softmax_aggregate(q, k, v, ei, 30)
    out_r, alpha_r = plain_reference(q, k, v, ei, 30)
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=1e-4)
    gf = torch.autograd.grad(out_f.square().sum(), (q, k, v))
    gr = torch.autograd.grad(out_r.square().sum(), (q, k, v))
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_does_not_materialise_edge_messages(peak_bytes):
    """Peak tensor memory of forward + backward stays far below one [E, H, C] tensor."""
    N, E, H, C = 500, 40000, 2, 64
    # Without duplicate edges (those take the chunked gather SDDMM, bounded by SDDMM_CHUNK rather than by E).
    ei = coalesce(random_graph(N, E, seed=11), num_nodes=N)
    q, k, v = (torch.randn(N, H, C, requires_grad=True) for _ in range(3))
    csr = build_csr(ei, N)
    assert csr.unique
    csr.transpose()

    def step():
        out, alpha = edge_softmax_aggregate(q, k, v, ei, N, csr=csr)
        (out.sum() + alpha.sum()).backward()

    peak = peak_bytes(step)
    edge_message_bytes = ei.size(1) * H * C * 4
    assert peak < 0.25 * edge_message_bytes, (peak, edge_message_bytes)


def test_conv_fused_and_reference_paths_agree():
    from pyg_ple import LaplacianDiffusionConv
    ei = torch.tensor([[0, 1, 1, 2, 3, 3, 0, 4], [1, 0, 2, 2, 1, 1, 3, 3]])  # duplicates, a self-loop, node 5 isolated
    x = torch.randn(6, 5, dtype=DT)
    outs, grads = [], []
    for flag in (True, False):
        torch.manual_seed(0)
        conv = LaplacianDiffusionConv(5, 4, heads=3, laplacian_heads=2, fused=flag).to(DT)
        xx = x.clone().requires_grad_(True)
        out, (edges, alpha) = conv(xx, ei, return_attention_weights=True)
        (out.square().sum() + alpha.sum()).backward()
        outs.append((out.detach(), edges, alpha.detach()))
        grads.append([xx.grad] + [p.grad for p in conv.parameters()])
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][2], outs[1][2])
    for a, b in zip(*grads):
        if a is None or b is None:
            assert a is None and b is None or torch.all((a if a is not None else b) == 0)
        else:
            torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_speed_benchmark_quick_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--quick', '--out',
                          str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    for name in ('speed.csv', 'speed.md', 'speed.png'):
        assert (tmp_path / name).stat().st_size > 0, name
    csv_text = (tmp_path / 'speed.csv').read_text()
    assert 'fused' in csv_text and 'TransformerConv' in csv_text
    md = (tmp_path / 'speed.md').read_text()
    assert '--quick' in md and 'torch' in md


@pytest.mark.parametrize('kwargs', [dict(heads=3, laplacian_heads=1), dict(heads=2, concat=False),
                                    dict(heads=2, laplacian_heads=0, add_self_loops=False),
                                    dict(heads=2, edge_dim=3)])
def test_kernel_path_matches_propagate_path(kwargs):
    """The conv's kernel path (``fused=True``) equals its ``propagate`` path in values, attention weights and every
    gradient."""
    from pyg_ple import LaplacianDiffusionConv
    ei = torch.tensor([[0, 1, 1, 2, 3, 3, 0, 4], [1, 0, 2, 2, 1, 1, 3, 3]])  # duplicates, a self-loop, 5 isolated
    edge_attr = torch.randn(8, 3, dtype=DT) if 'edge_dim' in kwargs else None
    conv = LaplacianDiffusionConv(5, 4, learn_step_size=True, **kwargs).to(DT)
    with torch.no_grad():
        conv.eta.copy_(torch.rand_like(conv.eta) + 0.5)
    x = torch.randn(6, 5, dtype=DT)
    results = []
    for use_kernel in (True, False):
        conv.fused = use_kernel
        conv.kernel_cache.clear()
        conv.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_(True)
        out, (edges, alpha) = conv(xx, ei, edge_attr=edge_attr, return_attention_weights=True)
        assert len(conv.kernel_cache) == int(use_kernel)  # the kernel ran exactly when asked for
        (out.square().sum() + (alpha * torch.arange(alpha.numel(), dtype=DT).view_as(alpha)).sum()).backward()
        results.append((out.detach(), edges, alpha.detach(), xx.grad,
                        {n: p.grad for n, p in conv.named_parameters()}))
    (o1, e1, a1, gx1, gp1), (o2, e2, a2, gx2, gp2) = results
    torch.testing.assert_close(o1, o2)
    assert torch.equal(e1, e2)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(gx1, gx2)
    for name in gp1:
        if gp1[name] is None or gp2[name] is None:
            assert gp1[name] is None and gp2[name] is None, name
        else:
            torch.testing.assert_close(gp1[name], gp2[name], msg=name)


def test_kernel_csr_is_cached_per_edge_index_object():
    from pyg_ple import LaplacianDiffusionConv
    conv = LaplacianDiffusionConv(4, 3, heads=2).to(DT)
    x = torch.randn(5, 4, dtype=DT)
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    out1 = conv(x, ei)
    csr1 = conv.kernel_cache.get(ei, 5)[1]
    out2 = conv(x, ei)
    assert conv.kernel_cache.get(ei, 5)[1] is csr1  # same tensor object: reused
    torch.testing.assert_close(out1, out2)
    assert conv.kernel_cache.get(ei, 6) is None  # another node count: not this entry
    ei[0, 0] = 4  # in place: version bump, rebuilt
    assert conv.kernel_cache.get(ei, 5) is None
    out3 = conv(x, ei)
    assert conv.kernel_cache.get(ei, 5)[1] is not csr1
    conv.fused = False
    torch.testing.assert_close(out3, conv(x, ei))
    conv.fused = True
    out4 = conv(x, ei.clone())  # another object: rebuilt, same values
    torch.testing.assert_close(out4, out3)


def test_out_of_range_edges_are_rejected():
    q, k, v = make_inputs(3, 3, 1, 2)
    with pytest.raises(ValueError):
        edge_softmax_aggregate(q, k, v, torch.tensor([[0], [3]]), 3)
    with pytest.raises(ValueError):
        edge_softmax_aggregate(q, k, v, torch.tensor([[-1], [0]]), 3)


def test_takes_kernel():
    from pyg_ple import LaplacianDiffusionConv
    conv = LaplacianDiffusionConv(4, 3, heads=2, dropout=0.2)
    x, ei = torch.randn(5, 4), torch.tensor([[0, 1], [1, 2]])
    conv.eval()
    assert conv.takes_kernel(x, ei, return_attention_weights=True)
    conv.train()
    assert conv.takes_kernel(x, ei) and not conv.takes_kernel(x, ei, return_attention_weights=True)
    handle = conv.register_message_forward_hook(lambda module, inputs, output: None)
    assert not conv.takes_kernel(x, ei)
    handle.remove()
    conv.explain = True
    assert not conv.takes_kernel(x, ei)
    conv.explain = False
    with conv.register_aggregate_forward_pre_hook(lambda module, inputs: None):  # a handle as context manager
        assert not conv.takes_kernel(x, ei)
    assert conv.num_propagate_hooks == 0 and conv.takes_kernel(x, ei)
    # The rule reads no private hook dictionaries: module forward hooks (on conv.attention, or global) do not
    # decide the path, as documented (fused=False for them).
    handle = conv.attention.register_forward_hook(lambda module, inputs, output: None)
    assert conv.takes_kernel(x, ei)
    handle.remove()
    conv.fused = False
    assert not conv.takes_kernel(x, ei)
    conv.fused = True  # at every size, where 'auto' leaves small CPU graphs to propagate
    conv.fused_min_edges = 10
    assert conv.takes_kernel(x, ei)
    conv.fused = 'auto'
    assert not conv.takes_kernel(x, ei)


def test_input_checks_do_not_decide_the_path(monkeypatch):
    """Switching the input checks off (as under torch.compile) leaves the eager dispatch alone."""
    import pyg_ple.nn.attention as attention_module
    import pyg_ple.nn.conv as conv_module
    from pyg_ple import LaplacianDiffusionConv
    for module in (conv_module, attention_module):
        monkeypatch.setattr(module, 'checking', lambda: False)
    conv = LaplacianDiffusionConv(4, 2, heads=2)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])  # (the cache entry lives as long as its edge_index)
    conv(torch.randn(5, 4), ei)
    assert len(conv.kernel_cache) == 1


@pytest.mark.parametrize('add_self_loops', [True, False])
def test_duplicate_edges_match_reference_in_values_and_gradients(add_self_loops):
    """Duplicate edges are separate softmax terms; the fused kernel must not rely on a coalesced pattern."""
    from pyg_ple import LaplacianDiffusionConv
    ei = torch.tensor([[0, 0, 0, 2, 2, 1], [1, 1, 1, 0, 0, 2]])
    x = torch.randn(3, 4, dtype=DT)
    results = []
    for flag in (True, False):
        torch.manual_seed(0)
        conv = LaplacianDiffusionConv(4, 2, heads=2, add_self_loops=add_self_loops, fused=flag).to(DT)
        xx = x.clone().requires_grad_(True)
        out = conv(xx, ei)
        out.pow(2).sum().backward()
        results.append((out.detach(), xx.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_fused_size_threshold():
    """On CPU the conv takes the kernel from ``fused_min_edges`` edges on, and propagate below."""
    from pyg_ple import LaplacianDiffusionConv
    from pyg_ple.nn.conv import FUSED_MIN_EDGES
    assert FUSED_MIN_EDGES == 65_536
    conv = LaplacianDiffusionConv(4, 2, heads=2)
    conv.fused_min_edges = 10
    x, small, large = torch.randn(6, 4), torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.randint(0, 6, (2, 12))
    conv(x, small)
    assert len(conv.kernel_cache) == 0  # 3 edges < 10: propagate
    conv(x, large)
    assert len(conv.kernel_cache) == 1  # 12 edges: the kernel


# ---------------------------------------------------------------------------------------------------------------
# Autocast, double backward, the CSR cache as transient state
# ---------------------------------------------------------------------------------------------------------------
def random_conv_graph(num_nodes, num_edges, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_nodes, (2, num_edges), generator=g)


@pytest.mark.parametrize('edge_dim', [None, 2])
def test_kernel_under_cpu_autocast(edge_dim):
    """Under CPU autocast the projections come out bfloat16: the kernel path must run them (in float32) and agree
    with the float32 result and with the propagate path under autocast."""
    from pyg_ple import LaplacianDiffusionConv
    conv = LaplacianDiffusionConv(8, 4, heads=2, laplacian_heads=1, edge_dim=edge_dim)
    x = torch.randn(30, 8)
    ei = random_conv_graph(30, 150, seed=0)
    extra = {} if edge_dim is None else {'edge_attr': torch.randn(150, 2)}
    expected = conv(x, ei, **extra)
    outs = {}
    for use_kernel in (True, False):
        conv.fused = use_kernel
        conv.kernel_cache.clear()
        conv.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = conv(x, ei, **extra)
        assert len(conv.kernel_cache) == int(use_kernel)
        out.float().square().sum().backward()
        outs[use_kernel] = (out.float(), {n: p.grad.clone() for n, p in conv.named_parameters()})
    torch.testing.assert_close(outs[True][0], expected, atol=0.05, rtol=0.05)
    torch.testing.assert_close(outs[True][0], outs[False][0], atol=0.05, rtol=0.05)
    for name, grad in outs[True][1].items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, outs[False][1][name], atol=0.1, rtol=0.1, msg=name)


def test_kernel_under_cpu_autocast_just_over_the_size_threshold():
    """The default CPU threshold: a graph with FUSED_MIN_EDGES + 64 edges takes the kernel under autocast."""
    from pyg_ple import LaplacianDiffusionConv
    from pyg_ple.nn.conv import FUSED_MIN_EDGES
    conv = LaplacianDiffusionConv(4, 2, heads=1)
    conv.fused_min_edges = FUSED_MIN_EDGES
    x = torch.randn(400, 4)
    ei = random_conv_graph(400, FUSED_MIN_EDGES + 64, seed=1)
    with torch.no_grad():
        expected = conv(x, ei)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = conv(x, ei)
    assert len(conv.kernel_cache) == 1
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize('loss', ['square', 'sum'])
def test_double_backward_through_the_kernel_says_use_fused_false(loss):
    """A second derivative through the kernel raises and names the way out; with a constant incoming gradient
    (``out.sum()``) it used to drop the kernel's terms silently."""
    from pyg_ple import LaplacianDiffusionConv
    conv = LaplacianDiffusionConv(3, 2, heads=2).to(DT)
    x = torch.randn(5, 3, dtype=DT, requires_grad=True)
    ei = random_conv_graph(5, 12, seed=2)
    out = conv(x, ei)
    assert len(conv.kernel_cache) == 1
    (grad,) = torch.autograd.grad(out.square().sum() if loss == 'square' else out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='fused=False'):
        grad.square().sum().backward()
    # First-order gradients are unaffected, and the advice works: fused=False has second derivatives.
    conv.fused = False
    assert torch.autograd.gradgradcheck(lambda x: conv(x, ei), (x,))


def test_kernel_cache_is_not_saved_pickled_or_copied(tmp_path):
    import copy
    import pickle
    import weakref
    from pyg_ple import LaplacianDiffusionConv
    conv = LaplacianDiffusionConv(4, 3, heads=2)
    x, ei = torch.randn(6, 4), random_conv_graph(6, 15, seed=3)
    out = conv(x, ei)
    assert len(conv.kernel_cache) == 1
    assert all('cache' not in key for key in conv.state_dict())
    for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert len(clone.kernel_cache) == 0 and clone.kernel_cache is not conv.kernel_cache
        torch.testing.assert_close(clone(x, ei), out)
    path = tmp_path / 'conv.pt'
    torch.save(conv, path)
    loaded = torch.load(path, weights_only=False)
    assert len(loaded.kernel_cache) == 0
    torch.testing.assert_close(loaded(x, ei), out)
    assert len(conv.kernel_cache) == 1  # the original keeps its entry
    # The cache does not keep the caller's edge_index alive, and lets its entry go with it.
    ref = weakref.ref(ei)
    del ei
    assert ref() is None and len(conv.kernel_cache) == 0
