"""What each benchmark dataset asks for, in one place: the task kind, its loss and metric, whether the metric is higher
for better, and the kind of split.

==================  ===========  ===============================================================  ==========  ========
dataset             task         metric                                                           better      split
==================  ===========  ===============================================================  ==========  ========
digits, TU names    multiclass   accuracy                                                         higher      k-fold
``peptides-func``   multilabel   average precision, averaged over the labels (LRGB)               higher      fixed
``hiv``             binary       ROC-AUC (OGB's ``Evaluator('ogbg-molhiv')``)                     higher      fixed
(regression)        regression   mean absolute error                                              lower       fixed
==================  ===========  ===============================================================  ==========  ========

The metrics are scikit-learn's, applied as LRGB and OGB apply them: per label (column), on the graphs whose label is
not NaN, over the labels that have both classes, then averaged (:func:`average_precision`, :func:`roc_auc`).
``k-fold`` datasets run under :mod:`pyg_ple.bench.protocol`, ``fixed`` ones (an official split, several seeds) under
:mod:`pyg_ple.bench.fixed_split`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['Task', 'TASKS', 'DatasetSpec', 'DATASETS', 'dataset_spec', 'accuracy', 'average_precision', 'roc_auc',
           'mean_absolute_error', 'METRIC_LABELS', 'SPLIT_KINDS', 'HIV_SPLIT_NOTE']

SPLIT_KINDS = ('kfold', 'fixed')
# Said by every result on HIV (see pyg_ple.bench.molecules.scaffold_split).
HIV_SPLIT_NOTE = ("rebuilt scaffold split (OGB's procedure from HIV.csv; sizes equal to OGB's 32,901 / 4,113 / 4,113, "
                  "not checked index for index against OGB's split files)")


def _columns(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    # One task may come as a vector: [n] and [n, 1] are the same thing.
    y_true = y_true[:, None] if y_true.ndim == 1 else y_true
    y_pred = y_pred[:, None] if y_pred.ndim == 1 else y_pred
    if y_true.shape != y_pred.shape:
        raise ValueError(f'y_pred must have the shape of y_true {y_true.shape}, got {y_pred.shape}')
    return y_true, y_pred


def _per_label(score: Callable, y_true: Any, y_pred: Any, what: str) -> float:
    y_true, y_pred = _columns(y_true, y_pred)
    values = []
    for i in range(y_true.shape[1]):
        labeled = ~np.isnan(y_true[:, i])
        col = y_true[labeled, i]
        if (col == 1).any() and (col == 0).any():  # undefined on a label with one class: left out, as LRGB and OGB do
            values.append(score(col, y_pred[labeled, i]))
    if not values:
        raise ValueError(f'y_true: {what} needs a label with both classes among the labeled graphs')
    return float(np.mean(values))


def average_precision(y_true: Any, y_pred: Any) -> float:
    """LRGB's metric of Peptides-func: scikit-learn's ``average_precision_score`` of each label (column) on its
    labeled graphs, averaged over the labels that have both classes. ``y_pred`` are scores (logits or
    probabilities)."""
    from sklearn.metrics import average_precision_score
    return _per_label(average_precision_score, y_true, y_pred, 'average precision')


def roc_auc(y_true: Any, y_pred: Any) -> float:
    """OGB's ROC-AUC (``Evaluator('ogbg-molhiv')``): scikit-learn's ``roc_auc_score`` of each task (column) on its
    labeled graphs, averaged over the tasks that have both classes. A fraction; the field writes it in percent."""
    from sklearn.metrics import roc_auc_score
    return _per_label(roc_auc_score, y_true, y_pred, 'ROC-AUC')


def mean_absolute_error(y_true: Any, y_pred: Any) -> float:
    """scikit-learn's ``mean_absolute_error`` over every target, NaN targets left out."""
    from sklearn.metrics import mean_absolute_error as mae
    y_true, y_pred = _columns(y_true, y_pred)
    labeled = ~np.isnan(y_true)
    return float(mae(y_true[labeled], y_pred[labeled]))


