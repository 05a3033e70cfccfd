"""Fast decoding (key/value cache), token truncation and reduced-precision compute."""

import pytest
import torch

from moirai_moe_sk.model import forecast, pack
from moirai_moe_sk.model.forecast import _draw


def _series(batch=3, ctx=70, dim=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(ctx, dtype=torch.float)
    level = torch.linspace(10, 200, batch)[:, None, None]
    return (
        level
        + 10 * torch.sin(t / 4)[None, :, None]
        + torch.randn(batch, ctx, dim, generator=g).cumsum(1)
    )


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _inputs(batch, ctx, dim, horizon, covariates):
    y = _series(batch, ctx, dim)
    observed = torch.ones_like(y, dtype=torch.bool)
    observed[0, 5:9, 0] = False  # a gap enters the scaler mask
    is_pad = torch.zeros(batch, ctx, dtype=torch.bool)
    is_pad[1, :30] = True  # a shorter series, left-padded
    observed[1, :30] = False
    kwargs = {}
    if covariates:
        g = _gen(7)
        known = torch.randn(batch, ctx + horizon, 2, generator=g)
        past = torch.randn(batch, ctx, 1, generator=g)
        kwargs = {
            "feat_dynamic_real": known,
            "observed_feat_dynamic_real": torch.ones_like(known, dtype=torch.bool),
            "past_feat_dynamic_real": past,
            "past_observed_feat_dynamic_real": torch.ones_like(past, dtype=torch.bool),
        }
    return y, observed, is_pad, kwargs


def _uncached_fast(model, packed, num_samples, generator):
    """Fast decoding's definition: exact mode's loop, but sampled patches stay
    prediction tokens for the scaler (context-only statistics), no cache."""
    d, c, steps = packed.num_variates, packed.context_tokens, packed.prediction_tokens
    pred, assign = packed.last_context_index, packed.first_future_index
    distr = model(**packed.inputs())
    first = _draw(distr, pred, (num_samples,), generator, False)
    inputs = {k: v.expand(num_samples, *v.shape) for k, v in packed.inputs().items()}
    target = inputs.pop("target").clone()
    target[..., assign, :] = first
    for _ in range(steps - 1):
        distr = model(target=target, **inputs)
        pred, assign = assign, assign + 1
        target[..., assign, :] = _draw(distr, pred, (1,), generator, False)[0]
    return target[:, :, d * c : d * (c + steps)]


@pytest.mark.parametrize(
    ("dim", "horizon", "covariates"),
    [(1, 50, False), (2, 40, False), (1, 35, True), (2, 16, True)],
)
def test_cached_decoding_equals_uncached_context_scaled_decoding(
    tiny_model, dim, horizon, covariates
):
    y, observed, is_pad, kwargs = _inputs(3, 70, dim, horizon, covariates)
    packed = pack(y, observed, is_pad, horizon, **kwargs)
    expected = _uncached_fast(tiny_model.eval(), packed, 5, _gen())
    samples = forecast(
        tiny_model,
        y,
        observed,
        is_pad,
        prediction_length=horizon,
        num_samples=5,
        generator=_gen(),
        decoding="fast",
        reference_rng=False,
        **kwargs,
    )
    ours = samples.permute(1, 0, 3, 2)  # (sample, batch, variate, time)
    steps = packed.prediction_tokens
    expected = expected.reshape(5, 3, dim, steps * 16)[..., :horizon]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-3)


def test_fast_and_exact_share_the_first_patch_and_then_differ(tiny_model):
    y, observed, is_pad, _ = _inputs(3, 70, 1, 48, False)
    kwargs = {"prediction_length": 48, "num_samples": 4, "reference_rng": False}
    exact = forecast(tiny_model.eval(), y, observed, is_pad, generator=_gen(), **kwargs)
    fast = forecast(
        tiny_model, y, observed, is_pad, generator=_gen(), decoding="fast", **kwargs
    )
    torch.testing.assert_close(fast[:, :, :16], exact[:, :, :16])
    assert not torch.allclose(fast[:, :, 16:], exact[:, :, 16:])


