"""Checkpoint I/O in the official Moirai-MoE layout.

A checkpoint is a folder with ``config.json`` (uni2ts' constructor arguments,
see :mod:`moirai_moe_sk.model.config`) and ``model.safetensors`` (the uni2ts
state dict). This module is the only place that touches huggingface_hub and
safetensors. Weights are never unpickled.

Our modules keep the official key names, with two explicit differences handled
by :func:`to_official` / :func:`from_official`:

* uni2ts' multi-size linears carry a leading "number of patch sizes" dimension
  of 1 (``in_proj``, ``res_proj``, ``feat_proj`` and the head ``param_proj``);
  ours are plain :class:`torch.nn.Linear`.
* uni2ts keeps one module per expert (``ffn.experts.E.fc1.weight``); ours stacks
  them per layer (``ffn.fc1`` of shape (expert, d_ff, d_model)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import json
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ._device import resolve_device
from .exceptions import CheckpointError
from .model.config import ConfigError, MoiraiMoEConfig
from .model.distributions import COMPONENT_PARAMS

if TYPE_CHECKING:
    from .model.modeling import MoiraiMoEModel

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PortableModel",
    "from_official",
    "load_checkpoint",
    "official_shapes",
    "resolve_checkpoint",
    "save_checkpoint",
    "to_official",
]

#: file name of a checkpoint's configuration (uni2ts' constructor arguments)
CONFIG_NAME = "config.json"
#: file name of a checkpoint's weights (the official state dict, safetensors)
WEIGHTS_NAME = "model.safetensors"

#: where bundled checkpoints live inside the package: one folder per model
BUNDLED_ROOT = Path(__file__).parent / "weights"


def _bundled() -> dict[str, Path]:
    if not BUNDLED_ROOT.is_dir():
        return {}
    return {
        folder.name: folder
        for folder in sorted(BUNDLED_ROOT.iterdir())
        if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()
    }


#: bundled checkpoints shipped inside the package: name -> folder
BUNDLED: dict[str, Path] = _bundled()

_EXPERT_KEY = re.compile(
    r"^encoder\.layers\.(\d+)\.ffn\.experts\.(\d+)\.(\w+)\.weight$"
)
_STACKED_KEY = re.compile(r"^encoder\.layers\.(\d+)\.ffn\.(fc1|fc_gate|fc2)$")
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")


def _multi_size_keys(config: MoiraiMoEConfig) -> list[str]:
    keys = ["in_proj", "res_proj", "feat_proj", "param_proj.proj.weights_logits"]
    for index, name in enumerate(config.mixture_components):
        keys += [
            f"param_proj.proj.components.{index}.{leaf}"
            for leaf in COMPONENT_PARAMS[name]
        ]
    return [f"{k}.{p}" for k in keys for p in ("weight", "bias")]


def official_shapes(config: MoiraiMoEConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every official state-dict key with its shape and dtype name.

    Parameters
    ----------
    config : MoiraiMoEConfig
        The model configuration.

    Returns
    -------
    dict
        ``key -> (shape, dtype)``, dtype ``"float32"`` or ``"float64"``.

    Examples
    --------
    >>> from moirai_moe_sk.checkpoint import official_shapes
    >>> from moirai_moe_sk.model import MoiraiMoEConfig
    >>> official_shapes(MoiraiMoEConfig())["in_proj.weight"]
    ((1, 384, 16), 'float32')
    """
    d, h, p, e = config.d_model, config.d_ff, config.patch_size, config.num_experts
    k = len(config.mixture_components)
    f32 = "float32"
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "in_proj.weight": ((1, d, p), f32),
        "in_proj.bias": ((1, d), f32),
        "res_proj.weight": ((1, d, p), f32),
        "res_proj.bias": ((1, d), f32),
        "feat_proj.weight": ((1, d, d), f32),
        "feat_proj.bias": ((1, d), f32),
        "encoder.norm.weight": ((d,), f32),
        "param_proj.proj.weights_logits.weight": ((1, k * p, d), f32),
        "param_proj.proj.weights_logits.bias": ((1, k * p), f32),
    }
    if config.gate == "centroid":
        shapes["encoder.centroid"] = ((config.num_layers, e, d), "float64")
    for index, name in enumerate(config.mixture_components):
        for leaf in COMPONENT_PARAMS[name]:
            prefix = f"param_proj.proj.components.{index}.{leaf}"
            shapes[f"{prefix}.weight"] = ((1, p, d), f32)
            shapes[f"{prefix}.bias"] = ((1, p), f32)
    for layer in range(config.num_layers):
        pre = f"encoder.layers.{layer}"
        shapes[f"{pre}.self_attn.var_attn_bias.emb.weight"] = (
            (2, config.num_heads),
            f32,
        )
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{pre}.self_attn.{proj}.weight"] = ((d, d), f32)
        for norm in ("q_norm", "k_norm"):
            shapes[f"{pre}.self_attn.{norm}.weight"] = ((config.head_dim,), f32)
        shapes[f"{pre}.norm1.weight"] = ((d,), f32)
        shapes[f"{pre}.norm2.weight"] = ((d,), f32)
        if config.gate == "linear":
            shapes[f"{pre}.ffn.gate.weight"] = ((e, d), f32)
        for expert in range(e):
            shapes[f"{pre}.ffn.experts.{expert}.fc1.weight"] = ((h, d), f32)
            shapes[f"{pre}.ffn.experts.{expert}.fc_gate.weight"] = ((h, d), f32)
            shapes[f"{pre}.ffn.experts.{expert}.fc2.weight"] = ((d, h), f32)
    return shapes


