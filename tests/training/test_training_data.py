"""Training windows: sampling them from series and packing them into tokens."""

from __future__ import annotations

import numpy as np
import pytest

from moirai_moe_sk.training import TrainingSeries, admissible_windows
from moirai_moe_sk.training.data import (
    WindowSpec,
    draw_window,
    make_batch,
    prediction_token_count,
    sample_windows,
    tokens_in,
)

P = 16


def _series(n, dim=1, n_cov=0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, dim)).astype(np.float32)
    cov = rng.normal(size=(n, n_cov)).astype(np.float32) if n_cov else None
    return TrainingSeries(
        y,
        np.ones_like(y, dtype=bool),
        cov,
        None if cov is None else np.ones_like(cov, dtype=bool),
    )


def _target_tokens(batch, row, variate):
    """Values of one row's target variate, as (tokens, patch)."""
    c = batch.tokens
    return batch.inputs["target"][row, variate * c : (variate + 1) * c]


# ---------------------------------------------------------------- make_batch
def test_prediction_mask_marks_the_last_k_target_tokens_of_each_variate():
    series = [_series(200, dim=2, n_cov=1)]
    windows = [WindowSpec(0, 200, 96, 2), WindowSpec(0, 150, 96, 4)]
    batch = make_batch(series, windows, P)
    c, d = batch.tokens, batch.num_variates
    assert (c, d) == (6, 2)
    mask = batch.inputs["prediction_mask"]
    for row, k in enumerate([2, 4]):
        for v in range(d):
            expected = [False] * (c - k) + [True] * k
            assert mask[row, v * c : (v + 1) * c].tolist() == expected
        # covariate tokens are never prediction tokens
        assert not mask[row, d * c :].any()
        assert mask[row].sum() == d * k


def test_windows_are_cut_from_their_series_and_end_at_their_end():
    series = [_series(100, seed=1), _series(130, seed=2)]
    windows = [WindowSpec(0, 80, 64, 1), WindowSpec(1, 130, 64, 1)]
    batch = make_batch(series, windows, P)
    for row, w in enumerate(windows):
        values = _target_tokens(batch, row, 0).reshape(-1).numpy()
        expected = series[w.series].target[w.end - w.length : w.end, 0]
        np.testing.assert_array_equal(values, expected)


def test_shorter_windows_are_left_padded_with_padding_tokens():
    series = [_series(200, seed=3)]
    # 64 steps (4 tokens), 40 steps (3 tokens, the first one partial), 32 steps
    windows = [
        WindowSpec(0, 200, 64, 1),
        WindowSpec(0, 100, 40, 1),
        WindowSpec(0, 50, 32, 1),
    ]
    batch = make_batch(series, windows, P)
    assert batch.tokens == 4
    sample_id = batch.inputs["sample_id"]
    observed = batch.inputs["observed_mask"]
    assert sample_id[0].tolist() == [1, 1, 1, 1]
    assert sample_id[1].tolist() == [0, 1, 1, 1]
    assert sample_id[2].tolist() == [0, 0, 1, 1]
    # padding steps are unobserved: 24 of the 40-step window's first two tokens
    assert not observed[1, 0].any()
    assert observed[1, 1].tolist() == [False] * 8 + [True] * 8
    assert not observed[2, :2].any()
    assert observed[2, 2:].all()
    # the real values sit at the right end of the row
    row = _target_tokens(batch, 1, 0).reshape(-1).numpy()
    np.testing.assert_array_equal(row[-40:], series[0].target[60:100, 0])


def test_tokens_follow_the_longest_window():
    series = [_series(200, seed=4)]
    batch = make_batch(series, [WindowSpec(0, 50, 33, 1), WindowSpec(0, 90, 40, 1)], P)
    assert batch.tokens == 3
    assert batch.inputs["target"].shape[1] == 3
    assert batch.inputs["sample_id"].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_covariates_become_extra_variates_after_the_targets():
    series = [_series(120, dim=2, n_cov=3, seed=5)]
    batch = make_batch(series, [WindowSpec(0, 120, 64, 1)], P)
    c, d = batch.tokens, batch.num_variates
    variate_id = batch.inputs["variate_id"][0]
    expected = [v for v in range(5) for _ in range(c)]
    assert variate_id.tolist() == expected
    assert d == 2
    # covariate tokens hold the covariate values, in the same patches
    cov = series[0].covariates
    for f in range(3):
        values = batch.inputs["target"][0, (d + f) * c : (d + f + 1) * c]
        np.testing.assert_array_equal(values.reshape(-1).numpy(), cov[56:120, f])
    time_id = batch.inputs["time_id"][0]
    assert time_id.tolist() == list(range(c)) * 5


def test_windows_of_a_batch_need_the_same_variates():
    series = [_series(100, dim=1), _series(100, dim=2)]
    with pytest.raises(ValueError, match="same variates and covariates"):
        make_batch(series, [WindowSpec(0, 100, 64, 1), WindowSpec(1, 100, 64, 1)], P)


def test_score_from_limits_scoring_to_the_last_score_tokens():
    series = [_series(200, seed=6)]
    windows = [
        WindowSpec(0, 200, 96, 2, score_tokens=2),
        WindowSpec(0, 150, 64, 1),
        WindowSpec(0, 120, 64, 3, score_tokens=3),
    ]
    batch = make_batch(series, windows, P)
    assert batch.tokens == 6
    assert batch.score_from.tolist() == [4, 1, 3]


