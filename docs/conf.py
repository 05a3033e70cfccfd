"""Sphinx configuration of the moirai_moe_sk documentation.

Build (from the repository root; warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network: no intersphinx inventories, no remote images.

Examples gallery: sphinx-gallery renders ``examples/*.py`` into
``docs/auto_examples/`` and runs the ``plot_*.py`` scripts to capture their
output and figures. ``MOIRAI_DOCS_RUN_EXAMPLES`` chooses which run:

* ``all`` (the default): every ``plot_*.py``;
* ``none``: none (the pages show the code only; CI builds this way);
* anything else: a regular expression matched against each script's path,
  e.g. ``MOIRAI_DOCS_RUN_EXAMPLES=plot_quick`` runs the matching scripts only.

``-D plot_gallery=0`` on the command line also skips running every example.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The package is installed (pip install -e ".[docs]"), but a plain checkout
# builds too; docs/ holds the gallery's sort key (_gallery_order.py).
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

from moirai_moe_sk import __version__

# ------------------------------------------------------------------ project
project = "moirai_moe_sk"
author = "moirai_moe_sk developers"
copyright = "2025-2026, moirai_moe_sk developers"
version = release = __version__

# ------------------------------------------------------------------ general
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_scripts",
    "Thumbs.db",
    ".DS_Store",
    # sphinx-gallery writes these next to the pages; they are not pages
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.codeobj.json",
]
# the reST default role: `text` is code, not an unresolvable cross-reference
default_role = "literal"
# Markdown results (benchmarks/results/*.md) are included as literal text only
source_suffix = {".rst": "restructuredtext"}

# ------------------------------------------------------------------ autodoc
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
# "On this page" lists methods as fit(), not MoiraiMoEForecaster.fit()
toc_object_entries_show_parents = "hide"
# numpydoc: no automatic member tables (the templates in _templates/ list the
# members); types in parameter lists stay plain text (no intersphinx here).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Docstring validation (warnings, so errors under -W): every check except the
# three the style guide leaves out (ES01 extended summary, SA01 See Also, EX01
# Examples: tests/test_docstrings.py checks those) and, for now, the checks
# that existing docstrings still fail (the dataclass ones, PR01/PR04, mostly
# document their fields as Attributes). Remove a code from the second line once
# the docstrings pass it.
numpydoc_validation_checks = {
    "all", "ES01", "SA01", "EX01",
    "GL02", "GL07", "GL08", "PR01", "PR02", "PR04", "RT01", "RT02", "SA03",
    "SS02", "SS03", "SS05", "SS06",
}  # fmt: skip
numpydoc_validation_exclude = {
    # constants (autodata) have no docstring of their own to validate
    r"\.[A-Z][A-Z0-9_]*$",
    # the forecaster's methods documented from sktime's BaseForecaster
    r"^moirai_moe_sk\.MoiraiMoEForecaster\.(?!save_pretrained$)",
}

# ------------------------------------------------------------------ gallery
_RUN = os.environ.get("MOIRAI_DOCS_RUN_EXAMPLES", "all").strip()
_PATTERNS = {"all": r"[\\/]plot_", "none": r"^$"}  # "^$" matches no path

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": _PATTERNS.get(_RUN, _RUN),
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "_gallery_order.example_order",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    # an example that raises fails the build (after all others ran)
    "only_warn_on_example_error": False,
    "show_memory": False,
}

# ------------------------------------------------------------------ HTML
html_theme = "pydata_sphinx_theme"
html_title = f"moirai_moe_sk {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    # no external icon fonts or analytics: the site works offline
    "icon_links": [],
}
# no left sidebar on pages without sub-pages (it would be empty)
html_sidebars = {
    page: []
    for page in ("index", "installation", "quickstart", "how_it_works", "model_card")
}
html_context = {"default_mode": "light"}


# ------------------------------------------------------------------ directives
def _optional_literalinclude() -> type:
    """``literalinclude`` that shows a note instead of failing on a missing file.

    Benchmark results (``benchmarks/results/*.md``) are written by hand after a
    run; a page can show them once they exist without breaking a ``-W`` build
    before.
    """
    from docutils import nodes
    from sphinx.directives.code import LiteralInclude

    class OptionalLiteralInclude(LiteralInclude):
        def run(self) -> list:
            _, path = self.env.relfn2path(self.arguments[0], self.env.docname)
            if not Path(path).is_file():
                text = f"(Not measured yet: {self.arguments[0]} does not exist.)"
                return [nodes.paragraph(text=text)]
            return super().run()

    return OptionalLiteralInclude


def setup(app) -> dict:
    """Register the project's directives."""
    app.add_directive("optional-literalinclude", _optional_literalinclude())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
