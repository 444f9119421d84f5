"""Store: `cas add`, re-add and `cas verify` against cp + openssl, dvc add and b3sum.

Run: `make bench-store` (or `python benches/bench_store.py [--quick]`). Targets from issue 3.

Every contender is a real process on the same warm files. Before each timed run its last output
is deleted, writeback is flushed and the inputs are re-read (all untimed), so no run pays for
another's dirty pages. `cas add` fsyncs its object and plain `cp` does not: the table shows
both `cp` and `cp; sync DEST` so the reader can judge that difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _bench import (
    DATA,
    GiB,
    MiB,
    Table,
    best_of,
    clean_slate,
    machine,
    make_file,
    need,
    remove,
    run_cmd,
    warm,
)
from modelcas import hashing
from modelcas.store import Store

DVC_VENV = DATA / "dvc-venv"


def cas(*args: str | Path) -> Callable[[], object]:
    """The real CLI, started as a user starts it (interpreter start-up included)."""
    return run_cmd(sys.executable, "-m", "modelcas", *args)


def install_dvc() -> Path | None:
    """dvc from PyPI in its own venv, never the project's; None (said aloud) when that fails."""
    exe = DVC_VENV / "bin" / "dvc"
    if exe.exists():
        return exe
    print(f"installing dvc into {DVC_VENV} (once) ...", flush=True)
    try:
        for argv in (
            [sys.executable, "-m", "venv", str(DVC_VENV)],
            [str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc"],
        ):
            subprocess.run(argv, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()[-1:] or ["no output"]
        print(f"  DVC NOT INSTALLED ({' '.join(e.cmd)}: {last[0]}); its row is skipped")
        return None
    return exe


def dvc_add(dvc: Path, big: Path) -> tuple[Callable[[], None], Callable[[], object], Path]:
    """Setup and timed run of `dvc add` on a copy of ``big`` in a fresh git + dvc repo.

    The copy is made in setup, so whatever dvc does to the file it adds (move, relink, chmod,
    depending on its cache.type) never touches the shared source. dvc's hash cache (its site
    cache dir) lives in the scratch dir too, so every run starts cold, as a first `dvc add` of
    a new file does.
    """
    scratch = DATA / "dvc-run"
    repo = scratch / "repo"
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(scratch / "site-cache"),
    }

    def run(*argv: str | Path) -> None:
        subprocess.run(
            [str(a) for a in argv], cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL
        )

    def setup() -> None:
        remove(scratch)
        repo.mkdir(parents=True)
        run("git", "init", "-q")
        run(dvc, "init", "-q")
        shutil.copyfile(big, repo / big.name)
        os.sync()
        warm(big, repo / big.name)

    return setup, lambda: run(dvc, "add", "-q", big.name), scratch


def verify_store(n: int, size: int) -> Store:
    """A store holding ``n`` distinct objects of ``size`` bytes, built once and reused."""
    root = DATA / f"verify-store-{n}x{size}"
    if root.is_dir():
        objects = Store(root).objects()
        if len(objects) == n and all(o.digest.size == size for o in objects):
            return Store(root)
        remove(root)  # left incomplete by an interrupted build
    store = Store(root)
    src_dir = DATA / f"verify-src-{n}x{size}"
    for i in range(n):
        # Moved in: the store keeps the only copy, so the data sits on disk once.
        store.add_file(make_file(src_dir / f"{i:03d}.bin", size, seed=1000 + i), move=True)
    src_dir.rmdir()
    return store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="512 MiB and 40 x 8 MiB objects, one run each"
    )
    ap.add_argument("--verify-only", action="store_true", help="only the cas verify rows")
    args = ap.parse_args()
    big_size = 512 * MiB if args.quick else 4 * GiB
    n_objects = 40
    obj_size = 8 * MiB if args.quick else 4 * GiB // n_objects
    repeat = 1 if args.quick else 3
    cp, openssl, sync, b3sum = need("cp"), need("openssl"), need("sync"), need("b3sum")
    # A progress bar is drawn only at a terminal; the benchmark times the work, not the bar.
    os.environ["CAS_NO_PROGRESS"] = "1"

    print(f"machine: {machine()}")
    if args.verify_only:
        vstore = verify_store(n_objects, obj_size)
        t = Table(f"store, {n_objects} x {obj_size / MiB:.0f} MiB objects", stat=statistics.median)
        verify_rows(t, vstore, b3sum, 1 if args.quick else 7)
        return 0 if t.report() else 1
    big = make_file(DATA / f"store-{big_size // MiB}MiB.bin", big_size)
    vstore = verify_store(n_objects, obj_size)
    store_dir, dest = DATA / "add-store", DATA / "cp-dest.bin"
    label = f"{big_size / GiB:g} GiB file"
    verify_label = f"{n_objects} x {obj_size / MiB:.0f} MiB objects"
    fresh = clean_slate((store_dir, dest), (big,))

    t = Table(f"store, {label} and {verify_label}")
    add = t.time(
        "cas add, empty store (fsyncs object + dirs)",
        cas("--store", store_dir, "add", big),
        repeat,
        setup=fresh,
    )
    p_cp = t.time("cp FILE DEST (no fsync)", run_cmd(cp, big, dest), repeat, setup=fresh)
    copy, flush = run_cmd(cp, big, dest), run_cmd(sync, dest)
    p_cp_sync = t.time(
        "cp FILE DEST; sync DEST (fsync)", lambda: (copy(), flush()), repeat, setup=fresh
    )
    p_openssl = t.time(
        "openssl dgst -sha256 FILE", run_cmd(openssl, "dgst", "-sha256", big), repeat, setup=fresh
    )

    p_dvc = None
    if shutil.which("git") is None:
        print("  DVC SKIPPED: git is not installed (dvc add needs a git repo)")
    elif (dvc := install_dvc()) is not None:
        dvc_setup, dvc_run, dvc_scratch = dvc_add(dvc, big)
        p_dvc = t.time("dvc add (fresh git + dvc repo)", dvc_run, repeat, setup=dvc_setup)
        remove(dvc_scratch)

    # The object is already stored: a re-add costs one hash of both digests, no copy.
    remove(store_dir)
    cas("--store", store_dir, "add", big)()
    readd = t.time("cas add, content already stored", cas("--store", store_dir, "add", big), repeat)
    p_hash = t.time("cas hash --algo both FILE", cas("hash", "--algo", "both", big), repeat)
    remove(store_dir)
    remove(dest)

    verify_rows(t, vstore, b3sum, repeat)
    t.ratio("add vs cp + openssl (cp without fsync)", add, p_cp + p_openssl, 1.2, "cp + openssl")
    t.ratio(
        "add vs cp; sync + openssl (both fsync)",
        add,
        p_cp_sync + p_openssl,
        1.2,
        "cp; sync + openssl",
    )
    if p_dvc is not None:
        t.ratio("add vs dvc add (>= 5x faster)", add, p_dvc, 0.2, "dvc add")
    t.ratio("re-add of stored content vs cas hash --algo both", readd, p_hash, 1.1, "cas hash")
    return 0 if t.report() else 1


