"""Hub downloads through a fake hub on 127.0.0.1 (see ``hub_server.py``).

huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at import, so
every load runs in a child process (this file run as a script) with its own
environment; this process's ``os.environ`` is never touched. A child runs a list
of ``from_pretrained`` calls and prints one JSON line: per call, ``ok`` with a
digest of the loaded state dict, or the error class and message, plus the call's
start and end times so the hub's request log can be split per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

import pytest

from hub_server import FakeHub

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 60
TINY = {"d_model": 64, "d_ff": 64, "num_layers": 1, "num_experts": 4}


def state_digest(model: Any) -> str:
    """Return a sha256 over a model's state dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------- the child
def _fit_forecaster(name: str, kwargs: dict[str, Any]) -> Any:
    """Fit and run ``MoiraiMoEForecaster(checkpoint=name)``; return its model."""
    import numpy as np
    import pandas as pd

    from moirai_moe_sk import MoiraiMoEForecaster

    y = pd.Series(np.sin(np.arange(40) / 3.0) + 5.0)
    forecaster = MoiraiMoEForecaster(
        checkpoint=name, num_samples=8, random_state=0, **kwargs
    )
    forecaster.fit(y, fh=[1, 2, 3])
    assert forecaster.predict_interval(coverage=0.8).notna().all().all()
    return forecaster._model


def _child_main(spec: dict[str, Any]) -> None:
    slept: list[float] = []
    if spec.get("record_sleeps"):
        # huggingface_hub retries an unreachable hub with exponential backoff
        # (1 + 2 + 4 + 8 + 8 s); record the waits instead of sleeping them.
        import huggingface_hub.utils._http as hub_http

        hub_http.time = types.SimpleNamespace(  # type: ignore[assignment]
            **{**vars(time), "sleep": slept.append}
        )
    from moirai_moe_sk.model import MoiraiMoEModel

    results = []
    for call in spec["calls"]:
        start = time.time()
        try:
            if call.get("forecaster"):
                model = _fit_forecaster(call["name"], call["kwargs"])
            else:
                model = MoiraiMoEModel.from_pretrained(call["name"], **call["kwargs"])
        except Exception as err:  # noqa: BLE001 - reported to the parent
            cause = err.__cause__
            result = {
                "ok": False,
                "error": type(err).__name__,
                "message": str(err),
                "cause": type(cause).__name__ if cause is not None else None,
            }
        else:
            result = {"ok": True, "digest": state_digest(model)}
        results.append({**result, "start": start, "end": time.time()})
    out = {"results": results, "slept": slept, "xet_imported": "hf_xet" in sys.modules}
    sys.stdout.write(json.dumps(out) + "\n")


# ---------------------------------------------------------------- the parent
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_env(endpoint: str, home: Path, *, offline: bool = False) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
        and not key.lower().endswith("_proxy")
    }
    pythonpath = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(pythonpath),
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@dataclass
class Outcome:
    """What a child printed, and how long it ran."""

    results: list[dict[str, Any]]
    slept: list[float]
    xet_imported: bool
    seconds: float


def run_child(
    calls: list[tuple[str, dict[str, Any]]],
    *,
    endpoint: str,
    home: Path,
    offline: bool = False,
    record_sleeps: bool = False,
    forecaster: bool = False,
) -> Outcome:
    """Run ``from_pretrained(name, **kwargs)`` for each call in one child process.

    Parameters
    ----------
    calls : list of (str, dict)
        Checkpoint names and keyword arguments, run in order.
    endpoint : str
        ``HF_ENDPOINT`` of the child.
    home : pathlib.Path
        ``HF_HOME`` and working directory of the child.
    offline : bool
        Set ``HF_HUB_OFFLINE=1`` in the child.
    record_sleeps : bool
        Record huggingface_hub's retry waits instead of sleeping them.
    forecaster : bool
        Fit a ``MoiraiMoEForecaster(checkpoint=name, **kwargs)`` instead.

    Returns
    -------
    Outcome
        One result per call, the recorded waits and the wall time.
    """
    spec = {
        "calls": [
            {"name": name, "kwargs": kwargs, "forecaster": forecaster}
            for name, kwargs in calls
        ],
        "record_sleeps": record_sleeps,
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)],
        env=_child_env(endpoint, home, offline=offline),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    out = json.loads(lines[-1])
    return Outcome(out["results"], out["slept"], out["xet_imported"], seconds)


