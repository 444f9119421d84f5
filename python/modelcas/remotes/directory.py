"""A shared directory as a remote: the store's own layout, plus a small catalog of versions.

``/lab/shared/cas`` (or ``file:///lab/shared/cas``) holds objects exactly as a store does,
written by rename, so several machines can push at once (NFS, SMB, a mounted bucket). Its
``catalog/MODEL/VERSION.json`` files say which versions were pushed or published there (name,
version, requires, package, and every file's size, sha256 and blake3), so that ``cas pull``,
``cas update`` and ``cas verify --remote`` work with a directory as with the Hub. A catalog
entry is created once, atomically (written aside, then hard-linked into place: the link fails
if another machine was first), and never changed: a version is never moved.

A version's signatures sit beside its entry: ``catalog/MODEL/VERSION.sig``, and a later one
(a version signed again, say with a new key) ``VERSION.sig.2``, ``.sig.3``...; each is
created the same way and never changed either.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelcas.digest import Digest, is_hex64
from modelcas.errors import (
    IntegrityError,
    RemoteError,
    StoreError,
    TagConflictError,
    UsageError,
)
from modelcas.hashing import Progress
from modelcas.remotes.base import (
    Fetched,
    Listed,
    Outgoing,
    Published,
    ReadBack,
    RemotePlan,
    RemoteVersion,
    Sink,
    Step,
)
from modelcas.store import Store
from modelcas.store.durable import fsync_dir, fsync_file

CATALOG = "catalog"
# A catalog entry is a few hundred bytes; a cap, so that a planted file cannot eat memory.
_MAX_ENTRY = 4 << 20
_MAX_SIGNATURE = 64 << 20  # as modelcas.signing reads one
_MAX_SIGNATURES = 32  # the newest read


class DirRemote:
    """A directory with the store's layout, shared by several machines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = self.path.resolve().as_uri()
        self._pending: dict[tuple[str, str], dict[str, Digest]] = {}

    def store(self, *, create: bool = False) -> Store:
        """The remote as a store (the same layout); ``create`` makes a new one (a first push).

        Raises:
            RemoteError: the directory does not exist (and ``create`` is false).
        """
        if not create:
            self.check_reachable()
        return Store(self.path)

    def check_reachable(self) -> None:
        """Refuse a remote that is not a directory (unmounted share, typo).

        Raises:
            RemoteError: no such directory.
        """
        if not self.path.is_dir():
            raise RemoteError(
                f"remote {self.url} is not reachable (no such directory)",
                hint="mount the shared storage, or fix the path (or the lockfile's source)",
            )

    # -- the catalog -----------------------------------------------------------------------

    def _entry_path(self, model: str, version: str) -> Path:
        return self.path / CATALOG / model / f"{version}.json"

    def catalog(self, model: str) -> dict[str, dict[str, Any]]:
        """``{version: entry}`` for every version of ``model`` the catalog records."""
        folder = self.path / CATALOG / model
        out: dict[str, dict[str, Any]] = {}
        if not folder.is_dir():
            return out
        for p in sorted(folder.iterdir()):
            if p.suffix != ".json" or p.is_symlink() or not p.is_file():
                continue
            entry = _read_entry(p)
            if entry is not None and entry.get("model") == model:
                out[p.stem] = entry
        return out

    def record(
        self,
        model: str,
        version: str,
        files: Mapping[str, Digest],
        *,
        requires: str | None,
        package: str | None,
    ) -> bool:
        """Add a version to the catalog; False when it is there already with these files.

        Raises:
            TagConflictError: the catalog holds the version (in any PEP 440 spelling) with
                other files; it is never changed.
        """
        existing = self._find(model, version)
        body = _entry(model, version, files, requires, package)
        if existing is not None:
            _, entry = existing
            self._same_or_conflict(model, version, entry, files)
            return False
        final = self._entry_path(model, version)
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")
        if not self._create(final, data):  # another machine recorded it first
            entry = _read_entry(final) or {}
            self._same_or_conflict(model, version, entry, files)
            return False
        return True

    def _create(self, final: Path, data: bytes) -> bool:
        """Write a catalog file once: aside, then hard-linked into place (False: it exists)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store(create=True).temp_path()
        tmp.write_bytes(data)
        try:
            fsync_file(tmp)
            os.link(tmp, final)  # fails if another machine was first
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return True

    def check(self, model: str, version: str, files: Mapping[str, Digest]) -> None:
        """Refuse, before anything is copied, a version the catalog holds with other files.

        Raises:
            TagConflictError: it does.
        """
        if self.path.is_dir():
            found = self._find(model, version)
            if found is not None:
                self._same_or_conflict(model, version, found[1], files)

    def _same_or_conflict(
        self, model: str, version: str, entry: dict[str, Any], files: Mapping[str, Digest]
    ) -> None:
        theirs = {n: d.sha256 for n, d in _files(entry).items()}
        if theirs != {n: d.sha256 for n, d in files.items()}:
            raise TagConflictError(
                f"{self.url} already holds {model}@{entry.get('version', version)} with other "
                f"files ({', '.join(sorted(theirs)) or 'none'}); a version is never changed",
                hint=f"publish a new version instead of {version}",
            )

    def _find(self, model: str, version: str) -> tuple[str, dict[str, Any]] | None:
        from modelcas.lockfile import same_version  # noqa: PLC0415 (packaging, on use)

        for name, entry in self.catalog(model).items():
            if same_version(name, version):
                return name, entry
        return None

    # -- the protocol ----------------------------------------------------------------------

    def resolve(self, ref: str | None) -> RemoteVersion:
        """A version the catalog records: ``NAME@VERSION``, or ``NAME`` for the newest.

        Raises:
            UsageError: no model named.
            RemoteError: unreachable, or no such version (the message lists the versions).
        """
        from modelcas.lockfile import is_prerelease, parse_version  # noqa: PLC0415

        self.check_reachable()
        if not ref:
            raise UsageError(
                f"{self.url}: name the model to pull from the directory's catalog",
                hint="--name MODEL (and --version VERSION), or pass the addresses to fetch",
            )
        model, _, version = ref.partition("@")
        catalog = self.catalog(model)
        if version:
            found = self._find(model, version)
        else:
            ordered = sorted(catalog, key=parse_version)
            final = [v for v in ordered if not is_prerelease(v)] or ordered
            found = (final[-1], catalog[final[-1]]) if final else None
        if found is None:
            have = ", ".join(sorted(catalog, key=parse_version)) or "none"
            raise RemoteError(
                f"{self.url} has no {model}{'@' + version if version else ''} in its catalog "
                f"(versions: {have})",
                hint="`cas push` or `cas publish --to DIR` records versions there",
            )
        name, entry = found
        return RemoteVersion(
            self.url,
            self.url,
            ref=f"{model}@{name}",
            version=name,
            model=model,
            requires=_opt_str(entry.get("requires")),
            package=_opt_str(entry.get("package")),
            files=tuple(sorted(_files(entry))),
        )

    def listing(self, version: RemoteVersion) -> dict[str, Listed]:
        """The files of a catalog entry that the directory holds, with their objects' sizes.

        A file whose object is gone (deleted by hand, or by a gc of the directory) is not
        listed: the catalog alone does not hold bytes. Empty for a version the catalog does
        not record.
        """
        if version.model is None or version.version is None:
            return {}
        # Being published (a read-back before the catalog entry is written): the objects.
        files = self._pending.get((version.model, version.version))
        if files is None:
            found = self._find(version.model, version.version)
            if found is None:
                return {}
            files = _files(found[1])
        out = {}
        shared = self.store()
        for n, d in sorted(files.items()):
            try:
                st = shared.object_path(d.sha256).lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[n] = Listed(n, st.st_size, d.sha256)
        return out

    def fetch(
        self,
        version: RemoteVersion,
        want: Mapping[str, Digest | None],
        store: Store,
        *,
        progress: Progress | None = None,
    ) -> list[Fetched]:
        """Copy objects from the shared directory, each verified (see ``Remote.fetch``)."""
        listed = self.listing(version) if any(d is None for d in want.values()) else {}
        out = []
        for name, pinned in want.items():
            digest = pinned or (listed[name].digest if name in listed else None)
            if digest is None:
                raise RemoteError(f"{self.url}: {version.ref} has no file {name!r}")
            if store.has(digest.sha256):
                out.append(Fetched(name, store.info(digest.sha256).digest, "store"))
                continue
            obj = self._object(digest, name)
            info = store.add_file(obj, expected=digest, progress=progress).info
            out.append(Fetched(name, info.digest, "download"))
        return out

    def _object(self, digest: Digest, name: str) -> Path:
        obj = self.store().object_path(digest.sha256)
        if not obj.is_file() or obj.is_symlink():
            raise RemoteError(
                f"remote {self.url} has no object sha256:{digest.sha256} ({name})",
                hint="push it there first: `cas push " + self.url + "`",
            )
        return obj

    def stream(self, version: RemoteVersion, listed: Listed, sink: Sink) -> None:  # noqa: ARG002
        """Read an object's bytes (over NFS they may come from this client's page cache)."""
        digest = listed.digest
        if digest is None:
            raise RemoteError(f"{self.url}: {listed.name} has no digest to read by")
        fd = os.open(self._object(digest, listed.name), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            while data := f.read(8 << 20):
                sink(memoryview(data))

    def versions(self, model: str) -> dict[str, str]:
        """``{version: "MODEL@VERSION"}`` from the catalog."""
        self.check_reachable()
        return {v: f"{model}@{v}" for v in self.catalog(model)}

    # -- signatures ------------------------------------------------------------------------

    def _signature_files(self, model: str, version: str) -> list[tuple[int, Path]]:
        """``(n, path)`` of every ``VERSION.sig[.n]`` beside the entry, newest first."""
        folder = self.path / CATALOG / model
        if not folder.is_dir():
            return []
        pattern = re.compile(re.escape(version) + r"\.sig(?:\.([1-9][0-9]{0,5}))?")
        found = []
        for p in folder.iterdir():
            m = pattern.fullmatch(p.name)
            if m is not None:
                found.append((int(m.group(1) or 1), p))
        return sorted(found, reverse=True)

    def signatures(self, version: RemoteVersion) -> list[bytes]:
        """The signature files beside the version's catalog entry, newest first."""
        if version.model is None or version.version is None:
            return []
        self.check_reachable()
        found = self._find(version.model, version.version)
        name = found[0] if found is not None else version.version
        out = []
        for _, path in self._signature_files(version.model, name)[:_MAX_SIGNATURES]:
            data = _read_file(path, _MAX_SIGNATURE)
            if data is not None:
                out.append(data)
        return out

    def attach_signature(self, version: RemoteVersion, data: bytes) -> str | None:
        """Write a signature beside the version's catalog entry (a new file; none is changed).

        Raises:
            RemoteError: the catalog does not record the version.
        """
        if version.model is None or version.version is None:
            raise RemoteError(f"{self.url}: which version the signature is for is not known")
        self.check_reachable()
        found = self._find(version.model, version.version)
        if found is None:
            raise RemoteError(
                f"{self.url} has no {version.model}@{version.version} in its catalog; "
                "its signature goes beside its entry",
                hint="publish the version there first (cas publish --to, or cas push)",
            )
        return self._attach(version.model, found[0], data)

    def _attach(self, model: str, version: str, data: bytes) -> str | None:
        if data in self.signatures(RemoteVersion(self.url, self.url, model=model, version=version)):
            return None
        folder = self.path / CATALOG / model
        for _ in range(100):  # another machine may take a number first
            existing = self._signature_files(model, version)
            n = existing[0][0] + 1 if existing else 1
            name = f"{version}.sig" + (f".{n}" if n > 1 else "")
            if self._create(folder / name, data):
                return f"{self.url}/{CATALOG}/{model}/{name}"
        raise RemoteError(f"{self.url}: could not add a signature file for {model}@{version}")

    def _signature_url(self, model: str, version: str, data: bytes) -> str | None:
        """Where the catalog holds these signature bytes for the version."""
        for _, path in self._signature_files(model, version):
            if _read_file(path, _MAX_SIGNATURE) == data:
                return f"{self.url}/{CATALOG}/{model}/{path.name}"
        return None

    # -- publishing ------------------------------------------------------------------------

    def push(self, digest: Digest, store: Store, *, progress: Progress | None = None) -> bool:
        """Copy a local object to the shared directory; False when it was already there.

        The local copy is verified on the way out (the copy is hashed and must match).
        """
        local = store.path(digest.sha256)
        shared = self.store(create=True)
        return not shared.add_file(local, expected=digest, progress=progress).existed

    def plan_publish(self, out: Outgoing, *, prune: bool = False) -> RemotePlan:  # noqa: ARG002
        """Which objects are missing there, and whether the catalog has the version.

        Raises:
            TagConflictError: the catalog holds the version with other files.
        """
        files = {n: d for n, (_, d) in out.files.items()}
        exists = self.path.is_dir()
        found = self._find(out.model, out.version) if exists else None
        if found is not None:
            self._same_or_conflict(out.model, out.version, found[1], files)
        shared = Store(self.path) if exists and (self.path / "store.json").exists() else None
        steps = [
            Step(n, "present" if shared and shared.has(d.sha256) else "upload", d)
            for n, d in sorted(files.items())
        ]
        tag = f"{out.model}@{found[0] if found else out.version}"
        return RemotePlan(
            self.url, tag, self.url, steps, tag_exists=found is not None, repo_exists=exists
        )

    def publish(
        self,
        plan: RemotePlan,
        out: Outgoing,
        store: Store,
        *,
        progress: Progress | None = None,
        read_back: ReadBack | None = None,
    ) -> Published:
        """Copy the objects, read them back if asked, then record the catalog entry."""
        uploaded: list[str] = []
        present: list[str] = []
        for step in plan.steps:
            assert step.digest is not None
            sent = self.push(step.digest, store, progress=progress)
            (uploaded if sent else present).append(step.name)
        if read_back is not None:
            self._pending[(out.model, out.version)] = {n: d for n, (_, d) in out.files.items()}
            read_back(
                RemoteVersion(
                    self.url,
                    self.url,
                    ref=plan.tag,
                    version=out.version,
                    model=out.model,
                    files=tuple(sorted(out.files)),
                )
            )
        signed = None
        if out.signature is not None:
            # Beside the entry, before it: the version appears with its signature.
            name = plan.tag.partition("@")[2]
            signed = self._attach(out.model, name, out.signature) or self._signature_url(
                out.model, name, out.signature
            )
        self.record(
            out.model,
            out.version,
            {n: d for n, (_, d) in out.files.items()},
            requires=out.requires,
            package=out.package,
        )
        return Published(self.url, None, uploaded, [], present, [], signed=signed)


