"""Models and readers of the paper-claim experiments (``benchmarks/paper_claims.py``): a character-level language
model, a small vision transformer, an IDX (MNIST) reader and ``PLEEmbedding``, a scikit-learn estimator."""
