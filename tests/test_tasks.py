"""The task registry: losses and metrics of each task kind, checked against scikit-learn and OGB on fixed inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, mean_absolute_error, roc_auc_score

from pyg_ple.bench.tasks import DATASETS, TASKS, average_precision, dataset_spec, roc_auc


def _multilabel(seed: int = 0, n: int = 60, labels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, labels)).astype(float)
    return y, y + rng.normal(0, 1.0, (n, labels))  # scores that know something, not everything


def test_average_precision_is_sklearns_macro_average_when_every_label_has_both_classes():
    y, scores = _multilabel()
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores, average='macro'))
    assert 0.5 < average_precision(y, scores) < 1.0


def test_average_precision_leaves_out_labels_with_one_class_and_unlabeled_graphs_as_lrgb_does():
    y, scores = _multilabel(1)
    y[:, 2] = 0  # no positive: undefined, left out
    y[:7, 4] = np.nan  # unlabeled graphs of label 4
    expected = np.mean([average_precision_score(y[:, i], scores[:, i]) for i in (0, 1, 3)]
                       + [average_precision_score(y[7:, 4], scores[7:, 4])])
    assert average_precision(y, scores) == pytest.approx(expected)


def test_roc_auc_is_ogbs_evaluator_for_ogbg_molhiv():
    Evaluator = pytest.importorskip('ogb.graphproppred').Evaluator
    rng = np.random.default_rng(2)
    y = (rng.random((200, 1)) < 0.1).astype(np.int64)
    scores = y * 0.8 + rng.normal(0, 1, (200, 1))
    ogb = Evaluator('ogbg-molhiv').eval({'y_true': y, 'y_pred': scores})['rocauc']
    assert roc_auc(y, scores) == pytest.approx(ogb)
    assert roc_auc(y.ravel(), scores.ravel()) == pytest.approx(roc_auc_score(y.ravel(), scores.ravel()))
    assert TASKS['binary'].score(y, scores) == pytest.approx(ogb)


def test_a_metric_without_a_label_of_both_classes_says_so():
    with pytest.raises(ValueError, match='y_true: ROC-AUC needs a label with both classes'):
        roc_auc(np.zeros((4, 1)), np.arange(4.0))
    with pytest.raises(ValueError, match=r'y_pred must have the shape of y_true \(4, 2\)'):
        average_precision(np.zeros((4, 2)), np.zeros((4, 3)))


def test_regression_and_multiclass_metrics_are_sklearns():
    rng = np.random.default_rng(3)
    y, pred = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    assert TASKS['regression'].score(y, pred) == pytest.approx(mean_absolute_error(y, pred))
    labels, logits = rng.integers(0, 3, 30), rng.normal(size=(30, 3))
    assert TASKS['multiclass'].score(labels, logits) == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_losses_of_each_task_kind():
    out = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [float('nan'), 1.0]])
    # Binary cross-entropy on the logits over the labeled entries only.
    expected = F.binary_cross_entropy_with_logits(torch.tensor([0.3, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(TASKS['multilabel'].loss(out, y), expected)
    assert torch.allclose(TASKS['binary'].loss(out[:, :1], torch.tensor([[1.0], [0.0]])),
                          F.binary_cross_entropy_with_logits(out[:, :1], torch.tensor([[1.0], [0.0]])))
    assert torch.allclose(TASKS['regression'].loss(out, y), torch.tensor([0.7, 1.0, 0.5]).mean())
    labels = torch.tensor([1, 0])
    assert torch.allclose(TASKS['multiclass'].loss(out, labels), F.cross_entropy(out, labels))


def test_better_follows_the_direction_of_the_metric():
    assert TASKS['multilabel'].better(0.6, 0.5) and not TASKS['multilabel'].better(0.5, 0.5)
    assert TASKS['regression'].better(0.2, 0.3) and not TASKS['regression'].better(0.3, 0.2)
    assert TASKS['binary'].better(0.1, None) and not TASKS['binary'].better(float('nan'), None)


def test_the_registry_names_each_datasets_task_and_split():
    assert dataset_spec('peptides-func').task.metric == 'ap' and dataset_spec('peptides-func').split == 'fixed'
    assert dataset_spec('HIV').task.metric == 'rocauc' and 'rebuilt scaffold split' in dataset_spec('hiv').note
    assert dataset_spec('MUTAG').task is TASKS['multiclass'] and dataset_spec('digits').split == 'kfold'
    assert set(DATASETS) == {'peptides-func', 'hiv'}
