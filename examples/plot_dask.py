"""
Forecasting a panel on a Dask cluster
=====================================

A panel is forecast in *chunks* of series (``batch_size`` series each, or as
many as fit a memory budget). Each chunk draws its sample paths from its own
seeded generator, so the chunks are independent jobs: sktime's
``backend:parallel`` configuration sends them to joblib workers or to a Dask
cluster, and the forecasts are *exactly* those of a single process. Each
worker loads the checkpoint once and keeps it for later chunks; fine-tuned
weights travel to the workers as safetensors bytes.

This example starts a local Dask cluster of two worker processes (on a real
cluster, pass its scheduler's address to ``Client`` instead), forecasts a
panel of 48 synthetic monthly series with the bundled model
``moirai-moe-sk-tiny`` in one process and on the cluster, and checks that the
two agree. Dask is an optional dependency: ``pip install
'moirai_moe_sk[dask]'``.

Worker processes re-import this script, so everything that runs work sits
under ``if __name__ == "__main__":`` (one such block per step); the
definitions above them are all a worker needs.
"""

# %%
# Setup
# -----
# sktime 1.2 warns on every forecaster construction that a configuration
# default changes in 1.3; the warning is routed through logging and dropped.
import logging
import time

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.plotting import plot_forecast

try:
    from dask.distributed import Client, LocalCluster
except ModuleNotFoundError as err:
    msg = "this example needs Dask: pip install 'moirai_moe_sk[dask]'"
    raise ModuleNotFoundError(msg) from err

logging.captureWarnings(True)
logging.getLogger("py.warnings").addFilter(
    lambda record: "remember_data" not in record.getMessage()
)


# %%
# The panel
# ---------
# 48 monthly series of different lengths (5 to 15 years): trend, yearly
# seasonality of varying strength and noise.
def make_panel(n_series: int = 48, seed: int = 0) -> pd.DataFrame:
    """Return a (series, month) panel in sktime's pd-multiindex format."""
    rng = np.random.default_rng(seed)
    frames = {}
    for number in range(n_series):
        length = int(rng.integers(60, 181))
        t = np.arange(length)
        values = (
            100
            + rng.normal(0, 0.3) * t
            + rng.uniform(2, 15) * np.sin(2 * np.pi * (t / 12 + rng.uniform()))
            + rng.normal(0, 2, size=length)
        )
        months = pd.period_range(end="2024-12", periods=length, freq="M")
        frames[f"series {number:02d}"] = pd.Series(values, index=months)
    return pd.concat(frames, names=["series", "month"]).to_frame("value")


def make_forecaster() -> MoiraiMoEForecaster:
    """Return the forecaster: 6 series per chunk, so 8 chunks to distribute."""
    return MoiraiMoEForecaster(
        "moirai-moe-sk-tiny", num_samples=100, batch_size=6, random_state=0
    )


fh = np.arange(1, 19)  # 18 months ahead

if __name__ == "__main__":
    panel = make_panel()
    n_series = panel.index.get_level_values("series").nunique()
    print(f"{n_series} series, {len(panel)} observations")

# %%
# One process
# -----------
# The default backend runs the chunks one after the other in this process.
# Dask's worker processes run torch on one thread each; the reference does
# too, for a like-for-like comparison: torch's multi-threaded kernels may add
# numbers in another order, so forecasts made with different thread counts
# agree only to float32 rounding (about 1e-7 relative), not bit for bit.
if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    local = make_forecaster().fit(panel, fh=fh)
    expected = local.predict_interval(coverage=[0.8])
    expected_point = local.predict()
    print(f"single process: {time.perf_counter() - start:.1f} s")

# %%
# On a Dask cluster
# -----------------
# ``set_config`` switches the backend of an existing forecaster; fitting does
# not change (it only stores the context), and every predict call sends the
# chunks to the cluster. The first call includes the workers' loading of the
# checkpoint; later calls reuse it. Speed-ups need more cores than this
# example's two workers and a panel large enough to outweigh the start-up.
if __name__ == "__main__":
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = Client(cluster)
    print(f"cluster: {len(client.scheduler_info()['workers'])} worker processes")

    forecaster = make_forecaster().fit(panel, fh=fh)
    forecaster.set_config(**{"backend:parallel": "dask"})
    start = time.perf_counter()
    intervals = forecaster.predict_interval(coverage=[0.8])
    print(
        f"Dask, first call (workers load the model): {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    point = forecaster.predict()
    print(f"Dask, second call: {time.perf_counter() - start:.1f} s")

    client.close()
    cluster.close()

# %%
# The same forecasts
# ------------------
# Chunks and their seeds depend on the data and on ``batch_size`` only, never
# on where they run, so the results are identical, not just close.
if __name__ == "__main__":
    pd.testing.assert_frame_equal(intervals, expected, check_exact=True)
    pd.testing.assert_frame_equal(point, expected_point, check_exact=True)
    difference = float((point - expected_point).abs().to_numpy().max())
    print(f"largest difference between the two runs: {difference}")

    names = sorted(set(panel.index.get_level_values("series")))[:3]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 8), layout="constrained")
    for position, (ax, name) in enumerate(zip(axes, names, strict=True)):
        plot_forecast(
            panel.loc[name],
            point.loc[name],
            intervals.loc[name],
            history=48,
            ax=ax,
            labels={"forecast": "forecast on the Dask cluster"},
            title=name,
        )
        if position > 0:
            ax.get_legend().remove()
    fig.savefig("plot_dask.png", dpi=100)
