r"""Candidate edge sets: the one place where pyg-ple decides who may attend to whom.

Convention, everywhere in pyg-ple: ``edge_index[0]`` holds the source ``j`` and ``edge_index[1]`` the target ``i`` of
an edge ``j -> i``, and node ``i`` aggregates from ``j``. Row ``i`` of a dense adjacency or attention matrix therefore
holds the weights of the edges *into* ``i`` (this is PyG's ``flow='source_to_target'``).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.typing import Adj, SparseTensor
from torch_geometric.utils import coalesce, is_torch_sparse_tensor, remove_self_loops, to_dense_batch, to_edge_index

from pyg_ple.validation import check_batch, check_edge_index, check_once, check_same_graph, checking

EDGE_KINDS = ('native', 'full', 'native+full', 'knn')


def sequence_edge_index(
    num_tokens: int,
    batch_size: int = 1,
    causal: bool = False,
    window: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    r"""Every allowed edge ``j -> i`` of ``batch_size`` token sequences of length ``num_tokens``.

    Token ``t`` of sequence ``b`` is node ``b * num_tokens + t``. Self-loops are included. With ``causal=True``
    token ``i`` sees ``j <= i``; with ``window=w`` it sees tokens at most ``w`` positions away (``i - w <= j`` when
    causal). Edges are sorted by target, then source.

    Returns:
        ``LongTensor`` of shape ``[2, batch_size * E_seq]``.
    """
    if not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"'num_tokens' must be a non-negative int (got {num_tokens!r})")
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"'batch_size' must be a non-negative int (got {batch_size!r})")
    if window is not None and (not isinstance(window, int) or window < 0):
        raise ValueError(f"'window' must be None or a non-negative int (got {window!r})")
    # Token i sees the contiguous source range [low_i, high_i]: built per target in O(edges) memory.
    T = num_tokens
    reach = T if window is None else min(window, T)  # how far back (and, unless causal, forward) a token sees
    pos = torch.arange(T, device=device)
    low = (pos - reach).clamp_min(0)
    high = pos if causal else (pos + reach).clamp_max(max(T - 1, 0))
    counts = high - low + 1
    # Edges per sequence, counted without reading the device: sum_i (min(i, r) + 1) causal, twice that minus T not.
    r = min(reach, max(T - 1, 0))
    backward = r * (r + 1) // 2 + (T - r) * (r + 1) if T > 0 else 0
    num_edges = backward if causal else 2 * backward - T
    dst = pos.repeat_interleave(counts, output_size=num_edges)
    first = torch.cumsum(counts, 0) - counts  # position of each target's first edge
    src = torch.arange(num_edges, device=device) - (first - low).repeat_interleave(counts, output_size=num_edges)
    shift = (torch.arange(batch_size, device=device) * T).repeat_interleave(num_edges)
    src = src.repeat(batch_size) + shift
    dst = dst.repeat(batch_size) + shift
    return torch.stack([src, dst], dim=0)


def _graph_sizes(batch: Optional[Tensor], num_nodes: Optional[int]) -> Tensor:
    if num_nodes is not None and (not isinstance(num_nodes, int) or num_nodes < 0):
        raise ValueError(f"'num_nodes' must be a non-negative int (got {num_nodes!r})")
    if batch is None:
        if num_nodes is None:
            raise ValueError("pass 'batch' or 'num_nodes' to define the graphs")
        return torch.tensor([num_nodes])
    if isinstance(batch, Tensor) and num_nodes is not None and batch.numel() != num_nodes:
        raise ValueError(f"'num_nodes' is {num_nodes} but 'batch' assigns {batch.numel()} nodes")
    check_batch(batch, batch.numel())
    if batch.numel() == 0:
        return batch.new_zeros(0)
    return torch.bincount(batch)


def full_edge_index(
    batch: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
    self_loops: bool = True,
) -> Tensor:
    r"""All pairs ``j -> i`` within each graph of a batch (full attention), sorted by target.

    Args:
        batch: graph assignment ``[N]``, sorted as in a PyG ``Batch``. ``None`` means one graph of ``num_nodes``.
        self_loops: keep the ``i -> i`` pairs.
    """
    sizes = _graph_sizes(batch, num_nodes)
    device = batch.device if batch is not None else None
    sizes = sizes.to(device)
    starts = torch.cumsum(sizes, 0) - sizes
    # Each node i of a graph of size n contributes n edges, one from every node j of its graph.
    node_graph_size = sizes.repeat_interleave(sizes)
    node_start = starts.repeat_interleave(sizes)
    dst = torch.arange(int(sizes.sum()), device=device).repeat_interleave(node_graph_size)
    edge_start = torch.cumsum(node_graph_size, 0) - node_graph_size
    within = torch.arange(dst.numel(), device=device) - edge_start.repeat_interleave(node_graph_size)
    src = node_start.repeat_interleave(node_graph_size) + within
    edge_index = torch.stack([src, dst], dim=0)
    if not self_loops:
        edge_index, _ = remove_self_loops(edge_index)
    return edge_index


def native_plus_full_edge_index(
    edge_index: Tensor,
    batch: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    r"""All pairs within each graph, with a flag saying which of them are native edges.

    The union of the native edges and full attention is full attention; what it adds is ``is_native`` (``[E]``,
    bool), which a layer can read as an edge feature (``edge_attr=is_native.float()`` with ``edge_dim=1``) to tell
    local from global pairs.
    """
    full, pos = _native_pairs(edge_index, batch, num_nodes)
    is_native = torch.zeros(full.size(1), dtype=torch.bool, device=full.device)
    is_native[pos] = True
    return full, is_native


def all_pairs_edge_attr(
    edge_index: Tensor,
    edge_attr: Tensor,
    batch: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    r"""All pairs within each graph (:func:`full_edge_index`, self pairs included) with the features of the native
    edges ``edge_index`` added onto their pair and zeros on every other pair: the listed form of what
    :meth:`~pyg_ple.LaplacianDiffusionConv.forward_all_pairs` attends over (``[2, P]``, ``[P, D]``, with
    ``P = sum_g n_g^2``: for inspection and tests, not for training on large graphs)."""
    full, pos = _native_pairs(edge_index, batch, num_nodes)
    edge_attr = edge_attr.view(edge_index.size(1), -1)
    return full, edge_attr.new_zeros(full.size(1), edge_attr.size(1)).index_add_(0, pos, edge_attr)


def _native_pairs(edge_index: Tensor, batch: Optional[Tensor], num_nodes: Optional[int]) -> Tuple[Tensor, Tensor]:
    """All pairs within each graph and the position of every native edge among them, the inputs checked."""
    if num_nodes is None:
        num_nodes = batch.numel() if batch is not None else None
    if num_nodes is None:
        raise ValueError("pass 'batch' or 'num_nodes' to define the graphs")
    check_edge_index(edge_index, num_nodes)
    if batch is not None:
        check_batch(batch, num_nodes)
        check_same_graph(edge_index, batch)
    full = full_edge_index(batch, num_nodes)
    return full, full_pair_position(full, edge_index, num_nodes)


def full_pair_position(full: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""The position in ``full`` (the output of :func:`full_edge_index`) of every edge of ``edge_index`` (``[E]``,
    int64), so that ``full[:, pos]`` equals ``edge_index``. Each edge must join two nodes of the same graph (the
    checks of :func:`native_plus_full_edge_index` ensure it). Features of the native edges move onto the all-pairs
    list with it: ``torch.zeros(full.size(1), D).index_add_(0, pos, edge_attr)``."""
    # Key every pair by target * N + source: full_edge_index lists its pairs sorted by target, then source.
    full_key = full[1] * num_nodes + full[0]
    return torch.searchsorted(full_key, edge_index[1].long() * num_nodes + edge_index[0].long())


