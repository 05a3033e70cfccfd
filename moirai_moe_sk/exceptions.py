"""Errors and warnings raised by :mod:`moirai_moe_sk`.

All errors subclass built-in exception types (``ValueError``), so generic
handlers keep working; the specific classes let callers react precisely.
"""

from __future__ import annotations

from .model.config import ConfigError

__all__ = ["CheckpointError", "ConfigError", "FineTuneWarning"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or matched to the model.

    Raised for a missing folder or hub repository, an unreachable hub, a corrupt
    ``config.json`` or ``model.safetensors``, and missing, unexpected or
    mis-shaped tensors. The message names the checkpoint and what to do.

    Examples
    --------
    It is a ``ValueError``, so generic handlers catch it too:

    >>> from moirai_moe_sk.checkpoint import resolve_checkpoint
    >>> from moirai_moe_sk.exceptions import CheckpointError
    >>> issubclass(CheckpointError, ValueError)
    True
    >>> resolve_checkpoint("no such model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moirai_moe_sk.exceptions.CheckpointError: checkpoint 'no such model' is neither ...
    """


class FineTuneWarning(UserWarning):
    """Fine-tuning kept the starting weights: no trained step validated better.

    The forecasts then equal the zero-shot ones. The message gives the
    validation NLL before and after and the settings to change
    (``learning_rate``, ``max_steps``, ``validation_fraction``). Silence it
    with ``warnings.filterwarnings("ignore", category=FineTuneWarning)``.

    Examples
    --------
    >>> from moirai_moe_sk.exceptions import FineTuneWarning
    >>> issubclass(FineTuneWarning, UserWarning)
    True
    """
