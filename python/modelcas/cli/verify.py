"""``cas verify``: re-check objects against their digests."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import add_command, err, human, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError

HELP = "re-check stored objects (blake3; --deep adds sha256)"
DESCRIPTION = """\
Re-hash objects and compare them with their recorded size and blake3 (--deep also
recomputes sha256, which must equal the object's name). Every problem is printed with the
object, its path, and the expected and actual value. Nothing is ever repaired silently:
--repair moves bad objects to the store's quarantine so that the next fetch replaces them."""
EPILOG = """\
examples:
  cas verify --lock               every file the nearest cas.lock pins (before a GPU run)
  cas verify                      every object in the store
  cas verify --deep sha256:9f86d0
  cas verify --repair

exit status: 0 all intact, 1 a problem was found, 2 usage error."""


def register(sub: Any) -> None:
    """Add ``cas verify`` to the command parser."""
    p = add_command(sub, "verify", HELP, DESCRIPTION, EPILOG)
    p.add_argument("refs", nargs="*", metavar="ADDRESS", help="objects to check (default: all)")
    p.add_argument("--deep", action="store_true", help="recompute sha256 as well as blake3")
    p.add_argument("--repair", action="store_true", help="quarantine bad objects")
    p.add_argument(
        "--lock",
        nargs="?",
        const="",
        metavar="PATH",
        help="check the files a lockfile pins instead (default: the nearest cas.lock)",
    )
    p.set_defaults(run=run)


def run_lock(args: argparse.Namespace) -> int:
    """``cas verify --lock``: every pinned file, one line each."""
    from modelcas.registry import open_lock  # noqa: PLC0415 (YAML only for --lock)

    registry = open_lock(args.lock or None, store=open_store(args))
    problems = registry.verify(deep=args.deep)
    bad = {(p.pin.model, p.pin.version, p.pin.file) for p in problems}
    for pin in registry.pins():
        if (pin.model, pin.version, pin.file) not in bad:
            print(f"OK      {pin.label}")
    for problem in problems:
        print(problem)
        if args.repair and problem.kind == "corrupt":
            moved = registry.store.quarantine(problem.pin.digest.sha256)
            if moved is not None:
                print(f"  moved to {show_path(moved)}; run `cas sync` to fetch it again")
    if problems:
        missing = sum(p.kind == "missing" for p in problems)
        err(
            f"{len(problems)} pinned file(s) failed: {missing} missing (run `cas sync`), "
            f"{len(problems) - missing} corrupt or mismatched"
        )
        return 1
    print(
        f"all {len(registry.pins())} pinned file(s) intact ({show_path(registry.lock.path or '')})"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute ``cas verify``."""
    if args.lock is not None:
        if args.refs:
            raise UsageError("give addresses or --lock, not both")
        return run_lock(args)
    store = open_store(args)
    targets = [store.resolve(r) for r in args.refs] if args.refs else None
    infos = [store.info(h) for h in targets if store.has(h)] if targets else store.objects()
    total = sum(i.digest.size for i in infos)
    wanted = targets if targets is not None else [i.digest.sha256 for i in infos]
    with byte_bar(total, "verifying") as bar:
        problems = store.verify(wanted, deep=args.deep, progress=bar)
    problems += store.audit(targets)
    for problem in problems:
        head = {"missing": "MISSING", "writable": "UNSAFE "}.get(problem.kind, "CORRUPT")
        print(f"{head} {problem}")
        if args.repair and problem.kind not in ("missing", "writable"):
            moved = store.quarantine(problem.sha256)
            if moved is not None:
                print(f"  moved to {show_path(moved)}; fetch it again to restore it")
    count = len(targets) if targets is not None else len(infos)
    if problems:
        err(f"{len(problems)} of {count} object(s) failed verification")
        return 1
    depth = "sha256 and blake3" if args.deep else "blake3"
    print(f"{count} object(s), {human(total)}: all intact ({depth})")
    return 0
