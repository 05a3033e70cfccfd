"""Generate the uni2ts 2.0.0 parity fixtures in ``tests/fixtures/parity/``.

Runs ONLY with the python of a reference venv that has ``uni2ts==2.0.0``
installed (recipe in ``tests/fixtures/parity/README.md``); the project venv
does not have uni2ts on purpose.

Usage::

    /path/to/refvenv/bin/python scripts/make_parity_fixtures.py [--out tests/fixtures/parity]
    /path/to/refvenv/bin/python scripts/make_parity_fixtures.py --check-load DIR

What it writes under ``--out`` (default ``tests/fixtures/parity``):

``tiny/config.json``, ``tiny/model.safetensors``
    A seeded random ``uni2ts.model.moirai_moe.MoiraiMoEModule`` (d_model 128,
    2 layers, 32 experts of hidden size ``--d-ff`` = 12 by default, patch size 16,
    the released 4-component mixture head) saved with uni2ts' own
    ``save_pretrained``. The template ``README.md`` the hub mixin writes is
    deleted (it carries no information). Every parameter is overwritten with
    seeded values and the float64 ``encoder.centroid`` buffer is filled with
    seeded rows of norm sqrt(d_model), reseeded until no gate choice is a
    near-tie, so nothing is trivial. Everything below is computed with the
    module as reloaded by ``MoiraiMoEModule.from_pretrained(tiny, strict=True)``.
    (d_ff is far below the released 512 only to keep the folder small: the
    32 experts x 2 layers dominate the checkpoint size.)

``univariate.safetensors``, ``multivariate.safetensors``, ``short.safetensors``
    Per scenario: the raw ``MoiraiMoEForecast.forward`` inputs (``input.*``),
    the packed tensors from ``_convert`` (``packed.*``), the internals of one
    module forward on them (``scaler.*``, ``encoder.*``, ``layer.{i}.*``,
    ``head.*``, ``distr.*``), a teacher-forced second decoding state
    (``step2.*``) and seeded end-to-end samples (``samples.output``). The
    log_prob target is moved off points where log_prob is ill-conditioned (see
    ``condition_log_prob_target``), so a float32 port can match it at 1e-5.

``manifest.json``
    Versions, model hyper-parameters and seeds, per-scenario parameters, the
    shape and dtype of every stored key, the dtypes the reference produced
    before casting, and the gate-gap diagnostics.

Conventions: float tensors are float32, integer tensors int64 (the reference's
own dtypes are listed in the manifest under ``reference_dtypes``), masks bool.

``--check-load DIR`` loads a checkpoint folder with
``MoiraiMoEModule.from_pretrained(DIR, strict=True)``, additionally checks that
every tensor in ``DIR/model.safetensors`` has the dtype and shape the reference
module expects (``strict=True`` alone lets a dtype mismatch through, silently
cast by ``load_state_dict``), runs a short forecast to check the outputs are
finite, logs the parameter count and exits 0; any failure is logged and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_map

LOG = logging.getLogger("make_parity_fixtures")

PATCH_SIZE = 16
NUM_EXPERTS = 32
PARAM_SEED = 0
CENTROID_SEED_BASE = 1
MAX_CENTROID_ATTEMPTS = 20
SAMPLE_SEED = 2024
LOG_PROB_SEED = 123
# top-2 vs 3rd-largest gate distance, every token: hard requirement and default search
# target (the margin keeps ulp-level differences in a port from flipping a choice)
MIN_GATE_GAP = 1e-5
TARGET_GATE_GAP = 1e-4

MODEL_KWARGS = {
    "d_model": 128,
    "num_layers": 2,
    "patch_sizes": (PATCH_SIZE,),
    "max_seq_len": 512,
    "attn_dropout_p": 0.0,
    "dropout_p": 0.0,
    "scaling": True,
}


# ----------------------------------------------------------------------------------------------
# reference imports (only available in the reference venv)
# ----------------------------------------------------------------------------------------------
def _import_reference():
    # local folders only, never the network; silence gluonts' import-time json warning
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", "Using `json`-module", UserWarning)
    try:
        import uni2ts  # noqa: F401
        from uni2ts.distribution import (
            LogNormalOutput,
            MixtureOutput,
            NegativeBinomialOutput,
            NormalFixedScaleOutput,
            StudentTOutput,
        )
        from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule
    except ImportError as err:  # pragma: no cover - depends on the interpreter
        msg = (
            f"uni2ts is not importable ({err}); run this script with the reference venv's "
            "python (see tests/fixtures/parity/README.md)"
        )
        raise SystemExit(msg) from err
    return {
        "MoiraiMoEModule": MoiraiMoEModule,
        "MoiraiMoEForecast": MoiraiMoEForecast,
        "MixtureOutput": MixtureOutput,
        "StudentTOutput": StudentTOutput,
        "NormalFixedScaleOutput": NormalFixedScaleOutput,
        "NegativeBinomialOutput": NegativeBinomialOutput,
        "LogNormalOutput": LogNormalOutput,
    }


# ----------------------------------------------------------------------------------------------
# tiny model
# ----------------------------------------------------------------------------------------------
def build_module(ref: dict, d_ff: int):
    distr_output = ref["MixtureOutput"](
        [
            ref["StudentTOutput"](),
            ref["NormalFixedScaleOutput"](scale=1e-3),
            ref["NegativeBinomialOutput"](),
            ref["LogNormalOutput"](),
        ]
    )
    return ref["MoiraiMoEModule"](distr_output=distr_output, d_ff=d_ff, **MODEL_KWARGS)


def _is_norm_weight(name: str) -> bool:
    return name.split(".")[-2] in {"norm", "norm1", "norm2", "q_norm", "k_norm"}


def perturb_parameters_(module: torch.nn.Module, seed: int) -> dict[str, str]:
    """Overwrite every parameter with seeded values; returns the rule used per group."""
    torch.manual_seed(seed)
    rules: dict[str, str] = {}
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if _is_norm_weight(name):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape))
                rules.setdefault("RMSNorm weights", "1 + N(0, 0.1^2)")
            elif name.endswith(".bias"):
                param.copy_(0.05 * torch.randn(param.shape))
                rules.setdefault("biases", "N(0, 0.05^2)")
            elif name.endswith("var_attn_bias.emb.weight"):
                param.copy_(0.5 * torch.randn(param.shape))
                rules.setdefault("variate attention bias emb (2,H)", "N(0, 0.5^2)")
            elif param.dim() >= 2:
                fan_in = param.shape[-1]
                param.copy_(torch.randn(param.shape) / math.sqrt(fan_in))
                rules.setdefault("weight matrices", "N(0, 1/fan_in), fan_in = last dim")
            else:  # pragma: no cover - no such parameter in this module
                msg = f"no perturbation rule for parameter {name}"
                raise RuntimeError(msg)
    return rules


def fill_centroids_(module: torch.nn.Module, seed: int) -> None:
    """Seeded centroids at the scale of the gate input (an RMSNorm output, RMS ~1 per element).

    Directions are N(0, 1), every row is rescaled to norm sqrt(d_model): with equal norms the
    farthest-centroid choice depends on the token (x . c) rather than on which centroid happens
    to be longest, so many experts get used.
    """
    generator = torch.Generator().manual_seed(seed)
    centroid = module.encoder.centroid
    raw = torch.randn(centroid.shape, generator=generator, dtype=torch.float64)
    raw = raw / raw.norm(dim=-1, keepdim=True) * math.sqrt(centroid.shape[-1])
    with torch.no_grad():
        centroid.copy_(raw)


def save_and_reload(ref: dict, module: torch.nn.Module, folder: Path):
    if folder.exists():
        shutil.rmtree(folder)
    module.save_pretrained(folder)
    readme = folder / "README.md"
    if readme.exists():
        readme.unlink()  # the hub mixin's model-card template, no information
    reloaded = ref["MoiraiMoEModule"].from_pretrained(folder, strict=True)
    reloaded.eval()
    original = module.state_dict()
    for key, value in reloaded.state_dict().items():
        if not torch.equal(value, original[key]) or value.dtype != original[key].dtype:
            msg = f"reloaded tensor {key} differs from the saved one"
            raise RuntimeError(msg)
    return reloaded


# ----------------------------------------------------------------------------------------------
# strict checkpoint loading (also used by --check-load)
# ----------------------------------------------------------------------------------------------
def check_load(ref: dict, folder: Path, *, run_forecast: bool = True) -> int:
    """Load ``folder`` with the reference loader; raise on any problem, return #parameters."""
    from safetensors import safe_open

    if (
        not (folder / "config.json").is_file()
        or not (folder / "model.safetensors").is_file()
    ):
        msg = f"{folder} is not a folder with config.json and model.safetensors"
        raise FileNotFoundError(msg)
    module = ref["MoiraiMoEModule"].from_pretrained(folder, strict=True)
    expected = module.state_dict()
    problems = []
    with safe_open(folder / "model.safetensors", framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            tensor = handle.get_tensor(key)
            want = expected[key]
            if tensor.dtype != want.dtype or tensor.shape != want.shape:
                problems.append(
                    f"{key}: file {tensor.dtype} {tuple(tensor.shape)}, "
                    f"reference expects {want.dtype} {tuple(want.shape)}"
                )
    if problems:
        msg = "dtype/shape mismatch: " + "; ".join(problems)
        raise ValueError(msg)
    num_params = sum(p.numel() for p in module.parameters())
    if run_forecast:
        forecast = ref["MoiraiMoEForecast"](
            prediction_length=20,
            target_dim=1,
            feat_dynamic_real_dim=0,
            past_feat_dynamic_real_dim=0,
            context_length=40,
            module=module,
            patch_size=PATCH_SIZE,
            num_samples=4,
        ).eval()
        generator = torch.Generator().manual_seed(0)
        past = 10.0 + torch.randn(2, 40, 1, generator=generator)
        torch.manual_seed(0)
        with torch.no_grad():
            out = forecast(
                past,
                torch.ones_like(past, dtype=torch.bool),
                torch.zeros(2, 40, dtype=torch.bool),
            )
        if out.shape != (2, 4, 20) or not torch.isfinite(out).all():
            msg = f"forecast with the loaded module is not finite ({out.shape})"
            raise ValueError(msg)
    return num_params


def strict_selftest(ref: dict, tiny: Path) -> dict[str, bool]:
    """Prove the loader check is strict: corrupt copies of ``tiny`` must be rejected."""
    from safetensors.torch import load_file, save_file

    results = {}
    cases = {
        "missing_key_rejected": lambda s: s.pop(
            "encoder.layers.0.ffn.experts.3.fc2.weight"
        ),
        "unexpected_key_rejected": lambda s: s.__setitem__(
            "extra.weight", torch.zeros(3)
        ),
        "wrong_shape_rejected": lambda s: s.__setitem__(
            "encoder.norm.weight", torch.ones(MODEL_KWARGS["d_model"] + 1)
        ),
        # strict=True alone accepts this one (load_state_dict casts); our dtype check rejects it
        "float32_centroid_rejected": lambda s: s.__setitem__(
            "encoder.centroid", s["encoder.centroid"].float()
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good"
        shutil.copytree(tiny, good)
        check_load(ref, good, run_forecast=False)
        for case, corrupt in cases.items():
            folder = Path(tmp) / case
            shutil.copytree(tiny, folder)
            state = load_file(folder / "model.safetensors")
            corrupt(state)
            save_file(state, folder / "model.safetensors")
            try:
                check_load(ref, folder, run_forecast=False)
            except Exception as err:  # noqa: BLE001 - any failure means "rejected"
                LOG.info("strict self-test %s: rejected (%s)", case, type(err).__name__)
                results[case] = True
            else:
                results[case] = False
        # the bare hub-mixin strict=True on the float32 centroid copy, for the record
        bare = Path(tmp) / "float32_centroid_rejected"
        try:
            ref["MoiraiMoEModule"].from_pretrained(bare, strict=True)
            results["bare_strict_true_rejects_float32_centroid"] = False
        except Exception:  # noqa: BLE001 - any failure means "rejected"
            results["bare_strict_true_rejects_float32_centroid"] = True
    failed = [
        case
        for case, ok in results.items()
        if not ok and case != "bare_strict_true_rejects_float32_centroid"
    ]
    if failed:
        msg = f"strict loading is not strict for: {failed}"
        raise RuntimeError(msg)
    return results


# ----------------------------------------------------------------------------------------------
# scenarios (inputs)
# ----------------------------------------------------------------------------------------------
def _causal_mean_fill(values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Unobserved values -> mean of the earlier observed ones (like gluonts' causal imputation)."""
    out = values.clone()
    for t in range(values.shape[0]):
        if not observed[t]:
            prev = values[:t][observed[:t]]
            out[t] = prev.mean() if prev.numel() else 0.0
    return out


def scenario_univariate() -> dict[str, Any]:
    ctx, pdt, batch = 100, 40, 3
    g = torch.Generator().manual_seed(11)
    t = torch.arange(ctx + pdt, dtype=torch.float32)
    full = torch.stack(
        [
            100
            + 0.1 * t
            + 10 * torch.sin(2 * math.pi * t / 24)
            + torch.randn(t.shape, generator=g),
            50
            + 5 * torch.sin(2 * math.pi * t / 12)
            + 0.5 * torch.randn(t.shape, generator=g),
            20
            + torch.cumsum(0.5 * torch.randn(t.shape, generator=g), 0)
            + 3 * torch.sin(2 * math.pi * t / 7),
        ]
    )  # (B, ctx+pdt)
    past = full[:, :ctx].clone()
    observed = torch.ones(batch, ctx, dtype=torch.bool)
    is_pad = torch.zeros(batch, ctx, dtype=torch.bool)
    # series 1: only the last 63 steps are real (left padding, gluonts style)
    n_pad = ctx - 63
    is_pad[1, :n_pad] = True
    observed[1, :n_pad] = False
    past[1, :n_pad] = 0.0
    # series 2: scattered gaps plus one whole 16-step patch (ctx 100 is left-padded by 12 to
    # 112, so packed patch 3 covers t = 36..51)
    for pos in (5, 17, 60, 61, 88, 99):
        observed[2, pos] = False
    observed[2, 36:52] = False
    past[2] = _causal_mean_fill(past[2], observed[2])
    return {
        "description": (
            "B=3 univariate; series 0 trend+season+noise (level ~100); series 1 left-padded "
            "(first 37 steps past_is_pad, value 0, unobserved); series 2 random walk with "
            "unobserved steps 5,17,60,61,88,99 and the whole packed patch t=36..51 unobserved "
            "(values causal-mean imputed)"
        ),
        "context_length": ctx,
        "prediction_length": pdt,
        "target_dim": 1,
        "feat_dynamic_real_dim": 0,
        "past_feat_dynamic_real_dim": 0,
        "hparams_num_samples": 8,
        "explicit_num_samples": None,
        "inputs": {
            "past_target": past.unsqueeze(-1),
            "past_observed_target": observed.unsqueeze(-1),
            "past_is_pad": is_pad,
        },
        "future_target": full[:, ctx:].unsqueeze(-1),
    }


def scenario_multivariate() -> dict[str, Any]:
    ctx, pdt, batch = 64, 20, 2
    g = torch.Generator().manual_seed(22)
    t = torch.arange(ctx + pdt, dtype=torch.float32)
    known = torch.stack(
        [torch.sin(2 * math.pi * t / 7), torch.cos(2 * math.pi * t / 11) + 0.1 * t / 10]
    )  # (B, T) known-future covariate
    dim0 = (
        10
        + 3 * torch.sin(2 * math.pi * t / 16)
        + 2 * known
        + 0.3 * torch.randn(batch, t.numel(), generator=g)
    )
    dim1 = 5 + torch.cumsum(0.4 * torch.randn(batch, t.numel(), generator=g), -1)
    full = torch.stack([dim0, dim1], -1)  # (B, T, 2)
    past_cov = torch.cumsum(torch.randn(batch, ctx, generator=g), -1).unsqueeze(-1)
    past = full[:, :ctx].clone()
    observed = torch.ones(batch, ctx, 2, dtype=torch.bool)
    is_pad = torch.zeros(batch, ctx, dtype=torch.bool)
    feat = known.unsqueeze(-1).clone()
    feat_obs = torch.ones(batch, ctx + pdt, 1, dtype=torch.bool)
    past_cov_obs = torch.ones(batch, ctx, 1, dtype=torch.bool)
    # unobserved entries in target dim 1 (multivariate gluonts path imputes 0)
    for b, positions in ((0, (3, 4, 30, 45, 63)), (1, (25, 40, 41, 50))):
        for pos in positions:
            observed[b, pos, 1] = False
            past[b, pos, 1] = 0.0
    past_cov_obs[0, 10] = False
    past_cov[0, 10] = 0.0
    # series 1: the first 20 steps are padding (a whole padded patch: sample_id 0 for every
    # variate of packed patch 0, including the covariates)
    n_pad = 20
    is_pad[1, :n_pad] = True
    observed[1, :n_pad] = False
    past[1, :n_pad] = 0.0
    feat[1, :n_pad] = 0.0
    feat_obs[1, :n_pad] = False
    past_cov[1, :n_pad] = 0.0
    past_cov_obs[1, :n_pad] = False
    return {
        "description": (
            "B=2, D=2 targets, 1 known-future covariate (length ctx+pdt), 1 past-only "
            "covariate; target dim 1 has unobserved entries (value 0); series 1 has its first "
            "20 steps padded (targets and covariates 0 and unobserved); series 0 past "
            "covariate unobserved at t=10"
        ),
        "context_length": ctx,
        "prediction_length": pdt,
        "target_dim": 2,
        "feat_dynamic_real_dim": 1,
        "past_feat_dynamic_real_dim": 1,
        "hparams_num_samples": 8,
        "explicit_num_samples": None,
        "inputs": {
            "past_target": past,
            "past_observed_target": observed,
            "past_is_pad": is_pad,
            "feat_dynamic_real": feat,
            "observed_feat_dynamic_real": feat_obs,
            "past_feat_dynamic_real": past_cov,
            "past_observed_feat_dynamic_real": past_cov_obs,
        },
        "future_target": full[:, ctx:],
    }


def scenario_short() -> dict[str, Any]:
    ctx, pdt = 48, 12
    g = torch.Generator().manual_seed(33)
    t = torch.arange(ctx + pdt, dtype=torch.float32)
    full = torch.stack(
        [
            1000
            + 50 * torch.sin(2 * math.pi * t / 12)
            + 5 * torch.randn(t.shape, generator=g),
            torch.poisson(torch.full(t.shape, 3.0), generator=g),  # non-negative counts
        ]
    )
    return {
        "description": (
            "B=2 univariate, pdt <= 16 (single decoding step): series 0 level ~1000 with "
            "season; series 1 Poisson(3) counts. forward is called with num_samples=5 "
            "explicitly while hparams.num_samples is 7 (the explicit value wins on this path)"
        ),
        "context_length": ctx,
        "prediction_length": pdt,
        "target_dim": 1,
        "feat_dynamic_real_dim": 0,
        "past_feat_dynamic_real_dim": 0,
        "hparams_num_samples": 7,
        "explicit_num_samples": 5,
        "inputs": {
            "past_target": full[:, :ctx].unsqueeze(-1).clone(),
            "past_observed_target": torch.ones(2, ctx, 1, dtype=torch.bool),
            "past_is_pad": torch.zeros(2, ctx, dtype=torch.bool),
        },
        "future_target": full[:, ctx:].unsqueeze(-1),
    }


SCENARIOS = {
    "univariate": scenario_univariate,
    "multivariate": scenario_multivariate,
    "short": scenario_short,
}


# ----------------------------------------------------------------------------------------------
# hooks
# ----------------------------------------------------------------------------------------------
def _gate(x: torch.Tensor, centroid: torch.Tensor, k: int):
    """Exactly ffn.MoEFeedForward's gate: cdist to the centroids, then topk (largest)."""
    centroid = centroid.to(x.device).type_as(x)
    x_temp = x.view(-1, x.shape[-2], x.shape[-1]) if x.dim() > 3 else x
    centroid = centroid.unsqueeze(0).repeat(x_temp.shape[0], 1, 1)
    cdist = torch.cdist(x_temp, centroid)
    values, index = torch.topk(cdist.view(-1, cdist.shape[-1]), k)
    return cdist, values, index


class GateMonitor:
    """Persistent hook on every MoE layer: the smallest top-2 vs 3rd distance gap, per label."""

    def __init__(self, module: torch.nn.Module):
        self.label = "unlabelled"
        self.gap_23: dict[str, float] = {}
        self.gap_12: dict[str, float] = {}
        self.handles = [
            layer.ffn.register_forward_hook(self._hook, with_kwargs=True)
            for layer in module.encoder.layers
        ]

    def _hook(self, _module, args, kwargs, _output):
        _, top3, _ = _gate(args[0], kwargs["centroid"], 3)
        g23 = float((top3[:, 1] - top3[:, 2]).min())
        g12 = float((top3[:, 0] - top3[:, 1]).min())
        self.gap_23[self.label] = min(self.gap_23.get(self.label, math.inf), g23)
        self.gap_12[self.label] = min(self.gap_12.get(self.label, math.inf), g12)

    def remove(self):
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


class Recorder:
    """Temporary hooks capturing the internals of one module forward."""

    def __init__(self, module: torch.nn.Module):
        self.captured: dict[str, Any] = {}
        c = self.captured
        hooks = [
            module.scaler.register_forward_hook(
                lambda _m, _a, out: c.update(
                    {"scaler.loc": out[0], "scaler.scale": out[1]}
                )
            ),
            module.encoder.register_forward_hook(
                lambda _m, args, out: c.update(
                    {"encoder.input": args[0], "encoder.output": out}
                )
            ),
            module.param_proj.register_forward_hook(
                lambda _m, _a, out: c.update({"param_proj": out})
            ),
        ]
        for i, layer in enumerate(module.encoder.layers):
            hooks.append(
                layer.register_forward_hook(
                    lambda _m, _a, out, i=i: c.update({f"layer.{i}.output": out})
                )
            )
            hooks.append(
                layer.self_attn.register_forward_hook(
                    lambda _m, _a, out, i=i: c.update({f"layer.{i}.attn_output": out})
                )
            )
            hooks.append(
                layer.ffn.register_forward_hook(self._ffn_hook(i), with_kwargs=True)
            )
        self.handles = hooks

    def _ffn_hook(self, i: int):
        def hook(_module, args, kwargs, output):
            x = args[0]
            cdist, _, index = _gate(x, kwargs["centroid"], 2)
            self.captured.update(
                {
                    f"layer.{i}.moe_input": x,
                    f"layer.{i}.moe_output": output,
                    f"layer.{i}.gate_index": index.view(*x.shape[:-1], 2),
                    f"layer.{i}.gate_distance": cdist.view(
                        *x.shape[:-1], cdist.shape[-1]
                    ),
                }
            )

        return hook

    def remove(self):
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------
# the RNG trace of Mixture.sample, re-implemented with raw torch calls (self-check of the report)
# ----------------------------------------------------------------------------------------------
def manual_sample(distr, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """AffineTransformed(Mixture).sample(sample_shape) with the same torch RNG calls, in order."""
    mix = distr.base_dist
    st, nf, nb, ln = mix.components
    batch = tuple(mix.batch_shape)
    shape = tuple(sample_shape) + batch
    tiny = torch.finfo(torch.float32).tiny
    # 1. StudentT: X ~ N(0,1) (normal_), Z = standard_gamma(df/2) / 0.5 clamped, Y = X*rsqrt(Z/df)
    x = torch.empty(shape).normal_()
    z = (torch._standard_gamma((0.5 * st.df).expand(shape)) / 0.5).clamp_(min=tiny)
    s_st = st.loc + st.scale * (x * torch.rsqrt(z / st.df))
    # 2. Normal(loc, 1e-3): torch.normal(loc, scale) == randn(shape) * scale + loc
    s_nf = torch.normal(nf.loc.expand(shape), nf.scale.expand(shape))
    # 3. NegativeBinomial: poisson(standard_gamma(total_count) / exp(-logits), clamped)
    lam = (
        torch._standard_gamma(nb.total_count.expand(shape)) / torch.exp(-nb.logits)
    ).clamp_(min=tiny)
    s_nb = torch.poisson(lam)
    # 4. LogNormal: exp(torch.normal(loc, scale))
    s_ln = torch.normal(ln.loc.expand(shape), ln.scale.expand(shape)).exp()
    # 5. Categorical: multinomial(probs.reshape(-1, 4), prod(sample_shape), replacement=True).T
    n = math.prod(sample_shape)
    probs = mix.weights.probs.reshape(-1, 4)
    choice = torch.multinomial(probs, n, True).T.reshape(shape)
    stacked = torch.stack([s_st, s_nf, s_nb, s_ln], dim=-1)
    picked = torch.gather(stacked, -1, choice.unsqueeze(-1)).squeeze(-1)
    return distr.loc + distr.scale * picked


# ----------------------------------------------------------------------------------------------
# log_prob conditioning
# ----------------------------------------------------------------------------------------------
# allowed |d log_prob / dx| * max(1, |x|) per element (x = normalised target): a port whose
# x or head parameters differ by ~3e-7 relative then stays within ~1e-5 of the reference
LOG_PROB_MAX_GRAD = 30.0
LOG_PROB_SHIFT = (
    0.37  # how far a flagged element is moved, in units of its token's scale
)


def _log_prob_sensitivity(
    module, captured: dict, distr, target: torch.Tensor
) -> torch.Tensor:
    """|d log_prob / d x| * max(1, |x|) per element, in float64 (x = normalised target)."""
    params = tree_map(lambda t: t.detach().double(), captured["param_proj"])
    mixture = module.distr_output._distribution(params)
    x = ((target.double() - distr.loc.double()) / distr.scale.double()).requires_grad_(
        True
    )
    with torch.enable_grad():
        mixture.log_prob(x).sum().backward()
    return x.grad.abs() * x.detach().abs().clamp_min(1.0)


def condition_log_prob_target(module, target: torch.Tensor, steps: list):
    """Move target elements where log_prob is ill-conditioned (float32 ulps would matter).

    The NormalFixedScale component (scale 1e-3) amplifies an input difference dx by |z|/1e-3
    where it carries weight in the mixture (|z| of a few), a narrow StudentT or LogNormal near 0
    do similarly; elements with a sensitivity above LOG_PROB_MAX_GRAD in either decoding state
    are shifted by LOG_PROB_SHIFT token scales until none is left. Returns the target, the
    number of elements moved and the worst remaining sensitivity.
    """
    target = target.clone()
    moved = torch.zeros(target.shape, dtype=torch.bool)
    for attempt in range(10):
        flagged = torch.zeros(target.shape, dtype=torch.bool)
        worst = 0.0
        for captured, distr in steps:
            sens = _log_prob_sensitivity(module, captured, distr, target)
            flagged |= sens > LOG_PROB_MAX_GRAD
            worst = max(worst, float(sens.max()))
        if not flagged.any():
            return target, int(moved.sum()), worst
        direction = 1.0 if attempt % 2 == 0 else -2.0
        scale = steps[0][1].scale.expand(target.shape)
        target = torch.where(
            flagged, target + direction * LOG_PROB_SHIFT * scale, target
        )
        moved |= flagged
    msg = "could not condition the log_prob target"
    raise RuntimeError(msg)


# ----------------------------------------------------------------------------------------------
# running a scenario
# ----------------------------------------------------------------------------------------------
def _head_tensors(distr, captured: dict[str, Any]) -> dict[str, torch.Tensor]:
    mix = distr.base_dist
    st, nf, nb, ln = mix.components
    raw_logits = captured["param_proj"]["weights_logits"]
    # Categorical normalises its logits; the stored raw ones must agree up to that
    torch.testing.assert_close(
        torch.log_softmax(raw_logits, -1), mix.weights.logits, rtol=0, atol=1e-6
    )
    return {
        "head.weights_logits": raw_logits,
        "head.studentt.df": st.df,
        "head.studentt.loc": st.loc,
        "head.studentt.scale": st.scale,
        "head.normal.loc": nf.loc,
        "head.normal.scale": nf.scale,
        "head.nb.total_count": nb.total_count,
        "head.nb.logits": nb.logits,
        "head.lognormal.loc": ln.loc,
        "head.lognormal.scale": ln.scale,
        "head.mixture_probs": mix.weights.probs,
    }


def run_scenario(ref: dict, module, monitor: GateMonitor, name: str, spec: dict):
    forecast = ref["MoiraiMoEForecast"](
        prediction_length=spec["prediction_length"],
        target_dim=spec["target_dim"],
        feat_dynamic_real_dim=spec["feat_dynamic_real_dim"],
        past_feat_dynamic_real_dim=spec["past_feat_dynamic_real_dim"],
        context_length=spec["context_length"],
        module=module,
        patch_size=PATCH_SIZE,
        num_samples=spec["hparams_num_samples"],
    ).eval()
    inputs = spec["inputs"]
    d = spec["target_dim"]
    cs = math.ceil(spec["context_length"] / PATCH_SIZE)
    ps = math.ceil(spec["prediction_length"] / PATCH_SIZE)
    pred_index = torch.arange(cs - 1, d * cs, cs)
    assign_index = torch.arange(d * cs, d * cs + d * ps, ps)
    out: dict[str, torch.Tensor] = {f"input.{k}": v for k, v in inputs.items()}
    ref_dtypes: dict[str, str] = {}

    cov = {
        k: v
        for k, v in inputs.items()
        if k not in ("past_target", "past_observed_target", "past_is_pad")
    }
    with torch.no_grad():
        packed = forecast._convert(
            PATCH_SIZE,
            inputs["past_target"],
            inputs["past_observed_target"],
            inputs["past_is_pad"],
            **cov,
        )
        names = (
            "target",
            "observed_mask",
            "sample_id",
            "time_id",
            "variate_id",
            "prediction_mask",
        )
        packed = dict(zip(names, packed, strict=True))
        packed["patch_size"] = (
            torch.ones_like(packed["time_id"], dtype=torch.long) * PATCH_SIZE
        )
        for key, value in packed.items():
            out[f"packed.{key}"] = value
            ref_dtypes[f"packed.{key}"] = str(value.dtype).replace("torch.", "")
        # ---- step 1: one module forward on the packed tensors
        module_args = [packed[k] for k in (*names, "patch_size")]
        monitor.label = f"{name}/step1"
        recorder = Recorder(module)
        try:
            distr = module(*module_args)
        finally:
            recorder.remove()
        cap = recorder.captured
        for key, value in cap.items():
            if key != "param_proj":
                out[key] = value
        out.update(_head_tensors(distr, cap))
        mean = distr.mean
        out["distr.mean"] = mean

        # ---- step 2: teacher-forced second state (step-1 mean fed back, unmasked)
        target2 = packed["target"].clone()
        target2[..., assign_index, :] = mean[..., pred_index, :]
        mask2 = packed["prediction_mask"].clone()
        mask2[..., assign_index] = False
        args2 = list(module_args)
        args2[0], args2[5] = target2, mask2
        monitor.label = f"{name}/step2"
        recorder2 = Recorder(module)
        try:
            distr2 = module(*args2)
        finally:
            recorder2.remove()
        cap2 = recorder2.captured
        out["step2.target"] = target2
        out["step2.prediction_mask"] = mask2
        out["step2.scaler.loc"] = cap2["scaler.loc"]
        out["step2.scaler.scale"] = cap2["scaler.scale"]
        out["step2.encoder.output"] = cap2["encoder.output"]
        out["step2.distr.mean"] = distr2.mean

        # ---- log_prob of a known target in data units: the true continuation in the future
        # tokens, the inputs elsewhere, plus a little noise; then moved off ill-conditioned spots
        lp_packed = forecast._convert(
            PATCH_SIZE,
            inputs["past_target"],
            inputs["past_observed_target"],
            inputs["past_is_pad"],
            future_target=spec["future_target"],
            **cov,
        )[0]
        g = torch.Generator().manual_seed(99)
        lp_target = lp_packed + 0.05 * torch.randn(lp_packed.shape, generator=g)
        lp_target, n_moved, worst_err = condition_log_prob_target(
            module, lp_target, [(cap, distr), (cap2, distr2)]
        )
        out["distr.log_prob_target"] = lp_target
        torch.manual_seed(LOG_PROB_SEED)
        log_prob = distr.log_prob(lp_target)
        out["distr.log_prob"] = log_prob
        torch.manual_seed(LOG_PROB_SEED)
        out["step2.distr.log_prob"] = distr2.log_prob(lp_target)
        # the log_prob value does not depend on the RNG (it only advances it)
        torch.manual_seed(LOG_PROB_SEED + 1)
        if not torch.equal(distr.log_prob(lp_target), log_prob):
            msg = "log_prob depends on the RNG state"
            raise RuntimeError(msg)

        # our explicit re-implementation of the sampling RNG sequence must be bit-identical
        for shape in ((spec["hparams_num_samples"],), (1,)):
            torch.manual_seed(7)
            expected = distr.sample(torch.Size(shape))
            torch.manual_seed(7)
            if not torch.equal(manual_sample(distr, shape), expected):
                msg = f"manual_sample differs from Mixture.sample for {shape}"
                raise RuntimeError(msg)

        # ---- end-to-end seeded sampling
        monitor.label = f"{name}/sampling"
        kwargs = dict(inputs)
        if spec["explicit_num_samples"] is not None:
            kwargs["num_samples"] = spec["explicit_num_samples"]
        torch.manual_seed(SAMPLE_SEED)
        samples = forecast(**kwargs)
        torch.manual_seed(SAMPLE_SEED)
        if not torch.equal(forecast(**kwargs), samples):
            msg = "seeded sampling is not reproducible"
            raise RuntimeError(msg)
        out["samples.output"] = samples

    for key, value in out.items():
        if not torch.isfinite(value.float()).all() and value.dtype.is_floating_point:
            msg = f"{name}: {key} has non-finite values"
            raise RuntimeError(msg)

    tensors = {k: _canonical(v) for k, v in out.items()}
    effective = (
        spec["explicit_num_samples"]
        if (ps == 1 and spec["explicit_num_samples"] is not None)
        else spec["hparams_num_samples"]
    )
    meta = {
        "description": spec["description"],
        "batch_size": int(inputs["past_target"].shape[0]),
        "context_length": spec["context_length"],
        "prediction_length": spec["prediction_length"],
        "target_dim": d,
        "feat_dynamic_real_dim": spec["feat_dynamic_real_dim"],
        "past_feat_dynamic_real_dim": spec["past_feat_dynamic_real_dim"],
        "patch_size": PATCH_SIZE,
        "context_tokens_per_variate": cs,
        "prediction_tokens_per_variate": ps,
        "seq_len": int(packed["target"].shape[-2]),
        "num_samples": effective,
        "hparams_num_samples": spec["hparams_num_samples"],
        "explicit_num_samples": spec["explicit_num_samples"],
        "sample_seed": SAMPLE_SEED,
        "log_prob_seed": LOG_PROB_SEED,
        "pred_index": pred_index.tolist(),
        "assign_index": assign_index.tolist(),
        "reference_dtypes": ref_dtypes,
        "samples_abs_max": float(samples.abs().max()),
        "log_prob_target_elements_moved": n_moved,
        "log_prob_max_sensitivity": worst_err,
        "log_prob_sensitivity_limit": LOG_PROB_MAX_GRAD,
        "log_prob_min": float(log_prob.min()),
        "log_prob_max": float(log_prob.max()),
        "experts_used": {
            f"layer.{i}": len(torch.unique(cap[f"layer.{i}.gate_index"]))
            for i in range(len(module.encoder.layers))
        },
    }
    return tensors, meta


def _canonical(value: torch.Tensor) -> torch.Tensor:
    if value.dtype == torch.bool:
        return value.contiguous()
    if value.dtype.is_floating_point:
        return value.to(torch.float32).contiguous()
    return value.to(torch.int64).contiguous()


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = (
        "uni2ts",
        "torch",
        "safetensors",
        "huggingface_hub",
        "numpy",
        "einops",
        "gluonts",
    )
    found = {name: version(name) for name in names}
    found["python"] = platform.python_version()
    return found


def generate(ref: dict, out_dir: Path, d_ff: int, target_gap: float) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tiny = out_dir / "tiny"
    torch.set_num_threads(
        1
    )  # bitwise-stable CPU kernels across machines with different cores

    module = build_module(ref, d_ff)
    rules = perturb_parameters_(module, PARAM_SEED)
    num_params = sum(p.numel() for p in module.parameters())

    for attempt in range(MAX_CENTROID_ATTEMPTS):
        centroid_seed = CENTROID_SEED_BASE + attempt
        fill_centroids_(module, centroid_seed)
        reloaded = save_and_reload(ref, module, tiny)
        monitor = GateMonitor(reloaded)
        results = {}
        try:
            for name, make in SCENARIOS.items():
                results[name] = run_scenario(ref, reloaded, monitor, name, make())
        finally:
            monitor.remove()
        worst = min(monitor.gap_23.values())
        LOG.info(
            "centroid seed %d: min top-2 vs 3rd gate distance gap %.3e (min top-1 vs top-2 %.3e)",
            centroid_seed,
            worst,
            min(monitor.gap_12.values()),
        )
        if worst > max(target_gap, MIN_GATE_GAP):
            break
        LOG.warning("gate gap %.3e <= %.0e, reseeding the centroids", worst, target_gap)
    else:
        msg = "no centroid seed gave a non-degenerate top-2 selection"
        raise RuntimeError(msg)
    assert min(monitor.gap_23.values()) > MIN_GATE_GAP

    selftest = strict_selftest(ref, tiny)
    LOG.info("strict loading self-test: %s", selftest)

    manifest: dict[str, Any] = {
        "generator": "scripts/make_parity_fixtures.py",
        "command": "/path/to/refvenv/bin/python scripts/make_parity_fixtures.py --out tests/fixtures/parity",
        "versions": _versions(),
        "torch_num_threads": 1,
        "model": {
            "folder": "tiny",
            "class": "uni2ts.model.moirai_moe.MoiraiMoEModule",
            "kwargs": {
                **MODEL_KWARGS,
                "d_ff": d_ff,
                "patch_sizes": list(MODEL_KWARGS["patch_sizes"]),
            },
            "distr_output": "MixtureOutput([StudentTOutput(), NormalFixedScaleOutput(scale=1e-3), "
            "NegativeBinomialOutput(), LogNormalOutput()])",
            "num_experts": NUM_EXPERTS,
            "num_experts_per_token": 2,
            "num_parameters": num_params,
            "param_seed": PARAM_SEED,
            "param_init": rules,
            "centroid_seed": centroid_seed,
            "centroid_init": "c = torch.randn(shape, generator=Generator().manual_seed(centroid_seed), "
            "dtype=float64); c / c.norm(dim=-1, keepdim=True) * sqrt(d_model)",
            "readme_deleted": True,
            "loaded_with": "MoiraiMoEModule.from_pretrained(tiny, strict=True)",
        },
        "strict_loading_selftest": selftest,
        "sample_seed": SAMPLE_SEED,
        "log_prob_seed": LOG_PROB_SEED,
        "gate_gap": {
            "min_top2_vs_3rd": monitor.gap_23,
            "min_top1_vs_top2": monitor.gap_12,
            "required": MIN_GATE_GAP,
            "search_target": target_gap,
            "scope": "every token of every module call: step 1, step 2 and all decoding steps "
            "of the seeded sampling",
        },
        "scenarios": {},
    }
    for name, (tensors, meta) in results.items():
        path = out_dir / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"scenario": name})
        meta["file"] = path.name
        meta["keys"] = {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in tensors.items()
        }
        manifest["scenarios"][name] = meta
        LOG.info(
            "wrote %s: %d tensors, %d bytes", path, len(tensors), path.stat().st_size
        )
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    LOG.info("fixtures in %s: %d bytes in total", out_dir, total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("tests/fixtures/parity"), help="output folder"
    )
    parser.add_argument(
        "--d-ff",
        type=int,
        default=12,
        help="expert hidden size of the tiny model (default 12 keeps the checkpoint ~2 MB: "
        "the 32 experts x 2 layers dominate its size)",
    )
    parser.add_argument(
        "--min-gate-gap",
        type=float,
        default=TARGET_GATE_GAP,
        help="reseed the centroids until every top-2 vs 3rd gate distance gap exceeds this "
        f"(never below {MIN_GATE_GAP})",
    )
    parser.add_argument(
        "--check-load",
        type=Path,
        metavar="DIR",
        help="only load DIR with MoiraiMoEModule.from_pretrained(DIR, strict=True) and exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ref = _import_reference()
    if args.check_load is not None:
        try:
            num_params = check_load(ref, args.check_load)
        except Exception:  # any failure is reported as exit status 1
            LOG.exception("uni2ts could not load %s strictly", args.check_load)
            return 1
        LOG.info(
            "uni2ts loaded %s strictly: %d parameters", args.check_load, num_params
        )
        return 0
    generate(ref, args.out, args.d_ff, args.min_gate_gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
