"""Molecule datasets with fixed official splits: LRGB Peptides-func and MoleculeNet HIV (ogbg-molhiv's molecules).

* :class:`PeptidesFunctional`: the Long Range Graph Benchmark's Peptides-func (Dwivedi et al. 2022), 15,535 peptides,
  10 binary labels each (multi-label), from ``peptide_multi_class_dataset.csv.gz`` and the official split
  ``splits_random_stratified_peptide.pickle`` (10,873 / 2,331 / 2,331).
* :class:`MoleculeNetHIV`: ``HIV.csv`` (41,127 molecules, one binary label ``HIV_active``) with OGB's scaffold split
  rebuilt from the SMILES (:func:`scaffold_split`; OGB's sizes 32,901 / 4,113 / 4,113). The split is *rebuilt*, not
  OGB's files: results on it say so (:data:`HIV_SPLIT_NOTE`).
* :class:`OGBMolHIV`: ogbg-molhiv from a real OGB folder (``ogbg_molhiv/raw/*.csv.gz`` and
  ``ogbg_molhiv/split/scaffold/*.csv.gz``, as OGB's download unpacks), read with OGB's own raw-file reader
  (``ogb.io.read_graph_pyg``) and its split files. Where that folder is under the root, ``hiv`` uses it instead of
  ``HIV.csv``. OGB's ``PygGraphPropPredDataset`` itself is not used: it would write into the data folder, ask on
  stdin whether to delete it when its release file is missing, download, and ``torch.load`` pickles without
  ``weights_only``.

Both are PyG ``InMemoryDataset`` s: SMILES become graphs once (OGB's ``smiles2graph``: 9 categorical atom features in
``x``, 3 categorical bond features in ``edge_attr``, both ``long``; labels ``y`` of shape ``[1, num_tasks]``, float),
and the processed files are cached. :func:`load_molecules` finds the raw files under a data root (``--root``,
``$PYG_PLE_DATA``) and processes them in the writable cache (:func:`pyg_ple.bench.io.cache_root`), so a shared or
read-only data folder is never written to. The processed file names carry a digest of the raw files, so other raw
files (e.g. a slice of them) are never served from a stale cache.

The split pickle is data from elsewhere: :func:`load_index_pickle` admits numpy arrays only (a pickle that names any
other global, e.g. ``os.system``, is refused before anything runs).

RDKit and OGB are the optional extra ``[mol]`` (``pip install 'pyg-ple[mol]'``), imported only when a molecule is
processed; without them :class:`MolExtraMissingError` says what to install.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import InMemoryDataset

from pyg_ple.bench.io import cache_root, data_root, dataset_lock, file_digest, link_raw_files, load_torch_file
from pyg_ple.bench.tasks import HIV_SPLIT_NOTE

__all__ = ['MOL_EXTRA', 'HIV_SPLIT_NOTE', 'MolExtraMissingError', 'MoleculeData', 'PeptidesFunctional',
           'MoleculeNetHIV', 'OGBMolHIV', 'OGB_SPLIT_NOTE', 'atom_feature_dims', 'bond_feature_dims',
           'load_index_pickle', 'load_molecules', 'mol_to_graph', 'scaffold_split', 'MOLECULE_DATASETS']

MOL_EXTRA = "pip install 'pyg-ple[mol]'"
OGB_SPLIT_NOTE = "OGB's scaffold split (the split files of the ogbg_molhiv folder)"


class MolExtraMissingError(ImportError):
    """RDKit or OGB is missing: the message names the extra to install."""


def _require_mol() -> None:
    # ogb asks PyPI for a newer version of itself on import; the benchmark machines are offline.
    os.environ.setdefault('OUTDATED_IGNORE', '1')
    missing = []
    for module in ('rdkit', 'ogb'):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MolExtraMissingError(f'the molecule datasets need {" and ".join(missing)}: {MOL_EXTRA}')


def atom_feature_dims() -> list[int]:
    """The vocabulary size of each of OGB's 9 atom features (``ogb.utils.features.get_atom_feature_dims``)."""
    _require_mol()
    from ogb.utils.features import get_atom_feature_dims
    return list(get_atom_feature_dims())


def bond_feature_dims() -> list[int]:
    """The vocabulary size of each of OGB's 3 bond features (``ogb.utils.features.get_bond_feature_dims``)."""
    _require_mol()
    from ogb.utils.features import get_bond_feature_dims
    return list(get_bond_feature_dims())


