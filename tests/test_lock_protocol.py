"""Lockfile writes that need no flock: a git-style ``cas.lock.lock`` created with O_EXCL,
naming its owner, broken only when the owner is provably dead; the new text must read back
as the same pins before it is renamed into place; ``--move`` reads its pin back before the
source goes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from modelcas.errors import LockfileError, LockHeldError
from modelcas.lockfile import LockedModel, LockedVersion, Lockfile, edit, lock_path
from modelcas.ops.add import PinRequest, add
from modelcas.store import Store, owner
from tests.users import AS_NOBODY

ROOT = Path(__file__).resolve().parent.parent


def _cas(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelcas", "--store", str(store), *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CAS_NO_PROGRESS": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _record(**change: object) -> bytes:
    me = owner.me("cafe")
    raw = {**json.loads(me.encode()), **change}
    return json.dumps(raw).encode()


def test_the_lock_names_its_owner_while_held_and_is_gone_after(tmp_path: Path) -> None:
    lock = tmp_path / "cas.lock"
    with edit(lock) as lf:
        held = owner.read_owner(lock_path(lock))
        assert held is not None
        assert (held.pid, held.host, held.boot) == (os.getpid(), owner.me().host, owner.me().boot)
        assert held.start > 0 and held.ns
        lf.package = "x"
    assert not lock_path(lock).exists()
    assert Lockfile.load(lock).package == "x"


def test_a_dead_owners_lock_on_this_host_is_broken(tmp_path: Path) -> None:
    lock = tmp_path / "cas.lock"
    lock_path(lock).write_bytes(_record(pid=_dead_pid()))
    with edit(lock) as lf:
        lf.package = "after-a-crash"
    assert Lockfile.load(lock).package == "after-a-crash"
    assert not lock_path(lock).exists()


def test_a_reused_pid_with_another_start_time_is_dead(tmp_path: Path) -> None:
    lock = tmp_path / "cas.lock"
    # Our own pid, but a start time it never had: the process that took the lock is gone.
    lock_path(lock).write_bytes(_record(start=owner.me().start + 12345))
    with edit(lock) as lf:
        lf.package = "p"
    assert Lockfile.load(lock).package == "p"


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"host": "node-17.cluster"}, id="another-host"),
        pytest.param({"boot": "00000000-0000-0000-0000-000000000000"}, id="another-boot"),
        pytest.param({"ns": "pid:[1] net:[1]"}, id="another-namespace"),
        pytest.param(None, id="no-record"),
        pytest.param("live", id="live-process"),
    ],
)
def test_a_lock_that_cannot_be_proved_stale_is_waited_for_then_refused(
    tmp_path: Path, record: dict[str, str] | str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "cas.lock"
    Lockfile(package="before").save(lock)
    before = lock.read_bytes()
    sleeper = None
    if record == "live":
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(0.2)
        data = _record(pid=sleeper.pid, start=owner._start_time(sleeper.pid))
    elif record is None:
        data = b""  # killed between creating the lock and writing its record
    else:
        data = _record(pid=_dead_pid(), **record)
    lock_path(lock).write_bytes(data)
    monkeypatch.setenv("MODELCAS_LOCK_TIMEOUT", "1")
    try:
        r = subprocess.run(
            _cas(tmp_path / "store", "lock", "check", "--lock", lock),
            capture_output=True,
            env=_env(MODELCAS_LOCK_TIMEOUT="1"),
            check=False,
        )
        assert r.returncode == 0, r.stderr  # reading needs no lock
        t0 = time.monotonic()
        with pytest.raises(LockHeldError) as caught, edit(lock) as lf:
            lf.package = "never"
        assert time.monotonic() - t0 >= 0.9, "waited before refusing"
        message = str(caught.value)
        assert f"rm {lock_path(lock)}" in message
        if record not in (None, "live"):
            assert "pid" in message
        if record == "live":
            assert sleeper is not None and f"pid {sleeper.pid} on" in message
        assert lock.read_bytes() == before, "nothing is written"
        assert lock_path(lock).read_bytes() == data, "another's lock is never removed"
        # Through the CLI: one line and a hint, exit 2.
        src = tmp_path / "w.bin"
        src.write_bytes(b"weights")
        r = subprocess.run(
            _cas(tmp_path / "store", "add", src, "--name", "m", "--version", "v1", "--lock", lock),
            capture_output=True,
            env=_env(MODELCAS_LOCK_TIMEOUT="1"),
            check=False,
        )
        assert r.returncode == 2
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 2 and "is locked by" in lines[0] and "rm " in lines[1], lines
        assert lock.read_bytes() == before
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


def test_another_users_live_lock_is_not_broken_where_proc_hides_it(tmp_path: Path) -> None:
    """/proc mounted hidepid=2 (hardened shared machines): another user's live process has no
    /proc entry, which is not proof that it is gone (kill(pid, 0) says EPERM, not ESRCH)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a private /proc and to drop to nobody (CI runs as root)")
    shared = Path(tempfile.mkdtemp(prefix="modelcas-hidepid-"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=_env(PYTHONPATH=str(ROOT))
    )
    try:
        shared.chmod(0o777)
        lock = shared / "cas.lock"
        time.sleep(0.2)
        record = _record(pid=holder.pid, start=owner._start_time(holder.pid))
        lock_path(lock).write_bytes(record)
        code = textwrap.dedent(f"""
            import sys
            from modelcas.errors import LockHeldError
            from modelcas.store import owner
            try:
                owner.acquire(owner.Path({str(lock_path(lock))!r}), "cas.lock", wait=0.5)
            except LockHeldError:
                sys.exit(0)
            sys.exit("broke a live owner's lock")
        """)
        # As nobody, who may still search the checkout (CI clones into a 0700 folder).
        script = f'mount -t proc -o hidepid=2 proc /proc && exec {" ".join(AS_NOBODY)} "$0" -c "$1"'
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, sys.executable, code],
            capture_output=True, text=True, env=_env(PYTHONPATH=str(ROOT)), check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert lock_path(lock).read_bytes() == record
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(shared)


