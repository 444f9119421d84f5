"""Sharded loads and named paths: what they cost beside a single file and a bare symlink.

Run: `python benches/bench_sharded.py [--quick] [--size MIB] [--shards N]`.

- A sharded safetensors version (an index and N shards) loaded by `load_state_dict(NAME)`
  must be no slower per byte than one file of the same total size (issue 24): both verified,
  warm page cache, median of several runs, every tensor read once after the load.
- A named path (`views.view`, the entry `Registry.path` hands out) must cost no more than a
  symlink: the first call builds the view, later calls only read it back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

import modelcas.torch as cas_torch
from _bench import MiB, machine, warm
from modelcas.digest import Digest
from modelcas.ops.add import PinRequest, add
from modelcas.registry import open_lock
from modelcas.store import Store, views


def make_state(total: int, parts: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    per = total // parts // 4
    return {f"layer{i:03d}.weight": torch.randn(per, generator=gen) for i in range(parts)}


def write_sharded(folder: Path, state: dict[str, torch.Tensor], shards: int) -> None:
    folder.mkdir(parents=True)
    names = sorted(state)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        part = {k: state[k] for k in names[i * per : (i + 1) * per]}
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        safetensors.torch.save_file(part, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def touch(state: dict[str, Any]) -> None:
    for v in state.values():
        v.sum()


def median_time(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=512, help="MiB in all")
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    size = (128 if args.quick else args.size) * MiB
    runs = 3 if args.quick else 5
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    try:
        store = Store(work / "store")
        lock = work / "cas.lock"
        state = make_state(size, 64)
        (work / "one").mkdir()
        safetensors.torch.save_file(state, work / "one" / "model.safetensors")
        write_sharded(work / "sharded", state, args.shards)
        del state
        add([work / "one"], store, pin=PinRequest("one", "v1", lock=lock))
        add([work / "sharded"], store, pin=PinRequest("sharded", "v1", lock=lock))
        reg = open_lock(lock, store=store)
        warm(*[p for p in store.objects_dir.rglob("*") if p.is_file()])

        def single() -> None:
            touch(cas_torch.load_state_dict("one", registry=reg))

        def sharded() -> None:
            touch(cas_torch.load_state_dict("sharded", registry=reg))

        single()
        sharded()
        t1, tn = median_time(single, runs), median_time(sharded, runs)
        gib = size / (1 << 30)
        print(f"single file  {size // MiB} MiB: {t1:.3f} s  ({gib / t1:.2f} GiB/s)")
        print(f"{args.shards} shards    {size // MiB} MiB: {tn:.3f} s  ({gib / tn:.2f} GiB/s)")
        print(f"sharded / single, per byte: {tn / t1:.2f} (target <= 1.00)")

        # Named paths: a view read back, against creating (and removing) one symlink.
        files = reg.lock.version("sharded", "v1")[1].files
        views.view(store, files)
        n = 2000
        t = time.perf_counter()
        for _ in range(n):
            views.view(store, files)
        hot = (time.perf_counter() - t) / n
        one = {"best.pt": next(iter(files.values()))}
        views.view(store, one)
        t = time.perf_counter()
        for _ in range(n):
            views.view(store, one)
        hot1 = (time.perf_counter() - t) / n
        link = work / "link"
        t = time.perf_counter()
        for _ in range(n):
            os.symlink("target", link)
            link.unlink()
        sym = (time.perf_counter() - t) / n
        # Built afresh: each listing names another object (views never read the objects).
        fresh = [{"best.pt": Digest(f"{i:064x}", 1)} for i in range(200)]
        t = time.perf_counter()
        for listing in fresh:
            views.view(store, listing)
        cold = (time.perf_counter() - t) / len(fresh)
        print(f"named path, 1-file view read back:        {hot1 * 1e6:7.1f} us")
        print(f"named path, {len(files)}-file view read back:        {hot * 1e6:7.1f} us")
        print(f"named path, 1-file view built:            {cold * 1e6:7.1f} us")
        print(f"os.symlink + unlink:                      {sym * 1e6:7.1f} us")
    finally:
        for d, _, _ in os.walk(work):
            os.chmod(d, 0o700)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
