"""``cas verify``: re-check stored objects, or every file a lockfile pins, before a run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from modelcas.errors import IntegrityError, NotPinnedError
from modelcas.hashing import Progress
from modelcas.store import Problem, Store

if TYPE_CHECKING:  # `cas verify` of the store alone does not pay for the lockfile's YAML
    from modelcas.registry import Pin, Registry


@dataclass(frozen=True, slots=True)
class PinProblem:
    """A pinned file that is missing from the store, corrupt in it, or recorded otherwise."""

    pin: Pin
    kind: Literal["missing", "corrupt", "mismatch", "writable"]
    detail: str
    next_step: str | None = None  # what to run about it, unless it was already done

    def __str__(self) -> str:
        return self.describe()

    def describe(self, *, next_step: bool = True) -> str:
        """The problem on one line; ``next_step=False`` leaves out what to run (it was run)."""
        head = {
            "missing": "MISSING",
            "corrupt": "CORRUPT",
            "mismatch": "MISMATCH",
            "writable": "UNSAFE",
        }[self.kind]
        step = f"; {self.next_step}" if next_step and self.next_step else ""
        return f"{head} {self.pin.label} sha256:{self.pin.digest.sha256}: {self.detail}{step}"


@dataclass(frozen=True, slots=True)
class Linked:
    """An object whose inode has other names than its own (link count above 1).

    Not corruption, but a risk: a write through another name (as root, which permissions do
    not stop, or after a chmod) changes the stored bytes in place. ``where`` says which name
    when it can be found (the Hugging Face cache), else what makes such names.
    """

    sha256: str
    path: Path
    links: int
    where: str

    def __str__(self) -> str:
        return (
            f"sha256:{self.sha256} has {self.links} names (link count {self.links}); "
            f"{self.where}: a write through it (as root, or after chmod u+w) changes the "
            f"stored bytes; replace that name with a copy to remove the risk"
        )


@dataclass
class LockReport:
    """The result of checking every file a lockfile pins."""

    pins: list[Pin]
    problems: list[PinProblem] = field(default_factory=list)
    # Versions refused by the lockfile's `trust:`: one line each (model, version, signer).
    signatures: list[str] = field(default_factory=list)
    linked: list[Linked] = field(default_factory=list)

    @property
    def ok(self) -> list[Pin]:
        """The pins with no problem."""
        bad = {id(p.pin) for p in self.problems}
        return [p for p in self.pins if id(p) not in bad]


@dataclass
class StoreReport:
    """The result of checking objects in the store."""

    checked: int
    bytes: int
    problems: list[Problem] = field(default_factory=list)
    linked: list[Linked] = field(default_factory=list)


def verify_lock(
    registry: Registry, *, deep: bool = False, progress: Progress | None = None
) -> LockReport:
    """Check every pinned file without fetching anything (all objects hashed in parallel).

    Size, blake3 (and with ``deep`` sha256) are compared with the pin, and the object's
    permissions are checked. ``requires`` is not read. Every version of a model the lockfile
    trusts signers for must carry a valid signature by one of them (``signatures``).

    Args:
        registry: the lockfile and store to check.
        deep: recompute sha256 too.
        progress: called with the bytes hashed since its last call.

    Raises:
        NotPinnedError: the lockfile pins no file (there is nothing to vouch for).
    """
    from modelcas.errors import SignatureError  # noqa: PLC0415
    from modelcas.signing import check_trusted  # noqa: PLC0415

    pins = registry.pins()
    if not pins:
        raise NotPinnedError(
            f"{registry.lock.path or 'the lockfile'} pins no file: nothing to verify",
            hint="pin weights with `cas add FILE --name NAME --version V` or `cas pull`",
        )
    report = verify_pins(registry, pins, deep=deep, progress=progress)
    lock = registry.lock
    for name in sorted(lock.models):
        for version in lock.models[name].ordered() if lock.trusted(name) else ():
            try:
                check_trusted(lock, name, version, registry.store)
            except SignatureError as e:
                report.signatures.append(e.message)
    return report


def verify_pins(
    registry: Registry, pins: list[Pin], *, deep: bool = False, progress: Progress | None = None
) -> LockReport:
    """Check these pinned files (see :func:`verify_lock`); signatures are not read."""
    report = LockReport(pins)
    present = []
    for pin in report.pins:
        if not registry.store.has(pin.digest.sha256):
            report.problems.append(PinProblem(pin, "missing", "not in the store; run `cas sync`"))
            continue
        try:
            registry.check_record(pin)
        except IntegrityError as e:
            report.problems.append(PinProblem(pin, "mismatch", e.message))
            continue
        present.append(pin)
    checked = registry.store.check(
        [pin.digest.sha256 for pin in present], deep=deep, progress=progress
    )
    intact = []
    for pin, problem in zip(present, checked, strict=True):
        if problem is None:
            intact.append(pin)
            continue
        if problem.kind == "missing":
            report.problems.append(PinProblem(pin, "missing", "not in the store; run `cas sync`"))
            continue
        report.problems.append(
            PinProblem(
                pin,
                "corrupt",
                problem.describe(),
                "run `cas verify --lock --repair`, then `cas sync`",
            )
        )
    # Intact bytes that anyone could change are a problem too (objects must be 0444).
    writable = {p.sha256: p for p in registry.store.audit([p.digest.sha256 for p in intact])}
    for pin in intact:
        if (w := writable.get(pin.digest.sha256)) is not None:
            report.problems.append(PinProblem(pin, "writable", w.describe()))
    report.linked = linked(registry.store, sorted({p.digest.sha256 for p in intact}))
    return report


def linked(store: Store, sha256s: Iterable[str]) -> list[Linked]:
    """The objects among ``sha256s`` whose inode has other names, and where those are."""
    found = []
    for sha256 in sha256s:
        path = store.object_path(sha256)
        try:
            st = path.lstat()
        except OSError:
            continue
        if st.st_nlink > 1:
            found.append(Linked(sha256, path, st.st_nlink, _other_name(sha256, st)))
    return found


def _other_name(sha256: str, st: os.stat_result) -> str:
    """The other name where it can be found: the Hugging Face cache's blob of this digest."""
    from modelcas import hfcache  # noqa: PLC0415

    cache = hfcache.cache_dir()
    with contextlib.suppress(OSError):
        for folder in sorted(cache.iterdir()):
            blob = folder / "blobs" / sha256
            with contextlib.suppress(OSError):
                other = blob.lstat()
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return f"the other is the Hugging Face cache's blob {blob}"
    return "another is a hard link outside the store (`cas get --link hardlink` makes them)"


