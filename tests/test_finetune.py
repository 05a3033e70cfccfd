"""MoiraiMoEForecaster fine-tuning: strategies, pretrain, persistence, errors, quality."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sktime.base import load
from sktime.datasets import load_airline
from sktime.forecasting.model_selection import (
    ForecastingGridSearchCV,
    ForecastingRandomizedSearchCV,
)
from sktime.forecasting.naive import NaiveForecaster
from sktime.split import ExpandingWindowSplitter, SingleWindowSplitter

from moirai_moe_sk import _cache, training
from moirai_moe_sk.checkpoint import PortableModel
from moirai_moe_sk.exceptions import FineTuneWarning
from moirai_moe_sk.forecaster import MoiraiMoEForecaster
from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
from moirai_moe_sk.training import engine
from moirai_moe_sk.training.strategies import max_lora_rank

#: cheap fine-tuning: two optimiser steps, no validation (the trained weights
#: are always kept, so they differ from the checkpoint's)
CHEAP = {
    "num_samples": 10,
    "random_state": 0,
    "learning_rate": 1e-3,
    "max_steps": 2,
    "train_batch_size": 4,
    "validation_fraction": 0.0,
    "lora_rank": 2,
}


@pytest.fixture
def make(tiny_checkpoint):
    def build(**params) -> MoiraiMoEForecaster:
        return MoiraiMoEForecaster(str(tiny_checkpoint), **{**CHEAP, **params})

    return build


def _series(n: int = 80, phase: float = 0.0, level: float = 10.0) -> pd.Series:
    t = np.arange(n)
    return pd.Series(level + np.sin(2 * np.pi * t / 12 + phase) + 0.05 * t, name="y")


def _panel(lengths=(80, 60, 70)) -> pd.DataFrame:
    parts = {
        f"s{i}": _series(n, phase=i, level=10 + 5 * i) for i, n in enumerate(lengths)
    }
    return pd.concat(parts, names=["id", "t"]).to_frame("y")


def _weights(forecaster: MoiraiMoEForecaster) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone() for k, v in forecaster.tuned_model_.state_dict().items()
    }


def _assert_same_weights(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key, value in left.items():
        assert torch.equal(value, right[key]), key


def _changed(left: dict, right: dict) -> set[str]:
    return {k for k, v in left.items() if not torch.equal(v, right[k])}


def _spy_on_training_batches(monkeypatch) -> list[list]:
    """Record the windows of every training step of the engine."""
    steps: list[list] = []
    loss = engine._loss

    def spy(model, series, windows, micro, device, backward):
        if backward:
            steps.append(list(windows))
        return loss(model, series, windows, micro, device, backward)

    monkeypatch.setattr(engine, "_loss", spy)
    return steps


def _no_training(monkeypatch) -> None:
    def fail(*args, **kwargs):
        pytest.fail("fine_tune must not run here")

    monkeypatch.setattr(training, "fine_tune", fail)


# ------------------------------------------------------ parameter search
def test_grid_search_tunes_fit_strategy_and_learning_rate(make):
    y = _series(96)
    grid = {"fit_strategy": ["zero-shot", "head"], "learning_rate": [1e-3, 3e-2]}
    search = ForecastingGridSearchCV(
        make(),
        cv=SingleWindowSplitter(fh=[1, 2, 3], window_length=72),
        param_grid=grid,
    )
    search.fit(y, fh=[1, 2, 3])
    assert len(search.cv_results_) == 4
    scores = search.cv_results_["mean_test_MeanAbsolutePercentageError"]
    assert len(set(scores)) > 1  # the tuned parameters change the forecasts
    best = search.best_params_
    assert best["fit_strategy"] in grid["fit_strategy"]
    assert best["learning_rate"] in grid["learning_rate"]
    assert search.best_forecaster_.get_params()["fit_strategy"] == best["fit_strategy"]
    y_pred = search.predict()
    assert list(y_pred.index) == [96, 97, 98]
    assert np.isfinite(y_pred.to_numpy()).all()


def test_randomized_search_tunes_engine_parameters(make):
    y = _series(96)
    distributions = {
        "fit_strategy": ["full", "lora"],
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "lora_rank": [1, 2],
        "train_params": [None, {"warmup_steps": 1, "schedule": "constant"}],
    }
    search = ForecastingRandomizedSearchCV(
        make(),
        cv=ExpandingWindowSplitter(fh=[1, 2], initial_window=72, step_length=12),
        param_distributions=distributions,
        n_iter=3,
        random_state=0,
    )
    search.fit(y, fh=[1, 2])
    assert len(search.cv_results_) == 3
    for name, value in search.best_params_.items():
        assert value in distributions[name]
    best = search.best_forecaster_
    assert best.tuned_model_ is not None  # refit on all of y fine-tuned
    assert len(search.predict()) == 2


# ---------------------------------------------------------- fine-tuning fit
def test_fit_fine_tunes_on_a_series_then_forecasts_from_it(make):
    y = _series()
    zero_shot = make(fit_strategy="zero-shot").fit(y, fh=[1, 2, 3])
    assert not hasattr(zero_shot, "tuned_model_")
    torch_state = torch.random.get_rng_state()
    # 80 steps: 64 admissible windows, 4 steps of 16 an epoch; one epoch at most
    tuned = make(
        fit_strategy="full", max_steps=None, max_epochs=1, train_batch_size=16
    ).fit(y, fh=[1, 2, 3])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    history = tuned.training_history_
    assert list(history.columns) == [
        "epoch",
        "step",
        "train_nll",
        "val_nll",
        "learning_rate",
        "seconds",
    ]
    # one row per validation step (every step of so short a run)
    assert history["step"].tolist() == [0, 1, 2, 3, 4]
    assert history["epoch"].tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert np.isfinite(history["train_nll"].iloc[1:].to_numpy(float)).all()
    assert tuned.best_step_ == 4  # no validation: the last weights
    assert isinstance(tuned.tuned_model_, MoiraiMoEModel)
    assert tuned.model_config_ == tuned.tuned_model_.config
    y_pred = tuned.predict()
    assert y_pred.index.equals(zero_shot.predict().index)
    assert not np.allclose(y_pred.to_numpy(), zero_shot.predict().to_numpy())
    # a refit starts again from the checkpoint: same data, same seed, same weights
    weights = _weights(tuned)
    tuned.fit(_series(50), fh=[1])
    tuned.fit(y, fh=[1, 2, 3])
    _assert_same_weights(_weights(tuned), weights)
    pd.testing.assert_series_equal(tuned.predict(), y_pred)


def test_fit_on_a_panel_trains_one_global_model_on_every_series(make, monkeypatch):
    y = _panel(lengths=(40, 45, 50))  # none longer than one 48 + 2 step window
    zero_shot = make().fit(y, fh=[1, 2])
    steps = _spy_on_training_batches(monkeypatch)
    tuned = make(
        fit_strategy="full",
        context_length=48,
        max_steps=None,
        train_params={"min_steps": 2, "max_auto_steps": 5},
    ).fit(y, fh=[1, 2])
    assert not hasattr(tuned, "forecasters_")  # not vectorised per series
    assert isinstance(tuned.tuned_model_, MoiraiMoEModel)
    # 24 + 29 + 34 windows, 22 steps of 4 an epoch, capped to 5 steps
    assert tuned.training_history_["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert tuned.training_history_["epoch"].iloc[-1] == pytest.approx(20 / 87, abs=1e-4)
    # the windows of those steps come from all 3 series
    assert len(steps) == 5
    assert {w.series for windows in steps for w in windows} == {0, 1, 2}
    y_pred, y_zero = tuned.predict(), zero_shot.predict()
    assert y_pred.index.equals(y_zero.index)
    for key in ["s0", "s1", "s2"]:
        assert not np.allclose(y_pred.loc[key].to_numpy(), y_zero.loc[key].to_numpy())


def _trainable(strategy: str, key: str) -> bool:
    """Whether ``strategy`` trains the state-dict entry ``key`` (the centroids never)."""
    head = key.startswith(("in_proj.", "res_proj.", "feat_proj.", "param_proj."))
    expert = key.rsplit(".", 1)[-1] in ("fc1", "fc_gate", "fc2")
    attention = any(f"self_attn.{p}_proj.weight" in key for p in "qkv") or (
        "self_attn.out_proj.weight" in key
    )
    if key == "encoder.centroid":
        return False
    return {
        "full": True,
        "head": head,
        "freeze-experts": not expert,
        "lora": attention or expert,
    }[strategy]


@pytest.mark.parametrize("strategy", ["full", "head", "freeze-experts", "lora"])
def test_each_strategy_trains_only_its_weights(make, tiny_checkpoint, strategy):
    y = _series()
    X = pd.DataFrame({"x": np.cos(np.arange(80) / 3)})
    tuned = make(fit_strategy=strategy).fit(y, X=X, fh=[1, 2])
    start = MoiraiMoEModel.from_pretrained(tiny_checkpoint).state_dict()
    after = tuned.tuned_model_.state_dict()
    assert after.keys() == start.keys()
    trainable = {k for k in start if _trainable(strategy, k)}
    changed = _changed(start, after)
    assert changed <= trainable, sorted(changed - trainable)  # the rest: bit-identical
    # every trained matrix moves (AdamW's decay alone would move it); a vector
    # may keep a zero gradient (e.g. the loc bias of the fixed-scale normal
    # component, whose mixture responsibility underflows to 0), but not all do
    matrices = {k for k in trainable if start[k].dim() >= 2}
    assert matrices <= changed, sorted(matrices - changed)
    vectors = trainable - matrices
    if vectors:
        assert changed & vectors
    assert "encoder.centroid" not in changed
    assert np.isfinite(
        tuned.predict(X=pd.DataFrame({"x": [0.0, 1.0]}, index=[80, 81]))
    ).all()


def test_fine_tuning_leaves_the_cached_model_and_the_data_untouched(
    make, tiny_checkpoint
):
    cached = _cache.get_model(str(tiny_checkpoint), device="cpu")
    before = {k: v.clone() for k, v in cached.state_dict().items()}
    y = _panel()
    y.iloc[[3, 4, 100]] = np.nan  # imputed for training, never in place
    X = pd.DataFrame({"x": np.arange(len(y), dtype=float)}, index=y.index)
    X.iloc[7] = np.nan
    y_copy, X_copy = y.copy(), X.copy()
    tuned = make(fit_strategy="full").fit(y, X=X, fh=[1, 2])
    make(fit_strategy="lora").pretrain(y, X=X)
    pd.testing.assert_frame_equal(y, y_copy)
    pd.testing.assert_frame_equal(X, X_copy)
    assert tuned._model is cached
    assert tuned.tuned_model_ is not cached
    assert not cached.training
    assert not any(p.requires_grad for p in cached.parameters())
    _assert_same_weights(cached.state_dict(), before)
    assert _changed(before, tuned.tuned_model_.state_dict())  # trained a copy


def test_zero_shot_fit_trains_nothing(make, monkeypatch):
    _no_training(monkeypatch)
    forecaster = make(fit_strategy="zero-shot", learning_rate=0.5).fit(_series())
    assert not hasattr(forecaster, "tuned_model_")
    assert len(forecaster.predict([1, 2])) == 2


# ------------------------------------------------------------------ pretrain
def test_pretrain_then_fit_only_sets_the_context(make, monkeypatch):
    panel = _panel()
    forecaster = make(fit_strategy="full").pretrain(panel)
    assert forecaster.state == "pretrained"
    assert {"tuned_model_", "training_history_"} <= set(
        forecaster.get_pretrained_params()
    )
    assert forecaster.training_history_["step"].iloc[-1] == 2
    weights, history = _weights(forecaster), forecaster.training_history_.copy()

    _no_training(monkeypatch)
    y = _series(64, phase=1.0)
    forecaster.fit(y, fh=[1, 2])
    assert forecaster.state == "fitted"
    _assert_same_weights(_weights(forecaster), weights)
    pd.testing.assert_frame_equal(forecaster.training_history_, history)
    y_pred = forecaster.predict()
    zero_shot = make().fit(y, fh=[1, 2]).predict()
    assert not np.allclose(y_pred.to_numpy(), zero_shot.to_numpy())

    forecaster.fit(_series(50), fh=[1])  # refit: another context, same weights
    _assert_same_weights(_weights(forecaster), weights)
    pd.testing.assert_frame_equal(forecaster.training_history_, history)
    forecaster.fit(y, fh=[1, 2])
    pd.testing.assert_series_equal(forecaster.predict(), y_pred)


def test_a_second_pretrain_continues_training(make):
    forecaster = make(fit_strategy="head", max_steps=3)
    forecaster.pretrain(_panel())
    first, weights = forecaster.training_history_.copy(), _weights(forecaster)
    # windows of 32 steps after the context (no fh): 64 + 44 + 54 admissible
    assert first["step"].tolist() == [0, 1, 2, 3]
    assert first["epoch"].tolist() == pytest.approx(
        [0, 4 / 162, 8 / 162, 12 / 162], abs=1e-4
    )
    assert forecaster.best_step_ == 3
    forecaster.fit(_series(), fh=[1])
    forecaster.pretrain(_panel(lengths=(90, 75)))
    history = forecaster.training_history_
    assert forecaster.state == "pretrained"
    pd.testing.assert_frame_equal(history.iloc[: len(first)], first)
    # steps and epochs continue from the first pretrain's (74 + 59 windows now)
    assert history["step"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert history["epoch"].iloc[4:].tolist() == pytest.approx(
        [12 / 162 + 4 * k / 133 for k in (1, 2, 3)], abs=2e-4
    )
    assert forecaster.best_step_ == 6
    assert _changed(weights, _weights(forecaster))
    # it continued from the first pretrain's weights, not from the checkpoint
    again = make(fit_strategy="head", max_steps=3)
    again.pretrain(_panel(lengths=(90, 75)))
    assert again.best_step_ == 3
    assert _changed(_weights(again), _weights(forecaster))


def test_zero_shot_pretrain_warns_and_trains_nothing(make, monkeypatch):
    _no_training(monkeypatch)
    forecaster = make(fit_strategy="zero-shot")
    with pytest.warns(UserWarning, match="trains nothing"):
        forecaster.pretrain(_panel())
    assert getattr(forecaster, "tuned_model_", None) is None
    assert forecaster.training_history_.empty
    y = _series()
    y_pred = forecaster.fit(y, fh=[1, 2]).predict()
    pd.testing.assert_series_equal(y_pred, make().fit(y, fh=[1, 2]).predict())


# --------------------------------------------------------------- persistence
@pytest.fixture
def fine_tuned(make) -> MoiraiMoEForecaster:
    return make(fit_strategy="full").fit(_series(), fh=[1, 2, 20])


def _round_trip(forecaster, how: str, tmp_path):
    if how == "save-zip":
        forecaster.save(tmp_path / "moirai")
        return load(tmp_path / "moirai.zip")
    if how == "save-bytes":
        return load(forecaster.save())
    if how == "pickle":
        return pickle.loads(pickle.dumps(forecaster))
    return copy.deepcopy(forecaster)


@pytest.mark.parametrize("how", ["save-zip", "save-bytes", "pickle", "deepcopy"])
def test_fine_tuned_weights_survive_persistence(fine_tuned, how, tmp_path):
    expected = fine_tuned.predict_quantiles(alpha=[0.1, 0.5, 0.9])
    restored = _round_trip(fine_tuned, how, tmp_path)
    assert restored.tuned_model_ is not fine_tuned.tuned_model_
    _assert_same_weights(_weights(restored), _weights(fine_tuned))
    pd.testing.assert_frame_equal(
        restored.predict_quantiles(alpha=[0.1, 0.5, 0.9]), expected
    )
    pd.testing.assert_frame_equal(
        restored.training_history_, fine_tuned.training_history_
    )


class _NoTorchTensors(pickle.Unpickler):
    """Refuses every way torch pickles tensors, storages and modules."""

    def find_class(self, module, name):
        if module.startswith("torch") and (
            module.startswith(("torch._utils", "torch.storage", "torch.nn"))
            or "rebuild" in name
            or "Storage" in name
            or name == "Tensor"
        ):
            msg = f"torch-pickled object {module}.{name}"
            raise pickle.UnpicklingError(msg)
        return super().find_class(module, name)


def test_pickles_hold_no_torch_pickled_tensors(fine_tuned):
    state = fine_tuned.__getstate__()
    assert isinstance(state["tuned_model_"], PortableModel)
    assert isinstance(state["tuned_model_"].weights, bytes)
    assert state["_model"] is None
    blob = pickle.dumps(fine_tuned)
    restored = _NoTorchTensors(io.BytesIO(blob)).load()
    _assert_same_weights(_weights(restored), _weights(fine_tuned))
    pd.testing.assert_series_equal(restored.predict(), fine_tuned.predict())
    # the guard works: a pickled tensor is refused
    with pytest.raises(pickle.UnpicklingError, match="torch-pickled"):
        _NoTorchTensors(io.BytesIO(pickle.dumps(torch.zeros(2)))).load()


@pytest.mark.parametrize("how", ["save-bytes", "pickle", "deepcopy"])
def test_pretrained_state_survives_persistence(make, how, tmp_path):
    forecaster = make(fit_strategy="freeze-experts").pretrain(_panel())
    restored = _round_trip(forecaster, how, tmp_path)
    assert restored.state == "pretrained"
    _assert_same_weights(_weights(restored), _weights(forecaster))
    y = _series(70, phase=2.0)
    pd.testing.assert_series_equal(
        restored.fit(y, fh=[1, 2]).predict(), forecaster.fit(y, fh=[1, 2]).predict()
    )
    pd.testing.assert_frame_equal(
        restored.training_history_, forecaster.training_history_
    )


def test_clone_after_pretrain_keeps_the_fine_tuned_weights(make):
    forecaster = make(fit_strategy="lora").pretrain(_panel())
    clone = forecaster.clone()
    assert clone.state == "pretrained"
    assert clone.tuned_model_ is not forecaster.tuned_model_
    _assert_same_weights(_weights(clone), _weights(forecaster))
    y = _series(70, phase=2.0)
    y_pred = forecaster.fit(y, fh=[1, 2, 3]).predict()
    pd.testing.assert_series_equal(clone.fit(y, fh=[1, 2, 3]).predict(), y_pred)
    zero_shot = make().fit(y, fh=[1, 2, 3]).predict()
    assert not np.allclose(y_pred.to_numpy(), zero_shot.to_numpy())


def test_save_pretrained_exports_a_loadable_checkpoint(make, fine_tuned, tmp_path):
    with pytest.raises(NotFittedError, match="fit or pretrain first"):
        make().save_pretrained(tmp_path / "nothing")
    folder = tmp_path / "exported"
    fine_tuned.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    _assert_same_weights(
        MoiraiMoEModel.from_pretrained(folder).state_dict(),
        fine_tuned.tuned_model_.state_dict(),
    )
    reloaded = MoiraiMoEForecaster(str(folder), num_samples=10, random_state=0)
    reloaded.fit(_series(), fh=[1, 2, 20])
    pd.testing.assert_frame_equal(
        reloaded.predict_interval(coverage=[0.5, 0.9]),
        fine_tuned.predict_interval(coverage=[0.5, 0.9]),
    )


# -------------------------------------------------------------------- errors
def test_series_too_short_for_a_training_window(make):
    with pytest.raises(ValueError, match="too short") as info:
        make(fit_strategy="head").fit(_series(10))
    assert "16" in str(info.value)  # names the patch size it needs to exceed
    with pytest.raises(ValueError, match="too short"):
        make(fit_strategy="head").pretrain(_panel(lengths=(10, 12)))
    make(fit_strategy="zero-shot").fit(_series(10))  # forecasting is fine


def test_all_missing_series(make):
    with pytest.raises(ValueError, match="all NaN"):
        make(fit_strategy="full").fit(pd.Series([np.nan] * 40))
    panel = _panel(lengths=(40, 40))
    panel.loc["s1"] = np.nan
    with pytest.raises(ValueError, match=r"s1.*all NaN"):
        make(fit_strategy="full").pretrain(panel)


@pytest.mark.parametrize("learning_rate", [0, -1, 2, float("nan")])
def test_learning_rate_out_of_range(make, learning_rate):
    with pytest.raises(ValueError, match=r"learning_rate must be a number in \(0, 1\]"):
        make(fit_strategy="full", learning_rate=learning_rate).fit(_series())
    with pytest.raises(ValueError, match="learning_rate"):
        make(fit_strategy="full", learning_rate=learning_rate).pretrain(_panel())


def test_lora_rank_out_of_range(make, tiny_checkpoint):
    with pytest.raises(ValueError, match="lora_rank must be a positive integer"):
        make(fit_strategy="lora", lora_rank=0).fit(_series())
    limit = max_lora_rank(MoiraiMoEModel.from_pretrained(tiny_checkpoint))
    with pytest.raises(ValueError, match=f"between 1 and {limit}, got {limit + 1}"):
        make(fit_strategy="lora", lora_rank=limit + 1).fit(_series())
    make(fit_strategy="lora", lora_rank=limit, max_steps=1).fit(_series())


def test_unknown_train_params_key(make):
    with pytest.raises(
        ValueError, match=r"unknown train_params key\(s\) \['nonsense'\]"
    ):
        make(fit_strategy="full", train_params={"nonsense": 1}).fit(_series())
    with pytest.raises(ValueError, match=r"\['merge_lora'\]"):  # always merged
        make(fit_strategy="lora", train_params={"merge_lora": False}).fit(_series())
    with pytest.raises(TypeError, match="train_params must be a dict"):
        make(fit_strategy="full", train_params="warmup_steps=10").fit(_series())


@pytest.mark.parametrize(
    ("key", "parameter"),
    [("learning_rate", "learning_rate"), ("batch_size", "train_batch_size")],
)
def test_train_params_key_of_a_constructor_parameter_gets_a_hint(make, key, parameter):
    forecaster = make(fit_strategy="full", train_params={key: 1e-3})
    with pytest.raises(
        ValueError, match=rf"set \['{parameter}'\] as constructor parameters"
    ):
        forecaster.fit(_series())


def test_bad_fit_strategy(make):
    with pytest.raises(ValueError, match="fit_strategy must be one of") as info:
        make(fit_strategy="partial").fit(_series())
    assert "'lora'" in str(info.value)
    with pytest.raises(ValueError, match="fit_strategy"):
        make(fit_strategy="Full").pretrain(_panel())


# ------------------------------------------------ validation never gets worse
@pytest.mark.parametrize("strategy", ["full", "head"])
def test_destructive_learning_rate_keeps_the_starting_weights(
    make, tiny_checkpoint, strategy
):
    y = _panel(lengths=(120, 120, 120, 120))
    forecaster = make(
        fit_strategy=strategy,
        learning_rate=1.0,
        max_steps=6,
        train_batch_size=2,
        validation_fraction=0.2,
        train_params={"eval_every": 2},
    )
    with pytest.warns(FineTuneWarning, match="learning_rate"):
        forecaster.fit(y, fh=[1, 2])
    val = forecaster.training_history_["val_nll"].to_numpy(float)
    assert forecaster.training_history_["step"].tolist() == [0, 2, 4, 6]
    assert np.isfinite(val[0])
    # every trained step is worse (or NaN), so step 0 is the best kept step
    assert not (val[1:] <= val[0]).any()
    assert forecaster.best_step_ == 0
    start = MoiraiMoEModel.from_pretrained(tiny_checkpoint).state_dict()
    _assert_same_weights(forecaster.tuned_model_.state_dict(), start)
    zero_shot = make().fit(y, fh=[1, 2]).predict()
    pd.testing.assert_frame_equal(forecaster.predict(), zero_shot)


def test_the_best_step_is_restored_not_the_last(make):
    y = _panel(lengths=(120, 120, 120, 120))
    params = {
        "fit_strategy": "lora",
        "learning_rate": 0.1,
        "train_batch_size": 2,
        "validation_fraction": 0.2,
        "patience": 5,
        # the first steps do not depend on max_steps (no cosine decay)
        "train_params": {"schedule": "constant", "eval_every": 2},
    }
    # measured val NLL at steps 0, 2, ..., 12: 3.26, 3.15, 3.01, 3.06, 2.82,
    # 2.85, 2.91 (best: step 8)
    forecaster = make(max_steps=12, **params).fit(y, fh=[1, 2])
    history = forecaster.training_history_
    val = history["val_nll"].to_numpy(float)
    assert history["step"].tolist() == [0, 2, 4, 6, 8, 10, 12]
    best = int(np.nanargmin(val))
    assert val[best] < val[0]
    assert 0 < best < len(val) - 1  # a middle step: restoring it is visible
    assert forecaster.best_step_ == history["step"].iloc[best]
    stopped = make(max_steps=forecaster.best_step_, **params).fit(y, fh=[1, 2])
    assert stopped.best_step_ == forecaster.best_step_
    _assert_same_weights(_weights(forecaster), _weights(stopped))
    last = make(max_steps=12, **{**params, "validation_fraction": 0.0})
    assert _changed(_weights(forecaster), _weights(last.fit(y, fh=[1, 2])))


# --------------------------------------------------------- forecast quality
H, M = 24, 12  # held-out steps, season length
ALPHAS = np.round(np.arange(1, 100) / 100, 2).tolist()


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised tiny model: anything it forecasts well, it learnt."""
    folder = tmp_path_factory.mktemp("random_checkpoint")
    config = MoiraiMoEConfig(d_model=64, d_ff=128, num_layers=2, num_experts=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        MoiraiMoEModel(config).save_pretrained(folder)
    return str(folder)


def _seasonal_panel(n_series=64, length=180, seed=0) -> pd.DataFrame:
    """Period-12 sines with random level, amplitude and phase, 10% noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    parts = {}
    for i in range(n_series):
        level, amplitude = rng.uniform(5, 50), rng.uniform(0.5, 5)
        phase = rng.uniform(0, 2 * np.pi)
        noise = rng.normal(0, 0.1 * amplitude, length)
        parts[i] = pd.Series(
            level + amplitude * np.sin(2 * np.pi * t / M + phase) + noise
        )
    return pd.concat(parts, names=["id", "t"]).to_frame("y")


def _by_series(y) -> dict:
    if isinstance(y.index, pd.MultiIndex):
        return {k: g.droplevel(0) for k, g in y.groupby(level=0)}
    return {None: y}


def _scores(y_train, y_test, quantiles, naive) -> dict[str, float]:
    """Mean over series of MASE and scaled CRPS, and the seasonal naive's MASE.

    Both are scaled by the in-sample MAE of the seasonal naive forecast
    (m = 12). MASE uses the median forecast (the 0.5 quantile). CRPS is the
    quantile-score approximation from ``predict_quantiles`` at the 99 levels
    0.01, ..., 0.99: ``2 * mean_alpha pinball_alpha``. The seasonal naive
    forecast is deterministic, so its CRPS is its MAE: its scaled CRPS equals
    its MASE.
    """
    alphas = np.asarray(ALPHAS)
    train, test = _by_series(y_train), _by_series(y_test)
    q, point = _by_series(quantiles), _by_series(naive)
    mase, crps, naive_mase = [], [], []
    for key, history in train.items():
        history = history.to_numpy(float).ravel()
        truth = test[key].to_numpy(float).ravel()
        scale = np.mean(np.abs(history[M:] - history[:-M]))
        qs = q[key].to_numpy(float)
        assert qs.shape == (H, len(ALPHAS))
        median = qs[:, ALPHAS.index(0.5)]
        error = truth[:, None] - qs
        pinball = np.maximum(alphas * error, (alphas - 1) * error)
        mase.append(np.mean(np.abs(median - truth)) / scale)
        crps.append(2 * pinball.mean() / scale)
        naive_error = point[key].to_numpy(float).ravel() - truth
        naive_mase.append(np.mean(np.abs(naive_error)) / scale)
    return {
        "mase": float(np.mean(mase)),
        "crps": float(np.mean(crps)),
        "naive": float(np.mean(naive_mase)),
    }


def _evaluate(forecaster, y_train, y_test) -> dict[str, float]:
    fh = list(range(1, H + 1))
    forecaster.fit(y_train, fh=fh)
    quantiles = forecaster.predict_quantiles(alpha=ALPHAS)
    naive = NaiveForecaster(strategy="last", sp=M).fit(y_train, fh=fh).predict()
    return _scores(y_train, y_test, quantiles, naive)


def test_fine_tuning_beats_seasonal_naive_on_a_learnable_panel(random_checkpoint):
    y = _seasonal_panel()
    y_train = y.groupby(level=0).head(180 - H)
    y_test = y.groupby(level=0).tail(H)
    forecaster = MoiraiMoEForecaster(
        random_checkpoint,
        context_length=96,
        num_samples=100,
        fit_strategy="full",
        learning_rate=3e-3,
        max_steps=160,  # validated every 16 steps
        train_batch_size=16,
        patience=10,
        train_params={"warmup_steps": 10, "prediction_length": 32},
        random_state=0,
    )
    scores = _evaluate(forecaster, y_train, y_test)
    # measured: MASE 0.79, CRPS 0.57, seasonal naive 1.02
    assert scores["mase"] < scores["naive"], scores
    assert scores["crps"] < scores["naive"], scores
    val = forecaster.training_history_["val_nll"].to_numpy(float)
    assert np.nanmin(val[1:]) < val[0]  # it learnt; the held-out test confirms it


def test_fine_tuning_beats_seasonal_naive_on_airline(random_checkpoint):
    y = load_airline()
    y_train, y_test = y.iloc[:-H], y.iloc[-H:]
    forecaster = MoiraiMoEForecaster(
        random_checkpoint,
        context_length=48,
        num_samples=100,
        fit_strategy="full",
        learning_rate=3e-3,
        max_steps=300,  # windows ending anywhere in the one series
        train_batch_size=16,
        validation_fraction=0.0,  # 120 steps: every one is needed for training
        train_params={"warmup_steps": 10},
        random_state=0,
    )
    scores = _evaluate(forecaster, y_train, y_test)
    assert forecaster.training_history_["step"].iloc[-1] == 300
    # measured: MASE 1.08, CRPS 0.73, seasonal naive 2.49 (it misses the trend)
    assert scores["mase"] < scores["naive"], scores
    assert scores["crps"] < scores["naive"], scores
