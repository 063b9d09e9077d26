"""Input checks that turn bad input into a clear error naming the argument.

Every check is skipped while ``torch.compile`` traces (data-dependent checks would break the graph); call sites
guard with :func:`checking`. Checks that read tensor values (index ranges, signs, sort order) cost a pass over the
data and, on a GPU, a host-device sync; the result of each is remembered per tensor object and version
(:func:`check_once`), so a graph that passes through several layers, or is reused across steps, is read once.
"""
from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

# NaN/inf scans cost a pass over the data and a device sync, so they are opt-in (see ``finite_checks``).
_check_finite = False


def checking() -> bool:
    """Whether eager-mode input checks should run (not while ``torch.compile`` traces)."""
    return not torch.compiler.is_compiling()


@contextmanager
def finite_checks(enabled: bool = True) -> Iterator[None]:
    """Within this context, pyg-ple layers raise ``ValueError`` on NaN or inf in their inputs (``x``,
    ``edge_weight``, ``edge_attr``).

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


class TensorCache:
    """Values derived from tensors, kept while those tensor objects live unmodified: the checks that passed
    (:func:`check_once`) and the fused kernel's prepared graph (a conv's ``kernel_cache``).

    An entry is keyed by the identities and versions of its tensors plus a hashable ``extra`` (a check name and
    sizes, a node count). It holds its tensors by weak reference only: no tensor is kept alive, an entry goes with its
    tensors, and a recycled ``id`` never matches. An in-place change bumps a tensor's version, so a modified tensor
    misses. Inference tensors have no version counter and are never cached. At most ``capacity`` entries, the least
    recently used going first. Transient state: pickling and ``copy.deepcopy`` give an empty cache.
    """

    def __init__(self, capacity: int = 128):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.RLock()  # (a freed tensor's callback may run while this thread holds it)

    def __reduce__(self):
        return type(self), (self.capacity,)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(tensors: Tuple[Tensor, ...], extra: Any) -> Optional[tuple]:
        try:
            return tuple([(id(t), t._version) for t in tensors]), extra
        except RuntimeError:  # an inference tensor: no version counter
            return None

    def get(self, tensors: Union[Tensor, Tuple[Tensor, ...]], extra: Any = None) -> Any:
        """The value stored for these tensor objects, unmodified, and ``extra``; ``None`` if there is none."""
        tensors = (tensors,) if isinstance(tensors, Tensor) else tensors
        key = self._key(tensors, extra)
        entry = self._entries.get(key) if key is not None else None  # (a read needs no lock)
        if entry is None:
            return None
        for ref, tensor in zip(entry[0], tensors):
            if ref() is not tensor:
                return None
        if self.capacity > 1:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
        return entry[1]

    def put(self, tensors: Union[Tensor, Tuple[Tensor, ...]], extra: Any, value: Any) -> Any:
        """Store ``value`` for these tensors and ``extra`` (nothing for inference tensors); returns ``value``."""
        tensors = (tensors,) if isinstance(tensors, Tensor) else tensors
        key = self._key(tensors, extra)
        if key is not None:
            drop = functools.partial(_drop_entry, weakref.ref(self), key)
            with self._lock:
                self._entries[key] = (tuple(weakref.ref(t, drop) for t in tensors), value)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _drop(self, key: tuple) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and any(ref() is None for ref in entry[0]):
                del self._entries[key]


def _drop_entry(cache: weakref.ref, key: tuple, _ref: weakref.ref) -> None:
    """Weak-reference callback: drop entry ``key`` of a cache (held weakly too) when one of its tensors goes."""
    cache = cache()
    if cache is not None:
        cache._drop(key)


_PASSED = TensorCache(capacity=128)


def check_once(name: str, tensors: Tuple[Tensor, ...], sizes: tuple, check: Callable[[], None]) -> None:
    """Run ``check()`` (which raises on bad input) unless it already passed for these tensor objects, unmodified,
    and these ``sizes``."""
    if _PASSED.get(tensors, (name, sizes)):
        return
    check()
    _PASSED.put(tensors, (name, sizes), True)


def check_tensor(value, name: str, dim: Optional[int] = None, floating: bool = False) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor (got {type(value).__name__})")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"'{name}' must be {dim}-D (got shape {tuple(value.shape)})")
    if floating and not value.is_floating_point():
        raise TypeError(f"'{name}' must be a floating-point tensor (got {value.dtype})")


def check_edge_index(edge_index: Tensor, num_src: Optional[int], num_dst: Optional[int] = None,
                     name: str = 'edge_index') -> None:
    """``edge_index`` is an integer ``[2, E]`` tensor with sources in ``[0, num_src)`` and targets in ``[0, num_dst)``
    (``num_src=None``: non-negative only). The range is read once per tensor object and version."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor of shape [2, E] (got {type(edge_index).__name__})")
    if edge_index.dtype not in (torch.long, torch.int32):
        raise TypeError(f"'{name}' must hold int64 or int32 node indices (got dtype {edge_index.dtype})")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'{name}' must have shape [2, E] (got {tuple(edge_index.shape)})")
    num_dst = num_src if num_dst is None else num_dst
    if edge_index.numel() == 0:
        return

    def check_range() -> None:
        # One host read for the three bounds.
        low, src_high, dst_high = torch.cat([edge_index.amin().view(1), edge_index.amax(dim=1)]).tolist()
        if low < 0:
            raise ValueError(f"'{name}' contains negative node indices")
        if num_src is not None and (src_high >= num_src or dst_high >= num_dst):
            raise ValueError(f"'{name}' refers to node {max(src_high, dst_high)} but there are only "
                             f"{num_src} source / {num_dst} target nodes")

    check_once('edge_index range', (edge_index,), (num_src, num_dst), check_range)


