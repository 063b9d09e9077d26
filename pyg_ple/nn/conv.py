r"""``LaplacianDiffusionConv``: one graph-diffusion step with the random-walk Laplacian of a learned adjacency."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor, scatter

from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.attention import AttentionAdjacency
from pyg_ple.edges import as_edge_index
from pyg_ple.ops.edge_softmax import can_use_fused, fused_conv_forward
from pyg_ple.validation import check_edge_values, check_features, check_finite, check_tensor, checking

NORMALIZATIONS = ('rw', 'sym', 'comb')

# Below this many edges the reference ``propagate`` path ran faster than the fused kernel on CPU (kernel launch and
# CSR set-up dominate): 4k-40k edges favoured the reference, 160k and more the kernel (benchmarks/results/speed.md).
FUSED_MIN_EDGES = 65_536


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
    With ``edge_weight`` given there is no attention: the graph is fixed, and a Laplacian head returns
    :math:`-\eta_h L V^{(h)}` with

    * ``'rw'``: :math:`L = I - D^{-1} W`, * ``'sym'``: :math:`L = I - D^{-1/2} W D^{-1/2}`
      (``networkx.normalized_laplacian_matrix``), * ``'comb'``: :math:`L = D - W` (``networkx.laplacian_matrix``),

    where :math:`W_{ij}` is the weight of ``j -> i`` and :math:`D` the weighted in-degree; a node with no incoming edge
    has a zero row, as in networkx. A plain head returns :math:`P V^{(h)}` with the propagation matrix
    :math:`P` = :math:`D^{-1} W`, :math:`D^{-1/2} W D^{-1/2}` or :math:`W` (the off-diagonal part that ``L`` subtracts).
    The layer returns the update only (no residual, no output projection).

    Args:
        in_channels: input features ``F``.
        out_channels: channels per head ``C``.
        heads: number of heads ``H``.
        concat: concatenate heads (``[N, H * C]``) or average them (``[N, C]``).
        laplacian_heads: how many heads are Laplacian, the **last** ones; ``None`` means all, ``0`` gives standard
            attention.
        normalization: Laplacian of a fixed graph: ``'rw'``, ``'sym'`` or ``'comb'``.
        step_size: initial :math:`\eta_h` of every Laplacian head.
        learn_step_size: learn :math:`\eta_h` (one scalar per head).
        add_self_loops: remove self-loops and add one per node before attention (learned mode only).
        dropout: dropout on the attention weights.
        edge_dim: edge feature size for an edge term in the attention score, or ``None``.
        bias: add a learned bias to the output.
        fused: in learned mode, use the fused kernel of :mod:`pyg_ple.ops.edge_softmax` (SDDMM, segment softmax, SpMM: no
            ``[E, H, C]`` messages in forward or backward) unless a hook, an explainer or ``torch.compile`` needs
            the per-edge ``propagate`` path, or, on CPU, the graph has fewer than ``FUSED_MIN_EDGES`` edges (where
            ``propagate`` is faster); ``False`` always takes the reference ``propagate`` path. The kernel
            supports first-order gradients only: use ``fused=False`` for double backward.
        **kwargs: passed to :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** ``x [N, F]``, ``edge_index [2, E]`` or sparse ``[N, N]``, ``edge_weight [E]`` (optional),
          ``edge_attr [E, edge_dim]`` (optional)
        - **output:** ``[N, H * C]`` or ``[N, C]``; with ``return_attention_weights=True`` also
          ``(edge_index [2, E'], alpha [E', H])``.
    """

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
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
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
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1) (got {dropout!r})")

        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.laplacian_heads, self.normalization = laplacian_heads, normalization
        self.step_size, self.learn_step_size = float(step_size), learn_step_size
        self.add_self_loops, self.dropout, self.edge_dim, self.fused = add_self_loops, dropout, edge_dim, fused

        self.attention = AttentionAdjacency(in_channels, out_channels, heads, edge_dim, add_self_loops, dropout)
        self.lin_value = Linear(in_channels, heads * out_channels)
        self.register_buffer('laplacian_mask', torch.arange(heads) >= heads - laplacian_heads, persistent=False)
        eta = torch.full((heads,), self.step_size)
        if learn_step_size:
            self.eta = Parameter(eta)
        else:
            self.register_buffer('eta', eta)
        self.bias = Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
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
        with torch.no_grad():
            self.eta.fill_(self.step_size)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        if checking():
            check_features(x, self.in_channels, dim=2, dtype=self.lin_value.weight.dtype)
        num_nodes = x.size(0)
        is_sparse = not (isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index))
        edge_index, _ = as_edge_index(edge_index, num_nodes, self.in_channels, x)
        if checking() and edge_weight is not None and is_sparse:
            raise ValueError("'edge_weight' needs 'edge_index' as a [2, E] tensor; with a sparse adjacency the "
                             "layer runs in learned-attention mode (convert with torch_geometric.utils."
                             "to_edge_index for a fixed graph)")
        if checking() and edge_weight is None:
            check_edge_values(edge_attr, edge_index.size(1), 'edge_attr', dim=None if self.edge_dim is None else 2)
            if edge_attr is not None and self.edge_dim is not None and edge_attr.size(-1) != self.edge_dim:
                raise ValueError(f"'edge_attr' must have edge_dim={self.edge_dim} features "
                                 f"(got shape {tuple(edge_attr.shape)})")
        if (edge_weight is None and self.fused and checking()
                and self._fused_applies(x, edge_index, return_attention_weights)):
            return fused_conv_forward(self, x, edge_index, edge_attr, bool(return_attention_weights))
        value = self.lin_value(x).view(-1, self.heads, self.out_channels)

        if edge_weight is None:
            graph = self.attention(x, edge_index, edge_attr, checked=True)
            edge_index, coef = graph.edge_index, graph.weight
            self_weight = (scatter(torch.ones_like(coef[:, 0]), edge_index[1], 0, num_nodes, 'sum') > 0).to(x.dtype)
        else:
            if checking():
                check_edge_values(edge_weight, edge_index.size(1), 'edge_weight', nonnegative=True, dim=1)
                check_finite(edge_weight, 'edge_weight')
            # The output keeps the features' dtype whatever the weights' dtype.
            coef, self_weight = self.fixed_coefficients(edge_index, edge_weight.to(x.dtype), num_nodes)
            coef = coef.unsqueeze(-1).expand(-1, self.heads)

        aggregated = self.propagate(edge_index, value=value, alpha=coef)  # [N, H, C]
        out = self.merge_heads(self.combine_heads(aggregated, value, self_weight.view(-1, 1, 1)))
        if return_attention_weights:
            return out, (edge_index, coef)
        return out

    def _fused_applies(self, x: Tensor, edge_index: Tensor, return_attention_weights: Optional[bool]) -> bool:
        # The kernel covers float32/float64 (any dtype on CUDA) and first-order gradients; hooks, explainers and
        # torch.compile (which fuses the reference path itself, without graph breaks) take ``propagate``.
        if x.device.type == 'cpu' and (x.dtype not in (torch.float32, torch.float64)
                                       or edge_index.size(1) < FUSED_MIN_EDGES):
            return False
        return can_use_fused(self, bool(return_attention_weights))

    def attention_graph(self, x: Tensor, edge_index: Adj, edge_attr: OptTensor = None,
                        batch: OptTensor = None) -> AttentionGraph:
        r"""The learned adjacency this layer diffuses over for input ``x`` (with dropout in training mode)."""
        return self.attention(x, edge_index, edge_attr, batch)

    def fixed_coefficients(self, edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
        r"""Per-edge weights of ``I - L`` and the diagonal factor ``s_i`` such that ``-(L V)_i =
        \sum_j c_{ij} v_j - s_i v_i`` for the chosen ``normalization``."""
        src, dst = edge_index[0], edge_index[1]
        deg = scatter(edge_weight, dst, 0, num_nodes, 'sum')
        has_in = (deg > 0).to(edge_weight.dtype)
        if self.normalization == 'comb':
            return edge_weight, deg
        if self.normalization == 'rw':
            deg_inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
            return edge_weight * deg_inv[dst], has_in
        deg_inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
        return deg_inv_sqrt[dst] * edge_weight * deg_inv_sqrt[src], has_in

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

    def message(self, value_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * value_j

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
        return self.merge_heads(self.combine_heads(aggregated, value, self_weight, (1, H, 1, 1)).transpose(1, 2))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'laplacian_heads={self.laplacian_heads})')


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
