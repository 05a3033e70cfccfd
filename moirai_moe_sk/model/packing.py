"""Packing (batch, time, variate) arrays into the token layout of Moirai-MoE.

This reproduces uni2ts' ``MoiraiMoEForecast._convert``: every variate is cut
into 16-step patches (the past left-padded, the future right-padded) and the
tokens are laid out variate-major::

    [target past | target future | known-covariate past | known-covariate future
     | past-only-covariate past]

Time ids count patches from the first (jointly) observed patch of the targets;
future tokens continue after the last past id. ``sample_id`` is 1 for real
tokens and 0 for patches that are pure padding (for covariates, the steps added
to reach whole patches count as real: a reference quirk kept for parity).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

__all__ = ["PackedBatch", "pack"]


@dataclasses.dataclass
class PackedBatch:
    """Packed tokens plus the bookkeeping needed to decode them.

    Attributes
    ----------
    target : torch.Tensor
        (batch, seq, patch) float values (zeros on future target tokens).
    observed_mask : torch.Tensor
        (batch, seq, patch) bool.
    sample_id, time_id, variate_id : torch.Tensor
        (batch, seq) int64 ids.
    prediction_mask : torch.Tensor
        (batch, seq) bool, True on future target tokens.
    num_variates : int
        Number of target variates ``D``.
    context_tokens : int
        Past tokens per target variate.
    prediction_tokens : int
        Future tokens per target variate.
    future_step : torch.Tensor
        (seq,) int64: ``-1`` for past tokens, ``k`` for tokens of the ``k``-th
        future patch (targets and known-future covariates). The layout is the
        same for every row.

    Examples
    --------
    Two univariate series of 40 steps, to be forecast 20 steps ahead: three
    past tokens (the first left-padded) and two future ones per series.

    >>> import torch
    >>> from moirai_moe_sk.model.packing import pack
    >>> batch = pack(
    ...     torch.randn(2, 40, 1),
    ...     torch.ones(2, 40, 1, dtype=torch.bool),
    ...     torch.zeros(2, 40, dtype=torch.bool),
    ...     prediction_length=20,
    ... )
    >>> batch.target.shape
    torch.Size([2, 5, 16])
    >>> batch.context_tokens, batch.prediction_tokens, batch.num_variates
    (3, 2, 1)
    >>> batch.prediction_mask[0].tolist()
    [False, False, False, True, True]
    >>> batch.future_step.tolist()
    [-1, -1, -1, 0, 1]
    """

    target: torch.Tensor
    observed_mask: torch.Tensor
    sample_id: torch.Tensor
    time_id: torch.Tensor
    variate_id: torch.Tensor
    prediction_mask: torch.Tensor
    num_variates: int
    context_tokens: int
    prediction_tokens: int
    future_step: torch.Tensor

    @property
    def last_context_index(self) -> torch.Tensor:
        """Index of each target variate's last past token, (variate,)."""
        c, d = self.context_tokens, self.num_variates
        return torch.arange(c - 1, d * c, c, device=self.target.device)

    @property
    def first_future_index(self) -> torch.Tensor:
        """Index of each target variate's first future token, (variate,)."""
        c, d, p = self.context_tokens, self.num_variates, self.prediction_tokens
        return torch.arange(d * c, d * (c + p), p, device=self.target.device)

    def inputs(self) -> dict[str, torch.Tensor]:
        """Return the keyword arguments of :meth:`MoiraiMoEModel.forward`.

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model.packing import pack
        >>> batch = pack(
        ...     torch.randn(1, 32, 1),
        ...     torch.ones(1, 32, 1, dtype=torch.bool),
        ...     torch.zeros(1, 32, dtype=torch.bool),
        ...     prediction_length=16,
        ... )
        >>> batch.inputs()["time_id"].tolist()
        [[0, 1, 2]]

        They feed the model directly:

        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg).eval()
        >>> model(**batch.inputs()).batch_shape
        torch.Size([1, 3, 16])
        """
        return {
            "target": self.target,
            "observed_mask": self.observed_mask,
            "sample_id": self.sample_id,
            "time_id": self.time_id,
            "variate_id": self.variate_id,
            "prediction_mask": self.prediction_mask,
        }


