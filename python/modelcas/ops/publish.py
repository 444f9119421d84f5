"""``cas publish``: publish a version of a model's weights to the Hub, a registry or a directory.

One step, as the seed's ``publish_weights.py`` did, but failing closed and planned first
(restic's ``PlanPrune``, then execute): hash and store the files, look at the remote (which
files are there already, whether the tag exists), compute the lockfile after the publish, and
only then send what is missing, read back what the remote recorded (every byte with
``read_back``), tag, and pin. A tag is never moved; a mismatch creates no tag and no pin.

The remote is picked once: ``--to`` (``hf://ORG/NAME``, ``oci://HOST/REPO``, a directory), else
``--repo ORG/NAME`` (the Hub), else the model's ``repo:`` in the lockfile, else its latest
Hub source.

A version's signature travels with it: made now with ``key`` (before the tag is created, so a
Hub tag's commit holds ``model.sig``), else the one the lockfile pins (docs/signing.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelcas import lockfile
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, LockfileError, UsageError
from modelcas.hashing import Progress, hash_file
from modelcas.lockfile import LockedModel, Lockfile, PinnedSignature
from modelcas.ops.add import refuse_lfs_pointer
from modelcas.pinning import write_pins
from modelcas.remotes import (
    Outgoing,
    Published,
    Ref,
    RemotePlan,
    RemoteVersion,
    Writable,
    parse,
    writable,
)
from modelcas.signing import KeySpec
from modelcas.store import Store

Place = Literal["source", "mirror", "unchanged"]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What to publish. Defaults come from the model's earlier versions in the lockfile."""

    model: str
    version: str
    files: tuple[Path, ...] = ()  # this publish only; default: the model's weights-path
    names: tuple[str, ...] = ()  # names at the remote and in the lockfile (--as)
    repo: str | None = None  # ORG/NAME on the Hub; default: the model's repo
    requires: str | None = None  # default: the previous version's range
    package: str | None = None  # default: the lockfile's, else the nearest pyproject's
    lock: Path | None = None
    set_default: bool = False  # remember files[0] as the model's default weights file
    set_latest: bool = True
    pre: bool = False  # let a pre-release become latest
    private: bool = False
    allow_lfs_pointer: bool = False
    to: str | None = None  # hf://ORG/NAME, oci://HOST[:PORT]/REPO, or a directory
    prune: bool = False  # (Hub) also remove files of main that cas never wrote
    read_back: bool = False  # download and hash every byte before tagging
    media_types: tuple[tuple[str, str], ...] = ()  # (OCI) NAME=TYPE overrides
    plain_http: bool = False  # (OCI) the registry speaks HTTP
    key: KeySpec | None = None  # sign the version with it (else its pinned signature travels)


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of the version: where it is here, and its digest."""

    local: Path
    digest: Digest


@dataclass
class PublishPlan:
    """Everything a publish will do, computed without changing the remote or the lockfile."""

    request: PublishRequest
    lock_path: Path
    remote: RemotePlan
    files: dict[str, PlannedFile]  # name at the remote -> file
    requires: str | None
    package: str | None
    version: str  # as it will be pinned (an equal spelling already pinned wins)
    weights_path: str | None = None
    default_changed: bool = False
    up_to_date: bool = False  # already published there and pinned: nothing to do
    place: Place = "source"  # how the lockfile records the remote
    latest: str | None = None  # the model's latest version after the publish
    before: str = ""  # the lockfile's text now
    after: str = ""  # and after the publish (with a placeholder revision)
    signature: bytes | None = None  # travels with the version
    signed: PinnedSignature | None = None  # and is pinned with it
    signed_now: bool = False  # made by this publish (--key), not the one pinned before

    @property
    def source(self) -> str:
        """The lock entry's source."""
        return self.remote.source

    @property
    def tag(self) -> str:
        """The version's tag at the remote."""
        return self.remote.tag


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish did."""

    plan: PublishPlan
    published: Published | None  # None: nothing to do
    latest: str | None

    @property
    def commit(self) -> str | None:
        """The Hub commit, or the OCI manifest digest."""
        if self.published is not None:
            return self.published.revision
        return self.plan.remote.revision

    @property
    def uploaded(self) -> list[str]:
        """The files sent."""
        return self.published.uploaded if self.published else []


_PLACEHOLDER = "0" * 40


def plan(request: PublishRequest, store: Store, *, dry_run: bool = False) -> PublishPlan:
    """Decide what publishing would do: read the lockfile, hash the files, look at the remote.

    A real run also stores the files (one pass), so that the pin is valid locally once
    written; a dry run only hashes them and changes nothing, not even the store.

    Raises:
        UsageError: a bad name, version, range, file, or a missing repo/package.
        LockfileError: the version is pinned to other files.
        TagConflictError: the tag exists with other files (tags are never moved).
        RemoteError: the remote failed.
    """
    req = request
    lockfile.check_name(req.model)
    lock_path = lockfile.locate(req.lock, must_exist=False)
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    model = lock.models.get(req.model)
    target = _target(req, model)
    remote = writable(target, plain_http=req.plain_http)
    local = prepare(req, store, dry_run=dry_run)
    pinned_as = model.find(req.version) if model else None
    version = pinned_as or req.version  # the tag keeps the spelling that was pinned
    requires = local.requires
    existing = model.versions[pinned_as] if model and pinned_as else None
    if existing is not None:
        if req.requires is not None and req.requires != existing.requires:
            raise LockfileError(
                f"{lock_path}: {req.model}@{version} is pinned with requires "
                f"{existing.requires!r}, not {req.requires!r}",
                hint="a published version keeps its range: drop --requires, or publish a new "
                "version",
            )
        requires = existing.requires
    files = {n: f.digest for n, f in local.files.items()}
    from modelcas.ops import signatures  # noqa: PLC0415 (the [sign] extra only when signing)

    travelling = signatures.outgoing(req.model, version, files, req.key, existing, store)
    out = _outgoing(req, version, local, requires, lock, travelling.data)
    remote_plan = remote.plan_publish(out, prune=req.prune)  # a moved tag is refused first
    if remote_plan.tag_exists and travelling.data is not None:
        at = signatures.planned_at(remote_plan, req.model, version)
        label = f"{req.model}@{version}"
        travelling = signatures.settle(remote, at, label, files, travelling, req.key)
    if existing is not None:
        _same_files(lock_path, req.model, version, existing.files, local.files)
    p = PublishPlan(req, lock_path, remote_plan, local.files, requires, local.package, version)
    p.signature, p.signed, p.signed_now = travelling.data, travelling.pin, travelling.made
    p.weights_path, p.default_changed = _default_file(req, model)
    p.before = lock.dumps() if lock_path.exists() else ""
    after = Lockfile.loads(p.before, lock_path) if p.before else Lockfile(path=lock_path)
    signature_before = _pinned_signature(after, req.model, version)
    p.place = _record(after, p, _PLACEHOLDER, target.kind == "hf")
    p.up_to_date = remote_plan.tag_exists and p.place == "unchanged"
    if p.signed is not None and (signature_before != p.signed or not travelling.there):
        p.up_to_date = False  # the signature is new here, or not at the remote yet
    p.latest = after.models[req.model].latest
    p.after = after.dumps().replace(_PLACEHOLDER, "<commit of the upload>")
    return p


def _target(req: PublishRequest, model: LockedModel | None) -> Ref:
    """The remote, picked once: --to, --repo, the model's repo, its latest Hub source."""
    if req.to is not None:
        if req.repo is not None:
            raise UsageError("--repo names a Hub repo; with --to the target says where")
        return _repository(parse(req.to), req.version)
    if req.plain_http:
        raise UsageError("--plain-http goes with --to oci://...")
    if req.repo is not None:
        return _repository(parse(f"hf://{req.repo}"), req.version)
    if model is not None:
        known = [model.repo, *(model.versions[v].source for v in reversed(model.ordered()))]
        for place in known:
            if place and place.startswith(("hf://", "oci://")):
                return _repository(parse(place.split("@")[0]), req.version)
    raise UsageError(
        f"{req.model} has no Hub repo yet",
        hint=f"a new model needs --repo ORG/NAME (or --to oci://HOST/REPO or a directory): "
        f"cas publish {req.model} --version {req.version} --repo ORG/NAME --file PATH",
    )


