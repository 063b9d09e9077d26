"""The layers on every device present: CPU always, CUDA when ``torch.cuda.is_available()``.

Each device-parametrised test compares the device's result with an oracle computed from the formula in float64 on
the CPU (values and gradients), so a CUDA-only defect cannot hide behind a CPU-only reference. Cases that only exist
on a GPU (half-precision kernels, ``torch.compile`` with inductor, the sync debug mode, index arithmetic beyond
2^31 elements) skip on a machine without CUDA; the CPU cases use small graphs.
"""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import traceback
import warnings

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock, full_edge_index, sequence_edge_index
from pyg_ple.ops.edge_softmax import EdgeCSR, edge_softmax_aggregate, edge_softmax_aggregate_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA = 'CUDA is not available (torch.cuda.is_available() is False)'
CUDA = pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA))


@pytest.fixture(params=['cpu', CUDA])
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[CUDA])
def cuda(request) -> torch.device:
    """For the cases that exist on a GPU only."""
    return torch.device(request.param)


# (atol, rtol) against the float64 oracle, for values and for gradients
TOLERANCE = {torch.float64: (1e-10, 1e-8), torch.float32: (2e-5, 1e-4),
             torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 4e-2)}
GRAD_TOLERANCE = {torch.float64: (1e-10, 1e-8), torch.float32: (5e-5, 1e-4),
                  torch.float16: (2e-2, 2e-2), torch.bfloat16: (1.2e-1, 6e-2)}


def assert_close(actual: Tensor, expected: Tensor, tol, msg: str = '') -> None:
    atol, rtol = tol
    torch.testing.assert_close(actual.detach().cpu().double(), expected.detach().cpu().double(), atol=atol,
                               rtol=rtol, msg=lambda m: f'{msg}: {m}')


def kernel_ran(out: Tensor) -> bool:
    """Whether the fused kernel's autograd Function is in ``out``'s graph (the conv took its kernel path)."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if 'EdgeSoftmax' in type(fn).__name__ or 'EdgeSoftmax' in fn.name():
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


# ---------------------------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------------------------
def oracle(q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, num_nodes: int,
           bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``out_i = sum_e alpha_e v_src(e)`` with ``alpha`` the softmax of ``<q_i, k_j>/sqrt(C) + b_e`` over the edges
    ``e`` into ``i``, written with the dense ``[E, N]`` incidence matrix (each duplicate edge its own term)."""
    src, dst = edge_index[0], edge_index[1]
    inc = F.one_hot(dst, num_nodes).to(q.dtype)  # [E, N]
    s = (q[dst] * k[src]).sum(-1) / math.sqrt(q.size(-1))  # [E, H]
    if bias is not None:
        s = s + bias
    into = inc.t().bool().unsqueeze(-1)  # [N, E, 1]
    smax = torch.where(into, s.unsqueeze(0), torch.tensor(-math.inf, dtype=s.dtype)).amax(1)  # [N, H]
    smax = torch.where(torch.isfinite(smax), smax, torch.zeros_like(smax)).detach()
    ex = (s - inc @ smax).exp()
    alpha = ex / (inc @ (inc.t() @ ex))
    out = torch.einsum('en,eh,ehc->nhc', inc, alpha, v[src])
    return out, alpha


def kernel_case(name: str, gen: torch.Generator):
    """(edge_index, num_nodes, with_bias) of a named small graph."""
    n = 12
    if name == 'random':
        ei = torch.randint(0, n, (2, 40), generator=gen)
    elif name == 'duplicates':  # each copy of 3 -> 0 and 5 -> 1 is its own softmax term
        ei = torch.tensor([[3, 3, 3, 4, 5, 5, 6, 0, 7, 2, 2], [0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 4]])
    elif name == 'isolated':  # nodes 8..11 have no incoming edge (zero output, zero gradient)
        ei = torch.stack([torch.randint(0, n, (30,), generator=gen), torch.randint(0, 8, (30,), generator=gen)])
    elif name == 'edge_bias':
        ei = torch.randint(0, n, (2, 40), generator=gen)
    else:
        raise AssertionError(name)
    return ei, n, name == 'edge_bias'


