"""Files of the benchmark harness: where data is read from, where processed copies are cached, and atomic writes.

* :func:`data_root`: the data folder, ``root`` if given, else ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``.
* :func:`cache_root`: the writable folder where PyG's ``processed/`` files go (``$PYG_PLE_CACHE``, else
  ``~/.cache/pyg_ple/cache``); :func:`link_raw_files` symlinks a dataset's ``raw/`` files there, so a shared or
  read-only data folder is never written to.
* :func:`atomic_write_bytes` and the text, JSON and ``torch.save`` variants: a temporary file in the same folder,
  fsync, then ``os.replace``; only rank 0 of a ``torchrun`` job writes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from pyg_ple.bench.distributed import is_main_process

__all__ = ['data_root', 'cache_root', 'link_raw_files', 'atomic_write_bytes', 'atomic_write_text',
           'atomic_write_json', 'atomic_torch_save']

PathLike = Union[str, os.PathLike]


def data_root(root: Optional[PathLike] = None) -> Path:
    """The data folder: ``root`` if given, else ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get('PYG_PLE_DATA')
    if env:
        return Path(env).expanduser()
    return Path('~/.cache/pyg_ple').expanduser()


def cache_root() -> Path:
    """Writable folder for processed PyG files (``$PYG_PLE_CACHE``, else ``~/.cache/pyg_ple/cache``)."""
    env = os.environ.get('PYG_PLE_CACHE')
    return Path(env).expanduser() if env else Path('~/.cache/pyg_ple/cache').expanduser()


def link_raw_files(files: Iterable[Path], raw: Path) -> Path:
    """Symlink ``files`` into the folder ``raw`` (copies where links are not allowed); returns ``raw``.

    PyG writes ``processed/`` next to ``raw/``; linking the raw files into the cache keeps the data folder unwritten
    (``os.access`` says yes to root even without write bits, so writability is not tested)."""
    raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = raw / f.name
        if link.is_symlink() and not link.exists():  # dangling link from an earlier root
            link.unlink()
        if not link.exists():
            try:
                link.symlink_to(f.resolve())
            except OSError:
                shutil.copy2(f, link)
    return raw


# --------------------------------------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``.

    A process interrupted at any point (Ctrl-C, SIGKILL, power loss after the fsync) leaves either the old file or the
    new one, never a half-written file. Parent folders are created. In a multi-process (``torchrun``) run only rank 0
    writes; the other processes return without touching the file.
    """
    path = Path(path)
    if not is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the final file the usual permissions
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = 'utf-8') -> Path:
    """Atomic text write (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f'Object of type {type(obj).__name__} is not JSON serializable')


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomic JSON write (numpy/torch scalars and arrays are converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + '\n')


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` made atomic (see :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
