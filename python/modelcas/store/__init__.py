"""The local object store: write-once, read-only objects named by their sha256.

One class, :class:`Store`, built in layers, one file each: ``layout`` (directories, format,
index records), ``read`` (lookups, verification, placing), ``write`` (adding objects),
``moving`` (``--move`` under a journal) and ``gc`` (roots and collection). ``intent`` names
the work in flight that gc respects, ``owner`` the git-style locks that need no ``flock``, and
``durable`` the fsync/rename primitives they share.
Correctness never depends on locks (they may do nothing on NFS); ``docs/store.md`` gives the
write and gc protocols and the argument why they are safe.
"""

from __future__ import annotations

import os

from modelcas.store.durable import atomic_write, fsync_dir
from modelcas.store.gc import DEFAULT_GRACE, OUTPUT, Collecting, RootReader
from modelcas.store.layout import FORMAT, default_root
from modelcas.store.read import LINK_MODES, LinkMode
from modelcas.store.records import AddResult, GcReport, ObjectInfo, Problem, Root, StoreStats
from modelcas.store.write import ObjectWriter, SourceChangedError


class Store(Collecting):
    """A content-addressed store of model weights on the local filesystem.

    Args:
        root: the store directory; created on first use. Default: :func:`default_root`.

    Raises:
        StoreVersionError: the store was made by a newer modelcas.
        StoreError: ``root`` exists and is not a modelcas store, or one of its directories
            is a symlink.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(root)
        # A `cas add --move` that died leaves a journal: every command finishes or undoes it.
        self.recover_moves()


__all__ = [
    "DEFAULT_GRACE",
    "FORMAT",
    "LINK_MODES",
    "OUTPUT",
    "AddResult",
    "GcReport",
    "LinkMode",
    "ObjectInfo",
    "ObjectWriter",
    "Problem",
    "Root",
    "RootReader",
    "SourceChangedError",
    "Store",
    "StoreStats",
    "atomic_write",
    "default_root",
    "fsync_dir",
]
