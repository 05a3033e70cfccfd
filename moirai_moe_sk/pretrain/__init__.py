"""Pretraining Moirai-MoE from scratch: synthetic series and a real-data corpus.

:mod:`.synthetic` generates seeded synthetic series of several kinds (trends,
seasonalities, random walks, AR and ETS processes, level shifts, intermittent
counts, KernelSynth Gaussian-process samples); :mod:`.corpus` loads the real
series that installed packages ship (sktime, statsmodels, pmdarima), never
any M1 or M3 data; :mod:`.recipe` holds the paper's steps (dense model, k-means
centroids of its token representations, sparse model warm-started from it) and
:mod:`.run` chains them into a resumable pretraining run
(``python -m moirai_moe_sk.pretrain``); both are imported on their own, since
they need torch.
"""

from __future__ import annotations

from .corpus import SOURCES, CorpusSeries, available_sources, find_overlaps, load_corpus
from .synthetic import (
    DEFAULT_WEIGHTS,
    KINDS,
    SyntheticConfig,
    generate,
    to_training_series,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "KINDS",
    "SOURCES",
    "CorpusSeries",
    "SyntheticConfig",
    "available_sources",
    "find_overlaps",
    "generate",
    "load_corpus",
    "to_training_series",
]
