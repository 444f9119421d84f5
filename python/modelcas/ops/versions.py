"""Whole versions out of the store: a version's named directory, and ``cas get -o DIR/``.

A reference names one file (``cas path``, ``cas get -o FILE``) through the one resolver,
:func:`modelcas.ops.resolve.resolve`. A pinned version with several files (an HF snapshot: a
``config.json`` beside sharded weights) is also used whole: its named view is the directory a
framework's ``from_pretrained`` takes, and ``cas get NAME@V -o DIR/`` writes every file under
its pinned name, as ``hf download --local-dir`` does, with the same ``--include/--exclude``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from modelcas.digest import Digest
from modelcas.errors import NotPinnedError, UsageError
from modelcas.hashing import Progress
from modelcas.store import LinkMode, Store

if TYPE_CHECKING:
    from modelcas.lockfile import LockedVersion
    from modelcas.registry import Registry

# NAME[@VERSION], as the lockfile spells names: no ':', '/' or '#' (addresses, URLs, bundles).
_LOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(?:@[^\s:/#@]+)?")


def is_lock_name(ref: str) -> bool:
    """Whether a reference names a pinned version (``NAME`` or ``NAME@VERSION``)."""
    return bool(_LOCK_NAME.fullmatch(ref))


@dataclass(frozen=True, slots=True)
class NamedPath:
    """What ``cas path`` prints: one file, or a whole version's directory."""

    path: Path  # ends in the pinned file name; a version's view for several files
    label: str  # "det@v1 best.pt", or "det@v1" for a directory
    digest: Digest | None  # None for a directory
    directory: bool = False


def path_of(
    ref: str,
    *,
    store: Store,
    lock: str | os.PathLike[str] | None = None,
    file: str | None = None,
    check_requires: bool = True,
    deep: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
) -> NamedPath:
    """The verified, named local path of a reference; a version's directory when it has several.

    Args:
        ref: any reference :func:`~modelcas.ops.resolve.resolve` takes.
        store: the store.
        lock: the lockfile for names; default the nearest ``cas.lock``.
        file: which file of a version (default: its only file, or the whole directory).
        check_requires: ``False`` opts out of the compatibility check.
        deep: recompute sha256 too.
        verify: ``False`` leaves a single file's bytes to the caller (who verifies them with
            its own progress bar); a whole version's directory is always verified here.
        progress: told of bytes fetched (and verified, with ``verify``).

    Returns:
        The path, ending in its pinned name (a bare address has none: the object's path).

    Raises:
        As :func:`~modelcas.ops.resolve.resolve`.
    """
    from modelcas.ops.resolve import resolve  # noqa: PLC0415

    if file is None and is_lock_name(ref):
        registry, name, version, entry = _version(ref, store, lock, check_requires)
        if len(entry.files) > 1:
            folder = _fetched(registry, name, version, entry, list(entry.files), deep=deep)
            return NamedPath(folder, f"{name}@{version}", None, directory=True)
    found = resolve(
        ref,
        store=store,
        lock=lock,
        file=file,
        check_requires=check_requires,
        verify=verify,
        progress=progress,
    )
    if deep and verify:
        store.path(found.digest.sha256, deep=True, progress=progress)
    return NamedPath(found.shown, found.label, found.digest)


@dataclass(frozen=True, slots=True)
class Placed:
    """One file written by :func:`get`."""

    name: str  # its pinned name (the path below DEST)
    path: Path
    digest: Digest
    mode: LinkMode


@dataclass(frozen=True, slots=True)
class GetResult:
    """What :func:`get` wrote, and what the globs left out."""

    label: str
    files: list[Placed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_directory_target(dest: str | os.PathLike[str]) -> bool:
    """Whether ``-o DEST`` names a directory: it ends in ``/`` or is an existing directory.

    Raises:
        UsageError: ``dest`` is empty (it would silently mean the current directory).
    """
    text = os.fsdecode(dest)
    if not text:
        raise UsageError("-o is empty: name a file, or a directory ending in /")
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """``hf download``'s filter: kept if it matches an include (or none is given) and no exclude.

    Patterns are ``fnmatch`` globs on the whole path (``*`` crosses ``/``); a pattern that
    ends in ``/`` means everything below that folder.
    """

    def any_of(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p + "*" if p.endswith("/") else p) for p in patterns)

    return (not include or any_of(include)) and not any_of(exclude)


