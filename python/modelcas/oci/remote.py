"""OCI registries as a remote: publish a version as a ModelPack artifact, pull one, fetch pins.

Operations with typed results and no printing; ``cas publish --to oci://``, ``cas pull
oci://`` and ``cas sync`` call them.

- **publish**: HEAD the tag first (an existing tag is never moved; one that already holds this
  very manifest is a finished earlier run), HEAD each blob (present ones are not sent; one that
  another repository of the registry holds is mounted), upload the rest from the store's
  read-only objects, PUT the manifest by digest, then by tag, and resolve the tag again.
- **pull**: resolve the tag to the manifest digest, check the manifest and config, and stream
  each missing layer through the store's writer: nothing enters the store unless its sha256 and
  size match the descriptor (and the lockfile's pin, when there is one).
- **fetch** (``cas sync``, ``Registry.path``): GET one blob by the pinned digest, verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelcas.digest import Digest
from modelcas.errors import IntegrityError, LockfileError, RemoteError, TagConflictError, UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import LockedVersion, Lockfile, parse_version
from modelcas.oci import modelpack
from modelcas.oci.client import Client, plain_http_allowed
from modelcas.oci.modelpack import Artifact, Blob
from modelcas.oci.reference import Reference, check_tag, parse
from modelcas.pinning import write_pins
from modelcas.store import ObjectInfo, Store

_MODEL_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


class OciRemote:
    """One repository of a registry, as a lock entry's source: ``oci://HOST[:PORT]/REPO@sha256:…``.

    Args:
        reference: the repository (its tag or digest does not matter to a fetch: blobs are
            fetched by the pinned digest).
        plain_http: use HTTP (default: loopback, or listed in ``MODELCAS_PLAIN_HTTP``).
    """

    def __init__(self, reference: Reference, *, plain_http: bool | None = None) -> None:
        self.reference = reference
        self.url = reference.url
        self.plain_http = plain_http_allowed(reference) if plain_http is None else plain_http

    def client(self) -> Client:
        """A client for this registry."""
        return Client(self.reference, plain_http=self.plain_http)

    def resolve(self) -> str | None:
        """Sources name the manifest by digest: nothing to resolve."""
        return None

    def fetch(
        self,
        file: str,
        digest: Digest,
        store: Store,
        *,
        commit: str | None = None,  # noqa: ARG002 (the digest in the source is the revision)
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Download one pinned blob into the store, verified (see ``remotes.Remote``)."""
        if store.has(digest.sha256):
            return store.info(digest.sha256)
        with self.client() as client:
            return _download(
                client, self.reference.repository, file, digest, store, progress=progress
            )


def _download(
    client: Client,
    repository: str,
    file: str,
    digest: Digest,
    store: Store,
    *,
    progress: Progress | None,
) -> ObjectInfo:
    what = f"{file} from oci://{client.registry}/{repository}@{digest.address}"
    with store.writer(digest, what) as w:
        client.read_blob(repository, digest.address, digest.size, w.write, progress=progress)
        return w.commit()


# -- publish -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobStep:
    """What a publish does with one blob: nothing, a mount from another repository, an upload."""

    name: str
    blob: Blob
    action: Literal["present", "mount", "upload"]
    mount_from: str | None = None


@dataclass
class PushPlan:
    """Everything a publish to a registry will do, computed without changing anything."""

    reference: Reference  # the repository, tagged with the version
    artifact: Artifact
    steps: list[BlobStep]
    tag_digest: str | None  # where the tag points now (None: no such tag)
    plain_http: bool = False

    @property
    def done(self) -> bool:
        """Whether the tag already holds exactly this artifact (an earlier run finished)."""
        return self.tag_digest == self.artifact.digest

    @property
    def source(self) -> str:
        """The lock entry's place: ``oci://HOST[:PORT]/REPO@sha256:<manifest digest>``."""
        return self.reference.at(self.artifact.digest).url

    @property
    def upload_bytes(self) -> int:
        """How many bytes will be sent."""
        return sum(s.blob.digest.size for s in self.steps if s.action != "present")


