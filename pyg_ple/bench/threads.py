"""How many torch intra-op threads ``pyg-ple bench`` uses when ``--threads`` is not given.

torch's own default is one thread per core. The bench trains on batches of a few hundred to a few thousand nodes, where
each operation is microseconds of work: split over several threads, every parallel region waits for its slowest
thread, and when any other process holds a core (a second run, a browser, a CI neighbour, the other ``torchrun``
processes) that thread is descheduled for a whole time slice. ``benchmarks/results/threads.md`` measured epochs many
times slower with every core than with one thread, with one busy core and on the shared machine without it, and no
case, up to batches of 20,000 nodes, in which more than one thread per process was faster. So the bench uses one thread
per process; :data:`MAX_DEFAULT_THREADS` is the place to raise it where a measurement shows a gain, and the rule still
never gives a process more than its share of the cores under ``torchrun``.

Only the command line applies this (:func:`pyg_ple.bench.cli.cmd_bench`); the library layers (``pyg_ple.nn``,
``pyg_ple.ops``) never change torch's global thread settings.
"""
from __future__ import annotations

import os

__all__ = ['MAX_DEFAULT_THREADS', 'available_cores', 'local_processes', 'default_threads']

# The most intra-op threads per process that never made an epoch slower in benchmarks/results/threads.md.
MAX_DEFAULT_THREADS = 1


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def local_processes() -> int:
    """The processes of this run on this machine: ``LOCAL_WORLD_SIZE`` under ``torchrun``, else 1."""
    text = os.environ.get('LOCAL_WORLD_SIZE', '1')
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f'LOCAL_WORLD_SIZE must be an integer >= 1, got {text!r}')
    return value


def default_threads(cores: int | None = None, processes: int | None = None) -> int:
    """Intra-op threads per process when ``--threads`` is not given: this process's share of the ``cores`` (default
    :func:`available_cores`) among the ``processes`` of the run on this machine (default :func:`local_processes`),
    at least 1 and at most :data:`MAX_DEFAULT_THREADS`, so that processes x threads <= cores."""
    cores = available_cores() if cores is None else cores
    processes = local_processes() if processes is None else processes
    if cores < 1 or processes < 1:
        raise ValueError(f'cores and processes must be >= 1, got {cores} and {processes}')
    return max(1, min(MAX_DEFAULT_THREADS, cores // processes))
