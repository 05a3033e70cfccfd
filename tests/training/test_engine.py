"""The fine-tuning loop: settings, budget, sampling, validation, stopping, batching."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
import warnings

import numpy as np
import pytest
import torch

from moirai_moe_sk.exceptions import FineTuneWarning
from moirai_moe_sk.training import (
    DEFAULT_LEARNING_RATES,
    STRATEGIES,
    TrainingConfig,
    TrainingSeries,
    admissible_windows,
    engine,
    fine_tune,
    planned_steps,
    validation_nll,
)
from moirai_moe_sk.training.data import WindowSpec, tokens_in
from moirai_moe_sk.training.engine import _loss, _lr_factor, _split, _WindowSampler

from _helpers import make_tiny_model

P = 16


def _series(length=160, dim=1, n_cov=0, seed=0, missing=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    y = 5 + np.sin(t / 5 + rng.uniform(0, 6, size=dim)) * rng.uniform(1, 3, size=dim)
    y = (y + 0.1 * rng.normal(size=y.shape)).astype(np.float32)
    observed = rng.random(y.shape) >= missing
    observed[:P] = True  # every variate observed somewhere
    cov = rng.normal(size=(length, n_cov)).astype(np.float32) if n_cov else None
    return TrainingSeries(
        np.where(observed, y, 0).astype(np.float32),
        observed,
        cov,
        None if cov is None else np.ones_like(cov, dtype=bool),
    )


def _data(n=3, **kwargs):
    return [_series(seed=i, **kwargs) for i in range(n)]


def _config(**overrides):
    """Cheap settings: six steps of four windows, validated every two steps."""
    settings = {
        "context_length": 64,
        "prediction_length": 16,
        "learning_rate": 1e-3,
        "max_steps": 6,
        "eval_every": 2,
        "batch_size": 4,
        "validation_fraction": 0.2,
        "progress": False,
    }
    return TrainingConfig(**{**settings, **overrides})


def _model(**overrides):
    return make_tiny_model(**{"num_layers": 1, "num_experts": 4, **overrides})


def _history(result):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _steps(result):
    return [h["step"] for h in result.history]


def _row(result, step):
    """The history entry of the validation at ``step``."""
    (entry,) = [h for h in result.history if h["step"] == step]
    return entry


def _fine_tune_warnings(*args, **kwargs):
    """Run fine_tune; return its result and the FineTuneWarnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FineTuneWarning)
        result = fine_tune(*args, **kwargs)
    fine = [w for w in caught if issubclass(w.category, FineTuneWarning)]
    others = [w for w in caught if not issubclass(w.category, FineTuneWarning)]
    assert not others, [str(w.message) for w in others]
    return result, fine


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0),
        ("learning_rate", -1),
        ("learning_rate", 2),
        ("learning_rate", float("nan")),
        ("learning_rate", float("inf")),
        ("learning_rate", True),
        ("learning_rate", "0.1"),
        ("validation_fraction", 1.0),
        ("validation_fraction", -0.1),
        ("validation_fraction", float("nan")),
        ("lora_rank", 0),
        ("lora_rank", 2.5),
        ("strategy", "adapter"),
        ("schedule", "linear"),
        ("mask_ratio", (0.5, 0.2)),
        ("mask_ratio", (-0.1, 0.2)),
        ("mask_ratio", (0.1, 1.0)),
        ("mask_ratio", (0.1, float("nan"))),
        ("context_length", 0),
        ("prediction_length", -16),
        ("max_epochs", 0),
        ("max_epochs", 1.5),
        ("min_steps", 0),
        ("min_steps", None),
        ("max_auto_steps", 0),
        ("eval_every", 0),
        ("eval_every", 2.0),
        ("batch_size", 0),
        ("batch_size", 4.0),
        ("max_steps", 0),
        ("micro_batch_size", 0),
        ("patience", 0),
        ("warmup_steps", -1),
        ("warmup_steps", 1.5),
        ("weight_decay", -0.1),
        ("grad_clip", 0.0),
        ("grad_clip", float("nan")),
        ("seed", -1),
        ("betas", (1.0, 0.9)),
        ("betas", (0.9,)),
        ("eps", 0.0),
        ("lora_alpha", 0.0),
        ("lora_alpha", float("nan")),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=re.escape(field)):
        TrainingConfig(**{field: value})


