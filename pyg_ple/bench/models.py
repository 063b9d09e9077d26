"""Graph classifiers: Laplacian-attention transformers and the PyG baselines they are compared with.

All models share the node encoder (a linear map of the node features, one-hot labels or continuous attributes, with
an optional ``BatchNorm1d`` on the raw features first (``input_norm``: continuous attributes such as ENZYMES' come on
scales from 1 to several hundred; the statistics are learned from training batches only), plus an optional linear
map of a positional encoding ``data.pe`` from PyG's ``AddLaplacianEigenvectorPE`` / ``AddRandomWalkPE``, see
:func:`pyg_ple.bench.datasets.add_positional_encoding`), the global pooling and the MLP head; they differ only in the
layers between them. ``model(data)`` takes a PyG ``Batch`` and returns logits ``[num_graphs, num_classes]``.

Build any of them by name with :func:`build_model`; its hyper-parameters and their defaults are the fields of
:class:`GraphModelConfig`:

======================  ===============================================================================================
name                    layers
======================  ===============================================================================================
``gcn``                 ``GCNConv`` + BatchNorm + ReLU, residual
``gat``                 ``GATConv`` (``heads`` heads, concatenated) + BatchNorm + ELU, residual
``gin``                 ``GINConv`` with a 2-layer MLP, learned epsilon, + BatchNorm + ReLU, residual
``gatedgcn``            ``ResGatedGraphConv`` (edge features in its gates and values) + BatchNorm + ReLU, residual;
                        PyG's layer keeps the edge features fixed, unlike LRGB's GatedGCN, which updates them
``gps``                 ``GPSConv`` (GINConv local + multi-head global attention)
``ple-gps``             the GPS layer with Laplacian attention over all pairs as its global part
                        (:class:`PLEGPSClassifier`); not among the defaults of ``pyg-ple bench``
``transformer``         :class:`~pyg_ple.nn.PLETransformer` with standard softmax attention (``laplacian_heads=0``)
``laplacian``           :class:`~pyg_ple.nn.PLETransformer` with all heads Laplacian (``I - A``)
``mixed``               :class:`~pyg_ple.nn.PLETransformer` with the last ``heads // 2`` heads Laplacian
``*-tokens``            the same three stacks on the nodes as a token sequence (positions ``data.pixel`` if present,
                        else the node order; learned position embedding; all tokens attend to all, no edges):
                        ``transformer-tokens``, ``laplacian-tokens``, ``mixed-tokens``. Not permutation invariant by
                        design (pixels in raster order).
======================  ===============================================================================================

The transformer names are the variants of :data:`pyg_ple.nn.block.VARIANTS`. Their blocks attend over the candidate
edge set ``attention``: ``'native'`` (the graph's edges), ``'full'`` (all node pairs within each graph, through the
block's all-pairs path: graphs in size buckets through scaled dot-product attention, the pairs never listed) or
``'native+full'`` (all pairs in one softmax, the native edges adding a learned edge term, from a "bond" flag and the
edge labels, to the scores of their pairs).
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, GINEConv, GPSConv, ResGatedGraphConv
from torch_geometric.nn.pool import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import to_dense_batch

from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.block import NORMS, PLETransformer, PLETransformerBlock, variant_kwargs
from pyg_ple.nn.conv import LaplacianDiffusionConv
from pyg_ple.nn.gps import PLEGPSLayer

__all__ = ['ATTENTION_EDGE_SETS', 'MODEL_NAMES', 'CategoricalEncoder', 'CategoricalInput', 'categorical_input',
           'GNNClassifier', 'GraphClassifier', 'GraphModelConfig',
           'PLEGPSClassifier', 'TokenClassifier', 'TransformerClassifier', 'build_model', 'check_config',
           'check_hparams', 'config_from_hparams', 'count_parameters', 'is_permutation_invariant']

POOLS: dict[str, Callable] = {'mean': global_mean_pool, 'add': global_add_pool, 'sum': global_add_pool,
                              'max': global_max_pool}
# Readouts concatenating several pools ('mean+sum': the mean keeps the scale of a node, the sum the graph size).
POOL_CHOICES = (*POOLS, 'mean+sum')
READOUT_LAYERS = ('last', 'all')
GNN_KINDS = ('gcn', 'gat', 'gin', 'gatedgcn', 'gps')
TRANSFORMER_VARIANTS = ('transformer', 'laplacian', 'mixed')
ATTENTION_EDGE_SETS = ('native', 'full', 'native+full')
# The block's own defaults, so that the configs repeat none of them.
BLOCK_DEFAULTS = {name: p.default for name, p in inspect.signature(PLETransformerBlock).parameters.items()
                  if p.default is not inspect.Parameter.empty}

Config = TypeVar('Config')
_FIELD_TYPES = {'int': (int,), 'float': (int, float), 'bool': (bool,), 'str': (str,),
                'Union[bool, str]': (bool, str)}


def check_hparams(hparams: Mapping[str, Any], accepted: Sequence[str], owner: str) -> None:
    """A ``ValueError`` naming every key of ``hparams`` that ``owner`` does not accept (and listing those it does)."""
    unknown = [key for key in hparams if key not in accepted]
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for {owner}; accepted: "
                         f"{', '.join(accepted)}")


def config_from_hparams(cls: type[Config], hparams: Mapping[str, Any], base: Optional[Config] = None) -> Config:
    """The config dataclass ``cls`` from ``base`` (its defaults when ``None``) with the fields in ``hparams``
    replaced, after :func:`check_hparams` against its fields."""
    check_hparams(hparams, [f.name for f in fields(cls)], cls.__name__)
    return cls(**{**(asdict(base) if base is not None else {}), **hparams})


def check_config(config: Any, positive: tuple[str, ...] = (), probabilities: tuple[str, ...] = ()) -> None:
    """Type of every ``int``/``float``/``bool``/``str`` field of a config dataclass, ``positive`` fields > 0 and
    ``probabilities`` in ``[0, 1)``; raises ``TypeError``/``ValueError`` naming the field."""
    for f in fields(config):
        value, allowed = getattr(config, f.name), _FIELD_TYPES.get(f.type)
        wrong_bool = isinstance(value, bool) and allowed is not None and bool not in allowed
        if allowed is not None and (not isinstance(value, allowed) or wrong_bool):
            raise TypeError(f"'{f.name}' must be of type {f.type} (got {value!r})")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"'{name}' must be positive (got {getattr(config, name)!r})")
    for name in probabilities:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"'{name}' must be in [0, 1) (got {getattr(config, name)!r})")


def _choice(config: Any, name: str, choices: Any) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"'{name}' must be one of {', '.join(map(repr, choices))} (got {getattr(config, name)!r})")


@dataclass
class GraphModelConfig:
    """Hyper-parameters of the graph classifiers of :func:`build_model`, with their defaults.

    Shared: ``hidden`` (width), ``num_layers``, ``heads`` (GAT, GPS, transformers), ``dropout``, ``pool``
    (``'mean'``, ``'add'``/``'sum'``, ``'max'``, or ``'mean+sum'``: both concatenated, the head input twice as wide;
    not the token models, which average their tokens), ``readout_layers`` (``'last'``: pool the last layer's output;
    ``'all'``: pool the encoded input and every layer's output and concatenate, the readout of GIN (Xu et al. 2019,
    eq. 4.2), the head input ``num_layers + 1`` times as wide; not the token models), ``pe_dim`` (width of
    ``data.pe``, 0 for none), ``input_norm`` (BatchNorm on the raw features), ``edge_dim`` (width of
    ``data.edge_attr``, e.g. the one-hot bond labels of ``load_dataset(..., edge_features=True)``; 0 for none): the
    transformers add it to the attention score (with ``'native+full'`` after the bond flag, on the native
    pairs only; not with ``'full'``), and with ``edge_values`` (needs ``edge_dim``) to the values as well
    (``edge_values`` of :class:`~pyg_ple.LaplacianDiffusionConv`), GAT to its score (``edge_dim`` of ``GATConv``),
    GIN, GPS and ple-gps add it to their messages (``GINEConv``), GatedGCN feeds it to its gates and values
    (``ResGatedGraphConv``); GCN and the token models have no edge features.
    Transformer models only: ``attention`` (the candidate edge set, see the module docstring; not the token models,
    whose tokens all attend to all), ``mlp_ratio``, ``step_size``, ``learn_step_size`` (also learned by the
    ``*_learned_eta`` variants), ``attention_dropout``, ``ple_init``, ``uniform_init``, ``norm``, ``prenorm``,
    ``degree_scaler`` (see :class:`~pyg_ple.PLETransformerBlock`; ple-gps takes ``degree_scaler`` for its Laplacian
    attention), ``share_weights`` (one block's attention, projection and MLP for every layer, see
    :class:`~pyg_ple.nn.PLETransformer`), ``encoder_norm`` (a LayerNorm after the node encoder, so the residual
    stream starts on LayerNorm scale), ``max_tokens`` (token models: size of the position embedding).
    """

    hidden: int = 64
    num_layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    # The readout and block settings below were chosen on MUTAG's validation folds, one mechanism at a time, and
    # then run unchanged on all six TU datasets (benchmarks/results/mechanism_ablation*.md).
    pool: str = 'mean+sum'
    readout_layers: str = 'last'
    pe_dim: int = 0
    input_norm: bool = False
    attention: str = 'native'
    # Narrower than the block's default MLP (4.0): every graph-classification result in benchmarks/results used 2.0.
    mlp_ratio: float = 2.0
    step_size: float = BLOCK_DEFAULTS['step_size']
    learn_step_size: bool = BLOCK_DEFAULTS['learn_step_size']
    attention_dropout: float = BLOCK_DEFAULTS['attention_dropout']
    ple_init: bool = BLOCK_DEFAULTS['ple_init']
    uniform_init: bool = BLOCK_DEFAULTS['uniform_init']
    encoder_norm: bool = False
    max_tokens: int = 1024
    edge_dim: int = 0
    norm: str = 'batch'
    prenorm: bool = False
    degree_scaler: Union[bool, str] = True
    share_weights: bool = False
    edge_values: bool = False

    def __post_init__(self) -> None:
        check_config(self, positive=('hidden', 'num_layers', 'heads', 'mlp_ratio', 'max_tokens'),
                     probabilities=('dropout', 'attention_dropout'))
        if self.pe_dim < 0:
            raise ValueError(f"'pe_dim' must be non-negative (got {self.pe_dim!r})")
        _choice(self, 'pool', POOL_CHOICES)
        _choice(self, 'readout_layers', READOUT_LAYERS)
        _choice(self, 'attention', ATTENTION_EDGE_SETS)
        _choice(self, 'norm', NORMS)
        if self.edge_dim < 0:
            raise ValueError(f"'edge_dim' must be non-negative (got {self.edge_dim!r})")
        if self.edge_dim and self.attention == 'full':
            raise ValueError("'edge_dim' needs attention 'native' or 'native+full': the all-pairs path of "
                             "attention='full' has no edge features")
        if self.edge_values and not self.edge_dim:
            raise ValueError("'edge_values' adds the edge features to the transformers' values: it needs "
                             "'edge_dim' > 0 (a dataset with edge features)")


def _check_heads(config: GraphModelConfig) -> None:
    if config.hidden % config.heads:
        raise ValueError(f"'hidden' ({config.hidden}) must be a multiple of 'heads' ({config.heads})")


def _batch_vector(data: Any) -> Tensor:
    batch = getattr(data, 'batch', None)
    return batch if batch is not None else torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class CategoricalInput:
    """Node features given as integer categories, one column each with ``node_dims[i]`` values (and edge features
    likewise, ``edge_dims``), such as OGB's 9 atom and 3 bond features. Passed as ``in_channels`` of
    :func:`build_model` (or as a dict with these keys, as model files store it), it makes the node encoder a
    :class:`CategoricalEncoder` (``hidden`` wide) and, with ``edge_dim`` > 0, embeds the edge features
    ``edge_dim`` wide for the layers that take them."""

    node_dims: tuple[int, ...]
    edge_dims: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, list[int]]:
        return {'node_dims': list(self.node_dims), 'edge_dims': list(self.edge_dims)}


def categorical_input(in_channels: Any) -> Optional[CategoricalInput]:
    """``in_channels`` as a :class:`CategoricalInput` (from one or from its dict), or ``None`` for a feature width."""
    if isinstance(in_channels, CategoricalInput):
        return in_channels
    if isinstance(in_channels, Mapping) and 'node_dims' in in_channels:
        return CategoricalInput(tuple(in_channels['node_dims']), tuple(in_channels.get('edge_dims', ())))
    return None


class CategoricalEncoder(nn.Module):
    """The sum of one embedding per categorical column (OGB's ``AtomEncoder``/``BondEncoder``, Xavier-uniform
    initialised as theirs): ``[n, len(dims)]`` integers to ``[n, out_channels]``."""

    def __init__(self, dims: Sequence[int], out_channels: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(int(d), out_channels) for d in dims)
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: Tensor) -> Tensor:
        return sum(emb(x[:, i]) for i, emb in enumerate(self.embeddings))


class GraphClassifier(nn.Module):
    """Encoder -> layers (subclass) -> pooling -> MLP head."""

    uses_pool = True  # False: the subclass pools on its own into one vector of width ``hidden``

    def __init__(self, in_channels: int, num_classes: int, config: GraphModelConfig):
        super().__init__()
        self.config = config
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, config.hidden
        self.pool_name, self.pe_dim = config.pool, config.pe_dim
        hidden, dropout = config.hidden, config.dropout
        self.categorical = categorical_input(in_channels)
        if self.categorical is not None and config.input_norm:
            raise ValueError("'input_norm' normalises continuous node features; categorical ones (CategoricalInput) "
                             'are embedded')
        self.input_norm = nn.BatchNorm1d(in_channels) if config.input_norm else None
        self.encoder = (nn.Linear(in_channels, hidden) if self.categorical is None
                        else CategoricalEncoder(self.categorical.node_dims, hidden))
        # Categorical edge features are embedded to edge_dim wide vectors, which the layers take as edge features.
        self.edge_encoder = (CategoricalEncoder(self.categorical.edge_dims, config.edge_dim)
                             if self.categorical is not None and self.categorical.edge_dims and config.edge_dim
                             else None)
        self.pe_encoder = nn.Linear(config.pe_dim, hidden) if config.pe_dim else None
        self.dropout = nn.Dropout(dropout)
        read = len(config.pool.split('+')) * (config.num_layers + 1 if config.readout_layers == 'all' else 1)
        pooled = hidden * (read if self.uses_pool else 1)
        self.head = nn.Sequential(nn.Linear(pooled, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def encode(self, data: Any) -> Tensor:
        x = data.x.float() if self.categorical is None else data.x.long()
        h = self.encoder(x if self.input_norm is None else self.input_norm(x))
        if self.pe_encoder is not None:
            pe = getattr(data, 'pe', None)
            if pe is None:
                raise ValueError(f'{type(self).__name__} was built with pe_dim={self.pe_dim} but the data has no '
                                 "'pe' attribute: add one with pyg_ple.bench.datasets.add_positional_encoding")
            h = h + self.pe_encoder(pe.float())
        return h

    def layer_states(self, h: Tensor, data: Any, batch: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        """``[h, layer_1(h), ..., layer_L(...)]``: the encoded nodes and each layer's output."""
        raise NotImplementedError

    def readout(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return torch.cat([POOLS[pool](h, batch, size=num_graphs) for pool in self.pool_name.split('+')], dim=-1)

    def edge_features(self, data: Any) -> Optional[Tensor]:
        """``data.edge_attr`` as floats when the model was built with ``edge_dim`` (embedded, ``edge_dim`` wide, when
        it is categorical: :class:`CategoricalInput`), else ``None``."""
        if not self.config.edge_dim:
            return None
        edge_attr = getattr(data, 'edge_attr', None)
        if edge_attr is None:
            raise ValueError(f'{type(self).__name__} was built with edge_dim={self.config.edge_dim} but the data has '
                             "no 'edge_attr': load it with load_dataset(..., edge_features=True)")
        if self.edge_encoder is not None:
            return self.edge_encoder(edge_attr.long().view(edge_attr.size(0), -1))
        return edge_attr.float().view(edge_attr.size(0), -1)

    def forward(self, data: Any) -> Tensor:
        batch = _batch_vector(data)
        num_graphs = int(getattr(data, 'num_graphs', 1) or 1)
        states = self.layer_states(self.encode(data), data, batch)
        read = states if self.config.readout_layers == 'all' else states[-1:]
        return self.head(torch.cat([self.readout(h, batch, num_graphs) for h in read], dim=-1))

    def _add_transformer(self, variant: str, edge_dim: Optional[int] = None) -> None:
        """The :class:`~pyg_ple.nn.PLETransformer` of ``variant`` as ``self.transformer`` (and ``encoder_norm``)."""
        config = self.config
        _check_heads(config)
        block = variant_kwargs(variant, config.heads)
        self.transformer = PLETransformer(
            config.hidden, config.heads, config.num_layers, laplacian_heads=block['laplacian_heads'],
            learn_step_size=block['learn_step_size'] or config.learn_step_size, mlp_ratio=config.mlp_ratio,
            dropout=config.dropout, attention_dropout=config.attention_dropout, step_size=config.step_size,
            edge_dim=edge_dim, ple_init=config.ple_init, norm=config.norm, prenorm=config.prenorm,
            degree_scaler=config.degree_scaler, share_weights=config.share_weights,
            edge_values=config.edge_values, uniform_init=config.uniform_init)
        if config.encoder_norm:
            self.encoder = nn.Sequential(self.encoder, nn.LayerNorm(config.hidden))


def _gin(mlp: nn.Module, edge_dim: Optional[int], **kwargs: Any) -> nn.Module:
    """``GINConv(mlp)``, or ``GINEConv(mlp, edge_dim=edge_dim)`` (edge features added to the messages)."""
    return GINConv(mlp, **kwargs) if edge_dim is None else GINEConv(mlp, edge_dim=edge_dim, **kwargs)


class GNNClassifier(GraphClassifier):
    """Baseline message-passing stack from PyG's own layers (``kind`` in gcn, gat, gin, gatedgcn, gps)."""

    def __init__(self, kind: str, in_channels: int, num_classes: int, config: Optional[GraphModelConfig] = None,
                 **hparams: Any):
        if kind not in GNN_KINDS:
            raise ValueError(f"'kind' must be one of {', '.join(GNN_KINDS)} (got {kind!r})")
        config = config_from_hparams(GraphModelConfig, hparams, config)
        if kind in ('gat', 'gps'):
            _check_heads(config)
        super().__init__(in_channels, num_classes, config)
        self.kind = kind
        hidden, heads, dropout = config.hidden, config.heads, config.dropout
        edge_dim = config.edge_dim or None
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _i in range(config.num_layers):
            if kind == 'gcn':
                conv = GCNConv(hidden, hidden)
            elif kind == 'gat':
                conv = GATConv(hidden, hidden // heads, heads=heads, dropout=dropout, edge_dim=edge_dim)
            elif kind == 'gatedgcn':
                conv = ResGatedGraphConv(hidden, hidden, edge_dim=edge_dim)
            elif kind == 'gin':
                conv = _gin(nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                          nn.Linear(hidden, hidden)), edge_dim, train_eps=True)
            else:
                local = _gin(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)), edge_dim)
                conv = GPSConv(hidden, local, heads=heads, dropout=dropout)
            self.convs.append(conv)
            self.norms.append(nn.Identity() if kind == 'gps' else nn.BatchNorm1d(hidden))
        self.act = nn.ELU() if kind == 'gat' else nn.ReLU()

    def layer_states(self, h: Tensor, data: Any, batch: Tensor) -> list[Tensor]:
        # GCN has no edge features; the other layers take them as a keyword only when built with edge_dim.
        edges = {} if self.kind == 'gcn' or not self.config.edge_dim else {'edge_attr': self.edge_features(data)}
        states = [h]
        for conv, norm in zip(self.convs, self.norms):
            if self.kind == 'gps':
                h = conv(h, data.edge_index, batch=batch, **edges)
            else:
                h = h + self.dropout(self.act(norm(conv(h, data.edge_index, **edges))))
            states.append(h)
        return states


