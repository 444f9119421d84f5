"""``cas publish``: publish a version of a model's weights to the Hugging Face Hub.

One step, as the seed's ``publish_weights.py`` did, but failing closed: hash and store the
files, create the repo if missing, commit exactly the version's files (deleting what the
version does not pin), read back what the Hub recorded for every file, and only then tag
``weights-VERSION`` and pin the version. A tag holds exactly its version's files and is never
moved; a mismatch creates no tag and no pin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from modelcas import hub, lockfile
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, RemoteError, UsageError
from modelcas.hashing import Progress, hash_file
from modelcas.lockfile import LockedModel, Lockfile
from modelcas.ops.add import refuse_lfs_pointer
from modelcas.pinning import write_pins
from modelcas.remotes import parse_source
from modelcas.store import Store


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What to publish. Defaults come from the model's earlier versions in the lockfile."""

    model: str
    version: str
    files: tuple[Path, ...] = ()  # this publish only; default: the model's weights-path
    names: tuple[str, ...] = ()  # names on the Hub and in the lockfile (--as)
    repo: str | None = None  # ORG/NAME; default: the model's repo
    requires: str | None = None  # default: the previous version's range
    package: str | None = None  # default: the lockfile's, else the nearest pyproject's
    lock: Path | None = None
    set_default: bool = False  # remember files[0] as the model's default weights file
    set_latest: bool = True
    pre: bool = False  # let a pre-release become latest
    private: bool = False
    allow_lfs_pointer: bool = False


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of the version: where it is here, and its digest."""

    local: Path
    digest: Digest


@dataclass
class PublishPlan:
    """Everything a publish will do, computed without changing the Hub or the lockfile."""

    request: PublishRequest
    lock_path: Path
    repo_id: str
    tag: str
    files: dict[str, PlannedFile]  # name on the Hub -> file
    requires: str | None
    package: str | None
    repo_exists: bool
    already_on_hub: set[str] = field(default_factory=set)
    delete: list[str] = field(default_factory=list)  # files of main the version does not pin
    tag_commit: str | None = None  # the tag exists and holds exactly these files
    weights_path: str | None = None
    default_changed: bool = False
    up_to_date: bool = False
    latest: str | None = None  # the model's latest version after the publish
    before: str = ""  # the lockfile's text now
    after: str = ""  # and after the publish (with a placeholder commit)

    @property
    def source(self) -> str:
        """The lock entry's source."""
        return f"hf://{self.repo_id}@{self.tag}"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish did."""

    plan: PublishPlan
    commit: str
    latest: str | None
    uploaded: list[str]


def plan(request: PublishRequest, store: Store, *, dry_run: bool = False) -> PublishPlan:
    """Decide what publishing would do: read the lockfile, hash the files, look at the Hub.

    A real run also stores the files (one pass), so that the pin is valid locally once
    written; a dry run only hashes them and changes nothing, not even the store.

    Raises:
        UsageError: a bad name, version, range, file, or a missing repo/package.
        TagConflictError: the tag exists with other files (tags are never moved).
        RemoteError: the Hub failed.
    """
    req = request
    lockfile.check_name(req.model)
    lock_path = lockfile.locate(req.lock, must_exist=False)
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    model = lock.models.get(req.model)
    repo_id = _repo(req, model)
    local = prepare(req, store, dry_run=dry_run)
    files = local.files
    p = PublishPlan(
        req,
        lock_path,
        repo_id,
        hub.tag_for(req.version),
        files,
        local.requires,
        local.package,
        hub.repo_exists(repo_id),
    )
    p.weights_path, p.default_changed = _default_file(req, model)
    if p.repo_exists:
        _look_at_hub(p)
    existing = model.versions.get(req.version) if model else None
    p.up_to_date = (
        existing is not None
        and p.tag_commit is not None
        and existing.commit == p.tag_commit
        and existing.files == {n: f.digest for n, f in files.items()}
    )
    p.before = lock.dumps() if lock_path.exists() else ""
    after = Lockfile.loads(p.before, lock_path) if p.before else Lockfile(path=lock_path)
    if not p.up_to_date:
        _pin(after, p, "0" * 40)  # refuses a version pinned to other content, before any upload
    p.latest = after.models[req.model].latest
    p.after = after.dumps().replace("0" * 40, "<commit of the upload>")
    return p


@dataclass(frozen=True, slots=True)
class LocalVersion:
    """A version's files here, named as they will be published, with their range."""

    lock_path: Path
    files: dict[str, PlannedFile]
    requires: str | None
    package: str | None


