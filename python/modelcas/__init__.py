"""modelcas: a content-addressed store for ML model weights."""

from modelcas._core import __version__
from modelcas.digest import Digest, Hashes
from modelcas.errors import (
    ChecksumFileError,
    IntegrityError,
    ModelcasError,
    ObjectNotFoundError,
    StoreError,
    StoreVersionError,
    UsageError,
)
from modelcas.hashing import Hasher, copy_file, hash_bytes, hash_file, hash_files
from modelcas.store import AddResult, ObjectInfo, Problem, Store

__all__ = [
    "AddResult",
    "ChecksumFileError",
    "Digest",
    "Hasher",
    "Hashes",
    "IntegrityError",
    "ModelcasError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "Problem",
    "Store",
    "StoreError",
    "StoreVersionError",
    "UsageError",
    "__version__",
    "copy_file",
    "hash_bytes",
    "hash_file",
    "hash_files",
]
