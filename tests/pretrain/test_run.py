"""Pretraining end to end: stages, resumption, settings, batches and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from moirai_moe_sk.model import MoiraiMoEModel
from moirai_moe_sk.pretrain import run
from moirai_moe_sk.pretrain.run import PretrainConfig, main, pretrain
from moirai_moe_sk.training.data import TrainingSeries

TINY = PretrainConfig(
    d_model=64,
    d_ff=32,
    num_layers=1,
    num_experts=4,
    context_length=32,
    prediction_length=16,
    synthetic_series=40,
    min_length=24,
    max_length=64,
    validation_series=8,
    dense_steps=6,
    sparse_steps=6,
    batch_size=8,
    warmup_steps=2,
    kmeans_windows=16,
    eval_every=3,
    checkpoint_every=2,
    real_fraction=0.0,
)

STAGES = ("dense", "centroid", "linear", "dense-continued")


def _config(**overrides) -> PretrainConfig:
    """The tiny run (no real corpus), with ``overrides``."""
    return dataclasses.replace(TINY, **overrides)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _history(folder: Path) -> list[dict]:
    return json.loads((folder / "history.json").read_text(encoding="utf-8"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _interrupt_at(monkeypatch, stage: str, step: int) -> list[tuple[str, int]]:
    """Raise KeyboardInterrupt when ``stage`` draws the batch of ``step``.

    Returns the (stage, step) batches drawn until then.
    """
    drawn: list[tuple[str, int]] = []
    original = run._step_windows

    def windows(pool, lengths, config, stage_, step_):
        if (stage_, step_) == (stage, step):
            raise KeyboardInterrupt
        drawn.append((stage_, step_))
        return original(pool, lengths, config, stage_, step_)

    monkeypatch.setattr(run, "_step_windows", windows)
    return drawn


def _record_batches(monkeypatch) -> list[tuple[str, int]]:
    drawn: list[tuple[str, int]] = []
    original = run._step_windows

    def windows(pool, lengths, config, stage, step):
        drawn.append((stage, step))
        return original(pool, lengths, config, stage, step)

    monkeypatch.setattr(run, "_step_windows", windows)
    return drawn


def _forbid_training(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        pytest.fail("nothing should be trained or clustered")

    for name in ("_loss", "_validation_nll", "kmeans"):
        monkeypatch.setattr(run, name, refuse)


# ------------------------------------------------------------------ stages
def test_pretrain_trains_every_variant_from_the_dense_model(tmp_path):
    config = _config(learning_rate=3e-3)
    paths = pretrain(tmp_path, config, variants=("centroid", "linear", "dense"))
    assert paths == {
        "centroid": tmp_path / "centroid" / "model",
        "linear": tmp_path / "linear" / "model",
        "dense": tmp_path / "dense-continued" / "model",
    }
    assert json.loads((tmp_path / "run.json").read_text()) == config.to_dict()

    centroid = MoiraiMoEModel.from_pretrained(paths["centroid"])
    assert centroid.config.gate == "centroid"
    assert centroid.config.gate_selection == "nearest"
    assert (centroid.config.num_experts, centroid.config.d_ff) == (4, 32)
    centroids = load_file(str(tmp_path / "centroids.safetensors"))["centroids"]
    assert centroids.shape == (config.num_layers, config.num_experts, config.d_model)
    assert torch.equal(centroid.encoder.centroid, centroids)

    linear = MoiraiMoEModel.from_pretrained(paths["linear"])
    assert linear.config.gate == "linear"
    assert linear.encoder.centroid is None
    assert linear.config.num_experts == config.num_experts

    for folder in (paths["dense"], tmp_path / "dense" / "model"):
        dense = MoiraiMoEModel.from_pretrained(folder)
        assert dense.config.num_experts == 1
        assert dense.config.d_ff == config.d_ff * config.num_experts_per_token

    for stage in STAGES:
        history = _history(tmp_path / stage)
        steps = config.dense_steps if stage == "dense" else config.sparse_steps
        assert [e["step"] for e in history] == [0, 3, 6][: steps // 3 + 1]
        assert history[-1]["step"] == steps
        assert history[0]["train_nll"] is None
        assert all(math.isfinite(e["val_nll"]) for e in history)
        assert all(math.isfinite(e["train_nll"]) for e in history[1:])
        assert not (tmp_path / stage / "checkpoint.safetensors").exists()

    dense_history = _history(tmp_path / "dense")
    continued = _history(tmp_path / "dense-continued")
    assert dense_history[-1]["val_nll"] < dense_history[0]["val_nll"] - 0.05
    # the continued stage starts from the final dense model, and improves it
    assert continued[0]["val_nll"] == pytest.approx(dense_history[-1]["val_nll"])
    assert continued[-1]["val_nll"] < continued[0]["val_nll"]
    # the continued stage changed the dense model's weights
    dense_end = _weights(tmp_path / "dense" / "model")
    assert any(
        not torch.equal(dense_end[k], v) for k, v in _weights(paths["dense"]).items()
    )


def test_unknown_or_no_variants_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="variants"):
        pretrain(tmp_path / "a", _config(), variants=("centroid", "moe"))
    with pytest.raises(ValueError, match="variants"):
        pretrain(tmp_path / "b", _config(), variants=())
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


# -------------------------------------------------------------- resumption
def test_an_unreadable_checkpoint_is_named_not_trained_over(tmp_path, monkeypatch):
    config = _config()
    with monkeypatch.context() as patch:
        _interrupt_at(patch, "dense", 5)
        with pytest.raises(KeyboardInterrupt):
            pretrain(tmp_path, config)
    ckpt = tmp_path / "dense" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated, e.g. a full disk
    with pytest.raises(
        RuntimeError, match=r"checkpoint\.safetensors cannot be resumed"
    ):
        pretrain(tmp_path, config)
    assert ckpt.is_file()  # left for the user to inspect or delete
    ckpt.unlink()
    paths = pretrain(tmp_path, config)
    assert (paths["centroid"] / "model.safetensors").is_file()


def test_interrupted_runs_resume_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    config = _config()
    variants = ("centroid", "dense")
    a = pretrain(tmp_path / "a", config, variants=variants)
    b_folder = tmp_path / "b"

    # interrupted in the dense stage, after the checkpoint of step 4
    with monkeypatch.context() as patch:
        _interrupt_at(patch, "dense", 5)
        with pytest.raises(KeyboardInterrupt):
            pretrain(b_folder, config, variants=variants)
    ckpt = b_folder / "dense" / "checkpoint.safetensors"
    assert ckpt.is_file()
    assert not (b_folder / "dense" / "model").exists()
    with safe_open(str(ckpt), framework="pt") as f:
        assert json.loads(f.metadata()["meta"])["step"] == 4

    # resumed, then interrupted in the centroid stage
    with monkeypatch.context() as patch:
        drawn = _interrupt_at(patch, "centroid", 5)
        with pytest.raises(KeyboardInterrupt):
            pretrain(b_folder, config, variants=variants)
    assert drawn == [("dense", 4), ("dense", 5)] + [("centroid", s) for s in range(5)]
    assert not ckpt.exists()
    assert (b_folder / "centroid" / "checkpoint.safetensors").is_file()
    assert (b_folder / "centroids.safetensors").is_file()

    # resumed again: the dense model and centroids are reused, not recomputed
    with monkeypatch.context() as patch:
        patch.setattr(
            run, "kmeans", lambda *args, **kwargs: pytest.fail("k-means rerun")
        )
        drawn = _record_batches(patch)
        b = pretrain(b_folder, config, variants=variants)
    assert drawn == [("centroid", 4), ("centroid", 5)] + [
        ("dense-continued", s) for s in range(config.sparse_steps)
    ]

    assert b == {v: b_folder / p.relative_to(tmp_path / "a") for v, p in a.items()}
    for folder in ("dense/model", "centroid/model", "dense-continued/model"):
        _assert_same_weights(tmp_path / "a" / folder, b_folder / folder)
    assert torch.equal(
        load_file(str(tmp_path / "a" / "centroids.safetensors"))["centroids"],
        load_file(str(b_folder / "centroids.safetensors"))["centroids"],
    )
    assert not list(b_folder.rglob("checkpoint.safetensors"))
    assert not list(b_folder.rglob("*.tmp"))
    for stage in ("dense", "centroid"):
        resumed, plain = _history(b_folder / stage), _history(tmp_path / "a" / stage)
        assert [e["step"] for e in resumed] == [e["step"] for e in plain]
        assert [e["val_nll"] for e in resumed] == [e["val_nll"] for e in plain]


def test_resumed_history_matches_the_uninterrupted_one(tmp_path, monkeypatch):
    # the history a run writes should not depend on whether it was interrupted:
    # the train NLL logged at step 6 averages steps 4-6 uninterrupted, but only
    # the steps run since the resume (5-6) after resuming from step 4
    config = _config(dense_steps=6, sparse_steps=1)
    pretrain(tmp_path / "a", config, variants=("dense",))
    with monkeypatch.context() as patch:
        _interrupt_at(patch, "dense", 5)
        with pytest.raises(KeyboardInterrupt):
            pretrain(tmp_path / "b", config, variants=("dense",))
    pretrain(tmp_path / "b", config, variants=("dense",))
    _assert_same_weights(
        tmp_path / "a" / "dense" / "model", tmp_path / "b" / "dense" / "model"
    )
    assert _history(tmp_path / "b" / "dense") == _history(tmp_path / "a" / "dense")


def test_a_finished_run_trains_nothing_when_rerun(tmp_path, monkeypatch):
    config = _config(dense_steps=3, sparse_steps=2)
    variants = ("centroid", "linear", "dense")
    first = pretrain(tmp_path, config, variants=variants)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    _forbid_training(monkeypatch)
    drawn = _record_batches(monkeypatch)
    again = pretrain(tmp_path, config, variants=variants)
    assert again == first
    assert drawn == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_adding_a_variant_trains_only_its_stage(tmp_path, monkeypatch):
    config = _config(dense_steps=3, sparse_steps=2)
    pretrain(tmp_path, config, variants=("linear",))
    dense_weights = (tmp_path / "dense" / "model" / "model.safetensors").read_bytes()
    drawn = _record_batches(monkeypatch)
    paths = pretrain(tmp_path, config, variants=("linear", "dense"))
    assert drawn == [("dense-continued", 0), ("dense-continued", 1)]
    assert set(paths) == {"linear", "dense"}
    assert (tmp_path / "dense" / "model" / "model.safetensors").read_bytes() == (
        dense_weights
    )
    assert not (tmp_path / "centroids.safetensors").exists()  # no centroid variant


def test_a_folder_of_another_run_is_refused_naming_the_setting(tmp_path, monkeypatch):
    config = _config(dense_steps=2, sparse_steps=1)
    pretrain(tmp_path, config, variants=("dense",))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match=r"other settings \(\['learning_rate'\]\)"):
        pretrain(tmp_path, dataclasses.replace(config, learning_rate=5e-4))
    with pytest.raises(ValueError, match=r"\['seed', 'sparse_steps'\]"):
        pretrain(tmp_path, dataclasses.replace(config, seed=1, sparse_steps=2))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- settings
def test_settings_round_trip_through_json():
    config = _config(mask_ratio=(0.2, 0.4), real_fraction=0.25, seed=3)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["mask_ratio"] == [0.2, 0.4]
    again = PretrainConfig.from_dict(data)
    assert again == config
    assert again.mask_ratio == (0.2, 0.4)
    assert PretrainConfig.from_dict({}) == PretrainConfig()


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown pretraining settings \['bogus'\]"):
        PretrainConfig.from_dict({**TINY.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"real_fraction": 1.5}, "real_fraction"),
        ({"real_fraction": -0.1}, "real_fraction"),
        ({"dense_steps": 0}, "dense_steps"),
        ({"sparse_steps": -3}, "sparse_steps"),
        ({"dense_steps": True}, "dense_steps"),
        ({"sparse_steps": 2.0}, "sparse_steps"),
        ({"synthetic_series": 0}, "synthetic_series"),
        ({"eval_every": 0}, "eval_every"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"kmeans_windows": 1}, "fewer tokens than experts"),
        ({"d_model": 100}, "d_model must be a multiple of 64"),
        ({"gate_selection": "random"}, "gate_selection"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"mask_ratio": (0.6, 0.2)}, "mask_ratio"),
        ({"min_length": 80}, "min_length"),
    ],
)
def test_invalid_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_series_shorter_than_a_window_end_are_refused_up_front():
    # every window ends after at least patch_size + 1 steps, so synthetic series
    # of min_length <= patch_size cannot be drawn from: the settings should be
    # refused, not crash the run in numpy after run.json was written
    with pytest.raises(ValueError, match=r"min_length|patch_size"):
        _config(min_length=10)
    with pytest.raises(ValueError, match=r"min_length|patch_size"):
        _config(min_length=16, max_length=16)


def test_model_configs_of_the_variants():
    sparse, linear, dense = (
        TINY.model_config(v) for v in ("centroid", "linear", "dense")
    )
    assert (sparse.gate, linear.gate) == ("centroid", "linear")
    assert sparse.patch_sizes == linear.patch_sizes == (TINY.patch_size,)
    assert sparse.max_seq_len >= TINY.window_length // TINY.patch_size
    assert (dense.num_experts, dense.d_ff) == (
        1,
        TINY.d_ff * TINY.num_experts_per_token,
    )
    assert TINY.window_length == 48
    # the warm-up never takes a whole stage
    assert TINY.training_config(1).warmup_steps == 0
    assert TINY.training_config(100).warmup_steps == TINY.warmup_steps


# ----------------------------------------------------------------- batches
def _pool(n_synthetic=10, n_real=5, lengths=(17, 30, 64, 200)):
    rng = np.random.default_rng(0)

    def series(i):
        n = lengths[i % len(lengths)]
        return TrainingSeries(rng.normal(size=(n, 1)), np.ones((n, 1), dtype=bool))

    items = [series(i) for i in range(n_synthetic + n_real)]
    return run._Pool(items, n_synthetic, [], [])


def test_step_windows_depend_only_on_seed_stage_and_step():
    pool = _pool()
    lengths = [len(s) for s in pool.series]
    config = _config(real_fraction=0.3, batch_size=16)
    first = run._step_windows(pool, lengths, config, "dense", 3)
    assert len(first) == config.batch_size
    assert run._step_windows(pool, lengths, config, "dense", 3) == first
    assert run._step_windows(pool, lengths, config, "dense", 4) != first
    assert run._step_windows(pool, lengths, config, "centroid", 3) != first
    other_seed = dataclasses.replace(config, seed=1)
    assert run._step_windows(pool, lengths, other_seed, "dense", 3) != first
    for stage in run._STAGE_IDS:
        for step in range(20):
            for w in run._step_windows(pool, lengths, config, stage, step):
                assert 0 <= w.series < len(pool.series)
                assert config.patch_size < w.end <= lengths[w.series]
                assert w.length == min(w.end, config.window_length)
                assert w.prediction_tokens >= 1


def test_real_fraction_picks_the_real_part_of_the_pool():
    pool = _pool()
    lengths = [len(s) for s in pool.series]

    def indices(fraction, pool=pool, lengths=lengths):
        config = _config(real_fraction=fraction, batch_size=64)
        return [
            w.series
            for step in range(5)
            for w in run._step_windows(pool, lengths, config, "dense", step)
        ]

    assert all(i >= pool.n_synthetic for i in indices(1.0))
    assert all(i < pool.n_synthetic for i in indices(0.0))
    mixed = np.array(indices(0.5))
    assert 0.3 < (mixed >= pool.n_synthetic).mean() < 0.7
    # without real series every window is synthetic whatever the fraction
    only_synthetic = _pool(n_real=0)
    synthetic = indices(1.0, only_synthetic, [len(s) for s in only_synthetic.series])
    assert all(i < only_synthetic.n_synthetic for i in synthetic)


def test_real_series_are_trained_on_when_real_fraction_is_positive(
    tmp_path, monkeypatch
):
    config = _config(real_fraction=0.5, dense_steps=2, sparse_steps=1)
    seen = []
    original = run._loss

    def spy(model, series, windows, *args):
        seen.append((len(series), [w.series for w in windows]))
        return original(model, series, windows, *args)

    monkeypatch.setattr(run, "_loss", spy)
    pretrain(tmp_path, config, variants=("dense",))
    assert len(seen) == config.dense_steps + config.sparse_steps
    pool_size = seen[0][0]
    assert pool_size > config.synthetic_series  # the corpus joined the pool
    drawn = np.array([i for _, indices in seen for i in indices])
    assert (drawn >= config.synthetic_series).any()
    assert (drawn < config.synthetic_series).any()
    assert (drawn < pool_size).all()


# --------------------------------------------------------------------- CLI
def _cli_settings(config: PretrainConfig) -> list[str]:
    args = []
    for key, value in config.to_dict().items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def test_cli_runs_and_prints_the_variant_checkpoints(tmp_path, capsys):
    config = _config(dense_steps=2, sparse_steps=1)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(_config(dense_steps=99, sparse_steps=1).to_dict()))
    out = tmp_path / "run"
    argv = [str(out), "--variants", "linear", "dense", "--threads", "1"]
    status = main([*argv, "--config", str(settings), "--set", "dense_steps=2"])
    assert status == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"linear: {out / 'linear' / 'model'}",
        f"dense: {out / 'dense-continued' / 'model'}",
    ]
    # --set overrides the file: the run holds exactly `config`
    assert json.loads((out / "run.json").read_text()) == config.to_dict()
    assert MoiraiMoEModel.from_pretrained(out / "linear" / "model").config.gate == (
        "linear"
    )
    # the same settings spelled with --set only resume the finished run
    assert main([*argv, *_cli_settings(config)]) == 0
    assert capsys.readouterr().out.splitlines() == printed


def test_cli_reports_bad_settings_with_status_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([out, "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main([out, "--set", "noequals"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([out, "--set", "dense_steps=0"]) == 2
    assert "dense_steps" in capsys.readouterr().err
    assert main([out, "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_folder_of_another_run_with_status_2(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(_config(seed=5).to_dict()))
    assert main([str(out), *_cli_settings(_config())]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err
    assert "seed" in err


def test_module_entry_point_prints_help():
    done = subprocess.run(
        [sys.executable, "-m", "moirai_moe_sk.pretrain", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m moirai_moe_sk.pretrain" in done.stdout
    assert "--variants" in done.stdout
    assert "--set" in done.stdout


# ------------------------------------------- TSMixup, multivariate, continuing
def test_mixup_and_multivariate_windows_come_from_their_parts_of_the_pool():
    config = _config(
        real_fraction=0.0, mixup_fraction=0.5, multivariate_fraction=0.3, batch_size=32
    )
    pool = run._build_pool(config)
    assert pool.n_mixup > 0
    assert pool.multivariate
    lengths = [len(s) for s in pool.series]
    first_mixup = pool.n_synthetic + pool.n_real  # the corpus is a mixing source
    mixup = range(first_mixup, first_mixup + pool.n_mixup)
    multi = {i for group in pool.multivariate for i in group}
    kinds = {"mixup": 0, "synthetic": 0, "multivariate": 0}
    for step in range(60):
        windows = run._step_windows(pool, lengths, config, "continued", step)
        layouts = {
            (
                pool.series[w.series].target.shape[1],
                pool.series[w.series].num_covariates,
            )
            for w in windows
        }
        assert len(layouts) == 1  # a batch holds windows of one shape
        if windows[0].series in multi:
            assert all(w.series in multi for w in windows)
            kinds["multivariate"] += 1
            continue
        for w in windows:
            kinds["mixup" if w.series in mixup else "synthetic"] += 1
            assert w.series not in multi
    assert 5 <= kinds["multivariate"] <= 35  # about 30% of 60 batches
    share = kinds["mixup"] / (kinds["mixup"] + kinds["synthetic"])
    assert 0.35 < share < 0.65
    # a multivariate and a covariate layout both occur
    layouts = {
        (pool.series[g[0]].target.shape[1], pool.series[g[0]].num_covariates)
        for g in pool.multivariate
    }
    assert (1, 1) in layouts
    assert any(dim > 1 for dim, _ in layouts)


def test_the_original_recipe_draws_the_same_windows_as_before():
    # with the new fractions at 0, _step_windows keeps the original stream
    # (real/synthetic draw, real index, synthetic index), so committed runs
    # of the original recipe reproduce
    config = _config(real_fraction=0.0)
    pool = run._build_pool(config)
    assert pool.n_mixup == 0
    assert not pool.multivariate
    lengths = [len(s) for s in pool.series]
    windows = run._step_windows(pool, lengths, config, "dense", 2)
    rng = np.random.default_rng([config.seed, run._STAGE_IDS["dense"], 2])
    rng.random(config.batch_size)
    rng.integers(0, 1, config.batch_size)
    indices = rng.integers(0, pool.n_synthetic, config.batch_size)
    assert [w.series for w in windows] == indices.tolist()


def test_a_run_continues_from_a_checkpoint_and_resumes(tmp_path, monkeypatch):
    base = pretrain(tmp_path / "base", _config())["centroid"]
    config = _config(init_checkpoint=str(base), mixup_fraction=0.2, sparse_steps=5)
    _interrupt_at(monkeypatch, "continued", 3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "cont", config)
    monkeypatch.undo()
    out = pretrain(tmp_path / "cont", config)["centroid"]
    again = pretrain(tmp_path / "fresh", config)["centroid"]
    _assert_same_weights(out, again)  # resumed = uninterrupted
    start, trained = _weights(base), _weights(out)
    assert any(not torch.equal(start[k], trained[k]) for k in start)
    assert torch.equal(start["encoder.centroid"], trained["encoder.centroid"])
    assert not (tmp_path / "cont" / "dense").exists()  # no dense stage


def test_continuing_needs_the_checkpoints_shape(tmp_path):
    base = pretrain(tmp_path / "base", _config())["centroid"]
    with pytest.raises(ValueError, match="d_model: checkpoint 64, run 128"):
        pretrain(tmp_path / "x", _config(init_checkpoint=str(base), d_model=128))
    with pytest.raises(ValueError, match="variants"):
        pretrain(
            tmp_path / "y",
            _config(init_checkpoint=str(base)),
            variants=("centroid", "linear"),
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mixup_fraction": 1.5}, "mixup_fraction must be a number in"),
        ({"multivariate_fraction": -0.1}, "multivariate_fraction must be a number in"),
        ({"real_fraction": 0.6, "mixup_fraction": 0.6}, "at most 1"),
        ({"kind_weights": {"seasonl": 1.0}}, "weights name kinds"),
    ],
)
def test_new_data_settings_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)