def check_edge_values(value: Optional[Tensor], num_edges: int, name: str, nonnegative: bool = False,
                      dim: Optional[int] = None) -> None:
    if value is None:
        return
    check_tensor(value, name)
    if value.dim() == 0 or value.size(0) != num_edges:
        got = value.size(0) if value.dim() else 'a scalar'
        raise ValueError(f"'{name}' must have one entry per edge: expected {num_edges} (got {got})")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"'{name}' must be {dim}-D (got shape {tuple(value.shape)})")
    if nonnegative:
        if not value.is_floating_point():
            raise TypeError(f"'{name}' must be a floating-point tensor (got {value.dtype})")

        def check_sign() -> None:
            if value.numel() > 0 and bool((value < 0).any()):
                raise ValueError(f"'{name}' must be non-negative")

        check_once('non-negative', (value,), (), check_sign)


def as_edge_attr(edge_attr: Optional[Tensor], num_edges: int, edge_dim: Optional[int]) -> Optional[Tensor]:
    """``edge_attr`` as ``[E, edge_dim]``: a ``[E]`` vector is one feature when ``edge_dim == 1`` (as in PyG's convs).
    Outside ``torch.compile`` also checks it: only a layer built with ``edge_dim`` takes edge features, one row per
    edge, ``edge_dim`` floating-point columns (finite inside :func:`finite_checks`)."""
    if edge_attr is None:
        return None
    if checking():
        if edge_dim is None:
            raise ValueError("'edge_attr' was given but the layer was built with edge_dim=None: build it with "
                             "edge_dim=<features per edge> to use edge features")
        check_tensor(edge_attr, 'edge_attr', floating=True)
    if edge_attr.dim() == 1 and edge_dim == 1:
        edge_attr = edge_attr.view(-1, 1)
    if checking():
        check_edge_values(edge_attr, num_edges, 'edge_attr', dim=2)
        if edge_attr.size(-1) != edge_dim:
            raise ValueError(f"'edge_attr' must have edge_dim={edge_dim} features "
                             f"(got shape {tuple(edge_attr.shape)})")
        check_finite(edge_attr, 'edge_attr')
    return edge_attr


def check_features(x: Tensor, channels: Union[int, Tuple[int, int]], name: str = 'x', dim: Optional[int] = None,
                   dtype: Optional[torch.dtype] = None) -> None:
    """``x`` is a floating tensor (of ``dim`` dimensions and the parameters' ``dtype`` when given) with ``channels``
    features in its last dimension (``-1``: any number, as for a lazily initialised layer; a pair ``(F_src, F_dst)``
    of a bipartite layer: ``x`` stands on both sides and must fit both)."""
    check_tensor(x, name, dim=dim, floating=True)
    wanted = {c for c in (channels if isinstance(channels, tuple) else (channels,)) if c != -1}
    if x.dim() < 2 or len(wanted) > 1 or (wanted and x.size(-1) not in wanted):
        raise ValueError(f"'{name}' must have {channels} features in its last dimension "
                         f"(got shape {tuple(x.shape)})")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"'{name}' has dtype {x.dtype} but the layer's parameters are {dtype}: convert one of them "
                        f"(e.g. module.to({x.dtype}))")


def check_same_graph(edge_index: Tensor, batch: Tensor) -> None:
    """No edge of ``edge_index`` joins two different graphs of ``batch``."""
    def check() -> None:
        if edge_index.numel() > 0 and bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
            raise ValueError("'edge_index' has edges between different graphs of 'batch'")

    check_once('same graph', (edge_index, batch), (), check)


def check_batch(batch: Tensor, num_nodes: int) -> None:
    if not isinstance(batch, Tensor):
        raise TypeError(f"'batch' must be a torch.Tensor (got {type(batch).__name__})")
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise TypeError(f"'batch' must hold integer graph indices (got dtype {batch.dtype})")
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"'batch' must have shape [{num_nodes}] (one graph index per node; got "
                         f"{tuple(batch.shape)})")

    def check_order() -> None:
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("'batch' must be sorted (nodes of a graph stored together, as in a PyG Batch)")
        if batch.numel() > 0 and int(batch[0]) < 0:
            raise ValueError("'batch' must hold non-negative graph indices")

    check_once('batch order', (batch,), (), check_order)
