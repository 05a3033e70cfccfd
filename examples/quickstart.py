"""
Quick start: zero-shot forecast with prediction intervals
=========================================================

Forecast the last two years of sktime's airline data (monthly passengers,
1949-1960) from the years before, with 80% and 95% prediction intervals, and
save a plot of them.

Run it from the repository root::

    python examples/quickstart.py

It needs no network: the default checkpoint, ``moirai-moe-sk-tiny``, is the
small Moirai-MoE that ships inside the package (pretrained by this package on
synthetic and openly licensed real series; see its model card in the
documentation). ``--checkpoint`` takes any other checkpoint: a Hugging Face hub
id such as ``Salesforce/moirai-moe-1.0-R-small`` (downloaded once, then read
from the hub cache; CC-BY-NC-4.0, see its model card) or a local folder in the
official layout.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger("quickstart")

HORIZON = 24  # months: two years, decoded autoregressively patch by patch


def plot(y_train, y_test, y_pred, intervals, title: str, out: Path) -> None:
    """Save history, truth, forecast and nested intervals as a PNG (Agg backend)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from moirai_moe_sk.plotting import plot_forecast

    fig, _ = plot_forecast(
        y_train,
        y_pred,
        intervals,
        y_test=y_test,
        labels={"forecast": "forecast (median)"},
        title=title,
        history=72,
    )
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    """Fit, forecast, log a summary and save the plot; return the PNG's path."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        default="moirai-moe-sk-tiny",
        help="bundled model, hub id or local folder (default: the bundled "
        "moirai-moe-sk-tiny)",
    )
    parser.add_argument("--out", type=Path, default=Path("quickstart.png"))
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args, _ = parser.parse_known_args(argv)  # tolerate sphinx-gallery's argv

    from sktime.datasets import load_airline
    from sktime.split import temporal_train_test_split

    from moirai_moe_sk.forecaster import MoiraiMoEForecaster

    y = load_airline()
    y_train, y_test = temporal_train_test_split(y, test_size=HORIZON)

    forecaster = MoiraiMoEForecaster(
        args.checkpoint, num_samples=args.num_samples, random_state=args.seed
    )
    forecaster.fit(y_train, fh=np.arange(1, HORIZON + 1))
    y_pred = forecaster.predict()
    intervals = forecaster.predict_interval(coverage=[0.8, 0.95])

    name = intervals.columns.levels[0][0]
    mape = float(np.mean(np.abs((y_test - y_pred) / y_test)))
    logger.info(
        "forecast %d months (%s to %s) from %d, checkpoint %s",
        HORIZON,
        y_pred.index[0],
        y_pred.index[-1],
        len(y_train),
        args.checkpoint,
    )
    logger.info("median forecast MAPE on the held-out months: %.1f%%", 100 * mape)
    for coverage in (0.8, 0.95):
        band = intervals[(name, coverage)]
        inside = (y_test >= band["lower"]) & (y_test <= band["upper"])
        logger.info(
            "%.0f%% interval: mean width %.1f, covers %d of %d actual values",
            100 * coverage,
            float((band["upper"] - band["lower"]).mean()),
            int(inside.sum()),
            len(y_test),
        )

    title = f"Moirai-MoE zero-shot forecast ({args.checkpoint}), airline passengers"
    plot(y_train, y_test, y_pred, intervals, title, args.out)
    logger.info("plot saved to %s", args.out)
    return args.out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    main()
