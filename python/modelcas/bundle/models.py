"""A bundle's keys resolved to local paths in the store, with their settings.

And its tracker configuration, parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas.bundle import yamldoc
from modelcas.bundle.plan import TRACKER
from modelcas.digest import Digest
from modelcas.errors import BundleError

if TYPE_CHECKING:
    from modelcas.bundle.archive import Bundle


@dataclass(frozen=True, slots=True)
class BundleModel:
    """One model of an opened bundle: a verified local path plus its settings."""

    key: str
    path: Path  # the bundle's named view: ends in the member name; never write to it
    digest: Digest
    member_name: str
    model_type: str | None
    metadata: dict[str, Any]
    inferer_args: dict[str, Any]
    model_args: dict[str, Any]
    config: dict[str, Any]  # the whole entry from the bundle's config.yml
    stored: Path  # the object itself (what verified loaders read)


@dataclass(frozen=True, slots=True)
class BundleTracker:
    """A bundle's tracker configuration: a verified local path and its parsed content."""

    path: Path  # the bundle's named view: ends in the member name; never write to it
    digest: Digest
    member_name: str
    config: dict[str, Any]  # config_tracker.yml, parsed
    stored: Path  # the object itself


def _local(bundle: Bundle, digest: Digest) -> Path:
    store = bundle.store
    if store.has(digest.sha256):
        return store.path(digest.sha256, verify=False)
    return store.object_path(digest.sha256)


def _named(bundle: Bundle, member: str) -> Path:
    """The member in the bundle's view: every member under its own name, as extracted."""
    from modelcas.store import views  # noqa: PLC0415 (`cas bundle verify/ls` need no store)

    return views.view(bundle.store, bundle.manifest) / member


def build(bundle: Bundle) -> dict[str, BundleModel]:
    """Every model of a bundle by key, in config order.

    Raises:
        BundleError: an entry names a member the bundle lacks, or bad metadata.
    """
    out = {}
    for key in bundle.keys():  # noqa: SIM118 (Bundle.keys is a method, not dict.keys)
        entry = bundle.config[key]
        member = entry["model_path"]
        want = bundle.manifest.get(member)
        if want is None:
            raise BundleError(f"{bundle.path}: {key}.model_path {member!r} is not a member")
        metadata: dict[str, Any] = {}
        meta_member = entry.get("model_metadata")
        if isinstance(meta_member, str):
            try:
                metadata = json.loads(bundle.read_small(meta_member))
            except (ValueError, RecursionError) as e:
                raise BundleError(
                    f"{bundle.path}: {key}.model_metadata {meta_member!r} is not valid JSON: {e}"
                ) from None
            if not isinstance(metadata, dict):
                raise BundleError(
                    f"{bundle.path}: {key}.model_metadata {meta_member!r} is not a JSON object"
                )
        out[key] = BundleModel(
            key,
            _named(bundle, member),
            want,
            member,
            entry.get("model_type"),
            metadata,
            dict(entry.get("inferer_args") or {}),
            dict(entry.get("model_args") or {}),
            dict(entry),
            _local(bundle, want),
        )
    return out


def tracker(bundle: Bundle) -> BundleTracker | None:
    """The bundle's tracker configuration, if it has one.

    Raises:
        BundleError: the config names a tracker member that is missing or not a YAML mapping.
    """
    entry = bundle.config.get("tracker")
    if entry is None:
        return None
    name = entry.get("config_path", TRACKER) if isinstance(entry, dict) else None
    if not isinstance(name, str):
        raise BundleError(f"{bundle.path}: tracker.config_path is not a member name")
    want = bundle.manifest.get(name)
    if want is None:
        raise BundleError(f"{bundle.path}: tracker.config_path {name!r} is not a member")
    config = yamldoc.load(bundle.read_small(name), f"{bundle.path}: {name}", BundleError)
    if not isinstance(config, dict):
        raise BundleError(f"{bundle.path}: {name} is not a YAML mapping")
    return BundleTracker(_named(bundle, name), want, name, config, _local(bundle, want))