def knn_edge_index(x: Tensor, k: int, batch: Optional[Tensor] = None, self_loops: bool = False) -> Tensor:
    r"""Edges ``j -> i`` from the ``k`` nearest neighbours ``j`` of each node ``i`` (Euclidean, within its graph).

    Works without ``torch-cluster``: distances are computed per graph on a padded dense batch, so memory grows as
    ``B * N_max^2``. Nodes of graphs smaller than ``k + 1`` get every other node of their graph.
    """
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"'x' must be a 2-D tensor [N, F] (got {getattr(x, 'shape', type(x))})")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"'k' must be a positive int (got {k!r})")
    if batch is not None:
        check_batch(batch, x.size(0))
    if x.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    dense, mask = to_dense_batch(x, batch)  # [B, M, F], [B, M]
    dist = torch.cdist(dense.float(), dense.float())  # [B, M, M]; dist[b, i, j]
    invalid = ~(mask.unsqueeze(1) & mask.unsqueeze(2))
    if not self_loops:
        invalid |= torch.eye(mask.size(1), dtype=torch.bool, device=x.device)
    dist = dist.masked_fill(invalid, float('inf'))
    kk = min(k, mask.size(1))
    values, nbr = dist.topk(kk, dim=-1, largest=False)  # [B, M, kk]
    keep = torch.isfinite(values) & mask.unsqueeze(-1)
    # Map (graph, position) back to global node ids.
    counts = mask.sum(1)
    starts = torch.cumsum(counts, 0) - counts
    b = torch.arange(mask.size(0), device=x.device).view(-1, 1, 1).expand_as(nbr)
    i = torch.arange(mask.size(1), device=x.device).view(1, -1, 1).expand_as(nbr)
    src = (starts.view(-1, 1, 1) + nbr)[keep]
    dst = (starts[b] + i)[keep]
    return coalesce(torch.stack([src, dst], 0), num_nodes=x.size(0), sort_by_row=False)


