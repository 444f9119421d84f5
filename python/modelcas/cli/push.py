"""``cas push``: copy objects to a shared directory remote, and say there what they are."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, json_help, open_store, say, show_path

HELP = "copy pinned objects to a shared directory (lab server, NFS)"
DESCRIPTION = """\
Copy objects to a directory remote that uses the store's layout: every file the lockfile
pins, or the given addresses. Each object is verified on the way out (the copy is hashed
and must match its address) and written by rename, so several machines can push to the
same directory at once without corrupting it.

Pushing the lockfile's pins also records each version in the directory's catalog
(catalog/MODEL/VERSION.json: files, sizes, digests, requires, package; created once, never
changed), so `cas pull DIR --name MODEL`, `cas update` and `cas verify --remote` work with
it, and lists the directory in the lockfile as a mirror of every version pushed (its source
where it had none), so `cas sync` elsewhere can fetch from it. To publish to the Hugging Face
Hub or a registry, use `cas publish`."""
EPILOG = f"""\
examples:
  cas push /lab/shared/cas
  cas push file:///lab/shared/cas sha256:9f86d0

{json_help("push", ['"url"', '"sent": [...]', '"present": [...]', '"recorded": [...]'])}

exit status: 0 copied; 1 a local object is corrupt or missing, or the catalog holds a
version with other files; 2 usage error."""


def register(sub: Any) -> None:
    """Add ``cas push`` to the command parser."""
    p = add_command(sub, "push", HELP, DESCRIPTION, EPILOG)
    p.add_argument("dest", metavar="DIR_OR_FILE_URL", help="the directory remote")
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="objects (default: pins)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas push``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops.pull import push  # noqa: PLC0415

    with byte_bar(None, "pushing", quiet=args.quiet) as bar:
        result = push(
            args.dest,
            open_store(args, create=False),  # push only reads the store
            addresses=tuple(args.addresses),
            lock=Path(args.lock) if args.lock else None,
            progress=bar,
            total=bar.total if bar else None,
        )
    if args.json:
        emit_json(
            "push",
            {
                "url": result.url,
                "sent": [d.address for d in result.sent],
                "present": [d.address for d in result.present],
                "recorded": result.recorded,
                "mirrored": result.mirrored,
                "signed": result.signed,
                "lock": show_path(result.lock_path) if result.lock_path else None,
            },
        )
        return 0
    say(
        args,
        f"{len(result.sent)} object(s) copied to {result.url}; {len(result.present)} already there",
    )
    if result.recorded:
        say(args, f"recorded in its catalog: {', '.join(result.recorded)}")
    if result.signed:
        say(args, f"signatures beside their catalog entries: {', '.join(result.signed)}")
    if result.mirrored and result.lock_path is not None:
        say(
            args,
            f"{show_path(result.lock_path)} now lists {result.url} for "
            f"{', '.join(result.mirrored)}",
        )
    return 0
