"""Order of the gallery's examples: from a first forecast to advanced use.

``docs/conf.py`` names :func:`example_order` in ``sphinx_gallery_conf`` (as a
string: a function in the configuration itself could not be pickled).
Examples not listed here come last, by file name.
"""

from __future__ import annotations

from pathlib import Path

ORDER = (
    "quickstart.py",
    "plot_zero_shot.py",
    "plot_multivariate_covariates.py",
    "plot_panel_evaluate.py",
    "plot_fine_tune_grid_search.py",
    "plot_save_reload.py",
    "plot_expert_allocation.py",
    "plot_dask.py",
)


def example_order(filename: str) -> tuple[int, str]:
    """Sort key of an example script: its place in :data:`ORDER`, then its name."""
    name = Path(filename).name
    rank = ORDER.index(name) if name in ORDER else len(ORDER)
    return rank, name
