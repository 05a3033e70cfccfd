"""Plots of probabilistic forecasts: intervals and fan charts of sample paths.

Two functions, in the style of sktime's :func:`sktime.utils.plotting.plot_series`
(history, actual values, forecast and shaded intervals on one wide Axes):

* :func:`plot_forecast` draws a history, the forecast and any number of
  prediction intervals (``predict_interval``'s frame), the wider ones lighter;
* :func:`plot_sample_paths` draws a fan chart of sample paths: a few paths
  thinly, central quantile bands around the median. It takes a fitted
  forecaster, the ``predict_proba(marginal=False)`` result of one, or a plain
  (sample, time) array.

Both return ``(fig, ax)``, accept pandas indexes of any kind sktime forecasts
with (``PeriodIndex``, ``DatetimeIndex``, ``RangeIndex`` or other integer
index; periods are drawn at their start time, as sktime does) and check that
all the series drawn on one Axes share that kind. Nothing is shown or saved:
call ``fig.savefig`` (the examples use the Agg backend) or ``plt.show()``.

matplotlib is an optional dependency (the ``plot`` extra: ``pip install
'moirai_moe_sk[plot]'``), imported inside the functions only; seaborn is not
needed.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .convert import sample_quantiles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_forecast", "plot_sample_paths"]

#: legend labels of :func:`plot_forecast`, by role
FORECAST_LABELS = {"history": "history", "actual": "actual", "forecast": "forecast"}
#: legend labels of :func:`plot_sample_paths`, by role
PATH_LABELS = {
    "history": "history",
    "actual": "actual",
    "paths": "sample paths",
    "median": "median",
}
#: central bands of the fan chart: 25-75%, 10-90% and 5-95% quantiles
DEFAULT_COVERAGE = (0.5, 0.8, 0.9)
#: line colours by role (matplotlib's default cycle: blue, orange, green)
_COLORS = {"history": "C0", "actual": "C1", "forecast": "C2"}
#: opacity of the widest and of the narrowest shaded band
_ALPHA_WIDEST, _ALPHA_NARROWEST = 0.12, 0.35
_FIGSIZE = (12.0, 4.0)


# ------------------------------------------------------------------ helpers
def _pyplot(function: str) -> Any:
    """Import ``matplotlib.pyplot``, or say which extra provides it."""
    try:
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as err:
        msg = (
            f"{function} needs matplotlib, an optional dependency: "
            "pip install 'moirai_moe_sk[plot]'"
        )
        raise ModuleNotFoundError(msg) from err
    return plt


def _labels(
    labels: Mapping[str, str] | None, defaults: dict[str, str]
) -> dict[str, str]:
    if labels is None:
        return dict(defaults)
    if not isinstance(labels, Mapping):
        msg = (
            f"labels must be a mapping {{role: label}} with roles among "
            f"{sorted(defaults)}, got {type(labels).__name__}"
        )
        raise TypeError(msg)
    unknown = sorted(set(labels) - set(defaults))
    if unknown:
        msg = f"unknown labels key(s) {unknown}; roles: {sorted(defaults)}"
        raise ValueError(msg)
    return {**defaults, **labels}


def _count(name: str, value: Any, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return int(value)


def _reject_panel(index: pd.Index, where: str) -> None:
    if isinstance(index, pd.MultiIndex):
        msg = (
            f"{where} has a MultiIndex (a panel or hierarchy): plot one series at "
            f"a time, e.g. {where}.loc[key] for the instance key"
        )
        raise TypeError(msg)


def _index_kind(index: pd.Index, where: str) -> str:
    """Describe the kind of a time index; two series plot together if equal."""
    _reject_panel(index, where)
    if isinstance(index, pd.PeriodIndex):
        return f"a PeriodIndex (freq {index.freqstr})"
    if isinstance(index, pd.DatetimeIndex):
        tz = "" if index.tz is None else f" (tz {index.tz})"
        return f"a DatetimeIndex{tz}"
    if pd.api.types.is_numeric_dtype(index.dtype) and not pd.api.types.is_bool_dtype(
        index.dtype
    ):
        return "an integer index" if index.dtype.kind in "iu" else "a numeric index"
    msg = (
        f"{where} has an index of type {type(index).__name__} (dtype "
        f"{index.dtype}); use a PeriodIndex, DatetimeIndex or integer index"
    )
    raise TypeError(msg)


def _x(index: pd.Index) -> Any:
    """Return x values for matplotlib: periods at their start, numbers as floats."""
    if isinstance(index, pd.PeriodIndex):
        return index.to_timestamp()
    if isinstance(index, pd.DatetimeIndex):
        return index
    return index.to_numpy(dtype=np.float64)


def _describe(index: pd.Index) -> str:
    if len(index) == 0:
        return "empty"
    return f"{len(index)} entries, {index[0]} to {index[-1]}"


def _check_kinds(parts: Sequence[tuple[str, pd.Index]]) -> None:
    """Raise a ValueError naming the first index whose kind differs from the first."""
    (first, first_index), *others = parts
    kind = _index_kind(first_index, first)
    for where, index in others:
        other = _index_kind(index, where)
        if other != kind:
            msg = (
                f"{where} has {other} but {first} has {kind}: give all series "
                "in one plot the same kind of time index"
            )
            raise ValueError(msg)


def _column(columns: pd.Index, where: str, variable: Hashable | None) -> Hashable:
    """Return the column to plot: ``variable``, or the only one."""
    if variable is None:
        if len(columns) != 1:
            msg = (
                f"{where} has {len(columns)} columns {list(columns)}: name the one "
                "to plot with variable="
            )
            raise ValueError(msg)
        return columns[0]
    if variable not in columns:
        msg = f"variable {variable!r} is not a column of {where} (columns: {list(columns)})"
        raise ValueError(msg)
    return variable


def _select(obj: Any, where: str, variable: Hashable | None) -> pd.Series:
    """Return one numeric variable of a Series or DataFrame as a Series."""
    if not isinstance(obj, pd.Series | pd.DataFrame):
        msg = f"{where} must be a pandas Series or DataFrame, got {type(obj).__name__}"
        raise TypeError(msg)
    _reject_panel(obj.index, where)
    series = (
        obj[_column(obj.columns, where, variable)]
        if isinstance(obj, pd.DataFrame)
        else obj
    )
    if not pd.api.types.is_numeric_dtype(series.dtype):
        msg = f"{where} must hold numbers, got dtype {series.dtype}"
        raise TypeError(msg)
    return series


def _bands(
    pred_interval: Any, variable: Hashable | None
) -> list[tuple[float, pd.Series, pd.Series]]:
    """Return (coverage, lower, upper) of one variable, widest first."""
    if not isinstance(pred_interval, pd.DataFrame):
        msg = (
            "pred_interval must be the DataFrame returned by predict_interval, got "
            f"{type(pred_interval).__name__}"
        )
        raise TypeError(msg)
    columns = pred_interval.columns
    if (
        not isinstance(columns, pd.MultiIndex)
        or columns.nlevels != 3
        or not set(columns.get_level_values(2)) <= {"lower", "upper"}
    ):
        msg = (
            "pred_interval must have predict_interval's columns (variable, "
            "coverage, 'lower'/'upper'), got columns "
            f"{list(columns)[:6]}"
        )
        raise ValueError(msg)
    _reject_panel(pred_interval.index, "pred_interval")
    names = list(pd.unique(columns.get_level_values(0)))
    if variable is None:
        if len(names) != 1:
            msg = (
                f"pred_interval holds {len(names)} variables {names}: name the one "
                "to plot with variable="
            )
            raise ValueError(msg)
        variable = names[0]
    elif variable not in names:
        msg = f"variable {variable!r} is not in pred_interval (variables: {names})"
        raise ValueError(msg)
    part = pred_interval[variable]
    bands = []
    for coverage in sorted(pd.unique(part.columns.get_level_values(0)), reverse=True):
        sides = part[coverage]
        if set(sides.columns) != {"lower", "upper"}:
            msg = f"pred_interval's coverage {coverage} lacks a lower or upper bound"
            raise ValueError(msg)
        bands.append(
            (
                float(coverage),
                sides["lower"].astype(float),
                sides["upper"].astype(float),
            )
        )
    return bands


def _alphas(n: int) -> np.ndarray:
    """Opacities of ``n`` nested bands, widest (most transparent) first."""
    if n == 1:
        return np.array([0.25])
    return np.linspace(_ALPHA_WIDEST, _ALPHA_NARROWEST, n)


def _percent(value: float) -> str:
    return f"{100 * value:.4g}%"


def _axes(plt: Any, ax: Axes | None) -> tuple[Figure, Axes]:
    """Return a new wide figure and its Axes, or ``ax`` and its (root) figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=_FIGSIZE, layout="constrained")
        return fig, ax
    figure: Any = ax.figure
    while not isinstance(figure, plt.Figure):  # a SubFigure: up to its figure
        figure = figure.figure
    return figure, ax


