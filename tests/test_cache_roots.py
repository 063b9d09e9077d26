"""A processed copy in the cache belongs to the raw files it was made from: two data folders with different files of
the same name must not share it (TU datasets and Planetoid; the molecule datasets carry a digest in their names)."""
import shutil
from pathlib import Path

import pytest

from test_node import _planetoid_root

from pyg_ple.bench.io import link_raw_files


def _toy_tu(folder: Path, labels: list[int]) -> Path:
    """A TU dataset ``TOY`` of ``len(labels)`` two-node graphs (one edge each, both directions) with these labels."""
    raw = folder / 'TOY' / 'raw'
    raw.mkdir(parents=True)
    n = len(labels)
    (raw / 'TOY_A.txt').write_text(''.join(f'{2 * g + 1}, {2 * g + 2}\n{2 * g + 2}, {2 * g + 1}\n' for g in range(n)))
    (raw / 'TOY_graph_indicator.txt').write_text(''.join(f'{g + 1}\n{g + 1}\n' for g in range(n)))
    (raw / 'TOY_graph_labels.txt').write_text(''.join(f'{y}\n' for y in labels))
    return folder


def test_tu_datasets_of_one_name_from_two_folders_are_each_their_own(tmp_path, monkeypatch):
    from pyg_ple.bench.datasets import load_tu
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    a = _toy_tu(tmp_path / 'a', [0, 1, 0, 1])
    b = _toy_tu(tmp_path / 'b', [1, 1, 1, 0])
    assert load_tu('TOY', root=a, download=False)._data.y.tolist() == [0, 1, 0, 1]
    assert load_tu('TOY', root=b, download=False)._data.y.tolist() == [1, 1, 1, 0]
    assert load_tu('TOY', root=a, download=False)._data.y.tolist() == [0, 1, 0, 1]
    assert not (a / 'TOY' / 'processed').exists() and not (b / 'TOY' / 'processed').exists()
    (b / 'TOY' / 'raw' / 'TOY_graph_labels.txt').write_text('0\n0\n0\n0\n')  # edited in place
    assert load_tu('TOY', root=b, download=False)._data.y.tolist() == [0, 0, 0, 0]


@pytest.mark.skipif(_planetoid_root() is None, reason='Planetoid Cora raw files not found (set PYG_PLE_DATA)')
def test_planetoid_from_two_folders_are_each_their_own(tmp_path, monkeypatch):
    from pyg_ple.bench.node import load_planetoid
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    real = _planetoid_root() / 'Planetoid' / 'Cora' / 'raw'
    edited = tmp_path / 'edited' / 'Planetoid' / 'Cora' / 'raw'
    edited.mkdir(parents=True)
    for f in real.iterdir():
        (edited / f.name).symlink_to(f)
    (edited / 'ind.cora.test.index').unlink()
    lines = (real / 'ind.cora.test.index').read_text().split()
    (edited / 'ind.cora.test.index').write_text('\n'.join(lines[:-10]) + '\n')  # ten test nodes fewer
    assert int(load_planetoid('Cora', _planetoid_root()).test_mask.sum()) == 1000
    assert int(load_planetoid('Cora', tmp_path / 'edited').test_mask.sum()) == 990
    assert int(load_planetoid('Cora', _planetoid_root()).test_mask.sum()) == 1000


def test_link_raw_files_repoints_links_and_replaces_copies_it_made(tmp_path, monkeypatch):
    one, two = tmp_path / 'one' / 'x.txt', tmp_path / 'two' / 'x.txt'
    for f, text in ((one, 'one'), (two, 'two')):
        f.parent.mkdir()
        f.write_text(text)
    raw = tmp_path / 'cache' / 'raw'
    link_raw_files([one], raw)
    assert (raw / 'x.txt').is_symlink() and (raw / 'x.txt').read_text() == 'one'
    link_raw_files([two], raw)
    assert (raw / 'x.txt').read_text() == 'two'
    (raw / 'x.txt').unlink()
    shutil.copy2(one, raw / 'x.txt')  # the copy it makes where links are not allowed
    link_raw_files([two], raw)
    assert (raw / 'x.txt').read_text() == 'two'
    one.unlink()
    link_raw_files([two], raw)  # a link to a file that is gone is replaced too
    assert (raw / 'x.txt').read_text() == 'two'
