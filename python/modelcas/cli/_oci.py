"""The OCI side of ``cas publish --to oci://`` and ``cas pull oci://``: wiring and output."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from modelcas import oci
from modelcas.cli._common import human, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.digest import Digest
from modelcas.errors import UsageError
from modelcas.lockfile import locate
from modelcas.store import Store


def check_publish(args: argparse.Namespace) -> None:
    """Refuse what cannot work before hashing anything."""
    if args.repo:
        raise UsageError("--repo names a Hub repo; with --to the registry path says where")
    oci.check_tag(args.version, f"{args.model}@{args.version}")


def publish(
    args: argparse.Namespace,
    path: Path,
    store: Store,
    files: dict[str, tuple[Path, Digest]],
    requires: str | None,
) -> int:
    """Execute ``cas publish --to oci://``."""
    with byte_bar(sum(d.size for _, d in files.values()), "uploading") as bar:
        out = oci.publish_version(
            model=args.model,
            version=args.version,
            files=files,
            to=args.to,
            lock_path=path,
            store=store,
            requires=requires,
            weights_path=args.file[0] if args.file and len(args.file) == 1 else None,
            latest=not args.no_latest,
            plain_http=args.plain_http,
            dry_run=args.dry_run,
            progress=bar,
        )
    if out.result is None:
        _show_plan(out)
        return 0
    plan, where, a, r = out.plan, show_path(out.lock_path), out.plan.artifact, out.result
    done = "was already published" if plan.done else "published"
    print(
        f"{a.name}@{a.version} {done} to {plan.reference.repo_url} "
        f"(tag {plan.reference.tag}, manifest {a.digest})"
    )
    print(
        f"  blobs: {len(r.uploaded)} sent ({human(plan.upload_bytes)}), {len(r.mounted)} "
        f"mounted, {len(r.present)} already there"
    )
    if out.place == "unchanged":
        print(f"{where} already records {plan.source}")
    else:
        print(
            f"recorded in {where} as the version's {out.place}: commit it with "
            f"`git add {where} && git commit -m 'weights: publish {a.version}'`"
        )
    return 0


def _show_plan(out: oci.PublishOutcome) -> None:
    plan, where = out.plan, show_path(out.lock_path)
    print(f"dry run: nothing will be changed in the registry or in {where}")
    print(f"  repository {plan.reference.repo_url}")
    for step in plan.steps:
        what = {
            "present": "already in the registry, not sent",
            "mount": f"mounted from {step.mount_from}, not sent",
            "upload": "upload",
        }[step.action]
        d = step.blob.digest
        print(f"  blob       {step.name}  {human(d.size)}  {d.address}  [{what}]")
    state = "exists with this manifest, reused" if plan.done else "will be created"
    print(f"  tag        {plan.reference.tag} ({state})")
    print(f"  manifest   {plan.artifact.digest}")
    print("  lockfile diff:")
    sys.stdout.writelines(
        difflib.unified_diff(
            out.lock_before.splitlines(keepends=True),
            out.lock_after.splitlines(keepends=True),
            fromfile=f"{where} (now)",
            tofile=f"{where} (after publish)",
        )
    )


def pull(args: argparse.Namespace) -> int:
    """Execute ``cas pull oci://…``."""
    if args.addresses or args.file:
        raise UsageError("an OCI pull takes the whole version: drop the addresses and --file")
    store = open_store(args)
    lock_path = None if args.no_pin else locate(args.lock, must_exist=False)
    with byte_bar(None, "downloading") as bar:
        out = oci.pull_artifact(
            args.source,
            store,
            name=args.name,
            version=args.version,
            lock_path=lock_path,
            plain_http=args.plain_http,
            progress=bar,
        )
    for f in out.files:
        state = "downloaded" if f.downloaded else "present   "
        print(f"{state}  {f.path}  {f.digest.address[:23]}…  ({human(f.digest.size)}, verified)")
    if out.lock_path is not None:
        state = {"pinned": "pinned", "already": "already pinned", "mirror": "added a mirror to"}[
            out.pinned
        ]
        print(
            f"{state} {out.name}@{out.version} ({out.reference.url}) in {show_path(out.lock_path)}"
        )
    else:
        print(f"fetched {out.reference.url}")
    return 0