def to_official(
    state: Mapping[str, torch.Tensor], config: MoiraiMoEConfig
) -> dict[str, torch.Tensor]:
    """Convert our state dict to the official key names and shapes.

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        A state dict of :class:`~moirai_moe_sk.model.MoiraiMoEModel`.
    config : MoiraiMoEConfig
        Its configuration.

    Returns
    -------
    dict of str to torch.Tensor
        The uni2ts state dict: one tensor per expert and a leading dimension of
        1 on the multi-size linears, detached and contiguous.

    Examples
    --------
    >>> from moirai_moe_sk.checkpoint import to_official
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> official = to_official(model.state_dict(), config)
    >>> official["encoder.layers.0.ffn.experts.3.fc1.weight"].shape
    torch.Size([64, 64])
    >>> official["in_proj.weight"].shape
    torch.Size([1, 64, 16])
    """
    multi = set(_multi_size_keys(config))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stacked = _STACKED_KEY.match(key)
        if stacked:
            layer, name = stacked.groups()
            for expert, weight in enumerate(value.unbind(0)):
                out[f"encoder.layers.{layer}.ffn.experts.{expert}.{name}.weight"] = (
                    weight
                )
        elif key in multi:
            out[key] = value.unsqueeze(0)
        else:
            out[key] = value
    return {k: v.detach().contiguous() for k, v in out.items()}


def _check_sizes(
    state: Mapping[str, torch.Tensor],
    info: Callable[[str], tuple[tuple[int, ...], torch.dtype | str]],
    config: MoiraiMoEConfig,
    source: str,
) -> None:
    """Compare the sizes ``config.json`` states with the tensors it comes with.

    Runs on the keys and shapes alone (for a file: its header), before anything
    is built from the config, so that a crafted ``num_layers`` or
    ``num_experts`` fails at once instead of allocating for it. Sizes the state
    does not show (a tensor missing) are left to the full key check.
    """
    # indices kept as text: a crafted key may hold more digits than int() takes
    layers: set[str] = set()
    experts: set[str] = set()
    for key in state:
        layer = _LAYER_KEY.match(key)
        if layer:
            layers.add(layer.group(1))
        expert = _EXPERT_KEY.match(key)
        if expert:
            experts.add(expert.group(2))
    found: dict[str, int] = {"num_layers": len(layers)}
    if experts:
        found["num_experts"] = len(experts)
    for field, key, axis in (
        ("d_model", "encoder.norm.weight", 0),
        ("d_ff", "encoder.layers.0.ffn.experts.0.fc1.weight", 0),
    ):
        if key in state:
            shape = info(key)[0]
            if len(shape) > axis:
                found[field] = shape[axis]
    wrong = [
        f"{field} is {getattr(config, field)} in {CONFIG_NAME} but "
        f"{value} in {WEIGHTS_NAME}"
        for field, value in found.items()
        if getattr(config, field) != value
    ]
    if wrong:
        msg = (
            f"checkpoint {source}: {CONFIG_NAME} does not match {WEIGHTS_NAME}: "
            + "; ".join(wrong)
        )
        raise CheckpointError(msg)


