"""The mixture head against torch.distributions assembled the way uni2ts does it."""

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Categorical,
    Gamma,
    LogNormal,
    Normal,
    StudentT,
    TransformedDistribution,
)

from moirai_moe_sk.model.distributions import PackedMixture


def _params(shape, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(scale=1.0):
        return torch.randn(shape, generator=g) * scale

    logits = torch.randn((*shape, 4), generator=g)
    params = [
        {"df": 2 + torch.nn.functional.softplus(r()), "loc": r(), "scale": r().exp()},
        {"loc": r()},
        {"total_count": r().exp(), "logits": r(0.5)},
        {"loc": r(0.3), "scale": r(0.3).exp()},
    ]
    loc, scale = r(10.0)[..., :1], r().exp()[..., :1] * 3
    return logits, params, loc, scale


NAMES = ("student_t", "normal_fixed_scale", "negative_binomial", "log_normal")


def _torch_components(params):
    st, nf, nb, ln = params
    return [
        StudentT(st["df"], st["loc"], st["scale"], validate_args=False),
        Normal(nf["loc"], torch.tensor(1e-3).expand_as(nf["loc"]), validate_args=False),
        nb,
        LogNormal(ln["loc"], ln["scale"], validate_args=False),
    ]


def _nb_sample(nb, sample_shape):
    gamma = Gamma(nb["total_count"], torch.exp(-nb["logits"]), validate_args=False)
    return torch.poisson(gamma.sample(sample_shape))


def test_seeded_samples_reproduce_uni2ts_random_stream():
    shape = (2, 3, 16)
    logits, params, loc, scale = _params(shape)
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    g = torch.Generator().manual_seed(7)
    drawn = ours.sample((5,), generator=g)

    # uni2ts: Mixture.sample draws each component in order, then the weights
    torch.manual_seed(7)
    comps = _torch_components(params)
    samples = torch.stack(
        [
            comps[0].sample((5,)),
            comps[1].sample((5,)),
            _nb_sample(comps[2], (5,)),
            comps[3].sample((5,)),
        ],
        dim=-1,
    )
    index = Categorical(logits=logits).sample((5,))
    z = samples.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    expected = AffineTransform(loc, scale)(z)
    torch.testing.assert_close(drawn, expected, rtol=0, atol=0)


def test_global_rng_is_untouched_by_seeded_sampling():
    logits, params, loc, scale = _params((4, 16))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    PackedMixture(logits, NAMES, params, loc, scale).sample(
        (3,), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(torch.get_rng_state(), before)


def test_log_prob_matches_a_torch_mixture():
    shape = (3, 16)
    logits, params, loc, scale = _params(shape, seed=1)
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    g = torch.Generator().manual_seed(2)
    value = loc + scale * torch.randn(shape, generator=g) * 2  # some below zero

    z = (value - loc) / scale
    comps = _torch_components(params)
    nb = params[2]
    nb_lp = (
        nb["total_count"] * torch.nn.functional.logsigmoid(-nb["logits"])
        + torch.nn.functional.logsigmoid(nb["logits"]) * z.clamp_min(0)
        - torch.lgamma(1 + z.clamp_min(0))
        - torch.lgamma(nb["total_count"])
        + torch.lgamma(1 + z.clamp_min(0) + nb["total_count"])
        - torch.log(nb["total_count"] + z.clamp_min(0))
    )
    comp_lp = torch.stack(
        [
            comps[0].log_prob(z),
            comps[1].log_prob(z),
            torch.where(z >= 0, nb_lp, -torch.inf),
            torch.where(z > 0, comps[3].log_prob(z.clamp_min(1e-30)), -torch.inf),
        ],
        dim=-1,
    )
    expected = (comp_lp + torch.log_softmax(logits, -1)).logsumexp(-1) - scale.log()
    torch.testing.assert_close(ours.log_prob(value), expected, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(ours.log_prob(value)).all()


def test_mean_is_the_weighted_component_mean_unscaled():
    logits, params, loc, scale = _params((2, 16), seed=3)
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    comps = _torch_components(params)
    means = torch.stack(
        [
            comps[0].mean,
            comps[1].mean,
            params[2]["total_count"] * params[2]["logits"].exp(),
            comps[3].mean,
        ],
        dim=-1,
    )
    expected = (torch.softmax(logits, -1) * means).sum(-1) * scale + loc
    torch.testing.assert_close(ours.mean, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sample_mean_converges_to_mean():
    logits, params, loc, scale = _params((1, 16), seed=4)
    params[0]["df"] = params[0]["df"] + 3  # finite variance
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    draws = ours.sample((200_000,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        draws.mean(0), ours.mean, rtol=0.05, atol=0.05 * scale.max()
    )


def test_take_selects_tokens():
    logits, params, loc, scale = _params((2, 5, 16), seed=5)
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    index = torch.tensor([4, 1])
    torch.testing.assert_close(ours.take(index).mean, ours.mean[:, index])


def test_transformed_distribution_agrees_on_affine_log_density():
    # log_prob of the unscaled mixture = base log_prob at (y-loc)/scale - log scale
    logits, params, loc, scale = _params((1, 16), seed=6)
    ours = PackedMixture(logits, NAMES, params, loc, scale)
    base = PackedMixture(
        logits, NAMES, params, torch.zeros_like(loc), torch.ones_like(scale)
    )
    y = loc + 0.5 * scale
    z = torch.full_like(y, 0.5).expand(1, 16)
    torch.testing.assert_close(ours.log_prob(y), base.log_prob(z) - scale.log())
    normal = TransformedDistribution(Normal(0.0, 1.0), [AffineTransform(loc, scale)])
    assert normal.log_prob(y).shape == (1, 1)
