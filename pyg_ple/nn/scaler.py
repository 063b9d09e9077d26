r"""The degree scaler of :class:`~pyg_ple.LaplacianDiffusionConv`: a learned, per-channel conductance
:math:`s(d_i) = \theta_1 + \theta_2 g(d_i)` of the number of keys ``d_i`` a node attends over, with
:math:`g(d) = \log(1 + d)` (``True`` or ``'log'``: the degree scaler of GRIT, Ma et al. 2023) or :math:`g(d) = d`
(``'linear'``: at :math:`s(d_i) = d_i` a Laplacian head diffuses with the combinatorial Laplacian ``D - W`` of the
attention graph, edge weights :math:`d_i \alpha_{ij}`, instead of ``I - A``; CPA's cardinality-preserving attention,
Zhang & Xie 2020)."""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor
from torch_geometric.utils import degree

DEGREE_SCALERS = ('log', 'linear')


def check_degree_scaler(value: Any, name: str = 'degree_scaler') -> Union[bool, str]:
    r"""``value`` as a layer stores it: ``False`` (no scaler), ``True`` (``'log'``, the logarithmic form) or
    ``'linear'``; anything else raises a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(f"'{name}' must be True, False or one of {DEGREE_SCALERS} (got {value!r})")
    if value not in DEGREE_SCALERS:
        raise ValueError(f"'{name}' must be True, False or one of {DEGREE_SCALERS} (got {value!r})")
    return True if value == 'log' else value


def degree_scale(deg_coef: Tensor, num_keys: Tensor, heads: int, form: Union[bool, str] = True) -> Tensor:
    r"""``s(d) = deg_coef[0] + deg_coef[1] * g(d)`` for ``num_keys d [...]`` and ``deg_coef [2, H * C]``, with
    ``g = log1p`` (``form=True``) or the identity (``form='linear'``), returned as ``[..., H, C]``."""
    d = num_keys.to(deg_coef.dtype)
    g = d if form == 'linear' else torch.log1p(d)
    scale = deg_coef[0] + deg_coef[1] * g.unsqueeze(-1)
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
