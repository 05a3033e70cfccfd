"""sktime containers <-> arrays: splitting, imputation, padding, horizons, outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sktime.forecasting.base import ForecastingHorizon

from moirai_moe_sk import convert
from moirai_moe_sk.convert import SeriesStore


def _gluonts_causal_mean(values: np.ndarray) -> np.ndarray:
    """GluonTS' algorithm, written out step by step (forward fill, shifted mean)."""
    values = values.copy()
    mask = np.isnan(values)
    filled = values.copy()
    last = np.nan
    for i, v in enumerate(filled):
        if np.isnan(v):
            filled[i] = last
        else:
            last = v
    first_obs = values[~mask][0]
    filled[np.isnan(filled)] = first_obs
    for i in np.flatnonzero(mask):
        values[i] = filled[:i].mean() if i > 0 else filled[0]
    values[0] = filled[0]
    return values


@pytest.mark.parametrize("seed", range(5))
def test_causal_mean_impute_matches_gluonts(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=40)
    values[rng.random(40) < 0.3] = np.nan
    values[rng.integers(0, 3)] = np.nan  # sometimes a leading NaN
    values[-1] = 1.0 if np.isnan(values).all() else values[-1]
    np.testing.assert_allclose(
        convert.causal_mean_impute(values), _gluonts_causal_mean(values)
    )


def test_impute_univariate_marks_unobserved_and_multivariate_uses_zero():
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0, np.nan]})
    store = SeriesStore.from_sktime(frame, "y")
    batch = convert.target_arrays(store, store.keys, 10)
    np.testing.assert_allclose(batch.target[0, :, 0], [1.0, 1.0, 3.0, 5.0 / 3.0])
    assert batch.observed[0, :, 0].tolist() == [True, False, True, False]

    frame["b"] = [np.nan, 2.0, 2.0, 2.0]
    store = SeriesStore.from_sktime(frame, "y")
    batch = convert.target_arrays(store, store.keys, 10)
    np.testing.assert_allclose(batch.target[0], [[1, 0], [0, 2], [3, 2], [0, 2]])
    assert not batch.observed[0, 0, 1]
    assert not batch.observed[0, 1, 0]


def test_target_arrays_truncate_and_left_pad():
    y = pd.DataFrame(
        {"v": np.arange(30.0)},
        index=pd.MultiIndex.from_product([["a"], range(30)], names=["id", "t"]),
    )
    short = pd.DataFrame(
        {"v": [7.0, 8.0]},
        index=pd.MultiIndex.from_product([["b"], range(2)], names=["id", "t"]),
    )
    store = SeriesStore.from_sktime(pd.concat([y, short]), "y")
    batch = convert.target_arrays(store, store.keys, 20)
    assert batch.target.shape == (2, 20, 1)
    np.testing.assert_array_equal(batch.target[0, :, 0], np.arange(10.0, 30.0))
    assert batch.is_pad[1].sum() == 18
    np.testing.assert_array_equal(batch.target[1, -2:, 0], [7.0, 8.0])
    assert not batch.observed[1, :18].any()
    assert list(batch.times[1]) == [0, 1]


@pytest.mark.parametrize(
    ("frame", "error", "match"),
    [
        (pd.DataFrame({"a": ["x", "y"]}), TypeError, "non-numeric"),
        (pd.DataFrame({"a": pd.Categorical(["x", "y"])}), TypeError, "non-numeric"),
        (pd.DataFrame({"a": [1.0, np.inf]}), ValueError, "infinite"),
        (pd.DataFrame({"a": [np.nan, np.nan], "b": [1.0, 2.0]}), ValueError, "all NaN"),
    ],
)
def test_bad_values_raise_clear_errors(frame, error, match):
    with pytest.raises(error, match=match):
        SeriesStore.from_sktime(frame, "y")


def test_all_nan_instance_of_a_panel_is_named():
    index = pd.MultiIndex.from_product([["a", "b"], range(3)])
    y = pd.DataFrame({"v": [1.0, 2.0, 3.0, np.nan, np.nan, np.nan]}, index=index)
    with pytest.raises(ValueError, match=r"instance \('b',\)"):
        SeriesStore.from_sktime(y, "y")


def test_covariates_may_be_all_nan():
    SeriesStore.from_sktime(pd.DataFrame({"x": [np.nan, np.nan]}), "X")