@dataclass
class PushResult:
    """What a publish did."""

    plan: PushPlan
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    manifest_put: bool = False


def plan_push(
    reference: Reference,
    artifact: Artifact,
    *,
    mount_from: Iterable[str] = (),
    plain_http: bool = False,
) -> PushPlan:
    """Look at the registry (HEAD only) and decide what a publish would do.

    Args:
        reference: the repository; its tag must be the version.
        artifact: what to publish.
        mount_from: other repositories of the same registry that may hold some blobs.
        plain_http: use HTTP.

    Raises:
        TagConflictError: the tag exists and points at another manifest (it is never moved).
        RemoteError: the registry failed or refused.
    """
    assert reference.tag is not None
    with Client(reference, plain_http=plain_http) as client:
        head = client.head_manifest(reference.repository, reference.tag)
        tag_digest = head.digest if head is not None else None
        if tag_digest is not None and tag_digest != artifact.digest:
            raise _moved(reference, tag_digest, artifact.digest)
        steps = []
        others = [r for r in dict.fromkeys(mount_from) if r != reference.repository]
        for name, blob in artifact.blobs():
            d = blob.digest
            if client.has_blob(reference.repository, d.address, d.size):
                steps.append(BlobStep(name, blob, "present"))
                continue
            source = next((r for r in others if _has_blob_quietly(client, r, d)), None)
            steps.append(BlobStep(name, blob, "mount" if source else "upload", source))
    return PushPlan(reference, artifact, steps, tag_digest, plain_http)


def _has_blob_quietly(client: Client, repository: str, d: Digest) -> bool:
    """Whether another repository holds the blob; no permission to look means no."""
    try:
        return client.has_blob(repository, d.address, d.size)
    except RemoteError:
        return False  # a mount only saves an upload


def _moved(reference: Reference, now: str, ours: str) -> TagConflictError:
    return TagConflictError(
        f"{reference.url} already points at {now}, not at this version's manifest {ours}; "
        "refusing to move the tag",
        hint=f"publish a new version instead of {reference.tag}",
    )


def push(plan: PushPlan, store: Store, *, progress: Progress | None = None) -> PushResult:
    """Carry out a plan: blobs, then the manifest by digest, then the tag; check the tag.

    Blobs are sent from the store's read-only objects (the registry checks their digest).
    Safe to rerun after a failure at any point: blobs already sent are not sent again, and a
    tag is only ever created by the manifest PUT itself.

    Raises:
        TagConflictError: the tag appeared meanwhile pointing elsewhere, or was moved after our PUT.
        RemoteError: the registry failed or refused.
    """
    result = PushResult(plan)
    ref, artifact = plan.reference, plan.artifact
    repo = ref.repository
    assert ref.tag is not None
    with Client(ref, plain_http=plan.plain_http) as client:
        for step in plan.steps:
            d = step.blob.digest
            if step.action == "present":
                result.present.append(step.name)
                continue
            session = None
            if step.action == "mount" and step.mount_from is not None:
                session = client.mount_blob(repo, d.address, step.mount_from)
                if session is None:
                    result.mounted.append(step.name)
                    continue
            data = step.blob.data if step.blob.data is not None else store.path(d.sha256)
            client.upload_blob(repo, d.address, data, d.size, session=session, progress=progress)
            result.uploaded.append(step.name)
        if plan.done:
            return result
        body = artifact.manifest
        client.put_manifest(repo, artifact.digest, body, modelpack.MANIFEST_MEDIA_TYPE)
        head = client.head_manifest(repo, ref.tag)
        if head is not None and head.digest != artifact.digest:
            raise _moved(ref, head.digest, artifact.digest)
        if head is None:
            client.put_manifest(repo, ref.tag, body, modelpack.MANIFEST_MEDIA_TYPE)
            result.manifest_put = True
        after = client.head_manifest(repo, ref.tag)
        if after is None or after.digest != artifact.digest:
            raise TagConflictError(
                f"{ref.url} was moved right after this publish: it points at "
                f"{after.digest if after else 'nothing'}, not at {artifact.digest}",
                hint="someone else is publishing the same version: agree on who owns it",
            )
    return result


