"""The one remote protocol: what every place that holds versions of weights can do.

A :class:`Remote` works at the level of versions, as restic's repository and uv's index do:

- ``resolve(ref)`` pins what a reference names now (a Hub tag to its commit, an OCI tag to its
  manifest digest, a directory's catalog entry, a URL to its validator): a
  :class:`RemoteVersion`, with what the remote's metadata says (model, version, requires,
  package, which files are the version's);
- ``listing(version)`` says which files it holds, with sizes and digests from its metadata;
- ``fetch(version, want, store)`` brings files into the store, verified while they stream
  (``modelcas.remotes.transfer``: resumable, with one low-speed limit);
- ``stream(version, listed, sink)`` reads one file's bytes without storing them (an audit);
- ``versions(model)`` lists the versions the remote holds, where it can list them;
- ``signatures(version)`` reads the signatures that travel with a version (``model.sig`` in a
  Hub tag's commit or a companion tag's, OCI referrers, files beside a directory's catalog
  entry), newest first: unchecked bytes, for ``modelcas.signing`` to judge.

Writable remotes (the Hub, OCI registries, directories) also plan and carry out a publish:
:class:`RemotePlan` is computed without changing anything (restic's ``PlanPrune``), then
executed; ``attach_signature`` adds a signature to a version already there, without moving
its tag or changing what the lockfile pins (docs/signing.md). Every result is a typed record
that the CLI renders the same way for every remote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from modelcas.digest import Digest
from modelcas.hashing import Progress
from modelcas.store import Store

Origin = Literal["store", "download", "hf-cache"]
Sink = Callable[[bytes | memoryview], object]


@dataclass(frozen=True, slots=True)
class Listed:
    """One file of a version as the remote lists it.

    ``sha256`` is None where the remote records another digest (the Hub's git blob id for a
    small file kept in git): such a file is checked against that digest while it streams.
    """

    name: str
    size: int
    sha256: str | None = None
    media_type: str | None = None
    git_blob: str | None = None  # (Hub) the git blob id of a file kept in git, not LFS
    validator: str | None = None  # (URLs) the server's ETag or Last-Modified

    @property
    def digest(self) -> Digest | None:
        """The file's address, when the remote says it."""
        return Digest(self.sha256, self.size) if self.sha256 is not None else None


@dataclass(frozen=True, slots=True)
class RemoteVersion:
    """A version at a remote, pinned: where it is, and what its metadata says.

    ``source`` is what a lock entry records; ``revision`` is the exact thing that cannot move
    (a Hub commit, an OCI manifest digest; None for a directory, whose objects are named by
    their digests); ``validator`` is a web server's ETag or Last-Modified (plain URLs).
    """

    remote: str
    source: str
    ref: str | None = None
    revision: str | None = None
    version: str | None = None
    model: str | None = None
    requires: str | None = None
    package: str | None = None
    files: tuple[str, ...] | None = None  # the version's own files (None: every listed file)
    validator: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One file fetched (or found present): its name, digest, and where its bytes came from."""

    name: str
    digest: Digest
    origin: Origin
    # (URLs) the validator of the answer the bytes came in: a file that changed on the
    # server during the download was fetched again whole, under its new validator.
    validator: str | None = None

    @property
    def downloaded(self) -> bool:
        """Whether the bytes came over the network."""
        return self.origin == "download"


@dataclass
class Audit:
    """What ``cas verify --remote`` found: the remote's listing (and bytes) against the pins."""

    remote: str
    source: str
    model: str
    version: str
    read_data: bool
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each: file, expected, found
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        """Whether the remote holds exactly what is pinned."""
        return not self.problems


# -- publishing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A version to publish: its files here (stored, or only hashed for a dry run)."""

    model: str
    version: str
    files: dict[str, tuple[Path, Digest]]
    requires: str | None = None
    package: str | None = None
    media_types: dict[str, str] = field(default_factory=dict)  # OCI: name -> layer media type
    known_places: tuple[str, ...] = ()  # where the lockfile already points (OCI mounts)
    private: bool = False  # (Hub) create the repo private
    signature: bytes | None = None  # travels with the version (model_signing's format)


Action = Literal["upload", "present", "mount", "delete", "keep", "prune"]


@dataclass(frozen=True, slots=True)
class Step:
    """What a publish does with one file of the remote.

    ``upload``/``present``/``mount``: a file of the version is sent, is already there, or is
    linked from another repository of the registry. ``delete``: a file an earlier ``cas
    publish`` wrote that this version does not pin. ``keep``: a file ``cas`` never wrote,
    left in place. ``prune``: such a file, removed because ``--prune`` asked for it.
    """

    name: str
    action: Action
    digest: Digest | None = None
    note: str | None = None


