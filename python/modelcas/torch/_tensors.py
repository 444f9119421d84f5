"""Turning verified bytes into tensors: safetensors views, torch checkpoints, trusted pickles."""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import pickle
import re
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from modelcas.errors import FormatError, MissingExtraError, UnsafeCheckpointError
from modelcas.loader.header import Header
from modelcas.loader.target import Target

if TYPE_CHECKING:
    import mmap

    import torch

# safetensors dtype names to torch's.
_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
}


@contextlib.contextmanager
def torch_required() -> Iterator[None]:
    """Wrap ``import torch``: without it, a typed error that says how to install it.

    Raises:
        MissingExtraError: torch (or numpy, which it needs here) is not installed.
    """
    try:
        yield
    except ModuleNotFoundError as e:
        if e.name not in ("torch", "numpy"):
            raise
        raise MissingExtraError(
            f"loading weights with modelcas.torch needs {e.name}, which is not installed",
            hint="pip install 'modelcas[torch]'",
        ) from None


def views(flat: torch.Tensor, header: Header, where: str) -> dict[str, torch.Tensor]:
    """Tensors as views of ``flat`` (the whole verified file, as uint8 on any device).

    A tensor whose offset is not aligned for its dtype (safetensors only byte-aligns) is
    copied on its device; every other one shares ``flat``'s memory.

    Raises:
        FormatError: a dtype this torch does not have.
    """
    with torch_required():
        import torch  # noqa: PLC0415 (an optional extra, imported on first use)
    out: dict[str, torch.Tensor] = {}
    base = header.data_start
    for e in header.entries:
        dtype = getattr(torch, _DTYPES[e.dtype], None)
        if dtype is None:
            raise FormatError(f"{where}: tensor {e.name!r} is {e.dtype}, which this torch lacks")
        shape = list(e.shape)
        if e.start == e.end:
            out[e.name] = torch.empty(shape, dtype=dtype, device=flat.device)
            continue
        raw = flat[base + e.start : base + e.end]
        try:
            out[e.name] = raw.view(dtype).reshape(shape)
        except RuntimeError:
            out[e.name] = raw.clone().view(dtype).reshape(shape)
    return out


@contextlib.contextmanager
def _weights_only_enforced() -> Iterator[None]:
    """Keep ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` from turning weights_only off for our call."""
    saved = os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = saved


_GLOBAL = re.compile(r"(?:GLOBAL|global) ([\w.]+(?: ?\.[\w]+)*)")
_ZIP = b"PK\x03\x04"  # torch.save's format since torch 1.6; older checkpoints are one pickle


@contextlib.contextmanager
def _refusals(target: Target) -> Iterator[None]:
    """Turn torch's refusal of a global into an UnsafeCheckpointError naming the file."""
    try:
        with _weights_only_enforced():
            yield
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        what = found.group(1) if found else "an object torch does not allow"
        raise UnsafeCheckpointError(
            f"{target.label}: {target.filename} needs {what} to load, which could run code; "
            "it was not loaded (torch.load with weights_only=True)",
            hint="save the weights as a state dict or, better, as .safetensors "
            "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))",
        ) from None


def checkpoint(source: str | bytes, target: Target, device: Any) -> Any:
    """``torch.load`` from a snapshot's path (tensors map it) or from verified bytes.

    Always ``weights_only=True``, with no fallback.

    Raises:
        UnsafeCheckpointError: the checkpoint needs globals torch does not allow.
    """
    with torch_required():
        import torch  # noqa: PLC0415
    with _refusals(target):
        if isinstance(source, bytes):
            return torch.load(io.BytesIO(source), map_location=device, weights_only=True)
        with open(source, "rb") as f:
            # Only zip checkpoints (torch >= 1.6) can be mapped; older ones are read.
            mappable = f.read(4) == _ZIP
        return torch.load(source, map_location=device, weights_only=True, mmap=mappable)


@functools.cache
def _zip_loader() -> Callable[..., Any] | None:
    """The loader torch runs on zip checkpoints, where it builds tensors on storage it is handed.

    ``torch.load(mmap=True)`` hands it a mapping of a file; :func:`checkpoint_in` hands it
    memory this process owns instead. ``None`` where this torch's loader takes no storage
    (the callers then fall back to a sealed snapshot file, which ``torch.load`` maps).
    """
    with torch_required():
        from torch import serialization  # noqa: PLC0415
    load = getattr(serialization, "_load", None)
    if load is None:
        return None
    try:
        params = inspect.signature(load).parameters
    except (TypeError, ValueError):
        return None
    return load if {"overall_storage", "weights_only"} <= params.keys() else None


def can_load_in_memory() -> bool:
    """Whether :func:`checkpoint_in` works with this torch."""
    return _zip_loader() is not None


def checkpoint_in(memory: mmap.mmap, target: Target, device: Any) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint already verified in ``memory``.

    A zip checkpoint's tensors are views of ``memory`` (on the CPU), as ``mmap=True`` makes
    them views of a mapped file: no byte is copied again, and nothing outside this process can
    change them. The tensors keep ``memory`` alive. An old (non-zip) checkpoint is one pickle,
    which torch reads into new tensors.

    Raises:
        UnsafeCheckpointError: the checkpoint needs globals torch does not allow, or it is a
            TorchScript archive (which only runs as code).
    """
    with torch_required():
        import torch  # noqa: PLC0415
        import torch._weights_only_unpickler as weights_only  # noqa: PLC0415
    load = _zip_loader()
    if load is None or memory[:4] != _ZIP:
        return checkpoint(bytes(memory), target, device)
    storage = torch.frombuffer(memory, dtype=torch.uint8).untyped_storage()
    memory.seek(0)
    with _refusals(target):
        archive = torch._C.PyTorchFileReader(cast("IO[bytes]", memory))
        if "constants.pkl" in archive.get_all_records():  # what torch.load checks
            raise UnsafeCheckpointError(
                f"{target.label}: {target.filename} is a TorchScript archive, which loads as "
                "code; it was not loaded",
                hint="save the weights as a state dict (torch.save(model.state_dict(), ...))",
            )
        return load(
            archive,
            device,
            weights_only,
            overall_storage=storage,
            weights_only=True,
            encoding="utf-8",
        )


def refuse_pickle(target: Target, trust_pickle: bool) -> None:
    """Refuse a pickle unless the caller trusts it (before anything is read).

    Raises:
        UnsafeCheckpointError: ``trust_pickle`` is false.
    """
    if not trust_pickle:
        raise UnsafeCheckpointError(
            f"{target.label}: {target.filename} is a pickle, and unpickling can run any code; "
            "it was not loaded",
            hint="pass trust_pickle=True for this call if you trust its author",
        )


def unpickle(data: bytes, target: Target) -> Any:
    """Unpickle verified bytes the caller trusts (``.joblib`` through joblib)."""
    if target.filename.lower().endswith(".joblib"):
        import joblib  # noqa: PLC0415

        return joblib.load(io.BytesIO(data))
    return pickle.loads(data)  # noqa: S301 (explicitly trusted by the caller, after verification)