def _repository(ref: Ref, version: str) -> Ref:
    """A remote as a place to publish to: a repository, not a version in it."""
    if ref.kind == "oci":
        if ref.revision is not None:
            raise UsageError(
                f"--to {ref.text}: name the repository only; the version {version} becomes the tag",
                hint=f"--to {ref.location}",
            )
        return ref
    if ref.kind == "hf" and ref.revision is not None:
        raise UsageError(
            f"{ref.text}: name the repo only (hf://ORG/NAME); the tag is weights-{version}"
        )
    return ref


def _pinned_signature(lock: Lockfile, model: str, version: str) -> PinnedSignature | None:
    m = lock.models.get(model)
    found = m.find(version) if m else None
    return m.versions[found].signature if m is not None and found is not None else None


def _outgoing(  # noqa: PLR0917 (what one publish sends)
    req: PublishRequest,
    version: str,
    local: LocalVersion,
    requires: str | None,
    lock: Lockfile,
    signature: bytes | None = None,
) -> Outgoing:
    media = dict(req.media_types)
    places = tuple(
        place
        for m in lock.models.values()
        for e in m.versions.values()
        for place in (e.source, *e.mirrors)
        if place
    )
    return Outgoing(
        req.model,
        version,
        {n: (f.local, f.digest) for n, f in local.files.items()},
        requires,
        local.package,
        media,
        places,
        private=req.private,
        signature=signature,
    )


