"""The ``cas`` command line: one module per command; the only place that prints.

Exit codes: 0 all is well, 1 a check found a problem, 2 usage or unexpected error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from modelcas import __version__
from modelcas.errors import ModelcasError

# Command names in help order. Only the modules of the commands named on the command line are
# imported, so a quick `cas verify` does not pay for the Hub client, YAML or the bundle reader.
COMMANDS = (
    "hash",
    "add",
    "ls",
    "path",
    "get",
    "verify",
    "sync",
    "lock",
    "publish",
    "pull",
    "push",
    "update",
    "bundle",
    "gc",
    "store",
)

DESCRIPTION = """\
modelcas: a content-addressed store for ML model weights.

Files are identified by what they contain (sha256 plus size), so the weights you load are
exactly the ones you pinned."""

EPILOG = """\
examples:
  cas hash best.pt                      sha256sum-compatible output
  cas hash --algo both --json models/   -r: both digests and sizes as JSON
  cas hash --check bundle.zip.sha256    verify a sha256sum/b3sum file
  cas add best.pt --name cser-detector --version v1.1
                                        store a file and pin it in cas.lock
  cas sync                              fetch and verify everything cas.lock pins
  cas verify --lock                     before a GPU run: are the pinned bytes intact?
  cas path cser-detector                the verified local path, for scripts

Run `cas COMMAND --help` for the details of each command."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, one subparser per command module.

    With ``argv``, only the commands it names are registered (all of them when it names none,
    so that help and "invalid choice" errors list every command).
    """
    parser = argparse.ArgumentParser(
        prog="cas",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"modelcas {__version__}")
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="the store directory (default: $MODELCAS_HOME, else ~/.cache/modelcas)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    named = [name for name in COMMANDS if argv is not None and name in argv]
    for name in named or COMMANDS:
        importlib.import_module(f"modelcas.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cas`` and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Library warnings (a fallback taken, a mirror used) as one line each, like errors.
    warnings.formatwarning = lambda message, *_, **__: f"cas: warning: {message}\n"
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.run(args)
    except ModelcasError as e:
        print(f"cas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cas hash ... | head`); that is not our failure.
        sys.stderr.close()
        return 0
    except OSError as e:
        print(f"cas: error: {e}", file=sys.stderr)
        return 2
    return code
