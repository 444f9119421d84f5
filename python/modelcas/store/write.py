"""Adding objects: copying or linking files in, streamed writes, and the checks around them.

An object is written to ``tmp/``, hashed while written, size-checked, fsynced, made read-only
and renamed into place, then its directory is fsynced: no reader sees a partial object, and
racing writers of the same content all succeed with the same result. See ``docs/store.md``
for how adds and gc agree without locks (:meth:`Writing.ensure` is the add's half).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from modelcas import hashing
from modelcas.digest import Digest, mismatch
from modelcas.errors import IntegrityError, StoreError, UsageError
from modelcas.store import intent
from modelcas.store.durable import fsync_dir, named
from modelcas.store.read import Reading
from modelcas.store.records import AddResult, ObjectInfo


class SourceChangedError(IntegrityError):
    """The file being added changed while it was read; nothing was stored."""


Sink = Callable[[bytes | memoryview], object]


class ObjectWriter:
    """Write one object from streamed bytes (a download), hashing while writing.

    Use through :meth:`Writing.writer`. Bytes are batched and handed to two worker threads, one
    hashing and one writing (both release the GIL), so the producer (a socket) keeps
    receiving meanwhile. The writer flushes to disk every ``_SYNC_EVERY`` bytes, so the disk
    works during the download and the fsync in :meth:`commit` finds little left to do.
    Nothing is visible in the store until :meth:`commit`; leaving the ``with`` block without
    committing removes the temporary file, unless :meth:`set_aside` kept it for a resume.

    A download that resumes hands over what an earlier run left (``partial``, a file of this
    process's own in ``tmp/``): its bytes are hashed first and the new ones appended.
    ``extra`` sees every byte too (a second digest a remote records, such as a git blob id).
    """

    _BATCH = 8 << 20
    _SYNC_EVERY = 32 << 20

    def __init__(
        self,
        store: Writing,
        expected: Digest | None,
        what: str,
        *,
        partial: Path | None = None,
        extra: Sink | None = None,
    ) -> None:
        self._store = store
        self._expected = expected
        self._what = what
        self._extra = extra
        self._hasher = hashing.Hasher()
        self._tmp = partial or store.temp_path()
        with named(self._tmp):
            self._file = open(self._tmp, "ab" if partial else "xb")  # noqa: SIM115 (closed in commit/__exit__)
        self.offset = os.fstat(self._file.fileno()).st_size  # handed over by an earlier run
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._unsynced = 0
        self._error: BaseException | None = None
        self._queues: list[queue.Queue[bytes | None]] = []
        self._workers: list[threading.Thread] = []
        self._done = False
        if self.offset:
            self._hash_prefix()
        self._start_workers()

    def _hash_prefix(self) -> None:
        with named(self._tmp), open(self._tmp, "rb") as f:
            while data := f.read(8 << 20):
                view = memoryview(data)
                self._hasher.update(view)
                if self._extra is not None:
                    self._extra(view)

    def _start_workers(self) -> None:
        self._queues, self._workers = [], []
        for name, consume in (("hash", self._hasher.update), ("write", self._write_out)):
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
            worker = threading.Thread(
                target=self._drain, args=(q, consume), name=f"modelcas-{name}", daemon=True
            )
            worker.start()
            self._queues.append(q)
            self._workers.append(worker)

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
        with named(self._tmp):
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
        chunk = bytes(data)
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._extra is not None:
            self._extra(chunk)
        if self._pending_size >= self._BATCH:
            self._flush()

    def _stop(self) -> None:
        for q, worker in zip(self._queues, self._workers, strict=True):
            if worker.is_alive():
                q.put(None)
        for worker in self._workers:
            worker.join()

    @property
    def failed(self) -> bool:
        """Whether writing or hashing failed (what arrived is then worth nothing)."""
        return self._error is not None

    def restart(self, extra: Sink | None = None) -> None:
        """Forget every byte so far (the source sends the object from its start again).

        ``extra``, when given, replaces the second digest's sink (a fresh one).
        """
        self._pending, self._pending_size = [], 0
        self._stop()
        self._error = None
        with named(self._tmp):
            self._file.seek(0)
            self._file.truncate(0)
        self._hasher = hashing.Hasher()
        self.offset = 0
        if extra is not None:
            self._extra = extra
        self._start_workers()

    def commit(self) -> ObjectInfo:
        """Check the bytes against the expected digest and publish the object.

        Returns:
            The stored object.

        Raises:
            IntegrityError: the bytes are not what ``expected`` says; nothing is stored.
            OSError: writing failed (naming the file).
        """
        self._flush()
        self._stop()
        if self._error is not None:
            raise self._error
        with named(self._tmp):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        hashes = self._hasher.hashes()
        try:
            info = self._store.publish(self._tmp, hashes.digest(), self._expected, self._what)
        finally:
            self._tmp.unlink(missing_ok=True)
        self._done = True
        return info

    def set_aside(self, keep: Path) -> bool:
        """Instead of committing, keep what arrived at ``keep`` for a later run to resume.

        Returns:
            Whether anything was kept (nothing is, after a failure to write or hash).
        """
        with contextlib.suppress(BaseException):
            self._flush()
        self._stop()
        if not self._file.closed:
            self._file.close()
        if self._done or self._error is not None or _size(self._tmp) == 0:
            return False
        try:
            os.replace(self._tmp, keep)
        except OSError:
            return False
        self._done = True  # nothing left to remove
        return True

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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Writing(Reading):
    """Everything that puts bytes into the store."""

    def add_file(
        self,
        source: str | os.PathLike[str],
        *,
        move: bool = False,
        expected: Digest | None = None,
        progress: hashing.Progress | None = None,
    ) -> AddResult:
        """Copy (or move) a file into the store, hashing it in the same pass.

        Content that is already present costs a hash, not a copy. With ``move`` the file is
        renamed into the store where it can be (see :meth:`ingest`), and is gone from
        ``source`` once stored and checked.

        Args:
            source: the file.
            move: take the file (it disappears from ``source`` once stored).
            expected: when given, the bytes must have this digest or nothing is stored.
            progress: called with byte counts as the work advances.

        Returns:
            The object and whether it existed before.

        Raises:
            FileNotFoundError, IsADirectoryError, PermissionError: about ``source``.
            IntegrityError: the bytes do not match ``expected``, or the source changed while
                it was read.
            StoreError: the store could not be written (disk full, I/O error); nothing is left
                behind but the temporary area.
        """
        result = self.ingest(source, take=move, expected=expected, progress=progress)
        try:
            result = self.ensure(result, take=move)
        except BaseException:
            self.detach(result)
            raise
        if move:
            self.release(result)
        return result

    def ingest(
        self,
        source: str | os.PathLike[str],
        *,
        take: bool = False,
        expected: Digest | None = None,
        progress: hashing.Progress | None = None,
        lock: str | os.PathLike[str] | None = None,
    ) -> AddResult:
        """Store a file's bytes; with ``take`` (the first half of a move) take the file itself.

        A file with no other name (``st_nlink == 1``) on the store's filesystem is renamed
        into ``tmp/`` under a move journal (``lock`` names the lockfile the move will pin
        into), hashed there and renamed into place: the user's path and an object never name
        one inode. Any other file is copied. The caller then ends the move with
        :meth:`release`, or gives the file back with :meth:`detach`.

        Raises:
            as :meth:`add_file`.
        """
        src = Path(source)
        st = _source_stat(src, take)
        with self.lock(f"src-{st.st_dev}-{st.st_ino}"):
            if take and st.st_nlink == 1:
                taken = self._take(src, st, expected, progress, lock)
                if taken is not None:
                    return taken
            elif self._has_size(st.st_size):
                # Maybe present: a hash decides, and a hit costs no copy. The stored bytes are
                # hashed too only when this add will destroy the source.
                hashes = hashing.hash_file(
                    src, progress=progress, regular_only=True, follow=not take
                )
                _unchanged(src, st, hashes.size, follow=not take)
                found, healed = self._present(hashes.digest(), expected, str(src), check=take)
                if found is not None:
                    return AddResult(src, found, True)
                if healed is not None:
                    result = self._add_by_copy(src, st, expected, progress, follow=not take)
                    return AddResult(src, result.info, False, healed=healed)
            return self._add_by_copy(src, st, expected, progress, follow=not take, check=take)

    def _take(
        self,
        src: Path,
        st: os.stat_result,
        expected: Digest | None,
        progress: hashing.Progress | None,
        lock: str | os.PathLike[str] | None,
    ) -> AddResult | None:
        """Take the file itself into the store; None where it must be copied instead."""
        del src, st, expected, progress, lock
        return None  # the journaled rename lives in modelcas.store.moving

    def _add_by_copy(
        self,
        src: Path,
        st: os.stat_result,
        expected: Digest | None,
        progress: hashing.Progress | None,
        *,
        follow: bool,
        check: bool = False,
    ) -> AddResult:
        tmp = self.temp_path()
        try:
            try:
                hashes = hashing.copy_file(src, tmp, progress=progress)
            except OSError as e:
                if e.filename == str(src):
                    raise  # about the source: the caller's problem, already named
                raise self._write_error(src, e) from e
            _unchanged(src, st, hashes.size, follow=follow)
            digest = hashes.digest()
            found, healed = self._present(digest, expected, str(src), check=check)
            if found is not None:
                return AddResult(src, found, True)
            info = self.publish(tmp, digest, expected, str(src))
        finally:
            tmp.unlink(missing_ok=True)
        return AddResult(src, info, False, healed=healed)

    def ensure(self, result: AddResult, *, take: bool = False) -> AddResult:
        """Check that an added object is still in place; store it again if gc took it.

        This is the add's half of the gc protocol (``docs/store.md``): called after the pin
        that references the object is durable, it either finds the object (and then any gc
        that moved it aside will see the pin and put it back) or adds the source again.

        Returns:
            ``result``, or the result of adding the source again.

        Raises:
            as :meth:`ingest`; StoreError when a moved file's object is gone (its journal
            keeps the file recoverable).
        """
        if self._in_place(result.info.digest):
            return result
        if result.journal is not None:
            return self._ensure_taken(result)
        return self.ingest(result.source, take=take, expected=result.info.digest)

    def _ensure_taken(self, result: AddResult) -> AddResult:
        raise StoreError(f"sha256:{result.info.digest.sha256} left the store during a move")

    def ensure_present(self, digest: Digest, refill: Callable[[], object]) -> None:
        """As :meth:`ensure`, for bytes that came from elsewhere: ``refill`` fetches them."""
        if not self._in_place(digest):
            refill()

    def _in_place(self, digest: Digest) -> bool:
        path = self.object_path(digest.sha256)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT and self.rescue(digest.sha256):
                return self._in_place(digest)
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return False
            raise
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size == digest.size

    def release(self, result: AddResult) -> None:
        """The end of a move: the source goes, now that its bytes are stored and pinned.

        A copied source is unlinked; a source taken under a journal is already off the user's
        path, so only its waiting copy (when the content was stored before) and the journal go.
        """
        if result.journal is None:
            with named(result.source):
                result.source.unlink(missing_ok=True)
            fsync_dir(result.source.parent)
            return
        self._end_journal(result)

    def _end_journal(self, result: AddResult) -> None:
        raise NotImplementedError  # modelcas.store.moving

    def detach(self, result: AddResult) -> None:
        """Undo a move that did not complete: give the file back at its path, with its mode.

        A copied source never left its path. A file taken under a journal goes back: renamed
        back if it is still waiting in ``tmp/``, else copied out of its object as a new inode
        (the object stays, so no concurrent add that found it loses it).
        """
        if result.journal is not None:
            self._undo_journal(result)

    def _undo_journal(self, result: AddResult) -> None:
        raise NotImplementedError  # modelcas.store.moving

    def claim(self, sha256s: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """Tell gc that these objects are about to be pinned, for the ``with`` block.

        gc keeps a claimed object while its claimant may run (``intent.claim``).
        """
        return intent.claim(self.checked_dir(self.tmp_dir, create=True), sha256s)

    def writer(
        self,
        expected: Digest | None = None,
        what: str = "stream",
        *,
        partial: Path | None = None,
        extra: Sink | None = None,
    ) -> ObjectWriter:
        """An :class:`ObjectWriter` for streamed bytes; ``what`` names the source in errors.

        ``partial``: a file of this process in ``tmp/`` holding the first bytes (a resume);
        ``extra``: sees every byte too.
        """
        return ObjectWriter(self, expected, what, partial=partial, extra=extra)

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
            return self.publish(tmp, digest, None, what)
        finally:
            tmp.unlink(missing_ok=True)

    def _present(
        self, digest: Digest, expected: Digest | None, what: str, *, check: bool = False
    ) -> tuple[ObjectInfo | None, Path | None]:
        """The existing object with this digest, freshened; or None when absent or bad.

        Freshening (a new mtime) tells a concurrent gc that the object is in use. If it
        cannot be done, or the object moved meanwhile, the object counts as absent and the
        caller writes it again: a failed freshen is never ignored.

        A stored object is trusted by its size only while nothing depends on it: with
        ``check`` (a source is about to be destroyed), or when the object has no index record
        (it may have been planted), its bytes are hashed (blake3, which the source's digest
        has). One that does not match is quarantined and reported, and the caller stores the
        good bytes in its place.

        Returns:
            The object (or None), and where a bad stored object was quarantined (or None).
        """
        _check_expected(digest, expected, what)
        path = self.object_path(digest.sha256)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None, self._heal(digest, what, "is a symlink")
            return None, None  # absent: the new, verified bytes go in
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != digest.size:
                os.close(fd)
                fd = -1
                found = f"{st.st_size} bytes" if stat.S_ISREG(st.st_mode) else "not a file"
                return None, self._heal(digest, what, f"has {found}, not {digest.size} bytes")
            os.utime(fd)
            now = path.lstat()
        except OSError:
            return None, None
        finally:
            if fd >= 0:
                os.close(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None, None
        record = self.read_index(digest.sha256)
        known, added = record if record is not None else (None, st.st_mtime)
        if known is not None and known.blake3 not in (None, digest.blake3):
            return None, self._heal(digest, what, f"is recorded with blake3 {known.blake3}")
        if check or known is None or known.blake3 is None:
            got = hashing.hash_files([path], ("blake3",), regular_only=True)[0]
            if isinstance(got, OSError):
                return None, None
            if got.size != digest.size or got.blake3 != digest.blake3:
                return None, self._heal(digest, what, f"has blake3 {got.blake3}")
        if known is None or known.blake3 is None:
            self.write_index(digest, added)
        return ObjectInfo(digest, path, added), None

    def _heal(self, digest: Digest, what: str, why: str) -> Path | None:
        """Quarantine a stored object that is not what its name says, and say so."""
        try:
            moved = self.quarantine(digest.sha256)
        except OSError:
            return None
        if moved is not None:
            warnings.warn(
                f"the stored sha256:{digest.sha256} {why}, not the bytes of {what}: moved it "
                f"to {moved} and stored the good bytes in its place",
                stacklevel=4,
            )
        return moved

    def publish(self, tmp: Path, digest: Digest, expected: Digest | None, what: str) -> ObjectInfo:
        """Move a complete, fsynced temp file into place as the object for ``digest``.

        Raises:
            IntegrityError: the bytes are not what ``expected`` says, or the file's size is
                not the size hashed.
        """
        _check_expected(digest, expected, what)
        with named(tmp):
            actual_size = os.stat(tmp, follow_symlinks=False).st_size
        if actual_size != digest.size:
            raise SourceChangedError(
                f"{what}: wrote {actual_size} bytes but hashed {digest.size}; the source "
                f"changed while it was read; nothing was stored",
                hint="add it again once nothing is writing to it",
            )
        final = self.object_path(digest.sha256)
        self.shard(digest.sha256, create=True)
        # The record first: an object is never in place without its time added, so gc never
        # takes a new object (whose mtime may be a linked source's, days old) for an old one.
        now = time.time()
        self.write_index(digest, now)
        with named(final):
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
        fsync_dir(final.parent)
        marker = self._size_marker(digest.size)
        self.checked_dir(marker.parent, create=True)
        with named(marker):
            marker.touch()
        return ObjectInfo(digest, final, now)

    def _write_error(self, src: Path, e: OSError) -> StoreError:
        reason = e.strerror or str(e)
        hint = "free some space, or point --store / MODELCAS_HOME elsewhere"
        if e.errno == errno.EIO:
            hint = "the disk reported an I/O error; check it, then add the file again"
        where = f" ({e.filename})" if e.filename else ""
        return StoreError(
            f"cannot add {src} to the store at {self.root}: {reason}{where}; nothing was stored",
            hint=hint,
        )

    def _size_marker(self, size: int) -> Path:
        return self.root / "index" / "sizes" / str(size)

    def _has_size(self, size: int) -> bool:
        # A marker per object size seen: re-adding known content is found with one stat, and
        # new content goes straight to the one-pass copy. A stale marker only costs a hash.
        return self._size_marker(size).exists()


def _source_stat(src: Path, take: bool) -> os.stat_result:
    """The source's stat; a move takes only a regular file itself, never through a symlink."""
    st = src.lstat() if take else src.stat()
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory (add its files)", str(src))
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a symlink (--move takes the file itself)"
            if stat.S_ISLNK(st.st_mode)
            else ("not a regular file")
        )
        raise UsageError(f"{src} is {what}; only regular files can be added")
    return st


