"""The Hugging Face Hub as a remote: publish versions, pull them, follow tags.

:class:`HubRemote` implements the one remote protocol (``modelcas.remotes.base``). The Hub's
API goes through ``huggingface_hub``; downloads are made by commit (a tag is resolved once,
first) through the one fetch path (``modelcas.remotes.transfer``), hashed while they arrive,
then checked against the Hub's own LFS sha256 and against the lockfile's pin: the Hub client
itself checks only sizes. A publish removes only files an earlier ``cas publish`` wrote (as
``modelcas.json`` on ``main`` records); files ``cas`` never wrote stay, unless ``--prune``.
``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured; a token never appears in
any output.

Signatures travel as ``model.sig`` (model_signing's own name for a folder's signature): in
the tag's commit when the version is published signed, or, for a version signed after it was
published, in a commit of its own under a companion tag (``weights-v1.1.sig``, then
``weights-v1.1.sig.2``...), made on a short-lived branch from the version's commit so that it
holds the version's files and the signature; no tag is ever moved (docs/signing.md).

huggingface_hub is imported inside the functions that use it, so that commands which never
touch the Hub do not pay for importing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcas import hfcache, untrusted
from modelcas.digest import Digest
from modelcas.errors import (
    IntegrityError,
    ModelcasError,
    RemoteError,
    RemoteMissingError,
    TagConflictError,
    UsageError,
)
from modelcas.hashing import Progress
from modelcas.remotes import transfer
from modelcas.remotes.base import (
    Fetched,
    Listed,
    Origin,
    Outgoing,
    Published,
    ReadBack,
    RemotePlan,
    RemoteVersion,
    Sink,
    Step,
)
from modelcas.store import ObjectInfo, Store

TAG_PREFIX = "weights-"
# Written into every published commit: lets `cas update` check `requires` before pulling.
METADATA_FILE = "modelcas.json"
# A version's signature, where model_signing puts a folder's (it skips the file when hashing).
SIGNATURE_FILE = "model.sig"
_COMPANION = re.compile(r"(?P<tag>.+)\.sig(?:\.(?P<n>[1-9][0-9]{0,5}))?")
_MAX_SIGNATURE = 64 << 20  # as modelcas.signing reads one
_MAX_SIGNATURES = 32  # the newest companion tags read


def tag_for(version: str) -> str:
    """The Hub tag of a weights version: ``v1.1`` -> ``weights-v1.1``."""
    return TAG_PREFIX + version


def version_of(tag: str) -> str | None:
    """The weights version a tag names, or None for other tags (a companion tag too)."""
    if not tag.startswith(TAG_PREFIX) or _COMPANION.fullmatch(tag):
        return None
    return tag.removeprefix(TAG_PREFIX)


def signature_tag(tag: str, n: int = 1) -> str:
    """The ``n``-th companion tag of a version's tag: ``weights-v1.1.sig``, ``….sig.2``."""
    return f"{tag}.sig" + (f".{n}" if n > 1 else "")


_MAX_TOKEN_FILE = 1 << 20  # a token is a few dozen bytes


def scrub(text: str) -> str:
    """Remove the Hub token from text that may reach a user or a log."""
    token = _token()
    if token and len(token) >= 4:
        text = text.replace(token, "***")
    return text


_MAX_METADATA = 1 << 20  # modelcas.json lists file names; far below this


def _token() -> str | None:
    from huggingface_hub import get_token

    check_token_file()
    return os.environ.get("HF_TOKEN") or get_token()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def api() -> Any:
    """An ``HfApi`` for ``HF_ENDPOINT`` as set now (not when huggingface_hub was imported)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

    # cas draws its own bars, on a terminal only; the client's would clutter logs.
    disable_progress_bars()
    check_token_file()
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def check_token_file() -> None:
    """Refuse a Hub token file that is not a regular file, before the client reads it.

    The client reads its token file (``HF_TOKEN_PATH``, ``$HF_HOME/token``) whole with a
    plain read, unless ``HF_TOKEN`` is set: a FIFO there would hang it and ``/dev/zero`` fill
    its memory.

    Raises:
        UsageError: the token file exists and is not a regular file (or is far too large).
    """
    if os.environ.get("HF_TOKEN"):
        return
    from huggingface_hub import constants

    path = constants.HF_TOKEN_PATH
    try:
        with untrusted.opened(path, "the Hub token file") as (_, st):
            if st.st_size > _MAX_TOKEN_FILE:
                raise UsageError(f"{path}: {st.st_size} bytes is too large for a token file")
    except FileNotFoundError:
        return
    except UsageError as e:
        raise UsageError(e.message, hint="remove it and log in again, or set HF_TOKEN") from None


def _remote_error(what: str, e: BaseException, hint: str | None = None) -> RemoteError:
    return RemoteError(f"{what}: {scrub(str(e)).strip().splitlines()[0]}", hint=hint)


@dataclass(frozen=True, slots=True)
class HubFile:
    """A file in a Hub commit: size, the LFS sha256 when it is an LFS file, the git blob id."""

    path: str
    size: int
    sha256: str | None
    blob_id: str
    # Listed with a Xet hash and no LFS sha256: its blob id is its pointer's, not its bytes'.
    xet: bool = False


@dataclass
class HubPlan:
    """The Hub's own part of a publish plan."""

    repo_id: str
    already: set[str] = field(default_factory=set)  # files main has with these bytes
    delete: list[str] = field(default_factory=list)  # written by an earlier publish, not pinned
    keep: list[str] = field(default_factory=list)  # never written by cas: stay
    prune: list[str] = field(default_factory=list)  # never written by cas, removed (--prune)
    tag_commit: str | None = None  # the tag exists and holds exactly this version


