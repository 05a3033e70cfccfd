"""Saving weights in a smaller floating type: half the size, read back as float32."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moirai_moe_sk.model import MoiraiMoEModel, forecast, pack

from _helpers import make_tiny_model


def _inputs(horizon=16):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(64.0)
    y = 50 + 10 * torch.sin(t / 4)[None, :, None] + torch.randn(2, 64, 1, generator=g)
    packed = pack(
        y,
        torch.ones_like(y, dtype=torch.bool),
        torch.zeros(2, 64, dtype=torch.bool),
        horizon,
        patch_size=16,
    )
    names = (
        "target",
        "observed_mask",
        "sample_id",
        "time_id",
        "variate_id",
        "prediction_mask",
    )
    return y, {name: getattr(packed, name) for name in names}


def test_float16_save_halves_the_file_and_keeps_the_centroids(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "f32")
    tiny_model.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    full = load_file(str(tmp_path / "f32" / "model.safetensors"))
    half = load_file(str(tmp_path / "f16" / "model.safetensors"))
    assert half.keys() == full.keys()
    assert half["encoder.centroid"].dtype == torch.float64
    assert torch.equal(half["encoder.centroid"], full["encoder.centroid"])
    for key, value in half.items():
        if key != "encoder.centroid":
            assert full[key].dtype == torch.float32, key
            assert value.dtype == torch.float16, key
            assert torch.equal(value, full[key].half()), key
    size = (tmp_path / "f16" / "model.safetensors").stat().st_size
    ratio = size / (tmp_path / "f32" / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    config = json.loads((tmp_path / "f16" / "config.json").read_text())
    assert config == json.loads((tmp_path / "f32" / "config.json").read_text())


def test_float16_checkpoint_loads_as_float32_and_predicts_alike(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = MoiraiMoEModel.from_pretrained(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert loaded.encoder.centroid.dtype == torch.float64
    assert torch.equal(loaded.encoder.centroid, tiny_model.encoder.centroid)
    original = dict(tiny_model.named_parameters())
    for name, param in loaded.named_parameters():
        assert torch.equal(param, original[name].half().float()), name

    y, inputs = _inputs()
    with torch.no_grad():
        a, b = tiny_model(**inputs), loaded(**inputs)
        other = make_tiny_model(seed=1)(**inputs)
    scale = a.mean.abs().max()
    # rounding the weights to float16 moves the predicted means by about 1e-3
    # of their scale; another model's differ by a large fraction of it
    assert (a.mean - b.mean).abs().max() < 5e-3 * scale
    assert (a.mean - other.mean).abs().max() > 5e-2 * scale
    lp_a, lp_b = a.log_prob(inputs["target"]), b.log_prob(inputs["target"])
    assert (lp_a - lp_b).abs().mean() < 1e-2

    kwargs = {"prediction_length": 16, "num_samples": 8}
    samples = forecast(loaded, y, generator=torch.Generator().manual_seed(0), **kwargs)
    assert samples.shape == (2, 8, 16, 1)
    assert torch.isfinite(samples).all()


def test_float16_save_of_a_linear_gate_model_stores_every_tensor_in_float16(
    tmp_path,
):
    model = make_tiny_model(gate="linear")
    model.save_pretrained(tmp_path, dtype=torch.float16)
    assert {
        v.dtype for v in load_file(str(tmp_path / "model.safetensors")).values()
    } == {torch.float16}
    loaded = MoiraiMoEModel.from_pretrained(tmp_path)
    assert loaded.config.gate == "linear"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_float32_dtype_writes_the_default_file(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "default")
    tiny_model.save_pretrained(tmp_path / "f32", dtype=torch.float32)
    name = "model.safetensors"
    assert (tmp_path / "f32" / name).read_bytes() == (
        tmp_path / "default" / name
    ).read_bytes()


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool])
def test_non_floating_dtypes_are_refused(tiny_model, tmp_path, dtype):
    with pytest.raises(ValueError, match="cannot be stored: use one of 'float16'"):
        tiny_model.save_pretrained(tmp_path / "out", dtype=dtype)
    assert not (tmp_path / "out").exists()