def prepare(req: PublishRequest, store: Store, *, dry_run: bool = False) -> LocalVersion:
    """The files to publish, named and hashed (stored, unless ``dry_run``), and the range.

    The same for every place a version is published to (the Hub, an OCI registry).

    Raises:
        UsageError: a bad name, version, range or file, or no package for the range.
    """
    lockfile.check_name(req.model)
    lockfile.parse_version(req.version, f"{req.model}@{req.version}")
    if req.requires is not None:
        lockfile.parse_requires(req.requires, "--requires")
    lock_path = lockfile.locate(req.lock, must_exist=False)
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    model = lock.models.get(req.model)
    local = _local_files(req, model)
    names = _names(req, model, local)
    requires = req.requires or _previous_requires(model, req.version)
    package = req.package or lock.package or lockfile.project_name(lock_path)
    if requires is not None and package is None:
        raise UsageError(
            f"{req.model}@{req.version} requires {requires!r}, but no package is known whose "
            f"version to check: {lock_path} has no `package:` and no pyproject.toml is above it",
            hint="pass --package DIST (the distribution name, e.g. structflo-cser)",
        )
    files = {}
    for name, path in zip(names, local, strict=True):
        refuse_lfs_pointer(path, allow=req.allow_lfs_pointer)
        digest = hash_file(path).digest() if dry_run else store.add_file(path).info.digest
        files[name] = PlannedFile(path, digest)
    return LocalVersion(lock_path, files, requires, package)


def publish(p: PublishPlan, store: Store, *, progress: Progress | None = None) -> PublishResult:
    """Carry out a plan: commit, read back what the Hub recorded, tag, pin.

    Safe to run again after a failure at any point: uploaded bytes are not sent again, and a
    tag that already holds exactly these files is adopted.

    Raises:
        IntegrityError: the Hub recorded other bytes or other files than were sent; no tag
            was created and nothing was pinned.
        TagConflictError: the tag appeared meanwhile, at another commit.
        RemoteError: the Hub refused or failed; the lockfile is unchanged.
    """
    if p.up_to_date:
        return PublishResult(p, p.tag_commit or "", p.latest, [])
    uploads = [
        hub.Upload(name, store.object_path(f.digest.sha256), f.digest)
        for name, f in sorted(p.files.items())
    ]
    sent = [u.path_in_repo for u in uploads if u.path_in_repo not in p.already_on_hub]
    commit = p.tag_commit or hub.commit_version(
        p.repo_id,
        uploads,
        _metadata(p),
        p.delete,
        f"weights: publish {p.request.model} {p.request.version}",
        private=p.request.private,
        progress=progress,
    )
    _check_recorded(p, commit, store)
    hub.tag(p.repo_id, p.tag, commit)
    by_digest = {f.digest: f.local for f in p.files.values()}
    write_pins(
        store,
        p.lock_path,
        lambda lock: _pin(lock, p, commit),
        list(by_digest),
        lambda d: store.add_file(by_digest[d], expected=d),
    )
    return PublishResult(p, commit, p.latest, sent if not p.tag_commit else [])


def upload_bytes(p: PublishPlan) -> int:
    """How many bytes a publish will send (for a progress bar)."""
    if p.tag_commit or p.up_to_date:
        return 0
    return sum(f.digest.size for n, f in p.files.items() if n not in p.already_on_hub)


# -- planning ----------------------------------------------------------------------------------


