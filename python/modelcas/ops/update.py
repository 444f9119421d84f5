"""``cas update``: re-pin a model to the newest compatible weights-* tag on the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from modelcas import hub, lockfile
from modelcas.errors import UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import LockedVersion, Lockfile, is_prerelease, parse_requires
from modelcas.ops.pull import PullRequest, PullResult, Total, pull
from modelcas.registry import Registry
from modelcas.remotes import parse_source
from modelcas.store import Store


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """Which model to update, and which versions to consider."""

    model: str
    to: str | None = None  # a PEP 440 range on the version without its v
    pre: bool = False  # consider pre-releases
    lock: Path | None = None
    check_requires: bool = True


@dataclass
class UpdateResult:
    """What an update did: ``updated``, ``up-to-date`` or ``none`` (nothing matched)."""

    model: str
    repo: str
    status: str
    version: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (version, why)
    pulled: PullResult | None = None


def update(
    req: UpdateRequest,
    store: Store,
    *,
    progress: Progress | None = None,
    total: Total | None = None,
) -> UpdateResult:
    """Pull and pin as latest the newest matching tag whose ``requires`` admits the package.

    A tag matches ``to`` (and is not a pre-release, unless ``pre``); its ``requires`` is
    checked against the installed version of the lockfile's package (or, when the lockfile
    names none, of the package the tag's metadata names).

    Raises:
        NotPinnedError: the model is not in the lockfile.
        UsageError: it has no Hub repo, or ``to`` is not a range.
        CompatibilityCheckError: a candidate has ``requires`` and the package to check is
            unknown or not installed (opt out with ``check_requires=False``).
        RemoteError, IntegrityError: as for ``pull``.
    """
    path = lockfile.locate(req.lock)
    lock = Lockfile.load(path)
    model = lock.model(req.model)
    repos = [model.repo, *(model.versions[v].source for v in reversed(model.ordered()))]
    hf = [r for r in repos if r and r.startswith("hf://")]
    if not hf:
        raise UsageError(f"{req.model} has no Hub repo in {path}")
    repo_id = parse_source(hf[0].split("@")[0])[1]
    spec = parse_requires(req.to, "--to") if req.to else None
    registry = Registry(lock, store, check_requires=req.check_requires)
    tags = hub.weight_tags(repo_id)
    result = UpdateResult(req.model, f"hf://{repo_id}", "none")
    for version in sorted(tags, key=lockfile.parse_version, reverse=True):
        if is_prerelease(version) and not req.pre:
            result.skipped.append((version, "a pre-release (pass --pre to consider it)"))
            continue
        if spec is not None and not spec.contains(
            Version(str(lockfile.parse_version(version))), prereleases=True
        ):
            continue
        meta = hub.read_metadata(repo_id, tags[version]) or {}
        requires = meta.get("requires")
        if lock.package is None and isinstance(meta.get("package"), str):
            registry.distribution = meta["package"]
        entry = LockedVersion({}, requires if isinstance(requires, str) else None)
        if not registry.admits(req.model, version, entry):
            result.skipped.append(
                (version, f"requires {registry.distribution}{requires}, "
                          f"you have {registry.installed_version()}")
            )  # fmt: skip
            continue
        result.version = version
        if model.latest == version and model.versions[version].commit == tags[version]:
            result.status = "up-to-date"
            return result
        result.pulled = pull(
            PullRequest(f"hf://{repo_id}@{hub.tag_for(version)}", req.model, version, lock=path),
            store,
            progress=progress,
            total=total,
        )
        result.status = "updated"
        return result
    return result
