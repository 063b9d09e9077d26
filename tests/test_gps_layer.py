"""PLEGPSLayer: the GPS layer with Laplacian attention over all pairs, and the ``ple-gps`` model built from it."""
from __future__ import annotations

from typing import Any, Optional

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GINConv, GINEConv
from torch_geometric.utils import erdos_renyi_graph, to_dense_batch, to_undirected

from pyg_ple import LaplacianDiffusionConv, PLEGPSLayer, full_edge_index
from pyg_ple.bench.models import (GraphClassifier, GraphModelConfig, _check_heads, _gin, _legacy_ple_gps_keys,
                                  build_model, config_from_hparams)

IN, C = 5, 3
SMALL = dict(hidden=16, num_layers=2, heads=4)


class LegacyPLEGPS(GraphClassifier):
    """``PLEGPSClassifier`` as it was before its layers were PLEGPSLayer (the reference for identical outputs)."""

    def __init__(self, in_channels: int, num_classes: int, config: Optional[GraphModelConfig] = None,
                 **hparams: Any):
        super().__init__(in_channels, num_classes, config_from_hparams(GraphModelConfig, hparams, config))
        config = self.config
        _check_heads(config)
        hidden, edge_dim = config.hidden, config.edge_dim or None
        ffn = round(hidden * config.mlp_ratio)
        self.locals = nn.ModuleList(
            _gin(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)), edge_dim)
            for _ in range(config.num_layers))
        self.globals = nn.ModuleList(
            LaplacianDiffusionConv(hidden, hidden // config.heads, config.heads, step_size=config.step_size,
                                   learn_step_size=config.learn_step_size, dropout=config.attention_dropout,
                                   degree_scaler=config.degree_scaler)
            for _ in range(config.num_layers))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(hidden, ffn), nn.ReLU(), nn.Dropout(config.dropout),
                                                nn.Linear(ffn, hidden)) for _ in range(config.num_layers))
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(3))
                                   for _ in range(config.num_layers))

    def layer_states(self, h: Tensor, data: Any, batch: Tensor) -> list[Tensor]:
        edges = {} if not self.config.edge_dim else {'edge_attr': self.edge_features(data)}
        states = [h]
        for local, attention, ffn, (norm_local, norm_global, norm_out) in zip(self.locals, self.globals, self.ffns,
                                                                                self.norms):
            dense, valid = to_dense_batch(h, batch)
            update = attention.forward_dense(dense, mask=valid)[valid]
            mixed = (norm_local(h + self.dropout(local(h, data.edge_index, **edges)))
                     + norm_global(h + self.dropout(update)))
            h = norm_out(mixed + ffn(mixed))
            states.append(h)
        return states


def _batch(edge_dim: int = 0, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for k in range(3):
        n = 4 + 2 * k
        torch.manual_seed(seed + k)
        ei = to_undirected(erdos_renyi_graph(n, 0.5))
        data = Data(x=torch.randn(n, IN, generator=g), edge_index=ei, y=torch.tensor([k % C]))
        if edge_dim:
            data.edge_attr = torch.randn(ei.size(1), edge_dim, generator=g)
        graphs.append(data)
    return Batch.from_data_list(graphs)


def _assert_same(a: Tensor, b: Tensor) -> None:
    assert torch.equal(a, b), float((a - b).abs().max())


HPARAMS = [dict(), dict(edge_dim=2), dict(degree_scaler='linear', learn_step_size=True, step_size=0.5),
           dict(dropout=0.2, attention_dropout=0.1), dict(mlp_ratio=1.5, readout_layers='all')]


@pytest.mark.parametrize('hparams', HPARAMS, ids=lambda h: '-'.join(f'{k}={v}' for k, v in h.items()) or 'default')
def test_ple_gps_is_built_from_the_layer_with_the_same_outputs_for_a_seed(hparams):
    torch.manual_seed(7)
    legacy = LegacyPLEGPS(IN, C, **SMALL, **hparams)
    torch.manual_seed(7)
    model = build_model('ple-gps', IN, C, **SMALL, **hparams)
    assert all(isinstance(layer, PLEGPSLayer) for layer in model.layers)
    # The same initial weights: every legacy entry loads (renamed) and nothing is left over either way.
    model_state, legacy_state = model.state_dict(), legacy.state_dict()
    assert len(model_state) == len(legacy_state)
    fresh = build_model('ple-gps', IN, C, **SMALL, **hparams)
    fresh.load_state_dict(legacy_state)  # strict
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model_state[key]), key
    data = _batch(edge_dim=hparams.get('edge_dim', 0))
    for mode in ('train', 'eval'):
        legacy.train(mode == 'train')
        model.train(mode == 'train')
        torch.manual_seed(3)  # the same dropout masks, drawn in the same order
        expected = legacy(data)
        torch.manual_seed(3)
        out = model(data)
        _assert_same(out, expected)
        if mode == 'train':
            expected.square().sum().backward()
            out.square().sum().backward()
            legacy_grads = {name: p.grad for name, p in legacy.named_parameters()}
            _legacy_ple_gps_keys(legacy_grads, '')  # renamed as load_state_dict renames them
            grads = {name: p.grad for name, p in model.named_parameters()}
            assert grads.keys() == legacy_grads.keys()
            for key, grad in grads.items():  # (the backward of the all-pairs path sums in another order)
                torch.testing.assert_close(grad, legacy_grads[key], atol=1e-6, rtol=1e-5, msg=key)
    # The training step moved the batch-norm running statistics the same way.
    fresh.load_state_dict(legacy.state_dict())
    for key, value in model.state_dict().items():
        if 'running' in key:
            torch.testing.assert_close(value, fresh.state_dict()[key], msg=key)


