"""The local object store: write-once, read-only objects named by their sha256.

Layout (``docs/store.md``)::

    <root>/store.json                 {"format": 1}; an unknown format refuses to open
    <root>/CACHEDIR.TAG               backup tools skip the store
    <root>/objects/sha256/ab/<hex>    the objects, mode 0444, sharded by the first two hex digits
    <root>/index/sha256/ab/<hex>.json size, sha256, blake3 and when the object was added
    <root>/tmp/                       in-flight writes; the only place a crash leaves anything
    <root>/quarantine/                objects that failed verification, moved aside by --repair
    <root>/roots/                     lockfiles and bundles whose objects gc must keep
    <root>/locks/                     advisory locks; they only save duplicated work

Correctness never depends on the locks (they may do nothing on NFS): every object is written to
``tmp/``, hashed while written, size-checked, fsynced, and renamed into place, then its directory
is fsynced. A rename of identical content over identical content is harmless, so racing writers
all succeed with the same result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import queue
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from modelcas import hashing
from modelcas.digest import Digest, Hashes, is_hex64, parse_address
from modelcas.errors import (
    IntegrityError,
    ModelcasError,
    ObjectNotFoundError,
    StoreError,
    StoreVersionError,
    UsageError,
)

FORMAT = 1
LinkMode = Literal["auto", "reflink", "hardlink", "symlink", "copy"]
LINK_MODES: tuple[LinkMode, ...] = ("auto", "reflink", "hardlink", "symlink", "copy")
# gc keeps temporary files and unreferenced objects younger than this: they may belong to a
# write in flight, or to an add whose lockfile entry is about to be written.
DEFAULT_GRACE = 3600.0
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by modelcas.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


RootReader = Callable[[Path], set[str]]
_ROOT_READERS: dict[str, RootReader] = {}


def register_root_reader(kind: str, reader: RootReader) -> None:
    """Teach gc how to list the sha256s a root of this kind references (lockfile, bundle)."""
    _ROOT_READERS[kind] = reader


def default_root() -> Path:
    """``MODELCAS_HOME``, else ``$XDG_CACHE_HOME/modelcas``, else ``~/.cache/modelcas``."""
    if home := os.environ.get("MODELCAS_HOME"):
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "modelcas"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a mix."""
    tmp_dir = tmp_dir or path.parent
    tmp = tmp_dir / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object: its digest, where it lives, and when it was added (Unix time)."""

    digest: Digest
    path: Path
    added: float


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``add_file`` did: the object, and whether the store already had it."""

    source: Path
    info: ObjectInfo
    existed: bool


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one object, as ``cas verify`` reports it."""

    sha256: str
    path: Path
    kind: Literal["missing", "size", "blake3", "sha256", "not-regular", "unreadable"]
    expected: str
    actual: str

    def describe(self) -> str:
        """What is wrong, with the expected and actual value and the path."""
        what = {
            "missing": "object is missing",
            "size": "size differs",
            "blake3": "blake3 differs",
            "sha256": "sha256 differs",
            "not-regular": "not a regular file (refused, not followed)",
            "unreadable": "cannot be read",
        }[self.kind]
        return f"{what}: expected {self.expected}, found {self.actual} ({self.path})"

    def __str__(self) -> str:
        return f"sha256:{self.sha256}: {self.describe()}"


@dataclass(frozen=True, slots=True)
class Root:
    """A file whose referenced objects gc keeps: a lockfile or a bundle."""

    path: Path
    kind: str
    registered: float


@dataclass
class GcReport:
    """What gc removed (or, in a dry run, would remove)."""

    objects: list[ObjectInfo] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    kept_young: int = 0
    stale_roots: list[Path] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Bytes held by the removed objects."""
        return sum(o.digest.size for o in self.objects)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """``cas store info``."""

    root: Path
    format: int
    objects: int
    bytes: int
    temp_files: int
    quarantined: int
    roots: int


