"""Claim 2: MNIST images as tokens, passed eight times through one transformer block, cluster by class.

N test images (a stratified random subset per seed) are flattened, centred (minus the subset's mean image) and
embedded linearly (a random ``nn.Linear(784, channels)``, seeded, then multiplied by one scalar so that the tokens
have RMS 1, the scale at which LayerNorm works; ``--embed-scale none`` skips it).  The N embeddings form ONE token
sequence (all pairs attend, so the attention matrix is a graph over the images) and the same
:class:`pyg_ple.PLETransformerBlock` is applied ``--steps`` times.  No training anywhere.

Block variants (:data:`pyg_ple.nn.block.VARIANTS`): ``transformer`` (standard heads) / ``laplacian`` (all heads) /
``mixed`` (half), each with

* ``random`` initialisation (the block's default init), and
* ``ple`` initialisation (:func:`pyg_ple.nn.ple_init_`): ``W_v = W_o = I``, ``W_q = W_k = sqrt(s) I``, MLP output
  zero, so the block is exactly ``x + eta (A - I) LN(x)`` with ``A`` the dot-product similarity graph of the
  LayerNorm-ed latents (standard heads: ``x + A LN(x)``).

Measured before (the linear embedding) and after the steps, on the first two latent dimensions ("2-D", the paper's
figure) and on all channels ("full"): 5-NN accuracy (5-fold CV), silhouette score of the true classes, and
``sklearn.manifold.trustworthiness`` (k=5) against the pixels; next to PCA, scikit-learn's ``SpectralEmbedding``
(Laplacian Eigenmaps) and :class:`pyg_ple.experiments.manifold.PLEEmbedding` on the same points.  Mean ± std over seeds.

    python examples/mnist_clustering.py --root DATA --n 2000 --seeds 0 1 2 3 4

By default the results go to ``benchmarks/results/mnist_clustering.{json,png}`` of the repository
(``benchmarks/paper_claims.py`` runs this script); ``--out`` and ``--png`` put them elsewhere.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.manifold import SpectralEmbedding, trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.neighbors import KNeighborsClassifier

from pyg_ple import PLETransformerBlock
from pyg_ple.bench.io import atomic_write_json, data_root
from pyg_ple.experiments.idx import load_mnist
from pyg_ple.experiments.manifold import PLEEmbedding
from pyg_ple.nn import ple_init_, variant_kwargs

RESULTS = Path(__file__).resolve().parents[1] / 'benchmarks' / 'results'
HEADS = ('transformer', 'laplacian', 'mixed')
INITS = ('random', 'ple')


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


def md_table(header, rows) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None, help='data folder holding MNIST/raw (or $PYG_PLE_DATA)')
    p.add_argument('--n', type=int, default=2000, help='number of test images (tokens)')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--steps', type=int, default=8)
    p.add_argument('--step-size', type=float, default=1.0)
    p.add_argument('--qk-scale', type=float, default=1.0, help='inverse temperature of the ple-init attention')
    p.add_argument('--embed-scale', choices=['unit', 'none'], default='unit',
                   help="'unit': rescale the embedding (one scalar) to token RMS 1, LayerNorm's scale")
    p.add_argument('--k', type=int, default=5, help='neighbours for k-NN accuracy and trustworthiness')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(RESULTS / 'mnist_clustering.json'))
    p.add_argument('--png', default=str(RESULTS / 'mnist_clustering.png'), help="'' for no plot")
    p.add_argument('--no-baselines', action='store_true')
    p.add_argument('--summarise-sweep', default=None, metavar='DIR',
                   help='only print a table of the result JSONs in DIR (runs with other --qk-scale/--step-size)')
    return p.parse_args(argv)


def metrics(X: np.ndarray, Z: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    Z = np.asarray(Z, dtype=np.float64)
    if not np.all(np.isfinite(Z)):
        return {'knn': float('nan'), 'silhouette': float('nan'), 'trust': float('nan')}
    return {'knn': float(cross_val_score(KNeighborsClassifier(k), Z, y, cv=cv).mean()),
            'silhouette': float(silhouette_score(Z, y)),
            'trust': float(trustworthiness(X, Z, n_neighbors=k))}


def both(X, Z, y, k, seed) -> dict:
    out = {f'2d_{m}': v for m, v in metrics(X, Z[:, :2], y, k, seed).items()}
    out.update({f'full_{m}': v for m, v in metrics(X, Z, y, k, seed).items()})
    return out


def subset(images, labels, n, seed):
    if n >= len(labels):
        idx = np.arange(len(labels))
    else:
        idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    X = images[idx].reshape(len(idx), -1).astype(np.float64) / 255.0
    return X - X.mean(axis=0), labels[idx].astype(int)


@torch.no_grad()
def unrolled(X: np.ndarray, args, heads: str, init: str, seed: int):
    """Embedding and the latents after each of ``args.steps`` applications of one block: list of [N, C] arrays."""
    torch.manual_seed(seed)
    embed = torch.nn.Linear(X.shape[1], args.channels)
    block = PLETransformerBlock(args.channels, args.heads, step_size=args.step_size,
                                laplacian_heads=variant_kwargs(heads, args.heads)['laplacian_heads'])
    if init == 'ple':
        ple_init_(block, args.qk_scale)
    block.eval()
    z = embed(torch.as_tensor(X, dtype=torch.float32)).unsqueeze(0)  # one sequence of N tokens
    if args.embed_scale == 'unit':  # one global (linear) rescaling: token RMS 1, the scale LayerNorm works at
        z = z / z.pow(2).mean().sqrt()
    traj = [z[0].numpy().copy()]
    for _ in range(args.steps):
        z = block(z)
        traj.append(z[0].numpy().copy())
    return traj


def run(args) -> dict:
    images, labels = load_mnist(data_root(args.root), 'test')
    env = {'python': platform.python_version(), 'torch': torch.__version__, 'sklearn': sklearn.__version__,
           'threads': str(torch.get_num_threads()), 'machine': platform.machine(), 'cpus': str(os.cpu_count())}
    results = {'config': vars(args), 'env': env, 'seeds': {}}
    for seed in args.seeds:
        X, y = subset(images, labels, args.n, seed)
        res = {}
        t0 = time.perf_counter()
        for init in INITS:
            for heads in HEADS:
                traj = unrolled(X, args, heads, init, seed)
                name = f'{init}/{heads}'
                res[name] = {'before': both(X, traj[0], y, args.k, seed), 'after': both(X, traj[-1], y, args.k, seed),
                             'knn_full_by_step': [metrics(X, Z, y, args.k, seed)['knn'] if i in (0, 1, 2, 4, 8)
                                                  else None for i, Z in enumerate(traj)],
                             'norm_by_step': [float(np.linalg.norm(Z, axis=1).mean()) for Z in traj]}
                if seed == args.seeds[0]:
                    res[name]['_plot'] = (traj[0][:, :2].tolist(), traj[-1][:, :2].tolist())
        t_blocks = time.perf_counter() - t0
        if not args.no_baselines:
            for name, est in (('PCA (2)', PCA(2, random_state=seed)),
                              (f'PCA ({args.channels})', PCA(args.channels, random_state=seed)),
                              ('SpectralEmbedding (2)', SpectralEmbedding(2, random_state=seed)),
                              ('PLEEmbedding knn (2)', PLEEmbedding(2, n_steps=args.steps))):
                t1 = time.perf_counter()
                Z = est.fit_transform(X)
                dt = time.perf_counter() - t1
                m = both(X, Z, y, args.k, seed)
                res[name] = {'after': m, 'time_s': dt}
                if seed == args.seeds[0] and Z.shape[1] == 2:
                    res[name]['_plot'] = (None, Z[:, :2].tolist())
        res['_y'] = y.tolist() if seed == args.seeds[0] else None
        res['_wall_blocks_s'] = t_blocks
        results['seeds'][seed] = res
        print(f'seed {seed} done ({time.perf_counter() - t0:.0f}s)', flush=True)
    return results


def summarise(results: dict) -> str:
    seeds = list(results['seeds'])
    names = [k for k in results['seeds'][seeds[0]] if not k.startswith('_')]
    cols = ['2d_knn', '2d_silhouette', '2d_trust', 'full_knn', 'full_silhouette', 'full_trust']
    rows, shown = [], set()
    for name in names:
        for when in ('before', 'after'):
            if when not in results['seeds'][seeds[0]][name]:
                continue
            init = name.split('/')[0]
            if when == 'before' and init in shown:
                continue  # the embedding (before) is the same for every head type of one init
            shown.add(init)
            vals = [[results['seeds'][s][name][when][c] for s in seeds] for c in cols]
            label = (init + ' embedding (before)') if when == 'before' else \
                (name + f" after {results['config']['steps']} steps" if '/' in name else name)
            rows.append([label] + [mean_std(v) for v in vals])
    head = ['latents', '2-D 5-NN acc', '2-D silhouette', '2-D trust.', 'full 5-NN acc', 'full silhouette',
            'full trust.']
    text = md_table(head, rows)
    # paired: after vs before per variant, 2-D kNN
    prow = []
    for name in names:
        if '/' not in name:
            continue
        for c in ('2d_knn', 'full_knn', '2d_silhouette'):
            a = np.array([results['seeds'][s][name]['after'][c] for s in seeds])
            b = np.array([results['seeds'][s][name]['before'][c] for s in seeds])
            d = a - b
            p = stats.ttest_rel(a, b).pvalue if d.size > 1 and np.any(d != d[0]) else float('nan')
            prow.append([name, c, f"{d.mean():+.3f} ± {d.std(ddof=1) if d.size > 1 else 0.0:.3f}",
                         f"{int((d > 0).sum())}/{d.size}", f"{p:.3g}"])
    text += '\n\nAfter minus before (paired over seeds):\n\n' + md_table(
        ['variant', 'metric', 'after - before', 'seeds improved', 'paired t p'], prow)
    return text


def summarise_sweep(folder: Path) -> str:
    """One row per (qk_scale, step_size, variant) of the JSONs in ``folder`` (2-D k-NN before/after, ...)."""
    import json
    rows = []
    for f in sorted(Path(folder).glob('*.json')):
        r = json.loads(f.read_text())
        cfg, S = r['config'], r['seeds']
        for name in [k for k in S[next(iter(S))] if '/' in k]:
            def ms(when, m):
                return mean_std([S[s][name][when][m] for s in S])
            rows.append([cfg['qk_scale'], cfg['step_size'], name, ms('before', '2d_knn'), ms('after', '2d_knn'),
                         ms('after', '2d_silhouette'), ms('before', 'full_knn'), ms('after', 'full_knn')])
    rows.sort(key=lambda r: (r[2], r[0], r[1]))
    return md_table(['qk scale', 'eta', 'variant', '2-D 5-NN before', '2-D 5-NN after', '2-D silhouette after',
                       'full 5-NN before', 'full 5-NN after'], rows)


def plot(results: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    s0 = results['seeds'][list(results['seeds'])[0]]
    y = np.asarray(s0['_y'])
    panels = []
    for init in INITS:
        panels.append((f'{init} init: embedding (before)', s0[f'{init}/{HEADS[0]}']['_plot'][0]))
        for heads in HEADS:
            panels.append((f'{init}/{heads}: after {results["config"]["steps"]} steps',
                           s0[f'{init}/{heads}']['_plot'][1]))
    for name in ('PCA (2)', 'SpectralEmbedding (2)', 'PLEEmbedding knn (2)'):
        if name in s0:
            panels.append((name, s0[name]['_plot'][1]))
    ncol = 4
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.6 * nrow))
    for ax in axes.ravel():
        ax.axis('off')
    for ax, (title, Z) in zip(axes.ravel(), panels):
        Z = np.asarray(Z)
        ax.axis('on')
        sc = ax.scatter(Z[:, 0], Z[:, 1], c=y, cmap='tab10', s=3, vmin=-0.5, vmax=9.5)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes.ravel().tolist(), ticks=range(10), shrink=0.6, label='digit')
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.summarise_sweep:
        print(summarise_sweep(Path(args.summarise_sweep)))
        return 0
    torch.set_num_threads(args.threads)
    # scikit-learn's OpenMP neighbour searches spin-wait on busy cores: give its BLAS/OpenMP pools the same count
    from threadpoolctl import threadpool_limits
    limits = threadpool_limits(args.threads)  # noqa: F841  (held until main returns)
    t0 = time.perf_counter()
    results = run(args)
    results['wall_s'] = time.perf_counter() - t0
    if args.png:
        plot(results, Path(args.png))
    for s in results['seeds'].values():  # keep the JSON small
        for v in s.values():
            if isinstance(v, dict):
                v.pop('_plot', None)
        s.pop('_y', None)
    atomic_write_json(args.out, results)
    print(summarise(results))
    print(f"\nwall time {results['wall_s']:.0f}s; PNG {args.png}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
