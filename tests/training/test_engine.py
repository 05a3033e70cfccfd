"""The fine-tuning loop: settings, reproducibility, validation, stopping, batching."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
import torch

from moirai_moe_sk.training import (
    TrainingConfig,
    TrainingSeries,
    fine_tune,
    validation_nll,
)
from moirai_moe_sk.training.data import WindowSpec
from moirai_moe_sk.training.engine import _loss, _lr_factor, _split

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
    settings = {
        "context_length": 64,
        "prediction_length": 16,
        "learning_rate": 1e-3,
        "max_epochs": 2,
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
        {"strategy": "lora", "lora_rank": 1, "lora_alpha": 0.5},
        {"schedule": "constant", "warmup_steps": 0, "seed": 0},
    ],
)
def test_edge_settings_are_accepted(settings):
    config = TrainingConfig(**settings)
    for name, value in settings.items():
        assert getattr(config, name) == value


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
        max_epochs=10, max_steps=3, validation_fraction=0.0, learning_rate=0.01
    )
    result = fine_tune(_model(), _data(), config)
    assert result.history[-1]["step"] == 3
    # the last of three steps of a cosine from 0.01: 0.01 * (1 + cos(2 pi / 3)) / 2
    assert result.history[-1]["learning_rate"] == pytest.approx(0.0025)


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
    _, windows = _split(series, config, P)
    assert first["val_nll"] == result.initial_val_nll
    assert result.initial_val_nll == pytest.approx(
        validation_nll(model, series, windows), rel=1e-6
    )
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert all(math.isfinite(h["train_nll"]) for h in result.history[1:])
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
    config = _config(learning_rate=1.0, max_epochs=3, patience=5)
    result = fine_tune(model, series, config)
    vals = [h["val_nll"] for h in result.history]
    initial = result.initial_val_nll
    assert any(not math.isfinite(v) or v > initial for v in vals[1:])  # wrecked
    assert result.best_val_nll <= initial
    assert result.best_val_nll == min(v for v in vals if math.isfinite(v))
    assert result.history[result.best_epoch]["val_nll"] == result.best_val_nll
    _, windows = _split(series, config, P)
    recomputed = validation_nll(result.model, series, windows)
    assert recomputed == pytest.approx(result.best_val_nll, rel=1e-6)
    if result.best_epoch == 0:
        assert _same_weights(result.model, model)


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_when_validation_stalls(patience):
    config = _config(learning_rate=1.0, max_epochs=20, patience=patience)
    result = fine_tune(_model(), _data(), config)
    last = result.history[-1]["epoch"]
    assert last < 20
    assert last == result.best_epoch + patience
    vals = [h["val_nll"] for h in result.history]
    best = result.best_val_nll
    assert all(not v < best for v in vals[result.best_epoch + 1 :])


def test_no_validation_trains_every_epoch_and_keeps_the_last_weights():
    series = [_series(150, seed=i) for i in range(3)]  # 2 windows of 80 steps each
    config = _config(validation_fraction=0.0, max_epochs=3, batch_size=4)
    result = fine_tune(_model(), series, config)
    assert result.initial_val_nll is None
    assert result.best_val_nll is None
    assert all(h["val_nll"] is None for h in result.history)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert [h["step"] for h in result.history] == [0, 2, 4, 6]  # ceil(6 / 4)
    assert result.best_epoch == 3


def test_max_steps_caps_the_optimiser_steps():
    config = _config(validation_fraction=0.0, max_epochs=10, max_steps=3, batch_size=2)
    result = fine_tune(_model(), _data(), config)  # 6 windows: 3 steps an epoch
    assert result.history[-1]["step"] == 3
    assert result.history[-1]["epoch"] == 1
    config = _config(validation_fraction=0.0, max_epochs=10, max_steps=4, batch_size=2)
    result = fine_tune(_model(), _data(), config)
    assert [h["step"] for h in result.history] == [0, 3, 4]


def test_series_of_different_layouts_train_every_planned_epoch():
    series = [_series(64), _series(64, dim=2, seed=1), _series(64, n_cov=1, seed=2)]
    config = _config(validation_fraction=0.0, max_epochs=3, batch_size=8)
    result = fine_tune(_model(), series, config)
    # batches never mix layouts: three batches an epoch
    assert [h["step"] for h in result.history] == [0, 3, 6, 9]


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


def test_short_series_are_skipped_when_others_are_long_enough():
    series = [_series(16), _series(120, seed=1)]
    result = fine_tune(_model(), series, _config(validation_fraction=0.0))
    assert result.history[-1]["step"] == 2  # one window an epoch


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
