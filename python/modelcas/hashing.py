"""Hashing files, buffers and streams through the Rust core.

Every function computes all the requested digests in a single read pass, releases the GIL, and
turns Ctrl-C into ``KeyboardInterrupt``. ``progress`` is any callable taking a byte count (for
example ``tqdm.update``); it is called from the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from modelcas import _core
from modelcas.digest import Hashes

Algo = Literal["sha256", "blake3", "crc32"]
BOTH: tuple[Algo, ...] = ("sha256", "blake3")
Progress = Callable[[int], object]
PathLike = str | os.PathLike[str]


def hash_file(
    path: PathLike,
    algos: Sequence[Algo] = BOTH,
    *,
    mmap: bool | None = False,
    regular_only: bool = False,
    follow: bool = False,
    progress: Progress | None = None,
) -> Hashes:
    """Hash one file in one read pass.

    Args:
        path: the file.
        algos: digests to compute.
        mmap: ``False`` (the default) reads with ``read()``; ``None`` maps large files. Map
            only files that nobody truncates while they are read (store objects): a file that
            shrinks under a mapping kills the process with SIGBUS, where a read simply ends
            early and the caller's size check says the file changed.
        regular_only: refuse devices and FIFOs (opened without blocking), and symlinks.
        follow: with ``regular_only``, follow symlinks to a regular file (a user's source)
            instead of refusing them.
        progress: called with the number of bytes done since the last call.

    Returns:
        The digests and the size read.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError, OSError: with the path.
        KeyboardInterrupt: on Ctrl-C.

    """
    raw = _core.hash_file(
        path, algos, mmap=mmap, regular_only=regular_only, follow=follow, progress=progress
    )
    return Hashes.from_core(raw)


def hash_files(
    paths: Sequence[PathLike],
    algos: Sequence[Algo] = BOTH,
    *,
    mmap: bool | None = False,
    regular_only: bool = False,
    follow: bool = False,
    progress: Progress | None = None,
) -> list[Hashes | OSError]:
    """Hash many files in parallel across cores.

    Args:
        paths: the files.
        algos: digests to compute.
        mmap: as for :func:`hash_file`.
        regular_only: as for :func:`hash_file`.
        follow: as for :func:`hash_file`.
        progress: called with the number of bytes done since the last call.

    Returns:
        One entry per path, in input order: the digests, or the ``OSError`` (naming the path)
        that file failed with. One failing file does not lose the others.

    Raises:
        KeyboardInterrupt: on Ctrl-C.

    """
    raw = _core.hash_files(
        paths, algos, mmap=mmap, regular_only=regular_only, follow=follow, progress=progress
    )
    return [r if isinstance(r, OSError) else Hashes.from_core(r) for r in raw]


def hash_bytes(data: bytes | bytearray | memoryview, algos: Sequence[Algo] = BOTH) -> Hashes:
    """Hash a buffer (anything C-contiguous that supports the buffer protocol).

    Args:
        data: the bytes.
        algos: digests to compute.

    Returns:
        The digests and the length.

    Raises:
        BufferError: the buffer is not contiguous.

    """
    return Hashes.from_core(_core.hash_buffer(data, algos))


def copy_file(
    src: PathLike,
    dst: PathLike,
    algos: Sequence[Algo] = BOTH,
    *,
    fsync: bool = True,
    progress: Progress | None = None,
) -> Hashes:
    """Copy ``src`` to a new file ``dst`` while hashing it, reading ``src`` once.

    Args:
        src: the file to copy.
        dst: where to write; must not exist.
        algos: digests to compute.
        fsync: flush ``dst`` to disk before returning.
        progress: called with the number of bytes done since the last call.

    Returns:
        The digests of the bytes written.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: reading or writing failed (the path is named).

    """
    return Hashes.from_core(_core.copy_file(src, dst, algos, fsync=fsync, progress=progress))


def sha256_chained(
    path: PathLike,
    step: int,
    midstates: Sequence[str],
    *,
    progress: Progress | None = None,
) -> str | None:
    """A file's sha256, computed in parallel segments that start from recorded midstates.

    ``midstates[i]`` is the sha256 state (as hex) after the first ``(i + 1) * step`` bytes, as a
    bundle's manifest records them. Each segment must end in the next recorded state, so the
    midstates are checked, not trusted.

    Returns:
        The file's sha256, or ``None`` when the midstates do not chain to its bytes (hash it
        from start to end then, to learn its actual digest).

    Raises:
        ValueError: a midstate is not 64 hex digits.
        OSError: with the path.

    """
    return _core.sha256_chained(path, step, midstates, progress=progress)


class Hasher:
    """An incremental hasher for streamed bytes, such as a download."""

    __slots__ = ("_algos", "_inner")

    def __init__(self, algos: Sequence[Algo] = BOTH) -> None:
        self._algos = tuple(algos)
        self._inner = _core.Hasher(self._algos)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes."""
        self._inner.update(data)

    def update_many(self, chunks: Iterable[bytes]) -> None:
        """Feed several chunks in order."""
        for chunk in chunks:
            self._inner.update(chunk)

    def hashes(self) -> Hashes:
        """The digests of everything fed so far; feeding may continue."""
        return Hashes.from_core(self._inner.digest())

    def copy(self) -> Hasher:
        """An independent hasher in the same state."""
        twin = Hasher.__new__(Hasher)
        twin._algos = self._algos
        twin._inner = self._inner.copy()
        return twin