def verify_rows(t: Table, vstore: Store, b3sum: str, repeat: int) -> None:
    """`cas verify` against `b3sum` over the same objects, in turns (one run of each, then
    again; every run after an untimed read of the objects), medians; and, for where the time
    goes, the hashing alone in-process, mapped (as `cas verify` hashes) and read into a buffer.
    """
    objects = [o.path for o in vstore.objects()]
    label = f"{len(objects)} x {objects and objects[0].stat().st_size / MiB:.0f} MiB objects"
    rows = {
        f"cas verify, {label}": cas("--store", vstore.root, "verify"),
        f"b3sum over the {len(objects)} object files": run_cmd(b3sum, *objects),
        "  hash_files blake3 in-process, each object mapped (cas verify's way)": lambda: (
            hashing.hash_files(objects, ("blake3",), regular_only=True)
        ),
        "  hash_files blake3 in-process, each object read into a buffer": lambda: (
            hashing.hash_files(objects, ("blake3",), regular_only=True, mmap=False)
        ),
        "  CLI start-up alone: cas --version": cas("--version"),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, fn in rows.items():
            times[name].append(best_of(fn, 1, lambda: warm(*objects)))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        t.rows.append((name, m, ""))
        print(f"  {name:<70} {m:8.3f} s  (min {min(times[name]):.3f})", flush=True)
    ours, peer = list(med.values())[:2]
    t.ratio(f"verify {label} vs b3sum", ours, peer, 1.0, "b3sum")


if __name__ == "__main__":
    sys.exit(main())