class TransformerClassifier(GraphClassifier):
    """A :class:`~pyg_ple.nn.PLETransformer` of the attention ``variant`` over the candidate edge set
    ``config.attention`` (native edges, all pairs, or all pairs with a native-edge flag)."""

    def __init__(self, in_channels: int, num_classes: int, variant: str = 'laplacian',
                 config: Optional[GraphModelConfig] = None, **hparams: Any):
        super().__init__(in_channels, num_classes, config_from_hparams(GraphModelConfig, hparams, config))
        self.variant, self.attention = variant, self.config.attention
        # 'native+full' gives each native edge a feature 1 ("a bond"), then its labels; other pairs have none.
        edge_dim = (1 if self.attention == 'native+full' else 0) + self.config.edge_dim
        self._add_transformer(variant, edge_dim=edge_dim or None)

    def attention_edges(self, data: Any) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """``(edge_index, edge_attr)`` passed to the blocks: the native edges and their features (with
        ``'native+full'`` a leading 1 that marks a bond); ``(None, None)`` for ``'full'``. With ``'full'`` and
        ``'native+full'`` the blocks attend over all pairs without listing them (``all_pairs=True``)."""
        if self.attention == 'full':
            return None, None
        labels = self.edge_features(data)
        if self.attention == 'native':
            return data.edge_index, labels
        bond = torch.ones(data.edge_index.size(1), 1, device=data.edge_index.device)
        return data.edge_index, bond if labels is None else torch.cat([bond, labels], dim=-1)

    def layer_states(self, h: Tensor, data: Any, batch: Tensor) -> list[Tensor]:
        edge_index, edge_attr = self.attention_edges(data)
        return self.transformer.layer_outputs(h, edge_index, batch=batch, edge_attr=edge_attr,
                                              all_pairs=self.attention != 'native')

    @torch.no_grad()
    def attention_graph(self, data: Any, layer: int = 0) -> AttentionGraph:
        """The attention graph of block ``layer`` for ``data`` (a ``Data`` or ``Batch``), all heads."""
        batch = _batch_vector(data)
        edge_index, edge_attr = self.attention_edges(data)
        return self.transformer.attention_graph(self.encode(data), edge_index, batch=batch, edge_attr=edge_attr,
                                                layer=layer, all_pairs=self.attention != 'native')


