"""``cas ls``: list the objects in the store."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from modelcas.cli._common import add_command, emit_json, human, open_store, out

HELP = "list the objects in the store"
DESCRIPTION = "List every object: address, size, blake3 and when it was added."
EPILOG = """\
examples:
  cas ls
  cas ls --json | jq '.objects[].address'

--json prints {"schema": "cas.ls/1", "store": DIR, "objects": [{"address", "size", "sha256",
"blake3", "added", "path"}, ...]}"""


def register(sub: Any) -> None:
    """Add ``cas ls`` to the command parser."""
    p = add_command(sub, "ls", HELP, DESCRIPTION, EPILOG)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas ls``."""
    store = open_store(args, create=False)
    objects = store.objects()
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
        emit_json("ls", {"store": os.fsdecode(store.root), "objects": records})
        return 0
    for o in objects:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(o.added))
        b3 = (o.digest.blake3 or "?")[:16]
        out(f"{o.digest.address}  {human(o.digest.size):>10}  blake3:{b3}…  {added}")
    return 0