HALF = [pytest.param(torch.float16, id='float16'), pytest.param(torch.bfloat16, id='bfloat16')]


@pytest.mark.parametrize('case', ['random', 'duplicates', 'isolated', 'edge_bias'])
@pytest.mark.parametrize('dtype', [pytest.param(torch.float32, id='float32'),
                                   pytest.param(torch.float64, id='float64'), *HALF])
def test_kernel_matches_oracle(device, dtype, case):
    if dtype in (torch.float16, torch.bfloat16) and device.type != 'cuda':
        pytest.skip('half-precision kernels run on CUDA (the CPU computes them in float32)')
    gen = torch.Generator().manual_seed(7)
    ei, n, with_bias = kernel_case(case, gen)
    H, C = 2, 8
    # inputs rounded to ``dtype`` first, so the oracle sees exactly what the device sees
    base = [0.7 * torch.randn(n, H, C, generator=gen) for _ in range(3)]
    bias = 0.5 * torch.randn(ei.size(1), H, generator=gen) if with_bias else None
    leaves = [t.to(dtype) for t in base] + ([bias.to(dtype)] if with_bias else [])
    w_out = torch.randn(n, H, C, generator=gen)
    w_alpha = torch.randn(ei.size(1), H, generator=gen)

    exact = [t.double().requires_grad_() for t in leaves]
    out_o, alpha_o = oracle(*exact[:3], ei, n, exact[3] if with_bias else None)
    grads_o = torch.autograd.grad((out_o * w_out.double()).sum() + (alpha_o * w_alpha.double()).sum(), exact)
    if case == 'isolated':
        assert out_o[8:].abs().max() == 0

    for name, fn in (('fused', edge_softmax_aggregate), ('reference', edge_softmax_aggregate_reference)):
        inputs = [t.to(device).requires_grad_() for t in leaves]
        kwargs = {'score_bias': inputs[3]} if with_bias else {}
        out, alpha = fn(*inputs[:3], ei.to(device), n, **kwargs)
        assert out.device.type == device.type and out.dtype == dtype and alpha.dtype == dtype, name
        assert_close(out, out_o, TOLERANCE[dtype], f'{name} out')
        assert_close(alpha, alpha_o, TOLERANCE[dtype], f'{name} alpha')
        loss = (out.float() * w_out.to(device)).sum() + (alpha.float() * w_alpha.to(device)).sum()
        grads = torch.autograd.grad(loss, inputs)
        for label, g, g_o in zip('qkvb'[:len(grads)], grads, grads_o, strict=True):
            assert g.device.type == device.type
            assert_close(g, g_o, GRAD_TOLERANCE[dtype], f'{name} grad of {label}')


def test_kernel_reuses_a_csr_built_on_the_device(device):
    gen = torch.Generator().manual_seed(3)
    ei = torch.randint(0, 10, (2, 30), generator=gen).to(device)
    q, k, v = (torch.randn(10, 2, 4, generator=gen).to(device) for _ in range(3))
    csr = EdgeCSR(ei, 10, 10)
    out, alpha = edge_softmax_aggregate(q, k, v, ei, 10, csr=csr)
    expected, expected_alpha = oracle(q.cpu().double(), k.cpu().double(), v.cpu().double(), ei.cpu(), 10)
    assert_close(out, expected, TOLERANCE[torch.float32], 'out')
    assert_close(alpha, expected_alpha, TOLERANCE[torch.float32], 'alpha')


# ---------------------------------------------------------------------------------------------------------------
# The conv and the block
# ---------------------------------------------------------------------------------------------------------------
CONV_CASES = {
    'all-laplacian': dict(heads=2),
    'mixed-heads': dict(heads=3, laplacian_heads=1),
    'mean-heads': dict(heads=2, concat=False),
    'no-self-loops': dict(heads=2, add_self_loops=False),
    'edge_dim': dict(heads=2, edge_dim=3),
}


