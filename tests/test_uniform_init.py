"""``uniform_init``: attention that starts uniform over each node's keys (``W_q = 0``), so that a new Laplacian head is
the random-walk Laplacian of the graph; checked against networkx and dense float64 math on the fused, propagate and
dense paths, gradients included."""
import math

import networkx as nx
import pytest
import torch

import reference as ref
from pyg_ple import LaplacianDiffusionConv, PLETransformerBlock

F_IN, C, H, N = 6, 3, 2, 9


def make_conv(path='propagate', **kw):
    torch.manual_seed(0)
    conv = LaplacianDiffusionConv(F_IN, C, heads=H, uniform_init=True, fused=(path == 'fused'), **kw).double()
    conv.fused_min_edges = 0  # the kernel at every size when fused
    return conv


def graph():
    """A directed graph with one self-loop (removed and re-added) and a node without incoming edges."""
    ei = ref.random_graph(N - 1, 18, seed=3, allow_self_loops=True)
    return torch.cat([ei, torch.tensor([[N - 1], [0]])], dim=1)  # node N-1 sends but receives nothing


def random_walk_laplacian(edge_index):
    """``I - D^-1 W`` of the graph with one self-loop per node (``W[i, j] = 1`` for ``j -> i``), from networkx."""
    g = nx.DiGraph()
    g.add_nodes_from(range(N))
    g.add_edges_from((j, i) for j, i in edge_index.t().tolist())
    g.add_edges_from((i, i) for i in range(N))
    w = torch.tensor(nx.to_numpy_array(g, nodelist=range(N)), dtype=ref.DTYPE).t()  # networkx: A[u, v] for u -> v
    return torch.eye(N, dtype=ref.DTYPE) - w / w.sum(dim=1, keepdim=True)


def differentiable_reference(conv, x, mask):
    """The Laplacian layer in float64 from the conv's own parameters, differentiable in them: ``eta (A V - V)``,
    ``A = softmax(q k^T / sqrt(C))`` over ``mask``, plus the output bias."""
    q = (x @ conv.lin_query.weight.t() + conv.lin_query.bias).view(N, H, C)
    k = (x @ conv.lin_key.weight.t() + conv.lin_key.bias).view(N, H, C)
    v = (x @ conv.lin_value.weight.t() + conv.lin_value.bias).view(N, H, C)
    scores = torch.einsum('ihc,jhc->hij', q, k) / math.sqrt(C)
    a = ref.masked_softmax(scores, mask.unsqueeze(0))
    return (conv.eta.view(1, H, 1) * (torch.einsum('hij,jhc->ihc', a, v) - v)).reshape(N, H * C) + conv.bias


@pytest.mark.parametrize('path', ['fused', 'propagate'])
@pytest.mark.parametrize('degree_scaler', [False, True])
def test_a_new_layer_is_the_random_walk_laplacian_of_the_graph(path, degree_scaler):
    conv = make_conv(path, degree_scaler=degree_scaler)
    assert conv.lin_query.weight.abs().sum() == 0 and conv.lin_query.bias.abs().sum() == 0
    ei, x = graph(), torch.randn(N, F_IN, dtype=torch.float64)
    out, (att_ei, alpha) = conv(x, ei, return_attention_weights=True)
    v = ref.linear(conv.lin_value, x).view(N, H, C)
    want = -torch.einsum('ij,jhc->ihc', random_walk_laplacian(ei), v).reshape(N, H * C)
    torch.testing.assert_close(out, want)
    in_degree = torch.bincount(att_ei[1], minlength=N).to(alpha.dtype)
    torch.testing.assert_close(alpha, (1 / in_degree[att_ei[1]]).unsqueeze(1).expand(-1, H))


def test_the_dense_path_starts_uniform_over_the_allowed_keys():
    conv = make_conv()
    ei, x = graph(), torch.randn(N, F_IN, dtype=torch.float64)
    allowed = ref.edge_mask(ei[:, ei[0] != ei[1]], N, add_self_loops=True)
    out = conv.forward_dense(x.unsqueeze(0), mask=allowed.unsqueeze(0)).squeeze(0)
    v = ref.linear(conv.lin_value, x).view(N, H, C)
    torch.testing.assert_close(out, -torch.einsum('ij,jhc->ihc', random_walk_laplacian(ei), v).reshape(N, H * C))


