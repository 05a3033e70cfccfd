"""Load a checkpoint with the small release's shapes and forecast one series.

Random weights (117M parameters) in the official layout stand in for
``Salesforce/moirai-moe-1.0-R-small``, which cannot be downloaded here. The script
saves the checkpoint, loads it back strictly, forecasts one series (context 512,
horizon 48, 100 samples) and reports wall times and peak resident memory.

Run: ``python benchmarks/small_checkpoint_forecast.py [--checkpoint DIR]``
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

import torch

from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, forecast

logger = logging.getLogger("benchmarks.small_checkpoint_forecast")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run the benchmark and log its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, help="existing checkpoint folder")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoint
        if folder is None:
            folder = Path(tmp) / "small"
            torch.manual_seed(0)
            MoiraiMoEModel(MoiraiMoEConfig()).save_pretrained(folder)
        start = time.perf_counter()
        model = MoiraiMoEModel.from_pretrained(folder)
        load_s = time.perf_counter() - start
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("loaded %s parameters in %.2f s", f"{n_params:,}", load_s)

        t = torch.arange(args.context, dtype=torch.float)
        y = 100 + 10 * torch.sin(2 * torch.pi * t / 24) + torch.randn_like(t)
        y = y.view(1, -1, 1)
        times = []
        for repeat in range(args.repeats):
            generator = torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            samples = forecast(
                model,
                y,
                prediction_length=args.horizon,
                num_samples=args.samples,
                generator=generator,
            )
            times.append(time.perf_counter() - start)
        times.sort()
        logger.info(
            "forecast context=%d horizon=%d samples=%d: median %.2f s "
            "(min %.2f, max %.2f, %d runs), output %s",
            args.context,
            args.horizon,
            args.samples,
            times[len(times) // 2],
            times[0],
            times[-1],
            len(times),
            tuple(samples.shape),
        )
        logger.info("peak resident memory: %.0f MiB", _peak_rss_mib())


if __name__ == "__main__":
    main()
