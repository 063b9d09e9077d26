r"""The transformer block of pyg-ple, its named variants, the PLE initialisation and a stack of blocks.

* :class:`PLETransformerBlock`: a transformer block (pre- or post-norm; LayerNorm, BatchNorm or RMSNorm) whose
  attention is a Laplacian-diffusion step.
* :data:`VARIANTS` and :func:`variant_kwargs`: the named attention variants (``'transformer'``, ``'laplacian'``,
  ``'mixed'`` and the learned-step ones) as block arguments.
* :func:`ple_init_`: the initialisation that makes a block one PLE gradient step (also ``ple_init=True``).
* :class:`PLETransformer`: ``num_layers`` blocks and a final norm (pre-norm blocks), the stack every model of pyg-ple
  uses.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_ple.edges import all_pairs_edge_attr, full_edge_index
from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.conv import LaplacianDiffusionConv, dense_attention_mask
from pyg_ple.nn.scaler import check_degree_scaler
from pyg_ple.validation import (check_batch, check_edge_index, check_features, check_same_graph, check_tensor,
                                checking)

__all__ = ['PLETransformerBlock', 'PLETransformer', 'VARIANTS', 'variant_kwargs', 'ple_init_', 'NORMS', 'make_norm',
           'apply_norm']

# The block's normalisation layers by name.
NORMS: dict[str, type] = {'layer': nn.LayerNorm, 'batch': nn.BatchNorm1d, 'rms': nn.RMSNorm}

# Named attention variants: which heads are Laplacian ('none', the last 'half' = heads // 2, or 'all') and whether
# the step size is learned.
VARIANTS: dict[str, tuple[str, bool]] = {
    'transformer': ('none', False),
    'laplacian': ('all', False),
    'mixed': ('half', False),
    'laplacian_learned_eta': ('all', True),
    'mixed_learned_eta': ('half', True),
}
_LAPLACIAN_HEADS = {'none': lambda heads: 0, 'half': lambda heads: heads // 2, 'all': lambda heads: heads}


def variant_kwargs(name: str, heads: int) -> dict[str, Any]:
    r"""Block keyword arguments (``laplacian_heads``, ``learn_step_size``) of the variant ``name`` with ``heads``
    heads: ``'transformer'`` (softmax attention ``A V`` in every head), ``'laplacian'`` (every head
    :math:`\eta (A - I) V`), ``'mixed'`` (the last ``heads // 2`` heads Laplacian), and ``'laplacian_learned_eta'`` /
    ``'mixed_learned_eta'`` (the same with a learned step size)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"'heads' must be a positive int (got {heads!r})")
    which, learn = VARIANTS[name]
    return {'laplacian_heads': _LAPLACIAN_HEADS[which](heads), 'learn_step_size': learn}


