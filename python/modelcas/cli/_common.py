"""Helpers shared by the command modules: the store option, sizes, output."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from modelcas.store import Store

FORMATTER = argparse.RawDescriptionHelpFormatter


def add_command(sub: Any, name: str, help: str, description: str, epilog: str) -> Any:
    """Create a subcommand parser with the house style."""
    return sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=FORMATTER
    )


def open_store(args: argparse.Namespace) -> Store:
    """The store named by --store, else MODELCAS_HOME, else the default cache directory."""
    return Store(args.store)


def human(n: int) -> str:
    """A byte count for people: 1.5 GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def show_path(p: str | os.PathLike[str]) -> str:
    """A path as text, with undecodable bytes kept visible."""
    return os.fsdecode(p).encode("utf-8", "backslashreplace").decode()


def err(message: str) -> None:
    """One line on stderr, prefixed like every cas message."""
    print(f"cas: {message}", file=sys.stderr)
