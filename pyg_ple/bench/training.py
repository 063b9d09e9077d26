"""The one training loop of pyg-ple, with atomic checkpoints and exact resume.

Every model in the project (graph classifiers, node classifiers, language models) is trained by :func:`fit`:

>>> result = fit(model, loader, TrainConfig(epochs=50, lr=1e-3, checkpoint_path='run.pt', resume=True),
...              loss_fn=lambda m, batch: F.cross_entropy(m(batch), batch.y),
...              evaluate=lambda m: {'val_loss': ..., 'val_acc': ...})
>>> model.load_state_dict(result.best_state)

``train_data`` is iterated once per epoch (a ``DataLoader``, a list of batches, or any re-iterable object; for a
language model one "epoch" may be a fixed number of sampled batches). ``loss_fn(model, batch)`` returns the scalar loss
of one batch; ``evaluate(model)`` (optional, called after every epoch with the model in eval mode under
``torch.no_grad``) returns a dict of metrics. ``monitor``/``mode`` choose the metric for early stopping and for the best
state.

Checkpoints hold the model, optimiser, scheduler, the RNG states of torch, numpy and python (plus the ``generator`` of
the data loader or its sampler, if there is one), the epoch, the history, the best-so-far state and the early-stopping
counter, all as tensors and plain data: they are read back with ``torch.load(weights_only=True)``, so a checkpoint from
elsewhere cannot run code (:func:`pyg_ple.bench.io.load_torch_file`). They are written atomically (a temporary file in
the same folder, then ``os.replace``), so a process killed at any moment leaves either the previous checkpoint or the
new one, never a torn file. With ``resume=True`` training continues from the last checkpoint; on CPU the resumed run
reproduces the loss curve of an uninterrupted run exactly, because the RNG states (which also drive ``DataLoader``
shuffling and dropout) are restored bit for bit.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from pyg_ple.bench.distributed import all_reduce_sums, is_main_process, unwrap_model
from pyg_ple.bench.io import RunFileError, atomic_torch_save, load_torch_file

__all__ = ['TrainConfig', 'TrainResult', 'build_optimizer', 'build_scheduler', 'fit', 'get_rng_state',
           'is_recipe_value', 'move_to_device', 'seed_everything', 'set_rng_state']

CHECKPOINT_VERSION = 2


# --------------------------------------------------------------------------------------------------------------------
# RNG handling
# --------------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and, if present, CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _data_generators(train_data: Any) -> dict[str, torch.Generator]:
    """The torch generators that drive shuffling of ``train_data`` and are not the global RNG."""
    gens: dict[str, torch.Generator] = {}
    gen = getattr(train_data, 'generator', None)
    if isinstance(gen, torch.Generator):
        gens['loader'] = gen
    sampler = getattr(train_data, 'sampler', None)
    gen = getattr(sampler, 'generator', None)
    if isinstance(gen, torch.Generator) and all(gen is not g for g in gens.values()):
        gens['sampler'] = gen
    batch_sampler = getattr(train_data, 'batch_sampler', None)
    gen = getattr(getattr(batch_sampler, 'sampler', None), 'generator', None)
    if isinstance(gen, torch.Generator) and all(gen is not g for g in gens.values()):
        gens['batch_sampler'] = gen
    return gens


def get_rng_state(train_data: Any = None) -> dict[str, Any]:
    """Snapshot of every RNG that influences training (python, numpy, torch, CUDA, data-loader generators), as
    tensors and plain data."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        'python': random.getstate(),
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    state['data'] = {k: g.get_state() for k, g in _data_generators(train_data).items()}
    return state


