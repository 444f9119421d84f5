"""``cas publish``: publish a version of a model's weights to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from modelcas import hub, lockfile
from modelcas.cli._common import add_command, human, open_store, show_path
from modelcas.digest import Digest
from modelcas.errors import UsageError
from modelcas.hashing import hash_file
from modelcas.lockfile import LockedModel, Lockfile, parse_requires, parse_version
from modelcas.registry import Registry
from modelcas.remotes import parse_source
from modelcas.store import Store

HELP = "publish weights to the Hugging Face Hub (or an OCI registry): upload, tag, pin"
DESCRIPTION = """\
Publish a version of a model's weights in one step: hash the files, create the Hub repo if
it is missing, upload the files in one commit (bytes the Hub already has are not sent
again), tag that commit weights-VERSION, and pin the version in the lockfile (size, sha256,
blake3, requires, source, commit) with `latest` bumped.

The repo and the default file come from the model's earlier versions in the lockfile, and
--requires defaults to the previous version's range: a retrain on the same architecture is
just `cas publish MODEL --version v1.1`. An existing tag is never moved and an existing
version is never overwritten. If anything fails midway the lockfile is unchanged, and the
same command finishes the job. The token comes from HF_TOKEN or `hf auth login`; it is
never printed.

With --to oci://HOST[:PORT]/REPO the version goes to an OCI registry instead, as one CNCF
ModelPack artifact tagged VERSION (docs/oci.md); credentials come from the docker or podman
config. A version the lockfile already pins (say, from the Hub) gets the registry as a mirror."""
EPILOG = """\
examples:
  cas publish cser-detector --version v1.1 --dry-run
  cas publish cser-detector --version v1.1
  cas publish cser-detector --version v2.0 --requires '>=1.0.0,<2.0.0'   (architecture change)
  cas publish ner-tagger --version v1.0 --repo sidxz/structflo-ner-tagger --file model.pt
  cas publish cser-detector --version v1.1 --lock structflo/cser/weights.lock
  cas publish cser-detector --version v1.1 --to oci://registry.lab:5000/models/cser-detector

