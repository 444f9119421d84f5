"""``cas add``: put files into the store, and pin them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, human, open_store, out, say, show_path
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError

HELP = "copy (or move) files into the store and print their addresses"
DESCRIPTION = """\
Copy files into the store, hashing them (sha256 and blake3) in the same read pass, and print
each file's address. Content already in the store costs a hash, not a copy. Objects are
written to a temporary file, fsynced and renamed into place, so a crash never leaves a
partial object. A git-lfs pointer file (you forgot `git lfs pull`) is refused."""
EPILOG = """\
examples:
  cas add runs/yolo11l/weights/best.pt
  cas add best.pt --name cser-detector --version v1.1 --requires '>=0.2,<1'
  cas add --move ckpt/ --name det --version v2   every file under ckpt/, moved in and pinned
  cas add --json best.pt               machine-readable: address, size, blake3, path
  cas add signed/ --signature model.sig --public-key release.pub --name det --version v3
                                       a folder signed with model_signing, pinned as signed

With --name and --version the files are also pinned in the lockfile (--lock, default the
nearest cas.lock, created in the current directory if there is none): the version's files
are exactly the files given, and `latest` moves to the highest version by PEP 440 order
(v1.10 > v1.9) unless --no-latest; a pre-release (v2.0rc1) becomes latest only with --pre.
--requires records which versions of your package the weights work with; the package is
the lockfile's `package:`, else the [project].name of the nearest pyproject.toml, else
--package. Objects that no lockfile or bundle references are removed by `cas gc` after a
grace period, so pin what you keep. --move needs a pin, and unlinks each file only once it
is stored and pinned; a failure gives every file back.

With --signature and --public-key, DIR is a folder signed with `model_signing sign key`: its
files are pinned under their paths relative to DIR, with the signature, and nothing is
pinned unless the signature, by that key, covers exactly these files and bytes.

--json prints {"schema": "cas.add/1", "files": [{"path", "address", "size", "blake3",
"existed"}, ...], "pin": {"model", "version", "lock", "latest", "changed"} or null}
(with --signature, "pin" also has "signer")

exit status: 0 added; 1 the source changed while it was read, or the signature does not
cover exactly DIR; 2 usage error."""


def register(sub: Any) -> None:
    """Add ``cas add`` to the command parser."""
    p = add_command(sub, "add", HELP, DESCRIPTION, EPILOG)
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files, or directories to walk")
    p.add_argument(
        "--move",
        action="store_true",
        help="move files into the store (a hard link, no copy, where safe); needs --name",
    )
    p.add_argument(
        "--allow-lfs-pointer", action="store_true", help="store git-lfs pointer files as they are"
    )
    pin = p.add_argument_group("pinning in a lockfile")
    pin.add_argument("--name", metavar="MODEL", help="pin the files as this model")
    pin.add_argument("--version", metavar="VERSION", help="...at this version (e.g. v1.1)")
    pin.add_argument("--requires", metavar="SPEC", help="package versions these weights need")
    pin.add_argument("--package", metavar="DIST", help="the package --requires refers to")
    pin.add_argument("--no-latest", action="store_true", help="do not move `latest`")
    pin.add_argument("--pre", action="store_true", help="let a pre-release become latest")
    pin.add_argument("--force", action="store_true", help="re-pin a version to other content")
    signed = p.add_argument_group("a folder signed with model_signing (docs/signing.md)")
    signed.add_argument(
        "--signature", metavar="FILE", help="pin DIR only if this signature covers exactly it"
    )
    signed.add_argument("--public-key", metavar="PUB.pem", help="the key it must be signed by")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas add``."""
    from modelcas.ops.add import PinRequest, add, expand  # noqa: PLC0415

    if (args.name is None) != (args.version is None):
        raise UsageError("--name and --version go together")
    pinning = (args.requires, args.package, args.no_latest, args.force, args.pre)
    if args.name is None and any(pinning):
        raise UsageError("--requires, --package, --no-latest, --pre and --force need --name")
    pin = None
    if args.name is not None:
        pin = PinRequest(
            args.name,
            args.version,
            requires=args.requires,
            lock=Path(args.lock) if args.lock else None,
            set_latest=not args.no_latest,
            force=args.force,
            pre=args.pre,
            package=args.package,
        )
    if args.signature is not None or args.public_key is not None:
        return _run_signed(args, pin)
    store = open_store(args)
    total = sum(f.stat().st_size for f in expand(args.paths) if f.is_file())
    with byte_bar(total, "adding", quiet=args.quiet) as bar:
        outcome = add(
            args.paths,
            store,
            move=args.move,
            pin=pin,
            allow_lfs_pointer=args.allow_lfs_pointer,
            progress=bar,
        )
    if args.json:
        records = [
            {
                "path": os.fsdecode(f.source),
                "address": f.digest.address,
                "size": f.digest.size,
                "blake3": f.digest.blake3,
                "existed": f.existed,
            }
            for f in outcome.files
        ]
        pinned = None
        if outcome.lock is not None:
            pinned = {
                "model": args.name,
                "version": outcome.version or args.version,
                "lock": os.fsdecode(outcome.lock),
                "latest": outcome.latest,
                "changed": outcome.changed,
            }
        emit_json("add", {"files": records, "pin": pinned})
        return 0
    for f in outcome.files:
        note = "  (already stored)" if f.existed else ""
        out(f"{f.digest.address}  {human(f.digest.size):>10}  {show_path(f.source)}{note}")
    if outcome.lock is not None:
        state = "pinned" if outcome.changed else "already pinned"
        say(
            args,
            f"{state} {args.name}@{outcome.version or args.version} in "
            f"{show_path(outcome.lock)} (latest: {outcome.latest})",
        )
    return 0


def _run_signed(args: argparse.Namespace, pin: Any) -> int:
    from modelcas.ops.sign import add_signed  # noqa: PLC0415

    if args.signature is None or args.public_key is None:
        raise UsageError("--signature and --public-key go together")
    if pin is None or len(args.paths) != 1 or args.move:
        raise UsageError(
            "--signature pins one signed folder: cas add DIR --signature FILE --public-key "
            "PUB.pem --name MODEL --version V (without --move)"
        )
    store = open_store(args)
    folder = Path(args.paths[0])
    with byte_bar(None, "adding", quiet=args.quiet) as bar:
        outcome = add_signed(
            folder, Path(args.signature), Path(args.public_key), pin, store, progress=bar
        )
    if args.json:
        records = [
            {"path": n, "address": d.address, "size": d.size, "blake3": d.blake3, "existed": e}
            for n, d, e in outcome.files
        ]
        pinned = {
            "model": args.name,
            "version": args.version,
            "lock": os.fsdecode(outcome.lock),
            "latest": outcome.latest,
            "changed": outcome.changed,
            "signer": outcome.signer,
        }
        emit_json("add", {"files": records, "pin": pinned})
        return 0
    for n, d, existed in outcome.files:
        note = "  (already stored)" if existed else ""
        out(f"{d.address}  {human(d.size):>10}  {n}{note}")
    state = "pinned" if outcome.changed else "already pinned"
    say(
        args,
        f"{state} {args.name}@{args.version} in {show_path(outcome.lock)} (latest: "
        f"{outcome.latest}), signed by key {outcome.signer}",
    )
    return 0