class HubRemote:
    """One Hub repository (``hf://ORG/NAME``), as a :class:`~modelcas.remotes.base.Remote`.

    Args:
        repo_id: ``ORG/NAME``.
        revision: the default revision for :meth:`resolve` (a tag such as ``weights-v1.1``,
            a branch, or a commit).
    """

    def __init__(self, repo_id: str, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.url = f"hf://{repo_id}"
        # Files this remote took from the Hugging Face cache instead of downloading them.
        self.from_hf_cache: set[str] = set()
        self._trees: dict[str, dict[str, HubFile]] = {}  # commit -> every file (immutable)

    # -- resolving -------------------------------------------------------------------------

    def commit(self, revision: str | None = None) -> str | None:
        """The commit a revision points at now (offline: what the HF cache recorded, or None).

        Raises:
            RemoteMissingError: the repo, or the revision, does not exist (the message says
                which, and which ``weights-*`` tags there are).
            RemoteError: the Hub failed.
        """
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        rev = revision or self.revision or "main"
        if _offline():
            return hfcache.cached_commit(self.repo_id, rev)
        try:
            info = api().model_info(self.repo_id, revision=rev)
        except RevisionNotFoundError:
            raise self._no_revision(rev) from None
        except RepositoryNotFoundError:
            raise RemoteMissingError(
                f"{self.url} does not exist (or is private and HF_TOKEN cannot see it)",
                hint="check ORG/NAME; for a private repo set HF_TOKEN",
            ) from None
        except Exception as e:
            raise _remote_error(f"cannot resolve {self.url}@{rev}", e, _NETWORK_HINT) from e
        return str(info.sha)

    def _no_revision(self, rev: str) -> RemoteMissingError:
        try:
            tags = sorted(weight_tags(self.repo_id), key=_version_key)
        except ModelcasError:
            tags = []
        have = ", ".join(tag_for(t) for t in tags) or "none"
        return RemoteMissingError(
            f"{self.url} exists but has no tag or branch {rev!r} (weights-* tags: {have})",
            hint="pull one of those tags" if tags else "publish a version first (cas publish)",
        )

    def resolve(self, ref: str | None = None) -> RemoteVersion:
        """Pin a revision to its commit, with what the commit's ``modelcas.json`` says.

        Raises:
            UsageError: no revision named.
            RemoteMissingError, RemoteError: see :meth:`commit`; offline, a revision the HF
                cache does not know.
        """
        rev = ref or self.revision
        if rev is None:
            raise UsageError(
                f"name a revision: {self.url}@weights-VERSION",
                hint=f"the versions there: `cas update --dry-run`, or {self.url} on the Hub",
            )
        commit = self.commit(rev)
        if commit is None:
            raise RemoteError(
                f"HF_HUB_OFFLINE is set and the Hugging Face cache has no {rev} of {self.repo_id}",
                hint="pull it once online, or `hf download` it; after that it works offline",
            )
        meta = read_metadata(self.repo_id, commit) or {}
        files = meta.get("files")
        if not isinstance(files, dict | list):
            # Not published by cas: the version is every file but the repo's own.
            files = [p for p in self.files(commit) if p not in NOT_WEIGHTS]
        requires, package = meta.get("requires"), meta.get("package")
        return RemoteVersion(
            self.url,
            f"{self.url}@{rev}",
            ref=rev,
            revision=commit,
            version=version_of(rev) or _str(meta.get("version")),
            model=_str(meta.get("model")),
            requires=_str(requires),
            package=_str(package),
            files=tuple(sorted(files)),
        )

    def _commit_of(self, version: RemoteVersion) -> str:
        commit = version.revision or self.commit(version.ref)
        if commit is None:
            raise RemoteError(
                f"HF_HUB_OFFLINE is set and the Hugging Face cache has no {version.ref} of "
                f"{self.repo_id}",
                hint="run `cas sync` once online; after that it works offline",
            )
        return commit

    def files(self, commit: str, paths: Iterable[str] | None = None) -> dict[str, HubFile]:
        """The files of a commit (all of them, or ``paths``), with their LFS sha256.

        Offline, the files the HF cache holds for that commit.
        """
        if paths is None and commit in self._trees:
            return self._trees[commit]
        if _offline():
            cached = hfcache.snapshot(self.repo_id, commit)
            wanted = set(paths) if paths is not None else None
            return {
                p: HubFile(p, c.size, c.sha256, "" if c.sha256 else c.etag)
                for p, c in cached.items()
                if wanted is None or p in wanted
            }
        try:
            if paths is None:
                entries = api().list_repo_tree(self.repo_id, revision=commit, recursive=True)
            else:
                entries = api().get_paths_info(self.repo_id, list(paths), revision=commit)
            out = {}
            for e in entries:
                if not hasattr(e, "blob_id"):
                    continue  # a folder
                lfs = getattr(e, "lfs", None)
                xet = lfs is None and bool(getattr(e, "xet_hash", None))
                sha256 = lfs.sha256 if lfs else None
                out[e.path] = HubFile(e.path, int(e.size), sha256, e.blob_id, xet)
        except Exception as e:
            raise _remote_error(f"cannot list files of {self.url} at {commit}", e) from e
        if paths is None and len(commit) == 40:
            self._trees[commit] = out  # a commit never changes
        return out

    def listing(self, version: RemoteVersion) -> dict[str, Listed]:
        """The files of the version's commit (sha256 where the Hub keeps them in LFS)."""
        return {
            p: Listed(p, f.size, f.sha256, git_blob=None if f.sha256 else f.blob_id or None)
            for p, f in sorted(self.files(self._commit_of(version)).items())
        }

    def versions(self, model: str) -> dict[str, str]:  # noqa: ARG002 (one repo, one model)
        """``{version: "weights-VERSION"}`` for every ``weights-*`` tag."""
        return {v: tag_for(v) for v in weight_tags(self.repo_id)}

    # -- fetching --------------------------------------------------------------------------

    def fetch(
        self,
        version: RemoteVersion,
        want: Mapping[str, Digest | None],
        store: Store,
        *,
        progress: Progress | None = None,
    ) -> list[Fetched]:
        """Bring files of a commit into the store, verified (see ``Remote.fetch``).

        Bytes the store or the Hugging Face cache already holds are taken from there, online
        or offline; the rest is downloaded by commit and left in the HF cache too.
        """
        out: dict[str, Fetched] = {}
        todo = []
        for name, pinned in want.items():
            if pinned is not None and store.has(pinned.sha256):
                out[name] = Fetched(name, store.info(pinned.sha256).digest, "store")
                continue
            if pinned is not None:
                taken = hfcache.take(
                    pinned,
                    store,
                    repo_id=self.repo_id,
                    commit=version.revision,
                    file=name,
                    progress=progress,
                )
                if taken is not None:
                    self.from_hf_cache.add(name)
                    out[name] = Fetched(name, taken.digest, "hf-cache")
                    continue
            todo.append(name)
        if todo:
            commit = self._commit_of(version)
            listed = self.files(commit, todo)
            for name in todo:
                f = listed.get(name)
                if f is None:
                    raise RemoteMissingError(f"{self.url} (commit {commit}) has no file {name!r}")
                pinned = want[name]
                if pinned is None and f.sha256 is not None and store.has(f.sha256):
                    out[name] = Fetched(name, store.info(f.sha256).digest, "store")
                    continue
                info = self.download(f, commit, store, pinned, progress=progress)
                origin: Origin = "hf-cache" if name in self.from_hf_cache else "download"
                out[name] = Fetched(name, info.digest, origin)
        return [out[n] for n in want]

    def download(
        self,
        f: HubFile,
        commit: str,
        store: Store,
        expected: Digest | None,
        *,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Bring a file of a commit into the store: from the HF cache, else over the network.

        The bytes must match the Hub's LFS sha256 (or, for a small non-LFS file, its git blob
        id) and ``expected`` when given; otherwise nothing is stored. The download goes through
        the one fetch path (:mod:`modelcas.remotes.transfer`): hashed while it arrives,
        resumed after a cut, abandoned below the low-speed limit (and resumed by the next
        run). What was downloaded is then left in the HF cache too, where ``hf_hub_download``
        finds it.

        Raises:
            IntegrityError: other bytes than the Hub or the pin says.
            RemoteError: the download failed, was cut short too often, or was too slow.
        """
        where = f"{f.path} from hf://{self.repo_id} at {commit}"
        if expected is not None and f.sha256 is not None and f.sha256 != expected.sha256:
            raise IntegrityError(
                f"{where}: the Hub lists sha256:{f.sha256}, the lockfile pins "
                f"sha256:{expected.sha256}; nothing was downloaded",
                hint="the repo changed under the pin: check who moved it, then re-pin or fix",
            )
        if f.xet and expected is None:
            # Nothing the Hub says checks these bytes (the blob id is the Xet pointer's):
            # never pin what merely arrived.
            raise IntegrityError(
                f"{where}: the Hub lists no LFS sha256 for it (it keeps the file in Xet "
                "storage), so its bytes cannot be checked; nothing was downloaded",
                hint="pin it from a sha256 you trust: download it, check it against that "
                "digest, then `cas add` it (or ask the repo's owner to publish it with cas)",
            )
        want = expected or (Digest(f.sha256, f.size) if f.sha256 else None)
        if want is None and f.blob_id:
            want = hfcache.git_blob_digest(self.repo_id, commit, f.path, f.blob_id, f.size)
        if want is not None:
            taken = hfcache.take(
                want, store, repo_id=self.repo_id, commit=commit, file=f.path, progress=progress
            )
            if taken is not None:
                self.from_hf_cache.add(f.path)
                return taken
        if _offline():
            raise RemoteError(
                f"{where}: not in the Hugging Face cache ({hfcache.cache_dir()}) and "
                "HF_HUB_OFFLINE is set",
                hint="pull it once online; after that it works offline",
            )
        key = transfer.resume_key(want.sha256 if want else f"hf:{self.repo_id}:{commit}:{f.path}")
        info = transfer.download(
            store,
            _file_opener(self.repo_id, f.path, commit),
            size=f.size,
            expected=want,
            where=where,
            key=key,
            progress=progress,
            extra=_git_blob_check(f, where) if f.sha256 is None and not f.xet else None,
        )
        self._give(store, info, f, commit)
        return info

    def stream(self, version: RemoteVersion, listed: Listed, sink: Sink) -> None:
        """Read one file of the version's commit into ``sink`` (an audit's read-data)."""
        commit = self._commit_of(version)
        where = f"{listed.name} from hf://{self.repo_id} at {commit}"
        opener = _file_opener(self.repo_id, listed.name, commit)
        transfer.copy(opener, listed.size, sink, where=where)

    def _give(self, store: Store, info: ObjectInfo, f: HubFile, commit: str) -> None:
        """Leave the object where ``hf_hub_download`` finds it.

        A cache we cannot write is not the pull's failure, so it is only named in a warning.
        """
        etag = f.sha256 or f.blob_id
        if not etag:
            return
        try:
            hfcache.give(
                store,
                info.digest.sha256,
                repo_id=self.repo_id,
                commit=commit,
                path=f.path,
                etag=etag,
                revision=self.revision,
            )
        except (OSError, ModelcasError) as e:
            warnings.warn(
                f"could not leave {f.path} in the Hugging Face cache {hfcache.cache_dir()}: {e}",
                stacklevel=3,
            )

    # -- publishing ------------------------------------------------------------------------

    def plan_publish(self, out: Outgoing, *, prune: bool = False) -> RemotePlan:
        """Look at the repo and decide what publishing ``out`` does (nothing changes).

        Files of ``main`` that an earlier ``cas publish`` wrote (its ``modelcas.json`` lists
        them) and this version does not pin are deleted; files ``cas`` never wrote stay
        (``keep``), unless ``prune``.

        Raises:
            TagConflictError: the version's tag exists with other files (never moved).
            RemoteError: the Hub failed.
        """
        tag_name = tag_for(out.version)
        native = HubPlan(self.repo_id)
        steps: list[Step] = []
        exists = repo_exists(self.repo_id)
        files = {n: d for n, (_, d) in out.files.items()}
        if exists:
            main = tree(self.repo_id, "main")
            native.already = {
                n for n, d in files.items() if n in main and main[n].sha256 == d.sha256
            }
            on_main = read_metadata(self.repo_id, "main")
            written = _written(on_main)
            if (on_main or {}).get("signature") == SIGNATURE_FILE:
                written.add(SIGNATURE_FILE)  # an earlier signed publish wrote it
            for name in sorted(main):
                if name in files or name in _OURS:
                    continue
                if name == SIGNATURE_FILE and out.signature is not None:
                    continue  # replaced by this version's signature
                if name in written:
                    native.delete.append(name)
                elif prune:
                    native.prune.append(name)
                else:
                    native.keep.append(name)
            tags = weight_tags(self.repo_id)
            same = _same_version(out.version)
            tagged_as = next((v for v in tags if same(v)), None)
            at = tags[tagged_as] if tagged_as is not None else None
            if tagged_as is not None and at is not None:
                tag_name = tag_for(tagged_as)  # the tag keeps the spelling it was made with
                here = {n: p for n, (p, _) in out.files.items()}
                problems = _differences(files, self.files(at), here)
                tagged = _written(read_metadata(self.repo_id, at))
                if problems or (tagged and tagged != set(files)):
                    raise TagConflictError(
                        f"tag {tag_name} already exists on {self.url} at commit {at} with "
                        f"other files ({'; '.join(problems) or 'another file list'}); "
                        "refusing to move it",
                        hint=f"publish a new version instead of {out.version}",
                    )
                native.tag_commit = at  # a rerun after a failure: adopt it
        for name, d in sorted(files.items()):
            upload = name not in native.already and native.tag_commit is None
            steps.append(Step(name, "upload" if upload else "present", d))
        steps += [Step(n, "delete", note="written by an earlier publish") for n in native.delete]
        steps += [Step(n, "prune", note="not written by cas") for n in native.prune]
        steps += [
            Step(n, "keep", note="not written by cas (--prune removes it)") for n in native.keep
        ]
        return RemotePlan(
            self.url,
            tag_name,
            f"{self.url}@{tag_name}",
            steps,
            tag_exists=native.tag_commit is not None,
            repo_exists=exists,
            revision=native.tag_commit,
            native=native,
        )

    def publish(
        self,
        plan: RemotePlan,
        out: Outgoing,
        store: Store,
        *,
        progress: Progress | None = None,
        read_back: ReadBack | None = None,
    ) -> Published:
        """Commit, read back what the Hub recorded, run ``read_back``, then tag.

        Safe to run again after a failure at any point: uploaded bytes are not sent again,
        and a tag that already holds exactly these files is adopted.

        Raises:
            IntegrityError: the Hub recorded other bytes or files than were sent; no tag.
            TagConflictError: the tag appeared meanwhile, at another commit.
            RemoteError: the Hub refused or failed.
        """
        native: HubPlan = plan.native
        files = {n: d for n, (_, d) in out.files.items()}
        uploads = [
            Upload(name, store.object_path(d.sha256), d) for name, d in sorted(files.items())
        ]
        removed = [*native.delete, *native.prune]
        fresh = native.tag_commit is None
        signed_here = fresh and out.signature is not None
        commit = native.tag_commit or commit_version(
            self.repo_id,
            uploads,
            _metadata(out),
            removed,
            f"weights: publish {out.model} {out.version}",
            private=out.private,
            progress=progress,
            signature=out.signature,
        )
        recorded = tree(self.repo_id, commit)
        recorded.update(self.files(commit, list(files)))
        stored = {n: store.object_path(d.sha256) for n, d in files.items()}
        diffs = _differences(files, recorded, stored)
        diffs += [f"{n} was not removed" for n in removed if n in recorded]
        if signed_here and out.signature is not None:
            sig = recorded.get(SIGNATURE_FILE)
            if sig is None or not _holds(sig, out.signature):
                diffs.append(f"{SIGNATURE_FILE} is not the signature sent")
        if diffs:
            raise IntegrityError(
                f"{self.url} commit {commit} does not hold exactly {out.model}@{out.version}: "
                f"{'; '.join(diffs)}; no tag was created and nothing was pinned",
                hint="the Hub stored something else than was sent: check the repo, then "
                "publish again",
            )
        if read_back is not None:
            read_back(
                RemoteVersion(
                    self.url,
                    plan.source,
                    ref=commit,
                    revision=commit,
                    version=out.version,
                    model=out.model,
                    files=tuple(sorted(files)),
                )
            )
        tag(self.repo_id, plan.tag, commit)
        signed = f"{self.url}@{plan.tag} ({SIGNATURE_FILE})" if signed_here else None
        if out.signature is not None and not fresh:
            # The tag was there already (a rerun, or published before): a companion tag.
            at = RemoteVersion(self.url, plan.source, ref=plan.tag, revision=commit)
            signed = self.attach_signature(at, out.signature) or f"{self.url} (there already)"
        sent = [s.name for s in plan.steps if s.action == "upload"] if fresh else []
        present = [n for n in sorted(files) if n not in sent]
        return Published(
            plan.source, commit, sent, [], present, removed if fresh else [], signed=signed
        )

    # -- signatures ------------------------------------------------------------------------

    def signatures(self, version: RemoteVersion) -> list[bytes]:
        """``model.sig`` of the version's companion tags (newest first), then of its commit.

        Offline, none: the Hugging Face cache does not keep tags.
        """
        if _offline():
            return []
        commit = self._commit_of(version)
        out = []
        if version.ref is not None and version_of(version.ref) is not None:
            for _, _, at in self._companions(version.ref)[:_MAX_SIGNATURES]:
                data = self._signature_at(at)
                if data is not None:
                    out.append(data)
        data = self._signature_at(commit)
        if data is not None:
            out.append(data)
        return out

    def _companions(self, tag_name: str) -> list[tuple[int, str, str]]:
        """``(n, tag, commit)`` of the version tag's companion tags, newest first."""
        try:
            refs = api().list_repo_refs(self.repo_id)
        except Exception as e:
            raise _remote_error(f"cannot list tags of {self.url}", e, _NETWORK_HINT) from e
        found = []
        for t in refs.tags:
            m = _COMPANION.fullmatch(t.name)
            if m is not None and m["tag"] == tag_name:
                found.append((int(m["n"] or 1), t.name, t.target_commit))
        return sorted(found, reverse=True)

    def _signature_at(self, commit: str) -> bytes | None:
        """The ``model.sig`` of a commit, checked against the Hub's record of it (or None)."""
        f = self.files(commit).get(SIGNATURE_FILE)
        if f is None or f.size > _MAX_SIGNATURE:
            return None
        where = f"{SIGNATURE_FILE} from {self.url} at {commit}"
        got = bytearray()
        opener = _file_opener(self.repo_id, SIGNATURE_FILE, commit)
        transfer.copy(opener, f.size, got.extend, where=where)
        data = bytes(got)
        if not _holds(f, data):
            raise IntegrityError(
                f"{where}: the bytes served are not the ones the Hub records",
                hint="the download was corrupted: run the command again",
            )
        return data

    def attach_signature(self, version: RemoteVersion, data: bytes) -> str | None:
        """Add a signature under the version's next companion tag (see the module docstring).

        The commit is made on a branch started at the version's commit, which is deleted
        once the companion tag points at the commit: the version's tag and ``main`` do not
        move.

        Raises:
            UsageError: the version has no ``weights-*`` tag to be the companion of.
            IntegrityError: the Hub recorded another ``model.sig`` than was sent.
            TagConflictError: another publisher took the companion tag meanwhile.
            RemoteError: the Hub refused or failed.
        """
        from huggingface_hub import CommitOperationAdd

        version_tag = version.ref
        if version_tag is None or version_of(version_tag) is None:
            raise UsageError(
                f"{version.source}: a signature travels with a version's tag (weights-VERSION), "
                "and this names none",
                hint=f"name the version by its tag: {self.url}@weights-VERSION",
            )
        commit = self._commit_of(version)
        if data in self.signatures(version):
            return None
        companions = self._companions(version_tag)
        name = signature_tag(version_tag, companions[0][0] + 1 if companions else 1)
        branch = f"cas-signature-{hashlib.sha256(data).hexdigest()[:16]}"
        hub = api()
        try:
            hub.create_branch(self.repo_id, branch=branch, revision=commit, exist_ok=True)
        except Exception as e:
            raise _remote_error(
                f"cannot sign {version_tag} of {self.url}", e, _token_hint(e)
            ) from e
        try:
            head = self.commit(branch)
            assert head is not None  # not offline: signatures() answered
            if self._signature_at(head) != data:
                op = CommitOperationAdd(path_in_repo=SIGNATURE_FILE, path_or_fileobj=data)
                try:
                    info = hub.create_commit(
                        self.repo_id,
                        [op],
                        commit_message=f"weights: signature of {version_tag}",
                        revision=branch,
                    )
                except Exception as e:
                    raise _remote_error(
                        f"upload of the signature of {version_tag} to {self.url} failed",
                        e,
                        _token_hint(e),
                    ) from e
                head = str(info.oid)
                if self._signature_at(head) != data:
                    raise IntegrityError(
                        f"{self.url} commit {head}: {SIGNATURE_FILE} is not the signature sent; "
                        f"no tag was created",
                        hint="check the repo, then publish the signature again",
                    )
            try:
                hub.create_tag(self.repo_id, tag=name, revision=head)
            except Exception as e:
                now = {t: c for _, t, c in self._companions(version_tag)}.get(name)
                if now != head:
                    raise TagConflictError(
                        f"tag {name} of {self.url} was created meanwhile"
                        + (f" at {now}" if now else "")
                        + "; nothing was moved",
                        hint="publish the signature again: it takes the next companion tag",
                    ) from e
        finally:
            with contextlib.suppress(Exception):
                hub.delete_branch(self.repo_id, branch=branch)
        return f"{self.url}@{name} ({SIGNATURE_FILE})"


