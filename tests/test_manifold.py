"""PLEEmbedding: the scikit-learn API on a small point cloud, and the PLE-derived block initialisation."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import check_estimator

from pyg_ple import PLETransformerBlock
from pyg_ple.experiments.manifold import PLEEmbedding, diffusion_graph, ple_init_


@pytest.fixture
def cloud():
    X, y = make_blobs(n_samples=120, n_features=6, centers=3, random_state=0)
    return X, y


def test_fit_transform_shape_and_attributes(cloud):
    X, _ = cloud
    est = PLEEmbedding(n_components=3, n_neighbors=8, n_steps=5)
    Z = est.fit_transform(X)
    assert Z.shape == (120, 3) and np.isfinite(Z).all()
    assert est.n_features_in_ == 6 and est.n_neighbors_ == 8
    assert len(est.steps_) == 5 and len(est.whitening_) == 5
    A = est.affinity_matrix_
    assert A.shape == (120, 120)
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0)
    # whitened: zero mean, identity covariance
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(Z, rowvar=False, bias=True), np.eye(3), atol=1e-8)
    assert list(est.get_feature_names_out()) == ['pleembedding0', 'pleembedding1', 'pleembedding2']


def test_get_set_params_and_clone():
    est = PLEEmbedding(n_components=2, n_neighbors=5, n_steps=3, step_size=0.5, graph='attention',
                       init='random', whiten=False, random_state=3)
    p = est.get_params()
    assert p == {'n_components': 2, 'n_neighbors': 5, 'n_steps': 3, 'step_size': 0.5, 'graph': 'attention',
                 'init': 'random', 'whiten': False, 'random_state': 3}
    assert clone(est).get_params() == p
    est.set_params(n_steps=7)
    assert est.n_steps == 7


@pytest.mark.parametrize('graph', ['knn', 'attention'])
@pytest.mark.parametrize('init', ['pca', 'random'])
def test_transform_of_training_points_equals_fit_transform(cloud, graph, init):
    X, _ = cloud
    est = PLEEmbedding(graph=graph, init=init, random_state=0)
    Z = est.fit_transform(X)
    np.testing.assert_allclose(est.transform(X), Z, atol=1e-8)
    Znew = est.transform(X[:5] + 0.01)
    assert Znew.shape == (5, 2) and np.isfinite(Znew).all()


def test_deterministic_and_seeded(cloud):
    X, _ = cloud
    a = PLEEmbedding(init='random', random_state=1).fit_transform(X)
    b = PLEEmbedding(init='random', random_state=1).fit_transform(X)
    c = PLEEmbedding(init='random', random_state=2).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_zero_steps_is_whitened_pca(cloud):
    X, _ = cloud
    Z = PLEEmbedding(n_steps=0).fit_transform(X)
    from sklearn.decomposition import PCA
    P = PCA(2, whiten=True).fit_transform(X)
    # same subspace: an orthogonal 2x2 map relates them
    M, *_ = np.linalg.lstsq(P, Z, rcond=None)
    np.testing.assert_allclose(P @ M, Z, atol=1e-6)


def test_no_whitening_contracts_towards_mean():
    X = np.random.default_rng(0).normal(size=(120, 6))  # one connected cloud (blobs keep their cluster means)
    est = PLEEmbedding(n_steps=10, whiten=False).fit(X)
    states = est.steps_ + [est.embedding_]
    spread = [np.linalg.norm(s - s.mean(0)) for s in states]
    # a directed k-NN graph is not doubly stochastic, so single steps may not contract; many steps do
    assert spread[-1] < 0.5 * spread[0]


def test_separates_blobs(cloud):
    X, y = cloud
    from sklearn.metrics import silhouette_score
    assert silhouette_score(PLEEmbedding().fit_transform(X), y) > 0.5


def test_diffusion_graph_rows():
    dist = np.array([[0.0, 1.0, 2.0], [0.0, 0.5, 3.0]])
    ind = np.array([[0, 1, 2], [1, 0, 2]])
    for g in ('knn', 'attention'):
        A = diffusion_graph(dist, ind, 3, g).toarray()
        np.testing.assert_allclose(A.sum(1), 1.0)
    A = diffusion_graph(dist, ind, 3, 'attention').toarray()
    assert A[0, 0] > A[0, 1] > A[0, 2]


def test_parameter_errors(cloud):
    X, _ = cloud
    with pytest.raises(ValueError, match='graph'):
        PLEEmbedding(graph='nope').fit(X)
    with pytest.raises(ValueError, match="needs graph='attention'"):
        PLEEmbedding(n_neighbors=None).fit(X)
    with pytest.raises(ValueError, match='feature'):
        PLEEmbedding(n_components=3).fit(X[:, :2])
    Z = PLEEmbedding(n_neighbors=None, graph='attention').fit_transform(X)  # dense attention
    assert Z.shape == (120, 2)
    assert PLEEmbedding(n_neighbors=500).fit(X[:20]).n_neighbors_ == 20


@pytest.mark.parametrize('est', [PLEEmbedding(), PLEEmbedding(graph='attention', init='random', random_state=0)])
def test_sklearn_check_estimator(est):
    # every check applies and passes, except check_array_api_input, which scikit-learn skips unless
    # SCIPY_ARRAY_API=1 is set (the estimator does not claim array-API support).
    results = check_estimator(est, on_fail=None, on_skip=None)
    failed = [r['check_name'] for r in results if r['status'] == 'failed']
    assert not failed, failed
    skipped = {r['check_name'] for r in results if r['status'] == 'skipped'}
    assert skipped <= {'check_array_api_input'}


def test_ple_init_block_is_exact_diffusion_step():
    torch.manual_seed(0)
    F, H, eta = 8, 2, 0.5
    block = ple_init_(PLETransformerBlock(F, H, step_size=eta), qk_scale=2.0)
    x = torch.randn(2, 5, F)
    h = torch.nn.functional.layer_norm(x, (F,))
    ref = x.clone()
    C = F // H
    for hd in range(H):
        s = slice(C * hd, C * hd + C)
        q = h[..., s]
        A = torch.softmax(2.0 * q @ q.transpose(1, 2) / C ** 0.5, dim=-1)
        ref[..., s] += eta * (A @ q - q)
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
