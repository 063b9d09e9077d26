"""Forward + backward time and peak memory of pyg-ple's layer against PyG's attention layers, in one run.

Writes ``speed.csv``, ``speed.md`` (command, seed, versions, CPU model, threads) and ``speed.png`` (log-log time vs
size) under ``--out`` (default ``benchmarks/results``).

Suites
  graph     random graphs (sources and targets uniform, E = N * degree), ``x [N, heads*C]``:
            LaplacianDiffusionConv fused / reference path, the bare fused kernel and a plain gather/softmax/scatter
            kernel on the same q, k, v, PyG TransformerConv / GATConv / GATv2Conv (same heads and channels) and
            GCNConv (heads*C output channels), and one copy of an ``[E, heads*C]`` tensor (one memory pass).
  sequence  ``x [1, T, heads*C]``: the conv's dense path (``forward_dense``), the same projections around plain
            ``scaled_dot_product_attention``, the bare SDPA kernel, and the sparse (fused / reference) path over
            ``sequence_edge_index(T)``.
  compile   ``torch.compile`` on vs off at one graph size.

Time: best (``time_s``; also the median, ``time_median_s``) of ``--repeats`` runs of one training step (forward,
``sum`` of the output, backward; parameter grads reset to ``None`` before each step) after one warm-up step. The best
is reported because on a shared machine interference only ever adds time.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``
above the level before the step; on CPU the same quantity reconstructed from the PyTorch profiler's allocator events
(``profile_memory=True``: every tensor allocation and free of the step, in time order; peak of the running sum), in
a separate step. It counts all tensors the step creates (activations saved for backward, temporaries, gradients) and
excludes inputs and parameters that exist before the step and non-tensor memory.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shlex
import sys
import time
import traceback

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch_geometric  # noqa: E402
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, TransformerConv  # noqa: E402

from pyg_ple import LaplacianDiffusionConv  # noqa: E402
from pyg_ple.edges import sequence_edge_index  # noqa: E402
from pyg_ple.ops.edge_softmax import (edge_softmax_aggregate, edge_softmax_aggregate_reference,  # noqa: E402
                           fused_conv_forward)

MATERIALISING = {'LDC-reference': 10, 'reference-kernel': 8, 'TransformerConv': 10, 'GATConv': 6, 'GATv2Conv': 10,
                 'GCNConv': 2}  # rough peak in units of one [E, H*C] float tensor, for the memory budget


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny sizes, one repeat, no compile (smoke test)')
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'))
    p.add_argument('--nodes', type=float, nargs='+', default=[1e3, 1e4, 1e5], help='graph sizes N')
    p.add_argument('--degrees', type=int, nargs='+', default=[4, 16, 64], help='mean in-degrees')
    p.add_argument('--headline', type=str, default='50000x32',
                   help="extra 'NxDEG' config (the issue's target size); 'none' to skip")
    p.add_argument('--seq', type=int, nargs='+', default=[64, 256, 1024, 4096], help='sequence lengths T')
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--channels', type=int, default=16, help='channels per head')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--mem-budget-gb', type=float, default=6.0,
                   help='skip a model whose estimated peak exceeds this (marked skipped in the tables)')
    p.add_argument('--compile', dest='compile', action='store_true', default=None)
    p.add_argument('--no-compile', dest='compile', action='store_false')
    p.add_argument('--compile-size', type=str, default='10000x16', help="'NxDEG' for the compile comparison")
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory steps')
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.degrees, args.seq = [100, 300], [4], [16, 32]
        args.headline, args.repeats = 'none', 1
        args.compile = bool(args.compile)
    elif args.compile is None:
        args.compile = True
    return args


# ----------------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------------
def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_step(step, repeats, device):
    """(best, median) seconds of ``repeats`` steps after one warm-up step."""
    step()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2]


def peak_memory(step, device):
    """Peak bytes allocated by one step above the level before it (see the module docstring)."""
    if device.type == 'cuda':
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]' and str(e.device_type()).endswith('CPU'))
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


def training_step(module, forward):
    params = list(module.parameters()) if module is not None else []

    def step():
        for p in params:
            p.grad = None
        out = forward()
        out.sum().backward()
    return step


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------
class KernelInputs(torch.nn.Module):
    """Leaf q, k, v [N, H, C] (as parameters, so the step's backward reaches them)."""

    def __init__(self, n, heads, channels, device):
        super().__init__()
        self.q = torch.nn.Parameter(torch.randn(n, heads, channels, device=device))
        self.k = torch.nn.Parameter(torch.randn(n, heads, channels, device=device))
        self.v = torch.nn.Parameter(torch.randn(n, heads, channels, device=device))


def ldc_forward(conv, x, edge_index, fused):
    """The conv's kernel path (forced through :func:`pyg_ple.ops.edge_softmax.fused_conv_forward`, which ``fused=True`` runs
    from ``FUSED_MIN_EDGES`` edges on) or its reference ``propagate`` path."""
    if fused:
        return lambda: fused_conv_forward(conv, x, edge_index)
    return lambda: conv(x, edge_index)


def graph_models(heads, channels, n, edge_index, device):
    """name -> (module, forward closure); the input x is created here."""
    f_in = heads * channels
    x = torch.randn(n, f_in, device=device)
    models = {}

    def add(name, module, fwd):
        models[name] = (module, fwd)

    for name, flag in (('LDC-fused', True), ('LDC-reference', False)):
        m = LaplacianDiffusionConv(f_in, channels, heads=heads, fused=flag).to(device)
        add(name, m, ldc_forward(m, x, edge_index, flag))
    kin = KernelInputs(n, heads, channels, device)
    add('fused-kernel', kin, lambda: edge_softmax_aggregate(kin.q, kin.k, kin.v, edge_index, n, need_alpha=False)[0])
    add('reference-kernel', kin, lambda: edge_softmax_aggregate_reference(kin.q, kin.k, kin.v, edge_index, n)[0])
    m = TransformerConv(f_in, channels, heads=heads).to(device)
    add('TransformerConv', m, (lambda m=m: m(x, edge_index)))
    m = GATConv(f_in, channels, heads=heads).to(device)
    add('GATConv', m, (lambda m=m: m(x, edge_index)))
    m = GATv2Conv(f_in, channels, heads=heads).to(device)
    add('GATv2Conv', m, (lambda m=m: m(x, edge_index)))
    m = GCNConv(f_in, f_in).to(device)
    add('GCNConv', m, (lambda m=m: m(x, edge_index)))
    return models


def random_graph(n, degree, device, seed):
    g = torch.Generator().manual_seed(seed)
    e = n * degree
    return torch.stack([torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)]).to(device)