@dataclass
class RemotePlan:
    """What a publish to one remote will do, computed without changing anything there."""

    remote: str  # hf://ORG/NAME, oci://HOST/REPO, file:///DIR
    tag: str  # weights-v1.1, v1.1, det@v1.1
    source: str  # what the lock entry records once published
    steps: list[Step]
    tag_exists: bool = False  # the tag already holds exactly this version (a rerun)
    repo_exists: bool = True
    revision: str | None = None  # where the tag points, when it exists
    native: Any = None  # the remote's own plan

    @property
    def upload_bytes(self) -> int:
        """How many bytes will be sent."""
        return sum(s.digest.size for s in self.steps if s.action == "upload" and s.digest)

    def named(self, *actions: Action) -> list[str]:
        """The files with one of these actions."""
        return [s.name for s in self.steps if s.action in actions]


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did at the remote."""

    source: str  # the lock entry's source
    revision: str | None  # the commit (Hub) or manifest digest (OCI)
    uploaded: list[str]
    mounted: list[str]
    present: list[str]
    deleted: list[str]
    signed: str | None = None  # where the version's signature went (None: none was sent)


ReadBack = Callable[[RemoteVersion], None]


class Remote(Protocol):
    """A place that holds versions of weights (see the module docstring)."""

    url: str

    def resolve(self, ref: str | None) -> RemoteVersion:
        """Pin what ``ref`` names now (a tag, a digest, ``NAME@VERSION``; None: the default).

        Raises:
            RemoteError: the remote failed, or has no such version (the message says which
                versions it has).
            UsageError: ``ref`` is not a reference this remote takes.
        """
        ...

    def listing(self, version: RemoteVersion) -> dict[str, Listed]:
        """The files of a version, with sizes and digests from the remote's metadata.

        Raises:
            RemoteError: the remote failed.
        """
        ...

    def fetch(
        self,
        version: RemoteVersion,
        want: Mapping[str, Digest | None],
        store: Store,
        *,
        progress: Progress | None = None,
    ) -> list[Fetched]:
        """Bring files into ``store``, each verified against its pin (or the listing).

        Args:
            version: the version, resolved or rebuilt from a lock entry.
            want: file name -> the pinned digest (None: what the listing says).
            store: the local store.
            progress: called with byte counts.

        Raises:
            IntegrityError: other bytes than pinned or listed; nothing of that file is stored.
            RemoteError: the remote failed, or was too slow (what arrived is kept for the
                next run).
        """
        ...

    def stream(self, version: RemoteVersion, listed: Listed, sink: Sink) -> None:
        """Read one file's bytes into ``sink`` (an audit), with the same limits as a fetch.

        Raises:
            RemoteError: the remote failed.
        """
        ...

    def versions(self, model: str) -> dict[str, str]:
        """``{version: ref}`` for every version the remote holds (``ref`` for ``resolve``).

        Raises:
            UsageError: the remote cannot list versions (a plain URL).
            RemoteError: the remote failed.
        """
        ...

    def signatures(self, version: RemoteVersion) -> list[bytes]:
        """The signatures that travel with a version, newest first ([] where none does).

        Nothing is checked here but size (each is bounded): the caller checks them against
        the pins and the lockfile's ``trust:`` (``modelcas.signing``).

        Raises:
            RemoteError: the remote failed.
        """
        ...


class Writable(Remote, Protocol):
    """A remote that versions can be published to."""

    def plan_publish(self, out: Outgoing, *, prune: bool = False) -> RemotePlan:
        """Look (without changing anything) and decide what publishing ``out`` would do.

        Raises:
            TagConflictError: the version's tag exists with other content (never moved).
            RemoteError: the remote failed.
        """
        ...

    def publish(
        self,
        plan: RemotePlan,
        out: Outgoing,
        store: Store,
        *,
        progress: Progress | None = None,
        read_back: ReadBack | None = None,
    ) -> Published:
        """Carry out a plan; ``read_back`` checks the version before it is tagged.

        Safe to rerun after a failure at any point.

        Raises:
            IntegrityError: the remote recorded other bytes; nothing was tagged.
            TagConflictError: the tag appeared meanwhile, pointing elsewhere.
            RemoteError: the remote failed or refused.
        """
        ...

    def attach_signature(self, version: RemoteVersion, data: bytes) -> str | None:
        """Add a signature to a version the remote holds, moving nothing that is there.

        Returns:
            Where it went (a companion tag, a referrer, a file), or None when the remote
            already had these very bytes for the version.

        Raises:
            UsageError: the version is not one this remote can sign (no version tag).
            RemoteError: the remote failed or refused.
        """
        ...
