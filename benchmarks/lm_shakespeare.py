"""Claim 3 (language model): does subtracting the identity from attention help a char-level LM on Tiny Shakespeare?

Variants at equal parameters, steps, batch and learning rate (see :mod:`pyg_ple.experiments.lm`): ``transformer``
(standard attention), ``laplacian`` (all heads), ``mixed`` (half the heads), and both Laplacian variants with a learned
step size. Every seed trains every variant on exactly the same sequence of random batches (a paired design) and is
evaluated on the same fixed validation batches (last 10% of the text). One JSON per run is written to ``--out-dir``
(existing runs are skipped, so an interrupted grid resumes); ``--report`` aggregates them: validation loss mean ± std
at equal steps, paired comparisons against ``transformer`` (paired t-test and exact sign test over seeds), and a
learning-curve PNG.

CPU default (about 2 min per run on one core; 15 runs)::

    python benchmarks/lm_shakespeare.py --root DATA --threads 1
    python benchmarks/lm_shakespeare.py --report

A GPU-sized run (nanoGPT's shakespeare-char configuration)::

    python benchmarks/lm_shakespeare.py --device cuda --channels 384 --layers 6 --heads 6 --block-size 256 \\
        --batch-size 64 --steps 5000 --eval-every 250 --lr 1e-3 --dropout 0.2 --out-dir runs/lm_gpu
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

from pyg_ple.experiments.lm import CharData, CharTransformerLM, RandomBatches, evaluate_lm, variant_name  # noqa: E402
from pyg_ple.nn.block import VARIANTS  # noqa: E402
from pyg_ple.bench.training import TrainConfig, fit, seed_everything  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None, help='data folder holding tinyshakespeare/input.txt (or $PYG_PLE_DATA)')
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--steps', type=int, default=2000)
    p.add_argument('--eval-every', type=int, default=200)
    p.add_argument('--eval-batches', type=int, default=20)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--block-size', type=int, default=64)
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--step-size', type=float, default=1.0)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--dropout', type=float, default=0.0)
    p.add_argument('--grad-clip', type=float, default=1.0)
    p.add_argument('--max-chars', type=int, default=None, help='use only the first N characters (tests)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out-dir', default=str(C.RESULTS / 'lm'))
    p.add_argument('--save-models', default=None, help='folder for final state dicts (used by linearity.py)')
    p.add_argument('--report', action='store_true', help='only aggregate existing runs')
    p.add_argument('--png', default=None, help='learning-curve PNG (default <out-dir>/../lm_curves.png)')
    return p.parse_args(argv)


def run_one(args, data: CharData, variant: str, seed: int) -> dict:
    seed_everything(seed)
    model = CharTransformerLM(data.vocab_size, block_size=args.block_size, channels=args.channels,
                              num_layers=args.layers, heads=args.heads, step_size=args.step_size,
                              dropout=args.dropout, variant=variant)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(10_000)  # the same validation batches for every run
    val_batches = [data.batch('val', args.batch_size, args.block_size, gen) for _ in range(args.eval_batches)]
    val_batches = [(x.to(args.device), y.to(args.device)) for x, y in val_batches]
    train = RandomBatches(data, args.eval_every, args.batch_size, args.block_size, seed=seed)
    cfg = TrainConfig(epochs=args.steps // args.eval_every, lr=args.lr, seed=seed, device=args.device,
                      progress=False, grad_clip=args.grad_clip, desc=f'{variant}/s{seed}')
    init_val = evaluate_lm(model.to(args.device), val_batches)
    t0 = time.perf_counter()
    res = fit(model, train, cfg, loss_fn=lambda m, b: m.loss(*b),
              evaluate=lambda m: {'val_loss': evaluate_lm(m, val_batches)})
    wall = time.perf_counter() - t0
    # step sizes of the Laplacian heads only (plain heads ignore eta)
    etas = [b.conv.eta[b.conv.laplacian_mask].detach().cpu().tolist() for b in model.transformer.blocks]
    if args.save_models:
        Path(args.save_models).mkdir(parents=True, exist_ok=True)
        torch.save({'state_dict': model.state_dict(), 'args': vars(args), 'variant': variant, 'seed': seed},
                   Path(args.save_models) / f'lm_{variant}_s{seed}.pt')
    return {'variant': variant, 'seed': seed, 'params': n_params, 'wall_s': wall,
            'steps': [0] + [int(h['epoch']) * args.eval_every for h in res.history],
            'val_loss': [init_val] + [h['val_loss'] for h in res.history],
            'train_loss': [None] + [h['train_loss'] for h in res.history],
            'final_val_loss': res.history[-1]['val_loss'] if res.history else init_val,
            'best_val_loss': min([init_val] + [h['val_loss'] for h in res.history]),
            'eta': etas, 'config': {k: v for k, v in vars(args).items() if k not in ('report',)},
            'env': C.env_info()}


def report(out_dir: Path, png: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob('*.json'))]
    if not runs:
        return 'no runs found'
    for r in runs:
        r['variant'] = variant_name(r['variant'])
    variants = [v for v in VARIANTS if any(r['variant'] == v for r in runs)]
    by = {(r['variant'], r['seed']): r for r in runs}
    seeds = sorted({r['seed'] for r in runs})
    lines = []
    rows = []
    for v in variants:
        rs = [by[(v, s)] for s in seeds if (v, s) in by]
        ms = C.mean_std([r['final_val_loss'] for r in rs])
        best = C.mean_std([r['best_val_loss'] for r in rs])
        wall = C.mean_std([r['wall_s'] for r in rs])
        eta = ''
        if VARIANTS[v][1]:
            import numpy as np
            allv = [x for r in rs for e in r['eta'] for x in e]
            eta = f"{np.mean(allv):.3f} [{np.min(allv):.2f}, {np.max(allv):.2f}]"
        rows.append([v, len(rs), rs[0]['params'], C.fmt(ms, 4), C.fmt(best, 4), f"{wall['mean']:.0f}", eta])
    steps = runs[0]['steps'][-1]
    lines.append(f'Validation loss (nats/char) after {steps} steps, mean ± std over seeds {seeds}:\n')
    lines.append(C.md_table(['variant', 'seeds', 'params', 'final val loss', 'best val loss', 'wall s/run',
                             'mean learned eta'], rows))
    if 'transformer' in variants:
        prow = []
        for v in variants:
            if v == 'transformer':
                continue
            common = [s for s in seeds if (v, s) in by and ('transformer', s) in by]
            if not common:
                continue
            pr = C.paired([by[(v, s)]['final_val_loss'] for s in common],
                          [by[('transformer', s)]['final_val_loss'] for s in common])
            prow.append([f'{v} - transformer', pr['n'], f"{pr['mean_diff']:+.4f} ± {pr['std_diff']:.4f}",
                         f"{pr['wins']}/{pr['n']}", f"{pr['t']:.2f}", f"{pr['p']:.3g}", f"{pr['sign_p']:.3g}"])
        lines.append('\nPaired comparison with standard attention (same seed = same init seed and batches; '
                     'negative = lower loss):\n')
        lines.append(C.md_table(['comparison', 'pairs', 'mean diff ± std', 'seeds better', 't', 'paired t p',
                                 'sign-test p'], prow))
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        import numpy as np
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for v in variants:
            rs = [by[(v, s)] for s in seeds if (v, s) in by]
            st = np.array(rs[0]['steps'])
            vl = np.array([r['val_loss'] for r in rs])
            for a, lo in ((ax[0], 0), (ax[1], 1)):
                a.plot(st[lo:], vl.mean(0)[lo:], label=v)
                a.fill_between(st[lo:], (vl.mean(0) - vl.std(0))[lo:], (vl.mean(0) + vl.std(0))[lo:], alpha=0.2)
        ax[0].set_title('validation loss (mean ± std over seeds)')
        ax[1].set_title('zoom (from first eval)')
        for a in ax:
            a.set_xlabel('training steps')
            a.set_ylabel('val loss (nats/char)')
        ax[0].legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines.append(f'\nLearning curves: `{png.name}`')
    except Exception as e:  # pragma: no cover
        lines.append(f'(no PNG: {e})')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    png = Path(args.png) if args.png else out_dir.parent / 'lm_curves.png'
    if not args.report:
        C.set_threads(args.threads)
        path = C.require(C.data_root(args.root) / 'tinyshakespeare' / 'input.txt', 'Tiny Shakespeare')
        text = path.read_text()
        if args.max_chars:
            text = text[:args.max_chars]
        data = CharData(text)
        out_dir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for variant in args.variants:
                f = out_dir / f'{variant}_s{seed}.json'
                if f.exists():
                    print(f'skip {f.name} (exists)', flush=True)
                    continue
                r = run_one(args, data, variant, seed)
                C.write_json(f, r)
                print(f"{variant:24s} seed {seed}: val {r['final_val_loss']:.4f} (best {r['best_val_loss']:.4f}) "
                      f"params {r['params']} {r['wall_s']:.0f}s", flush=True)
    text = report(out_dir, png)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
