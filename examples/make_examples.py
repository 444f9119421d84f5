"""Regenerate the small example weights shipped in examples/ (deterministic; needs numpy only).

The files are real safetensors checkpoints of tiny models, so the tour can load them with
torch when the extra is installed. Run: python examples/make_examples.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors layout: u64 header length, JSON header, then the raw tensor bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        raw = arr.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def tiny_model(seed: int, width: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "0.weight": rng.standard_normal((width, 16)).astype(np.float32),
        "0.bias": rng.standard_normal(width).astype(np.float32),
        "2.weight": rng.standard_normal((2, width)).astype(np.float32),
        "2.bias": rng.standard_normal(2).astype(np.float32),
    }


def main() -> None:
    out = HERE / "weights"
    out.mkdir(exist_ok=True)
    write_safetensors(out / "cser-detector-v1.0.safetensors", tiny_model(1, 64))
    write_safetensors(out / "cser-detector-v1.1.safetensors", tiny_model(2, 64))
    write_safetensors(out / "segmentation.safetensors", tiny_model(3, 128))
    write_safetensors(out / "bf_focus.safetensors", tiny_model(4, 96))


if __name__ == "__main__":
    main()