def _patches(x: torch.Tensor, patch: int, left: bool, value: float = 0) -> torch.Tensor:
    """(batch, time, dim) -> (batch, dim * n, patch), padded to whole patches."""
    pad = -x.shape[1] % patch
    x = F.pad(x, (0, 0, pad, 0) if left else (0, 0, 0, pad), value=value)
    batch, time, dim = x.shape
    return (
        x.view(batch, time // patch, patch, dim)
        .permute(0, 3, 1, 2)
        .reshape(batch, -1, patch)
    )


def _patch_any(
    flags: torch.Tensor, patch: int, left: bool, value: bool
) -> torch.Tensor:
    """(batch, time) bool -> (batch, n): does any step of the patch hold a True."""
    pad = -flags.shape[1] % patch
    flags = F.pad(flags, (pad, 0) if left else (0, pad), value=value)
    return flags.view(flags.shape[0], -1, patch).any(-1)


def pack(
    past_target: torch.Tensor,
    past_observed: torch.Tensor,
    past_is_pad: torch.Tensor,
    prediction_length: int,
    patch_size: int = 16,
    feat_dynamic_real: torch.Tensor | None = None,
    observed_feat_dynamic_real: torch.Tensor | None = None,
    past_feat_dynamic_real: torch.Tensor | None = None,
    past_observed_feat_dynamic_real: torch.Tensor | None = None,
    drop_padding: bool = True,
) -> PackedBatch:
    """Pack a batch of series for forecasting ``prediction_length`` steps.

    Parameters
    ----------
    past_target : torch.Tensor
        (batch, context, variate) float past values; unobserved entries may hold
        any finite value.
    past_observed : torch.Tensor
        (batch, context, variate) bool, True where observed.
    past_is_pad : torch.Tensor
        (batch, context) bool, True on left padding (series shorter than the
        context).
    prediction_length : int
        Forecast horizon in steps; 0 packs the context alone (training
        windows).
    patch_size : int
        Patch length (16).
    feat_dynamic_real, observed_feat_dynamic_real : torch.Tensor, optional
        (batch, context + prediction_length, feat) known-future covariates and
        their observed mask.
    past_feat_dynamic_real, past_observed_feat_dynamic_real : torch.Tensor, optional
        (batch, context, past_feat) past-only covariates and their observed mask.
    drop_padding : bool
        Drop leading target patches that are padding in every row. They are
        invisible to all other tokens (sample id 0), so the result is unchanged.

    Returns
    -------
    PackedBatch
        The packed tokens.

    Examples
    --------
    A 24-step context (two patches), a 10-step horizon (one patch) and one
    known-future covariate, which becomes variate 1:

    >>> import torch
    >>> from moirai_moe_sk.model.packing import pack
    >>> batch = pack(
    ...     torch.randn(1, 24, 1),
    ...     torch.ones(1, 24, 1, dtype=torch.bool),
    ...     torch.zeros(1, 24, dtype=torch.bool),
    ...     prediction_length=10,
    ...     feat_dynamic_real=torch.randn(1, 34, 1),
    ...     observed_feat_dynamic_real=torch.ones(1, 34, 1, dtype=torch.bool),
    ... )
    >>> batch.variate_id.tolist(), batch.time_id.tolist()
    ([[0, 0, 0, 1, 1, 1]], [[0, 1, 2, 0, 1, 2]])
    >>> batch.prediction_mask.tolist()
    [[False, False, True, False, False, False]]

    A leading patch that is padding in every row is dropped:

    >>> is_pad = torch.zeros(1, 32, dtype=torch.bool)
    >>> is_pad[:, :20] = True
    >>> pack(
    ...     torch.randn(1, 32, 1), ~is_pad[..., None], is_pad, prediction_length=16
    ... ).context_tokens
    1
    """
    batch, context, dim = past_target.shape
    device = past_target.device
    p = patch_size
    ctx_tokens = -(-context // p)
    pred_tokens = -(-prediction_length // p)

    # time ids: patches up to and including the first observed one get 0
    observed_patch = _patches(past_observed, p, left=True, value=False).view(
        batch, dim, ctx_tokens, p
    )
    observed_patch = observed_patch.any(-1).any(1).long()
    past_time = (observed_patch.cummax(-1).values.cumsum(-1) - 1).clamp_min(0)
    future_time = (
        past_time.max(-1, keepdim=True).values
        + 1
        + torch.arange(pred_tokens, device=device)
    )
    target_real = _patch_any(~past_is_pad, p, left=True, value=False).long()
    # reference quirk: for covariates, the alignment padding counts as real
    cov_real = _patch_any(~past_is_pad, p, left=True, value=True).long()

    drop = 0
    if drop_padding:
        # leading patches where every row is padding; keep at least one token
        leading = (target_real.cumsum(-1) == 0).all(0)
        drop = min(int(leading.sum()), ctx_tokens - 1)

    values: list[torch.Tensor] = []
    observed: list[torch.Tensor] = []
    sample_id: list[torch.Tensor] = []
    time_id: list[torch.Tensor] = []
    variate_id: list[torch.Tensor] = []
    pred_mask: list[torch.Tensor] = []
    future_step: list[torch.Tensor] = []

    def add(
        vals: torch.Tensor,
        obs: torch.Tensor,
        sid: torch.Tensor,
        tid: torch.Tensor,
        first_variate: int,
        predicted: bool,
        future: bool,
    ) -> None:
        if tid.shape[1] == 0:  # no future tokens (prediction_length=0: training)
            return
        n_var = vals.shape[1] // tid.shape[1]
        values.append(vals)
        observed.append(obs)
        sample_id.append(sid.repeat(1, n_var))
        time_id.append(tid.repeat(1, n_var))
        variate_id.append(
            torch.arange(first_variate, first_variate + n_var, device=device)
            .repeat_interleave(tid.shape[1])
            .expand(batch, -1)
        )
        pred_mask.append(
            torch.full(vals.shape[:2], predicted, dtype=torch.bool, device=device)
        )
        steps = torch.arange(tid.shape[1], device=device)
        future_step.append(
            steps.repeat(n_var) if future else torch.full_like(steps.repeat(n_var), -1)
        )

    def keep(x: torch.Tensor) -> torch.Tensor:
        """Drop the first ``drop`` past patches of each target variate."""
        if not drop:
            return x
        return x.view(batch, dim, ctx_tokens, *x.shape[2:])[:, :, drop:].reshape(
            batch, dim * (ctx_tokens - drop), *x.shape[2:]
        )

    future_shape = (batch, prediction_length, dim)
    add(
        keep(_patches(past_target, p, left=True)),
        keep(_patches(past_observed, p, left=True, value=False)),
        target_real[:, drop:],
        past_time[:, drop:],
        0,
        predicted=False,
        future=False,
    )
    add(
        _patches(past_target.new_zeros(future_shape), p, left=False),
        _patches(torch.ones(future_shape, dtype=torch.bool, device=device), p, False),
        torch.ones(batch, pred_tokens, dtype=torch.long, device=device),
        future_time,
        0,
        predicted=True,
        future=True,
    )
    next_variate = dim
    if feat_dynamic_real is not None:
        if observed_feat_dynamic_real is None:
            msg = "observed_feat_dynamic_real is required with feat_dynamic_real"
            raise ValueError(msg)
        n_feat = feat_dynamic_real.shape[-1]
        past_f, fut_f = feat_dynamic_real[:, :context], feat_dynamic_real[:, context:]
        past_o = observed_feat_dynamic_real[:, :context]
        fut_o = observed_feat_dynamic_real[:, context:]
        add(
            _patches(past_f, p, left=True),
            _patches(past_o, p, left=True, value=False),
            cov_real,
            past_time,
            next_variate,
            predicted=False,
            future=False,
        )
        add(
            _patches(fut_f, p, left=False),
            _patches(fut_o, p, left=False, value=False),
            torch.ones(batch, pred_tokens, dtype=torch.long, device=device),
            future_time,
            next_variate,
            predicted=False,
            future=True,
        )
        next_variate += n_feat
    if past_feat_dynamic_real is not None:
        if past_observed_feat_dynamic_real is None:
            msg = "past_observed_feat_dynamic_real is required with past_feat_dynamic_real"
            raise ValueError(msg)
        add(
            _patches(past_feat_dynamic_real, p, left=True),
            _patches(past_observed_feat_dynamic_real, p, left=True, value=False),
            cov_real,
            past_time,
            next_variate,
            predicted=False,
            future=False,
        )

    return PackedBatch(
        target=torch.cat(values, 1),
        observed_mask=torch.cat(observed, 1).bool(),
        sample_id=torch.cat(sample_id, 1),
        time_id=torch.cat(time_id, 1),
        variate_id=torch.cat(variate_id, 1),
        prediction_mask=torch.cat(pred_mask, 1),
        num_variates=dim,
        context_tokens=ctx_tokens - drop,
        prediction_tokens=pred_tokens,
        future_step=torch.cat(future_step),
    )
