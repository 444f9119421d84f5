"""Work in flight that gc must respect: pins about to be written, and ``--move`` journals.

Both live in ``tmp/`` under their owner's name (``<node>-<pid>-<hex>``):

- ``<owner>.pins``: the sha256s a writer is about to pin (a *claim*). gc keeps them while the
  writer may run, so a pinned object is never missing from its place, not even for the
  moment between gc's delete and the writer's check (``docs/store.md``, step A0').
- ``<owner>.move``: a move journal (:class:`MoveJournal`): which file ``cas add --move`` took,
  with its mode and owner, and the sha256 once known. Its file waits beside it as
  ``<owner>.moving`` until it becomes an object (rename) or goes back. gc keeps the journal's
  object whatever the journal's age, and only :meth:`Moving.recover_moves` removes a journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcas.digest import is_hex64
from modelcas.store.durable import owned_name, same_node, writer_dead
from modelcas.store.owner import Owner

CLAIM = ".pins"
JOURNAL = ".move"
MOVING = ".moving"
# A claim made on another machine cannot be checked for a live owner; gc respects it this long.
OTHER_HOST = 3600.0
_CAP = 1 << 20


@dataclass
class MoveJournal:
    """What ``--move`` took, so that the next command can finish the move or undo it."""

    source: str  # the user's path, absolute
    mode: int  # its permission bits
    uid: int
    gid: int
    lock: str | None  # the lockfile the move pins into (None: no pin)
    owner: Owner
    staged: str  # the file's name in tmp/ while it waits: ``<owner>.moving``
    sha256: str | None = None  # known once the file is hashed, before it becomes an object
    size: int = 0
    blake3: str | None = None

    def encode(self) -> bytes:
        """The journal as JSON."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> MoveJournal | None:
        """A journal read back, or None when the bytes are not one."""
        try:
            raw = json.loads(data)
            owner = Owner(**raw.pop("owner"))
            journal = cls(owner=owner, **raw)
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if (
            not os.path.isabs(journal.source)
            or (journal.sha256 is not None and not is_hex64(journal.sha256))
            or not journal.staged.endswith(MOVING)
            or "/" in journal.staged
        ):
            return None
        return journal


def read_small(path: Path, cap: int = _CAP) -> bytes | None:
    """A small regular file's bytes (no symlink, FIFO or device followed); None if it is not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        return os.read(fd, cap)
    except OSError:
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim(tmp_dir: Path, sha256s: Iterable[str]) -> Iterator[None]:
    """Tell gc that this process is about to pin ``sha256s``; withdrawn on leaving the block.

    Not fsynced: a claim matters only while its writer runs, and a crash ends that.
    """
    wanted = sorted(set(sha256s))
    if not wanted:
        yield
        return
    path = tmp_dir / f"{owned_name()}{CLAIM}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(wanted).encode())
    finally:
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def journals(tmp_dir: Path) -> list[Path]:
    """Every move journal in ``tmp/``."""
    try:
        return sorted(p for p in tmp_dir.iterdir() if p.name.endswith(JOURNAL))
    except FileNotFoundError:
        return []


def in_flight(tmp_dir: Path) -> set[str]:
    """The sha256s gc must keep for work in flight: live claims and every move journal."""
    keep: set[str] = set()
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return keep
    now = time.time()
    for entry in entries:
        if entry.name.endswith(JOURNAL):
            data = read_small(Path(entry.path))
            journal = MoveJournal.decode(data) if data is not None else None
            if journal is not None and journal.sha256 is not None:
                keep.add(journal.sha256)
        elif entry.name.endswith(CLAIM) and claim_counts(Path(entry.path), now):
            data = read_small(Path(entry.path))
            with contextlib.suppress(ValueError, TypeError, RecursionError):
                listed = json.loads(data) if data else []
                keep |= {s for s in listed if isinstance(s, str) and is_hex64(s)}
    return keep


def claim_counts(path: Path, now: float) -> bool:
    """Whether a claim may belong to a running writer (a dead one's is a leftover)."""
    if writer_dead(path.name):
        return False
    if same_node(path.name):
        return True
    try:
        return now - path.lstat().st_mtime < OTHER_HOST
    except OSError:
        return False


def in_flight_name(name: str) -> bool:
    """Whether a name in ``tmp/`` is a journal or a moving file: only recovery removes those."""
    return name.endswith((JOURNAL, MOVING))