def conv_inputs(kwargs, device, n=14, e=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    ei = ref.random_graph(n, e, seed=seed)
    if not kwargs.get('add_self_loops', True):  # and node n-1 without incoming edges
        ei = ei[:, ei[1] != n - 1]
    edge_attr = torch.randn(ei.size(1), 3, generator=gen) if 'edge_dim' in kwargs else None
    return x.to(device), ei.to(device), None if edge_attr is None else edge_attr.to(device)


def grads_of(module, x, out, w):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad((out * w).sum(), [x, *params])


@pytest.mark.parametrize('case', list(CONV_CASES))
def test_conv_kernel_path_matches_propagate_and_dense_reference(device, case):
    kwargs = CONV_CASES[case]
    torch.manual_seed(0)
    fused = LaplacianDiffusionConv(6, 4, fused=True, **kwargs).to(device)
    plain = LaplacianDiffusionConv(6, 4, fused=False, **kwargs).to(device)
    plain.load_state_dict(fused.state_dict())
    x, ei, edge_attr = conv_inputs(kwargs, device)
    extra = {} if edge_attr is None else {'edge_attr': edge_attr}
    xs = [x.clone().requires_grad_() for _ in range(2)]
    out_f = fused(xs[0], ei, **extra)
    out_p = plain(xs[1], ei, **extra)
    assert kernel_ran(out_f), 'fused=True did not take the kernel path'
    assert not kernel_ran(out_p)
    assert_close(out_f, out_p, TOLERANCE[torch.float32], 'fused vs propagate')
    w = torch.randn(out_f.shape, device=device)
    for label, g_f, g_p in zip(['x'] + [n for n, p in fused.named_parameters() if p.requires_grad],
                               grads_of(fused, xs[0], out_f, w), grads_of(plain, xs[1], out_p, w), strict=True):
        assert_close(g_f, g_p, GRAD_TOLERANCE[torch.float32], f'grad of {label}')
    if edge_attr is None:  # the dense float64 reference of tests/reference.py, on a CPU copy
        cpu_conv = copy.deepcopy(fused).cpu()
        expected = ref.reference_learned(cpu_conv, x.cpu(), ei.cpu(), laplacian_heads=kwargs.get('laplacian_heads'),
                                         add_self_loops=kwargs.get('add_self_loops', True),
                                         concat=kwargs.get('concat', True))
        assert_close(out_f, expected, TOLERANCE[torch.float32], 'fused vs dense reference')


def test_block_dense_and_sparse_paths_agree_on_sequences(device):
    torch.manual_seed(0)
    B, T, F_ = 2, 7, 8
    block = PLETransformerBlock(F_, 2, laplacian_heads=1).to(device)
    x = torch.randn(B, T, F_, device=device)
    xd, xs = x.clone().requires_grad_(), x.reshape(B * T, F_).clone().requires_grad_()
    dense = block(xd, causal=True)
    sparse = block(xs, sequence_edge_index(T, B, causal=True, device=device)).view(B, T, F_)
    assert_close(dense, sparse, TOLERANCE[torch.float32], 'dense vs sparse')
    w = torch.randn(B, T, F_, device=device)
    g_d = torch.autograd.grad((dense * w).sum(), [xd, *block.parameters()])
    g_s = torch.autograd.grad((sparse * w).sum(), [xs, *block.parameters()])
    assert_close(g_d[0], g_s[0].view(B, T, F_), GRAD_TOLERANCE[torch.float32], 'grad of x')
    for (name, _), a, b in zip(block.named_parameters(), g_d[1:], g_s[1:], strict=True):
        assert_close(a, b, GRAD_TOLERANCE[torch.float32], f'grad of {name}')


def test_block_all_pairs_dense_path_matches_full_edges(device):
    torch.manual_seed(0)
    block = PLETransformerBlock(8, 2, laplacian_heads=1).to(device)
    batch = torch.tensor([0] * 5 + [1] * 5 + [2] * 4, device=device)  # similar sizes: the dense path
    x = torch.randn(batch.numel(), 8, device=device)
    xd, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    dense = block(xd, batch=batch)
    sparse = block(xs, full_edge_index(batch, batch.numel()), batch=batch)
    assert_close(dense, sparse, TOLERANCE[torch.float32], 'all pairs: dense vs edges')
    w = torch.randn(dense.shape, device=device)
    (g_d,), (g_s,) = torch.autograd.grad((dense * w).sum(), [xd]), torch.autograd.grad((sparse * w).sum(), [xs])
    assert_close(g_d, g_s, GRAD_TOLERANCE[torch.float32], 'grad of x')


AUTOCAST = [pytest.param('cpu', torch.bfloat16, id='cpu-bfloat16'),
            pytest.param('cuda', torch.float16, id='cuda-float16', marks=CUDA.marks),
            pytest.param('cuda', torch.bfloat16, id='cuda-bfloat16', marks=CUDA.marks)]


@pytest.mark.parametrize('device_type,dtype', AUTOCAST)
@pytest.mark.parametrize('fused', [True, False])
def test_conv_under_autocast(device_type, dtype, fused):
    device = torch.device(device_type)
    torch.manual_seed(0)
    conv = LaplacianDiffusionConv(16, 8, heads=2, laplacian_heads=1, fused=fused).to(device)
    x = torch.randn(40, 16, device=device)
    ei = ref.random_graph(40, 200, seed=1).to(device)
    expected = conv(x, ei)
    with torch.autocast(device_type, dtype=dtype):
        out = conv(x, ei)
    assert kernel_ran(out) == fused
    assert_close(out, expected, TOLERANCE[dtype], 'autocast vs float32')
    out.float().pow(2).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and bool(torch.isfinite(p.grad).all()), name


@pytest.mark.parametrize('device_type,dtype', AUTOCAST)
def test_block_sequence_under_autocast(device_type, dtype):
    device = torch.device(device_type)
    torch.manual_seed(0)
    block = PLETransformerBlock(16, 2, laplacian_heads=1).to(device)
    x = torch.randn(2, 12, 16, device=device)
    expected = block(x, causal=True)
    with torch.autocast(device_type, dtype=dtype):
        out = block(x, causal=True)
    assert_close(out, expected, (4 * TOLERANCE[dtype][0], 4 * TOLERANCE[dtype][1]), 'autocast vs float32')
    out.float().sum().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in block.parameters() if p.grad is not None)


