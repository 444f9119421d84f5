"""Checking a signature: who made it, and whether it covers exactly the pinned files.

Where the bytes came from (the store, a file, a remote) does not matter here: a signature is
checked against the signers a caller accepts and the digests the lockfile pins, and nothing is
hashed but the signature itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcas import untrusted
from modelcas.digest import Digest
from modelcas.errors import SignatureError, UntrustedSignerError, UsageError
from modelcas.lockfile import TrustedSigner
from modelcas.signing import _lib, keys

MAX_SIGNATURE = 64 << 20  # a statement lists every file; 64 MiB is ~400k files
_PREDICATE = "https://model_signing/signature/v1.0"
_STATEMENT = "https://in-toto.io/Statement/v1"
_IN_TOTO = "application/vnd.in-toto+json"
_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


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
    data: bytes,
    trusted: Sequence[TrustedSigner],
    label: str,
    *,
    claimed: str | None = None,
    given: str | None = None,
) -> SignedManifest:
    """Check a signature's envelope against the accepted signers and read its manifest.

    Args:
        data: the signature (a Sigstore bundle, JSON).
        trusted: the signers to accept (a ``trust:`` list, or one key given on the command
            line).
        label: ``model@version`` (or a folder), for messages.
        claimed: the signer the lockfile records for it, named when it is not trusted.
        given: where ``trusted`` came from when it is not the lockfile (``--public-key
            FILE``), for the refusal.

    Returns:
        The signer and the signed file digests.

    Raises:
        UntrustedSignerError: made by a key or certificate none of ``trusted`` accepts.
        SignatureError: malformed, or not a valid signature of its statement.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    parsed = _bundle_json(data, label)
    material = parsed["verificationMaterial"]
    if material.get("x509CertificateChain") is not None:
        return _open_with_library(parsed, trusted, label, given)
    if material.get("publicKey") is not None:
        return _open_key_signature(parsed, trusted, label, claimed, given)
    raise SignatureError(f"{label}: the signature names neither a key nor a certificate")


def _open_key_signature(
    parsed: dict[str, Any],
    trusted: Sequence[TrustedSigner],
    label: str,
    claimed: str | None,
    given: str | None,
) -> SignedManifest:
    """A key signature, checked with cryptography alone.

    This is model_signing 1.1's key verification (``sign_ec_key.Verifier`` and
    ``signing.dsse_payload_to_manifest``), step for step, written out because importing the
    library costs about half a second (sigstore, pydantic, TUF), and this check runs on every
    ``Registry.path()`` of a trusted model: the DSSE PAE, ECDSA with the curve's hash, the
    in-toto statement, and its root digest over the resources. tests/test_signing.py holds it
    to the real tool both ways. Signatures from model_signing before 1.0 (the v0.2 PAE and
    predicate) are refused: sign them again.
    """
    c = _lib.crypto()
    try:
        hint = parsed["verificationMaterial"]["publicKey"].get("hint")
        envelope = parsed["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, binascii.Error):
        raise SignatureError(f"{label}: not a model_signing signature: no DSSE envelope") from None
    if payload_type != _IN_TOTO:
        raise SignatureError(
            f"{label}: the envelope holds {payload_type!r}, not an in-toto statement"
        )
    candidates = []
    for entry in trusted:
        if entry.key is not None:
            key = keys.key_from_entry(entry)
            if hint is None or hint == _pem_hint(key):
                candidates.append((entry, key))
    if not candidates:
        # A bundle names its key by model_signing's hint only (sha256 of the key's PEM, what
        # `sha256sum KEY.pub` prints for the signer's public key file).
        who = f"key {claimed}" if claimed else "a key"
        # A claim of a trusted key is false here (no trusted key matches the hint): name the
        # key the signature names, and the claim, never the claim as the signer.
        lied = claimed is not None and any(t.key == claimed for t in trusted)
        if (claimed is None or lied) and isinstance(hint, str) and _HEX64.fullmatch(hint):
            who = f"the key whose PEM has sha256 {hint}"
            if lied:
                who += f" (the lockfile records key {claimed})"
        elif lied:
            who = f"another key than the {claimed} the lockfile records"
        raise _untrusted(label, who, trusted, given)
    pae = b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type.encode(), len(payload), payload)
    accepted = None
    for candidate, key in candidates:
        try:
            key.verify(sig, pae, c.ec.ECDSA(_curve_hash(c, key)))
        except c.exceptions.InvalidSignature:
            continue
        accepted = candidate
        break
    if accepted is None or accepted.key is None:
        raise SignatureError(
            f"{label}: not a valid signature by {candidates[-1][0].label}",
            hint="the signature or its statement was changed after signing; sign it again",
        )
    serialization, resources = _statement(payload, label)
    return _manifest(serialization, resources, (accepted.key, accepted, []), label)


