"""Writing pins so that gc can never take their objects (``docs/store.md``, steps A1-A3).

Every workflow that writes a pin (add, publish to the Hub or a registry, pull) goes through
:func:`write_pins`: claim the objects (gc keeps them while this process runs) and check them
in place, register the lockfile as a root, write the pin (``lockfile.edit``: a git-style
``O_EXCL`` lock, no ``flock``), register again, then check each pinned object and store it
again if a concurrent gc took it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from modelcas.digest import Digest
from modelcas.store import Store

if TYPE_CHECKING:
    from modelcas.lockfile import Lockfile

T = TypeVar("T")
Refill = Callable[[Digest], object]


def write_pins(
    store: Store,
    path: str | os.PathLike[str],
    change: Callable[[Lockfile], T],
    objects: Iterable[Digest],
    refill: Refill,
) -> T:
    """Apply ``change`` to the lockfile at ``path``, safely against a concurrent gc.

    Args:
        store: the store holding the pinned objects.
        path: the lockfile (created if missing).
        change: edits the lockfile (under its lock); its result is returned.
        objects: the digests the change pins.
        refill: stores one of them again, when a gc took it before the pin was seen.

    Returns:
        What ``change`` returned.
    """
    from modelcas.lockfile import (  # noqa: PLC0415 (YAML only when pinning)
        Lockfile,
        edit,
        pinned_sources,
    )

    lock_path = Path(path)
    digests = list(objects)
    with store.claim(d.sha256 for d in digests):
        # Claimed, then checked in place, before the pin: a reader of the new pin never finds
        # its object missing (docs/store.md, A0').
        for digest in digests:
            store.ensure_present(digest, functools.partial(refill, digest))
        store.register_root(lock_path, "lockfile")
        with edit(lock_path) as lock:
            result = change(lock)
        # Again, now that the file exists: a gc that found it missing may have forgotten it.
        store.register_root(lock_path, "lockfile")
        # What has no remote is the only copy: kept even if this lockfile's path vanishes.
        store.remember(lock_path, lambda p: pinned_sources(Lockfile.load(p)))
        for digest in digests:
            store.ensure_present(digest, functools.partial(refill, digest))
    return result
