"""``cas trust``: which signers a lockfile accepts, for one model or the whole file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_action, add_command, emit_json, out, say, show_path
from modelcas.errors import UsageError

HELP = "list, add and remove the signers a lockfile trusts (trust:)"
DESCRIPTION = """\
A lockfile's `trust:` names the signers whose signatures it accepts: public keys (by
fingerprint, with the key itself, so a fresh clone checks signatures offline) or
certificate identities under a root certificate (by the root's fingerprint). A list under a
model applies to that model and replaces the file's list for it. Once a model has trusted
signers, `cas sync`, `cas pull`, `cas verify --lock`, Registry.path() and the loaders refuse
every version of it that is not validly signed by one of them."""
EPILOG = """\
examples:
  cas trust add release.pub
  cas trust add release.pub --model cser-detector
  cas trust ls
  cas trust rm release.pub --model cser-detector

exit status: 0 ok; 1 no such signer or model; 2 usage error."""

_ADD = """\
Trust a public key (PEM; a private key file gives its public half), or with --certificate
the signing certificates that name IDENTITY (an e-mail, URI or DNS name, else the common
name) and chain to the root certificate given with --root. A project without a lockfile gets one,
and --model may name a model not pinned yet: trust before the first `cas pull`."""
_ADD_EPILOG = """\
examples:
  cas trust add release.pub
  cas trust add release.pub --model cser-detector

--json prints {"schema": "cas.trust-add/1", "lock", "model", "signer": {...}, "changed"}"""
_LS = """\
Every trusted signer: the file's list, then each model's own."""
_LS_EPILOG = """\
examples:
  cas trust ls
  cas trust ls --json

--json prints {"schema": "cas.trust-ls/1", "lock", "trust": [{"model", "key"|"certificate",
...}]}"""
_RM = """\
Stop trusting a signer, named by its key fingerprint (sha256:...), its public key file, or
its certificate identity."""
_RM_EPILOG = """\
examples:
  cas trust rm release.pub

--json prints {"schema": "cas.trust-rm/1", "lock", "model", "signer": {...}}"""


def register(sub: Any) -> None:
    """Add ``cas trust`` to the command parser."""
    p = add_command(sub, "trust", HELP, DESCRIPTION, EPILOG)
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = add_action(
        actions, "add", "trust a public key or certificate identity", _ADD, _ADD_EPILOG
    )
    add.add_argument("public_key", nargs="?", metavar="PUB.pem", help="a public key (PEM)")
    add.add_argument("--certificate", metavar="IDENTITY", help="a certificate identity instead")
    add.add_argument("--root", metavar="ROOT.pem", help="the root certificate it must chain to")
    add.add_argument("--model", metavar="MODEL", help="for this model only")
    add.set_defaults(run=run_add)
    ls = add_action(actions, "ls", "every trusted signer", _LS, _LS_EPILOG)
    ls.set_defaults(run=run_ls)
    rm = add_action(actions, "rm", "stop trusting a signer", _RM, _RM_EPILOG)
    rm.add_argument("which", metavar="FINGERPRINT|PUB.pem|IDENTITY")
    rm.add_argument("--model", metavar="MODEL", help="from this model's list")
    rm.set_defaults(run=run_rm)


def _signer_json(t: Any) -> dict[str, Any]:
    if t.key is not None:
        return {"key": t.key}
    return {"certificate": t.certificate, "root": t.root}


def run_add(args: argparse.Namespace) -> int:
    """Execute ``cas trust add``."""
    from modelcas.ops import trust  # noqa: PLC0415

    if args.certificate is not None:
        if args.public_key is not None or args.root is None:
            raise UsageError("--certificate IDENTITY takes --root ROOT.pem and no key file")
        signer = trust.certificate_signer(args.certificate, Path(args.root))
    elif args.public_key is None:
        raise UsageError("name a public key file, or --certificate IDENTITY --root ROOT.pem")
    elif args.root is not None:
        raise UsageError("--root goes with --certificate")
    else:
        signer = trust.key_signer(Path(args.public_key))
    change = trust.add(Path(args.lock) if args.lock else None, signer, args.model)
    if args.json:
        emit_json(
            "trust-add",
            {
                "lock": show_path(change.lock),
                "model": change.model,
                "signer": _signer_json(change.signer),
                "changed": change.changed,
            },
        )
        return 0
    scope = f"for {change.model}" if change.model else "for every model"
    state = "trusted" if change.changed else "already trusted"
    say(args, f"{state} {change.signer.label} {scope} in {show_path(change.lock)}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    """Execute ``cas trust ls``."""
    from modelcas.ops import trust  # noqa: PLC0415

    lock_path, found = trust.listing(Path(args.lock) if args.lock else None)
    if args.json:
        emit_json(
            "trust-ls",
            {
                "lock": show_path(lock_path),
                "trust": [{"model": m, **_signer_json(t)} for m, t in found],
            },
        )
        return 0
    if not found:
        say(args, f"{show_path(lock_path)} trusts no signer: versions need no signature")
    for model, t in found:
        out(f"{model or '*':<20} {t.label}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Execute ``cas trust rm``."""
    from modelcas.ops import trust  # noqa: PLC0415

    change = trust.remove(Path(args.lock) if args.lock else None, args.which, args.model)
    if args.json:
        emit_json(
            "trust-rm",
            {
                "lock": show_path(change.lock),
                "model": change.model,
                "signer": _signer_json(change.signer),
            },
        )
        return 0
    scope = f"for {change.model}" if change.model else "for every model"
    say(args, f"no longer trusted {scope}: {change.signer.label}")
    return 0
