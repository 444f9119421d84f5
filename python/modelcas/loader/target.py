"""Where the bytes to load are and what they must hash to: every kind of reference, one seam.

Every loader starts from :func:`resolve`, which turns a reference into a :class:`Target` (a
local path, its expected :class:`Digest`, and a label for messages). Nothing is read or trusted
here: the loaders verify the bytes as they read them. Adding a source (``hf://``, ``oci://``)
is one branch in :func:`resolve` that fetches into the store and returns the stored object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas.digest import Digest
from modelcas.errors import UsageError

if TYPE_CHECKING:
    from modelcas.registry import Registry
    from modelcas.store import Store

#: ``"name"``, ``"name@version"``, ``"sha256:<hex>"``, ``(bundle or pipeline config, key)``,
#: a bundle's model, or a :class:`Target`.
Ref = Any

_SCHEMES = ("hf://", "oci://")


@dataclass(frozen=True, slots=True)
class Target:
    """What to load: the stored object, what it must hash to, and names for messages."""

    path: Path
    digest: Digest
    label: str  # "cser-detector@v1.1 best.pt", "b.zip key segmentation", "sha256:..."
    filename: str = ""  # decides the format by its extension


def resolve(
    ref: Ref,
    *,
    registry: Registry | None = None,
    lock: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    file: str | None = None,
) -> Target:
    """Turn a reference into a stored object to load.

    Args:
        ref: ``"name"`` or ``"name@version"`` (through ``registry``, e.g.
            ``Registry.from_package(...)``, or the lockfile); an address ``"sha256:<hex>"``;
            ``(bundle, key)`` with a bundle path or an opened bundle; ``(config, key)`` with a
            pipeline config (a ``.yml``/``.yaml`` path or a parsed mapping) naming a bundle;
            a bundle's model (``bundle.model(key)``); or a :class:`Target`.
        registry: resolve names through this registry; default ``lock``.
        lock: the lockfile for names; default the nearest ``cas.lock``.
        store: the store; default the registry's, else the user's.
        file: which file of a version with several (the file name, for an address).

    Returns:
        The stored object, its expected digest and a label.

    Raises:
        UsageError: the reference has no known form.
        NotPinnedError, WeightsCompatibilityError, ObjectNotFoundError: it cannot resolve.
    """
    if isinstance(ref, Target):
        return ref
    if isinstance(ref, tuple) and len(ref) == 2:
        return _bundle_key(ref[0], ref[1], store)
    if hasattr(ref, "member_name") and hasattr(ref, "digest"):  # bundle.BundleModel
        return Target(ref.path, ref.digest, f"bundle key {ref.key}", ref.member_name)
    if not isinstance(ref, str):
        raise UsageError(
            f"cannot load {ref!r}",
            hint="pass a name, name@version, sha256:<hex>, or (bundle or config, key)",
        )
    if ref.startswith(_SCHEMES):
        # The lead wires the remote resolvers here: fetch and verify into the store, then
        # return the stored object's Target like the branches below.
        raise UsageError(
            f"cannot load {ref!r} directly yet",
            hint="pull it into the store first (`cas pull`), then load it by name or address",
        )
    from modelcas.store import Store  # noqa: PLC0415 (YAML and locks cost imports)

    if ref.startswith("sha256:"):
        s = store or (registry.store if registry else Store())
        sha256 = s.resolve(ref)
        info = s.info(sha256)
        return Target(info.path, info.digest, f"sha256:{sha256}", file or "")
    from modelcas.lockfile import split_ref  # noqa: PLC0415
    from modelcas.registry import open_lock  # noqa: PLC0415

    reg = registry or open_lock(lock, store=store)
    pin = reg.pin(*split_ref(ref), file)
    path = reg.fetch(pin, verify=False)  # the bytes are verified as they are read
    known = reg.store.info(pin.digest.sha256).digest
    digest = Digest(pin.digest.sha256, pin.digest.size, pin.digest.blake3 or known.blake3)
    return Target(path, digest, pin.label, pin.file)


def _bundle_key(source: Any, key: str, store: Store | None) -> Target:
    from modelcas import bundle  # noqa: PLC0415 (bundles pull in the zip reader)

    if isinstance(source, Mapping) or (
        isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in (".yml", ".yaml")
    ):
        models = bundle.resolve_pipeline_config(source, store=store)
        if key not in models:
            raise UsageError(
                f"the pipeline config has no model {key!r} (keys: {', '.join(models)})"
            )
        model = models[key]
        return Target(model.path, model.digest, f"pipeline key {key}", model.member_name)
    opened = source if isinstance(source, bundle.Bundle) else bundle.open(source, store=store)
    model = opened.model(key)
    return Target(model.path, model.digest, f"{opened.path.name} key {key}", model.member_name)
