"""Graph classifiers: Laplacian-attention transformers and the PyG baselines they are compared with.

All models share the node encoder (a linear map of the node features, one-hot labels or continuous attributes, with
an optional ``BatchNorm1d`` on the raw features first (``input_norm``: continuous attributes such as ENZYMES' come on
scales from 1 to several hundred; the statistics are learned from training batches only), plus an optional linear
map of a positional encoding ``data.pe`` from PyG's ``AddLaplacianEigenvectorPE`` / ``AddRandomWalkPE``, see
:func:`pyg_ple.bench.datasets.add_positional_encoding`), the global pooling and the MLP head; they differ only in the stack
of layers between them. ``model(data)`` takes a PyG ``Batch`` and returns logits
``[num_graphs, num_classes]``.

Build any of them by name with :func:`build_model`:

======================  ===============================================================================================
name                    layers
======================  ===============================================================================================
``gcn``                 ``GCNConv`` + BatchNorm + ReLU, residual
``gat``                 ``GATConv`` (``heads`` heads, concatenated) + BatchNorm + ELU, residual
``gin``                 ``GINConv`` with a 2-layer MLP, learned epsilon, + BatchNorm + ReLU, residual
``gps``                 ``GPSConv`` (GINConv local + multi-head global attention)
``transformer``         ``PLETransformerBlock`` with standard softmax attention (``laplacian_heads=0``)
``laplacian``           ``PLETransformerBlock`` with all heads Laplacian (``I - A``)
``mixed``               ``PLETransformerBlock`` with the last ``heads // 2`` heads Laplacian
``*-tokens``            the same three blocks on the nodes as a token sequence (positions ``data.pixel`` if present,
                        else the node order; learned position embedding; all tokens attend to all, no edges): ``transformer-tokens``, ``laplacian-tokens``,
                        ``mixed-tokens``. Not permutation invariant by design (pixels in raster order).
======================  ===============================================================================================

The transformer blocks attend over ``attention='native'`` (the graph's edges), ``'full'`` (all node pairs within each
graph, through the dense path: ``to_dense_batch`` + scaled dot-product attention with a padding mask) or ``'both'``
(all pairs, with a learned edge embedding that marks which pairs are native edges).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, GPSConv, global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import to_dense_batch

from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.block import PLETransformerBlock, ple_init_
from pyg_ple.edges import native_plus_full_edge_index

__all__ = ['GraphClassifier', 'GNNClassifier', 'TransformerClassifier', 'TokenClassifier', 'build_model',
           'MODEL_NAMES', 'DEFAULT_HPARAMS', 'count_parameters', 'is_permutation_invariant']

POOLS: dict[str, Callable] = {'mean': global_mean_pool, 'add': global_add_pool, 'sum': global_add_pool,
                              'max': global_max_pool}

DEFAULT_HPARAMS: dict[str, Any] = dict(hidden=64, num_layers=3, heads=4, dropout=0.1, pool='mean', pe_dim=0,
                                       attention='native', mlp_ratio=2.0, step_size=1.0, learn_step_size=False,
                                       input_norm=False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class GraphClassifier(nn.Module):
    """Encoder -> layers (subclass) -> pooling -> MLP head."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, dropout: float = 0.1,
                 pool: str = 'mean', pe_dim: int = 0, input_norm: bool = False):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {sorted(POOLS)}, got {pool!r}')
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, hidden
        self.pool_name, self.pe_dim = pool, pe_dim
        self.input_norm = nn.BatchNorm1d(in_channels) if input_norm else None
        self.encoder = nn.Linear(in_channels, hidden)
        self.pe_encoder = nn.Linear(pe_dim, hidden) if pe_dim else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def encode(self, data: Any) -> Tensor:
        x = data.x.float()
        h = self.encoder(x if self.input_norm is None else self.input_norm(x))
        if self.pe_encoder is not None:
            pe = getattr(data, 'pe', None)
            if pe is None:
                raise ValueError(f'{type(self).__name__} was built with pe_dim={self.pe_dim} but the data has no '
                                 "'pe' attribute: add one with pyg_ple.bench.datasets.add_positional_encoding")
            h = h + self.pe_encoder(pe.float())
        return h

    def layers_forward(self, h: Tensor, data: Any, batch: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def readout(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return POOLS[self.pool_name](h, batch, size=num_graphs)

    def forward(self, data: Any) -> Tensor:
        batch = data.batch if getattr(data, 'batch', None) is not None else \
            torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
        num_graphs = int(getattr(data, 'num_graphs', 1) or 1)
        h = self.layers_forward(self.encode(data), data, batch)
        return self.head(self.readout(h, batch, num_graphs))


class GNNClassifier(GraphClassifier):
    """Baseline message-passing stack from PyG's own layers (``kind`` in gcn, gat, gin, gps)."""

    def __init__(self, kind: str, in_channels: int, num_classes: int, hidden: int = 64, num_layers: int = 3,
                 heads: int = 4, dropout: float = 0.1, pool: str = 'mean', pe_dim: int = 0,
                 input_norm: bool = False, **_: Any):
        super().__init__(in_channels, num_classes, hidden, dropout, pool, pe_dim, input_norm)
        self.kind = kind
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _i in range(num_layers):
            if kind == 'gcn':
                conv = GCNConv(hidden, hidden)
            elif kind == 'gat':
                if hidden % heads:
                    raise ValueError(f'hidden ({hidden}) must be a multiple of heads ({heads})')
                conv = GATConv(hidden, hidden // heads, heads=heads, dropout=dropout)
            elif kind == 'gin':
                conv = GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                             nn.Linear(hidden, hidden)), train_eps=True)
            elif kind == 'gps':
                local = GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)))
                conv = GPSConv(hidden, local, heads=heads, dropout=dropout)
            else:
                raise ValueError(f'unknown GNN kind {kind!r}')
            self.convs.append(conv)
            self.norms.append(nn.Identity() if kind == 'gps' else nn.BatchNorm1d(hidden))
        self.act = nn.ELU() if kind == 'gat' else nn.ReLU()

    def layers_forward(self, h: Tensor, data: Any, batch: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            if self.kind == 'gps':
                h = conv(h, data.edge_index, batch=batch)
            else:
                h = h + self.dropout(self.act(norm(conv(h, data.edge_index))))
        return h


class TransformerClassifier(GraphClassifier):
    """A stack of :class:`~pyg_ple.PLETransformerBlock` over native edges, all pairs, or both."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, num_layers: int = 3, heads: int = 4,
                 laplacian_heads: int | None = None, dropout: float = 0.1, pool: str = 'mean', pe_dim: int = 0,
                 attention: str = 'native', mlp_ratio: float = 2.0, step_size: float = 1.0,
                 learn_step_size: bool = False, attention_dropout: float = 0.0, ple_init: bool = False,
                 encoder_norm: bool = False, input_norm: bool = False, **_: Any):
        super().__init__(in_channels, num_classes, hidden, dropout, pool, pe_dim, input_norm)
        if attention not in ('native', 'full', 'both'):
            raise ValueError(f"attention must be 'native', 'full' or 'both', got {attention!r}")
        self.attention = attention
        self.edge_dim = 2 if attention == 'both' else None
        self.blocks = nn.ModuleList([
            PLETransformerBlock(hidden, heads, laplacian_heads=laplacian_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                attention_dropout=attention_dropout, step_size=step_size,
                                learn_step_size=learn_step_size, edge_dim=self.edge_dim)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden)
        # The diffusion reading of a Laplacian block needs W_v W_o ~ I and a residual stream on LayerNorm scale
        # (benchmarks/results/laplacian_ablation.md): ``ple_init`` and ``encoder_norm`` give it both.
        if encoder_norm:
            self.encoder = nn.Sequential(self.encoder, nn.LayerNorm(hidden))
        if ple_init:
            for block in self.blocks:
                ple_init_(block)

    def _edges(self, data: Any, batch: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if self.attention == 'native':
            return data.edge_index, None
        if self.attention == 'full':
            return None, None
        edge_index, is_native = native_plus_full_edge_index(data.edge_index, batch, batch.numel())
        return edge_index, F.one_hot(is_native.long(), 2).float()

    def layers_forward(self, h: Tensor, data: Any, batch: Tensor) -> Tensor:
        edge_index, edge_attr = self._edges(data, batch)
        for block in self.blocks:
            h = block(h, edge_index, batch=batch, edge_attr=edge_attr)
        return self.norm(h)

    @torch.no_grad()
    def attention_graph(self, data: Any, layer: int = 0) -> AttentionGraph:
        """The attention graph of block ``layer`` for ``data`` (a ``Data`` or ``Batch``), all heads."""
        if not -len(self.blocks) <= layer < len(self.blocks):
            raise IndexError(f'layer {layer} out of range: the model has {len(self.blocks)} blocks')
        layer = layer % len(self.blocks)
        batch = data.batch if getattr(data, 'batch', None) is not None else \
            torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
        edge_index, edge_attr = self._edges(data, batch)
        h = self.encode(data)
        for block in self.blocks[:layer]:
            h = block(h, edge_index, batch=batch, edge_attr=edge_attr)
        return self.blocks[layer].attention_graph(h, edge_index, batch=batch, edge_attr=edge_attr)


class TokenClassifier(GraphClassifier):
    """The nodes of each graph as a token sequence (their order in the graph) with a learned position embedding,
    through the sequence path of :class:`~pyg_ple.PLETransformerBlock` (``[B, T, F]`` with a padding mask)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, num_layers: int = 3, heads: int = 4,
                 laplacian_heads: int | None = None, dropout: float = 0.1, pe_dim: int = 0, mlp_ratio: float = 2.0,
                 step_size: float = 1.0, learn_step_size: bool = False, max_tokens: int = 1024,
                 attention_dropout: float = 0.0, input_norm: bool = False, **_: Any):
        super().__init__(in_channels, num_classes, hidden, dropout, 'mean', pe_dim, input_norm)
        self.position = nn.Embedding(max_tokens, hidden)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList([
            PLETransformerBlock(hidden, heads, laplacian_heads=laplacian_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                attention_dropout=attention_dropout, step_size=step_size,
                                learn_step_size=learn_step_size)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden)

    def tokens(self, data: Any) -> tuple[Tensor, Tensor]:
        batch = data.batch if getattr(data, 'batch', None) is not None else \
            torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
        x, mask = to_dense_batch(self.encode(data), batch)
        pixel = getattr(data, 'pixel', None)
        if pixel is not None:  # explicit token positions (e.g. the pixel index of each digit node)
            positions, _ = to_dense_batch(pixel.long(), batch)
        else:  # the node order of each graph
            positions = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)
        if int(positions.max()) >= self.position.num_embeddings:
            raise ValueError(f'token position {int(positions.max())} >= max_tokens={self.position.num_embeddings}')
        return x + self.position(positions), mask

    def forward(self, data: Any) -> Tensor:
        x, mask = self.tokens(data)
        for block in self.blocks:
            x = block(x, mask=mask)
        x = self.norm(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled)

    @torch.no_grad()
    def attention_graph(self, data: Any, layer: int = 0) -> AttentionGraph:
        """The attention graph (all tokens of each sequence) of block ``layer``, all heads; node ids are
        positions in the (padded) token sequences, so for a single graph they are its node ids."""
        if not -len(self.blocks) <= layer < len(self.blocks):
            raise IndexError(f'layer {layer} out of range: the model has {len(self.blocks)} blocks')
        x, mask = self.tokens(data)
        if not bool(mask.all()):
            raise ValueError('attention_graph of a token model needs graphs of equal size (or one graph)')
        for block in self.blocks[:layer % len(self.blocks)]:
            x = block(x, mask=mask)
        return self.blocks[layer].attention_graph(x)


