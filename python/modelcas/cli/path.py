"""``cas path``: print the verified local path of an object."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas.cli._common import add_command, add_ref_options, open_store, resolve_ref, show_path

HELP = "print the verified local path of an object or a pinned model"
DESCRIPTION = """\
Verify an object (blake3; --deep adds sha256) and print its path in the store, for shell
scripts: `python train.py --weights "$(cas path cser-detector)"`. A pinned model missing
from the store is fetched from its source first. Nothing is printed when the object is
missing or corrupt, and the exit status is 1. Never write to the path."""
EPILOG = """\
examples:
  cas path cser-detector                 latest version, from the nearest cas.lock
  cas path cser-detector@v1.0 --file best.pt
  cas path sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  cas path sha256:9f86d0                 a unique prefix is enough"""


def register(sub: Any) -> None:
    """Add ``cas path`` to the command parser."""
    p = add_command(sub, "path", HELP, DESCRIPTION, EPILOG)
    p.add_argument("ref", metavar="REF", help="NAME[@VERSION], or sha256:<hex> (or a prefix)")
    p.add_argument("--deep", action="store_true", help="recompute sha256 too")
    add_ref_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas path``."""
    store = open_store(args)
    sha256, _ = resolve_ref(args, store)
    print(show_path(store.path(sha256, deep=args.deep)))
    return 0
