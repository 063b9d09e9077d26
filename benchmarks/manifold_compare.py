"""The dimensionality-reduction estimator :class:`pyg_ple.experiments.manifold.PLEEmbedding` against scikit-learn.

2-D embeddings of scikit-learn's digits (1,797 points) and of stratified subsets of the MNIST test set, by PCA,
``SpectralEmbedding`` (Laplacian Eigenmaps; scikit-learn's default graph of n/10 neighbours, and 10 neighbours as
PLEEmbedding uses), t-SNE and PLEEmbedding (k-NN and attention graphs, 8 and 32 steps).
Metrics: ``trustworthiness`` (k=5), 5-NN accuracy (5-fold stratified CV on the embedding), silhouette of the true
classes, and fit time on one thread.  Seeds: the MNIST subset and every ``random_state``; digits uses all points for
every seed (only the estimators' seeds change).

    python benchmarks/manifold_compare.py --root DATA --mnist-n 2000 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE, SpectralEmbedding, trustworthiness  # noqa: E402
from sklearn.metrics import silhouette_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from pyg_ple.experiments.manifold import PLEEmbedding  # noqa: E402


def estimators(seed: int, skip_tsne: bool):
    est = [('PCA', PCA(2, random_state=seed)),
           ('SpectralEmbedding', SpectralEmbedding(2, random_state=seed)),
           ('SpectralEmbedding, n_neighbors=10', SpectralEmbedding(2, n_neighbors=10, random_state=seed)),
           ('PLEEmbedding knn, 8 steps', PLEEmbedding(2, n_neighbors=10, n_steps=8, graph='knn')),
           ('PLEEmbedding knn, 32 steps', PLEEmbedding(2, n_neighbors=10, n_steps=32, graph='knn')),
           ('PLEEmbedding attention, 8 steps', PLEEmbedding(2, n_neighbors=10, n_steps=8, graph='attention')),
           ('PLEEmbedding knn, random init, 8 steps',
            PLEEmbedding(2, n_neighbors=10, n_steps=8, init='random', random_state=seed))]
    if not skip_tsne:
        est.append(('t-SNE', TSNE(2, random_state=seed, init='pca')))
    return est


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None)
    p.add_argument('--datasets', nargs='+', default=['digits', 'mnist'], choices=['digits', 'mnist'])
    p.add_argument('--mnist-n', type=int, default=2000)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--k', type=int, default=5)
    p.add_argument('--skip-tsne', action='store_true')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(C.RESULTS / 'manifold_compare.json'))
    p.add_argument('--png', default=str(C.RESULTS / 'manifold_compare.png'))
    return p.parse_args(argv)


def get_data(name, args, seed):
    if name == 'digits':
        X, y = load_digits(return_X_y=True)
        return X.astype(np.float64), y
    from pyg_ple.experiments.idx import load_mnist
    images, labels = load_mnist(C.require(C.data_root(args.root), 'data folder'), 'test')
    idx, _ = train_test_split(np.arange(len(labels)), train_size=args.mnist_n, stratify=labels, random_state=seed)
    return images[idx].reshape(len(idx), -1).astype(np.float64) / 255.0, labels[idx].astype(int)


def main(argv=None):
    args = parse_args(argv)
    C.set_threads(args.threads)
    t_all = time.perf_counter()
    res = {'config': vars(args), 'env': C.env_info(), 'results': {}}
    plots = {}
    for name in args.datasets:
        label = name if name == 'digits' else f'mnist-{args.mnist_n}'
        for seed in args.seeds:
            X, y = get_data(name, args, seed)
            cv = StratifiedKFold(5, shuffle=True, random_state=seed)
            for ename, est in estimators(seed, args.skip_tsne):
                t0 = time.perf_counter()
                Z = est.fit_transform(X)
                dt = time.perf_counter() - t0
                m = {'trust': float(trustworthiness(X, Z, n_neighbors=args.k)),
                     'knn': float(cross_val_score(KNeighborsClassifier(args.k), Z, y, cv=cv).mean()),
                     'silhouette': float(silhouette_score(Z, y)), 'time_s': dt}
                res['results'].setdefault(label, {}).setdefault(ename, {})[seed] = m
                if seed == args.seeds[0]:
                    plots[(label, ename)] = (Z, y)
            print(f'{label} seed {seed} done', flush=True)
    res['wall_s'] = time.perf_counter() - t_all
    C.write_json(Path(args.out), res)
    lines = []
    for label, per in res['results'].items():
        rows = []
        for ename, per_seed in per.items():
            vals = list(per_seed.values())
            rows.append([ename] + [C.fmt(C.mean_std([v[c] for v in vals]), 3) for c in ('trust', 'knn', 'silhouette')]
                        + [C.fmt(C.mean_std([v['time_s'] for v in vals]), 2)])
        lines.append(f'\n**{label}** (seeds {args.seeds}):\n')
        lines.append(C.md_table(['method', f'trustworthiness (k={args.k})', f'{args.k}-NN acc (5-fold)',
                                 'silhouette', 'fit time s'], rows))
    print('\n'.join(lines))
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        labels = list(res['results'])
        names = list(next(iter(res['results'].values())))
        fig, axes = plt.subplots(len(labels), len(names), figsize=(3 * len(names), 3 * len(labels)), squeeze=False)
        for i, lab in enumerate(labels):
            for j, en in enumerate(names):
                Z, yy = plots[(lab, en)]
                ax = axes[i, j]
                ax.scatter(Z[:, 0], Z[:, 1], c=yy, cmap='tab10', s=2, vmin=-0.5, vmax=9.5)
                ax.set_title(f'{lab}\n{en}', fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=80)
        plt.close(fig)
        print(f'PNG {args.png}')
    except Exception as e:  # pragma: no cover
        print(f'no PNG: {e}')
    print(f"wall time {res['wall_s']:.0f}s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
