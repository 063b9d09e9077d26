r"""Multi-process data-parallel training with PyTorch's own engine (``torch.distributed`` and
``DistributedDataParallel``).

Launch one process per device with ``torchrun``; every process runs the same script::

    torchrun --nproc_per_node=2 -m pyg_ple bench ...                       # one machine, 2 processes
    torchrun --nnodes=2 --nproc_per_node=4 --node_rank=0 \
        --rdzv_backend=c10d --rdzv_endpoint=HOST0:29400 --rdzv_id=job1 -m pyg_ple bench ...   # on machine 0
    # same command with --node_rank=1 on machine 1 (HOST0 must be reachable from every machine)

Inside the script::

    info = init_distributed()                      # reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
    loader = distributed_loader(train_set, batch_size=32, shuffle=True, seed=0)   # DistributedSampler: 1/K per rank
    model = wrap_model(model, info)                # DDP: gradients all-reduced (averaged) in backward
    result = fit(model, loader, config, loss_fn, evaluate)   # every rank evaluates the whole validation set
    if is_main_process(): write results           # only rank 0 writes files (fit's checkpoints included)
    cleanup()

The backend is ``gloo`` on CPU and ``nccl`` when CUDA is available (each process then uses ``cuda:LOCAL_RANK``).
Without the torchrun variables (or with ``WORLD_SIZE=1``) everything falls back to a single process: the same script
runs unchanged with ``python``.

Semantics: with ``K`` processes and a per-process batch of ``b`` graphs, one optimiser step uses the gradient of the
mean loss over the ``K * b`` graphs of the global batch (DDP averages the per-process gradients), so training equals
single-process training on the global batches when the loss is a mean over equally sized local batches
(``drop_last=True`` or a dataset size divisible by ``K * b``). ``tests/test_distributed.py`` checks this to 1e-6.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    'DistInfo', 'init_distributed', 'cleanup', 'is_distributed', 'get_rank', 'get_world_size', 'is_main_process',
    'barrier', 'distributed_sampler', 'distributed_loader', 'wrap_model', 'unwrap_model', 'all_reduce_sums',
]

TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single-process run: the one process that writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_distributed(backend: Optional[str] = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment variables.

    ``backend``: ``'gloo'`` (CPU) or ``'nccl'`` (GPU); default ``nccl`` when CUDA is available, else ``gloo``. Returns a
    single-process :class:`DistInfo` when ``WORLD_SIZE`` is unset or 1. Calling it twice returns the current group.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1 and not (dist.is_available() and dist.is_initialized()):
        device = torch.device('cuda', 0) if backend == 'nccl' else torch.device('cpu')
        return DistInfo(device=device)
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(f'WORLD_SIZE={world_size} but {", ".join(missing)} is not set: launch with torchrun '
                           '(torchrun --nproc_per_node=K ...) or set the variables yourself')
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend not in ('gloo', 'nccl'):
        raise ValueError(f"'backend' must be 'gloo' or 'nccl' (got {backend!r})")
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if backend == 'nccl':
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                    backend=dist.get_backend(), device=device)


def cleanup(wait_for_all: bool = True) -> None:
    """Leave the process group (call at the end of every process).

    With ``wait_for_all`` (a normal end) the ranks first meet at a barrier: a rank that tore its gloo connections
    down while another was still finishing its last collective made the other abort ("terminate called without an
    active exception") in about one run in four of ``tests/test_distributed.py``. After an error pass
    ``wait_for_all=False``: the other ranks may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------
def distributed_sampler(dataset: Sequence, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                        num_replicas: Optional[int] = None, rank: Optional[int] = None):
    """``torch.utils.data.DistributedSampler`` for this process (``num_replicas``/``rank`` default to the group).

    :func:`~pyg_ple.bench.training.fit` calls ``sampler.set_epoch(epoch)`` every epoch, so each epoch is shuffled afresh
    and a resumed run sees the same order."""
    from torch.utils.data import DistributedSampler
    return DistributedSampler(dataset, num_replicas=get_world_size() if num_replicas is None else num_replicas,
                              rank=get_rank() if rank is None else rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


def distributed_loader(dataset: Sequence, batch_size: int, shuffle: bool = True, seed: int = 0,
                       drop_last: bool = False, **kwargs):
    """A PyG ``DataLoader`` over this process's shard of ``dataset`` (a :func:`distributed_sampler`).

    ``batch_size`` is per process: the global batch is ``world_size * batch_size``."""
    from torch_geometric.loader import DataLoader
    sampler = distributed_sampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------
def wrap_model(model: nn.Module, info: Optional[DistInfo] = None, **ddp_kwargs: Any) -> nn.Module:
    """Move ``model`` to this process's device and wrap it in ``DistributedDataParallel`` (unchanged when single
    process). DDP broadcasts rank 0's parameters and buffers at construction, so all ranks start identical."""
    info = info or DistInfo()
    model = model.to(info.device)
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel
    if info.device.type == 'cuda':
        ddp_kwargs.setdefault('device_ids', [info.device.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (to save a state_dict without the ``module.`` prefix)."""
    return getattr(model, 'module', model)


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------
def all_reduce_sums(values: Mapping[str, float], device: Optional[torch.device] = None) -> dict[str, float]:
    """Sum each value over all processes (float64; identity in a single process)."""
    keys = sorted(values)
    if not is_distributed():
        return {k: float(values[k]) for k in keys}
    if device is None:
        nccl = dist.get_backend() == 'nccl'
        device = torch.device('cuda', torch.cuda.current_device()) if nccl else torch.device('cpu')
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))
