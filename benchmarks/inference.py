r"""Inference speed of the forecaster against uni2ts' own predictor, same weights.

Both sides load one checkpoint with the small release's shapes
(``MoiraiMoEConfig()``: 6 layers, d_model 384, 32 experts, 117M parameters)
and random weights drawn with a fixed seed, saved once in the official layout
(``MoiraiMoEModel.save_pretrained``) and read by uni2ts'
``MoiraiMoEModule.from_pretrained(folder, strict=True)``.

Workloads (all with 100 sample paths; quantiles 0.1, ..., 0.9):

* ``W1``, an M3-monthly-like panel: 1,428 random-walk series with a yearly
  season, lengths 48-126 (seeded), context 512, horizon 18;
* ``W2``, long horizon: 64 hourly series of 2,000 steps, context 1,024,
  horizon 96 (six autoregressive patches);
* ``W3``, latency: one hourly series of 600 steps, context 512, horizon 16
  (a single forward pass).

Implementations:

* ``uni2ts``: the reference, run with the reference venv's python
  (``--ref-python`` or ``$MOIRAI_REF_PYTHON``): the pandas panel becomes a
  GluonTS ``ListDataset``, ``MoiraiMoEForecast(...).create_predictor(
  batch_size=--ref-batch-size)`` predicts ``SampleForecast`` s and their
  ``quantile(q)`` are stacked;
* ``ours-<variant>``: ``MoiraiMoEForecaster(checkpoint, context_length,
  num_samples=100, random_state=seed, **VARIANTS[variant]).fit(y, fh=1..H)
  .predict_quantiles(alpha)`` on the same pandas data. A variant whose
  arguments the forecaster rejects (``TypeError``/``ValueError`` on a tiny
  bundled model) is skipped with its error message.

Method. Every measurement runs in a fresh subprocess, which loads the weights
and forecasts one 48-step series one patch ahead (timed separately as
``load_s``: ours fills the forecaster's model cache with a one-series ``fit``,
and work done lazily on the first call, such as a bf16 copy of the weights,
happens there), builds the pandas data, then times the region "data
conversion + predict + quantiles" (``time_s``) and reports, as one JSON line
on stdout, its peak resident memory (``ru_maxrss``: ``peak_rss_mb``) and the
peak of the timed region alone (``peak_run_mb``, after resetting the peak
through ``/proc/self/clear_refs``; it includes the resident weights), and
the share of the cores other processes used meanwhile (``others_cpu_share``,
from ``/proc/stat``; the report warns above 10%: uni2ts' many small kernels
on 2 threads slow down up to tens of times on shared cores). Within each
repetition the implementations alternate, in an order rotated by one at
every repetition; repetition ``r`` uses seed ``--seed + r`` for every
implementation. ``W3`` runs its timed region six times in each process and
reports the first call (``cold_s``) and the median of the other five
(``time_s``, warm latency); W1 and W2 run once per process. Tables report
medians over repetitions; the speed-up is ``median time(uni2ts) / median
time(impl)`` of the same invocation.

FLOPs are counted, in a separate untimed process per workload and
implementation, with ``torch.utils.flop_counter.FlopCounterMode`` around the
same code path, on the first ``--flop-series`` series of the workload, and
scaled by (series timed / series counted). The reference pads every series to
``context_length`` so its FLOPs per series are constant; ours drops all-padding
patches, so for W1 the count on a subset is an estimate. CPU SDPA
(``_scaled_dot_product_flash_attention_for_cpu``), which FlopCounterMode does
not know, is counted with its standard formula. The table also gives the
analytic count of the reference's decoding (tokens x 2 x activated parameters
+ 4 seq^2 d_model per layer and sequence; see :func:`reference_flops`) as a
cross-check. Achieved FLOP/s are given as a fraction of the machine's compute bound
(``--peak-fp32`` / ``--peak-bf16``; defaults: the 2-core development
machine's 200 GFLOP/s fp32 on large GEMMs and 900 GFLOP/s bf16).

Accuracy. For quantiles 0.1, 0.5 and 0.9 the statistic is
``|q_a - q_b| / scale`` (scale: the standard deviation of the series' last
``context_length`` values), maximum and mean over series, steps and levels.
Ours at repetition 1 against uni2ts at repetition 1 (same seed) and against
uni2ts at repetition 2 (another seed), and uni2ts at repetitions 1 and 2
against each other: the Monte-Carlo noise floor (needs ``--reps 2`` or more).
The share of same-seed entries that agree to 1e-4 shows where the sample
paths are identical (ours reproduces uni2ts' random stream when both decode
the same tokens in the same batches: not with left padding, which ours
drops, and a path that flips on a floating-point near-tie stays different
in the later patches).

Cost (2 cores). uni2ts executes about 76 GFLOP per W1 series (every series
padded to 32 context tokens; the second patch re-encodes 100 paths of 34
tokens), 784 GFLOP per W2 series and 0.73 GFLOP for W3. At the ~130 GFLOP/s
it reaches on a quiet machine, one repetition of uni2ts takes about 14 min on
W1 and 7 min on W2; a full run (3 repetitions, all implementations, FLOP
counts) about 2 hours. On shared cores it was 3 to 10 times slower (at a
load average of 3 to 8: 3.0 s per W1 series, 65 s per W2 series).
``--scale F`` keeps the first ``F`` share of W1's and W2's series (at least
one), so reduced runs report comparable series per second; the tables state
the scale.

Run from the repository root, with the project venv::

    python benchmarks/inference.py --scale 0.02 --reps 1      # smoke run
    python benchmarks/inference.py --workloads W3 --impls uni2ts ours-exact
    python benchmarks/inference.py                            # full, slow

Writes ``<out-dir>/<name>.md``, ``.csv`` and ``.json`` (every repetition's
raw result), default ``benchmarks/results/inference.*``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.inference")

#: forecaster keyword arguments of each of our variants (``ours-<name>``)
VARIANTS: dict[str, dict[str, Any]] = {
    "exact": {},
    "fast": {"decoding": "fast"},
    "fast-bf16": {"decoding": "fast", "dtype": "bfloat16"},
}
REFERENCE = "uni2ts"
IMPLS: tuple[str, ...] = (REFERENCE, *(f"ours-{name}" for name in VARIANTS))
QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: levels of the accuracy check
CHECK_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
#: scaled quantile gap under which two quantiles count as equal
EQUAL = 1e-4
PATCH = 16
#: share of the cores used by other processes during a timed region above
#: which the report warns that timings are unreliable
BUSY_WARNING = 0.1
#: prefix of the worker's result line on stdout
RESULT_PREFIX = "INFERENCE_RESULT "
ROOT = Path(__file__).resolve().parents[1]
#: model configurations the checkpoint can have (MoiraiMoEConfig overrides);
#: "tiny" keeps uni2ts' hard-coded 32 experts so that uni2ts can load it
MODELS: dict[str, dict[str, Any]] = {
    "small": {},
    "tiny": {"d_model": 64, "d_ff": 64, "num_layers": 2},
}


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: data shape and forecast settings."""

    name: str
    description: str
    n_series: int
    min_length: int
    max_length: int
    context_length: int
    horizon: int
    freq: str
    start: str
    season: int
    #: timed regions per process (the first is the cold call)
    inner: int = 1
    num_samples: int = 100
    scaled: bool = True

    def series_count(self, scale: float) -> int:
        """Series kept at ``scale`` (the whole panel for an unscaled workload)."""
        if not self.scaled:
            return self.n_series
        return max(1, round(self.n_series * scale))


WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        "W1",
        "M3-monthly-like panel: 1,428 series, lengths 48-126",
        n_series=1428,
        min_length=48,
        max_length=126,
        context_length=512,
        horizon=18,
        freq="M",
        start="1990-01",
        season=12,
    ),
    "W2": Workload(
        "W2",
        "long horizon: 64 hourly series of 2,000 steps",
        n_series=64,
        min_length=2000,
        max_length=2000,
        context_length=1024,
        horizon=96,
        freq="h",
        start="2020-01-01 00:00",
        season=24,
    ),
    "W3": Workload(
        "W3",
        "latency: one hourly series of 600 steps",
        n_series=1,
        min_length=600,
        max_length=600,
        context_length=512,
        horizon=16,
        freq="h",
        start="2020-01-01 00:00",
        season=24,
        inner=6,
        scaled=False,
    ),
}


# =========================================================================== data
def make_series(workload: Workload, seed: int) -> list[np.ndarray]:
    """Seeded random-walk series with a season, all of ``workload``'s series.

    The first ``k`` series are the same whatever ``k``: a scaled run is a
    subset of the full one. The values are float32 numbers (uni2ts' GluonTS
    transform casts to float32), so both implementations see the same inputs.
    """
    rng = np.random.default_rng([seed, int(workload.name[1:])])
    out = []
    for _ in range(workload.n_series):
        length = int(rng.integers(workload.min_length, workload.max_length + 1))
        level = float(np.exp(rng.uniform(np.log(100.0), np.log(10_000.0))))
        steps = rng.normal(0.002 * level, 0.03 * level, length)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        amplitude = rng.uniform(0.0, 0.15) * level
        t = np.arange(length)
        season = amplitude * np.sin(2.0 * np.pi * t / workload.season + phase)
        values = level + np.cumsum(steps) + season
        # float32-representable: uni2ts casts to float32, ours keeps float64
        out.append(values.astype(np.float32).astype(np.float64))
    return out


def save_data(path: Path, series: list[np.ndarray]) -> None:
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    np.savez(path, values=np.concatenate(series), lengths=lengths)


def load_data(path: str | Path) -> list[np.ndarray]:
    with np.load(path) as data:
        values, lengths = data["values"], data["lengths"]
    return np.split(values, np.cumsum(lengths)[:-1])


def series_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def pandas_data(spec: dict[str, Any]):
    """Build the workload in pandas: a pd.Series (one series) or a pd-multiindex."""
    import pandas as pd

    series = load_data(spec["data"])
    freq, start = spec["freq"], spec["start"]
    if len(series) == 1 and not spec["panel"]:
        index = pd.period_range(start, periods=len(series[0]), freq=freq)
        return pd.Series(series[0], index=index, name="y")
    frames = {
        name: pd.Series(
            values, index=pd.period_range(start, periods=len(values), freq=freq)
        )
        for name, values in zip(series_names(len(series)), series, strict=True)
    }
    return pd.concat(frames, names=["series", "time"]).to_frame("y")


