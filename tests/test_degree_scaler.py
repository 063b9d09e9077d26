"""The degree scaler of LaplacianDiffusionConv (logarithmic and linear) against a dense float64 reference, on all
three paths."""
import networkx as nx
import pytest
import torch
from torch.func import functional_call

import reference as ref
from pyg_ple import LaplacianDiffusionConv
from pyg_ple.edges import sequence_edge_index

F_IN, C, H = 6, 3, 2


FORMS = [True, 'linear']  # the layer's spellings of the logarithmic and the linear scaler
REF_FORM = {True: 'log', 'linear': 'linear'}


def make_conv(path='propagate', dtype=torch.float64, seed=0, form=True, **kw):
    torch.manual_seed(seed)
    kw.setdefault('heads', H)
    conv = LaplacianDiffusionConv(F_IN, C, degree_scaler=form, fused=(path == 'fused'), **kw).to(dtype)
    conv.fused_min_edges = 0  # the kernel at every size when fused
    with torch.no_grad():  # away from the identity initialisation, so the scaler matters
        conv.deg_coef.copy_(torch.randn_like(conv.deg_coef))
        conv.eta.uniform_(0.5, 1.5)
    return conv


def graph_with_varied_degrees():
    # node 0 has no incoming edge; in-degrees 0..4 otherwise
    ei = ref.random_graph(7, 18, seed=3)
    return ei[:, ei[1] != 0]


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('path', ['propagate', 'fused'])
@pytest.mark.parametrize('add_self_loops', [True, False])
@pytest.mark.parametrize('laplacian_heads,concat', [(None, True), (0, True), (1, True), (1, False)])
def test_sparse_matches_reference(path, add_self_loops, laplacian_heads, concat, form):
    conv = make_conv(path, laplacian_heads=laplacian_heads, concat=concat, add_self_loops=add_self_loops, form=form)
    ei = graph_with_varied_degrees()
    x = torch.randn(7, F_IN, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    deg_ref = conv.deg_coef.detach().clone().requires_grad_()
    out = conv(x, ei)
    expected = ref.reference_learned(conv, x_ref, ei, laplacian_heads=laplacian_heads,
                                     add_self_loops=add_self_loops, concat=concat, deg_coef=deg_ref,
                                     scaler_form=REF_FORM[form])
    torch.testing.assert_close(out, expected)
    w = torch.randn_like(expected)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(conv.deg_coef.grad, deg_ref.grad)


def test_scaler_changes_the_output():
    # guards the reference test: with the scaler on, the output is not that of the plain layer, and the two forms
    # differ from each other
    conv, linear = make_conv(), make_conv(form='linear')
    plain = LaplacianDiffusionConv(F_IN, C, H, fused=False).double()
    plain.load_state_dict(conv.state_dict(), strict=False)
    plain.eta.copy_(conv.eta)
    ei = graph_with_varied_degrees()
    x = torch.randn(7, F_IN, dtype=torch.float64)
    assert not torch.allclose(conv(x, ei), plain(x, ei))
    assert not torch.allclose(conv(x, ei), linear(x, ei))


def test_linear_scaler_is_the_combinatorial_laplacian():
    # s(d_i) = d_i with uniform attention (zero queries) and W_v = I: the update is -eta (D - W) x with D - W
    # networkx's Laplacian of the (undirected) input graph
    G = nx.gnm_random_graph(8, 14, seed=4)
    ei = torch.tensor([[j for i, j in G.edges] + [i for i, j in G.edges],
                       [i for i, j in G.edges] + [j for i, j in G.edges]])
    conv = LaplacianDiffusionConv(4, 4, heads=1, degree_scaler='linear', add_self_loops=False, bias=False,
                                  fused=False).double()
    with torch.no_grad():
        for p in conv.attention.parameters():
            p.zero_()
        conv.lin_value.weight.copy_(torch.eye(4))
        conv.lin_value.bias.zero_()
        conv.deg_coef.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        conv.eta.fill_(0.7)
    x = torch.randn(8, 4, dtype=torch.float64)
    lap = torch.tensor(nx.laplacian_matrix(G, nodelist=range(8)).toarray(), dtype=torch.float64)
    torch.testing.assert_close(conv(x, ei), -0.7 * lap @ x)


def dense_allowed(mask, causal, B, T):
    if mask is None:
        allowed = torch.ones(B, T, T, dtype=torch.bool)
    elif mask.dim() == 2:
        allowed = mask.unsqueeze(1) & mask.unsqueeze(2)
    else:
        allowed = mask.expand(B, T, T).clone()
    if causal:
        allowed &= torch.ones(T, T, dtype=torch.bool).tril()
    return allowed


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('mask_kind,causal', [(None, False), (None, True), ('padding', False),
                                              ('padding', True), ('pairs', False)])
def test_dense_matches_reference(mask_kind, causal, form):
    B, T = 2, 5
    conv = make_conv(laplacian_heads=1, form=form)
    mask = None
    if mask_kind == 'padding':
        mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    elif mask_kind == 'pairs':
        mask = torch.rand(B, T, T, generator=torch.Generator().manual_seed(1)) < 0.6
        mask[0, 2] = False  # a query without keys: zero update
    x = torch.randn(B, T, F_IN, dtype=torch.float64, requires_grad=True)
    deg_ref = conv.deg_coef.detach().clone().requires_grad_()
    out = conv.forward_dense(x, mask=mask, causal=causal)
    allowed = dense_allowed(mask, causal, B, T)
    rows = []
    for b in range(B):
        j, i = allowed[b].nonzero(as_tuple=True)[1], allowed[b].nonzero(as_tuple=True)[0]
        rows.append(ref.reference_learned(conv, x[b], torch.stack([j, i]), laplacian_heads=1,
                                          add_self_loops=False, deg_coef=deg_ref, scaler_form=REF_FORM[form]))
    expected = torch.stack(rows)
    torch.testing.assert_close(out, expected)
    w = torch.randn_like(out)
    g_conv = torch.autograd.grad((out * w).sum(), (x, conv.deg_coef))
    g_ref = torch.autograd.grad((expected * w).sum(), (x, deg_ref))
    for a, b in zip(g_conv, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('causal', [False, True])
def test_three_paths_agree(causal, form):
    B, T = 2, 6
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    ei = sequence_edge_index(T, B, causal=causal)
    dense = make_conv('propagate', form=form).forward_dense(x, causal=causal).reshape(B * T, -1)
    for path in ('propagate', 'fused'):
        conv = make_conv(path, form=form)
        assert conv.takes_kernel(x.reshape(B * T, -1), ei) == (path == 'fused')
        torch.testing.assert_close(conv(x.reshape(B * T, -1), ei), dense)


class DenseCall(torch.nn.Module):
    """``conv.forward_dense`` as a module forward, for ``functional_call``."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x, mask):
        return self.conv.forward_dense(x, mask=mask)


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('path', ['propagate', 'fused', 'dense'])
def test_gradcheck(path, form):
    conv = make_conv('fused' if path == 'fused' else 'propagate', laplacian_heads=1, form=form)
    if path == 'dense':
        module, name = DenseCall(conv), 'conv.deg_coef'
        x = torch.randn(1, 4, F_IN, dtype=torch.float64, requires_grad=True)
        extra = (torch.tensor([[True, True, True, False]]),)
    else:
        module, name = conv, 'deg_coef'
        x = torch.randn(5, F_IN, dtype=torch.float64, requires_grad=True)
        extra = (ref.random_graph(5, 9, seed=2),)
    deg_coef = conv.deg_coef.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, d: functional_call(module, {name: d}, (x,) + extra), (x, deg_coef))


@pytest.mark.parametrize('form', FORMS)
def test_identity_at_initialisation(form):
    torch.manual_seed(0)
    scaled = LaplacianDiffusionConv(F_IN, C, H, degree_scaler=form)
    torch.manual_seed(0)
    plain = LaplacianDiffusionConv(F_IN, C, H)
    ei = graph_with_varied_degrees()
    x = torch.randn(7, F_IN)
    torch.testing.assert_close(scaled(x, ei), plain(x, ei))
    torch.testing.assert_close(scaled.forward_dense(x.unsqueeze(0)), plain.forward_dense(x.unsqueeze(0)))


def test_reset_parameters_and_repr():
    conv = make_conv()
    conv.reset_parameters()
    torch.testing.assert_close(conv.deg_coef.detach(), torch.stack([torch.ones(H * C), torch.zeros(H * C)]).double())
    assert 'degree_scaler=True' in repr(conv)
    assert "degree_scaler='linear'" in repr(make_conv(form='linear'))
    assert 'degree_scaler' not in repr(LaplacianDiffusionConv(F_IN, C, H))
    assert LaplacianDiffusionConv(F_IN, C, H).deg_coef is None
    # 'log' is the logarithmic form's other spelling
    assert LaplacianDiffusionConv(F_IN, C, H, degree_scaler='log').degree_scaler is True


@pytest.mark.parametrize('value,error', [('cubic', ValueError), (1, TypeError), (None, TypeError)])
def test_bad_form_names_the_argument(value, error):
    with pytest.raises(error, match="'degree_scaler'"):
        LaplacianDiffusionConv(F_IN, C, H, degree_scaler=value)


@pytest.mark.parametrize('form', FORMS)
def test_laplacian_rows_sum_to_zero(form):
    # a constant signal is a fixed point of a Laplacian diffusion, whatever the conductance
    conv = make_conv(bias=False, form=form)
    ei = graph_with_varied_degrees()
    x = torch.randn(1, F_IN, dtype=torch.float64).expand(7, F_IN)
    torch.testing.assert_close(conv(x, ei), torch.zeros(7, H * C, dtype=torch.float64))


def test_fixed_graph_raises():
    conv = make_conv()
    ei = graph_with_varied_degrees()
    with pytest.raises(ValueError, match='degree_scaler'):
        conv(torch.randn(7, F_IN, dtype=torch.float64), ei, edge_weight=torch.ones(ei.size(1), dtype=torch.float64))


@pytest.mark.parametrize('scaler', FORMS)
@pytest.mark.parametrize('form', ['sparse', 'dense'])
def test_compile_fullgraph_no_breaks(form, scaler):
    torch._dynamo.reset()
    conv = make_conv(dtype=torch.float32, laplacian_heads=1, add_self_loops=False, form=scaler)
    compiled = torch.compile(conv, fullgraph=True, backend='eager')
    if form == 'sparse':
        x, ei = torch.randn(10, F_IN), ref.random_graph(10, 30, seed=0)
        torch.testing.assert_close(compiled(x, ei), conv(x, ei))
    else:
        x, mask = torch.randn(2, 5, F_IN), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
        torch.testing.assert_close(compiled.forward_dense(x, mask=mask), conv.forward_dense(x, mask=mask))
