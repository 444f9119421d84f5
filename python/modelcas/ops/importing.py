"""``cas lock import``: bring a hand-written ``weights.py`` registry into a lockfile.

The file is read without running it (:mod:`modelcas.migrate`). Each version is fetched from
the Hub tag it names through the pull operation (verified against the Hub's record as it is
ingested), checked against the sha256 the file recorded, and only when every version is
there and matches are they pinned, in one lockfile edit: with their ``requires``, the package
from the nearest ``pyproject.toml``, each model's repo and default weights file, and
``latest`` from ``LATEST``. A failure pins nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelcas import lockfile
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import Lockfile
from modelcas.migrate import LegacyVersion, read
from modelcas.ops.pull import PullRequest, pull
from modelcas.pinning import write_pins
from modelcas.store import Store

DEFAULT_LOCK = "weights.lock"  # beside weights.py: what Registry.from_package reads


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """What to import, and where to pin it."""

    source: Path  # the package's weights.py
    lock: Path | None = None  # default: weights.lock beside weights.py
    script: Path | None = None  # default: scripts/publish_weights.py of the project
    repo: str | None = None  # for versions that name no repo
    file: str | None = None  # for versions that name no file
    model: str | None = None  # only this model
    package: str | None = None  # default: [project].name of the nearest pyproject.toml


@dataclass(frozen=True, slots=True)
class ImportedVersion:
    """One version pinned: where it came from, and its digest."""

    model: str
    version: str
    file: str
    source: str
    commit: str | None
    digest: Digest
    requires: str | None
    checked: bool  # its recorded sha256 was compared


@dataclass
class ImportResult:
    """What the import pinned, and what it did not use."""

    lock: Path
    package: str | None
    versions: list[ImportedVersion] = field(default_factory=list)
    latest: dict[str, str | None] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    changed: bool = False


def import_registry(
    req: ImportRequest, store: Store, *, progress: Progress | None = None
) -> ImportResult:
    """Fetch, verify and pin every version a ``weights.py`` records.

    Raises:
        UsageError: the file cannot be read as a registry (a non-literal, no repo or file),
            it records no version, or ``requires`` is used and the package is unknown.
        IntegrityError: a tag holds other bytes than the recorded sha256; nothing is pinned.
        RemoteError: the Hub failed.
        LockfileError: the lockfile already pins a version to other content.
    """
    if req.package is not None:
        lockfile.check_package(req.package, "--package")
    legacy = read(req.source, script=req.script, repo=req.repo, file=req.file, model=req.model)
    if req.model is not None and not legacy.versions and not legacy.notes:
        raise UsageError(f"{req.source}: REGISTRY has no model {req.model!r}")
    if not legacy.versions and not legacy.notes:
        raise UsageError(
            f"{req.source}: REGISTRY records no version: nothing to import (no lockfile written)",
            hint="point at the weights.py whose REGISTRY lists your models",
        )
    lock_path = req.lock if req.lock is not None else req.source.parent / DEFAULT_LOCK
    package = req.package or lockfile.project_name(req.source)
    if package is None and any(v.requires for v in legacy.versions):
        raise UsageError(
            f"{req.source} records `requires`, and no pyproject.toml above it names the "
            "package whose version they refer to",
            hint="pass --package DIST (the distribution name, e.g. structflo-cser)",
        )
    result = ImportResult(lock_path, package, unused=legacy.unused, notes=legacy.notes)
    for v in legacy.versions:
        result.versions.append(_fetch(v, lock_path, store, progress))

    def change(lock: Lockfile) -> bool:
        changed = False
        for got in result.versions:
            changed |= lock.pin(
                got.model,
                got.version,
                {got.file: got.digest},
                requires=got.requires,
                source=got.source,
                commit=got.commit,
                set_latest=False,
            )
            model = lock.models[got.model]
            repo = got.source.rsplit("@", 1)[0]
            if model.repo is None:
                model.repo, changed = repo, True
            path = legacy.weights_paths.get(got.model)
            if path is not None and model.weights_path is None:
                model.weights_path, changed = path, True
        for name in sorted({got.model for got in result.versions}):
            model = lock.models[name]
            wanted = legacy.latest.get(name)
            if wanted is not None and wanted not in model.versions:
                result.notes.append(f"LATEST[{name!r}] = {wanted!r} is not a version imported")
                wanted = None
            latest = wanted or model.highest() or model.highest(pre=True)
            if model.latest != latest:
                model.latest, changed = latest, True
            result.latest[name] = model.latest
        if package is not None and lock.package != package:
            lock.package, changed = package, True
        return changed

    by_digest = {got.digest: got for got in result.versions}
    result.changed = write_pins(
        store,
        lock_path,
        change,
        list(by_digest),
        lambda d: _refetch(by_digest[d], lock_path, store),
    )
    return result


def _fetch(
    v: LegacyVersion, lock_path: Path, store: Store, progress: Progress | None
) -> ImportedVersion:
    source = f"hf://{v.repo}@{v.revision}"
    pulled = pull(
        PullRequest(source, v.model, v.version, (v.filename,), lock=lock_path, pin=False),
        store,
        progress=progress,
    )
    got = next(f for f in pulled.files if f.name == v.filename)
    if v.sha256 is not None and got.digest.sha256 != v.sha256:
        raise IntegrityError(
            f"{v.where} records {v.filename} as sha256:{v.sha256}, but {source} "
            f"(commit {pulled.commit}) has sha256:{got.digest.sha256}; nothing was pinned",
            hint="the tag moved or the record is wrong: check which bytes you trust",
        )
    return ImportedVersion(
        v.model,
        v.version,
        v.filename,
        source,
        pulled.commit,
        got.digest,
        v.requires,
        v.sha256 is not None,
    )


def _refetch(got: ImportedVersion, lock_path: Path, store: Store) -> None:
    """Store a version's object again (a concurrent gc took it before the pin was seen)."""
    pull(
        PullRequest(got.source, got.model, got.version, (got.file,), lock=lock_path, pin=False),
        store,
    )