@pytest.mark.parametrize(
    "settings",
    [
        {"learning_rate": 1.0},
        {"validation_fraction": 0.0},
        {"mask_ratio": (0.0, 0.0)},
        {"max_steps": None, "micro_batch_size": None, "grad_clip": None},
        {"max_epochs": None, "eval_every": None},
        {"max_epochs": 1, "eval_every": 1, "min_steps": 1, "max_auto_steps": 1},
        {"strategy": "lora", "lora_rank": 1, "lora_alpha": 0.5},
        {"schedule": "constant", "warmup_steps": 0, "seed": 0},
    ],
)
def test_edge_settings_are_accepted(settings):
    config = TrainingConfig(**settings)
    for name, value in settings.items():
        assert getattr(config, name) == value


def test_max_auto_steps_below_min_steps_is_rejected():
    with pytest.raises(ValueError, match=r"max_auto_steps \(10\) is below min_steps"):
        TrainingConfig(min_steps=20, max_auto_steps=10)
    TrainingConfig(min_steps=1, max_auto_steps=1)  # equal bounds are fine


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_learning_rate_defaults_per_strategy(strategy):
    assert set(DEFAULT_LEARNING_RATES) == set(STRATEGIES)
    config = TrainingConfig(strategy=strategy)
    assert config.learning_rate == DEFAULT_LEARNING_RATES[strategy]
    # an explicit learning rate wins over the strategy's default
    assert TrainingConfig(strategy=strategy, learning_rate=0.5).learning_rate == 0.5


def test_default_learning_rates():
    # the values chosen by benchmarks/finetune_defaults.py (results in
    # benchmarks/results/finetune_defaults.md): change both together
    assert DEFAULT_LEARNING_RATES == {
        "full": 1e-5,
        "head": 1e-4,
        "freeze-experts": 3e-5,
        "lora": 1e-4,
    }


def test_field_names_and_window_length():
    config = TrainingConfig(context_length=100, prediction_length=20)
    assert config.window_length == 120
    assert set(TrainingConfig.field_names()) == {
        f.name for f in dataclasses.fields(TrainingConfig)
    }


# ----------------------------------------------------------- lr schedule
def test_warm_up_then_cosine_to_zero():
    config = TrainingConfig(warmup_steps=4)
    factors = [_lr_factor(step, 20, config) for step in range(21)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a > b for a, b in itertools.pairwise(factors[4:]))
    assert factors[12] == pytest.approx(0.5)  # half-way through the decay
    assert 0 < factors[19] < 0.01
    assert factors[20] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_after_warm_up():
    config = TrainingConfig(warmup_steps=2, schedule="constant")
    factors = [_lr_factor(step, 10, config) for step in range(10)]
    assert factors == pytest.approx([1 / 3, 2 / 3] + [1.0] * 8)
    assert _lr_factor(0, 10, TrainingConfig()) == 1.0


def test_the_schedule_is_applied_per_step():
    config = _config(
        max_steps=3, eval_every=1, validation_fraction=0.0, learning_rate=0.01
    )
    result = fine_tune(_model(), _data(), config)
    assert _steps(result) == [0, 1, 2, 3]
    # each row has the rate of the last step it follows: a cosine over three
    # steps from 0.01, the last 0.01 * (1 + cos(2 pi / 3)) / 2
    rates = [h["learning_rate"] for h in result.history]
    assert rates == pytest.approx([0.0, 0.01, 0.0075, 0.0025])


# ---------------------------------------------------------------- budget
def test_admissible_windows_are_the_end_points_after_one_patch():
    assert [admissible_windows(n, P) for n in (0, 10, 16, 17, 40, 116)] == [
        0,
        0,
        0,
        1,
        24,
        100,
    ]


