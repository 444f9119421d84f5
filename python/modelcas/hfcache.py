"""One cache with the Hugging Face client: take bytes it already has, leave ours where it looks.

The Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``) keeps each repo as::

    models--ORG--NAME/
      blobs/<etag>                       the bytes: the sha256 for LFS files, the git blob id else
      snapshots/<commit>/<path>          -> ../../blobs/<etag>
      refs/<revision>                    the commit a tag or branch resolved to
    .locks/models--ORG--NAME/<etag>.lock

- **Taking** (:func:`take`): a pinned file whose bytes are already there is ingested without a
  download: cloned (reflink) into the store's temporary area and hashed there, or copied while
  hashed, and published only if both digests match the pin. Never hard-linked: an HF blob is
  writable by its owner, and a store object must not change. A blob that does not match is
  left alone and named in a warning; the caller downloads instead.
- **Giving** (:func:`give`): after a download, the object is given to the HF layout under
  the cache's own ``.locks`` lock, so that ``hf_hub_download(..., local_files_only=True)``
  finds it, by the store's one hard-link rule (``modelcas.store.linking``): a hard link only
  where nobody can write through it (not as root or with ``CAP_DAC_OVERRIDE``, not into
  another user's cache), else a reflink. Where only a copy would do (root on a filesystem
  without reflinks), giving doubles every pull's writes, so it is opt-in:
  ``MODELCAS_HF_CACHE=copy`` (``off`` never gives; ``auto``, the default, gives where it costs
  nothing), and the first pull that skips it says so, once per store. Every name appears by
  rename, so the HF client never sees a partial file.

Nothing here imports ``huggingface_hub``; the layout is the documented one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelcas import hashing, untrusted
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, ModelcasError, UsageError
from modelcas.hashing import Progress
from modelcas.store import ObjectInfo, Store, fsync_dir, linking
from modelcas.store.durable import fsync_file, owned_name

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_GIT_BLOB = 64 << 20  # the Hub stores larger files in LFS
_MAX_REF = 4096  # a ref file holds one commit hash
Placed = Literal["hardlink", "reflink", "copy", "present", "skipped"]
SETTING = "MODELCAS_HF_CACHE"  # auto (default), copy, off
_said: list[str] = []  # the opt-in is named once per process


def cache_dir() -> Path:
    """The Hugging Face hub cache, as ``huggingface_hub`` finds it (from the environment now)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(os.path.expandvars(xdg)).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def repo_folder(repo_id: str, repo_type: str = "model") -> str:
    """``models--ORG--NAME``: the folder name the HF cache gives a repo."""
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit the HF cache recorded for a revision (a commit stays itself), or None."""
    revision = revision or "main"
    if _HEX40.fullmatch(revision):
        return revision
    ref = cache_dir() / repo_folder(repo_id) / "refs" / revision
    try:
        commit = untrusted.read_text(ref, "a ref file", cap=_MAX_REF).strip()
    except (OSError, ModelcasError):
        return None
    return commit if _HEX40.fullmatch(commit) else None


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A file of a cached commit: its path in the repo, size, and the blob's name (etag)."""

    path: str
    size: int
    etag: str

    @property
    def sha256(self) -> str | None:
        """The sha256 when the blob is an LFS file (named by its sha256)."""
        return self.etag if _HEX64.fullmatch(self.etag) else None


def snapshot(repo_id: str, commit: str) -> dict[str, SnapshotFile]:
    """The files the HF cache holds for a commit (only those it has), by path."""
    root = cache_dir() / repo_folder(repo_id) / "snapshots" / commit
    out: dict[str, SnapshotFile] = {}
    if not root.is_dir():
        return out
    for dirpath, _, names in os.walk(root):
        for name in names:
            pointer = Path(dirpath) / name
            try:
                # One level only: the pointer names the blob; the blob itself may link on.
                etag = Path(os.readlink(pointer)).name
                size = pointer.stat().st_size
            except OSError:
                continue  # not a pointer (a copy where symlinks are off), or dangling
            rel = pointer.relative_to(root).as_posix()
            out[rel] = SnapshotFile(rel, size, etag)
    return out


