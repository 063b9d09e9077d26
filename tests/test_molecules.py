"""The molecule datasets: the split pickle read as numpy arrays only, SMILES to OGB's graphs, OGB's scaffold split, and
the loaders (on small files written here; the real files only where ``$PYG_PLE_DATA`` has them)."""
from __future__ import annotations

import csv
import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_ple.bench import molecules
from pyg_ple.bench.molecules import MolExtraMissingError, load_index_pickle, load_molecules, scaffold_split

rdkit = pytest.importorskip('rdkit')
ogb = pytest.importorskip('ogb')

# Small molecules with their Bemis-Murcko scaffolds: 4 on benzene, 3 acyclic (empty scaffold), 2 on cyclohexane, 1 on
# pyridine.
SMILES = ['Cc1ccccc1', 'CCO', 'Oc1ccccc1', 'CCN', 'C1CCCCC1C', 'Nc1ccccc1', 'CC(=O)O', 'OC1CCCCC1', 'c1ccccc1CC',
          'Cc1ccncc1']


def _write_peptides(raw: Path, rows: int = 12) -> list[list[int]]:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = [[int(v) for v in rng.integers(0, 2, 10)] for _ in range(rows)]
    with gzip.open(raw / 'peptide_multi_class_dataset.csv.gz', 'wt', newline='') as f:
        w = csv.writer(f)
        w.writerow(['', 'smiles', 'peptide_seq', 'labels', 'identifier'])
        for i in range(rows):
            w.writerow([i, SMILES[i % len(SMILES)], 'AG', str(labels[i]), i])
    with open(raw / 'splits_random_stratified_peptide.pickle', 'wb') as f:
        pickle.dump({'train': np.arange(0, rows - 4), 'val': np.arange(rows - 4, rows - 2),
                     'test': np.arange(rows - 2, rows)}, f)
    return labels


def _write_hiv(raw: Path) -> None:
    raw.mkdir(parents=True)
    with open(raw / 'HIV.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['smiles', 'activity', 'HIV_active'])
        for i, s in enumerate(SMILES):
            w.writerow([s, 'CI', int(i % 3 == 0)])
        # RDKit >= 2023 refuses this valence (one of HIV.csv's 7 such molecules): it is kept, read unsanitised.
        w.writerow(['O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3', 'CI', 0])


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob('*')}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


# --------------------------------------------------------------------------------------------------------------------
# The split pickle
# --------------------------------------------------------------------------------------------------------------------
def test_index_pickle_of_numpy_arrays_is_read(tmp_path):
    path = tmp_path / 'split.pickle'
    with open(path, 'wb') as f:
        pickle.dump({'train': np.array([3, 0, 1]), 'val': np.array([2], dtype=np.int32), 'test': np.array([4])}, f)
    split = load_index_pickle(path, size=5)
    assert {k: v.tolist() for k, v in split.items()} == {'train': [3, 0, 1], 'val': [2], 'test': [4]}
    assert all(v.dtype == np.int64 for v in split.values())


