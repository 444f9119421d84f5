"""Signatures that travel with remotes: which one a pull pins, which one a publish sends.

A pull of a model the lockfile trusts signers for takes the signatures that travel with the
version (``Remote.signatures``, or ``--signature FILE``), refuses before any byte moves when
none is by a trusted signer, and once the files are here pins the first one that is valid for
exactly them (``signature:``). Without a trust entry a pull pins no signature: a key signature
names its key only by a hint, so nothing could be checked, and the lockfile pins only what was
checked (docs/signing.md).

A publish sends the version's signature: one made now with ``--key``, else the one pinned.
``publish_signature`` sends only that, for a version published before it was signed: to the
Hub under a companion tag, as an OCI referrer, beside a directory's catalog entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelcas import lockfile
from modelcas.digest import Digest, mismatch
from modelcas.errors import (
    IntegrityError,
    LockfileError,
    ModelcasError,
    SignatureError,
    UntrustedSignerError,
    UsageError,
)
from modelcas.hashing import hash_bytes
from modelcas.lockfile import LockedVersion, Lockfile, PinnedSignature
from modelcas.pinning import write_pins
from modelcas.remotes import Ref, Remote, RemotePlan, RemoteVersion, parse, pinned, writable
from modelcas.signing import (
    KeySpec,
    check_trusted,
    load_public_key,
    open_signature,
    sign_files,
    verify_signature,
)
from modelcas.signing.trust import signer_names, stored_signature
from modelcas.signing.verify import read_signature
from modelcas.store import Store

# -- pulling -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """Signatures a pull may pin, by a trusted signer, to check once the files are here."""

    lock: Lockfile
    name: str
    version: str  # as pinned, or as it will be
    pinned: PinnedSignature | None  # what the entry pins already
    candidates: tuple[bytes, ...]  # () : the pinned one, which is in the store
    where: str


def offered(  # noqa: PLR0917 (what a pull knows before it fetches)
    lock_path: Path,
    name: str,
    version: str,
    remote: Remote,
    at: RemoteVersion,
    store: Store,
    signature: Path | None = None,
) -> Offer | None:
    """Before any byte moves: the signatures a pull of a trusted model may pin.

    Args:
        lock_path: the lockfile (it may not exist yet).
        name: the model to pin.
        version: the version to pin.
        remote: where the version is.
        at: the version there, resolved.
        store: the local store.
        signature: a signature file given instead of what travels (``--signature``).

    Returns:
        None when the lockfile trusts no signer for the model (nothing is checked or pinned).

    Raises:
        UntrustedSignerError: none travels, or none is by a trusted signer.
        SignatureError: a signature is malformed or invalid, or the one the entry pins is
            neither here nor there.
        UsageError: ``signature`` is given and nobody is trusted, or it cannot be read.
    """
    lock = Lockfile.load(lock_path) if lock_path.exists() else None
    trusted = lock.trusted(name) if lock is not None else []
    model = lock.models.get(name) if lock is not None else None
    found = model.find(version) if model is not None else None
    entry = model.versions[found] if model is not None and found is not None else None
    pin = entry.signature if entry is not None else None
    if lock is None or not trusted:
        if signature is not None:
            raise UsageError(
                f"--signature: {lock_path} trusts no signer for {name}, so the signature cannot "
                "be checked, and only a checked signature is pinned",
                hint=f"trust its signer first: cas trust add PUB.pem --model {name}",
            )
        if pin is not None:
            _keep_pinned(store, pin, remote, at)
        return None
    label = f"{name}@{found or version}"
    if signature is not None:
        candidates, where = [read_signature(signature)], str(signature)
    elif pin is not None and store.has(pin.digest.sha256):
        return Offer(lock, name, found or version, pin, (), "the store")
    else:
        candidates, where = remote.signatures(at), at.source
    if pin is not None:
        candidates = [c for c in candidates if mismatch(pin.digest, hash_bytes(c)) is None]
        if not candidates:
            raise SignatureError(
                f"{label}: its signature (by key {pin.signer}, sha256:{pin.digest.sha256}) is "
                f"not in the store at {store.root}, and {where} does not carry it",
                hint=f"publish it where the version is, from the store that signed it: cas "
                f"publish {name} --version {found or version} --signature-only",
            )
    if not candidates:
        raise UntrustedSignerError(
            f"{label} is not signed: {where} carries no signature, and {lock_path} accepts "
            f"only signed versions of {name} (trusted: {signer_names(trusted)})",
            hint=f"a trusted signer signs and publishes it: cas publish {name} --version "
            f"{found or version} --signature-only --key PRIVATE.pem",
        )
    kept: list[bytes] = []
    first: SignatureError | None = None
    for data in candidates:
        try:
            open_signature(data, trusted, label, claimed=pin.signer if pin else None)
        except SignatureError as e:
            first = first or e
            continue
        kept.append(data)
    if not kept:
        assert first is not None
        raise first
    return Offer(lock, name, found or version, pin, tuple(kept), where)


def _keep_pinned(store: Store, pin: PinnedSignature, remote: Remote, at: RemoteVersion) -> None:
    """(No trust) bring a pinned signature the store lacks, if the remote has it; else nothing."""
    if store.has(pin.digest.sha256):
        return
    try:
        for data in remote.signatures(at):
            if mismatch(pin.digest, hash_bytes(data)) is None:
                store.add_bytes(data, expected=pin.digest)
                return
    except ModelcasError:
        return  # nothing checks it: `cas sync` names it if it stays missing


def accept(
    offer: Offer, files: Mapping[str, Digest], store: Store
) -> tuple[bytes | None, PinnedSignature]:
    """Once the files are here: the first offered signature valid for exactly them.

    Returns:
        The signature's bytes (None: the pinned one, already stored) and its pin.

    Raises:
        UntrustedSignerError, SignatureError: none is (the first refusal is raised).
    """
    entry = LockedVersion(dict(files), signature=offer.pinned)
    if not offer.candidates:
        check_trusted(offer.lock, offer.name, offer.version, store, entry=entry)
        assert offer.pinned is not None
        return None, offer.pinned
    first: SignatureError | None = None
    for data in offer.candidates:
        try:
            trusted = check_trusted(
                offer.lock, offer.name, offer.version, store, entry=entry, data=data
            )
        except SignatureError as e:
            first = first or e
            continue
        assert trusted is not None
        d = Digest(hashlib.sha256(data).hexdigest(), len(data))
        return data, PinnedSignature(d, trusted.signed.signer)
    assert first is not None
    raise first


# -- publishing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Travelling:
    """The signature a publish sends with a version, and pins."""

    data: bytes | None = None
    pin: PinnedSignature | None = None
    made: bool = False  # made now with a key (else: the one pinned before)
    there: bool = False  # the remote holds these very bytes for the version already


def outgoing(  # noqa: PLR0917 (what one publish knows)
    model: str,
    version: str,
    files: Mapping[str, Digest],
    key: KeySpec | None,
    existing: LockedVersion | None,
    store: Store,
) -> Travelling:
    """The signature to send: made now with ``key``, else the one the version pins.

    Raises:
        UsageError: the key cannot sign.
        SignatureError: the pinned signature's bytes are not in the store.
        MissingExtraError: signing without the ``[sign]`` extra.
    """
    label = f"{model}@{version}"
    if key is not None:
        same = _pinned_by(key, existing, files, store, label)
        if same is not None:
            return same
        signed = sign_files(files, label, key)
        return Travelling(signed.data, _pin_of(signed.data, signed.signer), made=True)
    if existing is None or existing.signature is None or existing.files != dict(files):
        return Travelling()
    data = stored_signature(store, existing.signature, label)
    return Travelling(data, existing.signature)


def _pinned_by(
    key: KeySpec,
    existing: LockedVersion | None,
    files: Mapping[str, Digest],
    store: Store,
    label: str,
) -> Travelling | None:
    """The pinned signature when this key made it over these files, else None.

    Publishing a signed version to a second remote with ``--key`` sends the signature the
    first remote carries: a new one (ECDSA differs on every run) would replace the pin, and
    the first remote would no longer carry what the lockfile pins.
    """
    if existing is None or existing.signature is None or existing.files != dict(files):
        return None
    if key.certificate is not None:  # a certificate signature is made anew (its chain may change)
        return None
    signer = load_public_key(key.key)
    if existing.signature.signer != signer.key:
        return None
    try:
        data = stored_signature(store, existing.signature, label)
        verify_signature(data, files, [signer], label)
    except SignatureError:  # UntrustedSignerError too
        return None  # not here, or not valid: sign anew
    return Travelling(data, existing.signature)


def _pin_of(data: bytes, signer: str) -> PinnedSignature:
    return PinnedSignature(Digest(hashlib.sha256(data).hexdigest(), len(data)), signer)


def settle(  # noqa: PLR0917 (what one publish knows)
    remote: Remote,
    at: RemoteVersion,
    label: str,
    files: Mapping[str, Digest],
    travelling: Travelling,
    key: KeySpec | None = None,
) -> Travelling:
    """For a version already at the remote: its signature there, or one by the same key.

    A rerun after a failure, or a publish signing a version published before: a signature by
    the same key over the same files that the remote holds is pinned instead of a new one
    (ECDSA signatures differ on every run), so nothing new is sent.

    Raises:
        RemoteError: the remote failed.
    """
    there = remote.signatures(at)
    if travelling.data in there:
        return Travelling(travelling.data, travelling.pin, travelling.made, there=True)
    # A key entry accepts bare-key signatures only: a certificate signature is sent anew.
    if travelling.pin is not None and key is not None and key.certificate is None:
        signer = load_public_key(key.key)
        for data in there:
            try:
                verify_signature(data, files, [signer], label)
            except SignatureError:
                continue
            return Travelling(data, _pin_of(data, travelling.pin.signer), made=True, there=True)
    return travelling


def planned_at(plan: RemotePlan, model: str, version: str) -> RemoteVersion:
    """The version a publish plan found at the remote (its tag's revision)."""
    _, at = pinned(plan.source, model=model, version=version, commit=plan.revision)
    return at


@dataclass(frozen=True, slots=True)
class SignaturePublished:
    """What ``cas publish --signature-only`` did."""

    model: str
    version: str
    remote: str
    source: str  # the version there
    where: str | None  # where the signature went; None: the remote held it already
    signer: str
    signature: Digest
    pinned: bool  # the lockfile's signature changed (a new one, made with --key)
    lock: Path


def publish_signature(
    model: str,
    version: str,
    store: Store,
    *,
    key: KeySpec | None = None,
    to: str | None = None,
    lock: Path | None = None,
    plain_http: bool = False,
) -> SignaturePublished:
    """Send a published version's signature to where the version is; nothing else moves.

    The signature is made now with ``key`` (and pinned, replacing the one pinned), else it
    is the one the version pins. The place is ``to`` (which must hold the version with the
    pinned files), else the version's source. A signature the remote holds already is not
    sent again, and with ``key`` one by the same key over the same files is pinned instead
    of a new one.

    Raises:
        NotPinnedError: no such version.
        UsageError: the version is not signed and no key is given, or it has no place to
            send the signature to (a plain URL, or no source and no ``to``).
        IntegrityError: the remote holds other files under the version.
        SignatureError: the pinned signature's bytes are not in the store.
        RemoteError: the remote failed or refused.
    """
    path = lockfile.locate(lock)
    loaded = Lockfile.load(path)
    found, entry = loaded.version(model, version)
    label = f"{model}@{found}"
    target = to or entry.source
    if target is None:
        raise UsageError(
            f"{label} has no source: say where it was published",
            hint=f"cas publish {model} --version {found} --signature-only --to REMOTE",
        )
    ref = parse(target)
    remote = writable(ref, plain_http=plain_http)
    if to is None:
        _, at = pinned(target, model=model, version=found, commit=entry.commit)
    else:
        at = remote.resolve(_ask(ref, model, found))
        _holds_version(remote, at, entry.files, label)
    travelling = outgoing(model, found, entry.files, key, entry, store)
    if travelling.data is None or travelling.pin is None:
        raise UsageError(
            f"{label} is not signed: there is no signature to publish",
            hint=f"sign it with --key PRIVATE.pem (or first: cas sign {label} --key PRIVATE.pem)",
        )
    travelling = settle(remote, at, label, entry.files, travelling, key)
    assert travelling.data is not None and travelling.pin is not None
    where = None if travelling.there else remote.attach_signature(at, travelling.data)
    changed = False
    if travelling.made:
        changed = _pin_signature(store, path, model, found, entry.files, travelling)
    return SignaturePublished(
        model,
        found,
        remote.url,
        at.source,
        where,
        travelling.pin.signer,
        travelling.pin.digest,
        changed,
        path,
    )


def _ask(ref: Ref, model: str, version: str) -> str:
    """What to resolve at a remote named with ``--to``: the version's tag or catalog entry."""
    if ref.revision is not None:
        return ref.revision
    if ref.kind == "hf":
        return f"weights-{version}"
    if ref.kind == "dir":
        return f"{model}@{version}"
    return version


def _holds_version(
    remote: Remote, at: RemoteVersion, files: Mapping[str, Digest], label: str
) -> None:
    """The remote's version must list the pinned files (a signature is about them).

    Raises:
        IntegrityError: it lists other files, or other sizes or digests.
    """
    listing = remote.listing(at)
    for name, d in sorted(files.items()):
        listed = listing.get(name)
        if (
            listed is None
            or listed.size != d.size
            or (listed.sha256 is not None and listed.sha256 != d.sha256)
        ):
            found = "no such file" if listed is None else f"{listed.size} bytes"
            if listed is not None and listed.sha256 is not None:
                found += f", sha256:{listed.sha256}"
            raise IntegrityError(
                f"{at.source} does not hold {label} as pinned: {name} is {found}, the pin says "
                f"{d.address} ({d.size} bytes); nothing was sent",
                hint="publish the signature where the version is (its source is the default)",
            )


def _pin_signature(  # noqa: PLR0917 (one pin)
    store: Store,
    path: Path,
    model: str,
    version: str,
    files: Mapping[str, Digest],
    travelling: Travelling,
) -> bool:
    """Pin a signature made now; True when the lockfile changed."""
    data, pin = travelling.data, travelling.pin
    assert data is not None and pin is not None
    store.add_bytes(data, expected=pin.digest)

    def change(fresh: Lockfile) -> bool:
        _, now = fresh.version(model, version)
        if now.files != dict(files):
            raise LockfileError(
                f"{path}: {model}@{version} changed while its signature was being published; "
                "nothing was pinned",
                hint="publish the signature again",
            )
        if now.signature == pin:
            return False
        now.signature = pin
        return True

    return write_pins(
        store, path, change, [pin.digest], lambda d: store.add_bytes(data, expected=d)
    )
