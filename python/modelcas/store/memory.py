"""What each root pinned when last seen: a root that vanished does not free the only copy.

Moving a project directory makes its lockfile's registered path vanish. Its objects that exist
nowhere else (added or moved in, never pushed) must not go with it. So per registered root the
store keeps ``roots/<key>.seen``: the sha256s it pinned, when it was last read, that have no
remote ``source:`` (objects with one may go: ``cas sync`` brings them back). When the root's
path is gone gc keeps those objects and says so, until ``cas gc --forget PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from modelcas.digest import is_hex64
from modelcas.errors import StoreError, UsageError
from modelcas.store.durable import atomic_write, fsync_dir
from modelcas.store.intent import read_small
from modelcas.store.moving import Moving
from modelcas.store.records import Root

MEMORY = ".seen"
_CAP = 256 << 20
# A root that changes while it is read is read again; one that never holds still this many
# times is refused (its writers each record what they wrote, after they wrote it).
_TRIES = 20
Pinned = set[str] | Mapping[str, bool]  # as RootReader returns: sha256s, or with "has a remote"


def local_of(pinned: Pinned) -> set[str]:
    """The sha256s a root pins that have no remote source."""
    if isinstance(pinned, Mapping):
        return {s for s, remote in pinned.items() if not remote}
    return set(pinned)


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is replaced or written (None: it is gone)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Remembering(Moving):
    """Root records and what each root pinned when last seen."""

    def _record_path(self, path: Path) -> Path:
        key = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]
        return self.roots_dir / f"{key}.json"

    def _memory_path(self, record: Path) -> Path:
        return record.with_suffix(MEMORY)

    def remember(self, path: str | os.PathLike[str], reader: Callable[[Path], Pinned]) -> Pinned:
        """Read the root at ``path`` and record what it pins without a remote source.

        Called once a pin is written, and each time gc reads the root. Another writer may
        replace the file between this read and this record (which would then name an older
        pin list, and outlive the newer one's record): so the file's identity is compared
        before the read and after the record, and it is read again until it held still.

        Returns:
            What ``reader`` read.

        Raises:
            StoreError: the file changed during each of many reads.
            as ``reader``.
        """
        absolute = Path(path).resolve()
        return self._read_and_remember(self._record_path(absolute), absolute, reader)

    def _read_and_remember(
        self, record: Path, absolute: Path, reader: Callable[[Path], Pinned]
    ) -> Pinned:
        for _ in range(_TRIES):
            before = _identity(absolute)
            pinned = reader(absolute)
            self._remember(record, absolute, local_of(pinned))
            if _identity(absolute) == before:
                return pinned
        raise StoreError(
            f"{absolute} changed during each of {_TRIES} reads; what it pins was not recorded",
            hint="run the command again once nothing else writes that file",
        )

    def _remember(self, record: Path, absolute: Path, local: Iterable[str]) -> None:
        memory = self._memory_path(record)
        wanted = sorted(set(local))
        data = json.dumps({"path": os.fsdecode(absolute), "local": wanted}).encode()
        if read_small(memory, _CAP) == data:
            return
        self.checked_dir(self.roots_dir, create=True)
        atomic_write(memory, data, self.tmp_dir, self._file_mode)

    def remembered(self, root: Root) -> set[str] | None:
        """The sha256s ``root`` pinned without a remote source when last seen; None if unknown.

        Raises:
            StoreError: the memory exists but cannot be read: gc must not guess, so it stops.
        """
        memory = self._memory_path(root.record)
        if not os.path.lexists(memory):
            return None
        data = read_small(memory, _CAP)
        try:
            raw = json.loads(data) if data is not None else None
            local = raw["local"] if isinstance(raw, dict) else None
            if not isinstance(local, list) or not all(
                isinstance(s, str) and is_hex64(s) for s in local
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise StoreError(
                f"{memory} (what {root.path} pinned) cannot be read; nothing was deleted",
                hint=f"if {root.path} is gone for good, run `cas gc --forget {root.path}`",
            ) from None
        return set(local)

    def forget_root(self, path: str | os.PathLike[str], *, dry_run: bool = False) -> Path:
        """Forget a registered root whose file is gone, and what it pinned.

        Args:
            path: the root's path.
            dry_run: only check that it could be forgotten (``cas gc --dry-run --forget``).

        Returns:
            The root's absolute path.

        Raises:
            UsageError: no root is registered at ``path``, or its file still exists (gc keeps
                what an existing file pins; move or delete it first).
        """
        absolute = Path(path).absolute()
        record = self._record_path(Path(os.path.normpath(absolute)))
        if not os.path.lexists(record):
            record = self._record_path(absolute.resolve())
        if not os.path.lexists(record):
            raise UsageError(
                f"no registered root at {absolute}",
                hint="`cas gc --dry-run` names the roots whose objects it keeps",
            )
        if os.path.lexists(absolute):
            raise UsageError(
                f"{absolute} still exists; gc keeps what it pins",
                hint="delete or move it first, or unpin what it should no longer keep",
            )
        if dry_run:
            return absolute
        self._memory_path(record).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        fsync_dir(record.parent)
        return absolute

    def _drop_memory(self, record: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._memory_path(record).unlink()
