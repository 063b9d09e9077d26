"""Graph-classification datasets for the benchmark.

* :func:`digits_graphs`: scikit-learn's handwritten digits (1797 images of 8x8 pixels, shipped
  with scikit-learn, so they work offline on a fresh machine) as graphs (one node per inked pixel, 8-neighbour grid
  edges, node features intensity and row/column position).
* :func:`load_tu`: a TU dataset by name through PyG's ``TUDataset``. The root is ``root`` if given, else
  ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``; ``<root>/<NAME>/raw`` and ``<root>/TUDataset/<NAME>/raw`` are both
  accepted. PyG writes ``processed/`` next to ``raw/``; when the root is read-only (e.g. a shared data folder), the raw
  files are symlinked into a writable cache (:func:`pyg_ple.bench.io.cache_root`) and processed there, in a folder
  named by the files' digest (``<cache>/TUDataset/<digest>/<NAME>``), so other files of one name are never mixed up.
  Missing data is downloaded by PyG as usual; when that fails (unknown name, no network) the error says what to do.
* Datasets without node features get one-hot degree features (``OneHotDegree`` with the maximum degree of the dataset).
* :func:`load_dataset` returns a :class:`GraphDataset` (graphs, labels, feature size, classes) for either source.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from pyg_ple.bench.io import cache_root, data_root, dataset_lock, file_digest, link_raw_files

__all__ = [
    'GraphDataset', 'DatasetUnavailableError', 'load_dataset', 'load_tu', 'digits_graphs',
    'grid_edge_index', 'max_degree', 'add_degree_features', 'add_positional_encoding',
    'TU_DATASETS',
]

# Well-known TU datasets (for messages; any name on the TU site can be downloaded by PyG).
TU_DATASETS = (
    'MUTAG', 'PROTEINS', 'PROTEINS_full', 'ENZYMES', 'NCI1', 'NCI109', 'DD', 'PTC_MR', 'COLLAB', 'IMDB-BINARY',
    'IMDB-MULTI', 'REDDIT-BINARY', 'REDDIT-MULTI-5K', 'MSRC_21', 'BZR', 'COX2', 'DHFR', 'Mutagenicity', 'AIDS',
    'FRANKENSTEIN',
)
TU_RAW_SUFFIXES = ('_A.txt', '_graph_indicator.txt', '_graph_labels.txt')


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be found or downloaded; the message says what to do."""


@dataclass
class GraphDataset:
    """A list of PyG ``Data`` graphs with integer labels ``y`` (one per graph)."""

    name: str
    graphs: Sequence[Any]
    labels: np.ndarray
    num_features: int
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    num_edge_features: int = 0

    def __len__(self) -> int:
        return len(self.graphs)

    def subset(self, idx: Sequence[int]) -> list:
        return [self.graphs[int(i)] for i in idx]


# --------------------------------------------------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------------------------------------------------
def grid_edge_index(height: int = 8, width: int = 8, diagonals: bool = True) -> Tensor:
    """Directed edges (both directions) of a ``height x width`` pixel grid, 8-neighbour (4 without diagonals)."""
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonals:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    src, dst = [], []
    for r in range(height):
        for c in range(width):
            for dr, dc in offsets:
                rr, cc = r + dr, c + dc
                if 0 <= rr < height and 0 <= cc < width:
                    src.append(rr * width + cc)
                    dst.append(r * width + c)
    return torch.tensor([src, dst], dtype=torch.long)


