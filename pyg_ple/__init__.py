"""pyg-ple: transformer attention as an explicit graph, and the Laplacian-diffusion step over it, for PyG.

Layout: :mod:`pyg_ple.nn` holds the layers (the conv, the attention module, the block), :mod:`pyg_ple.ops` the fused
edge-softmax kernel, :mod:`pyg_ple.graph` the attention graph and :mod:`pyg_ple.edges` the candidate edge sets; the
benchmark harness behind ``pyg-ple bench`` is :mod:`pyg_ple.bench` and the paper-claim models are
:mod:`pyg_ple.experiments`. Importing ``pyg_ple`` loads the core only.
"""
from pyg_ple.edges import (candidate_edge_index, full_edge_index, knn_edge_index, native_plus_full_edge_index,
                           sequence_edge_index)
from pyg_ple.graph import AttentionGraph
from pyg_ple.nn import (AttentionAdjacency, LaplacianDiffusionConv, PLEGPSLayer, PLETransformer, PLETransformerBlock,
                        ple_init_)
from pyg_ple.validation import finite_checks

__version__ = '0.2.0'

__all__ = [
    'AttentionAdjacency',
    'AttentionGraph',
    'LaplacianDiffusionConv',
    'PLEGPSLayer',
    'PLETransformer',
    'PLETransformerBlock',
    'ple_init_',
    'candidate_edge_index',
    'full_edge_index',
    'knn_edge_index',
    'native_plus_full_edge_index',
    'sequence_edge_index',
    'finite_checks',
]
