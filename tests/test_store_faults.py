"""Reliability of the store under real faults: kill -9 at many points, ENOSPC, EIO, races.

Faults are real: strace injects SIGKILL or an errno into the running `cas` process at chosen
syscalls, a tiny tmpfs runs out of space, and many processes race on one store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelcas.store import Store
from tests.faults import strace_inject
from tests.refs import ref_file

MiB = 1 << 20
GiB = 1 << 30


def _cas_argv(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelcas", "--store", str(store), *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    # No bytecode writes, so no stray writes from the interpreter.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CAS_NO_PROGRESS": "1", **extra}


def _sparse(path: Path, size: int, marks: int = 8) -> Path:
    """A large file that costs no disk: holes, with a few distinct blocks so content matters."""
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(marks):
            f.seek(i * (size // marks))
            f.write(f"block {i} of {path.name}".encode() * 100)
    return path


def _assert_store_sound(store: Store) -> None:
    """No object under a wrong address, index consistent, leftovers only in tmp/."""
    assert store.verify(deep=True) == []
    allowed = {
        "objects",
        "index",
        "tmp",
        "quarantine",
        "roots",
        "locks",
        "store.json",
        "CACHEDIR.TAG",
    }
    assert {p.name for p in store.root.iterdir()} <= allowed
    for p in store.objects_dir.rglob("*"):
        if p.is_file():
            assert p.parent.name == p.name[:2] and len(p.name) == 64


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    p = _sparse(tmp_path_factory.mktemp("big") / "weights-2g.bin", 2 * GiB)
    return p, ref_file(p)[0]


# (syscall, occurrence): during the copy, at the object's fsync, at its rename, at the
# directory fsync, and at the index record's rename.
KILL_POINTS = [
    ("pwrite64", 1),
    ("pwrite64", 60),
    ("pwrite64", 400),
    ("fsync", 1),
    ("rename", 1),
    ("fsync", 2),
    ("rename", 2),
]


@pytest.mark.parametrize(("syscall", "when"), KILL_POINTS)
def test_kill_9_during_add_leaves_store_sound(
    tmp_path: Path, big: tuple[Path, str], syscall: str, when: int
) -> None:
    src, sha256 = big
    store = Store(tmp_path / "store")
    argv = strace_inject(syscall, "signal=KILL", when, _cas_argv(store.root, "add", src))
    killed = subprocess.run(argv, capture_output=True, env=_env(), check=False, timeout=300)
    assert killed.returncode in (-9, 137), killed.stderr
    _assert_store_sound(store)
    objects = [o.digest.sha256 for o in store.objects()]
    assert objects in ([], [sha256]), "either nothing, or the complete object"
    rerun = subprocess.run(
        _cas_argv(store.root, "add", src), capture_output=True, env=_env(), check=False, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert [o.digest.sha256 for o in store.objects()] == [sha256]
    _assert_store_sound(store)
    gc = subprocess.run(
        _cas_argv(store.root, "gc", "--grace", "0"), capture_output=True, env=_env(), check=False
    )
    assert gc.returncode == 0, gc.stderr
    assert list(store.tmp_dir.iterdir()) == []


def test_disk_full_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    src = _sparse(tmp_path / "too-big.pt", 200 * MiB)
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=64m tmpfs {mnt}
        {" ".join(_cas_argv(mnt / "store", "add", src))} 2> {tmp_path}/err
        echo "rc=$?"
        find {mnt}/store/tmp {mnt}/store/objects -type f | wc -l
    """)
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
        timeout=120,
    )
    lines = r.stdout.split()
    assert lines[0] == "rc=2", r.stdout + r.stderr
    assert lines[1] == "0", "no partial object and no temporary file"
    err = (tmp_path / "err").read_text()
    assert "No space left on device" in err
    assert str(src) in err and "nothing was stored" in err and "hint:" in err


def test_io_error_while_writing_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    src = _sparse(tmp_path / "w.pt", 64 * MiB)
    store = Store(tmp_path / "store")
    argv = strace_inject("pwrite64", "error=EIO", 3, _cas_argv(store.root, "add", src))
    r = subprocess.run(argv, capture_output=True, env=_env(), check=False, timeout=120)
    assert r.returncode == 2, r.stderr
    assert b"Input/output error" in r.stderr and str(src).encode() in r.stderr
    assert store.objects() == [] and list(store.tmp_dir.iterdir()) == []


def _race(argvs: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[bytes]]:
    procs = [
        subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for a in argvs
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.parametrize("locks", ["on", "off"])
def test_eight_processes_add_the_same_file(tmp_path: Path, locks: str) -> None:
    src = _sparse(tmp_path / "same-1g.bin", GiB)
    sha256 = ref_file(src)[0]
    store = Store(tmp_path / "store")
    results = _race([_cas_argv(store.root, "add", src)] * 8, _env(MODELCAS_LOCKS=locks))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert all(r.stdout.startswith(f"sha256:{sha256}".encode()) for r in results)
    assert [o.digest.sha256 for o in store.objects()] == [sha256]
    assert list(store.tmp_dir.iterdir()) == []
    _assert_store_sound(store)


def test_eight_processes_add_different_files_while_gc_runs(tmp_path: Path) -> None:
    files = [_sparse(tmp_path / f"m{i}.bin", 64 * MiB + i) for i in range(8)]
    want = sorted(ref_file(f)[0] for f in files)
    store = Store(tmp_path / "store")
    gc_loop = subprocess.Popen(
        [
            "sh",
            "-c",
            f"for i in $(seq 40); do {' '.join(_cas_argv(store.root, 'gc'))} "
            ">/dev/null || exit 1; done",
        ],
        env=_env(MODELCAS_LOCKS="off"),
    )
    results = _race([_cas_argv(store.root, "add", f) for f in files], _env(MODELCAS_LOCKS="off"))
    assert gc_loop.wait(timeout=600) == 0
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert sorted(o.digest.sha256 for o in store.objects()) == want
    assert list(store.tmp_dir.iterdir()) == []
    _assert_store_sound(store)
