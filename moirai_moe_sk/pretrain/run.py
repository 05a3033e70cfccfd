"""Pretraining from scratch, end to end, resumable: the paper's recipe at any size.

A run lives in one output folder and goes through stages; each finished stage
leaves its result there, so running the same command again skips it, and an
interrupted stage resumes from its last checkpoint:

1. ``dense``: a dense model of the sparse model's activated size
   (:func:`.recipe.dense_config`) trained from random initialisation;
2. ``centroids``: k-means on each layer's feed-forward inputs of the dense
   model, one centroid per expert (:func:`.recipe.kmeans`);
3. one stage per *variant*, each trained for the same number of steps from the
   dense model: ``centroid`` (the sparse MoE with token-cluster gating, the
   paper's model), ``linear`` (the same MoE with a learned linear router) and
   ``dense`` (the dense model trained on). Every variant thus gets the same
   total budget, ``dense_steps + sparse_steps`` steps of the same batches.

Batches are drawn from a fixed pool: synthetic series
(:mod:`.synthetic`) and, with probability ``real_fraction`` per window, the
real-series corpus (:mod:`.corpus`). The windows of step ``s`` of a stage
depend only on ``(seed, stage, s)``, so a resumed run draws exactly the
batches an uninterrupted one would. The objective, optimiser and schedule are
those of :mod:`moirai_moe_sk.training` (next-patch mixture NLL, AdamW, warm-up
and cosine decay).

Run it as ``python -m moirai_moe_sk.pretrain OUTPUT [options]``; see
:func:`main`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._cli import positive_int
from .._device import resolve_device
from ..checkpoint import load_checkpoint, save_checkpoint
from ..model.config import MoiraiMoEConfig
from ..model.modeling import MoiraiMoEModel
from ..training.checks import check_seed
from ..training.data import (
    TrainingSeries,
    WindowSpec,
    draw_window,
    make_batch,
    tokens_in,
)
from ..training.engine import TrainingConfig, _loss, _lr_factor, _optimizer
from ..training.engine import validation_nll as _validation_nll
from .corpus import load_corpus
from .recipe import dense_config, ffn_inputs, kmeans, sparse_from_dense
from .synthetic import (
    SyntheticConfig,
    multivariate_series,
    to_training_series,
    tsmixup,
)

__all__ = ["VARIANTS", "PretrainConfig", "main", "pretrain"]

logger = logging.getLogger(__name__)

#: the variants a run can train after the shared dense stage
VARIANTS = ("centroid", "linear", "dense")

_STAGE_IDS = {
    "dense": 0,
    "centroid": 1,
    "linear": 2,
    "dense-continued": 3,
    "continued": 4,
}
#: settings that must be positive integers (the shape fields are checked by
#: MoiraiMoEConfig)
_POSITIVE_INTS = (
    "patch_size",
    "context_length",
    "prediction_length",
    "synthetic_series",
    "min_length",
    "max_length",
    "validation_series",
    "dense_steps",
    "sparse_steps",
    "batch_size",
    "kmeans_windows",
    "eval_every",
    "checkpoint_every",
)
_CHECKPOINT = "checkpoint.safetensors"
_RUN_FILE = "run.json"
_CENTROIDS = "centroids.safetensors"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Settings of a pretraining run (model, data, optimisation).

    Parameters
    ----------
    d_model, d_ff, num_layers, num_experts, num_experts_per_token, patch_size
        The sparse model's shape (``d_ff`` per expert); the dense model has
        one expert of width ``d_ff * num_experts_per_token``.
    gate_selection : {"nearest", "farthest"}
        Which centroids the centroid gate routes to (the paper: nearest).
    context_length, prediction_length : int
        Training windows are at most ``context_length + prediction_length``
        steps long.
    synthetic_series : int
        Size of the synthetic pool.
    min_length, max_length : int
        Length range of the synthetic series.
    real_fraction : float
        Probability that a window comes from the real corpus, in [0, 1].
    mixup_fraction : float
        Probability that a window comes from a TSMixup series
        (:func:`.synthetic.tsmixup` of synthetic and real series), in [0, 1]
        with ``real_fraction + mixup_fraction <= 1``.
    multivariate_fraction : float
        Probability that a whole batch is drawn from the synthetic
        multivariate and covariate series (:func:`.synthetic.multivariate_series`;
        a batch holds windows of one shape), in [0, 1].
    kind_weights : dict or None
        Relative frequency of the synthetic kinds
        (:data:`.synthetic.DEFAULT_WEIGHTS` when None).
    init_checkpoint : str or None
        Continue from this sparse checkpoint (folder or bundled name) instead
        of the dense stage and k-means: one ``continued`` stage of
        ``sparse_steps`` steps, the checkpoint's shape fields must match.
    validation_series : int
        Held-out synthetic series (another seed) for the validation NLL.
    dense_steps, sparse_steps : int
        Steps of the dense stage and of each variant stage.
    batch_size : int
        Windows per step.
    learning_rate, warmup_steps, weight_decay : float, int, float
        AdamW with linear warm-up, then cosine decay to 0, per stage.
    mask_ratio : tuple of float
        Range of the fraction of trailing tokens hidden from the scaler.
    kmeans_windows : int
        Windows whose tokens feed k-means.
    eval_every, checkpoint_every : int
        Steps between validations and between checkpoints.
    seed : int
        Seeds the data pool, the batches, the initialisations and k-means.

    Examples
    --------
    The defaults are the bundled ``moirai-moe-sk-tiny``'s recipe; a larger
    model changes the shape fields:

    >>> from moirai_moe_sk.pretrain.run import PretrainConfig
    >>> config = PretrainConfig(d_model=384, d_ff=512, num_layers=6, num_experts=32)
    >>> config.model_config("centroid").num_heads
    6
    >>> PretrainConfig(real_fraction=1.5)
    Traceback (most recent call last):
    ...
    ValueError: real_fraction must be a number in [0, 1], got 1.5
    """

    d_model: int = 128
    d_ff: int = 192
    num_layers: int = 4
    num_experts: int = 16
    num_experts_per_token: int = 2
    patch_size: int = 16
    gate_selection: str = "nearest"
    context_length: int = 256
    prediction_length: int = 64
    synthetic_series: int = 40_000
    min_length: int = 24
    max_length: int = 512
    real_fraction: float = 0.1
    mixup_fraction: float = 0.0
    multivariate_fraction: float = 0.0
    kind_weights: dict[str, float] | None = None
    init_checkpoint: str | None = None
    validation_series: int = 256
    dense_steps: int = 4000
    sparse_steps: int = 8000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.1
    mask_ratio: tuple[float, float] = (0.15, 0.5)
    kmeans_windows: int = 1024
    eval_every: int = 500
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field, naming the bad one and its value."""
        if isinstance(self.mask_ratio, list):  # as read from JSON
            object.__setattr__(self, "mask_ratio", tuple(self.mask_ratio))
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        warmup = self.warmup_steps
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            msg = f"warmup_steps must be a non-negative integer, got {warmup!r}"
            raise ValueError(msg)
        for name in ("real_fraction", "mixup_fraction", "multivariate_fraction"):
            value = getattr(self, name)
            if not _fraction(value):
                msg = f"{name} must be a number in [0, 1], got {value!r}"
                raise ValueError(msg)
        if self.real_fraction + self.mixup_fraction > 1.0:
            msg = (
                "real_fraction + mixup_fraction must be at most 1, got "
                f"{self.real_fraction} + {self.mixup_fraction}"
            )
            raise ValueError(msg)
        check_seed(self.seed, "seed")
        if self.init_checkpoint is not None and not isinstance(
            self.init_checkpoint, str
        ):
            msg = (
                "init_checkpoint must be a checkpoint folder or name (a string) or "
                f"None, got {self.init_checkpoint!r}"
            )
            raise ValueError(msg)
        if self.kind_weights is not None and not isinstance(self.kind_weights, dict):
            msg = (
                "kind_weights must be a mapping of synthetic kinds to weights or "
                f"None, got {self.kind_weights!r}"
            )
            raise ValueError(msg)
        self.model_config("centroid")  # validates the shape fields
        if self.kmeans_windows < self.num_experts:
            # a window may give a single token: k-means needs one per expert
            msg = (
                f"kmeans_windows ({self.kmeans_windows}) must be at least "
                f"num_experts ({self.num_experts}): fewer windows may give fewer "
                "tokens than experts to cluster"
            )
            raise ValueError(msg)
        if self.min_length <= self.patch_size:
            msg = (
                f"min_length ({self.min_length}) must exceed patch_size "
                f"({self.patch_size}): a training window needs an input patch and "
                "the next one to predict"
            )
            raise ValueError(msg)
        self.training_config(1)  # validates the optimisation fields
        self.synthetic_config()

    def synthetic_config(self) -> SyntheticConfig:
        """Return the synthetic generator's settings of this run.

        Examples
        --------
        >>> from moirai_moe_sk.pretrain.run import PretrainConfig
        >>> config = PretrainConfig(kind_weights={"seasonal": 1.0, "ets": 1.0})
        >>> config.synthetic_config().probabilities["seasonal"]
        0.5
        """
        return SyntheticConfig(
            min_length=self.min_length,
            max_length=self.max_length,
            weights=None if self.kind_weights is None else dict(self.kind_weights),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        """Build from a mapping, naming unknown keys.

        Examples
        --------
        >>> from moirai_moe_sk.pretrain.run import PretrainConfig
        >>> PretrainConfig.from_dict({"d_model": 256}).d_model
        256
        >>> PretrainConfig.from_dict({"dmodel": 256})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown pretraining settings ['dmodel']; known: [...]
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"unknown pretraining settings {unknown}; known: {sorted(known)}"
            raise ValueError(msg)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings.

        Examples
        --------
        >>> import json
        >>> from moirai_moe_sk.pretrain.run import PretrainConfig
        >>> config = PretrainConfig(seed=3)
        >>> PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        True
        """
        out = dataclasses.asdict(self)
        out["mask_ratio"] = list(self.mask_ratio)
        return out

    def model_config(self, variant: str) -> MoiraiMoEConfig:
        """Return the model configuration of ``variant`` (or of the dense stage).

        Parameters
        ----------
        variant : {"centroid", "linear", "dense"}
            The sparse model with centroid or linear gating, or the dense model
            of the same activated size.

        Returns
        -------
        MoiraiMoEConfig
            The configuration of that model.

        Examples
        --------
        >>> from moirai_moe_sk.pretrain.run import PretrainConfig
        >>> config = PretrainConfig()
        >>> [config.model_config(v).num_experts for v in ("centroid", "dense")]
        [16, 1]
        >>> config.model_config("linear").gate
        'linear'
        """
        sparse = MoiraiMoEConfig(
            d_model=self.d_model,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            patch_sizes=(self.patch_size,),
            max_seq_len=max(512, tokens_in(self.window_length, self.patch_size)),
            num_experts=self.num_experts,
            num_experts_per_token=self.num_experts_per_token,
            gate="linear" if variant == "linear" else "centroid",
            gate_selection=self.gate_selection,  # type: ignore[arg-type]
            context_length=self.context_length,  # stated in its config.json
        )
        return dense_config(sparse) if variant == "dense" else sparse

    @property
    def window_length(self) -> int:
        """Longest training window, in steps."""
        return self.context_length + self.prediction_length

    def training_config(self, steps: int) -> TrainingConfig:
        """Return the engine settings of a stage of ``steps`` steps.

        Parameters
        ----------
        steps : int
            Optimiser steps of the stage.

        Returns
        -------
        TrainingConfig
            Full training, no validation split, warm-up capped below ``steps``.

        Examples
        --------
        >>> from moirai_moe_sk.pretrain.run import PretrainConfig
        >>> stage = PretrainConfig().training_config(4000)
        >>> stage.strategy, stage.max_steps, stage.warmup_steps
        ('full', 4000, 300)
        """
        return TrainingConfig(
            strategy="full",
            context_length=self.context_length,
            prediction_length=self.prediction_length,
            learning_rate=self.learning_rate,
            max_steps=steps,
            batch_size=self.batch_size,
            validation_fraction=0.0,
            weight_decay=self.weight_decay,
            warmup_steps=min(self.warmup_steps, max(steps - 1, 0)),
            mask_ratio=self.mask_ratio,
            seed=self.seed,
            progress=False,
        )


def _fraction(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0.0 <= value <= 1.0
    )


# ------------------------------------------------------------------- data
@dataclasses.dataclass
class _Pool:
    """The training series and the validation windows of a run.

    Series are ``n_synthetic`` synthetic, then ``n_real`` real, then
    ``n_mixup`` TSMixup, then the multivariate ones; :func:`_step_windows`
    draws from each part.
    """

    series: list[TrainingSeries]
    n_synthetic: int
    validation: list[TrainingSeries]
    validation_windows: list[WindowSpec]
    n_real: int = 0
    n_mixup: int = 0
    #: indices of the multivariate series, grouped by (variates, covariates)
    multivariate: list[list[int]] = dataclasses.field(default_factory=list)


def _multivariate_pool(config: PretrainConfig, seed: int) -> list[TrainingSeries]:
    synthetic = config.synthetic_config()
    n = max(1, config.synthetic_series // 4)
    out = []
    for index in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        low, high = math.log(synthetic.min_length), math.log(synthetic.max_length + 1)
        length = min(int(math.exp(rng.uniform(low, high))), synthetic.max_length)
        length = max(length, synthetic.min_length)
        target, covariates = multivariate_series(length, rng)
        observed = np.ones_like(target, dtype=bool)
        out.append(
            TrainingSeries(
                target,
                observed,
                covariates,
                None if covariates is None else np.ones_like(covariates, dtype=bool),
            )
        )
    return out


def _build_pool(config: PretrainConfig) -> _Pool:
    synthetic = config.synthetic_config()
    start = time.perf_counter()
    raw = synthetic.generate(config.synthetic_series, seed=config.seed)
    train = to_training_series(raw)
    real: list[TrainingSeries] = []
    real_values: list[np.ndarray] = []
    if config.real_fraction > 0 or config.mixup_fraction > 0:
        corpus = load_corpus(min_length=config.patch_size + 1)
        real_values = [s.values for s in corpus]
        real = to_training_series(real_values)
        if config.real_fraction > 0 and not real:
            msg = (
                "real_fraction > 0 but no real series could be loaded (install "
                "sktime, statsmodels or pmdarima, or set real_fraction=0)"
            )
            raise _RunError(msg)
    mixup: list[TrainingSeries] = []
    if config.mixup_fraction > 0:
        rng = np.random.default_rng([config.seed, 11])
        sources = [v for v in raw + real_values if len(v) > config.patch_size]
        mixed = [
            tsmixup(sources, rng, max_length=config.max_length)
            for _ in range(max(1, config.synthetic_series // 4))
        ]
        mixup = to_training_series([m for m in mixed if len(m) > config.patch_size])
    multi: list[TrainingSeries] = []
    groups: list[list[int]] = []
    offset = len(train) + len(real) + len(mixup)
    if config.multivariate_fraction > 0:
        multi = _multivariate_pool(config, config.seed + 2_000_003)
        by_key: dict[tuple[int, int], list[int]] = {}
        for index, s in enumerate(multi):
            key = (s.target.shape[1], s.num_covariates)
            by_key.setdefault(key, []).append(offset + index)
        groups = [by_key[key] for key in sorted(by_key)]
    validation = to_training_series(
        synthetic.generate(config.validation_series, seed=config.seed + 1_000_003)
    )
    rng = np.random.default_rng([config.seed, 99])
    lengths = [len(s) for s in validation]
    windows = _draw(rng, lengths, range(len(lengths)), config)
    logger.info(
        "data: %d synthetic, %d real, %d TSMixup and %d multivariate series, "
        "%d validation windows (%.1f s)",
        len(train),
        len(real),
        len(mixup),
        len(multi),
        len(windows),
        time.perf_counter() - start,
    )
    return _Pool(
        train + real + mixup + multi,
        len(train),
        validation,
        windows,
        n_real=len(real),
        n_mixup=len(mixup),
        multivariate=groups,
    )


def _draw(
    rng: np.random.Generator,
    lengths: Sequence[int],
    indices: Sequence[int] | range,
    config: PretrainConfig,
) -> list[WindowSpec]:
    """One random training window for each series index in ``indices``."""
    return [
        draw_window(
            rng,
            int(index),
            lengths[index],
            config.window_length,
            config.patch_size,
            config.mask_ratio,
        )
        for index in indices
    ]


def _step_windows(
    pool: _Pool, lengths: Sequence[int], config: PretrainConfig, stage: str, step: int
) -> list[WindowSpec]:
    """Draw the windows of ``step`` of ``stage``: a function of the seed only."""
    rng = np.random.default_rng([config.seed, _STAGE_IDS[stage], step])
    batch = config.batch_size
    if config.mixup_fraction == 0 and config.multivariate_fraction == 0:
        # the original recipe's stream, kept so that its runs reproduce
        n_real = len(pool.series) - pool.n_synthetic
        real = rng.random(batch) < (config.real_fraction if n_real else 0.0)
        indices = np.where(
            real,
            pool.n_synthetic + rng.integers(0, max(n_real, 1), batch),
            rng.integers(0, pool.n_synthetic, batch),
        )
        return _draw(rng, lengths, indices.tolist(), config)
    if pool.multivariate and rng.random() < config.multivariate_fraction:
        group = pool.multivariate[int(rng.integers(len(pool.multivariate)))]
        chosen = np.asarray(group)[rng.integers(0, len(group), batch)]
        return _draw(rng, lengths, chosen.tolist(), config)
    u = rng.random(batch)
    real_end = config.real_fraction if pool.n_real else 0.0
    mixup_end = real_end + (config.mixup_fraction if pool.n_mixup else 0.0)
    real_start = pool.n_synthetic
    mixup_start = real_start + pool.n_real
    indices = np.where(
        u < real_end,
        real_start + rng.integers(0, max(pool.n_real, 1), batch),
        np.where(
            u < mixup_end,
            mixup_start + rng.integers(0, max(pool.n_mixup, 1), batch),
            rng.integers(0, pool.n_synthetic, batch),
        ),
    )
    return _draw(rng, lengths, indices.tolist(), config)


# ------------------------------------------------------------ checkpoints
def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
) -> None:
    """Model, optimiser moments and progress in one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).cpu()
    groups = [
        {k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]
    ]
    metadata = {"meta": json.dumps(meta), "param_groups": json.dumps(groups)}
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata))


