"""Hardening of checkpoint saving and loading: torn saves, crafted configs, bad values."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from moirai_moe_sk import _cache, checkpoint
from moirai_moe_sk._device import resolve_device
from moirai_moe_sk.exceptions import CheckpointError, ConfigError
from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
from moirai_moe_sk.model.config import MAX_SEQ_LEN_LIMIT

from _helpers import make_tiny_model


def _same_weights(a: MoiraiMoEModel, b: MoiraiMoEModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _crafted(tiny_checkpoint: Path, tmp_path: Path, **fields) -> Path:
    folder = tmp_path / "crafted"
    shutil.copytree(tiny_checkpoint, folder)
    data = json.loads((folder / "config.json").read_text())
    data.update(fields)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


# ------------------------------------------------ 1. the folder swapped whole
@pytest.fixture
def old_and_new(tmp_path: Path) -> tuple[Path, MoiraiMoEModel, MoiraiMoEModel]:
    """A saved two-layer checkpoint, and a one-layer model: a mix cannot load."""
    old, new = make_tiny_model(seed=0), make_tiny_model(seed=1, num_layers=1)
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    return folder, old, new


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_failed_rename_leaves_the_previous_checkpoint(
    old_and_new, monkeypatch: pytest.MonkeyPatch, failing_call: int
):
    folder, old, new = old_and_new
    real_replace, calls = os.replace, []

    def replace(src, dst, **kwargs):
        calls.append((src, dst))
        if len(calls) == failing_call:
            raise OSError(errno.EIO, "injected rename failure")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected rename failure"):
        new.save_pretrained(folder)
    monkeypatch.undo()
    assert _same_weights(MoiraiMoEModel.from_pretrained(folder), old)
    # no staging or set-aside folder left next to it
    assert [p.name for p in folder.parent.iterdir()] == ["ckpt"]


def test_a_failed_weights_write_leaves_the_previous_checkpoint(
    old_and_new, monkeypatch: pytest.MonkeyPatch
):
    import safetensors.torch

    folder, old, new = old_and_new

    def broken_save_file(*args, **kwargs):
        raise OSError(errno.ENOSPC, "disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        new.save_pretrained(folder)
    monkeypatch.undo()
    assert _same_weights(MoiraiMoEModel.from_pretrained(folder), old)
    assert [p.name for p in folder.parent.iterdir()] == ["ckpt"]


def test_a_save_is_staged_in_a_sibling_folder_and_swapped_in(
    old_and_new, monkeypatch: pytest.MonkeyPatch
):
    folder, _, new = old_and_new
    real_replace, moves = os.replace, []

    def replace(src, dst, **kwargs):
        moves.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    new.save_pretrained(folder)
    monkeypatch.undo()
    # only folders are renamed, never a file inside the checkpoint
    assert all(name.startswith("ckpt") for move in moves for name in move)
    assert moves[-1][0].startswith("ckpt.tmp-")
    assert moves[-1][1] == "ckpt"
    assert _same_weights(MoiraiMoEModel.from_pretrained(folder), new)
    assert [p.name for p in folder.parent.iterdir()] == ["ckpt"]


def test_other_files_in_the_folder_are_kept(old_and_new):
    folder, _, new = old_and_new
    (folder / "README.md").write_text("my notes")
    (folder / "runs").mkdir()
    (folder / "runs" / "log.txt").write_text("epoch 1")
    (folder / "link").symlink_to("README.md")
    new.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "link",
        "model.safetensors",
        "runs",
    ]
    assert (folder / "README.md").read_text() == "my notes"
    assert (folder / "runs" / "log.txt").read_text() == "epoch 1"
    assert (folder / "link").readlink() == Path("README.md")
    assert _same_weights(MoiraiMoEModel.from_pretrained(folder), new)


def test_saving_through_a_symlink_replaces_its_target(old_and_new, tmp_path: Path):
    folder, _, new = old_and_new
    link = tmp_path / "latest"
    link.symlink_to(folder)
    new.save_pretrained(link)
    assert link.is_symlink()
    assert _same_weights(MoiraiMoEModel.from_pretrained(folder), new)


def test_saving_onto_a_file_is_refused(tmp_path: Path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"x")
    with pytest.raises(ValueError, match="it is a file"):
        make_tiny_model().save_pretrained(target)


def test_concurrent_writers_and_a_reader_never_see_a_mix(old_and_new):
    folder, old, new = old_and_new
    (folder / "README.md").write_text("kept")
    expected = {old.config: old, new.config: new}
    stop, errors = threading.Event(), []

    def write(model: MoiraiMoEModel) -> None:
        try:
            while not stop.is_set():
                model.save_pretrained(folder)
        except Exception as err:  # noqa: BLE001  (reported by the main thread)
            errors.append(err)

    writers = [threading.Thread(target=write, args=(m,)) for m in (old, new)]
    for thread in writers:
        thread.start()
    seen = set()
    try:
        for _ in range(50):
            loaded = MoiraiMoEModel.from_pretrained(folder)
            assert loaded.config in expected
            assert _same_weights(loaded, expected[loaded.config])
            seen.add(loaded.config.num_layers)
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    assert not errors, errors
    assert seen  # every one of the 50 loads succeeded
    assert (folder / "README.md").read_text() == "kept"
    assert [p.name for p in folder.parent.iterdir()] == ["ckpt"]


def test_a_reader_waits_for_a_swap_in_progress(old_and_new):
    folder, old, _ = old_and_new
    aside = folder.with_name("ckpt.old-0123abcd")
    folder.rename(aside)  # a writer between its two renames

    def finish() -> None:
        time.sleep(0.05)
        aside.rename(folder)

    thread = threading.Thread(target=finish)
    thread.start()
    try:
        loaded = MoiraiMoEModel.from_pretrained(folder)
    finally:
        thread.join()
    assert _same_weights(loaded, old)


# ---------------------------------------- 2. crafted sizes, checked up front
@pytest.mark.parametrize(
    ("field", "value", "found"),
    [("num_layers", 10**8, 2), ("num_experts", 10**6, 8), ("d_model", 64 * 10**5, 64)],
)
def test_config_sizes_must_match_the_weights_header(
    tiny_checkpoint: Path, tmp_path: Path, field: str, value: int, found: int
):
    folder = _crafted(tiny_checkpoint, tmp_path, **{field: value})
    start = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match=rf"{field} is {value} in config\.json but {found} in model\.safetensors",
    ):
        MoiraiMoEModel.from_pretrained(folder)
    assert time.perf_counter() - start < 1.0


def test_max_seq_len_is_bounded(tiny_checkpoint: Path, tmp_path: Path):
    folder = _crafted(tiny_checkpoint, tmp_path, max_seq_len=10**10)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"max_seq_len must be at most 1048576"):
        MoiraiMoEModel.from_pretrained(folder)
    assert time.perf_counter() - start < 1.0
    assert MoiraiMoEConfig(max_seq_len=MAX_SEQ_LEN_LIMIT).max_seq_len == 2**20
    with pytest.raises(ConfigError, match="max_seq_len must be at most"):
        MoiraiMoEConfig(max_seq_len=MAX_SEQ_LEN_LIMIT + 1)


# ------------------------------------------------------ 3. non-finite weights
def test_non_finite_weights_are_refused_by_name(tiny_checkpoint: Path, tmp_path: Path):
    folder = _crafted(tiny_checkpoint, tmp_path)
    state = load_file(folder / "model.safetensors")
    state["in_proj.weight"][0, 0, 0] = float("nan")
    state["encoder.norm.weight"][3] = float("inf")
    state["encoder.layers.1.ffn.experts.5.fc2.weight"][0, 0] = float("-inf")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"NaN or infinite values in 3 tensor\(s\): "
        r"encoder\.layers\.1\.ffn\.experts\.5\.fc2\.weight, "
        r"encoder\.norm\.weight, in_proj\.weight",
    ):
        MoiraiMoEModel.from_pretrained(folder)


def test_many_non_finite_tensors_are_counted(tiny_checkpoint: Path, tmp_path: Path):
    folder = _crafted(tiny_checkpoint, tmp_path)
    state = {
        k: torch.full_like(v, float("nan"))
        for k, v in load_file(folder / "model.safetensors").items()
    }
    save_file(state, folder / "model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=rf"in {len(state)} tensor\(s\): .*\({len(state)} in all\)",
    ):
        MoiraiMoEModel.from_pretrained(folder)


# ----------------------------------------------------------- 4. field types
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"patch_sizes": [16.0]},
            (
                r"patch_sizes must be a list of positive integers, "
                r"got \[16\.0\] \(bad element 16\.0 of type float\)"
            ),
        ),
        ({"patch_sizes": [True]}, r"patch_sizes .* \(bad element True of type bool\)"),
        ({"patch_sizes": ["16"]}, r"patch_sizes .* \(bad element '16' of type str\)"),
        ({"patch_sizes": [0]}, r"patch_sizes .* \(bad element 0 of type int\)"),
        ({"d_model": 64.0}, r"d_model must be a positive integer, got 64\.0 \(float\)"),
        (
            {"num_layers": True},
            r"num_layers must be a positive integer, got True \(bool\)",
        ),
        ({"d_ff": "64"}, r"d_ff must be a positive integer, got '64' \(str\)"),
        ({"num_experts": 8.5}, r"num_experts must be a positive integer, got 8\.5"),
        ({"num_experts_per_token": False}, r"num_experts_per_token must be a positive"),
        ({"dropout_p": "0"}, r"dropout_p must be a number, got '0' \(str\)"),
        (
            {"attn_dropout_p": True},
            r"attn_dropout_p must be a number, got True \(bool\)",
        ),
        ({"scaling": 1}, r"scaling must be a bool \(true or false\), got 1 \(int\)"),
        ({"gate": 1}, r"gate must be a string, got 1 \(int\)"),
        ({"gate_selection": None}, r"gate_selection must be a string, got None"),
        (
            {"context_length": 512.0},
            r"context_length must be a positive integer or None",
        ),
    ],
)
def test_config_json_field_types_are_checked(
    tiny_checkpoint: Path, tmp_path: Path, fields, message
):
    folder = _crafted(tiny_checkpoint, tmp_path, **fields)
    with pytest.raises(CheckpointError, match=message) as info:
        MoiraiMoEModel.from_pretrained(folder)
    assert isinstance(info.value.__cause__, ConfigError)


def test_constructor_field_types_are_checked():
    with pytest.raises(ConfigError, match=r"mixture_components must be a list of str"):
        MoiraiMoEConfig(mixture_components="student_t")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"normal_fixed_scale must be a number"):
        MoiraiMoEConfig(normal_fixed_scale="1e-3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['d_modle'\]"):
        MoiraiMoEConfig.from_dict({**MoiraiMoEConfig().to_dict(), "d_modle": 64})
    # floats accept integers, and numbers are normalised
    sizes: Any = [16]  # a list, as read from config.json
    config = MoiraiMoEConfig(dropout_p=0, normal_fixed_scale=1, patch_sizes=sizes)
    assert isinstance(config.dropout_p, float)
    assert isinstance(config.normal_fixed_scale, float)
    assert config.patch_sizes == (16,)
    assert config == MoiraiMoEConfig(normal_fixed_scale=1.0)


# --------------------------------------------------------- 5. missing folders
@pytest.mark.parametrize("name", ["./nope", "~/surely-no-such-folder", "a/b/c", "../x"])
def test_a_missing_path_is_reported_as_a_missing_folder(name: str):
    with pytest.raises(CheckpointError, match=r"checkpoint folder .* does not exist"):
        MoiraiMoEModel.from_pretrained(name)


def test_an_absolute_missing_path_and_a_file_are_named(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"'.*nope' does not exist"):
        checkpoint.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is a file, not a folder"):
        checkpoint.resolve_checkpoint(tmp_path / "config.json")


def test_hub_ids_are_not_taken_for_paths():
    assert not checkpoint._looks_like_path("Salesforce/moirai-moe-1.0-R-small")
    assert not checkpoint._looks_like_path("moirai-moe-sk-tiny")
    assert checkpoint._looks_like_path("./Salesforce/moirai")
    assert checkpoint._looks_like_path("/abs/moirai")


# ---------------------------------------------------------- 6. save dtypes
@pytest.mark.parametrize(
    ("dtype", "stored"),
    [
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("float32", torch.float32),
        ("torch.float16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_save_dtype_as_a_string_or_torch_dtype(tmp_path: Path, dtype, stored):
    model = make_tiny_model()
    model.save_pretrained(tmp_path / "ckpt", dtype=dtype)
    state = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert state["in_proj.weight"].dtype == stored
    assert state["encoder.centroid"].dtype == torch.float64  # kept
    loaded = MoiraiMoEModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.in_proj.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("dtype", "error"),
    [
        ("int8", ValueError),
        ("half", ValueError),
        (torch.int8, ValueError),
        (torch.float8_e4m3fn, ValueError),
        (16, TypeError),
    ],
)
def test_unsupported_save_dtypes_name_the_allowed_ones(tmp_path: Path, dtype, error):
    with pytest.raises(error, match=r"'float16', 'bfloat16', 'float32', 'float64'"):
        make_tiny_model().save_pretrained(tmp_path / "ckpt", dtype=dtype)
    assert not (tmp_path / "ckpt").exists()


# ------------------------------------------------------------------ 7. devices
def test_resolve_device_accepts_the_usual_forms():
    default = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == torch.device(default)
    assert resolve_device("auto") == torch.device(default)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("meta", r"device 'meta' cannot hold a model \(a meta tensor has no data\)"),
        (torch.device("meta"), r"device 'meta' cannot hold a model"),
        ("tpu-please", r"unknown device 'tpu-please'; available here: auto, cpu"),
        ("xla", r"device 'xla' cannot hold a model; available here: auto, cpu"),
    ],
)
def test_resolve_device_refuses_unusable_devices(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available")
def test_resolve_device_refuses_mps_without_mps():
    with pytest.raises(ValueError, match=r"device 'mps' .* MPS is not available"):
        resolve_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_resolve_device_refuses_cuda_without_cuda():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"'{device}' .* CUDA is not available"):
            resolve_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resolve_device_checks_the_cuda_index():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=rf"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_resolve_device_refuses_other_types():
    with pytest.raises(TypeError, match="device must be None, a string or a torch"):
        resolve_device(0)  # type: ignore[arg-type]


def test_loading_to_meta_blames_the_device_not_the_checkpoint(tiny_checkpoint: Path):
    with pytest.raises(ValueError, match="device 'meta' cannot hold") as info:
        MoiraiMoEModel.from_pretrained(tiny_checkpoint, map_location="meta")
    assert not isinstance(info.value, CheckpointError)
    with pytest.raises(ValueError, match="device 'meta' cannot hold"):
        _cache.get_model(tiny_checkpoint, device="meta")
