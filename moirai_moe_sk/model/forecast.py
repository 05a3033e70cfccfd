"""Autoregressive sample-path forecasting with a Moirai-MoE model (tensors only).

Exact mode reproduces uni2ts' ``MoiraiMoEForecast.forward``: the first call
predicts the patch after the context and draws ``num_samples`` sample patches;
each further patch is predicted from a sequence in which the previous sample
patches are written in and unmasked, so the scaler statistics include them and
each sample path is a coherent trajectory. Every step re-encodes the sequence
for every sample path, as uni2ts does. With ``reference_rng=False`` only the
tokens up to the step being decoded are encoded: later tokens cannot influence
it (attention is causal in time and the scaler ignores prediction tokens).

Fast mode (``decoding="fast"``) keeps the context's scaler statistics and
decodes incrementally with a key/value cache; see
:mod:`moirai_moe_sk.model.decoding`.
"""

from __future__ import annotations

import torch

from .decoding import _draw, decode_cached
from .modeling import MoiraiMoEModel
from .packing import PackedBatch, pack

__all__ = [
    "DECODING_MODES",
    "SMALL_SCALE",
    "forecast",
    "forecast_packed",
    "rescale_factors",
]

#: ``"exact"`` reproduces uni2ts; ``"fast"`` uses context-only statistics and a cache
DECODING_MODES = ("exact", "fast")

#: series whose context spread is below this are rescaled before the model (see
#: :func:`rescale_factors`): the scaler adds 1e-5 to every variance, which at
#: a spread of 1 changes the scale by 5e-6 but dominates a spread below 3e-3
SMALL_SCALE = 1.0


def rescale_factors(values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Powers of ten that bring each small-scale series' spread into [1, 10).

    The model's scaler computes ``(x - mean) / sqrt(var + 1e-5)`` (uni2ts'
    rule), so it is scale-equivariant only while the variance is far above
    ``1e-5``: a series multiplied by 1e-4 would come back with intervals
    hundreds of times too wide. :func:`forecast` therefore multiplies each
    (series, variate) whose spread is below :data:`SMALL_SCALE` by ``10**k``,
    the power of ten that brings it into [1, 10), and divides the samples back.
    The spread is the standard deviation of the observed values (Bessel's
    correction, as the scaler). A constant series (or a single value), whose
    scale is the floor at any magnitude, is always brought to a level in
    [1, 10) by a power of ten. Varying series at or above the threshold (all of
    uni2ts' own examples) get factor 1 and are untouched, so their forecasts
    stay identical to the reference's.

    Parameters
    ----------
    values : torch.Tensor
        (batch, time, variate) values.
    observed : torch.Tensor
        (batch, time, variate) bool, True where a value counts (observed and
        not padding).

    Returns
    -------
    torch.Tensor
        (batch, 1, variate) float64 factors (1 where no rescaling is needed).

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[[1e-4], [3e-4], [2e-4]], [[10.0], [30.0], [20.0]]])
    >>> rescale_factors(y, torch.ones_like(y, dtype=torch.bool)).flatten().tolist()
    [10000.0, 1.0]
    """
    x = values.double()
    mask = observed.double()
    count = mask.sum(1, keepdim=True)
    mean = (x * mask).sum(1, keepdim=True) / count.clamp(min=1)
    var = (((x - mean) ** 2) * mask).sum(1, keepdim=True) / (count - 1).clamp(min=1)
    varies = (count >= 2) & (var > 0)
    spread = torch.where(varies, var.sqrt(), mean.abs())
    # a constant (or one-value) series is all floor: always bring its level to
    # [1, 10), so that its forecasts scale with it at every magnitude
    small = (spread > 0) & ((spread < SMALL_SCALE) | ~varies)
    power = -torch.floor(
        torch.log10(torch.where(small, spread, torch.ones_like(spread)))
    )
    # (to rounding: 10**k of an exact power of ten may land a hair below 1)
    return torch.where(small, 10.0**power, torch.ones_like(spread))


def _rescaled(
    values: torch.Tensor | None,
    observed: torch.Tensor | None,
    context: int,
    is_pad: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``values`` times their factors (from the observed context) and the factors."""
    if values is None:
        return None, None
    counted = ~is_pad[:, :, None]
    if observed is not None:
        counted = counted & observed[:, :context].bool()
    factor = rescale_factors(values[:, :context], counted)
    if bool((factor == 1).all()):
        return values, None
    return (values.double() * factor).to(values.dtype), factor


