r"""Fine-tune the small-size model on a 1,000-series panel, once per strategy.

Random weights with the small release's shapes (``MoiraiMoEConfig()``: 117M
parameters) stand in for ``Salesforce/moirai-moe-1.0-R-small``, which cannot be
downloaded here (``--checkpoint DIR`` loads a real one instead). The panel is
synthetic and seeded: ``--series`` univariate series of ``--length`` steps
(default 1,000 x 500), each a trend plus one or two seasonal cycles plus noise,
at scales spread over four orders of magnitude, all observed.

Each strategy (``full``, ``head``, ``freeze-experts``, ``lora``) runs
:func:`moirai_moe_sk.training.fine_tune` in a fresh Python process, so that its
peak resident memory (``ru_maxrss``) is its own. On a 2-core CPU the budget
is ``--max-steps 20`` optimiser steps of ``--batch-size 32`` windows (drawn
among the panel's admissible windows), plus the engine's validation pass over
every series before and after training (one validation at the end:
``eval_every`` is the step budget). The report gives, per
strategy: trained parameters, optimiser steps, windows trained, total wall time
of ``fine_tune``, the time of each validation pass, the rest of the call outside
the optimiser steps (model copy, weight snapshots), seconds per optimiser step
(mean and median), training windows per second, peak resident memory and the
validation NLL before and after; and the machine (CPU count, torch version,
threads). Peak memory is checked against ``--memory-limit-gib`` (24 GiB);
``--micro-batch-size`` and ``--gradient-checkpointing`` lower it.

Run from the repository root::

    .venv/bin/python benchmarks/finetune_small.py [--out results.json]

Smoke run::

    .venv/bin/python benchmarks/finetune_small.py --series 50 --max-steps 2 \
        --strategies head lora
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import moirai_moe_sk
from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
from moirai_moe_sk.training import (
    STRATEGIES,
    TrainingConfig,
    TrainingSeries,
    engine,
    fine_tune,
)

logger = logging.getLogger("benchmarks.finetune_small")

MIB = 1024**2


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def make_panel(n_series: int, length: int, seed: int = 0) -> list[TrainingSeries]:
    """Seeded synthetic panel: trend + seasonality + AR(1) noise, varied scales."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    periods = np.array([7, 12, 24, 52])
    panel = []
    for _ in range(n_series):
        scale = 10 ** rng.uniform(-1, 3)
        level = scale * rng.uniform(0.5, 5)
        trend = scale * rng.normal(0, 2) * t / length
        period = rng.choice(periods)
        season = (
            scale
            * rng.uniform(0.2, 1.5)
            * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        )
        if rng.random() < 0.5:  # a second, longer cycle
            long_period = rng.choice(periods[periods > period]) if period < 52 else 91
            season += (
                scale
                * rng.uniform(0.1, 0.8)
                * np.sin(2 * np.pi * t / long_period + rng.uniform(0, 2 * np.pi))
            )
        noise = np.empty(length)
        phi, sigma = rng.uniform(0, 0.8), scale * rng.uniform(0.05, 0.5)
        noise[0] = rng.normal(0, sigma)
        for i in range(1, length):
            noise[i] = phi * noise[i - 1] + rng.normal(0, sigma)
        y = (level + trend + season + noise).astype(np.float32)[:, None]
        panel.append(TrainingSeries(y, np.ones_like(y, dtype=bool)))
    return panel


