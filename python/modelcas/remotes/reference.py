"""The one reference parser: every way of naming weights, told apart once.

Below ``bundle`` and ``ops``, so the bundle planner, the resolver and every remote operation
read references the same way:

============================================  ========  =======================================
text                                          kind      location / revision
============================================  ========  =======================================
``sha256:<hex>`` (or a prefix of >= 4 hex)    object    the address / None
``NAME`` or ``NAME@VERSION``                  pin       the model / the version
``BUNDLE.zip#KEY``, ``PIPELINE.yml#KEY``      bundle    the file / the key
``hf://ORG/NAME[@REVISION]``                  hf        ``ORG/NAME`` / the tag, branch or commit
``oci://HOST[:PORT]/REPO[:TAG|@sha256:…]``    oci       ``oci://HOST[:PORT]/REPO`` / tag|digest
``file:///PATH``, ``/PATH``, ``./P``, ``~/P``  dir       the directory / None
``https://HOST/PATH`` (``http://`` loopback)  url       the URL / None
============================================  ========  =======================================

Only the syntax is decided here; what a name means (a file on disk that happens to look like a
model name, a model a lockfile does not pin) is the caller's policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from modelcas.errors import UsageError

Kind = Literal["object", "pin", "bundle", "hf", "oci", "dir", "url"]
REMOTE_KINDS = frozenset({"hf", "oci", "dir", "url"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BUNDLE_SUFFIXES = (".zip", ".yml", ".yaml")
FORMS = (
    "NAME[@VERSION], sha256:<hex>, BUNDLE.zip#KEY, hf://ORG/NAME@REVISION, "
    "oci://HOST[:PORT]/REPO:TAG, a directory (/PATH or file:///PATH), or https://HOST/PATH"
)


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference (see the module docstring for ``location`` and ``revision``)."""

    kind: Kind
    text: str
    location: str
    revision: str | None = None

    @property
    def is_remote(self) -> bool:
        """Whether it names a remote (Hub, registry, directory, URL)."""
        return self.kind in REMOTE_KINDS

    @property
    def name(self) -> str:
        """(pin) the model name."""
        return self.location

    @property
    def version(self) -> str | None:
        """(pin) the version, if given."""
        return self.revision


def parse(text: str) -> Ref:
    """Tell what kind of reference ``text`` is, and split it.

    Raises:
        UsageError: none of the forms, or a malformed one (the message names the form).
    """
    if not isinstance(text, str) or not text:
        raise UsageError(f"cannot read {text!r} as a reference", hint=f"use {FORMS}")
    if text.startswith("sha256:"):
        if not _HEX.fullmatch(text.removeprefix("sha256:")):
            raise UsageError(
                f"{text!r} is not an address", hint="sha256:<hex>, or a prefix of 4+ hex digits"
            )
        return Ref("object", text, text.lower())
    if text.startswith("hf://"):
        return _hf(text)
    if text.startswith("oci://"):
        from modelcas.oci.reference import parse as parse_oci  # noqa: PLC0415 (only for oci://)

        ref = parse_oci(text)
        return Ref("oci", text, ref.repo_url, ref.digest or ref.tag)
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"{text!r}: a file:// URL names a local path (file:///PATH)")
        return Ref("dir", text, unquote(parts.path))
    if text.startswith(("https://", "http://")):
        return _url(text)
    if text.startswith(("/", "./", "../", "~/")) or text in (".", "..", "~"):
        return Ref("dir", text, str(Path(text).expanduser()))
    source, sep, key = text.rpartition("#")
    if sep and source.endswith(_BUNDLE_SUFFIXES):
        if not key:
            raise UsageError(f"{text!r}: name the model after '#' (BUNDLE.zip#KEY)")
        return Ref("bundle", text, source, key)
    name, at, version = text.partition("@")
    if _NAME.fullmatch(name) and (not at or version):
        return Ref("pin", text, name, version or None)
    raise UsageError(f"cannot read {text!r} as a reference", hint=f"use {FORMS}")


def _hf(text: str) -> Ref:
    repo, _, revision = text.removeprefix("hf://").partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_HF_PART.fullmatch(p) for p in parts):
        raise UsageError(f"{text!r}: expected hf://ORG/NAME[@REVISION]")
    if "@" in text and not revision:
        raise UsageError(f"{text!r}: name the revision after '@' (hf://ORG/NAME@weights-v1.1)")
    return Ref("hf", text, repo, revision or None)


def _url(text: str) -> Ref:
    parts = urlsplit(text)
    if not parts.hostname or not parts.path or parts.path.endswith("/"):
        raise UsageError(
            f"{text!r}: a URL remote names one file (https://HOST/PATH/FILE)",
            hint="for a directory of files, pull each file's URL",
        )
    if parts.username or parts.password:
        raise UsageError(
            "a URL with a user name or password in it is refused (it would be written into "
            "the lockfile)",
            hint="use a URL that needs no credentials",
        )
    return Ref("url", text, text)


def file_name(url: str) -> str:
    """The file name a URL ends in (``…/releases/download/v1/best.pt`` -> ``best.pt``)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])
