"""Node classification with the default Laplacian node transformer: ``build_node_model('ple', ...)`` trained full-batch
by ``pyg_ple.bench.node.train_node_classifier`` (the epoch selected on validation accuracy).

Cora (public split) is read from ``--root`` (a folder with ``Planetoid/Cora/raw``) when it is there; otherwise a
synthetic stochastic block model: ``--nodes`` nodes in 4 communities, features one noisy hint of the community::

    python examples/node_classification.py --root DATA      # Cora
    python examples/node_classification.py --epochs 5 --nodes 200     # synthetic, a few seconds
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.utils import stochastic_blockmodel_graph

from pyg_ple.bench.node import OPTIMIZER_DEFAULTS, build_node_model, load_planetoid, train_node_classifier
from pyg_ple.bench.training import TrainConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--root', default=None, help='data folder holding Planetoid/Cora/raw (else: synthetic graph)')
parser.add_argument('--nodes', type=int, default=400, help='synthetic graph: number of nodes')
parser.add_argument('--epochs', type=int, default=100)
parser.add_argument('--seed', type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
if args.root and (Path(args.root) / 'Planetoid' / 'Cora' / 'raw').is_dir():
    data, name = load_planetoid('Cora', args.root), 'Cora'
else:
    classes, size = 4, args.nodes // 4
    edge_index = stochastic_blockmodel_graph([size] * classes, torch.full((classes, classes), 0.01).fill_diagonal_(0.1))
    y = torch.arange(classes).repeat_interleave(size)
    x = torch.nn.functional.one_hot(y, classes).float() + torch.randn(y.numel(), classes) * 1.5
    split = torch.randperm(y.numel())
    masks = [torch.zeros(y.numel(), dtype=torch.bool) for _ in range(3)]
    for mask, part in zip(masks, split.chunk(3)):
        mask[part] = True
    data, name = Data(x=x, y=y, edge_index=edge_index, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2]), \
        'stochastic block model'

model = build_node_model('ple', data.num_features, int(data.y.max()) + 1)
run, _ = train_node_classifier(model, data, TrainConfig(epochs=args.epochs, **OPTIMIZER_DEFAULTS['ple'],
                                                        seed=args.seed, progress=False))
print(f'{name}: {data.num_nodes} nodes, {data.num_edges} edges; ple node model, epoch {run.best_epoch} of '
      f'{run.epochs_run} selected')
print(f'validation accuracy {run.val_acc:.3f}')
print(f'test accuracy {run.test_acc:.3f}')
