"""
Zero-shot forecasting with prediction intervals and sample paths
================================================================

Moirai-MoE forecasts a series it has never seen, without training: ``fit``
only loads the weights and stores the series as context. Here the bundled
model ``moirai-moe-sk-tiny`` (it ships inside the package, so nothing is
downloaded) forecasts the last two years of sktime's airline data (monthly
passengers, 1949-1960) from the ten years before.

The forecast is a set of *sample paths*: each is a whole trajectory, decoded
patch by patch by feeding sampled values back into the model. Point forecasts,
quantiles and intervals are statistics of those paths, so they agree with
each other. This example draws the intervals with
:func:`~moirai_moe_sk.plotting.plot_forecast` and the paths themselves as a
fan chart with :func:`~moirai_moe_sk.plotting.plot_sample_paths`.
"""

# %%
# Setup
# -----
# sktime 1.2 warns on every forecaster construction that a configuration
# default changes in 1.3; the warning is routed through logging and dropped.
import logging

import matplotlib as mpl

mpl.use("Agg")  # no display needed; the figures are saved as PNG files
import numpy as np
from sktime.datasets import load_airline
from sktime.split import temporal_train_test_split

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast, plot_sample_paths

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

# %%
# Data: train on 1949-1958, hold out 1959-1960
# --------------------------------------------
y = load_airline()
y_train, y_test = temporal_train_test_split(y, test_size=24)
print(f"train: {y_train.index[0]} to {y_train.index[-1]} ({len(y_train)} months)")
print(f"test:  {y_test.index[0]} to {y_test.index[-1]} ({len(y_test)} months)")

# %%
# Fit and forecast
# ----------------
# ``random_state`` seeds the sample paths: the same seed gives the same
# forecast, and every ``predict_*`` call of one fitted forecaster sees the same
# paths. ``num_samples`` sets how many paths are drawn.
forecaster = MoiraiMoEForecaster("moirai-moe-sk-tiny", num_samples=200, random_state=0)
forecaster.fit(y_train, fh=np.arange(1, 25))
y_pred = forecaster.predict()  # the median path, step by step
intervals = forecaster.predict_interval(coverage=[0.5, 0.8, 0.95])

mae = float(np.mean(np.abs(y_test - y_pred)))
mape = float(np.mean(np.abs((y_test - y_pred) / y_test)))
print(f"median forecast: MAE {mae:.1f} passengers, MAPE {100 * mape:.1f}%")
name = y.name
for coverage in (0.8, 0.95):
    band = intervals[(name, coverage)]
    inside = (y_test >= band["lower"]) & (y_test <= band["upper"])
    width = float((band["upper"] - band["lower"]).mean())
    print(
        f"{coverage:.0%} interval: mean width {width:.0f}, covers "
        f"{int(inside.sum())} of {len(y_test)} held-out months"
    )

# %%
# Prediction intervals
# --------------------
# ``plot_forecast`` takes the outputs of ``predict`` and ``predict_interval``
# as they are. Several coverages are shaded in one colour, the wider ones
# lighter.
fig, ax = plot_forecast(
    y_train,
    y_pred,
    intervals,
    y_test,
    history=72,
    labels={"forecast": "median forecast"},
    title="Airline passengers: zero-shot forecast with 50/80/95% intervals",
)
fig.savefig("plot_zero_shot.png", dpi=100)

# %%
# The sample paths behind them
# ----------------------------
# A fan chart shows a few of the 200 paths and their central quantile bands.
# Single paths keep the seasonal shape that the median smooths a little; the
# bands are the same order statistics as ``predict_interval``'s intervals.
fig, ax = plot_sample_paths(
    forecaster,
    y=y_train,
    y_test=y_test,
    history=72,
    n_paths=5,
    title="Five of the 200 sample paths, with 50/80/90% central bands",
)
fig.savefig("plot_zero_shot_paths.png", dpi=100)

# %%
# Quantiles for any level
# -----------------------
# Any quantile is available without refitting; these come from the same paths.
quantiles = forecaster.predict_quantiles(alpha=[0.05, 0.5, 0.95])
print(quantiles.head(6).round(1).to_string())
