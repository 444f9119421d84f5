"""``cas sync``: make every pinned file present and verified."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import (
    add_command,
    detail,
    emit_json,
    json_help,
    open_store,
    say,
    show_path,
)

HELP = "fetch and verify every file the lockfile pins"
DESCRIPTION = """\
Make every file pinned in the lockfile present and verified in the store, fetching missing
ones from their source (a shared directory or the Hugging Face Hub) and checking every byte
against the pin. A stored copy that is corrupt (as `cas verify` reports it) is moved to the
store's quarantine/ and fetched again, where its version has a source. The lockfile is
registered as a gc root first, so `cas gc` keeps its objects. Only bytes move: `requires`
is not read, so a cache can be warmed on a login node or in CI without the package
installed."""
EPILOG = f"""\
examples:
  cas sync
  cas sync --lock analysis/cas.lock
  HF_HUB_OFFLINE=1 cas sync           only what is already stored

{json_help("sync", ['"lock": PATH', '"present": [...]', '"fetched": [...]', '"repaired": [...]'])}

exit status: 0 all present and verified; 1 a file is missing or corrupt and cannot be
fetched; 2 usage error or a remote failed."""


def register(sub: Any) -> None:
    """Add ``cas sync`` to the command parser."""
    p = add_command(sub, "sync", HELP, DESCRIPTION, EPILOG)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas sync``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops.sync import missing_bytes, sync  # noqa: PLC0415
    from modelcas.registry import open_lock  # noqa: PLC0415

    registry = open_lock(args.lock, store=open_store(args))
    with byte_bar(missing_bytes(registry), "fetching", quiet=args.quiet) as bar:
        report = sync(registry, progress=bar)
    path = show_path(registry.lock.path or "")
    if args.json:

        def rows(pins: list[Any]) -> list[dict[str, Any]]:
            return [
                {"model": p.model, "version": p.version, "file": p.file, "sha256": p.digest.sha256}
                for p in pins
            ]

        repaired = rows([p for p, _ in report.repaired])
        for row, (_, moved) in zip(repaired, report.repaired, strict=True):
            row["quarantined"] = show_path(moved)
        doc = {"lock": path, "present": rows(report.present), "fetched": rows(report.fetched)}
        emit_json("sync", {**doc, "repaired": repaired})
        return 0
    for pin, moved in report.repaired:
        say(args, f"repaired {pin.label}  the corrupt copy is in quarantine: {show_path(moved)}")
    for pin in report.fetched:
        say(args, f"fetched  {pin.label}  sha256:{pin.digest.sha256[:16]}…")
    for pin in report.present:
        detail(args, f"present  {pin.label}")
    fetched = len(report.fetched) + len(report.repaired)
    say(
        args,
        f"{len(report.present) + fetched} pinned file(s) present and verified "
        f"({fetched} fetched) for {path}",
    )
    return 0
