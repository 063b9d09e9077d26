r"""Node classification on native graphs: Planetoid loading, models, neighbour sampling, and training through ``fit``.

* :func:`load_planetoid`: Planetoid ``Cora`` / ``CiteSeer`` / ``PubMed`` (standard public split) from ``root`` (else
  ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``); ``<root>/Planetoid/<Name>/raw`` and ``<root>/<Name>/raw`` are both
  accepted. PyG writes ``processed/`` next to ``raw/``, so the raw files are symlinked into a writable cache
  (:func:`pyg_ple.bench.io.cache_root`) and processed there, in a folder named by their digest
  (``<cache>/Planetoid/<digest>/<Name>``): the data folder (which may be shared and read-only) is never written to,
  and other files of one name are never mixed up.
* :class:`NodeTransformer`: a :class:`~pyg_ple.nn.PLETransformer` over the native edges, its hyper-parameters the
  fields of :class:`NodeModelConfig`; :class:`GCN` and :class:`GAT` are the baselines of Kipf & Welling (2017) and
  Velickovic et al. (2018) with their published settings.
* :func:`neighbor_loader`: PyG's ``NeighborLoader``. Without ``pyg-lib`` or ``torch-sparse`` (neither has wheels for
  every torch version) it is given :class:`TorchNeighborSampler`, a pure-PyTorch neighbour sampler with the same
  output, so mini-batching works on a plain ``pip install``.
* :func:`train_node_classifier`: one run (full-batch or mini-batched) through :func:`pyg_ple.bench.training.fit`, model
  selection on validation accuracy, and the test accuracy of the selected state.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_ple.bench.io import cache_root, data_root, dataset_lock, file_digest, link_raw_files
from pyg_ple.bench.models import BLOCK_DEFAULTS, check_config, check_hparams, config_from_hparams
from pyg_ple.bench.training import TrainConfig, TrainResult, fit
from pyg_ple.nn.block import PLETransformer

__all__ = [
    'PLANETOID', 'PUBLISHED', 'load_planetoid', 'NodeModelConfig', 'NodeTransformer', 'GCN', 'GAT',
    'build_node_model', 'NODE_MODELS', 'OPTIMIZER_DEFAULTS', 'TorchNeighborSampler', 'neighbor_loader',
    'NodeRunResult', 'default_num_neighbors', 'train_node_classifier', 'accuracy',
]

PLANETOID = ('Cora', 'CiteSeer', 'PubMed')
# Published test accuracies (%) on the public split: GCN (Kipf & Welling, 2017), GAT (Velickovic et al., 2018).
PUBLISHED = {'Cora': {'gcn': 81.5, 'gat': 83.0}, 'CiteSeer': {'gcn': 70.3, 'gat': 72.5},
             'PubMed': {'gcn': 79.0, 'gat': 79.0}}


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------
def _raw_files(name: str) -> list[str]:
    low = name.lower()
    return [f'ind.{low}.{s}' for s in ('x', 'tx', 'allx', 'y', 'ty', 'ally', 'graph', 'test.index')]


def _find_raw(name: str, root: Path) -> Optional[Path]:
    for folder in (root / 'Planetoid' / name / 'raw', root / name / 'raw', root / 'raw'):
        if all((folder / f).exists() for f in _raw_files(name)):
            return folder
    return None


def load_planetoid(name: str, root: Optional[str | os.PathLike] = None, normalize_features: bool = True):
    """The Planetoid graph ``name`` (a PyG ``Data`` with ``train_mask``/``val_mask``/``test_mask`` of the public split).

    Raises ``FileNotFoundError`` (with what to do) when the raw files are not under the root; nothing is downloaded
    into a read-only data folder."""
    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures
    match = {n.lower(): n for n in PLANETOID}
    if name.lower() not in match:
        raise ValueError(f"'name' must be one of {PLANETOID} (got {name!r})")
    name = match[name.lower()]
    base = data_root(root)
    raw = _find_raw(name, base)
    if raw is None:
        raise FileNotFoundError(
            f'Planetoid {name} raw files ({", ".join(_raw_files(name))}) not found under {base}/Planetoid/{name}/raw '
            f'or {base}/{name}/raw; pass --root (or set PYG_PLE_DATA) to the folder that holds Planetoid/')
    # In a folder named by the files' digest: PyG keys processed/ by the name alone.
    files = [raw / f for f in _raw_files(name)]
    cache = cache_root() / 'Planetoid' / file_digest(files)
    if raw.resolve() != (cache / name / 'raw').resolve():
        link_raw_files(files, cache / name / 'raw')
    transform = NormalizeFeatures() if normalize_features else None
    with dataset_lock('Planetoid', name):
        return Planetoid(str(cache), name, split='public', transform=transform)[0]


# --------------------------------------------------------------------------------------------------------------------
# Models: all take (x, edge_index) and return logits [N, classes]
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class NodeModelConfig:
    """Hyper-parameters of :class:`NodeTransformer` (``build_node_model('ple', ...)``), with their defaults.

    ``hidden`` (width), ``num_layers`` (0: encoder, LayerNorm and head only), ``heads``, ``laplacian_heads`` (the
    last ones; ``None``: all), ``dropout`` (blocks and before the head), ``input_dropout`` (on the raw features),
    ``attention_dropout``, ``mlp_ratio``, ``step_size``, ``learn_step_size``, ``ple_init``, ``norm``, ``prenorm``,
    ``degree_scaler`` (see :class:`~pyg_ple.PLETransformerBlock`), ``share_weights`` (see
    :class:`~pyg_ple.nn.PLETransformer`), ``encoder_norm`` (a LayerNorm after the encoder, so the residual stream
    starts on LayerNorm scale).
    """

    # The depth, heads, dropouts, PLE initialisation and encoder LayerNorm were chosen on Cora's validation split,
    # one change at a time (benchmarks/results/node_recipe.md): Laplacian heads smooth the stream only when
    # the block starts as the diffusion step on a LayerNorm'd stream, and several diffusion steps beat one or two.
    hidden: int = 64
    num_layers: int = 4
    heads: int = 8
    laplacian_heads: Optional[int] = None
    dropout: float = 0.6
    input_dropout: float = 0.8
    # Planetoid's 140 training nodes overfit without attention dropout (the block's default is none).
    attention_dropout: float = 0.1
    # Narrower than the block's default MLP (4.0): every node-classification result in benchmarks/results used 2.0.
    mlp_ratio: float = 2.0
    step_size: float = BLOCK_DEFAULTS['step_size']
    # The node results learn one step size per head (the block's default is a fixed step).
    learn_step_size: bool = True
    ple_init: bool = True
    norm: str = BLOCK_DEFAULTS['norm']
    prenorm: bool = BLOCK_DEFAULTS['prenorm']
    degree_scaler: Union[bool, str] = BLOCK_DEFAULTS['degree_scaler']
    share_weights: bool = False
    encoder_norm: bool = True

    def __post_init__(self) -> None:
        check_config(self, positive=('hidden', 'heads', 'mlp_ratio'),
                     probabilities=('dropout', 'input_dropout', 'attention_dropout'))
        if self.num_layers < 0:
            raise ValueError(f"'num_layers' must be non-negative (got {self.num_layers!r})")
        if self.hidden % self.heads:
            raise ValueError(f"'hidden' ({self.hidden}) must be a multiple of 'heads' ({self.heads})")


class NodeTransformer(nn.Module):
    r"""Node classifier: input dropout, linear encoder, a :class:`~pyg_ple.nn.PLETransformer` over the native edges
    (attention restricted to each node's neighbours and itself; blocks and final LayerNorm), dropout and a linear head.

    Hyper-parameters: ``config`` (default :class:`NodeModelConfig`) with the fields in ``hparams`` replaced."""

    def __init__(self, in_channels: int, num_classes: int, config: Optional[NodeModelConfig] = None, **hparams: Any):
        super().__init__()
        config = config_from_hparams(NodeModelConfig, hparams, config)
        self.config = config
        self.input_dropout = config.input_dropout
        self.encoder = nn.Linear(in_channels, config.hidden)
        if config.encoder_norm:
            self.encoder = nn.Sequential(self.encoder, nn.LayerNorm(config.hidden))
        self.transformer = PLETransformer(
            config.hidden, config.heads, config.num_layers, laplacian_heads=config.laplacian_heads,
            mlp_ratio=config.mlp_ratio, dropout=config.dropout, attention_dropout=config.attention_dropout,
            step_size=config.step_size, learn_step_size=config.learn_step_size, ple_init=config.ple_init,
            norm=config.norm, prenorm=config.prenorm, degree_scaler=config.degree_scaler,
            share_weights=config.share_weights)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, num_classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.encoder(F.dropout(x, self.input_dropout, self.training))
        return self.head(self.dropout(self.transformer(h, edge_index)))


class GCN(nn.Module):
    """Two-layer GCN (Kipf & Welling, 2017): 16 hidden units, dropout 0.5."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 16, dropout: float = 0.5):
        super().__init__()
        from torch_geometric.nn import GCNConv
        self.dropout = dropout
        self.conv1 = GCNConv(in_channels, hidden)
        self.conv2 = GCNConv(hidden, num_classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class GAT(nn.Module):
    """Two-layer GAT (Velickovic et al., 2018): 8 heads x 8 hidden, ELU, dropout 0.6 on inputs and attention."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 8, heads: int = 8, out_heads: int = 1,
                 dropout: float = 0.6):
        super().__init__()
        from torch_geometric.nn import GATConv
        self.dropout = dropout
        self.conv1 = GATConv(in_channels, hidden, heads=heads, dropout=dropout)
        self.conv2 = GATConv(hidden * heads, num_classes, heads=out_heads, concat=False, dropout=dropout)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


NODE_MODELS = {'ple': NodeTransformer, 'gcn': GCN, 'gat': GAT}
# Optimiser settings per model (lr, weight decay): the published ones for GCN and GAT; for the PLE node model the
# weight decay chosen with its other defaults on Cora's validation split (benchmarks/results/node_recipe.md).
OPTIMIZER_DEFAULTS = {'ple': {'lr': 0.005, 'weight_decay': 2e-2}, 'gcn': {'lr': 0.01, 'weight_decay': 5e-4},
                      'gat': {'lr': 0.005, 'weight_decay': 5e-4}}


def build_node_model(name: str, in_channels: int, num_classes: int, **hparams: Any) -> nn.Module:
    """``'ple'`` (:class:`NodeTransformer`, ``hparams`` from :class:`NodeModelConfig`), ``'gcn'`` or ``'gat'``
    (``hparams`` their constructor arguments); an unknown hyper-parameter raises a ``ValueError`` listing the
    accepted ones."""
    if name not in NODE_MODELS:
        raise ValueError(f"'name' must be one of {sorted(NODE_MODELS)} (got {name!r})")
    if name != 'ple':  # NodeTransformer checks its own against NodeModelConfig
        accepted = [p for p in inspect.signature(NODE_MODELS[name]).parameters if p not in ('in_channels',
                                                                                            'num_classes')]
        check_hparams(hparams, accepted, NODE_MODELS[name].__name__)
    return NODE_MODELS[name](in_channels, num_classes, **hparams)


# --------------------------------------------------------------------------------------------------------------------
# Neighbour sampling without pyg-lib / torch-sparse
# --------------------------------------------------------------------------------------------------------------------
def _sampler_base():
    from torch_geometric.sampler import NeighborSampler
    return NeighborSampler


class TorchNeighborSampler(_sampler_base()):
    r"""``torch_geometric.sampler.NeighborSampler`` whose homogeneous, directional sampling is written in PyTorch.

    Same output as the ``pyg-lib`` / ``torch-sparse`` kernels (``SamplerOutput`` with global node ids, local
    ``row``/``col``, CSC edge positions and per-hop counts): hop ``l`` takes, for every node reached at hop ``l - 1``,
    ``num_neighbors[l]`` of its incoming edges uniformly without replacement (all of them when there are fewer, or when
    the fan-out is ``-1``). Randomness comes from torch's global generator, so ``fit``'s RNG checkpointing covers it.
    Heterogeneous graphs, ``disjoint``, temporal and ``'induced'``/``'bidirectional'`` subgraphs are not supported.
    """

    def __init__(self, data, num_neighbors, **kwargs):
        super().__init__(data, num_neighbors, **kwargs)
        if not isinstance(getattr(self, 'colptr', None), Tensor):
            raise ValueError('TorchNeighborSampler supports homogeneous Data graphs only')
        if self.disjoint or self.subgraph_type.value != 'directional' or self.replace:
            raise ValueError("TorchNeighborSampler supports subgraph_type='directional', disjoint=False, "
                             'replace=False only')
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    def _sample(self, seed, seed_time=None, **kwargs):
        from torch_geometric.sampler import SamplerOutput
        if isinstance(seed, dict) or seed_time is not None:
            raise ValueError('TorchNeighborSampler supports homogeneous, non-temporal sampling only')
        colptr, rowidx, local = self.colptr.long(), self.row.long(), self._local
        # keep the seeds in input order (they come first, as in pyg-lib), dropping repeats
        seed = seed.long()
        first = torch.full((self.num_nodes,), seed.numel(), dtype=torch.long)
        first.scatter_reduce_(0, seed, torch.arange(seed.numel()), 'amin')
        seeds = seed[first[seed] == torch.arange(seed.numel())]
        nodes = [seeds]
        local[seeds] = torch.arange(seeds.numel())
        count = seeds.numel()
        rows, cols, edges = [], [], []
        num_nodes_hop, num_edges_hop = [seeds.numel()], []
        frontier = seeds
        try:
            for k in self.num_neighbors.get_mapped_values():
                start, deg = colptr[frontier], colptr[frontier + 1] - colptr[frontier]
                total = int(deg.sum())
                if total == 0 or k == 0:
                    num_nodes_hop.append(0)
                    num_edges_hop.append(0)
                    frontier = frontier[:0]
                    continue
                seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
                offs = torch.cumsum(deg, 0) - deg
                pos = start[seg] + torch.arange(total) - offs[seg]  # CSC positions of all incoming edges
                if k >= 0 and bool((deg > k).any()):
                    order = torch.argsort(torch.rand(total))
                    order = order[torch.argsort(seg[order], stable=True)]  # random order within each segment
                    rank = torch.arange(total) - offs[seg[order]]
                    pos = pos[order[rank < k]]
                    seg = seg[order[rank < k]]
                src = rowidx[pos]
                new = torch.unique(src[local[src] < 0])
                local[new] = torch.arange(count, count + new.numel())
                count += new.numel()
                nodes.append(new)
                rows.append(local[src])
                cols.append(local[frontier[seg]])
                edges.append(pos)
                num_nodes_hop.append(new.numel())
                num_edges_hop.append(pos.numel())
                frontier = new
            node = torch.cat(nodes)
        finally:
            local[torch.cat(nodes)] = -1  # reset only what was touched
        empty = torch.empty(0, dtype=torch.long)
        return SamplerOutput(node=node, row=torch.cat(rows) if rows else empty, col=torch.cat(cols) if cols else empty,
                             edge=torch.cat(edges) if edges else empty, batch=None,
                             num_sampled_nodes=num_nodes_hop, num_sampled_edges=num_edges_hop)


def neighbor_loader(data, num_neighbors: Sequence[int], batch_size: int, input_nodes: Optional[Tensor] = None,
                    shuffle: bool = False, force_torch_sampler: bool = False, **kwargs):
    """``torch_geometric.loader.NeighborLoader``; with :class:`TorchNeighborSampler` when neither ``pyg-lib`` nor
    ``torch-sparse`` is installed (or ``force_torch_sampler``). Each batch's first ``batch_size`` nodes are the seeds."""
    import warnings

    import torch_geometric.typing as pyg_typing
    from torch_geometric.loader import NeighborLoader
    sampler = None
    if force_torch_sampler or not (pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE):
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=".*without a 'pyg-lib' installation.*")
            sampler = TorchNeighborSampler(data, list(num_neighbors))
    return NeighborLoader(data, num_neighbors=list(num_neighbors), input_nodes=input_nodes, batch_size=batch_size,
                          shuffle=shuffle, neighbor_sampler=sampler, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------
def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean()) if y.numel() else float('nan')


@dataclass
class NodeRunResult:
    """One training run: accuracies (fractions) of the selected state, epochs, timing."""

    test_acc: float
    val_acc: float
    train_acc: float
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    history: list = field(default_factory=list)


def default_num_neighbors(model: nn.Module, fan_out: int = 10) -> list[int]:
    """``fan_out`` neighbours per hop, one hop for each ``MessagePassing`` layer of ``model`` (at least one): a
    sampled subgraph as deep as the model's receptive field, so that training sees what full-graph inference sees.
    A four-block :class:`NodeTransformer` gets ``[10, 10, 10, 10]``, the two-layer :class:`GCN` ``[10, 10]``."""
    from torch_geometric.nn import MessagePassing
    return [fan_out] * max(1, sum(isinstance(m, MessagePassing) for m in model.modules()))


def train_node_classifier(model: nn.Module, data, config: TrainConfig, mode: str = 'full',
                          num_neighbors: Optional[Sequence[int]] = None, batch_size: int = 64,
                          monitor: str = 'val_acc') -> tuple[NodeRunResult, TrainResult]:
    """Train ``model`` on ``data.train_mask`` with :func:`~pyg_ple.bench.training.fit`, select the epoch with the best
    validation accuracy (``monitor='val_loss'`` to select on loss), and return the accuracies of that state.

    ``mode='full'`` is full-batch (one step per epoch over the whole graph); ``mode='neighbor'`` takes steps over
    ``NeighborLoader`` mini-batches of ``batch_size`` training seeds with fan-outs ``num_neighbors`` (default
    :func:`default_num_neighbors`: 10 per message-passing layer), the loss on the seeds only. Evaluation is
    full-batch in both modes (exact, and cheap for Planetoid)."""
    if mode not in ('full', 'neighbor'):
        raise ValueError(f"'mode' must be 'full' or 'neighbor' (got {mode!r})")
    if num_neighbors is None:
        num_neighbors = default_num_neighbors(model)
    device = torch.device(config.device)
    full = data.to(device)

    if mode == 'full':
        train_data: Any = [full]

        def loss_fn(m, batch):
            out = m(batch.x, batch.edge_index)
            return F.cross_entropy(out[batch.train_mask], batch.y[batch.train_mask])
    else:
        train_data = neighbor_loader(data.cpu(), num_neighbors, batch_size=batch_size, input_nodes=data.train_mask.cpu(),
                                     shuffle=True)

        def loss_fn(m, batch):
            out = m(batch.x, batch.edge_index)[:batch.batch_size]
            return F.cross_entropy(out, batch.y[:batch.batch_size])

    def evaluate(m) -> dict[str, float]:
        out = m(full.x, full.edge_index)
        metrics = {}
        for split in ('train', 'val', 'test'):
            mask = getattr(full, f'{split}_mask')
            metrics[f'{split}_acc'] = accuracy(out[mask], full.y[mask])
        metrics['val_loss'] = float(F.cross_entropy(out[full.val_mask], full.y[full.val_mask]))
        return metrics

    mode_ = 'max' if monitor.endswith('acc') else 'min'
    result = fit(model, train_data, config, loss_fn, evaluate=evaluate, monitor=monitor, mode=mode_)
    best = result.best_metrics
    run = NodeRunResult(test_acc=best.get('test_acc', float('nan')), val_acc=best.get('val_acc', float('nan')),
                        train_acc=best.get('train_acc', float('nan')), best_epoch=result.best_epoch,
                        epochs_run=result.epochs_run, seconds_per_epoch=result.seconds_per_epoch,
                        history=result.history)
    return run, result
