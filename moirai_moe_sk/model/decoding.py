"""Fast autoregressive decoding with a key/value cache.

In exact mode (:func:`~moirai_moe_sk.model.forecast_packed` with
``decoding="exact"``) every sampled patch is written into the sequence and
*unmasked*, so it enters the scaler statistics: loc and scale change at every
step and every token must be re-encoded for every sample path, as uni2ts does.

Fast mode keeps the scaler statistics of the context only, as during training
(sampled patches stay prediction tokens for the scaler). Then no token's
representation ever changes once computed, and decoding is incremental:

1. the context is encoded **once per series** (not per sample path), and each
   layer's attention keys and values are kept;
2. each further step encodes only the tokens of the new time step (the target
   patches just sampled and the known-future covariate patches at that time),
   per sample path, attending to the shared context cache and to the path's own
   earlier steps.

The result is exactly the non-cached decoding with context-only statistics (a
test checks it against that loop); it differs from exact mode from the second
patch on, by the shift of loc and scale that the sampled values would cause.
"""

from __future__ import annotations

from typing import cast

import torch

from .distributions import PackedMixture
from .modeling import MoiraiMoEEncoderLayer, MoiraiMoEModel
from .packing import PackedBatch

__all__ = ["decode_cached"]


def _draw(
    distr: PackedMixture,
    index: torch.Tensor,
    sample_shape: tuple[int, ...],
    generator: torch.Generator | None,
    reference_rng: bool,
) -> torch.Tensor:
    """Sample the next patch of the tokens ``index``: (*sample_shape, ..., index, patch)."""
    if reference_rng:  # draw for every token, as uni2ts does, then select
        return distr.sample(sample_shape, generator).index_select(-2, index)
    return distr.take(index).sample(sample_shape, generator)


def _masks(
    query_sid: torch.Tensor,
    query_vid: torch.Tensor,
    key_sid: torch.Tensor,
    key_vid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 1, query, key) ``allowed`` and ``same_variate`` masks.

    Keys are never later in time than the queries here, so only the sample
    ids decide what may be attended.
    """
    allowed = (query_sid[:, :, None] == key_sid[:, None, :]).unsqueeze(1)
    same = (query_vid[:, :, None] == key_vid[:, None, :]).unsqueeze(1)
    return allowed, same


def _step_layer(
    layer: MoiraiMoEEncoderLayer,
    x: torch.Tensor,
    context_kv: tuple[torch.Tensor, torch.Tensor],
    path_kv: tuple[torch.Tensor, torch.Tensor] | None,
    masks: tuple[torch.Tensor, torch.Tensor],
    rope: tuple[torch.Tensor, torch.Tensor],
    centroid: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run one layer on the new tokens ``x`` (sample, batch, new, d_model).

    ``context_kv`` holds (batch, head, context, head_dim) keys and values shared
    by all sample paths; ``path_kv`` the (batch, head, sample, step, head_dim)
    keys and values of each path's earlier decoded tokens (None at the first
    step). ``masks`` cover the context keys, then the path's. Returns the new
    tokens and the path's keys and values including theirs.
    """
    attn = layer.self_attn
    samples, batch, new, d_model = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q, k, v = attn.project(layer.norm1(x).reshape(samples * batch, new, d_model), rope)

    def per_batch(t: torch.Tensor) -> torch.Tensor:  # -> (batch, head, sample, new, hd)
        return t.view(samples, batch, heads, new, head_dim).permute(1, 2, 0, 3, 4)

    q, k, v = per_batch(q), per_batch(k), per_batch(v)
    if path_kv is not None:
        k = torch.cat((path_kv[0], k), dim=3)
        v = torch.cat((path_kv[1], v), dim=3)
    context_k, context_v = context_kv
    scale = head_dim**-0.5
    # the context is shared: fold the sample paths into the query dimension
    flat_q = q.reshape(batch, heads, samples * new, head_dim)
    context_scores = (flat_q @ context_k.transpose(-1, -2)).view(
        batch, heads, samples, new, -1
    )
    path_scores = q @ k.transpose(-1, -2)
    scores = torch.cat((context_scores, path_scores), dim=-1).float() * scale
    scores = scores + attn.var_attn_bias(*masks).float().unsqueeze(2)
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    n_context = context_k.shape[-2]
    out = (
        probs[..., :n_context].reshape(batch, heads, samples * new, n_context)
        @ context_v
    ).view(batch, heads, samples, new, head_dim)
    out = out + probs[..., n_context:] @ v
    out = out.permute(2, 0, 3, 1, 4).reshape(samples, batch, new, d_model)
    x = x + attn.out_proj(out)
    moe_out, _ = layer.ffn(layer.norm2(x), centroid)
    return x + moe_out, (k, v)


