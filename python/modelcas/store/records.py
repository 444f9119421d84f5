"""The typed records the store hands out: objects, add results, problems, roots, gc reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelcas.digest import Digest

ProblemKind = Literal[
    "missing", "size", "blake3", "sha256", "not-regular", "unreadable", "writable"
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object: its digest, where it lives, and when it was added (Unix time)."""

    digest: Digest
    path: Path
    added: float


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an add did: the object, and whether the store already had it.

    A move that renamed the file into the store (no copy) keeps a move journal (``journal``)
    until :meth:`~modelcas.store.write.Writing.release` ends it or
    :meth:`~modelcas.store.write.Writing.detach` gives the file back; ``staged`` is the file
    itself, waiting in ``tmp/``, when its content was already stored. ``healed`` names where a
    stored object that did not match its name was quarantined, when this add replaced it.
    """

    source: Path
    info: ObjectInfo
    existed: bool
    journal: Path | None = None
    staged: Path | None = None
    healed: Path | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one object, as ``cas verify`` reports it."""

    sha256: str
    path: Path
    kind: ProblemKind
    expected: str
    actual: str

    def describe(self) -> str:
        """What is wrong, with the expected and actual value and the path."""
        what = {
            "missing": "object is missing",
            "size": "size differs",
            "blake3": "blake3 differs",
            "sha256": "sha256 differs",
            "not-regular": "not a regular file (refused, not followed)",
            "unreadable": "cannot be read",
            "writable": "permissions allow writes",
        }[self.kind]
        return f"{what}: expected {self.expected}, found {self.actual} ({self.path})"

    def __str__(self) -> str:
        return f"sha256:{self.sha256}: {self.describe()}" if self.sha256 else self.describe()


@dataclass(frozen=True, slots=True)
class Root:
    """A registered file: its objects are kept (a lockfile, a bundle).

    Kind ``output`` (a bundle being written) keeps nothing; gc cleans crash leftovers beside it.
    """

    path: Path
    kind: str
    registered: float
    record: Path


@dataclass(frozen=True, slots=True)
class VanishedRoot:
    """A root whose file is gone, and the objects gc keeps for it.

    Only it pinned them, and they have no remote source (``cas gc --forget PATH`` releases
    them).
    """

    path: Path
    objects: int
    bytes: int


@dataclass
class GcReport:
    """What gc removed (or, in a dry run, would remove)."""

    objects: list[ObjectInfo] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    kept_referenced: int = 0
    kept_young: int = 0
    restored: int = 0
    stale_roots: list[Path] = field(default_factory=list)
    views: int = 0  # named views removed (derived: rebuilt on their next use)
    vanished: list[VanishedRoot] = field(default_factory=list)
    forgotten: list[Path] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Bytes held by the removed objects."""
        return sum(o.digest.size for o in self.objects)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """``cas store info``."""

    root: Path
    format: int
    shared: bool
    objects: int
    bytes: int
    temp_files: int
    quarantined: int
    roots: int
