"""Every script in examples/ runs as a plain script (``python examples/x.py``) in seconds, imports only installed
packages (pyg_ple, torch, PyG, ...), and writes outputs that parse."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import pyg_ple

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / 'examples').glob('*.py'))
DATA = Path(os.environ.get('PYG_PLE_DATA', REPO.parent / 'shared' / 'data'))
HAS_MNIST = (DATA / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte.gz').exists()


def run_example(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The example imports the same pyg_ple as this test (a source tree or the installed package).
    env = {**os.environ, 'PYTHONPATH': str(Path(pyg_ple.__file__).resolve().parents[1]), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, str(REPO / 'examples' / name), *args], capture_output=True, text=True,
                          env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize('path', EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_import_only_installed_packages(path):
    source = path.read_text()
    assert 'sys.path' not in source
    local = {p.stem for folder in ('benchmarks', 'examples', 'tests') for p in (REPO / folder).glob('*.py')}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, 'relative import'
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split('.')[0] not in local | {'benchmarks', 'examples', 'tests'}, name


@pytest.mark.slow
def test_attention_graph_example(tmp_path):
    from pyg_ple.bench.datasets import digits_graphs
    out = tmp_path / 'out'
    args = ['--epochs', '1', '--graphs', '40', '--hidden', '8', '--heads', '2', '--k', '2', '--index', '3',
            '--out', str(out)]
    run_example('attention_graph.py', *args)
    G = nx.read_graphml(out / 'attention_graph.graphml')
    graph = digits_graphs(40).graphs[3]
    assert G.is_directed() and G.number_of_nodes() == graph.num_nodes
    indegree = [d for _, d in G.in_degree()]
    assert max(indegree) <= 2 and min(indegree) >= 1  # top 2 of the native edges plus self-loop of every pixel
    assert all(0.0 <= w <= 1.0 for *_, w in G.edges(data='weight'))
    assert G.graph['layer'] == 1 and G.graph['k'] == 2 and G.graph['label'] == int(graph.y)
    assert (out / 'attention_graph.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    run_example('attention_graph.py', *args)  # rerunning replaces its own files


@pytest.mark.slow
def test_attention_graph_example_never_replaces_foreign_files(tmp_path):
    (tmp_path / 'attention_graph.graphml').write_text('not mine')
    proc = run_example('attention_graph.py', '--epochs', '0', '--graphs', '20', '--out', str(tmp_path), check=False)
    assert proc.returncode == 2 and 'did not write' in proc.stderr and 'Traceback' not in proc.stderr
    assert (tmp_path / 'attention_graph.graphml').read_text() == 'not mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['attention_graph.graphml']


@pytest.mark.skipif(not HAS_MNIST, reason='MNIST test files not available (set PYG_PLE_DATA)')
@pytest.mark.slow
def test_mnist_clustering_example(tmp_path):
    out, png = tmp_path / 'c.json', tmp_path / 'c.png'
    run_example('mnist_clustering.py', '--root', str(DATA), '--n', '60', '--seeds', '0', '--channels', '8', '--heads',
                '2', '--steps', '1', '--no-baselines', '--out', str(out), '--png', str(png))
    res = json.loads(out.read_text())
    assert set(res['seeds']['0']) >= {'random/transformer', 'ple/laplacian', 'ple/mixed'}
    assert png.read_bytes()[:4] == b'\x89PNG'


def _accuracies(stdout: str) -> dict[str, float]:
    import re
    found = dict(re.findall(r'^(validation|test) accuracy (\d\.\d{3})$', stdout, flags=re.M))
    assert set(found) == {'validation', 'test'}, stdout
    return {k: float(v) for k, v in found.items()}


@pytest.mark.slow
def test_graph_classification_example_trains_the_default_model_offline(tmp_path):
    proc = run_example('graph_classification.py', '--root', str(tmp_path), '--epochs', '2', '--graphs', '100',
                       '--hidden', '16')
    assert proc.stdout.startswith('digits: 100 graphs, 10 classes; laplacian model, epoch ')
    assert 'of 2 selected' in proc.stdout
    assert all(0.0 <= a <= 1.0 for a in _accuracies(proc.stdout).values())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_node_classification_example_trains_the_default_model_offline(tmp_path):
    proc = run_example('node_classification.py', '--root', str(tmp_path), '--epochs', '3', '--nodes', '120')
    assert proc.stdout.startswith('stochastic block model: 120 nodes, ')
    assert 'ple node model, epoch' in proc.stdout and 'of 3 selected' in proc.stdout
    assert all(0.0 <= a <= 1.0 for a in _accuracies(proc.stdout).values())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_hf_attention_graph_example_runs_offline(tmp_path):
    pytest.importorskip('transformers')
    out = tmp_path / 'out'
    proc = run_example('hf_attention_graph.py', '--out', str(out))
    assert 'tokens of the first text: [CLS] the cat sat on the mat , and the dog watched the cat . [SEP]' in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(['pyg-ple-manifest.json', 'tiny-bert_rollout.graphml', 'tiny-bert_summary.csv',
                            'tiny-bert_summary.md', 'tiny-bert_l0_hmean.graphml', 'tiny-bert_l0_hmean.png',
                            'tiny-bert_l1_hmean.graphml', 'tiny-bert_l1_hmean.png'])
    assert list(tmp_path.iterdir()) == [out]  # the model folder was temporary
    for name in ('tiny-bert_l1_hmean.graphml', 'tiny-bert_rollout.graphml'):
        G = nx.read_graphml(out / name)
        assert G.is_directed() and G.number_of_nodes() == 16  # the first text's tokens, [CLS] to [SEP]
        assert G.nodes['3']['token'] == 'sat' and G.graph['text'].startswith('The cat sat')
        for node in G.nodes:  # every token's attention (and rollout) sums to one
            assert G.in_degree(node, weight='weight') == pytest.approx(1.0, rel=1e-5)
    assert (out / 'tiny-bert_l0_hmean.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (out / 'tiny-bert_summary.csv').read_text().splitlines()[0] == 'layer,head,entropy,distance,spectral_gap'