def _load_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = json.loads(metadata["param_groups"])
    current = optimizer.state_dict()
    for group, saved in zip(current["param_groups"], groups, strict=True):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    return json.loads(metadata["meta"])


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then move it into place."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))


# ----------------------------------------------------------------- stages
def _train_stage(
    model: MoiraiMoEModel,
    pool: _Pool,
    config: PretrainConfig,
    stage: str,
    steps: int,
    folder: Path,
    device: torch.device,
) -> MoiraiMoEModel:
    """Train ``model`` for ``steps`` steps, resuming from ``folder`` if it can."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / "model"
    if (final / "config.json").is_file():
        logger.info("stage %s: already done (%s)", stage, final)
        return load_checkpoint(MoiraiMoEModel, final, map_location=device)
    train_cfg = config.training_config(steps)
    model = model.to(device).train()
    model.requires_grad_(True)
    if model.encoder.centroid is not None:
        model.encoder.centroid.requires_grad_(False)
    optimizer = _optimizer(model, train_cfg)
    lengths = [len(s) for s in pool.series]
    ckpt = folder / _CHECKPOINT
    # the running train NLL since the last validation is part of the state, so
    # that a resumed run logs the history of an uninterrupted one
    step, history, running, count = 0, [], 0.0, 0
    if ckpt.is_file():
        try:
            meta = _load_state(ckpt, model, optimizer)
        except Exception as err:  # safetensors, JSON or shape errors alike
            msg = (
                f"the checkpoint {ckpt} cannot be resumed from ({err}); delete it "
                f"to train the {stage} stage again from its start"
            )
            raise _RunError(msg) from err
        step, history = meta["step"], meta["history"]
        running, count = meta.get("running", 0.0), meta.get("count", 0)
        logger.info("stage %s: resumed at step %d of %d", stage, step, steps)

    def validate() -> float | None:
        return _validation_nll(
            model, pool.validation, pool.validation_windows, config.batch_size, device
        )

    if not history:
        history.append({"step": 0, "train_nll": None, "val_nll": validate()})
    logger.info(
        "stage %s: %s, %d parameters, %d steps",
        stage,
        "resuming" if step else "starting",
        sum(p.numel() for p in model.parameters()),
        steps,
    )
    start, timed = time.perf_counter(), 0
    batch = config.batch_size
    while step < steps:
        lr = config.learning_rate * _lr_factor(step, steps, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        windows = _step_windows(pool, lengths, config, stage, step)
        optimizer.zero_grad(set_to_none=True)
        total, groups = _loss(model, pool.series, windows, batch, device, True)
        if groups:
            nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], 1.0
            )
            optimizer.step()
            running += total / groups
            count += 1
        step += 1
        timed += 1
        if step % config.eval_every == 0 or step == steps:
            train_nll = running / count if count else None
            val = validate()
            model.train()
            history.append({"step": step, "train_nll": train_nll, "val_nll": val})
            rate = (time.perf_counter() - start) / max(timed, 1)
            logger.info(
                "stage %s step %d/%d: train NLL %.4f, validation NLL %.4f "
                "(%.2f s/step, lr %.2e)",
                stage,
                step,
                steps,
                math.nan if train_nll is None else train_nll,
                math.nan if val is None else val,
                rate,
                lr,
            )
            running, count = 0.0, 0
            start, timed = time.perf_counter(), 0
        if step % config.checkpoint_every == 0 and step < steps:
            meta = {
                "step": step,
                "history": history,
                "running": running,
                "count": count,
            }
            _save_state(ckpt, model, optimizer, meta)
    model.eval().requires_grad_(False)
    save_checkpoint(model, final)
    _write_json(folder / "history.json", history)
    ckpt.unlink(missing_ok=True)
    logger.info("stage %s: done, saved %s", stage, final)
    return model


def _centroids(
    dense: MoiraiMoEModel, pool: _Pool, config: PretrainConfig, folder: Path
) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    path = folder / _CENTROIDS
    if path.is_file():
        return load_file(str(path))["centroids"]
    rng = np.random.default_rng([config.seed, 7])
    lengths = [len(s) for s in pool.series]
    indices = rng.integers(0, len(pool.series), config.kmeans_windows).tolist()
    windows = _draw(rng, lengths, indices, config)
    device = next(dense.parameters()).device
    batches = (
        make_batch(pool.series, windows[i : i + config.batch_size], config.patch_size)
        .to(device)
        .inputs
        for i in range(0, len(windows), config.batch_size)
    )
    start = time.perf_counter()
    per_layer = ffn_inputs(dense, batches)
    centroids = torch.stack(
        [
            kmeans(x, config.num_experts, seed=config.seed + layer)
            for layer, x in enumerate(per_layer)
        ]
    )
    logger.info(
        "centroids: k-means of %d tokens per layer into %d clusters (%.1f s)",
        per_layer[0].shape[0],
        config.num_experts,
        time.perf_counter() - start,
    )
    tensors = {"centroids": centroids.contiguous()}
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    return centroids


_SHAPE_FIELDS = (
    "d_model",
    "d_ff",
    "num_layers",
    "num_experts",
    "num_experts_per_token",
    "patch_sizes",
)


def _continued_start(config: PretrainConfig) -> MoiraiMoEModel:
    """Load ``config.init_checkpoint``, checked against the run's shape fields."""
    assert config.init_checkpoint is not None
    model = load_checkpoint(MoiraiMoEModel, config.init_checkpoint)
    expected = config.model_config("centroid")
    differ = [
        f"{name}: checkpoint {getattr(model.config, name)!r}, run "
        f"{getattr(expected, name)!r}"
        for name in _SHAPE_FIELDS
        if getattr(model.config, name) != getattr(expected, name)
    ]
    if differ:
        msg = (
            f"init_checkpoint {config.init_checkpoint!r} does not have the run's "
            f"model shape ({'; '.join(differ)}); set the shape fields to match"
        )
        raise ValueError(msg)
    config_now = model.config.replace(
        max_seq_len=max(model.config.max_seq_len, expected.max_seq_len),
        context_length=config.context_length,
    )
    if config_now != model.config:
        state = model.state_dict()
        model = MoiraiMoEModel(config_now)
        model.load_state_dict(state, strict=True)
    return model


