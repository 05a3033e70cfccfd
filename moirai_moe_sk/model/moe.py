"""Sparse mixture-of-experts feed-forward layer with token-cluster gating.

Each token is routed to ``k`` of ``E`` SwiGLU experts. The released Moirai-MoE
weights use *token-cluster* gating: the gate scores are Euclidean distances
between the (normalised) token and fixed per-layer centroids, the ``k``
**farthest** centroids are selected (uni2ts' ``topk`` keeps its default
``largest=True``) and their raw distances are softmax-normalised into weights.
That convention is reproduced by default; ``"nearest"`` selection (softmax of
negated distances) and a learned linear router are options for new models.

Experts are stored as stacked weights, (expert, d_ff, d_model), and dispatch is
batched: tokens are sorted by expert and each expert runs one GEMM on its
contiguous slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoiraiMoEConfig

__all__ = ["MoiraiMoEFeedForward", "route"]


def route(
    x: torch.Tensor,
    config: MoiraiMoEConfig,
    centroid: torch.Tensor | None = None,
    gate_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose experts for each token.

    Parameters
    ----------
    x : torch.Tensor
        Tokens, (tokens, d_model).
    config : MoiraiMoEConfig
        Supplies ``gate``, ``gate_selection`` and ``num_experts_per_token``.
    centroid : torch.Tensor, optional
        (expert, d_model) centroids for ``gate="centroid"``; cast to ``x``'s dtype.
    gate_weight : torch.Tensor, optional
        (expert, d_model) router weights for ``gate="linear"``.

    Returns
    -------
    weights : torch.Tensor
        (tokens, k) mixing weights, summing to one per token.
    experts : torch.Tensor
        (tokens, k) int64 expert indices.
    """
    k = config.num_experts_per_token
    if config.gate == "centroid":
        if centroid is None:
            msg = "centroid gating needs the layer's centroids"
            raise ValueError(msg)
        # distances in at least float32 (cdist has no bfloat16 CPU kernel, and
        # reduced precision could change which experts are selected)
        xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
        scores = torch.cdist(xs, centroid.to(device=x.device, dtype=xs.dtype))
        if config.gate_selection == "nearest":
            scores = -scores
    else:
        if gate_weight is None:
            msg = "linear gating needs the router weight"
            raise ValueError(msg)
        scores = F.linear(x, gate_weight)
    top, experts = torch.topk(scores, k, dim=-1)
    weights = torch.softmax(top, dim=-1, dtype=torch.float).to(x.dtype)
    return weights, experts


class MoiraiMoEFeedForward(nn.Module):
    """Top-k mixture of SwiGLU experts, ``fc2(silu(fc_gate(x)) * fc1(x))``.

    Parameters
    ----------
    config : MoiraiMoEConfig
        Supplies ``d_model``, ``d_ff``, ``num_experts`` and the gating settings.

    Attributes
    ----------
    fc1, fc_gate : torch.nn.Parameter
        Stacked expert input weights, (expert, d_ff, d_model).
    fc2 : torch.nn.Parameter
        Stacked expert output weights, (expert, d_model, d_ff).
    gate : torch.nn.Linear or None
        Router for ``config.gate == "linear"``.
    """

    def __init__(self, config: MoiraiMoEConfig) -> None:
        super().__init__()
        self.config = config
        e, d, h = config.num_experts, config.d_model, config.d_ff
        self.fc1 = nn.Parameter(torch.empty(e, h, d))
        self.fc_gate = nn.Parameter(torch.empty(e, h, d))
        self.fc2 = nn.Parameter(torch.empty(e, d, h))
        self.gate = nn.Linear(d, e, bias=False) if config.gate == "linear" else None
        self.dropout = nn.Dropout(config.dropout_p)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise each expert like an ``nn.Linear`` (Kaiming uniform)."""
        for weight in (self.fc1, self.fc_gate, self.fc2):
            bound = 1.0 / math.sqrt(weight.shape[-1])
            nn.init.uniform_(weight, -bound, bound)

    def expert(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Apply expert ``index`` to tokens ``x`` (tokens, d_model)."""
        return self._expert(x, self.fc1[index], self.fc_gate[index], self.fc2[index])

    def _expert(
        self,
        x: torch.Tensor,
        fc1: torch.Tensor,
        fc_gate: torch.Tensor,
        fc2: torch.Tensor,
    ) -> torch.Tensor:
        hidden = F.silu(F.linear(x, fc_gate)) * F.linear(x, fc1)
        return F.linear(self.dropout(hidden), fc2)

    def forward(
        self, x: torch.Tensor, centroid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the experts chosen for each token.

        Parameters
        ----------
        x : torch.Tensor
            (..., d_model) tokens (the output of the layer's second norm).
        centroid : torch.Tensor, optional
            (expert, d_model) centroids of this layer, for centroid gating.

        Returns
        -------
        out : torch.Tensor
            (..., d_model) mixture output.
        experts : torch.Tensor
            (..., k) indices of the experts each token was routed to.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        gate_weight = self.gate.weight if self.gate is not None else None
        weights, experts = route(flat, self.config, centroid, gate_weight)
        k = experts.shape[-1]
        # batched dispatch: sort the (token, slot) pairs by expert
        order = torch.argsort(experts.reshape(-1), stable=True)
        token = order // k
        counts = torch.bincount(experts.reshape(-1), minlength=self.config.num_experts)
        routed = flat.index_select(0, token).split(counts.tolist())
        # read the stacked weights once (under a parametrisation such as LoRA
        # each attribute access recomputes the whole stack) and split them
        # with one unbind: indexing per expert would make the backward pass
        # allocate a full-size gradient of the stack for every expert
        per_expert = zip(
            self.fc1.unbind(0), self.fc_gate.unbind(0), self.fc2.unbind(0), strict=True
        )
        grad = torch.is_grad_enabled() and self.fc1.requires_grad
        if not grad and not self.training:
            # inference: the same arithmetic, in place and without the concat
            outputs = flat.new_empty((len(order), shape[-1]))
            start = 0
            for chunk, (fc1, fc_gate, fc2) in zip(routed, per_expert, strict=True):
                if len(chunk):
                    hidden = F.silu(F.linear(chunk, fc_gate), inplace=True)
                    hidden.mul_(F.linear(chunk, fc1))
                    torch.matmul(
                        hidden, fc2.t(), out=outputs[start : start + len(chunk)]
                    )
                    start += len(chunk)
            outputs.mul_(weights.reshape(-1, 1).index_select(0, order))
            out = torch.zeros_like(flat).index_add_(0, token, outputs)
            return out.view(shape), experts.view(*shape[:-1], k)
        outputs = torch.cat(
            [
                self._expert(chunk, *weights_)
                for chunk, weights_ in zip(routed, per_expert, strict=True)
                if len(chunk)
            ]
        )
        outputs = outputs * weights.reshape(-1, 1).index_select(0, order)
        out = torch.zeros_like(flat).index_add_(0, token, outputs)
        return out.view(shape), experts.view(*shape[:-1], k)
