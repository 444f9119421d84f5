"""The Hugging Face Hub as a remote: publish versions, pull them, follow tags.

Everything goes through ``huggingface_hub``. Downloads are made by commit (a tag is resolved
once, first), streamed into the store and hashed while they arrive, then checked against the
Hub's own LFS sha256 and against the lockfile's pin: the Hub client itself checks only sizes.
``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured; a token never appears in
any output.

huggingface_hub is imported inside the functions that use it, so that commands which never
touch the Hub do not pay for importing it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcas import hfcache
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, ModelcasError, RemoteError, TagConflictError
from modelcas.hashing import Progress
from modelcas.store import ObjectInfo, Store

TAG_PREFIX = "weights-"
# A cut download is resumed this many times (Range from the bytes already hashed), with
# exponential backoff from _BACKOFF seconds, as hf_hub_download does.
_RETRIES = 5
_BACKOFF = 0.25
# Written into every published commit: lets `cas update` check `requires` before pulling.
METADATA_FILE = "modelcas.json"


def tag_for(version: str) -> str:
    """The Hub tag of a weights version: ``v1.1`` -> ``weights-v1.1``."""
    return TAG_PREFIX + version


def version_of(tag: str) -> str | None:
    """The weights version a tag names, or None for other tags."""
    return tag.removeprefix(TAG_PREFIX) if tag.startswith(TAG_PREFIX) else None


def scrub(text: str) -> str:
    """Remove the Hub token from text that may reach a user or a log."""
    token = _token()
    if token and len(token) >= 4:
        text = text.replace(token, "***")
    return text


def _token() -> str | None:
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def api() -> Any:
    """An ``HfApi`` for ``HF_ENDPOINT`` as set now (not when huggingface_hub was imported)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

    # cas draws its own bars, on a terminal only; the client's would clutter logs.
    disable_progress_bars()
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def _remote_error(what: str, e: BaseException, hint: str | None = None) -> RemoteError:
    return RemoteError(f"{what}: {scrub(str(e)).strip().splitlines()[0]}", hint=hint)


@dataclass(frozen=True, slots=True)
class HubFile:
    """A file in a Hub commit: size, the LFS sha256 when it is an LFS file, the git blob id."""

    path: str
    size: int
    sha256: str | None
    blob_id: str


