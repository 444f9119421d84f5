"""Garbage collection with the roots every kind of file can be: lockfiles and bundles."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from modelcas.store import DEFAULT_GRACE, GcReport, RootReader, Store


def _bundle(path: Path) -> set[str]:
    from modelcas import bundle  # noqa: PLC0415 (the zip reader only when a bundle is a root)

    # A bundle's members have no remote source: the bundle file is where they come from.
    return bundle.references(path)


def _lockfile(path: Path) -> Mapping[str, bool]:
    from modelcas import lockfile  # noqa: PLC0415 (YAML only when gc runs)

    return lockfile.pinned_sources(lockfile.Lockfile.load(path))


READERS: Mapping[str, RootReader] = {"lockfile": _lockfile, "bundle": _bundle}


def _catalog(store: Store) -> Callable[[], set[str]] | None:
    """A directory remote's catalog, when the store is one (``cas push`` wrote into it)."""
    from modelcas.remotes.directory import CATALOG, catalog_references  # noqa: PLC0415

    if not (store.root / CATALOG).is_dir():
        return None
    return lambda: catalog_references(store.root)


def collect(
    store: Store,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    forget: Sequence[str | os.PathLike[str]] = (),
) -> GcReport:
    """Delete what no registered lockfile or bundle references (see :meth:`Store.gc`).

    Args:
        store: the store.
        grace: keep unreferenced objects younger than this many seconds.
        dry_run: report only.
        forget: roots whose file is gone to forget first, with what they pinned, so that
            their objects go too (``cas gc --forget PATH``).

    A store that is also a directory remote keeps every object its ``catalog/`` names.

    Raises:
        StoreError: a root or a catalog entry cannot be read; nothing was deleted.
        UsageError: a path to forget is not a registered root, or still exists.
    """
    forgotten = [store.forget_root(p, dry_run=dry_run) for p in forget]
    # A dry run leaves the roots in place; gc then reads them as forgotten.
    named = {os.path.normpath(p) for f in forgotten for p in (f, f.resolve())}
    report = store.gc(READERS, grace=grace, dry_run=dry_run, also=_catalog(store), forgetting=named)
    report.forgotten = forgotten
    return report
