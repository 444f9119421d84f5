"""``cas get``: place an object into a project."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import (
    add_command,
    add_ref_options,
    emit_json,
    json_help,
    open_store,
    say,
    show_path,
)
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError
from modelcas.store import LINK_MODES, Store

HELP = "place a verified object or a whole pinned version at a path (reflink, hardlink, copy)"
DESCRIPTION = """\
Verify an object and place it at DEST. --link auto (the default) uses a reflink where the
filesystem can (an independent copy-on-write copy, instant), else a hardlink to the
read-only object (not as root: permissions do not stop root), else a copy. No mode lets a
write through DEST change the object: objects are read-only, and `cas verify` catches
anything that gets through anyway.

When DEST is a directory (it ends in / or exists), every file of the version is written
under its pinned name, as `hf download --local-dir` does; --include/--exclude keep or drop
files by glob on the pinned name (`*` crosses folders; `sub/` means everything below sub).
Every file is verified before the first is placed."""
EPILOG = f"""\
examples:
  cas get cser-detector@v1.1 -o weights/best.pt
  cas get sha256:9f86d0 -o weights/v1.0.pt
  cas get sha256:9f86d0 -o best.pt --link symlink
  cas get tiny-bert@v1 -o tiny-bert/     every file, under its pinned name
  cas get tiny-bert@v1 -o tiny-bert/ --include '*.json' --exclude '*.index.json'

{json_help("get", ['"dest"', '"mode"', '"label"', '"address"', '"size"', '"sha256"', '"blake3"'])};
with -o DIR/: {{"schema": "cas.get/1", "label", "files": [{{"name", "dest", "mode", "address"}}],
"skipped"}}

exit status: 0 placed; 1 missing, corrupt or incompatible; 2 usage error or DEST exists."""


def register(sub: Any) -> None:
    """Add ``cas get`` to the command parser."""
    p = add_command(sub, "get", HELP, DESCRIPTION, EPILOG)
    add_ref_options(p)
    p.add_argument(
        "-o", "--output", required=True, metavar="DEST", help="where to place it (DIR/: all files)"
    )
    p.add_argument(
        "--include",
        nargs="+",
        action="extend",
        default=[],
        metavar="GLOB",
        help="(DIR/) only files whose pinned name matches one of these",
    )
    p.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="GLOB",
        help="(DIR/) leave out files whose pinned name matches one of these",
    )
    p.add_argument("--link", choices=LINK_MODES, default="auto", help="how to place it")
    p.add_argument("--force", action="store_true", help="replace DEST if it has other content")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas get``."""
    from modelcas.ops.resolve import resolve  # noqa: PLC0415
    from modelcas.ops.versions import is_directory_target  # noqa: PLC0415

    # A bare address has nothing to fetch: only a pinned model may fill a new store.
    store = open_store(args, create=not args.ref.startswith("sha256:"))
    if is_directory_target(args.output):
        return _into_directory(args, store)
    if args.include or args.exclude:
        raise UsageError("--include/--exclude choose files for a directory: give -o DIR/")
    # Fetched if missing (a bar of unknown size, shown only if that takes a while); the size
    # and the store's record are checked here, the bytes just below.
    with byte_bar(None, "fetching", quiet=args.quiet) as bar:
        found = resolve(
            args.ref,
            store=store,
            lock=args.lock,
            file=args.file,
            check_requires=not args.no_check_requires,
            verify=False,
            progress=bar,
        )
    d = found.digest
    # Verified (one read), then copied (another) unless linked.
    total = d.size * (2 if args.link == "copy" else 1)
    with byte_bar(total, "verifying and placing", quiet=args.quiet) as bar:
        mode = store.place(
            d.sha256, args.output, link=args.link, force=args.force, verify=True, progress=bar
        )
    if args.json:
        emit_json(
            "get",
            {
                "dest": show_path(args.output),
                "mode": mode,
                "label": found.label,
                "address": d.address,
                "size": d.size,
                "sha256": d.sha256,
                "blake3": d.blake3,
            },
        )
        return 0
    say(args, f"{show_path(args.output)}  ({mode} of {found.label}, {d.address})")
    return 0


def _into_directory(args: argparse.Namespace, store: Store) -> int:
    from modelcas.ops.versions import get  # noqa: PLC0415

    result = get(
        args.ref,
        args.output,
        store=store,
        lock=args.lock,
        file=args.file,
        include=args.include,
        exclude=args.exclude,
        link=args.link,
        force=args.force,
        check_requires=not args.no_check_requires,
    )
    if args.json:
        files = [
            {"name": f.name, "dest": show_path(f.path), "mode": f.mode, "address": f.digest.address}
            for f in result.files
        ]
        emit_json("get", {"label": result.label, "files": files, "skipped": result.skipped})
        return 0
    for f in result.files:
        say(args, f"{show_path(f.path)}  ({f.mode} of {result.label} {f.name}, {f.digest.address})")
    if result.skipped:
        say(args, f"left out by --include/--exclude: {', '.join(result.skipped)}")
    return 0
