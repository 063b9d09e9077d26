"""Readers for the data files used by the paper-claims benchmarks.

* :func:`read_idx` reads an IDX file (the format of the MNIST distribution files),
  gzip-compressed or plain, and returns a :class:`numpy.ndarray`.
* :func:`load_mnist` reads the MNIST test (or training) images and labels from a
  ``raw`` folder such as ``$PYG_PLE_DATA/MNIST/raw``.

IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic number
``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim`` big-endian uint32
dimension sizes, then the data in C order, big-endian.  The MNIST label files
have magic 2049 (uint8, 1 dim), the image files magic 2051 (uint8, 3 dims).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from pyg_ple.bench.io import data_root

__all__ = ['IDX_DTYPES', 'read_idx', 'load_mnist', 'MNIST_FILES']

# dtype code (third magic byte) -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}

MNIST_FILES = {
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
}

PathLike = Union[str, os.PathLike]


def _read_bytes(path: Path) -> bytes:
    with open(path, 'rb') as f:
        head = f.read(2)
    if head == b'\x1f\x8b':  # gzip magic, whatever the file name says
        try:
            with gzip.open(path, 'rb') as f:
                return f.read()
        except (OSError, EOFError) as e:
            raise ValueError(f'{path}: corrupt gzip stream ({e})') from e
    with open(path, 'rb') as f:
        return f.read()


def read_idx(path: PathLike, expected_magic: Optional[int] = None) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Args:
        path: the file.  Gzip is detected from the content, not the name.
        expected_magic: if given (e.g. 2049 for labels, 2051 for images), the
            file's magic number must equal it.

    Returns:
        An array of shape given by the header, in native byte order
        (``uint8`` for MNIST).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a well-formed IDX file (bad magic, unknown
            dtype code, truncated header or data, trailing bytes, or a magic
            number other than ``expected_magic``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'IDX file not found: {path}')
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise ValueError(f'{path}: not an IDX file (only {len(buf)} bytes, need a 4-byte magic number)')
    magic = int.from_bytes(buf[:4], 'big')
    if buf[0] != 0 or buf[1] != 0:
        raise ValueError(f'{path}: not an IDX file (magic number {magic} = 0x{magic:08x}; the first two bytes '
                         f'must be zero, e.g. 2049 for labels or 2051 for images)')
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise ValueError(f'{path}: not an IDX file (unknown data-type code 0x{code:02x} in magic number {magic})')
    if ndim == 0:
        raise ValueError(f'{path}: IDX magic number {magic} declares 0 dimensions')
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f'{path}: IDX magic number is {magic}, expected {expected_magic}')
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f'{path}: truncated IDX header ({len(buf)} bytes, need {header} for {ndim} dims)')
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(buf) - header
    if got != expected:
        what = 'truncated' if got < expected else 'has trailing bytes'
        raise ValueError(f'{path}: IDX data {what}: header says dims {dims} of {dtype.name} '
                         f'({expected} bytes), file holds {got} bytes')
    arr = np.frombuffer(buf, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder('='), copy=True)


def _find(raw: Path, stem: str) -> Path:
    for name in (stem + '.gz', stem):
        if (raw / name).exists():
            return raw / name
    raise FileNotFoundError(f'{stem}[.gz] not found in {raw}')


def mnist_raw_dir(root: Optional[PathLike] = None) -> Path:
    """``<root>/MNIST/raw`` (or ``root`` itself if it already holds the IDX files)."""
    base = data_root(root)
    for cand in (base / 'MNIST' / 'raw', base / 'raw', base):
        if any((cand / (MNIST_FILES['test'][0] + s)).exists() for s in ('', '.gz')):
            return cand
    return base / 'MNIST' / 'raw'


def load_mnist(root: Optional[PathLike] = None, split: str = 'test') -> Tuple[np.ndarray, np.ndarray]:
    """Load MNIST images ``[n, 28, 28] uint8`` and labels ``[n] uint8``.

    ``root`` is the data folder (see :func:`data_root`); the files are looked up in
    ``<root>/MNIST/raw`` (then ``<root>/raw`` and ``<root>``), gzip or plain.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    raw = mnist_raw_dir(root)
    img_stem, lbl_stem = MNIST_FILES[split]
    images = read_idx(_find(raw, img_stem), expected_magic=2051)
    labels = read_idx(_find(raw, lbl_stem), expected_magic=2049)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f'MNIST {split}: images {images.shape} and labels {labels.shape} do not match')
    return images, labels
