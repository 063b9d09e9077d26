r"""The degree scaler of :class:`~pyg_ple.LaplacianDiffusionConv`: a learned, per-channel conductance
:math:`s(d_i) = \theta_1 + \theta_2 \log(1 + d_i)` of the number of keys ``d_i`` a node attends over (the degree
scaler of GRIT, Ma et al. 2023)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.utils import degree


def degree_scale(deg_coef: Tensor, num_keys: Tensor, heads: int) -> Tensor:
    r"""``s(d) = deg_coef[0] + deg_coef[1] * log(1 + d)`` for ``num_keys d [...]`` and ``deg_coef [2, H * C]``,
    returned as ``[..., H, C]``."""
    scale = deg_coef[0] + deg_coef[1] * torch.log1p(num_keys.to(deg_coef.dtype)).unsqueeze(-1)
    return scale.view(num_keys.shape + (heads, -1))


def edge_key_count(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""``d_i``: the in-degree of each node in ``edge_index`` (the edges ``j -> i`` it attends over) ``[N]``."""
    return degree(edge_index[1], num_nodes)


def dense_key_count(allowed: Optional[Tensor], causal: bool, batch_size: int, num_tokens: int,
                    device: torch.device) -> Tensor:
    r"""``d_i`` on the dense path ``[B, T]``: the allowed keys of each query (``allowed [B, T, T]``, or all ``T``
    tokens, ``t + 1`` of them under ``causal``, when there is no mask)."""
    if allowed is not None:
        return allowed.sum(dim=-1)
    if causal:
        return torch.arange(1, num_tokens + 1, device=device).expand(batch_size, num_tokens)
    return torch.full((batch_size, num_tokens), num_tokens, device=device)
