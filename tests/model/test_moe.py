import pytest
import torch

from moirai_moe_sk.model import MoiraiMoEConfig
from moirai_moe_sk.model.moe import MoiraiMoEFeedForward, route


def _naive_moe(ffn: MoiraiMoEFeedForward, x: torch.Tensor, centroid: torch.Tensor):
    """uni2ts' formulation: cdist, topk(largest), softmax, loop over experts."""
    flat = x.reshape(-1, x.shape[-1])
    dist = torch.cdist(flat, centroid.float())
    weights, chosen = torch.topk(dist, ffn.config.num_experts_per_token)
    weights = torch.softmax(weights, dim=1)
    out = torch.zeros_like(flat)
    for e in range(ffn.config.num_experts):
        rows, slot = torch.where(chosen == e)
        out[rows] += weights[rows, slot, None] * ffn.expert(e, flat[rows])
    return out.view_as(x), chosen


@pytest.fixture
def moe():
    torch.manual_seed(0)
    config = MoiraiMoEConfig(d_model=64, d_ff=32, num_experts=8)
    return MoiraiMoEFeedForward(config), torch.randn(8, 64, dtype=torch.float64)


def test_batched_dispatch_matches_the_expert_loop(moe):
    ffn, centroid = moe
    x = torch.randn(3, 11, 64)
    out, experts = ffn(x, centroid)
    expected, chosen = _naive_moe(ffn, x, centroid)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(experts.reshape(-1, 2), chosen)


def test_default_gate_picks_the_farthest_centroids(moe):
    ffn, centroid = moe
    x = torch.randn(50, 64)
    weights, experts = route(x, ffn.config, centroid)
    dist = torch.cdist(x, centroid.float())
    farthest = dist.argsort(dim=-1, descending=True)[:, :2]
    assert torch.equal(experts, farthest)
    # softmax over the two raw distances: the farthest one weighs most
    assert (weights[:, 0] >= weights[:, 1]).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))


def test_nearest_selection_option():
    config = MoiraiMoEConfig(d_model=64, num_experts=8, gate_selection="nearest")
    centroid = torch.randn(8, 64, dtype=torch.float64)
    x = torch.randn(20, 64)
    _, experts = route(x, config, centroid)
    nearest = torch.cdist(x, centroid.float()).argsort(dim=-1)[:, :2]
    assert torch.equal(experts, nearest)


def test_linear_gate_routes_by_router_logits():
    torch.manual_seed(1)
    config = MoiraiMoEConfig(d_model=64, d_ff=32, num_experts=4, gate="linear")
    ffn = MoiraiMoEFeedForward(config)
    x = torch.randn(10, 64)
    _, experts = ffn(x)
    logits = x @ ffn.gate.weight.T
    assert torch.equal(experts, logits.topk(2).indices)


def test_gradients_reach_the_chosen_experts_only(moe):
    ffn, centroid = moe
    x = torch.randn(1, 4, 64)
    out, experts = ffn(x, centroid)
    out.sum().backward()
    used = set(experts.flatten().tolist())
    for e in range(8):
        assert (ffn.fc1.grad[e].abs().sum() > 0) == (e in used)


def test_centroid_gate_without_centroids_is_an_error(moe):
    ffn, _ = moe
    with pytest.raises(ValueError, match="centroid gating needs"):
        ffn(torch.randn(2, 64))
