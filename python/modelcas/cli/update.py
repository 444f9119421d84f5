"""``cas update``: re-pin models to the newest matching, compatible version their remote lists."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, err, json_help, open_store, say

HELP = "re-pin models to the newest version their remote lists that matches and is compatible"
DESCRIPTION = """\
Look at each model's remote (its Hub repo's weights-* tags, its OCI repository's tags, its
directory's catalog), find the newest version that matches --to (a PEP 440 range on the
version without its v) and whose `requires` admits the installed version of the lockfile's
package, pull it (verified) and pin it as latest. Versions compare by PEP 440 value (v1.0
is 1.0.0). Pre-releases are skipped unless --pre (then one may become latest). Without
MODEL, every model whose remote lists versions. --dry-run lists the newer versions, and
which of them are compatible, without changing anything. When a version has `requires` but
the package is unknown or not installed, the check cannot run and update stops (fail
closed); opt out with --no-check-requires."""
EPILOG = f"""\
examples:
  cas update cser-detector
  cas update --dry-run                 which models have newer versions (nothing changes)
  cas update cser-detector --to '>=1.1,<2'
  cas update cser-detector --pre

{json_help("update", ['"dry_run"', '"models": [{"model", "status", "current", "version", ...}]'])}

exit status: 0 updated, up to date, or (--dry-run) listed; 1 no version of MODEL matches
and is compatible; 2 usage error, a compatibility check that cannot run, or a remote
failure."""


def register(sub: Any) -> None:
    """Add ``cas update`` to the command parser."""
    p = add_command(sub, "update", HELP, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL", nargs="?", help="the model (default: every model)")
    p.add_argument("--to", metavar="SPEC", help="versions to consider, e.g. '>=1.1,<2'")
    p.add_argument("--pre", action="store_true", help="consider pre-releases too")
    p.add_argument("--dry-run", action="store_true", help="list newer versions, change nothing")
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
        dry_run=args.dry_run,
    )
    with byte_bar(None, "downloading", quiet=args.quiet) as bar:
        results = update(req, open_store(args), progress=bar, total=bar.total if bar else None)
    if args.json:
        emit_json(
            "update",
            {
                "dry_run": args.dry_run,
                "models": [
                    {
                        "model": r.model,
                        "repo": r.repo,
                        "status": r.status,
                        "current": r.current,
                        "version": r.version,
                        "commit": r.pulled.commit if r.pulled else None,
                        "newer": [
                            {"version": c.version, "status": c.status, "why": c.why}
                            for c in r.newer
                        ],
                        "skipped": [{"version": v, "why": why} for v, why in r.skipped],
                    }
                    for r in results
                ],
            },
        )
    else:
        for r in results:
            _say(args, r)
    failed = [r for r in results if r.status == "none" and args.model is not None]
    if failed and not args.dry_run:
        r = failed[0]
        err(
            f"no version of {r.model} at {r.repo} matches {args.to or 'any version'} and is "
            f"compatible with the installed package"
        )
        return 1
    return 0


def _say(args: argparse.Namespace, r: Any) -> None:
    if args.dry_run:
        for c in r.newer:
            note = f": {c.why}" if c.why else ""
            say(args, f"{r.model}: {c.version} is newer than {r.current} ({c.status}{note})")
        state = {
            "outdated": f"would update to {r.version}",
            "up-to-date": f"up to date at {r.current}",
            "none": "nothing newer is compatible",
            "not-listed": "its remote lists no versions (a plain URL)",
        }.get(r.status, r.status)
        say(args, f"{r.model}: {state}")
        return
    for version, why in r.skipped:
        say(args, f"skip {r.model}@{version}: {why}")
    if r.status == "up-to-date":
        say(args, f"{r.model} is up to date at {r.version}")
    elif r.status == "updated" and r.pulled is not None:
        commit = r.pulled.commit
        at = f"commit {commit}" if commit and not commit.startswith("sha256:") else r.pulled.source
        say(args, f"updated {r.model} to {r.version} ({at})")
    elif r.status == "not-listed":
        say(args, f"{r.model}: its remote lists no versions (a plain URL); not checked")
