"""Node classification: models, the pure-PyTorch neighbour sampler, Planetoid loading and a short Cora run."""
import os
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from pyg_ple.bench.node import (GAT, GCN, NodeTransformer, TorchNeighborSampler, build_node_model, load_planetoid,
                                neighbor_loader, train_node_classifier)
from pyg_ple.bench.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def tiny_graph(n=40, classes=3, seed=0):
    """Two-community-ish graph whose labels are predictable from features and neighbours."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float() * 2
    src = torch.randint(0, n, (4 * n,), generator=g)
    dst = (src + classes * torch.randint(1, 4, (4 * n,), generator=g)) % n  # mostly same class
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    masks = {k: torch.zeros(n, dtype=torch.bool) for k in ('train_mask', 'val_mask', 'test_mask')}
    masks['train_mask'][:20] = True
    masks['val_mask'][20:30] = True
    masks['test_mask'][30:] = True
    return Data(x=x, edge_index=ei, y=y, **masks)


@pytest.mark.parametrize('name', ['ple', 'gcn', 'gat'])
def test_models_shapes_and_gradients(name):
    data = tiny_graph()
    model = build_node_model(name, 6, 3)
    out = model(data.x, data.edge_index)
    assert out.shape == (40, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert isinstance(model, {'ple': NodeTransformer, 'gcn': GCN, 'gat': GAT}[name])
    with pytest.raises(ValueError, match='name'):
        build_node_model('mlp', 6, 3)


@pytest.mark.parametrize('mode', ['full', 'neighbor'])
@pytest.mark.slow
def test_train_tiny_graph(mode):
    data = tiny_graph()
    torch.manual_seed(0)
    model = NodeTransformer(6, 3, hidden=16, num_layers=1, heads=2, dropout=0.1, input_dropout=0.0)
    run, result = train_node_classifier(model, data, TrainConfig(epochs=15, lr=0.01, progress=False), mode=mode,
                                        num_neighbors=[5, 5], batch_size=8)
    assert result.epochs_run == 15 and 1 <= run.best_epoch <= 15
    assert result.history[-1]['train_loss'] < result.history[0]['train_loss']
    assert run.train_acc > 0.6 and 0.0 <= run.test_acc <= 1.0
    with pytest.raises(ValueError, match='mode'):
        train_node_classifier(model, data, TrainConfig(epochs=1, progress=False), mode='saint')


@pytest.mark.parametrize('num_layers', [1, 4])
@pytest.mark.slow
def test_neighbor_mode_samples_as_many_hops_as_the_model_has_layers(monkeypatch, num_layers):
    # A sampled subgraph shallower than the model trains its deeper blocks on a receptive field that full-graph
    # inference never has: by default the fan-out has one entry per message-passing layer.
    from pyg_ple.bench import node
    seen = []
    real = node.neighbor_loader

    def recording_loader(data, num_neighbors, *args, **kwargs):
        seen.append(list(num_neighbors))
        return real(data, num_neighbors, *args, **kwargs)

    monkeypatch.setattr(node, 'neighbor_loader', recording_loader)
    data = tiny_graph()
    config = TrainConfig(epochs=1, progress=False)
    deep = NodeTransformer(6, 3, hidden=8, num_layers=num_layers, heads=2)
    train_node_classifier(deep, data, config, mode='neighbor', batch_size=8)
    train_node_classifier(GCN(6, 3), data, config, mode='neighbor', batch_size=8)
    train_node_classifier(deep, data, config, mode='neighbor', num_neighbors=[3, 2], batch_size=8)
    assert seen == [[10] * num_layers, [10, 10], [3, 2]]
    assert node.default_num_neighbors(NodeTransformer(6, 3, num_layers=0)) == [10]
    assert node.default_num_neighbors(GCN(6, 3), fan_out=5) == [5, 5]


def _in_edges(edge_index):
    return {(int(j), int(i)) for j, i in edge_index.t()}


def test_torch_neighbor_sampler_respects_fanout():
    data = tiny_graph(n=60)
    edges = _in_edges(data.edge_index)
    torch.manual_seed(0)
    loader = neighbor_loader(data, [3, 2], batch_size=7, shuffle=True, force_torch_sampler=True)
    assert isinstance(loader.node_sampler, TorchNeighborSampler)
    seen = 0
    for batch in loader:
        n_id = batch.n_id
        assert n_id.unique().numel() == n_id.numel()  # nodes are unique
        assert torch.equal(batch.x, data.x[n_id]) and torch.equal(batch.y, data.y[n_id])
        ei = batch.edge_index
        for j, i in ei.t().tolist():  # every sampled edge is a real edge j -> i
            assert (int(n_id[j]), int(n_id[i])) in edges
        # hop 1: each seed gets min(3, in-degree) incoming edges
        deg = torch.bincount(data.edge_index[1], minlength=60)
        hop1 = ei[:, :batch.num_sampled_edges[0]]
        per_seed = torch.bincount(hop1[1], minlength=batch.batch_size)[:batch.batch_size]
        assert torch.equal(per_seed, deg[n_id[:batch.batch_size]].clamp(max=3))
        assert batch.num_sampled_nodes[0] == batch.batch_size
        seen += batch.batch_size
    assert seen == 60


def test_torch_neighbor_sampler_full_fanout_is_k_hop():
    data = tiny_graph(n=30)
    seeds = torch.tensor([3, 17])
    loader = neighbor_loader(data, [-1, -1], batch_size=2, input_nodes=seeds, force_torch_sampler=True)
    batch = next(iter(loader))
    assert batch.n_id[:2].tolist() == [3, 17]
    from torch_geometric.utils import k_hop_subgraph
    subset, _, _, _ = k_hop_subgraph(seeds, 2, data.edge_index, num_nodes=30, flow='source_to_target')
    assert set(batch.n_id.tolist()) == set(subset.tolist())


def test_load_planetoid_missing(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(FileNotFoundError, match='PYG_PLE_DATA'):
        load_planetoid('Cora', tmp_path / 'nothing')
    with pytest.raises(ValueError, match='name'):
        load_planetoid('Reddit', tmp_path)


def _planetoid_root():
    for root in (os.environ.get('PYG_PLE_DATA'), REPO.parent / 'shared' / 'data'):
        if root and (Path(root) / 'Planetoid' / 'Cora' / 'raw' / 'ind.cora.graph').exists():
            return Path(root)
    return None


@pytest.mark.skipif(_planetoid_root() is None, reason='Planetoid Cora raw files not found (set PYG_PLE_DATA)')
@pytest.mark.slow
def test_cora_short_run(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))  # processed/ goes here, never into the data folder
    root = _planetoid_root()
    data = load_planetoid('Cora', root)
    assert (data.num_nodes, data.num_edges, data.num_features) == (2708, 10556, 1433)
    assert (int(data.train_mask.sum()), int(data.val_mask.sum()), int(data.test_mask.sum())) == (140, 500, 1000)
    assert [p.is_symlink() for p in (tmp_path / 'cache' / 'Planetoid').glob('*/Cora/raw/ind.cora.x')] == [True]
    assert not (root / 'Planetoid' / 'Cora' / 'processed').exists()
    torch.manual_seed(0)
    run, _ = train_node_classifier(GCN(1433, 7), data, TrainConfig(epochs=20, lr=0.01, weight_decay=5e-4,
                                                                  progress=False))
    assert run.test_acc > 0.6, run  # GCN reaches ~0.8 after 100+ epochs; 20 epochs are well above chance (0.3)


def test_node_transformer_reads_node_model_config_and_is_its_stack():
    from pyg_ple.bench.node import NodeModelConfig
    data = tiny_graph()
    cfg = NodeModelConfig()
    model = build_node_model('ple', 6, 3).eval()
    assert model.config == cfg and len(model.transformer.blocks) == cfg.num_layers
    block = model.transformer.blocks[0]
    assert block.conv.learn_step_size and block.conv.dropout == cfg.attention_dropout
    assert block.mlp[0].out_features == int(cfg.mlp_ratio * cfg.hidden)
    h = torch.nn.functional.layer_norm(model.encoder[0](data.x), (cfg.hidden,))  # encoder_norm: LayerNorm'd stream
    for block in model.transformer.blocks:
        h = block(h, data.edge_index)
    torch.testing.assert_close(model(data.x, data.edge_index), model.head(model.transformer.norm(h)), atol=1e-6,
                               rtol=1e-5)
    assert len(build_node_model('ple', 6, 3, num_layers=0).transformer.blocks) == 0  # encoder + LayerNorm + head


@pytest.mark.parametrize('name', ['ple', 'gcn', 'gat'])
def test_node_model_misspelled_hyper_parameter(name):
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) 'dropuot'.*accepted: .*dropout"):
        build_node_model(name, 6, 3, dropuot=0.5)


def test_node_transformer_passes_the_block_options_through():
    import inspect

    from pyg_ple import PLETransformerBlock
    if 'degree_scaler' not in inspect.signature(PLETransformerBlock).parameters:
        pytest.skip('PLETransformerBlock has no norm/prenorm/degree_scaler yet')
    data = tiny_graph()
    model = build_node_model('ple', 6, 3, norm='rms', prenorm=False, degree_scaler=True, ple_init=True)
    for block in model.transformer.blocks:
        assert block.norm == 'rms' and block.prenorm is False and block.conv.degree_scaler and block.ple_init
    assert model(data.x, data.edge_index).shape == (data.num_nodes, 3)
    normed = build_node_model('ple', 6, 3, encoder_norm=True)
    h = normed.encoder(data.x)  # the residual stream starts on LayerNorm scale
    torch.testing.assert_close(h, torch.nn.functional.layer_norm(normed.encoder[0](data.x), (h.size(1),)))
    default = build_node_model('ple', 6, 3)
    block = default.transformer.blocks[0]
    assert (block.norm, block.prenorm, block.conv.degree_scaler, block.ple_init) == ('layer', True, False, True)
    assert (default.transformer.num_layers, block.heads, default.input_dropout, block.dropout.p) == (4, 8, 0.8, 0.6)
    assert isinstance(default.encoder[1], torch.nn.LayerNorm)  # the chosen recipe (benchmarks/node_recipe.py)