# Files a publish always writes or never touches.
_OURS = frozenset({".gitattributes", METADATA_FILE})


def _written(meta: dict[str, Any] | None) -> set[str]:
    """The files a ``modelcas.json`` says ``cas publish`` wrote (the version's files)."""
    files = (meta or {}).get("files")
    return {str(f) for f in files} if isinstance(files, dict | list) else set()


def _metadata(out: Outgoing) -> dict[str, object]:
    meta: dict[str, object] = {
        "model": out.model,
        "version": out.version,
        "requires": out.requires,
        "package": out.package,
        "files": {
            n: {"size": d.size, "sha256": d.sha256, "blake3": d.blake3}
            for n, (_, d) in sorted(out.files.items())
        },
    }
    if out.signature is not None:
        meta["signature"] = SIGNATURE_FILE  # written by cas: a later publish may replace it
    return meta


def _holds(f: HubFile, data: bytes) -> bool:
    """Whether the Hub's record of a file (LFS sha256, else git blob id) is of ``data``."""
    if f.sha256 is not None:
        return f.size == len(data) and hashlib.sha256(data).hexdigest() == f.sha256
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 (git's id)
    return f.blob_id == blob


def _differences(
    files: Mapping[str, Digest], recorded: Mapping[str, HubFile], local: Mapping[str, Path]
) -> list[str]:
    """How the Hub's record of a commit differs from the version's files (empty: it holds them).

    A file the Hub keeps in git (no LFS sha256) is compared by its git blob id, computed from
    its bytes here (``local``).
    """
    out = []
    for name, d in sorted(files.items()):
        got = recorded.get(name)
        if got is None:
            out.append(f"{name} is missing")
        elif got.size != d.size:
            out.append(f"{name} is {got.size} bytes, not {d.size}")
        elif got.sha256 is not None and got.sha256 != d.sha256:
            out.append(f"{name} is sha256:{got.sha256}, not sha256:{d.sha256}")
        elif got.xet:
            out.append(f"{name} is listed with no LFS sha256 (Xet), so its bytes cannot be checked")
        elif got.sha256 is None:
            blob = hfcache.git_blob_id(local[name].read_bytes())
            if got.blob_id != blob:
                out.append(f"{name} has git blob {got.blob_id}, not {blob}")
    return out


def _git_blob_check(
    f: HubFile, where: str
) -> Callable[[], tuple[Callable[[bytes | memoryview], object], Callable[[], None]]]:
    """Small non-LFS files are checked against their git blob id as well (fresh per start)."""

    def make() -> tuple[Callable[[bytes | memoryview], object], Callable[[], None]]:
        blob = hashlib.sha1(f"blob {f.size}\0".encode())  # noqa: S324 (git's own id)

        def check() -> None:
            if blob.hexdigest() != f.blob_id:
                raise IntegrityError(
                    f"{where}: git blob id {blob.hexdigest()} differs from the Hub's "
                    f"{f.blob_id}; nothing was stored",
                    hint="the download was corrupted: run the command again",
                )

        return blob.update, check

    return make


class _SessionAnswer:
    """A streaming answer of the Hub client's HTTP session, as :class:`transfer.Answer`."""

    def __init__(self, context: Any, response: Any) -> None:
        self._context = context
        self._r = response
        self.status = int(response.status_code)

    def header(self, name: str) -> str | None:
        if name.lower() == "content-length" and self._r.headers.get("Content-Encoding") not in (
            None,
            "identity",
        ):
            return None  # the length of the compressed body, not of the file
        value = self._r.headers.get(name)
        return str(value) if value is not None else None

    def pieces(self) -> Iterator[bytes]:
        yield from self._r.iter_bytes()

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def _same_version(version: str) -> Callable[[str], bool]:
    from modelcas.lockfile import same_version

    return lambda other: same_version(other, version)


def _version_key(version: str) -> Any:
    from modelcas.lockfile import parse_version

    try:
        return (0, parse_version(version))
    except UsageError:
        return (1, version)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_metadata(repo_id: str, commit: str) -> dict[str, Any] | None:
    """The ``modelcas.json`` a publish wrote into a commit; None when the commit has none.

    It says which files are the version's and what it ``requires``: a Hub that fails to
    answer is an error, never "a repo cas did not publish" (that would pin the version
    without its range).

    Raises:
        RemoteError: the Hub failed, or the file is not JSON.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    where = f"hf://{repo_id} at {commit}: {METADATA_FILE}"
    try:
        path = hf_hub_download(
            repo_id, METADATA_FILE, revision=commit, endpoint=os.environ.get("HF_ENDPOINT") or None
        )
    except EntryNotFoundError as e:
        if isinstance(e, LocalEntryNotFoundError) and not _offline():
            raise _remote_error(f"cannot read {where}", e, _NETWORK_HINT) from e
        return None  # not there (offline: not in the HF cache, where a download leaves it)
    except Exception as e:
        raise _remote_error(f"cannot read {where}", e, _NETWORK_HINT) from e
    try:
        text = untrusted.read_text(path, "modelcas.json", cap=_MAX_METADATA)
    except ModelcasError as e:  # the cache's entry is a FIFO, a device, far too large...
        if _offline():
            raise RemoteError(
                f"{where}: the Hugging Face cache's copy cannot be read ({e.message})",
                hint="delete that entry from the Hugging Face cache, or pull online",
            ) from None
        text = _read_from_hub(repo_id, METADATA_FILE, commit, where)  # pass the cache over
    except OSError as e:
        raise RemoteError(f"{where}: cannot read the Hugging Face cache's copy ({e})") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise RemoteError(f"{where} is not JSON ({e})") from None
    return raw if isinstance(raw, dict) else None


def _file_opener(repo_id: str, path: str, commit: str) -> transfer.Opener:
    """Opens a file of a commit on the Hub, from an offset, under the low-speed limit."""
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = hf_hub_url(repo_id, path, revision=commit, endpoint=os.environ.get("HF_ENDPOINT") or None)
    headers = build_hf_headers(token=_token())
    limit = transfer.SpeedLimit.from_env()

    def open_at(offset: int) -> transfer.Answer:
        sent = {**headers, **({"Range": f"bytes={offset}-"} if offset else {})}
        context = get_session().stream(
            "GET", url, headers=sent, follow_redirects=True, timeout=limit.seconds
        )
        return _SessionAnswer(context, context.__enter__())

    return open_at


def _read_from_hub(repo_id: str, path: str, commit: str, where: str) -> str:
    """A small file of a commit, read from the Hub itself (bounded), never from the cache."""
    data = bytearray()
    try:
        answer = _file_opener(repo_id, path, commit)(0)
        try:
            if answer.status != 200:
                raise RemoteError(f"cannot read {where}: HTTP {answer.status}", hint=_NETWORK_HINT)
            for piece in answer.pieces():
                data += piece
                if len(data) > _MAX_METADATA:
                    raise RemoteError(f"{where}: more than {_MAX_METADATA} bytes")
        finally:
            answer.close()
    except RemoteError:
        raise
    except Exception as e:
        raise _remote_error(f"cannot read {where}", e, _NETWORK_HINT) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteError(f"{where} is not UTF-8 text") from None


def weight_tags(repo_id: str) -> dict[str, str]:
    """``{version: commit}`` for every ``weights-*`` tag of a repo."""
    try:
        refs = api().list_repo_refs(repo_id)
    except Exception as e:
        raise _remote_error(f"cannot list tags of hf://{repo_id}", e) from e
    return {v: t.target_commit for t in refs.tags if (v := version_of(t.name)) is not None}


NOT_WEIGHTS = frozenset({".gitattributes", "README.md", METADATA_FILE, SIGNATURE_FILE})


def tree(repo_id: str, revision: str) -> dict[str, HubFile]:
    """Every file of a revision (an empty dict for a repo with no commit yet)."""
    return HubRemote(repo_id).files(revision)


def repo_exists(repo_id: str) -> bool:
    """Whether the repo exists (and is visible with the current token).

    Raises:
        RemoteError: the Hub failed for another reason.
    """
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        api().repo_info(repo_id)
    except RepositoryNotFoundError:
        return False
    except Exception as e:
        raise _remote_error(f"cannot reach hf://{repo_id}", e, _NETWORK_HINT) from e
    return True


@dataclass(frozen=True, slots=True)
class Upload:
    """One file of a commit: its path in the repo, the stored object, and its digest."""

    path_in_repo: str
    object_path: Path
    digest: Digest


def commit_version(
    repo_id: str,
    uploads: list[Upload],
    metadata: dict[str, Any],
    delete: list[str],
    message: str,
    *,
    private: bool,
    progress: Progress | None = None,
    signature: bytes | None = None,
) -> str:
    """Create the repo if missing, and commit ``uploads`` and the metadata, deleting ``delete``.

    Bytes the Hub already has are not sent again; ``signature`` goes in as ``model.sig``.
    Returns the commit.

    Uploads read the store's read-only objects, whose sha256 is known: the client does not
    hash them a second time.

    Raises:
        RemoteError: the Hub refused or failed; the message names the repo and the step.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    hub = api()
    where = f"hf://{repo_id}"
    try:
        hub.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as e:
        raise _remote_error(f"cannot create {where}", e, _token_hint(e)) from e
    ops: list[Any] = []
    for u in uploads:
        op = CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=str(u.object_path))
        op.upload_info.sha256 = bytes.fromhex(u.digest.sha256)
        if progress is not None:
            op.path_or_fileobj = _Reporting(u.object_path, progress)
        ops.append(op)
    body = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
    ops.append(CommitOperationAdd(path_in_repo=METADATA_FILE, path_or_fileobj=body))
    if signature is not None:
        ops.append(CommitOperationAdd(path_in_repo=SIGNATURE_FILE, path_or_fileobj=signature))
    ops.extend(CommitOperationDelete(path_in_repo=p) for p in delete)
    try:
        info = hub.create_commit(repo_id, ops, commit_message=message)
    except Exception as e:
        raise _remote_error(f"upload to {where} failed", e, _token_hint(e)) from e
    finally:
        for op in ops:
            if isinstance(getattr(op, "path_or_fileobj", None), _Reporting):
                op.path_or_fileobj.close()
    return str(info.oid)