def make_norm(norm: str, channels: int) -> nn.Module:
    r"""The normalisation layer named ``norm`` (``'layer'``, ``'batch'`` or ``'rms'``, see :data:`NORMS`) over
    ``channels`` features."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"'norm' must be one of {', '.join(map(repr, NORMS))} (got {norm!r})")
    return NORMS[norm](channels)


def apply_norm(norm: nn.Module, x: Tensor, mask: OptTensor = None) -> Tensor:
    r"""``norm`` over the last dimension of ``x [N, F]`` or ``[B, T, F]``.

    A BatchNorm takes its statistics over all nodes or tokens; on a sequence batch with a ``[B, T]`` padding
    ``mask`` over the real tokens only, and padding tokens come back as zeros (selecting them gives a data-dependent
    shape: ``torch.compile(fullgraph=True)`` refuses that one case). Other norms act on each row."""
    if not isinstance(norm, nn.BatchNorm1d) or x.dim() == 2:
        return norm(x)
    if mask is not None and mask.dim() == 2:
        out = x.new_zeros(x.shape)
        out[mask] = norm(x[mask])
        return out
    return norm(x.reshape(-1, x.size(-1))).view_as(x)


def _check_flag(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be True or False (got {value!r})")


def _check_probability(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{name}' must be a float in [0, 1) (got {value!r})")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"'{name}' must be in [0, 1) (got {value!r})")


class PLETransformerBlock(nn.Module):
    r"""Transformer block read as one step of probabilistic Laplacian Eigenmaps inference.

    Pre-norm (``prenorm=True``, the default) and post-norm (``prenorm=False``, as in GPS and GRIT):

    .. math::
        \text{pre:}\quad \mathbf{h} = \mathbf{x} + \mathrm{conv}(N_1(\mathbf{x})) W_o, \quad
        \mathbf{out} = \mathbf{h} + \mathrm{MLP}(N_2(\mathbf{h})); \qquad
        \text{post:}\quad \mathbf{h} = N_1(\mathbf{x} + \mathrm{conv}(\mathbf{x}) W_o), \quad
        \mathbf{out} = N_2(\mathbf{h} + \mathrm{MLP}(\mathbf{h})),

    where :math:`\mathrm{conv}(\mathbf{x}) = \eta (A - I)\, \mathbf{x} W_v` with :math:`A` the attention graph of
    :class:`~pyg_ple.LaplacianDiffusionConv` (standard heads use :math:`A` in place of :math:`\eta (A - I)`; with
    ``degree_scaler`` each head is also scaled by :math:`s(d_i)`) and :math:`N_1, N_2` the chosen ``norm``. The conv
    computes the update only; the block owns the output projection :math:`W_o` (``proj``), both residual
    connections, the two norms (``norm1``, ``norm2``) and the MLP. The same parameters run three ways:

    - ``block(x [N, F], edge_index, batch=None, edge_attr=None)``: over a graph's edges (sparse path);
    - ``block(x [N, F], batch=batch)`` (no ``edge_index``): all pairs within each graph of a PyG batch, through
      :meth:`~pyg_ple.LaplacianDiffusionConv.forward_all_pairs` (graphs in size buckets through
      ``scaled_dot_product_attention``, the pairs never listed); the same as the sparse path over
      :func:`~pyg_ple.full_edge_index`;
    - ``block(x [N, F], edge_index, batch=batch, edge_attr=edge_attr, all_pairs=True)``: all pairs as above, the
      native edges ``edge_index`` adding their features to the scores of their pairs (a block built with
      ``edge_dim``: a graph transformer whose global attention knows the bonds);
    - ``block(x [B, T, F], mask=None, causal=False)``: token sequences, through the dense path.

    ``block(x, causal=True)`` equals ``block(x.reshape(B * T, F), sequence_edge_index(T, B, causal=True))`` reshaped.
    A block built with ``edge_dim`` runs on graphs with ``edge_index`` and ``edge_attr`` (sequences have no edge
    features).

    Args:
        channels: model width ``F`` (a multiple of ``heads``).
        heads: attention heads.
        laplacian_heads: how many (the last) heads are Laplacian; ``None`` means all, ``0`` standard attention
            (:func:`variant_kwargs` gives the named variants).
        mlp_ratio: hidden width of the MLP relative to ``channels``.
        dropout: dropout after the output projection and in the MLP, in ``[0, 1)``.
        attention_dropout: dropout on the attention weights, in ``[0, 1)``.
        step_size, learn_step_size, add_self_loops, edge_dim, edge_values, uniform_init: see
            :class:`~pyg_ple.LaplacianDiffusionConv` (``uniform_init``: the attention starts uniform over each
            node's candidate keys; not with ``ple_init``).
        ple_init: initialise (and re-initialise in :meth:`reset_parameters`) as one PLE gradient step, see
            :func:`ple_init_`.
        norm: ``'layer'`` (``torch.nn.LayerNorm``), ``'batch'`` (``torch.nn.BatchNorm1d`` with statistics over all
            nodes or tokens; on a ``[B, T, F]`` batch with a ``[B, T]`` padding mask over the real tokens only, see
            :func:`apply_norm`) or ``'rms'`` (``torch.nn.RMSNorm``).
        prenorm: pre-norm (``True``) or post-norm (``False``) residuals, see above.
        degree_scaler: learn a degree-dependent conductance in the conv, ``True``/``'log'`` or ``'linear'`` in
            the degree (see :class:`~pyg_ple.LaplacianDiffusionConv`; it starts as the identity).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        laplacian_heads: Optional[int] = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        step_size: float = 1.0,
        learn_step_size: bool = False,
        add_self_loops: bool = True,
        edge_dim: Optional[int] = None,
        ple_init: bool = False,
        norm: str = 'layer',
        prenorm: bool = True,
        degree_scaler: Union[bool, str] = False,
        edge_values: bool = False,
        uniform_init: bool = False,
    ):
        super().__init__()
        if uniform_init and ple_init:
            raise ValueError("'uniform_init' and 'ple_init' start the queries differently (W_q = 0, W_q = I): set one")
        if not isinstance(heads, int) or heads < 1 or not isinstance(channels, int) or channels % heads != 0:
            raise ValueError(f"'channels' must be a positive multiple of 'heads' (got channels={channels!r}, "
                             f"heads={heads!r})")
        _check_probability(dropout, 'dropout')
        _check_probability(attention_dropout, 'attention_dropout')
        hidden = int(round(channels * mlp_ratio))
        if hidden < 1:
            raise ValueError(f"'mlp_ratio' must give a positive hidden width (got {mlp_ratio!r})")
        _check_flag(prenorm, 'prenorm')
        degree_scaler = check_degree_scaler(degree_scaler)
        self.channels, self.heads, self.ple_init = channels, heads, bool(ple_init)
        self.norm, self.prenorm = norm, prenorm
        self.norm1 = make_norm(norm, channels)
        self.conv = LaplacianDiffusionConv(channels, channels // heads, heads, concat=True,
                                           laplacian_heads=laplacian_heads, step_size=step_size,
                                           learn_step_size=learn_step_size, add_self_loops=add_self_loops,
                                           dropout=attention_dropout, edge_dim=edge_dim, bias=False,
                                           degree_scaler=degree_scaler, edge_values=edge_values,
                                           uniform_init=uniform_init)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = make_norm(norm, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, channels))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm1.reset_parameters()
        self.conv.reset_parameters()
        self.proj.reset_parameters()
        self.norm2.reset_parameters()
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.ple_init:
            ple_init_(self)

    def _needs_edges(self, edge_index: Optional[Adj]) -> None:
        if edge_index is None and self.conv.edge_dim is not None:
            raise ValueError(f"this block was built with edge_dim={self.conv.edge_dim}: pass 'edge_index' and "
                             "'edge_attr' (all-pairs attention and [B, T, F] sequences have no edge features)")

    def forward(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False,
                all_pairs: bool = False) -> Tensor:
        if checking():
            check_tensor(x, 'x', floating=True)
            if x.dim() not in (2, 3):
                raise ValueError(f"'x' must be [N, F] (graph nodes) or [B, T, F] (token sequences) "
                                 f"(got shape {tuple(x.shape)})")
            check_features(x, self.channels, dtype=self.proj.weight.dtype)
            if x.dim() == 2 and batch is not None:
                check_batch(batch, x.size(0))
                if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
                    check_edge_index(edge_index, x.size(0))
                    check_same_graph(edge_index, batch)
        self._needs_edges(edge_index)
        h = self._conv_input(x, mask)
        if x.dim() == 3:
            if edge_index is not None or batch is not None or all_pairs:
                raise ValueError("a [B, T, F] sequence takes 'mask' and 'causal', not 'edge_index', 'batch' or "
                                 "'all_pairs'")
            update = self.conv.forward_dense(h, mask=mask, causal=causal)
        elif mask is not None or causal:
            raise ValueError("'mask' and 'causal' apply to [B, T, F] sequences; on a graph pass 'edge_index'")
        elif edge_index is not None and not all_pairs:
            update = self.conv(h, edge_index, edge_attr=edge_attr)
        else:
            update = self.conv.forward_all_pairs(h, batch, edge_index, edge_attr)
        if self.prenorm:
            x = x + self.dropout(self.proj(update))
            return x + self.dropout(self.mlp(apply_norm(self.norm2, x, mask)))
        x = apply_norm(self.norm1, x + self.dropout(self.proj(update)), mask)
        return apply_norm(self.norm2, x + self.dropout(self.mlp(x)), mask)

    def _conv_input(self, x: Tensor, mask: OptTensor) -> Tensor:
        # Pre-norm blocks attend over the normalised stream, post-norm blocks over the stream itself.
        return apply_norm(self.norm1, x, mask if x.dim() == 3 else None) if self.prenorm else x

    @torch.no_grad()
    def attention_graph(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                        edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False,
                        all_pairs: bool = False) -> AttentionGraph:
        r"""The attention graph this block diffuses over for input ``x`` (the arguments of :meth:`forward`).

        Graph nodes ``[N, F]`` use ``edge_index`` (all pairs within each graph of ``batch`` when ``None`` or with
        ``all_pairs``, listed with :func:`~pyg_ple.edges.all_pairs_edge_attr`). A
        sequence batch ``[B, T, F]`` gives node ``b * T + t`` for token ``t`` of sequence ``b`` and an edge
        ``j -> i`` for every pair the dense path lets ``i`` attend to under ``mask`` and ``causal``, weighted as
        ``forward`` weighs it (``scaled_dot_product_attention`` under the same mask): padded tokens and query rows
        without an allowed key have no edges. In training mode the weights include attention dropout."""
        self._needs_edges(edge_index)
        if x.dim() != 3:
            if mask is not None or causal:
                raise ValueError("'mask' and 'causal' apply to [B, T, F] sequences; on a graph pass 'edge_index'")
            h = self._conv_input(x, None)
            if edge_index is not None and not all_pairs:
                return self.conv.attention_graph(h, edge_index, edge_attr, batch)
            if self.conv.edge_dim is None:
                return self.conv.attention_graph(h, full_edge_index(batch, x.size(0)), None, batch)
            pairs, pair_attr = all_pairs_edge_attr(edge_index, edge_attr, batch, x.size(0))
            return self.conv.attention(h, pairs, pair_attr, batch, prepared=True)
        if edge_index is not None or batch is not None:
            raise ValueError("a [B, T, F] sequence takes 'mask' and 'causal', not 'edge_index' or 'batch'")
        check_features(x, self.channels, dim=3, dtype=self.proj.weight.dtype)
        B, T, _ = x.shape
        allowed = dense_attention_mask(mask, causal, B, T, x.device)
        if allowed is None:
            allowed = torch.ones(T, T, dtype=torch.bool, device=x.device)
            allowed = (allowed.tril() if causal else allowed).expand(B, T, T)
        weight = self._dense_attention(self._conv_input(x, mask), allowed)  # [B, H, T, T]
        b, i, j = allowed.nonzero(as_tuple=True)
        edge_index = torch.stack([b * T + j, b * T + i], dim=0)
        batch = torch.arange(B, device=x.device).repeat_interleave(T)
        return AttentionGraph(edge_index, weight[b, :, i, j], B * T, batch)

    def _dense_attention(self, h: Tensor, allowed: Tensor) -> Tensor:
        # The attention matrices [B, H, T, T] of ``conv.forward_dense``: the same projections and the same
        # scaled_dot_product_attention call, with the identity as values (so the output is the weights themselves).
        conv = self.conv
        B, T, _ = h.shape
        H, C = conv.heads, conv.out_channels
        query = conv.lin_query(h).view(B, T, H, C).transpose(1, 2)
        key = conv.lin_key(h).view(B, T, H, C).transpose(1, 2)
        eye = torch.eye(T, dtype=h.dtype, device=h.device).expand(B, H, T, T)
        row_valid = allowed.any(dim=-1, keepdim=True)  # rows without a key are not read (they have no edges)
        return F.scaled_dot_product_attention(query, key, eye, attn_mask=(allowed | ~row_valid).unsqueeze(1),
                                              dropout_p=conv.dropout if self.training else 0.0)

    def __repr__(self) -> str:
        options = ''.join(f', {name}={value!r}' for name, value, default in (
            ('norm', self.norm, 'layer'), ('prenorm', self.prenorm, True),
            ('degree_scaler', self.conv.degree_scaler, False),
            ('uniform_init', self.conv.attention.uniform_init, False)) if value != default)
        return (f'{self.__class__.__name__}({self.channels}, heads={self.heads}, '
                f'laplacian_heads={self.conv.laplacian_heads}{options})')


