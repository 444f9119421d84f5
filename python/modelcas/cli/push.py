"""``cas push``: copy objects to a shared directory remote."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas import lockfile
from modelcas.cli._common import add_command, open_store
from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile
from modelcas.remotes import DirRemote, parse_source

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
  cas push file:///lab/shared/cas sha256:9f86d0..."""


def register(sub: Any) -> None:
    """Add ``cas push`` to the command parser."""
    p = add_command(sub, "push", HELP, DESCRIPTION, EPILOG)
    p.add_argument("dest", metavar="DIR_OR_FILE_URL", help="the directory remote")
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="objects (default: pins)")
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas push``."""
    scheme, location, _ = parse_source(args.dest)
    if scheme != "file":
        raise UsageError(
            "cas push takes a directory remote",
            hint="to publish to the Hub or an OCI registry use `cas publish` (`--to oci://…`)",
        )
    store = open_store(args)
    remote = DirRemote(location)
    if args.addresses:
        digests = [store.info(store.resolve(a)).digest for a in args.addresses]
    else:
        digests = [d for *_, d in Lockfile.load(lockfile.locate(args.lock)).entries()]
    sent = sum(remote.push(d, store) for d in digests)
    print(f"{sent} object(s) copied to {remote.url}; {len(digests) - sent} already there")
    return 0
