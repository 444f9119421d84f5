"""Standard member names (``docs/bundle.md``).

The HiTMicTools table for its seven keys, ``{ModelType}-{key}`` for any other key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelcas.errors import UsageError

# key -> (model type, file stem), exactly as the seed's "Standardized Naming" table has them.
SEED: dict[str, tuple[str, str]] = {
    "bf_focus": ("NAFNet", "NAFNet-bf_focus_restoration"),
    "fl_focus": ("NAFNet", "NAFNet-fl_focus_restoration"),
    "segmentation": ("MonaiUnet", "MonaiUnet-segmentation"),
    "cell_classifier": ("FlexResNet", "FlexResNet-cell_classifier"),
    "pi_classification": ("PIClassifier", "PIClassifier"),
    "oof_detector": ("RFDETR", "RFDETR-oof_detector"),
    "sc_segmenter": ("RFDETRSegm", "RFDETRSegm-sc_segmenter"),
}
# Where a model type may be given: the config entry, else the metadata JSON.
TYPE_KEYS = ("model_type", "model_name", "architecture")
SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
NAME_MAX = 255  # bytes in a file name (Linux, macOS, Windows): a member's base name fits one


def model_type(key: str, spec: Mapping[str, Any], metadata: Mapping[str, Any]) -> str | None:
    """The model's type: the entry's, else the metadata's, else the seed table's.

    Raises:
        UsageError: the type cannot be part of a file name.
    """
    for source in (spec, metadata):
        for k in TYPE_KEYS:
            value = source.get(k)
            if isinstance(value, str) and value:
                if not SAFE_PART.fullmatch(value):
                    raise UsageError(f"{key}: model type {value!r} cannot be part of a file name")
                return value
    seed = SEED.get(key)
    return seed[0] if seed else None


def stem(key: str, mtype: str | None) -> str:
    """The member's file name without its extension."""
    seed = SEED.get(key)
    if seed is not None:
        return seed[1]
    return f"{mtype}-{key}" if mtype else key
