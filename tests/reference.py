"""Independent dense reference implementations, written from the math.

Nothing here imports ``pyg_ple``: the reference only reads the weights of the
module under test (``lin_query``, ``lin_key``, ``lin_value``, ``lin_edge``,
``bias``, ``eta``) and recomputes the layer with explicit ``[N, N]`` matrices
in float64.

Edge convention: ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the
target ``i``; the dense matrix has ``M[i, j] = 1`` for an edge ``j -> i``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

DTYPE = torch.float64


def linear(lin: torch.nn.Module, x: Tensor) -> Tensor:
    """``x W^T + b`` computed from the module's raw parameters in float64."""
    w = lin.weight.detach().to(DTYPE)
    out = x.to(DTYPE) @ w.t()
    b = getattr(lin, 'bias', None)
    if b is not None:
        out = out + b.detach().to(DTYPE)
    return out


def edge_mask(edge_index: Tensor, num_nodes: int,
              add_self_loops: bool = False) -> Tensor:
    """Boolean ``[N, N]`` with ``M[i, j]`` True for an edge ``j -> i``."""
    m = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    if edge_index.numel() > 0:
        m[edge_index[1], edge_index[0]] = True
    if add_self_loops:
        m |= torch.eye(num_nodes, dtype=torch.bool)
    return m


def dense_weight(edge_index: Tensor, edge_weight: Tensor,
                 num_nodes: int) -> Tensor:
    """``W[i, j]`` = weight of edge ``j -> i`` (duplicates summed)."""
    w = torch.zeros(num_nodes, num_nodes, dtype=DTYPE)
    w.index_put_((edge_index[1], edge_index[0]), edge_weight.to(DTYPE),
                 accumulate=True)
    return w


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Row softmax of ``scores [..., N, M]`` restricted to ``mask``.

    Rows without any allowed entry are all zero.
    """
    s = scores.masked_fill(~mask, float('-inf'))
    row_max = s.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max,
                          torch.zeros_like(row_max))
    e = torch.exp(s - row_max) * mask
    denom = e.sum(dim=-1, keepdim=True)
    return torch.where(denom > 0, e / denom.clamp_min(1e-300),
                       torch.zeros_like(e))


def laplacian_head_mask(heads: int, laplacian_heads: Optional[int]) -> Tensor:
    """The LAST ``laplacian_heads`` heads are Laplacian; None means all."""
    k = heads if laplacian_heads is None else laplacian_heads
    m = torch.zeros(heads, dtype=torch.bool)
    if k > 0:
        m[heads - k:] = True
    return m


def attention_matrices(q: Tensor, k: Tensor, mask: Tensor,
                       edge_scores: Optional[Tensor] = None) -> Tensor:
    """Per-head dense attention ``A [H, N, N]``.

    q, k: ``[N, H, C]``; mask: ``[N, N]`` bool; edge_scores: optional additive
    score term ``[H, N, N]`` (already divided by whatever the layer divides).
    """
    c = q.size(-1)
    scores = torch.einsum('ihc,jhc->hij', q, k) / math.sqrt(c)
    if edge_scores is not None:
        scores = scores + edge_scores
    return masked_softmax(scores, mask.unsqueeze(0))


def diffuse(a: Tensor, v: Tensor, lap_mask: Tensor, eta: Tensor,
            mask: Tensor, edge_values: Optional[Tensor] = None) -> Tensor:
    """Per-head update ``[N, H, C]``.

    Plain head: ``A V``. Laplacian head: ``eta (A V - V) = -eta (I - A) V``.
    A row without any allowed key gets a zero update on every head. With
    ``edge_values [N, N, H, C]`` (``u[i, j]`` of edge ``j -> i``) the messages
    are ``v_j + u_ij``: ``A V`` gains ``sum_j a_ij u_ij``.
    """
    av = torch.einsum('hij,jhc->ihc', a, v)
    if edge_values is not None:
        av = av + torch.einsum('hij,ijhc->ihc', a, edge_values)
    has_in = mask.any(dim=-1)  # [N]
    lap = av - v
    lap = lap * eta.view(1, -1, 1).to(DTYPE)
    out = torch.where(lap_mask.view(1, -1, 1), lap, av)
    return out * has_in.view(-1, 1, 1)


def combine_heads(out: Tensor, concat: bool,
                  bias: Optional[Tensor]) -> Tensor:
    """``[N, H, C]`` -> ``[N, H*C]`` (concat) or mean over heads, + bias."""
    n, h, c = out.shape
    res = out.reshape(n, h * c) if concat else out.mean(dim=1)
    if bias is not None:
        res = res + bias.detach().to(DTYPE)
    return res


def project_qkv(conv, x: Tensor):
    """q, k, v ``[N, H, C]`` from the conv's own projections, float64."""
    h = conv.heads
    n = x.size(0)
    q = linear(conv.lin_query, x).view(n, h, -1)
    k = linear(conv.lin_key, x).view(n, h, -1)
    v = linear(conv.lin_value, x).view(n, h, -1)
    return q, k, v


