"""Files of the benchmark harness: where data is read from, where processed copies are cached, and atomic writes.

* :func:`data_root`: the data folder, ``root`` if given, else ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``.
* :func:`cache_root`: the writable folder where PyG's ``processed/`` files go (``$PYG_PLE_CACHE``, else
  ``~/.cache/pyg_ple/cache``); :func:`link_raw_files` symlinks a dataset's ``raw/`` files there, so a shared or
  read-only data folder is never written to, and :func:`file_digest` names what was processed from them, so that two
  data folders with different files of one name never share a processed copy.
* :func:`atomic_write_bytes` and the text, JSON and ``torch.save`` variants: a temporary file in the same folder,
  fsync, then ``os.replace``; only rank 0 of a ``torchrun`` job writes.
* :func:`load_torch_file`: ``torch.load(weights_only=True)``: tensors and plain data only, so a file from elsewhere
  cannot run code when it is read.
* :class:`RunFolder`: an output folder and the manifest of the files pyg-ple wrote there; pyg-ple writes into a
  folder only if it is new, empty or has such a manifest, and removes only files the manifest lists.
"""
from __future__ import annotations

import contextlib
import filecmp
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional, Union

import numpy as np
from filelock import FileLock, Timeout
import torch
from torch import Tensor

from pyg_ple.bench.distributed import is_main_process

__all__ = ['data_root', 'cache_root', 'dataset_lock', 'run_folder_lock', 'file_digest', 'link_raw_files',
           'atomic_write_bytes', 'atomic_write_text', 'atomic_write_json', 'atomic_torch_save', 'load_torch_file',
           'RunFileError', 'RunFolder', 'MANIFEST_NAME']

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


def dataset_lock(kind: str, name: str) -> FileLock:
    """An inter-process lock for processing dataset ``name`` of ``kind`` (``'TUDataset'``, ``'Planetoid'``).

    PyG writes ``processed/`` in place, so two runs started together on an empty cache would read each other's
    half-written files; holding this lock while the dataset is built serialises them. The lock file lives in
    ``cache_root()/locks``."""
    folder = cache_root() / 'locks'
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f'{kind}-{name}.lock'))


@contextlib.contextmanager
def run_folder_lock(folder: PathLike):
    """Hold, inside the ``with`` block, the lock of the output folder ``folder``: one ``pyg-ple bench`` process at a
    time writes a run folder. A second one (the same command started twice) would train the same seeds and overwrite
    the first one's checkpoints and state. The lock file lives in ``cache_root()/locks``, named by the folder's
    resolved path, not in the folder; the OS releases it when the process ends, however it ends. Raises
    :class:`RunFileError` at once when another process holds it."""
    resolved = str(Path(folder).resolve())
    locks = cache_root() / 'locks'
    lock = FileLock(str(locks / f'run-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.lock'))
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        raise RunFileError(f'{folder} is in use by another pyg-ple run writing there; wait for it to end or choose '
                           'another --out') from None
    except OSError as e:
        raise RunFileError(f'the lock of {folder} cannot be made in {locks} ({e.strerror or e}); set PYG_PLE_CACHE '
                           'to a writable folder') from None
    try:
        yield
    finally:
        lock.release()


def file_digest(files: Iterable[Path]) -> str:
    """The first 12 hex digits of the SHA-256 of the files' contents, read in the order given: the name under which
    the cache keeps what was processed from them, so that other files never share it."""
    h = hashlib.sha256()
    for f in files:
        with open(f, 'rb') as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b''):
                h.update(chunk)
    return h.hexdigest()[:12]


def link_raw_files(files: Iterable[Path], raw: Path) -> Path:
    """Symlink ``files`` into the folder ``raw`` (copies where links are not allowed); returns ``raw``.

    PyG writes ``processed/`` next to ``raw/``; linking the raw files into the cache keeps the data folder unwritten
    (``os.access`` says yes to root even without write bits, so writability is not tested). A link there to another
    file (or a dangling one), or a copy with other contents, is replaced: ``raw`` then holds what ``files`` hold."""
    raw.mkdir(parents=True, exist_ok=True)
    for f in map(Path, files):
        link = raw / f.name
        if link.is_symlink():
            if Path(os.readlink(link)) == f.resolve():
                continue
            link.unlink()
        elif link.is_file():
            if filecmp.cmp(link, f, shallow=False):
                continue
            link.unlink()  # a copy made here where links are not allowed
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
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
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


# --------------------------------------------------------------------------------------------------------------------
# Reading back, and the folders pyg-ple writes into
# --------------------------------------------------------------------------------------------------------------------
class RunFileError(ValueError):
    """An output folder, or a file read back from one, that cannot be used as asked; the message says why."""


def _load_refusal(error: BaseException) -> str:
    # torch's message is a page of advice; keep the line that says what was found.
    text = str(error)
    reason = text.split('WeightsUnpickler error:', 1)[1] if 'WeightsUnpickler error:' in text else text
    line = next((ln.strip() for ln in reason.splitlines() if ln.strip()), type(error).__name__)
    return line.split('. Please use')[0].rstrip('.')


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU.

    Only tensors and plain data (dicts, lists, tuples, strings, numbers) are read; a file holding anything else (a
    pickled object whose loading would run code) is refused before any of it runs. Raises ``FileNotFoundError`` for a
    missing path and :class:`RunFileError` naming ``what`` was expected for a folder, a file of another kind, a
    truncated file or one with other objects.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'no such file: {path}')
    if path.is_dir():
        raise RunFileError(f'{path} is a folder, not {what}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise RunFileError(f'{path} is not {what}: torch.load(weights_only=True) refused it '
                           f'({_load_refusal(e)}); files are read as tensors and plain data only, so that no code '
                           'in them runs') from None


