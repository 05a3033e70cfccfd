"""Resolution of the ``device`` a model is loaded to and runs on."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def available_devices() -> list[str]:
    """Return the device names usable on this machine, for messages.

    Examples
    --------
    >>> from moirai_moe_sk._device import available_devices
    >>> available_devices()[:2]
    ['auto', 'cpu']
    """
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device for ``device``, refusing what cannot hold a model.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` or ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a :class:`torch.device` of those
        types.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For an unknown device string, a device type that cannot hold the
        weights (``"meta"``, which has no data, or any other than cpu, cuda
        and mps), or a device this machine does not have (CUDA or MPS not
        available, a CUDA index out of range). The message names the device
        and those available.
    TypeError
        If ``device`` is neither a string, a torch.device nor None.

    Examples
    --------
    >>> from moirai_moe_sk._device import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("meta")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: device 'meta' cannot hold a model (a meta tensor has no data)...
    """
    available = f"available here: {', '.join(available_devices())}"
    if device is None or (isinstance(device, str) and device.strip() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        try:
            resolved = torch.device(device.strip())
        except RuntimeError as err:
            msg = f"unknown device {device!r}; {available}"
            raise ValueError(msg) from err
    elif isinstance(device, torch.device):
        resolved = device
    else:
        msg = (
            f"device must be None, a string or a torch.device, got {device!r} "
            f"({type(device).__name__}); {available}"
        )
        raise TypeError(msg)
    name = str(device)
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f"device {name!r} was requested but CUDA is not available; {available}"
            )
            raise ValueError(msg)
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            msg = (
                f"device {name!r} was requested but this machine has {count} CUDA "
                f"device(s); {available}"
            )
            raise ValueError(msg)
        return resolved
    if resolved.type == "mps":
        if not torch.backends.mps.is_available():
            msg = f"device {name!r} was requested but MPS is not available; {available}"
            raise ValueError(msg)
        return resolved
    why = " (a meta tensor has no data)" if resolved.type == "meta" else ""
    msg = f"device {name!r} cannot hold a model{why}; {available}"
    raise ValueError(msg)
