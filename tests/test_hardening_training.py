"""Fine-tuning settings are refused up front, naming the setting and the value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from moirai_moe_sk.forecaster import MoiraiMoEForecaster
from moirai_moe_sk.training import TrainingConfig, check_flag, check_seed


def _named(field: str, value: object) -> str:
    """A pattern that needs both the field and the value given."""
    return rf"{re.escape(field)}.*{re.escape(repr(value))}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mask_ratio", 0.3),  # was: cannot unpack non-iterable float
        ("mask_ratio", (0.1, 0.2, 0.3)),  # was: too many values to unpack
        ("mask_ratio", "ab"),
        ("mask_ratio", (0.1, None)),
        ("validation_fraction", 0.99),  # was: validation silently dropped
        ("validation_fraction", 0.51),
        ("seed", 2**64 + 5),  # was: overflow in torch's manual_seed
        ("seed", 2**63),
        ("seed", True),
        ("seed", 1.0),
    ],
)
def test_bad_values_are_refused_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=_named(field, value)):
        TrainingConfig(**{field: value})


@pytest.mark.parametrize(
    "field", ["merge_lora", "train_centroids", "gradient_checkpointing", "progress"]
)
@pytest.mark.parametrize("value", [1, 0, "no", "False", 1.0])
def test_flags_must_be_bools(field, value):
    # train_centroids=1 ended in torch's requires_grad_() TypeError, and
    # gradient_checkpointing="no" turned checkpointing on
    with pytest.raises(TypeError, match=_named(field, value)):
        TrainingConfig(**{field: value})


def test_accepted_edge_values_are_stored_normalised():
    config = TrainingConfig(
        mask_ratio=[0.1, 0.2],
        validation_fraction=0.5,
        seed=np.int64(2**63 - 1),
        train_centroids=np.True_,
        progress=None,
    )
    assert config.mask_ratio == (0.1, 0.2)
    assert config.validation_fraction == 0.5
    assert config.seed == 2**63 - 1
    assert type(config.seed) is int
    assert config.train_centroids is True
    assert config.progress is None


@pytest.mark.parametrize("value", [None, 0, 7, 2**63 - 1, np.uint64(5)])
def test_check_seed_accepts_ints_in_range(value):
    assert check_seed(value, "random_state", allow_none=True) == (
        None if value is None else int(value)
    )


@pytest.mark.parametrize("value", [-1, 2**63, 2**64 + 5, True, 1.5, "3"])
def test_check_seed_refuses_other_values(value):
    with pytest.raises(ValueError, match=_named("random_state", value)):
        check_seed(value, "random_state", allow_none=True, allow_numpy_rng=True)


def test_check_seed_optionally_accepts_none_and_numpy_generators():
    rng, legacy = np.random.default_rng(0), np.random.RandomState(0)
    assert check_seed(rng, "random_state", allow_numpy_rng=True) is rng
    assert check_seed(legacy, "random_state", allow_numpy_rng=True) is legacy
    with pytest.raises(ValueError, match=r"seed must be an integer .*, got None"):
        check_seed(None)
    with pytest.raises(ValueError, match="Generator"):
        check_seed(rng)


def test_check_flag():
    assert check_flag(np.False_, "merge_lora") is False
    assert check_flag(None, "progress", allow_none=True) is None
    with pytest.raises(TypeError, match=r"progress must be True or False, got None"):
        check_flag(None, "progress")


# ------------------------------------------------- through the forecaster's fit
def _series() -> pd.Series:
    return pd.Series(np.sin(np.arange(80) / 3.0) + 5.0)


@pytest.mark.parametrize(
    ("params", "error", "field", "value"),
    [
        ({"train_params": {"mask_ratio": 0.3}}, ValueError, "mask_ratio", 0.3),
        (
            {"train_params": {"mask_ratio": (0.1, 0.2, 0.3)}},
            ValueError,
            "mask_ratio",
            (0.1, 0.2, 0.3),
        ),
        ({"train_params": {"train_centroids": 1}}, TypeError, "train_centroids", 1),
        (
            {"train_params": {"gradient_checkpointing": "no"}},
            TypeError,
            "gradient_checkpointing",
            "no",
        ),
        ({"validation_fraction": 0.99}, ValueError, "validation_fraction", 0.99),
    ],
)
def test_the_forecaster_refuses_bad_training_settings_at_fit(
    tiny_checkpoint, params, error, field, value
):
    forecaster = MoiraiMoEForecaster(
        checkpoint=str(tiny_checkpoint), fit_strategy="head", max_steps=1, **params
    )
    with pytest.raises(error, match=_named(field, value)):
        forecaster.fit(_series(), fh=[1, 2])
