"""MoiraiMoEForecaster as a drop-in sktime component."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sktime.base import load
from sktime.datasets import load_airline
from sktime.forecasting.compose import ForecastingPipeline, TransformedTargetForecaster
from sktime.forecasting.model_evaluation import evaluate
from sktime.forecasting.model_selection import ForecastingGridSearchCV
from sktime.performance_metrics.forecasting import MeanAbsolutePercentageError
from sktime.split import ExpandingWindowSplitter
from sktime.transformations.series.exponent import ExponentTransformer
from sktime.transformations.series.impute import Imputer

from moirai_moe_sk.forecaster import MoiraiMoEForecaster

# sktime 1.2.0's moving-cutoff helpers concatenate PeriodIndex/DatetimeIndex
# frames in a way pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Sorting by default when concatenating all DatetimeIndex"
)


@pytest.fixture
def forecaster(tiny_checkpoint) -> MoiraiMoEForecaster:
    return MoiraiMoEForecaster(str(tiny_checkpoint), num_samples=10, random_state=0)


@pytest.fixture(scope="module")
def y() -> pd.Series:
    return load_airline()


def test_transformed_target_forecaster(forecaster, y):
    pipe = TransformedTargetForecaster(
        [("power", ExponentTransformer(power=0.5)), ("moirai", forecaster)]
    )
    pipe.fit(y, fh=[1, 2, 3])
    y_pred = pipe.predict()
    assert y_pred.index.equals(pd.period_range("1961-01", periods=3, freq="M"))
    intervals = pipe.predict_interval(coverage=0.9)
    lower, upper = intervals.iloc[:, 0], intervals.iloc[:, 1]
    assert (lower <= y_pred).all()
    assert (y_pred <= upper).all()


def test_forecasting_pipeline_with_exogenous(forecaster, y):
    X = pd.DataFrame(
        {"month": y.index.month.astype(float), "trend": np.arange(len(y), dtype=float)},
        index=y.index,
    )
    X.iloc[5, 0] = np.nan
    X_future = pd.DataFrame(
        {"month": [1.0, 2.0], "trend": [144.0, 145.0]},
        index=pd.period_range("1961-01", periods=2, freq="M"),
    )
    pipe = ForecastingPipeline(
        [("impute", Imputer(method="mean")), ("moirai", forecaster)]
    )
    pipe.fit(y, X=X, fh=[1, 2])
    y_pred = pipe.predict(X=X_future)
    assert np.isfinite(y_pred.to_numpy()).all()
    assert len(y_pred) == 2


def test_evaluate_with_expanding_window(forecaster, y):
    cv = ExpandingWindowSplitter(fh=[1, 2, 3], initial_window=120, step_length=12)
    results = evaluate(
        forecaster,
        cv,
        y,
        strategy="refit",
        scoring=MeanAbsolutePercentageError(),
        return_data=True,
    )
    assert len(results) == 2
    assert np.isfinite(results["test_MeanAbsolutePercentageError"]).all()
    updated = evaluate(forecaster, cv, y, strategy="update")
    assert len(updated) == 2


def test_grid_search_over_context_length(forecaster, y):
    cv = ExpandingWindowSplitter(fh=[1, 2], initial_window=120, step_length=12)
    search = ForecastingGridSearchCV(
        forecaster, cv=cv, param_grid={"context_length": [16, 48, None]}
    )
    search.fit(y, fh=[1, 2])
    assert search.best_params_["context_length"] in (16, 48, None)
    assert len(search.cv_results_) == 3
    assert len(search.predict()) == 2


def test_save_load_round_trip(forecaster, y, tmp_path):
    forecaster.fit(y, fh=[1, 2, 20])
    expected = forecaster.predict_interval(coverage=0.8)
    forecaster.save(tmp_path / "moirai")
    restored = load(tmp_path / "moirai.zip")
    assert restored.cutoff.equals(forecaster.cutoff)
    pd.testing.assert_frame_equal(restored.predict_interval(coverage=0.8), expected)
    restored.update(y.iloc[-1:] + 1.0)  # the restored state keeps working
    assert restored.predict().shape == (3,)

    in_memory = load(forecaster.save())
    pd.testing.assert_frame_equal(in_memory.predict_interval(coverage=0.8), expected)


def test_quickstart_example_runs_offline(tmp_path, caplog):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    out = quickstart.main(["--out", str(tmp_path / "q.png"), "--num-samples", "20"])
    assert out.stat().st_size > 10_000
    # the bundled model, not random weights: a real forecast of the held-out years
    assert "checkpoint moirai-moe-sk-tiny" in caplog.text
    mape = float(re.search(r"MAPE on the held-out months: ([0-9.]+)%", caplog.text)[1])
    assert mape < 10.0
    assert "95% interval" in caplog.text
