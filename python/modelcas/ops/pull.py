"""``cas pull`` and ``cas push``: fetch a version from any remote and pin it, or share a directory.

The remote is picked once, from the one reference parser (``modelcas.remotes``): the Hub, an
OCI registry, a shared directory or a plain URL all go through the same steps: resolve the
reference to a version that cannot move, list its files, refuse before downloading anything
that disagrees with the lockfile, fetch (verified while streaming), then pin the version with
its source, ``requires`` and ``package`` as the remote's metadata gives them. For a model the
lockfile trusts signers for, the signature that travels with the version is checked before
any byte moves and pinned with it (``modelcas.ops.signatures``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelcas import lockfile
from modelcas.digest import Digest, is_hex64
from modelcas.errors import IntegrityError, RemoteMissingError, UsageError
from modelcas.hashing import Progress, hash_bytes
from modelcas.lockfile import Lockfile, PinnedSignature
from modelcas.pinning import write_pins
from modelcas.remotes import DirRemote, Fetched, Listed, Remote, RemoteVersion, open_remote, parse
from modelcas.remotes.reference import Ref, file_name
from modelcas.store import Store

Total = Callable[[int], object]  # told how many bytes will move, once that is known
PulledFile = Fetched  # one file: its name (or label), digest, and where its bytes came from
Place = Literal["pinned", "already", "mirror"]


@dataclass(frozen=True, slots=True)
class PullRequest:
    """What to pull, and how to pin it."""

    source: str  # hf://ORG/NAME@REV, oci://HOST/REPO:TAG, a directory, https://HOST/PATH/FILE
    name: str | None = None  # model to pin; default from the remote (repo name, artifact name)
    version: str | None = None  # default: from the tag or the remote's metadata
    files: tuple[str, ...] = ()  # only these files
    addresses: tuple[str, ...] = ()  # directory remotes: these objects
    lock: Path | None = None
    pin: bool = True
    include: tuple[str, ...] = ()  # globs: only files matching one of them
    exclude: tuple[str, ...] = ()  # globs: not files matching one of them
    expect: str | None = None  # (plain URLs) sha256:<hex> the bytes must have
    plain_http: bool = False  # (OCI, URLs) allow HTTP to a host that is not loopback
    pre: bool = False  # let a pre-release become latest
    signature: Path | None = None  # check and pin this signature instead of what travels


@dataclass
class PullResult:
    """What a pull did."""

    source: str
    files: list[Fetched] = field(default_factory=list)
    commit: str | None = None  # the pinned revision: a Hub commit, an OCI manifest digest
    model: str | None = None
    version: str | None = None
    lock_path: Path | None = None
    changed: bool = False  # the lockfile was changed
    place: Place | None = None  # how the lockfile records the source
    requires: str | None = None
    package: str | None = None
    remote: str | None = None
    validator: str | None = None
    signature: PinnedSignature | None = None  # the version's signature, checked and pinned

    @property
    def downloaded(self) -> int:
        """How many files were downloaded."""
        return sum(f.downloaded for f in self.files)


def pull(
    req: PullRequest,
    store: Store,
    *,
    progress: Progress | None = None,
    total: Total | None = None,
) -> PullResult:
    """Fetch a version from a remote, verified, and pin it (see the module docstring).

    A directory remote without ``--name`` (or with addresses) fetches objects instead: every
    pin of the lockfile that is missing here, or the addresses given.

    Raises:
        UsageError: a malformed source, or files the version does not have.
        IntegrityError: the remote has other bytes than the pin, or served other bytes.
        RemoteMissingError: no such repository, tag or version there.
        RemoteError: the remote failed, or is unreachable.
    """
    ref = parse(req.source)
    if not ref.is_remote:
        raise UsageError(
            f"{req.source!r} is not a remote",
            hint="pull from hf://ORG/NAME@REV, oci://HOST/REPO:TAG, a directory or https://…",
        )
    # A name or version given is checked before the remote is asked (it may become a path).
    if req.name is not None:
        lockfile.check_name(req.name)
    if req.version is not None:
        lockfile.parse_version(req.version, f"{req.name or 'the model'}@{req.version}")
    remote = open_remote(ref, plain_http=req.plain_http)
    if ref.kind == "dir" and (req.addresses or req.name is None):
        assert isinstance(remote, DirRemote)
        return _pull_objects(req, remote, store, progress, total)
    if req.addresses:
        raise UsageError("addresses apply to directory remotes; to pick files use --file")
    if ref.kind == "url" and req.pin and (req.name is None or req.version is None):
        raise UsageError(
            "a URL says no model name or version: pass --name and --version",
            hint=f"cas pull {req.source} --name MODEL --version v1 [--expect sha256:…]",
        )
    if req.expect is not None and ref.kind != "url":
        raise UsageError("--expect goes with a plain URL (other remotes list their digests)")
    version = remote.resolve(_ask(ref, req))
    name = req.name or _default_name(ref, version)
    chosen = req.version or version.version
    if req.version and version.version and lockfile.same_version(req.version, version.version):
        chosen = version.version  # the spelling the remote keeps (v1.1 when asked for 1.1)
    if req.pin:
        if chosen is None:
            raise UsageError(
                f"{version.source} says no version: pass --version",
                hint="or --no-pin to fetch without pinning",
            )
        lockfile.check_name(name)
        lockfile.parse_version(chosen, f"{name}@{chosen}")
    lock_path = lockfile.locate(req.lock, must_exist=False)
    from modelcas.ops import signatures  # noqa: PLC0415 (signing only when trusting)

    if req.signature is not None and not req.pin:
        raise UsageError("--signature is pinned with the version: drop --no-pin")
    offer = None
    if req.pin and chosen is not None:
        # Before any byte moves: a trusted model's version must come with a trusted signature.
        offer = signatures.offered(lock_path, name, chosen, remote, version, store, req.signature)
    pinned = _pinned(lock_path, name, chosen) if req.pin or req.lock else {}
    listing = remote.listing(version)
    wanted = _select(req, version, listing)
    if req.pin and chosen is not None:
        _check_names(name, chosen, version, wanted)
    expect = _expected(req, listing, wanted)
    _check(lock_path, name, chosen, version, listing, wanted, pinned)
    want = {n: pinned.get(n) or expect.get(n) or listing[n].digest for n in wanted}
    if total is not None:
        total(sum(listing[n].size for n in wanted if not _present(store, want[n])))
    result = PullResult(
        version.source,
        commit=version.revision,
        lock_path=lock_path,
        requires=version.requires,
        package=version.package,
        remote=remote.url,
        validator=version.validator,
    )
    result.files = remote.fetch(version, want, store, progress=progress)
    delivered = next((f.validator for f in result.files if f.validator), None)
    if delivered is not None and delivered != version.validator:
        # (URLs) the file changed on the server during the download and came again whole.
        version = dataclasses.replace(version, validator=delivered)
        result.validator = delivered
    if not req.pin or chosen is None:
        return result
    result.model, result.version = name, chosen
    data = None
    if offer is not None:
        data, result.signature = signatures.accept(
            offer, {f.name: f.digest for f in result.files}, store
        )
    result.place, signed = _pin(req, ref, remote, version, result, store, lock_path, data)
    result.changed = result.place != "already" or signed
    return result


def _check_names(name: str, chosen: str, version: RemoteVersion, wanted: list[str]) -> None:
    """Refuse, before any byte moves, what the remote says that no lockfile could hold.

    File names, ``package`` and ``requires`` come from the remote (a registry's layer
    annotations, a Hub repo's files, ``modelcas.json``); each must be a name the lockfile
    accepts (docs/lockfile.md), or the pin would be refused after the download.
    """
    where = f"{name}@{chosen}"
    for n in wanted:
        lockfile.check_file_name(n, f"{where} from {version.source}")
    if version.package is not None:
        lockfile.check_package(version.package, f"{version.source}: package")
    if version.requires is not None:
        lockfile.parse_requires(version.requires, f"{version.source}: requires")


def _ask(ref: Ref, req: PullRequest) -> str | None:
    """What to ask the remote to resolve."""
    if ref.kind == "dir":
        return f"{req.name}@{req.version}" if req.version else req.name
    return ref.revision


def _default_name(ref: Ref, version: RemoteVersion) -> str:
    if ref.kind == "hf":
        return ref.location.split("/")[1]
    if version.model:
        return version.model
    return file_name(ref.location).split(".", 1)[0] or "model"


def _pinned(lock_path: Path, name: str, version: str | None) -> dict[str, Digest]:
    if version is None or not lock_path.exists():
        return {}
    model = Lockfile.load(lock_path).models.get(name)
    found = model.find(version) if model else None
    return dict(model.versions[found].files) if model and found else {}


def _select(req: PullRequest, version: RemoteVersion, listing: dict[str, Listed]) -> list[str]:
    """The files to pull: --file, else the version's own (metadata), filtered by the globs."""
    if req.files:
        names = list(req.files)
    elif version.files is not None:
        names = list(version.files)
    else:
        names = list(listing)
    missing = [n for n in names if n not in listing]
    if missing:
        raise RemoteMissingError(
            f"{version.source}"
            + (f" (revision {version.revision[:19]})" if version.revision else "")
            + f" has no {', '.join(missing)}",
            hint=f"files there: {', '.join(listing) or 'none'}",
        )
    if req.include:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in req.include)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in req.exclude)]
    if not names:
        raise UsageError(
            f"no file of {version.source} matches --include/--exclude",
            hint=f"files there: {', '.join(listing) or 'none'}",
        )
    return names


