"""Helpers shared by the command modules: the store option, sizes, output."""

from __future__ import annotations

import argparse
import math
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


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds >= 0")
    return value


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


def add_ref_options(p: argparse.ArgumentParser) -> None:
    """The options that let a command take ``NAME[@VERSION]`` as well as an address."""
    p.add_argument("--file", metavar="FILE", help="which file of the version (if several)")
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")


def resolve_ref(args: argparse.Namespace, store: Store) -> tuple[str, str]:
    """(sha256, label) of ``args.ref``: an address, or a pinned ``NAME[@VERSION]``.

    A pinned file missing from the store is fetched from its source, as ``Registry.path``
    does.
    """
    from modelcas.lockfile import split_ref  # noqa: PLC0415 (YAML only when a name is given)
    from modelcas.registry import open_lock  # noqa: PLC0415

    ref: str = args.ref
    if ref.startswith("sha256:"):
        sha256 = store.resolve(ref)
        return sha256, f"sha256:{sha256}"
    registry = open_lock(args.lock, store=store)
    pin = registry.pin(*split_ref(ref), args.file)
    registry.fetch(pin)
    return pin.digest.sha256, f"{pin.model}@{pin.version} {pin.file}"
