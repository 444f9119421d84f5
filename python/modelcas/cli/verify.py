"""``cas verify``: re-check objects against their digests, or everything a lockfile pins."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from modelcas.cli._common import (
    add_command,
    emit_json,
    err,
    human,
    json_help,
    named_store_missing,
    open_store,
    out,
    problems,
    say,
    show_path,
)
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError

HELP = "re-check stored objects, what a lockfile pins, or what a remote holds"
DESCRIPTION = """\
Re-hash objects and compare them with their recorded size and blake3 (--deep also
recomputes sha256, which must equal the object's name). With --lock, check every file the
lockfile pins instead: present, and exactly the pinned size and digests. Object
permissions are checked too: an object must be read-only and no store directory
world-writable. Every problem is printed with the object, its path, and the expected and
actual value. Nothing is ever repaired silently: --repair moves bad objects to the store's
quarantine so that the next fetch replaces them.

With --public-key, check one pinned version NAME[@VERSION]: its stored files as --lock
does, then its signature (the pinned one, or --signature FILE) against the pinned digests,
without hashing anything twice. A model the lockfile trusts signers for (`cas trust`) is
checked by --lock too: each of its versions must be validly signed by one of them.

With --remote NAME[@VERSION], audit the version's places instead (its source and mirrors:
the Hub, a registry, a directory, a URL): the remote's listing (sizes and digests from its
own metadata) must match the pins; --read-data also downloads and hashes every byte, storing
nothing (restic's check --read-data), which catches a server that keeps other bytes of the
same size. On a directory over NFS a read may come from this client's page cache."""
_MODES = '"mode": "store"|"lock"|"signature"|"remote"'
EPILOG = f"""\
examples:
  cas verify --lock               every file the nearest cas.lock pins (before a GPU run)
  cas verify --lock analysis/cas.lock --deep
  cas verify                      every object in the store
  cas verify --deep sha256:9f86d0
  cas verify --repair
  cas verify cser-detector@v1.0 --public-key release.pub
                                  its stored files, and its signature by this key
  cas verify --remote cser-detector@v1.1 --read-data   what the Hub (or registry) holds

{json_help("verify", [_MODES, '"ok": bool', '"problems": [...]', "..."])}

exit status: 0 all intact, 1 a problem was found, 2 usage error."""


def register(sub: Any) -> None:
    """Add ``cas verify`` to the command parser."""
    p = add_command(sub, "verify", HELP, DESCRIPTION, EPILOG, lock=False)
    p.add_argument("refs", nargs="*", metavar="ADDRESS", help="objects to check (default: all)")
    p.add_argument("--deep", action="store_true", help="recompute sha256 as well as blake3")
    p.add_argument("--repair", action="store_true", help="quarantine bad objects")
    p.add_argument(
        "--lock",
        nargs="?",
        const="",
        default=argparse.SUPPRESS,
        # Its own dest: a bare `--lock` here must not erase a global `cas --lock PATH verify`.
        dest="check_lock",
        metavar="PATH",
        help="check the files a lockfile pins instead (default: the nearest cas.lock)",
    )
    sig = p.add_argument_group("signed versions (docs/signing.md)")
    sig.add_argument(
        "--public-key",
        metavar="PUB.pem",
        help="check NAME[@VERSION]'s stored files and its signature by this key",
    )
    sig.add_argument(
        "--signature", metavar="FILE", help="check this signature instead of the pinned one"
    )
    p.add_argument(
        "--remote",
        metavar="NAME[@VERSION]",
        help="audit what the version's remotes hold against its pins",
    )
    p.add_argument(
        "--read-data", action="store_true", help="(--remote) download and hash every byte"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas verify``."""
    given = getattr(args, "check_lock", None)
    if given:
        args.lock = given
    elif given == "" and getattr(args, "lock", None) is None:
        args.lock = ""  # a bare --lock: the nearest cas.lock
    if args.remote is not None:
        if args.refs:
            raise UsageError("give addresses or --remote, not both")
        return _run_remote(args)
    if args.read_data:
        raise UsageError("--read-data goes with --remote NAME[@VERSION]")
    if args.public_key is not None or args.signature is not None:
        return _run_signed(args)
    if args.lock is not None:
        if args.refs:
            raise UsageError("give addresses or --lock, not both")
        return _run_lock(args)
    return _run_store(args)


def _run_lock(args: argparse.Namespace) -> int:
    from modelcas.ops.verify import pinned_bytes, verify_lock  # noqa: PLC0415 (YAML only here)
    from modelcas.registry import open_lock  # noqa: PLC0415

    registry = open_lock(args.lock or None, store=open_store(args, create=False))
    with byte_bar(pinned_bytes(registry), "verifying", quiet=args.quiet) as bar:
        report = verify_lock(registry, deep=args.deep, progress=bar)
    moved = {}
    if args.repair:
        for problem in report.problems:
            if problem.kind == "corrupt":
                moved[problem.pin.digest.sha256] = registry.store.quarantine(
                    problem.pin.digest.sha256
                )
    lock_path = show_path(registry.lock.path or "")
    if args.json:
        status = {id(p.pin): p for p in report.problems}
        emit_json(
            "verify",
            {
                "mode": "lock",
                "lock": lock_path,
                "deep": args.deep,
                "ok": not report.problems and not report.signatures,
                "signatures": report.signatures,
                "pins": [
                    {
                        "model": pin.model,
                        "version": pin.version,
                        "file": pin.file,
                        "size": pin.digest.size,
                        "sha256": pin.digest.sha256,
                        "status": status[id(pin)].kind if id(pin) in status else "ok",
                        "detail": status[id(pin)].detail if id(pin) in status else None,
                    }
                    for pin in report.pins
                ],
                "linked": [_linked_json(x) for x in report.linked],
            },
        )
    else:
        if not args.quiet:
            for pin in report.ok:
                out(f"OK      {pin.label}")
        lines = []
        for problem in report.problems:
            where = moved.get(problem.pin.digest.sha256)
            repaired = problem.kind == "corrupt" and where is not None
            # Once repaired, the line must not tell the reader to repair it again.
            lines.append(problem.describe(next_step=not repaired))
            if repaired and where is not None:
                lines.append(f"  moved to {show_path(where)}; run `cas sync` to fetch it again")
        problems(lines)
        problems([f"REFUSED {line}" for line in report.signatures])
        _say_linked(args, report.linked)
    if report.signatures and not report.problems:
        first = report.signatures[0]
        more = f" (and {len(report.signatures) - 1} more)" if len(report.signatures) > 1 else ""
        err(f"error: {first}{more}")
        return 1
    if report.problems:
        missing = sum(p.kind == "missing" for p in report.problems)
        err(
            f"{len(report.problems)} pinned file(s) failed in {lock_path}: {missing} missing "
            f"(run `cas sync`), {len(report.problems) - missing} corrupt, mismatched or unsafe"
        )
        return 1
    if not args.json:
        say(args, f"all {len(report.pins)} pinned file(s) intact ({lock_path})")
    return 0


def _run_signed(args: argparse.Namespace) -> int:
    from modelcas.lockfile import split_ref  # noqa: PLC0415
    from modelcas.ops.sign import verify_signed  # noqa: PLC0415
    from modelcas.registry import open_lock  # noqa: PLC0415

    if args.public_key is None:
        raise UsageError("--signature goes with --public-key")
    if len(args.refs) != 1 or args.refs[0].startswith("sha256:") or args.repair:
        raise UsageError("--public-key checks one pinned version: cas verify NAME[@VERSION]")
    name, version = split_ref(args.refs[0])
    registry = open_lock(
        args.lock or None, store=open_store(args, create=False), check_requires=False
    )
    report = verify_signed(
        registry,
        name,
        version,
        Path(args.public_key),
        signature=Path(args.signature) if args.signature else None,
        deep=args.deep,
    )
    label = f"{report.model}@{report.version}"
    if args.json:
        status = {id(p.pin): p for p in report.pins.problems}
        emit_json(
            "verify",
            {
                "mode": "signature",
                "model": report.model,
                "version": report.version,
                "deep": args.deep,
                "ok": report.ok,
                "signer": report.signed.signer if report.signed else None,
                "refused": report.refused,
                "pins": [
                    {
                        "file": pin.file,
                        "sha256": pin.digest.sha256,
                        "status": status[id(pin)].kind if id(pin) in status else "ok",
                    }
                    for pin in report.pins.pins
                ],
            },
        )
    else:
        if not args.quiet:
            for pin in report.pins.ok:
                out(f"OK      {pin.label}")
        problems([str(p) for p in report.pins.problems])
    if report.pins.problems:
        err(f"{label}: {len(report.pins.problems)} pinned file(s) failed; the signature is moot")
        return 1
    if report.signed is None:
        err(f"error: {report.refused}")
        return 1
    if not args.json:
        say(
            args,
            f"{label}: signed by {report.signed.who}; the signature covers exactly its "
            f"{len(report.pins.pins)} pinned file(s)",
        )
    return 0


def _run_remote(args: argparse.Namespace) -> int:
    from modelcas.cli._remote import audit_lines, audit_rows  # noqa: PLC0415
    from modelcas.ops.audit import AuditRequest, audit  # noqa: PLC0415 (the remotes only here)

    lock = getattr(args, "lock", None) or None
    req = AuditRequest(args.remote, lock, read_data=args.read_data)
    with byte_bar(None, "reading back", quiet=args.quiet) as bar:
        # The store only spares reading small files again: a named one that does not exist
        # is not made (nor needed).
        store = None if named_store_missing(args) else open_store(args)
        audits = audit(req, store, progress=bar)
    failed = [a for a in audits if not a.ok]
    if args.json:
        emit_json(
            "verify",
            {
                "mode": "remote",
                "ref": args.remote,
                "read_data": args.read_data,
                "ok": not failed,
                "audits": audit_rows(audits),
            },
        )
    else:
        problems(audit_lines(audits))
    if failed:
        err(f"{len(failed)} of {len(audits)} place(s) of {args.remote} do not hold what is pinned")
        return 1
    if not args.json:
        how = "every byte read back" if args.read_data else "by their listings"
        say(args, f"{len(audits)} place(s) of {args.remote} hold what is pinned ({how})")
    return 0


def _run_store(args: argparse.Namespace) -> int:
    from modelcas.ops.verify import total_bytes, verify_store  # noqa: PLC0415

    store = open_store(args, create=False)
    total = None if args.refs else total_bytes(store)
    with byte_bar(total, "verifying", quiet=args.quiet) as bar:
        report = verify_store(store, args.refs, deep=args.deep, progress=bar)
    moved = {}
    if args.repair:
        for p in report.problems:
            if p.kind not in ("missing", "writable"):
                moved[p.sha256] = store.quarantine(p.sha256)
    if args.json:
        emit_json(
            "verify",
            {
                "mode": "store",
                "store": os.fsdecode(store.root),
                "deep": args.deep,
                "checked": report.checked,
                "bytes": report.bytes,
                "ok": not report.problems,
                "problems": [
                    {
                        "sha256": p.sha256 or None,
                        "path": os.fsdecode(p.path),
                        "kind": p.kind,
                        "expected": p.expected,
                        "actual": p.actual,
                    }
                    for p in report.problems
                ],
                "linked": [_linked_json(x) for x in report.linked],
            },
        )
    else:
        lines = []
        for p in report.problems:
            head = {"missing": "MISSING", "writable": "UNSAFE "}.get(p.kind, "CORRUPT")
            lines.append(f"{head} {p}")
            if p.kind != "writable" and (where := moved.get(p.sha256)) is not None:
                lines.append(f"  moved to {show_path(where)}; fetch it again to restore it")
        problems(lines)
        _say_linked(args, report.linked)
    if report.problems:
        err(f"{len(report.problems)} problem(s) in {report.checked} object(s) and the store")
        return 1
    if not args.json:
        depth = "sha256 and blake3" if args.deep else "blake3"
        say(args, f"{report.checked} object(s), {human(report.bytes)}: all intact ({depth})")
    return 0


def _say_linked(args: argparse.Namespace, linked: list[Any]) -> None:
    """Objects that share their inode with another name: a risk, not a failure."""
    for x in linked:
        say(args, f"LINKED  {x}")


def _linked_json(x: Any) -> dict[str, Any]:
    return {"sha256": x.sha256, "path": os.fsdecode(x.path), "links": x.links, "where": x.where}
