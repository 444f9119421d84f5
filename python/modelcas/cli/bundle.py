"""``cas bundle``: create, list, verify, extract and ingest model bundles."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelcas import bundle as bundles
from modelcas.cli._common import (
    add_action,
    add_command,
    emit_json,
    err,
    human,
    one_line,
    open_store,
    out,
    problems,
    say,
    show_path,
)
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError

HELP = "create a model bundle (one zip for a pipeline's models), or ls/verify/extract/add one"
DESCRIPTION = """\
Create a model bundle from a bundle config: every model file and its metadata JSON, renamed
to standard names (HiTMicTools' names for its seven keys, such as
NAFNet-bf_focus_restoration.pth and PIClassifier.pkl; {ModelType}-{key}{ext} for any other
key; the original name kept in the metadata), a config.yml mapping each key to its files with
its inferer_args/model_args, an optional config_tracker.yml, and a manifest of every member's
size, crc32, sha256 and blake3. A .sha256 sidecar (sha256sum format) is written next to the
bundle; the two are replaced as a pair. Members are stored uncompressed by default: weights
barely compress, and stored members are the fastest to write and read.

In the config, model_path is a file, a pinned NAME[@VERSION] from cas.lock, or a sha256:<hex>
address. A relative path is taken from the working directory when it exists there (as
HiTMicTools reads it), else from the config's folder; when both exist and differ, a warning
names both. model_type (or the metadata JSON's model_type) gives the type prefix. Everything
is checked before anything is written; --dry-run never downloads.

Actions on an existing bundle:
  ls BUNDLE        keys, model types, sizes, digests and args (--json)
  verify BUNDLE    every member (size, crc32, blake3; --deep adds sha256) against the
                   manifest, and the file against its .sha256, in one read (--json)
  extract BUNDLE   -d DIR: every member, verified, written only inside DIR
  add BUNDLE       ingest every member into the store (shared members are stored once)

A member the manifest does not list fails ls, extract, add and verify (exit 1)."""
EPILOG = """\
examples:
  cas bundle -i config_model_bundle.yml -o model_collection.zip
      -> model_collection_20251218.zip and model_collection_20251218.zip.sha256
  cas bundle -i config.yml -o bundles/2025/dec/exp044.zip --no-auto-date
  cas bundle -i config_model_bundle.yml -d output_dir/
      -> output_dir/model_collection_20251218.zip (and its .sha256)
  cas bundle -i config.yml -o b.zip --compression zstd:3 --dry-run
  cas bundle verify model_collection_20251218.zip
  cas bundle ls model_collection_20251218.zip --json

Use it in a pipeline config:
  models:
    model_collection: ./model_collection_20251218.zip
and in Python: modelcas.bundle.resolve_pipeline_config("pipeline.yml")

SOURCE_DATE_EPOCH fixes creation_date and member timestamps: the same inputs then give
byte-identical bundles.

--json prints {"schema": "cas.bundle/1", "bundle": PATH, "sidecar": PATH, "sha256": HEX,
"size": N, "models": [{"key", "model_type", "member", "source"}, ...], "dry_run": BOOL}
(with --dry-run, "sidecar", "sha256" and "size" are null and nothing is written).

exit codes: 0 ok; 1 a check failed (a member differs, is missing or unlisted, a hostile
archive); 2 a usage or unexpected error."""

LS = "Keys, model types, sizes, digests and args of a bundle (nothing is ingested)."
LS_EPILOG = """\
examples:
  cas bundle ls model_collection_20251218.zip
  cas bundle ls model_collection_20251218.zip --json

--json prints one object, schema "cas.bundle-ls/1":
  {"schema": "cas.bundle-ls/1", "bundle": PATH,
   "metadata": {...the _bundle_metadata of config.yml...},
   "models": [{"key", "model_type", "member", "original_name", "size", "sha256", "blake3",
               "inferer_args", "model_args"}, ...],
   "tracker": {"member", "size", "sha256"} or null}"""
VERIFY = """\
Every member against the manifest (size, crc32, blake3; --deep adds sha256) and the file
against its .sha256 sidecar, from one read of the bundle. Exit 1 on any problem."""
VERIFY_EPILOG = """\
examples:
  cas bundle verify model_collection_20251218.zip
  cas bundle verify model_collection_20251218.zip --deep --json

--json prints one object, schema "cas.bundle-verify/1", and exits 1 when "ok" is false:
  {"schema": "cas.bundle-verify/1", "bundle": PATH, "ok": BOOL, "deep": BOOL,
   "members": N (members whose data was checked),
   "sidecar": {"path": PATH, "sha256": HEX (the bundle's actual sha256)} or null,
   "problems": [{"member": NAME or null, "kind": KIND, "message": TEXT}, ...]}
KIND is one of unlisted, missing, size, crc32, sha256, blake3, corrupt, sidecar."""
EXTRACT = """\
Every member, checked against the manifest before it is renamed into place, written only
inside DIR: no link below DIR is followed (DIR itself may be one). All or nothing. Running
it again is safe: a file already in DIR with the member's verified bytes is kept as it is;
one with other bytes stops the extraction (--force replaces it)."""
EXTRACT_EPILOG = """\
examples:
  cas bundle extract model_collection_20251218.zip -d extracted/

--json prints {"schema": "cas.bundle-extract/1", "bundle": PATH, "dest": DIR,
"written": [PATH, ...], "unchanged": [PATH, ...] (already there, the same bytes)}"""
ADD = "Ingest every member into the store (shared members are stored once); a gc root."
ADD_EPILOG = """\
examples:
  cas bundle add model_collection_20251218.zip

--json prints {"schema": "cas.bundle-add/1", "bundle": PATH, "added": N, "present": N}"""

ACTIONS = ("ls", "verify", "extract", "add")
DEFAULT_NAME = "model_collection.zip"  # -d DIR: the seed's name, dated unless --no-auto-date


def compression(text: str) -> str:
    """An argparse type: ``stored``, ``deflate[:0-9]`` or ``zstd[:1-22]``, checked at parse time."""
    try:
        bundles.parse_compression(text)
    except UsageError as e:
        hint = "use stored, deflate[:0-9] or zstd[:1-22]"
        raise argparse.ArgumentTypeError(f"{e.message}; {hint}") from None
    return text


def register(sub: Any) -> None:
    """Add ``cas bundle`` to the command parser."""
    p = add_command(sub, "bundle", HELP, DESCRIPTION, EPILOG)
    p.add_argument("-i", "--input", metavar="CONFIG", help="bundle config (YAML) to create from")
    p.add_argument("-o", "--output", metavar="OUT.zip", help="bundle to create")
    p.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        help="create DIR/model_collection_<date>.zip (the seed's create-mbundle -d)",
    )
    p.add_argument("--no-auto-date", action="store_true", help="use OUT.zip exactly as given")
    p.add_argument(
        "--compression",
        default="stored",
        metavar="METHOD",
        type=compression,
        help="stored (default), deflate[:0-9] or zstd[:1-22]",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check inputs, show the plan, write nothing (and download nothing)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(run=run, action=None)
    actions = p.add_subparsers(
        title="actions on an existing bundle", metavar="ACTION", dest="action", required=False
    )
    ls = add_action(actions, "ls", "keys, model types, sizes, digests and args", LS, LS_EPILOG)
    verify = add_action(
        actions,
        "verify",
        "members against the manifest, file against .sha256; exit 1 on any mismatch",
        VERIFY,
        VERIFY_EPILOG,
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="recompute every member's sha256 as well as blake3 and crc32",
    )
    extract = add_action(
        actions, "extract", "safe, verified extraction into -d DIR", EXTRACT, EXTRACT_EPILOG
    )
    extract.add_argument("-d", "--dest", metavar="DIR", required=True, help="destination")
    extract.add_argument("--force", action="store_true", help="replace existing files")
    extract.add_argument("--deep", action="store_true", help="check every member's sha256 as well")
    extract.add_argument(
        "--sync",
        action="store_true",
        help="flush the files to disk before exiting (unzip does not; off by default)",
    )
    add = add_action(actions, "add", "ingest every member into the store", ADD, ADD_EPILOG)
    for action in (ls, verify, extract, add):
        action.add_argument("bundle_path", metavar="BUNDLE", help="the bundle")


def run(args: argparse.Namespace) -> int:
    """Execute ``cas bundle``."""
    if args.action is None:
        if args.output and args.dir:
            raise UsageError("-o names the bundle, -d its folder: give one of them")
        if args.dir:
            args.output = os.path.join(args.dir, DEFAULT_NAME)
        if not (args.input and args.output):
            raise UsageError(
                "create a bundle with -i CONFIG -o OUT.zip (or -d DIR), or give an action: "
                + ", ".join(ACTIONS),
                hint="run `cas bundle --help`",
            )
        return _create(args)
    return {"ls": _ls, "verify": _verify, "extract": _extract, "add": _add}[args.action](args)


def _warn(message: str) -> None:
    print(f"cas: warning: {one_line(message)}", file=sys.stderr)


def _size(m: bundles.PlannedModel) -> int:
    if m.source is not None:
        return m.source.stat().st_size
    return m.pinned.size if m.pinned else 0


def _create(args: argparse.Namespace) -> int:
    store = open_store(args)
    plan = bundles.plan_bundle(
        args.input, args.output, auto_date=not args.no_auto_date, store=store, lock=args.lock
    )
    for warning in plan.warnings:
        _warn(warning)
    total = sum(_size(m) for m in plan.models)
    if args.dry_run:
        if args.json:
            emit_json("bundle", _created_json(plan, None, dry_run=True))
            return 0
        out(
            f"dry run: would write {show_path(plan.output)} ({args.compression}), "
            f"{len(plan.models)} model(s), {human(total)}"
        )
        for m in plan.models:
            origin = f"fetch {m.fetch.label}" if m.fetch is not None else show_path(m.source or "")
            out(
                f"  {m.key:<20} {origin} -> {m.member}  "
                f"({m.model_type or 'no model type'}; from {m.found})"
            )
        if plan.tracker:
            out(f"  tracker              {show_path(plan.tracker)} -> {bundles.TRACKER}")
        return 0
    if plan.output.exists() and not args.force:
        raise UsageError(
            f"{plan.output} exists",
            hint="pass --force to replace it, or choose "
            "another name (auto-dating adds today's date)",
        )
    with byte_bar(total, "bundling", quiet=args.quiet) as bar:
        created = bundles.write(
            plan, compression=args.compression, force=args.force, store=store, progress=bar
        )
    size = created.path.stat().st_size
    if args.json:
        emit_json("bundle", _created_json(plan, created, dry_run=False))
        return 0
    say(args, f"wrote {show_path(created.path)}  ({len(plan.models)} models, {human(size)})")
    say(args, f"wrote {show_path(created.sidecar)}  sha256:{created.sha256}")
    return 0


def _created_json(
    plan: bundles.BundlePlan, created: bundles.Created | None, *, dry_run: bool
) -> dict[str, Any]:
    models = [
        {
            "key": m.key,
            "model_type": m.model_type,
            "member": m.member,
            "source": m.fetch.label if m.fetch is not None else os.fsdecode(m.source or ""),
        }
        for m in plan.models
    ]
    return {
        "bundle": os.fsdecode(created.path if created else plan.output),
        "sidecar": os.fsdecode(created.sidecar) if created else None,
        "sha256": created.sha256 if created else None,
        "size": created.path.stat().st_size if created else None,
        "models": models,
        "dry_run": dry_run,
    }


def _ls(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path)
    rows = []
    for key in b.keys():  # noqa: SIM118 (Bundle.keys is a method, not dict.keys)
        entry = b.config[key]
        d = b.manifest.get(entry["model_path"])
        rows.append(
            {
                "key": key,
                "model_type": entry.get("model_type"),
                "member": entry["model_path"],
                "original_name": entry.get("original_name"),
                "size": d.size if d else None,
                "sha256": d.sha256 if d else None,
                "blake3": d.blake3 if d else None,
                "inferer_args": entry.get("inferer_args"),
                "model_args": entry.get("model_args"),
            }
        )
    meta = b.config.get("_bundle_metadata", {})
    tracker = b.config.get("tracker")
    tname = tracker.get("config_path") if isinstance(tracker, dict) else None
    td = b.manifest.get(tname) if isinstance(tname, str) else None
    if args.json:
        doc = {
            "bundle": os.fsdecode(b.path),
            "metadata": meta,
            "models": rows,
            "tracker": {"member": tname, "size": td.size, "sha256": td.sha256} if td else None,
        }
        # YAML values JSON has no type for (dates) are given as text.
        emit_json("bundle-ls", json.loads(json.dumps(doc, default=str)))
        return 0
    out(
        f"{show_path(b.path)}: created {meta.get('creation_date', '?')} from "
        f"{meta.get('source_config', '?')}"
    )
    for r in rows:
        out(
            f"  {r['key']:<20} {r['model_type'] or '-':<12} {r['member']:<48} "
            f"{human(r['size'] or 0):>10}  sha256:{(r['sha256'] or '?')[:16]}…"
        )
        for name in ("inferer_args", "model_args"):
            if r[name]:
                out(f"      {name}: {json.dumps(r[name], default=str)}")
    if td:
        out(f"  {'tracker':<20} {'-':<12} {tname:<48} {human(td.size):>10}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path, listed=False)
    sidecar = bundles.sidecar_of(b.path)
    total = sum(m.size for m in b.members()) + (b.path.stat().st_size if sidecar.is_file() else 0)
    with byte_bar(total, "verifying", quiet=args.quiet) as bar:
        result = b.check(deep=args.deep, progress=bar)
    if args.json:
        doc = {
            "bundle": os.fsdecode(b.path),
            "ok": result.ok,
            "deep": args.deep,
            "members": result.checked,
            "sidecar": (
                {"path": os.fsdecode(result.sidecar), "sha256": result.sha256}
                if result.sidecar
                else None
            ),
            "problems": [
                {"member": p.member, "kind": p.kind, "message": p.message} for p in result.problems
            ],
        }
        emit_json("bundle-verify", doc)
        return 0 if result.ok else 1
    problems([f"FAILED {p.message}" for p in result.problems])
    if not result.ok:
        err(f"{show_path(b.path)}: {len(result.problems)} problem(s)")
        return 1
    extra = " and its .sha256" if result.sidecar else " (no .sha256 sidecar found)"
    say(args, f"{show_path(b.path)}: {result.checked} members match the manifest{extra}: OK")
    return 0


def _extract(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path)
    total = sum(m.size for m in b.members())
    with byte_bar(total, "extracting", quiet=args.quiet) as bar:
        try:
            written = b.extract(
                args.dest, force=args.force, deep=args.deep, sync=args.sync, progress=bar
            )
        except FileExistsError as e:
            where = show_path(e.filename) if e.filename else show_path(args.dest)
            raise UsageError(
                f"{where} exists with other bytes than the bundle's member; nothing was changed",
                hint="pass --force to replace it, or extract into another directory",
            ) from None
    fresh = {os.fsdecode(p) for p in written}
    paths = [os.fsdecode(Path(args.dest).joinpath(*m.name.split("/"))) for m in b.members()]
    unchanged = [p for p in paths if p not in fresh]
    if args.json:
        doc = {
            "bundle": os.fsdecode(b.path),
            "dest": os.fsdecode(args.dest),
            "written": sorted(fresh),
            "unchanged": unchanged,
        }
        emit_json("bundle-extract", doc)
        return 0
    same = f" ({len(unchanged)} already there with the same bytes)" if unchanged else ""
    say(args, f"extracted {len(paths)} verified file(s) into {show_path(args.dest)}{same}")
    return 0


def _add(args: argparse.Namespace) -> int:
    store = open_store(args)
    b = bundles.Bundle.read(args.bundle_path, store=store)
    total = sum(m.size for m in b.members())
    with byte_bar(total, "ingesting", quiet=args.quiet) as bar:
        added = b.ingest(progress=bar)
    store.register_root(b.path, "bundle")
    if args.json:
        doc = {"bundle": os.fsdecode(b.path), "added": added, "present": len(b.manifest) - added}
        emit_json("bundle-add", doc)
        return 0
    say(
        args,
        f"{added} new object(s) from {show_path(b.path)}; "
        f"{len(b.manifest) - added} already in the store",
    )
    return 0
