r"""Graph measures of attention: what people ask of the attention of a transformer, computed on an
:class:`~pyg_ple.AttentionGraph` (one layer, all heads, a batch of graphs or sequences).

Throughout, :math:`A^{(h)}` is the attention matrix of head :math:`h` with :math:`A^{(h)}_{ij}` the weight of the edge
:math:`j \to i` (query :math:`i` attends to key :math:`j`), as :meth:`~pyg_ple.AttentionGraph.to_dense` returns it; a
learned attention graph is row-stochastic (every query's incoming weights sum to one). Duplicate edges are summed
first, as in ``to_dense`` and ``to_networkx``. A *query* is a node with at least one incoming edge; per-query
measures are ``nan`` at the other nodes (e.g. the padded tokens of :meth:`~pyg_ple.AttentionGraph.from_dense`), so
that ``torch.nanmean`` averages over the queries only.

* :func:`attention_entropy`: the entropy of every query's attention distribution.
* :func:`attention_distance`: how far every query looks, :math:`\sum_j A_{ij} |i - j|`.
* :func:`laplacian_spectrum` and :func:`spectral_gap`: the eigenvalues of the attention Laplacian :math:`I - A`
  per head, and how fast the diffusion :math:`x \mapsto A x` mixes.
* :func:`head_similarity`: how alike the heads of a layer attend (Jensen-Shannon or cosine).
* :func:`attention_rollout`: attention rolled out over a stack of layers (Abnar & Zuidema, 2020).
* :func:`attention_summary`: the per-head means of entropy, distance and spectral gap, layer by layer.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import coalesce, scatter

from pyg_ple.graph import AttentionGraph

__all__ = ['attention_entropy', 'attention_distance', 'laplacian_spectrum', 'spectral_gap', 'head_similarity',
           'attention_rollout', 'attention_summary']


def _check_graph(graph: AttentionGraph, name: str = 'graph') -> None:
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"'{name}' must be an AttentionGraph (got {type(graph).__name__})")


def _row_distributions(graph: AttentionGraph) -> Tuple[Tensor, Tensor, Tensor]:
    r"""``(edge_index, p, is_query)``: duplicates summed, every query's incoming weights divided by their sum per head
    (a row-stochastic graph is unchanged; a sparsified one is read as a distribution), ``is_query`` ``[N]``."""
    _check_graph(graph)
    N = graph.num_nodes
    edge_index, weight = coalesce(graph.edge_index, graph.weight, num_nodes=N, reduce='sum')
    dst = edge_index[1]
    total = scatter(weight, dst, dim=0, dim_size=N, reduce='sum')
    p = weight / total[dst]  # a query whose weights of a head sum to 0 gets nan there: it has no distribution
    is_query = torch.zeros(N, dtype=torch.bool, device=dst.device).index_fill_(0, dst, True)
    return edge_index, p, is_query


def _per_query(value: Tensor, is_query: Tensor) -> Tensor:
    return value.masked_fill(~is_query.unsqueeze(-1), float('nan'))


def attention_entropy(graph: AttentionGraph) -> Tensor:
    r"""The entropy of every query's attention, per head, in nats:

    .. math::
        H^{(h)}_i = -\sum_{j \to i} p^{(h)}_{ij} \log p^{(h)}_{ij}, \qquad
        p^{(h)}_{ij} = A^{(h)}_{ij} / \textstyle\sum_{k} A^{(h)}_{ik},

    with :math:`0 \log 0 = 0`; :math:`0` for a query attending to one key, :math:`\log n` for uniform attention over
    :math:`n` keys (divide by :math:`\log 2` for bits). Weights are read as they are (non-negative).

    Args:
        graph (AttentionGraph): the attention graph.

    Shapes:
        - **output:** :math:`(N, H)`; ``nan`` at a node without incoming edges.
    """
    edge_index, p, is_query = _row_distributions(graph)
    h = scatter(-torch.special.xlogy(p, p), edge_index[1], dim=0, dim_size=graph.num_nodes, reduce='sum')
    return _per_query(h, is_query)


def _positions(graph: AttentionGraph, pos: Optional[Tensor]) -> Tensor:
    N = graph.num_nodes
    device = graph.edge_index.device
    if pos is None:
        # Position in its own sequence: the node index minus the first node of its graph (b*T + t -> t).
        node = torch.arange(N, device=device)
        if graph.batch is None:
            return node.unsqueeze(-1).to(torch.float64)
        first = scatter(node, graph.batch, dim=0, reduce='min')
        return (node - first[graph.batch]).unsqueeze(-1).to(torch.float64)
    if not isinstance(pos, Tensor):
        raise TypeError(f"'pos' must be a tensor (got {type(pos).__name__})")
    if pos.dim() not in (1, 2) or pos.size(0) != N:
        raise ValueError(f"'pos' must have shape [N] or [N, D] with N = {N} (got {list(pos.shape)})")
    return (pos.unsqueeze(-1) if pos.dim() == 1 else pos).to(device=device, dtype=torch.float64)


def attention_distance(graph: AttentionGraph, pos: Optional[Tensor] = None) -> Tensor:
    r"""How far every query looks, per head: the attention-weighted mean distance to its keys,

    .. math::
        d^{(h)}_i = \sum_{j \to i} p^{(h)}_{ij} \, \lVert \mathrm{pos}_i - \mathrm{pos}_j \rVert,

    with :math:`p^{(h)}_{ij}` the query's attention normalised to sum to one (as in :func:`attention_entropy`). By
    default a node's position is its index within its own graph, so that for a sequence (e.g. from
    :meth:`~pyg_ple.AttentionGraph.from_dense`) the distance is :math:`|i - j|` in tokens; pass ``pos`` for another
    geometry (e.g. the patch grid of a vision transformer).

    Args:
        graph (AttentionGraph): the attention graph.
        pos (torch.Tensor, optional): node positions, ``[N]`` or ``[N, D]`` (Euclidean distance).
            (default: :obj:`None`: the index within the node's graph)

    Shapes:
        - **output:** :math:`(N, H)` in float64; ``nan`` at a node without incoming edges.
    """
    edge_index, p, is_query = _row_distributions(graph)
    x = _positions(graph, pos)
    dist = (x[edge_index[1]] - x[edge_index[0]]).norm(dim=-1)
    d = scatter(p.to(torch.float64) * dist.unsqueeze(-1), edge_index[1], dim=0, dim_size=graph.num_nodes,
                reduce='sum')
    return _per_query(d, is_query)


def _graph_slices(graph: AttentionGraph) -> List[Tuple[int, int]]:
    if graph.batch is None:
        return [(0, graph.num_nodes)]
    counts = torch.bincount(graph.batch).tolist()
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    return list(zip(starts, counts))


def laplacian_spectrum(graph: AttentionGraph) -> List[Tensor]:
    r"""The eigenvalues of the attention Laplacian :math:`L^{(h)} = I - A^{(h)}` of every head, graph by graph.

    The eigenvalues are those of the matrix of :meth:`~pyg_ple.AttentionGraph.laplacian` restricted to the queries
    (the nodes with incoming edges): there a node without incoming edges has a zero row, which only adds an eigenvalue
    :math:`0` per such node (e.g. per padded token) and is left out. They are :math:`\mu = 1 - \lambda` for the
    eigenvalues :math:`\lambda` of :math:`A^{(h)}`; for a row-stochastic :math:`A` the smallest is :math:`0` and all
    lie in the disc :math:`|\mu - 1| \le 1`. Computed densely in float64 (``torch.linalg.eigvals``).

    Args:
        graph (AttentionGraph): the attention graph.

    Returns:
        A list with one complex128 tensor per graph of the batch (one for a single graph), of shape
        :math:`(H, n_b)` for the :math:`n_b` queries of graph :math:`b`, each head's eigenvalues sorted by real part,
        then imaginary part.
    """
    _check_graph(graph)
    N, H = graph.num_nodes, graph.heads
    edge_index, weight = coalesce(graph.edge_index, graph.weight, num_nodes=N, reduce='sum')
    device = edge_index.device
    is_query = torch.zeros(N, dtype=torch.bool, device=device).index_fill_(0, edge_index[1], True)
    num_graphs = len(_graph_slices(graph))
    graph_of = graph.batch if graph.batch is not None else torch.zeros(N, dtype=torch.long, device=device)
    # Every query's index among the queries of its graph; edges from a non-query or across graphs are left out.
    q = is_query.long()
    sizes = torch.zeros(num_graphs, dtype=torch.long, device=device).index_add_(0, graph_of, q)
    local = torch.cumsum(q, 0) - q - (torch.cumsum(sizes, 0) - sizes)[graph_of]
    src, dst = edge_index
    keep = is_query[src] & (graph_of[src] == graph_of[dst])
    src, dst, weight = src[keep], dst[keep], weight[keep].detach().to(torch.float64)
    order = torch.argsort(graph_of[dst], stable=True)  # the edges graph by graph
    counts = torch.bincount(graph_of[dst], minlength=num_graphs).tolist()
    out = []
    for n, s, d, w in zip(sizes.tolist(), src[order].split(counts), dst[order].split(counts),
                          weight[order].split(counts)):
        A = torch.zeros(H, n, n, dtype=torch.float64, device=device)
        A[:, local[d], local[s]] = w.t()
        mu = torch.linalg.eigvals(torch.eye(n, dtype=torch.float64, device=A.device) - A)
        # Sort by real part, ties (conjugate pairs) by imaginary part: two stable sorts.
        mu = mu.gather(-1, torch.argsort(mu.imag, dim=-1, stable=True))
        mu = mu.gather(-1, torch.argsort(mu.real, dim=-1, stable=True))
        out.append(mu)
    return out


def spectral_gap(graph: AttentionGraph, mode: str = 'modulus') -> Tensor:
    r"""The spectral gap of every head's attention, graph by graph: how fast the diffusion over the attention graph
    mixes.

    With :math:`\lambda_1, \lambda_2, \dots` the eigenvalues of :math:`A^{(h)}` (over the queries, see
    :func:`laplacian_spectrum`):

    * ``mode='modulus'`` (default): :math:`1 - |\lambda_2|`, with the eigenvalues ordered by modulus,
      :math:`|\lambda_1| \ge |\lambda_2| \ge \dots` (for a row-stochastic :math:`A`, :math:`\lambda_1 = 1`). One
      diffusion step :math:`x \mapsto A x` (a block read as a diffusion step of size one) shrinks the part of
      :math:`x` that has not mixed yet by :math:`|\lambda_2|` per step, asymptotically; a gap of :math:`1` means
      one step mixes completely (e.g. uniform attention), :math:`0` that some part never mixes (e.g. two queries that
      attend only to themselves).
    * ``mode='real'``: the second-smallest real part of the eigenvalues of the Laplacian :math:`I - A`, i.e.
      :math:`1 - \operatorname{Re}\lambda_2` with the eigenvalues ordered by real part (descending); the rate of the
      continuous diffusion :math:`\dot x = -(I - A) x`.

    Both agree when the eigenvalues of :math:`A` other than :math:`\lambda_1` are real and non-negative. Eigenvalues
    are counted with multiplicity, so a repeated :math:`\lambda = 1` (a reducible graph) gives a gap of :math:`0`.

    Args:
        graph (AttentionGraph): the attention graph.
        mode (str, optional): ``'modulus'`` or ``'real'``. (default: :obj:`'modulus'`)

    Shapes:
        - **output:** :math:`(B, H)` in float64 (:math:`B = 1` for a single graph); ``nan`` for a graph with fewer
          than two queries.
    """
    if mode not in ('modulus', 'real'):
        raise ValueError(f"'mode' must be 'modulus' or 'real' (got {mode!r})")
    gaps = []
    for mu in laplacian_spectrum(graph):
        if mu.size(-1) < 2:
            gaps.append(torch.full((graph.heads,), float('nan'), dtype=torch.float64, device=mu.device))
            continue
        lam = 1 - mu
        if mode == 'modulus':
            gaps.append(1 - lam.abs().sort(dim=-1, descending=True).values[:, 1])
        else:
            gaps.append(mu.real.sort(dim=-1).values[:, 1])
    return torch.stack(gaps)


def head_similarity(graph: AttentionGraph, metric: str = 'jensen_shannon') -> Tensor:
    r"""How alike the heads of one layer attend: for every pair of heads, the similarity of their attention rows,
    averaged over the queries (of all graphs of the batch).

    * ``metric='jensen_shannon'`` (default): :math:`1 - \mathrm{JSD}(p^{(g)}_i, p^{(h)}_i)` with the Jensen-Shannon
      divergence in bits,

      .. math::
          \mathrm{JSD}(p, q) = \tfrac12 \sum_j p_j \log_2 \frac{p_j}{m_j} + \tfrac12 \sum_j q_j \log_2 \frac{q_j}{m_j},
          \qquad m = \tfrac12 (p + q),

      and :math:`p_i` the query's attention normalised to sum to one: :math:`1` for identical rows, :math:`0` for
      rows on disjoint keys (``scipy.spatial.distance.jensenshannon(p, q, base=2)`` is :math:`\sqrt{\mathrm{JSD}}`).
    * ``metric='cosine'``: the cosine similarity :math:`\langle a, b \rangle / (\lVert a \rVert \lVert b \rVert)` of
      the rows :math:`a = A^{(g)}_{i\cdot}`, :math:`b = A^{(h)}_{i\cdot}`, in :math:`[0, 1]` for non-negative weights.

    Args:
        graph (AttentionGraph): the attention graph of one layer.
        metric (str, optional): ``'jensen_shannon'`` or ``'cosine'``. (default: :obj:`'jensen_shannon'`)

    Shapes:
        - **output:** :math:`(H, H)`, symmetric with ones on the diagonal; ``nan`` if there is no query.
    """
    if metric not in ('jensen_shannon', 'cosine'):
        raise ValueError(f"'metric' must be 'jensen_shannon' or 'cosine' (got {metric!r})")
    edge_index, p, is_query = _row_distributions(graph)
    dst, N, H = edge_index[1], graph.num_nodes, graph.heads
    rows = []
    if metric == 'cosine':
        _, w = coalesce(graph.edge_index, graph.weight, num_nodes=N, reduce='sum')
        norm = scatter(w * w, dst, dim=0, dim_size=N, reduce='sum').sqrt()  # [N, H]
    for g in range(H):
        if metric == 'jensen_shannon':
            a, b = p[:, g:g + 1], p
            m = 0.5 * (a + b)
            # x log(x / m) as xlogy(x, x) - xlogy(x, m): zero where x = 0, also where m = 0.
            terms = 0.5 * (torch.special.xlogy(a, a) - torch.special.xlogy(a, m)
                           + torch.special.xlogy(b, b) - torch.special.xlogy(b, m)) / math.log(2)
            per_query = 1 - scatter(terms, dst, dim=0, dim_size=N, reduce='sum')
        else:
            dot = scatter(w[:, g:g + 1] * w, dst, dim=0, dim_size=N, reduce='sum')
            per_query = dot / (norm[:, g:g + 1] * norm)
        rows.append(torch.nanmean(per_query[is_query], dim=0))
    return torch.stack(rows)


def attention_rollout(graphs: Sequence[AttentionGraph], residual: float = 0.5,
                      head_fusion: str = 'mean') -> AttentionGraph:
    r"""Attention rollout (Abnar & Zuidema, *Quantifying Attention Flow in Transformers*, ACL 2020): how much of
    every input token reaches every token after a stack of layers, the residual connections counted as attention to
    oneself.

    With :math:`\bar A_\ell` the heads of layer :math:`\ell` fused (their mean by default),

    .. math::
        \tilde A_\ell = \operatorname{rownorm}\big((1 - r)\, \bar A_\ell + r I\big), \qquad
        R = \tilde A_L \tilde A_{L-1} \cdots \tilde A_1,

    with :math:`r` = ``residual`` (:math:`\tfrac12` in the paper), the identity added at the queries (a padded token
    stays isolated) and every row divided by its sum (which changes nothing for a row-stochastic :math:`A`).
    :math:`R_{ij}` is the share of input token :math:`j` in the output of token :math:`i`: the result has an edge
    :math:`j \to i` with weight :math:`R_{ij}` for every non-zero entry.

    Args:
        graphs (Sequence[AttentionGraph]): the layers' attention graphs, first layer first, on the same nodes (same
            ``num_nodes`` and ``batch``), e.g. the list :func:`pyg_ple.hf.attention_graphs` returns.
        residual (float, optional): the weight :math:`r \in [0, 1]` of the identity. (default: :obj:`0.5`)
        head_fusion (str, optional): ``'mean'``, ``'max'`` or ``'min'`` over heads. (default: :obj:`'mean'`)

    Shapes:
        - **output:** an :class:`~pyg_ple.AttentionGraph` on the same nodes, ``weight`` :math:`(E, 1)`.
    """
    graphs = list(graphs) if not isinstance(graphs, AttentionGraph) else [graphs]
    if not graphs:
        raise ValueError("'graphs' must hold at least one AttentionGraph")
    for k, g in enumerate(graphs):
        _check_graph(g, f'graphs[{k}]')
    if not isinstance(residual, (int, float)) or not 0.0 <= residual <= 1.0:
        raise ValueError(f"'residual' must be a number in [0, 1] (got {residual!r})")
    if head_fusion not in ('mean', 'max', 'min'):
        raise ValueError(f"'head_fusion' must be 'mean', 'max' or 'min' (got {head_fusion!r})")
    first = graphs[0]
    N, batch = first.num_nodes, first.batch
    for k, g in enumerate(graphs[1:], 1):
        same_batch = (g.batch is None and batch is None) or (
            g.batch is not None and batch is not None and torch.equal(g.batch, batch))
        if g.num_nodes != N or not same_batch:
            raise ValueError(f"'graphs[{k}]' is not on the nodes of 'graphs[0]' (num_nodes or batch differ)")
    device = first.edge_index.device
    slices = _graph_slices(first)
    n_max = max((c for _, c in slices), default=0)
    # Dense slot of every node: (graph, position in the graph).
    slot_b = torch.cat([torch.full((c,), b, dtype=torch.long) for b, (_, c) in enumerate(slices)]).to(device)
    slot_t = torch.cat([torch.arange(c) for _, c in slices]).to(device)
    eye = torch.eye(n_max, dtype=torch.float64, device=device)
    R = eye.expand(len(slices), n_max, n_max).clone()
    fuse = {'mean': lambda w: w.mean(-1), 'max': lambda w: w.amax(-1), 'min': lambda w: w.amin(-1)}[head_fusion]
    for g in graphs:
        edge_index, weight = coalesce(g.edge_index, g.weight.detach().to(torch.float64), num_nodes=N, reduce='sum')
        A = torch.zeros(len(slices), n_max, n_max, dtype=torch.float64, device=device)
        src, dst = edge_index
        A[slot_b[dst], slot_t[dst], slot_t[src]] = fuse(weight)
        query = torch.zeros(len(slices), n_max, dtype=torch.float64, device=device)
        query[slot_b[dst], slot_t[dst]] = 1.0
        A = (1 - residual) * A + residual * torch.diag_embed(query)
        total = A.sum(-1, keepdim=True)
        A = torch.where(total > 0, A / total.clamp_min(torch.finfo(A.dtype).tiny), A)
        R = A @ R
    # Keep only real node pairs: the dense padding of smaller graphs never becomes an edge.
    real = torch.zeros(len(slices), n_max, dtype=torch.bool, device=device)
    real[slot_b, slot_t] = True
    keep = (R != 0) & real[:, :, None] & real[:, None, :]
    b, i, j = keep.nonzero(as_tuple=True)
    start = torch.tensor([s for s, _ in slices], dtype=torch.long, device=device)
    edge_index = torch.stack([start[b] + j, start[b] + i])
    return AttentionGraph(edge_index, R[b, i, j].to(first.weight.dtype).unsqueeze(-1), N, batch, first.tokens)


def attention_summary(graphs: Sequence[AttentionGraph]) -> List[Dict[str, float]]:
    r"""One row per layer and head: the mean over the queries of :func:`attention_entropy` (nats) and
    :func:`attention_distance`, and the mean over the graphs of :func:`spectral_gap` (``mode='modulus'``).

    Args:
        graphs (Sequence[AttentionGraph]): one attention graph per layer.

    Returns:
        A list of dicts with the keys ``layer``, ``head``, ``entropy``, ``distance`` and ``spectral_gap``, layer by
        layer, head by head.
    """
    rows = []
    for layer, g in enumerate(graphs):
        entropy = torch.nanmean(attention_entropy(g).double(), dim=0)
        distance = torch.nanmean(attention_distance(g), dim=0)
        gap = torch.nanmean(spectral_gap(g), dim=0)
        for h in range(g.heads):
            rows.append({'layer': layer, 'head': h, 'entropy': float(entropy[h]), 'distance': float(distance[h]),
                         'spectral_gap': float(gap[h])})
    return rows
