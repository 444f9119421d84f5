"""Signed versions: ``cas sign``, ``cas verify NAME --public-key``, ``cas add DIR --signature``.

Signing reads no weights: the statement lists the pinned digests, and the signature becomes
an object in the store, pinned with the version (``signature:``). Checking a signature costs
no second hash either: the stored bytes are checked against the pins as ``cas verify`` does,
and the signature against the pins.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelcas import lockfile
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, LockfileError, SignatureError, UsageError
from modelcas.hashing import Progress
from modelcas.lockfile import Lockfile, PinnedSignature
from modelcas.ops.add import PinRequest
from modelcas.ops.add import _check_pin as check_pin  # the checks `cas add` makes
from modelcas.ops.verify import LockReport, verify_pins
from modelcas.pinning import write_pins
from modelcas.registry import Registry
from modelcas.signing import (
    KeySpec,
    SignedManifest,
    check_files,
    load_public_key,
    open_signature,
    sign_files,
    verify_signature,
)
from modelcas.signing.sign import GIT_PATHS, write_signature
from modelcas.signing.trust import stored_signature
from modelcas.signing.verify import read_signature
from modelcas.store import AddResult, Store


@dataclass(frozen=True, slots=True)
class SignRequest:
    """Sign ``name@version`` (default its latest) as pinned in a lockfile."""

    name: str
    version: str | None
    how: KeySpec
    lock: Path | None = None  # default: the nearest cas.lock
    output: Path | None = None  # also write the signature here


@dataclass(frozen=True, slots=True)
class SignOutcome:
    """What ``sign`` did."""

    model: str
    version: str
    files: int
    signer: str
    signature: Digest
    lock: Path
    output: Path | None
    replaced: str | None  # the signer of the signature this one replaced
    trusted: bool | None  # whether the lockfile trusts the signer (None: it trusts nobody)


def sign(req: SignRequest, store: Store) -> SignOutcome:
    """Sign a pinned version's files by their pinned digests, and pin the signature.

    The version's objects must be in the store and agree with the store's records (sizes
    and digests, without reading the bytes: run ``cas verify`` for that).

    Raises:
        NotPinnedError: no such model or version.
        IntegrityError: an object is missing, or its record disagrees with the pin.
        UsageError: the key or certificate cannot sign, or ``output`` cannot be written.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    path = lockfile.locate(req.lock)
    lock = Lockfile.load(path)
    version, entry = lock.version(req.name, req.version)
    registry = Registry(lock, store, check_requires=False)
    for pin in registry.pins(req.name, version):
        if not store.has(pin.digest.sha256):
            raise IntegrityError(
                f"{pin.label} (sha256:{pin.digest.sha256}) is not in the store at {store.root}; "
                "sign only what you have checked",
                hint="run `cas sync`, then `cas verify --lock`, then sign",
            )
        registry.check_record(pin)
    files = dict(entry.files)
    signed = sign_files(files, f"{req.name}@{version}", req.how)
    info = store.add_bytes(signed.data)
    pinned = PinnedSignature(Digest(info.digest.sha256, info.digest.size), signed.signer)

    def change(fresh: Lockfile) -> PinnedSignature | None:
        _, now = fresh.version(req.name, version)
        if now.files != files:
            raise LockfileError(
                f"{path}: {req.name}@{version} changed while it was being signed; nothing was "
                "pinned",
                hint="sign it again",
            )
        previous, now.signature = now.signature, pinned
        return previous

    # The copy asked for first: a path it cannot be written to pins nothing.
    wrote = req.output is not None and not os.path.lexists(req.output)
    if req.output is not None:
        try:
            write_signature(req.output, signed.data)
        except OSError as e:
            raise UsageError(
                f"{req.output}: cannot write the signature there: {e.strerror or e}; nothing "
                "was pinned"
            ) from None
    try:
        previous = write_pins(
            store, path, change, [info.digest], lambda d: store.add_bytes(signed.data, expected=d)
        )
    except BaseException:
        if wrote and req.output is not None:
            req.output.unlink(missing_ok=True)
        raise
    return SignOutcome(
        req.name,
        version,
        len(files),
        signed.signer,
        info.digest,
        path,
        req.output,
        previous.signer if previous is not None and previous.signer != signed.signer else None,
        _accepted(signed.data, lock, req.name, files),
    )


def _accepted(data: bytes, lock: Lockfile, name: str, files: dict[str, Digest]) -> bool | None:
    """Whether the lockfile's ``trust:`` accepts a signature (None: it trusts nobody for it).

    Asked of the signature itself, so that a certificate signature counts as trusted under a
    trusted identity, not only a bare key by fingerprint.
    """
    trust = lock.trusted(name)
    if not trust:
        return None
    try:
        verify_signature(data, files, trust, name)
    except (SignatureError, LockfileError):
        return False
    return True


@dataclass
class SignedReport:
    """``cas verify NAME@V --public-key``: the stored bytes, then the signature."""

    model: str
    version: str
    pins: LockReport
    signed: SignedManifest | None = None
    refused: str | None = None  # why the signature was refused (one line)

    @property
    def ok(self) -> bool:
        """Bytes intact and the signature valid for exactly them."""
        return not self.pins.problems and self.signed is not None


