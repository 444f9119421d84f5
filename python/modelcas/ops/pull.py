"""``cas pull`` and ``cas push``: fetch a Hub version and pin it, or share a directory remote.

Every byte is verified against the pin (when the lockfile has one) and against the remote's
own record (the Hub's LFS sha256, or its git blob id) before it enters the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelcas import hub, lockfile
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, RemoteError, UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import LockedVersion, Lockfile
from modelcas.pinning import write_pins
from modelcas.remotes import DirRemote, parse_source
from modelcas.store import Store

Total = Callable[[int], object]  # told how many bytes will move, once that is known


@dataclass(frozen=True, slots=True)
class PullRequest:
    """What to pull, and how to pin it."""

    source: str  # hf://ORG/NAME@REVISION, or a directory remote
    name: str | None = None  # model to pin; default the repo's name
    version: str | None = None  # default: from the weights-VERSION tag
    files: tuple[str, ...] = ()  # only these files
    addresses: tuple[str, ...] = ()  # directory remotes: these objects
    lock: Path | None = None
    pin: bool = True


@dataclass(frozen=True, slots=True)
class PulledFile:
    """One file: its name (or label), digest, and where its bytes came from."""

    name: str
    digest: Digest
    origin: Literal["store", "download", "hf-cache"]

    @property
    def downloaded(self) -> bool:
        """Whether the bytes came over the network."""
        return self.origin == "download"


@dataclass
class PullResult:
    """What a pull did."""

    source: str
    files: list[PulledFile] = field(default_factory=list)
    commit: str | None = None
    model: str | None = None
    version: str | None = None
    lock_path: Path | None = None
    changed: bool = False  # the lockfile was changed

    @property
    def downloaded(self) -> int:
        """How many files were downloaded."""
        return sum(f.downloaded for f in self.files)


def pull(
    req: PullRequest,
    store: Store,
    *,
    progress: Progress | None = None,
    total: Total | None = None,
) -> PullResult:
    """Fetch a Hub version or a directory remote's objects, verified, and pin (Hub).

    Raises:
        UsageError: a malformed source, or files the revision does not have.
        IntegrityError: the remote has other bytes than the pin, or served other bytes.
        RemoteError: the remote failed or is unreachable.
    """
    scheme, location, revision = parse_source(req.source)
    if scheme == "file":
        return _pull_dir(req, location, store, progress, total)
    if req.addresses:
        raise UsageError("addresses apply to directory remotes; for the Hub use --file")
    return _pull_hub(req, (location, revision), store, progress, total)


def _pull_hub(
    req: PullRequest,
    where: tuple[str, str | None],
    store: Store,
    progress: Progress | None,
    total: Total | None,
) -> PullResult:
    repo_id, revision = where
    if revision is None:
        raise UsageError(f"name a revision: hf://{repo_id}@weights-VERSION")
    version = req.version or hub.version_of(revision)
    if version is None and req.pin:
        raise UsageError(
            f"{revision!r} is not a weights-VERSION tag: pass --version",
            hint="or --no-pin to fetch without pinning",
        )
    name = req.name or repo_id.split("/")[1]
    if req.pin:
        lockfile.check_name(name)
        lockfile.parse_version(version or "", f"{name}@{version}")
    lock_path = lockfile.locate(req.lock, must_exist=False)
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    pinned: dict[str, Digest] = {}
    if version is not None and name in lock.models and version in lock.models[name].versions:
        pinned = lock.models[name].versions[version].files
    if req.pin and version is not None and lock.trusted(name):
        # Signatures do not travel with Hub versions yet: only a version already pinned with
        # a trusted signature may be pulled (docs/signing.md).
        from modelcas.signing import check_trusted  # noqa: PLC0415

        entry = lock.models[name].versions.get(version) if name in lock.models else None
        check_trusted(lock, name, version, store, entry=entry or LockedVersion({}))
    remote = hub.HubRemote(repo_id, revision)
    commit = remote.resolve()
    if commit is None:
        raise RemoteError(
            f"HF_HUB_OFFLINE is set and the Hugging Face cache has no {revision} of {repo_id}",
            hint="pull it once online, or `hf download` it; after that it works offline",
        )
    listing = remote.files(commit)
    meta = hub.read_metadata(repo_id, commit) or {}
    wanted = list(req.files) or sorted(
        meta.get("files") or (p for p in listing if p not in hub.NOT_WEIGHTS)
    )
    missing = [f for f in wanted if f not in listing]
    if missing:
        raise UsageError(
            f"hf://{repo_id}@{revision} (commit {commit[:12]}) has no {', '.join(missing)}",
            hint=f"files there: {', '.join(listing) or 'none'}",
        )
    result = PullResult(req.source, commit=commit, lock_path=lock_path)
    todo = [listing[w] for w in wanted]
    for f in todo:
        expected = pinned.get(f.path)
        if expected and f.sha256 and expected.sha256 != f.sha256:
            raise IntegrityError(
                f"{lock_path}: {name}@{version} pins {f.path} as sha256:{expected.sha256}, but "
                f"hf://{repo_id}@{revision} (commit {commit}) has sha256:{f.sha256}",
                hint="the tag moved or the pin is wrong; nothing was downloaded",
            )
    if total is not None:
        total(sum(f.size for f in todo if not (f.sha256 and store.has(f.sha256))))
    for f in todo:
        if f.sha256 and store.has(f.sha256):
            result.files.append(PulledFile(f.path, store.info(f.sha256).digest, "store"))
            continue
        info = remote.download(f, commit, store, pinned.get(f.path), progress=progress)
        cached = f.path in remote.from_hf_cache
        result.files.append(PulledFile(f.path, info.digest, "hf-cache" if cached else "download"))
    if not req.pin or version is None:
        return result
    got = {f.name: f.digest for f in result.files}
    by_digest = {f.digest: listing[f.name] for f in result.files}

    def change(fresh: Lockfile) -> bool:
        changed = fresh.pin(
            name,
            version,
            got,
            requires=meta.get("requires"),
            source=f"hf://{repo_id}@{revision}",
            commit=commit,
        )
        model = fresh.models[name]
        model.repo = model.repo or f"hf://{repo_id}"
        package = meta.get("package")
        if fresh.package is None and isinstance(package, str) and meta.get("requires"):
            fresh.package = package
        return changed

    result.changed = write_pins(
        store,
        lock_path,
        change,
        list(got.values()),
        lambda d: remote.download(by_digest[d], commit, store, d),
    )
    result.model, result.version = name, version
    return result


def _pull_dir(
    req: PullRequest,
    location: str,
    store: Store,
    progress: Progress | None,
    total: Total | None,
) -> PullResult:
    remote = DirRemote(location)
    remote.check_reachable()
    if req.addresses:
        shared = remote.store()
        pins = [(a, shared.info(shared.resolve(a)).digest) for a in req.addresses]
    else:
        from modelcas.registry import open_lock  # noqa: PLC0415
        from modelcas.signing import check_lock  # noqa: PLC0415

        registry = open_lock(req.lock, store=store)
        registry.register()  # first: gc must see the pins before their objects arrive
        check_lock(registry.lock, store)  # nothing a trusted model's lock refuses is fetched
        pins = [(p.label, p.digest) for p in registry.pins()]
    result = PullResult(req.source)
    if total is not None:
        total(sum(d.size for _, d in pins if not store.has(d.sha256)))
    for label, digest in pins:
        if store.has(digest.sha256):
            result.files.append(PulledFile(label, digest, "store"))
            continue
        remote.fetch(label, digest, store, progress=progress)
        result.files.append(PulledFile(label, digest, "download"))
    return result


@dataclass
class PushResult:
    """What a push did."""

    url: str
    sent: list[Digest] = field(default_factory=list)
    present: list[Digest] = field(default_factory=list)


def push(
    dest: str,
    store: Store,
    *,
    addresses: tuple[str, ...] = (),
    lock: Path | None = None,
    progress: Progress | None = None,
    total: Total | None = None,
) -> PushResult:
    """Copy objects (the given addresses, else every pin) to a directory remote, verified.

    Raises:
        UsageError: ``dest`` is not a directory remote.
        RemoteError: it is not reachable.
    """
    scheme, location, _ = parse_source(dest)
    if scheme != "file":
        raise UsageError(
            "cas push takes a directory remote",
            hint="to publish to the Hub or an OCI registry use `cas publish` (`--to oci://…`)",
        )
    remote = DirRemote(location)
    if addresses:
        digests = [store.info(store.resolve(a)).digest for a in addresses]
    else:
        digests = [d for *_, d in Lockfile.load(lockfile.locate(lock)).entries()]
    if total is not None:
        total(sum(d.size for d in digests))
    result = PushResult(remote.url)
    for d in digests:
        (result.sent if remote.push(d, store, progress=progress) else result.present).append(d)
    return result
