"""Bundle archives: writing a planned bundle, and reading, verifying and extracting one.

The Rust core streams every member once while computing its digests, appends the manifest
(``rust/manifest.rs`` owns its format) and replaces the bundle and its ``.sha256`` sidecar as a
pair. Reading validates the whole archive first (hostile archives are refused), and every
member must be one the manifest lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas import _core, hashing, sumfile, untrusted
from modelcas.bundle import models as _models
from modelcas.bundle import yamldoc
from modelcas.bundle.plan import CONFIG, MANIFEST, BundlePlan
from modelcas.digest import Digest
from modelcas.errors import BundleError, IntegrityError, ModelcasError, UsageError

if TYPE_CHECKING:
    from modelcas.store import Store

COMPRESSIONS = ("stored", "deflate", "zstd")
LEVELS = {"deflate": (0, 9), "zstd": (1, 22)}
SMALL = 64 << 20  # cap for members read into memory (config, metadata)
_MAX_SIDECAR = 1 << 20  # a sidecar is one checksum line
_RESERVED = {"_bundle_metadata", "tracker"}
# Types of the config.yml entry fields that readers use, checked when a bundle is read.
_ENTRY_TYPES: dict[str, type] = {
    "model_path": str,
    "model_metadata": str,
    "model_type": str,
    "inferer_args": dict,
    "model_args": dict,
}
_DAMAGED = "the bundle is damaged or was not made by modelcas"


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """A bundle that was written: where, its sidecar, and its own digest."""

    path: Path
    sidecar: Path
    sha256: str
    members: list[tuple[str, Digest]]


def parse_compression(text: str) -> tuple[str, int | None]:
    """``stored``, ``deflate[:0-9]`` or ``zstd[:1-22]``.

    Raises:
        UsageError: anything else, including a level out of range.
    """
    name, sep, level = text.partition(":")
    hint = "use stored (default), deflate[:0-9] or zstd[:1-22]"
    if name not in COMPRESSIONS or (sep and not level.isdigit()):
        raise UsageError(f"unknown compression {text!r}", hint=hint)
    if name == "stored":
        if sep:
            raise UsageError("stored takes no level", hint=hint)
        return name, None
    if not sep:
        return name, None
    low, high = LEVELS[name]
    if not low <= int(level) <= high:
        raise UsageError(
            f"{name} level {level} is out of range: expected {low} to {high}", hint=hint
        )
    return name, int(level)


def fetch_pending(plan: BundlePlan, store: Store | None = None) -> None:
    """Fetch the lock pins the plan found missing from the store (the only network step).

    Raises:
        RemoteError, IntegrityError, NotPinnedError: a fetch failed.
    """
    pending = [m for m in plan.models if m.fetch is not None]
    if not pending:
        return
    from modelcas.registry import open_lock  # noqa: PLC0415 (the Hub client, only to fetch)

    registry = open_lock(plan.lock, store=store)
    for m in pending:
        assert m.fetch is not None
        m.source = registry.fetch(m.fetch, verify=False)
        m.fetch = None


def write(
    plan: BundlePlan,
    *,
    compression: str = "stored",
    force: bool = False,
    store: Store | None = None,
    progress: hashing.Progress | None = None,
) -> Created:
    """Write a planned bundle and its ``.sha256`` sidecar.

    Members pinned to a digest (store objects, lock pins) are checked against it as they are
    written, before the bundle is put in place: a mismatch leaves nothing behind. With a
    ``store``, the output is registered first, so that ``cas gc`` cleans what a crash leaves
    beside it.

    Raises:
        FileExistsError: the output exists and ``force`` is not set.
        IntegrityError: a pinned member did not have its pinned bytes; nothing is written.
    """
    method, level = parse_compression(compression)
    fetch_pending(plan, store)
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    if store is not None:
        _register_output(plan.output, store)
    from modelcas.store import owner  # noqa: PLC0415 (the store only when writing)

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        # One writer at a time per output (a git-style O_EXCL lock, no flock): two `--force`
        # runs would otherwise interleave their renames and leave one's sidecar beside the
        # other's bundle. The temporary files name their owner, so gc leaves them alone.
        with owner.hold(plan.output.with_name(plan.output.name + ".lock"), str(plan.output)):
            written = _core.write_bundle(
                plan.output,
                plan.members(),
                method=method,
                level=level,
                mtime=int(epoch) if epoch else None,
                overwrite=force,
                manifest=True,
                sidecar=True,
                progress=progress,
            )
    except IntegrityError as e:
        if not any(m.pinned for m in plan.models):
            raise
        raise IntegrityError(str(e), hint="run `cas verify --repair`, then `cas sync`") from None
    assert written.sidecar is not None
    members = [(m.name, Digest(m.sha256, m.size, m.blake3)) for m in written.members]
    return Created(plan.output, Path(written.sidecar), written.sha256, members)


def _register_output(path: Path, store: Store) -> None:
    """Tell gc where a crash could leave temporary files.

    They are ``.NAME.OWNER-XXXX.partial`` and ``.NAME.sha256.OWNER-XXXX.partial`` beside the
    bundle; gc removes them only once their owner is gone and they are older than its grace. A
    bundle that is already a root keeping its objects stays one (both records share a key).
    """
    from modelcas.store import OUTPUT  # noqa: PLC0415

    here = path.resolve()
    if not any(r.path == here and r.kind != OUTPUT for r in store.roots()):
        store.register_output(here)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a bundle, as listed by its central directory and its manifest."""

    name: str
    method: str
    size: int
    compressed_size: int
    digest: Digest | None  # from the manifest; None only for the manifest itself


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing ``verify`` found wrong: the member (None for the sidecar), what, a message."""

    member: str | None
    kind: str  # unlisted, missing, size, crc32, sha256, blake3, corrupt, sidecar
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``Bundle.check`` found."""

    problems: list[Problem]
    checked: int  # members whose data was checked
    sidecar: Path | None  # None when there is none beside the bundle
    sha256: str | None  # the bundle's own sha256, when a sidecar was checked

    @property
    def ok(self) -> bool:
        """Whether nothing was found wrong."""
        return not self.problems


