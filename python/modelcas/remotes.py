"""Where pinned bytes can be fetched again: a shared directory, or the Hugging Face Hub.

Every remote sits behind one small interface, chosen by the ``source`` string of a lock entry:

- ``file:///lab/shared/cas`` or ``/lab/shared/cas``: a directory with the store's own layout
  (a lab file server, NFS). Writes are rename-based, so several machines can push at once.
- ``hf://org/repo@revision``: the Hugging Face Hub (``modelcas.hub``).
- ``oci://host[:port]/repo@sha256:…``: an OCI registry (``modelcas.oci``).

Every fetch verifies the bytes against the pin while it ingests them into the local store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from modelcas.digest import Digest
from modelcas.errors import RemoteError, UsageError
from modelcas.hashing import Progress
from modelcas.store import ObjectInfo, Store


class Remote(Protocol):
    """A place that holds objects by content."""

    url: str

    def fetch(
        self,
        file: str,
        digest: Digest,
        store: Store,
        *,
        commit: str | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Copy one pinned file into ``store``, verified against ``digest``.

        Args:
            file: the file's name in the version (used by remotes that store by name).
            digest: what the bytes must be.
            store: the local store to ingest into.
            commit: the exact revision pinned, where the remote has revisions.
            progress: called with byte counts.

        Returns:
            The stored object.

        Raises:
            RemoteError: the remote does not have it or failed.
            IntegrityError: it has other bytes than the pin says.
        """
        ...

    def resolve(self) -> str | None:
        """The commit the source's revision points at now (None where there are none)."""
        ...


class DirRemote:
    """A directory with the store's layout, shared by several machines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = self.path.resolve().as_uri()

    def store(self, *, create: bool = False) -> Store:
        """The remote as a store (the same layout); ``create`` makes a new one (a first push).

        Raises:
            RemoteError: the directory does not exist (and ``create`` is false).
        """
        if not create:
            self.check_reachable()
        return Store(self.path)

    def check_reachable(self) -> None:
        """Refuse a remote that is not a directory (unmounted share, typo).

        Raises:
            RemoteError: no such directory.
        """
        if not self.path.is_dir():
            raise RemoteError(
                f"remote {self.url}: no such directory",
                hint="mount the shared storage, or fix the path (or the lockfile's source)",
            )

    def resolve(self) -> str | None:
        """A directory has no revisions."""
        return None

    def fetch(
        self,
        file: str,
        digest: Digest,
        store: Store,
        *,
        commit: str | None = None,  # noqa: ARG002 (a directory has no revisions)
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Copy an object from the shared directory, verifying it (see :class:`Remote`)."""
        remote = self.store()
        obj = remote.object_path(digest.sha256)
        if not obj.is_file() or obj.is_symlink():
            raise RemoteError(
                f"remote {self.url} has no object sha256:{digest.sha256} ({file})",
                hint="push it there first: `cas push " + self.url + "`",
            )
        return store.add_file(obj, expected=digest, progress=progress).info

    def push(self, digest: Digest, store: Store, *, progress: Progress | None = None) -> bool:
        """Copy a local object to the shared directory; False when it was already there.

        The local copy is verified on the way out (the copy is hashed and must match).
        """
        local = store.path(digest.sha256)
        shared = self.store(create=True)
        return not shared.add_file(local, expected=digest, progress=progress).existed


def parse_source(source: str) -> tuple[str, str, str | None]:
    """Split a source into (scheme, location, revision).

    ``hf://org/repo@rev`` gives ("hf", "org/repo", "rev"); ``oci://host:5000/r@sha256:…``
    gives ("oci", "host:5000/r", "sha256:…"); ``file:///x`` and ``/x`` give ("file", "/x", None).

    Raises:
        UsageError: an unknown scheme.
    """
    if source.startswith("hf://"):
        repo, _, revision = source.removeprefix("hf://").partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"{source!r}: expected hf://ORG/NAME[@REVISION]")
        return "hf", repo, revision or None
    if source.startswith("oci://"):
        from modelcas.oci.reference import parse  # noqa: PLC0415 (only for OCI sources)

        ref = parse(source)
        return "oci", f"{ref.registry}/{ref.repository}", ref.digest or ref.tag
    if source.startswith("file://"):
        return "file", unquote(urlparse(source).path), None
    if source.startswith(("/", "./", "../")):
        return "file", source, None
    raise UsageError(
        f"unknown source {source!r}",
        hint="sources look like hf://ORG/NAME@REVISION, oci://HOST[:PORT]/REPO@sha256:…, "
        "file:///PATH or /PATH",
    )


def for_source(source: str) -> Remote:
    """The remote a lock entry's ``source`` points at."""
    scheme, location, revision = parse_source(source)
    if scheme == "hf":
        from modelcas.hub import HubRemote  # noqa: PLC0415 (keeps huggingface_hub off start-up)

        return HubRemote(location, revision)
    if scheme == "oci":
        from modelcas.oci.reference import parse  # noqa: PLC0415 (only for OCI sources)
        from modelcas.oci.remote import OciRemote  # noqa: PLC0415

        return OciRemote(parse(source))
    return DirRemote(location)