def _expected(req: PullRequest, listing: dict[str, Listed], wanted: list[str]) -> dict[str, Digest]:
    """(plain URLs) ``--expect sha256:…``: the digest the one file must have."""
    if req.expect is None:
        return {}
    hexpart = req.expect.removeprefix("sha256:").lower()
    if not req.expect.startswith("sha256:") or not is_hex64(hexpart):
        raise UsageError(f"--expect {req.expect!r}: expected sha256:<64 hex digits>")
    return {n: Digest(hexpart, listing[n].size) for n in wanted}


def _check(  # noqa: PLR0917 (the facts one check compares)
    lock_path: Path,
    name: str,
    version: str | None,
    at: RemoteVersion,
    listing: dict[str, Listed],
    wanted: list[str],
    pinned: dict[str, Digest],
) -> None:
    """Refuse, before downloading, a remote whose listing disagrees with the pin.

    Every pinned file the remote lists is compared, not only those picked (``--include``):
    the remote becomes a place of the whole version.
    """
    for n in sorted(set(wanted) | (set(pinned) & set(listing))):
        listed, want = listing[n], pinned.get(n)
        if want is not None and (
            (listed.sha256 is not None and listed.sha256 != want.sha256) or listed.size != want.size
        ):
            found = f"sha256:{listed.sha256}" if listed.sha256 else f"{listed.size} bytes"
            raise IntegrityError(
                f"{lock_path}: {name}@{version} pins {n} as {want.address} ({want.size} "
                f"bytes), but {at.source}"
                + (f" (revision {at.revision})" if at.revision else "")
                + f" has {found}; nothing was downloaded",
                hint="the tag moved or the pin is wrong: pin another --version, or fix the pin",
            )
    extra = sorted(n for n in wanted if n not in pinned)
    if pinned and extra:
        raise IntegrityError(
            f"{lock_path}: {name}@{version} pins {', '.join(sorted(pinned))}, but {at.source} "
            f"also holds {', '.join(extra)}; nothing was downloaded",
            hint="the version there is not the one pinned: pin another --version, or pick the "
            "pinned files with --file",
        )
    if pinned and not set(pinned) <= set(listing):
        gone = sorted(set(pinned) - set(listing))
        raise IntegrityError(
            f"{lock_path}: {name}@{version} pins {', '.join(gone)}, which {at.source} does not "
            "hold; nothing was downloaded",
            hint="the version there is not the one pinned: pin another --version",
        )


