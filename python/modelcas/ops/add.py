"""``cas add``: put files into the store and, optionally, pin them as a model version.

The order is what keeps a pin safe from a concurrent gc (``docs/store.md``): every check that
can fail runs before any byte is stored, the lockfile is registered as a gc root before the
pin is written into it, and each object is checked again once the pin is durable. With
``move`` the sources are unlinked last, only once all of that succeeded; a failure gives every
file back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelcas import lfs
from modelcas.digest import Digest
from modelcas.errors import LockfileError, UsageError
from modelcas.hashing import Progress
from modelcas.pinning import write_pins
from modelcas.store import AddResult, Store

if TYPE_CHECKING:
    from modelcas.lockfile import Lockfile


@dataclass(frozen=True, slots=True)
class PinRequest:
    """Pin the added files as ``name@version`` in a lockfile."""

    name: str
    version: str
    requires: str | None = None
    lock: Path | None = None  # default: the nearest cas.lock, else ./cas.lock
    set_latest: bool = True
    force: bool = False
    pre: bool = False  # let a pre-release become latest
    package: str | None = None  # whose version `requires` is checked; default: pyproject's


@dataclass(frozen=True, slots=True)
class AddedFile:
    """One file added: where it came from, its digest, and whether the store had it."""

    source: Path
    digest: Digest
    existed: bool
    path: Path


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """What ``add`` did."""

    files: list[AddedFile]
    lock: Path | None = None
    changed: bool = False
    latest: str | None = None
    moved: list[Path] = field(default_factory=list)
    version: str | None = None  # as pinned: the first spelling of a PEP 440-equal version


def expand(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files, with directories walked (symlinks inside them are skipped).

    Raises:
        FileNotFoundError: a path does not exist.
        UsageError: a directory holds no file.
    """
    return [f for f, _ in listing(paths)]


# Bookkeeping of tools, not part of a model's layout (as `hf upload` leaves them out too).
_NOT_LAYOUT = (".git", ".cache/huggingface")