def degree_conductance(deg_coef: Tensor, mask: Tensor, heads: int, form: str = 'log') -> Tensor:
    """``s(d_i) = theta_1 + theta_2 log(1 + d_i)`` (``form='log'``) or
    ``theta_1 + theta_2 d_i`` (``form='linear'``) per channel, ``[N, H, C]``,
    with ``d_i`` the number of allowed keys of row ``i`` of ``mask``.

    ``deg_coef [2, H*C]`` is not detached: gradients flow into it.
    """
    d = mask.sum(dim=-1).to(DTYPE)
    g = {'log': torch.log(1.0 + d), 'linear': d}[form]
    coef = deg_coef.to(DTYPE)
    s = coef[0].unsqueeze(0) + g.unsqueeze(1) * coef[1]
    return s.view(mask.size(0), heads, -1)


def reference_learned(conv, x: Tensor, edge_index: Tensor, *,
                      laplacian_heads: Optional[int], add_self_loops: bool,
                      concat: bool = True, edge_scores: Optional[Tensor] = None,
                      eta: Optional[Tensor] = None,
                      deg_coef: Optional[Tensor] = None, scaler_form: str = 'log') -> Tensor:
    """Learned-attention layer output, float64, from explicit matrices.

    With ``deg_coef`` each head's update is multiplied by the degree
    conductance :func:`degree_conductance` of ``scaler_form`` (before heads
    are merged).
    """
    n = x.size(0)
    q, k, v = project_qkv(conv, x)
    ei = edge_index
    if add_self_loops:  # self-loops removed and re-added, as GATConv
        ei = ei[:, ei[0] != ei[1]]
    mask = edge_mask(ei, n, add_self_loops=add_self_loops)
    a = attention_matrices(q, k, mask, edge_scores)
    lap = laplacian_head_mask(conv.heads, laplacian_heads)
    if eta is None:
        eta = conv.eta.detach()
    out = diffuse(a, v, lap, eta, mask)
    if deg_coef is not None:
        out = out * degree_conductance(deg_coef, mask, conv.heads, scaler_form)
    return combine_heads(out, concat, getattr(conv, 'bias', None))


def reference_learned_edge(conv, x: Tensor, edge_index: Tensor,
                           edge_attr: Tensor, *,
                           laplacian_heads: Optional[int],
                           add_self_loops: bool, concat: bool = True,
                           edge_values: bool = False) -> Tensor:
    """Learned layer with an edge term, float64.

    The edge term enters the score: ``q_i . (k_j + e_ij) / sqrt(C)``
    with ``e = edge_attr W_e`` (``conv.attention.lin_edge``); with
    ``edge_values`` also the messages: ``v_j + u_ij`` with
    ``u = edge_attr W_u`` (``conv.lin_edge_value``).  When self-loops
    are added, the self-loop's edge feature is the mean of the node's incoming
    edge features (zero without any), as ``GATConv`` does (``fill_value=
    'mean'``). ``edge_index`` must not contain duplicates.
    """
    n = x.size(0)
    h = conv.heads
    q, k, v = project_qkv(conv, x)
    c = q.size(-1)
    ea = edge_attr.to(DTYPE)
    ei = edge_index
    if add_self_loops:
        keep = ei[0] != ei[1]
        ei, ea = ei[:, keep], ea[keep]
    d = ea.size(1)
    attr = torch.zeros(n, n, d, dtype=DTYPE)  # attr[i, j] of edge j -> i
    attr[ei[1], ei[0]] = ea
    mask = edge_mask(ei, n, add_self_loops=add_self_loops)
    if add_self_loops:
        for i in range(n):
            inc = ea[ei[1] == i]
            attr[i, i] = inc.mean(0) if inc.size(0) > 0 else 0.0
    e = linear(conv.attention.lin_edge, attr.view(n * n, d)).view(n, n, h, c)
    edge_scores = torch.einsum('ihc,ijhc->hij', q, e) / math.sqrt(c)
    a = attention_matrices(q, k, mask, edge_scores)
    lap = laplacian_head_mask(h, laplacian_heads)
    u = linear(conv.lin_edge_value, attr.view(n * n, d)).view(n, n, h, c) if edge_values else None
    out = diffuse(a, v, lap, conv.eta.detach(), mask, edge_values=u)
    return combine_heads(out, concat, getattr(conv, 'bias', None))


