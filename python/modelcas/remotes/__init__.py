"""Where versions of weights live besides the store: one protocol, chosen once.

- ``hf://ORG/NAME@REVISION``: the Hugging Face Hub (:mod:`modelcas.hub`);
- ``oci://HOST[:PORT]/REPO[:TAG|@sha256:…]``: an OCI registry (:mod:`modelcas.oci`);
- ``/PATH`` or ``file:///PATH``: a shared directory with the store's layout
  (:mod:`modelcas.remotes.directory`);
- ``https://HOST/PATH/FILE``: a plain web server, read-only (:mod:`modelcas.remotes.url`).

:func:`open_remote` picks the implementation of :class:`~modelcas.remotes.base.Remote` from the
one reference parser (:mod:`modelcas.remotes.reference`); :func:`pinned` rebuilds a version from
what a lock entry records, without asking anyone. Every fetch verifies the bytes while they
stream (:mod:`modelcas.remotes.transfer`).
"""

from __future__ import annotations

from typing import cast

from modelcas.errors import UsageError
from modelcas.remotes.base import (
    Audit,
    Fetched,
    Listed,
    Outgoing,
    Published,
    Remote,
    RemotePlan,
    RemoteVersion,
    Step,
    Writable,
)
from modelcas.remotes.directory import DirRemote
from modelcas.remotes.reference import Ref, parse

__all__ = [
    "Audit",
    "DirRemote",
    "Fetched",
    "Listed",
    "Outgoing",
    "Published",
    "Ref",
    "Remote",
    "RemotePlan",
    "RemoteVersion",
    "Step",
    "Writable",
    "open_remote",
    "parse",
    "pinned",
    "writable",
]


def open_remote(ref: Ref | str, *, plain_http: bool = False) -> Remote:
    """The remote a reference names (its revision, if any, is for ``resolve``).

    Args:
        ref: a parsed reference, or the text of one.
        plain_http: (OCI, URLs) allow plain HTTP to a host that is not loopback.

    Raises:
        UsageError: not a remote (a model name, an address, a bundle key).
    """
    r = parse(ref) if isinstance(ref, str) else ref
    if r.kind == "hf":
        from modelcas.hub import HubRemote  # noqa: PLC0415 (keeps huggingface_hub off start-up)

        return HubRemote(r.location, r.revision)
    if r.kind == "oci":
        from modelcas.oci.reference import parse as parse_oci  # noqa: PLC0415
        from modelcas.oci.remote import OciRemote  # noqa: PLC0415 (only for oci://)

        return OciRemote(parse_oci(r.text), plain_http=plain_http or None)
    if r.kind == "dir":
        return DirRemote(r.location)
    if r.kind == "url":
        from modelcas.remotes.url import UrlRemote  # noqa: PLC0415

        return UrlRemote(r.location, plain_http=plain_http)
    raise UsageError(
        f"{r.text!r} is not a remote",
        hint="remotes are hf://ORG/NAME@REVISION, oci://HOST[:PORT]/REPO:TAG, a directory "
        "(/PATH or file:///PATH) or https://HOST/PATH/FILE",
    )


def writable(ref: Ref | str, *, plain_http: bool = False) -> Writable:
    """A remote that versions can be published to.

    Raises:
        UsageError: a read-only remote (a plain URL) or not a remote.
    """
    r = parse(ref) if isinstance(ref, str) else ref
    if r.kind == "url":
        raise UsageError(
            f"{r.text} is a plain URL, which is read-only",
            hint="publish to the Hub (--repo), an OCI registry or a directory (--to)",
        )
    return cast("Writable", open_remote(r, plain_http=plain_http))


def pinned(
    place: str,
    *,
    model: str | None = None,
    version: str | None = None,
    commit: str | None = None,
    validator: str | None = None,
) -> tuple[Remote, RemoteVersion]:
    """The remote of a lock entry's source (or mirror), and the version as pinned there.

    Nothing is asked of the remote: a Hub version is fetched by the pinned commit, an OCI or
    directory one by the pinned digests, a URL is checked against its pinned validator.

    Raises:
        UsageError: the source is not a remote.
    """
    r = parse(place)
    remote = open_remote(r)
    if r.kind == "hf":
        at = RemoteVersion(
            remote.url, place, ref=r.revision, revision=commit, version=version, model=model
        )
    elif r.kind == "oci":
        at = RemoteVersion(
            remote.url, place, ref=r.revision, revision=r.revision, version=version, model=model
        )
    else:
        at = RemoteVersion(remote.url, place, version=version, model=model, validator=validator)
    return remote, at