def test_conv_compiled_with_inductor_matches_eager(cuda):
    # On CPU, tests/test_pyg_integration.py compiles the conv (inductor code generation costs seconds there).
    torch._dynamo.reset()
    torch.manual_seed(0)
    conv = LaplacianDiffusionConv(16, 8, heads=2, laplacian_heads=1, add_self_loops=False).to(cuda)
    x = torch.randn(50, 16, device=cuda)
    ei = ref.random_graph(50, 300, seed=2).to(cuda)
    compiled = torch.compile(conv, fullgraph=True)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_c, out_e = compiled(xc, ei), conv(xe, ei)
    assert kernel_ran(out_e) and not kernel_ran(out_c)  # eager takes the kernel, the compiled graph propagate
    assert_close(out_c, out_e, TOLERANCE[torch.float32], 'compiled vs eager')
    w = torch.randn(out_c.shape, device=cuda)
    for label, a, b in zip(['x'] + [n for n, _ in conv.named_parameters()], grads_of(conv, xc, out_c, w),
                           grads_of(conv, xe, out_e, w), strict=True):
        assert_close(a, b, GRAD_TOLERANCE[torch.float32], f'grad of {label}')


# ---------------------------------------------------------------------------------------------------------------
# Training: host-device syncs, checkpoints across devices
# ---------------------------------------------------------------------------------------------------------------
class GraphModel(torch.nn.Module):
    """One block and a linear read-out per node."""

    def __init__(self, channels: int = 16, classes: int = 3):
        super().__init__()
        self.block = PLETransformerBlock(channels, 2, laplacian_heads=1)
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.head(self.block(x, edge_index))


