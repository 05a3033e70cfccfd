"""``python -m moirai_moe_sk.pretrain``: bad input is one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from moirai_moe_sk.pretrain.run import PretrainConfig, main

#: a run of a few seconds (tests/pretrain/test_run.py's tiny settings, shorter)
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
    dense_steps=2,
    sparse_steps=1,
    batch_size=8,
    warmup_steps=0,
    kmeans_windows=16,
    eval_every=2,
    checkpoint_every=2,
    real_fraction=0.0,
)


def _settings(**overrides) -> list[str]:
    args = []
    for key, value in {**TINY.to_dict(), **overrides}.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def _refused(capsys, argv, *named, status=2) -> str:
    """Run ``main(argv)``; check the status and a one-line error naming ``named``."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moirai_moe_sk.pretrain", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("item", "named"),
    [
        ("patch_size=0", ("patch_size", "0")),  # was: ZeroDivisionError
        ("real_fraction=x", ("real_fraction", "'x'")),
        ("real_fraction=true", ("real_fraction", "True")),
        ("mask_ratio=0.3", ("mask_ratio", "0.3")),  # was: 'float' not iterable
        ("mask_ratio=[0.1,0.2,0.3]", ("mask_ratio", "0.3")),
        ("validation_series=-3", ("validation_series", "-3")),
        ("kmeans_windows=1", ("kmeans_windows", "1", "num_experts")),
        ("warmup_steps=1.5", ("warmup_steps", "1.5")),
        ("seed=18446744073709551621", ("seed", "18446744073709551621")),
        ("init_checkpoint=5", ("init_checkpoint", "5")),
        ("kind_weights=5", ("kind_weights", "5")),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, capsys, item, named):
    out = tmp_path / "run"
    _refused(capsys, [str(out), *_settings(), "--set", item], *named)
    assert not out.exists()


def test_a_corrupt_config_file_is_named(tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text("{not json")
    _refused(
        capsys, [str(tmp_path / "run"), "--config", str(settings)], "settings.json"
    )
    settings.write_text("[1, 2]")
    _refused(capsys, [str(tmp_path / "run"), "--config", str(settings)], "JSON object")


# -------------------------------------------------------------------- device
@pytest.mark.parametrize("device", ["bogus", "meta"])
def test_an_unknown_device_is_refused_before_anything_is_written(
    tmp_path, capsys, device
):
    out = tmp_path / "run"
    _refused(capsys, [str(out), *_settings(), "--device", device], repr(device))
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    _refused(capsys, [str(out), *_settings(), "--device", "cuda"], "'cuda'", "CUDA")
    assert not out.exists()


# ------------------------------------------------------------- output folder
def test_an_output_that_is_a_file_is_refused(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("keep me")
    _refused(capsys, [str(file), *_settings()], str(file), "not a folder")
    _refused(capsys, [str(file / "run"), *_settings()], str(file), "is a file")
    assert file.read_text() == "keep me"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes anywhere",
)
def test_an_unwritable_output_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(capsys, [str(locked / "run"), *_settings()], "not writable")
    finally:
        locked.chmod(0o700)


def test_a_corrupt_run_file_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"d_model": 64,')  # cut short
    _refused(capsys, [str(out), *_settings()], str(out / "run.json"))
    (out / "run.json").write_text("[]")
    _refused(capsys, [str(out), *_settings()], str(out / "run.json"), "JSON object")


# ---------------------------------------------------- refused, then corrected
@pytest.mark.parametrize(
    ("bad", "more"),
    [
        (["--set", "validation_series=-3"], []),
        (["--set", "kmeans_windows=1", "--set", "context_length=64"], []),
        (["--set", f"init_checkpoint={json.dumps('no-such-checkpoint')}"], []),
        ([], ["--device", "bogus"]),
    ],
)
def test_a_refused_run_leaves_the_folder_free_for_the_corrected_one(
    tmp_path, capsys, bad, more
):
    out = tmp_path / "run"
    out.mkdir()  # an existing, empty folder
    assert main([str(out), *_settings(), *bad, *more]) == 2
    assert list(out.iterdir()) == []  # no run.json: nothing written
    capsys.readouterr()
    assert main([str(out), *_settings()]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"centroid: {out / 'centroid' / 'model'}"
    ]
    assert json.loads((out / "run.json").read_text()) == TINY.to_dict()


def test_the_data_pool_is_built_before_the_settings_are_written(
    tmp_path, capsys, monkeypatch
):
    from moirai_moe_sk.pretrain import run

    def no_corpus(**kwargs):
        return []

    monkeypatch.setattr(run, "load_corpus", no_corpus)
    out = tmp_path / "run"
    line = _refused(capsys, [str(out), *_settings(real_fraction=0.5)], status=1)
    assert "real_fraction" in line
    assert not (out / "run.json").exists()


# --------------------------------------------------------- the real command
@pytest.mark.parametrize("threads", ["-1", "0", "two"])
def test_bad_threads_are_a_usage_error(tmp_path, threads):
    done = _cli(str(tmp_path / "run"), "--threads", threads)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"argument --threads: must be a positive integer, got {threads!r}" in (
        done.stderr
    )
    assert not (tmp_path / "run").exists()


def test_the_command_reports_a_bad_setting_in_one_line(tmp_path):
    done = _cli(str(tmp_path / "run"), "--set", "patch_size=0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m moirai_moe_sk.pretrain: error: patch_size must be a positive "
        "integer, got 0"
    )
