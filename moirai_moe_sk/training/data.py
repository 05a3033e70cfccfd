"""Training windows: sampling them from series and packing them into tokens.

A training *window* is a stretch of one series (all its target variates and
covariates) of at most ``context_length + prediction_length`` steps, ending
anywhere in the series' training part. It is packed exactly as inference packs
a context (:func:`moirai_moe_sk.model.pack`): patches, left padding, time ids
from the first observed patch, covariates as extra variates. Then the last
``max(1, round(r * tokens))`` target tokens of the window, with ``r`` drawn
per window from the mask-ratio range, become *prediction tokens*: they are
excluded from the scaler statistics, so no statistic of the part being
predicted leaks into the normalisation (the paper's mask ratio).

Validation windows end at each series' end: their prediction tokens are
exactly the held-out tail, whose patches are the only ones scored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..model.packing import pack

__all__ = ["TrainingBatch", "TrainingSeries", "WindowSpec", "make_batch"]


@dataclasses.dataclass(frozen=True)
class TrainingSeries:
    """One (multivariate) series to train on, with finite values and masks.

    Attributes
    ----------
    target : np.ndarray
        (time, variate) float values, finite (missing values already filled).
    observed : np.ndarray
        (time, variate) bool, True where a target value was observed.
    covariates : np.ndarray or None
        (time, feature) finite covariate values aligned with ``target``.
    covariates_observed : np.ndarray or None
        (time, feature) bool observed mask of the covariates.

    Examples
    --------
    A univariate series of 48 steps whose fifth value is missing (filled with
    any finite value and marked unobserved), with one covariate:

    >>> import numpy as np
    >>> from moirai_moe_sk.training import TrainingSeries
    >>> y = np.sin(np.arange(48.0) / 4)[:, None]
    >>> observed = np.ones_like(y, dtype=bool)
    >>> observed[4] = False
    >>> x = np.arange(48.0)[:, None]
    >>> s = TrainingSeries(y, observed, x, np.ones_like(x, dtype=bool))
    >>> len(s), s.num_covariates
    (48, 1)
    """

    target: np.ndarray
    observed: np.ndarray
    covariates: np.ndarray | None = None
    covariates_observed: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.target.ndim != 2 or self.observed.shape != self.target.shape:
            msg = (
                "target and observed must both be (time, variate) arrays of one "
                f"shape, got {self.target.shape} and {self.observed.shape}"
            )
            raise ValueError(msg)
        if not np.isfinite(self.target).all():
            msg = "target must be finite; fill missing values and mark them unobserved"
            raise ValueError(msg)
        if (self.covariates is None) != (self.covariates_observed is None):
            msg = "covariates and covariates_observed go together"
            raise ValueError(msg)
        if self.covariates is not None and (
            self.covariates.shape[0] != len(self)
            or self.covariates_observed is None
            or self.covariates_observed.shape != self.covariates.shape
        ):
            msg = "covariates must be (time, feature) arrays aligned with target"
            raise ValueError(msg)

    def __len__(self) -> int:
        """Return the number of time steps."""
        return int(self.target.shape[0])

    @property
    def num_covariates(self) -> int:
        """Number of covariate columns (0 without covariates)."""
        return 0 if self.covariates is None else int(self.covariates.shape[1])


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """One window: series ``series``, steps ``[end - length, end)``.

    Attributes
    ----------
    series : int
        Index of the series.
    end : int
        End (exclusive) of the window in the series.
    length : int
        Number of steps (fewer at the start of a series).
    prediction_tokens : int
        Number of trailing target tokens excluded from the scaler statistics.
    score_tokens : int or None
        Score only the last ``score_tokens`` target patches (validation); all
        when None.
    """

    series: int
    end: int
    length: int
    prediction_tokens: int
    score_tokens: int | None = None


@dataclasses.dataclass
class TrainingBatch:
    """Packed windows plus what the next-patch objective needs.

    Attributes
    ----------
    inputs : dict of torch.Tensor
        Keyword arguments of :meth:`MoiraiMoEModel.forward`.
    num_variates : int
        Target variates per window (the first tokens of each row).
    tokens : int
        Target tokens per variate.
    score_from : torch.Tensor
        (batch,) int: a label patch (the patch after token ``t``) counts when
        its own token index ``t + 1 >= score_from``.
    """

    inputs: dict[str, torch.Tensor]
    num_variates: int
    tokens: int
    score_from: torch.Tensor

    def to(self, device: torch.device | str) -> TrainingBatch:
        """Move to ``device``."""
        return TrainingBatch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.num_variates,
            self.tokens,
            self.score_from.to(device),
        )

    @property
    def size(self) -> int:
        """Number of windows."""
        return int(self.score_from.shape[0])


def tokens_in(length: int, patch: int) -> int:
    """Return the number of patches of a left-padded ``length``-step window."""
    return -(-length // patch)


def prediction_token_count(tokens: int, ratio: float) -> int:
    """Trailing tokens excluded from the scaler: ``max(1, round(tokens * r))``.

    At least one token is always left for the statistics.
    """
    return int(min(max(1, round(tokens * ratio)), max(tokens - 1, 1)))


def make_batch(
    series: Sequence[TrainingSeries],
    windows: Sequence[WindowSpec],
    patch_size: int,
) -> TrainingBatch:
    """Cut, left-pad and pack ``windows`` of ``series`` into one batch.

    All windows of a batch must have the same number of target variates and
    covariates.
    """
    width = max(w.length for w in windows)
    first = series[windows[0].series]
    dim, n_cov = first.target.shape[1], first.num_covariates
    batch = len(windows)
    target = np.zeros((batch, width, dim), dtype=np.float32)
    observed = np.zeros((batch, width, dim), dtype=bool)
    is_pad = np.ones((batch, width), dtype=bool)
    cov = np.zeros((batch, width, n_cov), dtype=np.float32) if n_cov else None
    cov_obs = np.zeros((batch, width, n_cov), dtype=bool) if n_cov else None
    for row, w in enumerate(windows):
        s = series[w.series]
        if s.target.shape[1] != dim or s.num_covariates != n_cov:
            msg = "all windows of a batch need the same variates and covariates"
            raise ValueError(msg)
        start = w.end - w.length
        target[row, width - w.length :] = s.target[start : w.end]
        observed[row, width - w.length :] = s.observed[start : w.end]
        is_pad[row, width - w.length :] = False
        if cov is not None and cov_obs is not None:
            assert s.covariates is not None
            assert s.covariates_observed is not None
            cov[row, width - w.length :] = s.covariates[start : w.end]
            cov_obs[row, width - w.length :] = s.covariates_observed[start : w.end]
    packed = pack(
        torch.from_numpy(target),
        torch.from_numpy(observed),
        torch.from_numpy(is_pad),
        prediction_length=0,
        patch_size=patch_size,
        feat_dynamic_real=None if cov is None else torch.from_numpy(cov),
        observed_feat_dynamic_real=None
        if cov_obs is None
        else torch.from_numpy(cov_obs),
        drop_padding=True,
    )
    tokens = packed.context_tokens
    # the last k target tokens of each variate are prediction tokens
    position = torch.full((packed.target.shape[1],), -1)  # -1: covariate token
    position[: dim * tokens] = torch.arange(tokens).repeat(dim)
    k = torch.tensor([w.prediction_tokens for w in windows])
    prediction_mask = position[None, :] >= (tokens - k)[:, None]
    packed.prediction_mask = prediction_mask
    score_from = torch.tensor(
        [1 if w.score_tokens is None else tokens - w.score_tokens for w in windows]
    )
    return TrainingBatch(packed.inputs(), dim, tokens, score_from)


def windows_per_epoch(length: int, window_length: int, patch_size: int) -> int:
    """Return how many training windows a series of ``length`` steps gets per epoch.

    ``ceil(length / window_length)``, and none for a series of at most one
    patch (too short for an input patch and a label patch).
    """
    if length <= patch_size:
        return 0
    return max(1, math.ceil(length / window_length))


def sample_windows(
    lengths: Sequence[int],
    window_length: int,
    patch_size: int,
    mask_ratio: tuple[float, float],
    rng: np.random.Generator,
) -> list[WindowSpec]:
    """Draw one epoch of random training windows.

    Series ``i`` (training part of ``lengths[i]`` steps) gets
    :func:`windows_per_epoch` windows, each ending at a uniform position that
    leaves at least two patches (one input, one label). Their order is
    shuffled.
    """
    windows = [
        draw_window(rng, index, n, window_length, patch_size, mask_ratio)
        for index, n in enumerate(lengths)
        for _ in range(windows_per_epoch(n, window_length, patch_size))
    ]
    order = rng.permutation(len(windows))
    return [windows[i] for i in order]


def draw_window(
    rng: np.random.Generator,
    index: int,
    length: int,
    window_length: int,
    patch_size: int,
    mask_ratio: tuple[float, float],
) -> WindowSpec:
    """Draw one training window of series ``index`` (``length`` steps).

    It ends at a uniform position that leaves at least two patches (one input,
    one label), is at most ``window_length`` steps long, and hides a uniform
    fraction in ``mask_ratio`` of its trailing tokens from the scaler.
    """
    end = int(rng.integers(patch_size + 1, length + 1))
    size = min(window_length, end)
    ratio = float(rng.uniform(*mask_ratio))
    k = prediction_token_count(tokens_in(size, patch_size), ratio)
    return WindowSpec(index, end, size, k)
