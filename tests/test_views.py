"""Named views: every path handed out ends in its pinned name, and costs a few symlinks.

What a write through a handed-out path does is held here too, as root and as `nobody`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcas.digest import Digest
from modelcas.errors import IntegrityError
from modelcas.lockfile import Lockfile
from modelcas.ops.gc import collect
from modelcas.registry import Registry, open_lock
from modelcas.store import Store, views
from tests.refs import ref_sha256
from tests.users import AS_NOBODY

Cas = Callable[..., subprocess.CompletedProcess[bytes]]


def _pin(store: Store, lock: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """Pin files (written under their names in a scratch folder) with the real `add`."""
    from modelcas.ops.add import PinRequest, add

    src = lock.parent / f"src-{name}-{version}-{time.monotonic_ns()}"
    for fname, data in files.items():
        (src / fname).parent.mkdir(parents=True, exist_ok=True)
        (src / fname).write_bytes(data)
    add([src], store, pin=PinRequest(name, version, lock=lock))
    shutil.rmtree(src)


def test_a_pinned_path_ends_in_its_name_and_is_a_relative_symlink_to_the_object(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    _pin(store, lock, "det", "v1", {"best.pt": b"weights"})
    reg = open_lock(lock, store=store)
    p = reg.path("det")
    assert p.name == "best.pt" and p.parent.parent == store.root / "views"
    obj = store.object_path(ref_sha256(b"weights"))
    assert p.is_symlink() and not os.path.isabs(os.readlink(p))
    assert p.resolve() == obj.resolve()
    # No copy and no second name on the object's inode.
    assert obj.stat().st_nlink == 1 and p.stat().st_ino == obj.stat().st_ino
    assert p.parent.stat().st_mode & 0o777 == 0o555, "a view is read-only"
    assert reg.paths("det") == {"best.pt": p}
    assert reg.view("det") == p.parent


def test_two_lockfiles_pinning_the_same_version_to_other_bytes_get_two_views(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _pin(store, tmp_path / "a" / "cas.lock", "det", "v1", {"best.pt": b"lab A"})
    _pin(store, tmp_path / "b" / "cas.lock", "det", "v1", {"best.pt": b"lab B"})
    pa = open_lock(tmp_path / "a" / "cas.lock", store=store).path("det", "v1")
    pb = open_lock(tmp_path / "b" / "cas.lock", store=store).path("det", "v1")
    assert pa.name == pb.name == "best.pt" and pa != pb
    assert pa.read_bytes() == b"lab A" and pb.read_bytes() == b"lab B"
    # The same bytes under the same names share one view.
    (tmp_path / "c").mkdir()
    _pin(store, tmp_path / "c" / "cas.lock", "other-name", "v7", {"best.pt": b"lab A"})
    assert open_lock(tmp_path / "c" / "cas.lock", store=store).path("other-name") == pa


def test_a_tampered_view_is_rebuilt_when_handed_out_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    _pin(store, lock, "hf", "v1", {"config.json": b"{}", "sub/w.bin": b"w"})
    reg = open_lock(lock, store=store)
    folder = reg.view("hf")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "config.json",
        "sub",
        "sub/w.bin",
    ]
    # Root replaces an entry by a file, and drops a stray file in: both are noticed.
    os.chmod(folder, 0o755)
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes(b'{"evil": 1}')
    (folder / "extra.bin").write_bytes(b"x")
    again = reg.view("hf")
    assert again == folder
    assert (folder / "config.json").read_bytes() == b"{}" and (folder / "config.json").is_symlink()
    assert not (folder / "extra.bin").exists()
    assert not [p for p in (store.root / "views").iterdir() if p.name.startswith(".")]


def test_views_are_derived_gc_removes_them_with_their_objects_and_use_rebuilds_them(
    tmp_path: Path, cas: Cas
) -> None:
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    _pin(store, lock, "det", "v1", {"best.pt": b"v1 bytes"})
    _pin(store, lock, "det", "v2", {"best.pt": b"v2 bytes"})
    reg = open_lock(lock, store=store)
    p1, p2 = reg.path("det", "v1"), reg.path("det", "v2")
    # A view is never a root: gc keeps what the lockfile pins, and the views with it.
    report = collect(store, grace=0)
    assert report.objects == [] and report.views == 0 and p1.exists() and p2.exists()
    # v1 unpinned: its object goes, and the view naming it goes with it.
    r = cas("lock", "rm", "det@v1", "--lock", lock)
    assert r.returncode == 0, r.stderr
    report = collect(store, grace=0)
    assert [o.digest.sha256 for o in report.objects] == [ref_sha256(b"v1 bytes")]
    assert report.views == 1
    assert not os.path.lexists(p1.parent) and p2.exists()
    # Pinned again: the next use rebuilds the same view.
    _pin(store, lock, "det", "v1", {"best.pt": b"v1 bytes"})
    assert open_lock(lock, store=store).path("det", "v1") == p1
    assert p1.read_bytes() == b"v1 bytes"
    # A view a build left behind (a killed process) is cleaned too.
    left = store.root / "views" / ".0000abcd-999999-0123456789abcdef0123456789abcdef.building"
    left.mkdir()
    os.symlink("../../objects/x", left / "x")
    left.chmod(0o555)
    os.utime(left, (time.time() - 10, time.time() - 10))
    assert collect(store, grace=0).views == 1 and not os.path.lexists(left)


def test_a_view_whose_object_is_being_fetched_again_is_put_back_not_removed(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "x.bin"
    src.write_bytes(b"x")
    d = store.add_file(src).info.digest
    folder = views.view(store, {"x.bin": d})
    # Complete views stay; a view naming an absent object goes.
    assert views.collect(store, time.time()) == 0
    ghost = Digest("b" * 64, 1)
    gone = views.view(store, {"x.bin": ghost})
    assert views.collect(store, time.time(), dry_run=True) == 1 and gone.exists()
    assert views.collect(store, time.time()) == 1
    assert not os.path.lexists(gone) and folder.exists()


def test_names_that_are_not_relative_paths_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    d = Digest("c" * 64, 1)
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\nb"):
        with pytest.raises(Exception, match="cannot name"):
            views.view(store, {bad: d})
    with pytest.raises(Exception, match="both a file and a folder"):
        views.view(store, {"a": d, "a/b": d})


def test_bundle_models_have_named_paths_and_load_from_the_object(tmp_path: Path) -> None:
    from modelcas import bundle
    from tests.bundlekit import example_config

    store = Store(tmp_path / "store")
    path = bundle.create_model_bundle(
        example_config(tmp_path), tmp_path / "b.zip", auto_date=False, store=store
    )
    opened = bundle.open(path, store=store)
    assert opened.models()
    for key, model in opened.models().items():
        assert model.path.name == Path(model.member_name).name, key
        assert model.path.is_symlink() and model.path.resolve() == model.stored.resolve()
        assert model.path.read_bytes() == model.stored.read_bytes()


# -- writes through a handed-out path ----------------------------------------------------


_SAVE = """
import sys, torch
torch.save({"w": torch.zeros(3)}, sys.argv[1])
"""


def test_a_write_through_the_path_as_root_changes_the_object_and_is_caught_then_repaired(
    tmp_path: Path, cas: Cas
) -> None:
    if os.geteuid() != 0:
        pytest.skip("root only: as another user the write fails (the next test)")
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    _pin(store, lock, "det", "v1", {"best.pt": b"the pinned weights"})
    share = tmp_path / "share"
    r = cas("push", share, "--lock", lock, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    locked = Lockfile.load(lock)
    locked.add_mirror("det", "v1", share.as_uri())  # where `cas sync` fetches it again
    locked.save(lock)
    path = open_lock(lock, store=store).path("det")
    # Root ignores the object's 0444: torch.save writes through the symlink into the object.
    w = subprocess.run([sys.executable, "-c", _SAVE, str(path)], capture_output=True, check=False)
    assert w.returncode == 0, w.stderr
    assert path.read_bytes() != b"the pinned weights"
    # Never silently: handing the path out again refuses, and `cas verify` names it.
    with pytest.raises(IntegrityError, match="differs"):
        open_lock(lock, store=store).path("det")
    r = cas("verify", "--lock", lock, cwd=tmp_path)
    assert r.returncode == 1 and b"CORRUPT det@v1 best.pt" in r.stdout, r.stdout
    r = cas("verify", "--lock", lock, "--repair", cwd=tmp_path)
    assert r.returncode == 1 and b"moved to" in r.stdout
    r = cas("sync", "--lock", lock, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert open_lock(lock, store=store).path("det") == path
    assert path.read_bytes() == b"the pinned weights"


def test_a_write_through_the_path_as_another_user_fails_and_changes_nothing() -> None:
    # Root ignores permission bits, so the writes are made as `nobody`, in a directory that
    # user can reach (pytest's own tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="modelcas-views-"))
    try:
        base.chmod(0o755)
        store = Store(base / "store")
        lock = base / "cas.lock"
        _pin(store, lock, "det", "v1", {"best.pt": b"the pinned weights"})
        path = Registry(Lockfile.load(lock), store).path("det")
        for d in (store.root, *store.root.rglob("*")):
            if d.is_dir() and not d.is_symlink() and d.parent.name != "views":
                d.chmod(0o755)
        attempts = {
            "torch.save": [sys.executable, "-c", _SAVE, str(path)],
            "open for writing": [sys.executable, "-c", f"open({str(path)!r}, 'wb')"],
            "shell append": ["/bin/sh", "-c", f"printf x >> '{path}'"],
            "replace the entry": [
                sys.executable,
                "-c",
                f"import os; open('{base}/t', 'w'); os.replace('{base}/t', {str(path)!r})",
            ],
            "a new file in the view": [sys.executable, "-c", f"open('{path.parent}/x', 'w')"],
        }
        for what, argv in attempts.items():
            r = subprocess.run(
                [*AS_NOBODY, *argv],
                capture_output=True,
                check=False,
                env={**os.environ, "HOME": str(base)},
            )
            assert r.returncode != 0, what
            assert b"Permission denied" in r.stderr or b"cannot be opened" in r.stderr, (
                what,
                r.stderr[-500:],
            )
        assert path.read_bytes() == b"the pinned weights"
        assert store.verify() == []
        assert sorted(os.listdir(path.parent)) == ["best.pt"]
    finally:
        for d, _, _ in os.walk(base):
            os.chmod(d, 0o755)
        shutil.rmtree(base, ignore_errors=True)


# -- cas path, cas get -o DIR/, cas add DIR ---------------------------------------------------


def _snapshot(where: Path) -> Path:
    """An HF-snapshot-like folder: config, index, two shards, a nested file, tool leftovers."""
    snap = where / "snapshot"
    files = {
        "config.json": b'{"model_type": "bert"}',
        "model.safetensors.index.json": b"{}",
        "model-00001-of-00002.safetensors": b"shard one",
        "model-00002-of-00002.safetensors": b"shard two",
        "tokenizer/vocab.txt": b"[PAD]\n",
        ".cache/huggingface/download/config.json.metadata": b"hf bookkeeping",
        ".git/HEAD": b"ref: refs/heads/main\n",
    }
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


def test_cas_add_of_a_directory_keeps_its_layout_and_path_prints_the_version_dir(
    tmp_path: Path, cas: Cas
) -> None:
    snap = _snapshot(tmp_path)
    r = cas("add", snap, "--name", "tiny-bert", "--version", "v1")
    assert r.returncode == 0, r.stderr
    files = Lockfile.load(tmp_path / "cas.lock").version("tiny-bert")[1].files
    assert sorted(files) == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer/vocab.txt",
    ]
    r = cas("path", "tiny-bert@v1")
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.decode().strip())
    assert (folder / "tokenizer" / "vocab.txt").read_bytes() == b"[PAD]\n"
    assert (folder / "config.json").read_bytes() == b'{"model_type": "bert"}'
    r = cas("path", "tiny-bert@v1", "--file", "tokenizer/vocab.txt")
    assert r.returncode == 0 and Path(r.stdout.decode().strip()) == folder / "tokenizer/vocab.txt"


def test_cas_add_of_an_empty_directory_is_refused_in_one_line(tmp_path: Path, cas: Cas) -> None:
    (tmp_path / "empty").mkdir()
    for argv in (["add", "empty"], ["add", "empty", "--name", "m", "--version", "v1"]):
        r = cas(*argv)
        assert r.returncode == 2
        assert r.stderr.decode().strip().splitlines() == [
            "cas: error: empty holds no file: an empty directory is not added"
        ]
    assert not (tmp_path / "cas.lock").exists()


def test_cas_get_writes_a_whole_version_into_a_directory_with_globs(
    tmp_path: Path, cas: Cas
) -> None:
    snap = _snapshot(tmp_path)
    assert cas("add", snap, "--name", "tiny-bert", "--version", "v1").returncode == 0
    r = cas("get", "tiny-bert@v1", "-o", "all/")
    assert r.returncode == 0, r.stderr
    got = sorted(str(p.relative_to(tmp_path / "all")) for p in (tmp_path / "all").rglob("*.*"))
    assert got == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer/vocab.txt",
    ]
    assert (tmp_path / "all" / "model-00002-of-00002.safetensors").read_bytes() == b"shard two"
    r = cas(
        "get", "tiny-bert@v1", "-o", "some/", "--include", "*.json", "tokenizer/",
        "--exclude", "*.index.json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = sorted(str(p.relative_to(tmp_path / "some")) for p in (tmp_path / "some").rglob("*.*"))
    assert got == ["config.json", "tokenizer/vocab.txt"]
    assert b"left out by --include/--exclude" in r.stdout
    # Symlink mode points into the store; nothing matches: one line, exit 2.
    r = cas("get", "tiny-bert@v1", "-o", "links/", "--link", "symlink", "--include", "config*")
    assert r.returncode == 0 and (tmp_path / "links" / "config.json").is_symlink()
    r = cas("get", "tiny-bert@v1", "-o", "none/", "--include", "*.onnx")
    assert r.returncode == 2 and b"no file of tiny-bert@v1 matches" in r.stderr
    # An existing directory is a directory target too; a single-file version lands by name.
    (tmp_path / "best.pt").write_bytes(b"det")
    assert cas("add", "best.pt", "--name", "det", "--version", "v1").returncode == 0
    (tmp_path / "weights").mkdir()
    r = cas("get", "det", "-o", "weights")
    assert r.returncode == 0 and (tmp_path / "weights" / "best.pt").read_bytes() == b"det"
    r = cas("get", "det", "-o", "x.pt", "--include", "*.pt")
    assert r.returncode == 2 and b"give -o DIR/" in r.stderr


def test_cas_get_into_a_directory_never_writes_through_a_link_below_it(
    tmp_path: Path, cas: Cas
) -> None:
    # A checked-out repo may hold `out/tokenizer -> ~/.ssh`: a pinned `tokenizer/vocab.txt`
    # must not land there. DIR itself may be a link (the user named it); nothing below it.
    snap = _snapshot(tmp_path)
    assert cas("add", snap, "--name", "tiny-bert", "--version", "v1").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tokenizer").symlink_to(elsewhere)
    r = cas("get", "tiny-bert@v1", "-o", "out/")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) <= 2 and "out/tokenizer" in lines[0] and "link" in lines[0], r.stderr
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tokenizer"], "nothing placed"
    # A file where a folder is needed: refused before anything is placed, too.
    (tmp_path / "out" / "tokenizer").unlink()
    (tmp_path / "out" / "tokenizer").write_bytes(b"not a folder")
    r = cas("get", "tiny-bert@v1", "-o", "out/")
    assert r.returncode == 2 and b"out/tokenizer" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tokenizer"]
    # Through a linked DIR: fine, that is where the user asked for the files.
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    r = cas("get", "tiny-bert@v1", "-o", "linked/")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "real" / "tokenizer" / "vocab.txt").read_bytes() == b"[PAD]\n"


def test_registry_path_of_a_version_with_several_files_is_its_directory_as_cas_path_prints(
    tmp_path: Path, cas: Cas
) -> None:
    # `cas path tiny-bert@v1` printed the version's directory; Registry.path() refused it.
    snap = _snapshot(tmp_path)
    assert cas("add", snap, "--name", "tiny-bert", "--version", "v1").returncode == 0
    reg = open_lock(tmp_path / "cas.lock", store=Store(tmp_path / "store"))
    folder = reg.path("tiny-bert")
    assert folder == reg.view("tiny-bert", "v1") == reg.path("tiny-bert", "v1")
    assert (folder / "config.json").read_bytes() == b'{"model_type": "bert"}'
    r = cas("path", "tiny-bert@v1")
    assert r.returncode == 0 and Path(r.stdout.decode().strip()) == folder, r.stderr
    assert reg.path("tiny-bert", "v1", "config.json") == folder / "config.json"


def test_a_path_handed_out_survives_gc_while_other_files_of_its_version_are_not_fetched(
    tmp_path: Path,
) -> None:
    # `cas path det@v1 --file best.pt` of a version whose other file was never fetched: the
    # path names a pinned, present object, so gc must not take it away.
    store = Store(tmp_path / "store")
    src = tmp_path / "best.pt"
    src.write_bytes(b"the weights")
    best = store.add_file(src).info.digest
    config = Digest(ref_sha256(b'{"not": "fetched"}'), 18)
    lock = Lockfile()
    lock.pin("det", "v1", {"best.pt": best, "config.json": config})
    lock.save(tmp_path / "cas.lock")
    reg = open_lock(tmp_path / "cas.lock", store=store)
    reg.register()  # a gc root, as `cas add` makes it
    p = reg.path("det", "v1", "best.pt")
    assert p.read_bytes() == b"the weights"
    collect(store, grace=0)
    assert p.read_bytes() == b"the weights", "gc took a handed-out path away"
    # Once the other file is there, the same view serves both.
    (tmp_path / "config.json").write_bytes(b'{"not": "fetched"}')
    assert store.add_file(tmp_path / "config.json").info.digest.sha256 == config.sha256
    assert reg.view("det", "v1") == p.parent
    assert (p.parent / "config.json").read_bytes() == b'{"not": "fetched"}'
    assert p.read_bytes() == b"the weights"


def test_a_version_with_several_files_to_one_path_points_at_dir_slash(
    tmp_path: Path, cas: Cas
) -> None:
    snap = _snapshot(tmp_path)
    assert cas("add", snap, "--name", "tiny-bert", "--version", "v1").returncode == 0
    r = cas("get", "tiny-bert@v1", "-o", "out")
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 2 and "say which one" in lines[0], r.stderr
    assert "-o out/" in lines[1] or "-o DIR/" in lines[1], r.stderr
    assert not (tmp_path / "out").exists()


def test_cas_get_into_a_directory_with_other_bytes_in_the_way_places_nothing(
    tmp_path: Path, cas: Cas
) -> None:
    snap = _snapshot(tmp_path)
    assert cas("add", snap, "--name", "tiny-bert", "--version", "v1").returncode == 0
    (tmp_path / "out" / "tokenizer").mkdir(parents=True)
    (tmp_path / "out" / "tokenizer" / "vocab.txt").write_bytes(b"mine")
    r = cas("get", "tiny-bert@v1", "-o", "out/")
    assert r.returncode == 2 and b"tokenizer/vocab.txt" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tokenizer"], "nothing placed"
    assert (tmp_path / "out" / "tokenizer" / "vocab.txt").read_bytes() == b"mine"
    # The same bytes already there are kept (a re-run); --force replaces other bytes.
    r = cas("get", "tiny-bert@v1", "-o", "out/", "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "tokenizer" / "vocab.txt").read_bytes() == b"[PAD]\n"
    r = cas("get", "tiny-bert@v1", "-o", "out/")
    assert r.returncode == 0, r.stderr


def test_cas_add_of_a_hugging_face_cache_snapshot_pins_every_linked_file(
    tmp_path: Path, cas: Cas
) -> None:
    # The HF cache's snapshots/<commit>/ holds only symlinks into blobs/: all must be pinned,
    # none dropped in silence (the version would load without its weights).
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "0123abc"
    blobs.mkdir()
    (snap / "tokenizer").mkdir(parents=True)
    for name, data in {"config.json": b"{}", "model.safetensors": b"weights",
                       "tokenizer/vocab.txt": b"[PAD]"}.items():  # fmt: skip
        blob = blobs / ref_sha256(data)
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, (snap / name).parent))
    r = cas("add", snap, "--name", "tiny", "--version", "v1")
    assert r.returncode == 0, r.stderr
    files = Lockfile.load(tmp_path / "cas.lock").version("tiny")[1].files
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]
    assert files["model.safetensors"].sha256 == ref_sha256(b"weights")
    # What cannot be a file of the version is refused in one line, not skipped.
    for odd in ("dangling", "linked-dir", "fifo"):
        bad = tmp_path / f"bad-{odd}"
        bad.mkdir()
        (bad / "w.bin").write_bytes(b"w")
        if odd == "dangling":
            (bad / "x").symlink_to("nowhere")
        elif odd == "linked-dir":
            (bad / "x").symlink_to(blobs)
        else:
            os.mkfifo(bad / "x")
        before = (tmp_path / "cas.lock").read_bytes()
        r = cas("add", bad, "--name", "odd", "--version", "v1")
        assert r.returncode == 2, (odd, r.stderr)
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) <= 2 and f"bad-{odd}/x" in lines[0], (odd, r.stderr)
        assert (tmp_path / "cas.lock").read_bytes() == before
