"""Reading small files that someone else controls: configs, sums files, keys, records.

Anything a path names may be a FIFO (opening it for reading waits for a writer, forever), a
device (``/dev/zero`` never ends), or a symlink to one; a file may also be far larger than the
thing it claims to be. Every such file is read here, the same way: the path is checked before it
is opened (a device is never opened at all), opened with ``O_NONBLOCK`` (a FIFO put there in
between cannot hang the open), checked again with ``fstat`` on what was opened (regular files
only), and read with a bound: at most what the caller expects, plus one byte to tell "too
large". Errors name the path and what was expected, never the bytes that were found.

The Rust core does the same for the large files it reads (``rust/fsio.rs``, ``open_checked``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from modelcas.errors import ModelcasError, UsageError

PathLike = str | os.PathLike[str]


def kind_of(mode: int) -> str:
    """A file type for messages: "a symlink", "a FIFO"..."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


@contextlib.contextmanager
def opened(
    path: PathLike,
    what: str,
    *,
    error: type[ModelcasError] = UsageError,
    follow: bool = True,
) -> Iterator[tuple[int, os.stat_result]]:
    """A regular file opened to read, without ever blocking on or reading anything else.

    Args:
        path: the file.
        what: what it should be, with its article ("a lockfile"), for messages.
        error: the class of the error raised for a file that is not a regular file.
        follow: follow a symlink to a regular file (``False``: a symlink is refused).

    Yields:
        The open descriptor (closed on exit) and its ``fstat``.

    Raises:
        FileNotFoundError, PermissionError, OSError: the path cannot be opened (named).
        ModelcasError: of class ``error``: not a regular file (a directory, FIFO, device,
            socket, or with ``follow=False`` a symlink).
    """
    name = os.fsdecode(path)
    st = os.stat(path, follow_symlinks=follow)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{name}: is {kind_of(st.st_mode)}, not a regular file; expected {what}")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise error(f"{name}: is a symlink, not a regular file; expected {what}") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the stat and the open
            raise error(f"{name}: is {kind_of(st.st_mode)}, not a regular file; expected {what}")
        yield fd, st
    finally:
        os.close(fd)


def read_file(
    path: PathLike,
    what: str,
    *,
    cap: int,
    error: type[ModelcasError] = UsageError,
    follow: bool = True,
) -> bytes:
    """The bytes of a small regular file that someone else controls, at most ``cap`` of them.

    Args:
        path: the file.
        what: what it should be, with its article ("a sums file"), for messages.
        cap: the most bytes such a file can hold; a larger file is refused unread.
        error: the class of the error raised for a refused file.
        follow: as for :func:`opened`.

    Returns:
        The whole file.

    Raises:
        FileNotFoundError, PermissionError, OSError: the path cannot be opened or read.
        ModelcasError: of class ``error``: not a regular file, or larger than ``cap``.
    """
    name = os.fsdecode(path)
    with opened(path, what, error=error, follow=follow) as (fd, st):
        if st.st_size > cap:
            raise error(f"{name}: {st.st_size} bytes is more than {what} can be ({cap} at most)")
        parts: list[bytes] = []
        left = cap + 1
        while left > 0:
            try:
                chunk = os.read(fd, min(left, 1 << 20))
            except BlockingIOError:  # not a regular file after all; never wait for it
                raise error(f"{name}: would block; expected {what}") from None
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
    data = b"".join(parts)
    if len(data) > cap:  # it grew while it was read
        raise error(f"{name}: more than {cap} bytes is more than {what} can be")
    return data


def read_text(
    path: PathLike,
    what: str,
    *,
    cap: int,
    error: type[ModelcasError] = UsageError,
    follow: bool = True,
) -> str:
    """:func:`read_file`, decoded as strict UTF-8.

    Raises:
        as :func:`read_file`; ModelcasError of class ``error`` when it is not UTF-8 (the
            offset is named, never the bytes).
    """
    data = read_file(path, what, cap=cap, error=error, follow=follow)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{os.fsdecode(path)}: not UTF-8 text (byte {e.start}); expected {what}"
        ) from None
