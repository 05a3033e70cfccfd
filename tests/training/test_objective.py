"""The next-patch NLL: labels, masks and reduction, checked against a hand count."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moirai_moe_sk.training import TrainingSeries, next_patch_nll
from moirai_moe_sk.training.data import WindowSpec, make_batch, tokens_in
from moirai_moe_sk.training.objective import scored_labels

from _helpers import make_tiny_model

P = 16


def _series():
    """A bivariate series with one covariate and scattered missing values."""
    rng = np.random.default_rng(0)
    n = 200
    y = (rng.normal(size=(n, 2)) * [1.0, 5.0] + [0.0, 20.0]).astype(np.float32)
    observed = rng.random((n, 2)) > 0.2
    observed[100:116] = False  # a whole patch missing in both variates
    observed[150:170, 1] = False  # a missing stretch in one variate
    y[~observed] = 0.0
    cov = rng.normal(size=(n, 1)).astype(np.float32)
    return TrainingSeries(y, observed, cov, np.ones_like(cov, dtype=bool))


def _first_patch_missing():
    """Window data whose first patch is entirely unobserved."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=(80, 2)).astype(np.float32)
    observed = np.ones_like(y, dtype=bool)
    observed[:16] = False
    return TrainingSeries(y, observed, np.ones((80, 1)), np.ones((80, 1), bool))


def _windows(score_tokens=None):
    return [
        WindowSpec(0, 200, 96, 2, score_tokens=score_tokens),
        WindowSpec(0, 170, 96, 3),  # the missing stretch in its labels
        WindowSpec(0, 120, 40, 1),  # left-padded, ends with the missing patch
        WindowSpec(1, 80, 80, 1),  # left-padded, first real patch unobserved
    ]


def _hand_nll(model, windows, batch):
    """uni2ts' PackedNLLLoss of the next-patch objective, value by value."""
    distr = model(**batch.inputs)
    inputs = batch.inputs
    c, d = batch.tokens, batch.num_variates
    target, observed = inputs["target"], inputs["observed_mask"]
    # label of every target token: the next token's patch, at the token's place
    labels = torch.zeros_like(target)
    for v in range(d):
        labels[:, v * c : (v + 1) * c - 1] = target[:, v * c + 1 : (v + 1) * c]
    log_prob = distr.log_prob(labels)
    groups = []
    for row, w in enumerate(windows):
        first_real = c - tokens_in(w.length, P)
        first_label = 1 if w.score_tokens is None else c - w.score_tokens
        target_observed = observed[row, : d * c].reshape(d, c, P).any(-1).any(0)
        for v in range(d):
            values = []
            for t in range(max(first_real, first_label - 1), c - 1):
                if not target_observed[: t + 1].any():
                    continue  # the next patch shares the token's time id
                for j in range(P):
                    if observed[row, v * c + t + 1, j]:
                        values.append(-log_prob[row, v * c + t, j])
            if values:
                groups.append(torch.stack(values).mean())
    return torch.stack(groups).sum(), len(groups)


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(seed=3)


@pytest.mark.parametrize("score_tokens", [None, 1, 3])
def test_loss_matches_a_hand_computation(model, score_tokens):
    series = [_series(), _first_patch_missing()]
    windows = _windows(score_tokens)
    batch = make_batch(series, windows, P)
    assert batch.tokens == 6
    with torch.no_grad():
        total, groups = next_patch_nll(model(**batch.inputs), batch)
        expected, expected_groups = _hand_nll(model, windows, batch)
    assert int(groups) == expected_groups
    assert expected_groups == 8  # (window, variate) pairs, each with labels
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)


def test_groups_without_a_scored_value_do_not_count(model):
    rng = np.random.default_rng(2)
    y = rng.normal(size=(64, 2)).astype(np.float32)
    observed = np.ones_like(y, dtype=bool)
    observed[16:, 1] = False  # variate 1: no label is ever observed
    batch = make_batch([TrainingSeries(y, observed)], [WindowSpec(0, 64, 64, 1)], P)
    with torch.no_grad():
        total, groups = next_patch_nll(model(**batch.inputs), batch)
        expected, expected_groups = _hand_nll(model, [WindowSpec(0, 64, 64, 1)], batch)
    assert int(groups) == expected_groups == 1
    assert math.isfinite(float(total))
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)


