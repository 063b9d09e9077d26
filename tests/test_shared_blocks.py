"""``PLETransformer(share_weights=True)``: one attention, projection and MLP applied at every step, norms per step.

The reference is an untied stack whose blocks hold copies of the same weights: its output must be the tied stack's,
and the tied parameters' gradients the sum of the copies' gradients (the chain rule through a shared parameter)."""
import copy

import pytest
import torch

from pyg_ple import PLETransformer
from pyg_ple.bench.models import build_model
from pyg_ple.bench.node import build_node_model
import reference as ref

SHARED = ('conv', 'proj', 'mlp')


def _untied_copy(stack: PLETransformer) -> PLETransformer:
    """The same stack with every block's shared modules deep-copied: same weights, independent parameters."""
    untied = copy.deepcopy(stack)
    for block in untied.blocks:
        for name in SHARED:
            setattr(block, name, copy.deepcopy(getattr(block, name)))
    assert len({id(b.conv) for b in untied.blocks}) == untied.num_layers
    return untied


def _randomise_norms(stack: PLETransformer) -> None:
    # Per-step norms that differ from each other, so that a stack sharing them too would fail the tests.
    with torch.no_grad():
        for block in stack.blocks:
            for norm in (block.norm1, block.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize('norm,prenorm', [('layer', True), ('batch', False), ('rms', True)])
def test_shared_stack_equals_untied_copies_with_gradients(norm, prenorm):
    torch.manual_seed(0)
    stack = PLETransformer(8, 2, 3, share_weights=True, laplacian_heads=1, norm=norm, prenorm=prenorm,
                           degree_scaler=True, edge_dim=2).double()
    if norm != 'rms':
        _randomise_norms(stack)
    with torch.no_grad():  # a degree scaler away from its identity start, so that it is exercised
        stack.blocks[0].conv.deg_coef.normal_()
    untied = _untied_copy(stack)
    x = torch.randn(9, 8, dtype=torch.float64)
    edge_index, edge_attr = ref.random_graph(9, 25, seed=3), torch.randn(25, 2, dtype=torch.float64)
    out = stack(x, edge_index, edge_attr=edge_attr)
    want = untied(x, edge_index, edge_attr=edge_attr)
    torch.testing.assert_close(out, want)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (want * weight).sum().backward()
    for name in SHARED:
        for (pname, p) in getattr(stack.blocks[0], name).named_parameters():
            summed = sum(dict(getattr(b, name).named_parameters())[pname].grad for b in untied.blocks)
            torch.testing.assert_close(p.grad, summed, msg=f'{name}.{pname}')
    for tied, copy_ in zip(stack.blocks, untied.blocks):  # the norms are the steps' own
        for a, b in zip(tied.norm1.parameters(), copy_.norm1.parameters()):
            torch.testing.assert_close(a.grad, b.grad)


def test_shared_stack_parameters_and_forms():
    torch.manual_seed(0)
    tied, untied = PLETransformer(8, 2, 4, share_weights=True), PLETransformer(8, 2, 4)
    block_params = sum(p.numel() for name in SHARED for p in getattr(untied.blocks[0], name).parameters())
    norm_params = sum(p.numel() for b in untied.blocks for n in (b.norm1, b.norm2) for p in n.parameters())
    count = sum(p.numel() for p in tied.parameters())
    assert count == block_params + norm_params + sum(p.numel() for p in tied.norm.parameters())
    assert sum(p.numel() for p in untied.parameters()) - count == 3 * block_params
    assert all(b.conv is tied.blocks[0].conv and b.mlp is tied.blocks[0].mlp for b in tied.blocks)
    assert len({id(b.norm1) for b in tied.blocks}) == 4
    # The dense all-pairs and sequence paths run the same tied blocks.
    tied.eval()
    ref_stack = _untied_copy(tied).eval()
    x, batch = torch.randn(7, 8), torch.tensor([0, 0, 0, 1, 1, 1, 1])
    torch.testing.assert_close(tied(x, batch=batch), ref_stack(x, batch=batch))
    seq = torch.randn(2, 5, 8)
    torch.testing.assert_close(tied(seq, causal=True), ref_stack(seq, causal=True))
    # A state dict round trip keeps the tie.
    loaded = PLETransformer(8, 2, 4, share_weights=True)
    loaded.load_state_dict(tied.state_dict())
    assert loaded.blocks[3].conv is loaded.blocks[0].conv
    torch.testing.assert_close(loaded.eval()(x, batch=batch), tied(x, batch=batch))
    assert 'share_weights=True' in repr(tied) and 'share_weights' not in repr(untied)


def test_shared_stack_ple_init_and_reset_parameters():
    stack = PLETransformer(8, 2, 3, share_weights=True, ple_init=True)
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_()
    stack.reset_parameters()
    assert torch.equal(stack.blocks[2].proj.weight, torch.eye(8))
    assert stack.blocks[2].conv is stack.blocks[0].conv


def test_share_weights_must_be_a_flag():
    with pytest.raises(ValueError, match="'share_weights'"):
        PLETransformer(8, 2, 2, share_weights='yes')


def test_models_pass_share_weights_through():
    graph = build_model('laplacian', 5, 2, hidden=8, heads=2, num_layers=3, share_weights=True)
    blocks = graph.transformer.blocks
    assert graph.transformer.share_weights and blocks[2].conv is blocks[0].conv
    assert not build_model('laplacian', 5, 2, hidden=8, heads=2).transformer.share_weights
    node = build_node_model('ple', 5, 3, hidden=8, heads=2, num_layers=2, share_weights=True)
    assert node.transformer.blocks[1].mlp is node.transformer.blocks[0].mlp
    with pytest.raises(TypeError, match="'share_weights'"):
        build_node_model('ple', 5, 3, share_weights=1)


def test_shared_stack_compiles_without_graph_breaks():
    torch._dynamo.reset()
    stack = PLETransformer(8, 2, 3, share_weights=True, norm='batch', prenorm=False, degree_scaler=True).eval()
    x, edge_index = torch.randn(9, 8), ref.random_graph(9, 25, seed=1)
    compiled = torch.compile(stack, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(x, edge_index), stack(x, edge_index))
