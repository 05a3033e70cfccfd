"""The reference implementation reads checkpoints we save (needs the uni2ts venv)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from _helpers import PARITY, make_tiny_model

SCRIPT = Path(__file__).parents[1] / "scripts" / "make_parity_fixtures.py"


def _run(python: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.reference
def test_uni2ts_from_pretrained_strict_reads_our_checkpoint(reference_python, tmp_path):
    folder = tmp_path / "ours"
    make_tiny_model(seed=3, num_experts=32).save_pretrained(folder)
    result = _run(reference_python, SCRIPT, "--check-load", folder)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.reference
def test_uni2ts_rejects_a_checkpoint_with_a_missing_tensor(reference_python, tmp_path):
    # guards the guard: the reference check above must really be strict
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    make_tiny_model(seed=3, num_experts=32).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    del state["encoder.layers.0.ffn.experts.3.fc2.weight"]
    save_file(state, folder / "model.safetensors")
    result = _run(reference_python, SCRIPT, "--check-load", folder)
    assert result.returncode != 0


@pytest.mark.reference
def test_committed_parity_fixtures_are_what_uni2ts_produces_now(
    reference_python, tmp_path
):
    # regenerating with the live reference gives byte-identical fixtures, so the
    # parity tests in tests/model/test_parity.py compare against uni2ts itself
    result = _run(reference_python, SCRIPT, "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    committed = PARITY
    names = sorted(
        p.relative_to(committed).as_posix()
        for p in committed.rglob("*")
        if p.is_file()
        and p.suffix in {".json", ".safetensors"}
        and not p.name.startswith("predictor")
    )
    assert "tiny/model.safetensors" in names
    for name in names:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.reference
def test_committed_predictor_fixtures_are_what_uni2ts_produces_now(
    reference_python, tmp_path
):
    script = SCRIPT.with_name("make_predictor_fixtures.py")
    result = _run(
        reference_python, script, "--out", tmp_path, "--tiny", PARITY / "tiny"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    name = "predictor.safetensors"
    assert (tmp_path / name).read_bytes() == (PARITY / name).read_bytes()
    fresh, committed = (
        json.loads((folder / "predictor.json").read_text())
        for folder in (tmp_path, PARITY)
    )
    for meta in (fresh, committed):
        meta["model"].pop("folder")  # records the path it was given
    assert fresh == committed
