"""The forecaster against uni2ts' own GluonTS predictor on the same weights and data.

``scripts/make_predictor_fixtures.py`` ran uni2ts' ``create_predictor`` on the
committed tiny checkpoint, one series per seeded call, and stored the model
inputs it built, the sample paths and the order-statistic quantiles. Where no
padding is involved the random streams coincide, so our seeded forecaster must
give the same quantiles; with left padding (which we drop) the stream differs
and the quantiles agree within Monte-Carlo error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from moirai_moe_sk import MoiraiMoEForecaster, convert

from _helpers import PARITY

META = json.loads((PARITY / "predictor.json").read_text())
DATA = load_file(PARITY / "predictor.safetensors")
LEVELS = META["quantile_levels"]


def _series(case: dict, name: str) -> pd.Series:
    values = DATA[f"{name}.target"].astype(np.float64)
    index = pd.period_range(case["start"], periods=len(values), freq=case["freq"])
    return pd.Series(values, index=index, name="y")


def _forecaster(case: dict) -> MoiraiMoEForecaster:
    return MoiraiMoEForecaster(
        checkpoint=str(PARITY / "tiny"),
        context_length=case["context_length"],
        num_samples=case["num_samples"],
        random_state=case["seed"],
    )


def _quantiles(name: str) -> tuple[dict, pd.DataFrame, np.ndarray]:
    case = META["cases"][name]
    y = _series(case, name)
    fh = list(range(1, case["prediction_length"] + 1))
    forecaster = _forecaster(case).fit(y, fh=fh)
    ours = forecaster.predict_quantiles(alpha=LEVELS)
    return case, ours, DATA[f"{name}.quantiles"]


@pytest.mark.parametrize("name", ["airline", "missing"])
def test_seeded_quantiles_equal_the_reference_predictor(name):
    case, ours, expected = _quantiles(name)
    assert ours.index[0] == pd.Period(case["forecast_start"], freq=case["freq"])
    values = ours.to_numpy().T  # (level, step)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5 * scale)


def test_context_the_reference_built_is_ours():
    # the model inputs, after imputation, cut and padding, equal the reference's
    for name in ("airline", "missing", "short_padded"):
        case = META["cases"][name]
        values = DATA[f"{name}.target"].astype(np.float64)
        filled, observed = convert._impute(values[:, None])
        ctx = case["context_length"]
        ref_target = DATA[f"{name}.past_target"][0, :, 0]
        ref_observed = DATA[f"{name}.past_observed_target"][0, :, 0]
        real = ~DATA[f"{name}.past_is_pad"][0].astype(bool)
        np.testing.assert_allclose(filled[-ctx:, 0], ref_target[real], rtol=1e-6)
        np.testing.assert_array_equal(observed[-ctx:, 0], ref_observed[real])


def test_padded_series_agrees_within_monte_carlo_error():
    # 24 steps of left padding: we drop the all-padding patch, which changes the
    # random stream but not the distribution; compare the central quantiles
    name = "short_padded"
    case = META["cases"][name]
    y = _series(case, name)
    fh = list(range(1, case["prediction_length"] + 1))
    forecaster = _forecaster(case).set_params(num_samples=2000)
    ours = forecaster.fit(y, fh=fh).predict_quantiles(alpha=[0.25, 0.5, 0.75])
    ref = DATA[f"{name}.samples"]  # (50, H)
    ref_median = np.median(ref, axis=0)
    spread = np.subtract(*np.percentile(ref, [75, 25], axis=0))
    ours_median = ours.iloc[:, 1].to_numpy()
    # the median of 50 draws has a standard error of about 0.19 IQR
    assert np.mean(np.abs(ours_median - ref_median) <= 0.6 * spread + 1e-6) >= 0.8
