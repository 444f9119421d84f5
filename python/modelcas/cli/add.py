"""``cas add``: put files into the store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, human, open_store, show_path
from modelcas.cli._progress import byte_bar

HELP = "copy (or move) files into the store and print their addresses"
DESCRIPTION = """\
Copy files into the store, hashing them (sha256 and blake3) in the same read pass, and print
each file's address. Content already in the store costs a hash, not a copy. Objects are
written to a temporary file, fsynced and renamed into place, so a crash never leaves a
partial object."""
EPILOG = """\
examples:
  cas add runs/yolo11l/weights/best.pt
  cas add --move checkpoints/          every file under the directory, moved in
  cas add --json best.pt               machine-readable: address, size, blake3, path

Objects that no lockfile or bundle references are removed by `cas gc` (after a grace
period), so pin what you keep with a lockfile."""


def register(sub: Any) -> None:
    """Add ``cas add`` to the command parser."""
    p = add_command(sub, "add", HELP, DESCRIPTION, EPILOG)
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files, or directories to walk")
    p.add_argument("--move", action="store_true", help="move files into the store (no copy)")
    p.add_argument("--json", action="store_true", help="print JSON records")
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
    store = open_store(args)
    files = _files(args.paths)
    total = sum(f.stat().st_size for f in files if f.is_file())
    records = []
    with byte_bar(total, "adding") as bar:
        for f in files:
            result = store.add_file(f, move=args.move, progress=bar)
            d = result.info.digest
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
    return 0