def _present(store: Store, d: Digest | None) -> bool:
    return d is not None and store.has(d.sha256)


def _pin(  # noqa: PLR0917 (what a pin records, from one pull)
    req: PullRequest,
    ref: Ref,
    remote: Remote,
    version: RemoteVersion,
    result: PullResult,
    store: Store,
    lock_path: Path,
    data: bytes | None = None,
) -> tuple[Place, bool]:
    """Pin the pulled version (and its checked signature); True when the signature is new."""
    name, chosen = result.model, result.version
    assert name is not None and chosen is not None
    got = {f.name: f.digest for f in result.files}
    by_digest = {f.digest: f.name for f in result.files}
    commit = version.revision if ref.kind == "hf" else None
    repo = remote.url if ref.kind in ("hf", "oci") else None
    sig = result.signature

    def change(fresh: Lockfile) -> tuple[Place, bool]:
        place = _record(fresh)
        if sig is None:
            return place, False
        model = fresh.models[name]
        entry = model.versions[model.find(chosen) or chosen]
        if entry.signature == sig:
            return place, False
        entry.signature = sig
        return place, True

    def _record(fresh: Lockfile) -> Place:
        model = fresh.models.get(name)
        found = model.find(chosen) if model else None
        if model is not None and found is not None:
            entry = model.versions[found]
            # The pinned files, or some of them (--include), with the pinned bytes.
            if all(f in entry.files and entry.files[f].sha256 == d.sha256 for f, d in got.items()):
                if entry.source == version.source and (commit is None or entry.commit == commit):
                    return "already"
                if entry.source is None:
                    entry.source, entry.commit = version.source, commit
                    entry.validator = version.validator
                    return "pinned"
                return "mirror" if fresh.add_mirror(name, found, version.source) else "already"
        fresh.pin(
            name,
            chosen,
            got,
            requires=version.requires,
            source=version.source,
            commit=commit,
            validator=version.validator,
            pre=req.pre,
        )
        m = fresh.models[name]
        m.repo = m.repo or repo
        if fresh.package is None and version.package and version.requires:
            fresh.package = version.package
        return "pinned"

    def refill(d: Digest) -> None:  # gc took it before the pin was seen: fetch again
        if sig is not None and d == sig.digest and data is not None:
            store.add_bytes(data, expected=d)
        else:
            remote.fetch(version, {by_digest[d]: d}, store)

    pins = list(got.values())
    if data is not None and sig is not None:  # a signature new here (else pinned already)
        store.add_bytes(data, expected=sig.digest)
        pins.append(sig.digest)
    return write_pins(store, lock_path, change, pins, refill)


