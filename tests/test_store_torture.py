"""Locks that lock nothing: 8 processes pin, move, collect and verify for a minute with
``fcntl.flock`` and ``fcntl.lockf`` made no-ops in every process (a ``sitecustomize``) and
``MODELCAS_LOCKS=off``, as on NFS with ``local_lock=all`` or Lustre with ``localflock``.

Nothing may be lost: every pin a process reported is in its lockfile, every file a move
reported taken is stored and pinned (and every move that failed left its file in place), and
every pinned object is present and intact. ``MODELCAS_TORTURE_SECONDS`` sets the length
(default 60, what issue 22 asks for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelcas.lockfile import Lockfile
from modelcas.store import Store

ROOT = Path(__file__).resolve().parent.parent
SITECUSTOMIZE = """
    import fcntl

    def noop(*args, **kwargs):
        return None

    fcntl.flock = noop
    fcntl.lockf = noop
"""
WORKERS = [("pinner", 0), ("pinner", 1), ("pinner", 2), ("mover", 0), ("mover", 1)]
WORKERS += [("gc", 0), ("gc", 1), ("verify", 0)]


@pytest.mark.slow
def test_eight_processes_without_flock_lose_nothing(tmp_path: Path) -> None:
    seconds = os.environ.get("MODELCAS_TORTURE_SECONDS", "60")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    work = tmp_path / "work"
    (work / "shared").mkdir(parents=True)
    store = tmp_path / "store"
    Store(store)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "MODELCAS_LOCKS": "off",
        "CAS_NO_PROGRESS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.torture_worker",
                role,
                str(i),
                str(work),
                str(store),
                seconds,
            ],
            env=env,
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        for role, i in WORKERS
    ]
    crashed = []
    for (role, i), p in zip(WORKERS, procs, strict=True):
        _, err = p.communicate(timeout=float(seconds) + 240)
        if p.returncode != 0:
            crashed.append(f"{role} {i}: {err.decode(errors='replace')[-2000:]}")
    assert crashed == []

    records = [
        json.loads(line)
        for log in sorted(work.glob("log-*.jsonl"))
        for line in log.read_text().splitlines()
    ]
    errors = [r["error"] for r in records if "error" in r]
    pins = [r for r in records if "pin" in r]
    moved = [r for r in records if "moved" in r]
    kept = [r for r in records if "kept" in r]
    assert errors == [], errors[:5]
    assert len(pins) > 50 and len(moved) > 10, (len(pins), len(moved))
    assert sum(r.get("gc_runs", 0) for r in records) > 10
    assert sum(r.get("verify_runs", 0) for r in records) > 5

    s = Store(store)
    locks: dict[str, Lockfile] = {}
    missing_pins = []
    for r in pins:
        lock = locks.setdefault(r["pin"], Lockfile.load(r["pin"]))
        files = lock.models.get(r["name"])
        entry = files.versions.get(r["version"]) if files else None
        if entry is None or r["sha"] not in {d.sha256 for d in entry.files.values()}:
            missing_pins.append(f"{r['name']}@{r['version']} in {r['pin']}")
    assert missing_pins == [], f"{len(missing_pins)} of {len(pins)} pins lost: {missing_pins[:5]}"
    lost_moves = [r["moved"] for r in moved if Path(r["moved"]).exists()]
    assert lost_moves == [], "a move reported success but left the file"
    for r in kept:
        assert Path(r["kept"]).exists(), f"a failed move lost {r['kept']}"
    pinned = {d.sha256 for lock in locks.values() for *_, d in lock.entries()}
    assert {r["sha"] for r in moved} <= pinned, "a moved file is not pinned"
    problems = s.verify(sorted(pinned), deep=True)
    assert problems == [], [str(p) for p in problems[:5]]
    for sha in pinned:
        assert os.stat(s.object_path(sha)).st_nlink == 1, "an object shares its inode"
