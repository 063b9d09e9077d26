"""Property-based fuzzing of ``LaplacianDiffusionConv`` and ``PLETransformerBlock`` (hypothesis).

Random batches of small graphs mix every awkward case: graphs with no nodes, one node, no edges, isolated nodes,
self-loops, duplicate edges and directed (one-way) edges; attention logits are scaled to around +-1e4 ("huge") or
+-1e-6 ("tiny"); dtypes are float32, float64 and bfloat16 (CPU). For every example the output must be finite, match
an independent dense float64 reference (``tests/reference.py`` + ``tests/fuzz_reference.py``, which handles edge
multiplicities) within a dtype-dependent tolerance, and give finite gradients.

Every class of invalid input must raise a ``TypeError`` or ``ValueError`` whose message names the argument (NaN/inf
checks are opt-in through ``pyg_ple.finite_checks()``).

Counts (graphs tried by kind, examples, bad-input classes covered) are summed up at the end of the module; the full
table is written only where ``PYG_PLE_FUZZ_COUNTS=PATH`` names a file (the suite writes nothing into the repository):
``PYG_PLE_FUZZ_COUNTS=benchmarks/results/fuzz_counts.md pytest tests/test_fuzz.py`` refreshes the results file. By
default the examples are derandomized (the same on every run, so the suite is stable); ``PYG_PLE_FUZZ=random`` draws
fresh examples and ``PYG_PLE_FUZZ_EXAMPLES=N`` changes how many.
"""
from __future__ import annotations

import collections
import contextlib
import os
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_reference as fref
import reference as ref
import pyg_ple
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock

COUNTS_FILE = os.environ.get('PYG_PLE_FUZZ_COUNTS')  # where to write the counts table (nowhere by default)
EXAMPLES = int(os.environ.get('PYG_PLE_FUZZ_EXAMPLES', '60'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get('PYG_PLE_FUZZ', '') != 'random',
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16}
# max |out - ref| / (1 + max |ref|), per dtype; 'huge' logits turn float rounding of the scores (~1e4 * eps) into
# visible differences of the attention weights, so the float32 bound is looser there. bfloat16 with huge logits is
# only checked for finiteness (its ~3 significant digits make a 1e4 logit uncertain by ~40).
TOL = {('float64', 'normal'): 1e-9, ('float64', 'tiny'): 1e-9, ('float64', 'huge'): 1e-6,
       ('float32', 'normal'): 1e-4, ('float32', 'tiny'): 1e-4, ('float32', 'huge'): 2e-2,
       ('bfloat16', 'normal'): 0.15, ('bfloat16', 'tiny'): 0.15, ('bfloat16', 'huge'): None}
TARGET_LOGIT = {'normal': None, 'huge': 1e4, 'tiny': 1e-6}

COUNTS: collections.Counter = collections.Counter()
BAD_INPUT: dict[str, str] = {}  # class -> 'raises <Error>' | 'GAP: ...'
T0 = time.perf_counter()


# --------------------------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------------------------
@st.composite
def one_graph(draw, max_nodes: int = 7):
    """``(num_nodes, edges)``: a possibly empty graph whose edge list may hold self-loops, duplicates, one-way edges."""
    n = draw(st.integers(0, max_nodes))
    if n == 0:
        return 0, []
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    if pairs and draw(st.booleans()):  # make it undirected (both directions)
        pairs = pairs + [(i, j) for j, i in pairs]
    if pairs and draw(st.booleans()):  # duplicate some edges
        pairs = pairs + draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=4))
    if draw(st.booleans()):  # explicit self-loops
        pairs = pairs + [(i, i) for i in draw(st.lists(st.integers(0, n - 1), max_size=3))]
    return n, pairs


