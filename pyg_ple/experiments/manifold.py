"""Dimensionality reduction by unrolled Laplacian-diffusion steps.

:class:`PLEEmbedding` is a scikit-learn estimator.  It embeds a point cloud the way
the probabilistic-Laplacian-Eigenmaps reading of a transformer block does (Ravuri &
Lawrence, 2025): the points are tokens, a graph over them is
the attention matrix ``A`` (row-stochastic), and each step is one gradient step on
the Laplacian term of the PLE objective::

    Z_0     = (X - mean) P                       # linear map: PCA or a random projection
    Z_t'    = Z_{t-1} + eta (A - I) Z_{t-1}       # graph diffusion, L = I - A
    Z_t     = whiten(Z_t')                       # stands in for the log-det term / normalisation

``whiten`` centres the latents and rescales them to identity covariance (the
log-determinant term of the PLE bound pushes latents apart; in a transformer,
normalisation layers play that role).  Without it, repeated diffusion collapses
every point towards the mean.  With it, the iteration is subspace iteration on
``(1 - eta) I + eta A``; many steps converge to the leading non-trivial
eigenvectors of ``A``, i.e. to (random-walk) Laplacian Eigenmaps, and the
default eight steps stop well before that (an early-stopped, PCA-started
Laplacian Eigenmaps).  Every step is linear in ``Z`` for a fixed graph, so the
whole map from ``X`` to the embedding is linear given ``A``.

Graphs (``graph=``):

``'knn'``
    ``A[i, j] = 1 / k`` for the ``k = n_neighbors`` nearest points ``j`` of ``i``
    in input space, the point itself included (a directed k-NN graph, one
    uniform attention row per point).
``'attention'``
    softmax attention over the same candidates with queries = keys = the input
    points and an L2 key bias, i.e. ``A[i, j] = softmax_j(-||x_i - x_j||^2 / tau_i)``
    with ``tau_i`` the squared distance to the k-th neighbour (self-tuning
    temperature).  ``n_neighbors=None`` attends to all points (dense, O(n^2)).

The diffusion uses plain sparse matrix products (``scipy.sparse``), which is the
fixed-graph mode ``-eta L V`` of :class:`pyg_ple.LaplacianDiffusionConv` with
``V = Z`` (identity value/output projections) and ``normalization='rw'``.

scikit-learn compatibility (scikit-learn 1.6 or later): ``sklearn.utils.estimator_checks.check_estimator`` passes
every check it runs on ``PLEEmbedding(n_neighbors=5)`` and on ``PLEEmbedding(graph='attention', init='random')`` (46
with scikit-learn 1.6 and 1.9; some checks fit 10 samples, fewer than a k-NN graph with the default
``n_neighbors=10`` needs); the one check 1.9 skips, ``check_array_api_input``, needs ``SCIPY_ARRAY_API=1`` and
array-API support, which this estimator does not claim (it computes in float64 NumPy/SciPy).

Out-of-sample points (``transform``) reuse the fitted steps: a new point attends to
its neighbours among the *training* points at every step, and the stored
per-step centring/whitening is applied, so ``fit(X).transform(X)`` equals
``fit_transform(X)`` (up to ties among neighbour distances).
"""
from __future__ import annotations

import numbers
import warnings
from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from pyg_ple.nn.block import ple_init_  # noqa: F401  (kept here: the clustering experiments import it from here)

__all__ = ['PLEEmbedding', 'diffusion_graph', 'ple_init_']


def diffusion_graph(dist: np.ndarray, ind: np.ndarray, n_cols: int, graph: str) -> sp.csr_matrix:
    """Row-stochastic sparse graph from neighbour distances ``dist`` and indices ``ind`` ``[n, k]``."""
    n, k = ind.shape
    if graph == 'knn':
        w = np.full((n, k), 1.0 / k)
    else:  # attention: softmax(-d^2 / tau_i), tau_i = k-th squared distance (self-tuning)
        d2 = dist.astype(np.float64) ** 2
        tau = d2[:, -1:].copy()
        tau[tau <= 0] = 1.0
        logits = -d2 / tau
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((w.ravel(), (rows, ind.ravel())), shape=(n, n_cols))


