"""Reading a stored object once into memory and verifying it there.

The bytes that are hashed are the bytes that are handed on: a file is read once into memory
this process owns, hashed as it lands (blake3 on all cores, in the Rust core), and only then
given to a deserializer. Nothing re-opens the stored path after verification, so a file
swapped or modified in between has no effect.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from typing import NoReturn

from modelcas import _core, hashing
from modelcas.errors import IntegrityError
from modelcas.loader.target import Target

_REPAIR = "run `cas verify --repair`, then `cas sync` to fetch a good copy"


def needs_sha256(target: Target, deep: bool) -> bool:
    """Whether sha256 must be computed too (asked for, or no blake3 is known to compare)."""
    return deep or target.digest.blake3 is None


def corrupt(target: Target, what: str) -> NoReturn:
    """Raise the IntegrityError for bytes that are not what the target says."""
    raise IntegrityError(
        f"{target.label} (sha256:{target.digest.sha256}) at {target.path} is corrupt: {what}; "
        "nothing was loaded",
        hint=_REPAIR,
    )


def unreadable(target: Target, e: OSError) -> IntegrityError:
    """The IntegrityError for an object that cannot be opened or read."""
    return IntegrityError(
        f"{target.label}: cannot read {target.path}: {e.strerror or e}",
        hint="run `cas verify`; then `cas sync` to fetch it again",
    )


def check(target: Target, fill: tuple[int, bool, str | None], sha256: str | None = None) -> None:
    """Compare what a read found with the target's digest.

    Args:
        target: what the bytes must be.
        fill: ``(bytes found, file has more, blake3 hex)`` from ``FileReader.finish``.
        sha256: the sha256 of the bytes, when it was computed.

    Raises:
        IntegrityError: the size or a digest differs; the message names both.
    """
    found, longer, blake3 = fill
    expected = target.digest
    if found != expected.size or longer:
        shown = "more bytes" if longer else f"{found} bytes"
        corrupt(target, f"size: expected {expected.size} bytes, found {shown}")
    if expected.blake3 is not None and blake3 != expected.blake3:
        corrupt(target, f"blake3: expected {expected.blake3}, found {blake3}")
    if sha256 is not None and sha256 != expected.sha256:
        corrupt(target, f"sha256: expected {expected.sha256}, found {sha256}")


def open_reader(
    target: Target, *, piece: int | None = None, fd: int | None = None
) -> _core.FileReader:
    """A reader of the stored object (symlinks and non-regular files refused).

    Raises:
        IntegrityError: it cannot be opened.
    """
    try:
        return _core.FileReader(target.path, target.digest.size, piece=piece, fd=fd)
    except OSError as e:
        raise unreadable(target, e) from e


def read_into(target: Target, dest: memoryview, *, deep: bool = False) -> None:
    """Fill ``dest`` (exactly the object's size) from the object, hashing as the bytes land.

    Raises:
        IntegrityError: the bytes do not match; ``dest`` then holds unverified bytes.
    """
    reader = open_reader(target)
    try:
        reader.read_into(dest)
        fill = reader.finish()
    except OSError as e:
        raise unreadable(target, e) from e
    sha256 = hashing.hash_bytes(dest, ("sha256",)).sha256 if needs_sha256(target, deep) else None
    check(target, fill, sha256)


def private_memory(size: int) -> mmap.mmap:
    """Fresh writable memory for ``size`` (> 0) bytes, in huge pages where the kernel allows.

    Faulting in a gigabyte page by page costs more than reading it (1 GiB here: 0.32 s in
    4 KiB pages, 0.09 s in 2 MiB pages).
    """
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


def read_bytes(target: Target, *, deep: bool = False) -> bytes:
    """The verified bytes of a stored object, read once.

    Raises:
        IntegrityError: the bytes do not match; nothing is returned.
    """
    reader = open_reader(target)
    try:
        data = reader.read_bytes()
        fill = reader.finish()
    except OSError as e:
        raise unreadable(target, e) from e
    sha256 = hashing.hash_bytes(data, ("sha256",)).sha256 if needs_sha256(target, deep) else None
    check(target, fill, sha256)
    return data


# memfds need Linux; torch.load reaches the snapshot through its /proc/self/fd path.
SNAPSHOTS = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


@contextlib.contextmanager
def snapshot(target: Target, *, deep: bool = False) -> Iterator[tuple[int, mmap.mmap]]:
    """A verified, sealed in-memory copy of a stored object: ``(fd, private mapping)``.

    Each piece of the object is read into a small buffer, hashed there and written from there
    into an in-memory file (``memfd``), so the copy holds exactly the bytes that were hashed,
    read once. The copy is sealed against any change before anything reads it, and only
    handed out once the whole object matched its digest. (Between a piece's write and the
    seal, only a process allowed to trace this one could reach the copy, and such a process
    can rewrite this one's memory anyway.) The mapping is copy-on-write: tensors built on it
    may be modified without touching the snapshot. Both stay valid after the ``with`` block
    for as long as something refers to the mapping; the descriptor is closed when it ends.

    Raises:
        IntegrityError: the object is not what its digest says; nothing is returned.
    """
    size = target.digest.size
    file = open_reader(target)
    try:
        fd = os.memfd_create(
            f"modelcas:{target.digest.sha256[:16]}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        )
    except OSError as e:
        raise unreadable(target, e) from e
    try:
        try:
            os.ftruncate(fd, size)
            file.copy_into(fd)
            fill = file.finish()
        except OSError as e:
            raise unreadable(target, e) from e
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        sha256 = (
            hashing.hash_file(f"/proc/self/fd/{fd}", ("sha256",), mmap=False).sha256
            if needs_sha256(target, deep)
            else None
        )
        check(target, fill, sha256)
        view = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        yield fd, view
    finally:
        os.close(fd)
