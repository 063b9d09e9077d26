"""Forward + backward time and peak memory of pyg-ple's layer against PyG's attention layers, in one run.

Writes ``NAME.csv``, ``NAME.md`` (command, seeds, versions, device, headline ratios) and ``NAME.png`` (time against size)
under ``--out`` (default ``benchmarks/results``; ``NAME`` is ``--name``, default ``speed``). The CSV and the markdown
are rewritten after every measured size, so a run stopped early keeps what it measured.

Suites (``--suites``)
  graph     random graphs (sources and targets uniform, E = N * degree), ``x [N, H*C]``, for each ``--heads-channels``
            H x C (the ``--headline`` size of each first, then the grid cheapest first): LaplacianDiffusionConv through its fused kernel (``fused_min_edges = 0``: the kernel at every size;
            the CSR of the graph is built on the first step and reused, as in full-batch training) and through
            ``propagate`` (``fused=False``), the bare fused kernel (CSR built every step) and a plain gather/softmax/
            scatter kernel on the same q, k, v, PyG TransformerConv / GATConv / GATv2Conv (same heads and channels)
            and GCNConv (H*C output channels), and one copy of an ``[E, H*C]`` tensor (one memory pass).
  sequence  ``x [1, T, H*C]`` under each ``--seq-dtypes`` (a half dtype runs under ``torch.autocast``): the conv's
            dense path (``forward_dense``), the same projections around plain ``scaled_dot_product_attention``
            (``sdpa-layer``), the bare SDPA kernel, and up to ``--sparse-seq-max`` the sparse (fused / reference)
            path over ``sequence_edge_index(T)``. On CUDA with a half dtype also ``[flash]`` rows: the dense path and
            the SDPA layer with SDPA restricted to the flash kernel (an error there means flash did not apply).
  compile   at one graph size: the conv eager (fused kernel, and ``propagate``) and compiled with
            ``torch.compile(fullgraph=True)`` (which traces ``propagate``); first-step compile time.
  train     graph classification on synthetic graphs (PyG's ``FakeDataset``: the label shifts the node features),
            trained with ``pyg_ple.bench.training.fit``: seconds per epoch (mean after the first), peak memory (CUDA)
            and held-out accuracy of the ``laplacian`` and ``transformer`` models and GAT.

Time: best (``time_s``; also the median, ``time_median_s``) of ``--repeats`` runs of one training step (forward,
``sum`` of the output, backward; parameter grads reset to ``None`` before each step) after ``--warmup`` steps. On CUDA
each step is timed between two ``torch.cuda.Event`` records (the GPU's time from the first kernel launch of the step
to the end of its last, idle gaps included); on CPU with ``time.perf_counter``. The best is reported because on a
shared machine interference only ever adds time.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the level before the step; on CPU the same quantity
reconstructed from the PyTorch profiler's allocator events (``profile_memory=True``: every tensor allocation and free
of the step, in time order; peak of the running sum), in a separate step. It counts all tensors the step creates
(activations saved for backward, temporaries, gradients) and excludes inputs and parameters that exist before the
step and non-tensor memory.
A model whose estimated peak exceeds ``--mem-budget-gb`` (default: 85% of the free GPU memory at the start on CUDA,
6 GiB on CPU) is skipped and marked so in the tables.
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import random
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
from pyg_ple.ops.edge_softmax import edge_softmax_aggregate, edge_softmax_aggregate_reference  # noqa: E402

SUITES = ('graph', 'sequence', 'train', 'compile')  # the order they run in
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
# Rough peak of a model, in units of one [E, H*C] float tensor (what it materialises per edge), for the budget.
MATERIALISING = {'copy[E,H*C]': 2, 'LDC-reference': 10, 'reference-kernel': 8, 'TransformerConv': 10, 'GATConv': 6,
                 'GATv2Conv': 10, 'GCNConv': 2, 'sparse-reference': 10}
FIELDS = ['suite', 'model', 'dtype', 'heads', 'channels', 'N', 'degree', 'E', 'T', 'seed', 'time_s', 'time_median_s',
          'peak_mb', 'time_vs_ref', 'mem_vs_ref', 'time_vs_gat', 'time_vs_copy', 'compile_s', 'accuracy',
          'train_loss', 'status']


def parse_size(text: str) -> tuple[int, int]:
    """``'NxDEG'`` (``N`` may be written ``1e6``) -> ``(N, DEG)``."""
    try:
        n, d = text.lower().split('x')
        size = int(float(n)), int(d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxDEG such as 1e6x32, got {text!r}") from None
    if size[0] < 1 or size[1] < 1:
        raise argparse.ArgumentTypeError(f'sizes must be positive, got {text!r}')
    return size


def parse_heads_channels(text: str) -> tuple[int, int]:
    """``'HxC'`` -> ``(heads, channels per head)``."""
    try:
        h, c = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HxC such as 4x16, got {text!r}') from None
    if h < 1 or c < 1:
        raise argparse.ArgumentTypeError(f'heads and channels must be positive, got {text!r}')
    return h, c


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='speed.py', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes, one repeat, suites graph, sequence and train (smoke test)')
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'), help='output folder')
    p.add_argument('--name', default='speed', help='file stem of the outputs: NAME.csv, NAME.md, NAME.png')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--suites', nargs='+', choices=SUITES, default=None,
                   help='default: graph sequence compile (with --quick: graph sequence train)')
    p.add_argument('--nodes', type=float, nargs='+', default=[1e3, 1e4, 1e5], help='graph sizes N')
    p.add_argument('--degrees', type=int, nargs='+', default=[4, 16, 64], help='mean in-degrees')
    p.add_argument('--headline', type=str, default='50000x32',
                   help="'NxDEG' measured in addition to the grid and used for the targets; 'none' to skip")
    p.add_argument('--heads-channels', type=parse_heads_channels, nargs='+', default=[(4, 16)], metavar='HxC',
                   help='heads x channels per head, e.g. 4x16 8x64')
    p.add_argument('--seq', type=int, nargs='+', default=[64, 256, 1024, 4096], help='sequence lengths T')
    p.add_argument('--seq-dtypes', nargs='+', choices=list(DTYPES), default=['float32'],
                   help='sequence suite precisions (half dtypes under torch.autocast)')
    p.add_argument('--sparse-seq-max', type=int, default=4096,
                   help='longest T for the sparse paths of the sequence suite (they attend to all T^2 pairs)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1, help='untimed steps before the timed ones')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--mem-budget-gb', type=float, default=None,
                   help='skip a model whose estimated peak exceeds this (default: 85%% of the free GPU memory on '
                        'CUDA, 6 on CPU)')
    p.add_argument('--compile-size', type=parse_size, default=(10000, 16), help="'NxDEG' of the compile suite")
    p.add_argument('--train-graphs', type=int, default=512, help='train suite: synthetic graphs (80%% train)')
    p.add_argument('--train-epochs', type=int, default=5, help='train suite: epochs')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory steps')
    p.add_argument('--max-seconds', type=float, default=None,
                   help='per suite: start no new size of a suite after this many seconds in it (the sizes left '
                        'are listed in the report)')
    args = p.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError as exc:
        p.error(f'--device: {exc}')
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        p.error(f'--device {args.device}: CUDA is not available (torch {torch.__version__})')
    if args.device.type not in ('cpu', 'cuda'):
        p.error(f'--device must be cpu or cuda, got {args.device}')
    for name in ('repeats', 'threads', 'train_graphs', 'sparse_seq_max'):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ('warmup', 'train_epochs'):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    if any(n < 1 for n in args.nodes) or any(d < 1 for d in args.degrees) or any(t < 1 for t in args.seq):
        p.error('--nodes, --degrees and --seq must be positive')
    try:
        args.headline = None if args.headline.lower() == 'none' else parse_size(args.headline)
    except argparse.ArgumentTypeError as exc:
        p.error(f'--headline: {exc}')
    if args.quick:
        args.nodes, args.degrees, args.seq, args.headline, args.repeats = [100, 300], [4], [16, 32], None, 1
        args.suites = args.suites or ['graph', 'sequence', 'train']
        args.train_graphs, args.train_epochs = 40, 2
    args.suites = args.suites or ['graph', 'sequence', 'compile']
    if args.mem_budget_gb is None:
        args.mem_budget_gb = 6.0 if args.device.type == 'cpu' else \
            0.85 * torch.cuda.mem_get_info(args.device)[0] / 2**30
    return args


# ----------------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------------
def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def free_memory(device):
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def time_step(step, repeats, warmup, device):
    """(best, median) seconds of ``repeats`` steps after ``warmup`` untimed ones (CUDA: event timing)."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
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


