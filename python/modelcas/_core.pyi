# Hand-written stubs for the Rust extension (rust/py.rs). Checked by stubtest in CI.
# Results are typed, frozen records with named getters: no tuple crosses the boundary.
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import final

from typing_extensions import Buffer

_Path = str | PathLike[str]
_Progress = Callable[[int], object]

__version__: str
MANIFEST_MEMBER: str
"""The member that holds a bundle's manifest (its last member)."""
MANIFEST_VERSION: int
"""The manifest format's version; ``rust/manifest.rs`` owns the format."""

__all__ = [
    "MANIFEST_MEMBER",
    "MANIFEST_VERSION",
    "Archive",
    "Digests",
    "Entry",
    "FileReader",
    "Hasher",
    "Manifest",
    "ManifestEntry",
    "Member",
    "Problem",
    "Verified",
    "Written",
    "WrittenMember",
    "__version__",
    "copy_file",
    "hash_buffer",
    "hash_file",
    "hash_files",
    "sha256_chained",
    "write_bundle",
]

@final
class Digests:
    """The digests of one byte stream: its size, and each digest that was asked for."""

    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str | None:
        """64 lowercase hex digits, or None when not asked for."""
    @property
    def blake3(self) -> str | None:
        """64 lowercase hex digits, or None when not asked for."""
    @property
    def crc32(self) -> int | None: ...

def hash_file(
    path: _Path,
    algos: Sequence[str],
    *,
    mmap: bool | None = None,
    regular_only: bool = False,
    follow: bool = False,
    progress: _Progress | None = None,
) -> Digests: ...
def hash_files(
    paths: Sequence[_Path],
    algos: Sequence[str],
    *,
    mmap: bool | None = None,
    regular_only: bool = False,
    follow: bool = False,
    progress: _Progress | None = None,
) -> list[Digests | OSError]: ...
def hash_buffer(data: Buffer, algos: Sequence[str]) -> Digests: ...
def copy_file(
    src: _Path,
    dst: _Path,
    algos: Sequence[str],
    *,
    fsync: bool = True,
    progress: _Progress | None = None,
) -> Digests: ...
def sha256_chained(
    path: _Path,
    step: int,
    midstates: Sequence[str],
    *,
    progress: _Progress | None = None,
) -> str | None:
    """A file's sha256 from parallel segments, checked against its midstates.

    The midstates are hex, taken every ``step`` bytes; None when they do not chain to the
    file's bytes.
    """

@final
class Hasher:
    """An incremental hasher for streamed bytes (downloads)."""

    def __new__(cls, algos: Sequence[str]) -> Hasher: ...
    def update(self, data: Buffer) -> None: ...
    def digest(self) -> Digests: ...
    def copy(self) -> Hasher: ...

@final
class FileReader:
    def __new__(
        cls, path: _Path, size: int, *, piece: int | None = None, fd: int | None = None
    ) -> FileReader: ...
    def next_len(self) -> int: ...
    def read_into(
        self, dest: Buffer | None = None, *, progress: _Progress | None = None
    ) -> int: ...
    def copy_into(self, fd: int) -> int: ...
    def read_bytes(self) -> bytes: ...
    def finish(self) -> tuple[int, bool, str | None]: ...

@final
class Member:
    """A member to write: its name in the archive and its bytes (a buffer, or a path to read).

    ``method``/``level`` override the bundle's method for this member; ``sha256`` is the digest
    its bytes must have, checked before the bundle is put in place.
    """

    def __new__(
        cls,
        name: str,
        source: bytes | _Path,
        *,
        method: str | None = None,
        level: int | None = None,
        sha256: str | None = None,
    ) -> Member: ...
    @property
    def name(self) -> str: ...