class PLEGPSClassifier(GraphClassifier):
    """A stack of :class:`~pyg_ple.nn.PLEGPSLayer`: the GPS layer pattern (Rampasek et al. 2022) with Laplacian
    attention as its global part, per layer ``h = BN(x + GIN(x)) + BN(x + L(x))``, then ``BN(h + FFN(h))``, where
    ``GIN`` is the local ``GINConv`` (``GINEConv`` with ``edge_dim``) over the native edges and ``L`` a
    :class:`~pyg_ple.LaplacianDiffusionConv` (all heads Laplacian) over all node pairs of each graph. PyG's
    ``GPSConv`` takes only its own multi-head or Performer attention, hence that layer.

    A ``state_dict`` saved before the layers were :class:`~pyg_ple.nn.PLEGPSLayer` (keys ``locals.i``,
    ``globals.i``, ``ffns.i``, ``norms.i.k``) still loads."""

    def __init__(self, in_channels: int, num_classes: int, config: Optional[GraphModelConfig] = None,
                 **hparams: Any):
        super().__init__(in_channels, num_classes, config_from_hparams(GraphModelConfig, hparams, config))
        config = self.config
        _check_heads(config)
        hidden, edge_dim = config.hidden, config.edge_dim or None
        # Built in this order (every local conv, then every global conv, then each layer's MLP) so that a seed gives
        # the same initial weights as the stack had before it was made of PLEGPSLayer.
        local_convs = [_gin(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)), edge_dim)
                       for _ in range(config.num_layers)]
        global_convs = [LaplacianDiffusionConv(hidden, hidden // config.heads, config.heads,
                                               step_size=config.step_size, learn_step_size=config.learn_step_size,
                                               dropout=config.attention_dropout, degree_scaler=config.degree_scaler)
                        for _ in range(config.num_layers)]
        self.layers = nn.ModuleList(
            PLEGPSLayer(hidden, local, config.heads, dropout=config.dropout, mlp_ratio=config.mlp_ratio,
                        global_conv=attention)
            for local, attention in zip(local_convs, global_convs))
        self._register_load_state_dict_pre_hook(_legacy_ple_gps_keys)

    # Per-part views of the layers, by the names the stack had before it was made of PLEGPSLayer.
    @property
    def locals(self) -> list[nn.Module]:
        return [layer.conv for layer in self.layers]

    @property
    def globals(self) -> list[LaplacianDiffusionConv]:
        return [layer.attn for layer in self.layers]

    @property
    def ffns(self) -> list[nn.Module]:
        return [layer.mlp for layer in self.layers]

    @property
    def norms(self) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
        return [(layer.norm1, layer.norm2, layer.norm3) for layer in self.layers]

    def layer_states(self, h: Tensor, data: Any, batch: Tensor) -> list[Tensor]:
        edges = {} if not self.config.edge_dim else {'edge_attr': self.edge_features(data)}
        states = [h]
        for layer in self.layers:
            h = layer(h, data.edge_index, batch=batch, **edges)
            states.append(h)
        return states


