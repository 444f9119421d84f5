# Hand-written stubs for the Rust extension (rust/py.rs). Checked by stubtest in CI.
from collections.abc import Callable, Sequence
from os import PathLike
from typing import final

from typing_extensions import Buffer

_Path = str | PathLike[str]
_DigestTuple = tuple[int, str | None, str | None, int | None]
_Progress = Callable[[int], object]

__version__: str
__all__ = [
    "FileReader",
    "Hasher",
    "ZipReader",
    "__version__",
    "copy_file",
    "hash_buffer",
    "hash_file",
    "hash_files",
    "sha256_chained",
    "write_bundle",
]

def hash_file(
    path: _Path,
    algos: Sequence[str],
    *,
    mmap: bool | None = None,
    regular_only: bool = False,
    progress: _Progress | None = None,
) -> _DigestTuple: ...
def hash_files(
    paths: Sequence[_Path],
    algos: Sequence[str],
    *,
    mmap: bool | None = None,
    regular_only: bool = False,
    progress: _Progress | None = None,
) -> list[_DigestTuple | OSError]: ...
def hash_buffer(data: Buffer, algos: Sequence[str]) -> _DigestTuple: ...
def copy_file(
    src: _Path,
    dst: _Path,
    algos: Sequence[str],
    *,
    fsync: bool = True,
    progress: _Progress | None = None,
) -> _DigestTuple: ...
def sha256_chained(
    path: _Path,
    step: int,
    midstates: Sequence[str],
    *,
    progress: _Progress | None = None,
) -> str | None: ...

@final
class Hasher:
    def __new__(cls, algos: Sequence[str]) -> Hasher: ...
    def update(self, data: Buffer) -> None: ...
    def digest(self) -> _DigestTuple: ...
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

_Report = tuple[str, str, int, int, int, int, str, str]
_Entry = tuple[str, str, int, int, int, int, int, bool]

def write_bundle(
    out_path: _Path,
    members: Sequence[tuple[str, bytes | _Path, str | None, int | None]],
    *,
    method: str = "stored",
    level: int | None = None,
    mtime: int | None = None,
    overwrite: bool = False,
    manifest: str | None = None,
    progress: _Progress | None = None,
) -> tuple[list[_Report], str]: ...

@final
class ZipReader:
    def __new__(
        cls,
        path: _Path,
        *,
        max_members: int | None = None,
        max_member_size: int | None = None,
        max_total_size: int | None = None,
        max_ratio: int | None = None,
        zstd_window_log_max: int | None = None,
    ) -> ZipReader: ...
    def entries(self) -> list[_Entry]: ...
    def index_of(self, name: str) -> int | None: ...
    def hash_member(
        self, index: int, *, sha256: bool = True, progress: _Progress | None = None
    ) -> _DigestTuple: ...
    def read_member(self, index: int, max_bytes: int) -> tuple[bytes, _DigestTuple]: ...
    def extract_member(
        self,
        index: int,
        dest: _Path,
        *,
        sha256: str | None = None,
        blake3: str | None = None,
        overwrite: bool = False,
        progress: _Progress | None = None,
    ) -> _DigestTuple: ...
    def member_data_range(self, index: int) -> tuple[int, int]: ...