def _pull_objects(
    req: PullRequest,
    remote: DirRemote,
    store: Store,
    progress: Progress | None,
    total: Total | None,
) -> PullResult:
    """A directory's objects: the addresses given, else every pin of the lockfile."""
    remote.check_reachable()
    if req.addresses:
        shared = remote.store()
        pins = [(a, shared.info(shared.resolve(a)).digest) for a in req.addresses]
    else:
        from modelcas.ops.sync import fetch_signatures  # noqa: PLC0415
        from modelcas.registry import open_lock  # noqa: PLC0415
        from modelcas.signing import check_lock  # noqa: PLC0415

        registry = open_lock(req.lock, store=store)
        registry.register()  # first: gc must see the pins before their objects arrive
        _signatures_from(remote, registry.lock, store)
        fetch_signatures(registry)  # the rest from each version's own places
        check_lock(registry.lock, store)  # nothing a trusted model's lock refuses is fetched
        pins = [(p.label, p.digest) for p in registry.pins()]
    result = PullResult(req.source, remote=remote.url)
    if total is not None:
        total(sum(d.size for _, d in pins if not store.has(d.sha256)))
    version = RemoteVersion(remote.url, remote.url)
    for label, digest in pins:
        result.files += remote.fetch(version, {label: digest}, store, progress=progress)
    return result


