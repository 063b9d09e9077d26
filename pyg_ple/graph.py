r"""``AttentionGraph``: attention as an explicit weighted graph, one weight per edge and head.

It is what :class:`~pyg_ple.AttentionAdjacency` returns and what :class:`~pyg_ple.LaplacianDiffusionConv` diffuses
over: it can be inspected, sparsified (``topk``, ``threshold``), turned into a Laplacian, split per graph of a batch,
and exported (``to_data``, ``to_networkx``). :meth:`AttentionGraph.from_dense` builds one from the dense attention
matrices any transformer computes (e.g. ``output_attentions`` of a Hugging Face model, see :mod:`pyg_ple.hf`); the
graph measures (entropy, distance, spectrum, head similarity, rollout) are in :mod:`pyg_ple.analysis`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, scatter, to_dense_adj

from pyg_ple.edges import has_incoming_edge

if TYPE_CHECKING:  # networkx is imported by ``to_networkx`` only
    import networkx as nx


@dataclass
class AttentionGraph:
    r"""A weighted directed graph with ``heads`` weights per edge ``j -> i``.

    Attributes:
        edge_index: ``[2, E]`` (stored as int64), row 0 the sources ``j``, row 1 the targets ``i``.
        weight: ``[E, heads]``; for a learned attention graph each target's incoming weights sum to one per head.
        num_nodes: number of nodes ``N``.
        batch: optional graph assignment ``[N]`` (sorted), as in a PyG ``Batch``.
        tokens: optional label of every node (``N`` strings), e.g. the token strings of a text model; carried through
            ``topk``, ``threshold`` and ``graph`` and written as the node attribute ``token`` by ``to_networkx``.
    """
    edge_index: Tensor
    weight: Tensor
    num_nodes: int
    batch: Optional[Tensor] = None
    tokens: Optional[List[str]] = None

    def __post_init__(self) -> None:
        # int64 indices whatever came in: on CPU, scatter's backward gathers wrong rows with an int32 index.
        if isinstance(self.edge_index, Tensor):
            self.edge_index = self.edge_index.long()
        if self.tokens is not None:
            self.tokens = [str(t) for t in self.tokens]
            if len(self.tokens) != self.num_nodes:
                raise ValueError(f"'tokens' must hold one string per node ({self.num_nodes}), got {len(self.tokens)}")

    @classmethod
    def from_dense(cls, att: Tensor, mask: Optional[Tensor] = None, drop_zeros: bool = True,
                   tokens: Optional[List[str]] = None) -> AttentionGraph:
        r"""The attention graph of dense attention matrices, e.g. the ``attentions`` a Hugging Face model returns with
        ``output_attentions=True``.

        Token :math:`t` of sequence :math:`b` becomes node :math:`bT + t`. For every pair of real tokens
        :math:`(i, j)` of one sequence there is an edge :math:`j \to i` (``edge_index[0] = j``,
        ``edge_index[1] = i``: the key sends to the query, PyG's source-to-target convention) with

        .. math::
            \mathrm{weight}[e, h] = \mathrm{att}[b, h, i, j],

        so that :meth:`to_dense` gives back ``att`` with the rows and columns of padded tokens zeroed. A padded token
        is an isolated node (it keeps its number, so that node ``b*T + t`` is always token ``t`` of sequence ``b``).

        Args:
            att (torch.Tensor): attention probabilities, row ``i`` a query and column ``j`` a key.
            mask (torch.Tensor, optional): ``True`` / ``1`` for a real token, ``False`` / ``0`` for padding (a
                Hugging Face ``attention_mask``). (default: :obj:`None`: every token is real)
            drop_zeros (bool, optional): leave out the pairs whose weight is exactly zero in every head, e.g. the
                future tokens of a causal model, which then gives only the pairs :math:`j \le i`. A pair that is zero
                in some heads only is kept (an edge carries the weights of all heads). (default: :obj:`True`)
            tokens (List[str], optional): a label per node (``B * T`` strings, sequence after sequence).
                (default: :obj:`None`)

        Shapes:
            - **input:** ``att`` :math:`(B, H, T, T)` or :math:`(H, T, T)`, ``mask`` :math:`(B, T)` (or :math:`(T)`
              with a 3-d ``att``)
            - **output:** an :class:`AttentionGraph` with :math:`BT` nodes, ``weight`` :math:`(E, H)` (the edges
              sorted by target, then source) and ``batch`` :math:`(BT)` (``None`` for a 3-d ``att``)
        """
        if not isinstance(att, Tensor) or not att.is_floating_point():
            raise TypeError(f"'att' must be a floating-point tensor (got {type(att).__name__}"
                            f"{'' if not isinstance(att, Tensor) else ' of ' + str(att.dtype)})")
        single = att.dim() == 3
        if att.dim() not in (3, 4) or att.size(-1) != att.size(-2):
            raise ValueError(f"'att' must have shape [B, H, T, T] or [H, T, T] (got {list(att.shape)})")
        if single:
            att = att.unsqueeze(0)
        B, H, T, _ = att.shape
        if mask is None:
            real = torch.ones(B, T, dtype=torch.bool, device=att.device)
        else:
            if not isinstance(mask, Tensor):
                raise TypeError(f"'mask' must be a tensor (got {type(mask).__name__})")
            real = mask.unsqueeze(0) if single and mask.dim() == 1 else mask
            if tuple(real.shape) != (B, T):
                raise ValueError(f"'mask' must have shape [B, T] = {[B, T]} to match 'att' (got {list(mask.shape)})")
            if not real.dtype == torch.bool:
                if bool(((real != 0) & (real != 1)).any()):
                    raise ValueError("'mask' must hold only 0/1 (or True/False): 1 for a real token, 0 for padding")
                real = real != 0
            real = real.to(att.device)
        pair = real[:, :, None] & real[:, None, :]  # [B, i, j]: both tokens real
        if drop_zeros:
            pair = pair & (att != 0).any(dim=1)
        b, i, j = pair.nonzero(as_tuple=True)
        edge_index = torch.stack([b * T + j, b * T + i])
        weight = att[b, :, i, j]
        batch = None if single else torch.arange(B, device=att.device).repeat_interleave(T)
        return cls(edge_index, weight, B * T, batch, tokens)

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
        return AttentionGraph(edge_index, weight, self.num_nodes, self.batch, self.tokens)

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
        N = self.num_nodes
        loops = torch.arange(N, device=self.edge_index.device)[has_incoming_edge(self.edge_index, N)]
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
        tokens = None if self.tokens is None else self.tokens[start:start + nodes.numel()]
        return AttentionGraph(self.edge_index[:, keep] - start, self.weight[keep], nodes.numel(), tokens=tokens)

    def to_data(self) -> Data:
        r"""A ``torch_geometric.data.Data`` with ``edge_index`` and the weights as ``edge_attr`` ``[E, heads]``."""
        data = Data(edge_index=self.edge_index, edge_attr=self.weight, num_nodes=self.num_nodes)
        if self.batch is not None:
            data.batch = self.batch
        return data

    def to_networkx(self, head: Optional[int] = None) -> 'nx.DiGraph':
        r"""A ``networkx.DiGraph`` with an edge ``(j, i)`` for every ``j -> i``.

        Each edge carries ``weight`` (the weight of ``head``, or the mean over heads) and ``head0``, ``head1``, ...;
        ``networkx.to_numpy_array(G).T`` is the dense attention matrix. Duplicate edges are summed. With ``tokens``,
        every node carries its label as the attribute ``token``."""
        score = self._edge_score(head).detach().cpu().tolist()
        per_head = self.weight.detach().cpu().tolist()
        import networkx as nx

        graph = nx.DiGraph()
        if self.tokens is None:
            graph.add_nodes_from(range(self.num_nodes))
        else:
            graph.add_nodes_from((n, {'token': t}) for n, t in enumerate(self.tokens))
        for (j, i), w, ws in zip(self.edge_index.t().tolist(), score, per_head):
            if graph.has_edge(j, i):
                attrs = graph[j][i]
                attrs['weight'] += w
                for h, value in enumerate(ws):
                    attrs[f'head{h}'] += value
            else:
                graph.add_edge(j, i, weight=w, **{f'head{h}': value for h, value in enumerate(ws)})
        return graph
