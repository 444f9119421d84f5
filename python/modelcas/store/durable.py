"""Durable file primitives: every rename, write and fsync names its path when it fails.

Python's ``os.fsync`` and friends raise ``OSError`` without a file name, which reaches the user
as a bare ``[Errno 5]``; everything here re-raises with the path, so that the one-line error
says which file the disk refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

# Leftovers a crash can leave beside a file that is replaced atomically: atomic_write's
# `.NAME.[OWNER-]<32 hex>.tmp`, and the bundle writer's `.NAME.[OWNER-]<random>.partial` (the
# Rust core's `fsio::temp_beside` names its owner, 12 random characters after it).
_OWNER = r"[0-9a-f]{8}-[0-9]+"
_TMP = r"\.(?:" + _OWNER + r"-)?[0-9a-f]{32}\.tmp"
_PARTIAL = r"\.(?:" + _OWNER + r"-)?[A-Za-z0-9_]{4,16}\.partial"
# The owner inside a name: `.NAME.OWNER-HEX.tmp`, `OWNER-HEX.partial`, gc's `gc-OWNER-HEX`,
# and the Rust core's `.NAME.OWNER-<12 random>.partial`.
_OWNED = re.compile(r"(?:^|[.\-])(" + _OWNER + r")-(?:[0-9a-f]{32}|[A-Za-z0-9_]{12})(?:\.|$)")


@functools.cache
def _node() -> str:
    """The machine, its current boot and this pid namespace: where a process id means something.

    Containers on one machine share its boot id but not their pids, so the pid namespace
    counts too (the Rust core's ``fsio::owner_tag`` computes the same value).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_bytes()
    except OSError:
        boot = socket.gethostname().encode()
    try:
        pid_ns = os.readlink("/proc/self/ns/pid").encode()
    except OSError:
        pid_ns = b""
    return hashlib.sha256(boot + pid_ns).hexdigest()[:8]


def owned_name() -> str:
    """A fresh temporary name that says which live process writes it: ``NODE-PID-HEX``.

    gc never removes a temporary file whose writer is alive (:func:`writer_alive`), whatever
    its grace, so ``cas gc --grace 0`` does not break a write in flight on this machine.
    """
    return f"{_node()}-{os.getpid()}-{uuid.uuid4().hex}"


def _writer_runs(name: str) -> bool | None:
    """Whether the process named in a temporary file's name runs; None when it cannot be told.

    None for names without an owner, or owned by another machine, container or boot.
    """
    m = _OWNED.search(name)
    if m is None:
        return None
    node, _, pid = m.group(1).partition("-")
    if node != _node():
        return None
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # alive, another user's
    except (ProcessLookupError, OverflowError):
        return False
    return True


def writer_alive(name: str) -> bool:
    """Whether the process named in a temporary file's name still runs on this machine.

    False for names without an owner, or owned by another machine or an earlier boot: their
    age alone decides (the grace period).
    """
    return _writer_runs(name) is True


def writer_dead(name: str) -> bool:
    """Whether the process named in a temporary file's name provably no longer runs.

    True only for a name owned by this machine's current boot whose pid runs nothing; an
    owner on another machine or boot cannot be checked, so it is never dead by this test.
    """
    return _writer_runs(name) is False


def same_node(name: str) -> bool:
    """Whether a temporary file's name says it was made on this machine during this boot."""
    m = _OWNED.search(name)
    return m is not None and m.group(1).partition("-")[0] == _node()


@contextlib.contextmanager
def named(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` that lacks a file name with ``path`` as its file name."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise type(e)(e.errno, e.strerror or str(e), os.fsdecode(path)) from e
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    with named(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable (one that is renamed, not rewritten, afterwards)."""
    with named(path):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a mix.

    Without ``tmp_dir`` the temporary file is ``.NAME.<owner>-<hex>.tmp`` beside ``path`` (a
    rename is atomic only within one filesystem); ``cas gc`` removes such leftovers of a crash
    once they are older than its grace period.
    """
    tmp_dir = tmp_dir or path.parent
    tmp = tmp_dir / f".{path.name}.{owned_name()}.tmp"
    try:
        with named(tmp):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        with named(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def leftover_patterns(name: str) -> re.Pattern[str]:
    """Names of the crash leftovers that may sit beside a file called ``name``."""
    names = re.escape(name) + r"(?:\.sha256)?"
    return re.compile(r"\." + names + "(?:" + _TMP + "|" + _PARTIAL + ")")
