"""Fine-tuning Moirai-MoE: windows, the next-patch objective, strategies, the loop.

The engine is independent of pandas and sktime: it trains a
:class:`~moirai_moe_sk.model.MoiraiMoEModel` on
:class:`TrainingSeries` arrays. :class:`~moirai_moe_sk.MoiraiMoEForecaster`
uses it for ``fit`` with a fine-tuning strategy and for ``pretrain``.
"""

from __future__ import annotations

from .checks import check_flag, check_seed
from .data import TrainingSeries
from .engine import (
    DEFAULT_LEARNING_RATES,
    FineTuneResult,
    TrainingConfig,
    admissible_windows,
    fine_tune,
    planned_steps,
    validation_nll,
)
from .objective import next_patch_nll
from .strategies import STRATEGIES, add_lora, configure_trainable, merge_lora

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "STRATEGIES",
    "FineTuneResult",
    "TrainingConfig",
    "TrainingSeries",
    "add_lora",
    "admissible_windows",
    "check_flag",
    "check_seed",
    "configure_trainable",
    "fine_tune",
    "merge_lora",
    "next_patch_nll",
    "planned_steps",
    "validation_nll",
]
