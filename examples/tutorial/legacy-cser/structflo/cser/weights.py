"""Model weights registry: patched by scripts/publish_weights.py (the seed's workflow)."""

REGISTRY = {
    "cser-detector": {},
}

LATEST = {
    "cser-detector": None,
}