def ple_init_(block: PLETransformerBlock, qk_scale: float = 1.0) -> PLETransformerBlock:
    """Initialise a :class:`pyg_ple.PLETransformerBlock` so that it is one PLE gradient step (in place).

    Sets ``W_v = W_o = I`` (zero biases), ``W_q = W_k = sqrt(qk_scale) I`` (zero biases) and zeroes the MLP's output
    layer, so the block computes exactly::

        out = x + eta (A - I) LN(x)        (Laplacian heads; standard heads: x + A LN(x))
        A_h = softmax(qk_scale * <LN(x)_i^h, LN(x)_j^h> / sqrt(C))   (head h reads channel slice h)

    i.e. the diffusion step ``X + eta (A - I) X`` of probabilistic Laplacian Eigenmaps on the LayerNorm-ed latents
    (LN stands in for the log-determinant term), with a data-derived attention graph: a Gaussian-type similarity of
    the latents (dot-product attention with queries = keys). The norms' affine parameters stay at their identity
    initialisation. ``PLETransformerBlock(..., ple_init=True)`` applies it with ``qk_scale=1``. Returns ``block``.

    That is the default block (``norm='layer'``, ``prenorm=True``). The same weights give, for the others:
    ``x + eta (A - I) N(x)`` for a pre-norm block with ``norm`` ``N`` (RMSNorm, or BatchNorm with batch statistics
    in training), and ``N_2(N_1(x + eta (A - I) x))`` for a post-norm block (the attention graph then compares the
    stream itself). A degree scaler starts as the identity, so it does not change these formulas.
    """
    conv = block.conv
    eye = torch.eye(block.channels)
    with torch.no_grad():
        for lin, scale in ((conv.lin_query, qk_scale ** 0.5), (conv.lin_key, qk_scale ** 0.5),
                           (conv.lin_value, 1.0), (block.proj, 1.0)):
            lin.weight.copy_(scale * eye)
            if lin.bias is not None:
                lin.bias.zero_()
        last = block.mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
    return block


