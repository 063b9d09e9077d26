r"""``KernelGraphCache``: the fused kernel's prepared edge set, kept by :class:`~pyg_ple.LaplacianDiffusionConv` for
the last graph it saw."""
from __future__ import annotations

import weakref
from typing import Optional, Tuple

from torch import Tensor
from torch_geometric.typing import Adj

from pyg_ple.ops.edge_softmax import EdgeCSR


class KernelGraphCache:
    r"""The fused kernel's edge set (self-loops prepared), its :class:`~pyg_ple.ops.EdgeCSR` and incoming-edge mask,
    for the last ``edge_index`` tensor a conv saw.

    An entry is reused while the same tensor object comes back unmodified (its version unchanged) with the same
    node count, as in full-batch training. The key is held by weak reference and the entry dropped when the key is
    freed. It is transient state: not in ``state_dict``, and ``torch.save(module)``, pickling and
    ``copy.deepcopy`` give an empty cache.
    """

    def __init__(self) -> None:
        self._entry: Optional[tuple] = None

    def __reduce__(self):  # pickling and deepcopy: an empty cache
        return type(self), ()

    def __len__(self) -> int:
        return int(self._entry is not None)

    @staticmethod
    def _tag(key: Tensor, num_nodes: int) -> tuple:
        return num_nodes, key._version, key.device

    def get(self, key: Adj, num_nodes: int) -> Optional[Tuple[Tensor, EdgeCSR, Tensor]]:
        if self._entry is None or not isinstance(key, Tensor) or key.is_inference():
            return None
        ref, tag, value = self._entry
        return value if ref() is key and tag == self._tag(key, num_nodes) else None

    def put(self, key: Adj, num_nodes: int, value: Tuple[Tensor, EdgeCSR, Tensor]) -> Tuple[Tensor, EdgeCSR, Tensor]:
        if isinstance(key, Tensor) and not key.is_inference():  # inference tensors have no version counter
            self._entry = (weakref.ref(key, self._drop), self._tag(key, num_nodes), value)
        return value

    def clear(self) -> None:
        self._entry = None

    def _drop(self, ref: weakref.ref) -> None:
        if self._entry is not None and self._entry[0] is ref:
            self._entry = None
