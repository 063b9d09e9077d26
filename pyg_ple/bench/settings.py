"""The settings of a benchmark run, shared by its two jobs: k-fold cross-validation
(:mod:`pyg_ple.bench.protocol`) and fixed official splits with several seeds (:mod:`pyg_ple.bench.fixed_split`).

* :class:`BenchmarkConfig`: the models, training, the recipe every model shares, the model hyper-parameters (shared,
  and per model), the selection grid; checked before anything is trained.
* :data:`SETTING_RULES`, :func:`check_setting`, :func:`check_grid`, :func:`expand_grid`: what each setting must be.
* :func:`run_seed_of`: the seed of one training run; :func:`split_settings`: a grid configuration's training settings
  and model hyper-parameters; :func:`differences`: what differs between the settings of two runs.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

from pyg_ple.bench.models import MODEL_NAMES, GraphModelConfig, build_model
from pyg_ple.bench.training import RECIPE_RULES, is_recipe_value

__all__ = ['RECIPE_DEFAULTS', 'RECIPE_KEYS', 'TRAIN_KEYS', 'SELECTION_RULES', 'SETTING_RULES', 'BenchmarkConfig',
           'check_grid', 'check_setting', 'differences', 'expand_grid', 'model_hparam_names', 'run_seed_of',
           'split_settings']

# The training recipe (TrainConfig fields) shared by every model of a run; its defaults leave the run as before.
RECIPE_DEFAULTS = {'optimizer': 'adam', 'schedule': None, 'warmup_epochs': 0, 'decay_every': 50, 'decay_gamma': 0.5,
                   'grad_clip': None, 'ema_decay': None}
RECIPE_KEYS = tuple(RECIPE_DEFAULTS)
# Grid keys that configure training rather than the model.
TRAIN_KEYS = ('lr', 'weight_decay', 'batch_size', 'patience', *RECIPE_KEYS)


def model_hparam_names() -> tuple[str, ...]:
    """The hyper-parameters a graph classifier accepts (grid keys other than :data:`TRAIN_KEYS`)."""
    return tuple(f.name for f in fields(GraphModelConfig))


def _integer(lo: int, none: bool = False) -> Callable[[Any], bool]:
    return lambda v: (none and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= lo)


def _number(lo: float, above: bool, none: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if none and v is None:
            return True
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return v > lo if above else v >= lo
    return ok


SELECTION_RULES = ('acc', 'loss')


# What each setting of the protocol and of training must be: (test, description). Model settings are checked by
# GraphModelConfig.
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'epochs': (_integer(1), 'an integer >= 1'),
    'n_folds': (_integer(2), 'an integer >= 2'),
    'seed': (_integer(0), 'an integer >= 0'),
    'checkpoint_every': (_integer(1), 'an integer >= 1'),
    'lr': (_number(0, above=True), 'a number > 0'),
    'weight_decay': (_number(0, above=False), 'a number >= 0'),
    'batch_size': (_integer(1), 'an integer >= 1'),
    'patience': (_integer(1, none=True), 'an integer >= 1 (or null: no early stopping)'),
    'select': (lambda v: v in SELECTION_RULES, f"one of {', '.join(map(repr, SELECTION_RULES))}"),
    'final_runs': (_integer(1), 'an integer >= 1'),
    'inner_splits': (_integer(1), 'an integer >= 1'),
    **{key: (functools.partial(is_recipe_value, key), RECIPE_RULES[key]) for key in RECIPE_KEYS},
}


def check_setting(key: str, value: Any, label: str | None = None) -> None:
    """Raise ``ValueError`` naming ``label`` (default ``key``) if ``value`` breaks the rule of ``key`` in
    :data:`SETTING_RULES`; keys without a rule pass."""
    test, want = SETTING_RULES.get(key, (None, ''))
    if test is not None and not test(value):
        raise ValueError(f'{label or key} must be {want}, got {value!r}')


def check_grid(grid: list[dict[str, Any]]) -> None:
    """Raise ``ValueError`` if a configuration of an expanded grid has an unknown key, a value that breaks its rule,
    or appears twice."""
    known = TRAIN_KEYS + model_hparam_names()
    seen = []
    for cfg in grid:
        if not isinstance(cfg, dict):
            raise ValueError(f'a grid configuration must be an object of settings, got {cfg!r}')
        for key, value in cfg.items():
            if key not in known:
                raise ValueError(f'unknown grid key {key!r}; accepted keys: {", ".join(sorted(known))}')
            check_setting(key, value, f'grid value of {key!r}')
        if cfg in seen:
            raise ValueError(f'the grid lists the configuration {json.dumps(cfg)} twice')
        seen.append(cfg)



def expand_grid(grid: dict[str, list] | list[dict] | None) -> list[dict[str, Any]]:
    """``{'lr': [1e-3, 1e-4], 'hidden': [32]}`` -> the list of all combinations (a single value counts as a list of
    one); a list of dicts is kept as is. Raises ``ValueError`` for another shape or a key with no values."""
    if not grid:
        return [{}]
    if isinstance(grid, list):
        bad = [g for g in grid if not isinstance(g, dict)]
        if bad:
            raise ValueError(f'a grid list must hold objects of settings, got {bad[0]!r}')
        return [dict(g) for g in grid]
    if not isinstance(grid, dict):
        raise ValueError(f'a grid must be an object of value lists or a list of objects, got {grid!r}')
    keys = sorted(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[k] for k in keys)]
    empty = [k for k, v in zip(keys, values) if not v]
    if empty:
        raise ValueError(f'grid key {empty[0]!r} has an empty list of values')
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]



@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run (:func:`~pyg_ple.bench.protocol.run_benchmark`,
    :func:`~pyg_ple.bench.fixed_split.run_fixed_split`): the models, the protocol (folds, validation fraction, seed),
    training (epochs, batch size, early stopping, and the recipe every model shares: ``optimizer``, ``schedule``,
    ``warmup_epochs``, ``decay_every``, ``decay_gamma``, ``grad_clip``, ``ema_decay`` of
    :class:`~pyg_ple.bench.training.TrainConfig`),
    the model hyper-parameters ``hparams`` shared by every model, the selection ``grid`` (expanded: a list of
    configurations whose :data:`TRAIN_KEYS` set training and whose other keys set the model) and ``final_runs``, the
    training runs of the selected configuration whose test accuracies are averaged per fold, or ``inner_splits``, the
    validation splits per training fold that every configuration is trained on and selected by (see the module
    docstring of :mod:`~pyg_ple.bench.protocol`; the two exclude each other). ``model_hparams`` maps a model name to
    hyper-parameters of that model alone, over ``hparams`` and under the grid's (e.g. the width that matches a
    parameter budget, :func:`pyg_ple.bench.budget.width_for_budget`).

    On a dataset with a fixed official split (:mod:`pyg_ple.bench.fixed_split`) ``final_runs`` is the number of seeds
    each model is trained with, and ``n_folds``, ``val_fraction`` and ``inner_splits`` do not apply.

    Raises ``ValueError`` naming the bad setting, before anything is trained, if a value breaks its rule or a model
    cannot be built with one of the configurations."""

    models: list[str]
    n_folds: int = 10
    epochs: int = 100
    seed: int = 0
    device: str = 'cpu'
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int | None = 20
    select: str = 'acc'
    grad_clip: float | None = RECIPE_DEFAULTS['grad_clip']
    optimizer: str = RECIPE_DEFAULTS['optimizer']
    schedule: str | None = RECIPE_DEFAULTS['schedule']
    warmup_epochs: int = RECIPE_DEFAULTS['warmup_epochs']
    decay_every: int = RECIPE_DEFAULTS['decay_every']
    decay_gamma: float = RECIPE_DEFAULTS['decay_gamma']
    ema_decay: float | None = RECIPE_DEFAULTS['ema_decay']
    val_fraction: float = 0.1
    final_runs: int = 1
    inner_splits: int = 1
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    hparams: dict[str, Any] = field(default_factory=dict)
    model_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoint_every: int = 5
    save_models: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if not self.models or unknown or len(set(self.models)) < len(self.models):
            raise ValueError(f'models must name each model once, from {", ".join(MODEL_NAMES)}; got {self.models!r}')
        for key in ('epochs', 'n_folds', 'seed', 'checkpoint_every', 'lr', 'weight_decay', 'batch_size', 'patience',
                    'select', 'final_runs', 'inner_splits', *RECIPE_KEYS):
            check_setting(key, getattr(self, key))
        if self.inner_splits > 1 and self.final_runs > 1:
            raise ValueError(f'final_runs ({self.final_runs}) and inner_splits ({self.inner_splits}) exclude each '
                             'other: with inner_splits > 1 each fold averages one training run per inner split')
        if not 0 < self.val_fraction < 1:
            raise ValueError(f'val_fraction must be in (0, 1), got {self.val_fraction!r}')
        check_grid(self.grid)
        stray = [name for name in self.model_hparams if name not in self.models]
        if stray:
            raise ValueError(f'model_hparams names {", ".join(map(repr, stray))}, not among the models')
        for grid_cfg in self.grid:
            for name in self.models:
                settings = split_settings(self, grid_cfg, name)[1]
                try:
                    with torch.device('meta'):  # shapes only: no memory, no draw from the random generators
                        build_model(name, 1, 2, **settings)
                except (ValueError, TypeError) as e:
                    where = f' with the grid configuration {json.dumps(grid_cfg)}' if grid_cfg else ''
                    raise ValueError(f'model {name!r}{where}: {e}') from None

    def comparable(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one (not ``final_runs``: resuming with more
        adds runs to the stored folds)."""
        d = asdict(self)
        for k in ('models', 'device', 'progress', 'checkpoint_every', 'save_models', 'final_runs'):
            d.pop(k)
        # The recipe, the selection rule and the inner splits at their defaults are left out, so that runs written
        # before they existed can still be resumed.
        for k, default in {**RECIPE_DEFAULTS, 'select': 'acc', 'inner_splits': 1, 'model_hparams': {}}.items():
            if d[k] == default:
                d.pop(k)
        return d


def run_seed_of(seed: int, fold: int, config_index: int = 0, repeat: int = 0) -> int:
    """The seed of one training run from the run's ``seed``, the outer fold, the grid configuration's index and, for
    the final runs after the first, their number ``repeat``."""
    if repeat == 0:
        return seed * 1_000_003 + 1000 * fold + config_index
    # Hashed rather than spaced out, so that no repeat can land on the seed of another fold or configuration.
    return int(np.random.SeedSequence([seed, fold, config_index, repeat]).generate_state(1)[0])


def split_settings(cfg: BenchmarkConfig, grid_cfg: dict[str, Any],
                   name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, model hyper-parameters) of one grid configuration for model ``name``: the run's shared
    ``hparams``, then the model's own ``model_hparams``, then the configuration's model keys."""
    return ({k: grid_cfg[k] for k in TRAIN_KEYS if k in grid_cfg},
            {**cfg.hparams, **cfg.model_hparams.get(name, {}),
             **{k: v for k, v in grid_cfg.items() if k not in TRAIN_KEYS}})


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``'key: A in the run, B now'`` for every differing entry of two dicts (``hparams`` entry by entry)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == 'hparams' and isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b)
        elif a != b:
            out.append(f'{key}: {json.dumps(a)} in the run, {json.dumps(b)} now')
    return out

