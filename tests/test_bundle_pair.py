"""A bundle and its .sha256 sidecar are replaced as a pair: a kill -9 at any step of
``cas bundle --force`` leaves them consistent (or the sidecar absent), never a good bundle
beside a stale sidecar."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
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
