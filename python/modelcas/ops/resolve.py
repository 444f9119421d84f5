"""The one resolver: every way of naming weights ends in a stored, verified object.

A reference is one of (``modelcas.remotes.reference`` tells them apart, for everyone):

- ``sha256:<hex>``, or a unique prefix of at least 4 hex digits: an object in the store;
- ``NAME[@VERSION]``: a pin in a lockfile (a project's ``cas.lock`` or a package registry);
- ``hf://ORG/REPO@REVISION``: a file of a Hub commit, downloaded and verified on first use;
- ``oci://HOST[:PORT]/REPO:TAG`` (or ``@sha256:...``): a file of a ModelPack artifact, pulled
  and verified on first use;
- ``https://HOST/PATH/FILE``: a file of a web server, downloaded and hashed on first use;
- ``BUNDLE.zip#KEY``, or ``PIPELINE.yml#KEY``: a model of a bundle (opened, verified and
  ingested once), directly or through a pipeline config's ``models: model_collection:``;
- from Python, also ``(bundle, key)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcas.digest import Digest
from modelcas.errors import NotPinnedError, UsageError
from modelcas.hashing import Progress
from modelcas.remotes.reference import Ref, parse
from modelcas.store import ObjectInfo, Store

if TYPE_CHECKING:
    from modelcas.registry import Registry

_PIPELINE_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class Resolved:
    """A stored object a reference names: where it is, what it must hash to, its names."""

    path: Path  # the object in the store (what loaders read, refusing symlinks); never write
    digest: Digest
    label: str  # "cser-detector@v1.1 best.pt", "bundle.zip#segmentation", "sha256:..."
    filename: str  # the file name it had (its extension tells the format)
    # The path handed to people and frameworks: a named view's entry ending in the pinned file
    # name (``docs/store.md``); None for a bare address, which has no name.
    named: Path | None = None

    @property
    def shown(self) -> Path:
        """The path to hand out: the named one where there is a name, else the object."""
        return self.named or self.path


def resolve(
    ref: str | tuple[Any, str],
    *,
    store: Store | None = None,
    registry: Registry | None = None,
    lock: str | os.PathLike[str] | None = None,
    file: str | None = None,
    verify: bool = True,
    check_requires: bool = True,
    progress: Progress | None = None,
) -> Resolved:
    """Turn a reference into a stored object, fetching it on first use.

    Args:
        ref: see the module docstring.
        store: the store; default the registry's, else the user's.
        registry: resolve names through this registry (a package's); default ``lock``.
        lock: the lockfile for names; default the nearest ``cas.lock``.
        file: which file, for a version or Hub commit with several.
        verify: re-hash a stored object before handing it out (``False`` for callers that
            hash the bytes as they read them); sizes and records are compared either way.
        check_requires: ``False`` opts out of the compatibility check of pinned names.
        progress: called with the bytes fetched or hashed (pinned names, addresses, Hub).

    Raises:
        UsageError: a malformed reference.
        NotPinnedError, ObjectNotFoundError: nothing by that name.
        WeightsCompatibilityError, CompatibilityCheckError: a pinned version the installed
            package cannot use, or whose compatibility cannot be checked.
        IntegrityError: the bytes are not what they must be.
        RemoteError: a fetch failed.
    """
    s = store or (registry.store if registry is not None else Store())
    if isinstance(ref, tuple):
        return _bundle_key(ref[0], ref[1], s)
    if not isinstance(ref, str) or not ref:
        raise UsageError(f"cannot resolve {ref!r}: expected a name, an address or a bundle key")
    r = parse(ref)
    if r.kind == "object":
        sha256 = s.resolve(ref)
        path = s.path(sha256, verify=verify, progress=progress)
        return Resolved(path, s.info(sha256).digest, f"sha256:{sha256}", file or "")
    if r.kind in ("hf", "oci", "url"):
        return _remote(r, s, file, verify=verify, progress=progress)
    if r.kind == "bundle":
        return _bundle_key(r.location, r.revision or "", s)
    if r.kind == "dir":
        raise UsageError(
            f"{ref} is a directory remote: it holds objects, not one file",
            hint="name a model (NAME@VERSION) or an address (sha256:…); `cas pull` fetches "
            "from a directory",
        )
    from modelcas.registry import open_lock  # noqa: PLC0415 (YAML only for names)

    reg = registry if registry is not None else open_lock(lock, store=s)
    if not check_requires:
        reg.check_requires = False
    pin = reg.pin(r.name, r.version, file)
    path = reg.fetch(pin, verify=verify, progress=progress)
    known = reg.store.info(pin.digest.sha256).digest
    digest = Digest(pin.digest.sha256, pin.digest.size, pin.digest.blake3 or known.blake3)
    return Resolved(path, digest, pin.label, Path(pin.file).name, reg.named(pin))


def _bundle_key(source: Any, key: str, store: Store) -> Resolved:
    from modelcas import bundle  # noqa: PLC0415 (the zip reader only for bundle keys)

    if isinstance(source, bundle.Bundle):
        opened = source
    elif isinstance(source, Mapping) or str(source).endswith(_PIPELINE_SUFFIXES):
        models = bundle.resolve_pipeline_config(source, store=store)
        m = models.get(key)
        if m is None or not hasattr(m, "member_name"):
            known = ", ".join(sorted(k for k, v in models.items() if hasattr(v, "member_name")))
            raise NotPinnedError(f"the pipeline's bundle has no model {key!r} (keys: {known})")
        name = "pipeline" if isinstance(source, Mapping) else Path(source).name
        return Resolved(m.stored, m.digest, f"{name}#{key}", m.member_name, m.path)
    else:
        opened = bundle.open(source, store=store)
    model = opened.model(key)
    label = f"{opened.path.name}#{key}"
    return Resolved(model.stored, model.digest, label, model.member_name, model.path)


def _remote(
    r: Ref, store: Store, file: str | None, *, verify: bool, progress: Progress | None
) -> Resolved:
    """A file of a remote version (Hub, registry, URL), downloaded and verified on first use."""
    from modelcas.remotes import open_remote  # noqa: PLC0415 (the remotes only for them)

    remote = open_remote(r)
    version = remote.resolve(r.revision)
    listing = remote.listing(version)
    names = sorted(version.files if version.files is not None else listing)
    if file is None:
        if len(names) != 1:
            raise UsageError(
                f"{r.text} has {len(names)} files ({', '.join(names)}); say which one (--file)"
            )
        file = names[0]
    if file not in listing:
        at = f" (revision {version.revision[:19]})" if version.revision else ""
        raise NotPinnedError(f"{r.text}{at} has no file {file!r} (files: {', '.join(names)})")
    got = remote.fetch(version, {file: listing[file].digest}, store, progress=progress)[0]
    path = store.path(got.digest.sha256, verify=verify and got.origin == "store")
    named = _named(store, file, store.info(got.digest.sha256))
    return Resolved(path, got.digest, f"{r.text} {file}", Path(file).name, named)


def _named(store: Store, file: str, info: ObjectInfo) -> Path:
    """A one-file view: the remote file under its own name."""
    from modelcas.store import views  # noqa: PLC0415

    return views.file(store, {file: info.digest}, file)