def training_step(module, forward, dtype=torch.float32, device_type='cpu'):
    """One step: grads reset, forward (under autocast for a half ``dtype``), ``sum``, backward."""
    params = list(module.parameters()) if module is not None else []

    def step():
        for p in params:
            p.grad = None
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            out = forward()
        out.float().sum().backward()
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


def kernel_conv(f_in, channels, heads, device):
    """The conv with its fused kernel at every graph size (``check_kernel_path`` confirms it on given inputs)."""
    conv = LaplacianDiffusionConv(f_in, channels, heads=heads, fused=True).to(device)
    conv.fused_min_edges = 0
    return conv


def check_kernel_path(conv, x, edge_index):
    if not conv.takes_kernel(x, edge_index):
        raise RuntimeError('the conv would not take its fused kernel here; the LDC-fused row would be mislabelled')


def graph_models(heads, channels, n, edge_index, device):
    """name -> (module, forward closure); the input x is created here."""
    f_in = heads * channels
    x = torch.randn(n, f_in, device=device)
    fused = kernel_conv(f_in, channels, heads, device)
    check_kernel_path(fused, x, edge_index)
    reference = LaplacianDiffusionConv(f_in, channels, heads=heads, fused=False).to(device)
    kin = KernelInputs(n, heads, channels, device)
    models = {
        'LDC-fused': (fused, lambda: fused(x, edge_index)),
        'LDC-reference': (reference, lambda: reference(x, edge_index)),
        'fused-kernel': (kin, lambda: edge_softmax_aggregate(kin.q, kin.k, kin.v, edge_index, n,
                                                             need_alpha=False)[0]),
        'reference-kernel': (kin, lambda: edge_softmax_aggregate_reference(kin.q, kin.k, kin.v, edge_index, n)[0]),
    }
    for name, module in (('TransformerConv', TransformerConv(f_in, channels, heads=heads)),
                         ('GATConv', GATConv(f_in, channels, heads=heads)),
                         ('GATv2Conv', GATv2Conv(f_in, channels, heads=heads)),
                         ('GCNConv', GCNConv(f_in, f_in))):
        module = module.to(device)
        models[name] = (module, lambda m=module: m(x, edge_index))
    return models


