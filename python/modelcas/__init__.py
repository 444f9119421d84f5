"""modelcas: a content-addressed store for ML model weights."""

from modelcas._core import __version__
from modelcas.digest import Digest, Hashes
from modelcas.errors import ChecksumFileError, IntegrityError, ModelcasError, UsageError
from modelcas.hashing import Hasher, copy_file, hash_bytes, hash_file, hash_files

__all__ = [
    "ChecksumFileError",
    "Digest",
    "Hasher",
    "Hashes",
    "IntegrityError",
    "ModelcasError",
    "UsageError",
    "__version__",
    "copy_file",
    "hash_bytes",
    "hash_file",
    "hash_files",
]
