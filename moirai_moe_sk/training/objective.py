"""The training objective: next-patch negative log-likelihood of the mixture.

The distribution the model outputs at token ``t`` of a variate is the forecast
of patch ``t + 1`` of the same variate (that is how autoregressive decoding
uses it). So the label of token ``t`` is the *next* token's patch; a patch
counts where it was observed, both tokens are real (not padding) and the next
token's time id is larger: leading unobserved patches share time id 0 with
the first observed one (:func:`~moirai_moe_sk.model.pack`), and attention,
causal over time ids, would show token ``t`` its own label. The
reduction is uni2ts' ``PackedNLLLoss``: the mean over the scored values of each
(window, variate), then the mean over the (window, variate) groups that have
any.
"""

from __future__ import annotations

import torch

from ..model.distributions import PackedMixture
from .data import TrainingBatch

__all__ = ["next_patch_nll", "scored_labels"]


def next_patch_nll(
    distr: PackedMixture, batch: TrainingBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of per-(window, variate) mean NLLs and the number of such groups.

    Parameters
    ----------
    distr : PackedMixture
        The model's output on ``batch.inputs``, batch shape (batch, seq, patch).
    batch : TrainingBatch
        The packed windows.

    Returns
    -------
    total : torch.Tensor
        Scalar, sum over groups of the group's mean NLL.
    groups : torch.Tensor
        Scalar int, number of groups with at least one scored value; the loss
        is ``total / groups`` (summed over micro-batches first).

    Examples
    --------
    The loss of a random tiny model on one window of 64 steps (four patches),
    whose last patch is a prediction token:

    >>> import numpy as np
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import TrainingSeries, next_patch_nll
    >>> from moirai_moe_sk.training.data import WindowSpec, make_batch
    >>> y = np.sin(np.arange(64.0) / 4)[:, None]
    >>> series = [TrainingSeries(y, np.ones_like(y, dtype=bool))]
    >>> batch = make_batch(series, [WindowSpec(0, 64, 64, 1)], patch_size=16)
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config).eval()
    >>> total, groups = next_patch_nll(model(**batch.inputs), batch)
    >>> int(groups), bool(total.isfinite())
    (1, True)
    """
    inputs = batch.inputs
    d, c, b = batch.num_variates, batch.tokens, batch.size
    if c < 2:
        zero = inputs["target"].sum() * 0.0
        return zero, torch.zeros((), dtype=torch.long)
    patch = inputs["target"].shape[-1]
    target = inputs["target"][:, : d * c].reshape(b, d, c, patch)
    device = target.device
    scored = scored_labels(batch)
    # distributions of tokens 0 .. c-2 of each target variate
    index = (
        torch.arange(d, device=device)[:, None] * c
        + torch.arange(c - 1, device=device)[None, :]
    ).reshape(-1)
    labels = target[:, :, 1:].reshape(b, d * (c - 1), patch)
    log_prob = distr.take(index).log_prob(labels).reshape(b, d, c - 1, patch)
    weights = scored.to(log_prob.dtype)
    nll = -(log_prob * weights).sum(dim=(2, 3))  # (b, d)
    count = weights.sum(dim=(2, 3))
    has = count > 0
    total = (nll[has] / count[has]).sum()
    return total, has.sum()


def scored_labels(batch: TrainingBatch) -> torch.Tensor:
    """Which label values the objective scores.

    Parameters
    ----------
    batch : TrainingBatch
        The packed windows, with at least two tokens per variate.

    Returns
    -------
    torch.Tensor
        (batch, variate, tokens - 1, patch) bool: value ``j`` of the label of
        token ``t`` (patch ``t + 1``) of each target variate counts.
    """
    inputs = batch.inputs
    d, c, b = batch.num_variates, batch.tokens, batch.size
    patch = inputs["target"].shape[-1]
    observed = inputs["observed_mask"][:, : d * c].reshape(b, d, c, patch)
    real = (inputs["sample_id"][:, : d * c] != 0).reshape(b, d, c)
    time = inputs["time_id"][:, : d * c].reshape(b, d, c)
    next_index = torch.arange(1, c, device=observed.device)
    # a label the token can attend to (same time id) would be leaked
    later = time[:, :, 1:] > time[:, :, :-1]
    return (
        observed[:, :, 1:]
        & (real[:, :, 1:] & real[:, :, :-1] & later)[..., None]
        & (next_index[None, :] >= batch.score_from[:, None])[:, None, :, None]
    )
