r"""Attention over all node pairs within each graph of a batch, without padding every graph to the largest one and
without listing the pairs.

``all_pairs_attention`` computes, per head ``h`` and node ``i`` of graph ``g``::

    s_ij,h   = <q_i,h, k_j,h> / sqrt(C) + b_ij,h          (b: the score bias of the native edges j -> i, else 0)
    alpha_ij = softmax_j over all nodes j of g of s_ij
    out_i,h  = sum_j alpha_ij,h v_j,h

Graphs are grouped into size buckets (:func:`size_buckets`: sorted by size, cut where padding a group to its own
largest graph costs more than one more call); each bucket is gathered into a ``[m, H, T, C]`` block padded to its
own largest graph and runs through ``scaled_dot_product_attention`` with a key-padding mask. Projections, norms and
MLPs stay on the ``N`` real rows; padding costs only attention pairs, ``sum_buckets m T^2`` instead of
``B * N_max^2`` (on batches of 128 Peptides-func graphs, 1.03x the real ``sum_g n_g^2`` pairs in about 25 buckets,
where padding to the largest graph gives 5.0x; mean over 50 batches drawn from the data's sizes).

Native-edge features enter the same softmax as an additive float mask of the bucket (``[m, H, T, T]``: the
key-padding ``-inf`` plus ``b_ij`` scattered at the native pairs), so no ``[sum_g n_g^2, F]`` tensor is formed; SDPA
differentiates through the mask, and the gradient of ``b`` is read back at the native pairs. The reference is the
per-edge path over :func:`pyg_ple.full_edge_index` (tests compare both, values and gradients).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['Bucket', 'size_buckets', 'graph_buckets', 'all_pairs_attention']

# The cost, in attention pairs, charged for one more bucket (one more gather and SDPA call) when choosing the cuts:
# on one CPU thread a pair costs ~70 ns (forward and backward at C = 32) and a call a few hundred microseconds.
BUCKET_CALL_PAIRS = 8192


class Bucket(NamedTuple):
    """Graphs of similar size gathered into one padded block.

    ``index [m, T]``: the node id at each (graph, position) of the block (padding points at the graph's first
    node and is masked); ``valid [m, T]``: real positions; ``graphs [m]``: the graphs' ids in the batch."""

    index: Tensor
    valid: Tensor
    graphs: Tensor


def size_buckets(sizes: Tensor, call_pairs: int = BUCKET_CALL_PAIRS) -> List[Tensor]:
    r"""Groups of graph ids (each sorted by size) minimising ``sum_groups (m T^2 + call_pairs)``, where ``m`` is the
    group's number of graphs and ``T`` its largest size: the padded pairs plus a fixed charge per group.

    Exact over contiguous groups of the graphs sorted by size (a dynamic programme over the cut points,
    ``O(B^2)``); empty graphs are left out."""
    order = torch.argsort(sizes.cpu(), stable=True)
    order = order[sizes.cpu()[order] > 0]
    s = sizes.cpu()[order].double().numpy()
    B = s.size
    if B == 0:
        return []
    best = np.zeros(B + 1)
    cut = np.zeros(B + 1, dtype=np.int64)
    for j in range(1, B + 1):  # best[j]: cost of the j smallest graphs; the last group is i..j-1, padded to s[j-1]
        i = np.arange(j)
        cost = best[:j] + (j - i) * s[j - 1] ** 2 + call_pairs
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    groups, j = [], B
    while j > 0:
        groups.append(order[cut[j]:j])
        j = int(cut[j])
    return [g.to(sizes.device) for g in reversed(groups)]


def graph_buckets(batch: Optional[Tensor], num_nodes: int, call_pairs: int = BUCKET_CALL_PAIRS) -> List[Bucket]:
    r"""The :class:`Bucket` blocks of the graphs of ``batch [N]`` (sorted, as in a PyG ``Batch``; ``None``: one
    graph of ``num_nodes`` nodes)."""
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long)
    sizes = torch.bincount(batch, minlength=1) if num_nodes else batch.new_zeros(0)
    starts = torch.cumsum(sizes, 0) - sizes
    buckets = []
    for graphs in size_buckets(sizes, call_pairs):
        n = sizes[graphs].view(-1, 1)
        positions = torch.arange(int(n.max()), device=batch.device)
        valid = positions < n
        index = torch.where(valid, starts[graphs].view(-1, 1) + positions, starts[graphs].view(-1, 1))
        buckets.append(Bucket(index, valid, graphs))
    return buckets


def all_pairs_attention(query: Tensor, key: Tensor, value: Tensor, batch: Optional[Tensor] = None,
                        edge_index: Optional[Tensor] = None, score_bias: Optional[Tensor] = None,
                        dropout: float = 0.0, training: bool = False,
                        buckets: Optional[List[Bucket]] = None) -> Tensor:
    r"""Softmax attention over all pairs within each graph (see the module docstring).

    Args:
        query, key, value: ``[N, H, C]``.
        batch: graph of each node ``[N]`` (sorted); ``None`` for one graph.
        edge_index: native edges ``j -> i`` ``[2, E]`` (within graphs) whose ``score_bias [E, H]`` is added to the
            score of their pair; repeated edges add up.
        dropout, training: attention dropout (in training only).
        buckets: the blocks of :func:`graph_buckets`, to reuse them across layers.

    Returns:
        ``[N, H, C]``.
    """
    N, H, C = query.shape
    if N == 0:
        return value.new_zeros(N, H, C)
    if buckets is None:
        buckets = graph_buckets(batch, N)
    if score_bias is not None:
        if edge_index is None:
            raise ValueError("'score_bias' needs the 'edge_index' of the pairs it belongs to")
        # Each native edge's block, row and positions, so that its bias lands on its pair of the padded block.
        block = torch.empty(N, dtype=torch.long, device=query.device)
        row = torch.empty(N, dtype=torch.long, device=query.device)
        position = torch.empty(N, dtype=torch.long, device=query.device)
        for b, bucket in enumerate(buckets):
            ids = bucket.index[bucket.valid]
            rows, positions = bucket.valid.nonzero(as_tuple=True)
            block[ids], row[ids], position[ids] = b, rows, positions
        src, dst = edge_index[0], edge_index[1]
        edge_block = block[dst]
    dropout = dropout if training else 0.0
    outputs, rows = [], []
    for b, bucket in enumerate(buckets):
        m, T = bucket.index.shape
        q, k, v = (t[bucket.index].transpose(1, 2) for t in (query, key, value))  # [m, H, T, C]
        key_valid = bucket.valid.view(m, 1, 1, T)
        if score_bias is None:
            mask = key_valid
        else:
            mine = (edge_block == b).nonzero().view(-1)
            d, s = dst[mine], src[mine]
            bias = query.new_zeros(m, T, T, H).index_put((row[d], position[d], position[s]),
                                                         score_bias[mine].to(query.dtype), accumulate=True)
            mask = bias.permute(0, 3, 1, 2).masked_fill(~key_valid, float('-inf'))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        outputs.append(out.transpose(1, 2)[bucket.valid])  # [n_b, H, C], the bucket's real rows
        rows.append(bucket.index[bucket.valid])
    return value.new_zeros(N, H, C).index_copy(0, torch.cat(rows), torch.cat(outputs))
