"""structflo-cser in miniature: the weights it uses come from its modelcas registry."""

from __future__ import annotations

from pathlib import Path

from modelcas import Registry

_registry = Registry.from_package("structflo.cser", "weights.lock")


def weights_path(version: str | None = None) -> Path:
    """The verified local path of the detector's weights (downloaded on first use)."""
    return _registry.path("cser-detector", version)
