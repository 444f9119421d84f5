"""``cas pull``: fetch a version from the Hub (and pin it), or objects from a shared directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import (
    add_command,
    emit_json,
    human,
    json_help,
    open_store,
    say,
    show_path,
)

HELP = "fetch a Hub version or an OCI artifact (and pin it), or objects from a shared directory"
DESCRIPTION = """\
From the Hub: resolve the tag to its commit, download each file by that commit while
hashing it, check every byte against the Hub's LFS sha256 (and against the lockfile when it
already pins the version), ingest into the store and pin the version: commit, size, sha256
and blake3. Nothing is downloaded for content already in the store. A truncated or
corrupted download leaves nothing behind.

Bytes the Hugging Face cache already holds (an earlier `hf download`) are taken from it,
verified, without downloading, also with HF_HUB_OFFLINE=1; a download is left where
`hf_hub_download` finds it.

From an OCI registry (oci://HOST[:PORT]/REPO:TAG or @sha256:...): resolve the tag to the
manifest digest, download each layer while hashing it, refuse any byte that does not match
its digest, and pin the version (source oci://HOST:PORT/REPO@sha256:<manifest>).

From a shared directory (a path or file:// URL with the store's layout): fetch the given
addresses, or every file the lockfile pins that is missing locally, verified on arrival."""
EPILOG = f"""\
examples:
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1 --name cser-detector --file best.pt
  cas pull oci://registry.lab.org/models/cser-detector:v1.1
  cas pull /lab/shared/cas                   everything cas.lock pins, from the lab server
  cas pull file:///lab/shared/cas sha256:9f86d0

{json_help("pull", ['"source": SOURCE', '"commit": SHA', '"files": [...]', '"pinned": ...'])}

exit status: 0 fetched (and pinned); 1 other bytes than pinned, or a file is missing;
2 usage error, or the remote failed."""


def register(sub: Any) -> None:
    """Add ``cas pull`` to the command parser."""
    p = add_command(sub, "pull", HELP, DESCRIPTION, EPILOG)
    p.add_argument("source", metavar="SOURCE", help="hf://ORG/NAME@TAG, or a directory remote")
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="(directory remotes) objects")
    p.add_argument("--name", metavar="MODEL", help="model name to pin (default: the repo name)")
    p.add_argument(
        "--version",
        metavar="VERSION",
        help="version to pin (default: from the weights-VERSION tag)",
    )
    p.add_argument("--file", action="append", metavar="FILE", help="only these files")
    p.add_argument("--no-pin", action="store_true", help="fetch only; leave the lockfile alone")
    p.add_argument(
        "--plain-http", action="store_true", help="(oci://) the registry speaks HTTP, not HTTPS"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas pull``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops.pull import PullRequest, pull  # noqa: PLC0415

    if args.source.startswith("oci://"):
        from modelcas.cli import _oci  # noqa: PLC0415 (only for oci://)

        return _oci.pull(args)

    req = PullRequest(
        args.source,
        args.name,
        args.version,
        tuple(args.file or ()),
        tuple(args.addresses),
        Path(args.lock) if args.lock else None,
        pin=not args.no_pin,
    )
    with byte_bar(None, "downloading", quiet=args.quiet) as bar:
        result = pull(req, open_store(args), progress=bar, total=bar.total if bar else None)
    pinned = result.model is not None
    if args.json:
        emit_json(
            "pull",
            {
                "source": result.source,
                "commit": result.commit,
                "files": [
                    {
                        "name": f.name,
                        "size": f.digest.size,
                        "sha256": f.digest.sha256,
                        "blake3": f.digest.blake3,
                        "downloaded": f.downloaded,
                        "origin": f.origin,
                    }
                    for f in result.files
                ],
                "pinned": {
                    "model": result.model,
                    "version": result.version,
                    "lock": show_path(result.lock_path or ""),
                    "changed": result.changed,
                }
                if pinned
                else None,
            },
        )
        return 0
    for f in result.files:
        state = {"store": "present   ", "download": "downloaded", "hf-cache": "from the HF cache"}[
            f.origin
        ]
        note = "" if f.origin == "store" else ", verified"
        say(
            args,
            f"{state}  {f.name}  sha256:{f.digest.sha256[:16]}…  ({human(f.digest.size)}{note})",
        )
    if result.commit is None:
        say(
            args,
            f"{result.downloaded} object(s) fetched from {result.source}; "
            f"{len(result.files) - result.downloaded} already present",
        )
    elif pinned:
        state = "pinned" if result.changed else "already pinned"
        say(
            args,
            f"{state} {result.model}@{result.version} (commit {result.commit[:12]}) in "
            f"{show_path(result.lock_path or '')}",
        )
    return 0
