"""``cas lock``: read and edit the lockfile."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas import lockfile
from modelcas.cli._common import add_action, add_command, emit_json, err, human, show_path
from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile, split_ref
from modelcas.remotes import pinned

HELP = "list, show, remove and check lockfile entries"
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
  cas lock rm cser-detector@v1.0"""
_CHECK = """\
Check that the lockfile is canonical (as `cas` writes it) and that every Hub source still
resolves to the pinned commit. Nothing is written: for CI."""
_CHECK_EPILOG = """\
examples:
  cas lock check
  cas lock check --offline       formatting only, no network"""


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


def _load(args: argparse.Namespace) -> Lockfile:
    return Lockfile.load(lockfile.locate(args.lock))


def run_ls(args: argparse.Namespace) -> int:
    """Execute ``cas lock ls``."""
    lock = _load(args)
    if args.json:
        emit_json("lock-ls", {"lock": show_path(lock.path or ""), **_as_json(lock)})
        return 0
    if not lock.models:
        print(f"{show_path(lock.path or '')}: no models pinned")
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
        print(
            f"{'*' if latest else ' '} {ref:<{width}}  {len(entry.files)} file(s) "
            f"{human(size):>10}  requires {entry.requires or 'any':<{spec_width}}  "
            f"{entry.source or '(no source)'}"
        )
    print("(* = latest)")
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
    print(f"{name}")
    print(f"  latest:       {model.latest}")
    if model.repo:
        print(f"  repo:         {model.repo}")
    if model.weights_path:
        print(f"  weights-path: {model.weights_path}")
    for v in versions:
        entry = model.versions[v]
        print(f"  {v}{'  (latest)' if v == model.latest else ''}")
        print(f"    requires: {entry.requires or 'any version'}")
        print(f"    source:   {entry.source or '(none)'}")
        if entry.commit:
            print(f"    commit:   {entry.commit}")
        if entry.validator:
            print(f"    validator: {entry.validator}")
        for fname, d in entry.files.items():
            print(f"    {fname}: {d.size} bytes ({human(d.size)})")
            print(f"      sha256: {d.sha256}")
            print(f"      blake3: {d.blake3 or '(not recorded)'}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Execute ``cas lock rm``."""
    name, version = split_ref(args.ref)
    if version is None:
        raise UsageError("name the version to remove: NAME@VERSION")
    path = lockfile.locate(args.lock)
    with lockfile.edit(path) as lock:
        lock.unpin(name, version)
        latest = lock.models[name].latest if name in lock.models else None
    print(f"removed {name}@{version} from {show_path(path)} (latest: {latest})")
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
    for change in changes:
        print(f"would change: {change}")
    if changes:
        err(f"{show_path(path)} is out of date ({len(changes)} change(s))")
        return 1
    print(f"{show_path(path)} is up to date")
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
