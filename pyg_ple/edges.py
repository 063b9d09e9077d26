r"""Candidate edge sets: the one place where pyg-ple decides who may attend to whom.

Convention, everywhere in pyg-ple: ``edge_index[0]`` holds the source ``j`` and ``edge_index[1]`` the target ``i`` of
an edge ``j -> i``, and node ``i`` aggregates from ``j``. Row ``i`` of a dense adjacency or attention matrix therefore
holds the weights of the edges *into* ``i`` (this is PyG's ``flow='source_to_target'``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.typing import Adj, SparseTensor
from torch_geometric.utils import coalesce, is_torch_sparse_tensor, remove_self_loops, to_dense_batch, to_edge_index

from pyg_ple.validation import check_batch, check_edge_index, check_features, check_finite, check_same_graph, checking

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
    pos = torch.arange(num_tokens, device=device)
    allowed = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)  # allowed[i, j]
    offset = pos.view(-1, 1) - pos.view(1, -1)  # i - j
    if causal:
        allowed &= offset >= 0
    if window is not None:
        allowed &= offset.abs() <= window
    dst, src = allowed.nonzero(as_tuple=True)
    shift = (torch.arange(batch_size, device=device) * num_tokens).repeat_interleave(src.numel())
    src = src.repeat(batch_size) + shift
    dst = dst.repeat(batch_size) + shift
    return torch.stack([src, dst], dim=0)


def _graph_sizes(batch: Optional[Tensor], num_nodes: Optional[int]) -> Tensor:
    if batch is None:
        if num_nodes is None:
            raise ValueError("pass 'batch' or 'num_nodes' to define the graphs")
        return torch.tensor([num_nodes])
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
    bool), which a layer can read as an edge feature (``edge_dim=1``) to tell local from global pairs.
    """
    if num_nodes is None:
        num_nodes = batch.numel() if batch is not None else None
    if num_nodes is None:
        raise ValueError("pass 'batch' or 'num_nodes' to define the graphs")
    check_edge_index(edge_index, num_nodes)
    if batch is not None:
        check_batch(batch, num_nodes)
        check_same_graph(edge_index, batch)
    full = full_edge_index(batch, num_nodes)
    native = coalesce(edge_index, num_nodes=num_nodes)
    # Key every pair by target * N + source; full pairs sorted by target then source are sorted by that key.
    full_key = full[1] * num_nodes + full[0]
    native_key = native[1] * num_nodes + native[0]
    pos = torch.searchsorted(full_key, native_key)
    is_native = torch.zeros(full.size(1), dtype=torch.bool, device=full.device)
    is_native[pos] = True
    return full, is_native


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

    Returns ``(edge_index, is_native)``; ``is_native`` is a bool ``[E]`` for ``'native+full'`` and ``None`` else.
    """
    if num_nodes is None:
        if x is not None:
            num_nodes = x.size(0)
        elif batch is not None:
            num_nodes = batch.numel()
    if kind == 'native':
        if edge_index is None:
            raise ValueError("kind='native' needs 'edge_index'")
        return edge_index, None
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


def as_edge_index(edge_index: Adj, num_nodes: int, in_channels: Optional[int] = None,
                  x: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    r"""``(edge_index [2, E], values or None)`` from a ``[2, E]`` tensor, a ``torch.sparse`` adjacency or a
    ``torch_sparse.SparseTensor``.

    A sparse adjacency follows PyG's ``adj_t`` convention: entry ``[i, j]`` is the edge ``j -> i``.
    Checks (outside ``torch.compile``) that indices are in range and that ``x`` has ``in_channels`` features.
    """
    if checking() and x is not None and in_channels is not None:
        check_features(x, in_channels)
        check_finite(x, 'x')
    if isinstance(edge_index, SparseTensor):
        row, col, value = edge_index.coo()
        if checking() and (edge_index.size(0) != num_nodes or edge_index.size(1) != num_nodes):
            raise ValueError(f"'edge_index' must be a [{num_nodes}, {num_nodes}] adjacency "
                             f"(got {tuple(edge_index.sizes())})")
        return torch.stack([col, row], dim=0), value
    if isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index):
        if checking() and (edge_index.size(0) != num_nodes or edge_index.size(1) != num_nodes):
            raise ValueError(f"'edge_index' must be a [{num_nodes}, {num_nodes}] adjacency "
                             f"(got {tuple(edge_index.shape)})")
        index, value = to_edge_index(edge_index)
        return index.flip(0), value
    if checking():
        check_edge_index(edge_index, num_nodes)
    return edge_index, None
