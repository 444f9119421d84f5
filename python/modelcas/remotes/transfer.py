"""The one fetch path: bytes from an HTTP answer into the store, verified while they stream.

Every remote that downloads (the Hub, OCI registries, plain URLs) opens its answers its own
way (auth, redirects) and hands them here as :class:`Answer` objects; what happens to the bytes
is the same for all of them:

- each byte is written and hashed once (sha256 and blake3), by two worker threads, while the
  socket keeps receiving; nothing enters the store unless the digest matches;
- a connection cut midway is resumed with ``Range`` from the bytes already hashed (a bounded
  number of times, with backoff). An answer of 200 to a ranged request (the server ignored
  ``Range``, or ``If-Range`` found the file changed) restarts from zero: a resume never joins
  two versions of a file;
- one **low-speed limit** (curl's ``--speed-limit``/``--speed-time``, git's
  ``http.lowSpeedLimit``): below ``MODELCAS_LOW_SPEED_LIMIT`` bytes/s (default 1024) for
  ``MODELCAS_LOW_SPEED_TIME`` seconds (default 60) the transfer is abandoned, so a trickling
  server cannot hold a pull forever;
- what arrived before an abandoned or cut transfer is kept in the store's ``tmp/`` (as
  ``resume-<key>.partial``) and the next run continues from it (gc removes such leftovers
  after its grace period). A partial file is claimed by renaming it, so two processes never
  append to the same one.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from modelcas.digest import Digest
from modelcas.errors import IntegrityError, RemoteError
from modelcas.hashing import Progress
from modelcas.store import ObjectInfo, Store

LIMIT_ENV = "MODELCAS_LOW_SPEED_LIMIT"
TIME_ENV = "MODELCAS_LOW_SPEED_TIME"
DEFAULT_LIMIT = 1024.0  # bytes per second
DEFAULT_TIME = 60.0  # seconds
RETRIES = 5  # cuts resumed within one run
BACKOFF = 0.25  # seconds, doubled per try, at most 8


@dataclass(frozen=True, slots=True)
class SpeedLimit:
    """Abandon a transfer that moves fewer than ``bytes_per_s`` for ``seconds`` seconds."""

    bytes_per_s: float = DEFAULT_LIMIT
    seconds: float = DEFAULT_TIME

    @classmethod
    def from_env(cls) -> SpeedLimit:
        """The limit ``MODELCAS_LOW_SPEED_LIMIT`` and ``MODELCAS_LOW_SPEED_TIME`` set.

        Raises:
            RemoteError: a value that is not a number >= 0 (or > 0 for the time).
        """
        return cls(
            _env_number(LIMIT_ENV, DEFAULT_LIMIT, zero_ok=True),
            _env_number(TIME_ENV, DEFAULT_TIME, zero_ok=False),
        )

    def describe(self) -> str:
        """``1024 B/s for 60 s``."""
        return f"{self.bytes_per_s:g} B/s for {self.seconds:g} s"


def _env_number(name: str, default: float, *, zero_ok: bool) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 or (zero_ok and value == 0)) or not math.isfinite(value):
        raise RemoteError(
            f"{name}={raw!r} is not a number of {'bytes per second' if zero_ok else 'seconds'}",
            hint=f"unset it for the default ({default:g}), or set a number"
            + (" >= 0" if zero_ok else " > 0"),
        )
    return value


class TooSlowError(RemoteError):
    """A transfer stayed below the low-speed limit; what arrived is kept for the next run."""


class Answer(Protocol):
    """One HTTP answer, opened: its status, headers, and its body in pieces."""

    status: int

    def header(self, name: str) -> str | None:
        """A response header (case-insensitive), or None."""
        ...

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The body as it arrives; a cut raises OSError (or ends early)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


# Opens an answer for the bytes from an offset (0: the whole file; else with Range).
Opener = Callable[[int], Answer]
Sink = Callable[[bytes | memoryview], object]


class _Watch:
    """One transfer's state: the bytes taken so far, and the throughput.

    Throughput is measured over windows of ``limit.seconds``; below the limit it raises.
    """

    def __init__(self, limit: SpeedLimit, where: str, received: int) -> None:
        self.limit = limit
        self.where = where
        self.received = received
        self.start = time.monotonic()
        self.count = 0

    def restart(self) -> None:
        """A new answer: a new window."""
        self.start, self.count = time.monotonic(), 0

    def tick(self, n: int) -> None:
        self.received += n
        self.count += n
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed < self.limit.seconds:
            return
        if self.count < self.limit.bytes_per_s * elapsed:
            raise self.slow()
        self.start, self.count = now, 0

    def slow(self) -> TooSlowError:
        return TooSlowError(
            f"{self.where}: slower than {self.limit.describe()} (the low-speed limit); "
            f"{self.received} bytes arrived and are kept for the next run",
            hint=f"run the command again to resume; on a slow link lower {LIMIT_ENV} or raise "
            f"{TIME_ENV}",
        )


def _status_error(where: str, status: int) -> RemoteError:
    return RemoteError(f"{where}: HTTP {status}")


class _CutError(Exception):
    """A transfer that stopped early, worth resuming."""


def copy(
    opener: Opener,
    size: int | None,
    take: Callable[[bytes | memoryview], object],
    *,
    where: str,
    offset: int = 0,
    restart: Callable[[], None] | None = None,
    progress: Progress | None = None,
    limit: SpeedLimit | None = None,
    retries: int = RETRIES,
) -> int:
    """Stream a file's bytes from ``offset`` into ``take``, each byte once; return the size.

    Args:
        opener: opens an answer for the bytes from an offset (``Range``).
        size: the size the file must have (None: until the body ends).
        take: receives each piece of bytes, in order.
        where: names the file and place in messages.
        offset: bytes already taken (a resumed partial file).
        restart: forgets everything taken so far, for an answer that starts at zero again;
            without it (content named by its digest, the same on every answer) the bytes
            already taken are skipped in such an answer instead.
        progress: called with byte counts.
        limit: the low-speed limit (default: from the environment).
        retries: cuts resumed before giving up.

    Raises:
        IntegrityError: the server sends more than ``size`` bytes.
        TooSlowError: below the low-speed limit.
        RemoteError: an error status, or cut too often.
    """
    limit = limit or SpeedLimit.from_env()
    watch = _Watch(limit, where, offset)
    failures: list[str] = []
    if size is not None and watch.received > size and restart is not None:
        restart()
        watch.received = 0
    while True:
        if size is not None and watch.received == size and watch.received:
            return watch.received  # a partial file that was complete: the digest decides
        watch.restart()
        try:
            _one(opener, size, take, restart, watch, progress)
            if size is None or watch.received == size:
                return watch.received
            failures.append(f"cut after {watch.received} bytes")
        except (IntegrityError, TooSlowError):
            raise
        except RemoteError as e:
            if not getattr(e, "transient", False):
                raise
            failures.append(e.message)  # a connection that failed in a way worth retrying
        except TimeoutError:  # a read that waited longer than the low-speed time
            raise watch.slow() from None
        except _CutError as e:
            failures.append(str(e))
        except OSError as e:
            failures.append(f"{type(e).__name__}: {e}".splitlines()[0])
        except Exception as e:  # the HTTP library's own errors: a cut, resumed below
            name = type(e).__name__.lower()
            if "readtimeout" in name or name == "timeout":
                raise watch.slow() from None
            failures.append(f"{type(e).__name__}: {e}".splitlines()[0])
        if len(failures) > retries:
            of = f" of {size}" if size is not None else ""
            raise RemoteError(
                f"{where}: received {watch.received}{of} bytes in {len(failures)} tries (last: "
                f"{failures[-1]}); what arrived is kept for the next run",
                hint="the connection keeps failing: check the network, then run the command again",
            )
        time.sleep(min(BACKOFF * 2 ** (len(failures) - 1), 8.0))


def _one(  # noqa: PLR0917 (one step of copy's loop, with copy's own state)
    opener: Opener,
    size: int | None,
    take: Callable[[bytes | memoryview], object],
    restart: Callable[[], None] | None,
    watch: _Watch,
    progress: Progress | None,
) -> None:
    """One GET from the bytes taken so far (``watch.received``, kept up to date)."""
    received = watch.received
    answer = opener(received)
    where = watch.where
    try:
        status = answer.status
        if status == 206 and received and not _starts_at(answer, received):
            raise RemoteError(
                f"{where}: asked for bytes from {received}, the server answered "
                f"{answer.header('Content-Range')!r}"
            )
        if status == 206 and not received:
            raise _CutError("a partial answer to a request for the whole file")
        if status not in (200, 206):
            if status >= 500 or status == 429:
                raise _CutError(f"HTTP {status}")
            raise _status_error(where, status)
        skip = 0
        if status == 200 and received:
            # The server ignored Range, or If-Range found the file changed: start again, so
            # that no file is ever joined from two versions of it. Without ``restart`` (the
            # content is named by its digest) the bytes already taken are skipped instead.
            if restart is None:
                skip = received
            else:
                restart()
                watch.received = received = 0
        length = answer.header("Content-Length")
        if size is not None and length is not None and length.isdigit():  # noqa: SIM102
            if int(length) + received - skip != size:
                raise IntegrityError(
                    f"{where}: the server sends {int(length) + received - skip} bytes, the "
                    f"listing says {size}; nothing was stored",
                    hint="the remote's copy or its metadata is wrong",
                )
        for whole in answer.pieces():
            piece = whole
            if skip:
                cut = min(skip, len(piece))
                skip -= cut
                piece = memoryview(piece)[cut:]
            n = len(piece)
            if not n:
                continue
            if size is not None and watch.received + n > size:
                raise IntegrityError(
                    f"{where}: the server sends more than the {size} bytes listed; nothing "
                    "was stored",
                    hint="the remote's copy or its metadata is wrong",
                )
            take(piece)
            if progress is not None:
                progress(n)
            watch.tick(n)
    finally:
        answer.close()


def _starts_at(answer: Answer, offset: int) -> bool:
    value = str(answer.header("Content-Range") or "")
    unit, _, spec = value.partition(" ")
    return unit == "bytes" and spec.split("-", 1)[0] == str(offset)


# -- the store side ------------------------------------------------------------------------


def resume_key(*parts: str) -> str:
    """A name for a partial download: the same parts (content, place, validator), the same."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class Partial:
    """One object being downloaded into the store's ``tmp/``, resumable across runs.

    The bytes go through the store's :class:`~modelcas.store.ObjectWriter` (written and hashed
    by two worker threads while the socket keeps receiving). On entry a partial file left by
    an earlier run under the same key is claimed (renamed) and handed to the writer, which
    hashes its bytes first; on an exit without :meth:`commit` the bytes so far are left for
    the next run, unless the failure was about the bytes themselves (then they are thrown
    away).
    """

    def __init__(
        self,
        store: Store,
        expected: Digest | None,
        what: str,
        key: str,
        *,
        extra: Sink | None = None,
    ) -> None:
        self.keep_path = store.tmp_dir / f"resume-{key}.partial"
        self._writer = store.writer(
            expected, what, partial=self._claim(store, expected), extra=extra
        )
        self._committing = False

    @property
    def offset(self) -> int:
        """The bytes an earlier run left, taken over (0 after a restart)."""
        return self._writer.offset

    def _claim(self, store: Store, expected: Digest | None) -> Path | None:
        """The earlier run's bytes, renamed to a name of our own; None when there are none."""
        tmp = store.temp_path()
        try:
            os.rename(self.keep_path, tmp)
        except OSError:
            return None  # none, or it cannot be claimed: start fresh
        with contextlib.suppress(OSError):
            if expected is not None and tmp.stat().st_size > expected.size:
                os.truncate(tmp, 0)
        return tmp

    def __enter__(self) -> Self:
        return self

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes (hashed and written by the workers)."""
        self._writer.write(data)

    def restart(self, extra: Sink | None = None) -> None:
        """Forget every byte so far (the server sends the file from its start)."""
        self._writer.restart(extra)

    def commit(self) -> ObjectInfo:
        """Check the bytes against the expected digest and publish the object.

        Raises:
            IntegrityError: other bytes than expected; nothing is stored or kept.
        """
        self._committing = True  # whatever happens now, these bytes are not kept for a resume
        return self._writer.commit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not self._committing and not isinstance(exc, IntegrityError):
            self._writer.set_aside(self.keep_path)
        self._writer.__exit__(exc_type, exc, tb)


def download(
    store: Store,
    opener: Opener,
    *,
    size: int | None,
    expected: Digest | None,
    where: str,
    key: str,
    progress: Progress | None = None,
    extra: Callable[[], tuple[Sink, Callable[[], None]]] | None = None,
) -> ObjectInfo:
    """Download one file into the store through :class:`Partial` and :func:`copy`.

    Args:
        store: the local store.
        opener: opens an answer from an offset.
        size: the size listed (None: unknown; the body's end decides).
        expected: the digest the bytes must have (None: whatever they are, e.g. a first pull
            of a plain URL without ``--expect``).
        where: names the file and place in messages.
        key: the partial file's key (see :func:`resume_key`).
        progress: called with byte counts.
        extra: makes (update, check) for a second digest the remote records (the Hub's git
            blob id); ``check`` raises IntegrityError before anything is stored.

    Raises:
        IntegrityError, TooSlowError, RemoteError: see :func:`copy`.
    """
    update, check = extra() if extra is not None else (None, None)
    with Partial(store, expected, where, key, extra=update) as part:

        def restart() -> None:
            nonlocal check
            fresh = extra() if extra is not None else (None, None)
            part.restart(fresh[0])
            check = fresh[1]

        if part.offset and progress is not None:
            progress(part.offset)
        copy(
            opener,
            size,
            part.write,
            where=where,
            offset=part.offset,
            restart=restart,
            progress=progress,
        )
        if check is not None:
            check()
        return part.commit()
