import torch

from moirai_moe_sk.model import pack


def _univariate(pad=37, ctx=100):
    y = torch.randn(1, ctx, 1)
    observed = torch.ones_like(y, dtype=torch.bool)
    is_pad = torch.zeros(1, ctx, dtype=torch.bool)
    is_pad[:, :pad] = True
    observed[:, :pad] = False
    y[:, :pad] = 0
    return y, observed, is_pad


def test_time_ids_of_a_left_padded_series_match_the_reference_example():
    packed = pack(*_univariate(), prediction_length=40, drop_padding=False)
    assert packed.time_id[0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    assert packed.sample_id[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert packed.prediction_mask[0].tolist() == [False] * 7 + [True] * 3
    assert packed.variate_id.unique().tolist() == [0]
    # the future is zeros, observed except the right padding of the last patch
    assert packed.observed_mask[0, 7:].sum() == 40
    assert packed.target[0, 7:].abs().sum() == 0


def test_dropping_shared_padding_removes_only_pure_padding_tokens():
    packed = pack(*_univariate(), prediction_length=40)
    assert packed.context_tokens == 4
    assert packed.time_id[0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert packed.sample_id[0].tolist() == [1] * 7


def test_multivariate_layout_is_variate_major_with_covariates_after():
    batch, ctx, pdt = 2, 40, 20
    y = torch.arange(batch * ctx * 2, dtype=torch.float).view(batch, ctx, 2)
    known = torch.randn(batch, ctx + pdt, 1)
    past_only = torch.randn(batch, ctx, 1)
    packed = pack(
        y,
        torch.ones_like(y, dtype=torch.bool),
        torch.zeros(batch, ctx, dtype=torch.bool),
        pdt,
        feat_dynamic_real=known,
        observed_feat_dynamic_real=torch.ones_like(known, dtype=torch.bool),
        past_feat_dynamic_real=past_only,
        past_observed_feat_dynamic_real=torch.ones_like(past_only, dtype=torch.bool),
    )
    cs, ps = 3, 2
    assert packed.variate_id[0].tolist() == (
        [0] * cs + [1] * cs + [0] * ps + [1] * ps + [2] * cs + [2] * ps + [3] * cs
    )
    # past target values: variate 0 then variate 1, each left-padded to 48 steps
    first = packed.target[0, 0]
    assert first[:8].tolist() == [0.0] * 8
    assert first[8:].tolist() == y[0, :8, 0].tolist()
    second_variate = packed.target[0, cs]
    assert second_variate[8:].tolist() == y[0, :8, 1].tolist()
    # only future *target* tokens are predicted; known covariates are not
    assert packed.prediction_mask[0].nonzero().flatten().tolist() == [6, 7, 8, 9]
    assert packed.time_id[0].tolist() == [0, 1, 2] * 2 + [3, 4] * 2 + [
        0,
        1,
        2,
        3,
        4,
        0,
        1,
        2,
    ]
    assert packed.first_future_index.tolist() == [6, 8]
    assert packed.last_context_index.tolist() == [2, 5]


def test_time_ids_use_observations_of_all_target_variates():
    y = torch.zeros(1, 48, 2)
    observed = torch.zeros_like(y, dtype=torch.bool)
    observed[0, 20:, 1] = True  # only variate 1 observed, from patch 1 on
    packed = pack(y, observed, torch.zeros(1, 48, dtype=torch.bool), 16)
    assert packed.time_id[0, :3].tolist() == [0, 0, 1]


def test_covariate_padding_quirk_kept_for_parity():
    y, observed, is_pad = _univariate(pad=37)
    past_only = torch.randn(1, 100, 1)
    packed = pack(
        y,
        observed,
        is_pad,
        16,
        past_feat_dynamic_real=past_only,
        past_observed_feat_dynamic_real=~is_pad[..., None],
        drop_padding=False,
    )
    # target tokens: patches 0-2 are padding; covariate: patch 0 counts as real
    target, future, covariate = [0, 0, 0, 1, 1, 1, 1], [1], [1, 0, 0, 1, 1, 1, 1]
    assert packed.sample_id[0].tolist() == [*target, *future, *covariate]