class _RunError(RuntimeError):
    """A run that cannot go on (unreadable files, missing data), stated in full."""


def _check_output(folder: Path) -> None:
    """Refuse an output path that is not a folder or cannot be created/written."""
    if folder.exists() and not folder.is_dir():
        msg = f"the output {folder} exists and is not a folder"
        raise ValueError(msg)
    existing = folder
    while not existing.exists():  # the nearest existing ancestor
        existing = existing.parent
    if not existing.is_dir():
        msg = f"the output folder {folder} cannot be created: {existing} is a file"
        raise ValueError(msg)
    if not os.access(existing, os.W_OK | os.X_OK):
        msg = f"the output folder {folder} is not writable ({existing})"
        raise ValueError(msg)


def _check_same_run(run_file: Path, config: PretrainConfig) -> None:
    """Refuse a folder whose ``run.json`` is unreadable or holds other settings."""
    data: Any = None
    try:
        data = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = str(err)
    else:
        problem = "" if isinstance(data, dict) else "it does not hold a JSON object"
    if problem:
        msg = (
            f"{run_file} is not a readable run settings file ({problem}); use "
            "another folder, or delete this one to start the run over"
        )
        raise ValueError(msg)
    # settings added since a run started keep their defaults
    saved = {**PretrainConfig().to_dict(), **data}
    wanted = config.to_dict()
    if saved != wanted:
        diff = sorted(
            k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k)
        )
        msg = (
            f"{run_file.parent} holds a run with other settings ({diff}); "
            "use another folder or the same settings"
        )
        raise ValueError(msg)


