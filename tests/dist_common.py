"""Shared pieces of tests/test_distributed.py and its torchrun worker (tests/dist_worker.py): data, model, reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_mean_pool

from pyg_ple import PLETransformerBlock

NUM_GRAPHS, BATCH, WORLD, EPOCHS, LR, SEED = 24, 3, 2, 3, 0.05, 0


def make_optimizer(model):
    # SGD, not Adam: the key bias has an exactly-zero expected gradient (softmax is shift invariant), and Adam divides
    # its float32 rounding noise (~1e-9) by its own magnitude, which turns a 1e-9 difference into a ~lr-sized step.
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def make_dataset() -> list[Data]:
    g = torch.Generator().manual_seed(1)
    graphs = []
    for i in range(NUM_GRAPHS):
        n = int(torch.randint(3, 8, (1,), generator=g))
        e = torch.randint(0, n, (2, 2 * n), generator=g)
        x = torch.randn(n, 4, generator=g)
        graphs.append(Data(x=x, edge_index=e, y=torch.tensor([i % 3])))
    return graphs


class GraphNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 8)
        self.block = PLETransformerBlock(8, 2, laplacian_heads=1, mlp_ratio=2.0)
        self.head = nn.Linear(8, 3)

    def forward(self, batch) -> torch.Tensor:
        h = self.block(self.enc(batch.x), batch.edge_index)
        return self.head(global_mean_pool(h, batch.batch, size=batch.num_graphs))


def make_model() -> GraphNet:
    torch.manual_seed(SEED)
    return GraphNet()


def loss_fn(model, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch), batch.y)


@torch.no_grad()
def eval_metrics(model, graphs) -> dict[str, float]:
    """Mean cross-entropy and accuracy over ``graphs`` (every rank evaluates all of them)."""
    batch = Batch.from_data_list(graphs)
    out = model(batch)
    return {'val_loss': float(F.cross_entropy(out, batch.y)),
            'val_acc': float((out.argmax(-1) == batch.y).float().mean())}


def reference_run():
    """Single process over the same global batches: at step k of epoch e, the union of every rank's k-th batch from
    ``DistributedSampler(seed=SEED)`` with ``set_epoch(e)``. Returns (model, per-epoch train losses, final metrics)."""
    from torch.utils.data import DistributedSampler
    data = make_dataset()
    model = make_model()
    opt = make_optimizer(model)
    losses = []
    for epoch in range(EPOCHS):
        shards = []
        for rank in range(WORLD):
            s = DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=True, seed=SEED)
            s.set_epoch(epoch)
            idx = list(s)
            shards.append([idx[i:i + BATCH] for i in range(0, len(idx), BATCH)])
        step_losses = []
        for k in range(len(shards[0])):
            glob = Batch.from_data_list([data[i] for shard in shards for i in shard[k]])
            opt.zero_grad()
            loss = loss_fn(model, glob)
            loss.backward()
            opt.step()
            step_losses.append(float(loss.detach()))
        losses.append(sum(step_losses) / len(step_losses))
    model.eval()
    return model, losses, eval_metrics(model, data)