def get(
    ref: str,
    dest: str | os.PathLike[str],
    *,
    store: Store,
    lock: str | os.PathLike[str] | None = None,
    file: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    link: LinkMode = "auto",
    force: bool = False,
    check_requires: bool = True,
) -> GetResult:
    """Write every file of a version (or the one a reference names) into the directory ``dest``.

    Every file is fetched and verified before the first one is placed; each lands at
    ``dest/<pinned name>`` (folders made as needed) by ``link`` (see ``Store.place``).

    Args:
        ref: ``NAME[@VERSION]``, or any reference naming one file with a name (a bundle key,
            ``hf://``); a bare ``sha256:`` address has no name.
        dest: the directory.
        store: the store.
        lock: the lockfile for names.
        file: only this file of the version.
        include: keep only files matching one of these globs.
        exclude: drop files matching one of these globs.
        link: how to place each file.
        force: replace files that exist with other content.
        check_requires: ``False`` opts out of the compatibility check.

    Returns:
        The files placed, and the names the globs left out.

    Raises:
        UsageError: no file is left after the globs, or a bare address.
        FileExistsError: a destination exists with other content (without ``force``).
        As :func:`~modelcas.ops.resolve.resolve`.
    """
    from modelcas.ops.resolve import resolve  # noqa: PLC0415

    folder = Path(dest)
    version: tuple[Registry, str, str, LockedVersion] | None = None
    if is_lock_name(ref):
        version = _version(ref, store, lock, check_requires)
        _, name, chosen, entry = version
        label = f"{name}@{chosen}"
        if file is not None and file not in entry.files:
            raise NotPinnedError(f"{label} has no file {file!r} (files: {', '.join(entry.files)})")
        digests = {n: d for n, d in sorted(entry.files.items()) if file in (None, n)}
    else:
        found = resolve(ref, store=store, lock=lock, file=file, check_requires=check_requires)
        if found.named is None:
            raise UsageError(
                f"{ref} is an address with no file name; give -o a file name, not a directory"
            )
        label, digests = found.label, {found.filename: found.digest}
    wanted = [n for n in digests if matches(n, include, exclude)]
    skipped = sorted(set(digests) - set(wanted))
    if not wanted:
        raise UsageError(
            f"no file of {label} matches --include/--exclude (files: {', '.join(sorted(digests))})",
            hint="check the globs: they match the whole pinned name, e.g. '*.safetensors'",
        )
    if version is not None:
        _fetched(*version, wanted)  # every file verified before the first is placed
    for n in wanted:
        _check_beneath(folder, n)
    # What is already there first: other bytes in any file's way place nothing at all (the
    # same bytes are kept as they are, and not placed again).
    kept: dict[str, LinkMode] = {}
    if not force:
        for n in wanted:
            if os.path.lexists(folder / n):
                kept[n] = store.place(digests[n].sha256, folder / n, link=link, verify=False)
    result = GetResult(label, skipped=skipped)
    for n in wanted:
        target = folder / n
        mode = kept.get(n) or store.place(
            digests[n].sha256, target, link=link, force=force, verify=False
        )
        result.files.append(Placed(n, target, digests[n], mode))
    return result


def _check_beneath(folder: Path, name: str) -> None:
    """Refuse to place ``name`` where a folder on its way below ``folder`` is not one.

    A link there (a checked-out repo may hold ``out/tokenizer -> ~/.ssh``) would send a
    pinned file outside the directory asked for; a file there would fail halfway through.
    ``folder`` itself may be a link: the user named it.

    Raises:
        UsageError: a link or a non-folder on the way.
    """
    here = folder
    for part in PurePosixPath(name).parts[:-1]:
        here = here / part
        try:
            mode = here.lstat().st_mode
        except FileNotFoundError:
            return  # made by the placing, as a folder
        if stat.S_ISLNK(mode):
            raise UsageError(
                f"{here} is a symbolic link; cas get -o DIR/ writes only inside DIR, never "
                "through a link below it",
                hint="remove the link, or give -o another directory",
            )
        if not stat.S_ISDIR(mode):
            raise UsageError(
                f"{here} is not a folder, and {name} goes below it; nothing was placed",
                hint="move it away, or give -o another directory",
            )


def _version(
    ref: str, store: Store, lock: str | os.PathLike[str] | None, check_requires: bool
) -> tuple[Registry, str, str, LockedVersion]:
    from modelcas.lockfile import split_ref  # noqa: PLC0415
    from modelcas.registry import open_lock  # noqa: PLC0415

    registry = open_lock(lock, store=store)
    registry.check_requires = check_requires
    name, version = split_ref(ref)
    chosen, entry = registry.resolve(name, version)
    return registry, name, chosen, entry


def _fetched(
    registry: Registry,
    name: str,
    version: str,
    entry: LockedVersion,
    names: list[str],
    *,
    deep: bool = False,
) -> Path:
    """Fetch and verify the named files of a version; return the version's view."""
    from modelcas.registry import Pin  # noqa: PLC0415
    from modelcas.store import views  # noqa: PLC0415

    for n in names:
        registry.fetch(Pin(name, version, n, entry.files[n]))
        if deep:
            registry.store.path(entry.files[n].sha256, deep=True)
    return views.view(registry.store, entry.files)
