"""``--move`` without ever sharing an inode between the user's path and an object.

A file with no other name, on the store's filesystem, is taken by ``rename``, under a journal:

1. Write the journal ``tmp/<owner>.move`` (the source path, its mode and owner, the lockfile
   the move pins into), durably.
2. ``rename`` the file to ``tmp/<owner>.moving``: the user's path is gone, the inode has one
   name, in the store's temporary area.
3. Hash it there, and record the digest in the journal (durably) before anything else.
4. If that content is stored already, hash the stored object too (it must match before the
   user's copy may go; one that does not is quarantined and replaced); else make the file
   read-only and ``rename`` it into ``objects/``: still one name.
5. The caller pins, reads the pin back, then :meth:`Moving.release` removes the waiting copy
   (if any) and the journal.

While the journal exists gc keeps its object (``intent.in_flight``). A journal whose owner is
provably dead is finished or rolled back by the next ``cas`` command (:meth:`recover_moves`):
the bytes end at the user's path as their own inode with the original mode, or stored and
pinned; never both names on one inode.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
import warnings
from pathlib import Path

from modelcas import hashing
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, StoreError
from modelcas.store import intent, owner
from modelcas.store.durable import (
    atomic_write,
    fsync_dir,
    fsync_file,
    named,
    owned_name,
    writer_dead,
)
from modelcas.store.intent import MoveJournal
from modelcas.store.records import AddResult, ObjectInfo
from modelcas.store.write import SourceChangedError, Writing, _check_expected

# rename() cannot take the file here: another filesystem, or one that refuses; copy instead.
_CANNOT_RENAME = (errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EBUSY)
_LOCK_TEXT_CAP = 64 << 20


class Moving(Writing):
    """Taking files into the store by rename, under a journal, and recovering interrupted moves."""

    def _take(
        self,
        src: Path,
        st: os.stat_result,
        expected: Digest | None,
        progress: hashing.Progress | None,
        lock: str | os.PathLike[str] | None,
    ) -> AddResult | None:
        stem = owned_name()
        tmp = self.checked_dir(self.tmp_dir, create=True)
        jpath, staged = tmp / f"{stem}{intent.JOURNAL}", tmp / f"{stem}{intent.MOVING}"
        journal = MoveJournal(
            source=os.fsdecode(src.absolute()),
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            lock=os.fsdecode(Path(lock).absolute()) if lock is not None else None,
            owner=owner.me(),
            staged=staged.name,
        )
        atomic_write(jpath, journal.encode(), tmp, self._file_mode)
        try:
            os.rename(src, staged)
        except OSError as e:
            jpath.unlink(missing_ok=True)
            if e.errno in _CANNOT_RENAME:
                return None
            raise
        unknown = ObjectInfo(Digest("0" * 64, st.st_size), staged, 0)
        result = AddResult(src, unknown, False, journal=jpath, staged=staged)
        try:
            fsync_dir(src.parent)
            return self._store_taken(result, st, journal, expected, progress)
        except BaseException:
            self._undo_journal(result)
            raise

    def _store_taken(
        self,
        result: AddResult,
        st: os.stat_result,
        journal: MoveJournal,
        expected: Digest | None,
        progress: hashing.Progress | None,
    ) -> AddResult:
        assert result.staged is not None and result.journal is not None
        staged, src = result.staged, result.source
        now = os.lstat(staged)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_nlink != 1:
            raise SourceChangedError(
                f"{src}: the file was replaced while it was being moved in; nothing was stored",
                hint="add it again once nothing is writing to it",
            )
        hashes = hashing.hash_file(staged, progress=progress, regular_only=True)
        _unchanged_taken(src, staged, st, hashes.size)
        digest = hashes.digest()
        _check_expected(digest, expected, str(src))
        journal.sha256, journal.size, journal.blake3 = digest.sha256, digest.size, digest.blake3
        atomic_write(result.journal, journal.encode(), result.journal.parent, self._file_mode)
        found, healed = self._present(digest, expected, str(src), check=True)
        if found is not None:
            return AddResult(src, found, True, journal=result.journal, staged=staged)
        fsync_file(staged)
        info = self.publish(staged, digest, expected, str(src))
        return AddResult(src, info, False, journal=result.journal, healed=healed)

    def _ensure_taken(self, result: AddResult) -> AddResult:
        """The object of a taken file is gone: store the waiting copy, if there is one."""
        staged = result.staged
        if staged is not None and os.path.lexists(staged):
            info = self.publish(staged, result.info.digest, None, str(result.source))
            return AddResult(result.source, info, False, journal=result.journal)
        raise StoreError(
            f"sha256:{result.info.digest.sha256} ({result.source}) left the store while it was "
            f"moved in; the move journal {result.journal} is kept",
            hint="run `cas verify`; the next cas command gives the file back if it can",
        )

    def _end_journal(self, result: AddResult) -> None:
        assert result.journal is not None
        if result.staged is not None:
            with named(result.staged):
                result.staged.unlink(missing_ok=True)
        with named(result.journal):
            result.journal.unlink(missing_ok=True)
        fsync_dir(result.journal.parent)

    def _undo_journal(self, result: AddResult) -> None:
        assert result.journal is not None
        data = intent.read_small(result.journal)
        journal = MoveJournal.decode(data) if data is not None else None
        if journal is not None:
            self._give_back(result.journal, journal)
        with contextlib.suppress(FileNotFoundError):
            result.journal.unlink()
        fsync_dir(result.journal.parent)

    # -- recovery ------------------------------------------------------------------------

    def recover_moves(self) -> list[str]:
        """Finish or roll back the moves of processes that died; returns what was done.

        A move whose file is stored and whose lockfile pins it is finished (its waiting copy,
        if any, removed once the stored object is checked); any other goes back to the user's
        path with its mode. Journals of live processes, and of processes on other machines
        (which cannot be checked), are left alone.
        """
        done = []
        for found in intent.journals(self.tmp_dir):
            if not writer_dead(found.name):
                continue  # its owner runs (or runs elsewhere, or took it over to recover it)
            data = intent.read_small(found)
            journal = MoveJournal.decode(data) if data is not None else None
            if journal is None or not owner.provably_dead(journal.owner):
                continue
            # Take it over by renaming it to a name of our own: one recoverer per journal, and
            # if we die meanwhile, the next command finds it under our (dead) name.
            jpath = self.tmp_dir / f"{owned_name()}{intent.JOURNAL}"
            try:
                os.rename(found, jpath)
            except FileNotFoundError:
                continue  # another command took it first
            try:
                what = self._recover(jpath, journal)
            except OSError as e:
                warnings.warn(
                    f"cannot finish an interrupted `cas add --move` of {journal.source} "
                    f"(journal {jpath}): {e}",
                    stacklevel=2,
                )
                continue
            with contextlib.suppress(FileNotFoundError):
                jpath.unlink()
            fsync_dir(jpath.parent)
            if what:
                warnings.warn(what, stacklevel=2)
                done.append(what)
        return done

    def _recover(self, jpath: Path, journal: MoveJournal) -> str | None:
        staged = jpath.with_name(journal.staged)
        digest = Digest(journal.sha256, journal.size, journal.blake3) if journal.sha256 else None
        if digest is None or not self._pinned(journal):
            return self._give_back(jpath, journal)
        if os.path.lexists(staged):
            # Stored before, and pinned: the waiting copy goes only once the object checks out.
            found, _ = self._present(digest, None, journal.source, check=True)
            if found is None:
                fsync_file(staged)
                self.publish(staged, digest, None, journal.source)
            staged.unlink(missing_ok=True)
            return None
        if self._in_place(digest):
            return None  # the move completed but for its last step: it is stored and pinned
        return self._give_back(jpath, journal)

    def _pinned(self, journal: MoveJournal) -> bool:
        """Whether the move's lockfile names its sha256 (a canonical lockfile quotes it)."""
        if journal.lock is None or journal.sha256 is None:
            return False
        data = intent.read_small(Path(journal.lock), _LOCK_TEXT_CAP)
        return data is not None and journal.sha256.encode() in data

    def _give_back(self, jpath: Path, journal: MoveJournal) -> str | None:
        """Put a taken file back at its path with its mode; the journal stays for the caller."""
        staged = jpath.with_name(journal.staged)
        target = _free_path(Path(journal.source))
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(staged):
            with named(staged):
                os.chmod(staged, journal.mode, follow_symlinks=False)
                os.rename(staged, target)
        elif journal.sha256 is None:
            return None  # killed before the rename: nothing was taken
        elif (back := _already_back(journal)) is not None:
            # A recoverer gave it back, then died before it removed the journal.
            target = back
        elif self._in_place(Digest(journal.sha256, journal.size, journal.blake3)):
            self._copy_out(Digest(journal.sha256, journal.size, journal.blake3), target, journal)
        else:
            raise FileNotFoundError(
                errno.ENOENT, "neither waiting in tmp/ nor stored", journal.source
            )
        fsync_dir(target.parent)
        with contextlib.suppress(OSError):
            if os.geteuid() == 0:
                os.chown(target, journal.uid, journal.gid, follow_symlinks=False)
        where = "" if str(target) == journal.source else f" (as {target}: its path was taken)"
        return f"gave back {journal.source}{where}: a `cas add --move` did not complete"

    def _copy_out(self, digest: Digest, target: Path, journal: MoveJournal) -> None:
        """A new inode at ``target`` with the object's bytes and the file's mode."""
        tmp = target.with_name(f".{target.name}.{owned_name()}.tmp")
        try:
            got = hashing.copy_file(self.object_path(digest.sha256), tmp)
            if got.digest() != digest:
                raise IntegrityError(
                    f"sha256:{digest.sha256}: the stored copy of {journal.source} does not "
                    f"match its digest; it was not given back",
                    hint="run `cas verify`",
                )
            with named(tmp):
                os.chmod(tmp, journal.mode)
                os.rename(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _already_back(journal: MoveJournal) -> Path | None:
    """Where a file of ``journal`` was given back already, as its own inode; else None."""
    source = Path(journal.source)
    pattern = glob.escape(source.name) + ".cas-restored*"
    for candidate in (source, *sorted(source.parent.glob(pattern))):
        try:
            st = os.lstat(candidate)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != journal.size:
                continue
            if hashing.hash_file(candidate, ("sha256",), regular_only=True).sha256 == (
                journal.sha256
            ):
                return candidate
        except OSError:
            continue
    return None


def _free_path(path: Path) -> Path:
    """``path``, or ``path.cas-restored[-N]`` when something else now sits there."""
    if not os.path.lexists(path):
        return path
    for i in range(1000):
        candidate = path.with_name(f"{path.name}.cas-restored{f'-{i}' if i else ''}")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name to give the file back", str(path))


def _unchanged_taken(src: Path, staged: Path, before: os.stat_result, hashed: int) -> None:
    after = os.lstat(staged)
    same = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if not same or hashed != before.st_size:
        raise SourceChangedError(
            f"{src}: the file changed while it was moved in (size {before.st_size} -> "
            f"{after.st_size} bytes, {hashed} read); it was given back",
            hint="add it again once nothing is writing to it",
        )
