"""Bundles in a pipeline: open one once (verify, ingest), and resolve a pipeline config.

A pipeline config's ``models: model_collection: x.zip`` resolves to verified models and the
tracker's configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelcas import hashing, untrusted
from modelcas.bundle import paths, yamldoc
from modelcas.bundle.archive import Bundle
from modelcas.bundle.models import BundleModel, BundleTracker
from modelcas.bundle.plan import MAX_CONFIG
from modelcas.errors import UsageError
from modelcas.store import Store, atomic_write


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
    except (OSError, ValueError, RecursionError):
        known = None
    complete = all(s.has(d.sha256) for d in b.manifest.values())
    if not (known == identity and complete):
        b.ingest(progress=progress)
        seen.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(seen, json.dumps(identity, sort_keys=True).encode(), s.tmp_dir)
    s.register_root(p, "bundle")
    return b


class Pipeline(Mapping[str, "BundleModel | BundleTracker"]):
    """A resolved pipeline config, as the seed's pipeline reads it.

    Each model key maps to its :class:`BundleModel`, and ``"tracker"`` to the
    :class:`BundleTracker` when the bundle has one.
    """

    def __init__(
        self, bundle: Bundle, models: dict[str, BundleModel], tracker: BundleTracker | None
    ) -> None:
        self.bundle = bundle
        self.models = models
        self.tracker = tracker

    def __getitem__(self, key: str) -> BundleModel | BundleTracker:
        if key == "tracker" and self.tracker is not None:
            return self.tracker
        return self.models[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.models
        if self.tracker is not None:
            yield "tracker"

    def __len__(self) -> int:
        return len(self.models) + (self.tracker is not None)


def resolve_pipeline_config(
    config: str | os.PathLike[str] | Mapping[str, Any], *, store: Store | None = None
) -> Pipeline:
    """Resolve a pipeline config's ``models: model_collection: x.zip`` to verified models.

    A relative bundle path is found as HiTMicTools finds it: in the working directory, else
    beside the config.

    Args:
        config: the pipeline config (a path, or an already-parsed mapping, whose relative
            bundle path is taken from the working directory).
        store: the store; default the user's.

    Returns:
        Model key to :class:`BundleModel` (verified local path, metadata, inferer_args,
        model_args), and ``"tracker"`` to a :class:`BundleTracker` (verified path and parsed
        configuration) when the bundle has one.

    Raises:
        UsageError: the config has no ``models: model_collection:`` entry, or is unreadable.
    """
    base = Path.cwd()
    if not isinstance(config, Mapping):
        cfg = Path(config)
        try:
            data = untrusted.read_file(cfg, "a pipeline config (YAML)", cap=MAX_CONFIG)
        except FileNotFoundError:
            raise UsageError(f"pipeline config {cfg} is not a readable file") from None
        base = cfg.resolve().parent
        config = yamldoc.load(data, str(cfg), UsageError)
    try:
        collection = config["models"]["model_collection"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise UsageError("the pipeline config has no models: model_collection: entry") from None
    if not isinstance(collection, str):
        raise UsageError(f"models.model_collection should be a path, found {collection!r:.80}")
    bundle = open(paths.resolve(collection, base).path, store=store)
    return Pipeline(bundle, bundle.models(), bundle.tracker())