def _curve_hash(c: _lib.Crypto, key: Any) -> Any:
    """The hash model_signing pairs with a curve (``sign_ec_key.get_ec_key_hash``)."""
    size = key.curve.key_size
    return {256: c.hashes.SHA256, 384: c.hashes.SHA384, 521: c.hashes.SHA512}[size]()


def _statement(payload: bytes, label: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The serialization and (name, algorithm, hex digest) resources of a signed statement."""
    try:
        statement = json.loads(payload)
        if statement["_type"] != _STATEMENT:
            raise ValueError(f"statement type {statement['_type']!r}")
        if statement["predicateType"] != _PREDICATE:
            raise ValueError(f"predicate type {statement['predicateType']!r}")
        [subject] = statement["subject"]
        root = subject["digest"]["sha256"]
        predicate = statement["predicate"]
        serialization = dict(predicate["serialization"])
        resources = [(r["name"], r["algorithm"], r["digest"]) for r in predicate["resources"]]
        hasher = hashlib.sha256()
        for _, _, digest in resources:
            hasher.update(bytes.fromhex(digest))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise SignatureError(f"{label}: the signed statement is not model_signing's: {e}") from None
    if hasher.hexdigest() != root:
        raise SignatureError(
            f"{label}: the signed statement is inconsistent: its resources hash to "
            f"{hasher.hexdigest()}, its subject says {root}"
        )
    return serialization, resources


def _open_with_library(
    parsed: dict[str, Any], trusted: Sequence[TrustedSigner], label: str, given: str | None
) -> SignedManifest:
    """A certificate signature, checked by model_signing's certificate verifier."""
    lib = _lib.load()
    signature = _parse(lib, parsed, label)
    chain = signature.bundle.verification_material.x509_certificate_chain
    verifier, accepted, signer, names = _certificate_verifier(lib, chain, trusted, label, given)
    try:
        # model_signing prints some warnings; they are not our output.
        with contextlib.redirect_stdout(io.StringIO()):
            manifest = verifier.verify(signature)
    except (
        ValueError,
        KeyError,
        TypeError,
        lib.crypto_exceptions.InvalidSignature,
        lib.openssl.X509StoreContextError,  # a chain that does not reach the root
    ) as e:
        raise SignatureError(
            f"{label}: not a valid signature by {accepted.label}: "
            f"{str(e).strip() or type(e).__name__}",
            hint="the signature or its statement was changed after signing; sign it again",
        ) from None
    resources = [
        (rd.identifier, rd.digest.algorithm, rd.digest.digest_hex)
        for rd in manifest.resource_descriptors()
    ]
    return _manifest(manifest.serialization_type, resources, (signer, accepted, names), label)


def _manifest(
    serialization: dict[str, Any],
    resources: list[tuple[str, str, str]],
    who: tuple[str, TrustedSigner, list[str]],
    label: str,
) -> SignedManifest:
    """The manifest of a valid signature; ``who`` is (signer, accepted entry, identities)."""
    signer, accepted, names = who
    if serialization.get("method") != "files":
        raise SignatureError(
            f"{label}: the signature hashes files in {serialization.get('method')!r} pieces; "
            "modelcas checks whole-file digests (model_signing's default `files` method)",
            hint="sign without sharding",
        )
    hash_type = serialization.get("hash_type", "sha256")
    ignore_paths = serialization.get("ignore_paths", [])
    if (
        not isinstance(hash_type, str)
        or not all(isinstance(a, str) and isinstance(d, str) for _, a, d in resources)
        or not isinstance(ignore_paths, list)
        or not all(isinstance(p, str) for p in ignore_paths)
    ):
        # Signed, but still untrusted in its shape (another tool's, or a bug's).
        raise SignatureError(
            f"{label}: the signed statement is not model_signing's: a hash type, digest or "
            "ignored path that is not a string"
        )
    algorithms = {algorithm for _, algorithm, _ in resources}
    if algorithms - {hash_type} or hash_type not in ("sha256", "blake3"):
        raise SignatureError(
            f"{label}: the signature's digests are {', '.join(sorted(algorithms | {hash_type}))}"
            "; modelcas checks sha256 and blake3",
            hint="sign with sha256 (model_signing's default)",
        )
    by_name: dict[str, str] = {}
    for name, _, digest in resources:
        if not isinstance(name, str) or name in by_name:
            raise SignatureError(f"{label}: the signature lists {name!r} twice")
        by_name[name] = digest
    return SignedManifest(
        signer,
        accepted,
        tuple(names),
        hash_type,
        by_name,
        tuple(ignore_paths),
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
        with untrusted.opened(p, "a signature") as (fd, _):
            data = os.read(fd, MAX_SIGNATURE + 1)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file; expected a signature") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read the signature: {e.strerror or e}") from None
    if len(data) > MAX_SIGNATURE:
        raise SignatureError(f"{p}: larger than {MAX_SIGNATURE} bytes, too large for a signature")
    return data


def _bundle_json(data: bytes, label: str) -> dict[str, Any]:
    """The bundle as JSON, with the fields every signature has (bounded: untrusted input)."""
    if len(data) > MAX_SIGNATURE:
        raise SignatureError(f"{label}: {len(data)} bytes is too large for a signature")
    try:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("verificationMaterial"), dict):
            raise ValueError("no verificationMaterial")  # noqa: TRY004 (one except for all)
        if parsed.get("mediaType") != _BUNDLE:
            raise ValueError(f"media type {parsed.get('mediaType')!r}")
    except (ValueError, RecursionError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SignatureError(
            f"{label}: not a model_signing signature (a Sigstore bundle): {why[:200]}"
        ) from None
    return parsed


def _parse(lib: _lib.Lib, parsed: dict[str, Any], label: str) -> Any:
    """The library's bundle object (its ``Signature.read`` only reads a path)."""
    parsed = json.loads(json.dumps(parsed))  # a copy: normalised below as the library does
    bundle_class = lib.bundle.bundle_pb.Bundle
    try:
        material = parsed["verificationMaterial"]
        material.setdefault("tlogEntries", [])
        signature = lib.bundle.Signature(bundle_class.from_dict(parsed))
        if signature.bundle.dsse_envelope is None or not signature.bundle.dsse_envelope.signatures:
            raise ValueError("no DSSE envelope")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SignatureError(
            f"{label}: not a model_signing signature (a Sigstore bundle): {why[:200]}"
        ) from None
    return signature


def _pem_hint(key: Any) -> str:
    """model_signing's key hint: sha256 of the key's PEM (not its DER fingerprint)."""
    ser = _lib.crypto().serialization
    pem = key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _certificate_verifier(
    lib: _lib.Lib, chain: Any, trusted: Sequence[TrustedSigner], label: str, given: str | None
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
    raise _untrusted(label, who, trusted, given)


def _untrusted(
    label: str, who: str, trusted: Sequence[TrustedSigner], given: str | None = None
) -> UntrustedSignerError:
    if given is not None:  # not about the lockfile's trust: no `cas trust` hint
        return UntrustedSignerError(
            f"{label}: signed by {who}, which is not trusted: not the key in {given}"
        )
    accepted = "; ".join(t.label for t in trusted[:3]) + (" ..." if len(trusted) > 3 else "")
    return UntrustedSignerError(
        f"{label}: signed by {who}, which is not trusted (trusted: {accepted or 'nobody'})",
        hint="if you trust this signer, add it: cas trust add PUB.pem (see docs/signing.md)",
    )


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