def _check_official(
    state: Mapping[str, torch.Tensor], config: MoiraiMoEConfig, source: str
) -> None:
    # shapes and dtypes without reading the data of a lazily read file
    info = (
        state.info
        if isinstance(state, _LazyWeights)
        else lambda key: (tuple(state[key].shape), state[key].dtype)
    )
    _check_sizes(state, info, config, source)
    expected = official_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    present = {key: info(key) for key in expected if key in state}
    wrong = sorted(
        f"{key}: expected {tuple(shape)}, found {present[key][0]}"
        for key, (shape, _) in expected.items()
        if key in present and present[key][0] != shape
    )
    not_float = sorted(
        f"{key}: {dtype}"
        for key, (_, dtype) in present.items()
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point)
    )
    problems = []
    for label, items in (
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("mis-shaped tensors", wrong),
        ("non-float tensors", not_float),
    ):
        if items:
            problems.append(f"{label}: {_listed(items)}")
    if problems:
        msg = (
            f"checkpoint {source} does not match its config.json "
            f"(d_model={config.d_model}, num_layers={config.num_layers}, "
            f"num_experts={config.num_experts}): " + "; ".join(problems)
        )
        raise CheckpointError(msg)


def _listed(items: list[str]) -> str:
    """Return the first five ``items`` and their count, for messages."""
    return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" * (len(items) > 5))


def from_official(
    state: Mapping[str, torch.Tensor],
    config: MoiraiMoEConfig,
    source: str = "state dict",
) -> dict[str, torch.Tensor]:
    """Convert an official state dict to ours, checking every key and shape.

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        The uni2ts state dict (as read from ``model.safetensors``).
    config : MoiraiMoEConfig
        The configuration it must match.
    source : str
        What the state came from, for error messages.

    Returns
    -------
    dict of str to torch.Tensor
        Our state dict (stacked experts, plain linears), float32 except the
        float64 gate centroids.

    Raises
    ------
    CheckpointError
        If the sizes in ``config`` do not match the tensors', or a tensor is
        missing, unexpected, mis-shaped, not floating point or holds NaN or
        infinite values.

    Examples
    --------
    >>> from moirai_moe_sk.checkpoint import from_official, to_official
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> official = to_official(model.state_dict(), config)
    >>> ours = from_official(official, config)
    >>> ours["encoder.layers.0.ffn.fc1"].shape  # (expert, d_ff, d_model)
    torch.Size([4, 64, 64])

    A tensor too few is named:

    >>> del official["encoder.norm.weight"]
    >>> from_official(official, config)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moirai_moe_sk.exceptions.CheckpointError: ... missing tensors: encoder.norm.weight
    """
    _check_official(state, config, source)
    multi = set(_multi_size_keys(config))
    out: dict[str, torch.Tensor] = {}
    non_finite: list[str] = []
    # experts are copied into stacked float32 tensors one by one, so that a
    # lazily read state (see _LazyWeights) never holds two copies of them
    for key in state:
        value = state[key]
        if not bool(torch.isfinite(value).all()):
            non_finite.append(key)
        match = _EXPERT_KEY.match(key)
        if match:
            layer, expert, name = match.groups()
            stacked_key = f"encoder.layers.{layer}.ffn.{name}"
            stacked = out.get(stacked_key)
            if stacked is None:
                stacked = out[stacked_key] = torch.empty(
                    config.num_experts,
                    *value.shape,
                    dtype=torch.float32,
                    device=value.device,
                )
            stacked[int(expert)] = value
        # always copies: the result never aliases the input (for a lazily read
        # file, it would keep the file mapped in memory for the model's life)
        elif key in multi:
            out[key] = value[0].to(torch.float32, copy=True)
        elif key == "encoder.centroid":
            out[key] = value.to(torch.float64, copy=True)
        else:
            out[key] = value.to(torch.float32, copy=True)
    if non_finite:
        msg = (
            f"checkpoint {source} holds NaN or infinite values in "
            f"{len(non_finite)} tensor(s): {_listed(sorted(non_finite))}; the "
            "weights are damaged (a diverged training run or a bad conversion)"
        )
        raise CheckpointError(msg)
    return out


