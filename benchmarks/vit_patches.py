"""Claim 3 (vision): does subtracting the identity from attention help a small ViT?

:class:`pyg_ple.experiments.vit.PatchViT` with ``transformer`` (standard), ``laplacian`` (all heads) and ``mixed`` (half
the heads) attention, same parameters, epochs, batch size and learning rate, several seeds, on

* ``mnist``: the 10,000 MNIST test images (the only MNIST images in the shared data), a FIXED stratified split of
  8,000 train / 2,000 validation (``random_state=0``, the same for every seed), 7x7 patches -> 16 tokens;
* ``digits``: scikit-learn's 1,797 8x8 digits, a fixed stratified 80/20 split, 2x2 patches -> 16 tokens.

A seed fixes the model initialisation and the batch order; every variant of one seed sees the same batches (paired).
Accuracy is the validation accuracy after the last epoch (no early stopping, so validation never selects a model).
One JSON per run in ``--out-dir`` (existing runs are skipped); the report gives mean ± std and paired comparisons.

    python benchmarks/vit_patches.py --root DATA --threads 1
    python benchmarks/vit_patches.py --report
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pyg_ple.bench.training import TrainConfig, fit, seed_everything  # noqa: E402
from pyg_ple.experiments.lm import variant_name  # noqa: E402
from pyg_ple.experiments.vit import VIT_VARIANTS, PatchViT, patchify  # noqa: E402

DATASETS = {'mnist': {'patch': 7, 'epochs': 5}, 'digits': {'patch': 2, 'epochs': 15}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None, help='data folder holding MNIST/raw (or $PYG_PLE_DATA)')
    p.add_argument('--datasets', nargs='+', default=list(DATASETS), choices=list(DATASETS))
    p.add_argument('--variants', nargs='+', default=list(VIT_VARIANTS), choices=list(VIT_VARIANTS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=None, help='default: 5 (mnist), 15 (digits)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--max-train', type=int, default=None, help='cap the training set (tests)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out-dir', default=str(C.RESULTS / 'vit'))
    p.add_argument('--save-models', default=None)
    p.add_argument('--report', action='store_true')
    return p.parse_args(argv)


def load(name: str, root) -> tuple:
    from sklearn.model_selection import train_test_split
    if name == 'mnist':
        from pyg_ple.experiments.idx import load_mnist
        images, labels = load_mnist(C.require(C.data_root(root), 'data folder'), 'test')
        images = images.astype(np.float32) / 255.0
    else:
        from sklearn.datasets import load_digits
        d = load_digits()
        images, labels = d.images.astype(np.float32) / 16.0, d.target
    idx_tr, idx_va = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    x = patchify(torch.from_numpy(images), DATASETS[name]['patch'])
    y = torch.as_tensor(labels, dtype=torch.long)
    mu, sd = x[idx_tr].mean(), x[idx_tr].std()
    x = (x - mu) / sd
    return x[idx_tr], y[idx_tr], x[idx_va], y[idx_va]


def run_one(args, data, name: str, variant: str, seed: int) -> dict:
    xtr, ytr, xva, yva = data
    if args.max_train:
        xtr, ytr = xtr[:args.max_train], ytr[:args.max_train]
    seed_everything(seed)
    model = PatchViT(xtr.size(-1), xtr.size(1), 10, channels=args.channels, num_layers=args.layers,
                     heads=args.heads, variant=variant)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=args.batch_size, shuffle=True, generator=gen)

    def evaluate(m):
        logits = torch.cat([m(xva[i:i + 512].to(args.device)) for i in range(0, len(xva), 512)]).cpu()
        return {'val_loss': float(F.cross_entropy(logits, yva)),
                'val_acc': float((logits.argmax(1) == yva).float().mean())}

    epochs = args.epochs or DATASETS[name]['epochs']
    cfg = TrainConfig(epochs=epochs, lr=args.lr, seed=seed, device=args.device, progress=False,
                      desc=f'{name}/{variant}/s{seed}')
    t0 = time.perf_counter()
    res = fit(model, loader, cfg, loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]), evaluate=evaluate,
              monitor='val_acc', mode='max')
    wall = time.perf_counter() - t0
    if args.save_models:
        Path(args.save_models).mkdir(parents=True, exist_ok=True)
        torch.save({'state_dict': model.state_dict(), 'variant': variant, 'seed': seed, 'dataset': name},
                   Path(args.save_models) / f'vit_{name}_{variant}_s{seed}.pt')
    h = res.history
    return {'dataset': name, 'variant': variant, 'seed': seed, 'params': sum(p.numel() for p in model.parameters()),
            'epochs': epochs, 'n_train': len(ytr), 'n_val': len(yva), 'wall_s': wall,
            'val_acc': [r['val_acc'] for r in h], 'val_loss': [r['val_loss'] for r in h],
            'train_loss': [r['train_loss'] for r in h], 'final_val_acc': h[-1]['val_acc'],
            'final_val_loss': h[-1]['val_loss'], 'config': {k: v for k, v in vars(args).items() if k != 'report'},
            'env': C.env_info()}


def report(out_dir: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob('*.json'))]
    if not runs:
        return 'no runs found'
    for r in runs:
        r['variant'] = variant_name(r['variant'])
    lines = []
    for name in DATASETS:
        rs = [r for r in runs if r['dataset'] == name]
        if not rs:
            continue
        by = {(r['variant'], r['seed']): r for r in rs}
        seeds = sorted({r['seed'] for r in rs})
        rows, prow = [], []
        for v in VIT_VARIANTS:
            vr = [by[(v, s)] for s in seeds if (v, s) in by]
            if not vr:
                continue
            rows.append([v, len(vr), vr[0]['params'], vr[0]['epochs'],
                         C.fmt(C.mean_std([100 * r['final_val_acc'] for r in vr]), 2),
                         C.fmt(C.mean_std([100 * float(np.mean(r['val_acc'][-3:])) for r in vr]), 2),
                         C.fmt(C.mean_std([r['final_val_loss'] for r in vr]), 4),
                         f"{np.mean([r['wall_s'] for r in vr]):.0f}"])
            if v != 'transformer':
                common = [s for s in seeds if (v, s) in by and ('transformer', s) in by]
                if common:
                    pr = C.paired([100 * by[(v, s)]['final_val_acc'] for s in common],
                                  [100 * by[('transformer', s)]['final_val_acc'] for s in common],
                                  lower_is_better=False)
                    pl = C.paired([by[(v, s)]['final_val_loss'] for s in common],
                                  [by[('transformer', s)]['final_val_loss'] for s in common])
                    prow.append([f'{v} - transformer', pr['n'], f"{pr['mean_diff']:+.2f} ± {pr['std_diff']:.2f}",
                                 f"{pr['wins']}/{pr['n']}", f"{pr['p']:.3g}",
                                 f"{pl['mean_diff']:+.4f} ± {pl['std_diff']:.4f}", f"{pl['wins']}/{pl['n']}",
                                 f"{pl['p']:.3g}"])
        r0 = rs[0]
        lines.append(f"\n**{name}** ({r0['n_train']} train / {r0['n_val']} val, seeds {seeds}):\n")
        lines.append(C.md_table(['variant', 'seeds', 'params', 'epochs', 'val acc % (final epoch)',
                                 'val acc % (mean of last 3 epochs)', 'val loss (final)',
                                 'wall s/run'], rows))
        if prow:
            lines.append('\nPaired (same seed): final accuracy (points) and final validation loss:\n')
            lines.append(C.md_table(['comparison', 'pairs', 'acc diff ± std', 'seeds better', 'paired t p',
                                     'loss diff ± std', 'seeds lower loss', 'paired t p (loss)'], prow))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    if not args.report:
        C.set_threads(args.threads)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in args.datasets:
            data = load(name, args.root)
            for seed in args.seeds:
                for variant in args.variants:
                    f = out_dir / f'{name}_{variant}_s{seed}.json'
                    if f.exists():
                        print(f'skip {f.name} (exists)', flush=True)
                        continue
                    r = run_one(args, data, name, variant, seed)
                    C.write_json(f, r)
                    print(f"{name:7s} {variant:10s} seed {seed}: val acc {100 * r['final_val_acc']:.2f}% "
                          f"({r['wall_s']:.0f}s)", flush=True)
    print(report(out_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
