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
key-padding ``-inf`` plus ``b_ij`` scattered at the native pairs), so no ``[sum_g n_g^2, F]`` tensor is formed. The
gradient of ``b`` is needed at the native pairs only: on CPU (``fused=True``, no attention dropout) the block runs
through the flash kernel, which returns the log-sum-exp ``L_i`` of each row, and the backward takes the kernel's
``dQ, dK, dV`` plus, per native pair,

    db_ij = alpha_ij (<dO_i, v_j> - <dO_i, O_i>),   alpha_ij = exp(s_ij - L_i),

a correction at the cost of the bonds. Elsewhere (CUDA, attention dropout, ``fused=False``) SDPA differentiates
through the whole mask. The reference is the per-edge path over :func:`pyg_ple.full_edge_index` (tests compare both,
values and gradients, and the two routes against each other).
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

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


def graph_buckets(batch: Optional[Tensor], num_nodes: int, call_pairs: int = BUCKET_CALL_PAIRS,
                  device: Optional[torch.device] = None) -> List[Bucket]:
    r"""The :class:`Bucket` blocks of the graphs of ``batch [N]`` (sorted, as in a PyG ``Batch``; ``None``: one
    graph of ``num_nodes`` nodes on ``device``). The cuts are chosen on the host: on CUDA this reads the graph sizes
    back once per call."""
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
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


class _FlashWithPairBias(torch.autograd.Function):
    """CPU flash attention of one bucket ``[m, H, T, C]`` under an additive mask whose gradient is wanted only at
    the listed pairs ``(row, i, j)`` that carry ``bias [P, H]`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, pair: Tuple[Tensor, Tensor, Tensor],
                key_valid: Tensor) -> Tensor:
        m, H, T, _ = q.shape
        # One pass to lay out the padding, then the bias added in place at its pairs (no gradient flows here).
        padding = q.new_zeros(m, 1, 1, T).masked_fill(~key_valid.view(m, 1, 1, T), float('-inf'))
        mask = padding.expand(m, H, T, T).contiguous()
        mask.permute(0, 2, 3, 1).index_put_(pair, bias.detach(), accumulate=True)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask)
        ctx.save_for_backward(q, k, v, out, lse, mask, *pair)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, out, lse, mask, row, i, j = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask)
        score = (q[row, :, i] * k[row, :, j]).sum(-1) / q.size(-1) ** 0.5 + mask[row, :, i, j]  # [P, H]
        alpha = torch.exp(score - lse[row, :, i])
        d_bias = alpha * ((grad_out[row, :, i] * (v[row, :, j] - out[row, :, i])).sum(-1))
        return dq, dk, dv, d_bias, None, None


def _bias_mask(bias: Tensor, pair: Tuple[Tensor, Tensor, Tensor], key_valid: Tensor, shape: torch.Size) -> Tensor:
    """The additive mask ``[m, H, T, T]``: ``bias`` summed onto its pairs, ``-inf`` at padded keys."""
    m, H, T, _ = shape
    mask = bias.new_zeros(m, T, T, H).index_put(pair, bias, accumulate=True).permute(0, 3, 1, 2)
    return mask.masked_fill(~key_valid.view(m, 1, 1, T), float('-inf')).contiguous()


def all_pairs_attention(query: Tensor, key: Tensor, value: Tensor, batch: Optional[Tensor] = None,
                        edge_index: Optional[Tensor] = None, score_bias: Optional[Tensor] = None,
                        dropout: float = 0.0, training: bool = False,
                        buckets: Optional[List[Bucket]] = None, fused: bool = True) -> Tensor:
    r"""Softmax attention over all pairs within each graph (see the module docstring).

    Args:
        query, key, value: ``[N, H, C]``.
        batch: graph of each node ``[N]`` (sorted); ``None`` for one graph.
        edge_index: native edges ``j -> i`` ``[2, E]`` (within graphs) whose ``score_bias [E, H]`` is added to the
            score of their pair; repeated edges add up.
        dropout, training: attention dropout (in training only).
        buckets: the blocks of :func:`graph_buckets`, to reuse them across layers.
        fused: with a score bias on CPU and no dropout, differentiate the bias at its pairs only (the flash
            kernel's log-sum-exp, first-order gradients); ``False``: SDPA through the whole mask.

    Returns:
        ``[N, H, C]``.
    """
    N, H, C = query.shape
    if N == 0:
        return value.new_zeros(N, H, C)
    if buckets is None:
        buckets = graph_buckets(batch, N, device=query.device)
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
    flash = (fused and dropout == 0.0 and query.device.type == 'cpu' and score_bias is not None
             and hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu'))  # a private op of torch
    outputs, rows = [], []
    for b, bucket in enumerate(buckets):
        m, T = bucket.index.shape
        q, k, v = (t[bucket.index].transpose(1, 2) for t in (query, key, value))  # [m, H, T, C]
        key_valid = bucket.valid.view(m, 1, 1, T)
        if score_bias is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid, dropout_p=dropout)
        else:
            mine = (edge_block == b).nonzero().view(-1)
            d, s = dst[mine], src[mine]
            pair, bias = (row[d], position[d], position[s]), score_bias[mine].to(query.dtype)
            if flash:
                out = _FlashWithPairBias.apply(q.contiguous(), k.contiguous(), v.contiguous(), bias, pair,
                                               bucket.valid)
            else:
                mask = _bias_mask(bias, pair, bucket.valid, q.shape)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        outputs.append(out.transpose(1, 2)[bucket.valid])  # [n_b, H, C], the bucket's real rows
        rows.append(bucket.index[bucket.valid])
    return value.new_zeros(N, H, C).index_copy(0, torch.cat(rows), torch.cat(outputs))
