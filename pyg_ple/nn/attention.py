r"""``AttentionAdjacency``: attention as a learned, row-stochastic adjacency over a candidate edge set.

It returns an :class:`~pyg_ple.AttentionGraph`; :class:`~pyg_ple.LaplacianDiffusionConv` diffuses over exactly that
graph.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, PairTensor, SparseTensor
from torch_geometric.utils import add_self_loops, is_torch_sparse_tensor, remove_self_loops, softmax, to_edge_index
from torch_geometric.utils.loop import compute_loop_attr

from pyg_ple.edges import as_edge_index
from pyg_ple.graph import AttentionGraph
from pyg_ple.validation import as_edge_attr, check_edge_index, check_features, check_finite, checking

#: The reductions ``add_self_loops`` takes as ``fill_value`` (besides a number or a tensor).
FILL_REDUCTIONS = ('add', 'sum', 'mean', 'min', 'max', 'mul')
NodeSize = Union[int, Tuple[int, int]]


def channel_pair(in_channels: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    r"""``(source, target)`` feature sizes from ``in_channels``: an int for both sides or a pair; ``-1`` leaves a size
    to the first input (lazy initialisation, as PyG's ``Linear(-1, ...)``). Raises a ``ValueError`` naming
    ``in_channels`` otherwise."""
    pair = in_channels if isinstance(in_channels, tuple) else (in_channels, in_channels)
    if len(pair) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and (c > 0 or c == -1)
                                 for c in pair):
        raise ValueError(f"'in_channels' must be a positive int, -1 (lazy) or a pair of them for source and target "
                         f"nodes (got {in_channels!r})")
    return pair


def split_pair(x: Union[Tensor, PairTensor]) -> Tuple[Tensor, Tensor]:
    r"""``(x_src, x_dst)``: the pair itself, or ``x`` on both sides."""
    if isinstance(x, Tensor):
        return x, x
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise TypeError(f"'x' must be a tensor or a pair (x_src, x_dst) of tensors (got {type(x).__name__})")
    return x[0], x[1]


def check_fill_value(fill_value) -> None:
    if isinstance(fill_value, str):
        if fill_value not in FILL_REDUCTIONS:
            raise ValueError(f"'fill_value' must be a number, a tensor or one of {FILL_REDUCTIONS} "
                             f"(got {fill_value!r})")
    elif not isinstance(fill_value, (int, float, Tensor)) or isinstance(fill_value, bool):
        raise TypeError(f"'fill_value' must be a number, a tensor or one of {FILL_REDUCTIONS} "
                        f"(got {type(fill_value).__name__})")


class AttentionAdjacency(torch.nn.Module):
    r"""Learned adjacency: scaled dot-product attention over a candidate edge set.

    .. math::
        \alpha^{(h)}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        \left( \frac{\langle q^{(h)}_i,\, k^{(h)}_j + e^{(h)}_{ij} \rangle}{\sqrt{C}} \right),
        \qquad q = x W_q,\ k = x W_k,\ e = \text{edge\_attr}\, W_e,

    over the incoming edges ``j -> i`` of each node ``i``. The edge term ``e`` (when ``edge_dim`` is set) enters
    the score only. With ``add_self_loops`` existing self-loops are removed and one is added per node (as in
    ``GATConv``), so every node attends at least to itself.

    On a bipartite graph (``x = (x_src, x_dst)``, ``in_channels = (F_src, F_dst)``) the queries come from the
    targets and the keys from the sources, :math:`q = x_{dst} W_q,\ k = x_{src} W_k`; self-loops then join source
    ``i`` to target ``i`` for ``i < min(N_src, N_dst)``, as in ``GATConv`` (NeighborLoader's layout, in which the
    first sources are the targets).

    Args:
        in_channels (int or tuple): Size of each input sample, or ``(F_src, F_dst)`` for bipartite graphs; ``-1``
            derives it from the first input (lazy initialisation).
        out_channels (int): Channels per head ``C``.
        heads (int, optional): Number of heads ``H``. (default: :obj:`1`)
        edge_dim (int, optional): Edge feature size. (default: :obj:`None`)
        add_self_loops (bool, optional): See above. (default: :obj:`True`)
        dropout (float, optional): Dropout on the attention weights (training only). (default: :obj:`0.`)
        uniform_init (bool, optional): Start (and restart in :meth:`reset_parameters`) with ``W_q = 0``, bias
            included: every score is zero, so the attention starts uniform over each node's candidate keys, the random
            walk of the candidate graph (with its self-loops), and is learned from there (the gradient of ``W_q`` is
            that of the scores times the keys and edge terms, not zero). (default: :obj:`False`)
        fill_value (float or torch.Tensor or str, optional): The edge features of the added self-loops, as in
            ``GATConv``: a value, or how to reduce each node's incoming edge features (``'add'``, ``'mean'``,
            ``'min'``, ``'max'``, ``'mul'``). (default: :obj:`'mean'`)

    Shapes:
        - **input:** node features ``x [N, F]`` or ``(x_src [N_src, F_src], x_dst [N_dst, F_dst])``,
          ``edge_index [2, E]`` (int64 or int32) or a sparse ``[N_dst, N_src]`` adjacency (its pattern),
          ``edge_attr [E, edge_dim]`` (or ``[E]`` when ``edge_dim=1``)
        - **output:** an :class:`AttentionGraph` with int64 ``edge_index [2, E']`` and ``weight [E', H]``
    """

    def __init__(self, in_channels: Union[int, Tuple[int, int]], out_channels: int, heads: int = 1,
                 edge_dim: Optional[int] = None, add_self_loops: bool = True, dropout: float = 0.0,
                 uniform_init: bool = False, fill_value: Union[float, Tensor, str] = 'mean'):
        super().__init__()
        if not isinstance(uniform_init, bool):
            raise TypeError(f"'uniform_init' must be a bool (got {uniform_init!r})")
        src_channels, dst_channels = channel_pair(in_channels)
        check_fill_value(fill_value)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.edge_dim, self.add_self_loops, self.dropout = edge_dim, add_self_loops, dropout
        self.uniform_init, self.fill_value = uniform_init, fill_value
        self.lin_query = Linear(dst_channels, heads * out_channels)
        self.lin_key = Linear(src_channels, heads * out_channels)
        self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False) if edge_dim is not None else None
        if uniform_init and dst_channels == -1:  # zero W_q once the lazy Linear has its shape
            self._zero_query_hook = self.lin_query.register_forward_pre_hook(self._zero_lazy_query)
        self.reset_parameters()

    def _zero_lazy_query(self, module: Linear, inputs) -> None:
        # Runs after the Linear's own hook that gives it its shape (hooks run in the order registered).
        with torch.no_grad():
            torch.nn.init.zeros_(self.lin_query.weight)
            torch.nn.init.zeros_(self.lin_query.bias)
        self._zero_query_hook.remove()

    def reset_parameters(self) -> None:
        self.lin_query.reset_parameters()
        self.lin_key.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.uniform_init and self.lin_query.in_channels > 0:
            torch.nn.init.zeros_(self.lin_query.weight)
            torch.nn.init.zeros_(self.lin_query.bias)

    def prepare_edges(self, edge_index: Tensor, num_nodes: NodeSize,
                      edge_attr: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""The edge set attention runs over: self-loops removed and re-added when ``add_self_loops``
        (``num_nodes``: ``N``, or ``(N_src, N_dst)`` on a bipartite graph). A ``torch_geometric.EdgeIndex`` comes
        back as a tensor sorted by target through its own (cached) sort when it is sorted (see
        :func:`target_sorted_edges`), as a plain tensor otherwise."""
        if isinstance(edge_index, EdgeIndex):
            if edge_index.is_sorted:
                return target_sorted_edges(edge_index, num_nodes, edge_attr, self.add_self_loops, self.fill_value)
            edge_index = edge_index.as_tensor()  # unsorted: nothing cached to use
        if self.add_self_loops:
            edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
            edge_index, edge_attr = add_self_loops(edge_index, edge_attr, fill_value=self.fill_value,
                                                   num_nodes=num_nodes)
        return edge_index, edge_attr

    def check_inputs(self, x: Union[Tensor, PairTensor], edge_index: Adj,
                     edge_attr: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r"""``(edge_index [2, E] int64, edge_attr [E, edge_dim] or None)`` from the inputs; outside ``torch.compile``
        also checks that ``x`` (each side of a pair) has the layer's features in the parameters' dtype, that the
        indices are in range and that ``edge_attr`` fits ``edge_dim`` (a ``[E]`` vector is one feature when
        ``edge_dim=1``)."""
        x_src, x_dst = split_pair(x)
        if checking():
            src_channels, dst_channels = channel_pair(self.in_channels)
            dtype = self.lin_query.weight.dtype
            if isinstance(x, Tensor):
                check_features(x, self.in_channels, dim=2, dtype=dtype)
            else:
                check_features(x_src, src_channels, name='x_src', dim=2, dtype=dtype)
                check_features(x_dst, dst_channels, name='x_dst', dim=2, dtype=dtype)
            check_finite(x_src, 'x')
            if x_dst is not x_src:
                check_finite(x_dst, 'x')
        if isinstance(x, Tensor):
            edge_index, _ = as_edge_index(edge_index, x.size(0))
        else:
            edge_index = bipartite_edge_index(edge_index, x_src.size(0), x_dst.size(0))
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

    def project(self, x: Union[Tensor, PairTensor]) -> Tuple[Tensor, Tensor]:
        r"""Queries ``[N_dst, H, C]`` and keys ``[N_src, H, C]`` (``x`` a tensor: both from it)."""
        H, C = self.heads, self.out_channels
        x_src, x_dst = split_pair(x)
        return self.lin_query(x_dst).view(-1, H, C), self.lin_key(x_src).view(-1, H, C)

    def forward(self, x: Union[Tensor, PairTensor], edge_index: Adj, edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, prepared: bool = False) -> AttentionGraph:
        # ``prepared``: the caller (the conv) has already run ``check_inputs`` and ``prepare_edges``.
        x_src, x_dst = split_pair(x)
        num_nodes = x_dst.size(0)
        if not prepared:
            edge_index, edge_attr = self.check_inputs(x, edge_index, edge_attr)
            size = num_nodes if isinstance(x, Tensor) else (x_src.size(0), num_nodes)
            edge_index, edge_attr = self.prepare_edges(edge_index, size, edge_attr)
        query, key = self.project(x)
        alpha = self.normalize(self.scores(query, key, edge_index, edge_attr), edge_index, num_nodes)
        # A bipartite graph's node ids run over both sides (NeighborLoader's layout: the targets are the first
        # sources), so the graph has max(N_src, N_dst) nodes, the targets the only ones with incoming edges.
        return AttentionGraph(edge_index, alpha, max(num_nodes, x_src.size(0)), batch)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'add_self_loops={self.add_self_loops}' + (', uniform_init=True' if self.uniform_init else '') + ')')


