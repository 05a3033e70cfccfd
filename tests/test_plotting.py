"""plot_forecast and plot_sample_paths: what is drawn, and loud errors on bad input."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from moirai_moe_sk.forecaster import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast, plot_sample_paths


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _series(index: pd.Index, name: str = "y") -> pd.Series:
    values = 100 + 10 * np.sin(np.arange(len(index)) / 3) + np.arange(len(index))
    return pd.Series(values, index=index, name=name)


def _interval(y_pred: pd.Series, coverages=(0.8, 0.95)) -> pd.DataFrame:
    """An interval frame shaped like predict_interval's: (variable, coverage, side)."""
    columns, data = [], []
    for c in coverages:
        for side, sign in (("lower", -1), ("upper", 1)):
            columns.append((y_pred.name, c, side))
            data.append(y_pred.to_numpy() + sign * 20 * c)
    return pd.DataFrame(
        np.column_stack(data),
        index=y_pred.index,
        columns=pd.MultiIndex.from_tuples(columns),
    )


INDEXES = {
    "period": (
        pd.period_range("2000-01", periods=48, freq="M"),
        pd.period_range("2004-01", periods=12, freq="M"),
    ),
    "datetime": (
        pd.date_range("2000-01-01", periods=48, freq="D"),
        pd.date_range("2000-02-18", periods=12, freq="D"),
    ),
    "range": (pd.RangeIndex(0, 48), pd.RangeIndex(48, 60)),
}


def _numeric_x(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.PeriodIndex):
        index = index.to_timestamp()
    if isinstance(index, pd.DatetimeIndex):
        return mdates.date2num(index)
    return index.to_numpy(dtype=float)


# ------------------------------------------------------------ plot_forecast
@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_plot_forecast_draws_history_actual_forecast_and_bands(kind):
    past, future = INDEXES[kind]
    y, y_test = _series(past), _series(future) + 5
    y_pred = _series(future)
    intervals = _interval(y_pred, coverages=(0.5, 0.8, 0.95))

    fig, ax = plot_forecast(y, y_pred, intervals, y_test, title="t")

    assert fig is ax.figure
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["history", "actual", "forecast"]
    assert len(lines[0].get_xdata()) == 48
    np.testing.assert_allclose(lines[2].get_ydata(), y_pred.to_numpy())
    bands = ax.collections
    assert [b.get_label() for b in bands] == [
        "95% prediction interval",
        "80% prediction interval",
        "50% prediction interval",
    ]
    alphas = [b.get_alpha() for b in bands]
    assert alphas == sorted(alphas)  # wider intervals are more transparent
    assert alphas[0] < alphas[-1]
    # the widest band spans its interval's bounds
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(intervals[("y", 0.95, "lower")].min())
    assert ys.max() == pytest.approx(intervals[("y", 0.95, "upper")].max())
    # the view covers the whole history and forecast
    low, high = ax.get_xlim()
    x = np.concatenate([_numeric_x(past), _numeric_x(future)])
    assert low <= x.min()
    assert high >= x.max()
    assert ax.get_title() == "t"
    assert ax.get_ylabel() == "y"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["history", "actual", "forecast"]


def test_plot_forecast_optional_parts_history_labels_and_given_ax():
    past, future = INDEXES["period"]
    y = _series(past)
    _, ax = plt.subplots()
    fig, returned = plot_forecast(
        y, _series(future), ax=ax, history=10, labels={"forecast": "median"}
    )
    assert returned is ax
    assert fig is ax.figure
    assert [line.get_label() for line in ax.get_lines()] == ["history", "median"]
    assert len(ax.get_lines()[0].get_xdata()) == 10
    assert not ax.collections
    # history only
    _, ax = plot_forecast(y)
    assert len(ax.get_lines()) == 1
    # a single band gets a middling opacity
    _, ax = plot_forecast(y, pred_interval=_interval(_series(future), (0.9,)))
    assert len(ax.collections) == 1
    assert 0.1 < ax.collections[0].get_alpha() < 0.5


def test_plot_forecast_picks_a_variable_of_multivariate_frames():
    past, future = INDEXES["period"]
    y = pd.DataFrame({"a": _series(past), "b": -_series(past)})
    y_pred = pd.DataFrame({"a": _series(future), "b": -_series(future)})
    intervals = pd.concat(
        [_interval(y_pred["a"].rename("a")), _interval(y_pred["b"].rename("b"))],
        axis=1,
    )
    _, ax = plot_forecast(y, y_pred, intervals, variable="b")
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), y["b"].to_numpy())
    assert ax.get_ylabel() == "b"
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(intervals[("b", 0.95, "upper")].max())

    with pytest.raises(ValueError, match=r"y has 2 columns \['a', 'b'\].*variable="):
        plot_forecast(y, y_pred)
    with pytest.raises(ValueError, match="variable 'c' is not a column of y"):
        plot_forecast(y, y_pred, variable="c")
    with pytest.raises(ValueError, match="pred_interval holds 2 variables"):
        plot_forecast(y["a"], y_pred["a"], intervals)