class PLETransformer(nn.Module):
    r"""``num_layers`` :class:`PLETransformerBlock` and, for pre-norm blocks, a final norm.

    ``stack(x, ...)`` takes the block's call forms (graph edges: ``x [N, F], edge_index, batch=None,
    edge_attr=None``; all pairs per graph: ``x [N, F], batch=batch``, with native edge features
    ``x, edge_index, batch=batch, edge_attr=edge_attr, all_pairs=True``; sequences: ``x [B, T, F], mask=None,
    causal=False``), passes them to every block in turn and returns the last block's output through a final norm of
    the blocks' kind (``norm``, LayerNorm by default). Post-norm blocks (``prenorm=False``) already end with a norm,
    so the stack adds none (``stack.norm`` is ``None``). ``num_layers=0`` gives the final norm alone.

    With ``share_weights=True`` every block uses the same attention, output projection and MLP: one set of parameters
    applied ``num_layers`` times, the PLE reading of a transformer as unrolled inference steps of one model (GRAND
    likewise integrates one diffusion function). Each block keeps its own norms, whose statistics (BatchNorm) and
    scales differ from step to step.

    Args:
        channels: model width ``F``.
        heads: attention heads of every block.
        num_layers: number of blocks.
        share_weights: tie the blocks' attention, ``proj`` and MLP, see above.
        **block_kwargs: further :class:`PLETransformerBlock` arguments, the same for every block
            (``laplacian_heads``, ``mlp_ratio``, ``dropout``, ``step_size``, ``ple_init``, ``norm``, ``prenorm``,
            ``degree_scaler``, ...; see also :func:`variant_kwargs`).
    """

    def __init__(self, channels: int, heads: int, num_layers: int, share_weights: bool = False, **block_kwargs: Any):
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"'num_layers' must be a non-negative int (got {num_layers!r})")
        _check_flag(share_weights, 'share_weights')
        self.channels, self.heads, self.share_weights = channels, heads, share_weights
        prenorm = block_kwargs.get('prenorm', True)
        _check_flag(prenorm, 'prenorm')
        self.blocks = nn.ModuleList([PLETransformerBlock(channels, heads, **block_kwargs) for _ in range(num_layers)])
        if share_weights:
            for block in self.blocks[1:]:
                block.conv, block.proj, block.mlp = self.blocks[0].conv, self.blocks[0].proj, self.blocks[0].mlp
        self.norm = make_norm(block_kwargs.get('norm', 'layer'), channels) if prenorm else None

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def reset_parameters(self) -> None:
        for block in self.blocks:
            block.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False,
                all_pairs: bool = False) -> Tensor:
        return self.layer_outputs(x, edge_index, batch=batch, edge_attr=edge_attr, mask=mask, causal=causal,
                                  all_pairs=all_pairs)[-1]

    def layer_outputs(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                      edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False,
                      all_pairs: bool = False) -> list[Tensor]:
        """``[x, block_1(x), ..., block_L(...)]``: the stack's input and every block's output (``num_layers + 1``
        tensors, for readouts of every layer as in GIN), the last through the final norm: what ``forward``
        returns."""
        outputs = [x]
        for block in self.blocks:
            outputs.append(block(outputs[-1], edge_index, batch=batch, edge_attr=edge_attr, mask=mask,
                                 causal=causal, all_pairs=all_pairs))
        if self.norm is not None:
            outputs[-1] = apply_norm(self.norm, outputs[-1], mask if x.dim() == 3 else None)
        return outputs

    @torch.no_grad()
    def attention_graph(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                        edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False,
                        layer: int = 0, all_pairs: bool = False) -> AttentionGraph:
        r"""The attention graph of block ``layer`` (negative counts from the end) for the stack's input ``x``: the
        first ``layer`` blocks run, then :meth:`PLETransformerBlock.attention_graph` of block ``layer``."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"'layer' must be an int (got {layer!r})")
        if not -self.num_layers <= layer < self.num_layers:
            raise IndexError(f"'layer' {layer} out of range: the stack has {self.num_layers} blocks")
        layer %= self.num_layers
        for block in self.blocks[:layer]:
            x = block(x, edge_index, batch=batch, edge_attr=edge_attr, mask=mask, causal=causal, all_pairs=all_pairs)
        return self.blocks[layer].attention_graph(x, edge_index, batch, edge_attr, mask=mask, causal=causal,
                                                  all_pairs=all_pairs)

    def __repr__(self) -> str:
        lap = self.blocks[0].conv.laplacian_heads if self.num_layers else None
        return (f'{self.__class__.__name__}({self.channels}, heads={self.heads}, num_layers={self.num_layers}, '
                f'laplacian_heads={lap}{", share_weights=True" if self.share_weights else ""})')