def _same_files(
    lock_path: Path,
    model: str,
    version: str,
    pinned: dict[str, Digest],
    files: dict[str, PlannedFile],
) -> None:
    if {n: d.sha256 for n, d in pinned.items()} != {n: f.digest.sha256 for n, f in files.items()}:
        raise LockfileError(
            f"{lock_path}: {model}@{version} is already pinned to other content "
            f"({', '.join(f'{n} sha256:{d.sha256[:12]}' for n, d in pinned.items())})",
            hint="publish a new version, or pass the files the version pins",
        )


@dataclass(frozen=True, slots=True)
class LocalVersion:
    """A version's files here, named as they will be published, with their range."""

    lock_path: Path
    files: dict[str, PlannedFile]
    requires: str | None
    package: str | None


def prepare(req: PublishRequest, store: Store, *, dry_run: bool = False) -> LocalVersion:
    """The files to publish, named and hashed (stored, unless ``dry_run``), and the range.

    The same for every place a version is published to.

    Raises:
        UsageError: a bad name, version, range or file, or no package for the range.
    """
    lockfile.check_name(req.model)
    lockfile.parse_version(req.version, f"{req.model}@{req.version}")
    if req.requires is not None:
        lockfile.parse_requires(req.requires, "--requires")
    if req.package is not None:
        lockfile.check_package(req.package, "--package")
    lock_path = lockfile.locate(req.lock, must_exist=False)
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    model = lock.models.get(req.model)
    pinned = _pinned_here(req, model, store)
    local = [] if pinned is not None else _local_files(req, model)
    names = [] if pinned is not None else _names(req, model, local)
    if pinned is not None and model is not None:  # the version's own range, as plan() keeps it
        requires = req.requires or model.versions[model.find(req.version) or ""].requires
    else:
        requires = req.requires or _previous_requires(model, req.version)
    package = req.package or lock.package or lockfile.project_name(lock_path)
    if requires is not None and package is None:
        raise UsageError(
            f"{req.model}@{req.version} requires {requires!r}, but no package is known whose "
            f"version to check: {lock_path} has no `package:` and no pyproject.toml is above it",
            hint="pass --package DIST (the distribution name, e.g. structflo-cser)",
        )
    files = pinned or {}
    for name, path in zip(names, local, strict=True):
        refuse_lfs_pointer(path, allow=req.allow_lfs_pointer)
        digest = hash_file(path).digest() if dry_run else store.add_file(path).info.digest
        files[name] = PlannedFile(path, digest)
    return LocalVersion(lock_path, files, requires, package)


