"""Train the Laplacian transformer on a TU data set, in one file and with the public API only.

Every attention head is a Laplacian head, ``eta (A - I) X W_v`` with ``A`` the softmax attention over the graph's
edges; the blocks are post-norm BatchNorm blocks with the degree scaler, the nodes carry 8 random-walk return
probabilities, and the readout concatenates mean and sum pooling (the defaults of ``pyg-ple bench``). One stratified
train / validation / test split; the epoch of best validation accuracy gives the test accuracy::

    python examples/tu_laplacian_transformer.py --dataset MUTAG --root DATA

``DATA`` (or ``$PYG_PLE_DATA``) holds ``TUDataset/<NAME>/raw`` or ``<NAME>/raw``; PyG downloads the data set there
when the folder is empty and the machine is online. The processed files go to ``--cache`` (default: a temporary
folder), so ``DATA`` may be read-only. For the full protocol (10 outer folds, every baseline) use ``pyg-ple bench``.
"""
import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_geometric.transforms as T
from torch_geometric.datasets import TUDataset
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_add_pool, global_mean_pool

from pyg_ple import PLETransformer

parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
parser.add_argument('--dataset', default='MUTAG')
parser.add_argument('--root', default=os.environ.get('PYG_PLE_DATA'), help='data folder (default: $PYG_PLE_DATA)')
parser.add_argument('--cache', default=None, help='writable folder for the processed data set')
parser.add_argument('--hidden', type=int, default=32)
parser.add_argument('--layers', type=int, default=3)
parser.add_argument('--heads', type=int, default=4)
parser.add_argument('--epochs', type=int, default=100)
parser.add_argument('--lr', type=float, default=3e-3)
parser.add_argument('--seed', type=int, default=0)
args = parser.parse_args()
if args.root is None:
    parser.error('give --root DATA or set PYG_PLE_DATA')
torch.manual_seed(args.seed)

# The raw files are linked into a writable folder, where PyG writes its processed files.
source = Path(args.root) / 'TUDataset' / args.dataset
if not source.is_dir():
    source = Path(args.root) / args.dataset
if args.cache is None:
    args.cache = tempfile.mkdtemp(prefix='pyg_ple_tu_')
    atexit.register(shutil.rmtree, args.cache, True)
work = Path(args.cache) / args.dataset
if (source / 'raw').is_dir() and not (work / 'raw').exists():
    work.mkdir(parents=True, exist_ok=True)
    (work / 'raw').symlink_to((source / 'raw').resolve(), target_is_directory=True)
# A constant feature for data sets without node labels (IMDB), and 8 random-walk return probabilities as PE.
pre_transform = T.Compose([T.Constant(), T.AddRandomWalkPE(walk_length=8, attr_name='pe')])
dataset = TUDataset(str(work.parent), args.dataset, pre_transform=pre_transform)

# A stratified split: 80 % train, 10 % validation, 10 % test.
labels = dataset.y
order = torch.randperm(len(dataset))
train_idx, val_idx, test_idx = [], [], []
for c in labels.unique():
    members = order[labels[order] == c]
    n_val = n_test = max(1, round(0.1 * len(members)))
    val_idx += members[:n_val].tolist()
    test_idx += members[n_val:n_val + n_test].tolist()
    train_idx += members[n_val + n_test:].tolist()
train_loader = DataLoader(dataset[train_idx], batch_size=32, shuffle=True)
val_loader = DataLoader(dataset[val_idx], batch_size=128)
test_loader = DataLoader(dataset[test_idx], batch_size=128)


class LaplacianTransformer(torch.nn.Module):
    def __init__(self, in_channels: int, pe_dim: int, hidden: int, num_classes: int, layers: int, heads: int):
        super().__init__()
        self.node_encoder = torch.nn.Linear(in_channels, hidden)
        self.pe_encoder = torch.nn.Sequential(torch.nn.BatchNorm1d(pe_dim), torch.nn.Linear(pe_dim, hidden))
        # laplacian_heads=None: every head is a Laplacian head.
        self.transformer = PLETransformer(hidden, heads=heads, num_layers=layers, laplacian_heads=None,
                                          mlp_ratio=2.0, dropout=0.1, norm='batch', prenorm=False,
                                          degree_scaler=True)
        self.head = torch.nn.Sequential(torch.nn.Linear(2 * hidden, hidden), torch.nn.ReLU(),
                                        torch.nn.Linear(hidden, num_classes))

    def forward(self, data):
        h = self.node_encoder(data.x.float()) + self.pe_encoder(data.pe)
        h = self.transformer(h, data.edge_index, batch=data.batch)
        return self.head(torch.cat([global_mean_pool(h, data.batch), global_add_pool(h, data.batch)], dim=1))


model = LaplacianTransformer(dataset.num_node_features, 8, args.hidden, dataset.num_classes, args.layers,
                             args.heads)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
print(f'{dataset.name}: {len(dataset)} graphs, {len(train_idx)} / {len(val_idx)} / {len(test_idx)} for '
      f'training / validation / test; {sum(p.numel() for p in model.parameters()):,} parameters')


def train() -> float:
    model.train()
    total = 0.0
    for data in train_loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), data.y)
        loss.backward()
        optimizer.step()
        total += loss.item() * data.num_graphs
    return total / len(train_loader.dataset)


@torch.no_grad()
def accuracy(loader) -> float:
    model.eval()
    correct = sum(int((model(data).argmax(dim=-1) == data.y).sum()) for data in loader)
    return correct / len(loader.dataset)


best_val = test_at_best = -1.0
for epoch in range(1, args.epochs + 1):
    loss = train()
    val_acc, test_acc = accuracy(val_loader), accuracy(test_loader)
    if val_acc > best_val:
        best_val, test_at_best = val_acc, test_acc
    print(f'Epoch: {epoch:03d}, Loss: {loss:.4f}, Val: {val_acc:.4f}, Test: {test_acc:.4f}')
print(f'Best validation accuracy {best_val:.4f}; test accuracy at that epoch {test_at_best:.4f}')