@dataclass
class Hub:
    """The running fake hub, the digests of its two models and their folders."""

    server: FakeHub
    digests: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    from moirai_moe_sk.model import MoiraiMoEModel

    from _helpers import make_tiny_model

    root = tmp_path_factory.mktemp("hub")
    digests = {}
    for seed, revision in enumerate(("main", "v2")):
        make_tiny_model(seed=seed, **TINY).save_pretrained(root / revision)
        digests[revision] = state_digest(
            MoiraiMoEModel.from_pretrained(root / revision)
        )
    (root / "noweights").mkdir()
    (root / "noweights" / "config.json").write_bytes(
        (root / "main" / "config.json").read_bytes()
    )
    repos = {
        "org/tiny": {"main": root / "main", "v2": root / "v2"},
        "org/noweights": {"main": root / "noweights"},
    }
    with FakeHub(repos) as server:
        yield Hub(server, digests, root)


@dataclass
class Warm:
    """The first download (main, v2, main again, main by commit) and its cache."""

    outcome: Outcome
    cache: Path
    home: Path


@pytest.fixture(scope="module")
def warm(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Warm:
    """Download main and v2 once into a cache; later children only read it."""
    base = tmp_path_factory.mktemp("warm")
    cache, home = base / "cache", base / "home"
    home.mkdir()
    commit = hub.server.commit("org/tiny", "main")
    outcome = run_child(
        [
            ("org/tiny", {"cache_dir": str(cache)}),
            ("org/tiny", {"cache_dir": str(cache), "revision": "v2"}),
            ("org/tiny", {"cache_dir": str(cache)}),
            ("org/tiny", {"cache_dir": str(cache), "revision": commit}),
        ],
        endpoint=hub.server.endpoint,
        home=home,
    )
    return Warm(outcome, cache, home)


def _paths(hub: Hub, result: dict[str, Any]) -> list[tuple[str, str, str]]:
    requests = hub.server.requests_between(result["start"], result["end"])
    return [(r.server, r.method, r.path) for r in requests]


# ------------------------------------------------------------------- tests
def test_download_yields_the_saved_weights(hub: Hub, warm: Warm):
    first = warm.outcome.results[0]
    assert first["ok"], first
    assert first["digest"] == hub.digests["main"]
    blob = hashlib.sha256((hub.root / "main" / "model.safetensors").read_bytes())
    assert sorted(_paths(hub, first)) == sorted(
        [
            ("hub", "HEAD", "/org/tiny/resolve/main/config.json"),
            ("hub", "GET", "/org/tiny/resolve/main/config.json"),
            ("hub", "HEAD", "/org/tiny/resolve/main/model.safetensors"),
            ("cdn", "GET", f"/blobs/{blob.hexdigest()}"),
        ]
    )
    assert not warm.outcome.xet_imported


def test_revision_selects_the_other_weights(hub: Hub, warm: Warm):
    assert hub.digests["main"] != hub.digests["v2"]
    v2 = warm.outcome.results[1]
    assert v2["ok"], v2
    assert v2["digest"] == hub.digests["v2"]
    blob = hashlib.sha256((hub.root / "v2" / "model.safetensors").read_bytes())
    # config.json is the same blob (same git sha1) as main's: no second GET
    assert sorted(_paths(hub, v2)) == sorted(
        [
            ("hub", "HEAD", "/org/tiny/resolve/v2/config.json"),
            ("hub", "HEAD", "/org/tiny/resolve/v2/model.safetensors"),
            ("cdn", "GET", f"/blobs/{blob.hexdigest()}"),
        ]
    )
    again = warm.outcome.results[2]
    assert again["digest"] == hub.digests["main"]


def test_cached_load_downloads_nothing(hub: Hub, warm: Warm):
    again, by_commit = warm.outcome.results[2:]
    # a branch is re-checked with HEAD requests only; a cached commit needs none
    assert {method for _, method, _ in _paths(hub, again)} == {"HEAD"}
    assert by_commit["digest"] == hub.digests["main"]
    assert _paths(hub, by_commit) == []


def test_files_land_in_cache_dir(hub: Hub, warm: Warm):
    repo = warm.cache / "models--org--tiny"
    for revision in ("main", "v2"):
        commit = hub.server.commit("org/tiny", revision)
        assert (repo / "refs" / revision).read_text() == commit
        snapshot = repo / "snapshots" / commit
        assert (snapshot / "config.json").is_file()
        assert (snapshot / "model.safetensors").read_bytes() == (
            hub.root / revision / "model.safetensors"
        ).read_bytes()
    assert not (warm.home / "hub").exists()  # the default cache is untouched


def test_local_files_only(hub: Hub, warm: Warm, tmp_path: Path):
    before = len(hub.server.requests)
    cold = tmp_path / "cold"
    outcome = run_child(
        [
            ("org/tiny", {"cache_dir": str(warm.cache), "local_files_only": True}),
            (
                "org/tiny",
                {
                    "cache_dir": str(warm.cache),
                    "local_files_only": True,
                    "revision": "v2",
                },
            ),
            ("org/tiny", {"cache_dir": str(cold), "local_files_only": True}),
        ],
        endpoint=hub.server.endpoint,
        home=tmp_path,
    )
    main, v2, missing = outcome.results
    assert main["ok"], main
    assert main["digest"] == hub.digests["main"]
    assert v2["ok"], v2
    assert v2["digest"] == hub.digests["v2"]
    assert missing["error"] == "CheckpointError"
    assert "'org/tiny'" in missing["message"]
    assert "local_files_only=True" in missing["message"]
    assert len(hub.server.requests) == before


def test_offline_mode(hub: Hub, warm: Warm, tmp_path: Path):
    before = len(hub.server.requests)
    outcome = run_child(
        [
            ("org/tiny", {"cache_dir": str(warm.cache)}),
            ("org/tiny", {"cache_dir": str(warm.cache), "revision": "v2"}),
            ("org/tiny", {"cache_dir": str(tmp_path / "cold")}),
        ],
        endpoint=hub.server.endpoint,
        home=tmp_path,
        offline=True,
    )
    main, v2, cold = outcome.results
    assert main["ok"], main
    assert main["digest"] == hub.digests["main"]
    assert v2["ok"], v2
    assert v2["digest"] == hub.digests["v2"]
    assert cold["error"] == "CheckpointError"
    assert "'org/tiny'" in cold["message"]
    assert "HF_HUB_OFFLINE=1" in cold["message"]
    assert len(hub.server.requests) == before


def test_unreachable_hub(hub: Hub, warm: Warm, tmp_path: Path):
    outcome = run_child(
        [
            ("org/tiny", {"cache_dir": str(tmp_path / "cold")}),
            ("org/tiny", {"cache_dir": str(warm.cache), "revision": "v2"}),
        ],
        endpoint=f"http://127.0.0.1:{_free_port()}",
        home=tmp_path,
        record_sleeps=True,
    )
    cold, cached = outcome.results
    assert cold["error"] == "CheckpointError"
    assert "'org/tiny'" in cold["message"]
    assert "cannot be reached" in cold["message"]
    # the library's retries end: a handful of backoff waits, bounded in total
    assert 0 < len(outcome.slept) <= 10
    assert sum(outcome.slept) <= CHILD_TIMEOUT
    # with a warm cache, an unreachable hub falls back to the cached revision
    assert cached["ok"], cached
    assert cached["digest"] == hub.digests["v2"]


@pytest.fixture(scope="module")
def errors(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    base = tmp_path_factory.mktemp("errors")
    cache = str(base / "cache")
    outcome = run_child(
        [
            ("org/missing", {"cache_dir": cache}),
            ("org/tiny", {"cache_dir": cache, "revision": "v3"}),
            ("org/noweights", {"cache_dir": cache}),
        ],
        endpoint=hub.server.endpoint,
        home=base,
    )
    return outcome.results


def test_unknown_repo(errors: list[dict[str, Any]]):
    result = errors[0]
    assert (result["error"], result["cause"]) == (
        "CheckpointError",
        "RepositoryNotFoundError",
    )
    assert "'org/missing'" in result["message"]
    assert "not found" in result["message"]


def test_unknown_revision(errors: list[dict[str, Any]]):
    result = errors[1]
    assert (result["error"], result["cause"]) == (
        "CheckpointError",
        "RevisionNotFoundError",
    )
    assert "'org/tiny'" in result["message"]
    assert "'v3'" in result["message"]


def test_missing_file(errors: list[dict[str, Any]]):
    result = errors[2]
    assert (result["error"], result["cause"]) == (
        "CheckpointError",
        "RemoteEntryNotFoundError",
    )
    assert "'org/noweights'" in result["message"]
    assert "'model.safetensors'" in result["message"]


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))


