"""
Fine-tuning, tuned by grid search
=================================

Any ``fit_strategy`` other than ``"zero-shot"`` fine-tunes a copy of the
weights on the series given to ``fit`` before forecasting (the cached
checkpoint is never modified). Every setting of the fine-tuning engine is a
plain constructor parameter, so sktime's ``ForecastingGridSearchCV`` can choose
between zero-shot and fine-tuning, and tune the learning rate, by temporal
cross-validation like any other hyper-parameter.

Here the bundled model ``moirai-moe-sk-tiny`` is tuned on the airline data of
1949-1958 (two cross-validation folds of 12 months), then the winner forecasts
the held-out years 1959-1960. ``max_steps`` keeps fine-tuning to a few
optimiser steps so that the example runs in seconds on a laptop CPU; real
fine-tuning runs longer (by default 200 to 1,000 steps planned from the data,
early stopping on the held-out end of each series, the best weights restored).
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
import numpy as np
import pandas as pd
from sktime.datasets import load_airline
from sktime.forecasting.model_selection import ForecastingGridSearchCV
from sktime.performance_metrics.forecasting import MeanAbsoluteScaledError
from sktime.split import ExpandingWindowSplitter, temporal_train_test_split

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

# %%
# Data and cross-validation folds
# -------------------------------
y = load_airline()
y_train, y_test = temporal_train_test_split(y, test_size=24)
cv = ExpandingWindowSplitter(initial_window=96, step_length=12, fh=range(1, 13))
print(f"{cv.get_n_splits(y_train)} folds inside the {len(y_train)} training months")

# %%
# The search space
# ----------------
# A list of grids avoids pointless candidates: the learning rate only matters
# when fine-tuning. ``"head"`` trains only the input projection and the
# mixture head (the cheapest strategy); ``"full"``, ``"freeze-experts"`` and
# ``"lora"`` are the others. ``backend=None`` evaluates the candidates one after
# the other in this process, sharing the loaded weights; sktime's default,
# ``"loky"``, would start worker processes that each load the model again.
forecaster = MoiraiMoEForecaster(
    "moirai-moe-sk-tiny", num_samples=50, max_steps=6, random_state=0
)
grid = [
    {"fit_strategy": ["zero-shot"]},
    {"fit_strategy": ["head"], "learning_rate": [1e-4, 1e-3]},
]
search = ForecastingGridSearchCV(
    forecaster, cv, grid, scoring=MeanAbsoluteScaledError(sp=12), backend=None
)
search.fit(y_train, fh=np.arange(1, 25))

results = pd.DataFrame(
    {
        "fit_strategy": [p["fit_strategy"] for p in search.cv_results_["params"]],
        "learning_rate": [
            p.get("learning_rate", "-") for p in search.cv_results_["params"]
        ],
        "CV MASE": search.cv_results_["mean_test_MeanAbsoluteScaledError"],
        "fit seconds": search.cv_results_["mean_fit_time"],
    }
)
print(results.round(3).to_string(index=False))
print(f"best: {search.best_params_}")

# %%
# On one short series, fine-tuning has little to learn from, and it is built
# not to make things worse: it holds out the end of each series, validates
# ten times a run and keeps the best weights, the starting ones included. A
# candidate scoring exactly like zero-shot is one whose validation likelihood
# never improved, so it kept the checkpoint's weights (a ``FineTuneWarning``
# says so, and ``best_step_`` is 0). Two folds of 12 months
# are also a noisy guide: compare the held-out scores below. Fine-tuning pays
# off more reliably with more data, such as a whole panel (``fit`` or
# ``pretrain`` on it; see the README's M3 monthly result).
#
# The winner on the held-out years
# --------------------------------
# ``search`` was refitted on all training months with the best parameters and
# forecasts like a forecaster. A fine-tuned forecaster is the comparison.
tuned = forecaster.clone().set_params(fit_strategy="head", learning_rate=1e-3)
tuned.fit(y_train, fh=np.arange(1, 25))
mase = MeanAbsoluteScaledError(sp=12)
y_best = search.predict()
y_tuned = tuned.predict()
best = search.best_params_["fit_strategy"]
score_best = mase(y_test, y_best, y_train=y_train)
score_tuned = mase(y_test, y_tuned, y_train=y_train)
print(f"held-out MASE, best of the search ({best}): {score_best:.3f}")
print(f"held-out MASE, 'head' fine-tuned at 1e-3: {score_tuned:.3f}")

# %%
# Training history and forecasts
# ------------------------------
# A fine-tuned forecaster keeps its training and validation likelihood at each
# validation in ``training_history_`` (step 0: the starting weights; ``epoch``
# counts the admissible windows trained so far).
history = tuned.training_history_
print(
    history[["epoch", "step", "train_nll", "val_nll"]].round(3).to_string(index=False)
)

fig, axes = plt.subplots(
    1, 2, figsize=(12, 3.8), layout="constrained", width_ratios=[1, 3]
)
axes[0].plot(history["step"], history["train_nll"], marker="o", label="training")
axes[0].plot(history["step"], history["val_nll"], marker="o", label="validation")
axes[0].set_xlabel("optimiser step")
axes[0].set_ylabel("negative log-likelihood")
axes[0].set_title("fine-tuning 'head' at 1e-3")
axes[0].legend()
plot_forecast(
    y_train,
    y_best,
    search.predict_interval(coverage=[0.8, 0.95]),
    y_test,
    history=48,
    ax=axes[1],
    labels={"forecast": "best of the search"},
    title=f"best parameters: {search.best_params_}",
)
axes[1].plot(
    y_tuned.index.to_timestamp(),
    y_tuned.to_numpy(),
    "--",
    color="grey",
    label="'head' fine-tuned at 1e-3",
)
axes[1].legend()
fig.savefig("plot_fine_tune_grid_search.png", dpi=100)
