"""A version's signatures in a registry: referrers of its manifest (OCI 1.1).

A signature is an artifact of its own whose manifest names the version's manifest as its
``subject``. The version's manifest, whose digest the lockfile pins, never changes (a layer
added to it would change that digest), and a version can gain signatures after it was
published, from anyone allowed to push to the repository.

- The signature's manifest: ``artifactType`` is the Sigstore bundle's media type
  (``application/vnd.dev.sigstore.bundle.v0.3+json``, as cosign stores bundles), the config
  is OCI's empty descriptor, and its one layer is the bundle, titled ``model.sig``.
- Finding them: ``GET /v2/REPO/referrers/DIGEST`` (distribution spec 1.1). A registry without
  that API answers 404 (Debian's ``docker-registry`` is distribution 2.8, which predates it);
  then the referrers tag schema's fallback is read: the tag ``sha256-<hex>`` holding an image
  index of the referrers.
- Adding one: the blobs, then the manifest by digest; unless the registry answers that it
  indexed the subject itself (``OCI-Subject``), the fallback tag's index is read and put back
  with the new referrer added. The version's tag is never touched.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modelcas.errors import IntegrityError, RemoteError
from modelcas.oci.client import MAX_MANIFEST, Client, ManifestHead, pull_scope, push_scope

SIGNATURE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
PREDICATE = "dev.sigstore.bundle.predicateType"
MODEL_SIGNING = "https://model_signing/signature/v1.0"
TITLE = "org.opencontainers.image.title"
MAX_SIGNATURE = 64 << 20  # as modelcas.signing reads one
MAX_SIGNATURES = 32  # the newest read; a repository anyone can push to cannot make a pull slow
_NO_API = (404, 405, 501)  # no referrers endpoint: the spec's 404, and what proxies answer


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a manifest: ``sha256:<hex>`` -> ``sha256-<hex>``."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart[:64]}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_manifest(data: bytes, subject: ManifestHead) -> bytes:
    """The manifest of a signature referring to ``subject`` (deterministic bytes)."""
    return _dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": SIGNATURE_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "digest": _digest(EMPTY), "size": len(EMPTY)},
            "layers": [
                {
                    "mediaType": SIGNATURE_TYPE,
                    "digest": _digest(data),
                    "size": len(data),
                    "annotations": {TITLE: "model.sig"},
                }
            ],
            "subject": {
                "mediaType": subject.media_type or MANIFEST_TYPE,
                "digest": subject.digest,
                "size": subject.size,
            },
            "annotations": {PREDICATE: MODEL_SIGNING},
        }
    )


def referrers(client: Client, repository: str, subject: str) -> list[dict[str, Any]]:
    """The descriptors of the signatures referring to ``subject``, newest first where known.

    Raises:
        RemoteError: the registry failed, or its answer is not an image index.
    """
    url = f"{client.base}/v2/{repository}/referrers/{subject}?artifactType={SIGNATURE_TYPE}"
    with client.open("GET", url, (pull_scope(repository),), {"Accept": INDEX_TYPE}) as r:
        if r.status in _NO_API:
            r.read()
            got = client.get_manifest(repository, fallback_tag(subject))
            body = got[0] if got is not None else None
        else:
            client.expect(r, (200,), f"list the referrers of {repository}@{subject}")
            body = r.read(MAX_MANIFEST + 1)
    if body is None:
        return []
    manifests = _index(body, f"{client.registry}/{repository} referrers of {subject}")
    # The fallback index lists referrers in the order they were added: newest last.
    return [m for m in reversed(manifests) if m.get("artifactType") == SIGNATURE_TYPE]


def _index(body: bytes, where: str) -> list[dict[str, Any]]:
    try:
        if len(body) > MAX_MANIFEST:
            raise ValueError("larger than a manifest may be")
        raw = json.loads(body)
        manifests = raw.get("manifests") if isinstance(raw, dict) else None
        if not isinstance(manifests, list):
            raise ValueError("no manifests list")  # noqa: TRY004 (one except for all)
    except (ValueError, RecursionError) as e:
        raise RemoteError(f"{where}: not an image index: {e}") from None
    return [m for m in manifests if isinstance(m, dict) and isinstance(m.get("digest"), str)]


def read_signatures(client: Client, repository: str, subject: str) -> list[bytes]:
    """The bundles of the signatures referring to ``subject`` (checked by digest, bounded).

    A referrer that is not a signature in this shape (another tool's artifact) is skipped.

    Raises:
        IntegrityError: the registry served other bytes than a digest names.
        RemoteError: the registry failed.
    """
    out = []
    for descriptor in referrers(client, repository, subject)[:MAX_SIGNATURES]:
        digest = descriptor["digest"]
        got = client.get_manifest(repository, digest)
        if got is None:
            continue  # listed in a fallback index, since deleted
        body, _ = got
        where = f"oci://{client.registry}/{repository}@{digest}"
        if _digest(body) != digest:
            raise IntegrityError(
                f"{where}: the registry served a manifest of another digest; nothing was taken",
                hint="the registry's copy is damaged",
            )
        layer = _signature_layer(body, subject)
        if layer is None:
            continue
        size, blob = layer
        got_bytes = bytearray()
        client.read_blob(repository, blob, size, got_bytes.extend)
        data = bytes(got_bytes)
        if _digest(data) != blob:
            raise IntegrityError(
                f"{where}: the signature blob is not {blob}; nothing was taken",
                hint="the registry's copy is damaged",
            )
        out.append(data)
    return out


def _signature_layer(body: bytes, subject: str) -> tuple[int, str] | None:
    """The (size, digest) of a signature manifest's bundle layer, if it is one for ``subject``."""
    try:
        raw = json.loads(body)
        layer = raw["layers"][0]
        size, digest = layer["size"], layer["digest"]
        if (
            raw.get("artifactType") != SIGNATURE_TYPE
            or raw["subject"]["digest"] != subject
            or layer.get("mediaType") != SIGNATURE_TYPE
            or not isinstance(size, int)
            or not 0 < size <= MAX_SIGNATURE
            or not isinstance(digest, str)
            or not digest.startswith("sha256:")
        ):
            return None
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return None
    return size, digest


def push_signature(client: Client, repository: str, subject: ManifestHead, data: bytes) -> str:
    """Add a signature referring to ``subject``; returns its manifest digest.

    Safe to rerun: blobs and a manifest already there are not sent again, and a fallback
    index that lists the referrer already is left as it is.

    Raises:
        RemoteError: the registry failed or refused.
    """
    for blob in (EMPTY, data):
        digest = _digest(blob)
        if not client.has_blob(repository, digest, len(blob)):
            client.upload_blob(repository, digest, blob, len(blob))
    body = signature_manifest(data, subject)
    digest = _digest(body)
    url = f"{client.base}/v2/{repository}/manifests/{digest}"
    scopes = (push_scope(repository),)
    with client.open("PUT", url, scopes, {"Content-Type": MANIFEST_TYPE}, body) as r:
        r.read()
        client.expect(r, (201, 200), f"PUT the signature manifest of {repository}@{subject}")
        indexed = r.getheader("OCI-Subject") == subject.digest
    if not indexed:
        _add_to_fallback(client, repository, subject.digest, digest, len(body))
    return digest


def _add_to_fallback(client: Client, repository: str, subject: str, digest: str, size: int) -> None:
    """List a referrer in the fallback tag's index (created if there is none)."""
    tag = fallback_tag(subject)
    got = client.get_manifest(repository, tag)
    manifests = _index(got[0], f"{client.registry}/{repository}:{tag}") if got else []
    if any(m.get("digest") == digest for m in manifests):
        return
    manifests.append(
        {
            "mediaType": MANIFEST_TYPE,
            "digest": digest,
            "size": size,
            "artifactType": SIGNATURE_TYPE,
            "annotations": {PREDICATE: MODEL_SIGNING},
        }
    )
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
    client.put_manifest(repository, tag, _dumps(index), INDEX_TYPE)
