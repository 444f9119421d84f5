"""Load verified weights onto the best available device, by lock name and by bundle key.

Usage: python load_weights.py PIPELINE_CONFIG (run by tour.sh; needs `modelcas[torch]`).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import modelcas.torch as cas_torch
from modelcas import bundle


def tiny_model(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 2))


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'})")

    # By name, through the nearest cas.lock: the latest version, verified as it is read.
    model = cas_torch.load_into(tiny_model(64), "cser-detector", device=device)
    logits = model(torch.ones(1, 16, device=device))
    print(f"cser-detector@latest loaded and verified; logits {logits.tolist()}")

    # By bundle key, through the pipeline config's `models: model_collection:`.
    models = bundle.resolve_pipeline_config(sys.argv[1])
    seg = models["segmentation"]
    net = tiny_model(128).to(device)
    state = cas_torch.load_state_dict(seg.digest.address, file=seg.member_name, device=device)
    net.load_state_dict(state)
    print(
        f"segmentation ({seg.model_type}) loaded from the bundle; inferer_args {seg.inferer_args}"
    )


if __name__ == "__main__":
    main()