def set_rng_state(state: dict[str, Any], train_data: Any = None) -> None:
    """Restore a snapshot taken by :func:`get_rng_state`."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gaussian = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    gens = _data_generators(train_data)
    for key, gstate in state.get('data', {}).items():
        if key in gens:
            gens[key].set_state(gstate)


# --------------------------------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    Args:
        epochs: maximum number of epochs.
        lr, weight_decay: for the optimiser ``fit`` builds when it gets none (see ``optimizer``).
        patience: early stopping after this many epochs without improvement of the monitored metric (None: never).
        device: where the model and batches go.
        seed: seeds python, numpy and torch at the start of a fresh run (not on resume: the RNG states are restored).
        checkpoint_path: file for checkpoints (None: no checkpoints).
        checkpoint_every: write a checkpoint every this many epochs (and always after the last one).
        resume: continue from ``checkpoint_path`` if it exists (a finished run is returned without training).
        progress: show a tqdm bar over epochs.
        progress_metrics: metrics of ``evaluate`` the bar shows next to the training loss (default: the monitored
            one).
        desc: label of the progress bar.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        optimizer: the optimiser ``fit`` builds when it gets none: ``'adam'`` (``torch.optim.Adam``) or ``'adamw'``
            (``torch.optim.AdamW``, decoupled weight decay).
        schedule: the learning-rate schedule ``fit`` builds when it gets no scheduler, stepped once per epoch:
            ``None`` (constant), ``'cosine'`` (linear warm-up from ``lr / warmup_epochs`` to ``lr`` over
            ``warmup_epochs`` epochs, then ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 towards 1 over the
            remaining epochs) or ``'step'`` (``torch.optim.lr_scheduler.StepLR``: times ``decay_gamma`` every
            ``decay_every`` epochs).
        ema_decay: keep an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``,
            BatchNorm statistics included), updated after every optimiser step as ``avg <- ema_decay * avg +
            (1 - ema_decay) * weights``; ``evaluate`` then sees the averaged model and ``best_state`` is its weights
            (None: no averaging).
    """

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = None
    device: str = 'cpu'
    seed: int = 0
    checkpoint_path: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: bool = False
    progress: bool = True
    progress_metrics: tuple[str, ...] = ()
    desc: str = ''
    grad_clip: float | None = None
    optimizer: str = 'adam'
    schedule: str | None = None
    warmup_epochs: int = 0
    decay_every: int = 50
    decay_gamma: float = 0.5
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        for name, ok in (('optimizer', self.optimizer in OPTIMIZERS),
                         ('schedule', self.schedule in SCHEDULES),
                         ('warmup_epochs', _is_int(self.warmup_epochs) and self.warmup_epochs >= 0),
                         ('decay_every', _is_int(self.decay_every) and self.decay_every >= 1),
                         ('decay_gamma', _is_number(self.decay_gamma) and 0 < self.decay_gamma <= 1),
                         ('grad_clip', self.grad_clip is None or _is_number(self.grad_clip) and self.grad_clip > 0),
                         ('ema_decay', self.ema_decay is None
                          or _is_number(self.ema_decay) and 0 < self.ema_decay < 1)):
            if not ok:
                raise ValueError(f"'{name}' must be {RECIPE_RULES[name]} (got {getattr(self, name)!r})")


OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = (None, 'cosine', 'step')
# What each field of the training recipe must be (the messages of TrainConfig and of the benchmark's settings).
RECIPE_RULES = {'optimizer': "'adam' or 'adamw'", 'schedule': "null/None (constant), 'cosine' or 'step'",
                'warmup_epochs': 'an integer >= 0', 'decay_every': 'an integer >= 1',
                'decay_gamma': 'a number in (0, 1]', 'grad_clip': 'a number > 0 (or null/None: no clipping)',
                'ema_decay': 'a number in (0, 1) (or null/None: no weight averaging)'}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_recipe_value(key: str, value: Any) -> bool:
    """Whether :class:`TrainConfig` accepts ``value`` for its recipe field ``key`` (see :data:`RECIPE_RULES`)."""
    try:
        TrainConfig(**{key: value})
    except (ValueError, TypeError):
        return False
    return True


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``config.optimizer`` over the model's parameters with ``config.lr`` and
    ``config.weight_decay``."""
    cls = torch.optim.AdamW if config.optimizer == 'adamw' else torch.optim.Adam
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The per-epoch learning-rate scheduler ``config.schedule`` (see :class:`TrainConfig`), or ``None``."""
    if config.schedule == 'step':
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.decay_every, gamma=config.decay_gamma)
    if config.schedule != 'cosine':
        return None
    warmup, decay = config.warmup_epochs, max(config.epochs - config.warmup_epochs, 1)

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup, decay) / decay))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    ``history`` has one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``lr``, ``time`` (seconds of the epoch,
    training + evaluation) and the metrics returned by ``evaluate``. ``best_state`` is a CPU copy of the model's
    ``state_dict`` at ``best_epoch`` (the last epoch if there is nothing to monitor); ``best_metrics`` is the history
    entry of that epoch. ``fit`` leaves the model in its final state; load ``best_state`` to get the selected one.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    resumed_from_epoch: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def losses(self) -> list[float]:
        return [h['train_loss'] for h in self.history]

    @property
    def seconds_per_epoch(self) -> float:
        times = [h['time'] for h in self.history if 'time' in h]
        return float(np.mean(times)) if times else float('nan')


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------
def move_to_device(batch: Any, device: torch.device | str) -> Any:
    """Move a batch (tensor, PyG ``Data``/``Batch``, or nested tuple/list/dict of them) to ``device``."""
    if isinstance(batch, (Tensor, nn.Module)) or hasattr(batch, 'to') and callable(batch.to):
        return batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, '_fields'):  # namedtuple
        return type(batch)(*(move_to_device(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    return batch


def _cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to('cpu', copy=True) for k, v in model.state_dict().items()}


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if mode == 'min' else value > best


def _averaged_model(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """The exponential moving average of ``model``'s weights and buffers (of the module inside a DDP wrapper)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _step_scheduler(scheduler: Any, metrics: dict[str, float], monitor: str) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metrics[monitor])
    else:
        scheduler.step()


def _load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = load_torch_file(path, 'a training checkpoint written by pyg_ple.bench.training.fit')
    if not isinstance(ckpt, dict) or ckpt.get('version') != CHECKPOINT_VERSION:
        found = ckpt.get('version') if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RunFileError(f'{path} is not a training checkpoint of this version of pyg-ple (version {found}, '
                           f'expected {CHECKPOINT_VERSION}); delete it to train that run from the start')
    return ckpt


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_data: Iterable,
    config: TrainConfig,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    monitor: str = 'val_loss',
    mode: str = 'min',
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.epochs`` epochs over ``train_data``; see the module docstring.

    ``monitor`` must be a key of ``evaluate``'s dict or ``'train_loss'``; if it is missing (e.g. no ``evaluate``),
    ``'train_loss'`` is monitored. ``meta`` is stored in the checkpoint as is (e.g. ``{'fold': 3}``) and checked on
    resume: a checkpoint written with a different ``meta`` is refused.
    """
    if mode not in ('min', 'max'):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if config.epochs < 0:
        raise ValueError(f'epochs must be >= 0, got {config.epochs}')
    if config.checkpoint_every < 1:
        raise ValueError(f'checkpoint_every must be >= 1, got {config.checkpoint_every}')
    device = torch.device(config.device)
    model.to(device)
    if optimizer is None:
        optimizer = build_optimizer(model, config)
    if scheduler is None:
        scheduler = build_scheduler(optimizer, config)
    ema = _averaged_model(model, config.ema_decay)
    # The model that is evaluated and whose weights are kept as the best state.
    evaluated = ema.module if ema is not None else model

    def kept_state() -> dict[str, Tensor]:
        if ema is None:
            return _cpu_state_dict(model)
        # The averaged weights under the keys of model.state_dict() (a DDP wrapper prefixes them; the order is the same).
        return {k: v.detach().to('cpu', copy=True)
                for k, v in zip(model.state_dict(), ema.module.state_dict().values())}

    ckpt_path = Path(config.checkpoint_path) if config.checkpoint_path is not None else None
    result = TrainResult()
    best_value: float | None = None
    bad_epochs = 0
    start_epoch = 0
    finished = False

    if config.resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path)
        if ckpt.get('meta') != meta:
            raise RunFileError(f'checkpoint {ckpt_path} was written for {ckpt.get("meta")!r}, not {meta!r}; '
                               'delete it or choose another checkpoint_path')
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        if scheduler is not None and ckpt.get('scheduler') is not None:
            scheduler.load_state_dict(ckpt['scheduler'])
        if ema is not None:
            ema.load_state_dict(ckpt['ema'])
        start_epoch = int(ckpt['epoch'])
        result.history = list(ckpt['history'])
        result.best_epoch = int(ckpt['best_epoch'])
        result.best_state = ckpt['best_state']
        result.best_metrics = dict(ckpt['best_metrics'])
        result.stopped_early = bool(ckpt.get('stopped_early', False))
        result.resumed_from_epoch = start_epoch
        best_value = ckpt['best_value']
        bad_epochs = int(ckpt['bad_epochs'])
        set_rng_state(ckpt['rng'], train_data)
        finished = bool(ckpt.get('finished', False)) or start_epoch >= config.epochs
    else:
        seed_everything(config.seed)

    def save_checkpoint(epoch: int, done: bool) -> None:
        if ckpt_path is None or not is_main_process():  # multi-process: only rank 0 writes
            return
        atomic_torch_save({
            'version': CHECKPOINT_VERSION,
            'meta': meta,
            'config': {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in asdict(config).items()},
            'epoch': epoch,
            'model': model.state_dict(),
            'optimizer': optimizer.state_dict(),
            'scheduler': scheduler.state_dict() if scheduler is not None else None,
            'ema': ema.state_dict() if ema is not None else None,
            'rng': get_rng_state(train_data),
            'history': result.history,
            'best_epoch': result.best_epoch,
            'best_value': best_value,
            'best_state': result.best_state,
            'best_metrics': result.best_metrics,
            'bad_epochs': bad_epochs,
            'stopped_early': result.stopped_early,
            'finished': done,
        }, ckpt_path)

    if finished:
        return result

    bar = None
    if config.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, initial=start_epoch, desc=config.desc or 'train', leave=False,
                   dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            model.train()
            total, count = 0.0, 0
            epoch_sampler = getattr(train_data, 'sampler', None)
            if hasattr(epoch_sampler, 'set_epoch'):  # DistributedSampler: a fresh shuffle per epoch, same on resume
                epoch_sampler.set_epoch(epoch)
            for batch in train_data:
                batch = move_to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(unwrap_model(model))
                total += float(loss.detach())
                count += 1
            # Multi-process: the mean over every rank's batches (the identity in a single process).
            sums = all_reduce_sums({'total': total, 'count': count})
            train_loss = sums['total'] / max(sums['count'], 1)
            record: dict[str, float] = {'epoch': epoch + 1, 'train_loss': train_loss,
                                        'lr': float(optimizer.param_groups[0]['lr'])}
            if evaluate is not None:
                evaluated.eval()
                with torch.no_grad():
                    metrics = evaluate(evaluated)
                record.update({k: float(v) for k, v in metrics.items()})
            key = monitor if monitor in record else 'train_loss'
            _step_scheduler(scheduler, record, key)
            record['time'] = time.perf_counter() - t0
            result.history.append(record)

            value = record[key]
            if _is_better(value, best_value, mode if key == monitor else 'min'):
                best_value = value
                bad_epochs = 0
                result.best_epoch = epoch + 1
                result.best_state = kept_state()
                result.best_metrics = dict(record)
            else:
                bad_epochs += 1
            stop = config.patience is not None and bad_epochs >= config.patience
            result.stopped_early = stop
            last = stop or epoch + 1 == config.epochs
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                save_checkpoint(epoch + 1, last)
            if bar is not None:
                shown = config.progress_metrics or ((key,) if key != 'train_loss' else ())
                bar.set_postfix({'loss': f'{train_loss:.4f}',
                                 **{k: f'{record[k]:.4f}' for k in shown if k in record}})
                bar.update(1)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()

    if result.best_state is None:  # zero epochs
        result.best_state = kept_state()
    return result