@pytest.mark.parametrize('path', ['fused', 'propagate', 'dense'])
def test_the_queries_learn_from_zero_with_the_gradients_of_the_reference(path):
    """W_q = 0 is not a fixed point: its gradient (and every other) equals the dense reference's."""
    conv = make_conv('fused' if path == 'fused' else 'propagate')
    ei, x = graph(), torch.randn(N, F_IN, dtype=torch.float64)
    mask = ref.edge_mask(ei[:, ei[0] != ei[1]], N, add_self_loops=True)
    seed = torch.randn(N, H * C, dtype=torch.float64)
    out = conv.forward_dense(x.unsqueeze(0), mask=mask.unsqueeze(0)).squeeze(0) if path == 'dense' else conv(x, ei)
    got = torch.autograd.grad((out * seed).sum(), list(conv.parameters()))
    want = torch.autograd.grad((differentiable_reference(conv, x, mask) * seed).sum(), list(conv.parameters()),
                               allow_unused=True)
    assert got[[n for n, _ in conv.named_parameters()].index('attention.lin_query.weight')].abs().max() > 1e-6
    for (name, _), g, w in zip(conv.named_parameters(), got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, msg=name)


@pytest.mark.parametrize('path', ['fused', 'propagate'])
def test_edge_terms_in_the_score_do_not_break_the_uniform_start(path):
    """The edge term ``<q_i, e_ij>`` is zero with the queries, so edge features leave a new layer uniform."""
    conv = make_conv(path, edge_dim=2)
    ei, x = graph(), torch.randn(N, F_IN, dtype=torch.float64)
    edge_attr = torch.randn(ei.size(1), 2, dtype=torch.float64)
    out = conv(x, ei, edge_attr=edge_attr)
    v = ref.linear(conv.lin_value, x).view(N, H, C)
    torch.testing.assert_close(out, -torch.einsum('ij,jhc->ihc', random_walk_laplacian(ei), v).reshape(N, H * C))


def test_reset_parameters_restarts_uniform_and_the_option_is_checked():
    conv = make_conv()
    with torch.no_grad():
        conv.lin_query.weight.normal_()
    conv.reset_parameters()
    assert conv.lin_query.weight.abs().sum() == 0 and 'uniform_init=True' in repr(conv)
    assert 'uniform_init' not in repr(LaplacianDiffusionConv(F_IN, C, heads=H))
    with pytest.raises(TypeError, match="'uniform_init' must be a bool"):
        LaplacianDiffusionConv(F_IN, C, heads=H, uniform_init=1)
    block = PLETransformerBlock(8, 2, uniform_init=True)
    assert block.conv.lin_query.weight.abs().sum() == 0 and 'uniform_init=True' in repr(block)
    with pytest.raises(ValueError, match="'uniform_init' and 'ple_init'"):
        PLETransformerBlock(8, 2, uniform_init=True, ple_init=True)


@pytest.mark.slow
def test_the_graph_models_and_the_command_pass_it_on(tmp_path, capsys):
    from pyg_ple.bench.cli import build_parser, main, validate_bench_args
    from pyg_ple.bench.models import build_model
    model = build_model('laplacian', 5, 2, hidden=8, heads=2, num_layers=2, uniform_init=True)
    assert all(block.conv.lin_query.weight.abs().sum() == 0 for block in model.transformer.blocks)
    cfg = validate_bench_args(build_parser().parse_args(['bench', '--uniform-init', '--out', str(tmp_path / 'o')]))
    assert cfg.hparams['uniform_init'] is True
    assert 'uniform_init' not in validate_bench_args(build_parser().parse_args(['bench', '--out',
                                                                                 str(tmp_path / 'p')])).hparams
    with pytest.raises(SystemExit) as e:
        main(['bench', '--uniform-init', '--ple-init', '--out', str(tmp_path / 'q')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and '--uniform-init' in err
