"""Fine-tuning strategies: which weights train, centroids, and LoRA adapters."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from moirai_moe_sk.model import MoiraiMoEModel
from moirai_moe_sk.training import (
    STRATEGIES,
    TrainingConfig,
    TrainingSeries,
    add_lora,
    configure_trainable,
    fine_tune,
    merge_lora,
)
from moirai_moe_sk.training.strategies import (
    LoRA,
    freeze_centroids,
    has_lora,
    lora_targets,
    max_lora_rank,
)

from _helpers import make_tiny_model

HEAD = ("in_proj.", "res_proj.", "feat_proj.", "param_proj.")
EXPERTS = (".ffn.fc1", ".ffn.fc_gate", ".ffn.fc2", ".ffn.gate.weight")


def _inputs(seed=0, batch=2, tokens=5):
    g = torch.Generator().manual_seed(seed)
    seq = 2 * tokens
    return {
        "target": torch.randn(batch, seq, 16, generator=g) * 3 + 1,
        "observed_mask": torch.rand(batch, seq, 16, generator=g) > 0.1,
        "sample_id": torch.ones(batch, seq, dtype=torch.long),
        "time_id": torch.arange(tokens).repeat(2).expand(batch, -1),
        "variate_id": torch.arange(2).repeat_interleave(tokens).expand(batch, -1),
        "prediction_mask": (torch.arange(seq) % tokens == tokens - 1).expand(batch, -1),
    }


def _outputs(model, inputs):
    with torch.no_grad():
        distr = model(**inputs)
        return distr.mean, distr.log_weights


def _trained(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------ configure_trainable
@pytest.mark.parametrize("gate", ["centroid", "linear"])
def test_each_strategy_trains_its_documented_weights(gate):
    names = {n for n, _ in make_tiny_model(gate=gate).named_parameters()}
    assert any(".ffn.gate." in n for n in names) == (gate == "linear")

    head = configure_trainable(make_tiny_model(gate=gate), "head")
    assert set(head) == {n for n in names if n.startswith(HEAD)}
    assert {n.split(".")[0] for n in head} == {p.rstrip(".") for p in HEAD}

    frozen_experts = configure_trainable(make_tiny_model(gate=gate), "freeze-experts")
    experts = {n for n in names if n.endswith(EXPERTS)}
    assert len(experts) == 2 * (3 + (gate == "linear"))  # two layers
    assert set(frozen_experts) == names - experts

    full = configure_trainable(make_tiny_model(gate=gate), "full")
    assert set(full) == names
    assert "encoder.centroid" not in full


def test_returned_names_are_the_parameters_that_require_grad():
    for strategy in ("full", "head", "freeze-experts"):
        model = make_tiny_model()
        assert set(configure_trainable(model, strategy)) == _trained(model)


def test_lora_trains_the_adapters_only():
    model = make_tiny_model()
    add_lora(model, rank=4)
    trained = configure_trainable(model, "lora")
    assert trained
    assert all(n.endswith((".A", ".B")) for n in trained)
    adapters = [m for m in model.modules() if isinstance(m, LoRA)]
    assert len(adapters) == 2 * (4 + 3)  # q, k, v, out and three expert stacks
    assert len(trained) == 2 * len(adapters)
    assert set(trained) == _trained(model)


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown fine-tuning strategy 'adapter'"):
        configure_trainable(make_tiny_model(), "adapter")


# --------------------------------------------------------------- centroids
def test_centroids_train_only_on_request_and_freeze_back_into_a_buffer():
    model = make_tiny_model()
    before = model.encoder.centroid.clone()
    keys = list(model.state_dict())
    configure_trainable(model, "head")
    assert "encoder.centroid" not in dict(model.named_parameters())

    trained = configure_trainable(model, "head", train_centroids=True)
    assert "encoder.centroid" in trained
    centroid = model.encoder.centroid
    assert isinstance(centroid, nn.Parameter)
    assert centroid.requires_grad
    assert centroid.dtype == torch.float64
    assert set(trained) - {"encoder.centroid"} == {
        n for n, _ in model.named_parameters() if n.startswith(HEAD)
    }

    with torch.no_grad():
        centroid.add_(1.0)
    freeze_centroids(model)
    assert "encoder.centroid" not in dict(model.named_parameters())
    assert "centroid" in dict(model.encoder.named_buffers())
    assert not isinstance(model.encoder.centroid, nn.Parameter)
    assert model.encoder.centroid.dtype == torch.float64
    assert list(model.state_dict()) == keys
    assert torch.equal(model.encoder.centroid, before + 1.0)
    # the model still loads into a fresh one strictly
    MoiraiMoEModel(model.config).load_state_dict(model.state_dict(), strict=True)


def test_train_centroids_without_centroids_is_a_no_op():
    model = make_tiny_model(gate="linear")
    trained = configure_trainable(model, "full", train_centroids=True)
    assert "encoder.centroid" not in trained
    freeze_centroids(model)
    assert model.encoder.centroid is None


# -------------------------------------------------------------------- LoRA
def test_an_adapted_model_starts_at_its_base_weights():
    base = make_tiny_model()
    adapted = copy.deepcopy(base)
    add_lora(adapted, rank=4, generator=torch.Generator().manual_seed(0))
    assert has_lora(adapted)
    inputs = _inputs()
    for got, expected in zip(
        _outputs(adapted, inputs), _outputs(base, inputs), strict=True
    ):
        assert torch.equal(got, expected)


def test_merging_gives_a_plain_model_with_the_adapted_outputs():
    base = make_tiny_model()
    adapted = copy.deepcopy(base)
    add_lora(adapted, rank=4, alpha=6.0, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, LoRA):
                module.B.copy_(0.05 * torch.randn(module.B.shape, generator=g))
                assert module.scaling == 1.5
    inputs = _inputs()
    adapted_out = _outputs(adapted, inputs)
    base_out = _outputs(base, inputs)
    assert not torch.allclose(adapted_out[0], base_out[0], atol=1e-3)

    merge_lora(adapted)
    assert not has_lora(adapted)
    assert not any(parametrize.is_parametrized(m) for m in adapted.modules())
    assert not any(isinstance(m, LoRA) for m in adapted.modules())
    fresh = MoiraiMoEModel(adapted.config)
    assert list(adapted.state_dict()) == list(fresh.state_dict())
    for name, tensor in adapted.state_dict().items():
        assert tensor.shape == fresh.state_dict()[name].shape
    for got, expected in zip(_outputs(adapted, inputs), adapted_out, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the weights that had no adapter are untouched
    adapted_names = {
        f"{module_name}.{leaf}"
        for module_name, module in base.named_modules()
        for target, leaf in lora_targets(base)
        if target is module
    }
    base_state = base.state_dict()
    for name, tensor in adapted.state_dict().items():
        same = torch.equal(tensor, base_state[name])
        assert same == (name not in adapted_names), name


def test_default_alpha_scales_the_update_by_two():
    model = make_tiny_model()
    add_lora(model, rank=8)
    scalings = {m.scaling for m in model.modules() if isinstance(m, LoRA)}
    assert scalings == {2.0}


@pytest.mark.parametrize("rank", [0, -1, 65, 1.5, True, "4"])
def test_lora_rank_out_of_range_is_rejected(rank):
    model = make_tiny_model()  # d_model = d_ff = 64
    assert max_lora_rank(model) == 64
    with pytest.raises(
        ValueError, match="lora_rank must be an integer between 1 and 64"
    ):
        add_lora(model, rank)
    assert not has_lora(model)


def test_largest_lora_rank_is_the_smallest_adapted_side():
    assert max_lora_rank(make_tiny_model(d_ff=32)) == 32
    model = make_tiny_model(d_ff=32)
    add_lora(model, 32)
    with pytest.raises(ValueError, match="between 1 and 32"):
        add_lora(make_tiny_model(d_ff=32), 33)


# ---------------------------------------------------- fine_tune per strategy
def _data(n_series=3, length=160, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    series = []
    for _ in range(n_series):
        y = 5 + np.sin(t / 5 + rng.uniform(0, 6)) + 0.1 * rng.normal(size=length)
        y = y[:, None].astype(np.float32)
        series.append(TrainingSeries(y, np.ones_like(y, dtype=bool)))
    return series


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fine_tune_changes_only_the_trained_weights(strategy):
    model = make_tiny_model(num_layers=1, num_experts=4)
    start = _state(model)
    config = TrainingConfig(
        strategy=strategy,
        context_length=64,
        prediction_length=16,
        learning_rate=1e-2,
        max_steps=4,
        batch_size=4,
        validation_fraction=0.0,  # keep the last weights
        lora_rank=2,
        progress=False,
    )
    result = fine_tune(model, _data(), config)
    # the input model is never modified
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, start[name]), name
    assert not has_lora(model)

    tuned = result.model
    assert list(tuned.state_dict()) == list(start)
    assert not has_lora(tuned)
    if strategy == "head":
        trained = {n for n in start if n.startswith(HEAD)}
    elif strategy == "freeze-experts":
        trained = {
            n for n in start if not n.endswith(EXPERTS) and n != "encoder.centroid"
        }
    elif strategy == "full":
        trained = set(start) - {"encoder.centroid"}
    else:
        trained = {
            f"{module_name}.{leaf}"
            for module_name, module in tuned.named_modules()
            for target, leaf in lora_targets(tuned)
            if target is module
        }
        assert len(trained) == 7
    changed = {
        n
        for n, tensor in tuned.state_dict().items()
        if not torch.equal(tensor, start[n])
    }
    assert changed <= trained
    assert changed  # training did something
    if strategy == "lora":
        assert changed == trained
        rank = config.lora_rank  # A: (..., rank, in), B: (..., out, rank)
        scalars = sum(
            start[n].shape[:-2].numel() * rank * sum(start[n].shape[-2:])
            for n in trained
        )
    else:
        scalars = sum(start[n].numel() for n in trained)
    assert result.trained_parameters == scalars
    assert tuned.encoder.centroid.dtype == torch.float64
    assert not any(p.requires_grad for p in tuned.parameters())
    assert not tuned.training


def test_fine_tune_trains_centroids_on_request():
    model = make_tiny_model(num_layers=1, num_experts=4)
    start = model.encoder.centroid.clone()
    config = TrainingConfig(
        strategy="head",
        context_length=64,
        prediction_length=16,
        learning_rate=1e-2,
        max_steps=1,
        batch_size=8,
        validation_fraction=0.0,
        train_centroids=True,
        progress=False,
    )
    tuned = fine_tune(model, _data(), config).model
    centroid = tuned.encoder.centroid
    assert not isinstance(centroid, nn.Parameter)
    assert "centroid" in dict(tuned.encoder.named_buffers())
    assert centroid.dtype == torch.float64
    assert not torch.equal(centroid, start)
    assert torch.equal(model.encoder.centroid, start)
    assert list(tuned.state_dict()) == list(model.state_dict())


def test_fine_tune_rejects_a_lora_rank_too_large_for_the_model():
    config = TrainingConfig(
        strategy="lora", lora_rank=65, context_length=64, prediction_length=16
    )
    with pytest.raises(
        ValueError, match="lora_rank must be an integer between 1 and 64"
    ):
        fine_tune(make_tiny_model(num_layers=1), _data(), config)


def test_fine_tune_can_return_the_adapters_unmerged():
    model = make_tiny_model(num_layers=1, num_experts=4)
    settings = {
        "strategy": "lora",
        "context_length": 64,
        "prediction_length": 16,
        "learning_rate": 1e-2,
        "max_steps": 1,
        "batch_size": 8,
        "validation_fraction": 0.0,
        "lora_rank": 2,
        "progress": False,
    }
    merged = fine_tune(model, _data(), TrainingConfig(**settings)).model
    adapted = fine_tune(
        model, _data(), TrainingConfig(**settings, merge_lora=False)
    ).model
    assert has_lora(adapted)
    assert not has_lora(merged)
    assert not any(p.requires_grad for p in adapted.parameters())
    assert not adapted.training
    inputs = _inputs()
    for got, expected in zip(
        _outputs(adapted, inputs), _outputs(merged, inputs), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    merge_lora(adapted)
    assert list(adapted.state_dict()) == list(merged.state_dict())
