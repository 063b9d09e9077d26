"""The layers: :class:`LaplacianDiffusionConv`, the attention module it scores edges with, the block and the stack,
and :class:`PLEGPSLayer`, the GPS layer with the conv as its global part."""
from pyg_ple.nn.attention import AttentionAdjacency
from pyg_ple.nn.block import VARIANTS, PLETransformer, PLETransformerBlock, ple_init_, variant_kwargs
from pyg_ple.nn.conv import LaplacianDiffusionConv
from pyg_ple.nn.gps import PLEGPSLayer

__all__ = ['AttentionAdjacency', 'LaplacianDiffusionConv', 'PLEGPSLayer', 'PLETransformerBlock', 'PLETransformer',
           'VARIANTS', 'variant_kwargs', 'ple_init_']
