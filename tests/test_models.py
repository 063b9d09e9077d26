"""Every model on a tiny batch: shapes, gradients, permutation invariance of graph predictions."""
from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

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
    """Encoder -> each block in turn -> final norm (pre-norm blocks) -> mean and sum pooling -> head, written out."""
    from torch_geometric.nn import global_add_pool, global_mean_pool
    batch = data.batch
    h = model.encode(data)
    edge_index, edge_attr = model.attention_edges(data)
    for block in model.transformer.blocks:
        h = block(h, edge_index, batch=batch, edge_attr=edge_attr, all_pairs=model.attention != 'native')
    if model.config.prenorm:
        h = model.transformer.norm(h)
    else:
        assert model.transformer.norm is None  # post-norm blocks end with their own norm
    return model.head(torch.cat([global_mean_pool(h, batch), global_add_pool(h, batch)], dim=-1))


@pytest.mark.parametrize('name,attention,prenorm', [('transformer', 'native', False), ('laplacian', 'full', False),
                                                    ('mixed', 'native+full', False), ('laplacian', 'native', True)])
def test_transformer_model_is_its_blocks_and_norm(name, attention, prenorm):
    model = build_model(name, IN, C, attention=attention, prenorm=prenorm, **SMALL).eval()
    batch = Batch.from_data_list(_graphs())
    torch.testing.assert_close(model(batch), _explicit_transformer_logits(model, batch), atol=0, rtol=0)
    heads = SMALL['heads']
    expected = {'transformer': 0, 'laplacian': heads, 'mixed': heads // 2}[name]
    assert all(b.conv.laplacian_heads == expected for b in model.transformer.blocks)
    assert all(b.conv.edge_dim == (1 if attention == 'native+full' else None) for b in model.transformer.blocks)
    assert all(b.mlp[0].out_features == int(GraphModelConfig.mlp_ratio * 16) for b in model.transformer.blocks)


def test_native_plus_full_passes_the_bonds_and_never_lists_the_pairs(monkeypatch):
    import pyg_ple.edges
    import pyg_ple.nn.block
    model = build_model('laplacian', IN, C, attention='native+full', **SMALL).eval()
    batch = Batch.from_data_list(_graphs())
    edge_index, edge_attr = model.attention_edges(batch)
    assert torch.equal(edge_index, batch.edge_index) and torch.equal(edge_attr, torch.ones(edge_index.size(1), 1))
    want = model(batch)

    def refuse(*args, **kwargs):
        raise AssertionError('the all-pairs path listed the pairs')

    monkeypatch.setattr(pyg_ple.edges, 'full_edge_index', refuse)
    monkeypatch.setattr(pyg_ple.nn.block, 'full_edge_index', refuse)
    torch.testing.assert_close(model(batch), want, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"'attention' must be one of 'native', 'full', 'native\+full'"):
        build_model('laplacian', IN, C, attention='both')


def test_token_model_is_its_blocks_and_layer_norm_and_exports_padded_graphs():
    model = build_model('mixed-tokens', IN, C, **SMALL, norm='layer', prenorm=True).eval()
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
    # the fields the block also has default to the block's own defaults, except the documented mlp_ratio, edge_dim
    # (the width of data.edge_attr, 0 for none; the block's also counts the native-edge flag) and the graph settings
    # chosen on validation (post-norm BatchNorm and the degree scaler)
    import inspect

    from pyg_ple import PLETransformerBlock
    block_defaults = {k: p.default for k, p in inspect.signature(PLETransformerBlock).parameters.items()
                      if p.default is not inspect.Parameter.empty}
    for f in fields(GraphModelConfig):
        if f.name in block_defaults and f.name not in ('mlp_ratio', 'dropout', 'edge_dim', 'norm', 'prenorm',
                                                       'degree_scaler'):
            assert f.default == block_defaults[f.name], f.name
    assert GraphModelConfig.mlp_ratio == 2.0 != block_defaults['mlp_ratio']
    assert (cfg.norm, cfg.prenorm, cfg.degree_scaler, cfg.pool) == ('batch', False, True, 'mean+sum')
    assert (block.norm, block.prenorm, block.conv.degree_scaler) == ('batch', False, True)
    assert model.head[0].in_features == 2 * cfg.hidden  # mean and sum concatenated
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


# --------------------------------------------------------------------------------------------------------------------
# Readout, edge features, ple-gps, block options
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('pool', ['mean', 'sum', 'add', 'max', 'mean+sum'])
@pytest.mark.parametrize('name', ['gin', 'laplacian'])
def test_readout_is_the_named_pyg_pools_concatenated(name, pool):
    from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool
    reference = {'mean': [global_mean_pool], 'sum': [global_add_pool], 'add': [global_add_pool],
                 'max': [global_max_pool], 'mean+sum': [global_mean_pool, global_add_pool]}[pool]
    torch.manual_seed(0)
    model = build_model(name, IN, C, **SMALL, pool=pool).eval()
    batch = Batch.from_data_list(_graphs())
    assert model.head[0].in_features == SMALL['hidden'] * len(reference)
    with torch.no_grad():
        h = model.layer_states(model.encode(batch), batch, batch.batch)[-1]
        pooled = torch.cat([p(h, batch.batch) for p in reference], dim=-1)
        torch.testing.assert_close(model(batch), model.head(pooled))


def _labelled(graphs, num_labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for d in graphs:
        label = torch.randint(num_labels, (d.edge_index.size(1),), generator=g)
        out.append(Data(x=d.x, edge_index=d.edge_index, y=d.y,
                        edge_attr=torch.nn.functional.one_hot(label, num_labels).float()))
    return out


EDGE_CASES = [('laplacian', 'native'), ('laplacian', 'native+full'), ('transformer', 'native'), ('gat', 'native'),
              ('gin', 'native'), ('gatedgcn', 'native'), ('gps', 'native'), ('ple-gps', 'native')]


@pytest.mark.parametrize('name,attention', EDGE_CASES)
def test_edge_labels_change_the_output_and_models_stay_permutation_invariant(name, attention):
    torch.manual_seed(0)
    model = build_model(name, IN, C, **SMALL, attention=attention, edge_dim=3).eval()
    graphs = _labelled(_graphs())
    relabelled = [Data(x=d.x, edge_index=d.edge_index, y=d.y, edge_attr=d.edge_attr.roll(1, dims=1)) for d in graphs]
    with torch.no_grad():
        out = model(Batch.from_data_list(graphs))
        assert not torch.allclose(out, model(Batch.from_data_list(relabelled)), atol=1e-4)
        perm = []
        for d in graphs:
            p = torch.randperm(d.num_nodes)
            inv = torch.empty_like(p)
            inv[p] = torch.arange(p.numel())
            perm.append(Data(x=d.x[p], edge_index=inv[d.edge_index], y=d.y, edge_attr=d.edge_attr))
        torch.testing.assert_close(model(Batch.from_data_list(perm)), out, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no 'edge_attr'"):
        model(Batch.from_data_list(_graphs()))


def test_gatedgcn_layer_is_the_residual_gated_update_with_edge_features_in_dense_math():
    # x_i' = W_s x_i + b + sum_{j -> i} sigmoid(W_k [x_i, e_ji] + W_q [x_j, e_ji]) * W_v [x_j, e_ji] (Bresson & Laurent
    # 2017, PyG's ResGatedGraphConv), then the stack's h + ReLU(BN(.)), checked against a loop over the edges.
    torch.manual_seed(0)
    model = build_model('gatedgcn', IN, C, **SMALL, edge_dim=3).eval()
    batch = Batch.from_data_list(_labelled(_graphs(1)))
    h = torch.randn(batch.num_nodes, SMALL['hidden'])
    conv, norm = model.convs[0], model.norms[0]
    edge = model.edge_features(batch)
    expected = torch.zeros_like(h)
    for (j, i), e in zip(batch.edge_index.t().tolist(), edge):
        gate = torch.sigmoid(conv.lin_key(torch.cat([h[i], e])) + conv.lin_query(torch.cat([h[j], e])))
        expected[i] += gate * conv.lin_value(torch.cat([h[j], e]))
    expected = expected + conv.lin_skip(h) + conv.bias
    expected = h + torch.relu(norm(expected))
    with torch.no_grad():  # the stack's first layer
        torch.testing.assert_close(model.layer_states(h, batch, batch.batch)[1], expected)


def test_edge_labels_reach_the_blocks_as_a_hand_built_edge_attr():
    torch.manual_seed(0)
    graphs = _labelled(_graphs())
    batch = Batch.from_data_list(graphs)
    native = build_model('laplacian', IN, C, **SMALL, edge_dim=3).eval()
    both = build_model('laplacian', IN, C, **SMALL, edge_dim=3, attention='native+full').eval()
    assert native.transformer.blocks[0].conv.edge_dim == 3 and both.transformer.blocks[0].conv.edge_dim == 4
    # all pairs of each graph, [bond flag, label one-hot] on native pairs and zeros on the others
    labels = {(int(s), int(t)): a for (s, t), a in zip(batch.edge_index.t(), batch.edge_attr)}
    pairs, rows = [], []
    for t in range(batch.num_nodes):
        for s in range(batch.num_nodes):
            if batch.batch[s] == batch.batch[t]:
                pairs.append((s, t))
                label = labels.get((s, t))
                rows.append(torch.cat([torch.tensor([1.0]), label]) if label is not None else torch.zeros(4))
    with torch.no_grad():
        for model, edge_index, edge_attr in ((native, batch.edge_index, batch.edge_attr),
                                             (both, torch.tensor(pairs).t(), torch.stack(rows))):
            listed = deepcopy(model)
            for block in listed.transformer.blocks if model is both else ():  # the listed pairs hold the self pairs
                block.conv.add_self_loops = block.conv.attention.add_self_loops = False
            h = listed.transformer(model.encode(batch), edge_index, batch=batch.batch, edge_attr=edge_attr)
            from torch_geometric.nn import global_add_pool, global_mean_pool
            pooled = torch.cat([global_mean_pool(h, batch.batch), global_add_pool(h, batch.batch)], dim=-1)
            torch.testing.assert_close(model(batch), model.head(pooled), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('hparams,match', [
    (dict(edge_dim=2, attention='full'), "'edge_dim' needs attention 'native' or 'native\\+full'"),
    (dict(edge_dim=-1), "'edge_dim' must be non-negative"),
])
def test_edge_dim_refusals(hparams, match):
    with pytest.raises(ValueError, match=match):
        build_model('laplacian', IN, C, **hparams)
    with pytest.raises(ValueError, match="'edge_dim' does not apply to the token models"):
        build_model('laplacian-tokens', IN, C, edge_dim=2)


def test_ple_gps_layer_is_local_gin_plus_laplacian_attention_over_all_pairs():
    from torch_geometric.nn import global_mean_pool

    from pyg_ple import full_edge_index
    torch.manual_seed(0)
    model = build_model('ple-gps', IN, C, **{**SMALL, 'num_layers': 1}, pool='mean').eval()
    batch = Batch.from_data_list(_graphs())
    x = model.encode(batch)
    norm_local, norm_global, norm_out = model.norms[0]
    with torch.no_grad():
        # the attention through the sparse path over every pair: independent of the dense path the model uses
        mixed = (norm_local(x + model.locals[0](x, batch.edge_index))
                 + norm_global(x + model.globals[0](x, full_edge_index(batch.batch))))
        h = norm_out(mixed + model.ffns[0](mixed))
        torch.testing.assert_close(model(batch), model.head(global_mean_pool(h, batch.batch)), atol=1e-5, rtol=1e-4)
    assert model.globals[0].laplacian_heads == model.globals[0].heads


def test_ple_gps_trains_one_step_and_is_not_a_default_model():
    from pyg_ple.bench.options import DEFAULT_DIGITS_MODELS, DEFAULT_TU_MODELS
    torch.manual_seed(0)
    model = build_model('ple-gps', IN, C, **SMALL)
    batch = Batch.from_data_list(_graphs())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.numel() > 1)
    with torch.no_grad():
        assert float(torch.nn.functional.cross_entropy(model(batch), batch.y)) < float(loss.detach())
    assert 'ple-gps' not in DEFAULT_DIGITS_MODELS.split(',') + DEFAULT_TU_MODELS.split(',')


def test_block_options_reach_every_block():
    import inspect

    from pyg_ple import PLETransformerBlock
    if 'degree_scaler' not in inspect.signature(PLETransformerBlock).parameters:
        pytest.skip('PLETransformerBlock has no norm/prenorm/degree_scaler yet')
    model = build_model('laplacian', IN, C, **SMALL, norm='batch', prenorm=False, degree_scaler=True)
    for block in model.transformer.blocks:
        assert block.norm == 'batch' and isinstance(block.norm1, torch.nn.BatchNorm1d)
        assert block.prenorm is False and block.conv.degree_scaler
    plain = build_model('laplacian', IN, C, **SMALL, norm='layer', prenorm=True, degree_scaler=False)
    assert plain.transformer.blocks[0].norm == 'layer' and plain.transformer.blocks[0].prenorm
    assert not plain.transformer.blocks[0].conv.degree_scaler
    assert isinstance(plain.transformer.norm, torch.nn.LayerNorm)
    assert all(conv.degree_scaler for conv in build_model('ple-gps', IN, C, **SMALL, degree_scaler=True).globals)
    linear = build_model('laplacian', IN, C, **SMALL, degree_scaler='linear')
    assert all(block.conv.degree_scaler == 'linear' for block in linear.transformer.blocks)
    assert all(conv.degree_scaler == 'linear'
               for conv in build_model('ple-gps', IN, C, **SMALL, degree_scaler='linear').globals)
    with pytest.raises(ValueError, match="'degree_scaler'"):
        build_model('laplacian', IN, C, **SMALL, degree_scaler='cubic')
    with pytest.raises(TypeError, match="'degree_scaler'"):
        build_model('laplacian', IN, C, **SMALL, degree_scaler=2)
    with pytest.raises(ValueError, match="'norm' must be one of"):
        build_model('gcn', IN, C, norm='group')


def _truncated(model, k):
    """A copy of ``model`` with only its first ``k`` layers and no head: its output is the pooled last state."""
    copy = deepcopy(model)
    owner, names = ((copy.transformer, ['blocks']) if hasattr(copy, 'transformer') else
                    (copy, ['layers']) if hasattr(copy, 'layers') else
                    (copy, ['convs', 'norms']))
    for name in names:
        setattr(owner, name, torch.nn.ModuleList(list(getattr(owner, name))[:k]))
    copy.config = replace(copy.config, readout_layers='last')
    copy.head = torch.nn.Identity()
    return copy


@pytest.mark.parametrize('name', ['gcn', 'gat', 'gin', 'gps', 'ple-gps', 'laplacian', 'transformer'])
def test_readout_of_every_layer_concatenates_the_readouts_of_each_depth(name):
    torch.manual_seed(0)
    model = build_model(name, IN, C, **{**SMALL, 'num_layers': 3}, pool='mean+sum', readout_layers='all').eval()
    assert model.head[0].in_features == SMALL['hidden'] * 2 * 4
    batch = Batch.from_data_list(_graphs())
    with torch.no_grad():
        depths = [_truncated(model, k)(batch) for k in range(4)]
        assert not torch.allclose(depths[-1], depths[-2])
        torch.testing.assert_close(model(batch), model.head(torch.cat(depths, dim=-1)))


def test_readout_layers_is_checked_and_refused_by_the_token_models():
    with pytest.raises(ValueError, match="'readout_layers' must be one of 'last', 'all'"):
        build_model('gin', IN, C, readout_layers='every')
    with pytest.raises(ValueError, match="'readout_layers' does not apply to the token models"):
        build_model('laplacian-tokens', IN, C, readout_layers='all')
    assert build_model('gin', IN, C).config.readout_layers == 'last'