def _check_inputs(
    past_target: torch.Tensor,
    past_observed: torch.Tensor,
    past_is_pad: torch.Tensor,
    prediction_length: int,
    num_samples: int,
) -> None:
    if past_target.dim() != 3:
        msg = (
            "past_target must have shape (batch, time, variate), got "
            f"{tuple(past_target.shape)}"
        )
        raise ValueError(msg)
    if past_observed.shape != past_target.shape:
        msg = (
            f"past_observed shape {tuple(past_observed.shape)} differs from "
            f"past_target shape {tuple(past_target.shape)}"
        )
        raise ValueError(msg)
    if past_is_pad.shape != past_target.shape[:2]:
        msg = (
            f"past_is_pad must have shape {tuple(past_target.shape[:2])}, got "
            f"{tuple(past_is_pad.shape)}"
        )
        raise ValueError(msg)
    if not torch.isfinite(past_target).all():
        msg = (
            "past_target holds NaN or infinite values; fill them with a finite "
            "value and mark them False in past_observed"
        )
        raise ValueError(msg)
    for name, value in (
        ("prediction_length", prediction_length),
        ("num_samples", num_samples),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)


@torch.inference_mode()
def forecast_packed(
    model: MoiraiMoEModel,
    packed: PackedBatch,
    prediction_length: int,
    num_samples: int,
    generator: torch.Generator | None = None,
    reference_rng: bool = True,
    decoding: str = "exact",
) -> torch.Tensor:
    """Decode sample paths from an already packed batch.

    Parameters
    ----------
    model : MoiraiMoEModel
        The network, in eval mode.
    packed : PackedBatch
        Output of :func:`~moirai_moe_sk.model.pack`.
    prediction_length : int
        Forecast horizon in steps.
    num_samples : int
        Sample paths per series.
    generator : torch.Generator, optional
        Random source.
    reference_rng : bool
        Draw (the first patch, in fast mode) as uni2ts does (see :func:`forecast`).
    decoding : {"exact", "fast"}
        Decoding algorithm (see :func:`forecast`).

    Returns
    -------
    torch.Tensor
        (batch, num_samples, prediction_length, variate) samples in data units.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk.model import (
    ...     MoiraiMoEConfig, MoiraiMoEModel, forecast_packed, pack)
    >>> model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1))
    >>> y = torch.sin(torch.arange(48.0)).reshape(1, 48, 1)
    >>> packed = pack(y, y == y, torch.zeros(1, 48, dtype=torch.bool), 20)
    >>> forecast_packed(model.eval(), packed, 20, 4, decoding="fast").shape
    torch.Size([1, 4, 20, 1])
    """
    if decoding not in DECODING_MODES:
        msg = f"decoding must be one of {DECODING_MODES}, got {decoding!r}"
        raise ValueError(msg)
    d, c, steps = packed.num_variates, packed.context_tokens, packed.prediction_tokens
    batch, _, patch = packed.target.shape
    if decoding == "fast":
        future = decode_cached(model, packed, num_samples, generator, reference_rng)
        future = future.reshape(num_samples, batch, d, steps * patch)
        return future.permute(1, 0, 3, 2)[:, :, :prediction_length]

    pred_index, assign_index = packed.last_context_index, packed.first_future_index
    future_step = packed.future_step

    def upto(step: int) -> torch.Tensor | None:
        """Tokens that can influence the prediction made at future ``step``.

        With the reference's random stream every token is encoded: uni2ts
        samples all tokens, and the gamma draws of the Student-t components
        consume a number of random values that depends on the parameters.
        """
        if reference_rng:
            return None
        return torch.nonzero(future_step <= step).squeeze(1)

    distr = model(**packed.inputs(), tokens=upto(-1))
    first = _draw(distr, pred_index, (num_samples,), generator, reference_rng)
    if steps == 1:
        future = first  # (sample, batch, variate, patch)
    else:
        target = packed.target.expand(num_samples, -1, -1, -1).clone()
        prediction_mask = packed.prediction_mask.expand(num_samples, -1, -1).clone()
        fixed = {
            "observed_mask": packed.observed_mask.expand(num_samples, -1, -1, -1),
            "sample_id": packed.sample_id.expand(num_samples, -1, -1),
            "time_id": packed.time_id.expand(num_samples, -1, -1),
            "variate_id": packed.variate_id.expand(num_samples, -1, -1),
        }
        target[..., assign_index, :] = first
        prediction_mask[..., assign_index] = False
        for step in range(steps - 1):
            distr = model(
                target=target,
                prediction_mask=prediction_mask,
                **fixed,
                tokens=upto(step),
            )
            pred_index, assign_index = assign_index, assign_index + 1
            nxt = _draw(distr, pred_index, (1,), generator, reference_rng)
            target[..., assign_index, :] = nxt.squeeze(0)
            prediction_mask[..., assign_index] = False
        future = target[:, :, d * c : d * (c + steps)]
    future = future.reshape(num_samples, batch, d, steps * patch)
    return future.permute(1, 0, 3, 2)[:, :, :prediction_length]


