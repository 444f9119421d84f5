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
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _bench import (
    DATA,
    GiB,
    MiB,
    Table,
    clean_slate,
    machine,
    make_file,
    need,
    remove,
    run_cmd,
    warm,
)
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
    args = ap.parse_args()
    big_size = 512 * MiB if args.quick else 4 * GiB
    n_objects = 40
    obj_size = 8 * MiB if args.quick else 4 * GiB // n_objects
    repeat = 1 if args.quick else 3
    cp, openssl, sync, b3sum = need("cp"), need("openssl"), need("sync"), need("b3sum")
    # A progress bar is drawn only at a terminal; the benchmark times the work, not the bar.
    os.environ["CAS_NO_PROGRESS"] = "1"

    print(f"machine: {machine()}")
    big = make_file(DATA / f"store-{big_size // MiB}MiB.bin", big_size)
    vstore = verify_store(n_objects, obj_size)
    objects = [o.path for o in vstore.objects()]
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

    warm(*objects)
    ours_verify = t.time(
        f"cas verify, {verify_label}", cas("--store", vstore.root, "verify"), repeat
    )
    p_b3sum = t.time(f"b3sum over the {n_objects} object files", run_cmd(b3sum, *objects), repeat)

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
    t.ratio(f"verify {verify_label} vs b3sum", ours_verify, p_b3sum, 1.0, "b3sum")
    return 0 if t.report() else 1


if __name__ == "__main__":
    sys.exit(main())
