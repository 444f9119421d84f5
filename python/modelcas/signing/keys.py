"""Keys and certificates: reading PEM files, fingerprints, certificate identities.

A signer is named by the SHA-256 fingerprint of its public key's DER SubjectPublicKeyInfo
(``sha256:<hex>``, what ``openssl pkey -pubin -outform DER | sha256sum`` prints). A root
certificate is named by the SHA-256 of its DER (``openssl x509 -fingerprint -sha256``).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from modelcas import untrusted
from modelcas.errors import LockfileError, UsageError
from modelcas.lockfile import TrustedSigner, fingerprint_of
from modelcas.signing import _lib

# The curves model_signing 1.1 signs and verifies with (Sigstore's protobuf specs).
CURVES = ("secp256r1", "secp384r1", "secp521r1")
MAX_PEM = 1 << 20  # a key or a certificate chain: far less than this


def read_pem(path: str | os.PathLike[str], what: str) -> bytes:
    """A small PEM file, read with a bound.

    Raises:
        UsageError: missing, not a regular file, or too large.
    """
    p = Path(path)
    try:
        return untrusted.read_file(p, what, cap=MAX_PEM)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file; expected {what}") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read {what}: {e.strerror or e}") from None


def public_der(key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key object."""
    ser = _lib.crypto().serialization
    der: bytes = key.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return der


def key_fingerprint(key: Any) -> str:
    """``sha256:<hex>`` of a public key (its DER SubjectPublicKeyInfo)."""
    return fingerprint_of(public_der(key))


def _check_curve(key: Any, where: str) -> None:
    lib = _lib.crypto()
    if not isinstance(key, lib.ec.EllipticCurvePublicKey) or key.curve.name not in CURVES:
        name = type(key).__name__.removesuffix("PublicKey").removesuffix("PrivateKey")
        kind = getattr(getattr(key, "curve", None), "name", None) or name
        raise UsageError(
            f"{where}: is a key of type {kind}; signatures use an elliptic-curve key "
            "(P-256, P-384 or P-521)",
            hint="make one: openssl ecparam -name prime256v1 -genkey -noout -out release.pem",
        )


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """An unencrypted elliptic-curve private key from a PEM file.

    Raises:
        UsageError: not a PEM private key, encrypted, or not on a supported curve.
    """
    lib = _lib.crypto("signing")
    data = read_pem(path, "a PEM private key")
    try:
        key = lib.serialization.load_pem_private_key(data, None)
    except TypeError:
        raise UsageError(
            f"{path}: the private key is encrypted; cas sign takes an unencrypted PEM key",
            hint="keep the key in your CI's secret store and decrypt it to a 0600 file "
            "(openssl ec -in enc.pem -out release.pem)",
        ) from None
    except (ValueError, lib.exceptions.UnsupportedAlgorithm):
        raise UsageError(
            f"{path}: not a PEM private key",
            hint="make one: openssl ecparam -name prime256v1 -genkey -noout -out release.pem",
        ) from None
    _check_curve(key.public_key(), str(path))
    return key


def load_public_key(path: str | os.PathLike[str]) -> TrustedSigner:
    """A public key from a PEM file (a private key is accepted too: its public half).

    Returns:
        The key as a ``trust:`` entry: fingerprint and base64 DER.

    Raises:
        UsageError: not a PEM key on a supported curve.
    """
    lib = _lib.crypto()
    data = read_pem(path, "a PEM public key")
    try:
        key = lib.serialization.load_pem_public_key(data)
    except (ValueError, lib.exceptions.UnsupportedAlgorithm):
        try:
            key = lib.serialization.load_pem_private_key(data, None).public_key()
        except (TypeError, ValueError, lib.exceptions.UnsupportedAlgorithm):
            raise UsageError(
                f"{path}: not a PEM public key",
                hint="write one from the private key: openssl ec -in release.pem -pubout "
                "-out release.pub",
            ) from None
    _check_curve(key, str(path))
    der = public_der(key)
    return TrustedSigner(key=fingerprint_of(der), public_key=base64.b64encode(der).decode())


def key_from_entry(entry: TrustedSigner) -> Any:
    """The public key object of a ``trust:`` key entry (the parser checked its fingerprint).

    Raises:
        LockfileError: the entry's bytes are not a key signatures are made with (a
            hand-edited entry): the check cannot run, so it fails closed.
    """
    lib = _lib.crypto()
    assert entry.public_key is not None
    try:
        key = lib.serialization.load_der_public_key(base64.b64decode(entry.public_key))
        _check_curve(key, f"trust: {entry.label}")
    except (ValueError, UsageError, lib.exceptions.UnsupportedAlgorithm) as e:
        why = e.message if isinstance(e, UsageError) else "not a DER public key"
        raise LockfileError(
            f"trust: {entry.label}: its public-key cannot check signatures: "
            f"{why.removeprefix(f'trust: {entry.label}: ')}",
            hint=f"cas trust rm {entry.key}, then cas trust add PUB.pem with the signer's key",
        ) from None
    return key


def load_certificates(path: str | os.PathLike[str], what: str) -> list[Any]:
    """Every certificate of a PEM file.

    Raises:
        UsageError: none, or not PEM.
    """
    lib = _lib.crypto()
    data = read_pem(path, what)
    try:
        certs: list[Any] = lib.x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise UsageError(f"{path}: no PEM certificate in it; expected {what}")
    return certs


def certificate_fingerprint(cert: Any) -> str:
    """``sha256:<hex>`` of a certificate's DER."""
    ser = _lib.crypto().serialization
    return fingerprint_of(cert.public_bytes(ser.Encoding.DER))


def identities(cert: Any) -> list[str]:
    """What a certificate names: its SAN e-mails, URIs and DNS names, else its common name."""
    x509 = _lib.crypto().x509
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
            found.extend(str(v) for v in san.get_values_for_type(kind))
    except x509.ExtensionNotFound:
        pass
    if not found:
        found.extend(
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        )
    return found
