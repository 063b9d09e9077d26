r"""``AttentionAdjacency``: attention as a learned, row-stochastic adjacency over a candidate edge set.

It returns an :class:`~pyg_ple.AttentionGraph`; :class:`~pyg_ple.LaplacianDiffusionConv` diffuses over exactly that
graph.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj
from torch_geometric.utils import add_self_loops, remove_self_loops, softmax

from pyg_ple.edges import as_edge_index
from pyg_ple.graph import AttentionGraph
from pyg_ple.validation import as_edge_attr, check_features, check_finite, checking


class AttentionAdjacency(torch.nn.Module):
    r"""Learned adjacency: scaled dot-product attention over a candidate edge set.

    .. math::
        \alpha^{(h)}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        \left( \frac{\langle q^{(h)}_i,\, k^{(h)}_j + e^{(h)}_{ij} \rangle}{\sqrt{C}} \right),
        \qquad q = x W_q,\ k = x W_k,\ e = \text{edge\_attr}\, W_e,

    over the incoming edges ``j -> i`` of each node ``i``. The edge term ``e`` (when ``edge_dim`` is set) enters
    the score only. With ``add_self_loops`` existing self-loops are removed and one is added per node (as in
    ``GATConv``), so every node attends at least to itself.

    Args:
        in_channels: input features ``F``.
        out_channels: channels per head ``C``.
        heads: number of heads ``H``.
        edge_dim: edge feature size, or ``None``.
        add_self_loops: see above.
        dropout: dropout on the attention weights (training only).
        uniform_init: start (and restart in :meth:`reset_parameters`) with ``W_q = 0``, bias included: every score is
            zero, so the attention starts uniform over each node's candidate keys, the random walk of the candidate
            graph (with its self-loops), and is learned from there (the gradient of ``W_q`` is that of the scores
            times the keys and edge terms, not zero).

    Shapes:
        input ``x [N, F]``, ``edge_index [2, E]`` (int64 or int32) or a sparse ``[N, N]`` adjacency (its pattern),
        ``edge_attr [E, edge_dim]`` (or ``[E]`` when ``edge_dim=1``); output an :class:`AttentionGraph` with int64
        ``edge_index [2, E']`` and ``weight [E', H]``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, edge_dim: Optional[int] = None,
                 add_self_loops: bool = True, dropout: float = 0.0, uniform_init: bool = False):
        super().__init__()
        if not isinstance(uniform_init, bool):
            raise TypeError(f"'uniform_init' must be a bool (got {uniform_init!r})")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.edge_dim, self.add_self_loops, self.dropout = edge_dim, add_self_loops, dropout
        self.uniform_init = uniform_init
        self.lin_query = Linear(in_channels, heads * out_channels)
        self.lin_key = Linear(in_channels, heads * out_channels)
        self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False) if edge_dim is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_query.reset_parameters()
        self.lin_key.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.uniform_init:
            torch.nn.init.zeros_(self.lin_query.weight)
            torch.nn.init.zeros_(self.lin_query.bias)

    def prepare_edges(self, edge_index: Tensor, num_nodes: int,
                      edge_attr: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""The edge set attention runs over: self-loops removed and re-added when ``add_self_loops``."""
        if self.add_self_loops:
            edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
            edge_index, edge_attr = add_self_loops(edge_index, edge_attr, fill_value='mean', num_nodes=num_nodes)
        return edge_index, edge_attr

    def check_inputs(self, x: Tensor, edge_index: Adj,
                     edge_attr: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""``(edge_index [2, E] int64, edge_attr [E, edge_dim] or None)`` from the inputs; outside ``torch.compile``
        also checks that ``x`` is ``[N, in_channels]`` in the parameters' dtype, that the indices are in range and
        that ``edge_attr`` fits ``edge_dim`` (a ``[E]`` vector is one feature when ``edge_dim=1``)."""
        if checking():
            check_features(x, self.in_channels, dim=2, dtype=self.lin_query.weight.dtype)
            check_finite(x, 'x')
        edge_index, _ = as_edge_index(edge_index, x.size(0))
        return edge_index, as_edge_attr(edge_attr, edge_index.size(1), self.edge_dim)

    def edge_term(self, query: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor]) -> Optional[Tensor]:
        r"""The edge part of the scores, ``<q_i, e_ij> / sqrt(C)`` ``[E, H]`` (``None`` without ``edge_dim``)."""
        if self.lin_edge is None:
            return None
        if edge_attr is None:
            raise ValueError(f"'edge_attr' is required: the layer was built with edge_dim={self.edge_dim}")
        edge = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        return (query.index_select(0, edge_index[1]) * edge).sum(dim=-1) / math.sqrt(self.out_channels)

    def scores(self, query: Tensor, key: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None) -> Tensor:
        r"""Scaled scores ``[E, H]`` of the edges ``j -> i`` from ``query [N, H, C]`` and ``key [N, H, C]``."""
        src, dst = edge_index[0], edge_index[1]
        score = (query.index_select(0, dst) * key.index_select(0, src)).sum(dim=-1) / math.sqrt(self.out_channels)
        edge = self.edge_term(query, edge_index, edge_attr)
        return score if edge is None else score + edge

    def normalize(self, score: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
        r"""Softmax of ``score [E, H]`` over each target's incoming edges, then dropout."""
        alpha = softmax(score, edge_index[1], num_nodes=num_nodes)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def project(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Queries and keys ``[N, H, C]``."""
        H, C = self.heads, self.out_channels
        return self.lin_query(x).view(-1, H, C), self.lin_key(x).view(-1, H, C)

    def forward(self, x: Tensor, edge_index: Adj, edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, prepared: bool = False) -> AttentionGraph:
        # ``prepared``: the caller (the conv) has already run ``check_inputs`` and ``prepare_edges``.
        num_nodes = x.size(0)
        if not prepared:
            edge_index, edge_attr = self.check_inputs(x, edge_index, edge_attr)
            edge_index, edge_attr = self.prepare_edges(edge_index, num_nodes, edge_attr)
        query, key = self.project(x)
        alpha = self.normalize(self.scores(query, key, edge_index, edge_attr), edge_index, num_nodes)
        return AttentionGraph(edge_index, alpha, num_nodes, batch)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'add_self_loops={self.add_self_loops}' + (', uniform_init=True' if self.uniform_init else '') + ')')
