"""``cas store``: facts about the store itself."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from modelcas.cli._common import (
    add_action,
    add_command,
    emit_json,
    human,
    open_store,
    out,
    show_path,
)
from modelcas.store import FORMAT

HELP = "show the store's location, format and size"
DESCRIPTION = "Show where the store is, its format version, and what it holds."
EPILOG = """\
The store is --store DIR, else $MODELCAS_HOME, else $XDG_CACHE_HOME/modelcas, else
~/.cache/modelcas.

examples:
  cas store info
  cas --store /lab/shared/cas store info --json"""


def register(sub: Any) -> None:
    """Add ``cas store`` to the command parser."""
    p = add_command(sub, "store", HELP, DESCRIPTION, EPILOG)
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    info = add_action(
        actions,
        "info",
        "location, format, object count and bytes",
        "Show where the store is, its format, whether it is shared, how many objects and bytes "
        "it holds, and how many roots, temporary and quarantined files it has.",
        "examples:\n  cas store info\n  cas --store /lab/shared/cas store info --json\n\n"
        '--json prints {"schema": "cas.store-info/1", "root", "format", "shared", "objects", '
        '"bytes", "temp_files", "quarantined", "roots"}',
    )
    info.set_defaults(run=run_info)
    init = add_action(
        actions,
        "init",
        "create the store (--shared: usable by its group)",
        "Create the store, or make an existing one shared. A shared store's directories are "
        "group-writable and setgid (02775), as git's core.sharedRepository does, so that a "
        "lab group can add to it; objects stay read-only (0444).",
        "examples:\n  cas --store /lab/shared/cas store init --shared\n\n"
        '--json prints {"schema": "cas.store-init/1", "root", "format", "shared"}',
    )
    init.add_argument("--shared", action="store_true", help="group-writable, setgid dirs")
    init.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    """Execute ``cas store init``."""
    store = open_store(args)
    if args.shared:
        store.make_shared()
    kind = "shared (group-writable, setgid)" if store.shared else "private"
    if args.json:
        doc = {"root": os.fsdecode(store.root), "format": FORMAT, "shared": store.shared}
        emit_json("store-init", doc)
        return 0
    out(f"store at {show_path(store.root)}: format {FORMAT}, {kind}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Execute ``cas store info``."""
    s = open_store(args, create=False).stats()
    if args.json:
        emit_json("store-info", {**dataclasses.asdict(s), "root": os.fsdecode(s.root)})
        return 0
    out(f"location     {show_path(s.root)}")
    out(f"format       {s.format}{' (shared)' if s.shared else ''}")
    out(f"objects      {s.objects} ({human(s.bytes)}, {s.bytes} bytes)")
    out(f"roots        {s.roots} lockfile(s)/bundle(s) pinning objects")
    out(f"temporary    {s.temp_files} file(s) from writes in flight or interrupted")
    out(f"quarantined  {s.quarantined} object(s)")
    return 0
