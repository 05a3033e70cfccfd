"""Packaging invariants: metadata in one place, a light import, README == CI."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

ALLOWED_RUNTIME_DEPS = {
    "torch",
    "sktime",
    "scikit-learn",
    "pandas",
    "numpy",
    "joblib",
    "huggingface-hub",
    "safetensors",
    "tqdm",
}

# The README's two set-up commands, verbatim (one copy-pasteable line each).
QUICKSTART_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    '.venv/bin/pip install -e ".[plot]" && .venv/bin/python examples/quickstart.py'
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    '.venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest'
)


def _normalize(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _normalize(match.group(1))


def _file_version() -> str:
    """``__version__`` from ``_version.py``, parsed, never imported."""
    tree = ast.parse((ROOT / "moirai_moe_sk" / "_version.py").read_text("utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
            and isinstance(node.value, ast.Constant)
        ):
            return node.value.value
    pytest.fail("moirai_moe_sk/_version.py assigns no literal __version__")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


@pytest.fixture(scope="module")
def ci_commands() -> list[str]:
    """The command lines of .ci/run, without comments and blank lines."""
    lines = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith("#")
    ]


def test_setup_cfg_holds_no_metadata():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    forbidden = [
        section
        for section in parser.sections()
        if section in {"metadata", "options"} or section.startswith("options.")
    ]
    assert forbidden == [], "package metadata belongs in pyproject.toml"


def test_version_is_dynamic_from_version_file(pyproject):
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "moirai_moe_sk._version.__version__"}
    assert re.fullmatch(
        r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", _file_version()
    )


def test_installed_metadata_matches_version_file():
    try:
        installed = importlib.metadata.version("moirai_moe_sk")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("moirai_moe_sk is not installed (pip install -e .)")
    assert installed == _file_version(), "stale install: re-run pip install -e ."


def test_import_is_light_and_reports_the_version():
    code = (
        "import sys, moirai_moe_sk; "
        "print(moirai_moe_sk.__version__); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    version, torch_imported = result.stdout.split()
    assert version == _file_version()
    assert torch_imported == "False", "import moirai_moe_sk must not import torch"


def test_runtime_dependencies_are_the_allowed_few(pyproject):
    names = {_requirement_name(req) for req in pyproject["project"]["dependencies"]}
    assert names <= ALLOWED_RUNTIME_DEPS, names - ALLOWED_RUNTIME_DEPS


def test_py_typed_is_shipped(pyproject):
    assert (ROOT / "moirai_moe_sk" / "py.typed").is_file()
    package_data = pyproject["tool"]["setuptools"]["package-data"]["moirai_moe_sk"]
    assert "py.typed" in package_data


def test_bundled_weights_are_package_data(pyproject):
    package = ROOT / "moirai_moe_sk"
    patterns = pyproject["tool"]["setuptools"]["package-data"]["moirai_moe_sk"]
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    bundled = package / "weights" / "moirai-moe-sk-tiny"
    assert {bundled / "config.json", bundled / "model.safetensors"} <= shipped


@pytest.mark.parametrize("command", [QUICKSTART_COMMAND, TEST_COMMAND])
def test_readme_shows_the_setup_commands(command):
    readme_lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    assert command in readme_lines


def test_ci_runs_the_readme_install_and_test_steps(ci_commands):
    steps = TEST_COMMAND.split(" && ")
    assert steps[0] == "python3 -m venv .venv"
    assert steps[-1] == ".venv/bin/python -m pytest"
    assert any(line.startswith("python3 -m venv") for line in ci_commands)
    # The remaining steps, with CI's venv folder, appear in .ci/run in order.
    ci_steps = [line.replace(".venv-ci/", ".venv/") for line in ci_commands]
    positions = [ci_steps.index(step) for step in steps[1:]]
    assert positions == sorted(positions)
    # And pytest runs exactly once, with no extra arguments.
    assert [line for line in ci_steps if "pytest" in line.split()] == [steps[-1]]
