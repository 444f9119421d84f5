"""``cas push``: copy objects to a shared directory remote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, open_store, say

HELP = "copy pinned objects to a shared directory (lab server, NFS)"
DESCRIPTION = """\
Copy objects to a directory remote that uses the store's layout: every file the lockfile
pins, or the given addresses. Each object is verified on the way out (the copy is hashed
and must match its address) and written by rename, so several machines can push to the
same directory at once without corrupting it. To publish to the Hugging Face Hub, use
`cas publish`."""
EPILOG = """\
examples:
  cas push /lab/shared/cas
  cas push file:///lab/shared/cas sha256:9f86d0

exit status: 0 copied; 1 a local object is corrupt or missing; 2 usage error."""


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
            open_store(args),
            addresses=tuple(args.addresses),
            lock=Path(args.lock) if args.lock else None,
            progress=bar,
            total=bar.total if bar else None,
        )
    say(
        args,
        f"{len(result.sent)} object(s) copied to {result.url}; {len(result.present)} already there",
    )
    return 0
