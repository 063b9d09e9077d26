"""Run every paper-claims experiment in sequence, or print all their result tables.

    python benchmarks/paper_claims.py run --root DATA            # the full CPU configuration (~2 h, 1 core)
    python benchmarks/paper_claims.py run --root DATA --quick    # a smoke run of everything (~1 min)
    python benchmarks/paper_claims.py tables                              # tables from benchmarks/results/*.json

The individual scripts (each with ``--help``):

==========================================  ==================================================================
``examples/mnist_clustering.py``            claim 2: MNIST tokens through one block eight times (section 1)
``benchmarks/linearity.py``                 claim 1: how linear a block is, at init / across depth / trained
``benchmarks/manifold_compare.py``          the ``PLEEmbedding`` estimator vs PCA, SpectralEmbedding, t-SNE
``benchmarks/lm_shakespeare.py``            claim 3: char LM, standard / Laplacian / mixed heads, 3 seeds
``benchmarks/vit_patches.py``               claim 3: small ViT on MNIST-test and digits patches, 3 seeds
==========================================  ==================================================================
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent


def _load(rel: str):
    path = C.REPO / rel
    spec = importlib.util.spec_from_file_location(path.stem + '_mod', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(args) -> int:
    root = ['--root', args.root] if args.root else []
    thr = ['--threads', str(args.threads)]
    if args.quick:
        out = Path(args.out_dir or '/tmp/pyg_ple_quick')
        steps = [
            ('examples/mnist_clustering.py', ['--n', '200', '--seeds', '0', '1', '--steps', '8',
                                              '--out', str(out / 'c.json'), '--png', str(out / 'c.png')]),
            ('benchmarks/lm_shakespeare.py', ['--steps', '20', '--eval-every', '10', '--eval-batches', '2',
                                              '--seeds', '0', '1', '--out-dir', str(out / 'lm'),
                                              '--save-models', str(out / 'lm_models')]),
            ('benchmarks/linearity.py', ['--n', '200', '--seeds', '0', '--lm-models', str(out / 'lm_models'),
                                         '--out', str(out / 'lin.json')]),
            ('benchmarks/manifold_compare.py', ['--mnist-n', '300', '--seeds', '0', '--skip-tsne',
                                                '--out', str(out / 'm.json'), '--png', str(out / 'm.png')]),
            ('benchmarks/vit_patches.py', ['--seeds', '0', '--epochs', '1', '--max-train', '500',
                                           '--out-dir', str(out / 'vit')]),
        ]
    else:
        models = args.lm_models
        steps = [
            ('benchmarks/lm_shakespeare.py', ['--save-models', models]),
            ('examples/mnist_clustering.py', []),
            ('benchmarks/linearity.py', ['--lm-models', models]),
            ('benchmarks/manifold_compare.py', []),
            ('benchmarks/vit_patches.py', []),
        ]
    for rel, extra in steps:
        print(f'\n##### {rel} {" ".join(extra)}', flush=True)
        rc = _load(rel).main(root + thr + extra)
        if rc:
            return rc
    return 0


def tables(args) -> int:
    res = C.RESULTS
    if (res / 'mnist_clustering.json').exists():
        mod = _load('examples/mnist_clustering.py')
        print('## MNIST clustering by unrolled block steps\n')
        print(mod.summarise(json.loads((res / 'mnist_clustering.json').read_text())))
    if (res / 'linearity.json').exists():
        print('\n## Linearity\n')
        print(_load('benchmarks/linearity.py').summarise(json.loads((res / 'linearity.json').read_text())))
    if (res / 'sweep').exists():
        print('\n## Clustering sensitivity (qk scale x step size)\n')
        print(_load('examples/mnist_clustering.py').summarise_sweep(res / 'sweep'))
    if (res / 'manifold_compare.json').exists():
        print('\n## PLEEmbedding vs scikit-learn\n')
        r = json.loads((res / 'manifold_compare.json').read_text())
        for label, per in r['results'].items():
            rows = [[name] + [C.fmt(C.mean_std([v[c] for v in per_seed.values()]))
                              for c in ('trust', 'knn', 'silhouette', 'time_s')] for name, per_seed in per.items()]
            print(f'\n**{label}**\n')
            print(C.md_table(['method', 'trustworthiness', 'k-NN acc', 'silhouette', 'fit time s'], rows))
    lm = _load('benchmarks/lm_shakespeare.py')
    for folder, png in (('lm', 'lm_curves.png'), ('lm_4000', 'lm_curves_4000.png')):
        if (res / folder).exists():
            print(f'\n## Character LM ({folder})\n')
            print(lm.report(res / folder, res / png))
    vit = _load('benchmarks/vit_patches.py')
    for folder in ('vit', 'vit_long_digits', 'vit_long_mnist'):
        if (res / folder).exists():
            print(f'\n## ViT ({folder})\n')
            print(vit.report(res / folder))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--root', default=None)
    r.add_argument('--threads', type=int, default=1)
    r.add_argument('--quick', action='store_true')
    r.add_argument('--out-dir', default=None, help='--quick output folder (default /tmp/pyg_ple_quick)')
    r.add_argument('--lm-models', default='/tmp/pyg_ple_lm_models')
    sub.add_parser('tables')
    args = p.parse_args(argv)
    return run(args) if args.cmd == 'run' else tables(args)


if __name__ == '__main__':
    sys.exit(main())
