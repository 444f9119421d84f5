"""Signed versions, in the OpenSSF ``model_signing`` format (``docs/signing.md``).

A signature says who pinned a version's files: a Sigstore bundle whose DSSE envelope carries
an in-toto statement listing each file's sha256, signed with an elliptic-curve key (optionally
with a certificate chain). It is stored as an object and pinned with the version
(``signature:``); a lockfile's ``trust:`` names the signers a model's versions must come from.

The API is independent of where signature bytes travel:

- :func:`sign_files` makes the bytes for pinned digests (nothing is read again);
- :func:`verify_signature` checks bytes against pinned digests and accepted signers;
- :func:`check_trusted` is the one trust check every command and loader calls.

The ``model_signing`` library (the ``[sign]`` extra) is imported only when one of these runs.
"""

from modelcas.signing.keys import load_public_key
from modelcas.signing.sign import IGNORED, SIGNATURE_NAME, KeySpec, Signed, sign_files
from modelcas.signing.trust import Trusted, check_lock, check_trusted
from modelcas.signing.verify import SignedManifest, check_files, open_signature, verify_signature

__all__ = [
    "IGNORED",
    "SIGNATURE_NAME",
    "KeySpec",
    "Signed",
    "SignedManifest",
    "Trusted",
    "check_files",
    "check_lock",
    "check_trusted",
    "load_public_key",
    "open_signature",
    "sign_files",
    "verify_signature",
]