def parse_size(text):
    if text is None or text.lower() == 'none':
        return None
    n, d = text.lower().split('x')
    return int(float(n)), int(d)


# ----------------------------------------------------------------------------------------------------------------
# suites
# ----------------------------------------------------------------------------------------------------------------
def measure(rows, base, name, module, fwd, args, device, est_bytes=None, backward=True):
    row = dict(base, model=name, time_s='', time_median_s='', peak_mb='', status='ok')
    if est_bytes is not None and est_bytes > args.mem_budget_gb * 2**30:
        row['status'] = f'skipped (est. {est_bytes / 2**30:.1f} GiB > budget)'
        rows.append(row)
        print(f"  {name:18s} {row['status']}", flush=True)
        return row
    try:
        step = training_step(module, fwd) if backward else fwd
        row['time_s'], row['time_median_s'] = time_step(step, args.repeats, device)
        if not args.no_memory:
            row['peak_mb'] = peak_memory(step, device) / 2**20
    except Exception as exc:  # keep going: a failure is a result too
        row['status'] = f'error: {type(exc).__name__}: {str(exc)[:120]}'
        traceback.print_exc()
    rows.append(row)
    t = row['time_s']
    print(f"  {name:18s} {t * 1e3 if t != '' else float('nan'):10.2f} ms  "
          f"{row['peak_mb'] if row['peak_mb'] != '' else float('nan'):10.1f} MB  {row['status']}", flush=True)
    return row


