"""Verified loading: modelcas.torch against unverified safetensors and torch.load on one file.

Run: `make bench-load` (or `python benches/bench_load.py [--quick]`). Targets from issue 7:
verified load <= 1.5 x unverified `safetensors.torch.load_file` and <= 1.5 x
`torch.load(weights_only=True)`, the verification overhead (hashing the read buffer) no more
than one `b3sum` of the file, and on a GPU <= 1.15 x `load_file(device="cuda")`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import safetensors.torch
import torch

import modelcas
import modelcas.torch as cas_torch
from _bench import DATA, GiB, MiB, Table, machine, need, run_cmd, warm
from modelcas.store import Store


def make_state(total: int) -> dict[str, torch.Tensor]:
    """Sixteen float32 tensors adding up to ``total`` bytes (weights barely compress)."""
    gen = torch.Generator().manual_seed(0)
    per = total // 16 // 4
    return {f"layer{i}.weight": torch.randn(per, generator=gen) * 0.02 for i in range(16)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="128 MiB, one run each")
    args = ap.parse_args()
    size = 128 * MiB if args.quick else GiB
    repeat = 1 if args.quick else 3
    b3sum = need("b3sum")
    print(f"machine: {machine()}; torch {torch.__version__}, cuda: {torch.cuda.is_available()}")
    DATA.mkdir(parents=True, exist_ok=True)
    st_path = DATA / f"load-{size // MiB}MiB.safetensors"
    pt_path = DATA / f"load-{size // MiB}MiB.pt"
    if not st_path.exists() or not pt_path.exists():
        state = make_state(size)
        safetensors.torch.save_file(state, st_path)
        torch.save(state, pt_path)
        del state
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        store = Store(Path(tmp) / "store")
        st = store.add_file(st_path).info
        pt = store.add_file(pt_path).info
        warm(st.path, pt.path, st_path, pt_path)

        t = Table(f"verified loading, {size / GiB:g} GiB state dict (warm page cache)")
        ours_st = t.time(
            "modelcas load_state_dict .safetensors (blake3 verified)",
            lambda: cas_torch.load_state_dict(st.digest.address, store=store, file="w.safetensors"),
            repeat,
        )
        t.time(
            "safetensors.torch.load_file (unverified, lazy: pages not read)",
            lambda: safetensors.torch.load_file(st.path),
            repeat,
        )
        # load_file maps the file and reads nothing until a tensor is used; touching every
        # tensor once (as any forward pass or .to(device) does) makes it comparable.
        peer_st = t.time(
            "safetensors.torch.load_file + read every tensor once",
            lambda: [v.sum() for v in safetensors.torch.load_file(st.path).values()],
            repeat,
        )
        ours_pt = t.time(
            "modelcas load_state_dict .pt (blake3 verified)",
            lambda: cas_torch.load_state_dict(pt.digest.address, store=store, file="w.pt"),
            repeat,
        )
        peer_pt = t.time(
            "torch.load(weights_only=True) (unverified)",
            lambda: torch.load(pt.path, weights_only=True),
            repeat,
        )
        target = cas_torch.Target(st.path, st.digest, "bench", "w.safetensors")
        buf = cas_torch.read_verified(target)
        verify = t.time(
            "verification alone: blake3 of the read buffer",
            lambda: modelcas.hash_bytes(buf, ("blake3",)),
            repeat,
        )
        peer_b3 = t.time("b3sum of the file", run_cmd(b3sum, st.path), repeat)
        t.ratio(
            "safetensors, verified vs load_file + read",
            ours_st,
            peer_st,
            1.5,
            "load_file, data read",
        )
        t.ratio(".pt, verified vs torch.load", ours_pt, peer_pt, 1.5, "torch.load")
        t.ratio("verification overhead vs b3sum", verify, peer_b3, 1.0, "b3sum")
        if torch.cuda.is_available():

            def ours_gpu() -> None:
                cas_torch.load_state_dict(
                    st.digest.address, store=store, file="w.safetensors", device="cuda"
                )

            def peer_gpu() -> None:
                safetensors.torch.load_file(st.path, device="cuda")
                torch.cuda.synchronize()

            gpu = t.time("modelcas load_state_dict -> cuda (verified)", ours_gpu, repeat)
            gpu_peer = t.time("safetensors load_file(device='cuda')", peer_gpu, repeat)
            t.ratio(
                "cuda, verified vs load_file(device='cuda')", gpu, gpu_peer, 1.15, "load_file cuda"
            )
        else:
            print("  (no CUDA device here: the GPU target is not measured)")
        return 0 if t.report() else 1


if __name__ == "__main__":
    sys.exit(main())
