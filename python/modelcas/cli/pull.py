"""``cas pull``: fetch a version from any remote (and pin it), or objects from a directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, json_help, open_store, say, show_path

HELP = "fetch a version from the Hub, a registry, a directory or a URL (and pin it)"
DESCRIPTION = """\
Resolve the reference to a version that cannot move (a Hub tag to its commit, an OCI tag
to its manifest digest, a directory's catalog entry, a URL to its ETag or Last-Modified),
list its files, and refuse before downloading anything if the lockfile already pins that
version to other bytes. Each file is downloaded while it is hashed and checked against the
remote's own record (the Hub's LFS sha256, the layer digest, the catalog) and the pin; a
truncated or corrupted download leaves nothing behind. Then the version is pinned: size,
sha256, blake3, the source, and `requires`/`package` where the remote's metadata has them.
Nothing is downloaded for content already in the store.

A cut download resumes with Range; below the low-speed limit (MODELCAS_LOW_SPEED_LIMIT
bytes/s, default 1024, for MODELCAS_LOW_SPEED_TIME seconds, default 60) it is abandoned and
what arrived is kept, so the next run resumes from there.

Remotes: hf://ORG/NAME@TAG (bytes the Hugging Face cache holds are taken from it, also with
HF_HUB_OFFLINE=1; a download is left where hf_hub_download finds it); oci://HOST[:PORT]/
REPO:TAG or @sha256:...; a directory (a path or file:// URL) with --name (and --version)
from its catalog, or without --name every file the lockfile pins (or the given addresses);
https://HOST/PATH/FILE with --name and --version (http:// only for loopback or with
--plain-http; --expect sha256:... refuses other bytes).

Signatures (docs/signing.md): when the lockfile trusts signers for the model, the signature
that travels with the version (model.sig in a Hub tag's commit or its companion tag's, an
OCI referrer, a file beside a directory's catalog entry) is checked before any byte moves
and pinned with the version; no signature by a trusted signer, and nothing is pinned. A URL
carries none: --signature FILE gives one. Without trust, no signature is pinned (one made
with a key cannot be checked without the key): trust the signer, then pull again."""
EPILOG = f"""\
examples:
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1 --name cser-detector --file best.pt
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1 --include '*.pt' --exclude 'optim*'
  cas pull oci://registry.lab.org/models/cser-detector:v1.1
  cas pull https://zenodo.org/records/1/files/best.pt --name det --version v1
  cas pull /lab/shared/cas --name cser-detector --version v1.1   a version from the catalog
  cas pull /lab/shared/cas                   everything cas.lock pins, from the lab server
  cas pull file:///lab/shared/cas sha256:9f86d0

{json_help("pull", ['"source"', '"commit"', '"files": [...]', '"pinned": {...}|null'])}

exit status: 0 fetched (and pinned); 1 other bytes than pinned or expected, or the remote
has no such version or file; 2 usage error, or the remote failed (run it again: it resumes)."""


def register(sub: Any) -> None:
    """Add ``cas pull`` to the command parser."""
    p = add_command(sub, "pull", HELP, DESCRIPTION, EPILOG)
    p.add_argument(
        "source", metavar="SOURCE", help="hf://ORG/NAME@TAG, oci://…, a directory, https://…"
    )
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="(directory remotes) objects")
    p.add_argument("--name", metavar="MODEL", help="model name to pin (default: the repo name)")
    p.add_argument(
        "--version",
        metavar="VERSION",
        help="version to pin (default: from the tag or the remote's metadata)",
    )
    p.add_argument("--file", action="append", metavar="FILE", help="only these files")
    p.add_argument(
        "--include", action="append", metavar="GLOB", help="only files matching (repeatable)"
    )
    p.add_argument(
        "--exclude", action="append", metavar="GLOB", help="not files matching (repeatable)"
    )
    p.add_argument("--expect", metavar="sha256:HEX", help="(URLs) the digest the bytes must have")
    p.add_argument("--no-pin", action="store_true", help="fetch only; leave the lockfile alone")
    p.add_argument(
        "--signature",
        metavar="FILE",
        help="check and pin this signature (model_signing's format) instead of what travels",
    )
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="(oci://, http://) allow plain HTTP to a host that is not loopback",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas pull``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.cli._remote import file_line, file_rows  # noqa: PLC0415
    from modelcas.ops.pull import PullRequest, pull  # noqa: PLC0415

    req = PullRequest(
        args.source,
        args.name,
        args.version,
        tuple(args.file or ()),
        tuple(args.addresses),
        Path(args.lock) if args.lock else None,
        pin=not args.no_pin,
        include=tuple(args.include or ()),
        exclude=tuple(args.exclude or ()),
        expect=args.expect,
        plain_http=args.plain_http,
        signature=Path(args.signature) if args.signature else None,
    )
    with byte_bar(None, "downloading", quiet=args.quiet) as bar:
        result = pull(req, open_store(args), progress=bar, total=bar.total if bar else None)
    pinned = result.model is not None
    if args.json:
        emit_json(
            "pull",
            {
                "source": result.source,
                "remote": result.remote,
                "commit": result.commit,
                "validator": result.validator,
                "requires": result.requires,
                "package": result.package,
                "files": file_rows(result.files),
                "pinned": {
                    "model": result.model,
                    "version": result.version,
                    "lock": show_path(result.lock_path or ""),
                    "changed": result.changed,
                    "place": result.place,
                    "signature": {
                        "signer": result.signature.signer,
                        "sha256": result.signature.digest.sha256,
                        "size": result.signature.digest.size,
                    }
                    if result.signature is not None
                    else None,
                }
                if pinned
                else None,
            },
        )
        return 0
    for f in result.files:
        say(args, file_line(f))
    if result.commit is None and result.model is None and result.validator is None:
        say(
            args,
            f"{result.downloaded} object(s) fetched from {result.source}; "
            f"{len(result.files) - result.downloaded} already present",
        )
    elif pinned:
        state = {"pinned": "pinned", "already": "already pinned", "mirror": "added a mirror to"}[
            result.place or "pinned"
        ]
        at = (
            f"commit {result.commit[:12]}"
            if result.commit and not result.commit.startswith("sha256:")
            else result.source
        )
        say(
            args,
            f"{state} {result.model}@{result.version} ({at}) in "
            f"{show_path(result.lock_path or '')}",
        )
        if result.signature is not None:
            say(
                args,
                f"signed by key {result.signature.signer}, trusted; the signature is pinned",
            )
    else:
        say(args, f"fetched {result.source} (not pinned)")
    return 0
