"""The store never deletes what a user or a pin still needs (issue: store safety).

Each reproduction of a data loss found on an earlier main is a test here: `--move` beside gc,
kill -9 during `--move` then gc, a `--move` that fails its own checks, gc racing adds that pin
stored content, and a lockfile pinned before it was a root. Faults are real (strace injects
SIGKILL, errors and delays into the running `cas`), and races run real threads and processes.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from modelcas.errors import StoreError
from modelcas.ops.add import PinRequest, add
from modelcas.ops.gc import collect
from modelcas.store import Store
from tests.faults import strace_inject
from tests.refs import ref_sha256

MiB = 1 << 20
MOVE_SYSCALLS = [
    "rename,renameat,renameat2",
    "link,linkat",
    "unlink,unlinkat",
    "fsync,fdatasync",
]


def _cas(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelcas", "--store", str(store), *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CAS_NO_PROGRESS": "1", **extra}


def _run(argv: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, env=_env(**extra), check=False, timeout=300
    )


def _old(path: Path, days: float = 2) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def _pins(lock: Path) -> dict[str, str]:
    """file name -> sha256 of every pin in a lockfile (empty when there is none)."""
    if not lock.exists():
        return {}
    raw = yaml.safe_load(lock.read_text()) or {}
    out = {}
    for model in (raw.get("models") or {}).values():
        for version in (model.get("versions") or {}).values():
            for name, f in version["files"].items():
                out[name] = f["sha256"]
    return out


def _assert_nothing_lost(store: Store, lock: Path, originals: dict[Path, bytes]) -> None:
    """Each file's bytes are at its path, or stored; and every pin's object is present."""
    pins = _pins(lock)
    for name, sha256 in pins.items():
        assert store.has(sha256), f"{name} is pinned but its object is gone"
        assert store.verify([sha256], deep=True) == []
    for path, data in originals.items():
        if path.exists():
            assert path.read_bytes() == data, f"{path} changed"
        else:
            sha256 = ref_sha256(data)
            assert pins.get(path.name) == sha256, f"{path} is gone and not pinned"
            assert store.has(sha256), f"{path} is gone and not stored"


def test_move_beside_gc_keeps_the_users_file(tmp_path: Path) -> None:
    """Reproduction 1: gc aged the moved file in tmp/ by its old mtime and deleted it."""
    store = tmp_path / "store"
    src = tmp_path / "big.bin"
    data = os.urandom(32 * MiB)
    src.write_bytes(data)
    _old(src)
    # Pause the add at its first fsync (the staged object, after hashing) while gc runs.
    argv = strace_inject(
        "fsync,fdatasync",
        "delay_enter=2000000",
        1,
        _cas(store, "add", "--move", src, "--name", "m", "--version", "v1"),
    )
    adder = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE)
    time.sleep(1.0)
    gc = _run(_cas(store, "gc"), tmp_path)
    assert gc.returncode == 0, gc.stderr
    assert b"leftover" not in gc.stdout, "gc took an in-flight move for a leftover"
    _, err = adder.communicate(timeout=120)
    assert adder.returncode == 0, err
    assert not src.exists()
    _assert_nothing_lost(Store(store), tmp_path / "cas.lock", {src: data})
    assert _run(_cas(store, "gc", "--grace", "0"), tmp_path).returncode == 0
    _assert_nothing_lost(Store(store), tmp_path / "cas.lock", {src: data})


def test_move_beside_gc_with_no_grace_never_loses_bytes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tmp_path / "big.bin"
    data = os.urandom(8 * MiB)
    src.write_bytes(data)
    _old(src)
    argv = strace_inject(
        "fsync,fdatasync",
        "delay_enter=1500000",
        1,
        _cas(store, "add", "--move", src, "--name", "m", "--version", "v1"),
    )
    adder = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE)
    time.sleep(0.8)
    assert _run(_cas(store, "gc", "--grace", "0"), tmp_path).returncode == 0
    _, err = adder.communicate(timeout=120)
    assert b"Traceback" not in err
    assert _run(_cas(store, "gc", "--grace", "0"), tmp_path).returncode == 0
    _assert_nothing_lost(Store(store), tmp_path / "cas.lock", {src: data})


def _assert_one_inode_each(
    store: Store, lock: Path, originals: dict[Path, tuple[bytes, int]]
) -> None:
    """The invariant of a move: each file's bytes are at its path as its own inode (link count
    1, its mode as before), or stored and pinned; never the user's name and an object on one
    inode."""
    pins = _pins(lock)
    for path, (data, mode) in originals.items():
        if os.path.lexists(path):
            st = path.lstat()
            assert st.st_nlink == 1, f"{path} shares its inode (link count {st.st_nlink})"
            assert stat.S_IMODE(st.st_mode) == mode, f"{path} has mode {st.st_mode:o}"
            assert path.read_bytes() == data, f"{path} changed"
        else:
            sha256 = ref_sha256(data)
            assert pins.get(path.name) == sha256, f"{path} is gone and not pinned"
            assert store.verify([sha256], deep=True) == [], f"{path} is gone and not stored"
    for info in store.objects():
        assert info.path.lstat().st_nlink == 1, f"{info.path} shares its inode"


@pytest.mark.slow
@pytest.mark.parametrize("syscall", MOVE_SYSCALLS)
def test_kill_9_anywhere_in_add_move_then_one_command_keeps_one_inode_each(
    tmp_path: Path, syscall: str
) -> None:
    """Kill `cas add --move` at every rename, link, unlink and fsync; after one `cas` command
    the bytes are at the user's path as their own inode, or stored and pinned; then gc with
    and without grace loses nothing. (strace counts calls of every thread; the loop raises N
    until a run completes.)"""
    killed = given_back = 0
    for when in range(1, 80):
        work = tmp_path / f"{syscall.split(',', maxsplit=1)[0]}-{when}"
        work.mkdir()
        store = work / "store"
        Store(store)  # created beforehand, so the kills land in the add itself
        originals = {}
        for i in range(2):
            p = work / f"w{i}.bin"
            data = os.urandom(MiB + i)
            p.write_bytes(data)
            os.chmod(p, 0o640 - 0o040 * i)
            originals[p] = (data, 0o640 - 0o040 * i)
            _old(p)
        # The second file's content is stored already: the move must check the stored copy.
        Store(store).add_bytes(originals[work / "w1.bin"][0])
        argv = strace_inject(
            syscall,
            "signal=KILL",
            when,
            _cas(store, "add", "--move", *originals, "--name", "m", "--version", "v1"),
        )
        r = _run(argv, work)
        taken = [p for p in originals if not os.path.lexists(p)]
        one = _run(_cas(store, "verify"), work)
        assert one.returncode == 0, one.stdout + one.stderr
        assert b"Traceback" not in one.stderr
        for p in taken:
            if p.exists():  # given back: the command said so, in one warning line
                assert f"cas: warning: gave back {p}".encode() in one.stderr, one.stderr
                given_back += 1
        _assert_one_inode_each(Store(store), work / "cas.lock", originals)
        for gc in (["gc"], ["gc", "--grace", "0"]):
            g = _run(_cas(store, *gc), work)
            assert g.returncode == 0, g.stderr
        _assert_one_inode_each(Store(store), work / "cas.lock", originals)
        assert list(Store(store).tmp_dir.iterdir()) == [], "recovery left something in tmp/"
        if r.returncode == 0:
            break  # past the last such call: the add completed
        assert r.returncode in (-9, 137), r.stderr
        killed += 1
    else:
        pytest.fail("the add never completed")
    if syscall.startswith("link"):
        assert killed == 0, "--move makes no hard link"
    else:
        assert killed >= 3
    if syscall.startswith(("rename", "fsync")):
        assert given_back >= 1, "some kill left a file taken, and the next command gave it back"


def test_move_that_fails_its_own_checks_moves_nothing(tmp_path: Path) -> None:
    """Reproduction 3: the duplicate-name check ran after both files were moved in."""
    store = tmp_path / "store"
    files = {}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        files[tmp_path / d / "best.pt"] = os.urandom(MiB)
        (tmp_path / d / "best.pt").write_bytes(files[tmp_path / d / "best.pt"])
    r = _run(_cas(store, "add", "--move", *files, "--name", "det", "--version", "v1"), tmp_path)
    assert r.returncode == 2
    assert b"two files named 'best.pt'" in r.stderr and b"Traceback" not in r.stderr
    for p, data in files.items():
        assert p.read_bytes() == data
        assert p.stat().st_mode & 0o777 == 0o644
    assert Store(store).objects() == []
    assert not (tmp_path / "cas.lock").exists()


def test_move_refused_by_the_lockfile_gives_every_file_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first = tmp_path / "first.pt"
    first.write_bytes(os.urandom(MiB))
    add([first], store, pin=PinRequest("det", "v1", lock=tmp_path / "cas.lock"))
    second = tmp_path / "new" / "first.pt"
    second.parent.mkdir()
    data = os.urandom(MiB)
    second.write_bytes(data)
    os.chmod(second, 0o640)
    r = _run(
        _cas(store.root, "add", "--move", second, "--name", "det", "--version", "v1"), tmp_path
    )
    assert r.returncode == 2 and b"already pinned to other content" in r.stderr
    assert second.read_bytes() == data and second.stat().st_mode & 0o777 == 0o640
    # The object made of the user's inode was detached: writing the file changes no object.
    with open(second, "r+b") as f:
        f.write(b"x")
    assert store.verify(deep=True) == []


def test_move_under_an_equal_spelling_of_a_pinned_version_is_that_version(
    tmp_path: Path,
) -> None:
    """PEP 440: 1.0.0 is the pinned v1.0; the read-back before the unlink must find it there."""
    store = Store(tmp_path / "store")
    data = os.urandom(MiB)
    (tmp_path / "w.bin").write_bytes(data)
    add([tmp_path / "w.bin"], store, pin=PinRequest("det", "v1.0", lock=tmp_path / "cas.lock"))
    again = tmp_path / "new" / "w.bin"
    again.parent.mkdir()
    again.write_bytes(data)
    r = _run(
        _cas(store.root, "add", "--move", again, "--name", "det", "--version", "1.0.0"), tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert not again.exists()
    assert list(
        yaml.safe_load((tmp_path / "cas.lock").read_text())["models"]["det"]["versions"]
    ) == ["v1.0"]


def test_move_without_a_pin_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights")
    r = _run(_cas(tmp_path / "store", "add", "--move", src), tmp_path)
    assert r.returncode == 2 and b"--move needs --name" in r.stderr
    assert src.read_bytes() == b"weights"


def test_move_of_a_file_with_another_name_copies(tmp_path: Path) -> None:
    """A hard link would make the object share an inode with the user's other name."""
    src = tmp_path / "w.bin"
    other = tmp_path / "other-name.bin"
    src.write_bytes(os.urandom(MiB))
    os.link(src, other)
    store = Store(tmp_path / "store")
    out = add([src], store, move=True, pin=PinRequest("m", "v1", lock=tmp_path / "cas.lock"))
    assert not src.exists()
    assert other.stat().st_mode & 0o777 == 0o644, "the user's other name stays writable"
    obj = out.files[0].path
    assert os.stat(obj).st_ino != other.stat().st_ino


