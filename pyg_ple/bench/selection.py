"""Model selection on validation figures, shared by the k-fold protocol (:mod:`pyg_ple.bench.protocol`), the
reports and the scripts that replay recorded curves (``benchmarks/selection_rules.py``, ``benchmarks/budget.py``).

* :func:`selection_score`: the score the protocol maximises to keep an epoch and a grid configuration.
* :func:`replay_selection` and :func:`ended_by_budget`: which epoch a training run kept, and whether its budget of
  epochs rather than early stopping ended it, replayed from its curves.
* :func:`validation_halves`, :func:`heldout_accuracy` and :func:`heldout_choice_accuracy`: the held-out validation
  figure, which chooses the epoch (and the configuration) on one half of the validation split and scores it on the
  other, so that settings can be compared without the optimism of a maximum over noisy epochs.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ['selection_score', 'replay_selection', 'ended_by_budget', 'validation_halves', 'heldout_accuracy',
           'heldout_choice_accuracy']


def selection_score(acc: Any, loss: Any, rule: str = 'acc') -> Any:
    """The validation score the protocol maximises to keep an epoch and a grid configuration: ``'acc'`` the accuracy,
    ties broken by the lower loss (Errica et al.); ``'loss'`` the lower loss. A non-finite loss counts as 10.
    Elementwise on arrays, so that recorded curves can be replayed (``benchmarks/selection_rules.py``)."""
    loss = np.minimum(np.nan_to_num(np.asarray(loss, dtype=float), nan=10.0, posinf=10.0), 10.0)
    # The loss term of 'acc' is < 1e-3: below one graph of accuracy, so it only breaks ties.
    score = -loss if rule == 'loss' else np.asarray(acc, dtype=float) - 1e-4 * loss
    return float(score) if score.ndim == 0 else score


def validation_halves(val: Sequence[int], labels: np.ndarray, seed: int) -> tuple[list[int], list[int]]:
    """Two halves of a validation split (stratified by ``labels`` where every class has two graphs in it; seeded),
    each sorted: the two halves of :func:`heldout_accuracy`. A split of one graph gives it and an empty half."""
    from sklearn.model_selection import train_test_split
    val = [int(i) for i in val]
    if len(val) < 2:
        return sorted(val), []
    try:
        a, b = train_test_split(val, test_size=0.5, stratify=np.asarray(labels)[val], random_state=seed)
    except ValueError:  # a class with one validation graph: unstratified
        a, b = train_test_split(val, test_size=0.5, random_state=seed)
    return sorted(int(i) for i in a), sorted(int(i) for i in b)


def replay_selection(score: Sequence[float], patience: int | None) -> int:
    """The epoch index (0-based) that :func:`pyg_ple.bench.training.fit` keeps when it maximises ``score`` epoch by
    epoch (a strictly better value resets the count) and stops after ``patience`` epochs without a better one."""
    best, best_t, bad = -np.inf, 0, 0
    for t, v in enumerate(score):
        if v > best:
            best, best_t, bad = v, t, 0
        else:
            bad += 1
            if patience is not None and bad >= patience:
                break
    return best_t


def ended_by_budget(best_epoch: int, epochs_run: int, epochs: int, patience: int | None) -> bool:
    """Whether a training run was ended by its budget of ``epochs`` rather than by early stopping: it ran every epoch
    and its selected epoch (1-based ``best_epoch``) is within the last ``patience`` of them, so a longer budget could
    have selected a later one. Without early stopping (``patience`` None) only the budget ends a run."""
    return epochs_run >= epochs and (patience is None or epochs - best_epoch < patience)


def heldout_accuracy(curve: dict[str, Sequence[float]], patience: int | None, rule: str = 'acc') -> float:
    """Held-out validation accuracy of one training run from its per-epoch curves on the two halves of its validation
    split (``val_a_acc``, ``val_a_loss``, ``val_b_acc``, ``val_b_loss``): the epoch the selection ``rule`` keeps on
    one half (early stopping with ``patience`` replayed), scored on the other half, the mean of both ways round.

    The best-epoch validation accuracy is the maximum of a noisy curve, so it rewards a noisy curve; the held-out
    figure does not, and uses no test graph: it is what settings may be compared on."""
    return heldout_choice_accuracy([curve], patience, rule)[0]


def heldout_choice_accuracy(curves: Sequence[dict[str, Sequence[float]]],
                            patience: int | None | Sequence[int | None], rule: str = 'acc') -> tuple[float, list[int]]:
    """Held-out validation accuracy of choosing among the training runs of a grid's configurations on one fold (each
    run's curves as in :func:`heldout_accuracy`, all on the same validation split), and the index of the run chosen
    on half a and on half b.

    On one half every run's epoch is kept by the selection ``rule`` (early stopping with ``patience``, one value or
    one per run, replayed), the
    run whose kept epoch scores best there is chosen (ties: the first, as ``pyg-ple bench --grid`` keeps the first),
    and its kept epoch is scored on the other half; the mean of both ways round. With one run this is
    :func:`heldout_accuracy`. The choice of configuration is judged on graphs it did not see, as the epoch is."""
    if not curves:
        raise ValueError('curves: expected at least one training run')
    patiences = list(patience) if isinstance(patience, Sequence) else [patience] * len(curves)
    if len(patiences) != len(curves):
        raise ValueError(f'patience: expected one value or one per run ({len(curves)}), got {len(patiences)}')
    c = [{k: np.asarray(cv[k], dtype=float) for k in ('val_a_acc', 'val_a_loss', 'val_b_acc', 'val_b_loss')}
         for cv in curves]
    figures, chosen = [], []
    for on, other in (('a', 'b'), ('b', 'a')):
        scores = [selection_score(r[f'val_{on}_acc'], r[f'val_{on}_loss'], rule) for r in c]
        kept = [replay_selection(s, p) for s, p in zip(scores, patiences)]
        best = max(range(len(c)), key=lambda j: scores[j][kept[j]])  # max keeps the first of equal ones
        figures.append(c[best][f'val_{other}_acc'][kept[best]])
        chosen.append(best)
    return float(np.mean(figures)), chosen
