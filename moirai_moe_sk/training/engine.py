"""The fine-tuning engine: windows in, a better model out.

:func:`fine_tune` trains a *copy* of a :class:`MoiraiMoEModel` on a list of
:class:`~moirai_moe_sk.training.data.TrainingSeries` with the next-patch NLL
(:mod:`.objective`), AdamW and a warm-up plus cosine (or constant) schedule.

Budget. Every step draws ``batch_size`` windows at random among *all*
admissible windows of the training parts (every end point that leaves one
input patch and one label patch, :func:`admissible_windows`), each with its
own mask ratio, so even one short series gives many distinct windows. An
*epoch* is as many windows as there are admissible ones. Without
``max_steps`` the run takes one epoch's worth of steps, at least
``min_steps`` and at most ``max_auto_steps`` (:func:`planned_steps`).

Validation. The held-out end of each series is scored every ``eval_every``
steps (ten times a run by default); training stops after ``patience``
evaluations without improvement and restores the best weights, where the
starting weights are a candidate too: fine-tuning never returns a model with
a worse validation NLL than it started from. When the starting weights win, a
:class:`~moirai_moe_sk.exceptions.FineTuneWarning` says so and names the
settings to change. It runs seeded and deterministic on the CPU, inside
:func:`torch.random.fork_rng` so that the caller's random state is untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import numbers
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..exceptions import FineTuneWarning
from ..model.modeling import MoiraiMoEModel
from .checks import check_flag, check_seed
from .data import (
    TrainingBatch,
    TrainingSeries,
    WindowSpec,
    draw_window,
    make_batch,
)
from .objective import next_patch_nll, scored_labels
from .strategies import (
    STRATEGIES,
    add_lora,
    configure_trainable,
    freeze_centroids,
    merge_lora,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "HISTORY_COLUMNS",
    "MAX_VALIDATION_FRACTION",
    "FineTuneResult",
    "TrainingConfig",
    "admissible_windows",
    "fine_tune",
    "planned_steps",
    "validation_nll",
]

#: Peak learning rate of each strategy when ``learning_rate`` is None, chosen
#: by ``benchmarks/finetune_defaults.py`` (results in
#: ``benchmarks/results/finetune_defaults.md``).
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "full": 1e-5,
    "head": 1e-4,
    "freeze-experts": 3e-5,
    "lora": 1e-4,
}

#: largest ``validation_fraction``: the validation part never outweighs training
MAX_VALIDATION_FRACTION = 0.5
_SCHEDULES = ("cosine", "constant")
#: keys of each :attr:`FineTuneResult.history` entry, in order
HISTORY_COLUMNS = ("epoch", "step", "train_nll", "val_nll", "learning_rate", "seconds")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Settings of a fine-tuning run.

    Parameters
    ----------
    strategy : {"full", "head", "freeze-experts", "lora"}
        Which weights train (see :mod:`moirai_moe_sk.training.strategies`).
    context_length : int
        Context steps of a training window.
    prediction_length : int
        Steps after the context in a training window; also the smallest
        validation tail.
    learning_rate : float or None
        Peak learning rate, in (0, 1]; None takes the strategy's default from
        :data:`DEFAULT_LEARNING_RATES` (the stored value is the resolved one).
    max_epochs : int or None
        Epochs at most, an epoch being as many windows as the training parts
        have admissible windows; None sets no such cap.
    max_steps : int or None
        Optimiser steps; None plans them from the data (:func:`planned_steps`).
    min_steps, max_auto_steps : int
        Floor and cap of the planned steps when ``max_steps`` is None.
    eval_every : int or None
        Steps between validations; None validates ten times a run.
    batch_size : int
        Windows per optimiser step.
    micro_batch_size : int or None
        Windows per forward/backward pass (gradient accumulation); bounds
        activation memory. ``None`` means ``batch_size``.
    validation_fraction : float
        Fraction of each series (at least ``prediction_length`` steps, rounded
        up to whole patches) held out at its end for validation, in [0, 0.5]
        (``MAX_VALIDATION_FRACTION``); 0 disables validation and early
        stopping. A series whose training part would not keep one training
        window trains whole, without a validation window.
    patience : int
        Validations without improvement before stopping.
    weight_decay : float
        AdamW decay, applied to weight matrices only (not to biases, norms).
    betas : tuple of float
        AdamW betas.
    eps : float
        AdamW epsilon.
    warmup_steps : int
        Linear warm-up steps.
    schedule : {"cosine", "constant"}
        Learning rate after warm-up: cosine decay to 0 at ``max_steps`` (or the
        planned number of steps), or constant.
    grad_clip : float or None
        Clip the gradient norm to this value.
    mask_ratio : tuple of float
        Range of the per-window fraction of trailing tokens excluded from the
        scaler statistics (the paper's mask ratio ``r``).
    lora_rank : int
        Adapter rank for ``strategy="lora"``.
    lora_alpha : float or None
        Adapter scale numerator (``2 * lora_rank`` when None).
    merge_lora : bool
        Fold the adapters into plain weights at the end (an ordinary model
        that saves in the official layout). False returns the model with its
        adapters attached (see :func:`~moirai_moe_sk.training.merge_lora`).
    train_centroids : bool
        Also train the gate centroids (they stay fixed by default).
    gradient_checkpointing : bool
        Recompute layer activations in the backward pass to save memory.
    seed : int
        Seed of window sampling, adapter initialisation and dropout, in
        ``[0, 2**63 - 1]`` (:func:`~moirai_moe_sk.training.check_seed`).
    progress : bool or None
        Show a tqdm progress bar; ``None`` shows it on an interactive terminal
        only.

    Examples
    --------
    >>> from moirai_moe_sk.training import TrainingConfig
    >>> config = TrainingConfig(strategy="lora", context_length=256,
    ...                         prediction_length=32, lora_rank=4)
    >>> config.window_length
    288

    Without a learning rate, the strategy's default applies:

    >>> TrainingConfig(strategy="lora").learning_rate
    0.0001

    Every field is checked (flags must be ``True`` or ``False``), and a bad
    value is named:

    >>> TrainingConfig(learning_rate=2.0)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a number in (0, 1], got 2.0
    >>> TrainingConfig(mask_ratio=0.3)
    Traceback (most recent call last):
    ...
    ValueError: mask_ratio must be a (low, high) pair with 0 <= low <= high < 1, got 0.3
    """

    strategy: str = "full"
    context_length: int = 512
    prediction_length: int = 64
    learning_rate: float | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    min_steps: int = 200
    max_auto_steps: int = 1000
    eval_every: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None
    validation_fraction: float = 0.1
    patience: int = 3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    mask_ratio: tuple[float, float] = (0.15, 0.5)
    lora_rank: int = 8
    lora_alpha: float | None = None
    merge_lora: bool = True
    train_centroids: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        """Validate every field, naming the bad one."""
        if self.strategy not in STRATEGIES:
            msg = f"unknown fine-tuning strategy {self.strategy!r}; choose from {STRATEGIES}"
            raise ValueError(msg)
        for name in (
            "context_length",
            "prediction_length",
            "batch_size",
            "min_steps",
            "max_auto_steps",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("max_epochs", "max_steps", "micro_batch_size", "eval_every"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.max_auto_steps < self.min_steps:
            msg = (
                f"max_auto_steps ({self.max_auto_steps}) is below min_steps "
                f"({self.min_steps})"
            )
            raise ValueError(msg)
        _positive_int("patience", self.patience)
        _positive_int("lora_rank", self.lora_rank)
        if not isinstance(self.warmup_steps, numbers.Integral) or self.warmup_steps < 0:
            msg = f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}"
            raise ValueError(msg)
        if self.learning_rate is None:
            object.__setattr__(
                self, "learning_rate", DEFAULT_LEARNING_RATES[self.strategy]
            )
        lr = self.learning_rate
        if not _real(lr) or not 0 < lr <= 1:
            msg = f"learning_rate must be a number in (0, 1], got {lr!r}"
            raise ValueError(msg)
        vf = self.validation_fraction
        if not _real(vf) or not 0 <= vf <= MAX_VALIDATION_FRACTION:
            msg = (
                f"validation_fraction must be a number in [0, "
                f"{MAX_VALIDATION_FRACTION}] (at most half of each series is held "
                f"out, so that training keeps the larger part), got {vf!r}"
            )
            raise ValueError(msg)
        if not _real(self.weight_decay) or self.weight_decay < 0:
            msg = (
                f"weight_decay must be a non-negative number, got {self.weight_decay!r}"
            )
            raise ValueError(msg)
        betas = self.betas
        if not (
            isinstance(betas, tuple | list)
            and len(betas) == 2
            and all(_real(beta) and 0 <= beta < 1 for beta in betas)
        ):
            msg = f"betas must be a pair of numbers in [0, 1), got {betas!r}"
            raise ValueError(msg)
        if not _real(self.eps) or self.eps <= 0:
            msg = f"eps must be a positive number, got {self.eps!r}"
            raise ValueError(msg)
        if self.lora_alpha is not None and (
            not _real(self.lora_alpha) or self.lora_alpha <= 0
        ):
            msg = (
                f"lora_alpha must be a positive number or None, got {self.lora_alpha!r}"
            )
            raise ValueError(msg)
        if self.schedule not in _SCHEDULES:
            msg = f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}"
            raise ValueError(msg)
        if self.grad_clip is not None and (
            not _real(self.grad_clip) or self.grad_clip <= 0
        ):
            msg = f"grad_clip must be a positive number or None, got {self.grad_clip!r}"
            raise ValueError(msg)
        ratio = self.mask_ratio
        if not (
            isinstance(ratio, tuple | list)
            and len(ratio) == 2
            and all(_real(r) for r in ratio)
            and 0 <= ratio[0] <= ratio[1] < 1
        ):
            msg = (
                "mask_ratio must be a (low, high) pair with 0 <= low <= high < 1, "
                f"got {ratio!r}"
            )
            raise ValueError(msg)
        object.__setattr__(self, "mask_ratio", tuple(ratio))
        object.__setattr__(self, "seed", check_seed(self.seed, "seed"))
        for name in ("merge_lora", "train_centroids", "gradient_checkpointing"):
            object.__setattr__(self, name, check_flag(getattr(self, name), name))
        object.__setattr__(
            self, "progress", check_flag(self.progress, "progress", allow_none=True)
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all settings.

        Examples
        --------
        >>> from moirai_moe_sk.training import TrainingConfig
        >>> TrainingConfig.field_names()[:3]
        ('strategy', 'context_length', 'prediction_length')
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def peak_learning_rate(self) -> float:
        """The peak learning rate: ``learning_rate``, or the strategy's default.

        Examples
        --------
        >>> from moirai_moe_sk.training import TrainingConfig
        >>> TrainingConfig(strategy="full").peak_learning_rate
        1e-05
        """
        return float(
            DEFAULT_LEARNING_RATES[self.strategy]
            if self.learning_rate is None
            else self.learning_rate
        )

    @property
    def window_length(self) -> int:
        """Steps of a training window."""
        return self.context_length + self.prediction_length


def _real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        msg = f"{name} must be a positive integer, got {value!r}"
        raise ValueError(msg)


@dataclasses.dataclass
class FineTuneResult:
    """Outcome of :func:`fine_tune`.

    Attributes
    ----------
    model : MoiraiMoEModel
        The fine-tuned copy (adapters merged unless ``merge_lora=False``, eval
        mode, no gradients).
    history : list of dict
        One entry per validation (step 0: the starting weights) with ``epoch``
        (epochs of windows trained so far, a float), ``step``, ``train_nll``
        (mean since the previous entry), ``val_nll``, ``learning_rate`` and
        ``seconds``.
    best_step : int
        Step whose weights were kept (0: the starting weights).
    initial_val_nll, best_val_nll : float or None
        Validation NLL of the starting and of the returned weights (None
        without validation).
    trained_parameters : int
        Number of trained scalars.

    Examples
    --------
    Fine-tuning only the head of a random tiny model for two steps:

    >>> import numpy as np
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import TrainingConfig, TrainingSeries, fine_tune
    >>> y = np.sin(np.arange(128) * 2 * np.pi / 12)[:, None]
    >>> data = [TrainingSeries(y, np.ones_like(y, dtype=bool))]
    >>> model = MoiraiMoEModel(
    ...     MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    ... )
    >>> result = fine_tune(model, data, TrainingConfig(
    ...     strategy="head", context_length=64, prediction_length=16,
    ...     max_steps=2, validation_fraction=0.0, progress=False))
    >>> [entry["step"] for entry in result.history]
    [0, 1, 2]
    >>> result.best_step  # no validation: the last step
    2
    >>> result.trained_parameters < sum(p.numel() for p in model.parameters())
    True
    """

    model: MoiraiMoEModel
    history: list[dict[str, Any]]
    best_step: int
    initial_val_nll: float | None
    best_val_nll: float | None
    trained_parameters: int


# ------------------------------------------------------------------ split
def _split(
    series: Sequence[TrainingSeries], config: TrainingConfig, patch: int
) -> tuple[list[int], list[WindowSpec]]:
    """Training lengths of each series and their validation windows.

    A series gives a validation window when what remains for training still
    holds one training window (two patches); otherwise it trains whole.
    """
    lengths, val_windows = [], []
    for index, s in enumerate(series):
        n = len(s)
        if config.validation_fraction > 0:
            tail = max(config.prediction_length, config.validation_fraction * n)
            tail = patch * math.ceil(tail / patch)
            if n - tail > patch:
                length = min(config.context_length + tail, n)
                val_windows.append(
                    WindowSpec(
                        index,
                        n,
                        length,
                        prediction_tokens=tail // patch,
                        score_tokens=tail // patch,
                    )
                )
                n -= tail
        lengths.append(n)
    return lengths, val_windows


def _check_series(series: Sequence[TrainingSeries], patch: int) -> None:
    if not series:
        msg = "no series to fine-tune on"
        raise ValueError(msg)
    for index, s in enumerate(series):
        if not s.observed.any(axis=0).all():
            msg = f"series {index} has a target variate without any observed value"
            raise ValueError(msg)
    usable = [len(s) > patch for s in series]
    if not any(usable):
        longest = max(len(s) for s in series)
        msg = (
            f"every series is too short for one training window: fine-tuning "
            f"needs more than {patch} steps (one patch to read and the next to "
            f"predict), the longest has {longest}"
        )
        raise ValueError(msg)


def admissible_windows(length: int, patch_size: int) -> int:
    """Return how many distinct training windows a ``length``-step part has.

    One per end point that leaves an input patch and a label patch:
    ``length - patch_size`` (none for a part of at most one patch).

    Examples
    --------
    >>> from moirai_moe_sk.training import admissible_windows
    >>> admissible_windows(116, 16), admissible_windows(16, 16)
    (100, 0)
    """
    return max(int(length) - int(patch_size), 0)


def planned_steps(config: TrainingConfig, windows: int) -> int:
    """Return the optimiser steps of a run over ``windows`` admissible windows.

    ``max_steps`` if set; otherwise one epoch (``ceil(windows / batch_size)``
    steps) clipped to ``[min_steps, max_auto_steps]``. ``max_epochs`` caps
    either.

    Examples
    --------
    One series of 116 training steps gives 100 windows: 4 steps of 32 make an
    epoch, so the floor of 200 steps applies; a large panel hits the cap:

    >>> from moirai_moe_sk.training import TrainingConfig, planned_steps
    >>> planned_steps(TrainingConfig(), 100), planned_steps(TrainingConfig(), 10**6)
    (200, 1000)
    >>> planned_steps(TrainingConfig(max_epochs=5), 100)
    20
    """
    per_epoch = max(1, math.ceil(windows / config.batch_size))
    if config.max_steps is not None:
        steps = config.max_steps
    else:
        steps = min(max(per_epoch, config.min_steps), config.max_auto_steps)
    if config.max_epochs is not None:
        steps = min(steps, per_epoch * config.max_epochs)
    return steps


class _WindowSampler:
    """Draws each step's windows uniformly among all admissible windows.

    A step's windows share one layout (variates and covariates): the layout is
    drawn in proportion to its windows, then the windows within it.
    """

    def __init__(
        self,
        series: Sequence[TrainingSeries],
        lengths: Sequence[int],
        config: TrainingConfig,
        patch: int,
        rng: np.random.Generator,
    ) -> None:
        self.lengths = list(lengths)
        self.config, self.patch, self.rng = config, patch, rng
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (s, n) in enumerate(zip(series, lengths, strict=True)):
            if admissible_windows(n, patch):
                groups.setdefault(_group_key(s), []).append(index)
        self.groups = [np.asarray(members) for members in groups.values()]
        self.weights = [
            np.asarray([admissible_windows(lengths[i], patch) for i in g], float)
            for g in self.groups
        ]
        totals = np.asarray([w.sum() for w in self.weights])
        self.total = int(totals.sum())
        self.group_p = totals / totals.sum()

    def draw(self) -> list[WindowSpec]:
        rng, config = self.rng, self.config
        g = (
            int(rng.choice(len(self.groups), p=self.group_p))
            if len(self.groups) > 1
            else 0
        )
        weights = self.weights[g]
        members = self.groups[g][
            rng.choice(len(weights), size=config.batch_size, p=weights / weights.sum())
        ]
        return [
            draw_window(
                rng,
                int(index),
                self.lengths[index],
                config.window_length,
                self.patch,
                config.mask_ratio,
            )
            for index in members
        ]


# -------------------------------------------------------------- batching
def _group_key(s: TrainingSeries) -> tuple[int, int]:
    return (s.target.shape[1], s.num_covariates)


def _batches(
    series: Sequence[TrainingSeries], windows: Sequence[WindowSpec], size: int
) -> Iterator[list[WindowSpec]]:
    """Consecutive windows in groups of ``size`` sharing variates and covariates."""
    groups: dict[tuple[int, int], list[WindowSpec]] = {}
    for w in windows:
        group = groups.setdefault(_group_key(series[w.series]), [])
        group.append(w)
        if len(group) == size:
            yield group
            groups[_group_key(series[w.series])] = []
    for group in groups.values():
        if group:
            yield group


def _optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # matrices (and stacked expert matrices, adapters) decay; biases,
        # norm weights and centroids do not
        if param.dim() >= 2 and name != "encoder.centroid":
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=config.peak_learning_rate,
        betas=config.betas,
        eps=config.eps,
    )


