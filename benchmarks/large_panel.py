"""A panel larger than a batch: time and peak memory of forecasting it in chunks.

Builds a synthetic panel of ``--series`` monthly series (lengths 48-126, like
M3 monthly), forecasts it with the bundled model ``moirai-moe-sk-tiny``
through ``MoiraiMoEForecaster.predict_quantiles`` and reports wall time and
peak resident memory. Chunks are reduced to quantiles as they finish, so the
peak is the data, the answer and one chunk's sample paths, whatever the number
of series: run it at two sizes to see that the part above the data stays flat.

Each size runs in a fresh process (``ru_maxrss`` is per process)::

    python benchmarks/large_panel.py --series 10000 100000 --decoding fast

writes ``benchmarks/results/large_panel.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUANTILES = [0.1, 0.5, 0.9]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    with open("/proc/self/status") as status:  # noqa: PTH123
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_panel(n: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = rng.integers(48, 127, size=n)
    total = int(lengths.sum())
    ids = np.repeat(np.arange(n), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    t = np.arange(total) - starts
    season = np.sin(2 * np.pi * t / 12 + rng.uniform(0, 6.3, n)[ids])
    level = rng.uniform(50, 500, n)[ids]
    walk = np.concatenate([rng.normal(size=m).cumsum() for m in lengths])
    values = level * (1 + 0.1 * season) + 3 * walk
    periods = pd.period_range("2000-01", periods=int(lengths.max()), freq="M")
    index = pd.MultiIndex.from_arrays([ids, periods[t]], names=["series", "month"])
    return pd.DataFrame({"y": values}, index=index)


def worker(args: argparse.Namespace) -> dict:
    import torch

    from moirai_moe_sk import MoiraiMoEForecaster

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    y = make_panel(args.series[0], args.seed)
    data_s = time.perf_counter() - start
    data_mb = _current_mb()
    forecaster = MoiraiMoEForecaster(
        "moirai-moe-sk-tiny",
        num_samples=args.num_samples,
        decoding=args.decoding,
        random_state=0,
    )
    start = time.perf_counter()
    forecaster.fit(y, fh=list(range(1, args.horizon + 1)))
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    quantiles = forecaster.predict_quantiles(alpha=QUANTILES)
    predict_s = time.perf_counter() - start
    assert len(quantiles) == args.series[0] * args.horizon
    assert quantiles.notna().all().all()
    return {
        "series": args.series[0],
        "observations": len(y),
        "horizon": args.horizon,
        "num_samples": args.num_samples,
        "decoding": args.decoding,
        "threads": args.threads,
        "data_s": data_s,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "series_per_s": args.series[0] / (fit_s + predict_s),
        "rss_after_data_mb": data_mb,
        "peak_rss_mb": _rss_mb(),
        "answer_mb": quantiles.memory_usage(deep=True).sum() / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--horizon", type=int, default=18)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--decoding", choices=["exact", "fast"], default="fast")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for n in args.series:
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--series",
            str(n),
            "--horizon",
            str(args.horizon),
            "--num-samples",
            str(args.num_samples),
            "--decoding",
            args.decoding,
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_panel.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# A large panel in bounded memory",
        "",
        (
            f"Generated by `python benchmarks/large_panel.py {' '.join(argv or sys.argv[1:])}`"
            f" on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; bundled model "
            f"`moirai-moe-sk-tiny`, {args.decoding} decoding, horizon {args.horizon}, "
            f"{args.num_samples} sample paths, quantiles {QUANTILES}, "
            f"{args.threads} threads. Each size in a fresh process."
        ),
        "",
        (
            "| series | observations | fit (s) | predict (s) | series/s | RSS after data (MB) "
            "| peak RSS (MB) | peak above data (MB) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['series']:,} | {r['observations']:,} | {r['fit_s']:.1f} | "
            f"{r['predict_s']:.1f} | {r['series_per_s']:.0f} | "
            f"{r['rss_after_data_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | "
            f"{r['peak_rss_mb'] - r['rss_after_data_mb']:,.0f} |"
        )
    (args.out / "large_panel.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
