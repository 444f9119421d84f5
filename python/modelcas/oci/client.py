"""A client for the OCI distribution API: manifests and blobs, Basic and Bearer auth.

Written on ``http.client`` rather than on the ``oras`` Python SDK. We checked oras 0.2.43, the
current release; for weights it does not fit:

- ``put_upload`` reads the whole blob into memory (``fd.read()``), and its chunked upload
  sends one PATCH per small chunk; ``download_blob`` writes a file without hashing it. Here a
  blob goes out with ``sendfile`` straight from the store's read-only object, and comes in
  through the store's writer, hashed as it arrives.
- it keeps one bearer token for every request, so a push that first pulled (HEAD a blob,
  then upload) re-sends the pull-scoped token and fails against distribution; here tokens
  are cached per scope set, and a cross-repository mount asks for both repositories.
- the auth backend (basic or token) must be chosen before the registry's challenge is seen,
  there is no cross-repository mount, no ``REGISTRY_AUTH_FILE``, and it brings ``requests``
  and ``jsonschema`` while logging through its own logger.

What is written here is small: a connection per origin, the two challenge schemes, redirects
for blob downloads (registries on object stores redirect to a presigned URL, and the
``Authorization`` header never follows to another origin), and the handful of endpoints a
publish and a pull need.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from modelcas import __version__
from modelcas.errors import RemoteError, RemoteMissingError, UsageError
from modelcas.oci.auth import Challenge, Credential, find_credential, parse_challenge
from modelcas.oci.reference import Reference
from modelcas.remotes import transfer

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_MANIFEST = 4 << 20  # distribution's own limit on a manifest's size
_SEND_PIECE = 16 << 20
_TOKEN_SLACK = 10.0  # refresh a token this many seconds before it expires
Progress = Callable[[int], object]


def pull_scope(repository: str) -> str:
    """The token scope for reading a repository."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """The token scope for writing a repository (reading it too: HEAD before upload)."""
    return f"repository:{repository}:pull,push"


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What a HEAD of a manifest says: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    expires: float = 0.0


class _NetworkError(RemoteError):
    """The connection failed.

    ``transient`` when another try may work (a reset, a timeout); not when nothing listens
    there or the name does not resolve.
    """

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class _Upload:
    """A request body sent from a file with ``sendfile`` (rewindable for an auth retry)."""

    path: Path
    size: int
    progress: Progress | None


Body = bytes | _Upload | None


class Client:
    """The registry of ``reference`` (its repository does not matter): one per registry.

    Args:
        reference: any reference on the registry.
        plain_http: talk HTTP instead of HTTPS. Loopback registries always use HTTP.
        timeout: seconds a connect or a read may stall before the request fails.
    """

    def __init__(
        self, reference: Reference, *, plain_http: bool = False, timeout: float = 120.0
    ) -> None:
        self.registry = reference.registry
        self.host = reference.host
        self.scheme = "http" if plain_http or reference.loopback else "https"
        self.port = reference.port or (80 if self.scheme == "http" else 443)
        self.timeout = timeout
        self._plain_ok = {(self.host.lower(), self.port)} if self.scheme == "http" else set()
        self._credential: Credential | None = None
        self._looked_up = False
        self._challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}
        self._conns: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._last: dict[tuple[str, str, int], http.client.HTTPResponse] = {}
        self._live: tuple[str, str, int] | None = None
        self._ssl: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"Client({self.scheme}://{self.registry})"

    def close(self) -> None:
        """Close every pooled connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base(self) -> str:
        """``scheme://registry``."""
        return f"{self.scheme}://{self.registry}"

    # -- endpoints -------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """Where a tag (or digest) points now; None when it does not exist.

        Raises:
            RemoteError: the registry failed, refused, or did not say the digest.
        """
        url = f"{self.base}/v2/{repository}/manifests/{reference}"
        with self.open(
            "HEAD", url, (pull_scope(repository),), {"Accept": ",".join(MANIFEST_TYPES)}
        ) as r:
            r.read()
            if r.status == 404:
                return None
            self.expect(r, (200,), f"HEAD {repository}:{reference}")
            digest = r.getheader("Docker-Content-Digest")
            if not digest:
                # Without the header only a GET can tell; fail closed rather than guess.
                return self.manifest_by_get(repository, reference)
            return ManifestHead(
                digest,
                (r.getheader("Content-Type") or "").split(";")[0].strip(),
                int(r.getheader("Content-Length") or 0),
            )

    def manifest_by_get(self, repository: str, reference: str) -> ManifestHead | None:
        """Like :meth:`head_manifest`, computing the digest from the bytes."""
        import hashlib  # noqa: PLC0415 (rarely needed: registries send the digest header)

        got = self.get_manifest(repository, reference)
        if got is None:
            return None
        body, media_type = got
        return ManifestHead("sha256:" + hashlib.sha256(body).hexdigest(), media_type, len(body))

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest's bytes and media type; None when it does not exist."""
        url = f"{self.base}/v2/{repository}/manifests/{reference}"
        with self.open(
            "GET", url, (pull_scope(repository),), {"Accept": ",".join(MANIFEST_TYPES)}
        ) as r:
            if r.status == 404:
                r.read()
                return None
            self.expect(r, (200,), f"GET manifest {repository}:{reference}")
            body = r.read(MAX_MANIFEST + 1)
            if len(body) > MAX_MANIFEST:
                raise RemoteError(
                    f"{self.registry}/{repository}:{reference}: the manifest is larger than "
                    f"{MAX_MANIFEST} bytes; refused"
                )
            return body, (r.getheader("Content-Type") or "").split(";")[0].strip()

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or its digest; returns the digest the registry says."""
        url = f"{self.base}/v2/{repository}/manifests/{reference}"
        with self.open(
            "PUT", url, (push_scope(repository),), {"Content-Type": media_type}, body
        ) as r:
            r.read()
            self.expect(r, (201, 200), f"PUT manifest {repository}:{reference}")
            return r.getheader("Docker-Content-Digest") or ""

    def has_blob(self, repository: str, digest: str, size: int) -> bool:
        """Whether the repository has the blob (with that size).

        Raises:
            RemoteError: the registry failed, or has the digest with another size.
        """
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        with self.open("HEAD", url, (pull_scope(repository),)) as r:
            r.read()
            if r.status == 404:
                return False
            self.expect(r, (200,), f"HEAD blob {repository}@{digest}")
            length = r.getheader("Content-Length")
            if length is not None and int(length) != size:
                raise RemoteError(
                    f"{self.registry}/{repository} has {digest} with {length} bytes, "
                    f"not {size}; refusing to trust it"
                )
            return True

    def mount_blob(self, repository: str, digest: str, source: str) -> str | None:
        """Ask the registry to link a blob from another repository.

        Returns:
            None when it was mounted; otherwise the upload session it opened instead.
        """
        query = urlencode({"mount": digest, "from": source})
        url = f"{self.base}/v2/{repository}/blobs/uploads/?{query}"
        scopes = (push_scope(repository), pull_scope(source))
        with self.open("POST", url, scopes, {"Content-Length": "0"}, b"") as r:
            r.read()
            if r.status == 201:
                return None
            self.expect(r, (202,), f"mount {digest} into {repository}")
            return self._location(r, url)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        data: Path | bytes,
        size: int,
        *,
        session: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Upload a file (or a small buffer) as a blob in one PUT, as oras-go does.

        The registry checks the digest itself and refuses other bytes (DIGEST_INVALID).
        """
        scopes = (push_scope(repository),)
        if session is None:
            url = f"{self.base}/v2/{repository}/blobs/uploads/"
            with self.open("POST", url, scopes, {"Content-Length": "0"}, b"") as r:
                r.read()
                self.expect(r, (202,), f"start upload to {repository}")
                session = self._location(r, url)
        put = session + ("&" if "?" in session else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        body = data if isinstance(data, bytes) else _Upload(data, size, progress)
        with self.open("PUT", put, scopes, headers, body) as r:
            r.read()
            self.expect(r, (201,), f"upload {digest} to {repository}")

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of a repository (following ``Link`` pagination).

        Raises:
            RemoteMissingError: no such repository.
            RemoteError: the registry failed or refused.
        """
        url: str | None = f"{self.base}/v2/{repository}/tags/list?n=1000"
        tags: list[str] = []
        for _ in range(1000):
            if url is None:
                break
            with self.open("GET", url, (pull_scope(repository),)) as r:
                if r.status == 404:
                    r.read()
                    raise RemoteMissingError(
                        f"oci://{self.registry}/{repository} does not exist",
                        hint="check the registry and repository",
                    )
                self.expect(r, (200,), f"list tags of {repository}")
                raw = r.read(MAX_MANIFEST + 1)
                link = r.getheader("Link")
            try:
                found = json.loads(raw).get("tags") or []
            except (ValueError, AttributeError, RecursionError):
                raise RemoteError(
                    f"{self.registry}/{repository}: the tag list is not JSON"
                ) from None
            tags += [t for t in found if isinstance(t, str)]
            url = _next_link(link, url)
        return tags

    def open_blob(self, repository: str, digest: str, offset: int = 0) -> http.client.HTTPResponse:
        """A streaming GET of a blob (from ``offset``), following redirects; the caller closes.

        The answer is 200 or 206 (a registry may ignore ``Range``); the one fetch path
        (``modelcas.remotes.transfer``) decides what to do with either.

        Raises:
            RemoteMissingError: the registry has no such blob.
            RemoteError: any other failure.
        """
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        r = self.open("GET", url, (pull_scope(repository),), headers)
        if r.status == 404:
            r.read()
            raise RemoteMissingError(
                f"{self.registry}/{repository} has no blob {digest}",
                hint="it was deleted or never pushed there: push it again, or fetch elsewhere",
            )
        if r.status in (200, 206) or r.status >= 500 or r.status == 429:
            return r
        self.expect(r, (200, 206), f"GET blob {repository}@{digest}")
        return r

    def opener(self, repository: str, digest: str) -> Callable[[int], transfer.Answer]:
        """Opens a blob from an offset, for the one fetch path."""

        def open_at(offset: int) -> transfer.Answer:
            return _BlobAnswer(self, self.open_blob(repository, digest, offset))

        return open_at

    def read_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        sink: Callable[[bytes | memoryview], object],
        *,
        progress: Progress | None = None,
    ) -> None:
        """Stream exactly ``size`` bytes of a blob into ``sink``, each byte once.

        Through the one fetch path: a cut is resumed with ``Range``, a trickle is abandoned
        below the low-speed limit.

        Raises:
            IntegrityError: the registry serves more or fewer bytes than ``size``.
            RemoteError: missing, refused, too slow, or still cut short after every try.
        """
        transfer.copy(
            self.opener(repository, digest),
            size,
            sink,
            where=f"{self.registry}/{repository}@{digest}",
            progress=progress,
        )

    def discard(self) -> None:
        """Close the connection of an answer that was not read to its end."""
        if self._live is not None:
            self._drop(self._live)

    # -- requests --------------------------------------------------------------------------

    def expect(self, r: http.client.HTTPResponse, ok: Iterable[int], what: str) -> None:
        """Raise a :class:`RemoteError` that says what went wrong unless ``r.status`` is ok."""
        if r.status in ok:
            return
        detail = _error_detail(r)
        if self._live is not None:
            self._drop(self._live)  # what is left of the body is of no use
        if r.status == 401:
            raise RemoteError(
                f"{self.registry}: {what}: authentication failed (HTTP 401{detail})",
                hint=f"log in (`docker login {self.registry}` or `podman login "
                f"{self.registry}`), or set REGISTRY_AUTH_FILE",
            )
        if r.status == 403:
            raise RemoteError(
                f"{self.registry}: {what}: denied (HTTP 403{detail})",
                hint="your account lacks that permission on this repository",
            )
        raise RemoteError(f"{self.registry}: {what}: HTTP {r.status}{detail}")

    def open(
        self,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
    ) -> http.client.HTTPResponse:
        """Send a request with auth, answering one challenge and following GET redirects.

        The response is open: read it to the end (or let :meth:`read_blob` do it) before the
        next request; a second 401 comes back for :meth:`expect` to report.
        """
        answered = False
        for _ in range(8):
            origin = _origin(url)
            ours = origin == (self.scheme, self.host.lower(), self.port)
            sent = self._authorization(scopes) if ours else None
            r = self._roundtrip(
                method, url, {**(headers or {}), **({"Authorization": sent} if sent else {})}, body
            )
            if r.status == 401 and ours and not answered:
                challenge = parse_challenge(r.getheader("WWW-Authenticate"))
                if challenge is None:
                    return r
                r.read()
                answered = True
                self._learn(challenge, scopes)
                continue
            if r.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                location = r.getheader("Location")
                r.read()
                if not location:
                    raise RemoteError(f"{self.registry}: a redirect without a Location")
                url = urljoin(url, location)
                self._check_scheme(url)
                continue
            return r
        raise RemoteError(f"{self.registry}: {method} {_path(url)}: too many redirects")

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._credential.basic() if self._credential else None
        key = frozenset(scopes)
        token = self._tokens.get(key)
        if token is None or token.expires - _TOKEN_SLACK < time.monotonic():
            token = self._tokens[key] = self._fetch_token(challenge, scopes)
        return f"Bearer {token.value}"

    def _learn(self, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        """Take a challenge in: look up the credential once, and get a token for Bearer."""
        if not self._looked_up:
            self._credential = find_credential(self.registry)
            self._looked_up = True
        if challenge.scheme == "basic" and self._credential is None:
            raise RemoteError(
                f"{self.registry} requires a login and no credential for it was found",
                hint=f"`docker login {self.registry}` (or `podman login`), or set "
                "REGISTRY_AUTH_FILE",
            )
        if challenge.scheme == "bearer":
            if not challenge.realm:
                raise RemoteError(f"{self.registry}: a Bearer challenge without a realm")
            self._check_scheme(challenge.realm)
            extra = tuple(s for s in (challenge.scope or "").split(" ") if s and s not in scopes)
            self._tokens[frozenset(scopes)] = self._fetch_token(challenge, scopes + extra)
        self._challenge = challenge

    def _fetch_token(self, challenge: Challenge, scopes: Iterable[str]) -> _Token:
        assert challenge.realm is not None
        cred = self._credential
        scopes = list(dict.fromkeys(scopes))
        if cred is not None and cred.identity_token:
            form: dict[str, str] = {
                "grant_type": "refresh_token",
                "refresh_token": cred.secret,
                "client_id": "modelcas",
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            body = urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            r = self._roundtrip("POST", challenge.realm, headers, body)
        else:
            params = [("scope", s) for s in scopes]
            if challenge.service:
                params.insert(0, ("service", challenge.service))
            url = challenge.realm + ("&" if "?" in challenge.realm else "?") + urlencode(params)
            headers = {"Authorization": cred.basic()} if cred is not None else {}
            r = self._roundtrip("GET", url, headers, None)
        with r:
            raw = r.read(1 << 20)
            if r.status != 200:
                who = f"the credential from {cred.origin}" if cred else "anonymous access"
                raise RemoteError(
                    f"{self.registry}: the token service {_path(challenge.realm, full=True)} "
                    f"refused {who} for {' '.join(scopes)} (HTTP {r.status})",
                    hint=f"log in (`docker login {self.registry}`), or check the repository "
                    "name and your permissions",
                )
        try:
            answer = json.loads(raw)
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError):
            value = None
        if not isinstance(value, str) or not value:
            raise RemoteError(f"{self.registry}: the token service answered without a token")
        return _Token(value, time.monotonic() + lifetime)

    def _check_scheme(self, url: str) -> None:
        """Plain HTTP only to loopback or to the registry the user allowed it for."""
        scheme, host, port = _origin(url)
        if scheme == "https":
            return
        if scheme != "http":
            raise RemoteError(f"{self.registry}: refusing a {scheme!r} URL")
        loopback = Reference(host, port, "x").loopback
        if not loopback and (host, port) not in self._plain_ok:
            raise RemoteError(
                f"{self.registry} sent us to plain-HTTP {host}:{port}; refused",
                hint="credentials and tokens go over HTTPS only (or to a loopback address)",
            )

    def _location(self, r: http.client.HTTPResponse, url: str) -> str:
        location = r.getheader("Location")
        if not location:
            raise RemoteError(f"{self.registry}: the upload session has no Location")
        full = urljoin(url, location)
        if _origin(full) != _origin(url):
            self._check_scheme(full)
        return full

    # -- connections -----------------------------------------------------------------------

    def _connection(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection:
        conn = self._conns.get(origin)
        last = self._last.get(origin)
        if conn is not None and last is not None and not last.isclosed():
            # The previous answer was not read to its end: its bytes would poison the next.
            conn.close()
            conn = None
        if conn is not None:
            return conn
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl is None:
                # Honours SSL_CERT_FILE / SSL_CERT_DIR for a private CA.
                self._ssl = ssl.create_default_context()
            proxy = _https_proxy(host)
            if proxy:
                conn = http.client.HTTPSConnection(*proxy, timeout=self.timeout, context=self._ssl)
                conn.set_tunnel(host, port)
            else:
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._ssl
                )
        else:
            # Plain HTTP is for loopback and lab-local registries: never through a proxy.
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self._conns[origin] = conn
        return conn

    def _roundtrip(
        self, method: str, url: str, headers: Mapping[str, str], body: Body
    ) -> http.client.HTTPResponse:
        origin = _origin(url)
        target = _path(url)
        fresh = origin not in self._conns
        all_headers = {"User-Agent": f"modelcas/{__version__}", **headers}
        while True:
            conn = self._connection(origin)
            try:
                self._send(conn, method, target, all_headers, body)
                r = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(origin)
                if fresh:
                    raise self._network_error(method, url, e) from None
                # A pooled keep-alive connection the server had closed: one fresh try.
                fresh = True
                continue
            except (OSError, http.client.HTTPException) as e:
                self._drop(origin)
                raise self._network_error(method, url, e) from None
            self._last[origin] = r
            self._live = origin
            return r

    def _drop(self, origin: tuple[str, str, int]) -> None:
        conn = self._conns.pop(origin, None)
        self._last.pop(origin, None)
        if conn is not None:
            conn.close()

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> None:
        if not isinstance(body, _Upload):
            conn.request(method, target, body=body, headers=dict(headers))
            return
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        assert conn.sock is not None
        with open(body.path, "rb") as f:
            sent = 0
            while sent < body.size:
                # sendfile: the kernel copies from the page cache to the socket (TLS falls back
                # to send); pieces so progress moves.
                n = conn.sock.sendfile(f, sent, min(_SEND_PIECE, body.size - sent))
                if n == 0:
                    raise RemoteError(
                        f"{body.path} shrank while being uploaded ({sent} of {body.size} bytes)"
                    )
                sent += n
                if body.progress is not None:
                    body.progress(n)

    def _network_error(self, method: str, url: str, e: BaseException) -> _NetworkError:
        where = f"{self.registry}: {method} {_path(url)}"
        if isinstance(e, ssl.SSLError) and self.scheme == "https":
            return _NetworkError(
                f"{where}: TLS failed ({e.reason or type(e).__name__})",
                hint="for a registry without TLS pass --plain-http (or list it in "
                "MODELCAS_PLAIN_HTTP); for a private CA set SSL_CERT_FILE",
            )
        if isinstance(e, socket.gaierror):
            return _NetworkError(
                f"{self.registry}: cannot resolve {_origin(url)[1]} ({e.strerror})",
                hint="check the registry's name and your network",
                transient=False,
            )
        if isinstance(e, ConnectionRefusedError):
            return _NetworkError(
                f"{self.registry}: connection refused",
                hint="check the host and port",
                transient=False,
            )
        if isinstance(e, socket.timeout | TimeoutError):
            return _NetworkError(f"{where}: no answer within {self.timeout:.0f} s")
        if isinstance(e, RemoteError):
            return _NetworkError(e.message, hint=e.hint)
        return _NetworkError(
            f"{where}: {type(e).__name__}: {e}".rstrip(": "),
            hint="run the command again; what is complete is kept",
        )


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise UsageError(f"not an HTTP(S) URL: {_path(url, full=True)}")
    return scheme, host, parts.port or (80 if scheme == "http" else 443)


def _path(url: str, *, full: bool = False) -> str:
    """The request target; with ``full``, the URL without its query (where tokens may be)."""
    parts = urlsplit(url)
    if full:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _https_proxy(host: str) -> tuple[str, int] | None:
    """The ``https_proxy`` to tunnel through, unless ``no_proxy`` or loopback excludes it."""
    if Reference(host, None, "x").loopback or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get("https")
    if not proxy:
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 8080


def _error_detail(r: http.client.HTTPResponse) -> str:
    """``: CODE message`` from a distribution error body, when there is one."""
    try:
        raw = r.read(64 << 10)
        errors: Any = json.loads(raw).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')} {first.get('message', '')}".strip()
    except (
        ValueError,
        AttributeError,
        IndexError,
        TypeError,
        OSError,
        RecursionError,
        http.client.HTTPException,
    ):
        return ""
    return f": {text[:200]}" if text else ""


def plain_http_allowed(reference: Reference, flag: bool = False) -> bool:
    """Whether to use HTTP: the flag, or the registry listed in ``MODELCAS_PLAIN_HTTP``."""
    if flag:
        return True
    listed = os.environ.get("MODELCAS_PLAIN_HTTP", "")
    return reference.registry.lower() in {s.strip().lower() for s in listed.split(",") if s}


class _BlobAnswer:
    """A blob GET as :class:`modelcas.remotes.transfer.Answer`."""

    def __init__(self, client: Client, response: http.client.HTTPResponse) -> None:
        self._client = client
        self._r = response
        self.status = response.status
        self._done = False

    def header(self, name: str) -> str | None:
        return self._r.getheader(name)

    def pieces(self) -> Iterator[bytes]:
        # read1: what the socket has now (readinto would wait to fill the whole buffer, and a
        # trickle would look like silence to the low-speed limit).
        while data := self._r.read1(1 << 20):
            yield data
        self._done = True

    def close(self) -> None:
        if not self._done:
            # What is left of the body would poison the pooled connection's next answer.
            self._client.discard()
        self._r.close()


def _next_link(link: str | None, url: str) -> str | None:
    """The next page of a tag list (``Link: </v2/…?last=x>; rel="next"``)."""
    if not link or 'rel="next"' not in link:
        return None
    target = link.split(";", 1)[0].strip().removeprefix("<").removesuffix(">")
    return urljoin(url, target)
