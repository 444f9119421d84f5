"""``cas sync``: make every file a lockfile pins present and verified in the store.

Only bytes move: ``requires`` is never read, so a cache can be warmed on a login node or in CI
without the package installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelcas.errors import IntegrityError, NotPinnedError
from modelcas.hashing import Progress
from modelcas.registry import Pin, Registry


@dataclass
class SyncReport:
    """What ``sync`` did for each pin.

    ``repaired``: pins whose stored copy did not match its name; the bad copy was moved to
    the store's ``quarantine/`` (the path given) and the pinned bytes fetched again.
    """

    present: list[Pin] = field(default_factory=list)
    fetched: list[Pin] = field(default_factory=list)
    repaired: list[tuple[Pin, Path]] = field(default_factory=list)

    @property
    def missing_bytes(self) -> int:
        """Bytes that had to be fetched."""
        return sum(p.digest.size for p in self.fetched)


def missing_bytes(registry: Registry) -> int:
    """How many bytes ``sync`` would fetch (for a progress bar)."""
    return sum(p.digest.size for p in registry.pins() if not registry.store.has(p.digest.sha256))


def fetch_signatures(registry: Registry) -> list[str]:
    """Bring every pinned signature missing here from where its version lives.

    A signature is a pinned object like a file, and small: fetched first, so the trust check
    runs before any weights move. For a model the lockfile trusts signers for, one that
    cannot be fetched is an error (its versions would be refused anyway); for another it is
    a warning, and the weights are fetched all the same.

    Returns:
        ``MODEL@VERSION`` of each signature fetched.

    Raises:
        SignatureError: a trusted model's signature is at none of its version's places.
    """
    from modelcas.errors import SignatureError  # noqa: PLC0415
    from modelcas.remotes.signature import fetch_signature  # noqa: PLC0415
    from modelcas.warning import warn  # noqa: PLC0415

    lock, store = registry.lock, registry.store
    fetched = []
    for name in sorted(lock.models):
        model = lock.models[name]
        for version in model.ordered():
            entry = model.versions[version]
            if entry.signature is None or store.has(entry.signature.digest.sha256):
                continue
            try:
                fetch_signature(store, name, version, entry)
            except SignatureError as e:
                if lock.trusted(name):
                    raise
                warn(e.message)
                continue
            fetched.append(f"{name}@{version}")
    return fetched


def sync(registry: Registry, *, progress: Progress | None = None) -> SyncReport:
    """Fetch every pinned file that is missing, and verify every one that is present.

    A stored copy whose bytes are not what its name says (``cas verify`` calls it CORRUPT) is
    repaired where its version has a place to fetch from: moved to ``quarantine/``, then
    fetched again. The lockfile is registered as a gc root first, so gc keeps what is fetched.

    Raises:
        SignatureError: a version of a model with trusted signers is not validly signed by
            one of them (checked once the signatures are here, before any weights move).
        IntegrityError: a stored copy is corrupt and its version has no source, or a remote
            served other bytes.
        NotPinnedError: a file is missing and its version has no source.
        RemoteError: a source failed.
    """
    from modelcas.signing import check_lock  # noqa: PLC0415

    report = SyncReport()
    registry.register()  # first: gc must see the pins before their objects are checked
    fetch_signatures(registry)
    # Before the weights move: a version the lockfile's `trust:` refuses is not fetched.
    check_lock(registry.lock, registry.store)
    for pin in registry.pins():
        had = registry.store.has(pin.digest.sha256)
        try:
            registry.fetch(pin, progress=progress)
        except IntegrityError as e:
            moved = _set_aside(registry, pin, e) if had else None
            if moved is None:
                raise
            registry.fetch(pin, progress=progress)
            report.repaired.append((pin, moved))
            continue
        (report.present if had else report.fetched).append(pin)
    return report


def _set_aside(registry: Registry, pin: Pin, found: IntegrityError) -> Path | None:
    """Quarantine a stored copy that does not match its own name, if it can be fetched again.

    None when the object itself is intact (the pin and the store's record disagree: one of
    them is wrong, and that is not repaired by fetching).

    Raises:
        IntegrityError: it is corrupt and its version has no place to fetch it from.
    """
    store = registry.store
    if store.verify_object(pin.digest.sha256, deep=True) is None:
        return None
    _, entry = registry.lock.version(pin.model, pin.version)
    if entry.source is None:
        raise IntegrityError(
            f"{found.message}; {pin.model}@{pin.version} has no source to fetch it from again",
            hint="run `cas verify --lock --repair`, then add a good copy with `cas add`",
        ) from None
    moved = store.quarantine(pin.digest.sha256)
    if moved is None:
        raise NotPinnedError(f"{pin.label}: sha256:{pin.digest.sha256} vanished while checked")
    return moved