@dataclass
class PublishOutcome:
    """What ``publish_version`` did (or, for a dry run, would do) and the lockfile's texts."""

    plan: PushPlan
    result: PushResult | None
    lock_path: Path
    lock_before: str
    lock_after: str
    place: Literal["source", "mirror", "unchanged"]


def publish_version(
    *,
    model: str,
    version: str,
    files: dict[str, tuple[Path, Digest]],
    to: str,
    lock_path: Path,
    store: Store,
    requires: str | None = None,
    weights_path: str | None = None,
    latest: bool = True,
    plain_http: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PublishOutcome:
    """Publish a version to a registry and record where it is in the lockfile.

    Args:
        model: the model name in the lockfile.
        version: the version; it becomes the tag, so the OCI tag grammar must allow it.
        files: name in the artifact -> (local file, digest); for a real publish each is in
            the store already.
        to: ``oci://HOST[:PORT]/REPO`` (no tag: the version is the tag).
        lock_path: the lockfile to update.
        store: the local store the blobs are sent from.
        requires: the version's ``requires`` range (a version already pinned keeps its own;
            another one is refused).
        weights_path: remembered as the model's default file.
        latest: move ``latest``.
        plain_http: use HTTP for a registry that is not on loopback.
        dry_run: look (HEAD requests) and compute the lockfile after, change nothing.
        progress: called with bytes sent.

    Returns:
        The plan, what was done, and the lockfile's text before and after. A version already
        pinned (say, from the Hub) gets the registry as a mirror, and its artifact carries the
        ``requires`` the lockfile pins; a new one gets the registry as source.

    Raises:
        UsageError: the version cannot be a tag, or ``to`` is not a repository.
        LockfileError: the lockfile pins this version to other files.
        TagConflictError: the tag holds something else (exit 1).
        RemoteError: the registry failed or refused.
    """
    target = parse(to)
    if target.tag or target.digest:
        raise UsageError(
            f"--to {to}: name the repository only; the version {version} becomes the tag",
            hint=f"--to {target.repo_url}",
        )
    check_tag(version, f"{model}@{version}")
    digests = {name: d for name, (_, d) in files.items()}
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile(path=lock_path)
    before = lock.dumps() if lock_path.exists() else ""
    model_entry = lock.models.get(model)
    if model_entry is not None and version in model_entry.versions:
        # A version already pinned (say, from the Hub) keeps the range it was published with.
        pinned = model_entry.versions[version].requires
        if requires is not None and requires != pinned:
            raise LockfileError(
                f"{lock_path}: {model}@{version} is pinned with requires {pinned!r}, "
                f"not {requires!r}",
                hint="a published version keeps its range: drop --requires, or publish a new "
                "version",
            )
        requires = pinned
    artifact = modelpack.build(model, version, digests, requires)
    plan = plan_push(
        target.with_tag(version),
        artifact,
        mount_from=_repositories_on(lock, target),
        plain_http=plain_http or plain_http_allowed(target),
    )
    after, place = _record(lock, plan, requires, weights_path, latest)
    if dry_run:
        return PublishOutcome(plan, None, lock_path, before, after, place)
    result = push(plan, store, progress=progress)
    local = {d: path for path, d in files.values()}
    write_pins(
        store,
        lock_path,
        lambda fresh: _record(fresh, plan, requires, weights_path, latest),
        list(local),
        lambda d: store.add_file(local[d], expected=d),
    )
    return PublishOutcome(plan, result, lock_path, before, after, place)


def _repositories_on(lock: Lockfile, target: Reference) -> list[str]:
    """Repositories of the same registry the lockfile already points at (mount sources)."""
    found = []
    for model in lock.models.values():
        for entry in model.versions.values():
            for place in (entry.source, *entry.mirrors):
                if place and place.startswith("oci://"):
                    try:
                        ref = parse(place)
                    except UsageError:
                        continue
                    if ref.registry == target.registry:
                        found.append(ref.repository)
    return found


def _record(
    lock: Lockfile,
    plan: PushPlan,
    requires: str | None,
    weights_path: str | None,
    latest: bool,
) -> tuple[str, Literal["source", "mirror", "unchanged"]]:
    """Pin the version with the registry as source, or list the registry as a mirror."""
    artifact = plan.artifact
    name, version = artifact.name, artifact.version
    assert version is not None
    model = lock.models.get(name)
    existing = model.versions.get(version) if model else None
    place: Literal["source", "mirror", "unchanged"]
    if existing is None:
        lock.pin(
            name,
            version,
            artifact.files,
            requires=requires,
            source=plan.source,
            set_latest=latest,
        )
        place = "source"
    else:
        if {f: d.sha256 for f, d in existing.files.items()} != {
            f: d.sha256 for f, d in artifact.files.items()
        }:
            raise LockfileError(
                f"{lock.path}: {name}@{version} is pinned to other files than the ones being "
                f"published ({', '.join(existing.files)})",
                hint="publish a new version, or pass the files the version pins",
            )
        had_source = existing.source is not None
        changed = lock.add_mirror(name, version, plan.source)
        place = "unchanged" if not changed else ("mirror" if had_source else "source")
    if weights_path is not None:
        lock.models[name].weights_path = weights_path
    return lock.dumps(), place


# -- pull ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PulledFile:
    """One file of a pulled version: its name, digest, and whether it was downloaded."""

    path: str
    digest: Digest
    downloaded: bool


@dataclass
class PullOutcome:
    """What ``pull_artifact`` did."""

    reference: Reference  # at the manifest digest
    tag: str | None
    name: str
    version: str | None
    requires: str | None
    files: list[PulledFile]
    pinned: Literal["pinned", "already", "mirror", "no"] = "no"
    lock_path: Path | None = None


def pull_artifact(
    ref: str,
    store: Store,
    *,
    name: str | None = None,
    version: str | None = None,
    lock_path: Path | None = None,
    plain_http: bool = False,
    progress: Progress | None = None,
) -> PullOutcome:
    """Pull a ModelPack artifact into the store, verified, and pin it (unless no lock).

    Args:
        ref: ``oci://HOST[:PORT]/REPO:TAG`` or ``...@sha256:…``.
        store: where the files go.
        name: the model name to pin (default: the config's descriptor name, else the
            repository's last component).
        version: the version to pin (default: the artifact's version annotation or descriptor
            version, else the tag).
        lock_path: the lockfile to pin into; None fetches only.
        plain_http: use HTTP for a registry that is not on loopback.
        progress: called with bytes received.

    Raises:
        IntegrityError: any byte differs from its digest, or the lockfile pins other files;
            nothing of that file is stored.
        RemoteError: not a ModelPack artifact this modelcas can read, or the registry failed.
        UsageError: a bad reference, or no version to pin.
    """
    reference = parse(ref)
    if reference.tag is None and reference.digest is None:
        raise UsageError(
            f"{ref}: name a tag or a digest", hint=f"{reference.repo_url}:VERSION or @sha256:…"
        )
    plain = plain_http or plain_http_allowed(reference)
    repo = reference.repository
    with Client(reference, plain_http=plain) as client:
        wanted = reference.digest or reference.tag
        assert wanted is not None
        got = client.get_manifest(repo, wanted)
        if got is None:
            raise _missing(reference)
        body, _ = got
        manifest = modelpack.parse_manifest(body, reference.url)
        if reference.digest and manifest.digest != reference.digest:
            raise IntegrityError(
                f"{reference.url}: the registry served a manifest whose digest is "
                f"{manifest.digest}; nothing was stored",
                hint="the registry's copy is damaged; try another mirror",
            )
        at = reference.at(manifest.digest)
        config_bytes = _small_blob(client, repo, manifest.config, at.url)
        config = modelpack.parse_config(config_bytes, manifest, at.url)
        chosen_name = name or _model_name(config.name) or repo.rsplit("/", 1)[-1]
        chosen_version = (
            version
            or manifest.annotations.get(modelpack.VERSION)
            or config.version
            or reference.tag
        )
        requires = manifest.annotations.get(modelpack.REQUIRES)
        pinned = _pinned_files(lock_path, chosen_name, chosen_version)
        for path, d in manifest.files.items():
            want = pinned.get(path)
            if pinned and (want is None or want.sha256 != d.sha256 or want.size != d.size):
                raise IntegrityError(
                    f"{lock_path}: {chosen_name}@{chosen_version} pins "
                    f"{path} as {want.address if want else 'nothing'}, but {at.url} has "
                    f"{d.address}; nothing was downloaded",
                    hint="the tag moved or the pin is wrong: pin another --version or fix it",
                )
        files = []
        for path, d in manifest.files.items():
            expected = pinned.get(path, d)
            if store.has(d.sha256):
                files.append(PulledFile(path, store.info(d.sha256).digest, False))
                continue
            info = _download(client, repo, path, expected, store, progress=progress)
            files.append(PulledFile(path, info.digest, True))
    outcome = PullOutcome(at, reference.tag, chosen_name, chosen_version, requires, files)
    if lock_path is not None:
        if chosen_version is None:
            raise UsageError(
                f"{at.url} says no version: pass --version to pin it",
                hint="or --no-pin to fetch without pinning",
            )
        parse_version(chosen_version, f"{chosen_name}@{chosen_version}")
        path_of = {f.digest.sha256: f.path for f in files}

        def refill(d: Digest) -> None:  # gc took it before the pin was seen: fetch again
            with Client(reference, plain_http=plain) as again:
                _download(again, repo, path_of[d.sha256], d, store, progress=None)

        outcome.pinned = _pin_pull(lock_path, outcome, store, refill)
        outcome.lock_path = lock_path
    return outcome


def _missing(reference: Reference) -> UsageError:
    return UsageError(
        f"{reference.url} does not exist",
        hint="check the repository and tag (tags are versions as published, e.g. :v1.1)",
    )


def _small_blob(client: Client, repo: str, blob: Blob, where: str) -> bytes:
    d = blob.digest
    if d.size > modelpack.MAX_CONFIG:
        raise IntegrityError(f"{where}: the config blob claims {d.size} bytes; refused")
    parts: list[bytes] = []
    client.read_blob(repo, d.address, d.size, lambda b: parts.append(bytes(b)))
    data = b"".join(parts)
    if hashlib.sha256(data).hexdigest() != d.sha256:
        raise IntegrityError(
            f"{where}: the config blob is not {d.address}; nothing was stored",
            hint="the registry's copy is damaged",
        )
    return data


def _model_name(candidate: str | None) -> str | None:
    if candidate and candidate[0].isalnum() and all(c in _MODEL_NAME_CHARS for c in candidate):
        return candidate
    return None


def _pinned_files(lock_path: Path | None, name: str, version: str | None) -> dict[str, Digest]:
    if lock_path is None or version is None or not lock_path.exists():
        return {}
    lock = Lockfile.load(lock_path)
    model = lock.models.get(name)
    entry = model.versions.get(version) if model else None
    return dict(entry.files) if entry else {}


def _pin_pull(
    lock_path: Path, outcome: PullOutcome, store: Store, refill: Callable[[Digest], object]
) -> Literal["pinned", "already", "mirror"]:
    version = outcome.version
    assert version is not None
    place = outcome.reference.url
    files = {f.path: f.digest for f in outcome.files}

    def change(lock: Lockfile) -> Literal["pinned", "already", "mirror"]:
        model = lock.models.get(outcome.name)
        if model is not None and version in model.versions:
            return "mirror" if lock.add_mirror(outcome.name, version, place) else "already"
        if lock.trusted(outcome.name):
            # Signatures do not travel with OCI artifacts yet: a new version of a model with
            # trusted signers is refused (docs/signing.md).
            from modelcas.signing import check_trusted  # noqa: PLC0415

            check_trusted(lock, outcome.name, version, store, entry=LockedVersion(files))
        lock.pin(outcome.name, version, files, requires=outcome.requires, source=place)
        return "pinned"

    return write_pins(store, lock_path, change, list(files.values()), refill)