# --------------------------------------------------------------------------------------------------------------------
# A pickle of index arrays, read as data
# --------------------------------------------------------------------------------------------------------------------
def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 keeps the pickling helpers in numpy._core; pickles written by numpy 1 name numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return {(module, '_reconstruct'): _reconstruct for module in ('numpy.core.multiarray', 'numpy._core.multiarray')} \
        | {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}


class _NumpyArraysOnly(pickle.Unpickler):
    """Resolves only the globals that rebuild a numpy array; any other name is refused before it can be called."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f'it names {module}.{name}, and only numpy arrays are admitted') from None


def load_index_pickle(path: str | os.PathLike, keys: Sequence[str] = ('train', 'val', 'test'),
                      size: Optional[int] = None) -> dict[str, np.ndarray]:
    """A pickled dict of integer index arrays (e.g. LRGB's split file), read with an unpickler that admits numpy
    arrays only: a file naming any other global (``os.system``, ``builtins.eval``, ...) is refused before anything in
    it runs. Checks that it holds ``keys``, each a 1-d integer array (in ``[0, size)`` when ``size`` is given).

    Raises ``ValueError`` naming ``path`` for a file that is not such a dict."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            obj = _NumpyArraysOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f'{path} was refused as a split file: {e}; split files are read as numpy arrays only, so '
                         'that no code in them runs') from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f'{path} is not a split file: expected a dict with keys {", ".join(keys)}, found {found}')
    out = {}
    for key in keys:
        idx = obj[key]
        if not isinstance(idx, np.ndarray) or idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f'{path}: split {key!r} must be a 1-d integer numpy array')
        if size is not None and idx.size and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f'{path}: split {key!r} has indices outside [0, {size}) for {size} molecules')
        out[key] = idx.astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Molecules as graphs, and OGB's scaffold split
# --------------------------------------------------------------------------------------------------------------------
def _quiet_rdkit() -> None:
    from rdkit import RDLogger
    RDLogger.DisableLog('rdApp.*')


def mol_to_graph(smiles: str) -> tuple[dict[str, np.ndarray], bool]:
    """OGB's ``smiles2graph`` of ``smiles``, and whether the molecule had to be read without sanitisation.

    A few SMILES of HIV.csv (7, with hypervalent Al, B, Ge) are valid to the older RDKit OGB processed them with but
    are refused by recent ones; they are read unsanitised and featurised with the same OGB functions (aromaticity as
    written), rather than dropped, so that the dataset keeps OGB's 41,127 molecules."""
    _require_mol()
    from ogb.utils import smiles2graph
    from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector
    from rdkit import Chem
    _quiet_rdkit()
    if Chem.MolFromSmiles(smiles) is not None:
        return smiles2graph(smiles), False
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise ValueError(f'RDKit cannot parse the SMILES {smiles!r}')
    mol.UpdatePropertyCache(strict=False)
    x = np.array([atom_to_feature_vector(a) for a in mol.GetAtoms()], dtype=np.int64)
    src, dst, feats = [], [], []
    for bond in mol.GetBonds():
        i, j, f = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_to_feature_vector(bond)
        src += [i, j]
        dst += [j, i]
        feats += [f, f]
    return {'edge_index': np.array([src, dst], dtype=np.int64).reshape(2, -1),
            'edge_feat': np.array(feats, dtype=np.int64).reshape(-1, 3), 'node_feat': x,
            'num_nodes': len(x)}, True


def _scaffold(smiles: str) -> str:
    from rdkit.Chem.Scaffolds import MurckoScaffold
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=True)
    except Exception:  # noqa: BLE001 - RDKit raises its own error types; such molecules share the empty scaffold
        return ''


def scaffold_split(smiles: Sequence[str], frac_train: float = 0.8, frac_valid: float = 0.1) -> dict[str, np.ndarray]:
    """The deterministic scaffold split of Hu et al. (2020) that OGB's molecule datasets use.

    Bemis-Murcko scaffolds (``MurckoScaffoldSmiles(includeChirality=True)``; a SMILES RDKit cannot take goes with the
    empty scaffold) group the molecules; the groups, sorted by (size, first index) largest first, each go whole to
    train while train stays within ``frac_train`` of the molecules, else to valid while train + valid stay within
    ``frac_train + frac_valid``, else to test. Returns sorted index arrays ``train``, ``valid``, ``test``."""
    _require_mol()
    _quiet_rdkit()
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(_scaffold(s), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    train, valid, test = [], [], []
    for group in ordered:
        if len(train) + len(group) > frac_train * n:
            if len(train) + len(valid) + len(group) > (frac_train + frac_valid) * n:
                test += group
            else:
                valid += group
        else:
            train += group
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in (('train', train), ('valid', valid), ('test', test))}