@st.composite
def graph_batch(draw, max_graphs: int = 4):
    """A PyG-style batch: ``(num_nodes, edge_index [2, E], batch [N], graph_ids)`` of 1..max_graphs graphs."""
    graphs = draw(st.lists(one_graph(), min_size=1, max_size=max_graphs))
    src, dst, batch, offset = [], [], [], 0
    for g, (n, pairs) in enumerate(graphs):
        classify(n, pairs)
        src += [offset + j for j, _ in pairs]
        dst += [offset + i for _, i in pairs]
        batch += [g] * n
        offset += n
    COUNTS['batches'] += 1
    COUNTS['mixed batches (>1 graph)'] += len(graphs) > 1
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    return offset, edge_index, torch.tensor(batch, dtype=torch.long)


def classify(n: int, pairs) -> None:
    COUNTS['graphs'] += 1
    if n == 0:
        COUNTS['graph: empty (0 nodes)'] += 1
        return
    if n == 1:
        COUNTS['graph: one node'] += 1
    if not pairs:
        COUNTS['graph: no edges'] += 1
    touched = {j for j, _ in pairs} | {i for _, i in pairs}
    if len(touched) < n:
        COUNTS['graph: isolated nodes'] += 1
    if any(i == j for j, i in pairs):
        COUNTS['graph: self-loops'] += 1
    if len(set(pairs)) < len(pairs):
        COUNTS['graph: duplicate edges'] += 1
    if any((i, j) not in set(pairs) for j, i in pairs):
        COUNTS['graph: directed (one-way) edges'] += 1


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------
def features(n: int, channels: int, seed: int, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, channels, generator=g, dtype=torch.float64)).to(dtype)


def scale_logits(conv, x_in: torch.Tensor, counts: torch.Tensor, magnitude: str) -> None:
    """Scale ``lin_query``/``lin_key`` so that the largest attention logit on the allowed pairs is about the target."""
    target = TARGET_LOGIT[magnitude]
    if target is None:
        return
    current = fref.max_logit(conv, x_in, counts)
    if current <= 0.0:
        return
    s = (target / current) ** 0.5
    with torch.no_grad():
        for lin in (conv.lin_query, conv.lin_key):
            lin.weight.mul_(s)
            if lin.bias is not None:
                lin.bias.mul_(s)
    reached = fref.max_logit(conv, x_in, counts)
    assert abs(reached / target - 1.0) < 5e-2, (reached, target)  # bfloat16 weights round the scale
    COUNTS[f'largest abs logit reached ({magnitude})'] = max(COUNTS.get(f'largest abs logit reached ({magnitude})', 0),
                                                           reached)


def check_output(out: torch.Tensor, expected: torch.Tensor, dtype_name: str, magnitude: str) -> float:
    assert torch.isfinite(out).all(), 'non-finite output'
    assert out.shape == expected.shape
    tol = TOL[(dtype_name, magnitude)]
    if out.numel() == 0:
        return 0.0
    err = float((out.to(torch.float64) - expected).abs().max()) / (1.0 + float(expected.abs().max()))
    if tol is not None:
        assert err <= tol, f'relative error {err:.3g} > {tol:g} ({dtype_name}, {magnitude} logits)'
    return err


