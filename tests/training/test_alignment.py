"""Label alignment: a model trained on a pattern continues it, not a shifted copy.

The distribution at token ``t`` forecasts patch ``t + 1``. Were the labels off
by one patch, training would teach the model to reproduce the patch it reads,
and forecasts would be the truth delayed by one patch (a copy of the last
context patch). A period of three patches makes consecutive patches differ, so
the two cannot be confused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, forecast
from moirai_moe_sk.training import TrainingConfig, TrainingSeries, fine_tune

P = 16
PERIOD = 3 * P
CONTEXT = 96  # ends at a patch boundary
HORIZON = 48

_t = np.arange(PERIOD) / PERIOD
PATTERN = (
    np.sin(2 * np.pi * _t) + 0.5 * np.sign(np.sin(4 * np.pi * _t)) + 0.3 * _t
).astype(np.float32)


def _pattern(n, level, amplitude, phase):
    return level + amplitude * PATTERN[(np.arange(n) + phase) % PERIOD]


def _training_data(seed):
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(8):
        level, amplitude = rng.uniform(-5, 5), rng.uniform(0.5, 3)
        phase = int(rng.integers(PERIOD))
        y = _pattern(400, level, amplitude, phase)[:, None].astype(np.float32)
        series.append(TrainingSeries(y, np.ones_like(y, dtype=bool)))
    return series


@pytest.fixture(scope="module")
def trained():
    # passes for every seed tried (0 to 11), with a wide margin
    seed = 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = MoiraiMoEConfig(d_model=64, d_ff=128, num_layers=1, num_experts=4)
        model = MoiraiMoEModel(config).eval()
    settings = TrainingConfig(
        context_length=CONTEXT,
        prediction_length=32,
        learning_rate=3e-3,
        max_steps=300,
        batch_size=16,
        validation_fraction=0.0,
        warmup_steps=10,
        seed=seed,
        progress=False,
    )
    return fine_tune(model, _training_data(seed), settings).model


@pytest.mark.parametrize(
    ("level", "amplitude", "phase"), [(2.0, 1.5, 0), (-3.0, 0.7, 5), (0.5, 2.5, 21)]
)
def test_trained_model_continues_the_pattern_not_a_shifted_copy(
    trained, level, amplitude, phase
):
    full = _pattern(CONTEXT + HORIZON, level, amplitude, phase)
    context = torch.tensor(full[:CONTEXT], dtype=torch.float32).reshape(1, -1, 1)
    generator = torch.Generator().manual_seed(0)
    samples = forecast(
        trained, context, prediction_length=HORIZON, num_samples=50, generator=generator
    )
    median = samples.median(dim=1).values[0, :, 0].numpy()
    truth = full[CONTEXT:]
    delayed = full[CONTEXT - P : CONTEXT + HORIZON - P]  # the truth one patch late
    error = np.abs(median - truth).mean() / amplitude
    error_delayed = np.abs(median - delayed).mean() / amplitude
    assert error < 0.3
    assert error < 0.3 * error_delayed
    # the first forecast patch is not a copy of the last context patch
    first = np.abs(median[:P] - truth[:P]).mean()
    copy = np.abs(median[:P] - full[CONTEXT - P : CONTEXT]).mean()
    assert first < 0.3 * copy
