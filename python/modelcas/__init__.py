"""modelcas: a content-addressed store for ML model weights."""

import importlib
from typing import TYPE_CHECKING, Any

from modelcas._core import __version__
from modelcas.errors import (
    ChecksumFileError,
    IntegrityError,
    LockfileError,
    LockVersionError,
    ModelcasError,
    NotPinnedError,
    ObjectNotFoundError,
    RemoteError,
    StoreError,
    StoreVersionError,
    UsageError,
    WeightsCompatibilityError,
)

if TYPE_CHECKING:
    from modelcas.digest import Digest, Hashes
    from modelcas.hashing import Hasher, copy_file, hash_bytes, hash_file, hash_files
    from modelcas.lockfile import Lockfile
    from modelcas.registry import Registry, open_lock
    from modelcas.store import AddResult, ObjectInfo, Problem, Store

# Imported on first use: YAML, packaging and file locks cost a short command ~50 ms, and
# dataclasses alone (digest) ~5 ms of `cas --version`.
_LAZY = {
    "Digest": "digest",
    "Hashes": "digest",
    "Hasher": "hashing",
    "copy_file": "hashing",
    "hash_bytes": "hashing",
    "hash_file": "hashing",
    "hash_files": "hashing",
    "AddResult": "store",
    "ObjectInfo": "store",
    "Problem": "store",
    "Store": "store",
    "Lockfile": "lockfile",
    "Registry": "registry",
    "open_lock": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelcas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"modelcas.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AddResult",
    "ChecksumFileError",
    "Digest",
    "Hasher",
    "Hashes",
    "IntegrityError",
    "LockVersionError",
    "Lockfile",
    "LockfileError",
    "ModelcasError",
    "NotPinnedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "Problem",
    "Registry",
    "RemoteError",
    "Store",
    "StoreError",
    "StoreVersionError",
    "UsageError",
    "WeightsCompatibilityError",
    "__version__",
    "copy_file",
    "hash_bytes",
    "hash_file",
    "hash_files",
    "open_lock",
]
