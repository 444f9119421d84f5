"""A bundle and its .sha256 sidecar are replaced as a pair: a kill -9 at any step of
``cas bundle --force`` leaves them consistent (or the sidecar absent), never a good bundle
beside a stale sidecar."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.bundlekit import example_config
from tests.faults import strace_inject

# The steps of the replacement, in order: remove the old sidecar, rename the bundle into place,
# rename the new sidecar into place.
STEPS = [("unlink", 1), ("renameat", 1), ("renameat", 2)]


def run_cas(tmp: Path, *args: str | os.PathLike[str], wrap: list[str] | None = None) -> int:
    env = {**os.environ, "MODELCAS_HOME": str(tmp / "store"), "CAS_NO_PROGRESS": "1"}
    argv = [sys.executable, "-m", "modelcas", *map(str, args)]
    r = subprocess.run(
        (wrap or []) + argv, cwd=tmp, env=env, capture_output=True, timeout=120, check=False
    )
    return r.returncode


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize(("syscall", "when"), STEPS, ids=[f"{s}-{w}" for s, w in STEPS])
def test_a_kill_between_the_renames_leaves_a_consistent_pair(
    tmp_path: Path, syscall: str, when: int
) -> None:
    cfg = example_config(tmp_path)
    out = tmp_path / "out" / "b.zip"
    sidecar = out.with_name("b.zip.sha256")
    args = ("bundle", "-i", cfg, "-o", out, "--no-auto-date", "--force")
    assert run_cas(tmp_path, *args) == 0
    old = out.read_bytes()
    # The new bundle differs from the old one.
    spec = yaml.safe_load(cfg.read_text())
    spec["bf_focus"]["inferer_args"]["patch_size"] = 1024
    cfg.write_text(yaml.safe_dump(spec, sort_keys=False))

    code = run_cas(tmp_path, *args, wrap=strace_inject(syscall, "signal=KILL", when, []))
    assert code != 0, "the kill landed"
    now = out.read_bytes()
    new_bundle = now != old
    expected = {"unlink-1": False, "renameat-1": False, "renameat-2": True}
    assert new_bundle == expected[f"{syscall}-{when}"], "killed at the planned step"
    if sidecar.exists():
        line = sidecar.read_text()
        assert line == f"{hashlib.sha256(now).hexdigest()}  b.zip\n", "a stale sidecar"
    else:
        assert syscall != "unlink", "the old pair is untouched before the first step"
    verify = run_cas(tmp_path, "bundle", "verify", out)
    assert verify == 0, "a good bundle is never called corrupt"
    # The next run completes the pair; its temporary files are the only leftovers of the kill.
    assert run_cas(tmp_path, *args) == 0
    check = subprocess.run(
        ["sha256sum", "-c", "b.zip.sha256"], cwd=out.parent, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout
    leftovers = {p.name for p in out.parent.iterdir()} - {"b.zip", "b.zip.sha256"}
    assert all(n.startswith((".b.zip.", ".b.zip.sha256.")) for n in leftovers), leftovers
    assert all(n.endswith(".partial") for n in leftovers), leftovers


def test_cas_bundle_registers_its_output_so_gc_cleans_crash_leftovers(tmp_path: Path) -> None:
    from modelcas import bundle as bundles
    from modelcas.store import OUTPUT, Store

    cfg = example_config(tmp_path)
    out = tmp_path / "out" / "b.zip"
    args = ("bundle", "-i", cfg, "-o", out, "--no-auto-date", "--force")
    assert run_cas(tmp_path, *args) == 0
    store = Store(tmp_path / "store")
    assert [(r.path, r.kind) for r in store.roots()] == [(out.resolve(), OUTPUT)]
    leftovers = [out.parent / ".b.zip.Ab12cD.partial", out.parent / ".b.zip.sha256.x9Y8z7.partial"]
    for p in leftovers:
        p.write_bytes(b"half a bundle")
        os.utime(p, (0, 0))
    assert run_cas(tmp_path, "gc", "--grace", "0") == 0
    assert not any(p.exists() for p in leftovers)
    assert out.is_file() and out.with_name("b.zip.sha256").is_file()
    # Once opened in a pipeline the bundle keeps its objects, also after it is written again.
    bundles.open(out, store=store)
    assert run_cas(tmp_path, *args) == 0
    assert [r.kind for r in store.roots()] == ["bundle"]


def _sums_match(out: Path) -> bool:
    side = out.with_name(out.name + ".sha256")
    return side.read_text() == f"{hashlib.sha256(out.read_bytes()).hexdigest()}  {out.name}\n"


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_gc_with_no_grace_in_a_loop_never_breaks_a_bundle_being_written(
    tmp_path: Path, force: bool
) -> None:
    """`cas gc --grace 0` runs in a loop while `cas bundle` writes (each paused by strace just
    before it renames its bundle into place, so gc sees the temporary files): the temporary
    files name their live owner, so every bundle completes with its sidecar."""
    cfg = example_config(tmp_path)
    big = cfg.parent.parent / "weights" / "segmentation.safetensors"
    big.write_bytes(os.urandom(8 << 20))
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store"), "CAS_NO_PROGRESS": "1"}
    cas = [sys.executable, "-m", "modelcas"]
    stop = tmp_path / "stop"
    # gc only reads a store named by MODELCAS_HOME: it must exist before the first bundle.
    subprocess.run([*cas, "store", "init"], env=env, check=True, capture_output=True)
    loop = subprocess.Popen(
        ["sh", "-c", f'n=0; while [ ! -e "{stop}" ]; do "$@" >/dev/null || exit 1; n=$((n+1)); '
         f'done; echo "$n"', "sh", *cas, "gc", "--grace", "0"],
        env=env, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        for i, compression in enumerate(["stored", "deflate", "zstd"] * 2):
            out = tmp_path / "out" / ("b.zip" if force else f"b{i}.zip")
            argv = [*cas, "bundle", "-i", str(cfg), "-o", str(out), "--no-auto-date"]
            argv += ["--compression", compression] + (["--force"] if force else [])
            slow = strace_inject("renameat,rename", "delay_enter=700000", 1, argv)
            r = subprocess.run(slow, cwd=tmp_path, env=env, capture_output=True, check=False)
            assert r.returncode == 0, r.stderr
            assert _sums_match(out), f"{compression}: the sidecar does not match its bundle"
            assert run_cas(tmp_path, "bundle", "verify", out) == 0
    finally:
        stop.touch()
        runs, _ = loop.communicate(timeout=120)
    assert loop.returncode == 0
    assert int(runs) >= 3, "gc ran while the bundles were written"


def test_two_forced_bundles_of_one_output_replace_the_pair_one_after_the_other(
    tmp_path: Path,
) -> None:
    """A is paused between renaming its bundle and its sidecar into place while B runs whole:
    without a lock the pair would end as B's bundle beside A's sidecar."""
    cfg = example_config(tmp_path)
    other = cfg.with_name("other.yml")
    spec = yaml.safe_load(cfg.read_text())
    spec["bf_focus"]["inferer_args"]["patch_size"] = 1024
    other.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out" / "b.zip"
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store"), "CAS_NO_PROGRESS": "1"}

    def argv(config: Path) -> list[str]:
        cmd = [sys.executable, "-m", "modelcas", "bundle", "-i", str(config), "-o", str(out)]
        return [*cmd, "--no-auto-date", "--force"]

    assert run_cas(tmp_path, *argv(other)[3:]) == 0
    old = out.read_bytes()
    a = subprocess.Popen(
        strace_inject("renameat", "delay_exit=2000000", 1, argv(cfg)),
        cwd=tmp_path, env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while out.read_bytes() == old:  # A's bundle is in place; A now sleeps before its sidecar
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.02)
    b = subprocess.run(argv(other), cwd=tmp_path, env=env, capture_output=True, check=False)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert b.returncode == 0, b.stderr
    assert _sums_match(out), "the sidecar belongs to the other bundle"
    assert not out.with_name("b.zip.lock").exists()
    assert run_cas(tmp_path, "bundle", "verify", out) == 0
