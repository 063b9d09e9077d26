"""The IDX reader: magic numbers, shapes, gzip or plain, and clear errors on bad files."""
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pyg_ple.bench.io import data_root
from pyg_ple.experiments.idx import load_mnist, read_idx

DATA = Path(os.environ.get('PYG_PLE_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}[code]
    head = bytes([0, 0, code, arr.ndim]) + b''.join(struct.pack('>I', d) for d in arr.shape)
    return head + arr.astype(dt).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        with gzip.open(path, 'wb') as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize('gz', [False, True])
def test_images_and_labels_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    pi = write(tmp_path / 'img', idx_bytes(images), gz)
    pl = write(tmp_path / 'lbl', idx_bytes(labels), gz)
    got_i = read_idx(pi, expected_magic=2051)
    got_l = read_idx(pl, expected_magic=2049)
    assert got_i.shape == (5, 28, 28) and got_i.dtype == np.uint8
    assert got_l.shape == (5,)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


@pytest.mark.parametrize('code', [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_other_dtypes_native_byte_order(tmp_path, code):
    arr = (np.arange(24).reshape(2, 3, 4) - 5)
    got = read_idx(write(tmp_path / 'x', idx_bytes(arr, code), False))
    assert got.shape == (2, 3, 4) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_magic_numbers_of_mnist_layout(tmp_path):
    data = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    assert int.from_bytes(data[:4], 'big') == 2051
    assert int.from_bytes(idx_bytes(np.zeros(4, np.uint8))[:4], 'big') == 2049


@pytest.mark.parametrize('content, match', [
    (b'\x01\x02\x08\x01' + struct.pack('>I', 1) + b'\x00', 'first two bytes must be zero'),
    (b'\x00\x00\x07\x01' + struct.pack('>I', 1) + b'\x00', 'unknown data-type code'),
    (b'\x00\x00', 'only 2 bytes'),
    (b'\x00\x00\x08\x03' + struct.pack('>I', 2), 'truncated IDX header'),
    (b'\x00\x00\x08\x01' + struct.pack('>I', 10) + b'\x00' * 3, 'truncated'),
    (b'\x00\x00\x08\x01' + struct.pack('>I', 2) + b'\x00' * 5, 'trailing bytes'),
    (b'\x00\x00\x08\x00', 'declares 0 dimensions'),
    (b'this is not an idx file at all', 'not an IDX file'),
])
def test_bad_files_raise_clear_value_error(tmp_path, content, match):
    with pytest.raises(ValueError, match=match):
        read_idx(write(tmp_path / 'bad', content, False))


def test_wrong_expected_magic(tmp_path):
    p = write(tmp_path / 'lbl.gz', idx_bytes(np.zeros(3, np.uint8)), True)
    with pytest.raises(ValueError, match='magic number is 2049, expected 2051'):
        read_idx(p, expected_magic=2051)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((2, 2), np.uint8)))
    p = tmp_path / 'x.gz'
    p.write_bytes(good[:12])
    with pytest.raises(ValueError, match='gzip'):
        read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / 'nope')


def test_load_mnist_layout_and_mismatch(tmp_path):
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    write(raw / 't10k-images-idx3-ubyte.gz', idx_bytes(np.ones((3, 28, 28), np.uint8)), True)
    write(raw / 't10k-labels-idx1-ubyte', idx_bytes(np.arange(3, dtype=np.uint8)), False)
    x, y = load_mnist(tmp_path)
    assert x.shape == (3, 28, 28) and y.tolist() == [0, 1, 2]
    write(raw / 't10k-labels-idx1-ubyte', idx_bytes(np.arange(4, dtype=np.uint8)), False)
    with pytest.raises(ValueError, match='do not match'):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match='split'):
        load_mnist(tmp_path, split='val')
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path, split='train')


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv('PYG_PLE_DATA', str(tmp_path))
    assert data_root() == tmp_path
    assert data_root('/x/y') == Path('/x/y')
    monkeypatch.delenv('PYG_PLE_DATA')
    assert data_root() == Path('~/.cache/pyg_ple').expanduser()


@pytest.mark.skipif(not (DATA / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte.gz').exists(),
                    reason='MNIST test files not available')
def test_real_mnist_test_set():
    x, y = load_mnist(DATA)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert read_idx(DATA / 'MNIST' / 'raw' / 'train-labels-idx1-ubyte.gz', 2049).shape == (60000,)


def test_atomic_json_writes_numpy_and_torch_scalars(tmp_path):
    import json

    import torch

    from pyg_ple.bench.io import atomic_write_json
    path = atomic_write_json(tmp_path / 'r.json', {'flag': np.bool_(True), 'n': np.int64(3), 'x': np.float32(0.5),
                                                   'a': np.arange(2), 't': torch.tensor([1.5]), 'p': tmp_path})
    assert json.loads(path.read_text()) == {'flag': True, 'n': 3, 'x': 0.5, 'a': [0, 1], 't': [1.5],
                                            'p': str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ['r.json']
