# Hand-written stubs for the Rust extension (rust/py.rs). Checked by stubtest in CI.
from collections.abc import Callable, Sequence
from os import PathLike
from typing import final

from typing_extensions import Buffer

_Path = str | PathLike[str]
_DigestTuple = tuple[int, str | None, str | None, int | None]
_Progress = Callable[[int], object]

__version__: str
__all__ = ["Hasher", "__version__", "copy_file", "hash_buffer", "hash_file", "hash_files"]

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

@final
class Hasher:
    def __new__(cls, algos: Sequence[str]) -> Hasher: ...
    def update(self, data: Buffer) -> None: ...
    def digest(self) -> _DigestTuple: ...
    def copy(self) -> Hasher: ...