def _line(ax: Axes, series: pd.Series, **kwargs: Any) -> None:
    """Draw a series as a line (with markers when it is too short to see)."""
    marker = "o" if len(series) <= 3 else None
    ax.plot(
        _x(series.index),
        series.to_numpy(dtype=np.float64, na_value=np.nan),
        marker=marker,
        markersize=4,
        **kwargs,
    )


def _finish(ax: Axes, name: Hashable | None, title: str | None) -> None:
    if name is not None:
        ax.set_ylabel(str(name))
    if title is not None:
        ax.set_title(title)
    ax.legend()


# ------------------------------------------------------------ plot_forecast
def plot_forecast(
    y: pd.Series | pd.DataFrame,
    y_pred: pd.Series | pd.DataFrame | None = None,
    pred_interval: pd.DataFrame | None = None,
    y_test: pd.Series | pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    history: int | None = None,
    variable: Hashable | None = None,
) -> tuple[Figure, Axes]:
    """Plot a history, a point forecast and shaded prediction intervals.

    The figure of sktime's :func:`~sktime.utils.plotting.plot_series` with a
    history, the actual values and a forecast, made for probabilistic
    forecasts: every coverage of ``pred_interval`` is shaded in the forecast's
    colour, the wider intervals more transparently, so nested intervals read
    as a gradient. Works with any of the index types sktime forecasts with
    (``PeriodIndex``, ``DatetimeIndex``, integer index); all series must share
    one. Needs matplotlib only (not seaborn).

    Parameters
    ----------
    y : pandas.Series or pandas.DataFrame
        The history (training series). A DataFrame needs ``variable`` unless
        it has a single column.
    y_pred : pandas.Series or pandas.DataFrame, optional
        Point forecast (``predict``'s result).
    pred_interval : pandas.DataFrame, optional
        Prediction intervals (``predict_interval``'s result, with columns
        (variable, coverage, ``"lower"``/``"upper"``)), one or several
        coverages. With ``y_pred``, its index must equal ``y_pred``'s.
    y_test : pandas.Series or pandas.DataFrame, optional
        Actual values over (or beyond) the forecast horizon.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure (12 x 4 inches) when omitted.
    labels : mapping, optional
        Legend labels by role, overriding the defaults ``{"history":
        "history", "actual": "actual", "forecast": "forecast"}``.
        Intervals are labelled by coverage ("80% prediction interval").
    title : str, optional
        Title of the Axes.
    history : int, optional
        Draw only the last ``history`` steps of ``y`` (all by default).
    variable : hashable, optional
        Column to plot when the data frames hold several variables (a
        multivariate forecast).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure (``ax.figure`` when ``ax`` is given).
    ax : matplotlib.axes.Axes
        The Axes drawn on.

    Raises
    ------
    ModuleNotFoundError
        If matplotlib is not installed (``pip install 'moirai_moe_sk[plot]'``).
    TypeError
        If an input is not a pandas object of the documented kind, is a panel
        (a MultiIndex: plot one instance at a time) or has an index that is
        not a time index.
    ValueError
        If the series have different kinds of time index (e.g. a PeriodIndex
        and a DatetimeIndex, or periods of different frequencies), if
        ``pred_interval``'s index differs from ``y_pred``'s, or if
        ``variable`` is missing or unknown.

    See Also
    --------
    plot_sample_paths : A fan chart of the sample paths behind the intervals.
    sktime.utils.plotting.plot_series : The general series plot of sktime.

    Notes
    -----
    Unlike sktime's ``plot_series``, which returns only the Axes when given
    one, this always returns ``(fig, ax)``.

    Examples
    --------
    The bundled model (offline) forecasting the last two years of the airline
    data, with 80% and 95% intervals:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from sktime.datasets import load_airline
    >>> from sktime.split import temporal_train_test_split
    >>> from moirai_moe_sk import MoiraiMoEForecaster
    >>> from moirai_moe_sk.plotting import plot_forecast
    >>> y_train, y_test = temporal_train_test_split(load_airline(), test_size=24)
    >>> forecaster = MoiraiMoEForecaster(
    ...     "moirai-moe-sk-tiny", num_samples=20, random_state=0
    ... ).fit(y_train, fh=range(1, 25))
    >>> fig, ax = plot_forecast(
    ...     y_train,
    ...     forecaster.predict(),
    ...     forecaster.predict_interval(coverage=[0.8, 0.95]),
    ...     y_test,
    ...     history=72,
    ... )
    >>> [line.get_label() for line in ax.get_lines()]
    ['history', 'actual', 'forecast']
    >>> [band.get_label() for band in ax.collections]
    ['95% prediction interval', '80% prediction interval']
    >>> plt.close(fig)
    """
    plt = _pyplot("plot_forecast")
    names = _labels(labels, FORECAST_LABELS)
    history_series = _select(y, "y", variable)
    if history is not None:
        history_series = history_series.iloc[-_count("history", history, 1) :]
    actual = _select(y_test, "y_test", variable) if y_test is not None else None
    forecast = _select(y_pred, "y_pred", variable) if y_pred is not None else None
    name = variable if variable is not None else history_series.name
    bands = _bands(pred_interval, variable) if pred_interval is not None else []

    indexes = [("y", history_series.index)]
    indexes += [("y_test", actual.index)] if actual is not None else []
    indexes += [("y_pred", forecast.index)] if forecast is not None else []
    indexes += [("pred_interval", bands[0][1].index)] if bands else []
    _check_kinds(indexes)
    if forecast is not None and bands and not bands[0][1].index.equals(forecast.index):
        msg = (
            f"pred_interval's index ({_describe(bands[0][1].index)}) does not match "
            f"y_pred's ({_describe(forecast.index)}); pass both from the same "
            "forecast horizon"
        )
        raise ValueError(msg)

    fig, ax = _axes(plt, ax)
    _line(ax, history_series, color=_COLORS["history"], label=names["history"])
    if actual is not None:
        _line(ax, actual, color=_COLORS["actual"], label=names["actual"])
    if forecast is not None:
        _line(ax, forecast, color=_COLORS["forecast"], label=names["forecast"])
    for (coverage, lower, upper), alpha in zip(bands, _alphas(len(bands)), strict=True):
        ax.fill_between(
            _x(lower.index),
            lower.to_numpy(dtype=np.float64, na_value=np.nan),
            upper.to_numpy(dtype=np.float64, na_value=np.nan),
            color=_COLORS["forecast"],
            alpha=float(alpha),
            linewidth=0,
            label=f"{_percent(coverage)} prediction interval",
        )
    _finish(ax, name, title)
    return fig, ax