class HubRemote:
    """One Hub repository at one revision (a tag such as ``weights-v1.1``, or a commit)."""

    def __init__(self, repo_id: str, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.url = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
        # Files this remote took from the Hugging Face cache instead of downloading them.
        self.from_hf_cache: set[str] = set()

    def resolve(self) -> str | None:
        """The commit the revision points at now (offline: what the HF cache recorded).

        Raises:
            RemoteError: the repo or revision does not exist, or the Hub failed.
        """
        if _offline():
            return hfcache.cached_commit(self.repo_id, self.revision)
        try:
            info = api().model_info(self.repo_id, revision=self.revision or "main")
        except Exception as e:
            raise _remote_error(
                f"cannot resolve {self.url}", e, "check the repo and tag, your network and HF_TOKEN"
            ) from e
        return str(info.sha)

    def files(self, commit: str, paths: Iterable[str] | None = None) -> dict[str, HubFile]:
        """The files of a commit (all of them, or ``paths``), with their LFS sha256.

        Offline, the files the HF cache holds for that commit.
        """
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
                out[e.path] = HubFile(e.path, int(e.size), lfs.sha256 if lfs else None, e.blob_id)
        except Exception as e:
            raise _remote_error(f"cannot list files of {self.url} at {commit}", e) from e
        return out

    def fetch(
        self,
        file: str,
        digest: Digest,
        store: Store,
        *,
        commit: str | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Bring one pinned file into the store, verified (see ``Remote``).

        Bytes the Hugging Face cache already holds are taken from it, online or offline;
        otherwise the file is downloaded by commit.
        """
        if store.has(digest.sha256):
            return store.info(digest.sha256)
        taken = hfcache.take(
            digest, store, repo_id=self.repo_id, commit=commit, file=file, progress=progress
        )
        if taken is not None:
            self.from_hf_cache.add(file)
            return taken
        if _offline():
            raise RemoteError(
                f"{file} (sha256:{digest.sha256}) is neither in the store nor in the Hugging "
                f"Face cache ({hfcache.cache_dir()}), and HF_HUB_OFFLINE is set",
                hint="run `cas sync` once online; after that it works offline",
            )
        commit = commit or self.resolve()
        assert commit is not None
        listed = self.files(commit, [file]).get(file)
        if listed is None:
            raise RemoteError(f"{self.url} (commit {commit}) has no file {file!r}")
        return self.download(listed, commit, store, digest, progress=progress)

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
        id) and ``expected`` when given; otherwise nothing is stored. A download is hashed
        while it arrives; a cut transfer resumes with a Range request (bounded retries with
        backoff), so every byte is hashed once. What was downloaded is then left in the HF
        cache too, where ``hf_hub_download`` finds it.

        Raises:
            IntegrityError: other bytes than the Hub or the pin says.
            RemoteError: the download failed or was cut short too often.
        """
        where = f"{f.path} from hf://{self.repo_id} at {commit}"
        if expected is not None and f.sha256 is not None and f.sha256 != expected.sha256:
            raise IntegrityError(
                f"{where}: the Hub lists sha256:{f.sha256}, the lockfile pins "
                f"sha256:{expected.sha256}; nothing was downloaded",
                hint="the repo changed under the pin: check who moved it, then re-pin or fix",
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
        info = self._stream(f, commit, store, want, where=where, progress=progress)
        self._give(store, info, f, commit)
        return info

    def _stream(
        self,
        f: HubFile,
        commit: str,
        store: Store,
        want: Digest | None,
        *,
        where: str,
        progress: Progress | None,
    ) -> ObjectInfo:
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(
            self.repo_id, f.path, revision=commit, endpoint=os.environ.get("HF_ENDPOINT") or None
        )
        failures: list[str] = []
        with store.writer(want, where) as w:
            t = _Transfer(f, w, where, progress)
            while True:
                try:
                    t.get(url)
                    if t.received == f.size:
                        break
                    failures.append(f"cut after {t.received} bytes")
                except (IntegrityError, RemoteError):
                    raise
                except Exception as e:  # the network: resumed below, a bounded number of times
                    failures.append(scrub(f"{type(e).__name__}: {e}".splitlines()[0]))
                if len(failures) > _RETRIES:
                    raise RemoteError(
                        f"{where}: received {t.received} of {f.size} bytes in {len(failures)} "
                        f"tries (last: {failures[-1]}); nothing was stored",
                        hint="the connection keeps failing: check the network, then run the "
                        "command again",
                    )
                time.sleep(min(_BACKOFF * 2 ** (len(failures) - 1), 8.0))
            if t.blob is not None and t.blob.hexdigest() != f.blob_id:
                raise IntegrityError(
                    f"{where}: git blob id {t.blob.hexdigest()} differs from the Hub's "
                    f"{f.blob_id}; nothing was stored",
                    hint="the download was corrupted: run the command again",
                )
            return w.commit()

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


class _CutError(Exception):
    """A transfer that stopped early or failed in a way worth resuming."""


class _Transfer:
    """One file's bytes arriving over one or more GETs, each byte written and hashed once."""

    def __init__(self, f: HubFile, writer: Any, where: str, progress: Progress | None) -> None:
        self.f = f
        self.writer = writer
        self.where = where
        self.progress = progress
        self.received = 0
        # Small non-LFS files are checked against their git blob id as well.
        self.blob = hashlib.sha1(f"blob {f.size}\0".encode()) if f.sha256 is None else None  # noqa: S324

    def get(self, url: str) -> None:
        """One GET from where the last one stopped (``Range``); returns when it ends or cuts."""
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        headers = build_hf_headers(token=_token())
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True) as r:
            status = r.status_code
            if status not in (200, 206) or (status == 206 and not self.received):
                if status < 500 and status != 429:
                    raise RemoteError(f"{self.where}: HTTP {status}")
                raise _CutError(f"HTTP {status}")
            if status == 206 and not _starts_at(r, self.received):
                raise RemoteError(
                    f"{self.where}: asked for bytes from {self.received}, the Hub answered "
                    f"{r.headers.get('Content-Range')!r}"
                )
            # A server that ignores Range sends everything again: skip what we have.
            skip = self.received if status == 200 else 0
            # As the socket gives them: the store's writer batches them.
            for chunk in r.iter_bytes():
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                self._take(memoryview(chunk)[skip:])
                skip = 0

    def _take(self, data: memoryview) -> None:
        if self.received + len(data) > self.f.size:
            raise IntegrityError(
                f"{self.where}: the Hub sends more than the {self.f.size} bytes it lists; "
                "nothing was stored"
            )
        self.writer.write(data)
        if self.blob is not None:
            self.blob.update(data)
        self.received += len(data)
        if self.progress is not None:
            self.progress(len(data))


def _starts_at(response: Any, offset: int) -> bool:
    """Whether a 206 answer's ``Content-Range`` starts where we asked."""
    value = str(response.headers.get("Content-Range") or "")
    unit, _, spec = value.partition(" ")
    return unit == "bytes" and spec.split("-", 1)[0] == str(offset)


def read_metadata(repo_id: str, commit: str) -> dict[str, Any] | None:
    """The ``modelcas.json`` a publish wrote into a commit, or None."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id, METADATA_FILE, revision=commit, endpoint=os.environ.get("HF_ENDPOINT") or None
        )
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:
        return None
    return raw if isinstance(raw, dict) else None


def weight_tags(repo_id: str) -> dict[str, str]:
    """``{version: commit}`` for every ``weights-*`` tag of a repo."""
    try:
        refs = api().list_repo_refs(repo_id)
    except Exception as e:
        raise _remote_error(f"cannot list tags of hf://{repo_id}", e) from e
    return {v: t.target_commit for t in refs.tags if (v := version_of(t.name)) is not None}


NOT_WEIGHTS = frozenset({".gitattributes", "README.md", METADATA_FILE})


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
) -> str:
    """Create the repo if missing, and commit ``uploads`` and the metadata, deleting ``delete``.

    Bytes the Hub already has are not sent again. Returns the commit.

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
