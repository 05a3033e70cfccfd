"""Chunked, optionally parallel inference behind :class:`MoiraiMoEForecaster`.

A panel is forecast in chunks of series:

* series are **sorted by context length**, so each chunk is padded only to its
  own longest series (the model never sees padding beyond what a chunk needs);
* a chunk holds as many series as fit a **memory budget**
  (:data:`AUTO_BATCH_BYTES`), estimated from the chunk's token count, the
  number of sample paths and the decoding mode, unless ``batch_size`` fixes it;
* every chunk draws from **its own generator**, seeded from the forecaster's
  seed and the chunk's number, so the result does not depend on where or in
  which order chunks run;
* each chunk's sample paths are **reduced at once** to what was asked for
  (quantiles, median, variance), so peak memory is one chunk's sample paths
  plus the (small) answer, however large the panel.

Chunks run through sktime's :func:`sktime.utils.parallel.parallelize`, so the
forecaster's ``backend:parallel`` config picks sequential execution (default),
joblib (``"loky"``, ``"threading"``; ``"multiprocessing"`` is refused: forked
workers deadlock in torch's thread pool) or Dask
(``"dask"``, on the active ``dask.distributed`` client). A worker process loads
a checkpoint once (through the process-wide cache, :mod:`moirai_moe_sk._cache`)
and reuses it for every chunk it receives; fine-tuned weights travel as
safetensors bytes (:class:`~moirai_moe_sk.checkpoint.PortableModel`) and are
rebuilt once per worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .checkpoint import PortableModel
from .model import MoiraiMoEConfig, MoiraiMoEModel

__all__ = [
    "AUTO_BATCH_BYTES",
    "CheckpointSource",
    "estimate_series_bytes",
    "forecast_chunk",
    "plan_chunks",
]

#: working-memory budget of one chunk when ``batch_size=None`` (bytes)
AUTO_BATCH_BYTES = 2 * 1024**3

_LOCK = threading.Lock()
_PORTABLE: dict[tuple[str, str, str], MoiraiMoEModel] = {}


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a worker finds pretrained weights: arguments of the model cache.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk._inference import CheckpointSource, resolve_model
    >>> source = CheckpointSource("moirai-moe-sk-tiny")
    >>> resolve_model(source, torch.device("cpu"), torch.float32).config.d_model
    128
    """

    checkpoint: str
    revision: str | None = None
    cache_dir: str | None = None
    local_files_only: bool = False


ModelSource = MoiraiMoEModel | CheckpointSource | PortableModel


def resolve_model(
    source: ModelSource, device: torch.device, dtype: torch.dtype
) -> MoiraiMoEModel:
    """Return the model a chunk runs on, loading it at most once per process.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk._inference import resolve_model
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1))
    >>> resolve_model(model, torch.device("cpu"), torch.float32) is model
    True
    """
    if isinstance(source, MoiraiMoEModel):
        return source
    if isinstance(source, CheckpointSource):
        from ._cache import get_model

        return get_model(
            source.checkpoint,
            revision=source.revision,
            cache_dir=source.cache_dir,
            local_files_only=source.local_files_only,
            device=device,
            dtype=dtype,
        )
    key = (hashlib.sha256(source.weights).hexdigest(), str(device), str(dtype))
    with _LOCK:
        model = _PORTABLE.get(key)
        if model is None:
            model = source.to_model().to(device)
            if dtype != torch.float32:
                model.set_compute_dtype(dtype)
            _PORTABLE.clear()  # one fine-tuned model per worker at a time
            _PORTABLE[key] = model
    return model


def estimate_series_bytes(
    config: MoiraiMoEConfig,
    context_tokens: int,
    prediction_tokens: int,
    num_samples: int,
    decoding: str,
) -> int:
    """Rough peak working memory of decoding one series, in bytes.

    ``context_tokens`` and ``prediction_tokens`` count tokens over all variates
    (targets and covariates). Activations are counted at float32: about 16
    ``d_model``-wide and ``3 k`` ``d_ff``-wide tensors per token, plus three
    (head, query, key) attention tensors.

    Examples
    --------
    >>> from moirai_moe_sk._inference import estimate_series_bytes
    >>> from moirai_moe_sk.model import MoiraiMoEConfig
    >>> cfg = MoiraiMoEConfig()
    >>> exact = estimate_series_bytes(cfg, 64, 6, 100, "exact")
    >>> fast = estimate_series_bytes(cfg, 64, 6, 100, "fast")
    >>> exact > 5 * fast
    True
    """
    per_token = 4 * (
        16 * config.d_model + 3 * config.num_experts_per_token * config.d_ff
    )
    heads = config.num_heads

    def attention(queries: int, keys: int) -> int:
        return 4 * 3 * heads * queries * keys

    seq = context_tokens + prediction_tokens
    if decoding == "exact":
        return num_samples * (seq * per_token + attention(seq, seq))
    # fast: the context once per series; per path, the new tokens of a step
    # (bounded by all future tokens) and the path's cached keys and values
    context = context_tokens * per_token + attention(context_tokens, context_tokens)
    kv = 2 * config.num_layers * prediction_tokens * config.d_model * 4
    path = prediction_tokens * per_token + attention(prediction_tokens, seq) + kv
    return context + num_samples * path