# -------------------------------------------------------- plot_sample_paths
def _paths_from_spl(
    spl: pd.DataFrame, variable: Hashable | None, instance: Any
) -> tuple[np.ndarray, pd.Index, Hashable]:
    """(sample, time) paths of one variable and instance of skpro's ``spl`` frame."""
    index = spl.index
    if not isinstance(index, pd.MultiIndex) or index.nlevels < 2:
        msg = (
            "the distribution's samples (spl) need a (sample, ..., time) MultiIndex; "
            "pass predict_proba(marginal=False)'s result"
        )
        raise ValueError(msg)
    column = _column(spl.columns, "the forecast", variable)
    values = spl[column]
    if index.nlevels > 2:
        levels = list(range(1, index.nlevels - 1))
        instances = index.droplevel([0, index.nlevels - 1]).unique()
        if instance is None:
            if len(instances) != 1:
                msg = (
                    f"the forecast covers {len(instances)} series (e.g. "
                    f"{list(instances[:3])}): choose one with instance="
                )
                raise ValueError(msg)
            instance = instances[0]
        if instance not in instances:
            msg = (
                f"instance {instance!r} is not in the forecast (e.g. "
                f"{list(instances[:3])})"
            )
            raise ValueError(msg)
        key = instance if len(levels) > 1 else (instance,)
        values = values.xs(tuple(key), level=levels)
    elif instance is not None:
        msg = f"instance={instance!r} is only for panel forecasts; this is one series"
        raise ValueError(msg)
    values = values.sort_index()  # sample-major, time in order
    samples = values.index.get_level_values(0).unique()
    times = values.index.get_level_values(-1).unique()
    if len(values) != len(samples) * len(times):
        msg = (
            f"the forecast's {len(samples)} samples do not all cover the same "
            f"{len(times)} time stamps"
        )
        raise ValueError(msg)
    paths = values.to_numpy(dtype=np.float64).reshape(len(samples), len(times))
    return paths, pd.Index(times), column