def test_plot_forecast_rejects_mismatched_indexes():
    past, future = INDEXES["period"]
    y = _series(past)
    with pytest.raises(
        ValueError, match="y_pred has a DatetimeIndex but y has a PeriodIndex"
    ):
        plot_forecast(y, _series(INDEXES["datetime"][1]))
    weekly = pd.period_range("2004-01-05", periods=12, freq="W")
    with pytest.raises(ValueError, match=r"y_test has a PeriodIndex \(freq W"):
        plot_forecast(y, y_test=_series(weekly))
    y_pred = _series(future)
    shifted = _interval(y_pred).shift(1, freq="M")
    with pytest.raises(ValueError, match=r"pred_interval's index .* does not match"):
        plot_forecast(y, y_pred, shifted)


def test_plot_forecast_rejects_bad_inputs():
    past, future = INDEXES["period"]
    y = _series(past)
    with pytest.raises(TypeError, match="y must be a pandas Series or DataFrame"):
        plot_forecast(y.to_numpy())
    panel = pd.concat({"s1": y, "s2": y})
    with pytest.raises(TypeError, match=r"y has a MultiIndex .*y\.loc\[key\]"):
        plot_forecast(panel)
    with pytest.raises(TypeError, match="index of type Index"):
        plot_forecast(pd.Series([1.0, 2.0], index=["a", "b"]))
    with pytest.raises(ValueError, match="predict_interval's columns"):
        plot_forecast(y, pred_interval=_series(future).to_frame())
    with pytest.raises(ValueError, match=r"unknown labels key\(s\) \['fcst'\]"):
        plot_forecast(y, labels={"fcst": "x"})
    with pytest.raises(ValueError, match="history must be an integer >= 1, got 0"):
        plot_forecast(y, history=0)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    y = _series(INDEXES["range"][0])
    with pytest.raises(
        ModuleNotFoundError, match=r"pip install 'moirai_moe_sk\[plot\]'"
    ):
        plot_forecast(y)
    with pytest.raises(ModuleNotFoundError, match="plot_sample_paths needs matplotlib"):
        plot_sample_paths(np.zeros((3, 4)))


# -------------------------------------------------------- plot_sample_paths
def test_fan_chart_of_an_array_draws_order_statistics():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(101, 8)).cumsum(axis=1)
    past, future = INDEXES["period"][0], INDEXES["period"][1][:8]
    y = _series(past)

    fig, ax = plot_sample_paths(samples, future, y=y, n_paths=4, history=12)

    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "history",
        "sample paths",
        *["_nolegend_"] * 3,
        "median",
    ]
    assert len(lines[0].get_xdata()) == 12
    ordered = np.sort(samples, axis=0)
    np.testing.assert_allclose(lines[-1].get_ydata(), ordered[50])  # (N - 1) * 0.5
    # the drawn paths are samples
    for line in lines[1:-1]:
        assert any(np.array_equal(line.get_ydata(), s) for s in samples)
    bands = ax.collections
    assert [b.get_label() for b in bands] == [
        "5%-95% quantiles",
        "10%-90% quantiles",
        "25%-75% quantiles",
    ]
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(ordered[5].min())  # round(100 * 0.05)
    assert ys.max() == pytest.approx(ordered[95].max())
    low, high = ax.get_xlim()
    x = np.concatenate([_numeric_x(past[-12:]), _numeric_x(future)])
    assert low <= x.min()
    assert high >= x.max()
    assert ax.get_ylabel() == "y"
    assert fig is ax.figure


def test_fan_chart_path_choice_is_seeded_and_capped():
    samples = np.arange(30.0).reshape(3, 10)
    _, ax = plot_sample_paths(samples, n_paths=10, coverage=0.5)
    assert len(ax.get_lines()) == 3 + 1  # all 3 samples and the median
    assert len(ax.collections) == 1
    np.testing.assert_allclose(ax.get_lines()[-1].get_xdata(), np.arange(1, 11))

    rng = np.random.default_rng(0)
    samples = rng.normal(size=(50, 6))

    def drawn(seed):
        _, ax = plot_sample_paths(samples, n_paths=3, random_state=seed)
        return [tuple(line.get_ydata()) for line in ax.get_lines()[:-1]]

    assert drawn(5) == drawn(5)
    assert drawn(5) != drawn(6)
    _, ax = plot_sample_paths(samples, n_paths=0)
    assert [line.get_label() for line in ax.get_lines()] == ["median"]


