"""Planning a bundle: read its config and check every input, before anything is written.

Planning is pure: it reads the config, the metadata files, the lockfile and the store's index,
and never touches the network or writes to the store. A model pinned in the lockfile whose
bytes are not in the store yet is planned as a fetch; ``archive.write`` makes it (and
``cas bundle --dry-run`` only reports it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas import __version__, _core, lfs, untrusted
from modelcas.bundle import names, paths, yamldoc
from modelcas.digest import Digest
from modelcas.errors import ModelcasError, UsageError

if TYPE_CHECKING:
    from modelcas.registry import Pin, Registry
    from modelcas.store import Store

MANIFEST = _core.MANIFEST_MEMBER
CONFIG = "config.yml"
TRACKER = "config_tracker.yml"
# The layout of the bundle (the members and config.yml); the manifest has its own version.
FORMAT = 1
_RESERVED = {"_bundle_metadata", "tracker"}
# Keys of a config entry that modelcas consumes; every other key is carried as given.
_CONSUMED = ("model_path", "model_metadata", "model_type", "original_name")
# Configs, metadata and trackers are small; a bound, so that a wrong path cannot eat memory.
MAX_CONFIG = 16 << 20
_HINT = (
    "a relative path is taken from the working directory, else from the config's folder; a "
    "model can also be NAME@VERSION from cas.lock or a sha256:<hex> address"
)


@dataclass
class PlannedModel:
    """One model of a bundle being created."""

    key: str
    source: Path | None  # the file whose bytes are packed; None until a pending fetch is made
    original_name: str
    model_type: str | None
    member: str  # models/...
    metadata_member: str  # metadata/...
    metadata: dict[str, Any]
    extras: dict[str, Any]  # inferer_args, model_args, classes, ... in config order
    pinned: Digest | None = None  # the digest its bytes must have (store objects, lock pins)
    fetch: Pin | None = None  # a lock pin not in the store yet: fetched by `write`
    found: paths.Base | str = "absolute"  # where model_path was found: cwd, config, store, lock


@dataclass
class BundlePlan:
    """What ``create_model_bundle`` will write."""

    config_path: Path
    output: Path
    models: list[PlannedModel] = field(default_factory=list)
    tracker: Path | None = None
    creation_date: str = ""
    lock: Path | None = None  # the lockfile that pending fetches come from
    warnings: list[str] = field(default_factory=list)

    def members(self) -> list[_core.Member]:
        """The writer's members, in archive order (the manifest follows them).

        Raises:
            UsageError: a model's bytes are still to be fetched.
        """
        out: list[_core.Member] = []
        for m in self.models:
            if m.source is None:
                raise UsageError(f"{m.key}: its bytes are not in the store yet (fetch first)")
            sha256 = m.pinned.sha256 if m.pinned else None
            out.append(_core.Member(m.member, m.source, sha256=sha256))
        for m in self.models:
            meta = json.dumps(m.metadata, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            out.append(_core.Member(m.metadata_member, meta.encode()))
        out.append(_core.Member(CONFIG, self.config_yaml().encode()))
        if self.tracker is not None:
            out.append(_core.Member(TRACKER, self.tracker))
        return out

    def config_yaml(self) -> str:
        """The bundle's internal config.yml."""
        import yaml  # noqa: PLC0415 (readers of bundles never write one)

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