def git_blob_id(data: bytes) -> str:
    """Git's id of a blob: how the Hub names a file it keeps in git (not LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 (git's id)


def git_blob_digest(repo_id: str, commit: str, path: str, blob_id: str, size: int) -> Digest | None:
    """The digest of a small non-LFS file in the HF cache, if its git blob id checks out.

    Non-LFS files are named by their git blob id (sha1), not by sha256; this reads one once to
    learn its sha256, so that :func:`take` can then ingest it verified.
    """
    if not _HEX40.fullmatch(blob_id) or size > _MAX_GIT_BLOB:
        return None
    pointer = cache_dir() / repo_folder(repo_id) / "snapshots" / commit / path
    try:
        data = untrusted.read_file(pointer, "a cached file", cap=_MAX_GIT_BLOB)
    except (OSError, ModelcasError):
        return None
    if len(data) != size or git_blob_id(data) != blob_id:
        return None
    return Digest(hashlib.sha256(data).hexdigest(), size)


def _candidates(
    digest: Digest, repo_id: str | None, commit: str | None, file: str | None
) -> Iterator[Path]:
    cache = cache_dir()
    if repo_id is not None:
        folder = cache / repo_folder(repo_id)
        yield folder / "blobs" / digest.sha256
        if commit is not None and file is not None:
            yield folder / "snapshots" / commit / file  # a small non-LFS file, named by git id
    try:
        folders = sorted(p for p in cache.iterdir() if "--" in p.name)
    except OSError:
        return
    for folder in folders:
        yield folder / "blobs" / digest.sha256


def find(
    digest: Digest,
    *,
    repo_id: str | None = None,
    commit: str | None = None,
    file: str | None = None,
) -> Path | None:
    """A file in the HF cache that may hold these bytes (right size; not yet verified)."""
    for candidate in _candidates(digest, repo_id, commit, file):
        try:
            st = candidate.stat()
        except OSError:
            continue
        if st.st_size == digest.size and os.path.isfile(candidate):
            return candidate
    return None


def take(
    digest: Digest,
    store: Store,
    *,
    repo_id: str | None = None,
    commit: str | None = None,
    file: str | None = None,
    progress: Progress | None = None,
) -> ObjectInfo | None:
    """Ingest the bytes of ``digest`` from the HF cache, verified; None when it lacks them.

    The blob is cloned (reflink) into the store's temporary area and hashed there, so nobody
    can change it between the check and the publish; where the filesystem cannot clone, it is
    copied while hashed. It is never hard-linked.

    Args:
        digest: what the bytes must be (sha256, size, and blake3 when known).
        store: the local store.
        repo_id: look in this repo's folder first (then in every repo of the cache).
        commit: with ``file``, also look at that commit's snapshot (small non-LFS files).
        file: the file's path in the repo.
        progress: called with byte counts.

    Returns:
        The stored object, or None when the cache has no such bytes (or has other bytes under
        that name, which a warning names).
    """
    if store.has(digest.sha256):
        return store.info(digest.sha256)
    source = find(digest, repo_id=repo_id, commit=commit, file=file)
    if source is None:
        return None
    what = f"{source} (Hugging Face cache)"
    try:
        cloned = _ingest_by_reflink(source, digest, store, what, progress)
        if cloned is not None:
            return cloned
        return store.add_file(source, expected=digest, progress=progress).info
    except IntegrityError as e:
        warnings.warn(
            f"{what} does not hold sha256:{digest.sha256}; it was not used ({e.message})",
            stacklevel=2,
        )
        return None
    except OSError as e:
        warnings.warn(f"{what} could not be read ({e.strerror or e}); not used", stacklevel=2)
        return None
    except UsageError as e:  # not a regular file (a FIFO or device put in the cache)
        warnings.warn(f"{what} could not be used: {e.message}", stacklevel=2)
        return None


def _ingest_by_reflink(
    source: Path, digest: Digest, store: Store, what: str, progress: Progress | None
) -> ObjectInfo | None:
    tmp = store.temp_path()
    try:
        try:
            linking.reflink(source, tmp)
        except OSError as e:
            if e.errno in linking.NO_REFLINK:
                return None
            raise
        fsync_file(tmp)
        got = hashing.hash_file(tmp, progress=progress).digest()
        if (
            got.sha256 != digest.sha256
            or got.size != digest.size
            or (digest.blake3 is not None and got.blake3 != digest.blake3)
        ):
            raise IntegrityError(
                f"{what}: expected sha256:{digest.sha256} ({digest.size} bytes), got "
                f"sha256:{got.sha256} ({got.size} bytes)"
            )
        return store.adopt(tmp, got, what=what)
    finally:
        tmp.unlink(missing_ok=True)


# -- giving --------------------------------------------------------------------------------


def give(
    store: Store,
    sha256: str,
    *,
    repo_id: str,
    commit: str,
    path: str,
    etag: str,
    revision: str | None = None,
) -> Placed:
    """Leave a stored object where ``hf_hub_download`` looks for ``repo_id``/``path`` at ``commit``.

    Args:
        store: the store holding the object.
        sha256: the object.
        repo_id: the Hub repo.
        commit: the commit the file belongs to.
        path: the file's path in the repo.
        etag: the blob's name in the HF cache: the sha256 for LFS files, the git blob id else.
        revision: the tag or branch that resolved to ``commit`` (written to ``refs/``).

    Returns:
        How the blob got there (``present`` when the cache had it already), or ``skipped``
        when giving is off, or would cost a copy that :data:`SETTING` does not allow.

    Raises:
        OSError: the cache cannot be written; the caller decides whether that matters.
        UsageError: a path or etag that cannot be a cache name, or a bad :data:`SETTING`.
    """
    setting = os.environ.get(SETTING, "auto").strip().lower() or "auto"
    if setting not in ("auto", "copy", "off"):
        raise UsageError(
            f"{SETTING}={setting!r} is not a setting", hint="use auto (default), copy or off"
        )
    if setting == "off":
        return "skipped"
    if not (_HEX64.fullmatch(etag) or _HEX40.fullmatch(etag)):
        raise UsageError(f"{etag!r} is not a Hub etag")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"{path!r} is not a safe path inside a repo")
    cache = cache_dir()
    folder = cache / repo_folder(repo_id)
    blob = folder / "blobs" / etag
    pointer = folder / "snapshots" / commit / Path(*parts)
    lock = cache / ".locks" / repo_folder(repo_id) / f"{etag}.lock"
    for d in (blob.parent, pointer.parent, lock.parent):
        d.mkdir(parents=True, exist_ok=True)
    with _locked(lock):
        placed: Placed = "present"
        if not _usable_blob(blob, store.info(sha256).digest.size):
            made = _place_blob(store.object_path(sha256), blob, copy_ok=setting == "copy")
            if made is None:
                _say_once(store, cache)
                return "skipped"
            placed = made
        if not pointer.exists():
            _atomic_symlink(os.path.relpath(blob, pointer.parent), pointer)
    if revision and revision != commit:
        _write_ref(folder / "refs" / revision, commit)
    return placed


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The lock ``huggingface_hub`` takes for this blob (a ``filelock`` on the same file)."""
    from filelock import FileLock  # noqa: PLC0415 (only when giving to the HF cache)

    with FileLock(str(path), mode=0o664):
        yield