@final
class WrittenMember:
    """What was written for one member: where, how, and its digests."""

    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str:
        """``stored``, ``deflate`` or ``zstd``."""
    @property
    def offset(self) -> int:
        """Offset of its local header in the archive."""
    @property
    def size(self) -> int: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def crc32(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def blake3(self) -> str: ...

@final
class Written:
    """What ``write_bundle`` wrote."""

    @property
    def members(self) -> list[WrittenMember]:
        """Every member, in archive order (the manifest last, when one was written)."""
    @property
    def sha256(self) -> str:
        """The sha256 of the whole archive."""
    @property
    def sidecar(self) -> Path | None:
        """The ``.sha256`` file written beside the bundle, when one was asked for."""

def write_bundle(
    out_path: _Path,
    members: Sequence[Member],
    *,
    method: str = "stored",
    level: int | None = None,
    mtime: int | None = None,
    overwrite: bool = False,
    manifest: bool = False,
    sidecar: bool = False,
    progress: _Progress | None = None,
) -> Written:
    """Write a zip bundle of ``members``, in order, through a temporary file beside it.

    ``manifest`` appends the manifest as the last member; ``sidecar`` writes ``OUT.sha256``
    beside the bundle, replaced as a pair with it.
    """

@final
class Entry:
    """One member as the central directory lists it (after validation)."""

    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def crc32(self) -> int: ...
    @property
    def offset(self) -> int:
        """Offset of its local header."""
    @property
    def data_offset(self) -> int:
        """Offset of its (compressed) data."""
    @property
    def is_dir(self) -> bool: ...

@final
class ManifestEntry:
    """What a bundle's manifest records of one member."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def crc32(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def blake3(self) -> str: ...

@final
class Manifest:
    """A bundle's manifest, parsed and checked."""

    @property
    def version(self) -> int: ...
    @property
    def members(self) -> list[ManifestEntry]:
        """In archive order."""
    @property
    def midstate_step(self) -> int | None:
        """Bytes between the archive's recorded sha256 midstates; None in older bundles."""
    @property
    def midstates(self) -> list[str]:
        """The archive's sha256 state after every ``midstate_step`` bytes, as hex."""
    def to_json(self) -> str:
        """The canonical text, as the writer writes it."""

@final
class Problem:
    """One thing a check found wrong with a bundle."""

    @property
    def member(self) -> str | None:
        """The member it concerns; None for the archive as a whole."""
    @property
    def kind(self) -> str:
        """One of unlisted, missing, size, crc32, sha256, blake3, corrupt."""
    @property
    def message(self) -> str: ...

@final
class Verified:
    """What ``Archive.verify`` found."""

    @property
    def problems(self) -> list[Problem]: ...
    @property
    def checked(self) -> int:
        """Members whose data was checked."""
    @property
    def sha256(self) -> str | None:
        """The sha256 of the whole archive, when ``whole`` was asked for."""

@final
class Archive:
    """A zip archive opened for safe reading: validated whole before anything is read."""

    def __new__(
        cls,
        path: _Path,
        *,
        max_members: int | None = None,
        max_member_size: int | None = None,
        max_total_size: int | None = None,
        max_ratio: int | None = None,
        zstd_window_log_max: int | None = None,
    ) -> Archive: ...
    @property
    def path(self) -> Path: ...
    def entries(self) -> list[Entry]:
        """Members in central directory order."""
    def index_of(self, name: str) -> int | None: ...
    def manifest(self) -> Manifest:
        """The manifest member, read and parsed; BundleError when missing or malformed."""
    def check_listing(self, manifest: Manifest) -> list[Problem]:
        """What can be found wrong without reading member data.

        Members the manifest does not list, members it lists that are missing, and sizes or
        crc32s that differ between the two.
        """
    def hash_member(
        self, index: int, *, sha256: bool = True, progress: _Progress | None = None
    ) -> Digests:
        """Read a member, checking its size and crc32, and return its digests."""
    def read_member(self, index: int, max_bytes: int, *, sha256: str | None = None) -> bytes:
        """A whole member in memory, refused past ``max_bytes``.

        Checked against ``sha256`` when given (IntegrityError on a mismatch).
        """
    def extract_member(
        self,
        index: int,
        dest: _Path,
        *,
        sha256: str | None = None,
        blake3: str | None = None,
        overwrite: bool = False,
        progress: _Progress | None = None,
    ) -> Digests:
        """One member to ``dest``, through a temporary file beside it, verified and fsynced."""
    def extract(
        self,
        dest: _Path,
        manifest: Manifest,
        *,
        overwrite: bool = False,
        deep: bool = False,
        sync: bool = False,
        progress: _Progress | None = None,
    ) -> list[str]:
        """Every member below ``dest``, verified against ``manifest``; all or nothing.

        Written from a handle on ``dest`` without following links below it. Without
        ``overwrite``, a regular file already there with the member's verified bytes is kept
        (FileExistsError for anything else). Returns the names written, not those kept.
        """
    def verify(
        self,
        manifest: Manifest,
        *,
        whole: bool = False,
        deep: bool = False,
        progress: _Progress | None = None,
    ) -> Verified:
        """Every member against ``manifest``, in one read of the file.

        With ``whole``, the archive's own sha256 comes from the same read.
        """
