"""
Backtesting a panel with sktime's evaluate
==========================================

One ``MoiraiMoEForecaster`` forecasts a whole panel (several series at once,
in batches) and plugs into sktime's model-evaluation tools like any other
forecaster. This example backtests the bundled model ``moirai-moe-sk-tiny``
zero-shot on a panel of five US macroeconomic series (quarterly percentage
changes of consumption, income, production, savings and unemployment,
1970-2016: sktime's ``load_uschange``, which ships with sktime) with an
expanding window: five folds, each forecasting the next two years.

Point accuracy is scored with the mean absolute scaled error (MASE: the
error relative to the in-sample one-step naive forecast; below 1 beats it) and
the 80% intervals with their empirical coverage (ideally 0.8). Two naive
forecasters give the reference.
"""

# %%
# Setup
# -----
# sktime 1.2 warns on every forecaster construction that a configuration
# default changes in 1.3; the warning is routed through logging and dropped.
import logging

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from sktime.datasets import load_uschange
from sktime.forecasting.model_evaluation import evaluate
from sktime.forecasting.naive import NaiveForecaster
from sktime.performance_metrics.forecasting import MeanAbsoluteScaledError
from sktime.performance_metrics.forecasting.probabilistic import EmpiricalCoverage
from sktime.split import ExpandingWindowSplitter

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

# %%
# The panel
# ---------
# sktime's panel format is a data frame with a (series, time) MultiIndex.
y, X = load_uschange()
wide = pd.concat([y, X], axis=1).rename_axis("quarter")
panel = (
    wide.melt(ignore_index=False, var_name="series", value_name="change")
    .reset_index()
    .set_index(["series", "quarter"])
    .sort_index()
)
series_names = list(wide.columns)
print(f"{len(series_names)} series of {len(wide)} quarters: {series_names}")

# %%
# Backtest
# --------
# The splitter cuts every series at the same positions: the first fold trains
# on 147 quarters and tests on the next 8, then the window grows by 8.
cv = ExpandingWindowSplitter(initial_window=147, step_length=8, fh=list(range(1, 9)))
print(f"{cv.get_n_splits(wide)} folds")

scoring = [MeanAbsoluteScaledError(), EmpiricalCoverage(coverage=0.8)]
moirai = MoiraiMoEForecaster("moirai-moe-sk-tiny", random_state=0)
results = evaluate(moirai, cv, panel, scoring=scoring, return_data=True)
print(
    results[["cutoff", "test_MeanAbsoluteScaledError", "test_EmpiricalCoverage"]]
    .round(3)
    .to_string(index=False)
)

# %%
# Against naive baselines
# -----------------------
# The same folds for the last value and the historical mean.
summary = {
    "moirai-moe-sk-tiny": results["test_MeanAbsoluteScaledError"].mean(),
}
for strategy in ("last", "mean"):
    baseline = evaluate(
        NaiveForecaster(strategy=strategy), cv, panel, scoring=MeanAbsoluteScaledError()
    )
    summary[f"naive ({strategy})"] = baseline["test_MeanAbsoluteScaledError"].mean()
for model, mase in summary.items():
    print(f"mean MASE over the folds, {model:>18}: {mase:.3f}")
print(
    f"mean 80% coverage, moirai-moe-sk-tiny: {results['test_EmpiricalCoverage'].mean():.3f}"
)

# %%
# Per series
# ----------
# ``return_data=True`` kept every fold's data and forecasts, so the scores can
# be broken down by series without refitting (here for the last fold).
last = results.iloc[-1]
per_series = MeanAbsoluteScaledError(multilevel="raw_values")(
    last["y_test"], last["y_pred"], y_train=last["y_train"]
)
print(per_series.round(3).to_string())

# %%
# The last fold, series by series
# -------------------------------
# The same stored forecasts, with their 80% intervals (one legend is enough).
fig, axes = plt.subplots(len(series_names), 1, figsize=(10, 11), layout="constrained")
for position, (ax, name) in enumerate(zip(axes, series_names, strict=True)):
    plot_forecast(
        last["y_train"].loc[name],
        last["y_pred"].loc[name],
        last["y_pred_interval"].loc[name],
        last["y_test"].loc[name],
        history=40,
        ax=ax,
        title=name,
    )
    ax.set_ylabel("change")
    if position > 0:
        ax.get_legend().remove()
fig.savefig("plot_panel_evaluate.png", dpi=90)
