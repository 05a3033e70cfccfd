"""The gallery scripts (examples/plot_*.py) run offline and save their figure.

Each script runs in a subprocess, as sphinx-gallery and a user run it: offline
(``HF_HUB_OFFLINE=1``: the bundled model only), with the Agg backend, in an
empty folder where it must write ``<script name>.png``. Scripts that take more
than about 20 s on two CPU cores are marked slow (run them with ``-m slow``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))
#: over ~20 s on two CPU cores
SLOW = {
    "plot_dask",
    "plot_expert_allocation",
    "plot_fine_tune_grid_search",
    "plot_panel_evaluate",
    "plot_save_reload",
}
#: optional modules a script needs beyond the plot extra (proba, dask extras)
NEEDS = {
    "plot_zero_shot": ("skpro",),
    "plot_dask": ("dask.distributed",),
}


def _cases():
    for script in SCRIPTS:
        marks = [pytest.mark.slow] if script.stem in SLOW else []
        yield pytest.param(script, id=script.stem, marks=marks)


def test_the_gallery_has_its_scripts():
    names = {script.stem for script in SCRIPTS}
    assert {
        "plot_zero_shot",
        "plot_panel_evaluate",
        "plot_fine_tune_grid_search",
        "plot_multivariate_covariates",
        "plot_save_reload",
        "plot_dask",
        "plot_expert_allocation",
    } <= names
    assert set(SLOW) <= names
    assert (EXAMPLES / "README.rst").is_file()  # sphinx-gallery's header


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_is_a_sphinx_gallery_example(script):
    source = script.read_text("utf-8")
    docstring = ast.get_docstring(ast.parse(source), clean=True)
    assert docstring, f"{script.name} needs a module docstring"
    title, underline, *_ = docstring.splitlines()
    assert title.strip()
    assert set(underline) == {"="}
    assert len(underline) >= len(title)
    assert source.count("\n# %%") >= 2  # text and code cells
    assert f'"{script.stem}.png"' in source  # saves its figure under its name


@pytest.mark.parametrize("script", list(_cases()))
def test_script_runs_offline_and_saves_its_plot(script, tmp_path):
    pytest.importorskip("matplotlib")
    for module in NEEDS.get(script.stem, ()):
        pytest.importorskip(module)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figure = tmp_path / f"{script.stem}.png"
    assert figure.is_file(), sorted(p.name for p in tmp_path.iterdir())
    assert figure.stat().st_size > 20_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result.stdout.splitlines()) >= 2  # it reports its numbers