def record_syncs(phases) -> list[str]:
    """Run each ``(phase, fn)`` with ``torch.cuda.set_sync_debug_mode('warn')``; one line per synchronising CUDA
    call: the phase, the innermost pyg_ple frame and the innermost frame (a call made inside a C++ autograd node is
    reported at ``backward``)."""
    found: list[str] = []
    current = ['']

    def hook(message, category, filename, lineno, file=None, line=None):
        if 'synchroniz' not in str(message):
            return
        stack = traceback.extract_stack()[:-1]
        ours = [f for f in stack if f'{os.sep}pyg_ple{os.sep}' in f.filename]
        where = f'{ours[-1].filename.split(os.sep + "pyg_ple" + os.sep)[-1]}:{ours[-1].lineno} ({ours[-1].name})' \
            if ours else 'outside pyg_ple'
        found.append(f'{current[0]}: {where}; innermost {filename}:{lineno}')

    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = hook
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('warn')
        try:
            for name, fn in phases:
                current[0] = name
                fn()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    torch.cuda.synchronize()
    return found


def test_sync_report_names_phase_and_pyg_ple_frame(monkeypatch):
    # The CUDA test below can only fail on a GPU; its report is checked here with the sync warning simulated.
    modes = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: None)
    monkeypatch.setattr(torch.cuda, 'set_sync_debug_mode', modes.append)
    import pyg_ple.edges as edges

    def sync_inside_pyg_ple():
        warnings.warn('called a synchronizing CUDA operation', UserWarning, stacklevel=1)

    scope = {'sync_inside_pyg_ple': sync_inside_pyg_ple}
    exec(compile('def call():\n    sync_inside_pyg_ple()\n', edges.__file__, 'exec'), scope)  # a pyg_ple frame
    found = record_syncs([('forward', lambda: None), ('backward', scope['call']),
                          ('optimizer', lambda: warnings.warn('unrelated', UserWarning, stacklevel=1))])
    assert modes == ['warn', 'default']
    assert len(found) == 1 and found[0].startswith('backward: edges.py:2 (call)'), found


def test_block_training_step_has_no_host_device_sync(cuda):
    """forward, backward and an Adam step of a block on a fixed graph, after a warm-up step (which builds the
    graph's CSR and runs the value checks once), with no synchronising CUDA call."""
    torch.manual_seed(0)
    model = GraphModel().to(cuda)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(300, 16, device=cuda)
    ei = ref.random_graph(300, 3000, seed=3).to(cuda)
    y = torch.randint(0, 3, (300,), device=cuda)
    state = {}

    def forward():
        opt.zero_grad(set_to_none=True)
        state['loss'] = F.cross_entropy(model(x, ei), y)

    def backward():
        state['loss'].backward()

    for fn in (forward, backward, opt.step):  # warm-up
        fn()
    syncs = record_syncs([('forward', forward), ('backward', backward), ('optimizer', opt.step)])
    for line in syncs:  # benchmarks/gpu_check.sh collects these lines into the results
        print('SYNC', line)
    assert not syncs, f'{len(syncs)} host-device sync(s) in one training step:\n' + '\n'.join(syncs)


class Interrupted(Exception):
    pass


def test_checkpoint_saved_on_device_resumes_on_cpu(device, tmp_path):
    from pyg_ple.bench.training import TrainConfig, fit
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(20, 16, generator=gen), ref.random_graph(20, 60, seed=s),
                torch.randint(0, 3, (20,), generator=gen)) for s in range(3)]
    calls = [0]

    def loss_fn(model, batch):
        x, ei, y = batch
        return F.cross_entropy(model(x, ei), y)

    def interrupted_in_epoch_two(model, batch):
        calls[0] += 1
        if calls[0] > len(batches):  # the first batch of epoch 2, before its optimizer step
            raise Interrupted
        return loss_fn(model, batch)

    path = tmp_path / 'ckpt.pt'
    model = GraphModel()
    with pytest.raises(Interrupted):
        fit(model, batches, TrainConfig(epochs=2, device=str(device), checkpoint_path=path, progress=False),
            interrupted_in_epoch_two)
    assert next(model.parameters()).device.type == device.type
    trained = {k: v.detach().cpu() for k, v in model.state_dict().items()}

    # the weights alone, as plain tensors
    torch.save(model.state_dict(), tmp_path / 'weights.pt')
    state = torch.load(tmp_path / 'weights.pt', map_location='cpu', weights_only=True)
    cpu_model = GraphModel()
    cpu_model.load_state_dict(state)
    x, ei, _ = batches[0]
    model.eval(), cpu_model.eval()
    with torch.no_grad():
        assert_close(cpu_model(x, ei), model(x.to(device), ei.to(device)), TOLERANCE[torch.float32], 'outputs')

    # the training checkpoint (epoch 1 of 2) loads into a CPU model, and training continues there
    resumed = GraphModel()
    fit(resumed, batches, TrainConfig(epochs=1, device='cpu', checkpoint_path=path, resume=True, progress=False),
        loss_fn)  # epoch 1 is done: loads and returns
    for k, v in resumed.state_dict().items():
        assert v.device.type == 'cpu'
        torch.testing.assert_close(v, trained[k], msg=k)
    result = fit(resumed, batches, TrainConfig(epochs=2, device='cpu', checkpoint_path=path, resume=True,
                                               progress=False), loss_fn)
    assert result.resumed_from_epoch == 1 and result.epochs_run == 2
    assert all(math.isfinite(loss) for loss in result.losses)
    assert any(not torch.equal(v, trained[k]) for k, v in resumed.state_dict().items())  # epoch 2 trained


