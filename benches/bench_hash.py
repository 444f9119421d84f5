"""Hashing: modelcas against sha256sum, openssl, hashlib, b3sum and blake3-py on the same files.

Run: `make bench-hash` (or `python benches/bench_hash.py [--quick]`). Targets from issue 2.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import sys
from pathlib import Path

import blake3

import modelcas
from _bench import (
    DATA,
    GiB,
    MiB,
    Table,
    child_peak_rss_mib,
    machine,
    make_file,
    need,
    run_cmd,
    warm,
)


def hashlib_file_digest(p: Path) -> str:
    with open(p, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hashlib_mmap(p: Path) -> str:
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return hashlib.sha256(m).hexdigest()


def blake3_py(p: Path) -> str:
    return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(p).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="256 MiB and 1,000 files, one run each")
    args = ap.parse_args()
    big_size = 256 * MiB if args.quick else 4 * GiB
    n_small = 1000 if args.quick else 10_000
    repeat = 1 if args.quick else 3
    openssl, sha256sum, b3sum = need("openssl"), need("sha256sum"), need("b3sum")

    print(f"machine: {machine()}")
    big = make_file(DATA / f"hash-{big_size // MiB}MiB.bin", big_size)
    small_dir = DATA / f"small-{n_small}"
    small = [make_file(small_dir / f"{i:05d}.bin", 64 << 10, seed=i + 1) for i in range(n_small)]
    warm(big, *small)
    label = f"{big_size / GiB:g} GiB file"

    t = Table(f"hashing, {label} and {n_small} x 64 KiB")
    both = t.time(
        "modelcas sha256+blake3 (one pass)",
        lambda: modelcas.hash_file(big, ("sha256", "blake3")),
        repeat,
    )
    both_nommap = t.time(
        "modelcas sha256+blake3, no mmap",
        lambda: modelcas.hash_file(big, ("sha256", "blake3"), mmap=False),
        repeat,
    )
    ours_sha = t.time("modelcas sha256", lambda: modelcas.hash_file(big, ("sha256",)), repeat)
    ours_b3 = t.time("modelcas blake3", lambda: modelcas.hash_file(big, ("blake3",)), repeat)
    p_openssl = t.time("openssl dgst -sha256", run_cmd(openssl, "dgst", "-sha256", big), repeat)
    p_sha256sum = t.time("sha256sum", run_cmd(sha256sum, big), repeat)
    p_fd = t.time("hashlib.file_digest sha256", lambda: hashlib_file_digest(big), repeat)
    p_mm = t.time("hashlib sha256 over mmap", lambda: hashlib_mmap(big), repeat)
    p_b3sum = t.time("b3sum (mmap, multi-threaded)", run_cmd(b3sum, big), repeat)
    p_b3py = t.time("blake3-py update_mmap max_threads=AUTO", lambda: blake3_py(big), repeat)
    p_two = t.time(
        "hashlib.file_digest then blake3-py",
        lambda: (hashlib_file_digest(big), blake3_py(big)),
        repeat,
    )

    many_ours = t.time(
        f"modelcas hash_files x{n_small}, both digests",
        lambda: modelcas.hash_files(small, ("sha256", "blake3")),
        repeat,
    )
    many_b3sum = t.time(f"b3sum x{n_small} (blake3 only)", run_cmd(b3sum, *small), repeat)

    def py_loop() -> None:
        for p in small:
            data = p.read_bytes()
            hashlib.sha256(data).hexdigest()
            blake3.blake3(data).hexdigest()

    many_loop = t.time(f"Python loop hashlib + blake3 x{n_small}", py_loop, repeat)

    fastest_sha = min(p_openssl, p_sha256sum, p_fd, p_mm)
    t.ratio(
        "sha256+blake3 vs fastest sha256-only peer", both, fastest_sha, 1.10, "fastest sha256 peer"
    )
    t.ratio(
        "sha256+blake3 (no mmap) vs fastest sha256 peer",
        both_nommap,
        fastest_sha,
        1.10,
        "fastest sha256 peer",
    )
    t.ratio("sha256+blake3 vs hashlib then blake3-py", both, p_two, 0.6, "hashlib + blake3-py")
    t.ratio("blake3 only vs b3sum", ours_b3, p_b3sum, 1.0, "b3sum")
    t.ratio("blake3 only vs blake3-py", ours_b3, p_b3py, 1.0, "blake3-py update_mmap")
    t.ratio(
        "sha256 only vs fastest of openssl, hashlib",
        ours_sha,
        min(p_openssl, p_fd, p_mm),
        1.0,
        "openssl / hashlib",
    )
    t.ratio(f"{n_small} files, both vs b3sum (blake3 only)", many_ours, many_b3sum, 1.2, "b3sum")
    t.ratio(
        f"{n_small} files, both vs Python loop", many_ours, many_loop, 0.5, "hashlib + blake3 loop"
    )
    ok = t.report()

    rss = child_peak_rss_mib(
        f"import modelcas; modelcas.hash_file({str(big)!r}, ('sha256', 'blake3'), mmap=False)"
    )
    base = child_peak_rss_mib("import modelcas")
    verdict = "ok" if rss < 64 else "LOSE"
    print(
        f"\npeak RSS hashing {label} without mmap: {rss:.1f} MiB "
        f"(interpreter + import alone: {base:.1f} MiB); target < 64 MiB {verdict}"
    )
    return 0 if ok and rss < 64 else 1


if __name__ == "__main__":
    sys.exit(main())
