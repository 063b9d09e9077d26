"""Edge features in the values (``edge_values=True``): messages ``alpha_ij (v_j + u_ij)`` with ``u = edge_attr W_u``,
checked against dense float64 math on the fused kernel and the ``propagate`` path, gradients included."""
from __future__ import annotations

import copy

import pytest
import torch

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock
from pyg_ple.bench.models import build_model
from pyg_ple.ops.edge_softmax import edge_softmax_aggregate


def _loop_aggregate(query, key, value, edge_value, edge_index, num_nodes):
    """``sum_j alpha_ij [v_j, u_ij]`` edge by edge, with the softmax written out per target."""
    src, dst = edge_index
    scores = (query[dst] * key[src]).sum(-1) / query.size(-1) ** 0.5  # [E, H]
    out = torch.zeros(num_nodes, value.size(1), value.size(2) + edge_value.size(1), dtype=value.dtype)
    for i in range(num_nodes):
        incoming = (dst == i).nonzero().flatten()
        if incoming.numel() == 0:
            continue
        alpha = scores[incoming].softmax(dim=0)  # [deg, H]
        for a, e in zip(alpha, incoming):
            message = torch.cat([value[src[e]], edge_value[e].expand(value.size(1), -1)], dim=-1)
            out[i] += a.unsqueeze(-1) * message
    return out


def test_kernel_aggregates_edge_values_with_the_attention_weights():
    torch.manual_seed(0)
    n, h, c, d = 7, 2, 3, 4
    edge_index = torch.randint(0, n, (2, 25))  # unsorted, with duplicates and a node without incoming edges
    edge_index = edge_index[:, edge_index[1] != 6]
    inputs = [torch.randn(n, h, c, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    edge_value = torch.randn(edge_index.size(1), d, dtype=torch.float64, requires_grad=True)
    out, _ = edge_softmax_aggregate(*inputs, edge_index, n, edge_value=edge_value)
    expected = _loop_aggregate(*inputs, edge_value, edge_index, n)
    assert out.shape == (n, h, c + d)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [*inputs, edge_value])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [*inputs, edge_value])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(
        lambda q, k, v, u: edge_softmax_aggregate(q, k, v, edge_index, n, edge_value=u, score_bias=q[:, :, 0][
            edge_index[1]])[0], (*inputs, edge_value))


def test_kernel_drops_the_same_weights_for_values_and_edge_values():
    """With attention dropout the edge part uses the dropped weights of the node part: with ``v = 1`` and ``u = 1``
    both parts are the row sums of the same dropped weights."""
    torch.manual_seed(1)
    n, h = 30, 3
    edge_index = torch.randint(0, n, (2, 200))
    q, k = torch.randn(n, h, 2), torch.randn(n, h, 2)
    out, _ = edge_softmax_aggregate(q, k, torch.ones(n, h, 2), edge_index, n, dropout=0.5, training=True,
                                    edge_value=torch.ones(edge_index.size(1), 1))
    torch.testing.assert_close(out[..., :1], out[..., 2:])
    assert not torch.allclose(out[..., :1], (out[..., :1] > 0).float())  # dropout did drop weights


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('lap', [None, 0, 1])
@pytest.mark.parametrize('add_self_loops', [True, False])
def test_edge_values_match_the_dense_reference(fused, lap, add_self_loops):
    n, f, c, h, d = 6, 5, 4, 2, 3
    conv = LaplacianDiffusionConv(f, c, heads=h, laplacian_heads=lap, edge_dim=d, edge_values=True,
                                  add_self_loops=add_self_loops, fused=fused).double()
    conv.fused_min_edges = 0  # the kernel at every size when fused
    x = torch.randn(n, f, dtype=torch.float64, requires_grad=True)
    ei = ref.random_graph(n, 14, seed=7)
    ea = torch.randn(ei.size(1), d, dtype=torch.float64)
    assert conv.takes_kernel(x, ei) == fused
    expected = ref.reference_learned_edge(conv, x.detach(), ei, ea, laplacian_heads=lap,
                                          add_self_loops=add_self_loops, edge_values=True)
    torch.testing.assert_close(conv(x, ei, edge_attr=ea), expected, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradcheck(lambda x: conv(x, ei, edge_attr=ea), (x,))


def test_fused_and_propagate_paths_agree_in_parameter_gradients():
    torch.manual_seed(2)
    fused = LaplacianDiffusionConv(6, 4, heads=2, laplacian_heads=1, edge_dim=3, edge_values=True,
                                   degree_scaler=True).double()
    fused.fused_min_edges = 0
    with torch.no_grad():
        fused.deg_coef[1].uniform_(-1, 1)  # away from the identity, so the scaler's gradients matter
    reference = copy.deepcopy(fused)
    reference.fused = False
    x = torch.randn(9, 6, dtype=torch.float64)
    ei, ea = torch.randint(0, 9, (2, 30)), torch.randn(30, 3, dtype=torch.float64)
    outs = [conv(x, ei, edge_attr=ea) for conv in (fused, reference)]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad(out.square().sum(), list(conv.parameters()))
             for out, conv in zip(outs, (fused, reference))]
    names = [name for name, _ in fused.named_parameters()]
    assert grads[0][names.index('lin_edge_value.weight')].abs().sum() > 0
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