def candidate_edge_index(
    kind: str,
    *,
    edge_index: Optional[Tensor] = None,
    batch: Optional[Tensor] = None,
    x: Optional[Tensor] = None,
    k: Optional[int] = None,
    num_nodes: Optional[int] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    r"""Build the candidate edge set named ``kind``: ``'native'``, ``'full'``, ``'native+full'`` or ``'knn'``.

    The number of nodes is ``num_nodes``, else ``x.size(0)``, else ``batch.numel()``; ``'native'`` checks
    ``edge_index`` against it (when known). Returns ``(edge_index, is_native)`` with int64 indices; ``is_native`` is a
    bool ``[E]`` for ``'native+full'`` and ``None`` else.
    """
    if num_nodes is None:
        if x is not None:
            num_nodes = x.size(0)
        elif batch is not None:
            num_nodes = batch.numel()
    if kind == 'native':
        if edge_index is None:
            raise ValueError("kind='native' needs 'edge_index'")
        check_edge_index(edge_index, num_nodes)
        return edge_index.long(), None
    if kind == 'full':
        return full_edge_index(batch, num_nodes), None
    if kind == 'native+full':
        if edge_index is None:
            raise ValueError("kind='native+full' needs 'edge_index'")
        return native_plus_full_edge_index(edge_index, batch, num_nodes)
    if kind == 'knn':
        if x is None or k is None:
            raise ValueError("kind='knn' needs 'x' and 'k'")
        return knn_edge_index(x, k, batch), None
    raise ValueError(f"'kind' must be one of {EDGE_KINDS} (got {kind!r})")


def as_edge_index(edge_index: Adj, num_nodes: int) -> Tuple[Tensor, Optional[Tensor]]:
    r"""``(edge_index [2, E] int64, values or None)`` from a ``[2, E]`` tensor (int64 or int32), a ``torch.sparse``
    adjacency or a ``torch_sparse.SparseTensor``.

    A sparse adjacency follows PyG's ``adj_t`` convention: entry ``[i, j]`` is the edge ``j -> i``. Outside
    ``torch.compile`` the shape and the index range are checked; a sparse adjacency whose values are not all one
    gives a ``UserWarning`` (attention uses its pattern only). Indices come back as int64 whatever they came in as
    (on CPU, index ops whose backward gathers with an int32 index give wrong gradients).
    """
    if isinstance(edge_index, SparseTensor):
        row, col, value = edge_index.coo()
        if checking():
            _check_adjacency(tuple(edge_index.sizes()), value, num_nodes)
        return torch.stack([col, row], dim=0).long(), value
    if isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index):
        index, value = to_edge_index(edge_index)
        if checking():
            check_once('adjacency', (edge_index,), (num_nodes,),
                       lambda: _check_adjacency(tuple(edge_index.shape), value, num_nodes))
        return index.flip(0).long(), value
    if checking():
        check_edge_index(edge_index, num_nodes)
    return edge_index.long(), None


def _check_adjacency(shape: Tuple[int, ...], value: Optional[Tensor], num_nodes: int) -> None:
    if shape != (num_nodes, num_nodes):
        raise ValueError(f"'edge_index' must be a [{num_nodes}, {num_nodes}] adjacency (got {shape})")
    if value is not None and value.numel() > 0 and bool((value != 1).any()):
        warnings.warn("'edge_index' is a weighted sparse adjacency, but attention uses its pattern only and ignores "
                      "the values; for a fixed weighted graph pass 'edge_index' as a [2, E] tensor and the weights "
                      "as 'edge_weight'", UserWarning)


def has_incoming_edge(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""Bool ``[num_nodes]``: whether node ``i`` is the target of at least one edge of ``edge_index``."""
    mask = torch.zeros(num_nodes, dtype=torch.bool, device=edge_index.device)
    return mask.index_fill_(0, edge_index[1], True)