def _push_signatures(remote: DirRemote, lock: Lockfile, store: Store) -> list[str]:
    """Each pinned signature beside its version's catalog entry (those not there yet)."""
    from modelcas.signing.trust import stored_signature  # noqa: PLC0415

    done = []
    for name, model in sorted(lock.models.items()):
        for v in model.ordered():
            sig = model.versions[v].signature
            if sig is None:
                continue
            data = stored_signature(store, sig, f"{name}@{v}")
            at = RemoteVersion(remote.url, remote.url, model=name, version=v)
            if remote.attach_signature(at, data) is not None:
                done.append(f"{name}@{v}")
    return done


def _signatures_from(remote: DirRemote, lock: Lockfile, store: Store) -> None:
    """The pinned signatures the store lacks, from beside the directory's catalog entries."""
    for name, model in sorted(lock.models.items()):
        for v in model.ordered():
            sig = model.versions[v].signature
            if sig is None or store.has(sig.digest.sha256):
                continue
            at = RemoteVersion(remote.url, remote.url, model=name, version=v)
            for data in remote.signatures(at):
                d = hash_bytes(data)
                if d.sha256 == sig.digest.sha256 and d.size == sig.digest.size:
                    store.add_bytes(data, expected=sig.digest)
                    break


@dataclass
class PushResult:
    """What a push did."""

    url: str
    sent: list[Digest] = field(default_factory=list)
    present: list[Digest] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # MODEL@VERSION added to the catalog
    lock_path: Path | None = None
    mirrored: list[str] = field(default_factory=list)  # MODEL@VERSION given the directory
    signed: list[str] = field(default_factory=list)  # MODEL@VERSION whose signature was added


def push(
    dest: str,
    store: Store,
    *,
    addresses: tuple[str, ...] = (),
    lock: Path | None = None,
    progress: Progress | None = None,
    total: Total | None = None,
) -> PushResult:
    """Copy objects to a directory remote, verified, and say there what they are.

    Without addresses: every pin of the lockfile; each version is recorded in the directory's
    catalog (so ``cas pull``, ``cas update`` and ``cas verify --remote`` find it), and the
    lockfile lists the directory as a source or mirror of every version pushed.

    Raises:
        UsageError: ``dest`` is not a directory remote.
        TagConflictError: the directory's catalog holds a version with other files.
        RemoteError: it is not reachable.
    """
    ref = parse(dest)
    if ref.kind != "dir":
        # A bare word reads as a model name, even where a folder of that name exists.
        bare = ref.kind == "pin" and Path(dest).is_dir()
        raise UsageError(
            f"cas push takes a directory remote, not {dest!r}",
            hint=f"write it as a path: ./{dest}"
            if bare
            else "to publish to the Hub or an OCI registry use `cas publish` (`--to oci://…`)",
        )
    remote = DirRemote(ref.location)
    result = PushResult(remote.url)
    if addresses:
        digests = [store.info(store.resolve(a)).digest for a in addresses]
        versions: list[tuple[str, str, dict[str, Digest], str | None]] = []
        package = None
    else:
        path = lockfile.locate(lock)
        loaded = Lockfile.load(path)
        result.lock_path, package = path, loaded.package
        digests = [d for *_, d in loaded.entries()]
        versions = [
            (name, v, dict(m.versions[v].files), m.versions[v].requires)
            for name, m in sorted(loaded.models.items())
            for v in m.ordered()
        ]
    for name, v, files, _ in versions:
        remote.check(name, v, files)  # a version is never changed: refuse before sending
    if total is not None:
        total(sum(d.size for d in digests))
    for d in dict.fromkeys(digests):
        (result.sent if remote.push(d, store, progress=progress) else result.present).append(d)
    for name, v, files, requires in versions:
        if remote.record(name, v, files, requires=requires, package=package):
            result.recorded.append(f"{name}@{v}")
    if not addresses:
        result.signed = _push_signatures(remote, loaded, store)
    if result.lock_path is not None and versions:

        def change(fresh: Lockfile) -> list[str]:
            done = []
            for name, v, _, _ in versions:
                model = fresh.models.get(name)
                if model is not None and model.find(v) and fresh.add_mirror(name, v, remote.url):
                    done.append(f"{name}@{v}")
            return done

        result.mirrored = write_pins(store, result.lock_path, change, [], lambda _: None)
    return result