# --------------------------------------------------------------------- resolve
def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path, str]:
    """Find ``config.json`` and ``model.safetensors`` for a checkpoint.

    Resolution order: an existing local folder, a bundled model name, then a
    hub id downloaded (or read from the cache) through huggingface_hub.

    Parameters
    ----------
    name_or_path : str or path-like
        A local folder, a bundled model name (``"moirai-moe-sk-tiny"``) or a
        hub id (``"Salesforce/moirai-moe-1.0-R-small"``).
    revision : str, optional
        Hub branch, tag or commit hash.
    cache_dir : str or path-like, optional
        Hub cache folder; huggingface_hub's default otherwise.
    local_files_only : bool
        Never contact the hub; use the cache only.
    token : str or bool, optional
        Hub token, for private repositories.

    Returns
    -------
    config_path, weights_path : pathlib.Path
        The two files.
    source : str
        A description of where they came from, for messages.

    Raises
    ------
    CheckpointError
        If the name is none of the three (a name that looks like a path, such
        as ``"./model"``, ``"~/model"`` or ``"a/b/c"``, is reported as a missing
        folder), or the hub cannot provide the files
        (offline, ``local_files_only`` without a cached copy, unknown
        repository or revision).

    Examples
    --------
    >>> from moirai_moe_sk.checkpoint import resolve_checkpoint
    >>> config_path, weights_path, source = resolve_checkpoint("moirai-moe-sk-tiny")
    >>> config_path.name, weights_path.name, source
    ('config.json', 'model.safetensors', "bundled model 'moirai-moe-sk-tiny'")

    A hub id is downloaded once into the hub cache (network needed):

    >>> resolve_checkpoint("Salesforce/moirai-moe-1.0-R-small")  # doctest: +SKIP
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path / CONFIG_NAME, path / WEIGHTS_NAME, f"folder {str(path)!r}"
    if path.exists():
        msg = (
            f"checkpoint {name!r} is a file, not a folder: pass the folder that "
            f"holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
        raise CheckpointError(msg)
    if name in BUNDLED:
        folder = BUNDLED[name]
        return folder / CONFIG_NAME, folder / WEIGHTS_NAME, f"bundled model {name!r}"
    if _looks_like_path(name):
        msg = (
            f"checkpoint folder {name!r} does not exist (looked for "
            f"{str(path.absolute())!r}); pass an existing folder holding "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}, a bundled model "
            f"({sorted(BUNDLED) or 'none installed'}) or a hub id like "
            "'Salesforce/moirai-moe-1.0-R-small'"
        )
        raise CheckpointError(msg)
    if not _looks_like_repo_id(name):
        msg = (
            f"checkpoint {name!r} is neither an existing folder, a bundled model "
            f"({sorted(BUNDLED) or 'none installed'}) nor a hub id like "
            "'Salesforce/moirai-moe-1.0-R-small'"
        )
        raise CheckpointError(msg)
    config_path = _hub_download(
        name, CONFIG_NAME, revision, cache_dir, local_files_only, token
    )
    weights_path = _hub_download(
        name, WEIGHTS_NAME, revision, cache_dir, local_files_only, token
    )
    where = f"hub repository {name!r}" + (
        f" at revision {revision!r}" if revision else ""
    )
    return config_path, weights_path, where


def _looks_like_repo_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and ".." not in name


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a folder: never sent to the hub."""
    if name.startswith((".", "~")) or Path(name).is_absolute():
        return True
    separators = {os.sep, os.altsep or os.sep, "/", "\\"}
    return any(sep in name for sep in separators) and not _looks_like_repo_id(name)


def _hub_download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    at = f" at revision {revision!r}" if revision else ""
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=None if cache_dir is None else Path(cache_dir),
                local_files_only=local_files_only,
                token=token,
            )
        )
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as err:
        msg = (
            f"cannot get {filename!r} of {repo_id!r}{at}: it is not in the local "
            "cache and the hub cannot be reached (offline, HF_HUB_OFFLINE=1 or "
            "local_files_only=True). Download it once with network access, or pass "
            "the path of a local folder holding config.json and model.safetensors"
        )
        raise CheckpointError(msg) from err
    except hub_errors.RevisionNotFoundError as err:
        msg = f"hub repository {repo_id!r} has no revision {revision!r}"
        raise CheckpointError(msg) from err
    except hub_errors.RemoteEntryNotFoundError as err:
        msg = f"hub repository {repo_id!r}{at} has no file {filename!r}"
        raise CheckpointError(msg) from err
    except hub_errors.RepositoryNotFoundError as err:
        msg = (
            f"hub repository {repo_id!r} was not found (or needs a token); check "
            "the name, or pass a local folder"
        )
        raise CheckpointError(msg) from err
    except (hub_errors.HfHubHTTPError, OSError) as err:
        msg = f"downloading {filename!r} of {repo_id!r}{at} failed: {err}"
        raise CheckpointError(msg) from err


