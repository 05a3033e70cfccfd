"""The bundled model, moirai-moe-sk-tiny: shipped in the package, offline, and it forecasts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

import moirai_moe_sk
from moirai_moe_sk import MoiraiMoEForecaster
from moirai_moe_sk import checkpoint as ckpt
from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
from moirai_moe_sk.pretrain import generate

from _helpers import load_harness

NAME = "moirai-moe-sk-tiny"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the hub fails the test."""

    def refuse(*args, **kwargs):
        msg = "the bundled model must not touch the hub"
        raise AssertionError(msg)

    monkeypatch.setattr(ckpt, "_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_bundled_model_ships_inside_the_package():
    assert NAME in ckpt.BUNDLED
    folder = ckpt.BUNDLED[NAME]
    assert folder.parent == ckpt.BUNDLED_ROOT
    # inside the installed package, so it travels with every install
    assert ckpt.BUNDLED_ROOT.parent == Path(moirai_moe_sk.__file__).parent
    weights = folder / ckpt.WEIGHTS_NAME
    assert weights.stat().st_size <= 15 * 2**20
    config = MoiraiMoEConfig.from_dict(
        json.loads((folder / ckpt.CONFIG_NAME).read_text())
    )
    assert (config.num_experts, config.num_experts_per_token) == (16, 2)
    assert config.gate == "centroid"
    assert config.gate_selection == "nearest"
    # it states the context it was trained for: the forecaster's default cap
    assert config.context_length == 512
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}  # noqa: SIM118
    assert dtypes.pop("encoder.centroid") in ("F64", "F32")
    assert set(dtypes.values()) == {"F16"}


def test_bundled_model_loads_offline_in_float32(no_network):
    model = MoiraiMoEModel.from_pretrained(NAME)
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert sum(p.numel() for p in params) > 4_000_000
    assert model.encoder.centroid is not None
    assert torch.isfinite(model.encoder.centroid).all()
    # the centroids are the k-means clusters: distinct per expert
    c = model.encoder.centroid
    assert torch.cdist(c, c).add(torch.eye(c.shape[1]) * 1e9).min() > 0


def _seasonal_naive(y_train: np.ndarray, horizon: int, period: int) -> np.ndarray:
    return np.resize(y_train[-period:], horizon)


def test_bundled_model_beats_seasonal_naive_on_airline(no_network):
    """Airline is not in the pretraining corpus (M1 holds part of it)."""
    from sktime.datasets import load_airline

    y = load_airline()
    train, test = y.iloc[:-24], y.iloc[-24:]
    forecaster = MoiraiMoEForecaster(NAME, num_samples=100, random_state=0)
    forecaster.fit(train, fh=np.arange(1, 25))
    pred = forecaster.predict()
    intervals = forecaster.predict_interval(coverage=0.8)
    error = np.abs(test.to_numpy() - pred.to_numpy()).mean()
    naive = np.abs(test.to_numpy() - _seasonal_naive(train.to_numpy(), 24, 12)).mean()
    assert error < 0.8 * naive, (error, naive)
    lower, upper = intervals.iloc[:, 0], intervals.iloc[:, 1]
    inside = ((test >= lower) & (test <= upper)).mean()
    assert inside >= 0.5


def test_bundled_model_forecasts_held_out_synthetic_series(no_network):
    """Series of a seed the pretraining never drew: better than seasonal naive."""
    series = generate(
        40, seed=12345, min_length=96, max_length=200, kinds=("seasonal", "ets")
    )
    horizon, period = 16, 12
    frames = {
        i: pd.Series(y[:-horizon] - np.nanmin(y) + 1.0) for i, y in enumerate(series)
    }
    panel = pd.concat(frames, names=["series", "time"]).to_frame("y")
    forecaster = MoiraiMoEForecaster(NAME, num_samples=50, random_state=0)
    forecaster.fit(panel, fh=np.arange(1, horizon + 1))
    pred = forecaster.predict()
    ratios = []
    for i, y in enumerate(series):
        y = y - np.nanmin(y) + 1.0
        train, test = y[:-horizon], y[-horizon:]
        if np.isnan(train).any() or np.isnan(test).any():
            continue
        model = np.abs(test - pred.xs(i, level=0).to_numpy().ravel()).mean()
        naive = np.abs(test - _seasonal_naive(train, horizon, period)).mean()
        ratios.append(model / naive)
    assert len(ratios) >= 30
    assert np.exp(np.mean(np.log(ratios))) < 0.9


def test_bundled_model_meets_the_targets_on_the_quick_m1_m3_subset(no_network):
    """The harness's 400-series stratified subset, seeded (about 15 s).

    The issue's targets are set on the full sets, where the model measures
    MASE 0.788, WQL 0.695 relative to seasonal naive and 80% coverage 0.719
    (benchmarks/results/moirai_moe_sk_tiny_m1_m3.md). On this subset: 0.786,
    0.645 and 0.709, so the coverage bound here is the measured value's
    neighbourhood, not the full-set target.
    """
    ev = load_harness()
    table = ev.run(["--quick", "--baselines", "--checkpoint", NAME, "--threads", "1"])
    rows = table.set_index(["model", "subset"])
    model = f"moirai-moe[{NAME}]"
    aggregate = rows.loc[(model, ev.AGGREGATE)]
    assert aggregate["MASE_rel"] <= 0.95
    assert aggregate["WQL_rel"] <= 0.85
    assert 0.68 <= aggregate["coverage_80"] <= 0.88
    assert 0.88 <= aggregate["coverage_95"] <= 0.98
    for subset in ("M1 monthly", "M1 quarterly", "M3 monthly", "M3 quarterly"):
        assert rows.loc[(model, subset), "MASE_rel"] < 1.0, subset
        assert rows.loc[(model, subset), "WQL_rel"] < 1.0, subset