def test_split_hierarchy_keeps_order_names_and_columns():
    index = pd.MultiIndex.from_tuples(
        [("z", "b", 0), ("z", "b", 1), ("a", "c", 0), ("a", "c", 1)],
        names=["l0", "l1", "time"],
    )
    y = pd.DataFrame({"c0": [1.0, 2, 3, 4], "c1": [5.0, 6, 7, 8]}, index=index)
    store = SeriesStore.from_sktime(y, "y")
    assert store.keys == [("z", "b"), ("a", "c")]
    assert store.instance_names == ["l0", "l1"]
    assert store.time_name == "time"
    assert list(store.columns) == ["c0", "c1"]
    pd.testing.assert_frame_equal(store.to_sktime(), y)


@pytest.mark.parametrize(
    ("index", "length"),
    [
        (pd.Index([0, 1, 2, 5, 6]), 7),
        (pd.PeriodIndex(["2000-01", "2000-02", "2000-05"], freq="M"), 5),
        (pd.DatetimeIndex(["2000-01-01", "2000-01-02", "2000-01-05"]), 5),
    ],
)
def test_gaps_in_a_regular_index_become_missing_values(index, length):
    freq = "D" if isinstance(index, pd.DatetimeIndex) else None
    y = pd.Series(np.arange(len(index), dtype=float), index=index)
    store = SeriesStore.from_sktime(y, "y", freq=freq)
    frame = store.frames[()]
    assert len(frame) == length
    assert frame.iloc[:, 0].isna().sum() == length - len(index)
    assert frame.index[0] == index[0]
    assert frame.index[-1] == index[-1]
    batch = convert.target_arrays(store, store.keys, 100)
    assert batch.observed.sum() == len(index)


def test_append_overwrites_overlaps_and_adds_instances():
    index = pd.MultiIndex.from_product([["a"], range(3)])
    y = pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=index)
    store = SeriesStore.from_sktime(y, "y")
    new = pd.DataFrame(
        {"v": [30.0, 4.0, 9.0]},
        index=pd.MultiIndex.from_tuples([("a", 2), ("a", 3), ("b", 0)]),
    )
    out = store.append(new, "y")
    assert out.keys == [("a",), ("b",)]
    assert out.frames[("a",)]["v"].tolist() == [1.0, 2.0, 30.0, 4.0]
    assert store.frames[("a",)]["v"].tolist() == [1.0, 2.0, 3.0]  # not mutated


# ------------------------------------------------------------------ horizons
def _store(index: pd.Index) -> SeriesStore:
    y = pd.Series(np.arange(len(index), dtype=float), index=index)
    return SeriesStore.from_sktime(y, "y", freq=getattr(index, "freq", None))


INDEXES = {
    "datetime": pd.date_range("2020-01-01", periods=30, freq="D"),
    "month-end": pd.date_range("2020-01-31", periods=30, freq="ME"),
    "period": pd.period_range("2000-01", periods=30, freq="M"),
    "range": pd.RangeIndex(30),
    "int": pd.Index(np.arange(10, 40)),
}


@pytest.mark.parametrize("name", list(INDEXES))
@pytest.mark.parametrize("steps", [[1], [2, 5], [1, 17, 40], list(range(1, 21))])
@pytest.mark.parametrize("relative", [True, False])
def test_horizon_steps_match_sktime(name, steps, relative):
    index = INDEXES[name]
    store = _store(index)
    cutoff = index[-1:]
    fh = ForecastingHorizon(steps, is_relative=True, freq=getattr(index, "freq", None))
    if not relative:
        fh = fh.to_absolute(cutoff)
    horizon = convert.horizon_steps(fh, cutoff, store, store.keys)
    assert horizon.steps.tolist() == [steps]
    assert horizon.prediction_length == max(steps)
    assert horizon.times[0].equals(fh.to_absolute_index(cutoff))


def test_relative_horizon_counts_from_each_series_end():
    y = pd.concat(
        {
            "a": pd.Series(np.ones(10), index=pd.RangeIndex(10)),
            "b": pd.Series(np.ones(7), index=pd.RangeIndex(7)),
        },
        names=["id", "t"],
    ).to_frame("v")
    store = SeriesStore.from_sktime(y, "y")
    cutoff = pd.Index([9])
    rel = convert.horizon_steps(ForecastingHorizon([1, 2]), cutoff, store, store.keys)
    assert rel.steps.tolist() == [[1, 2], [1, 2]]
    assert [list(t) for t in rel.times] == [[10, 11], [7, 8]]
    absolute = ForecastingHorizon(pd.Index([10, 11]), is_relative=False)
    out = convert.horizon_steps(absolute, cutoff, store, store.keys)
    assert out.steps.tolist() == [[1, 2], [4, 5]]
    assert out.prediction_length == 5
    assert [list(t) for t in out.times] == [[10, 11], [10, 11]]


