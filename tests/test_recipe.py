"""The training recipe of ``fit``: optimiser choice, learning-rate schedules checked against their formulas, and an
interrupted scheduled run resuming onto the same curve."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyg_ple.bench.io import load_torch_file
from pyg_ple.bench.settings import BenchmarkConfig, check_setting
from pyg_ple.bench.training import TrainConfig, build_optimizer, fit

LR = 0.1


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), batches


def _loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _lrs(config: TrainConfig) -> list[float]:
    model, batches = _problem()
    return [h['lr'] for h in fit(model, batches, config, _loss).history]


def test_cosine_schedule_with_warmup_follows_its_formula():
    epochs, warmup = 10, 3
    got = _lrs(TrainConfig(epochs=epochs, lr=LR, schedule='cosine', warmup_epochs=warmup, progress=False))
    want = [LR * (e + 1) / warmup if e < warmup else
            LR * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup))) for e in range(epochs)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_step_schedule_follows_its_formula_and_no_schedule_keeps_the_rate():
    got = _lrs(TrainConfig(epochs=7, lr=LR, schedule='step', decay_every=3, decay_gamma=0.5, progress=False))
    assert got == pytest.approx([LR * 0.5 ** (e // 3) for e in range(7)], rel=1e-9)
    assert _lrs(TrainConfig(epochs=3, lr=LR, progress=False)) == pytest.approx([LR] * 3)


def test_adamw_is_torch_adamw_with_decoupled_weight_decay():
    cfg = TrainConfig(epochs=3, lr=0.01, weight_decay=0.1, optimizer='adamw', progress=False)
    model, batches = _problem()
    opt = build_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]['weight_decay'] == 0.1
    fit(model, batches, cfg, _loss)
    # the same training written with torch's AdamW directly
    ref, _ = _problem()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(3):
        for batch in batches:
            ref_opt.zero_grad()
            _loss(ref, batch).backward()
            ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    # Adam (L2 in the gradient) ends elsewhere
    adam, _ = _problem()
    fit(adam, batches, TrainConfig(epochs=3, lr=0.01, weight_decay=0.1, progress=False), _loss)
    assert not torch.allclose(adam[0].weight, model[0].weight)


def test_grad_clip_bounds_the_update():
    model, batches = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(model, batches[:1], TrainConfig(epochs=1, grad_clip=1e-3, progress=False), _loss, optimizer=opt)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-4)


def _interrupt_in_epoch_4(problem, config: TrainConfig, *args, **kwargs) -> None:
    """``fit`` on a fresh ``problem()`` with ``config``, killed in the second batch of the fourth epoch."""
    model, batches = problem()
    calls = {'n': 0}

    def dies_in_epoch_4(m, batch):
        calls['n'] += 1
        if calls['n'] > 3 * len(batches) + 1:
            raise KeyboardInterrupt
        return _loss(m, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(model, batches, config, dies_in_epoch_4, *args, **kwargs)


def test_interrupted_scheduled_run_resumes_onto_the_same_curve(tmp_path):
    cfg = dict(epochs=6, lr=LR, optimizer='adamw', weight_decay=0.01, schedule='cosine', warmup_epochs=2,
               grad_clip=1.0, progress=False)
    model, batches = _problem()
    full = fit(model, batches, TrainConfig(**cfg), _loss)
    path = tmp_path / 'run.pt'
    _interrupt_in_epoch_4(_problem, TrainConfig(**cfg, checkpoint_path=path))
    ckpt = load_torch_file(path, 'checkpoint')  # weights_only=True
    assert ckpt['epoch'] == 3 and ckpt['scheduler']['last_epoch'] == 3
    model, _ = _problem(seed=1)  # other weights: everything must come from the checkpoint
    resumed = fit(model, batches, TrainConfig(**cfg, checkpoint_path=path, resume=True), _loss)
    assert resumed.resumed_from_epoch == 3
    assert [h['lr'] for h in resumed.history] == [h['lr'] for h in full.history]
    assert resumed.losses == full.losses


def _bn_problem(seed: int = 0):
    _, batches = _problem(seed)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)), batches


def test_ema_weights_follow_their_formula_and_are_what_is_evaluated_and_kept():
    """ema_decay: after every step avg <- d * avg + (1 - d) * weights (the first step copies), BatchNorm statistics
    included; evaluate sees the average and best_state holds it. Reference: the same training by hand."""
    decay, epochs = 0.8, 3
    model, batches = _bn_problem()
    seen = []

    def evaluate(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {'epoch_seen': len(seen)}

    res = fit(model, batches, TrainConfig(epochs=epochs, lr=0.01, ema_decay=decay, progress=False), _loss, evaluate,
              monitor='epoch_seen', mode='max')  # the last epoch is the best: its state is kept
    ref, _ = _bn_problem()
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    avg, by_epoch = None, []
    for _ in range(epochs):
        ref.train()
        for batch in batches:
            opt.zero_grad()
            _loss(ref, batch).backward()
            opt.step()
            now = {k: v.detach().clone() for k, v in ref.state_dict().items() if v.is_floating_point()}
            avg = now if avg is None else {k: decay * avg[k] + (1 - decay) * now[k] for k in now}
        by_epoch.append(avg)
    assert set(avg) >= {'1.running_mean', '1.running_var', '0.weight'}
    for got, want in zip(seen, by_epoch):
        for k in want:
            torch.testing.assert_close(got[k], want[k])
    for k in avg:
        torch.testing.assert_close(res.best_state[k], avg[k])
    # the model itself ends at the raw weights, which the average is not
    torch.testing.assert_close(model.state_dict()['0.weight'], ref.state_dict()['0.weight'])
    assert not torch.allclose(avg['0.weight'], ref.state_dict()['0.weight'])


def test_interrupted_run_with_ema_resumes_onto_the_same_average(tmp_path):
    cfg = dict(epochs=5, lr=0.01, ema_decay=0.9, progress=False)

    def evaluate(m):
        return {'val': float(m[0].weight.sum())}

    model, batches = _bn_problem()
    full = fit(model, batches, TrainConfig(**cfg), _loss, evaluate, monitor='val', mode='max')
    path = tmp_path / 'run.pt'
    _interrupt_in_epoch_4(_bn_problem, TrainConfig(**cfg, checkpoint_path=path), evaluate, monitor='val', mode='max')
    model, _ = _bn_problem(seed=1)
    resumed = fit(model, batches, TrainConfig(**cfg, checkpoint_path=path, resume=True), _loss, evaluate,
                  monitor='val', mode='max')
    assert resumed.resumed_from_epoch == 3
    assert [h['val'] for h in resumed.history] == [h['val'] for h in full.history]
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.best_state.items():
        torch.testing.assert_close(resumed.best_state[k], v)


@pytest.mark.parametrize('field,value,match', [
    ('optimizer', 'sgd', "'optimizer' must be 'adam' or 'adamw'"),
    ('schedule', 'linear', "'schedule' must be null/None"),
    ('warmup_epochs', -1, "'warmup_epochs' must be an integer >= 0"),
    ('warmup_epochs', 1.5, "'warmup_epochs' must be an integer"),
    ('decay_every', 0, "'decay_every' must be an integer >= 1"),
    ('decay_gamma', 0.0, r"'decay_gamma' must be a number in \(0, 1\]"),
    ('decay_gamma', 1.5, r"'decay_gamma' must be a number in \(0, 1\]"),
    ('grad_clip', 0.0, "'grad_clip' must be a number > 0"),
    ('grad_clip', float('nan'), "'grad_clip' must be a number > 0"),
    ('ema_decay', 1.0, r"'ema_decay' must be a number in \(0, 1\)"),
    ('ema_decay', 0, r"'ema_decay' must be a number in \(0, 1\)"),
    ('ema_decay', True, r"'ema_decay' must be a number in \(0, 1\)"),
])
def test_bad_recipe_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=match.replace(f"'{field}'", field)):
        check_setting(field, value)
    with pytest.raises(ValueError):
        BenchmarkConfig(models=['gcn'], **{field: value})


def test_recipe_reaches_every_run_of_the_benchmark_and_stays_out_of_default_settings():
    assert 'optimizer' not in BenchmarkConfig(models=['gcn']).comparable()
    cfg = BenchmarkConfig(models=['gcn'], optimizer='adamw', schedule='step', grad_clip=2.0, ema_decay=0.99)
    assert {k: cfg.comparable()[k] for k in ('optimizer', 'schedule', 'grad_clip', 'ema_decay')} == {
        'optimizer': 'adamw', 'schedule': 'step', 'grad_clip': 2.0, 'ema_decay': 0.99}
    # a grid may search the recipe too
    BenchmarkConfig(models=['gcn'], grid=[{'schedule': 'cosine', 'warmup_epochs': 5}, {'schedule': None}])


@pytest.mark.slow
def test_every_training_run_of_the_benchmark_gets_the_recipe(tmp_path, monkeypatch):
    import pyg_ple.bench.protocol as protocol
    from pyg_ple.bench.datasets import digits_graphs
    seen = []

    def recording_fit(model, train_data, config, *args, **kwargs):
        result = fit(model, train_data, config, *args, **kwargs)
        seen.append((config, [h['lr'] for h in result.history]))
        return result

    monkeypatch.setattr(protocol, 'fit', recording_fit)
    cfg = BenchmarkConfig(models=['gcn', 'laplacian'], n_folds=2, epochs=3, lr=0.01, optimizer='adamw',
                          schedule='step', decay_every=1, decay_gamma=0.5, grad_clip=1.0, progress=False,
                          hparams=dict(hidden=8, num_layers=1, heads=2), grid=[{}, {'decay_gamma': 0.1}])
    protocol.run_benchmark(digits_graphs(40), cfg, tmp_path / 'run')
    assert len(seen) == 2 * 2 * 2  # models x folds x grid configurations
    for config, lrs in seen:
        assert (config.optimizer, config.schedule, config.grad_clip) == ('adamw', 'step', 1.0)
        assert lrs == pytest.approx([0.01 * config.decay_gamma ** e for e in range(3)])
    assert sorted({config.decay_gamma for config, _ in seen}) == [0.1, 0.5]