# ======================================================================= workers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float | None:
    """Return the current resident memory (VmRSS) in MB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_parts_mb() -> dict[str, float]:
    """Return RssAnon / RssFile / RssShmem in MB (Linux), else {}."""
    parts = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return parts


def _busy_cpu_s() -> tuple[float, float] | None:
    """Return (CPU seconds busy on the machine, CPU seconds of this process).

    From ``/proc/stat`` (Linux); None elsewhere.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return machine, own.ru_utime + own.ru_stime


def _reset_peak_rss() -> bool:
    """Reset the peak resident memory (Linux >= 4.0); True if it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _flop_counter():
    """FlopCounterMode that also counts CPU SDPA (unknown to it in torch 2.13)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kw):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    custom = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = cpu_sdpa
    return FlopCounterMode(display=False, custom_mapping=custom)


def _run_timed(spec: dict[str, Any], once, to_array=np.asarray) -> dict[str, Any]:
    """Run ``once(seed)`` ``inner`` times (or once under the FLOP counter).

    ``to_array`` turns the first run's output into (series, level, step)
    quantiles, outside the timed region.
    """
    import gc

    gc.collect()
    # the process peak so far (weights, data); then measure the run's own peak
    result: dict[str, Any] = {"peak_load_mb": _peak_rss_mb()}
    reset = _reset_peak_rss()
    result["rss_before_run_mb"] = _rss_mb()
    result["rss_parts_before_run_mb"] = _rss_parts_mb()
    if spec["count_flops"]:
        counter = _flop_counter()
        with counter:
            quantiles = once(spec["seed"])
        by_op = {
            str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()
        }
        result["flops"] = int(counter.get_total_flops())
        result["flops_by_op"] = by_op
        return result
    times = []
    quantiles = None
    cpu_start, wall_start = _busy_cpu_s(), time.perf_counter()
    for i in range(spec["inner"]):
        start = time.perf_counter()
        out = once(spec["seed"])
        times.append(time.perf_counter() - start)
        if i == 0:
            quantiles = out
    cpu_end, wall = _busy_cpu_s(), time.perf_counter() - wall_start
    if cpu_start is not None and cpu_end is not None:
        others = (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])
        # the share of the machine's cores other processes used meanwhile
        result["others_cpu_share"] = max(others, 0.0) / (wall * (os.cpu_count() or 1))
        result["own_cpu_s"] = cpu_end[1] - cpu_start[1]
    run_peak = _peak_rss_mb()
    result["peak_run_mb"] = run_peak if reset else None
    result["rss_parts_after_run_mb"] = _rss_parts_mb()
    result["peak_rss_mb"] = max(run_peak, result["peak_load_mb"])
    result["times"] = times
    result["cold_s"] = times[0]
    result["time_s"] = statistics.median(times[1:]) if len(times) > 1 else times[0]
    if spec.get("quantiles_out") and quantiles is not None:
        array = np.asarray(to_array(quantiles), dtype=np.float64)
        np.save(spec["quantiles_out"], array)
    return result


def _ours_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import torch

    torch.set_num_threads(spec["threads"])
    warnings.filterwarnings("ignore", category=FutureWarning)
    from moirai_moe_sk import MoiraiMoEForecaster, __version__

    kwargs = spec["kwargs"]
    common = {
        "checkpoint": spec["checkpoint"],
        "context_length": spec["context_length"],
        "num_samples": spec["num_samples"],
        "batch_size": spec["batch_size"],
        **kwargs,
    }
    # load: a one-series fit puts the weights in the forecaster's model cache,
    # a one-patch forecast does what the first call does lazily
    start = time.perf_counter()
    try:
        dummy = pd.Series(np.arange(48.0), index=pd.RangeIndex(48))
        MoiraiMoEForecaster(random_state=0, **common).fit(
            dummy, fh=list(range(1, PATCH + 1))
        ).predict()
    except (TypeError, ValueError) as err:
        return {"skipped": f"{type(err).__name__}: {err}"}
    load_s = time.perf_counter() - start

    y = pandas_data(spec)
    horizon = spec["horizon"]
    fh = list(range(1, horizon + 1))
    n = spec["n_series"]

    def once(seed: int) -> np.ndarray:
        forecaster = MoiraiMoEForecaster(random_state=seed, **common)
        forecaster.fit(y, fh=fh)
        return forecaster.predict_quantiles(alpha=list(QUANTILES))

    result = _run_timed(spec, once, lambda frame: _ours_array(frame, n, horizon))
    result.update(
        load_s=load_s,
        versions={"moirai_moe_sk": __version__, "torch": torch.__version__},
    )
    return result


def _ours_array(frame, n: int, horizon: int) -> np.ndarray:
    """predict_quantiles' frame as (series, level, step)."""
    if frame.index.nlevels > 1:
        names = list(frame.index.get_level_values(0).unique())
        if names != series_names(n):
            msg = "predict_quantiles returned the series in another order"
            raise RuntimeError(msg)
    values = frame.to_numpy(dtype=np.float64)
    return values.reshape(n, horizon, len(QUANTILES)).transpose(0, 2, 1)