@pytest.mark.parametrize(
    ("settings", "windows", "expected"),
    [
        # one epoch of windows, ceil(windows / batch_size) steps, within the bounds
        ({"batch_size": 4, "min_steps": 5, "max_auto_steps": 50}, 100, 25),
        ({"batch_size": 4, "min_steps": 5, "max_auto_steps": 50}, 101, 26),
        # the floor: a short epoch is trained several times over
        ({"batch_size": 32}, 100, 200),
        ({"batch_size": 4, "min_steps": 5, "max_auto_steps": 50}, 8, 5),
        ({"batch_size": 4, "min_steps": 5, "max_auto_steps": 50}, 0, 5),
        # the cap: a long epoch is cut
        ({"batch_size": 32}, 10**6, 1000),
        ({"batch_size": 4, "min_steps": 5, "max_auto_steps": 50}, 1000, 50),
        # max_steps wins over the floor and the cap
        ({"batch_size": 32, "max_steps": 7}, 100, 7),
        ({"batch_size": 32, "max_steps": 5000}, 10**6, 5000),
        # max_epochs caps the planned steps, the floor included ...
        ({"batch_size": 32, "max_epochs": 5}, 100, 20),
        ({"batch_size": 4, "max_epochs": 1, "min_steps": 5}, 10, 3),
        ({"batch_size": 4, "max_epochs": 3, "min_steps": 5}, 10, 5),
        ({"batch_size": 32, "max_epochs": 1}, 10**6, 1000),  # ... not raises them
        # ... and max_steps
        ({"batch_size": 32, "max_epochs": 2, "max_steps": 100}, 100, 8),
        ({"batch_size": 32, "max_epochs": 50, "max_steps": 100}, 100, 100),
    ],
)
def test_planned_steps(settings, windows, expected):
    assert planned_steps(TrainingConfig(**settings), windows) == expected


def test_planned_steps_default_bounds():
    config = TrainingConfig()
    assert (config.min_steps, config.max_auto_steps) == (200, 1000)
    assert config.max_epochs is None
    assert config.max_steps is None
    assert config.eval_every is None


def test_fine_tune_plans_its_steps_from_the_admissible_windows():
    # 3 series of 150 steps, no validation: 3 * 134 = 402 windows, 101 steps of
    # 4 an epoch, clipped to the cap of 7
    series = [_series(150, seed=i) for i in range(3)]
    config = _config(
        validation_fraction=0.0,
        max_steps=None,
        min_steps=5,
        max_auto_steps=7,
        eval_every=3,
    )
    result = fine_tune(_model(), series, config)
    assert _steps(result) == [0, 3, 6, 7]  # every 3 steps, and the last one
    epochs = [h["epoch"] for h in result.history]
    assert epochs == pytest.approx([step * 4 / 402 for step in (0, 3, 6, 7)], abs=1e-4)


def test_max_epochs_caps_the_steps():
    # 3 series of 40 steps: 3 * 24 = 72 windows, 3 steps of 24 an epoch
    series = [_series(40, seed=i) for i in range(3)]
    settings = {"validation_fraction": 0.0, "batch_size": 24, "eval_every": 1}
    # below the floor of 200 planned steps: two epochs are 6 steps
    result = fine_tune(
        _model(), series, _config(**settings, max_steps=None, max_epochs=2)
    )
    assert _steps(result) == [0, 1, 2, 3, 4, 5, 6]
    assert result.history[-1]["epoch"] == pytest.approx(2.0)
    assert result.history[3]["epoch"] == pytest.approx(1.0)
    # it caps max_steps as well, but never raises it
    result = fine_tune(
        _model(), series, _config(**settings, max_steps=10, max_epochs=2)
    )
    assert result.history[-1]["step"] == 6
    result = fine_tune(_model(), series, _config(**settings, max_steps=4, max_epochs=2))
    assert result.history[-1]["step"] == 4


