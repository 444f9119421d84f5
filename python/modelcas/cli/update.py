"""``cas update``: re-pin a model to the newest matching, compatible Hub version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, err, json_help, open_store, say

HELP = "re-pin a model to the newest weights-* tag that matches and is compatible"
DESCRIPTION = """\
Look at the model's Hub repo, find the newest weights-VERSION tag whose version matches
--to (a PEP 440 range on the version without its v) and whose `requires` admits the
installed version of the lockfile's package, pull it (verified) and pin it as latest.
Pre-releases are skipped unless --pre. When a version has `requires` but the package is
unknown or not installed, the check cannot run and update stops (fail closed); opt out
with --no-check-requires."""
EPILOG = f"""\
examples:
  cas update cser-detector
  cas update cser-detector --to '>=1.1,<2'
  cas update cser-detector --pre

{json_help("update", ['"model"', '"status": "updated"|"up-to-date"|"none"', '"version"'])}

exit status: 0 updated or up to date; 1 no version matches and is compatible; 2 usage
error, a compatibility check that cannot run, or a Hub failure."""


def register(sub: Any) -> None:
    """Add ``cas update`` to the command parser."""
    p = add_command(sub, "update", HELP, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--to", metavar="SPEC", help="versions to consider, e.g. '>=1.1,<2'")
    p.add_argument("--pre", action="store_true", help="consider pre-releases too")
    p.add_argument(
        "--no-check-requires",
        action="store_true",
        help="do not check `requires` against the installed package",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas update``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops.update import UpdateRequest, update  # noqa: PLC0415

    req = UpdateRequest(
        args.model,
        args.to,
        pre=args.pre,
        lock=Path(args.lock) if args.lock else None,
        check_requires=not args.no_check_requires,
    )
    with byte_bar(None, "downloading", quiet=args.quiet) as bar:
        result = update(req, open_store(args), progress=bar, total=bar.total if bar else None)
    if args.json:
        emit_json(
            "update",
            {
                "model": result.model,
                "repo": result.repo,
                "status": result.status,
                "version": result.version,
                "skipped": [{"version": v, "why": why} for v, why in result.skipped],
            },
        )
    else:
        for version, why in result.skipped:
            say(args, f"skip {args.model}@{version}: {why}")
        if result.status == "up-to-date":
            say(args, f"{args.model} is up to date at {result.version}")
        elif result.status == "updated" and result.pulled is not None:
            say(args, f"updated {args.model} to {result.version} (commit {result.pulled.commit})")
    if result.status == "none":
        err(
            f"no weights-* tag of {result.repo} matches {args.to or 'any version'} and is "
            f"compatible with the installed package"
        )
        return 1
    return 0