def tag(repo_id: str, tag_name: str, commit: str) -> None:
    """Create ``tag_name`` at ``commit``; an existing tag is never moved.

    Raises:
        TagConflictError: the tag exists at another commit.
        RemoteError: the Hub failed.
    """
    try:
        api().create_tag(repo_id, tag=tag_name, revision=commit)
    except Exception as e:
        now = weight_tags(repo_id).get(version_of(tag_name) or "")
        if now == commit:
            return  # created by an earlier run of the same publish
        if now is not None:
            raise TagConflictError(
                f"tag {tag_name} of hf://{repo_id} points at {now}, not at the commit just "
                f"made ({commit}); refusing to move it",
                hint="publish a new version",
            ) from e
        raise _remote_error(f"cannot tag hf://{repo_id} at {commit} as {tag_name}", e) from e


class _Reporting(io.BufferedReader):
    """A read-only file that reports every byte read to a progress callback."""

    def __init__(self, path: Path, progress: Progress) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._progress = progress

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self._progress(len(data))
        return data

    def readinto(self, buffer: Any, /) -> int:
        n = super().readinto(buffer)
        self._progress(n)
        return n


_NETWORK_HINT = "check the network, HF_ENDPOINT and HF_TOKEN"


def _token_hint(e: BaseException) -> str:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403) or _token() is None:
        return "set HF_TOKEN to a token with write access, or run `hf auth login`"
    return "run the same command again: it resumes where it stopped"
