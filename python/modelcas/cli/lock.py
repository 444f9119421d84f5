"""``cas lock``: read and edit the lockfile."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas import lockfile
from modelcas.cli._common import (
    add_action,
    add_command,
    emit_json,
    err,
    human,
    out,
    say,
    show_path,
)
from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile, split_ref
from modelcas.remotes import pinned

HELP = "list, show, remove, check, set and import lockfile entries"
DESCRIPTION = """\
The lockfile (cas.lock, YAML) pins model names and versions to content: size, sha256 and
blake3 of every file, the package versions the weights work with (requires), where the
bytes can be fetched again (source) and, for Hub sources, the commit the tag resolved to.
It is written canonically, so the same content always gives the same bytes."""
EPILOG = """\
examples:
  cas lock ls
  cas lock ls --lock structflo/cser/weights.lock --json
  cas lock show cser-detector@v1.1
  cas lock rm cser-detector@v1.0
  cas lock check                 exit 1 if the lockfile would change (CI)
  cas lock set cser-detector@v1.1 --requires '>=0.1,<1'
  cas lock import structflo/cser/weights.py    from a hand-written REGISTRY/LATEST

exit status: 0 ok; 1 `check` found a change, or the name is not pinned; 2 usage error."""

_LS = """\
One line per pinned version: `*` marks latest, then the number of files, their size, the
`requires` range and the source. --json prints the whole lockfile."""
_LS_EPILOG = """\
examples:
  cas lock ls
  cas lock ls --json | jq '.models | keys'

--json prints {"schema": "cas.lock-ls/1", "lock": PATH, "package": ..., "models": {...}}"""
_SHOW = """\
A model (every version) or one version in full: latest, repo, default weights file, and per
version its range, source, commit, and every file's size, sha256 and blake3."""
_SHOW_EPILOG = """\
examples:
  cas lock show cser-detector
  cas lock show cser-detector@v1.1 --json

--json prints {"schema": "cas.lock-show/1", "model": NAME, "latest": ..., "versions": {...}}"""
_RM = """\
Remove a pinned version from the lockfile. If it was latest, latest falls back to the
highest remaining version (not a pre-release, when there is another). Its objects stay in
the store until `cas gc` finds nothing else references them."""
_RM_EPILOG = """\
examples:
  cas lock rm cser-detector@v1.0

--json prints {"schema": "cas.lock-rm/1", "lock": PATH, "model", "version", "latest"}"""
_CHECK = """\
Check that the lockfile is canonical (as `cas` writes it) and that every Hub source still
resolves to the pinned commit. Nothing is written: for CI."""
_CHECK_EPILOG = """\
examples:
  cas lock check
  cas lock check --offline       formatting only, no network

--json prints {"schema": "cas.lock-check/1", "lock": PATH, "ok": BOOL, "changes": [TEXT, ...]}
and exits 1 when "ok" is false."""
_SET = """\
Edit what people decide after the fact, in place: a version's `requires` range (--requires
'' removes it), which version is `latest`, and the lockfile's `package:` (the distribution
whose installed version `requires` is checked against; a range set on a lockfile without one
records the [project].name of the nearest pyproject.toml). Digests never change here."""
_SET_EPILOG = """\
examples:
  cas lock set cser-detector@v1.1 --requires '>=0.1,<1'
  cas lock set cser-detector@v1.0 --latest
  cas lock set --package structflo-cser

--json prints {"schema": "cas.lock-set/1", "lock": PATH, "changes": ["FIELD: OLD -> NEW", ...]}"""
_IMPORT = """\
Bring a package's hand-written weights registry into a lockfile: REGISTRY and LATEST of its
weights.py, read as Python literals (parsed, never run: a value that is not a literal is an
error naming its line). Each version is fetched from the Hub tag it names (revision or tag;
default weights-VERSION), verified against the Hub's record and against the sha256 the file
recorded, and pinned with its requires, the package from the nearest pyproject.toml, and
latest from LATEST. Repo and file name come from each version (repo_id, filename), else from
MODEL_REPOS in the project's scripts/publish_weights.py (also read, never run), else from
--repo and --file. Keys that were not used are listed. Nothing is pinned unless every
version was fetched and matched. The lockfile is weights.lock beside weights.py unless
--lock says otherwise; ship it as package data and ask Registry.from_package for paths."""
_IMPORT_EPILOG = """\
examples:
  cas lock import structflo/cser/weights.py
  cas lock import structflo/cser/weights.py --model cser-detector --file best.pt

--json prints {"schema": "cas.lock-import/1", "lock": PATH, "package": DIST,
  "versions": [{"model", "version", "file", "source", "commit", "sha256", "requires",
  "checked"}], "latest": {MODEL: VERSION}, "unused": [...], "notes": [...], "changed": BOOL}"""


