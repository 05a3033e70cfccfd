"""The inference-speed benchmark against uni2ts, benchmarks/inference.py."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "inference.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_script()


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--out-dir", str(tmp_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)


def _outputs(tmp_path: Path) -> tuple[str, list[dict], dict]:
    text = (tmp_path / "inference.md").read_text()
    with (tmp_path / "inference.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    raw = json.loads((tmp_path / "inference.json").read_text())
    return text, rows, raw


# --------------------------------------------------------------- pure parts
def test_scaled_panels_are_prefixes_of_the_full_one():
    w1 = bench.WORKLOADS["W1"]
    series = bench.make_series(w1, seed=0)
    again = bench.make_series(w1, seed=0)
    assert len(series) == 1428
    lengths = [len(s) for s in series]
    assert min(lengths) >= 48
    assert max(lengths) <= 126
    for a, b in zip(series, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert w1.series_count(0.05) == 71
    assert w1.series_count(1e-6) == 1
    assert bench.WORKLOADS["W3"].series_count(0.01) == 1
    assert bench.WORKLOADS["W2"].series_count(0.5) == 32


def test_data_round_trips_through_the_file(tmp_path):
    series = bench.make_series(bench.WORKLOADS["W1"], seed=3)[:5]
    path = tmp_path / "d.npz"
    bench.save_data(path, series)
    back = bench.load_data(path)
    assert len(back) == 5
    for a, b in zip(series, back, strict=True):
        np.testing.assert_array_equal(a, b)


def test_reference_flops_follow_the_stated_formula():
    small = {"d_model": 384, "d_ff": 512, "num_layers": 6}
    # W3: one forward pass on 32 context tokens + 1 future token
    activated = 2 * 16 * 384 + 384**2 + 6 * (4 * 384**2 + 2 * 3 * 384 * 512)
    activated += 384 * 176
    assert activated == pytest.approx(10.9e6, rel=0.01)  # "about 11M activated"
    expected = 33 * 2 * activated + 6 * 4 * 33**2 * 384
    assert bench.reference_flops(small, 512, 16, 100, 1) == expected
    # W1: 2 future tokens; the second patch re-encodes 100 paths of 34 tokens
    per_seq = 34 * 2 * activated + 6 * 4 * 34**2 * 384
    assert bench.reference_flops(small, 512, 18, 100, 3) == 3 * 101 * per_seq


def test_quantile_gap_is_scaled_and_uses_three_levels():
    a = np.zeros((2, len(bench.QUANTILES), 4))
    b = a.copy()
    b[1, bench.QUANTILES.index(0.5), 2] = 6.0
    b[0, bench.QUANTILES.index(0.3), 0] = 100.0  # not a checked level
    gap = bench.quantile_gap(a, b, np.array([1.0, 2.0]))
    assert gap["max"] == 3.0
    assert gap["mean"] == pytest.approx(3.0 / (2 * 3 * 4))
    assert gap["share_equal"] == pytest.approx(1 - 1 / (2 * 3 * 4))


# --------------------------------------------------------------- end to end
def test_our_implementation_alone_on_a_tiny_model(tmp_path):
    result = _run(
        tmp_path,
        *("--model", "tiny", "--workloads", "W3", "--impls", "ours-exact"),
        *("--reps", "1", "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-flops"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text, rows, raw = _outputs(tmp_path)
    assert [(r["workload"], r["impl"], r["status"]) for r in rows] == [
        ("W3", "ours-exact", "ok")
    ]
    row = rows[0]
    assert float(row["time_s"]) > 0
    assert float(row["peak_rss_mb"]) > 0
    assert row["gflop"] == ""  # --no-flops
    assert row["speedup"] == ""  # no reference in this run
    assert "| W3 | ours-exact | 1 |" in text
    assert "Scale 1.0" in text
    timed = raw["runs"]
    assert len(timed) == 1
    assert not timed[0]["count_flops"]
    assert len(timed[0]["times"]) == bench.WORKLOADS["W3"].inner
    assert raw["meta"]["model"]["d_model"] == 64


@pytest.mark.slow
@pytest.mark.reference
def test_against_the_reference_at_tiny_scale(tmp_path, reference_python):
    result = _run(
        tmp_path,
        *("--scale", "0.01", "--reps", "1", "--workloads", "W3"),
        *("--ref-python", reference_python),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text, rows, raw = _outputs(tmp_path)
    assert [r["impl"] for r in rows] == list(bench.IMPLS)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["uni2ts"]["status"] == "ok"
    assert by_impl["ours-exact"]["status"] == "ok"
    for row in rows:
        assert row["status"] == "ok" or row["status"].startswith("skipped:")
        if row["status"] == "ok":
            assert float(row["time_s"]) > 0
            assert float(row["speedup"]) > 0
            assert float(row["gflop"]) > 0
    assert float(by_impl["uni2ts"]["speedup"]) == 1.0
    # the analytic count of the reference's decoding agrees with the counted one
    counted = float(by_impl["uni2ts"]["gflop"])
    assert float(by_impl["uni2ts"]["gflop_analytic_ref"]) == pytest.approx(
        counted, rel=0.05
    )
    # same seed, same sample paths: our exact decoding reproduces uni2ts
    assert float(by_impl["ours-exact"]["err_same_seed_max"]) < 1e-4
    assert float(by_impl["ours-exact"]["same_seed_share_equal"]) == 1.0
    assert "## Accuracy against the reference" in text
    assert raw["meta"]["model"]["parameters"] == 117_025_800