def test_a_lockfile_that_is_a_symlink_is_written_and_locked_at_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proj/cas.lock -> ../shared/cas.lock: a pin through the link lands in the shared file
    (the link was replaced by a file of its own), and a writer of the shared file excludes
    a writer through the link (they took two different locks)."""
    shared, proj = tmp_path / "shared", tmp_path / "proj"
    shared.mkdir()
    proj.mkdir()
    Lockfile(package="shared").save(shared / "cas.lock")
    (proj / "cas.lock").symlink_to("../shared/cas.lock")
    store = Store(tmp_path / "store")
    (proj / "w.bin").write_bytes(b"weights")
    add([proj / "w.bin"], store, pin=PinRequest("m", "v1", lock=proj / "cas.lock"))
    assert (proj / "cas.lock").is_symlink(), "the link stays a link"
    assert "m" in Lockfile.load(shared / "cas.lock").models
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        lock_path(shared / "cas.lock").write_bytes(
            _record(pid=sleeper.pid, start=owner._start_time(sleeper.pid))
        )
        monkeypatch.setenv("MODELCAS_LOCK_TIMEOUT", "0.5")
        with pytest.raises(LockHeldError), edit(proj / "cas.lock") as lf:
            lf.package = "through the link"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert Lockfile.load(shared / "cas.lock").package == "shared"


def test_a_slow_live_writer_is_waited_for_not_overwritten(tmp_path: Path) -> None:
    """Another process holds the lock for a second; our edit waits, and both edits land."""
    lock = tmp_path / "cas.lock"
    Lockfile(package="p").save(lock)
    script = textwrap.dedent(f"""
        import sys, time
        from modelcas.lockfile import edit
        with edit({str(lock)!r}) as lf:
            print("held", flush=True)
            time.sleep(1.0)
            lf.models.setdefault("slow", __import__("modelcas.lockfile").lockfile.LockedModel())
            lf.models["slow"].repo = "org/slow"
    """)
    slow = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=_env(PYTHONPATH=str(ROOT))
    )
    assert slow.stdout is not None and slow.stdout.readline() == b"held\n"
    with edit(lock) as lf:
        lf.package = "fast"
    assert slow.wait(timeout=60) == 0
    final = Lockfile.load(lock)
    assert final.package == "fast" and final.models["slow"].repo == "org/slow"


def test_text_that_does_not_read_back_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    lock = tmp_path / "cas.lock"
    Lockfile(package="before").save(lock)
    before = lock.read_bytes()
    bad = Lockfile.load(lock)
    # A version without files cannot be read back: the parser requires at least one.
    bad.models["m"] = LockedModel(versions={"v1": LockedVersion(files={})}, latest="v1")
    with pytest.raises(LockfileError, match=r"does not read back.*nothing was written"):
        bad.save()
    with pytest.raises(LockfileError, match="nothing was written"), edit(lock) as lf:
        lf.models["m"] = LockedModel(versions={"v1": LockedVersion(files={})}, latest="v1")
    assert lock.read_bytes() == before
    assert not lock_path(lock).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cas.lock"], "no temporary file left"


def test_move_reads_its_pin_back_before_the_source_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that ignores the lock rewrites the lockfile right after our pin: the pin is
    not there when read back, so the moved file comes back, as its own inode, with its mode."""
    import modelcas.ops.add as ops_add

    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    Lockfile(package="other").save(lock)
    foreign = lock.read_bytes()
    real = ops_add.write_pins

    def and_then_overwritten(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        lock.write_bytes(foreign)  # a lost update by a writer that took no lock
        return out

    monkeypatch.setattr(ops_add, "write_pins", and_then_overwritten)
    src = tmp_path / "w.bin"
    data = os.urandom(1 << 20)
    src.write_bytes(data)
    os.chmod(src, 0o600)
    with pytest.raises(LockfileError, match=r"not pinned.*when read back"):
        add([src], store, move=True, pin=PinRequest("m", "v1", lock=lock))
    st = src.lstat()
    assert src.read_bytes() == data and st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o600
    for info in store.objects():
        assert info.path.lstat().st_ino != st.st_ino
    assert list(store.tmp_dir.iterdir()) == []