def check_gradients(out: torch.Tensor, module: torch.nn.Module, x: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    (out * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), 'non-finite input gradient'
    for name, p in module.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f'non-finite gradient of {name}'
    COUNTS['gradient checks'] += 1


def trace(**example) -> None:
    """With PYG_PLE_FUZZ_TRACE=1 print every example before running it (to find one that kills the process)."""
    if os.environ.get('PYG_PLE_FUZZ_TRACE'):
        print('example', example, flush=True)


def record(kind: str, dtype_name: str, magnitude: str, err: float) -> None:
    COUNTS[f'examples: {kind}'] += 1
    COUNTS[f'dtype: {dtype_name}'] += 1
    COUNTS[f'logits: {magnitude}'] += 1
    key = f'max rel. error {kind} {dtype_name} {magnitude}'
    COUNTS[key] = max(COUNTS.get(key, 0.0), err)


def fixed_reference(conv, x, edge_index, w, normalization):
    if x.size(0) == 0:  # reference.project_qkv cannot view zero rows
        return torch.zeros(0, conv.heads * conv.out_channels, dtype=torch.float64)
    return ref.reference_fixed(conv, x, edge_index, w, normalization)


dtype_st = st.sampled_from(sorted(DTYPES))
magnitude_st = st.sampled_from(['normal', 'huge', 'tiny'])


# --------------------------------------------------------------------------------------------------------------------
# Fuzz: the conv, learned attention
# --------------------------------------------------------------------------------------------------------------------
@FUZZ
@given(graph=graph_batch(), heads=st.integers(1, 3), lap=st.sampled_from(['all', 'none', 'last']),
       concat=st.booleans(), self_loops=st.booleans(), dtype_name=dtype_st, magnitude=magnitude_st,
       seed=st.integers(0, 2**16), step=st.sampled_from([1.0, 0.5, 2.0]))
def test_fuzz_conv_learned(graph, heads, lap, concat, self_loops, dtype_name, magnitude, seed, step):
    n, edge_index, _ = graph
    trace(n=n, edge_index=edge_index.tolist(), heads=heads, lap=lap, concat=concat, self_loops=self_loops,
          dtype=dtype_name, magnitude=magnitude, seed=seed, step=step)
    dtype = DTYPES[dtype_name]
    torch.manual_seed(seed)
    laplacian_heads = {'all': None, 'none': 0, 'last': heads - 1}[lap]
    conv = LaplacianDiffusionConv(5, 3, heads=heads, concat=concat, laplacian_heads=laplacian_heads,
                                  add_self_loops=self_loops, step_size=step)
    with torch.no_grad():
        conv.bias.uniform_(-0.5, 0.5)
    conv = conv.to(dtype)
    x = features(n, 5, seed, dtype)
    counts = fref.edge_counts(edge_index, n, self_loops)
    scale_logits(conv, x, counts, magnitude)
    expected = fref.conv_from_counts(conv, x, counts)
    x.requires_grad_(True)
    out = conv(x, edge_index)
    assert out.dtype == dtype
    err = check_output(out.detach(), expected, dtype_name, magnitude)
    check_gradients(out, conv, x)
    record('conv learned', dtype_name, magnitude, err)


# --------------------------------------------------------------------------------------------------------------------
# Fuzz: the conv on a fixed weighted graph
# --------------------------------------------------------------------------------------------------------------------
@FUZZ
@given(graph=graph_batch(), heads=st.integers(1, 2), normalization=st.sampled_from(['rw', 'sym', 'comb']),
       dtype_name=dtype_st, weights=st.sampled_from(['normal', 'zeros', 'huge', 'tiny']),
       seed=st.integers(0, 2**16))
def test_fuzz_conv_fixed(graph, heads, normalization, dtype_name, weights, seed):
    n, edge_index, _ = graph
    dtype = DTYPES[dtype_name]
    torch.manual_seed(seed)
    conv = LaplacianDiffusionConv(4, 3, heads=heads, normalization=normalization).to(dtype)
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(edge_index.size(1), generator=g, dtype=torch.float64)
    if weights == 'zeros':  # some zero weights (nodes whose in-degree is zero despite incoming edges)
        w = w * (torch.rand(w.shape, generator=g, dtype=torch.float64) < 0.5)
    w = w * {'normal': 1.0, 'zeros': 1.0, 'huge': 1e4, 'tiny': 1e-6}[weights]
    w = w.to(dtype)
    x = features(n, 4, seed, dtype)
    expected = fixed_reference(conv, x, edge_index, w.to(torch.float64), normalization)
    x.requires_grad_(True)
    out = conv(x, edge_index, edge_weight=w)
    # 'comb' with 1e4 weights returns values ~1e4: compare relative to the output scale, as everywhere.
    err = check_output(out.detach(), expected, dtype_name, 'normal')
    check_gradients(out, conv, x)
    COUNTS[f'fixed weights: {weights}'] += 1
    record(f'conv fixed {normalization}', dtype_name, 'normal', err)


# --------------------------------------------------------------------------------------------------------------------
# Fuzz: the block, three paths
# --------------------------------------------------------------------------------------------------------------------
@FUZZ
@given(graph=graph_batch(), heads=st.sampled_from([1, 2]), lap=st.sampled_from(['all', 'none', 'last']),
       path=st.sampled_from(['sparse', 'all-pairs']), self_loops=st.booleans(), dtype_name=dtype_st,
       magnitude=magnitude_st, seed=st.integers(0, 2**16), x_scale=st.sampled_from([1.0, 1e-3, 1e3]))
def test_fuzz_block_graph(graph, heads, lap, path, self_loops, dtype_name, magnitude, seed, x_scale):
    n, edge_index, batch = graph
    dtype = DTYPES[dtype_name]
    torch.manual_seed(seed)
    laplacian_heads = {'all': None, 'none': 0, 'last': heads - 1}[lap]
    block = PLETransformerBlock(4, heads, laplacian_heads=laplacian_heads, mlp_ratio=2.0,
                                add_self_loops=self_loops).eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    block = block.to(dtype)
    x = features(n, 4, seed, dtype, x_scale)
    if path == 'sparse':
        counts = fref.edge_counts(edge_index, n, self_loops)
    else:
        counts = fref.same_graph_counts(batch, n)
    scale_logits(block.conv, fref.layer_norm(block.norm1, x), counts, magnitude)
    expected = fref.block_from_counts(block, x, counts)
    x.requires_grad_(True)
    out = block(x, edge_index) if path == 'sparse' else block(x, batch=batch)
    err = check_output(out.detach(), expected, dtype_name, magnitude)
    check_gradients(out, block, x)
    record(f'block {path}', dtype_name, magnitude, err)


@FUZZ
@given(batch_size=st.integers(1, 3), tokens=st.integers(0, 5), causal=st.booleans(), padded=st.booleans(),
       dtype_name=dtype_st, magnitude=magnitude_st, seed=st.integers(0, 2**16), data=st.data())
def test_fuzz_block_sequence(batch_size, tokens, causal, padded, dtype_name, magnitude, seed, data):
    dtype = DTYPES[dtype_name]
    torch.manual_seed(seed)
    block = PLETransformerBlock(4, 2, laplacian_heads=1, mlp_ratio=2.0).eval().to(dtype)
    pad = None
    if padded:  # arbitrary padding masks, including fully padded sequences
        bits = data.draw(st.lists(st.booleans(), min_size=batch_size * tokens, max_size=batch_size * tokens))
        pad = torch.tensor(bits, dtype=torch.bool).view(batch_size, tokens)
        COUNTS['sequence: fully padded rows'] += int((~pad).all(dim=1).sum()) if tokens else 0
    x = features(batch_size * tokens, 4, seed, dtype)
    counts = fref.sequence_counts(batch_size, tokens, pad, causal)
    scale_logits(block.conv, fref.layer_norm(block.norm1, x), counts, magnitude)
    expected = fref.block_from_counts(block, x, counts).view(batch_size, tokens, 4)
    x = x.view(batch_size, tokens, 4).requires_grad_(True)
    out = block(x, mask=pad, causal=causal)
    err = check_output(out.detach(), expected, dtype_name, magnitude)
    check_gradients(out, block, x)
    record('block sequence', dtype_name, magnitude, err)


# --------------------------------------------------------------------------------------------------------------------
# Invalid input: every class raises a clear TypeError / ValueError naming the argument
# --------------------------------------------------------------------------------------------------------------------
def _conv(**kw):
    return LaplacianDiffusionConv(4, 3, heads=2, **kw)


def _block():
    return PLETransformerBlock(4, 2)


X = torch.randn(3, 4)
EI = torch.tensor([[0, 1], [1, 2]])
W = torch.tensor([1.0, 2.0])

BAD = {
    # name: (call, expected exception, word the message must contain)
    'x integer dtype': (lambda: _conv()(X.long(), EI), TypeError, 'x'),
    'x wrong feature count': (lambda: _conv()(torch.randn(3, 5), EI), ValueError, 'x'),
    'x 1-D': (lambda: _conv()(torch.randn(4), EI), ValueError, 'x'),
    'edge_index not a tensor': (lambda: _conv()(X, EI.tolist()), TypeError, 'edge_index'),
    'edge_index float dtype': (lambda: _conv()(X, EI.float()), TypeError, 'edge_index'),
    'edge_index bool dtype': (lambda: _conv()(X, EI.bool()), TypeError, 'edge_index'),
    'edge_index shape [3, E]': (lambda: _conv()(X, torch.zeros(3, 2, dtype=torch.long)), ValueError, 'edge_index'),
    'edge_index 1-D': (lambda: _conv()(X, torch.zeros(4, dtype=torch.long)), ValueError, 'edge_index'),
    'edge_index out of range': (lambda: _conv()(X, torch.tensor([[0, 3], [1, 2]])), ValueError, 'edge_index'),
    'edge_index negative': (lambda: _conv()(X, torch.tensor([[0, -1], [1, 2]])), ValueError, 'edge_index'),
    'sparse adjacency wrong size': (lambda: _conv()(X, torch.eye(4).to_sparse()), ValueError, 'edge_index'),
    'edge_weight negative': (lambda: _conv()(X, EI, edge_weight=torch.tensor([1.0, -1.0])), ValueError,
                             'edge_weight'),
    'edge_weight wrong length': (lambda: _conv()(X, EI, edge_weight=torch.ones(3)), ValueError, 'edge_weight'),
    'edge_weight 2-D': (lambda: _conv()(X, EI, edge_weight=torch.ones(2, 1)), ValueError, 'edge_weight'),
    'edge_weight integer dtype': (lambda: _conv()(X, EI, edge_weight=torch.ones(2, dtype=torch.long)), TypeError,
                                  'edge_weight'),
    'edge_weight with sparse adjacency': (lambda: _conv()(X, torch.eye(3).to_sparse(), edge_weight=W), ValueError,
                                          'edge_weight'),
    'edge_attr missing (edge_dim set)': (lambda: _conv(edge_dim=2)(X, EI), ValueError, 'edge_attr'),
    'edge_attr wrong length': (lambda: _conv(edge_dim=2)(X, EI, edge_attr=torch.randn(3, 2)), ValueError,
                               'edge_attr'),
    'dense x 2-D': (lambda: _conv().forward_dense(X), ValueError, 'x'),
    'dense mask not bool': (lambda: _conv().forward_dense(X.view(1, 3, 4), mask=torch.ones(1, 3)), TypeError, 'mask'),
    'dense mask wrong shape': (lambda: _conv().forward_dense(X.view(1, 3, 4), mask=torch.ones(2, 5, dtype=torch.bool)),
                               ValueError, 'mask'),
    'ctor: heads < 1': (lambda: LaplacianDiffusionConv(4, 3, heads=0), ValueError, 'heads'),
    'ctor: laplacian_heads > heads': (lambda: LaplacianDiffusionConv(4, 3, heads=2, laplacian_heads=3), ValueError,
                                      'laplacian_heads'),
    'ctor: unknown normalization': (lambda: LaplacianDiffusionConv(4, 3, normalization='lap'), ValueError,
                                    'normalization'),
    'ctor: dropout >= 1': (lambda: LaplacianDiffusionConv(4, 3, dropout=1.0), ValueError, 'dropout'),
    'ctor: channels not a multiple of heads': (lambda: PLETransformerBlock(5, 2), ValueError, 'channels'),
    'block: x integer dtype': (lambda: _block()(X.long(), EI), TypeError, 'x'),
    'block: x 4-D': (lambda: _block()(torch.randn(1, 1, 3, 4)), ValueError, 'x'),
    'block: edge_index out of range': (lambda: _block()(X, torch.tensor([[0, 5], [1, 2]])), ValueError, 'edge_index'),
    'block: batch wrong length (all-pairs)': (lambda: _block()(X, batch=torch.zeros(2, dtype=torch.long)), ValueError,
                                              'batch'),
    'block: sequence with edge_index': (lambda: _block()(X.view(1, 3, 4), EI), ValueError, 'edge_index'),
    'block: mask on a graph': (lambda: _block()(X, EI, mask=torch.ones(3, dtype=torch.bool)), ValueError, 'mask'),
    'block: sequence mask not bool': (lambda: _block()(X.view(1, 3, 4), mask=torch.ones(1, 3)), TypeError, 'mask'),
}

BAD.update({
    'x not a tensor': (lambda: _conv()(X.tolist(), EI), TypeError, 'x'),
    'x dtype differs from the parameters': (lambda: _conv()(X.double(), EI), TypeError, 'x'),
    'conv: x 3-D on the graph path': (lambda: _conv()(torch.randn(3, 2, 4), EI), ValueError, 'x'),
    'edge_attr wrong feature size': (lambda: _conv(edge_dim=2)(X, EI, edge_attr=torch.randn(2, 5)), ValueError,
                                     'edge_attr'),
    'NaN in x when a check is asked for': (lambda: _nan_call('x'), ValueError, 'x'),
    'NaN in edge_weight when a check is asked for': (lambda: _nan_call('edge_weight'), ValueError, 'edge_weight'),
    'block: x wrong feature count': (lambda: _block()(torch.randn(3, 5), EI), ValueError, 'x'),
    'block: batch unsorted (all-pairs)': (lambda: _block()(X, batch=torch.tensor([1, 0, 0])), ValueError, 'batch'),
    'block: batch float dtype (all-pairs)': (lambda: _block()(X, batch=torch.zeros(3)), TypeError, 'batch'),
    'block: batch wrong length (sparse path)': (lambda: _block()(X, EI, batch=torch.zeros(2, dtype=torch.long)),
                                                ValueError, 'batch'),
    'block: edge between two graphs of batch (sparse path)': (lambda: _block()(X, EI, batch=torch.tensor([0, 0, 1])),
                                                              ValueError, 'edge_index'),
    'edge_attr without edge_dim': (lambda: _conv()(X, EI, edge_attr=torch.randn(2, 2)), ValueError, 'edge_attr'),
    'edge_attr together with edge_weight': (lambda: _conv(edge_dim=2)(X, EI, edge_weight=W,
                                                                      edge_attr=torch.randn(2, 2)),
                                            ValueError, 'edge_attr'),
    'edge_attr 1-D with edge_dim 2': (lambda: _conv(edge_dim=2)(X, EI, edge_attr=torch.randn(2)), ValueError,
                                      'edge_attr'),
    'edge_attr integer dtype': (lambda: _conv(edge_dim=1)(X, EI, edge_attr=torch.ones(2, 1, dtype=torch.long)),
                                TypeError, 'edge_attr'),
    'NaN in edge_attr when a check is asked for': (lambda: _nan_call('edge_attr'), ValueError, 'edge_attr'),
    'ctor: flow target_to_source': (lambda: LaplacianDiffusionConv(4, 3, flow='target_to_source'), ValueError,
                                    'flow'),
    'ctor: step_size < 0': (lambda: LaplacianDiffusionConv(4, 3, step_size=-1.0), ValueError, 'step_size'),
    'full_edge_index: num_nodes differs from batch': (lambda: pyg_ple.full_edge_index(torch.zeros(3, dtype=torch.long),
                                                                                      num_nodes=4),
                                                      ValueError, 'num_nodes'),
    'candidate native: edge_index out of range': (lambda: pyg_ple.candidate_edge_index('native', edge_index=EI,
                                                                                       num_nodes=2),
                                                  ValueError, 'edge_index'),
})


def _nan_call(which: str):
    """Call the conv with a NaN in ``which`` inside ``pyg_ple.finite_checks()`` (the opt-in NaN/inf check)."""
    conv = _conv()
    x, w = X.clone(), W.clone()
    with pyg_ple.finite_checks():
        if which == 'x':
            x[1, 2] = float('nan')
            return conv(x, EI)
        if which == 'edge_attr':
            return _conv(edge_dim=1)(x, EI, edge_attr=torch.tensor([[1.0], [float('nan')]]))
        w[0] = float('nan')
        return conv(x, EI, edge_weight=w)


@pytest.mark.parametrize('name', sorted(BAD))
def test_invalid_input_raises_clear_error(name):
    call, error, word = BAD[name]
    with pytest.raises(error) as info:
        call()
    assert f"'{word}'" in str(info.value), f'the message should name {word!r}: {info.value}'
    BAD_INPUT[name] = f'raises {error.__name__}'


def test_empty_batch_all_pairs():
    """A batch with no nodes through the block's all-pairs path (valid input) gives an empty output (was a crash)."""
    block = _block()
    out = block(torch.randn(0, 4), batch=torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 4)
    BAD_INPUT['(valid) empty batch, block all-pairs path'] = 'works'


# --------------------------------------------------------------------------------------------------------------------
# Counts: summed up at the end of the module; the table goes to $PYG_PLE_FUZZ_COUNTS when set
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module', autouse=True)
def _report_counts(request):
    yield
    if not COUNTS:
        return
    lines = ['# Fuzz counts (tests/test_fuzz.py)', '',
             f'hypothesis max_examples={EXAMPLES} per property, derandomized='
             f"{os.environ.get('PYG_PLE_FUZZ', '') != 'random'}; {time.perf_counter() - T0:.1f} s for the module.",
             '', '## Random inputs', '', '| what | count |', '|---|---|']
    for key in sorted(k for k in COUNTS if not k.startswith('max rel')):
        lines.append(f'| {key} | {COUNTS[key]} |')
    lines += ['', '## Largest error vs the dense float64 reference (max |out - ref| / (1 + max |ref|))', '',
              '| case | error |', '|---|---|']
    for key in sorted(k for k in COUNTS if k.startswith('max rel')):
        lines.append(f'| {key[len("max rel. error "):]} | {COUNTS[key]:.2e} |')
    covered = sum(v.startswith('raises') for v in BAD_INPUT.values())
    lines += ['', f'## Invalid input: {len(BAD_INPUT)} classes tried, {covered} raise a clear TypeError/ValueError', '',
              '| class | result |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in sorted(BAD_INPUT.items())]
    text = '\n'.join(lines) + '\n'
    reporter = request.config.pluginmanager.get_plugin('terminalreporter')
    capture = request.config.pluginmanager.get_plugin('capturemanager')
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line('')
            reporter.write_line(f"fuzz: {COUNTS['graphs']} graphs in {COUNTS['batches']} batches, "
                                f"{COUNTS['gradient checks']} gradient checks; invalid input: {len(BAD_INPUT)} classes, "
                                f"{covered} raise clearly, {sum(v.startswith('GAP') for v in BAD_INPUT.values())} gaps"
                                + (f' (table: {COUNTS_FILE})' if COUNTS_FILE else ''))
    if COUNTS_FILE and len(BAD_INPUT) == len(BAD) + 1:  # the whole module ran: record it where asked
        path = Path(COUNTS_FILE)
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_text(text)
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# Regression cases found by the fuzzer
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('fused', [False, True])
def test_duplicate_edges_with_self_loops_backward(fused):
    """Found by test_fuzz_conv_learned: duplicate edges + add_self_loops broke the fused backward (shape mismatch in
    fused.py backward on small graphs, heap corruption / SIGABRT on larger ones); the reference path is fine."""
    conv = LaplacianDiffusionConv(2, 1, heads=1, fused=fused).double()
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    edge_index = torch.tensor([[0, 0, 0], [1, 1, 1]])
    out = conv(x, edge_index)
    expected = fref.conv_from_counts(conv, x.detach(), fref.edge_counts(edge_index, 2, True))
    assert torch.allclose(out.detach(), expected, atol=1e-10)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
