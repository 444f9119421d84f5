"""``cas verify --remote``: whether a remote holds what the lockfile pins (restic's ``check``).

Without ``read_data`` the remote's own listing (sizes and digests from its metadata: the
Hub's LFS records, an OCI manifest, a directory's catalog and objects, a web server's
``Content-Length``) is compared with the pins. With ``read_data`` every byte is downloaded
and hashed as well (``restic check --read-data``), nothing stored: a server that keeps other
bytes of the same size is caught. ``cas publish --read-back`` runs the same read before it
tags. A directory over NFS may answer a read from this client's page cache, not the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelcas import lockfile
from modelcas.digest import Digest, mismatch
from modelcas.errors import ModelcasError
from modelcas.hashing import Hasher, Progress
from modelcas.hfcache import git_blob_id
from modelcas.lockfile import Lockfile
from modelcas.remotes import Audit, Remote, RemoteVersion, pinned
from modelcas.store import Store


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """Which pins to check at their remotes."""

    ref: str  # NAME (every version) or NAME@VERSION
    lock: Path | None = None
    read_data: bool = False


def audit(
    req: AuditRequest, store: Store | None = None, *, progress: Progress | None = None
) -> list[Audit]:
    """Check every place (source and mirrors) of the named versions against their pins.

    Args:
        req: what to check.
        store: where a local copy may help (the Hub's small git files are compared by their
            git blob id, computed from the local object).
        progress: called with byte counts (``read_data``).

    Returns:
        One :class:`Audit` per version and place; a remote that failed is a problem of that
        audit (fail closed), not an exception.

    Raises:
        NotPinnedError: no such model or version.
        UsageError: a version has no source to check.
    """
    from modelcas.errors import UsageError  # noqa: PLC0415

    path = lockfile.locate(req.lock)
    lock = Lockfile.load(path)
    name, version = lockfile.split_ref(req.ref)
    model = lock.model(name)
    versions = [lock.version(name, version)[0]] if version else model.ordered()
    out = []
    for v in versions:
        entry = model.versions[v]
        places = [p for p in (entry.source, *entry.mirrors) if p]
        if not places:
            raise UsageError(
                f"{path}: {name}@{v} has no source or mirror to check",
                hint="publish or push it somewhere first",
            )
        for place in places:
            at_source = place == entry.source
            try:
                remote, at = pinned(
                    place,
                    model=name,
                    version=v,
                    commit=entry.commit if at_source else None,
                    validator=entry.validator if at_source else None,
                )
                out.append(
                    audit_version(
                        remote,
                        at,
                        entry.files,
                        name,
                        v,
                        read_data=req.read_data,
                        store=store,
                        progress=progress,
                    )
                )
            except ModelcasError as e:
                failed = Audit(place, place, name, v, req.read_data)
                failed.problems.append(f"cannot check: {e.message}")
                out.append(failed)
    return out


def audit_version(
    remote: Remote,
    at: RemoteVersion,
    pins: Mapping[str, Digest],
    model: str,
    version: str,
    *,
    read_data: bool = False,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Audit:
    """Compare one version at a remote with its pins (see the module docstring).

    Raises:
        RemoteError: the remote failed (its listing could not be read).
    """
    result = Audit(remote.url, at.source, model, version, read_data)
    listing = remote.listing(at)
    for name, want in sorted(pins.items()):
        listed = listing.get(name)
        result.checked.append(name)
        if listed is None:
            result.problems.append(f"{name}: missing at {at.source} (pinned {want.address})")
            continue
        if listed.size != want.size:
            result.problems.append(
                f"{name}: the remote lists {listed.size} bytes, the pin says {want.size}"
            )
            continue
        if listed.sha256 is not None and listed.sha256 != want.sha256:
            result.problems.append(
                f"{name}: the remote lists sha256:{listed.sha256}, the pin says {want.address}"
            )
            continue
        if listed.sha256 is None and listed.git_blob is None and not read_data:
            if listed.validator is None or listed.validator != at.validator:
                was = f"was {at.validator}, now " if at.validator else ""
                result.problems.append(
                    f"{name}: the server records no digest, and its validator "
                    f"({was}{listed.validator or 'none'}) does not show it unchanged; check its "
                    "bytes with --read-data"
                )
            continue
        if listed.sha256 is None and not read_data:
            local = store.object_path(want.sha256) if store and store.has(want.sha256) else None
            if local is None or listed.git_blob != git_blob_id(local.read_bytes()):
                result.problems.append(
                    f"{name}: the remote records no sha256 for it"
                    + (" and its git blob id differs" if local is not None else "")
                    + "; check its bytes with --read-data"
                )
            continue
        if read_data:
            hasher = Hasher()
            count = [0]

            def take(
                data: bytes | memoryview, hasher: Hasher = hasher, count: list[int] = count
            ) -> None:
                hasher.update(data)
                count[0] += len(data)
                if progress is not None:
                    progress(len(data))

            try:
                remote.stream(at, listed, take)
            except ModelcasError as e:
                result.problems.append(f"{name}: reading it back failed: {e.message}")
                continue
            result.bytes_read += count[0]
            got = hasher.hashes()
            if (m := mismatch(want, got)) is not None:
                result.problems.append(
                    f"{name}: the remote serves {m.actual}, the pin says {m.expected}"
                )
    return result
