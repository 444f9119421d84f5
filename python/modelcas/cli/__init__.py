"""The ``cas`` command line: one module per command; the only place that prints.

Each command module parses its arguments, calls one library operation (``modelcas.ops``) and
renders the result as text or ``--json``. :func:`main` holds the one error contract: exit 0
when all is well, 1 when a check found a problem, 2 for a usage or unexpected error; one line
per problem plus at most one ``hint:`` line; a traceback only with ``CAS_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from modelcas import __version__
from modelcas.cli._common import Parser, add_global_options, emit_error_json, one_line
from modelcas.errors import MAX_DETAILS, ModelcasError

# Command names in help order. Only the modules of the commands named on the command line are
# imported, so a quick `cas verify` does not pay for the Hub client, YAML or the bundle reader.
COMMANDS = (
    "hash",
    "add",
    "ls",
    "path",
    "get",
    "verify",
    "sign",
    "trust",
    "sync",
    "lock",
    "publish",
    "pull",
    "push",
    "update",
    "outdated",
    "bundle",
    "gc",
    "store",
    "completion",
)

DESCRIPTION = """\
modelcas: a content-addressed store for ML model weights.

Files are identified by what they contain (sha256 plus size), so the weights you load are
exactly the ones you pinned."""

EPILOG = """\
examples:
  cas hash best.pt                      sha256sum-compatible output
  cas hash --algo both --json -r models/
                                        both digests and sizes of every file, as JSON
  cas hash --check bundle.zip.sha256    verify a sha256sum/b3sum file
  cas add best.pt --name cser-detector --version v1.1
                                        store a file and pin it in cas.lock
  cas sync                              fetch and verify everything cas.lock pins
  cas verify --lock                     before a GPU run: are the pinned bytes intact?
  cas path cser-detector                the verified local path, for scripts

global options (before or after the command): --store DIR, --lock PATH, --json, -q, -v.

exit status: 0 all is well; 1 a check found a problem (a digest differed, something is
missing, an incompatible version); 2 a usage error or an unexpected error. Errors are one
line on stderr, with at most one `hint:` line (an error that gathers several problems, such
as a bundle config's, gives their count, then one per line, at most 10); with --json, also
one JSON document on stdout ({"schema": "cas.error/1", "command", "message", "hint",
"exit_code", "details"}). CAS_DEBUG=1 adds the traceback.

Run `cas COMMAND --help` for the details and examples of each command."""


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser, one subparser per command module.

    With ``argv``, only the commands it names are registered (all of them when it names none,
    so that help and "invalid choice" errors list every command).
    """
    parser = Parser(prog="cas", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"modelcas {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    named = [name for name in COMMANDS if argv is not None and name in argv]
    if not named and argv is not None and _only_version(argv):
        return parser  # `cas --version` prints and exits before any command is needed
    for name in named or COMMANDS:
        importlib.import_module(f"modelcas.cli.{name}").register(sub)
    return parser


def _only_version(argv: Sequence[str]) -> bool:
    """Whether the command line is only options, ``--version`` among them and no help."""
    return (
        "--version" in argv
        and all(a.startswith("-") for a in argv)
        and not {"-h", "--help"} & set(argv)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cas`` and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Library warnings (a fallback taken, a mirror used) as one line each, like errors.
    warnings.formatwarning = lambda message, *_, **__: f"cas: warning: {one_line(str(message))}\n"
    Parser.json_errors = "--json" in argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    command = getattr(args, "command", "cas")
    debug = os.environ.get("CAS_DEBUG", "") not in ("", "0")
    if not getattr(args, "verbose", 0):
        # The Hub client logs its retries (13 lines for one failing request); cas says what
        # failed once, in its own error line. -v lets them through. Importing the client
        # resets its logger's level from HF_HUB_VERBOSITY, so that is set too (unless the
        # user set it): the command imports the client only later.
        os.environ.setdefault("HF_HUB_VERBOSITY", "critical")
        logging.getLogger("huggingface_hub").setLevel(logging.CRITICAL)

    def fail(code: int, message: str, hint: str | None = None, details: Sequence[str] = ()) -> int:
        _error(message, hint, details)
        if getattr(args, "json", False):
            try:
                emit_error_json(f"cas {command}", message, hint, code, details)
            except BrokenPipeError:
                # The reader went away (`cas --json ... | head`): the line on stderr said it;
                # stdout goes to /dev/null so the exit's flush raises nothing either.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return code

    try:
        code: int = args.run(args)
    except ModelcasError as e:
        return fail(e.exit_code, e.message, e.hint, e.details)
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except BrokenPipeError:
        # The reader went away (`cas hash ... | head`); that is not our failure.
        sys.stderr.close()
        return 0
    except OSError as e:
        if debug:
            raise
        where = f"{os.fsdecode(e.filename)}: " if e.filename else ""
        return fail(2, f"{where}{e.strerror or e}")
    except Exception as e:
        if debug:
            raise
        return fail(
            2,
            f"{command}: unexpected error: {type(e).__name__}: {one_line(str(e))}",
            "this is a bug in modelcas; run again with CAS_DEBUG=1 for the traceback",
        )
    return code


def _error(message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
    # One line, except for an error that gathers several problems (the documented exception):
    # its count, then one problem per line, at most MAX_DETAILS of them.
    print(f"cas: error: {one_line(message)}{':' if details else ''}", file=sys.stderr)
    for detail in details[:MAX_DETAILS]:
        print(f"  - {one_line(detail)}", file=sys.stderr)
    if len(details) > MAX_DETAILS:
        print(f"  - ... and {len(details) - MAX_DETAILS} more", file=sys.stderr)
    if hint:
        print(f"  hint: {one_line(hint)}", file=sys.stderr)
