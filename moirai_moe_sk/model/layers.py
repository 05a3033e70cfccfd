"""Transformer building blocks of Moirai-MoE: norms, rotary time embedding, attention.

Dimension names used in shapes: ``batch`` (any flattened leading dims), ``seq``
(packed tokens), ``head``, ``head_dim`` (64), ``d_model``, ``patch`` (16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoiraiMoEConfig

__all__ = [
    "MoiraiMoEAttention",
    "RMSNorm",
    "RotaryTimeEmbedding",
    "apply_rotary",
    "attention_bias",
]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (uni2ts ``RMSNorm``, eps 1e-5).

    Parameters
    ----------
    dim : int
        Size of the last dimension that is normalised.
    eps : float
        Added to the mean square before the reciprocal square root.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., dim) over its last dimension."""
        out = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return out * self.weight


class RotaryTimeEmbedding(nn.Module):
    """Partial, interleaved rotary embedding indexed by ``time_id``.

    Only the first ``rotary_dim`` features of each head are rotated, in adjacent
    pairs ``(x[2i], x[2i+1])`` by angle ``time_id * base**(-2i/rotary_dim)``;
    the rest pass through. The tables grow when a larger ``time_id`` appears.
    The module has no parameters and is shared by all layers.

    Parameters
    ----------
    rotary_dim : int
        Number of rotated features per head (32 for 64-wide heads).
    max_len : int
        Initial table length.
    base : float
        Frequency base.
    """

    def __init__(self, rotary_dim: int, max_len: int = 512, base: float = 10000.0):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.theta: torch.Tensor
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        exponent = torch.arange(0, rotary_dim, 2, dtype=torch.float) / rotary_dim
        self.register_buffer("theta", 1.0 / torch.pow(base, exponent), persistent=False)
        self.register_buffer("cos", torch.empty(0, rotary_dim), persistent=False)
        self.register_buffer("sin", torch.empty(0, rotary_dim), persistent=False)
        self._grow(max_len)

    def _grow(self, length: int) -> None:
        if self.cos.shape[0] >= length:
            return
        position = torch.arange(length, dtype=torch.float, device=self.theta.device)
        angle = (position[:, None] * self.theta[None, :]).repeat_interleave(2, dim=-1)
        self.cos = torch.cos(angle)
        self.sin = torch.sin(angle)

    def tables(self, time_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``cos, sin`` of shape (batch, 1, seq, rotary_dim) for ``time_id``."""
        self._grow(int(time_id.max()) + 1)
        return self.cos[time_id].unsqueeze(-3), self.sin[time_id].unsqueeze(-3)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the leading ``cos.shape[-1]`` features of ``x`` (batch, head, seq, dim).

    Pairs ``(x[2i], x[2i+1])`` become ``(x[2i] cos - x[2i+1] sin,
    x[2i+1] cos + x[2i] sin)``, the interleaved (GPT-J) convention of uni2ts.
    """
    width = cos.shape[-1]
    rot, rest = x[..., :width], x[..., width:]
    even, odd = rot[..., 0::2], rot[..., 1::2]
    swapped = torch.stack((-odd, even), dim=-1).flatten(-2)
    return torch.cat((cos * rot + sin * swapped, rest), dim=-1)


def attention_bias(
    sample_id: torch.Tensor, time_id: torch.Tensor, variate_id: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks shared by all layers for packed, time-causal attention.

    Token ``i`` may attend ``j`` iff both belong to the same sample and
    ``time_id[j] <= time_id[i]``; variates at one time step see each other.

    Parameters
    ----------
    sample_id, time_id, variate_id : torch.Tensor
        Integer ids, shape (batch, seq).

    Returns
    -------
    allowed : torch.Tensor
        Boolean (batch, 1, seq, seq), True where attention is permitted.
    same_variate : torch.Tensor
        Boolean (batch, 1, seq, seq), True where query and key share a variate.
    """
    allowed = (sample_id[..., :, None] == sample_id[..., None, :]) & (
        time_id[..., None, :] <= time_id[..., :, None]
    )
    same_variate = variate_id[..., :, None] == variate_id[..., None, :]
    return allowed.unsqueeze(-3), same_variate.unsqueeze(-3)


class BinaryAttentionBias(nn.Module):
    """Learned per-head bias: ``emb[1]`` for same-variate pairs, ``emb[0]`` otherwise."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(2, num_heads)

    def forward(
        self, allowed: torch.Tensor, same_variate: torch.Tensor
    ) -> torch.Tensor:
        """Return the additive float mask (batch, head, seq, seq), -inf where masked."""
        weight = self.emb.weight[:, :, None, None]  # (2, head, 1, 1)
        bias = torch.where(same_variate, weight[1], weight[0])
        return bias.masked_fill(~allowed, float("-inf"))


class MoiraiMoEAttention(nn.Module):
    """Multi-head self-attention with QK-norm, time RoPE and the binary variate bias.

    Parameters
    ----------
    config : MoiraiMoEConfig
        Supplies ``d_model``, ``num_heads`` and ``attn_dropout_p``.
    """

    def __init__(self, config: MoiraiMoEConfig) -> None:
        super().__init__()
        d, self.num_heads, self.head_dim = (
            config.d_model,
            config.num_heads,
            config.head_dim,
        )
        self.dropout_p = config.attn_dropout_p
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.var_attn_bias = BinaryAttentionBias(self.num_heads)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def project(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compute queries, keys and values, each (batch, head, seq, head_dim).

        Queries and keys are RMS-normalised per head, then rotated by ``rope``.
        """
        cos, sin = rope
        q = apply_rotary(self.q_norm(self._heads(self.q_proj(x))), cos, sin)
        k = apply_rotary(self.k_norm(self._heads(self.k_proj(x))), cos, sin)
        return q, k, self._heads(self.v_proj(x))

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        same_variate: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Attend over (batch, seq, d_model) tokens.

        ``allowed`` and ``same_variate`` come from :func:`attention_bias`, ``rope``
        from :meth:`RotaryTimeEmbedding.tables`. If ``kv_cache`` is a list, the
        layer's keys and values, each (batch, head, seq, head_dim), are appended
        to it (for cached decoding).
        """
        q, k, v = self.project(x, rope)
        if kv_cache is not None:
            kv_cache.append((k, v))
        mask = self.var_attn_bias(allowed, same_variate).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=self.head_dim**-0.5,
        )  # (batch, head, seq, head_dim)
        out = out.transpose(1, 2).flatten(-2)
        return self.out_proj(out)
