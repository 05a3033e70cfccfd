"""Generate the uni2ts 2.0.0 GluonTS-predictor parity fixtures in ``tests/fixtures/parity/``.

Runs ONLY with the python of a reference venv that has ``uni2ts==2.0.0`` and
``gluonts`` installed (recipe in ``tests/fixtures/parity/README.md``); the
project venv does not have uni2ts on purpose. It needs the committed tiny
checkpoint ``tests/fixtures/parity/tiny/`` (written by
``scripts/make_parity_fixtures.py``).

Usage::

    /path/to/refvenv/bin/python scripts/make_predictor_fixtures.py --out tests/fixtures/parity

What it writes under ``--out`` (default ``tests/fixtures/parity``):

``predictor.safetensors``
    Per case ``<case>``: the raw input series (``<case>.target``, NaNs kept),
    the batch the predictor fed to ``MoiraiMoEForecast.forward``
    (``<case>.past_target``, ``<case>.past_observed_target``,
    ``<case>.past_is_pad``: after gluonts' imputation and context cut) and the
    ``SampleForecast`` it returned: ``<case>.samples`` (N, H),
    ``<case>.mean`` (H,) and ``<case>.quantiles`` (Q, H) at the levels listed in
    the json under ``quantile_levels``.

``predictor.json``
    Versions, the predictor construction and seeding, each case's exact inputs
    (NaN written as null), frequency, start, forecast start, context length,
    horizon, number of samples, seed, the imputed values, the quantile order
    statistics used, the reference dtypes, the shape/dtype of every stored key,
    and a batch-composition experiment (does batching change the random stream?).

The end-to-end path is uni2ts' own::

    module = MoiraiMoEModule.from_pretrained(tiny, strict=True)
    predictor = MoiraiMoEForecast(prediction_length=H, target_dim=1,
        feat_dynamic_real_dim=0, past_feat_dynamic_real_dim=0, context_length=C,
        module=module, patch_size=16, num_samples=N).create_predictor(batch_size=1)
    torch.manual_seed(seed)
    forecasts = list(predictor.predict(ListDataset([...], freq=freq)))

Each case is a ListDataset with ONE series, so each predict call runs exactly one
batch of one series. Conventions of the stored tensors: floats float32 (the
predictor's own dtype for target, samples, mean and quantiles), masks bool (the
predictor passes ``past_is_pad`` as float64 0/1; listed under
``reference_dtypes``). Deterministic: ``torch.set_num_threads(1)``, fixed seeds,
a rerun on the same machine gives byte-identical files (another CPU may differ
in the last bits of the floats).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

LOG = logging.getLogger("make_predictor_fixtures")

PATCH_SIZE = 16
BATCH_SIZE = 1
QUANTILE_LEVELS = (0.025, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.975)
COMMAND = (
    "/path/to/refvenv/bin/python scripts/make_predictor_fixtures.py "
    "--out tests/fixtures/parity"
)

# sktime.datasets.load_airline() (sktime 1.2.0): monthly, PeriodIndex 1949-01 .. 1960-12,
# float64, name "Number of airline passengers". Hard-coded because the reference venv has
# no sktime.
AIRLINE_START = "1949-01"
AIRLINE_FREQ = "M"
AIRLINE = [
    112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118,
    115, 126, 141, 135, 125, 149, 170, 170, 158, 133, 114, 140,
    145, 150, 178, 163, 172, 178, 199, 199, 184, 162, 146, 166,
    171, 180, 193, 181, 183, 218, 230, 242, 209, 191, 172, 194,
    196, 196, 236, 235, 229, 243, 264, 272, 237, 211, 180, 201,
    204, 188, 235, 227, 234, 264, 302, 293, 259, 229, 203, 229,
    242, 233, 267, 269, 270, 315, 364, 347, 312, 274, 237, 278,
    284, 277, 317, 313, 318, 374, 413, 405, 355, 306, 271, 306,
    315, 301, 356, 348, 355, 422, 465, 467, 404, 347, 305, 336,
    340, 318, 362, 348, 363, 435, 491, 505, 404, 359, 310, 337,
    360, 342, 406, 396, 420, 472, 548, 559, 463, 407, 362, 405,
    417, 391, 419, 461, 472, 535, 622, 606, 508, 461, 390, 432,
]  # fmt: skip

MISSING_NAN_POSITIONS = (5, 29, 30, 41, 57, 66)


# ----------------------------------------------------------------------------------------------
# reference imports (only available in the reference venv)
# ----------------------------------------------------------------------------------------------
def _import_reference() -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", "Using `json`-module", UserWarning)
    # CausalMeanValueImputation divides 0/0 at t = 0 and then overwrites that entry
    warnings.filterwarnings(
        "ignore",
        "invalid value encountered in divide",
        RuntimeWarning,
        module="gluonts.transform.feature",
    )
    try:
        from gluonts.dataset.common import ListDataset
        from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule
    except ImportError as err:  # pragma: no cover - depends on the interpreter
        msg = (
            f"uni2ts/gluonts are not importable ({err}); run this script with the reference "
            "venv's python (see tests/fixtures/parity/README.md)"
        )
        raise SystemExit(msg) from err
    return {
        "ListDataset": ListDataset,
        "MoiraiMoEForecast": MoiraiMoEForecast,
        "MoiraiMoEModule": MoiraiMoEModule,
    }


# ----------------------------------------------------------------------------------------------
# cases (inputs)
# ----------------------------------------------------------------------------------------------
def _rounded(values: np.ndarray) -> list[float]:
    """3 decimals, so the json numbers are short and round-trip exactly."""
    return [round(float(v), 3) for v in values]


def case_airline() -> dict[str, Any]:
    return {
        "description": "sktime's airline series (144 monthly points), context 100 = the last "
        "100 points, H=24 > 16 so two autoregressive decoding steps",
        "target": [float(v) for v in AIRLINE],
        "freq": AIRLINE_FREQ,
        "start": AIRLINE_START,
        "context_length": 100,
        "prediction_length": 24,
        "num_samples": 100,
        "seed": 4101,
    }


def case_short_padded() -> dict[str, Any]:
    rng = np.random.default_rng(4202)
    t = np.arange(40)
    y = 30.0 + 0.2 * t + 5.0 * np.sin(2 * np.pi * t / 7) + rng.normal(0.0, 1.0, t.size)
    return {
        "description": "a 40-point daily series with context 64: the predictor left-pads 24 "
        "steps (0.0, unobserved, past_is_pad=1); H=18 > 16 so two decoding steps",
        "target": _rounded(y),
        "freq": "D",
        "start": "2020-01-01",
        "context_length": 64,
        "prediction_length": 18,
        "num_samples": 50,
        "seed": 4203,
    }


def case_missing() -> dict[str, Any]:
    rng = np.random.default_rng(4302)
    t = np.arange(80)
    y = 50.0 + 8.0 * np.sin(2 * np.pi * t / 24) + rng.normal(0.0, 1.5, t.size)
    target: list[float | None] = _rounded(y)
    for i in MISSING_NAN_POSITIONS:
        target[i] = None
    return {
        "description": "an 80-point hourly series with 6 NaNs (one before the context window "
        "that still feeds the causal-mean imputation, two consecutive), a NaN-free last "
        "value, context 64 (the last 64 points, no padding), H=12 so a single decoding step",
        "target": target,
        "freq": "h",
        "start": "2021-03-01 00:00",
        "context_length": 64,
        "prediction_length": 12,
        "num_samples": 50,
        "seed": 4303,
    }


CASES = {
    "airline": case_airline,
    "short_padded": case_short_padded,
    "missing": case_missing,
}


def _target_array(spec: dict[str, Any]) -> np.ndarray:
    return np.array(
        [np.nan if v is None else v for v in spec["target"]], dtype=np.float64
    )


def gluonts_causal_mean_imputation(values: np.ndarray) -> np.ndarray:
    """Explicit re-statement of gluonts 0.14 ``CausalMeanValueImputation`` (1-D float32).

    NOT "mean of the earlier observed values": the NaNs are first forward-filled (leading
    NaNs take the first observed value), then every NaN at t >= 1 becomes the mean of the
    FORWARD-FILLED values [0, t) (a float64 cumsum divided by t, cast back to float32), so an
    earlier NaN counts with its forward-filled value and is included in the divisor.
    """
    values = values.astype(np.float32)
    mask = np.isnan(values)
    if not mask.any():
        return values
    idx = np.where(~mask, np.arange(values.size), 0)
    np.maximum.accumulate(idx, out=idx)
    ffill = values[idx]
    lead = np.isnan(ffill)
    ffill[lead] = values[~mask][0]
    with np.errstate(
        invalid="ignore", divide="ignore"
    ):  # t = 0: 0/0, overwritten below
        causal = np.concatenate(([0.0], ffill[:-1])).cumsum() / np.arange(values.size)
    out = values.copy()
    out[mask] = causal[mask]
    out[0] = ffill[0]
    return out


# ----------------------------------------------------------------------------------------------
# running the predictor
# ----------------------------------------------------------------------------------------------
class Capture:
    """Record the kwargs of every ``MoiraiMoEForecast.forward`` call and count module calls."""

    def __init__(self, forecast: torch.nn.Module) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []
        self.module_calls = 0
        self._handles = [
            forecast.register_forward_pre_hook(self._pre, with_kwargs=True),
            forecast.module.register_forward_pre_hook(self._count),
        ]

    def _pre(self, _mod, args, kwargs):
        if args:
            msg = "the predictor passed positional arguments to forward"
            raise RuntimeError(msg)
        self.calls.append({k: v.detach().clone() for k, v in kwargs.items()})

    def _count(self, _mod, _args):
        self.module_calls += 1

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


def build_forecast(ref: dict, module, spec: dict[str, Any]):
    return ref["MoiraiMoEForecast"](
        prediction_length=spec["prediction_length"],
        target_dim=1,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0,
        context_length=spec["context_length"],
        module=module,
        patch_size=PATCH_SIZE,
        num_samples=spec["num_samples"],
    ).eval()


def predict(
    ref: dict, forecast, entries: list[dict], freq: str, seed: int, batch_size: int
):
    dataset = ref["ListDataset"](entries, freq=freq)
    predictor = forecast.create_predictor(batch_size=batch_size, device="cpu")
    torch.manual_seed(seed)
    return list(predictor.predict(dataset))


def _dtype(value) -> str:
    return str(value.dtype).replace("torch.", "")


def run_case(ref: dict, module, name: str, spec: dict[str, Any]):
    forecast = build_forecast(ref, module, spec)
    raw = _target_array(spec)
    entry = {"start": spec["start"], "target": raw.copy(), "item_id": name}
    capture = Capture(forecast)
    try:
        forecasts = predict(
            ref, forecast, [entry], spec["freq"], spec["seed"], BATCH_SIZE
        )
    finally:
        capture.remove()
    if len(forecasts) != 1 or len(capture.calls) != 1:
        msg = f"{name}: expected one forecast from one forward call"
        raise RuntimeError(msg)
    fc = forecasts[0]
    inputs = capture.calls[0]
    n, h, c = spec["num_samples"], spec["prediction_length"], spec["context_length"]
    if fc.samples.shape != (n, h) or fc.samples.dtype != np.float32:
        msg = f"{name}: unexpected samples {fc.samples.shape} {fc.samples.dtype}"
        raise RuntimeError(msg)

    # determinism of the predictor itself
    again = predict(
        ref, build_forecast(ref, module, spec), [entry], spec["freq"], spec["seed"], 1
    )
    if not np.array_equal(again[0].samples, fc.samples):
        msg = f"{name}: seeded predictor is not reproducible"
        raise RuntimeError(msg)

    # the same samples from a direct forward on the captured batch with a bool past_is_pad
    direct_inputs = dict(inputs)
    direct_inputs["past_is_pad"] = inputs["past_is_pad"].bool()
    torch.manual_seed(spec["seed"])
    with torch.no_grad():
        direct = build_forecast(ref, module, spec)(**direct_inputs)
    direct_matches = bool(np.array_equal(direct[0].numpy(), fc.samples))

    # the context the model saw: imputation + cut + padding, checked against our statement
    imputed_full = gluonts_causal_mean_imputation(raw)
    observed_full = ~np.isnan(raw)
    length = raw.size
    pad = max(c - length, 0)
    ctx_vals = np.concatenate([np.zeros(pad, np.float32), imputed_full[-c:]])
    ctx_obs = np.concatenate([np.zeros(pad, bool), observed_full[-c:]])
    ctx_pad = np.concatenate([np.ones(pad), np.zeros(min(c, length))])
    expected_context_ok = (
        np.array_equal(inputs["past_target"][0, :, 0].numpy(), ctx_vals)
        and np.array_equal(inputs["past_observed_target"][0, :, 0].numpy(), ctx_obs)
        and np.array_equal(inputs["past_is_pad"][0].numpy(), ctx_pad)
    )
    if not expected_context_ok:
        msg = (
            f"{name}: the captured batch differs from the stated imputation/cut/padding"
        )
        raise RuntimeError(msg)

    quantiles = np.stack([fc.quantile(q) for q in QUANTILE_LEVELS])
    order = np.sort(fc.samples, axis=0)
    q_index = {str(q): int(np.round((n - 1) * q)) for q in QUANTILE_LEVELS}
    for row, q in enumerate(QUANTILE_LEVELS):
        if not np.array_equal(quantiles[row], order[q_index[str(q)]]):
            msg = f"{name}: quantile({q}) is not the stated order statistic"
            raise RuntimeError(msg)
    mean = np.asarray(fc.mean)

    tensors = {
        f"{name}.target": torch.from_numpy(raw.astype(np.float32)),
        f"{name}.past_target": inputs["past_target"].float(),
        f"{name}.past_observed_target": inputs["past_observed_target"].bool(),
        f"{name}.past_is_pad": inputs["past_is_pad"].bool(),
        f"{name}.samples": torch.from_numpy(fc.samples.copy()),
        f"{name}.mean": torch.from_numpy(mean.copy()),
        f"{name}.quantiles": torch.from_numpy(quantiles.copy()),
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for key, value in tensors.items():
        finite = not value.dtype.is_floating_point or torch.isfinite(value).all()
        if key != f"{name}.target" and not finite:
            msg = f"{name}: {key} has non-finite values"
            raise RuntimeError(msg)

    nan_pos = [int(i) for i in np.flatnonzero(np.isnan(raw))]
    first_ctx = max(length - c, 0)
    meta: dict[str, Any] = {
        "description": spec["description"],
        "item_id": name,
        "freq": spec["freq"],
        "start": spec["start"],
        "length": int(length),
        "context_length": c,
        "prediction_length": h,
        "num_samples": n,
        "seed": spec["seed"],
        "target": spec["target"],
        "context": {
            "first_series_index_in_context": first_ctx,
            "left_pad_steps": pad,
            "context_tokens": -(-c // PATCH_SIZE),
            "prediction_tokens": -(-h // PATCH_SIZE),
            "decoding_steps": -(-h // PATCH_SIZE),
        },
        "nan_positions": nan_pos,
        "nan_positions_in_context": [i - first_ctx for i in nan_pos if i >= first_ctx],
        "imputed_values": {str(i): float(imputed_full[i]) for i in nan_pos},
        "forecast_start": str(fc.start_date),
        "forecast_start_freqstr": fc.start_date.freqstr,
        "forecast_start_offset_from_start": int(length),
        "item_id_returned": fc.item_id,
        "quantile_sample_index": q_index,
        "module_calls": capture.module_calls,
        "direct_forward_with_bool_past_is_pad_matches": direct_matches,
        "reference_dtypes": {
            **{f"forward.{k}": _dtype(v) for k, v in inputs.items()},
            "forecast.samples": str(fc.samples.dtype),
            "forecast.mean": str(mean.dtype),
            "forecast.quantile": str(quantiles.dtype),
        },
        "forward_input_shapes": {k: list(v.shape) for k, v in inputs.items()},
        "keys": {
            k: {"shape": list(v.shape), "dtype": _dtype(v)} for k, v in tensors.items()
        },
    }
    if nan_pos:
        naive = {}
        for i in nan_pos:
            prev = raw[:i][~np.isnan(raw[:i])]
            naive[str(i)] = float(np.float32(prev.mean()))
        meta["mean_of_earlier_observed_values_for_comparison"] = naive
    LOG.info(
        "%s: samples %s, forecast start %s, %d module calls, samples |max| %.3f",
        name,
        fc.samples.shape,
        fc.start_date,
        capture.module_calls,
        float(np.abs(fc.samples).max()),
    )
    return tensors, meta


def batch_composition_experiment(ref: dict, module) -> dict[str, Any]:
    """Check whether another series in the batch changes series A's samples (one seed)."""
    spec = case_airline()
    a = _target_array(spec)
    b = 0.5 * a + 10.0
    entries = [
        {"start": spec["start"], "target": a.copy(), "item_id": "A"},
        {"start": spec["start"], "target": b.copy(), "item_id": "B"},
    ]

    def run(items, batch_size):
        forecast = build_forecast(ref, module, spec)
        return [
            f.samples
            for f in predict(
                ref, forecast, items, spec["freq"], spec["seed"], batch_size
            )
        ]

    solo_a = run(entries[:1], 1)[0]
    solo_b = run(entries[1:], 1)[0]
    both_b2 = run(entries, 2)
    both_b1 = run(entries, 1)
    result = {
        "setup": "airline case settings and seed; A = airline, B = 0.5 * airline + 10; "
        "dataset [A, B]",
        "A_alone_equals_A_in_one_batch_of_2": bool(np.array_equal(solo_a, both_b2[0])),
        "A_alone_equals_A_first_of_batches_of_1": bool(
            np.array_equal(solo_a, both_b1[0])
        ),
        "B_alone_equals_B_second_of_batches_of_1": bool(
            np.array_equal(solo_b, both_b1[1])
        ),
        "B_alone_equals_B_in_one_batch_of_2": bool(np.array_equal(solo_b, both_b2[1])),
    }
    LOG.info("batch composition: %s", result)
    return result


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("uni2ts", "gluonts", "torch", "numpy", "pandas", "safetensors")
    found = {name: version(name) for name in names}
    found["python"] = platform.python_version()
    return found


