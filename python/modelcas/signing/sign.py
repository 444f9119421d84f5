"""Making a signature for pinned files, in ``model_signing``'s format, without reading them.

The statement is the one ``model_signing sign`` writes for a directory holding these files
under these names: an in-toto statement of predicate type
``https://model_signing/signature/v1.0`` whose resources are the files' sha256 digests,
serialised ``files``-wise, in a DSSE envelope inside a Sigstore bundle. The digests come from
the pins, so signing a verified version costs no second hash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelcas.digest import Digest
from modelcas.errors import UsageError
from modelcas.signing import _lib, keys

# What `model_signing sign` records as ignored when the signature is written as `model.sig`
# inside the model's folder: its own signature and git's files. Recording the same list
# means `model_signing verify` accepts the folder with or without `model.sig` in it.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")  # skipped unless asked not to
IGNORED = (*GIT_PATHS, "model.sig")
SIGNATURE_NAME = "model.sig"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How to sign: a private key, and for the PKI method its certificate and chain."""

    key: Path
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Signed:
    """A signature: its bytes (a Sigstore bundle, JSON) and the signer's key fingerprint."""

    data: bytes
    signer: str


def ignored_name(name: str) -> str | None:
    """The ignored path a file name falls under (a verifier would skip it), or None."""
    first = PurePosixPath(name).parts[0]
    return first if first in IGNORED else None


def sign_files(files: Mapping[str, Digest], subject: str, how: KeySpec) -> Signed:
    """Sign pinned files by name and sha256.

    Args:
        files: the version's files, by the name they are pinned as (relative POSIX paths).
        subject: the statement's subject name (informative: ``model_signing`` uses the
            folder's name; we use ``model@version``).
        how: the key, and for the PKI method the certificate and its chain.

    Returns:
        The signature bytes and the signer's fingerprint.

    Raises:
        UsageError: a key or certificate that cannot sign, or a file name a verifier would
            skip (``.git*``, ``model.sig``).
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    lib = _lib.load("signing")
    for name in files:
        if (ignored := ignored_name(name)) is not None:
            raise UsageError(
                f"{subject}: the pinned file {name!r} would be skipped by model_signing's "
                f"verifier (it ignores {ignored!r}), so a signature cannot cover it",
                hint="pin it under another name",
            )
    private = keys.load_private_key(how.key)
    items = [
        lib.manifest.FileManifestItem(
            path=PurePosixPath(name),
            digest=lib.digest.Digest("sha256", bytes.fromhex(d.sha256)),
        )
        for name, d in sorted(files.items())
    ]
    # `_FileSerialization` is what `hashing.Config().use_file_serialization()` builds; the
    # public API gives no way to hand it digests we already have.
    serialization = lib.manifest._FileSerialization(
        "sha256", allow_symlinks=False, ignore_paths=list(IGNORED)
    )
    manifest = lib.manifest.Manifest(subject, items, serialization)
    payload = lib.signing.Payload(manifest)
    try:
        if how.certificate is None:
            signer = lib.ec_key.Signer(how.key)
        else:
            for path in (how.certificate, *how.chain):
                keys.load_certificates(path, "a PEM certificate")
            signer = lib.certificate.Signer(how.key, how.certificate, list(how.chain))
    except ValueError as e:
        # The library's own refusal: a certificate whose key is not this private key.
        raise UsageError(f"{how.certificate or how.key}: {e}") from None
    bundle = signer.sign(payload).bundle
    return Signed(bundle.to_json().encode("utf-8"), keys.key_fingerprint(private.public_key()))


def write_signature(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write signature bytes to a file (atomically: a crash leaves no half signature)."""
    from modelcas.store import atomic_write  # noqa: PLC0415

    target = Path(path)
    atomic_write(target, data)
    return target
