"""The synthetic generator: seeding, bounds, validation, and each kind's property."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from moirai_moe_sk.convert import causal_mean_impute
from moirai_moe_sk.pretrain import (
    KINDS,
    SyntheticConfig,
    generate,
    synthetic,
    to_training_series,
)
from moirai_moe_sk.pretrain.synthetic import (
    PERIODS,
    ar_series,
    ets_series,
    inject_missing,
    intermittent_series,
    kernel_matrix,
    kernel_synth_series,
    level_shift_series,
    noise,
    random_kernel,
    random_walk_series,
    sample_gp,
    seasonal_series,
    trend_series,
)
from moirai_moe_sk.training.data import make_batch, sample_windows


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _acf(y: np.ndarray, max_lag: int) -> np.ndarray:
    """Correlation of ``y`` with itself ``k`` steps back, for k = 0..max_lag."""
    return np.array(
        [1.0] + [np.corrcoef(y[k:], y[:-k])[0, 1] for k in range(1, max_lag + 1)]
    )


def _deseasonalised_residual(y: np.ndarray, period: int) -> np.ndarray:
    """``y`` minus its centred moving average over one period (a 2xp MA if even)."""
    if period % 2:
        weights = np.full(period, 1.0 / period)
    else:
        weights = np.full(period + 1, 1.0 / period)
        weights[[0, -1]] = 0.5 / period
    trend = np.convolve(y, weights, mode="valid")
    half = (len(weights) - 1) // 2
    return y[half : half + len(trend)] - trend


# ---------------------------------------------------------------- the generator
def test_same_seed_same_series_and_another_seed_other_series():
    a = generate(60, seed=3, max_length=96)
    b = generate(60, seed=3, max_length=96)
    c = generate(60, seed=4, max_length=96)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert (
        sum(len(x) == len(y) and np.allclose(x, y) for x, y in zip(a, c, strict=True))
        < 3
    )


def test_series_i_depends_on_seed_and_i_only():
    config = SyntheticConfig(max_length=64)
    long = config.generate(40, seed=7)
    short = config.generate(10, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(short, long, strict=False))
    kind, values = config.sample(25, seed=7)
    assert np.array_equal(values, long[25])
    assert kind in KINDS


def test_lengths_are_within_bounds_cover_them_and_values_are_finite():
    series, kinds = SyntheticConfig(min_length=10, max_length=300).generate_labelled(
        600, seed=0
    )
    lengths = np.array([len(y) for y in series])
    assert lengths.min() >= 10
    assert lengths.max() <= 300
    assert set(kinds) == set(KINDS)
    # log-uniform: short series (M-yearly-like) as well as long ones
    assert (lengths < 30).mean() > 0.15
    assert (lengths > 150).mean() > 0.05
    assert all(np.isfinite(y).all() and y.dtype == np.float64 for y in series)


def test_kernel_synth_series_are_capped_at_gp_max_length():
    config = SyntheticConfig(
        min_length=100, max_length=400, kinds=["kernel_synth"], gp_max_length=120
    )
    assert all(100 <= len(y) <= 120 for y in config.generate(20, seed=1))


def test_levels_span_orders_of_magnitude_and_counts_stay_integers():
    config = SyntheticConfig(max_length=64, scale_range=(1e-2, 1e5))
    series, kinds = config.generate_labelled(400, seed=2)
    magnitude = []
    for y, kind in zip(series, kinds, strict=True):
        if kind == "intermittent":
            assert (y >= 0).all()
            assert np.array_equal(y, np.round(y))
        else:
            magnitude.append(np.mean(np.abs(y)))
    magnitude = np.array(magnitude)
    assert magnitude.min() >= 1e-2 * (1 - 1e-9)
    assert magnitude.max() <= 1e5 * (1 + 1e-9)
    assert magnitude.max() / magnitude.min() > 1e5
    # some series are positive-only, some are not
    positive = np.mean([(y > 0).all() for y in series])
    assert 0.3 < positive < 0.95


def test_scale_range_none_keeps_the_kinds_own_scale():
    raw = SyntheticConfig(kinds=["trend"], scale_range=None, max_length=64)
    scaled = SyntheticConfig(kinds=["trend"], max_length=64)
    for i in range(5):
        (_, a), (_, b) = raw.sample(i, seed=0), scaled.sample(i, seed=0)
        # the same shape: scaling is the last random step before missing values
        ratio = b / a
        assert np.allclose(ratio, ratio[0])
        assert 0.1 < a.mean() < 10


def test_kind_weights_are_respected():
    config = SyntheticConfig(
        max_length=32, weights={"ar": 3.0, "intermittent": 1.0, "trend": 0.0}
    )
    assert config.weights[KINDS.index("trend")] == 0.0
    assert config.probabilities["ar"] == pytest.approx(0.75)
    _, kinds = config.generate_labelled(1500, seed=0)
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert set(counts) == {"ar", "intermittent"}
    assert counts["ar"] / len(kinds) == pytest.approx(0.75, abs=0.04)


def test_default_weights_and_a_sequence_of_weights():
    config = SyntheticConfig(max_length=32)
    assert sum(config.probabilities.values()) == pytest.approx(1.0)
    _, kinds = config.generate_labelled(3000, seed=5)
    for kind, p in config.probabilities.items():
        assert kinds.count(kind) / len(kinds) == pytest.approx(p, abs=0.035)
    only = SyntheticConfig(kinds=["seasonal", "ets"], weights=[1, 0], max_length=32)
    assert set(only.generate_labelled(50, seed=0)[1]) == {"seasonal"}


def test_config_is_frozen_and_hashable():
    config = SyntheticConfig(kinds=["ar", "trend"], weights={"ar": 2})
    assert config.kinds == ("ar", "trend")
    assert config.weights == (2.0, 0.0)
    assert hash(config) == hash(SyntheticConfig(kinds=("ar", "trend"), weights=[2, 0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_length = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"min_length": 4}, ValueError, "min_length must be at least 8"),
        ({"min_length": 8.0}, TypeError, "min_length must be an int"),
        ({"min_length": True}, TypeError, "min_length must be an int"),
        ({"min_length": 50, "max_length": 40}, ValueError, "below min_length"),
        ({"kinds": ["trend", "foo"]}, ValueError, r"unknown: \['foo'\]"),
        ({"kinds": []}, ValueError, "kinds must be distinct names"),
        ({"kinds": ["ar", "ar"]}, ValueError, "kinds must be distinct names"),
        ({"kinds": "trend"}, TypeError, "sequence of kind names"),
        ({"weights": {"foo": 1.0}}, ValueError, "not in kinds"),
        ({"weights": [1.0, 2.0]}, ValueError, "2 weights for 8 kinds"),
        ({"weights": {"ar": -1.0}}, ValueError, "non-negative"),
        ({"weights": {"ar": 0.0}}, ValueError, "positive sum"),
        ({"weights": {"ar": float("nan")}}, ValueError, "finite"),
        ({"missing_rate": 1.0}, ValueError, r"missing_rate must be in \[0, 1\)"),
        ({"missing_rate": -0.1}, ValueError, r"missing_rate must be in \[0, 1\)"),
        ({"scale_range": (0.0, 1.0)}, ValueError, "scale_range"),
        ({"scale_range": (10.0, 1.0)}, ValueError, "scale_range"),
        ({"gp_max_length": 16}, ValueError, "gp_max_length .* below min_length"),
    ],
)
def test_invalid_settings_raise_clear_errors(options, error, match):
    with pytest.raises(error, match=match):
        SyntheticConfig(**options)
    with pytest.raises(error, match=match):
        generate(1, seed=0, **options)


@pytest.mark.parametrize(
    ("n_series", "seed", "error"),
    [
        (-1, 0, ValueError),
        (2, -1, ValueError),
        (2, 1.5, TypeError),
        (2.0, 1, TypeError),
    ],
)
def test_invalid_counts_and_seeds(n_series, seed, error):
    with pytest.raises(error):
        generate(n_series, seed=seed)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_handles_the_shortest_lengths_and_a_long_one(kind):
    config = SyntheticConfig(kinds=[kind], min_length=8, max_length=12)
    for y in config.generate(60, seed=0):
        assert 8 <= len(y) <= 12
        assert np.isfinite(y).all()
    (_, y) = SyntheticConfig(kinds=[kind], min_length=1024, max_length=1024).sample(
        0, seed=0
    )
    assert len(y) == 1024
    assert np.isfinite(y).all()


# ---------------------------------------------------------------- missing values
def test_missing_values_are_injected_at_the_rate_on_top_of_the_same_series():
    clean = generate(200, seed=1, max_length=128)
    holey = generate(200, seed=1, max_length=128, missing_rate=0.2)
    nan = np.concatenate([np.isnan(y) for y in holey])
    assert nan.mean() == pytest.approx(0.2, abs=0.04)
    for a, b in zip(clean, holey, strict=True):
        observed = ~np.isnan(b)
        assert observed.any()
        assert np.array_equal(a[observed], b[observed])


def test_inject_missing_scattered_block_and_never_all():
    rng = _rng(0)
    assert not np.isnan(inject_missing(np.ones(50), 0.0, rng)).any()
    block = inject_missing(np.arange(100.0), 0.25, rng, block_probability=1.0)
    where = np.flatnonzero(np.isnan(block))
    assert len(where) == 25
    assert np.array_equal(where, np.arange(where[0], where[0] + 25))
    nearly_all = inject_missing(np.ones(5), 0.999, rng, block_probability=0.0)
    assert np.isnan(nearly_all).sum() == 4
    with pytest.raises(ValueError, match="rate"):
        inject_missing(np.ones(5), 1.0, rng)


def test_to_training_series_marks_nan_unobserved_and_fills_the_causal_mean():
    arrays = generate(30, seed=2, max_length=80, missing_rate=0.3)
    series = to_training_series(arrays)
    for values, s in zip(arrays, series, strict=True):
        assert s.target.shape == s.observed.shape == (len(values), 1)
        assert np.array_equal(s.observed[:, 0], ~np.isnan(values))
        assert np.isfinite(s.target).all()
        assert np.array_equal(s.target[:, 0], causal_mean_impute(values))
    two = to_training_series([np.array([[1.0, np.nan], [np.nan, 4.0], [3.0, 5.0]])])
    assert two[0].target.tolist() == [[1.0, 4.0], [1.0, 4.0], [3.0, 5.0]]
    assert two[0].observed.tolist() == [[True, False], [False, True], [True, True]]


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([np.nan, np.nan]), "without any observed value"),
        (np.array([1.0, np.inf]), "infinite"),
        (np.array([]), "non-empty"),
        (np.zeros((2, 2, 2)), "non-empty"),
    ],
)
def test_to_training_series_rejects_bad_arrays(array, match):
    with pytest.raises(ValueError, match=match):
        to_training_series([np.ones(3), array])


def test_generated_series_feed_the_training_windows():
    series = to_training_series(generate(20, seed=0, max_length=100, missing_rate=0.1))
    windows = sample_windows([len(s) for s in series], 64, 16, (0.1, 0.5), _rng(0))
    assert windows
    batch = make_batch(series, windows[:8], 16)
    assert batch.size == min(8, len(windows))
    assert bool(batch.inputs["target"].isfinite().all())


# ---------------------------------------------------------------- noise
def test_noise_kinds_have_unit_variance_and_their_character():
    n = 20_000
    gaussian = noise(n, _rng(0), kind="gaussian")
    laplace = noise(n, _rng(0), kind="laplace")
    student = noise(n, _rng(0), kind="student_t")
    garch = noise(n, _rng(0), kind="garch")
    for e in (gaussian, laplace, garch):
        assert e.std() == pytest.approx(1.0, abs=0.1)
    # heavy tails: many more 4-sigma values than a Gaussian has
    assert (np.abs(student) > 4).sum() > 10 * max(1, (np.abs(gaussian) > 4).sum())
    # volatility clustering: squared GARCH noise is autocorrelated
    assert _acf(garch**2, 1)[1] > 0.03 > abs(_acf(gaussian**2, 1)[1])
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise(5, _rng(0), kind="pink")


# ---------------------------------------------------------------- kinds
def test_trend_has_a_significant_slope():
    t = np.arange(60.0)
    for seed in range(20):
        change = 2.0 if seed % 2 else -0.6
        y = trend_series(60, _rng(seed), shape="linear", change=change)
        slope, intercept = np.polyfit(t, y, 1)
        residual = y - (slope * t + intercept)
        stderr = residual.std(ddof=2) / np.sqrt(((t - t.mean()) ** 2).sum())
        assert np.sign(slope) == np.sign(change)
        assert abs(slope / stderr) > 5
    # random shapes and changes: monotone trends, strongly correlated with time
    corr = [
        abs(np.corrcoef(np.arange(80), trend_series(80, _rng(s)))[0, 1])
        for s in range(50)
    ]
    assert np.mean(np.array(corr) > 0.6) >= 0.9
    with pytest.raises(ValueError, match="change must be above -1"):
        trend_series(10, _rng(0), change=-1.0)
    with pytest.raises(ValueError, match="unknown trend shape"):
        trend_series(10, _rng(0), shape="cubic")


@pytest.mark.parametrize("period", [4, 7, 12, 24, 52])
@pytest.mark.parametrize("multiplicative", [False, True])
def test_seasonal_autocorrelation_peaks_at_the_period(period, multiplicative):
    hits = 0
    for seed in range(20):
        y = seasonal_series(
            8 * period, _rng(seed), periods=[period], multiplicative=multiplicative
        )
        if multiplicative:
            assert (y > 0).all()
            y = np.log(y)
        acf = _acf(_deseasonalised_residual(y, period), period + period // 2)
        hits += acf[period] > 0.3 and acf[period] >= acf[1:].max() - 0.05
    assert hits >= 18


def test_seasonal_random_periods_come_from_the_bank_and_fit_the_length():
    for seed in range(30):
        y = seasonal_series(20, _rng(seed))
        assert y.shape == (20,)
        assert np.isfinite(y).all()
    assert {4, 7, 12, 24, 52} <= set(PERIODS)
    with pytest.raises(ValueError, match="periods"):
        seasonal_series(20, _rng(0), periods=[1])


@pytest.mark.parametrize("variant", ["additive", "geometric", "integrated"])
def test_random_walks_are_persistent(variant):
    hits = 0
    for seed in range(20):
        y = random_walk_series(400, _rng(seed), variant=variant)
        if variant == "geometric":
            assert (y > 0).all()
            y = np.log(y)
        hits += _acf(y, 1)[1] > 0.9 and np.diff(y).var() < 0.1 * y.var()
    assert hits >= 18


def test_ar_matches_its_coefficients_and_is_stationary():
    y = ar_series(4000, _rng(0), coefficients=[0.8])
    assert _acf(y, 1)[1] == pytest.approx(0.8, abs=0.05)
    a1, a2 = 0.5, -0.3  # Yule-Walker: rho1 = a1 / (1 - a2), rho2 = a1 rho1 + a2
    acf = _acf(ar_series(4000, _rng(1), coefficients=[a1, a2]), 2)
    rho1 = a1 / (1 - a2)
    assert acf[1] == pytest.approx(rho1, abs=0.05)
    assert acf[2] == pytest.approx(a1 * rho1 + a2, abs=0.05)
    seasonal = ar_series(
        2400, _rng(2), coefficients=[], seasonal_period=12, seasonal_coefficient=0.7
    )
    assert _acf(seasonal, 12)[12] == pytest.approx(0.7, abs=0.07)
    for seed in range(40):  # random orders, roots, MA and seasonal terms
        y = ar_series(600, _rng(seed))
        first, second = y[:300].std(), y[300:].std()
        assert 1 / 3 < first / second < 3
        assert _acf(y, 1)[1] < 0.99
    with pytest.raises(ValueError, match="not stationary"):
        ar_series(50, _rng(0), coefficients=[1.1])
    with pytest.raises(ValueError, match="seasonal_coefficient"):
        ar_series(50, _rng(0), seasonal_period=4, seasonal_coefficient=1.0)


def test_ets_multiplicative_error_is_positive_and_its_season_shows():
    for seed in range(20):
        for season in ("N", "M"):
            y = ets_series(120, _rng(seed), error="M", season=season)
            assert (y > 0).all()
    hits = 0
    for seed in range(20):
        y = ets_series(96, _rng(seed), error="M", trend="N", season="M", period=12)
        acf = _acf(_deseasonalised_residual(np.log(y), 12), 18)
        hits += acf[12] > 0.3
    assert hits >= 16
    for options in ({"error": "X"}, {"trend": "M"}, {"season": "Q"}):
        with pytest.raises(ValueError, match="must be one of"):
            ets_series(20, _rng(0), **options)


def test_level_shift_has_a_jump():
    for seed in range(20):
        y = level_shift_series(120, _rng(seed), n_shifts=1, shift_size=4.0)
        jumps = [
            abs(np.median(y[k:]) - np.median(y[:k])) for k in range(10, len(y) - 10)
        ]
        noise_std = 1.4826 * np.median(np.abs(np.diff(y))) / np.sqrt(2)
        assert max(jumps) > 2.5 * noise_std
    with pytest.raises(ValueError, match="n_shifts"):
        level_shift_series(10, _rng(0), n_shifts=20)


def test_intermittent_series_are_sparse_non_negative_integers():
    y = intermittent_series(
        1000, _rng(0), variant="croston", demand_probability=0.2, mean_size=4.0
    )
    assert np.array_equal(y, np.round(y))
    assert (y >= 0).all()
    assert (y == 0).mean() == pytest.approx(0.8, abs=0.04)
    assert y[y > 0].mean() == pytest.approx(4.0, rel=0.2)
    zero_share = []
    for seed in range(60):
        z = intermittent_series(200, _rng(seed))
        assert (z >= 0).all()
        assert np.array_equal(z, np.round(z))
        assert z.any()
        zero_share.append((z == 0).mean())
    assert np.mean(np.array(zero_share) > 0.3) >= 0.75
    rare = intermittent_series(30, _rng(1), variant="croston", demand_probability=1e-9)
    assert rare.sum() >= 1
    with pytest.raises(ValueError, match="demand_probability"):
        intermittent_series(10, _rng(0), variant="croston", demand_probability=0.0)


# ---------------------------------------------------------------- KernelSynth
def _brute_kernel(spec, t1, t2):
    """Evaluate a kernel specification pointwise, straight from its definition."""
    name = spec[0]
    if name == "add":
        return _brute_kernel(spec[1], t1, t2) + _brute_kernel(spec[2], t1, t2)
    if name == "mul":
        return _brute_kernel(spec[1], t1, t2) * _brute_kernel(spec[2], t1, t2)
    d = np.abs(t1 - t2)
    n = len(t1)
    if name == "linear":
        return spec[1] ** 2 + (t1 / n) * (t2 / n)
    if name == "rbf":
        return np.exp(-0.5 * d**2 / spec[1] ** 2)
    if name == "periodic":
        return np.exp(-2 * np.sin(np.pi * d / spec[1]) ** 2 / spec[2] ** 2)
    if name == "rq":
        return (1 + d**2 / (2 * spec[2] * spec[1] ** 2)) ** -spec[2]
    if name == "white":
        return np.where(d == 0, spec[1], 0.0)
    assert name == "constant"
    return np.full_like(d, spec[1])


def test_kernel_matrix_equals_the_kernel_definition_and_is_psd():
    n = 40
    t = np.arange(n, dtype=float)
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    rng = _rng(0)
    specs = [random_kernel(n, rng) for _ in range(40)]
    specs.append(("mul", ("linear", 1.0), ("mul", ("linear", 0.0), ("rbf", 5.0))))
    for spec in specs:
        K = kernel_matrix(spec, n)
        brute = _brute_kernel(spec, t1[:, 0][:, None] + 0 * t2, t2)
        assert np.allclose(K, brute, rtol=1e-10, atol=1e-12), spec
        assert np.allclose(K, K.T)
        assert np.linalg.eigvalsh(K).min() > -1e-8 * max(1.0, np.abs(K).max())


def test_random_kernels_use_the_bank_and_compose_with_add_and_mul():
    leaves, ops = set(), set()

    def walk(spec):
        if spec[0] in ("add", "mul"):
            ops.add(spec[0])
            walk(spec[1])
            walk(spec[2])
        else:
            leaves.add(spec[0])

    rng = _rng(1)
    for _ in range(200):
        walk(random_kernel(256, rng, max_kernels=5))
    assert leaves == {"linear", "rbf", "periodic", "rq", "white", "constant"}
    assert ops == {"add", "mul"}
    assert random_kernel(64, rng, max_kernels=1)[0] not in ("add", "mul")
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_matrix(("matern", 1.0), 5)


def test_gp_periodic_sample_correlates_at_its_period():
    for period in (7, 12, 24):
        y = kernel_synth_series(
            10 * period,
            _rng(period),
            kernel=("add", ("periodic", float(period), 1.0), ("white", 0.01)),
        )
        acf = _acf(y - y.mean(), period)
        assert np.corrcoef(y[period:], y[:-period])[0, 1] > 0.95
        assert acf[period] > acf[period // 2] + 0.3


def test_gp_samples_of_simple_kernels_look_right():
    line = sample_gp(("linear", 0.0), 50, _rng(0))  # b * t / n: a line through 0
    t = np.arange(50.0)
    slope = np.polyfit(t, line, 1)[0]
    # exact up to the 1e-6 relative jitter on the diagonal
    assert np.abs(line - slope * t).max() < 0.02 * np.abs(line).max()
    smooth = sample_gp(("rbf", 30.0), 200, _rng(1))
    rough = sample_gp(("white", 1.0), 200, _rng(1))
    assert _acf(smooth, 1)[1] > 0.99
    assert abs(_acf(rough, 1)[1]) < 0.2
    # random compositions, including very smooth ones, always factorise
    rng = _rng(2)
    for _ in range(30):
        y = kernel_synth_series(128, rng)
        assert np.isfinite(y).all()


# ------------------------------------------------ TSMixup and multivariate
def test_tsmixup_is_a_convex_mix_of_standardised_crops():
    rng = np.random.default_rng(0)
    a, b = np.full(40, 5.0), np.full(30, -2.0)
    for _ in range(20):
        y = synthetic.tsmixup([a, b], rng, max_components=2)
        assert len(y) in (30, 40)  # the shortest chosen length
        # unit-magnitude constants mixed with weights summing to 1
        assert np.allclose(y, y[0])
        assert -1.0 <= y[0] <= 1.0
    capped = synthetic.tsmixup([np.arange(1.0, 500.0)], rng, max_length=64)
    assert len(capped) == 64
    with pytest.raises(ValueError, match="at least one"):
        synthetic.tsmixup([], rng)


@pytest.mark.parametrize("kind", synthetic.MULTIVARIATE_KINDS)
def test_multivariate_series_have_their_kinds_layout(kind):
    rng = np.random.default_rng(1)
    for length in (8, 50, 700):
        target, covariates = synthetic.multivariate_series(length, rng, kind=kind)
        assert target.shape[0] == length
        assert np.isfinite(target).all()
        if kind == "covariate":
            assert target.shape[1] == 1
            assert covariates.shape == (length, 1)
        else:
            assert target.shape[1] >= 2
            assert covariates is None


def test_multivariate_variates_are_related():
    rng = np.random.default_rng(2)
    corr = []
    for _ in range(30):
        target, _ = synthetic.multivariate_series(300, rng, kind="lagged")
        lead, follow = target[:, 0], target[:, 1]
        # the follower is the leader shifted: a lagged correlation exists
        best = max(
            abs(np.corrcoef(lead[: 300 - k], follow[k:])[0, 1]) for k in range(13)
        )
        corr.append(best)
    assert np.median(corr) > 0.8
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic.multivariate_series(50, rng, kind="other")
