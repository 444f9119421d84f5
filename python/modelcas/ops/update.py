"""``cas update``: re-pin models to the newest matching, compatible version their remote lists.

Every remote that lists versions works the same way: Hub ``weights-*`` tags, OCI tags, a
directory's catalog. Versions compare by PEP 440 value (``v1.0`` is ``1.0.0``); each candidate's
``requires`` (from the remote's metadata) is checked against the installed package, and the
newest that matches ``--to``, is not a pre-release (unless ``--pre``) and is compatible is
pulled (verified) and pinned as latest. ``dry_run`` lists what is newer without writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from packaging.version import Version

from modelcas import lockfile
from modelcas.errors import UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import LockedModel, LockedVersion, Lockfile, is_prerelease, parse_requires
from modelcas.ops.pull import PullRequest, PullResult, Total, pull
from modelcas.registry import Registry
from modelcas.remotes import Remote, open_remote, parse
from modelcas.store import Store

Status = Literal["updated", "up-to-date", "none", "outdated", "not-listed"]


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """Which models to update (None: all), and which versions to consider."""

    model: str | None
    to: str | None = None  # a PEP 440 range on the version without its v
    pre: bool = False  # consider pre-releases (and let one become latest)
    lock: Path | None = None
    check_requires: bool = True
    dry_run: bool = False  # list newer versions, change nothing


@dataclass(frozen=True, slots=True)
class Candidate:
    """A version the remote has that is newer than the model's latest."""

    version: str
    status: Literal["compatible", "incompatible", "pre-release", "excluded"]
    why: str | None = None


@dataclass
class UpdateResult:
    """What an update did (or would do) for one model.

    ``status``: ``updated``; ``up-to-date``; ``outdated`` (a dry run found a newer compatible
    version); ``none`` (nothing matches and is compatible); ``not-listed`` (its remote cannot
    list versions, e.g. a plain URL).
    """

    model: str
    repo: str | None
    status: Status
    current: str | None = None  # latest before
    version: str | None = None  # the chosen (or newest compatible) version
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (version, why)
    newer: list[Candidate] = field(default_factory=list)
    pulled: PullResult | None = None


def update(
    req: UpdateRequest,
    store: Store,
    *,
    progress: Progress | None = None,
    total: Total | None = None,
) -> list[UpdateResult]:
    """Update one model (``req.model``) or every model whose remote lists versions.

    Raises:
        NotPinnedError: the model is not in the lockfile.
        UsageError: the named model's remote cannot list versions, or ``to`` is not a range.
        CompatibilityCheckError: a candidate has ``requires`` and the package to check is
            unknown or not installed (opt out with ``check_requires=False``).
        RemoteError, IntegrityError: as for ``pull``.
    """
    path = lockfile.locate(req.lock)
    lock = Lockfile.load(path)
    spec = parse_requires(req.to, "--to") if req.to else None
    names = [req.model] if req.model is not None else sorted(lock.models)
    results = []
    for name in names:
        model = lock.model(name)
        place = _listing_place(model)
        if place is None:
            if req.model is not None:
                raise UsageError(
                    f"{name} has no remote that lists versions in {path} (a Hub repo, an OCI "
                    "repository or a directory)",
                    hint="a plain URL lists none: pull a new version with `cas pull URL "
                    "--version V`",
                )
            results.append(UpdateResult(name, None, "not-listed", model.latest))
            continue
        results.append(
            _update_one(req, name, model, place, lock, path, store, spec, progress, total)
        )
    return results


def _listing_place(model: LockedModel) -> str | None:
    """The model's remote that lists versions: its repo, else its newest listable source."""
    known = [model.repo, *(model.versions[v].source for v in reversed(model.ordered()))]
    for place in known:
        if not place:
            continue
        kind = parse(place).kind
        if kind in ("hf", "oci", "dir"):
            return place
    return None


def _update_one(  # noqa: PLR0917 (one model of update's loop)
    req: UpdateRequest,
    name: str,
    model: LockedModel,
    place: str,
    lock: Lockfile,
    path: Path,
    store: Store,
    spec: object,
    progress: Progress | None,
    total: Total | None,
) -> UpdateResult:
    ref = parse(place)
    remote: Remote = open_remote(ref)
    registry = Registry(lock, store, check_requires=req.check_requires)
    # A tag that reads as no version (`weights-latest`, a catalog file named by hand) is no
    # candidate: it cannot be compared.
    listed = {v: r for v, r in remote.versions(name).items() if _is_version(v)}
    result = UpdateResult(name, remote.url, "none", model.latest)
    current = lockfile.parse_version(model.latest) if model.latest else None
    chosen: tuple[str, str] | None = None
    for version in sorted(listed, key=lockfile.parse_version, reverse=True):
        newer = current is None or lockfile.parse_version(version) > current
        if is_prerelease(version) and not req.pre:
            why = "a pre-release (pass --pre to consider it)"
            result.skipped.append((version, why))
            if newer:
                result.newer.append(Candidate(version, "pre-release", "pass --pre to consider it"))
            continue
        if spec is not None and not spec.contains(  # type: ignore[attr-defined]
            Version(str(lockfile.parse_version(version))), prereleases=True
        ):
            if newer:
                result.newer.append(Candidate(version, "excluded", f"not in --to {req.to}"))
            continue
        at = remote.resolve(listed[version])
        if lock.package is None and at.package:
            registry.distribution = at.package
        entry = LockedVersion({}, at.requires)
        if not registry.admits(name, version, entry):
            why = (
                f"requires {registry.distribution}{at.requires}, you have "
                f"{registry.installed_version()}"
            )
            result.skipped.append((version, why))
            if newer:
                result.newer.append(Candidate(version, "incompatible", why))
            continue
        if newer:
            result.newer.append(Candidate(version, "compatible"))
        if chosen is None:
            chosen = (version, at.revision or "")
            if not req.dry_run:
                break
    if chosen is None:
        return result
    version, revision = chosen
    result.version = version
    pinned_as = model.find(version)
    at_latest = pinned_as is not None and lockfile.same_version(model.latest or "", version)
    had = model.versions[pinned_as] if pinned_as else None
    same_revision = had is not None and (ref.kind != "hf" or had.commit == revision)
    if at_latest and same_revision:
        result.status = "up-to-date"
        return result
    if req.dry_run:
        result.status = "outdated"
        return result
    source = _source_for(ref, listed[version])
    result.pulled = pull(
        PullRequest(source, name, version, lock=path, pre=req.pre),
        store,
        progress=progress,
        total=total,
    )
    if pinned_as is not None and not at_latest:
        _make_latest(store, path, name, version)
    result.status = "updated"
    return result


def _is_version(text: str) -> bool:
    try:
        lockfile.parse_version(text)
    except UsageError:
        return False
    return True


def _source_for(ref: object, tag: str) -> str:
    """The reference ``cas pull`` takes for a listed version of the remote."""
    from modelcas.remotes.reference import Ref  # noqa: PLC0415

    assert isinstance(ref, Ref)
    if ref.kind == "hf":
        return f"hf://{ref.location}@{tag}"
    if ref.kind == "oci":
        return f"{ref.location}:{tag}"
    return ref.location


def _make_latest(store: Store, path: Path, name: str, version: str) -> None:
    """A version pinned already (an older update went back) becomes latest again."""
    from modelcas.pinning import write_pins  # noqa: PLC0415

    def change(lock: Lockfile) -> None:
        model = lock.models[name]
        model.latest = model.find(version) or model.latest

    write_pins(store, path, change, [], lambda _: None)
