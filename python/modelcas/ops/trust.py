"""``cas trust``: the signers a lockfile accepts (``trust:``), for one model or the whole file.

Trust lives in the lockfile, next to the pins it guards, so a change to it is a reviewed
change in git. A model's own list replaces the file's list for that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelcas import lockfile
from modelcas.errors import NotPinnedError, UsageError
from modelcas.lockfile import LockedModel, Lockfile, TrustedSigner


@dataclass(frozen=True, slots=True)
class TrustChange:
    """What an edit of ``trust:`` did."""

    lock: Path
    model: str | None  # None: the whole file
    signer: TrustedSigner
    changed: bool


def key_signer(public_key: Path) -> TrustedSigner:
    """A ``trust:`` entry for a public key file (PEM).

    Raises:
        UsageError: not a PEM key on a supported curve.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    from modelcas.signing import load_public_key  # noqa: PLC0415

    return load_public_key(public_key)


def certificate_signer(identity: str, root: Path) -> TrustedSigner:
    """A ``trust:`` entry for certificates naming ``identity`` under the root in ``root``.

    Raises:
        UsageError: an empty identity, or no certificate in ``root``.
        MissingExtraError: the ``[sign]`` extra is not installed.
    """
    from modelcas.signing import keys  # noqa: PLC0415

    if not identity.strip():
        raise UsageError("--certificate needs the identity the certificate names")
    certs = keys.load_certificates(root, "a root certificate (PEM)")
    if len(certs) != 1:
        raise UsageError(f"{root}: {len(certs)} certificates; --root takes the root alone")
    return TrustedSigner(certificate=identity, root=keys.certificate_fingerprint(certs[0]))


def add(path: Path | None, signer: TrustedSigner, model: str | None) -> TrustChange:
    """Trust a signer for one model, or for every model without a list of its own.

    A project without a lockfile gets one (``./cas.lock``), and a model not pinned yet gets
    an entry with no versions: a consumer trusts its publisher's key before its first
    ``cas pull``, so that pull is checked too.
    """
    lock_path = lockfile.locate(path, must_exist=False)
    with lockfile.edit(lock_path) as lock:
        if model is not None:
            lockfile.check_name(model)
            lock.models.setdefault(model, LockedModel())
        trust = _list(lock, model)
        changed = all(t.sort_key() != signer.sort_key() for t in trust)
        if changed:
            trust.append(signer)
            # In the order the file is written in: the writer checks it reads back the same.
            trust.sort(key=TrustedSigner.sort_key)
    return TrustChange(lock_path, model, signer, changed)


def remove(path: Path | None, which: str, model: str | None) -> TrustChange:
    """Stop trusting a signer, named by key fingerprint, identity or public key file.

    Raises:
        NotPinnedError: the lockfile does not list such a signer there.
    """
    lock_path = lockfile.locate(path)
    if Path(which).is_file():
        which = key_signer(Path(which)).key or which
    with lockfile.edit(lock_path) as lock:
        trust = _list(lock, model)
        found = [t for t in trust if which in (t.key, t.certificate)]
        if not found:
            where = f"model {model}" if model else "the whole file"
            raise NotPinnedError(
                f"{lock_path}: {where} does not trust {which} "
                f"(it trusts: {'; '.join(t.label for t in trust) or 'nobody'})",
                hint="cas trust ls shows every list",
            )
        for t in found:
            trust.remove(t)
    return TrustChange(lock_path, model, found[0], True)


def listing(path: Path | None) -> tuple[Path, list[tuple[str | None, TrustedSigner]]]:
    """Every trusted signer, with the model it is for (None: the whole file)."""
    lock_path = lockfile.locate(path)
    lock = Lockfile.load(lock_path)
    out: list[tuple[str | None, TrustedSigner]] = [(None, t) for t in lock.trust]
    for name in sorted(lock.models):
        out.extend((name, t) for t in lock.models[name].trust)
    return lock_path, out


def _list(lock: Lockfile, model: str | None) -> list[TrustedSigner]:
    if model is None:
        return lock.trust
    lockfile.check_name(model)
    if model not in lock.models:
        raise NotPinnedError(
            f"{lock.path}: no model {model!r} to trust signers for",
            hint="pin a version first (cas add / cas pull), or leave out --model",
        )
    found: LockedModel = lock.models[model]
    return found.trust
