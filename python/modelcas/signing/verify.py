"""Checking a signature: who made it, and whether it covers exactly the pinned files.

Where the bytes came from (the store, a file, a remote) does not matter here: a signature is
checked against the signers a caller accepts and the digests the lockfile pins, and nothing is
hashed but the signature itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcas.digest import Digest
from modelcas.errors import SignatureError, UntrustedSignerError, UsageError
from modelcas.lockfile import TrustedSigner
from modelcas.signing import _lib, keys

MAX_SIGNATURE = 64 << 20  # a statement lists every file; 64 MiB is ~400k files
_PREDICATE = "https://model_signing/signature/v1.0"


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """What a valid signature says: who signed, and which files with which digests."""

    signer: str  # sha256:<hex> of the signing public key
    accepted: TrustedSigner  # the trusted entry it matched
    identities: tuple[str, ...]  # a certificate signature's names; () for a bare key
    hash_type: str  # "sha256" (model_signing's default) or "blake3"
    resources: dict[str, str]  # file name -> hex digest
    ignore_paths: tuple[str, ...]  # what the signer left out of a folder

    @property
    def who(self) -> str:
        """The signer, as messages name it."""
        if self.identities:
            return f"{self.identities[0]} (key {self.signer})"
        return f"key {self.signer}"


def open_signature(
    data: bytes, trusted: Sequence[TrustedSigner], label: str, *, claimed: str | None = None
) -> SignedManifest:
    """Check a signature's envelope against the accepted signers and read its manifest.

    Args:
        data: the signature (a Sigstore bundle, JSON).
        trusted: the signers to accept (a ``trust:`` list, or one key given on the command
            line).
        label: ``model@version`` (or a folder), for messages.
        claimed: the signer the lockfile records for it, named when it is not trusted.

    Returns:
        The signer and the signed file digests.

    Raises:
        UntrustedSignerError: made by a key or certificate none of ``trusted`` accepts.
        SignatureError: malformed, or not a valid signature of its statement.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    lib = _lib.load()
    signature = _parse(lib, data, label)
    material = signature.bundle.verification_material
    if material.x509_certificate_chain is not None:
        candidates = [_certificate_verifier(lib, material.x509_certificate_chain, trusted, label)]
    elif material.public_key is not None:
        candidates = _key_verifiers(lib, material.public_key.hint, trusted)
        if not candidates:
            raise _untrusted(label, f"key {claimed}" if claimed else "a key", trusted)
    else:
        raise SignatureError(f"{label}: the signature names neither a key nor a certificate")
    failure = ""
    for candidate in candidates:
        verifier, accepted, signer, names = candidate
        try:
            # model_signing prints a warning for old bundles without a key hint: not ours.
            with contextlib.redirect_stdout(io.StringIO()):
                manifest = verifier.verify(signature)
            break
        except (
            ValueError,
            KeyError,
            TypeError,
            lib.crypto_exceptions.InvalidSignature,
            lib.openssl.X509StoreContextError,  # a chain that does not reach the root
        ) as e:
            failure = f"{accepted.label}: {str(e).strip() or type(e).__name__}"
    else:
        raise SignatureError(
            f"{label}: not a valid signature by {failure}",
            hint="the signature or its statement was changed after signing; sign it again",
        )
    serialization = manifest.serialization_type
    if serialization.get("method") != "files":
        raise SignatureError(
            f"{label}: the signature hashes files in {serialization.get('method')!r} pieces; "
            "modelcas checks whole-file digests (model_signing's default `files` method)",
            hint="sign without sharding",
        )
    resources: dict[str, str] = {}
    hash_types = set()
    for rd in manifest.resource_descriptors():
        resources[rd.identifier] = rd.digest.digest_hex
        hash_types.add(rd.digest.algorithm)
    hash_type = serialization.get("hash_type", "sha256")
    if hash_types - {hash_type} or hash_type not in ("sha256", "blake3"):
        raise SignatureError(
            f"{label}: the signature's digests are {', '.join(sorted(hash_types | {hash_type}))}"
            "; modelcas checks sha256 and blake3",
            hint="sign with sha256 (model_signing's default)",
        )
    return SignedManifest(
        signer,
        accepted,
        tuple(names),
        hash_type,
        resources,
        tuple(str(p) for p in serialization.get("ignore_paths", ())),
    )


