"""Reference digests, always from hashlib and the blake3 package, never from modelcas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3


def ref_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref_blake3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def ref_file(path: Path) -> tuple[str, str, int]:
    """sha256, blake3 and size of a file, by the reference implementations."""
    sha, b3 = hashlib.sha256(), blake3.blake3(max_threads=blake3.blake3.AUTO)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            sha.update(chunk)
            b3.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), b3.hexdigest(), size
