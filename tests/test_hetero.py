"""LaplacianDiffusionConv in heterogeneous models (``to_hetero``) and on NeighborLoader's bipartite layout."""
import pytest
import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.nn import to_hetero
from torch_geometric.utils import k_hop_subgraph

from pyg_ple import LaplacianDiffusionConv

EDGE_TYPES = [('author', 'writes', 'paper'), ('paper', 'written_by', 'author'), ('paper', 'cites', 'paper')]


def hetero_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data['paper'].x = torch.randn(6, 7, generator=g)
    data['author'].x = torch.randn(4, 3, generator=g)
    writes = torch.stack([torch.randint(0, 4, (10,), generator=g), torch.randint(0, 6, (10,), generator=g)])
    data['author', 'writes', 'paper'].edge_index = writes
    data['paper', 'written_by', 'author'].edge_index = writes.flip(0)
    data['paper', 'cites', 'paper'].edge_index = torch.randint(0, 6, (2, 12), generator=g)
    return data


class Net(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv1 = LaplacianDiffusionConv((-1, -1), 4, heads=2, add_self_loops=False, **kwargs)
        self.conv2 = LaplacianDiffusionConv((-1, -1), 3, heads=1, add_self_loops=False, **kwargs)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


@pytest.mark.parametrize('fused', [True, False])
def test_to_hetero_matches_the_layer_per_edge_type(fused):
    """``to_hetero`` copies the layer per edge type (lazy sizes, bipartite across node types) and sums per target
    type; the same sums by hand from the copies agree, and every copy gets gradients."""
    torch.manual_seed(0)
    data = hetero_data()
    model = to_hetero(Net(fused=fused), data.metadata(), aggr='sum')
    with torch.no_grad():  # lazy initialisation
        model(data.x_dict, data.edge_index_dict)
    out = model(data.x_dict, data.edge_index_dict)
    assert out['paper'].shape == (6, 3) and out['author'].shape == (4, 3)

    def layer(name, x_dict):
        result = {}
        for src, rel, dst in EDGE_TYPES:
            conv = getattr(model, name)[f'{src}__{rel}__{dst}']
            x = x_dict[src] if src == dst else (x_dict[src], x_dict[dst])
            h = conv(x, data[src, rel, dst].edge_index)
            result[dst] = h if dst not in result else result[dst] + h
        return result

    hidden = {key: value.relu() for key, value in layer('conv1', data.x_dict).items()}
    expected = layer('conv2', hidden)
    for key in out:
        torch.testing.assert_close(out[key], expected[key])
    # Across node types each copy has its own target projection for the Laplacian term, of the target's size.
    writes = model.conv1['author__writes__paper']
    assert writes.lin_root.weight.shape == (8, 7) and writes.lin_key.weight.shape == (8, 3)
    sum(o.square().sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_to_hetero_self_loops_within_a_node_type():
    """With self-loops (as GATConv adds them, i < min(N_src, N_dst)) the homogeneous edge type attends to itself."""
    data = hetero_data(seed=1)

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = LaplacianDiffusionConv(-1, 4, heads=2, laplacian_heads=1)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    metadata = (['paper'], [('paper', 'cites', 'paper')])
    model = to_hetero(One(), metadata)
    with torch.no_grad():
        cites = data['paper', 'cites', 'paper'].edge_index
        out = model({'paper': data['paper'].x}, {('paper', 'cites', 'paper'): cites})
        conv = model.conv['paper__cites__paper']
        torch.testing.assert_close(out['paper'], conv(data['paper'].x, cites))
    assert conv.add_self_loops and conv.lin_root is None  # one node set: the targets' values through lin_value


def neighbor_block(data: Data, seeds: torch.Tensor):
    """The layout of NeighborLoader with ``num_neighbors=[-1]``: the seeds first, then their in-neighbours, the
    edges into the seeds relabelled locally."""
    subset, _, _, _ = k_hop_subgraph(seeds, 1, data.edge_index, num_nodes=data.num_nodes, flow='source_to_target')
    others = subset[~torch.isin(subset, seeds)]
    n_id = torch.cat([seeds, others])
    local = torch.full((data.num_nodes,), -1, dtype=torch.long)
    local[n_id] = torch.arange(n_id.numel())
    ei = data.edge_index[:, torch.isin(data.edge_index[1], seeds)]
    return n_id, local[ei]


@pytest.mark.parametrize('fused', [True, False])
def test_neighbor_block_layout_gives_the_full_graph_rows(fused):
    g = torch.Generator().manual_seed(3)
    data = Data(x=torch.randn(30, 5, generator=g), edge_index=torch.randint(0, 30, (2, 90), generator=g))
    conv = LaplacianDiffusionConv(5, 4, heads=2, laplacian_heads=1, fused=fused)
    full = conv(data.x, data.edge_index)
    seeds = torch.tensor([4, 17, 0, 22])
    n_id, ei = neighbor_block(data, seeds)
    x = data.x[n_id]
    out = conv((x, x[:seeds.numel()]), ei)
    torch.testing.assert_close(out, full[seeds], atol=1e-6, rtol=1e-5)


def test_neighbor_loader_bipartite_blocks():
    from torch_geometric.typing import WITH_PYG_LIB, WITH_TORCH_SPARSE
    if not (WITH_PYG_LIB or WITH_TORCH_SPARSE):
        pytest.skip("NeighborLoader needs pyg-lib or torch-sparse")
    from torch_geometric.loader import NeighborLoader
    g = torch.Generator().manual_seed(3)
    data = Data(x=torch.randn(30, 5, generator=g), edge_index=torch.randint(0, 30, (2, 90), generator=g))
    conv = LaplacianDiffusionConv(5, 4, heads=2, laplacian_heads=1)
    full = conv(data.x, data.edge_index)
    for batch in NeighborLoader(data, num_neighbors=[-1], batch_size=7):
        size = batch.batch_size
        ei = batch.edge_index[:, batch.edge_index[1] < size]
        out = conv((batch.x, batch.x[:size]), ei)
        torch.testing.assert_close(out, full[batch.n_id[:size]], atol=1e-6, rtol=1e-5)