# ------------------------------------------------------------ token counts
@pytest.mark.parametrize(
    ("tokens", "ratio", "expected"),
    [
        (1, 0.5, 1),  # a single token: nothing else to predict
        (2, 0.0, 1),  # at least one prediction token
        (2, 0.9, 1),  # at least one token left for the statistics
        (10, 0.0, 1),
        (10, 0.3, 3),
        (10, 0.49, 5),
        (10, 0.99, 9),
        (33, 0.5, 16),  # round half to even: 16.5 -> 16
    ],
)
def test_prediction_token_count(tokens, ratio, expected):
    assert prediction_token_count(tokens, ratio) == expected


def test_tokens_in_counts_partial_patches():
    assert [tokens_in(n, P) for n in (1, 16, 17, 32, 33)] == [1, 1, 2, 2, 3]


# ------------------------------------------------------------ sampling
def _draw(seed, lengths=(300, 80, 16, 5, 17), ratio=(0.15, 0.5)):
    return sample_windows(list(lengths), 96, P, ratio, np.random.default_rng(seed))


def test_sample_windows_is_seeded():
    assert _draw(0) == _draw(0)
    assert _draw(0) != _draw(1)


def test_sampled_windows_are_valid():
    lengths = (300, 80, 16, 5, 17)
    for seed in range(20):
        windows = _draw(seed, lengths)
        for w in windows:
            assert w.series in (0, 1, 4)  # never series of <= one patch
            assert P < w.end <= lengths[w.series]
            assert w.length == min(96, w.end)
            tokens = tokens_in(w.length, P)
            assert tokens >= 2
            assert 1 <= w.prediction_tokens <= tokens - 1
            assert w.score_tokens is None
        counts = [sum(w.series == i for w in windows) for i in range(5)]
        assert counts == [4, 1, 0, 0, 1]  # ceil(length / window) per series


def test_sampled_prediction_tokens_follow_the_mask_ratio():
    windows = sample_windows([2000], 160, P, (0.4, 0.4), np.random.default_rng(0))
    full = [w for w in windows if w.length == 160]
    assert full
    assert all(w.prediction_tokens == 4 for w in full)  # round(10 * 0.4)


def test_sampled_window_order_is_shuffled():
    windows = sample_windows([400] * 6, 96, P, (0.1, 0.2), np.random.default_rng(0))
    order = [w.series for w in windows]
    assert sorted(order) == [i for i in range(6) for _ in range(5)]
    assert order != sorted(order)


def test_no_windows_from_series_of_one_patch():
    rng = np.random.default_rng(0)
    assert sample_windows([16, 3, 1], 96, P, (0.1, 0.2), rng) == []


@pytest.mark.parametrize("length", [17, 40, 200])
def test_draw_window_ends_at_every_admissible_end_point(length):
    rng = np.random.default_rng(0)
    windows = [draw_window(rng, 3, length, 96, P, (0.15, 0.5)) for _ in range(2000)]
    ends = {w.end for w in windows}
    # one window per end point leaving an input and a label patch, and all of
    # them: what fine-tuning counts as the admissible windows
    assert ends == set(range(P + 1, length + 1))
    assert len(ends) == admissible_windows(length, P)
    for w in windows:
        assert w.series == 3
        assert w.length == min(96, w.end)
        assert 1 <= w.prediction_tokens <= max(tokens_in(w.length, P) - 1, 1)
        assert w.score_tokens is None


def test_draw_window_is_seeded():
    def draws(seed):
        rng = np.random.default_rng(seed)
        return [draw_window(rng, 0, 300, 96, P, (0.1, 0.5)) for _ in range(20)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)


# ------------------------------------------------------------ TrainingSeries
def test_training_series_rejects_non_finite_targets():
    y = np.ones((20, 1))
    y[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        TrainingSeries(y, np.ones_like(y, dtype=bool))
    y[3] = np.inf
    with pytest.raises(ValueError, match="finite"):
        TrainingSeries(y, np.ones_like(y, dtype=bool))


@pytest.mark.parametrize(
    ("target_shape", "observed_shape"),
    [((20, 1), (20, 2)), ((20, 2), (19, 2)), ((20,), (20,))],
)
def test_training_series_rejects_shape_mismatches(target_shape, observed_shape):
    with pytest.raises(ValueError, match="target and observed"):
        TrainingSeries(np.ones(target_shape), np.ones(observed_shape, dtype=bool))


def test_training_series_checks_covariates():
    y = np.ones((20, 1))
    obs = np.ones_like(y, dtype=bool)
    with pytest.raises(ValueError, match="go together"):
        TrainingSeries(y, obs, np.ones((20, 2)))
    with pytest.raises(ValueError, match="aligned"):
        TrainingSeries(y, obs, np.ones((19, 2)), np.ones((19, 2), dtype=bool))
    with pytest.raises(ValueError, match="aligned"):
        TrainingSeries(y, obs, np.ones((20, 2)), np.ones((20, 1), dtype=bool))
    ok = TrainingSeries(y, obs, np.ones((20, 2)), np.ones((20, 2), dtype=bool))
    assert ok.num_covariates == 2
    assert len(ok) == 20
