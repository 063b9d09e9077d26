"""Claim 1: "at initialisation a transformer block performs linear dimensionality reduction".

What is measured: for a block (or a stack) mapping token states ``X [n, C]`` to ``Y [n, C]``, the R^2 of the best
affine map ``Y ~ X W + b`` fitted by least squares on a random half of the tokens and scored on the other half
(``R2 = 1 - ||Y - Yhat||^2 / ||Y - mean(Y)||^2``).  Because the residual stream alone gives ``Y = X + update``, the
R^2 of the output is dominated by the identity; the R^2 of the **update** ``Y - X`` (same fit, target ``Y - X``)
is the informative number, and is reported too.  The map is token-wise: each ``y_i`` is predicted from its own
``x_i`` only, although the block mixes tokens through attention; an R^2 near 1 therefore means that the attention and
the MLP act on a token like one fixed affine map.

Settings:

1. MNIST test images as tokens (one sequence of ``--n`` images, embedded as in ``examples/mnist_clustering.py``),
   blocks at random initialisation: one block applied ``1..8`` times (shared weights) and a stack of 8 independent
   random blocks, for the ``transformer`` (standard), ``laplacian`` and ``mixed`` variants of
   ``pyg_ple.nn.block.VARIANTS``.
2. The character LM of ``benchmarks/lm_shakespeare.py`` on validation sequences: each layer and the whole stack, at
   initialisation and after training (models saved by ``lm_shakespeare.py --save-models DIR``, if given).

    python benchmarks/linearity.py --root DATA --lm-models runs/lm_models
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pyg_ple import PLETransformerBlock  # noqa: E402
from pyg_ple.nn.block import variant_kwargs  # noqa: E402

HEADS = ('transformer', 'laplacian', 'mixed')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None)
    p.add_argument('--n', type=int, default=1000)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--depth', type=int, default=8)
    p.add_argument('--lm-models', default=None, help='folder of lm_<variant>_s<seed>.pt from lm_shakespeare.py')
    p.add_argument('--lm-batches', type=int, default=4)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(C.RESULTS / 'linearity.json'))
    return p.parse_args(argv)


def r2_affine(X: np.ndarray, Y: np.ndarray, seed: int = 0) -> float:
    """Held-out R^2 of the least-squares affine map X -> Y (fit on a random half of the rows, score on the rest)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:len(X) // 2], perm[len(X) // 2:]
    A = np.hstack([X, np.ones((len(X), 1))])
    W, *_ = np.linalg.lstsq(A[tr], Y[tr], rcond=None)
    res = Y[te] - A[te] @ W
    tot = Y[te] - Y[te].mean(axis=0)
    return float(1.0 - (res ** 2).sum() / max((tot ** 2).sum(), 1e-300))


def both(X, Y, seed=0) -> dict:
    return {'output': r2_affine(X, Y, seed), 'update': r2_affine(X, Y - X, seed)}


@torch.no_grad()
def mnist_part(args) -> dict:
    from pyg_ple.experiments.idx import load_mnist
    from sklearn.model_selection import train_test_split
    images, labels = load_mnist(C.require(C.data_root(args.root), 'data folder'), 'test')
    out = {}
    for seed in args.seeds:
        idx, _ = train_test_split(np.arange(len(labels)), train_size=args.n, stratify=labels, random_state=seed)
        X = images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0
        X = torch.from_numpy(X - X.mean(0))
        torch.manual_seed(seed)
        embed = torch.nn.Linear(X.shape[1], args.channels)
        z0 = embed(X)
        z0 = (z0 / z0.pow(2).mean().sqrt()).unsqueeze(0)
        for heads in HEADS:
            lap = variant_kwargs(heads, args.heads)['laplacian_heads']
            torch.manual_seed(seed + 1)
            shared = PLETransformerBlock(args.channels, args.heads, laplacian_heads=lap).eval()
            stack = [PLETransformerBlock(args.channels, args.heads, laplacian_heads=lap).eval()
                     for _ in range(args.depth)]
            rec = {'shared_block': [], 'stack': [], 'per_layer_stack': []}
            zs, zk = z0, z0
            for d in range(args.depth):
                zs = shared(zs)
                prev = zk
                zk = stack[d](zk)
                rec['shared_block'].append(both(z0[0].numpy(), zs[0].numpy(), seed))
                rec['stack'].append(both(z0[0].numpy(), zk[0].numpy(), seed))
                rec['per_layer_stack'].append(both(prev[0].numpy(), zk[0].numpy(), seed))
            out.setdefault(heads, {})[seed] = rec
    return out