def test_default_validation_cadence_is_ten_times_a_run():
    config = _config(validation_fraction=0.0, max_steps=25, eval_every=None)
    result = fine_tune(_model(), _data(), config)
    # every ceil(25 / 10) = 3 steps, and at the last step
    assert _steps(result) == [*range(0, 25, 3), 25]
    config = _config(validation_fraction=0.0, max_steps=4, eval_every=None)
    assert _steps(fine_tune(_model(), _data(), config)) == [0, 1, 2, 3, 4]


def test_eval_every_longer_than_the_run_validates_at_the_end():
    config = _config(max_steps=3, eval_every=50)
    result = fine_tune(_model(), _data(), config)
    assert _steps(result) == [0, 3]
    assert math.isfinite(result.history[-1]["val_nll"])


def test_train_nll_is_the_mean_since_the_previous_validation():
    # validation does not touch the training draws: validating every step or
    # every other one trains the same steps
    settings = {"max_steps": 6, "learning_rate": 1e-2, "patience": 10}
    every = fine_tune(_model(), _data(), _config(**settings, eval_every=1))
    other = fine_tune(_model(), _data(), _config(**settings, eval_every=2))
    assert _steps(every) == [0, 1, 2, 3, 4, 5, 6]
    assert _steps(other) == [0, 2, 4, 6]
    per_step = [h["train_nll"] for h in every.history[1:]]
    # univariate windows: each step scores batch_size groups, so a plain mean
    expected = [(a + b) / 2 for a, b in zip(per_step[::2], per_step[1::2], strict=True)]
    assert [h["train_nll"] for h in other.history[1:]] == pytest.approx(expected)
    for step in (2, 4, 6):
        assert _row(other, step)["val_nll"] == pytest.approx(
            _row(every, step)["val_nll"], rel=1e-6
        )
        assert _row(other, step)["learning_rate"] == _row(every, step)["learning_rate"]


# ------------------------------------------------------- reproducibility
def test_fine_tune_is_reproducible_and_leaves_the_global_rng_alone():
    model = _model(dropout_p=0.1, attn_dropout_p=0.1)  # dropout draws numbers
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        torch_state = torch.get_rng_state()
        numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state)
        first = fine_tune(model, _data(), _config(seed=3))
        assert torch.equal(torch.get_rng_state(), torch_state)
        after = np.random.get_state()  # noqa: NPY002
        assert after[0] == numpy_state[0]
        assert np.array_equal(after[1], numpy_state[1])
        torch.manual_seed(999)  # the caller's random state does not matter
        second = fine_tune(model, _data(), _config(seed=3))
        other = fine_tune(model, _data(), _config(seed=4))
    assert _same_weights(first.model, second.model)
    assert _history(first) == _history(second)
    assert not _same_weights(first.model, other.model)
    assert _history(first) != _history(other)


def test_the_input_model_is_not_modified():
    model = _model()
    before = copy.deepcopy(model)
    result = fine_tune(model, _data(), _config(learning_rate=0.01))
    assert _same_weights(model, before)
    assert not model.training
    assert not model.encoder.gradient_checkpointing
    assert not _same_weights(result.model, before)


# ------------------------------------------------------------ validation
def test_validation_tails_are_held_out_of_training():
    series = [_series(200), _series(40, seed=1), _series(30, seed=2)]
    config = _config(validation_fraction=0.1)
    lengths, windows = _split(series, config, P)
    # 200 steps: a tail of max(16, 20) steps, rounded up to 32
    # 40 steps: a tail of 16; 30 steps: too short to hold one out
    assert lengths == [168, 24, 30]
    assert windows == [
        WindowSpec(0, 200, 96, prediction_tokens=2, score_tokens=2),
        WindowSpec(1, 40, 40, prediction_tokens=1, score_tokens=1),
    ]
    assert _split(series, _config(validation_fraction=0.0), P) == ([200, 40, 30], [])


