"""Configuration of a Moirai-MoE model and its ``config.json`` serialisation.

The official checkpoints store the constructor arguments of uni2ts'
``MoiraiMoEModule`` in ``config.json``; the mixture head is serialised as a
``distr_output`` block of ``_target_`` class paths. :class:`MoiraiMoEConfig`
holds those fields plus the mixture-of-experts settings that uni2ts hard-codes
(32 experts, top-2, farthest-centroid gating). Only non-default MoE settings are
written to ``config.json``, so a default configuration round-trips to a file
the reference loader reads.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "COMPONENT_TARGETS",
    "MAX_SEQ_LEN_LIMIT",
    "ConfigError",
    "MoiraiMoEConfig",
]

HEAD_DIM = 64  # uni2ts: num_heads = d_model // 64

#: The largest ``max_seq_len`` accepted. It is only the initial length of the
#: rotary tables (they grow on demand), and it is the one size in
#: ``config.json`` that no weight tensor checks, so a crafted value could ask
#: for any amount of memory; 2**20 patches (16.7 million steps at patch 16)
#: is far beyond any context the model can attend to.
MAX_SEQ_LEN_LIMIT = 2**20

_INT_FIELDS = (
    "d_model",
    "d_ff",
    "num_layers",
    "max_seq_len",
    "num_experts",
    "num_experts_per_token",
)
_FLOAT_FIELDS = ("attn_dropout_p", "dropout_p", "normal_fixed_scale")

#: ``_target_`` class paths of the official ``distr_output`` block, mapped to the
#: component names used here. A closed registry: nothing is imported by name.
COMPONENT_TARGETS: dict[str, str] = {
    "uni2ts.distribution.student_t.StudentTOutput": "student_t",
    "uni2ts.distribution.normal.NormalFixedScaleOutput": "normal_fixed_scale",
    "uni2ts.distribution.negative_binomial.NegativeBinomialOutput": (
        "negative_binomial"
    ),
    "uni2ts.distribution.log_normal.LogNormalOutput": "log_normal",
}
_COMPONENT_TO_TARGET = {name: target for target, name in COMPONENT_TARGETS.items()}
MIXTURE_TARGET = "uni2ts.distribution.mixture.MixtureOutput"

#: Keys of the official ``config.json`` (the uni2ts constructor arguments).
OFFICIAL_KEYS = (
    "attn_dropout_p",
    "d_ff",
    "d_model",
    "distr_output",
    "dropout_p",
    "max_seq_len",
    "num_layers",
    "patch_sizes",
    "scaling",
)
#: Keys this package adds for its own models; written only when not default.
EXTENSION_KEYS = (
    "num_experts",
    "num_experts_per_token",
    "gate",
    "gate_selection",
    "context_length",
)


class ConfigError(ValueError):
    """A configuration or ``config.json`` that cannot describe a Moirai-MoE model.

    Examples
    --------
    >>> from moirai_moe_sk.model.config import ConfigError, MoiraiMoEConfig
    >>> try:
    ...     MoiraiMoEConfig(d_model=100)
    ... except ConfigError as err:
    ...     print(err)
    d_model must be a multiple of 64, got 100
    >>> issubclass(ConfigError, ValueError)
    True
    """


@dataclasses.dataclass(frozen=True)
class MoiraiMoEConfig:
    """Frozen hyper-parameters of a Moirai-MoE model.

    Defaults are those of ``Salesforce/moirai-moe-1.0-R-small``.

    Attributes
    ----------
    d_model : int
        Width of the token representations; a multiple of 64 (heads are 64 wide).
    d_ff : int
        Hidden width of each SwiGLU expert.
    num_layers : int
        Number of transformer layers.
    patch_sizes : tuple of int
        Patch lengths; Moirai-MoE uses exactly one, 16.
    max_seq_len : int
        Initial length of the rotary tables (they grow on demand).
    attn_dropout_p, dropout_p : float
        Dropout probabilities (0 in the released checkpoints).
    scaling : bool
        Standardise each series with the packed std scaler.
    mixture_components : tuple of str
        Mixture head components, from ``"student_t"``, ``"normal_fixed_scale"``,
        ``"negative_binomial"`` and ``"log_normal"``.
    normal_fixed_scale : float
        Scale of the ``normal_fixed_scale`` component.
    num_experts : int
        Experts per MoE layer (32 in uni2ts).
    num_experts_per_token : int
        Experts each token is routed to (top-k, 2 in uni2ts).
    gate : {"centroid", "linear"}
        ``"centroid"``: token-cluster gating on fixed centroids (released
        weights); ``"linear"``: a learned linear router.
    gate_selection : {"farthest", "nearest"}
        Which centroids the centroid gate picks. The released weights were
        trained with the *farthest* ones (uni2ts uses ``topk(largest=True)`` on
        distances); ``"nearest"`` is offered for new models.
    context_length : int or None
        The context the checkpoint was trained for and recommends, in steps:
        the forecaster's default context when the user sets none. None (the
        released weights, which do not state one) leaves the forecaster's
        own rule (the longest series, capped).

    Examples
    --------
    >>> from moirai_moe_sk.model.config import MoiraiMoEConfig
    >>> MoiraiMoEConfig().num_heads  # the small release: 384 / 64
    6
    >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> cfg.num_heads, cfg.patch_size, cfg.num_experts_per_token
    (1, 16, 2)
    """

    d_model: int = 384
    d_ff: int = 512
    num_layers: int = 6
    patch_sizes: tuple[int, ...] = (16,)
    max_seq_len: int = 512
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    mixture_components: tuple[str, ...] = (
        "student_t",
        "normal_fixed_scale",
        "negative_binomial",
        "log_normal",
    )
    normal_fixed_scale: float = 1e-3
    num_experts: int = 32
    num_experts_per_token: int = 2
    gate: Literal["centroid", "linear"] = "centroid"
    gate_selection: Literal["farthest", "nearest"] = "farthest"
    context_length: int | None = None

    def __post_init__(self) -> None:
        """Validate every field and normalise sequences to tuples."""
        self._check_types()
        if self.max_seq_len > MAX_SEQ_LEN_LIMIT:
            msg = (
                f"max_seq_len must be at most {MAX_SEQ_LEN_LIMIT} (2**20), got "
                f"{self.max_seq_len}; it is only the initial length of the rotary "
                "tables, which grow on demand"
            )
            raise ConfigError(msg)
        if self.d_model % HEAD_DIM:
            msg = f"d_model must be a multiple of {HEAD_DIM}, got {self.d_model}"
            raise ConfigError(msg)
        if len(self.patch_sizes) != 1:
            msg = (
                "Moirai-MoE uses exactly one patch size, got patch_sizes="
                f"{list(self.patch_sizes)}"
            )
            raise ConfigError(msg)
        for name in ("attn_dropout_p", "dropout_p"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                msg = f"{name} must be in [0, 1), got {value!r}"
                raise ConfigError(msg)
        if not self.mixture_components:
            msg = "mixture_components must name at least one component"
            raise ConfigError(msg)
        unknown = set(self.mixture_components) - set(_COMPONENT_TO_TARGET)
        if unknown:
            msg = (
                f"unknown mixture components {sorted(unknown)}; known: "
                f"{sorted(_COMPONENT_TO_TARGET)}"
            )
            raise ConfigError(msg)
        if not (self.normal_fixed_scale > 0 and math.isfinite(self.normal_fixed_scale)):
            msg = f"normal_fixed_scale must be > 0, got {self.normal_fixed_scale!r}"
            raise ConfigError(msg)
        k = self.num_experts_per_token
        if not 1 <= k <= self.num_experts:
            msg = (
                "num_experts_per_token must be an integer in [1, num_experts="
                f"{self.num_experts}], got {k!r}"
            )
            raise ConfigError(msg)
        if self.gate not in ("centroid", "linear"):
            msg = f"gate must be 'centroid' or 'linear', got {self.gate!r}"
            raise ConfigError(msg)
        if self.gate_selection not in ("farthest", "nearest"):
            msg = (
                "gate_selection must be 'farthest' or 'nearest', got "
                f"{self.gate_selection!r}"
            )
            raise ConfigError(msg)

    def _check_types(self) -> None:
        """Check each field's type, naming the field and the value given.

        Integers may be any integral number but not a bool; floats accept
        integers; ``scaling`` is a bool; sequences are lists or tuples of those.
        Numbers are normalised to ``int`` / ``float`` and sequences to tuples.
        """

        def wrong(name: str, expected: str, value: Any, ok: Any = None) -> str:
            kind = type(value).__name__
            if ok is not None and isinstance(value, list | tuple):
                item = next(v for v in value if not ok(v))
                kind = f"bad element {item!r} of type {type(item).__name__}"
            return f"{name} must be {expected}, got {value!r} ({kind})"

        def is_int(value: Any) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        def is_size(value: Any) -> bool:
            return is_int(value) and value >= 1

        def is_str(value: Any) -> bool:
            return isinstance(value, str)

        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not is_size(value):
                raise ConfigError(wrong(name, "a positive integer", value))
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ConfigError(wrong(name, "a number", value))
            object.__setattr__(self, name, float(value))
        if not isinstance(self.scaling, bool):
            raise ConfigError(wrong("scaling", "a bool (true or false)", self.scaling))
        for name, expected, ok in (
            ("patch_sizes", "a list of positive integers", is_size),
            ("mixture_components", "a list of strings", is_str),
        ):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(map(ok, value)):
                raise ConfigError(wrong(name, expected, value, ok))
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "patch_sizes", tuple(map(int, self.patch_sizes)))
        for name in ("gate", "gate_selection"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(wrong(name, "a string", getattr(self, name)))
        context = self.context_length
        if context is not None and (not is_int(context) or context < 1):
            msg = (
                "context_length must be a positive integer or None, got "
                f"{context!r} ({type(context).__name__})"
            )
            raise ConfigError(msg)
        if context is not None:
            object.__setattr__(self, "context_length", int(context))

    # ----------------------------------------------------------------- derived
    @property
    def patch_size(self) -> int:
        """The single patch length (16 for the released models)."""
        return self.patch_sizes[0]

    @property
    def num_heads(self) -> int:
        """Attention heads, ``d_model // 64`` as in uni2ts."""
        return self.d_model // HEAD_DIM

    @property
    def head_dim(self) -> int:
        """Width of one attention head (always 64)."""
        return HEAD_DIM

    def replace(self, **changes: Any) -> MoiraiMoEConfig:
        """Return a copy with ``changes`` applied (the config itself is frozen).

        Examples
        --------
        >>> from moirai_moe_sk.model.config import MoiraiMoEConfig
        >>> MoiraiMoEConfig().replace(num_layers=2).num_layers
        2
        """
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ config.json
    def to_dict(self) -> dict[str, Any]:
        """Return the ``config.json`` content in the official uni2ts format.

        MoE settings that differ from uni2ts' hard-coded ones are added as extra
        keys; the reference loader rejects those, as it cannot build such models.

        Examples
        --------
        >>> from moirai_moe_sk.model.config import MoiraiMoEConfig
        >>> sorted(MoiraiMoEConfig().to_dict())[:3]
        ['attn_dropout_p', 'd_ff', 'd_model']
        """
        components: list[dict[str, Any]] = []
        for name in self.mixture_components:
            entry: dict[str, Any] = {"_target_": _COMPONENT_TO_TARGET[name]}
            if name == "normal_fixed_scale":
                entry["scale"] = self.normal_fixed_scale
            components.append(entry)
        out: dict[str, Any] = {
            "attn_dropout_p": self.attn_dropout_p,
            "d_ff": self.d_ff,
            "d_model": self.d_model,
            "distr_output": {"_target_": MIXTURE_TARGET, "components": components},
            "dropout_p": self.dropout_p,
            "max_seq_len": self.max_seq_len,
            "num_layers": self.num_layers,
            "patch_sizes": list(self.patch_sizes),
            "scaling": self.scaling,
        }
        default = MoiraiMoEConfig()
        for key in EXTENSION_KEYS:
            if getattr(self, key) != getattr(default, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MoiraiMoEConfig:
        """Build a config from ``config.json`` content, strictly.

        Unknown keys, missing required keys, an unknown or unsafe ``_target_``
        and malformed values raise :class:`ConfigError`.

        Examples
        --------
        >>> from moirai_moe_sk.model.config import MoiraiMoEConfig
        >>> cfg = MoiraiMoEConfig(num_layers=2)
        >>> MoiraiMoEConfig.from_dict(cfg.to_dict()) == cfg
        True
        """
        if not isinstance(data, Mapping):
            msg = f"config.json must hold a JSON object, got {type(data).__name__}"
            raise ConfigError(msg)
        unknown = set(data) - set(OFFICIAL_KEYS) - set(EXTENSION_KEYS)
        if unknown:
            msg = (
                f"unknown config key(s) {sorted(unknown)}; a Moirai-MoE config.json "
                f"holds {sorted(OFFICIAL_KEYS)} (and optionally "
                f"{sorted(EXTENSION_KEYS)})"
            )
            raise ConfigError(msg)
        required = {"d_model", "d_ff", "num_layers", "patch_sizes", "distr_output"}
        missing = required - set(data)
        if missing:
            msg = f"config.json is missing required key(s) {sorted(missing)}"
            raise ConfigError(msg)
        kwargs = {k: v for k, v in data.items() if k != "distr_output"}
        kwargs.update(_decode_distr_output(data["distr_output"]))
        try:
            return cls(**kwargs)
        except TypeError as err:  # e.g. a wrongly typed value in a comparison
            msg = f"malformed config.json: {err}"
            raise ConfigError(msg) from err


def _decode_distr_output(block: Any) -> dict[str, Any]:
    """Map the official ``distr_output`` block to config fields (closed registry)."""
    if not isinstance(block, Mapping) or block.get("_target_") != MIXTURE_TARGET:
        target = block.get("_target_") if isinstance(block, Mapping) else block
        msg = (
            f"distr_output must be a {MIXTURE_TARGET!r} block, got _target_={target!r}"
        )
        raise ConfigError(msg)
    extra = set(block) - {"_target_", "components"}
    if extra:
        msg = f"unknown key(s) {sorted(extra)} in distr_output"
        raise ConfigError(msg)
    components = block.get("components")
    if not isinstance(components, list) or not components:
        msg = "distr_output.components must be a non-empty list"
        raise ConfigError(msg)
    names: list[str] = []
    fixed_scale: float | None = None
    for entry in components:
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if target not in COMPONENT_TARGETS:
            msg = (
                f"unknown distribution _target_ {target!r} in distr_output; "
                f"supported: {sorted(COMPONENT_TARGETS)}"
            )
            raise ConfigError(msg)
        name = COMPONENT_TARGETS[target]
        allowed = (
            {"_target_", "scale"} if name == "normal_fixed_scale" else {"_target_"}
        )
        extra = set(entry) - allowed
        if extra:
            msg = f"unknown key(s) {sorted(extra)} for {target!r}"
            raise ConfigError(msg)
        if name == "normal_fixed_scale":
            scale = entry.get("scale", 1e-3)
            if not isinstance(scale, int | float) or isinstance(scale, bool):
                msg = f"{target} scale must be a number, got {scale!r}"
                raise ConfigError(msg)
            fixed_scale = float(scale)
        names.append(name)
    out: dict[str, Any] = {"mixture_components": tuple(names)}
    if fixed_scale is not None:
        out["normal_fixed_scale"] = fixed_scale
    return out
