"""Fused attention kernels: edge softmax and aggregation without ``[E, H, C]`` messages (CPU and CUDA), and
attention over all pairs within each graph in size buckets."""
from pyg_ple.ops.all_pairs import all_pairs_attention, graph_buckets, size_buckets
from pyg_ple.ops.edge_softmax import EdgeCSR, edge_softmax_aggregate, edge_softmax_aggregate_reference

__all__ = ['EdgeCSR', 'edge_softmax_aggregate', 'edge_softmax_aggregate_reference', 'all_pairs_attention',
           'graph_buckets', 'size_buckets']