def _pin_loop(
    store: Store, contents: list[Path], work: Path, tag: str, *, n: int, errors: list[str]
) -> None:
    for i in range(n):
        src = contents[i % len(contents)]
        lock = work / f"{tag}-{i}.lock"
        try:
            out = add([src], store, pin=PinRequest("m", "v1", lock=lock))
            sha256 = out.files[0].digest.sha256
            if not store.has(sha256):
                errors.append(f"{tag}-{i}: pinned sha256:{sha256} is missing right after add")
        except Exception as e:  # every error counts: none is expected
            errors.append(f"{tag}-{i}: {type(e).__name__}: {e}")
        finally:
            lock.unlink(missing_ok=True)


@pytest.mark.slow
def test_gc_with_no_grace_racing_adds_of_stored_content_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reproduction 4 through the API: 2,000 pins of already-stored content against a gc
    with no grace in a loop, without locks. No pin may point at a missing object."""
    monkeypatch.setenv("MODELCAS_LOCKS", "off")
    store = Store(tmp_path / "store")
    contents = []
    for i in range(4):
        p = tmp_path / f"c{i}.bin"
        p.write_bytes(os.urandom(4096 + i))
        store.add_file(p)
        contents.append(p)
    stop = threading.Event()
    errors: list[str] = []
    gcs = 0

    def gc_loop() -> None:
        nonlocal gcs
        while not stop.is_set():
            try:
                collect(store, grace=0)
                gcs += 1
            except Exception as e:
                errors.append(f"gc: {type(e).__name__}: {e}")

    gc = threading.Thread(target=gc_loop)
    gc.start()
    adders = [
        threading.Thread(
            target=_pin_loop,
            args=(store, contents, tmp_path, f"t{t}"),
            kwargs={"n": 1000, "errors": errors},
        )
        for t in range(2)
    ]
    for t in adders:
        t.start()
    for t in adders:
        t.join()
    stop.set()
    gc.join()
    assert errors == []
    assert gcs > 10, "gc must really have raced the adds"


@pytest.mark.slow
def test_gc_with_no_grace_racing_adds_of_stored_content_processes(tmp_path: Path) -> None:
    """Reproduction 4 through processes: the CLI's gc against two processes pinning."""
    store = tmp_path / "store"
    contents = []
    for i in range(4):
        p = tmp_path / f"c{i}.bin"
        p.write_bytes(os.urandom(4096 + i))
        contents.append(p)
    Store(store).add_file(contents[0])
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from modelcas.store import Store
        from tests.test_store_safety import _pin_loop
        errors = []
        contents = [Path(p) for p in {[str(c) for c in contents]!r}]
        _pin_loop(Store({str(store)!r}), contents, Path({str(tmp_path)!r}), sys.argv[1], n=500,
                  errors=errors)
        print("\\n".join(errors))
        sys.exit(1 if errors else 0)
    """)
    env = _env(MODELCAS_LOCKS="off", PYTHONPATH=str(Path(__file__).parent.parent))
    gc = subprocess.Popen(
        ["sh", "-c", f"while [ ! -e {tmp_path}/stop ]; do "
         f"{' '.join(_cas(store, 'gc', '--grace', '0'))} >/dev/null || exit 1; done"],
        env=env,
    )  # fmt: skip
    adders = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"p{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in adders]
    (tmp_path / "stop").touch()
    assert gc.wait(timeout=120) == 0
    assert [p.returncode for p in adders] == [0, 0], outs


@pytest.mark.parametrize("when", range(1, 8))
def test_kill_between_pin_and_root_never_leaves_an_unprotected_pin(
    tmp_path: Path, when: int
) -> None:
    """Reproduction 5: the lockfile was written before it was registered as a gc root."""
    store = tmp_path / "store"
    Store(store)
    src = tmp_path / "s1.bin"
    src.write_bytes(os.urandom(MiB))
    argv = strace_inject(
        "rename,renameat,renameat2",
        "signal=KILL",
        when,
        _cas(store, "add", src, "--name", "m", "--version", "v1"),
    )
    _run(argv, tmp_path)
    assert _run(_cas(store, "gc", "--grace", "0"), tmp_path).returncode == 0
    if _pins(tmp_path / "cas.lock"):
        r = _run(_cas(store, "verify", "--lock", tmp_path / "cas.lock"), tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr


# -- roots are strict --------------------------------------------------------------------


def _planted(store: Store, kind: str, tmp_path: Path) -> Path:
    record = store.roots_dir / f"{'ab' * 16}.json"
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "symlink":
        secret = tmp_path / "secret.txt"
        secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
        record.symlink_to(secret)
    elif kind == "directory":
        record.mkdir()
    elif kind == "garbage":
        record.write_bytes(os.urandom(300))
    elif kind == "huge":
        record.write_text('{"path": "/x", "kind": "lockfile", "registered": 0, "pad": "'
                          + "x" * (1 << 20) + '"}')  # fmt: skip
    elif kind == "fifo-target":
        fifo = tmp_path / "cas.lock"
        os.mkfifo(fifo)
        store.register_root(fifo, "lockfile")
    return record


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "garbage", "huge", "fifo-target"])
def test_a_root_that_cannot_be_read_stops_gc_and_deletes_nothing(tmp_path: Path, kind: str) -> None:
    store = Store(tmp_path / "store")
    doomed = tmp_path / "unpinned.bin"
    doomed.write_bytes(os.urandom(4096))
    sha256 = store.add_file(doomed).info.digest.sha256
    _planted(store, kind, tmp_path)
    r = _run(_cas(store.root, "gc", "--grace", "0"), tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert 1 <= len(lines) <= 2 and "nothing was deleted" in lines[0], lines
    assert "SECRET" not in r.stderr.decode() + r.stdout.decode()
    assert store.has(sha256)
    with pytest.raises(StoreError):
        collect(store, grace=0)


# -- leftovers -------------------------------------------------------------------------------


def test_gc_cleans_lockfile_leftovers_beside_registered_roots_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    proj = tmp_path / "proj"
    proj.mkdir()
    src = proj / "w.bin"
    src.write_bytes(os.urandom(4096))
    add([src], store, pin=PinRequest("m", "v1", lock=proj / "cas.lock"))
    leftover = proj / f".cas.lock.{'0' * 32}.tmp"
    leftover.write_text("half a lockfile")
    mine = proj / ".cas.lock.backup"
    mine.write_text("the user's")
    elsewhere = tmp_path / f".cas.lock.{'1' * 32}.tmp"
    elsewhere.write_text("not beside a root")
    assert collect(store).temp_files == [], "young leftovers are kept"
    report = collect(store, grace=0)
    assert report.temp_files == [leftover]
    assert not leftover.exists() and mine.exists() and elsewhere.exists()


def test_kill_while_writing_the_lockfile_then_gc_cleans_the_leftover(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    assert _run(_cas(store, "add", src, "--name", "m", "--version", "v1"), tmp_path).returncode == 0
    # Kill at each rename in turn until one lands on the lockfile's own rename.
    for when in range(1, 10):
        other = tmp_path / f"w{when + 1}.bin"
        other.write_bytes(os.urandom(4096))
        argv = strace_inject(
            "rename,renameat,renameat2",
            "signal=KILL",
            when,
            _cas(store, "add", other, "--name", "m", "--version", f"v{when + 1}"),
        )
        _run(argv, tmp_path)
        if list(tmp_path.glob(".cas.lock.*.tmp")):
            break
    else:
        pytest.fail("no kill left the lockfile's temporary file beside it")
    assert _run(_cas(store, "gc", "--grace", "0"), tmp_path).returncode == 0
    assert list(tmp_path.glob(".cas.lock.*.tmp")) == []
    assert _pins(tmp_path / "cas.lock")  # the old lockfile is intact


def test_a_directory_in_tmp_does_not_break_gc(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    unpinned = tmp_path / "u.bin"
    unpinned.write_bytes(os.urandom(4096))
    sha256 = store.add_file(unpinned).info.digest.sha256
    junk = store.tmp_dir / "junk-dir"
    (junk / "deeper").mkdir(parents=True)
    (junk / "deeper" / "f").write_bytes(b"x")
    r = _run(_cas(store.root, "gc", "--grace", "0"), tmp_path)
    assert r.returncode == 0, r.stderr
    assert not store.has(sha256) and not junk.exists()


def test_a_killed_gc_is_rolled_back_by_the_next(tmp_path: Path) -> None:
    """gc moves candidates aside before it re-reads the roots; a kill there loses nothing."""
    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    out = add([src], store, pin=PinRequest("m", "v1", lock=tmp_path / "cas.lock"))
    unpinned = tmp_path / "u.bin"
    unpinned.write_bytes(os.urandom(4096))
    store.add_file(unpinned)
    # Simulate the state a kill -9 leaves: a pinned object inside a gc's staging folder.
    sha256 = out.files[0].digest.sha256
    staging = store.tmp_dir / "gc-0123456789abcdef"
    staging.mkdir()
    os.rename(store.object_path(sha256), staging / sha256)
    report = collect(store, grace=0)
    assert report.restored == 1
    assert store.verify([sha256], deep=True) == [] and not staging.exists()


def test_gc_putting_back_another_hosts_staging_never_deletes_what_lands_there(
    tmp_path: Path,
) -> None:
    """A gc on another machine of a shared store is running: its staging folder is not dead.

    Putting its objects back is safe; removing the folder with everything in it is not: an
    object that gc renames into it meanwhile (and would put back once it sees it pinned) was
    deleted with the folder.
    """
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    digests = []
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(os.urandom(4096))
    out = add([tmp_path / "a.bin", tmp_path / "b.bin"], store, pin=PinRequest("m", "v1", lock=lock))
    digests = [f.digest.sha256 for f in out.files]
    # The other machine's gc (another boot id) moved the first object aside, and is alive.
    staging = store.tmp_dir / f"gc-00000000-4242-{'ab' * 16}"
    staging.mkdir()
    os.rename(store.object_path(digests[0]), staging / digests[0])
    ours = subprocess.Popen(
        strace_inject(
            "rename,renameat,renameat2", "delay_enter=1500000", 1, _cas(store.root, "gc")
        ),
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.9)  # ours listed the folder and waits in its first put-back
    os.rename(store.object_path(digests[1]), staging / digests[1])  # theirs moves another
    _, err = ours.communicate(timeout=120)
    assert ours.returncode == 0, err
    for sha256 in digests:
        store.rescue(sha256)  # a reader takes an object back from a staging folder
        assert store.verify([sha256], deep=True) == [], f"pinned sha256:{sha256} was lost"


def test_gc_in_another_pid_namespace_keeps_a_live_writers_claim(tmp_path: Path) -> None:
    """Containers on one machine share its boot id but not their pids: a claim made in one
    names a pid that a gc in another cannot see, which is no proof that the writer is gone."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a pid namespace (CI runs as root)")
    store = Store(tmp_path / "store")
    (tmp_path / "w.bin").write_bytes(os.urandom(4096))
    sha256 = store.add_file(tmp_path / "w.bin").info.digest.sha256
    _old(store.object_path(sha256))
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from modelcas.store import Store
            with Store({str(store.root)!r}).claim([{sha256!r}]):
                print("claimed", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"claimed\n"
        r = _run(
            ["unshare", "--pid", "--fork", "--mount-proc", *_cas(store.root, "gc", "--grace", "0")],
            tmp_path,
        )
        assert r.returncode == 0, r.stderr
        assert store.has(sha256), "a live writer's claimed object was deleted"
    finally:
        writer.kill()
        writer.wait()


# -- a source that changes during add --------------------------------------------------------


def test_a_source_truncated_during_add_stores_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store)
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(64 * MiB))
    # Hold the copy's second write of the object while the source is cut short.
    argv = strace_inject("pwrite64", "delay_enter=1500000", 2, _cas(store, "add", src))
    adder = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE)
    time.sleep(0.8)
    os.truncate(src, 3 * MiB)
    _, err = adder.communicate(timeout=120)
    assert adder.returncode == 1, err
    assert b"the source changed while it was read" in err and b"Traceback" not in err
    assert Store(store).objects() == []