def publish(p: PublishPlan, store: Store, *, progress: Progress | None = None) -> PublishResult:
    """Carry out a plan: send, read back (every byte with ``read_back``), tag, pin.

    Safe to run again after a failure at any point: bytes already sent are not sent again,
    and a tag that already holds exactly these files is adopted.

    Raises:
        IntegrityError: the remote recorded other bytes or files than were sent (with
            ``read_back``: any byte differs); no tag was created and nothing was pinned.
        TagConflictError: the tag appeared meanwhile, elsewhere.
        RemoteError: the remote refused or failed; the lockfile is unchanged.
    """
    req = p.request
    if p.up_to_date:
        return PublishResult(p, None, p.latest)
    remote: Writable = writable(_target_of(p), plain_http=req.plain_http)
    out = _outgoing(req, p.version, _local(p), p.requires, Lockfile(path=p.lock_path), p.signature)
    pins = {n: f.digest for n, f in p.files.items()}

    def read_back(at: RemoteVersion) -> None:
        from modelcas.ops.audit import audit_version  # noqa: PLC0415

        found = audit_version(remote, at, pins, req.model, p.version, read_data=True)
        if not found.ok:
            raise IntegrityError(
                f"read-back of {req.model}@{p.version} from {at.source}: "
                f"{'; '.join(found.problems)}; no tag was created and nothing was pinned",
                hint="the remote stores other bytes than were sent: check its storage, then "
                "publish again",
            )

    done = remote.publish(
        p.remote, out, store, progress=progress, read_back=read_back if req.read_back else None
    )
    by_digest = {f.digest: f.local for f in p.files.values()}
    is_hub = parse(p.remote.remote).kind == "hf"
    kept = list(by_digest)
    signature = p.signature
    if signature is not None and p.signed is not None:
        store.add_bytes(signature, expected=p.signed.digest)
        kept.append(p.signed.digest)

    def refill(d: Digest) -> None:  # gc took it before the pin was seen: store it again
        if p.signed is not None and signature is not None and d == p.signed.digest:
            store.add_bytes(signature, expected=d)
        else:
            store.add_file(by_digest[d], expected=d)

    write_pins(
        store,
        p.lock_path,
        lambda lock: _record(lock, p, done.revision or "", is_hub),
        kept,
        refill,
    )
    return PublishResult(p, done, p.latest)


def _target_of(p: PublishPlan) -> Ref:
    return parse(p.remote.remote)


def _local(p: PublishPlan) -> LocalVersion:
    return LocalVersion(p.lock_path, p.files, p.requires, p.package)


def upload_bytes(p: PublishPlan) -> int:
    """How many bytes a publish will send (for a progress bar)."""
    return 0 if p.up_to_date else p.remote.upload_bytes


# -- planning ----------------------------------------------------------------------------------


def _pinned_here(
    req: PublishRequest, model: LockedModel | None, store: Store
) -> dict[str, PlannedFile] | None:
    """A pinned version, published from the store: no --file, and no default file to take.

    A version pulled here, or added and its file since moved, goes to another place as the
    lockfile pins it (the objects, verified, under their pinned names). A model with a
    default weights file keeps using it, so a retrained file under a published version is
    still refused rather than taken as "already published".

    Raises:
        ObjectNotFoundError, IntegrityError: a pinned file is not in the store intact.
    """
    if req.files or req.names or model is None or model.weights_path:
        return None
    pinned_as = model.find(req.version)
    if pinned_as is None:
        return None
    files = model.versions[pinned_as].files
    return {n: PlannedFile(store.path(d.sha256), d) for n, d in files.items()}


