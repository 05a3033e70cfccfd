"""Building blocks of the paper's recipe: dense model, k-means centroids, sparse model.

Moirai-MoE's token-cluster gating routes each token by its distance to fixed
per-layer centroids. The paper obtains them from a *dense* pretrained model: its
token representations at each layer's feed-forward input are clustered with
k-means, one centroid per expert, and the sparse model is then trained with
those centroids fixed. This module provides the steps:

1. :func:`dense_config`: the dense counterpart of a sparse configuration (one
   expert as wide as the ``k`` active ones together: the same activated size);
2. :func:`ffn_inputs`: the feed-forward inputs of every layer of a model on a
   batch of packed windows (real tokens only);
3. :func:`kmeans`: seeded k-means++ and Lloyd iterations in torch;
4. :func:`sparse_from_dense`: the sparse model warm-started from the dense one
   (every non-expert weight copied) with the centroids installed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import torch

from ..model.config import MoiraiMoEConfig
from ..model.modeling import MoiraiMoEEncoderLayer, MoiraiMoEModel

__all__ = ["dense_config", "ffn_inputs", "kmeans", "sparse_from_dense"]

#: configuration fields that only shape the feed-forward layers
_FFN_FIELDS = {"d_ff", "num_experts", "num_experts_per_token", "gate", "gate_selection"}


def dense_config(config: MoiraiMoEConfig) -> MoiraiMoEConfig:
    """Return the dense model with the activated size of ``config``.

    One expert of width ``d_ff * num_experts_per_token``, routed with a linear
    gate (a single expert always gets weight 1, so it is a plain SwiGLU FFN).

    Examples
    --------
    >>> from moirai_moe_sk.model import MoiraiMoEConfig
    >>> dense = dense_config(MoiraiMoEConfig(d_model=128, d_ff=256, num_experts=8))
    >>> dense.num_experts, dense.d_ff
    (1, 512)
    """
    return dataclasses.replace(
        config,
        d_ff=config.d_ff * config.num_experts_per_token,
        num_experts=1,
        num_experts_per_token=1,
        gate="linear",
    )


@torch.no_grad()
def ffn_inputs(
    model: MoiraiMoEModel, batches: Iterable[Mapping[str, torch.Tensor]]
) -> list[torch.Tensor]:
    """Collect each layer's feed-forward input over ``batches``.

    Parameters
    ----------
    model : MoiraiMoEModel
        Any model (dense or sparse); run in eval mode for the collection.
    batches : iterable of dict
        Keyword arguments of :meth:`MoiraiMoEModel.forward` (e.g.
        ``TrainingBatch.inputs``).

    Returns
    -------
    list of torch.Tensor
        Per layer, (tokens, d_model) representations of the real tokens
        (``sample_id != 0``), in float32 on the CPU.

    Examples
    --------
    Two series of 64 steps, four patches each, through a one-layer model:

    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, pack
    >>> from moirai_moe_sk.pretrain.recipe import ffn_inputs
    >>> model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1))
    >>> y = torch.randn(2, 64, 1, generator=torch.Generator().manual_seed(0))
    >>> packed = pack(y, y == y, torch.zeros(2, 64, dtype=torch.bool), 16)
    >>> # one layer; 2 series x (4 past + 1 future) tokens of width 64
    >>> [x.shape for x in ffn_inputs(model, [packed.inputs()])]
    [torch.Size([10, 64])]
    """
    layers = [
        layer
        for layer in model.encoder.layers
        if isinstance(layer, MoiraiMoEEncoderLayer)
    ]
    collected: list[list[torch.Tensor]] = [[] for _ in layers]
    keep: list[torch.Tensor] = []

    def hook(index: int):
        def save(_module, args, _output) -> None:
            x = args[0]
            collected[index].append(x.reshape(-1, x.shape[-1])[keep[0]].float().cpu())

        return save

    handles = [
        layer.ffn.register_forward_hook(hook(i)) for i, layer in enumerate(layers)
    ]
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            keep[:] = [(inputs["sample_id"] != 0).reshape(-1)]
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [torch.cat(parts) for parts in collected]


def kmeans(
    x: torch.Tensor, k: int, *, iterations: int = 50, seed: int = 0
) -> torch.Tensor:
    """Cluster the rows of ``x`` into ``k`` centroids (k-means++, then Lloyd).

    An emptied cluster is re-seeded with the point farthest from its centroid.

    Parameters
    ----------
    x : torch.Tensor
        (points, dim) data.
    k : int
        Number of clusters, at most the number of points.
    iterations : int
        Lloyd iterations at most (stops earlier when assignments settle).
    seed : int
        Seed of the k-means++ initialisation.

    Returns
    -------
    torch.Tensor
        (k, dim) centroids in float64.

    Examples
    --------
    >>> import torch
    >>> x = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 5])
    >>> c = kmeans(x, 2, seed=0)
    >>> sorted(round(float(v)) for v in c[:, 0])
    [0, 5]
    """
    x = x.double()
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        msg = f"k must be an integer between 1 and the number of points {n}, got {k!r}"
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    dist = ((x - x[first]) ** 2).sum(-1)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:  # fewer distinct points than clusters: repeat one
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(dist / total, 1, generator=generator))
        centroids.append(x[index])
        dist = torch.minimum(dist, ((x - x[index]) ** 2).sum(-1))
    centers = torch.stack(centroids)
    assign = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iterations):
        new_assign = torch.cdist(x, centers).argmin(-1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        centers = torch.where(
            counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers
        )
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = ((x - centers[assign]) ** 2).sum(-1).argmax()
            centers[empty] = x[far]
            assign[far] = empty
    return centers


def sparse_from_dense(
    dense: MoiraiMoEModel,
    config: MoiraiMoEConfig,
    centroids: torch.Tensor | None = None,
    *,
    seed: int = 0,
) -> MoiraiMoEModel:
    """Build the sparse model of ``config`` warm-started from ``dense``.

    Every weight outside the experts (input projection, attention, norms,
    head) is copied; the experts start from their own seeded initialisation.

    Parameters
    ----------
    dense : MoiraiMoEModel
        The trained dense model; its configuration must agree with ``config``
        in everything but the feed-forward layers.
    config : MoiraiMoEConfig
        The sparse configuration.
    centroids : torch.Tensor, optional
        (layer, expert, d_model) gate centroids, required for centroid gating.
    seed : int
        Seed of the experts' initialisation (the global RNG is untouched).

    Returns
    -------
    MoiraiMoEModel
        The sparse model, in training mode.

    Examples
    --------
    The recipe on random data: dense model, k-means of its feed-forward
    inputs, sparse model with those centroids:

    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, pack
    >>> from moirai_moe_sk.pretrain.recipe import (
    ...     dense_config, ffn_inputs, kmeans, sparse_from_dense)
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=1, num_experts=4)
    >>> dense = MoiraiMoEModel(dense_config(config))
    >>> y = torch.randn(4, 64, 1, generator=torch.Generator().manual_seed(0))
    >>> packed = pack(y, y == y, torch.zeros(4, 64, dtype=torch.bool), 16)
    >>> tokens = ffn_inputs(dense, [packed.inputs()])
    >>> centroids = torch.stack([kmeans(x, config.num_experts) for x in tokens])
    >>> sparse = sparse_from_dense(dense, config, centroids)
    >>> torch.equal(sparse.in_proj.weight, dense.in_proj.weight)
    True
    >>> tuple(sparse.encoder.centroid.shape)  # (layer, expert, d_model)
    (1, 4, 64)
    """
    mismatch = [
        f.name
        for f in dataclasses.fields(config)
        if f.name not in _FFN_FIELDS
        and getattr(config, f.name) != getattr(dense.config, f.name)
    ]
    if mismatch:
        msg = (
            "the dense model's configuration differs from the sparse one beyond "
            f"its feed-forward layers: {mismatch}"
        )
        raise ValueError(msg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sparse = MoiraiMoEModel(config)
    state = {
        name: value
        for name, value in dense.state_dict().items()
        if ".ffn." not in name and name != "encoder.centroid"
    }
    missing, unexpected = sparse.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(".ffn." in m or m == "encoder.centroid" for m in missing), missing
    if config.gate == "centroid":
        expected = (config.num_layers, config.num_experts, config.d_model)
        if centroids is None or tuple(centroids.shape) != expected:
            got = None if centroids is None else tuple(centroids.shape)
            msg = f"centroid gating needs centroids of shape {expected}, got {got}"
            raise ValueError(msg)
        assert sparse.encoder.centroid is not None
        sparse.encoder.centroid.copy_(centroids.double())
    return sparse.train()
