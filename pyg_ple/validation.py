"""Input checks that turn bad input into a clear error naming the argument.

Every check is skipped while ``torch.compile`` traces (data-dependent checks would break the graph); call sites
guard with :func:`checking`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor

# NaN/inf scans cost a pass over the data and a device sync, so they are opt-in (see ``finite_checks``).
_check_finite = False


def checking() -> bool:
    """Whether eager-mode input checks should run (not while ``torch.compile`` traces)."""
    return not torch.compiler.is_compiling()


@contextmanager
def finite_checks(enabled: bool = True) -> Iterator[None]:
    """Within this context, pyg-ple layers raise ``ValueError`` on NaN or inf in their inputs.

    >>> with pyg_ple.finite_checks():
    ...     out = conv(x, edge_index)
    """
    global _check_finite
    previous, _check_finite = _check_finite, enabled
    try:
        yield
    finally:
        _check_finite = previous


def check_finite(value: Optional[Tensor], name: str) -> None:
    """Raise if ``finite_checks`` is on and ``value`` holds NaN or inf."""
    if _check_finite and value is not None and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"'{name}' contains NaN or inf values")


def check_tensor(value, name: str, dim: Optional[int] = None, floating: bool = False) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got {type(value).__name__})")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"'{name}' must be {dim}-D (got shape {tuple(value.shape)})")
    if floating and not value.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor (got {value.dtype})")


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: Optional[int] = None,
                     name: str = 'edge_index') -> None:
    """``edge_index`` is an integer ``[2, E]`` tensor with sources in ``[0, num_src)`` and targets in ``[0, num_dst)``."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of shape [2, E] (got {type(edge_index).__name__})")
    if edge_index.dtype not in (torch.long, torch.int32):
        raise TypeError(f"'{name}' must hold int64 or int32 node indices (got dtype {edge_index.dtype})")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'{name}' must have shape [2, E] (got {tuple(edge_index.shape)})")
    num_dst = num_src if num_dst is None else num_dst
    if edge_index.numel() == 0:
        return
    if int(edge_index.min()) < 0:
        raise ValueError(f"'{name}' contains negative node indices")
    if int(edge_index[0].max()) >= num_src or int(edge_index[1].max()) >= num_dst:
        raise ValueError(f"'{name}' refers to node {int(edge_index.max())} but there are only "
                         f"{num_src} source / {num_dst} target nodes")


def check_edge_values(value: Optional[Tensor], num_edges: int, name: str, nonnegative: bool = False,
                      dim: Optional[int] = None) -> None:
    if value is None:
        return
    check_tensor(value, name)
    if value.size(0) != num_edges:
        raise ValueError(f"'{name}' must have one entry per edge: expected {num_edges} (got {value.size(0)})")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"'{name}' must be {dim}-D (got shape {tuple(value.shape)})")
    if nonnegative:
        if not value.is_floating_point():
            raise TypeError(f"'{name}' must be a floating-point tensor (got {value.dtype})")
        if value.numel() > 0 and bool((value < 0).any()):
            raise ValueError(f"'{name}' must be non-negative")


def check_features(x: Tensor, channels: int, name: str = 'x', dim: Optional[int] = None,
                   dtype: Optional[torch.dtype] = None) -> None:
    """``x`` is a floating tensor (of ``dim`` dimensions and the parameters' ``dtype`` when given) with ``channels``
    features in its last dimension."""
    check_tensor(x, name, dim=dim, floating=True)
    if x.dim() < 2 or x.size(-1) != channels:
        raise ValueError(f"'{name}' must have {channels} features in its last dimension "
                         f"(got shape {tuple(x.shape)})")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"'{name}' has dtype {x.dtype} but the layer's parameters are {dtype}: convert one of them "
                        f"(e.g. module.to({x.dtype}))")


def check_same_graph(edge_index: Tensor, batch: Tensor) -> None:
    """No edge of ``edge_index`` joins two different graphs of ``batch``."""
    if edge_index.numel() > 0 and bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError("'edge_index' has edges between different graphs of 'batch'")


def check_batch(batch: Tensor, num_nodes: int) -> None:
    if not isinstance(batch, Tensor):
        raise TypeError(f"'batch' must be a torch.Tensor (got {type(batch).__name__})")
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise TypeError(f"'batch' must hold integer graph indices (got dtype {batch.dtype})")
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"'batch' must have shape [{num_nodes}] (one graph index per node; got "
                         f"{tuple(batch.shape)})")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("'batch' must be sorted (nodes of a graph stored together, as in a PyG Batch)")
    if batch.numel() > 0 and int(batch[0]) < 0:
        raise ValueError("'batch' must hold non-negative graph indices")
