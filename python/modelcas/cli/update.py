"""``cas update``: re-pin a model to the newest matching Hub version."""

from __future__ import annotations

import argparse
from typing import Any

from packaging.version import Version

from modelcas import hub, lockfile
from modelcas.cli import pull
from modelcas.cli._common import add_command, err
from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile, parse_requires, parse_version
from modelcas.registry import Registry
from modelcas.remotes import parse_source
from modelcas.store import Store

HELP = "re-pin a model to the newest weights-* tag that matches and is compatible"
DESCRIPTION = """\
Look at the model's Hub repo, find the newest weights-VERSION tag whose version matches
--to (a PEP 440 range on the version without its v) and whose `requires` admits the
installed version of the lockfile's package, pull it (verified) and pin it as latest."""
EPILOG = """\
examples:
  cas update cser-detector
  cas update cser-detector --to '>=1.1,<2'"""


def register(sub: Any) -> None:
    """Add ``cas update`` to the command parser."""
    p = add_command(sub, "update", HELP, DESCRIPTION, EPILOG)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--to", metavar="SPEC", help="versions to consider, e.g. '>=1.1,<2'")
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas update``."""
    path = lockfile.locate(args.lock)
    lock = Lockfile.load(path)
    model = lock.model(args.model)
    repo = model.repo or next(
        (
            model.versions[v].source
            for v in reversed(model.ordered())
            if (model.versions[v].source or "").startswith("hf://")
        ),
        None,
    )
    if not repo or not repo.startswith("hf://"):
        raise UsageError(f"{args.model} has no Hub repo in {path}")
    repo_id = parse_source(repo.split("@")[0])[1]
    spec = parse_requires(args.to, "--to") if args.to else None
    registry = Registry(lock, Store(args.store))
    installed = registry.installed_version()
    tags = hub.weight_tags(repo_id)
    for version in sorted(tags, key=parse_version, reverse=True):
        if spec is not None and not spec.contains(
            Version(str(parse_version(version))), prereleases=True
        ):
            continue
        meta = hub.read_metadata(repo_id, tags[version]) or {}
        requires = meta.get("requires")
        if (
            requires
            and installed
            and not parse_requires(requires, "requires").contains(installed, prereleases=True)
        ):
            print(
                f"skip {args.model}@{version}: requires {lock.package}{requires}, "
                f"you have {installed}"
            )
            continue
        if model.latest == version and model.versions[version].commit == tags[version]:
            print(f"{args.model} is up to date at {version}")
            return 0
        pull_args = argparse.Namespace(
            source=f"hf://{repo_id}@{hub.tag_for(version)}",
            addresses=[],
            name=args.model,
            version=version,
            file=None,
            lock=str(path),
            no_pin=False,
            store=args.store,
        )
        return pull.run(pull_args)
    err(
        f"no weights-* tag of hf://{repo_id} matches {args.to or 'any version'} and is "
        f"compatible with {lock.package} {installed}"
    )
    return 1
