"""A plain URL as a read-only remote: Zenodo, figshare, GitHub releases, public buckets.

``https://HOST/PATH/best.pt`` names one file. A pull asks the server for the file's size and
its validator (a strong ``ETag``, else ``Last-Modified``), downloads it through the one fetch
path (hashed while it streams; ``--expect sha256:…`` refuses other bytes), and pins it with
the URL as ``source``, the size, and the validator. ``cas sync`` fetches from it again and
refuses bytes that changed on the server.

A cut download resumes with ``Range`` only under ``If-Range`` with the validator seen when it
started: a server whose file changed meanwhile answers 200 with the new file, and the download
restarts from zero (a resume across two versions of a file would join them). Without a
validator there is no resume at all. ``http://`` is allowed only to loopback addresses, to
hosts listed in ``MODELCAS_PLAIN_HTTP``, or with ``--plain-http``; a redirect to plain HTTP
is held to the same rule. The URL must not carry credentials (it is written to the lockfile).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from modelcas import __version__
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, RemoteError, RemoteMissingError, UsageError
from modelcas.hashing import Progress
from modelcas.remotes import transfer
from modelcas.remotes.base import Fetched, Listed, RemoteVersion, Sink
from modelcas.remotes.reference import file_name
from modelcas.store import Store


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_ok(host: str, flag: bool) -> bool:
    listed = {h.strip().lower() for h in os.environ.get("MODELCAS_PLAIN_HTTP", "").split(",")}
    return flag or _loopback(host) or host.lower() in listed


class _NetworkError(RemoteError):
    """The connection failed; ``transient`` when another try may work (a reset)."""

    def __init__(self, message: str, *, hint: str | None = None, transient: bool) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (releases and buckets use them), never down to plain HTTP."""

    def __init__(self, plain_http: bool) -> None:
        super().__init__()
        self.plain_http = plain_http

    def redirect_request(  # noqa: PLR0917 (urllib's signature)
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        parts = urlsplit(newurl)
        if parts.scheme == "http" and not _plain_ok(parts.hostname or "", self.plain_http):
            raise RemoteError(
                f"{req.full_url} redirects to plain-HTTP {parts.hostname}; refused",
                hint="pass --plain-http if that server is trusted",
            )
        if parts.scheme not in ("http", "https"):
            raise RemoteError(f"{req.full_url} redirects to a {parts.scheme!r} URL; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Answer:
    """A urllib answer as :class:`transfer.Answer`."""

    def __init__(self, response: Any) -> None:
        self._r = response
        self.status = int(getattr(response, "status", None) or response.code)

    def header(self, name: str) -> str | None:
        value = self._r.headers.get(name)
        return str(value) if value is not None else None

    def pieces(self) -> Iterator[bytes]:
        # read1: what the socket has now, so that a trickle is measured as it arrives.
        while data := self._r.read1(1 << 20):
            yield data

    def close(self) -> None:
        self._r.close()


def validator_of(headers: Mapping[str, str] | Any) -> str | None:
    """A strong ``ETag`` (weak ones cannot guard a ``Range``), else ``Last-Modified``."""
    etag = headers.get("ETag")
    if etag and not str(etag).startswith("W/"):
        return str(etag)
    modified = headers.get("Last-Modified")
    return str(modified) if modified else None


class UrlRemote:
    """One file on a web server, as a read-only :class:`~modelcas.remotes.base.Remote`.

    Raises:
        UsageError: ``http://`` to a host that is not loopback, without ``plain_http``.
    """

    def __init__(self, url: str, *, plain_http: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme == "http" and not _plain_ok(parts.hostname or "", plain_http):
            raise UsageError(
                f"{url}: plain http:// is allowed only to this machine (loopback)",
                hint="use https://, or pass --plain-http (or list the host in "
                "MODELCAS_PLAIN_HTTP) for a trusted lab server",
            )
        self.url = url
        self.plain_http = plain_http
        self.name = file_name(url)
        self._head: tuple[int, str | None] | None = None

    def _open(self, method: str, headers: Mapping[str, str]) -> Any:
        """One request (redirects followed); an HTTP error status comes back as an answer."""
        host = urlsplit(self.url).hostname or ""
        handlers: list[Any] = [_Redirects(self.plain_http)]
        if _loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # never a proxy for this machine
        opener = urllib.request.build_opener(*handlers)
        req = urllib.request.Request(  # noqa: S310 (the scheme is checked: http(s) only)
            self.url, method=method, headers={"User-Agent": f"modelcas/{__version__}", **headers}
        )
        limit = transfer.SpeedLimit.from_env()
        try:
            return opener.open(req, timeout=limit.seconds)
        except urllib.error.HTTPError as e:
            return e
        except TimeoutError:
            raise self._silent(limit) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise self._silent(limit) from None
            raise _NetworkError(
                f"{self.url}: {getattr(reason, 'strerror', None) or reason}",
                hint="check the URL and your network",
                transient=isinstance(reason, ConnectionResetError | BrokenPipeError),
            ) from None

    def _silent(self, limit: transfer.SpeedLimit) -> transfer.TooSlowError:
        return transfer.TooSlowError(
            f"{self.url}: no answer within {limit.seconds:g} s (the low-speed limit)",
            hint=f"check the server; on a slow link raise {transfer.TIME_ENV}",
        )

    def _fail(self, status: int) -> RemoteError:
        if status in (404, 410):
            return RemoteMissingError(
                f"{self.url}: the server has no such file (HTTP {status})",
                hint="check the URL; a moved file needs a new pull",
            )
        if status in (401, 403):
            return RemoteError(
                f"{self.url}: the server refuses it (HTTP {status})",
                hint="URLs that need credentials are not supported: use a public URL",
            )
        return RemoteError(f"{self.url}: HTTP {status}")

    def head(self) -> tuple[int, str | None]:
        """The file's size and validator, as the server says them now.

        Raises:
            RemoteMissingError: no such file.
            RemoteError: the server failed, or does not say the size.
        """
        if self._head is not None:
            return self._head
        r = self._open("HEAD", {})
        with r:
            status = int(getattr(r, "status", None) or r.code)
            headers = r.headers
        length = headers.get("Content-Length") if status == 200 else None
        if status in (403, 405, 501) or (status == 200 and length is None):
            # Some servers (presigned buckets) refuse HEAD: ask for the first byte instead.
            r = self._open("GET", {"Range": "bytes=0-0"})
            with r:
                status = int(getattr(r, "status", None) or r.code)
                headers = r.headers
            total = str(headers.get("Content-Range") or "").rpartition("/")[2]
            length = total if status == 206 else headers.get("Content-Length")
        if status not in (200, 206):
            raise self._fail(status)
        if length is None or not str(length).isdigit():
            raise RemoteError(
                f"{self.url}: the server does not say the file's size",
                hint="cas pins files by size and digest: use a server that sends Content-Length",
            )
        self._head = (int(length), validator_of(headers))
        return self._head

    # -- the protocol ----------------------------------------------------------------------

    def resolve(self, ref: str | None = None) -> RemoteVersion:  # noqa: ARG002 (one file)
        """The file as the server has it now: its validator is the version's revision."""
        _, validator = self.head()
        return RemoteVersion(self.url, self.url, validator=validator, files=(self.name,), ref=None)

    def listing(self, version: RemoteVersion) -> dict[str, Listed]:  # noqa: ARG002
        """One file, with the size the server says (it records no digest)."""
        size, validator = self.head()
        return {self.name: Listed(self.name, size, validator=validator)}

    def versions(self, model: str) -> dict[str, str]:  # noqa: ARG002
        """A plain URL lists no versions.

        Raises:
            UsageError: always.
        """
        raise UsageError(
            f"{self.url} is a plain URL: it lists no versions",
            hint="pull a new version from its own URL with `cas pull URL --version V`",
        )

    def signatures(self, version: RemoteVersion) -> list[bytes]:  # noqa: ARG002
        """A plain URL carries no signature (``cas pull URL --signature FILE`` gives one)."""
        return []

    def _opener(
        self, validator: str | None, seen: list[str | None] | None = None
    ) -> transfer.Opener:
        """Opens the file from an offset; ``seen`` gets each whole answer's validator."""

        def open_at(offset: int) -> transfer.Answer:
            headers = {"Accept-Encoding": "identity"}
            if offset and validator:
                headers |= {"Range": f"bytes={offset}-", "If-Range": validator}
            answer = _Answer(self._open("GET", headers))
            if answer.status == 200 and seen is not None:
                seen.append(validator_of({k: answer.header(k) for k in ("ETag", "Last-Modified")}))
            if answer.status in (200, 206) or answer.status >= 500 or answer.status == 429:
                return answer
            answer.close()
            raise self._fail(answer.status)

        return open_at

    def fetch(
        self,
        version: RemoteVersion,
        want: Mapping[str, Digest | None],
        store: Store,
        *,
        progress: Progress | None = None,
    ) -> list[Fetched]:
        """Download the file, hashed while it streams (see ``Remote.fetch``).

        Against a pin, bytes that changed on the server are refused, and the message says
        whether its validator changed too.
        """
        out = []
        for name, pinned in want.items():
            if name != self.name:
                raise RemoteMissingError(f"{self.url} is one file, {self.name}, not {name!r}")
            if pinned is not None and store.has(pinned.sha256):
                out.append(Fetched(name, store.info(pinned.sha256).digest, "store"))
                continue
            size, now = self.head()
            if pinned is not None and size != pinned.size:
                raise IntegrityError(
                    f"{self.url} changed on the server: it is {size} bytes, the pin says "
                    f"{pinned.size}" + _validators(version.validator, now) + "; nothing was "
                    "downloaded",
                    hint="the file at that URL is not the one pinned: pin the new one as a new "
                    "version (cas pull URL --version V), or find the old one",
                )
            seen: list[str | None] = []
            try:
                info = transfer.download(
                    store,
                    self._opener(now, seen),
                    size=size,
                    expected=pinned,
                    where=self.url,
                    key=transfer.resume_key(self.url, now or ""),
                    progress=progress,
                )
            except IntegrityError as e:
                if pinned is None:
                    raise
                raise IntegrityError(
                    f"{self.url} serves other bytes than expected: "
                    f"{e.message.removeprefix(self.url + ': ')}"
                    + _validators(version.validator, now),
                    hint="the file at that URL is not the one pinned or expected (it changed, or "
                    "the digest is wrong): pin the new one as a new version, or find the old one",
                ) from None
            # A 206 continues the file `now` names; a 200 sent it whole, under its own.
            out.append(Fetched(name, info.digest, "download", seen[-1] if seen else now))
        return out

    def stream(self, version: RemoteVersion, listed: Listed, sink: Sink) -> None:
        """Read the file into ``sink`` (an audit's read-data)."""
        transfer.copy(self._opener(version.validator), listed.size, sink, where=self.url, retries=0)


def _validators(pinned: str | None, now: str | None) -> str:
    """Whether the server's validator changed since the pin (nothing to say otherwise)."""
    if pinned is None or now is None or pinned == now:
        return ""
    return f" (its validator was {pinned}, now {now})"
