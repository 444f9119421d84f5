"""The one trust check: a version of a model the lockfile trusts signers for must be signed.

Every place that hands out or pins a version (``Registry.path``/``paths``/``pin`` and so the
loaders, ``cas sync``, ``cas pull``, ``cas verify --lock``) calls :func:`check_trusted` and
nothing else. It fails closed: no signature, a signature whose bytes are not in the store, a
malformed or invalid one, one by a signer the lockfile does not trust, or one for other files
is refused with one line naming the model, the version and the signer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from modelcas.digest import mismatch
from modelcas.errors import SignatureError, UntrustedSignerError
from modelcas.hashing import hash_bytes
from modelcas.lockfile import LockedVersion, Lockfile, PinnedSignature, TrustedSigner
from modelcas.signing.verify import SignedManifest, verify_signature
from modelcas.store import Store

MAX_STORED = 64 << 20


@dataclass(frozen=True, slots=True)
class Trusted:
    """A version that passed: who signed it, and which trusted entry accepted them."""

    model: str
    version: str
    signed: SignedManifest


# A process that loads several files of one version checks its signature once.
_checked: dict[tuple[object, ...], SignedManifest] = {}
_lock = threading.Lock()


def check_trusted(
    lock: Lockfile,
    name: str,
    version: str,
    store: Store,
    *,
    entry: LockedVersion | None = None,
    data: bytes | None = None,
) -> Trusted | None:
    """Refuse a version without a valid signature from a signer the lockfile trusts.

    Args:
        lock: the lockfile; its ``trust:`` (the model's, else the file's) says who is trusted.
        name: the model.
        version: the version.
        store: where the pinned signature object is read from.
        entry: the version to check, when it is not (yet) the lockfile's own (a pull checks
            what it is about to pin).
        data: signature bytes to check instead of the stored object (fetched from a remote
            before pinning); when the entry pins a signature, they must be its bytes.

    Returns:
        None when the lockfile trusts no signer for this model (nothing to check), else who
        signed.

    Raises:
        UntrustedSignerError: unsigned, or signed by a signer not trusted.
        SignatureError: the signature is missing from the store, malformed, invalid, or for
            other files.
        MissingExtraError: signatures must be checked and the ``[sign]`` extra is missing.
    """
    trusted = lock.trusted(name)
    if not trusted:
        return None
    if entry is None:
        _, entry = lock.version(name, version)
    label = f"{name}@{version}"
    where = lock.path or "the lockfile"
    pinned = entry.signature
    if pinned is None and data is None:
        raise UntrustedSignerError(
            f"{label} is not signed, and {where} accepts only signed versions of {name} "
            f"(trusted: {signer_names(trusted)})",
            hint=f"sign it with a trusted key: cas sign {label} --key PRIVATE.pem",
        )
    if data is None:
        assert pinned is not None
        data = stored_signature(store, pinned, label)
    elif pinned is not None and (m := mismatch(pinned.digest, hash_bytes(data))) is not None:
        raise SignatureError(
            f"{label}: the signature offered is not the one {where} pins: {m}",
            hint="the remote's signature was replaced; ask its publisher",
        )
    key = (data, tuple(sorted(entry.files.items())), tuple(trusted))
    with _lock:
        signed = _checked.get(key)
    if signed is None:
        claimed = pinned.signer if pinned is not None else None
        signed = verify_signature(data, entry.files, trusted, label, claimed=claimed)
        with _lock:
            _checked[key] = signed
    if pinned is not None and pinned.signer != signed.signer:
        raise SignatureError(
            f"{label}: {where} records the signer as {pinned.signer}, but the signature is by "
            f"{signed.who}",
            hint="the lockfile entry was edited by hand; sign the version again",
        )
    return Trusted(name, version, signed)


def check_lock(lock: Lockfile, store: Store) -> None:
    """:func:`check_trusted` for every version of every model the lockfile trusts signers for.

    Raises:
        as :func:`check_trusted`, for the first version refused.
    """
    for name in sorted(lock.models):
        if lock.trusted(name):
            for version in lock.models[name].ordered():
                check_trusted(lock, name, version, store)


def stored_signature(store: Store, pinned: PinnedSignature, label: str) -> bytes:
    """The pinned signature's bytes from the store, read once and checked against the pin."""
    sha256 = pinned.digest.sha256
    if not store.has(sha256):
        raise SignatureError(
            f"{label}: its signature (by key {pinned.signer}, sha256:{sha256}) is not in the "
            f"store at {store.root}",
            hint="sign it again here (cas sign), or fetch it with its version",
        )
    if pinned.digest.size > MAX_STORED:
        raise SignatureError(f"{label}: its signature is {pinned.digest.size} bytes, too large")
    with open(store.info(sha256).path, "rb") as f:
        data = f.read(MAX_STORED + 1)
    if (m := mismatch(pinned.digest, hash_bytes(data))) is not None:
        raise SignatureError(
            f"{label}: its stored signature sha256:{sha256} is corrupt: {m}",
            hint="run `cas verify --repair`, then sign the version again",
        )
    return data


def signer_names(trusted: list[TrustedSigner]) -> str:
    """The first few trusted signers, as messages name them."""
    return "; ".join(t.label for t in trusted[:3]) + (" ..." if len(trusted) > 3 else "")
