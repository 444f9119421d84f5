"""``cas sign``: sign a pinned version in the OpenSSF model_signing format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelcas.cli._common import add_command, emit_json, human, json_help, out, say, show_path
from modelcas.errors import UsageError

HELP = "sign a pinned version (OpenSSF model_signing format) and pin the signature"
DESCRIPTION = """\
Sign the files of NAME@VERSION (default: its latest) as they are pinned, by name and sha256,
in the format of OpenSSF's model_signing (`model_signing sign key`): a Sigstore bundle whose
DSSE envelope carries an in-toto statement listing every file's digest, signed with an
elliptic-curve private key (P-256, P-384 or P-521). With --certificate, the signing
certificate and its chain go into the bundle (model_signing's `sign certificate`).

Nothing is hashed again: the statement is built from the pinned digests, so run
`cas verify --lock` first if the bytes have not been checked on this machine. The signature
is stored as an object and pinned with the version (`signature:` in the lockfile, with the
signer's key fingerprint); it replaces an earlier signature. -o also writes it to a file,
which `python -m model_signing verify key` accepts for the folder the version's files form.
Keyless Sigstore signing needs the public Fulcio and Rekor services and is not offered."""
EPILOG = f"""\
examples:
  cas sign cser-detector@v1.0 --key release.pem
  cas sign cser-detector --key release.pem -o model.sig
                                  the latest version; also write the signature to model.sig

{json_help("sign", ['"model"', '"version"', '"signer"', '"signature": {"sha256", "size"}', "..."])}

exit status: 0 signed; 1 a pinned file is missing from the store or disagrees with it;
2 usage error (no such version, a key that cannot sign)."""


def register(sub: Any) -> None:
    """Add ``cas sign`` to the command parser."""
    p = add_command(sub, "sign", HELP, DESCRIPTION, EPILOG)
    p.add_argument("ref", metavar="NAME[@VERSION]", help="the pinned version to sign")
    p.add_argument("--key", metavar="PRIVATE.pem", help="the elliptic-curve private key (PEM)")
    p.add_argument(
        "--certificate", metavar="CERT.pem", help="the key's signing certificate (PKI method)"
    )
    p.add_argument(
        "--certificate-chain",
        metavar="CHAIN.pem",
        action="append",
        default=[],
        help="certificates from the signing certificate up to its root (repeatable)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="also write the signature here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas sign``."""
    from modelcas.cli._common import open_store  # noqa: PLC0415
    from modelcas.lockfile import split_ref  # noqa: PLC0415
    from modelcas.ops.sign import SignRequest, sign  # noqa: PLC0415
    from modelcas.signing import KeySpec  # noqa: PLC0415

    if args.key is None and args.certificate is not None:
        raise UsageError("--certificate needs --key: the private key the certificate is for")
    if args.key is None:
        raise UsageError(
            "keyless signing needs network access to Sigstore; use --key or --certificate",
            hint="cas sign NAME@VERSION --key PRIVATE.pem (see docs/signing.md)",
        )
    if args.certificate_chain and args.certificate is None:
        raise UsageError("--certificate-chain goes with --certificate")
    name, version = split_ref(args.ref)
    how = KeySpec(
        Path(args.key),
        Path(args.certificate) if args.certificate else None,
        tuple(Path(c) for c in args.certificate_chain),
    )
    outcome = sign(
        SignRequest(
            name,
            version,
            how,
            lock=Path(args.lock) if args.lock else None,
            output=Path(args.output) if args.output else None,
        ),
        open_store(args, create=False),  # it signs only what is stored
    )
    if outcome.trusted is False:
        out(
            f"cas: warning: {show_path(outcome.lock)} does not trust key {outcome.signer} for "
            f"{outcome.model}: add it (cas trust add PUB.pem), or sync and loads refuse "
            f"{outcome.model}@{outcome.version}",
            file=sys.stderr,
        )
    if args.json:
        emit_json(
            "sign",
            {
                "model": outcome.model,
                "version": outcome.version,
                "files": outcome.files,
                "signer": outcome.signer,
                "signature": {
                    "sha256": outcome.signature.sha256,
                    "size": outcome.signature.size,
                },
                "lock": show_path(outcome.lock),
                "output": show_path(outcome.output) if outcome.output else None,
                "replaced": outcome.replaced,
                "trusted": outcome.trusted,
            },
        )
        return 0
    say(
        args,
        f"signed {outcome.model}@{outcome.version} ({outcome.files} file(s)) with key "
        f"{outcome.signer}",
    )
    if outcome.replaced:
        say(args, f"  it replaces the signature by key {outcome.replaced}")
    say(
        args,
        f"pinned the signature ({human(outcome.signature.size)}) in {show_path(outcome.lock)}",
    )
    if outcome.output is not None:
        say(args, f"wrote it to {show_path(outcome.output)}")
    return 0
