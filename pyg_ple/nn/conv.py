r"""``LaplacianDiffusionConv``: one graph-diffusion step with the random-walk Laplacian of a learned adjacency.

The learned step runs one of two ways with the same result: PyG's per-edge ``propagate`` (the reference, seen by
hooks, explainers and ``torch.compile``) or the fused kernel of :mod:`pyg_ple.ops` (no ``[E, H, C]`` messages);
:meth:`LaplacianDiffusionConv.takes_kernel` decides which.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor, scatter

from pyg_ple.edges import as_edge_index
from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.attention import AttentionAdjacency
from pyg_ple.nn.kernel_cache import KernelGraphCache
from pyg_ple.nn.scaler import check_degree_scaler, degree_scale, dense_key_count, edge_key_count
from pyg_ple.ops.all_pairs import all_pairs_attention
from pyg_ple.ops.edge_softmax import EdgeCSR, edge_softmax_aggregate
from pyg_ple.validation import (check_batch, check_edge_values, check_features, check_finite, check_same_graph,
                                check_tensor, checking)

NORMALIZATIONS = ('rw', 'sym', 'comb')

# Below this many edges the reference ``propagate`` path ran faster than the fused kernel on CPU (kernel launch and
# CSR set-up dominate): 4k-40k edges favoured the reference, 160k and more the kernel (benchmarks/results/speed.md).
FUSED_MIN_EDGES = 65_536

# MessagePassing hooks run inside ``propagate`` only. PyG keeps them in these dicts and has no public "has hooks"
# test, so this is the one place that reads them.
_PROPAGATE_HOOKS = ('_propagate_forward_pre_hooks', '_propagate_forward_hooks', '_message_forward_pre_hooks',
                    '_message_forward_hooks', '_aggregate_forward_pre_hooks', '_aggregate_forward_hooks',
                    '_message_and_aggregate_forward_pre_hooks', '_message_and_aggregate_forward_hooks')


def _has_reference_only_hooks(conv: 'LaplacianDiffusionConv') -> bool:
    """Hooks the kernel path would skip: MessagePassing hooks on ``conv``, forward hooks on ``conv.attention``
    (which the kernel does not call) and global module forward hooks (torch keeps both in private dicts too)."""
    attention, modules = conv.attention, torch.nn.modules.module
    return (any(getattr(conv, name) for name in _PROPAGATE_HOOKS)
            or bool(attention._forward_hooks or attention._forward_pre_hooks)
            or bool(modules._global_forward_hooks or modules._global_forward_pre_hooks))


class LaplacianDiffusionConv(MessagePassing):
    r"""One Laplacian-diffusion step over a learned (attention) or a fixed weighted graph.

    Reading a transformer block as inference in probabilistic Laplacian Eigenmaps (Ravuri & Lawrence, 2025), the
    attention matrix :math:`A` is a row-stochastic adjacency and the natural update is a diffusion step with the
    random-walk Laplacian :math:`L = I - A`. Per head :math:`h`, with :math:`V = x W_v`:

    .. math::
        \text{Laplacian head:}\quad \mathbf{o}^{(h)}_i = \eta_h \Big( \sum_{j \in \mathcal{N}(i)}
        \alpha^{(h)}_{ij} \mathbf{v}^{(h)}_j - \mathbf{v}^{(h)}_i \Big) = -\eta_h \big( (I - A^{(h)}) V^{(h)}
        \big)_i, \qquad
        \text{plain head:}\quad \mathbf{o}^{(h)}_i = \sum_{j \in \mathcal{N}(i)} \alpha^{(h)}_{ij}
        \mathbf{v}^{(h)}_j,

    where :math:`\alpha^{(h)}_{ij}` is the softmax over the incoming edges ``j -> i`` of
    :math:`\langle q_i, k_j (+ e_{ij}) \rangle / \sqrt{C}` (see :class:`~pyg_ple.AttentionAdjacency`).
    With ``edge_values=True`` the edge features also enter the messages, as in ``GINEConv`` and PyG's
    ``TransformerConv``: :math:`\mathbf{v}_j` becomes :math:`\mathbf{v}_j + \mathbf{u}_{ij}` in the sums above, with
    :math:`\mathbf{u} = \text{edge\_attr}\, W_u` (``lin_edge_value``). A Laplacian head then returns
    :math:`\eta_h (\sum_j \alpha_{ij} (\mathbf{v}_j + \mathbf{u}_{ij}) - \mathbf{v}_i)`: the diffusion of
    :math:`V` plus a source term that the edges feed into node :math:`i`.
    With ``edge_weight`` given there is no attention: the graph is fixed, and a Laplacian head returns
    :math:`-\eta_h L V^{(h)}` with

    * ``'rw'``: :math:`L = I - D^{-1} W`, * ``'sym'``: :math:`L = I - D^{-1/2} W D^{-1/2}`
      (``networkx.normalized_laplacian_matrix``), * ``'comb'``: :math:`L = D - W` (``networkx.laplacian_matrix``),

    where :math:`W_{ij}` is the weight of ``j -> i`` and :math:`D` the weighted in-degree; a node with no incoming edge
    (or zero in-degree) has a zero row, as in networkx. A plain head returns :math:`P V^{(h)}` with the propagation
    matrix :math:`P` = :math:`D^{-1} W`, :math:`D^{-1/2} W D^{-1/2}` or :math:`W` (the off-diagonal part that ``L``
    subtracts). The layer returns the update only (no residual, no output projection).

    With ``degree_scaler=True`` (learned mode) each head's output is multiplied, per channel, by a learned
    conductance :math:`s(d_i) = \theta_1 + \theta_2 \log(1 + d_i)` (GRIT's degree scaler), where :math:`d_i` is
    the number of keys node :math:`i` attends over (its in-degree in the edge set after self-loop handling; on the
    dense path the number of allowed keys): a Laplacian head returns :math:`\eta_h\, s(d_i) \odot (\sum_j
    \alpha_{ij} \mathbf{v}_j - \mathbf{v}_i)`, still a Laplacian diffusion (the operator's rows sum to zero) with a
    degree-dependent conductance, and a plain head :math:`s(d_i) \odot \sum_j \alpha_{ij} \mathbf{v}_j`. The
    coefficients ``deg_coef [2, H * C]`` start at :math:`\theta_1 = 1, \theta_2 = 0`, so a new layer computes
    exactly what it computes without the scaler. ``degree_scaler='linear'`` uses :math:`s(d_i) = \theta_1 +
    \theta_2 d_i` instead: at :math:`s(d_i) = d_i` a Laplacian head returns :math:`\eta_h \sum_j d_i \alpha_{ij}
    (\mathbf{v}_j - \mathbf{v}_i)`, the combinatorial Laplacian ``D - W`` of the attention graph with edge weights
    :math:`d_i \alpha_{ij}` (with uniform attention, ``D - W`` of the input graph), a sum over the keys that counts
    them as GIN's does (CPA's cardinality-preserving attention, Zhang & Xie 2020).

    Args:
        in_channels: input features ``F``.
        out_channels: channels per head ``C``.
        heads: number of heads ``H``.
        concat: concatenate heads (``[N, H * C]``) or average them (``[N, C]``).
        laplacian_heads: how many heads are Laplacian, the **last** ones; ``None`` means all, ``0`` gives standard
            attention.
        normalization: Laplacian of a fixed graph: ``'rw'``, ``'sym'`` or ``'comb'``.
        step_size: initial :math:`\eta_h` (``>= 0``) of every Laplacian head.
        learn_step_size: learn :math:`\eta_h` (one scalar per head).
        add_self_loops: remove self-loops and add one per node before attention (learned mode only).
        dropout: dropout on the attention weights.
        edge_dim: edge feature size for an edge term in the attention score, or ``None`` (then ``edge_attr`` is
            refused).
        edge_values: also add the projected edge features to the values (see above; needs ``edge_dim``).
        uniform_init: start the attention uniform over each node's candidate keys (``W_q = 0``, see
            :class:`~pyg_ple.AttentionAdjacency`): a Laplacian head then starts as the random-walk Laplacian of the
            candidate graph, :math:`-\eta_h (I - D^{-1} W) V^{(h)}` with ``W`` its adjacency (self-loops included).
        bias: add a learned bias to the output.
        degree_scaler: learn the degree scaler above: ``True`` (or ``'log'``) for :math:`\log(1 + d_i)`,
            ``'linear'`` for :math:`d_i`, ``False`` for none (learned mode only: with ``edge_weight`` a layer built
            with it raises a ``ValueError``).
        fused: in learned mode, run the fused kernel of :mod:`pyg_ple.ops` (SDDMM, segment softmax, SpMM: no
            ``[E, H, C]`` messages in forward or backward; on CPU, float16/bfloat16 projections such as those of
            ``torch.autocast`` are computed in float32). The per-edge ``propagate`` path runs instead when
            ``fused=False``, in fixed-graph mode, and whenever one of these holds: MessagePassing hooks are
            registered on the conv; explain mode is on (``conv.explain``, set by PyG's ``Explainer``); forward
            hooks are registered on ``conv.attention`` or globally on all modules; ``torch.compile`` is tracing
            (the reference compiles without graph breaks); attention weights are requested in training mode with
            ``dropout > 0`` (the reference returns the dropped weights); on CPU, the graph has fewer than
            :attr:`fused_min_edges` (``FUSED_MIN_EDGES``) edges, where ``propagate`` is faster. The kernel has
            first-order gradients only: a double backward through it raises; use ``fused=False`` for higher-order
            gradients.
        **kwargs: passed to :class:`torch_geometric.nn.conv.MessagePassing` (``flow`` must stay
            ``'source_to_target'``: attention is normalised over each node's incoming edges).

    Shapes:
        - **input:** ``x [N, F]``, ``edge_index [2, E]`` (int64 or int32) or a sparse ``[N, N]`` adjacency (its
          pattern: values are ignored), ``edge_weight [E]`` (optional, with a ``[2, E]`` ``edge_index``),
          ``edge_attr [E, edge_dim]`` (optional, learned mode, ``[E]`` when ``edge_dim=1``)
        - **output:** ``[N, H * C]`` or ``[N, C]``; with ``return_attention_weights=True`` also
          ``(edge_index [2, E'], alpha [E', H])``.
    """

    #: On CPU, learned-mode graphs with fewer edges take ``propagate``; set it on an instance (``0``: the kernel at
    #: every size) or on the class to move the threshold.
    fused_min_edges: int = FUSED_MIN_EDGES

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        laplacian_heads: Optional[int] = None,
        normalization: str = 'rw',
        step_size: float = 1.0,
        learn_step_size: bool = False,
        add_self_loops: bool = True,
        dropout: float = 0.0,
        edge_dim: Optional[int] = None,
        bias: bool = True,
        fused: bool = True,
        degree_scaler: Union[bool, str] = False,
        edge_values: bool = False,
        uniform_init: bool = False,
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
        if kwargs.get('flow', 'source_to_target') != 'source_to_target':
            raise ValueError(f"'flow' must be 'source_to_target' (got {kwargs['flow']!r}): attention is normalised "
                             f"over each node's incoming edges; for the other direction pass edge_index.flip(0)")
        super().__init__(node_dim=0, **kwargs)
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels), ('heads', heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got {value!r})")
        if laplacian_heads is None:
            laplacian_heads = heads
        if not isinstance(laplacian_heads, int) or not 0 <= laplacian_heads <= heads:
            raise ValueError(f"'laplacian_heads' must be None or an int in [0, heads={heads}] "
                             f"(got {laplacian_heads!r})")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"'normalization' must be one of {NORMALIZATIONS} (got {normalization!r})")
        if not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size < 0:
            raise ValueError(f"'step_size' must be a finite number >= 0 (got {step_size!r})")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1) (got {dropout!r})")
        if edge_dim is not None and (not isinstance(edge_dim, int) or edge_dim < 1):
            raise ValueError(f"'edge_dim' must be None or a positive int (got {edge_dim!r})")
        if not isinstance(edge_values, bool):
            raise TypeError(f"'edge_values' must be a bool (got {edge_values!r})")
        degree_scaler = check_degree_scaler(degree_scaler)
        if edge_values and edge_dim is None:
            raise ValueError("'edge_values' adds projected edge features to the values: it needs 'edge_dim'")

        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.laplacian_heads, self.normalization = laplacian_heads, normalization
        self.step_size, self.learn_step_size = float(step_size), learn_step_size
        self.add_self_loops, self.dropout, self.edge_dim, self.fused = add_self_loops, dropout, edge_dim, fused
        self.degree_scaler, self.edge_values = degree_scaler, edge_values

        self.attention = AttentionAdjacency(in_channels, out_channels, heads, edge_dim, add_self_loops, dropout,
                                            uniform_init)
        self.lin_value = Linear(in_channels, heads * out_channels)
        self.lin_edge_value = Linear(edge_dim, heads * out_channels, bias=False) if edge_values else None
        self.register_buffer('laplacian_mask', torch.arange(heads) >= heads - laplacian_heads, persistent=False)
        eta = torch.full((heads,), self.step_size)
        if learn_step_size:
            self.eta = Parameter(eta)
        else:
            self.register_buffer('eta', eta)
        self.bias = Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.deg_coef = Parameter(torch.empty(2, heads * out_channels)) if degree_scaler else None
        self.kernel_cache = KernelGraphCache()
        self.reset_parameters()

    # The projections live in the attention module (the graph a user inspects is the one diffused over); these
    # names keep the ``TransformerConv`` spelling.
    @property
    def lin_query(self) -> Linear:
        return self.attention.lin_query

    @property
    def lin_key(self) -> Linear:
        return self.attention.lin_key

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.attention.reset_parameters()
        self.lin_value.reset_parameters()
        if self.lin_edge_value is not None:
            self.lin_edge_value.reset_parameters()
        with torch.no_grad():
            self.eta.fill_(self.step_size)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        if self.deg_coef is not None:  # theta_1 = 1, theta_2 = 0: the layer without the scaler
            with torch.no_grad():
                self.deg_coef[0].fill_(1.0)
                self.deg_coef[1].zero_()

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        graph_key = edge_index  # the caller's tensor object keys the kernel's CSR cache
        edge_index, edge_attr = self._check_inputs(x, edge_index, edge_weight, edge_attr)
        if edge_weight is None and self.takes_kernel(x, edge_index, return_attention_weights):
            out, edge_index, coef = self._kernel_forward(x, edge_index, edge_attr, graph_key,
                                                         bool(return_attention_weights))
        else:
            value = self.lin_value(x).view(-1, self.heads, self.out_channels)
            edge_value = None
            if edge_weight is None:  # learned attention
                edge_index, edge_attr = self.attention.prepare_edges(edge_index, x.size(0), edge_attr)
                coef = self.attention(x, edge_index, edge_attr, prepared=True).weight
                if self.lin_edge_value is not None:
                    edge_value = self.lin_edge_value(edge_attr).view(-1, self.heads, self.out_channels)
                num_keys = edge_key_count(edge_index, x.size(0))
                self_weight = num_keys > 0  # nodes with an incoming edge
            else:  # fixed graph; the output keeps the features' dtype whatever the weights' dtype
                coef, self_weight = self.fixed_coefficients(edge_index, edge_weight.to(x.dtype), x.size(0))
                coef = coef.unsqueeze(-1).expand(-1, self.heads)
                num_keys = None  # no degree scaler in fixed-graph mode
            aggregated = self.propagate(edge_index, value=value, alpha=coef, edge_value=edge_value)  # [N, H, C]
            out = self.merge_heads(self.scale_by_degree(
                self.combine_heads(aggregated, value, self_weight.view(-1, 1, 1)), num_keys))
        if return_attention_weights:
            return out, (edge_index, coef)
        return out

    def _check_inputs(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor,
                      edge_attr: OptTensor) -> Tuple[Tensor, OptTensor]:
        """``(edge_index [2, E] int64, edge_attr [E, edge_dim] or None)``, the inputs checked outside
        ``torch.compile`` (value checks once per tensor object and version)."""
        if edge_weight is None:  # learned mode: the attention module's inputs
            return self.attention.check_inputs(x, edge_index, edge_attr)
        if self.degree_scaler:
            raise ValueError("'degree_scaler' scales learned attention by the number of keys, but with "
                             "'edge_weight' the graph is fixed: build the layer with degree_scaler=False")
        if checking():
            check_features(x, self.in_channels, dim=2, dtype=self.lin_value.weight.dtype)
            check_finite(x, 'x')
            if not isinstance(edge_index, Tensor) or is_torch_sparse_tensor(edge_index):
                raise ValueError("'edge_weight' needs 'edge_index' as a [2, E] tensor; with a sparse adjacency the "
                                 "layer runs in learned-attention mode (convert with torch_geometric.utils."
                                 "to_edge_index for a fixed graph)")
            if edge_attr is not None:
                raise ValueError("'edge_attr' enters the attention scores, but with 'edge_weight' the graph is fixed "
                                 "and there is no attention: pass one of them")
        edge_index, _ = as_edge_index(edge_index, x.size(0))
        if checking():
            check_edge_values(edge_weight, edge_index.size(1), 'edge_weight', nonnegative=True, dim=1)
            check_finite(edge_weight, 'edge_weight')
        return edge_index, None

    def takes_kernel(self, x: Tensor, edge_index: Tensor, return_attention_weights: Optional[bool] = None) -> bool:
        r"""Whether a learned-mode forward on these inputs runs the fused kernel (see ``fused`` in the class
        docstring for when the per-edge ``propagate`` path runs instead)."""
        if not self.fused or torch.compiler.is_compiling():
            return False
        if x.device.type == 'cpu' and edge_index.size(1) < self.fused_min_edges:
            return False
        if return_attention_weights and self.training and self.dropout > 0:
            return False
        return not (self.explain or _has_reference_only_hooks(self))

    def _kernel_forward(self, x: Tensor, edge_index: Tensor, edge_attr: OptTensor, graph_key: Adj,
                        need_alpha: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """The learned step through the fused kernel: ``(out, prepared edge_index, alpha or None)``, equal to the
        ``propagate`` path (alpha is taken before dropout)."""
        N = x.size(0)
        cached = self.kernel_cache.get(graph_key, N)
        if cached is None or edge_attr is not None:
            prepared, edge_attr = self.attention.prepare_edges(edge_index, N, edge_attr)
        if cached is None:  # indices were checked by ``_check_inputs``
            csr = EdgeCSR(prepared, N, N, check_range=False)
            cached = self.kernel_cache.put(graph_key, N, (prepared, csr, csr.rowptr.diff()))  # keys per node
        edge_index, csr, num_keys = cached
        query, key = self.attention.project(x)
        value = self.lin_value(x).view(-1, self.heads, self.out_channels)
        aggregated, alpha = edge_softmax_aggregate(query, key, value, edge_index, N,
                                                   score_bias=self.attention.edge_term(query, edge_index, edge_attr),
                                                   dropout=self.dropout, training=self.training, csr=csr,
                                                   need_alpha=need_alpha,
                                                   edge_value=edge_attr if self.edge_values else None)
        if self.lin_edge_value is not None:  # sum_j alpha_ij (u_ij W_u) = (sum_j alpha_ij u_ij) W_u, per head
            aggregated, edge_part = aggregated.split([self.out_channels, aggregated.size(-1) - self.out_channels], -1)
            weight = self.lin_edge_value.weight.view(self.heads, self.out_channels, -1)
            aggregated = aggregated + torch.einsum('nhd,hcd->nhc', edge_part, weight.to(edge_part.dtype))
        out = self.combine_heads(aggregated, value, (num_keys > 0).view(-1, 1, 1))
        out = self.scale_by_degree(out, num_keys)
        return self.merge_heads(out), edge_index, alpha

    def scale_by_degree(self, out: Tensor, num_keys: OptTensor) -> Tensor:
        r"""``out [..., H, C]`` times the degree scaler ``s(d_i)`` of the keys per node or token ``num_keys [...]``
        (``[N]`` sparse, ``[B, T]`` dense; unchanged without it)."""
        if self.deg_coef is None:
            return out
        return out * degree_scale(self.deg_coef, num_keys, self.heads, self.degree_scaler).to(out.dtype)

    def attention_graph(self, x: Tensor, edge_index: Adj, edge_attr: OptTensor = None,
                        batch: OptTensor = None) -> AttentionGraph:
        r"""The learned adjacency this layer diffuses over for input ``x`` (with dropout in training mode)."""
        return self.attention(x, edge_index, edge_attr, batch)

    def fixed_coefficients(self, edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
        r"""Per-edge weights of ``I - L`` and the diagonal factor ``s_i`` such that ``-(L V)_i =
        \sum_j c_{ij} v_j - s_i v_i`` for the chosen ``normalization``."""
        src, dst = edge_index[0], edge_index[1]
        deg = scatter(edge_weight, dst, 0, num_nodes, 'sum')
        positive_degree = (deg > 0).to(edge_weight.dtype)
        if self.normalization == 'comb':
            return edge_weight, deg
        if self.normalization == 'rw':
            deg_inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
            return edge_weight * deg_inv[dst], positive_degree
        deg_inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
        return deg_inv_sqrt[dst] * edge_weight * deg_inv_sqrt[src], positive_degree

    def combine_heads(self, aggregated: Tensor, value: Tensor, self_weight: Optional[Tensor],
                      head_shape: Tuple[int, ...] = (1, -1, 1)) -> Tensor:
        r"""``eta_h (AV - s V)`` on Laplacian heads, ``AV`` on plain heads.

        ``aggregated`` and ``value`` share a layout (``[N, H, C]``, or ``[B, H, T, C]`` with ``head_shape=(1, -1, 1,
        1)``), ``self_weight`` broadcasts against them (``None``: every node has an incoming edge) and ``head_shape``
        views a per-head vector the same way."""
        if self.laplacian_heads == 0:
            return aggregated
        laplacian = aggregated - (value if self_weight is None else self_weight * value)
        laplacian = self.eta.to(value.dtype).view(head_shape) * laplacian
        if self.laplacian_heads == self.heads:
            return laplacian
        return torch.where(self.laplacian_mask.view(head_shape), laplacian, aggregated)

    def merge_heads(self, out: Tensor) -> Tensor:
        r"""``[..., H, C]`` to ``[..., H * C]`` (``concat``) or ``[..., C]`` (mean over heads), plus the bias."""
        out = out.flatten(-2) if self.concat else out.mean(dim=-2)
        return out if self.bias is None else out + self.bias

    def message(self, value_j: Tensor, alpha: Tensor, edge_value: OptTensor) -> Tensor:
        return alpha.unsqueeze(-1) * (value_j if edge_value is None else value_j + edge_value)

    def forward_dense(self, x: Tensor, mask: OptTensor = None, causal: bool = False) -> Tensor:
        r"""The same layer on token sequences ``x [B, T, F]`` through ``scaled_dot_product_attention``.

        ``(A - I) V`` is ``SDPA(q, k, v) - v``. ``mask`` is ``[B, T]`` (``True`` marks real tokens; padding neither
        attends nor is attended) or ``[1, T, T]`` / ``[B, T, T]`` (``True`` where ``i`` may attend to ``j``); ``causal``
        restricts ``i`` to ``j <= i``. A query row with no allowed key gets a zero update. The mask is used as given:
        no self-loops are added.

        Returns ``[B, T, H * C]`` (or ``[B, T, C]`` without ``concat``).
        """
        if checking():
            check_features(x, self.in_channels, dim=3, dtype=self.lin_value.weight.dtype)
            check_finite(x, 'x')
        if self.edge_dim is not None:
            raise ValueError("the dense path has no edges: 'edge_dim' must be None to use forward_dense")
        B, T, _ = x.shape
        H, C = self.heads, self.out_channels
        query = self.lin_query(x).view(B, T, H, C).transpose(1, 2)
        key = self.lin_key(x).view(B, T, H, C).transpose(1, 2)
        value = self.lin_value(x).view(B, T, H, C).transpose(1, 2)
        allowed = dense_attention_mask(mask, causal, B, T, x.device)
        num_keys = dense_key_count(allowed, causal, B, T, x.device) if self.deg_coef is not None else None
        dropout = self.dropout if self.training else 0.0
        if allowed is None:
            aggregated = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=causal)
            self_weight = None  # every row has a key (itself, at least)
        else:
            row_valid = allowed.any(dim=-1, keepdim=True)  # [B, T, 1]
            # A row without keys would give NaN (and NaN gradients); let it attend anywhere and zero it below.
            allowed = allowed | ~row_valid
            aggregated = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed.unsqueeze(1),
                                                        dropout_p=dropout)
            self_weight = row_valid.unsqueeze(1).to(x.dtype)  # [B, 1, T, 1]
            aggregated = aggregated * self_weight
        out = self.combine_heads(aggregated, value, self_weight, (1, H, 1, 1)).transpose(1, 2)  # [B, T, H, C]
        return self.merge_heads(self.scale_by_degree(out, num_keys))

    def forward_all_pairs(self, x: Tensor, batch: OptTensor = None, edge_index: OptTensor = None,
                          edge_attr: OptTensor = None) -> Tensor:
        r"""The same layer over all node pairs within each graph of ``batch``: the forward of the layer on
        :func:`~pyg_ple.full_edge_index` (self pairs included), without listing the pairs.

        With ``edge_dim``, the native edges ``edge_index [2, E]`` carry ``edge_attr [E, edge_dim]`` into the score
        of their pair (:math:`\langle q_i, e_{ij} \rangle / \sqrt{C}`, repeated edges adding up), every other pair
        none: one softmax over all pairs in which bonded pairs are told apart by their features. The work is the
        projections on the ``N`` real rows plus :func:`pyg_ple.ops.all_pairs.all_pairs_attention` (graphs in size
        buckets, each padded to its own largest, through ``scaled_dot_product_attention``). A degree scaler counts
        the graph's size as each node's keys.

        Args:
            x: node features ``[N, F]``.
            batch: graph of each node ``[N]``, sorted as in a PyG ``Batch`` (``None``: one graph).
            edge_index, edge_attr: the native edges and their features (needed exactly when the layer has
                ``edge_dim``).

        Returns ``[N, H * C]`` (or ``[N, C]`` without ``concat``).
        """
        N = x.size(0)
        if checking():
            check_features(x, self.in_channels, dim=2, dtype=self.lin_value.weight.dtype)
            check_finite(x, 'x')
            if batch is not None:
                check_batch(batch, N)
        if self.lin_edge_value is not None:
            raise ValueError("'edge_values' puts edge features into the values of their pairs, which the all-pairs "
                             "path does not list: use edge_values=False or attend over listed edges")
        bias = None
        if self.edge_dim is not None:
            if edge_index is None or edge_attr is None:
                raise ValueError(f"this layer was built with edge_dim={self.edge_dim}: pass the native 'edge_index' "
                                 "and their 'edge_attr'")
            edge_index, edge_attr = self.attention.check_inputs(x, edge_index, edge_attr)
            if batch is not None and checking():
                check_same_graph(edge_index, batch)
        elif edge_attr is not None:
            raise ValueError("'edge_attr' was given, but the layer has no edge_dim to read it with")
        query, key = self.attention.project(x)
        value = self.lin_value(x).view(-1, self.heads, self.out_channels)
        if self.edge_dim is not None:
            bias = self.attention.edge_term(query, edge_index, edge_attr)
        aggregated = all_pairs_attention(query, key, value, batch, edge_index, bias, self.dropout, self.training)
        num_keys = None
        if self.deg_coef is not None:
            num_keys = (torch.bincount(batch)[batch] if batch is not None and N
                        else torch.full((N,), N, device=x.device))
        return self.merge_heads(self.scale_by_degree(self.combine_heads(aggregated, value, None), num_keys))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'laplacian_heads={self.laplacian_heads}'
                f'{f", degree_scaler={self.degree_scaler!r}" if self.degree_scaler else ""}'
                f'{", edge_values=True" if self.edge_values else ""}'
                f'{", uniform_init=True" if self.attention.uniform_init else ""})')


def dense_attention_mask(mask: OptTensor, causal: bool, batch_size: int, num_tokens: int,
                         device: torch.device) -> OptTensor:
    r"""Combine a padding or attention ``mask`` and ``causal`` into a bool ``[B, T, T]`` (``None`` if no mask).

    A 2-D mask is always a ``[B, T]`` padding mask; pair masks are 3-D (``[1, T, T]`` shared by the batch), so the
    two can never be confused when ``B == T``."""
    if mask is None:
        return None
    B, T = batch_size, num_tokens
    if checking():
        check_tensor(mask, 'mask')
        if mask.dtype != torch.bool:
            raise TypeError(f"'mask' must be a bool tensor (got {mask.dtype})")
        if tuple(mask.shape) not in ((B, T), (1, T, T), (B, T, T)):
            raise ValueError(f"'mask' must have shape [B, T] = [{B}, {T}] (padding) or [1, T, T] / [B, T, T] "
                             f"(allowed pairs; a 2-D mask is always padding) (got {tuple(mask.shape)})")
    if mask.dim() == 2:
        allowed = mask.unsqueeze(1) & mask.unsqueeze(2)
    else:
        allowed = mask.expand(B, T, T)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return allowed