# -- permissions and planted paths -----------------------------------------------------------


def test_store_directories_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        store = Store(tmp_path / "private")
    finally:
        os.umask(old)
    for d in (store.root, store.objects_dir, store.tmp_dir):
        assert d.stat().st_mode & 0o7777 == 0o700
    os.umask(0o002)
    try:
        store = Store(tmp_path / "umask002")
    finally:
        os.umask(old)
    assert store.objects_dir.stat().st_mode & 0o7777 == 0o755


def test_shared_store_is_group_writable_with_setgid(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    r = _run(_cas(root, "store", "init", "--shared"), tmp_path)
    assert r.returncode == 0, r.stderr
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    store = Store(root)
    assert store.shared
    obj = store.add_file(src).info.path
    for d in (root, store.objects_dir, store.tmp_dir, obj.parent):
        assert d.stat().st_mode & 0o7777 == 0o2775, d
    assert obj.stat().st_mode & 0o777 == 0o444


def test_verify_names_world_writable_directories_and_writable_objects(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    obj = store.add_file(src).info.path
    assert _run(_cas(store.root, "verify"), tmp_path).returncode == 0
    os.chmod(store.objects_dir, 0o777)
    os.chmod(obj, 0o644)
    r = _run(_cas(store.root, "verify"), tmp_path)
    assert r.returncode == 1
    out = r.stdout.decode()
    assert str(store.objects_dir) in out and str(obj) in out


@pytest.mark.parametrize("which", ["objects", "tmp", "quarantine"])
def test_symlinked_store_directories_are_refused(tmp_path: Path, which: str) -> None:
    store = Store(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = store.root / which
    os.rename(target, tmp_path / "moved")
    target.symlink_to(outside)
    r = _run(_cas(store.root, "ls"), tmp_path)
    assert r.returncode == 2 and b"symlink" in r.stderr and b"Traceback" not in r.stderr
    assert list(outside.iterdir()) == []


def test_a_symlinked_shard_is_refused_not_followed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    src.write_bytes(b"some weights")
    sha256 = ref_sha256(src.read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.objects_dir / sha256[:2]).symlink_to(outside)
    r = _run(_cas(store.root, "add", src), tmp_path)
    assert r.returncode == 2 and b"symlink" in r.stderr
    assert list(outside.iterdir()) == []


# -- every I/O error names its path ----------------------------------------------------------


@pytest.mark.parametrize("when", range(1, 12))
def test_every_fsync_error_names_a_path(tmp_path: Path, when: int) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(MiB))
    argv = strace_inject(
        "fsync,fdatasync",
        "error=EIO",
        when,
        _cas(tmp_path / "store", "add", src, "--name", "m", "--version", "v1"),
    )
    r = _run(argv, tmp_path)
    if r.returncode == 0:
        return  # fewer fsyncs than that
    err = r.stderr.decode()
    assert "Input/output error" in err and "Traceback" not in err
    assert str(tmp_path) in err, err
    assert len(err.strip().splitlines()) <= 2


def test_disk_full_on_the_lockfile_names_it(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(4096))
    mnt = tmp_path / "proj"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=64k tmpfs {mnt}
        cat /dev/zero > {mnt}/filler 2>/dev/null
        cd {mnt}
        {" ".join(_cas(tmp_path / "store", "add", src, "--name", "m", "--version", "v1"))} \
            2> {tmp_path}/err
        echo "rc=$?"
    """)
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
        timeout=120,
    )
    assert "rc=2" in r.stdout, r.stdout + r.stderr
    err = (tmp_path / "err").read_text()
    assert "No space left on device" in err and "cas.lock" in err, err
    assert "Traceback" not in err


# -- dedup checks the stored bytes before it destroys anything -------------------------------


def _bad_object(store: Store, data: bytes, how: str) -> Path:
    """The object for ``data``, stored with other bytes of the same size."""
    obj = store.object_path(ref_sha256(data))
    rotten = bytes([data[0] ^ 0xFF]) + data[1:]
    if how == "rotted":
        store.add_bytes(data)
        os.chmod(obj, 0o644)
        obj.write_bytes(rotten)
        os.chmod(obj, 0o444)
    else:  # planted: no index record, as if copied in by hand
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(rotten)
        os.chmod(obj, 0o444)
        (store.root / "index" / "sizes").mkdir(parents=True, exist_ok=True)
        (store.root / "index" / "sizes" / str(len(data))).touch()
    return obj


@pytest.mark.parametrize("how", ["rotted", "planted"])
@pytest.mark.parametrize("names", [1, 2], ids=["renamed-in", "copied-in"])
def test_move_onto_a_bad_stored_object_keeps_the_good_copy_and_heals(
    tmp_path: Path, how: str, names: int
) -> None:
    store = Store(tmp_path / "store")
    data = os.urandom(3 * MiB)
    obj = _bad_object(store, data, how)
    src = tmp_path / "mine.bin"
    src.write_bytes(data)
    if names == 2:  # another name: the move copies instead of renaming
        os.link(src, tmp_path / "other-name.bin")
    r = _run(_cas(store.root, "add", "--move", src, "--name", "m", "--version", "v1"), tmp_path)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert "warning" in err and f"sha256:{ref_sha256(data)}" in err and "quarantine" in err, err
    assert not src.exists()
    assert obj.read_bytes() == data, "the store is healed with the good bytes"
    assert [p.read_bytes()[1:] for p in store.quarantine_dir.iterdir()] == [data[1:]]
    v = _run(_cas(store.root, "verify", "--lock", tmp_path / "cas.lock", "--deep"), tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr


def test_plain_add_onto_a_planted_object_heals_it(tmp_path: Path) -> None:
    """No index record: the stored bytes are hashed even though nothing is destroyed."""
    store = Store(tmp_path / "store")
    data = os.urandom(MiB)
    obj = _bad_object(store, data, "planted")
    src = tmp_path / "mine.bin"
    src.write_bytes(data)
    with pytest.warns(UserWarning, match="moved it to .*quarantine"):
        result = store.add_file(src)
    assert not result.existed and result.healed is not None
    assert obj.read_bytes() == data and src.read_bytes() == data
    assert store.verify(deep=True) == []


def test_plain_re_add_trusts_a_recorded_object_by_its_size(tmp_path: Path) -> None:
    """Nothing is destroyed by a plain add: the stored object is not hashed again (speed);
    verify is what finds the rot."""
    store = Store(tmp_path / "store")
    data = os.urandom(MiB)
    _bad_object(store, data, "rotted")
    src = tmp_path / "mine.bin"
    src.write_bytes(data)
    assert store.add_file(src).existed
    assert src.read_bytes() == data
    assert [p.kind for p in store.verify()] == ["blake3"]


# -- a root that vanished does not free the only copy ----------------------------------------


def test_a_moved_project_keeps_its_local_only_objects_until_forgotten(tmp_path: Path) -> None:
    from modelcas.pinning import write_pins

    store = Store(tmp_path / "store")
    proj = tmp_path / "proj"
    proj.mkdir()
    local = proj / "mine.bin"
    local_data = os.urandom(MiB)
    local.write_bytes(local_data)
    lock = proj / "cas.lock"
    add([local], store, move=True, pin=PinRequest("mine", "v1", lock=lock))
    fetched = store.add_bytes(os.urandom(4096)).digest  # as if pulled from the Hub
    write_pins(
        store,
        lock,
        lambda lf: lf.pin("theirs", "v1", {"r.bin": fetched}, source="hf://org/r@weights-v1"),
        [fetched],
        lambda _: None,
    )
    os.rename(proj, tmp_path / "moved")  # the registered path is gone
    r = _run(_cas(store.root, "gc", "--grace", "0"), tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    gone = str(lock)
    assert (
        f"kept 1 object(s), 1.0 MiB, last pinned by {gone}, which is gone; "
        f"`cas gc --forget {gone}` releases them" in out
    ), out
    assert store.has(ref_sha256(local_data)), "the only copy is kept"
    assert not store.has(fetched.sha256), "a remote has it: `cas sync` brings it back"
    again = _run(_cas(store.root, "gc", "--grace", "0"), tmp_path)
    assert "kept 1 object(s)" in again.stdout.decode() and store.has(ref_sha256(local_data))
    # Forgetting is refused for a path that exists, or is no root; one line, exit 2.
    moved = tmp_path / "moved" / "cas.lock"
    store.register_root(moved, "lockfile")  # what the next command in the moved project does
    for bad, why in ((moved, "still exists"), (tmp_path / "nope.lock", "no registered root")):
        r = _run(_cas(store.root, "gc", "--forget", bad), tmp_path)
        assert r.returncode == 2 and why.encode() in r.stderr, r.stderr
        assert len(r.stderr.decode().strip().splitlines()) <= 2
    shutil.rmtree(moved.parent)
    forget = ["--forget", gone, "--forget", moved]
    # A dry run previews the forget (and refuses the same bad paths), changing nothing.
    for bad in (tmp_path / "nope.lock",):
        r = _run(_cas(store.root, "gc", "--dry-run", "--forget", bad), tmp_path)
        assert r.returncode == 2 and b"no registered root" in r.stderr, r.stderr
    r = _run(_cas(store.root, "gc", "--grace", "0", "--dry-run", *forget), tmp_path)
    assert r.returncode == 0, r.stderr
    preview = r.stdout.decode()
    assert f"would delete sha256:{ref_sha256(local_data)}" in preview, preview
    assert f"would forget root {gone}" in preview and "kept 1 object(s)" not in preview, preview
    assert store.has(ref_sha256(local_data)) and any(root.path == lock for root in store.roots())
    r = _run(_cas(store.root, "gc", "--grace", "0", *forget), tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"forgot root {gone}" in r.stdout.decode()
    assert not store.has(ref_sha256(local_data)), "released"
    assert all(root.path != lock for root in store.roots())


def test_a_pin_written_while_gc_reads_its_lockfile_is_remembered(tmp_path: Path) -> None:
    """gc reads a lockfile, a writer pins a local-only object into it and remembers it, then
    gc writes what it read as the root's memory: the new pin must not be forgotten (the
    project is moved next, and its only copy would go with the next gc)."""
    from modelcas.ops.gc import READERS
    from modelcas.pinning import write_pins

    store = Store(tmp_path / "store")
    proj = tmp_path / "proj"
    proj.mkdir()
    lock = proj / "cas.lock"
    (proj / "a.bin").write_bytes(os.urandom(4096))
    add([proj / "a.bin"], store, pin=PinRequest("a", "v1", lock=lock))
    late = os.urandom(MiB)
    late_digest = store.add_bytes(late).digest
    raced = []

    def reader_with_a_writer_in_between(path: Path) -> object:
        pinned = READERS["lockfile"](path)
        if not raced:  # the writer pins right after gc has read the lockfile
            raced.append(path)
            write_pins(
                store, lock, lambda lf: lf.pin("b", "v1", {"b.bin": late_digest}), [late_digest],
                lambda _: None,
            )  # fmt: skip
        return pinned

    store.gc({**READERS, "lockfile": reader_with_a_writer_in_between}, grace=0)
    assert raced and store.has(late_digest.sha256)
    os.rename(proj, tmp_path / "moved")
    r = _run(_cas(store.root, "gc", "--grace", "0"), tmp_path)
    assert r.returncode == 0, r.stderr
    assert store.has(late_digest.sha256), "the only copy of a pin made during gc was deleted"


@pytest.mark.parametrize("stored", [False, True], ids=["new", "already-stored"])
def test_commands_racing_to_recover_a_dead_move_give_it_back_once(
    tmp_path: Path, stored: bool
) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    data = os.urandom(MiB)
    src.write_bytes(data)
    if stored:
        store.add_bytes(data)
    # A process takes the file under a journal, then dies before it pins.
    code = textwrap.dedent(f"""
        import os
        from modelcas.store import Store
        Store({str(store.root)!r}).ingest({str(src)!r}, take=True)
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    assert not src.exists() and list(store.tmp_dir.glob("*.move"))
    racers = [
        subprocess.Popen(_cas(store.root, "ls"), env=_env(), stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    said = b"".join(p.communicate(timeout=60)[1] for p in racers)
    assert said.count(b"gave back") == 1, said
    assert src.read_bytes() == data and src.lstat().st_nlink == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("w.bin")] == ["w.bin"]
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("syscall", MOVE_SYSCALLS)
@pytest.mark.parametrize("stored", [False, True], ids=["new", "already-stored"])
def test_a_recovery_killed_anywhere_is_finished_by_the_next_once(
    tmp_path: Path, stored: bool, syscall: str
) -> None:
    """A journal recovered twice: the first recoverer gave the file back and died before it
    removed the journal; the next must see the file is back (not copy it out again as
    `w.bin.cas-restored`, nor warn on every command that it cannot finish)."""
    kills = 0
    for when in range(1, 40):
        work = tmp_path / str(when)
        work.mkdir()
        store = Store(work / "store")
        src = work / "w.bin"
        data = os.urandom(MiB)
        src.write_bytes(data)
        if stored:
            store.add_bytes(data)
        code = textwrap.dedent(f"""
            import os
            from modelcas.store import Store
            Store({str(store.root)!r}).ingest({str(src)!r}, take=True)
            os._exit(0)
        """)
        subprocess.run([sys.executable, "-c", code], check=True, env=_env())
        argv = strace_inject(syscall, "signal=KILL", when, _cas(store.root, "ls"))
        first = _run(argv, work)
        again = _run(_cas(store.root, "ls"), work)
        assert again.returncode == 0, again.stderr
        assert b"cannot finish" not in again.stderr, again.stderr
        assert src.read_bytes() == data and src.lstat().st_nlink == 1
        assert [p.name for p in work.iterdir() if p.name.startswith("w.bin")] == ["w.bin"]
        assert list(store.tmp_dir.iterdir()) == []
        if first.returncode == 0:
            break
        kills += 1
    else:
        pytest.fail("the recovery never completed")
    assert kills >= (0 if syscall.startswith("link") else 1)


def test_verify_finds_a_pinned_object_where_a_running_gc_staged_it(tmp_path: Path) -> None:
    """gc moves candidates aside before it reads the roots again (G2); a verify meanwhile
    finds the object there and puts it back: never CORRUPT, never MISSING."""
    from modelcas.store.durable import owned_name

    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(MiB))
    lock = tmp_path / "cas.lock"
    sha256 = add([src], store, pin=PinRequest("m", "v1", lock=lock)).files[0].digest.sha256
    staging = store.tmp_dir / f"gc-{owned_name()}"  # this process's: a gc that is running
    staging.mkdir()
    os.rename(store.object_path(sha256), staging / sha256)
    r = _run(_cas(store.root, "verify", "--lock", lock, "--deep"), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"OK      m@v1 w.bin" in r.stdout
    assert store.object_path(sha256).exists()
    v = _run(_cas(store.root, "verify"), tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr


def test_verify_follows_an_object_gc_moves_while_it_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving the torture test found: verify stats the object, gc moves it aside
    (G2), verify's hash finds nothing. It must follow the object, not call it corrupt."""
    from modelcas import hashing
    from modelcas.ops.verify import verify_lock
    from modelcas.registry import open_lock
    from modelcas.store import read
    from modelcas.store.durable import owned_name

    store = Store(tmp_path / "store")
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(MiB))
    lock = tmp_path / "cas.lock"
    sha256 = add([src], store, pin=PinRequest("m", "v1", lock=lock)).files[0].digest.sha256
    real = hashing.hash_files
    moved = []

    def gc_moves_it_first(paths: list[Path], *args: object, **kwargs: object) -> object:
        if not moved:
            staging = store.tmp_dir / f"gc-{owned_name()}"
            staging.mkdir()
            os.rename(store.object_path(sha256), staging / sha256)
            moved.append(staging)
        return real(paths, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(read.hashing, "hash_files", gc_moves_it_first)
    report = verify_lock(open_lock(lock, store=store, check_requires=False), deep=True)
    assert moved and report.problems == [], [str(p) for p in report.problems]
