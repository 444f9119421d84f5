"""Roots and garbage collection: what must be kept, and deleting the rest safely.

gc and the writers agree without locks (the protocol and why it holds: ``docs/store.md``):

- gc reads the roots, moves every candidate aside into its own folder under ``tmp/``, reads
  the roots again, puts back whatever is now referenced (or was freshened meanwhile), and only
  then deletes. A killed gc leaves its folder behind; the next gc puts everything in it back
  before doing anything else.
- a writer registers the root, writes the pin, and only then checks that the object is still
  in place (:meth:`~modelcas.store.write.Writing.ensure`), storing it again if not.

Root readers are passed in by the caller (``modelcas.ops.gc``), so this module knows nothing
of lockfiles or bundles.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from modelcas.digest import is_hex64
from modelcas.errors import ModelcasError, StoreError
from modelcas.store import intent
from modelcas.store.durable import (
    atomic_write,
    fsync_dir,
    leftover_patterns,
    named,
    owned_name,
    writer_alive,
)
from modelcas.store.memory import MEMORY, Pinned, Remembering
from modelcas.store.read import STAGING
from modelcas.store.records import GcReport, ObjectInfo, Root, VanishedRoot
from modelcas.store.views import collect as collect_views
from modelcas.untrusted import kind_of

# gc keeps temporary files and unreferenced objects younger than this: they may belong to a
# write in flight, or to a plain `cas add` whose user has not pinned it yet.
DEFAULT_GRACE = 3600.0
# A root's pinned sha256s: a set (none has a remote source), or each with whether it has one.
RootReader = Callable[[Path], Pinned]
OUTPUT = "output"  # a file being written (a bundle): gc cleans its leftovers, keeps nothing
_RECORD_CAP = 64 << 10


class Collecting(Remembering):
    """Roots, and the gc that keeps what they reference."""

    # -- roots -----------------------------------------------------------------------------

    def register_root(self, path: str | os.PathLike[str], kind: str) -> Root:
        """Remember a lockfile or bundle whose objects gc must keep.

        Register before the first pin is written into the file (``docs/store.md``); the
        file need not exist yet.
        """
        absolute = Path(path).resolve()
        now = time.time()
        record = {"path": os.fsdecode(absolute), "kind": kind, "registered": now}
        target = self._record_path(absolute)
        self.checked_dir(self.roots_dir, create=True)
        atomic_write(target, json.dumps(record).encode(), self.tmp_dir, self._file_mode)
        return Root(absolute, kind, now, target)

    def register_output(self, path: str | os.PathLike[str]) -> Root:
        """Remember a file about to be written, so that gc cleans what a crash leaves beside it.

        That is ``.NAME.XXXX.partial`` (see :func:`~modelcas.store.durable.leftover_patterns`).
        """
        return self.register_root(path, OUTPUT)

    def roots(self) -> list[Root]:
        """The registered roots, including ones whose file is gone (gc drops those).

        Raises:
            StoreError: a record is not a regular file, too large, or malformed; gc must not
                guess, so it stops.
        """
        found: list[Root] = []
        if not self.roots_dir.is_dir():
            return found
        self.checked_dir(self.roots_dir)
        for p in sorted(self.roots_dir.iterdir()):
            if p.name.endswith(MEMORY) and not p.is_symlink():
                continue  # what a root pinned (modelcas.store.memory), not a root
            found.append(self._read_record(p))
        return found

    def _read_record(self, p: Path) -> Root:
        def refuse(why: str) -> StoreError:
            return StoreError(
                f"gc root record {p} {why}; nothing was deleted",
                hint="remove that file if it is not a modelcas root record, then run gc again",
            )

        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise refuse("is a symlink (refused, not followed)") from None
            raise refuse(f"cannot be read ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise refuse(f"is {kind_of(st.st_mode)}, not a regular file")
            if st.st_size > _RECORD_CAP:
                raise refuse(f"is {st.st_size} bytes, more than a record can be")
            with named(p):
                data = os.read(fd, _RECORD_CAP + 1)
        finally:
            os.close(fd)
        try:
            raw = json.loads(data)
            path, kind, registered = raw["path"], raw["kind"], raw["registered"]
            if not (isinstance(path, str) and os.path.isabs(path) and isinstance(kind, str)):
                raise TypeError
            return Root(Path(path), kind, float(registered), p)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise refuse("is not a root record (JSON with path, kind, registered)") from None

    def referenced(
        self,
        readers: Mapping[str, RootReader],
        roots: list[Root] | None = None,
        *,
        remember: bool = False,
    ) -> tuple[set[str], list[Root]]:
        """The sha256s that live roots reference, and the roots whose file is gone.

        With ``remember``, each live root's pins without a remote source are recorded
        (:meth:`remember`), so that they outlive the root's path.

        Raises:
            StoreError: a root cannot be read. gc must not guess, so it stops.
        """
        keep: set[str] = set()
        stale: list[Root] = []
        for root in self.roots() if roots is None else roots:
            try:
                st = root.path.stat()
            except FileNotFoundError:
                stale.append(root)
                continue
            except OSError as e:
                raise _unreadable(root, e.strerror or str(e)) from None
            if root.kind == OUTPUT:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _unreadable(root, f"it is {kind_of(st.st_mode)}, not a regular file")
            reader = readers.get(root.kind)
            if reader is None:
                raise StoreError(
                    f"gc root {root.path} is a {root.kind!r}, which this modelcas cannot read; "
                    f"nothing was deleted",
                    hint="upgrade modelcas, or remove the file if it is no longer used",
                )
            try:
                if remember:
                    pinned = self._read_and_remember(root.record, root.path, reader)
                else:
                    pinned = reader(root.path)
                keep |= set(pinned)
            except FileNotFoundError:
                stale.append(root)  # removed since the stat above
            except OSError as e:
                raise _unreadable(root, e.strerror or type(e).__name__) from e
            except (ModelcasError, ValueError, RecursionError) as e:
                # Never the reader's message: it may quote the file, and a root record can name
                # any file the gc runner may read (/etc/shadow, ~/.aws/credentials).
                raise _unreadable(root, f"it is not a valid {root.kind}") from e
        return keep, stale

    # -- gc --------------------------------------------------------------------------------

    def gc(
        self,
        readers: Mapping[str, RootReader],
        *,
        grace: float = DEFAULT_GRACE,
        dry_run: bool = False,
        also: Callable[[], set[str]] | None = None,
        forgetting: Collection[str] = (),
    ) -> GcReport:
        """Delete unreferenced objects and old leftovers of interrupted writes.

        Objects and temporary files younger than ``grace`` seconds are kept (a temporary
        file's age counts from its last change, ``max(mtime, ctime)``). Referenced objects
        are kept whatever their age, also against a pin written while gc runs.

        Args:
            readers: how to list the sha256s a root references, by root kind.
            grace: age in seconds below which nothing is deleted (>= 0).
            dry_run: report only.
            also: sha256s referenced from outside ``roots/`` (a directory remote's catalog),
                read again at the second pass as the roots are.
            forgetting: (dry run) paths of vanished roots taken as forgotten, so that the
                preview of ``cas gc --dry-run --forget`` shows what forgetting releases.

        Returns:
            What was (or would be) removed.

        Raises:
            StoreError: a root cannot be read; nothing was deleted.
        """
        if grace < 0:
            raise ValueError("grace must be >= 0")
        report = GcReport()
        if not dry_run:
            report.restored = self._recover_trash()
            self.recover_moves()
        cutoff = time.time() - grace
        roots = self.roots()
        live, stale = self.referenced(readers, roots, remember=not dry_run)
        live |= intent.in_flight(self.tmp_dir)
        if also is not None:
            live |= also()
        if dry_run and forgetting:
            # (spelled as the user named it, or resolved, as forget_root finds its record)
            stale = [r for r in stale if os.path.normpath(r.path.absolute()) not in forgetting]
        memories = self._memories(stale)
        keep = live.union(*memories.values())
        candidates: list[ObjectInfo] = []
        for info in self.iter_objects():
            if info.digest.sha256 in keep:
                report.kept_referenced += 1
                continue
            try:
                mtime = info.path.lstat().st_mtime
            except FileNotFoundError:
                continue
            if mtime > cutoff or info.added > cutoff:
                report.kept_young += 1
                continue
            candidates.append(info)
        if dry_run:
            report.objects = candidates
        else:
            report.objects = self._collect(candidates, readers, cutoff, report, also)
        report.temp_files = self._leftovers(roots, cutoff, dry_run)
        # Views are derived, never roots: those naming a removed object go (rebuilt on use).
        report.views = collect_views(self, cutoff, dry_run=dry_run)
        for root in stale:
            alone = self._alone(memories.get(root.record, set()), live)
            if alone:
                sizes = sum(self.info(s).digest.size for s in alone if self.has(s))
                report.vanished.append(VanishedRoot(root.path, len(alone), sizes))
                continue
            if root.registered <= cutoff and (dry_run or self._drop_root(root)):
                report.stale_roots.append(root.path)
        if not dry_run and self.locks_dir.is_dir():
            for lock in self.locks_dir.glob("*.lock"):
                with contextlib.suppress(OSError):
                    if lock.stat().st_mtime < cutoff:
                        lock.unlink()
        return report

    def _collect(
        self,
        candidates: list[ObjectInfo],
        readers: Mapping[str, RootReader],
        cutoff: float,
        report: GcReport,
        also: Callable[[], set[str]] | None = None,
    ) -> list[ObjectInfo]:
        """Move candidates aside, read the roots again, put back, then delete."""
        if not candidates:
            return []
        trash = self.checked_dir(self.tmp_dir, create=True) / f"{STAGING}{owned_name()}"
        with named(trash):
            trash.mkdir(mode=self._dir_mode)
        moved: list[ObjectInfo] = []
        try:
            for info in candidates:
                aside = trash / info.digest.sha256
                try:
                    os.rename(info.path, aside)
                except FileNotFoundError:
                    continue
                moved.append(info)
                with contextlib.suppress(FileNotFoundError):  # a reader put it back already
                    if aside.lstat().st_mtime > cutoff:  # freshened by an add meanwhile
                        self.put_back(aside, info.digest.sha256)
                        moved.pop()
                        report.kept_young += 1
            keep, stale = self.referenced(readers)
            keep |= intent.in_flight(self.tmp_dir)
            if also is not None:
                keep |= also()
            keep = keep.union(*self._memories(stale).values())
            doomed = []
            for info in moved:
                if info.digest.sha256 in keep:
                    with contextlib.suppress(FileNotFoundError):
                        self.put_back(trash / info.digest.sha256, info.digest.sha256)
                    report.kept_referenced += 1
                else:
                    doomed.append(info)
            moved = []  # from here on, each is either deleted or put back
            deleted = []
            for info in doomed:
                with contextlib.suppress(FileNotFoundError):
                    (trash / info.digest.sha256).unlink()
                    deleted.append(info)
                if not info.path.exists():
                    self.index_path(info.digest.sha256).unlink(missing_ok=True)
            for shard in {info.path.parent for info in doomed}:
                fsync_dir(shard)
            return deleted
        finally:
            for info in moved:  # an error or Ctrl-C before the decision: undo everything
                with contextlib.suppress(OSError):
                    self.put_back(trash / info.digest.sha256, info.digest.sha256)
            with contextlib.suppress(OSError):
                trash.rmdir()

    def _recover_trash(self) -> int:
        """Put back everything a killed gc had moved aside; returns how many objects."""
        restored = 0
        if not self.tmp_dir.is_dir():
            return 0
        for d in self.tmp_dir.iterdir():
            if not d.name.startswith(STAGING) or d.is_symlink() or not d.is_dir():
                continue
            if writer_alive(d.name):
                continue  # a gc running now; putting back is safe, but it is not ours
            for entry in d.iterdir():
                if is_hex64(entry.name) and entry.is_file() and not entry.is_symlink():
                    with contextlib.suppress(FileNotFoundError):
                        self.put_back(entry, entry.name)
                        restored += 1
            # Only if empty: a gc on another machine (not provably dead) may still be moving
            # objects into it, which it puts back if they are pinned meanwhile.
            with contextlib.suppress(OSError):
                d.rmdir()
        return restored

    def _leftovers(self, roots: list[Root], cutoff: float, dry_run: bool) -> list[Path]:
        """Old temporary files in ``tmp/``, and crash leftovers beside registered roots."""
        found = []
        entries = sorted(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []
        now = time.time()
        for p in entries:
            if p.name.startswith(STAGING) or intent.in_flight_name(p.name):
                continue  # a gc's staging folder or a move's journal: only recovery touches it
            if p.name.endswith(intent.CLAIM) and intent.claim_counts(p, now):
                continue
            if _age(p) > cutoff or writer_alive(p.name):
                continue
            found.append(p)
            if not dry_run:
                _remove(p)
        for parent in sorted({r.path.parent for r in roots}):
            names = {r.path.name for r in roots if r.path.parent == parent}
            patterns = [leftover_patterns(n) for n in names]
            try:
                listing = sorted(os.scandir(parent), key=lambda e: e.name)
            except OSError:
                continue
            for entry in listing:
                if not any(pat.fullmatch(entry.name) for pat in patterns):
                    continue
                p = Path(entry.path)
                if not entry.is_file(follow_symlinks=False) or _age(p) > cutoff:
                    continue
                if writer_alive(entry.name):
                    continue
                found.append(p)
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        return found

    def _memories(self, stale: list[Root]) -> dict[Path, set[str]]:
        """What each root whose file is gone pinned without a remote source."""
        found = {}
        for root in stale:
            if root.kind != OUTPUT and (memory := self.remembered(root)):
                found[root.record] = memory
        return found

    def _alone(self, memory: set[str], live: set[str]) -> list[str]:
        """The objects of a vanished root's memory that are present and nothing else keeps."""
        return sorted(s for s in memory if s not in live and self.object_path(s).exists())

    def _drop_root(self, root: Root) -> bool:
        """Forget a root whose file is gone; False when it came back meanwhile.

        The record is moved aside first and the file checked again, so a pin written into
        the file right now (whose writer registered it again) is never forgotten.
        """
        aside = self.temp_path()
        try:
            os.rename(root.record, aside)
        except FileNotFoundError:
            return False
        if root.path.exists():
            os.rename(aside, root.record)
            return False
        aside.unlink()
        self._drop_memory(root.record)
        return True


def _unreadable(root: Root, why: str) -> StoreError:
    """The error for a root gc cannot read: the path and what was expected, never its bytes."""
    check = {"lockfile": "cas lock check --lock", "bundle": "cas bundle verify"}.get(root.kind)
    see = f"`{check} {root.path}` says why; " if check else ""
    return StoreError(
        f"cannot read gc root {root.path} ({root.kind}): {why}; nothing was deleted",
        hint=f"{see}fix that file, or remove its record {root.record}, then run gc again",
    )


def _age(p: Path) -> float:
    """When a temporary file last changed: a rename or link sets ctime, not mtime."""
    try:
        st = p.lstat()
    except FileNotFoundError:
        return float("inf")
    return max(st.st_mtime, st.st_ctime)


def _remove(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
