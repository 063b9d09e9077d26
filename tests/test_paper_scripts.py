"""Each paper-claims script end-to-end on a tiny budget (each well under 20 s on one CPU core).

Scripts that need the shared data skip cleanly when it is absent (set PYG_PLE_DATA to the data folder)."""
import importlib.util
import itertools
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('PYG_PLE_DATA', REPO.parent / 'shared' / 'data'))
HAS_MNIST = (DATA / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte.gz').exists()
HAS_SHAKESPEARE = (DATA / 'tinyshakespeare' / 'input.txt').exists()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason='MNIST test files not available (set PYG_PLE_DATA)')
needs_text = pytest.mark.skipif(not HAS_SHAKESPEARE, reason='tinyshakespeare not available (set PYG_PLE_DATA)')


def load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(path.stem + '_under_test', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_runs(tmp_path: Path, epochs: int, **runs: list[str]) -> dict[str, Path]:
    """``pyg-ple bench`` of GCN and the Laplacian transformer on 60 digits graphs, 2 folds, once per keyword (the
    run's folder name) with that keyword's extra options; returns the folders."""
    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '2', '--epochs', str(epochs), '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'gcn,laplacian']
    for name, extra in runs.items():
        assert cli(tiny + extra + ['--out', str(tmp_path / name)]) == 0
    return {name: tmp_path / name for name in runs}


@needs_mnist
@pytest.mark.slow
def test_mnist_clustering_example(tmp_path):
    mod = load_script('examples/mnist_clustering.py')
    out, png = tmp_path / 'c.json', tmp_path / 'c.png'
    assert mod.main(['--root', str(DATA), '--n', '120', '--seeds', '0', '1', '--channels', '16', '--heads', '2',
                     '--steps', '2', '--threads', '1', '--out', str(out), '--png', str(png)]) == 0
    res = json.loads(out.read_text())
    assert set(res['seeds']) == {'0', '1'}
    s0 = res['seeds']['0']
    for init in ('random', 'ple'):
        for heads in ('transformer', 'laplacian', 'mixed'):
            m = s0[f'{init}/{heads}']
            assert 0.0 <= m['after']['2d_knn'] <= 1.0 and 0.0 <= m['before']['full_trust'] <= 1.0
    assert 'SpectralEmbedding (2)' in s0 and png.stat().st_size > 1000


@needs_mnist
@pytest.mark.slow
def test_linearity_script(tmp_path):
    mod = load_script('benchmarks/linearity.py')
    out = tmp_path / 'lin.json'
    assert mod.main(['--root', str(DATA), '--n', '80', '--seeds', '0', '--channels', '16', '--heads', '2',
                     '--depth', '2', '--threads', '1', '--out', str(out)]) == 0
    res = json.loads(out.read_text())
    r = res['mnist']['laplacian']['0']['shared_block'][0]
    assert r['output'] <= 1.0 and r['update'] <= 1.0


def test_r2_affine_exact_for_affine_maps():
    mod = load_script('benchmarks/linearity.py')
    import numpy as np
    X = np.random.default_rng(0).normal(size=(200, 5))
    assert mod.r2_affine(X, X @ np.ones((5, 3)) + 2.0) == pytest.approx(1.0)
    assert mod.r2_affine(X, np.tanh(3 * X) ** 2) < 0.5


@pytest.mark.slow
def test_manifold_compare_digits(tmp_path):
    mod = load_script('benchmarks/manifold_compare.py')
    out, png = tmp_path / 'm.json', tmp_path / 'm.png'
    assert mod.main(['--datasets', 'digits', '--seeds', '0', '--skip-tsne', '--threads', '1',
                     '--out', str(out), '--png', str(png)]) == 0
    res = json.loads(out.read_text())['results']['digits']
    assert res['PLEEmbedding knn, 8 steps']['0']['trust'] > res['PCA']['0']['trust']
    assert png.exists()


@needs_text
@pytest.mark.slow
def test_lm_script(tmp_path):
    mod = load_script('benchmarks/lm_shakespeare.py')
    runs, png, models = tmp_path / 'runs', tmp_path / 'curves.png', tmp_path / 'models'
    args = ['--root', str(DATA), '--max-chars', '20000', '--steps', '4', '--eval-every', '2', '--eval-batches', '1',
            '--batch-size', '4', '--block-size', '16', '--channels', '16', '--layers', '1', '--heads', '2',
            '--seeds', '0', '1', '--variants', 'transformer', 'mixed_learned_eta', '--threads', '1',
            '--out-dir', str(runs), '--png', str(png), '--save-models', str(models)]
    assert mod.main(args) == 0
    r = json.loads((runs / 'mixed_learned_eta_s1.json').read_text())
    assert r['steps'] == [0, 2, 4] and len(r['val_loss']) == 3 and len(r['eta'][0]) == 1
    s = json.loads((runs / 'transformer_s1.json').read_text())
    assert r['params'] == s['params'] + 2  # one learned step size per head (2 heads, 1 layer)
    assert png.exists() and len(list(models.glob('*.pt'))) == 4
    mtime = (runs / 'transformer_s0.json').stat().st_mtime
    assert mod.main(args) == 0  # re-run resumes: nothing is retrained
    assert (runs / 'transformer_s0.json').stat().st_mtime == mtime
    # the linearity script reads the trained LMs
    lin = load_script('benchmarks/linearity.py')
    if HAS_MNIST:
        out = tmp_path / 'lin.json'
        assert lin.main(['--root', str(DATA), '--n', '40', '--seeds', '0', '--channels', '16', '--heads', '2',
                         '--depth', '1', '--threads', '1', '--lm-models', str(models), '--lm-batches', '1',
                         '--out', str(out)]) == 0
        assert set(json.loads(out.read_text())['lm']) == {'transformer', 'mixed_learned_eta'}


@pytest.mark.slow
def test_vit_script_digits(tmp_path):
    mod = load_script('benchmarks/vit_patches.py')
    runs = tmp_path / 'vit'
    assert mod.main(['--datasets', 'digits', '--seeds', '0', '--epochs', '1', '--max-train', '200',
                     '--channels', '16', '--heads', '2', '--layers', '1', '--threads', '1',
                     '--out-dir', str(runs)]) == 0
    files = sorted(p.name for p in runs.glob('*.json'))
    assert files == ['digits_laplacian_s0.json', 'digits_mixed_s0.json', 'digits_transformer_s0.json']
    r = json.loads((runs / 'digits_mixed_s0.json').read_text())
    assert 0.0 <= r['final_val_acc'] <= 1.0 and r['n_val'] == 360


@needs_mnist
@pytest.mark.slow
def test_vit_script_mnist(tmp_path):
    mod = load_script('benchmarks/vit_patches.py')
    runs = tmp_path / 'vit'
    assert mod.main(['--root', str(DATA), '--datasets', 'mnist', '--seeds', '0', '--variants', 'laplacian',
                     '--epochs', '1', '--max-train', '128', '--channels', '16', '--heads', '2', '--layers', '1',
                     '--threads', '1', '--out-dir', str(runs)]) == 0
    r = json.loads((runs / 'mnist_laplacian_s0.json').read_text())
    assert r['n_train'] == 128 and r['n_val'] == 2000


def test_vit_patchify_and_model():
    import torch

    from pyg_ple.experiments.vit import PatchViT, patchify
    img = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (2, 4, 4)
    assert p[0, 0].tolist() == [0, 1, 4, 5] and p[0, 1].tolist() == [2, 3, 6, 7]
    with pytest.raises(ValueError, match='multiple'):
        patchify(img, 3)
    m = PatchViT(4, 4, 10, channels=8, heads=2, num_layers=1, variant='mixed')
    assert m(p).shape == (2, 10)
    assert m.transformer.blocks[0].conv.laplacian_heads == 1
    assert m.transformer.blocks[0].mlp[0].out_features == 16  # mlp_ratio 2.0, as in the published runs
    x = m.embed(p)
    x = torch.cat([m.cls_token.expand(2, -1, -1), x], dim=1) + m.pos_emb
    for block in m.transformer.blocks:
        x = block(x)
    torch.testing.assert_close(m(p), m.head(m.transformer.norm(x[:, 0])), atol=1e-6, rtol=1e-6)


def test_lm_model_is_causal():
    import torch

    from pyg_ple.experiments.lm import CharTransformerLM
    from pyg_ple.nn.block import variant_kwargs
    torch.manual_seed(0)
    for v in ('transformer', 'laplacian', 'mixed_learned_eta'):
        m = CharTransformerLM(11, block_size=8, channels=8, num_layers=2, heads=2, variant=v).eval()
        conv = m.transformer.blocks[0].conv
        assert (conv.laplacian_heads, conv.learn_step_size) == tuple(variant_kwargs(v, 2).values())
        x = torch.randint(0, 11, (1, 8))
        y = x.clone()
        y[0, 5:] = (y[0, 5:] + 1) % 11
        torch.testing.assert_close(m(x)[:, :5], m(y)[:, :5])
    out = m.generate(x[:, :3], 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 7)
    with pytest.raises(ValueError, match='unknown variant'):
        variant_kwargs('nope', 2)


@pytest.mark.slow
def test_graph_classification_report_takes_every_number_from_the_runs(tmp_path):
    """benchmarks/graph_classification.py: main table, grid selections, earlier runs and ablations, all from state.json
    of finished `pyg-ple bench` runs (digits, 2 folds, 1 epoch)."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '2', '--epochs', '1', '--no-progress', '--threads', '1',
            '--no-save-models']
    grid_run, early, abl = tmp_path / 'grid', tmp_path / 'early', tmp_path / 'abl'
    assert cli(tiny + ['--models', 'gcn,laplacian', '--grid', '{"dropout": [0.0, 0.5]}', '--out', str(grid_run)]) == 0
    assert cli(tiny + ['--models', 'gcn', '--out', str(early)]) == 0
    assert cli(tiny + ['--models', 'laplacian', '--step-size', '0.5', '--out', str(abl)]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    out = tmp_path / 'report'
    assert mod.main([str(grid_run), '--earlier', str(early), '--short-budget', str(abl),
                     '--ablation', f'{abl}=half step|--step-size 0.5',
                     '--ablation', f'{grid_run}@laplacian=grid', '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()
    state = json.loads((grid_run / 'state.json').read_text())
    for model in ('gcn', 'laplacian'):
        accs = np.array([r['test_acc'] for r in state['runs'].values() if r['model'] == model]) * 100
        assert f'| {model} | ' in md and f'{accs.mean():.1f} ± {accs.std():.1f}' in md
        picks = [r['selected_config'] for r in state['runs'].values() if r['model'] == model]
        assert f'digits {model}: {{"dropout": 0.0}} in {picks.count(0)}, {{"dropout": 0.5}} in {picks.count(1)} of 2' \
            in md
    fold_acc = {m: np.array([r['test_acc'] for r in sorted(state['runs'].values(), key=lambda r: r['fold'])
                             if r['model'] == m]) * 100 for m in ('gcn', 'laplacian')}
    diff = fold_acc['laplacian'] - fold_acc['gcn']
    cell = f"{diff.mean():+.1f} ± {diff.std(ddof=1) / np.sqrt(2):.1f} ({(diff >= 0).sum()}/2)"
    assert f'| digits | {cell} | – | – | – |' in md  # only gcn ran beside laplacian
    rows, _ = mod.collect([grid_run])
    rows[0]['splits'] = 'other folds'
    assert '| digits | – | – | – | – |' in mod.paired_differences(rows)  # never paired across different splits
    abl_state = json.loads((abl / 'state.json').read_text())
    accs = np.array([r['test_acc'] for r in abl_state['runs'].values()]) * 100
    assert f'| digits | laplacian | half step | `--step-size 0.5` | {accs.mean():.1f} ± {accs.std():.1f} | 2 |' in md
    assert '## Earlier runs' in md and str(early) in md and abl_state['command'] in md
    short = md.split('## The same models with shorter budgets')[1].split('## Earlier runs')[0]
    assert f'| laplacian | **{accs.mean():.1f} ± {accs.std():.1f}** |' in short and f'| `{abl}` |' in short
    assert f'--short-budget {abl}' in md
    assert mod._data_as_placeholder('pyg-ple bench --root /data/x --dataset MUTAG') == (
        'pyg-ple bench --root DATA --dataset MUTAG')
    assert mod._data_as_placeholder('pyg-ple bench --root=/data/x') == 'pyg-ple bench --root DATA'
    csv_lines = (out / 'graph_classification.csv').read_text().splitlines()
    assert csv_lines[0].startswith('dataset,model,acc_mean') and len(csv_lines) == 3
    assert (out / 'graph_classification.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.slow
def test_graph_classification_report_pools_other_split_seeds(tmp_path):
    """--replicate: the same models with --seed 1 and --seed 2, each seed as its own table, and all three seeds pooled
    fold by fold (means, counts and paired differences over the folds of every seed, pairs only within a seed)."""
    import numpy as np

    seed0, seed1, seed2 = bench_runs(tmp_path, 1, s0=[], s1=['--seed', '1'], s2=['--seed', '2']).values()
    mod = load_script('benchmarks/graph_classification.py')
    out = tmp_path / 'report'
    assert mod.main([str(seed0), '--replicate', str(seed2), str(seed1), '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()
    other = md.split('## Other split seeds')[1]

    def fold_acc(run, model):
        runs = json.loads((run / 'state.json').read_text())['runs'].values()
        return np.array([r['test_acc'] for r in sorted(runs, key=lambda r: r['fold']) if r['model'] == model]) * 100

    for seed, run in ((1, seed1), (2, seed2)):
        alone = other.split(f'Seed {seed} alone:')[1].split('seeds pooled')[0]
        for m in ('gcn', 'laplacian'):
            assert f'{fold_acc(run, m).mean():.1f} ± {fold_acc(run, m).std():.1f}' in alone
    pooled = {m: np.concatenate([fold_acc(s, m) for s in (seed0, seed1, seed2)]) for m in ('gcn', 'laplacian')}
    assert 'All 3 seeds pooled (3 × 2 folds per cell' in other
    for m, accs in pooled.items():
        assert f'{accs.mean():.1f} ± {accs.std():.1f}' in other.split('seeds pooled')[1]
    diff = pooled['laplacian'] - pooled['gcn']
    cell = f"{diff.mean():+.1f} ± {diff.std(ddof=1) / np.sqrt(6):.1f} ({(diff >= 0).sum()}/6)"
    assert f'| digits | {cell} | – | – | – |' in other
    rows, _ = mod.collect([seed0])
    rep_rows, _ = mod.collect([seed1, seed2])
    assert len({r['splits'] for r in rows + rep_rows}) == 3  # every seed: other folds
    rep_rows[0]['splits'] = 'other folds'  # gcn's seed-1 folds differ from laplacian's: never paired
    assert '| digits | – | – | – | – |' in mod.paired_differences(mod.pool_seeds(rows, rep_rows))
    assert [r['model'] for r in mod.pool_seeds(rows, rep_rows[1:])] == ['laplacian']  # gcn lacks seed 1: not pooled
    for r in rows:
        r['dataset'], r['acc_mean'] = 'MUTAG', {'gcn': 70.0, 'laplacian': 80.0}[r['model']]
    assert 'laplacian ≥ gcn: 1 of 1 datasets' in mod.pairwise_counts(rows)
    rows[0]['complete'] = False  # gcn with folds still to run: no comparison
    assert mod.pairwise_counts(rows) == ''  # nothing to compare: no '0 of 0' lines
    assert f'--replicate {seed2} {seed1}' in md and '--seed 1' in md and '--seed 2' in md


@pytest.mark.slow
def test_graph_classification_report_sets_one_change_beside_the_same_folds(tmp_path):
    """--change LABEL RUN...: each changed row beside the default row of the same model on the same folds (the main
    runs or the second seed), with validation accuracy and loss and test accuracy before and after."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '2', '--epochs', '2', '--no-progress', '--threads', '1',
            '--no-save-models']
    seed0, seed1, changed = tmp_path / 's0', tmp_path / 's1', tmp_path / 'changed'
    assert cli(tiny + ['--models', 'gcn', '--out', str(seed0)]) == 0
    assert cli(tiny + ['--models', 'gcn,laplacian', '--seed', '1', '--out', str(seed1)]) == 0
    assert cli(tiny + ['--models', 'laplacian', '--seed', '1', '--dropout', '0.5', '--out', str(changed)]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    out = tmp_path / 'report'
    assert mod.main([str(seed0), '--replicate', str(seed1), '--change', 'dropout 0.5', str(changed),
                     '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()
    section = md.split('## One change: dropout 0.5')[1]

    def stats(run):
        runs = [r for r in json.loads((run / 'state.json').read_text())['runs'].values() if r['model'] == 'laplacian']
        return (100 * np.mean([r['val_acc'] for r in runs]), 100 * np.mean([r['heldout_val_acc'] for r in runs]),
                np.mean([r['val_loss'] for r in runs]), 100 * np.mean([r['test_acc'] for r in runs]))

    (va, ho, vl, te), (va2, ho2, vl2, te2) = stats(seed1), stats(changed)
    assert (f'| digits | laplacian | 1 | 2 | {va:.1f} → {va2:.1f} | {ho:.1f} → {ho2:.1f} | {vl:.3f} → {vl2:.3f} '
            f'| {te:.1f} → {te2:.1f} | {te2 - te:+.1f} |') in section
    assert (f'Mean change over the 1 rows with held-out figures: validation accuracy {va2 - va:+.2f}, held-out '
            f'validation accuracy {ho2 - ho:+.2f}, test accuracy {te2 - te:+.2f} points.') in section

    def per_fold(run, key):
        runs = sorted((r for r in json.loads((run / 'state.json').read_text())['runs'].values()
                       if r['model'] == 'laplacian'), key=lambda r: r['fold'])
        return 100 * np.array([r[key] for r in runs])

    diffs = [per_fold(changed, k) - per_fold(seed1, k) for k in ('val_acc', 'heldout_val_acc', 'test_acc')]
    figures = [f'{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(2):.2f}' for d in diffs]
    assert (f'The same changes fold by fold (2 outer folds, each the mean over the models that ran it), mean ± '
            f'standard error: validation accuracy {figures[0]}, held-out {figures[1]}, test {figures[2]} '
            'points.') in section
    assert "--change 'dropout 0.5' " + str(changed) in md and '--dropout 0.5' in md
    # the change ran on the second seed's folds: chosen per fold there, against that seed's default
    assert '| digits | laplacian | 1 | 2 |' in section.split('Chosen per outer fold')[1]
    with pytest.raises(SystemExit) as exc:
        mod.main([str(seed0), '--change', 'no runs'])
    assert exc.value.code == 2


@pytest.mark.slow
def test_graph_report_takes_heldout_figures_of_runs_that_predate_them_from_their_reruns(tmp_path, capsys):
    """--heldout-from RUN...: a default run written before the held-out figure was recorded gets it from a rerun of
    the same command (the same fold accuracies); a run that is no such rerun is refused."""
    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '2', '--epochs', '3', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'laplacian']
    old, rerun, changed, other = (tmp_path / n for n in ('old', 'rerun', 'changed', 'other'))
    for run, extra in ((old, []), (rerun, []), (changed, ['--dropout', '0.5']), (other, ['--lr', '0.05'])):
        assert cli(tiny + extra + ['--out', str(run)]) == 0
    state = json.loads((old / 'state.json').read_text())
    for rec in state['runs'].values():
        del rec['heldout_val_acc'], rec['curve']
    (old / 'state.json').write_text(json.dumps(state))
    mod = load_script('benchmarks/graph_classification.py')
    out = tmp_path / 'report'
    assert mod.main([str(old), '--change', 'dropout 0.5', str(changed), '--out', str(out)]) == 0
    assert '| – |' in (out / 'graph_classification.md').read_text().split('## One change')[1]
    assert mod.main([str(old), '--heldout-from', str(rerun), '--change', 'dropout 0.5', str(changed),
                     '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## One change')[1]
    ho = [100 * sum(r['heldout_val_acc'] for r in json.loads((run / 'state.json').read_text())['runs'].values()) / 2
          for run in (rerun, changed)]
    assert f'| {ho[0]:.1f} → {ho[1]:.1f} |' in section and 'Mean change over the 1 rows' in section
    table = (out / 'graph_classification.md').read_text().split('## Validation of the selected epochs and held out')[1]
    assert '| digits | 0 | laplacian | ' in table and f' | {ho[0]:.1f} | ' in table.split('## ')[0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        mod.main([str(old), '--heldout-from', str(other), '--out', str(out)])
    assert exc.value.code == 2 and 'not a rerun' in capsys.readouterr().err


@pytest.mark.slow
def test_graph_report_budget_paragraph_names_inner_splits(tmp_path):
    """A main table run with --inner-splits says that each fold had that many validation splits, not that it
    trained the selected configuration that many times as Errica et al. do."""
    run = bench_runs(tmp_path, 1, inner=['--inner-splits', '2'])['inner']
    mod = load_script('benchmarks/graph_classification.py')
    assert mod.main([str(run), '--out', str(tmp_path / 'report')]) == 0
    md = (tmp_path / 'report' / 'graph_classification.md').read_text()
    assert 'each fold has 2 inner validation splits instead of one' in md
    assert 'as Errica et al. do' not in md and 'once per fold' not in md


@pytest.mark.slow
def test_graph_report_sets_the_mean_of_several_final_runs_beside_the_first(tmp_path, capsys):
    """--final-runs-from RUN...: runs extended with --final-runs show the first run's and the mean test accuracy of
    every fold's runs, and the model comparisons on the means; a run whose first runs are not a main-table run is
    refused; the recorded command repeats --heldout-from and --final-runs-from."""
    import shutil

    import numpy as np

    main, seed1, other = bench_runs(tmp_path, 3, main=[], seed1=['--seed', '1'], other=['--lr', '0.05']).values()
    extended, extended1 = tmp_path / 'final3', tmp_path / 'final3-s1'
    for run, ext in ((main, extended), (seed1, extended1)):
        shutil.copytree(run, ext)
    bench_runs(tmp_path, 3, **{'final3': ['--resume', '--final-runs', '3'],
                               'final3-s1': ['--seed', '1', '--resume', '--final-runs', '3']})
    runs = json.loads((extended / 'state.json').read_text())['runs']
    mod = load_script('benchmarks/graph_classification.py')
    out = tmp_path / 'report'
    assert mod.main([str(main), '--replicate', str(seed1), '--heldout-from', str(main), '--final-runs-from',
                     str(extended), str(extended1), '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()
    section = md.split('## More than one training run per fold')[1].split('## Exact commands')[0]
    for model in ('gcn', 'laplacian'):
        folds = sorted((r for r in runs.values() if r['model'] == model), key=lambda r: r['fold'])
        first = np.mean([100 * r['final_runs'][0]['test_acc'] for r in folds])
        mean = np.mean([100 * np.mean([f['test_acc'] for f in r['final_runs']]) for r in folds])
        spread = np.mean([np.std([100 * f['test_acc'] for f in r['final_runs']]) for r in folds])
        assert f'| digits | {model} | 0 | 3 | {first:.1f} | {mean:.1f} | {mean - first:+.1f} | {spread:.1f} |' \
            in section
    # the counts skip the digits (not a TU dataset), so there is no '0 of 0' line; the paired table stays
    assert '| laplacian − gcn |' in section and 'of 0 datasets' not in section
    assert '| digits | laplacian | 1 | 3 |' in section
    assert 'Seed 0, the models' in section and 'Seed 1, the models' in section and 'The 2 seeds pooled' in section
    assert f'--heldout-from {main}' in md and f'--final-runs-from {extended}' in md
    assert 'trained once per fold instead of three times' in md
    # A main table of three-run folds says so in its budget paragraph.
    assert mod.main([str(extended), '--out', str(tmp_path / 'report3')]) == 0
    md3 = (tmp_path / 'report3' / 'graph_classification.md').read_text()
    assert 'trained 3 times per fold, as Errica et al. do' in md3 and 'once per fold' not in md3
    assert f"--out {tmp_path / 'report3'}" in md3  # rerunning the command writes where this report is
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        mod.main([str(main), '--final-runs-from', str(other), '--out', str(out)])
    assert exc.value.code == 2 and 'not an extension' in capsys.readouterr().err

    # A change with three runs per fold is set beside the default's three runs (their mean validation and test
    # figures), a change with one beside the one-run default.
    lr = ['--lr', '0.05']  # runs that learn in 6 epochs, so that one run and the mean of three differ
    runs = bench_runs(tmp_path, 6, d1=lr, c3=[*lr, '--dropout', '0.5', '--final-runs', '3'],
                      c1=[*lr, '--dropout', '0.5'])
    shutil.copytree(runs['d1'], tmp_path / 'd3')
    runs.update(bench_runs(tmp_path, 6, d3=[*lr, '--resume', '--final-runs', '3']))
    assert mod.main([str(runs['d1']), '--final-runs-from', str(runs['d3']), '--change', 'three', str(runs['c3']),
                     '--change', 'one', str(runs['c1']), '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()

    def cells(before, after):
        def means(run):
            folds = [r for r in json.loads((run / 'state.json').read_text())['runs'].values() if r['model'] == 'gcn']
            return [100 * np.mean([np.mean([x[k] for x in r.get('final_runs') or [r]]) for r in folds])
                    for k in ('val_acc', 'test_acc')]
        (va, te), (va2, te2) = means(before), means(after)
        return f'{va:.1f} → {va2:.1f} |', f'| {te:.1f} → {te2:.1f} | {te2 - te:+.1f} |'
    for label, before, after, other in (('three', 'd3', 'c3', 'd1'), ('one', 'd1', 'c1', 'd3')):
        want, wrong = cells(runs[before], runs[after]), cells(runs[other], runs[after])
        assert want != wrong
        row = md.split(f'## One change: {label}')[1].split('\n| digits | gcn | 0 | 2 | ')[1].split('\n')[0]
        assert row.startswith(want[0]) and row.endswith(want[1])


@pytest.mark.slow
def test_graph_report_chooses_between_default_and_change_per_fold_on_validation(tmp_path):
    """select_per_fold: in each fold the run with the higher validation accuracy (ties: lower validation loss) gives
    the test accuracy, as a two-point --grid would choose; written under the change's table."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '3', '--epochs', '2', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'gcn,laplacian']
    default, changed = tmp_path / 'default', tmp_path / 'changed'
    assert cli(tiny + ['--out', str(default)]) == 0
    assert cli(tiny + ['--dropout', '0.5', '--lr', '0.03', '--out', str(changed)]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    _, base_runs = mod.collect([default])
    _, change_runs = mod.collect([changed])
    # make every kind of choice happen: a clear win for each side and a tie settled by the loss
    state = change_runs[0]['state']['runs']
    base = base_runs[0]['state']['runs']
    state['gcn/0']['val_acc'], base['gcn/0']['val_acc'] = 0.9, 0.5
    state['gcn/1']['val_acc'], base['gcn/1']['val_acc'] = 0.5, 0.9
    state['gcn/2']['val_acc'] = base['gcn/2']['val_acc'] = 0.7
    state['gcn/2']['val_loss'], base['gcn/2']['val_loss'] = 0.1, 0.2
    from pyg_ple.bench.selection import selection_score
    for rec in [state[f'gcn/{k}'] for k in range(3)] + [base[f'gcn/{k}'] for k in range(3)]:
        rec['val_score'] = selection_score(rec['val_acc'], rec['val_loss'])  # as bench records it
    rows = {r['model']: r for r in mod.select_per_fold(base_runs, change_runs)}
    expected = [state['gcn/0']['test_acc'], base['gcn/1']['test_acc'], state['gcn/2']['test_acc']]
    assert rows['gcn']['picked'] == [1, 2] and rows['gcn']['acc_mean'] == pytest.approx(100 * np.mean(expected))
    folds = lambda runs, m: [runs[f'{m}/{k}'] for k in range(3)]  # noqa: E731
    lap = [max((b, c), key=lambda r: (r['val_acc'], -r['val_loss']))['test_acc']  # exact ties keep the default
           for c, b in zip(folds(state, 'laplacian'), folds(base, 'laplacian'))]
    assert rows['laplacian']['acc_mean'] == pytest.approx(100 * np.mean(lap))
    out = tmp_path / 'report'
    assert mod.main([str(default), '--change', 'dropout 0.5', str(changed), '--out', str(out)]) == 0
    md = (out / 'graph_classification.md').read_text()
    assert 'Chosen per outer fold' in md.split('## One change: dropout 0.5')[1]
    changed_lap = tmp_path / 'changed-laplacian'
    assert cli(tiny[:-2] + ['--models', 'laplacian', '--dropout', '0.5', '--out', str(changed_lap)]) == 0
    assert mod.main([str(default), '--change', 'one model', str(changed_lap), '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## One change: one model')[1]
    assert 'Chosen per outer fold' in section and 'laplacian ≥' not in section  # no counts against absent models


@pytest.mark.slow
def test_graph_report_choose_makes_a_grid_of_the_default_and_each_grid_value_with_its_heldout_figure(tmp_path):
    """--choose LABEL RUN...: the runs' one-point grids and the default are the points of one grid, chosen per fold
    on validation (first point on ties); the held-out figure of the choice is heldout_choice_accuracy over the
    points' curves, and a cell missing a point's folds is left out."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    from pyg_ple.bench.selection import heldout_choice_accuracy
    tiny = ['bench', '--digits-n', '60', '--folds', '3', '--epochs', '3', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'laplacian']
    default, one, eight = tmp_path / 'default', tmp_path / 'h1', tmp_path / 'h8'
    assert cli(tiny + ['--out', str(default)]) == 0
    assert cli(tiny + ['--grid', '{"heads": [1]}', '--out', str(one)]) == 0
    assert cli(tiny + ['--grid', '{"heads": [8]}', '--out', str(eight)]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    runs = [mod.collect([d])[1] for d in (default, one, eight)]
    states = [r[0]['state']['runs'] for r in runs]
    for k, (b, o, e) in enumerate(zip(*(s.values() for s in states))):  # force choices: default, heads 1, heads 8
        for j, rec in enumerate((b, o, e)):
            rec['val_score'] = 1.0 if j == k else 0.5
    [row] = mod.select_per_fold(*runs)
    assert row['picked'] == [1, 1, 1]
    folds = [[s[f'laplacian/{k}'] for s in states] for k in range(3)]
    assert row['acc_mean'] == pytest.approx(np.mean([100 * folds[k][k]['test_acc'] for k in range(3)]))
    heldout = [100 * heldout_choice_accuracy([r['curve'] for r in f], 20)[0] for f in folds]
    assert row['heldout_mean'] == pytest.approx(np.mean(heldout))
    assert row['base_heldout_mean'] == pytest.approx(np.mean([100 * f[0]['heldout_val_acc'] for f in folds]))
    assert row['fold_diffs'][:, 1] == pytest.approx([100 * (f[k]['test_acc'] - f[0]['test_acc'])
                                                    for k, f in enumerate(folds)])
    del states[2]['laplacian/1']  # a point missing a fold: no row
    assert mod.select_per_fold(*runs) == []
    out = tmp_path / 'report'
    assert mod.main([str(default), '--choose', 'heads', str(one), str(eight), '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## Chosen per fold: heads')[1]
    assert 'folds choosing default / heads 1 / heads 8' in section and '| digits | laplacian | 0 | 3 |' in section
    with pytest.raises(SystemExit) as exit_info:  # a label and no run
        mod.main([str(default), '--choose', 'heads', '--out', str(out)])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_graph_report_choice_replays_each_point_with_its_own_patience(tmp_path):
    """A --choose point whose one-point grid sets the patience is replayed with that patience, the default with its
    run's, in the held-out figure of the choice (before, both with the run's patience: a wrong figure)."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    from pyg_ple.bench.selection import heldout_choice_accuracy
    tiny = ['bench', '--digits-n', '60', '--folds', '3', '--epochs', '5', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'gcn']
    default, stops = tmp_path / 'default', tmp_path / 'patience1'
    assert cli(tiny + ['--out', str(default)]) == 0
    assert cli(tiny + ['--grid', '{"patience": [1]}', '--out', str(stops)]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    runs = [mod.collect([d])[1] for d in (default, stops)]
    # Curves on which patience 1 keeps epoch 0 of half a and no patience epoch 2, so the two replays differ.
    losses = {'val_a_loss': [0.5] * 5, 'val_b_loss': [0.5] * 5}
    curves = [{'val_a_acc': [0.6, 0.6, 0.6, 0.6, 0.6], 'val_b_acc': [0.4, 0.4, 0.4, 0.4, 0.4], **losses},
              {'val_a_acc': [0.5, 0.4, 0.9, 0.6, 0.6], 'val_b_acc': [0.7, 0.6, 0.5, 0.6, 0.6], **losses}]
    for run, curve in zip(runs, curves):
        for rec in run[0]['state']['runs'].values():
            rec['curve'] = curve
    [row] = mod.select_per_fold(*runs)
    want = 100 * heldout_choice_accuracy(curves, [None, 1])[0]
    assert want != 100 * heldout_choice_accuracy(curves, None)[0]
    assert row['heldout_mean'] == pytest.approx(want)
    assert not np.isnan(row['fold_diffs'][:, 0]).any()


@pytest.mark.slow
def test_graph_report_choice_compares_the_models_each_with_its_own_choice(tmp_path):
    """--choose with several models and seeds: each model's chosen point per fold, per seed and pooled, and the
    Laplacian transformer minus each other model paired fold by fold on those choices."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '3', '--epochs', '2', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'gcn,laplacian']
    dirs = {}
    for seed in (0, 1):
        for name, extra in (('default', []), ('wide', ['--grid', '{"hidden": [16]}'])):
            dirs[name, seed] = tmp_path / f'{name}{seed}'
            assert cli(tiny + ['--seed', str(seed), *extra, '--out', str(dirs[name, seed])]) == 0
    mod = load_script('benchmarks/graph_classification.py')
    runs = [mod.collect([dirs[name, s] for s in (0, 1)])[1] for name in ('default', 'wide')]
    rows = {(r['model'], r['seed']): r for r in mod.select_per_fold(*runs)}
    diff = np.concatenate([np.subtract(rows['laplacian', s]['fold_acc'], rows['gcn', s]['fold_acc']) for s in (0, 1)])
    out = tmp_path / 'report'
    assert mod.main([str(dirs['default', 0]), '--replicate', str(dirs['default', 1]), '--choose', 'width',
                     str(dirs['wide', 0]), str(dirs['wide', 1]), '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## Chosen per fold: width')[1]
    assert 'Seed 0, each model with the point chosen in each fold' in section
    pooled = section.split('The 2 seeds pooled')[1]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert f'| digits | {diff.mean():+.1f} ± {se:.1f} ({int((diff >= 0).sum())}/6) |' in pooled
    # --change with the same runs: each model's own change fold by fold over both seeds
    assert mod.main([str(dirs['default', 0]), '--replicate', str(dirs['default', 1]), '--change', 'width',
                     str(dirs['wide', 0]), str(dirs['wide', 1]), '--out', str(out)]) == 0
    line = next(x for x in (out / 'graph_classification.md').read_text().splitlines()
                if x.startswith('Per dataset and model, fold by fold'))

    def figures(name, model, key):
        return [100 * json.loads((dirs[name, s] / 'state.json').read_text())['runs'][f'{model}/{k}'][key]
                for s in (0, 1) for k in range(3)]
    for model in ('gcn', 'laplacian'):
        val = np.subtract(figures('wide', model, 'val_acc'), figures('default', model, 'val_acc'))
        held = np.subtract(figures('wide', model, 'heldout_val_acc'), figures('default', model, 'heldout_val_acc'))
        assert (f'digits {model} (6 folds): validation {val.mean():+.2f} ± {val.std(ddof=1) / np.sqrt(6):.2f}, '
                f'held-out {held.mean():+.2f}') in line


@pytest.mark.slow
def test_graph_report_leave_out_table_pairs_each_change_with_the_default_folds(tmp_path):
    """--leave-out LABEL RUN...: one table, a row per setting taken away, a column per dataset; each cell the test
    change paired fold by fold (mean ± standard error, numpy) and the validation change; unfinished runs give '–'."""
    import numpy as np

    from pyg_ple.bench.cli import main as cli
    tiny = ['bench', '--digits-n', '60', '--folds', '3', '--epochs', '2', '--no-progress', '--threads', '1',
            '--no-save-models', '--models', 'laplacian']
    default, no_pe, no_scaler = tmp_path / 'default', tmp_path / 'no-pe', tmp_path / 'no-scaler'
    assert cli(tiny + ['--out', str(default)]) == 0
    assert cli(tiny + ['--pe', 'none', '--out', str(no_pe)]) == 0
    assert cli(tiny + ['--no-degree-scaler', '--out', str(no_scaler)]) == 0
    mod = load_script('benchmarks/graph_classification.py')

    def folds(run):
        runs = sorted(json.loads((run / 'state.json').read_text())['runs'].values(), key=lambda r: r['fold'])
        return np.array([100 * r['test_acc'] for r in runs]), 100 * np.mean([r['val_acc'] for r in runs])

    (base, base_val), (pe, pe_val) = folds(default), folds(no_pe)
    diff = np.round(pe, 2) - np.round(base, 2)
    out = tmp_path / 'report'
    assert mod.main([str(default), '--leave-out', 'PE', str(no_pe), '--leave-out', 'scaler', str(no_scaler),
                     '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## The defaults, one taken away at a time')[1]
    assert f'| nothing: test (validation) accuracy % | laplacian | 0 | {base.mean():.1f} ({base_val:.1f}) |' in section
    assert (f'| PE | laplacian | 0 | {diff.mean():+.1f} ± {diff.std(ddof=1) / np.sqrt(3):.1f} '
            f'({pe_val - base_val:+.1f}) |') in section
    assert '| scaler | laplacian | 0 |' in section and "--leave-out 'PE' " + str(no_pe) in section
    assert '| PE | laplacian | 0+1 |' not in section  # one seed: nothing to pool
    default1, no_pe1 = tmp_path / 'default-s1', tmp_path / 'no-pe-s1'
    assert cli(tiny + ['--seed', '1', '--out', str(default1)]) == 0
    assert cli(tiny + ['--seed', '1', '--pe', 'none', '--out', str(no_pe1)]) == 0
    assert mod.main([str(default), '--replicate', str(default1), '--leave-out', 'PE', str(no_pe), str(no_pe1),
                     '--out', str(out)]) == 0
    section = (out / 'graph_classification.md').read_text().split('## The defaults, one taken away at a time')[1]
    (base1, base1_val), (pe1, pe1_val) = folds(default1), folds(no_pe1)
    pooled = np.concatenate([diff, np.round(pe1, 2) - np.round(base1, 2)])
    assert (f'| PE | laplacian | 0+1 | {pooled.mean():+.1f} ± {pooled.std(ddof=1) / np.sqrt(6):.1f} '
            f'({(pe_val + pe1_val - base_val - base1_val) / 2:+.1f}) |') in section
    assert (f'| nothing: test (validation) accuracy % | laplacian | 0+1 | '
            f'{np.concatenate([base, base1]).mean():.1f} ({(base_val + base1_val) / 2:.1f}) |') in section
    rows, _ = mod.collect([default])
    changed, _ = mod.collect([no_pe])
    changed[0]['complete'] = False  # folds still to run: no number
    assert '| PE |' not in mod.leave_out_table(rows, [('PE', changed)])
    changed[0]['complete'], changed[0]['splits'] = True, 'other folds'  # never paired across different splits
    assert '| PE |' not in mod.leave_out_table(rows, [('PE', changed)])
    with pytest.raises(SystemExit) as exc:
        mod.main([str(default), '--leave-out', 'no runs'])
    assert exc.value.code == 2


@pytest.mark.slow
def test_laplacian_signal_matches_the_layer_itself(tmp_path):
    """benchmarks/laplacian_signal.py: ||A V - V|| / ||A V|| equals ||Laplacian conv output|| / ||standard conv output||
    for the same weights (the layer's own two modes), and the report reads saved fold models of a bench run."""
    import torch
    from torch_geometric.data import Batch

    from pyg_ple.bench.cli import main as cli
    from pyg_ple.bench.datasets import digits_graphs
    from pyg_ple.bench.models import build_model
    mod = load_script('benchmarks/laplacian_signal.py')
    batch = Batch.from_data_list(digits_graphs(20).graphs[:6])
    torch.manual_seed(1)
    lap = build_model('laplacian', 17, 10, hidden=16, heads=4, num_layers=2, dropout=0.0).eval()
    std = build_model('transformer', 17, 10, hidden=16, heads=4, num_layers=2, dropout=0.0).eval()
    std.load_state_dict(lap.state_dict())
    signals = mod.block_signals(lap, batch)
    h = lap.encode(batch)
    hn = lap.transformer.blocks[0].norm1(h)
    with torch.no_grad():
        ratio = (lap.transformer.blocks[0].conv(hn, batch.edge_index).norm()
                 / std.transformer.blocks[0].conv(hn, batch.edge_index).norm())
    assert abs(signals[0]['lap_rel'] - float(ratio)) < 1e-4
    assert len(signals) == 2 and all(s['update_rel'] > 0 for s in signals)

    run = tmp_path / 'run'
    assert cli(['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--hidden', '8', '--layers', '1',
                '--heads', '2', '--no-progress', '--models', 'laplacian,transformer', '--out', str(run)]) == 0
    assert mod.main([str(run), '--out', str(tmp_path / 'out')]) == 0
    rows = list(__import__('csv').DictReader((tmp_path / 'out' / 'laplacian_signal.csv').open()))
    assert {(r['model'], r['when']) for r in rows} == {(m, w) for m in ('laplacian', 'transformer')
                                                       for w in ('init', 'trained')}
    assert all(r['folds'] == '2' and float(r['lap_rel']) > 0 for r in rows)
    md = (tmp_path / 'out' / 'laplacian_signal.md').read_text()
    lap_init = next(r for r in rows if (r['model'], r['when']) == ('laplacian', 'init'))
    assert f"| digits | {float(lap_init['input_contrast']):.2f} | {float(lap_init['lap_rel']):.2f} |" in md


@pytest.mark.parametrize('script,folder', [('benchmarks/lm_shakespeare.py', 'lm'),
                                           ('benchmarks/vit_patches.py', 'vit')])
def test_reports_read_the_published_results(script, folder, tmp_path):
    """The published LM and ViT results name the standard-attention variant 'standard'; the reports read them under
    the variant name 'transformer', with the same numbers."""
    import numpy as np
    mod = load_script(script)
    results = REPO / 'benchmarks' / 'results' / folder
    files = sorted(results.glob('*standard_s*.json'))
    assert files, 'published results missing'
    runs = [json.loads(f.read_text()) for f in files]
    if folder == 'lm':
        text = mod.report(results, tmp_path / 'curves.png')
        values = [r['final_val_loss'] for r in runs]
        cell = f'{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}'
        row = next(line for line in text.splitlines() if line.startswith('| transformer |'))
        assert cell in row and '| laplacian - transformer |' in text
        assert (tmp_path / 'curves.png').exists()
    else:
        text = mod.report(results)
        digits = [100 * r['final_val_acc'] for r in runs if r['dataset'] == 'digits']
        cell = f'{np.mean(digits):.2f} ± {np.std(digits, ddof=1):.2f}'
        assert any(line.startswith('| transformer |') and cell in line for line in text.splitlines())
        assert '| mixed - transformer |' in text
    assert 'standard |' not in text


def test_mnist_clustering_summaries_read_the_published_results():
    import numpy as np
    mod = load_script('examples/mnist_clustering.py')
    res = json.loads((REPO / 'benchmarks' / 'results' / 'mnist_clustering.json').read_text())
    text = mod.summarise(res)
    seeds = list(res['seeds'])
    for init in ('random', 'ple'):
        rows = [line for line in text.splitlines() if line.startswith(f'| {init} embedding (before) |')]
        assert len(rows) == 1  # the embedding is the same for every head type of one init
        values = [res['seeds'][s][f'{init}/standard']['after']['2d_knn'] for s in seeds]
        after = next(line for line in text.splitlines() if line.startswith(f'| {init}/standard after'))
        assert f'{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}' in after
    sweep = mod.summarise_sweep(REPO / 'benchmarks' / 'results' / 'sweep')
    assert sweep.count('| 16.0 | 0.5 | ple/') == 3 and '| 16.0 | 0.5 | ple/standard |' in sweep  # three head types


@pytest.mark.slow
def test_mechanism_ablation_reports_every_arm_from_its_run(tmp_path):
    """Each arm's row holds the numbers of its own run folder; an arm that cannot run is reported, not dropped."""
    mod = load_script('benchmarks/mechanism_ablation.py')
    runs, out = tmp_path / 'runs', tmp_path / 'out'
    mod.main(['--dataset', 'digits', '--arms', 'laplacian', 'gcn', 'edge-features', '--epochs', '1', '--folds', '2',
              '--jobs', '1', '--extra=--digits-n', '--extra=40', '--extra=--hidden', '--extra=8', '--runs', str(runs),
              '--out', str(out)])
    md = (out / 'mechanism_ablation_digits.md').read_text()
    for arm in ('laplacian', 'gcn'):
        row = json.loads((runs / 'digits' / arm / 'results.json').read_text())['results'][0]
        line = next(x for x in md.splitlines() if x.startswith(f'| {arm} |'))
        assert f"| {row['val_acc_mean']:.1f} | {row['acc_mean']:.1f} ± {row['acc_std']:.1f} |" in line
    assert '| edge-features | laplacian |' in md and 'failed (pyg-ple bench: error: --edge-features' in md
    assert '--digits-n 40 --hidden 8' in md
    summary = mod.summarize(out)  # one row per dataset file, the arms' own figures
    lap = json.loads((runs / 'digits' / 'laplacian' / 'results.json').read_text())['results'][0]
    row = next(x for x in summary.splitlines() if x.startswith('| digits |'))
    assert row.startswith(f"| digits | {lap['acc_mean']:.1f} ± {lap['acc_std']:.1f} ({lap['val_acc_mean']:.1f}) | – |")
    assert (out / 'mechanism_ablation.md').read_text() == summary


@pytest.mark.slow
def test_node_recipe_arms_are_the_earlier_recipe_plus_their_change_and_resume(tmp_path, monkeypatch):
    """Each (arm, seed) row is the run of BASE + the arm's change (checked against a model built by hand), a rerun
    trains nothing already in the CSV, and the table is sorted by validation accuracy."""
    import csv

    import numpy as np
    import torch
    from torch_geometric.data import Data

    import pyg_ple.bench.node as node
    from pyg_ple.bench.training import TrainConfig
    mod = load_script('benchmarks/node_recipe.py')
    torch.manual_seed(0)
    y = torch.arange(3).repeat_interleave(10)
    x = torch.nn.functional.one_hot(y, 3).float() + torch.randn(30, 3)
    edge_index = torch.randint(0, 30, (2, 90))
    masks = [torch.arange(30) % 3 == k for k in range(3)]
    data = Data(x=x, y=y, edge_index=edge_index, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
    monkeypatch.setattr(node, 'load_planetoid', lambda name, root=None: data)
    monkeypatch.setitem(mod.ARMS, 'base', ({}, dict(epochs=3), 'the earlier recipe'))
    monkeypatch.setitem(mod.ARMS, 'layers1', (dict(num_layers=1), dict(epochs=3), '1 block'))
    built, build = [], node.build_node_model
    monkeypatch.setattr(node, 'build_node_model', lambda *a, **kw: built.append(kw) or build(*a, **kw))
    mod.main(['--arms', 'base', 'layers1', '--seeds', '2', '--out', str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / 'node_recipe.csv').open()))
    earlier = dict(num_layers=2, heads=4, dropout=0.5, input_dropout=0.5, ple_init=True, encoder_norm=True)
    assert [{k: kw[k] for k in earlier} for kw in built] == [earlier, earlier, {**earlier, 'num_layers': 1},
                                                             {**earlier, 'num_layers': 1}]
    assert [(r['arm'], r['seed']) for r in rows] == [('base', '0'), ('base', '1'), ('layers1', '0'), ('layers1', '1')]
    torch.manual_seed(1)
    by_hand = build('ple', 3, 3, num_layers=1, heads=4, dropout=0.5, input_dropout=0.5, ple_init=True,
                    encoder_norm=True)
    run, _ = node.train_node_classifier(by_hand, data, TrainConfig(epochs=3, lr=5e-3, weight_decay=5e-4,
                                                                   progress=False, seed=1))
    assert rows[3]['val_acc'] == f'{100 * run.val_acc:.2f}' and rows[3]['test_acc'] == f'{100 * run.test_acc:.2f}'
    monkeypatch.setattr(mod, 'run_arm', lambda *a: pytest.fail('a finished run was trained again'))
    mod.main(['--arms', 'base', 'layers1', '--seeds', '2', '--out', str(tmp_path)])
    md = (tmp_path / 'node_recipe.md').read_text()
    means = {arm: np.mean([float(r['val_acc']) for r in rows if r['arm'] == arm]) for arm in ('base', 'layers1')}
    order = [line.split(' | ')[0][2:] for line in md.splitlines() if line.startswith(('| base |', '| layers1 |'))]
    assert order == sorted(means, key=lambda a: -means[a])
    assert all(f'| {means[a]:.1f} |' in md for a in means)
    monkeypatch.setattr(mod, 'run_arm', lambda data, arm, seed: {'arm': arm, 'seed': seed, 'val_acc': '0.00',
                                                                 'test_acc': '0.00', 'best_epoch': 1, 'seconds': '0'})
    mod.main(['--arms', 'layers1', '--seeds', '3', '--out', str(tmp_path)])  # a third seed, the worst validation
    md = (tmp_path / 'node_recipe.md').read_text()
    assert [line.split(' | ')[0][2:] for line in md.splitlines()
            if line.startswith(('| base |', '| layers1 |'))] == ['layers1', 'base']  # more seeds first
    mod.main(['--dataset', 'CiteSeer', '--arms', 'base', '--seeds', '1', '--out', str(tmp_path)])
    md = (tmp_path / 'node_recipe.md').read_text()
    assert '## Cora' in md and '| layers1 |' in md.split('## CiteSeer')[0]  # a second dataset keeps the first's table
    assert '| base |' in md.split('## CiteSeer')[1]


def test_node_recipe_shared_recipe_table_ranks_the_finalists_by_mean_validation_over_datasets():
    """Arms with 10 seeds on every dataset are ranked by their validation accuracy averaged over the datasets;
    arms short of 10 seeds on a dataset are left out of that table."""
    mod = load_script('benchmarks/node_recipe.py')
    val = {('Cora', 'a'): 82.0, ('Cora', 'b'): 81.0, ('CiteSeer', 'a'): 70.0, ('CiteSeer', 'b'): 72.0,
           ('Cora', 'c'): 90.0}
    rows = [{'dataset': d, 'arm': arm, 'seed': str(k), 'val_acc': f'{v + (k % 2) - 0.5:.2f}', 'test_acc': '50.00',
             'best_epoch': '1', 'seconds': '0'} for (d, arm), v in val.items() for k in range(10)]
    rows += [{**rows[0], 'dataset': 'CiteSeer', 'arm': 'c'}]  # one seed of c on CiteSeer: not a finalist there
    shared = mod.report(rows, 'cmd').split('## One recipe for Cora and CiteSeer')[1]
    table = [line for line in shared.splitlines() if line.startswith('| ') and not line.startswith('| arm')]
    assert [line.split(' | ')[0][2:] for line in table] == ['b', 'a']  # means 76.5 and 76.0
    assert table[0] == '| b | 81.0 | 72.0 | 76.50 | 50.0 | 50.0 |'
    assert '## One recipe' not in mod.report([r for r in rows if r['dataset'] == 'Cora'], 'cmd')


def test_earlier_node_rows_pin_every_setting_they_ran_with():
    """The earlier node model is spelled out field by field (a change of NodeModelConfig's defaults must not change
    what the earlier rows rerun) and is what every script's earlier rows build; the default node model's optimiser is
    the one the recipe search chose."""
    import dataclasses

    from pyg_ple.bench.node import OPTIMIZER_DEFAULTS, NodeModelConfig
    common = load_script('benchmarks/_common.py')
    assert set(common.EARLIER_NODE_MODEL) == {f.name for f in dataclasses.fields(NodeModelConfig)}
    assert common.EARLIER_NODE_MODEL != dataclasses.asdict(NodeModelConfig())
    assert common.EARLIER_NODE_OPTIMIZER == {'lr': 5e-3, 'weight_decay': 5e-4}
    nodes = load_script('benchmarks/node_classification.py')
    assert nodes.MODELS['ple-earlier'] == ('ple', common.EARLIER_NODE_MODEL, common.EARLIER_NODE_OPTIMIZER)
    assert nodes.MODELS['ple-std-earlier'][1] == {**common.EARLIER_NODE_MODEL, 'laplacian_heads': 0}
    assert nodes.MODELS['ple'] == ('ple', {}, {})
    # the rows run before the weight decay became 2e-2 keep what they ran with
    assert OPTIMIZER_DEFAULTS['ple']['weight_decay'] != 5e-3
    assert nodes.MODELS['ple-wd5e-3'] == ('ple', {}, {'weight_decay': 5e-3})
    assert load_script('benchmarks/laplacian_ablation.py').EARLIER == common.EARLIER_NODE_MODEL
    recipe = load_script('benchmarks/node_recipe.py')
    assert recipe.BASE == {**common.EARLIER_NODE_MODEL, 'ple_init': True, 'encoder_norm': True}
    model_kwargs, train_kwargs, _ = recipe.ARMS['default+wd2e-2']
    assert dataclasses.replace(NodeModelConfig(), **{**recipe.BASE, **model_kwargs}) == NodeModelConfig()
    assert {**common.EARLIER_NODE_OPTIMIZER, **train_kwargs} == OPTIMIZER_DEFAULTS['ple']


@pytest.mark.slow
def test_node_benchmark_samples_each_model_as_deep_as_it_is_and_resumes_by_fan_out(tmp_path, monkeypatch):
    """In neighbor mode each model gets 10 neighbours per message-passing layer unless --num-neighbors says
    otherwise; the fan-out is part of a row's key, so rows of another fan-out are kept and never taken as done."""
    import torch
    from torch_geometric.data import Data

    from pyg_ple.bench import node
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    nodes = load_script('benchmarks/node_classification.py')
    monkeypatch.setattr(nodes, 'CSV_ACC', tmp_path / 'acc.csv')
    monkeypatch.setattr(nodes, 'cmd_report', lambda args: None)
    n = 30
    graph = Data(x=torch.randn(n, 5), y=torch.arange(n) % 3, edge_index=torch.stack([torch.arange(n),
                                                                                     (torch.arange(n) + 1) % n]),
                 **{f'{k}_mask': torch.arange(n) % 3 == i for i, k in enumerate(('train', 'val', 'test'))})
    monkeypatch.setattr(node, 'load_planetoid', lambda name, root=None: graph)
    fan_outs = []

    def fake_train(model, data, config, mode, num_neighbors=None, batch_size=64):
        fan_outs.append((type(model).__name__, mode, num_neighbors))
        return node.NodeRunResult(0.5, 0.5, 0.5, 1, 1, 0.1), None

    monkeypatch.setattr(node, 'train_node_classifier', fake_train)
    args = ['--threads', '1', 'accuracy', '--datasets', 'Cora', '--models', 'gcn', 'ple', '--seeds', '1']
    nodes.main(args)
    assert fan_outs == [('GCN', 'full', None), ('NodeTransformer', 'full', None),
                        ('GCN', 'neighbor', [10, 10]), ('NodeTransformer', 'neighbor', [10, 10, 10, 10])]
    rows = nodes.read_csv(tmp_path / 'acc.csv')
    assert [(r['model'], r['mode'], r['num_neighbors']) for r in rows] == [
        ('gcn', 'full', ''), ('ple', 'full', ''), ('gcn', 'neighbor', '10x10'), ('ple', 'neighbor', '10x10x10x10')]
    fan_outs.clear()
    nodes.main(args)  # everything done
    assert fan_outs == []
    nodes.main(args + ['--num-neighbors', '5', '5', '--modes', 'neighbor'])  # another fan-out: new rows
    assert fan_outs == [('GCN', 'neighbor', [5, 5]), ('NodeTransformer', 'neighbor', [5, 5])]
    assert len(nodes.read_csv(tmp_path / 'acc.csv')) == 6


@pytest.mark.slow
def test_selection_replay_is_what_early_stopping_selects():
    """A run trained for the full budget, replayed with the protocol's rule and patience, selects the epoch that the
    same run stopped early by ``fit`` selects; the early-stopped run's curve is a prefix of the full one (training
    does not depend on when it stops)."""
    from dataclasses import replace

    import numpy as np

    from pyg_ple.bench.datasets import load_dataset
    from pyg_ple.bench.protocol import train_fold
    from pyg_ple.bench.selection import replay_selection
    from pyg_ple.bench.settings import BenchmarkConfig
    from pyg_ple.bench.splits import make_splits
    mod = load_script('benchmarks/selection_rules.py')
    ds = load_dataset('digits', digits_n=300)
    split = make_splits(ds.labels, n_folds=2, seed=0)[0]
    cfg = BenchmarkConfig(models=['gcn'], epochs=12, lr=0.01, hparams=dict(hidden=16, num_layers=1), progress=False)
    full, _ = train_fold(ds, 'gcn', split, cfg, {}, run_seed=7, record={})
    acc = np.array([h['val_acc'] for h in full.history])
    loss = np.array([h['val_loss'] for h in full.history])
    picked = set()
    for rule, patience in itertools.product(('acc', 'loss'), (1, 2, 3)):
        stopped, _ = train_fold(ds, 'gcn', split, replace(cfg, patience=patience, select=rule), {}, run_seed=7)
        assert [h['val_loss'] for h in stopped.history] == [h['val_loss'] for h in full.history[:stopped.epochs_run]]
        assert replay_selection(mod.RULES[rule][1](acc, loss), patience) + 1 == stopped.best_epoch
        picked.add((rule, stopped.best_epoch))
    assert len({e for _, e in picked}) > 1  # the rules and patiences did not all pick one epoch


def test_selection_rules_score_held_out_halves_and_test_by_hand():
    """The held-out figure selects on one validation half and scores the other, both ways round; the test figure
    selects on the whole validation split (halves weighted by their sizes)."""
    import numpy as np
    mod = load_script('benchmarks/selection_rules.py')
    c = {'epoch': np.array([3, 1, 2]),  # stored out of order: sorted by epoch first
         'n_val_a': np.full(3, 1.0), 'n_val_b': np.full(3, 3.0),
         'val_a_acc': np.array([0.0, 1.0, 0.0]), 'val_a_loss': np.array([0.9, 0.5, 0.1]),
         'val_b_acc': np.array([1 / 3, 0.0, 2 / 3]), 'val_b_loss': np.array([0.2, 0.9, 0.4]),
         'test_acc': np.array([0.3, 0.1, 0.2]), 'test_loss': np.zeros(3), 'train_loss': np.zeros(3)}
    # by epoch 1, 2, 3: a acc 1, 0, 0 (loss .5, .1, .9); b acc 0, 2/3, 1/3 (loss .9, .4, .2); whole: acc .25, .5, .25
    r = mod.evaluate_rules(c, patience=None)
    assert r['acc'] == {'heldout': (0.0 + 0.0) / 2, 'test': 0.2, 'epoch': 2}  # a picks 1 (b: 0), b picks 2 (a: 0)
    # loss: a picks epoch 2 (b acc 2/3), b picks epoch 3 (a acc 0); whole loss .8, .325, .375 -> epoch 2
    assert r['loss'] == {'heldout': (2 / 3 + 0.0) / 2, 'test': 0.2, 'epoch': 2}
    # 4 of 10 correct at both epochs, split 1+3 and 2+2 over halves of 3 and 7, stored rounded as the CSV holds them:
    # the tie is exact, and the lower loss (epoch 2) breaks it
    tie = {'epoch': np.array([1, 2]), 'n_val_a': np.full(2, 3.0), 'n_val_b': np.full(2, 7.0),
           'val_a_acc': np.array([0.3333, 0.6667]), 'val_b_acc': np.array([0.4286, 0.2857]),
           'val_a_loss': np.array([0.5, 0.45]), 'val_b_loss': np.array([0.5, 0.45]), 'test_acc': np.array([0.1, 0.2])}
    assert mod.evaluate_rules(tie, patience=None)['acc']['epoch'] == 2
    test_by_fold = {m: {r: {0: a, 1: b, 2: 0.5} for r in mod.RULES} for m, (a, b) in
                    {'laplacian': (0.8, 0.6), 'gcn': (0.7, 0.6)}.items()}
    del test_by_fold['gcn']['acc'][2]  # paired on the folds both have: differences 10 and 0 points
    assert mod._against_laplacian(test_by_fold)[4] == '| gcn | +5.0 ± 5.0 | +3.3 ± 3.3 | +3.3 ± 3.3 |'
    assert mod._against_laplacian({'gcn': test_by_fold['gcn']}) == []
    assert mod._pooled_text({'acc': [0.5, 0.7], 'loss': [0.6, 0.9]}) == \
        '`acc` 60.00, `loss` 75.00; `loss` − `acc` +15.00 ± 5.00 (2 runs)'  # differences 10, 20: se 7.07 / sqrt 2
    assert np.allclose(mod._trailing_mean(np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]), 5),
                       [1, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 2 / 5])


@pytest.mark.slow
def test_selection_rules_script_writes_curves_resumes_and_refuses_bench_out(tmp_path, capsys):
    import csv
    mod = load_script('benchmarks/selection_rules.py')
    bench = ['--digits-n', '60', '--models', 'gcn,laplacian', '--folds', '2', '--epochs', '3', '--patience', '1',
             '--no-progress', '--threads', '1', '--hidden', '8', '--layers', '1']
    assert mod.main(['--out', str(tmp_path), '--', *bench]) == 0
    rows = list(csv.DictReader((tmp_path / 'curves_digits_seed0.csv').open()))
    assert sorted({(r['model'], r['fold']) for r in rows}) == [('gcn', '0'), ('gcn', '1'), ('laplacian', '0'),
                                                               ('laplacian', '1')]
    assert all(len([r for r in rows if (r['model'], r['fold']) == key]) == 3 for key in {(r['model'], r['fold'])
                                                                                         for r in rows})
    assert {int(r['n_val_a']) + int(r['n_val_b']) for r in rows} == {3}  # 10 % of 30 training graphs
    text = (tmp_path / 'selection_rules.md').read_text()
    assert '| gcn | 2 |' in text and '| laplacian | 2 |' in text and 'Patience 1.' in text
    assert json.loads((tmp_path / 'curves_digits_seed0.json').read_text())['patience'] == 1
    capsys.readouterr()
    assert mod.main(['--out', str(tmp_path), '--', *bench]) == 0  # resumed: nothing trained again
    assert 'fold' not in capsys.readouterr().out.split('# How the epoch')[0]
    with pytest.raises(SystemExit) as e:
        mod.main(['--out', str(tmp_path), '--', *bench, '--out', str(tmp_path / 'x')])
    assert e.value.code == 2
    assert 'take none of --out' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.main(['--out', str(tmp_path), '--', *bench, '--select', 'loss'])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # the curves are replayed with the patience they were recorded for
        mod.main(['--out', str(tmp_path), '--', *bench, '--patience', '2'])
    assert e.value.code == 2 and 'patience 1, not 2' in capsys.readouterr().err


def _budget_curve(score, **cols):
    import numpy as np
    n = len(score)
    c = {'val_score': np.asarray(score, dtype=float), 'val_acc': np.asarray(score, dtype=float),
         'test_acc': np.arange(n) / 10, 'val_a_acc': np.asarray(score, dtype=float),
         'val_a_loss': np.zeros(n), 'val_b_acc': np.asarray(score, dtype=float), 'val_b_loss': np.zeros(n)}
    return {**c, **{k: np.asarray(v, dtype=float) for k, v in cols.items()}}


def test_budget_replay_by_hand():
    """A shorter budget keeps the best epoch among its first epochs, early stopping included; a run reaches its
    budget when its selected epoch is within the last ``patience`` epochs of it."""
    mod = load_script('benchmarks/budget.py')
    c = _budget_curve([0.1, 0.5, 0.4, 0.3, 0.6, 0.2])
    assert mod.at_budget(c, 3, 2) == {'epoch': 2, 'val': 0.5, 'test': 0.1, 'heldout': 0.5, 'reached': True}
    # patience 2: epochs 3 and 4 do not beat epoch 2, so the run stops there whatever the budget
    assert mod.at_budget(c, 6, 2)['epoch'] == 2 and not mod.at_budget(c, 6, 2)['reached']
    assert mod.at_budget(c, 5, None)['epoch'] == 5 and mod.at_budget(c, 5, None)['reached']
    assert mod.at_budget(c, 6, 3) == {'epoch': 5, 'val': 0.6, 'test': 0.4, 'heldout': 0.6, 'reached': True}
    # epochs 3 and 4 without a better score: patience 2 ends the run at epoch 4, the budget, by itself
    assert not mod.at_budget(c, 4, 2)['reached']
    # a run that stopped before a budget did not reach it
    assert not mod.at_budget(_budget_curve([0.1, 0.5, 0.4, 0.3]), 10, 2)['reached']
    # held out: half a picks epoch 2 (its best), scored on half b there (0.0); half b picks epoch 3, scored on a (1.0)
    h = _budget_curve([0.1, 0.5, 0.4], val_a_acc=[0.0, 1.0, 1.0], val_b_acc=[0.0, 0.0, 0.9])
    assert mod.at_budget(h, 3, None)['heldout'] == (0.0 + 1.0) / 2


@pytest.mark.slow
def test_budget_replay_equals_the_shorter_run():
    """Replayed on the curves of a run trained to 20 epochs (early stopping ends it at 15), each shorter budget
    selects the epoch, and scores the test accuracy, of the same run trained with that budget: training does not
    depend on its budget."""
    from dataclasses import replace

    from pyg_ple.bench.datasets import load_dataset
    from pyg_ple.bench.protocol import train_fold
    from pyg_ple.bench.settings import BenchmarkConfig
    from pyg_ple.bench.splits import make_splits
    mod = load_script('benchmarks/budget.py')
    ds = load_dataset('digits', digits_n=300)
    split = make_splits(ds.labels, n_folds=2, seed=0)[0]
    cfg = BenchmarkConfig(models=['gcn'], epochs=20, lr=0.01, patience=2, progress=False,
                          hparams=dict(hidden=16, num_layers=1))
    record = {'test': split['test']}

    def curves(res):
        return {k: __import__('numpy').array([h[k] for h in res.history]) for k in mod.FIELDS[6:]}

    long, _ = train_fold(ds, 'gcn', split, cfg, {}, run_seed=7, record=record)
    seen = set()
    for budget in (3, 6, 9, 12, 20):
        short, _ = train_fold(ds, 'gcn', split, replace(cfg, epochs=budget), {}, run_seed=7, record=record)
        got = mod.at_budget(curves(long), budget, 2)
        assert got['epoch'] == short.best_epoch
        assert got['test'] == short.history[short.best_epoch - 1]['test_acc']
        assert got['reached'] == (short.epochs_run == budget and budget - short.best_epoch < 2)
        # ended by the budget exactly when the same run, given longer, trains past it
        assert got['reached'] == (long.epochs_run > budget)
        seen.add(got['reached'])
    assert seen == {True, False}  # some budgets cut the run short, some not


@pytest.mark.slow
def test_budget_script_writes_curves_resumes_and_refuses(tmp_path, capsys):
    import csv
    mod = load_script('benchmarks/budget.py')
    bench = ['--digits-n', '60', '--models', 'gcn,laplacian', '--folds', '2', '--epochs', '4', '--patience', '2',
             '--no-progress', '--threads', '1', '--hidden', '8', '--layers', '1']
    assert mod.main(['--budgets', '2,4', '--out', str(tmp_path), '--', *bench]) == 0
    for model in ('gcn', 'laplacian'):
        rows = list(csv.DictReader((tmp_path / f'curves_digits_seed0_{model}.csv').open()))
        assert sorted({r['fold'] for r in rows}) == ['0', '1'] and all(r['model'] == model for r in rows)
        meta = json.loads((tmp_path / f'curves_digits_seed0_{model}.json').read_text())
        assert (meta['patience'], meta['epochs']) == (2, 4)
    text = (tmp_path / 'budget.md').read_text()
    assert '| gcn | 2 | 2 |' in text and '| laplacian | 4 | 2 |' in text and 'ended by the budget' in text
    assert '| gcn | 4 | +' in text.replace('| -', '| +')
    capsys.readouterr()
    assert mod.main(['--budgets', '2,4', '--out', str(tmp_path), '--', *bench]) == 0  # resumed: nothing trained
    assert 'fold' not in capsys.readouterr().out.split('# Is the budget')[0]
    for extra, message in ((['--out', str(tmp_path / 'x')], 'take none of'), (['--final-runs', '3'], 'take none of'),
                           (['--schedule', 'cosine'], 'cannot be replayed'), (['--patience', '3'], 'patience 2'),
                           (['--epochs', '3'], 'above')):
        with pytest.raises(SystemExit) as e:
            mod.main(['--budgets', '2,4', '--out', str(tmp_path), '--', *bench, *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as e:
        mod.main(['--budgets', '0,4', '--out', str(tmp_path), '--', *bench])
    assert e.value.code == 2 and 'positive' in capsys.readouterr().err


def test_budget_report_by_hand():
    """Each run's figures at each budget, the counts of runs the budget ended, the per-seed means with population
    std, and the Laplacian transformer's paired differences, from hand-made curves."""
    mod = load_script('benchmarks/budget.py')
    rows = []
    # val scores per epoch: gcn keeps improving (ended by a budget of 2), laplacian peaks at epoch 1
    for model, scores, tests in (('gcn', [0.1, 0.2, 0.3], [0.2, 0.4, 0.6]),
                                 ('laplacian', [0.5, 0.4, 0.3], [0.7, 0, 0])):
        for seed, fold in ((0, 0), (0, 1), (1, 0)):
            shift = 0.1 * fold  # fold 1 a little better on test
            rows += [{'dataset': 'D', 'seed': seed, 'model': model, 'fold': fold, 'epoch': t + 1, 'train_loss': 0,
                      'val_score': v, 'val_acc': v, 'val_loss': 0, 'val_a_acc': v, 'val_a_loss': 0, 'val_b_acc': v,
                      'val_b_loss': 0, 'test_acc': a + shift if a else 0, 'test_loss': 0}
                     for t, (v, a) in enumerate(zip(scores, tests))]
    text = mod.report(rows, [{'dataset': 'D', 'patience': 2, 'commands': ['cmd']}], [2, 3])
    # gcn: budget 2 keeps epoch 2 (test .4/.5/.4), ended by it; budget 3 keeps epoch 3 (.6/.7/.6), ended by it too
    assert '| gcn | 2 | 3 | 43.3 ± 4.7 | 20.0 | 20.0 | 3 / 3 | 2 |' in text
    assert '| gcn | 3 | 3 | 63.3 ± 4.7 | 30.0 | 30.0 | 3 / 3 | 3 |' in text
    # laplacian: epoch 1 at both budgets; patience 2 stops it at epoch 3, so a budget of 3 did not end it
    assert '| laplacian | 2 | 3 | 73.3 ± 4.7 | 50.0 | 50.0 | 3 / 3 | 1 |' in text
    assert '| laplacian | 3 | 3 | 73.3 ± 4.7 | 50.0 | 50.0 | 0 / 3 | 1 |' in text
    assert '| gcn | 2 | 45.0 ± 5.0 | 40.0 ± 0.0 |' in text  # by seed
    # laplacian minus gcn, paired by fold: seed 0 (two folds), seed 1 (one), pooled
    assert '| gcn | 2 | +30.0 ± 0.0 | +30.0 | +30.0 ± 0.0 |' in text
    assert '| gcn | 3 | +10.0 ± 0.0 | +10.0 | +10.0 ± 0.0 |' in text
    assert text.rstrip().endswith('    cmd')
    # runs trained to 2 epochs: a budget of 3 cannot be replayed from them and is left out
    short = mod.report(rows, [{'dataset': 'D', 'patience': 2, 'epochs': 2, 'commands': ['cmd']}], [2, 3])
    assert '| gcn | 2 | 3 | 43.3 ± 4.7 |' in short and '| gcn | 3 |' not in short
