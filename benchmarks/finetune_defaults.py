r"""Sweep of the fine-tuning defaults: which learning rate and budget help.

The defaults of :class:`moirai_moe_sk.training.TrainingConfig` (the step
budget of :func:`~moirai_moe_sk.training.planned_steps` and the per-strategy
:data:`~moirai_moe_sk.training.DEFAULT_LEARNING_RATES`) are chosen on this
sweep. Its data are *decision* data, never evaluation data: seeded synthetic
series only (no M-competition, benchmark or held-out series).

Cases
-----
``single``
    Ten short seasonal series from the package's synthetic generator
    (:func:`~moirai_moe_sk.pretrain.synthetic.seasonal_series`, a seed no
    pretraining run draws from), monthly (48-150 steps, 18 held out) and
    quarterly (8 held out), as in the M competitions: one forecaster fitted on
    one short series, the case of a user with one series. The bundled
    ``moirai-moe-sk-tiny`` (or ``--checkpoint``). Not the corpus series: the
    bundled model saw those in pretraining (it forecasts some of them almost
    perfectly zero-shot), so they cannot show what fine-tuning adds.
``panel``
    A 12-series synthetic seasonal panel of 240 steps (period 12, 24 held
    out: two patches) on a *randomly initialised* tiny model, where
    fine-tuning has everything to learn.

Each case is scored zero-shot and after ``fit`` with each strategy and
learning rate (everything else at its default), by held-out MASE (in-sample
seasonal-naive scale) of the median of 100 sample paths. The report gives,
per setting, the geometric mean over series of MASE relative to zero-shot and
the number of series improved, kept (starting weights restored: identical
forecasts) and worsened.

Run from the repository root (about 20 minutes on one core)::

    .venv/bin/python benchmarks/finetune_defaults.py --threads 1 \
        --markdown benchmarks/results/finetune_defaults.md \
        --json benchmarks/results/finetune_defaults.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk.exceptions import FineTuneWarning

#: (period, horizon, length) of the ``single`` case's synthetic series
SINGLE = (
    (12, 18, 132),
    (4, 8, 64),
    (12, 18, 150),
    (12, 18, 96),
    (4, 8, 100),
    (12, 18, 114),
    (12, 18, 144),
    (4, 8, 80),
    (12, 18, 120),
    (4, 8, 48),
)
#: seed of the ``single`` case: not one of the pretraining pool's streams
SINGLE_SEED = 777


def mase(train: np.ndarray, test: np.ndarray, pred: np.ndarray, m: int) -> float:
    """Mean absolute scaled error with the in-sample seasonal-naive scale."""
    m = m if len(train) > m else 1
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    return float(np.mean(np.abs(test - pred))) / max(scale, 1e-12)


def single_cases() -> list[dict[str, Any]]:
    from moirai_moe_sk.pretrain.synthetic import seasonal_series

    cases = []
    for index, (period, h, length) in enumerate(SINGLE):
        rng = np.random.default_rng([SINGLE_SEED, index])
        values = seasonal_series(length + h, rng, periods=[period])
        values = values - min(float(values.min()), 0.0) + 1.0  # positive levels
        cases.append(
            {
                "name": f"synthetic {index} (m={period}, n={length})",
                "period": period,
                "train": [values[:-h]],
                "test": [values[-h:]],
                "freq": "M" if period == 12 else "Q",
            }
        )
    return cases


def airline_case() -> dict[str, Any]:
    """Airline's first 132 months, the next 12 held out (a target, not a decision)."""
    from sktime.datasets import load_airline

    values = load_airline().to_numpy(dtype=float)
    return {
        "name": "airline (first 132, next 12 held out)",
        "period": 12,
        "train": [values[:132]],
        "test": [values[132:144]],
        "freq": "M",
    }


def panel_case(folder: Path) -> tuple[dict[str, Any], str]:
    from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    from moirai_moe_sk.pretrain.synthetic import seasonal_series

    rng = np.random.default_rng(0)
    series = [seasonal_series(240, rng, periods=[12]) + 10.0 for _ in range(12)]
    h = 24
    torch.manual_seed(0)
    model = MoiraiMoEModel(
        MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=2, num_experts=4)
    )
    path = folder / "random-tiny"
    model.save_pretrained(path)
    case = {
        "name": "synthetic panel (random tiny model)",
        "period": 12,
        "train": [s[:-h] for s in series],
        "test": [s[-h:] for s in series],
        "freq": "M",
    }
    return case, str(path)


def _frame(arrays: list[np.ndarray], freq: str) -> pd.DataFrame | pd.Series:
    if len(arrays) == 1:
        index = pd.period_range("2000-01", periods=len(arrays[0]), freq=freq)
        return pd.Series(arrays[0], index=index)
    frames = []
    for i, a in enumerate(arrays):
        index = pd.MultiIndex.from_product(
            [[f"s{i:02d}"], pd.period_range("2000-01", periods=len(a), freq=freq)]
        )
        frames.append(pd.DataFrame({"y": a}, index=index))
    return pd.concat(frames)


