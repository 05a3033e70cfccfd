"""Checks of seeds and flags, shared by the training engine and its callers.

:class:`~moirai_moe_sk.training.TrainingConfig` validates its fields with
these, and :class:`~moirai_moe_sk.MoiraiMoEForecaster` can call them on its own
parameters (``random_state``, boolean switches) so that a bad value is refused
at ``fit`` with a message naming it, not deep inside numpy or torch.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["MAX_SEED", "check_flag", "check_seed"]

#: largest seed accepted: ``torch.Generator.manual_seed`` and numpy both take it
MAX_SEED = 2**63 - 1


def check_seed(
    value: Any,
    name: str = "seed",
    *,
    allow_none: bool = False,
    allow_numpy_rng: bool = False,
) -> Any:
    """Return ``value`` if it can seed numpy and torch; raise ``ValueError`` if not.

    A seed is an integer in ``[0, 2**63 - 1]`` (bools are refused).

    Parameters
    ----------
    value : object
        The seed to check.
    name : str
        Its parameter name, for the message.
    allow_none : bool
        Also accept None (fresh entropy, say).
    allow_numpy_rng : bool
        Also accept a ``numpy.random.RandomState`` or ``numpy.random.Generator``.

    Returns
    -------
    int, None, RandomState or Generator
        An integer seed as a Python ``int``; anything else accepted unchanged.

    Raises
    ------
    ValueError
        Naming ``name``, what it accepts, and the value given.

    Examples
    --------
    >>> from moirai_moe_sk.training import check_seed
    >>> check_seed(7)
    7
    >>> check_seed(-1, "random_state", allow_none=True)
    Traceback (most recent call last):
    ...
    ValueError: random_state must be None or an integer in [0, 2**63 - 1], got -1
    """
    if value is None and allow_none:
        return None
    if allow_numpy_rng and isinstance(
        value, np.random.RandomState | np.random.Generator
    ):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        seed = int(value)
        if 0 <= seed <= MAX_SEED:
            return seed
    accepted = ["an integer in [0, 2**63 - 1]"]
    if allow_numpy_rng:
        accepted.append("a numpy RandomState or Generator")
    if allow_none:
        accepted.insert(0, "None")
    what = (
        accepted[0]
        if len(accepted) == 1
        else (f"{', '.join(accepted[:-1])} or {accepted[-1]}")
    )
    msg = f"{name} must be {what}, got {value!r}"
    raise ValueError(msg)


def check_flag(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """Return ``value`` as a bool if it is one; raise ``TypeError`` if not.

    Only ``True`` and ``False`` (and numpy bools) are flags: ``"no"``, ``0`` or
    ``1`` are refused rather than read by their truth value.

    Parameters
    ----------
    value : object
        The flag to check.
    name : str
        Its parameter name, for the message.
    allow_none : bool
        Also accept None (returned unchanged).

    Returns
    -------
    bool or None
        ``value`` as a Python ``bool`` (or None where allowed).

    Raises
    ------
    TypeError
        Naming ``name`` and the value given.

    Examples
    --------
    >>> from moirai_moe_sk.training import check_flag
    >>> check_flag(True, "merge_lora")
    True
    >>> check_flag("no", "gradient_checkpointing")
    Traceback (most recent call last):
    ...
    TypeError: gradient_checkpointing must be True or False, got 'no'
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    what = "True, False or None" if allow_none else "True or False"
    msg = f"{name} must be {what}, got {value!r}"
    raise TypeError(msg)