def sidecar_of(path: Path) -> Path:
    """``b.zip`` -> ``b.zip.sha256``."""
    return path.with_name(path.name + ".sha256")


class Bundle:
    """A bundle opened for reading. Use :meth:`read`, or :func:`modelcas.bundle.open`."""

    def __init__(
        self,
        path: Path,
        archive: _core.Archive,
        manifest: _core.Manifest,
        config: dict[str, Any],
        store: Store | None = None,
    ) -> None:
        self.path = path
        self.archive = archive
        self.core_manifest = manifest
        self.manifest = {e.name: Digest(e.sha256, e.size, e.blake3) for e in manifest.members}
        self.config = config
        self._store = store
        self._models: dict[str, _models.BundleModel] | None = None

    @property
    def store(self) -> Store:
        """The store members are ingested into (the user's, unless one was given)."""
        if self._store is None:
            from modelcas.store import Store  # noqa: PLC0415

            self._store = Store()
        return self._store

    @classmethod
    def read(
        cls, path: str | os.PathLike[str], *, store: Store | None = None, listed: bool = True
    ) -> Bundle:
        """Open and validate a bundle without ingesting anything.

        Args:
            path: the bundle.
            store: the store for ``ingest`` and models (default: the user's, when needed).
            listed: refuse a bundle whose members and manifest do not name the same members
                (``verify`` passes False to report it instead).

        Raises:
            UnsafeArchiveError, ArchiveLimitError: a hostile or broken archive; the message
                names the member and the rule or limit.
            BundleError: not a modelcas bundle (no manifest or config).
            IntegrityError: a member the manifest does not list, or the reverse.
        """
        p = Path(path)
        archive = _core.Archive(p)
        manifest = archive.manifest()
        if listed:
            problems = [
                p for p in archive.check_listing(manifest) if p.kind in ("unlisted", "missing")
            ]
            if problems:
                more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
                raise IntegrityError(
                    f"{p}: {problems[0].message}{more}",
                    hint=f"run `cas bundle verify {p}` for the details; {_DAMAGED}",
                )
        config = _read_config(p, archive, manifest)
        return cls(p, archive, manifest, config, store)

    def members(self) -> list[Member]:
        """Every member, in archive order."""
        return [
            Member(e.name, e.method, e.size, e.compressed_size, self.manifest.get(e.name))
            for e in self.archive.entries()
            if not e.is_dir
        ]

    def keys(self) -> list[str]:
        """The model keys, in config order."""
        return [
            k
            for k, v in self.config.items()
            if k not in _RESERVED and isinstance(v, dict) and "model_path" in v
        ]

    def check(
        self, *, deep: bool = False, progress: hashing.Progress | None = None
    ) -> Verification:
        """Check every member against the manifest, and the file against its sidecar.

        One read of the file feeds every check: each member's size, crc32 and blake3 (``deep``
        adds sha256), and the bundle's own sha256 for the sidecar, in parallel segments from
        the manifest's midstates.

        Raises:
            ArchiveLimitError: a member breaks a limit while it is read.
        """
        sidecar = sidecar_of(self.path)
        expected, problems = None, []
        if sidecar.is_file():
            expected, problem = _sidecar_digest(self.path, sidecar)
            if problem:
                problems.append(problem)
        found = self.archive.verify(
            self.core_manifest, whole=expected is not None, deep=deep, progress=progress
        )
        problems[:0] = [Problem(p.member, p.kind, p.message) for p in found.problems]
        if expected is not None and found.sha256 != expected:
            problems.append(
                Problem(
                    None,
                    "sidecar",
                    f"{self.path.name}: sha256 {found.sha256} differs from {sidecar} ({expected})",
                )
            )
        return Verification(
            problems, found.checked, sidecar if sidecar.is_file() else None, found.sha256
        )

    def verify(self, *, deep: bool = False, progress: hashing.Progress | None = None) -> list[str]:
        """:meth:`check`, as one message per problem (empty when the bundle is intact)."""
        return [p.message for p in self.check(deep=deep, progress=progress).problems]

    def ingest(self, *, progress: hashing.Progress | None = None) -> int:
        """Put every member into the store, verified against the manifest.

        Members already in the store are not read at all. Returns how many were new.

        Raises:
            IntegrityError: a member is not what the manifest says; it is not stored.
        """
        added = 0
        for i, e in enumerate(self.archive.entries()):
            want = self.manifest.get(e.name)
            if e.is_dir or want is None or self.store.has(want.sha256):
                continue
            tmp = self.store.temp_path()
            try:
                got = self.archive.extract_member(
                    i, tmp, sha256=want.sha256, blake3=want.blake3, progress=progress
                )
                digest = Digest(want.sha256, got.size, got.blake3)
                self.store.adopt(tmp, digest, what=f"{self.path} member {e.name}")
            except IntegrityError as err:
                raise IntegrityError(
                    f"{self.path}: member {e.name!r} does not match the bundle's manifest: {err}",
                    hint="the bundle is damaged: get a fresh copy (and check its .sha256)",
                ) from None
            finally:
                tmp.unlink(missing_ok=True)
            added += 1
        return added

    def model(self, key: str) -> _models.BundleModel:
        """A model by key, with its local path in the store.

        The path holds verified bytes once :meth:`ingest` or :func:`modelcas.bundle.open`
        has put them there.

        Raises:
            KeyError: no such key (the message lists the keys).
        """
        models = self.models()
        try:
            return models[key]
        except KeyError:
            raise KeyError(
                f"{self.path} has no model {key!r} (keys: {', '.join(models)})"
            ) from None

    def models(self) -> dict[str, _models.BundleModel]:
        """Every model by key, in config order."""
        if self._models is None:
            self._models = _models.build(self)
        return dict(self._models)

    def tracker(self) -> _models.BundleTracker | None:
        """The tracker configuration (parsed) and its local path, if the bundle has one."""
        return _models.tracker(self)

    def read_small(self, name: str) -> bytes:
        """A small member's bytes, checked against the manifest.

        Raises:
            BundleError: no such member.
            IntegrityError: it does not match the manifest.
        """
        index = self.archive.index_of(name)
        want = self.manifest.get(name)
        if index is None or want is None:
            raise BundleError(f"{self.path}: no member {name!r} in the manifest")
        return self.archive.read_member(index, SMALL, sha256=want.sha256)

    def extract(
        self,
        dest: str | os.PathLike[str],
        *,
        force: bool = False,
        deep: bool = False,
        sync: bool = False,
        progress: hashing.Progress | None = None,
    ) -> list[Path]:
        """Extract every member under ``dest``, verified; nothing is written outside it.

        Folders and files are created from a handle on ``dest`` without following any link
        below it (``dest`` itself may be a link); a link on the way is refused. Every member
        is checked (size, crc32, blake3; ``deep`` adds sha256) before it is renamed into place.
        All or nothing: when a member fails, what this call created is removed again (files it
        replaced under ``force`` keep their new, verified bytes). Extracting again is safe: a
        regular file already at a member's name with the member's bytes is kept as it is.

        Args:
            dest: the destination folder (created if missing).
            force: replace existing files.
            deep: check sha256 too.
            sync: flush every file and folder to disk before returning (``unzip`` does not).
            progress: called with the bytes done since its last call.

        Returns:
            The paths written (not those that already held the member's bytes).

        Raises:
            IntegrityError: a member does not match the manifest, or is not listed in it.
            UnsafeArchiveError: a symbolic link inside ``dest`` is on the way.
            ArchiveLimitError: a member decompresses past a limit.
            FileExistsError: something other than the member's bytes is at a member's name (a
                file with other bytes, a link, a folder) and ``force`` is not set.
        """
        root = Path(dest)
        names = self.archive.extract(
            root, self.core_manifest, overwrite=force, deep=deep, sync=sync, progress=progress
        )
        return [root.joinpath(*n.split("/")) for n in names]


