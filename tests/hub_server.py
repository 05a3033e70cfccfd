"""A small fake Hugging Face hub on 127.0.0.1, for offline download tests.

It answers what ``huggingface_hub.hf_hub_download`` (2.4.0) asks, the way the
real hub does:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` of a regular (git)
  file: ``200`` with ``ETag`` (the git blob sha1, quoted), ``Content-Length``
  and ``X-Repo-Commit``.
* The same for an LFS file (by default ``*.safetensors`` and ``*.bin``): ``302``
  with ``Location`` on a second "CDN" server (another port, so another origin:
  the client neither follows the redirect of its ``HEAD`` nor sends its token
  there), ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``.
  The CDN answers ``GET /blobs/{sha256}`` with the bytes.
* Errors as ``404`` with the hub's ``X-Error-Code`` header, which
  ``huggingface_hub`` turns into its error classes: ``RepoNotFound``
  (``RepositoryNotFoundError``), ``RevisionNotFound`` (``RevisionNotFoundError``)
  and ``EntryNotFound`` (``RemoteEntryNotFoundError``, with ``X-Repo-Commit`` so
  the client can cache the absence).

No Xet header (``X-Xet-Hash``, ``X-Xet-Refresh-Route``, ``Link: xet-auth``) is
ever sent, so downloads go through plain HTTP even with ``hf_xet`` installed.
Every request is recorded with its time, so tests can check that a cached load
made no download, or no request at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["FakeHub", "HubRequest"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")


@dataclass(frozen=True)
class HubRequest:
    """One request received by the fake hub or its CDN.

    Attributes
    ----------
    server : str
        ``"hub"`` or ``"cdn"``.
    method : str
        ``"HEAD"`` or ``"GET"``.
    path : str
        The request path, as sent (percent-encoded).
    time : float
        ``time.time()`` when the request arrived.
    headers : dict
        The request headers, lower-cased names.
    """

    server: str
    method: str
    path: str
    time: float
    headers: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _File:
    data: bytes
    lfs: bool

    @property
    def git_sha1(self) -> str:
        header = f"blob {len(self.data)}\0".encode()
        return hashlib.sha1(header + self.data, usedforsecurity=False).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class _Snapshot:
    commit: str
    files: dict[str, _File]


class FakeHub:
    """A fake Hugging Face hub serving folders, run in daemon threads.

    Parameters
    ----------
    repos : mapping
        ``{repo_id: {revision: folder}}``. A revision is a branch or tag name
        (``"main"``, ``"v2"``) or a 40-hex commit id. Every file under a folder
        is served under its relative path; contents are read once, here.
    lfs_suffixes : iterable of str
        File name endings served like LFS files (redirected to the CDN).

    Examples
    --------
    Serve a checkpoint folder as revision ``main`` of ``org/tiny`` (the tests
    in ``test_hub.py`` run this)::

        with FakeHub({"org/tiny": {"main": folder}}) as hub:
            env = {"HF_ENDPOINT": hub.endpoint}
    """

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, str | Path]],
        lfs_suffixes: Iterable[str] = (".safetensors", ".bin"),
    ) -> None:
        suffixes = tuple(lfs_suffixes)
        self._repos: dict[str, dict[str, _Snapshot]] = {}
        self._blobs: dict[str, bytes] = {}
        for repo_id, revisions in repos.items():
            snapshots: dict[str, _Snapshot] = {}
            for revision, folder in revisions.items():
                files = {
                    path.relative_to(folder).as_posix(): _File(
                        path.read_bytes(), path.name.endswith(suffixes)
                    )
                    for path in sorted(Path(folder).rglob("*"))
                    if path.is_file()
                }
                commit = revision if _COMMIT.match(revision) else None
                snapshot = _Snapshot(
                    commit or _commit_id(repo_id, revision, files), files
                )
                snapshots[revision] = snapshot
                for file in files.values():
                    if file.lfs:
                        self._blobs[file.sha256] = file.data
            # a commit id also resolves to its snapshot, as on the real hub
            for snapshot in list(snapshots.values()):
                snapshots.setdefault(snapshot.commit, snapshot)
            self._repos[repo_id] = snapshots
        self._lock = threading.Lock()
        self._requests: list[HubRequest] = []
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start the hub and CDN servers on free ports of 127.0.0.1.

        Returns
        -------
        FakeHub
            ``self``, started.
        """
        if self._servers:
            return self
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.fake_hub = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-hub-{role}",
                daemon=True,
            )
            thread.start()
            self._servers[role] = server
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both servers and close their sockets (idempotent)."""
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Self:
        """Start the servers (see :meth:`start`)."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the servers (see :meth:`stop`)."""
        self.stop()

    # ---------------------------------------------------------------- info
    @property
    def endpoint(self) -> str:
        """The hub's URL, for ``HF_ENDPOINT`` (no trailing slash)."""
        return self._url("hub")

    @property
    def cdn_endpoint(self) -> str:
        """The CDN's URL, where LFS files are redirected."""
        return self._url("cdn")

    def _url(self, role: str) -> str:
        if role not in self._servers:
            msg = "the fake hub is not running; call start() first"
            raise RuntimeError(msg)
        host, port = self._servers[role].server_address[:2]
        return f"http://{host}:{port}"

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """Return the commit id the hub reports for ``revision`` of ``repo_id``.

        Parameters
        ----------
        repo_id : str
            A served repository.
        revision : str
            A served revision.

        Returns
        -------
        str
            40 hex digits.
        """
        return self._repos[repo_id][revision].commit

    @property
    def requests(self) -> list[HubRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_between(self, start: float, end: float) -> list[HubRequest]:
        """Return the requests received between two ``time.time()`` values.

        Parameters
        ----------
        start, end : float
            Bounds, inclusive.

        Returns
        -------
        list of HubRequest
            Oldest first.
        """
        return [r for r in self.requests if start <= r.time <= end]

    # ------------------------------------------------------------- serving
    def _record(self, request: HubRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answer_hub(
        self, path: str
    ) -> tuple[int, dict[str, str], bytes]:  # status, headers, body
        match = _RESOLVE.match(path)
        if not match:
            return _error(404, None, f"no such endpoint: {path}")
        repo_id = match["repo"]
        revision, filename = unquote(match["rev"]), unquote(match["file"])
        snapshots = self._repos.get(repo_id)
        if snapshots is None:
            return _error(404, "RepoNotFound", "Repository not found")
        snapshot = snapshots.get(revision)
        if snapshot is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        file = snapshot.files.get(filename)
        if file is None:
            status, headers, body = _error(404, "EntryNotFound", "Entry not found")
            headers["X-Repo-Commit"] = snapshot.commit
            return status, headers, body
        if file.lfs:
            headers = {
                "Location": f"{self.cdn_endpoint}/blobs/{file.sha256}",
                "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(len(file.data)),
                "X-Repo-Commit": snapshot.commit,
                "ETag": f'"{file.git_sha1}"',
                "Content-Length": "0",
            }
            return 302, headers, b""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(file.data)),
            "ETag": f'"{file.git_sha1}"',
            "X-Repo-Commit": snapshot.commit,
        }
        return 200, headers, file.data

    def _answer_cdn(self, path: str) -> tuple[int, dict[str, str], bytes]:
        match = _BLOB.match(path)
        data = self._blobs.get(match["sha"]) if match else None
        if data is None:
            return _error(404, None, f"no such blob: {path}")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
            "ETag": f'"{match["sha"]}"',  # type: ignore[index]
        }
        return 200, headers, data


def _commit_id(repo_id: str, revision: str, files: Mapping[str, _File]) -> str:
    digest = hashlib.sha1(f"{repo_id}\0{revision}".encode(), usedforsecurity=False)
    for name, file in sorted(files.items()):
        digest.update(f"\0{name}\0{file.git_sha1}".encode())
    return digest.hexdigest()


def _error(
    status: int, code: str | None, message: str
) -> tuple[int, dict[str, Any], bytes]:
    body = json.dumps({"error": message}).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Error-Message": message,
    }
    if code is not None:
        headers["X-Error-Code"] = code
    return status, headers, body


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def _respond(self, *, send_body: bool) -> None:
        hub: FakeHub = self.server.fake_hub  # type: ignore[attr-defined]
        role: str = self.server.role  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        hub._record(
            HubRequest(
                server=role,
                method=self.command,
                path=path,
                time=time.time(),
                headers={k.lower(): v for k, v in self.headers.items()},
            )
        )
        answer = hub._answer_hub if role == "hub" else hub._answer_cdn
        status, headers, body = answer(path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        """Keep test output quiet."""
