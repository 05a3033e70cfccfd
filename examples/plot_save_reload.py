"""
Saving a fine-tuned model and loading it back
=============================================

A fine-tuned forecaster holds its own copy of the weights
(``tuned_model_``). ``save_pretrained`` writes them as a checkpoint in the
official Moirai layout (``config.json`` + ``model.safetensors``, no pickles),
and any folder in that layout is a valid ``checkpoint``: a new forecaster
loads it like the bundled or a hub model, here without fine-tuning again.

With the same ``random_state`` the reloaded forecaster draws the same sample
paths, so its forecasts are *identical* to the fine-tuned forecaster's.
"""

# %%
# Setup
# -----
# sktime 1.2 warns on every forecaster construction that a configuration
# default changes in 1.3; the warning is routed through logging and dropped.
import logging
import tempfile
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import numpy as np
import pandas as pd
from sktime.datasets import load_airline
from sktime.split import temporal_train_test_split

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

# %%
# Fine-tune briefly
# -----------------
# A few optimiser steps of the ``"head"`` strategy on the airline data of
# 1949-1958 (kept short so that the example runs in seconds).
y = load_airline()
y_train, y_test = temporal_train_test_split(y, test_size=24)
fh = np.arange(1, 25)

tuned = MoiraiMoEForecaster(
    "moirai-moe-sk-tiny",
    fit_strategy="head",
    learning_rate=1e-3,
    max_steps=4,
    random_state=0,
)
tuned.fit(y_train, fh=fh)
print(tuned.training_history_[["epoch", "step", "val_nll"]].round(3).to_string())

# %%
# Save
# ----
# Files are written atomically; the folder can also be loaded by
# ``MoiraiMoEModel.from_pretrained`` or by Salesforce's uni2ts.
workdir = tempfile.TemporaryDirectory()  # removed at the end
folder = Path(workdir.name) / "airline-head"
tuned.save_pretrained(folder)
for file in sorted(folder.iterdir()):
    print(f"{file.name}: {file.stat().st_size / 1e6:.2f} MB")

# %%
# Reload and compare
# ------------------
# The reloaded forecaster is zero-shot: it uses the saved weights as they are.
reloaded = MoiraiMoEForecaster(checkpoint=str(folder), random_state=0)
reloaded.fit(y_train, fh=fh)

y_tuned = tuned.predict()
y_reloaded = reloaded.predict()
intervals_tuned = tuned.predict_interval(coverage=0.9)
intervals_reloaded = reloaded.predict_interval(coverage=0.9)
print("identical point forecasts:", y_tuned.equals(y_reloaded))
print("identical 90% intervals:  ", intervals_tuned.equals(intervals_reloaded))
pd.testing.assert_frame_equal(intervals_tuned, intervals_reloaded)

base = MoiraiMoEForecaster("moirai-moe-sk-tiny", random_state=0).fit(y_train, fh=fh)
change = float(np.abs(base.predict() - y_tuned).max())
print(f"largest change of the point forecast made by fine-tuning: {change:.1f}")

# %%
# Plot
# ----
# The two forecasts coincide; the zero-shot forecast of the bundled weights,
# dashed, shows what fine-tuning changed.
fig, ax = plot_forecast(
    y_train,
    y_reloaded,
    intervals_reloaded,
    y_test,
    history=48,
    labels={"forecast": "reloaded checkpoint"},
    title="Fine-tuned, saved and reloaded: the same forecast",
)
ax.plot(
    y_tuned.index.to_timestamp(),
    y_tuned.to_numpy(),
    linestyle="none",
    marker="x",
    color="black",
    label="fine-tuned forecaster",
)
base_pred = base.predict()
ax.plot(
    base_pred.index.to_timestamp(),
    base_pred.to_numpy(),
    "--",
    color="grey",
    label="bundled weights, zero-shot",
)
ax.legend()
fig.savefig("plot_save_reload.png", dpi=100)
workdir.cleanup()
