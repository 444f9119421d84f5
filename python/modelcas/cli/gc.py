"""``cas gc``: delete what nothing references."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas import bundle, lockfile  # noqa: F401 (register the readers of gc roots)
from modelcas.cli._common import add_command, human, open_store, show_path
from modelcas.store import DEFAULT_GRACE

HELP = "delete objects no lockfile or bundle references, and stale temporary files"
DESCRIPTION = """\
Delete objects that no registered root (a lockfile that `cas sync`/`cas add --name` used,
or a bundle that was opened) references, and leftovers of interrupted writes. Anything
modified within the grace period is kept, so gc never removes another process's write in
flight. Roots whose file is gone are forgotten. If any root cannot be read, nothing is
deleted."""
EPILOG = """\
examples:
  cas gc --dry-run
  cas gc --grace 0          no grace period (only when nothing else is writing)"""


def register(sub: Any) -> None:
    """Add ``cas gc`` to the command parser."""
    p = add_command(sub, "gc", HELP, DESCRIPTION, EPILOG)
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    p.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"keep anything younger than this (default {DEFAULT_GRACE:.0f})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas gc``."""
    store = open_store(args)
    keep, stale = store.referenced()
    report = store.gc(keep, grace=args.grace, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for info in report.objects:
        print(f"{verb} {info.digest.address}  {human(info.digest.size)}")
    for tmp in report.temp_files:
        print(f"{verb} leftover {show_path(tmp)}")
    for root in stale:
        print(f"forgot root {show_path(root.path)} (file is gone)")
    print(
        f"{verb} {len(report.objects)} object(s), {human(report.bytes_freed)}, and "
        f"{len(report.temp_files)} temporary file(s); kept {len(keep)} referenced and "
        f"{report.kept_young} recent object(s)"
    )
    return 0