def test_fan_chart_rejects_bad_arrays():
    samples = np.zeros((10, 5))
    with pytest.raises(
        ValueError, match=r"2-D \(sample, time\).*samples\[0, :, :, 0\]"
    ):
        plot_sample_paths(np.zeros((2, 10, 5, 1)))
    with pytest.raises(ValueError, match="index has 4 entries but the samples have 5"):
        plot_sample_paths(samples, pd.RangeIndex(4))
    y = _series(INDEXES["period"][0])
    with pytest.raises(ValueError, match="index is needed to place the 5 forecast"):
        plot_sample_paths(samples, y=y)
    with pytest.raises(
        ValueError,
        match=r"y has a PeriodIndex .* but the forecast has an integer index",
    ):
        plot_sample_paths(samples, pd.RangeIndex(5), y=y)
    with pytest.raises(ValueError, match=r"coverage must be a number in \(0, 1\)"):
        plot_sample_paths(samples, coverage=[0.5, 1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        plot_sample_paths(np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="forecaster_or_samples must be"):
        plot_sample_paths(["a", "b"])
    with pytest.raises(ValueError, match="fh and X are only for a forecaster"):
        plot_sample_paths(samples, fh=[1])


@pytest.fixture(scope="module")
def airline():
    from sktime.datasets import load_airline

    return load_airline()


def test_fan_chart_of_a_forecaster_matches_its_intervals(tiny_checkpoint, airline):
    pytest.importorskip("skpro")
    y = airline
    forecaster = MoiraiMoEForecaster(
        str(tiny_checkpoint), num_samples=40, random_state=3
    ).fit(y, fh=range(1, 7))
    intervals = forecaster.predict_interval(coverage=[0.8, 0.5])
    median = forecaster.predict_quantiles(alpha=[0.5])

    _, ax = plot_sample_paths(forecaster, y=y, coverage=[0.5, 0.8], n_paths=2)

    lines = ax.get_lines()
    assert len(lines) == 1 + 2 + 1
    np.testing.assert_allclose(lines[-1].get_ydata(), median.iloc[:, 0].to_numpy())
    future = pd.period_range("1961-01", periods=6, freq="M").to_timestamp()
    assert list(lines[-1].get_xdata()) == list(future)
    assert ax.get_ylabel() == y.name
    for band, coverage in zip(ax.collections, (0.8, 0.5), strict=True):
        ys = band.get_paths()[0].vertices[:, 1]
        name = intervals.columns.levels[0][0]
        assert ys.min() == pytest.approx(intervals[(name, coverage, "lower")].min())
        assert ys.max() == pytest.approx(intervals[(name, coverage, "upper")].max())
    # the same through predict_proba's distribution, and for a given fh
    _, ax2 = plot_sample_paths(forecaster.predict_proba(marginal=False), n_paths=2)
    np.testing.assert_allclose(ax2.get_lines()[-1].get_ydata(), lines[-1].get_ydata())
    _, ax3 = plot_sample_paths(forecaster, fh=[1, 2, 3])
    assert len(ax3.get_lines()[-1].get_xdata()) == 3


def test_fan_chart_of_a_panel_needs_an_instance(tiny_checkpoint, airline):
    pytest.importorskip("skpro")
    y = airline
    panel = pd.concat({"a": y, "b": 2 * y}, names=["series", "time"]).to_frame()
    forecaster = MoiraiMoEForecaster(
        str(tiny_checkpoint), num_samples=20, random_state=0
    ).fit(panel, fh=range(1, 5))
    with pytest.raises(ValueError, match=r"covers 2 series .*instance="):
        plot_sample_paths(forecaster)
    with pytest.raises(ValueError, match="instance 'c' is not in the forecast"):
        plot_sample_paths(forecaster, instance="c")
    _, ax = plot_sample_paths(forecaster, instance="b", y=panel.loc["b"])
    expected = forecaster.predict().loc["b"].iloc[:, 0]
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), expected.to_numpy())
    assert len(ax.get_lines()[0].get_xdata()) == len(y)


def test_fan_chart_rejects_unfitted_and_non_sample_forecasters(tiny_checkpoint):
    with pytest.raises(ValueError, match="MoiraiMoEForecaster is not fitted"):
        plot_sample_paths(MoiraiMoEForecaster(str(tiny_checkpoint)))
    pytest.importorskip("skpro")
    from sktime.forecasting.naive import NaiveForecaster

    y = _series(INDEXES["period"][0])
    naive = NaiveForecaster().fit(y, fh=[1, 2])
    with pytest.raises(TypeError, match="predict_proba returned a Normal, not sample"):
        plot_sample_paths(naive)
