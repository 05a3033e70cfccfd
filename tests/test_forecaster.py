"""MoiraiMoEForecaster: data kinds, errors, randomness, probabilistic outputs, update."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sktime.forecasting.base import ForecastingHorizon
from sktime.utils._testing.hierarchical import _make_hierarchical

from moirai_moe_sk import _cache
from moirai_moe_sk import model as model_module
from moirai_moe_sk.forecaster import MoiraiMoEForecaster
from moirai_moe_sk.training import DEFAULT_LEARNING_RATES


@pytest.fixture
def make(tiny_checkpoint):
    def build(**params) -> MoiraiMoEForecaster:
        params = {"num_samples": 20, "random_state": 0, **params}
        return MoiraiMoEForecaster(checkpoint=str(tiny_checkpoint), **params)

    return build


def _series(n: int = 60, index=None, name="y") -> pd.Series:
    t = np.arange(n)
    values = 10 + np.sin(2 * np.pi * t / 12) + 0.05 * t
    return pd.Series(
        values, index=index if index is not None else pd.RangeIndex(n), name=name
    )


INDEXES = {
    "datetime": pd.date_range("2021-01-01", periods=60, freq="D"),
    "period": pd.period_range("2001-01", periods=60, freq="M"),
    "range": pd.RangeIndex(60),
    "int": pd.Index(np.arange(100, 160)),
}


def test_constructor_stores_parameters_verbatim():
    params = {
        "checkpoint": "some/where",
        "context_length": 7,
        "num_samples": 0,  # invalid, but only checked in fit
        "point": "nonsense",
        "decoding": "greedy",
        "batch_size": 3,
        "device": "auto",
        "dtype": "weird",
        "revision": "abc",
        "cache_dir": "/nowhere",
        "local_files_only": True,
        "fit_strategy": "lora",
        "learning_rate": 5.0,  # invalid, but only checked in fit
        "max_epochs": 2,
        "max_steps": 9,
        "train_batch_size": 5,
        "validation_fraction": 0.0,
        "patience": 1,
        "lora_rank": 3,
        "train_params": {"warmup_steps": 2},
        "random_state": 0,
    }
    forecaster = MoiraiMoEForecaster(**params)
    assert forecaster.get_params() == params
    assert MoiraiMoEForecaster().get_params()["checkpoint"] == (
        "Salesforce/moirai-moe-1.0-R-small"
    )


def test_fine_tuning_defaults_are_planned_by_the_engine():
    params = MoiraiMoEForecaster().get_params()
    assert params["learning_rate"] is None
    assert params["max_epochs"] is None
    assert params["max_steps"] is None
    # None: the strategy's learning rate, steps planned from the data
    for strategy, rate in DEFAULT_LEARNING_RATES.items():
        forecaster = MoiraiMoEForecaster(fit_strategy=strategy)
        config = forecaster._training_config(context_length=64, prediction_length=16)
        assert config.learning_rate == rate
        assert config.max_epochs is None
        assert config.max_steps is None
        assert (config.min_steps, config.max_auto_steps) == (200, 1000)
    # explicit values, and the engine's step budget through train_params
    forecaster = MoiraiMoEForecaster(
        fit_strategy="head",
        learning_rate=0.01,
        max_epochs=3,
        train_params={"min_steps": 5, "max_auto_steps": 50, "eval_every": 7},
    )
    config = forecaster._training_config(context_length=64, prediction_length=16)
    assert config.learning_rate == 0.01
    assert config.max_epochs == 3
    assert (config.min_steps, config.max_auto_steps, config.eval_every) == (5, 50, 7)


@pytest.mark.parametrize("index_name", list(INDEXES))
@pytest.mark.parametrize("steps", [[1], [2, 5], [1, 17, 40], list(range(1, 21))])
@pytest.mark.parametrize("relative", [True, False])
def test_series_on_every_index_type_and_horizon(make, index_name, steps, relative):
    y = _series(index=INDEXES[index_name])
    forecaster = make().fit(y)
    fh = ForecastingHorizon(steps, is_relative=True, freq=forecaster.cutoff)
    if not relative:
        fh = fh.to_absolute(forecaster.cutoff)
    expected = fh.to_absolute_index(forecaster.cutoff)
    y_pred = forecaster.predict(fh)
    assert isinstance(y_pred, pd.Series)
    assert y_pred.name == "y"
    assert y_pred.index.equals(expected)
    assert np.isfinite(y_pred.to_numpy()).all()
    quantiles = forecaster.predict_quantiles(fh, alpha=[0.1, 0.5, 0.9])
    assert quantiles.index.equals(expected)
    intervals = forecaster.predict_interval(fh, coverage=[0.8, 0.95])
    assert intervals.index.equals(expected)
    assert forecaster.predict_var(fh).index.equals(expected)


def test_multivariate_dataframe_is_one_joint_forecast(make, monkeypatch):
    calls = _spy_forecast(monkeypatch)
    y = pd.DataFrame({"a": _series().to_numpy(), "b": _series().to_numpy()[::-1]})
    y_pred = make().fit(y).predict([1, 2, 3])
    assert list(y_pred.columns) == ["a", "b"]
    assert y_pred.shape == (3, 2)
    assert len(calls) == 1
    assert calls[0]["past_target"].shape[-1] == 2


def test_panel_with_unequal_lengths_in_one_batch(make, monkeypatch):
    calls = _spy_forecast(monkeypatch)
    y = pd.concat(
        {"a": _series(60), "b": _series(5), "c": _series(33)}, names=["id", "t"]
    ).to_frame("v")
    forecaster = make().fit(y)
    y_pred = forecaster.predict([1, 2])
    assert len(calls) == 1  # one batched pass, not one per series
    assert calls[0]["past_target"].shape[0] == 3
    expected = [("a", 60), ("a", 61), ("b", 5), ("b", 6), ("c", 33), ("c", 34)]
    assert list(y_pred.index) == expected
    quantiles = forecaster.predict_quantiles(alpha=[0.05, 0.5, 0.95])
    assert quantiles.index.equals(y_pred.index)


def test_datetime_panel_with_unequal_ends(make):
    index = pd.date_range("2020-01-05", periods=40, freq="W-SUN")
    y = pd.concat(
        {"a": _series(40, index=index), "b": _series(30, index=index[:30])},
        names=["id", "t"],
    ).to_frame("v")
    y_pred = make().fit(y).predict([1, 3])
    assert list(y_pred.loc["a"].index) == [
        index[-1] + pd.Timedelta(weeks=w) for w in (1, 3)
    ]
    assert list(y_pred.loc["b"].index) == [
        index[29] + pd.Timedelta(weeks=w) for w in (1, 3)
    ]


def test_datetime_index_without_frequency_raises(make):
    index = pd.date_range("2020-01-01", periods=40, freq="D").delete([3, 9, 10])
    y = _series(37, index=index)
    with pytest.raises(ValueError, match="asfreq"):
        make().fit(y).predict([1])
    y_pred = make().fit(y.asfreq("D")).predict([1])  # gaps become missing values
    assert y_pred.index[0] == index[-1] + pd.Timedelta(days=1)


def test_batch_size_chunks_the_batch(make, monkeypatch):
    calls = _spy_forecast(monkeypatch)
    y = pd.concat({i: _series(20) for i in range(5)}, names=["id", "t"]).to_frame("v")
    make(batch_size=2).fit(y).predict([1])
    assert [c["past_target"].shape[0] for c in calls] == [2, 2, 1]


def test_hierarchy_output_matches_sktime_layout(make):
    y = _make_hierarchical(
        hierarchy_levels=(2, 3), n_columns=2, min_timepoints=12, max_timepoints=12
    )
    forecaster = make().fit(y, fh=[1, 2])
    y_pred = forecaster.predict()
    assert list(y_pred.index.names) == list(y.index.names)
    assert list(y_pred.columns) == list(y.columns)
    assert len(y_pred) == 6 * 2
    intervals = forecaster.predict_interval(coverage=0.9)
    assert intervals.index.equals(y_pred.index)


def test_series_shorter_than_one_patch(make):
    y_pred = make().fit(_series(3)).predict([1, 2, 20])
    assert np.isfinite(y_pred.to_numpy()).all()


@pytest.mark.parametrize("columns", [1, 2])
def test_missing_values_are_handled(make, columns):
    y = pd.DataFrame({f"c{i}": _series().to_numpy() for i in range(columns)})
    y.iloc[[0, 10, 11, 12, 30, -1], 0] = np.nan
    y_pred = make().fit(y).predict([1, 2, 3])
    assert np.isfinite(y_pred.to_numpy()).all()


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("y", "error", "match"),
    [
        (pd.Series([np.nan] * 10), ValueError, "all NaN"),
        (pd.Series([1.0, np.inf, 2.0]), ValueError, "infinite"),
    ],
)
def test_bad_y_raises(make, y, error, match):
    with pytest.raises(error, match=match):
        make().fit(y)


def test_non_numeric_column_raises_type_error(make):
    y = pd.DataFrame({"a": np.arange(10.0), "b": ["x"] * 10})
    with pytest.raises(TypeError):
        make().fit(y)
    X = pd.DataFrame({"s": ["x"] * 10})
    with pytest.raises(TypeError):
        make().fit(pd.Series(np.arange(10.0)), X=X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"context_length": 0}, "context_length"),
        ({"batch_size": -1}, "batch_size"),
        ({"point": "mode"}, "point"),
        ({"dtype": "float16"}, "dtype"),
        ({"decoding": "greedy"}, "decoding"),
        ({"device": "tpu-17"}, "device"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_bad_parameters_raise_at_fit(make, params, match):
    forecaster = make(**params)  # construction never validates
    with pytest.raises(ValueError, match=match):
        forecaster.fit(_series())


def test_fh_in_the_past_is_refused(make):
    forecaster = make().fit(_series())
    with pytest.raises(NotImplementedError, match="in-sample"):
        forecaster.predict([-1, 1])


def test_x_missing_horizon_rows_raises(make):
    y, X = _series(), pd.DataFrame({"x": np.arange(60.0)})
    forecaster = make().fit(y, X=X)
    X_short = pd.DataFrame({"x": [1.0]}, index=pd.Index([60]))
    with pytest.raises(ValueError, match="61"):
        forecaster.predict([1, 2], X=X_short)


# ------------------------------------------------------------ covariates
def _spy_forecast(monkeypatch) -> list[dict]:
    real = model_module.forecast
    calls: list[dict] = []

    def spy(model, past_target, past_observed=None, past_is_pad=None, **kwargs):
        calls.append({"past_target": past_target, **kwargs})
        return real(model, past_target, past_observed, past_is_pad, **kwargs)

    monkeypatch.setattr(model_module, "forecast", spy)
    return calls


def test_covariates_known_future_and_past_only(make, monkeypatch):
    calls = _spy_forecast(monkeypatch)
    y = _series(40)
    X = pd.DataFrame({"known": np.arange(43.0), "past": np.ones(43)})
    forecaster = make().fit(y, X=X.iloc[:40])
    forecaster.predict([1, 3], X=X.iloc[40:][["known"]])
    known, past = calls[-1]["feat_dynamic_real"], calls[-1]["past_feat_dynamic_real"]
    assert known.shape == (1, 40 + 3, 1)
    torch.testing.assert_close(known[0, :, 0], torch.arange(43.0))
    assert past.shape == (1, 40, 1)

    forecaster.predict([1, 3])  # no X in predict: every column is past-only
    assert calls[-1]["feat_dynamic_real"] is None
    assert calls[-1]["past_feat_dynamic_real"].shape == (1, 40, 2)

    forecaster.predict([1, 3], X=X.iloc[40:])  # all columns known
    assert calls[-1]["feat_dynamic_real"].shape == (1, 43, 2)
    assert calls[-1]["past_feat_dynamic_real"] is None


def test_covariates_change_the_forecast(make):
    y = _series(40)
    X = pd.DataFrame({"x": np.r_[np.zeros(40), 50 * np.ones(3)]})
    forecaster = make().fit(y, X=X.iloc[:40])
    with_x = forecaster.predict([1, 2, 3], X=X.iloc[40:])
    without = make().fit(y).predict([1, 2, 3])
    assert not np.allclose(with_x.to_numpy(), without.to_numpy())


# ---------------------------------------------------- randomness, caching
def test_same_seed_same_forecast_and_seed_zero_counts(make):
    y = _series()
    first = make(random_state=0).fit(y).predict_quantiles([1, 20], alpha=[0.1, 0.9])
    again = make(random_state=0).fit(y).predict_quantiles([1, 20], alpha=[0.1, 0.9])
    other = make(random_state=1).fit(y).predict_quantiles([1, 20], alpha=[0.1, 0.9])
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first.to_numpy(), other.to_numpy())


def test_unseeded_forecaster_is_consistent_within_a_fit(make):
    forecaster = make(random_state=None).fit(_series(), fh=[1, 2, 3])
    median = forecaster.predict()
    q50 = forecaster.predict_quantiles(alpha=[0.5])
    np.testing.assert_array_equal(median.to_numpy(), q50.to_numpy()[:, 0])
    pd.testing.assert_series_equal(median, forecaster.predict())


def test_global_random_state_is_untouched(make):
    y = _series()
    make().fit(y)  # the first load builds the module; later fits hit the cache
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    forecaster = make(random_state=None).fit(y)
    forecaster.predict([1, 20])
    make(random_state=3).fit(y).predict_interval([1, 2])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == np_state[0]
    np.testing.assert_array_equal(after[1], np_state[1])


def test_refit_and_clone_never_reload(make, monkeypatch):
    y = _series()
    forecaster = make().fit(y)
    loads = _cache.cache_info()["loads"]

    def fail(*args, **kwargs):
        pytest.fail("the checkpoint was read again")

    monkeypatch.setattr(model_module.MoiraiMoEModel, "from_pretrained", fail)
    forecaster.fit(_series(30))
    forecaster.clone().fit(y).predict([1])
    pickle.loads(pickle.dumps(forecaster)).predict([1])
    assert _cache.cache_info()["loads"] == loads


def test_resaved_checkpoint_is_reloaded(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    forecaster = MoiraiMoEForecaster(str(tmp_path), num_samples=5, random_state=0)
    forecaster.fit(_series())
    first = forecaster._model
    tiny_model.save_pretrained(tmp_path)  # new mtime: a new cache entry
    forecaster.fit(_series())
    assert forecaster._model is not first


def test_cached_model_stays_frozen(make):
    forecaster = make().fit(_series())
    model = forecaster._model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forecaster.predict([1, 20])
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_pickle_drops_weights_and_keeps_forecasts(make):
    forecaster = make().fit(_series(), fh=[1, 2, 30])
    blob = pickle.dumps(forecaster)
    assert len(blob) < 200_000  # the state, not the weights
    restored = pickle.loads(blob)
    pd.testing.assert_series_equal(restored.predict(), forecaster.predict())


# ------------------------------------------------------ probabilistic API
def test_quantiles_monotone_and_intervals_nested(make):
    y = pd.concat({"a": _series(), "b": _series(25)}, names=["id", "t"]).to_frame("v")
    forecaster = make(num_samples=50).fit(y, fh=[1, 5, 17, 33])
    alpha = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    quantiles = forecaster.predict_quantiles(alpha=alpha).to_numpy()
    assert (np.diff(quantiles, axis=1) >= 0).all()
    intervals = forecaster.predict_interval(coverage=[0.5, 0.8, 0.95])
    for inner, outer in [(0.5, 0.8), (0.8, 0.95)]:
        assert (
            intervals[("v", outer, "lower")] <= intervals[("v", inner, "lower")]
        ).all()
        assert (
            intervals[("v", outer, "upper")] >= intervals[("v", inner, "upper")]
        ).all()


def test_all_outputs_come_from_the_same_samples(make):
    pytest.importorskip("skpro")
    y = pd.DataFrame({"a": _series().to_numpy(), "b": _series().to_numpy() + 1})
    forecaster = make(num_samples=30, point="mean").fit(y, fh=[1, 2, 18])
    distribution = forecaster.predict_proba()
    assert type(distribution).__name__ == "Empirical"
    mean = forecaster.predict()
    np.testing.assert_allclose(distribution.mean().to_numpy(), mean.to_numpy())
    np.testing.assert_allclose(
        distribution.var().to_numpy(), forecaster.predict_var().to_numpy()
    )
    spl = distribution.spl
    median = make(num_samples=30).fit(y, fh=[1, 2, 18]).predict()
    ordered = np.sort(spl["a"].to_numpy().reshape(30, 3), axis=0)
    np.testing.assert_array_equal(
        median["a"].to_numpy(), ordered[int(np.round(29 * 0.5))]
    )


def test_predict_proba_on_a_panel_and_joint_paths(make):
    pytest.importorskip("skpro")
    y = pd.concat({"a": _series(), "b": _series(25)}, names=["id", "t"]).to_frame("v")
    forecaster = make(num_samples=10).fit(y, fh=[1, 2])
    marginal = forecaster.predict_proba()
    assert marginal.index.equals(forecaster.predict().index)
    joint = forecaster.predict_proba(marginal=False)
    assert joint.time_indep is False


def test_predict_var_covariance(make):
    forecaster = make(num_samples=40).fit(_series(), fh=[1, 2, 3])
    cov = forecaster.predict_var(cov=True)
    var = forecaster.predict_var()
    assert cov.shape == (3, 3)
    np.testing.assert_allclose(np.diag(cov.to_numpy()), var.to_numpy()[:, 0])


# ----------------------------------------------------------------- update
def test_update_appends_context_without_reloading(make, monkeypatch):
    y = _series(60)
    forecaster = make().fit(y.iloc[:50])

    def fail(*args, **kwargs):
        pytest.fail("update must not reload the checkpoint")

    monkeypatch.setattr(model_module.MoiraiMoEModel, "from_pretrained", fail)
    forecaster.update(y.iloc[50:])
    assert forecaster.cutoff[0] == 59
    updated = forecaster.predict([1, 2])
    refit = make().fit(y).predict([1, 2])
    pd.testing.assert_series_equal(updated, refit)


def test_update_predict_with_exogenous(make):
    y, X = _series(50), pd.DataFrame({"x": np.arange(55.0)})
    forecaster = make().fit(y.iloc[:40], X=X.iloc[:40])
    forecaster.update(y.iloc[40:], X=X.iloc[40:50])
    y_pred = forecaster.predict([1, 2], X=X.iloc[50:52])
    assert list(y_pred.index) == [50, 51]


# ------------------------------------------------------ the stated context
@pytest.fixture(scope="module")
def stated_checkpoint(tmp_path_factory):
    """A tiny checkpoint whose config.json states a 48-step context."""
    config = model_module.MoiraiMoEConfig(
        d_model=64, d_ff=32, num_layers=1, num_experts=4, context_length=48
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("stated")
    model_module.MoiraiMoEModel(config).save_pretrained(folder)
    return str(folder)


def test_the_checkpoints_stated_context_is_the_default_cap(stated_checkpoint):
    y = _series(200)

    def forecast(**params):
        f = MoiraiMoEForecaster(stated_checkpoint, num_samples=10, random_state=0)
        return f.set_params(**params).fit(y, fh=[1, 2, 3]).predict()

    default = forecast()
    pd.testing.assert_series_equal(default, forecast(context_length=48))
    # the user's context_length still wins
    assert not np.allclose(default.to_numpy(), forecast(context_length=200).to_numpy())
    # a series shorter than the stated context is used whole
    short = _series(40)
    f = MoiraiMoEForecaster(stated_checkpoint, num_samples=10, random_state=0)
    g = MoiraiMoEForecaster(
        stated_checkpoint, num_samples=10, random_state=0, context_length=40
    )
    pd.testing.assert_series_equal(
        f.fit(short, fh=[1]).predict(), g.fit(short, fh=[1]).predict()
    )


def test_construction_and_fit_raise_no_sktime_future_warning(tiny_checkpoint):
    # sktime 1.2 warns on every BaseForecaster construction whose remember_data
    # config is left at its default; a user could not silence it beforehand
    import warnings

    y = pd.Series(
        np.arange(40.0), index=pd.period_range("2000-01", periods=40, freq="M")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecaster = MoiraiMoEForecaster(checkpoint=tiny_checkpoint, num_samples=5)
        forecaster.clone().fit(y).predict(fh=[1, 2])
    assert forecaster.get_config()["remember_data"] is False