def _new_model(config: MoiraiMoEConfig, seed: int) -> MoiraiMoEModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MoiraiMoEModel(config)


def pretrain(
    output: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    *,
    variants: Sequence[str] = ("centroid",),
    device: str | torch.device = "cpu",
) -> dict[str, Path]:
    """Run (or resume) a pretraining run in ``output``.

    Parameters
    ----------
    output : path
        The run's folder. A folder holding another run's settings is refused.
    config : PretrainConfig, optional
        The settings; the defaults (the bundled ``moirai-moe-sk-tiny``) otherwise.
    variants : sequence of str
        Which of :data:`VARIANTS` to train after the dense stage.
    device : str or torch.device
        Where to train (``"auto"``: CUDA when available); it must exist here.

    Returns
    -------
    dict
        Variant -> folder of its checkpoint (``config.json`` +
        ``model.safetensors``, loadable as ``MoiraiMoEForecaster(checkpoint=...)``).

    Raises
    ------
    ValueError
        For bad variants, a device this machine lacks, an output that is not a
        writable folder, or a folder holding another run (or an unreadable
        ``run.json``). Everything is checked, and the data pool built, before
        the run's settings are written, so a refused command leaves nothing
        that blocks a corrected one.

    Examples
    --------
    A toy run of two steps per stage (the real recipe takes about an hour on
    two CPU cores):

    >>> import tempfile
    >>> from moirai_moe_sk.model import MoiraiMoEModel
    >>> from moirai_moe_sk.pretrain.run import PretrainConfig, pretrain
    >>> config = PretrainConfig(
    ...     d_model=64, d_ff=32, num_layers=1, num_experts=4,
    ...     context_length=32, prediction_length=16, synthetic_series=8,
    ...     max_length=64, real_fraction=0.0, validation_series=2,
    ...     dense_steps=2, sparse_steps=2, batch_size=4, warmup_steps=0,
    ...     kmeans_windows=8, eval_every=2, checkpoint_every=2,
    ... )
    >>> paths = pretrain(tempfile.mkdtemp(), config, variants=["centroid"])
    >>> MoiraiMoEModel.from_pretrained(paths["centroid"]).config.num_experts
    4
    """
    config = config or PretrainConfig()
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        msg = f"variants must be some of {VARIANTS}, got {list(variants)}"
        raise ValueError(msg)
    if config.init_checkpoint is not None and list(variants) != ["centroid"]:
        msg = (
            "a run continued from init_checkpoint trains the checkpoint's own "
            f"model only (variants ['centroid']), got {list(variants)}"
        )
        raise ValueError(msg)
    device = resolve_device(device)
    folder = Path(output)
    _check_output(folder)
    run_file = folder / _RUN_FILE
    new_run = not run_file.is_file()
    if not new_run:
        _check_same_run(run_file, config)
    # everything that can refuse the settings runs before run.json is written,
    # so that a corrected command can start in the same folder
    start = _continued_start(config) if config.init_checkpoint is not None else None
    pool = _build_pool(config)
    if new_run:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(run_file, config.to_dict())
        except OSError as err:
            msg = f"cannot write the run's settings to {run_file}: {err}"
            raise _RunError(msg) from err
    if start is not None:
        _train_stage(
            start,
            pool,
            config,
            "continued",
            config.sparse_steps,
            folder / "continued",
            device,
        )
        return {"centroid": folder / "continued" / "model"}
    dense = _train_stage(
        _new_model(config.model_config("dense"), config.seed),
        pool,
        config,
        "dense",
        config.dense_steps,
        folder / "dense",
        device,
    )
    out = {}
    for variant in variants:
        if variant == "dense":
            start = copy.deepcopy(dense)  # trained on in place
            stage = "dense-continued"
        else:
            centroids = (
                _centroids(dense, pool, config, folder)
                if variant == "centroid"
                else None
            )
            start = sparse_from_dense(
                dense.cpu(),
                config.model_config(variant),
                centroids,
                seed=config.seed + _STAGE_IDS[variant],
            )
            stage = variant
        _train_stage(
            start, pool, config, stage, config.sparse_steps, folder / stage, device
        )
        out[variant] = folder / stage / "model"
    return out


