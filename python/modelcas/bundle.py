"""Model bundles: the several models of an analysis pipeline in one self-verifying zip.

Layout (``docs/bundle.md``), compatible with HiTMicTools-style model collections::

    models/{ModelType}-{key}{ext}       the weights, renamed to standard names
    metadata/{ModelType}-{key}.json     the model's metadata, with original_name and model_type
    config.yml                          keys -> member paths, inferer_args, model_args, ...,
                                        and _bundle_metadata (creation_date, source_config)
    config_tracker.yml                  optional tracker configuration
    modelcas-manifest.json              size, crc32, sha256 and blake3 of every other member

The Rust writer streams every member once, computing its digests while writing, and appends the
manifest. A ``.sha256`` sidecar in ``sha256sum`` format is written next to the bundle. Opening a
bundle validates the archive (hostile archives are refused), verifies members against the
manifest and ingests them into the store once; later opens of the same file do no extraction
and no hashing beyond a stat.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelcas import __version__, _core, hashing, lockfile, sumfile
from modelcas.digest import Digest, Hashes, is_hex64
from modelcas.errors import BundleError, IntegrityError, ModelcasError, UsageError
from modelcas.lockfile import Lockfile, split_ref
from modelcas.registry import Registry, open_lock
from modelcas.store import Store, atomic_write

MANIFEST = "modelcas-manifest.json"
CONFIG = "config.yml"
TRACKER = "config_tracker.yml"
FORMAT = 1
COMPRESSIONS = ("stored", "deflate", "zstd")
_SMALL = 64 << 20  # cap for members read into memory (config, metadata, manifest)
_MAX_CONFIG_VALUES = 1_000_000  # cap on config.yml's values with its YAML aliases expanded
_RESERVED = {"_bundle_metadata", "tracker"}
_TYPE_KEYS = ("model_type", "model_name", "architecture")
# Types of the config.yml entry fields that readers use, checked when a bundle is read.
_ENTRY_TYPES: dict[str, type] = {
    "model_path": str,
    "model_metadata": str,
    "model_type": str,
    "inferer_args": dict,
    "model_args": dict,
}
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")


# -- creating ---------------------------------------------------------------------------------


@dataclass
class PlannedModel:
    """One model of a bundle being created."""

    key: str
    source: Path  # the file whose bytes are packed
    original_name: str
    model_type: str | None
    member: str  # models/...
    metadata_member: str  # metadata/...
    metadata: dict[str, Any]
    extras: dict[str, Any]  # inferer_args, model_args, classes, ... in config order
    pinned: Digest | None = None  # known digest for files taken from the store


@dataclass
class BundlePlan:
    """What ``create_model_bundle`` will write."""

    config_path: Path
    output: Path
    models: list[PlannedModel] = field(default_factory=list)
    tracker: Path | None = None
    creation_date: str = ""

    def members(self) -> list[tuple[str, bytes | str, str | None, int | None]]:
        """The writer's member list, in archive order."""
        out: list[tuple[str, bytes | str, str | None, int | None]] = []
        for m in self.models:
            out.append((m.member, os.fspath(m.source), None, None))
        for m in self.models:
            meta = json.dumps(m.metadata, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            out.append((m.metadata_member, meta.encode(), None, None))
        out.append((CONFIG, self.config_yaml().encode(), None, None))
        if self.tracker is not None:
            out.append((TRACKER, os.fspath(self.tracker), None, None))
        return out

    def config_yaml(self) -> str:
        """The bundle's internal config.yml."""
        doc: dict[str, Any] = {
            "_bundle_metadata": {
                "creation_date": self.creation_date,
                "source_config": self.config_path.name,
                "created_by": f"modelcas {__version__}",
                "format": FORMAT,
                "manifest": MANIFEST,
            }
        }
        for m in self.models:
            entry: dict[str, Any] = {
                "model_path": m.member,
                "model_metadata": m.metadata_member,
                "model_type": m.model_type,
                "original_name": m.original_name,
            }
            entry.update(m.extras)
            doc[m.key] = {k: v for k, v in entry.items() if v is not None}
        if self.tracker is not None:
            doc["tracker"] = {"config_path": TRACKER}
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dated_name(path: Path, when: dt.date) -> Path:
    """``my_bundle.zip`` -> ``my_bundle_20251218.zip`` (the seed's auto-dating)."""
    suffix = path.suffix or ".zip"
    return path.with_name(f"{path.stem}_{when:%Y%m%d}{suffix}")


def _now() -> dt.datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` (UTC) for reproducible bundles."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time") from None
    return dt.datetime.now().astimezone()


def _model_type(key: str, spec: Mapping[str, Any], metadata: Mapping[str, Any]) -> str | None:
    for source in (spec, metadata):
        for k in _TYPE_KEYS:
            value = source.get(k)
            if isinstance(value, str) and value:
                if not _SAFE_PART.fullmatch(value):
                    raise UsageError(f"{key}: model type {value!r} cannot be part of a file name")
                return value
    return None


def _is_ref(value: str, base: Path, lock: str | os.PathLike[str] | None) -> bool:
    """Whether a model_path names stored content (address or lock name) rather than a file."""
    if value.startswith("sha256:"):
        return True
    if (base / value).exists() or Path(value).is_absolute():
        return False
    name, version = split_ref(value)
    if version is not None:
        return True
    found = Path(lock) if lock else lockfile.find(base)
    if found is None or not found.is_file():
        return False
    try:
        return name in Lockfile.load(found).models
    except ModelcasError:
        return False


def plan_bundle(
    models_info_path: str | os.PathLike[str],
    output_bundle_path: str | os.PathLike[str],
    *,
    auto_date: bool = True,
    store: Store | None = None,
    lock: str | os.PathLike[str] | None = None,
) -> BundlePlan:
    """Read a bundle config and check every input before anything is written.

    Raises:
        UsageError: the config is malformed or inputs are missing; every problem is listed.
    """
    cfg_path = Path(models_info_path)
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"bundle config {cfg_path} does not exist") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{cfg_path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{cfg_path}: expected a mapping of model keys to model settings")
    base = cfg_path.resolve().parent
    now = _now()
    out = Path(output_bundle_path)
    plan = BundlePlan(
        cfg_path,
        dated_name(out, now.date()) if auto_date else out,
        creation_date=now.strftime("%Y-%m-%d %H:%M:%S"),
    )
    problems: list[str] = []
    registry: Registry | None = None

    def local(value: object, where: str) -> Path | None:
        if not isinstance(value, str) or not value:
            problems.append(f"{where}: expected a path, found {value!r}")
            return None
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            problems.append(f"{where}: {p} does not exist")
            return None
        return p

    for key, spec in raw.items():
        if key == "tracker":
            if not isinstance(spec, dict) or "config_path" not in spec:
                problems.append("tracker: expected a mapping with config_path")
            else:
                plan.tracker = local(spec["config_path"], "tracker.config_path")
            continue
        if key in _RESERVED:
            continue
        if not isinstance(key, str) or not _SAFE_PART.fullmatch(key):
            problems.append(f"{key!r}: model keys must be simple names (letters, digits, _.-)")
            continue
        if not isinstance(spec, dict) or "model_path" not in spec:
            problems.append(f"{key}: expected a mapping with model_path")
            continue
        ref = spec["model_path"]
        pinned: Digest | None = None
        source: Path | None
        original = str(spec.get("original_name") or "")
        if isinstance(ref, str) and _is_ref(ref, base, lock):
            try:
                if ref.startswith("sha256:"):
                    s = store or Store()
                    info = s.info(s.resolve(ref))
                    source, pinned = info.path, info.digest
                    original = original or info.digest.sha256[:12]
                else:
                    # A bundle config's names resolve through the lockfile nearest the config.
                    registry = registry or open_lock(lock or lockfile.find(base), store=store)
                    pin = registry.pin(*split_ref(ref))
                    source, pinned = registry.fetch(pin), pin.digest
                    original = original or pin.file
            except Exception as e:
                problems.append(f"{key}.model_path: {ref}: {e}")
                continue
        else:
            source = local(ref, f"{key}.model_path")
            original = original or Path(str(ref)).name
        metadata: dict[str, Any] = {}
        if spec.get("model_metadata") is not None:
            meta_path = local(spec["model_metadata"], f"{key}.model_metadata")
            if meta_path is not None:
                try:
                    loaded = json.loads(meta_path.read_text(encoding="utf-8"))
                except ValueError as e:
                    problems.append(f"{key}.model_metadata: {meta_path} is not JSON: {e}")
                    loaded = {}
                if not isinstance(loaded, dict):
                    problems.append(f"{key}.model_metadata: {meta_path} is not a JSON object")
                    loaded = {}
                metadata = loaded
        if source is None:
            continue
        try:
            mtype = _model_type(key, spec, metadata)
        except UsageError as e:
            problems.append(str(e))
            continue
        stem = spec.get("bundle_name") or (f"{mtype}-{key}" if mtype else key)
        if not isinstance(stem, str) or not _SAFE_PART.fullmatch(stem):
            problems.append(f"{key}.bundle_name: {stem!r} is not a simple file name")
            continue
        ext = Path(original).suffix or source.suffix
        metadata = {**metadata, "original_name": original}
        if mtype:
            metadata.setdefault("model_type", mtype)
        extras = {
            k: v
            for k, v in spec.items()
            if k
            not in ("model_path", "model_metadata", "model_type", "bundle_name", "original_name")
        }
        plan.models.append(
            PlannedModel(
                key,
                source,
                original,
                mtype,
                f"models/{stem}{ext}",
                f"metadata/{stem}.json",
                metadata,
                extras,
                pinned,
            )
        )
    if not plan.models and not problems:
        problems.append("no models to bundle")
    names = [m.member for m in plan.models]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"two models would be stored as {dup}: set bundle_name for one of them")
    if problems:
        raise UsageError(
            f"{cfg_path}: {len(problems)} problem(s); nothing was written:\n  - "
            + "\n  - ".join(problems),
            hint="paths are relative to the config file; models can also be NAME@VERSION "
            "from cas.lock or sha256:<hex> addresses",
        )
    return plan


@dataclass(frozen=True, slots=True)
class Created:
    """A bundle that was written: where, its sidecar, and its own digest."""

    path: Path
    sidecar: Path
    sha256: str
    members: list[tuple[str, Digest]]


def parse_compression(text: str) -> tuple[str, int | None]:
    """``stored``, ``deflate[:LEVEL]`` or ``zstd[:LEVEL]``.

    Raises:
        UsageError: anything else.
    """
    name, _, level = text.partition(":")
    if name not in COMPRESSIONS or (level and not level.lstrip("-").isdigit()):
        raise UsageError(
            f"unknown compression {text!r}",
            hint="use stored (default), deflate[:1-9] or zstd[:1-22]",
        )
    if name == "stored" and level:
        raise UsageError("stored takes no level")
    return name, int(level) if level else None


def write(
    plan: BundlePlan,
    *,
    compression: str = "stored",
    force: bool = False,
    progress: hashing.Progress | None = None,
) -> Created:
    """Write a planned bundle and its ``.sha256`` sidecar.

    Raises:
        FileExistsError: the output exists and ``force`` is not set.
        IntegrityError: a store object did not have its pinned bytes; nothing is left behind.
    """
    method, level = parse_compression(compression)
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    reports, whole = _core.write_bundle(
        plan.output,
        plan.members(),
        method=method,
        level=level,
        mtime=int(epoch) if epoch else None,
        overwrite=force,
        manifest=MANIFEST,
        progress=progress,
    )
    digests = {r[0]: Digest(r[6], r[3], r[7]) for r in reports}
    for m in plan.models:
        if m.pinned is not None and digests[m.member].sha256 != m.pinned.sha256:
            plan.output.unlink(missing_ok=True)
            raise IntegrityError(
                f"{m.key}: {m.source} should be sha256:{m.pinned.sha256} but "
                f"sha256:{digests[m.member].sha256} was read; the bundle was not kept",
                hint="run `cas verify --repair`, then `cas sync`",
            )
    sidecar = plan.output.with_name(plan.output.name + ".sha256")
    atomic_write(sidecar, sumfile.format_line(whole, os.fsencode(plan.output.name)))
    return Created(plan.output, sidecar, whole, [(r[0], digests[r[0]]) for r in reports])


def create_model_bundle(
    models_info_path: str | os.PathLike[str],
    output_bundle_path: str | os.PathLike[str],
    auto_date: bool = True,
    *,
    compression: str = "stored",
    force: bool = False,
    store: Store | None = None,
    lock: str | os.PathLike[str] | None = None,
) -> Path:
    """Create a model bundle, as the seed's ``create_model_bundle`` does, and return its path.

    Args:
        models_info_path: the bundle config (YAML); relative paths are relative to it.
        output_bundle_path: where to write; a date is inserted unless ``auto_date`` is false.
        auto_date: ``my_bundle.zip`` becomes ``my_bundle_YYYYMMDD.zip``.
        compression: ``stored`` (default), ``deflate[:LEVEL]`` or ``zstd[:LEVEL]``.
        force: replace an existing bundle.
        store: for models given as ``sha256:`` addresses or lock names.
        lock: the lockfile for lock names (default: the nearest ``cas.lock``).

    Returns:
        The path of the bundle written.

    Raises:
        UsageError: the config or its inputs are wrong (all problems are listed).
        FileExistsError: the output exists and ``force`` is not set.
    """
    plan = plan_bundle(
        models_info_path, output_bundle_path, auto_date=auto_date, store=store, lock=lock
    )
    return write(plan, compression=compression, force=force).path


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleModel:
    """One model of an opened bundle: a verified local path plus its settings."""

    key: str
    path: Path  # the verified object in the store; never write to it
    digest: Digest
    member_name: str
    model_type: str | None
    metadata: dict[str, Any]
    inferer_args: dict[str, Any]
    model_args: dict[str, Any]
    config: dict[str, Any]  # the whole entry from the bundle's config.yml


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a bundle, as listed by its central directory and its manifest."""

    name: str
    method: str
    size: int
    compressed_size: int
    digest: Digest | None  # from the manifest


class Bundle:
    """A bundle opened for reading. Use :func:`open`."""

    def __init__(
        self,
        path: Path,
        reader: Any,
        manifest: dict[str, Digest],
        config: dict[str, Any],
        store: Store,
        *,
        midstates: Midstates | None = None,
    ) -> None:
        self.path = path
        self._reader = reader
        self.manifest = manifest
        self.midstates = midstates  # see docs/bundle.md; None in older bundles
        self.config = config
        self.store = store
        self._models: dict[str, BundleModel] | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, store: Store | None = None) -> Bundle:
        """Open and validate a bundle without ingesting anything.

        Raises:
            UnsafeArchiveError, ArchiveLimitError: a hostile or broken archive; the message
                names the member and the rule or limit.
            BundleError: not a modelcas bundle (no manifest or config).
        """
        p = Path(path)
        reader = _core.ZipReader(p)
        names = {e[0]: i for i, e in enumerate(reader.entries())}
        manifest, midstates = _read_manifest(p, reader, names)
        config = _read_config(p, reader, names)
        return cls(p, reader, manifest, config, store or Store(), midstates=midstates)

    def members(self) -> list[Member]:
        """Every member, in archive order."""
        return [
            Member(e[0], e[1], e[2], e[3], self.manifest.get(e[0]))
            for e in self._reader.entries()
            if not e[7]
        ]

    def keys(self) -> list[str]:
        """The model keys, in config order."""
        return [
            k
            for k, v in self.config.items()
            if k not in _RESERVED and isinstance(v, dict) and "model_path" in v
        ]

    def verify(self, *, deep: bool = False, progress: hashing.Progress | None = None) -> list[str]:
        """Check every member against the manifest, and the file against its sidecar.

        Members are checked by size, crc32 and blake3 (routine verification); ``deep`` also
        recomputes each member's sha256.

        Returns:
            One message per problem (empty when the bundle is intact).
        """
        sidecar = self.path.with_name(self.path.name + ".sha256")
        with ThreadPoolExecutor(1, thread_name_prefix="modelcas-sidecar") as pool:
            # The sidecar's sha256 of the whole file runs beside the member checks.
            side = (
                pool.submit(_check_sidecar, self.path, sidecar, self.midstates)
                if sidecar.is_file()
                else None
            )
            problems = self._check_members(deep, progress)
            if side is not None:
                problems.extend(side.result())
        return problems

    def _check_members(self, deep: bool, progress: hashing.Progress | None) -> list[str]:
        problems = []
        listed = set()
        for i, e in enumerate(self._reader.entries()):
            name = e[0]
            if e[7] or name == MANIFEST:
                continue
            listed.add(name)
            want = self.manifest.get(name)
            if want is None:
                problems.append(f"member {name!r} is not in the manifest")
                continue
            try:
                got = Hashes.from_core(self._reader.hash_member(i, sha256=deep, progress=progress))
            except IntegrityError as e:
                problems.append(f"member {name!r}: {e}")
                continue
            for algo in ("sha256", "blake3"):
                expected, actual = getattr(want, algo), getattr(got, algo)
                if expected is not None and actual is not None and expected != actual:
                    problems.append(f"member {name!r}: {algo} expected {expected}, found {actual}")
            if got.size != want.size:
                problems.append(f"member {name!r}: size expected {want.size}, found {got.size}")
        for name in sorted(set(self.manifest) - listed):
            problems.append(f"member {name!r} is in the manifest but not in the archive")
        return problems

    def ingest(self, *, progress: hashing.Progress | None = None) -> int:
        """Put every member into the store, verified against the manifest.

        Members already in the store are not read at all. Returns how many were new.

        Raises:
            IntegrityError: a member is not what the manifest says; it is not stored.
        """
        added = 0
        for i, e in enumerate(self._reader.entries()):
            name = e[0]
            want = self.manifest.get(name)
            if e[7] or want is None or self.store.has(want.sha256):
                continue
            tmp = self.store.temp_path()
            try:
                raw = self._reader.extract_member(
                    i, tmp, sha256=want.sha256, blake3=want.blake3, progress=progress
                )
                got = Hashes.from_core(raw).digest()
                self.store.adopt(tmp, got, what=f"{self.path} member {name}")
            except IntegrityError as err:
                raise IntegrityError(
                    f"{self.path}: member {name!r} does not match the bundle's manifest: {err}",
                    hint="the bundle is damaged: get a fresh copy (and check its .sha256)",
                ) from None
            finally:
                tmp.unlink(missing_ok=True)
            added += 1
        return added

    def model(self, key: str) -> BundleModel:
        """A model by key, with a verified local path (after :func:`open`).

        Raises:
            KeyError: no such key (the message lists the keys).
        """
        if self._models is None:
            self._models = self._build_models()
        try:
            return self._models[key]
        except KeyError:
            raise KeyError(
                f"{self.path} has no model {key!r} (keys: {', '.join(self._models)})"
            ) from None

    def models(self) -> dict[str, BundleModel]:
        """Every model by key."""
        if self._models is None:
            self._models = self._build_models()
        return dict(self._models)

    def _build_models(self) -> dict[str, BundleModel]:
        out = {}
        for key in self.keys():
            entry = self.config[key]
            member = entry["model_path"]
            want = self.manifest.get(member)
            if want is None:
                raise BundleError(f"{self.path}: {key}.model_path {member!r} is not a member")
            metadata: dict[str, Any] = {}
            meta_member = entry.get("model_metadata")
            if isinstance(meta_member, str):
                try:
                    metadata = json.loads(self._small(meta_member))
                except (ValueError, RecursionError) as e:
                    raise BundleError(
                        f"{self.path}: {key}.model_metadata {meta_member!r} is not valid JSON: {e}"
                    ) from None
                if not isinstance(metadata, dict):
                    raise BundleError(
                        f"{self.path}: {key}.model_metadata {meta_member!r} is not a JSON object"
                    )
            path = (
                self.store.path(want.sha256, verify=False)
                if self.store.has(want.sha256)
                else self.store.object_path(want.sha256)
            )
            out[key] = BundleModel(
                key,
                path,
                want,
                member,
                entry.get("model_type"),
                metadata,
                dict(entry.get("inferer_args") or {}),
                dict(entry.get("model_args") or {}),
                dict(entry),
            )
        return out

    def _small(self, name: str) -> bytes:
        index = self._reader.index_of(name)
        if index is None:
            raise BundleError(f"{self.path}: no member {name!r}")
        data, raw = self._reader.read_member(index, _SMALL)
        want = self.manifest.get(name)
        if want is not None and Hashes.from_core(raw).sha256 != want.sha256:
            raise IntegrityError(f"{self.path}: member {name!r} does not match the manifest")
        return bytes(data)

    def extract(self, dest: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
        """Extract every member under ``dest``, verified; nothing is written outside it.

        All or nothing: when a member fails, the files and directories this call created are
        removed again (files it replaced under ``force`` keep their new, verified bytes).

        Raises:
            IntegrityError: a member does not match the manifest.
            ArchiveLimitError: a member decompresses past a limit.
            FileExistsError: a file exists and ``force`` is not set.
        """
        root = Path(dest)
        written = []
        created: list[Path] = []  # files and directories that did not exist before
        try:
            for i, e in enumerate(self._reader.entries()):
                name = e[0]
                target = root.joinpath(*name.rstrip("/").split("/"))
                if e[7]:
                    _make_dirs(target, created)
                    continue
                _make_dirs(target.parent, created)
                new = not os.path.lexists(target)
                want = self.manifest.get(name)
                self._reader.extract_member(
                    i,
                    target,
                    sha256=want.sha256 if want else None,
                    blake3=want.blake3 if want else None,
                    overwrite=force,
                )
                if new:
                    created.append(target)
                written.append(target)
        except BaseException:
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    if p.is_dir() and not p.is_symlink():
                        p.rmdir()  # only if empty
                    else:
                        p.unlink()
            raise
        return written


def _make_dirs(path: Path, created: list[Path]) -> None:
    """``mkdir -p``, recording each directory it creates (parents first)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        created.append(d)
    path.mkdir(parents=True, exist_ok=True)  # raises, as before, when a file is in the way


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Digest]:
    """The manifest of a bundle (member name to digest), after validating the archive."""
    reader = _core.ZipReader(path)
    names = {e[0]: i for i, e in enumerate(reader.entries())}
    return _read_manifest(Path(path), reader, names)[0]


# The archive's sha256 state every `step` bytes (the manifest's "sha256_midstates"): lets the
# sidecar be checked in parallel segments. Bundles from before it have none.
Midstates = tuple[int, tuple[str, ...]]


def _read_manifest(
    path: Path, reader: Any, names: dict[str, int]
) -> tuple[dict[str, Digest], Midstates | None]:
    if MANIFEST not in names:
        raise BundleError(
            f"{path} has no {MANIFEST}: it was not made by modelcas",
            hint="re-create it with `cas bundle -i CONFIG -o OUT`",
        )
    data, _ = reader.read_member(names[MANIFEST], _SMALL)
    try:
        raw = json.loads(data)
        members = raw["members"]
        if raw.get("version") != 1 or not isinstance(members, dict):
            raise ValueError("unknown manifest version")
        out = {}
        for name, d in members.items():
            if not (is_hex64(d["sha256"]) and is_hex64(d["blake3"])):
                raise ValueError(f"bad digest for {name!r}")
            out[str(name)] = Digest(d["sha256"], int(d["size"]), d["blake3"])
        midstates = _midstates(raw.get("sha256_midstates"))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise BundleError(f"{path}: {MANIFEST} is malformed: {e}") from None
    return out, midstates


def _midstates(raw: Any) -> Midstates | None:
    if raw is None:
        return None
    step, states = raw["step"], raw["states"]
    if not (isinstance(step, int) and step > 0 and step % 64 == 0):
        raise ValueError(f"sha256_midstates: step {step!r} is not a positive multiple of 64")
    if not (isinstance(states, list) and all(isinstance(h, str) and is_hex64(h) for h in states)):
        raise ValueError("sha256_midstates: states are not 64-digit hex strings")
    return step, tuple(states)


def _read_config(path: Path, reader: Any, names: dict[str, int]) -> dict[str, Any]:
    if CONFIG not in names:
        raise BundleError(f"{path} has no {CONFIG}")
    data, _ = reader.read_member(names[CONFIG], _SMALL)
    try:
        config = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError) as e:
        raise BundleError(f"{path}: {CONFIG} is not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: {CONFIG} is not a mapping")
    if _expanded_size(config, _MAX_CONFIG_VALUES) > _MAX_CONFIG_VALUES:
        raise BundleError(
            f"{path}: {CONFIG} expands to more than {_MAX_CONFIG_VALUES} values through YAML "
            "aliases (an alias bomb, or a self-referencing value)",
            hint="the bundle is damaged or was not made by modelcas",
        )
    if not isinstance(config.get("_bundle_metadata", {}), dict):
        raise BundleError(f"{path}: {CONFIG}: _bundle_metadata is not a mapping")
    for key, entry in config.items():
        if key in _RESERVED or not isinstance(entry, dict) or "model_path" not in entry:
            continue
        for name, kind in _ENTRY_TYPES.items():
            value = entry.get(name)
            if value is not None and not isinstance(value, kind):
                raise BundleError(
                    f"{path}: {CONFIG}: {key}.{name} should be a {kind.__name__}, "
                    f"found {value!r:.80}",
                    hint="the bundle is damaged or was not made by modelcas",
                )
    return config


def _expanded_size(value: object, limit: int) -> int:
    """How many values ``value`` holds, YAML aliases expanded (counting stops past ``limit``)."""
    stack, seen = [value], 0
    while stack and seen <= limit:
        v = stack.pop()
        seen += 1
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return seen


def _check_sidecar(path: Path, sidecar: Path, midstates: Midstates | None) -> list[str]:
    entries, _ = sumfile.parse(sidecar.read_bytes(), str(sidecar))
    mine = [e for e in entries if os.fsdecode(e.name) in (path.name, str(path))]
    if not mine:
        return [f"{sidecar} lists no line for {path.name}"]
    # Parallel segments when the manifest has midstates; if they do not chain (the file
    # changed), one pass from start to end finds the digest to report.
    actual = hashing.sha256_chained(path, *midstates) if midstates else None
    if actual is None:
        actual = hashing.hash_file(path, ("sha256",)).sha256
    if mine[0].hexdigest != actual:
        return [f"{path.name}: sha256 {actual} differs from {sidecar} ({mine[0].hexdigest})"]
    return []


# -- opening in a pipeline ------------------------------------------------------------------


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _seen_path(store: Store, path: Path) -> Path:
    key = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:32]
    return store.root / "bundles" / f"{key}.json"


def open(
    path: str | os.PathLike[str],
    *,
    store: Store | None = None,
    progress: hashing.Progress | None = None,
) -> Bundle:
    """Open a bundle for a pipeline: verify it, ingest it once, resolve keys to local paths.

    The first open checks the archive, verifies every member against the manifest while
    copying it into the store (members already there are skipped), and records the file's
    identity. Later opens of the unchanged file (same inode, size, mtime and ctime) do no
    extraction and no hashing. The bundle becomes a gc root.

    Raises:
        UnsafeArchiveError, ArchiveLimitError, BundleError, IntegrityError: see ``Bundle``.
    """
    s = store or Store()
    p = Path(path)
    b = Bundle.read(p, store=s)
    seen = _seen_path(s, p)
    identity = _identity(p)
    try:
        known = json.loads(seen.read_text())
    except (OSError, ValueError):
        known = None
    complete = all(s.has(d.sha256) for d in b.manifest.values())
    if not (known == identity and complete):
        b.ingest(progress=progress)
        seen.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(seen, json.dumps(identity, sort_keys=True).encode(), s.tmp_dir)
    s.register_root(p, "bundle")
    return b


def resolve_pipeline_config(
    config: str | os.PathLike[str] | Mapping[str, Any], *, store: Store | None = None
) -> dict[str, BundleModel]:
    """Resolve a pipeline config's ``models: model_collection: x.zip`` to verified models.

    Args:
        config: the pipeline config (a path, or an already-parsed mapping whose relative bundle
            path is taken from the current directory).
        store: the store; default the user's.

    Returns:
        Model key to :class:`BundleModel` (local path, metadata, inferer_args, model_args).
    """
    base = Path.cwd()
    if not isinstance(config, Mapping):
        base = Path(config).resolve().parent
        config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    try:
        collection = config["models"]["model_collection"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise UsageError("the pipeline config has no models: model_collection: entry") from None
    bundle_path = Path(collection)
    bundle_path = bundle_path if bundle_path.is_absolute() else base / bundle_path
    return open(bundle_path, store=store).models()


def references(path: Path) -> set[str]:
    """The sha256s a bundle's manifest lists: how gc reads a bundle root."""
    return {d.sha256 for d in read_manifest(path).values()}
