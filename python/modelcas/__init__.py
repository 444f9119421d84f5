"""modelcas: a content-addressed store for ML model weights."""

from modelcas._core import __version__
from modelcas.digest import Digest, Hashes
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
from modelcas.hashing import Hasher, copy_file, hash_bytes, hash_file, hash_files
from modelcas.lockfile import Lockfile
from modelcas.registry import Registry, open_lock
from modelcas.store import AddResult, ObjectInfo, Problem, Store

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