def _sidecar_digest(path: Path, sidecar: Path) -> tuple[str | None, Problem | None]:
    """The digest the sidecar records for ``path``, or the problem with the sidecar."""
    try:
        data = untrusted.read_file(sidecar, "a sidecar (sha256sum format)", cap=_MAX_SIDECAR)
        entries, _ = sumfile.parse(data, str(sidecar))
    except (OSError, ModelcasError) as e:
        return None, Problem(None, "sidecar", f"{sidecar} cannot be read: {e}")
    mine = [e for e in entries if os.fsdecode(e.name) in (path.name, str(path))]
    if not mine:
        return None, Problem(None, "sidecar", f"{sidecar} lists no line for {path.name}")
    return mine[0].hexdigest, None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Digest]:
    """The manifest of a bundle (member name to digest), after validating the archive.

    Raises:
        UnsafeArchiveError, BundleError: as :meth:`Bundle.read`.
    """
    manifest = _core.Archive(path).manifest()
    return {e.name: Digest(e.sha256, e.size, e.blake3) for e in manifest.members}


def references(path: str | os.PathLike[str]) -> set[str]:
    """The sha256s a bundle references: what gc must keep while the bundle exists.

    Raises:
        UnsafeArchiveError, BundleError: the file is not a readable bundle.
    """
    return {e.sha256 for e in _core.Archive(path).manifest().members}