def test_history_starts_with_the_initial_validation_nll():
    series = _data()
    model = _model()
    config = _config()
    result = fine_tune(model, series, config)
    first = result.history[0]
    assert first["epoch"] == 0
    assert first["step"] == 0
    assert first["train_nll"] is None
    assert first["learning_rate"] == 0.0
    lengths, windows = _split(series, config, P)
    assert first["val_nll"] == result.initial_val_nll
    assert result.initial_val_nll == pytest.approx(
        validation_nll(model, series, windows), rel=1e-6
    )
    # one row per validation: every eval_every = 2 steps of the 6
    assert _steps(result) == [0, 2, 4, 6]
    # epochs of windows trained so far: step * batch_size / admissible windows
    total = sum(admissible_windows(n, P) for n in lengths)
    assert total == 3 * (128 - P)
    assert [h["epoch"] for h in result.history] == pytest.approx(
        [step * 4 / total for step in (0, 2, 4, 6)], abs=1e-4
    )
    assert all(isinstance(h["epoch"], float) for h in result.history[1:])
    assert all(math.isfinite(h["train_nll"]) for h in result.history[1:])
    assert all(math.isfinite(h["val_nll"]) for h in result.history)
    assert all(h["learning_rate"] > 0 for h in result.history[1:])
    assert set(first) == {
        "epoch",
        "step",
        "train_nll",
        "val_nll",
        "learning_rate",
        "seconds",
    }


def test_fine_tuning_never_returns_a_worse_model():
    series = _data()
    model = _model()
    config = _config(learning_rate=1.0, max_steps=6, patience=5)
    with pytest.warns(FineTuneWarning):
        result = fine_tune(model, series, config)
    vals = [h["val_nll"] for h in result.history]
    initial = result.initial_val_nll
    assert len(vals) == 4  # never stalled for 5 validations: every one ran
    assert all(not math.isfinite(v) or v > initial for v in vals[1:])  # wrecked
    assert result.best_step == 0
    assert result.best_val_nll == initial
    assert result.best_val_nll == min(v for v in vals if math.isfinite(v))
    _, windows = _split(series, config, P)
    recomputed = validation_nll(result.model, series, windows)
    assert recomputed == pytest.approx(result.best_val_nll, rel=1e-6)
    assert _same_weights(result.model, model)


#: a rate at which the validation NLL falls, rises and falls again (measured,
#: validated every 2 steps: 3.03, 2.91, 2.04, 1.93, 1.98, 2.27, 1.78, 1.82, 1.65,
#: 1.62, 1.57, 1.72, 1.66, 1.66, 1.63, 1.44, 1.64, 1.4, 1.32, 1.26, 1.12)
BUMPY = {
    "learning_rate": 0.05,
    "schedule": "constant",
    "warmup_steps": 4,
    "max_steps": 40,
    "eval_every": 2,
}


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_after_patience_validations_without_improvement(patience):
    result = fine_tune(_model(), _data(), _config(**BUMPY, patience=patience))
    last = result.history[-1]["step"]
    assert last < 40  # stopped early
    assert 0 < result.best_step < last
    # exactly `patience` validations after the best, none of them better
    rows = [h for h in result.history if h["step"] > result.best_step]
    assert len(rows) == patience
    assert last == result.best_step + patience * 2
    assert all(not h["val_nll"] < result.best_val_nll for h in rows)
    assert _row(result, result.best_step)["val_nll"] == result.best_val_nll
    # and no validation before the best stalled `patience` times in a row
    vals = [h["val_nll"] for h in result.history if h["step"] <= result.best_step]
    stale, best = 0, vals[0]
    for v in vals[1:]:
        stale, best = (0, v) if v < best else (stale + 1, best)
        assert stale < patience


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_when_training_only_gets_worse(patience):
    config = _config(learning_rate=1.0, max_steps=20, patience=patience)
    with pytest.warns(FineTuneWarning):
        result = fine_tune(_model(), _data(), config)
    # the starting weights stay best: stop after `patience` validations
    assert result.best_step == 0
    assert _steps(result) == [2 * i for i in range(patience + 1)]