def test_forecaster_downloads_through_the_hub(hub: Hub, warm: Warm, tmp_path: Path):
    cache = tmp_path / "cache"
    outcome = run_child(
        [
            ("org/tiny", {"cache_dir": str(cache), "revision": "v2"}),
            (
                "org/tiny",
                {"cache_dir": str(tmp_path / "cold"), "local_files_only": True},
            ),
        ],
        endpoint=hub.server.endpoint,
        home=tmp_path,
        forecaster=True,
    )
    fitted, offline = outcome.results
    assert fitted["ok"], fitted
    assert fitted["digest"] == hub.digests["v2"]
    assert (cache / "models--org--tiny" / "refs" / "v2").is_file()
    assert offline["error"] == "CheckpointError"
    assert "'org/tiny'" in offline["message"]


def test_forecaster_offline_with_a_warm_cache(hub: Hub, warm: Warm, tmp_path: Path):
    before = len(hub.server.requests)
    outcome = run_child(
        [("org/tiny", {"cache_dir": str(warm.cache)})],
        endpoint=hub.server.endpoint,
        home=tmp_path,
        offline=True,
        forecaster=True,
    )
    (result,) = outcome.results
    assert result["ok"], result
    assert result["digest"] == hub.digests["main"]
    assert len(hub.server.requests) == before