def _unchanged(src: Path, before: os.stat_result, hashed: int, *, follow: bool) -> None:
    """Refuse a source whose size, mtime or inode changed while it was read."""
    try:
        after = os.stat(src, follow_symlinks=follow)
    except OSError as e:
        raise SourceChangedError(
            f"{src}: the source changed while it was read ({e.strerror}); nothing was stored",
            hint="add it again once nothing is writing to it",
        ) from e
    same = (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_dev,
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    if not same or hashed != before.st_size:
        raise SourceChangedError(
            f"{src}: the source changed while it was read (size {before.st_size} -> "
            f"{after.st_size} bytes, {hashed} read); nothing was stored",
            hint="add it again once nothing is writing to it",
        )


def _check_expected(digest: Digest, expected: Digest | None, what: str) -> None:
    if expected is None or (m := mismatch(expected, digest)) is None:
        return
    if m.field == "blake3":
        raise IntegrityError(
            f"{what}: sha256 matches but {m}",
            hint="the pin's two digests disagree; re-pin from a trusted copy",
        )
    raise IntegrityError(
        f"{what}: expected sha256:{expected.sha256} ({expected.size} bytes), "
        f"got sha256:{digest.sha256} ({digest.size} bytes); nothing was stored",
        hint="the source has other bytes than the pin says: fetch it again or re-pin",
    )
