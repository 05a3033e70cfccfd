"""Packed standard scaler: per-series mean and std over observed context values.

Statistics are computed in float64 per (sample_id, variate_id) group of each
batch row, from observed values of tokens that are not prediction tokens, with
Bessel's correction and ``1e-5`` added to the variance; padding tokens
(``sample_id == 0``) get loc 0 and scale 1. This is uni2ts' ``PackedStdScaler``,
computed in linear time with scatter-adds instead of an O(seq^2) id mask.
"""

from __future__ import annotations

import torch

__all__ = ["packed_std_scaler"]


def _safe_div(numer: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return numer / torch.where(denom == 0, torch.ones_like(denom), denom)


def packed_std_scaler(
    target: torch.Tensor,
    observed_mask: torch.Tensor,
    sample_id: torch.Tensor,
    variate_id: torch.Tensor,
    correction: int = 1,
    minimum_scale: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the loc and scale of every token's series.

    Parameters
    ----------
    target : torch.Tensor
        (batch, seq, patch) values.
    observed_mask : torch.Tensor
        (batch, seq, patch) bool, True where a value enters the statistics
        (observed and not a prediction token).
    sample_id, variate_id : torch.Tensor
        (batch, seq) integer ids; tokens sharing both form one series.
    correction : int
        Degrees of freedom subtracted from the count (Bessel).
    minimum_scale : float
        Added to the variance before the square root.

    Returns
    -------
    loc, scale : torch.Tensor
        (batch, seq, 1) float32 statistics, repeated for each token of a series.
    """
    batch_shape = target.shape[:-2]
    seq = target.shape[-2]
    values = target.reshape(-1, seq, target.shape[-1]).double()
    mask = observed_mask.reshape(values.shape).to(torch.float64)
    sid = sample_id.reshape(-1, seq).long()
    vid = variate_id.reshape(-1, seq).long()
    num_variates = int(vid.max()) + 1 if vid.numel() else 1
    group = sid * num_variates + vid  # (batch, seq)
    num_groups = int(group.max()) + 1 if group.numel() else 1

    def per_group(token_sums: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(group.shape[0], num_groups, dtype=torch.float64)
        sums = sums.to(token_sums.device).scatter_add_(1, group, token_sums)
        return sums.gather(1, group)  # back to (batch, seq)

    count = per_group(mask.sum(-1))
    loc = _safe_div(per_group((values * mask).sum(-1)), count)
    sq_dev = ((values - loc[..., None]) ** 2 * mask).sum(-1)
    var = _safe_div(per_group(sq_dev), count - correction)
    scale = torch.sqrt(var + minimum_scale)
    pad = sid == 0
    loc = loc.masked_fill(pad, 0.0)
    scale = scale.masked_fill(pad, 1.0)
    out_shape = (*batch_shape, seq, 1)
    return loc.float().reshape(out_shape), scale.float().reshape(out_shape)
