"""Expert-allocation analysis: routing counts, per-group frequencies, heatmaps."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from moirai_moe_sk.analysis import (
    expert_allocation,
    expert_counts,
    plot_expert_allocation,
)
from moirai_moe_sk.convert import causal_mean_impute
from moirai_moe_sk.model import pack
from moirai_moe_sk.model.moe import route
from moirai_moe_sk.pretrain.recipe import ffn_inputs

from _helpers import make_tiny_model

SMALL = {"num_experts": 4, "d_ff": 32}


def _series(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        10 + np.sin(np.arange(n) / (2 + i)) + 0.3 * rng.normal(size=n).cumsum()
        for i, n in enumerate(lengths)
    ]


def _inputs(series, width=None, drop_padding=True):
    """Left-pad and pack complete series (no NaN) as one batch of contexts."""
    width = width or max(len(s) for s in series)
    target = np.zeros((len(series), width, 1), dtype=np.float32)
    is_pad = np.ones((len(series), width), dtype=bool)
    for row, values in enumerate(series):
        target[row, width - len(values) :, 0] = values
        is_pad[row, width - len(values) :] = False
    packed = pack(
        torch.from_numpy(target),
        torch.from_numpy(~is_pad[..., None]),
        torch.from_numpy(is_pad),
        prediction_length=0,
        drop_padding=drop_padding,
    )
    return packed.inputs()


def _real_tokens(inputs):
    return int((inputs["sample_id"] != 0).sum())


def _no_hooks(model):
    return all(not layer.ffn._forward_hooks for layer in model.encoder.layers)


# ------------------------------------------------------------ expert_counts
def test_counts_total_real_tokens_times_k_and_ignore_padding():
    model = make_tiny_model(0, **SMALL)
    series = _series([40, 64, 23])
    tight = _inputs(series)
    padded = _inputs(series, width=64 + 48, drop_padding=False)
    assert _real_tokens(padded) == _real_tokens(tight)
    assert (padded["sample_id"] == 0).sum() > (tight["sample_id"] == 0).sum()

    counts = expert_counts(model, [tight])
    assert counts.shape == (2, 4)
    assert counts.dtype == np.int64
    k = model.config.num_experts_per_token
    assert counts.sum(axis=1).tolist() == [_real_tokens(tight) * k] * 2
    np.testing.assert_array_equal(expert_counts(model, [padded]), counts)
    # batches add up: each series alone (no padding at all) gives the same total
    alone = sum(expert_counts(model, [_inputs([s])]) for s in series)
    np.testing.assert_array_equal(alone, counts)
    assert _no_hooks(model)


def test_counts_run_in_eval_mode_and_restore_training_mode():
    model = make_tiny_model(1, dropout_p=0.5, attn_dropout_p=0.5, **SMALL)
    inputs = _inputs(_series([48, 80]))
    expected = expert_counts(model.eval(), [inputs])
    model.train()
    for _ in range(2):  # dropout active would change the routing between runs
        np.testing.assert_array_equal(expert_counts(model, [inputs]), expected)
    assert model.training
    assert _no_hooks(model)


def test_hooks_removed_and_mode_restored_on_error():
    model = make_tiny_model(0, **SMALL).train()
    inputs = _inputs(_series([32]))
    without_ids = {k: v for k, v in inputs.items() if k != "sample_id"}
    with pytest.raises(ValueError, match="sample_id"):
        expert_counts(model, [without_ids])
    bad_ids = {**inputs, "sample_id": inputs["sample_id"][..., :1]}
    with pytest.raises(
        ValueError, match=r"sample_id has shape \(1, 1\), the tokens of target \(1, 2\)"
    ):
        expert_counts(model, [bad_ids])
    assert model.training
    assert _no_hooks(model)
    with pytest.raises(TypeError, match="MoiraiMoEModel"):
        expert_counts(torch.nn.Linear(2, 2), [inputs])


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # released convention: farthest centroids, top-2
        {"gate_selection": "nearest"},
        {"gate": "linear", "num_experts_per_token": 1},
        {"num_experts_per_token": 3},
    ],
)
def test_counts_match_routing_recomputed_from_ffn_inputs(overrides):
    model = make_tiny_model(2, **{**SMALL, **overrides})
    batch = _inputs(_series([40, 64, 23, 90], seed=3))
    counts = expert_counts(model, [batch])
    config = model.config
    for index, x in enumerate(ffn_inputs(model, [batch])):
        ffn = model.encoder.layers[index].ffn
        centroid = (
            None if model.encoder.centroid is None else model.encoder.centroid[index]
        )
        gate = None if ffn.gate is None else ffn.gate.weight
        _, experts = route(x, config, centroid, gate)
        expected = torch.bincount(experts.reshape(-1), minlength=config.num_experts)
        np.testing.assert_array_equal(counts[index], expected.numpy())
    assert counts.sum() == _real_tokens(batch) * config.num_experts_per_token * 2


def test_allocation_follows_the_centroids():
    # expert 2's centroid at each layer's mean token, the others 1000 away: the
    # (normalised, bounded) tokens are nearest expert 2 and farthest from it
    batch = _inputs(_series([64, 48, 80], seed=5))
    nearest = make_tiny_model(3, gate_selection="nearest", num_experts_per_token=1)
    means = [x.mean(0) for x in ffn_inputs(nearest, [batch])]
    generator = torch.Generator().manual_seed(0)
    centroid = torch.randn(2, 8, 64, generator=generator).double()
    centroid = 1000 * centroid / centroid.norm(dim=-1, keepdim=True)
    for layer, mean in enumerate(means):
        centroid[layer, 2] = mean.double()
    nearest.encoder.centroid.copy_(centroid)
    counts = expert_counts(nearest, [batch])
    assert counts[:, 2].tolist() == [_real_tokens(batch)] * 2
    assert counts.sum() == counts[:, 2].sum()

    farthest = make_tiny_model(3, gate_selection="farthest", num_experts_per_token=1)
    farthest.encoder.centroid.copy_(centroid)
    counts = expert_counts(farthest, [batch])
    assert counts[:, 2].tolist() == [0, 0]
    assert counts.sum(axis=1).tolist() == [_real_tokens(batch)] * 2


def test_dense_model_sends_everything_to_expert_zero():
    model = make_tiny_model(0, num_experts=1, num_experts_per_token=1, gate="linear")
    batch = _inputs(_series([40, 33]))
    counts = expert_counts(model, [batch])
    assert counts.shape == (2, 1)
    assert counts[:, 0].tolist() == [_real_tokens(batch)] * 2


# -------------------------------------------------------- expert_allocation
@pytest.fixture(scope="module")
def groups():
    rng = np.random.default_rng(1)
    with_gap = 5 + np.sin(np.arange(70) / 3)
    with_gap[[0, 10, 11, 50]] = np.nan
    return {
        "monthly": [*_series([96, 40, 17], seed=2), pd.Series(with_gap)],
        "yearly": [rng.normal(size=30), list(rng.normal(size=16))],
    }


def _tokens(lengths, context=None):
    return sum(-(-min(n, context or n) // 16) for n in lengths)


def test_allocation_is_a_tidy_frame_of_per_layer_frequencies(groups):
    model = make_tiny_model(4, **SMALL)
    before = copy.deepcopy(groups)
    allocation = expert_allocation(model, groups)

    assert allocation.columns.tolist() == [
        "group",
        "layer",
        "expert",
        "count",
        "frequency",
    ]
    assert len(allocation) == 2 * 2 * 4
    assert allocation["group"].tolist() == ["monthly"] * 8 + ["yearly"] * 8
    assert allocation["layer"].tolist() == ([0] * 4 + [1] * 4) * 2
    assert allocation["expert"].tolist() == [0, 1, 2, 3] * 4
    for column in ("layer", "expert", "count"):
        assert allocation[column].dtype == np.int64
    assert allocation["frequency"].dtype == np.float64
    by_layer = allocation.groupby(["group", "layer"], sort=False)
    np.testing.assert_allclose(by_layer["frequency"].sum(), 1.0, rtol=1e-12)
    k = model.config.num_experts_per_token
    totals = by_layer["count"].sum().tolist()
    assert totals == [_tokens([96, 40, 17, 70]) * k] * 2 + [_tokens([30, 16]) * k] * 2
    np.testing.assert_allclose(
        allocation["frequency"],
        allocation["count"] / by_layer["count"].transform("sum"),
    )
    # the yearly counts are those of the same series packed by hand
    manual = expert_counts(model, [_inputs(groups["yearly"])])
    yearly = allocation[allocation["group"] == "yearly"]
    np.testing.assert_array_equal(yearly["count"].to_numpy().reshape(2, 4), manual)

    # nothing was modified, NaN included
    assert list(groups) == list(before)
    for label, series in before.items():
        for old, new in zip(series, groups[label], strict=True):
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert np.isnan(groups["monthly"][3].iloc[10])


def test_missing_values_are_imputed_and_masked_as_in_forecasting():
    model = make_tiny_model(6, **SMALL)
    values = 5 + np.sin(np.arange(50) / 3)
    values[[0, 7, 30, 31]] = np.nan
    allocation = expert_allocation(model, {"gappy": [values]})
    observed = ~np.isnan(values)
    packed = pack(
        torch.from_numpy(causal_mean_impute(values)).float()[None, :, None],
        torch.from_numpy(observed)[None, :, None],
        torch.zeros(1, 50, dtype=torch.bool),
        prediction_length=0,
    )
    expected = expert_counts(model, [packed.inputs()])
    np.testing.assert_array_equal(
        allocation["count"].to_numpy().reshape(2, 4), expected
    )
    # a zero-filled, all-observed context is routed differently
    zeros = expert_allocation(model, [np.nan_to_num(values)])
    assert not zeros["count"].equals(allocation["count"])


def test_batch_size_and_padding_do_not_change_the_allocation(groups):
    model = make_tiny_model(4, **SMALL)
    full = expert_allocation(model, groups)
    pd.testing.assert_frame_equal(expert_allocation(model, groups, batch_size=1), full)
    pd.testing.assert_frame_equal(expert_allocation(model, groups, batch_size=3), full)


def test_context_length_keeps_the_last_steps(groups):
    model = make_tiny_model(4, **SMALL)
    series = groups["monthly"][:3]  # no NaN: the tail alone is the same context
    short = expert_allocation(model, series, context_length=20)
    tails = expert_allocation(model, [s[-20:] for s in series])
    pd.testing.assert_frame_equal(short, tails)
    assert set(short["group"]) == {"all"}
    assert short.groupby("layer")["count"].sum().tolist() == [3 * 2 * 2] * 2
    heads = expert_allocation(model, [s[:20] for s in series])
    assert not short["count"].equals(heads["count"])


def test_model_checkpoint_folder_and_fitted_forecaster_agree(groups, tmp_path):
    from moirai_moe_sk.forecaster import MoiraiMoEForecaster

    model = make_tiny_model(5, **SMALL)
    model.save_pretrained(tmp_path)
    expected = expert_allocation(model, groups)
    pd.testing.assert_frame_equal(expert_allocation(tmp_path, groups), expected)
    pd.testing.assert_frame_equal(expert_allocation(str(tmp_path), groups), expected)

    y = pd.Series(10 + np.sin(np.arange(48) / 4))
    forecaster = MoiraiMoEForecaster(str(tmp_path), num_samples=4, random_state=0)
    with pytest.raises(ValueError, match="not fitted"):
        expert_allocation(forecaster, groups)
    forecaster.fit(y, fh=[1, 2])
    pd.testing.assert_frame_equal(expert_allocation(forecaster, groups), expected)
    # the forecaster's own context length is the default
    limited = MoiraiMoEForecaster(
        str(tmp_path), context_length=32, num_samples=4, random_state=0
    ).fit(y, fh=[1, 2])
    pd.testing.assert_frame_equal(
        expert_allocation(limited, groups),
        expert_allocation(model, groups, context_length=32),
    )
    assert not forecaster._get_model().training
    assert _no_hooks(forecaster._get_model())


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({}, ValueError, "data is empty"),
        ([], ValueError, "data is empty"),
        ({"monthly": []}, ValueError, "group 'monthly' has no series"),
        (
            {"a": [np.ones(20), np.full(20, np.nan)]},
            ValueError,
            "series 1 of group 'a' is all NaN",
        ),
        ({"a": [np.ones(0)]}, ValueError, "is empty"),
        ({"a": [np.ones((20, 2))]}, ValueError, "1-D"),
        ({"a": [np.r_[np.ones(20), np.inf]]}, ValueError, "infinite"),
        ({"a": [["x"] * 20]}, ValueError, "must hold numbers"),
        ({"a": np.ones(20)}, TypeError, "wrap a single series in a list"),
        (pd.Series(np.ones(20)), TypeError, "wrap a single series in a list"),
    ],
)
def test_bad_data_raises_clear_errors(data, error, match):
    with pytest.raises(error, match=match):
        expert_allocation(make_tiny_model(0, **SMALL), data)


def test_bad_model_and_parameters_raise():
    data = [np.ones(32)]
    with pytest.raises(TypeError, match="must be a MoiraiMoEModel, a fitted"):
        expert_allocation(torch.nn.Linear(16, 16), data)
    model = make_tiny_model(0, **SMALL)
    with pytest.raises(ValueError, match="context_length must be a positive"):
        expert_allocation(model, data, context_length=0)
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        expert_allocation(model, data, batch_size=True)


# ------------------------------------------------------------------ plotting
@pytest.fixture
def agg():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    return matplotlib


def test_plot_draws_one_heatmap_per_group(agg, groups):
    model = make_tiny_model(4, num_layers=3, **SMALL)
    allocation = expert_allocation(model, groups)
    figure = plot_expert_allocation(allocation, cmap="magma")

    assert isinstance(figure, agg.figure.Figure)
    assert len(figure.axes) == 3  # two heatmaps and the colorbar
    heatmaps = [axis for axis in figure.axes if axis.images]
    assert [axis.get_title() for axis in heatmaps] == ["monthly", "yearly"]
    vmax = allocation["frequency"].max()
    for axis, label in zip(heatmaps, ["monthly", "yearly"], strict=True):
        image = axis.images[0]
        part = allocation[allocation["group"] == label]  # layer-major rows
        expected = part["frequency"].to_numpy().reshape(3, 4)
        assert image.get_array().shape == (3, 4)
        np.testing.assert_allclose(image.get_array(), expected)
        assert image.get_clim() == (0.0, vmax)  # one color scale
        assert image.get_cmap().name == "magma"
        labels = [t.get_text() for t in axis.get_yticklabels()]
        assert labels == ["1", "2", "3"]
    figure.canvas.draw()  # renders headless


def test_plot_on_given_axes_and_bad_input(agg, groups):
    from matplotlib.figure import Figure

    allocation = expert_allocation(make_tiny_model(4, **SMALL), groups)
    figure = Figure()
    axes = figure.subplots(1, 2)
    assert plot_expert_allocation(allocation, ax=axes) is figure
    assert all(len(axis.images) == 1 for axis in axes)
    with pytest.raises(ValueError, match="one Axes per group"):
        plot_expert_allocation(allocation, ax=axes[0])
    with pytest.raises(ValueError, match="lacks the column"):
        plot_expert_allocation(allocation.drop(columns="frequency"))
    with pytest.raises(ValueError, match="empty"):
        plot_expert_allocation(allocation.iloc[:0])


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    allocation = pd.DataFrame(
        {"group": ["a"], "layer": [0], "expert": [0], "count": [1], "frequency": [1.0]}
    )
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "moirai_moe_sk\[plot\]"'):
        plot_expert_allocation(allocation)
