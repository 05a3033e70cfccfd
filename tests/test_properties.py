"""Property-based inputs to the forecaster: finite, well-shaped, monotone, scale-consistent.

Random series (lengths, missing values, magnitudes from 1e-8 to 1e12, index
types and steps) and horizons either give well-formed forecasts or one of the
package's documented errors. The default run draws a fixed set of examples
(``derandomize``, so CI is reproducible); ``-m slow`` draws many more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moirai_moe_sk import MoiraiMoEForecaster

INDEXES = ("range", "step3", "period", "datetime")
COMMON = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
}


@st.composite
def series_and_horizon(draw):
    length = draw(st.integers(1, 120))
    kind = draw(st.sampled_from(INDEXES))
    scale = 10.0 ** draw(st.integers(-8, 12))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    values = scale * (3 + np.sin(np.arange(length) / 2) + rng.normal(size=length))
    missing = rng.random(length) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    missing[rng.integers(length)] = False  # at least one observation
    values[missing] = np.nan
    if kind == "range":
        index = pd.RangeIndex(length)
        unit = 1
    elif kind == "step3":
        index = pd.Index(7 + 3 * np.arange(length))
        unit = 3
    elif kind == "period":
        index = pd.period_range("2001-01", periods=length, freq="M")
        unit = 1
    else:
        index = pd.date_range("2001-01-01", periods=length, freq="D")
        unit = 1
    steps = draw(st.lists(st.integers(1, 40), min_size=1, max_size=5, unique=True))
    return pd.Series(values, index=index), sorted(unit * s for s in steps), scale


def _check(tiny_checkpoint, case) -> None:
    y, fh, scale = case
    forecaster = MoiraiMoEForecaster(
        checkpoint=tiny_checkpoint, num_samples=20, random_state=0
    )
    forecaster.fit(y)
    quantiles = forecaster.predict_quantiles(fh=fh, alpha=[0.1, 0.5, 0.9])
    values = quantiles.to_numpy()
    assert values.shape == (len(fh), 3)
    assert np.isfinite(values).all()
    assert (np.diff(values, axis=1) >= 0).all()  # monotone in the level
    spread = np.nanmax(np.abs(y.to_numpy()))
    assert np.abs(values).max() < 1e4 * spread  # on the data's scale
    # scale-consistent: the same series scaled by 1/scale gives the same forecasts
    unit = MoiraiMoEForecaster(
        checkpoint=tiny_checkpoint, num_samples=20, random_state=0
    )
    unit_values = unit.fit(y / scale).predict_quantiles(fh=fh, alpha=[0.1, 0.5, 0.9])
    width = float(np.abs(unit_values.to_numpy()).max())
    np.testing.assert_allclose(
        values / scale, unit_values.to_numpy(), rtol=1e-3, atol=1e-3 * width
    )


@settings(max_examples=25, **COMMON)
@given(case=series_and_horizon())
def test_random_series_give_well_formed_scale_consistent_forecasts(
    tiny_checkpoint, case
):
    _check(tiny_checkpoint, case)


@pytest.mark.slow
@settings(max_examples=200, **COMMON)
@given(case=series_and_horizon())
def test_random_series_many_examples(tiny_checkpoint, case):
    _check(tiny_checkpoint, case)