def test_the_best_step_is_restored_not_the_last():
    series = _data()
    config = _config(**{**BUMPY, "max_steps": 10}, patience=10)
    result = fine_tune(_model(), series, config)
    vals = [h["val_nll"] for h in result.history]
    assert _steps(result) == [0, 2, 4, 6, 8, 10]  # ran every step
    assert result.best_step == 6
    assert result.best_val_nll == min(vals) < vals[-1]
    _, windows = _split(series, config, P)
    assert validation_nll(result.model, series, windows) == pytest.approx(
        result.best_val_nll, rel=1e-6
    )
    # the weights of step 6: what a run of 6 steps (same draws, same constant
    # rate after the warm-up) ends with, not the last ones of step 10
    stopped = fine_tune(_model(), series, dataclasses.replace(config, max_steps=6))
    assert stopped.best_step == 6
    assert _same_weights(result.model, stopped.model)
    last = fine_tune(
        _model(), series, dataclasses.replace(config, validation_fraction=0.0)
    )
    assert last.best_step == 10
    assert not _same_weights(result.model, last.model)


def test_no_validation_trains_every_step_and_keeps_the_last_weights():
    series = [_series(150, seed=i) for i in range(3)]
    config = _config(validation_fraction=0.0, learning_rate=0.05, schedule="constant")
    result, caught = _fine_tune_warnings(_model(), series, config)
    assert not caught
    assert result.initial_val_nll is None
    assert result.best_val_nll is None
    assert all(h["val_nll"] is None for h in result.history)
    assert _steps(result) == [0, 2, 4, 6]
    assert result.best_step == 6
    # the last weights: the 6 steps' weights, not those of the 4 first
    shorter = fine_tune(_model(), series, dataclasses.replace(config, max_steps=4))
    again = fine_tune(_model(), series, config)
    assert _same_weights(result.model, again.model)
    assert not _same_weights(result.model, shorter.model)
    assert not _same_weights(result.model, _model())
    # even weights wrecked to NaN (rate 1) are kept, without a FineTuneWarning
    wrecked, caught = _fine_tune_warnings(
        _model(), series, dataclasses.replace(config, learning_rate=1.0)
    )
    assert not caught
    assert wrecked.best_step == 6
    assert any(torch.isnan(p).any() for p in wrecked.model.parameters())


def _spy_on_training_batches(monkeypatch):
    """Record the windows of every training step (``_loss`` with ``backward``)."""
    steps = []
    loss = engine._loss

    def spy(model, series, windows, micro, device, backward):
        if backward:
            steps.append(list(windows))
        return loss(model, series, windows, micro, device, backward)

    monkeypatch.setattr(engine, "_loss", spy)
    return steps


def test_series_of_different_layouts_each_get_trained(monkeypatch):
    steps = _spy_on_training_batches(monkeypatch)
    series = [_series(64), _series(64, dim=2, seed=1), _series(64, n_cov=1, seed=2)]
    config = _config(validation_fraction=0.0, max_steps=12, batch_size=4)
    result = fine_tune(_model(), series, config)
    assert result.history[-1]["step"] == 12
    assert len(steps) == 12
    layouts = []
    for windows in steps:
        assert len(windows) == 4
        (layout,) = {windows_layout(series, w) for w in windows}  # never mixed
        layouts.append(layout)
    assert set(layouts) == {(1, 0), (2, 0), (1, 1)}  # every layout trains


def windows_layout(series, window):
    s = series[window.series]
    return (s.target.shape[1], s.num_covariates)


# ------------------------------------------------------------- sampling
def _sampler(series, lengths=None, batch_size=4, seed=0, **settings):
    config = _config(batch_size=batch_size, **settings)
    lengths = [len(s) for s in series] if lengths is None else lengths
    return _WindowSampler(series, lengths, config, P, np.random.default_rng(seed))


def test_sampler_draws_every_end_point_of_one_short_series():
    sampler = _sampler([_series(40)], batch_size=4)
    assert sampler.total == admissible_windows(40, P) == 24
    ends = []
    for _ in range(200):
        windows = sampler.draw()
        assert len(windows) == 4
        for w in windows:
            assert w.series == 0
            assert P < w.end <= 40
            assert w.length == min(80, w.end)
            assert 1 <= w.prediction_tokens <= tokens_in(w.length, P) - 1
            assert w.score_tokens is None
        ends.extend(w.end for w in windows)
    # 800 windows: every admissible end point, about uniformly (33 each)
    counts = np.bincount(ends, minlength=41)[P + 1 :]
    assert len(counts) == 24
    assert counts.min() >= 15
    assert counts.max() <= 55