def random_graph(n, degree, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, n, (2, n * degree), device=device, generator=g)


def estimate_bytes(name, n, e, heads, channels, itemsize=4):
    """A rough upper bound on a model's peak: what it materialises per edge, plus per-edge scores and node tensors."""
    per_edge = e * heads * channels * itemsize
    return MATERIALISING.get(name, 0) * per_edge + 12 * e * heads * itemsize + 12 * n * heads * channels * itemsize


# ----------------------------------------------------------------------------------------------------------------
# suites
# ----------------------------------------------------------------------------------------------------------------
def measure(rows, base, name, module, fwd, args, device, est_bytes=None, backward=True, dtype=torch.float32):
    row = dict(base, model=name, time_s='', time_median_s='', peak_mb='', status='ok')
    if est_bytes is not None and est_bytes > args.mem_budget_gb * 2**30:
        row['status'] = f'skipped (est. {est_bytes / 2**30:.1f} GiB > budget {args.mem_budget_gb:.1f} GiB)'
        rows.append(row)
        print(f"  {name:26s} {row['status']}", flush=True)
        return row
    try:
        step = training_step(module, fwd, dtype, device.type) if backward else fwd
        row['time_s'], row['time_median_s'] = time_step(step, args.repeats, args.warmup, device)
        if not args.no_memory:
            row['peak_mb'] = peak_memory(step, device) / 2**20
    except torch.cuda.OutOfMemoryError as exc:
        row['status'] = f'out of memory ({str(exc).splitlines()[0][:100]})'
    except Exception as exc:  # noqa: BLE001 - keep going: a failure is a result too
        row['status'] = f'error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ""}'
        traceback.print_exc()
    free_memory(device)
    rows.append(row)
    t = row['time_s']
    print(f"  {name:26s} {t * 1e3 if t != '' else float('nan'):10.2f} ms  "
          f"{row['peak_mb'] if row['peak_mb'] != '' else float('nan'):10.1f} MB  {row['status']}", flush=True)
    return row


class Budget:
    """Wall-clock budget of each suite: sizes not started once it is spent are listed in the report."""

    def __init__(self, seconds):
        self.seconds, self.t0, self.left_out = seconds, time.perf_counter(), []

    def begin_suite(self):
        self.t0 = time.perf_counter()

    def allows(self, label):
        if self.seconds is not None and time.perf_counter() - self.t0 > self.seconds:
            self.left_out.append(label)
            print(f'{label}: not run (--max-seconds {self.seconds:g} spent)', flush=True)
            return False
        return True


