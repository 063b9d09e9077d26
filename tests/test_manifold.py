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
    assert PLEEmbedding(n_neighbors=20, graph='attention').fit(X[:20]).n_neighbors_ == 20  # all points


@pytest.mark.parametrize('n_neighbors', [20, 21, 500])
def test_knn_graph_needs_fewer_neighbours_than_samples(n_neighbors):
    # With n_neighbors >= n_samples every row of the k-NN graph is the uniform 1/n: one step maps every point
    # onto the mean, and the embedding used to come back as all zeros without a word.
    X = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match=f'n_neighbors={n_neighbors} must be smaller than n_samples=20'):
        PLEEmbedding(n_neighbors=n_neighbors).fit(X)
    Z = PLEEmbedding(n_neighbors=19).fit_transform(X)  # the largest k-NN graph that is not uniform
    assert np.isfinite(Z).all() and np.abs(Z).max() > 0.1


def test_attention_graph_rejects_more_neighbours_than_samples():
    X = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match='n_neighbors=21 exceeds n_samples=20'):
        PLEEmbedding(n_neighbors=21, graph='attention').fit(X)


def rank_two_data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, 2))
    return np.hstack([B, B @ rng.normal(size=(2, 3))])  # 5 features spanning 2 directions


@pytest.mark.parametrize('init', ['random', 'pca'])
@pytest.mark.parametrize('n_components', [3, 4])
def test_components_beyond_the_data_rank_are_zero_not_amplified_round_off(init, n_components):
    X = rank_two_data()
    noise = 1e-12 * np.random.default_rng(1).normal(size=X.shape)
    with pytest.warns(UserWarning, match=f'n_components={n_components} exceeds the rank 2'):
        est = PLEEmbedding(n_components=n_components, init=init, random_state=0)
        Z = est.fit_transform(X)
    with pytest.warns(UserWarning, match='exceeds the rank 2'):
        Z_noisy = PLEEmbedding(n_components=n_components, init=init, random_state=0).fit_transform(X + noise)
    # round-off-sized input noise moves the output by round-off, not by O(1)
    np.testing.assert_allclose(Z_noisy, Z, atol=1e-8)
    # two whitened directions, the others exactly absent
    evals = np.linalg.eigvalsh(np.cov(Z, rowvar=False, bias=True))
    np.testing.assert_allclose(np.sort(evals), [0.0] * (n_components - 2) + [1.0, 1.0], atol=1e-8)
    np.testing.assert_allclose(est.transform(X), Z, atol=1e-8)


def test_rank_deficient_embedding_spans_the_full_rank_one():
    # The informative directions are those of the two-component embedding (the same subspace of the latents).
    X = rank_two_data()
    Z2 = PLEEmbedding(n_components=2, init='pca').fit_transform(X)
    with pytest.warns(UserWarning):
        Z3 = PLEEmbedding(n_components=3, init='pca').fit_transform(X)
    M, *_ = np.linalg.lstsq(Z2, Z3, rcond=None)
    np.testing.assert_allclose(Z2 @ M, Z3, atol=1e-8)


def test_full_rank_data_gives_no_rank_warning(cloud):
    import warnings
    X, _ = cloud
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        Z = PLEEmbedding(n_components=4, init='random', random_state=0).fit_transform(X)
    np.testing.assert_allclose(np.cov(Z, rowvar=False, bias=True), np.eye(4), atol=1e-8)


def test_step_that_loses_rank_warns():
    # Two tight, far-apart groups of 6 points with n_neighbors=6: every point's neighbours are exactly its own
    # group, so one step maps each group onto its mean and the 2-D latents keep one direction.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(6, 3)) * 0.01, rng.normal(size=(6, 3)) * 0.01 + 10.0])
    with pytest.warns(UserWarning, match='diffusion step 1 reduced the embedding.s rank from 2 to 1'):
        Z = PLEEmbedding(n_neighbors=6, n_steps=2).fit_transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(np.linalg.eigvalsh(np.cov(Z, rowvar=False, bias=True)), [0.0, 1.0], atol=1e-8)


@pytest.mark.parametrize('est', [PLEEmbedding(n_neighbors=5),
                                 PLEEmbedding(graph='attention', init='random', random_state=0)])
@pytest.mark.slow
def test_sklearn_check_estimator(est):
    # every check applies and passes, except check_array_api_input, which scikit-learn skips unless
    # SCIPY_ARRAY_API=1 is set (the estimator does not claim array-API support). Some checks fit 10 samples, which
    # a k-NN graph needs more than n_neighbors of (scikit-learn's own tests lower TSNE's perplexity the same way).
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