def _repo(req: PublishRequest, model: LockedModel | None) -> str:
    repo_id = req.repo
    if repo_id is None and model is not None:
        known = [model.repo, *(model.versions[v].source for v in reversed(model.ordered()))]
        hf = [c for c in known if c and c.startswith("hf://")]
        repo_id = parse_source(hf[0].split("@")[0])[1] if hf else model.repo
    if repo_id is None:
        raise UsageError(
            f"{req.model} has no Hub repo yet",
            hint=f"a new model needs --repo ORG/NAME: cas publish {req.model} "
            f"--version {req.version} --repo ORG/NAME --file PATH",
        )
    parse_source(f"hf://{repo_id}")  # refuses a malformed ORG/NAME
    return repo_id


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
    """Names on the Hub: --as, else the model's established name, else the local names."""
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


def _look_at_hub(p: PublishPlan) -> None:
    tags = hub.weight_tags(p.repo_id)
    main = hub.tree(p.repo_id, "main")
    p.already_on_hub = {
        n for n, f in p.files.items() if n in main and main[n].sha256 == f.digest.sha256
    }
    p.delete = sorted(n for n in main if n not in p.files and n not in hub.NOT_WEIGHTS)
    if p.request.version in tags:
        commit = tags[p.request.version]
        if not _differences(p, hub.tree(p.repo_id, commit), None):
            p.tag_commit = commit  # a rerun after a failure: adopt it
        else:
            raise RemoteError(
                f"tag {p.tag} already exists on hf://{p.repo_id} at commit {commit} with other "
                f"files; refusing to move it",
                hint=f"publish a new version instead of {p.request.version}",
            )


# -- after the commit ----------------------------------------------------------------------


def _differences(
    p: PublishPlan, recorded: dict[str, hub.HubFile], store: Store | None
) -> list[str]:
    """How the Hub's record of a commit differs from the version's files (empty: exactly)."""
    out = []
    for name, f in sorted(p.files.items()):
        got = recorded.get(name)
        if got is None:
            out.append(f"{name} is missing")
        elif got.size != f.digest.size:
            out.append(f"{name} is {got.size} bytes, not {f.digest.size}")
        elif got.sha256 is not None and got.sha256 != f.digest.sha256:
            out.append(f"{name} is sha256:{got.sha256}, not sha256:{f.digest.sha256}")
        elif got.sha256 is None and store is not None:
            blob = _git_blob_id(store.object_path(f.digest.sha256))
            if got.blob_id != blob:
                out.append(f"{name} has git blob {got.blob_id}, not {blob}")
    out += [f"{n} is not part of the version" for n in sorted(recorded) if _extra(n, p)]
    return out


def _extra(name: str, p: PublishPlan) -> bool:
    return name not in p.files and name not in hub.NOT_WEIGHTS


def _check_recorded(p: PublishPlan, commit: str, store: Store) -> None:
    recorded = hub.tree(p.repo_id, commit)
    recorded.update(hub.HubRemote(p.repo_id).files(commit, list(p.files)))
    if diffs := _differences(p, recorded, store):
        raise IntegrityError(
            f"hf://{p.repo_id} commit {commit} does not hold exactly {p.request.model}@"
            f"{p.request.version}: {'; '.join(diffs)}; no tag was created and nothing was pinned",
            hint="the Hub stored something else than was sent: check the repo, then publish again",
        )


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 (git's id)


def _metadata(p: PublishPlan) -> dict[str, object]:
    return {
        "model": p.request.model,
        "version": p.request.version,
        "requires": p.requires,
        "package": p.package,
        "files": {
            n: {"size": f.digest.size, "sha256": f.digest.sha256, "blake3": f.digest.blake3}
            for n, f in sorted(p.files.items())
        },
    }


def _pin(lock: Lockfile, p: PublishPlan, commit: str) -> None:
    lock.pin(
        p.request.model,
        p.request.version,
        {n: f.digest for n, f in p.files.items()},
        requires=p.requires,
        source=p.source,
        commit=commit,
        set_latest=p.request.set_latest,
        pre=p.request.pre,
    )
    if p.package is not None:
        lock.package = p.package
    m = lock.models[p.request.model]
    m.repo = f"hf://{p.repo_id}"
    m.weights_path = p.weights_path
