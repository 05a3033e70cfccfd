"""The Moirai-MoE network in plain PyTorch (no pandas, sktime or hub code here).

Dimension names used throughout: ``batch`` (series, or flattened leading dims),
``time`` (steps), ``variate``, ``seq`` (packed tokens), ``patch`` (16 steps of one
variate), ``d_model``, ``head``, ``expert``, ``sample`` (sample paths).
"""

from .config import ConfigError, MoiraiMoEConfig
from .distributions import PackedMixture
from .forecast import SMALL_SCALE, forecast, forecast_packed, rescale_factors
from .modeling import MoiraiMoEModel
from .packing import PackedBatch, pack

__all__ = [
    "SMALL_SCALE",
    "ConfigError",
    "MoiraiMoEConfig",
    "MoiraiMoEModel",
    "PackedBatch",
    "PackedMixture",
    "forecast",
    "forecast_packed",
    "pack",
    "rescale_factors",
]
