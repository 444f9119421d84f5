"""``cas sync``: make every pinned file present and verified."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import add_command, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.registry import open_lock

HELP = "fetch and verify every file the lockfile pins"
DESCRIPTION = """\
Make every file pinned in the lockfile present and verified in the store, fetching missing
ones from their source (a shared directory or the Hugging Face Hub) and checking every byte
against the pin. The lockfile is registered as a gc root, so `cas gc` keeps its objects."""
EPILOG = """\
examples:
  cas sync
  cas sync --lock analysis/cas.lock
  HF_HUB_OFFLINE=1 cas sync           only what is already cached"""


def register(sub: Any) -> None:
    """Add ``cas sync`` to the command parser."""
    p = add_command(sub, "sync", HELP, DESCRIPTION, EPILOG)
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas sync``."""
    registry = open_lock(args.lock, store=open_store(args))
    missing = sum(p.digest.size for p in registry.pins() if not registry.store.has(p.digest.sha256))
    with byte_bar(missing, "fetching") as bar:
        report = registry.sync(progress=bar)
    for pin in report.fetched:
        print(f"fetched  {pin.label}  sha256:{pin.digest.sha256[:16]}…")
    path = show_path(registry.lock.path or "")
    print(
        f"{len(report.present) + len(report.fetched)} pinned file(s) present and verified "
        f"({len(report.fetched)} fetched) for {path}"
    )
    return 0
