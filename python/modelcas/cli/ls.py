"""``cas ls``: list the objects in the store."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from modelcas.cli._common import add_command, human, open_store

HELP = "list the objects in the store"
DESCRIPTION = "List every object: address, size, blake3 and when it was added."
EPILOG = """\
examples:
  cas ls
  cas ls --json | jq '.[].address'"""


def register(sub: Any) -> None:
    """Add ``cas ls`` to the command parser."""
    p = add_command(sub, "ls", HELP, DESCRIPTION, EPILOG)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas ls``."""
    objects = open_store(args, create=False).objects()
    if args.json:
        records = [
            {
                "address": o.digest.address,
                "size": o.digest.size,
                "sha256": o.digest.sha256,
                "blake3": o.digest.blake3,
                "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(o.added)),
                "path": os.fsdecode(o.path),
            }
            for o in objects
        ]
        print(json.dumps(records, indent=2))
        return 0
    for o in objects:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(o.added))
        b3 = (o.digest.blake3 or "?")[:16]
        print(f"{o.digest.address}  {human(o.digest.size):>10}  blake3:{b3}…  {added}")
    return 0
