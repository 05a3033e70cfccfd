"""Helpers shared by the tests (importable as ``_helpers``; conftest's folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch

from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"


def make_tiny_model(seed: int = 0, **overrides) -> MoiraiMoEModel:
    """A seeded tiny model with every parameter perturbed (nothing trivial)."""
    config = MoiraiMoEConfig(
        **{"d_model": 64, "d_ff": 64, "num_layers": 2, "num_experts": 8, **overrides}
    )
    generator = torch.Generator().manual_seed(seed)
    model = MoiraiMoEModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "norm1" in name or "norm2" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            else:
                fan_in = param.shape[-1] if param.dim() > 1 else 64
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        if model.encoder.centroid is not None:
            model.encoder.centroid.copy_(
                torch.randn(model.encoder.centroid.shape, generator=generator).double()
            )
    return model.eval()


def load_script(relative: str):
    """Import a script of the repository (``benchmarks/...``, not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / relative
    name = "script_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_harness():
    """Import ``benchmarks/evaluate.py`` as a module."""
    return load_script("benchmarks/evaluate.py")
