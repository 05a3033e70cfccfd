"""Synthetic time series for pretraining, generated with NumPy only.

Every series comes from one of the *kinds* in :data:`KINDS`, each a public
function of ``(length, rng)`` that can be called (and tested) on its own:

``trend``
    A monotone level path (linear, exponential, damped, logistic or piecewise
    linear) plus noise.
``seasonal``
    One to three seasonalities (periods from :data:`PERIODS`: 4, 7, 12, 24,
    52, ...) of Fourier or free-form shape on a trend, additive or
    multiplicative, optionally with a drifting amplitude.
``random_walk``
    Additive, geometric (positive) or integrated (smooth trend) random walks.
``ar``
    Stationary AR(1-3) processes, optionally with an MA(1) term and a
    multiplicative seasonal AR term.
``ets``
    Exponential smoothing state-space models (additive or multiplicative
    error, no / additive / damped trend, no / additive / multiplicative
    season), the model class that fits the M competitions well.
``level_shift``
    A flat level with one or more abrupt jumps, sometimes outliers and a mild
    seasonality.
``intermittent``
    Non-negative integer counts: Croston-style sparse demand or low-rate
    Poisson counts, with many zeros.
``kernel_synth``
    Samples from a Gaussian-process prior whose kernel is a random sum/product
    of kernels from a bank (linear, RBF, periodic, rational quadratic, white
    noise, constant), as in Chronos' KernelSynth.

Noise is Gaussian, Student-t (heavy tails), Laplace or GARCH(1, 1)
(volatility clustering) (:func:`noise`), applied additively, in proportion to
the level (heteroscedastic) or multiplicatively to positive series.

:func:`generate` draws a kind, a length (log-uniform between ``min_length``
and ``max_length``, so short series are as common as in the M competitions)
and the series for each index, rescales all but the count series so that their
mean absolute value is log-uniform in ``scale_range`` (levels spanning orders
of magnitude) and optionally replaces values by NaN. Series ``i`` depends on
``(seed, i)`` only, through ``SeedSequence(seed, spawn_key=(i,))``: a longer
run starts with the series of a shorter one, and :meth:`SyntheticConfig.sample`
gives random access for streaming. :func:`to_training_series` turns the arrays
into :class:`~moirai_moe_sk.training.TrainingSeries` (NaN become unobserved,
filled with the causal mean).

Cost. All kinds but ``kernel_synth`` are O(length) (some with a short Python
loop). A Gaussian-process sample needs the Cholesky factor of a
``length x length`` kernel matrix, O(length^3): about 1 ms at 256 steps, 6 ms
at 512 and 40 ms at 1024 on one core. Factors are not cached (random kernel
compositions and lengths almost never repeat); instead ``kernel_synth`` series
are capped at ``gp_max_length`` steps (default 1024), the kernel matrix is
built from O(length) lag values, and the factorisation runs on one BLAS thread
(OpenBLAS' threading slows such small factorisations down by orders of
magnitude when the cores are busy). With the defaults, 10,000 series of up to
512 steps take about 4 s on two cores, of up to 1024 steps about 8 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..training.data import TrainingSeries

__all__ = [
    "DEFAULT_WEIGHTS",
    "KINDS",
    "MULTIVARIATE_KINDS",
    "NOISE_KINDS",
    "PERIODS",
    "SyntheticConfig",
    "ar_series",
    "ets_series",
    "generate",
    "inject_missing",
    "intermittent_series",
    "kernel_matrix",
    "kernel_synth_series",
    "level_shift_series",
    "multivariate_series",
    "noise",
    "random_kernel",
    "random_walk_series",
    "sample_gp",
    "seasonal_series",
    "to_training_series",
    "trend_series",
    "tsmixup",
]

#: The kinds of synthetic series, in a fixed order.
KINDS: tuple[str, ...] = (
    "trend",
    "seasonal",
    "random_walk",
    "ar",
    "ets",
    "level_shift",
    "intermittent",
    "kernel_synth",
)

#: Default relative frequency of each kind.
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "trend": 1.0,
        "seasonal": 2.0,
        "random_walk": 1.0,
        "ar": 1.0,
        "ets": 2.0,
        "level_shift": 0.75,
        "intermittent": 0.75,
        "kernel_synth": 1.5,
    }
)

#: Seasonal periods the generators draw from (only those with at least two
#: cycles in the series): quarterly, work-week, weekly, monthly, 13 four-week
#: months, hourly, fortnightly, half-hourly, weekly-of-year, quarter-hourly,
#: hour-of-week and day-of-year.
PERIODS: tuple[int, ...] = (4, 5, 6, 7, 12, 13, 24, 26, 48, 52, 96, 168, 365)
_PERIOD_WEIGHTS = np.array([4, 1, 1, 4, 5, 1, 3, 1, 1, 3, 1, 1, 1], dtype=float)

#: Kinds of noise drawn by :func:`noise`.
NOISE_KINDS: tuple[str, ...] = ("gaussian", "student_t", "laplace", "garch")
_NOISE_WEIGHTS = np.array([0.4, 0.25, 0.15, 0.2])

_TREND_SHAPES = ("linear", "exponential", "damped", "logistic", "piecewise")
_RANDOM_WALKS = ("additive", "geometric", "integrated")
_INTERMITTENT = ("croston", "poisson")
_KERNEL_FAMILIES = ("linear", "rbf", "periodic", "rq", "white", "constant")
_KERNEL_WEIGHTS = np.array([0.1, 0.25, 0.35, 0.15, 0.08, 0.07])

#: A kernel specification: a leaf ``("rbf", length_scale)``,
#: ``("periodic", period, length_scale)``, ``("rq", length_scale, alpha)``,
#: ``("linear", sigma0)``, ``("white", variance)``, ``("constant", value)``
#: (lengths in time steps), or ``("add" | "mul", spec, spec)``.
KernelSpec = tuple[Any, ...]


# ---------------------------------------------------------------- helpers
def _check_length(length: int, minimum: int = 2) -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        msg = f"length must be an int, got {length!r}"
        raise TypeError(msg)
    if length < minimum:
        msg = f"length must be at least {minimum}, got {length}"
        raise ValueError(msg)
    return int(length)


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _choose_period(
    rng: np.random.Generator, length: int, exclude: Sequence[int] = ()
) -> int | None:
    """Draw a period from :data:`PERIODS` with two cycles in ``length``."""
    allowed = np.array(
        [2 * p <= length and p not in exclude for p in PERIODS], dtype=bool
    )
    if not allowed.any():
        return None
    w = np.where(allowed, _PERIOD_WEIGHTS, 0.0)
    return PERIODS[int(rng.choice(len(PERIODS), p=w / w.sum()))]


def _seasonal_profile(rng: np.random.Generator, period: int) -> np.ndarray:
    """One cycle of a zero-mean, unit-std seasonal pattern."""
    t = np.arange(period)
    if period < 3 or rng.random() < 0.6:  # a few Fourier harmonics
        harmonics = int(rng.integers(1, max(1, min(period // 2, 4)) + 1))
        profile = np.zeros(period)
        for k in range(1, harmonics + 1):
            a, b = rng.normal(0.0, 1.0 / k, size=2)
            angle = 2 * np.pi * k * t / period
            profile += a * np.cos(angle) + b * np.sin(angle)
    else:  # free-form, sometimes with a peak season (December sales)
        profile = rng.normal(size=period)
        if rng.random() < 0.3:
            profile[rng.integers(period)] += rng.uniform(2.0, 5.0)
    profile = profile - profile.mean()
    std = profile.std()
    if std < 1e-8:  # e.g. a period-2 sine sampled at its zeros
        profile = np.where(t % 2 == 0, 1.0, -1.0)
        profile = profile - profile.mean()
        std = profile.std()
    return profile / std


def _seasonal_component(
    rng: np.random.Generator, length: int, periods: Sequence[int]
) -> np.ndarray:
    """Weighted sum of seasonal patterns, unit std."""
    t = np.arange(length)
    total = np.zeros(length)
    for i, period in enumerate(periods):
        weight = 1.0 if i == 0 else rng.uniform(0.3, 1.0)
        total += weight * _seasonal_profile(rng, period)[t % period]
    std = total.std()
    return total / std if std > 0 else total


def _trend_path(
    rng: np.random.Generator, length: int, shape: str, change: float
) -> np.ndarray:
    """Monotone positive path from 1 to ``1 + change`` (``change > -1``)."""
    u = np.arange(length) / max(length - 1, 1)
    end = 1.0 + change
    if shape == "linear":
        return 1.0 + change * u
    if shape == "exponential":
        return np.exp(math.log(end) * u)
    if shape == "damped":  # fast at first, then levelling off
        rate = rng.uniform(2.0, 8.0)
        frac = (1 - np.exp(-rate * u)) / (1 - math.exp(-rate))
    elif shape == "logistic":
        centre, width = rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.2)
        s = 1 / (1 + np.exp(-(u - centre) / width))
        frac = (s - s[0]) / (s[-1] - s[0])
    elif shape == "piecewise":  # same sign, different slopes between changepoints
        knots = np.sort(rng.uniform(0, 1, size=int(rng.integers(1, 4))))
        edges = np.concatenate(([0.0], knots, [1.0]))
        slopes = rng.uniform(0.1, 1.0, size=len(edges) - 1)
        at_edges = np.concatenate(([0.0], np.cumsum(slopes * np.diff(edges))))
        frac = np.interp(u, edges, at_edges / at_edges[-1])
    else:
        msg = f"unknown trend shape {shape!r}; use one of {_TREND_SHAPES}"
        raise ValueError(msg)
    return 1.0 + change * frac


def _random_change(rng: np.random.Generator, up: float = 0.65) -> float:
    """Relative change of a trend: up to x5 growth or down to x0.15."""
    if rng.random() < up:
        return _loguniform(rng, 0.3, 4.0)
    return -rng.uniform(0.3, 0.85)


def _noisy(
    signal: np.ndarray,
    rng: np.random.Generator,
    sigma: float,
    *,
    positive: bool,
    keep_positive: bool = False,
) -> np.ndarray:
    """Add noise of relative size ``sigma`` to ``signal``.

    Additive (std ``sigma`` times the mean absolute level), proportional to
    the local level (heteroscedastic) or, for a positive signal,
    multiplicative (log-normal-like); only multiplicative with
    ``keep_positive``, which keeps a positive signal positive.
    """
    e = noise(len(signal), rng)
    level = float(np.mean(np.abs(signal))) or 1.0
    if keep_positive:
        mode = 2
    else:
        mode = rng.choice(3, p=[0.45, 0.25, 0.3] if positive else [0.65, 0.35, 0.0])
    if mode == 0:
        return signal + sigma * level * e
    if mode == 1:
        return signal + sigma * np.abs(signal) * e
    return signal * np.exp(sigma * np.clip(e, -6.0, 6.0))


def _ar_filter(e: np.ndarray, coefficients: Sequence[float] | np.ndarray) -> np.ndarray:
    """``x[t] = sum_k a[k] x[t-1-k] + e[t]``, from zeros."""
    a = [float(c) for c in coefficients]
    p = len(a)
    x = [0.0] * p
    for value in e.tolist():
        x.append(value + sum(a[k] * x[-1 - k] for k in range(p)))
    return np.asarray(x[p:])


def _random_ar(rng: np.random.Generator, order: int) -> np.ndarray:
    """Coefficients of a stationary AR(order), from roots inside the unit disc."""
    roots: list[complex] = []
    while len(roots) < order:
        if order - len(roots) >= 2 and rng.random() < 0.5:  # a pseudo-cycle
            r, theta = rng.uniform(0.5, 0.95), rng.uniform(2 * np.pi / 20, np.pi / 1.5)
            roots += [r * np.exp(1j * theta), r * np.exp(-1j * theta)]
        else:
            roots.append(complex(rng.uniform(-0.5, 0.95)))
    return -np.poly(roots)[1:].real


# ---------------------------------------------------------------- noise
def noise(
    length: int, rng: np.random.Generator, *, kind: str | None = None
) -> np.ndarray:
    """Draw unit-variance noise of one of :data:`NOISE_KINDS`.

    Parameters
    ----------
    length : int
        Number of values.
    rng : numpy.random.Generator
        Source of randomness.
    kind : {"gaussian", "student_t", "laplace", "garch"} or None
        Gaussian; Student-t with 2.5 to 6 degrees of freedom (heavy tails);
        Laplace; GARCH(1, 1) (volatility clustering, heteroscedastic).
        Random when None.

    Returns
    -------
    numpy.ndarray
        (length,) values with mean 0 and variance 1 in expectation.

    Examples
    --------
    >>> import numpy as np
    >>> e = noise(10_000, np.random.default_rng(0), kind="laplace")
    >>> bool(abs(e.std() - 1) < 0.05)
    True
    """
    length = _check_length(length, 1)
    if kind is None:
        kind = NOISE_KINDS[int(rng.choice(len(NOISE_KINDS), p=_NOISE_WEIGHTS))]
    if kind == "gaussian":
        return rng.standard_normal(length)
    if kind == "student_t":
        df = rng.uniform(2.5, 6.0)
        return rng.standard_t(df, size=length) * math.sqrt((df - 2) / df)
    if kind == "laplace":
        return rng.laplace(0.0, 1 / math.sqrt(2), size=length)
    if kind == "garch":
        a = rng.uniform(0.05, 0.2)
        b = rng.uniform(0.5, 0.93 - a)
        omega = 1.0 - a - b  # unconditional variance 1
        z = rng.standard_normal(length).tolist()
        out = []
        h, e = 1.0, 0.0
        for value in z:
            h = omega + a * e * e + b * h
            e = math.sqrt(h) * value
            out.append(e)
        return np.asarray(out)
    msg = f"unknown noise kind {kind!r}; use one of {NOISE_KINDS}"
    raise ValueError(msg)


# ---------------------------------------------------------------- kinds
def trend_series(
    length: int,
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    change: float | None = None,
) -> np.ndarray:
    """Generate a positive monotone trend plus noise.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    shape : {"linear", "exponential", "damped", "logistic", "piecewise"} or None
        Shape of the level path (random when None).
    change : float or None
        Relative change of the level from the first to the last step, above
        -1 (the path goes from 1 to ``1 + change``); random (x1.3 to x5 up,
        or x0.15 to x0.7 down) when None.

    Returns
    -------
    numpy.ndarray
        (length,) values; the noise std is 2 % to 25 % of ``|change|`` times
        the mean level, so the trend dominates.

    Examples
    --------
    >>> import numpy as np
    >>> y = trend_series(50, np.random.default_rng(0), shape="linear", change=2.0)
    >>> bool(y[-5:].mean() > y[:5].mean())
    True
    """
    length = _check_length(length)
    if shape is None:
        shape = _TREND_SHAPES[int(rng.integers(len(_TREND_SHAPES)))]
    if change is None:
        change = _random_change(rng)
    elif not -1.0 < change < math.inf:
        msg = f"change must be above -1, got {change}"
        raise ValueError(msg)
    path = _trend_path(rng, length, shape, float(change))
    sigma = rng.uniform(0.02, 0.25) * abs(change) / float(np.mean(path))
    return _noisy(path, rng, sigma, positive=True)


def seasonal_series(
    length: int,
    rng: np.random.Generator,
    *,
    periods: Sequence[int] | None = None,
    multiplicative: bool | None = None,
    amplitude: float | None = None,
) -> np.ndarray:
    """One or more seasonalities on a trend, additive or multiplicative.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    periods : sequence of int or None
        Seasonal periods, the first one the strongest. Random when None: one
        (70 %), two (25 %) or three periods from :data:`PERIODS` with at least
        two cycles in ``length``.
    multiplicative : bool or None
        ``level * exp(amplitude * season)`` with multiplicative noise
        (positive, the swing grows with the level) or ``level + amplitude *
        mean_level * season``. Random when None.
    amplitude : float or None
        Std of the seasonal component relative to the level (random in
        [0.05, 0.6] when None); the noise is 10 % to 60 % of it.

    Returns
    -------
    numpy.ndarray
        (length,) values.

    Examples
    --------
    >>> import numpy as np
    >>> y = seasonal_series(120, np.random.default_rng(0), periods=[12])
    >>> y.shape
    (120,)
    """
    length = _check_length(length)
    if periods is None:
        first = _choose_period(rng, length)
        chosen = [first if first is not None else max(2, length // 2)]
        extra = int(rng.choice(3, p=[0.7, 0.25, 0.05]))
        for _ in range(extra):
            p = _choose_period(rng, length, exclude=chosen)
            if p is not None:
                chosen.append(p)
    else:
        chosen = [int(p) for p in periods]
        if not chosen or min(chosen) < 2:
            msg = f"periods must be a non-empty sequence of ints >= 2, got {periods}"
            raise ValueError(msg)
    if multiplicative is None:
        multiplicative = bool(rng.random() < 0.5)
    if amplitude is None:
        amplitude = rng.uniform(0.05, 0.6)
    elif not 0 < amplitude < math.inf:
        msg = f"amplitude must be positive, got {amplitude}"
        raise ValueError(msg)
    season = _seasonal_component(rng, length, chosen)
    if rng.random() < 0.3:  # slowly drifting seasonal amplitude
        u = np.arange(length) / length
        freq, phase = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * np.pi)
        season = season * (1 + 0.3 * np.sin(2 * np.pi * freq * u + phase))
    if rng.random() < 0.3:
        level = np.ones(length)
    else:
        shape = _TREND_SHAPES[int(rng.integers(len(_TREND_SHAPES)))]
        level = _trend_path(rng, length, shape, 0.5 * _random_change(rng))
    if multiplicative:
        signal = level * np.exp(amplitude * season)
    else:
        signal = level + amplitude * float(level.mean()) * season
    sigma = rng.uniform(0.1, 0.6) * amplitude
    positive = bool(signal.min() > 0)
    return _noisy(signal, rng, sigma, positive=positive, keep_positive=multiplicative)


def random_walk_series(
    length: int, rng: np.random.Generator, *, variant: str | None = None
) -> np.ndarray:
    """Generate a random walk: additive, geometric or integrated.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    variant : {"additive", "geometric", "integrated"} or None
        ``additive``: cumulative sum of (possibly heavy-tailed) steps with an
        optional drift, shifted to stay positive 60 % of the time;
        ``geometric``: ``exp`` of such a walk with 0.5 % to 8 % steps
        (positive); ``integrated``: cumulative sum of an AR(1) slope (smooth,
        persistent trends). Random when None.

    Returns
    -------
    numpy.ndarray
        (length,) values.

    Examples
    --------
    >>> import numpy as np
    >>> y = random_walk_series(100, np.random.default_rng(0), variant="geometric")
    >>> bool((y > 0).all())
    True
    """
    length = _check_length(length)
    if variant is None:
        variant = _RANDOM_WALKS[int(rng.choice(3, p=[0.45, 0.3, 0.25]))]
    e = noise(length, rng)
    if variant == "geometric":
        sigma = rng.uniform(0.005, 0.08)
        drift = float(np.clip(rng.normal(0, sigma / 2), -2 / length, 2 / length))
        return np.exp(np.cumsum(drift + sigma * np.clip(e, -6.0, 6.0)))
    if variant == "additive":
        drift = rng.normal(0, 0.3) if rng.random() < 0.5 else 0.0
        x = np.cumsum(drift + e)
    elif variant == "integrated":
        phi = rng.uniform(0.5, 0.99)
        slope = _ar_filter(0.1 * e, [phi]) + rng.normal(0, 0.3)
        x = np.cumsum(slope)
    else:
        msg = f"unknown random walk {variant!r}; use one of {_RANDOM_WALKS}"
        raise ValueError(msg)
    if rng.random() < 0.6:  # a positive series, e.g. a price or a stock level
        spread = float(x.std()) or 1.0
        x = x - x.min() + rng.uniform(0.5, 5.0) * spread
    return x


def ar_series(
    length: int,
    rng: np.random.Generator,
    *,
    coefficients: Sequence[float] | None = None,
    ma_coefficient: float | None = None,
    seasonal_period: int | None = None,
    seasonal_coefficient: float | None = None,
) -> np.ndarray:
    """Generate a stationary autoregressive process.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    coefficients : sequence of float or None
        AR coefficients ``a`` of ``x[t] = sum_k a[k] x[t-1-k] + e[t]``; they
        must be stationary. Random AR(1) to AR(3) (possibly with pseudo-cycles)
        when None, with a random MA(1) term (30 %) and seasonal AR term (25 %)
        unless given below; given coefficients mean no MA or seasonal term
        unless given below.
    ma_coefficient : float or None
        ``theta`` of an MA(1) term ``e[t] + theta * e[t-1]``.
    seasonal_period, seasonal_coefficient : int and float, or None
        A multiplicative seasonal AR term ``(1 - Phi B^s)``, ``|Phi| < 1``.

    Returns
    -------
    numpy.ndarray
        (length,) values: the process after a burn-in, unit noise scale,
        shifted to a positive mean half of the time.

    Examples
    --------
    >>> import numpy as np
    >>> y = ar_series(2000, np.random.default_rng(0), coefficients=[0.8])
    >>> bool(abs(np.corrcoef(y[1:], y[:-1])[0, 1] - 0.8) < 0.05)
    True
    """
    length = _check_length(length)
    explicit = coefficients is not None
    if coefficients is None:
        a = _random_ar(rng, int(rng.integers(1, 4)))
    else:
        a = np.asarray(coefficients, dtype=float)
        if a.ndim != 1 or not np.isfinite(a).all():
            msg = "coefficients must be a 1-d sequence of finite floats"
            raise ValueError(msg)
        if len(a) and np.abs(np.roots(np.concatenate(([1.0], -a)))).max() >= 1:
            msg = f"AR coefficients {list(a)} are not stationary"
            raise ValueError(msg)
    if ma_coefficient is None and not explicit and rng.random() < 0.3:
        ma_coefficient = rng.uniform(-0.8, 0.8)
    if seasonal_period is None and seasonal_coefficient is not None:
        msg = "seasonal_coefficient needs seasonal_period"
        raise ValueError(msg)
    if seasonal_period is None and not explicit and rng.random() < 0.25:
        seasonal_period = _choose_period(rng, length)
    if seasonal_period is not None:
        if seasonal_period < 1:
            msg = f"seasonal_period must be positive, got {seasonal_period}"
            raise ValueError(msg)
        if seasonal_coefficient is None:
            seasonal_coefficient = rng.uniform(0.3, 0.9)
        elif not -1 < seasonal_coefficient < 1:
            msg = f"seasonal_coefficient must be in (-1, 1), got {seasonal_coefficient}"
            raise ValueError(msg)
    burn = 50 + 10 * len(a) + 3 * (seasonal_period or 0)
    e = noise(length + burn, rng)
    if ma_coefficient is not None:
        e[1:] = e[1:] + ma_coefficient * e[:-1]
    if seasonal_period is not None and seasonal_coefficient is not None:
        s = seasonal_period
        for t in range(s, len(e)):  # in place: e becomes the seasonal AR
            e[t] += seasonal_coefficient * e[t - s]
    x = _ar_filter(e, a)[burn:]
    if rng.random() < 0.5:
        x = x + rng.uniform(2.0, 10.0) * (float(x.std()) or 1.0)
    return x


def ets_series(
    length: int,
    rng: np.random.Generator,
    *,
    error: str | None = None,
    trend: str | None = None,
    season: str | None = None,
    period: int | None = None,
) -> np.ndarray:
    """Simulate an exponential smoothing (ETS) state-space model.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    error : {"A", "M"} or None
        Additive or multiplicative error.
    trend : {"N", "A", "Ad"} or None
        No, additive or damped additive trend.
    season : {"N", "A", "M"} or None
        No, additive or multiplicative seasonality.
    period : int or None
        Seasonal period (random from :data:`PERIODS` when None).

    Returns
    -------
    numpy.ndarray
        (length,) values starting from a level of 1. With a multiplicative
        error and no additive season the series is positive.

    Notes
    -----
    The error-correction form of Hyndman et al. (2008): with the one-step
    error ``eps = y - yhat`` (``yhat * e`` for a multiplicative error),
    ``l = l + phi * b + alpha * eps / s`` (no ``/ s`` for an additive
    season), ``b = phi * b + beta * eps / s`` and ``s = s + gamma * eps /
    (l + phi * b)`` (multiplicative season) or ``s + gamma * eps``. The level
    and the one-step level forecast ``l + phi * b`` are kept above 1 % of the
    starting level, multiplicative seasonal indices above 0.05.

    Examples
    --------
    >>> import numpy as np
    >>> y = ets_series(60, np.random.default_rng(0), error="M", trend="Ad", season="N")
    >>> bool((y > 0).all())
    True
    """
    length = _check_length(length)
    error = error or ("A", "M")[int(rng.integers(2))]
    trend = trend or ("N", "A", "Ad")[int(rng.choice(3, p=[0.35, 0.3, 0.35]))]
    season = season or ("N", "A", "M")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    for name, value, allowed in (
        ("error", error, ("A", "M")),
        ("trend", trend, ("N", "A", "Ad")),
        ("season", season, ("N", "A", "M")),
    ):
        if value not in allowed:
            msg = f"{name} must be one of {allowed}, got {value!r}"
            raise ValueError(msg)
    if season != "N" and period is None:
        period = _choose_period(rng, length) or max(2, length // 2)
    if period is not None and period < 2:
        msg = f"period must be at least 2, got {period}"
        raise ValueError(msg)
    alpha = rng.uniform(0.05, 0.6)
    beta = rng.uniform(0.0, 0.2) * alpha if trend != "N" else 0.0
    gamma = rng.uniform(0.0, 0.3) * (1 - alpha) if season != "N" else 0.0
    phi = rng.uniform(0.8, 0.98) if trend == "Ad" else 1.0
    sigma = rng.uniform(0.01, 0.1)
    level, floor = 1.0, 0.01
    slope = rng.uniform(-0.02, 0.05) if trend != "N" else 0.0
    m = period if season != "N" and period is not None else 1
    if season == "N":
        states = [0.0]
    else:
        profile = rng.uniform(0.05, 0.4) * _seasonal_profile(rng, m)
        states = (np.exp(profile) / np.exp(profile).mean()).tolist()
        if season == "A":
            states = (profile * level).tolist()
    e = np.clip(noise(length, rng) * sigma, -0.9, 0.9).tolist()
    out = []
    for t in range(length):
        s = states[t % m]
        base = max(level + phi * slope, floor)
        yhat = base * s if season == "M" else base + s
        eps = yhat * e[t] if error == "M" else e[t]
        out.append(yhat + eps)
        scaled = eps / s if season == "M" else eps
        level = max(base + alpha * scaled, floor)
        slope = phi * slope + beta * scaled
        if season == "M":
            states[t % m] = max(s + gamma * eps / base, 0.05)
        elif season == "A":
            states[t % m] = s + gamma * eps
    return np.asarray(out)


def level_shift_series(
    length: int,
    rng: np.random.Generator,
    *,
    n_shifts: int | None = None,
    shift_size: float | None = None,
) -> np.ndarray:
    """Generate a flat level with abrupt, lasting jumps.

    Parameters
    ----------
    length : int
        Number of steps (at least 4).
    rng : numpy.random.Generator
        Source of randomness.
    n_shifts : int or None
        Number of jumps (1 to 3 when None, fewer in short series).
    shift_size : float or None
        Size of each jump in noise standard deviations (random in [3, 10]
        when None); each jump is up or down at random.

    Returns
    -------
    numpy.ndarray
        (length,) values around a level of 3 to 30 noise stds, with unit
        noise; sometimes with a mild seasonality (30 %) or 1 to 3 outliers
        (20 %). Jumps happen between 10 % and 90 % of the series.

    Examples
    --------
    >>> import numpy as np
    >>> y = level_shift_series(100, np.random.default_rng(0), n_shifts=1, shift_size=8)
    >>> y.shape
    (100,)
    """
    length = _check_length(length, 4)
    low, high = max(1, int(0.1 * length)), max(2, int(0.9 * length))
    if n_shifts is None:
        n_shifts = min(int(rng.integers(1, 4)), max(1, length // 8))
    if not 1 <= n_shifts <= high - low:
        msg = f"n_shifts must be in [1, {high - low}] for length {length}"
        raise ValueError(msg)
    if shift_size is not None and not 0 < shift_size < math.inf:
        msg = f"shift_size must be positive, got {shift_size}"
        raise ValueError(msg)
    t = np.arange(length)
    x = np.full(length, rng.uniform(3.0, 30.0))
    positions = np.sort(rng.choice(np.arange(low, high), size=n_shifts, replace=False))
    for position in positions:
        size = shift_size if shift_size is not None else rng.uniform(3.0, 10.0)
        x += (1.0 if rng.random() < 0.5 else -1.0) * size * (t >= position)
    if rng.random() < 0.3:
        period = _choose_period(rng, length)
        if period is not None:
            x += rng.uniform(0.3, 1.0) * _seasonal_profile(rng, period)[t % period]
    x += noise(length, rng)
    if rng.random() < 0.2:
        spikes = rng.choice(length, size=int(rng.integers(1, 4)), replace=True)
        x[spikes] += rng.choice([-1.0, 1.0], size=len(spikes)) * rng.uniform(
            5.0, 10.0, size=len(spikes)
        )
    return x


def intermittent_series(
    length: int,
    rng: np.random.Generator,
    *,
    variant: str | None = None,
    demand_probability: float | None = None,
    mean_size: float | None = None,
) -> np.ndarray:
    """Non-negative integer counts with many zeros.

    Parameters
    ----------
    length : int
        Number of steps (at least 2).
    rng : numpy.random.Generator
        Source of randomness.
    variant : {"croston", "poisson"} or None
        ``croston``: a demand occurs with ``demand_probability`` at each step,
        of size ``1 + NegBin`` with mean ``mean_size``; ``poisson``: Poisson
        counts with a low rate (0.05 to 3, times an optional trend and
        seasonality). Random when None.
    demand_probability : float or None
        Probability of a demand per step, in (0, 1] (``croston``; random in
        [0.05, 0.6] when None).
    mean_size : float or None
        Mean demand size, at least 1 (``croston``; random in [1, 20]).

    Returns
    -------
    numpy.ndarray
        (length,) float array of non-negative integers, never all zero.

    Examples
    --------
    >>> import numpy as np
    >>> y = intermittent_series(200, np.random.default_rng(0), variant="croston",
    ...                         demand_probability=0.2)
    >>> bool((y == np.round(y)).all() and (y >= 0).all())
    True
    """
    length = _check_length(length)
    if variant is None:
        variant = _INTERMITTENT[int(rng.integers(2))]
    if variant == "croston":
        if demand_probability is None:
            demand_probability = rng.uniform(0.05, 0.6)
        elif not 0 < demand_probability <= 1:
            msg = f"demand_probability must be in (0, 1], got {demand_probability}"
            raise ValueError(msg)
        if mean_size is None:
            mean_size = _loguniform(rng, 1.0, 20.0)
        elif not 1 <= mean_size < math.inf:
            msg = f"mean_size must be at least 1, got {mean_size}"
            raise ValueError(msg)
        extra = mean_size - 1.0
        if extra > 0:  # negative binomial with mean `extra`, dispersion r
            r = _loguniform(rng, 0.5, 20.0)
            sizes = 1 + rng.negative_binomial(r, r / (r + extra), size=length)
        else:
            sizes = np.ones(length, dtype=np.int64)
        x = np.where(rng.random(length) < demand_probability, sizes, 0)
    elif variant == "poisson":
        rate = _loguniform(rng, 0.05, 3.0) * np.ones(length)
        if rng.random() < 0.4:
            period = _choose_period(rng, length)
            if period is not None:
                t = np.arange(length)
                profile = _seasonal_profile(rng, period)
                rate = rate * np.exp(rng.uniform(0.2, 0.8) * profile[t % period])
        if rng.random() < 0.3:
            rate = rate * _trend_path(rng, length, "exponential", _random_change(rng))
        x = rng.poisson(rate)
    else:
        msg = f"unknown intermittent variant {variant!r}; use one of {_INTERMITTENT}"
        raise ValueError(msg)
    if not x.any():
        x[rng.integers(length)] = 1
    return x.astype(float)


# ---------------------------------------------------------------- KernelSynth
def random_kernel(
    length: int, rng: np.random.Generator, *, max_kernels: int = 5
) -> KernelSpec:
    """Draw a KernelSynth composition of 1 to ``max_kernels`` bank kernels.

    The bank (lengths in time steps, ``n = length``): linear (dot product)
    with ``sigma0`` in {0, 1, 10}; RBF with length scale in {0.03, 0.1, 0.3,
    1, 10} x n; periodic with a period from :data:`PERIODS` (at most ``n``)
    or ``n / k`` and length scale in {0.5, 1, 2}; rational quadratic with
    length scale in {0.1, 1} x n and alpha in {0.1, 1, 10}; white noise of
    variance 0.1 or 1; constant 1. Kernels are combined left to right with
    ``+`` or ``*`` at random.

    Parameters
    ----------
    length : int
        Number of steps of the series the kernel is for.
    rng : numpy.random.Generator
        Source of randomness.
    max_kernels : int
        Most bank kernels in the composition.

    Returns
    -------
    tuple
        A kernel specification (see :func:`kernel_matrix`).

    Examples
    --------
    >>> import numpy as np
    >>> spec = random_kernel(100, np.random.default_rng(1), max_kernels=1)
    >>> spec[0] in {"linear", "rbf", "periodic", "rq", "white", "constant"}
    True
    """
    length = _check_length(length)
    if isinstance(max_kernels, bool) or max_kernels < 1:
        msg = f"max_kernels must be a positive int, got {max_kernels!r}"
        raise ValueError(msg)
    leaves = []
    for _ in range(int(rng.integers(1, max_kernels + 1))):
        family = _KERNEL_FAMILIES[
            int(rng.choice(len(_KERNEL_FAMILIES), p=_KERNEL_WEIGHTS))
        ]
        leaf: KernelSpec
        if family == "linear":
            leaf = ("linear", float(rng.choice([0.0, 1.0, 10.0])))
        elif family == "rbf":
            scale = float(rng.choice([0.03, 0.1, 0.3, 1.0, 10.0])) * length
            leaf = ("rbf", max(scale, 1.0))
        elif family == "periodic":
            fits = [p for p in PERIODS if p <= length]
            if fits and rng.random() < 0.7:
                period = float(rng.choice(fits))
            else:
                period = length / float(rng.choice([1.0, 2.0, 3.0, 4.0]))
            leaf = ("periodic", period, float(rng.choice([0.5, 1.0, 2.0])))
        elif family == "rq":
            scale = float(rng.choice([0.1, 1.0])) * length
            leaf = ("rq", scale, float(rng.choice([0.1, 1.0, 10.0])))
        elif family == "white":
            leaf = ("white", float(rng.choice([0.1, 1.0])))
        else:
            leaf = ("constant", 1.0)
        leaves.append(leaf)
    spec: KernelSpec = leaves[0]
    for leaf in leaves[1:]:
        spec = ("add" if rng.random() < 0.5 else "mul", spec, leaf)
    return spec


def _kernel_terms(spec: KernelSpec, length: int) -> dict[int, np.ndarray]:
    """Expand a kernel as ``{i: T_i}``: ``K = sum_i (x x')^i * T_i(|t - t'|)``.

    ``x = t / length``; the stationary factor of each power of the linear
    kernel is kept as its values at lags ``0 .. length - 1``.
    """
    lag = np.arange(length, dtype=float)
    name = spec[0]
    if name in ("add", "mul"):
        left, right = _kernel_terms(spec[1], length), _kernel_terms(spec[2], length)
        out: dict[int, np.ndarray] = {}
        if name == "add":
            for terms in (left, right):
                for i, values in terms.items():
                    out[i] = out[i] + values if i in out else values
        else:
            for i, a in left.items():
                for j, b in right.items():
                    out[i + j] = out[i + j] + a * b if i + j in out else a * b
        return out
    if name == "linear":
        return {0: np.full(length, float(spec[1]) ** 2), 1: np.ones(length)}
    if name == "rbf":
        return {0: np.exp(-0.5 * (lag / float(spec[1])) ** 2)}
    if name == "periodic":
        period, scale = float(spec[1]), float(spec[2])
        return {0: np.exp(-2 * np.sin(np.pi * lag / period) ** 2 / scale**2)}
    if name == "rq":
        scale, alpha = float(spec[1]), float(spec[2])
        return {0: (1 + lag**2 / (2 * alpha * scale**2)) ** -alpha}
    if name == "white":
        return {0: np.where(lag == 0, float(spec[1]), 0.0)}
    if name == "constant":
        return {0: np.full(length, float(spec[1]))}
    msg = f"unknown kernel {name!r} in {spec!r}"
    raise ValueError(msg)


def kernel_matrix(spec: KernelSpec, length: int) -> np.ndarray:
    """Return the covariance matrix of a kernel on the steps 0 to ``length - 1``.

    Parameters
    ----------
    spec : tuple
        A kernel: ``("rbf", length_scale)``, ``("periodic", period,
        length_scale)`` (``exp(-2 sin^2(pi d / period) / length_scale^2)``),
        ``("rq", length_scale, alpha)``, ``("linear", sigma0)``
        (``sigma0^2 + x x'`` with ``x = t / length``), ``("white",
        variance)``, ``("constant", value)``, or ``("add", a, b)`` /
        ``("mul", a, b)`` of two kernels. Length scales and periods are in
        time steps.
    length : int
        Number of grid points.

    Returns
    -------
    numpy.ndarray
        (length, length) symmetric positive semi-definite matrix.

    Examples
    --------
    >>> K = kernel_matrix(("add", ("periodic", 4.0, 1.0), ("white", 0.1)), 8)
    >>> bool(abs(K[0, 4] - K[0, 0] + 0.1) < 1e-12)
    True
    """
    length = _check_length(length, 1)
    x = np.arange(length) / length
    out = np.zeros((length, length))
    view = np.lib.stride_tricks.sliding_window_view
    for power, values in _kernel_terms(spec, length).items():
        # Toeplitz matrix values[|i - j|] without an index matrix
        toeplitz = view(np.concatenate((values[:0:-1], values)), length)[::-1]
        if power == 0:
            out += toeplitz
        else:
            xp = x**power
            out += np.outer(xp, xp) * toeplitz
    return out


_BLAS: list[Any] = []  # a cached threadpoolctl controller, or None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run small factorisations on one BLAS thread (if threadpoolctl is there)."""
    if not _BLAS:
        try:  # installed with scikit-learn; not a dependency of this package
            module = importlib.import_module("threadpoolctl")
            _BLAS.append(module.ThreadpoolController())
        except ImportError:  # pragma: no cover - scikit-learn requires it
            _BLAS.append(None)
    controller = _BLAS[0]
    if controller is None:  # pragma: no cover
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """Return ``L`` with ``L L' ~= matrix``, adding jitter as needed.

    ``matrix`` is overwritten (its diagonal gets the jitter).
    """
    diagonal = np.diag_indices_from(matrix)
    base = matrix[diagonal].copy()
    scale = max(float(base.mean()), 1e-12)
    with _one_blas_thread():
        for jitter in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
            matrix[diagonal] = base + jitter * scale
            try:
                factor = np.linalg.cholesky(matrix)
            except np.linalg.LinAlgError:
                continue
            if np.isfinite(factor).all():
                return factor
        values, vectors = np.linalg.eigh(matrix)  # pragma: no cover - last resort
    return vectors * np.sqrt(np.clip(values, 0.0, None))  # pragma: no cover


