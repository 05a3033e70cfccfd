"""
Multivariate forecasts with known-future covariates
===================================================

Moirai-MoE's *any-variate* attention reads several series as one input: a
data frame ``y`` with several columns is forecast **jointly**, each variable
seeing the others' past. Exogenous data ``X`` comes in two kinds:

* columns of the ``X`` passed to ``predict`` are **known-future** covariates:
  their values over the forecast horizon are given (planned prices,
  calendar effects, scenarios), and the model reads them there too;
* columns seen in ``fit`` but not passed to ``predict`` are **past-only**
  covariates: only their history is used.

The data: quarterly percentage changes of US personal consumption and income,
1970-2016 (sktime's ``load_uschange``, which ships with sktime), with
industrial production and unemployment as known-future covariates (here we
"know" them because we hold out the real values: a scenario analysis would
plug in assumed ones) and the savings rate as a past-only covariate. The
bundled model ``moirai-moe-sk-tiny`` forecasts the last three years.
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
from sktime.split import temporal_train_test_split

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

# %%
# Data
# ----
consumption, others = load_uschange()
data = pd.concat([consumption, others], axis=1).rename_axis("quarter")
targets = ["Consumption", "Income"]
known_future = ["Production", "Unemployment"]
past_only = ["Savings"]

horizon = 12
y_train, y_test, X_train, X_test = temporal_train_test_split(
    data[targets], data[known_future + past_only], test_size=horizon
)
fh = list(range(1, horizon + 1))
print(
    f"y: {list(y_train.columns)}, {len(y_train)} quarters to fit, {horizon} to forecast"
)

# %%
# Three forecasts of the same two series
# --------------------------------------
# 1. each variable on its own (two univariate forecasts);
# 2. both jointly (one multivariate forecast);
# 3. both jointly, with the covariates: ``fit`` sees all three covariate
#    columns, ``predict`` gets the known-future ones over the horizon, so the
#    savings rate is used as a past-only covariate.
univariate = pd.concat(
    [
        MoiraiMoEForecaster("moirai-moe-sk-tiny", random_state=0)
        .fit(y_train[name], fh=fh)
        .predict()
        .rename(name)
        for name in targets
    ],
    axis=1,
)

joint = MoiraiMoEForecaster("moirai-moe-sk-tiny", random_state=0)
joint.fit(y_train, fh=fh)
y_joint = joint.predict()

with_x = MoiraiMoEForecaster("moirai-moe-sk-tiny", random_state=0)
with_x.fit(y_train, X=X_train, fh=fh)
y_with_x = with_x.predict(X=X_test[known_future])
intervals = with_x.predict_interval(X=X_test[known_future], coverage=[0.5, 0.9])

# %%
# Accuracy
# --------
# Mean absolute error over the three held-out years. Covariates help when they
# carry information the targets' own past does not; whether they do here
# depends on the series and on the model (the bundled one is tiny), so the
# comparison is worth making on your own data.
mae = pd.DataFrame(
    {
        "univariate": (univariate - y_test).abs().mean(),
        "joint": (y_joint - y_test).abs().mean(),
        "joint + covariates": (y_with_x - y_test).abs().mean(),
    }
)
print(mae.round(3).to_string())

# %%
# Plot
# ----
# ``plot_forecast`` draws one variable of the multivariate frames at a time
# (``variable=``), here with 50% and 90% intervals.
fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), layout="constrained")
for ax, name in zip(axes, targets, strict=True):
    plot_forecast(
        y_train,
        y_with_x,
        intervals,
        y_test,
        variable=name,
        history=48,
        ax=ax,
        title=f"{name}: joint forecast with known-future covariates",
    )
fig.savefig("plot_multivariate_covariates.png", dpi=100)
