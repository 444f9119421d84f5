"""``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]``: where an artifact lives in a registry.

The grammar is the distribution reference grammar (the one docker, podman and oras accept),
restricted to sha256 digests: modelcas addresses are sha256, and a registry that answers with
another algorithm could not be checked against a pin.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from modelcas.digest import is_hex64
from modelcas.errors import UsageError

SCHEME = "oci://"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
)
_FORM = "oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]"


def is_tag(text: str) -> bool:
    """Whether ``text`` is allowed as an OCI tag (letters, digits, ``_.-``, at most 128)."""
    return _TAG.fullmatch(text) is not None


def check_tag(version: str, what: str) -> str:
    """``version`` as a tag, or a usage error saying why it cannot be one.

    Raises:
        UsageError: the OCI tag grammar forbids it (``+``, ``/``, too long, ...).
    """
    if is_tag(version):
        return version
    bad = sorted({c for c in version if not re.fullmatch(r"[A-Za-z0-9_.-]", c)})
    why = f"it contains {' '.join(repr(c) for c in bad)}" if bad else "of its first character"
    if len(version) > 128:
        why = "it is longer than 128 characters"
    raise UsageError(
        f"{what}: {version!r} cannot be an OCI tag because {why}",
        hint="OCI tags allow only letters, digits, '_', '.' and '-' (a PEP 440 local version "
        "such as v1.0+cu121 cannot be one): publish it as e.g. v1.0.post1 or v1.0-cu121",
    )


@dataclass(frozen=True, slots=True)
class Reference:
    """A repository in a registry, optionally at a tag or a manifest digest.

    ``host`` is a hostname or an IP address (IPv6 without brackets); ``digest`` is
    ``sha256:<hex>``.
    """

    host: str
    port: int | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry(self) -> str:
        """``host[:port]`` as credentials and the ``Host`` header name it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def repo_url(self) -> str:
        """``oci://host[:port]/repo``, without tag or digest."""
        return f"{SCHEME}{self.registry}/{self.repository}"

    @property
    def url(self) -> str:
        """The reference as written: digest when known, else tag."""
        if self.digest:
            return f"{self.repo_url}@{self.digest}"
        return self.repo_url + (f":{self.tag}" if self.tag else "")

    @property
    def loopback(self) -> bool:
        """Whether the registry is on this machine (plain HTTP is allowed there)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def at(self, digest: str) -> Reference:
        """The same repository at a manifest digest (no tag)."""
        return replace(self, tag=None, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at a tag (no digest)."""
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        return self.url


def parse(text: str) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]``.

    Raises:
        UsageError: not of that form; the message says which part is wrong.
    """
    if not text.startswith(SCHEME):
        raise UsageError(f"{text!r} is not an OCI reference", hint=f"write {_FORM}")
    rest = text.removeprefix(SCHEME)
    authority, slash, path = rest.partition("/")
    if not slash or not path:
        raise UsageError(f"{text!r} names no repository", hint=f"write {_FORM}")
    host, port = _authority(authority, text)
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        hexpart = digest.removeprefix("sha256:")
        if not digest.startswith("sha256:") or not is_hex64(hexpart):
            raise UsageError(
                f"{text!r}: {digest!r} is not a sha256 manifest digest",
                hint="a digest looks like @sha256:<64 lowercase hex digits>",
            )
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not is_tag(tag):
            raise UsageError(
                f"{text!r}: {tag!r} is not an OCI tag",
                hint="tags allow letters, digits, '_', '.' and '-' (at most 128)",
            )
    if not _REPOSITORY.fullmatch(path) or len(path) > 255:
        raise UsageError(
            f"{text!r}: {path!r} is not a repository name",
            hint="repository names are lowercase letters and digits, separated by '/', "
            "'.', '_', '__' or '-'",
        )
    return Reference(host, port, path, tag, digest)


def _authority(authority: str, text: str) -> tuple[str, int | None]:
    port: str | None = None
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UsageError(f"{text!r}: {authority!r} is not a registry address")
        port = after[1:] if after else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
        if not _HOSTNAME.fullmatch(host):
            raise UsageError(
                f"{text!r}: {authority!r} is not a registry address",
                hint=f"write {_FORM}",
            )
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r}: {port!r} is not a port number")
    return host, int(port)