# ------------------------------------------------------------------ child
class _Probe:
    """Time the engine's validation passes and count the windows it trains on.

    Wraps the engine's module-level ``validation_nll`` (and, where present, its
    private ``_loss``) for one ``fine_tune`` call; the engine itself is not
    modified.
    """

    def __init__(self) -> None:
        self.validations: list[tuple[float, float]] = []  # (start, end)
        self.step_starts: list[float] = []
        self.windows = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        validation_nll = engine.validation_nll

        def timed_validation(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return validation_nll(*args, **kwargs)
            finally:
                self.validations.append((start, time.perf_counter()))

        self._saved["validation_nll"] = validation_nll
        engine.validation_nll = timed_validation  # type: ignore[assignment]
        loss = getattr(engine, "_loss", None)
        if loss is not None:

            def counted_loss(*args: Any, **kwargs: Any) -> Any:
                backward = kwargs.get("backward", args[5] if len(args) > 5 else False)
                if backward:
                    self.step_starts.append(time.perf_counter())
                    self.windows += len(kwargs.get("windows", args[2]))
                return loss(*args, **kwargs)

            self._saved["_loss"] = loss
            engine._loss = counted_loss  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            setattr(engine, name, value)

    def step_seconds(self) -> list[float]:
        """Durations of the optimiser steps, validation time taken out."""
        if not self.step_starts:
            return []
        after = [s for s, _ in self.validations if s > self.step_starts[-1]]
        ends = [*self.step_starts[1:], after[0] if after else float("nan")]
        out = []
        for start, end in zip(self.step_starts, ends, strict=True):
            inside = sum(e - s for s, e in self.validations if start < s and e <= end)
            out.append(end - start - inside)
        return out


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune with one strategy in this process and return its figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        model = MoiraiMoEModel.from_pretrained(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        model = MoiraiMoEModel(MoiraiMoEConfig())
    panel = make_panel(args.series, args.length, args.seed)
    rss_before = _peak_rss_mib()
    config = TrainingConfig(
        strategy=args.child,
        context_length=args.context_length,
        prediction_length=args.prediction_length,
        learning_rate=args.learning_rate,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        eval_every=args.max_steps,
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        progress=False,
    )
    probe = _Probe()
    with probe:
        start = time.perf_counter()
        result = fine_tune(model, panel, config)
        total = time.perf_counter() - start
    validation = [e - s for s, e in probe.validations]
    steps = int(result.history[-1]["step"])
    per_step = probe.step_seconds()
    # optimiser steps only; without the probe, all but the validation passes
    train_s = sum(per_step) if per_step else total - sum(validation)
    windows = probe.windows or steps * args.batch_size
    return {
        "strategy": args.child,
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": result.trained_parameters,
        "steps": steps,
        "epochs": float(result.history[-1]["epoch"]),
        "windows": windows,
        "wall_s": total,
        "validation_s": validation,
        "train_s": train_s,
        "other_s": total - sum(validation) - train_s,
        "s_per_step": train_s / steps if steps else None,
        "first_step_s": per_step[0] if per_step else None,
        "median_step_s": statistics.median(per_step) if per_step else None,
        "step_s": per_step,
        "windows_per_s": windows / train_s if steps else None,
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "initial_val_nll": result.initial_val_nll,
        "best_val_nll": result.best_val_nll,
        "last_val_nll": result.history[-1]["val_nll"],
        "best_step": result.best_step,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------- parent
_FORWARDED = (
    "checkpoint",
    "series",
    "length",
    "context_length",
    "prediction_length",
    "batch_size",
    "micro_batch_size",
    "max_steps",
    "max_epochs",
    "learning_rate",
    "threads",
    "seed",
)


def _child_command(args: argparse.Namespace, strategy: str, out: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", strategy]
    for name in _FORWARDED:
        value = getattr(args, name)
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    return [*cmd, "--child-out", str(out)]


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "moirai_moe_sk": getattr(moirai_moe_sk, "__version__", "unknown"),
        "threads": args.threads or torch.get_num_threads(),
    }


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _table(rows: list[dict[str, Any]], limit_mib: float) -> str:
    head = (
        "| strategy | trained params | steps | windows | wall s | validation s "
        "| other s | s/step | median s/step | windows/s | peak RSS MiB | within limit | val NLL before "
        "| val NLL after |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['strategy']} | failed: {r['error']} |")
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    r["strategy"],
                    f"{r['trained_parameters']:,}",
                    str(r["steps"]),
                    str(r["windows"]),
                    f"{r['wall_s']:.1f}",
                    " + ".join(f"{v:.1f}" for v in r["validation_s"]),
                    f"{r['other_s']:.1f}",
                    _fmt(r["s_per_step"], ".2f"),
                    _fmt(r["median_step_s"], ".2f"),
                    _fmt(r["windows_per_s"], ".2f"),
                    f"{r['peak_rss_mib']:.0f}",
                    "yes" if r["peak_rss_mib"] <= limit_mib else "NO",
                    _fmt(r["initial_val_nll"], ".4f"),
                    _fmt(r["best_val_nll"], ".4f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _write(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        rows = [r for r in report["results"] if "error" not in r]
        fields = sorted({k for r in rows for k in r})
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                writer.writerow(
                    {
                        k: "+".join(f"{x:.3f}" for x in v) if isinstance(v, list) else v
                        for k, v in r.items()
                    }
                )
    else:
        out.write_text(json.dumps(report, indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    add("--checkpoint", type=Path, help="checkpoint folder instead of random weights")
    add("--series", type=int, default=1000, help="series in the panel")
    add("--length", type=int, default=500, help="steps per series")
    add("--context-length", type=int, default=512)
    add("--prediction-length", type=int, default=64)
    add("--batch-size", type=int, default=32, help="windows per optimiser step")
    add("--micro-batch-size", type=int, help="windows per forward/backward pass")
    add("--max-steps", type=int, default=20, help="optimiser steps per strategy")
    add("--max-epochs", type=int, default=None)
    add("--learning-rate", type=float, default=None, help="default: per strategy")
    add("--gradient-checkpointing", action="store_true")
    add("--threads", type=int, help="torch threads (torch's default otherwise)")
    add("--seed", type=int, default=0)
    add("--memory-limit-gib", type=float, default=24.0)
    add("--out", type=Path, help="write the report as .json or .csv")
    add("--child", choices=STRATEGIES, help=argparse.SUPPRESS)
    add("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Run the benchmark and print its table."""
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child is not None:
        args.child_out.write_text(json.dumps(run_child(args)))
        return

    machine = _machine(args)
    settings = {
        name: getattr(args, name)
        for name in (*_FORWARDED, "gradient_checkpointing", "memory_limit_gib")
    }
    settings["checkpoint"] = (
        str(args.checkpoint)
        if args.checkpoint is not None
        else "random weights, MoiraiMoEConfig() (small release shapes)"
    )
    logger.info("machine: %s", machine)
    logger.info("settings: %s", settings)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            out = Path(tmp) / f"{strategy}.json"
            logger.info("--- %s", strategy)
            start = time.perf_counter()
            proc = subprocess.run(_child_command(args, strategy, out), check=False)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0 or not out.exists():
                results.append(
                    {"strategy": strategy, "error": f"exit code {proc.returncode}"}
                )
                continue
            row = json.loads(out.read_text())
            row["process_s"] = elapsed
            results.append(row)
            logger.info(
                "%s: %.1f s in fine_tune (%.1f s for the process), peak RSS %.0f MiB",
                strategy,
                row["wall_s"],
                elapsed,
                row["peak_rss_mib"],
            )

    limit_mib = args.memory_limit_gib * 1024
    print()
    print(
        f"Fine-tuning {args.series} series x {args.length} steps, context "
        f"{args.context_length}, horizon {args.prediction_length}, batch "
        f"{args.batch_size} (micro {args.micro_batch_size or args.batch_size}), "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
        f"at most {args.max_steps} steps"
    )
    print(
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable), "
        f"torch {machine['torch']}, {machine['threads']} threads, "
        f"Python {machine['python']}"
    )
    print()
    print(_table(results, limit_mib))
    print()
    print(
        "wall s: the whole fine_tune call; validation s: each validation pass "
        "(before and after training); other s: the rest outside the "
        "optimiser steps (model copy, adapters, weight snapshots, merge); s/step "
        "(mean), median s/step and windows/s: optimiser steps only."
    )
    if args.out is not None:
        report = {"machine": machine, "settings": settings, "results": results}
        _write(args.out, report)
        logger.info("wrote %s", args.out)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
