"""Draw the user guide's explanatory figures into ``docs/_static/``.

Run from the repository root (needs the ``plot`` extra; offline, a few seconds)::

    python docs/_scripts/make_figures.py

Each figure is computed with the package's own code where it shows data: the
token layout comes from :func:`moirai_moe_sk.model.pack`, the attention mask
from the model's :func:`~moirai_moe_sk.model.layers.attention_bias`, the expert
choice from :func:`~moirai_moe_sk.model.moe.route` and the sample paths from
the bundled model ``moirai-moe-sk-tiny``. The PNGs are committed; the docs
build does not run this script.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyBboxPatch, Rectangle

from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel, forecast, pack
from moirai_moe_sk.model.layers import attention_bias
from moirai_moe_sk.model.moe import route

logger = logging.getLogger("make_figures")

STATIC = Path(__file__).resolve().parents[1] / "_static"
DPI = 110
#: colours by role: target past, target future, known covariate, past-only covariate
COLORS = {
    "target": "#1f77b4",
    "future": "#ff7f0e",
    "known": "#2ca02c",
    "past_only": "#9467bd",
    "pad": "#d9d9d9",
}


def _save(fig: plt.Figure, name: str) -> None:
    """Write ``fig`` as ``docs/_static/<name>`` and close it."""
    path = STATIC / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    logger.info("wrote %s", path)


def _example_pack() -> tuple[object, dict[str, np.ndarray]]:
    """Pack 40 past steps of one target, one known and one past-only covariate."""
    context, horizon = 40, 20
    t = np.arange(context + horizon, dtype=np.float32)
    target = np.sin(t / 5) + 0.1 * t / 10
    known = np.cos(t / 7)
    past_only = np.sign(np.sin(t / 4))
    packed = pack(
        torch.tensor(target[:context]).reshape(1, context, 1),
        torch.ones(1, context, 1, dtype=torch.bool),
        torch.zeros(1, context, dtype=torch.bool),
        horizon,
        feat_dynamic_real=torch.tensor(known).reshape(1, -1, 1),
        observed_feat_dynamic_real=torch.ones(
            1, context + horizon, 1, dtype=torch.bool
        ),
        past_feat_dynamic_real=torch.tensor(past_only[:context]).reshape(1, context, 1),
        past_observed_feat_dynamic_real=torch.ones(1, context, 1, dtype=torch.bool),
    )
    series = {"target": target, "known": known, "past_only": past_only}
    return packed, series


def _token_roles(packed) -> list[str]:
    """Role of each packed token, in sequence order."""
    roles = []
    for variate, predicted in zip(
        packed.variate_id[0].tolist(), packed.prediction_mask[0].tolist(), strict=True
    ):
        if variate == 0:
            roles.append("future" if predicted else "target")
        else:
            roles.append("known" if variate == 1 else "past_only")
    return roles


def figure_packing() -> None:
    """Series cut into patches (top) and the packed token sequence (bottom)."""
    packed, series = _example_pack()
    context, horizon, patch = 40, 20, 16
    pad_left = -context % patch  # 8 steps of left padding: 3 whole past patches
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.2), gridspec_kw={"height_ratios": [1.5, 1]}
    )
    # ---- top: the three series on the patch grid
    offsets = {"target": 2.6, "known": 0.0, "past_only": -2.6}
    labels = {
        "target": "target y (to forecast)",
        "known": "known-future covariate",
        "past_only": "past-only covariate",
    }
    first_patch, last_patch = -pad_left, context + horizon + (-horizon % patch)
    for edge in range(first_patch, last_patch + 1, patch):
        top.axvline(edge - 0.5, color="0.6", lw=0.8, zorder=3)
    top.axvspan(-pad_left - 0.5, -0.5, color=COLORS["pad"], alpha=0.6, lw=0)
    top.axvspan(context - 0.5, context + horizon - 0.5, color="#fff3e0", lw=0)
    top.axvspan(
        context + horizon - 0.5, last_patch - 0.5, color=COLORS["pad"], alpha=0.6, lw=0
    )
    top.text(-pad_left / 2 - 0.5, 4.6, "left\npadding", ha="center", va="top", size=8)
    top.text(
        context + horizon / 2, 4.6, "forecast horizon", ha="center", va="top", size=9
    )
    top.text(
        (context + horizon + last_patch) / 2 - 0.5,
        4.6,
        "right\npadding",
        ha="center",
        va="top",
        size=8,
    )
    for name, values in series.items():
        past = np.arange(context)
        top.plot(past, values[:context] + offsets[name], color=COLORS[name], lw=1.6)
        if name == "known":
            future = np.arange(context, context + horizon)
            top.plot(
                future,
                values[context:] + offsets[name],
                color=COLORS[name],
                lw=1.6,
                ls="--",
            )
        top.text(
            0.5,
            offsets[name] + 1.25,
            labels[name],
            va="bottom",
            size=9,
            color=COLORS[name],
        )
    for index, start in enumerate(range(first_patch, last_patch, patch)):
        top.text(
            start + patch / 2 - 0.5,
            -4.4,
            f"patch {index}",
            ha="center",
            size=8,
            color="0.35",
        )
    top.set_xlim(first_patch - 0.5, last_patch - 0.5)
    top.set_ylim(-4.8, 4.7)
    top.set_yticks([])
    top.set_xlabel("time step (16 steps = one patch = one token per variate)")
    top.spines[["left", "right", "top"]].set_visible(False)
    top.set_title("1. Every variate is cut into 16-step patches", loc="left", size=11)

    # ---- bottom: the packed sequence with its ids
    roles = _token_roles(packed)
    time_id = packed.time_id[0].tolist()
    variate_id = packed.variate_id[0].tolist()
    for index, role in enumerate(roles):
        box = FancyBboxPatch(
            (index + 0.06, 0.0),
            0.88,
            1.0,
            boxstyle="round,pad=0.0,rounding_size=0.12",
            facecolor=COLORS[role],
            edgecolor="white",
            alpha=0.9 if role != "future" else 0.55,
            hatch="///" if role == "future" else None,
        )
        bottom.add_patch(box)
        bottom.text(index + 0.5, -0.35, str(time_id[index]), ha="center", size=9)
        bottom.text(index + 0.5, -0.8, str(variate_id[index]), ha="center", size=9)
    bottom.text(-0.3, -0.35, "time id", ha="right", size=9)
    bottom.text(-0.3, -0.8, "variate id", ha="right", size=9)
    bottom.text(-0.3, 0.5, "tokens", ha="right", va="center", size=9)
    groups = [
        ("target past", 0, 3),
        ("target future\n(predicted)", 3, 5),
        ("known covariate\npast + future", 5, 10),
        ("past-only\ncovariate", 10, 13),
    ]
    for label, start, stop in groups:
        bottom.annotate(
            "",
            (start + 0.05, 1.25),
            (stop - 0.05, 1.25),
            arrowprops={"arrowstyle": "<->", "color": "0.4"},
        )
        bottom.text((start + stop) / 2, 1.4, label, ha="center", va="bottom", size=8.5)
    bottom.set_xlim(-3.2, len(roles) + 0.5)
    bottom.set_ylim(-1.1, 2.3)
    bottom.axis("off")
    bottom.set_title(
        "2. Tokens are packed variate-major into one sequence; time ids align them",
        loc="left",
        size=11,
    )
    fig.tight_layout()
    _save(fig, "packing.png")


def figure_attention() -> None:
    """Draw the packed sequence's attention mask and the binary variate bias."""
    packed, _ = _example_pack()
    allowed, same = attention_bias(packed.sample_id, packed.time_id, packed.variate_id)
    allowed, same = allowed[0, 0].numpy(), same[0, 0].numpy()
    # 0: masked, 1: allowed, other variate, 2: allowed, same variate
    code = np.where(allowed, np.where(same, 2, 1), 0)
    cmap = mpl.colors.ListedColormap(["#f2f2f2", "#9ecae1", "#08519c"])
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    ax.imshow(code, cmap=cmap, vmin=0, vmax=2)
    roles = _token_roles(packed)
    names = {"target": "y", "future": "y*", "known": "x", "past_only": "z"}
    ticks = [
        f"{names[r]} t{t}"
        for r, t in zip(roles, packed.time_id[0].tolist(), strict=True)
    ]
    ax.set_xticks(range(len(ticks)), ticks, rotation=90, size=8)
    ax.set_yticks(range(len(ticks)), ticks, size=8)
    ax.set_xlabel("key token (attended to)")
    ax.set_ylabel("query token")
    for edge in (2.5, 4.5, 9.5):
        ax.axhline(edge, color="white", lw=1.5)
        ax.axvline(edge, color="white", lw=1.5)
    handles = [
        Rectangle((0, 0), 1, 1, color="#08519c"),
        Rectangle((0, 0), 1, 1, color="#9ecae1"),
        Rectangle((0, 0), 1, 1, color="#f2f2f2", ec="0.7"),
    ]
    ax.legend(
        handles,
        [
            "allowed, same variate (bias b_same)",
            "allowed, other variate (bias b_other)",
            "masked: key is later in time",
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=1,
        fontsize=8.5,
        frameon=False,
    )
    ax.set_title(
        "Any-variate attention: causal in time id, all variates at once", size=10.5
    )
    fig.tight_layout()
    _save(fig, "attention_mask.png")


def figure_gating() -> None:
    """Token-cluster gating in two dimensions: farthest (released) vs nearest."""
    angles = np.deg2rad(np.arange(8) * 45 + 10)
    radii = np.array([2.6, 2.2, 3.0, 2.4, 2.8, 2.0, 3.1, 2.5])
    centroids = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    token = np.array([[1.1, 0.6]])
    x = torch.tensor(token, dtype=torch.float32)
    c = torch.tensor(centroids, dtype=torch.float32)
    distances = torch.cdist(x, c)[0].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.9), sharex=True, sharey=True)
    for ax, selection in zip(axes, ("farthest", "nearest"), strict=True):
        # route() only reads the gating fields of the config
        config = MoiraiMoEConfig(num_experts=8, gate_selection=selection)
        weights, experts = route(x, config, centroid=c)
        chosen = dict(zip(experts[0].tolist(), weights[0].tolist(), strict=True))
        for index, (cx, cy) in enumerate(centroids):
            picked = index in chosen
            ax.plot(
                [token[0, 0], cx],
                [token[0, 1], cy],
                color="#d62728" if picked else "0.8",
                lw=2.0 if picked else 0.8,
                zorder=1,
            )
            ax.scatter(
                cx,
                cy,
                s=260,
                marker="o",
                zorder=2,
                color="#d62728" if picked else "white",
                edgecolor="#d62728" if picked else "0.4",
                lw=1.5,
            )
            ax.text(
                cx,
                cy,
                str(index),
                ha="center",
                va="center",
                size=8.5,
                zorder=3,
                color="white" if picked else "0.2",
            )
            label = f"d={distances[index]:.1f}"
            if picked:
                label += f"\nweight {chosen[index]:.2f}"
            ax.text(
                cx + 0.3 * np.sign(cx),
                cy + 0.3 * np.sign(cy),
                label,
                size=8,
                ha="left" if cx > 0 else "right",
                va="center",
                color="#d62728" if picked else "0.45",
            )
        ax.scatter(*token[0], s=160, marker="*", color="black", zorder=4)
        ax.text(token[0, 0] + 0.15, token[0, 1] - 0.45, "token", size=9)
        ax.set_xlim(-4.6, 4.6)
        ax.set_ylim(-4.0, 4.0)
        title = (
            "gate_selection='farthest' (the released weights):\n"
            "experts of the 2 FARTHEST centroids, softmax(d)"
            if selection == "farthest"
            else "gate_selection='nearest' (this package's own models):\n"
            "experts of the 2 nearest centroids, softmax(-d)"
        )
        ax.set_title(title, size=9.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "Token-cluster gating: one fixed centroid per expert and layer; "
        "the token's distances choose 2 of them",
        size=10.5,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, "gating.png")


