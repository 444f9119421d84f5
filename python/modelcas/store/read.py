"""Reading the store: object records, verified paths, verification, placing into a project."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from modelcas import hashing
from modelcas.digest import Digest, Hashes, is_hex64, mismatch, parse_address
from modelcas.errors import IntegrityError, ObjectNotFoundError, StoreError, UsageError
from modelcas.store import linking
from modelcas.store.durable import fsync_dir, named, owned_name
from modelcas.store.layout import Layout
from modelcas.store.records import ObjectInfo, Problem, StoreStats
from modelcas.untrusted import kind_of

STAGING = "gc-"  # gc's folders under tmp/, where it moves candidates before deciding
LinkMode = Literal["auto", "reflink", "hardlink", "symlink", "copy"]
LINK_MODES: tuple[LinkMode, ...] = ("auto", "reflink", "hardlink", "symlink", "copy")
_COPY_CHUNK = 8 << 20


class Reading(Layout):
    """Looking objects up, verifying them and placing them; nothing here adds an object."""

    def has(self, sha256: str) -> bool:
        """Whether an object with this sha256 is present (not verified)."""
        return self.object_path(sha256).is_file() or self.rescue(sha256)

    def rescue(self, sha256: str) -> bool:
        """Put back an object that a running gc has moved aside; False when there is none.

        gc moves candidates aside before it reads the roots a second time (``gc.py``). A
        reader that finds an object missing meanwhile puts it back itself: putting back is
        always safe (gc then finds it in place and leaves it), deleting is only gc's.
        """
        if not self.tmp_dir.is_dir():
            return False
        for aside in self.tmp_dir.glob(f"{STAGING}*/{sha256}"):
            # A FileNotFoundError means gc (or another reader) moved it first: look again.
            with contextlib.suppress(FileNotFoundError):
                self.put_back(aside, sha256)
        return os.path.lexists(self.object_path(sha256))

    def put_back(self, aside: Path, sha256: str) -> None:
        """Move an object from gc's staging area back into place."""
        final = self.object_path(sha256)
        self.shard(sha256, create=True)
        with named(final):
            if os.path.lexists(final):
                aside.unlink()  # stored again meanwhile: the same bytes
            else:
                os.rename(aside, final)
        fsync_dir(final.parent)

    def info(self, sha256: str) -> ObjectInfo:
        """The index record of an object.

        Raises:
            ObjectNotFoundError: the object is not in the store.
        """
        path = self.object_path(sha256)
        try:
            st = path.lstat()
        except FileNotFoundError:
            if self.rescue(sha256):
                return self.info(sha256)
            raise ObjectNotFoundError(
                f"sha256:{sha256} is not in the store at {self.root}",
                hint="add it with `cas add`, or fetch it with `cas sync` / `cas pull`",
            ) from None
        record = self.read_index(sha256)
        if record is None:
            return ObjectInfo(Digest(sha256, st.st_size), path, st.st_mtime)
        return ObjectInfo(record[0], path, record[1])

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object, ordered by sha256 (symlinked shards are refused, not followed)."""
        if not self.objects_dir.is_dir():
            return
        for shard in sorted(self.objects_dir.iterdir()):
            if len(shard.name) != 2:
                continue
            self.checked_dir(shard)
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                if not is_hex64(entry.name):
                    continue
                record = self.read_index(entry.name)
                path = Path(entry.path)
                if record is not None:
                    yield ObjectInfo(record[0], path, record[1])
                else:
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        yield ObjectInfo(Digest(entry.name, st.st_size), path, st.st_mtime)

    def objects(self) -> list[ObjectInfo]:
        """Every object, ordered by sha256."""
        return list(self.iter_objects())

    def resolve(self, address: str) -> str:
        """The sha256 of an address, accepting a unique prefix (``sha256:9f86``).

        Raises:
            UsageError: not an address, or an ambiguous prefix.
            ObjectNotFoundError: no object starts with that prefix.
        """
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

    def path(
        self,
        sha256: str,
        *,
        verify: bool = True,
        deep: bool = False,
        progress: hashing.Progress | None = None,
    ) -> Path:
        """The path of an object, verified first.

        Args:
            sha256: the object.
            verify: re-hash it (blake3) before handing it out.
            deep: recompute sha256 too.
            progress: called with the bytes hashed since its last call.

        Returns:
            The object's path. Never write to it.

        Raises:
            ObjectNotFoundError: absent.
            IntegrityError: present but not what its name says.
        """
        info = self.info(sha256)
        if verify:
            problem = self.check([sha256], deep=deep, progress=progress)[0]
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
                self.shard(sha256)
                st = path.lstat()
            except FileNotFoundError:
                if not self.rescue(sha256):
                    results[i] = Problem(sha256, path, "missing", "an object", "nothing")
                    continue
                st = path.lstat()
            except StoreError:
                results[i] = Problem(sha256, path.parent, "not-regular", "a directory", "a symlink")
                continue
            if not stat.S_ISREG(st.st_mode):
                results[i] = Problem(
                    sha256, path, "not-regular", "a regular file", kind_of(st.st_mode)
                )
                continue
            record = self.read_index(sha256)
            known = record[0] if record else None
            if known is not None and st.st_size != known.size:
                results[i] = Problem(
                    sha256, path, "size", f"{known.size} bytes", f"{st.st_size} bytes"
                )
                continue
            algos = hashing.BOTH if deep or known is None or not known.blake3 else ("blake3",)
            batches.setdefault(algos, []).append((i, path, known, st.st_mtime))
        for algos, batch in batches.items():
            # Objects are ours and read-only, never truncated in place: mapped large ones are
            # safe to hash, and faster (benches/README.md, `cas verify`).
            hashed = hashing.hash_files(
                [path for _, path, _, _ in batch],
                algos,
                mmap=None,
                regular_only=True,
                progress=progress,
            )
            for (i, path, known, mtime), got in zip(batch, hashed, strict=True):
                found = self._follow(sha256s[i], path, algos) if _gone(got) else got
                if found is None:
                    results[i] = Problem(sha256s[i], path, "missing", "an object", "nothing")
                    continue
                results[i] = self._judge(sha256s[i], path, known, found, mtime)
        return results

    def _follow(
        self, sha256: str, path: Path, algos: tuple[hashing.Algo, ...]
    ) -> Hashes | OSError | None:
        """Hash an object that left its place while it was checked; None when it is gone.

        A running gc moves candidates aside (G2) and puts back what is referenced (G4): the
        object is where gc put it, and is taken back from there (or found back in place). Only
        an object that is nowhere after that is missing; it is never reported corrupt.
        """
        for attempt in range(50):
            if os.path.lexists(path) or self.rescue(sha256):
                got = hashing.hash_files([path], algos, regular_only=True)[0]
                if not isinstance(got, FileNotFoundError):
                    return got
            time.sleep(0.002 * attempt)
        return None

    def _judge(
        self, sha256: str, path: Path, known: Digest | None, got: Hashes | OSError, mtime: float
    ) -> Problem | None:
        if isinstance(got, OSError):
            return Problem(sha256, path, "unreadable", "readable bytes", got.strerror or str(got))
        # The record's blake3 first (the routine check), then the name, which is the sha256.
        m = mismatch(known, dataclasses.replace(got, sha256=None)) if known else None
        if m is None:
            m = mismatch(Digest(sha256, got.size), got)
        if m is not None:
            return Problem(sha256, path, m.field, m.expected, m.actual)
        if known is None:
            # Rebuild a lost index record (a crash between the object's rename and its record).
            self.write_index(Digest(sha256, got.size, got.blake3), mtime)
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
            else [info.digest.sha256 for info in self.iter_objects()]
        )
        return [p for p in self.check(wanted, deep=deep, progress=progress) if p is not None]

    def audit(self, sha256s: Iterable[str] | None = None) -> list[Problem]:
        """Permissions that would let someone change objects.

        That is world-writable store directories, and objects whose mode allows writing
        (they must be 0444).
        """
        problems = []
        dirs = [self.root, *self._directories()]
        for parent in (self.objects_dir, self.index_dir):
            with contextlib.suppress(OSError):
                dirs.extend(p for p in parent.iterdir() if len(p.name) == 2)
        for d in dirs:
            with contextlib.suppress(OSError):
                mode = d.lstat().st_mode
                if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                    problems.append(
                        Problem("", d, "writable", "not world-writable", f"mode {mode & 0o7777:o}")
                    )
        wanted = (
            [self.object_path(s) for s in sha256s]
            if sha256s is not None
            else [i.path for i in self.iter_objects()]
        )
        for path in wanted:
            with contextlib.suppress(OSError):
                mode = path.lstat().st_mode
                if stat.S_ISREG(mode) and mode & 0o222:
                    problems.append(
                        Problem(path.name, path, "writable", "mode 444", f"mode {mode & 0o777:o}")
                    )
        return problems

    def quarantine(self, sha256: str) -> Path | None:
        """Move a bad object aside so the next fetch replaces it; returns its new path."""
        path = self.object_path(sha256)
        if not os.path.lexists(path):
            return None
        self.checked_dir(self.quarantine_dir, create=True)
        dest = self.quarantine_dir / f"{sha256}.{uuid.uuid4().hex[:12]}"
        with named(path):
            os.rename(path, dest)
        fsync_dir(path.parent)
        self.index_path(sha256).unlink(missing_ok=True)
        return dest

    def stats(self) -> StoreStats:
        """Location, format, and how much is in the store."""
        from modelcas.store.layout import FORMAT  # noqa: PLC0415

        objects = self.objects()

        def count_files(d: Path) -> int:
            return sum(1 for p in d.iterdir() if p.is_file()) if d.is_dir() else 0

        return StoreStats(
            root=self.root,
            format=FORMAT,
            shared=self.shared,
            objects=len(objects),
            bytes=sum(o.digest.size for o in objects),
            temp_files=count_files(self.tmp_dir),
            quarantined=count_files(self.quarantine_dir),
            roots=sum(1 for _ in self.roots_dir.glob("*.json")) if self.roots_dir.is_dir() else 0,
        )

    # -- placing into a project ----------------------------------------------------------

    def place(
        self,
        sha256: str,
        dest: str | os.PathLike[str],
        *,
        link: LinkMode = "auto",
        force: bool = False,
        verify: bool = True,
        progress: hashing.Progress | None = None,
    ) -> LinkMode:
        """Put an object at ``dest`` without letting anyone modify the object through it.

        ``auto`` tries a reflink (an independent copy-on-write copy), then a hardlink where
        nobody can write through it (:func:`~modelcas.store.linking.hardlink_allowed`: not as
        root or with ``CAP_DAC_OVERRIDE``, not into another user's directory), then a copy.
        ``symlink`` must be asked for. ``progress`` is called with the bytes hashed
        (``verify``) and copied.

        Returns:
            The link mode used.

        Raises:
            ObjectNotFoundError, IntegrityError: as for :meth:`path`.
            FileExistsError: ``dest`` exists with other content and ``force`` is not set.
        """
        src = self.path(sha256, verify=verify, progress=progress)
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
            # A hard link only where nobody can write through it (store/linking.py).
            hard = linking.hardlink_allowed(target.parent)
            modes = ("reflink", "hardlink", "copy") if hard else ("reflink", "copy")
        else:
            modes = (link,)
        last: OSError | None = None
        for mode in modes:
            tmp = target.parent / f".{target.name}.{owned_name()}.cas-tmp"
            try:
                make_link(src, tmp, mode, progress)
                os.replace(tmp, target)
            except OSError as e:
                last = e
                with contextlib.suppress(OSError):
                    tmp.unlink()
            else:
                return mode
        assert last is not None
        raise last


def _gone(got: Hashes | OSError) -> bool:
    return isinstance(got, FileNotFoundError)


def _same_content(src: Path, target: Path, sha256: str) -> bool:
    try:
        if target.samefile(src):
            return True
        if target.stat().st_size != src.stat().st_size:
            return False
        return hashing.hash_file(target, ("sha256",)).sha256 == sha256
    except OSError:
        return False


def make_link(
    src: Path, tmp: Path, mode: LinkMode, progress: hashing.Progress | None = None
) -> None:
    """Create ``tmp`` as a link or copy of ``src`` in the given mode (not ``auto``).

    ``progress`` is called with the bytes copied (``copy`` only).
    """
    if mode == "hardlink":
        os.link(src, tmp)
    elif mode == "symlink":
        os.symlink(src.resolve(), tmp)
    elif mode == "reflink":
        linking.reflink(src, tmp)
        os.chmod(tmp, 0o644)
    elif mode == "copy":
        with open(src, "rb") as s, open(tmp, "xb") as d:
            while chunk := s.read(_COPY_CHUNK):
                d.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        os.chmod(tmp, 0o644)
    else:
        raise UsageError(f"unknown link mode {mode!r}: expected one of {', '.join(LINK_MODES)}")
