"""Inputs that used to hang, give silent wrong answers or raw pandas/torch errors.

Each case failed before the hardening issue: a Timedelta horizon counted in
seconds, an absolute time stamp off the grid answered with the value next to it,
mixed frequencies and integer steps above 1 re-gridded silently, duplicated
stamps reached pandas, values beyond float32 ended in an internal-name message,
and small-magnitude series lost scale equivariance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.convert import SeriesStore
from moirai_moe_sk.model.forecast import SMALL_SCALE, rescale_factors


def _daily(n: int = 60, start: str = "2020-01-01") -> pd.Series:
    rng = np.random.default_rng(0)
    values = 50 + 5 * np.sin(np.arange(n) / 3) + rng.normal(size=n)
    return pd.Series(values, index=pd.date_range(start, periods=n, freq="D"))


@pytest.fixture
def forecaster(tiny_checkpoint):
    return MoiraiMoEForecaster(
        checkpoint=tiny_checkpoint, num_samples=20, random_state=0
    )


# ------------------------------------------------------------------ horizons
def test_timedelta_horizon_counts_in_the_series_frequency(forecaster):
    y = _daily()
    by_steps = forecaster.clone().fit(y).predict(fh=[1, 2])
    by_time = (
        forecaster.clone()
        .fit(y)
        .predict(fh=pd.TimedeltaIndex([pd.Timedelta("1D"), pd.Timedelta("2D")]))
    )
    pd.testing.assert_series_equal(by_time, by_steps)


def test_timedelta_horizon_off_the_grid_is_refused(forecaster):
    fitted = forecaster.fit(_daily())
    with pytest.raises(ValueError, match=r"not on the grid of y.*frequency 'D'"):
        fitted.predict(fh=pd.TimedeltaIndex([pd.Timedelta("12h")]))


def test_timedelta_horizon_needs_a_datetime_index(forecaster):
    y = pd.Series(
        np.arange(40.0), index=pd.period_range("2000-01", periods=40, freq="M")
    )
    fitted = forecaster.fit(y)
    with pytest.raises(
        TypeError, match="Timedeltas, which need y with a DatetimeIndex"
    ):
        fitted.predict(fh=pd.TimedeltaIndex([pd.Timedelta("31D")]))


@pytest.mark.parametrize("panel", [False, True])
def test_absolute_time_stamp_off_the_grid_is_refused(forecaster, panel):
    y = _daily()
    if panel:
        y = pd.concat([y, y], keys=["a", "b"]).to_frame("v")
    fitted = forecaster.fit(y)
    stamp = pd.DatetimeIndex(["2020-03-02 12:00"])
    with pytest.raises(ValueError, match=r"2020-03-02 12:00:00.*not on the grid of y"):
        fitted.predict(fh=stamp)
    on_grid = fitted.predict(fh=pd.DatetimeIndex(["2020-03-02"]))
    assert (on_grid.index.get_level_values(-1) == pd.Timestamp("2020-03-02")).all()


# ---------------------------------------------------------- index structure
def test_a_panel_of_mixed_frequencies_is_refused_naming_both(forecaster):
    weekly = pd.Series(
        np.arange(60.0), index=pd.date_range("2020-01-05", periods=60, freq="W-SUN")
    )
    panel = pd.concat([_daily(), weekly], keys=["daily", "weekly"]).to_frame("v")
    with pytest.raises(
        ValueError, match=r"mixes frequencies.*daily.*'D'.*weekly.*W-SUN"
    ):
        forecaster.fit(panel)


def test_coarser_stamps_on_a_finer_grid_are_refused():
    # weekly stamps (one week missing) told they are daily: most rows would be NaN
    stamps = pd.date_range("2020-01-05", periods=20, freq="W-SUN").delete(7)
    y = pd.Series(np.arange(19.0), index=stamps)
    with pytest.raises(ValueError, match=r"would be missing.*multiple of 7 steps"):
        SeriesStore.from_sktime(y, "y", freq="D")


def test_an_integer_index_keeps_its_own_step(forecaster):
    values = _daily(50).to_numpy()
    step1 = pd.Series(values, index=pd.RangeIndex(50))
    step2 = pd.Series(values, index=pd.Index(np.arange(0, 100, 2)))
    store = SeriesStore.from_sktime(step2, "y")
    assert store.step == 2
    assert len(store.frames[()]) == 50  # no NaN rows inserted
    want = forecaster.clone().fit(step1).predict(fh=[1, 2])
    got = forecaster.clone().fit(step2).predict(fh=[2, 4])  # index units
    assert list(got.index) == [100, 102]
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    with pytest.raises(ValueError, match=r"not on the grid.*step 2.*fh=\[2, 4\]"):
        forecaster.clone().fit(step2).predict(fh=[1])


def test_epoch_seconds_at_hourly_spacing_forecast_the_next_hour(forecaster):
    start = 1_600_000_000
    y = pd.Series(_daily(48).to_numpy(), index=pd.Index(start + 3600 * np.arange(48)))
    pred = forecaster.fit(y).predict(fh=[3600, 7200])
    assert list(pred.index) == [start + 3600 * 48, start + 3600 * 49]
    assert np.isfinite(pred.to_numpy()).all()


def test_a_huge_gap_in_an_integer_index_is_refused(forecaster):
    y = pd.Series([1.0, 2.0, 3.0, 4.0], index=pd.Index([0, 1, 2, 30_000_000]))
    with pytest.raises(ValueError, match=r"30000001 steps: 100% would be missing"):
        forecaster.fit(y)


def test_mixed_integer_steps_in_a_panel_are_refused():
    a = pd.Series(np.arange(10.0), index=pd.Index(np.arange(0, 20, 2)))
    b = pd.Series(np.arange(10.0), index=pd.Index(np.arange(0, 30, 3)))
    panel = pd.concat([a, b], keys=["a", "b"]).to_frame("v")
    with pytest.raises(ValueError, match=r"mixes index steps.*'a'.*2.*'b'.*3"):
        SeriesStore.from_sktime(panel, "y")


@pytest.mark.parametrize("kind", ["int", "datetime", "panel"])
def test_a_duplicated_time_stamp_is_named(kind):
    if kind == "int":
        y = pd.Series(np.arange(5.0), index=pd.Index([0, 1, 2, 2, 3]))
        where, stamp = "y has", "2 more than once"
    elif kind == "datetime":
        index = pd.DatetimeIndex(
            ["2020-01-01", "2020-01-02", "2020-01-02", "2020-01-03"]
        )
        y = pd.Series(np.arange(4.0), index=index)
        where, stamp = "y has", "2020-01-02 00:00:00 more than once"
    else:
        index = pd.MultiIndex.from_tuples([("a", 0), ("a", 1), ("b", 0), ("b", 0)])
        y = pd.DataFrame({"v": np.arange(4.0)}, index=index)
        where, stamp = r"y of instance \('b',\) has", "0 more than once"
    with pytest.raises(ValueError, match=f"{where} the time stamp {stamp}"):
        SeriesStore.from_sktime(y, "y")


# -------------------------------------------------------------------- values
def test_values_beyond_float32_name_the_value_and_the_limit(forecaster):
    y = _daily() * 1e39
    with pytest.raises(
        ValueError, match=r"values up to .*e\+40.*largest number is 3.4e\+38"
    ):
        forecaster.fit(y)


@pytest.mark.parametrize("decoding", ["exact", "fast"])
def test_forecasts_are_scale_equivariant_from_1e_minus_8_to_1e12(
    tiny_checkpoint, decoding
):
    y = _daily(96)
    alpha = [0.1, 0.5, 0.9]

    def quantiles(scale: float) -> np.ndarray:
        forecaster = MoiraiMoEForecaster(
            checkpoint=tiny_checkpoint,
            num_samples=50,
            random_state=0,
            decoding=decoding,
        )
        fitted = forecaster.fit(y * scale)
        return fitted.predict_quantiles(fh=range(1, 21), alpha=alpha).to_numpy() / scale

    base = quantiles(1.0)
    width = base[:, 2] - base[:, 0]
    assert (width > 0).all()
    for scale in (1e-8, 1e-6, 1e-4, 1e-2, 1e2, 1e4, 1e8, 1e12):
        got = quantiles(scale)
        # same seed, same normalised inputs: equal to float32 rounding (the
        # variance floor had made 1e-4 intervals hundreds of times too wide)
        np.testing.assert_allclose(got, base, rtol=1e-4, atol=1e-4 * width.mean())


def test_rescale_factors_bring_small_spreads_into_one_to_ten():
    spreads = [1e-9, 3e-6, 0.1, 0.5, 0.999, 1.0, 7.0, 1e6]
    rows = [s * torch.tensor([[0.0], [1.0], [2.0]]) for s in spreads]
    values = torch.stack(rows).double()
    factors = rescale_factors(values, torch.ones_like(values, dtype=torch.bool))
    stds = values.std(dim=1).flatten().numpy()  # spreads, to rounding
    scaled = stds * factors.flatten().numpy()
    small = np.asarray(spreads) < SMALL_SCALE
    assert ((scaled[small] > 1 - 1e-9) & (scaled[small] < 10)).all()
    assert (factors.flatten().numpy()[~small] == 1).all()
    # a constant series uses its magnitude, large or small (its scale is the
    # floor at any level); all zeros and no observation stay
    constant = torch.tensor([[[2e-5], [2e-5]], [[0.0], [0.0]], [[350.0], [350.0]]])
    factor = rescale_factors(constant, torch.ones_like(constant, dtype=torch.bool))
    assert factor.flatten().tolist() == pytest.approx([1e5, 1.0, 1e-2])
    nothing = rescale_factors(constant, torch.zeros_like(constant, dtype=torch.bool))
    assert nothing.flatten().tolist() == [1.0, 1.0, 1.0]


def test_series_at_ordinary_scale_are_not_rescaled():
    # the reference's own inputs keep exactly the reference's forecasts
    y = 100 + torch.randn(2, 64, 1, generator=torch.Generator().manual_seed(0))
    factor = rescale_factors(y, torch.ones_like(y, dtype=torch.bool))
    assert (factor == 1).all()
