"""``cas bundle``: create, list, verify, extract and ingest model bundles."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from modelcas import bundle as bundles
from modelcas.cli._common import add_command, add_global_options, err, human, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.errors import UsageError

HELP = "create a model bundle (one zip for a pipeline's models), or ls/verify/extract/add one"
DESCRIPTION = """\
Create a model bundle from a bundle config: every model file and its metadata JSON, renamed
to standard names ({ModelType}-{key}{ext}, the original name kept in the metadata), a
config.yml mapping each key to its files with its inferer_args/model_args, an optional
config_tracker.yml, and a manifest of every member's size, sha256 and blake3. A .sha256
sidecar (sha256sum format) is written next to the bundle. Members are stored uncompressed by
default: weights barely compress, and stored members are the fastest to write and read.

In the config, model_path is a file (relative to the config), a pinned NAME[@VERSION] from
cas.lock, or a sha256:<hex> address; model_type (or the metadata JSON's model_type) gives the
type prefix, and bundle_name overrides the whole name. Everything is checked before anything
is written.

Actions on an existing bundle:
  ls BUNDLE        keys, model types, sizes, digests and args (--json)
  verify BUNDLE    every member (blake3, crc32; --deep adds sha256) against the manifest,
                   and the file against its .sha256
  extract BUNDLE   -d DIR: safe, verified extraction
  add BUNDLE       ingest every member into the store (shared members are stored once)"""
EPILOG = """\
examples:
  cas bundle -i config_model_bundle.yml -o model_collection.zip
      -> model_collection_20251218.zip and model_collection_20251218.zip.sha256
  cas bundle -i config.yml -o bundles/2025/dec/exp044.zip --no-auto-date
  cas bundle -i config.yml -o b.zip --compression zstd:3 --dry-run
  cas bundle verify model_collection_20251218.zip
  cas bundle ls model_collection_20251218.zip --json

Use it in a pipeline config:
  models:
    model_collection: ./model_collection_20251218.zip
and in Python: modelcas.bundle.resolve_pipeline_config("pipeline.yml")

SOURCE_DATE_EPOCH fixes creation_date and member timestamps: the same inputs then give
byte-identical bundles."""

ACTIONS = ("ls", "verify", "extract", "add")


def register(sub: Any) -> None:
    """Add ``cas bundle`` to the command parser."""
    p = add_command(sub, "bundle", HELP, DESCRIPTION, EPILOG)
    p.add_argument("-i", "--input", metavar="CONFIG", help="bundle config (YAML) to create from")
    p.add_argument("-o", "--output", metavar="OUT.zip", help="bundle to create")
    p.add_argument("--no-auto-date", action="store_true", help="use OUT.zip exactly as given")
    p.add_argument(
        "--compression",
        default="stored",
        metavar="METHOD",
        help="stored (default), deflate[:LEVEL] or zstd[:LEVEL]",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check inputs, show the plan, write nothing"
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(run=run, action=None)
    actions = p.add_subparsers(
        title="actions on an existing bundle", metavar="ACTION", dest="action", required=False
    )
    ls = actions.add_parser("ls", help="keys, model types, sizes, digests and args")
    ls.add_argument("--json", action="store_true", help="print JSON")
    verify = actions.add_parser(
        "verify", help="members against the manifest, file against .sha256; exit 1 on any mismatch"
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="recompute every member's sha256 as well as blake3 and crc32",
    )
    extract = actions.add_parser("extract", help="safe, verified extraction into -d DIR")
    extract.add_argument("-d", "--dest", metavar="DIR", required=True, help="destination")
    extract.add_argument("--force", action="store_true", help="replace existing files")
    actions.add_parser("add", help="ingest every member into the store")
    for action in (ls, verify, extract, actions.choices["add"]):
        action.add_argument("bundle_path", metavar="BUNDLE", help="the bundle")
        add_global_options(action)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas bundle``."""
    if args.action is None:
        if not (args.input and args.output):
            raise UsageError(
                "create a bundle with -i CONFIG -o OUT.zip, or give an action: "
                + ", ".join(ACTIONS)
            )
        return _create(args)
    if args.bundle_path is None:
        raise UsageError(f"cas bundle {args.action} needs a BUNDLE path")
    return {"ls": _ls, "verify": _verify, "extract": _extract, "add": _add}[args.action](args)


def _create(args: argparse.Namespace) -> int:
    bundles.parse_compression(args.compression)
    store = open_store(args)
    plan = bundles.plan_bundle(
        args.input, args.output, auto_date=not args.no_auto_date, store=store, lock=args.lock
    )
    total = sum(m.source.stat().st_size for m in plan.models)
    if args.dry_run:
        print(
            f"dry run: would write {show_path(plan.output)} ({args.compression}), "
            f"{len(plan.models)} model(s), {human(total)}"
        )
        for m in plan.models:
            print(
                f"  {m.key:<20} {show_path(m.source)} -> {m.member}  "
                f"({m.model_type or 'no model type'})"
            )
        if plan.tracker:
            print(f"  tracker              {show_path(plan.tracker)} -> {bundles.TRACKER}")
        return 0
    if plan.output.exists() and not args.force:
        raise UsageError(
            f"{plan.output} exists",
            hint="pass --force to replace it, or choose "
            "another name (auto-dating adds today's date)",
        )
    with byte_bar(total, "bundling") as bar:
        created = bundles.write(plan, compression=args.compression, force=args.force, progress=bar)
    print(
        f"wrote {show_path(created.path)}  ({len(plan.models)} models, "
        f"{human(created.path.stat().st_size)})"
    )
    print(f"wrote {show_path(created.sidecar)}  sha256:{created.sha256}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path, store=open_store(args))
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
    if args.json:
        print(
            json.dumps(
                {"bundle": os.fsdecode(b.path), "metadata": meta, "models": rows},
                indent=2,
                default=str,
            )
        )
        return 0
    print(
        f"{show_path(b.path)}: created {meta.get('creation_date', '?')} from "
        f"{meta.get('source_config', '?')}"
    )
    for r in rows:
        print(
            f"  {r['key']:<20} {r['model_type'] or '-':<12} {r['member']:<44} "
            f"{human(r['size'] or 0):>10}  sha256:{(r['sha256'] or '?')[:16]}…"
        )
        for name in ("inferer_args", "model_args"):
            if r[name]:
                print(f"      {name}: {json.dumps(r[name], default=str)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path, store=open_store(args))
    total = sum(m.size for m in b.members())
    with byte_bar(total, "verifying") as bar:
        problems = b.verify(deep=args.deep, progress=bar)
    for problem in problems:
        print(f"FAILED {problem}")
    if problems:
        err(f"{show_path(b.path)}: {len(problems)} problem(s)")
        return 1
    sidecar = b.path.with_name(b.path.name + ".sha256")
    extra = " and its .sha256" if sidecar.is_file() else " (no .sha256 sidecar found)"
    print(f"{show_path(b.path)}: {len(b.members())} members match the manifest{extra}: OK")
    return 0


def _extract(args: argparse.Namespace) -> int:
    b = bundles.Bundle.read(args.bundle_path, store=open_store(args))
    written = b.extract(args.dest, force=args.force)
    print(f"extracted {len(written)} verified file(s) into {show_path(args.dest)}")
    return 0


def _add(args: argparse.Namespace) -> int:
    store = open_store(args)
    b = bundles.Bundle.read(args.bundle_path, store=store)
    total = sum(m.size for m in b.members())
    with byte_bar(total, "ingesting") as bar:
        added = b.ingest(progress=bar)
    store.register_root(b.path, "bundle")
    print(
        f"{added} new object(s) from {show_path(b.path)}; "
        f"{len(b.manifest) - added} already in the store",
        file=sys.stdout,
    )
    return 0
