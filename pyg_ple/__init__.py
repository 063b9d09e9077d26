"""pyg-ple: transformer attention as an explicit graph, and the Laplacian-diffusion step over it, for PyG."""
from pyg_ple.attention import AttentionAdjacency, AttentionGraph
from pyg_ple.block import PLETransformerBlock
from pyg_ple.conv import LaplacianDiffusionConv
from pyg_ple.edges import (candidate_edge_index, full_edge_index, knn_edge_index, native_plus_full_edge_index,
                           sequence_edge_index)
from pyg_ple.validation import finite_checks

__version__ = '0.1.0'

__all__ = [
    'AttentionAdjacency',
    'AttentionGraph',
    'LaplacianDiffusionConv',
    'PLETransformerBlock',
    'candidate_edge_index',
    'full_edge_index',
    'knn_edge_index',
    'native_plus_full_edge_index',
    'sequence_edge_index',
    'finite_checks',
]
