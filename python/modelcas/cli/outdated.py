"""``cas outdated``: which models have newer versions on their remote (``cas update --dry-run``)."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli import update
from modelcas.cli._common import add_command, json_help

HELP = "list models whose remote has newer versions (cas update --dry-run; nothing changes)"
DESCRIPTION = """\
List, for each model (or MODEL), the versions its remote lists that are newer than the
lockfile's latest, and whether each is compatible: what `cas update` would pin, as
`pip list --outdated` does for packages. Nothing is fetched or written. The same as
`cas update --dry-run`, with the same options."""
EPILOG = f"""\
examples:
  cas outdated
  cas outdated cser-detector --pre

{json_help("outdated", ['"dry_run": true', '"models": [{"model", "status", "newer", ...}]'])}

exit status: 0 listed (newer versions or not); 2 usage error, a compatibility check that
cannot run, or a remote failure."""


def register(sub: Any) -> None:
    """Add ``cas outdated`` to the command parser."""
    p = add_command(sub, "outdated", HELP, DESCRIPTION, EPILOG)
    update.add_options(p)
    p.set_defaults(run=run, dry_run=True)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas outdated``."""
    return update.run(args)