def plan_chunks(
    lengths: Sequence[int],
    bytes_per_series: Callable[[int], int],
    batch_size: int | None,
    budget: int = AUTO_BATCH_BYTES,
) -> list[np.ndarray]:
    """Group series into chunks, shortest first.

    Parameters
    ----------
    lengths : sequence of int
        Context length (steps) each series is forecast from.
    bytes_per_series : callable
        Working memory of one series of a given padded length.
    batch_size : int or None
        Fixed number of series per chunk; ``None`` fills each chunk up to
        ``budget`` (at least one series per chunk).
    budget : int
        Bytes per chunk.

    Returns
    -------
    list of np.ndarray
        Row indices of each chunk, in increasing length.

    Examples
    --------
    >>> from moirai_moe_sk._inference import plan_chunks
    >>> [c.tolist() for c in plan_chunks([50, 10, 30, 20], lambda n: n, None, 60)]
    [[1, 3], [2], [0]]
    >>> [c.tolist() for c in plan_chunks([50, 10, 30, 20], lambda n: n, 3)]
    [[1, 3, 2], [0]]
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    if batch_size is not None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    chunks: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        longest = int(lengths[order[end - 1]])
        if end - start > 1 and (end - start) * bytes_per_series(longest) > budget:
            chunks.append(order[start : end - 1])
            start = end - 1
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of a chunk's generator: ``seed`` itself for the first chunk.

    Examples
    --------
    >>> from moirai_moe_sk._inference import chunk_seed
    >>> chunk_seed(7, 0), chunk_seed(7, 1) == chunk_seed(7, 1), chunk_seed(7, 1) == 7
    (7, True, False)
    """
    if chunk == 0:
        return seed
    entropy = np.random.SeedSequence([seed % 2**63, chunk]).generate_state(2)
    return int(entropy[0]) << 31 ^ int(entropy[1])


def forecast_chunk(job: dict[str, Any], meta: dict[str, Any]) -> np.ndarray:
    """Decode one chunk and reduce its sample paths (run by sktime's ``parallelize``).

    ``job`` holds the chunk's arrays (``target``, ``observed``, ``is_pad`` and
    optional covariates), ``steps`` (series, len(fh)) and ``seed``; ``meta`` the
    model source, ``device``, ``dtype``, ``prediction_length``,
    ``num_samples``, ``decoding``, ``reference_rng`` (optional, default True)
    and ``reduce``, a function of the (series,
    sample, len(fh), variate) paths (``None`` returns the paths).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from moirai_moe_sk._inference import CheckpointSource, forecast_chunk
    >>> y = np.sin(np.arange(40.0, dtype=np.float32)).reshape(1, 40, 1)
    >>> job = {"target": y, "observed": y == y, "is_pad": np.zeros((1, 40), bool),
    ...        "steps": np.array([[1, 2, 3]]), "seed": 0}
    >>> meta = {"model": CheckpointSource("moirai-moe-sk-tiny"), "device": "cpu",
    ...         "dtype": torch.float32, "prediction_length": 3, "num_samples": 5,
    ...         "decoding": "exact", "reduce": None}
    >>> forecast_chunk(job, meta).shape
    (1, 5, 3, 1)
    """
    from .model import forecast  # looked up per call (tests spy on it)

    device = torch.device(meta["device"])
    model = resolve_model(meta["model"], device, meta["dtype"])

    def tensor(name: str) -> torch.Tensor | None:
        array = job.get(name)
        return None if array is None else torch.from_numpy(array).to(device)

    generator = torch.Generator(device=device).manual_seed(job["seed"])
    target = torch.from_numpy(job["target"]).to(device)
    output = forecast(
        model,
        target,
        tensor("observed"),
        tensor("is_pad"),
        prediction_length=meta["prediction_length"],
        num_samples=meta["num_samples"],
        feat_dynamic_real=tensor("known"),
        observed_feat_dynamic_real=tensor("known_observed"),
        past_feat_dynamic_real=tensor("past"),
        past_observed_feat_dynamic_real=tensor("past_observed"),
        generator=generator,
        decoding=meta["decoding"],
        reference_rng=meta.get("reference_rng", True),
    )
    samples = output.float().cpu().numpy().astype(np.float64)
    rows = np.arange(samples.shape[0])[:, None]
    paths = samples[rows, :, job["steps"] - 1].transpose(0, 2, 1, 3)
    reduce = meta["reduce"]
    return paths if reduce is None else reduce(paths)
