"""The identity of content: ``sha256:<hex>`` plus its size, with blake3 when known."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from modelcas.errors import UsageError

if TYPE_CHECKING:
    from modelcas import _core

_HEX64 = re.compile(r"[0-9a-f]{64}")
PREFIX = "sha256:"


def is_hex64(value: str) -> bool:
    """Whether ``value`` is 64 lowercase hex digits."""
    return _HEX64.fullmatch(value) is not None


def parse_address(address: str) -> str:
    """Return the sha256 hex of an address.

    Args:
        address: ``sha256:<64 hex>``.

    Returns:
        The 64 lowercase hex digits.

    Raises:
        UsageError: ``address`` is not of that form.

    """
    hexpart = address.removeprefix(PREFIX)
    if not address.startswith(PREFIX) or not is_hex64(hexpart):
        raise UsageError(
            f"not a content address: {address!r}",
            hint="an address looks like sha256:<64 lowercase hex digits>",
        )
    return hexpart


@dataclass(frozen=True, slots=True)
class Digest:
    """Content identity: sha256 and size always, blake3 when it was computed."""

    sha256: str
    size: int
    blake3: str | None = None

    @property
    def address(self) -> str:
        """``sha256:<hex>``, the same value as an HF Hub LFS oid or a ``sha256sum`` line."""
        return PREFIX + self.sha256

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True, slots=True)
class Hashes:
    """What one hashing pass produced; a field is ``None`` when it was not asked for."""

    size: int
    sha256: str | None = None
    blake3: str | None = None
    crc32: int | None = None

    @classmethod
    def from_core(cls, raw: _core.Digests) -> Hashes:
        """Wrap the record the Rust core returns."""
        return cls(raw.size, raw.sha256, raw.blake3, raw.crc32)

    def digest(self) -> Digest:
        """The content identity; needs sha256.

        Raises:
            UsageError: sha256 was not computed.

        """
        if self.sha256 is None:
            raise UsageError("sha256 was not computed, so there is no content address")
        return Digest(self.sha256, self.size, self.blake3)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """How bytes differ from the digest record they must match."""

    field: Literal["size", "sha256", "blake3"]
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.field} differs: expected {self.expected}, found {self.actual}"


def mismatch(expected: Digest, actual: Digest | Hashes) -> Mismatch | None:
    """Compare a digest record against what bytes hashed to; None when they agree.

    The size is part of the address and always compared. sha256 and blake3 are compared
    wherever both sides know them. This is the one comparison every check uses.
    """
    if actual.size != expected.size:
        return Mismatch("size", f"{expected.size} bytes", f"{actual.size} bytes")
    if actual.sha256 is not None and actual.sha256 != expected.sha256:
        return Mismatch("sha256", f"sha256:{expected.sha256}", f"sha256:{actual.sha256}")
    if expected.blake3 and actual.blake3 and actual.blake3 != expected.blake3:
        return Mismatch("blake3", f"blake3:{expected.blake3}", f"blake3:{actual.blake3}")
    return None