# --------------------------------------------------------------------------------------------------------------------
# PyG datasets
# --------------------------------------------------------------------------------------------------------------------
def _graph(smiles: str, y: torch.Tensor) -> tuple[Any, bool]:
    from torch_geometric.data import Data
    g, unsanitized = mol_to_graph(smiles)
    return Data(x=torch.from_numpy(g['node_feat']), edge_index=torch.from_numpy(g['edge_index']),
                edge_attr=torch.from_numpy(g['edge_feat']), y=y.view(1, -1), num_nodes=int(g['num_nodes'])), \
        unsanitized


class _MoleculeDataset:
    """What both datasets share: raw-file digest in the processed names, the split saved beside the graphs."""

    raw_files: tuple[str, ...] = ()
    split_keys = ('train', 'val', 'test')

    def __init__(self, root: str, transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 force_reload: bool = False):
        self._init_digest(root)
        super().__init__(root, transform, pre_transform, force_reload=force_reload)  # InMemoryDataset, next in MRO
        self.load(self.processed_paths[0])
        self._load_split()

    def _init_digest(self, root: str) -> None:
        raw = [Path(root) / 'raw' / f for f in self.raw_files]
        self.digest = file_digest(raw) if all(p.exists() for p in raw) else 'missing'

    @property
    def raw_file_names(self) -> list[str]:
        return list(self.raw_files)

    @property
    def processed_file_names(self) -> list[str]:
        return [f'data-{self.digest}.pt', f'split-{self.digest}.pt', f'info-{self.digest}.json']

    def download(self) -> None:
        raise FileNotFoundError(f'{type(self).__name__} needs {", ".join(self.raw_files)} in {self.raw_dir}')

    def _save(self, graphs: list, split: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.save(graphs, self.processed_paths[0])
        torch.save({k: torch.from_numpy(v) for k, v in split.items()}, self.processed_paths[1])
        Path(self.processed_paths[2]).write_text(json.dumps(info, indent=2) + '\n')

    def _load_split(self) -> None:
        saved = load_torch_file(self.processed_paths[1], 'a split saved by pyg_ple.bench.molecules')
        self.split = {k: saved[k].long() for k in self.split_keys}
        self.info = json.loads(Path(self.processed_paths[2]).read_text())


class PeptidesFunctional(_MoleculeDataset, InMemoryDataset):
    """LRGB Peptides-func as a PyG ``InMemoryDataset`` under ``root`` (``root/raw`` holds the csv.gz and the split
    pickle). ``self.split`` maps ``train``/``val``/``test`` to index tensors (the official split)."""

    raw_files = ('peptide_multi_class_dataset.csv.gz', 'splits_random_stratified_peptide.pickle')
    num_tasks = 10

    def process(self) -> None:
        _require_mol()
        _quiet_rdkit()
        with gzip.open(self.raw_paths[0], 'rt', newline='') as f:
            rows = list(csv.DictReader(f))
        split = load_index_pickle(self.raw_paths[1], self.split_keys, size=len(rows))
        graphs = []
        for row in _progress(rows, 'Peptides-func: SMILES to graphs'):
            labels = json.loads(row['labels'])  # a list of 10 integers, as written by LRGB
            g, _ = _graph(row['smiles'], torch.tensor(labels, dtype=torch.float))
            graphs.append(g if self.pre_transform is None else self.pre_transform(g))
        self._save(graphs, split, {'molecules': len(graphs), 'split': 'official LRGB split',
                                   'split_sizes': {k: len(v) for k, v in split.items()}})


class MoleculeNetHIV(_MoleculeDataset, InMemoryDataset):
    """MoleculeNet HIV (ogbg-molhiv's molecules and labels) as a PyG ``InMemoryDataset`` under ``root``
    (``root/raw/HIV.csv``). ``self.split`` maps ``train``/``val``/``test`` to the rebuilt scaffold split
    (:func:`scaffold_split`; see :data:`HIV_SPLIT_NOTE`)."""

    raw_files = ('HIV.csv',)
    num_tasks = 1

    def process(self) -> None:
        _require_mol()
        _quiet_rdkit()
        with open(self.raw_paths[0], newline='') as f:
            rows = list(csv.DictReader(f))
        graphs, unsanitized = [], []
        for i, row in enumerate(_progress(rows, 'HIV: SMILES to graphs')):
            g, raw = _graph(row['smiles'], torch.tensor([float(row['HIV_active'])]))
            graphs.append(g if self.pre_transform is None else self.pre_transform(g))
            if raw:
                unsanitized.append(i)
        parts = scaffold_split([row['smiles'] for row in rows])
        split = {'train': parts['train'], 'val': parts['valid'], 'test': parts['test']}
        self._save(graphs, split, {'molecules': len(graphs), 'split': HIV_SPLIT_NOTE,
                                   'split_sizes': {k: len(v) for k, v in split.items()},
                                   'read_unsanitized': unsanitized})


class OGBMolHIV(_MoleculeDataset, InMemoryDataset):
    """ogbg-molhiv from OGB's own files under ``root/raw`` (the graphs' csv.gz files and the scaffold split's
    ``train``/``valid``/``test.csv.gz``, linked there by :func:`load_molecules`). The graphs are what
    ``ogb.io.read_graph_pyg`` reads, with each bond in both directions as OGB's loader adds them; ``self.split`` is
    OGB's split."""

    raw_files = ('edge.csv.gz', 'num-node-list.csv.gz', 'num-edge-list.csv.gz', 'node-feat.csv.gz',
                 'edge-feat.csv.gz', 'graph-label.csv.gz', 'train.csv.gz', 'valid.csv.gz', 'test.csv.gz')
    num_tasks = 1

    def process(self) -> None:
        _require_mol()
        from ogb.io.read_graph_pyg import read_graph_pyg
        raw = Path(self.raw_dir)
        graphs = read_graph_pyg(str(raw), add_inverse_edge=True)
        labels = _read_csv_column(raw / 'graph-label.csv.gz')
        if len(labels) != len(graphs):
            raise ValueError(f'{raw / "graph-label.csv.gz"}: {len(labels)} labels for {len(graphs)} graphs')
        for g, y in zip(graphs, labels):
            g.y = torch.tensor([[float(y)]], dtype=torch.float)
        graphs = [g if self.pre_transform is None else self.pre_transform(g) for g in graphs]
        split = {}
        for key, name in (('train', 'train'), ('val', 'valid'), ('test', 'test')):
            path = raw / f'{name}.csv.gz'
            index = _read_csv_column(path)
            if index.size and (index.min() < 0 or index.max() >= len(graphs) or (index != index.round()).any()):
                raise ValueError(f'{path}: indices must be integers in 0..{len(graphs) - 1}')
            split[key] = index.astype(np.int64)
        self._save(graphs, split, {'molecules': len(graphs), 'split': OGB_SPLIT_NOTE,
                                   'split_sizes': {k: len(v) for k, v in split.items()}})


def _read_csv_column(path: Path) -> np.ndarray:
    """The first column of one of OGB's headerless csv.gz files, as floats."""
    with gzip.open(path, 'rt', newline='') as f:
        return np.array([float(row[0]) for row in csv.reader(f) if row], dtype=np.float64)


def _progress(items: Sequence, desc: str) -> Any:
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit='mol', leave=False, mininterval=2.0, disable=len(items) < 1000)