def test_sampler_draws_every_end_point_of_a_long_series():
    # window_length 80: ends before 80 give shorter, left-padded windows
    sampler = _sampler([_series(300)], batch_size=32)
    ends = {w.end for _ in range(100) for w in sampler.draw()}
    assert min(ends) <= P + 5
    assert max(ends) >= 295
    assert len(ends) > 0.9 * admissible_windows(300, P)


def test_sampler_weights_series_by_their_windows_and_skips_short_ones():
    series = [_series(16), _series(116, seed=1), _series(36, seed=2), _series(5)]
    sampler = _sampler(series, batch_size=10)
    assert sampler.total == 100 + 20
    drawn = np.bincount(
        [w.series for _ in range(300) for w in sampler.draw()], minlength=4
    )
    assert drawn[0] == drawn[3] == 0  # at most one patch: no window
    assert drawn[1] / drawn.sum() == pytest.approx(100 / 120, abs=0.03)


def test_sampler_never_mixes_layouts_in_one_step():
    series = [
        _series(64),
        _series(100, seed=1),
        _series(64, dim=2, seed=2),
        _series(80, n_cov=1, seed=3),
        _series(60, dim=2, n_cov=1, seed=4),
    ]
    sampler = _sampler(series, batch_size=8)
    windows = {
        "(1, 0)": (64 - P) + (100 - P),
        "(2, 0)": 64 - P,
        "(1, 1)": 80 - P,
        "(2, 1)": 60 - P,
    }
    assert sampler.total == sum(windows.values())
    drawn = dict.fromkeys(windows, 0)
    for _ in range(600):
        batch = sampler.draw()
        layouts = {str(windows_layout(series, w)) for w in batch}
        assert len(layouts) == 1
        drawn[layouts.pop()] += 1
    # a layout is drawn in proportion to its windows
    for key, count in windows.items():
        assert drawn[key] / 600 == pytest.approx(count / sampler.total, abs=0.06)


def test_sampler_is_seeded():
    series = _data()

    def draws(seed):
        sampler = _sampler(series, seed=seed)
        return [sampler.draw() for _ in range(5)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)


# ---------------------------------------------------------- warning
def test_keeping_the_starting_weights_warns_naming_the_learning_rate():
    model = _model()
    config = _config(learning_rate=1.0)
    with pytest.warns(FineTuneWarning, match="learning_rate") as caught:
        result = fine_tune(model, _data(), config)
    assert result.best_step == 0
    assert _same_weights(result.model, model)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"{result.initial_val_nll:.4f}" in message
    assert "starting weights were kept" in message
    assert "learning rate 1" in message
    assert "max_steps" in message
    assert "validation_fraction" in message
    assert issubclass(FineTuneWarning, UserWarning)


def test_no_warning_when_training_improved():
    result, caught = _fine_tune_warnings(_model(), _data(), _config(learning_rate=1e-2))
    assert not caught
    assert result.best_step > 0
    assert result.best_val_nll < result.initial_val_nll


# ------------------------------------------------------------- batching
def _windows():
    return [
        WindowSpec(0, 160, 80, 2),
        WindowSpec(1, 120, 80, 1),
        WindowSpec(2, 50, 50, 1),
        WindowSpec(0, 90, 80, 3),
        WindowSpec(1, 160, 40, 1),
    ]


def _gradients(model, series, micro):
    model = copy.deepcopy(model).train()
    model.zero_grad()
    total, groups = _loss(model, series, _windows(), micro, torch.device("cpu"), True)
    grads = {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }
    return total / groups, grads