def graph_tasks(args):
    """(i, heads, channels, N, degree): the headline size of every head configuration first, then the rest of the
    grid cheapest first, so a time budget drops the most expensive sizes (``i`` seeds the graph)."""
    grid = sorted({(int(n), d) for n in args.nodes for d in args.degrees}, key=lambda s: (s[0] * s[1], s))
    head = [args.headline] if args.headline is not None else []
    sizes = head + [s for s in grid if s not in head]
    tasks = [(i, H, C, n, d) for H, C in args.heads_channels for i, (n, d) in enumerate(sizes)]
    return sorted(tasks, key=lambda t: ((t[3], t[4]) not in head, t[3] * t[4] * t[1] * t[2], t))


def run_graph_suite(args, device, rows, budget, emit):
    for i, H, C, n, d in graph_tasks(args):
        label = f'graph {H}x{C} N={n} deg={d}'
        if not budget.allows(label):
            continue
        seed = args.seed + i
        torch.manual_seed(seed)
        base = dict(suite='graph', dtype='float32', heads=H, channels=C, N=n, degree=d, E=n * d, T='', seed=seed)
        if estimate_bytes('fused-kernel', n, n * d, H, C) > args.mem_budget_gb * 2**30:
            rows.append(dict(base, model='*', status='skipped (graph and node tensors exceed the budget)'))
            continue
        ei = random_graph(n, d, device, seed)
        print(f'{label} E={ei.size(1)}', flush=True)
        if estimate_bytes('copy[E,H*C]', n, n * d, H, C) <= args.mem_budget_gb * 2**30:
            copy_src = torch.randn(n * d, H * C, device=device)
            measure(rows, base, 'copy[E,H*C]', None, lambda src=copy_src: src.clone(), args, device,
                    backward=False)
            del copy_src
        else:
            measure(rows, base, 'copy[E,H*C]', None, None, args, device,
                    est_bytes=estimate_bytes('copy[E,H*C]', n, n * d, H, C))
        for name, (module, fwd) in graph_models(H, C, n, ei, device).items():
            measure(rows, base, name, module, fwd, args, device, estimate_bytes(name, n, n * d, H, C))
        del ei
        free_memory(device)
        emit()


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