@torch.no_grad()
def lm_states(model, x):
    h = model.embed(x)
    states = [h]
    for block in model.transformer.blocks:
        h = block(h, causal=True)
        states.append(h)
    return [s.reshape(-1, s.size(-1)).numpy() for s in states]


def lm_part(args) -> dict:
    from pyg_ple.experiments.lm import CharData, CharTransformerLM
    from pyg_ple.bench.training import seed_everything
    folder = Path(args.lm_models)
    files = sorted(folder.glob('lm_*.pt'))
    if not files:
        return {}
    first = torch.load(files[0], map_location='cpu', weights_only=True)
    a = first['args']
    text = C.require(C.data_root(args.root) / 'tinyshakespeare' / 'input.txt', 'Tiny Shakespeare').read_text()
    if a.get('max_chars'):
        text = text[:a['max_chars']]
    data = CharData(text)
    gen = torch.Generator().manual_seed(20_000)
    x = torch.cat([data.batch('val', a['batch_size'], a['block_size'], gen)[0] for _ in range(args.lm_batches)])
    out = {}
    for f in files:
        ck = torch.load(f, map_location='cpu', weights_only=True)
        variant, seed = ck['variant'], ck['seed']
        seed_everything(seed)  # the same initialisation as the training run
        model = CharTransformerLM(data.vocab_size, block_size=a['block_size'], channels=a['channels'],
                                  num_layers=a['layers'], heads=a['heads'], step_size=a['step_size'],
                                  variant=variant).eval()
        rec = {}
        for when in ('init', 'trained'):
            if when == 'trained':
                model.load_state_dict(ck['state_dict'])
            s = lm_states(model, x)
            rec[when] = {'per_layer': [both(s[i], s[i + 1], seed) for i in range(len(s) - 1)],
                         'stack': both(s[0], s[-1], seed)}
        out.setdefault(variant, {})[seed] = rec
    return out


def summarise(res: dict) -> str:
    lines = []
    m = res.get('mnist', {})
    if m:
        depth = len(next(iter(next(iter(m.values())).values()))['stack'])
        rows = []
        for heads, per_seed in m.items():
            for kind in ('shared_block', 'stack'):
                for d in sorted({d for d in (0, 1, depth // 2 - 1, depth - 1) if 0 <= d < depth}):
                    o = C.mean_std([r[kind][d]['output'] for r in per_seed.values()])
                    u = C.mean_std([r[kind][d]['update'] for r in per_seed.values()])
                    rows.append([heads, kind.replace('_', ' '), d + 1, C.fmt(o, 4), C.fmt(u, 3)])
        lines.append('MNIST tokens, random initialisation, R^2 of the affine fit from the embedding X_0 to the state '
                     'after L blocks (held-out tokens):\n')
        lines.append(C.md_table(['heads', 'blocks', 'L', 'R^2 output', 'R^2 update (X_L - X_0)'], rows))
    lm = res.get('lm', {})
    if lm:
        rows = []
        for variant, per_seed in lm.items():
            for when in ('init', 'trained'):
                nl = len(next(iter(per_seed.values()))[when]['per_layer'])
                cells = []
                for i in range(nl):
                    u = C.mean_std([r[when]['per_layer'][i]['update'] for r in per_seed.values()])
                    cells.append(C.fmt(u, 3))
                o = C.mean_std([r[when]['stack']['output'] for r in per_seed.values()])
                u = C.mean_std([r[when]['stack']['update'] for r in per_seed.values()])
                rows.append([variant, when, len(per_seed), ' / '.join(cells), C.fmt(o, 3), C.fmt(u, 3)])
        lines.append('\nCharacter LM (validation sequences), R^2 per layer (update) and of the whole stack:\n')
        lines.append(C.md_table(['variant', 'weights', 'seeds', 'per-layer R^2 update', 'stack R^2 output',
                                 'stack R^2 update'], rows))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    C.set_threads(args.threads)
    t0 = time.perf_counter()
    res = {'config': vars(args), 'env': C.env_info(), 'mnist': mnist_part(args)}
    if args.lm_models:
        res['lm'] = lm_part(args)
    res['wall_s'] = time.perf_counter() - t0
    C.write_json(Path(args.out), res)
    print(summarise(res))
    print(f"\nwall time {res['wall_s']:.0f}s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