@torch.inference_mode()
def decode_cached(
    model: MoiraiMoEModel,
    packed: PackedBatch,
    num_samples: int,
    generator: torch.Generator | None = None,
    reference_rng: bool = True,
) -> torch.Tensor:
    """Decode sample paths with context-only scaling and a key/value cache.

    The first patch is drawn exactly as in exact mode (one pass over every
    token of the ``batch`` sequences, whose past keys and values are the
    cache), so both modes agree on it, draw for draw.

    Parameters
    ----------
    model : MoiraiMoEModel
        The network, in eval mode.
    packed : PackedBatch
        Output of :func:`~moirai_moe_sk.model.pack`.
    num_samples : int
        Sample paths per series.
    generator : torch.Generator, optional
        Random source.
    reference_rng : bool
        Draw the first patch for every token, as uni2ts does (see
        :func:`~moirai_moe_sk.model.forecast`).

    Returns
    -------
    torch.Tensor
        (sample, batch, variate, prediction_tokens * patch) samples in data units.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, pack
    >>> from moirai_moe_sk.model.decoding import decode_cached
    >>> model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1))
    >>> y = torch.sin(torch.arange(48.0)).reshape(1, 48, 1)
    >>> packed = pack(y, y == y, torch.zeros(1, 48, dtype=torch.bool), 40)
    >>> decode_cached(model.eval(), packed, 4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 1, 48])
    """
    d, steps = packed.num_variates, packed.prediction_tokens
    encoder = model.encoder
    dtype = encoder.compute_dtype
    sid, tid, vid = packed.sample_id, packed.time_id, packed.variate_id

    # the first patch as in exact mode; past tokens never attend to later ones,
    # so their keys and values from this pass are the context cache
    full: list[tuple[torch.Tensor, torch.Tensor]] = []
    distr: PackedMixture = model(**packed.inputs(), kv_cache=full)
    loc, scale = distr.loc, distr.scale
    read = packed.last_context_index
    first = _draw(distr, read, (num_samples,), generator, reference_rng)
    patches = [first]  # (sample, batch, d, patch)
    past = torch.nonzero(packed.future_step < 0).squeeze(1)
    cache = [(k.index_select(2, past), v.index_select(2, past)) for k, v in full]
    del full, distr

    context_sid, context_vid = sid[:, past], vid[:, past]
    path_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None for _ in cache]
    path_sid, path_vid = sid[:, :0], vid[:, :0]
    for step in range(steps - 1):
        new = torch.nonzero(packed.future_step == step).squeeze(1)  # targets first
        known = packed.target[:, new[d:]].expand(num_samples, -1, -1, -1)
        values = torch.cat((patches[-1], known), dim=2)
        x = model.embed((values - loc[:, new]) / scale[:, new]).to(dtype)
        new_sid, new_vid = sid[:, new], vid[:, new]
        path_sid = torch.cat((path_sid, new_sid), dim=1)
        path_vid = torch.cat((path_vid, new_vid), dim=1)
        cos, sin = encoder.rotary.tables(tid[:, new].repeat(num_samples, 1))
        rope = (cos.to(dtype), sin.to(dtype))
        # the same masks for every layer (only the learned bias values differ)
        masks = _masks(
            new_sid,
            new_vid,
            torch.cat((context_sid, path_sid), dim=1),
            torch.cat((context_vid, path_vid), dim=1),
        )
        for index, module in enumerate(encoder.layers):
            layer = cast("MoiraiMoEEncoderLayer", module)
            centroid = None if encoder.centroid is None else encoder.centroid[index]
            x, path_kv[index] = _step_layer(
                layer, x, cache[index], path_kv[index], masks, rope, centroid
            )
        reprs = encoder.norm(x[:, :, :d].float())
        distr = model.param_proj(reprs, loc[:, new[:d]], scale[:, new[:d]])
        patches.append(distr.sample((1,), generator).squeeze(0))
    return torch.cat(patches, dim=-1)