def check_files(signed: SignedManifest, files: Mapping[str, Digest], label: str) -> None:
    """The signature must cover exactly these files with exactly these digests.

    Raises:
        SignatureError: a file missing from the signature, one it has that the version
            does not, or a digest that differs (the first of each is named).
    """
    extra = sorted(set(signed.resources) - set(files))
    missing = sorted(set(files) - set(signed.resources))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it does not cover {', '.join(map(repr, missing[:3]))}")
        if extra:
            parts.append(f"it covers {', '.join(map(repr, extra[:3]))}, which the version lacks")
        raise SignatureError(
            f"{label}: the signature by {signed.who} is for other files: {'; '.join(parts)}",
            hint="a renamed, added or removed file needs a new signature",
        )
    for name in sorted(files):
        pinned = files[name]
        ours = pinned.sha256 if signed.hash_type == "sha256" else pinned.blake3
        if ours is None:
            raise SignatureError(
                f"{label}: the signature gives {name!r} as blake3, and the pin has no blake3 "
                "to compare it with",
                hint="re-pin the file (cas add records blake3)",
            )
        if ours != signed.resources[name]:
            raise SignatureError(
                f"{label}: {name!r} differs from what {signed.who} signed: signed "
                f"{signed.hash_type}:{signed.resources[name]}, pinned {signed.hash_type}:{ours}",
                hint="the file changed after signing; sign the new version, or restore it",
            )


def verify_signature(
    data: bytes,
    files: Mapping[str, Digest],
    trusted: Sequence[TrustedSigner],
    label: str,
    *,
    claimed: str | None = None,
) -> SignedManifest:
    """A signature by an accepted signer that covers exactly ``files``.

    Raises:
        UntrustedSignerError, SignatureError: as :func:`open_signature` and
            :func:`check_files`.
    """
    signed = open_signature(data, trusted, label, claimed=claimed)
    check_files(signed, files, label)
    return signed


def read_signature(path: str | os.PathLike[str]) -> bytes:
    """A signature file, read with a bound (it is untrusted input).

    Raises:
        UsageError: missing, not a regular file, or unreadable.
        SignatureError: larger than any signature.
    """
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{p}: not a regular file; expected a signature")
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_SIGNATURE + 1)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file; expected a signature") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read the signature: {e.strerror or e}") from None
    if len(data) > MAX_SIGNATURE:
        raise SignatureError(f"{p}: larger than {MAX_SIGNATURE} bytes, too large for a signature")
    return data


def _parse(lib: _lib.Lib, data: bytes, label: str) -> Any:
    """The library's bundle object, from bytes (its ``Signature.read`` only reads a path)."""
    if len(data) > MAX_SIGNATURE:
        raise SignatureError(f"{label}: {len(data)} bytes is too large for a signature")
    bundle_class, media_type = lib.bundle.bundle_pb.Bundle, lib.bundle._BUNDLE_MEDIA_TYPE
    try:
        parsed = json.loads(data)
        material = parsed["verificationMaterial"]
        # The same normalisation as model_signing's `Signature.read`.
        material.setdefault("tlogEntries", [])
        if "publicKey" in material:
            material["publicKey"].setdefault("hint", None)
            for k in ("rawBytes", "keyDetails"):
                material["publicKey"].pop(k, None)
        signature = lib.bundle.Signature(bundle_class.from_dict(parsed))
        if signature.bundle.media_type != media_type:
            raise ValueError(f"media type {signature.bundle.media_type!r}")
        if signature.bundle.dsse_envelope is None or not signature.bundle.dsse_envelope.signatures:
            raise ValueError("no DSSE envelope")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SignatureError(
            f"{label}: not a model_signing signature (a Sigstore bundle): {why[:200]}"
        ) from None
    return signature


