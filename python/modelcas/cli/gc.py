"""``cas gc``: delete what nothing references."""

from __future__ import annotations

import argparse
import os
from typing import Any

from modelcas.cli._common import (
    add_command,
    emit_json,
    human,
    json_help,
    open_store,
    say,
    seconds,
    show_path,
)
from modelcas.store import DEFAULT_GRACE

HELP = "delete objects no lockfile or bundle references, and stale temporary files"
DESCRIPTION = """\
Delete objects that no registered root (a lockfile that `cas sync`/`cas add --name` used,
or a bundle that was opened) references, and leftovers of interrupted writes: temporary
files in the store, and `.NAME.<hex>.tmp` / `.NAME.XXXX.partial` files beside registered
lockfiles and bundles. Unreferenced objects and leftovers younger than the grace period
are kept. A pinned object is never deleted, whatever the grace, even when the pin is written
while gc runs (docs/store.md). Roots whose file is gone are forgotten. If any root cannot be
read, gc stops and nothing is deleted.

A root whose file is gone (a project directory moved or deleted) does not free the only copy
of anything: the objects it pinned when last seen that have no remote source (added or moved
in, never pushed) are kept, and gc says so, until `cas gc --forget PATH` releases them.
Objects with a remote source may go, since `cas sync` brings them back (docs/store.md)."""
EPILOG = f"""\
examples:
  cas gc --dry-run          what would be deleted
  cas gc --grace 0          delete every unreferenced object now
  cas gc --forget old/cas.lock      release what a lockfile that is gone kept

{json_help("gc", ['"dry_run"', '"objects": [...]', '"kept_for_vanished": [...]', '"bytes_freed"'])}

exit status: 0 done; 2 a root could not be read (nothing deleted), or a usage error."""


def register(sub: Any) -> None:
    """Add ``cas gc`` to the command parser."""
    p = add_command(sub, "gc", HELP, DESCRIPTION, EPILOG)
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    p.add_argument(
        "--grace",
        type=seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"keep unreferenced objects younger than this (default {DEFAULT_GRACE:.0f})",
    )
    p.add_argument(
        "--forget",
        action="append",
        default=[],
        metavar="PATH",
        help="forget a root whose file is gone, releasing what it kept (repeatable)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas gc``."""
    from modelcas.ops.gc import collect  # noqa: PLC0415

    report = collect(
        open_store(args, create=False), grace=args.grace, dry_run=args.dry_run, forget=args.forget
    )
    if args.json:
        emit_json(
            "gc",
            {
                "dry_run": args.dry_run,
                "objects": [
                    {"sha256": o.digest.sha256, "size": o.digest.size} for o in report.objects
                ],
                "temp_files": [os.fsdecode(p) for p in report.temp_files],
                "forgotten_roots": [os.fsdecode(p) for p in report.stale_roots],
                "restored": report.restored,
                "bytes_freed": report.bytes_freed,
                "kept_referenced": report.kept_referenced,
                "kept_young": report.kept_young,
                "forgot": [os.fsdecode(p) for p in report.forgotten],
                "kept_for_vanished": [
                    {"root": os.fsdecode(v.path), "objects": v.objects, "bytes": v.bytes}
                    for v in report.vanished
                ],
            },
        )
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for info in report.objects:
        say(args, f"{verb} {info.digest.address}  {human(info.digest.size)}")
    for tmp in report.temp_files:
        say(args, f"{verb} leftover {show_path(tmp)}")
    forgot = "would forget" if args.dry_run else "forgot"
    for root in report.forgotten:
        say(args, f"{forgot} root {show_path(root)} and what it kept")
    for root in report.stale_roots:
        say(args, f"{forgot} root {show_path(root)} (file is gone)")
    for v in report.vanished:
        gone = show_path(v.path)
        say(
            args,
            f"kept {v.objects} object(s), {human(v.bytes)}, last pinned by {gone}, which is "
            f"gone; `cas gc --forget {gone}` releases them",
        )
    if report.restored:
        say(args, f"put back {report.restored} object(s) an interrupted gc had moved aside")
    say(
        args,
        f"{verb} {len(report.objects)} object(s), {human(report.bytes_freed)}, and "
        f"{len(report.temp_files)} temporary file(s); kept {report.kept_referenced} "
        f"referenced and {report.kept_young} recent object(s)",
    )
    return 0