def sample_gp(spec: KernelSpec, length: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a zero-mean Gaussian-process sample at the steps 0 to ``length - 1``.

    Parameters
    ----------
    spec : tuple
        Kernel specification (see :func:`kernel_matrix`).
    length : int
        Number of steps.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        (length,) values ``L z`` with ``L`` the Cholesky factor of the kernel
        matrix plus a relative jitter of 1e-6 (more if needed), ``z``
        standard normal. O(length^3): keep ``length`` to about 1024.

    Examples
    --------
    >>> import numpy as np
    >>> y = sample_gp(("rbf", 10.0), 64, np.random.default_rng(0))
    >>> y.shape
    (64,)
    """
    factor = _cholesky(kernel_matrix(spec, length))
    z = rng.standard_normal(length)
    with _one_blas_thread():
        return factor @ z


def kernel_synth_series(
    length: int,
    rng: np.random.Generator,
    *,
    kernel: KernelSpec | None = None,
    max_kernels: int = 5,
) -> np.ndarray:
    """Generate a KernelSynth series: a Gaussian-process sample.

    Parameters
    ----------
    length : int
        Number of steps (at least 2; the cost grows as ``length^3``).
    rng : numpy.random.Generator
        Source of randomness.
    kernel : tuple or None
        Kernel specification (see :func:`kernel_matrix`); a
        :func:`random_kernel` composition when None.
    max_kernels : int
        Most bank kernels in a random composition.

    Returns
    -------
    numpy.ndarray
        (length,) values.

    Examples
    --------
    >>> import numpy as np
    >>> y = kernel_synth_series(96, np.random.default_rng(0),
    ...                         kernel=("periodic", 24.0, 1.0))
    >>> bool(np.corrcoef(y[24:], y[:-24])[0, 1] > 0.99)
    True
    """
    length = _check_length(length)
    if kernel is None:
        kernel = random_kernel(length, rng, max_kernels=max_kernels)
    return sample_gp(kernel, length, rng)


_GENERATORS: Mapping[str, Callable[[int, np.random.Generator], np.ndarray]] = (
    MappingProxyType(
        {
            "trend": trend_series,
            "seasonal": seasonal_series,
            "random_walk": random_walk_series,
            "ar": ar_series,
            "ets": ets_series,
            "level_shift": level_shift_series,
            "intermittent": intermittent_series,
            "kernel_synth": kernel_synth_series,
        }
    )
)
#: kinds whose values are counts: never rescaled
_COUNT_KINDS = frozenset({"intermittent"})


# ---------------------------------------------------------------- missing values
def inject_missing(
    values: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    *,
    block_probability: float = 0.3,
) -> np.ndarray:
    """Replace a fraction ``rate`` of the values by NaN.

    Parameters
    ----------
    values : numpy.ndarray
        (time,) values.
    rate : float
        Expected fraction of missing values, in [0, 1).
    rng : numpy.random.Generator
        Source of randomness.
    block_probability : float
        Probability that the missing values form one contiguous gap of
        ``round(rate * time)`` steps instead of being scattered independently.

    Returns
    -------
    numpy.ndarray
        A float copy with NaN; at least one value stays observed.

    Examples
    --------
    >>> import numpy as np
    >>> y = inject_missing(np.arange(1000.0), 0.1, np.random.default_rng(0))
    >>> bool(0.05 < np.isnan(y).mean() < 0.15)
    True
    """
    if not 0 <= rate < 1:
        msg = f"rate must be in [0, 1), got {rate}"
        raise ValueError(msg)
    out = np.array(values, dtype=float)
    n = len(out)
    if rate == 0 or n == 0:
        return out
    if rng.random() < block_probability:
        gap = round(rate * n)
        start = int(rng.integers(0, n - gap + 1))
        mask = np.zeros(n, dtype=bool)
        mask[start : start + gap] = True
    else:
        mask = rng.random(n) < rate
    if mask.all():
        mask[rng.integers(n)] = False
    out[mask] = np.nan
    return out


# ---------------------------------------------------------------- the generator
def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"{name} must be an int, got {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be at least {minimum}, got {value}"
        raise ValueError(msg)
    return int(value)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Validated settings of the synthetic generator.

    Parameters
    ----------
    min_length, max_length : int
        Series lengths are log-uniform integers in ``[min_length,
        max_length]``; ``min_length >= 8``.
    kinds : sequence of str
        Kinds to draw from, a subset of :data:`KINDS` without repeats.
    weights : mapping or sequence of float, or None
        Relative frequency of the kinds: a mapping from kind to weight (kinds
        left out get 0), a sequence aligned with ``kinds``, or None for
        :data:`DEFAULT_WEIGHTS`. Non-negative, with a positive total. Stored
        as a tuple aligned with ``kinds``.
    missing_rate : float
        Expected fraction of values replaced by NaN, in [0, 1).
    scale_range : tuple of float or None
        The mean absolute value of each non-count series is log-uniform in
        this range (``0 < low <= high``); None leaves the kinds' own scale
        (around 1).
    gp_max_length : int
        ``kernel_synth`` series are at most this long (their cost is cubic in
        the length); at least ``min_length``.

    Examples
    --------
    >>> config = SyntheticConfig(max_length=64, weights={"seasonal": 1, "ar": 1})
    >>> [kind for kind, w in zip(config.kinds, config.weights) if w > 0]
    ['seasonal', 'ar']
    >>> series = config.generate(3, seed=0)
    >>> [16 <= len(y) <= 64 for y in series]
    [True, True, True]
    """

    min_length: int = 24
    max_length: int = 512
    kinds: Sequence[str] = KINDS
    weights: Mapping[str, float] | Sequence[float] | None = None
    missing_rate: float = 0.0
    scale_range: tuple[float, float] | None = (1e-2, 1e5)
    gp_max_length: int = 1024

    def __post_init__(self) -> None:
        min_length = _positive_int("min_length", self.min_length, 8)
        max_length = _positive_int("max_length", self.max_length, 8)
        if max_length < min_length:
            msg = f"max_length ({max_length}) is below min_length ({min_length})"
            raise ValueError(msg)
        gp_max_length = _positive_int("gp_max_length", self.gp_max_length, 8)
        if gp_max_length < min_length:
            msg = f"gp_max_length ({gp_max_length}) is below min_length ({min_length})"
            raise ValueError(msg)
        if isinstance(self.kinds, str):
            msg = (
                f"kinds must be a sequence of kind names, got the string {self.kinds!r}"
            )
            raise TypeError(msg)
        kinds = tuple(self.kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if not kinds or unknown or len(set(kinds)) != len(kinds):
            msg = f"kinds must be distinct names from {KINDS}, got {kinds}" + (
                f" (unknown: {unknown})" if unknown else ""
            )
            raise ValueError(msg)
        weights = self._weights(kinds)
        if not 0 <= self.missing_rate < 1:
            msg = f"missing_rate must be in [0, 1), got {self.missing_rate}"
            raise ValueError(msg)
        scale_range = self.scale_range
        if scale_range is not None:
            low, high = (float(v) for v in scale_range)
            if not 0 < low <= high < math.inf:
                msg = f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}"
                raise ValueError(msg)
            scale_range = (low, high)
        for name, value in (
            ("min_length", min_length),
            ("max_length", max_length),
            ("gp_max_length", gp_max_length),
            ("kinds", kinds),
            ("weights", weights),
            ("missing_rate", float(self.missing_rate)),
            ("scale_range", scale_range),
        ):
            object.__setattr__(self, name, value)

    def _weights(self, kinds: tuple[str, ...]) -> tuple[float, ...]:
        raw = self.weights
        if raw is None:
            values = [DEFAULT_WEIGHTS[k] for k in kinds]
        elif isinstance(raw, Mapping):
            extra = sorted(set(raw) - set(kinds))
            if extra:
                msg = f"weights name kinds that are not in kinds: {extra}"
                raise ValueError(msg)
            values = [float(raw.get(k, 0.0)) for k in kinds]
        else:
            values = [float(w) for w in raw]
            if len(values) != len(kinds):
                msg = f"{len(values)} weights for {len(kinds)} kinds"
                raise ValueError(msg)
        if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
            msg = f"weights must be finite, non-negative, with a positive sum: {values}"
            raise ValueError(msg)
        return tuple(values)

    @property
    def probabilities(self) -> dict[str, float]:
        """Probability of each kind."""
        assert isinstance(self.weights, tuple)
        total = sum(self.weights)
        return {k: w / total for k, w in zip(self.kinds, self.weights, strict=True)}

    def sample(self, index: int, *, seed: int) -> tuple[str, np.ndarray]:
        """Return series ``index`` of the stream of ``seed``: its kind and values.

        Parameters
        ----------
        index : int
            Position in the stream (non-negative).
        seed : int
            Non-negative seed of the stream.

        Returns
        -------
        kind : str
            The kind the series was drawn from.
        values : numpy.ndarray
            (time,) float values, finite except the injected NaN.

        Examples
        --------
        >>> kind, y = SyntheticConfig(kinds=["ar"]).sample(7, seed=0)
        >>> kind, bool(24 <= len(y) <= 512)
        ('ar', True)
        """
        index = _positive_int("index", index, 0)
        seed = _positive_int("seed", seed, 0)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        p = np.asarray(self.weights, dtype=float)
        kind = self.kinds[int(rng.choice(len(p), p=p / p.sum()))]
        length = int(
            math.exp(
                rng.uniform(math.log(self.min_length), math.log(self.max_length + 1))
            )
        )
        length = min(max(length, self.min_length), self.max_length)
        if kind == "kernel_synth":
            length = min(length, self.gp_max_length)
        values = np.asarray(_GENERATORS[kind](length, rng), dtype=float)
        if not np.isfinite(values).all():  # pragma: no cover - a safety net
            values = rng.standard_normal(length)
        if self.scale_range is not None and kind not in _COUNT_KINDS:
            magnitude = float(np.mean(np.abs(values)))
            if magnitude > 0:
                values = values * (_loguniform(rng, *self.scale_range) / magnitude)
        if self.missing_rate > 0:
            values = inject_missing(values, self.missing_rate, rng)
        return kind, values

    def generate_labelled(
        self, n_series: int, *, seed: int
    ) -> tuple[list[np.ndarray], list[str]]:
        """Return the first ``n_series`` series of ``seed``'s stream and their kinds.

        Examples
        --------
        >>> series, kinds = SyntheticConfig(kinds=["trend"]).generate_labelled(
        ...     2, seed=0)
        >>> kinds
        ['trend', 'trend']
        """
        n_series = _positive_int("n_series", n_series, 0)
        pairs = [self.sample(i, seed=seed) for i in range(n_series)]
        return [values for _, values in pairs], [kind for kind, _ in pairs]

    def generate(self, n_series: int, *, seed: int) -> list[np.ndarray]:
        """Return the first ``n_series`` series of the stream of ``seed``.

        Examples
        --------
        >>> len(SyntheticConfig(max_length=32).generate(5, seed=1))
        5
        """
        return self.generate_labelled(n_series, seed=seed)[0]


def generate(
    n_series: int,
    *,
    seed: int,
    min_length: int = 24,
    max_length: int = 512,
    kinds: Sequence[str] = KINDS,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    missing_rate: float = 0.0,
    scale_range: tuple[float, float] | None = (1e-2, 1e5),
    gp_max_length: int = 1024,
) -> list[np.ndarray]:
    """Generate ``n_series`` synthetic series.

    Parameters
    ----------
    n_series : int
        Number of series.
    seed : int
        Non-negative seed; series ``i`` depends on ``(seed, i)`` only.
    min_length, max_length, kinds, weights, missing_rate, scale_range, gp_max_length
        See :class:`SyntheticConfig`.

    Returns
    -------
    list of numpy.ndarray
        (time,) float arrays, finite except the injected NaN.

    Examples
    --------
    >>> series = generate(100, seed=0, max_length=128)
    >>> len(series), all(24 <= len(y) <= 128 for y in series)
    (100, True)
    >>> all((a == b).all() for a, b in zip(series, generate(10, seed=0, max_length=128)))
    True
    """
    config = SyntheticConfig(
        min_length=min_length,
        max_length=max_length,
        kinds=kinds,
        weights=weights,
        missing_rate=missing_rate,
        scale_range=scale_range,
        gp_max_length=gp_max_length,
    )
    return config.generate(n_series, seed=seed)


def to_training_series(arrays: Sequence[np.ndarray]) -> list[TrainingSeries]:
    """Turn arrays with NaN into training series with observed masks.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        (time,) or (time, variate) float arrays; NaN marks a missing value.
        Infinite values are an error, and so is a variate without any
        observed value.

    Returns
    -------
    list of TrainingSeries
        Targets of shape (time, variate), NaN replaced by the causal mean of
        their variate (:func:`moirai_moe_sk.convert.causal_mean_impute`) and
        marked unobserved.

    Examples
    --------
    >>> import numpy as np
    >>> (s,) = to_training_series([np.array([1.0, np.nan, 3.0])])
    >>> s.target[:, 0].tolist(), s.observed[:, 0].tolist()
    ([1.0, 1.0, 3.0], [True, False, True])
    """
    from ..convert import causal_mean_impute
    from ..training.data import TrainingSeries

    out = []
    for index, array in enumerate(arrays):
        values = np.asarray(array, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[0] == 0:
            msg = (
                f"series {index}: expected a non-empty (time,) or (time, variate) array"
            )
            raise ValueError(msg)
        if np.isinf(values).any():
            msg = f"series {index} has infinite values"
            raise ValueError(msg)
        observed = ~np.isnan(values)
        if not observed.any(axis=0).all():
            msg = f"series {index} has a variate without any observed value"
            raise ValueError(msg)
        target = np.column_stack(
            [causal_mean_impute(values[:, j]) for j in range(values.shape[1])]
        )
        out.append(TrainingSeries(target, observed))
    return out


# ------------------------------------------------ mixtures and multivariate
def _standardise(values: np.ndarray) -> np.ndarray:
    """Scale to unit mean absolute value (a constant series stays as it is)."""
    magnitude = float(np.mean(np.abs(values)))
    return values / magnitude if magnitude > 0 else values


def tsmixup(
    arrays: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    max_components: int = 3,
    alpha: float = 1.5,
    max_length: int | None = None,
) -> np.ndarray:
    """One TSMixup series: a convex combination of up to ``max_components`` series.

    As in Chronos' TSMixup: ``k`` uniform in ``1..max_components`` series are
    drawn from ``arrays``, cropped to a common length at random offsets, each
    scaled to unit mean absolute value, and mixed with Dirichlet(``alpha``)
    weights. NaN stay NaN (a missing value in any component is missing).

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        (time,) source series (at least one).
    rng : numpy.random.Generator
        Source of randomness.
    max_components : int
        Most series mixed.
    alpha : float
        Dirichlet concentration of the mixing weights.
    max_length : int or None
        Cap on the mixed series' length.

    Returns
    -------
    numpy.ndarray
        (time,) values, ``time`` the shortest chosen length (capped).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = tsmixup([np.arange(1.0, 50.0), np.ones(30)], rng)
    >>> 1 <= len(y) <= 49
    True
    """
    if not arrays:
        msg = "tsmixup needs at least one source series"
        raise ValueError(msg)
    k = int(rng.integers(1, max_components + 1))
    chosen = [arrays[int(i)] for i in rng.integers(0, len(arrays), k)]
    length = min(len(a) for a in chosen)
    if max_length is not None:
        length = min(length, max_length)
    weights = rng.dirichlet(np.full(k, alpha))
    out = np.zeros(length)
    for weight, values in zip(weights, chosen, strict=True):
        start = int(rng.integers(0, len(values) - length + 1))
        out = out + weight * _standardise(np.asarray(values[start : start + length]))
    return out


#: Kinds of synthetic multivariate series drawn by :func:`multivariate_series`.
MULTIVARIATE_KINDS: tuple[str, ...] = ("factor", "lagged", "covariate")
_BASE_KINDS = ("seasonal", "ets", "random_walk", "ar", "trend", "kernel_synth")


def _base_series(length: int, rng: np.random.Generator) -> np.ndarray:
    kind = _BASE_KINDS[int(rng.integers(len(_BASE_KINDS)))]
    return _standardise(np.asarray(_GENERATORS[kind](length, rng), dtype=float))


def _covariate_path(length: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a covariate: promotion-like on/off blocks, a smooth driver or a season."""
    choice = int(rng.integers(3))
    if choice == 0:  # blocks of 1..8 steps switched on with a small rate
        x = np.zeros(length)
        t = 0
        while t < length:
            t += int(rng.geometric(rng.uniform(0.05, 0.3)))
            width = int(rng.integers(1, 9))
            x[t : t + width] = 1.0
            t += width
        return x
    if choice == 1:
        return _base_series(length, rng)
    period = _choose_period(rng, length) or max(2, length // 2)
    return np.sin(2 * np.pi * np.arange(length) / period + rng.uniform(0, 2 * np.pi))


def multivariate_series(
    length: int, rng: np.random.Generator, *, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw a synthetic multivariate series, or a target with a known covariate.

    Kinds:

    ``factor``
        2 or 3 variates sharing a common component (each its own mixing
        weight, noise and scale).
    ``lagged``
        2 variates, the second following the first with a lag of 1-12 steps.
    ``covariate``
        One target that responds (with a lag of 0-2 steps) to one covariate
        known over the whole window: on/off blocks (promotions), a smooth
        driver or a seasonal regressor.

    Parameters
    ----------
    length : int
        Number of steps.
    rng : numpy.random.Generator
        Source of randomness.
    kind : str or None
        One of :data:`MULTIVARIATE_KINDS`; random when None.

    Returns
    -------
    target : numpy.ndarray
        (time, variate) values.
    covariates : numpy.ndarray or None
        (time, 1) covariate values for ``covariate``, else None.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = multivariate_series(100, np.random.default_rng(0), kind="covariate")
    >>> y.shape, x.shape
    ((100, 1), (100, 1))
    """
    length = _check_length(length, 8)
    if kind is None:
        kind = MULTIVARIATE_KINDS[int(rng.integers(len(MULTIVARIATE_KINDS)))]
    if kind not in MULTIVARIATE_KINDS:
        msg = f"kind must be one of {MULTIVARIATE_KINDS}, got {kind!r}"
        raise ValueError(msg)
    scales = np.exp(rng.uniform(np.log(1e-1), np.log(1e4), 3))
    if kind == "factor":
        dim = int(rng.integers(2, 4))
        common = _base_series(length, rng)
        columns = []
        for i in range(dim):
            w = rng.uniform(0.3, 0.95)
            own = _base_series(length, rng)
            columns.append(scales[i] * (w * common + (1 - w) * own))
        return np.column_stack(columns), None
    if kind == "lagged":
        lag = int(rng.integers(1, min(13, max(2, length // 4))))
        lead = _base_series(length + lag, rng)
        follow = lead[:length] + rng.uniform(0.05, 0.4) * rng.standard_normal(length)
        return np.column_stack([scales[0] * lead[lag:], scales[1] * follow]), None
    x = _covariate_path(length, rng)
    lag = int(rng.integers(0, 3))
    effect = np.concatenate([np.zeros(lag), x[: length - lag]]) if lag else x
    beta = rng.uniform(0.5, 3.0) * (1 if rng.random() < 0.8 else -1)
    base = _base_series(length, rng)
    target = scales[0] * (base + beta * effect * float(np.mean(np.abs(base))))
    return target[:, None], x[:, None]