def _lr_factor(step: int, total: int, config: TrainingConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    if config.schedule == "constant":
        return 1.0
    span = max(total - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _loss(
    model: MoiraiMoEModel,
    series: Sequence[TrainingSeries],
    windows: Sequence[WindowSpec],
    micro: int,
    device: torch.device,
    backward: bool,
) -> tuple[float, int]:
    """Sum of group NLLs and group count over ``windows`` (in micro-batches).

    With ``backward``, gradients of ``total / groups`` are accumulated, so
    micro-batching gives the loss of the whole batch.
    """
    patch = model.config.patch_size
    total, groups = 0.0, 0
    batches: list[TrainingBatch] = [
        make_batch(series, windows[i : i + micro], patch).to(device)
        for i in range(0, len(windows), micro)
    ]
    # group counts are known before the forward pass
    denominator = sum(_group_count(b) for b in batches) if backward else 0
    for b in batches:
        distr = model(**b.inputs)
        part, count = next_patch_nll(distr, b)
        if backward and denominator:
            (part / denominator).backward()
        total += float(part.detach())
        groups += int(count)
    return total, groups


def _group_count(batch: TrainingBatch) -> int:
    """Count the (window, variate) groups with a scored patch (no forward pass)."""
    if batch.tokens < 2:
        return 0
    return int(scored_labels(batch).any(dim=(2, 3)).sum())


@torch.no_grad()
def validation_nll(
    model: MoiraiMoEModel,
    series: Sequence[TrainingSeries],
    windows: Sequence[WindowSpec],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> float | None:
    """Mean next-patch NLL of the validation windows (None without any).

    Parameters
    ----------
    model : MoiraiMoEModel
        The model to score (left in its training or eval mode afterwards).
    series : sequence of TrainingSeries
        The series the windows are cut from.
    windows : sequence of WindowSpec
        Validation windows; the patches their ``score_tokens`` name are scored.
    batch_size : int
        Windows per forward pass.
    device : torch.device or str
        Where to compute.

    Returns
    -------
    float or None
        The mean over (window, variate) groups of the mean NLL of their scored
        values; None without windows.

    Examples
    --------
    Score the last patch of a 64-step series, seen after its first three:

    >>> import numpy as np
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import TrainingSeries, validation_nll
    >>> from moirai_moe_sk.training.data import WindowSpec
    >>> y = np.sin(np.arange(64.0) / 4)[:, None]
    >>> series = [TrainingSeries(y, np.ones_like(y, dtype=bool))]
    >>> window = WindowSpec(0, end=64, length=64, prediction_tokens=1, score_tokens=1)
    >>> model = MoiraiMoEModel(
    ...     MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    ... )
    >>> isinstance(validation_nll(model, series, [window]), float)
    True
    >>> validation_nll(model, series, []) is None
    True
    """
    if not windows:
        return None
    was_training = model.training
    model.eval()
    total, groups = 0.0, 0
    try:
        # adapted weights (LoRA) are computed once for the pass, not per forward
        with parametrize.cached():
            for group in _batches(series, windows, batch_size):
                part, count = _loss(
                    model, series, group, batch_size, torch.device(device), False
                )
                total += part
                groups += count
    finally:
        model.train(was_training)
    return total / groups if groups else None


def _progress_bar(total: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled
    if disable is None and not sys.stderr.isatty():
        disable = True
    return tqdm(total=total, desc="fine-tuning", unit="step", disable=disable)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ train
def fine_tune(
    model: MoiraiMoEModel,
    series: Sequence[TrainingSeries],
    config: TrainingConfig | None = None,
    *,
    device: torch.device | str | None = None,
) -> FineTuneResult:
    """Fine-tune a copy of ``model`` on ``series``.

    Parameters
    ----------
    model : MoiraiMoEModel
        Starting weights; never modified.
    series : sequence of TrainingSeries
        Training data; the end of each long enough series is held out for
        validation (``config.validation_fraction``).
    config : TrainingConfig, optional
        Settings; the defaults otherwise.
    device : torch.device or str, optional
        Where to train; the model's device by default.

    Returns
    -------
    FineTuneResult
        The trained copy with its training history.

    Raises
    ------
    ValueError
        If no series is long enough for one training window, or a target
        variate has no observation.

    Examples
    --------
    >>> import numpy as np
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import TrainingConfig, TrainingSeries, fine_tune
    >>> y = np.sin(np.arange(200) * 2 * np.pi / 12)[:, None]
    >>> data = [TrainingSeries(y, np.ones_like(y, dtype=bool))]
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> cfg = TrainingConfig(context_length=64, prediction_length=16, max_epochs=2,
    ...                      progress=False)
    >>> result = fine_tune(model, data, cfg)
    >>> result.best_val_nll <= result.initial_val_nll
    True
    """
    config = config or TrainingConfig()
    patch = model.config.patch_size
    _check_series(series, patch)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    rng = np.random.default_rng(config.seed)
    lengths, val_windows = _split(series, config, patch)
    if config.validation_fraction > 0 and not val_windows:
        logger.info(
            "no series is long enough to hold out validation_fraction=%g (at "
            "least prediction_length=%d steps) and keep a training window: "
            "training without validation or early stopping",
            config.validation_fraction,
            config.prediction_length,
        )

    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        # seed the CPU generator and the training device only (torch.manual_seed
        # would reseed every CUDA device, outside the fork)
        torch.default_generator.manual_seed(config.seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(config.seed)
        work = copy.deepcopy(model).to(device)
        work.requires_grad_(False)
        work.encoder.gradient_checkpointing = config.gradient_checkpointing
        if config.strategy == "lora":
            generator = torch.Generator().manual_seed(config.seed)
            add_lora(work, config.lora_rank, config.lora_alpha, generator)
        trained = configure_trainable(
            work, config.strategy, train_centroids=config.train_centroids
        )
        n_trained = sum(p.numel() for n, p in work.named_parameters() if n in trained)
        optimizer = _optimizer(work, config)
        sampler = _WindowSampler(series, lengths, config, patch, rng)
        total_steps = planned_steps(config, sampler.total)
        eval_every = config.eval_every or max(1, math.ceil(total_steps / 10))
        micro = config.micro_batch_size or config.batch_size

        def evaluate() -> float | None:
            return validation_nll(work, series, val_windows, micro, device)

        start = time.perf_counter()
        initial = evaluate()
        best, best_step = initial, 0
        best_state = _state_copy(work)
        history: list[dict[str, Any]] = []

        def record(step: int, **values: Any) -> None:
            epochs = step * config.batch_size / max(sampler.total, 1)
            history.append(
                {
                    "epoch": round(epochs, 4),
                    "step": step,
                    **values,
                    "seconds": time.perf_counter() - start,
                }
            )

        record(0, train_nll=None, val_nll=initial, learning_rate=0.0)
        logger.info(
            "fine-tuning (%s): %d series, %d admissible windows, %d trained "
            "parameters, %d steps planned (validation every %d), initial "
            "validation NLL %s",
            config.strategy,
            len(series),
            sampler.total,
            n_trained,
            total_steps,
            eval_every,
            "n/a" if initial is None else f"{initial:.4f}",
        )
        step, stale, lr = 0, 0, 0.0
        running, running_groups = 0.0, 0
        bar = _progress_bar(total_steps, config.progress)
        work.train()
        try:
            while step < total_steps:
                lr = config.peak_learning_rate * _lr_factor(step, total_steps, config)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                part, count = _loss(work, series, sampler.draw(), micro, device, True)
                if count:
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(
                            [p for p in work.parameters() if p.requires_grad],
                            config.grad_clip,
                        )
                    optimizer.step()
                    bar.set_postfix(nll=f"{part / count:.3f}", refresh=False)
                running += part
                running_groups += count
                step += 1
                bar.update(1)
                if step % eval_every and step < total_steps:
                    continue
                train_nll = running / running_groups if running_groups else None
                running, running_groups = 0.0, 0
                val = evaluate()
                work.train()
                record(step, train_nll=train_nll, val_nll=val, learning_rate=lr)
                logger.info(
                    "step %d: train NLL %s, validation NLL %s",
                    step,
                    "n/a" if train_nll is None else f"{train_nll:.4f}",
                    "n/a" if val is None else f"{val:.4f}",
                )
                if val is None:  # no validation: keep the latest weights
                    best_step = step
                elif best is None or (math.isfinite(val) and val < best):
                    best, best_step, stale = val, step, 0
                    best_state = _state_copy(work)
                else:
                    stale += 1
                    if stale >= config.patience:
                        logger.info("early stopping at step %d", step)
                        break
        finally:
            bar.close()
        if val_windows and best_step != history[-1]["step"]:
            work.load_state_dict(best_state, strict=False)
            logger.info("restored the weights of step %d", best_step)
        if val_windows and best_step == 0 and step > 0:
            trained_vals = [
                h["val_nll"] for h in history[1:] if h["val_nll"] is not None
            ]
            best_trained = min(
                (v for v in trained_vals if math.isfinite(v)), default=math.nan
            )
            msg = (
                f"fine-tuning did not improve the validation NLL of the starting "
                f"weights ({initial:.4f}; the best after training was "
                f"{best_trained:.4f}, {step} steps at learning rate "
                f"{config.learning_rate:g}), so the starting weights were kept and "
                "forecasts equal zero-shot ones. Try another learning_rate or more "
                "steps (max_steps), or validation_fraction=0 to keep the trained "
                "weights."
            )
            warnings.warn(msg, FineTuneWarning, stacklevel=2)
        if config.merge_lora:
            merge_lora(work)
        freeze_centroids(work)
        work.encoder.gradient_checkpointing = False
        work.eval().requires_grad_(False)
    return FineTuneResult(
        model=work,
        history=history,
        best_step=best_step,
        initial_val_nll=initial,
        best_val_nll=best if val_windows else None,
        trained_parameters=n_trained,
    )