def generate(ref: dict, out_dir: Path, tiny: Path) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)  # bitwise-stable CPU kernels across machines
    module = ref["MoiraiMoEModule"].from_pretrained(tiny, strict=True)
    module.eval()

    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, Any] = {}
    for name, make in CASES.items():
        case_tensors, meta = run_case(ref, module, name, make())
        tensors.update(case_tensors)
        cases[name] = meta
    composition = batch_composition_experiment(ref, module)

    try:
        tiny_rel = str(tiny.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        tiny_rel = str(tiny)
    manifest: dict[str, Any] = {
        "generator": "scripts/make_predictor_fixtures.py",
        "command": COMMAND,
        "versions": _versions(),
        "torch_num_threads": 1,
        "file": "predictor.safetensors",
        "model": {
            "folder": tiny_rel,
            "loaded_with": "MoiraiMoEModule.from_pretrained(tiny, strict=True)",
            "patch_size": PATCH_SIZE,
        },
        "predictor": {
            "construction": "MoiraiMoEForecast(prediction_length=H, target_dim=1, "
            "feat_dynamic_real_dim=0, past_feat_dynamic_real_dim=0, context_length=C, "
            "module=module, patch_size=16, num_samples=N).create_predictor("
            f"batch_size={BATCH_SIZE}, device='cpu')",
            "dataset": "gluonts ListDataset([{'start': start, 'target': target (float64, "
            "NaN for missing), 'item_id': case}], freq=freq): ONE series per predict call",
            "batch_size": BATCH_SIZE,
            "batching": "each case is its own predict call on a one-series dataset, so the "
            "model sees exactly one batch of one series (B=1)",
            "seeding": "torch.manual_seed(seed) immediately before predictor.predict(dataset), "
            "forecasts consumed with list(); nothing else draws from the torch RNG in between",
            "num_samples_argument": "predict(dataset) without num_samples: N comes from the "
            "MoiraiMoEForecast hparams",
            "transform": "AsNumpyArray(float32) -> AddObservedValuesIndicator("
            "CausalMeanValueImputation) on the whole series -> ExpandDimArray -> "
            "TFTInstanceSplitter(TestSplitSampler, past_length=C, future_length=H, "
            "dummy_value=0.0, output_NTC)",
        },
        "quantile_levels": list(QUANTILE_LEVELS),
        "quantile_rule": "SampleForecast.quantile(q) = np.sort(samples, axis=0)"
        "[int(np.round((N - 1) * q))]: an order statistic, no interpolation; np.round rounds "
        "half to even (N=50, q=0.5: 24.5 -> 24)",
        "mean_rule": "SampleForecast.mean = np.mean(samples, axis=0) in float32",
        "imputation_rule": "gluonts CausalMeanValueImputation on the full float32 series "
        "before the context cut: forward-fill the NaNs (leading NaNs take the first observed "
        "value), then each NaN at t >= 1 becomes mean(forward_filled[0:t]) (float64 cumsum / "
        "t, cast to float32); the NaN steps are marked unobserved. This is NOT the mean of the "
        "earlier observed values (see mean_of_earlier_observed_values_for_comparison).",
        "context_rule": "TFTInstanceSplitter with TestSplitSampler: past = the last C steps; "
        "shorter series are left-padded with 0.0, observed False, past_is_pad 1.0 (float64)",
        "forecast_start_rule": "pd.Period(start, freq) + len(target)",
        "conventions": "tensors: floats float32, masks bool (past_is_pad reaches forward as "
        "float64 0/1: see reference_dtypes); <case>.target keeps the NaNs; json target "
        "lists write NaN as null; quantiles rows follow quantile_levels",
        "cases": cases,
        "batch_composition": composition,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictor.safetensors"
    save_file(tensors, str(path), metadata={"generator": manifest["generator"]})
    (out_dir / "predictor.json").write_text(
        json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    )
    total = path.stat().st_size + (out_dir / "predictor.json").stat().st_size
    LOG.info(
        "wrote %s (%d tensors) and predictor.json: %d bytes", path, len(tensors), total
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("tests/fixtures/parity"), help="output folder"
    )
    parser.add_argument(
        "--tiny",
        type=Path,
        default=None,
        help="checkpoint folder of the tiny reference model (default: OUT/tiny)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ref = _import_reference()
    tiny = args.tiny if args.tiny is not None else args.out / "tiny"
    generate(ref, args.out, tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