def test_legacy_state_dict_gives_the_same_predictions():
    torch.manual_seed(1)
    legacy = LegacyPLEGPS(IN, C, **SMALL).eval()
    legacy(_batch())  # (eval: running statistics unchanged)
    model = build_model('ple-gps', IN, C, **SMALL).eval()  # another seed: other weights until loaded
    data = _batch(seed=4)
    assert not torch.allclose(model(data), legacy(data))
    model.load_state_dict(legacy.state_dict())
    _assert_same(model(data), legacy(data))
    # And the new names round-trip.
    again = build_model('ple-gps', IN, C, **SMALL).eval()
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(data), model(data))


def test_many_graph_sizes_match_the_padded_dense_path():
    """The global part runs the conv's all-pairs entry point (graphs in size buckets); on a batch whose sizes
    spread over several buckets it agrees with the previous single padded dense batch up to float rounding."""
    torch.manual_seed(2)
    legacy = LegacyPLEGPS(IN, C, **SMALL).eval()
    model = build_model('ple-gps', IN, C, **SMALL).eval()
    model.load_state_dict(legacy.state_dict())
    g = torch.Generator().manual_seed(0)
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 2, 40]
    data = Batch.from_data_list([Data(x=torch.randn(n, IN, generator=g),
                                      edge_index=to_undirected(erdos_renyi_graph(n, 0.3)), y=torch.tensor([0]))
                                 for n in sizes])
    with torch.no_grad():
        torch.testing.assert_close(model(data), legacy(data), atol=1e-5, rtol=1e-5)


def test_legacy_views_name_the_layer_parts():
    model = build_model('ple-gps', IN, C, **SMALL)
    assert model.globals[1] is model.layers[1].attn and model.locals[0] is model.layers[0].conv
    assert model.ffns[0] is model.layers[0].mlp and model.norms[1][2] is model.layers[1].norm3


@pytest.mark.parametrize('with_local', [True, False])
def test_layer_matches_its_formula_with_the_sparse_all_pairs_path(with_local):
    """The layer against its formula, with the global part through the conv's per-edge path over every pair of
    each graph (independent of the dense path the layer runs)."""
    torch.manual_seed(0)
    data = _batch(edge_dim=3)
    x = torch.randn(data.num_nodes, 8, dtype=torch.float64)
    local = GINEConv(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)), edge_dim=3) if with_local else None
    layer = PLEGPSLayer(8, local, heads=2, laplacian_heads=1, learn_step_size=True).double()
    with torch.no_grad():
        layer.attn.eta.copy_(torch.tensor([0.7, 1.3]))
    layer.train()  # batch statistics
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = layer(x1, data.edge_index, batch=data.batch, edge_attr=data.edge_attr.double())

    def bn(norm, h):
        return torch.nn.functional.batch_norm(h, None, None, norm.module.weight, norm.module.bias, training=True)

    pairs = full_edge_index(data.batch)
    reference = LaplacianDiffusionConv(8, 4, heads=2, laplacian_heads=1, learn_step_size=True, fused=False).double()
    reference.load_state_dict(layer.attn.state_dict())
    glob = bn(layer.norm2, x2 + reference(x2, pairs))
    mixed = glob if local is None else bn(layer.norm1, x2 + local(x2, data.edge_index, data.edge_attr.double())) + glob
    expected = bn(layer.norm3, mixed + layer.mlp(mixed))
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    assert layer.attn.laplacian_heads == 1