# --------------------------------------------------------------------------
# Fixed-graph Laplacians.
# --------------------------------------------------------------------------
def laplacian_dense(w: Tensor, normalization: str) -> Tensor:
    """Laplacian of the dense weight matrix ``W [N, N]`` (``W[i, j]``: j->i).

    ``D`` is the weighted in-degree (row sums); rows with ``D = 0`` are zero,
    as in networkx.
    """
    w = w.to(DTYPE)
    n = w.size(0)
    d = w.sum(dim=1)
    has = d > 0
    eye = torch.diag(has.to(DTYPE))
    if normalization == 'comb':
        return torch.diag(d) - w
    if normalization == 'rw':
        dinv = torch.where(has, 1.0 / d.clamp_min(1e-300), torch.zeros_like(d))
        return eye - dinv.view(n, 1) * w
    if normalization == 'sym':
        dis = torch.where(has, d.clamp_min(1e-300).rsqrt(), torch.zeros_like(d))
        return eye - dis.view(n, 1) * w * dis.view(1, n)
    raise ValueError(normalization)


def reference_fixed(conv, x: Tensor, edge_index: Tensor, edge_weight: Tensor,
                    normalization: str, concat: bool = True,
                    lap: Optional[Tensor] = None) -> Tensor:
    """``-eta L V`` per head, with ``L`` from ``laplacian_dense`` or given."""
    n = x.size(0)
    _, _, v = project_qkv(conv, x)
    if lap is None:
        lap = laplacian_dense(dense_weight(edge_index, edge_weight, n),
                              normalization)
    eta = conv.eta.detach().to(DTYPE).view(1, -1, 1)
    out = -eta * torch.einsum('ij,jhc->ihc', lap.to(DTYPE), v)
    return combine_heads(out, concat, getattr(conv, 'bias', None))


# --------------------------------------------------------------------------
# Random test graphs.
# --------------------------------------------------------------------------
def random_graph(num_nodes: int, num_edges: int, *, seed: int = 0,
                 allow_self_loops: bool = False,
                 generator: torch.Generator = None) -> torch.Tensor:
    """Random directed graph without duplicate edges, ``[2, E]`` long."""
    g = generator or torch.Generator().manual_seed(seed)
    pairs = set()
    max_edges = num_nodes * num_nodes if allow_self_loops else \
        num_nodes * (num_nodes - 1)
    num_edges = min(num_edges, max_edges)
    while len(pairs) < num_edges:
        j, i = torch.randint(num_nodes, (2, ), generator=g).tolist()
        if i == j and not allow_self_loops:
            continue
        pairs.add((j, i))
    if not pairs:
        return torch.empty(2, 0, dtype=torch.long)
    return torch.tensor(sorted(pairs), dtype=torch.long).t().contiguous()


def undirected_graph(num_nodes: int, num_edges: int, *, seed: int = 0,
                     isolated: int = 0):
    """Random undirected weighted graph (both directions, same weight).

    The last ``isolated`` nodes have no edge at all.
    Returns ``(edge_index [2, E], edge_weight [E])``.
    """
    g = torch.Generator().manual_seed(seed)
    n_conn = num_nodes - isolated
    pairs = {}
    tries = 0
    while len(pairs) < num_edges and tries < 10000:
        tries += 1
        a, b = torch.randint(n_conn, (2, ), generator=g).tolist()
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if key not in pairs:
            pairs[key] = float(torch.rand(1, generator=g)) * 2 + 0.1
    src, dst, w = [], [], []
    for (a, b), wt in sorted(pairs.items()):
        src += [a, b]
        dst += [b, a]
        w += [wt, wt]
    ei = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    return ei, torch.tensor(w, dtype=torch.float64)