def _digits_arrays(n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    images, labels = load_digits(return_X_y=True)
    images = images.reshape(-1, 8, 8).astype(np.float32) / 16.0
    labels = labels.astype(np.int64)
    n_classes = len(np.unique(labels))
    if n is not None and n != len(labels) and not n_classes <= n <= len(labels) - n_classes:
        raise ValueError(f'digits_n must be {n_classes} to {len(labels) - n_classes} (a stratified subset with every '
                         f'class in it and out of it) or {len(labels)} (all images), got {n}')
    if n is not None and n < len(labels):
        from sklearn.model_selection import train_test_split
        idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
        idx = np.sort(idx)
        images, labels = images[idx], labels[idx]
    return images, labels


def digits_graphs(n: int | None = None, seed: int = 0, ink_only: bool = True) -> GraphDataset:
    """scikit-learn's digits as graphs on the 8x8 pixel grid with 8-neighbour edges.

    Node features (17): intensity in [0, 1], one-hot row (8) and one-hot column (8); ``data.pixel`` is the pixel index
    (row * 8 + col), used as the token position by the sequence models. With ``ink_only`` (default) a graph keeps the
    pixels with non-zero intensity (the strokes, about 40 of 64) and the grid edges among them, so the structure
    carries the shape; otherwise all 64 pixels and all 420 grid edges. ``n`` draws a stratified subset (seeded).
    """
    import torch.nn.functional as F
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph
    images, labels = _digits_arrays(n, seed)
    edge_index = grid_edge_index(8, 8)
    pixel = torch.arange(64)
    pos = torch.cat([F.one_hot(pixel // 8, 8), F.one_hot(pixel % 8, 8)], dim=1).float()
    graphs = []
    for img, y in zip(images, labels):
        x = torch.cat([torch.from_numpy(img.reshape(64, 1)), pos], dim=1)
        if ink_only:
            keep = x[:, 0] > 0
            ei, _ = subgraph(keep, edge_index, relabel_nodes=True, num_nodes=64)
            graphs.append(Data(x=x[keep], edge_index=ei, pixel=pixel[keep], y=torch.tensor([int(y)])))
        else:
            graphs.append(Data(x=x, edge_index=edge_index, pixel=pixel.clone(), y=torch.tensor([int(y)])))
    return GraphDataset('digits', graphs, labels, num_features=17, num_classes=10,
                        info={'source': 'sklearn.datasets.load_digits', 'graphs': len(graphs),
                              'nodes': 'ink pixels' if ink_only else 'all 64 pixels',
                              'avg_nodes': float(np.mean([g.num_nodes for g in graphs])),
                              'features': 'intensity + one-hot row + one-hot column'})


# --------------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------------
def max_degree(graphs: Sequence[Any]) -> int:
    """Largest in-degree (the degree ``OneHotDegree`` uses) over all graphs."""
    from torch_geometric.utils import degree
    best = 0
    for g in graphs:
        if g.edge_index.numel():
            best = max(best, int(degree(g.edge_index[1], g.num_nodes).max()))
    return best


def add_degree_features(graphs: Sequence[Any]) -> tuple[list, int]:
    """One-hot degree node features (appended to ``x`` where graphs have one); returns (graphs, size of the one-hot
    part)."""
    from torch_geometric.transforms import OneHotDegree
    md = max_degree(graphs)
    t = OneHotDegree(md)
    out = [t(g.clone()) for g in graphs]
    return out, md + 1


def add_positional_encoding(graphs: Sequence[Any], kind: str | None, dim: int = 8) -> list:
    """Add ``data.pe`` ([num_nodes, dim]) with PyG's ``AddRandomWalkPE`` (``kind='rw'``) or
    ``AddLaplacianEigenvectorPE`` (``kind='lap'``; zero-padded for graphs with fewer than ``dim + 1`` nodes)."""
    if kind is None or kind == 'none':
        return list(graphs)
    from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE
    out = []
    for g in graphs:
        g = g.clone()
        if kind == 'rw':
            g = AddRandomWalkPE(dim, attr_name='pe')(g)
        elif kind == 'lap':
            n = int(g.num_nodes)
            k = min(dim, max(n - 2, 0))
            if k > 0:
                try:
                    g = AddLaplacianEigenvectorPE(k, attr_name='pe', is_undirected=True)(g)
                    pe = g.pe
                except Exception:  # degenerate spectrum: fall back to zeros
                    pe = torch.zeros(n, k)
            else:
                pe = torch.zeros(n, 0)
            g.pe = torch.cat([pe.float(), torch.zeros(n, dim - pe.size(1))], dim=1)
        else:
            raise ValueError(f"positional encoding must be None, 'rw' or 'lap', got {kind!r}")
        out.append(g)
    return out


# --------------------------------------------------------------------------------------------------------------------
# TU datasets
# --------------------------------------------------------------------------------------------------------------------
def _has_raw(folder: Path, name: str) -> bool:
    return all((folder / f'{name}{s}').exists() for s in TU_RAW_SUFFIXES)


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _locate_tu(name: str, root: Path) -> Path | None:
    """The folder ``R`` with ``R/<name>/raw`` holding the raw files, if any."""
    for base in (root, root / 'TUDataset'):
        if _has_raw(base / name / 'raw', name):
            return base
    return None


def _tu_error(name: str, root: Path, cause: BaseException | None) -> DatasetUnavailableError:
    known = '' if name in TU_DATASETS else (
        f' {name!r} is not one of the common TU names ({", ".join(TU_DATASETS[:10])}, ...); names are case-sensitive'
        ' (see https://chrsmrrs.github.io/datasets/docs/datasets/).')
    why = f' ({type(cause).__name__}: {cause})' if cause is not None else ''
    return DatasetUnavailableError(
        f'TU dataset {name!r} is not under {root} and could not be downloaded{why}.{known} To fix: put the raw files '
        f'({name}_A.txt, {name}_graph_indicator.txt, {name}_graph_labels.txt, ...) in {root}/{name}/raw/ or '
        f'{root}/TUDataset/{name}/raw/, or pass --root (or set PYG_PLE_DATA) to a folder that has them, or run once '
        'with network access so that PyG can download them.')


def load_tu(name: str, root: str | os.PathLike | None = None, use_node_attr: bool = False,
            download: bool = True):
    """``torch_geometric.datasets.TUDataset`` for ``name`` (see the module docstring for roots and caching)."""
    from torch_geometric.datasets import TUDataset
    base = data_root(root)
    found = _locate_tu(name, base)
    cache = cache_root() / 'TUDataset'
    if found is not None and found.resolve() != cache.resolve():
        # PyG writes processed/ next to raw/: the data folder (maybe shared or read-only) is never written to. PyG
        # keys processed/ by the name alone; the folder named by the files' digest keeps other files of that name
        # (another data folder, an edited file) from reading this copy.
        files = sorted(p for p in (found / name / 'raw').iterdir() if p.is_file())
        found = cache / file_digest(files)
        link_raw_files(files, found / name / 'raw')
    if found is None:
        if not download:
            raise _tu_error(name, base, None)
        if not _writable(base):
            raise _tu_error(name, base, PermissionError(f'{base} is not writable'))
        found = base
    created = not (found / name).exists()  # only a folder this call creates may be removed again
    try:
        with dataset_lock('TUDataset', name):
            return TUDataset(str(found), name, use_node_attr=use_node_attr)
    except Exception as e:  # download failure (offline, unknown name), corrupt files
        if found == base and not _has_raw(base / name / 'raw', name):
            if created:
                shutil.rmtree(base / name, ignore_errors=True)  # no half-downloaded folder left behind
            raise _tu_error(name, base, e) from e
        raise


def load_dataset(name: str = 'digits', root: str | os.PathLike | None = None, pe: str | None = None,
                 pe_dim: int = 8, digits_n: int | None = None, seed: int = 0,
                 use_node_attr: bool = False, ink_only: bool = True, degree_features: bool = False,
                 edge_features: bool | None = False) -> GraphDataset:
    """``'digits'`` (offline default) or a TU name; features are ready to use (degree one-hot if missing, PE).

    ``degree_features=True`` appends the one-hot degree to the node features of a TU dataset that has them: softmax
    attention and mean aggregation normalise the neighbourhood size away, and this hands it back as an input.
    ``edge_features=True`` keeps a TU dataset's edge labels as ``edge_attr`` (PyG's one-hot, e.g. the bond types of
    MUTAG and PTC; width ``num_edge_features``), ``None`` keeps them where the dataset has them; otherwise
    ``edge_attr`` is dropped."""
    if name.lower() == 'digits':
        if use_node_attr or degree_features or edge_features:
            raise ValueError("'use_node_attr', 'degree_features' and 'edge_features' (--node-attr, --degree, "
                             '--edge-features) apply to TU datasets; the digits graphs have fixed features (intensity '
                             'and position) and no edge labels')
        ds = digits_graphs(digits_n, seed, ink_only=ink_only)
        if pe:
            ds.graphs = add_positional_encoding(ds.graphs, pe, pe_dim)
            ds.info['pe'] = f'{pe}{pe_dim}'
        return ds
    tu = load_tu(name, root, use_node_attr=use_node_attr)
    graphs = [tu[i] for i in range(len(tu))]
    info: dict[str, Any] = {'source': f'TUDataset({name})', 'data_root': str(data_root(root)),
                            'processed_dir': str(tu.processed_dir)}
    if graphs[0].x is None:
        graphs, nfeat = add_degree_features(graphs)
        info['features'] = f'one-hot degree (max degree {nfeat - 1})'
    else:
        nfeat = graphs[0].x.size(1)
        info['features'] = 'node labels' + (' + attributes' if use_node_attr else '')
        for g in graphs:
            g.x = g.x.float()
        if degree_features:
            graphs, extra = add_degree_features(graphs)
            nfeat += extra
            info['features'] += f' + one-hot degree (max degree {extra - 1})'
    num_edge_features = 0
    if edge_features is None:
        edge_features = graphs[0].get('edge_attr') is not None
    if edge_features:
        if graphs[0].get('edge_attr') is None:
            raise ValueError(f"'edge_features': TU dataset {name} has no edge labels")
        num_edge_features = int(graphs[0].edge_attr.view(graphs[0].edge_attr.size(0), -1).size(1))
        for g in graphs:
            g.edge_attr = g.edge_attr.float().view(-1, num_edge_features)
        info['edge_features'] = f'edge labels (one-hot, {num_edge_features})'
    else:  # unused, as in Errica et al.: dropped to keep batches lean
        for g in graphs:
            if 'edge_attr' in g:
                del g.edge_attr
    if pe:
        graphs = add_positional_encoding(graphs, pe, pe_dim)
        info['pe'] = f'{pe}{pe_dim}'
    labels = np.array([int(g.y.view(-1)[0]) for g in graphs], dtype=np.int64)
    info.update(graphs=len(graphs), avg_nodes=float(np.mean([g.num_nodes for g in graphs])))
    return GraphDataset(name, graphs, labels, num_features=int(nfeat), num_classes=int(labels.max()) + 1, info=info,
                        num_edge_features=num_edge_features)
