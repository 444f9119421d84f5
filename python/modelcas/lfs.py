"""git-lfs pointer files: where weights are expected, a pointer means `git lfs pull` was missed.

A pointer is a small text file (git-lfs never makes one of 1024 bytes or more) whose first
line names the pointer spec. Besides today's ``https://git-lfs.github.com/spec/v1``, git-lfs
still reads the two versions from before it was renamed (``https://hawser.github.com/spec/v1``
and ``http://git-media.io/v/2``), so those are pointers too.
"""

from __future__ import annotations

import os

from modelcas import untrusted
from modelcas.errors import ModelcasError, UsageError

# git-lfs's blobSizeCutoff: it never parses a larger file as a pointer.
MAX_POINTER = 1024
_SPECS = (
    b"version https://git-lfs.github.com/spec/",
    b"version https://hawser.github.com/spec/v1",
    b"version http://git-media.io/v/2",
)
# What to do about a pointer, the same wherever one is found.
HINT = "run `git lfs pull` first"
ADD_HINT = f"{HINT} (or pass --allow-lfs-pointer to store the pointer)"


def is_pointer(data: bytes) -> bool:
    """Whether ``data`` (a whole file, or its first bytes) is a git-lfs pointer."""
    if len(data) >= MAX_POINTER:
        return False
    for spec in _SPECS:
        if data.startswith(spec):
            rest = data[len(spec) :]
            # The current spec URL ends in its version (v1); the legacy ones end the line.
            if spec.endswith(b"/"):
                return True
            return rest[:1] in (b"\n", b"\r")
    return False


def file_is_pointer(path: str | os.PathLike[str]) -> bool:
    """Whether the regular file at ``path`` is a git-lfs pointer (read with a bound).

    Anything but a regular file is not a pointer; what reads it next refuses it.

    Raises:
        OSError: the file cannot be read.
    """
    try:
        with untrusted.opened(path, "a file") as (fd, st):
            if st.st_size >= MAX_POINTER:
                return False
            return is_pointer(os.read(fd, MAX_POINTER))
    except ModelcasError:
        return False


def pointer_error(what: str, hint: str = HINT) -> UsageError:
    """The one error for a pointer where weights were expected."""
    return UsageError(f"{what} is a git-lfs pointer file, not the weights it points to", hint=hint)