# --------------------------------------------------------------------------------------------------------------------
# Loading from a data root
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    cls: type  # the dataset class
    folders: tuple[str, ...]  # where the dataset's folder may be, relative to the data root
    cache: str  # where it is processed, relative to cache_root()
    layout: tuple[str, ...] = ()  # the raw files' paths in that folder, in cls.raw_files' order (default raw/<name>)

    def paths(self, folder: Path) -> list[Path]:
        return [folder / rel for rel in (self.layout or [f'raw/{n}' for n in self.cls.raw_files])]


_OGB_HIV = _Source(OGBMolHIV, ('ogbg_molhiv',), 'ogbg_molhiv', tuple(
    [f'raw/{n}' for n in OGBMolHIV.raw_files[:6]] + [f'split/scaffold/{n}' for n in OGBMolHIV.raw_files[6:]]))

# Each name's sources, the preferred first: a real OGB folder is used where the root has one.
MOLECULE_DATASETS = {
    'peptides-func': (_Source(PeptidesFunctional, ('LRGB/peptides-functional', 'peptides-functional'),
                              'LRGB/peptides-functional'),),
    'hiv': (_OGB_HIV, _Source(MoleculeNetHIV, ('MoleculeNet/HIV', 'HIV'), 'MoleculeNet/HIV')),
}


