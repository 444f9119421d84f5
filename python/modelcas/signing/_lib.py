"""The one door to the ``[sign]`` extra: ``model_signing`` 1.1, ``cryptography``, pyOpenSSL.

Nothing else in modelcas imports them, and this module imports them only when a signature is
made or checked, so ``cas`` without the extra starts as fast as before and fails with one
line naming the extra.

We use ``model_signing``'s own classes to build and check the format (the manifest, the
in-toto payload, the DSSE envelope in a Sigstore bundle, the key and certificate signers and
verifiers). Its public API (``signing.Config().sign(model_path, ...)``) only signs a
directory it hashes itself; to sign pinned digests without reading the bytes again we call
the classes behind it, from modules its 1.1 release marks internal. That is why the extra
pins ``model-signing==1.1.*``: a new minor release is a deliberate upgrade, checked by the
interop tests (tests/test_signing.py) against the real ``python -m model_signing``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from modelcas.errors import MissingExtraError

EXTRA_HINT = "install the signing extra: pip install 'modelcas[sign]'"


@dataclass(frozen=True)
class Lib:
    """The modules we use, typed ``Any``: the library's functions carry no annotations."""

    manifest: Any  # Manifest, FileManifestItem, _FileSerialization
    digest: Any  # model_signing._hashing.hashing (Digest)
    signing: Any  # model_signing._signing.signing (Payload)
    bundle: Any  # model_signing._signing.sign_sigstore_pb (Signature: the bundle)
    ec_key: Any  # model_signing._signing.sign_ec_key (Signer, Verifier)
    certificate: Any  # model_signing._signing.sign_certificate (Signer, Verifier)
    serialization: Any  # cryptography.hazmat.primitives.serialization
    ec: Any  # cryptography.hazmat.primitives.asymmetric.ec
    x509: Any  # cryptography.x509
    crypto_exceptions: Any  # cryptography.exceptions
    openssl: Any  # OpenSSL.crypto (the certificate verifier's X509Store)


@dataclass(frozen=True)
class Crypto:
    """cryptography alone: enough to read keys and check a key signature (tens of ms)."""

    serialization: Any  # cryptography.hazmat.primitives.serialization
    ec: Any  # cryptography.hazmat.primitives.asymmetric.ec
    hashes: Any  # cryptography.hazmat.primitives.hashes
    x509: Any  # cryptography.x509
    exceptions: Any  # cryptography.exceptions


@functools.cache
def crypto(why: str = "signatures") -> Crypto:
    """cryptography, imported on first use (it comes with the ``[sign]`` extra).

    Raises:
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    names = {
        "serialization": "cryptography.hazmat.primitives.serialization",
        "ec": "cryptography.hazmat.primitives.asymmetric.ec",
        "hashes": "cryptography.hazmat.primitives.hashes",
        "x509": "cryptography.x509",
        "exceptions": "cryptography.exceptions",
    }
    # Without the library the extra is not installed, whatever else is: say so now.
    return Crypto(**_modules(names, why, require="model_signing"))


@functools.cache
def load(why: str = "signatures") -> Lib:
    """The library, imported on first use.

    Raises:
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    names = {
        "manifest": "model_signing.manifest",
        "digest": "model_signing._hashing.hashing",
        "signing": "model_signing._signing.signing",
        "bundle": "model_signing._signing.sign_sigstore_pb",
        "ec_key": "model_signing._signing.sign_ec_key",
        "certificate": "model_signing._signing.sign_certificate",
        "serialization": "cryptography.hazmat.primitives.serialization",
        "ec": "cryptography.hazmat.primitives.asymmetric.ec",
        "x509": "cryptography.x509",
        "crypto_exceptions": "cryptography.exceptions",
        "openssl": "OpenSSL.crypto",
    }
    modules = _modules(names, why)
    # The library logs certificate remarks through `logging`; without a handler of ours
    # Python's last-resort handler would print them to stderr, beside our one-line errors.
    logging.getLogger("model_signing").addHandler(logging.NullHandler())
    return Lib(**modules)


def _modules(names: dict[str, str], why: str, require: str | None = None) -> dict[str, Any]:
    """Import each module (and check ``require`` is there), or say the extra is missing."""
    try:
        modules = {key: importlib.import_module(name) for key, name in names.items()}
        if require is not None and importlib.util.find_spec(require) is None:
            raise ImportError(name=require)
    except ImportError as e:
        raise MissingExtraError(
            f"{why} need the model_signing library, which is not installed ({e.name})",
            hint=EXTRA_HINT,
        ) from None
    return modules