def forecast(
    model: MoiraiMoEModel,
    past_target: torch.Tensor,
    past_observed: torch.Tensor | None = None,
    past_is_pad: torch.Tensor | None = None,
    *,
    prediction_length: int,
    num_samples: int = 100,
    feat_dynamic_real: torch.Tensor | None = None,
    observed_feat_dynamic_real: torch.Tensor | None = None,
    past_feat_dynamic_real: torch.Tensor | None = None,
    past_observed_feat_dynamic_real: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    drop_padding: bool = True,
    reference_rng: bool = True,
    decoding: str = "exact",
) -> torch.Tensor:
    """Forecast sample paths for a batch of (multivariate) series.

    Parameters
    ----------
    model : MoiraiMoEModel
        The network (put it in eval mode).
    past_target : torch.Tensor
        (batch, context, variate) finite past values.
    past_observed : torch.Tensor, optional
        (batch, context, variate) bool, True where observed; all True if omitted.
    past_is_pad : torch.Tensor, optional
        (batch, context) bool, True on left padding; all False if omitted.
    prediction_length : int
        Forecast horizon in steps.
    num_samples : int
        Sample paths per series.
    feat_dynamic_real, observed_feat_dynamic_real : torch.Tensor, optional
        (batch, context + prediction_length, feat) known-future covariates.
    past_feat_dynamic_real, past_observed_feat_dynamic_real : torch.Tensor, optional
        (batch, context, past_feat) past-only covariates.
    generator : torch.Generator, optional
        Random source; a generator seeded with ``s`` on the CPU reproduces
        uni2ts' samples under ``torch.manual_seed(s)`` when ``reference_rng``.
    drop_padding : bool
        Drop leading patches that are padding in every series (exact).
    reference_rng : bool
        Draw for every token as uni2ts does (reproducible against it); False
        draws only the tokens needed, which is faster but consumes the random
        stream differently. In fast mode it applies to the first patch.
    decoding : {"exact", "fast"}
        ``"exact"`` (default) reproduces uni2ts: sampled patches join the
        scaler statistics, and every step re-encodes the sequence per sample
        path. ``"fast"`` keeps the context's statistics (as in training) and
        decodes with a key/value cache: the context is encoded once per series
        and each step encodes one new token per sample path and variate. The
        first patch is identical; later patches differ by the statistics shift.

    Returns
    -------
    torch.Tensor
        (batch, num_samples, prediction_length, variate) samples in data units.

    Notes
    -----
    Forecasts are scale-equivariant: a series whose spread is below
    :data:`SMALL_SCALE` is multiplied by a power of ten before the model and its
    samples divided back (see :func:`rescale_factors`); covariates are rescaled
    the same way. Larger series pass unchanged.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, forecast
    >>> model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1))
    >>> y = torch.sin(torch.arange(48.0)).reshape(1, 48, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> forecast(model.eval(), y, prediction_length=20, num_samples=4,
    ...          generator=g).shape
    torch.Size([1, 4, 20, 1])
    """
    if past_observed is None:
        past_observed = torch.ones_like(past_target, dtype=torch.bool)
    if past_is_pad is None:
        past_is_pad = torch.zeros(past_target.shape[:2], dtype=torch.bool)
    past_is_pad = past_is_pad.to(past_target.device)
    _check_inputs(
        past_target, past_observed, past_is_pad, prediction_length, num_samples
    )
    context = past_target.shape[1]
    rescaled, factor = _rescaled(past_target, past_observed, context, past_is_pad)
    past_target = past_target if rescaled is None else rescaled
    feat_dynamic_real, _ = _rescaled(
        feat_dynamic_real, observed_feat_dynamic_real, context, past_is_pad
    )
    past_feat_dynamic_real, _ = _rescaled(
        past_feat_dynamic_real, past_observed_feat_dynamic_real, context, past_is_pad
    )
    packed = pack(
        past_target,
        past_observed.bool(),
        past_is_pad.bool(),
        prediction_length,
        patch_size=model.config.patch_size,
        feat_dynamic_real=feat_dynamic_real,
        observed_feat_dynamic_real=observed_feat_dynamic_real,
        past_feat_dynamic_real=past_feat_dynamic_real,
        past_observed_feat_dynamic_real=past_observed_feat_dynamic_real,
        drop_padding=drop_padding,
    )
    samples = forecast_packed(
        model,
        packed,
        prediction_length,
        num_samples,
        generator,
        reference_rng,
        decoding,
    )
    if factor is None:
        return samples
    return (samples.double() / factor[:, None].to(samples.device)).to(samples.dtype)