def register(sub: Any) -> None:
    """Add ``cas lock`` to the command parser."""
    p = add_command(sub, "lock", HELP, DESCRIPTION, EPILOG)
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    ls = add_action(actions, "ls", "one line per pinned version", _LS, _LS_EPILOG)
    ls.set_defaults(run=run_ls)
    show = add_action(
        actions, "show", "a model or version in full, with digests", _SHOW, _SHOW_EPILOG
    )
    show.add_argument("ref", metavar="NAME[@VERSION]")
    show.set_defaults(run=run_show)
    rm = add_action(actions, "rm", "remove a pinned version (latest falls back)", _RM, _RM_EPILOG)
    rm.add_argument("ref", metavar="NAME@VERSION")
    rm.set_defaults(run=run_rm)
    check = add_action(
        actions,
        "check",
        "exit 1 if the lockfile would change: formatting, or a tag that moved",
        _CHECK,
        _CHECK_EPILOG,
    )
    check.add_argument("--offline", action="store_true", help="skip asking remotes")
    check.set_defaults(run=run_check)
    edit = add_action(
        actions, "set", "edit a version's requires or latest, or the package", _SET, _SET_EPILOG
    )
    edit.add_argument("ref", metavar="NAME@VERSION", nargs="?")
    edit.add_argument("--requires", metavar="RANGE", help="PEP 440 range ('' removes it)")
    edit.add_argument("--latest", action="store_true", help="make this version latest")
    edit.add_argument("--package", metavar="DIST", help="the distribution requires refers to")
    edit.set_defaults(run=run_set)
    imp = add_action(
        actions, "import", "pin what a hand-written weights.py records", _IMPORT, _IMPORT_EPILOG
    )
    imp.add_argument("weights_py", metavar="PATH/weights.py")
    imp.add_argument("--script", metavar="PY", help="the publish script with MODEL_REPOS")
    imp.add_argument("--repo", metavar="ORG/NAME", help="Hub repo for versions naming none")
    imp.add_argument("--file", metavar="NAME", help="file name for versions naming none")
    imp.add_argument("--model", metavar="MODEL", help="import only this model")
    imp.add_argument("--package", metavar="DIST", help="default: the nearest pyproject.toml")
    imp.set_defaults(run=run_import)


def _load(args: argparse.Namespace) -> Lockfile:
    return Lockfile.load(lockfile.locate(args.lock))