# ---------------------------------------------------------------------------------------------------------------
# Index arithmetic beyond int32
# ---------------------------------------------------------------------------------------------------------------
def rows_oracle(q, k, v, src, dst, rows, w):
    """For the target nodes ``rows``: ``out`` rows and ``d sum(out * w) / d (q, k, v)`` from a float64 loop over
    each target's incoming edges (exact for ``q[rows]``, and for ``k``/``v`` of any source whose out-edges all
    end in ``rows``)."""
    q, k, v = (t.double().requires_grad_() for t in (q, k, v))
    order = torch.argsort(dst, stable=True)
    sorted_dst = dst[order]
    starts = torch.searchsorted(sorted_dst, rows)
    ends = torch.searchsorted(sorted_dst, rows, right=True)
    outs, loss = [], 0.0
    for r, a, b in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
        j = src[order[a:b]]
        s = torch.einsum('hc,ehc->eh', q[r], k[j]) / math.sqrt(q.size(-1))
        alpha = torch.softmax(s, dim=0)
        o = torch.einsum('eh,ehc->hc', alpha, v[j])
        outs.append(o)
        loss = loss + (o * w[r].double()).sum()
    grads = torch.autograd.grad(loss, (q, k, v))
    return torch.stack(outs), grads


def test_kernel_index_arithmetic_beyond_int32(cuda):
    """H * C * E > 2^31: every flat [E, H, C] offset would overflow int32 (the kernel never builds such a tensor,
    but its gathers and sparse products index into [N, H, C] rows for E edges)."""
    H, C, N = 8, 64, 100_000
    E = 2**31 // (H * C) + 200_000
    assert H * C * E > 2**31
    need = 12 * 2**30
    free, _ = torch.cuda.mem_get_info(cuda)
    if free < need:
        pytest.skip(f'needs {need / 2**30:.0f} GiB of free GPU memory ({free / 2**30:.1f} GiB free)')
    gen = torch.Generator(device=cuda).manual_seed(0)
    ei = torch.randint(0, N, (2, E), device=cuda, generator=gen)
    q, k, v = (torch.randn(N, H, C, device=cuda, generator=gen).requires_grad_() for _ in range(3))
    w = torch.randn(N, H, C, device=cuda, generator=gen)
    out, _ = edge_softmax_aggregate(q, k, v, ei, N, need_alpha=False)
    dq, dk, dv = torch.autograd.grad((out * w).sum(), (q, k, v))
    torch.cuda.synchronize()

    src, dst = ei[0].cpu(), ei[1].cpu()
    targets = torch.cat([torch.arange(8), torch.arange(N - 8, N), torch.randint(0, N, (48,))]).unique()
    sources = torch.tensor([0, 1, N // 2, N - 1])
    rows = torch.cat([targets, dst[torch.isin(src, sources)]]).unique()  # every edge out of ``sources`` ends here
    expected, (gq, gk, gv) = rows_oracle(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), src, dst, rows,
                                         w.cpu())
    tol = (1e-4, 1e-4)
    assert_close(out[rows.to(cuda)], expected, tol, 'out')
    assert_close(dq[targets.to(cuda)], gq[targets], tol, 'grad of q')
    assert_close(dk[sources.to(cuda)], gk[sources], tol, 'grad of k')
    assert_close(dv[sources.to(cuda)], gv[sources], tol, 'grad of v')


# ---------------------------------------------------------------------------------------------------------------
# The GPU scripts refuse a machine without CUDA (the CPU smoke run is benchmarks/gpu_check.sh --quick)
# ---------------------------------------------------------------------------------------------------------------
def speed_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('speed_benchmark', os.path.join(ROOT, 'benchmarks', 'speed.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('argv,message', [
    pytest.param(['--device', 'cuda'], '--device cuda: CUDA is not available', id='cuda',
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='a refusal on a machine without CUDA')),
    pytest.param(['--heads-channels', '4y16'], 'expected HxC such as 4x16', id='heads-channels'),
    pytest.param(['--headline', '1e6'], 'expected NxDEG such as 1e6x32', id='headline'),
    pytest.param(['--repeats', '0'], '--repeats must be at least 1', id='repeats')])