def verify_signed(
    registry: Registry,
    name: str,
    version: str | None,
    public_key: Path,
    *,
    signature: Path | None = None,
    deep: bool = False,
) -> SignedReport:
    """Check a version's stored files against their pins, and a signature against the pins.

    Args:
        registry: the lockfile and store.
        name: the model.
        version: the version; default its latest.
        public_key: the key the signature must be made with (PEM).
        signature: a signature file to check instead of the pinned one.
        deep: recompute sha256 of the stored bytes too.

    Raises:
        NotPinnedError: no such version.
        UsageError: the key or the signature file cannot be read.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    chosen, entry = registry.lock.version(name, version)
    key = load_public_key(public_key)
    report = SignedReport(
        name, chosen, verify_pins(registry, registry.pins(name, chosen), deep=deep)
    )
    label = f"{name}@{chosen}"
    try:
        if signature is not None:
            data = read_signature(signature)
        elif entry.signature is None:
            raise SignatureError(
                f"{label} is not signed",
                hint=f"sign it: cas sign {label} --key PRIVATE.pem (or pass --signature FILE)",
            )
        else:
            data = stored_signature(registry.store, entry.signature, label)
        claimed = entry.signature.signer if entry.signature and signature is None else None
        signed = open_signature(data, [key], label, claimed=claimed, given=str(public_key))
        check_files(signed, entry.files, label)
        report.signed = signed
    except SignatureError as e:
        report.refused = e.message
    return report


@dataclass(frozen=True, slots=True)
class SignedAdd:
    """What ``add_signed`` pinned."""

    files: list[tuple[str, Digest, bool]]  # name, digest, whether the store had it
    signer: str
    signature: Digest
    lock: Path
    changed: bool
    latest: str | None


def add_signed(
    folder: Path,
    signature: Path,
    public_key: Path,
    pin: PinRequest,
    store: Store,
    *,
    progress: Progress | None = None,
) -> SignedAdd:
    """Pin a folder that ``model_signing sign`` signed, with its signature.

    The folder's files are named as ``model_signing`` names them (paths relative to the
    folder, without the paths the signature ignores and the signature file itself). Nothing
    is pinned unless the signature, by this key, covers exactly these files with exactly
    these bytes: names are compared before any byte is stored, and each file's bytes must
    hash to its signed digest as it is stored.

    Raises:
        UntrustedSignerError: signed with another key.
        SignatureError: a malformed or invalid signature, a missing or extra file, a symlink,
            or a file whose bytes differ.
        UsageError, LockfileError: as ``cas add`` with a pin.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; --signature takes the folder that was signed")
    key = load_public_key(public_key)
    data = read_signature(signature)
    signed = open_signature(data, [key], str(folder), given=str(public_key))
    found = _signed_files(folder, signature, signed)
    if not found:
        raise UsageError(f"{folder} holds no file: an empty directory is not added")
    missing = sorted(set(signed.resources) - set(found))
    extra = sorted(set(found) - set(signed.resources))
    if missing or extra:
        what = [f"missing {', '.join(map(repr, missing[:3]))}"] if missing else []
        what += [f"not signed: {', '.join(map(repr, extra[:3]))}"] if extra else []
        raise SignatureError(
            f"{folder}: the signature by {signed.who} covers other files ({'; '.join(what)}); "
            "nothing was pinned",
        )
    lock_path, package = check_pin(pin, [(path, name) for name, path in found.items()])
    results: dict[str, AddResult] = {}
    for name, path in sorted(found.items()):
        expected = None
        if signed.hash_type == "sha256":
            expected = Digest(signed.resources[name], path.stat().st_size)
        try:
            results[name] = store.ingest(path, expected=expected, progress=progress)
        except IntegrityError as e:
            raise SignatureError(
                f"{folder}: {name!r} is not what {signed.who} signed: {e.message}; nothing was "
                "pinned"
            ) from None
    files = {n: r.info.digest for n, r in results.items()}
    check_files(signed, files, str(folder))  # blake3 signatures are compared here
    info = store.add_bytes(data)
    pinned = PinnedSignature(Digest(info.digest.sha256, info.digest.size), signed.signer)

    def change(lock: Lockfile) -> tuple[bool, str | None]:
        changed = lock.pin(
            pin.name,
            pin.version,
            files,
            requires=pin.requires,
            set_latest=pin.set_latest,
            force=pin.force,
            pre=pin.pre,
        )
        _, entry = lock.version(pin.name, pin.version)  # an equal spelling pinned before
        if entry.signature != pinned:
            entry.signature, changed = pinned, True
        if package is not None and lock.package != package:
            lock.package, changed = package, True
        return changed, lock.models[pin.name].latest

    changed, latest = write_pins(
        store, lock_path, change, [info.digest], lambda d: store.add_bytes(data, expected=d)
    )
    for r in results.values():
        store.ensure(r)
    return SignedAdd(
        [(n, r.info.digest, r.existed) for n, r in results.items()],
        signed.signer,
        info.digest,
        lock_path,
        changed,
        latest,
    )


def _signed_files(folder: Path, signature: Path, signed: SignedManifest) -> dict[str, Path]:
    """The folder's files as ``model_signing`` serialises it, by relative POSIX name.

    Ignored: the paths the signature lists, git's files (``model_signing verify`` skips them
    by default), and the signature file itself (``model_signing verify`` skips the file it is
    given). A symlink is refused, as ``model_signing``
    refuses it without ``--allow_symlinks``.
    """
    ignored = {*signed.ignore_paths, *GIT_PATHS}
    sig = signature.resolve()
    out: dict[str, Path] = {}
    for here, dirs, names in os.walk(folder):
        base = Path(here)
        for d in list(dirs):
            rel = (base / d).relative_to(folder).as_posix()
            if rel in ignored:
                dirs.remove(d)
            elif (base / d).is_symlink():
                raise SignatureError(f"{folder}: {rel} is a symlink; signed folders hold files")
        for n in names:
            p = base / n
            rel = p.relative_to(folder).as_posix()
            if rel in ignored or p.resolve() == sig:
                continue
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise SignatureError(f"{folder}: {rel} is not a regular file; nothing was pinned")
            out[str(PurePosixPath(rel))] = p
    return out
