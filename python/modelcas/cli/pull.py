"""``cas pull``: fetch a version from the Hub or objects from a shared directory."""

from __future__ import annotations

import argparse
from typing import Any

from modelcas import hub, lockfile
from modelcas.cli._common import add_command, human, open_store, show_path
from modelcas.cli._progress import byte_bar
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, UsageError
from modelcas.lockfile import Lockfile, parse_version
from modelcas.registry import Registry
from modelcas.remotes import DirRemote, parse_source

HELP = "fetch a Hub or OCI version (and pin it), or objects from a shared directory"
DESCRIPTION = """\
From the Hub: resolve the tag to its commit, download each file by that commit while
hashing it, check every byte against the Hub's LFS sha256 (and against the lockfile when it
already pins the version), ingest into the store and pin the version: commit, size, sha256
and blake3. Nothing is downloaded for content already in the store. A truncated or
corrupted download leaves nothing behind.

From an OCI registry (oci://HOST[:PORT]/REPO:TAG or @sha256:…): resolve the tag to the
manifest digest, check the ModelPack manifest, download each layer while hashing it (nothing
is stored unless it matches its digest), and pin the version with the manifest digest.

From a shared directory (a path or file:// URL with the store's layout): fetch the given
addresses, or every file the lockfile pins that is missing locally, verified on arrival."""
EPILOG = """\
examples:
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1
  cas pull hf://sidxz/structflo-cser-detector@weights-v1.1 --name cser-detector --file best.pt
  cas pull oci://registry.lab:5000/models/cser-detector:v1.1
  cas pull /lab/shared/cas                   everything cas.lock pins, from the lab server
  cas pull file:///lab/shared/cas sha256:9f86d0..."""


def register(sub: Any) -> None:
    """Add ``cas pull`` to the command parser."""
    p = add_command(sub, "pull", HELP, DESCRIPTION, EPILOG)
    p.add_argument("source", metavar="SOURCE", help="hf://ORG/NAME@TAG, or a directory remote")
    p.add_argument("addresses", nargs="*", metavar="ADDRESS", help="(directory remotes) objects")
    p.add_argument("--name", metavar="MODEL", help="model name to pin (default: the repo name)")
    p.add_argument(
        "--version",
        metavar="VERSION",
        help="version to pin (default: from the weights-VERSION tag)",
    )
    p.add_argument("--file", action="append", metavar="FILE", help="only these files")
    p.add_argument("--lock", metavar="PATH", help="the lockfile (default: nearest cas.lock)")
    p.add_argument("--no-pin", action="store_true", help="fetch only; leave the lockfile alone")
    p.add_argument(
        "--plain-http", action="store_true", help="(oci://) the registry speaks HTTP, not HTTPS"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas pull``."""
    scheme, location, revision = parse_source(args.source)
    if scheme == "oci":
        from modelcas.cli import _oci  # noqa: PLC0415 (only for oci://)

        return _oci.pull(args)
    if scheme == "file":
        return _pull_dir(args, location)
    if args.addresses:
        raise UsageError("addresses apply to directory remotes; for the Hub use --file")
    return _pull_hub(args, location, revision)


def _pull_hub(args: argparse.Namespace, repo_id: str, revision: str | None) -> int:
    if revision is None:
        raise UsageError(f"name a revision: hf://{repo_id}@weights-VERSION")
    version = args.version or hub.version_of(revision)
    if version is None and not args.no_pin:
        raise UsageError(
            f"{revision!r} is not a weights-VERSION tag: pass --version",
            hint="or --no-pin to fetch without pinning",
        )
    name = args.name or repo_id.split("/")[1]
    store = open_store(args)
    path = lockfile.locate(args.lock, must_exist=False)
    lock = Lockfile.load(path) if path.exists() else Lockfile(path=path)
    pinned: dict[str, Digest] = {}
    if version is not None and name in lock.models and version in lock.models[name].versions:
        pinned = lock.models[name].versions[version].files

    remote = hub.HubRemote(repo_id, revision)
    commit = remote.resolve()
    if commit is None:
        raise UsageError(
            f"HF_HUB_OFFLINE is set and the Hugging Face cache has no {revision} of {repo_id}",
            hint="pull it once online, or `hf download` it; after that it works offline",
        )
    listing = remote.files(commit)
    meta = hub.read_metadata(repo_id, commit) or {}
    wanted = args.file or sorted(meta.get("files") or (p for p in listing if p not in _NOT_WEIGHTS))
    missing = [f for f in wanted if f not in listing]
    if missing:
        raise UsageError(
            f"hf://{repo_id}@{revision} (commit {commit[:12]}) has no {', '.join(missing)}",
            hint=f"files there: {', '.join(listing)}",
        )
    got: dict[str, Digest] = {}
    todo = [f for f in (listing[w] for w in wanted) if not (f.sha256 and store.has(f.sha256))]
    with byte_bar(sum(f.size for f in todo), "downloading") as bar:
        for f in (listing[w] for w in wanted):
            expected = pinned.get(f.path)
            if expected and f.sha256 and expected.sha256 != f.sha256:
                raise IntegrityError(
                    f"{path}: {name}@{version} pins {f.path} as sha256:{expected.sha256}, but "
                    f"hf://{repo_id}@{revision} (commit {commit}) has sha256:{f.sha256}",
                    hint="the tag moved or the pin is wrong; nothing was downloaded",
                )
            if f.sha256 and store.has(f.sha256):
                got[f.path] = store.info(f.sha256).digest
                print(f"present     {f.path}  sha256:{f.sha256[:16]}…  ({human(f.size)})")
                continue
            info = remote.download(f, commit, store, expected, progress=bar)
            got[f.path] = info.digest
            how = "from the HF cache" if f.path in remote.from_hf_cache else "downloaded"
            print(f"{how}  {f.path}  {info.digest.address[:23]}…  ({human(f.size)}, verified)")
    if args.no_pin or version is None:
        return 0
    parse_version(version, f"{name}@{version}")
    with lockfile.edit(path) as fresh:
        changed = fresh.pin(
            name,
            version,
            got,
            requires=meta.get("requires"),
            source=f"hf://{repo_id}@{revision}",
            commit=commit,
        )
        fresh.models[name].repo = fresh.models[name].repo or f"hf://{repo_id}"
    Registry(Lockfile.load(path), store).register()
    state = "pinned" if changed else "already pinned"
    print(f"{state} {name}@{version} (commit {commit[:12]}) in {show_path(path)}")
    return 0


_NOT_WEIGHTS = {".gitattributes", "README.md", hub.METADATA_FILE}


def _pull_dir(args: argparse.Namespace, location: str) -> int:
    remote = DirRemote(location)
    store = open_store(args)
    if args.addresses:
        shared = remote._store()
        pins = [(a, shared.info(shared.resolve(a)).digest) for a in args.addresses]
    else:
        registry = Registry(Lockfile.load(lockfile.locate(args.lock)), store)
        pins = [(p.label, p.digest) for p in registry.pins()]
    fetched = 0
    for label, digest in pins:
        if store.has(digest.sha256):
            continue
        remote.fetch(label, digest, store)
        fetched += 1
        print(f"fetched  {label}  sha256:{digest.sha256[:16]}… (verified)")
    print(f"{fetched} object(s) fetched from {remote.url}; {len(pins) - fetched} already present")
    return 0