class _System:
    """Unpickling this runs a shell command: the stand-in for code in a file from elsewhere."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _crafted(path: Path, marker: Path) -> Path:
    with open(path, 'wb') as f:
        pickle.dump({'train': np.arange(3), 'val': _System(f'touch {marker}'), 'test': np.arange(2)}, f)
    return path


@pytest.mark.skipif(sys.platform == 'win32', reason='touch')
def test_the_crafted_pickle_does_run_code_when_fully_unpickled(tmp_path):
    marker = tmp_path / 'ran'
    with open(_crafted(tmp_path / 'evil.pickle', marker), 'rb') as f:
        pickle.load(f)
    assert marker.exists()  # so its absence below means the loader refused it


def test_a_pickle_that_would_call_os_system_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / 'ran'
    evil = _crafted(tmp_path / 'evil.pickle', marker)
    with pytest.raises(ValueError, match=r'evil.pickle was refused as a split file: it names (posix|nt|os)\.system, '
                                         'and only numpy arrays are admitted'):
        load_index_pickle(evil)
    assert not marker.exists()


@pytest.mark.parametrize('obj, message', [
    ([1, 2], 'expected a dict with keys train, val, test, found list'),
    ({'train': np.arange(2), 'val': np.arange(2)}, "found \\['train', 'val'\\]"),
    ({'train': np.zeros(2), 'val': np.arange(2), 'test': np.arange(2)}, "split 'train' must be a 1-d integer"),
    ({'train': np.arange(9), 'val': np.arange(2), 'test': np.arange(2)}, "split 'train' has indices outside"),
])
def test_index_pickle_of_another_shape_is_refused(tmp_path, obj, message):
    path = tmp_path / 'split.pickle'
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=message):
        load_index_pickle(path, size=5)


# --------------------------------------------------------------------------------------------------------------------
# Graphs and the scaffold split
# --------------------------------------------------------------------------------------------------------------------
def test_molecule_graphs_are_ogbs_smiles2graph():
    from ogb.utils import smiles2graph
    g, unsanitized = molecules.mol_to_graph('CC(=O)Nc1ccccc1')
    ref = smiles2graph('CC(=O)Nc1ccccc1')
    assert not unsanitized
    for key in ('edge_index', 'edge_feat', 'node_feat'):
        np.testing.assert_array_equal(g[key], ref[key])
    assert g['node_feat'].shape == (10, 9) and g['edge_feat'].shape == (20, 3)


def test_a_smiles_recent_rdkit_refuses_is_read_unsanitised_with_the_same_features():
    from rdkit import Chem
    smiles = 'O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3'
    assert Chem.MolFromSmiles(smiles) is None
    g, unsanitized = molecules.mol_to_graph(smiles)
    assert unsanitized and g['node_feat'].shape == (19, 9) and g['edge_index'].shape[0] == 2
    assert g['node_feat'][3, 0] == 12  # aluminium: OGB's atomic-number feature is Z - 1
    assert g['edge_feat'].shape == (g['edge_index'].shape[1], 3)


def test_scaffold_split_fills_train_then_valid_then_test_with_whole_groups_largest_first():
    split = scaffold_split(SMILES)
    # Groups by size: benzene (0, 2, 5, 8), acyclic (1, 3, 6), cyclohexane (4, 7), pyridine (9). Train takes 4 + 3 = 7
    # of 10 (<= 8); cyclohexane would make it 9 > 8, and 7 + 2 <= 9, so valid; pyridine fits train again (8 <= 8).
    assert {k: v.tolist() for k, v in split.items()} == {'train': [0, 1, 2, 3, 5, 6, 8, 9], 'valid': [4, 7],
                                                         'test': []}
    split = scaffold_split(SMILES, frac_train=0.5, frac_valid=0.3)
    # Train: benzene (4 <= 5); acyclic would make 7 > 5, 4 + 3 <= 8: valid; cyclohexane: 9 > 8: test; pyridine: train.
    assert {k: v.tolist() for k, v in split.items()} == {'train': [0, 2, 5, 8, 9], 'valid': [1, 3, 6],
                                                         'test': [4, 7]}


def test_scaffold_ties_in_size_go_by_first_index_largest_first():
    # Two groups of one: the one seen later (larger first index) comes first and takes the single train place.
    split = scaffold_split(['c1ccccc1C', 'C1CCCCC1C'], frac_train=0.5, frac_valid=0.5)
    assert split['train'].tolist() == [1] and split['valid'].tolist() == [0]


# --------------------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------------------
def test_peptides_loader_processes_once_into_the_cache_and_leaves_the_data_folder_unwritten(tmp_path, cache,
                                                                                            monkeypatch):
    data = tmp_path / 'data'
    labels = _write_peptides(data / 'LRGB' / 'peptides-functional' / 'raw')
    before = _files(data)
    mol = load_molecules('peptides-func', data)
    assert _files(data) == before
    assert Path(mol.info['processed_dir']).is_relative_to(cache)
    assert len(mol) == 12 and mol.num_tasks == 10
    assert {k: v.tolist() for k, v in mol.split.items()} == {'train': list(range(8)), 'val': [8, 9],
                                                             'test': [10, 11]}
    assert mol.node_dims == (119, 5, 12, 12, 10, 6, 6, 2, 2) and mol.edge_dims == (5, 6, 2)
    g = mol.dataset[3]
    assert g.x.dtype == torch.long and g.x.shape == (3, 9)  # 'CCN'
    assert g.edge_attr.dtype == torch.long and g.edge_attr.shape == (4, 3)
    assert g.y.shape == (1, 10) and g.y.dtype == torch.float and g.y.view(-1).tolist() == labels[3]

    def fail(self):
        raise AssertionError('processed again')
    monkeypatch.setattr(type(mol.dataset), 'process', fail)
    again = load_molecules('peptides-func', data)
    assert torch.equal(again.dataset[3].x, g.x)


def test_other_raw_files_are_processed_afresh_not_read_from_a_stale_cache(tmp_path, cache):
    first, second = tmp_path / 'a', tmp_path / 'b'
    _write_peptides(first / 'LRGB' / 'peptides-functional' / 'raw', rows=12)
    _write_peptides(second / 'peptides-functional' / 'raw', rows=8)
    assert len(load_molecules('peptides-func', first)) == 12
    assert len(load_molecules('peptides-func', second)) == 8


def test_positional_encoding_is_added_once_and_cached_apart(tmp_path, cache):
    data = tmp_path / 'data'
    _write_peptides(data / 'LRGB' / 'peptides-functional' / 'raw')
    plain = load_molecules('peptides-func', data)
    rw = load_molecules('peptides-func', data, pe='rw', pe_dim=4)
    assert rw.dataset[0].pe.shape == (rw.dataset[0].num_nodes, 4) and 'pe' not in plain.dataset[0]
    assert rw.info['pe'] == 'rw4' and rw.info['processed_dir'] != plain.info['processed_dir']


def test_hiv_loader_rebuilds_the_scaffold_split_and_keeps_every_molecule(tmp_path, cache):
    data = tmp_path / 'data'
    _write_hiv(data / 'MoleculeNet' / 'HIV' / 'raw')
    mol = load_molecules('hiv', data)
    assert len(mol) == 11 and mol.num_tasks == 1
    assert mol.info['read_unsanitized'] == [10]
    assert 'rebuilt scaffold split' in mol.info['split']
    assert sorted(torch.cat(list(mol.split.values())).tolist()) == list(range(11))
    assert [mol.dataset[i].y.item() for i in range(4)] == [1.0, 0.0, 0.0, 1.0]


def test_split_pickle_is_read_safely_by_the_loader(tmp_path, cache):
    raw = tmp_path / 'data' / 'peptides-functional' / 'raw'
    _write_peptides(raw)
    marker = tmp_path / 'ran'
    _crafted(raw / 'splits_random_stratified_peptide.pickle', marker)
    with pytest.raises(ValueError, match='refused as a split file'):
        load_molecules('peptides-func', tmp_path / 'data')
    assert not marker.exists()


def test_missing_files_unknown_names_and_the_missing_extra_are_clear(tmp_path, cache, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r'HIV.csv not found in .*MoleculeNet/HIV/raw or .*HIV/raw; pass '
                                                '--root'):
        load_molecules('hiv', tmp_path)
    with pytest.raises(ValueError, match="name must be one of 'peptides-func', 'hiv', got 'HIV-ogb'"):
        load_molecules('HIV-ogb', tmp_path)
    _write_hiv(tmp_path / 'HIV' / 'raw')
    monkeypatch.setitem(sys.modules, 'rdkit', None)  # import rdkit now raises ImportError
    with pytest.raises(MolExtraMissingError, match=r"need rdkit: pip install 'pyg-ple\[mol\]'"):
        load_molecules('hiv', tmp_path)


def _write_ogb_molhiv(folder: Path, smiles: list[str], labels: list[int], split: dict[str, list[int]]) -> None:
    """An ``ogbg_molhiv`` folder as OGB's download unpacks it: each bond once (OGB's loader adds the reverse), ids
    local to their graph, headerless csv.gz files."""
    from ogb.utils import smiles2graph
    (folder / 'raw').mkdir(parents=True)
    (folder / 'split' / 'scaffold').mkdir(parents=True)
    graphs = [smiles2graph(s) for s in smiles]
    one_way = [g['edge_index'][:, ::2] for g in graphs]  # smiles2graph lists each bond as (i, j), (j, i)
    columns = {
        'raw/edge.csv.gz': [row for e in one_way for row in e.T.tolist()],
        'raw/num-node-list.csv.gz': [[g['num_nodes']] for g in graphs],
        'raw/num-edge-list.csv.gz': [[e.shape[1]] for e in one_way],
        'raw/node-feat.csv.gz': [row for g in graphs for row in g['node_feat'].tolist()],
        'raw/edge-feat.csv.gz': [row for g in graphs for row in g['edge_feat'][::2].tolist()],
        'raw/graph-label.csv.gz': [[y] for y in labels],
        **{f'split/scaffold/{k}.csv.gz': [[i] for i in v] for k, v in split.items()},
    }
    for rel, rows in columns.items():
        with gzip.open(folder / rel, 'wt', newline='') as f:
            csv.writer(f).writerows(rows)


OGB_SPLIT = {'train': [4, 0, 1, 2, 3, 5], 'valid': [6, 7], 'test': [8, 9]}


def test_a_real_ogb_folder_is_read_with_ogbs_reader_and_split_in_place_of_hiv_csv(tmp_path, cache):
    data = tmp_path / 'data'
    labels = [int(i % 4 == 1) for i in range(len(SMILES))]
    _write_ogb_molhiv(data / 'ogbg_molhiv', SMILES, labels, OGB_SPLIT)
    _write_hiv(data / 'MoleculeNet' / 'HIV' / 'raw')  # present too: the OGB folder wins
    before = _files(data)
    mol = load_molecules('hiv', data)
    assert _files(data) == before
    assert Path(mol.info['processed_dir']).is_relative_to(cache)
    assert mol.info['split'] == molecules.OGB_SPLIT_NOTE and 'OGBMolHIV' in mol.info['source']
    assert len(mol) == len(SMILES) and mol.num_tasks == 1
    assert {k: v.tolist() for k, v in mol.split.items()} == {'train': OGB_SPLIT['train'], 'val': OGB_SPLIT['valid'],
                                                             'test': OGB_SPLIT['test']}
    for i, s in enumerate(SMILES):  # the same graph as from the SMILES, bonds in both directions
        ref, _ = molecules.mol_to_graph(s)
        g = mol.dataset[i]
        assert torch.equal(g.x, torch.from_numpy(ref['node_feat']))
        ours = {(a, b, *f) for (a, b), f in zip(g.edge_index.t().tolist(), g.edge_attr.tolist())}
        theirs = {(a, b, *f) for (a, b), f in zip(ref['edge_index'].T.tolist(), ref['edge_feat'].tolist())}
        assert ours == theirs and g.edge_index.shape[1] == ref['edge_index'].shape[1]
        assert g.y.shape == (1, 1) and g.y.item() == labels[i]


def test_an_incomplete_ogb_folder_is_an_error_naming_what_it_lacks(tmp_path, cache):
    data = tmp_path / 'data'
    _write_ogb_molhiv(data / 'ogbg_molhiv', SMILES, [0] * len(SMILES), OGB_SPLIT)
    (data / 'ogbg_molhiv' / 'split' / 'scaffold' / 'test.csv.gz').unlink()
    _write_hiv(data / 'MoleculeNet' / 'HIV' / 'raw')
    with pytest.raises(FileNotFoundError, match=r'ogbg_molhiv lacks split/scaffold/test.csv.gz'):
        load_molecules('hiv', data)


def test_an_ogb_split_index_outside_the_graphs_is_refused(tmp_path, cache):
    data = tmp_path / 'data'
    _write_ogb_molhiv(data / 'ogbg_molhiv', SMILES, [0] * len(SMILES), {**OGB_SPLIT, 'test': [8, 10]})
    with pytest.raises(ValueError, match=r'test.csv.gz: indices must be integers in 0..9'):
        load_molecules('hiv', data)


def _real_root() -> Path | None:
    root = os.environ.get('PYG_PLE_DATA')
    return Path(root) if root and (Path(root) / 'MoleculeNet' / 'HIV' / 'raw' / 'HIV.csv').exists() else None


@pytest.mark.slow
@pytest.mark.skipif(_real_root() is None, reason='needs $PYG_PLE_DATA with MoleculeNet/HIV/raw/HIV.csv')
def test_rebuilt_hiv_scaffold_split_has_ogbs_sizes():
    with open(_real_root() / 'MoleculeNet' / 'HIV' / 'raw' / 'HIV.csv', newline='') as f:
        smiles = [row['smiles'] for row in csv.DictReader(f)]
    split = scaffold_split(smiles)
    assert [len(split[k]) for k in ('train', 'valid', 'test')] == [32901, 4113, 4113]


# --------------------------------------------------------------------------------------------------------------------
# Categorical encoders in the models
# --------------------------------------------------------------------------------------------------------------------
def test_categorical_encoder_is_ogbs_atom_and_bond_encoder():
    from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder

    from pyg_ple.bench.models import CategoricalEncoder
    g, _ = molecules.mol_to_graph('CC(=O)Nc1ccc(O)cc1')
    for ours, theirs, feats in ((CategoricalEncoder(molecules.atom_feature_dims(), 16), AtomEncoder(16), 'node_feat'),
                                (CategoricalEncoder(molecules.bond_feature_dims(), 8), BondEncoder(8), 'edge_feat')):
        emb = theirs.atom_embedding_list if hasattr(theirs, 'atom_embedding_list') else theirs.bond_embedding_list
        assert [e.weight.shape for e in ours.embeddings] == [e.weight.shape for e in emb]
        ours.load_state_dict({f'embeddings.{i}.weight': e.weight for i, e in enumerate(emb)})
        x = torch.from_numpy(g[feats])
        assert torch.allclose(ours(x), theirs(x))


@pytest.mark.parametrize('name', ['gcn', 'gin', 'gatedgcn', 'gps', 'ple-gps', 'laplacian'])
def test_models_embed_categorical_atoms_and_bonds(name):
    from torch_geometric.data import Batch, Data

    from pyg_ple.bench.models import CategoricalInput, build_model, count_parameters
    graphs = []
    for s in SMILES[:4]:
        g, _ = molecules.mol_to_graph(s)
        graphs.append(Data(x=torch.from_numpy(g['node_feat']), edge_index=torch.from_numpy(g['edge_index']),
                           edge_attr=torch.from_numpy(g['edge_feat'])))
    cat = CategoricalInput(tuple(molecules.atom_feature_dims()), tuple(molecules.bond_feature_dims()))
    edge_dim = 0 if name == 'gcn' else 16
    model = build_model(name, cat, 10, hidden=16, heads=4, num_layers=2, edge_dim=edge_dim)
    assert model(Batch.from_data_list(graphs)).shape == (4, 10)
    assert (model.edge_encoder is None) == (name == 'gcn')
    again = build_model(name, cat.as_dict(), 10, hidden=16, heads=4, num_layers=2, edge_dim=edge_dim)
    assert count_parameters(again) == count_parameters(model)
    with pytest.raises(ValueError, match="'input_norm' normalises continuous node features"):
        build_model(name, cat, 10, input_norm=True)
