"""The layers: :class:`LaplacianDiffusionConv`, the attention module it scores edges with, and the block."""
from pyg_ple.nn.attention import AttentionAdjacency
from pyg_ple.nn.block import PLETransformerBlock, ple_init_
from pyg_ple.nn.conv import LaplacianDiffusionConv

__all__ = ['AttentionAdjacency', 'LaplacianDiffusionConv', 'PLETransformerBlock', 'ple_init_']
