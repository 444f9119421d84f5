"""Helpers shared by the command modules: the parser, global options, output, the store."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from modelcas.errors import StoreError

if TYPE_CHECKING:
    from modelcas.store import Store

# Problems printed before "... and N more".
MAX_PROBLEMS = 20


class Parser(argparse.ArgumentParser):
    """argparse with the house style: raw help text, and usage errors in at most two lines."""

    # Set by `main` when the command line asks for --json: usage errors are documents too.
    json_errors = False
    # The last (sub)parser that started parsing: the one whose options an unknown one missed.
    _innermost: Parser | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        """As argparse's; remembers the innermost subparser, for "did you mean"."""
        Parser._innermost = self
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print a usage error as one line plus a hint, and exit 2.

        A mistyped command, action, choice or option gets "did you mean" in the hint (the
        closest of the parser's own choices and options, by ``difflib``).
        """
        where = self._innermost if "unrecognized arguments" in message else None
        where = where or self
        hint = f"see `{where.prog} --help`"
        if guess := self._did_you_mean(message, where):
            hint = f"did you mean {guess}? ({hint})"
        # `cas: error:` as every error (README); the hint names the command's --help.
        print(f"cas: error: {one_line(message)}", file=sys.stderr)
        print(f"  hint: {hint}", file=sys.stderr)
        if Parser.json_errors:
            emit_error_json(self.prog, message, hint, 2)
        raise SystemExit(2)

    def _did_you_mean(self, message: str, where: argparse.ArgumentParser) -> str | None:
        """The closest valid spelling of what the message says was not understood."""
        if m := _INVALID_CHOICE.search(message):
            value = m["value"].strip("'\"")
            choices = [c.strip().strip("'\"") for c in m["choices"].split(",")]
            close = difflib.get_close_matches(value, choices, n=1)
            if not close:
                return None
            if m["arg"].startswith("-"):  # an option's value: `--algo blake3`
                return f"`{m['arg'].split('/')[-1]} {close[0]}`"
            return f"`{self.prog} {close[0]}`"  # a command or action: `cas verify`
        if message.startswith("unrecognized arguments:"):
            options = [o for a in where._actions for o in a.option_strings]
            for word in message.split(":", 1)[1].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1)
                    if close:
                        return f"`{close[0]}`"
        return None


_INVALID_CHOICE = re.compile(
    r"argument (?P<arg>[^:]+): invalid choice: (?P<value>.+?) \(choose from (?P<choices>.*)\)"
)


def add_global_options(p: argparse.ArgumentParser, *, top: bool = False, lock: bool = True) -> None:
    """--store, --lock, -q and -v, accepted before or after the subcommand.

    On subcommands their default is "not given", so a value given before the subcommand is
    kept.
    """

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument(
        "--store",
        metavar="DIR",
        default=default(None),
        help="the store (default: $MODELCAS_HOME, else ~/.cache/modelcas)",
    )
    if lock:
        g.add_argument(
            "--lock",
            metavar="PATH",
            default=default(None),
            help="the lockfile (default: the nearest cas.lock)",
        )
    g.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help='print one JSON document (its "schema" key names the format); errors too',
    )
    g.add_argument("-q", "--quiet", action="store_true", default=default(False), help="less output")
    g.add_argument("-v", "--verbose", action="count", default=default(0), help="more output")


def add_command(
    sub: Any, name: str, help: str, description: str, epilog: str, *, lock: bool = True
) -> Any:
    """Create a subcommand parser with the house style and the global options.

    ``lock=False`` leaves ``--lock`` to the command (``cas verify --lock`` takes an optional
    value).
    """
    p = sub.add_parser(name, help=help, description=description, epilog=epilog)
    add_global_options(p, lock=lock)
    p.set_defaults(command=name)
    return p


def add_action(actions: Any, name: str, help: str, description: str, epilog: str) -> Any:
    """A sub-subcommand (``cas lock ls``) with the house style and the global options."""
    p = actions.add_parser(name, help=help, description=description, epilog=epilog)
    add_global_options(p)
    p.set_defaults(command=p.prog.removeprefix("cas").strip())  # "lock ls", for --json errors
    return p


def add_ref_options(p: argparse.ArgumentParser) -> None:
    """A reference (see ``modelcas.ops.resolve``) and which file of it."""
    p.add_argument(
        "ref",
        metavar="REF",
        help="NAME[@VERSION], sha256:<hex> (or a prefix), hf://ORG/NAME@REV, BUNDLE.zip#KEY",
    )
    p.add_argument("--file", metavar="FILE", help="which file of the version (if several)")
    p.add_argument(
        "--no-check-requires",
        action="store_true",
        help="do not check the version's `requires` against the installed package",
    )


# What a terminal acts on instead of showing: C0 and C1 controls (ESC starts a sequence that can
# clear the screen or retitle the window; 0x9B is a one-byte CSI), DEL, the Unicode line and
# paragraph separators, bidirectional overrides and isolates (which show text in another order
# than it is, "Trojan Source"), and lone surrogates (bytes of a name that is not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def quote(text: str) -> str:
    r"""Text that came from a remote, a file name or a lockfile, safe to print on a terminal.

    Control characters are escaped as ``ls -b`` and git's ``quote_c_style`` escape them
    (``\n``, ``\x1b``, ``\x9b``), and so are bidirectional overrides (``\u202e``) and
    bytes that are not UTF-8 (``\xff``); everything else is shown as it is. Every line the CLI
    prints goes through this (:func:`say`, :func:`out`, the error line of ``main``); checksum
    lines in sha256sum format keep GNU's own escaping instead (``modelcas.sumfile``).
    """
    return _UNSAFE.sub(_escape, text)


def one_line(text: str) -> str:
    """Text on one line, safe to print: an error is one line, whatever the message held."""
    parts = (part.strip() for part in text.strip().split("\n"))
    return quote(" ".join(part for part in parts if part))


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds >= 0")
    return value


def named_store_missing(args: argparse.Namespace) -> bool:
    """Whether the store was named (``--store`` or ``MODELCAS_HOME``) and does not exist."""
    named = args.store or os.environ.get("MODELCAS_HOME")
    return named is not None and named != "" and not os.path.lexists(named)


def open_store(args: argparse.Namespace, *, create: bool = True) -> Store:
    """The store named by --store, else MODELCAS_HOME, else the default cache directory.

    Args:
        args: the parsed command line (its ``store``).
        create: ``False`` for commands that only read: a store that was named (``--store`` or
            ``MODELCAS_HOME``) and does not exist is then an error, so that a typo never makes
            a new, empty store that reports "all intact". The default store is created (on a
            fresh machine it is simply empty).

    Raises:
        StoreError: ``create`` is false and the named store does not exist, or the store
            cannot be opened.
        UsageError: ``MODELCAS_LOCK_TIMEOUT`` is not a number of seconds.
    """
    named, how = (args.store, "--store") if args.store else (os.environ.get("MODELCAS_HOME"), "")
    if not create and named and named_store_missing(args):
        how = how or "MODELCAS_HOME"
        raise StoreError(
            f"no store at {show_path(named)} (named by {how})",
            hint="check the path, or create the store there with `cas store init`",
        )
    from modelcas.store import Store  # noqa: PLC0415 (commands without a store skip its import)
    from modelcas.store.owner import timeout  # noqa: PLC0415

    timeout()  # a bad MODELCAS_LOCK_TIMEOUT is refused now, before anything is written
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
    """A path as text, undecodable bytes and control characters escaped (:func:`quote`)."""
    return quote(os.fsdecode(p))


def err(message: str) -> None:
    """One line on stderr, prefixed like every cas message."""
    print(f"cas: {one_line(message)}", file=sys.stderr)


def out(message: str, *, file: Any = None) -> None:
    """A line of a command's output on stdout (or ``file``), control characters escaped."""
    print(quote(message), file=file or sys.stdout)


def say(args: argparse.Namespace, message: str) -> None:
    """A line of information on stdout, unless --quiet."""
    if not args.quiet:
        out(message)


def detail(args: argparse.Namespace, message: str) -> None:
    """A line printed only with -v."""
    if args.verbose and not args.quiet:
        out(message)


def problems(lines: Sequence[str], *, file: Any = None) -> None:
    """One line per problem found, capped at MAX_PROBLEMS with "... and N more"."""
    for line in lines[:MAX_PROBLEMS]:
        out(line, file=file)
    if len(lines) > MAX_PROBLEMS:
        out(f"... and {len(lines) - MAX_PROBLEMS} more", file=file)


def emit_json(command: str, payload: dict[str, Any]) -> None:
    """Print a command's JSON report: ``{"schema": "cas.COMMAND/1", ...}``."""
    print(json.dumps({"schema": f"cas.{command}/1", **payload}, indent=2))


def emit_error_json(
    command: str,
    message: str,
    hint: str | None,
    exit_code: int,
    details: Sequence[str] = (),
) -> None:
    """The error contract under ``--json``: one document on stdout besides the stderr line.

    ``details`` lists every problem of an error that gathers several (all of them, not only
    the ten printed on stderr).
    """
    print(
        json.dumps(
            {
                "schema": "cas.error/1",
                "command": command,
                "message": one_line(message),
                "hint": one_line(hint) if hint else None,
                "exit_code": exit_code,
                "details": [one_line(d) for d in details],
            },
            indent=2,
        )
    )


def json_help(command: str, fields: Iterable[str]) -> str:
    """The --help text that documents a command's JSON schema."""
    return f'--json prints {{"schema": "cas.{command}/1", {", ".join(fields)}}}'