def listing(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """Each file and the name it is pinned under.

    A file given by itself is pinned under its own name; a directory keeps its layout: each
    file under its path below the directory (an HF snapshot's ``config.json`` beside its
    shards), leaving out ``.git/`` and ``.cache/huggingface/``. A link to a file counts as
    that file (the Hugging Face cache's ``snapshots/<commit>/`` is all links into ``blobs/``).

    Raises:
        FileNotFoundError: a path does not exist.
        OSError: a folder below a directory cannot be listed (nothing is left out in silence).
        UsageError: a directory holds no file, or something that is not one (a link to a
            folder or to nothing, a FIFO).
    """
    out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted((f, f.relative_to(p).as_posix()) for f in _entries(p))
            kept = [(f, n) for f, n in found if not any(n.startswith(x + "/") for x in _NOT_LAYOUT)]
            # A link to a file is its file (an HF cache snapshot is all links into blobs/);
            # anything else is refused, never left out in silence.
            for f, _ in kept:
                if not f.is_file():
                    what = "a link to a folder" if f.is_dir() else "not a file"
                    what = "a link to nothing" if not f.exists() else what
                    raise UsageError(
                        f"{f} is {what}; a version's files are regular files: nothing was added",
                        hint="remove it, or add the files you mean one by one",
                    )
            if not kept:
                raise UsageError(f"{p} holds no file: an empty directory is not added")
            out.extend(kept)
        elif not os.path.lexists(p):
            raise FileNotFoundError(2, "No such file or directory", str(p))
        else:
            out.append((p, p.name))
    return out


def _entries(top: Path) -> Iterator[Path]:
    """Everything below ``top`` but folders (a link to one included, not followed).

    A folder that cannot be listed is an error: ``Path.rglob`` leaves it out in silence, and
    a version pinned without its files would look complete.

    Raises:
        OSError: a folder cannot be listed.
    """

    def fail(e: OSError) -> None:
        raise e

    for here, dirs, names in os.walk(top, onerror=fail):
        base = Path(here)
        yield from (base / n for n in names)
        yield from (base / d for d in dirs if (base / d).is_symlink())


def add(
    paths: Sequence[str | os.PathLike[str]],
    store: Store,
    *,
    move: bool = False,
    pin: PinRequest | None = None,
    allow_lfs_pointer: bool = False,
    progress: Progress | None = None,
) -> AddOutcome:
    """Add files to the store, and pin them when ``pin`` is given.

    Args:
        paths: files, or directories to walk.
        store: the store.
        move: take the files instead of copying them; needs ``pin`` (an unpinned object is
            garbage to gc, and the moved file would be the user's only copy).
        pin: the model version to pin the files as.
        allow_lfs_pointer: store git-lfs pointer files as they are (refused otherwise).
        progress: called with byte counts.

    Returns:
        The files added, and the pin.

    Raises:
        UsageError: a bad name, version, range, duplicate file name, or ``move`` without a
            pin; nothing was stored or moved.
        LockfileError: the lockfile is malformed, or the version is pinned to other content
            (without ``force``); every moved file is given back.
        IntegrityError: a source changed while it was read.
        StoreError, OSError: the store could not be written; nothing was moved.
    """
    if move and pin is None:
        raise UsageError(
            "--move needs --name and --version: an unpinned object is removed by `cas gc`, "
            "and the moved file would be your only copy",
            hint="pin it (cas add --move FILE --name MODEL --version V), or add a copy",
        )
    named_files = listing(paths)
    files = [f for f, _ in named_files]
    for f in files:
        refuse_lfs_pointer(f, allow=allow_lfs_pointer)
    lock_path, package = _check_pin(pin, named_files) if pin is not None else (None, None)
    results: list[AddResult] = []
    changed, latest, version = False, None, None
    try:
        for f in files:
            results.append(store.ingest(f, take=move, progress=progress, lock=lock_path))
        if pin is not None and lock_path is not None:
            # Claimed, then checked in place, before the pin: gc keeps a claimed object, so a
            # reader of the new pin never finds its object missing (docs/store.md, A0').
            names = [n for _, n in named_files]
            with store.claim(r.info.digest.sha256 for r in results):
                results = [store.ensure(r, take=move) for r in results]
                changed, latest, version = write_pins(
                    store,
                    lock_path,
                    lambda lock: _pin(lock, pin, package, results, names),
                    [],  # checked just below, where a source is at hand to store again
                    lambda _: None,
                )
                results = [store.ensure(r, take=move) for r in results]
                if move:
                    _see_pins(lock_path, pin, results, names)
        else:
            results = [store.ensure(r, take=move) for r in results]
    except BaseException:
        for r in results:
            store.detach(r)
        raise
    if move:
        for r in results:
            store.release(r)
    return AddOutcome(
        [AddedFile(r.source, r.info.digest, r.existed, r.info.path) for r in results],
        lock_path,
        changed,
        latest,
        [r.source for r in results] if move else [],
        version,
    )


def refuse_lfs_pointer(path: Path, *, allow: bool = False) -> None:
    """Refuse a git-lfs pointer file where weights are expected (forgot `git lfs pull`).

    The file is read without blocking and with a bound (``modelcas.lfs``): a FIFO or device
    named as a source is refused later, by the store, never waited on here.

    Raises:
        UsageError: ``path`` is a pointer (any pointer spec version) and ``allow`` is false.
    """
    if not allow and lfs.file_is_pointer(path):
        raise lfs.pointer_error(str(path), lfs.ADD_HINT)


def _check_pin(pin: PinRequest, files: list[tuple[Path, str]]) -> tuple[Path, str | None]:
    """Every check that needs no bytes: name, version, range, duplicates, the lockfile.

    Returns the lockfile, and the package to record in it when ``requires`` is given.
    """
    from modelcas import lockfile  # noqa: PLC0415 (YAML and packaging only when pinning)

    lockfile.check_name(pin.name)
    lockfile.parse_version(pin.version, f"{pin.name}@{pin.version}")
    if pin.requires is not None:
        lockfile.parse_requires(pin.requires, "--requires")
    if pin.package is not None:
        lockfile.check_package(pin.package, "--package")
    seen: dict[str, Path] = {}
    for f, name in files:
        if name in seen:
            raise UsageError(
                f"two files named {name!r} in {pin.name}@{pin.version}: {seen[name]} and "
                f"{f}; nothing was added",
                hint="a version's files are pinned by name: add them as separate models",
            )
        seen[name] = f
        lockfile.check_file_name(name, f"{pin.name}@{pin.version}")
    path = lockfile.locate(pin.lock, must_exist=False)
    lock = lockfile.Lockfile.load(path) if path.exists() else lockfile.Lockfile(path=path)
    if not pin.force:
        lock.check_repin(pin.name, pin.version, set(seen))
    package = pin.package or lock.package
    if pin.requires is not None and package is None:
        package = lockfile.project_name(path)
        if package is None:
            raise UsageError(
                f"--requires {pin.requires!r} needs to know whose version to check: {path} has "
                f"no `package:` and no pyproject.toml is above it",
                hint="pass --package DIST (the distribution name, e.g. structflo-cser)",
            )
    return path, package


def _see_pins(lock_path: Path, pin: PinRequest, results: list[AddResult], names: list[str]) -> None:
    """Read the lockfile back and find every pin in it, before a source is destroyed.

    Raises:
        LockfileError: a pin is not there (someone rewrote the file meanwhile); the caller
            gives every file back.
    """
    from modelcas.lockfile import Lockfile  # noqa: PLC0415

    lock = Lockfile.load(lock_path)
    model = lock.models.get(pin.name)
    # The pin may sit under an equal spelling pinned before (PEP 440: 1.0.0 is v1.0).
    found = model.find(pin.version) if model is not None else None
    entry = model.versions[found] if model is not None and found is not None else None
    files = entry.files if entry is not None else {}
    for r, name in zip(results, names, strict=True):
        if files.get(name) != r.info.digest:
            raise LockfileError(
                f"{lock_path}: {pin.name}@{pin.version} {name} is not pinned to "
                f"sha256:{r.info.digest.sha256} when read back; another writer replaced the "
                f"file; every moved file was given back",
                hint="run the command again once nothing else writes that lockfile",
            )


def _pin(
    lock: Lockfile,
    pin: PinRequest,
    package: str | None,
    results: list[AddResult],
    names: list[str],
) -> tuple[bool, str | None, str | None]:
    changed = lock.pin(
        pin.name,
        pin.version,
        {name: r.info.digest for name, r in zip(names, results, strict=True)},
        requires=pin.requires,
        set_latest=pin.set_latest,
        force=pin.force,
        pre=pin.pre,
    )
    if package is not None and lock.package != package:
        lock.package = package
        changed = True
    model = lock.models[pin.name]
    return changed, model.latest, model.find(pin.version)