def _whitening(Z: np.ndarray, reference: Optional[float] = None,
               eps: float = 1e-10) -> Tuple[np.ndarray, np.ndarray, int]:
    """Mean, symmetric (ZCA) whitening matrix and numerical rank of ``Z`` [n, d].

    Directions whose variance is at most ``eps`` times ``reference`` (default: the largest variance of ``Z``) count
    as absent: the matrix maps them to zero (the pseudo-inverse square root of the covariance) instead of scaling
    round-off up to unit variance, which later steps would turn into spurious components."""
    mu = Z.mean(axis=0)
    C = np.cov(Z - mu, rowvar=False, bias=True).reshape(Z.shape[1], Z.shape[1])
    evals, evecs = np.linalg.eigh(C)
    top = float(evals.max()) if reference is None else float(reference)
    keep = evals > eps * top if top > 0 else np.zeros(evals.shape, dtype=bool)
    scale = np.zeros_like(evals)
    scale[keep] = 1.0 / np.sqrt(evals[keep])
    return mu, (evecs * scale) @ evecs.T, int(keep.sum())


class PLEEmbedding(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Embed points by ``n_steps`` unrolled Laplacian-diffusion steps over a graph of the points.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the embedding.
    n_neighbors : int or None, default=10
        Candidate neighbours of each point (the point itself included).  ``None``
        (only with ``graph='attention'``) attends to all training points.
        Must be smaller than ``n_samples`` with ``graph='knn'`` (all points as
        neighbours make every row uniform) and at most ``n_samples`` with
        ``graph='attention'``; a larger value raises ``ValueError``.
    n_steps : int, default=8
        Number of unrolled diffusion steps (the paper's figure uses eight blocks).
    step_size : float, default=1.0
        ``eta`` in ``Z + eta (A - I) Z``.  ``1.0`` gives ``Z <- A Z``.
    graph : {'knn', 'attention'}, default='knn'
        The graph (attention matrix) the steps diffuse over; see the module docs.
    init : {'pca', 'random'}, default='pca'
        The linear map to ``n_components`` dimensions that starts the iteration:
        the leading principal directions, or a Gaussian random projection (a
        randomly initialised embedding layer).
    whiten : bool, default=True
        Centre and whiten after every step (see the module docs).  ``False`` gives
        plain diffusion (the embedding contracts towards the mean).  Directions
        whose variance is at most 1e-10 of the data's largest (after a step: of
        the step's unit-variance input) count as absent and are set to zero; a
        ``UserWarning`` says when ``n_components`` exceeds the rank of the
        projected data or a step loses rank.
    random_state : int, RandomState instance or None, default=None
        Seed for ``init='random'``.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
    projection_ : ndarray of shape (n_features_in_, n_components)
        The initial linear map (applied to centred inputs).
    mean_ : ndarray of shape (n_features_in_,)
    steps_ : list of ndarray
        Training latents before each step (``n_steps`` arrays), used by ``transform``.
    whitening_ : list of (mean, matrix) pairs, one per step (empty if ``whiten=False``).
    affinity_matrix_ : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        The row-stochastic graph ``A``.
    n_neighbors_ : int
        The number of neighbours actually used.
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        'n_components': [Interval(numbers.Integral, 1, None, closed='left')],
        'n_neighbors': [Interval(numbers.Integral, 1, None, closed='left'), None],
        'n_steps': [Interval(numbers.Integral, 0, None, closed='left')],
        'step_size': [Interval(numbers.Real, 0, None, closed='neither')],
        'graph': [StrOptions({'knn', 'attention'})],
        'init': [StrOptions({'pca', 'random'})],
        'whiten': ['boolean'],
        'random_state': ['random_state'],
    }

    def __init__(self, n_components: int = 2, n_neighbors: Optional[int] = 10, n_steps: int = 8,
                 step_size: float = 1.0, graph: str = 'knn', init: str = 'pca', whiten: bool = True,
                 random_state=None):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_steps = n_steps
        self.step_size = step_size
        self.graph = graph
        self.init = init
        self.whiten = whiten
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers
    def _neighbours(self, X: np.ndarray, training: bool) -> Tuple[np.ndarray, np.ndarray]:
        if training:  # the point itself is its own nearest neighbour (distance 0)
            dist, ind = self._nn.kneighbors(None, n_neighbors=self.n_neighbors_ - 1) \
                if self.n_neighbors_ > 1 else (np.zeros((X.shape[0], 0)), np.zeros((X.shape[0], 0), int))
            n = X.shape[0]
            dist = np.hstack([np.zeros((n, 1)), dist])
            ind = np.hstack([np.arange(n)[:, None], ind])
            return dist, ind
        return self._nn.kneighbors(X, n_neighbors=self.n_neighbors_)

    def _graph(self, X: np.ndarray, training: bool) -> sp.csr_matrix:
        dist, ind = self._neighbours(X, training)
        return diffusion_graph(dist, ind, self._n_train, self.graph)

    def _step(self, Z: np.ndarray, AZ: np.ndarray) -> np.ndarray:
        return Z + self.step_size * (AZ - Z)

    # ---------------------------------------------------------------------- API
    def fit(self, X, y=None):
        """Fit the embedding of ``X`` (``y`` is ignored)."""
        self._fit(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit and return the embedding of the training points ``[n_samples, n_components]``."""
        self._fit(X)
        return self.embedding_

    def _fit(self, X):
        self._validate_params()
        if self.graph == 'knn' and self.n_neighbors is None:
            raise ValueError("n_neighbors=None (attend to all points) needs graph='attention'")
        min_features = self.n_components if self.init == 'pca' else 1
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2,
                          ensure_min_features=min_features)
        X = X.astype(np.float64, copy=False)
        n, d = X.shape
        # Too many neighbours is an error, not a clamp, as in scikit-learn's neighbour-based embeddings (Isomap,
        # SpectralEmbedding, LocallyLinearEmbedding).
        if self.graph == 'knn' and self.n_neighbors >= n:
            raise ValueError(f"n_neighbors={self.n_neighbors} must be smaller than n_samples={n} with graph='knn': "
                             "with every point a neighbour of every point each row of the graph is uniform and the "
                             "diffusion maps all points onto their mean")
        if self.n_neighbors is not None and self.n_neighbors > n:
            raise ValueError(f"n_neighbors={self.n_neighbors} exceeds n_samples={n}; pass n_neighbors <= n_samples, "
                             "or n_neighbors=None to attend to all points")
        self._n_train = n
        self.n_neighbors_ = n if self.n_neighbors is None else int(self.n_neighbors)
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        if self.init == 'pca':
            _, _, vt = np.linalg.svd(Xc, full_matrices=False)
            P = vt[:self.n_components].T
            # deterministic sign: largest-magnitude loading positive
            signs = np.sign(P[np.abs(P).argmax(axis=0), np.arange(P.shape[1])])
            signs[signs == 0] = 1.0
            P = P * signs
        else:
            rng = check_random_state(self.random_state)
            P = rng.standard_normal((d, self.n_components)) / np.sqrt(d)
        self.projection_ = P
        self._nn = NearestNeighbors(n_neighbors=max(self.n_neighbors_ - 1, 1)).fit(X)
        A = self._graph(X, training=True)
        self.affinity_matrix_ = A
        Z = Xc @ P
        self.steps_: List[np.ndarray] = []
        self.whitening_: List[Tuple[np.ndarray, np.ndarray]] = []
        if self.whiten:  # the input to the first step is whitened too
            mu, W, rank = _whitening(Z)
            self.init_whitening_ = (mu, W)
            Z = (Z - mu) @ W
            if rank < self.n_components:
                warnings.warn(f"n_components={self.n_components} exceeds the rank {rank} of the projected data "
                              f"(the centred X of {n} samples spans fewer directions): the embedding has {rank} "
                              f"informative directions and whitening sets the other {self.n_components - rank} to "
                              "zero rather than amplify round-off", UserWarning, stacklevel=3)
        else:
            self.init_whitening_ = None
        for step in range(self.n_steps):
            self.steps_.append(Z)
            Z = self._step(Z, A @ Z)
            if self.whiten:
                # The step's input has unit variance along each of its ``rank`` directions.
                mu, W, new_rank = _whitening(Z, reference=1.0)
                self.whitening_.append((mu, W))
                Z = (Z - mu) @ W
                if new_rank < rank:
                    warnings.warn(f"diffusion step {step + 1} reduced the embedding's rank from {rank} to {new_rank}: "
                                  "the graph maps different points onto the same latents (e.g. groups of points "
                                  "whose neighbours are exactly each other); the lost directions are set to zero",
                                  UserWarning, stacklevel=3)
                    rank = new_rank
        self.embedding_ = Z
        self._n_features_out = self.n_components
        return self

    def transform(self, X):
        """Embed new points: each step diffuses them over their neighbours among the training points."""
        check_is_fitted(self, 'embedding_')
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False).astype(np.float64, copy=False)
        Z = (X - self.mean_) @ self.projection_
        if self.init_whitening_ is not None:
            mu, W = self.init_whitening_
            Z = (Z - mu) @ W
        if self.n_steps == 0:
            return Z
        A = self._graph(X, training=False)
        for t in range(self.n_steps):
            Z = self._step(Z, A @ self.steps_[t])
            if self.whiten:
                mu, W = self.whitening_[t]
                Z = (Z - mu) @ W
        return Z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