def _pem_hint(key: Any) -> str:
    """model_signing's key hint: sha256 of the key's PEM (not its DER fingerprint)."""
    ser = _lib.load().serialization
    pem = key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _key_verifiers(
    lib: _lib.Lib, hint: str | None, trusted: Sequence[TrustedSigner]
) -> list[tuple[Any, TrustedSigner, str, list[str]]]:
    """Verifiers for the trusted keys the bundle's hint names.

    A bundle without a hint (model_signing before 1.1) is tried against every trusted key.
    """
    found: list[tuple[Any, TrustedSigner, str, list[str]]] = []
    for entry in trusted:
        if entry.key is None:
            continue
        key = keys.key_from_entry(entry)
        if hint is None or hint == _pem_hint(key):
            found.append((_KeyVerifier(lib, key), entry, entry.key, []))
    return found


def _certificate_verifier(
    lib: _lib.Lib, chain: Any, trusted: Sequence[TrustedSigner], label: str
) -> tuple[Any, TrustedSigner, str, list[str]]:
    """The verifier for the trusted entry that accepts the bundle's signing certificate.

    A certificate entry takes its root from the bundle's chain, by fingerprint: the
    fingerprint names those exact bytes, so the copy in the bundle is as good as our own.
    """
    x509 = lib.x509
    try:
        certs = [x509.load_der_x509_certificate(c.raw_bytes) for c in chain.certificates]
    except (ValueError, TypeError) as e:
        raise SignatureError(
            f"{label}: the signature's certificate chain is malformed: {e}"
        ) from None
    if not certs:
        raise SignatureError(f"{label}: the signature's certificate chain is empty")
    leaf = certs[0]
    names = keys.identities(leaf)
    signer = keys.key_fingerprint(leaf.public_key())
    by_fingerprint = {keys.certificate_fingerprint(c): c for c in certs}
    # A key entry accepts bare-key signatures only: a certificate is trusted through its root.
    for entry in trusted:
        if entry.certificate is not None and entry.certificate in names:
            root = by_fingerprint.get(entry.root or "")
            if root is not None:
                return _CertificateVerifier(lib, [root]), entry, signer, names
    who = f"certificate {names[0]!r} (key {signer})" if names else f"certificate key {signer}"
    raise _untrusted(label, who, trusted)


def _untrusted(label: str, who: str, trusted: Sequence[TrustedSigner]) -> UntrustedSignerError:
    accepted = "; ".join(t.label for t in trusted[:3]) + (" ..." if len(trusted) > 3 else "")
    return UntrustedSignerError(
        f"{label}: signed by {who}, which is not trusted (trusted: {accepted or 'nobody'})",
        hint="if you trust this signer, add it: cas trust add PUB.pem (see docs/signing.md)",
    )


def _KeyVerifier(lib: _lib.Lib, key: Any) -> Any:  # noqa: N802 (builds a library class)
    """model_signing's key verifier, for a key we hold as an object rather than a file.

    ``sign_ec_key.Verifier.__init__`` only reads a PEM path; everything else it does (the hint
    check, DSSE PAE, ECDSA, the statement) is its own code, which we keep.
    """
    verifier = lib.ec_key.Verifier.__new__(lib.ec_key.Verifier)
    verifier._public_key = key
    lib.ec_key._check_supported_ec_key(key)
    return verifier


def _CertificateVerifier(lib: _lib.Lib, anchors: list[Any]) -> Any:  # noqa: N802
    """model_signing's certificate verifier, anchored at certificates we chose.

    ``sign_certificate.Verifier.__init__`` only reads PEM paths (or the system roots); the
    chain check, key usage check and signature check are its own code, which we keep.
    """
    verifier = lib.certificate.Verifier.__new__(lib.certificate.Verifier)
    verifier._log_fingerprints = False
    verifier._store = lib.openssl.X509Store()
    for cert in anchors:
        verifier._store.add_cert(lib.openssl.X509.from_cryptography(cert))
    return verifier
