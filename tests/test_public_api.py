"""The public names of ``pyg_ple`` and what importing it loads."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyg_ple

PUBLIC = ['AttentionAdjacency', 'AttentionGraph', 'LaplacianDiffusionConv', 'PLEGPSLayer', 'PLETransformer',
          'PLETransformerBlock', 'candidate_edge_index', 'finite_checks', 'full_edge_index', 'knn_edge_index',
          'native_plus_full_edge_index', 'ple_init_', 'sequence_edge_index']
NN = ['AttentionAdjacency', 'LaplacianDiffusionConv', 'PLEGPSLayer', 'PLETransformer', 'PLETransformerBlock',
      'VARIANTS', 'ple_init_', 'variant_kwargs']


@pytest.mark.parametrize('name', PUBLIC)
def test_public_name_imports_from_pyg_ple(name):
    assert name in pyg_ple.__all__
    exec(f'from pyg_ple import {name}', {})


def test_version_and_all():
    assert isinstance(pyg_ple.__version__, str) and pyg_ple.__version__.count('.') == 2
    assert sorted(pyg_ple.__all__) == sorted(PUBLIC)  # a new public name is listed here on purpose


def test_nn_names_are_the_top_level_ones():
    import pyg_ple.nn as nn
    assert sorted(nn.__all__) == sorted(NN)
    for name in set(NN) & set(PUBLIC):
        assert getattr(nn, name) is getattr(pyg_ple, name)


def _loaded_after(statement: str) -> set:
    """Top-level names of the modules loaded after ``statement`` in a fresh interpreter using this pyg_ple."""
    env = {**os.environ, 'PYTHONPATH': str(Path(pyg_ple.__file__).resolve().parents[1])}
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.slow
def test_import_loads_no_third_party_module_beyond_torch_geometric():
    geometric = {m.split('.')[0] for m in _loaded_after('import torch_geometric')}
    loaded = _loaded_after('import pyg_ple')
    extra = {m.split('.')[0] for m in loaded} - geometric - set(sys.stdlib_module_names) - {'pyg_ple'}
    assert not extra, f'import pyg_ple loads {sorted(extra)}'
    assert not {m for m in loaded if m.startswith(('pyg_ple.bench', 'pyg_ple.experiments'))}  # the core only
    # PyG itself imports tqdm and, when installed, transformers; the harness's heavy extras must never load.
    assert not {m.split('.')[0] for m in loaded} & {'sklearn', 'scipy', 'matplotlib', 'rdkit', 'ogb'}