def _entry(
    model: str,
    version: str,
    files: Mapping[str, Digest],
    requires: str | None,
    package: str | None,
) -> dict[str, Any]:
    return {
        "model": model,
        "version": version,
        "requires": requires,
        "package": package,
        "files": {
            n: {"size": d.size, "sha256": d.sha256, "blake3": d.blake3}
            for n, d in sorted(files.items())
        },
    }


def catalog_references(root: Path) -> set[str]:
    """Every sha256 the catalog of the directory remote at ``root`` names: gc's roots there.

    A directory that ``cas push`` wrote into is a store whose versions live in ``catalog/``,
    not in ``roots/``; ``cas --store DIR gc`` keeps what they name (files and signatures).

    Raises:
        StoreError: an entry cannot be read or is malformed; gc must not guess, so it stops
            (the entry is named, never quoted).
    """
    found: set[str] = set()
    folder = root / CATALOG
    if not folder.is_dir():
        return found
    for model in sorted(folder.iterdir()):
        if not model.is_dir() or model.is_symlink():
            continue
        for p in sorted(model.iterdir()):
            if p.suffix != ".json":
                continue
            entry = _read_entry(p)
            try:
                if entry is None:
                    raise IntegrityError("unreadable")
                found |= {d.sha256 for d in _files(entry).values()}
            except IntegrityError:
                raise StoreError(
                    f"catalog entry {p} is not a regular file holding a catalog entry (JSON "
                    "with model, version and files); nothing was deleted",
                    hint="restore it, or remove it if that version is no longer shared, then "
                    "run gc again",
                ) from None
            sig = entry.get("signature")
            if isinstance(sig, dict) and isinstance(sig.get("sha256"), str):
                found.add(sig["sha256"])
    return found


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO or device planted in the catalog is never read
            raw = json.loads(f.read(_MAX_ENTRY))
    except (OSError, ValueError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def _read_file(path: Path, limit: int) -> bytes | None:
    """A regular file of the catalog, at most ``limit`` bytes (None: not one, or larger)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def _files(entry: Mapping[str, Any]) -> dict[str, Digest]:
    """The files of a catalog entry; a malformed one is an error, not an empty version.

    Raises:
        IntegrityError: a file's record is not size + sha256.
    """
    raw = entry.get("files")
    out = {}
    for name, rec in (raw or {}).items() if isinstance(raw, dict) else ():
        size = rec.get("size") if isinstance(rec, dict) else None
        sha = rec.get("sha256") if isinstance(rec, dict) else None
        b3 = rec.get("blake3") if isinstance(rec, dict) else None
        if not isinstance(size, int) or not isinstance(sha, str) or not is_hex64(sha):
            raise IntegrityError(
                f"catalog entry {entry.get('model')}@{entry.get('version')}: file {name!r} "
                "has no valid size and sha256",
                hint="the catalog was edited by hand: remove the entry and push again",
            )
        out[str(name)] = Digest(sha, size, b3 if isinstance(b3, str) and is_hex64(b3) else None)
    return out


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