def run_ls(args: argparse.Namespace) -> int:
    """Execute ``cas lock ls``."""
    lock = _load(args)
    if args.json:
        emit_json("lock-ls", {"lock": show_path(lock.path or ""), **_as_json(lock)})
        return 0
    if not lock.models:
        out(f"{show_path(lock.path or '')}: no models pinned")
        return 0
    rows = [
        (name, v, model.versions[v], v == model.latest)
        for name, model in sorted(lock.models.items())
        for v in model.ordered()
    ]
    width = max(len(f"{name}@{v}") for name, v, _, _ in rows)
    spec_width = max(len(e.requires or "any") for _, _, e, _ in rows)
    for name, v, entry, latest in rows:
        size = sum(d.size for d in entry.files.values())
        ref = f"{name}@{v}"
        out(
            f"{'*' if latest else ' '} {ref:<{width}}  {len(entry.files)} file(s) "
            f"{human(size):>10}  requires {entry.requires or 'any':<{spec_width}}  "
            f"{entry.source or '(no source)'}"
        )
    out("(* = latest)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Execute ``cas lock show``."""
    lock = _load(args)
    name, version = split_ref(args.ref)
    model = lock.model(name)
    versions = [lock.version(name, version)[0]] if version else model.ordered()
    if args.json:
        whole = _as_json(lock)["models"][name]
        whole["versions"] = {v: whole["versions"][v] for v in versions}
        emit_json("lock-show", {"lock": show_path(lock.path or ""), "model": name, **whole})
        return 0
    out(f"{name}")
    out(f"  latest:       {model.latest}")
    if model.repo:
        out(f"  repo:         {model.repo}")
    if model.weights_path:
        out(f"  weights-path: {model.weights_path}")
    for v in versions:
        entry = model.versions[v]
        out(f"  {v}{'  (latest)' if v == model.latest else ''}")
        out(f"    requires: {entry.requires or 'any version'}")
        out(f"    source:   {entry.source or '(none)'}")
        if entry.commit:
            out(f"    commit:   {entry.commit}")
        if entry.signature:
            out(f"    signed:   by key {entry.signature.signer} ({entry.signature.digest})")
        if entry.validator:
            out(f"    validator: {entry.validator}")
        for fname, d in entry.files.items():
            out(f"    {fname}: {d.size} bytes ({human(d.size)})")
            out(f"      sha256: {d.sha256}")
            out(f"      blake3: {d.blake3 or '(not recorded)'}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Execute ``cas lock rm``."""
    name, version = split_ref(args.ref)
    if version is None:
        raise UsageError("name the version to remove: NAME@VERSION")
    path = lockfile.locate(args.lock)
    with lockfile.edit(path) as lock:
        # Named as pinned: `cas lock rm det@1` removes v1.0, and says so.
        version = (lock.models[name].find(version) if name in lock.models else None) or version
        lock.unpin(name, version)
        latest = lock.models[name].latest if name in lock.models else None
    if args.json:
        doc = {"lock": show_path(path), "model": name, "version": version, "latest": latest}
        emit_json("lock-rm", doc)
        return 0
    after = f"latest: {latest}" if latest else f"no version of {name} left"
    out(f"removed {name}@{version} from {show_path(path)} ({after})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Execute ``cas lock check``."""
    path = lockfile.locate(args.lock)
    lock = Lockfile.load(path)
    changes = []
    if lockfile.read_text(path, "lockfile") != lock.dumps():
        changes.append(f"{show_path(path)} is not in canonical form (any `cas` edit rewrites it)")
    for name, group in lock.duplicate_versions():
        entries = [lock.models[name].versions[v] for v in group]
        same = all(e.files == entries[0].files for e in entries)
        how = (
            f"they pin the same files: keep {group[0]} and remove the others "
            f"(`cas lock rm {name}@{group[-1]}`)"
            if same
            else f"they pin different files: keep one, remove the others (`cas lock rm "
            f"{name}@{group[-1]}`) and pin that content again as a new version"
        )
        changes.append(
            f"models.{name}.versions: {', '.join(group)} are one version (PEP 440); {how}"
        )
    if not args.offline:
        for name, model in sorted(lock.models.items()):
            for v in model.ordered():
                entry = model.versions[v]
                if entry.source is None or entry.commit is None:
                    continue
                remote, at = pinned(entry.source, version=v, commit=entry.commit)
                now = remote.resolve(at.ref).revision
                if now is not None and now != entry.commit:
                    changes.append(
                        f"models.{name}.versions.{v}: {entry.source} now resolves to commit "
                        f"{now}, the lockfile pins {entry.commit}"
                    )
    if args.json:
        doc = {"lock": show_path(path), "ok": not changes, "changes": changes}
        emit_json("lock-check", doc)
        return 1 if changes else 0
    for change in changes:
        out(f"would change: {change}")
    if changes:
        err(f"{show_path(path)} is out of date ({len(changes)} change(s))")
        return 1
    out(f"{show_path(path)} is up to date")
    return 0


def _as_json(lock: Lockfile) -> dict[str, Any]:
    return {
        "package": lock.package,
        "models": {
            name: {
                "latest": m.latest,
                "repo": m.repo,
                "weights-path": m.weights_path,
                "versions": {
                    v: {
                        "requires": e.requires,
                        "source": e.source,
                        "commit": e.commit,
                        "signature": {
                            "sha256": e.signature.digest.sha256,
                            "size": e.signature.digest.size,
                            "signer": e.signature.signer,
                        }
                        if e.signature
                        else None,
                        "validator": e.validator,
                        "files": {
                            f: {"size": d.size, "sha256": d.sha256, "blake3": d.blake3}
                            for f, d in e.files.items()
                        },
                    }
                    for v, e in ((v, m.versions[v]) for v in m.ordered())
                },
            }
            for name, m in sorted(lock.models.items())
        },
    }


def run_set(args: argparse.Namespace) -> int:
    """Execute ``cas lock set``."""
    from modelcas.ops.lockset import SetRequest, set_fields  # noqa: PLC0415

    path = lockfile.locate(args.lock)
    result = set_fields(SetRequest(path, args.ref, args.requires, args.latest, args.package))
    if args.json:
        emit_json("lock-set", {"lock": show_path(path), "changes": result.changes})
        return 0
    for change in result.changes:
        out(f"set {change}")
    if not result.changed:
        out(f"{show_path(path)}: already so, nothing changed")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Execute ``cas lock import``."""
    from pathlib import Path  # noqa: PLC0415

    from modelcas.cli._common import open_store  # noqa: PLC0415
    from modelcas.ops.importing import ImportRequest, import_registry  # noqa: PLC0415

    req = ImportRequest(
        Path(args.weights_py),
        Path(args.lock) if args.lock else None,
        Path(args.script) if args.script else None,
        args.repo,
        args.file,
        args.model,
        args.package,
    )
    result = import_registry(req, open_store(args))
    if args.json:
        emit_json(
            "lock-import",
            {
                "lock": show_path(result.lock),
                "package": result.package,
                "versions": [
                    {
                        "model": v.model,
                        "version": v.version,
                        "file": v.file,
                        "source": v.source,
                        "commit": v.commit,
                        "sha256": v.digest.sha256,
                        "requires": v.requires,
                        "checked": v.checked,
                    }
                    for v in result.versions
                ],
                "latest": result.latest,
                "unused": result.unused,
                "notes": result.notes,
                "changed": result.changed,
            },
        )
        return 0
    for v in result.versions:
        check = "sha256 matches weights.py" if v.checked else "no sha256 recorded"
        say(
            args,
            f"pinned {v.model}@{v.version} {v.file} from {v.source} "
            f"(commit {(v.commit or '')[:12]}; {check})",
        )
    for note in result.notes:
        out(f"note: {note}")
    for key in result.unused:
        out(f"not used: {key}")
    latest = ", ".join(f"{m} {v}" for m, v in result.latest.items())
    state = "wrote" if result.changed else "already up to date:"
    say(args, f"{state} {show_path(result.lock)} (package {result.package}; latest: {latest})")
    return 0
