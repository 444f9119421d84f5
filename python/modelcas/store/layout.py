"""Where things live in a store, how it is opened and created, and its index records.

Layout (``docs/store.md``)::

    <root>/store.json                 {"format": 1, "shared": false}; unknown formats refuse
    <root>/CACHEDIR.TAG               backup tools skip the store
    <root>/objects/sha256/ab/<hex>    the objects, mode 0444, sharded by the first two hex digits
    <root>/index/sha256/ab/<hex>.json size, sha256, blake3 and when the object was added
    <root>/tmp/                       writes in flight and gc's staging area; nothing else
    <root>/quarantine/                objects that failed verification, moved aside by --repair
    <root>/roots/                     lockfiles and bundles whose objects gc must keep
    <root>/locks/                     advisory locks; they only save duplicated work

Every directory is checked with ``lstat`` before use: a symlink planted in place of
``objects/``, a shard, ``tmp/`` or ``quarantine/`` is refused, never followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from modelcas.digest import Digest, is_hex64
from modelcas.errors import StoreError, StoreVersionError, UsageError
from modelcas.store.durable import atomic_write, named, owned_name
from modelcas.untrusted import kind_of

FORMAT = 1
_PRIVATE_DIR = 0o755  # and the umask
_SHARED_DIR = 0o2775  # group-writable, setgid: as git's core.sharedRepository=group
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by modelcas.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_OURS = frozenset(
    {"store.json", "CACHEDIR.TAG", "objects", "index", "tmp", "quarantine", "roots", "locks"}
)


def default_root() -> Path:
    """``MODELCAS_HOME``, else ``$XDG_CACHE_HOME/modelcas``, else ``~/.cache/modelcas``."""
    if home := os.environ.get("MODELCAS_HOME"):
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "modelcas"


def check_hex(sha256: str) -> None:
    """Refuse anything but 64 lowercase hex digits.

    Raises:
        UsageError: not a sha256 digest.
    """
    if not is_hex64(sha256):
        raise UsageError(f"not a sha256 digest: {sha256!r} (expected 64 lowercase hex digits)")


class Layout:
    """The store's directories, its format marker and its index records.

    Args:
        root: the store directory; created on first use. Default: :func:`default_root`.

    Raises:
        StoreVersionError: the store was made by a newer modelcas.
        StoreError: ``root`` exists and is not a modelcas store, or one of its directories
            is a symlink or not a directory.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.objects_dir = self.root / "objects" / "sha256"
        self.index_dir = self.root / "index" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.roots_dir = self.root / "roots"
        self.locks_dir = self.root / "locks"
        self.shared = False
        self._open()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # -- opening -----------------------------------------------------------------------------

    def _directories(self) -> tuple[Path, ...]:
        return (
            self.root / "objects",
            self.objects_dir,
            self.root / "index",
            self.index_dir,
            self.tmp_dir,
            self.quarantine_dir,
            self.roots_dir,
            self.locks_dir,
        )

    def _open(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # a new store is made below
            mode = os.stat(self.root).st_mode
            if not stat.S_ISDIR(mode):
                raise StoreError(
                    f"{self.root} is {kind_of(mode)}, not a directory: a store is a directory",
                    hint="point --store / MODELCAS_HOME at a store, or at a new path",
                )
        marker = self.root / "store.json"
        try:
            meta = json.loads(marker.read_bytes())
        except FileNotFoundError:
            self._create(shared=False)
            return
        except (OSError, ValueError, RecursionError) as e:  # (nested too deeply: not ours)
            raise StoreError(
                f"{marker} is unreadable: {e}",
                hint="point --store / MODELCAS_HOME at a modelcas store, or move this one away",
            ) from e
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != FORMAT or isinstance(fmt, bool):
            raise StoreVersionError(
                f"the store at {self.root} has format {fmt!r}; this modelcas knows format {FORMAT}",
                hint="upgrade modelcas (pip install -U modelcas), or use another --store",
            )
        self.shared = meta.get("shared") is True
        for d in self._directories():
            self.checked_dir(d, create=True)

    def _create(self, *, shared: bool) -> None:
        # Another process may be creating the store right now: only foreign entries refuse.
        if self.root.is_dir() and any(p.name not in _OURS for p in self.root.iterdir()):
            raise StoreError(
                f"{self.root} exists, is not empty, and is not a modelcas store",
                hint="choose an empty or new directory for --store / MODELCAS_HOME",
            )
        self.shared = shared
        with named(self.root):
            self.root.mkdir(mode=self._dir_mode, parents=True, exist_ok=True)
        for d in self._directories():
            self.checked_dir(d, create=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, _CACHEDIR_TAG.encode(), self.tmp_dir, self._file_mode)
        # Another process may create the store at the same moment; both write the same bytes.
        self._write_marker()

    def _write_marker(self) -> None:
        meta = {"format": FORMAT, "shared": self.shared}
        data = json.dumps(meta, sort_keys=True).encode() + b"\n"
        atomic_write(self.root / "store.json", data, self.tmp_dir, self._file_mode)

    def make_shared(self) -> None:
        """Make the store usable by its group: directories 02775 (setgid).

        Recorded in ``store.json``, so that directories made later get the same mode.
        """
        self.shared = True
        for d in (self.root, *self._directories()):
            with named(d):
                os.chmod(d, _SHARED_DIR)
        for parent in (self.objects_dir, self.index_dir):
            for shard in parent.iterdir():
                self.checked_dir(shard)
                with named(shard):
                    os.chmod(shard, _SHARED_DIR)
        self._write_marker()

    @property
    def _dir_mode(self) -> int:
        return _SHARED_DIR if self.shared else _PRIVATE_DIR

    @property
    def _file_mode(self) -> int:
        return 0o664 if self.shared else 0o644

    def checked_dir(self, path: Path, *, create: bool = False) -> Path:
        """``path`` if it is a real directory (never a symlink), created when asked.

        Raises:
            StoreError: it is a symlink or something else than a directory (refused, not
                followed), or it is missing and ``create`` is false.
        """
        try:
            st = path.lstat()
        except FileNotFoundError:
            if not create:
                raise
            with named(path):
                try:
                    path.mkdir(mode=self._dir_mode)
                except FileExistsError:
                    return self.checked_dir(path)  # made by a concurrent process
                if self.shared:
                    os.chmod(path, _SHARED_DIR)  # umask may have cleared group bits
            return path
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(
                f"{path} is {kind_of(st.st_mode)}, not a directory; refused, not followed",
                hint="remove it; the store recreates its directories",
            )
        return path

    # -- paths ---------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """Where the object with this sha256 lives (whether or not it exists)."""
        check_hex(sha256)
        return self.objects_dir / sha256[:2] / sha256

    def shard(self, sha256: str, *, create: bool = False) -> Path:
        """The object's shard directory, checked (see :meth:`checked_dir`)."""
        return self.checked_dir(self.object_path(sha256).parent, create=create)

    def index_path(self, sha256: str) -> Path:
        """Where an object's index record lives."""
        return self.index_dir / sha256[:2] / f"{sha256}.json"

    def temp_path(self) -> Path:
        """A fresh name in the store's temporary area (same filesystem as the objects)."""
        return self.checked_dir(self.tmp_dir, create=True) / f"{owned_name()}.partial"

    # -- index records -------------------------------------------------------------------

    def read_index(self, sha256: str) -> tuple[Digest, float] | None:
        """The recorded digest and time added, or None when there is no usable record."""
        try:
            raw = json.loads(self.index_path(sha256).read_bytes())
            digest = Digest(sha256, int(raw["size"]), raw.get("blake3"))
            return digest, float(raw["added"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def write_index(self, digest: Digest, added: float) -> None:
        """Record an object's size, blake3 and time added (atomically)."""
        path = self.index_path(digest.sha256)
        self.checked_dir(path.parent, create=True)
        record = {
            "sha256": digest.sha256,
            "size": digest.size,
            "blake3": digest.blake3,
            "added": added,
        }
        data = json.dumps(record, sort_keys=True).encode()
        atomic_write(path, data, self.tmp_dir, self._file_mode)

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An advisory lock that only saves duplicated work; correctness never needs it.

        ``MODELCAS_LOCKS=off`` skips it, for filesystems where flock misbehaves.
        """
        if os.environ.get("MODELCAS_LOCKS", "").lower() in ("off", "0", "no"):
            yield
            return
        from filelock import FileLock  # noqa: PLC0415 (import only when a write needs it)

        self.checked_dir(self.locks_dir, create=True)
        with FileLock(self.locks_dir / f"{name}.lock"):
            yield
