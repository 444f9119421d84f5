"""A local Hugging Face Hub-compatible HTTP server for offline tests.

``HubServer(root)`` serves, on 127.0.0.1 and an OS-chosen port, the part of the Hub API that
``huggingface_hub`` (checked against 2.4.0) uses to create repos, upload files through Git LFS,
tag commits and download files. Everything is stored under ``root``: objects by sha256, and per
repo a ``repo.json`` (visibility, branches, tags, LFS objects) and one JSON file per commit
holding the full file list. A second server on the same root sees the same repos.

Endpoints. ``{t}`` is ``models``, ``datasets`` or ``spaces``; ``{p}`` the matching URL prefix
(empty, ``datasets/``, ``spaces/``); ``{repo}`` is ``namespace/name``; ``{rev}`` a branch, a tag,
``refs/heads/x``, ``refs/tags/x`` or a full commit sha, URL-encoded as one path segment:

- ``POST /api/repos/create``: create_repo; 409 if the repo exists.
- ``GET /api/{t}/{repo}`` and ``GET /api/{t}/{repo}/revision/{rev}``: repo_info / model_info;
  ``?blobs=1`` (files_metadata=True) adds size, blobId and ``lfs: {sha256, size, pointerSize}``.
- ``GET /api/{t}/{repo}/tree/{rev}[/{path}]``: list_repo_tree (``?recursive=1``).
- ``POST /api/{t}/{repo}/paths-info/{rev}``: get_paths_info (form fields ``paths``).
- ``GET /api/{t}/{repo}/refs``: list_repo_refs.
- ``POST /api/{t}/{repo}/preupload/{rev}``: upload mode per file and the oid already at that path.
- ``POST /api/{t}/{repo}/commit/{branch}``: ndjson commit (header with optional parentCommit,
  file, lfsFile, deletedFile, deletedFolder); 412 when parentCommit is not the branch head.
- ``POST /api/{t}/{repo}/tag/{rev}`` and ``DELETE /api/{t}/{repo}/tag/{tag}``: create_tag (409
  if the tag exists, even on the same commit, as the Hub does) and delete_tag.
- ``POST /api/{t}/{repo}/branch/{branch}`` (JSON ``startingPoint``) and ``DELETE`` of the same:
  create_branch (409 if it exists) and delete_branch (403 for ``main``).
- ``POST /api/validate-yaml``: README.md metadata check, always valid.
- ``GET /api/agent-harnesses``: empty registry; the client fetches it once unless telemetry is off.
- ``POST /{p}{repo}.git/info/lfs/objects/batch``: LFS batch API, "basic" uploads only. An object
  this repo already has gets no action, so the client skips the upload.
- ``PUT /{p}{repo}.git/info/lfs/objects/{oid}?size=N``: the upload href; the object is kept only
  if its sha256 and size match. Like the Hub's pre-signed URLs, it needs no token.
- ``POST /{p}{repo}.git/info/lfs/objects/verify``: LFS verify.
- ``HEAD`` and ``GET /{p}{repo}/resolve/{rev}/{path}``: file metadata (``X-Repo-Commit``,
  ``ETag``: sha256 for LFS files and git blob sha1 otherwise, ``X-Linked-Etag`` and
  ``X-Linked-Size`` for LFS files) and content with single-range ``Range`` support. Content is
  served directly, never through a redirect, so a GET resolves its revision again.

Behaviour worth knowing:

- Any ``Authorization: Bearer ...`` token is accepted and only its presence is recorded. Writes
  need one (401 otherwise); private repos answer 401 ``RepoNotFound`` without one, like the Hub.
- A new repo starts, like on the Hub, with one commit holding ``.gitattributes`` on ``main``.
- Upload mode follows the Hub: LFS for the extensions of the Hub's default ``.gitattributes``,
  for files of 10 MiB or more, and for binary samples (NUL byte or not UTF-8).
- Xet is never advertised; the Xet token routes answer 501 with a hint to set HF_HUB_DISABLE_XET.
- ``log`` records every request (with its ``Range`` header). Faults are matched in the order
  they were added, against the raw (still URL-encoded) request path, and one request triggers
  at most one fault: ``fail`` (an error status), ``corrupt`` (one byte flipped), ``truncate``
  (the body cut short, then a clean close), ``drop`` (the body cut short, then a reset) and
  ``slow`` (the body trickled at a few bytes per second).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

_MAIN = "main"
_CHUNK = 1 << 20
_REGULAR_MAX_SIZE = 10 * 1024 * 1024
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Extensions tracked by LFS in the .gitattributes the Hub writes into every new repo.
_LFS_SUFFIXES = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib",
    ".mlmodel", ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb",
    ".pickle", ".pkl", ".pt", ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz",
    ".wasm", ".xz", ".zip", ".zst",
)  # fmt: skip
_GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in _LFS_SUFFIXES)


class LoggedRequest(NamedTuple):
    """One request as the server saw it. The token itself is never kept."""

    method: str
    path: str  # raw (URL-encoded) path, without the query string
    status: int  # 0 when no response could be sent
    bytes_received: int  # request body bytes
    bytes_sent: int  # response body bytes, fewer than Content-Length when truncated
    token_sent: bool
    range: str | None = None  # the Range header, when the client sent one


class RepoKey(NamedTuple):
    type: str  # "model", "dataset" or "space"
    id: str  # "namespace/name"


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **(body or {})}
        self.headers = {**(headers or {}), "X-Error-Message": message}
        if code is not None:
            self.headers["X-Error-Code"] = code


@dataclass
class _Fault:
    kind: Literal["fail", "corrupt", "truncate", "drop", "slow"]
    pattern: re.Pattern[str]
    method: str | None
    remaining: int | None  # None: never runs out
    status: int = 500
    keep: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.kind != "fail" and (method != "GET" or "/resolve/" not in path):
            return False  # corrupt, truncate and drop act on file content only
        return self.method in (None, method) and self.pattern.search(path) is not None


class _TagMove(NamedTuple):
    key: RepoKey
    tag: str
    target: str


class HubServer:
    """Hub-compatible server on 127.0.0.1; use as ``with HubServer(root) as hub: ... hub.url``."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self.port = port  # 0: one the OS picks
        self.url = ""  # set by start()
        self.log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._tag_moves: list[_TagMove] = []
        self._misrecords: list[re.Pattern[str]] = []
        self._xet_only: list[re.Pattern[str]] = []
        self._connections: set[socket.socket] = set()
        self._nonce = itertools.count()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        for sub in ("objects", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.hub = self
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        # Kept-alive client connections would otherwise still reach a stopped server.
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join()
        self._httpd = self._thread = None

    # Fault injection.

    def fail(
        self, pattern: str, *, times: int | None = 1, status: int = 500, method: str | None = None
    ) -> None:
        """Answer ``status`` to the next ``times`` requests (None: all) whose path matches."""
        self._add_fault(_Fault("fail", re.compile(pattern), method, times, status=status))

    def corrupt(self, pattern: str, *, times: int | None = None) -> None:
        """Serve file content with one byte flipped (same size) for matching downloads."""
        self._add_fault(_Fault("corrupt", re.compile(pattern), "GET", times))

    def truncate(self, pattern: str, *, keep: int = 0, times: int | None = 1) -> None:
        """Send only ``keep`` body bytes of matching downloads, then close the connection."""
        self._add_fault(_Fault("truncate", re.compile(pattern), "GET", times, keep=keep))

    def drop(self, pattern: str, *, keep: int = 0, times: int | None = 1) -> None:
        """Send only ``keep`` body bytes of matching downloads, then reset the connection (RST),
        as a dropped network path does."""
        self._add_fault(_Fault("drop", re.compile(pattern), "GET", times, keep=keep))

    def slow(self, pattern: str, *, rate: int = 100, times: int | None = None) -> None:
        """Trickle matching downloads at ``rate`` bytes per second (a server that never quite
        stops, which only a low-speed limit ends)."""
        self._add_fault(_Fault("slow", re.compile(pattern), "GET", times, keep=rate))

    def move_tag_after_resolve(
        self, repo_id: str, tag: str, to_revision: str, *, repo_type: str = "model"
    ) -> None:
        """Point ``tag`` at ``to_revision`` right after the next request resolves the tag."""
        key = RepoKey(repo_type, repo_id)
        with self._lock:
            try:
                meta = self._load_repo(key)
            except _HttpError as err:
                raise ValueError(err.body["error"]) from None
            target, _ = self._lookup(key, meta, to_revision)
            if tag not in meta["tags"] or target is None:
                raise ValueError(f"unknown tag {tag!r} or revision {to_revision!r} in {repo_id}")
            self._tag_moves.append(_TagMove(key, tag, target))

    def misrecord(self, pattern: str) -> None:
        """Record matching files of the next commit with one byte more than was uploaded, as a
        server that damages what it accepted would (the publish must notice)."""
        with self._lock:
            self._misrecords.append(re.compile(pattern))

    def xet_only(self, pattern: str) -> None:
        """List matching LFS files with a ``xetHash`` and no ``lfs`` (no sha256), as the Hub
        may list a file it keeps in Xet storage; the bytes are served as before."""
        with self._lock:
            self._xet_only.append(re.compile(pattern))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._tag_moves.clear()
            self._xet_only.clear()

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be at least 1, or None for every matching request")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)

    # Storage. Metadata changes happen under self._lock; JSON files are replaced atomically.

    def _repo_dir(self, key: RepoKey) -> Path:
        return self.root / "repos" / f"{key.type}s" / key.id

    def _load_repo(self, key: RepoKey) -> dict[str, Any]:
        path = self._repo_dir(key) / "repo.json"
        if not _valid_repo_id(key.id) or not path.is_file():
            raise _HttpError(404, f"Repository {key.id} not found", "RepoNotFound")
        return _read_json(path)

    def _save_repo(self, key: RepoKey, meta: dict[str, Any]) -> None:
        _write_json(self._repo_dir(key) / "repo.json", meta)

    def _commit_path(self, key: RepoKey, sha: str) -> Path:
        return self._repo_dir(key) / "commits" / f"{sha}.json"

    def _load_commit(self, key: RepoKey, sha: str) -> dict[str, Any]:
        return _read_json(self._commit_path(key, sha))

    def _write_commit(
        self, key: RepoKey, parent: str | None, files: dict[str, Any], title: str, description: str
    ) -> str:
        commit = {
            "parents": [parent] if parent else [],
            "title": title,
            "description": description,
            "date": _now(),
            "files": files,
        }
        # The nonce and clock keep two identical commits on the same parent distinct.
        seed = json.dumps([commit, next(self._nonce), time.time_ns()], sort_keys=True)
        sha = hashlib.sha1(seed.encode()).hexdigest()
        _write_json(self._commit_path(key, sha), {"id": sha, **commit})
        return sha

    def _init_repo(self, key: RepoKey, private: bool) -> None:
        (self._repo_dir(key) / "commits").mkdir(parents=True)
        files = {".gitattributes": self._regular_entry(_GITATTRIBUTES.encode())}
        sha = self._write_commit(key, None, files, "initial commit", "")
        meta = {
            "private": private,
            "createdAt": _now(),
            "branches": {_MAIN: sha},
            "tags": {},
            "lfsObjects": {},
        }
        self._save_repo(key, meta)

    def _lookup(
        self, key: RepoKey, meta: dict[str, Any], rev: str
    ) -> tuple[str | None, str | None]:
        """Return (commit sha, tag name if rev named a tag)."""
        branch = rev.removeprefix("refs/heads/")
        if branch in meta["branches"]:
            return meta["branches"][branch], None
        tag = rev.removeprefix("refs/tags/")
        if tag in meta["tags"]:
            return meta["tags"][tag], tag
        if _SHA1.fullmatch(rev) and self._commit_path(key, rev).is_file():
            return rev, None
        return None, None

    def _resolve(self, key: RepoKey, rev: str) -> str:
        with self._lock:
            meta = self._load_repo(key)
            sha, tag = self._lookup(key, meta, rev)
            if sha is None:
                raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            move = next((m for m in self._tag_moves if (m.key, m.tag) == (key, tag)), None)
            if move is not None:
                self._tag_moves.remove(move)
                meta["tags"][move.tag] = move.target
                self._save_repo(key, meta)
            return sha

    def _object_path(self, oid: str) -> Path:
        return self.root / "objects" / oid[:2] / oid

    def _receive(self, chunks: Iterable[bytes]) -> tuple[Path, str, int]:
        """Write chunks to a temporary file; return its path, sha256 and size."""
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as tmp:
            try:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
            except BaseException:
                Path(tmp.name).unlink()
                raise
        return Path(tmp.name), digest.hexdigest(), size

    def _keep_object(self, tmp: Path, oid: str) -> None:
        dest = self._object_path(oid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def _regular_entry(self, data: bytes) -> dict[str, Any]:
        tmp, oid, size = self._receive([data])
        self._keep_object(tmp, oid)
        return {"sha256": oid, "size": size, "lfs": False, "oid": _git_blob_oid(data)}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class _Body:
    """Request body reader for Content-Length and chunked transfer encoding."""

    def __init__(self, rfile: BufferedIOBase, transfer_encoding: str, content_length: str) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in transfer_encoding.lower()
        self._remaining = 0 if self._chunked else int(content_length or 0)
        self.received = 0
        self.done = not self._chunked and self._remaining == 0

    def chunks(self) -> Iterator[bytes]:
        while not self.done:
            if self._chunked:
                line = self._rfile.readline()
                if not line:
                    raise ConnectionError("client closed the connection mid-body")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self._rfile.readline().strip():
                        pass  # trailers
                    self.done = True
                    return
                data = self._rfile.read(size)
                self._rfile.readline()
            else:
                data = self._rfile.read(min(_CHUNK, self._remaining))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._remaining -= len(data)
                self.done = self._remaining == 0
            self.received += len(data)
            yield data

    def read(self) -> bytes:
        return b"".join(self.chunks())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 30  # lets idle keep-alive threads end
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK stall every response by about 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.hub._lock:
            self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.hub._lock:
            self.server.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stderr access log: requests go to HubServer.log, tokens nowhere."""

    def _handle(self) -> None:
        self.hub = self.server.hub
        url = urlsplit(self.path)
        self.raw_path = url.path
        self.query = parse_qs(url.query)
        self.body = _Body(
            self.rfile,
            self.headers.get("Transfer-Encoding", ""),
            self.headers.get("Content-Length", ""),
        )
        auth = self.headers.get("Authorization", "")
        self.token_sent = auth[:7].lower() == "bearer " and bool(auth[7:].strip())
        self.responded = False
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away
        except Exception:  # a server bug: 501 is never retried, so the test fails fast
            if self.responded:
                self.close_connection = True
            else:
                self._send_json(501, {"error": f"hubserver bug:\n{traceback.format_exc()}"})
        finally:
            if not self.body.done:
                self.close_connection = True
            if not self.responded:
                self._record(0, 0)

    def _dispatch(self) -> None:
        try:
            fault = self.hub._take_fault(self.command, self.raw_path)
            if fault is not None and fault.kind == "fail":
                raise _HttpError(fault.status, f"Injected failure ({fault.status})")
            self._route(fault)
        except _HttpError as err:
            self.body.read()  # drain, so the client reads the answer instead of a reset
            self._send_json(err.status, err.body, err.headers)

    # Names fixed by http.server.
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

    # Responses. The log entry is written before the response so tests never race it.

    def _record(self, status: int, bytes_sent: int) -> None:
        self.hub._record(
            LoggedRequest(
                self.command,
                self.raw_path,
                status,
                self.body.received,
                bytes_sent,
                self.token_sent,
                self.headers.get("Range"),
            )
        )

    def _start_response(
        self, status: int, headers: dict[str, str], length: int, sent: int | None = None
    ) -> None:
        """Send status and headers; ``sent`` is how much of the body will follow, if not all."""
        self._record(status, 0 if self.command == "HEAD" else length if sent is None else sent)
        self.responded = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_json(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = json.dumps(payload).encode()
        self._start_response(status, {"Content-Type": content_type, **(headers or {})}, len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body.read() or b"{}")
        except ValueError as err:
            raise _HttpError(400, f"Invalid JSON body: {err}") from err

    def _flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0].lower() in ("1", "true")

    def _require_token(self) -> None:
        if not self.token_sent:
            raise _HttpError(401, "This request needs a token (any Bearer token will do)")

    def _readable_repo(self, key: RepoKey) -> dict[str, Any]:
        meta = self.hub._load_repo(key)
        if meta["private"] and not self.token_sent:
            raise _HttpError(401, "Repository not found", "RepoNotFound")
        return meta

    # Routing. Path segments are decoded one by one, so an encoded "/" stays inside its segment.

    def _route(self, fault: _Fault | None) -> None:
        segs = [unquote(s) for s in self.raw_path.split("/")[1:]]
        if segs[:1] == ["api"]:
            self._route_api(segs[1:])
            return
        repo_type = "model"
        if segs[0] in ("datasets", "spaces") and len(segs) > 3:
            repo_type, segs = _REPO_TYPES[segs[0]], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve" and self.command in ("GET", "HEAD"):
            key = RepoKey(repo_type, f"{segs[0]}/{segs[1]}")
            self._resolve_file(key, segs[3], "/".join(segs[4:]), fault)
        elif (
            len(segs) == 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]
        ):
            key = RepoKey(repo_type, f"{segs[0]}/{segs[1].removesuffix('.git')}")
            match (self.command, segs[5]):
                case ("POST", "batch"):
                    self._lfs_batch(key)
                case ("POST", "verify"):
                    self._lfs_verify(key)
                case ("PUT", oid):
                    self._lfs_put(key, oid)
                case _:
                    raise _HttpError(404, f"No route for {self.command} {self.raw_path}")
        else:
            raise _HttpError(404, f"No route for {self.command} {self.raw_path}")

    def _route_api(self, segs: list[str]) -> None:
        match (self.command, segs):
            case ("GET", ["agent-harnesses"]):
                self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
                return
            case ("POST", ["validate-yaml"]):
                self.body.read()
                self._send_json(200, {"errors": [], "warnings": []})
                return
            case ("POST", ["repos", "create"]):
                self._create_repo()
                return
        if len(segs) < 3 or segs[0] not in _REPO_TYPES:
            raise _HttpError(404, f"No route for {self.command} {self.raw_path}")
        key = RepoKey(_REPO_TYPES[segs[0]], f"{segs[1]}/{segs[2]}")
        match (self.command, segs[3:]):
            case ("GET", []):
                self._repo_info(key, _MAIN)
            case ("GET", ["revision", rev]):
                self._repo_info(key, rev)
            case ("GET", ["tree", rev, *path]):
                self._tree(key, rev, "/".join(path))
            case ("POST", ["paths-info", rev]):
                self._paths_info(key, rev)
            case ("GET", ["refs"]):
                self._refs(key)
            case ("POST", ["preupload", rev]):
                self._preupload(key, rev)
            case ("POST", ["commit", rev]):
                self._commit(key, rev)
            case ("POST", ["tag", rev]):
                self._create_tag(key, rev)
            case ("DELETE", ["tag", tag]):
                self._delete_tag(key, tag)
            case ("POST", ["branch", branch]):
                self._create_branch(key, branch)
            case ("DELETE", ["branch", branch]):
                self._delete_branch(key, branch)
            case (_, [action, *_]) if "xet" in action:
                raise _HttpError(501, "hubserver does not speak Xet: set HF_HUB_DISABLE_XET=1")
            case _:
                raise _HttpError(404, f"No route for {self.command} {self.raw_path}")

    # Repos and refs.

    def _create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HttpError(400, f"Unsupported repo type {repo_type!r}")
        if not body.get("organization"):
            raise _HttpError(400, "hubserver needs an explicit namespace: repo_id='namespace/name'")
        key = RepoKey(repo_type, f"{body['organization']}/{body.get('name')}")
        if not _valid_repo_id(key.id):
            raise _HttpError(400, f"Invalid repo id {key.id!r}")
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = f"{self.hub.url}/{_URL_PREFIX[repo_type]}{key.id}"
        with self.hub._lock:
            if (self.hub._repo_dir(key) / "repo.json").is_file():
                # create_repo(exist_ok=True) reads the url from this 409 answer.
                message = f"You already created this {repo_type} repo"
                raise _HttpError(409, message, body={"url": url})
            self.hub._init_repo(key, private)
        self._send_json(200, {"url": url, "name": key.id})

    def _repo_info(self, key: RepoKey, rev: str) -> None:
        meta = self._readable_repo(key)
        sha = self.hub._resolve(key, rev)
        commit = self.hub._load_commit(key, sha)
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if self._flag("blobs"):
                sibling |= {"size": entry["size"], "blobId": entry["oid"]}
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "sha256": entry["sha256"],
                        "size": entry["size"],
                        "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"])),
                    }
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{key.type}/{key.id}".encode()).hexdigest()[:24],
            "id": key.id,
            "author": key.id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        self._send_json(200, info)

    def _refs(self, key: RepoKey) -> None:
        meta = self._readable_repo(key)

        def refs(kind: str, names: dict[str, str]) -> list[dict[str, str]]:
            return [
                {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                for name, sha in sorted(names.items())
            ]

        self._send_json(
            200,
            {
                "branches": refs("heads", meta["branches"]),
                "converts": [],
                "tags": refs("tags", meta["tags"]),
                "pullRequests": [],
            },
        )

    def _create_tag(self, key: RepoKey, rev: str) -> None:
        self._require_token()
        tag = self._json_body().get("tag")
        if not isinstance(tag, str) or not _TAG.fullmatch(tag) or ".." in tag:
            raise _HttpError(400, f"Invalid tag name {tag!r}")
        with self.hub._lock:
            sha = self.hub._resolve(key, rev)
            meta = self.hub._load_repo(key)
            if tag in meta["tags"]:
                raise _HttpError(409, f"Tag {tag} already exists")
            meta["tags"][tag] = sha
            self.hub._save_repo(key, meta)
        self._send_json(200, {})

    def _delete_tag(self, key: RepoKey, tag: str) -> None:
        self._require_token()
        with self.hub._lock:
            meta = self.hub._load_repo(key)
            if meta["tags"].pop(tag, None) is None:
                raise _HttpError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            self.hub._save_repo(key, meta)
        self._send_json(200, {})

    def _create_branch(self, key: RepoKey, branch: str) -> None:
        self._require_token()
        start = self._json_body().get("startingPoint")
        if not _TAG.fullmatch(branch) or ".." in branch:
            raise _HttpError(400, f"Invalid branch name {branch!r}")
        with self.hub._lock:
            sha = self.hub._resolve(key, start if isinstance(start, str) else _MAIN)
            meta = self.hub._load_repo(key)
            if branch in meta["branches"]:
                raise _HttpError(409, f"Reference refs/heads/{branch} already exists")
            meta["branches"][branch] = sha
            self.hub._save_repo(key, meta)
        self._send_json(200, {})

    def _delete_branch(self, key: RepoKey, branch: str) -> None:
        self._require_token()
        if branch == _MAIN:
            raise _HttpError(403, "Cannot delete the main branch")
        with self.hub._lock:
            meta = self.hub._load_repo(key)
            if meta["branches"].pop(branch, None) is None:
                raise _HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            self.hub._save_repo(key, meta)
        self._send_json(200, {})

    # Listings.

    def _files_at(self, key: RepoKey, rev: str) -> dict[str, Any]:
        self._readable_repo(key)
        files: dict[str, Any] = self.hub._load_commit(key, self.hub._resolve(key, rev))["files"]
        return files

    def _tree(self, key: RepoKey, rev: str, path: str) -> None:
        files = self._files_at(key, rev)
        prefix = path.strip("/")
        dirs = _directories(files)
        if prefix and prefix not in dirs:
            raise _HttpError(404, f"Directory not found: {prefix}", "EntryNotFound")
        base = f"{prefix}/" if prefix else ""
        recursive = self._flag("recursive")

        def listed(p: str) -> bool:
            return p.startswith(base) and (recursive or "/" not in p[len(base) :])

        entries = [_dir_json(d, files) for d in sorted(dirs) if listed(d)]
        entries += [self._file_json(p, e) for p, e in sorted(files.items()) if listed(p)]
        self._send_json(200, entries)

    def _file_json(self, path: str, entry: dict[str, Any]) -> dict[str, Any]:
        item = _file_json(path, entry)
        with self.hub._lock:
            xet = entry["lfs"] and any(p.search(path) for p in self.hub._xet_only)
        if xet:
            del item["lfs"]
            item["xetHash"] = hashlib.sha256(entry["sha256"].encode()).hexdigest()
        return item

    def _paths_info(self, key: RepoKey, rev: str) -> None:
        form = parse_qs(self.body.read().decode())
        files = self._files_at(key, rev)
        dirs = _directories(files)
        entries = []
        for path in (p.strip("/") for p in form.get("paths", [])):
            if path in files:
                entries.append(self._file_json(path, files[path]))
            elif path in dirs:
                entries.append(_dir_json(path, files))
        self._send_json(200, entries)

    # Uploads.

    def _preupload(self, key: RepoKey, rev: str) -> None:
        self._require_token()
        request = self._json_body()
        sha = self.hub._resolve(key, rev)
        files = self.hub._load_commit(key, sha)["files"]
        answer = []
        for item in request.get("files", []):
            path = item["path"]
            lfs = _is_lfs(path, int(item["size"]), base64.b64decode(item.get("sample", "")))
            mode = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if (entry := files.get(path)) is not None:
                # Compared by the client with its local oid: sha256 for LFS, git sha1 otherwise.
                mode["oid"] = entry["sha256"] if entry["lfs"] else entry["oid"]
            answer.append(mode)
        self._send_json(200, {"files": answer, "commitOid": sha})

    def _lfs_batch(self, key: RepoKey) -> None:
        self._require_token()
        request = self._json_body()
        if request.get("operation") != "upload":
            raise _HttpError(400, "hubserver implements only the LFS upload operation")
        known = self.hub._load_repo(key)["lfsObjects"]
        base = f"{self.hub.url}/{_URL_PREFIX[key.type]}{key.id}.git/info/lfs/objects"
        objects = []
        for obj in request.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not _SHA256.fullmatch(oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": 0, "error": _lfs_error("Invalid object")})
            elif oid not in known:
                actions = {
                    "upload": {"href": f"{base}/{oid}?size={size}"},
                    "verify": {"href": f"{base}/verify"},
                }
                objects.append(
                    {"oid": oid, "size": size, "authenticated": True, "actions": actions}
                )
            elif known[oid] != size:
                error = _lfs_error(f"Size mismatch: stored {known[oid]}")
                objects.append({"oid": oid, "size": size, "error": error})
            else:
                objects.append({"oid": oid, "size": size})  # already here: no upload
        self._send_json(
            200,
            {"transfer": "basic", "objects": objects},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, key: RepoKey, oid: str) -> None:
        self.hub._load_repo(key)
        expected_size = int(self.query.get("size", ["-1"])[0])
        tmp, digest, size = self.hub._receive(self.body.chunks())
        if digest != oid or size != expected_size:
            tmp.unlink()
            raise _HttpError(400, f"Content does not match: sha256 {digest}, {size} bytes")
        self.hub._keep_object(tmp, oid)
        with self.hub._lock:
            meta = self.hub._load_repo(key)
            meta["lfsObjects"][oid] = size
            self.hub._save_repo(key, meta)
        self._send_json(200, {})

    def _lfs_verify(self, key: RepoKey) -> None:
        self._require_token()
        request = self._json_body()
        known = self.hub._load_repo(key)["lfsObjects"]
        if known.get(request.get("oid")) != request.get("size"):
            raise _HttpError(404, "Object not found")
        self._send_json(200, {})

    def _commit(self, key: RepoKey, rev: str) -> None:
        self._require_token()
        if self._flag("create_pr"):
            raise _HttpError(400, "hubserver does not implement pull requests")
        try:
            lines = [json.loads(line) for line in self.body.read().splitlines() if line.strip()]
        except ValueError as err:
            raise _HttpError(400, f"Invalid ndjson: {err}") from err
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None:
            raise _HttpError(400, "Missing commit header")
        ops = [line for line in lines if line.get("key") != "header"]
        # Regular file contents are stored first; an aborted commit only leaves unused objects.
        regular = [
            self.hub._regular_entry(_decode_content(op["value"]))
            if op.get("key") == "file"
            else None
            for op in ops
        ]
        with self.hub._lock:
            meta = self.hub._load_repo(key)
            branch = rev.removeprefix("refs/heads/")
            if branch not in meta["branches"]:
                if self.hub._lookup(key, meta, rev)[0] is not None:
                    raise _HttpError(400, f"Invalid rev id: {rev} is not a branch")
                raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            head = meta["branches"][branch]
            if header.get("parentCommit") not in (None, head):
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self.hub._load_commit(key, head)["files"])
            for op, entry in zip(ops, regular, strict=True):
                _apply(op, files, meta["lfsObjects"], entry)
            for pattern in self.hub._misrecords:
                for path, entry in files.items():
                    if pattern.search(path):
                        files[path] = {**entry, "size": entry["size"] + 1}
            self.hub._misrecords.clear()
            sha = self.hub._write_commit(
                key, head, files, header.get("summary", ""), header.get("description", "")
            )
            meta["branches"][branch] = sha
            self.hub._save_repo(key, meta)
        url = f"{self.hub.url}/{_URL_PREFIX[key.type]}{key.id}/commit/{sha}"
        self._send_json(
            200, {"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": ""}
        )

    # Downloads.

    def _resolve_file(self, key: RepoKey, rev: str, path: str, fault: _Fault | None) -> None:
        self._readable_repo(key)
        sha = self.hub._resolve(key, rev)
        entry = self.hub._load_commit(key, sha)["files"].get(path)
        headers = {"X-Repo-Commit": sha}
        if entry is None:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        headers |= {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"])}
        size = entry["size"]
        status, start, end = 200, 0, size - 1
        byte_range = _byte_range(self.headers.get("Range"), size, headers)
        if byte_range is not None:
            status, (start, end) = 206, byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        sent = length
        if fault is not None and fault.kind in ("truncate", "drop"):
            sent = min(fault.keep, length)
            self.close_connection = True
            if fault.kind == "drop":
                # Linger 0: closing sends RST instead of FIN, so the client sees a reset.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        self._start_response(status, headers, length, sent)
        if self.command == "HEAD":
            return
        flip_at = size // 2 if fault is not None and fault.kind == "corrupt" else -1
        with self.hub._object_path(entry["sha256"]).open("rb") as f:
            f.seek(start)
            pos, remaining = start, sent
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                if pos <= flip_at < pos + len(chunk):
                    flipped = bytearray(chunk)
                    flipped[flip_at - pos] ^= 0xFF
                    chunk = bytes(flipped)
                if fault is not None and fault.kind == "slow":
                    self._trickle(chunk, fault.keep)
                    if self.close_connection:
                        return
                else:
                    self.wfile.write(chunk)
                pos += len(chunk)
                remaining -= len(chunk)

    def _trickle(self, chunk: bytes, rate: int) -> None:
        """Send ``chunk`` at ``rate`` bytes per second; stop when the client goes away."""
        piece = max(1, rate // 10)
        for i in range(0, len(chunk), piece):
            try:
                self.wfile.write(chunk[i : i + piece])
                self.wfile.flush()
            except OSError:
                self.close_connection = True
                return
            time.sleep(0.1)


# Helpers without server state.


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return len(parts) == 2 and all(_NAME.fullmatch(p) for p in parts)


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _lfs_error(message: str) -> dict[str, Any]:
    return {"code": 422, "message": message}


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    if path.lower().endswith(_LFS_SUFFIXES) or size >= _REGULAR_MAX_SIZE or b"\0" in sample:
        return True
    try:
        # Not final: the 512-byte sample may cut a multi-byte character in two.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _decode_content(value: dict[str, Any]) -> bytes:
    if value.get("encoding") != "base64":
        raise _HttpError(400, f"Unsupported encoding {value.get('encoding')!r}")
    return base64.b64decode(value["content"])


def _valid_path(path: Any) -> str:
    parts = path.split("/") if isinstance(path, str) else [""]
    if any(p in ("", ".", "..") for p in parts):
        raise _HttpError(400, f"Invalid path in repo: {path!r}")
    return str(path)


def _apply(
    op: dict[str, Any],
    files: dict[str, Any],
    lfs_objects: dict[str, int],
    regular: dict[str, Any] | None,
) -> None:
    """Apply one commit operation to ``files`` (path -> entry); ``regular`` is a stored "file"."""
    kind, value = op.get("key"), op.get("value", {})
    path = _valid_path(value.get("path"))
    if kind == "file":
        files[path] = regular
    elif kind == "lfsFile":
        oid = value.get("oid")
        if oid not in lfs_objects:
            raise _HttpError(400, f"LFS object {oid} was not uploaded to this repo")
        size = value.get("size", lfs_objects[oid])
        if size != lfs_objects[oid]:
            raise _HttpError(400, f"LFS object {oid} has {lfs_objects[oid]} bytes, not {size}")
        pointer = _lfs_pointer(oid, size)
        files[path] = {"sha256": oid, "size": size, "lfs": True, "oid": _git_blob_oid(pointer)}
    elif kind == "deletedFile":
        if files.pop(path, None) is None:
            raise _HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
    elif kind == "deletedFolder":
        inside = [p for p in files if p.startswith(f"{path}/")]
        if not inside:
            raise _HttpError(404, "A folder with this name doesn't exist", "EntryNotFound")
        for p in inside:
            del files[p]
    else:
        raise _HttpError(400, f"Unsupported commit operation {kind!r}")


def _directories(files: dict[str, Any]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}


def _file_json(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "file",
        "oid": entry["oid"],
        "size": entry["size"],
        "path": path,
    }
    if entry["lfs"]:
        pointer = _lfs_pointer(entry["sha256"], entry["size"])
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": len(pointer)}
    return item


def _dir_json(path: str, files: dict[str, Any]) -> dict[str, Any]:
    # A stand-in for the git tree oid: it changes whenever anything below the directory changes.
    listing = sorted((p, e["oid"]) for p, e in files.items() if p.startswith(f"{path}/"))
    oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _byte_range(header: str | None, size: int, headers: dict[str, str]) -> tuple[int, int] | None:
    """Parse a single-range Range header; None means "send everything" (RFC 9110 allows it)."""
    match = _RANGE.fullmatch(header or "")
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    else:
        start, end = max(size - int(match[2]), 0), size - 1
    if start >= size or start > end:
        raise _HttpError(
            416, "Range Not Satisfiable", headers={**headers, "Content-Range": f"bytes */{size}"}
        )
    return start, end


def main(argv: list[str] | None = None) -> int:
    """``python tests/hubserver.py --port 8765``: serve a local Hub for the tutorial and tries.

    Point the Hub client at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` and
    ``HF_HUB_DISABLE_XET=1`` (this server speaks Git LFS, not Xet); any ``HF_TOKEN`` is
    accepted. ``--background`` returns once the server listens and prints how to stop it.
    """
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python tests/hubserver.py", description=main.__doc__)
    p.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: a free one)"
    )
    p.add_argument("--root", type=Path, default=Path("hub-data"), help="where repos are kept")
    p.add_argument("--background", action="store_true", help="detach once listening")
    args = p.parse_args(argv)
    hub = HubServer(args.root, args.port)
    try:
        hub.start()  # bind first: a busy port fails here, in the foreground
    except OSError as e:
        print(
            f"hubserver: cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}"
            " (another server holds it? choose another port with --port, or 0 for a free one)",
            file=sys.stderr,
        )
        return 2
    if args.background:
        read, write = os.pipe()
        if os.fork():  # the parent reports and leaves; the child serves
            os.close(write)
            pid = int(os.read(read, 32) or b"0")
            print(f"Hub-compatible server on {hub.url} (data in {args.root}); stop it: kill {pid}")
            return 0
        os.close(read)
        hub._thread = None  # the serving thread stayed in the parent: serve here instead
        os.write(write, str(os.getpid()).encode())
        os.close(write)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        assert hub._httpd is not None
        hub._httpd.serve_forever(poll_interval=0.05)
        return 0
    print(f"Hub-compatible server on {hub.url} (data in {args.root}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