def _local_files(req: PublishRequest, model: LockedModel | None) -> list[Path]:
    local = list(req.files)
    if not local and model is not None and model.weights_path:
        local = [Path(model.weights_path)]
    if not local:
        raise UsageError(
            f"no weights file for {req.model}",
            hint="pass --file PATH (add --set-default to remember it for the next version)",
        )
    for f in local:
        if not f.is_file():
            raise UsageError(
                f"weights file {f} does not exist" if not f.exists() else f"{f} is not a file",
                hint="train first, or pass --file PATH",
            )
    return local


def _names(req: PublishRequest, model: LockedModel | None, local: list[Path]) -> list[str]:
    """Names at the remote: --as, else the model's established name, else the local names."""
    if req.names:
        if len(req.names) != len(local):
            raise UsageError(f"--as names {len(req.names)} file(s), but {len(local)} are given")
        names = list(req.names)
    else:
        names = [f.name for f in local]
        previous = model.versions[model.ordered()[-1]].files if model and model.versions else {}
        if len(local) == 1 and len(previous) == 1:
            names = list(previous)  # the first publish's name stays the name (best.pt)
    for n in names:
        lockfile.check_file_name(n, f"{req.model}@{req.version}")
    if len(set(names)) != len(names):
        raise UsageError(
            f"two files named the same in {req.model}@{req.version}: {', '.join(names)}",
            hint="name them apart with --as NAME for each --file",
        )
    return names


def _previous_requires(model: LockedModel | None, version: str) -> str | None:
    """The range of the version just below ``version`` (seed case 1: same architecture)."""
    if model is None or not model.versions:
        return None
    new = lockfile.parse_version(version)
    older = [v for v in model.ordered() if lockfile.parse_version(v) < new]
    return model.versions[(older or model.ordered())[-1]].requires


def _default_file(req: PublishRequest, model: LockedModel | None) -> tuple[str | None, bool]:
    """The model's default weights file after this publish, and whether it changes.

    ``--file`` is for this publish only; the default changes with ``--set-default``, or on a
    model's first publish (when it has none yet). Either way the CLI says so.
    """
    current = model.weights_path if model else None
    if req.files and (req.set_default or current is None) and len(req.files) == 1:
        new = str(req.files[0])
        return new, new != current
    return current, False


def _record(lock: Lockfile, p: PublishPlan, revision: str, is_hub: bool) -> Place:
    """Pin the version with the remote as source, or list the remote as a mirror."""
    req = p.request
    files = {n: f.digest for n, f in p.files.items()}
    model = lock.models.get(req.model)
    found = model.find(p.version) if model else None
    commit = revision if is_hub and revision else None
    place: Place
    if model is None or found is None:
        lock.pin(
            req.model,
            p.version,
            files,
            requires=p.requires,
            source=p.source,
            commit=commit,
            set_latest=req.set_latest,
            pre=req.pre,
        )
        place = "source"
    else:
        entry = model.versions[found]
        if {f: d.sha256 for f, d in entry.files.items()} != {f: d.sha256 for f, d in files.items()}:
            raise IntegrityError(f"{lock.path}: {req.model}@{found} changed during the publish")
        if entry.source is None or (entry.source == p.source and entry.commit in (None, commit)):
            place = "unchanged" if entry.source == p.source and entry.commit == commit else "source"
            entry.source, entry.commit = p.source, commit or entry.commit
        else:
            place = "mirror" if lock.add_mirror(req.model, found, p.source) else "unchanged"
    if p.signed is not None:
        entry = lock.models[req.model].versions[found or p.version]
        entry.signature = p.signed  # the signature that went with it
    if p.package is not None:
        lock.package = p.package
    m = lock.models[req.model]
    if m.repo is None and parse(p.remote.remote).kind in ("hf", "oci"):
        m.repo = p.remote.remote
    m.weights_path = p.weights_path
    return place
