"""Which weights a fine-tuning run trains, and low-rank adapters (LoRA).

Strategies:

``"full"``
    Every weight (the gate centroids only with ``train_centroids``).
``"head"``
    The input projection (``in_proj``, ``res_proj``, ``feat_proj``) and the
    mixture head (``param_proj``); the transformer stays fixed.
``"freeze-experts"``
    Everything except the expert weights (and a linear router): attention,
    norms, input projection and head.
``"lora"``
    Low-rank adapters ``W + (alpha / rank) * B @ A`` on the attention
    projections (q, k, v, out) and on every expert's three projections; only
    ``A`` and ``B`` train. :func:`merge_lora` folds them back into plain
    weights, after which the model is an ordinary :class:`MoiraiMoEModel`
    that saves in the official layout.

Adapters are :mod:`torch.nn.utils.parametrize` parametrisations, so one
mechanism serves the (out, in) attention weights and the stacked
(expert, out, in) expert weights alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..model.modeling import MoiraiMoEEncoderLayer, MoiraiMoEModel

__all__ = [
    "STRATEGIES",
    "LoRA",
    "add_lora",
    "configure_trainable",
    "lora_targets",
    "merge_lora",
]

#: the fine-tuning strategies, the values of ``TrainingConfig.strategy``
STRATEGIES = ("full", "head", "freeze-experts", "lora")

_HEAD_PREFIXES = ("in_proj.", "res_proj.", "feat_proj.", "param_proj.")
_EXPERT_LEAVES = ("fc1", "fc_gate", "fc2")


class LoRA(nn.Module):
    """Additive low-rank update of a (..., out, in) weight.

    ``A`` starts random (Kaiming uniform, like ``nn.Linear``) and ``B`` at
    zero, so an adapted model starts exactly at its base weights.

    Parameters
    ----------
    shape : torch.Size
        Shape of the adapted weight, (..., out, in).
    rank : int
        Rank of the update.
    alpha : float
        The update is scaled by ``alpha / rank``.
    generator : torch.Generator, optional
        Source of the initial ``A``.
    """

    def __init__(
        self,
        shape: torch.Size,
        rank: int,
        alpha: float,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        *lead, out_features, in_features = shape
        bound = 1.0 / math.sqrt(in_features)
        a = torch.rand(*lead, rank, in_features, generator=generator, dtype=dtype)
        self.A = nn.Parameter((a * 2 - 1).mul_(bound).to(device))
        self.B = nn.Parameter(
            torch.zeros(*lead, out_features, rank, dtype=dtype, device=device)
        )
        self.scaling = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return the adapted weight."""
        return weight + (self.B @ self.A) * self.scaling


def lora_targets(model: MoiraiMoEModel) -> list[tuple[nn.Module, str]]:
    """Return the (module, parameter name) pairs that LoRA adapts."""
    targets: list[tuple[nn.Module, str]] = []
    for layer in model.encoder.layers:
        assert isinstance(layer, MoiraiMoEEncoderLayer)
        attn = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            targets.append((getattr(attn, name), "weight"))
        targets.extend((layer.ffn, leaf) for leaf in _EXPERT_LEAVES)
    return targets


def max_lora_rank(model: MoiraiMoEModel) -> int:
    """Largest useful rank: the smallest side of any adapted weight."""
    return min(
        min(getattr(module, name).shape[-2:]) for module, name in lora_targets(model)
    )


