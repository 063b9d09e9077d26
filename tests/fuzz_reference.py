"""Dense float64 references for the fuzz tests (``tests/test_fuzz.py``), built on ``tests/reference.py``.

``reference.py`` assumes edge sets without duplicates (it builds a boolean mask). The fuzzer also feeds duplicate
edges, and a sparse softmax over incoming edges counts a duplicated edge once per copy. Here the dense attention is
written with edge *multiplicities* ``C[i, j]`` (how many copies of ``j -> i``)::

    A[h, i, j] = C[i, j] exp(s[h, i, j]) / sum_j' C[i, j'] exp(s[h, i, j'])

which is the row softmax when ``C`` is 0/1. Nothing here imports ``pyg_ple``: only the modules' weights are read.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

import reference as ref

DTYPE = ref.DTYPE


def edge_counts(edge_index: Tensor, num_nodes: int, add_self_loops: bool) -> Tensor:
    """``C [N, N]`` (float64): ``C[i, j]`` = number of copies of ``j -> i``.

    With ``add_self_loops`` existing self-loops are dropped and exactly one is added per node (``GATConv`` style)."""
    ei = edge_index.long()
    if add_self_loops and ei.numel() > 0:
        ei = ei[:, ei[0] != ei[1]]
    counts = torch.zeros(num_nodes, num_nodes, dtype=DTYPE)
    if ei.numel() > 0:
        counts.index_put_((ei[1], ei[0]), torch.ones(ei.size(1), dtype=DTYPE), accumulate=True)
    if add_self_loops:
        counts += torch.eye(num_nodes, dtype=DTYPE)
    return counts


def weighted_softmax(scores: Tensor, counts: Tensor) -> Tensor:
    """Row softmax of ``scores [H, N, N]`` weighted by multiplicities ``counts [N, N]``; rows without entries are 0."""
    if scores.size(-1) == 0:
        return scores.clone()
    allowed = (counts > 0).unsqueeze(0)
    s = scores.masked_fill(~allowed, float('-inf'))
    row_max = s.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max) * counts.unsqueeze(0)
    denom = e.sum(dim=-1, keepdim=True)
    return torch.where(denom > 0, e / denom.clamp_min(1e-300), torch.zeros_like(e))


def project_qkv(conv, x: Tensor):
    """``reference.project_qkv`` that also works with zero nodes (its ``view(n, h, -1)`` cannot infer ``-1`` then)."""
    n, h, c = x.size(0), conv.heads, conv.out_channels
    return tuple(ref.linear(lin, x).view(n, h, c) for lin in (conv.lin_query, conv.lin_key, conv.lin_value))


def conv_from_counts(conv, x: Tensor, counts: Tensor) -> Tensor:
    """Learned-attention ``LaplacianDiffusionConv`` output ``[N, H*C]`` (or ``[N, C]``) over multiplicities ``counts``."""
    q, k, v = project_qkv(conv, x)
    c = q.size(-1)
    scores = torch.einsum('ihc,jhc->hij', q, k) / math.sqrt(c)
    a = weighted_softmax(scores, counts)
    lap = ref.laplacian_head_mask(conv.heads, conv.laplacian_heads)
    out = ref.diffuse(a, v, lap, conv.eta.detach(), counts > 0)
    return ref.combine_heads(out, conv.concat, getattr(conv, 'bias', None))


def max_logit(conv, x: Tensor, counts: Tensor) -> float:
    """Largest ``|q_i . k_j| / sqrt(C)`` over the allowed pairs (0 if there are none)."""
    if counts.numel() == 0 or not bool((counts > 0).any()):
        return 0.0
    q, k, _ = project_qkv(conv, x)
    scores = torch.einsum('ihc,jhc->hij', q, k) / math.sqrt(q.size(-1))
    return float(scores.abs().masked_fill(~(counts > 0).unsqueeze(0), 0).max())


def layer_norm(norm: torch.nn.LayerNorm, x: Tensor) -> Tensor:
    x = x.to(DTYPE)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    out = (x - mu) / torch.sqrt(var + norm.eps)
    return out * norm.weight.detach().to(DTYPE) + norm.bias.detach().to(DTYPE)


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def block_from_counts(block, x: Tensor, counts: Tensor) -> Tensor:
    """``PLETransformerBlock`` (pre-norm, eval mode) over nodes ``x [N, F]`` with attention multiplicities ``counts``:
    ``h = x + W_o conv(LN1(x))``, ``out = h + W_2 gelu(W_1 LN2(h))``."""
    x = x.to(DTYPE)
    update = conv_from_counts(block.conv, layer_norm(block.norm1, x), counts)
    h = x + ref.linear(block.proj, update)
    fc1, fc2 = block.mlp[0], block.mlp[-1]
    return h + ref.linear(fc2, gelu(ref.linear(fc1, layer_norm(block.norm2, h))))


def block_sparse_reference(block, x: Tensor, edge_index: Tensor) -> Tensor:
    counts = edge_counts(edge_index, x.size(0), block.conv.add_self_loops)
    return block_from_counts(block, x, counts)


def same_graph_counts(batch: Optional[Tensor], num_nodes: int) -> Tensor:
    """All pairs within each graph (self pairs included): the all-pairs path of the block."""
    if batch is None:
        return torch.ones(num_nodes, num_nodes, dtype=DTYPE)
    return (batch.view(-1, 1) == batch.view(1, -1)).to(DTYPE)


def sequence_counts(batch_size: int, num_tokens: int, pad: Optional[Tensor], causal: bool) -> Tensor:
    """Block-diagonal ``[B*T, B*T]`` allowed pairs of a token batch with padding mask ``pad [B, T]`` and ``causal``."""
    allowed = torch.ones(batch_size, num_tokens, num_tokens, dtype=torch.bool)
    if pad is not None:
        allowed &= pad.unsqueeze(1) & pad.unsqueeze(2)
    if causal:
        allowed &= torch.ones(num_tokens, num_tokens, dtype=torch.bool).tril()
    n = batch_size * num_tokens
    counts = torch.zeros(n, n, dtype=DTYPE)
    for b in range(batch_size):
        s = slice(b * num_tokens, (b + 1) * num_tokens)
        counts[s, s] = allowed[b].to(DTYPE)
    return counts
