"""Models compared at one parameter budget: the width of each model chosen so that its parameter count is the closest
to a target, as the field compares models (LRGB at 500k parameters).

:func:`width_for_budget` counts the parameters of a model at each width (a multiple of ``heads``, so that every model
can be built at it) on the ``meta`` device (no memory, no draw from the random generators) and keeps the width whose
count is the closest to the target; :func:`widths_for_budget` does so for several models and checks that every count
is within ``tolerance`` (10 %) of the target.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from pyg_ple.bench.models import build_model, count_parameters

__all__ = ['parameter_count', 'width_for_budget', 'widths_for_budget', 'BUDGET_TOLERANCE']

BUDGET_TOLERANCE = 0.1

Settings = Callable[[str, dict[str, Any]], dict[str, Any]]


def parameter_count(name: str, in_channels: Any, num_outputs: int, hparams: Mapping[str, Any],
                    settings: Settings | None = None) -> int:
    """The trainable parameters of model ``name`` built with ``hparams`` (passed through ``settings(name, hparams)``
    first, e.g. to make the edge-embedding width follow the width), counted on the ``meta`` device."""
    kwargs = settings(name, dict(hparams)) if settings is not None else dict(hparams)
    with torch.device('meta'):
        return count_parameters(build_model(name, in_channels, num_outputs, **kwargs))


def width_for_budget(name: str, target: int, in_channels: Any, num_outputs: int,
                     hparams: Mapping[str, Any] | None = None, settings: Settings | None = None,
                     max_width: int = 4096) -> tuple[int, int]:
    """``(width, parameters)``: the width (a multiple of ``hparams['heads']``, default 4) at which model ``name`` has
    the parameter count closest to ``target`` (ties: the narrower), and that count. The other hyper-parameters are
    ``hparams``. Raises ``ValueError`` for a ``target`` below 1 or above the count at ``max_width``."""
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError(f'target must be an integer >= 1, got {target!r}')
    hparams = dict(hparams or {})
    step = int(hparams.get('heads', 4))
    best: tuple[int, int] | None = None
    for width in range(step, max_width + 1, step):
        count = parameter_count(name, in_channels, num_outputs, {**hparams, 'hidden': width}, settings)
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (width, count)
        if count >= target:  # the count grows with the width: nothing wider comes closer
            return best
    raise ValueError(f'target {target:,} parameters: model {name!r} has {best[1]:,} at the widest width tried '
                     f'({max_width})')


def widths_for_budget(names: Sequence[str], target: int, in_channels: Any, num_outputs: int,
                      hparams: Mapping[str, Any] | None = None, settings: Settings | None = None,
                      tolerance: float = BUDGET_TOLERANCE) -> dict[str, tuple[int, int]]:
    """:func:`width_for_budget` of every model of ``names``: ``{name: (width, parameters)}``. Raises ``ValueError``
    naming the models whose closest count is more than ``tolerance`` (a fraction) away from ``target``."""
    out = {name: width_for_budget(name, target, in_channels, num_outputs, hparams, settings) for name in names}
    off = [f'{name} ({count:,} at width {width})' for name, (width, count) in out.items()
           if abs(count - target) > tolerance * target]
    if off:
        raise ValueError(f'target {target:,} parameters: no width puts {", ".join(off)} within '
                         f'{tolerance:.0%} of it; change the target, --heads or --layers')
    return out