def _loss(model, target, observed, windows):
    series = [TrainingSeries(target, observed)]
    batch = make_batch(series, windows, P)
    with torch.no_grad():
        total, groups = next_patch_nll(model(**batch.inputs), batch)
    return float(total) / int(groups)


def test_unobserved_label_values_are_not_scored(model):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(64, 1)).astype(np.float32)
    observed = np.ones_like(y, dtype=bool)
    observed[50:60] = False
    # the last patch is a prediction token: outside the scaler, read by no
    # other token (causal attention), so it matters only as a label
    # (up to rounding: a changed token may be routed to other experts, which
    # changes the size of the expert GEMMs of the other tokens)
    windows = [WindowSpec(0, 64, 64, 1)]
    base = _loss(model, y, observed, windows)
    changed = y.copy()
    changed[50:60] += 100.0
    assert _loss(model, changed, observed, windows) == pytest.approx(base, rel=1e-5)
    changed[60] += 100.0  # an observed label value does count
    assert abs(_loss(model, changed, observed, windows) - base) > 0.1


def test_padding_tokens_are_not_scored(model):
    series = [_series()]
    windows = [WindowSpec(0, 200, 96, 2), WindowSpec(0, 120, 40, 1)]
    batch = make_batch(series, windows, P)
    pad = batch.inputs["sample_id"] == 0
    # three padding tokens per target variate and covariate
    assert pad[:, : 2 * batch.tokens].sum() == 2 * 3
    assert pad.sum() == 3 * 3
    with torch.no_grad():
        base = next_patch_nll(model(**batch.inputs), batch)
        # garbage, "observed" padding tokens change nothing
        batch.inputs["target"] = torch.where(
            pad[..., None], 1e3, batch.inputs["target"]
        )
        batch.inputs["observed_mask"] = batch.inputs["observed_mask"] | pad[..., None]
        after = next_patch_nll(model(**batch.inputs), batch)
    assert torch.equal(base[0], after[0])
    assert int(base[1]) == int(after[1])


def test_score_from_restricts_the_scored_labels(model):
    series = [_series()]
    batch = make_batch(series, [WindowSpec(0, 200, 96, 2, score_tokens=2)], P)
    scored = scored_labels(batch)  # (batch, variate, label, patch)
    assert scored.shape == (1, 2, 5, P)
    assert not scored[:, :, :3].any()
    assert scored[:, :, 3:].any()
    full = make_batch(series, [WindowSpec(0, 200, 96, 2)], P)
    assert torch.equal(scored_labels(full)[:, :, 3:], scored[:, :, 3:])
    assert scored_labels(full)[:, :, :3].any()


def test_a_token_never_sees_its_scored_label():
    """Perturbing a scored label patch leaves the token's distribution alone."""
    model = make_tiny_model(seed=4, scaling=False)  # no statistics to leak
    series = [_series(), _first_patch_missing()]
    windows = _windows()
    batch = make_batch(series, windows, P)
    c, d = batch.tokens, batch.num_variates
    scored = scored_labels(batch).any(-1)  # (batch, variate, label)
    checked = 0
    with torch.no_grad():
        base = model(**batch.inputs)
        for row in range(batch.size):
            for t in range(c - 1):
                if not scored[row, :, t].any():
                    continue
                inputs = {k: v.clone() for k, v in batch.inputs.items()}
                for v in range(d):
                    inputs["target"][row, v * c + t + 1] += 50.0
                out = model(**inputs)
                for v in range(d):
                    token = v * c + t
                    torch.testing.assert_close(
                        out.mean[row, token], base.mean[row, token]
                    )
                checked += 1
    assert checked >= 10
    # the first observed patch of a window (the third token of the last row)
    # is never the label of the token before, which shares its time id
    assert batch.inputs["time_id"][3, :c].tolist() == [0, 0, 0, 1, 2, 3]
    assert not scored[3, :, 1].any()
    assert scored[3, :, 2].all()


def test_a_window_of_one_token_has_no_label(model):
    y = np.ones((16, 1), dtype=np.float32)
    batch = make_batch(
        [TrainingSeries(y, np.ones_like(y, dtype=bool))], [WindowSpec(0, 16, 16, 1)], P
    )
    assert batch.tokens == 1
    total, groups = next_patch_nll(model(**batch.inputs), batch)
    assert float(total) == 0.0
    assert int(groups) == 0