class ObjectWriter:
    """Write one object from streamed bytes (a download), hashing while writing.

    Use through :meth:`Store.writer`. Bytes are batched and handed to two worker threads, one
    hashing and one writing (both release the GIL), so the producer (a socket) keeps
    receiving meanwhile. The writer flushes to disk every ``_SYNC_EVERY`` bytes, so the disk
    works during the download and the fsync in :meth:`commit` finds little left to do.
    Nothing is visible in the store until :meth:`commit`; leaving the ``with`` block without
    committing removes the temporary file.
    """

    _BATCH = 8 << 20
    _SYNC_EVERY = 32 << 20

    def __init__(self, store: Store, expected: Digest | None, what: str) -> None:
        self._store = store
        self._expected = expected
        self._what = what
        self._hasher = hashing.Hasher()
        self._tmp = store.temp_path()
        self._file = open(self._tmp, "xb")  # noqa: SIM115 (closed in commit/__exit__)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._unsynced = 0
        self._error: BaseException | None = None
        self._queues: list[queue.Queue[bytes | None]] = []
        self._workers: list[threading.Thread] = []
        for name, consume in (("hash", self._hasher.update), ("write", self._write_out)):
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
            worker = threading.Thread(
                target=self._drain, args=(q, consume), name=f"modelcas-{name}", daemon=True
            )
            worker.start()
            self._queues.append(q)
            self._workers.append(worker)
        self._done = False

    def __enter__(self) -> Self:
        return self

    def _drain(self, q: queue.Queue[bytes | None], consume: Callable[[bytes], object]) -> None:
        while (data := q.get()) is not None:
            if self._error is not None:
                continue
            try:
                consume(data)
            except BaseException as e:
                self._error = e

    def _write_out(self, data: bytes) -> None:
        self._file.write(data)
        self._unsynced += len(data)
        if self._unsynced >= self._SYNC_EVERY:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            for q in self._queues:
                q.put(data)
        if self._error is not None:
            raise self._error

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the object being written."""
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= self._BATCH:
            self._flush()

    def _stop(self) -> None:
        for q, worker in zip(self._queues, self._workers, strict=True):
            if worker.is_alive():
                q.put(None)
        for worker in self._workers:
            worker.join()

    def commit(self) -> ObjectInfo:
        """Check the bytes against the expected digest and publish the object.

        Returns:
            The stored object.

        Raises:
            IntegrityError: the bytes are not what ``expected`` says; nothing is stored.
            OSError: writing failed.
        """
        self._flush()
        self._stop()
        if self._error is not None:
            raise self._error
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        hashes = self._hasher.hashes()
        try:
            info = self._store._publish(self._tmp, hashes.digest(), self._expected, self._what)
        finally:
            self._tmp.unlink(missing_ok=True)
        self._done = True
        return info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        if not self._file.closed:
            self._file.close()
        if not self._done:
            self._tmp.unlink(missing_ok=True)


class Store:
    """A content-addressed store of model weights on the local filesystem.

    Args:
        root: the store directory; created on first use. Default: :func:`default_root`.

    Raises:
        StoreVersionError: the store was made by a newer modelcas.
        StoreError: ``root`` exists and is not a modelcas store.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.objects_dir = self.root / "objects" / "sha256"
        self.index_dir = self.root / "index" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.roots_dir = self.root / "roots"
        self.locks_dir = self.root / "locks"
        self._open()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> None:
        marker = self.root / "store.json"
        try:
            meta = json.loads(marker.read_text())
        except FileNotFoundError:
            self._create(marker)
            return
        except (OSError, ValueError) as e:
            raise StoreError(
                f"{marker} is unreadable: {e}",
                hint="point --store / MODELCAS_HOME at a modelcas store, or move this one away",
            ) from e
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != FORMAT:
            raise StoreVersionError(
                f"the store at {self.root} has format {fmt!r}; this modelcas knows format {FORMAT}",
                hint="upgrade modelcas (pip install -U modelcas), or use another --store",
            )

    def _create(self, marker: Path) -> None:
        # Another process may be creating the store right now: only foreign entries refuse.
        ours = {
            "store.json",
            "CACHEDIR.TAG",
            "objects",
            "index",
            "tmp",
            "quarantine",
            "roots",
            "locks",
        }
        if self.root.exists() and any(p.name not in ours for p in self.root.iterdir()):
            raise StoreError(
                f"{self.root} exists, is not empty, and is not a modelcas store",
                hint="choose an empty or new directory for --store / MODELCAS_HOME",
            )
        for d in (
            self.objects_dir,
            self.index_dir,
            self.tmp_dir,
            self.quarantine_dir,
            self.roots_dir,
            self.locks_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, _CACHEDIR_TAG.encode(), self.tmp_dir)
        # Another process may create the store at the same moment; both write the same bytes.
        atomic_write(marker, json.dumps({"format": FORMAT}).encode() + b"\n", self.tmp_dir)

    # -- paths ---------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """Where the object with this sha256 lives (whether or not it exists)."""
        _check_hex(sha256)
        return self.objects_dir / sha256[:2] / sha256

    def _index_path(self, sha256: str) -> Path:
        return self.index_dir / sha256[:2] / f"{sha256}.json"

    def temp_path(self) -> Path:
        """A fresh name in the store's temporary area (same filesystem as the objects)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{uuid.uuid4().hex}.partial"

    # -- adding --------------------------------------------------------------------------

    def add_file(
        self,
        source: str | os.PathLike[str],
        *,
        move: bool = False,
        expected: Digest | None = None,
        progress: hashing.Progress | None = None,
    ) -> AddResult:
        """Copy (or move) a file into the store, hashing it in the same pass.

        Content that is already present costs a hash, not a copy.

        Args:
            source: the file.
            move: take the file instead of copying it (it disappears from ``source``).
            expected: when given, the bytes must have this digest or nothing is stored.
            progress: called with byte counts as the work advances.

        Returns:
            The object and whether it existed before.

        Raises:
            FileNotFoundError, IsADirectoryError, PermissionError: about ``source``.
            IntegrityError: the bytes do not match ``expected``.
            StoreError: the store could not be written (disk full, I/O error); nothing is left
                behind but the temporary area.
        """
        src = Path(source)
        st = src.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory (add its files)", str(src))
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{src} is not a regular file; only files can be added")
        with self._lock(f"src-{st.st_dev}-{st.st_ino}"):
            if move:
                return self._add_by_move(src, expected, progress)
            if self._has_size(st.st_size):
                # Maybe present: a hash decides, and a hit costs no copy.
                hashes = hashing.hash_file(src, progress=progress)
                found = self._present(hashes.digest(), expected, src)
                if found is not None:
                    return AddResult(src, found, True)
            return self._add_by_copy(src, expected, progress)

    def _add_by_copy(
        self, src: Path, expected: Digest | None, progress: hashing.Progress | None
    ) -> AddResult:
        tmp = self.temp_path()
        try:
            try:
                hashes = hashing.copy_file(src, tmp, progress=progress)
            except OSError as e:
                if e.filename == str(src):
                    raise  # about the source: the caller's problem, already named
                raise self._write_error(src, e) from e
            existed = self.object_path(hashes.digest().sha256).exists()
            info = self._publish(tmp, hashes.digest(), expected, str(src))
        finally:
            tmp.unlink(missing_ok=True)
        return AddResult(src, info, existed)

    def _add_by_move(
        self, src: Path, expected: Digest | None, progress: hashing.Progress | None
    ) -> AddResult:
        tmp = self.temp_path()
        try:
            # Take the file first, so nobody can change it between hashing and publishing.
            os.rename(src, tmp)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            result = self._add_by_copy(src, expected, progress)
            src.unlink()
            return result
        try:
            hashes = hashing.hash_file(tmp, progress=progress)
            digest = hashes.digest()
            found = self._present(digest, expected, src)
            if found is not None:
                tmp.unlink()
                return AddResult(src, found, True)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            info = self._publish(tmp, digest, expected, str(src))
        except BaseException:
            # Give the file back rather than lose it.
            with contextlib.suppress(OSError):
                os.rename(tmp, src)
            raise
        return AddResult(src, info, False)

    def writer(self, expected: Digest | None = None, what: str = "stream") -> ObjectWriter:
        """An :class:`ObjectWriter` for streamed bytes; ``what`` names the source in errors."""
        return ObjectWriter(self, expected, what)

    def add_bytes(self, data: bytes, *, expected: Digest | None = None) -> ObjectInfo:
        """Store a buffer (small metadata files, tests)."""
        with self.writer(expected, "bytes") as w:
            w.write(data)
            return w.commit()

    def adopt(self, tmp: Path, digest: Digest, *, what: str) -> ObjectInfo:
        """Publish a complete, fsynced file in :meth:`temp_path` as the object for ``digest``.

        For extractors that verified the bytes as they wrote them. The temporary name is gone
        afterwards.

        Raises:
            IntegrityError: its size is not ``digest.size``.
        """
        try:
            return self._publish(tmp, digest, None, what)
        finally:
            tmp.unlink(missing_ok=True)

    def _present(self, digest: Digest, expected: Digest | None, src: Path) -> ObjectInfo | None:
        """The existing object with this digest, verified, or None when absent or bad."""
        _check_expected(digest, expected, str(src))
        path = self.object_path(digest.sha256)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != digest.size:
            # Damaged or planted: the new, verified bytes replace it.
            return None
        info = self.info(digest.sha256)
        if info.digest.blake3 not in (None, digest.blake3):
            return None
        self._touch(path)
        if info.digest.blake3 is None and digest.blake3 is not None:
            self._write_index(digest, info.added)
            info = self.info(digest.sha256)
        return info

    def _publish(self, tmp: Path, digest: Digest, expected: Digest | None, what: str) -> ObjectInfo:
        """Move a complete, fsynced temp file into place as the object for ``digest``."""
        _check_expected(digest, expected, what)
        actual_size = tmp.stat().st_size
        if actual_size != digest.size:
            raise IntegrityError(
                f"{what}: wrote {actual_size} bytes but hashed {digest.size}; the file changed "
                f"while it was being added",
                hint="add it again once nothing is writing to it",
            )
        final = self.object_path(digest.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        now = time.time()
        self._write_index(digest, now)
        marker = self._size_marker(digest.size)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return ObjectInfo(digest, final, now)

    def _write_index(self, digest: Digest, added: float) -> None:
        path = self._index_path(digest.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "sha256": digest.sha256,
            "size": digest.size,
            "blake3": digest.blake3,
            "added": added,
        }
        atomic_write(path, json.dumps(record, sort_keys=True).encode(), self.tmp_dir)

    def _write_error(self, src: Path, e: OSError) -> StoreError:
        reason = e.strerror or str(e)
        hint = "free some space, or point --store / MODELCAS_HOME elsewhere"
        if e.errno == errno.EIO:
            hint = "the disk reported an I/O error; check it, then add the file again"
        return StoreError(
            f"cannot add {src} to the store at {self.root}: {reason}; nothing was stored",
            hint=hint,
        )

    def _size_marker(self, size: int) -> Path:
        return self.root / "index" / "sizes" / str(size)

    def _has_size(self, size: int) -> bool:
        # A marker per object size seen: re-adding known content is found with one stat, and
        # new content goes straight to the one-pass copy. A stale marker only costs a hash.
        return self._size_marker(size).exists()

    @staticmethod
    def _touch(path: Path) -> None:
        # Marks the object as recently used, so a concurrent gc keeps it (see gc).
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)

    # -- reading -------------------------------------------------------------------------

    def has(self, sha256: str) -> bool:
        """Whether an object with this sha256 is present (not verified)."""
        return self.object_path(sha256).is_file()

    def info(self, sha256: str) -> ObjectInfo:
        """The index record of an object.

        Raises:
            ObjectNotFoundError: the object is not in the store.
        """
        path = self.object_path(sha256)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise ObjectNotFoundError(
                f"sha256:{sha256} is not in the store at {self.root}",
                hint="add it with `cas add`, or fetch it with `cas sync` / `cas pull`",
            ) from None
        record = self._read_index(sha256)
        if record is None:
            return ObjectInfo(Digest(sha256, st.st_size), path, st.st_mtime)
        return ObjectInfo(record[0], path, record[1])

    def _read_index(self, sha256: str) -> tuple[Digest, float] | None:
        try:
            raw = json.loads(self._index_path(sha256).read_text())
            digest = Digest(sha256, int(raw["size"]), raw.get("blake3"))
            return digest, float(raw["added"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _iter_index(self) -> Iterator[ObjectInfo]:
        if not self.objects_dir.is_dir():
            return
        for shard in sorted(self.objects_dir.iterdir()):
            if not shard.is_dir():
                continue
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                if not is_hex64(entry.name):
                    continue
                record = self._read_index(entry.name)
                path = Path(entry.path)
                if record is not None:
                    yield ObjectInfo(record[0], path, record[1])
                else:
                    st = entry.stat(follow_symlinks=False)
                    yield ObjectInfo(Digest(entry.name, st.st_size), path, st.st_mtime)

    def objects(self) -> list[ObjectInfo]:
        """Every object, ordered by sha256."""
        return list(self._iter_index())

    def resolve(self, address: str) -> str:
        """The sha256 of an address, accepting a unique prefix (``sha256:9f86``)."""
        hexpart = address.removeprefix("sha256:")
        if is_hex64(hexpart):
            return hexpart
        if len(hexpart) < 4 or any(c not in "0123456789abcdef" for c in hexpart):
            parse_address(address)  # raises with the standard message
        shard = self.objects_dir / hexpart[:2]
        matches = sorted(p.name for p in shard.glob(f"{hexpart}*")) if shard.is_dir() else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ObjectNotFoundError(f"no object in {self.root} starts with sha256:{hexpart}")
        raise UsageError(f"sha256:{hexpart} is ambiguous: {len(matches)} objects match")

    def path(self, sha256: str, *, verify: bool = True, deep: bool = False) -> Path:
        """The path of an object, verified first.

        Args:
            sha256: the object.
            verify: re-hash it (blake3) before handing it out.
            deep: recompute sha256 too.

        Returns:
            The object's path. Never write to it.

        Raises:
            ObjectNotFoundError: absent.
            IntegrityError: present but not what its name says.
        """
        info = self.info(sha256)
        if verify:
            problem = self.verify_object(sha256, deep=deep)
            if problem is not None:
                raise IntegrityError(
                    str(problem),
                    hint="run `cas verify --repair` to quarantine it, then fetch it again",
                )
        return info.path

    def verify_object(self, sha256: str, *, deep: bool = False) -> Problem | None:
        """Re-check one object; ``None`` when it is intact (see :meth:`check`)."""
        return self.check([sha256], deep=deep)[0]

    def check(
        self,
        sha256s: Sequence[str],
        *,
        deep: bool = False,
        progress: hashing.Progress | None = None,
    ) -> list[Problem | None]:
        """Re-check objects, hashing them in parallel; one result per input, ``None`` if intact.

        Routine checks compare the size and blake3 with the index. ``deep`` (or an object
        whose index record is missing) also recomputes sha256, which must equal its name.
        """
        results: list[Problem | None] = [None] * len(sha256s)
        batches: dict[tuple[hashing.Algo, ...], list[tuple[int, Path, Digest | None, float]]] = {}
        for i, sha256 in enumerate(sha256s):
            path = self.object_path(sha256)
            try:
                st = path.lstat()
            except FileNotFoundError:
                results[i] = Problem(sha256, path, "missing", "an object", "nothing")
                continue
            if not stat.S_ISREG(st.st_mode):
                results[i] = Problem(
                    sha256, path, "not-regular", "a regular file", _kind(st.st_mode)
                )
                continue
            record = self._read_index(sha256)
            known = record[0] if record else None
            if known is not None and st.st_size != known.size:
                results[i] = Problem(
                    sha256, path, "size", f"{known.size} bytes", f"{st.st_size} bytes"
                )
                continue
            algos = hashing.BOTH if deep or known is None or not known.blake3 else ("blake3",)
            batches.setdefault(algos, []).append((i, path, known, st.st_mtime))
        for algos, batch in batches.items():
            hashed = hashing.hash_files(
                [path for _, path, _, _ in batch], algos, regular_only=True, progress=progress
            )
            for (i, path, known, mtime), got in zip(batch, hashed, strict=True):
                results[i] = self._judge(sha256s[i], path, known, got, mtime)
        return results

    def _judge(
        self, sha256: str, path: Path, known: Digest | None, got: Hashes | OSError, mtime: float
    ) -> Problem | None:
        if isinstance(got, OSError):
            return Problem(sha256, path, "unreadable", "readable bytes", got.strerror or str(got))
        if known is not None and known.blake3 and got.blake3 != known.blake3:
            return Problem(sha256, path, "blake3", known.blake3, got.blake3 or "?")
        if got.sha256 is not None and got.sha256 != sha256:
            return Problem(sha256, path, "sha256", sha256, got.sha256)
        if known is None:
            # Rebuild a lost index record (a crash between the object's rename and its record).
            self._write_index(Digest(sha256, got.size, got.blake3), mtime)
        return None

    def verify(
        self,
        sha256s: Iterable[str] | None = None,
        *,
        deep: bool = False,
        progress: hashing.Progress | None = None,
    ) -> list[Problem]:
        """Verify objects (all of them by default) and return every problem found."""
        wanted = (
            list(sha256s)
            if sha256s is not None
            else [info.digest.sha256 for info in self._iter_index()]
        )
        return [p for p in self.check(wanted, deep=deep, progress=progress) if p is not None]

    def quarantine(self, sha256: str) -> Path | None:
        """Move a bad object aside so the next fetch replaces it; returns its new path."""
        path = self.object_path(sha256)
        if not os.path.lexists(path):
            return None
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dest = self.quarantine_dir / f"{sha256}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
        os.rename(path, dest)
        fsync_dir(path.parent)
        self._index_path(sha256).unlink(missing_ok=True)
        return dest

    # -- placing into a project ----------------------------------------------------------

    def place(
        self,
        sha256: str,
        dest: str | os.PathLike[str],
        *,
        link: LinkMode = "auto",
        force: bool = False,
        verify: bool = True,
    ) -> LinkMode:
        """Put an object at ``dest`` without letting anyone modify the object through it.

        ``auto`` tries a reflink (an independent copy-on-write copy), then a hardlink (the
        object is read-only; not used when running as root, whom permissions do not stop),
        then a copy. ``symlink`` must be asked for.

        Returns:
            The link mode used.

        Raises:
            ObjectNotFoundError, IntegrityError: as for :meth:`path`.
            FileExistsError: ``dest`` exists with other content and ``force`` is not set.
        """
        src = self.path(sha256, verify=verify)
        target = Path(dest)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "destination is a directory", str(target))
        if os.path.lexists(target) and not force:
            if _same_content(src, target, sha256):
                return "copy" if not target.samefile(src) else "hardlink"
            raise FileExistsError(
                errno.EEXIST, "exists with other content (use --force to replace)", str(target)
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        modes: tuple[LinkMode, ...]
        if link == "auto":
            modes = ("reflink", "copy") if os.geteuid() == 0 else ("reflink", "hardlink", "copy")
        else:
            modes = (link,)
        last: OSError | None = None
        for mode in modes:
            tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.cas-tmp"
            try:
                _make_link(src, tmp, mode)
                os.replace(tmp, target)
            except OSError as e:
                last = e
                with contextlib.suppress(OSError):
                    tmp.unlink()
            else:
                return mode
        assert last is not None
        raise last

    # -- roots and gc --------------------------------------------------------------------

    def register_root(self, path: str | os.PathLike[str], kind: str) -> None:
        """Remember a lockfile or bundle whose objects gc must keep."""
        absolute = Path(path).resolve()
        key = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:32]
        record = {"path": os.fsdecode(absolute), "kind": kind, "registered": time.time()}
        self.roots_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.roots_dir / f"{key}.json", json.dumps(record).encode(), self.tmp_dir)

    def roots(self) -> list[Root]:
        """The registered roots, including ones whose file is gone (gc drops those)."""
        found = []
        for p in sorted(self.roots_dir.glob("*.json")):
            try:
                raw = json.loads(p.read_text())
                found.append(Root(Path(raw["path"]), str(raw["kind"]), float(raw["registered"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def referenced(self) -> tuple[set[str], list[Root]]:
        """The sha256s that live roots reference, and the roots whose file is gone.

        Raises:
            StoreError: a root cannot be read. gc must not guess, so it stops.
        """
        keep: set[str] = set()
        stale: list[Root] = []
        for root in self.roots():
            if not root.path.exists():
                stale.append(root)
                continue
            reader = _ROOT_READERS.get(root.kind)
            if reader is None:
                raise StoreError(
                    f"gc root {root.path} is a {root.kind!r}, which this modelcas cannot read; "
                    f"nothing was deleted",
                    hint="upgrade modelcas, or remove the file if it is no longer used",
                )
            try:
                keep |= reader(root.path)
            except (ModelcasError, OSError, ValueError) as e:
                raise StoreError(
                    f"cannot read gc root {root.path}: {e}; nothing was deleted",
                    hint="fix that file or delete it, then run gc again",
                ) from e
        return keep, stale

    def _drop_root(self, root: Root) -> None:
        key = hashlib.sha256(os.fsencode(root.path)).hexdigest()[:32]
        (self.roots_dir / f"{key}.json").unlink(missing_ok=True)

    def gc(
        self,
        keep: Set[str],
        *,
        grace: float = DEFAULT_GRACE,
        dry_run: bool = False,
        stale_roots: Iterable[Root] = (),
    ) -> GcReport:
        """Delete objects not in ``keep`` and old leftovers of interrupted writes.

        Objects and temporary files modified within ``grace`` seconds are kept: they may
        belong to a write in flight or to an add whose lockfile is about to be written.

        Args:
            keep: sha256s referenced by live roots.
            grace: age in seconds below which nothing is deleted.
            dry_run: report only.
            stale_roots: roots whose file is gone; their records are dropped.

        Returns:
            What was (or would be) removed.
        """
        report = GcReport()
        cutoff = time.time() - grace
        for root in stale_roots:
            report.stale_roots.append(root.path)
            if not dry_run:
                self._drop_root(root)
        for info in self._iter_index():
            sha256 = info.digest.sha256
            if sha256 in keep:
                continue
            try:
                mtime = info.path.lstat().st_mtime
            except FileNotFoundError:
                continue
            if mtime > cutoff or info.added > cutoff:
                report.kept_young += 1
                continue
            report.objects.append(info)
            if not dry_run:
                self._delete_object(sha256, cutoff)
        for p in sorted(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []:
            try:
                if p.lstat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            report.temp_files.append(p)
            if not dry_run:
                p.unlink(missing_ok=True)
        if not dry_run:
            for lock in self.locks_dir.glob("*.lock") if self.locks_dir.is_dir() else []:
                with contextlib.suppress(OSError):
                    if lock.stat().st_mtime < cutoff:
                        lock.unlink()
        return report

    def _delete_object(self, sha256: str, cutoff: float) -> None:
        path = self.object_path(sha256)
        # Rename first: an add that touches the object after our check wins, and we put it back.
        doomed = self.tmp_dir / f"gc-{sha256}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        if doomed.lstat().st_mtime > cutoff:
            os.rename(doomed, path)
            return
        self._index_path(sha256).unlink(missing_ok=True)
        doomed.unlink()
        fsync_dir(path.parent)

    # -- housekeeping --------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Location, format, and how much is in the store."""
        objects = self.objects()

        def count_files(d: Path) -> int:
            return sum(1 for p in d.iterdir() if p.is_file()) if d.is_dir() else 0

        return StoreStats(
            root=self.root,
            format=FORMAT,
            objects=len(objects),
            bytes=sum(o.digest.size for o in objects),
            temp_files=count_files(self.tmp_dir),
            quarantined=count_files(self.quarantine_dir),
            roots=len(self.roots()),
        )

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        # MODELCAS_LOCKS=off skips the advisory locks, for filesystems where flock misbehaves;
        # only duplicated work is lost, never correctness.
        if os.environ.get("MODELCAS_LOCKS", "").lower() in ("off", "0", "no"):
            yield
            return
        from filelock import FileLock  # noqa: PLC0415 (import only when a write needs it)

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.locks_dir / f"{name}.lock"):
            yield


