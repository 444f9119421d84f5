"""OCI registries behind the one remote protocol (``modelcas.remotes.base``).

A version is one CNCF ModelPack artifact, tagged with the version; each file is one
uncompressed layer whose digest is the file's sha256 address (``modelcas.oci.modelpack``).

- **resolve**: the tag (or digest) to the manifest digest, with the manifest and config
  checked; the lock entry's source is ``oci://HOST[:PORT]/REPO@sha256:<manifest>``.
- **fetch**: each missing layer through the one fetch path (``modelcas.remotes.transfer``):
  nothing enters the store unless its sha256 and size match the descriptor and the pin.
- **publish**: HEAD the tag first (an existing tag is never moved; one that already holds this
  very manifest is a finished earlier run), HEAD each blob (present ones are not sent; one that
  another repository of the registry holds is mounted), upload the rest from the store's
  read-only objects, PUT the manifest by digest, run the read-back if asked, then PUT the tag
  and resolve it again.
- **signatures**: referrers of the version's manifest (``modelcas.oci.referrers``), found
  through the referrers API or its tag-schema fallback; one sent with a publish is added
  before the tag is created, and the version's manifest never changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelcas.digest import Digest
from modelcas.errors import IntegrityError, RemoteError, RemoteMissingError, TagConflictError
from modelcas.hashing import Progress
from modelcas.oci import modelpack, referrers
from modelcas.oci.client import Client, plain_http_allowed
from modelcas.oci.modelpack import Artifact, Blob, Manifest
from modelcas.oci.reference import Reference, check_tag, parse
from modelcas.remotes import transfer
from modelcas.remotes.base import (
    Fetched,
    Listed,
    Outgoing,
    Published,
    ReadBack,
    RemotePlan,
    RemoteVersion,
    Sink,
    Step,
)
from modelcas.store import ObjectInfo, Store

_MODEL_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


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


@dataclass
class PushResult:
    """What a push did."""

    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    manifest_put: bool = False


class OciRemote:
    """One repository of a registry, as a :class:`~modelcas.remotes.base.Remote`.

    Args:
        reference: the repository (a tag or digest in it is the default for ``resolve``).
        plain_http: use HTTP (default: loopback, or listed in ``MODELCAS_PLAIN_HTTP``).
    """

    def __init__(self, reference: Reference, *, plain_http: bool | None = None) -> None:
        self.reference = reference
        self.url = reference.repo_url
        self.plain_http = plain_http_allowed(reference) if plain_http is None else plain_http
        self._manifests: dict[str, Manifest] = {}

    def client(self, *, timeout: float = 120.0) -> Client:
        """A client for this registry."""
        return Client(self.reference, plain_http=self.plain_http, timeout=timeout)

    def _fetch_client(self) -> Client:
        # A read that stalls this long is below the low-speed limit anyway.
        return self.client(timeout=min(120.0, transfer.SpeedLimit.from_env().seconds))

    # -- resolving -------------------------------------------------------------------------

    def resolve(self, ref: str | None = None) -> RemoteVersion:
        """The manifest a tag or digest names, checked (see ``Remote.resolve``).

        Raises:
            UsageError: no tag or digest.
            RemoteMissingError: no such tag (the message lists the tags there are).
            IntegrityError: the registry served another manifest than the digest names.
            RemoteError: not a ModelPack artifact this modelcas can read, or the registry
                failed.
        """
        wanted = ref or self.reference.digest or self.reference.tag
        if wanted is None:
            from modelcas.errors import UsageError  # noqa: PLC0415

            raise UsageError(
                f"{self.url}: name a tag or a digest", hint=f"{self.url}:VERSION or @sha256:…"
            )
        by_digest = wanted.startswith("sha256:")
        asked = self.reference.at(wanted) if by_digest else self.reference.with_tag(wanted)
        repo = self.reference.repository
        with self.client() as client:
            got = client.get_manifest(repo, wanted)
            if got is None:
                raise self._missing(client, asked)
            body, _ = got
            manifest = modelpack.parse_manifest(body, asked.url)
            if by_digest and manifest.digest != wanted:
                raise IntegrityError(
                    f"{asked.url}: the registry served a manifest whose digest is "
                    f"{manifest.digest}; nothing was stored",
                    hint="the registry's copy is damaged; try another mirror",
                )
            at = self.reference.at(manifest.digest)
            config = modelpack.parse_config(
                _small_blob(client, repo, manifest.config, at.url), manifest, at.url
            )
        self._manifests[manifest.digest] = manifest
        notes = manifest.annotations
        return RemoteVersion(
            self.url,
            at.url,
            ref=wanted,
            revision=manifest.digest,
            version=notes.get(modelpack.VERSION) or config.version or asked.tag,
            model=_model_name(config.name) or repo.rsplit("/", 1)[-1],
            requires=notes.get(modelpack.REQUIRES),
            package=notes.get(modelpack.PACKAGE),
            files=tuple(manifest.files),
        )

    def _missing(self, client: Client, asked: Reference) -> RemoteMissingError:
        try:
            tags = ", ".join(sorted(client.list_tags(self.reference.repository))) or "none"
        except RemoteError:
            tags = "unknown"
        return RemoteMissingError(
            f"{asked.url} does not exist (tags in {self.url}: {tags})",
            hint="check the repository and tag (tags are versions as published, e.g. :v1.1)",
        )

    def _manifest(self, version: RemoteVersion) -> Manifest:
        digest = version.revision
        if digest is None or digest not in self._manifests:
            digest = self.resolve(digest or version.ref).revision
        assert digest is not None
        return self._manifests[digest]

    def listing(self, version: RemoteVersion) -> dict[str, Listed]:
        """The artifact's layers: file path, size, sha256 and media type."""
        m = self._manifest(version)
        return {p: Listed(p, d.size, d.sha256, m.media_types.get(p)) for p, d in m.files.items()}

    def versions(self, model: str) -> dict[str, str]:  # noqa: ARG002 (one repository, one model)
        """``{version: tag}`` for every tag that reads as a version."""
        from modelcas.errors import UsageError  # noqa: PLC0415
        from modelcas.lockfile import parse_version  # noqa: PLC0415 (packaging, on use)

        with self.client() as client:
            tags = client.list_tags(self.reference.repository)
        out = {}
        for t in tags:
            try:
                parse_version(t)
            except UsageError:
                continue  # `latest`, `main`: not versions
            out[t] = t
        return out

    # -- fetching --------------------------------------------------------------------------

    def fetch(
        self,
        version: RemoteVersion,
        want: Mapping[str, Digest | None],
        store: Store,
        *,
        progress: Progress | None = None,
    ) -> list[Fetched]:
        """Download layers into the store, verified (see ``Remote.fetch``).

        A pinned digest is fetched as it is (no manifest needed: blobs are named by digest).
        """
        listed = self.listing(version) if any(d is None for d in want.values()) else {}
        out = []
        with self._fetch_client() as client:
            for name, pinned in want.items():
                if pinned is None and name not in listed:
                    raise RemoteMissingError(f"{version.source} has no file {name!r}")
                digest = pinned or listed[name].digest
                assert digest is not None
                if store.has(digest.sha256):
                    out.append(Fetched(name, store.info(digest.sha256).digest, "store"))
                    continue
                info = _download(
                    client, self.reference.repository, name, digest, store, progress=progress
                )
                out.append(Fetched(name, info.digest, "download"))
        return out

    def stream(self, version: RemoteVersion, listed: Listed, sink: Sink) -> None:  # noqa: ARG002
        """Read one layer into ``sink`` (an audit's read-data)."""
        if listed.sha256 is None:
            raise RemoteError(f"{self.url}: {listed.name} has no digest to read by")
        with self._fetch_client() as client:
            client.read_blob(
                self.reference.repository, f"sha256:{listed.sha256}", listed.size, sink
            )

    # -- signatures ------------------------------------------------------------------------

    def signatures(self, version: RemoteVersion) -> list[bytes]:
        """The signatures referring to the version's manifest (see ``modelcas.oci.referrers``)."""
        digest = version.revision or self.resolve(version.ref).revision
        assert digest is not None
        with self._fetch_client() as client:
            return referrers.read_signatures(client, self.reference.repository, digest)

    def attach_signature(self, version: RemoteVersion, data: bytes) -> str | None:
        """Add a signature as a referrer of the version's manifest (no tag moves).

        Raises:
            RemoteMissingError: the registry has no such manifest.
            RemoteError: the registry failed or refused.
        """
        digest = version.revision or self.resolve(version.ref).revision
        assert digest is not None
        if data in self.signatures(version):
            return None
        repo = self.reference.repository
        with self.client() as client:
            head = client.head_manifest(repo, digest)
            if head is None:
                raise RemoteMissingError(f"{self.reference.at(digest).url} does not exist")
            referrers.push_signature(client, repo, head, data)
        return f"a referrer of {self.reference.at(digest).url}"

    # -- publishing ------------------------------------------------------------------------

    def plan_publish(self, out: Outgoing, *, prune: bool = False) -> RemotePlan:  # noqa: ARG002
        """Look at the registry (HEAD only) and decide what a publish would do.

        Raises:
            UsageError: the version cannot be an OCI tag.
            TagConflictError: the tag exists and points at another manifest.
            RemoteError: the registry failed or refused.
        """
        check_tag(out.version, f"{out.model}@{out.version}")
        tag = self._tag_of(out.version)  # the spelling an equal version was tagged with
        artifact = modelpack.build(
            out.model,
            tag,
            {n: d for n, (_, d) in out.files.items()},
            out.requires,
            package=out.package,
            media_types=out.media_types,
        )
        native = plan_push(
            self.reference.with_tag(tag),
            artifact,
            mount_from=_repositories(out.known_places, self.reference),
            plain_http=self.plain_http,
        )
        steps = [
            Step(
                s.name,
                s.action,
                s.blob.digest,
                f"mounted from {s.mount_from}" if s.action == "mount" else None,
            )
            for s in native.steps
        ]
        return RemotePlan(
            self.url,
            tag,
            native.source,
            steps,
            tag_exists=native.done,
            repo_exists=native.tag_digest is not None or self._has_tags(),
            revision=artifact.digest,
            native=native,
        )

    def _tag_of(self, version: str) -> str:
        """The tag a version has here: itself, or the tag PEP 440 calls equal to it.

        ``1.0.0`` is ``v1.0``'s tag when that exists; else the version is a new tag.

        Raises:
            RemoteError: the registry failed or refused to list the tags.
        """
        from modelcas.lockfile import same_version  # noqa: PLC0415 (packaging, on use)

        try:
            with self.client() as client:
                tags = client.list_tags(self.reference.repository)
        except RemoteMissingError:
            return version  # a new repository
        if version in tags:
            return version
        return next((t for t in sorted(tags) if same_version(t, version)), version)

    def _has_tags(self) -> bool:
        """Whether the repository exists (has a tag); one that cannot be listed counts as yes."""
        try:
            with self.client() as client:
                return bool(client.list_tags(self.reference.repository))
        except RemoteMissingError:
            return False
        except RemoteError:
            return True

    def publish(
        self,
        plan: RemotePlan,
        out: Outgoing,
        store: Store,
        *,
        progress: Progress | None = None,
        read_back: ReadBack | None = None,
    ) -> Published:
        """Carry out a plan: blobs, the manifest by digest, the read-back, then the tag."""
        native: PushPlan = plan.native
        digest = native.artifact.digest
        signed: list[str | None] = []

        def check() -> None:
            if out.signature is not None:
                # Before the tag: a tagged version has its signature.
                at = RemoteVersion(self.url, native.source, ref=digest, revision=digest)
                where = self.attach_signature(at, out.signature)
                signed.append(where or f"a referrer of {native.source} (there already)")
            if read_back is not None:
                self._manifests[digest] = modelpack.parse_manifest(
                    native.artifact.manifest, native.source
                )
                read_back(
                    RemoteVersion(
                        self.url,
                        native.source,
                        ref=digest,
                        revision=digest,
                        version=out.version,
                        model=out.model,
                        files=tuple(sorted(out.files)),
                    )
                )

        result = push(native, store, progress=progress, before_tag=check)
        files = set(out.files)
        return Published(
            native.source,
            digest,
            [n for n in result.uploaded if n in files],
            [n for n in result.mounted if n in files],
            [n for n in result.present if n in files],
            [],
            signed=signed[0] if signed else None,
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
    return transfer.download(
        store,
        client.opener(repository, digest.address),
        size=digest.size,
        expected=digest,
        where=what,
        key=transfer.resume_key(digest.sha256),
        progress=progress,
    )


def _repositories(places: Iterable[str], target: Reference) -> list[str]:
    """Repositories of the same registry a lockfile already points at (mount sources)."""
    from modelcas.errors import UsageError  # noqa: PLC0415

    found = []
    for place in places:
        if place.startswith("oci://"):
            try:
                ref = parse(place)
            except UsageError:
                continue
            if ref.registry == target.registry:
                found.append(ref.repository)
    return found


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


def push(
    plan: PushPlan,
    store: Store,
    *,
    progress: Progress | None = None,
    before_tag: Callable[[], None] | None = None,
) -> PushResult:
    """Carry out a plan: blobs, then the manifest by digest, then the tag; check the tag.

    Blobs are sent from the store's read-only objects (the registry checks their digest).
    Safe to rerun after a failure at any point: blobs already sent are not sent again, and a
    tag is only ever created by the manifest PUT itself. ``before_tag`` runs once the manifest
    is stored by digest and before the tag points at it (a read-back).

    Raises:
        TagConflictError: the tag appeared meanwhile pointing elsewhere, or was moved after our PUT.
        RemoteError: the registry failed or refused.
    """
    result = PushResult()
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
            if before_tag is not None:
                before_tag()
            return result
        body = artifact.manifest
        client.put_manifest(repo, artifact.digest, body, modelpack.MANIFEST_MEDIA_TYPE)
        if before_tag is not None:
            before_tag()
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
