"""Garbage collection with the roots every kind of file can be: lockfiles and bundles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from modelcas.store import DEFAULT_GRACE, GcReport, RootReader, Store


def _bundle(path: Path) -> set[str]:
    from modelcas import bundle  # noqa: PLC0415 (the zip reader only when a bundle is a root)

    return bundle.references(path)


def _lockfile(path: Path) -> set[str]:
    from modelcas import lockfile  # noqa: PLC0415 (YAML only when gc runs)

    return lockfile.references(path)


READERS: Mapping[str, RootReader] = {"lockfile": _lockfile, "bundle": _bundle}


def collect(store: Store, *, grace: float = DEFAULT_GRACE, dry_run: bool = False) -> GcReport:
    """Delete what no registered lockfile or bundle references (see :meth:`Store.gc`).

    Raises:
        StoreError: a root cannot be read; nothing was deleted.
    """
    return store.gc(READERS, grace=grace, dry_run=dry_run)
