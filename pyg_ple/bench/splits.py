"""The k-fold splits of the protocol (:mod:`pyg_ple.bench.protocol`): stratified outer folds, each with a stratified
validation split (and, with ``inner_splits`` > 1, further ones), written once to a JSON file and reloaded by every
later model and run, which checks that the file belongs to the same labels and settings."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pyg_ple.bench.io import atomic_write_json
from pyg_ple.bench.settings import check_setting

__all__ = ['make_splits', 'inner_split', 'save_splits', 'load_splits', 'get_splits', 'labels_digest']

SPLITS_VERSION = 1


def labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def _stratified_holdout(indices: np.ndarray, labels: np.ndarray, size: int, random_state: int) -> tuple[Any, Any]:
    from sklearn.model_selection import train_test_split
    try:
        return train_test_split(indices, test_size=size, stratify=labels[indices], random_state=random_state)
    except ValueError:  # a class too small to stratify (tiny subsets): plain random split
        return train_test_split(indices, test_size=size, random_state=random_state)


def make_splits(labels: Sequence[int], n_folds: int = 10, seed: int = 0, val_fraction: float = 0.1,
                inner_splits: int = 1) -> list[dict[str, list[int]]]:
    """Stratified ``n_folds``-fold outer splits, each with a stratified ``val_fraction`` validation split taken out
    of its training part. Returns one dict per fold with sorted index lists ``train``, ``val``, ``test``; with
    ``inner_splits`` > 1 also ``inner_val``, the validation splits of the further inner splits (``inner_splits - 1``
    lists of the size of ``val``, each drawn afresh from the training part; see :func:`inner_split`). The folds and
    their first validation split do not depend on ``inner_splits``."""
    from sklearn.model_selection import StratifiedKFold
    labels = np.asarray(labels)
    if n_folds < 2:
        raise ValueError(f'n_folds must be >= 2, got {n_folds}')
    check_setting('inner_splits', inner_splits)
    counts = np.bincount(labels)
    if counts[counts > 0].min() < n_folds:
        raise ValueError(f'the smallest class has {counts[counts > 0].min()} graphs, fewer than n_folds={n_folds}')
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for k, (train_idx, test_idx) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        n_val = max(1, int(round(val_fraction * len(train_idx))))
        tr, va = _stratified_holdout(train_idx, labels, n_val, seed + 1 + k)
        fold = {'fold': k, 'train': sorted(int(i) for i in tr), 'val': sorted(int(i) for i in va),
                'test': sorted(int(i) for i in test_idx)}
        if inner_splits > 1:
            # Seeds hashed from (seed, fold): unrelated to the first split's seed + 1 + k.
            states = np.random.SeedSequence([seed, k, 1]).generate_state(inner_splits - 1)
            fold['inner_val'] = [sorted(int(i) for i in _stratified_holdout(train_idx, labels, n_val, int(s))[1])
                                 for s in states]
        folds.append(fold)
    return folds


def inner_split(split: dict[str, Any], i: int) -> dict[str, Any]:
    """Inner split ``i`` of an outer fold of :func:`make_splits`: ``0`` is the fold itself; ``i`` >= 1 validates on
    ``split['inner_val'][i - 1]`` and trains on the rest of the fold's training part (``train`` + ``val``)."""
    if i == 0:
        return split
    inner = split.get('inner_val') or []
    if not 1 <= i <= len(inner):
        raise ValueError(f'fold {split.get("fold")} has {len(inner) + 1} inner split(s), no split {i}')
    val = inner[i - 1]
    train = sorted((set(split['train']) | set(split['val'])) - set(val))
    return {'fold': split['fold'], 'train': train, 'val': list(val), 'test': split['test']}


def save_splits(path: str | os.PathLike, splits: list[dict], labels: Sequence[int], n_folds: int, seed: int,
                val_fraction: float, dataset: str = '', inner_splits: int = 1) -> Path:
    # inner_splits only when > 1: the files of runs with one inner split stay as they were
    extra = {'inner_splits': inner_splits} if inner_splits > 1 else {}
    return atomic_write_json(path, {
        'version': SPLITS_VERSION, 'dataset': dataset, 'num_graphs': len(labels), 'n_folds': n_folds, 'seed': seed,
        'val_fraction': val_fraction, **extra, 'labels_sha256': labels_digest(np.asarray(labels)), 'folds': splits})


def load_splits(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def get_splits(path: str | os.PathLike | None, labels: Sequence[int], n_folds: int = 10, seed: int = 0,
               val_fraction: float = 0.1, dataset: str = '', inner_splits: int = 1) -> list[dict[str, list[int]]]:
    """Load the splits from ``path`` if it exists (checking that they belong to these labels and settings), else make
    them and save them there."""
    labels = np.asarray(labels)
    if path is not None and Path(path).exists():
        saved = load_splits(path)
        want = {'num_graphs': len(labels), 'n_folds': n_folds, 'seed': seed, 'val_fraction': val_fraction,
                'labels_sha256': labels_digest(labels)}
        if inner_splits > 1:  # one inner split uses the first validation split, which every file has
            want['inner_splits'] = inner_splits
        diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f'splits file {path} does not match this run ' + ', '.join(
                f'({k}: {a} in the file, {b} now)' for k, (a, b) in diff.items()))
        return saved['folds']
    splits = make_splits(labels, n_folds, seed, val_fraction, inner_splits)
    if path is not None:
        save_splits(path, splits, labels, n_folds, seed, val_fraction, dataset, inner_splits)
    return splits