def add_lora(
    model: MoiraiMoEModel,
    rank: int,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Attach LoRA adapters in place (see the module docstring).

    Parameters
    ----------
    model : MoiraiMoEModel
        Model to adapt (not yet adapted).
    rank : int
        Adapter rank, between 1 and :func:`max_lora_rank`.
    alpha : float, optional
        Scale numerator; ``2 * rank`` by default (a scaling of 2).
    generator : torch.Generator, optional
        Source of the adapters' initial ``A``.

    Examples
    --------
    ``B`` starts at zero, so the adapted model computes what the base did:

    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import add_lora, configure_trainable
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> before = model.encoder.layers[0].self_attn.q_proj.weight.clone()
    >>> add_lora(model, rank=4, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(model.encoder.layers[0].self_attn.q_proj.weight, before)
    True
    >>> len(configure_trainable(model, "lora"))  # A and B of 4 + 3 weights
    14
    """
    limit = max_lora_rank(model)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
        msg = f"lora_rank must be an integer between 1 and {limit}, got {rank!r}"
        raise ValueError(msg)
    alpha = 2.0 * rank if alpha is None else float(alpha)
    for module, name in lora_targets(model):
        weight = getattr(module, name)
        adapter = LoRA(
            weight.shape,
            rank,
            alpha,
            dtype=weight.dtype,
            device=weight.device,
            generator=generator,
        )
        parametrize.register_parametrization(module, name, adapter)


def has_lora(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries an adapter."""
    return any(parametrize.is_parametrized(m) for m in model.modules())


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its weight, in place (a plain model remains).

    Parameters
    ----------
    model : torch.nn.Module
        A model with adapters (:func:`add_lora`); one without is left as it is.

    Examples
    --------
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import add_lora, merge_lora
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> keys = set(model.state_dict())
    >>> add_lora(model, rank=2)
    >>> merge_lora(model)
    >>> set(model.state_dict()) == keys  # plain weights again, same names
    True
    """
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            names = list(module.parametrizations.keys())  # type: ignore[operator,union-attr]
            for name in names:
                parametrize.remove_parametrizations(
                    module, name, leave_parametrized=True
                )


def configure_trainable(
    model: MoiraiMoEModel, strategy: str, *, train_centroids: bool = False
) -> list[str]:
    """Set ``requires_grad`` for ``strategy``; return the trained parameter names.

    For ``"lora"`` the adapters must already be attached (:func:`add_lora`).
    ``train_centroids`` turns the gate centroids (a buffer) into a trained
    parameter; :func:`freeze_centroids` turns them back.

    Parameters
    ----------
    model : MoiraiMoEModel
        The model, changed in place.
    strategy : {"full", "head", "freeze-experts", "lora"}
        Which weights train (see the module docstring).
    train_centroids : bool
        Also train the gate centroids.

    Returns
    -------
    list of str
        Names of the parameters that now require gradients.

    Examples
    --------
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> from moirai_moe_sk.training import configure_trainable
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> trained = configure_trainable(MoiraiMoEModel(config), "head")
    >>> sorted({name.split(".")[0] for name in trained})
    ['feat_proj', 'in_proj', 'param_proj', 'res_proj']
    """
    if strategy not in STRATEGIES:
        msg = f"unknown fine-tuning strategy {strategy!r}; choose from {STRATEGIES}"
        raise ValueError(msg)
    if train_centroids:
        _centroids_as_parameter(model)
    for name, param in model.named_parameters():
        if name == "encoder.centroid":
            param.requires_grad_(train_centroids)
        elif strategy == "full":
            param.requires_grad_(True)
        elif strategy == "head":
            param.requires_grad_(name.startswith(_HEAD_PREFIXES))
        elif strategy == "freeze-experts":
            leaf = name.rsplit(".", 1)[-1]
            expert = ".ffn." in name and (leaf in _EXPERT_LEAVES or ".gate." in name)
            param.requires_grad_(not expert)
        else:  # lora: adapters only
            param.requires_grad_(name.endswith((".A", ".B")))
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _centroids_as_parameter(model: MoiraiMoEModel) -> None:
    encoder = model.encoder
    centroid = encoder.centroid
    if centroid is None or isinstance(centroid, nn.Parameter):
        return
    del encoder._buffers["centroid"]
    encoder.centroid = nn.Parameter(centroid.detach().clone())


def freeze_centroids(model: MoiraiMoEModel) -> None:
    """Turn trained centroids back into a (float64) buffer, as after loading."""
    encoder = model.encoder
    centroid = encoder.centroid
    if isinstance(centroid, nn.Parameter):
        del encoder._parameters["centroid"]
        encoder.register_buffer("centroid", centroid.detach().clone())