def _read_config(path: Path, archive: _core.Archive, manifest: _core.Manifest) -> dict[str, Any]:
    index = archive.index_of(CONFIG)
    want = next((e for e in manifest.members if e.name == CONFIG), None)
    if index is None or want is None:
        raise BundleError(f"{path} has no {CONFIG}", hint=_DAMAGED)
    data = archive.read_member(index, SMALL, sha256=want.sha256)
    config = yamldoc.load(data, f"{path}: {CONFIG}", BundleError, hint=_DAMAGED)
    if not isinstance(config, dict):
        raise BundleError(f"{path}: {CONFIG} is not a mapping", hint=_DAMAGED)
    if not isinstance(config.get("_bundle_metadata", {}), dict):
        raise BundleError(f"{path}: {CONFIG}: _bundle_metadata is not a mapping", hint=_DAMAGED)
    for key, entry in config.items():
        if key in _RESERVED or not isinstance(entry, dict) or "model_path" not in entry:
            continue
        for name, kind in _ENTRY_TYPES.items():
            value = entry.get(name)
            if value is not None and not isinstance(value, kind):
                raise BundleError(
                    f"{path}: {CONFIG}: {key}.{name} should be a {kind.__name__}, "
                    f"found {value!r:.80}",
                    hint=_DAMAGED,
                )
    return config


__all__ = [
    "COMPRESSIONS",
    "MANIFEST",
    "Bundle",
    "Created",
    "Member",
    "Problem",
    "Verification",
    "parse_compression",
    "read_manifest",
    "references",
    "write",
]
