"""``cas publish``: publish a version of a model's weights to the Hub, a registry or a directory."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from modelcas.cli._common import (
    add_command,
    emit_json,
    human,
    json_help,
    open_store,
    out,
    say,
    show_path,
)
from modelcas.errors import UsageError

HELP = "publish weights to the Hub, an OCI registry or a directory: upload, tag, pin"
DESCRIPTION = """\
Publish a version of a model's weights in one step, planned first: hash and store the
files, look at the remote (which files it has, whether the tag exists), then send only what
is missing, read back what the remote recorded for every file (every byte with
--read-back), tag the version, and pin it in the lockfile (size, sha256, blake3, requires,
source, commit) with `latest` bumped. A tag holds every file of its version and no file
pinned only by an earlier version: if the remote recorded anything else, no tag is created
and nothing is pinned. An existing tag is never moved, and an existing version is never
overwritten; a version PEP 440 calls equal to a pinned one (v1.0 and 1.0.0) is that one, and
its tag keeps the spelling that was pinned.

Where: --to hf://ORG/NAME, --to oci://HOST[:PORT]/REPO (one CNCF ModelPack artifact tagged
VERSION, layers typed by role: weights, weight.config for config.json, tokenizer* and *.yaml,
doc for README/LICENSE; --media-type NAME=TYPE overrides), or --to a directory (the store's
layout plus a catalog of versions). Without --to: --repo ORG/NAME on the Hub, else the
model's repo from the lockfile. A version the lockfile already pins (say, from the Hub) gets
the new place as a mirror.

On the Hub, a version's commit removes only files an earlier `cas publish` wrote (its
modelcas.json on main says which) that this version does not pin; files cas never wrote
(a README, a config.json uploaded by hand) stay, on main and in the tag, unless --prune.
The token comes from HF_TOKEN or `hf auth login`; it is never printed.

