"""
Quick start: zero-shot forecast with prediction intervals
=========================================================

Forecast the last two years of sktime's airline data (monthly passengers,
1949-1960) from the years before, with 80% and 95% prediction intervals, and
save a plot of them.

Run it from the repository root::

    python examples/quickstart.py --checkpoint Salesforce/moirai-moe-1.0-R-small

``--checkpoint`` takes a Hugging Face hub id (downloaded once, then read from
the hub cache) or a local folder in the official layout. Without it, the
script writes a *tiny random-weight* checkpoint to a temporary folder so that
it runs offline; its forecasts are meaningless and the log says so.
Weights downloaded from the hub carry their publisher's licence
(CC-BY-NC-4.0 for the Salesforce Moirai-MoE models, see their model card).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger("quickstart")

HORIZON = 24  # months: two years, decoded autoregressively patch by patch


def tiny_random_checkpoint(folder: Path) -> str:
    """Write a tiny random-weight checkpoint in the official layout."""
    import torch

    from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel

    config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MoiraiMoEModel(config)
    model.save_pretrained(folder)
    return str(folder)


def plot(y_train, y_test, y_pred, intervals, title: str, out: Path) -> None:
    """Save history, truth, forecast and intervals as a PNG (Agg backend)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    history = y_train.iloc[-72:]
    try:
        from sktime.utils.plotting import plot_series

        fig, ax = plot_series(
            history,
            y_test,
            y_pred,
            labels=["history", "actual", "forecast (median)"],
            pred_interval=intervals.copy(),
        )
    except ModuleNotFoundError:  # sktime's plot_series needs seaborn
        logger.info("seaborn is not installed: plotting with matplotlib alone")
        fig, ax = plt.subplots(figsize=(16, 4))
        for series, label in [(history, "history"), (y_test, "actual")]:
            ax.plot(series.index.to_timestamp(), series.to_numpy(), label=label)
        when = y_pred.index.to_timestamp()
        ax.plot(when, y_pred.to_numpy(), label="forecast (median)")
        name = intervals.columns.levels[0][0]
        for coverage in (0.95, 0.8):
            band = intervals[(name, coverage)]
            ax.fill_between(
                when,
                band["lower"].to_numpy(),
                band["upper"].to_numpy(),
                alpha=0.25,
                label=f"{coverage:.0%} prediction interval",
            )
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    """Fit, forecast, log a summary and save the plot; return the PNG's path."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="hub id or local folder (default: a tiny random-weight checkpoint)",
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

    with tempfile.TemporaryDirectory(prefix="moirai-moe-tiny-") as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = tiny_random_checkpoint(Path(tmp))
            logger.warning(
                "no --checkpoint given: using a tiny RANDOM-WEIGHT model, so the "
                "forecasts below are MEANINGLESS; pass --checkpoint "
                "Salesforce/moirai-moe-1.0-R-small for real ones"
            )
        forecaster = MoiraiMoEForecaster(
            checkpoint, num_samples=args.num_samples, random_state=args.seed
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
        args.checkpoint or "tiny random weights",
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

    title = "Moirai-MoE zero-shot forecast, airline passengers"
    if args.checkpoint is None:
        title += " (random weights: meaningless)"
    plot(y_train, y_test, y_pred, intervals, title, args.out)
    logger.info("plot saved to %s", args.out)
    return args.out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    main()