@dataclass
class MoleculeData:
    """A molecule dataset with its fixed split, ready for :mod:`pyg_ple.bench.fixed_split`.

    ``dataset`` is the PyG ``InMemoryDataset``; ``split`` maps ``train``/``val``/``test`` to index tensors;
    ``node_dims``/``edge_dims`` are the vocabulary sizes of the categorical atom and bond features (embedded as OGB's
    ``AtomEncoder``/``BondEncoder`` do, see :class:`pyg_ple.bench.models.CategoricalInput`); ``num_tasks`` the width of
    ``y``."""

    name: str
    dataset: Any
    split: dict[str, torch.Tensor]
    node_dims: tuple[int, ...]
    edge_dims: tuple[int, ...]
    num_tasks: int
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def graphs(self) -> Any:
        """The graphs by index (the dataset itself: ``graphs[i]`` is a ``Data``)."""
        return self.dataset


def _locate(sources: Sequence[_Source], root: Path) -> Optional[tuple[_Source, list[Path]]]:
    """The first source with a folder under ``root`` and that folder's raw files. A folder that exists without all
    its files is an error naming the missing ones, not a reason to read another source."""
    for source in sources:
        for folder in source.folders:
            if not (root / folder).is_dir():
                continue
            paths = source.paths(root / folder)
            missing = [str(p.relative_to(root / folder)) for p in paths if not p.exists()]
            if not missing:
                return source, paths
            if source.layout:  # a dataset's own folder (OGB's): incomplete is a broken download
                raise FileNotFoundError(f'{root / folder} lacks {", ".join(missing)}')
    return None


def load_molecules(name: str, root: str | os.PathLike | None = None, pe: Optional[str] = None,
                   pe_dim: int = 8) -> MoleculeData:
    """The molecule dataset ``name`` (``'peptides-func'`` or ``'hiv'``) from the data root (``root``, else
    ``$PYG_PLE_DATA``, else ``~/.cache/pyg_ple``), where its raw files are in ``LRGB/peptides-functional/raw`` or
    ``MoleculeNet/HIV/raw`` (or ``<name>/raw``); for ``'hiv'``, a real OGB folder ``ogbg_molhiv`` under the root is
    read instead (:class:`OGBMolHIV`, OGB's own split). The raw files are linked into the writable cache and processed
    there once (a minute or two); later calls read the cache. ``pe`` (``'rw'`` or ``'lap'``, ``pe_dim`` wide) adds a
    positional encoding ``data.pe`` as a pre-transform, cached separately.

    Raises ``ValueError`` for an unknown name, ``FileNotFoundError`` naming the folders searched when the raw files
    are missing (or the files an ``ogbg_molhiv`` folder lacks) and :class:`MolExtraMissingError` without RDKit/OGB."""
    from pyg_ple.bench.datasets import add_positional_encoding
    if name not in MOLECULE_DATASETS:
        raise ValueError(f"name must be one of {', '.join(map(repr, MOLECULE_DATASETS))}, got {name!r}")
    if pe not in (None, 'none', 'rw', 'lap'):
        raise ValueError(f"pe must be None, 'rw' or 'lap', got {pe!r}")
    base = data_root(root)
    found = _locate(MOLECULE_DATASETS[name], base)
    if found is None:
        fallback = MOLECULE_DATASETS[name][-1]
        where = ' or '.join(str(base / f / 'raw') for f in fallback.folders)
        raise FileNotFoundError(f'{name}: {", ".join(fallback.cls.raw_files)} not found in {where}; pass '
                                '--root (or set PYG_PLE_DATA) to the data folder that has them')
    source, paths = found
    cls = source.cls
    _require_mol()
    pe = None if pe in (None, 'none') else pe
    # Each positional encoding is a pre-transform: its own processed copy, in its own folder.
    folder = cache_root() / source.cache / (f'pe-{pe}{pe_dim}' if pe else 'plain')
    pre = _PositionalEncoding(pe, pe_dim, add_positional_encoding) if pe else None
    with dataset_lock('molecules', f'{name}-{folder.name}'):
        link_raw_files(paths, folder / 'raw')
        ds = cls(str(folder), pre_transform=pre)
    info = {'source': f'{cls.__name__} from {paths[0].parent}', 'processed_dir': ds.processed_dir, **ds.info}
    if pe:
        info['pe'] = f'{pe}{pe_dim}'
    return MoleculeData(name, ds, ds.split, tuple(atom_feature_dims()), tuple(bond_feature_dims()), cls.num_tasks,
                        info)


class _PositionalEncoding:
    """A pre-transform adding ``data.pe`` (:func:`pyg_ple.bench.datasets.add_positional_encoding`)."""

    def __init__(self, kind: str, dim: int, fn: Callable):
        self.kind, self.dim, self.fn = kind, dim, fn

    def __call__(self, data: Any) -> Any:
        return self.fn([data], self.kind, self.dim)[0]

    def __repr__(self) -> str:
        return f'PositionalEncoding({self.kind!r}, {self.dim})'