def now() -> dt.datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` (UTC) for reproducible bundles.

    Raises:
        UsageError: ``SOURCE_DATE_EPOCH`` is not a Unix time.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time") from None
    return dt.datetime.now().astimezone()


def read_config(path: Path) -> dict[Any, Any]:
    """A bundle config: a non-empty mapping of model keys to settings.

    Raises:
        UsageError: missing, a directory, not UTF-8, not YAML, or not such a mapping.
    """
    try:
        data = untrusted.read_file(path, "a bundle config (YAML)", cap=MAX_CONFIG)
    except FileNotFoundError:
        raise UsageError(f"bundle config {path} does not exist") from None
    raw = yamldoc.load(data, str(path), UsageError)
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{path}: expected a mapping of model keys to model settings")
    return raw


def plan_bundle(
    models_info_path: str | os.PathLike[str],
    output_bundle_path: str | os.PathLike[str],
    *,
    auto_date: bool = True,
    store: Store | None = None,
    lock: str | os.PathLike[str] | None = None,
) -> BundlePlan:
    """Read a bundle config and check every input before anything is written.

    Args:
        models_info_path: the bundle config (YAML).
        output_bundle_path: where the bundle goes; dated unless ``auto_date`` is false.
        auto_date: ``my_bundle.zip`` becomes ``my_bundle_YYYYMMDD.zip``.
        store: for models given as ``sha256:`` addresses or lock names.
        lock: the lockfile for lock names (default: the nearest ``cas.lock``).

    Returns:
        The plan; ``plan.warnings`` lists paths found in both candidate folders.

    Raises:
        UsageError: the config is malformed or inputs are missing; every problem is listed.
    """
    cfg_path = Path(models_info_path)
    raw = read_config(cfg_path)
    when = now()
    out = Path(output_bundle_path)
    plan = BundlePlan(
        cfg_path,
        dated_name(out, when.date()) if auto_date else out,
        creation_date=when.strftime("%Y-%m-%d %H:%M:%S"),
    )
    planner = _Planner(plan, cfg_path.resolve().parent, store, lock)
    for key, spec in raw.items():
        planner.entry(key, spec)
    problems = planner.problems
    if not plan.models and not problems:
        problems.append("no models to bundle")
    members = [m.member for m in plan.models]
    for dup in sorted({n for n in members if members.count(n) > 1}):
        problems.append(f"two models would be stored as {dup}: rename one of their keys")
    hint = lfs.HINT if planner.pointers else _HINT
    if len(problems) == 1:
        raise UsageError(f"{cfg_path}: {problems[0]}; nothing was written", hint=hint)
    if problems:
        # The count, then one problem per line (the documented exception to one line).
        raise UsageError(
            f"{cfg_path}: {len(problems)} problems, nothing was written",
            hint=hint,
            details=problems,
        )
    return plan


class _Planner:
    """Checks one config's entries into a plan, collecting every problem."""

    def __init__(
        self,
        plan: BundlePlan,
        base: Path,
        store: Store | None,
        lock: str | os.PathLike[str] | None,
    ) -> None:
        self.plan = plan
        self.base = base
        self._store = store
        self._lock = Path(lock) if lock else None
        self._registry: Registry | None = None
        self.problems: list[str] = []
        self.pointers = False  # a git-lfs pointer was named as a model: the hint says so

    @property
    def store(self) -> Store:
        if self._store is None:
            from modelcas.store import Store  # noqa: PLC0415

            self._store = Store()
        return self._store

    def local(self, value: object, where: str) -> paths.Resolved | None:
        """A file named by the config, found as HiTMicTools finds it."""
        if not isinstance(value, str) or not value:
            self.problems.append(f"{where}: expected a path, found {value!r}")
            return None
        found = paths.resolve(value, self.base)
        warning = found.warning(where)
        if warning:
            self.plan.warnings.append(warning)
        if not found.path.is_file():
            looked = " and ".join(str(t) for t in found.tried or (found.path,))
            self.problems.append(f"{where}: {value} is not a file (looked for {looked})")
            return None
        return found

    def entry(self, key: object, spec: object) -> None:
        if key == "tracker":
            self.tracker(spec)
            return
        if key in _RESERVED:
            return
        if not isinstance(key, str) or not names.SAFE_PART.fullmatch(key):
            self.problems.append(f"{key!r}: model keys must be simple names (letters, digits, _.-)")
            return
        if not isinstance(spec, dict) or "model_path" not in spec:
            self.problems.append(f"{key}: expected a mapping with model_path")
            return
        model = self.source(key, spec)
        metadata = self.metadata(key, spec.get("model_metadata"))
        if model is None or metadata is None:
            return
        try:
            mtype = names.model_type(key, spec, metadata)
        except UsageError as e:
            self.problems.append(e.message)
            return
        model.model_type = mtype
        stem = names.stem(key, mtype)
        ext = Path(model.original_name).suffix or (model.source or Path()).suffix
        longest = max(f"{stem}{ext}", f"{stem}.json", key=lambda n: len(os.fsencode(n)))
        if len(os.fsencode(longest)) > names.NAME_MAX:
            # Written, it could never be extracted: no file system takes such a name.
            self.problems.append(
                f"{key}: member name {longest[:40]}... is {len(os.fsencode(longest))} bytes, "
                f"more than a file name can be ({names.NAME_MAX}); shorten the model type or key"
            )
            return
        model.member = f"models/{stem}{ext}"
        model.metadata_member = f"metadata/{stem}.json"
        model.metadata = {**metadata, "original_name": model.original_name}
        if mtype:
            model.metadata.setdefault("model_type", mtype)
        model.extras = {k: v for k, v in spec.items() if k not in _CONSUMED}
        self.plan.models.append(model)

    def source(self, key: str, spec: dict[Any, Any]) -> PlannedModel | None:
        """Where a model's bytes come from: a file, a store object or a lock pin."""
        from modelcas.remotes.reference import parse  # noqa: PLC0415 (only for references)

        ref = spec["model_path"]
        original = str(spec.get("original_name") or "")
        model = PlannedModel(key, None, original, None, "", "", {}, {})
        if not (isinstance(ref, str) and self.is_ref(ref)):
            found = self.local(ref, f"{key}.model_path")
            if found is None:
                return None
            model.source, model.found = found.path, found.base
            model.original_name = original or Path(str(ref)).name
            if lfs.file_is_pointer(found.path):
                self.pointers = True
                self.problems.append(f"{key}.model_path: {lfs.pointer_error(ref).message}")
                return None
            return model
        try:
            parsed = parse(ref)
            if parsed.kind == "object":
                sha = self.store.resolve(ref)
                info = self.store.info(sha)
                model.source, model.pinned, model.found = info.path, info.digest, "store"
                model.original_name = original or sha[:12]
            else:
                # A bundle config's names resolve through the lockfile nearest the config.
                registry = self.registry()
                pin = registry.pin(parsed.name, parsed.version)
                model.pinned, model.found = pin.digest, "lock"
                model.original_name = original or pin.file
                if self.store.has(pin.digest.sha256):
                    model.source = self.store.object_path(pin.digest.sha256)
                else:
                    model.fetch = pin
        except ModelcasError as e:
            self.problems.append(f"{key}.model_path: {ref}: {e.message}")
            return None
        if model.source is not None and lfs.file_is_pointer(model.source):
            # Stored with --allow-lfs-pointer: still not weights to bundle.
            self.pointers = True
            what = f"{ref} (stored object {model.source.name[:12]})"
            self.problems.append(f"{key}.model_path: {lfs.pointer_error(what).message}")
            return None
        return model

    def registry(self) -> Registry:
        # The lockfile and registry (and packaging) cost a short command ~30 ms: only on use.
        from modelcas import lockfile  # noqa: PLC0415
        from modelcas.registry import open_lock  # noqa: PLC0415

        if self._registry is None:
            self._lock = lockfile.locate(self._lock or lockfile.find(self.base))
            self.plan.lock = self._lock
            self._registry = open_lock(self._lock, store=self.store)
        return self._registry

    def is_ref(self, value: str) -> bool:
        """Whether a model_path names stored content (address or lock name) rather than a file."""
        from modelcas import lockfile  # noqa: PLC0415
        from modelcas.lockfile import Lockfile  # noqa: PLC0415
        from modelcas.remotes.reference import parse  # noqa: PLC0415 (the one parser)

        if value.startswith("sha256:"):
            return True  # a malformed address is a problem to report, not a file name
        try:
            parsed = parse(value)
        except UsageError:
            return False
        if parsed.kind != "pin" or paths.resolve(value, self.base).path.exists():
            return False
        name, version = parsed.name, parsed.version
        if version is not None:
            return True
        found = self._lock or lockfile.find(self.base)
        if found is None or not found.is_file():
            return False
        try:
            return name in Lockfile.load(found).models
        except ModelcasError:
            return False

    def metadata(self, key: str, value: object) -> dict[str, Any] | None:
        """The metadata JSON object (empty without one); ``None`` after a problem."""
        if value is None:
            return {}
        found = self.local(value, f"{key}.model_metadata")
        if found is None:
            return None
        path = found.path
        try:
            loaded = json.loads(untrusted.read_file(path, "a JSON file", cap=MAX_CONFIG))
        except ModelcasError as e:
            self.problems.append(f"{key}.model_metadata: {e.message}")
            return None
        except (ValueError, RecursionError) as e:
            self.problems.append(f"{key}.model_metadata: {path} is not JSON: {e}")
            return None
        if not isinstance(loaded, dict):
            self.problems.append(f"{key}.model_metadata: {path} is not a JSON object")
            return None
        return loaded

    def tracker(self, spec: object) -> None:
        if not isinstance(spec, dict) or "config_path" not in spec:
            self.problems.append("tracker: expected a mapping with config_path")
            return
        found = self.local(spec["config_path"], "tracker.config_path")
        if found is None:
            return
        path = found.path
        try:
            data = untrusted.read_file(path, "a YAML file", cap=MAX_CONFIG)
            yamldoc.load(data, str(path), UsageError)
        except UsageError as e:
            self.problems.append(f"tracker.config_path: {e.message}")
            return
        self.plan.tracker = path