def test_speed_benchmark_rejects_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        speed_module().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'speed.py: error: ' in err and message in err, err


def test_speed_headline_ratios_come_from_the_same_run():
    speed = speed_module()
    args = speed.parse_args(['--headline', '1e6x32', '--heads-channels', '4x16', '--device', 'cpu'])
    base = dict(suite='graph', dtype='float32', heads=4, channels=16, N=10**6, degree=32, T='', status='ok')
    rows = [dict(base, model='LDC-fused', time_s=0.4, peak_mb=20.0),
            dict(base, model='TransformerConv', time_s=1.0, peak_mb=100.0),
            dict(base, model='GATConv', time_s=0.3, peak_mb=50.0),
            dict(base, model='LDC-fused', N=10**4, time_s=9.0, peak_mb=9.0)]  # another size: not compared
    seq = dict(suite='sequence', dtype='bfloat16', heads=4, channels=16, N=1024, degree=1024, T=1024, status='ok')
    rows += [dict(seq, model='dense-forward_dense', time_s=1.04, peak_mb=1.0),
             dict(seq, model='sdpa-layer', time_s=1.0, peak_mb=1.0)]
    speed.add_ratios(rows)
    lines = speed.ratio_lines(args, rows)
    assert '| LDC-fused time / TransformerConv time | N=1000000, degree 32, 4x16 | 0.400 |' in lines
    assert '| LDC-fused peak memory / TransformerConv peak memory | N=1000000, degree 32, 4x16 | 0.200 |' in lines
    assert '| LDC-fused time / GATConv time | N=1000000, degree 32, 4x16 | 1.333 |' in lines
    assert '| dense-forward_dense time / sdpa-layer time | T=1024, 4x16, bfloat16 | 1.040 |' in lines


@pytest.mark.slow
def test_speed_budget_lists_what_it_did_not_run(tmp_path):
    speed_module().main(['--quick', '--device', 'cpu', '--max-seconds', '0', '--out', str(tmp_path)])
    md = (tmp_path / 'speed.md').read_text()
    assert 'Suites stopped early (`--max-seconds 0` each); not run: graph 4x16 N=100 deg=4;' in md
    assert 'train laplacian' in md and not (tmp_path / 'speed.png').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without CUDA')
@pytest.mark.slow
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    script = os.path.join(ROOT, 'benchmarks', 'gpu_check.sh')
    env = dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON=sys.executable, PYTHONDONTWRITEBYTECODE='1')
    res = subprocess.run(['bash', script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == ['gpu_check.sh: error: no CUDA device (torch.cuda.is_available() is False); '
                                       '--quick runs the CPU smoke version']
    res = subprocess.run(['bash', script, '--fast'], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and res.stderr.startswith("gpu_check.sh: error: unknown argument '--fast'")
    assert not (tmp_path / 'out').exists()
