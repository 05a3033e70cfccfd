"""Shared fixtures: tiny models and checkpoints in the official layout, built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from moirai_moe_sk.model import MoiraiMoEModel

from _helpers import make_tiny_model


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run faster on one thread, and do not fight parallel jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> MoiraiMoEModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    make_tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def reference_python() -> str:
    """The python of a uni2ts 2.0.0 venv, from MOIRAI_REF_PYTHON (reference tests)."""
    python = os.environ.get("MOIRAI_REF_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip(
            "needs the uni2ts reference venv: set MOIRAI_REF_PYTHON to its python "
            "(recipe in tests/fixtures/parity/README.md); .ci/run builds one"
        )
    return python