After publishing, commit the lockfile: git add cas.lock && git commit -m 'weights: v1.1'"""


def register(sub: Any) -> None:
    """Add ``cas publish`` to the command parser."""
    p = add_command(sub, "publish", HELP, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL", help="the model name in the lockfile")
    p.add_argument("--version", required=True, metavar="VERSION", help="e.g. v1.1")
    p.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="weights file(s) to publish (default: the model's weights-path)",
    )
    p.add_argument("--repo", metavar="ORG/NAME", help="Hub repo (default: the model's repo)")
    p.add_argument(
        "--requires",
        metavar="SPEC",
        help="package versions these weights work with (default: previous range)",
    )
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--no-latest", action="store_true", help="do not move `latest`")
    p.add_argument(
        "--to", metavar="oci://HOST[:PORT]/REPO", help="publish to an OCI registry instead"
    )
    p.add_argument(
        "--plain-http", action="store_true", help="(--to) the registry speaks HTTP, not HTTPS"
    )
    p.set_defaults(run=run)


def _repo_of(model: LockedModel | None) -> str | None:
    if model is None:
        return None
    if model.repo:
        return parse_source(model.repo)[1] if model.repo.startswith("hf://") else model.repo
    for v in reversed(model.ordered()):
        src = model.versions[v].source
        if src and src.startswith("hf://"):
            return parse_source(src)[1]
    return None


def _previous(model: LockedModel | None, version: str) -> str | None:
    """The range of the version just below ``version`` (seed case 1: same architecture)."""
    if model is None or not model.versions:
        return None
    older = [v for v in model.ordered() if parse_version(v) < parse_version(version)]
    return model.versions[(older or model.ordered())[-1]].requires


def run(args: argparse.Namespace) -> int:
    """Execute ``cas publish``."""
    parse_version(args.version, f"{args.model}@{args.version}")
    if args.requires:
        parse_requires(args.requires, "--requires")
    path = lockfile.locate(args.lock, must_exist=False)
    lock = Lockfile.load(path) if path.exists() else Lockfile(path=path)
    model = lock.models.get(args.model)
    if args.to:
        from modelcas.cli import _oci  # noqa: PLC0415 (only for --to oci://)

        _oci.check_publish(args)
        store = open_store(args)
        files = _hashed(args, _local_files(args, model), store)
        pinned = model is not None and args.version in model.versions
        requires = args.requires if pinned else args.requires or _previous(model, args.version)
        return _oci.publish(args, path, store, files, requires)
    repo_id = args.repo or _repo_of(model)
    if repo_id is None:
        raise UsageError(
            f"{args.model} has no Hub repo yet",
            hint=f"a new model needs --repo ORG/NAME: cas publish {args.model} "
            f"--version {args.version} --repo ORG/NAME --file PATH",
        )
    parse_source(f"hf://{repo_id}")
    weights_path = model.weights_path if model else None
    requires = args.requires or _previous(model, args.version)
    store = open_store(args)
    files = _hashed(args, _local_files(args, model), store)
    plan = hub.plan_publish(
        model=args.model,
        version=args.version,
        repo_id=repo_id,
        files=files,
        requires=requires,
        weights_path=args.file[0] if args.file and len(args.file) == 1 else weights_path,
    )
    existing = model.versions.get(args.version) if model else None
    if (
        existing is not None
        and plan.tag_commit is not None
        and existing.commit == plan.tag_commit
        and existing.files == {p: d for p, (_, d) in files.items()}
    ):
        print(
            f"{args.model}@{args.version} is already published at {plan.tag_commit[:12]} "
            f"and pinned in {show_path(path)}; nothing to do"
        )
        return 0
    after = _pinned(lock, plan, commit="<commit of the upload>", latest=not args.no_latest)
    if args.dry_run:
        _show_plan(plan, lock.dumps() if path.exists() else "", after, path)
        return 0
    commit = hub.publish(plan, private=args.private)
    with lockfile.edit(path) as fresh:
        _pinned(fresh, plan, commit=commit, latest=not args.no_latest, into=fresh)
    Registry(Lockfile.load(path), store).register()
    print(
        f"published {args.model}@{args.version} to hf://{repo_id} "
        f"(tag {plan.tag}, commit {commit[:12]})"
    )
    print(
        f"pinned in {show_path(path)}: commit it with "
        f"`git add {show_path(path)} && git commit -m 'weights: publish {args.version}'`"
    )
    return 0


def _local_files(args: argparse.Namespace, model: LockedModel | None) -> list[Path]:
    weights_path = model.weights_path if model else None
    local_files = (
        [Path(f) for f in args.file]
        if args.file
        else ([Path(weights_path)] if weights_path else [])
    )
    if not local_files:
        raise UsageError(
            f"no weights file for {args.model}",
            hint="pass --file PATH (it is remembered for the next version)",
        )
    for f in local_files:
        if not f.is_file():
            raise UsageError(
                f"weights file {f} does not exist", hint="train first, or pass --file PATH"
            )
    return local_files


def _hashed(
    args: argparse.Namespace, local_files: list[Path], store: Store
) -> dict[str, tuple[Path, Digest]]:
    files: dict[str, tuple[Path, Digest]] = {}
    for f in local_files:
        # A real publish also ingests (one pass), so the pin is valid locally once written;
        # a dry run only hashes and changes nothing, not even the local store.
        d = hash_file(f).digest() if args.dry_run else store.add_file(f).info.digest
        if f.name in files:
            raise UsageError(f"two files named {f.name!r}")
        files[f.name] = (f, d)
    return files


def _pinned(
    lock: Lockfile,
    plan: hub.PublishPlan,
    *,
    commit: str,
    latest: bool,
    into: Lockfile | None = None,
) -> str:
    """Pin the plan's version into ``into`` (or a copy of ``lock``) and return the new text."""
    target = into if into is not None else Lockfile.loads(lock.dumps(), lock.path)
    target.pin(
        plan.model,
        plan.version,
        {p: d for p, (_, d) in plan.files.items()},
        requires=plan.requires,
        source=plan.source,
        commit=commit if len(commit) == 40 else None,
        set_latest=latest,
    )
    m = target.models[plan.model]
    m.repo = f"hf://{plan.repo_id}"
    m.weights_path = plan.weights_path
    return target.dumps()


def _show_plan(plan: hub.PublishPlan, before: str, after: str, path: Path) -> None:
    out = sys.stdout
    print(f"dry run: nothing will be changed on the Hub or in {show_path(path)}", file=out)
    state = "exists" if plan.repo_exists else "will be created"
    print(f"  repo     hf://{plan.repo_id} ({state})")
    for p, (local, d) in sorted(plan.files.items()):
        upload = "already on the Hub, not uploaded" if p in plan.already_on_hub else "upload"
        print(
            f"  file     {show_path(local)} -> {p}  {d.size} bytes ({human(d.size)})  "
            f"sha256:{d.sha256}  [{upload}]"
        )
    tag_state = f"exists at {plan.tag_commit}, reused" if plan.tag_commit else "will be created"
    print(f"  tag      {plan.tag} ({tag_state})")
    print(f"  requires {plan.requires or 'any version'}")
    diff = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"{show_path(path)} (now)",
        tofile=f"{show_path(path)} (after publish)",
    )
    print("  lockfile diff:")
    sys.stdout.writelines(diff)
