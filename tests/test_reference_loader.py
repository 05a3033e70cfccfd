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


# Regenerating the fixtures with the live reference must give the committed ones,
# so the parity tests in tests/model/test_parity.py compare against uni2ts itself.
# Integer and boolean tensors (packed ids, masks, expert choices), every key, dtype
# and shape, and every non-float JSON field must agree exactly. Float values agree
# to float32 rounding only: the reference's CPU kernels (oneDNN/MKL) pick their
# reduction order by the machine's instruction set, so the last bits of a regenerated
# float differ between CPUs (seen in CI: up to 3e-6 of a tensor's largest value).
# A float tensor must agree within 1e-5 of its largest value, the parity tests'
# own rule for sampled outputs; a JSON float within 1e-5 relative or absolute.
FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-5
# fields that record the machine, not the reference's output; of "versions" only
# the reference and torch must match (the other packages are pinned to ranges)
MACHINE_FIELDS = {"command", "folder"}
PINNED_VERSIONS = ("uni2ts", "torch")


def _assert_same_tensors(fresh_file: Path, committed_file: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    fresh, committed = load_file(fresh_file), load_file(committed_file)
    assert sorted(fresh) == sorted(committed), committed_file.name
    for key, want in committed.items():
        got = fresh[key]
        where = f"{committed_file.name}:{key}"
        assert got.dtype == want.dtype, where
        assert got.shape == want.shape, where
        if np.issubdtype(want.dtype, np.floating):
            atol = FLOAT_ATOL * float(np.nanmax(np.abs(want), initial=1.0))
            np.testing.assert_allclose(
                got, want, rtol=FLOAT_RTOL, atol=atol, err_msg=where
            )
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)


def _assert_same_json(fresh, committed, where: str = "") -> None:
    if where.endswith("/versions"):
        for package in PINNED_VERSIONS:
            assert fresh.get(package) == committed.get(package), f"{where}/{package}"
    elif isinstance(committed, dict):
        assert isinstance(fresh, dict), where
        assert sorted(fresh) == sorted(committed), where
        for key in committed:
            if key not in MACHINE_FIELDS:
                _assert_same_json(fresh[key], committed[key], f"{where}/{key}")
    elif isinstance(committed, list):
        assert isinstance(fresh, list), where
        assert len(fresh) == len(committed), where
        for i, (a, b) in enumerate(zip(fresh, committed, strict=True)):
            _assert_same_json(a, b, f"{where}[{i}]")
    elif isinstance(committed, float) and not isinstance(committed, bool):
        assert isinstance(fresh, (int, float)), where
        assert fresh == pytest.approx(committed, rel=FLOAT_RTOL, abs=FLOAT_ATOL), where
    else:
        assert fresh == committed, where


def _assert_same_fixture(fresh_file: Path, committed_file: Path) -> None:
    if committed_file.suffix == ".safetensors":
        _assert_same_tensors(fresh_file, committed_file)
    else:
        _assert_same_json(
            json.loads(fresh_file.read_text()),
            json.loads(committed_file.read_text()),
            committed_file.name,
        )


def test_fixture_comparison_catches_a_changed_value(tmp_path):
    # guards the guard: a change well above float rounding, a flipped mask bit or
    # a changed JSON count must each fail the comparison used below
    import numpy as np
    from safetensors.numpy import load_file, save_file

    source = PARITY / "univariate.safetensors"
    _assert_same_fixture(source, source)
    tensors = load_file(source)
    floats = next(k for k, v in tensors.items() if np.issubdtype(v.dtype, np.floating))
    ints = next(
        k for k, v in tensors.items() if not np.issubdtype(v.dtype, np.floating)
    )
    for key, change in ((floats, lambda a: a * (1 + 1e-3)), (ints, lambda a: 1 - a)):
        changed = dict(tensors)
        changed[key] = np.ascontiguousarray(change(tensors[key])).astype(
            tensors[key].dtype
        )
        save_file(changed, tmp_path / "changed.safetensors")
        with pytest.raises(AssertionError):
            _assert_same_fixture(tmp_path / "changed.safetensors", source)
    # float rounding passes
    nudged = dict(tensors)
    nudged[floats] = np.nextafter(tensors[floats], np.inf).astype(tensors[floats].dtype)
    save_file(nudged, tmp_path / "nudged.safetensors")
    _assert_same_fixture(tmp_path / "nudged.safetensors", source)
    manifest = json.loads((PARITY / "manifest.json").read_text())
    manifest["model"]["num_parameters"] += 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AssertionError):
        _assert_same_fixture(tmp_path / "manifest.json", PARITY / "manifest.json")


@pytest.mark.reference
def test_committed_parity_fixtures_are_what_uni2ts_produces_now(
    reference_python, tmp_path
):
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
        _assert_same_fixture(tmp_path / name, committed / name)


@pytest.mark.reference
def test_committed_predictor_fixtures_are_what_uni2ts_produces_now(
    reference_python, tmp_path
):
    script = SCRIPT.with_name("make_predictor_fixtures.py")
    result = _run(
        reference_python, script, "--out", tmp_path, "--tiny", PARITY / "tiny"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("predictor.safetensors", "predictor.json"):
        _assert_same_fixture(tmp_path / name, PARITY / name)
