"""`cas pull hf://` of a file the Hugging Face cache already holds, against `cas hash` of it.

Run: `make bench-hfcache` (or `python benches/bench_hfcache.py [--quick] [--rounds N]`).
Target from issue 17: such a pull takes at most 1.2 x `cas hash` of the file, and no GET of
file content reaches the server (a tag-to-commit lookup and the file listing are allowed).

The server and the 1 GiB file are bench_hub.py's (published once, reused). The HF cache is
filled once with `hf_hub_download` itself. Every pull goes into an empty store, so it must take
the bytes from the HF cache: verify them (sha256 and blake3, in one pass) and ingest them with
a reflink where the filesystem can clone, else a copy (never a hard link), then fsync. `cas hash`
reads the same file, from the page cache. Both run as CLI commands, start-up included, in
alternating rounds; the table reports medians, and the server's log is checked afterwards.
Two in-process rows separate the data path from the fixed cost of a CLI pull (start-up, the
huggingface_hub import, the tag lookup and the file listing): `hfcache.take` (verify and
ingest) against `hashing.hash_file` of the same file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _bench import DATA, GiB, MiB, Table, machine, remove, warm
from bench_hub import FILE, RUN, TAG, configure_env, publish_once, quiet_cmd, start_server

CAS = [sys.executable, "-m", "modelcas"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="128 MiB, 2 rounds")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = 128 * MiB if args.quick else GiB
    rounds = 2 if args.quick else args.rounds
    repo_id = f"bench/weights-{size // MiB}mib"
    print(f"bench_hfcache: {size >> 20} MiB, {rounds} rounds, {machine()}")
    remove(RUN)
    RUN.mkdir(parents=True)
    hub = start_server(DATA / "hub-server")
    try:
        configure_env(hub.url)
        from huggingface_hub import hf_hub_download

        commit = publish_once(repo_id, size)
        cached = Path(hf_hub_download(repo_id, FILE, revision=TAG)).resolve()
        print(f"  HF cache: {cached} ({commit[:12]})")
        store = RUN / "store"
        pull = quiet_cmd(
            *CAS, "--store", store, "pull", f"hf://{repo_id}@{TAG}", "--name", "m", "--no-pin"
        )
        hash_default = quiet_cmd(*CAS, "hash", cached)
        hash_both = quiet_cmd(*CAS, "hash", "--algo", "both", cached)
        from modelcas import Store, hashing, hfcache

        digest = hashing.hash_file(cached).digest()

        def take() -> None:
            assert hfcache.take(digest, Store(store), repo_id=repo_id) is not None

        contenders = {
            "cas pull hf:// (from the HF cache)": pull,
            "cas hash FILE": hash_default,
            "cas hash --algo both FILE": hash_both,
            "hfcache.take (library: verify + ingest)": take,
            "hashing.hash_file (library, both)": lambda: hashing.hash_file(cached),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        mark = len(hub.log)
        for i in range(rounds):
            for name, fn in contenders.items():
                remove(store)
                os.sync()
                warm(cached)
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
                print(f"  round {i + 1}: {name:<40} {times[name][-1]:7.3f} s", flush=True)
        gets = [r for r in hub.log[mark:] if r.method == "GET" and "/resolve/" in r.path]
        other = [f"{r.method} {r.path}" for r in hub.log[mark:] if r not in gets]
    finally:
        hub.stop()
        remove(RUN)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    print("\nmedians")
    for name, t in med.items():
        print(f"  {name:<40} {t:8.3f} s  (rounds: {', '.join(f'{x:.3f}' for x in times[name])})")
    print(f"\nserver log during the pulls: {len(gets)} GET of file content")
    for line in sorted(set(other)):
        print(f"  also: {line}")
    table = Table(f"bench_hfcache ({size >> 20} MiB, median of {rounds} rounds)")
    pulled = med["cas pull hf:// (from the HF cache)"]
    table.ratio("pull from HF cache vs cas hash", pulled, med["cas hash FILE"], 1.2, "cas hash")
    table.ratio(
        "pull from HF cache vs cas hash --algo both",
        pulled,
        med["cas hash --algo both FILE"],
        1.2,
        "cas hash --algo both",
    )
    table.ratio(
        "ingest alone: hfcache.take vs hash_file (in-process)",
        med["hfcache.take (library: verify + ingest)"],
        med["hashing.hash_file (library, both)"],
        1.2,
        "hash_file",
    )
    ok = table.report()
    if gets:
        print("  LOSE: file content was downloaded")
    return 0 if ok and not gets else 1


if __name__ == "__main__":
    sys.exit(main())
