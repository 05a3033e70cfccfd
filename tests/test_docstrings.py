"""Every public class, function and method documents itself with an example.

The public API is the ``__all__`` of the modules the API reference lists
(``docs/api.rst``). For classes, the public methods they define themselves (or
inherit from another class of this package) count too; methods inherited from
sktime, scikit-learn or torch are theirs to document. Properties and constants
are left out. The examples run as doctests in the default test run
(``--doctest-modules``), so this test only checks that they exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re

#: modules whose ``__all__`` is the documented API (the API reference's list)
API_MODULES = [
    "moirai_moe_sk",
    "moirai_moe_sk.model",
    "moirai_moe_sk.checkpoint",
    "moirai_moe_sk.training",
    "moirai_moe_sk.pretrain",
    "moirai_moe_sk.pretrain.synthetic",
    "moirai_moe_sk.pretrain.recipe",
    "moirai_moe_sk.pretrain.run",
    "moirai_moe_sk.analysis",
    "moirai_moe_sk.plotting",
    "moirai_moe_sk.exceptions",
]

#: public names still waiting for an Examples section (in model/ and
#: forecaster.py). Remove a name once it has one: test_pending_names_... fails
#: while a listed name already has examples, so this list can only shrink.
PENDING: set[str] = set()

_EXAMPLES = re.compile(r"^Examples\n-{8,}$", re.MULTILINE)


def _ours(obj: object) -> bool:
    return getattr(obj, "__module__", "").startswith("moirai_moe_sk")


def _public_methods(cls: type) -> dict[str, object]:
    """Public methods of ``cls`` defined by classes of this package."""
    methods: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if not _ours(klass):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(attr, (classmethod, staticmethod)):
                attr = attr.__func__
            if inspect.isfunction(attr):
                methods[name] = attr
    return methods


def _api() -> dict[str, object]:
    """Qualified public name -> object, each object once (first name wins)."""
    names: dict[str, object] = {}
    seen: set[int] = set()
    for module_name in API_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue  # a module not written yet; the reference lists it already
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants and the version string
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            qualified = f"{obj.__module__}.{obj.__qualname__}"
            names[qualified] = obj
            if inspect.isclass(obj):
                for method_name, method in _public_methods(obj).items():
                    if id(method) not in seen:
                        seen.add(id(method))
                        names[f"{qualified}.{method_name}"] = method
    return names


def _has_examples(obj: object) -> bool:
    return bool(_EXAMPLES.search(inspect.getdoc(obj) or ""))


def test_the_api_is_found():
    api = _api()
    assert "moirai_moe_sk.forecaster.MoiraiMoEForecaster" in api
    assert "moirai_moe_sk.model.modeling.MoiraiMoEModel.from_pretrained" in api
    assert len(api) > 40


def test_every_public_name_has_an_examples_section():
    missing = sorted(
        name
        for name, obj in _api().items()
        if name not in PENDING and not _has_examples(obj)
    )
    assert not missing, (
        f"{len(missing)} public names have no 'Examples' section in their "
        "docstring:\n  " + "\n  ".join(missing)
    )


def test_pending_names_are_still_pending():
    api = _api()
    done = sorted(
        name for name in PENDING if name not in api or _has_examples(api[name])
    )
    assert not done, (
        "no longer public, or documented with examples now; remove from PENDING:\n  "
        + "\n  ".join(done)
    )
