"""``cas path``: print the verified local path of an object."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import (
    add_command,
    add_ref_options,
    emit_json,
    json_help,
    open_store,
    out,
    show_path,
)
from modelcas.cli._progress import byte_bar

_FIELDS = [
    '"path"',
    '"ref"',
    '"label"',
    '"directory"',
    '"address"',
    '"size"',
    '"sha256"',
    '"blake3"',
]
HELP = "print the verified local path of an object or a pinned model"
DESCRIPTION = """\
Verify an object (size and blake3; --deep adds sha256) and print its path, for shell
scripts: `python train.py --weights "$(cas path cser-detector)"`. The path ends in the
pinned file name (best.pt, model.safetensors): it is an entry of a read-only view in the
store, a symlink to the verified object, so frameworks that decide by the suffix accept it.
A version with several files (config.json beside sharded weights) prints its directory,
the one from_pretrained takes; --file picks one file. A pinned model missing from the store
is fetched from its source first, and its `requires` is checked against the installed
package. Nothing is printed when the object is missing or corrupt, and the exit status is
1. Never write to the path (see the store doc: a write fails, or `cas verify` names it)."""
EPILOG = f"""\
examples:
  cas path cser-detector                 latest compatible version, from the nearest cas.lock
  cas path cser-detector@v1.0 --file best.pt
  cas path tiny-bert@v1                  a version with several files: its directory
  cas path sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  cas path sha256:9f86d0                 a unique prefix is enough
  cas path model_collection.zip#segmentation
  cas path hf://sidxz/structflo-cser-detector@weights-v1.1

{json_help("path", _FIELDS)}

exit status: 0 printed; 1 missing, corrupt or incompatible; 2 usage error."""


def register(sub: Any) -> None:
    """Add ``cas path`` to the command parser."""
    p = add_command(sub, "path", HELP, DESCRIPTION, EPILOG)
    add_ref_options(p)
    p.add_argument("--deep", action="store_true", help="recompute sha256 too")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas path``."""
    from modelcas.ops.versions import path_of  # noqa: PLC0415

    # A bare address has nothing to fetch: only a pinned model may fill a new store.
    store = open_store(args, create=not args.ref.startswith("sha256:"))
    # Fetched if missing (a bar of unknown size, shown only if that takes a while); a single
    # file's bytes are then verified here, under a bar of known size.
    with byte_bar(None, "fetching", quiet=args.quiet) as bar:
        found = path_of(
            args.ref,
            store=store,
            lock=args.lock,
            file=args.file,
            check_requires=not args.no_check_requires,
            deep=args.deep,
            verify=False,
            progress=bar,
        )
    if found.digest is not None:
        with byte_bar(found.digest.size, "verifying", quiet=args.quiet) as bar:
            store.path(found.digest.sha256, deep=args.deep, progress=bar)
    if args.json:
        d = found.digest
        emit_json(
            "path",
            {
                "path": show_path(found.path),
                "ref": args.ref,
                "label": found.label,
                "directory": found.directory,
                "address": d.address if d else None,
                "size": d.size if d else None,
                "sha256": d.sha256 if d else None,
                "blake3": d.blake3 if d else None,
            },
        )
        return 0
    out(show_path(found.path))
    return 0
