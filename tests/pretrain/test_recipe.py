"""The paper's recipe blocks: dense config, FFN inputs, k-means, sparse from dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
from moirai_moe_sk.pretrain.recipe import (
    dense_config,
    ffn_inputs,
    kmeans,
    sparse_from_dense,
)
from moirai_moe_sk.training import TrainingSeries
from moirai_moe_sk.training.data import WindowSpec, make_batch

SPARSE = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=2, num_experts=4)


def _batch(lengths=(40, 64, 23)):
    rng = np.random.default_rng(0)
    series = [
        TrainingSeries(rng.normal(size=(n, 1)), np.ones((n, 1), dtype=bool))
        for n in lengths
    ]
    windows = [WindowSpec(i, n, n, 1) for i, n in enumerate(lengths)]
    return make_batch(series, windows, 16)


def test_dense_config_has_the_sparse_activated_size():
    dense = dense_config(SPARSE)
    assert (dense.num_experts, dense.num_experts_per_token) == (1, 1)
    assert dense.d_ff == SPARSE.d_ff * SPARSE.num_experts_per_token
    assert dense.gate == "linear"
    assert (dense.d_model, dense.num_layers) == (SPARSE.d_model, SPARSE.num_layers)


def test_dense_model_is_a_plain_swiglu_ffn():
    torch.manual_seed(0)
    ffn = MoiraiMoEModel(dense_config(SPARSE)).encoder.layers[0].ffn
    x = torch.randn(5, 64)
    out, experts = ffn(x)
    expected = ffn.expert(0, x)  # one expert with weight 1
    torch.testing.assert_close(out, expected)
    assert (experts == 0).all()


def test_ffn_inputs_collects_every_real_token_per_layer():
    torch.manual_seed(0)
    model = MoiraiMoEModel(SPARSE).train()
    batch = _batch()
    reps = ffn_inputs(model, [batch.inputs])
    real = int((batch.inputs["sample_id"] != 0).sum())
    assert len(reps) == SPARSE.num_layers
    assert all(r.shape == (real, SPARSE.d_model) for r in reps)
    assert model.training  # mode restored
    # the first layer's FFN input is norm2 of the first attention block's output
    assert not torch.equal(reps[0], reps[1])
    assert not model.encoder.layers[0].ffn._forward_hooks  # hooks removed


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    gen = torch.Generator().manual_seed(1)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(40, 2, generator=gen) for c in centers])
    found = kmeans(x, 3, seed=0)
    assert found.dtype == torch.float64
    distance = torch.cdist(found, centers.double()).min(-1).values
    assert (distance < 0.1).all()
    torch.testing.assert_close(found, kmeans(x, 3, seed=0), rtol=0, atol=0)


def test_kmeans_with_more_clusters_than_distinct_points_fills_every_cluster():
    x = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    found = kmeans(x, 3, seed=0)
    assert found.shape == (3, 1)
    assert torch.isfinite(found).all()


@pytest.mark.parametrize("k", [0, 5, 2.0, True])
def test_kmeans_rejects_a_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer"):
        kmeans(torch.randn(4, 2), k)


def test_sparse_from_dense_copies_everything_but_the_experts():
    torch.manual_seed(0)
    dense = MoiraiMoEModel(dense_config(SPARSE))
    reps = ffn_inputs(dense, [_batch().inputs])
    centroids = torch.stack([kmeans(r, SPARSE.num_experts, seed=0) for r in reps])
    rng_state = torch.random.get_rng_state()
    sparse = sparse_from_dense(dense, SPARSE, centroids, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    dense_state, sparse_state = dense.state_dict(), sparse.state_dict()
    for name, value in sparse_state.items():
        if ".ffn." in name or name == "encoder.centroid":
            continue
        assert torch.equal(value, dense_state[name]), name
    torch.testing.assert_close(sparse.encoder.centroid, centroids)
    assert sparse.encoder.centroid.dtype == torch.float64
    distr = sparse.eval()(**_batch().inputs)
    assert torch.isfinite(distr.mean).all()


def test_sparse_from_dense_checks_its_inputs():
    dense = MoiraiMoEModel(dense_config(SPARSE))
    with pytest.raises(ValueError, match="centroids of shape"):
        sparse_from_dense(dense, SPARSE, None)
    other = MoiraiMoEModel(dense_config(MoiraiMoEConfig(d_model=64, num_layers=1)))
    with pytest.raises(ValueError, match="num_layers"):
        sparse_from_dense(other, SPARSE, torch.zeros(2, 4, 64))
    linear = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=2, gate="linear")
    assert sparse_from_dense(dense, linear).encoder.centroid is None