def accuracy(y_true: Any, y_pred: Any) -> float:
    """scikit-learn's ``accuracy_score`` of the class with the largest score (``y_pred``: ``[n, classes]``)."""
    from sklearn.metrics import accuracy_score
    return float(accuracy_score(np.asarray(y_true).reshape(-1), np.asarray(y_pred).argmax(-1)))


def _labeled(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    y = y.view(out.shape).to(out.dtype)
    mask = ~torch.isnan(y)
    return out[mask], y[mask]


@dataclass(frozen=True)
class Task:
    """A task kind: its training loss (:meth:`loss`, a mean over the batch), its metric (:meth:`score`), whether the
    metric is higher for better, and how the field writes it (``scale`` 100: percent)."""

    kind: str
    metric: str
    higher_is_better: bool
    scale: float = 1.0

    def loss(self, out: Tensor, y: Tensor, reduction: str = 'mean') -> Tensor:
        """Cross-entropy (multiclass), binary cross-entropy on the logits over the labeled entries (binary,
        multilabel), L1 (regression)."""
        if self.kind == 'multiclass':
            return F.cross_entropy(out, y.view(-1), reduction=reduction)
        out, y = _labeled(out, y)
        if self.kind == 'regression':
            return F.l1_loss(out, y, reduction=reduction)
        return F.binary_cross_entropy_with_logits(out, y, reduction=reduction)

    def score(self, y_true: Any, y_pred: Any) -> float:
        """The metric of ``y_pred`` (model outputs: logits or values) against ``y_true``."""
        return METRICS[self.metric](y_true, y_pred)

    def better(self, a: float, b: float | None) -> bool:
        """Whether the metric value ``a`` is strictly better than ``b`` (``None``: nothing yet)."""
        if a is None or np.isnan(a):
            return False
        return b is None or (a > b if self.higher_is_better else a < b)

    def selection_value(self, value: float) -> float:
        """``value`` signed so that larger is better (what the harness maximises)."""
        return value if self.higher_is_better else -value


METRICS: dict[str, Callable[[Any, Any], float]] = {'acc': accuracy, 'ap': average_precision, 'rocauc': roc_auc,
                                                   'mae': mean_absolute_error}
# How the tables name each metric (as the field writes it).
METRIC_LABELS = {'ap': 'AP', 'rocauc': 'ROC-AUC (%)', 'mae': 'MAE', 'acc': 'accuracy (%)'}
TASKS = {
    'multiclass': Task('multiclass', 'acc', True, 100.0),
    'multilabel': Task('multilabel', 'ap', True),
    'binary': Task('binary', 'rocauc', True, 100.0),
    'regression': Task('regression', 'mae', False),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the benchmark: its task, its kind of split, how to load it (a function of ``name``, ``root``,
    ``pe`` and ``pe_dim``; ``None`` for the k-fold datasets of :func:`pyg_ple.bench.datasets.load_dataset`) and what
    every result on it must say (``note``)."""

    name: str
    task: Task
    split: str
    loader: Callable[..., Any] | None = None
    note: str = ''


def _molecules(name: str, root: Any = None, pe: str | None = None, pe_dim: int = 8) -> Any:
    from pyg_ple.bench.molecules import load_molecules
    return load_molecules(name, root, pe=pe, pe_dim=pe_dim)


DATASETS: dict[str, DatasetSpec] = {
    'peptides-func': DatasetSpec('peptides-func', TASKS['multilabel'], 'fixed', _molecules,
                                 'official LRGB split'),
    'hiv': DatasetSpec('hiv', TASKS['binary'], 'fixed', _molecules, HIV_SPLIT_NOTE),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``: a registered dataset (case-insensitive), else a k-fold multiclass dataset (the digits,
    a TU dataset)."""
    spec = DATASETS.get(name.lower())
    return spec if spec is not None else DatasetSpec(name, TASKS['multiclass'], 'kfold')