Signatures travel with the version (docs/signing.md): --key signs it before the tag is
created (model_signing's format; the signature is pinned, as `cas sign` pins it), else the
signature the lockfile pins goes. On the Hub it is model.sig in the tag's commit; in an
OCI registry a referrer of the version's manifest; in a directory a file beside the
catalog entry. --signature-only sends only the signature of a version published before
it was signed (to its source, or --to): on the Hub a commit of its own under the companion
tag weights-VERSION.sig; no tag is moved and the pinned source does not change.

The repo and the default file come from the model's earlier versions in the lockfile, and
--requires defaults to the previous version's range: a retrain on the same architecture is
just `cas publish MODEL --version v1.1`. File names are the lockfile's: the first publish's
name (best.pt) stays the name of later versions unless --as renames it. --file is for this
publish only (the model's first publish remembers it; --set-default changes it later).
`requires` is checked against the package named in the lockfile (`package:`), recorded from
the nearest pyproject.toml or --package. If anything fails midway the lockfile is unchanged,
and the same command finishes the job."""
EPILOG = f"""\
examples:
  cas publish cser-detector --version v1.1 --dry-run
  cas publish cser-detector --version v1.1
  cas publish cser-detector --version v2.0 --requires '>=1.0.0,<2.0.0'   (architecture change)
  cas publish ner-tagger --version v1.0 --repo sidxz/structflo-ner-tagger --file model.pt
  cas publish cser-detector --version v1.2 --file exp/last.pt           (still best.pt remotely)
  cas publish cser-detector --version v1.1 --lock structflo/cser/weights.lock
  cas publish cser-detector --version v1.1 --to oci://registry.lab:5000/models/cser-detector
  cas publish cser-detector --version v1.1 --to /lab/shared/cas --read-back
  cas publish cser-detector --version v1.1 --key release.pem             (signed: model.sig)
  cas publish cser-detector --version v1.0 --signature-only --key release.pem
                                  sign v1.0 now; its signature goes under weights-v1.0.sig

{json_help("publish", ['"model"', '"version"', '"remote"', '"tag"', '"commit"', '"files": [...]'])}

After publishing, commit the lockfile: git add cas.lock && git commit -m 'weights: v1.1'

exit status: 0 published (or already published); 1 the remote recorded other bytes or
files, or the tag exists elsewhere; 2 usage error or a remote failure (run it again)."""


def register(sub: Any) -> None:
    """Add ``cas publish`` to the command parser."""
    p = add_command(sub, "publish", HELP, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL", help="the model name in the lockfile")
    p.add_argument("--version", required=True, metavar="VERSION", help="e.g. v1.1")
    p.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="weights file(s) to publish, this time only (default: the model's weights-path)",
    )
    p.add_argument(
        "--as",
        dest="names",
        action="append",
        metavar="NAME",
        help="the file's name at the remote and in the lockfile (one per --file)",
    )
    p.add_argument("--repo", metavar="ORG/NAME", help="Hub repo (default: the model's repo)")
    p.add_argument(
        "--requires",
        metavar="SPEC",
        help="package versions these weights work with (default: previous range)",
    )
    p.add_argument("--package", metavar="DIST", help="the package --requires refers to")
    p.add_argument(
        "--set-default", action="store_true", help="make --file the model's default file"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--no-latest", action="store_true", help="do not move `latest`")
    p.add_argument("--pre", action="store_true", help="let a pre-release become latest")
    p.add_argument(
        "--allow-lfs-pointer", action="store_true", help="publish git-lfs pointer files as they are"
    )
    p.add_argument(
        "--to",
        metavar="REMOTE",
        help="hf://ORG/NAME, oci://HOST[:PORT]/REPO, or a directory (default: the model's repo)",
    )
    p.add_argument(
        "--prune", action="store_true", help="(Hub) also remove files of main cas never wrote"
    )
    p.add_argument(
        "--read-back",
        action="store_true",
        help="download and hash every byte before tagging; refuse to tag on a mismatch",
    )
    p.add_argument(
        "--media-type",
        action="append",
        metavar="NAME=TYPE",
        help="(oci://) a file's layer media type instead of its role's",
    )
    p.add_argument(
        "--plain-http", action="store_true", help="(oci://) the registry speaks HTTP, not HTTPS"
    )
    p.add_argument(
        "--key",
        metavar="PRIVATE.pem",
        help="sign the version before tagging (an elliptic-curve private key, PEM)",
    )
    p.add_argument(
        "--signature-only",
        action="store_true",
        help="send only the version's signature (pinned, or made with --key) to where it is",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas publish``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops import publish as ops  # noqa: PLC0415 (the remotes only here)

    media: list[tuple[str, str]] = []
    for item in args.media_type or ():
        name, sep, media_type = item.partition("=")
        if not sep or not name or not media_type:
            raise UsageError(f"--media-type {item!r}: expected NAME=TYPE")
        media.append((name, media_type))
    if args.signature_only:
        return _signature_only(args)
    request = ops.PublishRequest(
        args.model,
        args.version,
        files=tuple(Path(f) for f in args.file or ()),
        names=tuple(args.names or ()),
        repo=args.repo,
        requires=args.requires,
        package=args.package,
        lock=Path(args.lock) if args.lock else None,
        set_default=args.set_default,
        set_latest=not args.no_latest,
        pre=args.pre,
        private=args.private,
        allow_lfs_pointer=args.allow_lfs_pointer,
        to=args.to,
        prune=args.prune,
        read_back=args.read_back,
        media_types=tuple(media),
        plain_http=args.plain_http,
        key=_key(args),
    )
    store = open_store(args)
    plan = ops.plan(request, store, dry_run=args.dry_run)
    if args.dry_run:
        if args.json:
            _json(plan, None, dry_run=True)
        else:
            _show_plan(plan)
        return 0
    with byte_bar(ops.upload_bytes(plan), "uploading", quiet=args.quiet) as bar:
        result = ops.publish(plan, store, progress=bar)
    if args.json:
        _json(plan, result, dry_run=False)
        return 0
    lock = show_path(plan.lock_path)
    if plan.up_to_date:
        at = f" at {_short(result.commit)}" if result.commit else ""
        say(
            args,
            f"{args.model}@{plan.version} is already published to {plan.remote.remote}{at} "
            f"and pinned in {lock}; nothing to do",
        )
        return 0
    if plan.default_changed:
        say(args, f"default weights file of {args.model} is now {plan.weights_path}")
    done = result.published
    assert done is not None
    revision = f", {_revision_word(plan)} {_short(done.revision)}" if done.revision else ""
    mounted = f", {len(done.mounted)} mounted" if done.mounted else ""
    present = f", {len(done.present)} already there" if done.present else ""
    hub = plan.remote.remote.startswith("hf://")
    removed = f", {len(done.deleted)} removed from the tree" if hub or done.deleted else ""
    kept = plan.remote.named("keep")
    again = " (already published: the tag was adopted)" if plan.remote.tag_exists else ""
    say(
        args,
        f"published {args.model}@{plan.version} to {plan.remote.remote} (tag {plan.tag}"
        f"{revision}; {len(done.uploaded)} file(s) uploaded{mounted}{present}{removed}){again}",
    )
    if kept:
        say(args, f"kept {len(kept)} file(s) cas did not write: {', '.join(kept)}")
    if request.read_back:
        say(args, f"read back every byte of {len(plan.files)} file(s): all as sent")
    if plan.signed is not None:
        _warn_untrusted(plan.lock_path, args.model, plan.version, plan.signed.signer)
        where = done.signed or plan.remote.remote
        say(args, f"signed by key {plan.signed.signer}; the signature travels with it: {where}")
    commit = f"commit it with `git add {lock} && git commit -m 'weights: publish {plan.version}'`"
    if plan.place == "unchanged":
        say(args, f"{lock} already records {plan.source}")
    elif plan.place == "mirror":
        say(args, f"pinned in {lock} with {plan.remote.remote} as a mirror: {commit}")
    else:
        say(args, f"pinned in {lock}: {commit}")
    return 0


def _key(args: argparse.Namespace) -> Any:
    if args.key is None:
        return None
    from modelcas.signing import KeySpec  # noqa: PLC0415

    return KeySpec(Path(args.key))


def _warn_untrusted(lock: Path, model: str, version: str, signer: str) -> None:
    """The warning `cas sign` gives: a signer the lockfile's trust list does not name."""
    from modelcas.lockfile import Lockfile  # noqa: PLC0415

    trusted = Lockfile.load(lock).trusted(model) if lock.exists() else []
    if trusted and not any(t.key == signer for t in trusted if t.key is not None):
        out(
            f"cas: warning: {show_path(lock)} does not trust key {signer} for {model}: add it "
            f"(cas trust add PUB.pem), or sync and loads refuse {model}@{version}",
            file=sys.stderr,
        )


def _signature_only(args: argparse.Namespace) -> int:
    """``--signature-only``: a published version's signature, sent to where the version is."""
    from modelcas.ops.signatures import publish_signature  # noqa: PLC0415

    extra = [
        flag
        for flag, given in (
            ("--file", args.file),
            ("--as", args.names),
            ("--requires", args.requires),
            ("--package", args.package),
            ("--set-default", args.set_default),
            ("--dry-run", args.dry_run),
            ("--private", args.private),
            ("--no-latest", args.no_latest),
            ("--prune", args.prune),
            ("--read-back", args.read_back),
            ("--media-type", args.media_type),
        )
        if given
    ]
    if extra:
        raise UsageError(
            f"--signature-only sends only a signature: {', '.join(extra)} do not apply"
        )
    to = args.to or (f"hf://{args.repo}" if args.repo else None)
    out = publish_signature(
        args.model,
        args.version,
        open_store(args),
        key=_key(args),
        to=to,
        lock=Path(args.lock) if args.lock else None,
        plain_http=args.plain_http,
    )
    if out.pinned:
        _warn_untrusted(out.lock, out.model, out.version, out.signer)
    if args.json:
        emit_json(
            "publish",
            {
                "signature_only": True,
                "model": out.model,
                "version": out.version,
                "remote": out.remote,
                "source": out.source,
                "signature": {
                    "signer": out.signer,
                    "sha256": out.signature.sha256,
                    "size": out.signature.size,
                    "at": out.where,
                    "sent": out.where is not None,
                },
                "pinned": out.pinned,
                "lock": show_path(out.lock),
            },
        )
        return 0
    label = f"{out.model}@{out.version}"
    if out.where is None:
        say(args, f"{out.source} already holds the signature of {label} by key {out.signer}")
    else:
        say(args, f"published the signature of {label} by key {out.signer}: {out.where}")
    if out.pinned:
        say(args, f"pinned the signature in {show_path(out.lock)}")
    return 0


def _revision_word(plan: Any) -> str:
    return "manifest" if plan.remote.remote.startswith("oci://") else "commit"


def _short(revision: str | None) -> str:
    if revision is None:
        return ""
    return revision if revision.startswith("sha256:") else revision[:12]


def _json(plan: Any, result: Any, *, dry_run: bool) -> None:
    steps = {s.name: s for s in plan.remote.steps}
    emit_json(
        "publish",
        {
            "dry_run": dry_run,
            "model": plan.request.model,
            "version": plan.version,
            "remote": plan.remote.remote,
            "repo": plan.remote.remote,
            "tag": plan.tag,
            "tag_exists": plan.remote.tag_exists,
            "source": plan.source,
            "commit": result.commit if result is not None else plan.remote.revision,
            "lock": show_path(plan.lock_path),
            "place": plan.place,
            "requires": plan.requires,
            "package": plan.package,
            "read_back": plan.request.read_back,
            "files": [
                {
                    "name": name,
                    "local": show_path(f.local),
                    "size": f.digest.size,
                    "sha256": f.digest.sha256,
                    "blake3": f.digest.blake3,
                    "action": steps[name].action if name in steps else "present",
                    "upload": name in steps and steps[name].action == "upload",
                }
                for name, f in sorted(plan.files.items())
            ],
            "delete": plan.remote.named("delete"),
            "prune": plan.remote.named("prune"),
            "keep": plan.remote.named("keep"),
            "uploaded": result.uploaded if result is not None else [],
            "signature": {
                "signer": plan.signed.signer,
                "sha256": plan.signed.digest.sha256,
                "size": plan.signed.digest.size,
                "at": result.published.signed if result and result.published else None,
            }
            if plan.signed is not None
            else None,
        },
    )


_ACTIONS = {
    "upload": "upload",
    "present": "already there, not sent",
    "mount": "mounted, not sent",
}


def _show_plan(plan: Any) -> None:
    path = show_path(plan.lock_path)
    rp = plan.remote
    where = {"hf": "on the Hub", "oci": "in the registry"}.get(
        rp.remote.split(":", 1)[0], "in the directory"
    )
    out(f"dry run: nothing will be changed {where} or in {path}")
    state = "exists" if rp.repo_exists else "will be created"
    out(f"  repo     {rp.remote} ({state})")
    for step in rp.steps:
        if step.action not in _ACTIONS:
            continue
        d = step.digest
        local = plan.files.get(step.name)
        what = f"{step.note}, not sent" if step.action == "mount" else _ACTIONS[step.action]
        head = (
            f"file     {show_path(local.local)} -> {step.name}"
            if local
            else f"blob     {step.name}"
        )
        out(f"  {head}  {d.size} bytes ({human(d.size)})  {d.address}  [{what}]")
    for name in rp.named("delete"):
        out(f"  delete   {name} (written by an earlier publish, not part of {plan.version})")
    for name in rp.named("prune"):
        out(f"  prune    {name} (not written by cas; removed because of --prune)")
    for name in rp.named("keep"):
        out(f"  keep     {name} (not written by cas; --prune would remove it)")
    tag_state = f"exists at {_short(rp.revision)}, reused" if rp.tag_exists else "will be created"
    out(f"  tag      {plan.tag} ({tag_state})")
    out(
        f"  requires {plan.requires or 'any version'}"
        + (f" of {plan.package}" if plan.package else "")
    )
    if plan.default_changed:
        out(f"  default  {plan.weights_path} becomes the model's default weights file")
    if plan.signed is not None:
        made = "signed now" if plan.signed_now else "as pinned"
        out(f"  sign     key {plan.signed.signer} ({made}; the signature goes with it)")
    diff = difflib.unified_diff(
        plan.before.splitlines(keepends=True),
        plan.after.splitlines(keepends=True),
        fromfile=f"{path} (now)",
        tofile=f"{path} (after publish)",
    )
    out("  lockfile diff:")
    for line in diff:
        out(line.removesuffix("\n"))
