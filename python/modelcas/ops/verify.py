"""``cas verify``: re-check stored objects, or every file a lockfile pins, before a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from modelcas.errors import IntegrityError
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

    def __str__(self) -> str:
        head = {
            "missing": "MISSING",
            "corrupt": "CORRUPT",
            "mismatch": "MISMATCH",
            "writable": "UNSAFE",
        }[self.kind]
        return f"{head} {self.pin.label} sha256:{self.pin.digest.sha256}: {self.detail}"


@dataclass
class LockReport:
    """The result of checking every file a lockfile pins."""

    pins: list[Pin]
    problems: list[PinProblem] = field(default_factory=list)

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


def verify_lock(registry: Registry, *, deep: bool = False) -> LockReport:
    """Check every pinned file without fetching anything (all objects hashed in parallel).

    Size, blake3 (and with ``deep`` sha256) are compared with the pin, and the object's
    permissions are checked. ``requires`` is not read.
    """
    report = LockReport(registry.pins())
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
    checked = registry.store.check([pin.digest.sha256 for pin in present], deep=deep)
    intact = []
    for pin, problem in zip(present, checked, strict=True):
        if problem is None:
            intact.append(pin)
            continue
        report.problems.append(
            PinProblem(
                pin, "corrupt", f"{problem.describe()}; run `cas verify --repair`, then `cas sync`"
            )
        )
    # Intact bytes that anyone could change are a problem too (objects must be 0444).
    writable = {p.sha256: p for p in registry.store.audit([p.digest.sha256 for p in intact])}
    for pin in intact:
        if (w := writable.get(pin.digest.sha256)) is not None:
            report.problems.append(PinProblem(pin, "writable", w.describe()))
    return report


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
    problems += store.audit(targets)
    return StoreReport(len(wanted), sum(i.digest.size for i in infos), problems)


def total_bytes(store: Store) -> int:
    """Bytes a full check would read (for a progress bar)."""
    return sum(i.digest.size for i in store.iter_objects())
