"""One hard-link rule for every name an object gets outside the store.

That is ``cas get --link auto``, giving to the Hugging Face cache (``hfcache.give``), and
named views.

A hard link makes another name of the object's inode: whoever can write through that name
rewrites the pinned bytes in place. The object is 0444, which stops only processes that
permissions stop. So a hard link is made only where nobody can write through it:

- never when this process can write a 0444 file: euid 0, or ``CAP_DAC_OVERRIDE`` (or
  ``CAP_FOWNER``, which can make it writable) in its effective capabilities (most containers
  run as root);
- never into a directory that belongs to another user (they own the new name's directory,
  and tools there may rewrite files in place).

Elsewhere a reflink (an independent copy-on-write copy, free where the filesystem has it) is
used, else a copy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
from pathlib import Path
from typing import Literal

from modelcas import untrusted

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CAP_DAC_OVERRIDE = 1
_CAP_FOWNER = 3
NO_REFLINK = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
)
Made = Literal["hardlink", "reflink", "copy"]


@functools.cache
def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def can_write_readonly() -> bool:
    """Whether this process can write a file whose mode is 0444 (root, or the capability)."""
    caps = _effective_caps()
    return os.geteuid() == 0 or bool(caps >> _CAP_DAC_OVERRIDE & 1) or bool(caps >> _CAP_FOWNER & 1)


def hardlink_allowed(directory: str | os.PathLike[str]) -> bool:
    """Whether an object may get a hard link in ``directory`` (the rule above).

    Returns:
        False as root or with the capability, or when ``directory`` belongs to another user
        (or cannot be checked); True otherwise.
    """
    if can_write_readonly():
        return False
    try:
        return os.stat(directory).st_uid == os.geteuid()
    except OSError:
        return False


def reflink(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Clone ``src`` into a new file ``dst`` (copy-on-write); nothing is left on failure.

    Raises:
        OSError: the filesystem cannot clone (``errno`` in :data:`NO_REFLINK`), or another
            error.
    """
    try:
        with untrusted.opened(src, "a file to clone") as (s, _), open(dst, "xb") as d:
            fcntl.ioctl(d.fileno(), _FICLONE, s)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        raise


def copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` into a new file ``dst`` and flush it to disk."""
    try:
        with untrusted.opened(src, "a file to copy") as (fd, _), open(dst, "xb") as d:
            os.set_blocking(fd, True)
            with os.fdopen(os.dup(fd), "rb") as s:
                shutil.copyfileobj(s, d, 8 << 20)
            os.fsync(d.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        raise


def link_out(obj: Path, new: Path, *, copy_ok: bool = True) -> Made | None:
    """Give ``obj`` the new name ``new`` (which must not exist), read-only: the rule above.

    A hard link where :func:`hardlink_allowed` says so, else a reflink, else a copy (only
    when ``copy_ok``).

    Returns:
        What was made, or None when only a copy would do and ``copy_ok`` is false.

    Raises:
        OSError: the name could not be made.
    """
    if hardlink_allowed(new.parent):
        with contextlib.suppress(OSError):
            os.link(obj, new)
            return "hardlink"
    try:
        reflink(obj, new)
    except OSError as e:
        if e.errno not in NO_REFLINK:
            raise
    else:
        os.chmod(new, 0o444)
        return "reflink"
    if not copy_ok:
        return None
    copy(obj, new)
    os.chmod(new, 0o444)
    return "copy"