def test_graphs_do_not_attend_to_each_other():
    torch.manual_seed(0)
    layer = PLEGPSLayer(8, None, heads=2, norm=None).eval()
    data = _batch()
    x = torch.randn(data.num_nodes, 8)
    out = layer(x, data.edge_index, batch=data.batch)
    x2 = x.clone()
    x2[data.batch == 2] += 1.0
    out2 = layer(x2, data.edge_index, batch=data.batch)
    torch.testing.assert_close(out2[data.batch < 2], out[data.batch < 2])
    assert not torch.allclose(out2[data.batch == 2], out[data.batch == 2])
    single = layer(x[data.batch == 0], data.edge_index[:, :0])  # batch=None: one graph
    torch.testing.assert_close(single, out[data.batch == 0], atol=1e-6, rtol=1e-5)


def test_layer_options_reset_repr_and_errors():
    layer = PLEGPSLayer(8, GINConv(nn.Linear(8, 8)), heads=4, degree_scaler=True, norm='layer_norm',
                        attn_dropout=0.1, step_size=0.5)
    assert layer.attn.heads == 4 and layer.attn.out_channels == 2 and layer.attn.dropout == 0.1
    assert layer.attn.degree_scaler and float(layer.attn.eta[0]) == 0.5
    data = _batch()
    out = layer(torch.randn(data.num_nodes, 8), data.edge_index, batch=data.batch)  # LayerNorm takes the batch
    assert out.shape == (data.num_nodes, 8)
    before = layer.mlp[0].weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.mlp[0].weight)
    assert 'PLEGPSLayer(8' in repr(layer) and 'LaplacianDiffusionConv' in repr(layer)
    own = LaplacianDiffusionConv(8, 8, heads=1, laplacian_heads=0)
    assert PLEGPSLayer(8, None, global_conv=own).attn is own
    with pytest.raises(ValueError, match="'heads'"):
        PLEGPSLayer(8, None, heads=3)
    with pytest.raises(ValueError, match="'channels'"):
        PLEGPSLayer(0, None)
    with pytest.raises(TypeError, match="'conv'"):
        PLEGPSLayer(8, 'gin')
    with pytest.raises(TypeError, match="'global_conv'"):
        PLEGPSLayer(8, None, global_conv=nn.Linear(8, 8))
    with pytest.raises(ValueError, match="'dropout'"):
        PLEGPSLayer(8, None, dropout=1.5)


@pytest.mark.parametrize('local', ['gat', 'laplacian'])
def test_any_message_passing_layer_as_the_local_part(local):
    """As in GPSConv the local part is any layer of ``channels`` in and out, e.g. GATConv or the Laplacian conv
    itself over the native edges; its keyword arguments pass through."""
    from torch_geometric.nn import GATConv
    torch.manual_seed(0)
    conv = (GATConv(8, 4, heads=2, edge_dim=3) if local == 'gat'
            else LaplacianDiffusionConv(8, 4, heads=2, edge_dim=3))
    layer = PLEGPSLayer(8, conv, heads=2).eval()
    data = _batch(edge_dim=3)
    x = torch.randn(data.num_nodes, 8)
    out = layer(x, data.edge_index, batch=data.batch, edge_attr=data.edge_attr)
    with torch.no_grad():
        h_local = layer.norm1(x + conv(x, data.edge_index, edge_attr=data.edge_attr))
        h_global = layer.norm2(x + layer.attn.forward_all_pairs(x, data.batch))
        mixed = h_local + h_global
        torch.testing.assert_close(out, layer.norm3(mixed + layer.mlp(mixed)))
