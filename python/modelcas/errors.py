"""The exception hierarchy. Pure Python; the Rust core raises these same classes.

Every error carries what a user needs to act: which file, model and version, what was expected,
what was found, and what to do next (``hint``). ``exit_code`` follows the CLI contract: 1 when a
check found a problem, 2 for usage or unexpected errors.
"""

from __future__ import annotations

from collections.abc import Sequence

# Detail lines the CLI prints under an error before "... and N more".
MAX_DETAILS = 10


class ModelcasError(Exception):
    """Base class of every modelcas error.

    ``details`` is for the one documented exception to "one line per error": an error that
    gathers several problems (a bundle config's) gives their count in ``message`` and one
    problem per detail line; the CLI prints at most :data:`MAX_DETAILS` of them.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, hint: str | None = None, details: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = tuple(details)

    def __str__(self) -> str:
        lines = [self.message, *(f"  - {d}" for d in self.details)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class UsageError(ModelcasError):
    """The caller asked for something that cannot work as asked."""


class IntegrityError(ModelcasError):
    """Bytes do not match the digest or size they must have."""

    exit_code = 1


class ChecksumFileError(ModelcasError):
    """A checksum file (``sha256sum``/``b3sum`` format) cannot be parsed."""


class StoreError(ModelcasError):
    """The store cannot be opened or written."""


class StoreVersionError(StoreError):
    """The store was created by a newer modelcas with a format this one does not know."""


class ObjectNotFoundError(ModelcasError, LookupError):
    """No object with that address is in the store."""

    exit_code = 1


class BundleError(ModelcasError):
    """A bundle cannot be created, read or verified."""

    exit_code = 1


class UnsafeArchiveError(BundleError):
    """An archive breaks a rule that protects its reader; it is refused whole."""


class ArchiveLimitError(UnsafeArchiveError):
    """An archive goes over a size, count, ratio or window limit."""


class LockfileError(ModelcasError):
    """A lockfile is malformed, or an edit to it cannot be made."""


class LockVersionError(LockfileError):
    """A lockfile's ``lock-version`` is one this modelcas does not know."""


class LockHeldError(ModelcasError):
    """Another process holds the lock on a file (it may run on another host)."""


class NotPinnedError(ModelcasError, LookupError):
    """A name or version is not in the lockfile."""

    exit_code = 1


class WeightsCompatibilityError(ModelcasError):
    """The chosen weights require another version of the package that uses them.

    Its text is the seed's: what is required, what is installed, and the upgrade command.
    """

    exit_code = 1
    compatible: list[str] = []  # noqa: RUF012 (set per instance by the registry)

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class CompatibilityCheckError(ModelcasError):
    """Weights have a ``requires`` range that cannot be checked.

    The package is unknown or not installed. Fail closed: opt out explicitly
    (``check_requires=False``).
    """


class RemoteError(ModelcasError):
    """A remote (the Hub, a shared directory) failed or refused."""


class RemoteMissingError(RemoteError):
    """The remote has no such repository, tag, version or file (the message says which it has)."""

    exit_code = 1


class TagConflictError(RemoteError):
    """A tag already exists and points elsewhere; tags are never moved."""

    exit_code = 1


class FormatError(ModelcasError):
    """Verified bytes are not a valid file of their format (a malformed safetensors header)."""

    exit_code = 1


class UnsafeCheckpointError(ModelcasError):
    """A checkpoint needs code execution (pickle globals) to load, and that was not allowed."""

    exit_code = 1


class MissingExtraError(UsageError, ImportError):
    """An optional dependency is not installed; the hint says which extra to install."""


class SignatureError(ModelcasError):
    """A signature is missing, malformed, made by another key, or covers other files.

    Fail closed: a signature that cannot be checked is refused, never passed.
    """

    exit_code = 1


class UntrustedSignerError(SignatureError):
    """A version's signature is valid but its signer is not one the lockfile trusts."""