def _uni2ts_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata

    import pandas as pd
    import torch

    torch.set_num_threads(spec["threads"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")  # gluonts' imputation 0/0, json module notes
    from gluonts.dataset.common import ListDataset
    from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

    horizon, freq = spec["horizon"], spec["freq"]

    def predictor(prediction_length: int):
        return MoiraiMoEForecast(
            prediction_length=prediction_length,
            target_dim=1,
            feat_dynamic_real_dim=0,
            past_feat_dynamic_real_dim=0,
            context_length=spec["context_length"],
            module=module,
            patch_size=PATCH,
            num_samples=spec["num_samples"],
        ).create_predictor(batch_size=spec["batch_size"], device="cpu")

    # load: the weights, then a one-patch forecast of one series (as ours)
    start = time.perf_counter()
    module = MoiraiMoEModule.from_pretrained(spec["checkpoint"], strict=True)
    module.eval()
    dummy = [{"start": pd.Period("2000-01", "M"), "target": np.arange(48.0)}]
    list(predictor(PATCH).predict(ListDataset(dummy, freq="M")))
    load_s = time.perf_counter() - start

    y = pandas_data(spec)
    n = spec["n_series"]

    def once(seed: int) -> np.ndarray:
        if y.index.nlevels > 1:
            groups = y["y"].groupby(level=0, sort=False)
            entries = [
                {
                    "start": part.index[0][1],
                    "target": part.to_numpy(np.float32),
                    "item_id": key,
                }
                for key, part in groups
            ]
        else:
            entries = [{"start": y.index[0], "target": y.to_numpy(np.float32)}]
        dataset = ListDataset(entries, freq=freq)
        run = predictor(horizon)
        torch.manual_seed(seed)
        forecasts = list(run.predict(dataset))
        return np.stack(
            [np.stack([fc.quantile(q) for q in QUANTILES]) for fc in forecasts]
        )

    def checked(out: np.ndarray) -> np.ndarray:
        if out.shape != (n, len(QUANTILES), horizon):
            msg = f"uni2ts returned quantiles of shape {out.shape}"
            raise RuntimeError(msg)
        return out

    result = _run_timed(spec, once, checked)
    names = ("uni2ts", "gluonts", "torch")
    result.update(
        load_s=load_s,
        versions={k: importlib.metadata.version(k) for k in names},
    )
    return result


def worker_main(kind: str, spec_path: str) -> int:
    """Run one measurement described by a JSON spec; print the result line."""
    spec = json.loads(Path(spec_path).read_text())
    work = _uni2ts_worker if kind == REFERENCE else _ours_worker
    result = work(spec)
    result.setdefault("peak_rss_mb", _peak_rss_mb())
    result["torch_threads"] = spec["threads"]
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# ======================================================================= parent
def reference_flops(
    config: dict[str, Any], context: int, horizon: int, samples: int, series: int
) -> float:
    """Analytic FLOPs of uni2ts' decoding (matrix products only).

    uni2ts pads every series to ``context / 16`` tokens plus ``horizon / 16``
    future tokens (S in all), runs one forward on it, then re-encodes the
    whole sequence of each of the ``samples`` paths at every later patch. A
    token costs 2 x its activated parameters (input projection, attention
    projections, top-2 of the experts, head), a sequence 4 S^2 d per layer
    of attention scores.
    """
    d, f, layers = config["d_model"], config["d_ff"], config["num_layers"]
    top_k = config.get("num_experts_per_token", 2)
    head_outputs = 11 * PATCH  # 4 mixture weights + 7 component parameters
    per_layer = 4 * d * d + top_k * 3 * d * f
    activated = 2 * PATCH * d + d * d + layers * per_layer + d * head_outputs
    seq = -(-context // PATCH) + -(-horizon // PATCH)
    steps = -(-horizon // PATCH)
    sequences = 1 + samples * (steps - 1)
    per_sequence = seq * 2 * activated + layers * 4 * seq * seq * d
    return float(series * sequences * per_sequence)


def ensure_checkpoint(folder: Path, model: str, seed: int) -> dict[str, Any]:
    """Write the seeded random checkpoint once; return its config."""
    import torch

    from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel

    config = MoiraiMoEConfig(**MODELS[model])
    if not (folder / "model.safetensors").is_file():
        logger.info(
            "writing the %s random checkpoint (seed %d) to %s", model, seed, folder
        )
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = MoiraiMoEModel(config)
        network.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another run wrote it meanwhile
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    params = {
        "d_model": config.d_model,
        "d_ff": config.d_ff,
        "num_layers": config.num_layers,
        "num_experts": config.num_experts,
        "num_experts_per_token": config.num_experts_per_token,
    }
    params["parameters"] = int(
        sum(p.numel() for p in MoiraiMoEModel(config).parameters())
    )
    return params


def check_variant(kwargs: dict[str, Any]) -> str | None:
    """Return why the forecaster rejects ``kwargs`` (tiny bundled model), or None."""
    import pandas as pd

    from moirai_moe_sk import MoiraiMoEForecaster

    y = pd.Series(np.sin(np.arange(64.0)) + 5.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # sktime's remember_data
            MoiraiMoEForecaster(
                checkpoint="moirai-moe-sk-tiny", num_samples=4, random_state=0, **kwargs
            ).fit(y, fh=list(range(1, 21))).predict_quantiles(alpha=[0.5])
    except (TypeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _python_for(impl: str, ref_python: str | None) -> str:
    if impl != REFERENCE:
        return sys.executable
    if not ref_python:
        msg = (
            "the uni2ts implementation needs the reference venv's python: "
            "--ref-python or $MOIRAI_REF_PYTHON"
        )
        raise SystemExit(msg)
    return ref_python


def run_worker(
    impl: str, spec: dict[str, Any], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its JSON result."""
    tag = f"{spec['workload']}-{impl}-{spec['label']}"
    spec_path = workdir / f"{tag}.json"
    spec_path.write_text(json.dumps(spec))
    kind = REFERENCE if impl == REFERENCE else "ours"
    cmd = [
        _python_for(impl, args.ref_python),
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--spec",
        str(spec_path),
    ]
    threads = str(args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
    }
    env.pop("PYTHONPATH", None)  # the two venvs must not see each other's packages
    load = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=args.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        proc = subprocess.CompletedProcess(
            cmd,
            -1,
            "",
            f"{(err.stderr or b'')[-2000:]!r}\ntimed out after {err.timeout} s",
        )
    wall = time.perf_counter() - start
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    record: dict[str, Any] = {
        "workload": spec["workload"],
        "impl": impl,
        "label": spec["label"],
        "seed": spec["seed"],
        "n_series": spec["n_series"],
        "count_flops": spec["count_flops"],
        "load_average_1min_before": load,
        "process_wall_s": wall,
    }
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        last = [x for x in tail.splitlines() if x.strip()] or ["no output"]
        record["error"] = f"exit {proc.returncode}: {last[-1]}"
        record["stderr_tail"] = tail
        logger.error("%s failed (exit %d):\n%s", tag, proc.returncode, tail)
        return record
    record.update(json.loads(lines[-1][len(RESULT_PREFIX) :]))
    if "skipped" in record:
        logger.warning("%s skipped: %s", tag, record["skipped"])
    elif spec["count_flops"]:
        logger.info("%s: %.3g FLOP", tag, record["flops"])
    else:
        logger.info(
            "%s: %.2f s (load %.1f s, peak RSS %.0f MB)",
            tag,
            record["time_s"],
            record["load_s"],
            record["peak_rss_mb"],
        )
    return record


def _spec(
    workload: Workload,
    impl: str,
    n_series: int,
    data: Path,
    args: argparse.Namespace,
    checkpoint: Path,
    seed: int,
    label: str,
    count_flops: bool,
    quantiles_out: Path | None,
) -> dict[str, Any]:
    ours = impl != REFERENCE
    return {
        "workload": workload.name,
        "impl": impl,
        "label": label,
        "checkpoint": str(checkpoint),
        "data": str(data),
        "panel": workload.n_series > 1,
        "n_series": n_series,
        "freq": workload.freq,
        "start": workload.start,
        "context_length": workload.context_length,
        "horizon": workload.horizon,
        "num_samples": workload.num_samples,
        "seed": seed,
        "threads": args.threads,
        "inner": 1 if count_flops else workload.inner,
        "count_flops": count_flops,
        "batch_size": args.ours_batch_size if ours else args.ref_batch_size,
        "kwargs": VARIANTS[impl.removeprefix("ours-")] if ours else {},
        "quantiles_out": str(quantiles_out) if quantiles_out else None,
    }


def _context_scale(series: list[np.ndarray], context: int) -> np.ndarray:
    scale = np.array([np.std(s[-context:], ddof=1) for s in series])
    return np.where(scale > 0, scale, 1.0)


def quantile_gap(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Compare quantiles at levels 0.1/0.5/0.9, ``|a - b| / scale``.

    Returns the maximum and mean over series, steps and levels, and the share
    of entries below ``EQUAL`` (equal up to float32 rounding).
    """
    rows = [QUANTILES.index(q) for q in CHECK_LEVELS]
    gap = np.abs(a[:, rows] - b[:, rows]) / scale[:, None, None]
    return {
        "max": float(gap.max()),
        "mean": float(gap.mean()),
        "share_equal": float(np.mean(gap < EQUAL)),
    }


def accuracy(
    workload: str, impls: list[str], qdir: Path, scale: np.ndarray
) -> dict[str, Any]:
    def load(impl: str, rep: int) -> np.ndarray | None:
        path = qdir / f"{workload}-{impl}-rep{rep}.npy"
        return np.load(path) if path.is_file() else None

    ref0, ref1 = load(REFERENCE, 0), load(REFERENCE, 1)
    out: dict[str, Any] = {}
    if ref0 is not None and ref1 is not None:
        out["noise_floor"] = quantile_gap(ref0, ref1, scale)
    for impl in impls:
        ours = load(impl, 0)
        if impl == REFERENCE or ours is None:
            continue
        entry = {}
        if ref0 is not None:
            entry["same_seed"] = quantile_gap(ours, ref0, scale)
        if ref1 is not None:
            entry["other_seed"] = quantile_gap(ours, ref1, scale)
        if entry:
            out[impl] = entry
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(
    records: list[dict[str, Any]],
    workloads: list[Workload],
    impls: list[str],
    args: argparse.Namespace,
    model: dict[str, Any],
    skipped: dict[str, str],
    acc: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per (workload, implementation): medians over repetitions."""
    rows = []
    for workload in workloads:
        n = workload.series_count(args.scale)
        analytic = reference_flops(
            model, workload.context_length, workload.horizon, workload.num_samples, n
        )
        ref_time = None
        for impl in impls:
            timed = [
                r
                for r in records
                if r["workload"] == workload.name
                and r["impl"] == impl
                and not r["count_flops"]
                and "time_s" in r
            ]
            flop_runs = [
                r
                for r in records
                if r["workload"] == workload.name
                and r["impl"] == impl
                and r["count_flops"]
                and "flops" in r
            ]
            mine_all = [
                r
                for r in records
                if r["workload"] == workload.name and r["impl"] == impl
            ]
            errors = [r["error"] for r in mine_all if "error" in r]
            worker_skips = [r["skipped"] for r in mine_all if "skipped" in r]
            kwargs = VARIANTS.get(impl.removeprefix("ours-"), {})
            bf16 = impl != REFERENCE and "bf" in str(kwargs.get("dtype", ""))
            time_s = _median([r["time_s"] for r in timed])
            if impl == REFERENCE:
                ref_time = time_s
            flops = None
            if flop_runs:
                counted = flop_runs[0]
                flops = counted["flops"] * n / counted["n_series"]
            peak = args.peak_bf16 if bf16 else args.peak_fp32
            rate = flops / time_s if flops and time_s else None
            check = acc.get(workload.name, {})
            mine = check.get(impl, {})
            noise = check.get("noise_floor", {})
            if impl in skipped or worker_skips:
                status = f"skipped: {skipped.get(impl) or worker_skips[0]}"
            elif errors:
                status = f"error: {errors[0]}"
            else:
                status = "ok"
            rows.append(
                {
                    "workload": workload.name,
                    "impl": impl,
                    "scale": args.scale if workload.scaled else 1.0,
                    "series": n,
                    "context": workload.context_length,
                    "horizon": workload.horizon,
                    "samples": workload.num_samples,
                    "reps": len(timed),
                    "time_s": time_s,
                    "time_min_s": min((r["time_s"] for r in timed), default=None),
                    "time_max_s": max((r["time_s"] for r in timed), default=None),
                    "cold_s": _median([r["cold_s"] for r in timed]),
                    "series_per_s": n / time_s if time_s else None,
                    "speedup": ref_time / time_s if ref_time and time_s else None,
                    "load_s": _median([r["load_s"] for r in timed]),
                    "peak_rss_mb": _median([r["peak_rss_mb"] for r in timed]),
                    "peak_run_mb": _median(
                        [r["peak_run_mb"] for r in timed if r.get("peak_run_mb")]
                    ),
                    "rss_before_run_mb": _median(
                        [
                            r["rss_before_run_mb"]
                            for r in timed
                            if r.get("rss_before_run_mb")
                        ]
                    ),
                    "gflop": flops / 1e9 if flops else None,
                    "gflop_analytic_ref": analytic / 1e9 if impl == REFERENCE else None,
                    "gflop_per_s": rate / 1e9 if rate else None,
                    "peak_gflop_per_s": peak / 1e9,
                    "fraction_of_peak": rate / peak if rate else None,
                    "err_same_seed_max": mine.get("same_seed", {}).get("max"),
                    "same_seed_share_equal": mine.get("same_seed", {}).get(
                        "share_equal"
                    ),
                    "err_other_seed_max": mine.get("other_seed", {}).get("max"),
                    "err_other_seed_mean": mine.get("other_seed", {}).get("mean"),
                    "noise_floor_max": noise.get("max"),
                    "noise_floor_mean": noise.get("mean"),
                    "batch_size": (
                        args.ref_batch_size
                        if impl == REFERENCE
                        else args.ours_batch_size
                    ),
                    "kwargs": json.dumps(kwargs) if impl != REFERENCE else "",
                    "status": status,
                }
            )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(
    rows: list[dict[str, Any]], meta: dict[str, Any], workloads: list[Workload]
) -> str:
    lines = [
        "# Inference speed: moirai_moe_sk vs uni2ts 2.0.0",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}.",
        "",
        (
            f"- Machine: {meta['cpu']}, {meta['cores']} cores; torch threads "
            f"{meta['threads']} in both venvs; other processes used at most "
            f"{_percent(meta['others_cpu_max'])} of the cores during a timed "
            "region (`/proc/stat` minus the process's own CPU time)."
        ),
        *(
            [
                (
                    "- **Warning: other processes competed for the cores (more than "
                    f"{_percent(BUSY_WARNING)} of them during some timed region). "
                    "Multi-threaded runs made of many small kernels (uni2ts' "
                    "per-expert loop above all) then slow down by up to tens of "
                    "times: rerun on a quiet machine, or with --threads 1.**"
                )
            ]
            if (meta["others_cpu_max"] or 0) > BUSY_WARNING
            else []
        ),
        (
            f"- Weights: random, seed {meta['checkpoint_seed']}, "
            f"`{meta['model_name']}` shapes ({meta['model']['parameters']:,} "
            "parameters, d_model "
            f"{meta['model']['d_model']}, {meta['model']['num_layers']} layers, "
            f"{meta['model']['num_experts']} experts), one checkpoint read by both."
        ),
        (
            f"- Scale {meta['scale']} (share of W1's and W2's series), {meta['reps']} "
            f"repetition(s), seeds {meta['seeds']}; medians over repetitions; each "
            "measurement in a fresh process; implementations alternate, rotated each "
            "repetition."
        ),
        (
            f"- uni2ts: GluonTS predictor, batch_size {meta['ref_batch_size']}; ours: "
            f"MoiraiMoEForecaster, batch_size {meta['ours_batch_size']} "
            "(None: automatic)."
        ),
        "",
        "Workloads: "
        + "; ".join(
            f"**{w.name}** {w.description}, context {w.context_length}, horizon "
            f"{w.horizon}, {w.num_samples} samples"
            for w in workloads
        )
        + ".",
        "",
        (
            "| workload | impl | series | time (s) | series/s | speed-up | load (s) "
            "| peak RSS (MB) | run peak (MB) | GFLOP | GFLOP/s | of peak | status |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["workload"],
            r["impl"],
            r["series"],
            _fmt(r["time_s"]),
            _fmt(r["series_per_s"]),
            f"{_fmt(r['speedup'])}x" if r["speedup"] else "n/a",
            _fmt(r["load_s"]),
            _fmt(r["peak_rss_mb"]),
            _fmt(r["peak_run_mb"]),
            _fmt(r["gflop"]),
            _fmt(r["gflop_per_s"]),
            (
                f"{100 * r['fraction_of_peak']:.1f}% of {r['peak_gflop_per_s']:.0f}"
                if r["fraction_of_peak"]
                else "n/a"
            ),
            r["status"].replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "W3's time is the warm latency (median of 5 calls after a first, cold one "
        "in the same process); its cold first call: "
        + ", ".join(
            f"{r['impl']} {_fmt(r['cold_s'])} s"
            for r in rows
            if r["workload"] == "W3" and r["cold_s"] is not None
        )
        + "."
        if any(r["workload"] == "W3" for r in rows)
        else "",
        "",
        "## Accuracy against the reference",
        "",
        (
            "|q_impl - q_uni2ts| / std(context) at quantiles 0.1, 0.5 and 0.9, maximum "
            "(mean) over series, steps and levels. *Same seed*: both at repetition 1's "
            "seed; *other seed*: ours at repetition 1's seed against uni2ts at "
            "repetition 2's; *noise floor*: uni2ts against itself with those two "
            "seeds. "
            "Ours matches when its other-seed gap is of the noise floor's size. "
            f"*equal*: the share of same-seed entries with a gap below {EQUAL:g}: "
            "the same sample paths up to float32 rounding (the random streams "
            "coincide when both decode the same tokens in the same batches: not "
            "with left padding, which ours drops, nor with other batch "
            "compositions; one path that flips on a near-tie is then "
            "carried through the later patches)."
        ),
        "",
        (
            "| workload | impl | same seed, max | same seed, equal "
            "| other seed, max (mean) | noise floor, max (mean) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["impl"] == REFERENCE:
            continue
        other = (
            f"{_fmt(r['err_other_seed_max'])} ({_fmt(r['err_other_seed_mean'])})"
            if r["err_other_seed_max"] is not None
            else "n/a"
        )
        noise = (
            f"{_fmt(r['noise_floor_max'])} ({_fmt(r['noise_floor_mean'])})"
            if r["noise_floor_max"] is not None
            else "n/a (needs --reps 2)"
        )
        lines.append(
            f"| {r['workload']} | {r['impl']} | {_fmt(r['err_same_seed_max'])} "
            f"| {_percent(r['same_seed_share_equal'])} | {other} | {noise} |"
        )
    analytic = [
        f"{r['workload']} {_fmt(r['gflop_analytic_ref'])} (counted {_fmt(r['gflop'])})"
        for r in rows
        if r["impl"] == REFERENCE and r["gflop_analytic_ref"] is not None
    ]
    lines += [
        "",
        "## How the columns are computed",
        "",
        (
            "- *time*: inside the process, data conversion (pandas to the model's "
            "inputs) + predict + quantiles; not interpreter start-up nor weight "
            "loading (*load*: the weights and a one-patch forecast of one short "
            "series). *speed-up*: uni2ts' median time / this row's. "
            "*series/s* = series / time, comparable across scales."
        ),
        (
            "- *peak RSS*: the process's peak resident memory (`ru_maxrss`: libraries, "
            "weight loading, data, the run); *run peak*: the peak during the timed "
            "region alone (the peak is reset with `/proc/self/clear_refs` before it), "
            "which includes the resident weights."
        ),
        (
            "- *GFLOP*: counted with `FlopCounterMode` in a separate untimed process "
            f"on the first {meta['flop_series']} series of the workload and scaled "
            "to the "
            "series timed. *of peak*: GFLOP/s divided by the machine's bound "
            f"({meta['peak_fp32'] / 1e9:.0f} GFLOP/s fp32, "
            f"{meta['peak_bf16'] / 1e9:.0f} bf16 for bf16 rows)."
        ),
        "- Analytic GFLOP of uni2ts' decoding (tokens x 2 x activated parameters + "
        "attention 4 S^2 d per layer): " + ("; ".join(analytic) or "n/a") + ".",
        "",
    ]
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS)
    )
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument(
        "--scale", type=float, default=1.0, help="share of W1/W2's series"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed of repetition 1"
    )
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--checkpoint-seed", type=int, default=0)
    parser.add_argument("--model", choices=list(MODELS), default="small")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="folder of the random checkpoint (default: under the system temp dir)",
    )
    parser.add_argument(
        "--ref-python",
        default=os.environ.get("MOIRAI_REF_PYTHON"),
        help="python of the uni2ts venv (default $MOIRAI_REF_PYTHON)",
    )
    parser.add_argument("--ref-batch-size", type=int, default=32)
    parser.add_argument("--ours-batch-size", type=int, default=None)
    parser.add_argument("--flop-series", type=int, default=8)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--peak-fp32", type=float, default=200e9)
    parser.add_argument("--peak-bf16", type=float, default=900e9)
    parser.add_argument(
        "--timeout", type=float, default=4 * 3600, help="seconds per process"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="inference", help="output file stem")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the data, specs and quantiles (series, level, step) .npy here "
        "(default: a temporary folder, deleted)",
    )
    parser.add_argument("--worker", choices=[REFERENCE, "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.reps < 1 or args.threads < 1 or args.flop_series < 1:
        parser.error("--reps, --threads and --flop-series must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from moirai_moe_sk import __version__

    impls = [i for i in IMPLS if i in args.impls]  # canonical order
    workloads = [WORKLOADS[w] for w in args.workloads]
    if REFERENCE in impls:
        _python_for(REFERENCE, args.ref_python)  # fail early without it
    checkpoint = args.checkpoint_dir or (
        Path(tempfile.gettempdir())
        / "moirai_moe_sk_bench"
        / f"{args.model}-random-seed{args.checkpoint_seed}-v{__version__}"
    )
    model = ensure_checkpoint(checkpoint, args.model, args.checkpoint_seed)

    skipped = {}
    for impl in impls:
        kwargs = VARIANTS.get(impl.removeprefix("ours-"), {})
        if impl != REFERENCE and kwargs:
            reason = check_variant(kwargs)
            if reason:
                skipped[impl] = reason
                logger.warning(
                    "%s is skipped: the forecaster rejects it (%s)", impl, reason
                )
    active = [i for i in impls if i not in skipped]

    records: list[dict[str, Any]] = []
    acc: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="moirai_inference_")
            )
            workdir = Path(tmp)
        for workload in workloads:
            series = make_series(workload, args.data_seed)
            n = workload.series_count(args.scale)
            data = workdir / f"{workload.name}.npz"
            save_data(data, series[:n])
            for rep in range(args.reps):
                shift = rep % len(active) if active else 0
                order = active[shift:] + active[:shift]
                for impl in order:
                    qfile = workdir / f"{workload.name}-{impl}-rep{rep}.npy"
                    qfile.unlink(missing_ok=True)  # a kept --workdir's old run
                    spec = _spec(
                        workload, impl, n, data, args, checkpoint,
                        args.seed + rep, f"rep{rep}", False, qfile,
                    )  # fmt: skip
                    records.append(run_worker(impl, spec, workdir, args))
            if not args.no_flops:
                k = min(n, args.flop_series)
                flop_data = workdir / f"{workload.name}-flops.npz"
                save_data(flop_data, series[:k])
                for impl in active:
                    spec = _spec(
                        workload, impl, k, flop_data, args, checkpoint,
                        args.seed, "flops", True, None,
                    )  # fmt: skip
                    records.append(run_worker(impl, spec, workdir, args))
            scale = _context_scale(series[:n], workload.context_length)
            acc[workload.name] = accuracy(workload.name, active, workdir, scale)

    rows = summarise(records, workloads, impls, args, model, skipped, acc)
    busy = [r["others_cpu_share"] for r in records if "others_cpu_share" in r]
    meta = {
        "command": "python benchmarks/inference.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_average_before": round(load_before, 2),
        "others_cpu_max": max(busy, default=None),
        "checkpoint_seed": args.checkpoint_seed,
        "model_name": args.model,
        "model": model,
        "scale": args.scale,
        "reps": args.reps,
        "seeds": [args.seed + r for r in range(args.reps)],
        "ref_batch_size": args.ref_batch_size,
        "ours_batch_size": args.ours_batch_size,
        "flop_series": args.flop_series,
        "peak_fp32": args.peak_fp32,
        "peak_bf16": args.peak_bf16,
        "python": platform.python_version(),
        "moirai_moe_sk": __version__,
        "variants": VARIANTS,
        "workloads": {w.name: asdict(w) for w in workloads},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / args.name
    text = markdown(rows, meta, workloads)
    stem.with_suffix(".md").write_text(text)
    with stem.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    raw = {
        "meta": meta,
        "skipped": skipped,
        "accuracy": acc,
        "rows": rows,
        "runs": records,
    }
    stem.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(text)
    failed = [r for r in records if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
