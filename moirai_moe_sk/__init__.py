"""moirai_moe_sk: Moirai-MoE time-series foundation models for scikit-learn and sktime.

Importing the package is cheap: the model (and torch) load on first use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .exceptions import CheckpointError, ConfigError
    from .forecaster import MoiraiMoEForecaster
    from .model import MoiraiMoEConfig, MoiraiMoEModel

__all__ = [
    "CheckpointError",
    "ConfigError",
    "MoiraiMoEConfig",
    "MoiraiMoEForecaster",
    "MoiraiMoEModel",
    "__version__",
]

_LAZY = {
    "CheckpointError": "exceptions",
    "ConfigError": "exceptions",
    "MoiraiMoEConfig": "model",
    "MoiraiMoEForecaster": "forecaster",
    "MoiraiMoEModel": "model",
}


def __getattr__(name: str) -> Any:
    """Import public names lazily so that ``import moirai_moe_sk`` stays light."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