def target_sorted_edges(edge_index: EdgeIndex, num_nodes: NodeSize, edge_attr: Optional[Tensor] = None,
                        self_loops: bool = True,
                        fill_value: Union[float, Tensor, str] = 'mean') -> Tuple[Tensor, Optional[Tensor]]:
    r"""The edges of ``edge_index`` sorted by target, as a plain ``[2, E']`` tensor, with (``self_loops``) the
    self-loops replaced by one per node ``i < min(N_src, N_dst)`` placed after each node's other incoming edges, and
    the features ``edge_attr`` permuted alike (``fill_value`` for the new loops, as ``add_self_loops`` gives them).

    Sorting uses the ``EdgeIndex``'s own: none when it is sorted by target, its cached transpose when sorted by
    source (computed once per object), a sort otherwise; the loops are inserted by their positions in ``O(E)``."""
    num_src, num_dst = (num_nodes, num_nodes) if isinstance(num_nodes, int) else num_nodes
    edge_index, perm = edge_index.sort_by('col')
    index = edge_index.as_tensor()
    if perm is not None and edge_attr is not None:
        edge_attr = edge_attr.index_select(0, perm)
    if not self_loops:
        return index, edge_attr
    keep = index[0] != index[1]
    index = index[:, keep]
    edge_attr = edge_attr[keep] if edge_attr is not None else None
    num_loops, num_edges, dst = min(num_src, num_dst), index.size(1), index[1]
    loops = torch.arange(num_loops, device=index.device)
    # Edge k (target d) moves past the loops of the nodes before d; loop i follows the edges into nodes <= i.
    edge_pos = torch.arange(num_edges, device=index.device) + dst.clamp(max=num_loops)
    loop_pos = torch.bincount(dst, minlength=num_dst)[:num_loops].cumsum(0) + loops
    out = index.new_empty(2, num_edges + num_loops)
    out[:, edge_pos] = index
    out[:, loop_pos] = loops
    if edge_attr is not None:
        loop_attr = compute_loop_attr(index, edge_attr, num_loops, False, fill_value)
        attr = edge_attr.new_empty((num_edges + num_loops,) + tuple(edge_attr.shape[1:]))
        attr[edge_pos] = edge_attr
        attr[loop_pos] = loop_attr.to(edge_attr.dtype)
        edge_attr = attr
    return out, edge_attr


def bipartite_edge_index(edge_index: Adj, num_src: int, num_dst: int) -> Tensor:
    r"""``edge_index [2, E]`` int64 of a bipartite graph from a ``[2, E]`` tensor (sources in ``[0, num_src)``,
    targets in ``[0, num_dst)``) or a sparse ``[num_dst, num_src]`` adjacency (PyG's ``adj_t``: entry ``[i, j]`` is
    the edge ``j -> i``; its pattern only); checked outside ``torch.compile``."""
    if isinstance(edge_index, SparseTensor):
        shape = tuple(edge_index.sizes())
        row, col, _ = edge_index.coo()
        index = torch.stack([col, row], dim=0)
    elif isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index):
        shape = tuple(edge_index.shape)
        index = to_edge_index(edge_index)[0].flip(0)
    else:
        if checking():
            check_edge_index(edge_index, num_src, num_dst)
        return edge_index.long()
    if checking() and shape != (num_dst, num_src):
        raise ValueError(f"'edge_index' must be a [{num_dst}, {num_src}] adjacency (targets x sources; got {shape})")
    return index.long()