def _laplacian_heads(variant: str, heads: int) -> int | None:
    return {'transformer': 0, 'laplacian': None, 'mixed': heads // 2}[variant]


def _gnn(kind: str) -> Callable[..., nn.Module]:
    return lambda in_channels, num_classes, **hp: GNNClassifier(kind, in_channels, num_classes, **hp)


def _transformer(variant: str, tokens: bool = False) -> Callable[..., nn.Module]:
    def make(in_channels: int, num_classes: int, **hp: Any) -> nn.Module:
        hp.setdefault('laplacian_heads', _laplacian_heads(variant, hp.get('heads', DEFAULT_HPARAMS['heads'])))
        cls = TokenClassifier if tokens else TransformerClassifier
        return cls(in_channels, num_classes, **hp)
    return make


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    'gcn': _gnn('gcn'), 'gat': _gnn('gat'), 'gin': _gnn('gin'), 'gps': _gnn('gps'),
    'transformer': _transformer('transformer'), 'laplacian': _transformer('laplacian'),
    'mixed': _transformer('mixed'),
    'transformer-tokens': _transformer('transformer', True), 'laplacian-tokens': _transformer('laplacian', True),
    'mixed-tokens': _transformer('mixed', True),
}
MODEL_NAMES = tuple(REGISTRY)


def is_permutation_invariant(name: str) -> bool:
    return not name.endswith('-tokens')


def build_model(name: str, in_channels: int, num_classes: int, **hparams: Any) -> nn.Module:
    """Build a graph classifier by name (see the module docstring); unspecified hparams from ``DEFAULT_HPARAMS``."""
    if name not in REGISTRY:
        raise ValueError(f'unknown model {name!r}; choose from {", ".join(MODEL_NAMES)}')
    hp = {**DEFAULT_HPARAMS, **hparams}
    if name.endswith('-tokens'):
        hp.pop('attention', None)
        hp.pop('pool', None)
    return REGISTRY[name](in_channels, num_classes, **hp)