@pytest.mark.parametrize("name", list(INDEXES))
def test_unequal_ends_on_every_index_type(name):
    index = INDEXES[name]
    freq = getattr(index, "freq", None)
    y = pd.concat(
        {"a": pd.Series(1.0, index=index), "b": pd.Series(1.0, index=index[:-3])},
        names=["id", "t"],
    ).to_frame("v")
    store = SeriesStore.from_sktime(y, "y", freq=freq)
    cutoff, cutoff_b = index[-1:], index[-4:-3]
    fh = ForecastingHorizon([1, 17], is_relative=True, freq=freq)
    rel = convert.horizon_steps(fh, cutoff, store, store.keys)
    assert rel.steps.tolist() == [[1, 17], [1, 17]]
    assert rel.times[1].equals(fh.to_absolute_index(cutoff_b))
    absolute = fh.to_absolute(cutoff)
    out = convert.horizon_steps(absolute, cutoff, store, store.keys)
    assert out.steps.tolist() == [[1, 17], [4, 20]]
    assert out.times[1].equals(absolute.to_absolute_index(cutoff))


def test_horizon_in_the_past_raises():
    store = _store(pd.RangeIndex(10))
    fh = ForecastingHorizon(pd.Index([5, 12]), is_relative=False)
    with pytest.raises(ValueError, match="past"):
        convert.horizon_steps(fh, pd.Index([9]), store, store.keys)


# ---------------------------------------------------------------- covariates
def _xy(n: int = 12):
    index = pd.RangeIndex(n)
    y = pd.Series(np.arange(n, dtype=float), index=index)
    X = pd.DataFrame({"k": np.arange(100.0, 100 + n), "p": -np.arange(n, dtype=float)})
    return y, X


def test_known_and_past_covariates_split_by_predict_columns():
    y, X = _xy()
    store = SeriesStore.from_sktime(y, "y")
    past_x = SeriesStore.from_sktime(X, "X")
    future = pd.DataFrame({"k": [112.0, 114.0]}, index=pd.Index([12, 14]))
    future_x = SeriesStore.from_sktime(future, "X")
    fh = ForecastingHorizon([1, 3])
    horizon = convert.horizon_steps(fh, pd.Index([11]), store, store.keys)
    targets = convert.target_arrays(store, store.keys, 8)
    cov = convert.covariate_arrays(
        past_x, future_x, store.keys, targets, horizon, store
    )
    assert cov.known.shape == (1, 8 + 3, 1)
    np.testing.assert_allclose(cov.known[0, :8, 0], np.arange(104.0, 112.0))
    np.testing.assert_allclose(cov.known[0, 8:, 0], [112.0, 0.0, 114.0])
    assert cov.known_observed[0, 8:, 0].tolist() == [True, False, True]
    assert cov.past.shape == (1, 8, 1)
    np.testing.assert_allclose(cov.past[0, :, 0], -np.arange(4.0, 12.0))

    only_past = convert.covariate_arrays(
        past_x, None, store.keys, targets, horizon, store
    )
    assert only_past.known is None
    assert only_past.past.shape == (1, 8, 2)


def test_covariates_missing_forecast_rows_or_unknown_columns_raise():
    y, X = _xy()
    store = SeriesStore.from_sktime(y, "y")
    past_x = SeriesStore.from_sktime(X, "X")
    horizon = convert.horizon_steps(
        ForecastingHorizon([1, 2]), pd.Index([11]), store, store.keys
    )
    targets = convert.target_arrays(store, store.keys, 8)
    short = SeriesStore.from_sktime(pd.DataFrame({"k": [1.0]}, index=[12]), "X")
    with pytest.raises(ValueError, match=r"lacks rows.*\[13\]"):
        convert.covariate_arrays(past_x, short, store.keys, targets, horizon, store)
    extra = SeriesStore.from_sktime(
        pd.DataFrame({"z": [1.0, 2.0]}, index=[12, 13]), "X"
    )
    with pytest.raises(ValueError, match="'z'"):
        convert.covariate_arrays(past_x, extra, store.keys, targets, horizon, store)


