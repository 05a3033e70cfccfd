"""benchmarks/large_panel.py runs end to end at a tiny size (the real run is by hand)."""

from __future__ import annotations

import json

from _helpers import load_script


def test_large_panel_benchmark_writes_its_tables(tmp_path):
    script = load_script("benchmarks/large_panel.py")
    args = ["--series", "30", "--num-samples", "8", "--horizon", "5"]
    assert script.main([*args, "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "large_panel.json").read_text())
    assert [r["series"] for r in rows] == [30]
    row = rows[0]
    assert row["peak_rss_mb"] >= row["rss_after_data_mb"] > 0
    assert row["predict_s"] > 0
    table = (tmp_path / "large_panel.md").read_text()
    assert "| 30 |" in table