def test_edge_values_change_a_laplacian_head_that_scores_alone_cannot():
    """Constant node values make a Laplacian head's diffusion zero whatever the scores; the edge values are a source
    term that survives."""
    conv = LaplacianDiffusionConv(3, 2, heads=2, edge_dim=2, edge_values=True, bias=False)
    with torch.no_grad():
        conv.lin_value.weight.zero_()
        conv.lin_value.bias.fill_(1.3)
    x, ei = torch.randn(5, 3), ref.random_graph(5, 10, seed=1)
    ea = torch.randn(ei.size(1), 2)
    assert conv(x, ei, edge_attr=ea).abs().max() > 1e-3
    with torch.no_grad():
        conv.lin_edge_value.weight.zero_()
    torch.testing.assert_close(conv(x, ei, edge_attr=ea), torch.zeros(5, 4), atol=1e-6, rtol=0)


def test_edge_values_need_edge_features_and_a_flag():
    with pytest.raises(ValueError, match="'edge_values'.*'edge_dim'"):
        LaplacianDiffusionConv(4, 2, edge_values=True)
    with pytest.raises(TypeError, match="'edge_values'"):
        LaplacianDiffusionConv(4, 2, edge_dim=2, edge_values=1)
    conv = LaplacianDiffusionConv(4, 2, edge_dim=2, edge_values=True)
    assert 'edge_values=True' in repr(conv) and 'edge_values' not in repr(LaplacianDiffusionConv(4, 2, edge_dim=2))
    assert conv.lin_edge_value.weight.shape == (2, 2)
    with pytest.raises(ValueError, match="'edge_attr' is required"):
        conv(torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))


def test_block_and_graph_models_pass_edge_values_through():
    block = PLETransformerBlock(8, 2, edge_dim=3, edge_values=True)
    assert block.conv.edge_values
    model = build_model('laplacian', 5, 2, hidden=8, heads=2, num_layers=2, edge_dim=3, edge_values=True)
    assert all(b.conv.edge_values for b in model.transformer.blocks)
    assert not build_model('laplacian', 5, 2, hidden=8, heads=2, edge_dim=3).transformer.blocks[0].conv.edge_values
    with pytest.raises(ValueError, match="'edge_values'"):
        build_model('laplacian', 5, 2, hidden=8, heads=2, edge_values=True)  # no edge features


def test_kernel_edge_values_on_an_empty_edge_set_and_bad_shapes():
    q = torch.randn(4, 2, 3, requires_grad=True)
    empty = torch.zeros(2, 0, dtype=torch.long)
    out, alpha = edge_softmax_aggregate(q, q, q, empty, 4, edge_value=torch.zeros(0, 5))
    assert out.shape == (4, 2, 8) and not out.any() and alpha.shape == (0, 2)
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
    edge_index = torch.tensor([[0, 1], [1, 2]])
    for bad in (torch.zeros(3, 5), torch.zeros(2)):
        with pytest.raises(ValueError, match='edge_value must be'):
            edge_softmax_aggregate(q, q, q, edge_index, 4, edge_value=bad)