def _paths(
    source: Any,
    index: Any,
    fh: Any,
    X: Any,
    variable: Hashable | None,
    instance: Any,
    have_history: bool,
) -> tuple[np.ndarray, pd.Index, Hashable | None]:
    """Return (sample, time) paths, their time index and the variable's name."""
    if hasattr(source, "predict_proba") and hasattr(source, "is_fitted"):
        if not source.is_fitted:
            msg = (
                f"the {type(source).__name__} is not fitted: call fit before "
                "plotting its sample paths"
            )
            raise ValueError(msg)
        if index is not None:
            msg = "index is only for an array of samples; a forecaster gives its own"
            raise ValueError(msg)
        source = source.predict_proba(fh=fh, X=X, marginal=False)
        spl = getattr(source, "spl", None)
        if not isinstance(spl, pd.DataFrame):
            msg = (
                f"predict_proba returned a {type(source).__name__}, not sample "
                "paths (an skpro Empirical distribution); plot_forecast draws its "
                "intervals instead"
            )
            raise TypeError(msg)
        return _paths_from_spl(spl, variable, instance)
    if fh is not None or X is not None:
        msg = "fh and X are only for a forecaster, not for given samples"
        raise ValueError(msg)
    spl = getattr(source, "spl", None)
    if isinstance(spl, pd.DataFrame):  # skpro Empirical from predict_proba
        if index is not None:
            msg = "index is only for an array of samples; the distribution has its own"
            raise ValueError(msg)
        return _paths_from_spl(spl, variable, instance)
    if instance is not None:
        msg = "instance is only for a forecaster or distribution of a panel"
        raise ValueError(msg)
    try:
        paths = np.asarray(source, dtype=np.float64)
    except (TypeError, ValueError) as err:
        msg = (
            "forecaster_or_samples must be a fitted forecaster, a predict_proba "
            "result or a (sample, time) array of numbers, got "
            f"{type(source).__name__}"
        )
        raise TypeError(msg) from err
    if paths.ndim != 2 or paths.shape[0] == 0 or paths.shape[1] == 0:
        msg = (
            f"samples must be a non-empty 2-D (sample, time) array, got shape "
            f"{paths.shape}; from a (batch, sample, time, variate) forecast take "
            "one series and variate, e.g. samples[0, :, :, 0]"
        )
        raise ValueError(msg)
    horizon = paths.shape[1]
    if index is None:
        if have_history:
            msg = (
                f"index is needed to place the {horizon} forecast steps after y: "
                "give their time stamps (e.g. the forecast's index)"
            )
            raise ValueError(msg)
        index = pd.RangeIndex(1, horizon + 1)
    index = pd.Index(index)
    if len(index) != horizon:
        msg = f"index has {len(index)} entries but the samples have {horizon} steps"
        raise ValueError(msg)
    return paths, index, variable