def verify_store(
    store: Store,
    addresses: Sequence[str] = (),
    *,
    deep: bool = False,
    progress: Progress | None = None,
) -> StoreReport:
    """Check objects (the given addresses or prefixes, else all) and the store's permissions.

    Raises:
        UsageError: an address is malformed or an ambiguous prefix.
    """
    targets = [store.resolve(a) for a in addresses] if addresses else None
    infos = [store.info(h) for h in targets if store.has(h)] if targets else store.objects()
    wanted = targets if targets is not None else [i.digest.sha256 for i in infos]
    problems = store.verify(wanted, deep=deep, progress=progress)
    if targets is None:
        # Listed, then collected by a gc running meanwhile: gone as it should be, not a problem.
        problems = [p for p in problems if p.kind != "missing"]
    problems += store.audit(targets)
    report = StoreReport(len(wanted), sum(i.digest.size for i in infos), problems)
    report.linked = linked(store, wanted)
    return report


def pinned_bytes(registry: Registry) -> int:
    """Bytes :func:`verify_lock` would read (for a progress bar)."""
    return sum(p.digest.size for p in registry.pins() if registry.store.has(p.digest.sha256))


def total_bytes(store: Store) -> int:
    """Bytes a full check would read (for a progress bar)."""
    return sum(i.digest.size for i in store.iter_objects())
