"""Fused sparse attention kernel path: SDDMM -> CSR segment softmax -> SpMM.

``edge_softmax_aggregate`` computes, per head ``h`` and target node ``i``::

    s_ij,h   = <q_i,h, k_j,h> / sqrt(C) (+ score_bias_e,h)
    alpha_ij = softmax_j over the incoming edges j -> i of s_ij
    out_i,h  = sum_j alpha_ij,h v_j,h      (and, with per-edge values u [E, D], sum_j alpha_ij,h u_ij)

without materialising any ``[E, H, C]`` tensor in forward or backward. Edges are sorted by target once into a CSR
(:class:`EdgeCSR`, which callers may build once and reuse for a fixed graph), scores are a sampled dense-dense
product per head (``torch.sparse.sampled_addmm``, with a chunked gather fallback whose temporaries are bounded to
``[chunk, H, C]``), the softmax is a segment reduction over CSR rows (``torch.segment_reduce``) and the aggregation is
a CSR sparse-dense matmul per head. A :class:`torch.autograd.Function` implements the backward with the same
primitives::

    dV = A^T dO                 (SpMM with the transposed CSR)
    dalpha_e = <dO_i, v_j>      (SDDMM)
    dS = alpha * (dalpha - sum_j alpha dalpha)
    dQ = dS K / sqrt(C)         (SpMM)
    dK = dS^T Q / sqrt(C)       (SpMM with the transposed CSR)

Working memory is ``O(E * H)`` (a handful of ``[H, E]`` score-sized tensors) plus ``O(N * H * C)``; per-edge values
add ``[E, D]`` temporaries (one head at a time), where ``D`` is their width (e.g. the raw edge features, which the
caller projects after aggregation, since ``sum_j alpha_ij (u_ij W) = (sum_j alpha_ij u_ij) W``).

Only ops that exist on CPU and CUDA are used (sparse CSR matmul, ``sampled_addmm``, ``segment_reduce``,
``index_select``). On CPU, where those ops cover float32 and float64 only, float16/bfloat16 inputs (e.g. projections
under ``torch.autocast``) are computed in float32 and the results returned in the input dtype. Gradients are first
order only: a double backward (``create_graph=True``) raises an error that points to the per-edge reference path.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['EdgeCSR', 'build_csr', 'edge_softmax_aggregate', 'edge_softmax_aggregate_reference']

# Chunk size (edges) for the gather-based SDDMM fallback: temporaries are [chunk, H, C].
SDDMM_CHUNK = 16384


class EdgeCSR:
    """Edges sorted by target (CSR over ``[num_dst, num_src]``) plus, lazily, the transposed CSR.

    Attributes (all on the edge_index's device)::

      ``perm``     [E] long: sorted position -> original edge id (``None`` if edges were already sorted by target),
      ``rowptr``   [num_dst + 1], ``col`` [E] (source ids in sorted order), ``row`` [E] long (target ids, sorted),
      ``tperm``    [E] long: transposed position -> sorted position, ``colptr`` [num_src + 1], ``trow`` [E]
                   (target ids in source-sorted order) -- built on first use by :meth:`transpose`.

    Index tensors used as CSR indices are int32 when everything fits, else int64.

    Build once per graph and pass as ``csr=`` to :func:`edge_softmax_aggregate` to skip the sort.
    ``check_range=False`` skips the index-range check (for indices the caller has already checked).
    """

    def __init__(self, edge_index: Tensor, num_dst: int, num_src: Optional[int] = None, check_range: bool = True):
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f'edge_index must be [2, E], got {tuple(edge_index.shape)}')
        num_src = num_dst if num_src is None else num_src
        self.num_dst, self.num_src = int(num_dst), int(num_src)
        self.num_edges = E = edge_index.size(1)
        self.device = edge_index.device
        self.edge_index = edge_index
        src, dst = edge_index[0].long(), edge_index[1].long()
        if E > 0 and check_range:  # ``check_range=False``: the caller has checked (saves a device sync)
            low, src_high, dst_high = torch.cat([edge_index.amin().view(1), edge_index.amax(dim=1)]).tolist()
            if low < 0 or dst_high >= self.num_dst or src_high >= self.num_src:
                raise ValueError(f'edge_index out of range for {self.num_src} sources / {self.num_dst} targets')
        fits32 = max(E, self.num_dst, self.num_src) < 2**31 - 1
        self.index_dtype = torch.int32 if fits32 else torch.int64
        if E > 0 and bool((dst[1:] < dst[:-1]).any()):
            perm = torch.argsort(dst, stable=True)
            self.perm: Optional[Tensor] = perm
            src, dst = src[perm], dst[perm]
        else:
            self.perm = None
        self.row = dst
        self.col = src.to(self.index_dtype)
        # Duplicate edges are legal (each is its own softmax term) but need the gather SDDMM (see ``_sddmm``).
        self.unique = E == 0 or torch.unique(dst * self.num_src + src).numel() == E
        counts = torch.bincount(dst, minlength=self.num_dst) if E > 0 else \
            torch.zeros(self.num_dst, dtype=torch.long, device=self.device)
        self.rowptr = _ptr_from_counts(counts, self.index_dtype)
        self._src_sorted = src
        self.tperm: Optional[Tensor] = None
        self.colptr: Optional[Tensor] = None
        self.trow: Optional[Tensor] = None

    def transpose(self) -> 'EdgeCSR':
        """Builds (once) the source-major CSR used by the backward (``A^T``)."""
        if self.tperm is None:
            src = self._src_sorted
            if self.num_edges > 0:
                tperm = torch.argsort(src, stable=True)
                counts = torch.bincount(src, minlength=self.num_src)
            else:
                tperm = src.new_zeros(0)
                counts = torch.zeros(self.num_src, dtype=torch.long, device=self.device)
            self.tperm = tperm
            self.trow = self.row[tperm].to(self.index_dtype)
            self.colptr = _ptr_from_counts(counts, self.index_dtype)
        return self

    # -- layout helpers ---------------------------------------------------------------------------------------
    def to_sorted(self, x: Tensor) -> Tensor:
        """[E, H] in original edge order -> [H, E] contiguous in target-sorted order."""
        if self.perm is not None:
            x = x.index_select(0, self.perm)
        return x.t().contiguous()

    def to_original(self, x_he: Tensor) -> Tensor:
        """[H, E] in target-sorted order -> [E, H] contiguous in original edge order."""
        x = x_he.t()
        if self.perm is None:
            return x.contiguous()
        out = torch.empty((x.size(0), x.size(1)), dtype=x.dtype, device=x.device)
        out.index_copy_(0, self.perm, x)
        return out


def build_csr(edge_index: Tensor, num_dst: int, num_src: Optional[int] = None, check_range: bool = True) -> EdgeCSR:
    """Sorts ``edge_index`` (row 0 source j, row 1 target i) by target once; reuse the result via ``csr=``."""
    return EdgeCSR(edge_index, num_dst, num_src, check_range)


def _ptr_from_counts(counts: Tensor, dtype: torch.dtype) -> Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr.to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# primitives ([H, E] sorted layout, [H, N, C] node layout)
# ---------------------------------------------------------------------------------------------------------------
_SAMPLED_ADDMM_OK = {}  # (device type, dtype) -> False once sampled_addmm raised there


def _csr(ptr: Tensor, idx: Tensor, values: Tensor, shape) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(ptr, idx, values, shape, check_invariants=False)


def _sddmm(ptr: Tensor, idx: Tensor, row: Tensor, a: Tensor, b: Tensor, shape, unique: bool = True) -> Tensor:
    """out[h, e] = <a[h, row_e], b[h, idx_e]> for the CSR pattern (ptr, idx); a: [H, M, C], b: [H, K, C] -> [H, E]."""
    H, E = a.size(0), idx.numel()
    out = torch.zeros((H, E), dtype=a.dtype, device=a.device)
    if E == 0:
        return out
    dev = (a.device.type, a.dtype)
    # sampled_addmm assumes a coalesced pattern: with duplicate (i, j) entries it writes out of bounds.
    if unique and _SAMPLED_ADDMM_OK.get(dev, True):
        try:
            for h in range(H):
                # In place into out[h] (the pattern's values are a view of it; beta=0 on zeros): no clones.
                pattern = _csr(ptr, idx, out[h], shape)
                torch.sparse.sampled_addmm(pattern, a[h], b[h].t(), beta=0.0, out=pattern)
            return out
        except (RuntimeError, NotImplementedError):  # pragma: no cover - backend without sampled_addmm
            _SAMPLED_ADDMM_OK[dev] = False
            out.zero_()
    # Fallback: chunked gathers; temporaries bounded to [chunk, H, C].
    a_n = a.transpose(0, 1)  # [M, H, C] views
    b_n = b.transpose(0, 1)
    idx_l = idx.long()
    for s in range(0, E, SDDMM_CHUNK):
        r = row[s:s + SDDMM_CHUNK]
        c = idx_l[s:s + SDDMM_CHUNK]
        out[:, s:s + SDDMM_CHUNK] = torch.linalg.vecdot(a_n.index_select(0, r), b_n.index_select(0, c)).t()
    return out


def _spmm(ptr: Tensor, idx: Tensor, values: Tensor, dense: Tensor, shape) -> Tensor:
    """out[h] = CSR(ptr, idx, values[h]) @ dense[h]; values [H, E], dense [H, K, C] -> [H, M, C]."""
    H, M, C = values.size(0), shape[0], dense.size(-1)
    if idx.numel() == 0 or M == 0 or C == 0:
        return torch.zeros((H, M, C), dtype=dense.dtype, device=dense.device)
    # CPU: the row-parallel CSR kernel behind ``torch.sparse.mm(..., reduce='sum')`` (no dense re-layout copies);
    # elsewhere (CUDA: cuSPARSE) the plain CSR @ dense product.
    use_reduce = dense.device.type == 'cpu'
    outs = []
    for h in range(H):
        a = _csr(ptr, idx, values[h], shape)
        outs.append(torch.sparse.mm(a, dense[h], 'sum') if use_reduce else a @ dense[h])
    return torch.stack(outs, 0)


def _segment_sum(x: Tensor, ptr: Tensor) -> Tensor:
    """x [H, E] summed over CSR rows -> [H, N]."""
    return torch.segment_reduce(x, 'sum', offsets=ptr.long().expand(x.size(0), -1).contiguous(), axis=1,
                                unsafe=True)


def _segment_softmax(scores: Tensor, csr: EdgeCSR) -> Tensor:
    """Softmax over the incoming edges of each target; scores [H, E] sorted. Rows whose scores are all -inf -> 0."""
    H = scores.size(0)
    ptr = csr.rowptr.long().expand(H, -1).contiguous()  # [H, N + 1]: segment_reduce wants data.shape[:axis]
    smax = torch.segment_reduce(scores, 'max', offsets=ptr, axis=1, unsafe=True)  # empty rows: -inf, never read
    smax = torch.where(torch.isfinite(smax), smax, torch.zeros_like(smax))
    ex = (scores - smax.index_select(1, csr.row)).exp_()
    den = torch.segment_reduce(ex, 'sum', offsets=ptr, axis=1, unsafe=True)
    den = den.clamp_min_(torch.finfo(den.dtype).tiny)
    return ex.div_(den.index_select(1, csr.row))


class _EdgeSoftmaxAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, edge_value, csr: EdgeCSR, dropout: float, training: bool, need_alpha: bool):
        # q: [Nd, H, C]; k, v: [Ns, H, C]; bias: [E, H] or None; edge_value: [E, D] or None (original order).
        Nd, H, C = q.shape
        Ns = k.size(0)
        shape = (Nd, Ns)
        scale = 1.0 / math.sqrt(C) if C > 0 else 1.0
        qh = q.transpose(0, 1).contiguous()  # [H, Nd, C]
        kh = k.transpose(0, 1).contiguous()  # [H, Ns, C]
        vh = v.transpose(0, 1).contiguous()
        scores = _sddmm(csr.rowptr, csr.col, csr.row, qh, kh, shape, csr.unique).mul_(scale)  # [H, E]
        if bias is not None:
            scores.add_(csr.to_sorted(bias.to(scores.dtype)))
        alpha = _segment_softmax(scores, csr)
        del scores
        mask = None
        alpha_d = alpha
        if training and dropout > 0.0:
            if dropout >= 1.0:
                mask = torch.zeros_like(alpha, dtype=torch.bool)
                alpha_d = torch.zeros_like(alpha)
            else:
                mask = torch.rand_like(alpha) >= dropout
                alpha_d = alpha * mask * (1.0 / (1.0 - dropout))
        out = _spmm(csr.rowptr, csr.col, alpha_d, vh, shape)  # [H, Nd, C]
        ev = None
        if edge_value is not None:
            ev = edge_value if csr.perm is None else edge_value.index_select(0, csr.perm)  # [E, D] sorted
            out = torch.cat([out, _edge_spmm(csr, alpha_d, ev)], dim=-1)
        del alpha_d
        ctx.csr = csr
        ctx.scale = scale
        ctx.dropout = dropout
        ctx.has_bias = bias is not None
        ctx.save_for_backward(qh, kh, vh, alpha, mask, ev)
        ctx.set_materialize_grads(False)
        out = out.transpose(0, 1).contiguous()
        if not need_alpha:
            return out
        return out, csr.to_original(alpha)

    @staticmethod
    def backward(ctx, grad_out, grad_alpha=None):
        with torch.no_grad():
            grads = _EdgeSoftmaxAggregate._first_order(ctx, grad_out, grad_alpha)
        if torch.is_grad_enabled():  # create_graph=True: the gradients must not be differentiated again
            grads = _first_order_only(grads)
        return grads

    @staticmethod
    def _first_order(ctx, grad_out, grad_alpha):
        qh, kh, vh, alpha, mask, ev = ctx.saved_tensors
        csr: EdgeCSR = ctx.csr
        Nd, Ns = qh.size(1), kh.size(1)
        need_q, need_k, need_v, need_b, need_e = ctx.needs_input_grad[:5]
        dq = dk = dv = db = de = None
        keep = 1.0 / (1.0 - ctx.dropout) if mask is not None and ctx.dropout < 1.0 else 0.0
        if grad_out is None and grad_alpha is None:
            return (None,) * 9
        ge = None  # gradient of the per-edge part [H, Nd, D]
        if grad_out is not None and ev is not None:
            grad_out, ge = grad_out[..., :vh.size(-1)], grad_out[..., vh.size(-1):].transpose(0, 1).contiguous()
        gh = None if grad_out is None else grad_out.transpose(0, 1).contiguous()  # [H, Nd, Cv]
        if need_e and ge is not None:
            alpha_d = alpha if mask is None else alpha * mask * keep
            # du_ij = sum_h alpha_ij,h g_i,h: one [E, D] temporary per head
            de = sum(alpha_d[h].unsqueeze(-1) * ge[h].index_select(0, csr.row) for h in range(alpha.size(0)))
            de = de if csr.perm is None else torch.empty_like(de).index_copy_(0, csr.perm, de)
            del alpha_d
        if need_k or (need_v and gh is not None):
            csr.transpose()
        if need_v and gh is not None:
            alpha_d = alpha if mask is None else alpha * mask * keep
            vals = alpha_d.index_select(1, csr.tperm)
            del alpha_d
            dv = _spmm(csr.colptr, csr.trow, vals, gh, (Ns, Nd)).transpose(0, 1)
            del vals
        if need_q or need_k or need_b:
            if gh is not None:
                dalpha = _sddmm(csr.rowptr, csr.col, csr.row, gh, vh, (Nd, Ns), csr.unique)  # d loss / d alpha_dropped
                if ge is not None:  # the per-edge values' share: <g_i, u_ij>, an SDDMM whose columns are the edges
                    dalpha.add_(_sddmm(csr.rowptr, _edge_columns(csr), csr.row, ge,
                                       ev.unsqueeze(0).expand(ge.size(0), -1, -1), (Nd, csr.num_edges)))
                if mask is not None:
                    dalpha.mul_(mask).mul_(keep)
                if grad_alpha is not None:
                    dalpha.add_(csr.to_sorted(grad_alpha))
            else:
                dalpha = csr.to_sorted(grad_alpha)
            prod = alpha * dalpha
            rowsum = _segment_sum(prod, csr.rowptr)
            # dS = alpha * (dalpha - rowsum[row]) = prod - alpha * rowsum[row]
            ds = prod.sub_(alpha * rowsum.index_select(1, csr.row))
            del dalpha, rowsum
            if need_b:
                db = csr.to_original(ds)
            ds.mul_(ctx.scale)
            if need_q:
                dq = _spmm(csr.rowptr, csr.col, ds, kh, (Nd, Ns)).transpose(0, 1)
            if need_k:
                dk = _spmm(csr.colptr, csr.trow, ds.index_select(1, csr.tperm), qh, (Ns, Nd)).transpose(0, 1)
        return dq, dk, dv, db, de, None, None, None, None


def _edge_spmm(csr: EdgeCSR, alpha: Tensor, edge_value: Tensor) -> Tensor:
    """out[h, i] = sum over the incoming edges e of i of alpha[h, e] * edge_value[e]; alpha [H, E] and edge_value
    [E, D] in target-sorted order -> [H, Nd, D] (a CSR product whose columns are the edges themselves)."""
    H, E = alpha.shape
    return _spmm(csr.rowptr, _edge_columns(csr), alpha, edge_value.unsqueeze(0).expand(H, -1, -1), (csr.num_dst, E))


def _edge_columns(csr: EdgeCSR) -> Tensor:
    """Column indices ``0 .. E-1``: with them the CSR pattern of ``csr`` indexes the (sorted) edges themselves."""
    return torch.arange(csr.num_edges, dtype=csr.index_dtype, device=csr.device)


SECOND_ORDER_ERROR = ('the fused edge-softmax kernel has first-order gradients only; for double backward '
                      '(create_graph=True) use the per-edge reference path: fused=False')


class _NoSecondOrder(torch.autograd.Function):
    """Identity on the kernel's gradients whose backward raises :data:`SECOND_ORDER_ERROR`."""

    @staticmethod
    def forward(ctx, anchor, *grads):
        return tuple(g.clone() for g in grads)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(SECOND_ORDER_ERROR)


def _first_order_only(grads: tuple) -> tuple:
    """Route the tensors of ``grads`` through :class:`_NoSecondOrder`: differentiating them again raises a clear
    error instead of silently leaving out the kernel's second-order terms. ``anchor`` (a leaf that requires grad)
    makes the outputs part of the graph even when the incoming gradients are constants."""
    where = [i for i, g in enumerate(grads) if isinstance(g, Tensor)]
    if not where:
        return grads
    anchor = torch.zeros((), device=grads[where[0]].device, requires_grad=True)
    marked = _NoSecondOrder.apply(anchor, *(grads[i] for i in where))
    grads = list(grads)
    for i, g in zip(where, marked):
        grads[i] = g
    return tuple(grads)


@torch.compiler.disable  # opaque to torch.compile (sparse CSR ops inside): a clean graph break
def edge_softmax_aggregate(query: Tensor, key: Tensor, value: Tensor, edge_index: Tensor, num_nodes: int,
                           score_bias: Optional[Tensor] = None, dropout: float = 0.0, training: bool = False,
                           csr: Optional[EdgeCSR] = None, need_alpha: bool = True,
                           edge_value: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Edge-softmax attention aggregation without ``[E, H, C]`` intermediates.

    Args:
        query: ``[num_nodes, H, C]`` (targets).
        key, value: ``[num_src, H, C]`` (sources; ``num_src`` may differ from ``num_nodes`` for bipartite graphs).
        edge_index: ``[2, E]``, row 0 source ``j`` (indexes key/value), row 1 target ``i`` (indexes query/out).
            Duplicate edges are kept as separate edges, self-loops are not added.
        num_nodes: number of target nodes (rows of ``out``).
        score_bias: optional ``[E, H]`` (original edge order) added to the scaled scores, e.g. an edge term or a
            ``-inf`` mask. Differentiable.
        dropout, training: dropout on alpha (an ``[E, H]`` mask, inverted scaling) when ``training and dropout > 0``.
        csr: optional :class:`EdgeCSR` from :func:`build_csr(edge_index, num_nodes, num_src)` to reuse the sort.
        need_alpha: ``False`` skips scattering alpha back to the original edge order and returns ``None`` for it.
        edge_value: optional per-edge values ``[E, D]`` (original edge order, shared by the heads), aggregated with
            the same (dropped) weights as ``value``. Differentiable.

    Returns:
        ``out [num_nodes, H, C]`` with ``out_i = sum_j alpha_ij v_j`` (0 for nodes without incoming edges; with
        ``edge_value``, ``[num_nodes, H, C + D]`` whose last ``D`` channels are ``sum_j alpha_ij u_ij``) and
        ``alpha [E, H]`` in the original edge order (the softmax weights *before* dropout; rows sum to 1), in the
        inputs' dtype. Both are differentiable w.r.t. query, key, value, score_bias and edge_value (first order only:
        a double backward raises).
    """
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError('query, key and value must be [N, H, C]')
    if query.size(0) != num_nodes:
        raise ValueError(f'query has {query.size(0)} rows, expected num_nodes={num_nodes}')
    if key.shape[:2] != value.shape[:2]:
        raise ValueError('key and value must share [num_src, H] (value channels may differ)')
    if query.size(1) != key.size(1) or query.size(2) != key.size(2):
        raise ValueError('query and key must share [H, C]')
    num_src = key.size(0)
    if csr is None:
        csr = EdgeCSR(edge_index, num_nodes, num_src)
    elif csr.num_dst != num_nodes or csr.num_src != num_src or csr.num_edges != edge_index.size(1):
        raise ValueError('csr does not match edge_index / node counts')
    if score_bias is not None and tuple(score_bias.shape) != (edge_index.size(1), query.size(1)):
        raise ValueError(f'score_bias must be [E, H], got {tuple(score_bias.shape)}')
    if edge_value is not None and (edge_value.dim() != 2 or edge_value.size(0) != edge_index.size(1)):
        raise ValueError(f'edge_value must be [E, D], got {tuple(edge_value.shape)}')
    dtype = torch.promote_types(torch.promote_types(query.dtype, key.dtype), value.dtype)
    # The CPU sparse ops cover float32/float64 only: half-precision inputs are computed in float32 there.
    compute = torch.float32 if query.device.type == 'cpu' and dtype in (torch.float16, torch.bfloat16) else dtype
    query, key, value = query.to(compute), key.to(compute), value.to(compute)
    if score_bias is not None:
        score_bias = score_bias.to(compute)
    if edge_value is not None:
        edge_value = edge_value.to(compute)
    res = _EdgeSoftmaxAggregate.apply(query, key, value, score_bias, edge_value, csr, float(dropout), bool(training),
                                      bool(need_alpha))
    out, alpha = res if need_alpha else (res, None)
    return out.to(dtype), None if alpha is None else alpha.to(dtype)


def edge_softmax_aggregate_reference(query: Tensor, key: Tensor, value: Tensor, edge_index: Tensor, num_nodes: int,
                                     score_bias: Optional[Tensor] = None,
                                     edge_value: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Plain gather / softmax / scatter implementation (materialises ``[E, H, C]``); the test and benchmark oracle."""
    from torch_geometric.utils import softmax
    src, dst = edge_index[0], edge_index[1]
    C = query.size(-1)
    scores = (query[dst] * key[src]).sum(-1) / math.sqrt(C)
    if score_bias is not None:
        scores = scores + score_bias
    alpha = softmax(scores, dst, num_nodes=num_nodes)
    msg = value[src]
    if edge_value is not None:
        msg = torch.cat([msg, edge_value.unsqueeze(1).expand(-1, msg.size(1), -1)], dim=-1)
    msg = msg * alpha.unsqueeze(-1)
    out = torch.zeros((num_nodes,) + tuple(msg.shape[1:]), dtype=msg.dtype, device=msg.device)
    out = out.index_add(0, dst, msg)
    return out, alpha
