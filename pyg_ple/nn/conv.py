r"""``LaplacianDiffusionConv``: one graph-diffusion step with the random-walk Laplacian of a learned adjacency.

The learned step runs one of two ways with the same result: PyG's per-edge ``propagate`` (the reference, seen by
hooks, explainers and ``torch.compile``) or the fused kernel of :mod:`pyg_ple.ops` (no ``[E, H, C]`` messages);
:meth:`LaplacianDiffusionConv.takes_kernel` decides which.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Tuple, Union, overload

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, NoneType, OptTensor, PairTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, scatter, to_torch_sparse_tensor

from pyg_ple.edges import as_edge_index
from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.attention import AttentionAdjacency, channel_pair, split_pair
from pyg_ple.nn.scaler import check_degree_scaler, degree_scale, dense_key_count, edge_key_count
from pyg_ple.ops.all_pairs import all_pairs_attention
from pyg_ple.ops.edge_softmax import EdgeCSR, edge_softmax_aggregate
from pyg_ple.validation import (TensorCache, check_batch, check_edge_values, check_features, check_finite,
                                check_same_graph, check_tensor, checking)

NORMALIZATIONS = ('rw', 'sym', 'comb')
FUSED_CHOICES = ('auto', True, False)

# Below this many edges the reference ``propagate`` path ran faster than the fused kernel on CPU (kernel launch and
# CSR set-up dominate): 4k-40k edges favoured the reference, 160k and more the kernel (benchmarks/results/speed.md).
FUSED_MIN_EDGES = 65_536

# MessagePassing's hook registrars whose hooks run inside ``propagate`` only: registered through the conv, such a
# hook keeps it on the ``propagate`` path until the returned handle is removed (see ``takes_kernel``).
PROPAGATE_HOOK_REGISTRARS = (
    'register_propagate_forward_pre_hook', 'register_propagate_forward_hook', 'register_message_forward_pre_hook',
    'register_message_forward_hook', 'register_aggregate_forward_pre_hook', 'register_aggregate_forward_hook',
    'register_message_and_aggregate_forward_pre_hook', 'register_message_and_aggregate_forward_hook')


class _PropagateHookHandle:
    """The handle of a hook registered through a ``PROPAGATE_HOOK_REGISTRARS`` method of the conv: it holds the conv
    on the ``propagate`` path until :meth:`remove` (also as a context manager, as ``RemovableHandle``)."""

    def __init__(self, conv: 'LaplacianDiffusionConv', handle: Any):
        self.conv, self.handle, self.active = conv, handle, True
        conv.num_propagate_hooks += 1

    def remove(self) -> None:
        if self.active:
            self.active = False
            self.conv.num_propagate_hooks -= 1
        self.handle.remove()

    def __enter__(self) -> '_PropagateHookHandle':
        return self

    def __exit__(self, *args: Any) -> None:
        self.remove()


def _counting_registrar(name: str):
    register = getattr(MessagePassing, name)

    @functools.wraps(register)
    def method(self, *args: Any, **kwargs: Any) -> _PropagateHookHandle:
        return _PropagateHookHandle(self, register(self, *args, **kwargs))

    return method


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

    On a bipartite graph, ``x = (x_src, x_dst)`` with ``in_channels = (F_src, F_dst)`` (NeighborLoader's blocks,
    ``to_hetero``), the queries come from the targets and the keys and values from the sources, and a Laplacian head
    subtracts the target's own value:

    .. math::
        \mathbf{o}^{(h)}_i = \eta_h \Big( \sum_{j \in \mathcal{N}(i)} \alpha^{(h)}_{ij}\, \mathbf{x}^{src}_j
        W_v^{(h)} - \mathbf{x}^{dst}_i W_r^{(h)} \Big), \qquad \alpha^{(h)}_{ij} = \operatorname{softmax}_j
        \big( \langle \mathbf{x}^{dst}_i W_q^{(h)}, \mathbf{x}^{src}_j W_k^{(h)} \rangle / \sqrt{C} \big),

    where :math:`W_r = W_v` (``lin_value``, bias included) when both sides have one feature size (``in_channels``
    an int, or a pair of equal known sizes): with NeighborLoader's layout, in which target ``i`` is source ``i``,
    the output is then the rows of the targets in the layer's output on the whole sampled graph. Otherwise (a pair
    of different or lazy sizes) :math:`W_r` is the target side's own projection ``lin_root`` (as
    ``TransformerConv``'s ``lin_skip``), also when a single ``x`` is given, and the operator is a diffusion from
    sources to targets with a learned target term. Self-loops join source ``i`` to target ``i`` for
    ``i < min(N_src, N_dst)`` (as in ``GATConv``); a fixed graph (``edge_weight``) takes one node set only.

    Args:
        in_channels (int or tuple): Size of each input sample, or ``(F_src, F_dst)`` for bipartite graphs; ``-1``
            derives the size from the first input (lazy initialisation, as PyG's ``Linear(-1, ...)``).
        out_channels (int): Channels per head :math:`C`.
        heads (int, optional): Number of heads :math:`H`. (default: :obj:`1`)
        concat (bool, optional): Concatenate the heads (``[N, H * C]``) or average them (``[N, C]``).
            (default: :obj:`True`)
        laplacian_heads (int, optional): How many heads are Laplacian, the **last** ones; :obj:`None` for all,
            ``0`` for standard attention. (default: :obj:`None`)
        normalization (str, optional): Laplacian of a fixed graph: ``'rw'``, ``'sym'`` or ``'comb'``.
            (default: :obj:`'rw'`)
        step_size (float, optional): Initial :math:`\eta_h` (``>= 0``) of every Laplacian head. (default: :obj:`1.`)
        learn_step_size (bool, optional): Learn :math:`\eta_h` (one scalar per head). (default: :obj:`False`)
        add_self_loops (bool, optional): Remove self-loops and add one per node before attention (learned mode
            only). (default: :obj:`True`)
        dropout (float, optional): Dropout on the attention weights. (default: :obj:`0.`)
        edge_dim (int, optional): Edge feature size for an edge term in the attention score; with :obj:`None`
            ``edge_attr`` is refused. (default: :obj:`None`)
        bias (bool, optional): Add a learned bias to the output. (default: :obj:`True`)
        fused (bool or str, optional): Which path runs the learned step: ``True`` the fused kernel of
            :mod:`pyg_ple.ops` (SDDMM, segment softmax, SpMM: no ``[E, H, C]`` messages in forward or backward;
            first-order gradients only), ``False`` PyG's per-edge ``propagate``, ``'auto'`` the kernel except on CPU
            below :attr:`fused_min_edges` edges. Both give the same result; :meth:`takes_kernel` is the one rule,
            including the cases that take ``propagate`` whatever ``fused`` says (``torch.compile`` tracing, explain
            mode, the conv's own MessagePassing hooks, dropped weights requested). (default: :obj:`'auto'`)
        degree_scaler (bool or str, optional): Learn the degree scaler above: ``True`` (or ``'log'``) for
            :math:`\log(1 + d_i)`, ``'linear'`` for :math:`d_i`, ``False`` for none (learned mode only).
            (default: :obj:`False`)
        edge_values (bool, optional): Also add the projected edge features to the values (see above; needs
            ``edge_dim``). (default: :obj:`False`)
        uniform_init (bool, optional): Start the attention uniform over each node's candidate keys (``W_q = 0``,
            see :class:`~pyg_ple.AttentionAdjacency`): a Laplacian head then starts as the random-walk Laplacian of
            the candidate graph, :math:`-\eta_h (I - D^{-1} W) V^{(h)}`. (default: :obj:`False`)
        fill_value (float or torch.Tensor or str, optional): The edge features of the added self-loops (with
            ``edge_dim``): a value, or how to reduce each node's incoming edge features (``'add'``, ``'mean'``,
            ``'min'``, ``'max'``, ``'mul'``), as in ``GATConv``. (default: :obj:`'mean'`)
        **kwargs (optional): Additional arguments of :class:`torch_geometric.nn.conv.MessagePassing` (``flow``
            must stay ``'source_to_target'``: attention is normalised over each node's incoming edges).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F)` or :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (int64 or int32; a ``torch_geometric.EdgeIndex`` keeps its cached
          sort) or a sparse :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)` adjacency (its pattern: values are ignored),
          edge weights :math:`(|\mathcal{E}|)` *(optional, fixed graph)*,
          edge features :math:`(|\mathcal{E}|, D)` (optional, learned mode; ``[E]`` when ``edge_dim=1``)
        - **output:** node features :math:`(|\mathcal{V_t}|, H * C)` or :math:`(|\mathcal{V_t}|, C)` if
          ``concat=False``. With ``return_attention_weights=True`` also the weights of the edge set attended over
          (self-loops handled): ``(edge_index (2, |E'|), alpha (|E'|, H))`` for a ``[2, E]`` input, and for a
          sparse input an adjacency of its layout and shape whose values are ``alpha`` (PyG's convention).
    """

    #: On CPU, learned-mode graphs with fewer edges take ``propagate``; set it on an instance (``0``: the kernel at
    #: every size) or on the class to move the threshold.
    fused_min_edges: int = FUSED_MIN_EDGES

    # MessagePassing's propagate-only hook registrars, counting the hooks in place (see ``takes_kernel``).
    register_propagate_forward_pre_hook = _counting_registrar('register_propagate_forward_pre_hook')
    register_propagate_forward_hook = _counting_registrar('register_propagate_forward_hook')
    register_message_forward_pre_hook = _counting_registrar('register_message_forward_pre_hook')
    register_message_forward_hook = _counting_registrar('register_message_forward_hook')
    register_aggregate_forward_pre_hook = _counting_registrar('register_aggregate_forward_pre_hook')
    register_aggregate_forward_hook = _counting_registrar('register_aggregate_forward_hook')
    register_message_and_aggregate_forward_pre_hook = _counting_registrar(
        'register_message_and_aggregate_forward_pre_hook')
    register_message_and_aggregate_forward_hook = _counting_registrar('register_message_and_aggregate_forward_hook')

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
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
        fused: Union[bool, str] = 'auto',
        degree_scaler: Union[bool, str] = False,
        edge_values: bool = False,
        uniform_init: bool = False,
        fill_value: Union[float, Tensor, str] = 'mean',
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
        if kwargs.get('flow', 'source_to_target') != 'source_to_target':
            raise ValueError(f"'flow' must be 'source_to_target' (got {kwargs['flow']!r}): attention is normalised "
                             f"over each node's incoming edges; for the other direction pass edge_index.flip(0)")
        super().__init__(node_dim=0, **kwargs)
        src_channels, dst_channels = channel_pair(in_channels)
        for name, value in (('out_channels', out_channels), ('heads', heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got {value!r})")
        if fused not in FUSED_CHOICES or not isinstance(fused, (bool, str)):
            raise ValueError(f"'fused' must be 'auto', True or False (got {fused!r})")
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
                                            uniform_init, fill_value)
        self.lin_value = Linear(src_channels, heads * out_channels)
        self.lin_edge_value = Linear(edge_dim, heads * out_channels, bias=False) if edge_values else None
        # The target side's own value projection for the Laplacian term of a bipartite layer whose two sides may
        # differ (see the class docstring); a layer with one feature size reads the targets with ``lin_value``.
        shared = not isinstance(in_channels, tuple) or (src_channels == dst_channels != -1)
        self.lin_root = None if shared or laplacian_heads == 0 else Linear(dst_channels, heads * out_channels)
        self.register_buffer('laplacian_mask', torch.arange(heads) >= heads - laplacian_heads, persistent=False)
        eta = torch.full((heads,), self.step_size)
        if learn_step_size:
            self.eta = Parameter(eta)
        else:
            self.register_buffer('eta', eta)
        self.bias = Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.deg_coef = Parameter(torch.empty(2, heads * out_channels)) if degree_scaler else None
        # The fused kernel's prepared graph (edge set, EdgeCSR, keys per node) for the last edge_index seen.
        self.kernel_cache = TensorCache(capacity=1)
        self.num_propagate_hooks = 0  # see ``takes_kernel``
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
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        with torch.no_grad():
            self.eta.fill_(self.step_size)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        if self.deg_coef is not None:  # theta_1 = 1, theta_2 = 0: the layer without the scaler
            with torch.no_grad():
                self.deg_coef[0].fill_(1.0)
                self.deg_coef[1].zero_()

    @overload
    def forward(
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: NoneType = None,
    ) -> Tensor:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Tensor,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: SparseTensor,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, SparseTensor]:
        pass

    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        edge_attr: OptTensor = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]], Tuple[Tensor, SparseTensor]]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The node features, or ``(x_src, x_dst)``.
            edge_index (torch.Tensor or SparseTensor): The edges ``[2, E]`` (a ``torch_geometric.EdgeIndex`` keeps
                its sort), or a sparse ``[N_dst, N_src]`` adjacency (``torch.sparse`` or ``SparseTensor``).
            edge_weight (torch.Tensor, optional): Weights ``[E]`` of a fixed graph (no attention).
                (default: :obj:`None`)
            edge_attr (torch.Tensor, optional): Edge features ``[E, edge_dim]`` for the attention scores.
                (default: :obj:`None`)
            return_attention_weights (bool, optional): Also return the weights of the edge set attended over
                (self-loops handled): ``(edge_index, alpha [E', H])`` for a ``[2, E]`` input; for a ``torch.sparse``
                input ``(adj, alpha)`` with ``adj`` of its layout and shape holding ``alpha`` as values and
                ``alpha`` in ``adj``'s value order; for a ``SparseTensor`` that ``SparseTensor`` (as PyG's
                ``GATConv``). (default: :obj:`None`)
        """
        graph_key = edge_index  # the caller's tensor object keys the kernel's CSR cache
        edge_index, edge_attr = self._check_inputs(x, edge_index, edge_weight, edge_attr)
        x_src, x_dst = split_pair(x)
        size = x_dst.size(0) if isinstance(x, Tensor) else (x_src.size(0), x_dst.size(0))
        if edge_weight is None and self.takes_kernel(x_dst, edge_index, return_attention_weights):
            out, edge_index, coef = self._kernel_forward(x, edge_index, edge_attr, graph_key,
                                                         bool(return_attention_weights))
        else:
            value = self.lin_value(x_src).view(-1, self.heads, self.out_channels)
            edge_value = None
            if edge_weight is None:  # learned attention
                edge_index, edge_attr = self.attention.prepare_edges(edge_index, size, edge_attr)
                coef = self.attention(x, edge_index, edge_attr, prepared=True).weight
                if self.lin_edge_value is not None:
                    edge_value = self.lin_edge_value(edge_attr).view(-1, self.heads, self.out_channels)
                num_keys = edge_key_count(edge_index, x_dst.size(0))
                self_weight = num_keys > 0  # nodes with an incoming edge
            else:  # fixed graph; the output keeps the features' dtype whatever the weights' dtype
                coef, self_weight = self.fixed_coefficients(edge_index, edge_weight.to(x.dtype), x.size(0))
                coef = coef.unsqueeze(-1).expand(-1, self.heads)
                num_keys = None  # no degree scaler in fixed-graph mode
            pair_size = (x_src.size(0), x_dst.size(0))
            aggregated = self.propagate(edge_index, value=value, alpha=coef, edge_value=edge_value,
                                        size=pair_size)  # [N_dst, H, C]
            out = self.merge_heads(self.scale_by_degree(
                self.combine_heads(aggregated, self.target_value(x, value), self_weight.view(-1, 1, 1)), num_keys))
        if return_attention_weights:
            return out, weights_like(graph_key, edge_index, coef, x_src.size(0), x_dst.size(0))
        return out

    def target_value(self, x: Union[Tensor, PairTensor], value: Tensor) -> OptTensor:
        r"""The values :math:`\mathbf{v}_i` of the targets ``[N_dst, H, C]`` that a Laplacian head subtracts:
        ``x_dst`` through ``lin_root`` when the layer has one (a pair of feature sizes, also for a single ``x``),
        else ``value`` itself on one node set or ``x_dst`` through ``lin_value`` (``None`` without Laplacian
        heads)."""
        if self.laplacian_heads == 0:
            return None
        if self.lin_root is None and isinstance(x, Tensor):
            return value
        lin = self.lin_value if self.lin_root is None else self.lin_root
        return lin(split_pair(x)[1]).view(-1, self.heads, self.out_channels)

    def _check_inputs(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor,
                      edge_attr: OptTensor) -> Tuple[Tensor, OptTensor]:
        """``(edge_index [2, E] int64, edge_attr [E, edge_dim] or None)``, the inputs checked outside
        ``torch.compile`` (value checks once per tensor object and version)."""
        if edge_weight is None:  # learned mode: the attention module's inputs
            return self.attention.check_inputs(x, edge_index, edge_attr)
        if not isinstance(x, Tensor):
            raise ValueError("'edge_weight' gives a fixed graph on one node set: a bipartite 'x' (a pair) needs "
                             "learned attention (no 'edge_weight')")
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
        r"""Whether a learned-mode forward runs the fused kernel (``True``) or the per-edge ``propagate``
        (``False``): the one rule behind ``fused``.

        ``propagate`` runs, whatever ``fused`` says, while

        1. ``torch.compile`` traces (``propagate`` compiles without graph breaks; the kernel is opaque to it),
        2. explain mode is on (``conv.explain``, set by PyG's ``Explainer``: its masks act inside ``propagate``),
        3. a hook registered through one of the conv's own ``register_{propagate,message,aggregate,
           message_and_aggregate}_forward[_pre]_hook`` methods is in place (:attr:`num_propagate_hooks` counts them;
           they run inside ``propagate``, and PyG's ``AttentionExplainer`` reads the weights with one),
        4. attention weights are requested in training mode with ``dropout > 0`` (only ``propagate`` returns the
           weights with dropout applied).

        Otherwise ``fused=True`` runs the kernel, ``fused=False`` runs ``propagate``, and ``fused='auto'`` runs the
        kernel except on CPU below :attr:`fused_min_edges` edges (``x`` gives the device, ``edge_index`` the count).
        Forward hooks of ``torch.nn.Module`` on ``conv.attention`` (or registered for all modules) see only the
        ``propagate`` path, which calls that module: set ``fused=False`` when relying on them.
        """
        if torch.compiler.is_compiling() or self.explain or self.num_propagate_hooks:
            return False
        if return_attention_weights and self.training and self.dropout > 0:
            return False
        if self.fused == 'auto':
            return x.device.type != 'cpu' or edge_index.size(1) >= self.fused_min_edges
        return bool(self.fused)

    def _kernel_forward(self, x: Tensor, edge_index: Tensor, edge_attr: OptTensor, graph_key: Adj,
                        need_alpha: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """The learned step through the fused kernel: ``(out, prepared edge_index, alpha or None)``, equal to the
        ``propagate`` path (alpha is taken before dropout)."""
        x_src, x_dst = split_pair(x)
        N = x_dst.size(0)
        size = N if isinstance(x, Tensor) else (x_src.size(0), N)
        cached = self.kernel_cache.get(graph_key, size)
        if cached is None or edge_attr is not None:
            prepared, edge_attr = self.attention.prepare_edges(edge_index, size, edge_attr)
        if cached is None:  # indices were checked by ``_check_inputs``
            csr = EdgeCSR(prepared, N, x_src.size(0), check_range=False)
            cached = self.kernel_cache.put(graph_key, size, (prepared, csr, csr.rowptr.diff()))  # keys per node
        edge_index, csr, num_keys = cached
        query, key = self.attention.project(x)
        value = self.lin_value(x_src).view(-1, self.heads, self.out_channels)
        aggregated, alpha = edge_softmax_aggregate(query, key, value, edge_index, N,
                                                   score_bias=self.attention.edge_term(query, edge_index, edge_attr),
                                                   dropout=self.dropout, training=self.training, csr=csr,
                                                   need_alpha=need_alpha,
                                                   edge_value=edge_attr if self.edge_values else None)
        if self.lin_edge_value is not None:  # sum_j alpha_ij (u_ij W_u) = (sum_j alpha_ij u_ij) W_u, per head
            aggregated, edge_part = aggregated.split([self.out_channels, aggregated.size(-1) - self.out_channels], -1)
            weight = self.lin_edge_value.weight.view(self.heads, self.out_channels, -1)
            aggregated = aggregated + torch.einsum('nhd,hcd->nhc', edge_part, weight.to(edge_part.dtype))
        out = self.combine_heads(aggregated, self.target_value(x, value), (num_keys > 0).view(-1, 1, 1))
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
        root = value if self.lin_root is None else self.lin_root(x).view(B, T, H, C).transpose(1, 2)
        out = self.combine_heads(aggregated, root, self_weight, (1, H, 1, 1)).transpose(1, 2)  # [B, T, H, C]
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
        out = self.combine_heads(aggregated, self.target_value(x, value), None)
        return self.merge_heads(self.scale_by_degree(out, num_keys))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, '
                f'laplacian_heads={self.laplacian_heads}'
                f'{f", degree_scaler={self.degree_scaler!r}" if self.degree_scaler else ""}'
                f'{", edge_values=True" if self.edge_values else ""}'
                f'{", uniform_init=True" if self.attention.uniform_init else ""})')


def weights_like(adj: Adj, edge_index: Tensor, alpha: Tensor, num_src: int,
                 num_dst: int) -> Union[Tuple[Tensor, Tensor], SparseTensor]:
    r"""The attention weights ``alpha [E, H]`` of the edges ``edge_index [2, E]`` in the layout of the layer's input
    ``adj`` (see ``return_attention_weights`` of :meth:`LaplacianDiffusionConv.forward`)."""
    if isinstance(adj, SparseTensor):
        return SparseTensor(row=edge_index[1], col=edge_index[0], value=alpha, sparse_sizes=(num_dst, num_src))
    if isinstance(adj, Tensor) and is_torch_sparse_tensor(adj):
        weights = to_torch_sparse_tensor(edge_index.flip(0), alpha, size=(num_dst, num_src), layout=adj.layout)
        return weights, weights.values()
    return edge_index, alpha


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
