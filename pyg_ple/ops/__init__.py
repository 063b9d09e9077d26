"""Fused sparse attention: edge softmax and aggregation without ``[E, H, C]`` messages (CPU and CUDA)."""
from pyg_ple.ops.edge_softmax import EdgeCSR, edge_softmax_aggregate, edge_softmax_aggregate_reference

__all__ = ['EdgeCSR', 'edge_softmax_aggregate', 'edge_softmax_aggregate_reference']
