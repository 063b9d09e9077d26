r"""Attention as an explicit, learned graph.

:class:`AttentionAdjacency` is the module that turns node features into a row-stochastic adjacency over a candidate
edge set, and :class:`AttentionGraph` is what it returns: an explicit weighted graph with one weight per edge and head
that can be inspected, sparsified, turned into a Laplacian, and exported. :class:`~pyg_ple.LaplacianDiffusionConv`
diffuses over exactly the graph this module returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj
from torch_geometric.utils import add_self_loops, coalesce, remove_self_loops, scatter, softmax, to_dense_adj

from pyg_ple.edges import as_edge_index
from pyg_ple.validation import check_edge_values, checking


@dataclass
class AttentionGraph:
    r"""A weighted directed graph with ``heads`` weights per edge ``j -> i``.

    Attributes:
        edge_index: ``[2, E]``, row 0 the sources ``j``, row 1 the targets ``i``.
        weight: ``[E, heads]``; for a learned attention graph each target's incoming weights sum to one per head.
        num_nodes: number of nodes ``N``.
        batch: optional graph assignment ``[N]`` (sorted), as in a PyG ``Batch``.
    """
    edge_index: Tensor
    weight: Tensor
    num_nodes: int
    batch: Optional[Tensor] = None

    @property
    def heads(self) -> int:
        return self.weight.size(1)

    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    def __repr__(self) -> str:
        graphs = '' if self.batch is None else f', graphs={int(self.batch.max()) + 1 if self.batch.numel() else 0}'
        return f'AttentionGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, heads={self.heads}{graphs})'

    def _edge_score(self, head: Optional[int]) -> Tensor:
        if head is None:
            return self.weight.mean(dim=-1)
        if not isinstance(head, int) or not 0 <= head < self.heads:
            raise ValueError(f"'head' must be an int in [0, {self.heads}) or None (got {head!r})")
        return self.weight[:, head]

    def _subset(self, keep: Tensor, normalize: bool) -> AttentionGraph:
        edge_index, weight = self.edge_index[:, keep], self.weight[keep]
        if normalize:
            total = scatter(weight, edge_index[1], dim=0, dim_size=self.num_nodes, reduce='sum')
            weight = weight / total[edge_index[1]].clamp_min(torch.finfo(weight.dtype).tiny)
        return AttentionGraph(edge_index, weight, self.num_nodes, self.batch)

    def topk(self, k: int, head: Optional[int] = None, normalize: bool = False) -> AttentionGraph:
        r"""Keep the ``k`` strongest incoming edges of every node, by the weight of ``head`` (the mean over heads when
        ``None``). With ``normalize=True`` the kept weights are rescaled to sum to one per target and head."""
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"'k' must be a non-negative int (got {k!r})")
        score = self._edge_score(head)
        dst = self.edge_index[1]
        # Sort by score (descending), then stably by target: each target's edges end up strongest first.
        order = torch.argsort(score, descending=True, stable=True)
        order = order[torch.argsort(dst[order], stable=True)]
        counts = torch.bincount(dst, minlength=self.num_nodes)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel(), device=dst.device) - starts[dst[order]]
        keep = torch.zeros_like(dst, dtype=torch.bool)
        keep[order[rank < k]] = True
        return self._subset(keep, normalize)

    def threshold(self, t: float, head: Optional[int] = None, normalize: bool = False) -> AttentionGraph:
        r"""Keep the edges whose weight (of ``head``, or the mean over heads) is at least ``t``."""
        return self._subset(self._edge_score(head) >= t, normalize)

    def to_dense(self) -> Tensor:
        r"""Dense adjacency per graph: ``[B, heads, N_max, N_max]`` with ``A[b, h, i, j]`` the weight of ``j -> i``."""
        batch = self.batch
        if batch is None:
            batch = torch.zeros(self.num_nodes, dtype=torch.long, device=self.edge_index.device)
        if self.num_nodes == 0:
            return self.weight.new_zeros(0, self.heads, 0, 0)
        adj = to_dense_adj(self.edge_index.flip(0), batch=batch, edge_attr=self.weight)  # [B, N, N, H]
        return adj.permute(0, 3, 1, 2)

    def laplacian(self) -> Tuple[Tensor, Tensor]:
        r"""The random-walk Laplacian ``I - A`` per head, as ``(edge_index, weight [E', heads])``.

        A node without incoming edges has a zero row (no diagonal entry), as in networkx."""
        N, dst = self.num_nodes, self.edge_index[1]
        has_in = torch.bincount(dst, minlength=N) > 0
        loops = torch.arange(N, device=dst.device)[has_in]
        edge_index = torch.cat([self.edge_index, loops.expand(2, -1)], dim=1)
        weight = torch.cat([-self.weight, self.weight.new_ones(loops.numel(), self.heads)], dim=0)
        return coalesce(edge_index, weight, num_nodes=N, reduce='sum')

    def graph(self, index: int) -> AttentionGraph:
        r"""Graph ``index`` of a batch, with nodes renumbered from zero."""
        if self.batch is None:
            if index != 0:
                raise ValueError(f"'index' must be 0 for a single graph (got {index!r})")
            return self
        nodes = (self.batch == index).nonzero().view(-1)
        if nodes.numel() == 0:
            raise ValueError(f"'index' {index!r} is not a graph of this batch")
        start = int(nodes[0])
        keep = self.batch[self.edge_index[1]] == index
        return AttentionGraph(self.edge_index[:, keep] - start, self.weight[keep], nodes.numel())

    def to_data(self) -> Data:
        r"""A ``torch_geometric.data.Data`` with ``edge_index`` and the weights as ``edge_attr`` ``[E, heads]``."""
        data = Data(edge_index=self.edge_index, edge_attr=self.weight, num_nodes=self.num_nodes)
        if self.batch is not None:
            data.batch = self.batch
        return data

    def to_networkx(self, head: Optional[int] = None) -> nx.DiGraph:
        r"""A ``networkx.DiGraph`` with an edge ``(j, i)`` for every ``j -> i``.

        Each edge carries ``weight`` (the weight of ``head``, or the mean over heads) and ``head0``, ``head1``, ...;
        ``networkx.to_numpy_array(G).T`` is the dense attention matrix. Duplicate edges are summed."""
        score = self._edge_score(head).detach().cpu().tolist()
        per_head = self.weight.detach().cpu().tolist()
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.num_nodes))
        for (j, i), w, ws in zip(self.edge_index.t().tolist(), score, per_head):
            if graph.has_edge(j, i):
                attrs = graph[j][i]
                attrs['weight'] += w
                for h, value in enumerate(ws):
                    attrs[f'head{h}'] += value
            else:
                graph.add_edge(j, i, weight=w, **{f'head{h}': value for h, value in enumerate(ws)})
        return graph


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

    Shapes:
        input ``x [N, F]``, ``edge_index [2, E]``, ``edge_attr [E, edge_dim]``; output an :class:`AttentionGraph`
        with ``weight [E', H]``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, edge_dim: Optional[int] = None,
                 add_self_loops: bool = True, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.edge_dim, self.add_self_loops, self.dropout = edge_dim, add_self_loops, dropout
        self.lin_query = Linear(in_channels, heads * out_channels)
        self.lin_key = Linear(in_channels, heads * out_channels)
        self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False) if edge_dim is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_query.reset_parameters()
        self.lin_key.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()

    def prepare_edges(self, edge_index: Tensor, num_nodes: int,
                      edge_attr: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""The edge set attention runs over: self-loops removed and re-added when ``add_self_loops``."""
        if self.add_self_loops:
            edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
            edge_index, edge_attr = add_self_loops(edge_index, edge_attr, fill_value='mean', num_nodes=num_nodes)
        return edge_index, edge_attr

    def scores(self, query: Tensor, key: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None) -> Tensor:
        r"""Scaled scores ``[E, H]`` of the edges ``j -> i`` from ``query [N, H, C]`` and ``key [N, H, C]``."""
        src, dst = edge_index[0], edge_index[1]
        q_i = query.index_select(0, dst)
        k_j = key.index_select(0, src)
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError(f"'edge_attr' is required: the layer was built with edge_dim={self.edge_dim}")
            k_j = k_j + self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        return (q_i * k_j).sum(dim=-1) / math.sqrt(self.out_channels)

    def normalize(self, score: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
        r"""Softmax of ``score [E, H]`` over each target's incoming edges, then dropout."""
        alpha = softmax(score, edge_index[1], num_nodes=num_nodes)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def project(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        H, C = self.heads, self.out_channels
        return self.lin_query(x).view(-1, H, C), self.lin_key(x).view(-1, H, C)

    def forward(self, x: Tensor, edge_index: Adj, edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, checked: bool = False) -> AttentionGraph:
        # ``checked``: the caller (the conv) has already parsed and validated ``edge_index`` and ``edge_attr``.
        num_nodes = x.size(0)
        if not checked:
            edge_index, _ = as_edge_index(edge_index, num_nodes, self.in_channels, x)
            if checking():
                check_edge_values(edge_attr, edge_index.size(1), 'edge_attr')
        edge_index, edge_attr = self.prepare_edges(edge_index, num_nodes, edge_attr)
        query, key = self.project(x)
        alpha = self.normalize(self.scores(query, key, edge_index, edge_attr), edge_index, num_nodes)
        return AttentionGraph(edge_index, alpha, num_nodes, batch)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'add_self_loops={self.add_self_loops})')
