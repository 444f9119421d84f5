"""``cas add``: put files into the store."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, human, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.digest import Digest
from modelcas.errors import UsageError

HELP = "copy (or move) files into the store and print their addresses"
DESCRIPTION = """\
Copy files into the store, hashing them (sha256 and blake3) in the same read pass, and print
each file's address. Content already in the store costs a hash, not a copy. Objects are
written to a temporary file, fsynced and renamed into place, so a crash never leaves a
partial object."""
EPILOG = """\
examples:
  cas add runs/yolo11l/weights/best.pt
  cas add best.pt --name cser-detector --version v1.1 --requires '>=0.2,<1'
  cas add --move checkpoints/          every file under the directory, moved in
  cas add --json best.pt               machine-readable: address, size, blake3, path

With --name and --version the files are also pinned in the lockfile (--lock, default the
nearest cas.lock, created in the current directory if there is none): the version's files
are exactly the files given, and `latest` moves to the highest version by PEP 440 order
(v1.10 > v1.9) unless --no-latest. Objects that no lockfile or bundle references are
removed by `cas gc` after a grace period, so pin what you keep."""


def register(sub: Any) -> None:
    """Add ``cas add`` to the command parser."""
    p = add_command(sub, "add", HELP, DESCRIPTION, EPILOG)
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files, or directories to walk")
    p.add_argument("--move", action="store_true", help="move files into the store (no copy)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    pin = p.add_argument_group("pinning in a lockfile")
    pin.add_argument("--name", metavar="MODEL", help="pin the files as this model")
    pin.add_argument("--version", metavar="VERSION", help="...at this version (e.g. v1.1)")
    pin.add_argument("--requires", metavar="SPEC", help="package versions these weights need")
    pin.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    pin.add_argument("--no-latest", action="store_true", help="do not move `latest`")
    pin.add_argument("--force", action="store_true", help="re-pin a version to other content")
    p.set_defaults(run=run)


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink()))
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    """Execute ``cas add``."""
    if (args.name is None) != (args.version is None):
        raise UsageError("--name and --version go together")
    if args.name is None and (args.requires or args.lock or args.no_latest or args.force):
        raise UsageError("--requires, --lock, --no-latest and --force need --name and --version")
    if args.name is not None:
        from modelcas import lockfile  # noqa: PLC0415 (YAML and packaging only when pinning)

        # Refuse a bad name, version or range before any bytes move.
        lockfile.parse_version(args.version, f"{args.name}@{args.version}")
        if args.requires:
            lockfile.parse_requires(args.requires, "--requires")
    store = open_store(args)
    files = _files(args.paths)
    pinned: dict[str, Digest] = {}
    total = sum(f.stat().st_size for f in files if f.is_file())
    records = []
    with byte_bar(total, "adding") as bar:
        for f in files:
            result = store.add_file(f, move=args.move, progress=bar)
            d = result.info.digest
            if f.name in pinned and pinned[f.name] != d:
                raise UsageError(f"two files named {f.name!r} in one version")
            pinned[f.name] = d
            records.append(
                {
                    "path": os.fsdecode(f),
                    "address": d.address,
                    "size": d.size,
                    "blake3": d.blake3,
                    "existed": result.existed,
                }
            )
            if not args.json:
                note = "  (already stored)" if result.existed else ""
                print(f"{d.address}  {human(d.size):>10}  {show_path(f)}{note}", flush=True)
    if args.json:
        print(json.dumps(records, indent=2))
    if args.name is not None:
        from modelcas.registry import Registry  # noqa: PLC0415

        path = lockfile.locate(args.lock, must_exist=False)
        with lockfile.edit(path) as lock:
            changed = lock.pin(
                args.name,
                args.version,
                pinned,
                requires=args.requires,
                set_latest=not args.no_latest,
                force=args.force,
            )
            latest = lock.models[args.name].latest
        Registry(lock, store).register()
        state = "pinned" if changed else "already pinned"
        print(
            f"{state} {args.name}@{args.version} in {show_path(path)} (latest: {latest})",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0