# ------------------------------------------------------------------- load/save
def read_config(config_path: Path, source: str) -> MoiraiMoEConfig:
    """Parse and validate ``config.json``."""
    if not config_path.is_file():
        msg = f"checkpoint {source} has no {CONFIG_NAME}"
        raise CheckpointError(msg)
    try:
        raw = config_path.read_bytes()
    except OSError as err:  # e.g. removed since the check above
        msg = f"cannot read {CONFIG_NAME} of checkpoint {source}: {err}"
        raise CheckpointError(msg) from err
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{CONFIG_NAME} of checkpoint {source} is not valid JSON: {err}"
        raise CheckpointError(msg) from err
    try:
        return MoiraiMoEConfig.from_dict(data)
    except ConfigError as err:
        msg = f"{CONFIG_NAME} of checkpoint {source}: {err}"
        raise CheckpointError(msg) from err


def read_weights(
    weights_path: Path, source: str, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` (never a pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_path.is_file():
        msg = f"checkpoint {source} has no {WEIGHTS_NAME}"
        raise CheckpointError(msg)
    try:
        return load_file(weights_path, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        msg = f"{WEIGHTS_NAME} of checkpoint {source} is corrupt or unreadable: {err}"
        raise CheckpointError(msg) from err


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


class _LazyWeights(Mapping[str, torch.Tensor]):
    """``model.safetensors`` as a mapping that reads each tensor when asked.

    Loading through it keeps one copy of the weights in memory (the model's),
    plus the tensor being converted.
    """

    def __init__(
        self, path: Path, source: str, map_location: str | torch.device = "cpu"
    ) -> None:
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            msg = f"checkpoint {source} has no {WEIGHTS_NAME}"
            raise CheckpointError(msg)
        self._source = source
        try:
            self._file = safe_open(path, framework="pt", device=str(map_location))
            self._keys = list(self._file.keys())
        except (SafetensorError, OSError, ValueError) as err:
            raise self._error(err) from err

    def _error(self, err: Exception) -> CheckpointError:
        return CheckpointError(
            f"{WEIGHTS_NAME} of checkpoint {self._source} is corrupt or "
            f"unreadable: {err}"
        )

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import SafetensorError

        if key not in self._keys:
            raise KeyError(key)
        try:
            return self._file.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as err:
            raise self._error(err) from err

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def info(self, key: str) -> tuple[tuple[int, ...], torch.dtype | str]:
        """Return the shape and dtype of ``key`` without reading its data."""
        from safetensors import SafetensorError

        try:
            part = self._file.get_slice(key)
            shape, dtype = tuple(part.get_shape()), part.get_dtype()
        except (SafetensorError, OSError, ValueError) as err:
            raise self._error(err) from err
        return shape, _SAFETENSORS_DTYPES.get(dtype, dtype)

    def __len__(self) -> int:
        return len(self._keys)


#: reads of a local folder before giving up when writers keep replacing it
_READ_ATTEMPTS = 20
#: of which, for a folder missing with no writer seen (20 ms of waits in all)
_MISSING_ATTEMPTS = 4
#: replacements of the destination tried before a save gives up
_SWAP_ATTEMPTS = 100


def _folder_id(path: Path, fd: int | None = None) -> tuple[int, int] | None:
    """(device, inode) of the folder at ``path`` (or open as ``fd``), or None."""
    try:
        st = path.stat() if fd is None else os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _swap_in_progress(folder: Path) -> bool:
    """Whether a :func:`save_checkpoint` is between its two renames of ``folder``."""
    try:
        return any(folder.parent.glob(f"{glob.escape(folder.name)}.old-*"))
    except (OSError, ValueError):  # ValueError: a name glob cannot take
        return False


def _read_unchanged(
    folder: Path, read: Callable[[], tuple[MoiraiMoEConfig, _LazyWeights, str]]
) -> tuple[MoiraiMoEConfig, _LazyWeights, str]:
    """Run ``read`` until ``folder`` stayed the same folder throughout.

    :func:`save_checkpoint` replaces a folder by renaming a complete new one
    into its place, so both files come from one save when the folder (held
    open, so that its inode cannot be reused) is still the one at ``folder``
    after both were opened. A folder missing between a writer's two renames
    is waited for. The weights file is memory-mapped when opened, so its
    contents survive the writer deleting the old folder.
    """
    for attempt in range(1, _READ_ATTEMPTS + 1):
        fd = None
        with contextlib.suppress(OSError):  # Windows cannot open folders
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            before = _folder_id(folder, fd)
            try:
                result = read()
            except CheckpointError:
                # a missing folder is retried a few times even when no
                # set-aside folder is seen: a listing can miss a renamed entry
                retry = (
                    _swap_in_progress(folder)
                    or _folder_id(folder) != before
                    or (before is None and attempt <= _MISSING_ATTEMPTS)
                )
                if not retry or attempt == _READ_ATTEMPTS:
                    raise
            else:
                if before is not None and _folder_id(folder) == before:
                    return result
        finally:
            if fd is not None:
                os.close(fd)
        time.sleep(min(0.002 * attempt, 0.02))
    msg = (
        f"checkpoint folder {str(folder)!r} was replaced {_READ_ATTEMPTS} times "
        "while being read; is another process saving to it in a loop?"
    )
    raise CheckpointError(msg)


def load_checkpoint(
    cls: type[MoiraiMoEModel],
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str | torch.device = "cpu",
) -> MoiraiMoEModel:
    """Build ``cls`` from a checkpoint; see :meth:`MoiraiMoEModel.from_pretrained`.

    Parameters
    ----------
    cls : type
        :class:`~moirai_moe_sk.model.MoiraiMoEModel` or a subclass.
    name_or_path : str or path-like
        Local folder, bundled model name or hub id (:func:`resolve_checkpoint`).
    revision, cache_dir, local_files_only, token
        Hub options, as in :func:`resolve_checkpoint`.
    map_location : str or torch.device
        Device the weights are loaded to (see
        :func:`~moirai_moe_sk._device.resolve_device`).

    Returns
    -------
    MoiraiMoEModel
        The model with every tensor loaded strictly, in eval mode.

    Raises
    ------
    CheckpointError
        If the checkpoint cannot be found or read, or does not match its config.
    ValueError
        If ``map_location`` is not a usable device.

    Notes
    -----
    A local folder is read consistently while :func:`save_checkpoint` replaces
    it: ``config.json`` and ``model.safetensors`` come from the same save, and
    a folder replaced during the read is read again.

    Examples
    --------
    >>> from moirai_moe_sk.checkpoint import load_checkpoint
    >>> from moirai_moe_sk.model import MoiraiMoEModel
    >>> model = load_checkpoint(MoiraiMoEModel, "moirai-moe-sk-tiny")
    >>> model.config.num_experts, model.training
    (16, False)
    """
    device = resolve_device(map_location)

    def read() -> tuple[MoiraiMoEConfig, _LazyWeights, str]:
        config_path, weights_path, source = resolve_checkpoint(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        config = read_config(config_path, source)
        return config, _LazyWeights(weights_path, source, device), source

    folder = Path(os.fspath(name_or_path)).expanduser()
    local = folder.is_dir() or _looks_like_path(os.fspath(name_or_path))
    if local or _swap_in_progress(folder):
        config, state, source = _read_unchanged(folder, read)
    else:  # bundled and hub files are never rewritten in place
        config, state, source = read()
    model = build_model(cls, config, state, source, device)
    logger.info("loaded Moirai-MoE checkpoint from %s", source)
    return model


def build_model(
    cls: type[MoiraiMoEModel],
    config: MoiraiMoEConfig,
    state: Mapping[str, torch.Tensor],
    source: str,
    map_location: str | torch.device = "cpu",
) -> MoiraiMoEModel:
    """Build ``cls(config)`` holding the official-layout ``state``, in eval mode.

    Building the module runs its initialisers; the caller's RNG is untouched.
    """
    internal = from_official(state, config, source)
    # built without memory, then the loaded tensors become the parameters
    # (no random initialisation, no second copy of the weights)
    with torch.device("meta"):
        model = cls(config)
    model.load_state_dict(internal, strict=True, assign=True)
    with torch.device(map_location):  # non-persistent buffers: the rotary tables
        encoder = model.encoder
        encoder.rotary = type(encoder.rotary)(
            encoder.rotary.rotary_dim, config.max_seq_len
        )
    meta = [name for name, t in model.state_dict().items() if t.is_meta]
    if meta:  # pragma: no cover - a new buffer that the loader does not rebuild
        msg = f"tensors left unloaded: {meta}"
        raise RuntimeError(msg)
    return model.eval()


#: storage types ``save_checkpoint`` accepts (``load_checkpoint`` reads them all)
SAVE_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _storage_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` of :func:`save_checkpoint` as a torch dtype, checked."""
    if dtype is None:
        return None
    allowed = ", ".join(repr(name) for name in SAVE_DTYPES)
    if isinstance(dtype, str):
        found = SAVE_DTYPES.get(dtype.removeprefix("torch."))
    elif isinstance(dtype, torch.dtype):
        found = dtype if dtype in SAVE_DTYPES.values() else None
    else:
        msg = (
            f"dtype must be None, a string ({allowed}) or a torch.dtype, got "
            f"{dtype!r} ({type(dtype).__name__})"
        )
        raise TypeError(msg)
    if found is None:
        msg = f"dtype {dtype!r} cannot be stored: use one of {allowed} or None"
        raise ValueError(msg)
    return found


def _new_sibling(folder: Path, tag: str) -> Path:
    """Return a path ``<folder>.<tag>-XXXXXXXX`` beside ``folder`` that is free."""
    while True:
        candidate = folder.with_name(f"{folder.name}.{tag}-{secrets.token_hex(4)}")
        if not os.path.lexists(candidate):
            return candidate


def _link_extras(source: Path, staging: Path) -> None:
    """Hard-link (or copy) what ``source`` holds besides a checkpoint into ``staging``."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)

    for entry in source.iterdir():
        target = staging / entry.name
        if entry.name in (CONFIG_NAME, WEIGHTS_NAME) or os.path.lexists(target):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(str(entry), str(target))


def _swap_in(staging: Path, folder: Path) -> None:
    """Rename the complete ``staging`` folder to ``folder``, replacing it.

    A missing ``folder`` is replaced in one atomic rename. An existing one is
    first renamed aside (``<folder>.old-XXXXXXXX``), its extra files linked into
    ``staging``, then ``staging`` renamed into place and the old one deleted;
    readers find no folder only between those two renames (and
    :func:`load_checkpoint` waits for it). On failure the old folder is put
    back. Concurrent writers each take the folder they find, so the last
    rename wins and every generation keeps the extra files.
    """
    asides: list[Path] = []
    try:
        done = _try_swaps(staging, folder, asides)
    except BaseException:
        if asides:  # put the previous checkpoint back unless a writer won
            try:
                asides[-1].replace(folder)
            except OSError:
                if not folder.exists():
                    logger.warning(
                        "saving to %s failed; its previous checkpoint is in %s",
                        folder,
                        asides[-1],
                    )
                    asides.pop()  # keep it: it is the only copy
            else:
                asides.pop()
        raise
    finally:
        for aside in asides:
            shutil.rmtree(aside, ignore_errors=True)
    if not done:
        msg = (
            f"could not replace {str(folder)!r}: other writers replaced it "
            f"{_SWAP_ATTEMPTS} times during this save"
        )
        raise CheckpointError(msg)


def _try_swaps(staging: Path, folder: Path, asides: list[Path]) -> bool:
    """Rename ``staging`` to ``folder``, moving what is there to ``asides``."""
    for _ in range(_SWAP_ATTEMPTS):
        try:
            staging.replace(folder)
        except OSError as err:
            taken = isinstance(err, FileExistsError) or err.errno in (
                errno.EEXIST,
                errno.ENOTEMPTY,
            )
            if not taken:
                raise
        else:
            return True
        aside = _new_sibling(folder, "old")
        try:
            folder.replace(aside)
        except FileNotFoundError:  # another writer is swapping: retry
            continue
        asides.append(aside)
        _link_extras(aside, staging)
    return False


def save_checkpoint(
    model: MoiraiMoEModel,
    save_directory: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
) -> None:
    """Write ``model`` as ``config.json`` + ``model.safetensors``, all at once.

    The checkpoint is written to a new folder next to ``save_directory``
    (``<save_directory>.tmp-XXXXXXXX``) and renamed into place only when
    complete, so a failed or interrupted save leaves the previous checkpoint,
    and a reader (:func:`load_checkpoint`) sees the previous or the new one,
    never a mix. Other files in ``save_directory`` (a README, a sub-folder)
    are kept: they are hard-linked (or copied) into the new folder.

    ``dtype`` (e.g. ``torch.float16`` or ``"float16"``, half the size) stores
    the weights in that floating type; the gate centroids keep theirs.
    Loading casts back to float32.

    Parameters
    ----------
    model : MoiraiMoEModel
        The model to save.
    save_directory : str or path-like
        Folder to write to (created if missing, with its parents); a checkpoint
        already there is replaced. A symbolic link is followed: its target is
        replaced.
    dtype : torch.dtype or str, optional
        Floating type to store the weights in: ``"float16"``, ``"bfloat16"``,
        ``"float32"`` or ``"float64"`` (or the torch dtype); their own by
        default.

    Raises
    ------
    TypeError, ValueError
        If ``dtype`` is not one of those, or ``save_directory`` is a file or
        the current working folder (or one above it), which cannot be renamed.

    Notes
    -----
    The guarantee is POSIX's: renaming a folder onto a missing path is atomic.
    Replacing an existing folder takes two renames (old aside, new in); a
    reader in between waits, and a crash in between (power loss, ``kill -9``)
    leaves the previous checkpoint in ``<save_directory>.old-XXXXXXXX``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> from moirai_moe_sk.checkpoint import save_checkpoint
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> folder = tempfile.mkdtemp()
    >>> save_checkpoint(model, folder, dtype="float16")
    >>> sorted(path.name for path in Path(folder).iterdir())
    ['config.json', 'model.safetensors']
    >>> MoiraiMoEModel.from_pretrained(folder).config == config
    True
    """
    from safetensors.torch import save_file

    store = _storage_dtype(dtype)
    is_file = False
    # normpath, not resolve: a symbolic link is replaced only below
    folder = Path(os.path.normpath(Path(save_directory).expanduser().absolute()))
    if folder.is_symlink():
        folder = folder.resolve()
    # one stat: exists() then is_dir() could see another writer's swap between
    with contextlib.suppress(FileNotFoundError):
        is_file = not stat.S_ISDIR(folder.stat().st_mode)
    if is_file:
        msg = f"cannot save a checkpoint to {str(folder)!r}: it is a file"
        raise ValueError(msg)
    cwd = Path.cwd()
    if folder == folder.parent or folder == cwd or folder in cwd.parents:
        msg = (
            f"cannot save a checkpoint to {str(folder)!r}: the folder is replaced "
            "as a whole, and it is the current working folder (or holds it); "
            "save to a sub-folder"
        )
        raise ValueError(msg)
    state = {
        k: v.cpu() if store is None or k == "encoder.centroid" else v.to("cpu", store)
        for k, v in model.official_state_dict().items()
    }
    config_text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_sibling(folder, "tmp")
    staging.mkdir()
    try:
        with contextlib.suppress(OSError):  # keep the folder's permissions
            shutil.copymode(folder, staging)
        save_file(state, str(staging / WEIGHTS_NAME))
        (staging / CONFIG_NAME).write_text(config_text, encoding="utf-8")
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            (staging / name).chmod(0o644)  # ordinary data, whatever the umask
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved Moirai-MoE checkpoint to %s", folder)


@dataclasses.dataclass(frozen=True)
class PortableModel:
    """A model as plain data: its config dict and safetensors bytes.

    This is how fine-tuned weights travel through ``pickle`` and
    ``copy.deepcopy`` of a forecaster: the tensors are serialised with
    safetensors (in the official layout), never with torch's pickler.

    Attributes
    ----------
    config : dict
        ``MoiraiMoEConfig.to_dict()``.
    weights : bytes
        ``safetensors`` serialisation of ``official_state_dict()``.

    Examples
    --------
    >>> import pickle
    >>> import torch
    >>> from moirai_moe_sk.checkpoint import PortableModel
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> portable = pickle.loads(pickle.dumps(PortableModel.from_model(model)))
    >>> copy = portable.to_model()
    >>> torch.equal(copy.encoder.layers[0].ffn.fc1, model.encoder.layers[0].ffn.fc1)
    True
    """

    config: dict
    weights: bytes

    @classmethod
    def from_model(cls, model: MoiraiMoEModel) -> PortableModel:
        """Serialise ``model``.

        Examples
        --------
        >>> from moirai_moe_sk.checkpoint import PortableModel
        >>> from moirai_moe_sk.model import MoiraiMoEModel
        >>> portable = PortableModel.from_model(
        ...     MoiraiMoEModel.from_pretrained("moirai-moe-sk-tiny")
        ... )
        >>> portable.config["d_model"], type(portable.weights).__name__
        (128, 'bytes')
        """
        from safetensors.torch import save

        state = {k: v.detach().cpu() for k, v in model.official_state_dict().items()}
        return cls(config=model.config.to_dict(), weights=save(state))

    def to_model(self) -> MoiraiMoEModel:
        """Rebuild the model on the CPU, in eval mode without gradients.

        Examples
        --------
        >>> from moirai_moe_sk.checkpoint import PortableModel
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = PortableModel.from_model(MoiraiMoEModel(config)).to_model()
        >>> model.training, any(p.requires_grad for p in model.parameters())
        (False, False)
        """
        from safetensors.torch import load

        from .model.modeling import MoiraiMoEModel

        config = MoiraiMoEConfig.from_dict(self.config)
        model = build_model(
            MoiraiMoEModel, config, load(self.weights), "a pickled forecaster"
        )
        return model.requires_grad_(False)