def score(
    case: dict[str, Any], checkpoint: str, **params: Any
) -> tuple[list[float], dict[str, Any]]:
    """Fit on the case's training parts, forecast the test parts: MASE each."""
    h = len(case["test"][0])
    y = _frame(case["train"], case["freq"])
    forecaster = MoiraiMoEForecaster(
        checkpoint, num_samples=100, random_state=0, **params
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FineTuneWarning)
        forecaster.fit(y, fh=list(range(1, h + 1)))
    fit_seconds = time.perf_counter() - start
    pred = forecaster.predict()
    values = np.asarray(pred).reshape(len(case["train"]), h)
    scores = [
        mase(train, test, p, case["period"])
        for train, test, p in zip(case["train"], case["test"], values, strict=True)
    ]
    info: dict[str, Any] = {"fit_seconds": round(fit_seconds, 2)}
    if params.get("fit_strategy", "zero-shot") != "zero-shot":
        history = forecaster.training_history_
        info.update(
            best_step=int(forecaster.best_step_),
            steps=int(history["step"].iloc[-1]),
            kept_start=any(issubclass(w.category, FineTuneWarning) for w in caught),
        )
    return scores, info


def _lr(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="moirai-moe-sk-tiny")
    parser.add_argument("--cases", nargs="+", default=["single", "panel"])
    parser.add_argument(
        "--grid",
        nargs="+",
        default=["full=1e-5,3e-5,1e-4", "lora=1e-4,3e-4,1e-3"],
        help="STRATEGY=LR,LR,... learning rates to try per strategy",
    )
    parser.add_argument(
        "--series", type=int, default=6, help="synthetic series of the single case"
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        metavar="JSON",
        help="further forecaster parameters of every fine-tuned fit",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        todo: list[tuple[dict[str, Any], str]] = []
        if "single" in args.cases:
            todo += [(c, args.checkpoint) for c in single_cases()[: args.series]]
        if "panel" in args.cases:
            todo.append(panel_case(Path(tmp)))
        if "airline" in args.cases:
            todo.append((airline_case(), args.checkpoint))
        for case, checkpoint in todo:
            base, _ = score(case, checkpoint)
            for item in args.grid:
                strategy, _, rates = item.partition("=")
                for lr in (
                    None if r == "default" else float(r) for r in rates.split(",")
                ):
                    scores, info = score(
                        case,
                        checkpoint,
                        fit_strategy=strategy,
                        learning_rate=lr,
                        **args.params,
                    )
                    rel = [s / b for s, b in zip(scores, base, strict=True)]
                    row = {
                        "params": json.dumps(args.params),
                        "case": case["name"],
                        "strategy": strategy,
                        "learning_rate": "default" if lr is None else lr,
                        "zero_shot_mase": float(np.mean(base)),
                        "mase": float(np.mean(scores)),
                        "rel": float(np.exp(np.mean(np.log(rel)))),
                        **info,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    lines = [
        "<!-- written by benchmarks/finetune_defaults.py -->",
        "",
        (
            "Command: `python benchmarks/finetune_defaults.py "
            f"{' '.join(sys.argv[1:] if argv is None else argv)}`"
            f" (checkpoint `{args.checkpoint}` for the single series; a random tiny "
            "model for the synthetic panel). Everything but the strategy and the "
            "learning rate at its default."
        ),
        "",
        (
            "Per setting, over the series of the `single` case (one fit per series):"
            " geometric mean of held-out MASE relative to zero-shot, and how many "
            "series got better / identical (starting weights kept) / worse."
        ),
        "",
        (
            "| case | strategy | learning rate | MASE rel zero-shot | better / kept / "
            "worse | mean steps | mean fit s |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    is_single = table["case"].str.match(r"synthetic \d")
    single = table[is_single]
    for (strategy, lr), g in single.groupby(["strategy", "learning_rate"]):
        rel = float(np.exp(np.mean(np.log(g["rel"]))))
        better = int((g["rel"] < 1 - 1e-9).sum())
        kept = int(g["kept_start"].sum())
        worse = len(g) - better - kept
        lines.append(
            f"| synthetic series ({len(g)}) | {strategy} | {_lr(lr)} | {rel:.3f} | "
            f"{better} / {kept} / {worse} | {g['steps'].mean():.0f} | "
            f"{g['fit_seconds'].mean():.1f} |"
        )
    others = table[~is_single]
    for _, r in others.iterrows():
        lines.append(
            f"| {r['case']} | {r['strategy']} | "
            f"{_lr(r['learning_rate'])} | {r['rel']:.3f} | "
            f"{'kept' if r['kept_start'] else '-'} | {r['steps']} | "
            f"{r['fit_seconds']:.1f} |"
        )
    lines.append("")
    lines.append(
        "Per-series rows (zero-shot and fine-tuned MASE, steps, best step) are "
        "in the JSON file."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if not math.isnan(table["rel"].sum()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