MANIFEST_NAME = 'pyg-ple-manifest.json'
_MANIFEST_KIND = 'files written by pyg-ple'


class RunFolder:
    """An output folder of ``pyg-ple`` and its manifest (``pyg-ple-manifest.json``): the files pyg-ple wrote there.

    A folder is used only when it is new, empty, or holds a manifest (it is a *run folder*); a non-empty folder without
    one is refused, so files pyg-ple did not write are never overwritten or deleted. Every write goes through
    :meth:`claim`, which enters the file in the manifest before it is written (an interrupted write leaves at most a
    listed file that does not exist) and refuses a file that exists but is not listed. ``mode``:

    * ``'new'``: the folder must not hold an earlier run (a manifest): continue one with ``'resume'`` or replace it
      with ``'overwrite'``.
    * ``'resume'`` / ``'add'``: keep the listed files and add to them.
    * ``'overwrite'``: :meth:`prepare` deletes the listed files (and the folders that leaves empty); other files stay.

    :meth:`check` only reads (run it on every process); :meth:`prepare` writes (rank 0 of a ``torchrun`` job).
    """

    MODES = ('new', 'resume', 'overwrite', 'add')

    def __init__(self, root: PathLike, mode: str = 'new'):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, self.MODES))}, got {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self.manifest = self.root / MANIFEST_NAME
        self._files: set[str] | None = None  # the manifest's entries, read by prepare()

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self.root)!r}, mode={self.mode!r})'

    def _read_manifest(self) -> set[str]:
        try:
            doc = json.loads(self.manifest.read_text())
            files = doc['files'] if doc.get('kind') == _MANIFEST_KIND else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            files = None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise RunFileError(f'{self.manifest} is not a pyg-ple manifest (unreadable or edited); nothing in '
                               f'{self.root} is touched: choose another folder')
        return set(files)

    def check(self) -> None:
        """Raise :class:`RunFileError` if the folder cannot be used in this mode; writes nothing."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise RunFileError(f'{root} is a file, not a folder')
        if root.is_dir() and not self.manifest.exists() and any(root.iterdir()):
            raise RunFileError(f'{root} is not empty and holds no {MANIFEST_NAME} (it was not written by pyg-ple); '
                               'choose a new or empty folder')
        if self.manifest.exists():
            self._read_manifest()
            if self.mode == 'new':
                raise RunFileError(f'{root} holds an earlier pyg-ple run: continue it with --resume, or replace it '
                                   'with --overwrite (which deletes only the files that run wrote)')

    def _path(self, rel: str) -> Path:
        name = PurePosixPath(rel)
        if not name.parts or name.is_absolute() or '..' in name.parts or name.as_posix() == MANIFEST_NAME:
            raise RunFileError(f'{rel!r} is not a file name inside the run folder {self.root}')
        path = self.root / name
        root, parent = self.root.resolve(), path.parent.resolve()
        if parent != root and root not in parent.parents:
            raise RunFileError(f'{path} leads out of the run folder {self.root} (a link?); it is not touched')
        return path

    def _write_manifest(self) -> None:
        atomic_write_json(self.manifest, {'kind': _MANIFEST_KIND, 'files': sorted(self._files)})

    def prepare(self) -> 'RunFolder':
        """Check, create the folder and its manifest; in ``'overwrite'`` mode first delete the files of the earlier
        run. Returns ``self``. Only rank 0 of a multi-process job checks and writes: the others return at once (run
        :meth:`check` on every process before rank 0 prepares)."""
        if not is_main_process():
            return self
        self.check()
        self._files = self._read_manifest() if self.manifest.exists() else set()
        if self.mode == 'overwrite':
            paths = [self._path(rel) for rel in sorted(self._files)]  # every entry is checked before one is deleted
            for path in paths:
                self._remove_file(path)
            self._files = set()
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        return self

    def _remove_file(self, path: Path) -> None:
        if path.is_file() or path.is_symlink():
            path.unlink()
        folder = path.parent  # drop the folders the run made and this leaves empty
        while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def claim(self, rel: str) -> Path:
        """The path of ``rel`` (relative to the folder), entered in the manifest before the caller writes it.

        Raises :class:`RunFileError` if the file exists but pyg-ple did not write it."""
        rel = PurePosixPath(rel).as_posix()
        path = self._path(rel)
        if not is_main_process():
            return path
        if self._files is None:
            raise RuntimeError(f'{self!r}: call prepare() before writing into the folder')
        if rel in self._files:
            return path
        if path.exists() or path.is_symlink():
            raise RunFileError(f'{path} exists and was not written by pyg-ple; move it away or choose another folder')
        self._files.add(rel)
        self._write_manifest()
        return path

    def remove(self, rel: str) -> None:
        """Delete the file ``rel`` if pyg-ple wrote it (it is in the manifest), and drop it from the manifest."""
        rel = PurePosixPath(rel).as_posix()
        if not is_main_process() or rel not in (self._files or ()):
            return
        self._remove_file(self._path(rel))
        self._files.discard(rel)
        self._write_manifest()

    def write_bytes(self, rel: str, data: bytes) -> Path:
        return atomic_write_bytes(self.claim(rel), data)

    def write_text(self, rel: str, text: str) -> Path:
        return atomic_write_text(self.claim(rel), text)

    def write_json(self, rel: str, obj: Any) -> Path:
        return atomic_write_json(self.claim(rel), obj)

    def torch_save(self, rel: str, obj: Any) -> Path:
        return atomic_torch_save(obj, self.claim(rel))
