"""The layers: :class:`LaplacianDiffusionConv`, the attention module it scores edges with, the block and the stack."""
from pyg_ple.nn.attention import AttentionAdjacency
from pyg_ple.nn.block import VARIANTS, PLETransformer, PLETransformerBlock, ple_init_, variant_kwargs
from pyg_ple.nn.conv import LaplacianDiffusionConv

__all__ = ['AttentionAdjacency', 'LaplacianDiffusionConv', 'PLETransformerBlock', 'PLETransformer', 'VARIANTS',
           'variant_kwargs', 'ple_init_']
