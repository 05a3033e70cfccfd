"""Expert-allocation analysis: which experts each layer routes tokens to, by group.

Moirai-MoE replaces every transformer feed-forward block by a sparse mixture
of experts with *token-cluster gating*: each layer holds fixed centroids, one
per expert, obtained by clustering a dense model's feed-forward inputs with
k-means. A token (one 16-step patch) is routed by its Euclidean distance to
those centroids and processed by ``k`` of the ``E`` experts only (2 of 32 in
the released models), whose outputs are mixed with softmax weights. Routing
therefore depends on the *content* of the token, not on a dataset or frequency
label, which is the paper's argument for replacing frequency-specific input
projections with data-driven specialisation.

The paper (Liu et al., "Moirai-MoE", arXiv 2410.10469) supports that argument
with an expert-allocation figure: for series of each frequency (yearly,
quarterly, monthly, ... data) it shows, per layer, how often each expert is
selected. The paper reads it as diverse, group-dependent expert use in the
shallow layers and allocations that concentrate on fewer experts, more alike
across groups, in the deep layers (patterns shared beyond the frequency
label). This module reproduces that analysis for any model of the package:

* :func:`expert_counts` counts the routing decisions of every layer over
  batches of packed inputs (real tokens only: padding is excluded);
* :func:`expert_allocation` packs groups of plain series (as the forecaster
  packs a context), counts them and returns a tidy frame of counts and
  per-layer frequencies;
* :func:`plot_expert_allocation` draws the paper-style (layer x expert)
  heatmaps, one panel per group.

A note on the released weights: uni2ts selects the ``k`` **farthest**
centroids (``topk`` with its default ``largest=True`` on distances), and the
released checkpoints were trained that way; this package reproduces it by
default (``gate_selection="farthest"``, see :mod:`moirai_moe_sk.model.moe`).
An expert is thus chosen for tokens *far* from its centroid; the counts here
are the experts actually used by the forward pass, whatever the convention,
so they describe the model as it runs. Layers and experts are numbered from 0
in the frame (as in ``model.encoder.layers`` and the experts' stacked
weights); the plot labels layers 1 to L, as the paper does.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .convert import causal_mean_impute, left_pad
from .model.modeling import MoiraiMoEEncoderLayer, MoiraiMoEModel
from .model.moe import MoiraiMoEFeedForward
from .model.packing import pack

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["expert_allocation", "expert_counts", "plot_expert_allocation"]

#: columns of the frame returned by :func:`expert_allocation`
COLUMNS = ("group", "layer", "expert", "count", "frequency")
#: group label used when ``data`` is a plain sequence of series
DEFAULT_GROUP = "all"


# ----------------------------------------------------------------- counting
def _moe_layers(model: MoiraiMoEModel) -> list[MoiraiMoEFeedForward]:
    """Return the feed-forward block of each layer (all are MoE layers here)."""
    ffns = []
    for index, layer in enumerate(model.encoder.layers):
        ffn = getattr(layer, "ffn", None)
        if not isinstance(layer, MoiraiMoEEncoderLayer) or not isinstance(
            ffn, MoiraiMoEFeedForward
        ):
            msg = (
                f"layer {index} of the model is not a Moirai-MoE layer with a "
                f"mixture-of-experts feed-forward block (got {type(layer).__name__})"
            )
            raise TypeError(msg)
        ffns.append(ffn)
    return ffns


def expert_counts(
    model: MoiraiMoEModel, batches: Iterable[Mapping[str, torch.Tensor]]
) -> np.ndarray:
    """Count, per layer, how many routing decisions went to each expert.

    Each real token makes ``k = config.num_experts_per_token`` decisions per
    layer (one per selected expert); padding tokens (``sample_id == 0``) are
    left out. Every layer of a :class:`MoiraiMoEModel` is a mixture-of-experts
    layer; a dense model (``num_experts == 1``) puts every decision in
    expert 0.

    The model runs in eval mode under :func:`torch.no_grad`; its forward hooks
    are removed and its training mode restored afterwards, also on error.
    Only forward passes made by the calling thread are counted, so a model
    shared with other threads (the forecaster's cached one) is safe to use.

    Parameters
    ----------
    model : MoiraiMoEModel
        The network.
    batches : iterable of dict
        Keyword arguments of :meth:`MoiraiMoEModel.forward`, e.g.
        :meth:`moirai_moe_sk.model.PackedBatch.inputs`; each needs
        ``sample_id``.

    Returns
    -------
    numpy.ndarray
        (num_layers, num_experts) int64 counts; each row sums to the number of
        real tokens times ``k``.

    Raises
    ------
    ValueError
        If ``model`` is not a :class:`MoiraiMoEModel` or a batch has no
        ``sample_id`` (or one that does not match its tokens).

    See Also
    --------
    expert_allocation : the same counts for groups of plain series.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk.analysis import expert_counts
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, pack
    >>> _ = torch.manual_seed(0)
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=2, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> y = torch.randn(2, 40, 1)  # two series of 40 steps: 3 patches each
    >>> packed = pack(
    ...     y, torch.ones_like(y, dtype=torch.bool),
    ...     torch.zeros(2, 40, dtype=torch.bool), prediction_length=0,
    ... )
    >>> counts = expert_counts(model, [packed.inputs()])
    >>> counts.shape
    (2, 4)
    >>> counts.sum(axis=1).tolist()  # 6 real tokens, each routed to 2 experts
    [12, 12]
    """
    if not isinstance(model, MoiraiMoEModel):
        msg = f"model must be a MoiraiMoEModel, got {type(model).__name__}"
        raise TypeError(msg)
    ffns = _moe_layers(model)
    num_experts = model.config.num_experts
    totals = torch.zeros(len(ffns), num_experts, dtype=torch.long)
    keep: list[torch.Tensor] = []
    owner = threading.get_ident()

    def hook(index: int) -> Any:
        def count(
            _module: torch.nn.Module, _args: Any, output: tuple[torch.Tensor, ...]
        ) -> None:
            if threading.get_ident() != owner or not keep:
                return
            experts = output[1]
            experts = experts.reshape(-1, experts.shape[-1])
            mask = keep[0].to(experts.device)
            if mask.shape[0] != experts.shape[0]:
                msg = (
                    f"sample_id marks {mask.shape[0]} tokens but layer {index} "
                    f"routed {experts.shape[0]}; give sample_id the tokens' shape"
                )
                raise ValueError(msg)
            chosen = experts[mask].reshape(-1)
            totals[index] += torch.bincount(chosen, minlength=num_experts).cpu()

        return count

    handles = [ffn.register_forward_hook(hook(i)) for i, ffn in enumerate(ffns)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs in batches:
                if "sample_id" not in inputs:
                    msg = "each batch needs a 'sample_id' tensor (0 marks padding)"
                    raise ValueError(msg)
                sample_id = torch.as_tensor(inputs["sample_id"])
                target = inputs.get("target")
                if target is not None and sample_id.shape != target.shape[:-1]:
                    msg = (
                        f"sample_id has shape {tuple(sample_id.shape)}, the tokens "
                        f"of target {tuple(target.shape[:-1])}"
                    )
                    raise ValueError(msg)
                keep[:] = [sample_id.reshape(-1) != 0]
                model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        keep.clear()
        model.train(was_training)
    return totals.numpy()


# ------------------------------------------------------------------ inputs
def _resolve_model(obj: Any) -> tuple[MoiraiMoEModel, int | None]:
    """Return the model and the forecaster's ``context_length`` (if any)."""
    if isinstance(obj, MoiraiMoEModel):
        return obj, None
    if isinstance(obj, str | os.PathLike):
        return MoiraiMoEModel.from_pretrained(obj), None
    # a forecaster can only exist once its module was imported: checking this
    # way avoids importing sktime for a plain model
    forecaster_module = sys.modules.get(f"{__package__}.forecaster")
    if forecaster_module is not None and isinstance(
        obj, forecaster_module.MoiraiMoEForecaster
    ):
        if not obj.is_fitted:
            msg = (
                "the MoiraiMoEForecaster is not fitted: call fit first (its model "
                "is loaded, or fine-tuned, in fit)"
            )
            raise ValueError(msg)
        return obj._get_model(), obj.context_length
    msg = (
        "model_or_forecaster must be a MoiraiMoEModel, a fitted "
        "MoiraiMoEForecaster or a checkpoint name or folder (str or path), got "
        f"{type(obj).__name__}"
    )
    raise TypeError(msg)


def _as_list(obj: Any, rule: str) -> list[Any]:
    """``list(obj)`` for a sequence of series; else a TypeError stating ``rule``."""
    single = isinstance(obj, str | bytes | pd.Series | pd.DataFrame) or (
        isinstance(obj, np.ndarray) and obj.ndim != 2
    )
    try:
        if single:
            raise TypeError  # noqa: TRY301  (same message as a non-iterable)
        return list(obj)
    except TypeError as err:
        msg = f"{rule}, got {type(obj).__name__}; wrap a single series in a list"
        raise TypeError(msg) from err


def _as_groups(data: Any) -> dict[Hashable, list[Any]]:
    """Normalise ``data`` to an ordered ``{group: [series, ...]}`` dict."""
    if isinstance(data, Mapping):
        groups = {
            label: _as_list(
                data[label], f"group {label!r} must be a sequence of series"
            )
            for label in data
        }
    else:
        rule = "data must be a mapping {group: sequence of series} or a sequence"
        series = _as_list(data, rule + " of series")
        groups = {DEFAULT_GROUP: series} if series else {}
    if not groups:
        msg = "data is empty: give at least one group of series"
        raise ValueError(msg)
    for label, items in groups.items():
        if not items:
            msg = f"group {label!r} has no series"
            raise ValueError(msg)
    return groups


def _as_values(series: Any, where: str) -> np.ndarray:
    """Return a checked float64 copy of one univariate series (NaN = missing)."""
    try:
        if isinstance(series, pd.Series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        else:
            values = np.array(series, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as err:
        msg = f"{where} must hold numbers (NaN for missing values): {err}"
        raise ValueError(msg) from err
    if values.ndim != 1:
        msg = f"{where} must be a 1-D (univariate) series, got shape {values.shape}"
        raise ValueError(msg)
    if np.isinf(values).any():
        msg = f"{where} holds infinite values; use NaN for missing values"
        raise ValueError(msg)
    if len(values) == 0:
        msg = f"{where} is empty"
        raise ValueError(msg)
    if np.isnan(values).all():
        msg = f"{where} is all NaN: nothing is observed"
        raise ValueError(msg)
    return values


def _context(values: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Impute (on the whole series, as the forecaster does) and keep the tail."""
    observed = ~np.isnan(values)
    filled = causal_mean_impute(values) if not observed.all() else values
    return filled[-context_length:], observed[-context_length:]


def _batches(
    contexts: Sequence[tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    patch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[dict[str, torch.Tensor]]:
    """Pack contexts (longest first, to pad little) into model inputs."""
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i][0]))
    for start in range(0, len(order), batch_size):
        rows = [contexts[i] for i in order[start : start + batch_size]]
        width = max(len(values) for values, _ in rows)
        target = left_pad([v[:, None] for v, _ in rows], width, 0.0)
        observed = left_pad([o[:, None] for _, o in rows], width, False)
        is_pad = left_pad([np.zeros(len(v), dtype=bool) for v, _ in rows], width, True)
        packed = pack(
            torch.from_numpy(target.astype(np.float32)),
            torch.from_numpy(observed),
            torch.from_numpy(is_pad),
            prediction_length=0,
            patch_size=patch_size,
        )
        inputs = {key: value.to(device) for key, value in packed.inputs().items()}
        inputs["target"] = inputs["target"].to(dtype)
        yield inputs


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        msg = f"{name} must be a positive integer, got {value!r}"
        raise ValueError(msg)
    return int(value)


# ---------------------------------------------------------------- analysis
def expert_allocation(
    model_or_forecaster: Any,
    data: Mapping[Hashable, Sequence[Any]] | Sequence[Any],
    *,
    context_length: int | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Per-layer expert selection frequencies of groups of series.

    Each series' last ``context_length`` steps are packed as one context,
    exactly as the forecaster packs a context (missing values imputed on the
    whole series and marked unobserved, left padding to whole patches), run
    through the model, and every routing decision of every real token is
    counted (see :func:`expert_counts`). Counts are normalised per group and
    layer into frequencies summing to 1: the data of the paper's
    expert-allocation figure.

    Parameters
    ----------
    model_or_forecaster : MoiraiMoEModel, MoiraiMoEForecaster, str or path
        The model to analyse: a model, a fitted forecaster (its model in use,
        fine-tuned or not), or a checkpoint name or folder loaded with
        :meth:`MoiraiMoEModel.from_pretrained`.
    data : mapping or sequence
        ``{group: [series, ...]}``, for example frequencies as groups
        (``{"yearly": [...], "monthly": [...]}``), or one sequence of series
        (a single group called ``"all"``). A series is a 1-D array-like or
        :class:`pandas.Series` of numbers, NaN marking missing values, with at
        least one observed value; a series shorter than a patch is left-padded,
        as in forecasting. Nothing is modified.
    context_length : int, optional
        Steps of each series used as context (its last ones). By default the
        forecaster's ``context_length`` when it has one, else the whole
        series, capped at ``config.max_seq_len * patch_size`` steps (the
        positions the model was built for).
    batch_size : int
        Series per forward pass.

    Returns
    -------
    pandas.DataFrame
        Tidy frame with one row per group, layer and expert, in that order:
        ``group`` (the label), ``layer`` and ``expert`` (int, from 0),
        ``count`` (int, routing decisions) and ``frequency`` (float, the
        count divided by the layer's total for that group).

    Raises
    ------
    ValueError
        On empty data, a group without series, a series that is not 1-D
        numbers, is all NaN, holds infinite values or is shorter than one
        patch, a bad ``context_length`` or ``batch_size``, or a
        ``model_or_forecaster`` of another type (or an unfitted forecaster).

    See Also
    --------
    expert_counts : the raw counts over packed batches.
    plot_expert_allocation : the heatmaps of the result.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from moirai_moe_sk.analysis import expert_allocation
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> _ = torch.manual_seed(0)
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=2, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> rng = np.random.default_rng(0)
    >>> data = {
    ...     "smooth": [np.sin(np.arange(96) / 8), np.cos(np.arange(64) / 8)],
    ...     "noisy": [rng.normal(size=80), rng.normal(size=48)],
    ... }
    >>> allocation = expert_allocation(model, data)
    >>> allocation.columns.tolist()
    ['group', 'layer', 'expert', 'count', 'frequency']
    >>> len(allocation)  # 2 groups x 2 layers x 4 experts
    16
    >>> totals = allocation.groupby(["group", "layer"], sort=False)["count"].sum()
    >>> totals.tolist()  # (6 + 4) and (5 + 3) tokens, 2 experts each
    [20, 20, 16, 16]
    >>> allocation.groupby(["group", "layer"])["frequency"].sum().round(12).unique()
    array([1.])
    """
    groups = _as_groups(data)
    batch_size = _positive_int("batch_size", batch_size)
    if context_length is not None:
        context_length = _positive_int("context_length", context_length)
    model, forecaster_context = _resolve_model(model_or_forecaster)
    config = model.config
    patch = config.patch_size
    if context_length is None:
        context_length = forecaster_context
    max_context = config.max_seq_len * patch
    parameter = next(model.parameters())
    device = parameter.device
    dtype = parameter.dtype if parameter.is_floating_point() else torch.float32

    # check every series before running anything
    contexts: dict[Hashable, list[tuple[np.ndarray, np.ndarray]]] = {}
    for label, items in groups.items():
        contexts[label] = []
        for position, series in enumerate(items):
            values = _as_values(series, f"series {position} of group {label!r}")
            length = (
                context_length
                if context_length is not None
                else min(len(values), max_context)
            )
            contexts[label].append(_context(values, length))

    frames = []
    layers = np.arange(config.num_layers)
    experts = np.arange(config.num_experts)
    for label, group in contexts.items():
        counts = expert_counts(model, _batches(group, batch_size, patch, device, dtype))
        frequency = counts / counts.sum(axis=1, keepdims=True)
        frames.append(
            pd.DataFrame(
                {
                    "group": [label] * counts.size,
                    "layer": np.repeat(layers, config.num_experts),
                    "expert": np.tile(experts, config.num_layers),
                    "count": counts.reshape(-1).astype(np.int64),
                    "frequency": frequency.reshape(-1).astype(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- plotting
def plot_expert_allocation(
    allocation: pd.DataFrame,
    *,
    ax: Any = None,
    cmap: str = "viridis",
) -> Figure:
    """Draw the paper-style (layer x expert) heatmaps, one panel per group.

    Each panel shows one group's selection frequencies: layers as rows
    (labelled 1 to L, top to bottom), experts as columns; all panels share one
    color scale, shown by a single colorbar. Nothing is shown or saved: the
    figure is returned (matplotlib's object API, safe with any backend).

    Parameters
    ----------
    allocation : pandas.DataFrame
        The result of :func:`expert_allocation` (columns ``group``, ``layer``,
        ``expert`` and ``frequency``).
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        Axes to draw on, one per group (a single Axes for a single group); a
        new figure when omitted.
    cmap : str or matplotlib colormap
        Colormap of the heatmaps.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the heatmaps and the colorbar.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "moirai_moe_sk[plot]"``).
    ValueError
        If ``allocation`` is empty, lacks a column, or ``ax`` does not give one
        Axes per group.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from moirai_moe_sk.analysis import expert_allocation, plot_expert_allocation
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> _ = torch.manual_seed(0)
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=32, num_layers=2, num_experts=4)
    >>> model = MoiraiMoEModel(config)
    >>> data = {"a": [np.sin(np.arange(64) / 8)], "b": [np.arange(48.0)]}
    >>> fig = plot_expert_allocation(expert_allocation(model, data))
    >>> len(fig.axes)  # two heatmaps and the colorbar
    3
    >>> fig.axes[0].images[0].get_array().shape  # (layers, experts)
    (2, 4)
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        msg = (
            'plot_expert_allocation needs matplotlib: pip install "moirai_moe_sk[plot]"'
        )
        raise ImportError(msg) from err

    if not isinstance(allocation, pd.DataFrame):
        msg = (
            "allocation must be the DataFrame returned by expert_allocation, got "
            f"{type(allocation).__name__}"
        )
        raise TypeError(msg)
    missing = [
        c for c in ("group", "layer", "expert", "frequency") if c not in allocation
    ]
    if missing:
        msg = (
            f"allocation lacks the column(s) {missing}; pass expert_allocation's result"
        )
        raise ValueError(msg)
    if allocation.empty:
        msg = "allocation is empty: nothing to plot"
        raise ValueError(msg)

    labels = list(pd.unique(allocation["group"]))
    num_layers = int(allocation["layer"].max()) + 1
    num_experts = int(allocation["expert"].max()) + 1
    matrices = []
    for label in labels:
        part = allocation[allocation["group"] == label]
        matrix = np.zeros((num_layers, num_experts))
        matrix[part["layer"].to_numpy(int), part["expert"].to_numpy(int)] = part[
            "frequency"
        ].to_numpy(float)
        matrices.append(matrix)
    vmax = max(float(m.max()) for m in matrices) or 1.0

    if ax is None:
        figure = Figure(
            figsize=(1.0 + 0.18 * num_experts * len(labels) + 1.5 * len(labels), 3.5),
            layout="constrained",
        )
        axes = list(figure.subplots(1, len(labels), squeeze=False)[0])
    else:
        axes = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
        if len(axes) != len(labels):
            msg = f"ax must give one Axes per group ({len(labels)}), got {len(axes)}"
            raise ValueError(msg)
        figure = axes[0].figure

    images = []
    for index, (axis, label, matrix) in enumerate(
        zip(axes, labels, matrices, strict=True)
    ):
        images.append(
            axis.imshow(
                matrix,
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                vmin=0.0,
                vmax=vmax,
            )
        )
        axis.set_title(str(label))
        axis.set_xlabel("expert")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_yticks(range(num_layers), [str(i + 1) for i in range(num_layers)])
        if index == 0:
            axis.set_ylabel("layer")
    figure.colorbar(images[0], ax=axes, label="selection frequency")
    return figure