def _usable_blob(blob: Path, size: int) -> bool:
    try:
        return blob.stat().st_size == size
    except OSError:
        return False


def _place_blob(obj: Path, blob: Path, *, copy_ok: bool) -> linking.Made | None:
    tmp = blob.with_name(f"{blob.name}.{owned_name()}.modelcas-tmp")
    try:
        placed = linking.link_out(obj, tmp, copy_ok=copy_ok)
        if placed is not None:
            os.replace(tmp, blob)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if placed is not None:
        fsync_dir(blob.parent)
    return placed


def _say_once(store: Store, cache: Path) -> None:
    # Once per process, and once per store and HF cache: a marker in the store remembers that
    # this user was told, so every later pull in a container does not repeat it.
    if _said:
        return
    _said.append(str(cache))
    key = hashlib.sha256(os.fsencode(cache)).hexdigest()[:16]
    marker = store.root / "notices" / f"hf-cache-skipped-{key}"
    if marker.exists():
        return
    with contextlib.suppress(OSError):  # a read-only store: say it every time instead
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
    warnings.warn(
        f"not giving downloads to the Hugging Face cache {cache}: a hard link would let a "
        f"write there change the store (this process can write read-only files), and this "
        f"filesystem cannot reflink, so each file would be copied; set {SETTING}=copy to "
        f"copy them (or {SETTING}=off to stop trying)",
        stacklevel=3,
    )


def _atomic_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.modelcas-tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _write_ref(ref: Path, commit: str) -> None:
    with contextlib.suppress(OSError, ModelcasError):
        if untrusted.read_text(ref, "a ref file", cap=_MAX_REF) == commit:
            return
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, ref)