def flash_only(fwd):
    """``fwd`` with scaled_dot_product_attention restricted to the flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return fwd()
    return run


def run_sequence_suite(args, device, rows, budget, emit):
    # cheapest first (T^2 * H * C), so a time budget drops the most expensive lengths
    tasks = sorted(((i, H, C, dtype_name, T) for H, C in args.heads_channels for dtype_name in args.seq_dtypes
                    for i, T in enumerate(args.seq)), key=lambda t: (t[4] * t[4] * t[1] * t[2], t))
    for i, H, C, dtype_name, T in tasks:
        f_in = H * C
        dtype = DTYPES[dtype_name]
        label = f'sequence {H}x{C} {dtype_name} T={T}'
        if not budget.allows(label):
            continue
        seed = args.seed + 1000 + i
        torch.manual_seed(seed)
        print(label, flush=True)
        base = dict(suite='sequence', dtype=dtype_name, heads=H, channels=C, N=T, degree=T, E=T * T, T=T,
                    seed=seed)
        x = torch.randn(1, T, f_in, device=device)
        conv_f = kernel_conv(f_in, C, H, device)
        kin = KernelInputs(T, H, C, device)
        sdpa_layer = SDPALayer(conv_f)

        def qkv(kin=kin, T=T, H=H, C=C):
            return [t.view(1, T, H, C).transpose(1, 2) for t in (kin.q, kin.k, kin.v)]

        def run(name, module, fwd, est=None, base=base, dtype=dtype):
            measure(rows, base, name, module, fwd, args, device, est, dtype=dtype)

        run('dense-forward_dense', conv_f, lambda conv=conv_f, x=x: conv.forward_dense(x))
        run('sdpa-layer', sdpa_layer, lambda layer=sdpa_layer, x=x: layer(x))
        run('sdpa-kernel', kin, lambda qkv=qkv: F.scaled_dot_product_attention(*qkv()))
        if device.type == 'cuda' and dtype != torch.float32:
            run('dense-forward_dense[flash]', conv_f, flash_only(lambda conv=conv_f, x=x: conv.forward_dense(x)))
            run('sdpa-layer[flash]', sdpa_layer, flash_only(lambda layer=sdpa_layer, x=x: layer(x)))
        if T <= args.sparse_seq_max:
            conv_r = LaplacianDiffusionConv(f_in, C, heads=H, fused=False).to(device)
            conv_r.load_state_dict(conv_f.state_dict())
            ei = sequence_edge_index(T, device=device)
            xs = x.view(T, f_in)
            check_kernel_path(conv_f, xs, ei)
            run('sparse-fused', conv_f, lambda conv=conv_f, xs=xs, ei=ei: conv(xs, ei),
                estimate_bytes('sparse-fused', T, T * T, H, C))
            run('sparse-reference', conv_r, lambda conv=conv_r, xs=xs, ei=ei: conv(xs, ei),
                estimate_bytes('sparse-reference', T, T * T, H, C))
            del ei
        free_memory(device)
        emit()


def run_compile_suite(args, device, rows, budget, emit):
    """The conv eager (fused kernel; ``propagate``) and under ``torch.compile``, where it traces ``propagate``."""
    n, d = args.compile_size
    H, C = args.heads_channels[0]
    if not budget.allows(f'compile N={n} deg={d}'):
        return
    seed = args.seed + 2000
    torch.manual_seed(seed)
    ei = random_graph(n, d, device, seed)
    x = torch.randn(n, H * C, device=device)
    print(f'compile {H}x{C} N={n} deg={d}', flush=True)
    base = dict(suite='compile', dtype='float32', heads=H, channels=C, N=n, degree=d, E=ei.size(1), T='', seed=seed)
    fused = kernel_conv(H * C, C, H, device)
    check_kernel_path(fused, x, ei)
    reference = LaplacianDiffusionConv(H * C, C, heads=H, fused=False).to(device)
    measure(rows, base, 'LDC-fused', fused, lambda: fused(x, ei), args, device)
    measure(rows, base, 'LDC-reference', reference, lambda: reference(x, ei), args, device)
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True)
    t0 = time.perf_counter()
    try:
        training_step(fused, lambda: compiled(x, ei), device_type=device.type)()
        sync(device)
        measure(rows, dict(base, compile_s=time.perf_counter() - t0), 'LDC+compile', fused, lambda: compiled(x, ei),
                args, device)
    except Exception as exc:  # noqa: BLE001 - a failure is a result too
        rows.append(dict(base, model='LDC+compile', status=f'error: {type(exc).__name__}: {str(exc)[:120]}'))
        print(f'  LDC+compile: compile failed: {exc}', flush=True)
    emit()


def run_train_suite(args, device, rows, budget, emit):
    from torch_geometric.datasets import FakeDataset
    from torch_geometric.loader import DataLoader

    from pyg_ple.bench.models import build_model
    from pyg_ple.bench.training import TrainConfig, fit

    seed = args.seed + 3000
    random.seed(seed)  # FakeDataset draws labels with ``random``
    torch.manual_seed(seed)
    num_classes, features = 4, 16
    data = FakeDataset(num_graphs=args.train_graphs, avg_num_nodes=40, avg_degree=8, num_channels=features,
                       num_classes=num_classes, task='graph')
    split = max(1, int(0.8 * len(data)))
    train_loader = DataLoader(data[:split], batch_size=32, shuffle=True)
    test_loader = DataLoader(data[split:], batch_size=128)
    H, C = args.heads_channels[0]
    for name in ('laplacian', 'transformer', 'gat'):
        label = f'train {name}'
        if not budget.allows(label):
            continue
        print(label, flush=True)
        base = dict(suite='train', model=name, dtype='float32', heads=H, channels=C, N=len(data), degree=8, E='',
                    T='', seed=seed, status='ok')
        try:
            torch.manual_seed(seed)
            model = build_model(name, features, num_classes, hidden=H * C, num_layers=2, heads=H)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            result = fit(model, train_loader, TrainConfig(epochs=args.train_epochs, lr=3e-3, device=str(device),
                                                          seed=seed, progress=False),
                         lambda m, b: F.cross_entropy(m(b), b.y.view(-1)))
            times = [h['time'] for h in result.history]
            base['time_s'] = sum(times[1:]) / len(times[1:]) if len(times) > 1 else (times[0] if times else '')
            base['train_loss'] = result.losses[-1] if result.losses else ''
            if device.type == 'cuda':
                base['peak_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
            model.eval()
            correct = 0
            with torch.no_grad():
                for batch in test_loader:
                    batch = batch.to(device)
                    correct += int((model(batch).argmax(-1) == batch.y.view(-1)).sum())
            base['accuracy'] = correct / (len(data) - split)
        except Exception as exc:  # noqa: BLE001 - a failure is a result too
            base['status'] = f'error: {type(exc).__name__}: {str(exc)[:160]}'
            traceback.print_exc()
        rows.append(base)
        print(f"  {name:26s} {num(base.get('time_s')):8.3f} s/epoch  accuracy {num(base.get('accuracy')):.3f}  "
              f"{base['status']}", flush=True)
        free_memory(device)
        emit()


# ----------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------
def num(v):
    try:
        return float(v) if v not in ('', None) else float('nan')
    except (TypeError, ValueError):
        return float('nan')


def add_ratios(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r['suite'], r['dtype'], r['heads'], r['channels'], r['N'], r['degree'], r['T']),
                          []).append(r)
    for key, rs in groups.items():
        suite = key[0]
        by = {r['model']: r for r in rs}
        ref = by.get({'graph': 'TransformerConv', 'sequence': 'sdpa-layer'}.get(suite))
        gat, copy = by.get('GATConv'), by.get('copy[E,H*C]')
        for r in rs:
            t, m = num(r.get('time_s')), num(r.get('peak_mb'))
            r['time_vs_ref'] = t / num(ref.get('time_s')) if ref else float('nan')
            r['mem_vs_ref'] = m / num(ref.get('peak_mb')) if ref and num(ref.get('peak_mb')) > 0 else float('nan')
            r['time_vs_gat'] = t / num(gat.get('time_s')) if gat else float('nan')
            r['time_vs_copy'] = t / num(copy.get('time_s')) if copy else float('nan')
            if suite == 'compile':
                eager = by.get('LDC-fused')
                r['time_vs_ref'] = t / num(eager.get('time_s')) if eager else float('nan')
            if suite == 'sequence' and r['model'].endswith('[flash]'):
                flash_ref = by.get('sdpa-layer[flash]')
                r['time_vs_ref'] = t / num(flash_ref.get('time_s')) if flash_ref else float('nan')


def fit_exponent(xs, ys):
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0 and math.isfinite(y)]
    if len(pts) < 2:
        return float('nan')
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else float('nan')


def series(rows, suite):
    """(label, rows) per model and configuration of ``suite`` (one line of the plot, one fitted exponent)."""
    out = {}
    for r in rows:
        if r['suite'] != suite or r['model'] == '*':
            continue
        label = f"{r['model']} {r['heads']}x{r['channels']}" + (f" {r['dtype']}" if suite == 'sequence' else '')
        out.setdefault(label, []).append(r)
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


def ratio_lines(args, rows):
    """The headline ratios of this run: the fused conv against TransformerConv and GATConv at the ``--headline``
    size, and the dense path against the SDPA layer at every sequence length."""
    lines = ['| ratio | configuration | measured |', '|---|---|---|']
    if args.headline is not None:
        n, d = args.headline
        for H, C in args.heads_channels:
            fused = [r for r in rows if r['suite'] == 'graph' and r['model'] == 'LDC-fused' and r['N'] == n
                     and r['degree'] == d and r['heads'] == H and r['channels'] == C]
            conf = f'N={n}, degree {d}, {H}x{C}'
            if not fused:
                lines.append(f'| LDC-fused vs TransformerConv / GATConv | {conf} | not measured |')
                continue
            r = fused[0]
            for what, key in (('time / TransformerConv time', 'time_vs_ref'),
                              ('peak memory / TransformerConv peak memory', 'mem_vs_ref'),
                              ('time / GATConv time', 'time_vs_gat')):
                lines.append(f'| LDC-fused {what} | {conf} | {fmt(r[key], ".3f")} |')
    for r in rows:
        if r['suite'] == 'sequence' and r['model'] in ('dense-forward_dense', 'dense-forward_dense[flash]'):
            ref = 'sdpa-layer' + ('[flash]' if r['model'].endswith('[flash]') else '')
            lines.append(f"| {r['model']} time / {ref} time | T={r['T']}, {r['heads']}x{r['channels']}, "
                         f"{r['dtype']} | {fmt(r['time_vs_ref'], '.3f')} |")
    return lines


def versions():
    import numpy
    parts = [f'torch {torch.__version__}', f'torch_geometric {torch_geometric.__version__}',
             f'numpy {numpy.__version__}', f'python {platform.python_version()}']
    if torch.version.cuda:
        parts.append(f'CUDA {torch.version.cuda}')
    if torch.backends.cudnn.is_available():
        parts.append(f'cuDNN {torch.backends.cudnn.version()}')
    try:
        import torch_scatter
        parts.append(f'torch_scatter {torch_scatter.__version__}')
    except ImportError:
        parts.append('torch_scatter not installed')
    return ', '.join(parts)


def device_line(device):
    if device.type != 'cuda':
        return f'- device: {device}'
    p = torch.cuda.get_device_properties(device)
    return (f'- device: {device} ({torch.cuda.get_device_name(device)}, {p.total_memory / 2**30:.0f} GiB, '
            f'compute capability {p.major}.{p.minor})')


def write_table(L, rs, suite):
    if suite == 'compile':
        L += ['| model | HxC | N | degree | time ms | peak MB | time / LDC-fused | compile s | status |',
              '|---|---|---|---|---|---|---|---|---|']
        for r in rs:
            L.append(f"| {r['model']} | {r['heads']}x{r['channels']} | {r['N']} | {r['degree']} | "
                     f"{fmt(num(r.get('time_s')) * 1e3, '.2f')} | {fmt(r.get('peak_mb'), '.1f')} | "
                     f"{fmt(r.get('time_vs_ref'), '.2f')} | {fmt(r.get('compile_s'), '.1f')} | {r['status']} |")
    elif suite == 'train':
        L += ['| model | HxC | graphs | s / epoch | peak MB | final train loss | held-out accuracy | status |',
              '|---|---|---|---|---|---|---|---|']
        for r in rs:
            L.append(f"| {r['model']} | {r['heads']}x{r['channels']} | {r['N']} | {fmt(r.get('time_s'), '.3f')} | "
                     f"{fmt(r.get('peak_mb'), '.1f')} | {fmt(r.get('train_loss'), '.4f')} | "
                     f"{fmt(r.get('accuracy'), '.3f')} | {r['status']} |")
    else:
        ref = 'TransformerConv' if suite == 'graph' else 'SDPA layer'
        L += [f'| HxC | dtype | N | degree | E | T | model | time ms | peak MB | time / {ref} | mem / {ref} | '
              'time / GATConv | time / copy | status |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
        for r in rs:
            L.append(f"| {r['heads']}x{r['channels']} | {r['dtype']} | {r['N']} | {r['degree']} | {r['E']} | "
                     f"{r['T']} | {r['model']} | {fmt(num(r.get('time_s')) * 1e3, '.2f')} | "
                     f"{fmt(r.get('peak_mb'), '.1f')} | {fmt(r.get('time_vs_ref'), '.3f')} | "
                     f"{fmt(r.get('mem_vs_ref'), '.3f')} | {fmt(r.get('time_vs_gat'), '.3f')} | "
                     f"{fmt(r.get('time_vs_copy'), '.1f')} | {r['status']} |")


def write_outputs(args, rows, device, argv, wall, budget, plot_png=False):
    os.makedirs(args.out, exist_ok=True)
    add_ratios(rows)
    path = os.path.join(args.out, args.name)
    with open(path + '.csv', 'w', newline='') as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in r.items()})

    cmd = ' '.join(shlex.quote(a) for a in ['python', 'benchmarks/speed.py'] + list(argv))
    L = ['# pyg-ple speed benchmark', '',
         f'- command: `{cmd}`',
         device_line(device),
         f'- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), torch threads: {torch.get_num_threads()}',
         f'- versions: {versions()}',
         f'- seeds: base {args.seed} (graph size i uses seed+i, sequence seed+1000+i, compile seed+2000, '
         'train seed+3000)',
         f'- time: best of {args.repeats} repeats after {args.warmup} warm-up step(s) (median in the CSV), '
         + ('CUDA events' if device.type == 'cuda' else 'perf_counter')
         + f'; load average at start {LOAD_AT_START}; wall time {wall:.0f} s; memory budget '
         f'{args.mem_budget_gb:.1f} GiB',
         '- LDC-fused is the conv with `fused_min_edges = 0` (its fused kernel at every size; the CSR is cached per '
         '`edge_index` object); LDC-reference is `fused=False` (`propagate`)',
         '- time: one training step (forward, sum, backward). peak: tensor bytes allocated by the step above the '
         'level before it (CUDA: max_memory_allocated; CPU: running sum of the PyTorch profiler allocator events).',
         '- ratios are against TransformerConv and GATConv (graph suite) or the SDPA layer (sequence suite; '
         '`[flash]` rows against `sdpa-layer[flash]`) *in the same run*; time / copy is against one clone of an '
         '[E, heads*C] float tensor in the same run.', '']
    if budget.left_out:
        L += [f'Suites stopped early (`--max-seconds {budget.seconds:g}` each); not run: '
              + '; '.join(budget.left_out), '']
    if any(r['suite'] in ('graph', 'sequence') for r in rows):
        L += ['## Headline ratios', ''] + ratio_lines(args, rows) + ['']
    for suite, title in (('graph', 'Graphs'), ('sequence', 'Sequences'), ('compile', 'torch.compile'),
                         ('train', 'Graph classification (synthetic graphs, `FakeDataset`)')):
        rs = [r for r in rows if r['suite'] == suite]
        if rs:
            L += [f'## {title}', '']
            write_table(L, rs, suite)
            L.append('')
    L += ['## Fitted exponents', '', 'Least-squares slope of log(time) against log(E) (graphs, all N and degrees) '
          'and against log(T) (sequences).', '', '| suite | series | exponent | points |', '|---|---|---|---|']
    for suite, xkey in (('graph', 'E'), ('sequence', 'T')):
        for label, rs in series(rows, suite).items():
            ok = [r for r in rs if r['status'] == 'ok']
            b = fit_exponent([num(r[xkey]) for r in ok], [num(r.get('time_s')) for r in ok])
            L.append(f'| {suite} (vs {xkey}) | {label} | {fmt(b, ".3f")} | {len(ok)} |')
    L.append('')
    if plot_png:
        try:
            plot(rows, path + '.png')
        except ImportError:
            L += ['(no plot: matplotlib is not installed)', '']
    with open(path + '.md', 'w') as fh:
        fh.write('\n'.join(L))


def plot(rows, png):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    configs = sorted({(r['heads'], r['channels']) for r in rows if r['suite'] in ('graph', 'sequence')})
    panels = [(suite, xkey, hc) for suite, xkey in (('graph', 'E'), ('sequence', 'T')) for hc in configs
              if any(r['suite'] == suite and (r['heads'], r['channels']) == hc for r in rows)]
    if not panels:
        return
    cols = len(configs)
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(8.5 * cols, 5 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colours = plt.get_cmap('tab20').colors
    for ax, (suite, xkey, (H, C)) in zip(axes.flat, panels, strict=False):  # spare axes are hidden
        lines = {label: rs for label, rs in series(rows, suite).items()
                 if (rs[0]['heads'], rs[0]['channels']) == (H, C)}
        for i, (label, rs) in enumerate(lines.items()):
            pts = sorted((num(r[xkey]), num(r.get('time_s'))) for r in rs if r['status'] == 'ok')
            if pts:
                half = rs[0]['dtype'] != 'float32'
                ax.plot([p[0] for p in pts], [p[1] for p in pts], '--' if half else '-', color=colours[i % 20],
                        marker='s' if half else 'o', markersize=3, linewidth=1,
                        label=label.replace(f' {H}x{C}', ''))
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('edges E' if suite == 'graph' else 'sequence length T')
        ax.set_ylabel('forward+backward time (s)')
        ax.set_title(f'{suite}, {H} heads x {C} channels: time vs {xkey}')
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(png, dpi=100, bbox_inches='tight')
    plt.close(fig)


LOAD_AT_START = 'n/a'


def main(argv=None):
    global LOAD_AT_START
    try:
        with open('/proc/loadavg') as fh:
            LOAD_AT_START = fh.read().split()[0]
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    rows = []
    t0 = time.perf_counter()
    budget = Budget(args.max_seconds)

    def emit(plot_png=False):
        write_outputs(args, rows, device, argv, time.perf_counter() - t0, budget, plot_png)

    suites = {'graph': run_graph_suite, 'sequence': run_sequence_suite, 'compile': run_compile_suite,
              'train': run_train_suite}
    for name in SUITES:
        if name in args.suites:
            budget.begin_suite()
            suites[name](args, device, rows, budget, emit)
    emit(plot_png=True)
    print(f"wrote {os.path.join(args.out, args.name)}.md, .csv, .png")


if __name__ == '__main__':
    main()
