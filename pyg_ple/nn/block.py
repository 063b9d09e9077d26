r"""``PLETransformerBlock``: a pre-norm transformer block whose attention is a Laplacian-diffusion step."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor, to_dense_batch

from pyg_ple.graph import AttentionGraph
from pyg_ple.nn.conv import LaplacianDiffusionConv
from pyg_ple.edges import full_edge_index, sequence_edge_index
from pyg_ple.validation import (check_batch, check_edge_index, check_features, check_same_graph, check_tensor,
                                 checking)


# Per attended pair, the dense SDPA path ran 4x (T = 64) to 17x (T = 256) faster than the fused sparse kernel in
# benchmarks/results/speed.md, so padding a batch of graphs to its largest one pays off until padding multiplies
# the pairs by about this much.
DENSE_PADDING_LIMIT = 4.0


def all_pairs_path(batch: OptTensor) -> str:
    r"""``'dense'`` or ``'sparse'``: how to run all-pairs attention within the graphs of ``batch``.

    The dense path computes ``B * N_max^2`` pairs, the sparse path ``sum_g N_g^2``; dense is chosen unless padding
    to the largest graph costs more than :data:`DENSE_PADDING_LIMIT` times the real pairs."""
    if batch is None or batch.numel() == 0:
        return 'dense'
    sizes = torch.bincount(batch).double()
    padded = sizes.numel() * float(sizes.max()) ** 2
    return 'dense' if padded <= DENSE_PADDING_LIMIT * float((sizes ** 2).sum()) else 'sparse'


class PLETransformerBlock(nn.Module):
    r"""Transformer block read as one step of probabilistic Laplacian Eigenmaps inference.

    .. math::
        \mathbf{h} = \mathbf{x} + \big(\eta (A - I)\, \mathrm{LN}(\mathbf{x}) W_v\big) W_o, \qquad
        \mathbf{out} = \mathbf{h} + \mathrm{MLP}(\mathrm{LN}(\mathbf{h})),

    with :math:`A` the attention graph of :class:`LaplacianDiffusionConv` (standard heads use :math:`A` in place of
    :math:`\eta (A - I)`). The same parameters run three ways:

    - ``block(x [N, F], edge_index, batch=None, edge_attr=None)``: over a graph's edges (sparse path);
    - ``block(x [N, F], batch=batch)`` (no ``edge_index``): all pairs within each graph of a PyG batch, through the
      dense path (``to_dense_batch`` and ``scaled_dot_product_attention`` with a padding mask), or through the sparse
      path over :func:`~pyg_ple.full_edge_index` when graph sizes vary so much that padding would dominate (see
      :func:`all_pairs_path`);
    - ``block(x [B, T, F], mask=None, causal=False)``: token sequences, through the dense path.

    ``block(x, causal=True)`` equals ``block(x.reshape(B * T, F), sequence_edge_index(T, B, causal=True))`` reshaped.

    Args:
        channels: model width ``F`` (a multiple of ``heads``).
        heads: attention heads.
        laplacian_heads: how many (the last) heads are Laplacian; ``None`` means all, ``0`` standard attention.
        mlp_ratio: hidden width of the MLP relative to ``channels``.
        dropout: dropout after the attention projection and in the MLP.
        attention_dropout: dropout on the attention weights.
        step_size, learn_step_size, add_self_loops, edge_dim: see :class:`LaplacianDiffusionConv`.
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
    ):
        super().__init__()
        if not isinstance(heads, int) or heads < 1 or not isinstance(channels, int) or channels % heads != 0:
            raise ValueError(f"'channels' must be a positive multiple of 'heads' (got channels={channels!r}, "
                             f"heads={heads!r})")
        hidden = int(round(channels * mlp_ratio))
        if hidden < 1:
            raise ValueError(f"'mlp_ratio' must give a positive hidden width (got {mlp_ratio!r})")
        self.channels, self.heads = channels, heads
        self.norm1 = nn.LayerNorm(channels)
        self.conv = LaplacianDiffusionConv(channels, channels // heads, heads, concat=True,
                                           laplacian_heads=laplacian_heads, step_size=step_size,
                                           learn_step_size=learn_step_size, add_self_loops=add_self_loops,
                                           dropout=attention_dropout, edge_dim=edge_dim, bias=False)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
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

    def forward(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                edge_attr: OptTensor = None, mask: OptTensor = None, causal: bool = False) -> Tensor:
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
        h = self.norm1(x)
        if x.dim() == 3:
            if edge_index is not None or batch is not None:
                raise ValueError("a [B, T, F] sequence takes 'mask' and 'causal', not 'edge_index' or 'batch'")
            update = self.conv.forward_dense(h, mask=mask, causal=causal)
        elif edge_index is not None:
            if mask is not None or causal:
                raise ValueError("'mask' and 'causal' apply to [B, T, F] sequences; on a graph pass 'edge_index'")
            update = self.conv(h, edge_index, edge_attr=edge_attr)
        else:
            if mask is not None or causal:
                raise ValueError("'mask' and 'causal' apply to [B, T, F] sequences, not to all-pairs graph attention")
            if x.size(0) == 0:  # to_dense_batch needs at least one node to size the batch
                update = self.conv.forward_dense(h.unsqueeze(0)).squeeze(0)
            elif all_pairs_path(batch) == 'sparse':
                update = self.conv(h, full_edge_index(batch, x.size(0)))
            else:
                dense, valid = to_dense_batch(h, batch)
                update = self.conv.forward_dense(dense, mask=valid)[valid]
        x = x + self.dropout(self.proj(update))
        return x + self.dropout(self.mlp(self.norm2(x)))

    @torch.no_grad()
    def attention_graph(self, x: Tensor, edge_index: Optional[Adj] = None, batch: OptTensor = None,
                        edge_attr: OptTensor = None, causal: bool = False) -> AttentionGraph:
        r"""The attention graph this block diffuses over for input ``x``.

        Graph nodes ``[N, F]`` use ``edge_index`` (all pairs within each graph of ``batch`` when ``None``); a
        sequence batch ``[B, T, F]`` uses :func:`~pyg_ple.sequence_edge_index` (``causal`` as in ``forward``)."""
        if x.dim() == 3:
            B, T, F = x.shape
            edge_index = sequence_edge_index(T, B, causal=causal, device=x.device)
            batch = torch.arange(B, device=x.device).repeat_interleave(T)
            x = x.reshape(B * T, F)
        elif edge_index is None:
            edge_index = full_edge_index(batch, x.size(0))
        return self.conv.attention_graph(self.norm1(x), edge_index, edge_attr, batch)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, heads={self.heads}, '
                f'laplacian_heads={self.conv.laplacian_heads})')


def ple_init_(block: PLETransformerBlock, qk_scale: float = 1.0) -> PLETransformerBlock:
    """Initialise a :class:`pyg_ple.PLETransformerBlock` so that it is one PLE gradient step (in place).

    Sets ``W_v = W_o = I`` (zero biases), ``W_q = W_k = sqrt(qk_scale) I`` (zero biases) and zeroes the MLP's output
    layer, so the block computes exactly::

        out = x + eta (A - I) LN(x)        (Laplacian heads; standard heads: x + A LN(x))
        A_h = softmax(qk_scale * <LN(x)_i^h, LN(x)_j^h> / sqrt(C))   (head h reads channel slice h)

    i.e. the diffusion step ``X + eta (A - I) X`` of the method notes on the LayerNorm-ed latents (LN stands in for
    the log-determinant term), with a data-derived attention graph: a Gaussian-type similarity of the latents
    (dot-product attention with queries = keys).  The LayerNorm affine parameters stay at their identity
    initialisation.  Returns ``block``.
    """
    conv = block.conv
    F = block.channels
    eye = torch.eye(F)
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
