"""Every model on a tiny batch: shapes, gradients, permutation invariance of graph predictions."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import erdos_renyi_graph, to_undirected

from pyg_ple.bench.datasets import add_positional_encoding, digits_graphs, grid_edge_index
from pyg_ple.bench.models import (MODEL_NAMES, GraphModelConfig, TokenClassifier, TransformerClassifier, build_model,
                                  count_parameters, is_permutation_invariant)

IN, C = 5, 3
SMALL = dict(hidden=16, num_layers=2, heads=4, dropout=0.0)


def _graphs(n_graphs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_graphs):
        n = 4 + 2 * k
        torch.manual_seed(seed + k)
        ei = to_undirected(erdos_renyi_graph(n, 0.5))
        out.append(Data(x=torch.randn(n, IN, generator=g), edge_index=ei, y=torch.tensor([k % C])))
    return out


def _permute(data: Data, perm: torch.Tensor) -> Data:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return Data(x=data.x[perm], edge_index=inv[data.edge_index], y=data.y)


CASES = [(n, {}) for n in MODEL_NAMES] + [
    ('laplacian', {'attention': 'full'}), ('laplacian', {'attention': 'native+full'}), ('mixed', {'attention': 'full'}),
    ('laplacian', {'learn_step_size': True, 'step_size': 0.5}), ('gin', {'pool': 'add'}),
]


@pytest.mark.parametrize('name,extra', CASES, ids=[f'{n}-{"-".join(map(str, e.values()))}' for n, e in CASES])
def test_shapes_gradients_and_permutation_invariance(name, extra):
    torch.manual_seed(0)
    model = build_model(name, IN, C, **SMALL, **extra)
    graphs = _graphs()
    batch = Batch.from_data_list(graphs)
    out = model(batch)
    assert out.shape == (3, C) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, batch.y).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), 'some parameter received no gradient'
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert count_parameters(model) > 0
    if not is_permutation_invariant(name):
        return
    model.eval()
    with torch.no_grad():
        ref = model(Batch.from_data_list(graphs))
        perm = [_permute(g, torch.randperm(g.num_nodes)) for g in graphs]
        got = model(Batch.from_data_list(perm))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_single_graph_without_batch_vector():
    model = build_model('laplacian', IN, C, **SMALL).eval()
    g = _graphs(1)[0]
    assert model(g).shape == (1, C)


def test_token_model_reads_pixel_positions_and_is_order_sensitive():
    ds = digits_graphs(20)
    model = build_model('laplacian-tokens', ds.num_features, 10, **SMALL).eval()
    b = Batch.from_data_list(ds.graphs[:2])
    out = model(b)
    assert out.shape == (2, 10)
    g = ds.graphs[0]
    shifted = Data(x=g.x, edge_index=g.edge_index, pixel=(g.pixel + 1) % 64, y=g.y)
    with torch.no_grad():
        assert not torch.allclose(model(g), model(shifted))


def test_positional_encodings_feed_the_encoder():
    graphs = add_positional_encoding(_graphs(), 'rw', 4)
    assert graphs[0].pe.shape == (graphs[0].num_nodes, 4)
    lap = add_positional_encoding(_graphs(), 'lap', 6)  # the 4-node graph has fewer than 7 nodes: zero-padded
    assert all(g.pe.shape == (g.num_nodes, 6) for g in lap)
    model = build_model('laplacian', IN, C, pe_dim=4, **SMALL)
    assert model(Batch.from_data_list(graphs)).shape == (3, C)
    with pytest.raises(ValueError, match='pe'):
        model(Batch.from_data_list(_graphs()))


def test_attention_graph_of_a_layer():
    model = build_model('mixed', IN, C, **SMALL).eval()
    g = _graphs(1)[0]
    att = model.attention_graph(g, layer=1)
    assert att.weight.shape[1] == 4 and att.num_nodes == g.num_nodes
    G = att.to_networkx(head=0)
    assert G.number_of_nodes() == g.num_nodes
    full = build_model('laplacian', IN, C, attention='full', **SMALL).eval().attention_graph(g, layer=0)
    assert full.edge_index.size(1) == g.num_nodes ** 2
    with pytest.raises(IndexError):
        model.attention_graph(g, layer=5)
    assert isinstance(model, TransformerClassifier)


def test_unknown_model_name():
    with pytest.raises(ValueError, match='unknown model'):
        build_model('nope', IN, C)


def test_digits_as_graphs():
    ei = grid_edge_index(8, 8)
    assert ei.size(1) == 2 * (2 * 8 * 7 + 2 * 7 * 7)  # horizontal, vertical and both diagonals, both directions
    full = digits_graphs(30, ink_only=False)
    assert all(g.num_nodes == 64 and g.x.shape == (64, 17) for g in full.graphs)
    ink = digits_graphs(30)
    assert len(ink) == 30 and set(ink.labels.tolist()) == set(range(10))
    assert all(bool((g.x[:, 0] > 0).all()) for g in ink.graphs)


def test_transformer_ple_init_and_encoder_norm():
    """--ple-init starts every block as the diffusion step (W_v = W_o = I); --encoder-norm puts the residual stream
    on LayerNorm scale."""
    import torch
    from torch import nn

    from pyg_ple.bench.models import build_model
    model = build_model('laplacian', 5, 3, hidden=8, heads=2, num_layers=2, ple_init=True, encoder_norm=True)
    assert isinstance(model.encoder, nn.Sequential) and isinstance(model.encoder[-1], nn.LayerNorm)
    for block in model.transformer.blocks:
        assert torch.equal(block.conv.lin_value.weight, torch.eye(8))
        assert torch.equal(block.proj.weight, torch.eye(8))
        assert torch.count_nonzero(block.mlp[-1].weight) == 0
    plain = build_model('laplacian', 5, 3, hidden=8, heads=2, num_layers=2)
    assert isinstance(plain.encoder, nn.Linear)
    assert not torch.equal(plain.transformer.blocks[0].conv.lin_value.weight, torch.eye(8))


@pytest.mark.parametrize('name', ['gcn', 'gin', 'laplacian', 'laplacian-tokens'])
def test_input_norm_makes_training_outputs_invariant_to_feature_scale(name):
    """input_norm (``--node-attr``) standardises raw features with batch statistics: an affine change of the feature
    scale (ENZYMES' attributes range over 1..761) leaves the training-mode output unchanged; without it, it does not."""
    batch = Batch.from_data_list(_graphs(4))
    scaled = batch.clone()
    scaled.x = batch.x * torch.tensor([1000.0, 0.5, 3.0, 50.0, 1.0]) + 7.0
    for input_norm in (True, False):
        torch.manual_seed(0)
        model = build_model(name, IN, C, input_norm=input_norm, **SMALL).train()
        assert (model.input_norm is not None) == input_norm
        same = torch.allclose(model(batch), model(scaled), atol=1e-4, rtol=1e-4)
        assert same == input_norm


def _explicit_transformer_logits(model, data):
    """Encoder -> each block in turn -> final LayerNorm -> pooling -> head, written out."""
    batch = data.batch
    h = model.encode(data)
    edge_index, edge_attr = model.attention_edges(data, batch)
    for block in model.transformer.blocks:
        h = block(h, edge_index, batch=batch, edge_attr=edge_attr)
    h = model.transformer.norm(h)
    return model.head(model.readout(h, batch, data.num_graphs))


@pytest.mark.parametrize('name,attention', [('transformer', 'native'), ('laplacian', 'full'),
                                            ('mixed', 'native+full')])
def test_transformer_model_is_its_blocks_and_layer_norm(name, attention):
    model = build_model(name, IN, C, attention=attention, **SMALL).eval()
    batch = Batch.from_data_list(_graphs())
    torch.testing.assert_close(model(batch), _explicit_transformer_logits(model, batch), atol=0, rtol=0)
    heads = SMALL['heads']
    expected = {'transformer': 0, 'laplacian': heads, 'mixed': heads // 2}[name]
    assert all(b.conv.laplacian_heads == expected for b in model.transformer.blocks)
    assert all(b.conv.edge_dim == (2 if attention == 'native+full' else None) for b in model.transformer.blocks)
    assert all(b.mlp[0].out_features == int(GraphModelConfig.mlp_ratio * 16) for b in model.transformer.blocks)


def test_native_plus_full_edges_come_from_candidate_edge_index():
    from pyg_ple.edges import candidate_edge_index
    model = build_model('laplacian', IN, C, attention='native+full', **SMALL)
    batch = Batch.from_data_list(_graphs())
    edge_index, edge_attr = model.attention_edges(batch, batch.batch)
    want, is_native = candidate_edge_index('native+full', edge_index=batch.edge_index, batch=batch.batch)
    assert torch.equal(edge_index, want) and torch.equal(edge_attr.argmax(-1).bool(), is_native)
    with pytest.raises(ValueError, match=r"'attention' must be one of 'native', 'full', 'native\+full'"):
        build_model('laplacian', IN, C, attention='both')


def test_token_model_is_its_blocks_and_layer_norm_and_exports_padded_graphs():
    model = build_model('mixed-tokens', IN, C, **SMALL).eval()
    assert isinstance(model, TokenClassifier)
    graphs = _graphs()  # 4, 6 and 8 nodes: padded to 8 tokens
    batch = Batch.from_data_list(graphs)
    x, mask = model.tokens(batch)
    for block in model.transformer.blocks:
        x = block(x, mask=mask)
    x = model.transformer.norm(x)
    pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(model(batch), model.head(pooled), atol=1e-6, rtol=1e-6)
    att = model.attention_graph(batch, layer=1)
    assert att.num_nodes == 3 * 8
    src, dst = att.edge_index
    assert bool(mask.view(-1)[src].all() and mask.view(-1)[dst].all())  # padding tokens have no edges
    assert att.num_edges == sum(g.num_nodes ** 2 for g in graphs)
    single = model.attention_graph(graphs[1], layer=1)  # a single graph: the node ids are its own
    assert single.num_nodes == graphs[1].num_nodes and single.num_edges == graphs[1].num_nodes ** 2
    torch.testing.assert_close(single.to_dense()[0], att.to_dense()[1, :, :6, :6], atol=1e-6, rtol=1e-5)


def test_build_model_reads_its_defaults_from_the_config():
    from dataclasses import fields
    cfg = GraphModelConfig()
    model = build_model('mixed', IN, C)
    assert model.config == cfg and model.hidden == cfg.hidden == 64
    assert len(model.transformer.blocks) == cfg.num_layers and model.transformer.heads == cfg.heads
    block = model.transformer.blocks[0]
    assert block.conv.step_size == cfg.step_size and block.dropout.p == cfg.dropout
    # the fields the block also has default to the block's own defaults, except the documented mlp_ratio
    import inspect

    from pyg_ple import PLETransformerBlock
    block_defaults = {k: p.default for k, p in inspect.signature(PLETransformerBlock).parameters.items()
                      if p.default is not inspect.Parameter.empty}
    for f in fields(GraphModelConfig):
        if f.name in block_defaults and f.name not in ('mlp_ratio', 'dropout'):
            assert f.default == block_defaults[f.name], f.name
    assert GraphModelConfig.mlp_ratio == 2.0 != block_defaults['mlp_ratio']
    # a config object and keyword overrides
    small = GraphModelConfig(hidden=16, heads=2, num_layers=1)
    assert build_model('gcn', IN, C, small, dropout=0.3).config == GraphModelConfig(hidden=16, heads=2, num_layers=1,
                                                                                     dropout=0.3)


@pytest.mark.parametrize('name', ['gcn', 'gat', 'gps', 'laplacian', 'mixed-tokens'])
def test_misspelled_hyper_parameter_is_an_error_naming_it(name):
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) 'dropuot' .*accepted: hidden, num_layers"):
        build_model(name, IN, C, dropuot=0.5)


@pytest.mark.parametrize('hparams,match', [
    (dict(hidden=0), "'hidden' must be positive"), (dict(num_layers=0), "'num_layers' must be positive"),
    (dict(heads=3, hidden=32), r"'hidden' \(32\) must be a multiple of 'heads' \(3\)"),
    (dict(dropout=1.5), r"'dropout' must be in \[0, 1\)"), (dict(pool='median'), "'pool' must be one of"),
    (dict(pe_dim=-1), "'pe_dim'"), (dict(hidden='64'), "'hidden' must be of type int"),
    (dict(ple_init=1), "'ple_init' must be of type bool"),
])
def test_bad_hyper_parameter_values_name_the_field(hparams, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_model('mixed', IN, C, **hparams)