def _check_hex(sha256: str) -> None:
    if not is_hex64(sha256):
        raise UsageError(f"not a sha256 digest: {sha256!r} (expected 64 lowercase hex digits)")


def _check_expected(digest: Digest, expected: Digest | None, what: str) -> None:
    if expected is None:
        return
    if digest.size != expected.size or digest.sha256 != expected.sha256:
        raise IntegrityError(
            f"{what}: expected sha256:{expected.sha256} ({expected.size} bytes), "
            f"got sha256:{digest.sha256} ({digest.size} bytes); nothing was stored",
            hint="the source has other bytes than the pin says: fetch it again or re-pin",
        )
    if expected.blake3 and digest.blake3 and expected.blake3 != digest.blake3:
        raise IntegrityError(
            f"{what}: sha256 matches but blake3 differs: expected {expected.blake3}, "
            f"got {digest.blake3}",
            hint="the pin's two digests disagree; re-pin from a trusted copy",
        )


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _same_content(src: Path, target: Path, sha256: str) -> bool:
    try:
        if target.samefile(src):
            return True
        if target.stat().st_size != src.stat().st_size:
            return False
        return hashing.hash_file(target, ("sha256",)).sha256 == sha256
    except OSError:
        return False


def _make_link(src: Path, tmp: Path, mode: LinkMode) -> None:
    if mode == "hardlink":
        os.link(src, tmp)
    elif mode == "symlink":
        os.symlink(src.resolve(), tmp)
    elif mode == "reflink":
        with open(src, "rb") as s, open(tmp, "xb") as d:
            fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
        os.chmod(tmp, 0o644)
    elif mode == "copy":
        with open(src, "rb") as s, open(tmp, "xb") as d:
            shutil.copyfileobj(s, d, 8 << 20)
        os.chmod(tmp, 0o644)
    else:
        raise UsageError(f"unknown link mode {mode!r}: expected one of {', '.join(LINK_MODES)}")