# -------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m moirai_moe_sk.pretrain",
        description=(
            "Pretrain Moirai-MoE from scratch (dense model, k-means centroids, "
            "sparse model) on synthetic and bundled real series. Re-running the "
            "same command resumes."
        ),
    )
    parser.add_argument("output", help="folder of the run (created, or resumed)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["centroid"],
        choices=VARIANTS,
        help="models trained after the dense stage, each with the same budget",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device (cpu, cuda, cuda:N, mps, auto)"
    )
    parser.add_argument(
        "--threads", type=positive_int, help="CPU threads for torch (at least 1)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of PretrainConfig (JSON value), repeatable",
    )
    parser.add_argument(
        "--config", help="JSON file of PretrainConfig settings (before --set)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    ``python -m moirai_moe_sk.pretrain OUTPUT [--variants ...] [--set KEY=VALUE]
    [--config FILE] [--device DEVICE] [--threads N]`` calls it. Each finished
    variant's checkpoint folder is printed; errors go to stderr.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        0 on success; 2 for invalid settings, device or output folder (nothing
        is written then); 1 when the run fails on the way (unreadable
        checkpoint, missing corpus, a disk error). Errors are one line on
        stderr; argparse's own usage errors exit with 2 as well.

    Examples
    --------
    An unknown setting is refused before anything is trained:

    >>> from moirai_moe_sk.pretrain.run import main
    >>> main(["runs/tiny", "--set", "num_expert=8"])
    2
    """
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr
    )

    def fail(err: Exception, status: int) -> int:
        sys.stderr.write(f"{parser.prog}: error: {err}\n")
        return status

    try:
        config = _settings(args.config, args.set)
        device = resolve_device(args.device)
    except (ValueError, TypeError) as err:
        return fail(err, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        paths = pretrain(args.output, config, variants=args.variants, device=device)
    except ValueError as err:  # settings, folder, checkpoint: nothing trained
        return fail(err, 2)
    except (_RunError, OSError) as err:
        return fail(err, 1)
    for variant, path in paths.items():
        sys.stdout.write(f"{variant}: {path}\n")
    return 0


def _settings(config_file: str | None, items: Sequence[str]) -> PretrainConfig:
    """Read settings from a JSON file, then ``KEY=VALUE`` overrides (JSON values)."""
    settings: dict[str, Any] = {}
    if config_file:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            msg = f"--config {config_file}: cannot be read ({err})"
            raise ValueError(msg) from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"--config {config_file}: not valid JSON ({err})"
            raise ValueError(msg) from err
        if not isinstance(data, dict):
            msg = f"--config {config_file}: must hold a JSON object of settings"
            raise ValueError(msg)
        settings.update(data)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            msg = f"--set expects KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return PretrainConfig.from_dict(settings)
