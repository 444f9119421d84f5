"""Model bundles: the several models of an analysis pipeline in one self-verifying zip.

Layout (``docs/bundle.md``), compatible with HiTMicTools model collections::

    models/{ModelType}-{key}{ext}       the weights, renamed to standard names
    metadata/{ModelType}-{key}.json     the model's metadata, with original_name and model_type
    config.yml                          keys -> member paths, inferer_args, model_args, ...,
                                        and _bundle_metadata (creation_date, source_config)
    config_tracker.yml                  optional tracker configuration
    modelcas-manifest.json              size, crc32, sha256 and blake3 of every other member

The work is split in three: ``plan`` reads a bundle config and checks every input (pure: no
network, no store writes); ``archive`` writes, reads, verifies and extracts bundles;
``pipeline`` opens a bundle for a pipeline (ingesting it into the store once) and resolves a
pipeline config. Everything public is re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas.bundle.archive import (
    COMPRESSIONS,
    Bundle,
    Created,
    Member,
    Problem,
    Verification,
    parse_compression,
    read_manifest,
    references,
    sidecar_of,
    write,
)
from modelcas.bundle.models import BundleModel, BundleTracker
from modelcas.bundle.plan import (
    CONFIG,
    FORMAT,
    MANIFEST,
    TRACKER,
    BundlePlan,
    PlannedModel,
    dated_name,
    plan_bundle,
)

if TYPE_CHECKING:
    from modelcas.bundle.pipeline import Pipeline, open, resolve_pipeline_config
    from modelcas.store import Store

# Pipeline configs open the store; imported on first use, so that `cas bundle verify` and
# `ls` (which never open it) do not pay for importing it.
_PIPELINE = ("Pipeline", "open", "resolve_pipeline_config")


def __getattr__(name: str) -> Any:
    if name not in _PIPELINE:
        raise AttributeError(f"module 'modelcas.bundle' has no attribute {name!r}")
    from modelcas.bundle import pipeline  # noqa: PLC0415

    value = getattr(pipeline, name)
    globals()[name] = value
    return value


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
        models_info_path: the bundle config (YAML). A relative path in it is taken from the
            working directory when it exists there, else from the config's folder.
        output_bundle_path: where to write; a date is inserted unless ``auto_date`` is false.
        auto_date: ``my_bundle.zip`` becomes ``my_bundle_YYYYMMDD.zip``.
        compression: ``stored`` (default), ``deflate[:LEVEL]`` or ``zstd[:LEVEL]``.
        force: replace an existing bundle (and its sidecar, as a pair).
        store: for models given as ``sha256:`` addresses or lock names.
        lock: the lockfile for lock names (default: the nearest ``cas.lock``).

    Returns:
        The path of the bundle written.

    Raises:
        UsageError: the config or its inputs are wrong (all problems are listed).
        FileExistsError: the output exists and ``force`` is not set.
        IntegrityError: a pinned model's bytes are not what its pin says; nothing is written.
    """
    plan = plan_bundle(
        models_info_path, output_bundle_path, auto_date=auto_date, store=store, lock=lock
    )
    return write(plan, compression=compression, force=force, store=store).path


__all__ = [
    "COMPRESSIONS",
    "CONFIG",
    "FORMAT",
    "MANIFEST",
    "TRACKER",
    "Bundle",
    "BundleModel",
    "BundlePlan",
    "BundleTracker",
    "Created",
    "Member",
    "Pipeline",
    "PlannedModel",
    "Problem",
    "Verification",
    "create_model_bundle",
    "dated_name",
    "open",
    "parse_compression",
    "plan_bundle",
    "read_manifest",
    "references",
    "resolve_pipeline_config",
    "sidecar_of",
    "write",
]