# Without the normal of fixed scale 1e-3, whose log-density amplifies float32
# rounding (the packing of a window alone differs from the packing of a batch),
# micro-batched gradients match the full batch's closely.
SMOOTH = ("student_t", "negative_binomial", "log_normal")


def test_micro_batches_accumulate_the_full_batch_gradient():
    model = _model(mixture_components=SMOOTH)
    series = _data(missing=0.3)  # groups with different numbers of values
    loss, full = _gradients(model, series, 5)
    assert len(full) == len(list(model.parameters()))
    for micro in (1, 2):
        micro_loss, grads = _gradients(model, series, micro)
        assert micro_loss == pytest.approx(loss, rel=1e-5)
        assert grads.keys() == full.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, full[name], rtol=1e-4, atol=1e-6)


def test_micro_batch_size_does_not_change_a_training_step():
    series = _data(missing=0.3)
    settings = {"validation_fraction": 0.0, "max_steps": 1, "batch_size": 5}
    model = _model(mixture_components=SMOOTH)
    full = fine_tune(model, series, _config(**settings))
    for micro in (1, 2):
        part = fine_tune(model, series, _config(**settings, micro_batch_size=micro))
        assert part.history[-1]["step"] == 1
        assert part.history[-1]["train_nll"] == pytest.approx(
            full.history[-1]["train_nll"], rel=1e-5
        )
        state = full.model.state_dict()
        for name, tensor in part.model.state_dict().items():
            torch.testing.assert_close(tensor, state[name], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_result():
    series = _data()
    settings = {"validation_fraction": 0.0, "max_steps": 3, "learning_rate": 1e-2}
    model = make_tiny_model(num_experts=4)  # two layers
    plain = fine_tune(model, series, _config(**settings))
    checkpointed = fine_tune(
        model, series, _config(**settings, gradient_checkpointing=True)
    )
    assert not checkpointed.model.encoder.gradient_checkpointing
    state = plain.model.state_dict()
    for name, tensor in checkpointed.model.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=1e-5, atol=1e-6)
    assert not _same_weights(plain.model, model)


# --------------------------------------------------------------- data
def test_multivariate_series_with_covariates_train():
    series = [
        _series(160, dim=2, n_cov=2, seed=0, missing=0.1),
        _series(160, dim=2, n_cov=2, seed=1),
        _series(120, dim=1, seed=2),
    ]
    result = fine_tune(_model(), series, _config(learning_rate=1e-2))
    assert math.isfinite(result.initial_val_nll)
    assert math.isfinite(result.best_val_nll)
    assert result.best_val_nll <= result.initial_val_nll
    assert all(math.isfinite(h["train_nll"]) for h in result.history[1:])
    assert all(math.isfinite(h["val_nll"]) for h in result.history)


def test_all_series_too_short_is_an_error():
    series = [_series(16), _series(10, seed=1)]
    with pytest.raises(ValueError, match="too short"):
        fine_tune(_model(), series, _config())


def test_short_series_are_skipped_when_others_are_long_enough(monkeypatch):
    steps = _spy_on_training_batches(monkeypatch)
    series = [_series(16), _series(120, seed=1)]
    config = _config(
        validation_fraction=0.0, max_steps=None, min_steps=1, batch_size=26
    )
    result = fine_tune(_model(), series, config)
    # the 120 steps have 104 admissible windows, the 16 none: 4 steps of 26
    assert result.history[-1]["step"] == 4
    assert result.history[-1]["epoch"] == pytest.approx(1.0)
    assert {w.series for windows in steps for w in windows} == {1}


def test_a_variate_without_observations_is_an_error():
    y = np.ones((100, 2), dtype=np.float32)
    observed = np.ones_like(y, dtype=bool)
    observed[:, 1] = False
    with pytest.raises(ValueError, match="without any observed value"):
        fine_tune(_model(), [TrainingSeries(y, observed)], _config())


def test_no_series_is_an_error():
    with pytest.raises(ValueError, match="no series"):
        fine_tune(_model(), [], _config())


def test_validation_nll_without_windows_is_none():
    assert validation_nll(_model(), _data(), []) is None
