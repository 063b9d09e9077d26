"""Graph classification with the default Laplacian transformer: ``build_model('laplacian', ...)`` trained by the shared
loop ``pyg_ple.bench.training.fit``, the epoch selected on a validation split, accuracy reported on a test split.

MUTAG is read from ``--root`` (a folder with ``TUDataset/MUTAG/raw``) when it is there; otherwise scikit-learn's digits
as graphs (offline)::

    python examples/graph_classification.py --root DATA      # MUTAG
    python examples/graph_classification.py --epochs 2 --graphs 100   # digits, a few seconds
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch_geometric.loader import DataLoader

from pyg_ple.bench.datasets import load_dataset
from pyg_ple.bench.models import build_model
from pyg_ple.bench.protocol import evaluate_loader
from pyg_ple.bench.training import TrainConfig, fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--root', default=None, help='data folder holding TUDataset/MUTAG/raw (else: digits)')
parser.add_argument('--graphs', type=int, default=300, help='digits: how many images')
parser.add_argument('--epochs', type=int, default=50)
parser.add_argument('--hidden', type=int, default=64)
parser.add_argument('--seed', type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
# Random-walk structural encodings (8 return probabilities per node) and, where the dataset has them, edge labels:
# the inputs of the default models of `pyg-ple bench`.
if args.root and (Path(args.root) / 'TUDataset' / 'MUTAG' / 'raw').is_dir():
    ds = load_dataset('MUTAG', root=args.root, pe='rw', pe_dim=8, edge_features=None)
else:
    ds = load_dataset('digits', digits_n=args.graphs, seed=args.seed, pe='rw', pe_dim=8)
# 80 / 10 / 10 stratified split
idx = np.arange(len(ds))
train, rest = train_test_split(idx, test_size=0.2, stratify=ds.labels, random_state=args.seed)
val, test = train_test_split(rest, test_size=0.5, stratify=ds.labels[rest], random_state=args.seed)
train_loader = DataLoader(ds.subset(train), batch_size=32, shuffle=True)
val_loader, test_loader = DataLoader(ds.subset(val), batch_size=256), DataLoader(ds.subset(test), batch_size=256)

model = build_model('laplacian', ds.num_features, ds.num_classes, hidden=args.hidden, pe_dim=8,
                    edge_dim=ds.num_edge_features)
result = fit(model, train_loader, TrainConfig(epochs=args.epochs, lr=3e-3, seed=args.seed, progress=False),
             loss_fn=lambda m, batch: F.cross_entropy(m(batch), batch.y),
             evaluate=lambda m: {'val_acc': evaluate_loader(m, val_loader)['acc']}, monitor='val_acc', mode='max')
model.load_state_dict(result.best_state)
print(f'{ds.name}: {len(ds)} graphs, {ds.num_classes} classes; laplacian model, epoch {result.best_epoch} of '
      f'{result.epochs_run} selected')
print(f'validation accuracy {result.best_metrics["val_acc"]:.3f}')
print(f'test accuracy {evaluate_loader(model, test_loader)["acc"]:.3f}')
