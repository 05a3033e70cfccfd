"""Process-wide cache of loaded zero-shot Moirai-MoE models.

Loading a checkpoint means reading (or downloading) hundreds of megabytes, so
:class:`~moirai_moe_sk.MoiraiMoEForecaster` loads each checkpoint once per
process and shares the module between its instances, refits, clones and
unpickled copies.

The cached modules are **immutable by contract**: they are in eval mode with
``requires_grad`` off, and callers may only run them for inference. Code that
changes weights (fine-tuning) must work on ``copy.deepcopy(model)`` and must
never put its result here; the cache holds pretrained weights only.

Keys are ``(checkpoint, revision, cache_dir, device, dtype)``. For a local
folder, the checkpoint part is the resolved absolute path plus the size and
modification time of its two files, so re-saving a folder invalidates its
entry. A hub id is keyed by name and revision without contacting the hub.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .model import MoiraiMoEModel

logger = logging.getLogger(__name__)

__all__ = ["cache_info", "clear_cache", "get_model"]

_LOCK = threading.Lock()
_MODELS: dict[tuple[Any, ...], MoiraiMoEModel] = {}
_STATS = {"hits": 0, "loads": 0}


def _checkpoint_key(checkpoint: str | os.PathLike[str]) -> tuple[Any, ...]:
    from .checkpoint import CONFIG_NAME, WEIGHTS_NAME

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        stamps: list[Any] = []
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            try:
                stat = (path / name).stat()
                stamps.append((stat.st_size, stat.st_mtime_ns))
            except OSError:
                stamps.append(None)  # loading will raise a clear CheckpointError
        return ("folder", str(path.resolve()), *stamps)
    return ("name", str(checkpoint))


def _key(
    checkpoint: str | os.PathLike[str],
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Any, ...]:
    cache = (
        str(Path(cache_dir).expanduser().resolve()) if cache_dir is not None else None
    )
    return (*_checkpoint_key(checkpoint), revision, cache, str(device), str(dtype))


def get_model(
    checkpoint: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MoiraiMoEModel:
    """Return the shared, read-only model of a checkpoint, loading it once.

    Parameters
    ----------
    checkpoint : str or path
        Local folder, bundled name or hub id (see
        :meth:`MoiraiMoEModel.from_pretrained`).
    revision, cache_dir, local_files_only
        Passed to the hub on the first load.
    device : torch.device or str
        Device the weights live on, resolved by
        :func:`~moirai_moe_sk._device.resolve_device` (``"auto"`` included).
    dtype : torch.dtype
        Compute dtype of the transformer layers (part of the key; see
        :meth:`MoiraiMoEModel.set_compute_dtype`).

    Returns
    -------
    MoiraiMoEModel
        In eval mode, with ``requires_grad`` off. Do not modify it: deep-copy
        it first.

    Raises
    ------
    moirai_moe_sk.exceptions.CheckpointError
        If the checkpoint cannot be found or read.
    ValueError
        If ``device`` is unknown, ``"meta"`` or not available on this machine.
    """
    from ._device import resolve_device

    device = resolve_device(device)
    key = _key(checkpoint, revision, cache_dir, device, dtype)
    with _LOCK:
        model = _MODELS.get(key)
        if model is not None:
            _STATS["hits"] += 1
            return model
        from .model import MoiraiMoEModel

        model = MoiraiMoEModel.from_pretrained(
            checkpoint,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            map_location=device,
        )
        model.eval().requires_grad_(False)
        if dtype != torch.float32:
            model.set_compute_dtype(dtype)
        _MODELS[key] = model
        _STATS["loads"] += 1
        logger.debug("cached Moirai-MoE model %s", key)
        return model


def clear_cache() -> None:
    """Drop every cached model (frees their memory once no forecaster uses them)."""
    with _LOCK:
        _MODELS.clear()


def cache_info() -> dict[str, int]:
    """Return counts of cache ``hits``, ``loads`` and cached ``models``."""
    with _LOCK:
        return {**_STATS, "models": len(_MODELS)}
