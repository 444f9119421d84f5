"""Sharded checkpoints: a pinned version whose index names its shards, loaded as one state dict.

The layout every large Hugging Face model uses: ``model.safetensors.index.json`` (or
``pytorch_model.bin.index.json``) holds ``{"weight_map": {tensor: shard file}}`` beside
``model-0000N-of-0000M.safetensors``. The index is read verified like any pinned file, every
shard it names must be pinned in the same version, and each shard is loaded verified (the
bytes hashed are the bytes deserialized) through :func:`modelcas.torch.load_many`, in
parallel. The result is refused, not patched, when the index and the shards disagree: a shard
the version lacks, a tensor listed twice, a tensor in two shards, or a tensor the index puts
elsewhere or not at all.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcas.digest import Digest
from modelcas.errors import FormatError
from modelcas.loader import reader
from modelcas.ops.resolve import Resolved

if TYPE_CHECKING:
    from modelcas.lockfile import LockedVersion
    from modelcas.registry import Registry

# Preferred first: a version holding both loads the safetensors shards.
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_INDEX_CAP = 64 << 20


@dataclass(frozen=True, slots=True)
class Sharded:
    """A pinned version to load through its index."""

    registry: Registry
    name: str
    version: str
    entry: LockedVersion
    index: str  # the index's pinned name

    @property
    def label(self) -> str:
        """``name@version``, as messages name it."""
        return f"{self.name}@{self.version}"


def index_of(files: Mapping[str, Digest]) -> str | None:
    """The version's index file, if it is sharded (the top-most, safetensors first)."""
    for wanted in INDEX_NAMES:
        found = sorted(
            (f for f in files if posixpath.basename(f) == wanted), key=lambda f: f.count("/")
        )
        if found:
            return found[0]
    return None


def find(ref: Any, where: dict[str, Any]) -> Sharded | None:
    """The sharded version ``ref`` names, or None (then ``where`` gains the registry opened).

    Only ``NAME[@VERSION]`` with no ``file=`` can name a whole version.
    """
    from modelcas.ops.versions import is_lock_name  # noqa: PLC0415

    if not isinstance(ref, str) or where.get("file") is not None or not is_lock_name(ref):
        return None
    from modelcas.lockfile import split_ref  # noqa: PLC0415
    from modelcas.registry import open_lock  # noqa: PLC0415

    registry = where.get("registry") or open_lock(where.get("lock"), store=where.get("store"))
    where["registry"] = registry  # the single-file path reuses it: the lockfile is read once
    name, version = split_ref(ref)
    chosen, entry = registry.resolve(name, version)
    index = index_of(entry.files) if len(entry.files) > 1 else None
    if index is None:
        return None
    return Sharded(registry, name, chosen, entry, index)


def target(plan: Sharded, file: str) -> Resolved:
    """One pinned file of the version, present in the store, as a loader target.

    Its bytes are hashed as the loader reads them (the store's copy is not re-hashed here).
    """
    from modelcas.registry import Pin  # noqa: PLC0415

    pin = Pin(plan.name, plan.version, file, plan.entry.files[file])
    path = plan.registry.fetch(pin, verify=False)
    known = plan.registry.store.info(pin.digest.sha256).digest
    digest = Digest(pin.digest.sha256, pin.digest.size, pin.digest.blake3 or known.blake3)
    return Resolved(path, digest, pin.label, posixpath.basename(file))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def shards(plan: Sharded, *, deep: bool = False) -> dict[str, list[str]]:
    """Each shard's pinned name and the tensors the index puts in it, from the verified index.

    Raises:
        FormatError: not an index, a tensor listed twice, or a shard the version lacks.
        IntegrityError: the index's bytes are not what the pin says.
    """
    idx = target(plan, plan.index)
    where = f"{plan.label} {plan.index}"
    if idx.digest.size > _INDEX_CAP:
        raise FormatError(f"{where}: {idx.digest.size} bytes is too large for an index")
    data = reader.read_bytes(idx, deep=deep)
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as e:
        raise FormatError(
            f"{where} lists {e.key!r} twice; nothing was loaded",
            hint="an index names each tensor once: re-save the checkpoint",
        ) from None
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{where} is not JSON: {e}") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise FormatError(f"{where} has no weight_map of tensor names to shard files")
    if not weight_map:
        # An empty state dict would load "successfully" into a model with strict=False.
        raise FormatError(f"{where} names no tensor; nothing was loaded")
    folder = posixpath.dirname(plan.index)
    out: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        name = posixpath.normpath(posixpath.join(folder, shard))
        if name not in plan.entry.files or name == plan.index:
            pinned = ", ".join(sorted(f for f in plan.entry.files if f != plan.index))
            raise FormatError(
                f"{where} puts {tensor!r} in {shard!r}, which {plan.label} does not pin "
                f"(files: {pinned}); nothing was loaded",
                hint="pin every shard with its index: `cas add SNAPSHOT_DIR --name NAME "
                "--version V` adds the whole folder",
            )
        out.setdefault(name, []).append(tensor)
    return out


def load(
    plan: Sharded,
    load_many: Callable[..., dict[Any, Any]],
    *,
    device: Any,
    deep: bool,
) -> dict[str, Any]:
    """Every shard loaded verified, merged into one state dict (checked against the index).

    Raises:
        FormatError: the index and the shards disagree (see the module docstring).
        IntegrityError, UnsafeCheckpointError: as for one file.
    """
    wanted = shards(plan, deep=deep)
    targets = {name: target(plan, name) for name in sorted(wanted)}
    loaded = load_many(targets, device=device, deep=deep)
    where = f"{plan.label} {plan.index}"
    merged: dict[str, Any] = {}
    home: dict[str, str] = {}
    listed = {t: s for s, tensors in wanted.items() for t in tensors}
    for shard in sorted(loaded):
        state = loaded[shard]
        if not isinstance(state, Mapping):
            raise FormatError(f"{plan.label} {shard} is not a state dict")
        for tensor, value in state.items():
            if tensor in home:
                raise FormatError(
                    f"{plan.label}: tensor {tensor!r} is in both {home[tensor]} and {shard}; "
                    "nothing was loaded",
                    hint="a sharded checkpoint holds each tensor once: re-save it",
                )
            if listed.get(tensor) != shard:
                said = f"puts it in {listed[tensor]}" if tensor in listed else "does not list it"
                raise FormatError(
                    f"{plan.label}: {shard} holds {tensor!r}, but {where} {said}; "
                    "nothing was loaded"
                )
            home[tensor] = shard
            merged[tensor] = value
    if missing := sorted(set(listed) - set(merged)):
        raise FormatError(
            f"{where} puts {missing[0]!r} in {listed[missing[0]]}, which does not hold it"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; nothing was loaded"
        )
    return merged