def run_graph_suite(args, device, rows):
    H, C = args.heads, args.channels
    sizes = [(int(n), d) for n in args.nodes for d in args.degrees]
    head = parse_size(args.headline)
    if head is not None and head not in sizes:
        sizes.append(head)
    for i, (n, d) in enumerate(sizes):
        seed = args.seed + i
        torch.manual_seed(seed)
        ei = random_graph(n, d, device, seed)
        E = ei.size(1)
        print(f'graph N={n} deg={d} E={E}', flush=True)
        base = dict(suite='graph', N=n, degree=d, E=E, T='', seed=seed)
        edge_bytes = E * H * C * 4
        copy_src = torch.randn(E, H * C, device=device)
        measure(rows, base, 'copy[E,H*C]', None, lambda: copy_src.clone(), args, device, backward=False)
        del copy_src
        for name, (module, fwd) in graph_models(H, C, n, ei, device).items():
            est = MATERIALISING.get(name, 1) * edge_bytes
            measure(rows, base, name, module, fwd, args, device, est)


class SDPALayer(torch.nn.Module):
    """The conv's projections around plain scaled_dot_product_attention (a standard attention layer)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        B, T, _ = x.shape
        H, C = c.heads, c.out_channels
        q = c.lin_query(x).view(B, T, H, C).transpose(1, 2)
        k = c.lin_key(x).view(B, T, H, C).transpose(1, 2)
        v = c.lin_value(x).view(B, T, H, C).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, H * C)


def run_sequence_suite(args, device, rows):
    H, C = args.heads, args.channels
    f_in = H * C
    for i, T in enumerate(args.seq):
        seed = args.seed + 1000 + i
        torch.manual_seed(seed)
        print(f'sequence T={T}', flush=True)
        base = dict(suite='sequence', N=T, degree=T, E=T * T, T=T, seed=seed)
        x = torch.randn(1, T, f_in, device=device)
        conv_f = LaplacianDiffusionConv(f_in, C, heads=H, fused=True).to(device)
        conv_r = LaplacianDiffusionConv(f_in, C, heads=H, fused=False).to(device)
        conv_r.load_state_dict(conv_f.state_dict())
        ei = sequence_edge_index(T, device=device)
        kin = KernelInputs(T, H, C, device)
        qkv = lambda: [t.view(1, T, H, C).transpose(1, 2) for t in (kin.q, kin.k, kin.v)]  # noqa: E731
        measure(rows, base, 'dense-forward_dense', conv_f, lambda: conv_f.forward_dense(x), args, device)
        sdpa_layer = SDPALayer(conv_f)
        measure(rows, base, 'sdpa-layer', sdpa_layer, lambda: sdpa_layer(x), args, device)
        measure(rows, base, 'sdpa-kernel', kin, lambda: F.scaled_dot_product_attention(*qkv()), args, device)
        xs = x.view(T, f_in)
        measure(rows, base, 'sparse-fused', conv_f, ldc_forward(conv_f, xs, ei, True), args, device)
        measure(rows, base, 'sparse-reference', conv_r, lambda: conv_r(xs, ei), args, device,
                est_bytes=10 * T * T * f_in * 4)


def run_compile_suite(args, device, rows):
    size = parse_size(args.compile_size)
    if size is None:
        return
    n, d = size
    H, C = args.heads, args.channels
    seed = args.seed + 2000
    torch.manual_seed(seed)
    ei = random_graph(n, d, device, seed)
    x = torch.randn(n, H * C, device=device)
    print(f'compile N={n} deg={d}', flush=True)
    for name, flag in (('LDC-fused', True), ('LDC-reference', False)):
        m = LaplacianDiffusionConv(H * C, C, heads=H, fused=flag).to(device)
        fwd = ldc_forward(m, x, ei, flag)
        for compiled in (False, True):
            base = dict(suite='compile', N=n, degree=d, E=ei.size(1), T='', seed=seed)
            label = f'{name}{"+compile" if compiled else ""}'
            if compiled:
                torch._dynamo.reset()
                cm = torch.compile(fwd)
                t0 = time.perf_counter()
                try:
                    training_step(m, cm)()
                    base['compile_s'] = time.perf_counter() - t0
                except Exception as exc:
                    rows.append(dict(base, model=label, time_s='', peak_mb='',
                                     status=f'error: {type(exc).__name__}: {str(exc)[:120]}'))
                    print(f'  {label}: compile failed: {exc}', flush=True)
                    continue
                measure(rows, base, label, m, cm, args, device)
            else:
                measure(rows, base, label, m, fwd, args, device)


# ----------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------
def num(v):
    return float(v) if v not in ('', None) else float('nan')


def add_ratios(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r['suite'], r['N'], r['degree'], r['T']), []).append(r)
    for key, rs in groups.items():
        by = {r['model']: r for r in rs}
        ref_name = {'graph': 'TransformerConv', 'sequence': 'sdpa-layer', 'compile': None}[key[0]]
        ref = by.get(ref_name)
        copy = by.get('copy[E,H*C]')
        for r in rs:
            t, m = num(r['time_s']), num(r['peak_mb'])
            r['time_vs_ref'] = t / num(ref['time_s']) if ref else float('nan')
            r['mem_vs_ref'] = m / num(ref['peak_mb']) if ref and num(ref['peak_mb']) > 0 else float('nan')
            r['time_vs_copy'] = t / num(copy['time_s']) if copy else float('nan')
            if key[0] == 'compile':
                plain = by.get(r['model'].replace('+compile', ''))
                r['time_vs_ref'] = t / num(plain['time_s']) if plain else float('nan')


def fit_exponent(xs, ys):
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0 and math.isfinite(y)]
    if len(pts) < 2:
        return float('nan')
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else float('nan')


def exponents(rows, suite, xkey):
    out = {}
    for name in dict.fromkeys(r['model'] for r in rows if r['suite'] == suite):
        rs = [r for r in rows if r['suite'] == suite and r['model'] == name and r['status'] == 'ok']
        out[name] = (fit_exponent([num(r[xkey]) for r in rs], [num(r['time_s']) for r in rs]), len(rs))
    return out


def cpu_model():
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def fmt(v, spec):
    v = num(v)
    return format(v, spec) if math.isfinite(v) else '-'


def write_outputs(args, rows, device, argv, wall):
    os.makedirs(args.out, exist_ok=True)
    fields = ['suite', 'model', 'N', 'degree', 'E', 'T', 'seed', 'time_s', 'time_median_s', 'peak_mb',
              'time_vs_ref', 'mem_vs_ref',
              'time_vs_copy', 'compile_s', 'status']
    with open(os.path.join(args.out, 'speed.csv'), 'w', newline='') as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in r.items()})

    cmd = ' '.join(shlex.quote(a) for a in ['python', 'benchmarks/speed.py'] + argv)
    L = ['# pyg-ple speed benchmark', '',
         f'- command: `{cmd}`',
         f'- device: {device}' + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''),
         f'- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), torch threads: {torch.get_num_threads()}',
         f'- torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, '
         f'python {platform.python_version()}',
         f'- seeds: base {args.seed} (graph config i uses seed+i, sequence seed+1000+i, compile seed+2000)',
         f'- heads {args.heads} x {args.channels} channels; time = best of {args.repeats} repeats after 1 warm-up '
         f'step (median in the CSV); load average at start {LOAD_AT_START}; '
         f'wall time {wall:.0f} s',
         '- LDC-fused forces the kernel (`pyg_ple.ops.edge_softmax.fused_conv_forward`, what `fused=True` runs from '
         '`pyg_ple.nn.conv.FUSED_MIN_EDGES` edges on); LDC-reference is `fused=False` (`propagate`)',
         '- time: one training step (forward, sum, backward). peak: tensor bytes allocated by the step above the '
         'level before it (CUDA: max_memory_allocated; CPU: running sum of the PyTorch profiler allocator events).',
         '- ratios are against TransformerConv (graph suite) or the SDPA layer (sequence suite) *in the same run*; '
         'time/copy is against one clone of an [E, heads*C] float tensor in the same run.', '']
    for suite, title in (('graph', 'Graphs'), ('sequence', 'Sequences'), ('compile', 'torch.compile')):
        rs = [r for r in rows if r['suite'] == suite]
        if not rs:
            continue
        L.append(f'## {title}')
        L.append('')
        if suite == 'compile':
            L += ['| model | N | degree | time ms | peak MB | time vs uncompiled | compile s | status |',
                  '|---|---|---|---|---|---|---|---|']
            for r in rs:
                L.append(f"| {r['model']} | {r['N']} | {r['degree']} | {fmt(num(r['time_s']) * 1e3, '.1f')} | "
                         f"{fmt(r['peak_mb'], '.1f')} | {fmt(r['time_vs_ref'], '.2f')} | "
                         f"{fmt(r.get('compile_s', ''), '.1f')} | {r['status']} |")
        else:
            ref = 'TransformerConv' if suite == 'graph' else 'SDPA layer'
            L += [f'| N | degree | E | T | model | time ms | peak MB | time / {ref} | mem / {ref} | time / copy | '
                  'status |', '|---|---|---|---|---|---|---|---|---|---|---|']
            for r in rs:
                L.append(f"| {r['N']} | {r['degree']} | {r['E']} | {r['T']} | {r['model']} | "
                         f"{fmt(num(r['time_s']) * 1e3, '.2f')} | {fmt(r['peak_mb'], '.1f')} | "
                         f"{fmt(r['time_vs_ref'], '.3f')} | {fmt(r['mem_vs_ref'], '.3f')} | "
                         f"{fmt(r['time_vs_copy'], '.1f')} | {r['status']} |")
        L.append('')
    L += ['## Fitted exponents', '', 'Least-squares slope of log(time) against log(E) (graphs, all N and degrees) '
          'and against log(T) (sequences).', '', '| suite | model | exponent | points |', '|---|---|---|---|']
    for suite, xkey in (('graph', 'E'), ('sequence', 'T')):
        for name, (b, npts) in exponents(rows, suite, xkey).items():
            L.append(f'| {suite} (vs {xkey}) | {name} | {fmt(b, ".3f")} | {npts} |')
    L.append('')
    with open(os.path.join(args.out, 'speed.md'), 'w') as fh:
        fh.write('\n'.join(L))
    plot(args, rows)


def plot(args, rows):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, suite, xkey in ((axes[0], 'graph', 'E'), (axes[1], 'sequence', 'T')):
        names = dict.fromkeys(r['model'] for r in rows if r['suite'] == suite)
        for name in names:
            pts = sorted((num(r[xkey]), num(r['time_s'])) for r in rows
                         if r['suite'] == suite and r['model'] == name and r['status'] == 'ok')
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', linewidth=1, label=name)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('edges E' if suite == 'graph' else 'sequence length T')
        ax.set_ylabel('forward+backward time (s)')
        ax.set_title(f'{suite}: time vs {xkey}')
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'speed.png'), dpi=110)
    plt.close(fig)


LOAD_AT_START = 'n/a'


def main(argv=None):
    global LOAD_AT_START
    try:
        LOAD_AT_START = open('/proc/loadavg').read().split()[0]
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    t0 = time.perf_counter()
    run_graph_suite(args, device, rows)
    run_sequence_suite(args, device, rows)
    if args.compile:
        run_compile_suite(args, device, rows)
    add_ratios(rows)
    write_outputs(args, rows, device, argv, time.perf_counter() - t0)
    print(f"wrote {os.path.join(args.out, 'speed.md')}")


if __name__ == '__main__':
    main()
