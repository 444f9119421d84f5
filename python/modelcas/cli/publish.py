"""``cas publish``: publish a version of a model's weights to the Hugging Face Hub."""

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
    say,
    show_path,
)
from modelcas.errors import UsageError

HELP = "publish weights to the Hugging Face Hub (or an OCI registry): upload, tag, pin"
DESCRIPTION = """\
Publish a version of a model's weights in one step: hash and store the files, create the
Hub repo if it is missing, commit exactly the version's files (bytes the Hub already has
are not sent again; files of the previous version that this one does not pin are deleted
in the same commit), read back what the Hub recorded for every file, tag that commit
weights-VERSION, and pin the version in the lockfile (size, sha256, blake3, requires,
source, commit) with `latest` bumped. A tag holds exactly its version's files: if the Hub
recorded anything else, no tag is created and nothing is pinned.

The repo and the default file come from the model's earlier versions in the lockfile, and
--requires defaults to the previous version's range: a retrain on the same architecture is
just `cas publish MODEL --version v1.1`. File names on the Hub are the lockfile's: the
first publish's name (best.pt) stays the name of later versions, whatever the local file is
called, unless --as renames it. --file is for this publish only (the model's first publish
remembers it; --set-default changes it later). `requires` is checked against the package
named in the lockfile (`package:`), recorded from the nearest pyproject.toml or --package.
An existing tag is never moved, and an existing version is never overwritten. If anything
fails midway the lockfile is unchanged, and the same command finishes the job. The token
comes from HF_TOKEN or `hf auth login`; it is never printed.

With --to oci://HOST[:PORT]/REPO the version goes to an OCI registry instead, as one CNCF
ModelPack artifact tagged VERSION (docs/oci.md); credentials come from the docker or podman
config. A version the lockfile already pins (say, from the Hub) gets the registry as a
mirror."""
EPILOG = f"""\
examples:
  cas publish cser-detector --version v1.1 --dry-run
  cas publish cser-detector --version v1.1
  cas publish cser-detector --version v2.0 --requires '>=1.0.0,<2.0.0'   (architecture change)
  cas publish ner-tagger --version v1.0 --repo sidxz/structflo-ner-tagger --file model.pt
  cas publish cser-detector --version v1.2 --file exp/last.pt           (still best.pt on the Hub)
  cas publish cser-detector --version v1.1 --lock structflo/cser/weights.lock
  cas publish cser-detector --version v1.1 --to oci://registry.lab:5000/models/cser-detector

{json_help("publish", ['"model"', '"version"', '"repo"', '"tag"', '"commit"', '"files": [...]'])}

After publishing, commit the lockfile: git add cas.lock && git commit -m 'weights: v1.1'

exit status: 0 published (or already published); 1 the Hub recorded other bytes or files,
or the tag exists elsewhere; 2 usage error or a Hub failure (run the command again)."""


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
        help="the file's name on the Hub and in the lockfile (one per --file)",
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
        "--to", metavar="oci://HOST[:PORT]/REPO", help="publish to an OCI registry instead"
    )
    p.add_argument(
        "--plain-http", action="store_true", help="(--to) the registry speaks HTTP, not HTTPS"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas publish``."""
    from modelcas.cli._progress import byte_bar  # noqa: PLC0415
    from modelcas.ops import publish as ops  # noqa: PLC0415 (the Hub client only here)

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
    )
    store = open_store(args)
    if args.to is not None:
        from modelcas.cli import _oci  # noqa: PLC0415 (only for --to)

        _oci.check_publish(args)
        local = ops.prepare(request, store, dry_run=args.dry_run)
        files = {name: (f.local, f.digest) for name, f in local.files.items()}
        return _oci.publish(args, local.lock_path, store, files, local.requires)
    if args.plain_http:
        raise UsageError("--plain-http goes with --to oci://...")
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
        _json(plan, result.commit, dry_run=False)
        return 0
    if plan.up_to_date:
        say(
            args,
            f"{args.model}@{args.version} is already published at {result.commit[:12]} "
            f"and pinned in {show_path(plan.lock_path)}; nothing to do",
        )
        return 0
    if plan.default_changed:
        say(args, f"default weights file of {args.model} is now {plan.weights_path}")
    say(
        args,
        f"published {args.model}@{args.version} to hf://{plan.repo_id} "
        f"(tag {plan.tag}, commit {result.commit[:12]}; {len(result.uploaded)} file(s) "
        f"uploaded, {len(plan.delete)} removed from the tree)",
    )
    lock = show_path(plan.lock_path)
    say(
        args,
        f"pinned in {lock}: commit it with "
        f"`git add {lock} && git commit -m 'weights: publish {args.version}'`",
    )
    return 0


def _json(plan: Any, commit: str | None, *, dry_run: bool) -> None:
    emit_json(
        "publish",
        {
            "dry_run": dry_run,
            "model": plan.request.model,
            "version": plan.request.version,
            "repo": f"hf://{plan.repo_id}",
            "tag": plan.tag,
            "commit": commit,
            "lock": show_path(plan.lock_path),
            "requires": plan.requires,
            "package": plan.package,
            "files": [
                {
                    "name": name,
                    "local": show_path(f.local),
                    "size": f.digest.size,
                    "sha256": f.digest.sha256,
                    "blake3": f.digest.blake3,
                    "upload": name not in plan.already_on_hub and plan.tag_commit is None,
                }
                for name, f in sorted(plan.files.items())
            ],
            "delete": plan.delete,
        },
    )


def _show_plan(plan: Any) -> None:
    path = show_path(plan.lock_path)
    print(f"dry run: nothing will be changed on the Hub or in {path}")
    state = "exists" if plan.repo_exists else "will be created"
    print(f"  repo     hf://{plan.repo_id} ({state})")
    for name, f in sorted(plan.files.items()):
        upload = "already on the Hub, not uploaded" if name in plan.already_on_hub else "upload"
        print(
            f"  file     {show_path(f.local)} -> {name}  {f.digest.size} bytes "
            f"({human(f.digest.size)})  sha256:{f.digest.sha256}  [{upload}]"
        )
    for name in plan.delete:
        print(f"  delete   {name} (not part of {plan.request.version})")
    tag_state = f"exists at {plan.tag_commit}, reused" if plan.tag_commit else "will be created"
    print(f"  tag      {plan.tag} ({tag_state})")
    print(
        f"  requires {plan.requires or 'any version'}"
        + (f" of {plan.package}" if plan.package else "")
    )
    if plan.default_changed:
        print(f"  default  {plan.weights_path} becomes the model's default weights file")
    diff = difflib.unified_diff(
        plan.before.splitlines(keepends=True),
        plan.after.splitlines(keepends=True),
        fromfile=f"{path} (now)",
        tofile=f"{path} (after publish)",
    )
    print("  lockfile diff:")
    sys.stdout.writelines(diff)
