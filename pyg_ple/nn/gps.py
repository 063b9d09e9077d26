r"""``PLEGPSLayer``: the GPS layer pattern with Laplacian attention over all node pairs as its global part."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Dropout, Linear, Sequential
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.inits import reset
from torch_geometric.nn.resolver import activation_resolver, normalization_resolver
from torch_geometric.typing import Adj, OptTensor

from pyg_ple.nn.conv import LaplacianDiffusionConv


class PLEGPSLayer(torch.nn.Module):
    r"""The GPS graph transformer layer (`"Recipe for a General, Powerful, Scalable Graph Transformer"
    <https://arxiv.org/abs/2205.12454>`_, PyG's :class:`~torch_geometric.nn.conv.GPSConv`) with a
    :class:`~pyg_ple.LaplacianDiffusionConv` over all node pairs of each graph as its global part.

    .. math::
        \mathbf{h}^{\text{loc}} &= \text{norm}_1\big(\mathbf{x} + \text{drop}(\text{MPNN}(\mathbf{x},
        \mathcal{E}))\big), \qquad
        \mathbf{h}^{\text{glob}} = \text{norm}_2\big(\mathbf{x} + \text{drop}(\mathcal{L}(\mathbf{x}))\big),

        \mathbf{h} &= \mathbf{h}^{\text{loc}} + \mathbf{h}^{\text{glob}}, \qquad
        \mathbf{x}' = \text{norm}_3\big(\mathbf{h} + \text{MLP}(\mathbf{h})\big),

    where :math:`\text{MPNN}` is ``conv`` over the given edges and :math:`\mathcal{L}` the Laplacian-diffusion step
    of :class:`~pyg_ple.LaplacianDiffusionConv` (``heads`` heads of ``channels // heads`` channels, concatenated;
    by default all heads Laplacian, :math:`-\eta_h (I - A^{(h)}) V^{(h)}`) in which every node attends to every node
    of its own graph in ``batch`` (itself included) and to no other. The MLP is ``Linear(channels, mlp_ratio *
    channels)``, the activation, dropout, ``Linear(mlp_ratio * channels, channels)``. Unlike ``GPSConv``, whose
    global part is ``torch.nn.MultiheadAttention`` or a Performer, the attention here is the layer's own, so it is
    the graph the diffusion runs over (see :meth:`LaplacianDiffusionConv.attention_graph`).

    Args:
        channels (int): Size of each input and output sample.
        conv (MessagePassing, optional): The local message-passing layer (``channels`` in and out); ``None`` for
            the global part alone.
        heads (int, optional): Number of attention heads; must divide ``channels``. (default: :obj:`1`)
        dropout (float, optional): Dropout on the local and global updates and inside the MLP.
            (default: :obj:`0.`)
        attn_dropout (float, optional): Dropout on the attention weights. (default: :obj:`0.`)
        laplacian_heads (int, optional): How many heads are Laplacian (the last ones); :obj:`None` for all, ``0``
            for standard softmax attention. (default: :obj:`None`)
        step_size (float, optional): Initial step :math:`\eta_h` of the Laplacian heads. (default: :obj:`1.`)
        learn_step_size (bool, optional): Learn :math:`\eta_h`. (default: :obj:`False`)
        degree_scaler (bool or str, optional): The degree scaler of the global conv (``True``/``'log'``,
            ``'linear'`` or ``False``; the degree is the size of the node's graph). (default: :obj:`False`)
        mlp_ratio (float, optional): Width of the MLP's hidden layer relative to ``channels``.
            (default: :obj:`2.`)
        act (str or Callable, optional): The MLP's activation. (default: :obj:`"relu"`)
        act_kwargs (Dict[str, Any], optional): Arguments of ``act``. (default: :obj:`None`)
        norm (str or Callable, optional): The normalization after each residual (PyG's
            ``normalization_resolver``; :obj:`None` for none). (default: :obj:`"batch_norm"`)
        norm_kwargs (Dict[str, Any], optional): Arguments of ``norm``. (default: :obj:`None`)
        global_conv (LaplacianDiffusionConv, optional): A global part built by the caller (``channels`` in, ``channels``
            out, no edge features), in place of the one the arguments above describe. (default: :obj:`None`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, \text{channels})`, edge indices or a sparse adjacency for
          ``conv``, batch vector :math:`(|\mathcal{V}|)` (optional, sorted as in a PyG ``Batch``; :obj:`None`: one
          graph), further keyword arguments of ``conv`` (e.g. ``edge_attr``)
        - **output:** node features :math:`(|\mathcal{V}|, \text{channels})`
    """

    def __init__(
        self,
        channels: int,
        conv: Optional[MessagePassing],
        heads: int = 1,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        laplacian_heads: Optional[int] = None,
        step_size: float = 1.0,
        learn_step_size: bool = False,
        degree_scaler: Union[bool, str] = False,
        mlp_ratio: float = 2.0,
        act: str = 'relu',
        act_kwargs: Optional[Dict[str, Any]] = None,
        norm: Optional[str] = 'batch_norm',
        norm_kwargs: Optional[Dict[str, Any]] = None,
        global_conv: Optional[LaplacianDiffusionConv] = None,
    ):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"'channels' must be a positive int (got {channels!r})")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or channels % heads:
            raise ValueError(f"'heads' must be a positive int that divides channels={channels} (got {heads!r})")
        if conv is not None and not isinstance(conv, torch.nn.Module):
            raise TypeError(f"'conv' must be a torch.nn.Module or None (got {type(conv).__name__})")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1) (got {dropout!r})")
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"'mlp_ratio' must be positive (got {mlp_ratio!r})")
        if global_conv is None:
            global_conv = LaplacianDiffusionConv(channels, channels // heads, heads, laplacian_heads=laplacian_heads,
                                                 step_size=step_size, learn_step_size=learn_step_size,
                                                 dropout=attn_dropout, degree_scaler=degree_scaler)
        elif not isinstance(global_conv, LaplacianDiffusionConv):
            raise TypeError(f"'global_conv' must be a LaplacianDiffusionConv (got {type(global_conv).__name__})")
        self.channels, self.heads, self.dropout = channels, heads, float(dropout)
        self.conv = conv
        self.attn = global_conv
        hidden = round(channels * mlp_ratio)
        self.mlp = Sequential(Linear(channels, hidden), activation_resolver(act, **(act_kwargs or {})),
                              Dropout(dropout), Linear(hidden, channels))
        norm_kwargs = norm_kwargs or {}
        self.norm1 = normalization_resolver(norm, channels, **norm_kwargs)
        self.norm2 = normalization_resolver(norm, channels, **norm_kwargs)
        self.norm3 = normalization_resolver(norm, channels, **norm_kwargs)
        self.norm_with_batch = (self.norm1 is not None
                                and 'batch' in inspect.signature(self.norm1.forward).parameters)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        if self.conv is not None:
            self.conv.reset_parameters()
        self.attn.reset_parameters()
        reset(self.mlp)
        for norm in (self.norm1, self.norm2, self.norm3):
            if norm is not None:
                norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Adj, batch: OptTensor = None, **kwargs: Any) -> Tensor:
        r"""Runs the forward pass of the module; ``kwargs`` go to the local ``conv``."""
        update = self.global_update(x, batch)
        hs = []
        if self.conv is not None:
            h = self.conv(x, edge_index, **kwargs)
            hs.append(self._norm(self.norm1, x + F.dropout(h, p=self.dropout, training=self.training), batch))
        hs.append(self._norm(self.norm2, x + F.dropout(update, p=self.dropout, training=self.training), batch))
        out = hs[0] if len(hs) == 1 else hs[0] + hs[1]
        return self._norm(self.norm3, out + self.mlp(out), batch)

    def global_update(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        r"""The Laplacian attention update over all node pairs of each graph, ``[N, channels]``."""
        return self.attn.forward_all_pairs(x, batch)

    def _norm(self, norm: Optional[torch.nn.Module], x: Tensor, batch: OptTensor) -> Tensor:
        if norm is None:
            return x
        return norm(x, batch=batch) if self.norm_with_batch else norm(x)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, conv={self.conv}, heads={self.heads}, '
                f'attn={self.attn})')