def figure_sample_paths() -> None:
    """Sample paths of the bundled model and intervals from their order statistics."""
    from sktime.datasets import load_airline

    y = load_airline()
    history, horizon = y.iloc[:-24], 24
    model = MoiraiMoEModel.from_pretrained("moirai-moe-sk-tiny")
    past = torch.tensor(history.to_numpy(), dtype=torch.float32).reshape(1, -1, 1)
    samples = forecast(
        model,
        past,
        prediction_length=horizon,
        num_samples=100,
        generator=torch.Generator().manual_seed(0),
    )[0, :, :, 0].numpy()  # (sample, time)
    ordered = np.sort(samples, axis=0)

    def order_statistic(q: float) -> np.ndarray:
        return ordered[int(np.round((len(ordered) - 1) * q))]

    t_hist = np.arange(len(history))[-60:]
    t_fut = np.arange(len(history), len(history) + horizon)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.3), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    left.plot(t_hist, history.to_numpy()[-60:], color="0.2", lw=1.4, label="history")
    for path in samples[:25]:
        left.plot(t_fut, path, color="#1f77b4", lw=0.6, alpha=0.35)
    left.plot(
        [], [], color="#1f77b4", lw=0.6, alpha=0.6, label="25 of 100 sample paths"
    )
    left.fill_between(
        t_fut,
        order_statistic(0.025),
        order_statistic(0.975),
        color="#ff7f0e",
        alpha=0.18,
        label="95% interval",
    )
    left.fill_between(
        t_fut,
        order_statistic(0.1),
        order_statistic(0.9),
        color="#ff7f0e",
        alpha=0.3,
        label="80% interval",
    )
    left.plot(
        t_fut, order_statistic(0.5), color="#d62728", lw=1.8, label="median (predict)"
    )
    left.plot(t_fut, y.to_numpy()[-24:], color="0.2", lw=1.2, ls="--", label="actual")
    left.axvline(len(history) + 15.5, color="0.6", lw=0.8, ls=":")
    left.text(
        len(history) + 7.5,
        left.get_ylim()[1],
        "patch 1",
        ha="center",
        va="top",
        size=8,
        color="0.4",
    )
    left.text(
        len(history) + 20,
        left.get_ylim()[1],
        "patch 2",
        ha="center",
        va="top",
        size=8,
        color="0.4",
    )
    left.set_xlabel("month")
    left.set_ylabel("passengers (thousands)")
    left.legend(fontsize=8, loc="upper left", ncol=2)
    left.set_title("Airline, moirai-moe-sk-tiny: sample paths and intervals", size=10.5)
    # right: how the 80% interval at one step is read off the sorted samples
    step = 20
    values = ordered[:, step]
    right.scatter(values, np.arange(len(values)), s=8, color="#1f77b4")
    for q, color in ((0.1, "#ff7f0e"), (0.5, "#d62728"), (0.9, "#ff7f0e")):
        rank = int(np.round((len(values) - 1) * q))
        right.axhline(rank, color=color, lw=1, ls="--")
        right.text(
            values.min(),
            rank + (1.5 if q >= 0.5 else -1.5),
            f"q={q}: sorted[{rank}]",
            size=8,
            color=color,
            va="bottom" if q >= 0.5 else "top",
        )
    right.set_xlabel(f"value at step {step + 1} of the horizon")
    right.set_ylabel("rank among the 100 samples")
    right.set_title("Quantiles are order statistics", size=10.5)
    fig.tight_layout()
    _save(fig, "sample_paths.png")


FIGURES = {
    "packing": figure_packing,
    "attention": figure_attention,
    "gating": figure_gating,
    "sample_paths": figure_sample_paths,
}


def main(argv: list[str] | None = None) -> None:
    """Draw the figures named on the command line (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", help=f"some of {sorted(FIGURES)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.figures) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; choose from {sorted(FIGURES)}")
    STATIC.mkdir(exist_ok=True)
    for name in args.figures or FIGURES:
        FIGURES[name]()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