# Key prefixes of the stack before its layers were PLEGPSLayer, and their names now.
_LEGACY_PLE_GPS = ((r'locals\.(\d+)\.', r'layers.\1.conv.'), (r'globals\.(\d+)\.', r'layers.\1.attn.'),
                   (r'ffns\.(\d+)\.', r'layers.\1.mlp.'), (r'norms\.(\d+)\.([012])\.', None))


def _legacy_ple_gps_keys(state_dict: dict, prefix: str, *args: Any) -> None:
    """Rename the keys of a ``PLEGPSClassifier`` state_dict saved before its layers were ``PLEGPSLayer``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for pattern, target in _LEGACY_PLE_GPS:
            match = re.match(pattern, rest)
            if match is None:
                continue
            if target is None:  # norms.i.k -> layers.i.norm{k+1}.module (PyG's BatchNorm wraps BatchNorm1d)
                new = f'layers.{match.group(1)}.norm{int(match.group(2)) + 1}.module.'
            else:
                new = match.expand(target)
            state_dict[prefix + new + rest[match.end():]] = state_dict.pop(key)
            break


class TokenClassifier(GraphClassifier):
    """The nodes of each graph as a token sequence (their order in the graph) with a learned position embedding,
    through the sequence path of :class:`~pyg_ple.nn.PLETransformer` (``[B, T, F]`` with a padding mask), pooled by
    the mean over each graph's tokens."""

    uses_pool = False

    def __init__(self, in_channels: int, num_classes: int, variant: str = 'laplacian',
                 config: Optional[GraphModelConfig] = None, **hparams: Any):
        config = config_from_hparams(GraphModelConfig, hparams, config)
        if config.edge_dim:
            raise ValueError("'edge_dim' does not apply to the token models: their tokens have no edges")
        if config.readout_layers != 'last':
            raise ValueError("'readout_layers' does not apply to the token models: they average their last "
                             "layer's tokens")
        super().__init__(in_channels, num_classes, config)
        self.variant = variant
        self.position = nn.Embedding(self.config.max_tokens, self.config.hidden)
        nn.init.normal_(self.position.weight, std=0.02)
        self._add_transformer(variant)

    def tokens(self, data: Any) -> tuple[Tensor, Tensor]:
        batch = _batch_vector(data)
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
        x = self.transformer(x, mask=mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled)

    @torch.no_grad()
    def attention_graph(self, data: Any, layer: int = 0) -> AttentionGraph:
        """The attention graph (all tokens of each graph) of block ``layer``, all heads. Node ``b * T + t`` is token
        ``t`` of graph ``b`` padded to ``T`` tokens (so for a single graph the node ids are its own); padding tokens
        have no edges."""
        x, mask = self.tokens(data)
        return self.transformer.attention_graph(x, mask=mask, layer=layer)


REGISTRY: dict[str, Callable[..., GraphClassifier]] = {
    **{kind: functools.partial(GNNClassifier, kind) for kind in GNN_KINDS},
    'ple-gps': PLEGPSClassifier,
    **{variant: functools.partial(TransformerClassifier, variant=variant) for variant in TRANSFORMER_VARIANTS},
    **{f'{variant}-tokens': functools.partial(TokenClassifier, variant=variant) for variant in TRANSFORMER_VARIANTS},
}
MODEL_NAMES = tuple(REGISTRY)


def is_permutation_invariant(name: str) -> bool:
    return not name.endswith('-tokens')


def build_model(name: str, in_channels: int, num_classes: int, config: Optional[GraphModelConfig] = None,
                **hparams: Any) -> GraphClassifier:
    """Build a graph classifier by name (see the module docstring) from ``config`` (default
    :class:`GraphModelConfig`) with the fields in ``hparams`` replaced; a key that is not a field raises a
    ``ValueError`` listing the fields."""
    if name not in REGISTRY:
        raise ValueError(f'unknown model {name!r}; choose from {", ".join(MODEL_NAMES)}')
    return REGISTRY[name](in_channels, num_classes, config=config_from_hparams(GraphModelConfig, hparams, config))