@pytest.mark.parametrize("horizon", [16, 40])
def test_fast_draws_the_first_patch_as_exact_mode_does(tiny_model, horizon):
    # with the reference random stream too, so for one-patch horizons fast
    # decoding gives uni2ts' seeded numbers
    y, observed, is_pad, kwargs = _inputs(3, 70, 2, horizon, True)
    args = {"prediction_length": horizon, "num_samples": 6, **kwargs}
    exact = forecast(tiny_model.eval(), y, observed, is_pad, generator=_gen(), **args)
    fast = forecast(
        tiny_model, y, observed, is_pad, generator=_gen(), decoding="fast", **args
    )
    torch.testing.assert_close(fast[:, :, :16], exact[:, :, :16], rtol=0, atol=0)


def test_encoding_a_prefix_of_tokens_gives_the_same_distributions(tiny_model):
    y, observed, is_pad, kwargs = _inputs(3, 70, 2, 40, True)
    packed = pack(y, observed, is_pad, 40, **kwargs)
    model = tiny_model.eval()
    full = model(**packed.inputs())
    for step in range(-1, packed.prediction_tokens):
        tokens = torch.nonzero(packed.future_step <= step).squeeze(1)
        part = model(**packed.inputs(), tokens=tokens)
        torch.testing.assert_close(
            part.take(tokens).mean, full.take(tokens).mean, rtol=1e-5, atol=1e-4
        )


def test_truncated_exact_decoding_matches_full_encoding(tiny_model, monkeypatch):
    y, observed, is_pad, kwargs = _inputs(2, 64, 1, 40, True)
    args = {"prediction_length": 40, "num_samples": 3, "reference_rng": False}
    truncated = forecast(
        tiny_model.eval(), y, observed, is_pad, generator=_gen(), **args, **kwargs
    )
    forward = type(tiny_model).forward
    calls = []

    def full_forward(self, *a, tokens=None, **kw):
        calls.append(tokens)
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(tiny_model), "forward", full_forward)
    full = forecast(tiny_model, y, observed, is_pad, generator=_gen(), **args, **kwargs)
    assert all(t is not None for t in calls)  # truncation was requested each step
    torch.testing.assert_close(truncated, full, rtol=1e-4, atol=1e-3)


def test_unknown_decoding_mode_is_refused(tiny_model):
    with pytest.raises(ValueError, match="decoding must be one of"):
        forecast(tiny_model, _series(), prediction_length=5, decoding="greedy")


@pytest.mark.parametrize("decoding", ["exact", "fast"])
def test_bfloat16_compute_stays_close_to_float32(tiny_model, decoding):
    y, observed, is_pad, _ = _inputs(3, 70, 1, 32, False)
    model = tiny_model.eval()
    packed = pack(y, observed, is_pad, 32)
    reference = model(**packed.inputs()).mean
    args = {"prediction_length": 32, "num_samples": 200, "decoding": decoding}
    base = forecast(model, y, observed, is_pad, generator=_gen(), **args)
    model.set_compute_dtype(torch.bfloat16)
    assert model.encoder.layers[0].ffn.fc1.dtype == torch.bfloat16
    low = model(**packed.inputs()).mean
    assert low.dtype == torch.float32
    scale = reference.abs().max()
    assert (low - reference).abs().max() < 0.05 * scale
    assert not torch.equal(low, reference)
    samples = forecast(model, y, observed, is_pad, generator=_gen(), **args)
    assert samples.dtype == torch.float32
    assert torch.isfinite(samples).all()
    # the sample medians agree to within a few per cent of the series' level
    spread = (samples.median(1).values - base.median(1).values).abs().max()
    assert spread < 0.1 * y.abs().max()


def test_compute_dtype_must_be_floating(tiny_model):
    with pytest.raises(ValueError, match="floating"):
        tiny_model.set_compute_dtype(torch.int32)
