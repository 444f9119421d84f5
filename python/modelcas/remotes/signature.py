"""A pinned signature fetched back from where its version lives.

A lock entry pins its signature by digest (``signature:``); the bytes travel with the version
(``Remote.signatures``). A fresh store gets them from the version's source, else from its
mirrors, exactly as the files come: by digest, so any copy the remote holds will do and no
other is taken.
"""

from __future__ import annotations

from modelcas.digest import Digest, mismatch
from modelcas.errors import IntegrityError, RemoteError, SignatureError, UsageError
from modelcas.hashing import hash_bytes
from modelcas.lockfile import LockedVersion
from modelcas.store import Store


def fetch_signature(store: Store, name: str, version: str, entry: LockedVersion) -> Digest:
    """Bring the version's pinned signature into the store from its source or a mirror.

    Args:
        store: the local store.
        name: the model.
        version: the version, as pinned.
        entry: its lock entry (with ``signature``).

    Returns:
        The stored signature's digest.

    Raises:
        SignatureError: no place of the version carries these bytes (each place's answer is
            named), or it has no place to fetch from.
    """
    from modelcas.remotes import pinned  # noqa: PLC0415 (the package imports this module's layer)

    sig = entry.signature
    assert sig is not None
    if store.has(sig.digest.sha256):
        return store.info(sig.digest.sha256).digest
    found: list[str] = []
    for place in (entry.source, *entry.mirrors) if entry.source else entry.mirrors:
        at_source = place == entry.source
        try:
            remote, at = pinned(
                place,
                model=name,
                version=version,
                commit=entry.commit if at_source else None,
                validator=entry.validator if at_source else None,
            )
            for data in remote.signatures(at):
                if mismatch(sig.digest, hash_bytes(data)) is None:
                    return store.add_bytes(data, expected=sig.digest).digest
        except (RemoteError, IntegrityError, UsageError) as e:
            found.append(f"{place}: {e.message}")
            continue
        found.append(f"{place} does not carry it")
    where = "; ".join(found) or "the version has no source to fetch it from"
    raise SignatureError(
        f"{name}@{version}: its signature (by key {sig.signer}, sha256:{sig.digest.sha256}) is "
        f"not in the store at {store.root}: {where}",
        hint=f"publish it where the version is, from the store that signed it: cas publish "
        f"{name} --version {version} --signature-only",
    )