# ------------------------------------------------------------------- outputs
def test_sample_quantiles_are_gluonts_order_statistics():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(2, 100, 3, 2))
    alpha = [0.0, 0.025, 0.1, 0.5, 0.9, 0.975, 1.0]
    q = convert.sample_quantiles(samples, alpha)
    ordered = np.sort(samples, axis=1)
    for i, a in enumerate(alpha):
        np.testing.assert_array_equal(q[:, i], ordered[:, int(np.round(99 * a))])
    assert (np.diff(q, axis=1) >= 0).all()


def test_formatters_give_sktime_layouts():
    index = pd.MultiIndex.from_product([["a", "b"], range(5)], names=["id", "t"])
    y = pd.DataFrame({"c0": np.arange(10.0), "c1": np.ones(10)}, index=index)
    store = SeriesStore.from_sktime(y, "y")
    fh = ForecastingHorizon([1, 3])
    horizon = convert.horizon_steps(fh, pd.Index([4]), store, store.keys)
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(2, 50, 3, 2))
    paths = samples[:, :, [0, 2]]  # the steps fh asks for

    values = convert.point_values(paths, "mean")
    point = convert.format_point(values, store, store.keys, horizon)
    assert list(point.index) == [("a", 5), ("a", 7), ("b", 5), ("b", 7)]
    assert list(point.index.names) == ["id", "t"]
    np.testing.assert_allclose(point.loc[("b", 7), "c1"], samples[1, :, 2, 1].mean())

    cols = pd.MultiIndex.from_product([store.columns, [0.1, 0.9]])
    q = convert.sample_quantiles(paths, [0.1, 0.9])
    quant = convert.format_quantiles(q, cols, store, store.keys, horizon)
    expected = np.sort(samples[0, :, 0, 1])[int(np.round(49 * 0.9))]
    assert quant.loc[("a", 5), ("c1", 0.9)] == expected

    cols = pd.MultiIndex.from_product([store.columns, [0.8], ["lower", "upper"]])
    q = convert.sample_quantiles(paths, convert.interval_alpha([0.8]))
    interval = convert.format_quantiles(q, cols, store, store.keys, horizon)
    np.testing.assert_array_equal(
        interval[("c0", 0.8, "upper")].to_numpy(), quant[("c0", 0.9)].to_numpy()
    )

    var = convert.format_var(
        convert.var_values(paths, cov=False), store, store.keys, horizon, cov=False
    )
    np.testing.assert_allclose(var.loc[("a", 7), "c0"], samples[0, :, 2, 0].var())
    cov = convert.format_var(
        convert.var_values(paths, cov=True), store, store.keys, horizon, cov=True
    )
    assert cov.shape == (4, 4)
    np.testing.assert_allclose(cov.loc[("a", 5), ("c0", 5)], samples[0, :, 0, 0].var())
    np.testing.assert_allclose(
        cov.loc[("b", 7), ("c1", 5)],
        np.cov(samples[1, :, 2, 1], samples[1, :, 0, 1], ddof=0)[0, 1],
    )

    spl, out_index = convert.format_samples(paths, store, store.keys, horizon)
    assert out_index.equals(point.index)
    assert spl.shape == (50 * 4, 2)
    assert list(spl.index.names) == ["sample", "id", "t"]
    assert spl.loc[(3, "b", 7), "c0"] == samples[1, 3, 2, 0]


def test_format_point_returns_named_series_for_series_input():
    y = pd.Series(np.arange(5.0), name="sales")
    store = SeriesStore.from_sktime(y, "y")
    horizon = convert.horizon_steps(
        ForecastingHorizon([1, 2]), pd.Index([4]), store, store.keys
    )
    values = convert.point_values(np.zeros((1, 3, 2, 1)), "median")
    point = convert.format_point(values, store, store.keys, horizon)
    assert isinstance(point, pd.Series)
    assert point.name == "sales"
    assert list(point.index) == [5, 6]


def test_resolve_context_length_caps_the_longest_series():
    store = _store(pd.RangeIndex(5000))
    assert convert.resolve_context_length(None, store) == convert.DEFAULT_MAX_CONTEXT
    assert convert.resolve_context_length(7, store) == 7
    assert convert.resolve_context_length(None, _store(pd.RangeIndex(30))) == 30


def test_resolve_context_length_uses_the_checkpoints_stated_context():
    store = _store(pd.RangeIndex(3000))
    assert convert.resolve_context_length(None, store, 512) == 512
    assert convert.resolve_context_length(None, _store(pd.RangeIndex(30)), 512) == 30
    assert convert.resolve_context_length(64, store, 512) == 64  # the user's wins
    assert (
        convert.resolve_context_length(None, store, None) == convert.DEFAULT_MAX_CONTEXT
    )
