"""sktime data containers <-> the arrays that :func:`moirai_moe_sk.model.forecast` takes.

This is the only module that knows pandas and sktime's mtypes. It turns the
inner mtypes of :class:`~moirai_moe_sk.MoiraiMoEForecaster` (``pd.Series``,
``pd.DataFrame``, ``pd-multiindex`` panels and ``pd_multiindex_hier``
hierarchies) into per-series arrays, builds left-padded batches with observed
masks and covariates, and formats sample paths back into the exact frames
sktime expects from ``predict``, ``predict_quantiles``, ``predict_interval``,
``predict_var`` and ``predict_proba``.

Conventions (they follow uni2ts' GluonTS data path):

* **Missing values.** A univariate series has each NaN replaced by the mean of
  all earlier values (GluonTS ``CausalMeanValueImputation``, which first
  forward-fills to compute those means, and back-fills a leading NaN); a
  multivariate series has NaN replaced by 0. In both cases the step is marked
  unobserved, so the model ignores its value. Covariate NaN become 0 and
  unobserved.
* **Context.** Each series contributes its last ``context_length`` steps; the
  batch is left-padded with zeros (marked padding) to its longest member.
* **Regular grid.** Gaps in a series' time index (missing time stamps) are
  filled with NaN, i.e. treated as missing values, when the index has a known
  step (integer, ``PeriodIndex``, or ``DatetimeIndex`` with a frequency).
* **Horizons.** A relative ``fh`` counts from each series' own last time
  stamp (as sktime's per-series forecasters do for panels whose series end at
  different times); an absolute ``fh`` names the same time stamps for all
  series.
* **Quantiles** are order statistics of the sample paths, exactly as GluonTS'
  ``SampleForecast.quantile``: ``sorted[round((N - 1) * q)]`` (NumPy rounding,
  half to even), so they are monotone in ``q`` and intervals are nested.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_CONTEXT",
    "SeriesStore",
    "causal_mean_impute",
    "check_values",
    "covariate_arrays",
    "format_point",
    "format_quantiles",
    "format_samples",
    "format_var",
    "horizon_steps",
    "interval_alpha",
    "left_pad",
    "point_values",
    "resolve_context_length",
    "sample_quantiles",
    "target_arrays",
    "training_arrays",
    "var_values",
]

#: context length used when ``context_length=None``: the longest series, capped
#: here. 1024 steps = 64 patches (uni2ts' examples use about 1000); longer
#: contexts cost quadratically more attention and rarely help.
DEFAULT_MAX_CONTEXT = 1024

#: the largest value the model's float32 arithmetic can hold
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: filling the gaps of an index may at most multiply its length by this; a
#: larger factor is almost always a wrong index (epoch seconds, a typo)
MAX_GAP_FILL_FACTOR = 10

Key = tuple[Hashable, ...]


# ------------------------------------------------------------------ checks
def check_values(frame: pd.DataFrame, what: str, *, allow_all_nan: bool) -> None:
    """Check that ``frame`` holds finite-or-NaN numbers.

    Parameters
    ----------
    frame : pd.DataFrame
        One series (or a whole panel) as a frame.
    what : str
        Its name in messages, e.g. ``"y"`` or ``"X"``.
    allow_all_nan : bool
        Whether a column may hold no observed value at all.

    Raises
    ------
    TypeError
        If a column is not numeric (strings, categories, dates).
    ValueError
        If a value is infinite, or a column is all NaN where that is not allowed.
    """
    bad = [
        f"{col!r} ({dtype})"
        for col, dtype in frame.dtypes.items()
        if not (
            pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        )
        or pd.api.types.is_complex_dtype(dtype)
    ]
    if bad:
        msg = (
            f"{what} must hold real numbers only; non-numeric columns: "
            f"{', '.join(bad)}. Encode categories as numbers (e.g. one-hot) "
            "or drop these columns"
        )
        raise TypeError(msg)
    values = _as_float(frame)
    if np.isinf(values).any():
        cols = [
            str(c)
            for c, inf in zip(frame.columns, np.isinf(values).any(0), strict=True)
            if inf
        ]
        msg = (
            f"{what} holds infinite values in column(s) {', '.join(cols)}; replace "
            "them by NaN (treated as missing) or by finite numbers"
        )
        raise ValueError(msg)
    with np.errstate(invalid="ignore"):
        too_large = np.abs(values) > FLOAT32_MAX
    if too_large.any():
        col = frame.columns[int(np.nonzero(too_large.any(0))[0][0])]
        largest = float(np.nanmax(np.abs(values)))
        msg = (
            f"{what} holds values up to {largest:.3g} in absolute value (column "
            f"{col!r}); the model computes in float32, whose largest number is "
            f"{FLOAT32_MAX:.3g}. Divide the data by a constant (forecasts scale "
            "with it) and multiply the forecasts back"
        )
        raise ValueError(msg)
    if not allow_all_nan and len(values):
        empty = [
            str(c)
            for c, nan in zip(frame.columns, np.isnan(values).all(0), strict=True)
            if nan
        ]
        if empty:
            msg = (
                f"{what} has no observed value (all NaN) in column(s) "
                f"{', '.join(empty)}; drop that series or give it observations"
            )
            raise ValueError(msg)


def _as_float(frame: pd.DataFrame) -> np.ndarray:
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


# ------------------------------------------------------------ index helpers
def _index_kind(index: pd.Index) -> str:
    if isinstance(index, pd.PeriodIndex):
        return "period"
    if isinstance(index, pd.DatetimeIndex):
        return "datetime"
    if pd.api.types.is_integer_dtype(index.dtype):
        return "int"
    return "other"


def _where(key: Key) -> str:
    return f" of instance {key}" if key else ""


def _int_step(index: pd.Index) -> int | None:
    """Return the step of an integer index: the gcd of its gaps (None below 2)."""
    if len(index) < 2:
        return None
    gaps = np.diff(np.asarray(index, dtype=np.int64))
    return int(np.gcd.reduce(gaps)) if (gaps > 0).all() else None


def _check_stamps(index: pd.Index, what: str) -> None:
    """Refuse duplicated or unsorted time stamps, naming the first offender."""
    if index.has_duplicates:
        stamp = index[index.duplicated()][0]
        msg = (
            f"{what} has the time stamp {stamp} more than once; each time stamp "
            "may appear once per series (aggregate or drop the duplicates, e.g. "
            "y.groupby(level=-1).mean() for one series)"
        )
        raise ValueError(msg)
    if not index.is_monotonic_increasing:
        msg = f"{what} has time stamps out of order; sort it (y.sort_index())"
        raise ValueError(msg)


def _regular_grid(index: pd.Index, freq: Any, step: int) -> pd.Index | None:
    """Return the complete regular index from ``index[0]`` to ``index[-1]``, if known."""
    if len(index) < 2:
        return None
    kind = _index_kind(index)
    if kind == "int":
        return pd.Index(np.arange(index[0], index[-1] + 1, step), dtype=index.dtype)
    if kind == "period":
        return pd.period_range(index[0], index[-1], freq=index.freq)
    if kind == "datetime" and freq is not None:
        return pd.date_range(index[0], index[-1], freq=freq)
    return None


def _grid_length(index: pd.Index, freq: Any, step: int) -> int | None:
    """Length of the regular grid over ``index``, computed without building it."""
    if len(index) < 2:
        return None
    kind = _index_kind(index)
    if kind == "int":
        return (int(index[-1]) - int(index[0])) // step + 1
    if kind == "period":
        n = index.freq.n if index.freq is not None else 1
        return (index[-1].ordinal - index[0].ordinal) // n + 1
    if kind == "datetime" and freq is not None:
        offset = pd.tseries.frequencies.to_offset(freq)
        if isinstance(offset, pd.offsets.Tick):
            return int((index[-1] - index[0]) // pd.Timedelta(offset)) + 1
    return None


def _regularise(frame: pd.DataFrame, freq: Any, step: int, what: str) -> pd.DataFrame:
    """Insert NaN rows for missing time stamps of a regular index.

    Raises
    ------
    ValueError
        If a time stamp is off the grid, or filling the gaps would make most
        of the series missing (its own spacing is coarser than the grid's).
    """
    grid_name = _grid_name(freq, step)

    def swamped(length: int, why: str) -> ValueError:
        return ValueError(
            f"{what} has {len(frame)} time stamps from {frame.index[0]} to "
            f"{frame.index[-1]}, which on a regular grid ({grid_name}) are {length} "
            f"steps: {1 - len(frame) / length:.0%} would be missing{why}. Give the "
            "index its true frequency or step (a panel's series of different "
            "frequencies go into separate fits), or drop far-away stamps; if the "
            "gaps are real, insert them as NaN rows yourself (e.g. y.asfreq(...))"
        )

    # checked on the length first, so a wrong index never allocates its grid
    length = _grid_length(frame.index, freq, step)
    if length is not None and length > MAX_GAP_FILL_FACTOR * max(len(frame), 100):
        raise swamped(length, "")
    grid = _regular_grid(frame.index, freq, step)
    if grid is None or len(grid) == len(frame.index):
        return frame
    positions = grid.get_indexer(frame.index)
    if (positions < 0).any():
        stamp = frame.index[positions < 0][0]
        msg = (
            f"{what} has the time stamp {stamp}, which is not on its grid "
            f"({grid_name} from {frame.index[0]}); give every series a regular index"
        )
        raise ValueError(msg)
    # every stamp on a coarser grid (weekly data on a daily grid): wrong spacing
    gaps = np.diff(positions)
    coarser = int(np.gcd.reduce(gaps)) if len(gaps) >= 2 else 1
    if coarser >= 2:
        raise swamped(len(grid), f" (every gap a multiple of {coarser} steps)")
    logger.debug("filling %d missing time stamps with NaN", len(grid) - len(frame))
    out = frame.reindex(grid)
    out.index.name = frame.index.name
    return out


def _freq_name(freq: Any) -> str:
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        return pd.tseries.frequencies.to_offset(freq).freqstr
    return str(freq)


def _grid_name(freq: Any, step: int) -> str:
    """``"frequency 'D'"`` or ``"step 2"``, for messages."""
    return f"frequency {_freq_name(freq)!r}" if freq is not None else f"step {step}"


def _shift(
    last: Any, steps: np.ndarray, freq: Any, template: pd.Index, step: int = 1
) -> pd.Index:
    """Time stamps ``steps`` (positive ints, in grid steps) after ``last``."""
    kind = _index_kind(template)
    if kind == "int":
        return pd.Index(np.asarray(last) + step * steps, dtype=template.dtype)
    if kind == "period":
        return pd.PeriodIndex([last + int(s) for s in steps], freq=template.freq)
    if kind == "datetime":
        if freq is None:
            msg = (
                "cannot place forecast time stamps after a DatetimeIndex without a "
                "frequency; give y a regular index with a frequency (e.g. "
                "y.asfreq('D'))"
            )
            raise ValueError(msg)
        offset = pd.tseries.frequencies.to_offset(freq)
        return pd.DatetimeIndex([last + int(s) * offset for s in steps], tz=template.tz)
    msg = f"unsupported time index type {type(template).__name__}"
    raise TypeError(msg)


def _off_grid(times: Any, last: Any, grid_name: str, hint: str = "") -> ValueError:
    return ValueError(
        f"fh names time stamps {list(times)} that are not on the grid of y "
        f"({grid_name} after its last time stamp {last}); give fh on that grid{hint}"
    )


def _steps_after(
    last: Any, times: pd.Index, freq: Any, template: pd.Index, step: int = 1
) -> np.ndarray:
    """Count the grid steps from ``last`` to each of ``times`` (all on the grid)."""
    kind = _index_kind(template)
    if kind == "int":
        units = np.asarray(times, dtype=np.int64) - int(last)
        if (units % step).any():
            hint = (
                f"; an integer fh counts index units (absolute = last + fh), so the "
                f"next steps of this index are fh={[step, 2 * step]}, ..."
            )
            raise _off_grid(
                pd.Index(times)[units % step != 0], last, _grid_name(None, step), hint
            )
        return units // step
    if kind == "period":
        n = template.freq.n if template.freq is not None else 1
        ordinals = np.asarray([t.ordinal for t in times], dtype=np.int64)
        return (ordinals - last.ordinal) // n
    if kind == "datetime":
        if freq is None:
            msg = "cannot count steps on a DatetimeIndex without a frequency"
            raise ValueError(msg)
        times = pd.DatetimeIndex(times)
        end = max(times.max(), last)
        grid = pd.date_range(last, end, freq=freq)
        pos = grid.get_indexer(times)
        if (pos < 0).any():
            raise _off_grid(times[pos < 0], last, _grid_name(freq, 1))
        return pos + (0 if len(grid) and grid[0] == last else 1)
    msg = f"unsupported time index type {type(template).__name__}"
    raise TypeError(msg)


# -------------------------------------------------------------------- store
def _infer_freq(
    time_index: pd.Index, frames: dict[Key, pd.DataFrame], what: str
) -> Any:
    """Frequency of a Period/DatetimeIndex: its own, else inferred per instance.

    Raises
    ------
    ValueError
        If two instances have different frequencies.
    """
    if isinstance(time_index, pd.PeriodIndex):
        return time_index.freq
    if not isinstance(time_index, pd.DatetimeIndex):
        return None
    if time_index.freq is not None:
        return time_index.freq
    found: tuple[Key, Any] | None = None
    for key, frame in frames.items():
        index = frame.index
        if len(index) <= 2:
            continue
        freq = None
        with contextlib.suppress(TypeError, ValueError):
            freq = pd.infer_freq(index)
        if freq is None:
            continue
        if found is None:
            found = (key, freq)
        elif pd.tseries.frequencies.to_offset(freq) != (
            pd.tseries.frequencies.to_offset(found[1])
        ):
            msg = (
                f"{what} mixes frequencies: instance {found[0]} is {found[1]!r} "
                f"and instance {key} is {freq!r}; forecast series of different "
                "frequencies in separate fits"
            )
            raise ValueError(msg)
    return None if found is None else found[1]


def _common_step(frames: dict[Key, pd.DataFrame], what: str) -> int:
    """Return the step shared by the instances of an integer index (1 if unknown)."""
    found: tuple[Key, int] | None = None
    for key, frame in frames.items():
        if _index_kind(frame.index) != "int":
            return 1
        step = _int_step(frame.index)
        if step is None:
            continue
        if found is None:
            found = (key, step)
        elif step % found[1] and found[1] % step:
            msg = (
                f"{what} mixes index steps: instance {found[0]} advances by "
                f"{found[1]} and instance {key} by {step}; forecast them in "
                "separate fits"
            )
            raise ValueError(msg)
        else:
            found = (found[0], min(found[1], step))
    return 1 if found is None else found[1]


def _split(
    data: pd.Series | pd.DataFrame,
) -> tuple[list[Key], dict[Key, pd.DataFrame], list]:
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    if not isinstance(frame.index, pd.MultiIndex):
        return [()], {(): frame}, []
    levels = list(range(frame.index.nlevels - 1))
    names = list(frame.index.names[:-1])
    keys: list[Key] = []
    frames: dict[Key, pd.DataFrame] = {}
    # a one-level list warns on pandas 2.x (FutureWarning): pass the level itself
    by = levels[0] if len(levels) == 1 else levels
    for key, part in frame.groupby(level=by, sort=False):
        tkey = key if isinstance(key, tuple) else (key,)
        keys.append(tkey)
        frames[tkey] = part.droplevel(levels)
    return keys, frames, names


@dataclass
class SeriesStore:
    """Series of one sktime container, split per instance, on a regular grid.

    Attributes
    ----------
    keys : list of tuple
        Instance keys in order of appearance; ``[()]`` for a single series.
    frames : dict
        ``key -> pd.DataFrame`` indexed by time only.
    columns : pd.Index
        The variables (columns) shared by all instances.
    instance_names : list
        Names of the instance levels (empty for a single series).
    time_name : Hashable
        Name of the time level.
    series_name : Hashable
        Name of the ``pd.Series`` this came from (``None`` otherwise).
    is_series : bool
        Whether the data was a ``pd.Series``.
    freq : object
        Frequency of a ``DatetimeIndex``/``PeriodIndex``, else ``None``.
    step : int
        Spacing of an integer index (the gcd of its gaps; 1 otherwise). An
        integer ``fh`` is counted in index units, as sktime does: with step 2,
        ``fh=[2, 4]`` are the next two steps and ``fh=1`` is refused.
    """

    keys: list[Key]
    frames: dict[Key, pd.DataFrame]
    columns: pd.Index
    instance_names: list = field(default_factory=list)
    time_name: Hashable = None
    series_name: Hashable = None
    is_series: bool = False
    freq: Any = None
    step: int = 1

    @classmethod
    def from_sktime(
        cls,
        data: pd.Series | pd.DataFrame,
        what: str,
        *,
        freq: Any = None,
        step: int | None = None,
    ) -> SeriesStore:
        """Split ``data`` (a Series, DataFrame, panel or hierarchy) per instance.

        Parameters
        ----------
        data : pd.Series or pd.DataFrame
            sktime container in one of the inner mtypes.
        what : str
            ``"y"`` (targets: every column needs an observation per instance)
            or ``"X"`` (covariates).
        freq : object, optional
            Frequency of a ``DatetimeIndex`` (sktime's cutoff knows it).
        step : int, optional
            Step of an integer index (else inferred from the data).

        Raises
        ------
        ValueError
            On duplicated or unsorted time stamps, instances of different
            frequencies or steps, stamps off the grid, or gaps that would make
            most of a series missing.
        """
        if not isinstance(data, pd.Series | pd.DataFrame):
            msg = f"{what} must be a pandas Series or DataFrame, got {type(data).__name__}"
            raise TypeError(msg)
        frame = data.to_frame() if isinstance(data, pd.Series) else data
        check_values(frame, what, allow_all_nan=True)
        keys, frames, names = _split(data)
        for key, part in frames.items():
            _check_stamps(part.index, f"{what}{_where(key)}")
        if freq is None:
            freq = _infer_freq(frame.index.get_level_values(-1), frames, what)
        if step is None:
            step = _common_step(frames, what)
        store = cls(
            keys=keys,
            frames={
                k: _regularise(v, freq, step, f"{what}{_where(k)}")
                for k, v in frames.items()
            },
            columns=frame.columns,
            instance_names=names,
            time_name=frame.index.names[-1],
            series_name=data.name if isinstance(data, pd.Series) else None,
            is_series=isinstance(data, pd.Series),
            freq=freq,
            step=step,
        )
        if what == "y":
            store.check_observed(what)
        return store

    def check_observed(self, what: str) -> None:
        """Raise ValueError if an instance has a variable without observations."""
        for key, frame in self.frames.items():
            where = f" of instance {key}" if key else ""
            check_values(frame, f"{what}{where}", allow_all_nan=False)

    def append(self, data: pd.Series | pd.DataFrame, what: str) -> SeriesStore:
        """Return a new store with ``data`` added; newer values win on overlaps."""
        new = SeriesStore.from_sktime(
            data, what="X" if what == "X" else "new y", freq=self.freq, step=self.step
        )
        keys = list(self.keys) + [k for k in new.keys if k not in self.frames]
        frames = dict(self.frames)
        for key, part in new.frames.items():
            part = part.reindex(columns=self.columns)
            if key in frames:
                both = pd.concat([frames[key], part])
                both = both[~both.index.duplicated(keep="last")].sort_index()
                frames[key] = _regularise(
                    both, self.freq, self.step, f"{what}{_where(key)}"
                )
            else:
                frames[key] = part
        store = SeriesStore(
            keys=keys,
            frames=frames,
            columns=self.columns,
            instance_names=self.instance_names,
            time_name=self.time_name,
            series_name=self.series_name,
            is_series=self.is_series,
            freq=self.freq,
            step=self.step,
        )
        if what == "y":
            store.check_observed("y")
        return store

    @property
    def num_variates(self) -> int:
        """Number of columns."""
        return len(self.columns)

    def last_times(self) -> list:
        """Last time stamp of each instance, in key order."""
        return [self.frames[k].index[-1] for k in self.keys]

    def longest(self) -> int:
        """Length of the longest instance."""
        return max(len(f) for f in self.frames.values())

    def to_sktime(self) -> pd.Series | pd.DataFrame:
        """Rebuild the (regularised) sktime container."""
        if not self.instance_names:
            frame = self.frames[()]
            if self.is_series:
                return frame.iloc[:, 0].rename(self.series_name)
            return frame
        parts = [self.frames[k] for k in self.keys]
        names = [*self.instance_names, self.time_name]
        return pd.concat(parts, keys=self.keys, names=names)


# ---------------------------------------------------------- target arrays
def causal_mean_impute(values: np.ndarray) -> np.ndarray:
    """GluonTS' ``CausalMeanValueImputation`` of a 1-d array with NaN.

    Each NaN becomes the mean of all earlier values, where earlier NaN count
    with their forward-filled value (a leading NaN takes the first observed
    value). The first entry takes the first observed value.

    Parameters
    ----------
    values : np.ndarray
        (time,) float values with NaN, at least one observed.

    Returns
    -------
    np.ndarray
        (time,) finite values.

    Examples
    --------
    >>> import numpy as np
    >>> causal_mean_impute(np.array([np.nan, 2.0, np.nan, 6.0, np.nan]))
    array([2., 2., 2., 6., 3.])
    """
    mask = np.isnan(values)
    if not mask.any():
        return values.copy()
    positions = np.where(~mask, np.arange(len(values)), 0)
    np.maximum.accumulate(positions, out=positions)
    filled = values[positions]
    first = values[np.flatnonzero(~mask)[0]]
    filled = np.where(np.isnan(filled), first, filled)  # leading NaN
    sums = np.concatenate(([0.0], np.cumsum(filled[:-1])))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / np.arange(len(values))
    out = np.where(mask, means, values)
    out[0] = filled[0]
    return out


def _impute(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time, variate) values -> finite values and observed mask."""
    observed = ~np.isnan(values)
    if values.shape[1] == 1 and not observed.all() and observed.any():
        filled = causal_mean_impute(values[:, 0])[:, None]
    else:
        filled = np.where(observed, values, 0.0)
    return filled, observed


def resolve_context_length(
    context_length: int | None,
    store: SeriesStore,
    recommended: int | None = None,
) -> int:
    """Return the context length.

    The given one; else the longest series, capped at the checkpoint's
    ``recommended`` context (its config's ``context_length``) or, when it
    states none, at :data:`DEFAULT_MAX_CONTEXT`.
    """
    if context_length is not None:
        return int(context_length)
    cap = DEFAULT_MAX_CONTEXT if recommended is None else int(recommended)
    return min(store.longest(), cap)


@dataclass(frozen=True)
class TargetBatch:
    """Left-padded targets of a batch of series.

    Attributes
    ----------
    target : np.ndarray
        (batch, time, variate) float32, finite.
    observed : np.ndarray
        (batch, time, variate) bool.
    is_pad : np.ndarray
        (batch, time) bool, True on left padding.
    times : list of pd.Index
        The context time stamps of each series (without padding).
    """

    target: np.ndarray
    observed: np.ndarray
    is_pad: np.ndarray
    times: list[pd.Index]


def left_pad(arrays: Sequence[np.ndarray], width: int, fill: Any = 0) -> np.ndarray:
    """Stack (time_i, ...) arrays into (batch, width, ...), padding on the left.

    Longer arrays keep their last ``width`` rows.
    """
    first = arrays[0]
    out = np.full((len(arrays), width, *first.shape[1:]), fill, dtype=first.dtype)
    for row, arr in enumerate(arrays):
        part = arr[-width:] if width else arr[:0]
        out[row, width - len(part) :] = part
    return out


def target_arrays(
    store: SeriesStore, keys: Sequence[Key], context_length: int
) -> TargetBatch:
    """Impute, truncate to the last ``context_length`` steps and left-pad.

    Imputation sees each whole series (as GluonTS imputes before windowing).
    """
    values, observed, times = [], [], []
    for key in keys:
        frame = store.frames[key]
        filled, obs = _impute(_as_float(frame))
        values.append(filled[-context_length:])
        observed.append(obs[-context_length:])
        times.append(frame.index[-context_length:])
    width = max(len(v) for v in values)
    target = left_pad(values, width, 0.0).astype(np.float32)
    obs = left_pad(observed, width, fill=False)
    is_pad = left_pad([np.zeros(len(v), dtype=bool) for v in values], width, fill=True)
    return TargetBatch(target=target, observed=obs, is_pad=is_pad, times=times)


def training_arrays(
    store: SeriesStore, x_store: SeriesStore | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Whole series as arrays for fine-tuning, imputed as for forecasting.

    Parameters
    ----------
    store : SeriesStore
        Targets.
    x_store : SeriesStore, optional
        Covariates; each instance's rows are aligned with its target's time
        stamps (missing rows and NaN become 0 and unobserved).

    Returns
    -------
    list of tuple
        Per instance, in key order: target values (time, variate) float32,
        their observed mask, and the covariate values and mask (or None).
    """
    out = []
    for key in store.keys:
        frame = store.frames[key]
        filled, observed = _impute(_as_float(frame))
        cov = cov_obs = None
        if x_store is not None:
            part = x_store.frames.get(key, pd.DataFrame(columns=x_store.columns))
            cov, cov_obs = _fill(part, frame.index, x_store.columns)
        out.append((filled.astype(np.float32), observed, cov, cov_obs))
    return out


# --------------------------------------------------------------- horizons
@dataclass(frozen=True)
class Horizon:
    """Where each series' forecasts fall.

    Attributes
    ----------
    steps : np.ndarray
        (batch, len(fh)) int, steps after each series' last time stamp (>= 1).
    times : list of pd.Index
        The forecast time stamps of each series.
    prediction_length : int
        The largest step: how far the model has to decode.
    """

    steps: np.ndarray
    times: list[pd.Index]
    prediction_length: int

    def subset(self, rows: Sequence[int]) -> Horizon:
        """Return the horizon of the series ``rows`` (``prediction_length`` is kept)."""
        return Horizon(
            steps=self.steps[np.asarray(rows)],
            times=[self.times[row] for row in rows],
            prediction_length=self.prediction_length,
        )


def horizon_steps(
    fh: Any, cutoff: pd.Index, store: SeriesStore, keys: Sequence[Key]
) -> Horizon:
    """Turn an sktime ``ForecastingHorizon`` into per-series steps and time stamps.

    Parameters
    ----------
    fh : sktime.forecasting.base.ForecastingHorizon
        The horizon (relative or absolute).
    cutoff : pd.Index
        sktime's cutoff (length 1, carrying the frequency).
    store : SeriesStore
        The context, for each series' last time stamp.
    keys : sequence of tuple
        The instances to forecast.

    Raises
    ------
    ValueError
        If a horizon is not after the end of a series (in-sample forecasts are
        not supported).
    """
    freq = store.freq if store.freq is not None else getattr(cutoff, "freq", None)
    if isinstance(cutoff, pd.DatetimeIndex) and freq is None:
        msg = (
            "y has a DatetimeIndex without a frequency (irregular, or with "
            "gaps pandas cannot infer one from), so forecast time stamps are "
            "undefined; give it one, e.g. y = y.asfreq('D') (gaps become NaN, "
            "which the model treats as missing)"
        )
        raise ValueError(msg)
    values = fh.to_pandas()
    timedelta = isinstance(values, pd.TimedeltaIndex)
    if fh.is_relative and not timedelta and not pd.api.types.is_integer_dtype(values):
        msg = f"a relative fh must hold integers or Timedeltas, got {list(values)}"
        raise TypeError(msg)
    steps_rows, times_rows = [], []
    cache: dict[Any, tuple[np.ndarray, pd.Index]] = {}
    for key in keys:
        template = store.frames[key].index
        last = template[-1]
        if last not in cache:
            kind = _index_kind(template)
            if fh.is_relative and timedelta:
                # a Timedelta horizon is a time span: it must land on the grid
                if kind != "datetime":
                    msg = (
                        f"fh {list(values)} is given as Timedeltas, which need y "
                        f"with a DatetimeIndex; y{_where(key)} has a "
                        f"{type(template).__name__}: give fh as integer steps"
                    )
                    raise TypeError(msg)
                times = pd.DatetimeIndex(last + values)
                steps = _steps_after(last, times, freq, template)
            elif fh.is_relative and kind == "int":
                # sktime's convention: absolute = cutoff + fh, in index units
                times = pd.Index(int(last) + np.asarray(values, dtype=np.int64))
                steps = _steps_after(last, times, freq, template, store.step)
            elif fh.is_relative:
                steps = np.asarray(values, dtype=np.int64)
                times = _shift(last, steps, freq, template, store.step)
            else:
                times = pd.Index(values)
                steps = _steps_after(last, times, freq, template, store.step)
            cache[last] = (np.asarray(steps, dtype=np.int64), times)
        steps, times = cache[last]
        if (steps < 1).any():
            msg = (
                f"fh {list(values)} reaches into the past{_where(key)} (steps "
                f"{steps.tolist()} after its last time stamp {last}); only "
                "out-of-sample forecasts are supported"
            )
            raise ValueError(msg)
        steps_rows.append(steps)
        times_rows.append(times)
    steps_arr = np.stack(steps_rows)
    return Horizon(
        steps=steps_arr, times=times_rows, prediction_length=int(steps_arr.max())
    )


# ------------------------------------------------------------- covariates
@dataclass(frozen=True)
class CovariateBatch:
    """Covariates aligned with a :class:`TargetBatch` (``None`` where absent).

    Attributes
    ----------
    known : np.ndarray or None
        (batch, time + prediction_length, known) float32 known-future covariates.
    known_observed : np.ndarray or None
        Their observed mask (bool).
    past : np.ndarray or None
        (batch, time, past) float32 past-only covariates.
    past_observed : np.ndarray or None
        Their observed mask (bool).
    """

    known: np.ndarray | None = None
    known_observed: np.ndarray | None = None
    past: np.ndarray | None = None
    past_observed: np.ndarray | None = None


def _fill(
    frame: pd.DataFrame, index: pd.Index, columns: Iterable
) -> tuple[np.ndarray, np.ndarray]:
    values = _as_float(frame.reindex(index=index, columns=list(columns)))
    observed = ~np.isnan(values)
    return np.where(observed, values, 0.0).astype(np.float32), observed


def covariate_arrays(
    past_x: SeriesStore | None,
    future_x: SeriesStore | None,
    keys: Sequence[Key],
    targets: TargetBatch,
    horizon: Horizon,
    store: SeriesStore,
) -> CovariateBatch:
    """Align covariates with the context and the horizon.

    The rule: columns of ``X`` given to ``predict`` (``future_x``) are
    known-future covariates, needed at every forecast time stamp; the other
    columns of the ``X`` seen in ``fit``/``update`` (``past_x``) are past-only
    covariates. Missing values (also missing rows between forecast time stamps)
    are marked unobserved.

    Raises
    ------
    ValueError
        If ``future_x`` lacks a row (or has an unknown column) that the
        forecast needs.
    """
    if past_x is None:
        return CovariateBatch()
    known_cols = [
        c for c in past_x.columns if future_x is not None and c in future_x.columns
    ]
    if future_x is not None:
        extra = [c for c in future_x.columns if c not in past_x.columns]
        if extra:
            msg = (
                f"X passed to predict has column(s) {extra} that were not in the X "
                "seen in fit/update; covariates need their past values too"
            )
            raise ValueError(msg)
    past_cols = [c for c in past_x.columns if c not in known_cols]
    width = targets.target.shape[1]
    pred_len = horizon.prediction_length
    freq = store.freq
    out: dict[str, Any] = {}
    empty = pd.DataFrame(columns=past_x.columns, dtype=float)
    if known_cols and future_x is not None:
        values, observed = [], []
        for row, key in enumerate(keys):
            fut = future_x.frames.get(key)
            needed = horizon.times[row]
            if fut is None or not needed.isin(fut.index).all():
                have = fut.index if fut is not None else pd.Index([])
                missing = list(needed[~needed.isin(have)])
                where = f" for instance {key}" if key else ""
                msg = (
                    f"X passed to predict lacks rows{where} at the forecast time "
                    f"stamps {missing}; known-future covariates {known_cols} are "
                    "needed there (or drop those columns from X in predict to use "
                    "them as past-only covariates)"
                )
                raise ValueError(msg)
            past = past_x.frames.get(key, empty)
            last = store.frames[key].index[-1]
            future_index = _shift(
                last,
                np.arange(1, pred_len + 1),
                freq,
                store.frames[key].index,
                store.step,
            )
            combined = pd.concat([past[known_cols], fut[known_cols]])
            combined = combined[~combined.index.duplicated(keep="last")]
            ctx_v, ctx_o = _fill(combined, targets.times[row], known_cols)
            fut_v, fut_o = _fill(combined, future_index, known_cols)
            values.append((ctx_v, fut_v))
            observed.append((ctx_o, fut_o))
        ctx = left_pad([v[0] for v in values], width, 0.0)
        ctx_obs = left_pad([o[0] for o in observed], width, False)
        out["known"] = np.concatenate([ctx, np.stack([v[1] for v in values])], axis=1)
        out["known_observed"] = np.concatenate(
            [ctx_obs, np.stack([o[1] for o in observed])], axis=1
        )
    if past_cols:
        filled = [
            _fill(past_x.frames.get(key, empty), targets.times[row], past_cols)
            for row, key in enumerate(keys)
        ]
        out["past"] = left_pad([v for v, _ in filled], width, 0.0)
        out["past_observed"] = left_pad([o for _, o in filled], width, False)
    return CovariateBatch(**out)


# ----------------------------------------------------------------- outputs
def sample_quantiles(samples: np.ndarray, alpha: Sequence[float]) -> np.ndarray:
    """Order-statistic quantiles of sample paths, as GluonTS ``SampleForecast``.

    Parameters
    ----------
    samples : np.ndarray
        (..., sample, ...) samples with the sample axis at position 1:
        (batch, sample, time, variate).
    alpha : sequence of float
        Probabilities in [0, 1].

    Returns
    -------
    np.ndarray
        (batch, len(alpha), time, variate): ``sorted[round((N - 1) * q)]``.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(5.0)[::-1].reshape(1, 5, 1, 1)
    >>> sample_quantiles(s, [0.0, 0.5, 0.9]).ravel()
    array([0., 2., 4.])
    """
    n = samples.shape[1]
    ordered = np.sort(samples, axis=1)
    idx = [int(np.round((n - 1) * float(q))) for q in alpha]
    return ordered[:, idx]


def _output_index(
    store: SeriesStore, keys: Sequence[Key], times: Sequence[pd.Index]
) -> pd.Index:
    if not store.instance_names:
        return times[0]
    lengths = [len(t) for t in times]
    levels = [
        pd.Index([key[level] for key in keys]).repeat(lengths)
        for level in range(len(store.instance_names))
    ]
    time_level = times[0].append(list(times[1:])) if len(times) > 1 else times[0]
    return pd.MultiIndex.from_arrays(
        [*levels, time_level], names=[*store.instance_names, store.time_name]
    )


def _flat(values: np.ndarray) -> np.ndarray:
    """(batch, time, ...) -> (batch * time, ...)."""
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def point_values(paths: np.ndarray, point: str) -> np.ndarray:
    """Point forecast of (batch, sample, time, variate) paths: (batch, time, variate).

    Examples
    --------
    >>> import numpy as np
    >>> paths = np.arange(6.0).reshape(1, 3, 2, 1)
    >>> point_values(paths, "median").ravel(), point_values(paths, "mean").ravel()
    (array([2., 3.]), array([2., 3.]))
    """
    if point == "median":
        return sample_quantiles(paths, [0.5])[:, 0]
    return paths.mean(axis=1)


def interval_alpha(coverage: Sequence[float]) -> list[float]:
    """Quantile levels of central intervals: lower and upper per coverage.

    Examples
    --------
    >>> interval_alpha([0.8, 0.5])
    [0.09999999999999998, 0.9, 0.25, 0.75]
    """
    return [a for c in coverage for a in (0.5 - 0.5 * float(c), 0.5 + 0.5 * float(c))]


def var_values(paths: np.ndarray, cov: bool) -> np.ndarray:
    """Sample variance (``ddof=0``) per step, or covariance over time per variable.

    Returns (batch, time, variate), or (batch, variate, time, time) with ``cov``.

    Examples
    --------
    >>> import numpy as np
    >>> paths = np.array([1.0, 3.0]).reshape(1, 2, 1, 1)
    >>> var_values(paths, cov=False).ravel(), var_values(paths, cov=True).shape
    (array([1.]), (1, 1, 1, 1))
    """
    if not cov:
        return paths.var(axis=1)
    centred = paths - paths.mean(axis=1, keepdims=True)
    return np.einsum("bnhd,bnkd->bdhk", centred, centred) / paths.shape[1]


def format_point(
    values: np.ndarray, store: SeriesStore, keys: Sequence[Key], horizon: Horizon
) -> pd.Series | pd.DataFrame:
    """Point forecasts, (batch, len(fh), variate), in y's mtype."""
    index = _output_index(store, keys, horizon.times)
    frame = pd.DataFrame(_flat(values), index=index, columns=store.columns)
    if store.is_series:
        return frame.iloc[:, 0].rename(store.series_name)
    return frame


def format_quantiles(
    quantiles: np.ndarray,
    columns: pd.Index,
    store: SeriesStore,
    keys: Sequence[Key],
    horizon: Horizon,
) -> pd.DataFrame:
    """Build sktime's ``predict_quantiles`` (or ``predict_interval``) frame.

    ``quantiles`` is (batch, level, len(fh), variate); ``columns`` is the
    (variable, alpha) or (variable, coverage, side) index, variable-major.
    """
    q = quantiles.transpose(0, 2, 3, 1)  # (B, H, D, A): variable-major columns
    index = _output_index(store, keys, horizon.times)
    return pd.DataFrame(_flat(q).reshape(len(index), -1), index=index, columns=columns)


def format_var(
    values: np.ndarray,
    store: SeriesStore,
    keys: Sequence[Key],
    horizon: Horizon,
    cov: bool,
) -> pd.DataFrame:
    """Build sktime's ``predict_var`` frame from :func:`var_values`.

    With ``cov=True``, the sample covariance over time within each variable:
    columns (variable, time stamp), rows (instance, time stamp).
    """
    index = _output_index(store, keys, horizon.times)
    if not cov:
        return pd.DataFrame(_flat(values), index=index, columns=store.columns)
    times = horizon.times[0]
    columns = pd.MultiIndex.from_product([store.columns, times])
    rows = values.transpose(0, 2, 1, 3).reshape(len(index), -1)  # (B*H, D*H)
    return pd.DataFrame(rows, index=index, columns=columns)


def format_samples(
    paths: np.ndarray, store: SeriesStore, keys: Sequence[Key], horizon: Horizon
) -> tuple[pd.DataFrame, pd.Index]:
    """Sample paths as skpro's ``Empirical`` expects: rows (sample, *index).

    ``paths`` is (batch, sample, len(fh), variate).

    Returns
    -------
    spl : pd.DataFrame
        Rows (sample, instance levels..., time), columns the variables.
    index : pd.Index
        The index of the forecast (without the sample level).
    """
    n = paths.shape[1]
    index = _output_index(store, keys, horizon.times)
    values = paths.transpose(1, 0, 2, 3).reshape(n * len(index), -1)  # sample-major
    tiled = index.take(np.tile(np.arange(len(index)), n))
    inner = (
        [tiled.get_level_values(i) for i in range(index.nlevels)]
        if isinstance(index, pd.MultiIndex)
        else [tiled]
    )
    spl_index = pd.MultiIndex.from_arrays(
        [np.repeat(np.arange(n), len(index)), *inner], names=["sample", *index.names]
    )
    spl = pd.DataFrame(values, index=spl_index, columns=store.columns)
    return spl, index