def plot_sample_paths(
    forecaster_or_samples: Any,
    index: Any = None,
    *,
    y: pd.Series | pd.DataFrame | None = None,
    y_test: pd.Series | pd.DataFrame | None = None,
    fh: Any = None,
    X: pd.DataFrame | None = None,
    variable: Hashable | None = None,
    instance: Any = None,
    coverage: float | Sequence[float] = DEFAULT_COVERAGE,
    n_paths: int = 5,
    history: int | None = None,
    ax: Axes | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    random_state: int | None = 0,
) -> tuple[Figure, Axes]:
    """Draw a fan chart: a few sample paths and central quantile bands.

    A probabilistic forecast of Moirai-MoE *is* a set of sample paths (each a
    coherent trajectory, decoded autoregressively); its quantiles and
    intervals are statistics of them. This chart shows both: ``n_paths``
    paths drawn thinly, and shaded central bands (by default the 25-75%,
    10-90% and 5-95% quantiles, wider bands lighter) around the median. The
    quantiles are order statistics of the samples, computed as the forecaster
    computes them, so the bands equal ``predict_interval``'s intervals.

    Parameters
    ----------
    forecaster_or_samples : forecaster, distribution or array-like
        One of:

        * a fitted forecaster whose ``predict_proba(marginal=False)`` returns
          an skpro ``Empirical`` distribution of sample paths, such as
          :class:`~moirai_moe_sk.MoiraiMoEForecaster` (``fh`` and ``X`` are
          passed on; needs skpro);
        * such a distribution itself (``predict_proba(marginal=False)``'s
          result);
        * an array of shape (sample, time), with the time stamps in ``index``.
          From the (batch, sample, time, variate) output of
          :func:`moirai_moe_sk.model.forecast`, pass ``samples[i, :, :, v]``.
    index : array-like or pandas.Index, optional
        Time stamps of the steps of an array of samples. Needed with ``y``;
        without, steps are numbered from 1.
    y : pandas.Series or pandas.DataFrame, optional
        History drawn before the forecast (the series given to ``fit``).
    y_test : pandas.Series or pandas.DataFrame, optional
        Actual values over the horizon.
    fh : ForecastingHorizon or array-like, optional
        Horizon passed to the forecaster's ``predict_proba`` (the ``fh`` of
        ``fit`` when omitted).
    X : pandas.DataFrame, optional
        Known-future covariates passed to the forecaster's ``predict_proba``.
    variable : hashable, optional
        Variable to plot from a multivariate forecast (and from ``y`` and
        ``y_test`` when they are data frames with several columns).
    instance : hashable or tuple, optional
        Series to plot from a panel forecast: its instance key (a tuple for
        hierarchies).
    coverage : float or sequence of float, default=(0.5, 0.8, 0.9)
        Coverages of the central bands, each in (0, 1): coverage ``c`` shades
        the quantiles ``(1 - c) / 2`` to ``(1 + c) / 2``.
    n_paths : int, default=5
        Number of sample paths drawn (fewer if there are fewer samples; 0 for
        none), chosen at random.
    history : int, optional
        Draw only the last ``history`` steps of ``y``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure (12 x 4 inches) when omitted.
    labels : mapping, optional
        Legend labels by role, overriding the defaults ``{"history":
        "history", "actual": "actual", "paths": "sample paths", "median":
        "median"}``. Bands are labelled by their quantiles.
    title : str, optional
        Title of the Axes.
    random_state : int or None, default=0
        Seed of the choice of the drawn paths (a local generator; the global
        random state is untouched). The bands use all samples.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure (``ax.figure`` when ``ax`` is given).
    ax : matplotlib.axes.Axes
        The Axes drawn on.

    Raises
    ------
    ModuleNotFoundError
        If matplotlib is not installed (``pip install 'moirai_moe_sk[plot]'``).
    TypeError
        If ``forecaster_or_samples`` is none of the accepted kinds, or its
        ``predict_proba`` gives no sample paths.
    ValueError
        If the forecaster is not fitted, the samples are not 2-D, ``index``
        does not match the number of steps, the time indexes of the forecast,
        ``y`` and ``y_test`` are of different kinds, a coverage is outside
        (0, 1), or ``variable`` or ``instance`` is missing or unknown.

    See Also
    --------
    plot_forecast : The point forecast with its prediction intervals.

    Examples
    --------
    From an array of sample paths (here random walks):

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from moirai_moe_sk.plotting import plot_sample_paths
    >>> rng = np.random.default_rng(0)
    >>> samples = rng.normal(size=(100, 12)).cumsum(axis=1)  # (sample, time)
    >>> fig, ax = plot_sample_paths(samples, n_paths=3)
    >>> len(ax.get_lines())  # 3 paths and the median
    4
    >>> [band.get_label() for band in ax.collections]
    ['5%-95% quantiles', '10%-90% quantiles', '25%-75% quantiles']
    >>> plt.close(fig)

    From a fitted forecaster (the bundled model, offline), with the history:

    >>> from sktime.datasets import load_airline
    >>> from moirai_moe_sk import MoiraiMoEForecaster
    >>> y = load_airline()
    >>> forecaster = MoiraiMoEForecaster(
    ...     "moirai-moe-sk-tiny", num_samples=50, random_state=0
    ... ).fit(y, fh=range(1, 25))
    >>> fig, ax = plot_sample_paths(forecaster, y=y, history=60, coverage=[0.8])
    >>> [line.get_label() for line in ax.get_lines()][:3]
    ['history', 'sample paths', '_nolegend_']
    >>> plt.close(fig)
    """
    plt = _pyplot("plot_sample_paths")
    names = _labels(labels, PATH_LABELS)
    coverages: list[Any] = (
        [coverage] if isinstance(coverage, int | float) else list(coverage)
    )
    for value in coverages:
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0 < float(value) < 1
        ):
            msg = f"each coverage must be a number in (0, 1), got {value!r}"
            raise ValueError(msg)
    coverages = sorted({float(c) for c in coverages}, reverse=True)  # widest first
    n_paths = _count("n_paths", n_paths, 0)

    paths, path_index, name = _paths(
        forecaster_or_samples, index, fh, X, variable, instance, y is not None
    )
    if not np.isfinite(paths).all():
        msg = "the sample paths hold NaN or infinite values"
        raise ValueError(msg)
    history_series = _select(y, "y", variable) if y is not None else None
    if history_series is not None and history is not None:
        history_series = history_series.iloc[-_count("history", history, 1) :]
    actual = _select(y_test, "y_test", variable) if y_test is not None else None
    if name is None and history_series is not None:
        name = history_series.name
    indexes = [("the forecast", path_index)]
    indexes += [("y", history_series.index)] if history_series is not None else []
    indexes += [("y_test", actual.index)] if actual is not None else []
    _check_kinds(indexes)

    probabilities = [0.5]
    for c in coverages:
        probabilities += [(1 - c) / 2, (1 + c) / 2]
    quantiles = sample_quantiles(paths[None, :, :, None], probabilities)[0, :, :, 0]
    rng = np.random.default_rng(random_state)
    chosen = np.sort(
        rng.choice(paths.shape[0], size=min(n_paths, paths.shape[0]), replace=False)
    )

    fig, ax = _axes(plt, ax)
    x = _x(path_index)
    if history_series is not None:
        _line(ax, history_series, color=_COLORS["history"], label=names["history"])
    if actual is not None:
        _line(ax, actual, color=_COLORS["actual"], label=names["actual"])
    for position, row in enumerate(chosen):
        ax.plot(
            x,
            paths[row],
            color=_COLORS["forecast"],
            linewidth=0.7,
            alpha=0.6,
            label=names["paths"] if position == 0 else "_nolegend_",
        )
    ax.plot(
        x, quantiles[0], color=_COLORS["forecast"], linewidth=2, label=names["median"]
    )
    for band, (c, alpha) in enumerate(
        zip(coverages, _alphas(len(coverages)), strict=True)
    ):
        low, high = (1 - c) / 2, (1 + c) / 2
        ax.fill_between(
            x,
            quantiles[1 + 2 * band],
            quantiles[2 + 2 * band],
            color=_COLORS["forecast"],
            alpha=float(alpha),
            linewidth=0,
            label=f"{_percent(low)}-{_percent(high)} quantiles",
        )
    _finish(ax, name, title)
    return fig, ax
