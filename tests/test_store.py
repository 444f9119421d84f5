"""The local store through its Python API and the CLI: adding, reading, placing, verifying, gc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modelcas
from modelcas.digest import Digest
from modelcas.store import Store
from tests.refs import ref_blake3, ref_sha256
from tests.users import AS_NOBODY

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
MiB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _weights(tmp_path: Path, name: str = "best.pt", size: int = 3 * MiB, seed: int = 1) -> Path:
    p = tmp_path / name
    p.write_bytes(os.urandom(16) * 0 + bytes((i * seed + i // 7) % 251 for i in range(size)))
    return p


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.chmod(path, 0o444)


def test_add_records_both_digests_and_is_read_only(store: Store, tmp_path: Path) -> None:
    src = _weights(tmp_path)
    data = src.read_bytes()
    result = store.add_file(src)
    assert not result.existed
    d = result.info.digest
    assert (d.sha256, d.blake3, d.size) == (ref_sha256(data), ref_blake3(data), len(data))
    obj = store.object_path(d.sha256)
    assert obj == store.root / "objects" / "sha256" / d.sha256[:2] / d.sha256
    assert obj.stat().st_mode & 0o777 == 0o444
    assert obj.read_bytes() == data
    assert src.exists(), "add copies by default"
    again = store.add_file(src)
    assert again.existed and again.info.digest == d
    assert [o.digest for o in store.objects()] == [d]


def test_readding_known_content_costs_a_hash_not_a_copy(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _weights(tmp_path)
    store.add_file(src)
    calls: list[object] = []
    monkeypatch.setattr(modelcas.hashing, "copy_file", lambda *a, **k: calls.append(a))
    assert store.add_file(src).existed
    assert calls == []


def test_move_takes_the_file(store: Store, tmp_path: Path) -> None:
    src = _weights(tmp_path)
    data = src.read_bytes()
    result = store.add_file(src, move=True)
    assert not src.exists()
    assert store.path(result.info.digest.sha256).read_bytes() == data


def test_expected_digest_mismatch_stores_nothing(store: Store, tmp_path: Path) -> None:
    src = _weights(tmp_path)
    wrong = Digest("0" * 64, src.stat().st_size)
    with pytest.raises(modelcas.IntegrityError, match="expected sha256:0000") as e:
        store.add_file(src, expected=wrong)
    assert str(src) in str(e.value)
    assert store.objects() == []
    assert list(store.tmp_dir.iterdir()) == []


def test_writer_streams_and_checks(store: Store) -> None:
    data = b"streamed weights" * 100_000
    good = Digest(ref_sha256(data), len(data), ref_blake3(data))
    with store.writer(good, "hf://org/repo@weights-v1/best.pt") as w:
        for i in range(0, len(data), 65_536):
            w.write(data[i : i + 65_536])
        info = w.commit()
    assert info.digest == good
    bad = Digest(ref_sha256(b"x"), len(data))
    with (
        pytest.raises(modelcas.IntegrityError, match="hf://org/repo"),
        store.writer(bad, "hf://org/repo") as w,
    ):
        w.write(data)
        w.commit()
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_is_detected_and_never_served(
    store: Store, tmp_path: Path, cas: Cas, where: str
) -> None:
    src = _weights(tmp_path)
    d = store.add_file(src).info.digest
    obj = store.object_path(d.sha256)
    _flip(obj, {"first": 0, "middle": d.size // 2, "last": d.size - 1}[where])
    problems = store.verify()
    assert [(p.sha256, p.kind) for p in problems] == [(d.sha256, "blake3")]
    assert d.blake3 in str(problems[0])
    with pytest.raises(modelcas.IntegrityError):
        store.path(d.sha256)
    with pytest.raises(modelcas.IntegrityError):
        store.place(d.sha256, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    r = cas("--store", store.root, "verify")
    assert r.returncode == 1
    assert d.sha256.encode() in r.stdout and str(obj).encode() in r.stdout
    assert cas("--store", store.root, "path", d.address).returncode == 1
    deep = store.verify(deep=True)
    assert deep and deep[0].kind == "blake3"


def test_truncation_and_same_size_replacement_with_mtime_restored(
    store: Store, tmp_path: Path
) -> None:
    a = store.add_file(_weights(tmp_path, "a.pt", seed=1)).info.digest
    b = store.add_file(_weights(tmp_path, "b.pt", seed=3)).info.digest
    pa, pb = store.object_path(a.sha256), store.object_path(b.sha256)
    os.chmod(pa, 0o644)
    os.truncate(pa, a.size - 10)
    st = pb.stat()
    os.chmod(pb, 0o644)
    pb.write_bytes(bytes(reversed(pb.read_bytes())))
    os.utime(pb, ns=(st.st_atime_ns, st.st_mtime_ns))
    kinds = {p.sha256: p.kind for p in store.verify()}
    assert kinds == {a.sha256: "size", b.sha256: "blake3"}


def test_repair_quarantines_and_readd_restores(store: Store, tmp_path: Path, cas: Cas) -> None:
    src = _weights(tmp_path)
    d = store.add_file(src).info.digest
    _flip(store.object_path(d.sha256), 5)
    r = cas("--store", store.root, "verify", "--repair")
    assert r.returncode == 1
    assert b"quarantine" in r.stdout
    assert not store.has(d.sha256)
    assert len(list(store.quarantine_dir.iterdir())) == 1
    assert cas("--store", store.root, "verify").returncode == 0
    assert not store.add_file(src).existed
    assert store.verify() == []


def test_sync_of_a_corrupt_object_with_no_source_fails_and_keeps_it(
    store: Store, tmp_path: Path, cas: Cas
) -> None:
    """Nothing to fetch it from: sync says so (exit 1) and leaves the object where verify
    names it; it does not quarantine the only copy into a missing pin."""
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    assert cas("add", src, "--name", "m", "--version", "v1", cwd=tmp_path).returncode == 0
    obj = store.object_path(ref_sha256(src.read_bytes()))
    obj.chmod(0o644)
    obj.write_bytes(b"x" * 4096)
    r = cas("sync", cwd=tmp_path)
    assert r.returncode == 1 and b"no source" in r.stderr, r.stderr
    assert obj.read_bytes() == b"x" * 4096
    assert not list(store.quarantine_dir.glob("*")), "the only copy stays where verify names it"


@pytest.mark.parametrize("plant", ["symlink", "fifo", "directory"])
def test_planted_non_regular_objects_are_refused(store: Store, tmp_path: Path, plant: str) -> None:
    src = _weights(tmp_path)
    d = store.add_file(src).info.digest
    obj = store.object_path(d.sha256)
    obj.unlink()
    if plant == "symlink":
        os.symlink(src, obj)  # points at the right bytes: still refused, never followed
    elif plant == "fifo":
        os.mkfifo(obj)
    else:
        obj.mkdir()
    problems = store.verify()
    assert [p.kind for p in problems] == ["not-regular"]
    with pytest.raises(modelcas.IntegrityError, match="not a regular file"):
        store.path(d.sha256)


def test_placing_modes(store: Store, tmp_path: Path) -> None:
    src = _weights(tmp_path)
    d = store.add_file(src).info.digest
    for mode in ("copy", "hardlink", "symlink"):
        dest = tmp_path / "project" / mode / "best.pt"
        assert store.place(d.sha256, dest, link=mode) == mode  # type: ignore[arg-type]
        assert dest.read_bytes() == src.read_bytes()
    hard = tmp_path / "project" / "hardlink" / "best.pt"
    assert hard.stat().st_ino == store.object_path(d.sha256).stat().st_ino
    assert hard.stat().st_mode & 0o222 == 0, "a hardlinked object must not be writable"
    sym = tmp_path / "project" / "symlink" / "best.pt"
    assert sym.is_symlink() and sym.stat().st_mode & 0o222 == 0
    used = store.place(d.sha256, tmp_path / "auto.pt")
    assert used in ("reflink", "copy") if os.geteuid() == 0 else ("reflink", "hardlink")
    # Existing destination with other content is refused without --force.
    other = tmp_path / "other.pt"
    other.write_bytes(b"other")
    with pytest.raises(FileExistsError):
        store.place(d.sha256, other)
    store.place(d.sha256, other, force=True)
    assert other.read_bytes() == src.read_bytes()


def test_linked_objects_resist_writes_by_a_normal_user() -> None:
    # Root ignores permission bits, so the writes are tried as `nobody`, in a directory that
    # user can reach (pytest's own tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="modelcas-perm-"))
    try:
        base.chmod(0o755)
        store = Store(base / "store")
        for d in (store.root, *store.root.rglob("*")):
            if d.is_dir():
                d.chmod(0o755)
        src = base / "best.pt"
        src.write_bytes(b"weights" * 1000)
        d = store.add_file(src).info.digest
        store.object_path(d.sha256).parent.chmod(0o755)
        for mode in ("hardlink", "symlink"):
            dest = base / f"{mode}.pt"
            store.place(d.sha256, dest, link=mode)  # type: ignore[arg-type]
            r = subprocess.run(
                [
                    *AS_NOBODY,
                    "/bin/sh",
                    "-c",
                    'cat "$1" >/dev/null || exit 9; printf x >> "$1"',
                    "sh",
                    str(dest),
                ],
                capture_output=True,
                check=False,
            )
            assert r.returncode not in (0, 9), "readable, but not writable"
            assert b"Permission denied" in r.stderr, r.stderr
        assert store.verify() == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_unknown_store_format_refuses_to_open(tmp_path: Path, cas: Cas) -> None:
    root = tmp_path / "future"
    Store(root)
    (root / "store.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(modelcas.StoreVersionError, match="format 99"):
        Store(root)
    r = cas("--store", root, "store", "info")
    assert r.returncode == 2
    assert b"format 99" in r.stderr and b"upgrade modelcas" in r.stderr


def test_not_a_store_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "home"
    d.mkdir()
    (d / "thesis.tex").write_text("important")
    with pytest.raises(modelcas.StoreError, match="not a modelcas store"):
        Store(d)


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELCAS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Store().root == tmp_path / "xdg" / "modelcas"
    monkeypatch.setenv("MODELCAS_HOME", str(tmp_path / "home"))
    assert Store().root == tmp_path / "home"
    assert (tmp_path / "home" / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f59")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_gc_keeps_roots_and_young_objects(store: Store, tmp_path: Path) -> None:
    keep = store.add_file(_weights(tmp_path, "keep.pt", seed=1)).info.digest
    drop = store.add_file(_weights(tmp_path, "drop.pt", seed=2)).info.digest
    roots = tmp_path / "pins.txt"
    roots.write_text(keep.sha256)
    readers = {"test-pins": lambda p: set(p.read_text().split())}
    store.register_root(roots, "test-pins")
    # Left by a process that died: its owner is no longer running.
    dead = _dead_pid()
    leftover = store.tmp_dir / f"{store.temp_path().name.split('-')[0]}-{dead}-{'e' * 32}.partial"
    leftover.write_bytes(b"partial")
    referenced, stale = store.referenced(readers)
    assert referenced == {keep.sha256} and stale == []
    young = store.gc(readers)  # default grace: everything is too young
    assert young.objects == [] and young.temp_files == []
    time.sleep(0.05)
    dry = store.gc(readers, grace=0.01, dry_run=True)
    assert [o.digest.sha256 for o in dry.objects] == [drop.sha256]
    assert store.has(drop.sha256)
    report = store.gc(readers, grace=0)
    assert [o.digest.sha256 for o in report.objects] == [drop.sha256]
    assert report.temp_files == [leftover]
    assert store.has(keep.sha256) and not store.has(drop.sha256)
    roots.unlink()
    _, stale = store.referenced(readers)
    assert [r.path for r in stale] == [roots.resolve()]
    # Gone, but it pinned `keep` (with no remote source) when last seen: kept, and said.
    report = store.gc(readers, grace=0)
    assert report.stale_roots == [] and store.has(keep.sha256)
    assert [(v.path, v.objects, v.bytes) for v in report.vanished] == [
        (roots.resolve(), 1, keep.size)
    ]
    store.forget_root(roots)
    assert store.gc(readers, grace=0).objects[0].digest.sha256 == keep.sha256
    assert store.roots() == []
    # A root with nothing of its own is forgotten once its file is gone.
    roots.write_text("")
    store.register_root(roots, "test-pins")
    store.gc(readers, grace=0)
    roots.unlink()
    assert store.gc(readers, grace=0).stale_roots == [roots.resolve()]
    assert store.roots() == []


def test_gc_refuses_when_a_root_is_unreadable(store: Store, tmp_path: Path, cas: Cas) -> None:
    store.add_file(_weights(tmp_path))
    bad = tmp_path / "weird.lock"
    bad.write_text("x")
    store.register_root(bad, "kind-from-the-future")
    r = cas("--store", store.root, "gc", "--grace", "0")
    assert r.returncode == 2
    assert b"nothing was deleted" in r.stderr
    assert len(store.objects()) == 1


def test_cli_tour(store: Store, tmp_path: Path, cas: Cas) -> None:
    src = _weights(tmp_path)
    data = src.read_bytes()
    r = cas("--store", store.root, "add", src)
    assert r.returncode == 0, r.stderr
    address = f"sha256:{ref_sha256(data)}"
    assert r.stdout.startswith(address.encode())
    again = cas("--store", store.root, "add", "--json", src)
    assert json.loads(again.stdout)["files"][0]["existed"] is True
    listing = json.loads(cas("--store", store.root, "ls", "--json").stdout)["objects"]
    assert listing[0]["address"] == address and listing[0]["blake3"] == ref_blake3(data)
    path = cas("--store", store.root, "path", address[:15])
    assert path.returncode == 0 and Path(path.stdout.decode().strip()).read_bytes() == data
    out = tmp_path / "proj" / "w.pt"
    assert cas("--store", store.root, "get", address, "-o", out).returncode == 0
    assert out.read_bytes() == data
    assert cas("--store", store.root, "verify", "--deep").returncode == 0
    info = json.loads(cas("--store", store.root, "store", "info", "--json").stdout)
    assert (info["objects"], info["bytes"], info["format"]) == (1, len(data), 1)
    missing = cas("--store", store.root, "path", "sha256:" + "ab" * 32)
    assert missing.returncode == 1 and b"not in the store" in missing.stderr
    assert cas("--store", store.root, "path", "nonsense").returncode == 2


def test_one_hard_link_rule_as_root_and_as_a_normal_user(tmp_path: Path, cas: Cas) -> None:
    """No hard link when the process can write a 0444 file (root, CAP_DAC_OVERRIDE) or the
    other directory is another user's; `cas verify` names every object with other names."""
    from modelcas.store import linking

    if os.geteuid() != 0:
        pytest.skip("needs root to try both sides (CI runs as root)")
    assert linking.can_write_readonly() and not linking.hardlink_allowed(tmp_path)
    base = Path(tempfile.mkdtemp(prefix="modelcas-rule-"))
    try:
        base.chmod(0o755)
        for d in ("mine", "store"):
            (base / d).mkdir()
            os.chown(base / d, 65534, 65534)
        (base / "roots").mkdir(mode=0o777)  # root's, but anyone may write there
        (base / "roots").chmod(0o777)
        src = base / "mine" / "w.bin"
        src.write_bytes(os.urandom(4096))
        os.chown(src, 65534, 65534)
        code = f"""
import sys
from modelcas.store import Store, linking
s = Store({str(base / "store")!r})
sha = s.add_file({str(src)!r}).info.digest.sha256
assert not linking.can_write_readonly()
print(s.place(sha, {str(base / "mine" / "own.bin")!r}),
      s.place(sha, {str(base / "roots" / "foreign.bin")!r}))
"""
        r = subprocess.run(
            [*AS_NOBODY, sys.executable,
             "-c", code],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["hardlink", "copy"], "own folder: link; another's: copy"
        # As root, auto never hard-links.
        assert Store(base / "store").place(ref_sha256(src.read_bytes()), base / "root.bin") in (
            "reflink",
            "copy",
        )
        v = cas("--store", base / "store", "verify")
        assert v.returncode == 0, v.stderr
        out = v.stdout.decode()
        assert f"LINKED  sha256:{ref_sha256(src.read_bytes())} has 2 names" in out, out
        assert "hard link outside the store" in out
    finally:
        shutil.rmtree(base, ignore_errors=True)
