"""Named views: every path handed out for a pinned file ends in its pinned name.

A view is a read-only directory in the store whose entries are relative symlinks to verified
objects, as the Hugging Face cache's ``snapshots/<commit>/`` (``docs/store.md``)::

    <root>/views/<key>/best.pt                -> ../../objects/sha256/79/794f...
    <root>/views/<key>/sub/model.safetensors  -> ../../../objects/sha256/0f/0ffa...

``key`` is the sha256 of the listing (each file's name, sha256 and size), so one directory
holds one version's files whatever its name: two lockfiles that pin ``det@v1`` to different
bytes get two views, and the same bytes under the same names share one. A view costs a few
symlinks: no copy, no second name on an inode, no hashing (callers verify the objects; a view
only names them).

Views are derived: never gc roots, checked each time one is handed out (a missing, extra or
retargeted entry is rebuilt), and removed by gc once no object they name is left. An entry
may dangle meanwhile: a version whose other files were never fetched, or a bundle's view
before its members are ingested; the paths already handed out for the present objects must
keep working through gc, so one dangling entry is no reason to remove a view. They are
built beside their final name (``views/.<owner>.building``), made read-only (directories
``0555``), then renamed into place, so a reader sees a whole view or none.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from modelcas.digest import Digest
from modelcas.errors import StoreError, UsageError
from modelcas.store.durable import named, owned_name, writer_alive
from modelcas.store.layout import Layout, check_hex

VIEWS = "views"
_FORMAT = b"modelcas-view/1\n"
_READ_ONLY_DIR = 0o555
_BUILDING = ".building"
_STALE = ".stale"


def listing_key(files: Mapping[str, Digest]) -> str:
    """The name of a listing's view: sha256 over each file's name, sha256 and size, sorted."""
    h = hashlib.sha256(_FORMAT)
    for name in sorted(files):
        d = files[name]
        h.update(json.dumps([name, d.sha256, d.size], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def _name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character"
    if "\\" in name or name.startswith("/"):
        return "is not a relative POSIX path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' part"
    return None


def _targets(files: Mapping[str, Digest]) -> dict[str, str]:
    """Each entry's symlink text, relative to where the entry lives in the view.

    Raises:
        UsageError: a name is not a relative path, or is both a file and a folder.
    """
    out: dict[str, str] = {}
    for name, d in files.items():
        if (problem := _name_problem(name)) is not None:
            raise UsageError(f"cannot name a file {name!r} in a view: it {problem}")
        check_hex(d.sha256)
        up = "../" * (name.count("/") + 2)
        out[name] = f"{up}objects/sha256/{d.sha256[:2]}/{d.sha256}"
    folders = {name.rsplit("/", 1)[0] for name in out if "/" in name}
    folders |= {f.rsplit("/", i)[0] for f in set(folders) for i in range(f.count("/") + 1)}
    if clash := sorted(folders & out.keys()):
        raise UsageError(f"cannot name {clash[0]!r} in a view: it is both a file and a folder")
    return out


def _entries(view: Path) -> dict[str, str] | None:
    """What a view holds (entry name to symlink text), or None when it is not a clean view.

    Anything but directories and symlinks (a file written into it, a device) is not clean.
    """
    found: dict[str, str] = {}
    stack = [("", str(view))]
    while stack:
        prefix, folder = stack.pop()
        try:
            listing = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return None
        for entry in listing:
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                found[rel] = os.readlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append((f"{rel}/", entry.path))
            else:
                return None
    return found


def _intact(view: Path, targets: Mapping[str, str]) -> bool:
    try:
        if not stat.S_ISDIR(view.lstat().st_mode):
            return False
    except FileNotFoundError:
        return False
    return _entries(view) == targets


def _build(folder: Path, targets: Mapping[str, str]) -> None:
    """Make the view in ``folder`` (a fresh name), then make every directory read-only."""
    with named(folder):
        folder.mkdir(mode=0o700)
    made = [folder]
    for name in sorted(targets):
        entry = folder / name
        if not entry.parent.is_dir():
            for parent in reversed(entry.relative_to(folder).parents[:-1]):
                d = folder / parent
                if not d.is_dir():
                    d.mkdir(mode=0o700)
                    made.append(d)
        with named(entry):
            os.symlink(targets[name], entry)
    # Deepest first: a read-only parent no longer lets its children be changed.
    for d in sorted(made, key=lambda p: len(p.parts), reverse=True):
        os.chmod(d, _READ_ONLY_DIR)


def remove_tree(path: Path) -> None:
    """Delete a view (or a leftover of one) that may be read-only; errors are ignored.

    Only this process's own views can be made writable again; someone else's stays for
    its owner's gc.
    """
    with contextlib.suppress(OSError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return
    for d, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(d, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _set_aside(view: Path) -> Path | None:
    """Rename a view aside in its own folder (which needs no write access to the view)."""
    aside = view.parent / f".{owned_name()}{_STALE}"
    try:
        os.rename(view, aside)
    except FileNotFoundError:
        return None
    return aside


def view(store: Layout, files: Mapping[str, Digest]) -> Path:
    """The directory that names these files, built (or rebuilt) when needed.

    Args:
        store: the store holding the objects; they are not read or verified here.
        files: file name (a relative POSIX path) to the object's digest.

    Returns:
        ``<root>/views/<key>``; ``view / name`` is a symlink to the object of ``name``.

    Raises:
        UsageError: no files, or a name that cannot be a path.
        StoreError: the view cannot be written (a read-only store without it).
    """
    if not files:
        raise UsageError("a view needs at least one file")
    targets = _targets(files)
    folder = store.checked_dir(store.root / VIEWS, create=True)
    final = folder / listing_key(files)
    if _intact(final, targets):
        return final
    try:
        return _replace(folder, final, targets)
    except PermissionError as e:
        raise StoreError(
            f"cannot write the named view {final} in the store at {store.root}: {e.strerror or e}",
            hint="use a store you can write (--store / MODELCAS_HOME), or have its owner run "
            "`cas path` once for this version",
        ) from None


def _replace(folder: Path, final: Path, targets: Mapping[str, str]) -> Path:
    for _ in range(8):
        building = folder / f".{owned_name()}{_BUILDING}"
        try:
            _build(building, targets)
            if _intact(final, targets):  # built by another process meanwhile
                return final
            if os.path.lexists(final) and (aside := _set_aside(final)) is not None:
                remove_tree(aside)  # tampered with, or a leftover: never a good view
            try:
                os.rename(building, final)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                continue  # another process put one there first: check it on the next turn
            return final
        finally:
            if os.path.lexists(building):
                remove_tree(building)
    if _intact(final, targets):
        return final
    raise StoreError(f"the named view {final} keeps changing while it is built")


def file(store: Layout, files: Mapping[str, Digest], name: str) -> Path:
    """The named path of one file of a listing: ``view(store, files) / name``.

    Raises:
        UsageError: ``name`` is not one of ``files``; see :func:`view`.
    """
    if name not in files:
        raise UsageError(f"{name!r} is not one of the files named ({', '.join(sorted(files))})")
    return view(store, files) / name


def _dead(path: Path) -> bool:
    """Whether no entry of the view names an object that is there (or it is not a clean view).

    Not "one entry dangles": a path handed out for a present object of a partly fetched
    version lives in the same view, and must survive gc.
    """
    entries = _entries(path)
    if not entries:
        return True
    return not any(
        (path / name).parent.joinpath(target).exists() for name, target in entries.items()
    )


def collect(store: Layout, cutoff: float, *, dry_run: bool = False) -> int:
    """Remove views whose objects are all gone, and leftovers of interrupted builds.

    A view is derived: one that is removed is rebuilt by its next use. Each candidate is
    renamed aside first and checked again, and put back when one of its objects is there
    again (a reader fetched it meanwhile and may have handed the view out).

    Args:
        store: the store.
        cutoff: leftovers of builds changed after this time (or by a live process) stay.
        dry_run: count only.

    Returns:
        How many views and leftovers were (or would be) removed.
    """
    folder = store.root / VIEWS
    try:
        store.checked_dir(folder)
        listing = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, StoreError):
        return 0
    removed = 0
    for entry in listing:
        path = Path(entry.path)
        if entry.name.endswith((_BUILDING, _STALE)):
            if writer_alive(entry.name) and entry.name.endswith(_BUILDING):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.name.endswith(_BUILDING) and path.lstat().st_mtime > cutoff:
                    continue
            removed += 1
            if not dry_run:
                remove_tree(path)
            continue
        if not _dead(path):
            continue
        removed += 1
        if dry_run:
            continue
        aside = _set_aside(path)
        if aside is None:
            continue
        if _dead(aside):
            remove_tree(aside)
            continue
        try:  # complete again: put it back, unless a new one took its place
            os.rename(aside, path)
            removed -= 1
        except OSError:
            remove_tree(aside)
    return removed
